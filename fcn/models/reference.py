"""Import of the authors' Caffe FCNs: their ``.caffemodel`` files, or state dicts in the reference naming.

A ``.caffemodel`` is read directly (``fcn.core.caffemodel``: no Caffe, no protobuf), its layers mapped by
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

from fcn.config import MODALITY_CHANNELS, PAPER_ARCHS, load_config, to_dict
from fcn.core.caffemodel import ZIP_MAGIC, read_caffemodel
from fcn.core.checkpoint import save_checkpoint, weights_checkpoint
from fcn.core.errors import EXIT_BAD_INPUT, EXIT_FAILURE, report
from fcn.core.files import WriteError
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
    # VGG16Backbone and the FCN heads use the reference's own layer names; only the prefix differs,
    # and the paper's other nets rename some layers (see reference_layer_name).
    mapping = {}
    for key in model.state_dict():
        layer, param = key.rsplit(".", 1)
        mapping[f"{reference_layer_name(model, layer)}.{param}"] = key
    return mapping


def reference_layer_name(model: FCN, layer: str) -> str:
    """Return the reference net's name of a model layer (its state-dict prefix, e.g. backbone.fc6):

    - the VOC nets and pascalcontext-fcn*s: the same names (conv1_1 ... fc7, score_fr, upscore ...);
    - nyud-fcn32s-color-d (in_channels 4, early fusion): conv1_1 is ``conv1_1_bgrd``;
    - nyud-fcn32s-color-hha (late fusion): each trunk's layers and score_fr end in the modality
      (``conv1_1color`` ... ``fc7color``, ``score_frcolor``; ``conv1_1hha`` ... ``score_frhha``);
    - siftflow-fcn*s (geometric head): the semantic head's layers end in ``_sem`` (``score_fr_sem``,
      ``upscore2_sem``, ``score_pool4_sem`` ...), the geometric head's in ``_geo`` as here.
    """
    parts = layer.split(".")
    if model.late_fusion and parts[0] in ("backbone", "score_fr"):
        modality = parts[1]
        return (parts[2] if parts[0] == "backbone" else "score_fr") + modality
    name = layer.removeprefix("backbone.")
    if name == "conv1_1" and model.in_channels == 4:
        return "conv1_1_bgrd"
    if model.geometric_classes and not layer.startswith("backbone.") and not name.endswith("_geo"):
        return name + "_sem"
    return name


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
    caffemodel's {layer name: blobs} (fcn.core.caffemodel.read_caffemodel), each shape checked against
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
    """Return the number of classes of a caffemodel's FCN: score_fr's number of outputs (score_fr_sem
    of SIFT Flow's, score_fr<modality> of the late-fusion net's)."""
    names = ["score_fr", "score_fr_sem", *(f"score_fr{m}" for m in MODALITY_CHANNELS)]
    blobs = next((layers[n] for n in names if layers.get(n)), None)
    if not blobs:
        with_weights = [name for name, b in layers.items() if len(b)]
        raise ValueError(
            f"{path}: no layer 'score_fr' with weights: not one of the authors' FCNs (the file has weights "
            f"for {', '.join(with_weights) or 'no layer'})"
        )
    # The bias has one value per class (legacy 4-D blobs: (1, 1, 1, classes)); the weight's first axis too.
    return int(blobs[1].size) if len(blobs) > 1 else int(blobs[0].shape[0])


SCORE_FR_KEYS = (
    "score_fr.weight",
    "score_fr_sem.weight",
    *(f"score_fr{m}.weight" for m in MODALITY_CHANNELS),
)
"""score_fr's weight in the reference naming of the VOC, SIFT Flow and late-fusion nets."""


def _read_state_dict(path: str) -> Mapping[str, Tensor]:
    state = read_state_dict(path)
    if isinstance(state, Mapping) and not any(k in state for k in SCORE_FR_KEYS):
        for nested in ("state_dict", "model"):
            if isinstance(state.get(nested), Mapping):
                state = state[nested]
                break
    if not isinstance(state, Mapping) or not any(k in state for k in SCORE_FR_KEYS):
        raise ValueError(f"{path}: not a state dict in the reference naming (no 'score_fr.weight')")
    return state


