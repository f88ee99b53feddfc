"""COCO-format segmentation JSON (what CVAT, Label Studio, Roboflow and labelme export) as class-index masks.

    data.train: {name: coco, annotations: path/to/instances.json, images: path/to/images}

Each image of the JSON's "images" is one item, its file images/<file_name> (or images/<base name>
when the exporter kept a folder in file_name). Its mask is built from its annotations, polygons or
RLE (compressed or not), rasterised by pycocotools as the COCO API does (annToMask):

- a category maps to data.classes by its name; 0 (background) is where no annotation lies, so an
  image without annotations is all background;
- a category used by an annotation but not in data.classes is an error naming it, unless
  data.coco_unlisted is 'ignore' (its pixels get data.ignore_index) or 'background' (the
  annotation is dropped); a category no annotation uses is never an error (Roboflow lists one);
- data.coco_overlap 'ignore' (torchvision's references/segmentation rule): iscrowd regions and
  pixels where instances of different classes overlap get data.ignore_index; 'last': annotations
  are drawn in file order and the later one wins (an iscrowd one draws data.ignore_index);
  'multilabel' (data.task=multilabel): one 0/1 plane per class of data.classes (no background
  class), each instance drawn on its class's plane, so overlapping instances of different classes
  keep both; an iscrowd region, or an unlisted category with coco_unlisted=ignore, is ignored on
  its class's plane (on every plane for the latter). These C x H x W masks are cached as .npy.

Masks are rasterised once, when an item is first read, and kept as PNGs in
<json dir>/.fcn_coco_cache/<json stem>-<key>/, where key is a checksum of the JSON's bytes and of
the options that change a mask (classes, coco_unlisted, coco_overlap, ignore_index): from the second
epoch on, an item costs what a VOC-layout pair costs. A changed JSON or option gets a new cache;
a directory that cannot be written only costs the rasterising again (a warning says so once).

list_coco() parses and checks the JSON without stopping at the first problem (a Listing, as the
other layouts' listers return): malformed JSON (line and column), unknown categories, polygons
outside their image, RLE of the wrong size, images missing on disk; CocoSegmentation raises its error.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np
from PIL import Image

from fcn.config import VOID
from fcn.data.dataset import PairDataset
from fcn.data.images import image_size, read_channels
from fcn.data.listing import Listing, Problem
from fcn.data.masks import check_pair, read_png_mask
from fcn.data.splits import list_names

UNLISTED = ("error", "ignore", "background")
"""data.coco_unlisted: what an annotation of a category not in data.classes becomes."""

OVERLAP = ("ignore", "last", "multilabel")
"""data.coco_overlap: torchvision's rule (overlaps of different classes and crowds ignored), the later
annotation wins, or one plane per class (data.task=multilabel)."""

CACHE_VERSION = 1
"""Part of the cache key: bumped whenever the rasterising rules change, so old masks are not reused."""

OUTSIDE_TOLERANCE = 1.0
"""Pixels a polygon vertex may lie beyond its image's border (exporters round, or put a vertex on
x = width) before it counts as outside: a polygon further out means wrong coordinates or image size."""


@dataclass(frozen=True)
class Instance:
    """One annotation as a mask needs it: its segmentation (polygons or RLE), label and crowd flag."""

    segmentation: Any
    label: int  # class index, or the ignore index for coco_unlisted=ignore
    crowd: bool


@dataclass
class CocoListing(Listing):
    """A Listing of a COCO JSON, plus each mask's (height, width, instances) and the cache they go to."""

    annotations: Path = Path()
    cache_dir: Path = Path()
    key: str = ""  # 16 hex digits: the JSON's checksum and the options that change a mask
    shapes: dict[Path, tuple[int, int, tuple[Instance, ...]]] = field(default_factory=dict)


def cache_key(data: bytes, classes: Sequence[str], unlisted: str, overlap: str, ignore_index: int) -> str:
    """Return the 16-hex-digit key of a mask cache: sha256 of the JSON's bytes and of every option that changes a mask."""
    h = hashlib.sha256(data)
    h.update(json.dumps([CACHE_VERSION, list(classes), unlisted, overlap, int(ignore_index)]).encode())
    return h.hexdigest()[:16]


