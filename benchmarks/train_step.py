"""Train-step benchmark: EVA against full fine-tuning of the same CLIP ViT, same batch.

Prints, for open_clip's ViT-B/16 with random weights (no download; the counts do not depend on
the weights) and six attributes from a ViT-B/16 CLIP encoder (D_enc = 512, 12 layers), 101 classes:
  * tunable / total parameters and the tunable fraction of every method
    (reference: the authors' VideoMAE ViT-B EVA run had 14,242,611 of 100,468,275 tunable, 14.18%);
  * the time of one training step (forward, loss, backward, AdamW step) and the peak memory of
    EVA and of two full fine-tuning comparators, with the ratios (goal <= 0.6x time, <= 0.5x memory).

Memory: on CUDA, `torch.cuda.max_memory_allocated` over the timed steps, one model on the GPU
at a time. On CPU there is no allocator high-water mark, so the proxy is (a) the bytes autograd keeps for backward
(`saved_tensors_hooks`, each storage counted once, parameters excluded: the activations) plus
(b) the training state, parameters + gradients + AdamW moments of the trained tensors.
Temporaries freed during the forward are not counted, so this slightly under-estimates a real
peak, alike for every model. On CPU, step times are wall time with the three models' steps
interleaved, so load from other processes on a shared machine hits each of them alike, and also
process CPU seconds per step, which waiting for a core does not inflate.

Two full fine-tuning comparators on the same backbone and batch:
  * `full`: the pipeline's `model.method=full`, frame-level fine-tuning (plain CLIP blocks, every
    weight trainable). EVA's forward does strictly more work than this network (temporal attention,
    adapters, attribute tokens), so EVA only saves the frozen weights' gradients and optimiser state;
  * `full space-time`: EVA's own network (temporal attention, tokens, adapters) with every weight
    trainable, i.e. the fully fine-tuned space-time model the parameter-efficient goal (<= 0.6x time,
    <= 0.5x memory, as in AIM's comparison with a fully fine-tuned TimeSformer) is about.
Defaults (batch 1, T = 8, 224 px, 1 warm-up + 2 timed steps) take about 3 minutes on 2 CPU
cores; scale up with the flags.

Flags for a GPU run (`--device cuda`; all also run on CPU): `--bf16` (the forward and loss under
`torch.autocast(dtype=bfloat16)`), `--compile` (`torch.compile` of each model; `--compile-backend`),
`--checkpointing` (activation checkpointing per backbone layer), `--attention` (EVA's
`model.eva.attribute_attention`). Throughput: the FLOPs of one training step of each model are counted
once with `torch.utils.flop_counter.FlopCounterMode` on a copy of the model on the `meta` device
(no compute), with attention forced to its math form so that its matrix products are counted:
forward + backward as autograd runs them, so a frozen weight's skipped gradient is not counted, and
the multiply-adds of matrix products, convolutions and attention only (2 FLOPs each; elementwise
ops, norms and softmax excluded). TFLOP/s = counted FLOPs / median step time; MFU = TFLOP/s over
the device's dense bf16 peak (`benchmarks.machine.PEAKS`, matched on the device name; n/a on CPU or an unlisted
device). The data-loader benchmark then times `VideoAttributeDataset` + `make_loader` on real
shards and an attribute file written here (generated 240x320 videos, the benchmark's T and size,
six attributes at D_enc = 512), clips/s with each `--loader-workers` count, beside the clips/s one
EVA training step consumes. The tables are written to `--out` (results/bench/train_step.md).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import logging
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import open_clip
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from benchmarks.machine import device_peaks
from eva.methods import METHODS
from eva.models import ModelConfig, VideoClassifier
from eva.models.clip_backbone import OpenClipBackbone

REPO = Path(__file__).resolve().parents[1]

ATTRIBUTES = ("label", "caption", "foreground", "background", "original", "dynamic")
ENCODER_DIM = 512  # ViT-B-16 CLIP joint embedding width
ENCODER_LAYERS = 12  # text and image towers of ViT-B-16 both have 12 layers
COMPARED = ("eva", "full", "full space-time")
REFERENCE = (14_242_611, 100_468_275)  # authors' VideoMAE ViT-B EVA run: tunable, total


def peak_tflops(device: torch.device) -> tuple[str, float | None]:
    """(device name, dense bf16 peak TFLOP/s or None: the CPU (its name), or a GPU not in `machine.PEAKS`)."""
    name, peaks = device_peaks(device)
    return name, peaks and peaks["bf16"]


def make_config(method: str, args: argparse.Namespace, image_size: int) -> ModelConfig:
    return ModelConfig(
        method=method,
        num_classes=args.classes,
        backbone=args.backbone,
        frames=args.frames,
        image_size=image_size,
        attributes=ATTRIBUTES if METHODS[method].uses_attributes else (),
        attribute_layers=dict.fromkeys(ATTRIBUTES, ENCODER_LAYERS),
        attribute_dim=ENCODER_DIM,
        attribute_attention=getattr(args, "attention", "gated"),
    )


def make_visual(backbone: str, image_size: int) -> tuple[torch.nn.Module, tuple, tuple]:
    clip = open_clip.create_model(backbone, pretrained=None, force_image_size=image_size)
    cfg = clip.visual.preprocess_cfg
    return clip.visual, tuple(cfg["mean"]), tuple(cfg["std"])


class SavedTensorBytes:
    """Bytes of the distinct storages autograd saves for backward, parameters excluded."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.params = {p.untyped_storage().data_ptr() for p in model.parameters()}
        self.seen: set[int] = set()
        self.bytes = 0

    def pack(self, tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        ptr = storage.data_ptr()
        if ptr not in self.params and ptr not in self.seen:
            self.seen.add(ptr)
            self.bytes += storage.nbytes()
        return tensor

    def hooks(self) -> torch.autograd.graph.saved_tensors_hooks:
        return torch.autograd.graph.saved_tensors_hooks(self.pack, lambda t: t)


def train_state_bytes(model: VideoClassifier) -> int:
    """Parameters + gradients + AdamW's two moments of the trained tensors."""
    params = sum(p.numel() * p.element_size() for p in model.parameters())
    tunable = sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad)
    return params + 3 * tunable


