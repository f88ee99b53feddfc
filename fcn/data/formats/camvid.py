"""'camvid': CamVid as SegNet distributes it (train/, trainannot/, ...) or as datumaro/CVAT write it
(with label_colors.txt); fcn/data/camvid.py. Splits: train, val, test."""

from fcn.config.exports import SEGNET_CAMVID_CLASSES
from fcn.config.formats import FORMAT_KEYS
from fcn.data.camvid import CamvidSegmentation, camvid_dirs, list_camvid
from fcn.data.formats.format import Format, PairDataset


def _open(ds, a, transforms):
    return CamvidSegmentation(
        ds.root, ds.split, transforms, num_classes=a.num_classes, ignore_index=a.ignore_index, labels=a.labels
    )


def _mask_reader(fmt, ds, a, listing) -> PairDataset:
    """Return a CamvidSegmentation that reads the listed masks (colours or indices, Void ignored)."""
    return CamvidSegmentation(
        ds.root, ds.split, None, a.num_classes, a.ignore_index, a.labels, listing=type(listing)()
    )


FORMAT = Format(
    name="camvid",
    about="CamVid: train/ + trainannot/ (val, test); SegNet's 11 classes, or label_colors.txt's (Void ignored)",
    keys=FORMAT_KEYS["camvid"],
    classes=SEGNET_CAMVID_CLASSES,  # without label_colors.txt (whose classes export_classes gives)
    list=lambda ds, a: list_camvid(ds.root, ds.split),
    open=_open,
    mask_reader=_mask_reader,
    describe=lambda ds: (
        f"camvid {camvid_dirs(ds.root, ds.split)[0]} with masks in {camvid_dirs(ds.root, ds.split)[1]}"
    ),
)
