"""The one optimisation loop both demo pretrainers share: AdamW, linear warmup, cosine decay.

`pretrain.clip` and `pretrain.captioner` carry the same five schedule keys (`Schedule`); the CLIP
and the captioner differ only in how a batch becomes a loss and in one post-step rule (CLIP's
temperature clamp, the captioner's gradient clipping), which `train_steps` takes as arguments.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from eva.config import check_fields, integer, invalid, number, setting
from eva.train.schedule import build_scheduler
from eva.utils.log import progress

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Schedule:
    """The optimiser keys `pretrain.clip` and `pretrain.captioner` share: AdamW, warmup + cosine."""

    steps: int = setting(rule=integer(1))
    batch_size: int = setting(rule=integer(1))
    lr: float = setting(rule=number(above=0))
    weight_decay: float = setting(rule=number(0))
    warmup_steps: int = setting(rule=integer(0))

    def _check(self, section: str) -> None:
        check_fields(self, section)
        if self.warmup_steps > self.steps:
            raise invalid(
                f"{section}.warmup_steps", f"in 0..{section}.steps ({self.steps})", self.warmup_steps
            )


def adamw(
    model: torch.nn.Module, schedule: Schedule, lr_scale: Callable[[str], float] | None = None
) -> torch.optim.AdamW:
    """AdamW over the trainable parameters, weight decay on matrices only (not on norms, biases,
    embeddings' scales, logit scale); `lr_scale(name)` multiplies a parameter's rate (default 1)."""
    groups: dict[tuple[bool, float], list[torch.nn.Parameter]] = {}
    for name, p in model.named_parameters():
        if p.requires_grad:
            decay = p.ndim >= 2 and "embedding" not in name
            groups.setdefault((decay, 1.0 if lr_scale is None else lr_scale(name)), []).append(p)
    return torch.optim.AdamW(
        [
            {
                "params": params,
                "weight_decay": schedule.weight_decay if decay else 0.0,
                "lr": schedule.lr * scale,
            }
            for (decay, scale), params in sorted(groups.items(), key=lambda kv: (not kv[0][0], -kv[0][1]))
        ],
        lr=schedule.lr,
        betas=(0.9, 0.98),
        eps=1e-6,
    )


@dataclass
class TrainedSteps:
    losses: list[float]  # one per step
    seconds: float


def train_steps(
    model: torch.nn.Module,
    batches: Iterable[Any],
    schedule: Schedule,
    loss_of: Callable[[Any], torch.Tensor],
    *,
    name: str,
    max_grad_norm: float | None = None,
    after_step: Callable[[], None] | None = None,
    lr_scale: Callable[[str], float] | None = None,
) -> TrainedSteps:
    """`schedule.steps` AdamW steps of `loss_of(batch)`, logging the running loss every 50 steps.

    `max_grad_norm` clips the gradient norm before each step; `after_step` runs (without grad) after it;
    `lr_scale` (parameter name -> factor) scales a parameter's rate, frozen parameters are left out.
    """
    optimizer = adamw(model, schedule, lr_scale)
    # angle_first: the rounding the demo's models were made with (eva.train.schedule)
    scheduler = build_scheduler(
        optimizer, warmup_steps=schedule.warmup_steps, total_steps=schedule.steps, angle_first=True
    )
    losses: list[float] = []
    start = time.monotonic()
    for step, batch in enumerate(progress(batches, desc=f"pretrain {name}", total=schedule.steps)):
        loss = loss_of(batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if max_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)
        optimizer.step()
        scheduler.step()
        if after_step is not None:
            with torch.no_grad():
                after_step()
        losses.append(loss.item())
        if (step + 1) % 50 == 0 or step + 1 == schedule.steps:
            log.info(
                "pretrain %s step %d/%d: loss %.3f (last 50: %.3f), %.0f s",
                name, step + 1, schedule.steps, losses[-1], float(np.mean(losses[-50:])), time.monotonic() - start,
            )  # fmt: skip
    return TrainedSteps(losses=losses, seconds=time.monotonic() - start)
