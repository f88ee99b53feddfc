"""What a model's logits mean for each data.task, in one place for training, evaluation, prediction
and export.

- multiclass: a softmax over the channels (each head's own, for a two-headed model); the label of a
  pixel is the argmax (fcn.core.sliding).
- binary: one channel, a sigmoid; the pixel is foreground where the probability is above
  eval.threshold. Labels are (N, H, W) 0/1, the layout of a binary task's masks.
- multilabel: one sigmoid per class; each class is decided on its own, so a pixel may be several
  classes or none. Labels are (N, C, H, W) 0/1, the layout of a multilabel task's masks.

The decision is ``probability > threshold`` on the float32 sigmoid everywhere (mmsegmentation's
rule), so that the ONNX graph, which ends in the sigmoid, and PyTorch decide alike.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from fcn.core.sliding import argmax_heads, softmax_heads

SIGMOID_TASKS = ("binary", "multilabel")


def is_sigmoid(task: str) -> bool:
    """Return whether data.task gives one sigmoid logit per class (binary, multilabel)."""
    return task in SIGMOID_TASKS


def task_probs(
    logits: torch.Tensor, task: str = "multiclass", heads: Sequence[int] | None = None
) -> torch.Tensor:
    """Return the probabilities of logits (N, C, H, W): the softmax over classes (each head's own),
    or for a sigmoid task each channel's float32 sigmoid."""
    if is_sigmoid(task):
        return torch.sigmoid(logits.float())
    return softmax_heads(logits, heads)


def threshold_labels(probs: torch.Tensor, task: str, threshold: float = 0.5) -> torch.Tensor:
    """Return the int64 labels of a sigmoid task's probabilities (N, C, H, W): probs > threshold,
    (N, H, W) for binary (its one channel), (N, C, H, W) for multilabel."""
    decided = (probs > threshold).long()
    return decided[:, 0] if task == "binary" else decided


def task_labels(
    scores: torch.Tensor,
    task: str = "multiclass",
    threshold: float = 0.5,
    heads: Sequence[int] | None = None,
) -> torch.Tensor:
    """Return the labels of logits (N, C, H, W) (multiclass: or of their softmax): the argmax for
    multiclass, else threshold_labels of the logits' sigmoid."""
    if is_sigmoid(task):
        return threshold_labels(torch.sigmoid(scores.float()), task, threshold)
    return argmax_heads(scores, heads)


def as_channels(masks: torch.Tensor, task: str) -> torch.Tensor:
    """Return a sigmoid task's masks as (N, C, H, W): a binary task's (N, H, W) get their one channel."""
    return masks[:, None] if task == "binary" and masks.ndim == 3 else masks


def display_labels(labels: torch.Tensor | np.ndarray, task: str, ignore_index: int = 255) -> np.ndarray:
    """Return the (H, W) uint8 label map pictures draw for one image's labels or mask (fcn.data's
    palette and display_names): multiclass as it is; binary 0/1 as it is; multilabel (C, H, W) as
    1 + the highest class present (0: none), ignore_index where every class is ignored."""
    array = labels.detach().cpu().numpy() if isinstance(labels, torch.Tensor) else np.asarray(labels)
    if task != "multilabel":
        return array.astype(np.uint8)
    on = array == 1
    index = np.where(on.any(0), on.shape[0] - np.argmax(on[::-1], axis=0), 0).astype(np.uint8)
    index[(array == ignore_index).all(0)] = ignore_index
    return index
