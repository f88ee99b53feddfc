"""A small synthetic dataset in VOC layout for demos and tests: shapes on textured backgrounds.

    python -m fcn.data.toy --root data/toy [--seed 0] [--train 2000 --val 200 --size 96]
    python -m fcn.data.toy --root data/toy_coco --format coco    # the same images as COCO JSON
    python -m fcn.data.toy --root data/toy_pairs --format pairs  # as images/ and masks/ folders

Each image holds one to three circles, squares and triangles (rotated, of random size, possibly
overlapping or cut by the border) over a textured, noisy background. Shapes and background take
random colours from the same distribution, so only the shape tells the class. Masks are VOC-style
palette PNGs with a thin void (255) band on every boundary. Output is deterministic from the seed.

--format coco writes the same images to <root>/images/ and their annotations to
<root>/annotations/<split>.json, as an annotation tool exports them: one annotation per shape in
drawing order, a polygon (a circle as a 64-gon), except one shape in ten as uncompressed and one in
ten as compressed RLE; and per image the void band as a compressed-RLE annotation of a category
'void' that the classes leave out. With data.coco_overlap=last (a later shape covers an earlier
one, as drawn) and data.coco_unlisted=ignore (the band is ignored) the masks are the VOC layout's
up to the pixels where pycocotools' polygon fill differs from PIL's (predefined_configs/toy_coco.yml).

--task binary draws one or two thin scratches (5-7 px, under 10% of the pixels), a little brighter or
darker than the textured background, with 0/255 grayscale masks (predefined_configs/binary.yml);
--task multilabel draws a 'disc' (red raised) and a 'band' (blue raised) through it, overlapping on
a fifth or more of each, with one 0/255 mask per class in <masks>/<class>/<id>.png
(predefined_configs/multilabel.yml). Both write lossless PNG images, voc or pairs layout.

    python -m fcn.data.toy --root data/toy_binary --format pairs --task binary
    python -m fcn.data.toy --root data/toy_multilabel --format pairs --task multilabel

--format pairs writes the VOC layout's files, byte for byte, as two folders per split:
<root>/<split>/images/<id>.jpg and <root>/<split>/masks/<id>.png (a 'pairs' dataset,
predefined_configs/toy_pairs.yml), and <root>/classes.txt.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import functools
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
from PIL import Image, ImageDraw

from fcn.config import VOID
from fcn.core.errors import EXIT_BAD_INPUT, EXIT_FAILURE, report
from fcn.data.classes import make_palette

TOY_CLASSES = ("background", "circle", "square", "triangle")
"""Class names of the toy dataset, in label order."""

TOY_PALETTE = ((0, 0, 0), (128, 0, 0), (0, 128, 0), (128, 128, 0))
"""Mask colours of the toy classes (VOC's first four, so its palette PNGs look like VOC's)."""

FORMAT_VERSION = 1
"""Bumped whenever the generator's output changes, so an old dataset is not taken for a new one."""

MARKER = "toy.json"

FORMATS = ("voc", "coco", "pairs")
"""The layouts --format writes (the module doc shows each)."""

TASKS = ("multiclass", "binary", "multilabel")
"""What --task draws: the shapes (multiclass), thin scratches (binary), two overlapping classes (multilabel)."""

BINARY_CLASSES = ("scratch",)
"""--task binary: the one foreground class (data.classes)."""

MULTILABEL_CLASSES = ("disc", "band")
"""--task multilabel: the two classes, which overlap (data.classes; mask folders <masks>/<class>/)."""


class NotAToyRoot(FileExistsError):
    """--root exists and holds something other than this toy dataset (no toy.json, or a toy made with
    other settings): a bad command line, exit 2; nothing is written there."""


@functools.lru_cache(maxsize=64)
def _upsample_matrix(size: int, cells: int) -> np.ndarray:
    """Return the (size, cells) matrix of linear interpolation from `cells` samples to `size` pixels."""
    pos = np.clip((np.arange(size) + 0.5) * cells / size - 0.5, 0, cells - 1)
    lo = np.floor(pos).astype(int)
    hi = np.minimum(lo + 1, cells - 1)
    m = np.zeros((size, cells), dtype=np.float32)
    m[np.arange(size), lo] += 1 - (pos - lo)
    m[np.arange(size), hi] += pos - lo
    return m


