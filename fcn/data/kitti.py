"""KITTI semantic segmentation (data_semantics.zip, Alhaija et al. 2018), read as the benchmark
distributes it and as datumaro's 'kitti' format (segmentation task) writes it.

Followed: the KITTI semantic segmentation benchmark's devkit (devkit_semantics: its labels are
Cityscapes' labels.py) and datumaro 1.13's datumaro/plugins/data_formats/kitti:

    <root>/training/image_2/000000_10.png       the images (200 with labels)
    <root>/training/semantic/000000_10.png      Cityscapes labelIds 0..33 (8-bit; datumaro may write 16-bit)
    <root>/training/semantic_rgb/, instance/    not read (colours and instances of the same labels)
    <root>/testing/image_2/                     no labels: not a split this reader serves

The labelIds are mapped through Cityscapes' labelId -> trainId table (fcn/data/cityscapes.py,
CITYSCAPES_TRAIN_IDS, the one predefined_configs/cityscapes_fcn8s.yml writes as data.label_map) as
mmsegmentation's and datumaro's KITTI readers do: the 19 classes train, every other Cityscapes id
and 255 read as data.ignore_index; an id that is no Cityscapes id is an error naming the mask.
data.<split>.split: training (or train). KITTI has no val split of its own: take a share of
training for validation, or another dataset.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional

import numpy as np

from fcn.config import VOID
from fcn.data.cityscapes import CITYSCAPES_LABEL_IDS, CITYSCAPES_TRAIN_IDS
from fcn.data.dataset import PairDataset
from fcn.data.listing import Listing
from fcn.data.masks import LabelMap, read_png_mask
from fcn.data.pairs import list_pairs_dirs
from fcn.data.splits import require_dir

KITTI_SPLITS = {"training": "training", "train": "training"}
HINT = "set data.<split>.root to the unzipped data_semantics (the folder holding training/ and testing/)"


def kitti_dirs(root: str | Path, split: str) -> tuple[Path, Path]:
    """Return (images folder, labelIds folder) of a KITTI split; ValueError for a split without labels."""
    if split not in KITTI_SPLITS:
        raise ValueError(
            f"KITTI split '{split}' is not one of training, train (testing/ has no labels to train or score on)"
        )
    base = Path(root) / KITTI_SPLITS[split]
    return base / "image_2", base / "semantic"


def list_kitti(root: str | Path, split: str) -> Listing:
    """Return the Listing of a KITTI split: every image_2 image with its semantic mask, sorted."""
    images, masks = kitti_dirs(root, split)
    for directory in (Path(root), images, masks):
        require_dir(directory, "KITTI", HINT)
    return list_pairs_dirs(images, masks)


def train_id_table(ignore_index: int = VOID) -> np.ndarray:
    """Return labelId -> trainId as a (65536,) int16 table: -1 for what is no Cityscapes id."""
    table = np.full(65536, -1, np.int16)
    table[:CITYSCAPES_LABEL_IDS] = ignore_index
    table[255] = ignore_index
    for label_id, train_id in CITYSCAPES_TRAIN_IDS.items():
        table[label_id] = train_id
    return table


class KittiSegmentation(PairDataset):
    """A KITTI semantic split (see the module doc): Cityscapes labelIds -> the 19 train ids."""

    def __init__(
        self,
        root: str | Path,
        split: str,
        transforms: Optional[Callable] = None,
        num_classes: Optional[int] = 19,
        ignore_index: int = VOID,
        labels: Optional[LabelMap] = None,
        listing: Optional[Listing] = None,
    ) -> None:
        listing = list_kitti(root, split) if listing is None else listing
        self._train_ids = train_id_table(ignore_index)
        self._init_from_listing(listing, root, split, transforms, num_classes, None, ignore_index, labels)

    def load_raw_mask(self, path: Path) -> np.ndarray:
        """Return the train ids of a labelIds mask (8- or 16-bit grey); ValueError naming an unknown id."""
        raw = read_png_mask(path, raw=True)
        ids = self._train_ids[raw]
        if ids.size and ids.min() < 0:
            unknown = sorted(np.unique(raw[ids < 0]).tolist())
            raise ValueError(f"{path}: label ids {unknown} are no Cityscapes labelIds (0..33, 255)")
        return ids.astype(np.uint8)
