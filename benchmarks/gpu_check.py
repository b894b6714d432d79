"""One call checks a GPU (issue 37, item 6): one markdown table of what a GPU node needs to know.

    python -m benchmarks.gpu_check                        # on one GPU (`make gpu-check`); aims at < 8 minutes
    python -m benchmarks.gpu_check --device cpu --tiny    # every row at tiny sizes, seconds (the test's form)

Rows (each guarded: a failing row shows its error's first line and the others still run):
  * train step of EVA on ViT-B/16 (open_clip architecture, random weights, no download) at the CLIP
    presets' size, T = 8 frames at 224 px, six attributes, 101 classes, `--batch` clips, in fp32 (TF32
    matmuls on CUDA, as evaluation runs fp32), bf16 autocast, bf16 + torch.compile and bf16 + compile +
    activation checkpointing: median s/step, MFU = counted FLOPs (`benchmarks.train_step.count_step_flops`)
    / s / the device's dense peak for that precision (`benchmarks.machine.PEAKS`; n/a on an unlisted device or the CPU),
    peak memory (`torch.cuda.max_memory_allocated`, n/a on the CPU). The steps are
    `benchmarks.train_step.StepRunner`'s;
  * the loader: `benchmarks.train_step.bench_loader` (generated noise videos extracted to shards, 16
    stored frames at the crop size, six attributes, training crops) with workers = the CPU cores this
    process may use, clips/s, and whether that keeps up with the clips/s the bf16 step consumes;
  * evaluation throughput: views/s of the model's evaluation forward (`VideoClassifier.view_probabilities`
    under `eva.evaluate.device_numerics`, bf16 autocast on CUDA) on a synthetic batch at the step's size,
    model time only, which is what `EvalResult.throughput` counts (the loader is the row above);
  * the GPU JPEG decode (`train.decode: device`, nvJPEG) against the CPU path on the same JPEGs and
    crops: largest and mean per-pixel difference against `eva.data.clips.DEVICE_DECODE_TOLERANCE`, frames/s of each;
  * a 2-epoch run of the tiny training pipeline (`eva.demo.tiny_training`: generated videos, shards,
    attributes, tiny CLIP) through `run_training`, on the device `run_training` picks (CUDA where there
    is one): final train loss and seconds, data generation excluded.

No GPU was lent to the session that wrote this script, so it has only run with `--device cpu --tiny`:
the GPU table is to be made by running it on a GPU (docs/performance.md). The table is printed and
written to `--out` (results/bench/gpu_check.md).
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import tempfile
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from benchmarks import train_step
from benchmarks.machine import device_peaks

REPO = Path(__file__).resolve().parents[1]

STEP_ROWS = (  # (row name, bf16, compile, checkpointing)
    ("fp32", False, False, False),
    ("bf16", True, False, False),
    ("bf16 + compile", True, True, False),
    ("bf16 + compile + checkpointing", True, True, True),
)


def first_line(error: BaseException) -> str:
    text = f"{type(error).__name__}: {error}".strip()
    return text.splitlines()[0].replace("|", "/")[:200]


def guarded(rows: list[dict], name: str, measure: Callable[[], dict]) -> dict | None:
    """Run `measure` for row `name`; on an error, a row with the error's first line instead."""
    start = time.perf_counter()
    try:
        row = {"row": name, **measure()}
    except Exception as error:  # noqa: BLE001  one failing row must not hide the others
        traceback.print_exc()
        row = {"row": name, "result": f"failed: {first_line(error)}", "failed": True}
    row["wall"] = time.perf_counter() - start
    rows.append(row)
    return None if row.get("failed") else row


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def memory_mib(device: torch.device) -> str:
    return f"{torch.cuda.max_memory_allocated(device) / 2**20:,.0f} MiB" if device.type == "cuda" else "n/a"


