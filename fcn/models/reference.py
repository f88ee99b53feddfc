"""Import of weights in the reference layer naming (the public conversions of the authors' Caffe FCNs).

Such a state dict names its tensors after the reference prototxts: ``conv1_1`` ... ``conv5_3``,
``fc6``, ``fc7``, ``score_fr``, ``score_pool4``, ``score_pool3`` (each ``.weight`` and ``.bias``) and
the deconvolutions ``upscore`` (32s), ``upscore2`` + ``upscore16`` (16s) or ``upscore2`` +
``upscore_pool4`` + ``upscore8`` (8s), ``.weight`` only. ``load_reference_weights`` loads one into
FCN32s / FCN16s / FCN8s / FCN8sAtOnce (VGG16, transposed upsampling, skip fusion), strictly.

These weights were trained on Caffe's input, not torchvision's: BGR channel order, values 0-255,
minus the mean (B, G, R) = (104.00698793, 116.66876762, 122.67891434), no division by a std. Evaluate
them with ``data.transforms.normalization=caffe``; the checkpoint the command below writes carries
that setting in its config::

    python -m fcn.models.reference fcn8s_from_caffe.pth runs/caffe-fcn8s.pt --arch fcn8s
    python evaluate.py runs/caffe-fcn8s.pt
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Dict, Mapping, Optional, Sequence

import torch
from torch import Tensor

from fcn.checkpoint import WriteError, save_checkpoint, weights_checkpoint
from fcn.cli import EXIT_BAD_INPUT, EXIT_FAILURE, report
from fcn.config import ARCHS, load_config, to_dict
from fcn.models.backbones import read_state_dict
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


def _read_state_dict(path: str) -> Mapping[str, Tensor]:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such file (give a .pt/.pth state dict in the reference naming)")
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
    """Write a checkpoint {'model', 'config'} loadable by evaluate.py from reference weights; return a summary."""
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
    model = build_model(cfg.model)
    load_reference_weights(model, state)
    save_checkpoint(weights_checkpoint(model=model, config=to_dict(cfg)), out_path)
    return (
        f"wrote {out_path}: {arch}, {num_classes} classes, {len(state)} tensors from {in_path}; "
        "its config sets data.transforms.normalization=caffe (BGR, 0-255, minus the Caffe mean)"
    )


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Convert reference-named weights into this project's checkpoint (the command line)."""
    parser = argparse.ArgumentParser(
        prog="python -m fcn.models.reference",
        description="Convert an FCN state dict in the reference (Caffe) layer naming into a checkpoint "
        "that evaluate.py and predict.py load. The weights expect Caffe input (BGR, 0-255, minus "
        "the mean 104.00698793, 116.66876762, 122.67891434); the checkpoint's config says so.",
    )
    parser.add_argument("input", help=".pt/.pth state dict with conv1_1.weight ... score_fr.weight ...")
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
