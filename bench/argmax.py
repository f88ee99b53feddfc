"""The class decision of a prediction: torch's argmax over the class axis of an (N, C, H, W) tensor
against fcn.core.sliding.class_argmax (a channels-last copy, a slice of rows at a time), on the CPU,
for VOC-sized and photo-sized score maps; the labels are checked equal before timing.

    python -m bench.argmax
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from bench.common import write_table
from fcn.core.sliding import class_argmax

CASES = [(4, 500, 500), (21, 500, 500), (21, 1500, 2000), (4, 3000, 4000)]


def median_ms(fn, rounds: int) -> float:
    """Return the median time of fn() in milliseconds over rounds calls (after one warm-up call)."""
    fn()
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def main(argv: list[str] | None = None) -> None:
    # no flags: a parser all the same, so that --help answers instead of running the benchmark
    argparse.ArgumentParser(prog="python -m bench.argmax", description=__doc__.splitlines()[0]).parse_args(
        argv
    )
    rows = []
    for classes, height, width in CASES:
        scores = torch.randn(1, classes, height, width, generator=torch.Generator().manual_seed(0))
        assert torch.equal(scores.argmax(1), class_argmax(scores))
        rounds = 15 if height * width <= 500 * 500 else 3
        plain = fast = 0.0
        for _ in range(2):  # interleaved, so that load from other processes falls on both alike
            plain += median_ms(lambda s=scores: s.argmax(1), rounds)
            fast += median_ms(lambda s=scores: class_argmax(s), rounds)
        rows.append(
            [classes, f"{height}x{width}", f"{plain / 2:.1f}", f"{fast / 2:.1f}", f"{plain / fast:.1f}x"]
        )
    headers = ["classes", "H x W", "argmax(1) ms", "class_argmax ms", "speed-up"]
    print(write_table("argmax", "The class decision: argmax(1) vs class_argmax, CPU", headers, rows))


if __name__ == "__main__":
    main()
