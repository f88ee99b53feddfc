"""Datasets (PASCAL VOC 2012 with seg11valid, SBD, VOC + SBD augmented, any VOC-layout folder,
images and masks in two folders paired by stem, Cityscapes, ADE20K, COCO JSON, the paper's
PASCAL-Context, NYUDv2 and SIFT Flow, a Dataset class by import path), and data.label_map /
reduce_zero_label.

Importing this package reads nothing from disk or the network and does not import torch;
transforms, collate and mixing live in their own submodules (fcn.data.transforms, ...).
"""

from __future__ import annotations

from typing import Any, Callable, Optional

import numpy as np
from omegaconf import OmegaConf

from fcn.config import DATASETS, VOID, is_import_path, label_map_dict
from fcn.data.ade20k import ADE20KSegmentation
from fcn.data.cityscapes import CityscapesSegmentation
from fcn.data.classes import VOC_CLASSES, make_palette, voc_palette
from fcn.data.coco import CocoSegmentation
from fcn.data.dataset import PairDataset
from fcn.data.external import ExternalDataset
from fcn.data.folder import FolderSegmentation, read_classes
from fcn.data.masks import LabelMap
from fcn.data.pairs import PairsSegmentation
from fcn.data.paper import PAPER_CLASSES, NYUDSegmentation, PascalContextSegmentation, SIFTFlowSegmentation
from fcn.data.sbd import SBDSegmentation, VOCAugSegmentation
from fcn.data.voc import VOCSegmentation

__all__ = [
    "VOC_CLASSES",
    "VOID",
    "ADE20KSegmentation",
    "CityscapesSegmentation",
    "CocoSegmentation",
    "ExternalDataset",
    "LabelMap",
    "FolderSegmentation",
    "PairsSegmentation",
    "NYUDSegmentation",
    "PascalContextSegmentation",
    "SIFTFlowSegmentation",
    "SBDSegmentation",
    "VOCAugSegmentation",
    "VOCSegmentation",
    "build_dataset",
    "class_names",
    "class_palette",
    "display_names",
    "label_map",
    "mask_labels",
    "palette",
    "read_classes",
    "voc_palette",
]


def class_names(data_cfg: Any) -> list[str]:
    """Return the class names in label order: data.classes, or the datasets' own (PASCAL VOC's 21,
    or PASCAL-Context's 60, NYUDv2's 40, SIFT Flow's 33 semantic classes)."""
    if len(data_cfg.classes):
        return [str(c) for c in data_cfg.classes]
    if data_cfg.task == "binary":
        return ["foreground"]
    for ds in (data_cfg.val, data_cfg.train):
        if ds.name in PAPER_CLASSES:
            return list(PAPER_CLASSES[ds.name])
    return list(VOC_CLASSES)


def palette(data_cfg: Any) -> np.ndarray:
    """Return the (256, 3) uint8 palette: data.palette's colours first, VOC's for the rest (VOC's void 255 = (224, 224, 192)).

    A sigmoid task (binary, multilabel) is drawn in display labels (display_names): row 0 (no
    class) black, row k + 1 class k's colour (data.palette[k], else VOC's colour k + 1)."""
    colours = [[int(c) for c in colour] for colour in data_cfg.palette]
    if data_cfg.task != "multiclass" and colours:
        colours = [[0, 0, 0], *colours]
    return make_palette(colours or None)


def class_palette(data_cfg: Any) -> np.ndarray:
    """Return the (256, 3) uint8 colours of the classes by class index (charts): palette() for
    multiclass; a sigmoid task's palette() shifted down by its 'no class' row."""
    pal = palette(data_cfg)
    return pal if data_cfg.task == "multiclass" else np.roll(pal, -1, axis=0)


def display_names(data_cfg: Any) -> list[str]:
    """Return the names of the labels pictures are drawn in: class_names for multiclass; for a
    sigmoid task 'background' (no class) then the classes (fcn.core.tasks.display_labels)."""
    names = class_names(data_cfg)
    return names if data_cfg.task == "multiclass" else ["background", *names]


