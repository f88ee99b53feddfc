"""The paper's segmentation metrics from a streaming confusion matrix.

The four numbers are those of the reference ``score.py`` (fcn.berkeleyvision.org), computed from
``hist`` (rows = ground truth, columns = prediction):

- pixel accuracy  ``diag.sum() / hist.sum()``
- mean accuracy   ``nanmean(diag / hist.sum(1))``
- mean IU         ``nanmean(diag / (hist.sum(1) + hist.sum(0) - diag))``
- fwavacc         ``(freq[freq > 0] * iu[freq > 0]).sum()`` with ``freq = hist.sum(1) / hist.sum()``

A class absent from both ground truth and prediction has IU 0/0 = nan and is left out of the mean;
a class absent from the ground truth only has accuracy nan (left out of mean accuracy) and IU 0
(counted, as the reference counts it).

The compared metrics (Dice, F-score, precision, recall: class_ratios) follow the same 0/0 = nan rule;
fcn.core.scoring.Scorer is what training and evaluate.py score with, and its docstring has the table.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.distributed as dist

from fcn.config import VOID

# Interleaved sub-histograms per bincount on the CPU (see update); 4 was fastest on 500x500 maps.
_CPU_LANES = 4
# Index dtypes whose every value converts to int32 unchanged.
_EXACT_IN_INT32 = (torch.int32, torch.int16, torch.int8, torch.uint8, torch.bool)


def _check_indices(x: torch.Tensor, name: str) -> None:
    """Raise TypeError unless ``x`` is a tensor of integer (or bool) class indices."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of class indices, got {type(x).__name__}")
    if x.is_floating_point() or x.is_complex():
        raise TypeError(
            f"{name} must hold integer class indices, got dtype {x.dtype} (take logits.argmax(1) first)"
        )


