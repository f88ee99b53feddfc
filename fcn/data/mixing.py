"""Batch mixing for segmentation: CutMix, MixUp and Mosaic on collated (images, masks) batches.

A mixer is called on the batch after collation (on any device) with a ``torch.Generator``; every
random draw comes from that generator, so a resumed run that restores it mixes identically. At most
one kind of mixing is applied per batch: one uniform draw picks CutMix with probability ``cutmix_p``,
MixUp with ``mixup_p``, Mosaic with ``mosaic_p`` (so the three must sum to at most 1), or nothing.
Masks are only moved, never blended or resampled other than by NEAREST: no label is invented.

Each image is mixed with its successor in a random cycle through the batch (a permutation without
fixed points when the batch has two or more images), so it is never mixed with itself.
"""

from __future__ import annotations

import math
from typing import Any, Optional

import numpy as np
import torch
from torchvision import tv_tensors
from torchvision.transforms.v2 import functional as F

from fcn.config import VOID
from fcn.data.transforms import resize_mask

MixResult = tuple[torch.Tensor, torch.Tensor, Optional[torch.Tensor], float]


def _uniform(generator: torch.Generator) -> float:
    return float(torch.rand((), generator=generator))


def _beta(alpha: float, generator: torch.Generator) -> float:
    """Return a Beta(alpha, alpha) draw derived from the generator (torch's Beta takes no generator)."""
    seed = int(torch.randint(0, 2**62, (), generator=generator))
    return float(np.random.default_rng(seed).beta(alpha, alpha))


def cyclic_permutation(n: int, generator: torch.Generator) -> torch.Tensor:
    """Return a random permutation of range(n) that is one cycle: no index maps to itself when n >= 2."""
    order = torch.randperm(n, generator=generator)
    perm = torch.empty_like(order)
    perm[order] = order.roll(-1)
    return perm


