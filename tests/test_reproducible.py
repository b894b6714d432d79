"""Same bytes on the same CPU, whatever its core count or OMP_NUM_THREADS: the whole pipeline, run on
two threads and again with OMP_NUM_THREADS=1 on one core, writes identical files (videos, shards,
pretrained models, attributes, model.pt, metrics).

Each stage runs as DVC runs it (`python -m stages.<name>` in the project folder), so the numerics that
`run_stage` pins are the ones under test: the thread count is the pipeline's own (`EVA_NUM_THREADS`,
default 2; MKL's products and ATen's reductions compute other bits on another count), so neither the
machine's cores nor its OMP_NUM_THREADS reach the numbers. Another CPU model is not covered: each
library keeps its own ISA dispatch (docs/reproducibility.md).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from eva.config import load_params, write_params
from eva.utils.trees import merge

REPO = Path(__file__).resolve().parents[1]
STAGES = ("check", "demo_data", "pretrain", "index", "extract", "attributes", "train", "evaluate")
TINY = {
    "demo": {"train_per_class": 2, "val_per_class": 1, "frames": 12, "size": 64},
    "pretrain": {
        "held_out": 16,
        "workers": 1,  # stills rendered in a DataLoader worker, as in the demo
        "clip": {"steps": 6, "batch_size": 16, "warmup_steps": 2},
        "captioner": {"steps": 4, "batch_size": 8, "warmup_steps": 1},
        "videomae": {"frames": 4},
    },
    "extract": {"frames_per_video": 8, "short_side": 48, "workers": 2},  # 64 -> 48 px: swscale scales
    "attributes": {
        "keyframes": 2,
        "caption": {"max_new_tokens": 4},
        "gallery_videos": 2,
        "label": {"vocabulary": str(REPO / "eva/resources/demo_shapes.txt")},
    },
    "model": {"frames": 4, "image_size": 48},
    "train": {"epochs": 2, "batch_size": 8, "workers": 1},
    "evaluate": {"clips": 2, "crops": 1},
}
NOT_COMPARED = ("metrics/timings", ".eva_cache", "checkpoints", "logs")


def _run_pipeline(root: Path, env: dict[str, str], prefix: tuple[str, ...] = ()) -> dict[str, bytes]:
    root.mkdir(parents=True)
    write_params(merge(load_params(REPO / "params.yaml"), TINY), root / "params.yaml")
    base = {k: v for k, v in os.environ.items() if "THREADS" not in k}
    env = base | {"PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", **env}
    for stage in STAGES:
        done = subprocess.run(
            [*prefix, sys.executable, "-m", f"stages.{stage}"],
            cwd=root,
            env=env,
            capture_output=True,
            text=True,
        )
        assert done.returncode == 0, f"{stage}:\n{done.stderr[-4000:]}"
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and not str(p.relative_to(root)).startswith(NOT_COMPARED)
    }


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("taskset") is None, reason="needs taskset (util-linux) to run on one core")
def test_the_pipeline_writes_the_same_bytes_on_any_core_and_thread_count(tmp_path: Path) -> None:
    two = _run_pipeline(tmp_path / "two_threads", {"OMP_NUM_THREADS": "2"})
    one = _run_pipeline(tmp_path / "one_core", {"OMP_NUM_THREADS": "1"}, prefix=("taskset", "-c", "0"))

    assert "models/trained/model.pt" in two and "models/pretrained/clip/open_clip_model.safetensors" in two
    assert any(name.startswith("shards/") for name in two)
    assert any(name.startswith("attributes/") for name in two)
    assert sorted(one) == sorted(two)
    differ = [name for name in two if one[name] != two[name]]
    assert differ == [], f"one core, OMP_NUM_THREADS=1: {differ}"
