"""'labelme': a folder of labelme's JSON files, one per image (fcn/data/labelme.py)."""

from fcn.config.formats import FORMAT_KEYS
from fcn.data.formats.format import Format
from fcn.data.labelme import list_labelme
from fcn.data.shapes import ShapeListing, ShapeSegmentation


def _list(ds, a):
    return list_labelme(ds.root, a.classes, a.ignore_index)


def _dataset(ds, a, listing, transforms=None):
    if not isinstance(listing, ShapeListing):  # the check asks before it listed: list now
        listing = _list(ds, a)
    return ShapeSegmentation(listing, ds.root, a.num_classes, transforms, a.ignore_index)


def _open(ds, a, transforms):
    listing = _list(ds, a)
    if listing.error is not None:
        raise listing.error
    return _dataset(ds, a, listing, transforms)


FORMAT = Format(
    name="labelme",
    about="a folder of labelme's JSON files (polygons, rectangles, circles; imageData embedded or the image beside)",
    keys=FORMAT_KEYS["labelme"],
    list=_list,
    open=_open,
    mask_reader=lambda fmt, ds, a, listing: _dataset(ds, a, listing),
    describe=lambda ds: f"labelme {ds.root}",
    counts_dir=lambda ds, listing: listing.cache_dir,
)
