"""A model exported to ONNX (dynamic batch, height and width) or TorchScript, and checked against
PyTorch on inputs of several sizes: the library under ``python -m fcn.export`` (fcn/export.py) and
the engines' cached exports (fcn.inference.engines).

The exported model takes a float32 image batch (N, C, H, W), C = the checkpoint's model.in_channels
(3 for RGB), normalised as the checkpoint's
data.transforms.normalization (and mean/std, which hold a timm backbone's own) say, and returns logits
(N, num_classes, H, W).
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from omegaconf import DictConfig
from torch import nn

from fcn.core.files import atomic_write

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
    normalisation (mean/std: the config's, or for C != 3 channels the per-channel values 'auto' uses),
    and how the logits become masks (data.task, eval.threshold)."""
    from fcn.core.normalize import channel_stats, input_normalization
    from fcn.data import class_names, palette

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
        # data.task: multiclass takes the argmax of the logits; binary/multilabel a class where
        # sigmoid(logit) > threshold (fcn.core.tasks), as evaluate.py and predict.py do with any engine
        "task": str(cfg.data.task),
        "threshold": str(float(cfg.eval.threshold)),
    }
