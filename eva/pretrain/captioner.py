"""Captioning pretraining of the demo's tiny BLIP (transformers `BlipForConditionalGeneration`) on stills.

The model learns to say the canonical caption of a still (`caption_text`: size, colour, shape,
place, pointing direction), image-conditioned language modelling as BLIP's captioner is trained.
It is saved with `save_pretrained` next to its processor, so `eva.attributes.caption.Captioner`
loads it through `AutoProcessor` / `AutoModelForImageTextToText` like a hub checkpoint.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from eva.models.tiny import TinyCaptionerSpec, build_tiny_captioner
from eva.pretrain.clip import OptimConfig, adamw, jpeg_roundtrip, warmup_cosine
from eva.pretrain.stills import StillBatch, StillBatches, caption_text, caption_vocabulary, collate_batches
from eva.utils.log import progress

log = logging.getLogger(__name__)


@dataclass
class CaptionerPretrainResult:
    model: Any  # BlipForConditionalGeneration
    processor: Any  # BlipProcessor
    losses: list[float]
    seconds: float


def caption_targets(processor: Any, captions: list[str], bos_id: int) -> dict[str, torch.Tensor]:
    """Decoder inputs and labels for captions: `[DEC] words [SEP]`, padding ignored by the loss.

    BLIP's `generate` starts from the bos token `[DEC]` where the tokenizer puts `[CLS]`, so
    training replaces it the same way; the decoder shifts the labels itself.
    """
    enc = processor.tokenizer(captions, padding="longest", return_tensors="pt")
    input_ids = enc.input_ids.clone()  # [B, L]
    input_ids[:, 0] = bos_id
    labels = input_ids.masked_fill(enc.attention_mask == 0, -100)  # [B, L]
    return {"input_ids": input_ids, "attention_mask": enc.attention_mask, "labels": labels}


def pretrain_captioner(
    folder: str | Path,
    spec: TinyCaptionerSpec,
    optim: OptimConfig,
    *,
    seed: int,
    workers: int = 1,
    jpeg_quality: tuple[int, int] = (60, 95),
) -> CaptionerPretrainResult:
    """Train a fresh tiny BLIP captioner on `optim.steps` batches of independent random stills.

    `folder` receives the tokenizer's vocabulary file now; the caller saves model and processor there.
    """
    optim.validate("pretrain.captioner")
    model, processor = build_tiny_captioner(folder, caption_vocabulary(), spec, seed=seed)
    model.train()
    bos_id = model.config.text_config.bos_token_id
    optimizer = adamw(model, optim)
    scheduler = warmup_cosine(optimizer, optim.warmup_steps, optim.steps)
    # group=1: every still is drawn independently (hard negatives are a contrastive device only).
    stills = StillBatches(
        seed=seed + 1,
        batch_size=optim.batch_size,
        size=spec.image_size,
        group=1,
        factor_weights=(1, 1, 1, 1, 1),
        steps=optim.steps,
    )
    loader = DataLoader(stills, batch_size=None, num_workers=workers, collate_fn=collate_batches)
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(4,)))
    losses: list[float] = []
    start = time.monotonic()
    batch: StillBatch
    for step, batch in enumerate(progress(loader, desc="pretrain captioner", total=optim.steps)):
        images = jpeg_roundtrip(batch.images, rng, jpeg_quality).permute(0, 2, 3, 1).numpy()  # [B, S, S, 3]
        pixels = processor(
            images=list(images), return_tensors="pt"
        ).pixel_values  # the inference preprocessing
        targets = caption_targets(processor, [caption_text(w) for w in batch.words], bos_id)
        loss = model(pixel_values=pixels, **targets).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        losses.append(loss.item())
        if (step + 1) % 50 == 0 or step + 1 == optim.steps:
            log.info(
                "pretrain captioner step %d/%d: loss %.3f (last 50: %.3f, perplexity %.2f), %.0f s",
                step + 1, optim.steps, losses[-1], float(np.mean(losses[-50:])),
                math.exp(float(np.mean(losses[-50:]))), time.monotonic() - start,
            )  # fmt: skip
    return CaptionerPretrainResult(
        model=model.eval(), processor=processor, losses=losses, seconds=time.monotonic() - start
    )
