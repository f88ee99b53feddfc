"""The classes a labelling tool's export names in its own files, read when the config is loaded.

A format whose export names its classes (CVAT's labelmap.txt, the <labels> of CVAT's XML,
Roboflow's _classes.csv, CamVid's label_colors.txt, a COCO panoptic JSON's categories) gives them
through FormatKeys.export_classes (fcn/config/formats.py): the config loading counts them for
model.num_classes, and fcn.data.class_names / palette take the names and colours when data.classes
is empty. They live in the config layer because both need them and fcn/config imports nothing else
of fcn; each reader returns ExportClasses or raises ValueError / OSError in one line naming the file.

Followed: CVAT's documentation of "Segmentation mask 1.1" (docs.cvat.ai, dataset_management/formats/
format-smask, CVAT v2.x) and of the XML annotation format 1.1 (docs.cvat.ai/docs/other/xml_format),
and datumaro 1.13's VOC label map reader (plugins/data_formats/voc/format.py), which CVAT exports with.
"""

from __future__ import annotations

import csv
import functools
import json
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

Colour = Optional[tuple[int, int, int]]


@dataclass(frozen=True)
class ExportClasses:
    """The class names an export's file lists, in label order, their colours and where they came from."""

    names: tuple[str, ...]
    colours: tuple[Colour, ...]  # None: the file gives the label no colour
    source: Path  # the file they were read from (the one-line mapping names it)
    about: str = ""  # how they were read, when not simply from source: "the labels used in <file> (sorted)"

    def where(self) -> str:
        """Return where the classes came from, for the one-line mapping."""
        return self.about or str(self.source)


def _text(path: Path) -> str:
    """Return a text file's contents as UTF-8 (a byte-order mark allowed); ValueError naming the file otherwise."""
    try:
        return path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path}: not UTF-8 text (byte {exc.start}); save it as UTF-8") from None


