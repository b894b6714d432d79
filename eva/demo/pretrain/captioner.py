"""Captioning pretraining of the demo's tiny BLIP (transformers `BlipForConditionalGeneration`) on stills.

The model learns to say the canonical caption of a still (`caption_text`: size, colour, shape,
place, pointing direction), image-conditioned language modelling as BLIP's captioner is trained.
It is saved with `save_pretrained` next to its processor, so `eva.attributes.caption.Captioner`
loads it through `AutoProcessor` / `AutoModelForImageTextToText` like a hub checkpoint.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from eva.demo.pretrain.clip import jpeg_roundtrip
from eva.demo.pretrain.schedule import Schedule, TrainedSteps, train_steps
from eva.demo.pretrain.stills import (
    StillBatch,
    StillBatches,
    caption_text,
    caption_vocabulary,
    collate_batches,
)
from eva.demo.tiny import TinyCaptionerSpec, build_tiny_captioner


@dataclass
class CaptionerPretrainResult(TrainedSteps):
    model: Any  # BlipForConditionalGeneration
    processor: Any  # BlipProcessor


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
    schedule: Schedule,
    *,
    seed: int,
    workers: int = 1,
    jpeg_quality: tuple[int, int] = (60, 95),
) -> CaptionerPretrainResult:
    """Train a fresh tiny BLIP captioner on `schedule.steps` batches of independent random stills.

    `folder` receives the tokenizer's vocabulary file now; the caller saves model and processor there.
    """
    model, processor = build_tiny_captioner(folder, caption_vocabulary(), spec, seed=seed)
    model.train()
    bos_id = model.config.text_config.bos_token_id
    # group=1: every still is drawn independently (hard negatives are a contrastive device only).
    stills = StillBatches(
        seed=seed + 1,
        batch_size=schedule.batch_size,
        size=spec.image_size,
        group=1,
        factor_weights=(1, 1, 1, 1, 1),
        steps=schedule.steps,
    )
    loader = DataLoader(stills, batch_size=None, num_workers=workers, collate_fn=collate_batches)
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(4,)))

    def loss_of(batch: StillBatch) -> torch.Tensor:
        images = jpeg_roundtrip(batch.images, rng, jpeg_quality).permute(0, 2, 3, 1).numpy()  # [B, S, S, 3]
        pixels = processor(
            images=list(images), return_tensors="pt"
        ).pixel_values  # the inference preprocessing
        targets = caption_targets(processor, [caption_text(w) for w in batch.words], bos_id)
        return model(pixel_values=pixels, **targets).loss

    trained = train_steps(model, loader, schedule, loss_of, name="captioner", max_grad_norm=1.0)
    return CaptionerPretrainResult(
        losses=trained.losses, seconds=trained.seconds, model=model.eval(), processor=processor
    )
