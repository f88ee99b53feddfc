"""'siftflow': the paper's SIFT Flow, 33 semantic classes; masks carry the 3 geometric ones too."""

from fcn.config.formats import FORMAT_KEYS
from fcn.data.formats.format import Format
from fcn.data.paper import (
    SIFTFLOW_CLASSES,
    SIFTFLOW_GEOMETRIC_CLASSES,
    SIFTFlowSegmentation,
    empty_reader,
    list_siftflow,
)


def _open(ds, a, transforms):
    geometric = len(SIFTFLOW_GEOMETRIC_CLASSES)
    return SIFTFlowSegmentation(
        ds.root, ds.split, transforms, a.num_classes, a.ignore_index, geometric, labels=a.labels
    )


FORMAT = Format(
    name="siftflow",
    about="the paper's SIFT Flow: 33 semantic and 3 geometric classes; splits trainval, test",
    keys=FORMAT_KEYS["siftflow"],
    list=lambda ds, a: list_siftflow(ds.root, ds.split),  # the semantic masks (the geometric ones too)
    open=_open,
    mask_reader=lambda fmt, ds, a, listing: empty_reader(
        SIFTFlowSegmentation, a.num_classes, a.ignore_index, a.labels
    ),
    classes=SIFTFLOW_CLASSES,
    listed_channels=3,
)
