"""'coco_panoptic': a COCO panoptic JSON, its PNG folder and its images, read as semantic masks
(fcn/data/coco_panoptic.py)."""

from pathlib import Path

from fcn.config.formats import FORMAT_KEYS
from fcn.data.coco_panoptic import PanopticSegmentation, listing_for
from fcn.data.formats.format import Format


def _open(ds, a, transforms):
    listing = listing_for(ds, a.classes if len(a.data.classes) else (), a.ignore_index)
    return PanopticSegmentation(listing, transforms, a.num_classes, a.ignore_index, a.labels)


def _mask_reader(fmt, ds, a, listing):
    """Return a PanopticSegmentation that reads the listed PNGs (even of a listing with problems)."""
    return PanopticSegmentation(listing, None, a.num_classes, a.ignore_index, a.labels, strict=False)


FORMAT = Format(
    name="coco_panoptic",
    about="a COCO panoptic JSON with its PNG folder (panoptic_<subset>/ beside it) and its images",
    keys=FORMAT_KEYS["coco_panoptic"],
    list=lambda ds, a: listing_for(ds, a.classes if len(a.data.classes) else (), a.ignore_index),
    open=_open,
    mask_reader=_mask_reader,
    describe=lambda ds: f"coco_panoptic {ds.annotations} with images in {ds.images}",
    counts_dir=lambda ds, listing: Path(ds.annotations).parent,
)
