"""A run is never lost: train.py refuses a run directory that holds a run (one line, exit 2, nothing
touched) unless training.resume continues it or training.overwrite replaces it; the default run
directory is runs/<the config file's name>. Of two runs started together into one directory one
trains, the other stops with one line; a killed run's claim blocks nobody; an overwriting run that
fails before its first checkpoint leaves the old run as it was."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import train
from fcn.config import load_config
from fcn.core.distributed import DistInfo
from fcn.training import rundir
from fcn.training.rundir import check_run_dir, refusal, replace_run, settle
from tests.helpers import python_env, toy_overrides

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


WRITTEN = [
    "config.yml",
    "metrics.jsonl",
    "events.out.tfevents.1.host.2.0",
    "vis/iter_0000001.png",
    "checkpoints/last.pt",
    "checkpoints/best.pt",
    "checkpoints/best.pt.0123456789abcdef.onnx",
    "checkpoints/.last.pt.77.abcd1234.tmp",
]
OTHERS = ["notes.txt", "eval.json", "predictions/a.png", "vis/mine.png"]


def _files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def _old_run(root: Path) -> dict[str, bytes]:
    for name in WRITTEN + OTHERS:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(f"old {name}")
    return _snapshot(root)


def test_replace_run_moves_what_a_run_wrote_aside_and_nothing_else(tmp_path):
    _old_run(tmp_path)
    assert sorted(replace_run(tmp_path)) == sorted(WRITTEN)
    assert [name for name in _files(tmp_path) if not name.startswith(".replaced/")] == sorted(OTHERS)
    aside = tmp_path / ".replaced"
    assert _files(aside) == sorted([*WRITTEN, "replaced.txt"])
    assert (aside / "checkpoints" / "last.pt").read_text() == "old checkpoints/last.pt"
    assert not (tmp_path / "checkpoints").exists()  # left empty: removed


def test_settle_puts_the_old_run_back_unless_the_new_one_wrote_last_pt(tmp_path):
    before = _old_run(tmp_path)
    replace_run(tmp_path)
    new = [
        "config.yml",
        "events.out.tfevents.9.host.9.0",
        "checkpoints/.last.pt.9.ffff.tmp",
        "vis/iter_0000002.png",
    ]
    for name in new:  # what a new run writes before its first checkpoint
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("new")
    assert "put the previous run's 8 files back" in settle(tmp_path)
    assert _snapshot(tmp_path) == before  # byte for byte, and nothing of the new run's left
    assert settle(tmp_path) is None

    replace_run(tmp_path)
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "last.pt").write_text("new")
    assert "deleted the previous run's files" in settle(tmp_path)
    assert _files(tmp_path) == sorted([*OTHERS, "checkpoints/last.pt"])


def test_settle_finishes_a_put_back_or_a_move_that_was_cut_short(tmp_path):
    before = _old_run(tmp_path)
    replace_run(tmp_path)
    (tmp_path / "config.yml").write_text("new")
    os.replace(tmp_path / ".replaced", tmp_path / ".restoring")  # decided, then killed mid-way:
    (tmp_path / "checkpoints").mkdir()
    os.replace(tmp_path / ".restoring" / "checkpoints" / "last.pt", tmp_path / "checkpoints" / "last.pt")
    settle(tmp_path)  # the old last.pt is back already: still a put-back, not a deletion
    assert _snapshot(tmp_path) == before

    (tmp_path / ".replacing" / "checkpoints").mkdir(parents=True)  # killed while moving aside
    os.replace(tmp_path / "checkpoints" / "best.pt", tmp_path / ".replacing" / "checkpoints" / "best.pt")
    settle(tmp_path)
    assert _snapshot(tmp_path) == before


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


CLAIMANT = """
import os, sys, time
from pathlib import Path
from fcn.config import load_config
from fcn.core.distributed import DistInfo
from fcn.training.rundir import check_run_dir, release
run_dir, go, done = (Path(a) for a in sys.argv[1:4])
cfg = load_config(overrides=[f"training.run_dir={run_dir}", *sys.argv[4:]])
(go.parent / f"ready-{os.getpid()}").touch()
while not go.exists():
    time.sleep(0.01)
try:
    check_run_dir(cfg, DistInfo())
except ValueError as exc:
    print(exc)
    sys.exit(2)
print("claimed", flush=True)
while not done.exists():  # the run's life
    time.sleep(0.01)