def _texture(rng: np.random.Generator, size: int, amplitude: float) -> np.ndarray:
    """Return a (size, size, 3) float32 texture: smooth random blobs plus per-pixel noise."""
    cells = int(rng.integers(3, 9))
    coarse = rng.standard_normal((3, cells, cells), dtype=np.float32) * amplitude
    up = _upsample_matrix(size, cells)
    smooth = (up @ coarse @ up.T).transpose(1, 2, 0)
    # Uniform per-pixel noise (cheaper to draw than normal) with standard deviation 0.4 * amplitude.
    noise = rng.random((size, size, 3), dtype=np.float32) - 0.5
    return smooth + noise * (amplitude * 0.4 * np.sqrt(12.0))


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """Return a (size, size, 3) float32 image: a two-colour gradient, blotches, sometimes stripes."""
    c1, c2 = rng.uniform(0, 255, 3).astype(np.float32), rng.uniform(0, 255, 3).astype(np.float32)
    angle = rng.uniform(0, 2 * np.pi)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    t = np.clip(0.5 + (xx - 0.5) * np.cos(angle) + (yy - 0.5) * np.sin(angle), 0, 1)[..., None]
    img = c1 + (c2 - c1) * t + _texture(rng, size, 25.0)
    if rng.random() < 0.3:
        period = rng.uniform(6, 16)
        stripes = np.sin(2 * np.pi * (xx * np.cos(angle * 3) + yy * np.sin(angle * 3)) * size / period)
        img += 30.0 * stripes[..., None]
    return img


def _polygon(kind: int, cx: float, cy: float, r: float, angle: float) -> list[tuple[float, float]]:
    """Return the vertices of a square (kind 2) or an equilateral triangle (kind 3) of circumradius r."""
    n = 4 if kind == 2 else 3
    return [
        (cx + r * np.cos(angle + 2 * np.pi * k / n), cy + r * np.sin(angle + 2 * np.pi * k / n))
        for k in range(n)
    ]


def _void_band(label: np.ndarray) -> np.ndarray:
    """Return a bool map of pixels next to a pixel of another class (both sides of every boundary)."""
    band = np.zeros(label.shape, dtype=bool)
    dy = label[1:, :] != label[:-1, :]
    dx = label[:, 1:] != label[:, :-1]
    band[1:, :] |= dy
    band[:-1, :] |= dy
    band[:, 1:] |= dx
    band[:, :-1] |= dx
    return band


CIRCLE_VERTICES = 64
"""Vertices of the polygon a circle is exported as (--format coco): within 0.12% of its radius."""


