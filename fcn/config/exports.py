"""The classes a labelling tool's export names in its own files, read when the config is loaded.

A format whose export names its classes (CVAT's labelmap.txt, the <labels> of CVAT's XML) gives
them through FormatKeys.export_classes (fcn/config/formats.py): the config loading counts them for
model.num_classes, and fcn.data.class_names / palette take the names and colours when data.classes
is empty. They live in the config layer because both need them and fcn/config imports nothing else
of fcn; each reader returns ExportClasses or raises ValueError / OSError in one line naming the file.

Followed: CVAT's documentation of "Segmentation mask 1.1" (docs.cvat.ai, dataset_management/formats/
format-smask, CVAT v2.x) and of the XML annotation format 1.1 (docs.cvat.ai/docs/other/xml_format),
and datumaro 1.13's VOC label map reader (plugins/data_formats/voc/format.py), which CVAT exports with.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

Colour = Optional[tuple[int, int, int]]


@dataclass(frozen=True)
class ExportClasses:
    """The class names an export's file lists, in label order, their colours and where they came from."""

    names: tuple[str, ...]
    colours: tuple[Colour, ...]  # None: the file gives the label no colour
    source: Path  # the file they were read from (the one-line mapping names it)


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
