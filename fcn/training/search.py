"""Hyper-parameter search with Optuna (tune.py): each trial a normal training run, pruned on the metric.

The space is a YAML mapping of config keys to Optuna distributions::

    optimizer.lr: {type: float, low: 1.0e-4, high: 1.0e-2, log: true}
    data.transforms.crop_size: {type: int, low: 64, high: 128, step: 32}
    model.arch: {type: categorical, choices: [fcn32s, fcn8s]}
    loss.class_weights: {type: categorical, choices: [[], inverse_frequency]}

Each trial trains the base config with its sampled values into runs/<study>/trial-<n> (its own
config.yml, checkpoints, metrics.jsonl, trackers), reports eval.metric at every evaluation to the
trial (``trial.report``, through fit's on_evaluation) and stops when the pruner says so (Optuna's
Lightning and Hugging Face integrations do the same); its value is the last evaluation's metric. A
trial whose config or training fails (a bad sampled value, out of memory) is recorded FAIL with the
error line, and the study goes on.

The study lives in an RDB storage (SQLite file by default; a server database URL shares it between
machines), so that any number of tune.py processes work on it together and a killed one is
resumed by running tune.py again: its trial's heartbeat stops, and the next process to start a
trial marks it FAIL and runs its parameters again (RetryHeartbeatStaleTrialCallback), so no trial is lost
nor counted twice. --trials N is the study's size, not a number to add: a process stops when N
trials are finished or running (a race of two processes can start one more).
"""

from __future__ import annotations

import csv
import io
import json
import os
import random
import socket
import time
from pathlib import Path
from typing import Any, Callable, Sequence

from omegaconf import OmegaConf

from fcn import config as fcn_config
from fcn.config.schema import EVAL_METRICS
from fcn.core.errors import EXIT_INTERRUPTED, Stopped, exit_code

SPACE_TYPES = ("float", "int", "categorical")
PRUNERS = ("median", "hyperband", "none")


def load_space(path: str | Path) -> dict[str, dict]:
    """Return the search space of a YAML file ({config key: distribution}); ValueError naming the
    file and the key for anything else (an unknown key, a type, bounds)."""
    import yaml

    try:
        space = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ValueError(f"--space {path}: {' '.join(str(exc).split())}") from None
    if not isinstance(space, dict) or not space:
        raise ValueError(f"--space {path}: must be a mapping of config keys to {{type: ...}}")
    defaults = OmegaConf.structured(fcn_config.Config)
    missing = object()
    for key, dist in space.items():
        where = f"--space {path}: {key}"
        if OmegaConf.select(defaults, str(key), default=missing) is missing:
            raise ValueError(f"{where}: no such config key (config.yml lists them)")
        if not isinstance(dist, dict) or dist.get("type") not in SPACE_TYPES:
            raise ValueError(f"{where}: needs type: {' | '.join(SPACE_TYPES)}")
        kind = dist["type"]
        allowed = {"type", "choices"} if kind == "categorical" else {"type", "low", "high", "log", "step"}
        if set(dist) - allowed:
            raise ValueError(f"{where}: unknown {sorted(set(dist) - allowed)} for type {kind}")
        if kind == "categorical":
            if not isinstance(dist.get("choices"), list) or not dist["choices"]:
                raise ValueError(f"{where}: type categorical needs a non-empty list of choices")
            continue
        number = int if kind == "int" else (int, float)
        low, high = dist.get("low"), dist.get("high")
        if not isinstance(low, number) or not isinstance(high, number) or isinstance(low, bool) or low > high:
            raise ValueError(f"{where}: type {kind} needs numbers low <= high, got low={low} high={high}")
        if dist.get("log") and low <= 0:
            raise ValueError(f"{where}: log: true needs low > 0, got {low}")
        if dist.get("log") and dist.get("step") is not None:
            raise ValueError(f"{where}: log and step cannot be combined (Optuna)")
    return space


def suggest(trial: Any, space: dict[str, dict]) -> dict[str, Any]:
    """Return {config key: value} sampled for a trial from the space."""
    values = {}
    for key, d in space.items():
        if d["type"] == "categorical":
            # Optuna's choices are None, bool, int, float or str; a list or mapping (loss.terms,
            # loss.class_weights) is offered as its JSON text and read back
            plain = all(c is None or isinstance(c, (bool, int, float, str)) for c in d["choices"])
            if plain:
                values[key] = trial.suggest_categorical(key, d["choices"])
            else:
                values[key] = json.loads(
                    trial.suggest_categorical(key, [json.dumps(c) for c in d["choices"]])
                )
        elif d["type"] == "int":
            values[key] = trial.suggest_int(
                key, d["low"], d["high"], step=d.get("step") or 1, log=bool(d.get("log"))
            )
        else:
            values[key] = trial.suggest_float(
                key, d["low"], d["high"], step=d.get("step"), log=bool(d.get("log"))
            )
    return values


def metric_value(record: dict, metric: str) -> float:
    """Return eval.metric of an evaluation record (metrics.jsonl's line): the EMA's when there is one."""
    return float((record.get("ema") or record)[EVAL_METRICS[metric]])


def retried_number(trial: Any) -> int | None:
    """Return the number of the trial a FrozenTrial runs again (a killed or interrupted one), else None."""
    from optuna.storages import RetryHeartbeatStaleTrialCallback

    number = RetryHeartbeatStaleTrialCallback.retried_trial_number(trial)
    return number if number is not None else trial.user_attrs.get("retry_of")


def count(study: Any) -> int:
    """Return the trials that count toward --trials: finished or running, less those run again."""
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    again = {retried_number(t) for t in trials} - {None}
    live = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL, TrialState.RUNNING)
    return sum(t.state in live and t.number not in again for t in trials)


