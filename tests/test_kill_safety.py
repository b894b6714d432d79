"""`kill -9` of the extract and attributes stages mid-run, then a re-run: the same bytes as a clean run.

Each stage runs as a subprocess in a scratch project, the way `dvc repro` runs it. While it is
killed, nothing it wrote may sit under a final output name; after the re-run, outputs must be
byte-identical to those of a run that was never interrupted.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml
from conftest import moving_square, write_video
from test_attributes import SPEC, VOCAB, _videos, write_shard
from test_extract import index_table

from eva.demo.tiny import save_tiny_captioner, save_tiny_open_clip
from eva.utils.io import staging_dir
from stages._layout import ATTRIBUTES, INDEX, SHARDS

REPO = Path(__file__).resolve().parents[1]
DATASET = "folder"  # a dataset name the stages accept; the index is written directly


def tree_hashes(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def start_stage(project: Path, stage: str) -> subprocess.Popen:
    env = {
        k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "SLURM_PROCID", "SLURM_NTASKS")
    }
    env["PYTHONPATH"] = str(REPO)
    return subprocess.Popen(
        [sys.executable, "-m", f"stages.{stage}"],
        cwd=project, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True,
    )  # fmt: skip


def run_stage(project: Path, stage: str) -> None:
    proc = start_stage(project, stage)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err.decode()


def kill_when(proc: subprocess.Popen, ready, timeout_s: float = 120.0) -> None:
    """SIGKILL the stage (and the decode workers it started) as soon as `ready()` holds."""
    deadline = time.monotonic() + timeout_s
    while not ready():
        assert proc.poll() is None, f"stage ended before it could be killed: {proc.stderr.read().decode()}"
        assert time.monotonic() < deadline, "stage never reached the state to kill it in"
        time.sleep(0.01)
    assert proc.poll() is None, "stage finished before the kill"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(30)
    assert proc.returncode == -signal.SIGKILL


@pytest.fixture(scope="module")
def videos(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    root = tmp_path_factory.mktemp("kill_videos")
    return [write_video(root / f"v{i}.mp4", moving_square(24, 48, seed=i)) for i in range(6)]


def extract_project(root: Path, videos: list[Path]) -> Path:
    """6 videos, one shard each, then a FIFO that blocks its reader until extract.timeout_s."""
    root.mkdir()
    (root / "params.yaml").write_text(
        yaml.safe_dump(
            {
                "dataset": {"name": DATASET},
                "extract": {
                    "frames_per_video": 4, "frame_stride": 0, "short_side": 32, "jpeg_quality": 90, "samples_per_shard": 1,
                    "workers": 1, "timeout_s": 2, "min_frames": 8, "keep_truncated": True,
                },
            }
        )
    )  # fmt: skip
    os.mkfifo(root / "hangs.mp4")
    rows = [{"video_id": f"v{i}", "path": p, "label": i % 2, "split": "train"} for i, p in enumerate(videos)]
    rows.append({"video_id": "zz_hangs", "path": root / "hangs.mp4", "label": 0, "split": "train"})
    (root / INDEX).parent.mkdir(parents=True)
    pq.write_table(index_table(rows), root / INDEX)
    return root


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs a FIFO to hold the stage mid-run")
def test_extract_killed_mid_run_then_rerun_gives_the_same_shards(tmp_path: Path, videos: list[Path]) -> None:
    clean = extract_project(tmp_path / "clean", videos)
    run_stage(clean, "extract")
    reference = tree_hashes(clean / SHARDS)
    assert len(reference) == 12  # 6 shards and their sample counts

    killed = extract_project(tmp_path / "killed", videos)
    staging = killed / staging_dir(SHARDS)
    proc = start_stage(killed, "extract")
    kill_when(proc, lambda: (staging / "train-000005.tar").is_file())  # 6 shards done, the FIFO pending
    assert not (killed / SHARDS).exists()  # nothing of the killed run under the final name
    assert not (killed / "metrics" / "extract.json").exists()

    run_stage(killed, "extract")
    assert tree_hashes(killed / SHARDS) == reference
    assert not staging.exists()


def attributes_project(root: Path, models: dict[str, str]) -> Path:
    root.mkdir()
    params = {
        "dataset": {"name": DATASET},
        "attributes": {
            "keyframes": 2, "device": "cpu", "batch_size": 4, "gallery_videos": 2,
            "clip": {"model": models["clip"], "pretrained": ""},
            "captioner": models["captioner"],
            "caption": {"max_new_tokens": 4},
            "label": {"vocabulary": models["vocabulary"], "method": "clip", "detector": "google/owlv2-base-patch16-ensemble", "threshold": 0.1},
            "mask": {"method": "median", "model": "CIDAS/clipseg-rd64-refined", "prompt": "the main subject", "threshold": 0.5},
        },
    }  # fmt: skip
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    shards = root / SHARDS
    for i in range(8):  # 8 shards of 2 videos: a part file per shard lands in the cache as it goes
        write_shard(shards / f"train-{i:06d}.tar", _videos(range(2 * i, 2 * i + 2)))
    write_shard(shards / "val-000000.tar", _videos(range(16, 18)))
    return root


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("kill_models")
    (root / "vocab.txt").write_text("\n".join(VOCAB) + "\n")
    return {
        "clip": save_tiny_open_clip(root / "clip", SPEC, seed=0),
        "captioner": str(save_tiny_captioner(root / "captioner", VOCAB, seed=2)),
        "vocabulary": str(root / "vocab.txt"),
    }


@pytest.mark.slow
def test_attributes_killed_mid_run_then_rerun_gives_the_same_files(tmp_path: Path, tiny_models: dict) -> None:
    clean = attributes_project(tmp_path / "clean", tiny_models)
    run_stage(clean, "attributes")
    reference = tree_hashes(clean / ATTRIBUTES)
    assert sorted(reference) == ["train.parquet", "val.parquet"]

    killed = attributes_project(tmp_path / "killed", tiny_models)
    cache = killed / ".eva_cache" / "attributes"
    proc = start_stage(killed, "attributes")
    kill_when(proc, lambda: any(cache.rglob("train-000001-*.parquet")))  # 2 of 9 shards done
    assert not (killed / ATTRIBUTES).exists()
    assert not (killed / "metrics" / "attributes.json").exists()
    assert not (killed / "metrics" / "attributes_gallery.html").exists()

    run_stage(killed, "attributes")  # resumes from the finished part files
    assert tree_hashes(killed / ATTRIBUTES) == reference
    gallery = (killed / "metrics" / "attributes_gallery.html").read_bytes()
    assert gallery == (clean / "metrics" / "attributes_gallery.html").read_bytes()
