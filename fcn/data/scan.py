"""The dataset scanner behind python -m fcn.data.check: list a split by its format, read every image
and mask once (in worker processes; a Dataset class by import path item by item here), and sum what
it found into a SplitReport: every bad file with its reason, pixels per label, image sizes.

Problems come back as data (Problem), never raised, so that one bad file does not hide the next.
"""

from __future__ import annotations

import contextlib
import functools
from concurrent.futures import Executor, ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, NamedTuple, Optional, Sequence

import numpy as np
from PIL import Image, UnidentifiedImageError

from fcn.data import read_args, split_listing
from fcn.data.dataset import PairDataset
from fcn.data.external import ExternalDataset
from fcn.data.formats import format_of
from fcn.data.images import ARRAY_EXTENSIONS, image_array
from fcn.data.listing import Listing, Problem

SPLITS = ("train", "val")


class PairResult(NamedTuple):
    """What reading one image/mask pair found: its size and label counts if good, else its problems."""

    size: Optional[tuple[int, int]]  # (W, H)
    counts: Optional[np.ndarray]  # (256,) int64 pixels per label value
    problems: list[Problem]
    kind: str = ""  # the image as stored: its PIL mode, or '<C>-channel <dtype>' for arrays
    negatives: Optional[np.ndarray] = None  # a multilabel mask's (C,) pixels labelled 0 on each plane


@dataclass
class SplitReport:
    """The outcome of checking one split: its problems, and pixel counts and sizes of its good pairs."""

    key: str  # data.train or data.val
    description: str
    pairs: int  # distinct pairs listed whose image and mask both exist (each read once)
    problems: list[Problem] = field(default_factory=list)
    good: int = 0
    counts: np.ndarray = field(default_factory=lambda: np.zeros(256, np.int64))
    # per label: the pixels (all labels) of the good pairs in which the label occurs (Eigen & Fergus)
    present_pixels: np.ndarray = field(default_factory=lambda: np.zeros(256, np.int64))
    min_size: Optional[tuple[int, int]] = None  # smallest (W, H), each side on its own
    max_size: Optional[tuple[int, int]] = None
    kinds: dict[str, int] = field(default_factory=dict)  # good images per stored kind (PairResult.kind)
    pixels: int = 0  # the good pairs' pixels (a multilabel task's class counts overlap: their sum is more)
    # a multilabel task's pixels per class labelled 0 on its plane (its pos_weight's numerator); else None
    negatives: Optional[np.ndarray] = None
    left_out: list[str] = field(
        default_factory=list
    )  # the listing's counts of files left out (Listing.left_out)


def decode_image(path: Path) -> Image.Image:
    """Return the fully decoded image at `path` in its own mode; raise ValueError naming the file otherwise.

    Decoding all of it (load()) is what catches a truncated file; converting it to RGB as training
    does would only cost time. (A helper that belongs in fcn/data/images.py beside read_image.)
    """
    try:
        img = Image.open(path)
        img.load()
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: file not found") from None
    except UnidentifiedImageError:
        raise ValueError(f"{path}: not an image file (PIL cannot identify its format)") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise ValueError(
            f"{path}: cannot decode the image ({exc}); the file is damaged or truncated, replace it"
        ) from None
    return img


def decode_array(path: Path, channels: int) -> np.ndarray:
    """Return the HxWxC pixels of an N-channel image as stored (fcn.data.images.image_array); ValueError
    naming the file, with expected and found counts, when it has not `channels` channels (model.in_channels;
    a one-channel file passes for three, as training repeats it)."""
    array = image_array(path)
    found = array.shape[2]
    if found != channels and not (found == 1 and channels == 3):
        raise ValueError(f"{path}: image has {found} channels, expected {channels} (model.in_channels)")
    return array


def inspect_pair(pair: tuple[Path, Path], reader: PairDataset) -> PairResult:
    """Return what decoding an (image, mask) pair found; every failure comes back as a Problem, never raised.

    `reader` reads masks as training does (its load_raw_mask, with its colour table, then its
    label map); its num_classes bounds the labels and its channels (model.in_channels) the image's
    channels.
    """
    image_path, mask_path = pair
    problems: list[Problem] = []
    image = raw = None
    kind = ""
    try:
        if reader.channels == 3 and image_path.suffix.lower() not in ARRAY_EXTENSIONS:
            image = decode_image(image_path)
            kind = image.mode
        else:
            image = decode_array(image_path, reader.channels)
            kind = f"{image.shape[2]}-channel {image.dtype}"
    except Exception as exc:  # a worker's exception must come back as data, not end the run
        problems.append(_problem(image_path, exc))
    try:
        raw = reader.load_raw_mask(mask_path)
    except Exception as exc:
        problems.append(_problem(mask_path, exc))
    size = None if image is None else image.size if isinstance(image, Image.Image) else image.shape[1::-1]
    result = inspect_labels(size, raw, reader, mask_path, problems)
    return result._replace(kind=kind) if result.size is not None else result


