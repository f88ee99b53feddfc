"""Class weights from a split's pixel counts: inverse and median frequency (loss.class_weights), bce's
pos_weight, and the counts themselves read once by the scanner and cached beside the data
(split_report_cached: what training imports for loss.class_weights=inverse_frequency).
"""

from __future__ import annotations

import contextlib
import functools
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any, Optional

import numpy as np

from fcn.data.coco import CocoListing
from fcn.data.formats import format_of
from fcn.data.listing import Listing
from fcn.data.scan import (
    SplitReport,
    describe,
    external_dataset,
    inspect_item,
    list_split,
    mask_reader,
    read_pairs,
    summarise,
)


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
    if float(data_cfg.val_fraction):  # the JSON's key (below) does not say which items the split kept
        h.update(f"val_fraction {float(data_cfg.val_fraction)!r} {len(listing.ids)}\n".encode())
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
    <dir>/.fcn_class_counts_<split>_<checksum>.json, <dir> its format's counts_dir (its root; a
    'pairs' dataset's masks directory, a COCO JSON's cache; see counts_checksum); a root that cannot be
    written is not an error (the counts are then computed again by the next run)."""
    import json

    if not format_of(ds_cfg.name).files:  # no files to checksum: counted each time, not cached
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
    where = format_of(ds_cfg.name).counts_dir(ds_cfg, listing)
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
