"""Preemption and elastic restarts on the CPU (gloo): SIGTERM and SIGUSR1 save last.pt at the end of
the iteration and exit 143 / 75, alone and under torchrun; a second signal stops at once; a worker
SIGKILLed under ``torchrun --max-restarts 1`` (one node, or two c10d agents on 127.0.0.1) is
restarted, resumes and ends bitwise equal to an uninterrupted run; a lost peer without restarts is
exit 1 with one ``error:`` line.

Each run executes this file as the worker (``-m tests.test_preempt child spec.json``): it swaps
``fcn.models.build_model`` for tests.test_distributed.TinyNet (with dropout, so that an inexact
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

from tests.test_distributed import TinyNet
from tests.test_engine import python_env, toy_overrides

REPO = Path(__file__).resolve().parent.parent
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
    import fcn.engine
    import fcn.models
    import train

    spec = json.loads(Path(spec_path).read_text())
    marks = Path(spec["marks"])
    rank = int(os.environ.get("RANK", "0"))
    first_attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") == "0"
    fcn.models.build_model = lambda model_cfg: TinyNet(model_cfg.num_classes, dropout=0.5)

    handle = fcn.engine._StopFlag._handle

    def handle_and_mark(self, signum, frame):
        count = len(list(marks.glob(f"signal.rank{rank}.*")))
        (marks / f"signal.rank{rank}.{count + 1}").touch()
        return handle(self, signum, frame)

    fcn.engine._StopFlag._handle = handle_and_mark
    step = fcn.engine.train_one_step

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

    fcn.engine.train_one_step = hooked_step
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
    """Start `prefix + [-m tests.test_preempt child spec]` with the spec written to tmp/name.json."""
    path = tmp / f"{name}.json"
    path.write_text(json.dumps(spec))
    return subprocess.Popen(
        [*prefix, "-m", "tests.test_preempt", "child", str(path)],
        cwd=REPO,
        env=env or _env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _finish(proc: subprocess.Popen) -> tuple[int, str]:
    try:
        out, _ = proc.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
        pytest.fail(f"did not finish within {TIMEOUT} s:\n{out[-3000:]}")
    return proc.returncode, out.replace("\r", "\n")


def _wait_for(paths: list[Path], proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + TIMEOUT
    while not all(p.exists() for p in paths):
        if proc.poll() is not None:
            pytest.fail(f"exited {proc.returncode} before {paths}:\n{proc.communicate()[0][-3000:]}")
        assert time.monotonic() < deadline, f"{paths} never appeared"
        time.sleep(0.02)


TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
PYTHON = [sys.executable]


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
def straight(toy_root, tmp_path_factory) -> dict[str, Path]:
    """Uninterrupted runs, one process and two under torchrun: the references."""
    base = tmp_path_factory.mktemp("straight")
    runs = {}
    for name, prefix in (("one", PYTHON), ("two", TORCHRUN)):
        proc = _start(prefix, _spec(toy_root, base / name, base / f"{name}.marks"), base, name)
        code, out = _finish(proc)
        assert code == 0, out[-3000:]
        runs[name] = base / name
    return runs


def _preempt_and_resume(prefix, toy_root, tmp_path, signum: int, reference: Path, ranks: int) -> str:
    """Pause every rank before iteration 4, signal the launcher, let the ranks go; check the save and
    the exit, resume, check the end; return the preempted run's output."""
    run, marks = tmp_path / "run", tmp_path / "marks"
    proc = _start(prefix, _spec(toy_root, run, marks, pause_at=3), tmp_path, "victim")
    _wait_for([marks / f"paused.rank{r}" for r in range(ranks)], proc)
    proc.send_signal(signum)  # torchrun forwards it to its workers
    _wait_for([marks / f"signal.rank{r}.1" for r in range(ranks)], proc)
    (marks / "go").touch()
    code, out = _finish(proc)
    name, expected = signal.Signals(signum).name, {signal.SIGTERM: 143, signal.SIGUSR1: 75}[signum]
    for r in range(ranks):
        assert f"rank {r} exit {expected}" in out, out[-3000:]
    if prefix is PYTHON:
        assert code == expected
    # the iteration under way when the signal came (the 4th) was finished and saved: none lost
    last = run / "checkpoints" / "last.pt"
    assert f"preempted by {name}: saved {last} at iteration 4 of {TOTAL}" in out, out[-3000:]
    assert out.count("preempted by") == 1  # rank 0 alone logs
    assert _last(run)["iteration"] == 4
    assert "error:" not in out and "Traceback" not in out.split("rank 0 exit")[0]

    resumed = _start(prefix, _spec(toy_root, run, marks, "training.resume=auto"), tmp_path, "resumed")
    code, out_resumed = _finish(resumed)
    assert code == 0, out_resumed[-3000:]
    assert f"resumed from {last} at iteration 4" in out_resumed
    _assert_bitwise_equal(reference, run)
    return out


@pytest.mark.slow
def test_sigterm_saves_the_iteration_under_way_and_a_resume_equals_the_uninterrupted_run(
    toy_root, tmp_path, straight
):
    _preempt_and_resume(PYTHON, toy_root, tmp_path, signal.SIGTERM, straight["one"], ranks=1)


@pytest.mark.slow
def test_sigusr1_is_the_same_with_the_requeue_exit_code(toy_root, tmp_path, straight):
    _preempt_and_resume(PYTHON, toy_root, tmp_path, signal.SIGUSR1, straight["one"], ranks=1)


@pytest.mark.slow
def test_sigterm_to_torchrun_stops_every_rank_at_the_same_iteration_and_resumes_exactly(
    toy_root, tmp_path, straight
):
    _preempt_and_resume(TORCHRUN, toy_root, tmp_path, signal.SIGTERM, straight["two"], ranks=2)


@pytest.mark.slow
def test_a_second_sigterm_stops_at_once(toy_root, tmp_path):
    run, marks = tmp_path / "run", tmp_path / "marks"
    proc = _start(PYTHON, _spec(toy_root, run, marks, pause_at=3), tmp_path, "victim")
    _wait_for([marks / "paused.rank0"], proc)
    proc.send_signal(signal.SIGTERM)
    _wait_for([marks / "signal.rank0.1"], proc)
    # a signal within SAME_EVENT_S of the first is the first delivered twice; this one is not
    from fcn.engine import _StopFlag

    first = (marks / "signal.rank0.1").stat().st_mtime
    while time.time() < first + _StopFlag.SAME_EVENT_S + 0.5:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)  # the run is still paused: only a stop at once ends it
    code, out = _finish(proc)
    lines = [line for line in out.splitlines() if line.startswith("error:")]
    assert code == 143 and len(lines) == 1 and "Traceback" not in out, out[-3000:]
    assert "stopped at once by a second SIGTERM" in lines[0] and "training.resume=auto" in lines[0]
    assert _last(run)["iteration"] == 3  # the last save before the signals; the 4th iteration is lost
    assert "preempted by" not in out


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
        procs.append(_start(PYTHON, spec, tmp_path, f"rank{rank}", env=env))
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
    assert "connectFullMesh" not in out and "error:" not in out
    _assert_bitwise_equal(straight["two"], run)


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
    _assert_bitwise_equal(straight["two"], run)


if __name__ == "__main__" and sys.argv[1:2] == ["child"]:
    sys.exit(_child(sys.argv[2]))
