"""'cityscapes': Cityscapes leftImg8bit/ + gtFine/ labelIds (data.label_map maps them); splits train, val, test."""

from fcn.config.formats import FORMAT_KEYS
from fcn.data.cityscapes import CityscapesSegmentation, list_cityscapes
from fcn.data.formats.format import Format


def _open(ds, a, transforms):
    return CityscapesSegmentation(
        ds.root, ds.split, transforms, num_classes=a.num_classes, ignore_index=a.ignore_index, labels=a.labels
    )


FORMAT = Format(
    name="cityscapes",
    about="Cityscapes leftImg8bit/ + gtFine/ labelIds (data.label_map maps them); splits train, val, test",
    keys=FORMAT_KEYS["cityscapes"],
    list=lambda ds, a: list_cityscapes(ds.root, ds.split),
    open=_open,
)