def read_labelmap(path: str | Path) -> ExportClasses:
    """Return the classes of a CVAT / datumaro labelmap.txt: one 'name:r,g,b:parts:actions' line per
    label in label order ('#' lines are comments; an empty colour field gives the label no colour)."""
    path = Path(path)
    names: list[str] = []
    colours: list[Colour] = []
    for n, line in enumerate(_text(path).splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        fields = line.split(":")
        name, rgb = fields[0].strip(), fields[1].strip() if len(fields) > 1 else ""
        try:
            colour = tuple(int(c) for c in rgb.split(",")) if rgb else None
        except ValueError:
            colour = ()
        if not name or (colour is not None and (len(colour) != 3 or not all(0 <= c <= 255 for c in colour))):
            raise ValueError(f"{path}:{n}: expected 'name:r,g,b::' with r, g, b in 0..255, got {line!r}")
        if name in names:
            raise ValueError(f"{path}:{n}: label '{name}' is listed twice")
        names.append(name)
        colours.append(colour)  # type: ignore[arg-type]
    if not names:
        raise ValueError(f"{path}: lists no labels")
    return ExportClasses(tuple(names), tuple(colours), path)


def _hex_colour(text: str) -> Colour:
    """Return the (r, g, b) of CVAT's '#rrggbb' label colour, None for anything else."""
    text = text.strip()
    if len(text) == 7 and text[0] == "#":
        try:
            return tuple(int(text[i : i + 2], 16) for i in (1, 3, 5))  # type: ignore[return-value]
        except ValueError:
            return None
    return None


def read_cvat_xml_labels(path: str | Path) -> ExportClasses:
    """Return the classes of a CVAT for images 1.1 XML: 'background' (what no shape covers) first,
    then the <label>s of its <meta> (task, job or project) in file order, with their <color>s.

    A label named 'background' takes the first place itself, as CVAT's mask export puts it (datumaro's
    VOC exporter moves it first). Only the <meta> element is read, so a large file costs little here.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"CVAT XML {path} not found")
    meta = None
    try:
        for _event, elem in ET.iterparse(path, events=("end",)):
            if elem.tag == "meta":
                meta = elem
                break
    except ET.ParseError as exc:
        raise ValueError(f"{path}: not valid XML ({exc})") from None
    labels = meta.find(".//labels") if meta is not None else None
    if labels is None:
        raise ValueError(f"{path}: no <meta> ... <labels> (is it a 'CVAT for images 1.1' export?)")
    found: dict[str, Colour] = {}
    for label in labels.findall("label"):
        name = (label.findtext("name") or "").strip()
        if (label.findtext("parent") or "").strip():  # a skeleton's point: no pixels of its own
            continue
        if not name:
            raise ValueError(f"{path}: a <label> in <meta> has no <name>")
        found.setdefault(name, _hex_colour(label.findtext("color") or ""))
    background = found.pop("background", (0, 0, 0))
    names = ("background", *found)
    return ExportClasses(names, (background, *found.values()), path)


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


def roboflow_classes(ds: Any) -> Optional[ExportClasses]:
    """Return the classes of a 'roboflow' split's _classes.csv (no colours: Roboflow writes none);
    None without one."""
    path = roboflow_split_dir(ds.root, ds.split) / ROBOFLOW_CLASSES_FILE
    names = read_roboflow_classes(path)
    return ExportClasses(tuple(names), (None,) * len(names), path) if names else None


def camvid_classes(ds: Any) -> Optional[ExportClasses]:
    """Return the classes of a 'camvid' root's label_colors.txt less Void (which is ignore_index),
    with their colours; None without one (SegNet's 11 classes, the format's own, stand)."""
    path = Path(str(ds.root)) / CAMVID_COLOURS_FILE
    rows = [(name, colour) for name, colour in read_label_colors(path) if name != CAMVID_VOID]
    if not rows:
        return None
    return ExportClasses(tuple(n for n, _ in rows), tuple(c for _, c in rows), path)


@functools.lru_cache(maxsize=8)
def _json_categories(path: str, stamp: tuple) -> ExportClasses:
    """Return the categories of a COCO (panoptic) JSON in id order (read once while the file is unchanged)."""
    try:
        meta = json.loads(Path(path).read_bytes())
    except ValueError as exc:
        raise ValueError(f"{path}: not valid JSON ({exc})") from None
    categories = meta.get("categories") if isinstance(meta, dict) else None
    if not isinstance(categories, list) or not all(
        isinstance(c, dict) and "id" in c and "name" in c for c in categories
    ):
        raise ValueError(f"{path}: no 'categories' list of {{id, name}} entries")
    ordered = sorted(categories, key=lambda c: c["id"])

    def colour(c: dict) -> Colour:
        rgb = c.get("color")
        ok = (
            isinstance(rgb, list) and len(rgb) == 3 and all(isinstance(v, int) and 0 <= v <= 255 for v in rgb)
        )
        return tuple(rgb) if ok else None  # type: ignore[return-value]

    return ExportClasses(
        tuple(str(c["name"]) for c in ordered), tuple(colour(c) for c in ordered), Path(path)
    )


def panoptic_categories(ds: Any) -> Optional[ExportClasses]:
    """Return the categories of a COCO panoptic JSON (data.<split>.annotations) in id order, with
    their colours; OSError when it is not there."""
    path = Path(str(ds.annotations))
    st = path.stat()
    return _json_categories(str(path), (st.st_size, st.st_mtime_ns))


# Label Studio's JSON export (Export > JSON) and labelme's folder name no classes in a file: the
# labels their regions use are the classes, scanned here (the readers in fcn/data use the same
# functions, so both sides agree).
LABELSTUDIO_KINDS = {"brushlabels": "brushlabels", "polygonlabels": "polygonlabels"}
"""Label Studio result types that are regions of a class: the value key holding their label."""


def chosen_annotation(task: dict) -> Optional[dict]:
    """Return a Label Studio task's most recent annotation that was not cancelled (None: there is none)."""
    good = [
        (str(a.get("updated_at") or a.get("created_at") or ""), n, a)
        for n, a in enumerate(task.get("annotations") or [])
        if isinstance(a, dict) and not a.get("was_cancelled")
    ]
    return max(good, key=lambda t: t[:2])[2] if good else None


def read_labelstudio_export(path: Path) -> list:
    """Return the tasks of a Label Studio JSON export; ValueError naming the file when it is not one."""
    try:
        doc = json.loads(path.read_bytes())
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: file not found (data.<split>.annotations)") from None
    except json.JSONDecodeError as exc:
        raise ValueError(
            f"{path}: not valid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}"
        ) from None
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    if not isinstance(doc, list) or not all(
        isinstance(t, dict) and isinstance(t.get("data"), dict) for t in doc
    ):
        raise ValueError(
            f"{path}: not Label Studio's JSON export: expected a list of tasks with 'data' (Export > JSON, "
            "not JSON-MIN or COCO)"
        )
    return doc


def region_label(result: dict, where: str) -> Optional[str]:
    """Return the one label of a Label Studio brush or polygon result (None: another type of result);
    ValueError naming `where` for a region without exactly one label."""
    kind = LABELSTUDIO_KINDS.get(str(result.get("type", "")).lower())
    value = result.get("value")
    if kind is None or not isinstance(value, dict):
        return None
    labels = value.get(kind)
    if not isinstance(labels, list) or len(labels) != 1:
        raise ValueError(f"{where}: a {kind} region needs one label in value.{kind}, got {labels!r}")
    return str(labels[0])


def used_labels(tasks: list) -> set[str]:
    """Return the labels of the brush and polygon regions of each task's chosen annotation."""
    seen = set()
    for task in tasks:
        ann = chosen_annotation(task)
        for r in (ann or {}).get("result") or []:
            try:
                label = region_label(r, "") if isinstance(r, dict) else None
            except ValueError:
                continue  # the listing reports it
            if label is not None:
                seen.add(label)
    return seen


@functools.lru_cache(maxsize=8)
def _labelstudio_names(path: str, stamp: tuple) -> tuple[str, ...]:
    seen = used_labels(read_labelstudio_export(Path(path))) - {"background"}
    return ("background", *sorted(seen))


def labelstudio_classes(ds: Any) -> ExportClasses:
    """Return the classes of a Label Studio JSON export: background and the labels its regions use,
    sorted (read once while the file is unchanged); OSError / ValueError naming the file."""
    path = Path(str(ds.annotations))
    st = path.stat()
    names = _labelstudio_names(str(path), (st.st_size, st.st_mtime_ns))
    return ExportClasses(names, (None,) * len(names), path, f"the labels used in {path} (sorted)")


LABELME_BACKGROUND = ("_background_", "background")
"""labelme labels that draw class 0 (labelme2voc.py's `_background_`, and the plain word)."""
LABELME_IGNORE = "__ignore__"
"""The label labelme2voc.py gives id -1, written as the void value: data.ignore_index here."""
LABELME_LABELS_FILE = "labels.txt"


def labelme_labels_txt(root: Path) -> Optional[list[str]]:
    """Return the classes root/labels.txt names in labelme2voc's convention (`__ignore__` dropped,
    `_background_` class 0), or None when there is none; ValueError naming it when 0 is not background."""
    path = root / LABELME_LABELS_FILE
    if not path.is_file():
        return None
    names = [line.strip() for line in _text(path).splitlines() if line.strip()]
    names = [n for n in names if n != LABELME_IGNORE]
    if not names or names[0] not in LABELME_BACKGROUND:
        raise ValueError(
            f"{path}: the first class (after __ignore__) must be _background_, as labelme2voc.py requires"
        )
    return names


@functools.lru_cache(maxsize=8)
def _labelme_names(root: str, stamp: tuple) -> tuple[tuple[str, ...], Path]:
    path = Path(root)
    own = labelme_labels_txt(path)
    if own is not None:
        return tuple(own), path / LABELME_LABELS_FILE
    seen = set()
    for p in sorted(q for q in path.iterdir() if q.suffix.lower() == ".json" and q.is_file()):
        try:
            doc = json.loads(p.read_bytes())
        except (ValueError, UnicodeDecodeError):
            continue  # the listing reports it
        shapes = doc.get("shapes") if isinstance(doc, dict) else None
        if isinstance(shapes, list):
            seen.update(str(s.get("label")) for s in shapes if isinstance(s, dict))
    seen -= {*LABELME_BACKGROUND, LABELME_IGNORE}
    return ("background", *sorted(seen)), path


def labelme_classes(ds: Any) -> ExportClasses:
    """Return the classes of a labelme folder: its labels.txt (labelme2voc's layout), else background
    and the labels its JSON files use, sorted; OSError when root is no directory."""
    root = Path(str(ds.root))
    stamp = tuple((p.name, p.stat().st_mtime_ns) for p in sorted(root.iterdir()))
    names, source = _labelme_names(str(root), stamp)
    about = "" if source.name == LABELME_LABELS_FILE else f"the labels of the JSON files in {root} (sorted)"
    return ExportClasses(names, (None,) * len(names), source, about)


YOLO_YAML = "data.yaml"
YOLO_SPLITS = {"train": "train", "val": "val", "valid": "val", "test": "test"}
"""data.<split>.split -> the key of data.yaml that names its images (Roboflow calls val 'valid')."""


@functools.lru_cache(maxsize=8)
def _yolo_yaml(path: str, stamp: tuple) -> dict:
    import yaml  # PyYAML: OmegaConf's own dependency, already loaded with the config

    try:
        doc = yaml.safe_load(_text(Path(path)))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ValueError(f"{path}: not valid YAML{where}") from None
    if not isinstance(doc, dict):
        raise ValueError(f"{path}: expected a mapping with 'names' (and path, train, val, test)")
    return doc


def read_yolo_yaml(root: str | Path) -> tuple[Path, dict]:
    """Return (the file, its mapping) of an Ultralytics YOLO export's data.yaml in root;
    FileNotFoundError naming it when there is none, ValueError when it is not a YAML mapping."""
    path = Path(root) / YOLO_YAML
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: no such file; set data.<split>.root to the folder holding the export's data.yaml"
        )
    st = path.stat()
    return path, _yolo_yaml(str(path), (st.st_size, st.st_mtime_ns))


