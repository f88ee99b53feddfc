"""A run is never lost: train.py refuses a run directory that holds a run (one line, exit 2, nothing
touched) unless training.resume continues it or training.overwrite replaces it; the default run
directory is runs/<the config file's name>."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import torch

import train
from fcn.config import load_config
from fcn.core.distributed import DistInfo
from fcn.training import rundir
from fcn.training.rundir import check_run_dir, refusal, replace_run
from tests.test_engine import toy_overrides

TINY = "training:\n  iters: 1\n  eval_every: 1\n  vis_images: 1\n"
"""tiny.yml: one iteration, one evaluation; its run directory is runs/tiny."""


@pytest.fixture(scope="module")
def toy(tmp_path_factory) -> Path:
    from fcn.data.toy import generate

    root = tmp_path_factory.mktemp("toy")
    generate(root, seed=0, n_train=4, n_val=2, size=32, workers=1)
    return root


def _args(toy: Path, *extra: str) -> list[str]:
    """Return train.py's command line: --config tiny.yml and the fast toy overrides, no run_dir."""
    overrides = [o for o in toy_overrides(toy, Path("unused")) if not o.startswith("training.run_dir=")]
    return ["--config", "tiny.yml", *overrides, *extra]


@pytest.fixture(scope="module")
def finished(tmp_path_factory, toy) -> Path:
    """A directory with tiny.yml and runs/tiny: a finished run that started in an empty runs/tiny."""
    base = tmp_path_factory.mktemp("first")
    (base / "tiny.yml").write_text(TINY)
    (base / "runs" / "tiny").mkdir(parents=True)  # an existing empty directory holds no run
    cwd = os.getcwd()
    os.chdir(base)
    try:
        assert train.main(_args(toy)) == 0
    finally:
        os.chdir(cwd)
    return base


@pytest.fixture
def workdir(finished, tmp_path, monkeypatch) -> Path:
    """A copy of `finished`, made the current directory."""
    work = tmp_path / "work"
    shutil.copytree(finished, work)
    monkeypatch.chdir(work)
    return work


def _snapshot(run: Path) -> dict[str, bytes]:
    return {str(p.relative_to(run)): p.read_bytes() for p in sorted(run.rglob("*")) if p.is_file()}


def test_the_first_run_writes_runs_and_the_config_files_name(workdir):
    run = workdir / "runs" / "tiny"
    assert (run / "checkpoints" / "last.pt").is_file() and (run / "metrics.jsonl").is_file()
    assert "run_dir: runs/tiny\n" in (run / "config.yml").read_text()


def test_a_second_identical_run_stops_before_any_work_and_touches_nothing(workdir, toy, capsys, monkeypatch):
    import fcn.data

    def scanned(*args, **kwargs):
        raise AssertionError("the dataset was listed before the run directory was checked")

    monkeypatch.setattr(fcn.data, "build_dataset", scanned)
    run = workdir / "runs" / "tiny"
    (workdir / "runs" / "tiny-2").mkdir()  # taken: the next free name is suggested
    before = _snapshot(run)
    capsys.readouterr()
    assert train.main(_args(toy)) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.splitlines() == [
        "error: training.run_dir runs/tiny already holds a run (config.yml, checkpoints/last.pt, "
        "checkpoints/best.pt, metrics.jsonl: 1 evaluation, the last at iteration 1, 1 TensorBoard "
        "event file); continue it with training.resume=auto, start another beside it with "
        "training.run_dir=runs/tiny-3, or replace it with training.overwrite=true"
    ]
    assert _snapshot(run) == before


