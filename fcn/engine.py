"""Training and evaluation: fit(cfg), train_one_step(), evaluate().

fit() builds everything from the config, trains by iterations (optimizer
steps), evaluates every ``training.eval_every`` iterations or at each epoch's
end, and keeps ``checkpoints/last.pt`` and ``checkpoints/best.pt`` in the run
directory. A resumed run continues exactly: the data order is a pure function of
(seed, epoch), every sample's augmentation a pure function of (seed, epoch,
index), every batch's mixing a pure function of (seed, iteration), and the
checkpoint holds the model, optimizer, scheduler, scaler, EMA, RNG states and
the data position.
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import random
import signal
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from torch import nn
from torch.utils.data import DataLoader, Dataset

from fcn import config as fcn_config
from fcn import distributed
from fcn.checkpoint import capture_rng_state, load_checkpoint, restore_rng_state, save_checkpoint
from fcn.metrics import ConfusionMatrix, format_table

IGNORE_INDEX = 255
CHECKPOINT_VERSION = 1


class TrainingError(RuntimeError):
    """Training cannot go on (a non-finite loss, an impossible resume); the message says why."""


# ----------------------------------------------------------------------------- devices, precision


def select_device(name: str) -> torch.device:
    """Return the device for 'auto' (CUDA if available, else CPU), 'cpu', 'cuda' or 'cuda:N'."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"training.device='{name}' but no CUDA device is available; use auto or cpu")
    return device


def autocast(device: torch.device, amp: str) -> contextlib.AbstractContextManager:
    """Return the autocast context for amp 'bf16'/'fp16', or a null context for 'none'."""
    if amp == "none":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if amp == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


# ----------------------------------------------------------------------------- data order


def _mix_seed(*parts: int) -> int:
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
            g = torch.Generator().manual_seed(_mix_seed(self.seed, self.epoch))
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
        seed = _mix_seed(self.seed, epoch, index)
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


def _collate(cfg: DictConfig):
    if cfg.data.pad_collate:
        from fcn.data.collate import pad_collate

        return pad_collate
    return None


def _eval_collate(batch_size: int):
    if batch_size > 1:
        from fcn.data.collate import pad_collate

        return pad_collate
    return None


def make_eval_loader(dataset: Dataset, cfg: DictConfig, info: distributed.DistInfo) -> DataLoader:
    """Return the evaluation loader: this rank's share (rank::world, no padding, so no sample is
    counted twice), batches of data.val_batch_size padded with 255 where sizes differ."""
    indices = list(range(info.rank, len(dataset), info.world_size))  # type: ignore[arg-type]
    return DataLoader(
        dataset,
        batch_size=cfg.data.val_batch_size,
        sampler=indices,
        num_workers=min(cfg.data.num_workers, 2),
        collate_fn=_eval_collate(cfg.data.val_batch_size),
        generator=torch.Generator(),  # keeps the global RNG untouched by the loader's base seed
    )


# ----------------------------------------------------------------------------- optimisation


def build_optimizer(model: nn.Module, cfg: DictConfig) -> torch.optim.Optimizer:
    """Return SGD or AdamW over the trainable parameters: weights at lr with weight decay, biases at
    lr * bias_lr_mult and without decay unless asked (the reference's lr_mult 2, decay_mult 0)."""
    o = cfg.optimizer
    weights, biases = [], []
    for name, param in model.named_parameters():
        if param.requires_grad:
            (biases if name.endswith("bias") else weights).append(param)
    groups = [
        {"params": weights, "lr": o.lr, "weight_decay": o.weight_decay, "lr_mult": 1.0},
        {
            "params": biases,
            "lr": o.lr * o.bias_lr_mult,
            "weight_decay": o.weight_decay if o.bias_weight_decay else 0.0,
            "lr_mult": o.bias_lr_mult,
        },
    ]
    groups = [g for g in groups if g["params"]]
    if o.name == "sgd":
        make, kwargs = torch.optim.SGD, {"lr": o.lr, "momentum": o.momentum}
    else:
        make, kwargs = torch.optim.AdamW, {"lr": o.lr, "betas": tuple(o.betas)}
    try:
        # One fused kernel per step instead of a loop of small ones: ~18x faster AdamW steps on the
        # CPU here (ResNet-18 FCN); PyTorch before 2.4 fuses on CUDA only.
        return make(groups, fused=True, **kwargs)
    except (RuntimeError, TypeError, ValueError):
        return make(groups, **kwargs)


