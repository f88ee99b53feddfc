"""'pairs': images and masks in two folders paired by file stem (fcn/data/pairs.py)."""

from pathlib import Path

from fcn.config.formats import FORMAT_KEYS
from fcn.data.formats.format import Format
from fcn.data.pairs import PairsSegmentation, list_pairs_dirs


def _open(ds, a, transforms):
    return PairsSegmentation(
        ds.images,
        ds.masks,
        ds.ids,
        ds.mask_suffix,
        a.colours,
        transforms,
        num_classes=a.num_classes,
        ignore_index=a.ignore_index,
        labels=a.labels,
        multilabel=a.multilabel,
    )


def _describe(ds):
    ids = f" listed in {ds.ids}" if ds.ids else ""
    return f"pairs {ds.images}{ids} with masks in {ds.masks}"


FORMAT = Format(
    name="pairs",
    about="images and masks in two folders paired by stem (<stem><mask_suffix>.png), ids optional",
    keys=FORMAT_KEYS["pairs"],
    list=lambda ds, a: list_pairs_dirs(ds.images, ds.masks, ds.ids, ds.mask_suffix, a.multilabel),
    open=_open,
    describe=_describe,
    counts_dir=lambda ds, listing: Path(ds.masks),
    palette=True,
)
