"""'labelme': a folder of labelme's JSON files, one per image (fcn/data/labelme.py)."""

from fcn.config.formats import FORMAT_KEYS
from fcn.data.formats.shape_format import shape_format
from fcn.data.labelme import list_labelme


def _list(ds, a):
    return list_labelme(ds.root, a.classes, a.ignore_index)


FORMAT = shape_format(
    name="labelme",
    about="a folder of labelme's JSON files (polygons, rectangles, circles; imageData embedded or the image beside)",
    keys=FORMAT_KEYS["labelme"],
    list=_list,
    source=lambda ds: ds.root,
    describe=lambda ds: f"labelme {ds.root}",
)
