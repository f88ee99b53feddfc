"""predict.py --export: its masks written as pre-annotations that a labelling tool imports.

- labelstudio: one JSON file, Label Studio's task import format with predictions: per image a task
  {"data": {"image": ref}, "predictions": [{"model_version", "result": [...]}]}, one "brushlabels"
  result per class present, its mask in Label Studio's brush RLE (brush_rle, written here: the
  runtime does not import label-studio-converter; its decode_rle reads it back, tests say so).
- coco: one JSON file, COCO with one annotation per class present per image, the mask as compressed
  RLE (pycocotools.mask.encode, "counts" a str) with iscrowd 0, as COCO-Stuff's stuff annotations
  write a class's region of an image; area and bbox from pycocotools.
- cvat_mask: a folder (or a .zip of it) in CVAT's "Segmentation mask 1.1" layout: labelmap.txt (the
  classes' names and colours), SegmentationClass/<stem>.png (RGB colour masks),
  SegmentationObject/<stem>.png (each class present as one object) and
  ImageSets/Segmentation/default.txt, as datumaro's voc_segmentation exporter writes it for CVAT.

The export is made from the mask files predict.py wrote (read_mask: lossless PNGs), so it holds the
same masks, also for the images --resume skipped; under torchrun each process encodes its own images
(cvat_mask: writes their PNGs) and process 0 writes the one file.
"""

from __future__ import annotations

import json
import os
import shutil
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from PIL import Image

from fcn.core.files import atomic_write

FORMATS = ("coco", "cvat_mask", "labelstudio")
"""What predict.py --export writes."""

LOCAL_FILES = "/data/local-files/?d="
"""How Label Studio's local files storage serves a file: this prefix and the file's path relative to
its LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT."""


@dataclass(frozen=True)
class Export:
    """What one predict.py --export writes and how it names things."""

    format: str
    """One of FORMATS."""
    path: Path
    """The file (coco, labelstudio) or folder / .zip (cvat_mask) written."""
    task: str
    """The model's data.task: multiclass, binary or multilabel."""
    classes: tuple[str, ...]
    """The class names in label order (a sigmoid task: its channels')."""
    palette: np.ndarray
    """The model's 256 x 3 palette (a sigmoid task: class c's colour is row c + 1)."""
    untinted: int = 0
    """The multiclass label written as no annotation (fcn.api.untinted_label: a background class)."""
    image_root: str = LOCAL_FILES
    """labelstudio: written before each image's path."""
    image_base: Path = Path(".")
    """labelstudio, coco: the images' paths are written relative to this folder."""
    from_name: str = "tag"
    """labelstudio: the BrushLabels tag's name (Label Studio's semantic segmentation template's)."""
    to_name: str = "image"
    """labelstudio: the Image tag's name (the template's); its data key too ($image)."""
    model_version: str = ""
    """labelstudio: the predictions' model_version."""


def check_export(export: Export, outputs: Sequence[str]) -> None:
    """Raise ValueError, in one line naming the flag, if export cannot be written: before any work."""
    if export.format not in FORMATS:
        raise ValueError(f"--export {export.format}: choose one of {', '.join(FORMATS)}")
    if "mask" not in outputs:
        raise ValueError("--export is made from the mask files: keep mask in --outputs")
    if export.format == "cvat_mask":
        if export.task == "multilabel":
            raise ValueError(
                "--export cvat_mask: a multilabel model's classes overlap and one colour mask per image "
                "cannot hold them; use --export coco or labelstudio (one mask per class)"
            )
        names, colours = cvat_labelmap(export)
        if len(set(colours)) < len(colours):
            raise ValueError(
                f"--export cvat_mask: classes share a colour in the model's palette ({', '.join(names)}: "
                f"{colours}); CVAT reads a class from its colour: give data.palette distinct colours"
            )
    if export.format in ("coco", "labelstudio") and export.path.suffix.lower() != ".json":
        raise ValueError(f"--export {export.format} {export.path}: name a .json file")