def net_options(
    shapes: Mapping[str, Sequence[int]], num_classes: int, modalities: Sequence[str] = ()
) -> list[str]:
    """Return the config overrides of the authors' net whose layers have these weight shapes
    ({layer name: first blob's shape}): the paper's other nets are told apart by their layer names
    (conv1_1_bgrd: early fusion; conv1_1color/conv1_1hha: late fusion; score_fr_geo: SIFT Flow), the
    dataset by the number of classes (60: PASCAL-Context; 40: NYUDv2, the modalities given for a
    3-channel net: colour unless told); others keep the VOC datasets with numbered classes."""
    late = [m for m in MODALITY_CHANNELS if f"conv1_1{m}" in shapes]
    late.sort(key=lambda m: list(shapes).index(f"conv1_1{m}"))  # the trunks in the file's order
    out: list[str] = []
    if "score_fr_geo" in shapes:
        geo = int(shapes["score_fr_geo"][0])
        out += [f"model.geometric_classes={geo}", "data.train.name=siftflow", "data.val.name=siftflow"]
        out.append("loss.normalize=false")  # the two summed losses of siftflow-fcn*s (the config checks it)
        out += ["data.train.split=trainval", "data.val.split=test"]
        return out if num_classes == 33 else out + [_numbered(num_classes)]
    if late:
        mods = late
        out.append(f"model.late_fusion=[{','.join(late)}]")
        out.append(f"model.in_channels={sum(MODALITY_CHANNELS[m] for m in late)}")
    elif "conv1_1_bgrd" in shapes:
        mods = ["color", "depth"]
        out.append(f"model.in_channels={int(shapes['conv1_1_bgrd'][1])}")
    else:
        mods = list(modalities) or ["color"]
        width = sum(MODALITY_CHANNELS[m] for m in mods)
        if width != 3:
            out.append(f"model.in_channels={width}")
    if num_classes == 40 or late or "conv1_1_bgrd" in shapes:
        out += ["data.train.name=nyud", "data.val.name=nyud", "data.val.split=test"]
        out += [f"data.train.modalities=[{','.join(mods)}]", f"data.val.modalities=[{','.join(mods)}]"]
        return out if num_classes == 40 else out + [_numbered(num_classes)]
    if num_classes == 60:
        return out + ["data.train.name=pascal_context", "data.val.name=pascal_context", "data.val.split=val"]
    return out + ([_numbered(num_classes)] if num_classes != 21 else [])


def _numbered(num_classes: int) -> str:
    return "data.classes=[" + ",".join(f"class_{i}" for i in range(num_classes)) + "]"


def convert(in_path: str, out_path: str, arch: str = "fcn8s", modalities: Sequence[str] = ()) -> str:
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
        shapes = {name: tuple(blobs[0].shape) for name, blobs in layers.items() if len(blobs)}
    else:
        state = _read_state_dict(in_path)
        num_classes = int(next(state[k] for k in SCORE_FR_KEYS if k in state).shape[0])
        shapes = {k.rsplit(".", 1)[0]: tuple(v.shape) for k, v in state.items() if k.endswith(".weight")}
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
    overrides += net_options(shapes, num_classes, modalities)
    try:
        cfg = load_config(overrides=overrides)
    except ValueError as exc:  # e.g. late fusion with --arch fcn16s: the net the file holds is not that
        raise ValueError(f"{in_path}: {str(exc).split(': ', 1)[-1]} (is --arch right?)") from None
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
    parser.add_argument(
        "--arch", choices=PAPER_ARCHS, default="fcn8s", help="which reference net (default fcn8s)"
    )
    parser.add_argument(
        "--modalities",
        default="",
        help="NYUDv2 nets of one trunk: the input modalities, comma-separated (nyud-fcn32s-hha: hha; default "
        "color); the early- and late-fusion nets and the other datasets are recognised by their layer names",
    )
    args = parser.parse_args(argv)
    modalities = [m for m in args.modalities.split(",") if m]
    try:
        print(convert(args.input, args.output, args.arch, modalities))
    except (OSError, ValueError, RuntimeError) as exc:
        # Every check (the file, its keys and shapes) comes before the one write, so a failure is
        # the input's (2) unless the write itself failed (1).
        report(exc)
        return EXIT_FAILURE if isinstance(exc, WriteError) else EXIT_BAD_INPUT
    return 0


if __name__ == "__main__":
    sys.exit(main())
