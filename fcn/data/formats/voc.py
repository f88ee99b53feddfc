"""'voc': PASCAL VOC 2012 (VOCdevkit/VOC2012) with seg11valid (fcn/data/voc.py)."""

from fcn.config.formats import FORMAT_KEYS
from fcn.data.formats.format import Format
from fcn.data.voc import VOCSegmentation, list_voc


def _open(ds, a, transforms):
    return VOCSegmentation(
        ds.root, ds.split, transforms, num_classes=a.num_classes, ignore_index=a.ignore_index, labels=a.labels
    )


FORMAT = Format(
    name="voc",
    about="PASCAL VOC 2012 (root holds VOCdevkit/); splits train, val, trainval, seg11valid",
    keys=FORMAT_KEYS["voc"],
    list=lambda ds, a: list_voc(ds.root, ds.split),
    open=_open,
)