def reset_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def step_args(args: argparse.Namespace) -> argparse.Namespace:
    """`benchmarks.train_step`'s arguments at this check's size."""
    return train_step.parse_args(
        ["--backbone", args.backbone, "--batch", str(args.batch), "--frames", str(args.frames),
         "--image-size", str(args.image_size), "--classes", str(args.classes), "--steps", str(args.steps),
         "--loader-steps", str(args.loader_steps), "--device", args.device]
    )  # fmt: skip


def measure_step(
    make_model: Callable[[], torch.nn.Module],
    flops: int,
    args: argparse.Namespace,
    device: torch.device,
    *,
    bf16: bool,
    compile: bool,
    checkpointing: bool,
) -> dict:
    reset_memory(device)
    tf32 = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = device.type == "cuda"  # fp32 products in TF32, as evaluation
    try:
        runner = train_step.StepRunner(
            make_model(), args.batch, device, bf16=bf16,
            compile=args.compile_backend if compile else None, checkpointing=checkpointing,
        )  # fmt: skip
        runner.step()  # warm-up: kernels, optimiser state, compilation
        reset_memory(device)
        seconds = statistics.median(runner.step() for _ in range(args.steps))
        memory = memory_mib(device)
        del runner
    finally:
        torch.backends.cuda.matmul.allow_tf32 = tf32
    _, peaks = device_peaks(device)
    tflops = flops / seconds / 1e12
    peak = peaks and peaks["bf16" if bf16 else "fp32"]  # None: unlisted, or no TF32
    return {
        "seconds": seconds,
        "result": f"{seconds:.3f} s/step, {args.batch / seconds:,.1f} clips/s",
        "mfu": f"{100 * tflops / peak:.1f}% ({tflops:.1f} TFLOP/s)"
        if peak
        else f"n/a ({tflops:.3f} TFLOP/s)",
        "memory": memory,
    }


def measure_loader(args: argparse.Namespace, workers: int, consumed: float | None) -> dict:
    loader = train_step.bench_loader(step_args(args), [workers], args.loader_steps)[workers]
    rate = loader["clips_per_s"]
    keeps_up = "n/a (no bf16 step)" if consumed is None else ("yes" if rate >= consumed else "no")
    return {
        "result": f"{rate:,.1f} clips/s ({workers} workers, first batch {loader['first_s']:.1f} s)",
        "keeps_up": f"{keeps_up}" + (f" (bf16 step: {consumed:,.1f} clips/s)" if consumed else ""),
    }


@torch.no_grad()
def measure_eval(
    make_model: Callable[[], torch.nn.Module], args: argparse.Namespace, device: torch.device
) -> dict:
    from eva.evaluate import device_numerics

    reset_memory(device)
    model = make_model().to(device).eval()
    video, attributes, _ = train_step.make_batch(model.config, args.batch, device)
    attributes = {name: a[:, None] for name, a in attributes.items()}  # one keyframe: [B, 1, L, D]
    times = []
    for _ in range(args.steps + 1):  # the first is the warm-up
        sync(device)
        start = time.perf_counter()
        with device_numerics(device, amp=True):
            model.view_probabilities(video, attributes)
        sync(device)
        times.append(time.perf_counter() - start)
    seconds = statistics.median(times[1:])
    return {
        "result": f"{args.batch / seconds:,.1f} views/s (batch {args.batch}, 1 view x 1 keyframe each)",
        "memory": memory_mib(device),
    }


