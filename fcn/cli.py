"""What the command lines share: --config and key=value overrides, and the evaluation flags of
evaluate.py and predict.py (the exit codes and error lines are fcn.core.errors')."""

from __future__ import annotations

import argparse

from fcn.config import ENGINES, FAST_PATHS


def add_config_arguments(p: argparse.ArgumentParser, over: str) -> None:
    """Add --config FILE (repeatable) and the trailing key=value overrides."""
    p.add_argument(
        "--config", action="append", default=[], metavar="FILE", help=f"YAML merged over {over} (repeatable)"
    )
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. eval.amp=bf16")


def add_trust_argument(p: argparse.ArgumentParser) -> None:
    """Add --trust-remote-code: import a dataset class that a checkpoint's or folder's config names
    by import path (off: such a config is data; docs/security.md)."""
    p.add_argument(
        "--trust-remote-code",
        action="store_true",
        help="import the dataset class that the checkpoint's or folder's config names by import path "
        "('package.module:Class'); only for a model whose maker you trust (docs/security.md)",
    )


def add_eval_arguments(p: argparse.ArgumentParser) -> None:
    """Add the flags evaluate.py and predict.py share: test-time augmentation, weights, precision,
    fast path, whole or sliding-window inference, device and progress bar."""
    p.add_argument(
        "--flip", action="store_true", default=None, help="average with the mirrored image (eval.flip=true)"
    )
    p.add_argument(
        "--scales",
        type=float,
        nargs="+",
        metavar="S",
        help="test-time scales, e.g. 0.5 0.75 1.0 1.25 1.5 1.75 (eval.scales)",
    )
    p.add_argument(
        "--no-ema", action="store_true", help="use the raw weights even if the checkpoint has EMA weights"
    )
    p.add_argument("--amp", choices=("none", "bf16", "fp16"), help="mixed precision (eval.amp)")
    p.add_argument(
        "--fast-path",
        choices=FAST_PATHS,
        help="CPU fast path (eval.fast_path): auto = the fastest exact engine and path here (said in one "
        "line); winograd = fp32's results, faster; int8 = close, faster still (on --engine's runtime)",
    )
    p.add_argument(
        "--engine",
        choices=ENGINES,
        help="what runs the model (eval.engine): torch, or the checkpoint exported to ONNX (cached beside "
        "it) and run on the CPU by onnxruntime or openvino",
    )
    p.add_argument(
        "--mode",
        choices=("whole", "slide"),
        help="whole image in one forward, or slide: tile x tile windows, logits averaged (eval.mode)",
    )
    p.add_argument("--tile", type=int, metavar="PX", help="sliding-window side in pixels (eval.tile)")
    p.add_argument("--stride", type=int, metavar="PX", help="pixels between sliding windows (eval.stride)")
    p.add_argument(
        "--device", default="auto", help="auto (CUDA, else MPS, else CPU), cpu, cuda, cuda:N or mps"
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def eval_overrides(args: argparse.Namespace) -> list[str]:
    """Return the key=value overrides the flags of add_eval_arguments stand for."""
    out = []
    if args.flip:
        out.append("eval.flip=true")
    if args.scales:
        out.append("eval.scales=[" + ",".join(repr(float(s)) for s in args.scales) + "]")
    if args.no_ema:
        out.append("eval.use_ema=false")
    if args.amp:
        out.append(f"eval.amp={args.amp}")
    if args.fast_path:
        out.append(f"eval.fast_path={args.fast_path}")
    if args.engine:
        out.append(f"eval.engine={args.engine}")
    if args.mode:
        out.append(f"eval.mode={args.mode}")
    if args.tile is not None:
        out.append(f"eval.tile={args.tile}")
    if args.stride is not None:
        out.append(f"eval.stride={args.stride}")
    return out
