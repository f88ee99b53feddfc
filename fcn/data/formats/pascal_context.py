"""'pascal_context': the paper's PASCAL-Context, 59 classes + background (fcn/data/paper.py)."""

from fcn.config.formats import FORMAT_KEYS
from fcn.data.formats.format import Format
from fcn.data.paper import (
    PASCAL_CONTEXT_CLASSES,
    PascalContextSegmentation,
    empty_pascal_context,
    list_pascal_context,
)


def _open(ds, a, transforms):
    return PascalContextSegmentation(
        ds.root, ds.split, transforms, a.num_classes, a.ignore_index, a.classes, labels=a.labels
    )


FORMAT = Format(
    name="pascal_context",
    about="the paper's PASCAL-Context (VOC2010/ and pascal-context/): 59 classes + background",
    keys=FORMAT_KEYS["pascal_context"],
    list=lambda ds, a: list_pascal_context(ds.root, ds.split),
    open=_open,
    mask_reader=lambda fmt, ds, a, listing: empty_pascal_context(
        a.num_classes, a.ignore_index, ds.root, a.labels
    ),
    classes=PASCAL_CONTEXT_CLASSES,
    listed_channels=3,  # its listing names the colour images
)
