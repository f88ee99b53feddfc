"""PASCAL VOC 2012 segmentation, including the paper's seg11valid validation set."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional

from fcn.config import VOID
from fcn.data.dataset import PairDataset
from fcn.data.listing import Listing, list_pairs
from fcn.data.masks import LabelMap, colour_lookup
from fcn.data.splits import require_dir

VOC_SPLITS = ("train", "val", "trainval", "seg11valid")
SEG11VALID = "seg11valid.txt"
"""The paper's validation ids (736 VOC 2011 val images not in SBD train), kept at <root>/seg11valid.txt."""


def voc_dir(root: str | Path) -> Path:
    """Return <root>/VOCdevkit/VOC2012, where the official archive extracts."""
    return Path(root) / "VOCdevkit" / "VOC2012"


def voc_split_file(root: str | Path, split: str) -> Path:
    """Return the id list of a VOC split: ImageSets/Segmentation/<split>.txt, or <root>/seg11valid.txt."""
    if split == "seg11valid":
        # The download places the authors' list beside VOCdevkit/; a copy inside the devkit also works.
        inside = voc_dir(root) / "ImageSets" / "Segmentation" / SEG11VALID
        beside = Path(root) / SEG11VALID
        if not beside.is_file() and inside.is_file():
            return inside
        if not beside.is_file():
            raise FileNotFoundError(
                f"seg11valid: {beside} not found; run: python -m fcn.data.download --root {root} --what seg11valid"
            )
        return beside
    return voc_dir(root) / "ImageSets" / "Segmentation" / f"{split}.txt"


def list_voc(root: str | Path, split: str) -> Listing:
    """Return the Listing of a VOC 2012 split; raise when the split name or the devkit directory is wrong."""
    if split not in VOC_SPLITS:
        raise ValueError(f"VOC split '{split}' is not one of {', '.join(VOC_SPLITS)}")
    base = voc_dir(root)
    hint = f"set the dataset root to the directory holding VOCdevkit/, or run: python -m fcn.data.download --root {root} --what voc2012"
    # A missing image or mask directory is one error, not a missing file per listed id.
    for directory in (Path(root), base, base / "JPEGImages", base / "SegmentationClass"):
        require_dir(directory, "VOC 2012", hint)
    try:
        split_file = voc_split_file(root, split)
    except FileNotFoundError as exc:  # seg11valid.txt comes with its own download hint
        listing = Listing()
        listing.fail(Path(root) / SEG11VALID, exc)
        return listing
    return list_pairs(split_file, base / "JPEGImages", (".jpg",), base / "SegmentationClass", ".png")


class VOCSegmentation(PairDataset):
    """PASCAL VOC 2012 segmentation: JPEGImages/*.jpg with SegmentationClass/*.png palette masks (255 = void).

    `root` holds VOCdevkit/VOC2012/ as the official archive extracts; splits are train, val,
    trainval (ImageSets/Segmentation/) and seg11valid (the FCN paper's validation set).
    """

    def __init__(
        self,
        root: str | Path,
        split: str,
        transforms: Optional[Callable] = None,
        num_classes: Optional[int] = 21,
        ignore_index: int = VOID,
        labels: Optional[LabelMap] = None,
    ) -> None:
        # Masks are palette PNGs; a copy saved as RGB colours is converted through VOC's palette.
        lut = colour_lookup(None, num_classes, ignore_index)
        self._init_from_listing(
            list_voc(root, split), root, split, transforms, num_classes, lut, ignore_index, labels
        )
