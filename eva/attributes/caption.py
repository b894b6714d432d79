"""Keyframe captions from a transformers image captioner (BLIP / GIT family) through the Auto classes.

A hub name (e.g. `Salesforce/blip-image-captioning-base`) or a local folder written by
`save_pretrained` load the same way; the demo's random captioner is such a folder.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch

from eva.weights_io import from_pretrained

log = logging.getLogger(__name__)


def inference_dtype(device: torch.device) -> torch.dtype:
    """float16 on CUDA (BLIP's half-precision use, about 2x the throughput of fp32 and half the
    memory), float32 elsewhere: CPUs have no fast fp16 matmul, and CPU captions stay fp32-exact."""
    return torch.float16 if device.type == "cuda" else torch.float32


class Captioner:
    """Batched greedy captioning; images are uint8 `[3, H, W]` tensors.

    `generate` takes the whole batch in one `model.generate` call (the stage passes
    `attributes.batch_size` keyframes); `dtype` defaults to `inference_dtype(device)`.
    """

    def __init__(
        self,
        source: str,
        *,
        param: str = "attributes.captioner",
        device: torch.device | str = "cpu",
        dtype: torch.dtype | None = None,
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
        self.dtype = dtype or inference_dtype(self.device)
        self.model.to(device=self.device, dtype=self.dtype).eval().requires_grad_(False)

    @torch.inference_mode()
    def generate(self, images: Sequence[torch.Tensor], max_new_tokens: int) -> list[str]:
        if not images:
            return []
        arrays = [im.permute(1, 2, 0).cpu().numpy() for im in images]  # [H, W, 3] for the image processor
        # floating inputs (pixel_values) in the model's dtype; token ids stay integers
        inputs = self.processor(images=arrays, return_tensors="pt").to(self.device, dtype=self.dtype)
        ids = self.model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False, num_beams=1)
        return [text.strip() for text in self.processor.batch_decode(ids, skip_special_tokens=True)]
