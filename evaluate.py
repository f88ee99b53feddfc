"""Score a checkpoint on a validation split at native resolution: the paper's four metrics and the
per-class IU, optionally with test-time augmentation (flip, scales).

    python evaluate.py --checkpoint runs/x/checkpoints/best.pt
    python evaluate.py --checkpoint best.pt --flip --scales 0.5 0.75 1.0 1.25 1.5 1.75 --output val.json
        (also writes val_confusion.png and val_iou.png; --plots DIR writes DIR/confusion.png, DIR/iou.png)
    python evaluate.py --checkpoint fcn8s-caffe.pt data.val.split=seg11valid --save-predictions preds/
    python evaluate.py --checkpoint best.pt --mode slide --tile 512 --stride 341
    python evaluate.py --checkpoint best.pt --per-image val_images.csv   # + val_images_worst.png
    python evaluate.py --checkpoint best.pt --sweep-thresholds   # binary/multilabel: best eval.threshold
    torchrun --nproc_per_node=4 evaluate.py --checkpoint best.pt --output val.json

Under torchrun each process scores every N-th image and the confusion matrices are summed: the
metrics are one process's; rank 0 alone prints and writes them (each process its own --save-predictions).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

from fcn.cli import add_config_arguments, add_eval_arguments, add_trust_argument, eval_overrides
from fcn.core.errors import leave, run_phases


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Return the parsed command line."""
    p = argparse.ArgumentParser(
        description="Evaluate a checkpoint on data.val (the checkpoint's config, merged with --config "
        "files and key=value overrides) at each image's native resolution.",
    )
    p.add_argument(
        "--checkpoint", help="checkpoint (.pt) written by train.py or imported (may also come first, unnamed)"
    )
    add_config_arguments(p, "the checkpoint's config")
    p.add_argument("--split", help="evaluate this split of data.val's dataset (data.val.split)")
    add_eval_arguments(p)
    add_trust_argument(p)
    p.add_argument(
        "--output",
        metavar="FILE.json",
        help="write the metrics, per-class IU and confusion matrix as JSON, and beside it FILE_confusion.png "
        "(row-normalised confusion matrix) and FILE_iou.png (per-class IU bar chart)",
    )
    p.add_argument(
        "--plots", metavar="DIR", help="write DIR/confusion.png and DIR/iou.png (with or without --output)"
    )
    p.add_argument(
        "--per-image",
        metavar="FILE.csv",
        help="write one row per image (id, size, pixel accuracy, mean IU over the classes present, each "
        "class's IU), print the five worst images by mean IU and draw them in FILE_worst.png",
    )
    p.add_argument(
        "--save-predictions",
        metavar="DIR",
        help="write each prediction as DIR/<image id>.png (palette PNG; data.task=binary: 0/255, multilabel: "
        "DIR/<class>/<image id>.png)",
    )
    p.add_argument(
        "--sweep-thresholds",
        action="store_true",
        help="data.task binary or multilabel: also score at thresholds 0.05, 0.10, ..., 0.95 and print the "
        "best one per metric (one pass over the images)",
    )
    args = p.parse_intermixed_args(argv)
    if args.checkpoint is None:
        # `python evaluate.py best.pt key=value ...`: the first argument without '=' is the checkpoint.
        plain = [item for item in args.overrides if "=" not in item]
        if not plain:
            p.error("give the checkpoint to evaluate: --checkpoint FILE")
        args.checkpoint = plain[0]
        args.overrides.remove(plain[0])
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run the evaluation; return the exit code (fcn.core.errors' rule), errors as one 'error:' line."""
    args = parse_args(argv)
    from fcn.core import distributed
    from fcn.core.metrics import format_sigmoid_table, format_table
    from fcn.core.runtime import select_device
    from fcn.core.visualize import save_png
    from fcn.data import class_names
    from fcn.inference.evaluation import (
        SWEEP_THRESHOLDS,
        Evaluation,
        plot_paths,
        prepare_evaluation,
        run_evaluation,
        save_error_plots,
        worst_grid,
        worst_images,
        write_json,
        write_per_image_csv,
    )

    overrides = [
        *args.overrides,
        *([f"data.val.split={args.split}"] if args.split else []),
        *eval_overrides(args),
    ]

    def prepare() -> Evaluation:
        device = distributed.process_device(args.device)
        distributed.setup(select_device(device))  # torchrun: join its process group; alone, a no-op
        ev = prepare_evaluation(
            args.checkpoint,
            args.config,
            overrides,
            device=device,
            trust_remote_code=args.trust_remote_code,
        )
        if args.sweep_thresholds and ev.cfg.data.task == "multiclass":
            from fcn.config import ConfigError

            raise ConfigError(
                f"{args.checkpoint}: --sweep-thresholds is for data.task binary or multilabel; this model's "
                "task is multiclass (the argmax, no threshold)"
            )
        return ev

    def work(ev: Evaluation) -> None:
        report = run_evaluation(
            ev,
            save_predictions=args.save_predictions,
            progress=not args.no_progress and distributed.is_primary(),
            per_image=bool(args.per_image),
            sweep=SWEEP_THRESHOLDS if args.sweep_thresholds else (),
        )
        if not distributed.is_primary():
            return  # every process holds the whole report; the first one prints and writes it
        v, e = ev.cfg.data.val, ev.cfg.eval
        tta = f"flip={e.flip} scales={list(e.scales)}" + (
            f" fast_path={e.fast_path}" if e.fast_path != "none" else ""
        )
        if e.mode == "slide":
            tta += f" slide tile={e.tile} stride={e.stride}"
        print(
            f"{args.checkpoint} ({report['weights']} weights) on {v.name} '{v.split}': "
            f"{report['num_images']} images, {tta}"
        )
        sigmoid = ev.cfg.data.task != "multiclass"
        print((format_sigmoid_table if sigmoid else format_table)(report, class_names(ev.cfg.data)))
        for key, row in report.get("best", {}).items():
            print(f"best {key}: {100 * row[key]:.2f} at threshold {row['threshold']:g}")
        if args.output:
            write_json(report, args.output)
            print(f"wrote {args.output}")
        if args.per_image:
            rows = report["per_image"]
            write_per_image_csv(rows, class_names(ev.cfg.data), args.per_image)
            worst = worst_images(rows, 5)
            listed = ", ".join(f"{r['id']} ({100 * r['mean_iou']:.1f})" for r in worst)
            print(f"wrote {args.per_image}; the {len(worst)} worst images by mean IU (%): {listed}")
            if worst:
                grid_path = Path(args.per_image).with_name(f"{Path(args.per_image).stem}_worst.png")
                save_png(worst_grid(ev, worst), grid_path)
                print(f"wrote {grid_path} (image | ground truth | prediction, worst first)")
        for confusion_png, iou_png in plot_paths(args.output, args.plots):
            save_error_plots(report, ev.cfg, confusion_png, iou_png)
            print(f"wrote {confusion_png} and {iou_png}")
        if args.save_predictions:
            print(f"wrote {report['num_images']} predictions to {args.save_predictions}")

    code = 1
    try:
        code = run_phases(prepare, work)
        return code
    finally:
        distributed.cleanup(synchronize=code == 0)


if __name__ == "__main__":
    sys.exit(leave(main()))
