"""'yolo': an Ultralytics YOLO segmentation dataset, data.yaml + images/ + labels/ polygons
(fcn/data/yolo.py)."""

from fcn.config.formats import FORMAT_KEYS
from fcn.data.formats.format import Format
from fcn.data.shapes import ShapeListing, ShapeSegmentation
from fcn.data.yolo import list_yolo, split_sources


def _list(ds, a):
    return list_yolo(ds.root, ds.split, a.ignore_index)


def _dataset(ds, a, listing, transforms=None):
    if not isinstance(listing, ShapeListing):  # the check asks before it listed: list now
        listing = _list(ds, a)
    return ShapeSegmentation(listing, ds.root, a.num_classes, transforms, a.ignore_index)


def _open(ds, a, transforms):
    listing = _list(ds, a)
    if listing.error is not None:
        raise listing.error
    return _dataset(ds, a, listing, transforms)


def _describe(ds):
    try:
        return f"yolo {ds.split} images in {', '.join(str(s) for s in split_sources(ds.root, ds.split))}"
    except (OSError, ValueError):
        return f"yolo {ds.split} in {ds.root}"


FORMAT = Format(
    name="yolo",
    about="an Ultralytics YOLO segmentation dataset: data.yaml, images/<split>/, labels/<split>/*.txt polygons",
    keys=FORMAT_KEYS["yolo"],
    list=_list,
    open=_open,
    mask_reader=lambda fmt, ds, a, listing: _dataset(ds, a, listing),
    describe=_describe,
    counts_dir=lambda ds, listing: listing.cache_dir,
)