def label_map(data_cfg: Any) -> LabelMap:
    """Return the translation of raw mask ids that data.label_map / data.reduce_zero_label describe."""
    return LabelMap(
        label_map_dict(data_cfg.label_map),
        bool(data_cfg.reduce_zero_label),
        int(data_cfg.ignore_index),
        binary=data_cfg.task == "binary",
    )


def mask_labels(data_cfg: Any) -> int:
    """Return the number of labels a mask may hold besides data.ignore_index: the classes' (a binary
    task's masks hold 0 and 1: two)."""
    return 2 if data_cfg.task != "multiclass" else len(class_names(data_cfg))


def build_dataset(
    ds_cfg: Any, data_cfg: Any, transforms: Optional[Callable] = None, channels: int = 3
) -> PairDataset | ExternalDataset:
    """Return the dataset named by ds_cfg (cfg.data.train or cfg.data.val) with data_cfg's classes,
    palette and label map (applied to every kind's masks alike), reading images of `channels`
    channels (cfg.model.in_channels; see read_channels)."""
    dataset = _open_dataset(ds_cfg, data_cfg, transforms)
    dataset.channels = int(channels)
    return dataset


def _open_dataset(
    ds_cfg: Any, data_cfg: Any, transforms: Optional[Callable] = None
) -> PairDataset | ExternalDataset:
    """Return the reader of ds_cfg's layout (3 channels until build_dataset sets them)."""
    n, ignore = mask_labels(data_cfg), int(data_cfg.ignore_index)
    labels = label_map(data_cfg)
    if is_import_path(ds_cfg.name):
        args = (
            OmegaConf.to_container(ds_cfg.args, resolve=True)
            if OmegaConf.is_config(ds_cfg.args)
            else ds_cfg.args
        )
        return ExternalDataset(
            ds_cfg.name, args, transforms, num_classes=n, ignore_index=ignore, labels=labels
        )
    kinds = {
        "voc": VOCSegmentation,
        "sbd": SBDSegmentation,
        "voc_aug": VOCAugSegmentation,
        "cityscapes": CityscapesSegmentation,
        "ade20k": ADE20KSegmentation,
    }
    if ds_cfg.name in kinds:
        return kinds[ds_cfg.name](
            ds_cfg.root, ds_cfg.split, transforms, num_classes=n, ignore_index=ignore, labels=labels
        )
    colours = [[int(c) for c in colour] for colour in data_cfg.palette] or None
    multilabel = class_names(data_cfg) if data_cfg.task == "multilabel" else []
    if ds_cfg.name == "folder":
        return FolderSegmentation(
            ds_cfg.root,
            ds_cfg.split,
            colours,
            transforms,
            num_classes=n,
            ignore_index=ignore,
            labels=labels,
            multilabel=multilabel,
        )
    if ds_cfg.name == "pairs":
        return PairsSegmentation(
            ds_cfg.images,
            ds_cfg.masks,
            ds_cfg.ids,
            ds_cfg.mask_suffix,
            colours,
            transforms,
            num_classes=n,
            ignore_index=ignore,
            labels=labels,
            multilabel=multilabel,
        )
    if ds_cfg.name == "coco":
        return CocoSegmentation(
            ds_cfg.annotations,
            ds_cfg.images,
            class_names(data_cfg),
            transforms,
            unlisted=data_cfg.coco_unlisted,
            overlap=data_cfg.coco_overlap,
            ignore_index=ignore,
        )
    if ds_cfg.name == "pascal_context":
        names = class_names(data_cfg)
        return PascalContextSegmentation(
            ds_cfg.root, ds_cfg.split, transforms, n, ignore, names, labels=labels
        )
    if ds_cfg.name == "nyud":
        modalities = [str(m) for m in ds_cfg.modalities]
        return NYUDSegmentation(ds_cfg.root, ds_cfg.split, transforms, n, ignore, modalities, labels=labels)
    if ds_cfg.name == "siftflow":
        from fcn.data.paper import SIFTFLOW_GEOMETRIC_CLASSES

        return SIFTFlowSegmentation(
            ds_cfg.root, ds_cfg.split, transforms, n, ignore, len(SIFTFLOW_GEOMETRIC_CLASSES), labels=labels
        )
    raise ValueError(
        f"dataset name '{ds_cfg.name}' is not one of {', '.join(DATASETS)}, package.module:Class"
    )