def lr_factor(iteration: int, total: int, cfg: DictConfig) -> float:
    """Return the learning-rate factor at an iteration: warm-up times fixed/poly/cosine decay."""
    s, base = cfg.schedule, cfg.optimizer.lr
    floor = s.min_lr / base
    progress = min(iteration / max(total, 1), 1.0)
    if s.name == "poly":
        factor = floor + (1.0 - floor) * (1.0 - progress) ** s.power
    elif s.name == "cosine":
        factor = floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))
    else:
        factor = 1.0
    if iteration < s.warmup_iters:
        alpha = iteration / s.warmup_iters
        factor *= s.warmup_factor * (1.0 - alpha) + alpha
    return factor


def _labelled(masks: torch.Tensor, weight: torch.Tensor | None) -> torch.Tensor:
    """Return the number of labelled pixels (or their summed class weights)."""
    valid = masks != IGNORE_INDEX
    return valid.sum().float() if weight is None else weight[masks[valid]].sum()


def segmentation_loss(
    logits: torch.Tensor, masks: torch.Tensor, normalize: bool, weight: torch.Tensor | None = None
) -> torch.Tensor:
    """Return the cross-entropy ignoring 255: averaged over labelled pixels, or summed (the
    reference's loss_param { normalize: false })."""
    total = F.cross_entropy(logits.float(), masks, weight=weight, ignore_index=IGNORE_INDEX, reduction="sum")
    return total / _labelled(masks, weight).clamp_min(1) if normalize else total


def train_one_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    batches: Sequence[tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, float]],
    *,
    normalize: bool,
    weight: torch.Tensor | None = None,
    amp: str = "none",
    scaler: torch.amp.GradScaler | None = None,
    clip_grad_norm: float = 0.0,
    iteration: int = 0,
) -> float:
    """Make one optimizer step over micro-batches (images, masks, masks_b, lam) on the model's
    device; return the loss.

    The micro-batches count as one batch of their union: a normalised loss is divided by the
    labelled pixels of all of them (summed over processes), a summed loss is summed, so k
    accumulated batches of 1 equal one batch of k (without BatchNorm), and N processes with batch b
    equal one process with batch N*b. (Caffe's iter_size instead averages over the micro-batches;
    the reference's solvers use iter_size 1.) MixUp's second target is weighted by 1 - lam.
    """
    device = batches[0][0].device
    world = torch.distributed.get_world_size() if torch.distributed.is_initialized() else 1
    if normalize:
        denom = sum(_labelled(masks, weight) for _, masks, _, _ in batches)
        denom = distributed.all_reduce_sum(torch.as_tensor(denom, device=device).float()).clamp_min(1)
    optimizer.zero_grad(set_to_none=True)
    loss_value = 0.0
    for k, (images, masks, masks_b, lam) in enumerate(batches):
        sync = contextlib.nullcontext()
        if world > 1 and k < len(batches) - 1:
            sync = model.no_sync()  # DistributedDataParallel: all-reduce once, on the last micro-batch
        with sync:
            with autocast(device, amp):
                logits = model(images)
            loss = segmentation_loss(logits, masks, False, weight)
            if masks_b is not None:
                loss = lam * loss + (1.0 - lam) * segmentation_loss(logits, masks_b, False, weight)
            if normalize:
                loss = loss / denom
            if not torch.isfinite(loss) and scaler is None:
                raise TrainingError(
                    f"the loss is {loss.item()} at iteration {iteration + 1}; lower optimizer.lr, "
                    "set training.clip_grad_norm, or check the data"
                )
            # DistributedDataParallel averages gradients over processes; undo that to sum them.
            scaled = loss * world
            (scaler.scale(scaled) if scaler is not None else scaled).backward()
        loss_value += loss.item()
    params = [p for group in optimizer.param_groups for p in group["params"]]
    if clip_grad_norm > 0:
        if scaler is not None:
            scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(params, clip_grad_norm)
    if scaler is not None:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
    return loss_value


