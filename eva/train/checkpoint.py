"""Checkpoints: the final `models/trained/model.pt` and the per-epoch resume file.

`model.pt` holds only what inference needs (config, tunable weights, classes, the params and
history of the run): the frozen backbone is rebuilt from `model.backbone.*`. The resume file
`checkpoints/<run hash>/last.pt` adds optimiser, scheduler, grad-scaler and RNG states, so a
killed run restarted with the same params, data, weights and code continues exactly where the last
finished epoch left off; a change to any of them starts afresh (the hash covers them all). Both are
written atomically, and both load with `torch.load(weights_only=True)`.
"""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from eva.models.classifier import VideoClassifier
from eva.models.trained import load_trained_model, save_torch, save_trained_model
from eva.utils.fingerprint import path_fingerprint

RESUME_FILE = "last.pt"
__all__ = [
    "capture_rng_state",
    "data_fingerprint",
    "load_resume",
    "load_trained_model",
    "restore_rng_state",
    "resume_path",
    "save_resume",
    "save_trained_model",
]


def run_hash(config: Any) -> str:
    """Short stable digest of everything that determines a training run (params + data fingerprint)."""
    text = json.dumps(config, sort_keys=True, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def resume_path(root: str | Path, config: Any) -> Path:
    """`<root>/<run_hash(config)>/last.pt`: another config never resumes this run's state."""
    return Path(root) / run_hash(config) / RESUME_FILE


def data_fingerprint(paths: list[str | Path]) -> list[list[str]]:
    """Name and content fingerprint (`eva.utils.fingerprint`) of each input file or folder.

    Re-extracted shards, recomputed attributes or re-pretrained backbone weights have other bytes,
    so they never resume a run trained on the old ones, even at the same size.
    """
    return [[Path(p).name, path_fingerprint(p)] for p in paths]


# ----------------------------------------------------------------------------- RNG


def capture_rng_state() -> dict[str, Any]:
    """torch (CPU and every CUDA device), numpy and python RNG states, as weights_only-loadable values."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "kind": kind,
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached": float(cached),
        },  # fmt: skip
        "python": {"version": version, "internal": list(internal), "gauss": gauss},
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(
        (n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"])
    )
    p = state["python"]
    random.setstate((p["version"], tuple(p["internal"]), p["gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# ----------------------------------------------------------------------------- resume file


def save_resume(
    path: str | Path,
    *,
    model: VideoClassifier,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    scaler: torch.amp.GradScaler,
    epoch: int,
    history: list[dict[str, float]],
    steps: list[dict[str, float]],
    rng: list[dict[str, Any]],
) -> None:
    """State after `epoch` finished epochs; `rng` holds one `capture_rng_state()` per rank."""
    save_torch(
        {
            "epoch": epoch,
            "tunable": model.tunable_state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "scaler": scaler.state_dict(),
            "history": history,
            "steps": steps,
            "rng": rng,
        },
        path,
    )


def load_resume(path: str | Path) -> dict[str, Any] | None:
    """The resume state at `path`, or None when there is none yet."""
    path = Path(path)
    if not path.is_file():
        return None
    return torch.load(path, map_location="cpu", weights_only=True)
