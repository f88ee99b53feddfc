"""Any dataset in PASCAL VOC layout: bring your own images, masks, split files and class list.

<root>/JPEGImages/<id>.jpg (or .jpeg, .png)
<root>/SegmentationClass/<id>.png       labels: palette ('P') or grayscale ('L') indices,
                                        or RGB colours converted through the palette
<root>/ImageSets/Segmentation/<split>.txt   one id per line
<root>/classes.txt (optional)           one class per line: name R G B, in label order

data.task=multilabel: <root>/SegmentationClass/<class name>/<id>.png, one binary mask per class of
data.classes ({0, 255} or {0, 1}), or <root>/SegmentationClass/<id>.npy (C x H x W 0/1).

The split is listed by fcn.data.listing.list_pairs, as every layout lists its pairs: a Listing of the
pairs found and a Problem per missing or unreadable file; the constructor raises the Listing's error.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np

from fcn.config import VOID, read_text
from fcn.data.dataset import PairDataset
from fcn.data.images import IMAGE_EXTENSIONS
from fcn.data.listing import Listing, list_pairs, multilabel_masks
from fcn.data.masks import LabelMap
from fcn.data.splits import require_dir


def read_classes(path: str | Path) -> tuple[list[str], list[list[int]]]:
    """Return (names, colours) of a classes file: one 'name R G B' line per class in label order ('#' comments)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"classes file {path} not found")
    names, colours = [], []
    for n, line in enumerate(read_text(path).splitlines(), 1):
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


def list_folder(root: str | Path, split: str, multilabel: Sequence[str] = ()) -> Listing:
    """Return the Listing of a VOC-layout folder's split; raise FileNotFoundError when a directory is missing.

    multilabel (data.task=multilabel: the class names): the masks are SegmentationClass/<class>/<id>.png
    (the first class's are listed, fcn.data.masks.multilabel_paths finds the others) or, without
    those folders, SegmentationClass/<id>.npy (C x H x W)."""
    root = Path(root)
    hint = "expected a VOC-layout dataset (JPEGImages/, SegmentationClass/, ImageSets/Segmentation/)"
    require_dir(root, "folder dataset", hint)
    for sub in ("JPEGImages", "SegmentationClass"):
        require_dir(root / sub, "folder dataset", hint)
    split_file = root / "ImageSets" / "Segmentation" / f"{split}.txt"
    masks, ext = multilabel_masks(root / "SegmentationClass", multilabel)
    return list_pairs(split_file, root / "JPEGImages", IMAGE_EXTENSIONS, masks, ext)


class FolderSegmentation(PairDataset):
    """A dataset in VOC layout (see the module doc); masks as index PNGs or RGB colours via `palette`.

    `palette` lists the class colours in label order (None: VOC's); `num_classes` (None: the
    palette's length if given, else not checked) bounds the labels a mask may hold besides ignore_index.
    """

    def __init__(
        self,
        root: str | Path,
        split: str,
        palette: Optional[Sequence[Sequence[int]] | np.ndarray] = None,
        transforms: Optional[Callable] = None,
        num_classes: Optional[int] = None,
        ignore_index: int = VOID,
        labels: Optional[LabelMap] = None,
        multilabel: Sequence[str] = (),
    ) -> None:
        listing = list_folder(root, split, multilabel)
        self._init_with_palette(listing, root, split, palette, transforms, num_classes, ignore_index, labels)
        self.multilabel = tuple(multilabel) or None
