"""tune.py (Optuna): trials are training runs in runs/<study>/trial-<n>, pruned on eval.metric; a bad
sampled value fails its trial and the study goes on; the study resumes after a SIGKILL with no trial
lost or counted twice and is shared by two processes; the best config retrains to its metric bitwise."""

from __future__ import annotations

import contextlib
import json
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.test_engine import python_env, toy_overrides

optuna = pytest.importorskip("optuna")

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def toy_root(tmp_path_factory):
    from fcn.data.toy import generate

    root = tmp_path_factory.mktemp("toy")
    generate(root, seed=0, n_train=8, n_val=2, size=32)
    return root


def _tune(cwd: Path, toy_root: Path, space: str, *args: str, iters: int = 4, wait: bool = True):
    (cwd / "space.yml").write_text(space)
    overrides = toy_overrides(
        toy_root, cwd / "unused", f"training.iters={iters}", "training.eval_every=2", "training.vis_images=0"
    )
    command = [
        sys.executable,
        str(REPO / "tune.py"),
        "--config",
        str(REPO / "config.yml"),
        "--space",
        "space.yml",
    ]
    process = subprocess.Popen(
        [*command, *args, *overrides],
        cwd=cwd,
        env=python_env(OMP_NUM_THREADS="1"),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    if not wait:
        return process
    out, _ = process.communicate(timeout=900)
    assert process.returncode == 0, out[-3000:]
    return out


def _study(cwd: Path, name: str):
    return optuna.load_study(study_name=name, storage=f"sqlite:///{cwd / 'runs' / name / 'study.db'}")


def _states(db: Path) -> list[str]:
    """Return the trials' states read from the study's SQLite file without writing to it ([] before
    tune.py has made it)."""
    try:
        with contextlib.closing(sqlite3.connect(f"{db.as_uri()}?mode=ro", uri=True)) as con:
            return [state for (state,) in con.execute("SELECT state FROM trials ORDER BY number")]
    except sqlite3.Error:
        return []


def _records(run_dir: Path) -> list[dict]:
    return [
        {k: v for k, v in json.loads(x).items() if k != "time"}
        for x in (run_dir / "metrics.jsonl").read_text().splitlines()
    ]


# The background weight 0 drives a trial away from the background (the toy's most frequent class):
# its mean IU at the first evaluation is far below that of a uniform-weight trial, so the median
# pruner stops it; two weights for four classes is a bad value, whose trials fail. The sampler's
# first trials are random draws from its seed: --seed 2 draws, in order, bad, uniform, bad, zero,
# uniform, uniform, zero, bad (fcn.training.search.suggest; the order does not depend on the CPU).
SPACE = """\
loss.class_weights: {type: categorical, choices: [[], [0.0, 1.0, 1.0, 1.0], [1.0, 1.0]]}
optimizer.weight_decay: {type: float, low: 1.0e-5, high: 1.0e-3, log: true}
"""


@pytest.mark.slow
def test_eight_trials_prune_fail_and_the_best_config_retrains_to_its_metric_bitwise(toy_root, tmp_path):
    out = _tune(
        tmp_path, toy_root, SPACE, "--trials", "8", "--study", "s", "--startup-trials", "2", "--seed", "2"
    )
    study = _study(tmp_path, "s")
    states = [t.state.name for t in study.trials]
    assert len(states) == 8 and "PRUNED" in states and "COMPLETE" in states and "FAIL" in states, out[-3000:]
    for t in study.trials:
        if t.state.name == "FAIL":
            assert json.loads(t.params["loss.class_weights"]) == [1.0, 1.0]
            assert "loss.class_weights has 2 values but model.num_classes=4" in t.user_attrs["error"]
        else:
            run_dir = tmp_path / t.user_attrs["run_dir"]
            assert run_dir == tmp_path / "runs" / "s" / f"trial-{t.number}"
            assert (run_dir / "config.yml").is_file()
        if t.state.name == "PRUNED":
            assert list(t.intermediate_values) == [2] and json.loads(t.params["loss.class_weights"])[0] == 0.0
    table = (tmp_path / "runs" / "s" / "trials.csv").read_text().splitlines()
    assert table[0].startswith("trial,state,value,loss.class_weights") and len(table) == 9

    best = study.best_trial
    assert f"best: trial {best.number}, eval.metric=mean_iu {best.value:.6g}" in out
    retrain = subprocess.run(
        [sys.executable, str(REPO / "train.py"), "--config", "runs/s/best.yml"],
        cwd=tmp_path,
        env=python_env(OMP_NUM_THREADS="1"),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert retrain.returncode == 0, retrain.stderr[-2000:]
    again = _records(tmp_path / "runs" / "s" / "best")
    assert again == _records(tmp_path / best.user_attrs["run_dir"])  # every metric and mean loss, bit for bit
    assert again[-1]["mean_iou"] == best.value


@pytest.mark.slow
def test_a_killed_study_resumes_with_no_trial_lost_or_counted_twice(toy_root, tmp_path):
    space = "optimizer.weight_decay: {type: float, low: 1.0e-5, high: 1.0e-3, log: true}\n"
    args = ("--trials", "3", "--study", "k", "--pruner", "none", "--heartbeat", "1")
    first = _tune(tmp_path, toy_root, space, *args, iters=2, wait=False)
    db = tmp_path / "runs" / "k" / "study.db"
    deadline = time.time() + 600
    while time.time() < deadline:  # kill it in its second trial, the first one finished
        states = _states(db)
        if states[:2] == ["COMPLETE", "RUNNING"]:
            break
        assert first.poll() is None, first.communicate()[0][-3000:]
        time.sleep(0.5)
    first.send_signal(signal.SIGKILL)
    first.communicate()
    time.sleep(2.5)  # the trial's heartbeat is stale after twice --heartbeat
    _tune(tmp_path, toy_root, space, *args, iters=2)
    trials = _study(tmp_path, "k").trials
    killed = trials[1]
    assert killed.state.name == "FAIL"
    retries = [t for t in trials if t.system_attrs.get("failed_trial") == killed.number]
    assert len(retries) == 1 and retries[0].state.name == "COMPLETE" and retries[0].params == killed.params
    assert sorted(t.state.name for t in trials if t is not killed) == ["COMPLETE"] * 3
    assert len(trials) == 4


@pytest.mark.slow
def test_two_processes_share_one_sqlite_study(toy_root, tmp_path):
    space = "optimizer.weight_decay: {type: float, low: 1.0e-5, high: 1.0e-3, log: true}\n"
    args = ("--trials", "4", "--study", "w", "--pruner", "none")
    (tmp_path / "runs" / "w").mkdir(parents=True)
    workers = [
        _tune(tmp_path, toy_root, space, *args, "--seed", str(seed), iters=2, wait=False) for seed in (0, 1)
    ]
    for worker in workers:
        out, _ = worker.communicate(timeout=900)
        assert worker.returncode == 0, out[-3000:]
    trials = _study(tmp_path, "w").trials
    assert (
        all(t.state.name == "COMPLETE" for t in trials) and 4 <= len(trials) <= 5
    )  # a race may start one more
    assert len({t.user_attrs["worker"] for t in trials}) == 2
    run_dirs = [t.user_attrs["run_dir"] for t in trials]
    assert len(set(run_dirs)) == len(trials) and all(
        (tmp_path / d / "metrics.jsonl").is_file() for d in run_dirs
    )


def test_the_shipped_space_loads_and_every_draw_is_a_valid_config():
    from fcn.config import load_config
    from fcn.training.search import load_space, suggest

    space = load_space(REPO / "search_spaces" / "toy.yml")
    study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=0))
    for _ in range(4):
        values = suggest(study.ask(), space)
        overrides = [f"{key}={json.dumps(value)}" for key, value in values.items()]
        cfg = load_config([str(REPO / "config.yml"), str(REPO / "predefined_configs" / "toy.yml")], overrides)
        assert [dict(term) for term in cfg.loss.terms] == values["loss.terms"]  # a list, read back from JSON
        assert cfg.data.transforms.crop_size in (64, 80, 96) and 1e-4 <= cfg.optimizer.lr <= 1e-2


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("optimizer.lrr: {type: float, low: 0.1, high: 1.0}", "optimizer.lrr: no such config key"),
        ("optimizer.lr: {type: float, low: 0.1}", "optimizer.lr: type float needs numbers low <= high"),
        (
            "optimizer.lr: {type: normal, low: 0.1, high: 1.0}",
            "optimizer.lr: needs type: float | int | categorical",
        ),
        ("optimizer.lr: {type: float, low: 0.0, high: 1.0, log: true}", "log: true needs low > 0"),
        ("model.arch: {type: categorical, choices: []}", "needs a non-empty list of choices"),
        ("model.arch: {type: categorical, choice: [fcn8s]}", "unknown ['choice'] for type categorical"),
        ("[1, 2]", "must be a mapping of config keys"),
    ],
)
def test_a_bad_space_is_one_line_naming_the_file_and_key(tmp_path, text, message):
    from fcn.training.search import load_space

    (tmp_path / "space.yml").write_text(text + "\n")
    with pytest.raises(ValueError, match="--space .*space.yml: ") as error:
        load_space(tmp_path / "space.yml")
    assert message in str(error.value) and "\n" not in str(error.value)