def yolo_names(path: Path, doc: dict) -> tuple[str, ...]:
    """Return the class names of a data.yaml by class id: `names` as a list or {id: name} with ids
    0..n-1 (`nc` ids named class0.. as Ultralytics does when only nc is given); ValueError naming
    the file when they are neither, or when nc disagrees."""
    names, nc = doc.get("names"), doc.get("nc")
    if isinstance(names, dict):
        try:
            by_id = {int(k): str(v) for k, v in names.items()}
        except (TypeError, ValueError):
            raise ValueError(f"{path}: names must map class ids 0, 1, ... to names") from None
        if sorted(by_id) != list(range(len(by_id))):
            raise ValueError(f"{path}: names' ids {sorted(by_id)} are not 0..{len(by_id) - 1}")
        found = tuple(by_id[i] for i in range(len(by_id)))
    elif isinstance(names, list):
        found = tuple(str(n) for n in names)
    elif names is None and isinstance(nc, int) and nc > 0:
        found = tuple(f"class{i}" for i in range(nc))
    else:
        raise ValueError(f"{path}: needs 'names' (a list, or {{id: name}}) or 'nc'")
    if not found:
        raise ValueError(f"{path}: names lists no classes")
    if nc is not None and nc != len(found):
        raise ValueError(f"{path}: nc is {nc} but names lists {len(found)} classes")
    return found