def test_overwrite_replaces_the_run_and_keeps_other_files(workdir, toy):
    run = workdir / "runs" / "tiny"
    (run / "notes.txt").write_text("mine")
    (run / "checkpoints" / "keep.pt").write_bytes(b"mine")
    old_events = {p.name for p in run.glob("events.out.tfevents.*")}
    old_last = (run / "checkpoints" / "last.pt").read_bytes()
    assert train.main(_args(toy, "training.overwrite=true", "training.seed=1")) == 0
    assert (run / "notes.txt").read_text() == "mine" and (
        run / "checkpoints" / "keep.pt"
    ).read_bytes() == b"mine"
    events = {p.name for p in run.glob("events.out.tfevents.*")}
    assert len(events) == 1 and not events & old_events  # the old run's events are gone
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 1
    assert (run / "checkpoints" / "last.pt").read_bytes() != old_last
    assert "seed: 1\n" in (run / "config.yml").read_text()


def test_resume_auto_continues_the_run(workdir, toy, capsys):
    run = workdir / "runs" / "tiny"
    assert train.main(_args(toy, "training.resume=auto", "training.iters=2", "training.eval_every=2")) == 0
    out = capsys.readouterr().out
    assert "resumed from runs/tiny/checkpoints/last.pt at iteration 1" in out
    assert "; run directory runs/tiny\n" in out  # the start line
    assert torch.load(run / "checkpoints" / "last.pt", weights_only=True)["iteration"] == 2
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 2


def _cfg(run_dir: Path, *extra: str):
    return load_config(overrides=[f"training.run_dir={run_dir}", *extra])


def test_a_missing_or_empty_directory_or_one_of_other_files_takes_a_new_run(tmp_path):
    assert refusal(_cfg(tmp_path / "missing")) is None
    assert refusal(_cfg(tmp_path)) is None  # empty
    (tmp_path / "notes.txt").write_text("x")
    assert refusal(_cfg(tmp_path)) is None
    for marker in ("config.yml", "metrics.jsonl", "events.out.tfevents.1.host.2.0"):
        (tmp_path / marker).write_text("")
        assert "already holds a run" in refusal(_cfg(tmp_path))
        assert refusal(_cfg(tmp_path, "training.resume=auto")) is None
        assert refusal(_cfg(tmp_path, "training.overwrite=true")) is None
        (tmp_path / marker).unlink()
    (tmp_path / "checkpoints").mkdir()
    assert "checkpoints/ (no last.pt)" in refusal(_cfg(tmp_path))
    (tmp_path / "checkpoints").rmdir()
    (tmp_path / "file").write_text("")
    assert "is a file, not a directory" in refusal(_cfg(tmp_path / "file"))


def test_replace_run_deletes_what_a_run_wrote_and_nothing_else(tmp_path):
    written = [
        "config.yml",
        "metrics.jsonl",
        "events.out.tfevents.1.host.2.0",
        "vis/iter_0000001.png",
        "checkpoints/last.pt",
        "checkpoints/best.pt",
        "checkpoints/best.pt.0123456789abcdef.onnx",
        "checkpoints/.last.pt.77.abcd1234.tmp",
    ]
    others = ["notes.txt", "eval.json", "predictions/a.png", "vis/mine.png"]
    for name in written + others:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("x")
    assert sorted(replace_run(tmp_path)) == sorted(written)
    left = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file())
    assert left == sorted(others)
    assert not (tmp_path / "checkpoints").exists()  # left empty: removed


def test_under_torchrun_every_process_takes_rank_0s_verdict(tmp_path, monkeypatch):
    verdict = "training.run_dir x already holds a run (...)"
    asked = []

    def gather(obj):
        asked.append(obj)
        return [verdict, obj]

    monkeypatch.setattr(rundir.distributed, "all_gather_object", gather)
    cfg = _cfg(tmp_path / "nothing here")  # rank 1's own view: a free directory
    with pytest.raises(ValueError, match=r"already holds a run \(\.\.\.\)"):
        check_run_dir(cfg, DistInfo(rank=1, local_rank=1, world_size=2))
    assert asked == [None]  # rank 1 does not look: only rank 0 writes
    monkeypatch.setattr(rundir.distributed, "all_gather_object", lambda obj: [None, "rank 1's view"])
    check_run_dir(cfg, DistInfo(rank=0, world_size=2))  # rank 0 saw a free directory: no error
