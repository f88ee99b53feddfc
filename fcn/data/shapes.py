"""Masks drawn from a labelling tool's shapes (labelme's JSON, Label Studio's export): the layers of one
image in drawing order, the dataset that draws them on read, and the one-line class mapping.

A Layer is one shape as the tool stored it: a polygon, rectangle or circle in pixels, a 0/1 bitmap
(Label Studio's brush, labelme's mask shape) or a PNG file of one (Label Studio's "brush to PNG").
draw() paints the layers of an image in order, a later one over an earlier one (both tools draw
their shapes in file order, the last on top), on a background of 0. Polygons, rectangles and circles
are drawn with PIL's ImageDraw as labelme.utils.shape_to_mask draws them (outline and fill), so the
pixels are labelme's own.

The listings are CocoListings: like a COCO JSON's masks, these are drawn on read, so the key of
the export's files and of the options that change a mask stands for them in the class-count cache
(fcn/data/weights.py counts_checksum).
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
from PIL import Image, ImageDraw

from fcn.config import VOID
from fcn.data.coco import CocoListing
from fcn.data.dataset import PairDataset
from fcn.data.images import image_size, read_channels
from fcn.data.masks import check_pair

OUTSIDE_TOLERANCE = 1.0
"""Pixels a vertex may lie beyond the image's border (tools round, or put a vertex on x = width)
before it counts as outside: further out means wrong coordinates or the wrong image size."""


@dataclass(frozen=True)
class Layer:
    """One shape of an image: its kind, its geometry and the label it draws."""

    kind: str  # polygon | rectangle | circle | bitmap | png
    label: int  # the class index, or the ignore index
    points: tuple[tuple[float, float], ...] = ()  # polygon/rectangle/circle: (x, y) pixels
    bitmap: Optional[np.ndarray] = None  # bitmap: an HxW bool array (or a box of one at `points[0]`)
    png: Optional[Path] = None  # png: a grey mask file, on where its value is over PNG_THRESHOLD


PNG_THRESHOLD = 128
"""A brush mask pixel (Label Studio's RLE alpha, its PNG export's grey value) is on above this value:
the threshold label_studio_converter's image2rle uses when it turns a mask image into a brush."""


@dataclass
class ShapeListing(CocoListing):
    """A CocoListing whose masks are drawn from layers: each listed mask's (height, width, layers)."""

    layers: dict[Path, tuple[int, int, tuple[Layer, ...]]] = field(default_factory=dict)


def files_key(paths: Sequence[Path], options: Any) -> str:
    """Return the 16-hex-digit key of an export: each file's name, size and mtime, and the options
    (classes, ignore index) that change its masks."""
    h = hashlib.sha256(json.dumps(options, default=str).encode())
    for p in paths:
        st = p.stat()
        h.update(f"{p.name}\t{st.st_size}\t{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:16]


def outside(points: Sequence[Sequence[float]], height: int, width: int) -> Optional[tuple[float, float]]:
    """Return the first (x, y) of points that lies outside a width x height image (beyond
    OUTSIDE_TOLERANCE), or None when all lie inside."""
    for x, y in points:
        if not (-OUTSIDE_TOLERANCE <= x <= width + OUTSIDE_TOLERANCE) or not (
            -OUTSIDE_TOLERANCE <= y <= height + OUTSIDE_TOLERANCE
        ):
            return float(x), float(y)
    return None


def layer_mask(layer: Layer, height: int, width: int) -> np.ndarray:
    """Return the HxW bool pixels one layer covers (polygons, rectangles, circles as labelme draws them)."""
    if layer.kind == "bitmap":
        if layer.bitmap.shape == (height, width):
            return layer.bitmap
        full = np.zeros((height, width), dtype=bool)  # labelme's mask shape: a box at its first point
        x0, y0 = (int(v) for v in layer.points[0])
        box = layer.bitmap[: max(height - y0, 0), : max(width - x0, 0)]
        full[y0 : y0 + box.shape[0], x0 : x0 + box.shape[1]] = box
        return full
    if layer.kind == "png":
        with Image.open(layer.png) as im:
            grey = np.asarray(im.convert("L"))
        if grey.shape != (height, width):
            raise ValueError(
                f"{layer.png}: mask is {grey.shape[1]}x{grey.shape[0]} but its task's image is {width}x{height}"
            )
        return grey > PNG_THRESHOLD
    canvas = Image.fromarray(np.zeros((height, width), dtype=np.uint8))
    draw = ImageDraw.Draw(canvas)
    xy = [(float(x), float(y)) for x, y in layer.points]
    if layer.kind == "circle":  # the first point the centre, the second on the circle
        (cx, cy), (px, py) = xy
        r = math.sqrt((cx - px) ** 2 + (cy - py) ** 2)
        draw.ellipse(((cx - r, cy - r), (cx + r, cy + r)), outline=1, fill=1)
    elif layer.kind == "rectangle":  # two opposite corners, in either order
        (x0, y0), (x1, y1) = xy
        draw.rectangle(((min(x0, x1), min(y0, y1)), (max(x0, x1), max(y0, y1))), outline=1, fill=1)
    else:
        draw.polygon(xy, outline=1, fill=1)
    return np.asarray(canvas, dtype=bool)


def draw(height: int, width: int, layers: Sequence[Layer]) -> np.ndarray:
    """Return the HxW uint8 mask of an image's layers, drawn in order (the later over the earlier) on 0."""
    mask = np.zeros((height, width), dtype=np.uint8)
    for layer in layers:
        mask[layer_mask(layer, height, width)] = layer.label
    return mask


_said: set[str] = set()


def say_classes(line: str) -> None:
    """Print the export's class mapping line once per process (class_names is asked often)."""
    if line not in _said:
        _said.add(line)
        print(line, flush=True)


def mapping_line(fmt: str, names: Sequence[str], source: str) -> str:
    """Return the one line that says where the classes came from and their indices."""
    pairs = ", ".join(f"{n}={i}" for i, n in enumerate(names))
    return f"{fmt}: {len(names)} classes from {source}: {pairs}"


class ShapeSegmentation(PairDataset):
    """The items of a ShapeListing: each image with the mask its layers draw (class indices already:
    data.label_map does not apply to a tool's named labels)."""

    def __init__(
        self, listing: ShapeListing, source: Path, num_classes: int, transforms=None, ignore_index=VOID
    ):
        super().__init__(
            listing.ids, listing.images, listing.masks, transforms, num_classes, None, ignore_index
        )
        self.source = source  # the export file or folder errors name
        self._layers = listing.layers

    def load_raw_mask(self, path: Path) -> np.ndarray:
        """Return the mask the layers listed for `path` draw (fcn.data.check reads masks through this)."""
        height, width, layers = self._layers[path]
        return draw(height, width, layers)

    def __getitem__(self, index: int):
        image = read_channels(self.images[index], self.channels)
        mask = self.load_mask(self.masks[index])
        width, height = image_size(image)
        if mask.shape != (height, width):
            raise ValueError(
                f"{self.masks[index]}: image '{self.images[index].name}' is {width}x{height} but the "
                f"annotation says {mask.shape[1]}x{mask.shape[0]} (width x height); the wrong image?"
            )
        check_pair(image, mask, self.num_classes, self.masks[index], self.ignore_index)
        if self.transforms is not None:
            return self.transforms(image, mask)
        return image, mask
