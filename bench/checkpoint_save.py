"""The cost of training.checkpoint_every: time and size of one checkpoints/last.pt save.

For FCN-8s on each --backbones (pretrained=False, the schema's defaults otherwise: SGD), this builds
the model and optimizer, fills the optimizer's momentum buffers (the state a trained run holds),
and times fcn.core.checkpoint.save_checkpoint (torch.save to a temporary file, fsync, rename) --rounds
times into --dir (the file system the run directory is on: it is what is measured).

    python -m bench.checkpoint_save [--backbones vgg16 resnet18] [--dir runs] [--rounds 3]

Prints a markdown table: size, best and worst save time.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import torch

from fcn.config import load_config, to_dict
from fcn.core.checkpoint import save_checkpoint, training_checkpoint
from fcn.models import build_model
from fcn.training.loop import build_optimizer


def save_times(backbone: str, directory: Path, rounds: int) -> tuple[int, list[float]]:
    """Return (bytes of last.pt, seconds of each save) for FCN-8s on backbone."""
    extra = [] if backbone == "vgg16" else ["model.geometry=same"]
    cfg = load_config(overrides=[f"model.backbone={backbone}", "model.pretrained=false", *extra])
    model = build_model(cfg.model)
    optimizer = build_optimizer(model, cfg)
    for group in optimizer.param_groups:
        for param in group["params"]:
            optimizer.state[param]["momentum_buffer"] = torch.zeros_like(param)
    state = training_checkpoint(
        model=model,
        ema=None,
        optimizer=optimizer,
        scheduler=torch.optim.lr_scheduler.LambdaLR(optimizer, lambda i: 1.0),
        scaler=None,
        iteration=1,
        epoch=0,
        best_miou=0.0,
        sampler={"epoch": 0, "batch": 0, "images": 0},
        config=to_dict(cfg),
        rng_ranks=None,
        evals_since_best=0,
    )
    directory.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=directory) as tmp:
        path, times = Path(tmp) / "last.pt", []
        for _ in range(rounds):
            start = time.perf_counter()
            save_checkpoint(state, path)
            times.append(time.perf_counter() - start)
        return os.path.getsize(path), times


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m bench.checkpoint_save", description=__doc__.split("\n")[0])
    p.add_argument("--backbones", nargs="+", default=["vgg16", "resnet18"])
    p.add_argument("--dir", type=Path, default=Path("runs"), help="where to write (the run directory's disk)")
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args()
    print("| model | last.pt | best save | worst save |\n|---|---|---|---|")
    for backbone in args.backbones:
        size, times = save_times(backbone, args.dir, args.rounds)
        print(f"| fcn8s {backbone} | {size / 1e6:.0f} MB | {min(times):.2f} s | {max(times):.2f} s |")


if __name__ == "__main__":
    main()
