"""Shard reader: listing, decoding and reading back in order (splitting is tested with the loader)."""

from __future__ import annotations

import gzip
import io
import os
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
import webdataset as wds
from PIL import Image
from webdataset.tariterators import tarfile_samples

from eva.data.extract import DecodedVideo, TarSampleWriter, VideoJob, sample_record
from eva.data.shards import ShardFile, decode_sample, iter_videos, list_shards, parse_sample, tar_samples

T, H, W = 3, 12, 20


def jpeg(value: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((H, W, 3), value, np.uint8)).save(buf, format="JPEG", quality=95)
    return buf.getvalue()


def record(i: int) -> dict:
    job = VideoJob(key=f"v{i:03d}", video_id=f"v.{i:03d}", path=f"/x/{i}.mp4", label=i % 5,
                   label_name=f"c{i % 5}", split="train")  # fmt: skip
    video = DecodedVideo(
        jpegs=[jpeg(10 * t + i) for t in range(T)],
        fps=12.0,
        frame_indices=[1, 4, 7],
        orig_size=(24, 40),
        duration=0.75,
        timestamps=[0.083333, 0.333333, 0.583333],
    )
    return sample_record(job, video)


def write_shards(root: Path, counts: list[int]) -> list[str]:
    """Shards in the extract stage's format (its own sample_record), `counts[k]` samples in shard k."""
    root.mkdir(parents=True, exist_ok=True)
    i = 0
    for k, count in enumerate(counts):
        with wds.TarWriter(str(root / f"train-{k:06d}.tar"), encoder=False) as writer:
            for _ in range(count):
                writer.write(record(i))
                i += 1
    return list_shards(root, "train")


def test_list_shards_sorted_and_clear_error(tmp_path: Path) -> None:
    for name in ("train-000001.tar", "train-000000.tar", "val-000000.tar", "train-000000.tar.tmp", "x.tar"):
        (tmp_path / name).write_bytes(b"")
    assert [Path(p).name for p in list_shards(tmp_path, "train")] == ["train-000000.tar", "train-000001.tar"]
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "empty")):
        list_shards(tmp_path / "empty", "val")


def test_decode_sample_gives_uint8_frames_and_meta(tmp_path: Path) -> None:
    (sample,) = iter_videos(write_shards(tmp_path, [1]))
    assert sample.key == "v000"
    assert sample.frames.dtype == torch.uint8 and tuple(sample.frames.shape) == (T, 3, H, W)
    assert [int(sample.frames[t].float().mean().round()) for t in range(T)] == [0, 10, 20]  # frame order
    assert sample.meta == {
        "video_id": "v.000", "label": 0, "label_name": "c0", "split": "train", "fps": 12.0,
        "frame_indices": [1, 4, 7], "orig_size": [24, 40], "duration": 0.75, "num_frames": 3,
        "timestamps": [0.083333, 0.333333, 0.583333],
    }  # fmt: skip

    raw = {"__key__": "k", **{k: v for k, v in record(0).items() if k != "002.jpg"}}
    with pytest.raises(ValueError, match="2 frames, json says 3"):
        decode_sample(raw)


def test_iter_videos_reads_everything_in_order(tmp_path: Path) -> None:
    urls = write_shards(tmp_path, [3, 2, 4])
    assert [s.key for s in iter_videos(urls)] == [f"v{i:03d}" for i in range(9)]


