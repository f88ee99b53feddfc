"""The key rules of each dataset format: which data.<split>.* keys it needs and accepts, and what else
of the config it asks for, as plain data that the config checks read.

Why two tables. fcn/data/formats/ holds one module per layout (how to list, read and describe it) in
FORMATS; fcn/config imports nothing else of fcn (the layers contract in pyproject.toml), so its
checks cannot ask those modules. The part of a format that the config checks need is therefore here,
as data: FORMAT_KEYS maps each data.<split>.name to its FormatKeys, a data module's Format names its
entry (``keys=FORMAT_KEYS["voc"]``), and tests/config/test_formats_table.py holds the two tables' names and
the schema's DATASETS equal. The checks stay where they were (checks.py, at load time, naming the key
and the file); they read these fields instead of naming datasets. A Dataset class by import path
('package.module:Class') is no entry: it is every name with a colon (IMPORT_PATH_KEYS).

Adding a format here is one FORMAT_KEYS line (plus a DatasetConfig field for a key no format had).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

from fcn.config.exports import (
    ExportClasses,
    camvid_classes,
    cityscapes_classes,
    labelme_classes,
    labelstudio_classes,
    panoptic_categories,
    read_cvat_xml_labels,
    read_labelmap,
    roboflow_classes,
    yolo_classes,
)

# data.<split> keys beyond name/root/split/modalities/args (which every format has) that a format may
# take; each is '' unless set. A set key its format does not accept is an error naming the formats
# that do ("data.train.masks is for name 'pairs', not 'voc'"), except LENIENT_KEYS.
OPTIONAL_KEYS = ("annotations", "images", "masks", "ids", "mask_suffix")
LENIENT_KEYS = ("annotations", "images")
"""Keys every format took (unused) before this table: still not rejected, so that no config that
loaded stops loading. A key added for a new format is not lenient: its other formats reject it."""


@dataclass(frozen=True)
class FormatKeys:
    """What one dataset format asks of the config (read by fcn/config/checks.py and schema.py)."""

    needs: dict[str, str] = field(default_factory=dict)
    """data.<split> keys that must be set, each with what it holds ('' : no words after the key):
    the error is "data.train.name='pairs' needs data.train.masks: the directory of the masks"."""
    accepts: tuple[str, ...] = ()
    """The OPTIONAL_KEYS it reads besides `needs` (ids, mask_suffix of 'pairs')."""
    needs_classes: bool = False
    """Its masks hold indices of classes it does not name: data.classes must name them."""
    needs_label_map: str = ""
    """Non-empty: data.label_map must be set; the reason the error gives after the name."""
    no_label_map: str = ""
    """Non-empty: data.label_map / reduce_zero_label do not apply; the reason the error gives."""
    own_classes: Optional[int] = 21
    """The number of classes it names itself (model.num_classes is inferred from it); None: none
    (data.classes names them). 21: PASCAL VOC's, the default of every layout that does not say."""
    tasks: tuple[str, ...] = ("multiclass",)
    """The data.task values its masks can be read as."""
    modalities: bool = False
    """It stacks data.<split>.modalities (NYUDv2's color/depth/hha); others take [color] only."""
    rgb_only: bool = False
    """Its images are RGB whatever model.in_channels says: in_channels must be 3."""
    geometric: bool = False
    """Its masks carry SIFT Flow's geometric labels too: it and model.geometric_classes go together."""
    layer_input: bool = False
    """It reads the authors' data-layer input (float, mean subtracted): normalization=caffe."""
    check_data: Optional[Callable[[Any], str]] = None
    """Its own rule on data.* keys (cfg.data in, '' or the error after '<source>: ' out), run with
    the label checks."""

    export_classes: Optional[Callable[[Any], Optional[ExportClasses]]] = None
    """Its export names its classes in a file of its own (CVAT's labelmap.txt or XML labels, Roboflow's
    _classes.csv, CamVid's label_colors.txt, a COCO panoptic JSON's categories): data.<split> in, the
    names and colours out (None: this export has no such file, own_classes stand); OSError when the
    export is not there (then nothing is inferred from it), ValueError for a bad file. Used when
    data.classes is empty: model.num_classes is its count, fcn.data.class_names its names."""

    def takes(self, key: str) -> bool:
        """Return whether it reads data.<split>.<key> (one of OPTIONAL_KEYS)."""
        return key in self.needs or key in self.accepts


def _coco_labels(d: Any) -> str:
    """Return the error of COCO's data.coco_overlap with data.task ('' when they agree)."""
    if (d.coco_overlap == "multilabel") != (d.task == "multilabel"):
        return (
            f"data.coco_overlap={d.coco_overlap} with data.task={d.task}: a multilabel task reads "
            "COCO with data.coco_overlap=multilabel (one plane per class, overlaps kept), and only it does"
        )
    return ""


