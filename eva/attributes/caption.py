"""Keyframe captions from a transformers image captioner (BLIP / GIT family) through the Auto classes.

A hub name (e.g. `Salesforce/blip-image-captioning-base`) or a local folder written by
`save_pretrained` load the same way; the demo's random captioner is such a folder.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch

from eva.attributes.pretrained import from_pretrained

log = logging.getLogger(__name__)


class Captioner:
    """Batched greedy captioning; images are uint8 `[3, H, W]` tensors."""

    def __init__(
        self, source: str, *, param: str = "attributes.captioner", device: torch.device | str = "cpu"
    ) -> None:
        from transformers import AutoModelForImageTextToText, AutoProcessor

        self.source = source
        self.processor, self.model = from_pretrained(
            source,
            param=param,
            what="the captioner",
            example="Salesforce/blip-image-captioning-base",
            classes=(AutoProcessor, AutoModelForImageTextToText),
        )
        self.device = torch.device(device)
        self.model.to(self.device).eval().requires_grad_(False)

    @torch.inference_mode()
    def generate(self, images: Sequence[torch.Tensor], max_new_tokens: int) -> list[str]:
        if not images:
            return []
        arrays = [im.permute(1, 2, 0).cpu().numpy() for im in images]  # [H, W, 3] for the image processor
        inputs = self.processor(images=arrays, return_tensors="pt").to(self.device)
        ids = self.model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False, num_beams=1)
        return [text.strip() for text in self.processor.batch_decode(ids, skip_special_tokens=True)]
