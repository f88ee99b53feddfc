"""COCO panoptic segmentation, as cocodataset.org's "Panoptic Segmentation" data format and
datumaro 1.13's coco_panoptic exporter (the one CVAT uses) write it:

<dir>/annotations/panoptic_<subset>.json   images[] {id, file_name}, categories[] {id, name, isthing,
                                           color}, annotations[] {image_id, file_name (a PNG),
                                           segments_info[] {id, category_id, iscrowd, ...}}
<dir>/annotations/panoptic_<subset>/*.png  RGB: segment id = R + 256 G + 256^2 B (panopticapi's rgb2id)
<dir>/images/<subset>/*                    the images (data.<split>.images)

The PNG folder is the JSON's path less .json, as panopticapi's converters default to
(--segmentations_folder), unless data.<split>.masks names another.

The semantic mask, as detectron2's prepare_panoptic_fpn.py (_process_panoptic_to_semantic) and
panopticapi's converters/panoptic2semantic_segmentation.py make it: every pixel of a segment gets
its category's class: the categories in id order are classes 0..N-1, or data.classes names them
(a category matched by name; one it does not name is an error). Pixels of id 0 (unlabelled; black)
get data.ignore_index, as detectron2's 255 fill. iscrowd segments get data.ignore_index too: both
converters keep them in their class, but panopticapi's evaluation scores no prediction inside a
crowd region, and a crowd region is many instances in one outline, often with background inside.
A pixel whose id no segment lists is ignored as well (the format says every id is listed).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np
from PIL import Image

from fcn.config import VOID
from fcn.data.dataset import PairDataset
from fcn.data.listing import Listing
from fcn.data.masks import LabelMap
from fcn.data.splits import require_dir

_SAID: set[str] = set()  # the JSONs whose class mapping this process has printed (once each)


@dataclass
class PanopticListing(Listing):
    """A Listing of a COCO panoptic JSON, plus each PNG's segments: (segment id, class index) pairs."""

    segments: dict[Path, tuple[tuple[int, int], ...]] = field(default_factory=dict)
    mapping: str = ""  # the one line naming the classes and where they came from


def png_dir(annotations: str | Path, masks: str = "") -> Path:
    """Return the folder of the JSON's PNGs: data.<split>.masks, else the JSON's path less .json."""
    return Path(masks) if masks else Path(annotations).with_suffix("")


