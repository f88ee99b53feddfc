"""Datasets (PASCAL VOC 2012 with seg11valid, SBD, VOC + SBD augmented, any VOC-layout folder).

Importing this package reads nothing from disk or the network and does not import torch;
transforms, collate and mixing live in their own submodules (fcn.data.transforms, ...).
"""

from __future__ import annotations

from typing import Any, Callable, Optional

import numpy as np

from fcn.data.common import VOC_CLASSES, VOID, PairDataset, make_palette, voc_palette
from fcn.data.folder import FolderSegmentation, read_classes
from fcn.data.sbd import SBDSegmentation, VOCAugSegmentation
from fcn.data.voc import VOCSegmentation

__all__ = [
    "VOC_CLASSES",
    "VOID",
    "FolderSegmentation",
    "SBDSegmentation",
    "VOCAugSegmentation",
    "VOCSegmentation",
    "build_dataset",
    "class_names",
    "palette",
    "read_classes",
    "voc_palette",
]


def class_names(data_cfg: Any) -> list[str]:
    """Return the class names in label order: data.classes, or PASCAL VOC's 21."""
    return [str(c) for c in data_cfg.classes] if len(data_cfg.classes) else list(VOC_CLASSES)


def palette(data_cfg: Any) -> np.ndarray:
    """Return the (256, 3) uint8 palette: data.palette's colours first, VOC's for the rest (VOC's void 255 = (224, 224, 192))."""
    colours = [[int(c) for c in colour] for colour in data_cfg.palette]
    return make_palette(colours or None)


def build_dataset(
    ds_cfg: Any, data_cfg: Any, transforms: Optional[Callable] = None, channels: int = 3
) -> PairDataset:
    """Return the dataset named by ds_cfg (cfg.data.train or cfg.data.val) with data_cfg's classes and
    palette, reading images of `channels` channels (cfg.model.in_channels; see read_channels)."""
    dataset = _open_dataset(ds_cfg, data_cfg, transforms)
    dataset.channels = int(channels)
    return dataset


def _open_dataset(ds_cfg: Any, data_cfg: Any, transforms: Optional[Callable] = None) -> PairDataset:
    """Return the reader of ds_cfg's layout (3 channels until build_dataset sets them)."""
    n, ignore = len(class_names(data_cfg)), int(data_cfg.ignore_index)
    if ds_cfg.name == "voc":
        return VOCSegmentation(ds_cfg.root, ds_cfg.split, transforms, num_classes=n, ignore_index=ignore)
    if ds_cfg.name == "sbd":
        return SBDSegmentation(ds_cfg.root, ds_cfg.split, transforms, num_classes=n, ignore_index=ignore)
    if ds_cfg.name == "voc_aug":
        return VOCAugSegmentation(ds_cfg.root, ds_cfg.split, transforms, num_classes=n, ignore_index=ignore)
    if ds_cfg.name == "folder":
        colours = [[int(c) for c in colour] for colour in data_cfg.palette] or None
        return FolderSegmentation(
            ds_cfg.root, ds_cfg.split, colours, transforms, num_classes=n, ignore_index=ignore
        )
    raise ValueError(f"dataset name '{ds_cfg.name}' is not one of voc, sbd, voc_aug, folder")