def make_batch(
    cfg: ModelConfig, batch: int, device: torch.device
) -> tuple[torch.Tensor, dict[str, torch.Tensor], torch.Tensor]:
    """A fixed random (video, attributes, labels) batch for `cfg`."""
    gen = torch.Generator().manual_seed(0)
    video = torch.randn(batch, cfg.frames, 3, cfg.image_size, cfg.image_size, generator=gen).to(device)
    attributes = {
        name: torch.randn(batch, ENCODER_LAYERS, ENCODER_DIM, generator=gen).to(device)
        for name in cfg.attributes
    }
    return video, attributes, torch.arange(batch, device=device) % cfg.num_classes


def count_step_flops(model: VideoClassifier, batch: int) -> int:
    """FLOPs of one forward + backward (as autograd runs it) of `model`, counted on a meta-device copy."""
    meta = copy.deepcopy(model).to("meta").train()
    video, attributes, labels = make_batch(meta.config, batch, torch.device("meta"))
    counter = FlopCounterMode(display=False)
    with counter, sdpa_kernel(SDPBackend.MATH):  # attention as matrix products, which the counter sees
        torch.nn.functional.cross_entropy(meta(video, attributes), labels).backward()
    return int(counter.get_total_flops())


class StepRunner:
    """One model, its optimiser and a fixed random batch; `step()` times one training step.

    `bf16`: forward and loss under bfloat16 autocast; `compile`: a `torch.compile` backend name
    (the memory-counting step, `step(counter)`, always runs the eager model: saved-tensor hooks
    are not traced).
    """

    def __init__(
        self,
        model: VideoClassifier,
        batch: int,
        device: torch.device,
        *,
        bf16: bool = False,
        compile: str | None = None,
        checkpointing: bool = False,
    ) -> None:
        cfg = model.config
        gen = torch.Generator().manual_seed(0)
        model.checkpointing = checkpointing
        self.model = model.to(device).train()
        self.forward = torch.compile(self.model, backend=compile) if compile else self.model
        self.autocast = dict(device_type=device.type, dtype=torch.bfloat16, enabled=bf16)
        self.video = torch.randn(batch, cfg.frames, 3, cfg.image_size, cfg.image_size, generator=gen).to(
            device
        )
        self.attributes = {
            name: torch.randn(batch, ENCODER_LAYERS, ENCODER_DIM, generator=gen).to(device)
            for name in ATTRIBUTES
        }
        self.labels = torch.arange(batch, device=device) % cfg.num_classes
        self.optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
        self.cuda = device.type == "cuda"
        self.times: list[float] = []
        self.cpu_times: list[float] = []

    def step(self, counter: SavedTensorBytes | None = None) -> float:
        if self.cuda:
            torch.cuda.synchronize()
        start, cpu_start = time.perf_counter(), time.process_time()
        self.optimizer.zero_grad(set_to_none=True)
        forward = self.model if counter is not None else self.forward
        with (
            counter.hooks() if counter is not None else contextlib.nullcontext(),
            torch.autocast(**self.autocast),
        ):
            loss = torch.nn.functional.cross_entropy(forward(self.video, self.attributes), self.labels)
        loss.backward()
        self.optimizer.step()
        if self.cuda:
            torch.cuda.synchronize()
        self.cpu_times.append(time.process_time() - cpu_start)
        return time.perf_counter() - start


