"""Data loaders and the data order that makes a resumed run exact.

- The training order: ``EpochBatchSampler`` yields each epoch's shuffled order (a pure function of
  (seed, epoch)), split across processes, from any batch on; ``SeededItems`` transforms item
  (index, epoch) with RNGs seeded from (seed, epoch, index), whichever worker loads it;
  ``resume_position`` maps a checkpoint's position onto another batch size or number of processes.
- ``train_loader`` and ``eval_loader`` build the loaders of a run; ``DataLoader`` is torch's, but
  worker errors arrive as the dataset raised them.

torch's DataLoader re-raises an exception from a worker process as the same type with a message of
15-25 lines ("Caught ValueError in DataLoader worker process 0. Original Traceback ..."), which
buries the one line the dataset wrote (``.../img2.jpg: cannot read the image (...)``). ``DataLoader``
below re-raises it with that line alone, so a broken file reads the same under any ``num_workers``.
"""

from __future__ import annotations

import functools
import math
import random
from collections.abc import Iterator
from typing import Any, Callable

import numpy as np
import torch
import torch.utils.data
from torch.utils.data import Dataset

from fcn.config import VOID
from fcn.data.collate import pad_collate

_WORKER_PREFIX = "Caught "
_ORIGINAL = "\nOriginal Traceback (most recent call last):"


def worker_error(exc: BaseException) -> BaseException | None:
    """Return the exception a DataLoader worker raised, rebuilt from torch's wrapped re-raise of it
    (same type, the worker's own message), or None when exc is not such a re-raise."""
    text = str(exc.args[0]) if exc.args and isinstance(exc.args[0], str) else ""
    if not (text.startswith(_WORKER_PREFIX) and _ORIGINAL in text):
        return None
    kind = type(exc)
    # The formatted traceback ends with "<module.>Name: message"; the message may span lines.
    lines = text.splitlines()
    names = {kind.__name__, f"{kind.__module__}.{kind.__qualname__}"}
    for start in range(len(lines) - 1, 0, -1):
        head, sep, rest = lines[start].partition(": ")
        if sep and head in names:
            message = "\n".join([rest, *lines[start + 1 :]]).strip()
            try:
                return kind(message)
            except Exception:  # an exception type that takes other arguments: keep torch's
                return None
    return None


def _reraising(iterator: Iterator[Any]) -> Iterator[Any]:
    while True:
        try:
            batch = next(iterator)
        except StopIteration:
            return
        except Exception as exc:
            original = worker_error(exc)
            if original is None:
                raise
            raise original from None
        yield batch


class DataLoader(torch.utils.data.DataLoader):
    """torch's DataLoader, but an error raised in a worker process is re-raised as the dataset
    raised it (same type, its own one-line message), not wrapped in torch's worker traceback."""

    def __iter__(self) -> Iterator[Any]:
        return _reraising(super().__iter__())


def mix_seed(*parts: int) -> int:
    """Return a 63-bit seed that depends on every part (a simple polynomial hash)."""
    value = 0x9E3779B97F4A7C15
    for part in parts:
        value = (value * 0x100000001B3 + int(part) + 1) % (1 << 63)
    return value


class EpochBatchSampler:
    """Yields batches of (index, epoch) keys: one epoch's shuffled order, split across ranks,
    from a given batch on (so a resumed run starts mid-epoch without replaying batches)."""

    def __init__(
        self,
        size: int,
        batch_size: int,
        seed: int,
        shuffle: bool = True,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        self.size, self.batch_size, self.seed = size, batch_size, seed
        self.shuffle, self.rank, self.world_size = shuffle, rank, world_size
        self.epoch, self.start_batch = 0, 0

    def batches_per_epoch(self) -> int:
        """Return the number of full batches each rank gets per epoch (the last partial one is dropped)."""
        per_rank = math.ceil(self.size / self.world_size)
        return per_rank // self.batch_size

    def set_position(self, epoch: int, start_batch: int) -> None:
        """Make the next iteration yield epoch `epoch` from batch `start_batch` on."""
        self.epoch, self.start_batch = epoch, start_batch

    def _order(self) -> list[int]:
        if self.shuffle:
            g = torch.Generator().manual_seed(mix_seed(self.seed, self.epoch))
            order = torch.randperm(self.size, generator=g).tolist()
        else:
            order = list(range(self.size))
        if self.world_size > 1:  # pad by repeating the head so that every rank gets as many samples
            order += order[: (-len(order)) % self.world_size]
            order = order[self.rank :: self.world_size]
        return order

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        order = self._order()
        for b in range(self.start_batch, self.batches_per_epoch()):
            chunk = order[b * self.batch_size : (b + 1) * self.batch_size]
            yield [(index, self.epoch) for index in chunk]

    def __len__(self) -> int:
        return max(0, self.batches_per_epoch() - self.start_batch)


class SeededItems(Dataset):
    """A dataset whose item (index, epoch) is transformed with RNGs seeded from (seed, epoch, index),
    so a sample's augmentation does not depend on the worker that loads it or on a resume."""

    def __init__(self, dataset: Dataset, seed: int) -> None:
        self.dataset, self.seed = dataset, seed

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, key: tuple[int, int]) -> Any:
        index, epoch = key
        seed = mix_seed(self.seed, epoch, index)
        py_state, np_state = random.getstate(), np.random.get_state()
        try:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                random.seed(seed)
                np.random.seed(seed % (1 << 32))
                return self.dataset[index]
        finally:
            random.setstate(py_state)
            np.random.set_state(np_state)


def resume_position(sampler_state: dict, batch_size: int, world_size: int) -> tuple[int, int]:
    """Return the (epoch, batch) a resumed run starts at: the batch after the images of the epoch
    already seen, which each process's share of the order (rank::world) makes a prefix of it, so
    a different number of processes or batch size goes on from the same place (rounded down)."""
    epoch, batch = sampler_state["epoch"], sampler_state["batch"]
    if "images" in sampler_state:  # absent in checkpoints from before distributed resume
        batch = sampler_state["images"] // (batch_size * world_size)
    return epoch, batch


def train_loader(
    items: SeededItems,
    sampler: EpochBatchSampler,
    *,
    num_workers: int,
    pad: bool,
    pin_memory: bool,
    ignore_index: int = VOID,
) -> DataLoader:
    """Return the training loader over the sampler's batches (pad: pad_collate for native sizes,
    masks padded with ignore_index)."""
    return DataLoader(
        items,
        batch_sampler=sampler,
        num_workers=num_workers,
        collate_fn=functools.partial(pad_collate, ignore_index=ignore_index) if pad else None,
        pin_memory=pin_memory,
        generator=torch.Generator(),  # keeps the global RNG untouched by the loader's base seed
    )


def eval_loader(
    dataset: Dataset,
    *,
    batch_size: int,
    num_workers: int,
    rank: int = 0,
    world_size: int = 1,
    collate_fn: Callable | None = None,
    pin_memory: bool = False,
    ignore_index: int = VOID,
) -> DataLoader:
    """Return an evaluation loader over this rank's share (rank::world, no padding, so no sample
    is counted twice), in order; batches > 1 are padded with ignore_index where sizes differ."""
    indices = list(range(rank, len(dataset), world_size))  # type: ignore[arg-type]
    if collate_fn is None and batch_size > 1:
        collate_fn = functools.partial(pad_collate, ignore_index=ignore_index)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=indices,
        num_workers=num_workers,
        collate_fn=collate_fn,
        pin_memory=pin_memory,
        generator=torch.Generator(),
    )