def list_panoptic(
    annotations: str | Path, images: str | Path, masks: str, classes: Sequence[str], ignore_index: int = VOID
) -> PanopticListing:
    """Return the Listing of a COCO panoptic JSON: each annotation's image and PNG, its segments' class
    indices (iscrowd: ignore_index); a file it names but the folders lack, an unreadable JSON, a
    category that data.classes does not name are problems (and the error), each naming the file."""
    path, image_dir = Path(annotations), Path(images)
    listing = PanopticListing()
    try:
        doc = json.loads(path.read_bytes())
        categories = sorted(doc["categories"], key=lambda c: int(c["id"]))
        files = {e["id"]: str(e["file_name"]) for e in doc["images"]}
        entries = list(doc["annotations"])
    except OSError as exc:
        raise FileNotFoundError(f"{path}: {exc.strerror or exc}; set data.<split>.annotations") from None
    except (ValueError, KeyError, TypeError) as exc:
        listing.fail(path, ValueError(f"{path}: not a COCO panoptic JSON ({type(exc).__name__}: {exc})"))
        return listing
    seg_dir = png_dir(path, masks)
    require_dir(
        image_dir, "COCO panoptic images", "set data.<split>.images to the folder of the JSON's images"
    )
    require_dir(seg_dir, "COCO panoptic PNGs", "set data.<split>.masks to the folder of the JSON's PNGs")
    names = [str(c["name"]) for c in categories]
    wanted = list(classes) if classes else names
    index = {}
    for c in categories:
        if str(c["name"]) not in wanted:
            listing.fail(
                path,
                ValueError(f"{path}: category '{c['name']}' is not in data.classes ({', '.join(wanted)})"),
            )
            return listing
        index[int(c["id"])] = wanted.index(str(c["name"]))
    source = "data.classes" if classes else f"{path.name} categories"
    listing.mapping = f"coco_panoptic: {len(wanted)} classes from {source}: " + ", ".join(
        f"{n}={k}" for k, n in enumerate(wanted)
    )
    for entry in entries:
        image_name = files.get(entry.get("image_id"))
        png = seg_dir / str(entry.get("file_name", ""))
        if image_name is None:
            listing.fail(
                path,
                ValueError(
                    f"{path}: annotation {png.name} names image_id {entry.get('image_id')!r}, which images[] does not list"
                ),
            )
            continue
        image = image_dir / image_name
        missing = [(p, what) for p, what in ((image, "image"), (png, "panoptic PNG")) if not p.is_file()]
        for p, what in missing:
            listing.fail(p, FileNotFoundError(f"{p}: no such {what}; {path.name} names it"))
        if missing:
            continue
        pairs = []
        for seg in entry.get("segments_info", []):
            cat = int(seg["category_id"])
            if cat not in index:
                listing.fail(
                    png,
                    ValueError(
                        f"{png}: segment {seg['id']} has category_id {cat}, not in {path.name} categories"
                    ),
                )
                break
            pairs.append((int(seg["id"]), ignore_index if seg.get("iscrowd") else index[cat]))
        else:
            listing.ids.append(Path(image_name).stem)
            listing.images.append(image)
            listing.masks.append(png)
            listing.segments[png] = tuple(pairs)
    if listing.error is None and not listing.ids:
        listing.error = FileNotFoundError(f"{path}: no annotations[]; export the subset with its masks")
    return listing


def semantic_mask(png: Path, segments: Sequence[tuple[int, int]], ignore_index: int = VOID) -> np.ndarray:
    """Return the uint8 class map of a panoptic PNG: segment id R + 256 G + 256^2 B -> its class;
    id 0 and ids no segment lists -> ignore_index."""
    with Image.open(png) as im:
        rgb = np.asarray(im.convert("RGB"), dtype=np.uint32)
    ids = rgb[..., 0] + 256 * rgb[..., 1] + 256 * 256 * rgb[..., 2]
    out = np.full(ids.shape, ignore_index, dtype=np.uint8)
    for segment_id, label in segments:
        out[ids == segment_id] = label
    return out


class PanopticSegmentation(PairDataset):
    """A COCO panoptic export read as semantic masks (see the module doc)."""

    def __init__(
        self,
        listing: PanopticListing,
        transforms: Optional[Callable] = None,
        num_classes: Optional[int] = None,
        ignore_index: int = VOID,
        labels: Optional[LabelMap] = None,
        strict: bool = True,
    ) -> None:
        if strict and listing.error is not None:
            raise listing.error
        PairDataset.__init__(
            self,
            listing.ids,
            listing.images,
            listing.masks,
            transforms,
            num_classes,
            None,
            ignore_index,
            labels,
        )
        self._segments = listing.segments

    def load_raw_mask(self, path: Path) -> np.ndarray:
        """Return the class indices of the panoptic PNG at `path` (its segments' classes)."""
        return semantic_mask(path, self._segments.get(Path(path), ()), self.ignore_index)


def listing_for(ds_cfg: Any, classes: Sequence[str], ignore_index: int) -> PanopticListing:
    """Return the PanopticListing of cfg.data.train or .val, printing its class mapping once per JSON."""
    listing = list_panoptic(ds_cfg.annotations, ds_cfg.images, str(ds_cfg.masks), classes, ignore_index)
    if listing.mapping and str(ds_cfg.annotations) not in _SAID:
        _SAID.add(str(ds_cfg.annotations))
        print(listing.mapping)
    return listing


__all__ = [
    "PanopticListing",
    "PanopticSegmentation",
    "list_panoptic",
    "listing_for",
    "png_dir",
    "semantic_mask",
]
