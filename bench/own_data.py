"""Ours (the starter recipes) against segmentation_models_pytorch's Unet at equal training time, on
the project's binary, multi-label and multiclass toy sets: held-out IoU and ms per iteration.

    python -m bench.own_data --seconds 60 --seeds 0 1 --tasks binary    # about 5 minutes on 2 cores
    python -m bench.own_data --seconds 120 --seeds 0 1 --archs fcn4s unet

Ours is predefined_configs/starter.yml + cpu_check.yml (+ binary.yml or multilabel.yml), trained by
fcn.training.loop's setup() and train(), the code train.py runs: ResNet-18 from scratch, 96 px crops,
batch 16, AdamW 1e-3, poly after a 30-iteration warm-up, BCE + soft Dice for binary and multilabel,
cross-entropy for multiclass; --archs overrides model.arch (the recipes' own: fcn4s for binary,
fcn8s otherwise). smp is ``smp.Unet("resnet18", encoder_weights=None)`` in the twenty-line loop a
user writes instead: the same batches (the same run's data order and augmentation, from
fcn.data.loaders.train_loader), AdamW 1e-3 (weight decay 0.01), torch's PolynomialLR (power 0.9, no
warm-up), the same loss pair (smp.losses.DiceLoss). Both are scored by fcn.training.validate.evaluate
on a held-out toy set of another seed: foreground IoU (binary), mean IoU over the classes
(multilabel) or over the classes with background (multiclass).

Equal time: each run first times --probe steps on one batch, then trains as many iterations as fit
--seconds at that speed (the schedule needs its length up front), so both get the same budget and
whichever is faster gets more iterations. The reported wall time is the training's own (ours: its
train() less the final evaluation, which it does inside the loop). Runs are interleaved (ours seed 0,
smp seed 0, ours seed 1, ...): on a shared machine the load changes between runs, so read the ratio
of neighbours, and the load average in the JSON.

Prints a markdown table; writes bench/results/own_data.json (machine, CPU flags, torch, date).
"""

from __future__ import annotations

import argparse
import datetime
import functools
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Sequence

import torch

from bench.common import machine_info, markdown_table, write_json

ROOT = Path(__file__).resolve().parents[1]

TASKS = {
    # task: (recipe over starter + cpu_check, classes, the metric's name in the table)
    "binary": ("predefined_configs/binary.yml", ["scratch"], "foreground IoU"),
    "multilabel": ("predefined_configs/multilabel.yml", ["disc", "band"], "mean IoU"),
    "multiclass": (None, ["background", "circle", "square", "triangle"], "mean IoU"),
}


def make_toy(root: Path, task: str, seed: int, train: int, val: int, size: int) -> Path:
    """Write the toy set of task and seed under root in the pairs layout (fcn.data.toy); return it."""
    out = root / f"{task}_{seed}"
    if not out.exists():
        subprocess.run(
            [sys.executable, "-m", "fcn.data.toy", "--root", str(out), "--format", "pairs", "--task", task]
            + ["--seed", str(seed), "--train", str(train), "--val", str(val), "--size", str(size)],
            cwd=ROOT,
            check=True,
            stdout=subprocess.DEVNULL,
        )
    return out


def ours_config(
    task: str, train: Path, heldout: Path, arch: str, seed: int, iters: int, name: str, *, root: Path
) -> Any:
    """Return the starter recipe's config for task on the toy data (val: the held-out set), its run
    directory root/name."""
    from fcn.config import load_config

    recipe, classes, _ = TASKS[task]
    files = ["predefined_configs/starter.yml", "predefined_configs/cpu_check.yml"]
    files += [recipe] if recipe else []
    overrides = [
        f"data.train={{name: pairs, images: {train}/train/images, masks: {train}/train/masks}}",
        f"data.val={{name: pairs, images: {heldout}/val/images, masks: {heldout}/val/masks}}",
        f"data.classes=[{','.join(classes)}]",
        "training.device=cpu",
        f"training.seed={seed}",
        f"training.iters={iters}",
        f"training.eval_every={iters}",  # one evaluation, at the end
        "training.log_every=1000000",
        f"training.run_dir={root / name}",
        "training.overwrite=true",
        "logging.trackers=[]",
    ]
    if arch:
        overrides.append(f"model.arch={arch}")
    if arch == "unet":
        overrides.append("model.head=score")  # binary.yml's FCN head: U-Net's decoder has its own
    return load_config([str(ROOT / f) for f in files], overrides=overrides)