def inspect_labels(
    size: Optional[tuple[int, int]],
    raw: Optional[np.ndarray],
    reader: Any,
    where: Path | str,
    problems: list[Problem],
) -> PairResult:
    """Return the PairResult of a mask's raw ids (None: unreadable) for an image of `size` (W, H; None:
    unreadable): its ids translated by reader.labels, counted and checked against reader.num_classes.

    Raw ids that data.label_map does not list are a problem, but the pair still counts (it trains,
    with those pixels ignored).
    """
    counts = mask = negatives = None
    notes = []  # problems that leave the pair usable
    if raw is not None:
        unlisted = reader.labels.unlisted(raw)
        if unlisted:
            ids = ", ".join(f"{i} ({n:,} px)" for i, n in unlisted.items())
            notes.append(
                Problem(where, f"raw label ids {ids} are not in data.label_map (trained as ignored)")
            )
        try:
            mask = reader.labels(raw, where)
        except ValueError as exc:
            problems.append(Problem.from_error(where, exc))
    if mask is not None and mask.ndim == 3 and getattr(reader, "multilabel", None):
        # a multilabel mask (C x H x W 0/1): label c counts class c's pixels, label C the pixels of
        # no class, ignore_index the pixels every class ignores (format_split's rows)
        c = mask.shape[0]
        counts = np.zeros(256, np.int64)
        counts[:c] = (mask == 1).sum(axis=(1, 2))
        counts[c] = int((mask == 0).all(0).sum())
        counts[reader.ignore_index] += int((mask == reader.ignore_index).all(0).sum())
        negatives = (mask == 0).sum(axis=(1, 2)).astype(np.int64)  # per plane: a partly ignored one too
        mask = mask[0]  # its size is the item's
    elif mask is not None:
        counts = np.bincount(mask.ravel(), minlength=256)  # one pass; np.unique sorts
        n, ignore = reader.num_classes, reader.ignore_index
        labels = np.flatnonzero(counts)
        outside = labels[(labels >= n) & (labels != ignore)]
        if outside.size:
            after = " after data.label_map" if not reader.labels.identity else ""
            problems.append(
                Problem(
                    where,
                    f"labels {outside.tolist()}{after} are outside 0..{n - 1} and {ignore} (data.ignore_index)",
                )
            )
        if size is not None and mask.shape != (size[1], size[0]):
            problems.append(
                Problem(
                    where,
                    f"mask is {mask.shape[1]}x{mask.shape[0]} (WxH) but its image is {size[0]}x{size[1]}; "
                    "masks must match their images pixel for pixel",
                )
            )
    if size is None or counts is None or problems:
        return PairResult(None, None, problems + notes)
    return PairResult(size, counts, notes, negatives=negatives)


def inspect_item(index: int, dataset: ExternalDataset) -> PairResult:
    """Return what reading item `index` of a Dataset class found (as inspect_pair does for files)."""
    where = f"{dataset.name}[{index}]"
    try:
        image, raw = dataset.raw_item(index)
    except Exception as exc:
        return PairResult(
            None, None, [Problem(where, str(exc).replace(f"dataset class {dataset.name}: ", ""))]
        )
    return inspect_labels(image.size, raw, dataset, where, [])


def _problem(path: Path, exc: Exception) -> Problem:
    """Return the Problem an exception reports; one that no reader anticipated says its type."""
    if isinstance(exc, (OSError, ValueError)):
        return Problem.from_error(path, exc)
    return Problem(path, f"unexpected {type(exc).__name__}: {exc}")


def list_split(ds_cfg: Any, data_cfg: Any) -> Listing:
    """Return the Listing of cfg.data.train or cfg.data.val by its format's list (a Dataset class by
    import path has no files to list: its Listing is empty), less the items data.val_fraction puts on
    the other side; raise when it cannot be listed at all."""
    return split_listing(ds_cfg, data_cfg, format_of(ds_cfg.name).list(ds_cfg, read_args(data_cfg)))


def mask_reader(
    ds_cfg: Any, data_cfg: Any, listing: Optional[Listing] = None, channels: int = 3
) -> PairDataset:
    """Return an empty dataset whose load_mask reads this split's masks as build_dataset's would
    (its format's mask_reader: a COCO dataset rasterises them from its listing, even one with
    problems), expecting images of `channels` channels (model.in_channels) unless the format lists
    images of another count (Format.listed_channels: the paper's colour images)."""
    fmt = format_of(ds_cfg.name)
    reader = fmt.mask_reader(fmt, ds_cfg, read_args(data_cfg), listing if listing is not None else Listing())
    reader.channels = fmt.listed_channels or int(channels)
    return reader