def _json_error(path: Path, exc: json.JSONDecodeError) -> ValueError:
    return ValueError(f"{path}: not valid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}")


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _segmentation_problem(seg: Any, height: int, width: int) -> Optional[str]:
    """Return why a segmentation cannot be rasterised on a height x width image, or None when it can."""
    if isinstance(seg, list):
        if not seg:
            return "has no segmentation (an empty polygon list: a box-only export?)"
        for poly in seg:
            if not isinstance(poly, list) or len(poly) < 6 or len(poly) % 2 or not all(map(_is_number, poly)):
                return "has a polygon that is not a flat list of at least 3 x, y pairs"
            xy = np.asarray(poly, dtype=np.float64).reshape(-1, 2)
            outside = (xy[:, 0] < -OUTSIDE_TOLERANCE) | (xy[:, 0] > width + OUTSIDE_TOLERANCE)
            outside |= (xy[:, 1] < -OUTSIDE_TOLERANCE) | (xy[:, 1] > height + OUTSIDE_TOLERANCE)
            if outside.any():
                x, y = xy[np.argmax(outside)]
                return f"has a polygon vertex ({x:g}, {y:g}) outside its {width}x{height} image"
        return None
    if isinstance(seg, dict):
        size, counts = seg.get("size"), seg.get("counts")
        if not isinstance(size, list) or len(size) != 2 or not isinstance(counts, (list, str)):
            return "has an RLE segmentation without 'size' [height, width] and 'counts'"
        if [int(s) for s in size if _is_number(s)] != [height, width]:
            return f"has an RLE of size {size} (height, width) on a {width}x{height} image"
        if isinstance(counts, list) and (not all(map(_is_number, counts)) or sum(counts) != height * width):
            return f"has uncompressed RLE counts that do not sum to {height}x{width} pixels"
        return None
    return "has no segmentation (neither polygons nor RLE)"


def list_coco(
    annotations: str | os.PathLike,
    images: str | os.PathLike,
    classes: Sequence[str],
    unlisted: str = "error",
    overlap: str = "ignore",
    ignore_index: int = VOID,
) -> CocoListing:
    """Return the CocoListing of a COCO JSON: the images found on disk, their masks' shapes and every problem.

    The first problem that makes the dataset unusable is its error (what CocoSegmentation raises);
    every image file that is missing is a problem, and the error counts them.
    """
    path, image_dir = Path(annotations), Path(images)
    listing = CocoListing(annotations=path)
    read = _read_json(path, image_dir, listing)
    if read is None:
        return listing
    data, doc = read
    listing.key = cache_key(data, classes, unlisted, overlap, ignore_index)
    listing.cache_dir = path.parent / ".fcn_coco_cache" / f"{path.stem}-{listing.key}"
    categories = _categories(doc, path, listing)
    entries = None if categories is None else _image_entries(doc, path, listing)
    if entries is None:
        return listing
    per_image = _instances(doc, path, entries, categories, classes, unlisted, ignore_index, listing)
    _list_images_and_masks(path, image_dir, entries, per_image, listing)
    return listing


def _read_json(path: Path, image_dir: Path, listing: CocoListing) -> Optional[tuple[bytes, dict]]:
    """Return (the JSON's bytes, the parsed document) when the file reads as COCO JSON and the images
    directory exists; else None, the reason failed in the listing."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        reason = "file not found" if isinstance(exc, FileNotFoundError) else exc.strerror or str(exc)
        listing.fail(path, FileNotFoundError(f"{path}: {reason} (data.<split>.annotations)"))
        return None
    if not image_dir.is_dir():
        listing.fail(
            image_dir, FileNotFoundError(f"{image_dir}: images directory not found (data.<split>.images)")
        )
        return None
    try:
        doc = json.loads(data)
    except json.JSONDecodeError as exc:
        listing.fail(path, _json_error(path, exc))
        return None
    except UnicodeDecodeError as exc:
        listing.fail(path, ValueError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})"))
        return None
    if (
        not isinstance(doc, dict)
        or not isinstance(doc.get("images"), list)
        or not isinstance(doc.get("categories"), list)
    ):
        listing.fail(
            path,
            ValueError(f"{path}: not COCO JSON: expected an object with 'images' and 'categories' lists"),
        )
        return None
    if not isinstance(doc.get("annotations", []), list):
        listing.fail(path, ValueError(f"{path}: 'annotations' must be a list"))
        return None
    return data, doc


def _categories(doc: dict, path: Path, listing: CocoListing) -> Optional[dict[Any, str]]:
    """Return the JSON's category id -> name, or None (the malformed category failed in the listing)."""
    categories: dict[Any, str] = {}
    for c in doc["categories"]:
        if not isinstance(c, dict) or "id" not in c or not isinstance(c.get("name"), str):
            listing.fail(path, ValueError(f"{path}: category {c!r} needs an 'id' and a 'name'"))
            return None
        categories[c["id"]] = c["name"]
    return categories


