"""'labelstudio': Label Studio's JSON export with brush (RLE) and polygon labels, or its brush PNGs
(fcn/data/labelstudio.py)."""

from fcn.config.formats import FORMAT_KEYS
from fcn.data.formats.shape_format import shape_format
from fcn.data.labelstudio import list_labelstudio


def _list(ds, a):
    return list_labelstudio(ds.annotations, ds.images, a.classes, a.ignore_index, ds.masks)


def _describe(ds):
    masks = f" and brush PNGs in {ds.masks}" if ds.masks else ""
    return f"labelstudio {ds.annotations} with images in {ds.images}{masks}"


FORMAT = shape_format(
    name="labelstudio",
    about="Label Studio's JSON export (brush RLE and polygon labels) and its images; its brush PNGs in masks",
    keys=FORMAT_KEYS["labelstudio"],
    list=_list,
    source=lambda ds: ds.annotations,
    describe=_describe,
)