def make_sample(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Return one (HxWx3 uint8 image, HxW uint8 mask) pair drawn from `rng`."""
    image, label, _ = make_sample_shapes(rng, size)
    return image, label


def make_sample_shapes(
    rng: np.random.Generator, size: int
) -> tuple[np.ndarray, np.ndarray, list[tuple[int, list[tuple[float, float]]]]]:
    """Return make_sample's pair and its shapes in drawing order: (class, polygon vertices) each,
    a circle as a CIRCLE_VERTICES-gon (the pixels are drawn as an ellipse)."""
    img = _background(rng, size)
    label = np.zeros((size, size), dtype=np.uint8)
    bg_mean = img.reshape(-1, 3).mean(0)
    texture = _texture(rng, size, 15.0)  # shared by the shapes of this image
    shapes = []
    for _ in range(int(rng.integers(1, 4))):
        kind = int(rng.integers(1, len(TOY_CLASSES)))
        r = rng.uniform(0.12, 0.26) * size
        cx, cy = rng.uniform(0.1, 0.9, 2) * size
        shape = Image.new("L", (size, size), 0)
        draw = ImageDraw.Draw(shape)
        if kind == 1:
            draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=1)
            t = 2 * np.pi * np.arange(CIRCLE_VERTICES) / CIRCLE_VERTICES
            shapes.append((kind, list(zip((cx + r * np.cos(t)).tolist(), (cy + r * np.sin(t)).tolist()))))
        else:
            polygon = _polygon(kind, cx, cy, r, rng.uniform(0, 2 * np.pi))
            draw.polygon(polygon, fill=1)
            shapes.append((kind, [(float(x), float(y)) for x, y in polygon]))
        inside = np.asarray(shape, dtype=bool)
        # A colour far enough from the background that the shape is visible, but otherwise random.
        for _ in range(20):
            colour = rng.uniform(0, 255, 3)
            if np.abs(colour - bg_mean).sum() > 120:
                break
        img[inside] = colour.astype(np.float32) + texture[inside]
        label[inside] = kind
    label[_void_band(label)] = VOID
    return np.clip(np.rint(img), 0, 255).astype(np.uint8), label, shapes


BINARY_MAX_SHARE = 0.09
"""--task binary: the most of an image's pixels its scratches cover (thin: under 10%)."""


def make_binary_sample(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Return one (HxWx3 uint8 image, HxW uint8 0/1 mask) pair of --task binary: one or two thin
    curved scratches (5-7 px wide) a little brighter or darker than the textured background under
    them (a difference of 30-45 levels in every channel, about the size of the texture's blotches),
    covering at most BINARY_MAX_SHARE of the pixels (a stroke that would cover more is drawn again,
    shorter or thinner; the first always finds one)."""
    img = _background(rng, size)
    label = np.zeros((size, size), dtype=np.uint8)
    for _stroke in range(int(rng.integers(1, 3))):
        for _ in range(20):
            stroke = Image.new("L", (size, size), 0)
            draw = ImageDraw.Draw(stroke)
            a, b, c = rng.uniform(0.05, 0.95, (3, 2)) * size
            t = np.linspace(0, 1, 24)[:, None]
            curve = (1 - t) ** 2 * a + 2 * (1 - t) * t * c + t**2 * b  # a quadratic Bezier from a to b
            width = int(rng.integers(5, 8))
            draw.line([tuple(p) for p in curve.tolist()], fill=1, width=width, joint="curve")
            inside = np.asarray(stroke, dtype=bool)
            if (label.astype(bool) | inside).mean() <= BINARY_MAX_SHARE:
                break
        else:
            continue  # no second stroke fits: one it is
        shift = rng.uniform(30, 45) * (1 if rng.random() < 0.5 else -1)
        img[inside] += np.float32(shift)
        label[inside] = 1
    return np.clip(np.rint(img), 0, 255).astype(np.uint8), label


def make_multilabel_sample(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Return one (HxWx3 uint8 image, 2xHxW uint8 0/1 masks) pair of --task multilabel: a 'disc'
    (its pixels' red raised by 70) and a 'band' across the image (its pixels' blue raised by 70)
    that runs through the disc, so that at least a fifth of each class's pixels are both classes."""
    img = _background(rng, size) * np.float32(0.6)  # darker, so the raised channels do not clip
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    r = rng.uniform(0.15, 0.25) * size
    cx, cy = rng.uniform(0.3, 0.7, 2) * size
    disc = (xx - cx) ** 2 + (yy - cy) ** 2 <= r * r
    angle = rng.uniform(0, np.pi)
    offset = rng.uniform(-0.4, 0.4) * r  # the band's centre line passes through the disc
    half = rng.uniform(0.35, 0.6) * r
    distance = (xx - cx) * np.sin(angle) - (yy - cy) * np.cos(angle) - offset
    band = np.abs(distance) <= half
    img[disc, 0] += 70.0
    img[band, 2] += 70.0
    masks = np.stack([disc, band]).astype(np.uint8)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8), masks


def _uncompressed_rle(mask: np.ndarray) -> dict:
    """Return COCO's uncompressed RLE of a bool mask: run lengths in column-major order, zeros first."""
    flat = np.asarray(mask, dtype=bool).ravel(order="F")
    edges = np.flatnonzero(np.diff(flat)) + 1
    runs = np.diff(np.concatenate([[0], edges, [flat.size]]))
    counts = ([0] if flat.size and flat[0] else []) + runs.tolist()
    return {"size": list(mask.shape), "counts": counts}


def _compressed_rle(mask: np.ndarray) -> dict:
    """Return COCO's compressed RLE of a bool mask (counts as the JSON string)."""
    from pycocotools import mask as mask_utils

    rle = mask_utils.encode(np.asfortranarray(mask, dtype=np.uint8))
    return {"size": list(rle["size"]), "counts": rle["counts"].decode("ascii")}


def _clip_polygon(polygon: list[tuple[float, float]], size: float) -> list[tuple[float, float]]:
    """Return the polygon clipped to the image [0, size] x [0, size] (Sutherland-Hodgman), as
    annotation tools clip a shape cut by the border."""
    for axis in (0, 1):
        for bound, inside in ((0.0, lambda v: v >= 0.0), (size, lambda v: v <= size)):
            out = []
            for k, p in enumerate(polygon):
                q = polygon[k - 1]
                if inside(p[axis]) != inside(q[axis]):  # the edge q -> p crosses the bound
                    t = (bound - q[axis]) / (p[axis] - q[axis])
                    cut = [q[0] + t * (p[0] - q[0]), q[1] + t * (p[1] - q[1])]
                    cut[axis] = bound
                    out.append((cut[0], cut[1]))
                if inside(p[axis]):
                    out.append(p)
            polygon = out
    return polygon


def _coco_annotations(i: int, shapes: list, label: np.ndarray) -> list[dict]:
    """Return the annotations of image `i` (no ids yet): its shapes in drawing order, then its void band."""
    from pycocotools import mask as mask_utils

    size = label.shape[0]
    out = []
    for j, (kind, polygon) in enumerate(shapes):
        flat = [round(c, 2) for xy in _clip_polygon(polygon, size) for c in xy]
        segmentation: Any = [flat]
        if (i + j) % 10 in (0, 5):  # RLE of the polygon's own pixels, so the mask is the same either way
            pixels = mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects([flat], size, size))).astype(
                bool
            )
            segmentation = _uncompressed_rle(pixels) if (i + j) % 10 == 0 else _compressed_rle(pixels)
        out.append({"category_id": kind, "segmentation": segmentation, "iscrowd": 0})
    void = label == VOID
    if void.any():
        out.append({"category_id": len(TOY_CLASSES), "segmentation": _compressed_rle(void), "iscrowd": 0})
    return out


