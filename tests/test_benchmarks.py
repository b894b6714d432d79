"""Smoke tests of the train-step, real-size, loader and GPU-check benchmarks' CPU paths at a tiny size (docs/performance.md)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from benchmarks import gpu_check, loader, machine, train_step
from eva.demo.tiny import TinyClipSpec, save_tiny_open_clip

SPEC = TinyClipSpec(embed_dim=16, image_size=32, patch_size=16, vision_width=32, vision_layers=2, heads=2)


@pytest.fixture(scope="module")
def backbone(tmp_path_factory: pytest.TempPathFactory) -> str:
    return save_tiny_open_clip(tmp_path_factory.mktemp("bench_backbone"), SPEC)


def tiny_args(backbone: str, out: Path, *flags: str) -> list[str]:
    return [
        "--backbone", backbone, "--image-size", str(SPEC.image_size), "--frames", "2", "--classes", "3",
        "--steps", "1", "--skip-counts", "--loader-steps", "3", "--out", str(out), *flags,
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("flags", "shown"),
    [
        (("--bf16", "--checkpointing", "--loader-workers", "0,1"), "bf16, checkpointing"),
        (("--compile", "--compile-backend", "eager", "--loader-workers", ""), "compile"),
    ],
)
def test_train_step_benchmark_runs_with_every_cpu_flag(
    backbone: str, tmp_path: Path, flags: tuple[str, ...], shown: str
) -> None:
    out = tmp_path / "bench" / "train_step.md"
    table = train_step.main(tiny_args(backbone, out, *flags))
    assert out.read_text() == table
    assert f", {shown}, median" in table
    for row in ("| eva |", "| full |", "| full space-time |", "| eva / full space-time |", "| eva / full |"):
        assert row in table
    assert table.count("| n/a |") == 3  # no MFU on CPU
    loader_rows = [line for line in table.splitlines() if line.startswith(("| 0 |", "| 1 |"))]
    assert len(loader_rows) == (2 if "0,1" in flags else 0)


@pytest.mark.parametrize("attention", ["gated", "gated_per_token", "joint"])
def test_counted_flops_leave_out_the_frozen_weight_gradients(
    backbone: str, tmp_path: Path, attention: str
) -> None:
    args = train_step.parse_args(tiny_args(backbone, tmp_path / "t.md", "--attention", attention))
    visual, mean, std = train_step.make_visual(backbone, SPEC.image_size)

    def model(trains_backbone: bool) -> train_step.VideoClassifier:
        built = train_step.VideoClassifier(
            train_step.make_config("eva", args, SPEC.image_size),
            train_step.OpenClipBackbone(visual, args.frames, mean, std),
        )
        return built.requires_grad_(True) if trains_backbone else built

    eva, full_space_time = (train_step.count_step_flops(model(t), 1) for t in (False, True))
    # the frozen Linear weights' gradients (a third of the backbone's products) are skipped
    assert 0.6 < eva / full_space_time < 0.8
    assert next(model(False).parameters()).device.type == "cpu"  # counting ran on a meta copy


def test_peak_table_matches_device_names(monkeypatch: pytest.MonkeyPatch) -> None:
    """One peak table for every benchmark; specific names win over the names they contain."""
    assert machine.device_peaks(torch.device("cpu")) == (machine.cpu_model(), None)
    assert train_step.peak_tflops(torch.device("cpu")) == (machine.cpu_model(), None)
    for name, bf16, fp32 in (
        ("NVIDIA H200", 989.0, 494.7),
        ("NVIDIA GH200 480GB", 989.0, 494.7),
        ("NVIDIA H100 80GB HBM3", 989.0, 494.7),
        ("NVIDIA H100 PCIe", 756.0, 378.0),
        ("NVIDIA A100-SXM4-80GB", 312.0, 156.0),
        ("NVIDIA L40S", 362.0, 183.0),
        ("NVIDIA L4", 121.0, 60.0),
        ("Tesla V100-SXM2-16GB", 125.0, None),
    ):
        monkeypatch.setattr(torch.cuda, "get_device_name", lambda _d, name=name: name)
        assert machine.device_peaks(torch.device("cuda")) == (name, {"bf16": bf16, "fp32": fp32})
        assert train_step.peak_tflops(torch.device("cuda")) == (name, bf16)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda _d: "Some Other GPU")
    assert machine.device_peaks(torch.device("cuda")) == ("Some Other GPU", None)
    assert train_step.peak_tflops(torch.device("cuda"))[1] is None
    assert loader.GPU_PEAK_TFLOPS == 989.0  # the H100 SXM of the cores-per-GPU arithmetic


def test_gpu_check_tiny_cpu_run_prints_every_row(tmp_path: Path) -> None:
    out = tmp_path / "gpu_check.md"
    table = gpu_check.main(["--device", "cpu", "--tiny", "--out", str(out)])
    assert out.read_text() == table
    rows = [line for line in table.splitlines() if line.startswith("| ") and not line.startswith("| check")]
    names = [row.split(" | ")[0][2:] for row in rows]
    assert names == [
        "train step, fp32",
        "train step, bf16",
        "train step, bf16 + compile (aot_eager)",
        "train step, bf16 + compile + checkpointing (aot_eager)",
        "loader (`benchmarks.train_step.bench_loader`)",
        "evaluation forward, bf16 (`view_probabilities`)",
        "JPEG decode, `train.decode: device` vs cpu",
        "tiny pipeline, 2 epochs (`run_training`)",
    ]
    for row in rows:
        assert row.count(" | ") == 5, row  # six cells: a failing row keeps the table's shape
    by_name = dict(zip(names, rows, strict=True))
    for name in names[:4]:  # bf16 + compile + checkpointing included (docs/performance.md)
        assert " s/step" in by_name[name] and "n/a" in by_name[name]  # no MFU or CUDA memory on the CPU
    assert "clips/s" in by_name[names[4]] and ("| yes" in by_name[names[4]] or "| no" in by_name[names[4]])
    assert "views/s" in by_name[names[5]]
    assert "max abs diff 0, mean 0.000 of 255" in by_name[names[6]]  # on the CPU both paths are one decoder
    assert "within" in by_name[names[6]] and "frames/s" in by_name[names[6]]
    assert "train loss" in by_name[names[7]] and "after 2 epochs" in by_name[names[7]]


def test_loader_benchmark_writes_its_tables_at_a_tiny_size(tmp_path: Path) -> None:
    out = tmp_path / "bench" / "loader.md"
    table = loader.main([
        "--videos", "4", "--batch", "2", "--sources", "1", "--shards", "2", "--rounds", "1", "--workers", "1",
        "--width", "48", "--height", "32", "--short-side", "32", "--image-size", "24", "--extract-workers", "1",
        "--step-gflop", "k400=907,ucf101-videomae=1395", "--out", str(out),
    ])  # fmt: skip
    assert out.read_text() == table
    summary = table.split("<!-- summary -->\n", 1)[1].split("<!-- /summary -->", 1)[0]
    header = "| preset | clip | loader ms/clip | floor ms/clip | loader / floor | cores per GPU (floor) | 1-worker clips/s |"
    assert header in summary and "one thread" in summary
    rows = [
        line.split(" | ")
        for line in summary.splitlines()
        if line.startswith(("| k400 ", "| ucf101-videomae "))
    ]
    assert [r[1] for r in rows] == [
        "8 of 32 @24, dense, random resized crop, flip",
        "16 of 64 @24, dense, multi-scale crop",
    ]
    for row in rows:  # numbers only: timings are never asserted
        float(row[2]), float(row[3]), float(row[4].rstrip("x"))
        cores, floor = row[5].rstrip(")").split(" (")
        float(cores), float(floor), float(row[6].rstrip(" |"))
    # the GPU's clips/s follow from the given FLOPs alone: 0.4 x 989 TFLOP/s / GFLOP per clip
    assert "| k400 | " in table and "| 907 | 436 |" in table and "| 1,395 | 284 |" in table
    phases = [line for line in table.splitlines() if line.startswith("| ") and line.count("|") == 4]
    assert [p.split(" | ")[0][2:] for p in phases][-7:] == [*loader.PHASES.values(), "total"]
    # a generated frame looks like video, not noise: neighbouring pixels are alike, frames move a little
    video = loader.natural_video(np.random.default_rng(0), 3, 32, 48).astype(np.float32)
    assert video.std() > 20 and np.abs(np.diff(video, axis=2)).mean() < video.std() / 2
    assert 0 < np.abs(video[1] - video[0]).mean() < video.std()
