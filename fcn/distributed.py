"""torchrun detection and the few collective operations training needs.

A run started by ``torchrun`` has WORLD_SIZE, RANK and LOCAL_RANK in its
environment; one started by ``python train.py`` does not, and is a world of one.
Only the primary process (rank 0) logs and writes files.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def is_primary(self) -> bool:
        """Whether this process logs and writes files (rank 0)."""
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        """Whether this is a multi-process run."""
        return self.world_size > 1


def env_info() -> DistInfo:
    """Return this process's rank, local rank and world size from torchrun's environment."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    return DistInfo(int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0")), world)


def setup(device: torch.device) -> DistInfo:
    """Join the process group torchrun describes (nccl on CUDA, gloo on the CPU); a no-op alone."""
    info = env_info()
    if info.enabled and not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        kwargs = {"device_id": device} if device.type == "cuda" else {}
        dist.init_process_group(backend, timeout=datetime.timedelta(minutes=30), **kwargs)
    return info


def cleanup() -> None:
    """Leave the process group, if this process joined one."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def is_primary() -> bool:
    """Whether this process is rank 0 (true when not distributed)."""
    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


def _active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum a tensor over all processes in place (a no-op when not distributed); return it."""
    if _active():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def all_gather_object(obj: Any) -> list[Any]:
    """Return every process's (picklable) `obj` in rank order; [obj] when not distributed."""
    if not _active():
        return [obj]
    gathered: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, obj)
    return gathered


def broadcast_buffers(module: nn.Module, src: int = 0) -> None:
    """Copy rank `src`'s buffers (BatchNorm running statistics) into every process's module."""
    if _active():
        for buffer in module.buffers():
            dist.broadcast(buffer, src)


def barrier() -> None:
    """Wait for every process (a no-op when not distributed)."""
    if _active():
        dist.barrier()
