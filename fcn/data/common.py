"""The old home of the datasets' shared pieces, kept so that `from fcn.data.common import X` still works.

They now live by job: fcn/data/classes.py (class names, palettes), fcn/data/images.py (reading
images and arrays), fcn/data/masks.py (reading masks, the LabelMap, check_pair), fcn/data/splits.py
(split files, required directories). Import from those in new code.
"""

from fcn.config import VOID
from fcn.data.classes import VOC_CLASSES, make_palette, voc_palette
from fcn.data.images import (
    ARRAY_EXTENSIONS,
    IMAGE_EXTENSIONS,
    LayerInput,
    _open,
    display_pixels,
    image_array,
    image_size,
    read_channels,
    read_image,
    scale_pixels,
    to_rgb,
)
from fcn.data.masks import (
    MAX_RAW_ID,
    LabelMap,
    binary_labels,
    check_pair,
    colour_lookup,
    multilabel_paths,
    palette_lookup,
    read_binary_mask,
    read_multilabel_mask,
    read_png_mask,
    read_sbd_mat,
    rgb_to_index,
)

__all__ = [
    "ARRAY_EXTENSIONS",
    "IMAGE_EXTENSIONS",
    "MAX_RAW_ID",
    "VOC_CLASSES",
    "VOID",
    "LabelMap",
    "LayerInput",
    "_open",
    "binary_labels",
    "check_pair",
    "colour_lookup",
    "display_pixels",
    "image_array",
    "image_size",
    "make_palette",
    "multilabel_paths",
    "palette_lookup",
    "read_binary_mask",
    "read_channels",
    "read_image",
    "read_multilabel_mask",
    "read_png_mask",
    "read_sbd_mat",
    "rgb_to_index",
    "scale_pixels",
    "to_rgb",
    "voc_palette",
]
