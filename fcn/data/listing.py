"""What every layout reader lists before it reads a pixel: the image/mask pairs of a split that were
found, and a Problem for each file that was not (fcn.data.check prints them all; the readers raise
the first that makes the split unusable)."""

from __future__ import annotations

import dataclasses
import hashlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

from fcn.data.splits import list_names, read_split


@dataclass(frozen=True)
class Problem:
    """A file of a dataset that training cannot use (or a split file that lists an id twice), and why."""

    path: Path
    reason: str

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}"

    @classmethod
    def from_error(cls, path: Path, error: Exception) -> Problem:
        """Return the problem `error` reports about `path`: its message less the file name the line starts with."""
        return cls(path, str(error).removeprefix(f"{path}: ").replace(f" {path}", ""))


@dataclass
class Listing:
    """The pairs of one split as far as they could be found, and what stopped the others.

    `ids`, `images` and `masks` hold the ids whose image and mask both exist, in split-file order
    (an id listed twice appears twice, as the dataset serves it). `problems` names each missing file,
    unreadable split file and id listed twice; `error` is what the dataset constructors raise: the
    first problem that makes the split unusable (None if there is none: ids listed twice still train).
    `left_out` counts, in a line per kind, the files among `problems` that the split leaves out
    without an error (a 'pairs' folder's images without a mask): training prints it as a warning.
    """

    ids: list[str] = field(default_factory=list)
    images: list[Path] = field(default_factory=list)
    masks: list[Path] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    error: Optional[Exception] = None
    left_out: list[str] = field(default_factory=list)

    def add_problems(self, other: Listing) -> None:
        """Add other's problems (and left_out lines) to this listing's, and its error where this listing has none."""
        self.problems += other.problems
        self.left_out += other.left_out
        if self.error is None:
            self.error = other.error

    def fail(self, path: Path, error: Exception) -> None:
        """Record error as the problem of `path` that makes the split unusable (the first error is kept)."""
        self.problems.append(Problem.from_error(path, error))
        if self.error is None:
            self.error = error


def held_out(name: str, share: float) -> bool:
    """Return whether the item `name` goes to validation under data.val_fraction=`share`: sha256 of
    its name, the first 8 bytes as a big-endian integer / 2**64, below the share. A function of the
    name alone, so an item keeps its side whatever the order, and when items are added."""
    digest = hashlib.sha256(str(name).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < share


def hold_out(listing: Listing, share: float, validation: bool) -> Listing:
    """Return a copy of `listing` with only its items held out for validation under data.val_fraction
    =`share` (validation=True) or only the others (False); its problems stay with both sides."""
    keep = [held_out(i, share) == validation for i in listing.ids]
    return dataclasses.replace(
        listing,
        ids=[i for i, k in zip(listing.ids, keep) if k],
        images=[p for p, k in zip(listing.images, keep) if k],
        masks=[p for p, k in zip(listing.masks, keep) if k],
    )


def hold_out_line(share: float, held: int, total: int) -> str:
    """Return the line train.py and fcn.data.check print first under data.val_fraction=`share`."""
    return (
        f"data.val_fraction={share:g}: {held} of {total} items of data.train held out for validation "
        "(by a hash of the item name)"
    )


def read_split_leniently(split_file: Path) -> Listing:
    """Return a Listing holding only the split file's ids (no files yet) and its problems.

    A missing, empty or non-UTF-8 split file is a problem (and the error); an id listed twice is
    a problem only: the dataset keeps both listings, as it always has.
    """
    listing = Listing()
    try:
        listing.ids = read_split(split_file)
    except (OSError, ValueError) as exc:  # missing, empty or not UTF-8: one line naming the file
        listing.fail(split_file, exc)
    counts = Counter(listing.ids)
    for i, n in counts.items():
        if n > 1:
            listing.problems.append(Problem(split_file, f"id '{i}' is listed {n} times"))
    return listing


def list_pairs(
    split_file: Path, image_dir: Path, image_exts: Sequence[str], mask_dir: Path, mask_ext: str
) -> Listing:
    """Return the Listing of a split: image_dir/<id><first of image_exts present>, mask_dir/<id><mask_ext>.

    Every missing file is a problem of its own; the error (what the constructors raise) counts the
    missing images, else the missing masks, and names the first.
    """
    listing = read_split_leniently(split_file)
    ids, listing.ids = listing.ids, []
    image_names, mask_names = list_names(image_dir), list_names(mask_dir)  # one listdir each
    no_image, no_mask = [], []
    for i in ids:
        image = next((i + ext for ext in image_exts if i + ext in image_names), None)
        has_mask = i + mask_ext in mask_names
        if image is None:
            no_image.append(i)
        if not has_mask:
            no_mask.append(i)
        if image is not None and has_mask:
            listing.ids.append(i)
            listing.images.append(image_dir / image)
            listing.masks.append(mask_dir / (i + mask_ext))
    add_missing(listing, "image", no_image, len(ids), split_file, image_dir, image_exts)
    add_missing(listing, "mask", no_mask, len(ids), split_file, mask_dir, (mask_ext,))
    return listing


def add_missing(
    listing: Listing,
    what: str,
    missing: list[str],
    listed: int,
    split_file: Path,
    directory: Path,
    exts: Sequence[str],
) -> None:
    """Add a problem per missing file to listing, and the constructors' error counting them."""
    others = f" (nor {'/'.join(exts[1:])})" if len(exts) > 1 else ""
    for i in dict.fromkeys(missing):  # an id listed twice misses one file
        reason = f"no such {what}{others}; id '{i}' is listed in {split_file.name}"
        listing.problems.append(Problem(directory / (i + exts[0]), reason))
    if missing and listing.error is None:
        example = (
            f"{missing[0]} with {'/'.join(exts)}" if len(exts) > 1 else directory / (missing[0] + exts[0])
        )
        listing.error = FileNotFoundError(
            f"{len(missing)} of {listed} ids listed in {split_file} have no {what} in {directory} "
            f"(e.g. {example}); restore the files or remove the ids from the split file"
        )


def multilabel_masks(masks: Path, multilabel: Sequence[str]) -> tuple[Path, str]:
    """Return (the folder a split's masks are listed in, their ending): masks and .png, or for a
    multilabel task masks/<first class> and .png when that folder exists, else masks and the ending
    of its C x H x W arrays: .npy, or .tif / .tiff (multi-page TIFF, one page per class)."""
    if not multilabel:
        return masks, ".png"
    first = masks / multilabel[0]
    if first.is_dir():
        return first, ".png"
    endings = {name.rpartition(".")[2].lower() for name in list_names(masks)}
    return masks, next((f".{e}" for e in ("npy", "tif", "tiff") if e in endings), ".npy")
