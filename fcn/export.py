"""Export a checkpoint's model to ONNX (dynamic batch, height and width) or TorchScript, and check
the exported model against PyTorch on inputs of several sizes.

    python -m fcn.export --checkpoint runs/x/checkpoints/best.pt --output fcn8s.onnx
    python -m fcn.export --checkpoint best.pt --output fcn8s.pt --format torchscript

The exported model takes a float32 image batch (N, C, H, W), C = the checkpoint's model.in_channels
(3 for RGB), normalised as the checkpoint's
data.transforms.normalization (and mean/std, which hold a timm backbone's own) say, and returns logits
(N, num_classes, H, W).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from omegaconf import DictConfig
from torch import nn

from fcn.checkpoint import atomic_write

DEFAULT_OPSET = 17
CHECK_SIZES = ((1, 3, 64, 64), (2, 3, 97, 131))
"""Input shapes the export is checked on: odd sizes exercise the paper geometry's crops (the
channel count is the model's, see input_channels)."""


def input_channels(model: nn.Module) -> int:
    """Return the channel count the model's input takes (FCN.in_channels; 3 for other modules)."""
    return int(getattr(model, "in_channels", 3))


def _shape(shape: Sequence[int], model: nn.Module) -> tuple[int, ...]:
    """Return an (N, C, H, W) shape with C set to the model's input channels."""
    return (int(shape[0]), input_channels(model), *(int(v) for v in shape[2:]))


def export_onnx(
    model: nn.Module,
    path: str | os.PathLike,
    *,
    opset: int = DEFAULT_OPSET,
    dynamic: bool = True,
    sample_shape: Sequence[int] = (1, 3, 224, 224),
    metadata: dict[str, str] | None = None,
) -> None:
    """Write model (in eval mode, on the CPU) as ONNX to path, atomically: input 'image', output
    'logits'; batch, height and width dynamic unless dynamic=False (then fixed at sample_shape,
    whose channel count is the model's own)."""
    import onnx

    model = model.eval()
    sample = torch.zeros(*_shape(sample_shape, model))
    axes = {0: "batch", 2: "height", 3: "width"}

    def write(tmp: Path) -> None:
        with warnings.catch_warnings(), torch.no_grad():
            # The TorchScript-based exporter (dynamo=False) traces size arithmetic (the paper
            # geometry's crops after ceil-mode pools) into Shape/Slice ops that stay dynamic.
            warnings.simplefilter("ignore")
            torch.onnx.export(
                model,
                (sample,),
                tmp,
                dynamo=False,
                opset_version=opset,
                input_names=["image"],
                output_names=["logits"],
                dynamic_axes={"image": axes, "logits": axes} if dynamic else None,
                do_constant_folding=True,
            )
        proto = onnx.load(tmp)
        onnx.checker.check_model(proto)
        for key, value in (metadata or {}).items():
            entry = proto.metadata_props.add()
            entry.key, entry.value = key, value
        onnx.save(proto, tmp)

    atomic_write(path, write)


def export_torchscript(
    model: nn.Module, path: str | os.PathLike, sample_shape: Sequence[int] = (1, 3, 224, 224)
) -> None:
    """Write model traced to TorchScript at path, atomically (sizes stay symbolic in the trace)."""
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(model.eval(), torch.zeros(*_shape(sample_shape, model)), check_trace=False)
    atomic_write(path, lambda tmp: traced.save(str(tmp)))


def _inputs(shapes: Sequence[Sequence[int]], seed: int = 0) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(*shape, generator=generator) for shape in shapes]


@torch.no_grad()
def check_onnx(
    model: nn.Module, path: str | os.PathLike, shapes: Sequence[Sequence[int]] = CHECK_SIZES
) -> list[float]:
    """Return the max absolute difference between ONNX Runtime's and PyTorch's logits per input shape."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    diffs = []
    for x in _inputs([_shape(shape, model) for shape in shapes]):
        expected = model.eval()(x).numpy()
        (got,) = session.run(["logits"], {"image": x.numpy()})
        if got.shape != expected.shape:
            raise ValueError(
                f"{path}: ONNX output {got.shape} for input {tuple(x.shape)}, PyTorch {expected.shape}"
            )
        diffs.append(float(np.abs(got - expected).max()))
    return diffs


@torch.no_grad()
def check_torchscript(
    model: nn.Module, path: str | os.PathLike, shapes: Sequence[Sequence[int]] = CHECK_SIZES
) -> list[float]:
    """Return the max absolute difference between the TorchScript file's and the model's logits per shape."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit is deprecated, still works
        loaded = torch.jit.load(str(path), map_location="cpu")
    diffs = []
    for x in _inputs([_shape(shape, model) for shape in shapes]):
        expected, got = model.eval()(x), loaded(x)
        if got.shape != expected.shape:
            raise ValueError(f"{path}: TorchScript output {tuple(got.shape)} for input {tuple(x.shape)}")
        diffs.append(float((got - expected).abs().max()))
    return diffs


def export_metadata(cfg: DictConfig) -> dict[str, str]:
    """Return what a user of the exported file needs: class names, palette, input channels and
    normalisation (mean/std: the config's, or for C != 3 channels the per-channel values 'auto' uses)."""
    from fcn.data import class_names, palette
    from fcn.data.transforms import channel_stats, input_normalization

    channels = int(cfg.model.in_channels)
    mean, std = list(cfg.data.transforms.mean), list(cfg.data.transforms.std)
    if channels != 3 and not mean:
        stats = channel_stats(input_normalization(cfg.data.transforms), channels)
        mean, std = list(stats.mean), list(stats.std)
    return {
        "classes": json.dumps(class_names(cfg.data)),
        "palette": json.dumps(palette(cfg.data)[: int(cfg.model.num_classes)].tolist()),
        "normalization": str(cfg.data.transforms.normalization),
        "in_channels": str(channels),
        "mean": json.dumps(mean),  # [] for 3 channels unless 'auto' resolved to a mean/std
        "std": json.dumps(std),
        "arch": f"{cfg.model.arch}/{cfg.model.backbone}/{cfg.model.geometry}",
    }


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Return the parsed command line."""
    p = argparse.ArgumentParser(prog="python -m fcn.export", description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", required=True, help="checkpoint (.pt) written by train.py or imported")
    p.add_argument("--output", required=True, help="file to write (model.onnx, or model.pt for torchscript)")
    p.add_argument("--format", choices=("onnx", "torchscript"), default="onnx")
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
    return p.parse_intermixed_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Export and check; return the exit code (fcn.cli's rule), errors as one 'error:' line."""
    args = parse_args(argv)
    from fcn.cli import run_phases
    from fcn.data.transforms import input_normalization
    from fcn.prediction import load_model

    def prepare():
        needed = ["onnx", "onnxscript"] + ([] if args.no_check else ["onnxruntime"])
        for name in needed if args.format == "onnx" else []:
            if importlib.util.find_spec(name) is None:
                raise ValueError(f"{name} is not installed (pip install -r requirements.dev.txt)")
        return load_model(args.checkpoint, "cpu", False if args.no_ema else None)

    def work(loaded) -> None:
        model, cfg = loaded
        channels = int(cfg.model.in_channels)
        sample = (1, channels, *args.size)
        if args.format == "onnx":
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
    sys.exit(main())
