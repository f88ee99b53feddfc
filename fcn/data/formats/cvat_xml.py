"""'cvat_xml': CVAT for images 1.1 XML (polygons, boxes, ellipses, masks in z-order) and its images
(fcn/data/cvat.py lists it; fcn/data/coco.py's CocoSegmentation rasterises and caches its masks)."""

from fcn.config.formats import FORMAT_KEYS
from fcn.data.coco import CocoSegmentation
from fcn.data.cvat import cvat_xml_listing
from fcn.data.formats.format import Format


def _open(ds, a, transforms, listing=None):
    if listing is None:
        listing = cvat_xml_listing(ds, a.classes, a.ignore_index)
        if listing.error is not None:
            raise listing.error
    # overlap 'last': shapes come in drawing order (z_order, then file order), the later on top
    return CocoSegmentation(
        ds.annotations, ds.images, a.classes, transforms, "error", "last", a.ignore_index, listing
    )


FORMAT = Format(
    name="cvat_xml",
    about="CVAT for images 1.1 XML (polygons, boxes, ellipses and masks, in z-order) and its images folder",
    keys=FORMAT_KEYS["cvat_xml"],
    list=lambda ds, a: cvat_xml_listing(ds, a.classes, a.ignore_index),
    open=_open,
    mask_reader=lambda fmt, ds, a, listing: _open(ds, a, None, listing),
    describe=lambda ds: f"cvat_xml {ds.annotations} with images in {ds.images}",
    counts_dir=lambda ds, listing: listing.cache_dir,
)
