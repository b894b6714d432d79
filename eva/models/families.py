"""Backbone families as data: `model.backbone.family` -> how to load one as a `BlockBackbone`.

Every family loads real weights and the tests' tiny local models through the same function, and
fails fast naming the param when weights are missing (`eva.weights_io.missing_weights`).

    open_clip  `model.backbone.name` an open_clip model name (ViT-B-16) or `local-dir:<folder>`,
               `model.backbone.pretrained` its tag (openai) or a checkpoint file; any `model.frames`
    videomae   `model.backbone.name` a transformers hub name (MCG-NJU/videomae-base) or a
               `save_pretrained` folder; `model.backbone.pretrained` empty; `model.frames` and
               `model.image_size` must be the checkpoint's (16 and 224 for ViT-B)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from eva.config import invalid
from eva.models.backbone import BlockBackbone
from eva.models.clip_backbone import OpenClipBackbone
from eva.models.videomae import load_videomae
from eva.weights_io import load_open_clip


def _load_open_clip(name: str, pretrained: str, frames: int, image_size: int) -> OpenClipBackbone:
    bundle = load_open_clip(name, pretrained, param="model.backbone", image_size=image_size)
    return OpenClipBackbone(bundle.model.visual, frames, bundle.mean, bundle.std)


def _load_videomae(name: str, pretrained: str, frames: int, image_size: int) -> BlockBackbone:
    if pretrained:
        raise invalid(
            "model.backbone.pretrained",
            'empty ("") for model.backbone.family=videomae (`model.backbone.name` is the hub name or folder)',
            pretrained,
        )
    return load_videomae(name, param="model.backbone.name")


@dataclass(frozen=True)
class BackboneFamily:
    name: str
    summary: str
    load: Callable[[str, str, int, int], BlockBackbone]  # (name, pretrained, frames, image_size)


BACKBONE_FAMILIES: dict[str, BackboneFamily] = {
    family.name: family
    for family in (
        BackboneFamily(
            "open_clip", "frame-level CLIP ViT (open_clip): per-frame CLS read-out", _load_open_clip
        ),
        BackboneFamily(
            "videomae", "space-time VideoMAE ViT (transformers): mean-pooled tokens", _load_videomae
        ),
    )
}


def get_family(name: str) -> BackboneFamily:
    if name not in BACKBONE_FAMILIES:
        raise invalid("model.backbone.family", f"one of {', '.join(BACKBONE_FAMILIES)}", name)
    return BACKBONE_FAMILIES[name]