def cutmix(
    images: torch.Tensor, masks: torch.Tensor, alpha: float, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return the batch with one box (area fraction 1 - Beta(alpha, alpha)) pasted from the next image.

    The box, the same for the whole batch, is clipped to the image; its mask is pasted with it, so
    the loss needs no second target (Yun et al., 2019, applied to dense labels).
    """
    n, _, height, width = images.shape
    cut = math.sqrt(1.0 - _beta(alpha, generator))
    box_h, box_w = int(height * cut), int(width * cut)
    cy, cx = (
        int(torch.randint(height, (), generator=generator)),
        int(torch.randint(width, (), generator=generator)),
    )
    y0, y1 = max(cy - box_h // 2, 0), min(cy + box_h - box_h // 2, height)
    x0, x1 = max(cx - box_w // 2, 0), min(cx + box_w - box_w // 2, width)
    perm = cyclic_permutation(n, generator).to(images.device)
    images, masks = images.clone(), masks.clone()
    images[:, :, y0:y1, x0:x1] = images[perm, :, y0:y1, x0:x1]
    masks[..., y0:y1, x0:x1] = masks[perm, ..., y0:y1, x0:x1]  # (N, H, W) or (N, C, H, W) masks
    return images, masks


def mixup(
    images: torch.Tensor, masks: torch.Tensor, alpha: float, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Return (lam * images + (1 - lam) * the next images, the next images' masks, lam ~ Beta(alpha, alpha)).

    The masks are not blended: the loss is lam * CE(masks) + (1 - lam) * CE(masks_b) (Zhang et al., 2018).
    """
    lam = _beta(alpha, generator)
    perm = cyclic_permutation(images.shape[0], generator).to(images.device)
    return torch.lerp(images[perm], images, lam), masks[perm], lam


def mosaic(
    images: torch.Tensor, masks: torch.Tensor, generator: torch.Generator, ignore_index: int = VOID
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return the batch with each image replaced by a 2x2 mosaic of four batch images at half size.

    A random centre, uniform in the middle half of each side and shared by the batch, splits the
    output into four quadrants. Each quadrant shows the corner of a half-size image (bilinear for
    images, nearest for masks) that touches the centre, as YOLOv4's mosaic places its four images;
    where a quadrant is larger than a half image the rest is padding (image 0, mask ignore_index). Output i
    holds image i (top-left) and the next three along the random cycle, clockwise.
    """
    n, _, height, width = images.shape
    half_h, half_w = (height + 1) // 2, (width + 1) // 2
    # Exactly 2x smaller when the side is even: bilinear without antialiasing then averages 2x2 blocks.
    small = F.resize(tv_tensors.Image(images), [half_h, half_w], antialias=False).as_subclass(torch.Tensor)
    small_masks = resize_mask(masks, (half_h, half_w))
    # Clamped so that each quadrant keeps at least one row and column (for sides of 2 or more).
    cy = min(max(int(height * (0.25 + 0.5 * _uniform(generator))), 1), max(height - 1, 1))
    cx = min(max(int(width * (0.25 + 0.5 * _uniform(generator))), 1), max(width - 1, 1))
    perm = cyclic_permutation(n, generator).to(images.device)
    sources = [torch.arange(n, device=images.device)]
    for _ in range(3):
        sources.append(perm[sources[-1]])

    out = images.new_zeros(images.shape)
    out_masks = masks.new_full(masks.shape, ignore_index)
    # Quadrants clockwise from the top-left; each shows the corner of its half image nearest the centre.
    for src, top, left in zip(sources, (True, True, False, False), (True, False, False, True)):
        h = min(cy, half_h) if top else min(height - cy, half_h)
        w = min(cx, half_w) if left else min(width - cx, half_w)
        rows, src_rows = (
            (slice(cy - h, cy), slice(half_h - h, half_h)) if top else (slice(cy, cy + h), slice(0, h))
        )
        cols, src_cols = (
            (slice(cx - w, cx), slice(half_w - w, half_w)) if left else (slice(cx, cx + w), slice(0, w))
        )
        out[:, :, rows, cols] = small[src][:, :, src_rows, src_cols]
        out_masks[..., rows, cols] = small_masks[src][..., src_rows, src_cols]  # (N, C, H, W) masks too
    return out, out_masks


class Mixer:
    """Callable (images, masks, generator) -> (images, masks, masks_b | None, lam) applying one mixing.

    ``lam`` weighs ``masks`` in the loss: lam * CE(masks) + (1 - lam) * CE(masks_b) when ``masks_b``
    is not None (MixUp); otherwise it is 1.0 and the loss is CE(masks) alone.
    """

    def __init__(
        self,
        cutmix_p: float = 0.0,
        mixup_p: float = 0.0,
        mosaic_p: float = 0.0,
        alpha: float = 1.0,
        ignore_index: int = VOID,
    ):
        for name, p in (("cutmix_p", cutmix_p), ("mixup_p", mixup_p), ("mosaic_p", mosaic_p)):
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"data.mixing.{name}={p} must be between 0 and 1")
        total = cutmix_p + mixup_p + mosaic_p
        if total > 1.0 + 1e-9:
            raise ValueError(
                f"data.mixing: cutmix_p + mixup_p + mosaic_p = {total:g} must be at most 1 "
                "(at most one mixing is applied per batch)"
            )
        if alpha <= 0:
            raise ValueError(f"data.mixing.alpha={alpha} must be > 0")
        self.cutmix_p, self.mixup_p, self.mosaic_p, self.alpha = cutmix_p, mixup_p, mosaic_p, alpha
        self.ignore_index = ignore_index  # Mosaic's mask fill

    def __call__(self, images: torch.Tensor, masks: torch.Tensor, generator: torch.Generator) -> MixResult:
        if (
            images.ndim != 4
            or masks.ndim != 3
            or images.shape[0] != masks.shape[0]
            or images.shape[-2:] != masks.shape[-2:]
        ):
            raise ValueError(
                f"mixing needs images NxCxHxW and masks NxHxW of the same N, H, W; "
                f"got {tuple(images.shape)} and {tuple(masks.shape)}"
            )
        u = _uniform(generator)
        if u < self.cutmix_p:
            images, masks = cutmix(images, masks, self.alpha, generator)
            return images, masks, None, 1.0
        u -= self.cutmix_p
        if u < self.mixup_p:
            images, masks_b, lam = mixup(images, masks, self.alpha, generator)
            return images, masks, masks_b, lam
        u -= self.mixup_p
        if u < self.mosaic_p:
            images, masks = mosaic(images, masks, generator, self.ignore_index)
            return images, masks, None, 1.0
        return images, masks, None, 1.0

    def __repr__(self) -> str:
        return f"Mixer(cutmix_p={self.cutmix_p}, mixup_p={self.mixup_p}, mosaic_p={self.mosaic_p}, alpha={self.alpha})"


def build_mixer(mix_cfg: Any, ignore_index: int = VOID) -> Mixer | None:
    """Return the Mixer of ``cfg.data.mixing`` (Mosaic fills with ignore_index), or None when every
    probability is 0."""
    if mix_cfg.cutmix_p == 0 and mix_cfg.mixup_p == 0 and mix_cfg.mosaic_p == 0:
        return None
    return Mixer(
        cutmix_p=float(mix_cfg.cutmix_p),
        mixup_p=float(mix_cfg.mixup_p),
        mosaic_p=float(mix_cfg.mosaic_p),
        alpha=float(mix_cfg.alpha),
        ignore_index=ignore_index,
    )
