"""Ultralytics YOLO segmentation datasets (data.yaml, images/, labels/) as class-index masks.

    data.train: {name: yolo, root: path/to/export}                 # split: train (the default)
    data.val: {name: yolo, root: path/to/export, split: val}

Followed: Ultralytics' documentation "Instance Segmentation Datasets Overview"
(docs.ultralytics.com/datasets/segment/, Ultralytics 8.3) and the dataset YAML it shows
(ultralytics/cfg/datasets/coco8-seg.yaml):

    <root>/data.yaml              path (the dataset root), train / val / test (image folders, a .txt
                                  list of images, or a list of either, relative to path), names (a
                                  list, or {id: name}), nc
    <root>/images/train/abc.jpg   the images (any folder under the split's, searched recursively)
    <root>/labels/train/abc.txt   one line per object: <class-index> <x1> <y1> <x2> <y2> ... <xn> <yn>,
                                  the polygon's vertices normalised by the image's width and height

- An image's label file is its path with the last 'images' folder replaced by 'labels' and the
  suffix by .txt (Ultralytics' img2label_paths). An image with no label file, or an empty one, is
  all background, as Ultralytics reads it (a background image).
- `path` is the dataset root as Ultralytics resolves it (relative: to root here; absent, or not on
  this machine: root), and an entry 'images/..' or '../x' that is not there is tried without its
  '../' (Ultralytics' fallback for Roboflow's data.yaml).
- The semantic mask: background 0, class k -> label k + 1 (data.yaml's names after 'background':
  FormatKeys.export_classes, fcn/config/exports.py); polygons are drawn in file order, a later one
  over an earlier one where they overlap, with the pixels of fcn/data/shapes.py (PIL ImageDraw's
  outline and fill, as the labelme and Label Studio readers draw theirs).
- A coordinate outside [0, 1], a class id that names no class of data.yaml, a line with fewer
  than 3 points or an odd number of coordinates (a detection box 'class cx cy w h' is no polygon)
  is a problem naming the file and line; list_yolo collects them all.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from PIL import Image

from fcn.config import VOID
from fcn.config.exports import YOLO_SPLITS, read_yolo_yaml, yolo_names
from fcn.data.shapes import Layer, ShapeListing, files_key
from fcn.data.splits import require_dir

IMAGE_SUFFIXES = (".bmp", ".jpeg", ".jpg", ".mpo", ".png", ".tif", ".tiff", ".webp")
"""The image suffixes Ultralytics lists (its IMG_FORMATS) that PIL reads."""
MIN_POINTS = 3  # "Each segmentation label must have a minimum of 3 (x, y) points" (the docs' tip)
HINT = "set data.<split>.root to the folder holding the export's data.yaml"


def dataset_base(root: Path, doc: dict) -> Path:
    """Return the folder data.yaml's entries are relative to: its `path` (relative: to root) where
    that folder exists here, else root (an export moved from the machine that wrote it)."""
    path = doc.get("path")
    if isinstance(path, str) and path:
        base = Path(path) if Path(path).is_absolute() else root / path
        if base.is_dir():
            return base
    return root


def split_sources(root: str | Path, split: str) -> list[Path]:
    """Return the image folders (or .txt lists) data.yaml names for `split` (train, val/valid, test);
    ValueError naming data.yaml when it names none, FileNotFoundError naming a missing one."""
    root = Path(root)
    require_dir(root, "YOLO export", HINT)
    path, doc = read_yolo_yaml(root)
    key = YOLO_SPLITS.get(str(split))
    if key is None:
        raise ValueError(f"YOLO split '{split}' is not one of {', '.join(YOLO_SPLITS)}")
    entries = doc.get(key)
    if not entries:
        raise ValueError(f"{path}: names no '{key}' images for data.<split>.split={split}")
    base = dataset_base(root, doc)
    found = []
    for entry in entries if isinstance(entries, list) else [entries]:
        source = base / str(entry)
        if not source.exists() and str(entry).startswith("../"):
            source = base / str(entry)[3:]  # Ultralytics' check_det_dataset does the same
        if not source.exists():
            raise FileNotFoundError(f"{path}: {key}: {entry} is not there (looked in {base})")
        found.append(source)
    return found


def list_images(sources: Sequence[Path]) -> list[Path]:
    """Return the images of the split's sources: every image under a folder (recursively, sorted),
    and the lines of a .txt list (relative to the list's folder, as Ultralytics reads them)."""
    images: list[Path] = []
    for source in sources:
        if source.is_dir():
            images += sorted(p for p in source.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
            continue
        for line in source.read_text(encoding="utf-8").splitlines():
            line = line.strip()
            if line:
                image = Path(line)
                images.append(image if image.is_absolute() else source.parent / line.removeprefix("./"))
    return images


def label_path(image: Path) -> Path:
    """Return an image's label file: the last 'images' folder of its path replaced by 'labels', the
    suffix by .txt (Ultralytics' img2label_paths; without an 'images' folder: beside the image)."""
    parts = list(image.parts)
    for i in range(len(parts) - 2, -1, -1):
        if parts[i] == "images":
            parts[i] = "labels"
            break
    return Path(*parts).with_suffix(".txt")


def read_labels(path: Path, height: int, width: int, classes: int) -> list[Layer]:
    """Return the polygons of a label file in file order, class k as label k + 1, in pixels of a
    width x height image; ValueError naming the file and line for a line that is no polygon of
    normalised coordinates or names a class id outside 0..classes-1."""
    layers = []
    for n, line in enumerate(path.read_text(encoding="utf-8-sig").splitlines(), 1):
        values = line.split()
        if not values:
            continue
        where = f"{path}: line {n}"
        try:
            numbers = [float(v) for v in values]
        except ValueError:
            raise ValueError(f"{where}: expected '<class-index> <x1> <y1> ... <xn> <yn>' numbers") from None
        cls, coords = numbers[0], numbers[1:]
        if cls != int(cls) or not 0 <= cls < classes:
            raise ValueError(
                f"{where}: class id {values[0]} is not one of data.yaml's names (0..{classes - 1})"
            )
        if len(coords) % 2 or len(coords) < 2 * MIN_POINTS:
            raise ValueError(
                f"{where}: a polygon needs {MIN_POINTS} or more x y pairs, got {len(coords)} numbers "
                "(a detection box 'class cx cy w h' is no segmentation label)"
            )
        bad = next((v for v in coords if not 0.0 <= v <= 1.0), None)
        if bad is not None:
            raise ValueError(
                f"{where}: coordinate {bad:g} is outside [0, 1] (YOLO normalises x by the width, y by the height)"
            )
        points = tuple((x * width, y * height) for x, y in zip(coords[0::2], coords[1::2]))
        layers.append(Layer("polygon", int(cls) + 1, points))
    return layers


def list_yolo(root: str | Path, split: str, ignore_index: int = VOID) -> ShapeListing:
    """Return the ShapeListing of a YOLO split: each image with the polygons of its label file (none:
    all background); each bad label file or unreadable image a problem."""
    root = Path(root)
    sources = split_sources(root, split)
    yaml_path, doc = read_yolo_yaml(root)
    classes = len(yolo_names(yaml_path, doc))
    images = list_images(sources)
    labels = [label_path(image) for image in images]
    listing = ShapeListing(annotations=yaml_path)
    listing.key = files_key(
        [yaml_path, *(p for p in labels if p.is_file())], ["yolo", str(split), len(images), ignore_index]
    )
    listing.cache_dir = root
    for image, label in zip(images, labels):
        try:
            with Image.open(image) as im:
                width, height = im.size
        except OSError as exc:
            listing.fail(image, OSError(f"{image}: cannot be read as an image ({exc.__class__.__name__})"))
            continue
        try:
            layers = read_labels(label, height, width, classes) if label.is_file() else []
        except (OSError, ValueError) as exc:
            listing.fail(label, exc)
            continue
        listing.ids.append(image.stem)
        listing.images.append(image)
        listing.masks.append(label)
        listing.layers[label] = (height, width, tuple(layers))
    if not images and listing.error is None:
        listing.fail(sources[0], ValueError(f"{sources[0]}: holds no images ({', '.join(IMAGE_SUFFIXES)})"))
    return listing
