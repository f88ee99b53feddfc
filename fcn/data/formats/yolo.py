"""'yolo': an Ultralytics YOLO segmentation dataset, data.yaml + images/ + labels/ polygons
(fcn/data/yolo.py)."""

from fcn.config.formats import FORMAT_KEYS
from fcn.data.formats.shape_format import shape_format
from fcn.data.yolo import list_yolo, split_sources


def _list(ds, a):
    return list_yolo(ds.root, ds.split, a.ignore_index)


def _describe(ds):
    try:
        return f"yolo {ds.split} images in {', '.join(str(s) for s in split_sources(ds.root, ds.split))}"
    except (OSError, ValueError):
        return f"yolo {ds.split} in {ds.root}"


FORMAT = shape_format(
    name="yolo",
    about="an Ultralytics YOLO segmentation dataset: data.yaml, images/<split>/, labels/<split>/*.txt polygons",
    keys=FORMAT_KEYS["yolo"],
    list=_list,
    source=lambda ds: ds.root,
    describe=_describe,
)
