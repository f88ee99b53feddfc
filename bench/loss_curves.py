"""Compare the training-loss curves of two runs (e.g. fp32 and bf16 autocast) window by window.

Reads ``train/loss`` from each run directory's TensorBoard events (written every training.log_every
iterations), takes the iterations both runs logged, and prints per window of iterations the mean loss
of each run, their difference, and the noise it is judged against: the standard error of the first
run's mean in that window (the batch-to-batch spread of its losses over the square root of their
count). Runs with the same seed see the same batches, so a difference beyond a few standard errors is
the precision's doing, not the data's.

    python train.py --config predefined_configs/toy.yml training.iters=150 training.run_dir=runs/toy_fp32
    python train.py --config predefined_configs/toy.yml training.iters=150 training.amp=bf16 training.run_dir=runs/toy_bf16
    python -m bench.loss_curves runs/toy_fp32 runs/toy_bf16
"""

from __future__ import annotations

import argparse
import math
import statistics
from pathlib import Path
from typing import Dict, Sequence

from bench.common import markdown_table, write_json

ROOT = Path(__file__).resolve().parents[1]

TAG = "train/loss"


def read_losses(run_dir: str) -> Dict[int, float]:
    """Return {iteration: loss} of the run's TensorBoard events (the last value where one repeats)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = sorted(Path(run_dir).glob("events.out.tfevents.*"))
    if not events:
        raise SystemExit(
            f"error: {run_dir}: no TensorBoard events (events.out.tfevents.*); is it a run directory?"
        )
    losses: Dict[int, float] = {}
    for path in events:  # a resumed run appends a second file
        acc = EventAccumulator(str(path), size_guidance={"scalars": 0})
        acc.Reload()
        if TAG in acc.Tags().get("scalars", []):
            losses.update({e.step: e.value for e in acc.Scalars(TAG)})
    if not losses:
        raise SystemExit(f"error: {run_dir}: its events hold no '{TAG}' scalars")
    return losses


def compare(a: Dict[int, float], b: Dict[int, float], window: int) -> list[dict]:
    """Return one row per window of `window` common iterations: means, difference, standard error."""
    steps = sorted(set(a) & set(b))
    rows = []
    for start in range(0, len(steps), window):
        chunk = steps[start : start + window]
        la, lb = [a[s] for s in chunk], [b[s] for s in chunk]
        spread = statistics.stdev(la) if len(la) > 1 else float("nan")
        error = spread / math.sqrt(len(la))
        diff = statistics.fmean(lb) - statistics.fmean(la)
        rows.append(
            {
                "first": chunk[0],
                "last": chunk[-1],
                "count": len(chunk),
                "mean_a": statistics.fmean(la),
                "mean_b": statistics.fmean(lb),
                "difference": diff,
                "standard_error": error,
                "in_errors": abs(diff) / error if error > 0 else float("inf"),
            }
        )
    return rows


def main(argv: Sequence[str] | None = None) -> dict:
    p = argparse.ArgumentParser(prog="python -m bench.loss_curves", description=__doc__.splitlines()[0])
    p.add_argument("run_a", help="the reference run directory (e.g. fp32)")
    p.add_argument("run_b", help="the run compared with it (e.g. bf16)")
    p.add_argument("--window", type=int, default=25, help="logged iterations per window (default 25)")
    p.add_argument("--json", default=str(ROOT / "bench" / "results" / "loss_curves.json"), help="output JSON")
    args = p.parse_args(argv)
    a, b = read_losses(args.run_a), read_losses(args.run_b)
    rows = compare(a, b, args.window)
    if not rows:
        raise SystemExit(f"error: {args.run_a} and {args.run_b} logged no iteration in common")
    print(
        markdown_table(
            [
                "iterations",
                f"loss {Path(args.run_a).name}",
                f"loss {Path(args.run_b).name}",
                "difference",
                "std err",
                "|diff| / err",
            ],
            [
                [
                    f"{r['first']}-{r['last']}",
                    f"{r['mean_a']:.4f}",
                    f"{r['mean_b']:.4f}",
                    f"{r['difference']:+.4f}",
                    f"{r['standard_error']:.4f}",
                    f"{r['in_errors']:.2f}",
                ]
                for r in rows
            ],
        )
    )
    worst = max(rows, key=lambda r: r["in_errors"])
    print(
        f"\n{sum(r['count'] for r in rows)} common iterations; largest difference {worst['in_errors']:.2f} standard "
        f"errors (iterations {worst['first']}-{worst['last']}): "
        + ("within noise (< 2)" if worst["in_errors"] < 2 else "beyond noise (>= 2)")
    )
    result = {"run_a": args.run_a, "run_b": args.run_b, "window": args.window, "rows": rows}
    write_json(args.json, result)
    print(f"wrote {args.json}")
    return result


if __name__ == "__main__":
    main()
