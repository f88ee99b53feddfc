"""Images and masks in two folders, paired by file stem: the layout of CVAT's and Roboflow's mask
exports and of most public sets. No VOC tree, no split files to write.

    <images>/abc.jpg    (or .jpeg, .png, .tif, .tiff, .npy: N-channel images as in a folder dataset)
    <masks>/abc.png     labels: palette ('P') or grayscale indices (16-bit allowed), or RGB
                        colours converted through data.palette, as a folder dataset's masks
    <ids> (optional)    one stem per line: the split's images, each needing its image and mask

    data:
      train: {name: pairs, images: my_set/train/images, masks: my_set/train/masks}
      val: {name: pairs, images: my_set/val/images, masks: my_set/val/masks, ids: my_set/val.txt}
      classes: [background, road, car]

data.task=multilabel: <masks>/<class name>/abc.png, one binary mask per class of data.classes
({0, 255} or {0, 1}), or <masks>/abc.npy (C x H x W 0/1).

Masks exported with a suffix (Roboflow: abc.jpg <-> abc_mask.png) take mask_suffix: _mask; with a
suffix, images and masks may be the same folder. Paths are relative to the current directory.

Without ids the split is every image that has a mask, sorted by stem; an image without a mask and
a mask without an image are problems that python -m fcn.data.check names, and training warns of
them in one line, but they do not stop it. No pair at all is the error, naming both folders, and so
are two images of one stem (abc.jpg and abc.png: which one the mask labels is not known). With ids,
every listed stem must have both files, as a VOC split must (fcn.data.listing.list_pairs).
data.label_map, reduce_zero_label and ignore_index apply after this reader, as after every other.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np

from fcn.config import VOID
from fcn.data.dataset import PairDataset
from fcn.data.images import IMAGE_EXTENSIONS
from fcn.data.listing import Listing, Problem, add_missing, multilabel_masks, read_split_leniently
from fcn.data.masks import LabelMap
from fcn.data.splits import list_names, require_dir

MASK_EXTENSION = ".png"
HINT = "set data.<split>.images and data.<split>.masks to the folders of the images and of the masks"


def _stem(name: str, extensions: Sequence[str]) -> Optional[str]:
    """Return the stem of a file name with one of `extensions` (any case), else None (hidden files too)."""
    if name.startswith("."):  # .DS_Store, macOS's ._abc.png, the class-count cache
        return None
    stem, dot, ext = name.rpartition(".")
    return stem if dot and stem and f".{ext.lower()}" in extensions else None


def _files_by_stem(
    directory: Path, stem_of: Callable[[str], Optional[str]], kind: str, listing: Listing, keep: str = ""
) -> dict[str, Path]:
    """Return {stem: file} of the files in directory that stem_of names; two files of one stem are a
    problem and fail the listing (the message ends with keep, what to keep)."""
    files: dict[str, Path] = {}
    for name in sorted(list_names(directory)):
        stem = stem_of(name)
        if stem is None:
            continue
        if stem in files:
            first = files[stem]
            listing.problems.append(
                Problem(directory / name, f"another {kind} of stem '{stem}': {first.name}")
            )
            if listing.error is None:
                listing.error = ValueError(
                    f"pairs dataset: {first} and {directory / name} are two {kind}s of stem '{stem}'; "
                    f"keep one of them{keep}"
                )
            continue
        files[stem] = directory / name
    return files


def list_images(images_dir: Path, masks_dir: Path, mask_suffix: str, listing: Listing) -> dict[str, Path]:
    """Return {stem: image} of the images in images_dir; two images of one stem fail the listing.

    When masks_dir is images_dir, the files named like masks (<stem><mask_suffix>.png) are not images.
    """
    same_dir = images_dir.resolve() == masks_dir.resolve()

    def stem_of(name: str) -> Optional[str]:
        if same_dir and mask_stem(name, mask_suffix) is not None:
            return None
        return _stem(name, IMAGE_EXTENSIONS)

    return _files_by_stem(images_dir, stem_of, "image", listing, " (a mask labels one image)")


def mask_stem(name: str, mask_suffix: str, ext: str = MASK_EXTENSION) -> Optional[str]:
    """Return the image stem a mask file name stands for (<stem><mask_suffix>.png, or ext), else None."""
    base = _stem(name, (ext,))
    if base is None or not base.endswith(mask_suffix) or len(base) == len(mask_suffix):
        return None
    return base[: len(base) - len(mask_suffix)]


def list_masks(
    masks_dir: Path, mask_suffix: str, listing: Listing, ext: str = MASK_EXTENSION
) -> dict[str, Path]:
    """Return {image stem: mask} of the masks in masks_dir; two masks of one stem (abc.png, abc.PNG)
    fail the listing."""
    return _files_by_stem(masks_dir, lambda name: mask_stem(name, mask_suffix, ext), "mask", listing)


def list_pairs_dirs(
    images: str | Path,
    masks: str | Path,
    ids: str | Path = "",
    mask_suffix: str = "",
    multilabel: Sequence[str] = (),
) -> Listing:
    """Return the Listing of a 'pairs' split (see the module doc); raise FileNotFoundError naming a
    missing folder, ValueError when images and masks are one folder and mask_suffix is empty.
    multilabel (data.task=multilabel: the class names): the masks are <masks>/<class>/<stem>.png (the
    first class's are listed) or, without those folders, <masks>/<stem>.npy (C x H x W)."""
    ext = MASK_EXTENSION
    if multilabel:
        require_dir(Path(masks), "pairs dataset", HINT)
        masks, ext = multilabel_masks(Path(masks), multilabel)
    images_dir, masks_dir = Path(images), Path(masks)
    for directory in (images_dir, masks_dir):
        require_dir(directory, "pairs dataset", HINT)
    if images_dir.resolve() == masks_dir.resolve() and not mask_suffix:
        raise ValueError(
            f"pairs dataset: images and masks are both {images_dir}: set mask_suffix (e.g. _mask) to tell "
            "the masks from the images"
        )
    listing = Listing() if not ids else read_split_leniently(Path(ids))
    by_stem = list_images(images_dir, masks_dir, mask_suffix, listing)
    mask_by_stem = list_masks(masks_dir, mask_suffix, listing, ext)
    if ids:
        _pair_listed(listing, Path(ids), images_dir, masks_dir, mask_suffix, by_stem, mask_by_stem, ext)
    else:
        _pair_all(listing, images_dir, masks_dir, mask_suffix, by_stem, mask_by_stem, ext)
    return listing


def _append_pairs(
    listing: Listing, stems: Sequence[str], by_stem: dict[str, Path], mask_by_stem: dict[str, Path]
) -> None:
    """Add to listing, in the order of stems, each stem that has both an image and a mask."""
    for stem in stems:
        if stem in by_stem and stem in mask_by_stem:
            listing.ids.append(stem)
            listing.images.append(by_stem[stem])
            listing.masks.append(mask_by_stem[stem])


def _pair_listed(
    listing: Listing,
    ids_file: Path,
    images_dir: Path,
    masks_dir: Path,
    mask_suffix: str,
    by_stem: dict[str, Path],
    mask_by_stem: dict[str, Path],
    ext: str = MASK_EXTENSION,
) -> None:
    """Pair the ids of the ids file (already in listing.ids) in their order; a missing file is the error."""
    listed, listing.ids = listing.ids, []
    no_image = [i for i in listed if i not in by_stem]
    no_mask = [i for i in listed if i not in mask_by_stem]
    _append_pairs(listing, listed, by_stem, mask_by_stem)
    add_missing(listing, "image", no_image, len(listed), ids_file, images_dir, IMAGE_EXTENSIONS)
    add_missing(listing, "mask", no_mask, len(listed), ids_file, masks_dir, (mask_suffix + ext,))


def _pair_all(
    listing: Listing,
    images_dir: Path,
    masks_dir: Path,
    mask_suffix: str,
    by_stem: dict[str, Path],
    mask_by_stem: dict[str, Path],
    ext: str = MASK_EXTENSION,
) -> None:
    """Pair every image that has a mask, sorted by stem; the others are problems and a left_out line."""
    no_mask = [s for s in sorted(by_stem) if s not in mask_by_stem]
    no_image = [s for s in sorted(mask_by_stem) if s not in by_stem]
    _append_pairs(listing, sorted(by_stem), by_stem, mask_by_stem)
    for stem in no_mask:
        listing.problems.append(
            Problem(masks_dir / f"{stem}{mask_suffix}{ext}", f"no such mask for {by_stem[stem].name}")
        )
    for stem in no_image:
        listing.problems.append(Problem(mask_by_stem[stem], f"no image of stem '{stem}' in {images_dir}"))
    if no_mask or no_image:
        listing.left_out.append(
            f"{len(no_mask)} of {len(by_stem)} images in {images_dir} have no mask and {len(no_image)} of "
            f"{len(mask_by_stem)} masks in {masks_dir} have no image: left out"
        )
    if not listing.ids and listing.error is None:
        why = _no_pairs(masks_dir, mask_suffix, by_stem, ext)
        listing.problems.append(Problem(images_dir, f"no image has its mask in {masks_dir} {why}"))
        listing.error = FileNotFoundError(
            f"pairs dataset: no image in {images_dir} has its mask in {masks_dir} {why}"
        )


def _no_pairs(masks_dir: Path, mask_suffix: str, by_stem: dict[str, Path], ext: str = MASK_EXTENSION) -> str:
    """Return why a split has not a single pair: the files found, what was looked for, and what the
    masks folder holds instead."""
    pngs = sorted(n for n in list_names(masks_dir) if _stem(n, (ext,)) is not None)
    message = f"({len(by_stem)} images, {len(pngs)} {ext} files)"
    if by_stem:
        stem, image = next(iter(by_stem.items()))
        message += f"; {image.name} would pair with {stem}{mask_suffix}{ext}"
        if pngs:
            message += f", but the masks are named like {pngs[0]}"
            if not mask_suffix:
                message += " (set mask_suffix when the mask names add one to the stem, e.g. _mask)"
    return message


class PairsSegmentation(PairDataset):
    """Images and masks in two folders, paired by stem (see the module doc); masks as index PNGs or
    RGB colours via `palette` (None: VOC's colours), as FolderSegmentation reads them.

    `left_out` holds the Listing's lines about images and masks left out without an error.
    """

    def __init__(
        self,
        images: str | Path,
        masks: str | Path,
        ids: str | Path = "",
        mask_suffix: str = "",
        palette: Optional[Sequence[Sequence[int]] | np.ndarray] = None,
        transforms: Optional[Callable] = None,
        num_classes: Optional[int] = None,
        ignore_index: int = VOID,
        labels: Optional[LabelMap] = None,
        multilabel: Sequence[str] = (),
    ) -> None:
        listing = list_pairs_dirs(images, masks, ids, mask_suffix, multilabel)
        self._init_with_palette(listing, None, None, palette, transforms, num_classes, ignore_index, labels)
        self.multilabel = tuple(multilabel) or None
        self.images_dir, self.masks_dir = Path(images), Path(masks)
        self.left_out = listing.left_out
