"""Batching of variable-size (image, mask) pairs without resizing: pad bottom/right to the largest."""

from __future__ import annotations

from typing import Sequence

import torch
from torch.utils.data import get_worker_info

from fcn.config import VOID


def _new_batch(like: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """Return an uninitialised tensor; in a DataLoader worker, in shared memory as default_collate does.

    A worker hands its batch to the main process through shared memory; allocating it there
    directly saves a copy of the whole batch.
    """
    if get_worker_info() is not None and like.device.type == "cpu":
        numel = 1
        for size in shape:
            numel *= size
        storage = like._typed_storage()._new_shared(numel, device=like.device)
        return like.new(storage).resize_(shape)
    return like.new_empty(shape)


def pad_collate(
    batch: Sequence[tuple[torch.Tensor, torch.Tensor]], ignore_index: int = VOID
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return (images NCHW, masks NHW or NKHW), each pair padded at the bottom/right to the batch's largest H, W.

    Image padding is 0 and mask padding ignore_index (data.ignore_index), so padded pixels count in neither the loss nor the
    metrics; a model with the paper's geometry predicts each image's own pixels unchanged.
    """
    if len(batch) == 0:
        raise ValueError("pad_collate got an empty batch")
    for i, item in enumerate(batch):
        if len(item) != 2:
            raise ValueError(f"pad_collate: batch item {i} has {len(item)} fields; expected (image, mask)")
        image, mask = item
        if image.ndim != 3 or mask.ndim not in (2, 3) or tuple(image.shape[-2:]) != tuple(mask.shape[-2:]):
            raise ValueError(
                f"pad_collate: batch item {i} has image {tuple(image.shape)} and mask {tuple(mask.shape)}; "
                "expected CxHxW and HxW (or KxHxW) of the same H, W"
            )
    height = max(image.shape[-2] for image, _ in batch)
    width = max(image.shape[-1] for image, _ in batch)
    first_image, first_mask = batch[0]
    images = _new_batch(first_image, (len(batch), first_image.shape[0], height, width)).fill_(0)
    masks = _new_batch(first_mask, (len(batch), *first_mask.shape[:-2], height, width)).fill_(ignore_index)
    for i, (image, mask) in enumerate(batch):
        h, w = mask.shape[-2:]
        images[i, :, :h, :w] = image
        masks[i, ..., :h, :w] = mask
    return images, masks
