"""Preemption and elastic restarts on the CPU (gloo): SIGTERM and SIGUSR1 save last.pt at the end of
the iteration and exit 143 / 75, alone and under torchrun; a second signal stops at once; a worker
SIGKILLed under ``torchrun --max-restarts 1`` (one node, or two c10d agents on 127.0.0.1) is
restarted, resumes and ends bitwise equal to an uninterrupted run; a lost peer without restarts is
exit 1 with one ``error:`` line.

Each subprocess run executes this file as the worker (``-m tests.training.test_preempt child spec.json``): it swaps
``fcn.models.build_model`` for tests.helpers.TinyNet (with dropout, so that an inexact
resume of the RNGs shows), calls train.py's ``main`` and prints its exit code. Synchronisation is by
files, never by sleeping: a worker told to pause at an iteration writes ``paused.rankN`` and waits
for ``go``; the signal handler writes ``signal.rankN.K`` for the K-th signal it gets.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tests.helpers import TinyNet, finish, python_env, toy_overrides

REPO = Path(__file__).resolve().parents[2]
TIMEOUT = 300  # seconds for one launch on a busy 2-core machine: a hang fails, never blocks
TOTAL = 8  # iterations of every run

EXTRA = (  # everything that draws random numbers, so that an inexact resume shows
    f"training.iters={TOTAL}",
    "training.eval_every=4",
    "training.checkpoint_every=1",
    "training.deterministic=true",
    "training.vis_images=0",
    "data.batch_size=2",
    "data.val_batch_size=2",
    "data.mixing.cutmix_p=0.5",
    "data.transforms.hflip=true",
    "data.transforms.scale_min=0.75",
)


# ----------------------------------------------------------------------------- the worker side


def _child(spec_path: str) -> int:
    """Run train.py's main as the spec says, with the pause, kill and signal marks; return its code."""
    import fcn.models
    import fcn.training.loop
    import fcn.training.preemption
    import train

    spec = json.loads(Path(spec_path).read_text())
    marks = Path(spec["marks"])
    rank = int(os.environ.get("RANK", "0"))
    first_attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") == "0"
    fcn.models.build_model = lambda model_cfg: TinyNet(model_cfg.num_classes, dropout=0.5)

    handle = fcn.training.preemption.StopFlag._handle

    def handle_and_mark(self, signum, frame):
        count = len(list(marks.glob(f"signal.rank{rank}.*")))
        (marks / f"signal.rank{rank}.{count + 1}").touch()
        return handle(self, signum, frame)

    fcn.training.preemption.StopFlag._handle = handle_and_mark
    step = fcn.training.loop.train_one_step

    def hooked_step(*args, **kwargs):
        iteration = kwargs["iteration"]
        if first_attempt and iteration == spec.get("kill_at") and rank == spec.get("kill_rank"):
            os.kill(os.getpid(), signal.SIGKILL)  # a worker lost mid-run, its last.pt at kill_at
        if first_attempt and iteration == spec.get("pause_at"):
            (marks / f"paused.rank{rank}").touch()
            deadline = time.monotonic() + TIMEOUT
            while not (marks / "go").exists() and time.monotonic() < deadline:
                time.sleep(0.01)
        return step(*args, **kwargs)

    fcn.training.loop.train_one_step = hooked_step
    code = train.main(spec["overrides"])
    print(f"rank {rank} exit {code}", flush=True)
    return code


# ----------------------------------------------------------------------------- the test side


@pytest.fixture(scope="module")
def toy_root(tmp_path_factory) -> Path:
    from fcn.data.toy import generate

    root = tmp_path_factory.mktemp("toy")
    generate(root, seed=0, n_train=12, n_val=4, size=32)  # 12 / (2 x 2) = 3 steps an epoch
    return root


