"""data.<split>.name: auto: the format of an export found from its folder, when the config is loaded.

    data.train: {name: auto, root: my-export}

resolve_auto (called by loading.py's _resolve, before validation) looks at root's signature files,
in SIGNATURES order (the more specific first: a CVAT mask export is also a VOC folder, a YOLO
dataset also has images/), writes the concrete format's name and keys into the config, and says so
in one line ("auto: data.train: cvat_mask (labelmap.txt, SegmentationClass/) -> {name: cvat_mask,
root: X, split: default}"). So config.yml, checkpoints and Hub folders hold the concrete format,
never 'auto'. A folder that matches none is a ConfigError listing what was looked for.

Pure filesystem checks (fcn/config imports nothing else of fcn): a file's name, a folder's
presence, and for JSON and XML files their first and last bytes only (a COCO JSON may be large).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from fcn.config.schema import ConfigError

AUTO = "auto"
PEEK = 1 << 20  # bytes read from each end of a JSON or XML file: its keys, not its contents
SPLIT_DEFAULTS = {"train": "train", "val": "seg11valid"}
"""The schema's default data.<split>.split of each node: a split left at it is no choice of the user's."""


@dataclass(frozen=True)
class Found:
    """A format recognised in a folder: its name, the signature that matched, the keys to set."""

    name: str
    signature: str
    keys: dict[str, str]


def _peek(path: Path) -> str:
    """Return the first and last PEEK bytes of a file as text ('' when it cannot be read)."""
    try:
        with open(path, "rb") as f:
            head = f.read(PEEK)
            f.seek(0, 2)
            size = f.tell()
            tail = b""
            if size > 2 * PEEK:
                f.seek(size - PEEK)
                tail = f.read()
    except OSError:
        return ""
    return (head + b"\n" + tail).decode("utf-8", "replace")


def _jsons(folder: Path) -> list[Path]:
    return sorted(p for p in folder.glob("*.json") if p.is_file()) if folder.is_dir() else []


def _prefer(paths: Sequence[Path], split: str) -> Optional[Path]:
    """Return the path whose name holds `split` (train, val), else the first; None for none."""
    return next((p for p in paths if split in p.stem), paths[0] if paths else None)


def _images_dir(root: Path, *names: str) -> str:
    """Return the first of root/<name> (and root/images/<name>, root/images) that is a folder, else root."""
    for candidate in [
        *(root / n for n in names if n),
        *(root / "images" / n for n in names if n),
        root / "images",
    ]:
        if candidate.is_dir():
            return str(candidate)
    return str(root)


def _subset(folder: Path, split: str, fallback: str) -> str:
    """Return `split` when folder/<split>.txt lists it (ImageSets/Segmentation), else `fallback`
    where that exists, else the first listed, else `split`."""
    names = sorted(p.stem for p in folder.glob("*.txt")) if folder.is_dir() else []
    for choice in (split, fallback):
        if choice in names:
            return choice
    return names[0] if names else split


def _cvat_mask(root: Path, split: str) -> Optional[Found]:
    if (root / "labelmap.txt").is_file() and (root / "SegmentationClass").is_dir():
        subset = _subset(root / "ImageSets" / "Segmentation", split, "default")
        return Found("cvat_mask", "labelmap.txt, SegmentationClass/", {"root": str(root), "split": subset})
    return None


def _voc_folder(root: Path, split: str) -> Optional[Found]:
    if all((root / d).is_dir() for d in ("JPEGImages", "SegmentationClass", "ImageSets")):
        subset = _subset(root / "ImageSets" / "Segmentation", split, "train")
        return Found(
            "folder", "JPEGImages/, SegmentationClass/, ImageSets/", {"root": str(root), "split": subset}
        )
    return None


def _roboflow(root: Path, split: str) -> Optional[Found]:
    for folder in ("train", "valid", "val", "test"):
        if (root / folder / "_classes.csv").is_file():
            return Found("roboflow", f"{folder}/_classes.csv", {"root": str(root), "split": split})
    return None


def _yolo(root: Path, split: str) -> Optional[Found]:
    if (root / "data.yaml").is_file() and (
        (root / "labels").is_dir() or any((p / "labels").is_dir() for p in root.iterdir() if p.is_dir())
    ):
        return Found("yolo", "data.yaml, labels/", {"root": str(root), "split": split})
    return None


def _camvid(root: Path, split: str) -> Optional[Found]:
    if (root / "trainannot").is_dir() or (
        (root / "label_colors.txt").is_file() and (root / "train").is_dir()
    ):
        sign = "trainannot/" if (root / "trainannot").is_dir() else "label_colors.txt, train/"
        return Found("camvid", sign, {"root": str(root), "split": split})
    return None


def _kitti(root: Path, split: str) -> Optional[Found]:
    if (root / "training" / "image_2").is_dir() and (root / "training" / "semantic").is_dir():
        return Found(
            "kitti", "training/image_2/, training/semantic/", {"root": str(root), "split": "training"}
        )
    return None


def _cityscapes(root: Path, split: str) -> Optional[Found]:
    if (root / "leftImg8bit").is_dir() and (root / "gtFine").is_dir():
        return Found("cityscapes", "leftImg8bit/, gtFine/", {"root": str(root), "split": split})
    return None


def _coco_panoptic(root: Path, split: str) -> Optional[Found]:
    files = [
        p
        for p in _jsons(root / "annotations")
        if p.stem.startswith("panoptic_") and p.with_suffix("").is_dir()
    ]
    path = _prefer(files, split)
    if path is None:
        return None
    subset = path.stem.removeprefix("panoptic_")
    keys = {"annotations": str(path), "images": _images_dir(root, subset, subset.split("_")[-1])}
    return Found("coco_panoptic", f"annotations/{path.name} + {path.stem}/", keys)


def _coco(root: Path, split: str) -> Optional[Found]:
    def is_coco(p: Path) -> bool:
        text = _peek(p)
        return all(f'"{k}"' in text for k in ("images", "annotations", "categories", "segmentation"))

    path = _prefer([p for p in _jsons(root / "annotations") if is_coco(p)], split)
    if path is None:
        return None
    subset = path.stem.split("_", 1)[-1]  # instances_train2017 -> train2017
    keys = {"annotations": str(path), "images": _images_dir(root, subset)}
    return Found("coco", f"annotations/{path.name} with images, annotations, categories, segmentation", keys)


def _labelstudio(root: Path, split: str) -> Optional[Found]:
    def is_tasks(p: Path) -> bool:
        text = _peek(p).lstrip()
        return text.startswith("[") and '"annotations"' in text and '"data"' in text

    path = _prefer([p for p in _jsons(root) if is_tasks(p)], split)
    if path is None:
        return None
    return Found(
        "labelstudio",
        f"{path.name}: a list of tasks",
        {"annotations": str(path), "images": _images_dir(root)},
    )


def _labelme(root: Path, split: str) -> Optional[Found]:
    for p in _jsons(root):
        try:
            doc = json.loads(p.read_bytes()) if p.stat().st_size < 64 * PEEK else None
        except (OSError, ValueError):
            continue
        if isinstance(doc, dict) and isinstance(doc.get("shapes"), list):
            return Found("labelme", f"{p.name} with 'shapes'", {"root": str(root)})
    return None


def _cvat_xml(root: Path, split: str) -> Optional[Found]:
    # CVAT names it annotations.xml; datumaro's cvat exporter writes <subset>.xml
    files = sorted(root.glob("*.xml"), key=lambda p: (p.name != "annotations.xml", p.name))
    path = next((p for p in files if "<annotations>" in (t := _peek(p)) and "<version>" in t), None)
    if path is not None:
        return Found(
            "cvat_xml",
            f"{path.name} with <annotations><version>",
            {"annotations": str(path), "images": _images_dir(root)},
        )
    return None


def _pairs(root: Path, split: str) -> Optional[Found]:
    if (root / "images").is_dir() and (root / "masks").is_dir():
        return Found(
            "pairs", "images/, masks/", {"images": str(root / "images"), "masks": str(root / "masks")}
        )
    return None


SIGNATURES: tuple[tuple[str, str, Callable[[Path, str], Optional[Found]]], ...] = (
    ("cvat_mask", "labelmap.txt + SegmentationClass/", _cvat_mask),
    ("folder", "JPEGImages/ + SegmentationClass/ + ImageSets/", _voc_folder),
    ("roboflow", "_classes.csv in train/ or valid/", _roboflow),
    ("yolo", "data.yaml + labels/", _yolo),
    ("kitti", "training/image_2/ + training/semantic/", _kitti),
    ("cityscapes", "leftImg8bit/ + gtFine/", _cityscapes),
    ("camvid", "trainannot/, or label_colors.txt + train/", _camvid),
    ("coco_panoptic", "annotations/panoptic_*.json + its folder", _coco_panoptic),
    ("coco", "annotations/*.json with images, annotations, categories, segmentation", _coco),
    ("cvat_xml", "annotations.xml (or *.xml) with <annotations><version>", _cvat_xml),
    ("labelstudio", "a *.json list of tasks with annotations and data", _labelstudio),
    ("labelme", "*.json with shapes", _labelme),
    ("pairs", "images/ + masks/", _pairs),
)
"""(format, what is looked for, the check) in the order tried: the first match wins."""


def detect(root: str | Path, split: str) -> Optional[Found]:
    """Return the format root's files show (the first of SIGNATURES that matches), None for none;
    `split` is the split asked for (train, val), kept where the format has it."""
    root = Path(root)
    for _name, _looked_for, check in SIGNATURES:
        found = check(root, split)
        if found is not None:
            return found
    return None


def resolve_auto(cfg: Any, paths: Sequence[str] = ()) -> None:
    """Replace each data.train / data.val named 'auto' by the format its root's files show (detect),
    printing one line each; ConfigError naming the root and what was looked for when none matches."""
    for node in ("train", "val"):
        ds = cfg.data[node]
        if str(ds.name) != AUTO:
            continue
        source = ", ".join(paths) or "command line"
        root = Path(str(ds.root))
        if not root.is_dir():
            raise ConfigError(
                f"{source}: data.{node}.name=auto: directory {root} not found; set data.{node}.root"
            )
        split = node if str(ds.split) == SPLIT_DEFAULTS[node] else str(ds.split)
        found = detect(root, split)
        if found is None:
            looked = "; ".join(f"{name} ({what})" for name, what, _ in SIGNATURES)
            raise ConfigError(
                f"{source}: data.{node}.name=auto: {root} holds no export it knows; looked for {looked}"
            )
        ds.name = found.name
        for key, value in found.keys.items():
            ds[key] = value
        chosen = ", ".join(f"{k}: {v}" for k, v in {"name": found.name, **found.keys}.items())
        print(f"auto: data.{node}: {found.name} ({found.signature}) -> {{{chosen}}}", flush=True)
