"""The run directory: what a run leaves in it, and the rule that a new run never writes over an old one.

A run writes into training.run_dir its config.yml, checkpoints/last.pt and best.pt, TensorBoard's
events.out.tfevents.*, metrics.jsonl and vis/iter_*.png (fcn.training.loop, fcn.training.validate).
A directory holding a config.yml, a checkpoints/ folder, a metrics.jsonl or an event file holds a
run. A new run (training.resume unset) into one stops before any work, with one line that says what
is there and the three ways on: continue it (training.resume=auto), start beside it
(training.run_dir=<dir>-2, the first free name) or replace it (training.overwrite=true, which
deletes those files and no others once the new run is ready to write: replace_run). That is
Hugging Face Trainer's refusal of a non-empty output_dir, with the way out spelled in the message.

Under torchrun only rank 0 writes, so rank 0's view of the directory decides for every process.
"""

from __future__ import annotations

import json
from pathlib import Path

from omegaconf import DictConfig

from fcn.core import distributed

CHECKPOINTS = ("last.pt", "best.pt")


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


def refusal(cfg: DictConfig) -> str | None:
    """Return why training.run_dir cannot take this run (one line), or None when it can: it is free
    or empty, holds a run that training.resume continues or training.overwrite replaces."""
    t = cfg.training
    run_dir = Path(t.run_dir)
    if not t.run_dir:
        return "training.run_dir is empty; name the run's directory (e.g. training.run_dir=runs/mine)"
    if run_dir.exists() and not run_dir.is_dir():
        return f"training.run_dir={run_dir} is a file, not a directory; choose another training.run_dir"
    if t.resume or t.overwrite or not holds_run(run_dir):
        return None
    return (
        f"training.run_dir {run_dir} already holds a run ({describe_run(run_dir)}); continue it with "
        f"training.resume=auto, start another beside it with training.run_dir={free_name(run_dir)}, "
        "or replace it with training.overwrite=true"
    )


def check_run_dir(cfg: DictConfig, info: distributed.DistInfo) -> None:
    """Raise ValueError (exit 2: nothing has been done) when the run may not write into
    training.run_dir; under torchrun every process raises rank 0's verdict (its files are rank 0's)."""
    problem = None
    if info.is_primary:
        try:
            problem = refusal(cfg)
        except OSError as exc:  # an unreadable directory: the same verdict on every process
            problem = f"training.run_dir {cfg.training.run_dir}: {exc}"
    if info.enabled:
        with distributed.backend_failures("before training started"):
            problem = distributed.all_gather_object(problem)[0]
    if problem:
        raise ValueError(problem)


def replace_run(run_dir: Path) -> list[str]:
    """Delete the files a run wrote into run_dir (config.yml, metrics.jsonl, events, vis/iter_*.png,
    checkpoints/last.pt and best.pt with their ONNX exports and temporary files) and no others;
    return their names, relative to run_dir. A folder left empty is removed."""
    files = [run_dir / "config.yml", run_dir / "metrics.jsonl", *_events(run_dir)]
    files += sorted((run_dir / "vis").glob("iter_*.png"))
    ckpts = run_dir / "checkpoints"
    for name in CHECKPOINTS:
        files += [ckpts / name, *sorted(ckpts.glob(f"{name}.*.onnx")), *sorted(ckpts.glob(f".{name}.*.tmp"))]
    removed = []
    for path in files:
        if path.is_file():
            path.unlink()
            removed.append(str(path.relative_to(run_dir)))
    for folder in (run_dir / "vis", run_dir / "checkpoints"):
        if folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()
    return removed
