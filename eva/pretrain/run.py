"""The `pretrain` stage's work: tiny CLIP + tiny BLIP captioner trained on captioned stills, saved, scored.

Both models are written to a temporary folder beside the output, read back through the pipeline's
own loaders to score them on held-out stills, and only then swapped in under the output name.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from eva.models.tiny import DEMO_PRETRAINED_MARKER, TinyCaptionerSpec, TinyClipSpec, write_open_clip_folder
from eva.params import param
from eva.pretrain.captioner import pretrain_captioner
from eva.pretrain.clip import OptimConfig, pretrain_clip
from eva.pretrain.evaluate import captioner_accuracy, zero_shot_shape_accuracy
from eva.pretrain.stills import FACTORS, held_out_stills

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PretrainConfig:
    """The `pretrain.*` params (see params.yaml)."""

    seed: int
    out: str
    image_size: int
    held_out: int
    workers: int
    clip: TinyClipSpec
    clip_optim: OptimConfig
    group: int
    factor_weights: tuple[float, ...]
    captioner: TinyCaptionerSpec
    captioner_optim: OptimConfig
    max_new_tokens: int

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> PretrainConfig:
        def p(key: str) -> Any:
            return param(params, f"pretrain.{key}")

        size = p("image_size")
        cfg = cls(
            seed=p("seed"),
            out=p("out"),
            image_size=size,
            held_out=p("held_out"),
            workers=p("workers"),
            clip=TinyClipSpec(
                embed_dim=p("clip.embed_dim"),
                image_size=size,
                patch_size=p("clip.patch_size"),
                vision_width=p("clip.width"),
                vision_layers=p("clip.layers"),
                text_width=p("clip.text_width"),
                text_layers=p("clip.text_layers"),
                heads=p("clip.heads"),
                context_length=p("clip.context_length"),
            ),
            clip_optim=OptimConfig(**{k: p(f"clip.{k}") for k in OptimConfig.__dataclass_fields__}),
            group=p("clip.group"),
            factor_weights=tuple(float(w) for w in p("clip.factor_weights")),
            captioner=TinyCaptionerSpec(
                image_size=size,
                patch_size=p("captioner.patch_size"),
                width=p("captioner.width"),
                layers=p("captioner.layers"),
                heads=p("captioner.heads"),
                max_positions=32,
            ),
            captioner_optim=OptimConfig(**{k: p(f"captioner.{k}") for k in OptimConfig.__dataclass_fields__}),
            max_new_tokens=param(params, "attributes.caption.max_new_tokens"),
        )
        cfg.validate()
        return cfg

    def validate(self) -> None:
        for key in ("seed", "held_out", "workers", "image_size"):
            value = getattr(self, key)
            if (
                isinstance(value, bool)
                or not isinstance(value, int)
                or value < (1 if key == "held_out" else 0)
            ):
                raise ValueError(
                    f"`pretrain.{key}` must be a non-negative integer (held_out >= 1), got {value!r}"
                )
        if self.image_size % self.clip.patch_size or self.image_size % self.captioner.patch_size:
            raise ValueError(
                f"`pretrain.image_size`={self.image_size} must be a multiple of `pretrain.clip.patch_size` and "
                "`pretrain.captioner.patch_size`"
            )
        for section, width, heads in (
            ("clip", self.clip.vision_width, self.clip.heads),
            ("captioner", self.captioner.width, self.captioner.heads),
        ):
            if width % heads:
                raise ValueError(
                    f"`pretrain.{section}.width`={width} must be divisible by `pretrain.{section}.heads`"
                )
        if isinstance(self.group, bool) or not isinstance(self.group, int) or self.group < 1:
            raise ValueError(f"`pretrain.clip.group` must be a positive integer, got {self.group!r}")
        if (
            len(self.factor_weights) != len(FACTORS)
            or min(self.factor_weights) < 0
            or sum(self.factor_weights) <= 0
        ):
            raise ValueError(
                f"`pretrain.clip.factor_weights` must be {len(FACTORS)} non-negative weights for {list(FACTORS)}, "
                f"got {list(self.factor_weights)}"
            )
        self.clip_optim.validate("pretrain.clip")
        self.captioner_optim.validate("pretrain.captioner")


README = """# Demo models: tiny CLIP and BLIP captioner pretrained on synthetic stills

Written by the `pretrain` stage (`params.yaml: pretrain`), because no real weights can be downloaded
here. Both are trained from random initialisation on still frames drawn by the demo's own renderer
(`eva.data.demo`: shapes, colours, sizes, positions, angles, distractors, backgrounds, noise), with
captions written from each still's parameters. No still has an action class, so nothing about the
demo's actions reaches these models.

