"""Contrastive pretraining of the demo's tiny CLIP on captioned stills (open_clip's `CLIP` and `ClipLoss`).

The result is written in open_clip's local-dir format (config + safetensors), the format
`eva.models.loading.load_open_clip` reads for any `local-dir:` model, so the demo's backbone and
attribute encoders are loaded by exactly the code that loads real weights.
"""

from __future__ import annotations

import io
import logging
import math
import time
from dataclasses import dataclass

import numpy as np
import open_clip
import torch
from open_clip.loss import ClipLoss
from PIL import Image
from torch.utils.data import DataLoader

from eva.models.tiny import TinyClipSpec, build_tiny_open_clip
from eva.pretrain.stills import StillBatch, StillBatches, collate_batches
from eva.utils.log import progress

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class OptimConfig:
    """One optimiser schedule (`pretrain.clip.*` / `pretrain.captioner.*`): AdamW, warmup + cosine."""

    steps: int
    batch_size: int
    lr: float
    weight_decay: float
    warmup_steps: int

    def validate(self, section: str) -> None:
        for key in ("steps", "batch_size"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"`{section}.{key}` must be a positive integer, got {value!r}")
        if not self.lr > 0:
            raise ValueError(f"`{section}.lr` must be > 0, got {self.lr!r}")
        if not self.weight_decay >= 0:
            raise ValueError(f"`{section}.weight_decay` must be >= 0, got {self.weight_decay!r}")
        if not 0 <= self.warmup_steps <= self.steps:
            raise ValueError(
                f"`{section}.warmup_steps` must be in 0..{section}.steps, got {self.warmup_steps!r}"
            )


def warmup_cosine(
    optimizer: torch.optim.Optimizer, warmup: int, total: int
) -> torch.optim.lr_scheduler.LambdaLR:
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1.0 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def adamw(model: torch.nn.Module, cfg: OptimConfig) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices only (not on norms, biases, embeddings' scales, logit scale)."""
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "embedding" not in n]
    ids = {id(p) for p in decay}
    rest = [p for p in model.parameters() if id(p) not in ids]
    return torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": rest, "weight_decay": 0.0}],
        lr=cfg.lr,
        betas=(0.9, 0.98),
        eps=1e-6,
    )


def jpeg_roundtrip(images: torch.Tensor, rng: np.random.Generator, quality: tuple[int, int]) -> torch.Tensor:
    """uint8 `[B, 3, S, S]` through JPEG at a random quality each: the clips reach the models compressed."""
    out = []
    for image in images:
        buf = io.BytesIO()
        q = int(rng.integers(quality[0], quality[1] + 1))
        Image.fromarray(image.permute(1, 2, 0).numpy()).save(buf, format="JPEG", quality=q)
        out.append(torch.from_numpy(np.array(Image.open(buf).convert("RGB"))).permute(2, 0, 1))
    return torch.stack(out)  # [B, 3, S, S]


def normalise(images: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    """uint8 `[B, 3, S, S]` -> float, normalised as open_clip's preprocessing does (no resize: same size)."""
    x = images.float() / 255.0
    return (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)


@dataclass
class ClipPretrainResult:
    model: open_clip.CLIP
    losses: list[float]  # one per step
    seconds: float


def pretrain_clip(
    spec: TinyClipSpec,
    optim: OptimConfig,
    *,
    seed: int,
    group: int,
    factor_weights: tuple[float, ...],
    workers: int = 1,
    jpeg_quality: tuple[int, int] = (60, 95),
) -> ClipPretrainResult:
    """Train a fresh tiny CLIP of `spec` for `optim.steps` grouped-still batches with `ClipLoss`."""
    optim.validate("pretrain.clip")
    model = build_tiny_open_clip(spec, seed=seed).train()
    tokenizer = open_clip.SimpleTokenizer(context_length=spec.context_length)
    mean, std = open_clip.OPENAI_DATASET_MEAN, open_clip.OPENAI_DATASET_STD
    optimizer = adamw(model, optim)
    scheduler = warmup_cosine(optimizer, optim.warmup_steps, optim.steps)
    loss_fn = ClipLoss()
    stills = StillBatches(
        seed=seed,
        batch_size=optim.batch_size,
        size=spec.image_size,
        group=group,
        factor_weights=factor_weights,
        steps=optim.steps,
    )
    loader = DataLoader(stills, batch_size=None, num_workers=workers, collate_fn=collate_batches)
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(3,)))
    losses: list[float] = []
    start = time.monotonic()
    batch: StillBatch
    for step, batch in enumerate(progress(loader, desc="pretrain clip", total=optim.steps)):
        images = normalise(jpeg_roundtrip(batch.images, rng, jpeg_quality), mean, std)  # [B, 3, S, S]
        text = tokenizer(batch.captions)  # [B, context_length]
        image_features, text_features, logit_scale = model(images, text)
        loss = loss_fn(image_features, text_features, logit_scale)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        with torch.no_grad():  # CLIP's clamp: the temperature may not go below 1/100
            model.logit_scale.clamp_(0, math.log(100))
        losses.append(loss.item())
        if (step + 1) % 50 == 0 or step + 1 == optim.steps:
            log.info(
                "pretrain clip step %d/%d: loss %.3f (last 50: %.3f), %.0f s",
                step + 1, optim.steps, losses[-1], float(np.mean(losses[-50:])), time.monotonic() - start,
            )  # fmt: skip
    return ClipPretrainResult(model=model.eval(), losses=losses, seconds=time.monotonic() - start)
