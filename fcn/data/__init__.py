"""Datasets (PASCAL VOC 2012 with seg11valid, SBD, VOC + SBD augmented, any VOC-layout folder).

Importing this package reads nothing from disk or the network and does not import torch;
transforms, collate and mixing live in their own submodules (fcn.data.transforms, ...).
"""

from __future__ import annotations

from typing import Any, Callable, Optional

import numpy as np

from fcn.data.common import VOC_CLASSES, VOID, PairDataset, make_palette, voc_palette
from fcn.data.folder import FolderSegmentation, read_classes
from fcn.data.paper import PAPER_CLASSES, NYUDSegmentation, PascalContextSegmentation, SIFTFlowSegmentation
from fcn.data.sbd import SBDSegmentation, VOCAugSegmentation
from fcn.data.voc import VOCSegmentation

__all__ = [
    "VOC_CLASSES",
    "VOID",
    "FolderSegmentation",
    "NYUDSegmentation",
    "PascalContextSegmentation",
    "SIFTFlowSegmentation",
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
    """Return the class names in label order: data.classes, or the datasets' own (PASCAL VOC's 21,
    or PASCAL-Context's 60, NYUDv2's 40, SIFT Flow's 33 semantic classes)."""
    if len(data_cfg.classes):
        return [str(c) for c in data_cfg.classes]
    for ds in (data_cfg.val, data_cfg.train):
        if ds.name in PAPER_CLASSES:
            return list(PAPER_CLASSES[ds.name])
    return list(VOC_CLASSES)


def palette(data_cfg: Any) -> np.ndarray:
    """Return the (256, 3) uint8 palette: data.palette's colours first, VOC's for the rest (VOC's void 255 = (224, 224, 192))."""
    colours = [[int(c) for c in colour] for colour in data_cfg.palette]
    return make_palette(colours or None)


def build_dataset(ds_cfg: Any, data_cfg: Any, transforms: Optional[Callable] = None) -> PairDataset:
    """Return the dataset named by ds_cfg (cfg.data.train or cfg.data.val) with data_cfg's classes and palette."""
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
    if ds_cfg.name == "pascal_context":
        names = class_names(data_cfg)
        return PascalContextSegmentation(ds_cfg.root, ds_cfg.split, transforms, n, ignore, names)
    if ds_cfg.name == "nyud":
        modalities = [str(m) for m in ds_cfg.modalities]
        return NYUDSegmentation(ds_cfg.root, ds_cfg.split, transforms, n, ignore, modalities)
    if ds_cfg.name == "siftflow":
        from fcn.data.paper import SIFTFLOW_GEOMETRIC_CLASSES

        return SIFTFlowSegmentation(ds_cfg.root, ds_cfg.split, transforms, n, ignore, len(SIFTFLOW_GEOMETRIC_CLASSES))
    raise ValueError(
        f"dataset name '{ds_cfg.name}' is not one of voc, sbd, voc_aug, folder, pascal_context, nyud, siftflow"
    )
