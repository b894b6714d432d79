"""Extract stage: real tiny videos -> shards -> reader, determinism, rank split, bad files, timeouts."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from av.video.reformatter import VideoReformatter
from conftest import moving_square, write_video

from eva.attributes.visual import keyframe_positions
from eva.data.extract import (
    RESIZE,
    TAR_MTIME,
    TAR_OWNER,
    ExtractConfig,
    TarSampleWriter,
    clip_range_from_times,
    extract_shards,
    plan_shards,
    resize_frame,
    sample_segment_indices,
    shard_key,
    short_side_size,
    unique_keys,
)
from eva.data.shards import iter_videos, list_shards
from eva.utils.dist import WorkerSlot
from stages._layout import INDEX, SHARDS

REPO = Path(__file__).resolve().parents[1]
FPS = 12


def index_table(rows: list[dict]) -> pa.Table:
    """An index following the contract's schema (video_id, path, label, label_name, split, start, end)."""
    rows = sorted(rows, key=lambda r: (r["split"], r["video_id"]))
    return pa.table(
        {
            "video_id": pa.array([r["video_id"] for r in rows], pa.string()),
            "path": pa.array([str(r["path"]) for r in rows], pa.string()),
            "label": pa.array([r["label"] for r in rows], pa.int32()),
            "label_name": pa.array([f"class {r['label']}" for r in rows], pa.string()),
            "split": pa.array([r["split"] for r in rows], pa.string()),
            "start": pa.array([r.get("start") for r in rows], pa.float64()),
            "end": pa.array([r.get("end") for r in rows], pa.float64()),
        }
    )


def wide_square(num_frames: int, height: int = 48, width: int = 64) -> np.ndarray:
    """Landscape clip (aspect 4:3) with the square moving right: checks the short-side resize."""
    frames = np.zeros((num_frames, height, width, 3), np.uint8)
    frames[..., 2] = 30
    for t in range(num_frames):
        x = int(t * (width - 12) / (num_frames - 1))
        frames[t, 18:30, x : x + 12] = (230, 40, 40)
    return frames


@pytest.fixture(scope="module")
def videos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("videos")
    return {
        "a": write_video(root / "a.mp4", moving_square(20, 48, seed=1), fps=FPS),
        "b": write_video(root / "b.mp4", wide_square(30), fps=FPS),
        "c": write_video(root / "c.mp4", moving_square(16, 48, seed=2), fps=FPS),
        "long": write_video(root / "long.mp4", moving_square(36, 48, seed=3), fps=FPS),
        "v1": write_video(root / "v1.mp4", moving_square(18, 48, seed=4), fps=FPS),
    }


@pytest.fixture(scope="module")
def good_index(videos: dict[str, Path]) -> pa.Table:
    return index_table(
        [
            {"video_id": "vid.a", "path": videos["a"], "label": 0, "split": "train"},
            {"video_id": "vid/b c", "path": videos["b"], "label": 1, "split": "train"},
            {"video_id": "vid.c", "path": videos["c"], "label": 2, "split": "train"},
            # trimmed segment 1.0-2.0 s of a 3 s video: frames [12, 24)
            {"video_id": "vid.long#1", "path": videos["long"], "label": 1, "split": "train", "start": 1.0, "end": 2.0},
            {"video_id": "vid.v1", "path": videos["v1"], "label": 0, "split": "val"},
        ]
    )  # fmt: skip


def shard_hashes(root: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.iterdir())}


def test_segment_indices_are_centres_of_equal_segments() -> None:
    assert sample_segment_indices(0, 16, 4) == [2, 6, 10, 14]
    assert sample_segment_indices(12, 24, 4) == [13, 16, 19, 22]
    # Centre 5 of 11 segments of 30 frames is exactly 15; a float `step * (i + 0.5)` gives 14.999.
    assert sample_segment_indices(0, 30, 11)[5] == 15
    # Attribute keyframes use the same formula (one home: eva.data.segments).
    assert keyframe_positions(30, 11) == sample_segment_indices(0, 30, 11)
    short = sample_segment_indices(0, 3, 8)  # fewer frames than T: repeats, stays in range
    assert short == sorted(short) and set(short) == {0, 1, 2}
    times = [i / 12.0 for i in range(36)]
    assert clip_range_from_times(times, None, None) == (0, 36)
    assert clip_range_from_times(times, 1.0, 2.0) == (12, 24)
    assert clip_range_from_times(times, 2.5, 9.0) == (30, 36)  # end past the video is clamped


