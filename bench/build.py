"""Building a net to load a checkpoint into: with the random initialisation (train.py's build) and
without it (fcn.inference.loading's: every weight is loaded next), interleaved rounds, fastest of each.

    python -m bench.build
    python -m bench.build --backbones vgg16 resnet50 --rounds 5
"""

from __future__ import annotations

import argparse
import time

from bench.common import write_table


def main(argv: list[str] | None = None) -> list[list[str]]:
    p = argparse.ArgumentParser(prog="python -m bench.build", description=__doc__.split("\n\n")[0])
    p.add_argument("--backbones", nargs="+", default=["vgg16", "resnet18", "resnet50"])
    p.add_argument("--arch", default="fcn8s")
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args(argv)
    from fcn.config import load_config
    from fcn.models import build_model

    rows = []
    for backbone in args.backbones:
        geometry = [] if backbone.startswith("vgg") else ["model.geometry=same"]
        cfg = load_config(
            overrides=[
                f"model.arch={args.arch}",
                f"model.backbone={backbone}",
                "model.pretrained=false",
                *geometry,
            ]
        )
        times: dict[bool, list[float]] = {True: [], False: []}
        for _ in range(args.rounds):
            for initialize in (True, False):
                start = time.perf_counter()
                build_model(cfg.model, initialize=initialize)
                times[initialize].append(time.perf_counter() - start)
        drawn, bare = min(times[True]), min(times[False])
        rows.append([f"{args.arch} {backbone}", f"{drawn:.3f}", f"{bare:.3f}", f"{drawn / bare:.1f}x"])
    headers = ["net", "built with random weights s", "built bare s", "speed-up"]
    print(write_table("build", f"Building a net, fastest of {args.rounds} rounds", headers, rows))
    return rows


if __name__ == "__main__":
    main()
