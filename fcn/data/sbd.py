"""SBD (Hariharan et al., benchmark_RELEASE) and the augmented VOC 2012 training set built from it."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional

from fcn.data.common import PairDataset, check_listed, colour_lookup, list_names, read_split, require_dir
from fcn.data.voc import voc_dir, voc_split_file

SBD_SPLITS = ("train", "val")


def sbd_dir(root: str | Path) -> Path:
    """Return <root>/benchmark_RELEASE/dataset, where the official benchmark.tgz extracts."""
    return Path(root) / "benchmark_RELEASE" / "dataset"


def _sbd_files(root: str | Path, split: str) -> tuple[list[str], list[Path], list[Path]]:
    """Return (ids, image paths, .mat paths) of an SBD split, checking every listed file exists."""
    base = sbd_dir(root)
    hint = f"set the dataset root to the directory holding benchmark_RELEASE/, or run: python -m fcn.data.download --root {root} --what sbd"
    require_dir(Path(root), "SBD", hint)
    require_dir(base, "SBD", hint)
    split_file = base / f"{split}.txt"
    ids = read_split(split_file)
    images = check_listed(ids, list_names(base / "img"), base / "img", ".jpg", split_file)
    masks = check_listed(ids, list_names(base / "cls"), base / "cls", ".mat", split_file)
    return ids, images, masks


class SBDSegmentation(PairDataset):
    """SBD: img/*.jpg with cls/*.mat label maps (GTcls.Segmentation); train (8,498 ids, the paper's) or val."""

    def __init__(
        self,
        root: str | Path,
        split: str,
        transforms: Optional[Callable] = None,
        num_classes: Optional[int] = 21,
    ) -> None:
        if split not in SBD_SPLITS:
            raise ValueError(f"SBD split '{split}' is not one of {', '.join(SBD_SPLITS)}")
        ids, images, masks = _sbd_files(root, split)
        super().__init__(ids, images, masks, transforms, num_classes)
        self.root = Path(root)
        self.split = split


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
    ) -> None:
        if split != "train":
            raise ValueError(f"voc_aug split '{split}' is not available: voc_aug has only 'train'")
        from fcn.data.voc import VOCSegmentation

        voc_train = VOCSegmentation(root, "train", num_classes=num_classes)
        voc_val = set(read_split(voc_split_file(root, "val")))
        sbd = [_sbd_files(root, s) for s in SBD_SPLITS]
        ids, images, masks = list(voc_train.ids), list(voc_train.images), list(voc_train.masks)
        voc = voc_dir(root)
        voc_masks, voc_images = list_names(voc / "SegmentationClass"), list_names(voc / "JPEGImages")
        seen = set(ids) | voc_val
        for sbd_ids, sbd_images, sbd_masks in sbd:
            for i, image, mask in zip(sbd_ids, sbd_images, sbd_masks):
                if i in seen:
                    continue
                seen.add(i)
                ids.append(i)
                if i + ".png" in voc_masks and i + ".jpg" in voc_images:
                    image, mask = voc / "JPEGImages" / f"{i}.jpg", voc / "SegmentationClass" / f"{i}.png"
                images.append(image)
                masks.append(mask)
        super().__init__(ids, images, masks, transforms, num_classes, colour_lookup(None, num_classes))
        self.root = Path(root)
        self.split = split
