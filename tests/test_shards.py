"""Shard reader: listing, decoding and reading back in order (splitting is tested with the loader)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
import webdataset as wds
from PIL import Image
from webdataset.tariterators import tarfile_samples

from eva.data.extract import DecodedVideo, VideoJob, sample_record
from eva.data.shards import decode_sample, iter_videos, list_shards, parse_sample

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
