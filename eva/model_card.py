"""A model card (Markdown with a YAML header) written from the run itself, next to the weights."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from eva import __version__
from eva.methods import get_method
from eva.utils.io import atomic_path

DEMO_WARNING = (
    "This model was trained on the embedded synthetic demo, on a tiny backbone and attribute models "
    "pretrained by the pipeline on synthetic stills (the `pretrain` stage): its numbers say how far these "
    "tiny models get on the demo's synthetic motions, not what EVA reaches on real video with real weights."
)
RANDOM_BACKBONE_WARNING = (
    "Its backbone has random weights (a stand-in such as the demo's `models/pretrained/videomae`): "
    "the numbers show that the machinery runs, nothing about the architecture."
)


def render_model_card(
    *,
    config: dict[str, Any],
    dataset: str,
    stage: int,
    metrics: dict[str, Any],
    classes: list[str],
    train_params: dict[str, Any],
    demo: bool,
    random_backbone: bool = False,
) -> str:
    tunable, total = metrics["tunable_params"], metrics["total_params"]
    header = {
        "library_name": "eva",
        "library_version": __version__,
        "base_model": config["backbone"] + (f" ({config['pretrained']})" if config.get("pretrained") else ""),
        "backbone_family": config.get("backbone_family", "open_clip"),
        "dataset": dataset,
        "method": config["method"],
        "stage": stage,
        "attributes": list(config.get("attributes") or []),
        "num_classes": len(classes),
        "frames": config["frames"],
        "image_size": config["image_size"],
        "parameters": {
            "tunable": tunable,
            "total": total,
            "tunable_percent": round(100.0 * tunable / total, 4),
        },
        "metrics": {
            k: metrics[k]
            for k in ("top1", "top5", "mean_class_accuracy", "views", "clips", "crops", "keyframes", "videos")
            if k in metrics
        },
    }
    lines = [
        "---",
        yaml.safe_dump(header, sort_keys=False).rstrip(),
        "---",
        "",
        f"# EVA video classifier: {dataset}, method `{config['method']}`, stage {stage}",
        "",
    ]
    if demo:
        lines += [f"> **Note.** {DEMO_WARNING}", ""]
    if random_backbone:
        lines += [f"> **Note.** {RANDOM_BACKBONE_WARNING}", ""]
    lines += [
        "A frozen pretrained vision transformer adapted with small tunable modules"
        + (" and hierarchical video-attribute tokens" if get_method(config["method"]).uses_attributes else "")
        + f" (`{config['method']}`: {get_method(config['method']).summary}). `model.pt` holds only the tunable tensors and the config; the backbone is loaded from "
        "`base_model` at load time (`eva.models.trained.load_trained_model`).",
        "",
        "## Evaluation",
        "",
        "| metric | value |",
        "|---|---|",
        f"| top-1 | {100 * metrics['top1']:.2f}% |",
        f"| top-5 | {100 * metrics['top5']:.2f}% |"
        if "top5" in metrics
        else "| top-5 | n/a (5 classes or fewer) |",
        f"| mean class accuracy | {100 * metrics['mean_class_accuracy']:.2f}% |",
        f"| views per video | {metrics.get('clips', 1)} clips x {metrics.get('crops', 1)} crops"
        f" x {metrics.get('keyframes', 1)} attribute keyframes |",
        f"| tunable / total parameters | {tunable:,} / {total:,} ({100.0 * tunable / total:.2f}%) |",
        "",
        "## Training",
        "",
        "```yaml",
        yaml.safe_dump(train_params, sort_keys=True).rstrip(),
        "```",
        "",
    ]
    return "\n".join(lines)


def write_model_card(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
