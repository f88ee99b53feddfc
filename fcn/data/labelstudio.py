"""Label Studio's JSON export (Export > JSON) of an image segmentation project as class-index masks.

    data.train: {name: labelstudio, annotations: export.json, images: path/to/images}
    # its "Brush labels to PNG" export read instead of the JSON's brush RLE:
    data.train: {name: labelstudio, annotations: export.json, images: ..., masks: path/to/pngs}

Read as Label Studio 1.x writes the JSON export (labelstud.io "Export annotations": a list of tasks,
each with `id`, `data` and `annotations`) and its brush RLE as label_studio_converter 0.0.59's
brush.py documents it (decode_rle, encode_rle: the bit layout below).

- A task is one item. Its image is `data.image` (else the task's only string in `data`): a URL or
  path whose base name names the file in data.<split>.images; "/data/local-files/?d=dir/a.jpg" names
  a.jpg; an upload's name "<8 hex digits>-a.jpg" (the prefix Label Studio gives uploaded files) is
  looked for as itself, then as a.jpg.
- Its annotation: the most recent (`updated_at`, else `created_at`; the later in the list on a tie)
  whose `was_cancelled` is not true. A task without one is unlabelled and left out (a line says
  how many).
- Its `result` items are drawn in the order the JSON lists them, the later over the earlier (Label
  Studio's regions have no z-index in the export: the list is the order they were drawn in), on a
  background of 0: `brushlabels` (value.format "rle": value.rle is an RGBA image of
  original_height x original_width; a pixel is on where its alpha is over 128) and
  `polygonlabels` (value.points in percent of original_width / original_height). Other result
  types (rectangles, choices) draw nothing.
- Each region's one label (value.brushlabels / value.polygonlabels) maps to data.classes by name;
  classes, when data.classes is empty: `background` and the labels the chosen annotations use, sorted.
- With data.<split>.masks, a brush result is read from the PNG the export wrote for it:
  task-<task id>-annotation-<annotation id>-by-<user>-<from_name>-<labels>-<n>.png, n counting the
  results of that from_name and labels in the annotation's order (as label_studio_converter names
  them); the JSON still names each task's image, annotation and result order, which the PNG names
  do not hold.

Label Studio's brush RLE (brush.py): the bytes are a big-endian bit stream; 32 bits: the number of
values N (height x width x 4); 5 bits: word size - 1; 4 x 4 bits: the four run-length field sizes
- 1. Then until N values are out: 1 bit "run" flag, 2 bits choosing a field size, that many bits
holding the count - 1; a run is one word repeated count times, else count words follow.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path
from typing import Optional, Sequence
from urllib.parse import parse_qs, unquote, urlparse

import numpy as np
from PIL import Image

from fcn.config import VOID
from fcn.config.exports import (
    LABELSTUDIO_KINDS,
    chosen_annotation,
)
from fcn.config.exports import read_labelstudio_export as read_export
from fcn.config.exports import (
    region_label as _region_label,
)
from fcn.data.listing import Problem
from fcn.data.shapes import PNG_THRESHOLD, Layer, ShapeListing, files_key, outside
from fcn.data.splits import list_names

UPLOAD_PREFIX = re.compile(r"^[0-9a-f]{8}-(.+)$")
"""Label Studio's uploads are stored as '<8 hex digits>-<original name>' (its upload folder)."""
PNG_NAME = re.compile(r"^task-(\d+)-annotation-(\d+)-by-([A-Za-z0-9@.]*)-(.+)\.png$")
"""A brush-to-PNG file: the user part is the annotator's e-mail or id with only letters, digits,
'@' and '.' kept (label_studio_converter's filename rule), so the first '-' after it ends it."""
KINDS = LABELSTUDIO_KINDS