def read_mask(folder: Path, stem: str, task: str, classes: Sequence[str]) -> np.ndarray:
    """Return the mask predict.py wrote for output name stem in folder: multiclass, the H x W class
    indices of <stem>.png; binary, the H x W boolean <stem>.png > 0; multilabel, C x H x W boolean
    from <stem>_<class>.png."""

    def read(path: Path) -> np.ndarray:
        with Image.open(path) as image:
            return np.asarray(image)

    if task == "multiclass":
        return read(folder / f"{stem}.png")
    if task == "binary":
        return read(folder / f"{stem}.png") > 0
    return np.stack([read(folder / f"{stem}_{name}.png") > 0 for name in classes])


def class_planes(mask: np.ndarray, export: Export) -> list[tuple[int, str, np.ndarray]]:
    """Return (class index, name, boolean H x W mask) of each class present in mask (read_mask's),
    in class order; a multiclass background (export.untinted) is no annotation."""
    if export.task == "binary":
        planes = [(0, export.classes[0], mask)]
    elif export.task == "multilabel":
        planes = [(c, name, plane) for c, (name, plane) in enumerate(zip(export.classes, mask))]
    else:
        present = np.flatnonzero(np.bincount(mask.ravel(), minlength=len(export.classes)))
        planes = [(int(c), export.classes[c], mask == c) for c in present if c != export.untinted]
    return [(c, name, plane) for c, name, plane in planes if plane.any()]


# ----------------------------------------------------------------------------- Label Studio's brush RLE

# Label Studio's brush RLE (label_studio_converter.brush.decode_rle and the editor's decoder): a bit
# stream, most significant bit first: the number of values (32 bits), the word size - 1 (5 bits), the
# four run-length field sizes - 1 (4 bits each), then blocks until that many values are read: a flag
# (1: a run of one value, 0: literal values), a 2-bit index into the sizes, the count - 1 in that many
# bits, then the run's value (or the count's literal values) in word size bits; zeros pad the last byte.
# The values are the mask's RGBA bytes, each 0 or 255 (Label Studio shows the alpha channel).
_WORD = 8
_SIZES = np.array([3, 4, 8, 16])
_LONGEST = 1 << 16  # the longest run one block holds (16 bits of count - 1)


