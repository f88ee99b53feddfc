"""The memory budget of segmenting one image (eval.max_memory): an estimate of what the whole-image
pass and the sliding windows add, and the choice between them.

What one image adds, in bytes, for an H x W image and C classes: the network input (float32, 4 bytes
per pixel and input channel), a fixed OVERHEAD (oneDNN's scratch space, the allocator) and the peak
of the forward and the class decision, the larger of two stages:

- the backbone's early layers: ACTIVATION_BYTES[backbone] per pixel the backbone sees (the image, or
  the image padded by 100 on each side in the paper's geometry);
- the class scores: SCORE_STAGE_BYTES per pixel (the features still held, the labels) plus
  SCORE_MAPS float32 maps of C channels at the image's size (the upsampled scores and their crop);
- model.arch=unet only: its decoder's last blocks, UNET_DECODER_BYTES[backbone] per pixel (the 2x
  upsampled features, their concatenation with the skip, the convolutions' and BatchNorms' outputs
  at strides 2 and 1).

Calibrated on this project's machine (bench/slide.py --classes 4 21 measures it; docs/performance.md)
from the peak RSS that fp32 whole-image passes in inference mode add, at 0.75, 3 and 12 megapixels
with 4 and 21 classes: FCN-8s VGG16 in the paper's geometry peaks in conv1 (768-771 bytes per padded pixel,
the same with 4 and 21 classes), FCN-8s ResNet-18 at the scores (128 bytes a pixel with 4 classes,
275 with 21: 8.6 bytes per class, 2.2 float32 maps). A backbone not measured is given the largest
cost measured (VGG16's), so that its estimate errs on the side of sliding. Lower precisions (bf16,
int8) need less than this fp32 estimate; other engines (ONNX Runtime, OpenVINO) are estimated alike.

The sliding windows (fcn.core.sliding.slide_labels) add the input and the labels at the image's size,
window_batch windows' activations and scores, and the class sums of one band of rows (C x (tile +
stride) x W, and the rows still open while the band moves on). With test-time augmentation (eval.flip, eval.scales) or
for probabilities, the averaged probabilities are held at the image's size (three C x H x W float32
maps), and each scale's image at its own size.
"""

from __future__ import annotations

from typing import Any

import torch
from omegaconf import DictConfig

from fcn.config import memory_limit_gb
from fcn.core.sliding import ARGMAX_CHUNK_BYTES, window_starts

GB = 2**30
AUTO_CPU_GB = 2.0
"""eval.max_memory=auto on the CPU: what one image may add on a 16 GB machine (see the key's doc)."""
GPU_FREE_SHARE = 0.9
"""eval.max_memory on CUDA: at most this share of the GPU's free memory (the rest for cuDNN's
workspaces and the caching allocator's rounding)."""

ACTIVATION_BYTES = {"vgg16": 770.0, "resnet18": 128.0}
"""Peak bytes of an fp32 forward's early layers per pixel the backbone sees (measured: module docstring;
ResNet-18's is its whole peak with 4 classes, an upper bound of its early layers)."""
SCORE_STAGE_BYTES = 96.0
"""Bytes per pixel held beside the score maps at the class decision: features, labels (ResNet-18's
measured peak less its score maps)."""
SCORE_MAPS = 2.25
"""Float32 C x H x W score maps a whole-image pass holds at its peak (measured on ResNet-18: 8.6 bytes
per class and pixel)."""
UNET_DECODER_BYTES = {"resnet18": 470.0, "vgg16": 1290.0}
"""Peak bytes per input pixel of the U-Net decoder's fp32 forward (model.arch=unet), measured as the
others at 0.75 and 3 megapixels (463 and 1278 bytes a pixel, 2 and 21 classes alike: its peak comes
before the scores). VGG16's is the larger: its conv1_2 skip (64 channels at stride 1) is held from
the backbone's first block to the decoder's last. Unmeasured backbones get the larger (MobileNetV3-Large
measured 374)."""
OVERHEAD = 64 * 2**20
"""Bytes a forward adds whatever its size (oneDNN's scratch space, the allocator): the measured
peaks' excess over the per-pixel costs at 0.75 megapixels."""


class MemoryBudgetError(ValueError):
    """An image that needs more memory than eval.max_memory allows even window by window; the
    message names its size, the estimate, the budget and the keys to change."""


def budget_bytes(value: Any, device: torch.device | str) -> float | None:
    """Return the bytes eval.max_memory allows one image on device (None: no limit): 'auto' is
    AUTO_CPU_GB on the CPU and GPU_FREE_SHARE of the free memory on CUDA; a number is that many GB,
    on CUDA at most GPU_FREE_SHARE of the free memory."""
    limit = memory_limit_gb(value)
    if limit is None:
        return None
    device = torch.device(device)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        gpu = GPU_FREE_SHARE * free
        return gpu if limit == "auto" else min(float(limit) * GB, gpu)
    return (AUTO_CPU_GB if limit == "auto" else float(limit)) * GB


def _seen_pixels(cfg: DictConfig, height: int, width: int) -> float:
    """Return the pixels the backbone computes on: the paper's geometry pads 100 on every side."""
    pad = 200 if cfg.model.geometry == "paper" else 0
    return float((height + pad) * (width + pad))


def _activation_bytes(cfg: DictConfig) -> float:
    return ACTIVATION_BYTES.get(str(cfg.model.backbone), max(ACTIVATION_BYTES.values()))


def _decoder_bytes(cfg: DictConfig) -> float:
    if str(cfg.model.arch) != "unet":
        return 0.0
    return UNET_DECODER_BYTES.get(str(cfg.model.backbone), max(UNET_DECODER_BYTES.values()))


