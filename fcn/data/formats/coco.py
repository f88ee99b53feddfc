"""'coco': a COCO-format segmentation JSON (polygons or RLE) and its images (fcn/data/coco.py)."""

from fcn.config.formats import FORMAT_KEYS
from fcn.data.coco import CocoSegmentation, listing_for
from fcn.data.formats.format import Format


def _open(ds, a, transforms):
    return CocoSegmentation(
        ds.annotations,
        ds.images,
        a.classes,
        transforms,
        unlisted=a.data.coco_unlisted,
        overlap=a.data.coco_overlap,
        ignore_index=a.ignore_index,
    )


def _mask_reader(fmt, ds, a, listing):
    """Return a CocoSegmentation that rasterises the masks from its listing (even one with problems)."""
    d = a.data
    return CocoSegmentation(
        listing.annotations, "", a.classes, None, d.coco_unlisted, d.coco_overlap, a.ignore_index, listing
    )


FORMAT = Format(
    name="coco",
    about="a COCO-format segmentation JSON (polygons or RLE) and the folder of its images",
    keys=FORMAT_KEYS["coco"],
    list=lambda ds, a: listing_for(ds, a.data, a.classes),
    open=_open,
    mask_reader=_mask_reader,
    describe=lambda ds: f"coco {ds.annotations} with images in {ds.images}",
    counts_dir=lambda ds, listing: listing.cache_dir,
)
