"""CVAT's two segmentation exports, read as CVAT (v2.x, datumaro 1.x inside) writes them.

    data.train: {name: cvat_mask, root: export/, split: default}         # "Segmentation mask 1.1"
    data.train: {name: cvat_xml, annotations: export/annotations.xml, images: export/images}

'cvat_mask' (docs.cvat.ai "Segmentation Mask" format page; datumaro's voc_segmentation exporter,
which CVAT calls): a VOC tree, JPEGImages/<id>.<ext> (present when the export was made with "Save
images"), SegmentationClass/<id>.png with each label's RGB colour, ImageSets/Segmentation/<subset>.txt
('default' when the task has no subsets) and labelmap.txt ('# label:color_rgb:parts:actions', then
'name:r,g,b::' per label; background (0,0,0) first, as CVAT writes it). data.<split>.split names a
subset; 'all' reads every subset listed there (unless a subset is itself named 'all'). A colour the
labelmap does not hold is an error naming the mask and the colour. SegmentationObject/ (instances)
is not read. Without labelmap.txt CVAT wrote PASCAL VOC's labels and colours, and so they are read.

'cvat_xml' (docs.cvat.ai/docs/other/xml_format, version 1.1, "CVAT for images"): each <image id name
width height> is an item, images/<name> (or images/<base name>); its shapes are drawn as CVAT's own
mask export draws them: <polygon points="x1,y1;x2,y2;...">, <box xtl ytl xbr ybr rotation>,
<ellipse cx cy rx ry rotation> and <mask rle left top width height> (CVAT's RLE: run lengths over the
width x height box at (left, top), row by row, alternating and starting with a run of 0s), in
z_order (a higher z_order drawn over a lower one; equal z_order: file order, the later on top).
Polylines, points, skeletons, cuboids and tags have no area: left out, as CVAT's mask export leaves
them, with one note naming how many. Pixels no shape covers are 'background' (class 0). Polygons are
rasterised by pycocotools as the COCO reader rasterises them (fcn/data/coco.py), whose Listing, mask
cache beside the XML and Dataset this reader shares: a CVAT XML is a COCO JSON drawn with the later
shape on top.
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from collections import Counter
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np

from fcn.config import VOID
from fcn.config.exports import ExportClasses, read_labelmap
from fcn.data.classes import VOC_CLASSES, voc_palette
from fcn.data.coco import OUTSIDE_TOLERANCE, CocoListing, Instance, cache_key
from fcn.data.dataset import PairDataset
from fcn.data.images import IMAGE_EXTENSIONS, _open
from fcn.data.listing import Listing, Problem, list_pairs
from fcn.data.masks import LabelMap, rgb_to_index
from fcn.data.splits import list_names, require_dir

ALL_SUBSETS = "all"
"""data.<split>.split of 'cvat_mask' that reads every subset of ImageSets/Segmentation/."""

AREA_SHAPES = ("polygon", "box", "ellipse", "mask")
"""The CVAT shapes that cover pixels (CVAT's Segmentation mask export draws these)."""

NO_AREA_SHAPES = ("polyline", "points", "skeleton", "cuboid", "tag")
"""The CVAT shapes left out of a mask, each counted in one note."""


# ------------------------------------------------------------------------------------------------
# cvat_mask: "Segmentation mask 1.1"


def mask_export_classes(root: str | Path) -> ExportClasses:
    """Return the labels of a CVAT mask export: its labelmap.txt's, else PASCAL VOC's 21 and colours."""
    path = Path(root) / "labelmap.txt"
    if path.is_file():
        return read_labelmap(path)
    voc = voc_palette()
    return ExportClasses(VOC_CLASSES, tuple(tuple(int(c) for c in voc[i]) for i in range(21)), path)


def label_order(found: ExportClasses, classes: Sequence[str], given: bool) -> list[int]:
    """Return the class index of each of the export's labels: its own order when data.classes is
    not `given`, else each label's place in data.classes by name (ValueError for a label it lacks)."""
    if not given:
        return list(range(len(found.names)))
    index = {name: i for i, name in reversed(list(enumerate(classes)))}
    missing = [name for name in found.names if name not in index]
    if missing:
        raise ValueError(
            f"{found.source}: label '{missing[0]}' is not in data.classes {list(classes)}; add it there, "
            "or leave data.classes empty to take the export's labels"
        )
    return [index[name] for name in found.names]


def list_mask_export(root: str | Path, split: str) -> Listing:
    """Return the Listing of a CVAT mask export's subset (ALL_SUBSETS: every subset, in name order);
    raise FileNotFoundError for a missing directory or subset, naming the subsets there are."""
    root = Path(root)
    hint = "expected CVAT's 'Segmentation mask 1.1' export, unzipped (labelmap.txt, SegmentationClass/, ...)"
    require_dir(root, "cvat_mask", hint)
    require_dir(root / "SegmentationClass", "cvat_mask", hint)
    require_dir(
        root / "JPEGImages",
        "cvat_mask",
        "the export holds no images: export the dataset again with 'Save images' on",
    )
    sets = root / "ImageSets" / "Segmentation"
    subsets = sorted(name[: -len(".txt")] for name in list_names(sets) if name.endswith(".txt"))
    if split in subsets:
        chosen = [split]
    elif split == ALL_SUBSETS and subsets:
        chosen = subsets
    else:
        raise FileNotFoundError(
            f"cvat_mask: no subset '{split}' in {sets} (it has: {', '.join(subsets) or 'none'}); "
            f"set data.<split>.split to one of them, or '{ALL_SUBSETS}' for every one"
        )
    listing = Listing()
    for subset in chosen:
        part = list_pairs(
            sets / f"{subset}.txt", root / "JPEGImages", IMAGE_EXTENSIONS, root / "SegmentationClass", ".png"
        )
        listing.ids += part.ids
        listing.images += part.images
        listing.masks += part.masks
        listing.add_problems(part)
    return listing


class CvatMaskSegmentation(PairDataset):
    """A CVAT "Segmentation mask 1.1" export's subset (see the module doc): RGB colour masks through
    its labelmap.txt, each label to its class (data.classes by name, else the labelmap's order)."""

    def __init__(
        self,
        root: str | Path,
        split: str,
        classes: Sequence[str],
        given: bool,
        transforms: Optional[Callable] = None,
        ignore_index: int = VOID,
        labels: Optional[LabelMap] = None,
        listing: Optional[Listing] = None,
    ) -> None:
        if listing is None:
            listing = list_mask_export(root, split)
            if listing.error is not None:
                raise listing.error
        found = mask_export_classes(root)
        order = label_order(found, classes, given)
        voc = voc_palette()
        lut: dict[int, int] = {}
        for i, colour in enumerate(found.colours):
            r, g, b = colour if colour is not None else (int(c) for c in voc[i])  # datumaro's default colour
            lut.setdefault(int(r) << 16 | int(g) << 8 | int(b), order[i])
        super().__init__(
            listing.ids, listing.images, listing.masks, transforms, len(classes), lut, ignore_index, labels
        )
        self.root, self.split = Path(root), split
        self.labelmap = found.source
        self._order = np.asarray(order, dtype=np.int64)

    def load_raw_mask(self, path: Path) -> np.ndarray:
        """Return the class indices of a colour mask (its labelmap's colours), or of an index mask
        (each value a labelmap line); ValueError naming the mask and a colour or index the labelmap lacks."""
        img = _open(path)
        if img.mode in ("RGB", "RGBA"):
            where = f"not in {self.labelmap}; add the label there or fix the mask"
            return rgb_to_index(np.asarray(img.convert("RGB")), self._lut, path, where)
        if img.mode not in ("P", "L"):
            raise ValueError(f"{path}: mask image mode {img.mode!r}; CVAT writes RGB colour masks")
        raw = np.asarray(img, dtype=np.int64)
        if raw.size and raw.max() >= len(self._order):
            raise ValueError(
                f"{path}: index {int(raw.max())} but {self.labelmap} lists {len(self._order)} labels"
            )
        return self._order[raw].astype(np.uint8)


# ------------------------------------------------------------------------------------------------
# cvat_xml: "CVAT for images 1.1"


def _floats(element: ET.Element, names: Sequence[str]) -> list[float]:
    """Return the attributes `names` of a shape as floats; ValueError naming the first bad one."""
    values = []
    for name in names:
        try:
            values.append(float(element.attrib[name]))
        except (KeyError, ValueError):
            raise ValueError(f"<{element.tag}> has no number {name}={element.get(name)!r}") from None
    return values


def _rotated(points: list[tuple[float, float]], cx: float, cy: float, degrees: float) -> list[float]:
    """Return the flat [x1, y1, ...] of points turned clockwise by `degrees` about (cx, cy), as CVAT's
    rotation attribute turns a box or an ellipse (y points down, so clockwise on screen)."""
    t = math.radians(degrees)
    c, s = math.cos(t), math.sin(t)
    flat = []
    for x, y in points:
        dx, dy = x - cx, y - cy
        flat += [cx + dx * c - dy * s, cy + dx * s + dy * c]
    return flat


def cvat_rle_mask(element: ET.Element, height: int, width: int) -> np.ndarray:
    """Return the HxW bool mask of a <mask rle left top width height>: CVAT's run lengths over the
    box, row-major, alternating from a run of 0s; ValueError when the runs or the box do not fit."""
    left, top, w, h = (int(v) for v in _floats(element, ("left", "top", "width", "height")))
    try:
        counts = [int(c) for c in element.get("rle", "").split(",")]
    except ValueError:
        raise ValueError("<mask> has an rle that is not comma-separated run lengths") from None
    if min(counts, default=-1) < 0 or sum(counts) != w * h:
        raise ValueError(f"<mask> rle runs sum to {sum(counts)}, not its {w}x{h} box")
    if left < 0 or top < 0 or left + w > width or top + h > height:
        raise ValueError(f"<mask> box {w}x{h} at ({left}, {top}) lies outside its {width}x{height} image")
    box = np.repeat(np.arange(len(counts)) % 2, counts).astype(bool).reshape(h, w)
    full = np.zeros((height, width), dtype=bool)
    full[top : top + h, left : left + w] = box
    return full


def shape_segmentation(element: ET.Element, height: int, width: int) -> Any:
    """Return a CVAT shape as a COCO segmentation (a polygon list, or compressed RLE for a mask);
    ValueError for a shape that does not fit its image."""
    if element.tag == "mask":
        from pycocotools import mask as mask_utils  # imported here: only the COCO-like readers need it

        return mask_utils.encode(np.asfortranarray(cvat_rle_mask(element, height, width), dtype=np.uint8))
    rotation = float(element.get("rotation", 0) or 0)
    if element.tag == "polygon":
        try:
            xy = [float(v) for pair in element.get("points", "").split(";") for v in pair.split(",")]
        except ValueError:
            raise ValueError("<polygon> points are not 'x1,y1;x2,y2;...'") from None
        if len(xy) < 6 or len(xy) % 2:
            raise ValueError("<polygon> has fewer than 3 points")
    elif element.tag == "box":
        x0, y0, x1, y1 = _floats(element, ("xtl", "ytl", "xbr", "ybr"))
        xy = _rotated([(x0, y0), (x1, y0), (x1, y1), (x0, y1)], (x0 + x1) / 2, (y0 + y1) / 2, rotation)
    else:  # ellipse: 64 vertices, fine enough that the rasterised area is within a pixel of pi*rx*ry
        cx, cy, rx, ry = _floats(element, ("cx", "cy", "rx", "ry"))
        ring = [
            (cx + rx * math.cos(2 * math.pi * k / 64), cy + ry * math.sin(2 * math.pi * k / 64))
            for k in range(64)
        ]
        xy = _rotated(ring, cx, cy, rotation)
    points = np.asarray(xy).reshape(-1, 2)
    outside = (points[:, 0] < -OUTSIDE_TOLERANCE) | (points[:, 0] > width + OUTSIDE_TOLERANCE)
    outside |= (points[:, 1] < -OUTSIDE_TOLERANCE) | (points[:, 1] > height + OUTSIDE_TOLERANCE)
    if outside.any():
        x, y = points[np.argmax(outside)]
        raise ValueError(f"<{element.tag}> has a point ({x:g}, {y:g}) outside its {width}x{height} image")
    return [list(xy)]


def _find_image(image_dir: Path, name: str, names_in_dir: set[str]) -> Optional[Path]:
    """Return images/<name>, else images/<its base name> (an export flattened), else None."""
    if (image_dir / name).is_file():
        return image_dir / name
    base = Path(name).name
    return image_dir / base if base in names_in_dir else None


def list_cvat_xml(
    annotations: str | Path, images: str | Path, classes: Sequence[str], ignore_index: int = VOID
) -> CocoListing:
    """Return the CocoListing of a CVAT for images XML: each <image> with its shapes as Instances in
    drawing order (z_order, then file order) and its cached mask's path; every bad shape, unknown
    label and missing image is a problem, not raised."""
    path, image_dir = Path(annotations), Path(images)
    listing = CocoListing(annotations=path)
    if not path.is_file():
        raise FileNotFoundError(f"cvat_xml: annotations file {path} not found")
    require_dir(image_dir, "cvat_xml", "set data.<split>.images to the export's images/ folder")
    data = path.read_bytes()
    try:
        root = ET.fromstring(data)  # expat: no external entities, nested-entity expansion bounded
    except ET.ParseError as exc:
        listing.fail(path, ValueError(f"{path}: not valid XML ({exc})"))
        return listing
    listing.key = cache_key(data, classes, "cvat_xml", "last", ignore_index)
    listing.cache_dir = path.parent / ".fcn_cvat_cache" / f"{path.stem}-{listing.key}"
    index = {name: i for i, name in reversed(list(enumerate(classes)))}
    unknown: Counter = Counter()
    no_area: Counter = Counter(el.tag for el in root.iter() if el.tag in NO_AREA_SHAPES)
    no_area["track"] = len(root.findall("track"))
    names_in_dir = list_names(image_dir)
    missing, entries = [], root.findall("image")
    for k, image in enumerate(entries):
        name = image.get("name", "")
        try:
            width, height = int(image.get("width", "")), int(image.get("height", ""))
        except ValueError:
            listing.fail(path, ValueError(f"{path}: <image name='{name}'> has no integer width and height"))
            continue
        shapes = []
        for order, element in enumerate(el for el in image if el.tag in AREA_SHAPES):
            label = element.get("label", "")
            if label not in index:
                unknown[label] += 1
                continue
            try:
                segmentation = shape_segmentation(element, height, width)
            except ValueError as exc:
                listing.fail(path, ValueError(f"{path}: image '{name}': {exc}"))
                continue
            z = int(float(element.get("z_order", 0) or 0))
            shapes.append((z, order, Instance(segmentation, index[label], False)))
        found = _find_image(image_dir, name, names_in_dir)
        if found is None:
            missing.append(name)
            listing.problems.append(Problem(image_dir / name, f"no such image; listed in {path.name}"))
            continue
        mask = listing.cache_dir / f"{k:07d}.png"
        listing.ids.append(name)
        listing.images.append(found)
        listing.masks.append(mask)
        listing.shapes[mask] = (
            height,
            width,
            tuple(inst for _, _, inst in sorted(shapes, key=lambda s: s[:2])),
        )
    for label, count in unknown.items():
        listing.fail(
            path,
            ValueError(
                f"{path}: label '{label}' ({count} shapes) is not in data.classes {list(classes)}; add it "
                "there, or leave data.classes empty to take the XML's <labels>"
            ),
        )
    if missing and listing.error is None:
        listing.error = FileNotFoundError(
            f"{len(missing)} of {len(entries)} images named in {path} are not in {image_dir} "
            f"(e.g. {image_dir / missing[0]}); export with 'Save images' or set data.<split>.images"
        )
    if not entries and listing.error is None:
        listing.fail(
            path, ValueError(f"{path}: names no <image> (a 'CVAT for video' export? use 'CVAT for images')")
        )
    left = ", ".join(f"{n} {tag}s" for tag, n in no_area.items() if n)
    if left:  # printed once per XML and options: the listing is cached (cvat_xml_listing)
        print(f"cvat_xml: {path.name}: {left} left out (no area; CVAT's mask export leaves them out too)")
    return listing


@lru_cache(maxsize=4)
def _cached(
    annotations: str, images: str, classes: tuple[str, ...], ignore_index: int, stamp: tuple
) -> CocoListing:
    return list_cvat_xml(annotations, images, classes, ignore_index)


def cvat_xml_listing(ds_cfg: Any, classes: Sequence[str], ignore_index: int) -> CocoListing:
    """Return the CocoListing of data.<split> (parsed once per process while the XML is unchanged)."""
    path = Path(str(ds_cfg.annotations))
    try:
        st = path.stat()
        stamp: tuple = (st.st_size, st.st_mtime_ns)
    except OSError:
        stamp = ()
    return _cached(str(path), str(ds_cfg.images), tuple(classes), int(ignore_index), stamp)
