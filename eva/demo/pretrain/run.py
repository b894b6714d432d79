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

from eva.config import (
    TEXT,
    check,
    check_fields,
    derived,
    integer,
    invalid,
    number,
    one_of,
    section_values,
    setting,
    value_at,
)
from eva.demo.pretrain.captioner import pretrain_captioner
from eva.demo.pretrain.clip import pretrain_clip
from eva.demo.pretrain.evaluate import captioner_accuracy, zero_shot_shape_accuracy
from eva.demo.pretrain.schedule import Schedule, TrainedSteps
from eva.demo.pretrain.stills import FACTORS, held_out_stills
from eva.demo.tiny import (
    DEMO_PRETRAINED_MARKER,
    TinyCaptionerSpec,
    TinyClipSpec,
    open_clip_folder_config,
)
from eva.demo.tiny_videomae import TinyVideoMAESpec, save_demo_videomae
from eva.weights_io import write_open_clip_folder

log = logging.getLogger(__name__)


def _check_heads(section: str, width: int, heads: int) -> None:
    if width % heads:
        raise invalid(f"{section}.width", f"divisible by `{section}.heads` ({heads})", width)


@dataclass(frozen=True)
class ClipPretrainConfig(Schedule):
    """`pretrain.clip`: the tiny open_clip CLIP, its schedule and its still batches."""

    embed_dim: int = setting(rule=integer(1))
    width: int = setting(rule=integer(1))  # image tower
    layers: int = setting(rule=integer(1))
    patch_size: int = setting(rule=integer(1))
    heads: int = setting(rule=integer(1))
    text_width: int = setting(rule=integer(1))
    text_layers: int = setting(rule=integer(1))
    context_length: int = setting(rule=integer(1))
    # the image tower's position embedding (open_clip `pos_embed_type`): sin_cos_2d is fixed, so the
    # place of a patch is known from the first step instead of being learned (docs/demo.md, the CLIP recipe)
    pos_embed: str = setting(rule=one_of("learnable", "sin_cos_2d"))
    group: int = setting(rule=integer(1))  # stills per batch group differing in one factor
    factor_weights: tuple[float, ...] = setting()  # one weight per eva.demo.pretrain.stills.FACTORS
    # share of captions that only say where the object is ("something at the top left")
    place_captions: float = setting(rule=number(0, 1))
    # the text tower's rate, x lr (0 locks it at its initialisation); below 1 it keeps telling place
    # words apart while the image tower learns place (docs/demo.md, the CLIP recipe)
    text_lr_scale: float = setting(rule=number(0, 1))
    logit_scale_init: float = setting(rule=number(hi=100, above=0))  # 1/temperature at step 0; CLIP: 1/0.07

    def __post_init__(self) -> None:
        self._check("pretrain.clip")
        _check_heads("pretrain.clip", self.width, self.heads)
        weights = self.factor_weights
        if (
            not isinstance(weights, list | tuple)
            or len(weights) != len(FACTORS)
            or not all(number(0).ok(w) for w in weights)
            or sum(weights) <= 0
        ):
            raise invalid(
                "pretrain.clip.factor_weights",
                f"{len(FACTORS)} non-negative weights for {list(FACTORS)}",
                weights,
            )
        object.__setattr__(self, "factor_weights", tuple(float(w) for w in weights))

    def spec(self, image_size: int) -> TinyClipSpec:
        return TinyClipSpec(
            embed_dim=self.embed_dim,
            image_size=image_size,
            patch_size=self.patch_size,
            vision_width=self.width,
            vision_layers=self.layers,
            text_width=self.text_width,
            text_layers=self.text_layers,
            heads=self.heads,
            context_length=self.context_length,
            pos_embed=self.pos_embed,
        )


