"""Segment images with a checkpoint: per image, a class-index PNG, a colour mask, an overlay on the
image and a legend of the classes present, with the class names and palette of the model's config.

    python predict.py --checkpoint runs/x/checkpoints/best.pt --input photo.jpg folder/ --output out/
    python predict.py --checkpoint best.pt --input folder/ --output out/ --flip --scales 0.75 1.0 1.25
"""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from fcn.checkpoint import CheckpointError
from fcn.config import FAST_PATHS, ConfigError


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Return the parsed command line."""
    p = argparse.ArgumentParser(
        description="Write <stem>.png (class indices), <stem>_color.png, <stem>_overlay.png and "
        "<stem>_legend.png for each input image."
    )
    p.add_argument("--checkpoint", required=True, help="checkpoint (.pt) written by train.py or imported")
    p.add_argument(
        "--input",
        required=True,
        nargs="+",
        metavar="IMAGE_OR_DIR",
        help="image files and/or directories of images",
    )
    p.add_argument("--output", required=True, metavar="DIR", help="directory for the output PNGs (created)")
    p.add_argument(
        "--config",
        action="append",
        default=[],
        metavar="FILE",
        help="YAML merged over the checkpoint's config (repeatable)",
    )
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. eval.amp=bf16")
    p.add_argument("--flip", action="store_true", help="average with the mirrored image (eval.flip=true)")
    p.add_argument("--scales", type=float, nargs="+", metavar="S", help="test-time scales (eval.scales)")
    p.add_argument(
        "--no-ema", action="store_true", help="use the raw weights even if the checkpoint has EMA weights"
    )
    p.add_argument(
        "--alpha", type=float, default=0.5, help="opacity of the colour mask in the overlay (default 0.5)"
    )
    p.add_argument(
        "--fast-path",
        choices=FAST_PATHS,
        help="CPU fast path (eval.fast_path): winograd = fp32's results, faster; int8 = close, faster still",
    )
    p.add_argument("--device", default="auto", help="auto (CUDA if available, else CPU), cpu, cuda or cuda:N")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p.parse_intermixed_args(argv)


def flag_overrides(args: argparse.Namespace) -> list[str]:
    """Return the key=value overrides the convenience flags stand for (applied after the others)."""
    out = []
    if args.flip:
        out.append("eval.flip=true")
    if args.scales:
        out.append("eval.scales=[" + ",".join(repr(float(s)) for s in args.scales) + "]")
    if args.no_ema:
        out.append("eval.use_ema=false")
    if args.fast_path:
        out.append(f"eval.fast_path={args.fast_path}")
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """Segment the inputs; return the exit status (1 if any input failed, after doing the others)."""
    args = parse_args(argv)
    from fcn.inference import load_model, predict_files, select_device

    try:
        if not 0.0 <= args.alpha <= 1.0:
            raise ValueError(f"--alpha {args.alpha} must be between 0 and 1")
        model, cfg = load_model(
            args.checkpoint,
            select_device(args.device),
            None,
            args.config,
            [*args.overrides, *flag_overrides(args)],
        )
        done, errors = predict_files(
            model, cfg, args.input, args.output, alpha=args.alpha, progress=not args.no_progress
        )
    except (ConfigError, CheckpointError, ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    print(f"wrote {done} image(s) to {args.output}")
    if errors:
        print(
            f"error: {len(errors)} input(s) failed (listed above); the others were written", file=sys.stderr
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
