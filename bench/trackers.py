"""What logging.trackers costs a run: for each tracker (TensorBoard, MLflow with a local SQLite store,
W&B offline), the time to start it, one training log (3 scalars, every training.log_every
iterations) and one evaluation's log (the toy's 9 scalars and the three pictures at 400 x 400),
through the fcn.training.trackers.Trackers object the loop calls, in a temporary directory.

    python -m bench.trackers                 # MLflow and W&B only where installed (requirements.track.txt)
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.common import write_table
from fcn.config import load_config
from fcn.config.schema import TRACKERS
from fcn.training.trackers import Trackers

ROUNDS = 20


def median_ms(fn, rounds: int) -> tuple[float, float]:
    """Return (median, max) of fn(i) for i in 1..rounds, in milliseconds."""
    times = []
    for i in range(1, rounds + 1):
        start = time.perf_counter()
        fn(i)
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times), 1e3 * max(times)


def main(argv: list[str] | None = None) -> None:
    # no flags: a parser all the same, so that --help answers instead of running the benchmark
    argparse.ArgumentParser(prog="python -m bench.trackers", description=__doc__.splitlines()[0]).parse_args(
        argv
    )
    import importlib.util

    os.environ["WANDB_MODE"] = "offline"  # nothing leaves the machine
    os.environ.setdefault("WANDB_SILENT", "true")
    rng = np.random.default_rng(0)
    picture = rng.integers(0, 255, (400, 400, 3), dtype=np.uint8)
    evaluation = {f"val/{k}": 0.5 for k in ("pixel_acc", "mean_acc", "mean_iou", "fwavacc")}
    evaluation |= {f"val_iou/{c}": 0.5 for c in ("background", "circle", "square", "triangle")}
    evaluation["train/mean_loss"] = 0.3
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in TRACKERS:
            if importlib.util.find_spec(TRACKERS[name]) is None:
                rows.append([name, "not installed", "", "", ""])
                continue
            run_dir = Path(tmp) / "runs" / name
            run_dir.mkdir(parents=True)
            cfg = load_config(overrides=[f"logging.trackers=[{name}]", f"training.run_dir={run_dir}"])
            start = time.perf_counter()
            trackers = Trackers.start(cfg, run_dir, {}, print)
            started = time.perf_counter() - start
            train_ms, train_max = median_ms(
                lambda i, t=trackers: t.scalars(
                    {"train/loss": 1.0 / i, "train/lr": 1e-3, "train/images_per_s": 9.0}, i
                ),
                ROUNDS,
            )

            def log_evaluation(i: int, t: Trackers = trackers) -> None:
                step = ROUNDS + i
                t.scalars(evaluation, step)
                for tag in ("val/fixed_batch", "val/confusion", "val/iou"):
                    t.image(tag, picture, step)

            eval_ms, eval_max = median_ms(log_evaluation, 5)
            if not trackers.backends:  # it failed (its warning line is above): no number to show
                rows.append([name, "failed", "", "", ""])
                continue
            start = time.perf_counter()
            trackers.close("FINISHED")
            closed = time.perf_counter() - start
            rows.append(
                [
                    name,
                    f"{started:.2f} s",
                    f"{train_ms:.1f} ms (max {train_max:.1f})",
                    f"{eval_ms:.0f} ms (max {eval_max:.0f})",
                    f"{closed:.2f} s",
                ]
            )
    headers = [
        "tracker",
        "start",
        "one training log (3 scalars)",
        "one evaluation's log (9 scalars, 3 pictures)",
        "close",
    ]
    print(write_table("trackers", "What each tracker adds to a run", headers, rows))


if __name__ == "__main__":
    main()
