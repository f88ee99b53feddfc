"""'folder': any dataset in VOC layout (JPEGImages/, SegmentationClass/, ImageSets/Segmentation/)."""

from fcn.config.formats import FORMAT_KEYS
from fcn.data.folder import FolderSegmentation, list_folder
from fcn.data.formats.format import Format


def _open(ds, a, transforms):
    return FolderSegmentation(
        ds.root,
        ds.split,
        a.colours,
        transforms,
        num_classes=a.num_classes,
        ignore_index=a.ignore_index,
        labels=a.labels,
        multilabel=a.multilabel,
    )


def _list(ds, a):
    return list_folder(ds.root, ds.split, a.multilabel) if a.multilabel else list_folder(ds.root, ds.split)


FORMAT = Format(
    name="folder",
    about="any dataset in VOC layout: JPEGImages/, SegmentationClass/, ImageSets/Segmentation/<split>.txt",
    keys=FORMAT_KEYS["folder"],
    list=_list,
    open=_open,
    palette=True,
)
