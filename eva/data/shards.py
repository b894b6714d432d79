"""Read the extract stage's WebDataset shards back as `[T, 3, H, W]` uint8 clips plus their json.

`iter_videos` reads shards in order, decoded; `parse_sample` leaves the frames as JPEG bytes so a
reader decodes only the frames it uses (`EncodedVideo.decode`); `buffer_shuffle` is the shuffle buffer the training
loader (`eva.data.clips.VideoAttributeDataset`) applies to raw samples before decoding them;
`tar_samples` is the loader's shard reader, webdataset's samples at a tenth of its per-file cost. How
samples are split across DDP ranks and DataLoader workers is the loader's business, not this module's.
"""

from __future__ import annotations

import functools
import json
import os
import random
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torchvision.io import ImageReadMode, decode_jpeg
from webdataset.tariterators import tar_file_iterator, tarfile_samples

_FRAME = re.compile(r"^(\d{3,})\.jpg$")


@dataclass
class VideoSample:
    key: str
    frames: torch.Tensor  # uint8 [T, 3, H, W]
    meta: dict[
        str, Any
    ]  # video_id, label, label_name, split, fps, frame_indices, timestamps, orig_size, duration, num_frames


def list_shards(root: str | Path, split: str) -> list[str]:
    """Sorted paths of `<split>-NNNNNN.tar` in `root`; an error naming the directory if there are none."""
    root = Path(root)
    pattern = re.compile(rf"^{re.escape(split)}-\d{{6}}\.tar$")
    paths = sorted(str(p) for p in root.glob(f"{split}-*.tar") if pattern.match(p.name))
    if not paths:
        raise FileNotFoundError(
            f"no '{split}-NNNNNN.tar' shards in {root} (run the extract stage: dvc repro extract)"
        )
    return paths


class ShardFile(NamedTuple):
    """A file inside a shard, not read yet (`tar_samples(..., lazy_frames=True)`): where its bytes are.

    A named tuple: made for every frame of every sample a reader walks past (32 a k400 clip), it is
    built in a third of a frozen dataclass's time."""

    path: str
    offset: int
    size: int


def _jpeg_tensors(items: Sequence[bytes | ShardFile]) -> list[torch.Tensor]:
    """Each JPEG as a uint8 tensor over its own buffer; a `ShardFile` is read here, straight into it."""
    out: list[torch.Tensor] = []
    handles: dict[str, int] = {}  # path -> descriptor, each shard opened once per call
    try:
        for item in items:
            if isinstance(item, ShardFile):
                if item.path not in handles:
                    handles[item.path] = os.open(item.path, os.O_RDONLY)
                buffer = bytearray(item.size)
                if os.preadv(handles[item.path], [buffer], item.offset) != item.size:
                    raise OSError(f"{item.path}: {item.size} bytes at {item.offset} are past its end")
            else:
                buffer = bytearray(item)
            out.append(torch.frombuffer(buffer, dtype=torch.uint8))
    finally:
        for handle in handles.values():
            os.close(handle)
    return out


@dataclass
class EncodedVideo:
    """A sample whose frames are still JPEG bytes (or where to read them): decode only the frames a view uses."""

    key: str
    jpegs: list[bytes | ShardFile]  # in frame order
    meta: dict[str, Any]

    @property
    def num_frames(self) -> int:
        return len(self.jpegs)

    def encoded(self, indices: Sequence[int] | None = None) -> tuple[list[torch.Tensor], list[int] | None]:
        """The JPEGs `decode(indices)` decodes, each frame once (uint8 tensors over their own
        buffers), and where each wanted frame is among them (None: in order, one each)."""
        wanted = list(range(self.num_frames) if indices is None else indices)
        unique = sorted(set(wanted))
        data = _jpeg_tensors([self.jpegs[i] for i in unique])
        if unique == wanted:
            return data, None
        position = {index: k for k, index in enumerate(unique)}
        return data, [position[i] for i in wanted]

    def decode(self, indices: Sequence[int] | None = None, *, channels_last: bool = False) -> torch.Tensor:
        """uint8 `[len(indices), 3, H, W]` (every frame when `indices` is None); a frame picked twice
        is decoded once.

        `channels_last`: the frames kept in the decoder's memory layout (each pixel's RGB adjacent,
        `torch.channels_last` strides) instead of copied into contiguous planes: the same values at the
        same indices, without a transposing copy of every pixel, and the layout torch's uint8
        antialiased resize works in (the training loader's crop + resize takes a third of the time).
        """
        data, positions = self.encoded(indices)
        decoded = decode_jpeg(data, mode=ImageReadMode.RGB)  # [3, H, W] each: views of HWC buffers
        return stack_frames(decoded, positions, channels_last=channels_last)