def _write_images(
    directory: str,
    split: str,
    code: int,
    indices: range,
    seed: int,
    size: int,
    fmt: str = "voc",
    task: str = "multiclass",
) -> list[list[dict]]:
    """Write the images (and masks) of `split` with the given indices into `directory` (fmt 'voc',
    'coco' or 'pairs'); return each image's COCO annotations when fmt is 'coco'. A binary task's
    masks are 0/255 grayscale PNGs; a multilabel task's one such PNG per class, <masks>/<class>/<id>.png."""
    directory = Path(directory)
    pal = make_palette(TOY_PALETTE).tobytes()
    annotations = []
    if task != "multiclass":
        make = make_binary_sample if task == "binary" else make_multilabel_sample
        for i in indices:
            image, masks = make(np.random.default_rng([seed, code, i, TASKS.index(task)]), size)
            name = f"{split}_{i:05d}"
            images_dir, masks_dir = (
                (directory / split / "images", directory / split / "masks")
                if fmt == "pairs"
                else (directory / "JPEGImages", directory / "SegmentationClass")
            )
            Image.fromarray(image).save(images_dir / f"{name}.png")  # lossless: low contrast survives
            planes = [(masks_dir, masks)] if masks.ndim == 2 else [
                (masks_dir / cls, plane) for cls, plane in zip(MULTILABEL_CLASSES, masks)
            ]  # fmt: skip
            for where, plane in planes:
                where.mkdir(parents=True, exist_ok=True)
                Image.fromarray(plane * np.uint8(255), mode="L").save(where / f"{name}.png")
        return annotations
    for i in indices:
        # One generator per image, keyed by (seed, split, index): the output does not depend on the
        # number of worker processes, and adding images leaves the others unchanged.
        image, label, shapes = make_sample_shapes(np.random.default_rng([seed, code, i]), size)
        name = f"{split}_{i:05d}"
        if fmt == "coco":
            Image.fromarray(image).save(directory / "images" / f"{name}.jpg", quality=95)
            annotations.append(_coco_annotations(i, shapes, label))
            continue
        images, masks = (
            (directory / split / "images", directory / split / "masks")
            if fmt == "pairs"
            else (directory / "JPEGImages", directory / "SegmentationClass")
        )
        Image.fromarray(image).save(images / f"{name}.jpg", quality=95)
        mask = Image.fromarray(label, mode="P")
        mask.putpalette(pal)
        mask.save(masks / f"{name}.png")
    return annotations


