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
machines), so that any number of tune.py processes work on it together, and a stopped one is
resumed by running tune.py again. A trial is run again at most once, by one mechanism,
RetryHeartbeatStaleTrialCallback(max_retry=1), whichever way it was stopped:

- Ctrl-C, SIGTERM or SIGUSR1: the stopped process itself records the trial FAIL (``study.tell``; FAIL
  and not PRUNED, as Optuna's own optimize records a Ctrl-C: a pruned trial's last value is an
  observation the sampler learns from, an interrupted one has none) with the note `stopped`, queues
  it again through that callback, and exits with the signal's code. A trial told FAIL is never stale,
  so the heartbeat cannot queue it a second time.
- SIGKILL, a lost machine: the trial stays RUNNING until its heartbeat is stale (twice --heartbeat);
  then the next process to start a trial marks it FAIL and the callback queues it
  (fail_stale_trials). Only one process can move a trial from RUNNING to FAIL (the storage refuses
  the second), and only the one that did queues the retry.

A retry that is stopped again is FAIL and not queued a third time. --trials N is the study's size,
not a number to add: a process stops when N trials are finished or running (count: a trial that was
run again is not counted, its retry is; a race of two processes can start one more).

Each trial keeps its whole resolved config in its user_attrs (`config`), so best.yml is written from
the study alone, on any machine that opens it, with no path into another machine's run directory.
A storage URL is shown with its password as *** (masked), in every message and file.
"""

from __future__ import annotations

import contextlib
import csv
import io
import itertools
import json
import os
import random
import re
import signal
import socket
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Iterator, NoReturn, Sequence

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


MAX_RETRY = 1
"""Times a stopped or killed trial is run again (RetryHeartbeatStaleTrialCallback's max_retry)."""

STORAGE_HINT = "a storage URL looks like sqlite:///runs/study.db or postgresql://user@host/db"


def masked(url: str) -> str:
    """Return the storage URL with its password as *** (as SQLAlchemy prints a URL): the only form
    of it tune.py prints or writes."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        return make_url(url).render_as_string(hide_password=True)
    except (ArgumentError, ValueError):  # not a URL (a bad port): still hide what stands as user:pw@
        return re.sub(r"(://[^:/@]*:)[^/]*@", r"\1***@", url)


def check_storage(url: str) -> None:
    """Raise ValueError (one line, naming the masked URL) unless url is a database URL that
    SQLAlchemy, which Optuna's RDBStorage opens it with, knows and has the driver of."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError

    where = f"--storage {masked(url)}"
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):
        raise ValueError(f"{where}: not a database URL; {STORAGE_HINT}") from None
    try:
        parsed.get_dialect().import_dbapi()
    except NoSuchModuleError:
        raise ValueError(f"{where}: no such database kind '{parsed.drivername}'; {STORAGE_HINT}") from None
    except ImportError as exc:  # postgresql:// needs psycopg, mysql+pymysql:// PyMySQL
        raise ValueError(
            f"{where}: the database driver for {parsed.drivername} is not installed ({exc}); pip install it"
        ) from None


def _storage_error(url: str, exc: Exception) -> RuntimeError:
    """Return the one-line error of a storage that cannot be opened, the URL and message masked."""
    from sqlalchemy.engine import make_url

    text = str(getattr(exc, "orig", None) or exc).splitlines()  # the driver's own message, if any
    message = " ".join((text[0] if text else type(exc).__name__).split())
    password = make_url(url).password
    if password:  # a driver may quote its connection string
        message = message.replace(str(password), "***")
    return RuntimeError(f"--storage {masked(url)}: cannot open the study: {message}")


def retried_number(trial: Any) -> int | None:
    """Return the number of the trial a FrozenTrial runs again (a stopped or killed one), else None."""
    import optuna
    from optuna.storages import RetryHeartbeatStaleTrialCallback

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return RetryHeartbeatStaleTrialCallback.retried_trial_number(trial)


def retry(study: Any, trial: Any) -> bool:
    """Queue a stopped or killed trial (a FrozenTrial, FAIL) to run again with its values, unless it
    is itself a retry (MAX_RETRY); return whether it was queued. The one way a trial is run again:
    the heartbeat's stale-trial callback, and what a stopped process calls on its own trial."""
    from optuna.storages import RetryHeartbeatStaleTrialCallback

    if len(RetryHeartbeatStaleTrialCallback.retry_history(trial)) >= MAX_RETRY:
        return False
    trial.user_attrs = {k: v for k, v in trial.user_attrs.items() if k != "stopped"}  # the retry's own
    RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRY)(study, trial)
    return True


