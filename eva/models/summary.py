"""One-line summaries of which tensors train, for the start-of-training log.

A full list of tunable tensor names runs to thousands of characters (every adapter of every layer);
the INFO line groups them by module so a reader sees at a glance *what* trains, and the full list
goes to DEBUG for when the exact names matter.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class TensorGroup:
    """Tensors that share a module path once layer indices are folded: `adapters.*.temporal`."""

    name: str
    tensors: int
    parameters: int


def module_group(name: str, depth: int = 2) -> str:
    """`adapters.3.temporal.down.weight` -> `adapters.*.temporal`: indices become `*`, the first
    `depth` named parts are kept, and the tensor's own name (weight, bias) is never part of it."""
    parts = name.split(".")
    *modules, _leaf = parts if len(parts) > 1 else (*parts, "")
    kept: list[str] = []
    named = 0
    for part in modules:
        if named == depth:
            break
        if part.isdigit():
            if kept and kept[-1] != "*":
                kept.append("*")
            continue
        kept.append(part)
        named += 1
    return ".".join(kept) if kept else name


def group_tensors(named: Iterable[tuple[str, torch.Tensor]], depth: int = 2) -> list[TensorGroup]:
    """Count tensors and parameters per `module_group`, in first-seen (module definition) order."""
    counts: dict[str, list[int]] = {}
    for name, tensor in named:
        entry = counts.setdefault(module_group(name, depth), [0, 0])
        entry[0] += 1
        entry[1] += tensor.numel()
    return [TensorGroup(group, tensors, parameters) for group, (tensors, parameters) in counts.items()]


def format_groups(groups: Iterable[TensorGroup]) -> str:
    """`adapters.*.temporal: 16 tensors, 2,112 params; head.fc: 2 tensors, 325 params`."""
    return "; ".join(
        f"{g.name}: {g.tensors} tensor{'s' if g.tensors != 1 else ''}, {g.parameters:,} params"
        for g in groups
    )