def _override(key: str, value: Any) -> str:
    return f"{key}={json.dumps(value)}"  # JSON is YAML: strings quoted, lists as lists


def run_study(
    configs: Sequence[str],
    overrides: Sequence[str],
    space: dict[str, dict],
    trials: int,
    study_name: str,
    storage: str,
    *,
    pruner: str = "median",
    startup_trials: int = 5,
    seed: int | None = 0,
    heartbeat: int = 60,
    log: Callable[[str], None] = print,
) -> Any:
    """Run trials of the study until it holds `trials` (see the module doc); return the study."""
    import optuna
    from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback, fail_stale_trials
    from sqlalchemy.exc import SQLAlchemyError

    from fcn.training.loop import setup, train

    root = Path("runs") / study_name
    pruners = {
        "median": lambda: optuna.pruners.MedianPruner(n_startup_trials=startup_trials),
        "hyperband": lambda: optuna.pruners.HyperbandPruner(),
        "none": lambda: optuna.pruners.NopPruner(),
    }
    for attempt in range(5):
        try:
            rdb = RDBStorage(
                storage,
                heartbeat_interval=heartbeat,
                heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=3),
            )
            study = optuna.create_study(
                study_name=study_name,
                storage=rdb,
                load_if_exists=True,
                direction="maximize",
                sampler=optuna.samplers.TPESampler(seed=seed),
                pruner=pruners[pruner](),
            )
            break
        except SQLAlchemyError:  # processes started together race to make the tables: the loser waits
            if attempt == 4:
                raise
            time.sleep(1.0 + random.random())
    worker = f"{socket.gethostname()}:{os.getpid()}"

    def objective(trial: optuna.Trial) -> float:
        values = suggest(trial, space)
        run_dir = root / f"trial-{trial.number}"
        again = retried_number(next(t for t in study.get_trials(deepcopy=False) if t.number == trial.number))
        trial.set_user_attr("run_dir", str(run_dir))
        trial.set_user_attr("worker", worker)
        log(
            f"trial {trial.number}{f' (trial {again} again)' if again is not None else ''}: "
            + " ".join(_override(k, v) for k, v in values.items())
        )
        extra = [f"training.run_dir={run_dir}", f"logging.run_name={study_name}/trial-{trial.number}"]
        try:
            cfg = fcn_config.load_config(
                list(configs), [*overrides, *(_override(k, v) for k, v in values.items()), *extra]
            )
            metric = cfg.eval.metric

            def report(record: dict) -> bool:
                trial.report(metric_value(record, metric), record["iteration"])
                return trial.should_prune()

            run = setup(cfg)
            summary = train(run, [report])
        except Exception as exc:  # noqa: BLE001 - a failed trial is recorded, the study goes on
            message = " ".join(str(exc).split()) or type(exc).__name__
            log(f"error: trial {trial.number}: {message}")
            trial.set_user_attr("error", message[:500])
            return float("nan")  # Optuna records the trial FAIL, without a traceback
        if summary["iteration"] < run.total and not summary["stopped_early"]:  # Ctrl-C, SIGTERM, SIGUSR1
            study.enqueue_trial(values, user_attrs={"retry_of": trial.number})  # run again on resume
            code = exit_code(summary["signal"]) or EXIT_INTERRUPTED
            raise Stopped(
                f"trial {trial.number} stopped at iteration {summary['iteration']}; run tune.py again to go on",
                code,
            )
        if trial.should_prune():
            raise optuna.TrialPruned(f"pruned at iteration {summary['iteration']}")
        return metric_value(summary["metrics"], metric)

    def said(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        value = "" if trial.value is None else f" {trial.value:.6g}"
        log(f"trial {trial.number}: {trial.state.name}{value}")

    root.mkdir(parents=True, exist_ok=True)
    while True:
        fail_stale_trials(study)  # a killed process's trial: FAIL, and its parameters queued again
        if count(study) >= trials:
            break
        study.optimize(objective, n_trials=1, catch=(Exception,), callbacks=[said])
    return study


def best_config(study: Any) -> tuple[Path, str]:
    """Write runs/<study>/best.yml, the best trial's resolved config training into runs/<study>/best
    (python train.py --config runs/<study>/best.yml); return (its path, a line saying what it is)."""
    best = study.best_trial
    root = Path("runs") / study.study_name
    cfg = fcn_config.load_config(
        [best.user_attrs["run_dir"] + "/config.yml"],
        [
            f"training.run_dir={root / 'best'}",
            "training.resume=",
            "training.overwrite=false",
            "logging.run_name=",
        ],
    )
    line = f"best: trial {best.number}, eval.metric={cfg.eval.metric} {best.value:.6g}"
    text = f"# {line} (study {study.study_name})\n" + fcn_config.to_yaml(cfg)
    from fcn.core.files import atomic_write

    path = root / "best.yml"
    atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))
    return path, line


def trial_table(study: Any) -> tuple[str, str]:
    """Return the trials as (an aligned text table, CSV): number, state, value, parameters, error."""
    keys = sorted({k for t in study.trials for k in t.params})
    rows = [["trial", "state", "value", *keys, "note"]]
    for t in study.trials:
        note = t.user_attrs.get("error", "")
        again = retried_number(t)
        if again is not None:
            note = f"runs trial {again} again" + (f"; {note}" if note else "")
        value = "" if t.value is None else f"{t.value:.6g}"
        params = [
            f"{t.params[k]:.4g}" if isinstance(t.params.get(k), float) else str(t.params.get(k, ""))
            for k in keys
        ]
        rows.append([str(t.number), t.state.name, value, *params, note])
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    text = "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)) + "  " + r[-1] for r in rows)
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows(rows)
    return text, buffer.getvalue()
