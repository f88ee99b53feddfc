"""Confusion-matrix update rate (pixels/s): ConfusionMatrix.update on the CPU vs the reference fast_hist.

The reference (score.py, fcn.berkeleyvision.org) accumulates ``fast_hist(gt, pred, n)``, a NumPy
``bincount`` over the masked pixels. Both sides get the same int64 maps (a mask with 255 void as the
data loader yields it, a prediction as ``argmax`` yields it); uint8 maps (masks as stored on
disk) and one torch thread are timed too. Run from the repository root::

    python -m bench.metrics [--size 500] [--classes 21] [--repeats 15]

Prints a table and writes bench/results/metrics.json. Target (issue 8): update >= 2x faster than NumPy.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch

from fcn.core.metrics import ConfusionMatrix

ROOT = Path(__file__).resolve().parents[1]

TARGET_RATIO = 2.0


def fast_hist(a: np.ndarray, b: np.ndarray, n: int) -> np.ndarray:
    """Return the reference score.py's confusion matrix of ground truth ``a`` vs prediction ``b``."""
    k = (a >= 0) & (a < n)
    return np.bincount(n * a[k].astype(int) + b[k], minlength=n**2).reshape(n, n)


def make_maps(count: int, size: int, n: int, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """Return ``count`` (gt, pred) int64 pairs that look like VOC: regions of one class with a void
    band on their boundaries, and a prediction with shifted boundaries and some regions mislabelled."""
    rng = np.random.default_rng(seed)
    cell = 25
    maps = []
    for _ in range(count):
        blocks = rng.integers(0, n, (size // cell + 2, size // cell + 2))
        gt = np.kron(blocks, np.ones((cell, cell), dtype=np.int64))[:size, :size]
        # VOC's void: a 5-pixel band around object boundaries
        edge = np.zeros_like(gt, dtype=bool)
        edge[:, 1:] |= gt[:, 1:] != gt[:, :-1]
        edge[1:, :] |= gt[1:, :] != gt[:-1, :]
        for _ in range(2):
            edge[1:] |= edge[:-1]
            edge[:, 1:] |= edge[:, :-1]
        gt = np.where(edge, 255, gt)
        wrong = np.where(rng.random(blocks.shape) < 0.2, rng.integers(0, n, blocks.shape), blocks)
        shift = rng.integers(1, cell // 2, 2)
        pred = np.kron(wrong, np.ones((cell, cell), dtype=np.int64))[shift[0] :, shift[1] :][:size, :size]
        maps.append((np.ascontiguousarray(gt, dtype=np.int64), np.ascontiguousarray(pred, dtype=np.int64)))
    return maps


def best_times(variants: dict, repeats: int, inner: int) -> dict:
    """Return {name: (wall, cpu)}: the best seconds per call of ``fn(*x)`` cycling over its inputs, by
    the wall clock and by this thread's CPU time; variants take turns in every repeat so that a change
    of machine load hits all of them alike."""
    for fn, inputs in variants.values():
        for x in inputs:
            fn(*x)  # warm-up
    best = {name: (float("inf"), float("inf")) for name in variants}
    for _ in range(repeats):
        for name, (fn, inputs) in variants.items():
            wall, cpu = time.perf_counter(), time.thread_time()
            for i in range(inner):
                fn(*inputs[i % len(inputs)])
            wall, cpu = (time.perf_counter() - wall) / inner, (time.thread_time() - cpu) / inner
            best[name] = (min(best[name][0], wall), min(best[name][1], cpu))
    return best


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.metrics", description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=500, help="maps are size x size (default 500)")
    parser.add_argument("--classes", type=int, default=21, help="number of classes (default 21, VOC)")
    parser.add_argument("--repeats", type=int, default=15, help="timing repeats; the best is kept")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "metrics.json")
    args = parser.parse_args()

    load_before = os.getloadavg()[0]
    n = args.classes
    maps = make_maps(8, args.size, n)
    pixels = args.size * args.size
    inner = 20

    # Correctness first: every variant must give the reference counts.
    expected = sum(fast_hist(gt, pred, n) for gt, pred in maps)
    cm = ConfusionMatrix(n)
    for gt, pred in maps:
        cm.update(torch.from_numpy(pred), torch.from_numpy(gt).to(torch.uint8))
    assert np.array_equal(cm.mat.numpy(), expected), "ConfusionMatrix disagrees with fast_hist"

    torch_maps = [(torch.from_numpy(pred), torch.from_numpy(gt)) for gt, pred in maps]
    torch_maps_u8 = [(p.to(torch.uint8), g.to(torch.uint8)) for p, g in torch_maps]
    threads = torch.get_num_threads()
    cm = ConfusionMatrix(n)

    def single_thread(fn):
        def run(*x):
            torch.set_num_threads(1)
            try:
                fn(*x)
            finally:
                torch.set_num_threads(threads)

        return run

    variants = {
        "numpy fast_hist (reference, int64)": (lambda g, p: fast_hist(g, p, n), maps),
        f"ConfusionMatrix.update int64 ({threads} threads)": (cm.update, torch_maps),
        f"ConfusionMatrix.update uint8 ({threads} threads)": (cm.update, torch_maps_u8),
        "ConfusionMatrix.update int64 (1 thread)": (single_thread(cm.update), torch_maps),
    }
    single_threaded = {0, 3}  # rows whose CPU time is the whole work (one thread)
    rows = []
    for k, (name, (wall, cpu)) in enumerate(best_times(variants, args.repeats, inner).items()):
        rows.append({"variant": name, "ms_per_update": 1e3 * wall, "mpixels_per_s": pixels / wall / 1e6})
        if k in single_threaded:
            rows[-1]["cpu_ms_per_update"] = 1e3 * cpu
    numpy_ms = rows[0]["ms_per_update"]
    for row in rows:
        row["ratio_vs_numpy"] = numpy_ms / row["ms_per_update"]
    cpu_ratio = rows[0]["cpu_ms_per_update"] / rows[3]["cpu_ms_per_update"]
    # The single-threaded reference should get a whole core: less means other processes competed.
    core_share = rows[0]["cpu_ms_per_update"] / rows[0]["ms_per_update"]

    machine = platform.processor() or platform.machine()
    print(
        f"confusion-matrix update, {args.size}x{args.size} maps, {n} classes, CPU ({machine}), torch {torch.__version__}"
    )
    print(f"{'variant':<46} {'ms/update':>10} {'Mpixel/s':>10} {'vs numpy':>9} {'CPU ms':>8}")
    for row in rows:
        cpu = f"{row['cpu_ms_per_update']:>8.3f}" if "cpu_ms_per_update" in row else f"{'':>8}"
        print(
            f"{row['variant']:<46} {row['ms_per_update']:>10.3f} {row['mpixels_per_s']:>10.1f} "
            f"{row['ratio_vs_numpy']:>8.1f}x {cpu}"
        )
    ratio = rows[1]["ratio_vs_numpy"]
    verdict = "met" if ratio >= TARGET_RATIO else f"MISSED by {TARGET_RATIO / ratio:.2f}x"
    print(
        f"ratio (int64, default {threads} threads, wall clock) = {ratio:.2f}x; target >= {TARGET_RATIO:.0f}x: {verdict}"
    )
    print(f"one thread each, by CPU time: ConfusionMatrix.update is {cpu_ratio:.2f}x faster than numpy")

    load_after = os.getloadavg()[0]
    busy = core_share < 0.9  # the load average lags by a minute: a hint only, printed below
    if busy:
        print(
            f"warning: the machine was busy (the single-threaded reference got {100 * core_share:.0f}% of a "
            f"core; 1-min load average {load_before:.1f} before, {load_after:.1f} after): the wall-clock rows, "
            "the multi-threaded ones most, are unreliable; rerun when idle"
        )

    args.out.parent.mkdir(parents=True, exist_ok=True)
    result = {
        "size": args.size,
        "classes": n,
        "torch": torch.__version__,
        "numpy": np.__version__,
        "threads": threads,
        "load_average": [load_before, load_after],
        "rows": rows,
        "ratio": ratio,
        "cpu_time_ratio_single_thread": cpu_ratio,
        "reference_core_share": core_share,
        "busy": busy,
        "target_ratio": TARGET_RATIO,
    }
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out.relative_to(ROOT) if args.out.is_relative_to(ROOT) else args.out}")


if __name__ == "__main__":
    main()