def _image_entries(doc: dict, path: Path, listing: CocoListing) -> Optional[dict[Any, tuple[str, int, int]]]:
    """Return image id -> (file_name, height, width) in the JSON's order, or None (the malformed or
    repeated image failed in the listing)."""
    entries: dict[Any, tuple[str, int, int]] = {}
    for im in doc["images"]:
        ok = isinstance(im, dict) and "id" in im and isinstance(im.get("file_name"), str)
        ok = ok and all(
            _is_number(im.get(k)) and im[k] > 0 and int(im[k]) == im[k] for k in ("width", "height")
        )
        if not ok:
            listing.fail(
                path, ValueError(f"{path}: image {im!r} needs 'id', 'file_name', 'width' and 'height'")
            )
            return None
        if im["id"] in entries:
            listing.fail(path, ValueError(f"{path}: image id {im['id']!r} is listed twice"))
            return None
        entries[im["id"]] = (im["file_name"], int(im["height"]), int(im["width"]))
    return entries


def _instances(
    doc: dict,
    path: Path,
    entries: dict[Any, tuple[str, int, int]],
    categories: dict[Any, str],
    classes: Sequence[str],
    unlisted: str,
    ignore_index: int,
    listing: CocoListing,
) -> dict[Any, list[Instance]]:
    """Return image id -> its annotations as Instances, each category mapped to data.classes by name
    (data.coco_unlisted deciding the others); every bad annotation and unknown category is a problem."""
    index = {name: i for i, name in reversed(list(enumerate(classes)))}  # the first of a repeated name
    per_image: dict[Any, list[Instance]] = {i: [] for i in entries}
    unknown: Counter = Counter()
    for n, ann in enumerate(doc.get("annotations", [])):
        aid = ann.get("id", f"#{n}") if isinstance(ann, dict) else f"#{n}"
        if not isinstance(ann, dict) or ann.get("image_id") not in entries:
            listing.fail(
                path, ValueError(f"{path}: annotation {aid} refers to no image of the JSON's 'images'")
            )
            continue
        file_name, h, w = entries[ann["image_id"]]
        if ann.get("category_id") not in categories:
            listing.fail(
                path,
                ValueError(
                    f"{path}: annotation {aid} (image '{file_name}') has category_id {ann.get('category_id')!r}, not among the JSON's categories"
                ),
            )
            continue
        name = categories[ann["category_id"]]
        reason = _segmentation_problem(ann.get("segmentation"), h, w)
        if reason is not None:
            listing.fail(path, ValueError(f"{path}: annotation {aid} (image '{file_name}') {reason}"))
            continue
        if name in index:
            label = index[name]
        elif unlisted == "error":
            unknown[name] += 1
            continue
        elif unlisted == "ignore":
            label = ignore_index
        else:  # background: as if the annotation were not there
            continue
        per_image[ann["image_id"]].append(Instance(ann["segmentation"], label, bool(ann.get("iscrowd", 0))))
    for name, count in unknown.items():
        listing.fail(
            path,
            ValueError(
                f"{path}: category '{name}' ({count} annotations) is not in data.classes; add it there, "
                "or set data.coco_unlisted=ignore (its pixels ignored) or background"
            ),
        )
    return per_image