- `clip/`: open_clip `CLIP` (local-dir format: `open_clip_config.json` + safetensors) trained with
  open_clip's `ClipLoss`. Its image tower is the demo's frozen video backbone (`model.backbone.name`);
  both towers are the attribute encoders (`attributes.clip.model`).
- `captioner/`: transformers `BlipForConditionalGeneration` + `BlipProcessor` (`save_pretrained`),
  loaded by `AutoProcessor` / `AutoModelForImageTextToText` (`attributes.captioner`).

Held-out stills ({held_out} of them, never trained on): zero-shot shape top-1 {shape:.1%} (chance
{chance:.1%}), zero-shot colour top-1 {colour:.1%}; captions name the right colour {cap_colour:.1%}
and the right shape {cap_shape:.1%} of the time ({cap_words:.1%} of colour and shape words right).

What they are not: general models. They know {shapes} in {colours}, a few size, place and
direction words, and nothing else; on real video their outputs are meaningless. Use real weights
(e.g. `ViT-B-16` / `openai`, `Salesforce/blip-image-captioning-base`) for real data.
"""


def run_pretraining(cfg: PretrainConfig) -> dict[str, Any]:
    """Train, save, reload and score both models; `cfg.out` is replaced only when all of it worked."""
    from eva.data.demo import COLOURS, SHAPES

    out = Path(cfg.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        clip = pretrain_clip(
            cfg.clip,
            cfg.clip_optim,
            seed=cfg.seed,
            group=cfg.group,
            factor_weights=cfg.factor_weights,
            workers=cfg.workers,
        )
        clip_name = write_open_clip_folder(tmp / "clip", clip.model, cfg.clip)
        captioner = pretrain_captioner(
            tmp / "captioner", cfg.captioner, cfg.captioner_optim, seed=cfg.seed, workers=cfg.workers
        )
        captioner.model.save_pretrained(tmp / "captioner")
        captioner.processor.save_pretrained(tmp / "captioner")

        images, words = held_out_stills(cfg.seed, cfg.held_out, cfg.image_size)
        with torch.inference_mode():
            scores = zero_shot_shape_accuracy(clip_name, images, words)
            caption_scores, captions = captioner_accuracy(
                str(tmp / "captioner"), images, words, max_new_tokens=cfg.max_new_tokens
            )
        scores |= caption_scores
        metrics = {
            "held_out_stills": cfg.held_out,
            **{k: round(v, 4) for k, v in scores.items()},
            "zero_shot_shape_chance": round(1.0 / len(SHAPES), 4),
            "clip": {
                "steps": cfg.clip_optim.steps,
                "batch_size": cfg.clip_optim.batch_size,
                "first_loss": round(clip.losses[0], 4),
                "final_loss": round(sum(clip.losses[-20:]) / len(clip.losses[-20:]), 4),
                "seconds": round(clip.seconds, 1),
                "spec": asdict(cfg.clip),
            },
            "captioner": {
                "steps": cfg.captioner_optim.steps,
                "batch_size": cfg.captioner_optim.batch_size,
                "first_loss": round(captioner.losses[0], 4),
                "final_loss": round(sum(captioner.losses[-20:]) / len(captioner.losses[-20:]), 4),
                "seconds": round(captioner.seconds, 1),
                "spec": asdict(cfg.captioner),
            },
            "example_captions": [
                {"caption": c, "truth": f"{w.colour} {w.shape}"}
                for c, w in zip(captions[:8], words[:8], strict=True)
            ],
        }
        curves = {
            "clip": [{"step": i + 1, "loss": round(v, 4)} for i, v in enumerate(clip.losses)],
            "captioner": [{"step": i + 1, "loss": round(v, 4)} for i, v in enumerate(captioner.losses)],
        }
        readme = README.format(
            held_out=cfg.held_out,
            shape=scores["zero_shot_shape_top1"],
            chance=1.0 / len(SHAPES),
            colour=scores["zero_shot_colour_top1"],
            cap_colour=scores["caption_colour_accuracy"],
            cap_shape=scores["caption_shape_accuracy"],
            cap_words=scores["caption_word_accuracy"],
            shapes=", ".join(SHAPES),
            colours=", ".join(COLOURS),
        )
        (tmp / "README.md").write_text(readme, encoding="utf-8")
        marker = {k: metrics[k] for k in ("zero_shot_shape_top1", "caption_word_accuracy", "held_out_stills")}
        for folder in (tmp / "clip", tmp / "captioner"):
            (folder / DEMO_PRETRAINED_MARKER).write_text(
                json.dumps(marker, indent=2) + "\n", encoding="utf-8"
            )
        tmp.chmod(0o755)  # mkdtemp makes it private; models are shared artifacts
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {"metrics": metrics, "curves": curves}