def runner_options(args: argparse.Namespace) -> dict:
    return dict(
        bf16=args.bf16,
        compile=args.compile_backend if args.compile else None,
        checkpointing=args.checkpointing,
    )


def bench_cuda(make_model: Callable[[str], VideoClassifier], args: argparse.Namespace) -> dict[str, dict]:
    """One model on the GPU at a time, so the allocator's high-water mark is that model's."""
    results = {}
    for name in COMPARED:
        runner = StepRunner(make_model(name), args.batch, torch.device("cuda"), **runner_options(args))
        runner.step()  # warm-up: kernels, cuDNN choices, optimiser state (and compilation)
        torch.cuda.reset_peak_memory_stats()
        times = [runner.step() for _ in range(args.steps)]
        results[name] = {
            "time_s": statistics.median(times),
            "memory_bytes": torch.cuda.max_memory_allocated(),
        }
        del runner
        torch.cuda.empty_cache()
    return results


def bench_cpu(make_model: Callable[[str], VideoClassifier], args: argparse.Namespace) -> dict[str, dict]:
    """All models resident; timed steps interleaved so load from other processes hits each alike."""
    options = runner_options(args)
    runners = {
        name: StepRunner(make_model(name), args.batch, torch.device("cpu"), **options) for name in COMPARED
    }
    results = {}
    for name, runner in runners.items():
        counter = SavedTensorBytes(runner.model)
        runner.step(counter)  # warm-up, which also allocates the optimiser state, counts memory
        if options["compile"]:
            runner.step()  # compilation
            runner.cpu_times.pop()
        state = train_state_bytes(runner.model)
        results[name] = {
            "activation_bytes": counter.bytes,
            "state_bytes": state,
            "memory_bytes": counter.bytes + state,
        }
    for _ in range(args.steps):
        for runner in runners.values():
            runner.times.append(runner.step())
    for name, runner in runners.items():
        results[name]["time_s"] = statistics.median(runner.times)
        results[name]["cpu_s"] = statistics.median(runner.cpu_times[1:])  # without the warm-up
    return results


