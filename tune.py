"""Search hyper-parameters with Optuna: each trial a training run, pruned on eval.metric.

python tune.py --config predefined_configs/toy.yml --space space.yml --trials 20
python tune.py --config base.yml --space space.yml --trials 50 --study lr --storage postgresql://user@host/db

The study is named by --study (default tune-<the --space file's stem>: runs/tune-toy/, never train.py's
runs/toy/ of a config of the same stem) and kept in --storage (default sqlite:///runs/<study>/study.db): run the same command again
to resume it after a kill, or on several processes or machines at once. At the end: the table of
trials (printed, and runs/<study>/trials.csv) and runs/<study>/best.yml, which train.py takes.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path
from typing import Sequence

from fcn.cli import add_config_arguments
from fcn.core.errors import leave, run_phases


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Return the parsed command line."""
    from fcn.training.search import PRUNERS

    p = argparse.ArgumentParser(
        description="Search hyper-parameters with Optuna (pip install -r requirements.track.txt).",
        epilog="Example: python tune.py --config predefined_configs/toy.yml --space space.yml --trials 20",
    )
    add_config_arguments(p, "the defaults (default: config.yml)")
    p.add_argument(
        "--space",
        required=True,
        metavar="FILE",
        help="YAML: config key -> {type: float|int|categorical, ...}",
    )
    p.add_argument("--trials", type=int, required=True, metavar="N", help="trials the study holds when done")
    p.add_argument(
        "--study",
        metavar="NAME",
        help="study name, and runs/<NAME>/ (default: tune-<the --space file's stem>)",
    )
    p.add_argument(
        "--storage",
        metavar="URL",
        help="Optuna RDB storage, a SQLAlchemy URL (default: sqlite:///runs/<study>/study.db); "
        "its password is shown as ***",
    )
    p.add_argument(
        "--pruner", choices=PRUNERS, default="median", help="Optuna pruner on eval.metric (default: median)"
    )
    p.add_argument(
        "--startup-trials",
        type=int,
        default=5,
        metavar="N",
        help="median pruner: trials never pruned (default: 5)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the sampler (TPE; default: 0)")
    p.add_argument(
        "--heartbeat",
        type=int,
        default=60,
        metavar="S",
        help="seconds between a trial's heartbeats; a trial silent for twice that is a killed one: "
        "FAIL, run again once",
    )
    args = p.parse_args(argv)
    if args.trials < 1 or args.startup_trials < 0 or args.heartbeat < 1:
        p.error("--trials and --heartbeat must be >= 1, --startup-trials >= 0")
    return args


def default_study(space: str) -> str:
    """Return the study name without --study: tune-<space stem>. The tune- prefix keeps the study's
    runs/<study>/ apart from train.py's runs/<config stem>/ (search_spaces/toy.yml beside
    predefined_configs/toy.yml: the demo's runs/toy/ is never written into)."""
    return f"tune-{Path(space).stem}"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the study; return the exit code (2: a bad command line, config, space or --storage URL;
    1: no trial completed, or the storage cannot be opened; 130, 143, 75: a trial stopped by Ctrl-C,
    SIGTERM, SIGUSR1), each error as one line."""
    args = parse_args(argv)
    from fcn.config import load_config
    from fcn.training import search

    study_name = args.study or default_study(args.space)
    configs = args.config or ["config.yml"]

    def prepare() -> tuple[dict, str]:
        from fcn.training.trackers import check_installed

        check_installed(load_config(configs, args.overrides))  # the base config, before any trial
        space = search.load_space(args.space)
        try:
            import optuna
        except ImportError:
            raise ValueError(
                "tune.py needs Optuna: pip install optuna (or pip install -r requirements.track.txt)"
            ) from None
        optuna.logging.set_verbosity(optuna.logging.WARNING)  # tune.py says what each trial did
        warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)  # heartbeats
        storage = args.storage or f"sqlite:///{Path('runs', study_name, 'study.db')}"
        search.check_storage(storage)  # not a URL, or no driver: one line, exit 2, before any trial
        return space, storage

    def work(prepared: tuple[dict, str]) -> int:
        space, storage = prepared
        Path("runs", study_name).mkdir(parents=True, exist_ok=True)
        study = search.run_study(
            configs,
            args.overrides,
            space,
            args.trials,
            study_name,
            storage,
            pruner=args.pruner,
            startup_trials=args.startup_trials,
            seed=args.seed,
            heartbeat=args.heartbeat,
        )
        text, table = search.trial_table(study)
        print(text)
        Path("runs", study_name, "trials.csv").write_text(table, encoding="utf-8")
        if not any(t.state.name == "COMPLETE" for t in study.trials):
            print("error: no trial completed; the table's notes say why", file=sys.stderr)
            return 1
        path, line = search.best_config(study, configs, args.overrides, space)
        print(f"{line}; its config: {path} (python train.py --config {path})")
        return 0

    return run_phases(prepare, work)


if __name__ == "__main__":
    sys.exit(leave(main()))
