"""Cityscapes (Cordts et al. 2016), fine annotations, as the official archives extract.

<root>/leftImg8bit/<split>/<city>/<city>_<seq>_<frame>_leftImg8bit.png      2048x1024 RGB
<root>/gtFine/<split>/<city>/<city>_<seq>_<frame>_gtFine_labelIds.png      8-bit label ids 0..33

An export in this layout without city folders (<root>/leftImg8bit/<split>/<id>_leftImg8bit.png and
<root>/gtFine/<split>/<id>_gtFine_labelIds.png, as datumaro 1.13's 'cityscapes' exporter writes
items whose ids name no city folder) is read too. With the label_colors.txt such an export writes
('R G B name' lines), its labelIds are the classes in that file's order, the label coloured 0 0 0
(else 'background', which the exporter leaves out) first, as datumaro reads them back
(fcn/config/exports.py cityscapes_classes): no data.label_map is needed.

Splits train (2,975 images), val (500), test (1,525; its public labels are void). The masks hold
the raw labelIds of cityscapesScripts' labels.py; the benchmark's 19 classes are its train ids,
given as data.label_map (predefined_configs/cityscapes_fcn8s.yml), applied like any label map.

The archives need a login: register at https://www.cityscapes-dataset.com/ and download
leftImg8bit_trainvaltest.zip (11 GB) and gtFine_trainvaltest.zip (241 MB) from its Downloads page
(or with cityscapesScripts' csDownload), then unzip both into the same root.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional

from fcn.config import VOID
from fcn.data.dataset import PairDataset
from fcn.data.listing import Listing, Problem
from fcn.data.masks import LabelMap
from fcn.data.splits import require_dir

CITYSCAPES_SPLITS = ("train", "val", "test")
CITYSCAPES_CLASSES = (
    "road",
    "sidewalk",
    "building",
    "wall",
    "fence",
    "pole",
    "traffic light",
    "traffic sign",
    "vegetation",
    "terrain",
    "sky",
    "person",
    "rider",
    "car",
    "truck",
    "bus",
    "train",
    "motorcycle",
    "bicycle",
)
"""The benchmark's 19 classes: cityscapesScripts' helpers/labels.py train ids 0..18, in order."""
CITYSCAPES_TRAIN_IDS = {7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10}
CITYSCAPES_TRAIN_IDS.update({24: 11, 25: 12, 26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18})
"""labels.py's labelId -> trainId for the 19 trained classes; its other ids 0..33 (trainId 255) and
255 are void. predefined_configs/cityscapes_fcn8s.yml writes the same table as data.label_map."""
CITYSCAPES_LABEL_IDS = 34  # labelIds 0..33 (license plate, -1, is never drawn into a mask)
IMAGE_STEM = "_leftImg8bit"
IMAGE_SUFFIX = f"{IMAGE_STEM}.png"
EXPORT_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")  # an exporter keeps its source images' suffix
MASK_SUFFIX = "_gtFine_labelIds.png"
HINT = (
    "set the dataset root to the directory holding leftImg8bit/ and gtFine/ (unzip leftImg8bit_trainvaltest.zip "
    "and gtFine_trainvaltest.zip from https://www.cityscapes-dataset.com/downloads/ there; a login is needed)"
)


def split_images(images_dir: Path) -> list[Path]:
    """Return a split's leftImg8bit images sorted by path: in city folders (<city>/*_leftImg8bit.png,
    the official archives) and directly under the split (an export without cities: datumaro's
    cityscapes exporter writes <id>_leftImg8bit<its image's suffix> there)."""
    nested = images_dir.glob(f"*/*{IMAGE_SUFFIX}")
    flat = (p for p in images_dir.glob(f"*{IMAGE_STEM}.*") if p.suffix.lower() in EXPORT_IMAGE_SUFFIXES)
    return sorted({*nested, *flat})


def list_cityscapes(root: str | Path, split: str) -> Listing:
    """Return the Listing of a Cityscapes split: every leftImg8bit image with its gtFine labelIds mask
    (in the same city folder, or directly under the split), sorted by city and name; each image
    without a mask is a problem."""
    if split not in CITYSCAPES_SPLITS:
        raise ValueError(f"Cityscapes split '{split}' is not one of {', '.join(CITYSCAPES_SPLITS)}")
    root = Path(root)
    images_dir, masks_dir = root / "leftImg8bit" / split, root / "gtFine" / split
    for directory in (root, images_dir, masks_dir):
        require_dir(directory, "Cityscapes", HINT)
    listing = Listing()
    no_mask = []
    for image in split_images(images_dir):
        stem = image.name[: image.name.rindex(IMAGE_STEM)]
        mask = masks_dir / image.parent.relative_to(images_dir) / f"{stem}{MASK_SUFFIX}"
        if not mask.is_file():
            no_mask.append(mask)
            listing.problems.append(Problem(mask, f"no such mask for {image.name}"))
            continue
        listing.ids.append(stem)
        listing.images.append(image)
        listing.masks.append(mask)
    if no_mask:
        listing.error = FileNotFoundError(
            f"{len(no_mask)} Cityscapes {split} images have no gtFine labelIds mask (e.g. {no_mask[0]}); "
            "unzip gtFine_trainvaltest.zip into the same root"
        )
    elif not listing.ids:
        listing.error = FileNotFoundError(
            f"Cityscapes: no <city>/*{IMAGE_SUFFIX} or *{IMAGE_SUFFIX} images in {images_dir}; {HINT}"
        )
    return listing


class CityscapesSegmentation(PairDataset):
    """Cityscapes fine annotations: leftImg8bit images with gtFine labelIds masks (see the module doc).

    `labels` translates the raw labelIds (data.label_map: the official labelIds -> train ids).
    """

    def __init__(
        self,
        root: str | Path,
        split: str,
        transforms: Optional[Callable] = None,
        num_classes: Optional[int] = 19,
        ignore_index: int = VOID,
        labels: Optional[LabelMap] = None,
    ) -> None:
        self._init_from_listing(
            list_cityscapes(root, split), root, split, transforms, num_classes, None, ignore_index, labels
        )
