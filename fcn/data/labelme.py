"""labelme's JSON files (one per image, as labelme 5.x-6.x saves them) as class-index masks.

    data.train: {name: labelme, root: path/to/folder}

Read as labelme 6.3's LabelFile writes a file (its README's "JSON format" and labelme/_label_file.py):
`shapes` (each `label`, `points` [[x, y], ...] in pixels, `shape_type`), `imagePath` (relative to the
JSON), `imageData` (the image file base64-encoded, or null) and `imageHeight` / `imageWidth`.

- Every *.json in root (sorted by name) is one item. Its image is `imageData` when the file holds
  one (what labelme itself shows: LabelFile.load reads imageData first), written once to
  root/.fcn_labelme_cache/ so that it reads as a file; else `imagePath` beside the JSON.
- Shapes are drawn in file order, the later over the earlier, as labelme.utils.shapes_to_label
  does, with labelme.utils.shape_to_mask's pixels: polygon (and oriented_rectangle), rectangle (two
  corners), circle (centre, a point on it), mask (its PNG at its box). line, linestrip and point
  draw nothing: they have no area.
- Labels as labelme2voc.py reads them: `_background_` (or `background`) is 0, `__ignore__` is
  data.ignore_index, every other label is its class by name; a label not among the classes is an
  error naming the file.
- Classes: data.classes; else root/labels.txt (labelme2voc's --labels file: `__ignore__`, then
  `_background_`, then one name a line); else `background` and the labels seen, sorted.

A vertex outside its image, a shape labelme cannot draw, a JSON that is not labelme's, or a missing
image is a problem naming the file; list_labelme collects them all.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import json
import tempfile
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
from PIL import Image

from fcn.config import VOID
from fcn.config.exports import LABELME_BACKGROUND, LABELME_IGNORE
from fcn.data.shapes import Layer, ShapeListing, files_key, outside
from fcn.data.splits import require_dir

BACKGROUND = LABELME_BACKGROUND
IGNORE = LABELME_IGNORE
NO_AREA = ("line", "linestrip", "point")
"""Shape types with no area: drawn by shape_to_mask with a pen width, not a label region; skipped."""


class MissingImage(FileNotFoundError):
    """An image a JSON names that is not there: the problem is the image's, not the JSON's."""

    def __init__(self, image: Path, reason: str) -> None:
        super().__init__(f"{image}: {reason}")
        self.image = image


def json_files(root: Path) -> list[Path]:
    """Return root's *.json files sorted by name (FileNotFoundError naming root when it is no directory)."""
    require_dir(root, "labelme folder", "set data.<split>.root to the folder of labelme's JSON files")
    return sorted(p for p in root.iterdir() if p.suffix.lower() == ".json" and p.is_file())


def read_json(path: Path) -> dict:
    """Return one labelme file's document; ValueError naming the file when it is not labelme's JSON."""
    try:
        doc = json.loads(path.read_bytes())
    except json.JSONDecodeError as exc:
        raise ValueError(
            f"{path}: not valid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}"
        ) from None
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("shapes"), list):
        raise ValueError(f"{path}: not a labelme file: expected an object with a 'shapes' list")
    return doc


def _image(path: Path, doc: dict, cache: Path) -> Path:
    """Return the image file of a labelme JSON: its imageData written to the cache, else imagePath beside it."""
    data = doc.get("imageData")
    if data:
        try:
            raw = base64.b64decode(data, validate=True)
        except (binascii.Error, ValueError, TypeError):
            raise ValueError(
                f"{path}: imageData is not base64 (labelme writes the image file's bytes)"
            ) from None
        try:
            with Image.open(io.BytesIO(raw)) as im:
                ext = "png" if im.format == "PNG" else "jpg" if im.format == "JPEG" else "img"
        except OSError:
            raise ValueError(f"{path}: imageData is not an image") from None
        name = f"{path.stem}-{hashlib.sha256(raw).hexdigest()[:12]}.{ext}"
        for folder in (cache, Path(tempfile.gettempdir()) / "fcn_labelme_cache"):
            target = folder / name
            try:
                if not target.is_file():
                    folder.mkdir(parents=True, exist_ok=True)
                    tmp = target.with_suffix(".tmp")
                    tmp.write_bytes(raw)
                    tmp.replace(target)
                return target
            except OSError:
                continue  # a folder we cannot write: the next
        raise ValueError(f"{path}: cannot write its imageData to {cache} or the temp directory")
    image_path = doc.get("imagePath")
    if not isinstance(image_path, str) or not image_path:
        raise ValueError(f"{path}: has neither imageData nor imagePath")
    image = path.parent / image_path.replace("\\", "/")  # labelme on Windows writes backslashes
    if not image.is_file():
        beside = path.parent / Path(image.name)
        if not beside.is_file():
            raise MissingImage(
                image, f"no such image; named by {path.name}'s imagePath (and imageData is null)"
            )
        image = beside
    return image


