"""FCN models: the paper's FCN-32s/16s/8s/8s-at-once, their modern options, and weight import.

- ``FCN32s``, ``FCN16s``, ``FCN8s``, ``FCN8sAtOnce`` (``fcn.models.fcn``): the paper's nets on VGG16
  by default, with options for geometry, upsampling, fusion, dropout and other backbones; ``FCN4s``:
  FCN-8s fused once more with the stride-4 features, for thin structures; ``UNet``
  (``fcn.models.unet``, ``model.arch=unet``): U-Net's decoder on the same backbones, to stride 1.
- ``build_model(cfg.model)``: any model the config describes, on a torchvision backbone or any timm
  model (``model.backbone=timm:<name>``), with the paper's score layers or ``FCNHead`` (``model.head``).
- ``resolve_normalization(cfg)``: the config with a timm backbone's own input mean/std filled in.
- ``init_from_state_dict(model, state_dict) -> (copied, new)``: the paper's staged initialisation.
- ``load_reference_weights(model, state_dict)`` (``fcn.models.reference``): weights in the
  reference (Caffe) layer naming; ``python -m fcn.models.reference IN OUT --arch fcn8s`` converts a
  file (the authors' ``.caffemodel``, or such a state dict) into a checkpoint.
- ``read_caffemodel(path)`` (``fcn.core.caffemodel``): {layer name: blob arrays} of a ``.caffemodel``,
  read without Caffe or protobuf.
"""

from __future__ import annotations

from typing import Any

from fcn.models.backbones import resolve_normalization
from fcn.models.fcn import (
    FCN,
    FCN4s,
    FCN8s,
    FCN8sAtOnce,
    FCN16s,
    FCN32s,
    FCNHead,
    build_model,
    describe_init,
    init_from_state_dict,
)
from fcn.models.unet import UNet
from fcn.models.upsampling import upsample_filt

__all__ = [
    "FCN",
    "FCN32s",
    "FCN16s",
    "FCN8s",
    "FCN8sAtOnce",
    "FCN4s",
    "FCNHead",
    "UNet",
    "build_model",
    "describe_init",
    "init_from_state_dict",
    "load_reference_weights",
    "resolve_normalization",
    "upsample_filt",
]


def __getattr__(name: str) -> Any:
    # fcn.models.reference is also a command (python -m fcn.models.reference); importing it here
    # eagerly would make runpy warn that the module was imported before it ran, so it loads on use.
    if name == "load_reference_weights":
        from fcn.models.reference import load_reference_weights

        return load_reference_weights
    raise AttributeError(f"module 'fcn.models' has no attribute '{name}'")