def decode_rle(rle: Sequence[int], where: str = "RLE") -> np.ndarray:
    """Return the uint8 values a Label Studio brush RLE holds (height x width x 4, RGBA, flat);
    ValueError naming `where` when the stream is short or its runs overrun its length."""
    try:
        data = np.asarray(rle, dtype=np.int64)
    except (TypeError, ValueError):
        raise ValueError(f"{where}: rle must be a list of byte values") from None
    if data.ndim != 1 or data.size < 7 or data.min() < 0 or data.max() > 255:
        raise ValueError(f"{where}: rle must be a list of byte values 0..255 with a 7-byte header")
    bits = (
        np.unpackbits(data.astype(np.uint8)).tobytes().translate(bytes.maketrans(b"\x00\x01", b"01")).decode()
    )
    end = len(bits)
    pos = 0

    def read(n: int) -> int:
        nonlocal pos
        if pos + n > end:
            raise ValueError(f"{where}: rle ends before its {num} values are out")
        pos += n
        return int(bits[pos - n : pos], 2)

    num = 0
    num = read(32)
    word = read(5) + 1
    sizes = [read(4) + 1 for _ in range(4)]
    out = np.zeros(num, dtype=np.uint8)
    i = 0
    while i < num:
        run = read(1)
        j = i + 1 + read(sizes[read(2)])
        if j > num:
            raise ValueError(f"{where}: rle runs past its {num} values")
        if run:
            out[i:j] = read(word)
        else:
            for k in range(i, j):
                out[k] = read(word)
        i = j
    return out


def brush_bitmap(rle: Sequence[int], height: int, width: int, where: str) -> np.ndarray:
    """Return the HxW bool pixels of a brush RLE: where its alpha channel is over PNG_THRESHOLD."""
    values = decode_rle(rle, where)
    if values.size != height * width * 4:
        raise ValueError(
            f"{where}: rle holds {values.size} values but original_width x original_height x 4 is "
            f"{width}x{height}x4 = {width * height * 4}"
        )
    return values.reshape(height, width, 4)[:, :, 3] > PNG_THRESHOLD


def image_name(url: str) -> str:
    """Return the file name a task's image URL or path names (a local-files URL's ?d=, else its path)."""
    parsed = urlparse(url)
    d = parse_qs(parsed.query).get("d")
    path = d[0] if d else parsed.path
    return unquote(path).replace("\\", "/").rsplit("/", 1)[-1]


def find_image(name: str, names_in_dir: set[str]) -> Optional[str]:
    """Return the file of images/ a task's image name stands for: itself, else without Label Studio's
    upload prefix '<8 hex>-', else None."""
    if name in names_in_dir:
        return name
    m = UPLOAD_PREFIX.match(name)
    return m.group(1) if m and m.group(1) in names_in_dir else None


def _png_files(masks: Path) -> dict[tuple[str, str, str], Path]:
    """Return (task id, annotation id, '<from_name>-<labels>-<n>') -> file of a brush-to-PNG folder."""
    found = {}
    for name in list_names(masks):
        m = PNG_NAME.match(name)
        if m:
            found[(m.group(1), m.group(2), m.group(4))] = masks / name
    return found


def task_layers(
    task: dict,
    ann: dict,
    where: str,
    index: dict[str, int],
    pngs: Optional[dict[tuple[str, str, str], Path]],
) -> tuple[int, int, tuple[Layer, ...]]:
    """Return (height, width, layers) of a task's chosen annotation; ValueError naming `where` for a
    region outside its image, an unknown label, sizes that disagree or a brush PNG that is missing."""
    size = None
    layers = []
    counters: Counter = Counter()
    results = ann.get("result") or []
    for n, r in enumerate(results):
        at = f"{where} result {n}"
        label_name = _region_label(r, at) if isinstance(r, dict) else None
        if label_name is None:
            continue
        h, w = r.get("original_height"), r.get("original_width")
        if not (isinstance(h, int) and isinstance(w, int) and h > 0 and w > 0):
            raise ValueError(f"{at}: needs original_width and original_height (pixels)")
        if size is not None and size != (h, w):
            raise ValueError(
                f"{at}: original size {w}x{h} differs from the task's other regions' {size[1]}x{size[0]}"
            )
        size = (h, w)
        if label_name not in index:
            raise ValueError(
                f"{at}: label '{label_name}' is not among the classes ({', '.join(sorted(index, key=index.get))}); add it to data.classes"
            )
        label, value = index[label_name], r["value"]
        if str(r["type"]).lower() == "polygonlabels":
            try:
                points = tuple((float(x) * w / 100.0, float(y) * h / 100.0) for x, y in value.get("points"))
            except (TypeError, ValueError):
                raise ValueError(f"{at}: value.points must be [x, y] pairs in percent") from None
            if len(points) < 3:
                raise ValueError(f"{at}: a polygon needs 3 points, got {len(points)}")
            off = outside(points, h, w)
            if off is not None:
                x, y = off[0] * 100.0 / w, off[1] * 100.0 / h
                raise ValueError(f"{at}: polygon point ({x:g}%, {y:g}%) outside its {w}x{h} image")
            layers.append(Layer("polygon", label, points))
            continue
        name = f"{r.get('from_name', '')}-{label_name}"
        count = counters[name]
        counters[name] += 1
        if pngs is not None:
            key = (str(task.get("id")), str(ann.get("id")), f"{name}-{count}")
            if key not in pngs:
                raise FileNotFoundError(
                    f"{at}: no task-{key[0]}-annotation-{key[1]}-by-*-{key[2]}.png in data.<split>.masks "
                    "(export 'Brush labels to PNG' again, or leave masks unset to read the JSON's RLE)"
                )
            layers.append(Layer("png", label, png=pngs[key]))
            continue
        if str(value.get("format", "rle")) != "rle" or not isinstance(value.get("rle"), list):
            raise ValueError(f"{at}: a brush region needs value.format 'rle' and value.rle")
        layers.append(Layer("bitmap", label, bitmap=brush_bitmap(value["rle"], h, w, at)))
    if size is None:
        return 0, 0, ()
    return size[0], size[1], tuple(layers)


