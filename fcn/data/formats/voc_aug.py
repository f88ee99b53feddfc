"""'voc_aug': VOC 2012 train + SBD train/val minus VOC 2012 val (10,582 images); split train."""

from fcn.config.formats import FORMAT_KEYS
from fcn.data.formats.format import Format
from fcn.data.sbd import VOCAugSegmentation, list_voc_aug


def _open(ds, a, transforms):
    return VOCAugSegmentation(
        ds.root, ds.split, transforms, num_classes=a.num_classes, ignore_index=a.ignore_index, labels=a.labels
    )


FORMAT = Format(
    name="voc_aug",
    about="VOC 2012 train + SBD train/val minus VOC 2012 val (10,582 images); split train",
    keys=FORMAT_KEYS["voc_aug"],
    list=lambda ds, a: list_voc_aug(ds.root, ds.split),
    open=_open,
)