class ModelEMA:
    """An exponential moving average of a model's parameters and buffers."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.decay = decay
        self.module = copy.deepcopy(model).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Move the average towards the model's current state."""
        current = model.state_dict()
        for name, value in self.module.state_dict().items():
            if value.dtype.is_floating_point:
                value.mul_(self.decay).add_(current[name].detach(), alpha=1.0 - self.decay)
            else:
                value.copy_(current[name])


# ----------------------------------------------------------------------------- evaluation


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader: DataLoader,
    num_classes: int,
    device: torch.device,
    *,
    amp: str = "none",
    channels_last: bool = False,
    progress: bool = False,
    desc: str = "eval",
) -> dict:
    """Return the paper's metrics of a model over a loader, summed across processes, at the masks'
    own resolution (padding is void); the ConfusionMatrix.compute() dict plus 'confusion'.

    Evaluation during training; evaluate.py adds test-time augmentation and saved predictions
    (fcn.inference.evaluate_model)."""
    from tqdm import tqdm

    was_training = model.training
    model.eval()
    matrix = ConfusionMatrix(num_classes, ignore_index=IGNORE_INDEX, device=device)
    for images, masks in tqdm(loader, desc=desc, leave=False, disable=not progress, dynamic_ncols=True):
        images = images.to(device, non_blocking=True)
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        with autocast(device, amp):
            pred = model(images).argmax(1)
        matrix.update(pred, masks.to(device, non_blocking=True))
    matrix.all_reduce()
    model.train(was_training)
    result = matrix.compute()
    result["confusion"] = matrix.mat.cpu().tolist()
    return result


# ----------------------------------------------------------------------------- fit


def _log(info: distributed.DistInfo, message: str) -> None:
    if info.is_primary:
        from tqdm import tqdm

        tqdm.write(message)


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (1 << 32))
    torch.manual_seed(seed)


def _configure_determinism(enabled: bool) -> None:
    if enabled:
        import os

        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False
    else:
        torch.backends.cudnn.benchmark = True


