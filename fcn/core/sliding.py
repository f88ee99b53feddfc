"""Sliding-window inference (``eval.mode=slide``): the logits of an image of any size computed from
fixed-size windows, so that the model's activations are bounded by the window, not by the image.

Windows of ``eval.tile`` x ``eval.tile`` pixels (clamped to the image) start every ``eval.stride``
pixels, the last window of each row and column flush with the image's bottom/right edge, so that
every pixel is covered; ``eval.window_batch`` windows go through the model in one forward.

Blending: the plain **mean** of the logits of the windows that cover a pixel (mmsegmentation's
``slide`` mode does the same). A smooth window (Hann, Gaussian) would down-weight the predictions
near a tile's border, where the receptive field meets the tile's padding; with a third of overlap
(the default stride, 2/3 of the tile) every such border pixel also lies well inside a neighbouring
window, so the mean already lets the better-placed window count, and it keeps two useful exact
properties: one window covering the image gives the ``whole`` logits bit for bit, and a model
without spatial context (1x1 convolutions) gives the ``whole`` logits up to rounding.

Memory: the model sees at most ``window_batch`` windows at a time. slide_logits returns the
blended logits, so its per-class sums are one float32 tensor at the image's size (N x C x H x W:
1 GB for a 4000x3000 image at 21 classes), accumulated in place, plus an H x W coverage count.
slide_labels, for callers that want only the labels, keeps the sums of one band of rows (the rows
the current row of windows covers: C x (tile + stride) x W) and decides each row's classes as soon as
no later window covers it: the same sums in the same order, so the same labels, bit for bit, in a
fraction of the memory (a 6000 x 4000 photo at 21 classes, 512/341 windows four at a time: 0.5 GB
instead of 2 GB). Used alike by
training's evaluation (fcn.training.validate) and by evaluate.py/predict.py (fcn.inference.loading).
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import Tensor, nn

from fcn.core.runtime import amp_forward

MODES = ("whole", "slide")  # eval.mode


def window_options(cfg: Any) -> dict:
    """Return the config's whole/slide keywords of model_logits (eval.mode, eval.tile, eval.stride,
    eval.window_batch)."""
    e = cfg.eval
    return {"mode": e.mode, "tile": int(e.tile), "stride": int(e.stride), "window_batch": int(e.window_batch)}


def model_logits(
    model: nn.Module,
    x: Tensor,
    channels_last: bool = False,
    *,
    mode: str = "whole",
    tile: int = 512,
    stride: int = 341,
    window_batch: int = 4,
) -> Tensor:
    """Return the model's logits of x: one forward ('whole') or blended windows ('slide'); call it
    under the caller's autocast and inference mode."""
    if mode == "slide":
        return slide_logits(
            model, x, tile=tile, stride=stride, window_batch=window_batch, channels_last=channels_last
        )
    if mode != "whole":
        raise ValueError(f"mode='{mode}' is not one of {', '.join(MODES)}")
    return amp_forward(model, x.contiguous(memory_format=torch.channels_last) if channels_last else x)


def window_starts(length: int, tile: int, stride: int) -> list[int]:
    """Return the start offsets of the windows along one axis: every stride pixels, the last one
    flush with the end (so the windows cover [0, length)); [0] when the tile covers the axis."""
    if tile <= 0 or stride <= 0:
        raise ValueError(f"tile={tile} and stride={stride} must be positive")
    if length <= tile:
        return [0]
    starts = list(range(0, length - tile, stride))
    return starts + [length - tile]


def _check_windows(caller: str, images: Tensor, tile: int, stride: int) -> None:
    """Raise a one-line ValueError unless images are (N, C, H, W) and stride leaves no pixel out."""
    if images.ndim != 4:
        raise ValueError(f"{caller} expects images of shape (N, channels, H, W), got {tuple(images.shape)}")
    if stride > tile:
        raise ValueError(
            f"stride={stride} is larger than tile={tile}: pixels between windows would be missed"
        )


def slide_logits(
    model: nn.Module,
    images: Tensor,
    *,
    tile: int,
    stride: int,
    window_batch: int = 1,
    channels_last: bool = False,
) -> Tensor:
    """Return float32 logits (N, C, H, W) of images (N, 3, H, W): the mean over the tile x tile
    windows (every stride pixels) that cover each pixel, window_batch windows per forward; exactly
    model(images) when one window covers the image. Call it under the caller's autocast and
    inference mode."""
    _check_windows("slide_logits", images, tile, stride)
    n, _, height, width = images.shape
    th, tw = min(tile, height), min(tile, width)
    if (th, tw) == (height, width):
        x = images.contiguous(memory_format=torch.channels_last) if channels_last else images
        return amp_forward(model, x).float()
    boxes = [(y, x) for y in window_starts(height, tile, stride) for x in window_starts(width, tile, stride)]
    count = torch.zeros(height, width, device=images.device)
    for y, x in boxes:
        count[y : y + th, x : x + tw] += 1
    total: Tensor | None = None
    step = max(1, int(window_batch))
    for first in range(0, len(boxes), step):
        chunk = boxes[first : first + step]
        crops = torch.cat([images[:, :, y : y + th, x : x + tw] for y, x in chunk])
        if channels_last:
            crops = crops.contiguous(memory_format=torch.channels_last)
        logits = amp_forward(model, crops)
        if total is None:
            total = torch.zeros((n, logits.shape[1], height, width), device=images.device)
        for k, (y, x) in enumerate(chunk):
            total[:, :, y : y + th, x : x + tw] += logits[k * n : (k + 1) * n].float()
        del logits, crops
    return total.div_(count)