class ConfusionMatrix:
    """Streaming confusion matrix ``mat`` (LongTensor CxC, rows = ground truth) on one device."""

    def __init__(self, num_classes: int, ignore_index: int = VOID, device: torch.device | str | None = None):
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.num_classes = int(num_classes)
        self.ignore_index = int(ignore_index)
        self.mat = torch.zeros(num_classes, num_classes, dtype=torch.int64, device=device)
        self._side = self.num_classes + 2  # the histogram's border: indices -1 and n (see update)
        self._lanes = _CPU_LANES if self.mat.device.type == "cpu" else 1
        # int32 indices halve the memory traffic where the largest bin fits
        self._index_dtype = torch.int32 if self._side**2 * self._lanes < 2**31 else torch.int64
        self._buffers: tuple[torch.Tensor, ...] | None = None  # see _workspace

    def __repr__(self) -> str:
        return (
            f"ConfusionMatrix(num_classes={self.num_classes}, ignore_index={self.ignore_index}, "
            f"device={self.mat.device}, pixels={int(self.mat.sum())})"
        )

    def reset(self) -> None:
        """Zero the counts."""
        self.mat.zero_()

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        """Add the pixels of ``pred`` vs ``target`` (integer class-index tensors of equal shape).

        Targets equal to ``ignore_index`` or outside [0, num_classes) are not counted; a prediction
        outside [0, num_classes) raises ValueError (and nothing is counted).
        """
        _check_indices(pred, "pred")
        _check_indices(target, "target")
        if pred.shape != target.shape:
            raise ValueError(
                f"pred shape {tuple(pred.shape)} != target shape {tuple(target.shape)}; "
                "pass class indices (e.g. logits.argmax(1)) of the mask's shape"
            )
        numel = pred.numel()
        if numel == 0:
            return
        n, side, lanes = self.num_classes, self._side, self._lanes
        lane_base, p, t, wide = self._workspace(numel)
        # Both indices are clamped to [-1, n] and shifted by one, so the histogram has a border row and
        # column on each side: border rows are ignored targets, border columns invalid predictions.
        # A look at 4 * (n + 2) counts thus replaces range checks over the pixels.
        self._clamp_into(p, pred, wide)
        self._clamp_into(t, target, wide)
        if 0 <= self.ignore_index < n:
            t.masked_fill_(t == self.ignore_index, -1)
        # bin = ((t + 1) * side + (p + 1)) * lanes + lane. On the CPU each pixel goes to one of `lanes`
        # interleaved sub-histograms by position, so the runs of one class that fill every real mask
        # do not serialise bincount on increments of a single counter.
        index = torch.add(lane_base, p, alpha=lanes, out=p)
        index.add_(t, alpha=side * lanes)
        hist = torch.bincount(index, minlength=side * side * lanes).view(side, side, lanes)
        if int(hist[:, :: side - 1].sum()):  # columns 0 and side - 1: predictions -1 and n
            pred = pred.detach().to("cpu", torch.int64)
            bad = pred[(pred < 0) | (pred >= n)][0].item()
            raise ValueError(f"pred holds class index {bad}, outside [0, {n}) for num_classes={n}")
        self.mat += hist[1 : n + 1, 1 : n + 1].sum(2)

    def _clamp_into(self, out: torch.Tensor, x: torch.Tensor, wide: torch.Tensor) -> None:
        """Write x, flattened and clamped to [-1, num_classes], into ``out`` (on the matrix's device)."""
        n = self.num_classes
        x = x.reshape(-1)
        if x.dtype in _EXACT_IN_INT32 or out.dtype == torch.int64:
            out.copy_(x).clamp_(-1, n)  # copy_ converts the dtype and crosses devices
        else:
            # int64 (and wider unsigned types): clamp before narrowing, as a cast would wrap values
            # beyond int32 into class indices (a uint64 beyond 2**63 turns negative: still outside)
            if x.dtype != torch.int64 or x.device != out.device:
                x = x.to(out.device, torch.int64, non_blocking=True)
            out.copy_(torch.clamp(x, -1, n, out=wide))

    def _workspace(self, numel: int) -> tuple[torch.Tensor, ...]:
        """Return (lane base, pred buffer, target buffer, int64 buffer) of numel elements, reused across
        updates: the lane base is position % lanes + (side + 1) * lanes (the +1 shifts of both indices)."""
        if self._buffers is None or self._buffers[0].numel() < numel:
            device, dtype = self.mat.device, self._index_dtype
            lane_base = torch.arange(numel, dtype=dtype, device=device).remainder_(self._lanes)
            lane_base += (self._side + 1) * self._lanes
            self._buffers = (
                lane_base,
                torch.empty(numel, dtype=dtype, device=device),
                torch.empty(numel, dtype=dtype, device=device),
                torch.empty(numel, dtype=torch.int64, device=device),  # pages untouched unless used
            )
        if self._buffers[0].numel() == numel:
            return self._buffers
        return tuple(b[:numel] for b in self._buffers)

    def merge(self, other: ConfusionMatrix) -> ConfusionMatrix:
        """Add the counts of ``other`` (same num_classes) into this matrix and return self."""
        if not isinstance(other, ConfusionMatrix):
            raise TypeError(f"can only merge a ConfusionMatrix, got {type(other).__name__}")
        if other.num_classes != self.num_classes:
            raise ValueError(
                f"cannot merge num_classes={other.num_classes} into num_classes={self.num_classes}"
            )
        self.mat += other.mat.to(self.mat.device)
        return self

    def all_reduce(self) -> None:
        """Sum the counts across ranks when torch.distributed is initialised (no-op otherwise)."""
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(self.mat, op=dist.ReduceOp.SUM)

    def compute(self) -> dict:
        """Return pixel_acc, mean_acc, mean_iou, fwavacc (floats) and per-class iou, acc (lists, nan = absent)."""
        hist = self.mat.detach().to("cpu", torch.float64)
        diag = hist.diagonal()
        gt = hist.sum(1)
        total = hist.sum()
        # 0/0 -> nan, as numpy does in score.py (float64 division, no exception).
        acc = diag / gt
        iou = diag / (gt + hist.sum(0) - diag)
        freq = gt / total
        valid = freq > 0
        return {
            "pixel_acc": float(diag.sum() / total),
            "mean_acc": float(torch.nanmean(acc)),
            "mean_iou": float(torch.nanmean(iou)),
            "fwavacc": float((freq[valid] * iou[valid]).sum()) if bool(valid.any()) else math.nan,
            "iou": iou.tolist(),
            "acc": acc.tolist(),
        }


def _fmt(x: float, width: int = 6) -> str:
    """Return ``x`` as a percentage with 2 decimals, or '-' for nan, right-aligned in ``width``."""
    return f"{'-' if math.isnan(x) else f'{100 * x:.2f}':>{width}}"


COMPARED_COLUMNS = (("Dice", "dice"), ("F1", "fscore"), ("prec", "precision"), ("recall", "recall"))
"""The metrics users compare (mmseg's mDice, mFscore, precision, recall): (table label, key)."""


def _label(label: str, metrics: dict) -> str:
    """Return a column's label, F1 as F<beta> when the metrics' fscore_beta is not 1."""
    return f"F{metrics.get('fscore_beta', 1.0):g}" if label == "F1" else label