def _list_images_and_masks(
    path: Path,
    image_dir: Path,
    entries: dict[Any, tuple[str, int, int]],
    per_image: dict[Any, list[Instance]],
    listing: CocoListing,
) -> None:
    """Add each image found on disk to the listing with its mask's cache path and shape; a missing
    image is a problem, and the error counts them."""
    names_in_dir = list_names(image_dir)  # one listdir instead of a stat per image
    missing = []
    for k, (image_id, (file_name, h, w)) in enumerate(entries.items()):
        image = _find_image(image_dir, file_name, names_in_dir)
        if image is None:
            missing.append(file_name)
            listing.problems.append(Problem(image_dir / file_name, f"no such image; listed in {path.name}"))
            continue
        mask = listing.cache_dir / f"{k:07d}.png"
        listing.ids.append(file_name)
        listing.images.append(image)
        listing.masks.append(mask)
        listing.shapes[mask] = (h, w, tuple(per_image[image_id]))
    if missing and listing.error is None:
        listing.error = FileNotFoundError(
            f"{len(missing)} of {len(entries)} images listed in {path} are not in {image_dir} "
            f"(e.g. {image_dir / missing[0]}); restore them or set data.<split>.images to their directory"
        )
    if not entries and listing.error is None:
        listing.fail(path, ValueError(f"{path}: lists no images"))


def _find_image(image_dir: Path, file_name: str, names_in_dir: set[str]) -> Optional[Path]:
    """Return images/<file_name>, else images/<its base name> (exporters that keep a folder), else None."""
    base = Path(file_name).name
    if base == file_name:
        return image_dir / base if base in names_in_dir else None
    if (image_dir / file_name).is_file():
        return image_dir / file_name
    return image_dir / base if base in names_in_dir else None


def decode(segmentation: Any, height: int, width: int) -> np.ndarray:
    """Return the HxW bool mask of one annotation's segmentation: polygons, compressed or uncompressed RLE."""
    from pycocotools import mask as mask_utils  # imported here: only COCO datasets need it

    if isinstance(segmentation, list):  # polygons: one RLE each, merged (their union)
        rle = mask_utils.merge(mask_utils.frPyObjects(segmentation, height, width))
    elif isinstance(segmentation["counts"], list):  # uncompressed RLE
        rle = mask_utils.frPyObjects(segmentation, height, width)
    else:  # compressed RLE, the counts string as the JSON holds it
        rle = segmentation
    return mask_utils.decode(rle).astype(bool)


def rasterise_planes(
    height: int, width: int, instances: Sequence[Instance], num_classes: int, ignore_index: int = VOID
) -> np.ndarray:
    """Return the C x H x W uint8 0/1 masks of an image's instances for a multilabel task: each on its
    class's plane (overlaps kept); crowds ignored on their class's plane, an ignored category's
    pixels (label ignore_index) on every plane."""
    planes = np.zeros((num_classes, height, width), dtype=np.uint8)
    void = np.zeros((num_classes, height, width), dtype=bool)
    for inst in instances:
        m = decode(inst.segmentation, height, width)
        if inst.label == ignore_index and not 0 <= inst.label < num_classes:
            void |= m[None]
        elif inst.crowd:
            void[inst.label] |= m
        else:
            planes[inst.label][m] = 1
    planes[void] = ignore_index
    return planes


def rasterise(
    height: int,
    width: int,
    instances: Sequence[Instance],
    overlap: str = "ignore",
    ignore_index: int = VOID,
    num_classes: int = 0,
) -> np.ndarray:
    """Return the HxW uint8 class-index mask of an image's instances by the module doc's rules
    (overlap 'multilabel': rasterise_planes' C x H x W planes, C = num_classes)."""
    if overlap == "multilabel":
        return rasterise_planes(height, width, instances, num_classes, ignore_index)
    label = np.zeros((height, width), dtype=np.uint8)
    if overlap == "last":
        for inst in instances:
            label[decode(inst.segmentation, height, width)] = ignore_index if inst.crowd else inst.label
        return label
    owner = np.full((height, width), -1, dtype=np.int16)  # the class covering a pixel; -2: two classes
    crowd = np.zeros((height, width), dtype=bool)
    for inst in instances:
        m = decode(inst.segmentation, height, width)
        if inst.crowd:
            crowd |= m
            continue
        owner[m & (owner >= 0) & (owner != inst.label)] = -2
        owner[m & (owner == -1)] = inst.label
    label[owner >= 0] = owner[owner >= 0]
    label[(owner == -2) | crowd] = ignore_index
    return label


