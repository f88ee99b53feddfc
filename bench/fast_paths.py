"""The CPU fast paths (eval.fast_path) on a trained checkpoint: time per image, mean IU, and agreement
with fp32 on the checkpoint's own validation split.

For each path (none = fp32, auto = what this CPU gets, winograd, int8, bf16+cl = bf16 autocast with
channels-last) the checkpoint is loaded once and prepared as evaluate.py
prepares it (int8 calibrates on the first eval.calibration_images validation images). Then every
validation image (native resolution, batch 1, no test-time augmentation) goes through every path in
turn, so that load from other processes falls on all paths alike; each path's time is the sum of its
forward passes. Agreement is the share of scored pixels (not void) where a path's argmax equals
fp32's; logit err is |logits - fp32| / |fp32| over all images.

    python -m bench.fast_paths --checkpoint runs/toy/checkpoints/best.pt
    python -m bench.fast_paths --checkpoint best.pt data.val.root=/data/VOC2012 --limit 100

Prints a markdown table and writes JSON (bench/results/fast_paths.json by default).
"""

from __future__ import annotations

import argparse
import functools
import time
from pathlib import Path
from typing import Sequence

import torch

from bench.common import load_average, machine_info, markdown_table, time_call, write_json
from fcn.config import VOID
from fcn.core.metrics import ConfusionMatrix
from fcn.core.runtime import autocast, cpu_flags
from fcn.data import build_dataset
from fcn.data.transforms import build_transforms
from fcn.inference.fastpath import prepare_fast_path
from fcn.inference.loading import load

ROOT = Path(__file__).resolve().parents[1]

PATHS = {
    "none": ["eval.fast_path=none"],
    "auto": ["eval.fast_path=auto"],
    "winograd": ["eval.fast_path=winograd"],
    "int8": ["eval.fast_path=int8"],
    "bf16+cl": ["eval.fast_path=none", "eval.amp=bf16", "eval.channels_last=true"],
}
"""Each row's config overrides; 'auto' is resolved by fcn.inference.loading as evaluate.py resolves it."""


def forward(model: torch.nn.Module, cfg, x: torch.Tensor) -> torch.Tensor:
    """Return the logits of x as evaluate.py computes them under cfg.eval (precision, layout)."""
    if cfg.eval.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    with autocast(x.device, cfg.eval.amp):
        return model(x)


def described(cfg) -> str:
    """Return what a loaded path runs: its fast path, precision and layout."""
    e = cfg.eval
    parts = [e.engine] if e.engine != "torch" else []  # auto may choose an engine (fcn/inference/engines.py)
    parts += [e.fast_path] if e.fast_path != "none" else []
    parts += [e.amp] if e.amp != "none" else []
    parts += ["channels-last"] if e.channels_last else []
    return " + ".join(parts) or "fp32"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.fast_paths", description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", required=True, help="checkpoint (.pt) written by train.py or imported")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. data.val.root=…")
    p.add_argument("--paths", nargs="+", choices=list(PATHS), default=list(PATHS), help="default: all")
    p.add_argument("--limit", type=int, default=0, help="score only the first N validation images (0 = all)")
    p.add_argument("--json", default=str(ROOT / "bench" / "results" / "fast_paths.json"), help="output JSON")
    args = p.parse_intermixed_args(argv)
    if "none" not in args.paths:
        args.paths.insert(0, "none")  # fp32 is what the others are compared with
    return args


def main(argv: Sequence[str] | None = None) -> dict:
    args = parse_args(argv)
    device = torch.device("cpu")  # both fast paths are CPU paths
    models, setup, cfgs = {}, {}, {}
    for kind in args.paths:
        model, cfg = load(args.checkpoint, device, overrides=[*args.overrides, *PATHS[kind]])
        cfgs[kind] = cfg
        if kind == "none":
            dataset = build_dataset(
                cfg.data.val, cfg.data, transforms=build_transforms(cfg.data.transforms, train=False)
            )
            count = len(dataset) if args.limit <= 0 else min(args.limit, len(dataset))
            if count == 0:
                raise SystemExit(f"error: data.val ({cfg.data.val.root}, '{cfg.data.val.split}') is empty")
        start = time.perf_counter()
        prepare_fast_path(model, cfg, (dataset[i][0][None] for i in range(len(dataset))))
        setup[kind], models[kind] = time.perf_counter() - start, model

    n = int(cfg.model.num_classes)
    matrices = {kind: ConfusionMatrix(n, VOID) for kind in args.paths}
    seconds = dict.fromkeys(args.paths, 0.0)
    agree = dict.fromkeys(args.paths, 0)
    err_sq = dict.fromkeys(args.paths, 0.0)
    ref_sq, scored = 0.0, 0
    print(f"{count} images of {cfg.data.val.name} '{cfg.data.val.split}', paths {', '.join(args.paths)}")
    with torch.inference_mode():
        for kind in args.paths:  # one warm-up call each: first calls allocate and pack weights
            forward(models[kind], cfgs[kind], dataset[0][0][None])
        for i in range(count):
            image, mask = dataset[i]
            x, valid = image[None], mask[None] != VOID
            logits = {}
            for kind in args.paths:
                took, out = time_call(functools.partial(forward, models[kind], cfgs[kind], x), device)
                logits[kind], seconds[kind] = out.float(), seconds[kind] + took
            reference = logits["none"].argmax(1)
            ref_sq += float(logits["none"].square().sum())
            scored += int(valid.sum())
            for kind, out in logits.items():
                pred = out.argmax(1)
                matrices[kind].update(pred, mask[None])
                agree[kind] += int(((pred == reference) & valid).sum())
                err_sq[kind] += float((out - logits["none"]).square().sum())

    rows = []
    for kind in args.paths:
        m = matrices[kind].compute()
        rows.append(
            {
                "path": kind,
                "runs": described(cfgs[kind]),
                "s_per_image": seconds[kind] / count,
                "speedup": seconds["none"] / seconds[kind],
                "mean_iou": m["mean_iou"],
                "pixel_acc": m["pixel_acc"],
                "agreement": agree[kind] / max(scored, 1),
                "logit_rel_err": (err_sq[kind] / ref_sq) ** 0.5 if ref_sq else float("nan"),
                "setup_s": setup[kind],
            }
        )
    table = markdown_table(
        ["path", "runs", "s/img", "vs fp32", "mean IU", "pixel acc", "agree %", "logit err", "setup s"],
        [
            [
                r["path"],
                r["runs"],
                f"{r['s_per_image']:.4f}",
                f"{r['speedup']:.2f}x",
                f"{100 * r['mean_iou']:.2f}",
                f"{100 * r['pixel_acc']:.2f}",
                f"{100 * r['agreement']:.2f}",
                f"{r['logit_rel_err']:.1e}",
                f"{r['setup_s']:.1f}",
            ]
            for r in rows
        ],
    )
    print(table)
    print(
        f"\n{args.checkpoint} ({cfg.model.arch}, {cfg.model.backbone}, {cfg.model.geometry}), CPU flags "
        f"{' '.join(sorted(f for f in cpu_flags() if f.startswith(('avx2', 'avx512f', 'avx512_bf16', 'amx'))))}, torch threads "
        f"{torch.get_num_threads()}, load average {load_average()}; setup = the fast path's "
        "preparation alone (int8: calibration and conversion; loading not included)"
    )
    result = {"checkpoint": args.checkpoint, "images": count, "rows": rows, "machine": machine_info(device)}
    write_json(args.json, result)
    print(f"wrote {args.json}")
    return result


if __name__ == "__main__":
    main()
