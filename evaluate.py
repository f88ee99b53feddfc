"""Score a checkpoint on a validation split at native resolution: the paper's four metrics and the
per-class IU, optionally with test-time augmentation (flip, scales).

    python evaluate.py --checkpoint runs/x/checkpoints/best.pt
    python evaluate.py --checkpoint best.pt --flip --scales 0.5 0.75 1.0 1.25 1.5 1.75 --output val.json
    python evaluate.py --checkpoint fcn8s-caffe.pt data.val.split=seg11valid --save-predictions preds/
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
        description="Evaluate a checkpoint on data.val (the checkpoint's config, merged with --config "
        "files and key=value overrides) at each image's native resolution.",
    )
    p.add_argument(
        "--checkpoint", help="checkpoint (.pt) written by train.py or imported (may also come first, unnamed)"
    )
    p.add_argument(
        "--config",
        action="append",
        default=[],
        metavar="FILE",
        help="YAML merged over the checkpoint's config (repeatable)",
    )
    p.add_argument(
        "overrides", nargs="*", metavar="key=value", help="config overrides, e.g. data.val.root=/data"
    )
    p.add_argument("--split", help="evaluate this split of data.val's dataset (data.val.split)")
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
        "--no-ema",
        action="store_true",
        help="evaluate the raw weights even if the checkpoint has EMA weights",
    )
    p.add_argument("--amp", choices=("none", "bf16", "fp16"), help="mixed precision (eval.amp)")
    p.add_argument(
        "--fast-path",
        choices=FAST_PATHS,
        help="CPU fast path (eval.fast_path): winograd = fp32's results, faster; int8 = close, faster still",
    )
    p.add_argument("--device", default="auto", help="auto (CUDA if available, else CPU), cpu, cuda or cuda:N")
    p.add_argument(
        "--output", metavar="FILE.json", help="write the metrics, per-class IU and confusion matrix as JSON"
    )
    p.add_argument(
        "--save-predictions", metavar="DIR", help="write each prediction as DIR/<image id>.png (palette PNG)"
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = p.parse_intermixed_args(argv)
    if args.checkpoint is None:
        # `python evaluate.py best.pt key=value ...`: the first argument without '=' is the checkpoint.
        plain = [item for item in args.overrides if "=" not in item]
        if not plain:
            p.error("give the checkpoint to evaluate: --checkpoint FILE")
        args.checkpoint = plain[0]
        args.overrides.remove(plain[0])
    return args


def flag_overrides(args: argparse.Namespace) -> list[str]:
    """Return the key=value overrides the convenience flags stand for (applied after the others)."""
    out = []
    if args.split:
        out.append(f"data.val.split={args.split}")
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
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """Run the evaluation; return the exit status (0 on success, 1 with one 'error:' line)."""
    args = parse_args(argv)
    from fcn.data import class_names
    from fcn.inference import evaluate_checkpoint, write_json
    from fcn.metrics import format_table

    try:
        report, cfg = evaluate_checkpoint(
            args.checkpoint,
            args.config,
            [*args.overrides, *flag_overrides(args)],
            device=args.device,
            save_predictions=args.save_predictions,
            progress=not args.no_progress,
        )
        v, e = cfg.data.val, cfg.eval
        tta = f"flip={e.flip} scales={list(e.scales)}" + (
            f" fast_path={e.fast_path}" if e.fast_path != "none" else ""
        )
        print(
            f"{args.checkpoint} ({report['weights']} weights) on {v.name} '{v.split}': {report['num_images']} images, {tta}"
        )
        print(format_table(report, class_names(cfg.data)))
        if args.output:
            write_json(report, args.output)
            print(f"wrote {args.output}")
        if args.save_predictions:
            print(f"wrote {report['num_images']} predictions to {args.save_predictions}")
    except (ConfigError, CheckpointError, ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