def measure_jpeg_decode(args: argparse.Namespace, device: torch.device) -> dict:
    """The `train.decode: device` path (`EncodedClips.decode`: one batched `decode_jpeg` on `device`, the
    clips' crops and resizes there) against the CPU path (`decode("cpu")`, what loader workers make) on
    the same JPEGs and plans: natural-looking frames at the CLIP presets' storage (short side 256,
    JPEG q90; tiny: 32), `args.frames` frames x `args.batch` clips, random resized crop + flip to
    `args.image_size`. Reports the largest and mean per-pixel difference, whether they are within
    `DEVICE_DECODE_TOLERANCE`, and frames/s of each path (the CPU path on this process's threads)."""
    from torchvision.io import encode_jpeg

    from benchmarks.loader import natural_video
    from eva.data.clips import DEVICE_DECODE_TOLERANCE, Augment, EncodedClip, EncodedClips, plan_train_clip

    height = 32 if args.tiny else 256
    width = height * 4 // 3
    rng, generator = np.random.default_rng(0), torch.Generator().manual_seed(0)
    augment = Augment(flip=True)
    clips = []
    for _ in range(args.batch):
        frames = torch.from_numpy(natural_video(rng, args.frames, height, width)).permute(0, 3, 1, 2)
        plan = plan_train_clip(height, width, args.image_size, augment, generator=generator)
        jpegs = [encode_jpeg(frame.contiguous(), quality=90) for frame in frames]
        clips.append(EncodedClip(jpegs, None, args.image_size, plan, augment=augment))
    batch = EncodedClips.pack(clips)

    def timed(where: torch.device) -> tuple[torch.Tensor, float]:
        times, out = [], None
        for _ in range(args.steps + 1):  # the first is the warm-up (nvJPEG handles, kernels)
            sync(where)
            start = time.perf_counter()
            out = batch.decode(where)
            sync(where)
            times.append(time.perf_counter() - start)
        return out.cpu(), statistics.median(times[1:])

    reference, cpu_seconds = timed(torch.device("cpu"))
    pixels, seconds = timed(device)
    diff = (pixels.int() - reference.int()).abs()
    largest, mean = int(diff.max()), float(diff.float().mean())
    within = largest <= DEVICE_DECODE_TOLERANCE["max"] and mean < DEVICE_DECODE_TOLERANCE["mean"]
    count = args.batch * args.frames
    return {
        "result": f"max abs diff {largest}, mean {mean:.3f} of 255 (tolerance {DEVICE_DECODE_TOLERANCE['max']} / "
        f"{DEVICE_DECODE_TOLERANCE['mean']}: {'within' if within else 'OUTSIDE'}); {count / seconds:,.0f} frames/s "
        f"on {device.type} vs {count / cpu_seconds:,.0f} on the CPU path ({torch.get_num_threads()} threads)",
        "memory": memory_mib(device),
    }


def measure_tiny_training(root: Path) -> dict:
    from eva.demo.tiny_training import make_job, write_tiny_data
    from eva.train.loop import run_training

    data = write_tiny_data(root / "data")
    job = make_job(data, root / "run")
    job.checkpoint_root, job.live_dir = None, None
    start = time.perf_counter()
    result = run_training(job)
    seconds = time.perf_counter() - start
    where = next(result.model.parameters()).device.type
    return {
        "result": f"train loss {result.history[-1]['train_loss']:.4f} after {len(result.history)} epochs, "
        f"{seconds:.1f} s on {where}"
    }


