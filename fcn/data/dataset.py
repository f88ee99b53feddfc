"""PairDataset: the one dataset class every layout reader builds on (image/mask pairs by id, raw
mask ids through the one LabelMap, the label check, the joint transforms)."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np

from fcn.config import VOID
from fcn.data.images import read_channels
from fcn.data.listing import Listing
from fcn.data.masks import (
    LabelMap,
    check_pair,
    colour_lookup,
    read_binary_mask,
    read_multilabel_mask,
    read_png_mask,
    read_sbd_mat,
)


class PairDataset:
    """Image/mask pairs listed by id; an item is (image, uint8 HxW mask) or transforms(image, mask).

    The image is what read_channels gives for `channels` (model.in_channels; build_dataset sets it):
    an RGB PIL image for 3-channel JPEG/PNG files, else an HxWxC array.

    A plain map-style dataset (torch's DataLoader needs only __len__ and __getitem__), so that
    importing the datasets does not import torch. `labels` (data.label_map / reduce_zero_label)
    translates each mask's raw ids before the label check.
    """

    def __init__(
        self,
        ids: list[str],
        images: list[Path],
        masks: list[Path],
        transforms: Optional[Callable] = None,
        num_classes: Optional[int] = None,
        lut: Optional[dict[int, int]] = None,
        ignore_index: int = VOID,
        labels: Optional[LabelMap] = None,
    ) -> None:
        self.ids = ids
        self.ignore_index = ignore_index
        self.images = images
        self.masks = masks
        self.transforms = transforms
        self.num_classes = num_classes
        self._lut = lut
        self.labels = labels if labels is not None else LabelMap(ignore_index=ignore_index)
        self.channels = 3
        self.multilabel: Optional[tuple[str, ...]] = None
        """data.task=multilabel: the classes, whose masks each item reads (read_multilabel_mask); the
        listing names the first class's mask (or the item's .npy). build_dataset sets it."""

    def _init_from_listing(
        self,
        listing: Listing,
        root: str | Path | None,
        split: str | None,
        transforms: Optional[Callable],
        num_classes: Optional[int],
        lut: Optional[dict[int, int]],
        ignore_index: int,
        labels: Optional[LabelMap],
    ) -> None:
        """Initialise a layout's dataset from its Listing (raising the Listing's error)
        and remember the root and split it was read from (None: a layout without them, e.g. pairs):
        what every layout's __init__ shares."""
        if listing.error is not None:
            raise listing.error
        PairDataset.__init__(
            self,
            listing.ids,
            listing.images,
            listing.masks,
            transforms,
            num_classes,
            lut,
            ignore_index,
            labels,
        )
        if root is not None:
            self.root, self.split = Path(root), split

    def _init_with_palette(
        self,
        listing: Listing,
        root: str | Path | None,
        split: str | None,
        palette: Optional[Sequence[Sequence[int]] | np.ndarray],
        transforms: Optional[Callable],
        num_classes: Optional[int],
        ignore_index: int,
        labels: Optional[LabelMap],
    ) -> None:
        """Initialise a dataset whose masks may be RGB colours (folder, pairs) from its Listing (raising
        the Listing's error): colours are read through `palette`, whose length is the class count
        when num_classes is not given."""
        if listing.error is not None:
            raise listing.error
        if num_classes is None and palette is not None and 0 < len(palette) < 256:
            num_classes = len(palette)
        lut = colour_lookup(palette, num_classes, ignore_index)
        self._init_from_listing(listing, root, split, transforms, num_classes, lut, ignore_index, labels)

    def __len__(self) -> int:
        return len(self.ids)

    def load_raw_mask(self, path: Path) -> np.ndarray:
        """Return the raw ids of the mask at `path` (.mat: SBD's GTcls; else a PNG mask, 16-bit allowed)."""
        if path.suffix == ".mat":
            return read_sbd_mat(path)
        if self.multilabel is not None:
            return read_multilabel_mask(path, self.multilabel, self.ignore_index)
        if self.labels.binary:
            return read_binary_mask(path)
        return read_png_mask(path, self._lut, raw=not self.labels.identity)

    def load_mask(self, path: Path) -> np.ndarray:
        """Return the uint8 class-index map at `path`: its raw ids through data.label_map / reduce_zero_label."""
        return self.labels(self.load_raw_mask(path), path)

    def __getitem__(self, index: int):
        image = read_channels(self.images[index], self.channels)
        mask = self.load_mask(self.masks[index])
        check_pair(image, mask, self.num_classes, self.masks[index], self.ignore_index)
        if self.transforms is not None:
            return self.transforms(image, mask)
        return image, mask

    def __repr__(self) -> str:
        return f"{type(self).__name__}({len(self)} images)"
