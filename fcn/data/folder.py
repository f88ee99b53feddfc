"""Any dataset in PASCAL VOC layout: bring your own images, masks, split files and class list.

<root>/JPEGImages/<id>.jpg (or .jpeg, .png)
<root>/SegmentationClass/<id>.png       labels: palette ('P') or grayscale ('L') indices,
                                        or RGB colours converted through the palette
<root>/ImageSets/Segmentation/<split>.txt   one id per line
<root>/classes.txt (optional)           one class per line: name R G B, in label order
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np

from fcn.data.common import (
    IMAGE_EXTENSIONS,
    PairDataset,
    check_listed,
    colour_lookup,
    list_names,
    read_split,
    require_dir,
)


def read_classes(path: str | Path) -> tuple[list[str], list[list[int]]]:
    """Return (names, colours) of a classes file: one 'name R G B' line per class in label order ('#' comments)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"classes file {path} not found")
    names, colours = [], []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        words = line.split("#", 1)[0].split()
        if not words:
            continue
        try:
            rgb = [int(w) for w in words[1:]]
        except ValueError:
            rgb = []
        if len(words) != 4 or not all(0 <= c <= 255 for c in rgb) or len(rgb) != 3:
            raise ValueError(
                f"{path}:{n}: expected 'name R G B' with R, G, B in 0..255, got {line.strip()!r}"
            )
        names.append(words[0])
        colours.append(rgb)
    if not names:
        raise ValueError(f"classes file {path} lists no classes")
    return names, colours


def _find_images(ids: list[str], directory: Path, split_file: Path) -> list[Path]:
    """Return the image of each id (first of .jpg, .jpeg, .png present); raise naming the missing ones."""
    names = list_names(directory)
    found, missing = [], []
    for i in ids:
        name = next((i + ext for ext in IMAGE_EXTENSIONS if i + ext in names), None)
        if name is None:
            missing.append(i)
        else:
            found.append(directory / name)
    if missing:
        raise FileNotFoundError(
            f"{len(missing)} of {len(ids)} ids listed in {split_file} have no image in {directory} "
            f"(e.g. {missing[0]} with {'/'.join(IMAGE_EXTENSIONS)}); restore the files or fix the split file"
        )
    return found


class FolderSegmentation(PairDataset):
    """A dataset in VOC layout (see the module doc); masks as index PNGs or RGB colours via `palette`.

    `palette` lists the class colours in label order (None: VOC's); `num_classes` (None: the
    palette's length if given, else not checked) bounds the labels a mask may hold besides 255.
    """

    def __init__(
        self,
        root: str | Path,
        split: str,
        palette: Optional[Sequence[Sequence[int]] | np.ndarray] = None,
        transforms: Optional[Callable] = None,
        num_classes: Optional[int] = None,
    ) -> None:
        root = Path(root)
        hint = "expected a VOC-layout dataset (JPEGImages/, SegmentationClass/, ImageSets/Segmentation/)"
        require_dir(root, "folder dataset", hint)
        for sub in ("JPEGImages", "SegmentationClass"):
            require_dir(root / sub, "folder dataset", hint)
        split_file = root / "ImageSets" / "Segmentation" / f"{split}.txt"
        ids = read_split(split_file)
        images = _find_images(ids, root / "JPEGImages", split_file)
        masks = check_listed(
            ids, list_names(root / "SegmentationClass"), root / "SegmentationClass", ".png", split_file
        )
        if num_classes is None and palette is not None and 0 < len(palette) < 256:
            num_classes = len(palette)
        super().__init__(ids, images, masks, transforms, num_classes, colour_lookup(palette, num_classes))
        self.root = root
        self.split = split