def test_keys_have_no_dots_and_are_unique() -> None:
    assert shard_key("v_Apply.Eye/Make up") == "v_Apply_Eye_Make_up"
    assert unique_keys(["a.b", "a/b", "a_b", "x"]) == ["a_b", "a_b_2", "a_b_3", "x"]
    long_key = shard_key("x" * 300)
    assert len(long_key) <= 80 and "." not in long_key
    assert shard_key("x" * 300) != shard_key("x" * 299)


def test_config_errors_name_the_param() -> None:
    with pytest.raises(ValueError, match=r"extract\.workers"):
        ExtractConfig(workers=0)
    with pytest.raises(ValueError, match=r"extract\.jpeg_quality"):
        ExtractConfig(jpeg_quality=101)
    with pytest.raises(ValueError, match=r"extract\.timeout_s"):
        ExtractConfig(timeout_s=0)


def test_videos_round_trip_through_shards(tmp_path: Path, good_index: pa.Table, videos: dict) -> None:
    cfg = ExtractConfig(frames_per_video=4, short_side=32, samples_per_shard=2, workers=2, timeout_s=60)
    result = extract_shards(good_index, tmp_path, cfg)

    metrics = result.metrics()
    assert (metrics["videos"], metrics["written"], metrics["failed"]) == (5, 5, 0)
    assert metrics["splits"]["train"] == {"videos": 4, "written": 4, "failed": 0, "shards": 2}
    assert {q.stem for q in tmp_path.glob("*.json")} == {q.stem for q in tmp_path.glob("*.tar")}  # counts
    assert sorted(p.name for p in tmp_path.glob("*.tar")) == [
        "train-000000.tar",
        "train-000001.tar",
        "val-000000.tar",
    ]

    samples = list(iter_videos(list_shards(tmp_path, "train")))
    expected_order = ["vid.a", "vid.c", "vid.long#1", "vid/b c"]  # index order: sorted video_id
    assert [s.meta["video_id"] for s in samples] == expected_order
    by_id = {s.meta["video_id"]: s for s in samples}
    for s in samples:
        assert "." not in s.key and "/" not in s.key
        assert s.frames.dtype == torch.uint8 and s.frames.shape[:2] == (4, 3)
        assert min(s.frames.shape[2:]) == 32
        assert s.meta["num_frames"] == 4 and s.meta["fps"] == pytest.approx(FPS)
        assert s.meta["split"] == "train" and s.meta["label_name"] == f"class {s.meta['label']}"

    a = by_id["vid.a"].meta
    assert a["frame_indices"] == sample_segment_indices(0, 20, 4) == [2, 7, 12, 17]
    assert a["orig_size"] == [48, 48] and a["duration"] == pytest.approx(20 / FPS) and a["label"] == 0

    b = by_id["vid/b c"]
    assert b.key == "vid_b_c" and b.meta["orig_size"] == [48, 64]
    assert tuple(b.frames.shape) == (4, 3, 32, 43)  # 64 * 32/48 = 42.7 -> 43, aspect kept
    red = b.frames[:, 0].float() - b.frames[:, 2].float()  # the red square, moving right
    xs = [float((r.clamp(min=0) * torch.arange(r.shape[1])).sum() / r.clamp(min=0).sum()) for r in red]
    assert xs == sorted(xs) and xs[-1] - xs[0] > 15

    seg = by_id["vid.long#1"].meta
    assert all(12 <= i < 24 for i in seg["frame_indices"])
    assert seg["frame_indices"] == sample_segment_indices(12, 24, 4)
    assert seg["duration"] == pytest.approx(1.0)

    (val,) = iter_videos(list_shards(tmp_path, "val"))
    assert val.meta["video_id"] == "vid.v1" and val.meta["split"] == "val"


def test_same_bytes_for_reruns_worker_counts_and_rank_splits(tmp_path: Path, good_index: pa.Table) -> None:
    def cfg(workers: int) -> ExtractConfig:
        return ExtractConfig(frames_per_video=3, short_side=24, samples_per_shard=1, workers=workers)

    extract_shards(good_index, tmp_path / "w1", cfg(1))
    reference = shard_hashes(tmp_path / "w1")
    assert len(reference) == 10  # 5 shards and their sample counts

    extract_shards(good_index, tmp_path / "w1", cfg(1))  # re-run in place
    assert shard_hashes(tmp_path / "w1") == reference

    extract_shards(good_index, tmp_path / "w2", cfg(2))
    assert shard_hashes(tmp_path / "w2") == reference

    parts = [extract_shards(good_index, tmp_path / "ranks", cfg(1), WorkerSlot(r, 2)) for r in (0, 1)]
    assert shard_hashes(tmp_path / "ranks") == reference
    assert sorted(parts[0].shards + parts[1].shards) == sorted(n for n in reference if n.endswith(".tar"))
    assert not set(parts[0].shards) & set(parts[1].shards)