def count(study: Any) -> int:
    """Return the trials that count toward --trials: finished or running, less those run again (so a
    stopped trial and its retry count once)."""
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    again = {retried_number(t) for t in trials} - {None}
    live = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL, TrialState.RUNNING)
    return sum(t.state in live and t.number not in again for t in trials)


def _override(key: str, value: Any) -> str:
    return f"{key}={json.dumps(value)}"  # JSON is YAML: strings quoted, lists as lists


@contextlib.contextmanager
def _signals_stop() -> Iterator[None]:
    """Within it, SIGTERM and SIGUSR1 raise Stopped (with their exit codes) where training's own
    handlers (fcn.training.preemption.StopFlag) are not installed: while a trial is set up, between
    trials. Their default kills the process at once, which would leave its trial RUNNING until the
    heartbeat found it stale."""
    from fcn.training.preemption import PREEMPTION_SIGNALS

    def handle(signum: int, frame: Any) -> None:
        name = signal.Signals(signum).name
        raise Stopped(f"stopped by {name}", exit_code(name))

    previous = {}
    for name in PREEMPTION_SIGNALS:
        signum = getattr(signal, name, None)  # no SIGUSR1 on Windows
        if signum is not None:
            with contextlib.suppress(ValueError):  # not the main thread: no handler
                previous[signum] = signal.signal(signum, handle)
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _open_study(storage: str, study_name: str, heartbeat: int, sampler: Any, pruner: Any) -> Any:
    """Return the study in the storage, made if missing, whose stale trials are run again (retry);
    RuntimeError, one line with the URL masked, when the storage cannot be opened."""
    import optuna
    from optuna.storages import RDBStorage
    from sqlalchemy.exc import SQLAlchemyError

    for tries in itertools.count(1):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # heartbeats
                rdb = RDBStorage(storage, heartbeat_interval=heartbeat, heartbeat_stale_trial_callback=retry)
            return optuna.create_study(
                study_name=study_name,
                storage=rdb,
                load_if_exists=True,
                direction="maximize",
                sampler=sampler,
                pruner=pruner,
            )
        except SQLAlchemyError as exc:  # processes started together race to make the tables: the loser waits
            if tries == 5:
                raise _storage_error(storage, exc) from None
            time.sleep(1.0 + random.random())


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
    """Run trials of the study until it holds `trials` (see the module doc); return the study.
    A trial stopped by Ctrl-C, SIGTERM or SIGUSR1 ends the run with Stopped (its exit code)."""
    import optuna
    from optuna.storages import fail_stale_trials
    from optuna.trial import TrialState
    from sqlalchemy.exc import SQLAlchemyError

    from fcn.training.loop import setup, train

    root = Path("runs") / study_name
    root.mkdir(parents=True, exist_ok=True)  # the default SQLite file's folder
    pruners = {
        "median": lambda: optuna.pruners.MedianPruner(n_startup_trials=startup_trials),
        "hyperband": lambda: optuna.pruners.HyperbandPruner(),
        "none": lambda: optuna.pruners.NopPruner(),
    }
    study = _open_study(
        storage, study_name, heartbeat, optuna.samplers.TPESampler(seed=seed), pruners[pruner]()
    )
    worker = f"{socket.gethostname()}:{os.getpid()}"

    def stop(trial: optuna.Trial, why: str, code: int) -> NoReturn:
        """Record the stopped trial FAIL, queue it to run again (retry), and raise Stopped."""
        queued = None
        try:
            trial.set_user_attr("stopped", why)
            queued = retry(study, study.tell(trial, state=TrialState.FAIL))
        except (ValueError, optuna.exceptions.UpdateFinishedTrialError, SQLAlchemyError):
            pass  # another process found it stale first (and queued it), or the storage failed: left
            # RUNNING, the trial is then the heartbeat's to fail and queue, as a killed one is
        what = {True: "recorded FAIL, queued to run again", False: "recorded FAIL, not run again (a retry)"}
        raise Stopped(
            f"trial {trial.number} stopped ({why}): {what.get(queued, 'left to its heartbeat')}; "
            "run tune.py again to go on",
            code,
        )

    def objective(trial: optuna.Trial) -> float:
        try:
            outcome = attempt(trial)
        except KeyboardInterrupt:  # outside training, or a second Ctrl-C in it
            stop(trial, "Ctrl-C", EXIT_INTERRUPTED)
        except Stopped as exc:  # outside training (_signals_stop), or a second SIGTERM / SIGUSR1 in it
            names = {exit_code(name): name for name in ("SIGTERM", "SIGUSR1")}
            stop(trial, names.get(exc.code, "a signal"), exc.code)
        if isinstance(outcome, tuple):  # training stopped at an iteration's end by a signal
            stop(trial, *outcome)
        return outcome

    def attempt(trial: optuna.Trial) -> float | tuple[str, int]:
        """Return the trial's value, or (why, exit code) when a signal stopped its training."""
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
            trial.set_user_attr("config", fcn_config.to_dict(cfg))  # best.yml is written from the study alone
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
            signal_name = summary["signal"]  # None: Ctrl-C, whose run ends with code 0 in train.py
            return f"{signal_name or 'Ctrl-C'} at iteration {summary['iteration']}", (
                exit_code(signal_name) or EXIT_INTERRUPTED
            )
        if trial.should_prune():
            raise optuna.TrialPruned(f"pruned at iteration {summary['iteration']}")
        return metric_value(summary["metrics"], metric)

    def said(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        value = "" if trial.value is None else f" {trial.value:.6g}"
        log(f"trial {trial.number}: {trial.state.name}{value}")

    with _signals_stop(), warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # heartbeats, retries
        fail_stale_trials(study)  # a killed process's trial: FAIL, and its parameters queued again
        log(f"study {study_name} in {masked(storage)}: {count(study)} of {trials} trials")
        while count(study) < trials:
            study.optimize(objective, n_trials=1, catch=(Exception,), callbacks=[said])
            fail_stale_trials(study)
    return study


def best_config(
    study: Any,
    configs: Sequence[str] = (),
    overrides: Sequence[str] = (),
    space: dict[str, dict] | None = None,
) -> tuple[Path, str]:
    """Write runs/<study>/best.yml, the best trial's whole resolved config training into
    runs/<study>/best (python train.py --config runs/<study>/best.yml); return (its path, a line
    saying what it is).

    The config is the one the study keeps in the trial (user_attrs `config`), so any machine that
    opens the study writes the same file, with no path into the run directory of the machine that
    ran the trial. A trial of an older tune.py, which kept none, is rebuilt from the base config
    (configs, overrides) and its parameters, read through the space."""
    best = study.best_trial
    root = Path("runs") / study.study_name
    own = [
        f"training.run_dir={root / 'best'}",
        "training.resume=",
        "training.overwrite=false",
        "logging.run_name=",
    ]
    if "config" in best.user_attrs:
        source = f"trial {best.number} of study {study.study_name}"
        # Read as data, as a checkpoint's config is (it may come from another machine's database):
        # its strings stay literal in best.yml, and a dataset class it names is not imported here.
        cfg = fcn_config.config_from_dict(best.user_attrs["config"], source, overrides=own, datasets=False)
    else:
        import optuna

        values = suggest(optuna.trial.FixedTrial(best.params), space or {})
        cfg = fcn_config.load_config(
            list(configs), [*overrides, *(_override(k, v) for k, v in values.items()), *own]
        )
    line = f"best: trial {best.number}, eval.metric={cfg.eval.metric} {best.value:.6g}"
    text = f"# {line} (study {study.study_name})\n"
    for key, ds in fcn_config.remote_code(fcn_config.to_dict(cfg)):
        text += (
            f"# {key}.name={ds['name']} names code that train.py imports: check it is yours before training\n"
        )
    text += fcn_config.to_yaml(cfg)
    from fcn.core.files import atomic_write

    path = root / "best.yml"
    root.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))
    return path, line


def trial_table(study: Any) -> tuple[str, str]:
    """Return the trials as (an aligned text table, CSV): number, state, value, parameters, error."""
    keys = sorted({k for t in study.trials for k in t.params})
    rows = [["trial", "state", "value", *keys, "note"]]
    for t in study.trials:
        note = t.user_attrs.get("error", "")
        if t.user_attrs.get("stopped"):
            note = f"stopped: {t.user_attrs['stopped']}"
        elif t.state.name == "FAIL" and not note:  # failed by the heartbeat (fail_stale_trials)
            note = "no heartbeat: its process was killed"
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