@dataclass(frozen=True)
class CaptionerPretrainConfig(Schedule):
    """`pretrain.captioner`: the tiny transformers BLIP captioner and its schedule."""

    width: int = setting(rule=integer(1))
    layers: int = setting(rule=integer(1))
    heads: int = setting(rule=integer(1))
    patch_size: int = setting(rule=integer(1))

    def __post_init__(self) -> None:
        self._check("pretrain.captioner")
        _check_heads("pretrain.captioner", self.width, self.heads)

    def spec(self, image_size: int) -> TinyCaptionerSpec:
        return TinyCaptionerSpec(
            image_size=image_size,
            patch_size=self.patch_size,
            width=self.width,
            layers=self.layers,
            heads=self.heads,
            max_positions=32,
        )


@dataclass(frozen=True)
class VideoMAEStandInConfig:
    """`pretrain.videomae`: the shape of the demo's random VideoMAE stand-in (not trained)."""

    frames: int = setting(rule=integer(1))  # = model.frames: VideoMAE takes exactly these
    width: int = setting(rule=integer(1))
    layers: int = setting(rule=integer(1))
    heads: int = setting(rule=integer(1))
    patch_size: int = setting(rule=integer(1))
    tubelet: int = setting(rule=integer(1))

    def __post_init__(self) -> None:
        check_fields(self, "pretrain.videomae")
        _check_heads("pretrain.videomae", self.width, self.heads)
        if self.frames % self.tubelet:
            raise invalid(
                "pretrain.videomae.frames",
                f"a multiple of `pretrain.videomae.tubelet` ({self.tubelet})",
                self.frames,
            )

    def spec(self, image_size: int) -> TinyVideoMAESpec:
        return TinyVideoMAESpec(
            hidden_size=self.width,
            layers=self.layers,
            heads=self.heads,
            intermediate_size=4 * self.width,
            image_size=image_size,
            patch_size=self.patch_size,
            frames=self.frames,
            tubelet=self.tubelet,
        )


@dataclass(frozen=True)
class PretrainConfig:
    """The `pretrain` section of params.yaml (and `attributes.caption.max_new_tokens`, for scoring captions)."""

    seed: int = setting(rule=integer(0))
    out: str = setting(rule=TEXT)
    # = model.image_size: the CLIP image tower is the demo's backbone
    image_size: int = setting(rule=integer(1))
    held_out: int = setting(rule=integer(1))  # held-out stills scored in metrics/pretrain.json
    workers: int = setting(rule=integer(0))  # DataLoader processes rendering stills
    clip: TinyClipSpec = derived()  # the model `pretrain.clip` describes at `image_size`
    clip_schedule: ClipPretrainConfig = derived()  # `pretrain.clip` itself: schedule and still batches
    captioner: TinyCaptionerSpec = derived()
    captioner_schedule: CaptionerPretrainConfig = derived()
    videomae: TinyVideoMAESpec = derived()
    max_new_tokens: int = derived()

    def __post_init__(self) -> None:
        check_fields(self, "pretrain")
        patches = {"clip": self.clip.patch_size, "captioner": self.captioner.patch_size}
        for section, patch in (patches | {"videomae": self.videomae.patch_size}).items():
            if self.image_size % patch:
                raise invalid(
                    "pretrain.image_size",
                    f"a multiple of `pretrain.{section}.patch_size` ({patch})",
                    self.image_size,
                )
        check("attributes.caption.max_new_tokens", self.max_new_tokens, integer(1))

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> PretrainConfig:
        values = section_values(cls, params, "pretrain", opaque=("clip", "captioner", "videomae"))
        clip = ClipPretrainConfig(**section_values(ClipPretrainConfig, params, "pretrain.clip"))
        captioner = CaptionerPretrainConfig(
            **section_values(CaptionerPretrainConfig, params, "pretrain.captioner")
        )
        videomae = VideoMAEStandInConfig(**section_values(VideoMAEStandInConfig, params, "pretrain.videomae"))
        size = values["image_size"]
        check("pretrain.image_size", size, integer(1))
        return cls(
            **values,
            clip=clip.spec(size),
            clip_schedule=clip,
            captioner=captioner.spec(size),
            captioner_schedule=captioner,
            videomae=videomae.spec(size),
            max_new_tokens=value_at(params, "attributes.caption.max_new_tokens"),
        )


