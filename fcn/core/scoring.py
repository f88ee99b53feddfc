"""The one scorer of a segmentation model: every metric of every task and head, for training's
evaluation, evaluate.py and its per-image scores alike.

``Scorer.update(output, target)`` takes what a model gave for a batch: logits (or, with
``probs=True``, the probabilities test-time augmentation averages) or labels (integer tensors), and
the masks. It keeps counts only, on the device: a ConfusionMatrix (multiclass; a second one for the
geometric head of SIFT Flow's two-headed net) or ThresholdCounts (binary, multilabel), so
``merge`` and ``all_reduce`` (torch.distributed) add exactly across batches, images and ranks, and
``compute()`` gives the metrics of everything counted. Pixels whose target is the ignore index are
never counted (padding is the ignore index too).

The metrics, per class c from the counts tp, fp (predicted c, truth not c), fn (truth c, predicted
not c), as float64 ratios (multiclass: from ``hist``, rows = ground truth, as score.py):

============  ==============================  ===========================================
key           per class                       nan (left out of the mean) where the class is
============  ==============================  ===========================================
pixel_acc     diag.sum() / hist.sum()         (one number; nan when nothing is labelled)
acc           tp / (tp + fn)                  absent from the ground truth
iou           tp / (tp + fp + fn)             absent from both ground truth and prediction
fwavacc       sum of freq * iou, freq > 0     (one number, freq = the class's share of pixels)
dice          2 tp / (2 tp + fp + fn)         absent from both
fscore        (1+b²) tp / ((1+b²) tp + b² fn + fp)  absent from both (b = eval.fscore_beta)
precision     tp / (tp + fp)                  never predicted
recall        tp / (tp + fn)                  absent from the ground truth (= acc, multiclass)
============  ==============================  ===========================================

``mean_<key>`` is the mean over the classes whose value is not nan (score.py's ``np.nanmean``: 0/0
is nan): a class absent from both ground truth and prediction is left out of every mean, and a
class only predicted (or only in the ground truth) counts 0 in the IU, Dice and F-score means. The
paper's four (pixel_acc, mean_acc, mean_iou, fwavacc) are ConfusionMatrix.compute()'s, unchanged.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch

from fcn.config import VOID
from fcn.core.metrics import ConfusionMatrix, ThresholdCounts, class_ratios, nan_mean
from fcn.core.sliding import argmax_heads
from fcn.core.tasks import SIGMOID_TASKS

BEST_OF_SWEEP = ("mean_iou", "mean_dice", "mean_fscore", "mean_precision", "mean_recall", "pixel_acc")
"""A sweep's 'best' rows: the threshold of the highest value of each of these."""


def confusion_metrics(matrix: ConfusionMatrix, fscore_beta: float = 1.0) -> dict:
    """Return ConfusionMatrix.compute() (the paper's four and per-class iou, acc) followed by the
    compared means mean_dice, mean_fscore, mean_precision, mean_recall, fscore_beta and their
    per-class lists dice, fscore, precision, recall (class_ratios, nan-means)."""
    out = matrix.compute()
    hist = matrix.mat.detach().to("cpu", torch.float64)
    tp = hist.diagonal()
    ratios = class_ratios(tp, hist.sum(0) - tp, hist.sum(1) - tp, fscore_beta)
    del ratios["iou"]  # compute()'s, bit for bit
    head = {k: out[k] for k in ("pixel_acc", "mean_acc", "mean_iou", "fwavacc")}
    means = {f"mean_{key}": nan_mean(values) for key, values in ratios.items()}
    lists = {key: values.tolist() for key, values in ratios.items()}
    return {**head, **means, "fscore_beta": float(fscore_beta), "iou": out["iou"], "acc": out["acc"], **lists}


