"""The demo's VideoMAE stand-in: a tiny random VideoMAE written with `save_pretrained`.

Loaded by the library's own loader (`eva.models.videomae.load_videomae`), as `MCG-NJU/videomae-base`
is; tests build the same small models through it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import VideoMAEConfig, VideoMAEImageProcessor, VideoMAEModel

from eva.demo.tiny import mark_random_weights
from eva.models.videomae import VIDEOMAE_MEAN, VIDEOMAE_STD


@dataclass(frozen=True)
class TinyVideoMAESpec:
    hidden_size: int = 32
    layers: int = 2
    heads: int = 4
    intermediate_size: int = 64
    image_size: int = 32
    patch_size: int = 8
    frames: int = 4
    tubelet: int = 2
    use_mean_pooling: bool = True

    def config(self) -> VideoMAEConfig:
        return VideoMAEConfig(
            hidden_size=self.hidden_size,
            num_hidden_layers=self.layers,
            num_attention_heads=self.heads,
            intermediate_size=self.intermediate_size,
            image_size=self.image_size,
            patch_size=self.patch_size,
            num_frames=self.frames,
            tubelet_size=self.tubelet,
            use_mean_pooling=self.use_mean_pooling,
            layer_norm_eps=1e-6,
        )


def save_tiny_videomae(folder: str | Path, spec: TinyVideoMAESpec = TinyVideoMAESpec(), seed: int = 0) -> str:
    """Write a random VideoMAE (model + image processor) with `save_pretrained`; return the folder.

    Every weight is random, biases and LayerNorm affines included (HF initialises those to 0 / 1),
    so that tests comparing against `VideoMAEModel` exercise the q/v biases and the norms.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    model = VideoMAEModel(spec.config())
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.normal_(std=0.1)
            elif p.ndim == 1:  # LayerNorm weight
                p.uniform_(0.5, 1.5)
            else:
                p.normal_(std=1.0 / math.sqrt(p[0].numel()))
    model.save_pretrained(folder)
    VideoMAEImageProcessor(
        image_mean=list(VIDEOMAE_MEAN),
        image_std=list(VIDEOMAE_STD),
        size={"shortest_edge": spec.image_size},
        crop_size={"height": spec.image_size, "width": spec.image_size},
    ).save_pretrained(folder)
    return str(folder)


DEMO_VIDEOMAE_README = """# Demo VideoMAE: a random stand-in, not a pretrained model

Written by the `pretrain` stage (`pretrain.yaml: pretrain.videomae`, image size `pretrain.image_size`)
with `save_pretrained`, so `model.backbone.family=videomae` can run on the demo offline, loaded by the
same code (`eva.models.videomae.load_videomae`) as `MCG-NJU/videomae-base`. Its weights are random
(config: {frames} frames, tubelet {tubelet}, {size} px, patch {patch}, width {width}, {layers} layers,
{heads} heads): nothing was trained, so a demo run on it shows that the machinery works, never what
VideoMAE reaches. Run it with `model.frames={frames}` and `model.image_size={size}`.
"""


def save_demo_videomae(folder: str | Path, spec: TinyVideoMAESpec, seed: int = 0) -> str:
    """The demo's VideoMAE stand-in: `save_tiny_videomae` + a README and the random-weights marker."""
    out = save_tiny_videomae(folder, spec, seed)
    readme = DEMO_VIDEOMAE_README.format(
        frames=spec.frames,
        tubelet=spec.tubelet,
        size=spec.image_size,
        patch=spec.patch_size,
        width=spec.hidden_size,
        layers=spec.layers,
        heads=spec.heads,
    )
    (Path(out) / "README.md").write_text(readme, encoding="utf-8")
    mark_random_weights(out)
    return out
