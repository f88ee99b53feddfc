"""tune.py (Optuna): trials are training runs in runs/<study>/trial-<n>, pruned on eval.metric; a bad
sampled value fails its trial and the study goes on; the study resumes after a SIGKILL with no trial
lost or counted twice and is shared by two processes; a trial stopped by Ctrl-C or SIGTERM is FAIL
once, run again once and counted once; the best config retrains to its metric bitwise, and best.yml
is written from the study alone; a bad --storage is one line, its password never shown."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fcn.core.errors import Stopped
from tests.helpers import python_env, toy_overrides

optuna = pytest.importorskip("optuna")

REPO = Path(__file__).resolve().parents[2]


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


WEIGHT_DECAY_YML = "optimizer.weight_decay: {type: float, low: 1.0e-5, high: 1.0e-3, log: true}\n"
WEIGHT_DECAY = {"optimizer.weight_decay": {"type": "float", "low": 1.0e-5, "high": 1.0e-3, "log": True}}


def _run_study(cwd: Path, toy_root: Path, trials: int, name: str = "s"):
    """Run a study of the toy data in this process (3 iterations a trial, evaluated at each) in cwd."""
    from fcn.training.search import run_study

    overrides = toy_overrides(
        toy_root, cwd / "unused", "training.iters=3", "training.eval_every=1", "training.vis_images=0"
    )
    storage = f"sqlite:///{cwd / 'runs' / name / 'study.db'}"
    return run_study(
        [str(REPO / "config.yml")], overrides, WEIGHT_DECAY, trials, name, storage, pruner="none", heartbeat=1
    )


def _sigterm_in_training(train):  # the first SIGTERM: training stops at the next iteration's end
    sent = []

    def sigterm(record: dict) -> None:
        if not sent:  # once: a second SIGTERM a second later would stop the run at once
            sent.append(record["iteration"])
            os.kill(os.getpid(), signal.SIGTERM)

    return lambda run, callbacks=(): train(run, [*callbacks, sigterm])


def _raises(exc):  # a second Ctrl-C (or one outside training), a second SIGTERM
    def first_trial(run, callbacks=()):
        raise exc

    return first_trial


@pytest.mark.slow
@pytest.mark.parametrize(
    ("stop", "code", "why"),
    [
        (_sigterm_in_training, 143, "SIGTERM at iteration 2"),
        (lambda train: _raises(KeyboardInterrupt()), 130, "Ctrl-C"),
        (
            lambda train: _raises(__import__("fcn.core.errors").core.errors.Stopped("a second", 143)),
            143,
            "SIGTERM",
        ),
    ],
    ids=["sigterm-in-training", "keyboard-interrupt", "second-sigterm"],
)
def test_a_stopped_trial_is_fail_once_run_again_once_and_counted_once(
    toy_root, tmp_path, monkeypatch, stop, code, why
):
    from fcn.training import loop
    from fcn.training.search import count, retried_number

    monkeypatch.chdir(tmp_path)
    train = loop.train
    monkeypatch.setattr(loop, "train", stop(train))
    try:
        _run_study(tmp_path, toy_root, 2)
        raised = None
    except BaseException as exc:  # noqa: BLE001 - what the stopped process ends with
        raised = exc
    assert isinstance(raised, Stopped) and raised.code == code, repr(raised)
    assert "trial 0 stopped" in str(raised) and "queued to run again" in str(raised)
    trials = _study(tmp_path, "s").trials
    assert [t.state.name for t in trials] == ["FAIL", "WAITING"]  # told FAIL by the stopped process
    assert trials[0].user_attrs["stopped"] == why and "stopped" not in trials[1].user_attrs
    assert retried_number(trials[1]) == 0 and trials[1].params == trials[0].params

    time.sleep(2.5)  # twice --heartbeat: a trial left RUNNING would now be stale and queued once more
    monkeypatch.setattr(loop, "train", train)
    study = _run_study(tmp_path, toy_root, 2)
    trials = study.trials
    assert [t.state.name for t in trials] == ["FAIL", "COMPLETE", "COMPLETE"]
    assert [retried_number(t) for t in trials] == [None, 0, None] and trials[1].params == trials[0].params
    assert count(study) == 2


def test_a_stopped_retry_is_fail_and_not_run_a_third_time(toy_root, tmp_path, monkeypatch):
    from fcn.training import loop
    from fcn.training.search import count, retried_number, trial_table

    monkeypatch.chdir(tmp_path)
    train = loop.train
    monkeypatch.setattr(loop, "train", _raises(KeyboardInterrupt()))
    for _ in range(2):  # trial 0, then its retry, trial 1
        with pytest.raises(Stopped) as stopped:
            _run_study(tmp_path, toy_root, 2)
    assert "trial 1 stopped (Ctrl-C): recorded FAIL, not run again (a retry)" in str(stopped.value)
    monkeypatch.setattr(loop, "train", train)
    study = _run_study(tmp_path, toy_root, 2)
    trials = study.trials
    assert [t.state.name for t in trials] == ["FAIL", "FAIL", "COMPLETE"]  # 2: a new draw
    assert [retried_number(t) for t in trials] == [None, 0, None] and count(study) == 2
    notes = [row.split(",")[-1] for row in trial_table(study)[1].splitlines()[1:]]
    assert notes == ["stopped: Ctrl-C", "runs trial 0 again; stopped: Ctrl-C", ""]


@pytest.mark.slow
def test_tune_py_sent_sigterm_records_its_trial_fail_and_runs_it_again_once(toy_root, tmp_path):
    args = ("--trials", "1", "--study", "t", "--pruner", "none", "--heartbeat", "1")
    first = _tune(tmp_path, toy_root, WEIGHT_DECAY_YML, *args, iters=100000, wait=False)
    db = tmp_path / "runs" / "t" / "study.db"
    deadline = time.time() + 120
    run_dir = tmp_path / "runs" / "t" / "trial-0"
    while not (run_dir / "config.yml").is_file():  # its values drawn; set up or training: either stops alike
        assert first.poll() is None and time.time() < deadline, first.communicate()[0][-3000:]
        time.sleep(0.2)
    first.send_signal(signal.SIGTERM)
    out, _ = first.communicate(timeout=120)
    assert first.returncode == 143, out[-3000:]
    assert "error: trial 0 stopped (SIGTERM" in out and "recorded FAIL, queued to run again" in out
    assert _states(db) == ["FAIL", "WAITING"]
    time.sleep(2.5)  # a trial left RUNNING would be stale now
    _tune(tmp_path, toy_root, WEIGHT_DECAY_YML, *args, iters=2)
    trials = _study(tmp_path, "t").trials
    assert [t.state.name for t in trials] == ["FAIL", "COMPLETE"], [t.state.name for t in trials]
    assert trials[1].system_attrs["failed_trial"] == 0 and trials[1].params == trials[0].params


def test_best_yml_holds_the_best_trials_config_and_no_path_into_its_run(toy_root, tmp_path, monkeypatch):
    from fcn.config import load_config, to_dict
    from fcn.training.search import best_config

    (tmp_path / "a").mkdir()
    monkeypatch.chdir(tmp_path / "a")
    _run_study(tmp_path / "a", toy_root, 2)
    elsewhere = tmp_path / "b"  # another machine: the study's database, none of machine a's runs/
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    study = optuna.load_study(
        study_name="s", storage=f"sqlite:///{tmp_path / 'a' / 'runs' / 's' / 'study.db'}"
    )
    path, line = best_config(study)
    best = study.best_trial
    assert path == Path("runs/s/best.yml") and line.startswith(
        f"best: trial {best.number}, eval.metric=mean_iu"
    )
    text = path.read_text()
    assert "trial-" not in text and str(tmp_path / "a") not in text
    cfg = load_config([str(path)])
    assert cfg.optimizer.weight_decay == best.params["optimizer.weight_decay"]
    assert cfg.training.run_dir == "runs/s/best"
    own = {
        "training": {"run_dir": "runs/s/best", "resume": "", "overwrite": False},
        "logging": {"run_name": ""},
    }
    expected = best.user_attrs["config"]
    for section, values in own.items():
        expected[section].update(values)
    assert to_dict(cfg) == expected  # the trial's whole resolved config, but where it trains


def test_best_yml_of_a_trial_without_a_stored_config_is_rebuilt_from_the_base_config(
    toy_root, tmp_path, monkeypatch
):
    from fcn.config import load_config
    from fcn.training.search import best_config, load_space

    monkeypatch.chdir(tmp_path)
    (tmp_path / "space.yml").write_text(SPACE)
    space = load_space(tmp_path / "space.yml")
    study = optuna.create_study(study_name="old", direction="maximize")
    study.add_trial(  # as an older tune.py left it: its config only in runs/old/trial-0, not here
        optuna.trial.create_trial(
            params={"loss.class_weights": "[0.0, 1.0, 1.0, 1.0]", "optimizer.weight_decay": 1e-4},
            distributions={
                "loss.class_weights": optuna.distributions.CategoricalDistribution(
                    [json.dumps(c) for c in space["loss.class_weights"]["choices"]]
                ),
                "optimizer.weight_decay": optuna.distributions.FloatDistribution(1e-5, 1e-3, log=True),
            },
            value=0.5,
            user_attrs={"run_dir": "runs/old/trial-0"},
        )
    )
    overrides = toy_overrides(toy_root, tmp_path / "unused", "training.iters=4")
    path, _ = best_config(study, [str(REPO / "config.yml")], overrides, space)
    cfg = load_config([str(path)])
    assert list(cfg.loss.class_weights) == [0.0, 1.0, 1.0, 1.0] and cfg.optimizer.weight_decay == 1e-4
    assert cfg.training.iters == 4 and cfg.training.run_dir == "runs/old/best"


def _main(tmp_path: Path, toy_root: Path, capsys, *args: str) -> tuple[int, str, str]:
    import tune

    (tmp_path / "space.yml").write_text(WEIGHT_DECAY_YML)
    overrides = toy_overrides(toy_root, tmp_path / "unused")
    code = tune.main(
        ["--config", str(REPO / "config.yml"), "--space", "space.yml", "--trials", "1", *args, *overrides]
    )
    out, err = capsys.readouterr()
    return code, out, err


def test_a_storage_that_is_not_a_url_is_one_line_and_exit_2(toy_root, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    code, out, err = _main(tmp_path, toy_root, capsys, "--storage", "notaurl")
    assert code == 2 and out == ""
    assert err.splitlines() == [
        "error: --storage notaurl: not a database URL; "
        "a storage URL looks like sqlite:///runs/study.db or postgresql://user@host/db"
    ]
    assert not (tmp_path / "runs").exists()  # found before any work


def test_a_storage_urls_password_is_never_shown(toy_root, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    code, out, err = _main(tmp_path, toy_root, capsys, "--storage", "postgresql://user:s3cret@127.0.0.1:1/db")
    # 2 where no PostgreSQL driver is installed; else 1: nothing listens on port 1
    assert code in (1, 2) and len(err.splitlines()) == 1, err
    assert (
        err.startswith("error: --storage postgresql://user:***@127.0.0.1:1/db: ")
        and "s3cret" not in out + err
    )


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://user:s3cret@host/db", "postgresql://user:***@host/db"),
        ("mysql+pymysql://user:p%40ss@host:3306/db", "mysql+pymysql://user:***@host:3306/db"),
        ("postgresql://user:s3cret@host:noport/db", "postgresql://user:***@host:noport/db"),  # not a URL
        ("postgresql://user@host/db", "postgresql://user@host/db"),
        ("sqlite:///runs/s/study.db", "sqlite:///runs/s/study.db"),
    ],
)
def test_a_storage_url_is_shown_with_its_password_masked(url, shown):
    from fcn.training.search import masked

    assert masked(url) == shown


def test_the_default_study_is_not_the_run_directory_of_a_config_of_the_same_stem():
    import importlib.util

    from fcn.config import load_config

    spec = importlib.util.spec_from_file_location("tune_script", REPO / "tune.py")
    tune = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tune)
    study = tune.default_study("search_spaces/toy.yml")
    assert study == "tune-toy"
    demo_run = Path(load_config([str(REPO / "predefined_configs" / "toy.yml")]).training.run_dir)
    assert Path("runs", study) != demo_run