def _batch(run: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """Return the first training batch of run's data order (images, masks)."""
    from fcn.data.loaders import train_loader

    run.sampler.set_position(0, 0)
    loader = train_loader(
        run.items, run.sampler, num_workers=0, pad=run.cfg.data.pad_collate, pin_memory=False
    )
    return next(iter(loader))


def _batches(run: Any):
    """Yield run's training batches epoch after epoch, as its loop sees them (same order, same crops)."""
    from fcn.data.loaders import train_loader

    epoch = 0
    while True:
        run.sampler.set_position(epoch, 0)
        yield from train_loader(
            run.items,
            run.sampler,
            num_workers=run.cfg.data.num_workers,
            pad=run.cfg.data.pad_collate,
            pin_memory=False,
            ignore_index=run.cfg.data.ignore_index,
        )
        epoch += 1


def _time_steps(step, probe: int) -> float:
    """Return the median seconds of a step over probe calls after three warm-up calls (oneDNN's
    first calls at a shape, bf16's above all, are several times slower than the later ones)."""
    for _ in range(3):
        step()
    times = []
    for _ in range(probe):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _evaluate(model: torch.nn.Module, run: Any) -> tuple[float, float]:
    """Return (the held-out metric, seconds it took): fcn.training.validate.evaluate on run's val set."""
    from fcn.training.validate import evaluate

    cfg = run.cfg
    start = time.perf_counter()
    metrics = evaluate(
        model.eval(),
        run.val_loader,
        int(cfg.model.num_classes),
        run.device,
        ignore_index=int(cfg.data.ignore_index),
        task=str(cfg.data.task),
        threshold=float(cfg.eval.threshold),
    )
    return float(metrics["mean_iou"]), time.perf_counter() - start


def train_ours(cfg_for, seconds: float, probe: int) -> dict:
    """Train ours for about `seconds`: time `probe` steps of the run's own train_one_step, then
    setup() and train() as many iterations as fit; return the row."""
    from fcn.training.loop import setup, train, train_one_step
    from fcn.training.rundir import release_run_dir

    run = setup(cfg_for(10, "probe"))
    images, masks = _batch(run)
    batches = [(images, masks, None, 1.0)]
    run.model.train()
    per_step = _time_steps(
        lambda: train_one_step(
            run.train_model,
            run.optimizer,
            batches,
            normalize=run.cfg.loss.normalize,
            loss_fn=run.loss_fn,
            amp=run.amp,
        ),
        probe,
    )
    release_run_dir(run.run_dir, lambda line: None)  # the probe trained no run: its claim let go
    iters = max(1, int(seconds / per_step))
    run = setup(cfg_for(iters, "run"))
    start = time.perf_counter()
    train(run)
    wall = time.perf_counter() - start
    metric, eval_s = _evaluate(run.model, run)
    return {"iterations": iters, "train_s": wall - eval_s, "metric": metric, "run": run}


def _smp_loss(task: str, ignore: int):
    """Return the loss a user writes with smp for task: BCE + Dice (binary, multilabel) or CE."""
    import segmentation_models_pytorch as smp
    import torch.nn.functional as F

    if task == "multiclass":
        return lambda logits, masks: F.cross_entropy(logits, masks, ignore_index=ignore)
    dice = smp.losses.DiceLoss("binary" if task == "binary" else "multilabel", ignore_index=ignore)

    def loss(logits: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        target = masks.unsqueeze(1) if task == "binary" else masks
        valid = (target != ignore).float()
        bce = F.binary_cross_entropy_with_logits(logits, target.clamp(0, 1).float(), weight=valid)
        return bce * valid.numel() / valid.sum().clamp_min(1) + dice(logits, target)

    return loss


def train_smp(run: Any, seed: int, seconds: float, probe: int) -> dict:
    """Train smp.Unet('resnet18', encoder_weights=None) on run's batches for about `seconds` in the
    twenty-line loop; return the row."""
    import segmentation_models_pytorch as smp

    cfg = run.cfg
    task, classes = str(cfg.data.task), int(cfg.model.num_classes)
    loss_fn = _smp_loss(task, int(cfg.data.ignore_index))

    def build() -> tuple[torch.nn.Module, torch.optim.Optimizer]:
        torch.manual_seed(seed)
        model = smp.Unet("resnet18", encoder_weights=None, classes=classes)
        return model.train(), torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)

    def step(model, optimizer, images, masks) -> None:
        optimizer.zero_grad(set_to_none=True)
        loss_fn(model(images), masks).backward()
        optimizer.step()

    images, masks = _batch(run)
    model, optimizer = build()
    per_step = _time_steps(lambda: step(model, optimizer, images, masks), probe)
    iters = max(1, int(seconds / per_step))
    model, optimizer = build()
    scheduler = torch.optim.lr_scheduler.PolynomialLR(optimizer, total_iters=iters, power=0.9)
    batches = _batches(run)
    start = time.perf_counter()
    for _ in range(iters):
        images, masks = next(batches)
        step(model, optimizer, images, masks)
        scheduler.step()
    wall = time.perf_counter() - start
    metric, _ = _evaluate(model, run)
    return {"iterations": iters, "train_s": wall, "metric": metric}


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.own_data", description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=60.0, help="training time per run (default 60)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1], help="training seeds (default 0 1)")
    p.add_argument("--tasks", nargs="+", choices=list(TASKS), default=list(TASKS), help="toy sets")
    p.add_argument(
        "--archs",
        nargs="+",
        default=[""],
        help="model.arch of ours (default: the recipe's own), e.g. fcn4s unet",
    )
    p.add_argument("--no-smp", action="store_true", help="ours only (to compare our variants)")
    p.add_argument("--train-images", type=int, default=200, help="toy training images (default 200)")
    p.add_argument("--heldout-images", type=int, default=40, help="held-out toy images (default 40)")
    p.add_argument("--size", type=int, default=128, help="toy image side (a multiple of 32: smp needs it)")
    p.add_argument("--heldout-seed", type=int, default=7, help="seed of the held-out toy set")
    p.add_argument("--probe", type=int, default=8, help="timed steps that set each run's iterations")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument(
        "--data", default="", help="where the toy sets are written (default: a temporary directory)"
    )
    p.add_argument("--json", default=str(ROOT / "bench" / "results" / "own_data.json"), help="output JSON")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> dict:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if not args.no_smp:
        try:
            import segmentation_models_pytorch  # noqa: F401
        except ImportError:
            raise SystemExit(
                "error: the comparison needs smp: pip install segmentation-models-pytorch"
            ) from None
    rows: List[Dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(args.data or tmp)
        for task in args.tasks:
            train_set = make_toy(data, task, 0, args.train_images, 2, args.size)
            heldout = make_toy(data, task, args.heldout_seed, 2, args.heldout_images, args.size)
            for seed in args.seeds:  # interleaved: ours, smp, ours, smp: neighbours saw the same load
                run = None
                for arch in args.archs:
                    cfg_for = functools.partial(
                        ours_config, task, train_set, heldout, arch, seed, root=Path(tmp)
                    )
                    row = train_ours(cfg_for, args.seconds, args.probe)
                    run = row.pop("run")
                    name = f"ours {arch or run.cfg.model.arch}"
                    rows.append({"task": task, "seed": seed, "model": name, **row})
                    print(_line(rows[-1]), flush=True)
                if not args.no_smp:
                    rows.append(
                        {
                            "task": task,
                            "seed": seed,
                            "model": "smp Unet",
                            **train_smp(run, seed, args.seconds, args.probe),
                        }
                    )
                    print(_line(rows[-1]), flush=True)
    table = markdown_table(
        ["task", "seed", "model", "iterations", "training s", "ms / iteration", "held-out IoU"],
        [
            [r["task"], r["seed"], r["model"], r["iterations"], f"{r['train_s']:.0f}"]
            + [f"{1000 * r['train_s'] / r['iterations']:.0f}", f"{r['metric']:.3f}"]
            for r in rows
        ],
    )
    print("\n" + table)
    print("\nheld-out IoU: " + "; ".join(f"{t}: {TASKS[t][2]}" for t in args.tasks))
    result = {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "machine": machine_info(torch.device("cpu")),
        "args": vars(args),
        "rows": rows,
    }
    write_json(args.json, result)
    print(f"wrote {args.json}")
    return result


def _line(r: dict) -> str:
    return (
        f"{r['task']} seed {r['seed']} {r['model']}: {r['iterations']} iterations in {r['train_s']:.1f} s "
        f"({1000 * r['train_s'] / r['iterations']:.0f} ms each), held-out IoU {r['metric']:.3f}"
    )


if __name__ == "__main__":
    main()
