"""The Format of an export whose masks are drawn from shapes (labelme, Label Studio, YOLO): listed
into a ShapeListing, read by a ShapeSegmentation, its class counts cached beside its mask cache."""

from __future__ import annotations

from typing import Any, Callable

from fcn.config.formats import FormatKeys
from fcn.data.formats.format import Format
from fcn.data.listing import Listing
from fcn.data.shapes import ShapeListing, ShapeSegmentation


def shape_format(
    name: str,
    about: str,
    keys: FormatKeys,
    list: Callable[[Any, Any], Listing],
    source: Callable[[Any], Any],
    describe: Callable[[Any], str],
) -> Format:
    """Return the Format of a shape export: list(ds_cfg, args) -> its ShapeListing, source(ds_cfg)
    the file or folder its ShapeSegmentation names (the JSON, the root), describe the check's line."""

    def dataset(ds: Any, a: Any, listing: Any, transforms: Any = None) -> ShapeSegmentation:
        if not isinstance(listing, ShapeListing):  # the check asks before it listed: list now
            listing = list(ds, a)
        return ShapeSegmentation(listing, source(ds), a.num_classes, transforms, a.ignore_index)

    def open_(ds: Any, a: Any, transforms: Any) -> ShapeSegmentation:
        listing = list(ds, a)
        if listing.error is not None:
            raise listing.error
        return dataset(ds, a, listing, transforms)

    return Format(
        name=name,
        about=about,
        keys=keys,
        list=list,
        open=open_,
        mask_reader=lambda fmt, ds, a, listing: dataset(ds, a, listing),
        describe=describe,
        counts_dir=lambda ds, listing: listing.cache_dir,
    )