def _columns(cells: list[str], header: str, width: int) -> list[str]:
    """Return the header and the cells in at most 3 columns (lines of at most about ``width``
    characters), each at most 16 rows long when that suffices."""
    sep = "   "
    fit = max(1, (width + len(sep)) // (len(header) + len(sep)))
    columns = min(3, fit, max(1, math.ceil(len(cells) / 16)))
    rows = math.ceil(len(cells) / columns)
    lines = [sep.join([header] * min(columns, len(cells))).rstrip()]
    for r in range(rows):
        lines.append(sep.join(cells[c * rows + r] for c in range(columns) if c * rows + r < len(cells)))
    return lines


def format_table(metrics: dict, class_names: Sequence[str]) -> str:
    """Return a one-screen summary: the four metrics, the compared means (where the metrics hold
    them: fcn.core.scoring), then per-class IU, accuracy and those metrics (%) in columns."""
    iou = list(metrics["iou"])
    acc = list(metrics.get("acc", [math.nan] * len(iou)))
    if len(class_names) != len(iou):
        raise ValueError(f"{len(class_names)} class names for {len(iou)} classes in the metrics")
    lines = [
        "  ".join(
            f"{label} {_fmt(metrics[key], 0)}"
            for label, key in (
                ("pixel acc", "pixel_acc"),
                ("mean acc", "mean_acc"),
                ("mean IU", "mean_iou"),
                ("fwavacc", "fwavacc"),
            )
        )
        + "  (%)"
    ]
    compared = [(_label(label, metrics), key) for label, key in COMPARED_COLUMNS if key in metrics]
    if compared:
        means = "  ".join(f"{label} {_fmt(metrics[f'mean_{key}'], 0)}" for label, key in compared)
        lines.append(f"mean {means}  (%)")
    name_width = min(16, max([5] + [len(name) for name in class_names]))
    values = [iou, acc, *[list(metrics[key]) for _, key in compared]]
    cells = [
        f"{name[:name_width]:<{name_width}} " + " ".join(_fmt(v[c]) for v in values)
        for c, name in enumerate(class_names)
    ]
    labels = ["IU", "acc", *[label for label, _ in compared]]
    header = f"{'class':<{name_width}} " + " ".join(f"{label:>6}" for label in labels)
    lines.extend(_columns(cells, header, 120))
    return "\n".join(lines)


def class_ratios(tp: torch.Tensor, fp: torch.Tensor, fn: torch.Tensor, fscore_beta: float = 1.0) -> dict:
    """Return per-class float64 tensors iou, dice, fscore, precision, recall of the counts tp, fp, fn
    (float64, one per class); 0/0 is nan (as score.py's numpy division), left out of every mean.

    F-score is the count form of ``(1 + b^2) P R / (b^2 P + R)`` (torchmetrics' FBetaScore): nan only
    where tp + fp + fn = 0, as IU and Dice, and equal to Dice at beta = 1."""
    b2 = float(fscore_beta) ** 2
    return {
        "iou": tp / (tp + fp + fn),
        "dice": 2 * tp / (2 * tp + fp + fn),
        "fscore": (1 + b2) * tp / ((1 + b2) * tp + b2 * fn + fp),
        "precision": tp / (tp + fp),
        "recall": tp / (tp + fn),
    }


def nan_mean(values: torch.Tensor) -> float:
    """Return the mean of the values that are not nan (score.py's np.nanmean), nan when all are."""
    return float(torch.nanmean(values)) if bool((~values.isnan()).any()) else math.nan


class ThresholdCounts:
    """Streaming per-class counts of a sigmoid task (binary, multilabel) at one or more thresholds.

    ``mat`` (LongTensor C x (T + 1) x 2) counts, per class, the labelled pixels by their bucket (how
    many of the T thresholds their probability is above) and their truth (0: negative, 1: positive):
    a pixel is predicted positive at threshold t_k where its bucket is above k (probability > t_k).
    So one pass gives exact true/false positives and negatives at every threshold, and the counts
    add across batches and ranks like the confusion matrix (exact under DDP)."""

    def __init__(
        self,
        num_classes: int,
        thresholds: Sequence[float] = (0.5,),
        ignore_index: int = VOID,
        device: torch.device | str | None = None,
    ) -> None:
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        values = [float(t) for t in thresholds]
        if not values or values != sorted(set(values)):
            raise ValueError(f"thresholds {values} must be increasing and distinct")
        self.num_classes = int(num_classes)
        self.thresholds = values
        self.ignore_index = int(ignore_index)
        self.mat = torch.zeros(num_classes, len(values) + 1, 2, dtype=torch.int64, device=device)
        self._bounds = torch.tensor(values, dtype=torch.float32, device=self.mat.device)

    def reset(self) -> None:
        """Zero the counts."""
        self.mat.zero_()

    def update(self, probs: torch.Tensor, target: torch.Tensor) -> None:
        """Add the pixels of probabilities ``probs`` (N, C, H, W) vs 0/1 ``target`` of the same shape
        (or (N, H, W) for one class); targets equal to ignore_index (or other than 0/1) are not counted."""
        if probs.ndim == target.ndim + 1 and probs.shape[1] == 1:
            target = target[:, None]
        if probs.shape != target.shape or probs.ndim != 4 or probs.shape[1] != self.num_classes:
            raise ValueError(
                f"probs shape {tuple(probs.shape)} and target shape {tuple(target.shape)} must both be "
                f"(N, {self.num_classes}, H, W)"
            )
        if not probs.is_floating_point():
            raise TypeError(f"probs must be probabilities (a float tensor), got dtype {probs.dtype}")
        bounds = self._bounds.to(probs.device)
        t = len(self.thresholds) + 1
        # bucket = the number of thresholds strictly below the probability: positive at t_k iff bucket > k
        bucket = torch.bucketize(probs.float().transpose(0, 1).reshape(self.num_classes, -1), bounds)
        truth = target.transpose(0, 1).reshape(self.num_classes, -1).long()
        valid = (truth == 0) | (truth == 1)
        cls = torch.arange(self.num_classes, device=probs.device)[:, None].expand_as(truth)
        index = (cls * t + bucket) * 2 + truth.clamp(0, 1)
        counts = torch.bincount(index[valid], minlength=self.num_classes * t * 2)
        self.mat += counts.view(self.num_classes, t, 2).to(self.mat.device)

    def merge(self, other: ThresholdCounts) -> ThresholdCounts:
        """Add the counts of ``other`` (same classes and thresholds) into these and return self."""
        if other.num_classes != self.num_classes or other.thresholds != self.thresholds:
            raise ValueError("cannot merge counts of other classes or thresholds")
        self.mat += other.mat.to(self.mat.device)
        return self

    def all_reduce(self) -> None:
        """Sum the counts across ranks when torch.distributed is initialised (no-op otherwise)."""
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(self.mat, op=dist.ReduceOp.SUM)

    def confusion(self, k: int = 0) -> torch.Tensor:
        """Return (C, 4) float64 counts tp, fp, fn, tn of each class at the k-th threshold."""
        mat = self.mat.detach().to("cpu", torch.float64)
        above = mat[:, k + 1 :].sum(1)  # (C, 2): predicted positive, by truth
        total = mat.sum(1)
        tp, fp = above[:, 1], above[:, 0]
        fn, tn = total[:, 1] - tp, total[:, 0] - fp
        return torch.stack([tp, fp, fn, tn], dim=1)

    def compute(self, k: int = 0, fscore_beta: float = 1.0) -> dict:
        """Return the metrics at the k-th threshold: per-class lists iou, dice, fscore (F-beta at
        fscore_beta; = dice at 1), precision, recall (nan where undefined: 0/0; class_ratios), their
        nan-means mean_iou, mean_dice, mean_fscore, mean_precision, mean_recall, fscore_beta, and
        pixel_acc (the share of right decisions over all labelled pixel-class pairs)."""
        tp, fp, fn, tn = self.confusion(k).unbind(1)
        per_class = class_ratios(tp, fp, fn, fscore_beta)
        total = float((tp + fp + fn + tn).sum())
        out: dict = {
            "threshold": self.thresholds[k],
            "pixel_acc": float((tp + tn).sum()) / total if total else math.nan,
        }
        for key, values in per_class.items():
            out[f"mean_{key}"] = nan_mean(values)
        out["fscore_beta"] = float(fscore_beta)
        out.update({key: values.tolist() for key, values in per_class.items()})
        return out

    def sweep(self, fscore_beta: float = 1.0) -> list[dict]:
        """Return compute() at every threshold, in increasing order."""
        return [self.compute(k, fscore_beta) for k in range(len(self.thresholds))]


SIGMOID_COLUMNS = (("IoU", "iou"), *COMPARED_COLUMNS)


def format_sigmoid_table(metrics: dict, class_names: Sequence[str]) -> str:
    """Return a sigmoid task's summary: the means at the threshold, then per class IoU, Dice,
    F-score, precision and recall (%), one row each."""
    columns = [(_label(label, metrics), key) for label, key in SIGMOID_COLUMNS if key in metrics]
    head = "  ".join(f"{label} {_fmt(metrics[f'mean_{key}'], 0)}" for label, key in columns)
    lines = [
        f"threshold {metrics['threshold']:g}: mean {head}  pixel acc {_fmt(metrics['pixel_acc'], 0)}  (%)"
    ]
    if len(class_names) != len(metrics["iou"]):
        raise ValueError(f"{len(class_names)} class names for {len(metrics['iou'])} classes in the metrics")
    width = min(16, max([5] + [len(name) for name in class_names]))
    lines.append(f"{'class':<{width}} " + " ".join(f"{label:>6}" for label, _ in columns))
    for c, name in enumerate(class_names):
        lines.append(f"{name[:width]:<{width}} " + " ".join(_fmt(metrics[key][c]) for _, key in columns))
    return "\n".join(lines)