def slide_labels(
    model: nn.Module,
    images: Tensor,
    *,
    tile: int,
    stride: int,
    window_batch: int = 1,
    channels_last: bool = False,
    heads: Sequence[int] | None = None,
) -> Tensor:
    """Return argmax_heads(slide_logits(...), heads): class indices (N, H, W) int64, or (N, K, H, W)
    for K heads, the same labels bit for bit, with the per-class sums held one band of rows at a time.

    The windows run in slide_logits' order and batches; after each batch, the rows above the next
    window's top are final (no later window covers them): they are divided by their coverage count
    (rows' count times columns' count, the same integers slide_logits adds up) and decided, and the
    band keeps only the rows still open. Call it under the caller's autocast and inference mode."""
    _check_windows("slide_labels", images, tile, stride)
    n, _, height, width = images.shape
    th, tw = min(tile, height), min(tile, width)
    if (th, tw) == (height, width):
        x = images.contiguous(memory_format=torch.channels_last) if channels_last else images
        return argmax_heads(amp_forward(model, x).float(), heads)
    ys, xs = window_starts(height, tile, stride), window_starts(width, tile, stride)
    boxes = [(y, x) for y in ys for x in xs]
    rows_count = torch.zeros(height, device=images.device)
    cols_count = torch.zeros(width, device=images.device)
    for y in ys:
        rows_count[y : y + th] += 1
    for x in xs:
        cols_count[x : x + tw] += 1
    labels: Tensor | None = None
    step = max(1, int(window_batch))
    # The band holds rows [top, top + cap): a batch starts on the band's first row of windows and
    # reaches at most ceil(step / windows per row) rows of windows further down.
    cap = min(height, th + stride * -(-step // len(xs)))
    band: Tensor | None = None
    top = filled = 0  # the band's first row; the rows below `filled` hold sums
    for first in range(0, len(boxes), step):
        chunk = boxes[first : first + step]
        crops = torch.cat([images[:, :, y : y + th, x : x + tw] for y, x in chunk])
        if channels_last:
            crops = crops.contiguous(memory_format=torch.channels_last)
        logits = amp_forward(model, crops)
        del crops
        if band is None:
            band = torch.zeros((n, logits.shape[1], cap, width), device=images.device)
        for k, (y, x) in enumerate(chunk):
            band[:, :, y - top : y - top + th, x : x + tw] += logits[k * n : (k + 1) * n].float()
            filled = max(filled, y + th)
        del logits
        done = first + len(chunk)
        final = boxes[done][0] if done < len(boxes) else height  # rows above the next window's top
        if final > top:
            part = band[:, :, : final - top]
            part.div_(rows_count[top:final, None] * cols_count)
            decided = argmax_heads(part, heads)
            if labels is None:
                shape = (*decided.shape[:-2], height, width)
                labels = torch.empty(shape, dtype=decided.dtype, device=images.device)
            labels[..., top:final, :] = decided
            del part, decided
            kept = filled - final  # rows with sums that stay open: moved to the band's top
            if kept > 0:
                band[:, :, :kept] = band[:, :, final - top : filled - top].clone()
            band[:, :, max(kept, 0) :] = 0
            top = final
    return labels


def softmax_heads(logits: torch.Tensor, heads: Sequence[int] | None = None) -> torch.Tensor:
    """Return the softmax over the channels, or over each head's channels when heads splits them."""
    if not heads:
        return logits.softmax(dim=1)
    return torch.cat([part.softmax(dim=1) for part in torch.split(logits, list(heads), dim=1)], dim=1)


ARGMAX_CHUNK_BYTES = 32 * 2**20
"""The most bytes of a channels-last copy class_argmax makes at a time (a slice of rows)."""


def class_argmax(scores: torch.Tensor) -> torch.Tensor:
    """Return scores.argmax(1) (N, H, W) int64, the same indices, ties and NaNs alike, faster on the CPU.

    On the CPU, torch's argmax over the class axis of an (N, C, H, W) tensor strides through memory
    and is 4-16x slower than over a channels-last copy, where each pixel's C scores are adjacent
    (bench/argmax.py); the copy is made a slice of rows at a time (ARGMAX_CHUNK_BYTES), so a photo's
    scores are not held twice. Other devices, and channels-last input, take argmax(1) as it is."""
    if (
        scores.device.type != "cpu"
        or scores.ndim != 4
        or scores.is_contiguous(memory_format=torch.channels_last)
    ):
        return scores.argmax(1)
    n, c, h, w = scores.shape
    rows = max(1, ARGMAX_CHUNK_BYTES // max(1, n * c * w * scores.element_size()))
    if rows >= h:
        return scores.contiguous(memory_format=torch.channels_last).argmax(1)
    out = torch.empty((n, h, w), dtype=torch.long)
    for top in range(0, h, rows):
        part = scores[:, :, top : top + rows].contiguous(memory_format=torch.channels_last)
        out[:, top : top + rows] = part.argmax(1)
    return out


def argmax_heads(scores: torch.Tensor, heads: Sequence[int] | None = None) -> torch.Tensor:
    """Return the class indices (N, H, W), or (N, K, H, W) for K heads (each head's own argmax)."""
    if not heads:
        return class_argmax(scores)
    return torch.stack([class_argmax(part) for part in torch.split(scores, list(heads), dim=1)], dim=1)