def _size(path: Path, doc: dict, image: Path) -> tuple[int, int]:
    """Return (height, width): imageHeight/imageWidth, else the image's own size."""
    h, w = doc.get("imageHeight"), doc.get("imageWidth")
    if isinstance(h, int) and isinstance(w, int) and h > 0 and w > 0:
        return h, w
    with Image.open(image) as im:
        return im.height, im.width


def shape_layer(
    path: Path, n: int, shape: Any, index: dict[str, int], height: int, width: int, ignore_index: int
) -> Optional[Layer]:
    """Return the Layer of a file's shape number n (None: a shape with no area); ValueError naming the
    file for a shape labelme cannot draw, a vertex outside the image or an unknown label."""
    where = f"{path}: shape {n}"
    if not isinstance(shape, dict) or not isinstance(shape.get("points"), list):
        raise ValueError(f"{where} needs 'label' and 'points'")
    kind = shape.get("shape_type") or "polygon"
    label_name = str(shape.get("label"))
    if kind in NO_AREA:
        return None
    try:
        points = tuple((float(x), float(y)) for x, y in shape["points"])
    except (TypeError, ValueError):
        raise ValueError(f"{where} ('{label_name}'): points must be [x, y] pairs") from None
    need = {"polygon": 3, "oriented_rectangle": 4, "rectangle": 2, "circle": 2, "mask": 2}
    if kind not in need:
        raise ValueError(f"{where} ('{label_name}'): shape_type '{kind}' is not one labelme draws")
    if len(points) < need[kind] or (kind != "polygon" and len(points) != need[kind]):
        raise ValueError(f"{where} ('{label_name}'): a {kind} needs {need[kind]} points, got {len(points)}")
    off = outside(points[:1] if kind == "circle" else points, height, width)  # a circle: its centre
    if off is not None:
        raise ValueError(
            f"{where} ('{label_name}'): vertex ({off[0]:g}, {off[1]:g}) outside its {width}x{height} image"
        )
    if label_name == IGNORE:
        label = ignore_index
    elif label_name in index:
        label = index[label_name]
    elif label_name in BACKGROUND:
        label = 0
    else:
        raise ValueError(
            f"{where}: label '{label_name}' is not among the classes ({', '.join(sorted(index, key=index.get))}); add it to "
            "data.classes or labels.txt"
        )
    if kind == "mask":  # labelme's AI mask: a base64 PNG of the box between its two points
        try:
            with Image.open(io.BytesIO(base64.b64decode(shape.get("mask") or ""))) as im:
                bitmap = np.asarray(im.convert("L")) > 0
        except (OSError, ValueError, binascii.Error):
            raise ValueError(f"{where} ('{label_name}'): its mask is not a base64 PNG") from None
        return Layer("bitmap", label, (tuple(int(v) for v in points[0]),), bitmap=bitmap)
    return Layer(
        "rectangle" if kind == "rectangle" else "circle" if kind == "circle" else "polygon", label, points
    )


def list_labelme(root: str | Path, classes: Sequence[str], ignore_index: int = VOID) -> ShapeListing:
    """Return the ShapeListing of a labelme folder: each JSON whose image and shapes read, every bad file a problem."""
    root = Path(root)
    files = json_files(root)
    listing = ShapeListing(annotations=root)
    listing.key = files_key(files, ["labelme", list(classes), ignore_index])
    listing.cache_dir = root
    index = {name: i for i, name in reversed(list(enumerate(classes)))}
    cache = root / ".fcn_labelme_cache"
    for path in files:
        try:
            doc = read_json(path)
            image = _image(path, doc, cache)
            height, width = _size(path, doc, image)
            layers = [
                shape_layer(path, n, s, index, height, width, ignore_index)
                for n, s in enumerate(doc["shapes"])
            ]
        except (OSError, ValueError) as exc:
            listing.fail(exc.image if isinstance(exc, MissingImage) else path, exc)
            continue
        listing.ids.append(path.stem)
        listing.images.append(image)
        listing.masks.append(path)
        listing.layers[path] = (height, width, tuple(x for x in layers if x is not None))
    if not files and listing.error is None:
        listing.fail(root, ValueError(f"{root}: holds no .json files (labelme saves one beside each image)"))
    return listing