def print_counts(args: argparse.Namespace, visual: torch.nn.Module, mean: tuple, std: tuple) -> None:
    print(
        f"tunable parameters, {args.backbone} @224, T={args.frames}, {args.classes} classes, "
        f"EVA with {len(ATTRIBUTES)} attributes (D_enc={ENCODER_DIM}, {ENCODER_LAYERS} layers):"
    )
    for method in METHODS:
        model = VideoClassifier(
            make_config(method, args, 224), OpenClipBackbone(copy.deepcopy(visual), args.frames, mean, std)
        )
        tunable, total = model.parameter_counts()
        print(f"  {method:6s}: {tunable:>12,d} of {total:>12,d}  ({100 * tunable / total:6.2f}%)")
        del model
    ref_tunable, ref_total = REFERENCE
    print(
        f"  paper : {ref_tunable:>12,d} of {ref_total:>12,d}  ({100 * ref_tunable / ref_total:6.2f}%)  (VideoMAE ViT-B)"
    )


def write_loader_data(root: Path, args: argparse.Namespace, videos: int = 6) -> tuple[list[str], Path]:
    """Train shards of `videos` generated 240x320 clips (48 frames, 16 stored) and an attribute file
    for the six attributes (D_enc = 512, 12 layers, 2 keyframes), in the pipeline's formats."""
    import numpy as np
    import pyarrow as pa

    from eva.data.attribute_store import AttributeMeta, rows_to_table, write_table
    from eva.data.extract import ExtractConfig, extract_shards
    from eva.data.shards import list_shards
    from eva.demo.data import encode_mp4
    from eva.demo.tiny_training import placeholder_row, random_embeddings

    rng = np.random.default_rng(0)
    rows = []
    for i in range(videos):
        frames = rng.integers(0, 255, size=(48, 240, 320, 3), dtype=np.uint8)
        path = root / "videos" / f"{i:03d}.mp4"
        path.parent.mkdir(parents=True, exist_ok=True)
        encode_mp4(path, frames, 24)
        rows.append(
            {"video_id": f"train/{i:03d}", "path": str(path), "label": i % 2, "label_name": f"class{i % 2}",
             "split": "train", "start": None, "end": None}
        )  # fmt: skip
    schema = pa.schema(
        [("video_id", pa.string()), ("path", pa.string()), ("label", pa.int32()), ("label_name", pa.string()),
         ("split", pa.string()), ("start", pa.float64()), ("end", pa.float64())]
    )  # fmt: skip
    cfg = ExtractConfig(frames_per_video=16, short_side=args.image_size, samples_per_shard=2, workers=1)
    extract_shards(pa.Table.from_pylist(rows, schema=schema), root / "shards", cfg)
    meta = AttributeMeta(
        encoder="bench", text_layers=ENCODER_LAYERS, image_layers=ENCODER_LAYERS, dim=ENCODER_DIM, keyframes=2
    )
    attributes = [placeholder_row(row["video_id"], [3, 11], random_embeddings(meta, rng)) for row in rows]
    write_table(root / "train.parquet", rows_to_table(attributes, meta))
    return list_shards(root / "shards", "train"), root / "train.parquet"


def bench_loader(args: argparse.Namespace, workers: Sequence[int], steps: int) -> dict[int, dict]:
    """Clips/s that `VideoAttributeDataset` + `make_loader` deliver with each worker count.

    Per count: a fresh loader over `steps` training batches of `args.batch` clips (random crop,
    `args.frames` frames, six attributes); the first batch (worker start-up, file opening) is
    timed apart, the rate is over the other batches.
    """
    from eva.data.attribute_store import AttributeStore
    from eva.data.clips import ClipSpec, VideoAttributeDataset, make_loader

    results = {}
    with tempfile.TemporaryDirectory(prefix="eva-loader-") as tmp:
        urls, attribute_file = write_loader_data(Path(tmp), args)
        store = AttributeStore(attribute_file)
        spec = ClipSpec(num_frames=args.frames, image_size=args.image_size)
        for count in workers:
            dataset = VideoAttributeDataset(
                urls, spec, train=True, batch_size=args.batch, attributes=store,
                attribute_names=ATTRIBUTES, steps=steps, workers=count,
            )  # fmt: skip
            start = time.perf_counter()
            first, batches = None, 0
            for _ in make_loader(dataset):
                batches += 1
                if first is None:
                    first = time.perf_counter()
            end = time.perf_counter()
            rest = batches - 1
            results[count] = {
                "first_s": first - start,
                "clips_per_s": rest * args.batch / (end - first) if rest else float("nan"),
            }
    return results


