"""'sbd': SBD (root holds benchmark_RELEASE/); splits train, val."""

from fcn.config.formats import FORMAT_KEYS
from fcn.data.formats.format import Format
from fcn.data.sbd import SBDSegmentation, list_sbd


def _open(ds, a, transforms):
    return SBDSegmentation(
        ds.root, ds.split, transforms, num_classes=a.num_classes, ignore_index=a.ignore_index, labels=a.labels
    )


FORMAT = Format(
    name="sbd",
    about="SBD (root holds benchmark_RELEASE/); splits train, val",
    keys=FORMAT_KEYS["sbd"],
    list=lambda ds, a: list_sbd(ds.root, ds.split),
    open=_open,
)