release(run_dir)
"""


def _claimant(run_dir: Path, sync: Path, *overrides: str) -> subprocess.Popen:
    """Start a process that claims run_dir (as train.py's setup does) once sync/go exists and holds
    it until sync/done does."""
    return subprocess.Popen(
        [sys.executable, "-c", CLAIMANT, str(run_dir), str(sync / "go"), str(sync / "done"), *overrides],
        env=python_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_for(path: Path, timeout: float = 60.0) -> None:
    deadline = time.time() + timeout
    while not path.exists():
        assert time.time() < deadline, f"{path} did not appear"
        time.sleep(0.02)


def test_of_two_runs_started_together_into_one_new_directory_exactly_one_claims_it(tmp_path):
    run_dir, sync = tmp_path / "runs" / "new", tmp_path / "sync"
    sync.mkdir()
    procs = [_claimant(run_dir, sync) for _ in range(2)]
    for p in procs:
        _wait_for(sync / f"ready-{p.pid}")  # both imported and waiting
    (sync / "go").touch()  # both look at once
    deadline = time.time() + 60
    while all(p.poll() is None for p in procs) and time.time() < deadline:
        time.sleep(0.02)  # the loser stops at once; the winner holds on (on the old code: both did)
    (sync / "done").touch()
    results = [(p.wait(timeout=60), *p.communicate()) for p in procs]
    assert sorted(code for code, _, _ in results) == [0, 2], results
    (refused,) = [out for code, out, _ in results if code == 2]
    assert refused.splitlines() == [refused.strip()] and refused.startswith(
        f"training.run_dir {run_dir} is in use by another training run (pid "
    )
    assert f"training.run_dir={run_dir}-2" in refused and "training.resume=auto" in refused
    assert "training.overwrite=true" in refused
    assert not run_dir.exists()  # released: its .lock removed, and the folder it made and left empty


def test_a_run_in_use_is_refused_and_a_killed_runs_claim_does_not_block_resume(workdir, toy, capsys):
    run, sync = workdir / "runs" / "tiny", workdir / "sync"
    sync.mkdir()
    (sync / "go").touch()
    holder = _claimant(run, sync, "training.resume=auto")
    try:
        assert holder.stdout.readline() == "claimed\n"
        before = _snapshot(run)
        capsys.readouterr()
        assert train.main(_args(toy, "training.resume=auto")) == 2
        out, err = capsys.readouterr()
        assert err.startswith(
            f"error: training.run_dir runs/tiny is in use by another training run (pid {holder.pid} "
        )
        assert len(err.splitlines()) == 1
        assert _snapshot(run) == before
    finally:
        holder.send_signal(signal.SIGKILL)  # no release: its .lock is left behind, unlocked
        holder.wait(timeout=60)
    assert f"pid {holder.pid} " in (run / ".lock").read_text()
    assert train.main(_args(toy, "training.resume=auto", "training.iters=2", "training.eval_every=2")) == 0
    assert "resumed from runs/tiny/checkpoints/last.pt at iteration 1" in capsys.readouterr().out
    assert not (run / ".lock").exists()


def _broken_toy(toy: Path, where: Path) -> Path:
    """Return a copy of the toy data whose training images are text files named .jpg."""
    shutil.copytree(toy, where)
    images = sorted((where / "JPEGImages").glob("train_*.jpg"))
    assert images
    for image in images:
        image.write_text("not a JPEG")
    return where


def test_an_overwrite_that_fails_on_bad_data_leaves_the_old_run_as_it_was(workdir, toy, capsys):
    run = workdir / "runs" / "tiny"
    before = _snapshot(run)
    broken = _broken_toy(toy, workdir.parent / "broken")
    capsys.readouterr()
    assert train.main(_args(broken, "training.overwrite=true", "training.seed=1")) == 1
    out, err = capsys.readouterr()
    errors = [line for line in err.splitlines() if line.startswith("error: ")]  # the rest: tqdm's bar
    assert len(errors) == 1 and "train_00001.jpg" in errors[0] and "Traceback" not in err
    assert "put the previous run's 6 files back in runs/tiny" in out
    assert _snapshot(run) == before  # last.pt, best.pt, config, metrics, events: byte-identical
    assert sorted(p.name for p in run.iterdir()) == sorted(
        [
            "checkpoints",
            "config.yml",
            "metrics.jsonl",
            "vis",
            *(p.name for p in run.glob("events.out.tfevents.*")),
        ]
    )  # no .replaced, no .lock, nothing new


def test_an_overwrite_keeps_the_old_run_until_the_new_one_wrote_its_checkpoint(workdir, toy):
    from fcn.training import loop

    run_dir = workdir / "runs" / "tiny"
    old = {name: (run_dir / "checkpoints" / name).read_bytes() for name in ("last.pt", "best.pt")}
    cfg = load_config(["tiny.yml"], [*_args(toy, "training.overwrite=true", "training.seed=1")[2:]])
    run = loop.setup(cfg)
    aside = run_dir / ".replaced" / "checkpoints"
    assert {name: (aside / name).read_bytes() for name in old} == old  # kept while nothing is saved
    assert not (run_dir / "checkpoints" / "last.pt").exists()
    loop.train(run)
    assert not (run_dir / ".replaced").exists() and not (run_dir / ".lock").exists()
    for name, data in old.items():
        assert (run_dir / "checkpoints" / name).read_bytes() != data  # the new run's


def test_the_next_claim_puts_back_an_overwrite_killed_before_its_first_checkpoint(workdir, toy, capsys):
    run = workdir / "runs" / "tiny"
    before = _snapshot(run)
    replace_run(run)  # as a killed overwriting run left it: its config written, no checkpoint
    (run / "config.yml").write_text("the killed run's")
    capsys.readouterr()
    assert train.main(_args(toy, "training.resume=auto", "training.iters=2", "training.eval_every=2")) == 0
    out = capsys.readouterr().out
    assert "put the previous run's 6 files back" in out
    assert "resumed from runs/tiny/checkpoints/last.pt at iteration 1" in out
    assert (run / "checkpoints" / "best.pt").read_bytes() == before["checkpoints/best.pt"]  # not bettered
    assert not (run / ".replaced").exists()
