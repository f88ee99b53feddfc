"""'roboflow': Roboflow's "Semantic Segmentation Masks" export, read as Roboflow writes it.

Followed: Roboflow's export format "Semantic Segmentation Masks" as its docs and exports describe it
today (2024-2025; no version number is published): one folder per split, each image beside its mask
and the split's class table,

    <root>/train/abc.jpg            the image (.jpg as exported; .jpeg, .png also read)
    <root>/train/abc_mask.png       8-bit grey class indices, one per pixel
    <root>/train/_classes.csv       'Pixel Value, Class' then one 'value, name' row per class
    <root>/valid/...  <root>/test/...

data.<split>.split picks the folder: train, val (the folder 'valid', or 'val'), test. The classes
are _classes.csv's, by pixel value, unless data.classes names them (the mapping is printed once).
The folder's listing is the 'pairs' one with mask_suffix _mask (fcn/data/pairs.py): an image without
its mask and a mask without its image are problems the check names; a grey value that no row of
_classes.csv names is the check's 'labels outside 0..N-1' line, naming the mask.

    data:
      train: {name: roboflow, root: my-export}                # split: train (the default)
      val: {name: roboflow, root: my-export, split: val}      # the 'valid' folder
"""

from __future__ import annotations

from fcn.config.exports import ROBOFLOW_CLASSES_FILE, read_roboflow_classes, roboflow_split_dir
from fcn.config.formats import FORMAT_KEYS
from fcn.data.formats.format import Format
from fcn.data.listing import Listing, Problem
from fcn.data.pairs import PairsSegmentation, list_pairs_dirs
from fcn.data.splits import require_dir

MASK_SUFFIX = "_mask"  # abc.jpg <-> abc_mask.png, as Roboflow names them
HINT = "set data.<split>.root to the unzipped export (the folder holding train/, valid/, test/)"


def _list(ds, a) -> Listing:
    """Return the Listing of a split's folder; a missing folder raises, a bad _classes.csv is its error."""
    folder = roboflow_split_dir(ds.root, ds.split)
    require_dir(folder, "roboflow export", HINT)
    listing = list_pairs_dirs(folder, folder, "", MASK_SUFFIX)
    classes = folder / ROBOFLOW_CLASSES_FILE
    try:
        found = read_roboflow_classes(classes)
    except ValueError as exc:
        listing.fail(classes, exc)
        return listing
    if not found and not len(a.data.classes):
        listing.fail(
            classes,
            FileNotFoundError(f"{classes}: no such file; set data.classes (the names by pixel value)"),
        )
    elif found and not len(a.data.classes) and found != a.classes:
        listing.problems.append(
            Problem(classes, f"names other classes than the run's ({', '.join(a.classes)})")
        )
    return listing


def _open(ds, a, transforms):
    listing = _list(ds, a)
    if listing.error is not None:
        raise listing.error
    folder = roboflow_split_dir(ds.root, ds.split)
    return PairsSegmentation(
        folder,
        folder,
        "",
        MASK_SUFFIX,
        None,
        transforms,
        num_classes=a.num_classes,
        ignore_index=a.ignore_index,
        labels=a.labels,
    )


FORMAT = Format(
    name="roboflow",
    about="Roboflow's Semantic Segmentation Masks export: train/, valid/, test/ with abc.jpg, abc_mask.png, _classes.csv",
    keys=FORMAT_KEYS["roboflow"],
    list=_list,
    open=_open,
    describe=lambda ds: f"roboflow {roboflow_split_dir(ds.root, ds.split)}",
)
