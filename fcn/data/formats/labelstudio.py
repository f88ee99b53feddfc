"""'labelstudio': Label Studio's JSON export with brush (RLE) and polygon labels, or its brush PNGs
(fcn/data/labelstudio.py)."""

from fcn.config.formats import FORMAT_KEYS
from fcn.data.formats.format import Format
from fcn.data.labelstudio import list_labelstudio
from fcn.data.shapes import ShapeListing, ShapeSegmentation


def _list(ds, a):
    return list_labelstudio(ds.annotations, ds.images, a.classes, a.ignore_index, ds.masks)


def _dataset(ds, a, listing, transforms=None):
    if not isinstance(listing, ShapeListing):  # the check asks before it listed: list now
        listing = _list(ds, a)
    return ShapeSegmentation(listing, ds.annotations, a.num_classes, transforms, a.ignore_index)


def _open(ds, a, transforms):
    listing = _list(ds, a)
    if listing.error is not None:
        raise listing.error
    return _dataset(ds, a, listing, transforms)


def _describe(ds):
    masks = f" and brush PNGs in {ds.masks}" if ds.masks else ""
    return f"labelstudio {ds.annotations} with images in {ds.images}{masks}"


FORMAT = Format(
    name="labelstudio",
    about="Label Studio's JSON export (brush RLE and polygon labels) and its images; its brush PNGs in masks",
    keys=FORMAT_KEYS["labelstudio"],
    list=_list,
    open=_open,
    mask_reader=lambda fmt, ds, a, listing: _dataset(ds, a, listing),
    describe=_describe,
    counts_dir=lambda ds, listing: listing.cache_dir,
)