def markdown_tables(
    args: argparse.Namespace, device: torch.device, results: dict[str, dict], loader: dict[int, dict] | None
) -> str:
    """The benchmark's results as markdown (what `--out` receives)."""
    name, peak = peak_tflops(device)
    flags = [
        f
        for f, on in (("bf16", args.bf16), ("compile", args.compile), ("checkpointing", args.checkpointing))
        if on
    ]
    memory = (
        "peak allocated (CUDA)"
        if device.type == "cuda"
        else "saved activations + params/grads/AdamW (CPU proxy)"
    )
    lines = [
        "<!-- generated by benchmarks/train_step.py; do not edit -->",
        "<!-- summary -->",
        f"Train step, {args.backbone} @{args.image_size} px, batch {args.batch} x T={args.frames}, "
        f"{len(ATTRIBUTES)} attributes (EVA attention `{args.attention}`), {name}"
        + (f", {args.threads} threads" if device.type == "cpu" else "")
        + f", {', '.join(flags) or 'fp32 eager'}, median of {args.steps} steps; memory = {memory}.",
        "",
        "| model | s/step | MiB | GFLOP/step | TFLOP/s | MFU |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for model, r in results.items():
        mfu = f"{100 * r['tflops'] / peak:.1f}%" if peak else "n/a"
        lines.append(
            f"| {model} | {r['time_s']:.3f} | {r['memory_bytes'] / 2**20:,.0f} | {r['flops'] / 1e9:,.0f} "
            f"| {r['tflops']:.3f} | {mfu} |"
        )
    eva = results["eva"]
    cpu = "cpu_s" in eva  # process CPU seconds: what load from other processes does not inflate
    lines += [
        "",
        "| ratio | time |" + (" cpu time |" if cpu else "") + " memory | FLOPs |",
        "|---|---:|" + ("---:|" if cpu else "") + "---:|---:|",
    ]
    for ref in ("full space-time", "full"):
        r = results[ref]
        cpu_ratio = f" {eva['cpu_s'] / r['cpu_s']:.2f} |" if cpu else ""
        lines.append(
            f"| eva / {ref} | {eva['time_s'] / r['time_s']:.2f} |{cpu_ratio} "
            f"{eva['memory_bytes'] / r['memory_bytes']:.2f} | {eva['flops'] / r['flops']:.2f} |"
        )
    lines += [
        "",
        "Goals (issue 27): eva / full space-time <= 0.67 in time (CPU: cpu time) and <= 0.5 in memory.",
    ]
    lines.append("<!-- /summary -->")
    if loader:
        consumed = args.batch / eva["time_s"]
        lines += [
            "",
            f"Data loader (`VideoAttributeDataset` + `make_loader`, batch {args.batch}, T={args.frames}, "
            f"{args.image_size} px, six attributes) against the {consumed:.2f} clips/s one EVA step consumes:",
            "",
            "| workers | first batch s | clips/s | x EVA step |",
            "|---:|---:|---:|---:|",
        ]
        for count, r in loader.items():
            lines.append(
                f"| {count} | {r['first_s']:.2f} | {r['clips_per_s']:.2f} | {r['clips_per_s'] / consumed:.1f} |"
            )
    return "\n".join(lines) + "\n"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backbone", default="ViT-B-16", help="open_clip architecture (random weights)")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--classes", type=int, default=101)
    parser.add_argument("--steps", type=int, default=2, help="timed steps per method (median reported)")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda")
    parser.add_argument("--bf16", action="store_true", help="bfloat16 autocast of forward and loss")
    parser.add_argument("--compile", action="store_true", help="torch.compile each model")
    parser.add_argument(
        "--compile-backend", default="inductor", help="torch.compile backend (with --compile)"
    )
    parser.add_argument("--checkpointing", action="store_true", help="activation checkpointing per layer")
    parser.add_argument(
        "--attention",
        default="gated",
        choices=("gated", "gated_per_token", "joint"),
        help="EVA's attribute attention",
    )
    parser.add_argument(
        "--loader-workers", default="0,1,2", help="data-loader worker counts to time (empty: skip the loader)"
    )
    parser.add_argument("--loader-steps", type=int, default=8, help="batches per loader timing")
    parser.add_argument("--skip-counts", action="store_true", help="skip the per-method parameter counts")
    parser.add_argument("--out", type=Path, default=REPO / "results" / "bench" / "train_step.md")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> str:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    device = torch.device(
        ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    )

    visual, mean, std = make_visual(args.backbone, 224)
    if not args.skip_counts:
        print_counts(args, visual, mean, std)
    if args.image_size != 224:
        visual, mean, std = make_visual(args.backbone, args.image_size)

    def make_model(name: str) -> VideoClassifier:
        method = "full" if name == "full" else "eva"
        model = VideoClassifier(
            make_config(method, args, args.image_size),
            OpenClipBackbone(copy.deepcopy(visual), args.frames, mean, std),
        )
        if name == "full space-time":
            model.backbone.requires_grad_(True)  # EVA's network, every weight trained
        return model

    flops = {name: count_step_flops(make_model(name), args.batch) for name in COMPARED}
    results = (bench_cuda if device.type == "cuda" else bench_cpu)(make_model, args)
    for name, r in results.items():
        r["flops"] = flops[name]
        r["tflops"] = flops[name] / r["time_s"] / 1e12
    device_name, peak = peak_tflops(device)

    memory = (
        "peak allocated (CUDA)" if device.type == "cuda" else "saved activations + params/grads/AdamW (CPU)"
    )
    print(
        f"\ntrain step, {args.backbone} @{args.image_size}, batch {args.batch} x T={args.frames}, "
        f"{device_name}, {args.threads} threads, median of {args.steps}; memory = {memory}:"
    )
    for method, r in results.items():
        cpu = f" (cpu {r['cpu_s']:6.2f} s)" if "cpu_s" in r else ""
        line = f"  {method:15s}: {r['time_s']:7.2f} s/step{cpu}  {r['memory_bytes'] / 2**20:9.1f} MiB"
        if "activation_bytes" in r:
            line += (
                f"  (activations {r['activation_bytes'] / 2**20:.1f} + state {r['state_bytes'] / 2**20:.1f})"
            )
        mfu = f"{100 * r['tflops'] / peak:.1f}%" if peak else "n/a"
        line += f"  {r['flops'] / 1e9:,.0f} GFLOP, {r['tflops']:.3f} TFLOP/s, MFU {mfu}"
        print(line)
    eva = results["eva"]
    for name in ("full", "full space-time"):
        ref = results[name]
        print(f"\neva / {name}:")
        print(f"  ratio time        : {eva['time_s'] / ref['time_s']:.3f}  (goal <= 0.67)")
        if "cpu_s" in eva:
            print(
                f"  ratio cpu time    : {eva['cpu_s'] / ref['cpu_s']:.3f}  (process CPU seconds, robust to load)"
            )
        print(f"  ratio memory      : {eva['memory_bytes'] / ref['memory_bytes']:.3f}  (goal <= 0.5)")
        if "activation_bytes" in eva:
            print(f"  ratio activations : {eva['activation_bytes'] / ref['activation_bytes']:.3f}")
        print(f"  ratio FLOPs       : {eva['flops'] / ref['flops']:.3f}")

    workers = [int(w) for w in args.loader_workers.split(",") if w.strip()]
    loader = bench_loader(args, workers, args.loader_steps) if workers else None
    if loader:
        print(
            f"\ndata loader, batch {args.batch}: one EVA step consumes {args.batch / eva['time_s']:.2f} clips/s"
        )
        for count, r in loader.items():
            print(f"  {count} workers: {r['clips_per_s']:7.2f} clips/s (first batch {r['first_s']:.2f} s)")
    table = markdown_tables(args, device, results, loader)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(table, encoding="utf-8")
    print(f"\nwrote {args.out}")
    return table


if __name__ == "__main__":
    main()