@pytest.mark.parametrize("codec", ["libx264", "mpeg4"])
def test_one_reformatter_per_video_gives_the_pixels_of_a_fresh_one_per_frame(
    tmp_path: Path, codec: str
) -> None:
    """The stage keeps one swscale context per video (threads=1); `frame.reformat` makes one per frame
    (default threads). Same flags, so the same pixels, whatever the size (down, up, odd)."""
    path = write_video(
        tmp_path / f"v.{'mp4' if codec == 'libx264' else 'avi'}", wide_square(12, 96, 128), codec=codec
    )
    with av.open(str(path)) as container:
        frames = list(container.decode(video=0))
    for side in (24, 57, 64, 200):
        reformatter = VideoReformatter()
        for frame in frames:
            width, height = short_side_size(frame.height, frame.width, side)
            fresh = frame.reformat(width=width, height=height, format="rgb24", interpolation=RESIZE)
            kept = np.asarray(resize_frame(frame, side, reformatter))
            assert kept.shape == (height, width, 3)
            assert np.array_equal(kept, fresh.to_ndarray())


def test_tar_writer_matches_webdataset_bytes(tmp_path: Path) -> None:
    """The stage's own tar writer (no torch import) writes exactly webdataset.TarWriter's bytes."""
    import webdataset as wds

    records = [
        {
            "__key__": f"clip_{i}",
            "000.jpg": bytes((i + k) % 256 for k in range(700)),
            "json": '{"a": "\u00e9"}'.encode(),
        }
        for i in range(3)
    ] + [{"__key__": "x" * 80, "001.jpg": b"", "000.jpg": b"\xff" * 1025, "json": b"{}"}]
    ours, theirs = io.BytesIO(), io.BytesIO()
    writer = TarSampleWriter(ours)
    reference = wds.TarWriter(theirs, encoder=False, mtime=TAR_MTIME, user=TAR_OWNER, group=TAR_OWNER)
    for record in records:
        writer.write(record)
        reference.write(record)
    writer.close()
    reference.close()
    assert ours.getvalue() == theirs.getvalue()


