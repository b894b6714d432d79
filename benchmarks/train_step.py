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
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import logging
import statistics
import time
from collections.abc import Callable

import open_clip
import torch

from eva.methods import METHODS
from eva.models import ModelConfig, VideoClassifier
from eva.models.clip_backbone import OpenClipBackbone

ATTRIBUTES = ("label", "caption", "foreground", "background", "original", "dynamic")
ENCODER_DIM = 512  # ViT-B-16 CLIP joint embedding width
ENCODER_LAYERS = 12  # text and image towers of ViT-B-16 both have 12 layers
COMPARED = ("eva", "full", "full space-time")
REFERENCE = (14_242_611, 100_468_275)  # authors' VideoMAE ViT-B EVA run: tunable, total


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


class StepRunner:
    """One model, its optimiser and a fixed random batch; `step()` times one training step."""

    def __init__(self, model: VideoClassifier, batch: int, device: torch.device) -> None:
        cfg = model.config
        gen = torch.Generator().manual_seed(0)
        self.model = model.to(device).train()
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
        with counter.hooks() if counter is not None else contextlib.nullcontext():
            loss = torch.nn.functional.cross_entropy(self.model(self.video, self.attributes), self.labels)
        loss.backward()
        self.optimizer.step()
        if self.cuda:
            torch.cuda.synchronize()
        self.cpu_times.append(time.process_time() - cpu_start)
        return time.perf_counter() - start


def bench_cuda(make_model: Callable[[str], VideoClassifier], args: argparse.Namespace) -> dict[str, dict]:
    """One model on the GPU at a time, so the allocator's high-water mark is that model's."""
    results = {}
    for name in COMPARED:
        runner = StepRunner(make_model(name), args.batch, torch.device("cuda"))
        runner.step()  # warm-up: kernels, cuDNN choices, optimiser state
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
    runners = {name: StepRunner(make_model(name), args.batch, torch.device("cpu")) for name in COMPARED}
    results = {}
    for name, runner in runners.items():
        counter = SavedTensorBytes(runner.model)
        runner.step(counter)  # warm-up, which also allocates the optimiser state, counts memory
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backbone", default="ViT-B-16", help="open_clip architecture (random weights)")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--classes", type=int, default=101)
    parser.add_argument("--steps", type=int, default=2, help="timed steps per method (median reported)")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    device = torch.device(
        ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    )

    visual, mean, std = make_visual(args.backbone, 224)
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

    results = (bench_cuda if device.type == "cuda" else bench_cpu)(make_model, args)

    memory = (
        "peak allocated (CUDA)" if device.type == "cuda" else "saved activations + params/grads/AdamW (CPU)"
    )
    print(
        f"\ntrain step, {args.backbone} @{args.image_size}, batch {args.batch} x T={args.frames}, "
        f"{device.type}, {args.threads} threads, median of {args.steps}; memory = {memory}:"
    )
    for method, r in results.items():
        cpu = f" (cpu {r['cpu_s']:6.2f} s)" if "cpu_s" in r else ""
        line = f"  {method:15s}: {r['time_s']:7.2f} s/step{cpu}  {r['memory_bytes'] / 2**20:9.1f} MiB"
        if "activation_bytes" in r:
            line += (
                f"  (activations {r['activation_bytes'] / 2**20:.1f} + state {r['state_bytes'] / 2**20:.1f})"
            )
        print(line)
    eva = results["eva"]
    for name in ("full", "full space-time"):
        ref = results[name]
        print(f"\neva / {name}:")
        print(f"  ratio time        : {eva['time_s'] / ref['time_s']:.3f}  (goal <= 0.6)")
        if "cpu_s" in eva:
            print(
                f"  ratio cpu time    : {eva['cpu_s'] / ref['cpu_s']:.3f}  (process CPU seconds, robust to load)"
            )
        print(f"  ratio memory      : {eva['memory_bytes'] / ref['memory_bytes']:.3f}  (goal <= 0.5)")
        if "activation_bytes" in eva:
            print(f"  ratio activations : {eva['activation_bytes'] / ref['activation_bytes']:.3f}")


if __name__ == "__main__":
    main()
