"""ADE20K as the MIT Scene Parsing Benchmark ships it (ADEChallengeData2016.zip, 150 classes).

<root>/images/<split>/ADE_<split>_<n>.jpg           RGB photos
<root>/annotations/<split>/ADE_<split>_<n>.png      8-bit labels: 0 = unlabelled, 1..150 = the classes
                                                     of objectInfo150 in its order

<root> is the extracted ADEChallengeData2016/; splits training (20,210 images) and validation
(2,000). Label 0 is 'other objects' and not scored: set data.reduce_zero_label=true (0 -> ignored,
k -> k - 1), as predefined_configs/ade20k_fcn8s.yml does.

The archive: http://data.csail.mit.edu/places/ADEchallenge/ADEChallengeData2016.zip (923 MB, from
http://sceneparsing.csail.mit.edu/); download it where the machine can reach it and unzip it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional

from fcn.config import VOID
from fcn.data.dataset import PairDataset
from fcn.data.listing import Listing, Problem
from fcn.data.masks import LabelMap
from fcn.data.splits import list_names, require_dir

ADE20K_SPLITS = ("training", "validation")
HINT = (
    "set the dataset root to ADEChallengeData2016/ (images/, annotations/), unzipped from "
    "http://data.csail.mit.edu/places/ADEchallenge/ADEChallengeData2016.zip"
)


def list_ade20k(root: str | Path, split: str) -> Listing:
    """Return the Listing of an ADE20K split: images/<split>/*.jpg with annotations/<split>/<same name>.png,
    sorted by name; each image without an annotation is a problem."""
    if split not in ADE20K_SPLITS:
        raise ValueError(f"ADE20K split '{split}' is not one of {', '.join(ADE20K_SPLITS)}")
    root = Path(root)
    images_dir, masks_dir = root / "images" / split, root / "annotations" / split
    for directory in (root, images_dir, masks_dir):
        require_dir(directory, "ADE20K", HINT)
    listing = Listing()
    mask_names = list_names(masks_dir)
    no_mask = []
    for name in sorted(list_names(images_dir)):
        if not name.lower().endswith(".jpg"):
            continue
        stem = name[: -len(".jpg")]
        mask = masks_dir / f"{stem}.png"
        if mask.name not in mask_names:
            no_mask.append(mask)
            listing.problems.append(Problem(mask, f"no such annotation for {name}"))
            continue
        listing.ids.append(stem)
        listing.images.append(images_dir / name)
        listing.masks.append(mask)
    if no_mask:
        listing.error = FileNotFoundError(
            f"{len(no_mask)} ADE20K {split} images have no annotation in {masks_dir} (e.g. {no_mask[0].name})"
        )
    elif not listing.ids:
        listing.error = FileNotFoundError(f"ADE20K: no .jpg images in {images_dir}; {HINT}")
    return listing


class ADE20KSegmentation(PairDataset):
    """ADE20K SceneParsing (ADEChallengeData2016, see the module doc); `labels` applies
    data.reduce_zero_label (or a label map) to the raw 0..150 annotations."""

    def __init__(
        self,
        root: str | Path,
        split: str,
        transforms: Optional[Callable] = None,
        num_classes: Optional[int] = 150,
        ignore_index: int = VOID,
        labels: Optional[LabelMap] = None,
    ) -> None:
        self._init_from_listing(
            list_ade20k(root, split), root, split, transforms, num_classes, None, ignore_index, labels
        )