def yolo_classes(ds: Any) -> Optional[ExportClasses]:
    """Return the classes of a 'yolo' root's data.yaml: 'background' (what no polygon covers), then
    its names by class id (class k is label k + 1); no colours (YOLO writes none)."""
    path, doc = read_yolo_yaml(str(ds.root))
    names = ("background", *yolo_names(path, doc))
    return ExportClasses(names, (None,) * len(names), path)


def cityscapes_classes(ds: Any) -> Optional[ExportClasses]:
    """Return the classes of a 'cityscapes' export's label_colors.txt, as datumaro 1.13's cityscapes
    format reads what its exporter writes ('R G B name' lines, or a bare name without a colour):
    the label coloured 0 0 0 first (else 'background', which the exporter leaves out of the file,
    added first), then the others in file order, the gtFine *_labelIds.png values by that order;
    None without the file (the official archives: their labelIds go through data.label_map);
    FileNotFoundError when data.<split>.root is no directory (the export is not on this machine)."""
    if not Path(str(ds.root)).is_dir():
        raise FileNotFoundError(f"cityscapes: directory {ds.root} not found")
    path = Path(str(ds.root)) / CAMVID_COLOURS_FILE
    if not path.is_file():
        return None
    rows: dict[str, Colour] = {}
    for number, line in enumerate(_text(path).splitlines(), start=1):
        parts = line.split()
        if not parts or parts[0].startswith("#"):
            continue
        if len(parts) >= 4 and all(p.isdigit() and int(p) <= 255 for p in parts[:3]):
            name, colour = " ".join(parts[3:]), tuple(int(p) for p in parts[:3])
        elif len(parts) == 1:
            name, colour = parts[0], None
        else:
            raise ValueError(
                f"{path}: line {number} {line.strip()!r} is not 'R G B name' (values 0..255) or 'name'"
            )
        if name in rows:
            raise ValueError(f"{path}: line {number}: label '{name}' is listed twice")
        rows[name] = colour  # type: ignore[assignment]
    if not rows:
        raise ValueError(f"{path}: lists no labels")
    black = next((n for n, c in rows.items() if c == (0, 0, 0)), None)
    if black is None:  # datumaro's make_cityscapes_categories adds it, black where labels have colours
        black = "background"
        rows.setdefault(black, (0, 0, 0) if any(c is not None for c in rows.values()) else None)
    ordered = {black: rows.pop(black), **rows}
    return ExportClasses(tuple(ordered), tuple(ordered.values()), path)
