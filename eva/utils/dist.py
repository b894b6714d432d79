"""Rank / world size from torchrun or SLURM, so several processes split one job disjointly; the device a
process runs on."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class WorkerSlot:
    rank: int = 0
    world_size: int = 1

    def owns(self, index: int) -> bool:
        """Round-robin ownership of item `index` (shard, video...)."""
        return index % self.world_size == self.rank


def worker_slot() -> WorkerSlot:
    """Read RANK/WORLD_SIZE (torchrun) or SLURM_PROCID/SLURM_NTASKS; default to a single process."""
    for rank_key, world_key in (("RANK", "WORLD_SIZE"), ("SLURM_PROCID", "SLURM_NTASKS")):
        if rank_key in os.environ and world_key in os.environ:
            rank, world = int(os.environ[rank_key]), int(os.environ[world_key])
            if not 0 <= rank < world:
                raise ValueError(f"{rank_key}={rank} is outside 0..{world_key}-1 ({world})")
            return WorkerSlot(rank, world)
    return WorkerSlot()


def resolve_device(device: str) -> torch.device:
    """`auto` picks CUDA when present; anything else is passed to torch as-is."""
    import torch

    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)
