"""Contrastive pretraining of the demo's tiny CLIP on captioned stills (open_clip's `CLIP` and `ClipLoss`).

The result is written in open_clip's local-dir format (config + safetensors), the format
`eva.weights_io.load_open_clip` reads for any `local-dir:` model, so the demo's backbone and
attribute encoders are loaded by exactly the code that loads real weights.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass

import numpy as np
import open_clip
import torch
from open_clip.loss import ClipLoss
from PIL import Image
from torch.utils.data import DataLoader

from eva.demo.pretrain.schedule import Schedule, TrainedSteps, train_steps
from eva.demo.pretrain.stills import StillBatch, StillBatches, collate_batches
from eva.demo.tiny import TinyClipSpec, build_tiny_open_clip


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


def is_text_parameter(name: str) -> bool:
    """Whether an open_clip `CLIP` parameter belongs to the text tower (the image tower is `visual`)."""
    return not name.startswith(("visual.", "logit_"))


@dataclass
class ClipPretrainResult(TrainedSteps):
    model: open_clip.CLIP


def pretrain_clip(
    spec: TinyClipSpec,
    schedule: Schedule,
    *,
    seed: int,
    group: int,
    factor_weights: tuple[float, ...],
    place_captions: float = 0.0,
    text_lr_scale: float = 1.0,
    logit_scale_init: float = 1.0 / 0.07,
    workers: int = 1,
    jpeg_quality: tuple[int, int] = (60, 95),
) -> ClipPretrainResult:
    """Train a fresh tiny CLIP of `spec` for `schedule.steps` grouped-still batches with `ClipLoss`.

    The text tower learns at `text_lr_scale` x the rate (0: locked at its initialisation, as LiT locks
    a tower); the temperature starts at 1 / `logit_scale_init`. `place_captions` of the captions say
    only where the object is.
    """
    model = build_tiny_open_clip(spec, seed=seed).train()
    with torch.no_grad():
        model.logit_scale.fill_(math.log(logit_scale_init))
    if text_lr_scale == 0.0:
        for name, p in model.named_parameters():
            p.requires_grad_(not is_text_parameter(name))
    tokenizer = open_clip.SimpleTokenizer(context_length=spec.context_length)
    mean, std = open_clip.OPENAI_DATASET_MEAN, open_clip.OPENAI_DATASET_STD
    loss_fn = ClipLoss()
    stills = StillBatches(
        seed=seed,
        batch_size=schedule.batch_size,
        size=spec.image_size,
        group=group,
        factor_weights=factor_weights,
        steps=schedule.steps,
        place_captions=place_captions,
    )
    loader = DataLoader(stills, batch_size=None, num_workers=workers, collate_fn=collate_batches)
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(3,)))

    def loss_of(batch: StillBatch) -> torch.Tensor:
        images = normalise(jpeg_roundtrip(batch.images, rng, jpeg_quality), mean, std)  # [B, 3, S, S]
        text = tokenizer(batch.captions)  # [B, context_length]
        return loss_fn(*model(images, text))

    def clamp_temperature() -> None:  # CLIP's clamp: the temperature may not go below 1/100
        model.logit_scale.clamp_(0, math.log(100))

    trained = train_steps(
        model,
        loader,
        schedule,
        loss_of,
        name="clip",
        after_step=clamp_temperature,
        lr_scale=lambda name: text_lr_scale if is_text_parameter(name) else 1.0,
    )
    return ClipPretrainResult(losses=trained.losses, seconds=trained.seconds, model=model.eval())