def test_a_reader_decodes_only_the_frames_it_picks_and_gets_the_full_decode_s_pixels(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import eva.data.shards as shards

    (raw,) = tarfile_samples([{"url": u} for u in write_shards(tmp_path, [1])])
    full = decode_sample(raw).frames
    video = parse_sample(raw)
    assert video.num_frames == T and video.meta["num_frames"] == T

    decoded: list[int] = []
    real = shards.decode_jpeg
    monkeypatch.setattr(
        shards, "decode_jpeg", lambda data, **kw: decoded.append(len(data)) or real(data, **kw)
    )
    picked = video.decode([2, 0, 2])  # out of order, one frame twice
    assert decoded == [2]  # two distinct frames decoded, once each
    assert torch.equal(picked, full[[2, 0, 2]])
    assert torch.equal(video.decode(), full)


def _resolved(sample: dict) -> dict:
    """A `tar_samples` sample with its unread files (`ShardFile`) read."""

    def read(value: object) -> object:
        if not isinstance(value, ShardFile):
            return value
        with open(value.path, "rb") as file:
            file.seek(value.offset)
            return file.read(value.size)

    return {name: read(value) for name, value in sample.items()}


def _odd_shards(root: Path) -> dict[str, str]:
    """Shards beside the extract stage's own: what the fast reader hands to tarfile, or must skip."""
    root.mkdir(parents=True, exist_ok=True)
    paths = {name: str(root / name) for name in ("extract.tar", "pax.tar", "gnu.tar", "dirs.tar", "cut.tar")}
    with open(paths["extract.tar"], "wb") as file:  # the extract stage's writer
        writer = TarSampleWriter(file)
        for i in range(3):
            writer.write(record(i))
        writer.close()
    with open(paths["pax.tar"], "wb") as file:  # a name past ustar's 100 characters: a pax header
        writer = TarSampleWriter(file)
        writer.write({"__key__": "short", "json": b"[]", "000.JPG": b"y", "a.b": b""})  # read, then
        writer.write({"__key__": "k" * 120, "json": b"{}", "000.jpg": b"x" * 700})  # tarfile takes over
        writer.close()
    with tarfile.open(paths["gnu.tar"], "w", format=tarfile.GNU_FORMAT) as tar:
        for name, data in (("k1.json", b"{}"), ("k1.000.jpg", b"z" * 600)):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    with tarfile.open(paths["dirs.tar"], "w", format=tarfile.USTAR_FORMAT) as tar:
        folder = tarfile.TarInfo("folder")
        folder.type = tarfile.DIRTYPE
        tar.addfile(folder)
        for name, data in (("folder/k1.json", b"{}"), ("folder/k1.000.jpg", b"w" * 513), ("__k__", b"")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        link = tarfile.TarInfo("folder/k1.lnk")
        link.type, link.linkname = tarfile.SYMTYPE, "k1.json"
        tar.addfile(link)
    with open(paths["extract.tar"], "rb") as file:
        whole = file.read()
    with gzip.open(root / "zipped.tar.gz", "wb") as zipped:
        zipped.write(whole)
    paths["zipped.tar.gz"] = str(root / "zipped.tar.gz")
    Path(paths["cut.tar"]).write_bytes(whole[:3000])  # cut inside a file's last block
    return paths


def test_tar_samples_are_webdataset_s_samples(tmp_path: Path) -> None:
    paths = _odd_shards(tmp_path / "odd")
    urls = write_shards(tmp_path / "wds", [3, 2]) + [paths[n] for n in ("extract.tar", "pax.tar", "dirs.tar")]
    for shards in ([u] for u in urls + [paths["gnu.tar"], paths["zipped.tar.gz"]]), [urls]:
        for group in shards:
            expected = list(tarfile_samples([{"url": u} for u in group]))
            assert list(tar_samples(group)) == expected
            lazy = list(tar_samples(group, lazy_frames=True))
            assert [_resolved(s) for s in lazy] == expected and [list(s) for s in lazy] == [
                list(s) for s in expected
            ]
    lazy = list(tar_samples([paths["extract.tar"]], lazy_frames=True))
    assert all(
        isinstance(s[f"{t:03d}.jpg"], ShardFile) and isinstance(s["json"], bytes)
        for s in lazy
        for t in range(T)
    )
    for group in ([paths["cut.tar"]], [urls[0], paths["cut.tar"]]):
        with pytest.raises(tarfile.ReadError):
            list(tarfile_samples([{"url": u} for u in group]))
        for lazy_frames in (False, True):
            with pytest.raises(tarfile.ReadError):
                list(tar_samples(group, lazy_frames=lazy_frames))


def test_lazy_frames_are_read_only_when_decoded_and_decode_alike(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    urls = [
        _odd_shards(tmp_path)["extract.tar"]
    ]  # webdataset's own TarWriter adds pax headers: tarfile reads those
    eager = [parse_sample(s) for s in tarfile_samples([{"url": u} for u in urls])]
    reads: list[int] = []
    real = os.preadv
    monkeypatch.setattr(
        os, "preadv", lambda fd, buffers, offset: reads.append(offset) or real(fd, buffers, offset)
    )
    lazy = [parse_sample(s) for s in tar_samples(urls, lazy_frames=True)]
    assert reads == [] and all(isinstance(j, ShardFile) for v in lazy for j in v.jpegs)
    for plain, deferred in zip(eager, lazy, strict=True):
        assert deferred.meta == plain.meta and deferred.key == plain.key
        assert torch.equal(deferred.decode([2, 0, 2]), plain.decode([2, 0, 2]))
    assert len(reads) == 2 * 3  # two distinct frames of each video, each read once


def test_channels_last_decode_holds_the_same_pixels_without_the_transposing_copy(tmp_path: Path) -> None:
    (raw,) = tarfile_samples([{"url": u} for u in write_shards(tmp_path, [1])])
    video = parse_sample(raw)
    plain, fast = video.decode([1, 2, 1]), video.decode([1, 2, 1], channels_last=True)
    assert plain.is_contiguous() and fast.is_contiguous(memory_format=torch.channels_last)
    assert fast.shape == plain.shape and torch.equal(fast, plain)