_SIGMOID = ("multiclass", "binary", "multilabel")


def _cvat_labelmap(ds: Any) -> Optional[ExportClasses]:
    """Return the classes of a CVAT mask export's labelmap.txt; None without one (CVAT then wrote
    PASCAL VOC's labels); FileNotFoundError when data.<split>.root is no directory."""
    root = Path(str(ds.root))
    if not root.is_dir():
        raise FileNotFoundError(f"cvat_mask: directory {root} not found")
    path = root / "labelmap.txt"
    return read_labelmap(path) if path.is_file() else None


FORMAT_KEYS: dict[str, FormatKeys] = {
    "voc": FormatKeys(),
    "sbd": FormatKeys(),
    "voc_aug": FormatKeys(),
    "folder": FormatKeys(needs_classes=True, own_classes=None, tasks=_SIGMOID),
    # own_classes stays VOC's 21 for pairs, as before the table: its data.classes is required anyway
    "pairs": FormatKeys(
        needs={
            "images": "the directory of the images",
            "masks": "the directory of the masks (<stem><mask_suffix>.png)",
        },
        accepts=("ids", "mask_suffix"),
        needs_classes=True,
        tasks=_SIGMOID,
    ),
    "cityscapes": FormatKeys(
        needs_label_map="reads raw labelIds: set data.label_map (labelIds -> train ids; "
        "predefined_configs/cityscapes_fcn8s.yml holds the official 19-class map)",
        # an export with label_colors.txt (datumaro's) names its labelIds: no label map needed
        export_classes=cityscapes_classes,
    ),
    "ade20k": FormatKeys(),
    "coco": FormatKeys(
        needs={"annotations": "", "images": ""},
        no_label_map="(their categories map to data.classes by name); remove them or use data.coco_unlisted",
        tasks=("multiclass", "multilabel"),
        check_data=_coco_labels,
    ),
    "pascal_context": FormatKeys(own_classes=60, rgb_only=True),
    "nyud": FormatKeys(own_classes=40, modalities=True, layer_input=True),
    "siftflow": FormatKeys(own_classes=33, rgb_only=True, geometric=True, layer_input=True),
    "cvat_mask": FormatKeys(export_classes=_cvat_labelmap),
    "cvat_xml": FormatKeys(
        needs={"annotations": "CVAT's annotations.xml", "images": "the directory of its images"},
        own_classes=None,
        no_label_map="(their labels map to data.classes by name)",
        export_classes=lambda ds: read_cvat_xml_labels(str(ds.annotations)),
    ),
    "coco_panoptic": FormatKeys(
        needs={
            "annotations": "the panoptic JSON (annotations/panoptic_<subset>.json)",
            "images": "the directory of its images",
        },
        accepts=("masks",),
        no_label_map="(their categories are the classes, in id order, or map to data.classes by name)",
        own_classes=None,
        export_classes=panoptic_categories,
    ),
    "roboflow": FormatKeys(own_classes=None, export_classes=roboflow_classes),
    # SegNet's 11 classes, or label_colors.txt's less Void when the export has one
    "camvid": FormatKeys(own_classes=11, export_classes=camvid_classes),
    "kitti": FormatKeys(own_classes=19),  # Cityscapes' 19 train ids
    "labelstudio": FormatKeys(
        needs={"annotations": "Label Studio's JSON export", "images": "the directory of its images"},
        accepts=("masks",),
        no_label_map="(their labels map to data.classes by name)",
        own_classes=None,
        export_classes=labelstudio_classes,
    ),
    "labelme": FormatKeys(
        no_label_map="(their labels map to data.classes by name)",
        own_classes=None,
        export_classes=labelme_classes,
    ),
    # background, then data.yaml's names (class k is label k + 1)
    "yolo": FormatKeys(
        no_label_map="(their class ids are data.yaml's names, k -> k + 1)",
        own_classes=None,
        export_classes=yolo_classes,
    ),
}
"""data.<split>.name -> its key rules; the names are the schema's DATASETS, in this order."""

IMPORT_PATH_KEYS = FormatKeys(tasks=_SIGMOID)
"""A Dataset class by import path: its own keys are data.<split>.args (checked in checks.py)."""


def format_keys(name: str) -> FormatKeys:
    """Return the key rules of data.<split>.name `name`: its FORMAT_KEYS entry, IMPORT_PATH_KEYS for a
    name with a colon, and for an unknown name (which the dataset check then rejects, naming the
    choices) those of a plain layout, FormatKeys()."""
    if str(name) in FORMAT_KEYS:
        return FORMAT_KEYS[str(name)]
    return IMPORT_PATH_KEYS if ":" in str(name) else FormatKeys()