def external_dataset(ds_cfg: Any, data_cfg: Any) -> ExternalDataset:
    """Return the Dataset class a split names by import path, constructed (its first item read: the
    protocol check build_dataset makes)."""
    from fcn.data import build_dataset

    return build_dataset(ds_cfg, data_cfg)


def read_pairs(
    pairs: Sequence[tuple[Path, Path]], reader: PairDataset, pool: Optional[Executor] = None
) -> Iterator[PairResult]:
    """Return the PairResults of `pairs` in their order, read in `pool`'s processes (None: here, lazily).

    With a pool every pair is queued at once, so that the workers read on while the caller is
    still taking the results of an earlier call.
    """
    inspect = functools.partial(inspect_pair, reader=reader)
    if pool is None:
        return map(inspect, pairs)
    # Chunks of up to 32 pairs amortise the inter-process traffic yet leave dozens of chunks to
    # balance over the workers; map returns results in the pairs' order whatever the workers.
    return pool.map(inspect, pairs, chunksize=max(1, min(32, len(pairs) // 64)))


def summarise(
    key: str,
    description: str,
    listing: Listing,
    results: Iterable[PairResult],
    pairs: int,
    progress: Optional[bool] = None,
) -> SplitReport:
    """Return the SplitReport of a split from its listing and the results of its `pairs` distinct pairs.

    progress: show a tqdm bar while the results come (None: only on a terminal).
    """
    from tqdm import tqdm

    report = SplitReport(key, description, pairs, list(listing.problems), left_out=list(listing.left_out))
    disable = None if progress is None else not progress
    for result in tqdm(results, total=pairs, desc=key, unit="pair", disable=disable, dynamic_ncols=True):
        report.problems += result.problems
        if result.size is None:
            continue
        report.good += 1
        report.pixels += result.size[0] * result.size[1]
        report.counts += result.counts
        if result.negatives is not None:
            report.negatives = result.negatives + (0 if report.negatives is None else report.negatives)
        report.present_pixels += np.where(result.counts > 0, result.counts.sum(), 0)
        report.kinds[result.kind] = report.kinds.get(result.kind, 0) + 1
        w, h = result.size
        low, high = report.min_size or (w, h), report.max_size or (w, h)
        report.min_size = (min(low[0], w), min(low[1], h))
        report.max_size = (max(high[0], w), max(high[1], h))
    return report


def check_dataset(cfg: Any, progress: Optional[bool] = None) -> list[SplitReport]:
    """Return the SplitReports of data.train and data.val, read in cfg.data.num_workers processes.

    Both splits are listed before anything is read, so that a split that cannot be listed (a
    missing directory, an unknown split name) raises ValueError at once, naming it. Each distinct
    pair is read once: an id listed twice is reported, not read twice.
    """
    listings = {}
    for key in SPLITS:
        try:
            listings[key] = list_split(cfg.data[key], cfg.data)
        except (OSError, ValueError) as exc:
            raise ValueError(f"data.{key}: {exc}") from None
    externals = {}  # a Dataset class by import path: constructed (and its first item read) now
    for key in SPLITS:
        if not format_of(cfg.data[key].name).files:
            try:
                externals[key] = external_dataset(cfg.data[key], cfg.data)
            except ValueError as exc:
                raise ValueError(f"data.{key}: {exc}") from None
    workers = int(cfg.data.num_workers)
    with contextlib.ExitStack() as stack:
        pool = stack.enter_context(ProcessPoolExecutor(workers)) if workers > 0 else None
        jobs = []
        for key in SPLITS:  # both splits queued before either is summarised: no idle worker between
            ds_cfg, listing = cfg.data[key], listings[key]
            if key in externals:  # read here, in order: a user's class need not pickle
                dataset = externals[key]
                results = map(functools.partial(inspect_item, dataset=dataset), range(len(dataset)))
                jobs.append((key, ds_cfg, listing, results, len(dataset)))
                continue
            pairs = list(dict.fromkeys(zip(listing.images, listing.masks)))
            results = read_pairs(pairs, mask_reader(ds_cfg, cfg.data, listing, cfg.model.in_channels), pool)
            jobs.append((key, ds_cfg, listing, results, len(pairs)))
        return [
            summarise(f"data.{key}", describe(ds), listing, results, n, progress)
            for key, ds, listing, results, n in jobs
        ]


def describe(ds_cfg: Any) -> str:
    """Return how the report names a split, on one line (its format's describe: 'name/split in root',
    a COCO JSON and its images, a Dataset class with its args)."""
    return format_of(ds_cfg.name).describe(ds_cfg)