def _write_all(
    directory: Path,
    counts: dict[str, int],
    seed: int,
    size: int,
    workers: int,
    fmt: str = "voc",
    task: str = "multiclass",
) -> None:
    """Write every split's images (in `workers` processes when > 1) and ImageSets/Segmentation/<split>.txt,
    or with fmt 'coco' annotations/<split>.json (fmt 'pairs': the images and masks only)."""
    jobs = []
    for code, (split, count) in enumerate(counts.items()):
        step = max(1, -(-count // max(1, workers)))
        jobs += [
            (str(directory), split, code, range(a, min(a + step, count)), seed, size, fmt, task)
            for a in range(0, count, step)
        ]
        if fmt == "voc":
            ids = [f"{split}_{i:05d}" for i in range(count)]
            (directory / "ImageSets" / "Segmentation" / f"{split}.txt").write_text("\n".join(ids) + "\n")
    if workers <= 1:
        results = [_write_images(*job) for job in jobs]
    else:
        with concurrent.futures.ProcessPoolExecutor(workers) as pool:
            results = [future.result() for future in [pool.submit(_write_images, *job) for job in jobs]]
    if fmt == "coco":
        for split in counts:
            per_image = [anns for job, res in zip(jobs, results) if job[1] == split for anns in res]
            _write_coco_json(directory / "annotations" / f"{split}.json", split, per_image, size)


def _write_coco_json(path: Path, split: str, per_image: list[list[dict]], size: int) -> None:
    """Write one split's COCO JSON: images, the toy classes and 'void' as categories, and annotations."""
    images, annotations = [], []
    for i, anns in enumerate(per_image):
        images.append({"id": i + 1, "file_name": f"{split}_{i:05d}.jpg", "width": size, "height": size})
        for ann in anns:
            annotations.append({"id": len(annotations) + 1, "image_id": i + 1, **ann})
    names = [*TOY_CLASSES[1:], "void"]
    categories = [{"id": k, "name": name, "supercategory": "shape"} for k, name in enumerate(names, 1)]
    doc = {"images": images, "annotations": annotations, "categories": categories}
    path.write_text(json.dumps(doc, separators=(",", ":")) + "\n")


def generate(
    root: str | Path,
    seed: int = 0,
    n_train: int = 2000,
    n_val: int = 200,
    size: int = 96,
    workers: Optional[int] = None,
    fmt: str = "voc",
    task: str = "multiclass",
) -> bool:
    """Write the toy dataset into `root` and return True, or return False when it is already there.

    Writes into a temporary sibling directory and renames it, so `root` is either complete or absent.
    `workers` processes share the work (None: up to 4, one per CPU); the output is the same for any number.
    fmt: 'voc' (the VOC layout), 'coco' (images/ and annotations/<split>.json) or 'pairs'
    (<split>/images/ and <split>/masks/); see the module doc. task: 'multiclass' (the shapes),
    'binary' or 'multilabel' (voc or pairs only), see the module doc.
    """
    if fmt not in FORMATS:
        raise ValueError(f"toy dataset format '{fmt}' is not one of {', '.join(FORMATS)}")
    if task not in TASKS or (task != "multiclass" and fmt == "coco"):
        raise ValueError(
            f"toy dataset task '{task}' is not one of {', '.join(TASKS)} (binary, multilabel: voc or pairs)"
        )
    if n_train < 1 or n_val < 1 or size < 16:
        raise ValueError(
            f"toy dataset needs train >= 1, val >= 1 and size >= 16, got {n_train}, {n_val}, {size}"
        )
    root = Path(root)
    params = {"version": FORMAT_VERSION, "seed": seed, "train": n_train, "val": n_val, "size": size}
    if fmt != "voc":
        params["format"] = fmt
    if task != "multiclass":
        params["task"] = task
    marker = root / MARKER
    if marker.is_file():
        existing = json.loads(marker.read_text())
        if existing == params:
            return False
        raise NotAToyRoot(
            f"{root} holds a toy dataset made with {existing}, not {params}; remove it or choose another --root"
        )
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise NotAToyRoot(
            f"{root} exists and is not a complete toy dataset; remove it or choose another --root"
        )

    root.parent.mkdir(parents=True, exist_ok=True)
    staging = root.parent / f".{root.name}.partial-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    try:
        subs = {
            "voc": ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"),
            "coco": ("images", "annotations"),
            "pairs": ("train/images", "train/masks", "val/images", "val/masks"),
        }[fmt]
        for sub in subs:
            (staging / sub).mkdir(parents=True)
        if workers is None:
            workers = min(4, os.cpu_count() or 1)
        _write_all(staging, {"train": n_train, "val": n_val}, seed, size, workers, fmt, task)
        names = {"binary": BINARY_CLASSES, "multilabel": MULTILABEL_CLASSES}.get(task, TOY_CLASSES)
        colours = TOY_PALETTE[1:] if task != "multiclass" else TOY_PALETTE
        lines = [f"{name} {r} {g} {b}" for name, (r, g, b) in zip(names, colours)]
        (staging / "classes.txt").write_text("\n".join(lines) + "\n")
        (staging / MARKER).write_text(json.dumps(params) + "\n")
        if root.is_dir():
            root.rmdir()  # empty (checked above)
        os.replace(staging, root)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return True


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Parse the command line, generate the toy dataset, print what was done; return the exit code."""
    parser = argparse.ArgumentParser(prog="python -m fcn.data.toy", description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", default="data/toy", help="output directory")
    parser.add_argument("--seed", type=int, default=0, help="random seed; same seed, same dataset")
    parser.add_argument("--train", type=int, default=2000, help="training images")
    parser.add_argument("--val", type=int, default=200, help="validation images")
    parser.add_argument("--size", type=int, default=96, help="image side in pixels")
    parser.add_argument("--workers", type=int, default=None, help="processes (default: up to 4, one per CPU)")
    parser.add_argument(
        "--format",
        choices=FORMATS,
        default="voc",
        help="VOC layout, COCO JSON (annotations/<split>.json) or pairs (<split>/images/, <split>/masks/)",
    )
    parser.add_argument(
        "--task",
        choices=TASKS,
        default="multiclass",
        help="multiclass: the shapes; binary: thin low-contrast scratches (0/255 masks); multilabel: a disc "
        "and a band that overlap (one 0/255 mask per class, <masks>/<class>/<id>.png)",
    )
    args = parser.parse_args(argv)
    start = time.perf_counter()
    try:
        created = generate(
            args.root, args.seed, args.train, args.val, args.size, args.workers, args.format, args.task
        )
    except (ValueError, NotAToyRoot) as exc:  # a bad argument or a root holding other files: nothing written
        report(exc)
        return EXIT_BAD_INPUT
    except OSError as exc:
        report(exc)
        return EXIT_FAILURE
    if created:
        print(
            f"wrote {args.train} train and {args.val} val images ({args.size}x{args.size}) to {args.root} "
            f"in {time.perf_counter() - start:.1f} s"
        )
    else:
        print(f"toy dataset already present in {args.root}; nothing to do")
    names = {"binary": BINARY_CLASSES, "multilabel": MULTILABEL_CLASSES}.get(args.task, TOY_CLASSES)
    print(f"classes: {', '.join(names)} (colours and names in {Path(args.root) / 'classes.txt'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
