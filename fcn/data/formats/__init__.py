"""The table of dataset formats: data.<split>.name -> Format (fcn/data/formats/format.py).

build_dataset, fcn.data.check and the docs read FORMATS; the config checks read the same names' key
rules in fcn/config/formats.py (FORMAT_KEYS), which each Format carries as .keys, because fcn/config
imports nothing of fcn/data. tests/config/test_formats_table.py holds FORMATS, FORMAT_KEYS and the schema's
DATASETS to the same names in the same order.

Adding a format: one module here (its FORMAT), one line below, its FORMAT_KEYS line (docs/development.md).
"""

from __future__ import annotations

from fcn.config import is_import_path
from fcn.data.formats import (
    ade20k,
    camvid,
    cityscapes,
    coco,
    coco_panoptic,
    cvat_mask,
    cvat_xml,
    external,
    folder,
    kitti,
    labelme,
    labelstudio,
    nyud,
    pairs,
    pascal_context,
    roboflow,
    sbd,
    siftflow,
    voc,
    voc_aug,
    yolo,
)
from fcn.data.formats.format import Format, ReadArgs

FORMATS: dict[str, Format] = {
    "voc": voc.FORMAT,
    "sbd": sbd.FORMAT,
    "voc_aug": voc_aug.FORMAT,
    "folder": folder.FORMAT,
    "pairs": pairs.FORMAT,
    "cityscapes": cityscapes.FORMAT,
    "ade20k": ade20k.FORMAT,
    "coco": coco.FORMAT,
    "pascal_context": pascal_context.FORMAT,
    "nyud": nyud.FORMAT,
    "siftflow": siftflow.FORMAT,
    "cvat_mask": cvat_mask.FORMAT,
    "cvat_xml": cvat_xml.FORMAT,
    "coco_panoptic": coco_panoptic.FORMAT,
    "roboflow": roboflow.FORMAT,
    "camvid": camvid.FORMAT,
    "kitti": kitti.FORMAT,
    "labelstudio": labelstudio.FORMAT,
    "labelme": labelme.FORMAT,
    "yolo": yolo.FORMAT,
}
"""data.<split>.name -> its Format, in the schema's DATASETS order."""

IMPORT_PATH = external.FORMAT
"""The format of every name that is a Dataset class by import path ('package.module:Class')."""


def format_of(name: str) -> Format:
    """Return the Format of data.<split>.name `name`; ValueError naming the choices for an unknown one."""
    if str(name) in FORMATS:
        return FORMATS[str(name)]
    if is_import_path(name):
        return IMPORT_PATH
    raise ValueError(f"dataset name '{name}' is not one of {', '.join(FORMATS)}, package.module:Class")


__all__ = ["FORMATS", "IMPORT_PATH", "Format", "ReadArgs", "format_of"]
