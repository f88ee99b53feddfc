"""Check a dataset before training on it: python -m fcn.data.check --config FILE [key=value ...]

Lists data.train and data.val as the config names them (every missing file and every id listed
twice, not only the first; a 'pairs' folder's images without a mask and masks without an image), reads every image and mask once in data.num_workers processes (a
Dataset class by import path: item by item here), translates the masks by data.label_map /
reduce_zero_label as training does, and prints each bad file on a line of its own with the reason
(raw ids the label map does not list among them), then for the good pairs the pixels per class,
the range of image sizes and inverse-frequency weights for loss.class_weights.

Exit code: 0 when nothing is bad, 1 when a bad file was found, 2 for a bad command line or config
or a split that cannot be listed at all (a missing dataset directory).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import sys
from concurrent.futures import Executor, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, NamedTuple, Optional, Sequence

import numpy as np
from PIL import Image, UnidentifiedImageError

from fcn.config import VOID, ConfigError, is_import_path, load_config
from fcn.data import class_names, label_map, mask_labels
from fcn.data.ade20k import list_ade20k
from fcn.data.cityscapes import list_cityscapes
from fcn.data.coco import CocoListing, CocoSegmentation, listing_for
from fcn.data.dataset import PairDataset
from fcn.data.external import ExternalDataset
from fcn.data.folder import list_folder
from fcn.data.images import ARRAY_EXTENSIONS, image_array
from fcn.data.listing import Listing, Problem
from fcn.data.masks import colour_lookup
from fcn.data.pairs import list_pairs_dirs
from fcn.data.paper import empty_reader, list_nyud, list_pascal_context, list_siftflow
from fcn.data.sbd import list_sbd, list_voc_aug
from fcn.data.voc import list_voc

SPLITS = ("train", "val")

LISTERS: dict[str, Callable[[str, str], Listing]] = {
    "voc": list_voc,
    "sbd": list_sbd,
    "voc_aug": list_voc_aug,
    "folder": list_folder,
    "cityscapes": list_cityscapes,
    "ade20k": list_ade20k,
    "pascal_context": list_pascal_context,
    "nyud": list_nyud,  # the colour images and masks; list_split passes the modalities
    "siftflow": list_siftflow,  # the images and semantic masks (the geometric ones are listed too)
}
"""The listing function of each data.<split>.name (build_dataset's constructors list through these)."""


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


def list_split(ds_cfg: Any, data_cfg: Any = None) -> Listing:
    """Return the Listing of cfg.data.train or cfg.data.val; raise when it cannot be listed at all
    (a Dataset class by import path has no files to list: its Listing is empty). data_cfg (cfg.data:
    classes and coco_* options) is needed for 'coco' datasets only."""
    if is_import_path(ds_cfg.name):
        return Listing()
    if ds_cfg.name == "coco":
        return listing_for(ds_cfg, data_cfg, class_names(data_cfg))
    multilabel = class_names(data_cfg) if data_cfg is not None and data_cfg.task == "multilabel" else []
    if ds_cfg.name == "pairs":
        return list_pairs_dirs(ds_cfg.images, ds_cfg.masks, ds_cfg.ids, ds_cfg.mask_suffix, multilabel)
    if ds_cfg.name == "folder" and multilabel:
        return list_folder(ds_cfg.root, ds_cfg.split, multilabel)
    if ds_cfg.name not in LISTERS:
        raise ValueError(f"dataset name '{ds_cfg.name}' is not one of {', '.join(LISTERS)}")
    if ds_cfg.name == "nyud":
        return list_nyud(ds_cfg.root, ds_cfg.split, [str(m) for m in ds_cfg.modalities])
    return LISTERS[ds_cfg.name](ds_cfg.root, ds_cfg.split)


def mask_reader(
    ds_cfg: Any, data_cfg: Any, listing: Optional[Listing] = None, channels: int = 3
) -> PairDataset:
    """Return an empty dataset whose load_mask reads this split's masks as build_dataset's would
    (a COCO dataset rasterises them from its listing, even one with problems), expecting images of
    `channels` channels (model.in_channels)."""
    n = mask_labels(data_cfg)
    ignore = int(data_cfg.ignore_index)
    if ds_cfg.name in ("pascal_context", "nyud", "siftflow"):
        reader = empty_reader(ds_cfg.name, ds_cfg.root, n, ignore, label_map(data_cfg))
    elif isinstance(listing, CocoListing):
        reader = CocoSegmentation(
            listing.annotations,
            "",
            class_names(data_cfg),
            None,
            data_cfg.coco_unlisted,
            data_cfg.coco_overlap,
            ignore,
            listing,
        )
    else:
        colours = [[int(c) for c in colour] for colour in data_cfg.palette] or None
        # Only folder and pairs datasets convert colour masks through data.palette; VOC's always use VOC's colours.
        lut = colour_lookup(colours if ds_cfg.name in ("folder", "pairs") else None, n, ignore)
        reader = PairDataset(
            [], [], [], num_classes=n, lut=lut, ignore_index=ignore, labels=label_map(data_cfg)
        )
        if data_cfg.task == "multilabel":
            reader.multilabel = tuple(class_names(data_cfg))
    # The paper's readers list their colour images (NYUDv2's other modalities are listed as files
    # beside them): those are RGB whatever model.in_channels the stacked input gives.
    reader.channels = 3 if ds_cfg.name in ("pascal_context", "nyud", "siftflow") else int(channels)
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
        if is_import_path(cfg.data[key].name):
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
    """Return how the report names a split: 'name/split in root', a COCO JSON and its images, or a
    Dataset class with its args."""
    if is_import_path(ds_cfg.name):
        return f"{ds_cfg.name} with args {dict(ds_cfg.args)}"
    if ds_cfg.name == "coco":
        return f"coco {ds_cfg.annotations} with images in {ds_cfg.images}"
    if ds_cfg.name == "pairs":
        ids = f" listed in {ds_cfg.ids}" if ds_cfg.ids else ""
        return f"pairs {ds_cfg.images}{ids} with masks in {ds_cfg.masks}"
    return f"{ds_cfg.name}/{ds_cfg.split} in {ds_cfg.root}"


def class_weights(counts: np.ndarray) -> list[float]:
    """Return inverse-frequency class weights: w_c = total / (present * count_c), 0.0 for an absent class.

    `counts` are the pixels per class (void excluded). `present` is the number of classes with
    pixels, so that the pixel-weighted mean weight is 1 (sum_c count_c * w_c = total): the loss
    keeps its scale, and with it the learning rate that suits it, while each present class carries
    the same total weight. A class with no pixels gets 0.0: no pixel will ever use it, and a finite
    number keeps the config valid.
    """
    counts = np.asarray(counts, dtype=np.float64)
    present = int((counts > 0).sum())
    if present == 0:
        return [0.0] * len(counts)
    total = counts.sum()
    safe = np.where(counts > 0, counts, 1.0)
    return np.where(counts > 0, total / (present * safe), 0.0).tolist()


def median_frequency_weights(counts: np.ndarray, present_pixels: np.ndarray) -> list[float]:
    """Return median-frequency class weights (Eigen & Fergus 2015): w_c = median(freq) / freq_c with
    freq_c = count_c / (pixels of the images where c occurs), the median over present classes; 0.0
    for an absent class. Both arrays are per class (void excluded)."""
    counts = np.asarray(counts, dtype=np.float64)
    present = counts > 0
    if not present.any():
        return [0.0] * len(counts)
    freq = np.where(present, counts / np.maximum(np.asarray(present_pixels, np.float64), 1.0), 1.0)
    return np.where(present, np.median(freq[present]) / freq, 0.0).tolist()


def frequency_weights(
    report: SplitReport, rule: str, num_classes: int, ignore_index: int, task: str = "multiclass"
) -> list[float]:
    """Return loss.class_weights by `rule` ('inverse_frequency' or 'median_frequency') from a split's
    pixel counts of labels 0..num_classes-1; the ignore index counts as absent (weight 0.0). A binary
    task's 'inverse_frequency' is bce's pos_weight: [background pixels / foreground pixels] (1.0
    without foreground); a multilabel task's, one per class: [its pixels labelled 0 / its pixels
    labelled 1] (report.negatives over report.counts[:num_classes]; 1.0 for a class without pixels)."""
    if task in ("binary", "multilabel"):
        if rule != "inverse_frequency":
            raise ValueError(f"loss.class_weights='{rule}' is not inverse_frequency (data.task={task})")
        if task == "binary":
            negatives, positives = report.counts[:1], report.counts[1:2]
        else:
            if report.negatives is None:
                raise ValueError(
                    "a multilabel task's pos_weight needs report.negatives (split_report_cached)"
                )
            negatives, positives = report.negatives[:num_classes], report.counts[:num_classes]
        return [float(n) / float(p) if p > 0 else 1.0 for n, p in zip(negatives, positives)]
    counts = report.counts[:num_classes].copy()
    present_pixels = report.present_pixels[:num_classes].copy()
    if ignore_index < num_classes:
        counts[ignore_index] = 0
    if rule == "inverse_frequency":
        return class_weights(counts)
    if rule == "median_frequency":
        return median_frequency_weights(counts, present_pixels)
    raise ValueError(f"loss.class_weights='{rule}' is not one of inverse_frequency, median_frequency")


def counts_checksum(ds_cfg: Any, data_cfg: Any, listing: Listing) -> str:
    """Return the 16-hex-digit checksum of what a split's pixel counts depend on: the dataset name,
    the listed ids in split-file order, each mask file's name, size and mtime (ns), and data.palette
    (it maps colour masks to labels)."""
    import hashlib

    h = hashlib.sha256()
    h.update(f"{ds_cfg.name}\n{[list(c) for c in data_cfg.palette]}\n".encode())
    if (
        data_cfg.task != "multiclass"
    ):  # its masks read otherwise (255: foreground); multiclass caches stay valid
        h.update(f"task {data_cfg.task}\n".encode())
    if len(data_cfg.label_map) or data_cfg.reduce_zero_label:  # so that the old caches stay valid
        h.update(f"{sorted(dict(data_cfg.label_map).items())} {bool(data_cfg.reduce_zero_label)}\n".encode())
    if isinstance(listing, CocoListing):
        # Its masks may not be rasterised yet: the key of the JSON and its options stands for them.
        h.update(listing.key.encode())
        return h.hexdigest()[:16]
    for i, mask in zip(listing.ids, listing.masks):
        stat = mask.stat()
        h.update(f"{i}\t{mask.name}\t{stat.st_size}\t{stat.st_mtime_ns}\n".encode())
    return h.hexdigest()[:16]


def split_report_cached(
    ds_cfg: Any, data_cfg: Any, workers: int = 0, channels: int = 3
) -> tuple[SplitReport, Optional[Path], bool]:
    """Return (the split's SplitReport counts, the cache file (None for a Dataset class by import
    path: counted each time), whether it was read from the cache).

    The pixel counts are those of check_dataset, read once and cached in
    <root>/.fcn_class_counts_<split>_<checksum>.json (a 'pairs' dataset: in its masks directory;
    see counts_checksum); a root that cannot be
    written is not an error (the counts are then computed again by the next run)."""
    import json

    if is_import_path(ds_cfg.name):  # no files to checksum: counted each time, not cached
        dataset = external_dataset(ds_cfg, data_cfg)
        results = map(functools.partial(inspect_item, dataset=dataset), range(len(dataset)))
        return (
            summarise("data.train", describe(ds_cfg), Listing(), results, len(dataset), progress=False),
            None,
            False,
        )
    listing = list_split(ds_cfg, data_cfg)
    if listing.error is not None:
        raise listing.error
    if isinstance(listing, CocoListing):
        where = listing.cache_dir
    else:
        where = Path(ds_cfg.masks if ds_cfg.name == "pairs" else ds_cfg.root)
    cache = where / f".fcn_class_counts_{ds_cfg.split}_{counts_checksum(ds_cfg, data_cfg, listing)}.json"
    description = describe(ds_cfg)
    report = SplitReport("data.train", description, len(listing.ids))
    try:
        saved = json.loads(cache.read_text(encoding="utf-8"))
        report.counts = np.asarray(saved["counts"], np.int64)
        report.present_pixels = np.asarray(saved["present_pixels"], np.int64)
        report.good = int(saved["good"])
        if data_cfg.task == "multilabel":  # a cache written before these counts is counted again
            report.negatives = np.asarray(saved["negatives"], np.int64)
        return report, cache, True
    except (OSError, ValueError, KeyError, TypeError):
        pass
    pairs = list(dict.fromkeys(zip(listing.images, listing.masks)))
    with contextlib.ExitStack() as stack:
        pool = stack.enter_context(ProcessPoolExecutor(workers)) if workers > 0 and len(pairs) > 1 else None
        results = read_pairs(pairs, mask_reader(ds_cfg, data_cfg, listing, channels), pool)
        report = summarise("data.train", description, listing, results, len(pairs), progress=False)
    saved = {
        "counts": report.counts.tolist(),
        "present_pixels": report.present_pixels.tolist(),
        "good": report.good,
    }
    if report.negatives is not None:
        saved["negatives"] = report.negatives.tolist()
    text = json.dumps(saved)
    try:
        from fcn.core.files import atomic_write

        atomic_write(cache, lambda tmp: tmp.write_text(text, encoding="utf-8"))
    except OSError:
        pass
    return report, cache, False


def weights_line(weights: Sequence[float]) -> str:
    """Return loss.class_weights as one line of YAML to paste into a config (4 significant digits).

    Nested, not 'loss.class_weights: [...]': a config file holds sections, and rejects a dotted key.
    """
    values = ", ".join(f"{w:.4g}" for w in weights)
    return f"loss: {{class_weights: [{values}]}}"


def format_split(report: SplitReport, names: Sequence[str], ignore_index: int = VOID) -> list[str]:
    """Return the lines that describe a split's good pairs: pixels per class, void and image sizes."""
    lines = [f"{report.key} ({report.description}): {report.good} good pairs of {report.pairs}"]
    lines += [f"  {line}" for line in report.left_out]
    if report.good == 0:
        return lines
    total = int(report.counts.sum()) if not report.pixels else report.pixels
    width = max(len(name) for name in [*names, "void", "class"])
    lines.append(f"  {'label':>5}  {'class':<{width}}  {'pixels':>13}  {'share':>6}")
    for label, name in [*enumerate(names), (ignore_index, "ignored")]:
        pixels = int(report.counts[label])
        lines.append(f"  {label:>5}  {name:<{width}}  {pixels:>13,}  {100 * pixels / total:>5.1f}%")
    (w0, h0), (w1, h1) = report.min_size, report.max_size
    lines.append(f"  image size: W {w0}..{w1}, H {h0}..{h1}")
    kinds = ", ".join(f"{kind} x {n}" for kind, n in sorted(report.kinds.items()) if kind)
    if kinds:
        lines.append(f"  images as stored: {kinds}")
    return lines


def format_report(
    reports: Sequence[SplitReport], names: Sequence[str], ignore_index: int = VOID, task: str = "multiclass"
) -> str:
    """Return the whole report: bad files, then each split's counts, the weights line and a summary line
    (a binary task: names are its two labels' (background, foreground), the weight is bce's pos_weight)."""
    lines = [str(problem) for report in reports for problem in report.problems]
    if lines:
        lines.append("")
    for report in reports:
        lines += format_split(report, names, ignore_index) + [""]
    train = reports[0]
    if task == "binary" and train.counts[:2].sum() > 0:
        weight = frequency_weights(train, "inverse_frequency", 1, ignore_index, task)
        lines.append(f"bce pos_weight from {train.key}'s pixels (background / foreground), for your config:")
        lines.append(weights_line(weight))
    elif task == "multilabel" and train.negatives is not None:
        weight = frequency_weights(train, "inverse_frequency", len(names) - 1, ignore_index, task)
        lines.append(
            f"bce pos_weight from {train.key}'s pixels (each class's pixels without it / with it), for your config:"
        )
        lines.append(weights_line(weight))
    elif task == "multilabel":
        lines.append(f"no pos_weight: {train.key} has no good pair")
    elif train.counts[: len(names)].sum() > 0:
        lines.append(
            f"class weights from {train.key}'s pixels (inverse frequency, pixel-weighted mean 1), for your config:"
        )
        lines.append(weights_line(frequency_weights(train, "inverse_frequency", len(names), ignore_index)))
    else:
        lines.append(f"no class weights: {train.key} has no good pair with labelled pixels")
    lines.append(
        "; ".join(f"{r.key} {r.description}: {r.pairs} pairs, {len(r.problems)} bad" for r in reports)
    )
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Parse the arguments, check the dataset, print the report and return the exit code (0, 1 or 2)."""
    parser = argparse.ArgumentParser(
        prog="python -m fcn.data.check",
        description="Check data.train and data.val before training: every bad file, class pixels, weights.",
        epilog="Example: python -m fcn.data.check --config my_data.yml data.num_workers=2",
    )
    parser.add_argument(
        "--config",
        action="append",
        default=None,
        help="YAML config (repeatable, merged in order; default: config.yml), as train.py reads it",
    )
    parser.add_argument("overrides", nargs="*", help="key=value overrides, e.g. data.num_workers=2")

    def one_line_error(message: str) -> None:
        raise ConfigError(f"command line: {message} (see --help)")

    parser.error = one_line_error  # argparse's usage block would make the error two lines
    try:
        args = parser.parse_args(argv)
        cfg = load_config(args.config if args.config is not None else ["config.yml"], args.overrides)
        reports = check_dataset(cfg)
    except ValueError as exc:  # a ConfigError, or a split that cannot be listed
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except BrokenProcessPool as exc:  # a worker killed (out of memory?): a failure found during the work
        print(f"error: a worker process died ({exc}); try fewer data.num_workers", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    names = class_names(cfg.data)
    if cfg.data.task == "binary":  # its masks' two labels
        names = ["background", *names]
    elif cfg.data.task == "multilabel":  # each class's pixels (they may overlap), then those of none
        names = [*names, "(no class)"]
    print(format_report(reports, names, cfg.data.ignore_index, cfg.data.task))
    return 1 if any(report.problems for report in reports) else 0


if __name__ == "__main__":
    sys.exit(main())
