"""'nyud': the paper's NYUDv2, 40 classes, colour / depth / HHA stacked (fcn/data/paper.py)."""

from fcn.config.formats import FORMAT_KEYS
from fcn.data.formats.format import Format
from fcn.data.paper import NYUD_CLASSES, NYUDSegmentation, empty_reader, list_nyud


def _open(ds, a, transforms):
    modalities = [str(m) for m in ds.modalities]
    return NYUDSegmentation(
        ds.root, ds.split, transforms, a.num_classes, a.ignore_index, modalities, labels=a.labels
    )


FORMAT = Format(
    name="nyud",
    about="the paper's NYUDv2 (40 classes) in its data layer's layout; data.<split>.modalities stack color/depth/hha",
    keys=FORMAT_KEYS["nyud"],
    # the colour images and masks; the other modalities are listed as files beside them
    list=lambda ds, a: list_nyud(ds.root, ds.split, [str(m) for m in ds.modalities]),
    open=_open,
    mask_reader=lambda fmt, ds, a, listing: empty_reader(
        NYUDSegmentation, a.num_classes, a.ignore_index, a.labels
    ),
    classes=NYUD_CLASSES,
    listed_channels=3,  # its listing names the colour images, whatever the stacked input's width
)
