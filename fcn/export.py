"""Export a checkpoint's model to ONNX (dynamic batch, height and width) or TorchScript, and check
the exported model against PyTorch on inputs of several sizes.

    python -m fcn.export --checkpoint runs/x/checkpoints/best.pt --output fcn8s.onnx
    python -m fcn.export --checkpoint best.pt --output fcn8s.pt --format torchscript
    python -m fcn.export --checkpoint best.pt --output fcn8s-voc/ --format hub    # then: hf upload <user>/<repo> fcn8s-voc/ .
    python -m fcn.export --checkpoint best.pt --triton model_repository/   # fcn/config.pbtxt + fcn/1/model.onnx

The exported model takes a float32 image batch (N, C, H, W), C = the checkpoint's model.in_channels
(3 for RGB), normalised as the checkpoint's
data.transforms.normalization (and mean/std, which hold a timm backbone's own) say, and returns logits
(N, num_classes, H, W). ``--format hub`` writes a folder in the Hugging Face Hub's shape instead
(model.safetensors, config.json, README.md: fcn.inference.hub), which Segmenter.from_pretrained loads.
``--triton DIR`` writes a Triton Inference Server model repository: DIR/<--model-name>/1/model.onnx
and DIR/<--model-name>/config.pbtxt (ONNX Runtime backend, dynamic batching on, the class names and
palette as parameters: fcn.inference.onnx.triton_config).
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path
from typing import Sequence

from fcn.core.errors import leave, run_phases
from fcn.inference.onnx import (
    CHECK_SIZES,
    DEFAULT_OPSET,
    check_onnx,
    check_torchscript,
    export_metadata,
    export_onnx,
    export_torchscript,
    write_triton_repository,
)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Return the parsed command line."""
    p = argparse.ArgumentParser(prog="python -m fcn.export", description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", required=True, help="checkpoint (.pt) written by train.py or imported")
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument(
        "--output", help="file to write (model.onnx, model.pt for torchscript), or the hub folder"
    )
    where.add_argument(
        "--triton",
        metavar="DIR",
        help="write a Triton model repository: DIR/<model name>/config.pbtxt and DIR/<model name>/1/model.onnx",
    )
    p.add_argument("--format", choices=("onnx", "torchscript", "hub"), default="onnx")
    p.add_argument(
        "--model-name", default="fcn", help="--triton: the model's name in the repository (default fcn)"
    )
    p.add_argument(
        "--max-batch-size",
        type=int,
        default=8,
        help="--triton: the largest batch Triton's dynamic batcher forms (default 8)",
    )
    p.add_argument("--opset", type=int, default=DEFAULT_OPSET, help=f"ONNX opset (default {DEFAULT_OPSET})")
    p.add_argument(
        "--dynamic",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="dynamic batch, height and width (default); --no-dynamic fixes them at --size",
    )
    p.add_argument(
        "--size", type=int, nargs=2, default=(224, 224), metavar=("H", "W"), help="sample input size"
    )
    p.add_argument(
        "--no-ema", action="store_true", help="export the raw weights even if the checkpoint has EMA weights"
    )
    p.add_argument("--atol", type=float, default=1e-3, help="largest accepted |ONNX - PyTorch| on the logits")
    p.add_argument("--no-check", action="store_true", help="skip the check against PyTorch")
    args = p.parse_intermixed_args(argv)
    if args.triton is not None:
        if args.format != "onnx":
            p.error(f"--triton writes ONNX (Triton's onnxruntime_onnx platform), not --format {args.format}")
        if not args.dynamic:
            p.error(
                "--triton needs --dynamic: Triton's dynamic batching stacks requests on the batch dimension"
            )
        if not args.model_name or args.model_name in (".", "..") or set("/\\") & set(args.model_name):
            p.error(f"--model-name {args.model_name!r}: a folder name (no '/'), as Triton names models")
        if args.max_batch_size < 1:
            p.error(f"--max-batch-size {args.max_batch_size} must be 1 or more")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Export and check; return the exit code (fcn.core.errors' rule), errors as one 'error:' line."""
    args = parse_args(argv)
    from fcn.core.normalize import input_normalization
    from fcn.inference.loading import load_model  # torch: after the command line is read

    def prepare():
        needed = ["onnx", "onnxscript"] + ([] if args.no_check else ["onnxruntime"])
        for name in needed if args.format == "onnx" else []:
            if importlib.util.find_spec(name) is None:
                raise ValueError(f"{name} is not installed (pip install -r requirements.dev.txt)")
        return load_model(args.checkpoint, "cpu", False if args.no_ema else None)

    def work(loaded) -> None:
        model, cfg = loaded
        if args.format == "hub":
            from fcn.config import to_dict
            from fcn.inference.hub import run_record, write_folder

            folder = write_folder(model, to_dict(cfg), args.output, run_record(args.checkpoint))
            print(
                f'wrote {folder}: model.safetensors, config.json, README.md (upload: hf upload <user>/<repo> {folder} . --exclude "*.onnx")'
            )
            return
        channels = int(cfg.model.in_channels)
        sample = (1, channels, *args.size)
        if args.triton is not None:
            args.output = write_triton_repository(
                model,
                args.triton,
                args.model_name,
                opset=args.opset,
                sample_shape=sample,
                metadata=export_metadata(cfg),
                max_batch_size=args.max_batch_size,
            )
            print(
                f"wrote {Path(args.triton) / args.model_name}: config.pbtxt (max_batch_size {args.max_batch_size}, "
                "dynamic batching) and 1/model.onnx"
            )
        elif args.format == "onnx":
            export_onnx(
                model,
                args.output,
                opset=args.opset,
                dynamic=args.dynamic,
                sample_shape=sample,
                metadata=export_metadata(cfg),
            )
        else:
            export_torchscript(model, args.output, sample_shape=sample)
        print(
            f"wrote {args.output} ({args.format}; input 'image' (N, {channels}, H, W) float32 normalised as "
            f"{input_normalization(cfg.data.transforms)!r}, output 'logits' (N, {cfg.model.num_classes}, H, W))"
        )
        if args.no_check:
            return
        shapes = [sample] if not args.dynamic else [sample, *CHECK_SIZES]
        check = check_onnx if args.format == "onnx" else check_torchscript
        diffs = check(model, args.output, shapes)
        for shape, diff in zip(shapes, diffs):
            print(f"input {tuple(shape)}: max |{args.format} - pytorch| = {diff:.2e}")
        if max(diffs) > args.atol:
            raise ValueError(
                f"{args.output}: exported model differs from PyTorch by {max(diffs):.2e} > --atol {args.atol}"
            )

    return run_phases(prepare, work)


if __name__ == "__main__":
    sys.exit(leave(main()))
