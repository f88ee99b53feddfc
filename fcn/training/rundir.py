"""The run directory: what a run leaves in it, the rule that a new run never writes over an old one,
and the claim that keeps two runs out of one directory.

A run writes into training.run_dir its config.yml, checkpoints/last.pt and best.pt, TensorBoard's
events.out.tfevents.*, metrics.jsonl and vis/iter_*.png (fcn.training.loop, fcn.training.validate).
A directory holding a config.yml, a checkpoints/ folder, a metrics.jsonl or an event file holds a
run. A new run (training.resume unset) into one stops before any work, with one line that says what
is there and the three ways on: continue it (training.resume=auto), start beside it
(training.run_dir=<dir>-2, the first free name) or replace it (training.overwrite=true). That is
Hugging Face Trainer's refusal of a non-empty output_dir, with the way out spelled in the message.

Two runs started together: before it looks, a run claims the directory (claim): an OS lock
(flock) on <run_dir>/.lock, held for the run's whole life and holding "pid N on HOST since TIME".
The second run finds it held and stops with one line naming the holder. The OS drops a lock with
the process that held it, so a killed run's claim never blocks: its .lock file is left, unlocked,
and the next run takes it (a bare O_CREAT|O_EXCL marker would need a pid check that cannot see
another host's processes, and a rule for when to break it). release() removes the file.

Replacing (training.overwrite=true): the old run's files are moved into <run_dir>/.replaced/ once
the new run is ready to write (replace_run), and settled when the new run ends (settle): if it
wrote its checkpoints/last.pt they are deleted, else what it wrote is deleted and they go back
where they were, byte for byte. A run killed outside Python's reach (SIGKILL, the power) leaves
.replaced/; the next run that claims the directory settles it by the same rule before it looks.

Under torchrun only rank 0 writes, so rank 0 claims, and its view of the directory decides for
every process.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import socket
import time
from collections.abc import Callable
from pathlib import Path

try:
    import fcntl
except ImportError:  # Windows: msvcrt's byte lock, also dropped with the process
    fcntl = None  # type: ignore[assignment]
    import msvcrt

from omegaconf import DictConfig

from fcn.core import distributed

CHECKPOINTS = ("last.pt", "best.pt")
LOCK = ".lock"
ASIDE = ".replaced"  # the old run's files while an overwriting run has not yet written last.pt
MOVING = ".replacing"  # the same while they are being moved: a move cut short is undone
RESTORING = ".restoring"  # the same once settle() has decided to put them back
MANIFEST = "replaced.txt"  # in ASIDE: the old run's files, one relative name a line
_CONTENTION = (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK)

_held: dict[Path, tuple[int | None, bool]] = {}
"""The run directories this process has claimed: (the open .lock's descriptor, None where the
filesystem refused locks; whether the claim made the directory)."""


def _events(run_dir: Path) -> list[Path]:
    return sorted(run_dir.glob("events.out.tfevents.*"))


def holds_run(run_dir: Path) -> bool:
    """Return whether run_dir holds a run's files (config.yml, checkpoints/, metrics.jsonl, events)."""
    if not run_dir.is_dir():
        return False
    markers = ("config.yml", "checkpoints", "metrics.jsonl")
    return any((run_dir / name).exists() for name in markers) or bool(_events(run_dir))


def describe_run(run_dir: Path) -> str:
    """Return what the run in run_dir holds, in a few words: its files, the checkpoints, the last
    evaluation's iteration from metrics.jsonl (read as text: no checkpoint is loaded)."""
    parts = ["config.yml"] if (run_dir / "config.yml").is_file() else []
    ckpts = run_dir / "checkpoints"
    found = [f"checkpoints/{name}" for name in CHECKPOINTS if (ckpts / name).is_file()]
    parts += found or (["checkpoints/ (no last.pt)"] if ckpts.is_dir() else [])
    metrics = run_dir / "metrics.jsonl"
    if metrics.is_file():
        lines = [x for x in metrics.read_text(encoding="utf-8", errors="replace").splitlines() if x.strip()]
        try:
            last = json.loads(lines[-1])["iteration"]
            evals = f"{len(lines)} evaluation{'s' if len(lines) > 1 else ''}"
            parts.append(f"metrics.jsonl: {evals}, the last at iteration {last}")
        except (IndexError, KeyError, TypeError, ValueError):
            parts.append("metrics.jsonl")
    events = len(_events(run_dir))
    if events:
        parts.append(f"{events} TensorBoard event file{'s' if events > 1 else ''}")
    return ", ".join(parts)


def free_name(run_dir: Path) -> Path:
    """Return the first of <run_dir>-2, -3, ... that does not exist."""
    run_dir = run_dir if run_dir.name else run_dir.resolve()  # '.' has no name to number
    n = 2
    while (candidate := run_dir.with_name(f"{run_dir.name}-{n}")).exists():
        n += 1
    return candidate


