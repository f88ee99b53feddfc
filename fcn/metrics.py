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
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.distributed as dist

# Targets at most this large are binned directly (their rows fall past num_classes**2 and are
# dropped); larger or negative ones are first mapped to the overflow row num_classes.
_MAX_DIRECT_TARGET = 1024
# Interleaved sub-histograms per bincount on the CPU (see update); 4 was fastest on 500x500 maps.
_CPU_LANES = 4


def _check_indices(x: torch.Tensor, name: str) -> torch.Tensor:
    """Return ``x`` as an integer tensor of class indices, or raise TypeError for other dtypes."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of class indices, got {type(x).__name__}")
    if x.dtype == torch.bool:
        return x.to(torch.uint8)
    if x.is_floating_point() or x.is_complex():
        raise TypeError(
            f"{name} must hold integer class indices, got dtype {x.dtype} (take logits.argmax(1) first)"
        )
    return x


class ConfusionMatrix:
    """Streaming confusion matrix ``mat`` (LongTensor CxC, rows = ground truth) on one device."""

    def __init__(self, num_classes: int, ignore_index: int = 255, device: torch.device | str | None = None):
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.num_classes = int(num_classes)
        self.ignore_index = int(ignore_index)
        self.mat = torch.zeros(num_classes, num_classes, dtype=torch.int64, device=device)
        self._lanes: dict[torch.dtype, torch.Tensor] = {}

    def __repr__(self) -> str:
        return (
            f"ConfusionMatrix(num_classes={self.num_classes}, ignore_index={self.ignore_index}, "
            f"device={self.mat.device}, pixels={int(self.mat.sum())})"
        )

    def reset(self) -> None:
        """Zero the counts."""
        self.mat.zero_()

    @torch.no_grad()
    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        """Add the pixels of ``pred`` vs ``target`` (integer class-index tensors of equal shape).

        Targets equal to ``ignore_index`` or outside [0, num_classes) are not counted; a prediction
        outside [0, num_classes) raises ValueError.
        """
        pred = _check_indices(pred, "pred")
        target = _check_indices(target, "target")
        if pred.shape != target.shape:
            raise ValueError(
                f"pred shape {tuple(pred.shape)} != target shape {tuple(target.shape)}; "
                "pass class indices (e.g. logits.argmax(1)) of the mask's shape"
            )
        n = self.num_classes
        device = self.mat.device
        pred = pred.to(device, non_blocking=True).reshape(-1)
        target = target.to(device, non_blocking=True).reshape(-1)
        if pred.numel() == 0:
            return

        pmin, pmax = torch.aminmax(pred)
        tmin, tmax = torch.aminmax(target)
        bounds = (pmin, pmax, tmin, tmax)
        if device.type == "cpu":
            pmin, pmax, tmin, tmax = (int(b) for b in bounds)
        else:  # one host sync for the four bounds (bincount syncs on CUDA anyway)
            pmin, pmax, tmin, tmax = torch.stack([b.long() for b in bounds]).tolist()
        if pmin < 0 or pmax >= n:
            bad = pmin if pmin < 0 else pmax
            raise ValueError(f"pred holds class index {bad}, outside [0, {n}) for num_classes={n}")

        if 0 <= self.ignore_index < n:
            target = target.long().masked_fill(target == self.ignore_index, n)
            tmax = max(tmax, n)
        if tmin < 0 or tmax > max(_MAX_DIRECT_TARGET, n):
            target = target.long()
            target = torch.where((target < 0) | (target >= n), n, target)
            tmax = n

        # bin = target * n + pred: a target >= n (void 255) lands past n*n and is dropped. On the CPU
        # each pixel also gets one of _CPU_LANES interleaved sub-histograms by position, so runs of one
        # class (every real mask) do not serialise bincount on increments of a single counter.
        lanes = _CPU_LANES if device.type == "cpu" else 1
        wide = torch.int64 in (pred.dtype, target.dtype) or (tmax + 1) * n * lanes >= 2**31
        dtype = torch.int64 if wide else torch.int32  # int32 halves memory traffic where it fits
        if lanes > 1:
            index = torch.add(self._lane_offsets(pred.numel(), lanes, dtype), pred, alpha=lanes)
            index.add_(target, alpha=n * lanes)
        else:
            index = torch.add(pred.to(dtype), target.to(dtype), alpha=n)
        counts = torch.bincount(index, minlength=n * n * lanes)[: n * n * lanes]
        if lanes > 1:
            counts = counts.view(n * n, lanes).sum(1)
        self.mat += counts.view(n, n)

    def _lane_offsets(self, numel: int, lanes: int, dtype: torch.dtype) -> torch.Tensor:
        """Return [0, 1, .., lanes-1, 0, 1, ..] of length numel (cached, grown as needed)."""
        cached = self._lanes.get(dtype)
        if cached is None or cached.numel() < numel:
            cached = torch.arange(numel, dtype=dtype, device=self.mat.device).remainder_(lanes)
            self._lanes[dtype] = cached
        return cached[:numel]

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


def format_table(metrics: dict, class_names: Sequence[str]) -> str:
    """Return a one-screen summary: the four metrics, then per-class IU and accuracy (%) in columns."""
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
    name_width = min(16, max([5] + [len(name) for name in class_names]))
    cells = [
        f"{name[:name_width]:<{name_width}} {_fmt(i)} {_fmt(a)}" for name, i, a in zip(class_names, iou, acc)
    ]
    # At most 3 columns (about 100 characters), each at most 16 rows long when that suffices.
    columns = min(3, max(1, math.ceil(len(cells) / 16)))
    rows = math.ceil(len(cells) / columns)
    header = f"{'class':<{name_width}} {'IU':>6} {'acc':>6}"
    sep = "   "
    lines.append(sep.join([header] * min(columns, len(cells))).rstrip())
    for r in range(rows):
        lines.append(sep.join(cells[c * rows + r] for c in range(columns) if c * rows + r < len(cells)))
    return "\n".join(lines)
