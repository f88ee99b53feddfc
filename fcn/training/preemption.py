"""Stopping a training run politely: Ctrl-C, SIGTERM or SIGUSR1 become a request to stop at the
next iteration boundary, which every process of a torchrun job agrees on.

``StopFlag`` installs the handlers for the loop's duration; ``StopFlag.agree()`` sums the signals seen
with the step's loss across processes (one all-reduce), so all ranks stop at the same iteration and
the loop then saves ``checkpoints/last.pt`` and exits with fcn.core.errors' code for the signal (143 for
SIGTERM, 75 for SIGUSR1, 0 for Ctrl-C). A second signal stops at once. docs/preempt.md says how to
use it with schedulers.
"""

from __future__ import annotations

import contextlib
import signal
import time
from pathlib import Path
from typing import Any

import torch

from fcn.core import distributed

PREEMPTION_SIGNALS = ("SIGTERM", "SIGUSR1")
"""Signals that mean "this machine is going away": save last.pt at the iteration's end and stop
(fcn.core.errors' exit codes 143 and 75). SIGINT (Ctrl-C) does the same and exits 0."""


# When processes saw different signals, all stop for the first of these (the same on every one):
# the machine going away (SIGTERM) before the time limit coming (SIGUSR1) before a Ctrl-C.
_SIGNAL_PRIORITY = ("SIGTERM", "SIGUSR1", "SIGINT")


class StopFlag:
    """Turns the first Ctrl-C, SIGTERM or SIGUSR1 into a request to stop at the next iteration
    boundary (`signal` names it); a second one stops at once."""

    # A signal within this many seconds of the first is the same event delivered twice, not a
    # second request: SLURM can signal every process of a job step while torchrun forwards the one
    # it gets, so a worker under `srun torchrun` may see one preemption as two SIGTERMs.
    SAME_EVENT_S = 1.0

    def __init__(self, last: Path) -> None:
        self.signal: str | None = None
        self._last = last
        self._first = 0.0
        self._previous: dict[int, Any] = {}

    def agree(
        self, loss_value: float, info: distributed.DistInfo, device: torch.device
    ) -> tuple[float, str | None]:
        """Return (the step's loss summed over processes, the signal every process stops for now or
        None): one all-reduce carries both, so a signal seen by any process stops all at this step."""
        signals = [float(self.signal == name) for name in _SIGNAL_PRIORITY]  # 1 where seen
        if info.enabled:  # the whole batch's loss
            totals = torch.tensor([loss_value, *signals], dtype=torch.float64, device=device)
            loss_value, *signals = distributed.all_reduce_sum(totals).tolist()
        return loss_value, next((name for name, seen in zip(_SIGNAL_PRIORITY, signals) if seen), None)

    def __enter__(self) -> StopFlag:
        for name in ("SIGINT", *PREEMPTION_SIGNALS):
            signum = getattr(signal, name, None)  # no SIGUSR1 on Windows
            if signum is None:
                continue
            with contextlib.suppress(ValueError):  # not the main thread: no handler
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        name = signal.Signals(signum).name
        if self.signal is None:
            self.signal, self._first = name, time.monotonic()
            return
        if time.monotonic() - self._first < self.SAME_EVENT_S:
            return
        if name == "SIGINT":  # a second Ctrl-C stops at once
            raise KeyboardInterrupt
        from fcn.core.errors import Stopped, exit_code

        raise Stopped(
            f"stopped at once by a second {name} (after {self.signal}); {self._last}, if any, holds the last "
            "saved iteration: start again with training.resume=auto",
            exit_code(name),
        )

    def __exit__(self, *exc: Any) -> None:
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)
