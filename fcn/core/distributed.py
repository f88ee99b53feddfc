"""torchrun detection and the few collective operations training needs.

A run started by ``torchrun`` has WORLD_SIZE, RANK and LOCAL_RANK in its
environment; one started by ``python train.py`` does not, and is a world of one.
Only the primary process (rank 0) logs and writes files.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import re
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from fcn.core.errors import WorkFailure


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


class DistributedError(WorkFailure):
    """The process group failed (a lost peer, a timeout): a failure of the work, exit 1, even
    when met while joining the group."""


ADVICE = (
    "check that every process and node of the run is alive and reachable (its log says why it "
    "stopped), then start the run again with training.resume=auto: it goes on from the last "
    "checkpoint"
)


def is_backend_failure(exc: BaseException) -> bool:
    """Whether exc is a failure of the process group: torch's DistError, or the plain RuntimeError
    a gloo collective raises inside DistributedDataParallel's backward ("[.../gloo/transport/tcp/
    pair.cc:545] Read error ...: Connection reset by peer")."""
    if isinstance(exc, dist.DistError):
        return True
    return type(exc) is RuntimeError and ("/gloo/" in str(exc) or "ProcessGroup" in str(exc))


def lost_peer(exc: BaseException, where: str) -> DistributedError:
    """Return the one-line DistributedError for a failure of the process group met `where`."""
    cause = re.sub(r"\[[^\]]*\.(?:cc|cpp|h):\d+\]\s*", "", " ".join(str(exc).split()))
    first = cause.split(". ")[0]  # gloo goes on with advice on reading logs, ending 'GLHF!'
    if len(first) > 200:
        first = first[:200] + " ..."
    return DistributedError(f"the process group failed {where} ({first}); {ADVICE}")


@contextlib.contextmanager
def backend_failures(where: str) -> Iterator[None]:
    """Turn a failure of the process group inside the block into lost_peer(exc, where)."""
    try:
        yield
    except RuntimeError as exc:
        if not is_backend_failure(exc):
            raise
        raise lost_peer(exc, where) from None


def setup(device: torch.device, timeout_s: float = 1800.0) -> DistInfo:
    """Join the process group torchrun describes (nccl on CUDA, gloo on the CPU), with collectives
    that fail after timeout_s seconds instead of waiting forever; a no-op alone."""
    info = env_info()
    if info.enabled and not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        kwargs: dict[str, Any] = {"device_id": device} if device.type == "cuda" else {}
        timeout = datetime.timedelta(seconds=timeout_s)
        with backend_failures("while the processes joined it"):
            if os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True":  # pytorch/pytorch#135712
                kwargs.update(store=_round_store(info, timeout), rank=info.rank, world_size=info.world_size)
            dist.init_process_group(backend, timeout=timeout, **kwargs)
    return info


_STORE_KEY = "fcn/process_group_store"


def _round_store(info: DistInfo, timeout: datetime.timedelta) -> dist.Store:
    """Return a store for this round of workers alone: a TCPStore served by rank 0 itself.

    torchrun (since 2.4) points every round of workers at one TCPStore its rank-0 agent keeps for
    the whole job (TORCHELASTIC_USE_AGENT_STORE=True). Keys the previous round wrote stay in it,
    so after a --max-restarts restart gloo reads the dead workers' addresses and init fails
    ("Gloo connectFullMesh failed ... Connection refused"): pytorch/pytorch#135712, worked around
    upstream by TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1. A store served by the rank-0 worker dies
    with its round, so no key can outlive it; the agent's store only carries its address. A
    PrefixStore keyed by TORCHELASTIC_RESTART_COUNT would be shorter but is not safe across nodes:
    an agent restarted by the scheduler, or one whose workers were restarted for a membership
    change (which torchrun does not count), has another count than its peers. The address
    published by a previous round names a dead server (or one without this round's token), which
    the other ranks detect and then read the key again."""
    host, port = os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"])
    agent = dist.TCPStore(host, port, is_master=False, timeout=timeout)
    if info.rank == 0:
        own = dist.TCPStore(host, 0, info.world_size, is_master=True, timeout=timeout, wait_for_workers=False)
        token = uuid.uuid4().hex
        own.set("token", token)
        agent.set(_STORE_KEY, f"{own.port} {token}")
        return own
    deadline = time.monotonic() + timeout.total_seconds()
    probe = datetime.timedelta(seconds=2)
    while True:
        served_port, token = agent.get(_STORE_KEY).decode().split()
        try:
            own = dist.TCPStore(host, int(served_port), is_master=False, timeout=probe)
            if own.get("token").decode() == token:
                own.set_timeout(timeout)
                return own
        except (RuntimeError, ValueError):  # a previous round's server: gone, or not ours
            pass
        if time.monotonic() > deadline:
            raise dist.DistStoreError(f"rank 0's store (port {served_port} on {host}) cannot be reached")
        time.sleep(0.2)


def cleanup(synchronize: bool = False) -> None:
    """Leave the process group, if this process joined one; with synchronize (a run that ended well
    on every rank), first wait for the others, so that no rank tears its gloo connections down while
    another still writes (which aborted rank 1 with 'terminate called without an active exception')."""
    if dist.is_available() and dist.is_initialized():
        if synchronize and dist.get_world_size() > 1:
            with contextlib.suppress(RuntimeError):  # a peer that is gone: leave anyway
                dist.barrier()
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


def process_device(name: str) -> str:
    """Return the device this process of an inference run uses for the command line's `name`:
    under torchrun, 'auto' (where CUDA is available) and 'cuda' are this process's own GPU,
    cuda:LOCAL_RANK, as training places its processes; otherwise `name` itself."""
    info = env_info()
    if info.enabled and (name == "cuda" or (name == "auto" and torch.cuda.is_available())):
        return f"cuda:{info.local_rank}"
    return name


def rank_and_world() -> tuple[int, int]:
    """Return (rank, world size) of the process group this process joined; (0, 1) when none."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1