class _StopFlag:
    """Turns the first Ctrl-C into a request to stop at the next iteration boundary."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: Any = None

    def __enter__(self) -> _StopFlag:
        try:
            self._previous = signal.signal(signal.SIGINT, self._handle)
        except ValueError:  # not the main thread
            self._previous = None
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested:  # a second Ctrl-C stops at once
            raise KeyboardInterrupt
        self.requested = True

    def __exit__(self, *exc: Any) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)


def total_iterations(cfg: DictConfig, batches_per_epoch: int) -> int:
    """Return the number of optimizer steps the run makes (training.iters, else by epochs)."""
    if cfg.training.iters > 0:
        return cfg.training.iters
    return cfg.training.epochs * batches_per_epoch // cfg.training.accumulate


def _resume_path(cfg: DictConfig, run_dir: Path) -> Path | None:
    resume = cfg.training.resume
    if not resume:
        return None
    if resume == "auto":
        last = run_dir / "checkpoints" / "last.pt"
        return last if last.is_file() else None
    path = Path(resume)
    if not path.is_file():
        raise FileNotFoundError(f"training.resume: checkpoint '{resume}' not found")
    return path


def _resume_position(sampler_state: dict, batch_size: int, world_size: int) -> tuple[int, int]:
    """Return the (epoch, batch) a resumed run starts at: the batch after the images of the epoch
    already seen, which each process's share of the order (rank::world) makes a prefix of it, so
    a different number of processes or batch size goes on from the same place (rounded down)."""
    epoch, batch = sampler_state["epoch"], sampler_state["batch"]
    if "images" in sampler_state:  # absent in checkpoints from before distributed resume
        batch = sampler_state["images"] // (batch_size * world_size)
    return epoch, batch


def _unwrap(model: nn.Module) -> nn.Module:
    model = getattr(model, "module", model)  # DistributedDataParallel
    return getattr(model, "_orig_mod", model)  # torch.compile


def _vis_grid(model, dataset, indices, cfg, device, palette, class_names) -> np.ndarray:
    from fcn.data.transforms import denormalize
    from fcn.visualize import prediction_grid

    images, gts, preds = [], [], []
    was_training = model.training
    model.eval()
    with torch.no_grad():
        for index in indices:
            image, mask = dataset[index]
            with autocast(device, cfg.training.amp):
                logits = model(image.unsqueeze(0).to(device))
            preds.append(logits.argmax(1)[0].cpu().numpy().astype(np.uint8))
            images.append(denormalize(image, cfg.data.transforms.normalization))
            gts.append(mask.numpy().astype(np.uint8))
    model.train(was_training)
    return prediction_grid(images, gts, preds, palette, class_names)


def fit(cfg: DictConfig) -> dict:
    """Train as the config says; return a summary (iterations, best mean IU, last metrics, run_dir)."""
    from fcn.data import build_dataset, class_names, palette
    from fcn.data.mixing import build_mixer
    from fcn.data.transforms import build_transforms
    from fcn.models import build_model, describe_init, init_from_state_dict

    device = select_device(cfg.training.device)
    info = distributed.env_info()
    if info.enabled and device.type == "cuda":
        device = torch.device("cuda", info.local_rank)
        torch.cuda.set_device(device)
    if cfg.training.amp == "fp16" and device.type != "cuda":
        raise ValueError("training.amp=fp16 needs a CUDA device; use training.amp=bf16 on the CPU")
    if cfg.training.sync_bn and info.enabled and device.type != "cuda":
        raise ValueError(
            "training.sync_bn=true needs CUDA devices (PyTorch's SyncBatchNorm does not run on the CPU); "
            "set training.sync_bn=false"
        )
    info = distributed.setup(device)
    t = cfg.training
    run_dir = Path(t.run_dir)
    _configure_determinism(t.deterministic)
    _seed_everything(t.seed)

    train_set = build_dataset(cfg.data.train, cfg.data, build_transforms(cfg.data.transforms, train=True))
    val_set = build_dataset(cfg.data.val, cfg.data, build_transforms(cfg.data.transforms, train=False))
    names = class_names(cfg.data)
    colours = palette(cfg.data)
    sampler = EpochBatchSampler(len(train_set), cfg.data.batch_size, t.seed, True, info.rank, info.world_size)
    batches_per_epoch = sampler.batches_per_epoch()
    if batches_per_epoch == 0:
        raise ValueError(
            f"data.train: {len(train_set)} images are fewer than data.batch_size={cfg.data.batch_size}"
            + (f" x {info.world_size} processes" if info.enabled else "")
        )
    total = total_iterations(cfg, batches_per_epoch)
    images_per_batch = cfg.data.batch_size * info.world_size

    model = build_model(cfg.model)
    if cfg.model.init_from:
        state = load_checkpoint(cfg.model.init_from)
        copied, new = init_from_state_dict(model, state.get("model", state))
        _log(info, f"init_from {cfg.model.init_from}: {describe_init(copied, new)}")
    if t.sync_bn and info.enabled:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    model.to(device)
    if t.channels_last:
        model.to(memory_format=torch.channels_last)
    ema = ModelEMA(model, t.ema_decay) if t.ema_decay > 0 else None
    optimizer = build_optimizer(model, cfg)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda i: lr_factor(i, total, cfg))
    scaler = torch.amp.GradScaler("cuda") if t.amp == "fp16" else None
    weight = torch.tensor(list(cfg.loss.class_weights), device=device) if cfg.loss.class_weights else None
    mixer = build_mixer(cfg.data.mixing)

    if info.rank > 0:  # dropout masks differ across processes as across the images of one batch
        _seed_everything(_mix_seed(t.seed, info.rank))
    iteration, epoch, batch_pos, best = 0, 0, 0, -1.0
    resume = _resume_path(cfg, run_dir)
    if resume is not None:
        state = load_checkpoint(resume)
        try:
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            if scaler is not None and state.get("scaler"):
                scaler.load_state_dict(state["scaler"])
            if ema is not None and state.get("ema"):
                ema.module.load_state_dict(state["ema"])
        except (KeyError, RuntimeError, ValueError) as exc:
            first = str(exc).strip().splitlines()[0]
            raise TrainingError(f"training.resume: {resume} does not fit this config: {first}") from None
        iteration, best = state["iteration"], state["best_miou"]
        epoch, batch_pos = _resume_position(state["sampler"], cfg.data.batch_size, info.world_size)
        rngs = state.get("rng_ranks") or []
        if len(rngs) == info.world_size:
            restore_rng_state(rngs[info.rank])
        elif info.rank == 0:
            restore_rng_state(state["rng"])
        else:  # saved by fewer processes than resume it
            _seed_everything(_mix_seed(t.seed, info.rank, iteration))
        _log(info, f"resumed from {resume} at iteration {iteration} (epoch {epoch}, batch {batch_pos})")
    if info.enabled:  # without a shared filesystem a node may not see training.resume's checkpoint
        positions = distributed.all_gather_object((iteration, epoch, batch_pos))
        if len(set(positions)) > 1:
            raise TrainingError(
                f"training.resume: the processes would start at different (iteration, epoch, batch) "
                f"{positions}; every node must read the same checkpoint (a shared run directory or a "
                "training.resume path present on every node)"
            )

    train_model: nn.Module = model
    if t.compile:
        train_model = torch.compile(train_model)
    if info.enabled:
        ddp_kwargs = {"device_ids": [device.index]} if device.type == "cuda" else {}
        train_model = nn.parallel.DistributedDataParallel(train_model, **ddp_kwargs)

    seeded = SeededItems(train_set, t.seed)

    def loader_for(epoch_: int, start: int) -> Iterator:
        sampler.set_position(epoch_, start)
        return iter(
            DataLoader(
                seeded,
                batch_sampler=sampler,
                num_workers=cfg.data.num_workers,
                collate_fn=_collate(cfg),
                pin_memory=device.type == "cuda",
                generator=torch.Generator(),
            )
        )

    val_loader = make_eval_loader(val_set, cfg, info)
    vis_indices = list(range(min(t.vis_images, len(val_set))))
    writer = None
    if info.is_primary:
        from torch.utils.tensorboard import SummaryWriter

        (run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
        (run_dir / "config.yml").write_text(fcn_config.to_yaml(cfg))
        writer = SummaryWriter(str(run_dir))
    _log(
        info,
        f"training {cfg.model.arch} ({cfg.model.backbone}) on {cfg.data.train.name}/{cfg.data.train.split} "
        f"({len(train_set)} images) for {total} iterations on {device}; effective batch "
        f"{cfg.data.batch_size} x {t.accumulate} accumulated x {info.world_size} processes = "
        f"{cfg.data.batch_size * t.accumulate * info.world_size}; run directory {run_dir}",
    )

    def checkpoint_state(rng_ranks: list[dict] | None = None) -> dict:
        state = {
            "version": CHECKPOINT_VERSION,
            "model": _unwrap(model).state_dict(),
            "ema": ema.module.state_dict() if ema is not None else None,
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "scaler": scaler.state_dict() if scaler is not None else None,
            "iteration": iteration,
            "epoch": epoch,
            "best_miou": best,
            "rng": capture_rng_state(),
            # images: of this epoch's order, seen by all processes (resume may change their number)
            "sampler": {"epoch": epoch, "batch": batch_pos, "images": batch_pos * images_per_batch},
            "config": fcn_config.to_dict(cfg),
        }
        if rng_ranks is not None:
            state["rng_ranks"] = rng_ranks  # every process's RNGs (dropout), in rank order
        return state

    def save_last() -> None:
        rng_ranks = distributed.all_gather_object(capture_rng_state()) if info.enabled else None
        if info.is_primary:
            save_checkpoint(checkpoint_state(rng_ranks), run_dir / "checkpoints" / "last.pt")

    def run_evaluation() -> dict:
        nonlocal best
        # BatchNorm statistics drift apart across processes between DDP's broadcasts at each forward;
        # every process evaluates rank 0's, the ones the checkpoint holds
        distributed.broadcast_buffers(model)
        if ema is not None:
            distributed.broadcast_buffers(ema.module)
        metrics = evaluate(model, val_loader, cfg.model.num_classes, device, amp=t.amp, desc="eval")
        nonlocal loss_sum, loss_count
        record = {"iteration": iteration, "epoch": epoch, "time": time.time(), **metrics}
        record["train_loss"] = loss_sum / max(loss_count, 1)  # mean since the previous evaluation
        loss_sum, loss_count = 0.0, 0
        record.pop("confusion")
        score = metrics["mean_iou"]
        if ema is not None:
            ema_metrics = evaluate(
                ema.module, val_loader, cfg.model.num_classes, device, amp=t.amp, desc="eval ema"
            )
            ema_metrics.pop("confusion")
            record["ema"] = ema_metrics
            score = ema_metrics["mean_iou"]
        if info.is_primary:
            _log(info, f"\niteration {iteration}/{total} (epoch {epoch})\n{format_table(metrics, names)}")
            if ema is not None:
                _log(info, f"EMA weights: mean IU {record['ema']['mean_iou']:.4f}")
            for key in ("pixel_acc", "mean_acc", "mean_iou", "fwavacc"):
                writer.add_scalar(f"val/{key}", metrics[key], iteration)
                if ema is not None:
                    writer.add_scalar(f"val_ema/{key}", record["ema"][key], iteration)
            for name, value in zip(names, metrics["iou"]):
                if not math.isnan(value):
                    writer.add_scalar(f"val_iou/{name}", value, iteration)
            if vis_indices:
                from fcn.visualize import save_png

                grid = _vis_grid(model, val_set, vis_indices, cfg, device, colours, names)
                save_png(grid, run_dir / "vis" / f"iter_{iteration:07d}.png")
                writer.add_image("val/fixed_batch", grid, iteration, dataformats="HWC")
            with open(run_dir / "metrics.jsonl", "a") as f:
                f.write(json.dumps(record, allow_nan=True) + "\n")
        improved = score > best
        if improved:
            best = score
        save_last()
        if improved and info.is_primary:
            best_state = {k: v for k, v in checkpoint_state().items() if k not in ("optimizer", "rng")}
            save_checkpoint(best_state, run_dir / "checkpoints" / "best.pt")
        distributed.barrier()
        return record

    from tqdm import tqdm

    bar = tqdm(total=total, initial=iteration, disable=not info.is_primary, dynamic_ncols=True, desc="train")
    data_iter: Iterator | None = None
    last_record: dict = {}
    seen_images, tick = 0, time.time()
    loss_sum, loss_count = 0.0, 0
    train_model.train()
    with _StopFlag() as stop:
        while iteration < total:
            epoch_done, batches = False, []
            for micro in range(t.accumulate):
                if batch_pos >= batches_per_epoch:
                    epoch, batch_pos, data_iter, epoch_done = epoch + 1, 0, None, True
                if data_iter is None:
                    data_iter = loader_for(epoch, batch_pos)
                images, masks = next(data_iter)
                batch_pos += 1
                images = images.to(device, non_blocking=True)
                masks = masks.to(device, non_blocking=True)
                masks_b, lam = None, 1.0
                if mixer is not None:
                    g = torch.Generator().manual_seed(_mix_seed(t.seed, iteration, micro, info.rank))
                    images, masks, masks_b, lam = mixer(images, masks, g)
                if t.channels_last:
                    images = images.contiguous(memory_format=torch.channels_last)
                batches.append((images, masks, masks_b, lam))
                seen_images += images.shape[0]
            loss_value = train_one_step(
                train_model,
                optimizer,
                batches,
                normalize=cfg.loss.normalize,
                weight=weight,
                amp=t.amp,
                scaler=scaler,
                clip_grad_norm=t.clip_grad_norm,
                iteration=iteration,
            )
            stop_now = stop.requested
            if info.enabled:  # the whole batch's loss; a Ctrl-C seen by any process stops all at this step
                totals = torch.tensor([loss_value, float(stop_now)], dtype=torch.float64, device=device)
                loss_value, stopping = distributed.all_reduce_sum(totals).tolist()
                stop_now = stopping > 0
            scheduler.step()
            if ema is not None:
                ema.update(_unwrap(model))
            iteration += 1
            loss_sum, loss_count = loss_sum + loss_value, loss_count + 1
            if batch_pos >= batches_per_epoch:  # the epoch is over: the next step starts the next one
                epoch, batch_pos, data_iter, epoch_done = epoch + 1, 0, None, True

            lr = optimizer.param_groups[0]["lr"]
            now = time.time()
            speed = seen_images * info.world_size / max(now - tick, 1e-9)
            bar.set_postfix(loss=f"{loss_value:.4g}", lr=f"{lr:.3g}", img_s=f"{speed:.1f}", refresh=False)
            bar.update(1)
            if writer is not None and (iteration % t.log_every == 0 or iteration == 1):
                writer.add_scalar("train/loss", loss_value, iteration)
                writer.add_scalar("train/lr", lr, iteration)
                writer.add_scalar("train/images_per_s", speed, iteration)
                seen_images, tick = 0, now

            evaluate_now = (t.eval_every > 0 and iteration % t.eval_every == 0) or (
                t.eval_every == 0 and epoch_done
            )
            if evaluate_now or iteration == total:
                last_record = run_evaluation()
            elif t.checkpoint_every > 0 and iteration % t.checkpoint_every == 0:
                save_last()
            if stop_now:
                if not evaluate_now:
                    save_last()
                bar.close()
                _log(
                    info, f"interrupted: saved {run_dir / 'checkpoints' / 'last.pt'} at iteration {iteration}"
                )
                break
    bar.close()
    if writer is not None:
        writer.close()
    distributed.cleanup()
    return {"iteration": iteration, "best_miou": best, "metrics": last_record, "run_dir": str(run_dir)}


def main(argv: Sequence[str] | None = None) -> int:
    """Parse train.py's arguments, train, and return the exit code (errors as one line)."""
    import argparse

    parser = argparse.ArgumentParser(
        description="Train an FCN as a YAML config says.",
        epilog="Example: python train.py --config predefined_configs/toy.yml training.iters=100",
    )
    parser.add_argument(
        "--config",
        action="append",
        default=None,
        help="YAML config (repeatable, merged in order; default: config.yml)",
    )
    parser.add_argument("overrides", nargs="*", help="key=value overrides, e.g. training.epochs=3")
    args = parser.parse_args(argv)
    paths = args.config if args.config is not None else ["config.yml"]
    try:
        cfg = fcn_config.load_config(paths, args.overrides)
        fit(cfg)
    except (fcn_config.ConfigError, TrainingError, OSError, ValueError, RuntimeError) as exc:
        info = distributed.env_info()
        print(f"error: {f'rank {info.rank}: ' if info.enabled else ''}{exc}", file=sys.stderr)
        return 1 if not isinstance(exc, fcn_config.ConfigError) else 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0
