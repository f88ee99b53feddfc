"""The shape of one dataset format (Format) and what every reader takes from cfg.data (ReadArgs).

A Format says, for one data.<split>.name, how to list a split's items (list), read them (open: the
Dataset that build_dataset returns), read a split's masks for the check (mask_reader), name a split
in one line (describe) and which config keys it takes (keys: its fcn/config/formats.py entry, which
the config checks read at load time). fcn/data/formats/__init__.py holds the table, FORMATS.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

from fcn.config.formats import FormatKeys
from fcn.data.dataset import PairDataset
from fcn.data.listing import Listing
from fcn.data.masks import LabelMap, colour_lookup


@dataclass(frozen=True)
class ReadArgs:
    """What every reader takes from cfg.data, worked out once by its caller (fcn.data.read_args)."""

    data: Any  # cfg.data itself, for a format's own data.* keys (COCO's coco_unlisted, coco_overlap)
    classes: list[str]  # the class names in label order (fcn.data.class_names)
    num_classes: int  # the labels a mask may hold besides ignore_index (fcn.data.mask_labels)
    ignore_index: int
    labels: LabelMap  # data.label_map / reduce_zero_label, applied after every reader
    colours: Optional[list[list[int]]]  # data.palette (None when empty): colour masks -> labels
    multilabel: list[str]  # a multilabel task's class names (one mask per class); else []


def plain_mask_reader(fmt: Format, ds_cfg: Any, args: ReadArgs, listing: Listing) -> PairDataset:
    """Return an empty PairDataset whose load_raw_mask reads PNG masks as the reader's would: palette
    or grey indices, colours through data.palette where the format takes it (fmt.palette), else VOC's."""
    lut = colour_lookup(args.colours if fmt.palette else None, args.num_classes, args.ignore_index)
    reader = PairDataset(
        [], [], [], num_classes=args.num_classes, lut=lut, ignore_index=args.ignore_index, labels=args.labels
    )
    if args.multilabel:
        reader.multilabel = tuple(args.multilabel)
    return reader


def in_root(ds_cfg: Any) -> str:
    """Return how the check names a split of a rooted layout: 'name/split in root'."""
    return f"{ds_cfg.name}/{ds_cfg.split} in {ds_cfg.root}"


def root_dir(ds_cfg: Any, listing: Listing) -> Path:
    """Return data.<split>.root: where a rooted layout's class counts are cached."""
    return Path(ds_cfg.root)


@dataclass(frozen=True)
class Format:
    """One data.<split>.name: how to list, read, check and describe its splits."""

    name: str  # the data.<split>.name value (the import-path format: 'package.module:Class')
    about: str  # one line for the docs: the layout, in the words its users know it by
    keys: FormatKeys  # its key rules, FORMAT_KEYS[name] (fcn/config/formats.py)
    list: Callable[[Any, ReadArgs], Listing]
    """(ds_cfg, args) -> the split's Listing (its problems collected, not raised; raise only when
    it cannot be listed at all: a missing directory)."""
    open: Callable[[Any, ReadArgs, Optional[Callable]], Any]
    """(ds_cfg, args, transforms) -> the Dataset build_dataset returns (a PairDataset, or an
    ExternalDataset), 3 channels until build_dataset sets them."""
    mask_reader: Callable[[Format, Any, ReadArgs, Listing], PairDataset] = plain_mask_reader
    """(fmt, ds_cfg, args, listing) -> an empty dataset whose load_raw_mask reads the listed masks as
    open's would (fcn.data.check reads every mask through it)."""
    describe: Callable[[Any], str] = in_root
    """ds_cfg -> how the check's report names the split, on one line."""
    counts_dir: Callable[[Any, Listing], Path] = root_dir
    """(ds_cfg, listing) -> the directory that caches the split's class pixel counts."""
    classes: tuple[str, ...] = ()
    """The class names it has of its own, in label order (the paper's datasets); () = PASCAL VOC's
    unless data.classes names them."""
    palette: bool = False
    """Its colour masks read through data.palette (folder, pairs); False: VOC's colours."""
    listed_channels: Optional[int] = None
    """The channels of the images its Listing names when they are not model.in_channels (the
    paper's readers list the colour images: 3); None = model.in_channels."""
    files: bool = True
    """Its items are files the check reads in worker processes; False (a Dataset class by import
    path): items read one by one in this process, and the class counts are not cached."""
