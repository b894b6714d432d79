"""Same bytes on every machine: the whole pipeline, run with OMP_NUM_THREADS 1 or 2 and with the
CPU ISA capped or not, writes identical files (videos, shards, pretrained models, attributes,
model.pt, metrics).

Each stage runs as DVC runs it (`python -m stages.<name>` in the project folder), so the numerics that
`stages/__init__.py` pins are the ones under test: the thread count is the pipeline's own
(`EVA_NUM_THREADS`, default 2; MKL's vendor-independent branch is reproducible only at a fixed
count), so neither the machine's cores nor its OMP_NUM_THREADS reach the numbers. What "capped" caps
here: oneDNN to SSE4.1, numpy to its x86-64-v2 baseline, libjpeg-turbo to SSE2, and MKL and ATen to
the pinned branches written out. ATen itself cannot run below AVX2 with the same bits (its DEFAULT
kernels draw other random numbers), which is why an AVX-512 machine is capped at AVX2 rather than
the other way round (docs/reproducibility.md).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from eva.config import load_params, write_params
from eva.preset import merge

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
CAPPED = {
    "ATEN_CPU_CAPABILITY": "avx2",
    "MKL_CBWR": "COMPATIBLE",
    "ONEDNN_MAX_CPU_ISA": "SSE41",
    "NPY_DISABLE_CPU_FEATURES": "X86_V3 X86_V4 AVX512_ICL AVX512_SPR",
    "JSIMD_FORCESSE2": "1",
}
NOT_COMPARED = ("metrics/timings", ".eva_cache", "checkpoints", "logs")


def _run_pipeline(root: Path, env: dict[str, str]) -> dict[str, bytes]:
    root.mkdir(parents=True)
    write_params(merge(load_params(REPO / "params.yaml"), TINY), root / "params.yaml")
    base = {k: v for k, v in os.environ.items() if k not in CAPPED and "THREADS" not in k}
    env = base | {"PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", **env}
    for stage in STAGES:
        done = subprocess.run(
            [sys.executable, "-m", f"stages.{stage}"], cwd=root, env=env, capture_output=True, text=True
        )
        assert done.returncode == 0, f"{stage}:\n{done.stderr[-4000:]}"
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and not str(p.relative_to(root)).startswith(NOT_COMPARED)
    }


@pytest.mark.slow
def test_the_pipeline_writes_the_same_bytes_on_any_thread_count_and_isa_cap(tmp_path: Path) -> None:
    two = _run_pipeline(tmp_path / "two_threads", {"OMP_NUM_THREADS": "2"})
    one = _run_pipeline(tmp_path / "one_thread", {"OMP_NUM_THREADS": "1"})
    capped = _run_pipeline(tmp_path / "capped", {"OMP_NUM_THREADS": "2", **CAPPED})

    assert "models/trained/model.pt" in two and "models/pretrained/clip/open_clip_model.safetensors" in two
    assert any(name.startswith("shards/") for name in two)
    assert any(name.startswith("attributes/") for name in two)
    for other, label in ((one, "1 thread"), (capped, "ISA capped")):
        assert sorted(other) == sorted(two), label
        differ = [name for name in two if other[name] != two[name]]
        assert differ == [], f"{label}: {differ}"