class Scorer:
    """Streaming counts of a model's predictions against the masks, and every metric from them.

    task 'multiclass' (geometric_classes > 0: a second head whose labels are masks[:, 1]) or
    'binary' / 'multilabel' (one sigmoid per class, decided at ``threshold``; ``sweep``: more
    thresholds counted in the same pass)."""

    def __init__(
        self,
        num_classes: int,
        *,
        task: str = "multiclass",
        ignore_index: int = VOID,
        geometric_classes: int = 0,
        threshold: float = 0.5,
        sweep: Sequence[float] = (),
        fscore_beta: float = 1.0,
        device: torch.device | str | None = None,
    ) -> None:
        if task not in ("multiclass", *SIGMOID_TASKS):
            raise ValueError(f"task must be multiclass, binary or multilabel, got {task!r}")
        if not fscore_beta > 0:
            raise ValueError(f"fscore_beta must be positive, got {fscore_beta}")
        if geometric_classes and task != "multiclass":
            raise ValueError(f"a geometric head is for the multiclass task, not {task}")
        self.num_classes = int(num_classes)
        self.task = task
        self.ignore_index = int(ignore_index)
        self.geometric_classes = int(geometric_classes)
        self.threshold = float(threshold)
        self.sweep = tuple(float(t) for t in sweep)
        self.fscore_beta = float(fscore_beta)
        self.device = device
        self.matrix: ConfusionMatrix | None = None
        self.geometric: ConfusionMatrix | None = None
        self.counts: ThresholdCounts | None = None
        if self.sigmoid:
            grid = sorted({*self.sweep, self.threshold})
            self.counts = ThresholdCounts(num_classes, grid, ignore_index=ignore_index, device=device)
            self._main = grid.index(self.threshold)
        else:
            self.matrix = ConfusionMatrix(num_classes, ignore_index=ignore_index, device=device)
            if geometric_classes:
                self.geometric = ConfusionMatrix(geometric_classes, ignore_index=ignore_index, device=device)

    @property
    def sigmoid(self) -> bool:
        """Whether the task has one sigmoid per class (binary, multilabel)."""
        return self.task in SIGMOID_TASKS

    @property
    def heads(self) -> list[int] | None:
        """The channels of each head of a two-headed model, or None for one head."""
        return [self.num_classes, self.geometric_classes] if self.geometric_classes else None

    def fresh(self) -> Scorer:
        """Return an empty scorer of the same task, classes and threshold (no sweep): one image's."""
        return Scorer(
            self.num_classes,
            task=self.task,
            ignore_index=self.ignore_index,
            geometric_classes=self.geometric_classes,
            threshold=self.threshold,
            fscore_beta=self.fscore_beta,
            device=self.device,
        )

    def update(self, output: torch.Tensor, target: torch.Tensor, *, probs: bool = False) -> None:
        """Count a batch: output is float logits (N, C, H, W) (probs=True: probabilities) or integer
        labels (multiclass (N, H, W), (N, 2, H, W) with a geometric head; binary (N, H, W) 0/1;
        multilabel (N, C, H, W) 0/1); target the masks of the same layout."""
        if self.sigmoid:
            if not output.is_floating_point():
                output = output.float()  # 0/1 labels: above every threshold in (0, 1) where 1
            elif not probs:
                output = torch.sigmoid(output.float())  # fcn.core.tasks.task_probs
            if output.ndim == 3:
                output = output[:, None]
            self.counts.update(output, target)
            return
        # The argmax of logits or of probabilities, each head its own (fcn.core.sliding).
        labels = argmax_heads(output, self.heads) if output.is_floating_point() else output
        if self.geometric is not None:
            self.geometric.update(labels[:, 1], target[:, 1])
            labels, target = labels[:, 0], target[:, 0]
        self.matrix.update(labels, target)

    def _parts(self) -> list:
        return [x for x in (self.matrix, self.geometric, self.counts) if x is not None]

    def merge(self, other: Scorer) -> Scorer:
        """Add the counts of ``other`` (a scorer of the same task and classes) and return self."""
        mine, theirs = self._parts(), other._parts()
        if other.task != self.task or len(mine) != len(theirs):
            raise ValueError(f"cannot merge a {other.task} scorer into a {self.task} one")
        for a, b in zip(mine, theirs):
            a.merge(b)
        return self

    def all_reduce(self) -> None:
        """Sum the counts across ranks when torch.distributed is initialised (no-op otherwise)."""
        for part in self._parts():
            part.all_reduce()

    def compute(self) -> dict:
        """Return the metrics of everything counted, with 'confusion' (multiclass: the matrix;
        sigmoid: tp, fp, fn, tn per class). Multiclass: confusion_metrics(), and with a geometric
        head 'geometric' (its confusion_metrics()) and 'geometric_pixel_acc'. Sigmoid:
        ThresholdCounts.compute() at the threshold, and with a sweep 'sweep' (every threshold) and
        'best' ({metric: the sweep's row of its highest value})."""
        beta = self.fscore_beta
        if self.counts is not None:
            out = self.counts.compute(self._main, beta)
            out["confusion"] = self.counts.confusion(self._main).tolist()
            if self.sweep:
                out["sweep"] = self.counts.sweep(beta)
                out["best"] = {
                    key: max(out["sweep"], key=lambda r, key=key: -math.inf if math.isnan(r[key]) else r[key])
                    for key in BEST_OF_SWEEP
                }
            return out
        out = confusion_metrics(self.matrix, beta)
        out["confusion"] = self.matrix.mat.cpu().tolist()
        if self.geometric is not None:
            out["geometric"] = confusion_metrics(self.geometric, beta)
            out["geometric_pixel_acc"] = out["geometric"]["pixel_acc"]
        return out