def write_faststart_noise(path: Path, num_frames: int = 24, height: int = 120, width: int = 160) -> Path:
    """Noise frames with the moov atom up front: a truncated copy still opens, with missing tail frames."""
    rng = np.random.default_rng(0)
    with av.open(str(path), "w", options={"movflags": "faststart"}) as container:
        stream = container.add_stream("libx264", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for _ in range(num_frames):
            frame = rng.integers(0, 255, (height, width, 3), dtype=np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def decodable_frames(path: Path) -> int:
    """Frames a sequential decode yields when packets that fail to decode are skipped (as ffmpeg does)."""
    count = 0
    with av.open(str(path)) as container:
        for packet in container.demux(video=0):
            with contextlib.suppress(av.error.FFmpegError):
                count += len(packet.decode())
    return count


def test_bad_files_are_skipped_and_listed(tmp_path: Path, videos: dict) -> None:
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "zero.mp4").write_bytes(b"")
    (bad / "text.mp4").write_text("this is not a video\n")
    data = videos["long"].read_bytes()  # moov atom at the end: a cut copy has no index at all
    (bad / "cut.mp4").write_bytes(data[: len(data) // 2])
    noise = write_faststart_noise(bad / "noise.mp4").read_bytes()
    (bad / "tail.mp4").write_bytes(noise[: int(len(noise) * 0.6)])  # opens; decord over-counts frames
    rows = [
        {"video_id": "good_a", "path": videos["a"], "label": 0, "split": "train"},
        {"video_id": "bad_zero", "path": bad / "zero.mp4", "label": 1, "split": "train"},
        {"video_id": "bad_text", "path": bad / "text.mp4", "label": 1, "split": "train"},
        {"video_id": "bad_cut", "path": bad / "cut.mp4", "label": 1, "split": "train"},
        {"video_id": "bad_missing", "path": bad / "missing.mp4", "label": 1, "split": "val"},
        {"video_id": "good_tail", "path": bad / "tail.mp4", "label": 2, "split": "val"},
        {"video_id": "good_v1", "path": videos["v1"], "label": 0, "split": "val"},
    ]
    out = tmp_path / "shards"
    out.mkdir()
    (out / ".train-000000.tar.tmp").write_bytes(b"half a shard from a killed run")
    (out / "val-000007.tar").write_bytes(b"stale shard of a bigger index")
    cfg = ExtractConfig(frames_per_video=4, short_side=32, samples_per_shard=3, workers=2, timeout_s=60)
    metrics = extract_shards(index_table(rows), out, cfg).metrics()

    reasons = {f["video_id"]: f["reason"] for f in metrics["failures"]}
    assert set(reasons) == {"bad_zero", "bad_text", "bad_cut", "bad_missing"}
    assert reasons["bad_zero"] == "empty file (0 bytes)"
    assert reasons["bad_missing"] == "missing file"
    assert reasons["bad_text"].startswith("not a readable video")
    assert reasons["bad_cut"].startswith("not a readable video")
    assert all(f["path"].startswith(str(bad)) for f in metrics["failures"])
    assert metrics["splits"]["train"] == {"videos": 4, "written": 1, "failed": 3, "shards": 1}
    assert metrics["splits"]["val"] == {"videos": 3, "written": 2, "failed": 1, "shards": 1}
    # shard 0 of train held 3 bad videos of 3 -> no file; no temp or stale file survives
    assert {q.stem for q in out.glob("*.json")} == {q.stem for q in out.glob("*.tar")}  # counts
    assert sorted(p.name for p in out.glob("*.tar")) == ["train-000001.tar", "val-000000.tar"]

    written = {
        s.meta["video_id"]: s for split in ("train", "val") for s in iter_videos(list_shards(out, split))
    }
    assert set(written) == {"good_a", "good_tail", "good_v1"}
    tail = written["good_tail"].meta["frame_indices"]
    assert max(tail) < decodable_frames(bad / "tail.mp4") < 24
    assert any(
        tail == sample_segment_indices(0, stop, 4) for stop in range(max(tail) + 1, 24)
    )  # evenly spaced


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs a FIFO to simulate a hung read")
def test_hung_decode_times_out_and_the_stage_goes_on(tmp_path: Path, videos: dict) -> None:
    fifo = tmp_path / "hangs.mp4"
    os.mkfifo(fifo)  # opening it for reading blocks forever: a stalled network mount, say
    rows = [
        {"video_id": "a_hang", "path": fifo, "label": 0, "split": "train"},
        {"video_id": "b_good", "path": videos["a"], "label": 0, "split": "train"},
    ]
    cfg = ExtractConfig(frames_per_video=2, short_side=16, workers=1, timeout_s=1)
    metrics = extract_shards(index_table(rows), tmp_path / "out", cfg).metrics()
    assert [f["video_id"] for f in metrics["failures"]] == ["a_hang"]
    assert metrics["failures"][0]["reason"].startswith("timeout")
    assert [s.meta["video_id"] for s in iter_videos(list_shards(tmp_path / "out", "train"))] == ["b_good"]


def test_plan_is_fixed_chunks_of_the_sorted_index(good_index: pa.Table) -> None:
    shuffled = good_index.take([4, 2, 0, 3, 1])
    plans = plan_shards(shuffled, samples_per_shard=3)
    assert [(p.name, p.ordinal, len(p.jobs)) for p in plans] == [
        ("train-000000.tar", 0, 3),
        ("train-000001.tar", 1, 1),
        ("val-000000.tar", 2, 1),
    ]
    assert [j.video_id for p in plans for j in p.jobs] == [
        "vid.a",
        "vid.c",
        "vid.long#1",
        "vid/b c",
        "vid.v1",
    ]


def test_stage_script_writes_shards_and_metrics(tmp_path: Path, videos: dict) -> None:
    (tmp_path / "params.yaml").write_text(
        "dataset: {name: tiny}\n"
        "extract: {frames_per_video: 2, frame_stride: 0, short_side: 16, jpeg_quality: 80, samples_per_shard: 4,"
        " workers: 1, timeout_s: 60, min_frames: 8, keep_truncated: true}\n"
    )
    (tmp_path / "text.mp4").write_text("this is not a video\n")
    noise = write_faststart_noise(tmp_path / "noise.mp4").read_bytes()
    (tmp_path / "tail.mp4").write_bytes(noise[: int(len(noise) * 0.6)])  # h264 errors at the cut
    rows = [
        {"video_id": "one", "path": videos["a"], "label": 0, "split": "train"},
        {"video_id": "two", "path": tmp_path / "nope.mp4", "label": 1, "split": "val"},
        {"video_id": "three", "path": tmp_path / "text.mp4", "label": 1, "split": "val"},
        {"video_id": "tail", "path": tmp_path / "tail.mp4", "label": 1, "split": "train"},
    ]
    (tmp_path / INDEX).parent.mkdir(parents=True)
    pq.write_table(index_table(rows), tmp_path / INDEX)
    env = {
        k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "SLURM_PROCID", "SLURM_NTASKS")
    }
    env["PYTHONPATH"] = str(REPO)  # `stages` is run as dvc runs it: python -m, from the project
    run = subprocess.run(
        [sys.executable, "-m", "stages.extract"],
        cwd=tmp_path, env=env, check=True, capture_output=True, text=True,
    )  # fmt: skip
    metrics = json.loads((tmp_path / "metrics" / "extract.json").read_text())
    assert (metrics["written"], metrics["failed"]) == (2, 2)
    reasons = {f["video_id"]: f["reason"] for f in metrics["failures"]}
    assert reasons["two"] == "missing file" and reasons["three"].startswith("not a readable video")
    assert [t["video_id"] for t in metrics["truncated"]] == ["tail"]
    # Handled files make no decoder noise: every stderr line is one of our log records.
    noise_lines = [
        line for line in run.stderr.splitlines() if not re.match(r"^\d\d:\d\d:\d\d [A-Z]+ eva", line)
    ]
    assert noise_lines == []
    assert {q.stem for q in (tmp_path / SHARDS).glob("*.json")} == {
        q.stem for q in (tmp_path / SHARDS).glob("*.tar")
    }  # counts
    assert sorted(p.name for p in (tmp_path / SHARDS).glob("*.tar")) == ["train-000000.tar"]


def test_the_extract_stage_and_its_decode_workers_do_not_load_torch() -> None:
    """A decode worker re-imports the stage's module (multiprocessing's main-module rule): with torch
    in it, every worker start cost ~1.5 s and hundreds of MB."""
    code = "import sys, stages.extract; assert 'torch' not in sys.modules, 'torch imported'"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, check=True)


def test_auto_shard_size_gives_an_8x8_run_a_shard_per_reader() -> None:
    from eva.data.extract import shard_size

    assert shard_size(9537, "auto") == 149  # UCF101 train: 64 shards (+1 short), one per reader of 8 x 8
    assert shard_size(3783, "auto") == 59  # UCF101 val
    assert shard_size(168913, "auto") == 512  # SSv2 train: capped, 330 shards
    assert shard_size(40, "auto") == 1 and shard_size(40, 512) == 512
    with pytest.raises(ValueError, match="extract.samples_per_shard"):
        ExtractConfig(samples_per_shard="many")


def test_each_shard_carries_its_count_so_a_loader_reads_no_tar_header(
    tmp_path: Path, good_index: pa.Table, monkeypatch: pytest.MonkeyPatch
) -> None:
    import tarfile

    from eva.data.clips import count_shard_samples

    out = tmp_path / "shards"
    extract_shards(
        good_index, out, ExtractConfig(frames_per_video=2, short_side=16, samples_per_shard=2, workers=1)
    )
    urls = list_shards(out, "train") + list_shards(out, "val")
    by_headers = count_shard_samples(urls)
    for url in urls:
        facts = json.loads(Path(url).with_suffix(".json").read_text())
        assert facts["bytes"] == Path(url).stat().st_size and facts["samples"] >= 1
    assert by_headers == sum(json.loads(Path(u).with_suffix(".json").read_text())["samples"] for u in urls)

    def no_tar(*args: object, **kwargs: object) -> None:
        raise AssertionError("a tar header was read")

    monkeypatch.setattr(tarfile, "open", no_tar)
    assert count_shard_samples(urls) == by_headers
    monkeypatch.undo()
    stale = Path(urls[0]).with_suffix(".json")  # a count for another file (its size differs): not trusted
    stale.write_text(json.dumps({"samples": 999, "bytes": 1}))
    assert count_shard_samples(urls) == by_headers