def _env() -> dict[str, str]:
    env = python_env(OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    env.pop("TORCH_DISABLE_SHARE_RDZV_TCP_STORE", None)  # torchrun's defaults, as a user has them
    return env


def _start(prefix: list[str], spec: dict, tmp: Path, name: str, env: dict | None = None) -> subprocess.Popen:
    """Start `prefix + [-m tests.training.test_preempt child spec]` with the spec written to tmp/name.json."""
    path = tmp / f"{name}.json"
    path.write_text(json.dumps(spec))
    return subprocess.Popen(
        [*prefix, "-m", "tests.training.test_preempt", "child", str(path)],
        cwd=REPO,
        env=env or _env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _finish(proc: subprocess.Popen) -> tuple[int, str]:
    return finish(proc, TIMEOUT)


def _wait_for(paths: list[Path], proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + TIMEOUT
    while not all(p.exists() for p in paths):
        if proc.poll() is not None:
            pytest.fail(f"exited {proc.returncode} before {paths} appeared:\n{proc.communicate()[0][-3000:]}")
        assert time.monotonic() < deadline, f"{paths} never appeared"
        time.sleep(0.02)


TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]


def _spec(root: Path, run_dir: Path, marks: Path, *extra: str, **hooks) -> dict:
    marks.mkdir(parents=True, exist_ok=True)
    overrides = toy_overrides(root, run_dir, *EXTRA, *extra)
    return {"overrides": overrides, "marks": str(marks), **hooks}


def _last(run_dir: Path) -> dict:
    return torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)


def _assert_bitwise_equal(a: Path, b: Path) -> None:
    x, y = _last(a), _last(b)
    assert x["iteration"] == y["iteration"] == TOTAL
    assert x["model"].keys() == y["model"].keys()
    for name, tensor in x["model"].items():
        assert torch.equal(tensor, y["model"][name]), name
    for state_x, state_y in zip(x["optimizer"]["state"].values(), y["optimizer"]["state"].values()):
        for key in state_x:
            assert torch.equal(state_x[key], state_y[key]), key


@pytest.fixture(scope="module")
def straight(toy_root, tmp_path_factory) -> Path:
    """The uninterrupted run of two processes under torchrun: the reference of the torchrun tests."""
    base = tmp_path_factory.mktemp("straight")
    code, out = _finish(_start(TORCHRUN, _spec(toy_root, base / "two", base / "marks"), base, "two"))
    assert code == 0, out[-3000:]
    return base / "two"


def _train_here(monkeypatch, overrides: list[str], at: int | None = None, signals: tuple = ()) -> int:
    """Run train.py's main in this process with the tiny net, sending itself `signals` during
    iteration `at` + 1 (as a scheduler would, between two iterations' ends); return the exit code."""
    import fcn.models
    import fcn.training.loop
    import train

    monkeypatch.setattr(fcn.models, "build_model", lambda c: TinyNet(c.num_classes, dropout=0.5))
    step = fcn.training.loop.train_one_step

    def hooked_step(*args, **kwargs):
        if kwargs["iteration"] == at:
            for signum in signals:
                os.kill(os.getpid(), signum)  # handled here, before the step's work
        return step(*args, **kwargs)

    monkeypatch.setattr(fcn.training.loop, "train_one_step", hooked_step)
    return train.main(overrides)


@pytest.mark.slow
@pytest.mark.parametrize("signum, code", [(signal.SIGTERM, 143), (signal.SIGUSR1, 75)])
def test_a_preemption_signal_saves_the_iteration_under_way_and_a_resume_equals_the_straight_run(
    toy_root, tmp_path, monkeypatch, capsys, signum, code
):
    assert _train_here(monkeypatch, toy_overrides(toy_root, tmp_path / "a", *EXTRA)) == 0
    run = tmp_path / "b"
    overrides = toy_overrides(toy_root, run, *EXTRA)
    # two signals at once are one event delivered twice (SLURM and torchrun both signal a worker)
    assert _train_here(monkeypatch, overrides, at=3, signals=(signum, signum)) == code
    out = capsys.readouterr().out
    last = run / "checkpoints" / "last.pt"
    name = signal.Signals(signum).name
    # the iteration under way when the signal came (the 4th) was finished and saved: none lost
    assert f"preempted by {name}: saved {last} at iteration 4 of {TOTAL}" in out
    assert _last(run)["iteration"] == 4
    assert _train_here(monkeypatch, [*overrides, "training.resume=auto"]) == 0
    assert f"resumed from {last} at iteration 4" in capsys.readouterr().out
    _assert_bitwise_equal(tmp_path / "a", run)


@pytest.mark.slow
def test_a_second_signal_stops_at_once(toy_root, tmp_path, monkeypatch, capsys):
    from fcn.training.preemption import StopFlag

    monkeypatch.setattr(StopFlag, "SAME_EVENT_S", 0.0)  # the second comes later than the first
    run = tmp_path / "run"
    overrides = toy_overrides(toy_root, run, *EXTRA)
    assert _train_here(monkeypatch, overrides, at=3, signals=(signal.SIGTERM, signal.SIGTERM)) == 143
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    assert "stopped at once by a second SIGTERM" in lines[0] and "training.resume=auto" in lines[0]
    assert _last(run)["iteration"] == 3  # the last save before the signals; the 4th iteration is lost


@pytest.mark.slow
def test_sigterm_to_torchrun_stops_every_rank_at_the_same_iteration_and_resumes_exactly(
    toy_root, tmp_path, straight
):
    run, marks = tmp_path / "run", tmp_path / "marks"
    proc = _start(TORCHRUN, _spec(toy_root, run, marks, pause_at=3), tmp_path, "victim")
    _wait_for([marks / f"paused.rank{r}" for r in range(2)], proc)
    proc.send_signal(signal.SIGTERM)  # as Kubernetes does; torchrun forwards it to its workers
    _wait_for([marks / f"signal.rank{r}.1" for r in range(2)], proc)
    (marks / "go").touch()
    code, out = _finish(proc)
    assert "rank 0 exit 143" in out and "rank 1 exit 143" in out, out[-3000:]
    # the iteration under way when the signal came (the 4th) was finished and saved: none lost
    last = run / "checkpoints" / "last.pt"
    assert f"preempted by SIGTERM: saved {last} at iteration 4 of {TOTAL}" in out, out[-3000:]
    assert out.count("preempted by") == 1  # rank 0 alone logs
    assert _last(run)["iteration"] == 4 and "error:" not in out

    resumed = _start(TORCHRUN, _spec(toy_root, run, marks, "training.resume=auto"), tmp_path, "resumed")
    code, out = _finish(resumed)
    assert code == 0, out[-3000:]
    assert f"resumed from {last} at iteration 4" in out
    _assert_bitwise_equal(straight, run)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_a_lost_peer_without_restarts_is_exit_1_with_one_error_line(toy_root, tmp_path):
    run, marks = tmp_path / "run", tmp_path / "marks"
    spec = _spec(toy_root, run, marks, "training.dist_timeout=120", kill_at=3, kill_rank=1)
    port = str(_free_port())
    procs = []
    for rank in (0, 1):  # two processes joined by hand, without torchrun: nobody restarts them
        env = dict(_env(), RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2")
        env.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=port)
        procs.append(_start([sys.executable], spec, tmp_path, f"rank{rank}", env=env))
    code1, _ = _finish(procs[1])
    code0, out = _finish(procs[0])
    assert code1 == -signal.SIGKILL
    lines = [line for line in out.splitlines() if line.startswith("error:")]
    assert code0 == 1 and len(lines) == 1 and "Traceback" not in out, out[-3000:]
    assert lines[0].startswith("error: rank 0: the process group failed after iteration 3")
    assert "training.resume=auto" in lines[0] and "alive" in lines[0]
    assert _last(run)["iteration"] == 3  # what was complete is kept


@pytest.mark.slow
def test_a_worker_killed_under_max_restarts_resumes_and_equals_the_uninterrupted_run(
    toy_root, tmp_path, straight
):
    run, marks = tmp_path / "run", tmp_path / "marks"
    spec = _spec(toy_root, run, marks, "training.resume=auto", kill_at=3, kill_rank=1)
    proc = _start([*TORCHRUN, "--max-restarts=1"], spec, tmp_path, "elastic")
    code, out = _finish(proc)
    assert code == 0, out[-3000:]
    assert f"resumed from {run / 'checkpoints' / 'last.pt'} at iteration 3" in out, out[-3000:]
    # the first round's rank 0 lost its peer and said so; the restarted round joined and finished
    errors = [line for line in out.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith(
        "error: rank 0: the process group failed after iteration 3"
    )
    assert "connectFullMesh" not in out and "rank 0 exit 0" in out and "rank 1 exit 0" in out
    _assert_bitwise_equal(straight, run)


@pytest.mark.slow
def test_two_c10d_agents_survive_a_lost_worker_and_end_bitwise_equal(toy_root, tmp_path, straight):
    run, marks = tmp_path / "run", tmp_path / "marks"
    spec = _spec(toy_root, run, marks, "training.resume=auto", kill_at=3, kill_rank=1)
    endpoint = f"127.0.0.1:{_free_port()}"
    agents = []
    for node in (0, 1):  # two "nodes" on one machine, each an agent with one worker
        launcher = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nnodes=2",
            "--nproc_per_node=1",
            "--rdzv_backend=c10d",
            f"--rdzv_endpoint={endpoint}",
            "--rdzv_id=preempt-test",
            "--max-restarts=1",
            "--local_addr=127.0.0.1",
        ]
        agents.append(_start(launcher, spec, tmp_path, f"node{node}"))
    results = [_finish(agent) for agent in agents]
    for code, out in results:
        assert code == 0, out[-3000:]
    out = "".join(o for _, o in results)
    assert f"resumed from {run / 'checkpoints' / 'last.pt'} at iteration 3" in out, out[-3000:]
    _assert_bitwise_equal(straight, run)


if __name__ == "__main__" and sys.argv[1:2] == ["child"]:
    sys.exit(_child(sys.argv[2]))
