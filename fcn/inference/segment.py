"""Softmax probabilities and class labels of a model (torch or engine) on normalised images: whole or
by sliding windows (fcn.core.sliding), with test-time augmentation (flip, scales); and one PIL image
segmented as its checkpoint's config says (eval.*)."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from PIL import Image
from torch import nn

from fcn.core.runtime import autocast
from fcn.core.sliding import argmax_heads, model_logits, slide_labels, window_options
from fcn.core.tasks import is_sigmoid, task_probs, threshold_labels
from fcn.inference.engines import model_device


def _scaled_size(height: int, width: int, scale: float) -> tuple[int, int]:
    return max(1, int(round(height * scale))), max(1, int(round(width * scale)))


@torch.inference_mode()
def predict_probs(
    model: nn.Module,
    images: torch.Tensor,
    *,
    flip: bool = False,
    scales: Sequence[float] = (1.0,),
    amp: str = "none",
    channels_last: bool = False,
    mode: str = "whole",
    tile: int = 512,
    stride: int = 341,
    window_batch: int = 4,
    heads: Sequence[int] | None = None,
    task: str = "multiclass",
) -> torch.Tensor:
    """Return softmax probabilities (N, C, H, W) float32 (task binary/multilabel: each class's
    sigmoid, fcn.core.tasks) at the input's size, averaged over the
    scales (input resized bilinearly, logits resized back) and, with flip, the mirrored input; each
    of them predicted whole or by sliding windows (mode, tile, stride, window_batch: fcn.core.sliding).
    heads: the channels of each head of a two-headed model (SIFT Flow's [33, 3]), each its own softmax."""
    if images.ndim != 4:
        raise ValueError(
            f"predict_probs expects images of shape (N, channels, H, W), got {tuple(images.shape)}"
        )
    scales = [float(s) for s in scales] or [1.0]
    height, width = images.shape[-2:]
    window = dict(mode=mode, tile=tile, stride=stride, window_batch=window_batch)
    total = None
    count = 0
    with autocast(images.device, amp):
        for scale in scales:
            x = images
            if scale != 1.0:
                size = _scaled_size(height, width, scale)
                x = F.interpolate(images, size=size, mode="bilinear", align_corners=False)
            for mirrored in (False, True) if flip else (False,):
                xi = x.flip(-1) if mirrored else x
                logits = model_logits(model, xi, channels_last, **window).float()
                if mirrored:
                    logits = logits.flip(-1)
                if logits.shape[-2:] != (height, width):
                    logits = F.interpolate(logits, size=(height, width), mode="bilinear", align_corners=False)
                probs = task_probs(logits, task, heads)
                del logits  # at a photo's size each (N, C, H, W) float32 tensor is a gigabyte
                total = probs if total is None else total.add_(probs)
                count += 1
    return total.div_(count)


def predict_labels(
    model: nn.Module,
    images: torch.Tensor,
    *,
    flip: bool = False,
    scales: Sequence[float] = (1.0,),
    amp: str = "none",
    channels_last: bool = False,
    mode: str = "whole",
    tile: int = 512,
    stride: int = 341,
    window_batch: int = 4,
    heads: Sequence[int] | None = None,
    task: str = "multiclass",
    threshold: float = 0.5,
) -> torch.Tensor:
    """Return predicted class indices (N, H, W) int64: argmax of the logits, or of the averaged
    probabilities when flip or scales ask for test-time augmentation; whole or by sliding windows.
    With heads (a two-headed model's channels per head), (N, K, H, W): each head's own argmax. A
    sigmoid task: the (averaged) sigmoids above threshold, (N, H, W) 0/1 for binary, (N, C, H, W)
    for multilabel (fcn.core.tasks.threshold_labels)."""
    window = dict(mode=mode, tile=tile, stride=stride, window_batch=window_batch)
    if is_sigmoid(task):
        options = dict(flip=flip, scales=scales, amp=amp, channels_last=channels_last, task=task)
        return threshold_labels(predict_probs(model, images, **options, **window), task, threshold)
    if flip or [float(s) for s in scales] != [1.0]:
        probs = predict_probs(
            model,
            images,
            flip=flip,
            scales=scales,
            amp=amp,
            channels_last=channels_last,
            heads=heads,
            **window,
        )
        return argmax_heads(probs, heads)
    with torch.inference_mode(), autocast(images.device, amp):
        if mode == "slide":  # the same labels, the class sums held one band of rows at a time
            return slide_labels(
                model,
                images,
                tile=tile,
                stride=stride,
                window_batch=window_batch,
                channels_last=channels_last,
                heads=heads,
            )
        return argmax_heads(model_logits(model, images, channels_last, **window), heads)


def segment(
    model: nn.Module,
    image: Image.Image,
    cfg: DictConfig,
    *,
    flip: bool | None = None,
    scales: Sequence[float] | None = None,
    amp: str | None = None,
    channels_last: bool | None = None,
) -> np.ndarray:
    """Return the predicted uint8 class-index mask (H, W) of one PIL image of any mode and size
    (a sigmoid task: 0/1, (H, W) binary, (C, H, W) multilabel, at eval.threshold);
    test-time augmentation and precision default to the config's eval.* keys, as does whole or
    sliding-window inference (eval.mode)."""
    from fcn.core.normalize import input_normalization
    from fcn.data.pixels import preprocess

    e = cfg.eval
    x = preprocess(image, input_normalization(cfg.data.transforms)).unsqueeze(0)
    x = x.to(model_device(model))
    labels = predict_labels(
        model,
        x,
        flip=bool(e.flip) if flip is None else flip,
        scales=list(e.scales) if scales is None else scales,
        amp=e.amp if amp is None else amp,
        channels_last=bool(e.channels_last) if channels_last is None else channels_last,
        heads=model_heads(cfg),
        **window_options(cfg),
        **task_options(cfg),
    )
    two_heads = labels.ndim == 4 and cfg.data.task == "multiclass"  # SIFT Flow's (multilabel: C planes)
    if two_heads:  # the semantic head's labels
        labels = labels[:, 0]
    return labels[0].to(torch.uint8).cpu().numpy()


def model_heads(cfg: DictConfig) -> list[int] | None:
    """Return the channels of each head of a two-headed model ([semantic, geometric] classes for
    model.geometric_classes > 0), or None for the usual one head."""
    geometric = int(cfg.model.geometric_classes)
    return [int(cfg.model.num_classes), geometric] if geometric else None


def task_options(cfg: DictConfig) -> dict:
    """Return the config's data.task and eval.threshold as predict_probs / predict_labels keywords."""
    return {"task": str(cfg.data.task), "threshold": float(cfg.eval.threshold)}
