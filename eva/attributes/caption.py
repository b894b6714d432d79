"""Keyframe captions from a transformers image captioner (BLIP / GIT family) through the Auto classes.

A hub name (e.g. `Salesforce/blip-image-captioning-base`) or a local folder written by
`save_pretrained` load the same way; the demo's random captioner is such a folder.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import torch

from eva.models.loading import missing_weights

log = logging.getLogger(__name__)


def _missing(source: str, param: str, err: Exception) -> FileNotFoundError:
    detail = str(err).splitlines()[0] if str(err) else ""
    return missing_weights(
        param,
        f"Could not load the captioner '{source}' (a folder written by save_pretrained, or a transformers "
        f"hub name such as Salesforce/blip-image-captioning-base; {type(err).__name__}: {detail})",
    )


class Captioner:
    """Batched greedy captioning; images are uint8 `[3, H, W]` tensors."""

    def __init__(
        self, source: str, *, param: str = "attributes.captioner", device: torch.device | str = "cpu"
    ) -> None:
        from transformers import AutoModelForImageTextToText, AutoProcessor

        self.source = source
        path = Path(source)
        if path.exists() and not (path / "config.json").is_file():
            raise _missing(source, param, FileNotFoundError(f"no config.json in '{path}'"))
        # A relative local path that does not exist would otherwise reach the hub as a repo id.
        local_only = path.exists()
        try:
            self.processor = AutoProcessor.from_pretrained(source, local_files_only=local_only)
            self.model = AutoModelForImageTextToText.from_pretrained(source, local_files_only=local_only)
        except (OSError, ValueError, KeyError) as err:
            raise _missing(source, param, err) from err
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
