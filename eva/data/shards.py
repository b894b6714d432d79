"""Read the extract stage's WebDataset shards back as `[T, 3, H, W]` uint8 clips plus their json.

`iter_videos` reads shards in order, decoded; `parse_sample` leaves the frames as JPEG bytes so a
reader decodes only the frames it uses (`EncodedVideo.decode`); `buffer_shuffle` is the shuffle buffer the training
loader (`eva.data.clips.VideoAttributeDataset`) applies to raw samples before decoding them. How
samples are split across DDP ranks and DataLoader workers is the loader's business, not this module's.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torchvision.io import ImageReadMode, decode_jpeg
from webdataset.tariterators import tarfile_samples

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


@dataclass
class EncodedVideo:
    """A sample whose frames are still JPEG bytes: decode only the frames a view uses."""

    key: str
    jpegs: list[bytes]  # in frame order
    meta: dict[str, Any]

    @property
    def num_frames(self) -> int:
        return len(self.jpegs)

    def decode(self, indices: Sequence[int] | None = None) -> torch.Tensor:
        """uint8 `[len(indices), 3, H, W]` (every frame when `indices` is None); a frame picked twice
        is decoded once."""
        wanted = list(range(self.num_frames) if indices is None else indices)
        unique = sorted(set(wanted))
        data = [torch.frombuffer(bytearray(self.jpegs[i]), dtype=torch.uint8) for i in unique]
        frames = torch.stack(decode_jpeg(data, mode=ImageReadMode.RGB))  # [U, 3, H, W]
        if unique == wanted:
            return frames
        position = {index: k for k, index in enumerate(unique)}
        return frames[[position[i] for i in wanted]]


def parse_sample(raw: dict[str, Any]) -> EncodedVideo:
    """A raw webdataset sample (`__key__`, `NNN.jpg`..., `json` as bytes) -> EncodedVideo (no decoding)."""
    key = raw["__key__"]
    meta = json.loads(raw["json"])
    names = sorted((int(m.group(1)), name) for name in raw if (m := _FRAME.match(name)))
    if not names or len(names) != meta.get("num_frames", len(names)):
        raise ValueError(
            f"sample {key!r} in {raw.get('__url__', '?')}: {len(names)} frames, json says {meta.get('num_frames')}"
        )
    return EncodedVideo(key=key, jpegs=[raw[name] for _, name in names], meta=meta)


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


def iter_videos(urls: list[str]) -> Iterator[VideoSample]:
    """Every sample of `urls`, in shard order then tar order (the index order), in this process."""
    for raw in tarfile_samples([{"url": u} for u in urls]):
        yield decode_sample(raw)
