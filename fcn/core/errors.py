"""The exit-code rule every command of the project follows, and its one-line errors.

Exit codes, the same for every command of the project:

- 0: done;
- 2: a bad command line, config or input (a config key, a dataset that cannot be listed, a
  checkpoint that cannot be read) found before any work started; nothing was written;
- 1: a failure during the work (an unreadable image met while training, a full disk, a non-finite
  loss); files already complete (checkpoints, outputs) stay intact;
- 130: interrupted (a second Ctrl-C: at once; train.py's first Ctrl-C saves last.pt and exits 0);
- 143 (128 + SIGTERM, as shells and Kubernetes report it): train.py preempted by SIGTERM (Kubernetes,
  SLURM, ``docker stop``): it finished the iteration, saved last.pt and stopped; run it again
  with training.resume=auto;
- 75 (EX_TEMPFAIL of sysexits.h, "temporary failure, try again"): the same on SIGUSR1, the signal
  a SLURM job asks for ahead of its time limit (``--signal=USR1@90``); the job script requeues
  the job on this code.

A second SIGTERM or SIGUSR1 stops at once, with the same code (last.pt is the last one saved).

Each error is one line on stderr, ``error: <message naming the file, key or value>``.
"""

from __future__ import annotations

import gc
import sys
from typing import Callable, TypeVar

EXIT_FAILURE = 1
EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 143  # 128 + SIGTERM
EXIT_REQUEUE = 75  # sysexits.h EX_TEMPFAIL


class WorkFailure(RuntimeError):
    """A failure of the work rather than of its input (a lost peer, a collective timeout): exit 1
    even when met before training started."""


class Stopped(BaseException):
    """Stopped at once by a second preemption signal; code is the exit code (a BaseException, like
    KeyboardInterrupt, so that no `except Exception` on the way swallows it)."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


ERRORS = (ValueError, OSError, RuntimeError)
"""What a command reports as one line (ConfigError, CheckpointError, data errors, OS errors and
training errors are among them); anything else is a bug and keeps its traceback."""


T = TypeVar("T")


def exit_code(signal_name: str | None) -> int:
    """Return the exit code of a run stopped by a signal (None, or SIGINT's first Ctrl-C: 0)."""
    return {"SIGTERM": EXIT_TERMINATED, "SIGUSR1": EXIT_REQUEUE}.get(signal_name or "", 0)


def report(exc: BaseException, prefix: str = "") -> None:
    """Print exc as the one error line on stderr (a URI's user and password shown as ***)."""
    from fcn.config import redact

    message = redact(" ".join(str(exc).split())) or type(exc).__name__
    print(f"error: {prefix}{message}", file=sys.stderr)


def run_phases(prepare: Callable[[], T], work: Callable[[T], int | None], prefix: str = "") -> int:
    """Run prepare() then work(its result); return the exit code of the rule above (work may
    return its own non-zero code).

    During work(), what prepare() left (the imported modules, the model, the config) is frozen out
    of the cyclic garbage collector's sight (gc.freeze): those objects live as long as the run, and
    walking them at each full collection cost predict.py about 0.2 s over 24 photos (docs/
    performance.md). They are given back to it (gc.unfreeze) when work() ends."""
    code = EXIT_BAD_INPUT  # until prepare() returns, an error is the input's
    try:
        prepared = prepare()
        code = EXIT_FAILURE
        gc.freeze()
        try:
            return work(prepared) or 0
        finally:
            gc.unfreeze()
    except ERRORS as exc:
        report(exc, prefix)
        return EXIT_FAILURE if isinstance(exc, WorkFailure) else code
    except Stopped as exc:
        report(exc, prefix)
        return exc.code
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


def leave(code: int) -> int:
    """Return code, the command's exit code, after freezing every object out of the garbage
    collector's sight (gc.freeze), so that the interpreter's collections at exit skip them: they
    took 0.3-0.45 s after a run that imported torch, freeing nothing the process's end does not.
    Only for the last act of a command's process: ``sys.exit(leave(main()))``."""
    gc.freeze()
    return code