README = """# Demo models: tiny CLIP and BLIP captioner pretrained on synthetic stills

Written by the `pretrain` stage (`pretrain.yaml: pretrain`), because no real weights can be downloaded
here. Both are trained from random initialisation on still frames drawn by the demo's own renderer
(`eva.demo.data`: shapes, colours, sizes, positions, angles, distractors, backgrounds, noise), with
captions written from each still's parameters. No still has an action class, so nothing about the
demo's actions reaches these models.

- `clip/`: open_clip `CLIP` (local-dir format: `open_clip_config.json` + safetensors) trained with
  open_clip's `ClipLoss`. Its image tower is the demo's frozen video backbone (`model.backbone.name`);
  both towers are the attribute encoders (`attributes.clip.model`).
- `captioner/`: transformers `BlipForConditionalGeneration` + `BlipProcessor` (`save_pretrained`),
  loaded by `AutoProcessor` / `AutoModelForImageTextToText` (`attributes.captioner`).
- `videomae/`: transformers `VideoMAEModel` (`save_pretrained`) with RANDOM weights, not pretrained:
  a stand-in so `model.backbone.family=videomae` runs on the demo (`pretrain.videomae`; see its README).

Held-out stills ({held_out} of them, never trained on): zero-shot shape top-1 {shape:.1%} (chance
{chance:.1%}), zero-shot colour top-1 {colour:.1%}; captions name the right colour {cap_colour:.1%}
and the right shape {cap_shape:.1%} of the time ({cap_words:.1%} of colour and shape words right).

What they are not: general models. They know {shapes} in {colours}, a few size, place and
direction words, and nothing else; on real video their outputs are meaningless. Use real weights
(e.g. `ViT-B-16` / `openai`, `Salesforce/blip-image-captioning-base`) for real data.
"""


def _training_summary(schedule: Schedule, trained: TrainedSteps, spec: Any) -> dict[str, Any]:
    """How one model was trained, for metrics/pretrain.json: schedule, first and final loss, time, shape."""
    return {
        "steps": schedule.steps,
        "batch_size": schedule.batch_size,
        "first_loss": round(trained.losses[0], 4),
        "final_loss": round(sum(trained.losses[-20:]) / len(trained.losses[-20:]), 4),
        "seconds": round(trained.seconds, 1),
        "spec": asdict(spec),
    }


def run_pretraining(cfg: PretrainConfig) -> dict[str, Any]:
    """Train, save, reload and score both models; `cfg.out` is replaced only when all of it worked."""
    from eva.demo.data import COLOURS, SHAPES

    out = Path(cfg.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        clip = pretrain_clip(
            cfg.clip,
            cfg.clip_schedule,
            seed=cfg.seed,
            group=cfg.clip_schedule.group,
            factor_weights=cfg.clip_schedule.factor_weights,
            place_captions=cfg.clip_schedule.place_captions,
            text_lr_scale=cfg.clip_schedule.text_lr_scale,
            logit_scale_init=cfg.clip_schedule.logit_scale_init,
            workers=cfg.workers,
        )
        clip_name = write_open_clip_folder(tmp / "clip", clip.model, open_clip_folder_config(cfg.clip))
        captioner = pretrain_captioner(
            tmp / "captioner", cfg.captioner, cfg.captioner_schedule, seed=cfg.seed, workers=cfg.workers
        )
        captioner.model.save_pretrained(tmp / "captioner")
        captioner.processor.save_pretrained(tmp / "captioner")
        save_demo_videomae(tmp / "videomae", cfg.videomae, seed=cfg.seed)  # random: a stand-in, not trained

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
            "clip": _training_summary(cfg.clip_schedule, clip, cfg.clip),
            "captioner": _training_summary(cfg.captioner_schedule, captioner, cfg.captioner),
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
