"""Class names and palettes: PASCAL VOC's 21 classes and colour map, and palettes built on it."""

from __future__ import annotations

from functools import cache
from typing import Optional, Sequence

import numpy as np

VOC_CLASSES = (
    "background",
    "aeroplane",
    "bicycle",
    "bird",
    "boat",
    "bottle",
    "bus",
    "car",
    "cat",
    "chair",
    "cow",
    "diningtable",
    "dog",
    "horse",
    "motorbike",
    "person",
    "pottedplant",
    "sheep",
    "sofa",
    "train",
    "tvmonitor",
)
"""The 21 PASCAL VOC classes in label order (fcn.berkeleyvision.org data/pascal/classes.txt)."""


def voc_palette() -> np.ndarray:
    """Return PASCAL VOC's (256, 3) uint8 colour map: label bits interleaved into R, G, B.

    This is the devkit's VOClabelcolormap.m; label 255 (void) comes out as (224, 224, 192).
    """
    cmap = np.zeros((256, 3), dtype=np.uint8)
    for label in range(256):
        r = g = b = 0
        c = label
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        cmap[label] = (r, g, b)
    return cmap


def make_palette(colours: Optional[Sequence[Sequence[int]]] = None) -> np.ndarray:
    """Return a (256, 3) uint8 palette: the given colours first, VOC's colours for the other labels."""
    pal = voc_palette()
    if colours is not None and len(colours) > 0:
        arr = np.asarray([list(c) for c in colours], dtype=np.int64)
        if arr.ndim != 2 or arr.shape[1] != 3 or arr.shape[0] > 256 or arr.min() < 0 or arr.max() > 255:
            raise ValueError(
                f"palette must be at most 256 colours of three values in 0..255, got shape {arr.shape}"
            )
        pal[: len(arr)] = arr.astype(np.uint8)
    return pal


@cache
def announce_classes(name: str, names: tuple[str, ...], source: str) -> None:
    """Print, once per process, the classes a format took from its export's own file, on one line:
    "roboflow: 3 classes from train/_classes.csv: background=0, cat=1, dog=2"."""
    where = f" from {source}" if source else ""
    print(f"{name}: {len(names)} classes{where}: " + ", ".join(f"{n}={i}" for i, n in enumerate(names)))