def markdown(args: argparse.Namespace, device: torch.device, rows: list[dict], seconds: float) -> str:
    name, peaks = device_peaks(device)
    peak = (
        ", ".join(f"{k} {v:g}" for k, v in (("bf16", peaks["bf16"]), ("fp32 (TF32)", peaks["fp32"])) if v)
        + " TFLOP/s peak"
        if peaks
        else "peaks unknown"
    )
    lines = [
        "<!-- generated by benchmarks/gpu_check.py; do not edit -->",
        f"GPU check on {name} ({peak}), {args.model_name} @{args.image_size} px, T={args.frames}, batch "
        f"{args.batch}, median of {args.steps} steps{', tiny sizes' if args.tiny else ''}; {seconds:.0f} s in all.",
        "",
        "| check | result | MFU | peak memory | keeps up | row s |",
        "|---|---|---:|---:|---|---:|",
    ]
    for row in rows:
        lines.append(
            f"| {row['row']} | {row['result']} | {row.get('mfu', '')} | {row.get('memory', '')} "
            f"| {row.get('keeps_up', '')} | {row['wall']:.0f} |"
        )
    return "\n".join(lines) + "\n"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda", help="cuda | cpu")
    parser.add_argument("--tiny", action="store_true", help="tiny model and data: the CPU smoke run")
    parser.add_argument("--batch", type=int, help="clips per step (default 8; tiny: 2)")
    parser.add_argument("--steps", type=int, help="timed steps per row (default 5; tiny: 1)")
    parser.add_argument("--workers", type=int, help="loader workers (default: the usable CPU cores; tiny: 1)")
    parser.add_argument("--loader-steps", type=int, help="batches the loader row times (default 4 x workers)")
    parser.add_argument(
        "--compile-backend", help="torch.compile backend (default inductor; tiny on CPU: aot_eager)"
    )
    parser.add_argument("--out", type=Path, default=REPO / "results" / "bench" / "gpu_check.md")
    args = parser.parse_args(argv)
    args.batch = args.batch or (2 if args.tiny else 8)
    args.steps = args.steps or (1 if args.tiny else 5)
    args.workers = (
        args.workers if args.workers is not None else (1 if args.tiny else len(os.sched_getaffinity(0)))
    )
    args.loader_steps = args.loader_steps or (3 if args.tiny else max(4 * args.workers, 8))
    if args.compile_backend is None:
        args.compile_backend = "aot_eager" if args.tiny and args.device == "cpu" else "inductor"
    args.frames, args.classes = (2, 3) if args.tiny else (8, 101)
    args.image_size = 32 if args.tiny else 224
    args.backbone = "ViT-B-16"  # the tiny run replaces it with a saved tiny open_clip (main)
    args.model_name = "EVA on a tiny open_clip ViT" if args.tiny else "EVA ViT-B/16 (random weights)"
    return args


def main(argv: Sequence[str] | None = None) -> str:
    args = parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit(
            "--device cuda, but torch sees no CUDA device (use --device cpu --tiny for the CPU run)"
        )
    torch.manual_seed(0)
    started = time.perf_counter()
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="eva-gpu-check-") as tmp:
        if args.tiny:
            from eva.demo.tiny import TinyClipSpec, save_tiny_open_clip

            spec = TinyClipSpec(
                embed_dim=16, image_size=32, patch_size=16, vision_width=32, vision_layers=2, heads=2
            )
            args.backbone = save_tiny_open_clip(Path(tmp) / "backbone", spec)
        sargs = step_args(args)
        visual, mean, std = train_step.make_visual(args.backbone, args.image_size)

        def make_model() -> train_step.VideoClassifier:
            return train_step.VideoClassifier(
                train_step.make_config("eva", sargs, args.image_size),
                train_step.OpenClipBackbone(copy.deepcopy(visual), args.frames, mean, std),
            )

        flops = train_step.count_step_flops(make_model(), args.batch)
        steps = {}
        for name, bf16, compile, checkpointing in STEP_ROWS:
            label = f"train step, {name}" + (f" ({args.compile_backend})" if compile else "")
            steps[name] = guarded(
                rows, label,
                lambda bf16=bf16, compile=compile, checkpointing=checkpointing: measure_step(
                    make_model, flops, args, device, bf16=bf16, compile=compile, checkpointing=checkpointing
                ),
            )  # fmt: skip
            torch._dynamo.reset()
        consumed = args.batch / steps["bf16"]["seconds"] if steps["bf16"] else None
        guarded(
            rows,
            "loader (`benchmarks.train_step.bench_loader`)",
            lambda: measure_loader(args, args.workers, consumed),
        )
        guarded(
            rows,
            "evaluation forward, bf16 (`view_probabilities`)",
            lambda: measure_eval(make_model, args, device),
        )
        guarded(
            rows,
            "JPEG decode, `train.decode: device` vs cpu",
            lambda: measure_jpeg_decode(args, device),
        )
        guarded(rows, "tiny pipeline, 2 epochs (`run_training`)", lambda: measure_tiny_training(Path(tmp)))
    table = markdown(args, device, rows, time.perf_counter() - started)
    print(table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(table, encoding="utf-8")
    print(f"wrote {args.out}")
    return table


if __name__ == "__main__":
    main()