@functools.lru_cache(maxsize=4)
def _cached_listing(
    annotations: str,
    images: str,
    classes: tuple[str, ...],
    unlisted: str,
    overlap: str,
    ignore_index: int,
    stamp: tuple,
) -> CocoListing:
    return list_coco(annotations, images, classes, unlisted, overlap, ignore_index)


def listing_for(ds_cfg: Any, data_cfg: Any, classes: Sequence[str]) -> CocoListing:
    """Return the CocoListing of cfg.data.train or .val (parsed once per process while the JSON is unchanged)."""
    path = Path(ds_cfg.annotations)
    try:
        st = path.stat()
        stamp = (st.st_size, st.st_mtime_ns)
    except OSError:
        stamp = ()
    return _cached_listing(
        str(path),
        str(ds_cfg.images),
        tuple(classes),
        str(data_cfg.coco_unlisted),
        str(data_cfg.coco_overlap),
        int(data_cfg.ignore_index),
        stamp,
    )


class CocoSegmentation(PairDataset):
    """A COCO-format segmentation JSON and its images directory; items as every PairDataset's (see the module doc).

    `classes` are the class names in index order (data.classes); masks are rasterised on first
    read and cached beside the JSON.
    """

    def __init__(
        self,
        annotations: str | os.PathLike,
        images: str | os.PathLike,
        classes: Sequence[str],
        transforms: Optional[Callable] = None,
        unlisted: str = "error",
        overlap: str = "ignore",
        ignore_index: int = VOID,
        listing: Optional[CocoListing] = None,
    ) -> None:
        if unlisted not in UNLISTED or overlap not in OVERLAP:
            raise ValueError(
                f"coco_unlisted={unlisted!r} / coco_overlap={overlap!r}: expected one of {UNLISTED} / {OVERLAP}"
            )
        if listing is None:
            listing = list_coco(annotations, images, classes, unlisted, overlap, ignore_index)
            if listing.error is not None:
                raise listing.error
        labels = 2 if overlap == "multilabel" else len(classes)  # a multilabel plane holds 0 and 1
        super().__init__(listing.ids, listing.images, listing.masks, transforms, labels, None, ignore_index)
        self.classes = list(classes)
        if overlap == "multilabel":
            self.multilabel = tuple(classes)
        self.annotations = Path(annotations)
        self.overlap = overlap
        self.cache_dir = listing.cache_dir
        self._shapes = listing.shapes
        self._warned = False

    def load_raw_mask(self, path: Path) -> np.ndarray:
        """Return the cached mask at `path` (class indices already: data.label_map does not apply to
        COCO), rasterising and caching it first if it is not there yet; load_mask and fcn.data.check
        read masks through this."""
        planes = self.overlap == "multilabel"
        cached = path.with_suffix(".npy") if planes else path
        if cached.is_file():
            return np.load(cached) if planes else read_png_mask(path)
        height, width, instances = self._shapes[path]
        mask = rasterise(height, width, instances, self.overlap, self.ignore_index, len(self.classes))
        try:
            from fcn.core.files import atomic_write  # torch: only once a mask is written

            if planes:

                def write(tmp: Path) -> None:
                    with open(tmp, "wb") as f:  # a file: np.save would add .npy to a path's name
                        np.save(f, mask)

                atomic_write(cached, write)
            else:
                atomic_write(path, lambda tmp: Image.fromarray(mask, mode="L").save(tmp, format="PNG"))
        except OSError as exc:
            if not self._warned:
                self._warned = True
                warnings.warn(
                    f"COCO masks are not cached ({exc}); they are rasterised on every read", stacklevel=2
                )
        return mask

    def __getitem__(self, index: int):
        image = read_channels(self.images[index], self.channels)
        mask = self.load_mask(self.masks[index])
        width, height = image_size(image)
        if mask.shape[-2:] != (height, width):
            raise ValueError(
                f"{self.annotations}: image '{self.ids[index]}' is {width}x{height} but the JSON "
                f"says {mask.shape[-1]}x{mask.shape[-2]} (width x height); an EXIF-rotated photo, or the wrong images directory?"
            )
        check_pair(image, mask, self.num_classes, self.annotations, self.ignore_index)
        if self.transforms is not None:
            return self.transforms(image, mask)
        return image, mask