def list_labelstudio(
    annotations: str | Path,
    images: str | Path,
    classes: Sequence[str],
    ignore_index: int = VOID,
    masks: str | Path = "",
) -> ShapeListing:
    """Return the ShapeListing of a Label Studio JSON export: each labelled task whose image and regions
    read, every bad task a problem (the first the error)."""
    path, image_dir = Path(annotations), Path(images)
    listing = ShapeListing(annotations=path, cache_dir=path.parent)
    try:
        tasks = read_export(path)
    except (OSError, ValueError) as exc:
        listing.fail(path, exc)
        return listing
    if not image_dir.is_dir():
        listing.fail(
            image_dir, FileNotFoundError(f"{image_dir}: images directory not found (data.<split>.images)")
        )
        return listing
    pngs = None
    sources = [path]
    if masks:
        if not Path(masks).is_dir():
            listing.fail(
                Path(masks), FileNotFoundError(f"{masks}: brush PNG folder not found (data.<split>.masks)")
            )
            return listing
        pngs = _png_files(Path(masks))
        sources += sorted(pngs.values())
    listing.key = files_key(sources, ["labelstudio", list(classes), ignore_index, str(masks)])
    index = {name: i for i, name in reversed(list(enumerate(classes)))}
    names_in_dir = list_names(image_dir)
    unlabelled, missing = 0, []
    for n, task in enumerate(tasks):
        tid = task.get("id", f"#{n}")
        where = f"{path}: task {tid}"
        ann = chosen_annotation(task)
        if ann is None:
            unlabelled += 1
            continue
        data = task["data"]
        strings = [v for v in data.values() if isinstance(v, str)]
        url = (
            data.get("image")
            if isinstance(data.get("image"), str)
            else strings[0]
            if len(strings) == 1
            else None
        )
        if url is None:
            listing.fail(
                path, ValueError(f"{where}: data has no 'image' (and not one string) naming its image")
            )
            continue
        file = find_image(image_name(url), names_in_dir)
        if file is None:
            missing.append(image_dir / image_name(url))
            listing.problems.append(
                Problem(image_dir / image_name(url), f"no such image; task {tid} of {path.name}")
            )
            continue
        try:
            height, width, layers = task_layers(task, ann, where, index, pngs)
        except (OSError, ValueError) as exc:
            listing.fail(path, exc)
            continue
        if height == 0:  # no region: all background, at the image's own size
            with Image.open(image_dir / file) as im:
                height, width = im.height, im.width
        mask = path.with_name(f"{path.name}#task-{tid}")  # no file: its layers are drawn on read
        listing.ids.append(Path(file).stem)
        listing.images.append(image_dir / file)
        listing.masks.append(mask)
        listing.layers[mask] = (height, width, layers)
    if missing and listing.error is None:
        listing.error = FileNotFoundError(
            f"{len(missing)} images named by {path} are not in {image_dir} (e.g. {missing[0]}); "
            "copy the project's images there or set data.<split>.images to their directory"
        )
    if unlabelled:
        listing.left_out.append(
            f"{unlabelled} tasks of {path} without an annotation (not cancelled) left out"
        )
    if not listing.ids and listing.error is None:
        listing.fail(path, ValueError(f"{path}: holds no annotated task"))
    return listing