def _classes(cfg: DictConfig) -> int:
    return int(cfg.model.num_classes) + int(cfg.model.geometric_classes)


def _forward_bytes(cfg: DictConfig, height: int, width: int, windows: int = 1) -> float:
    """Return the peak that `windows` forwards of height x width at once add, with their class
    decision: the largest of the early layers', the U-Net decoder's and the scores' stage."""
    early = _activation_bytes(cfg) * _seen_pixels(cfg, height, width)
    decoder = _decoder_bytes(cfg) * height * width
    scores = (SCORE_STAGE_BYTES + SCORE_MAPS * 4 * _classes(cfg)) * height * width
    return OVERHEAD + windows * max(early, decoder, scores)


def _averaging(cfg: DictConfig, probabilities: bool) -> bool:
    e = cfg.eval
    return probabilities or bool(e.flip) or [float(s) for s in e.scales] != [1.0]


def whole_bytes(cfg: DictConfig, height: int, width: int, *, probabilities: bool = False) -> float:
    """Return the estimated bytes the whole-image pass adds for an image of height x width."""
    pixels = float(height * width)
    base = 4 * int(cfg.model.in_channels) * pixels
    if not _averaging(cfg, probabilities):  # the labels are in the scores' stage
        return base + _forward_bytes(cfg, height, width)
    base += 8 * pixels
    largest = max(float(s) for s in cfg.eval.scales)
    h, w = max(1, round(height * largest)), max(1, round(width * largest))
    scaled = 4 * int(cfg.model.in_channels) * h * w if largest != 1.0 else 0.0
    return base + scaled + _forward_bytes(cfg, h, w) + 3 * 4 * _classes(cfg) * pixels


def slide_bytes(
    cfg: DictConfig, height: int, width: int, window_batch: int, *, probabilities: bool = False
) -> float:
    """Return the estimated bytes the sliding windows (eval.tile, eval.stride) add for an image of
    height x width with window_batch windows per forward."""
    e = cfg.eval
    pixels = float(height * width)
    base = 4 * int(cfg.model.in_channels) * pixels + 8 * pixels
    classes = _classes(cfg)
    if not _averaging(cfg, probabilities):
        th, tw = min(int(e.tile), height), min(int(e.tile), width)
        crops = 4 * int(cfg.model.in_channels) * th * tw * window_batch
        per_row = len(window_starts(width, int(e.tile), int(e.stride)))
        rows = th + int(e.stride) * -(-window_batch // per_row) + th  # the band and its moved rows
        band = 4 * classes * min(rows, 2 * height) * width
        decide = min(ARGMAX_CHUNK_BYTES, band)  # class_argmax's channels-last slice of rows
        return base + crops + _forward_bytes(cfg, th, tw, window_batch) + band + decide
    largest = max(float(s) for s in e.scales)
    h, w = max(1, round(height * largest)), max(1, round(width * largest))
    th, tw = min(int(e.tile), h), min(int(e.tile), w)
    sums = 4 * (classes + 1) * h * w  # slide_logits' class sums and coverage count at the scale's size
    scaled = 4 * int(cfg.model.in_channels) * h * w if largest != 1.0 else 0.0
    return base + scaled + sums + _forward_bytes(cfg, th, tw, window_batch) + 3 * 4 * classes * pixels


def _gb(n: float) -> str:
    return f"{n / GB:.1f} GB" if n >= 0.1 * GB else f"{n / 2**20:.0f} MB"


def plan(
    cfg: DictConfig, height: int, width: int, device: torch.device | str, *, probabilities: bool = False
) -> tuple[dict, str | None]:
    """Return (the window keywords of predict_labels/predict_probs for this image, the line to say or
    None): eval.mode as set when it fits eval.max_memory; else the sliding windows (eval.window_batch
    windows per forward, or one if that is what fits), said in one line; MemoryBudgetError when even
    one window at a time does not fit."""
    e = cfg.eval
    window = {
        "mode": str(e.mode),
        "tile": int(e.tile),
        "stride": int(e.stride),
        "window_batch": int(e.window_batch),
    }
    budget = budget_bytes(e.max_memory, device)
    if budget is None:
        return window, None
    size = f"{width} x {height} px"
    over = f"over eval.max_memory={e.max_memory} ({_gb(budget)} here)"
    whole = None
    if window["mode"] == "whole":
        whole = whole_bytes(cfg, height, width, probabilities=probabilities)
        if whole <= budget:
            return window, None
    for batch in dict.fromkeys((window["window_batch"], 1)):
        need = slide_bytes(cfg, height, width, batch, probabilities=probabilities)
        if need <= budget:
            chosen = {**window, "mode": "slide", "window_batch": batch}
            if whole is None and batch == window["window_batch"]:
                return chosen, None
            batches = "" if batch == window["window_batch"] else f", {batch} window per forward"
            reason = (
                f"the whole-image pass needs about {_gb(whole)}"
                if whole is not None
                else f"{window['window_batch']} windows per forward (eval.window_batch) need more"
            )
            return chosen, (
                f"{size}: {reason}, {over}; segmenting images of this size in {window['tile']} px "
                f"sliding windows every {window['stride']} px{batches} (about {_gb(need)}; eval.mode=slide)"
            )
    need = slide_bytes(cfg, height, width, 1, probabilities=probabilities)
    raise MemoryBudgetError(
        f"{size} needs about {_gb(need)} even one {window['tile']} px window at a time "
        f"(eval.tile={window['tile']}), {over}; raise eval.max_memory (or 'none' for no limit) or "
        "lower eval.tile"
    )