def stack_frames(
    decoded: Sequence[torch.Tensor], positions: Sequence[int] | None, *, channels_last: bool
) -> torch.Tensor:
    """Decoded frames `[3, H, W]` -> uint8 `[len(positions), 3, H, W]` (`EncodedVideo.encoded`'s
    `positions`; None: all, in order), on their device; `channels_last` as in `EncodedVideo.decode`."""
    if channels_last:
        frames = torch.stack([f.permute(1, 2, 0) for f in decoded]).permute(0, 3, 1, 2)  # [U, 3, H, W]
    else:
        frames = torch.stack(list(decoded))  # [U, 3, H, W], contiguous
    return frames if positions is None else frames[list(positions)]


_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}  # start-of-frame markers (not DHT, JPG, DAC)


def jpeg_size(data: torch.Tensor | bytes) -> tuple[int, int]:
    """(height, width) of a JPEG from its frame header, without decoding it."""
    buffer = memoryview(data.numpy() if isinstance(data, torch.Tensor) else data).cast("B")
    position = 2  # past SOI
    while position + 9 <= len(buffer):
        if buffer[position] != 0xFF:
            break
        marker = buffer[position + 1]
        if marker == 0xFF:  # fill byte
            position += 1
            continue
        if marker in _SOF:
            base = position + 5  # marker, length (2), precision (1)
            return buffer[base] << 8 | buffer[base + 1], buffer[base + 2] << 8 | buffer[base + 3]
        position += 2 + (buffer[position + 2] << 8 | buffer[position + 3])
    raise ValueError("not a JPEG with a frame header")


@functools.lru_cache(maxsize=256)
def _frame_names(names: tuple[str, ...]) -> tuple[str, ...]:
    """The frame files (`NNN.jpg`) among a sample's file names, in frame order.

    Samples of one shard have the same file names, in the same order: cached, the names are matched
    and sorted once per shard layout instead of once per sample (~15 us of a k400 clip's loading)."""
    frames = sorted((int(m.group(1)), name) for name in names if (m := _FRAME.match(name)))
    return tuple(name for _, name in frames)


def parse_sample(raw: dict[str, Any], meta: dict[str, Any] | None = None) -> EncodedVideo:
    """A raw webdataset sample (`__key__`, `NNN.jpg`..., `json` as bytes; frames as bytes or
    `ShardFile`s) -> EncodedVideo (no decoding). `meta`: its json, where the caller has parsed it already."""
    key = raw["__key__"]
    if meta is None:
        meta = json.loads(raw["json"])
    names = _frame_names(tuple(raw))
    if not names or len(names) != meta.get("num_frames", len(names)):
        raise ValueError(
            f"sample {key!r} in {raw.get('__url__', '?')}: {len(names)} frames, json says {meta.get('num_frames')}"
        )
    return EncodedVideo(key=key, jpegs=[raw[name] for name in names], meta=meta)


def decode_sample(raw: dict[str, Any]) -> VideoSample:
    """A raw webdataset sample -> VideoSample with every stored frame decoded."""
    video = parse_sample(raw)
    return VideoSample(key=video.key, frames=video.decode(), meta=video.meta)


def buffer_shuffle(items: Iterator[Any], size: int, rng: random.Random) -> Iterator[Any]:
    """Yield a random element of a `size`-item buffer at a time (raw bytes, decoded later)."""
    buffer: list[Any] = []
    for item in items:
        if len(buffer) < size:
            buffer.append(item)
            continue
        i = rng.randrange(len(buffer))
        buffer[i], item = item, buffer[i]
        yield item
    rng.shuffle(buffer)
    yield from buffer


# ----------------------------------------------------------------------------- reading shards

_BLOCK = 512
_ZEROS = bytes(_BLOCK)
_POSIX_MAGIC = b"ustar\x0000"  # what `tarfile` writes (TarSampleWriter, webdataset's TarWriter)
_FILES = (b"0", b"\x00", b"7")  # regular files: `tarfile.REGULAR_TYPES` less sparse files
_NO_DATA = (b"1", b"2", b"3", b"4", b"5", b"6")  # links, devices, directories, FIFOs
_META = re.compile(r"__[^/]*__($|/)")  # webdataset's `skip_meta`
_KEY_EXT = re.compile(r"^((?:.*/|)[^.]+)[.]([^/]*)$")  # webdataset's `base_plus_ext`: key, extensions
# `<key>.NNN.jpg`: a file whose suffix (webdataset's `base_plus_ext`, lowercased) `_FRAME` matches
_FRAME_FILE = re.compile(r"^(?:.*/|)[^./]+[.]\d{3,}[.]jpg$", re.IGNORECASE)


class _Unusual(Exception):
    """A header `_ustar_files` leaves to `tarfile`: pax or GNU extensions, base-256 numbers, a bad
    checksum, a truncated file, another format."""


def _text(field: bytes) -> str:
    return field.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")  # tarfile's `nts`