def brush_rle(plane: np.ndarray) -> list[int]:
    """Return Label Studio's brush RLE (a list of byte values) of a boolean H x W mask: its RGBA
    image, 255 in every channel where the mask is true, as label_studio_converter's mask2rle encodes
    it; every run written as a run block (the format also allows literal blocks)."""
    flat = np.asarray(plane, dtype=bool).ravel()
    if 4 * flat.size >= 1 << 32:
        raise ValueError(f"a {plane.shape} mask is too large for Label Studio's brush RLE (32-bit length)")
    starts = np.flatnonzero(np.r_[True, flat[1:] != flat[:-1]])
    lengths = np.diff(np.r_[starts, flat.size]) * 4  # each pixel is 4 equal bytes
    values = flat[starts].astype(np.int64) * 255
    blocks = -(-lengths // _LONGEST)  # a run longer than one block holds is cut in full blocks and the rest
    counts = np.full(int(blocks.sum()), _LONGEST, dtype=np.int64)
    counts[np.cumsum(blocks) - 1] = lengths - (blocks - 1) * _LONGEST
    index = np.searchsorted(1 << _SIZES[:3], counts)  # the smallest count field that holds count - 1
    fields = np.stack([np.ones_like(counts), index, counts - 1, np.repeat(values, blocks)], axis=1)
    widths = np.stack(
        [np.ones_like(counts), np.full_like(counts, 2), _SIZES[index], np.full_like(counts, _WORD)], axis=1
    )
    header = np.array([4 * flat.size, _WORD - 1, *(_SIZES - 1)])
    header_widths = np.array([32, 5, 4, 4, 4, 4])
    fields = np.r_[header, fields.ravel()]
    widths = np.r_[header_widths, widths.ravel()]
    # each field's bits, most significant first: field i's bit k is (value >> (width - 1 - k)) & 1
    ends = np.cumsum(widths)
    position = np.arange(int(ends[-1])) - np.repeat(ends - widths, widths)
    bits = (np.repeat(fields, widths) >> (np.repeat(widths, widths) - 1 - position)) & 1
    return np.packbits(bits.astype(np.uint8)).tolist()


# ----------------------------------------------------------------------------- one image's records


def image_reference(file: Path, export: Export) -> str:
    """Return how the export names an image file: its path relative to export.image_base (posix),
    after export.image_root for labelstudio; ValueError naming the file if it is not under the base."""
    try:
        relative = Path(os.path.abspath(file)).relative_to(os.path.abspath(export.image_base))
    except ValueError:
        raise ValueError(
            f"{file}: not under --export-image-base {export.image_base}; give the folder the tool "
            "resolves image paths from (Label Studio: its LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT)"
        ) from None
    return (export.image_root if export.format == "labelstudio" else "") + relative.as_posix()


def labelstudio_task(file: Path, stem: str, mask: np.ndarray, export: Export) -> dict[str, Any]:
    """Return Label Studio's import task for one image: its data and one prediction with a
    brushlabels result per class present (read_mask's mask)."""
    height, width = mask.shape[-2:]
    result = [
        {
            "id": f"{stem}-{c}",
            "from_name": export.from_name,
            "to_name": export.to_name,
            "type": "brushlabels",
            "original_width": int(width),
            "original_height": int(height),
            "image_rotation": 0,
            "value": {"format": "rle", "rle": brush_rle(plane), "brushlabels": [name]},
        }
        for c, name, plane in class_planes(mask, export)
    ]
    prediction = {"model_version": export.model_version, "result": result}
    return {"data": {export.to_name: image_reference(file, export)}, "predictions": [prediction]}


def coco_image(file: Path, stem: str, mask: np.ndarray, export: Export) -> dict[str, Any]:
    """Return one image's COCO entry and its annotations (ids given later, in write_export):
    {"image": {file_name, width, height}, "annotations": [{category_id, segmentation, ...}]}."""
    from pycocotools import mask as mask_utils

    height, width = mask.shape[-2:]
    annotations = []
    for c, _, plane in class_planes(mask, export):
        rle = mask_utils.encode(np.asfortranarray(plane.astype(np.uint8)))
        annotations.append(
            {
                "category_id": coco_category(c, export),
                "segmentation": {"size": [int(height), int(width)], "counts": rle["counts"].decode("ascii")},
                "area": float(mask_utils.area(rle)),
                "bbox": [float(v) for v in mask_utils.toBbox(rle)],
                "iscrowd": 0,
            }
        )
    image = {"file_name": image_reference(file, export), "width": int(width), "height": int(height)}
    return {"image": image, "annotations": annotations}


def coco_category(label: int, export: Export) -> int:
    """Return the COCO category id of a class: its label (a sigmoid task: its channel + 1, so that
    ids start at 1 as COCO's do; a multiclass model's label 0 is background, left out)."""
    return label if export.task == "multiclass" else label + 1


def coco_categories(export: Export) -> list[dict[str, Any]]:
    """Return the COCO categories: every class but the multiclass background, id coco_category's."""
    return [
        {"id": coco_category(c, export), "name": name, "supercategory": ""}
        for c, name in enumerate(export.classes)
        if export.task != "multiclass" or c != export.untinted
    ]


def cvat_labelmap(export: Export) -> tuple[list[str], list[tuple[int, int, int]]]:
    """Return (names, RGB colours) of the labels of a cvat_mask export, in label order: a multiclass
    model's classes and palette; a binary model's background (0, 0, 0) and its class (palette row 1)."""
    if export.task == "binary":
        names = ["background", export.classes[0]]
        colours = [(0, 0, 0), tuple(int(v) for v in export.palette[1])]
    else:
        names = list(export.classes)
        colours = [tuple(int(v) for v in export.palette[c]) for c in range(len(names))]
    return names, colours


def write_cvat_mask(folder: Path, stem: str, mask: np.ndarray, export: Export, durable: bool = True) -> None:
    """Write one image's SegmentationClass/<stem>.png (each pixel its class's labelmap colour) and
    SegmentationObject/<stem>.png (each class present but background one object, VOC's indexed PNG)."""
    names, colours = cvat_labelmap(export)
    labels = mask.astype(np.uint8) if export.task == "binary" else mask
    colour = np.asarray(colours, dtype=np.uint8)[labels]
    objects = np.zeros(labels.shape, np.uint8)
    for n, (_, _, plane) in enumerate(class_planes(mask, export), start=1):
        objects[plane] = n
    index = Image.fromarray(objects, mode="P")
    index.putpalette(_voc_colormap().ravel().tolist())
    for sub, picture in (("SegmentationClass", Image.fromarray(colour)), ("SegmentationObject", index)):
        path = folder / sub / f"{stem}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, lambda tmp, picture=picture: picture.save(tmp, format="PNG"), durable=durable)


def _voc_colormap() -> np.ndarray:
    """Return PASCAL VOC's 256 x 3 colour map (its devkit's bit-interleaving), the palette of a VOC
    SegmentationObject PNG."""
    cmap = np.zeros((256, 3), np.uint8)
    for i in range(256):
        c, r, g, b = i, 0, 0, 0
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        cmap[i] = (r, g, b)
    return cmap


# ----------------------------------------------------------------------------- a process's share, the file


def cvat_folder(export: Export) -> Path:
    """Return the folder a cvat_mask export's files are written to (a .zip: beside it, then zipped)."""
    return export.path.with_suffix("") if export.path.suffix.lower() == ".zip" else export.path


def export_share(
    export: Export, output_dir: Path, jobs: Sequence[tuple[int, Path, str]]
) -> list[tuple[int, Any]]:
    """Return (index, record) per job (index in all inputs, image file, output name) of this process's
    share, from the masks predict.py wrote in output_dir: labelstudio, the task; coco, coco_image's;
    cvat_mask, the output name, its PNGs written."""
    records = []
    for index, file, stem in jobs:
        mask = read_mask(output_dir, stem, export.task, export.classes)
        if export.format == "labelstudio":
            records.append((index, labelstudio_task(file, stem, mask, export)))
        elif export.format == "coco":
            records.append((index, coco_image(file, stem, mask, export)))
        else:
            write_cvat_mask(cvat_folder(export), stem, mask, export)
            records.append((index, stem))
    return records


def write_export(export: Export, records: Sequence[tuple[int, Any]]) -> Path:
    """Write the export from every process's export_share records (in the inputs' order, whatever
    order the processes gave them) and return its path; done once, by one process."""
    ordered = [record for _, record in sorted(records, key=lambda r: r[0])]
    if export.format == "labelstudio":
        text = json.dumps(ordered)
    elif export.format == "coco":
        images, annotations = [], []
        for image_id, entry in enumerate(ordered, start=1):
            images.append({"id": image_id, **entry["image"]})
            for annotation in entry["annotations"]:
                annotations.append({"id": len(annotations) + 1, "image_id": image_id, **annotation})
        info = {"description": f"predictions of {export.model_version}"}
        text = json.dumps(
            {
                "info": info,
                "images": images,
                "annotations": annotations,
                "categories": coco_categories(export),
            }
        )
    else:
        return _write_cvat_index(export, ordered)
    export.path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(export.path, lambda tmp: tmp.write_text(text))
    return export.path


def _write_cvat_index(export: Export, stems: Sequence[str]) -> Path:
    """Write a cvat_mask export's labelmap.txt and ImageSets/Segmentation/default.txt beside the PNGs
    (and zip the folder if export.path is a .zip); return the path."""
    folder = cvat_folder(export)
    names, colours = cvat_labelmap(export)
    # CVAT's labelmap.txt: "# label:color_rgb:parts:actions", one "name:r,g,b::" line per label
    lines = ["# label:color_rgb:parts:actions"] + [
        f"{n}:{r},{g},{b}::" for n, (r, g, b) in zip(names, colours)
    ]
    listing = folder / "ImageSets" / "Segmentation" / "default.txt"
    listing.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(folder / "labelmap.txt", lambda tmp: tmp.write_text("\n".join(lines) + "\n"))
    atomic_write(listing, lambda tmp: tmp.write_text("".join(f"{s}\n" for s in stems)))
    if folder == export.path:
        return folder

    def archive(tmp: Path) -> None:
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zf:
            for path in sorted(p for p in folder.rglob("*") if p.is_file()):
                zf.write(path, path.relative_to(folder).as_posix())

    atomic_write(export.path, archive)
    shutil.rmtree(folder)
    return export.path
