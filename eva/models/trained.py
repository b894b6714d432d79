"""The trained model file `models/trained/model.pt`: written by the trainer, read by inference.

It holds only what inference needs (config, tunable weights, classes, the params and history of
the run): the frozen backbone is rebuilt from `model.backbone.*`. Written atomically; loads with
`torch.load(weights_only=True)`. Lives with the models so that evaluation does not import the trainer.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import torch

from eva.models.classifier import ModelConfig, VideoClassifier, build_model
from eva.utils.io import atomic_path


def _canonical(obj: Any) -> Any:
    """A copy of `obj` whose pickle depends on its values alone: containers rebuilt, strings interned.

    pickle writes an object it has seen before as a back-reference, so the same history would pickle
    to other bytes when some of its strings came from a resume file (one object per occurrence)
    and others from the code (one shared constant): a resumed run's model.pt differed from an
    uninterrupted run's by exactly that.
    """
    if isinstance(obj, str):
        return sys.intern(str(obj))
    if isinstance(obj, dict):
        return {_canonical(k): _canonical(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return type(obj)(_canonical(v) for v in obj)
    return obj


def save_torch(obj: dict[str, Any], path: str | Path) -> None:
    """`torch.save` to `path` atomically, with the same bytes for the same values."""
    # Through a file object: given a path, torch.save names the archive's root folder after the
    # (random) temporary file name, so identical weights would give different bytes each run.
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        torch.save(_canonical(obj), f)


def save_trained_model(
    path: str | Path,
    model: VideoClassifier,
    *,
    classes: list[str],
    stage: int,
    params: dict[str, Any],
    history: list[dict[str, float]],
) -> None:
    """`models/trained/model.pt`: config, tunable weights, classes, stage, params and history."""
    if len(classes) != model.config.num_classes:
        raise ValueError(f"{len(classes)} class names for a {model.config.num_classes}-way model")
    save_torch(
        {
            "config": model.config.record(),  # reference options only when set: a default run's bytes as before
            "tunable": {k: v.detach().cpu().clone() for k, v in model.tunable_state_dict().items()},
            "classes": list(classes),
            "stage": int(stage),
            "params": params,
            "history": history,
        },
        path,
    )


def load_trained_model(
    path: str | Path, device: str | torch.device = "cpu"
) -> tuple[VideoClassifier, dict[str, Any]]:
    """Rebuild the classifier saved by the train stage (backbone from `model.backbone.*`), in eval mode.

    Returns the model and the whole checkpoint dict (`classes`, `stage`, `params`, `history`...).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"trained model {path} not found (run the train stage: dvc repro train)")
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    model = build_model(ModelConfig(**checkpoint["config"]))
    model.load_tunable_state_dict(checkpoint["tunable"])
    return model.to(device).eval(), checkpoint
