"""The class lists that labelling tools' exports carry in their own files (Roboflow's _classes.csv,
CamVid's label_colors.txt), read where the config needs their count and where the readers need the
names: here, because fcn/config imports nothing else of fcn and model.num_classes is inferred at load
time (FormatKeys.export_classes). Each reader returns [] when the file is not there and raises
ValueError naming the file and line when it is there but not as the tool writes it.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

ROBOFLOW_CLASSES_FILE = "_classes.csv"
ROBOFLOW_SPLIT_DIRS = {
    "train": ("train",),
    "val": ("valid", "val"),
    "valid": ("valid", "val"),
    "test": ("test",),
}
"""data.<split>.split -> the folders of a Roboflow export it may be (Roboflow names val 'valid')."""

CAMVID_COLOURS_FILE = "label_colors.txt"
CAMVID_VOID = "Void"
SEGNET_CAMVID_CLASSES = (
    "Sky",
    "Building",
    "Pole",
    "Road",
    "Pavement",
    "Tree",
    "SignSymbol",
    "Fence",
    "Car",
    "Pedestrian",
    "Bicyclist",
)
"""SegNet's 11 CamVid classes, indices 0..10 of its *annot/ PNGs; 11 is Unlabelled (Void), which
SegNet's prototxts and the configs built on them ignore (ignore_label: 11)."""


def roboflow_split_dir(root: str | Path, split: str) -> Path:
    """Return the folder of a Roboflow export that holds `split` (train, valid/val, test): the first
    that exists, else the first it may be (its absence is the listing's error)."""
    dirs = ROBOFLOW_SPLIT_DIRS.get(str(split), (str(split),))
    found = [Path(root) / d for d in dirs if (Path(root) / d).is_dir()]
    return found[0] if found else Path(root) / dirs[0]


def read_roboflow_classes(path: Path) -> list[str]:
    """Return the class names of a Roboflow _classes.csv (header 'Pixel Value, Class', one row per
    class) in pixel-value order; [] when there is no such file; ValueError naming the file and line
    for a row that is not 'value, name' or pixel values that are not 0..N-1 (each once)."""
    if not path.is_file():
        return []
    with open(path, newline="", encoding="utf-8-sig") as f:
        rows = [[cell.strip() for cell in row] for row in csv.reader(f)]
    by_value: dict[int, str] = {}
    for number, row in enumerate(rows, start=1):
        if not any(row) or (number == 1 and row[0].lower() == "pixel value"):
            continue
        if len(row) < 2 or not row[0].isdigit() or not row[1]:
            raise ValueError(f"{path}: line {number} {','.join(row)!r} is not 'pixel value, class name'")
        if int(row[0]) in by_value:
            raise ValueError(f"{path}: line {number}: pixel value {row[0]} is listed twice")
        by_value[int(row[0])] = row[1]
    if sorted(by_value) != list(range(len(by_value))):
        raise ValueError(
            f"{path}: pixel values {sorted(by_value)} are not 0..{len(by_value) - 1}; the masks' grey "
            "values index the classes, so every value from 0 up needs its row"
        )
    return [by_value[v] for v in range(len(by_value))]


def read_label_colors(path: Path) -> list[tuple[str, tuple[int, int, int]]]:
    """Return the (name, (R, G, B)) rows of a CamVid label_colors.txt ('R G B Name' lines, as the
    original CamVid and datumaro's camvid format write it) in file order; [] when there is no such
    file; ValueError naming the file and line for a line that is not three values 0..255 and a name."""
    if not path.is_file():
        return []
    rows = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        parts = line.split()
        if not parts or parts[0].startswith("#"):
            continue
        if len(parts) < 4 or not all(p.isdigit() and int(p) <= 255 for p in parts[:3]):
            raise ValueError(f"{path}: line {number} {line.strip()!r} is not 'R G B Name' (values 0..255)")
        rows.append((" ".join(parts[3:]), (int(parts[0]), int(parts[1]), int(parts[2]))))
    return rows


def _quiet(read, path: Path) -> tuple[list[str], str]:
    """Return (names, path) of read(path), ([], '') when it is absent or unreadable: at load time
    the reader says why, naming the file, when the split is listed."""
    try:
        names = read(path)
    except (OSError, ValueError):
        return [], ""
    return (names, str(path)) if names else ([], "")


def roboflow_classes(ds: Any) -> tuple[list[str], str]:
    """Return (class names, the _classes.csv they come from) of a 'roboflow' split; ([], '') without one."""
    return _quiet(read_roboflow_classes, roboflow_split_dir(ds.root, ds.split) / ROBOFLOW_CLASSES_FILE)


def camvid_names(path: Path) -> list[str]:
    """Return the class names of a label_colors.txt less CamVid's Void (which is ignore_index)."""
    return [name for name, _ in read_label_colors(path) if name != CAMVID_VOID]


def camvid_classes(ds: Any) -> tuple[list[str], str]:
    """Return (class names, their file) of a 'camvid' root: label_colors.txt's less Void when the
    root holds one, else SegNet's 11 (source '')."""
    names, source = _quiet(camvid_names, Path(ds.root) / CAMVID_COLOURS_FILE)
    return (names, source) if names else (list(SEGNET_CAMVID_CLASSES), "")
