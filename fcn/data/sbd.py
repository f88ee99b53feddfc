"""SBD (Hariharan et al., benchmark_RELEASE) and the augmented VOC 2012 training set built from it."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional

from fcn.config import VOID
from fcn.data.dataset import PairDataset
from fcn.data.listing import Listing, list_pairs, read_split_leniently
from fcn.data.masks import LabelMap, colour_lookup
from fcn.data.splits import list_names, require_dir
from fcn.data.voc import list_voc, voc_dir, voc_split_file

SBD_SPLITS = ("train", "val")


def sbd_dir(root: str | Path) -> Path:
    """Return <root>/benchmark_RELEASE/dataset, where the official benchmark.tgz extracts."""
    return Path(root) / "benchmark_RELEASE" / "dataset"


def list_sbd(root: str | Path, split: str) -> Listing:
    """Return the Listing of an SBD split (img/*.jpg, cls/*.mat); raise when the split or directory is wrong."""
    if split not in SBD_SPLITS:
        raise ValueError(f"SBD split '{split}' is not one of {', '.join(SBD_SPLITS)}")
    base = sbd_dir(root)
    hint = f"set the dataset root to the directory holding benchmark_RELEASE/, or run: python -m fcn.data.download --root {root} --what sbd"
    for directory in (Path(root), base, base / "img", base / "cls"):  # one error, not one per id
        require_dir(directory, "SBD", hint)
    return list_pairs(base / f"{split}.txt", base / "img", (".jpg",), base / "cls", ".mat")


def list_voc_aug(root: str | Path, split: str = "train") -> Listing:
    """Return the Listing of voc_aug: VOC 2012 train, then SBD train and val ids not seen before nor in VOC val.

    An id with a VOC 2012 image and mask uses them (PNG mask), the others SBD's (.mat). Problems
    of all four split files are kept, in that order.
    """
    if split != "train":
        raise ValueError(f"voc_aug split '{split}' is not available: voc_aug has only 'train'")
    listing = list_voc(root, "train")
    voc_val = read_split_leniently(voc_split_file(root, "val"))
    listing.add_problems(voc_val)
    voc = voc_dir(root)
    voc_masks, voc_images = list_names(voc / "SegmentationClass"), list_names(voc / "JPEGImages")
    seen = set(listing.ids) | set(voc_val.ids)
    for sbd_split in SBD_SPLITS:
        sbd = list_sbd(root, sbd_split)
        listing.add_problems(sbd)
        for i, image, mask in zip(sbd.ids, sbd.images, sbd.masks):
            if i in seen:
                continue
            seen.add(i)
            if i + ".png" in voc_masks and i + ".jpg" in voc_images:
                image, mask = voc / "JPEGImages" / f"{i}.jpg", voc / "SegmentationClass" / f"{i}.png"
            listing.ids.append(i)
            listing.images.append(image)
            listing.masks.append(mask)
    return listing


class SBDSegmentation(PairDataset):
    """SBD: img/*.jpg with cls/*.mat label maps (GTcls.Segmentation); train (8,498 ids, the paper's) or val."""

    def __init__(
        self,
        root: str | Path,
        split: str,
        transforms: Optional[Callable] = None,
        num_classes: Optional[int] = 21,
        ignore_index: int = VOID,
        labels: Optional[LabelMap] = None,
    ) -> None:
        self._init_from_listing(
            list_sbd(root, split), root, split, transforms, num_classes, None, ignore_index, labels
        )


class VOCAugSegmentation(PairDataset):
    """VOC 2012 train + SBD train + SBD val, minus VOC 2012 val (10,582 images with the real data).

    `root` holds both VOCdevkit/ and benchmark_RELEASE/. Ids come in the order VOC train, SBD train,
    SBD val (first occurrence kept); an id with a VOC 2012 mask uses VOC's PNG, the others SBD's .mat.
    """

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        transforms: Optional[Callable] = None,
        num_classes: Optional[int] = 21,
        ignore_index: int = VOID,
        labels: Optional[LabelMap] = None,
    ) -> None:
        lut = colour_lookup(None, num_classes, ignore_index)
        self._init_from_listing(
            list_voc_aug(root, split), root, split, transforms, num_classes, lut, ignore_index, labels
        )