def _unusable(cfg: DictConfig) -> str | None:
    """Return why training.run_dir can be no run's directory (one line: empty, a file), or None."""
    run_dir = Path(cfg.training.run_dir)
    if not cfg.training.run_dir:
        return "training.run_dir is empty; name the run's directory (e.g. training.run_dir=runs/mine)"
    if run_dir.exists() and not run_dir.is_dir():
        return f"training.run_dir={run_dir} is a file, not a directory; choose another training.run_dir"
    return None


def refusal(cfg: DictConfig) -> str | None:
    """Return why training.run_dir cannot take this run (one line), or None when it can: it is free
    or empty, holds a run that training.resume continues or training.overwrite replaces."""
    t = cfg.training
    run_dir = Path(t.run_dir)
    if problem := _unusable(cfg):
        return problem
    if t.resume or t.overwrite or not holds_run(run_dir):
        return None
    return (
        f"training.run_dir {run_dir} already holds a run ({describe_run(run_dir)}); continue it with "
        f"training.resume=auto, start another beside it with training.run_dir={free_name(run_dir)}, "
        "or replace it with training.overwrite=true"
    )


def _try_lock(fd: int) -> bool:
    """Return whether this process now holds the OS lock on fd's file (False: another holds it)."""
    try:
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        else:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
    except OSError as exc:
        if fcntl is None or exc.errno in _CONTENTION:
            return False
        raise
    return True


def _holder(fd: int) -> str:
    """Return what the holder wrote into the lock file ("pid N on HOST since TIME"), or ''."""
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        return os.read(fd, 200).decode("utf-8", errors="replace").strip()
    except OSError:  # Windows: the holder's locked byte cannot be read
        return ""


def claim(run_dir: Path) -> str | None:
    """Claim run_dir (made if missing) for this process until release(): lock run_dir/.lock and
    write "pid N on HOST since TIME" into it. Return None, or one line saying that another live
    process holds it and the ways on. A filesystem without locks is claimed without one."""
    key = run_dir.resolve()
    if key in _held:
        return None
    lock, made = run_dir / LOCK, not run_dir.exists()
    for _ in range(10):  # another's release removes .lock: ours may be that file, or the folder gone
        run_dir.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        except FileNotFoundError:
            continue
        try:
            locked = _try_lock(fd)
        except OSError:  # no locks on this filesystem (an NFS without lockd): no claim to take
            os.close(fd)
            _held[key] = (None, made)
            return None
        if not locked:
            holder = _holder(fd)
            os.close(fd)
            return (
                f"training.run_dir {run_dir} is in use by another training run ({holder or 'see its .lock'}); "
                f"start this one beside it with training.run_dir={free_name(run_dir)}, or once that run "
                "has stopped, continue it with training.resume=auto or replace it with training.overwrite=true"
            )
        try:
            ours = os.path.samestat(os.fstat(fd), os.stat(lock))
        except FileNotFoundError:
            ours = False
        if not ours:  # we locked the file a release had just removed: try the new one
            os.close(fd)
            continue
        since = time.strftime("%Y-%m-%d %H:%M:%S")
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, f"pid {os.getpid()} on {socket.gethostname()} since {since}\n".encode())
        _held[key] = (fd, made)
        return None
    raise OSError(
        f"training.run_dir {run_dir}: its {LOCK} kept changing while being claimed; start the run again"
    )


def release(run_dir: Path) -> None:
    """Let go of this process's claim on run_dir (a no-op without one): remove its .lock, unlock."""
    key = run_dir.resolve()
    if key not in _held:
        return
    fd, made = _held.pop(key)
    if fd is not None and fcntl is not None:  # removed while locked: a claimant holding it retries
        with contextlib.suppress(FileNotFoundError):
            (run_dir / LOCK).unlink()
        os.close(fd)
    elif fd is not None:  # Windows removes no open file
        os.close(fd)
        with contextlib.suppress(OSError):
            (run_dir / LOCK).unlink()
    if made:  # a folder this run made and left empty (its setup failed): gone again
        with contextlib.suppress(OSError):
            run_dir.rmdir()


