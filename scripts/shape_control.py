"""Supervised shape control (docs/demo.md, "Why shape stays low"): how fast can a network learn shape from these stills?

    python scripts/shape_control.py --model vit --lr 1e-3   # the demo's CLIP image tower + a linear head
    python scripts/shape_control.py --model cnn --lr 2e-3   # a small convolutional net, same data and loop
    python scripts/shape_control.py --stem conv             # the ViT with a convolutional stem (ninth round)

A diagnostic, not part of the pipeline. The zero-shot shape target asks the contrastive CLIP for what
this trains directly: cross-entropy on the main object's shape. Training stills are a fixed pool from
`held_out_stills` (its own seed, drawn with replacement), scored on independent stills; the image
tower is built from `pretrain.clip` in pretrain.yaml exactly as the `pretrain` stage builds it, and
trained by the stage's own loop (`eva.demo.pretrain.schedule.train_steps`). One thread, seeded: a run
repeats its numbers.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import open_clip
import torch
from torch import nn

from eva.config import load_params
from eva.demo.data import SHAPES
from eva.demo.pretrain.clip import normalise
from eva.demo.pretrain.run import PretrainConfig
from eva.demo.pretrain.schedule import Schedule, train_steps
from eva.demo.pretrain.stills import held_out_stills
from eva.demo.tiny import build_tiny_open_clip

MEAN, STD = open_clip.OPENAI_DATASET_MEAN, open_clip.OPENAI_DATASET_STD  # what the CLIP's preprocessing uses


def shape_stills(seed: int, count: int, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 `[N, 3, S, S]` stills and their main object's shape index (`SHAPES` order)."""
    images, words = held_out_stills(seed, count, size)
    names = list(SHAPES)
    return images, torch.tensor([names.index(w.shape) for w in words])


def small_cnn(classes: int) -> nn.Module:
    """Four 3x3 conv + BatchNorm + ReLU + 2x2 max-pool blocks (32-64-96-96), global average pool, linear."""
    layers: list[nn.Module] = []
    for c_in, c_out in ((3, 32), (32, 64), (64, 96), (96, 96)):
        layers += [nn.Conv2d(c_in, c_out, 3, padding=1), nn.BatchNorm2d(c_out), nn.ReLU(), nn.MaxPool2d(2)]
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(96, classes))


def conv_stem(width: int, patch: int) -> nn.Module:
    """Early convolutions (Xiao et al. 2021): stride-2 3x3 conv + BatchNorm + ReLU blocks down to the
    patch grid, then a 1x1 conv to the tower's width; `[B, 3, S, S] -> [B, width, S/patch, S/patch]`."""
    if patch < 2 or patch & (patch - 1):
        raise ValueError(f"a conv stem needs a power-of-two patch size, got {patch}")
    layers: list[nn.Module] = []
    c_in, c_out = 3, max(width // 4, 16)
    for _ in range(int(np.log2(patch))):
        layers += [
            nn.Conv2d(c_in, c_out, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(c_out),
            nn.ReLU(),
        ]
        c_in, c_out = c_out, min(c_out * 2, width)
    return nn.Sequential(*layers, nn.Conv2d(c_in, width, 1))


def vit_classifier(config: PretrainConfig, classes: int, pool: str = "cls", stem: str = "patch") -> nn.Module:
    """The demo's CLIP image tower (`pretrain.clip`, open_clip's initialisation) with a linear head."""
    visual = build_tiny_open_clip(config.clip, seed=config.seed).visual
    if pool != "cls":
        visual.pool_type = pool  # open_clip VisionTransformer: "tok" (CLS) or "avg" (mean of patch tokens)
    if stem == "conv":  # in place of the patchify conv1 (open_clip reshapes whatever conv1 returns)
        visual.conv1 = conv_stem(config.clip.vision_width, config.clip.patch_size)
    return nn.Sequential(visual, nn.Linear(config.clip.embed_dim, classes))


@torch.no_grad()
def accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch: int = 250) -> float:
    model.eval()
    hits = sum(
        int((model(normalise(images[i : i + batch], MEAN, STD)).argmax(1) == labels[i : i + batch]).sum())
        for i in range(0, len(images), batch)
    )
    model.train()
    return hits / len(images)


def main(argv: list[str] | None = None) -> list[dict[str, float]]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", choices=("vit", "cnn"), default="vit")
    parser.add_argument("--pool", choices=("cls", "avg"), default="cls", help="vit: CLS token or token mean")
    parser.add_argument(
        "--stem",
        choices=("patch", "conv"),
        default="patch",
        help="vit: open_clip's patchify conv or a conv stem",
    )
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--weight-decay", type=float, default=0.1)
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--pool-size", type=int, default=64_000, help="training stills rendered once")
    parser.add_argument("--test-size", type=int, default=1_000)
    parser.add_argument("--eval-every", type=int, default=100)
    parser.add_argument("--params", default="params.yaml")
    args = parser.parse_args(argv)

    config = PretrainConfig.from_params(load_params(args.params))  # checked as the pretrain stage checks it
    size = config.image_size
    train_x, train_y = shape_stills(5, args.pool_size, size)  # seeds apart from the pretrain stage's streams
    test_x, test_y = shape_stills(1, args.test_size, size)
    classes = len(SHAPES)
    torch.manual_seed(0)
    model = (
        vit_classifier(config, classes, args.pool, args.stem) if args.model == "vit" else small_cnn(classes)
    )
    schedule = Schedule(
        steps=args.steps,
        batch_size=args.batch_size,
        lr=args.lr,
        weight_decay=args.weight_decay,
        warmup_steps=args.warmup,
    )
    draw = torch.Generator().manual_seed(0)
    batches = (torch.randint(len(train_x), (args.batch_size,), generator=draw) for _ in range(args.steps))
    losses: list[float] = []
    history: list[dict[str, float]] = []
    start = time.monotonic()

    def loss_of(index: torch.Tensor) -> torch.Tensor:
        loss = nn.functional.cross_entropy(model(normalise(train_x[index], MEAN, STD)), train_y[index])
        losses.append(loss.item())
        return loss

    def score() -> None:  # after each step: the held-out top-1 every `--eval-every` steps
        step = len(losses)
        if step % args.eval_every and step != args.steps:
            return
        row = {
            "step": step,
            "loss": float(np.mean(losses[-args.eval_every :])),
            "top1": accuracy(model, test_x, test_y),
        }
        history.append(row)
        print(
            f"step {step}/{args.steps}: train loss {row['loss']:.3f}, shape top-1 {100 * row['top1']:.1f}% "
            f"(chance {100 / classes:.1f}%), {time.monotonic() - start:.0f} s",
            flush=True,
        )

    # the pretrain stage's own loop: AdamW (decay on matrices only), linear warmup, cosine decay
    train_steps(model, batches, schedule, loss_of, name=f"shape control ({args.model})", after_step=score)
    return history


if __name__ == "__main__":
    torch.set_num_threads(1)  # docs/demo.md's numbers: one thread (a thread count can change float sums)
    main()
