"""'kitti': KITTI semantic segmentation (training/image_2 + training/semantic Cityscapes labelIds ->
the 19 train ids); fcn/data/kitti.py."""

from fcn.config.formats import FORMAT_KEYS
from fcn.data.cityscapes import CITYSCAPES_CLASSES
from fcn.data.formats.format import Format, PairDataset
from fcn.data.kitti import KittiSegmentation, kitti_dirs, list_kitti


def _open(ds, a, transforms):
    return KittiSegmentation(
        ds.root, ds.split, transforms, num_classes=a.num_classes, ignore_index=a.ignore_index, labels=a.labels
    )


def _mask_reader(fmt, ds, a, listing) -> PairDataset:
    """Return a KittiSegmentation that reads the listed masks' labelIds as train ids."""
    return KittiSegmentation(
        ds.root, ds.split, None, a.num_classes, a.ignore_index, a.labels, type(listing)()
    )


FORMAT = Format(
    name="kitti",
    about="KITTI semantic segmentation: training/image_2 + training/semantic (Cityscapes labelIds -> 19 train ids)",
    keys=FORMAT_KEYS["kitti"],
    list=lambda ds, a: list_kitti(ds.root, ds.split),
    open=_open,
    mask_reader=_mask_reader,
    describe=lambda ds: (
        f"kitti {kitti_dirs(ds.root, ds.split)[0]} with labelIds in {kitti_dirs(ds.root, ds.split)[1]}"
    ),
    classes=CITYSCAPES_CLASSES,
)
