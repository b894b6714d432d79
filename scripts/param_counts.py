"""Print the tunable / total parameter count of every method on every backbone family (README table).

    python scripts/param_counts.py            # markdown table, 101 classes (UCF101)
    python scripts/param_counts.py --classes 51
    python scripts/param_counts.py --presets  # each preset (presets/), stage 1 and 2, at its dataset's classes

Backbones are built from their default configs with random weights (no download; counts do not
depend on the weights): open_clip ViT-B/16 at 224 px, T = 8, and `VideoMAEConfig()` (VideoMAE
ViT-B, 16 frames, 224 px). Each model is the real `VideoClassifier` of that method with the
params.yaml defaults; `eva` is shown with stage 1 (label, caption) and stage 2 (six attributes) from
a ViT-B/16 CLIP attribute encoder (D_enc 512, 12 layers), with `model.eva.attribute_projection: none`, and
with that and `model.eva.attribute_attention: joint` (the EVA authors' tokens: no parameters).
"""

from __future__ import annotations

import argparse
import copy
import logging
from collections.abc import Iterator
from pathlib import Path

import open_clip
import torch
from transformers import VideoMAEConfig, VideoMAEModel

from eva.config import load_params
from eva.data.attribute_store import attributes_for_stage
from eva.methods import METHODS
from eva.models import ModelConfig, VideoClassifier
from eva.models.backbone import BlockBackbone
from eva.models.clip_backbone import OpenClipBackbone
from eva.models.videomae import VideoMAEBackbone

ENCODER_DIM, ENCODER_LAYERS = 512, 12
# Class counts of the benchmarks the presets name (the index reads them from the annotation files).
DATASET_CLASSES = {"ucf101": 101, "hmdb51": 51, "ssv2": 174, "k400": 400, "activitynet": 200}


def backbones() -> Iterator[tuple[str, str, BlockBackbone]]:
    """(label, family, backbone) for the table's two backbones."""
    torch.manual_seed(0)
    visual = open_clip.create_model("ViT-B-16").visual
    yield "CLIP ViT-B/16", "open_clip", OpenClipBackbone(visual, 8, (0.0,) * 3, (1.0,) * 3)
    yield "VideoMAE ViT-B", "videomae", VideoMAEBackbone(VideoMAEModel(VideoMAEConfig()))


def variants() -> Iterator[tuple[str, str, dict]]:
    """(row label, method, ModelConfig overrides)."""
    for name, method in METHODS.items():
        if not method.uses_attributes:
            yield name, name, {}
            continue
        for stage in (1, 2):
            names = attributes_for_stage(stage)
            yield f"{name} stage {stage}", name, {"attributes": names}
        yield (
            f"{name} stage 2, projection none",
            name,
            {"attributes": attributes_for_stage(2), "attribute_projection": "none"},
        )
        yield (  # the EVA authors' tokens: no projection, read by the block's own softmax
            f"{name} stage 2, projection none, attention joint",
            name,
            {
                "attributes": attributes_for_stage(2),
                "attribute_projection": "none",
                "attribute_attention": "joint",
            },
        )


def model_defaults() -> dict:
    """The `model.*` defaults of params.yaml that change counts, read as the train stage reads them."""
    params = load_params(Path(__file__).parents[1] / "params.yaml")
    config = ModelConfig.from_params(params, num_classes=1)
    names = ("adapter_ratio", "prompt_length", "adaptformer_bottleneck", "lora_rank", "lora_targets")
    names += ("readout", "final_norm")  # the head's input width; VideoMAE's final LayerNorm (total)
    return {name: getattr(config, name) for name in (*names, "attribute_projection", "attribute_attention")}


def preset_counts(name: str, stage: int, classes: int | None = None) -> tuple[int, int]:
    """(tunable, total) of preset `name`'s model at `stage`, built as the train stage builds it.

    The backbone is the preset's architecture with random weights (counts do not depend on them):
    the open_clip architecture a `local-dir:.../open_clip/<arch>/<tag>` folder is exported from, or a
    VideoMAE ViT-B (`VideoMAEConfig` at the preset's frames and size). The attribute encoder is
    CLIP ViT-B/16's (ENCODER_LAYERS layers, ENCODER_DIM wide).
    """
    from eva.data.attribute_store import AttributeMeta
    from eva.preset import resolve
    from eva.utils.trees import merge
    from eva.weights_io import Source

    base = load_params(Path(__file__).parents[1] / "params.yaml")
    params = merge(base, resolve(name))
    model = params["model"]
    classes = classes or DATASET_CLASSES[params["dataset"]["name"]]
    family, frames, size = model["backbone"]["family"], model["frames"], model["image_size"]
    torch.manual_seed(0)
    if family == "open_clip":
        source = Source("model.backbone.name", "open_clip", model["backbone"]["name"])
        arch = source.export[0] if source.export else model["backbone"]["name"]
        visual = open_clip.create_model(arch, force_image_size=size).visual
        backbone: BlockBackbone = OpenClipBackbone(visual, frames, (0.0,) * 3, (1.0,) * 3)
    else:
        backbone = VideoMAEBackbone(VideoMAEModel(VideoMAEConfig(num_frames=frames, image_size=size)))
    meta = AttributeMeta("ViT-B-16", ENCODER_LAYERS, ENCODER_LAYERS, ENCODER_DIM, keyframes=4)
    config = ModelConfig.from_params(params, num_classes=classes, stage=stage, attribute_meta=meta)
    return VideoClassifier(config, backbone).parameter_counts()


def print_presets() -> None:
    from eva.preset import names, resolve

    print("| preset | stage | classes | tunable | total | tunable (%) |")
    print("|---|---:|---:|---:|---:|---:|")
    for name in names():
        if name == "demo":
            continue
        for stage in (1, 2):
            classes = DATASET_CLASSES[resolve(name)["dataset"]["name"]]
            tunable, total = preset_counts(name, stage, classes)
            print(f"| {name} | {stage} | {classes} | {tunable:,} | {total:,} | {100 * tunable / total:.2f} |")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--classes", type=int, default=101)
    parser.add_argument("--presets", action="store_true", help="count each preset's model instead")
    args = parser.parse_args()
    logging.disable(logging.WARNING)  # the classifier logs every model; open_clip warns of random weights
    if args.presets:
        print_presets()
        return
    defaults = model_defaults()
    print(f"{args.classes} classes\n")
    print("| backbone | method | tunable | total | tunable (%) |")
    print("|---|---|---:|---:|---:|")
    for label, family, backbone in backbones():
        for row, method, overrides in variants():
            fields = {**defaults, **overrides}
            names = fields.get("attributes", ())
            config = ModelConfig(
                method=method,
                num_classes=args.classes,
                backbone=label,
                backbone_family=family,
                frames=backbone.frames,
                image_size=backbone.image_size,
                attribute_layers=dict.fromkeys(names, ENCODER_LAYERS),
                attribute_dim=ENCODER_DIM,
                **fields,
            )
            model = VideoClassifier(config, copy.deepcopy(backbone))
            tunable, total = model.parameter_counts()
            print(f"| {label} | {row} | {tunable:,} | {total:,} | {100 * tunable / total:.2f} |")


if __name__ == "__main__":
    main()
