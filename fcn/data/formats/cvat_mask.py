"""'cvat_mask': CVAT's "Segmentation mask 1.1" export, its labelmap.txt colours (fcn/data/cvat.py)."""

from fcn.config.formats import FORMAT_KEYS
from fcn.data.cvat import CvatMaskSegmentation, list_mask_export
from fcn.data.formats.format import Format


def _open(ds, a, transforms, listing=None):
    return CvatMaskSegmentation(
        ds.root,
        ds.split,
        a.classes,
        bool(len(a.data.classes)),
        transforms,
        ignore_index=a.ignore_index,
        labels=a.labels,
        listing=listing,
    )


FORMAT = Format(
    name="cvat_mask",
    about="CVAT's 'Segmentation mask 1.1' export: a VOC tree of RGB colour masks and its labelmap.txt",
    keys=FORMAT_KEYS["cvat_mask"],
    list=lambda ds, a: list_mask_export(ds.root, ds.split),
    open=_open,
    mask_reader=lambda fmt, ds, a, listing: _open(ds, a, None, listing),
)
