"""Import of the authors' Caffe FCNs: their ``.caffemodel`` files, or state dicts in the reference naming.

A ``.caffemodel`` is read directly (``fcn.models.caffe``: no Caffe, no protobuf), its layers mapped by
name onto the model (blob 0 = weight, blob 1 = bias) and every shape checked. A state dict in the
reference naming (the public conversions) names its tensors after the reference prototxts: ``conv1_1`` ... ``conv5_3``,
``fc6``, ``fc7``, ``score_fr``, ``score_pool4``, ``score_pool3`` (each ``.weight`` and ``.bias``) and
the deconvolutions ``upscore`` (32s), ``upscore2`` + ``upscore16`` (16s) or ``upscore2`` +
``upscore_pool4`` + ``upscore8`` (8s), ``.weight`` only. ``load_reference_weights`` loads one into
FCN32s / FCN16s / FCN8s / FCN8sAtOnce (VGG16, transposed upsampling, skip fusion), strictly.

These weights were trained on Caffe's input, not torchvision's: BGR channel order, values 0-255,
minus the mean (B, G, R) = (104.00698793, 116.66876762, 122.67891434), no division by a std. Evaluate
them with ``data.transforms.normalization=caffe``; the checkpoint the command below writes carries
that setting in its config::

    python -m fcn.models.reference fcn8s-heavy-pascal.caffemodel fcn8s-caffe.pt --arch fcn8s
    python -m fcn.models.reference fcn8s_from_caffe.pth fcn8s-caffe.pt --arch fcn8s
    python evaluate.py --checkpoint fcn8s-caffe.pt data.val.root=data data.val.split=seg11valid
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys
from typing import Dict, List, Mapping, Optional, Sequence

import numpy as np
import torch
from torch import Tensor

from fcn.checkpoint import WriteError, save_checkpoint, weights_checkpoint
from fcn.cli import EXIT_BAD_INPUT, EXIT_FAILURE, report
from fcn.config import ARCHS, load_config, to_dict
from fcn.models.backbones import read_state_dict
from fcn.models.caffe import ZIP_MAGIC, read_caffemodel
from fcn.models.fcn import AT_ONCE_SCALE, FCN, build_model

# The Caffe mean the reference data layers subtract (voc_layers.py), in BGR order.
CAFFE_MEAN_BGR = (104.00698793, 116.66876762, 122.67891434)

# FCN-8s at-once's fixed Scale layers; a conversion may carry their (constant) blobs.
_SCALE_KEYS = {"scale_pool4.weight": AT_ONCE_SCALE[16], "scale_pool3.weight": AT_ONCE_SCALE[8]}


def reference_key_map(model: FCN) -> Dict[str, str]:
    """Return {reference name: model state-dict key} for model, or raise if it has no reference."""
    if not isinstance(model, FCN):
        raise ValueError(
            f"load_reference_weights needs an FCN32s/16s/8s/8sAtOnce, not {type(model).__name__}"
        )
    if model.backbone_name != "vgg16" or model.upsampling != "transposed" or model.fusion != "skip":
        raise ValueError(
            "reference weights fit backbone=vgg16, upsampling=transposed, fusion=skip; this model has "
            f"backbone={model.backbone_name}, upsampling={model.upsampling}, fusion={model.fusion}"
        )
    # VGG16Backbone and the FCN heads use the reference's own layer names; only the prefix differs.
    return {key.removeprefix("backbone."): key for key in model.state_dict()}


def load_reference_weights(model: FCN, state_dict: Mapping[str, Tensor]) -> None:
    """Load a state dict in the reference naming into model; any missing or unexpected key is an error."""
    mapping = reference_key_map(model)
    arch = model.arch
    for key in state_dict:
        if key in mapping:
            continue
        if model.at_once and key in _SCALE_KEYS:
            value = torch.as_tensor(state_dict[key], dtype=torch.float64)
            if not torch.allclose(value, torch.full_like(value, _SCALE_KEYS[key]), rtol=1e-5, atol=0):
                raise ValueError(
                    f"reference '{key}' is not the constant {_SCALE_KEYS[key]} that {arch} applies"
                )
            continue
        raise ValueError(f"reference state dict has unexpected key '{key}' for {arch}")
    for key in mapping:
        if key not in state_dict:
            raise ValueError(f"reference state dict lacks '{key}', which {arch} needs")
    own = model.state_dict()
    values = {}
    for key, own_key in mapping.items():
        value = torch.as_tensor(state_dict[key])
        target = own[own_key]
        # fc6/fc7 may come as the linear layers' (4096, 25088) / (4096, 4096) matrices: the same
        # numbers as the convolutions (the reference's surgery.transplant "coercing").
        coercible = key.split(".")[0] in ("fc6", "fc7") and value.numel() == target.numel()
        if value.shape != target.shape and not coercible:
            raise ValueError(
                f"reference '{key}' has shape {tuple(value.shape)}, {arch} expects {tuple(target.shape)}"
            )
        values[own_key] = value.reshape(target.shape)
    with torch.no_grad():
        for own_key, value in values.items():
            own[own_key].copy_(value)


def _fits(blob: tuple, target: tuple, layer: str) -> bool:
    """Whether a Caffe blob of shape blob holds the model tensor of shape target."""

    def squeeze(shape: tuple) -> tuple:
        return tuple(itertools.dropwhile(lambda d: d == 1, shape))

    # Legacy blobs are 4-D (num, channels, height, width): a bias of 21 is (1, 1, 1, 21).
    if squeeze(blob) == squeeze(target):
        return True
    # fc6/fc7 as InnerProduct: the same numbers as the convolutions (surgery.transplant's "coercing").
    return layer in ("fc6", "fc7") and len(target) == 4 and int(np.prod(blob)) == int(np.prod(target))


def reference_weights_from_caffe(
    layers: Mapping[str, Sequence[np.ndarray]], model: FCN, source: str
) -> Dict[str, Tensor]:
    """Return the state dict in the reference naming that load_reference_weights takes, from a
    caffemodel's {layer name: blobs} (fcn.models.caffe.read_caffemodel), each shape checked against
    model; source names the file in the one-line errors."""
    mapping = reference_key_map(model)
    arch = model.arch
    own = model.state_dict()
    expected: Dict[str, List[str]] = {}  # layer: its blobs in Caffe's order (weight, then bias)
    for key in mapping:
        layer, param = key.rsplit(".", 1)
        expected.setdefault(layer, []).append(param)
    if model.at_once:
        # Scale { filler: constant } layers hold their one blob; load_reference_weights checks its value.
        expected.update({key.split(".")[0]: ["weight"] for key in _SCALE_KEYS})
    weighted = [name for name, blobs in layers.items() if len(blobs)]
    for name in weighted:
        if name not in expected:
            hint = (
                " (the at-once net's: --arch fcn8s_atonce)" if name in ("scale_pool4", "scale_pool3") else ""
            )
            raise ValueError(
                f"{source}: layer '{name}' holds weights but {arch} has no such layer{hint}; is --arch right?"
            )
    # Every layer checked (in the model's order) before any tensor is made.
    plan = []
    for name, params in expected.items():
        blobs = layers.get(name)
        if not blobs:
            raise ValueError(
                f"{source}: layer '{name}' with weights is missing; {arch} needs it (the file has "
                f"weights for {', '.join(weighted) or 'no layer'}); is --arch right?"
            )
        if len(blobs) != len(params):
            raise ValueError(
                f"{source}: layer '{name}' has {len(blobs)} blobs, {arch} expects {len(params)} "
                f"({', '.join(params)})"
            )
        for index, (param, blob) in enumerate(zip(params, blobs)):
            key = f"{name}.{param}"
            target = tuple(own[mapping[key]].shape) if key in mapping else tuple(blob.shape)
            if not _fits(tuple(blob.shape), target, name):
                raise ValueError(
                    f"{source}: layer '{name}' blob {index} ({param}) has shape {tuple(blob.shape)}, "
                    f"{arch} expects {target}"
                )
            plan.append((key, blob, target))
    state: Dict[str, Tensor] = {}
    for key, blob, target in plan:
        array = np.asarray(blob, dtype=np.float32)  # float64 from double_data; float32 as is
        state[key] = torch.from_numpy(array if array.flags.writeable else array.copy()).reshape(target)
    return state


def is_caffemodel(path: str) -> bool:
    """Whether path is to be read as a .caffemodel: by its suffix, else by not being a PyTorch file
    (torch.save writes a zip archive, or a pickle in the legacy format)."""
    if path.lower().endswith(".caffemodel"):
        return True
    with open(path, "rb") as f:
        head = f.read(4)
    return not (head == ZIP_MAGIC or head[:1] == b"\x80")


def _caffe_num_classes(layers: Mapping[str, Sequence[np.ndarray]], path: str) -> int:
    """Return the number of classes of a caffemodel's FCN: score_fr's number of outputs."""
    blobs = layers.get("score_fr")
    if not blobs:
        with_weights = [name for name, b in layers.items() if len(b)]
        raise ValueError(
            f"{path}: no layer 'score_fr' with weights: not one of the authors' FCNs (the file has weights "
            f"for {', '.join(with_weights) or 'no layer'})"
        )
    # The bias has one value per class (legacy 4-D blobs: (1, 1, 1, classes)); the weight's first axis too.
    return int(blobs[1].size) if len(blobs) > 1 else int(blobs[0].shape[0])


def _read_state_dict(path: str) -> Mapping[str, Tensor]:
    state = read_state_dict(path)
    if isinstance(state, Mapping) and "score_fr.weight" not in state:
        for nested in ("state_dict", "model"):
            if isinstance(state.get(nested), Mapping):
                state = state[nested]
                break
    if not isinstance(state, Mapping) or "score_fr.weight" not in state:
        raise ValueError(f"{path}: not a state dict in the reference naming (no 'score_fr.weight')")
    return state


def convert(in_path: str, out_path: str, arch: str = "fcn8s") -> str:
    """Write a checkpoint {'model', 'config'} loadable by evaluate.py from the authors' weights (a
    .caffemodel, or a state dict in the reference naming); return a summary."""
    if not os.path.isfile(in_path):
        raise FileNotFoundError(
            f"{in_path}: no such file (give a .caffemodel, or a .pt/.pth state dict in the reference naming)"
        )
    caffe = is_caffemodel(in_path)
    if caffe:
        try:
            layers = read_caffemodel(in_path)
        except ValueError as exc:
            if in_path.lower().endswith(".caffemodel"):
                raise
            raise ValueError(f"{exc} (nor is it a PyTorch file)") from None
        num_classes = _caffe_num_classes(layers, in_path)
    else:
        state = _read_state_dict(in_path)
        num_classes = int(state["score_fr.weight"].shape[0])
    overrides = [
        f"model.arch={arch}",
        "model.backbone=vgg16",
        "model.pretrained=false",
        "model.geometry=paper",
        "model.upsampling=transposed",
        "model.fusion=skip",
        f"model.num_classes={num_classes}",
        "data.transforms.normalization=caffe",
    ]
    if num_classes != 21:
        overrides.append("data.classes=[" + ",".join(f"class_{i}" for i in range(num_classes)) + "]")
    cfg = load_config(overrides=overrides)
    with torch.device("meta"):
        shapes = build_model(cfg.model)  # every check below runs on shapes, before 134M weights are made
    if caffe:
        state = reference_weights_from_caffe(layers, shapes, in_path)
    load_reference_weights(shapes, state)
    model = build_model(cfg.model)
    load_reference_weights(model, state)
    save_checkpoint(weights_checkpoint(model=model, config=to_dict(cfg)), out_path)
    source = f"the Caffe NetParameter {in_path} ({len(layers)} layers)" if caffe else in_path
    return (
        f"wrote {out_path}: {arch}, {num_classes} classes, {len(state)} tensors from {source}; "
        "its config sets data.transforms.normalization=caffe (BGR, 0-255, minus the Caffe mean)"
    )


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Convert the authors' weights (.caffemodel or reference-named state dict) into a checkpoint (the command line)."""
    parser = argparse.ArgumentParser(
        prog="python -m fcn.models.reference",
        description="Convert the authors' Caffe FCN weights (a .caffemodel, or a state dict in the "
        "reference layer naming) into a checkpoint that evaluate.py and predict.py load. The weights "
        "expect Caffe input (BGR, 0-255, minus the mean 104.00698793, 116.66876762, 122.67891434); the checkpoint's config says so.",
    )
    parser.add_argument(
        "input",
        help="the authors' .caffemodel (e.g. fcn8s-heavy-pascal.caffemodel), or a .pt/.pth state dict with "
        "conv1_1.weight ... score_fr.weight ...",
    )
    parser.add_argument("output", help="checkpoint to write")
    parser.add_argument("--arch", choices=ARCHS, default="fcn8s", help="which reference net (default fcn8s)")
    args = parser.parse_args(argv)
    try:
        print(convert(args.input, args.output, args.arch))
    except (OSError, ValueError, RuntimeError) as exc:
        # Every check (the file, its keys and shapes) comes before the one write, so a failure is
        # the input's (2) unless the write itself failed (1).
        report(exc)
        return EXIT_FAILURE if isinstance(exc, WriteError) else EXIT_BAD_INPUT
    return 0


if __name__ == "__main__":
    sys.exit(main())
