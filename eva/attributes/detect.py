"""Object label of a keyframe from an open-vocabulary detector (OWLv2 / OWL-ViT through transformers).

`attributes.label.method: detector`: the detector is queried with every vocabulary noun; the class of
the top-scoring box over all boxes and nouns is the keyframe's label, and that box is exposed (stored
with the attributes, usable as the foreground by `attributes.mask.method: box`). A top box scoring
below `attributes.label.threshold` (0.1 by default, the threshold of transformers' OWL post-processing)
is no detection: the keyframe takes CLIP's zero-shot label (as with `label.method: clip`) and an empty
box, whose mask is the centre prior. The label attribute's
embedding stays the CLIP per-layer text tensor of that noun (`ZeroShotLabeler.layers`), so the model
downstream sees the same kind of token whichever method chose the noun.

The nouns' query embeddings are computed once per run; each image batch then costs one vision forward
and the two small heads (the library's `forward` would re-encode every noun for every image).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from eva.attributes.label import LabelResult
from eva.weights_io import from_pretrained

QUERY = "a photo of a {}"
DETECTOR_FAMILIES = ("owlv2", "owlvit")  # transformers model types with zero-shot text queries handled here


def with_fallback(detected: LabelResult, fallback: LabelResult, threshold: float) -> LabelResult:
    """The detector's labels where its top box scores `threshold` or more; elsewhere `fallback`'s
    (CLIP's zero-shot label of the keyframe, its softmax probability as the score). Boxes stay the
    detector's (emptied below the threshold by the caller)."""
    weak = detected.score < threshold  # [B]
    if not bool(weak.any()):
        return detected
    return LabelResult(
        index=torch.where(weak, fallback.index.to(detected.index.device), detected.index),
        score=torch.where(weak, fallback.score.to(detected.score.device), detected.score),
        texts=[f if w else d for w, f, d in zip(weak.tolist(), fallback.texts, detected.texts, strict=True)],
        boxes=detected.boxes,
    )


class ObjectDetector:
    """Top box and its noun per image; images are uint8 `[3, H, W]` tensors of any size."""

    def __init__(
        self,
        source: str,
        vocabulary: Sequence[str],
        *,
        param: str = "attributes.label.detector",
        device: torch.device | str = "cpu",
        query_batch: int = 256,
    ) -> None:
        from transformers import AutoModelForZeroShotObjectDetection, AutoProcessor

        self.source = source
        self.processor, self.model = from_pretrained(
            source,
            param=param,
            what="the object detector",
            example="google/owlv2-base-patch16-ensemble",
            classes=(AutoProcessor, AutoModelForZeroShotObjectDetection),
            model_types=DETECTOR_FAMILIES,
        )
        self.family = self.model.config.model_type
        self.device = torch.device(device)
        self.model.to(self.device).eval().requires_grad_(False)
        self.vocabulary = list(vocabulary)
        tokens = self.processor.tokenizer(
            [QUERY.format(w) for w in self.vocabulary],
            padding="max_length",
            max_length=self.model.config.text_config.max_position_embeddings,
            truncation=True,
            return_tensors="pt",
        ).to(self.device)
        with torch.inference_mode():
            base = self.model.base_model  # Owlv2Model / OwlViTModel
            self.queries = torch.cat(
                [
                    base.get_text_features(
                        input_ids=tokens["input_ids"][i : i + query_batch],
                        attention_mask=tokens["attention_mask"][i : i + query_batch],
                    ).pooler_output
                    for i in range(0, len(self.vocabulary), query_batch)
                ]
            )  # [V, D], projected; the class head normalises them

    @torch.inference_mode()
    def detect(self, images: Sequence[torch.Tensor]) -> LabelResult:
        """Label = noun of the top-scoring (box, noun) pair; `boxes` float `[B, 4]` pixel x0, y0, x1, y1
        clipped to each image; `score` its sigmoid probability."""
        if not images:
            empty = torch.zeros(0)
            return LabelResult(empty.long(), empty, [], boxes=torch.zeros(0, 4))
        arrays = [im.permute(1, 2, 0).cpu().numpy() for im in images]  # [H, W, 3] for the image processor
        pixels = self.processor.image_processor(images=arrays, return_tensors="pt")["pixel_values"]
        feature_map, _ = self.model.image_embedder(pixel_values=pixels.to(self.device))  # [B, h, w, C]
        feats = feature_map.flatten(1, 2)  # [B, P, C]
        queries = self.queries[None].expand(len(images), -1, -1)  # [B, V, D]
        logits, _ = self.model.class_predictor(feats, queries, None)  # [B, P, V]
        boxes = self.model.box_predictor(feats, feature_map)  # [B, P, 4] cx, cy, w, h in 0..1
        top = logits.flatten(1).argmax(dim=1)  # [B]
        patch, index = top // logits.shape[-1], top % logits.shape[-1]
        rows = torch.arange(len(images), device=logits.device)
        score = logits[rows, patch, index].float().sigmoid().cpu()
        cx, cy, w, h = boxes[rows, patch].float().cpu().unbind(-1)
        corners = torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], dim=-1)  # [B, 4] relative
        sizes = torch.tensor([im.shape[-2:] for im in images], dtype=torch.float32)  # [B, 2] (H, W)
        if self.family == "owlv2":  # OWLv2 pads each image to a square (bottom / right) before resizing
            side = sizes.amax(dim=1)
            scale = torch.stack([side, side, side, side], dim=1)
        else:  # OWL-ViT stretches it
            scale = torch.stack([sizes[:, 1], sizes[:, 0], sizes[:, 1], sizes[:, 0]], dim=1)
        limit = torch.stack([sizes[:, 1], sizes[:, 0], sizes[:, 1], sizes[:, 0]], dim=1)
        pixel_boxes = torch.minimum((corners * scale).clamp(min=0), limit)
        index = index.cpu()
        return LabelResult(
            index=index,
            score=score,
            texts=[self.vocabulary[i] for i in index.tolist()],
            boxes=pixel_boxes,
        )
