"""Learning-rate schedule: linear warmup, then cosine decay to zero, stepped once per optimiser step.

The one implementation: the trainer (`eva.train.loop`) and the demo's pretraining
(`eva.demo.pretrain.schedule`) both build their scheduler here.
"""

from __future__ import annotations

import math
from functools import partial

import torch
from torch.optim.lr_scheduler import LambdaLR


def cosine_with_warmup(step: int, *, warmup_steps: int, total_steps: int, angle_first: bool = False) -> float:
    """Multiplier of the base lr before optimiser step `step` (0-based).

    Warmup rises linearly to 1 over `warmup_steps` steps (never starting at exactly 0, so the
    first step already moves the weights); the rest follows half a cosine down to 0 at `total_steps`.

    `angle_first` rounds the cosine's angle as `pi * elapsed / decay_steps` rather than
    `pi * (elapsed / decay_steps)`: the same number up to its last bit, and about one step in nine
    differs there. The demo's pretraining made its models with it (their bytes depend on it); the
    trainer uses the default.
    """
    if total_steps < 1:
        raise ValueError(f"total_steps must be >= 1, got {total_steps}")
    warmup_steps = min(max(warmup_steps, 0), total_steps)
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    decay_steps = total_steps - warmup_steps
    if decay_steps <= 0:
        return 1.0
    if angle_first:
        angle = math.pi * min(step - warmup_steps, decay_steps) / decay_steps
    else:
        angle = math.pi * min((step - warmup_steps) / decay_steps, 1.0)
    return 0.5 * (1.0 + math.cos(angle))


def build_scheduler(
    optimizer: torch.optim.Optimizer, *, warmup_steps: int, total_steps: int, angle_first: bool = False
) -> LambdaLR:
    """A LambdaLR whose state_dict round-trips (the multiplier is a partial, not a closure)."""
    return LambdaLR(
        optimizer,
        partial(
            cosine_with_warmup, warmup_steps=warmup_steps, total_steps=total_steps, angle_first=angle_first
        ),
    )
