"""Foreground of a keyframe from a text-prompted segmentation model (CLIPSeg through transformers).

`attributes.mask.method: model`: CLIPSeg scores every pixel against `attributes.mask.prompt` (by
default a generic subject; `{label}` in the prompt stands for the keyframe's detected object when
`attributes.label.method` is `detector`); its sigmoid map, resized to the frame, thresholded at
`attributes.mask.threshold`, is the mask. The caller falls back to the centre prior when the mask is
empty or covers almost everything, as for the motion mask (`eva.attributes.visual`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from eva.weights_io import from_pretrained

LABEL_FIELD = "{label}"
SEGMENTER_FAMILIES = ("clipseg",)


class SegmentationMasker:
    """Bool `[H, W]` masks for uint8 `[3, H, W]` images of any size."""

    def __init__(
        self,
        source: str,
        prompt: str,
        threshold: float = 0.5,
        *,
        param: str = "attributes.mask.model",
        device: torch.device | str = "cpu",
    ) -> None:
        from transformers import AutoProcessor, CLIPSegForImageSegmentation

        self.source, self.prompt, self.threshold = source, prompt, threshold
        self.processor, self.model = from_pretrained(
            source,
            param=param,
            what="the mask model",
            example="CIDAS/clipseg-rd64-refined",
            classes=(AutoProcessor, CLIPSegForImageSegmentation),
            model_types=SEGMENTER_FAMILIES,
        )
        self.device = torch.device(device)
        self.model.to(self.device).eval().requires_grad_(False)

    def prompts(self, labels: Sequence[str] | None, count: int) -> list[str]:
        if LABEL_FIELD in self.prompt:
            if labels is None or len(labels) != count:
                raise ValueError(f"the mask prompt {self.prompt!r} needs one detected label per image")
            return [self.prompt.replace(LABEL_FIELD, label) for label in labels]
        return [self.prompt] * count

    @torch.inference_mode()
    def probabilities(
        self, images: Sequence[torch.Tensor], labels: Sequence[str] | None = None
    ) -> torch.Tensor:
        """Float `[B, S, S]` foreground probabilities at the model's own resolution."""
        arrays = [im.permute(1, 2, 0).cpu().numpy() for im in images]  # [H, W, 3] for the image processor
        inputs = self.processor(
            text=self.prompts(labels, len(images)),
            images=arrays,
            padding=True,
            truncation=True,
            return_tensors="pt",
        ).to(self.device)
        logits = self.model(**inputs).logits
        return logits.float().view(len(images), *logits.shape[-2:]).sigmoid()

    def masks(
        self, images: Sequence[torch.Tensor], labels: Sequence[str] | None = None
    ) -> list[torch.Tensor]:
        """One bool `[H, W]` mask per image, at that image's own size (the processor stretched it)."""
        if not images:
            return []
        probs = self.probabilities(images, labels).cpu()
        return [
            F.interpolate(p[None, None], size=tuple(im.shape[-2:]), mode="bilinear", align_corners=False)[
                0, 0
            ]
            > self.threshold
            for p, im in zip(probs, images, strict=True)
        ]