def _byte_sum(block: bytes) -> int:
    """The sum of `block`'s bytes (the ustar checksum). Zero bytes add nothing, and are most of a
    header (about 430 of 512): dropping them first, in C (`translate`), makes Python's `sum` over the
    rest 4x faster than over all 512 (~1 us instead of ~4 us a header, 33 headers a k400 clip)."""
    return sum(block.translate(None, b"\0"))


def _ustar_files(path: str, lazy_frames: bool) -> Iterator[tuple[str, bytes | ShardFile]]:
    """(name, contents) of the regular files of an uncompressed POSIX ustar archive, in order; with
    `lazy_frames`, a frame's contents are left unread (a `ShardFile`).

    Parses the 512-byte headers directly (`tarfile` spends ~35 us per member building a TarInfo)
    and reads each file with one `pread`; raises `_Unusual` at the first header it does not handle,
    for `tarfile` to take over.
    """
    handle = os.open(path, os.O_RDONLY)
    try:
        end, position = os.fstat(handle).st_size, 0
        while True:
            header = os.pread(handle, _BLOCK, position)
            if position and (not header or header == _ZEROS):  # tarfile's end of archive
                return
            if len(header) < _BLOCK or header[257:265] != _POSIX_MAGIC or header[124] & 0x80:
                raise _Unusual
            try:
                checksum = int(header[148:156].split(b"\0", 1)[0].strip() or b"0", 8)
                size = int(header[124:136].split(b"\0", 1)[0].strip() or b"0", 8)
            except ValueError:
                raise _Unusual from None
            if checksum != 256 + _byte_sum(header) - sum(header[148:156]):  # the checksum field as spaces
                raise _Unusual
            kind = header[156:157]
            if kind not in _FILES and kind not in _NO_DATA:
                raise _Unusual
            name = _text(header[:100])
            if header[345]:  # a ustar prefix
                name = f"{_text(header[345:500])}/{name}"
            position += _BLOCK
            if kind in _NO_DATA or (kind == b"\x00" and name.endswith("/")):  # a V7 directory
                continue  # tarfile reads no data blocks after these
            stop = position + size + (-size % _BLOCK)
            if stop > end:  # tarfile: "unexpected end of data"
                raise _Unusual
            if lazy_frames and _FRAME_FILE.match(name):
                yield name, ShardFile(path, position, size)
            else:
                data = os.pread(handle, size, position)
                if len(data) < size:
                    raise _Unusual
                yield name, data
            position = stop
    finally:
        os.close(handle)


def _shard_files(url: str, lazy_frames: bool) -> Iterator[tuple[str, bytes | ShardFile]]:
    """(name, contents) of one shard's files as webdataset's `tar_file_iterator` yields them (metadata
    files skipped)."""
    done = 0
    try:
        for name, data in _ustar_files(url, lazy_frames):
            if name.startswith("__") and (_META.match(name) or ("/" not in name and name.endswith("__"))):
                continue
            yield name, data
            done += 1
        return
    except _Unusual:
        pass
    with open(url, "rb") as stream:  # the rest through tarfile, as webdataset reads it
        for k, file in enumerate(tar_file_iterator(stream)):
            if k >= done:
                yield file["fname"], file["data"]


def tar_samples(urls: Sequence[str], *, lazy_frames: bool = False) -> Iterator[dict[str, Any]]:
    """The samples of the shards `urls`, in order, each `{"__key__", "__url__", ext: bytes...}`: what
    webdataset's `tarfile_samples` yields (its grouping of consecutive files by key, its errors),
    reading the extract stage's plain ustar files without `tarfile`.

    `lazy_frames`: the frames (`NNN.jpg`) are `ShardFile`s, read only when decoded
    (`EncodedVideo.decode`): a reader that decodes T of a video's stored frames, or skips a video
    another reader owns, does not copy the rest (the shards must stay in place meanwhile).
    """
    for url in urls:
        sample: dict[str, Any] | None = None
        for name, data in _shard_files(url, lazy_frames):
            parts = _KEY_EXT.match(name)  # webdataset's `base_plus_ext`
            if parts is None:
                continue
            key, suffix = parts.group(1), parts.group(2).lower()
            if sample is None or key != sample["__key__"]:
                if sample is not None and not sample.get("__bad__", False):
                    yield sample
                sample = {"__key__": key, "__url__": url}
            if suffix in sample:
                raise ValueError(f"{name}: duplicate file name in tar file {suffix} {sample.keys()}")
            sample[suffix] = data
        if sample is not None and not sample.get("__bad__", False):  # no sample spans two shards
            yield sample


def iter_videos(urls: list[str]) -> Iterator[VideoSample]:
    """Every sample of `urls`, in shard order then tar order (the index order), in this process."""
    for raw in tarfile_samples([{"url": u} for u in urls]):
        yield decode_sample(raw)
