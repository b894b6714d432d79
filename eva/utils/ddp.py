"""The process group of a DDP stage (train, evaluate): rank, world size and device from torchrun's
environment, and `train.nproc`'s rule, which both stages read.

Apart from `eva.utils.dist` (rank and world size alone, without torch), which extract and
attributes import: a change here re-runs only the stages that run DDP.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from eva.config import integer
from eva.utils.dist import worker_slot

# `train.nproc`: the processes of one node the train stage runs on, and the evaluate stage after it.
NPROC = integer(1)


@dataclass(frozen=True)
class DistEnv:
    rank: int
    world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed() -> tuple[DistEnv, bool]:
    """Rank/world from torchrun's env; a process group (nccl on GPU, gloo on CPU) only when world > 1.

    Returns the environment and whether this call created the process group (the caller tears it down).
    """
    slot = worker_slot()
    local_rank = int(os.environ.get("LOCAL_RANK", slot.rank))
    if torch.cuda.is_available():
        device = torch.device("cuda", local_rank % torch.cuda.device_count())
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    created = False
    if slot.world_size > 1 and not dist.is_initialized():
        if "MASTER_ADDR" not in os.environ or "MASTER_PORT" not in os.environ:
            raise RuntimeError(
                f"WORLD_SIZE={slot.world_size} but MASTER_ADDR/MASTER_PORT are unset: launch with "
                "`torchrun --nproc_per_node <train.nproc> -m stages.<train|evaluate>`"
            )
        dist.init_process_group(
            "nccl" if device.type == "cuda" else "gloo", rank=slot.rank, world_size=slot.world_size
        )
        created = True
    return DistEnv(slot.rank, slot.world_size, device), created


def autocast_dtype() -> torch.dtype:
    """The mixed-precision dtype on CUDA: bfloat16, or float16 on a GPU without bf16 (training's and
    evaluation's autocast)."""
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def all_gather_objects(obj: Any, world_size: int) -> list[Any]:
    """Every rank's `obj` (picklable), in rank order, on every rank; `[obj]` in a single process."""
    if world_size == 1:
        return [obj]
    gathered: list[Any] = [None] * world_size
    dist.all_gather_object(gathered, obj)
    return gathered
