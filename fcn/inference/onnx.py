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
        # Shape inference loses the class count through a resize (bilinear upsampling): the logits'
        # channel dimension is the model's own, said in the file for servers that read it (Triton).
        channels = proto.graph.output[0].type.tensor_type.shape.dim[1]
        if not channels.HasField("dim_value"):
            with torch.no_grad():
                channels.dim_value = int(model(sample).shape[1])
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


TRITON_TYPES = {1: "TYPE_FP32", 2: "TYPE_UINT8", 3: "TYPE_INT8", 6: "TYPE_INT32", 7: "TYPE_INT64", 9: "TYPE_BOOL", 10: "TYPE_FP16", 11: "TYPE_FP64", 16: "TYPE_BF16"}  # fmt: skip
"""onnx.TensorProto's element types (FLOAT = 1, ...) as Triton's DataType names (model_config.proto)."""


def _quote(text: str) -> str:
    """Return text as a protobuf text-format string literal (UTF-8 kept, quote and backslash escaped)."""
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\r", "\\r")
    return f'"{escaped}"'


def onnx_tensors(path: str | os.PathLike) -> dict[str, list[tuple[str, int, list[int]]]]:
    """Return the ONNX model's graph inputs and outputs as {'input': [...], 'output': [...]}, each a
    (name, onnx element type, dims) with -1 for a dynamic (named) dimension."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    weights = {init.name for init in graph.initializer}

    def tensors(values) -> list[tuple[str, int, list[int]]]:
        return [
            (
                v.name,
                v.type.tensor_type.elem_type,
                [d.dim_value if d.HasField("dim_value") else -1 for d in v.type.tensor_type.shape.dim],
            )
            for v in values
            if v.name not in weights
        ]

    return {"input": tensors(graph.input), "output": tensors(graph.output)}


def triton_config(
    path: str | os.PathLike, name: str, *, max_batch_size: int = 8, max_queue_delay_us: int = 1000
) -> str:
    """Return the config.pbtxt (Triton's ModelConfig in protobuf text format) of the ONNX model at
    path, served by Triton's ONNX Runtime backend as `name`: its real input and output names, types
    and dims with the batch dimension left to max_batch_size (> 0) and dynamic batching on, and the
    model's metadata (export_metadata: classes, palette, normalisation, task, ...) as parameters.

    A dynamic height and width is -1 in dims; Triton's dynamic batcher joins only requests of one
    shape, so images of one size are batched together (as serve.py batches them)."""
    import onnx

    if max_batch_size < 1:
        raise ValueError(f"max_batch_size {max_batch_size}: Triton's dynamic batching needs 1 or more")
    tensors = onnx_tensors(path)
    lines = [f"name: {_quote(name)}", 'platform: "onnxruntime_onnx"', f"max_batch_size: {max_batch_size}"]
    for kind in ("input", "output"):
        entries = []
        for tensor, elem_type, dims in tensors[kind]:
            if not dims or dims[0] != -1:
                raise ValueError(
                    f"{path}: {kind} '{tensor}' has no dynamic batch dimension (dims {dims}); export with "
                    "--dynamic for Triton's dynamic batching"
                )
            if elem_type not in TRITON_TYPES:
                raise ValueError(
                    f"{path}: {kind} '{tensor}' has ONNX element type {elem_type}, not one Triton serves"
                )
            entries.append(
                f"  {{\n    name: {_quote(tensor)}\n    data_type: {TRITON_TYPES[elem_type]}\n"
                f"    dims: [ {', '.join(str(d) for d in dims[1:])} ]\n  }}"
            )
        lines.append(f"{kind} [\n" + ",\n".join(entries) + "\n]")
    lines.append(f"dynamic_batching {{\n  max_queue_delay_microseconds: {max_queue_delay_us}\n}}")
    metadata = onnx.load(str(path), load_external_data=False).metadata_props
    for prop in metadata:
        lines.append(
            f"parameters {{\n  key: {_quote(prop.key)}\n  value: {{ string_value: {_quote(prop.value)} }}\n}}"
        )
    return "\n".join(lines) + "\n"


def write_triton_repository(
    model: nn.Module,
    directory: str | os.PathLike,
    name: str = "fcn",
    *,
    opset: int = DEFAULT_OPSET,
    sample_shape: Sequence[int] = (1, 3, 224, 224),
    metadata: dict[str, str] | None = None,
    max_batch_size: int = 8,
) -> Path:
    """Write a Triton model repository for model at directory: <name>/1/model.onnx (export_onnx,
    dynamic batch, height and width) and <name>/config.pbtxt (triton_config), each atomically; return
    the path of model.onnx."""
    folder = Path(directory) / name
    onnx_path = folder / "1" / "model.onnx"
    onnx_path.parent.mkdir(parents=True, exist_ok=True)
    export_onnx(model, onnx_path, opset=opset, dynamic=True, sample_shape=sample_shape, metadata=metadata)
    text = triton_config(onnx_path, name, max_batch_size=max_batch_size)
    atomic_write(folder / "config.pbtxt", lambda tmp: tmp.write_text(text, encoding="utf-8"))
    return onnx_path
