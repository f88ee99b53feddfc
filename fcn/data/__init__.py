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

from fcn.config import VOID, label_map_dict
from fcn.config.exports import ExportClasses
from fcn.data.ade20k import ADE20KSegmentation
from fcn.data.cityscapes import CityscapesSegmentation
from fcn.data.classes import VOC_CLASSES, announce_classes, make_palette, voc_palette
from fcn.data.coco import CocoSegmentation
from fcn.data.dataset import PairDataset
from fcn.data.external import ExternalDataset
from fcn.data.folder import FolderSegmentation, read_classes
from fcn.data.formats import FORMATS, ReadArgs, format_of
from fcn.data.listing import Listing, hold_out
from fcn.data.masks import LabelMap
from fcn.data.pairs import PairsSegmentation
from fcn.data.paper import NYUDSegmentation, PascalContextSegmentation, SIFTFlowSegmentation
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
    "resolve_classes",
    "class_names",
    "class_palette",
    "display_names",
    "export_classes",
    "label_map",
    "read_args",
    "mask_labels",
    "palette",
    "read_classes",
    "voc_palette",
]


_SAID: set[tuple[str, str]] = set()  # the exports whose class mapping this process has printed


def export_classes(data_cfg: Any) -> Optional[ExportClasses]:
    """Return the classes data.val's or data.train's export names in a file of its own (CVAT's
    labelmap.txt: FormatKeys.export_classes), None when neither does or its file cannot be read here.

    The mapping is printed once per process and file, on one line ("cvat_mask: 3 classes from
    labelmap.txt: background=0, cat=1, dog=2"), so a run says where its classes came from."""
    for ds in (data_cfg.val, data_cfg.train):
        read = FORMATS[ds.name].keys.export_classes if ds.name in FORMATS else None
        if read is None:
            continue
        try:
            found = read(ds)
        except (OSError, ValueError):  # a run's config away from its data: validate() said why earlier
            continue
        if found is None:
            continue
        if (ds.name, str(found.source)) not in _SAID:
            _SAID.add((ds.name, str(found.source)))
            announce_classes(str(ds.name), found.names, found.where())
        return found
    return None


def class_names(data_cfg: Any) -> list[str]:
    """Return the class names in label order: data.classes, or those a labelling tool's export names
    (its own class file, or the labels its regions use: FormatKeys.export_classes), or the datasets' own (PASCAL VOC's 21, or PASCAL-Context's 60, NYUDv2's 40, SIFT Flow's 33 semantic classes)."""
    if len(data_cfg.classes):
        return [str(c) for c in data_cfg.classes]
    if data_cfg.task == "binary":
        return ["foreground"]
    found = export_classes(data_cfg)
    if found is not None:
        return list(found.names)
    for ds in (data_cfg.val, data_cfg.train):
        own = FORMATS[ds.name].classes if ds.name in FORMATS else ()
        if own:
            return list(own)
    return list(VOC_CLASSES)


def resolve_classes(cfg: Any) -> Any:
    """Return cfg with data.classes set to the class names an export's own files give
    (FormatKeys.export_classes: labelmap.txt, _classes.csv, label_colors.txt, a panoptic JSON's
    categories, the labels a Label Studio or labelme export uses), and
    data.palette to the file's colours, when data.classes is empty, so that the run's config.yml,
    its checkpoints and Hub folders hold them and a model used away from the export still names its
    classes; cfg itself otherwise."""
    if len(cfg.data.classes) or cfg.data.task == "binary":
        return cfg
    found = export_classes(cfg.data)
    if found is None:
        return cfg
    names = list(found.names)
    import copy

    from omegaconf import OmegaConf

    out = copy.deepcopy(cfg)
    OmegaConf.set_readonly(out, False)
    out.data.classes = [str(n) for n in names]
    if not len(cfg.data.palette) and cfg.data.task == "multiclass":
        # the export's colours (VOC's where it gives a class none), as palette() drew them
        out.data.palette = palette(cfg.data)[: len(found.names)].tolist()
    OmegaConf.set_readonly(out, True)
    return out


def palette(data_cfg: Any) -> np.ndarray:
    """Return the (256, 3) uint8 palette: data.palette's colours first (else, without data.classes,
    the export's own: a CVAT labelmap's), VOC's for the rest (VOC's void 255 = (224, 224, 192)).

    A sigmoid task (binary, multilabel) is drawn in display labels (display_names): row 0 (no
    class) black, row k + 1 class k's colour (data.palette[k], else VOC's colour k + 1)."""
    colours = [[int(c) for c in colour] for colour in data_cfg.palette]
    found = (
        None
        if colours or len(data_cfg.classes) or data_cfg.task != "multiclass"
        else export_classes(data_cfg)
    )
    if found is not None:  # the export's own colours (a label without one keeps VOC's)
        voc = voc_palette()
        colours = [list(c) if c is not None else voc[i].tolist() for i, c in enumerate(found.colours)]
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


def read_args(data_cfg: Any) -> ReadArgs:
    """Return what every format's reader takes from cfg.data (its classes, label count, label map, palette)."""
    return ReadArgs(
        data=data_cfg,
        classes=class_names(data_cfg),
        num_classes=mask_labels(data_cfg),
        ignore_index=int(data_cfg.ignore_index),
        labels=label_map(data_cfg),
        colours=[[int(c) for c in colour] for colour in data_cfg.palette] or None,
        multilabel=class_names(data_cfg) if data_cfg.task == "multilabel" else [],
    )


def held_out_side(ds_cfg: Any, data_cfg: Any) -> Optional[bool]:
    """Return which side of data.val_fraction's hold-out ds_cfg reads: True for data.val (the items
    held out), False for data.train (the others), None when data.val_fraction is 0. The config check
    made the two splits name one source, so the side is which of the two nodes ds_cfg is."""
    if not float(data_cfg.val_fraction):
        return None
    if ds_cfg is data_cfg.val:
        return True
    return False if ds_cfg is data_cfg.train else None


def split_listing(ds_cfg: Any, data_cfg: Any, listing: Listing) -> Listing:
    """Return `listing` (data.train's or data.val's) less the items data.val_fraction puts on the other side."""
    side = held_out_side(ds_cfg, data_cfg)
    return listing if side is None else hold_out(listing, float(data_cfg.val_fraction), side)


def build_dataset(
    ds_cfg: Any, data_cfg: Any, transforms: Optional[Callable] = None, channels: int = 3
) -> PairDataset | ExternalDataset:
    """Return the dataset named by ds_cfg (cfg.data.train or cfg.data.val) with data_cfg's classes,
    palette and label map (applied to every kind's masks alike), reading images of `channels`
    channels (cfg.model.in_channels; see read_channels). Its format's reader (fcn/data/formats/)
    opens it; ValueError for a name that is no format. Under data.val_fraction it reads only its
    side's items (held_out_side)."""
    dataset = format_of(ds_cfg.name).open(ds_cfg, read_args(data_cfg), transforms)
    dataset.channels = int(channels)
    if held_out_side(ds_cfg, data_cfg) is not None:  # data.val_fraction: one export, two splits
        kept = split_listing(ds_cfg, data_cfg, Listing(dataset.ids, dataset.images, dataset.masks))
        dataset.ids, dataset.images, dataset.masks = kept.ids, kept.images, kept.masks
    return dataset
