"""'ade20k': ADE20K's ADEChallengeData2016 (images/, annotations/); splits training, validation."""

from fcn.config.formats import FORMAT_KEYS
from fcn.data.ade20k import ADE20KSegmentation, list_ade20k
from fcn.data.formats.format import Format


def _open(ds, a, transforms):
    return ADE20KSegmentation(
        ds.root, ds.split, transforms, num_classes=a.num_classes, ignore_index=a.ignore_index, labels=a.labels
    )


FORMAT = Format(
    name="ade20k",
    about="ADE20K's ADEChallengeData2016 (images/, annotations/); splits training, validation",
    keys=FORMAT_KEYS["ade20k"],
    list=lambda ds, a: list_ade20k(ds.root, ds.split),
    open=_open,
)