def check_run_dir(cfg: DictConfig, info: distributed.DistInfo) -> list[str]:
    """Claim training.run_dir for this run, settle what an overwriting run killed there left, and
    raise ValueError (exit 2: nothing has been done) when the run may not write into it; return
    the lines to log (what settle did). Under torchrun only rank 0 claims and looks, and every
    process raises rank 0's verdict (its files are rank 0's)."""
    problem, notes = None, []
    if info.is_primary:
        run_dir = Path(cfg.training.run_dir)
        try:
            problem = _unusable(cfg) or claim(run_dir)
            if problem is None:
                notes = [note] if (note := settle(run_dir)) else []
                if problem := refusal(cfg):
                    release(run_dir)
        except OSError as exc:  # an unreadable directory: the same verdict on every process
            release(run_dir)
            problem = f"training.run_dir {cfg.training.run_dir}: {exc}"
    if info.enabled:
        with distributed.backend_failures("before training started"):
            problem = distributed.all_gather_object(problem)[0]
    if problem:
        raise ValueError(problem)
    return notes


def release_run_dir(run_dir: Path, log: Callable[[str], None]) -> None:
    """End this process's claim on run_dir (a no-op on a process without one): settle an overwrite
    (log what was done), then release."""
    if run_dir.resolve() not in _held:
        return
    try:
        if note := settle(run_dir):
            log(note)
    finally:
        release(run_dir)


def _run_files(run_dir: Path) -> list[Path]:
    """Return the files a run wrote into run_dir that are there: config.yml, metrics.jsonl, events,
    vis/iter_*.png, checkpoints/last.pt and best.pt with their ONNX exports and temporary files."""
    files = [run_dir / "config.yml", run_dir / "metrics.jsonl", *_events(run_dir)]
    files += sorted((run_dir / "vis").glob("iter_*.png"))
    ckpts = run_dir / "checkpoints"
    for name in CHECKPOINTS:
        files += [ckpts / name, *sorted(ckpts.glob(f"{name}.*.onnx")), *sorted(ckpts.glob(f".{name}.*.tmp"))]
    return [path for path in files if path.is_file()]


def _remove_empty_folders(run_dir: Path, keep: Path | None = None) -> None:
    for name in ("vis", "checkpoints"):
        folder = run_dir / name
        if (
            folder.is_dir()
            and not any(folder.iterdir())
            and not (keep is not None and (keep / name).is_dir())
        ):
            folder.rmdir()


def replace_run(run_dir: Path) -> list[str]:
    """Move the files a run wrote into run_dir (_run_files; no others) into run_dir/.replaced/,
    where settle() deletes them or puts them back; return their names, relative to run_dir. A
    folder left empty is removed (and remembered in .replaced/, to be made again)."""
    moving = run_dir / MOVING
    names = [str(path.relative_to(run_dir)) for path in _run_files(run_dir)]
    moving.mkdir()
    for name in ("vis", "checkpoints"):  # remembered: the old run had it
        if (run_dir / name).is_dir():
            (moving / name).mkdir()
    for name in names:
        os.replace(run_dir / name, moving / name)
    (moving / MANIFEST).write_text("".join(f"{name}\n" for name in names), encoding="utf-8")
    os.replace(moving, run_dir / ASIDE)  # the move is complete: from here the new run may write
    _remove_empty_folders(run_dir)
    return names


def settle(run_dir: Path) -> str | None:
    """Finish what replace_run() began, by what is on disk: with the new run's checkpoints/last.pt
    written, delete the old run's files; without it, delete what the new run wrote and put the
    old run's files back, as they were. Return what was done, in one line (None: nothing aside).
    Each step can be cut short and settle() run again: the folder's name records the decision."""
    moving, aside, restoring = run_dir / MOVING, run_dir / ASIDE, run_dir / RESTORING
    if moving.is_dir():  # a move cut short: the new run never started, nothing of its to delete
        for path in sorted(p for p in moving.rglob("*") if p.is_file() and p.name != MANIFEST):
            os.replace(path, run_dir / path.relative_to(moving))
        shutil.rmtree(moving)
        return f"training.run_dir {run_dir}: put back the files of a run that an overwrite was moving aside"
    if aside.is_dir():
        if (run_dir / "checkpoints" / "last.pt").is_file():
            shutil.rmtree(aside)
            return (
                f"training.overwrite=true: deleted the previous run's files kept in {aside} "
                "(the new run wrote its checkpoints/last.pt)"
            )
        os.replace(aside, restoring)  # decided: put back, even if its last.pt is back before a cut
    if not restoring.is_dir():
        return None
    names = (restoring / MANIFEST).read_text(encoding="utf-8").splitlines()
    for path in _run_files(run_dir):  # the new run's, or an old one that is back already
        if str(path.relative_to(run_dir)) not in names:
            path.unlink()
    for name in names:
        if (restoring / name).is_file():
            (run_dir / name).parent.mkdir(parents=True, exist_ok=True)
            os.replace(restoring / name, run_dir / name)
    _remove_empty_folders(run_dir, keep=restoring)
    shutil.rmtree(restoring)
    return (
        f"training.overwrite=true: put the previous run's {len(names)} files back in {run_dir} "
        "(the new run stopped before writing its checkpoints/last.pt)"
    )
