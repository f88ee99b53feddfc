"""Training: fit(cfg) = setup(cfg), then train(run); train_one_step() and evaluate() are the pieces
bench/ reuses.

setup() builds everything from the config into one plain ``Run`` (the datasets and their order,
the model, optimizer, schedule, scaler, EMA, the resume position); train() is the loop: a step,
then every ``training.eval_every`` iterations (or at each epoch's end) an evaluation that logs the
metrics and saves ``checkpoints/last.pt`` and ``checkpoints/best.pt``. A resumed run continues
exactly: the data order is a pure function of (seed, epoch), every sample's augmentation a pure
function of (seed, epoch, index) (fcn.data.loaders), every batch's mixing a pure function of (seed,
iteration), and the checkpoint (fcn.checkpoint) holds the model, optimizer, scheduler, scaler, EMA,
RNG states and the data position.
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import signal
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from omegaconf import DictConfig
from torch import nn
from torch.utils.data import DataLoader, Dataset

from fcn import config as fcn_config
from fcn import distributed
from fcn.checkpoint import (
    CheckpointError,
    atomic_write,
    bare_state_dict,
    capture_rng_state,
    describe_mismatch,
    load_checkpoint,
    restore_rng_state,
    save_checkpoint,
    training_checkpoint,
    weights_checkpoint,
)
from fcn.data.common import VOID
from fcn.data.loaders import (
    EpochBatchSampler,
    SeededItems,
    eval_loader,
    mix_seed,
    resume_position,
    train_loader,
)
from fcn.losses import SegmentationLoss, build_loss, cross_entropy_sum, labelled
from fcn.metrics import ConfusionMatrix, format_table
from fcn.runtime import (
    autocast,
    configure_determinism,
    resolve_amp,
    resolve_channels_last,
    seed_everything,
    select_device,
)
from fcn.sliding import argmax_heads, model_logits, window_options


class TrainingError(RuntimeError):
    """Training cannot go on (a non-finite loss, processes out of step); the message says why."""


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


def segmentation_loss(
    logits: torch.Tensor,
    masks: torch.Tensor,
    normalize: bool,
    weight: torch.Tensor | None = None,
    ignore_index: int = VOID,
) -> torch.Tensor:
    """Return the cross-entropy ignoring ignore_index: averaged over labelled pixels, or summed (the
    reference's loss_param { normalize: false })."""
    total = cross_entropy_sum(logits, masks, weight, ignore_index)
    return total / labelled(masks, weight, ignore_index).clamp_min(1) if normalize else total


def train_one_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    batches: Sequence[tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, float]],
    *,
    normalize: bool,
    weight: torch.Tensor | None = None,
    loss_fn: SegmentationLoss | None = None,
    amp: str = "none",
    scaler: torch.amp.GradScaler | None = None,
    clip_grad_norm: float = 0.0,
    iteration: int = 0,
) -> float:
    """Make one optimizer step over micro-batches (images, masks, masks_b, lam) on the model's
    device; return the loss.

    loss_fn holds loss.terms, the class weights and the ignore index (None: the cross-entropy
    with `weight`, ignoring fcn.config.VOID). The micro-batches count as one batch of their union: the pixel-sum
    terms (ce, focal) are divided by the labelled pixels of all of them (summed over processes)
    when normalised, else summed, so k accumulated batches of 1 equal one batch of k (without
    BatchNorm), and N processes with batch b equal one process with batch N*b. (Caffe's iter_size
    instead averages over the micro-batches; the reference's solvers use iter_size 1.) The
    per-micro-batch terms (ohem, dice, lovasz) are averaged over the micro-batches and processes.
    MixUp's second target is weighted by 1 - lam in every term.
    """
    if loss_fn is None:
        loss_fn = SegmentationLoss(weight=weight)
    device = batches[0][0].device
    world = torch.distributed.get_world_size() if torch.distributed.is_initialized() else 1
    if normalize:
        denom = sum(loss_fn.labelled(masks) for _, masks, _, _ in batches)
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
            loss = loss_fn.pixel_sum(logits, masks)
            if loss is not None:
                if masks_b is not None:
                    loss = lam * loss + (1.0 - lam) * loss_fn.pixel_sum(logits, masks_b)
                if normalize:
                    loss = loss / denom
            mean = loss_fn.batch_mean(logits, masks)
            if mean is not None:
                if masks_b is not None:
                    mean = lam * mean + (1.0 - lam) * loss_fn.batch_mean(logits, masks_b)
                mean = mean / (len(batches) * world)  # summed over processes below: the average
                loss = mean if loss is None else loss + mean
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
    mode: str = "whole",
    tile: int = 512,
    stride: int = 341,
    window_batch: int = 4,
    ignore_index: int = VOID,
    geometric_classes: int = 0,
) -> dict:
    """Return the paper's metrics of a model over a loader, summed across processes, at the masks'
    own resolution (padding is void); the ConfusionMatrix.compute() dict plus 'confusion'. With
    mode='slide', each batch is predicted by tile x tile windows (fcn.sliding.slide_logits). A
    two-headed model (geometric_classes > 0, SIFT Flow): the semantic head's metrics, plus
    'geometric_pixel_acc' and 'geometric' (the geometric head's compute()).

    Evaluation during training; evaluate.py adds test-time augmentation and saved predictions
    (fcn.evaluation.evaluate_model)."""
    from tqdm import tqdm

    was_training = model.training
    model.eval()
    matrix = ConfusionMatrix(num_classes, ignore_index=ignore_index, device=device)
    heads = [num_classes, geometric_classes] if geometric_classes else None
    geo = ConfusionMatrix(geometric_classes, ignore_index=ignore_index, device=device) if heads else None
    for images, masks in tqdm(loader, desc=desc, leave=False, disable=not progress, dynamic_ncols=True):
        images = images.to(device, non_blocking=True)
        masks = masks.to(device, non_blocking=True)
        with autocast(device, amp):
            window = dict(mode=mode, tile=tile, stride=stride, window_batch=window_batch)
            pred = argmax_heads(model_logits(model, images, channels_last, **window), heads)
        if geo is not None:
            geo.update(pred[:, 1], masks[:, 1])
            pred, masks = pred[:, 0], masks[:, 0]
        matrix.update(pred, masks)
    matrix.all_reduce()
    model.train(was_training)
    result = matrix.compute()
    result["confusion"] = matrix.mat.cpu().tolist()
    if geo is not None:
        geo.all_reduce()
        result["geometric"] = geo.compute()
        result["geometric_pixel_acc"] = result["geometric"]["pixel_acc"]
    return result


# ----------------------------------------------------------------------------- the run


@dataclass
class Run:
    """A training run: what setup() built from the config, then the loop's position and totals.

    train() changes only the fields below ``# the loop's state``; everything above is fixed.
    """

    cfg: DictConfig
    info: distributed.DistInfo
    device: torch.device
    run_dir: Path
    train_set: Dataset
    val_set: Dataset
    items: SeededItems
    sampler: EpochBatchSampler
    val_loader: DataLoader
    amp: str  # training.amp with 'auto' resolved for this device
    channels_last: bool  # training.channels_last resolved likewise
    model: nn.Module  # the bare model: what checkpoints hold and evaluation runs
    train_model: nn.Module  # the model compiled and/or wrapped in DistributedDataParallel
    ema: ModelEMA | None
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    scaler: torch.amp.GradScaler | None
    loss_fn: SegmentationLoss
    mixer: Callable | None
    total: int
    class_names: list[str]
    palette: np.ndarray
    writer: Any  # TensorBoard's SummaryWriter on the primary process, else None
    # the loop's state
    iteration: int = 0
    epoch: int = 0
    batch_pos: int = 0
    best: float = -1.0
    evals_since_best: int = 0  # evaluations in a row without a better mean IU (early stopping)
    loss_sum: float = 0.0
    loss_count: int = 0
    data: Iterator | None = None

    @property
    def batches_per_epoch(self) -> int:
        """Return the number of optimizer-step batches each process gets per epoch."""
        return self.sampler.batches_per_epoch()

    def log(self, message: str) -> None:
        """Print a line above the progress bar, on the primary process only."""
        if self.info.is_primary:
            from tqdm import tqdm

            tqdm.write(message)


def _log(info: distributed.DistInfo, message: str) -> None:
    if info.is_primary:
        from tqdm import tqdm

        tqdm.write(message)


PREEMPTION_SIGNALS = ("SIGTERM", "SIGUSR1")
"""Signals that mean "this machine is going away": save last.pt at the iteration's end and stop
(fcn.cli's exit codes 143 and 75). SIGINT (Ctrl-C) does the same and exits 0."""


# When processes saw different signals, all stop for the first of these (the same on every one):
# the machine going away (SIGTERM) before the time limit coming (SIGUSR1) before a Ctrl-C.
_SIGNAL_PRIORITY = ("SIGTERM", "SIGUSR1", "SIGINT")


class _StopFlag:
    """Turns the first Ctrl-C, SIGTERM or SIGUSR1 into a request to stop at the next iteration
    boundary (`signal` names it); a second one stops at once."""

    # A signal within this many seconds of the first is the same event delivered twice, not a
    # second request: SLURM can signal every process of a job step while torchrun forwards the one
    # it gets, so a worker under `srun torchrun` may see one preemption as two SIGTERMs.
    SAME_EVENT_S = 1.0

    def __init__(self, last: Path) -> None:
        self.signal: str | None = None
        self._last = last
        self._first = 0.0
        self._previous: dict[int, Any] = {}

    @property
    def requested(self) -> bool:
        return self.signal is not None

    def __enter__(self) -> _StopFlag:
        for name in ("SIGINT", *PREEMPTION_SIGNALS):
            signum = getattr(signal, name, None)  # no SIGUSR1 on Windows
            if signum is None:
                continue
            with contextlib.suppress(ValueError):  # not the main thread: no handler
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        name = signal.Signals(signum).name
        if self.signal is None:
            self.signal, self._first = name, time.monotonic()
            return
        if time.monotonic() - self._first < self.SAME_EVENT_S:
            return
        if name == "SIGINT":  # a second Ctrl-C stops at once
            raise KeyboardInterrupt
        from fcn.cli import Stopped, exit_code

        raise Stopped(
            f"stopped at once by a second {name} (after {self.signal}); {self._last}, if any, holds the last "
            "saved iteration: start again with training.resume=auto",
            exit_code(name),
        )

    def __exit__(self, *exc: Any) -> None:
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)


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


def _init_from(model: nn.Module, path: str, info: distributed.DistInfo) -> None:
    """Copy the tensors of checkpoint `path` that fit model (the paper's staged init); an error when
    none fits, which is a wrong path rather than another stage."""
    from fcn.models import describe_init, init_from_state_dict

    state = load_checkpoint(path)
    weights = state.get("model", state)
    copied, new = init_from_state_dict(model, weights)
    # Another stage or another number of classes copies the backbone; none of it copied (at most
    # a frozen bilinear kernel) means a checkpoint of another model: most likely a wrong path.
    if not any(name.startswith("backbone.") for name in copied):
        backbone = {k: v for k, v in model.state_dict().items() if k.startswith("backbone.")}
        why = describe_mismatch(backbone, bare_state_dict(dict(weights)), unexpected=False)
        raise CheckpointError(
            f"model.init_from: none of the backbone's tensors fits in {path}: {why}; give the checkpoint "
            "of a run of the same backbone (or remove model.init_from)"
        )
    _log(info, f"init_from {path}: {describe_init(copied, new)}")


def class_weight_tensor(
    cfg: DictConfig, device: torch.device, info: distributed.DistInfo
) -> torch.Tensor | None:
    """Return loss.class_weights as a tensor on the device (None when uniform): the list as given,
    or inverse_frequency / median_frequency from data.train's pixel counts (fcn.data.check,
    cached beside the dataset), logged in one line."""
    weights = cfg.loss.class_weights
    if not isinstance(weights, str):
        return torch.tensor([float(w) for w in weights], device=device) if len(weights) else None
    from fcn.data.check import frequency_weights, split_report_cached

    report, cache, cached = split_report_cached(
        cfg.data.train, cfg.data, cfg.data.num_workers, cfg.model.in_channels
    )
    values = frequency_weights(report, weights, cfg.model.num_classes, cfg.data.ignore_index)
    source = (
        f"read from {cache}"
        if cached
        else f"counted in {report.good} masks" + (f", cached in {cache}" if cache else "")
    )
    _log(info, f"loss.class_weights={weights} ({source}): [{', '.join(f'{w:.4g}' for w in values)}]")
    return torch.tensor(values, device=device)


def setup(cfg: DictConfig) -> Run:
    """Return the run the config describes, ready to train: datasets listed, model built (and
    initialised or resumed), optimizer, schedule, loaders, run directory. Errors here are the
    config's or the input files' (nothing has been trained)."""
    from fcn.data import build_dataset, class_names, palette
    from fcn.data.mixing import build_mixer
    from fcn.data.transforms import build_transforms
    from fcn.models import build_model, resolve_normalization

    # 'auto' normalisation of a timm backbone: its mean/std, written into the run's config (and so
    # its checkpoints), which evaluate.py, predict.py and the export read back.
    cfg = resolve_normalization(cfg)
    t = cfg.training
    device = select_device(t.device)
    info = distributed.env_info()
    if info.enabled and device.type == "cuda":
        device = torch.device("cuda", info.local_rank)
        torch.cuda.set_device(device)
    if t.amp == "fp16" and device.type != "cuda":
        raise ValueError("training.amp=fp16 needs a CUDA device; use training.amp=bf16 on the CPU")
    amp = resolve_amp(t.amp, device)
    channels_last = resolve_channels_last(t.channels_last, device, amp)
    if t.sync_bn and info.enabled and device.type != "cuda":
        raise ValueError(
            "training.sync_bn=true needs CUDA devices (PyTorch's SyncBatchNorm does not run on the CPU); "
            "set training.sync_bn=false"
        )
    info = distributed.setup(device, t.dist_timeout)
    run_dir = Path(t.run_dir)
    configure_determinism(t.deterministic, fixed_sizes=cfg.data.transforms.preset == "standard")
    seed_everything(t.seed)

    # The data: the split's files listed (a missing one is an error here), the order of the epochs.
    ignore = cfg.data.ignore_index
    channels = cfg.model.in_channels
    train_set = build_dataset(
        cfg.data.train, cfg.data, build_transforms(cfg.data.transforms, True, ignore), channels
    )
    val_set = build_dataset(
        cfg.data.val, cfg.data, build_transforms(cfg.data.transforms, False, ignore), channels
    )
    sampler = EpochBatchSampler(len(train_set), cfg.data.batch_size, t.seed, True, info.rank, info.world_size)
    if sampler.batches_per_epoch() == 0:
        raise ValueError(
            f"data.train: {len(train_set)} images are fewer than data.batch_size={cfg.data.batch_size}"
            + (f" x {info.world_size} processes" if info.enabled else "")
        )
    total = total_iterations(cfg, sampler.batches_per_epoch())

    # The model and what trains it.
    model = build_model(cfg.model)
    if cfg.model.init_from:
        _init_from(model, cfg.model.init_from, info)
    if t.sync_bn and info.enabled:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    model.to(device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    ema = ModelEMA(model, t.ema_decay) if t.ema_decay > 0 else None
    optimizer = build_optimizer(model, cfg)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda i: lr_factor(i, total, cfg))
    scaler = torch.amp.GradScaler("cuda") if amp == "fp16" else None
    weight = class_weight_tensor(cfg, device, info)

    if info.rank > 0:  # dropout masks differ across processes as across the images of one batch
        seed_everything(mix_seed(t.seed, info.rank))
    position = (0, 0, 0, -1.0, 0)  # iteration, epoch, batch, best mean IU, evaluations since the best
    resume = _resume_path(cfg, run_dir)
    if resume is not None:
        position = _resume(resume, cfg, info, model, optimizer, scheduler, scaler, ema)
    if info.enabled:  # without a shared filesystem a node may not see training.resume's checkpoint
        with distributed.backend_failures("before training started"):
            positions = distributed.all_gather_object(position[:3])
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
        with distributed.backend_failures("before training started"):  # DDP broadcasts rank 0's weights
            train_model = nn.parallel.DistributedDataParallel(train_model, **ddp_kwargs)

    writer = None
    if info.is_primary:
        from torch.utils.tensorboard import SummaryWriter

        (run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
        text = fcn_config.to_yaml(cfg)
        atomic_write(run_dir / "config.yml", lambda tmp: tmp.write_text(text, encoding="utf-8"))
        writer = SummaryWriter(str(run_dir))
    iteration, epoch, batch_pos, best, evals_since_best = position
    run = Run(
        cfg=cfg,
        info=info,
        device=device,
        run_dir=run_dir,
        train_set=train_set,
        val_set=val_set,
        items=SeededItems(train_set, t.seed),
        sampler=sampler,
        val_loader=eval_loader(
            val_set,
            batch_size=cfg.data.val_batch_size,
            num_workers=min(cfg.data.num_workers, 2),
            rank=info.rank,
            world_size=info.world_size,
            ignore_index=ignore,
        ),
        amp=amp,
        channels_last=channels_last,
        model=model,
        train_model=train_model,
        ema=ema,
        optimizer=optimizer,
        scheduler=scheduler,
        scaler=scaler,
        loss_fn=build_loss(
            cfg.loss, ignore, weight, int(cfg.model.num_classes), int(cfg.model.geometric_classes)
        ),
        mixer=build_mixer(cfg.data.mixing, ignore),
        total=total,
        class_names=class_names(cfg.data),
        palette=palette(cfg.data),
        writer=writer,
        iteration=iteration,
        epoch=epoch,
        batch_pos=batch_pos,
        best=best,
        evals_since_best=evals_since_best,
    )
    run.log(
        f"training {cfg.model.arch} ({cfg.model.backbone}) on {cfg.data.train.name}/{cfg.data.train.split} "
        f"({len(train_set)} images) for {total} iterations on {device}; effective batch "
        f"{cfg.data.batch_size} x {t.accumulate} accumulated x {info.world_size} processes = "
        f"{cfg.data.batch_size * t.accumulate * info.world_size}; precision {'fp32' if amp == 'none' else amp}"
        f"{' (auto)' if t.amp == 'auto' else ''}{', channels-last' if channels_last else ''}; run directory {run_dir}",
    )
    return run


def _resume(
    path: Path,
    cfg: DictConfig,
    info: distributed.DistInfo,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    scaler: Any,
    ema: ModelEMA | None,
) -> tuple[int, int, int, float, int]:
    """Load a resumable checkpoint into the run's objects and RNGs; return (iteration, epoch,
    batch, best mean IU, evaluations since the best) to go on from."""
    state = load_checkpoint(path)
    try:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        if scaler is not None and state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        if ema is not None and state.get("ema"):
            ema.module.load_state_dict(state["ema"])
        iteration, best = state["iteration"], state["best_miou"]
        evals_since_best = int(state.get("evals_since_best", 0))  # older checkpoints: 0
        epoch, batch = resume_position(state["sampler"], cfg.data.batch_size, info.world_size)
    except (KeyError, RuntimeError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0]
        raise CheckpointError(f"training.resume: {path} does not fit this config: {first}") from None
    rngs = state.get("rng_ranks") or []
    if len(rngs) == info.world_size:
        restore_rng_state(rngs[info.rank])
    elif info.rank == 0:
        restore_rng_state(state["rng"])
    else:  # saved by fewer processes than resume it
        seed_everything(mix_seed(cfg.training.seed, info.rank, iteration))
    _log(info, f"resumed from {path} at iteration {iteration} (epoch {epoch}, batch {batch})")
    return iteration, epoch, batch, best, evals_since_best


# ----------------------------------------------------------------------------- the loop


def _next_batches(run: Run) -> tuple[list, int, bool]:
    """Return (micro-batches of one step on the device, images in them, whether an epoch ended
    before them), moving the run's position in the data on."""
    cfg, t = run.cfg, run.cfg.training
    batches, images_seen, epoch_done = [], 0, False
    for micro in range(t.accumulate):
        if run.batch_pos >= run.batches_per_epoch:
            run.epoch, run.batch_pos, run.data, epoch_done = run.epoch + 1, 0, None, True
        if run.data is None:
            run.sampler.set_position(run.epoch, run.batch_pos)
            run.data = iter(
                train_loader(
                    run.items,
                    run.sampler,
                    num_workers=cfg.data.num_workers,
                    pad=cfg.data.pad_collate,
                    pin_memory=run.device.type == "cuda",
                    ignore_index=cfg.data.ignore_index,
                )
            )
        images, masks = next(run.data)
        run.batch_pos += 1
        images = images.to(run.device, non_blocking=True)
        masks = masks.to(run.device, non_blocking=True)
        masks_b, lam = None, 1.0
        if run.mixer is not None:
            g = torch.Generator().manual_seed(mix_seed(t.seed, run.iteration, micro, run.info.rank))
            images, masks, masks_b, lam = run.mixer(images, masks, g)
        if run.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        batches.append((images, masks, masks_b, lam))
        images_seen += images.shape[0]
    return batches, images_seen, epoch_done


def train(run: Run) -> dict:
    """Train the run to its last iteration (or a Ctrl-C, SIGTERM or SIGUSR1, or
    training.early_stop_patience evaluations without a better mean IU); return a summary
    (iterations, best mean IU, last metrics, run_dir, stopped_early, and `signal`: the name of the
    signal that stopped the run before its end, else None).

    A failure of the process group (a lost peer, a collective timeout) is a DistributedError whose
    one line says to check the peers and resume."""
    try:
        return _train(run)
    except RuntimeError as exc:
        if not (run.info.enabled and distributed.is_backend_failure(exc)):
            raise
        raise distributed.lost_peer(exc, f"after iteration {run.iteration}") from None


def _train(run: Run) -> dict:
    from tqdm import tqdm

    cfg, t, info = run.cfg, run.cfg.training, run.info
    bar = tqdm(
        total=run.total, initial=run.iteration, disable=not info.is_primary, dynamic_ncols=True, desc="train"
    )
    last_record: dict = {}
    stopped_early, stopped_by = False, None
    seen_images, tick = 0, time.time()
    run.train_model.train()
    last = run.run_dir / "checkpoints" / "last.pt"
    with _StopFlag(last) as stop, bar:  # an error closes the bar before its line is printed
        while run.iteration < run.total:
            batches, images, epoch_done = _next_batches(run)
            seen_images += images
            loss_value = train_one_step(
                run.train_model,
                run.optimizer,
                batches,
                normalize=cfg.loss.normalize,
                loss_fn=run.loss_fn,  # holds the class weights and the ignore index
                amp=run.amp,
                scaler=run.scaler,
                clip_grad_norm=t.clip_grad_norm,
                iteration=run.iteration,
            )
            signals = [float(stop.signal == name) for name in _SIGNAL_PRIORITY]  # 1 where seen
            if info.enabled:  # the whole batch's loss; a signal seen by any process stops all at this step
                totals = torch.tensor([loss_value, *signals], dtype=torch.float64, device=run.device)
                loss_value, *signals = distributed.all_reduce_sum(totals).tolist()
            stop_now = next((name for name, seen in zip(_SIGNAL_PRIORITY, signals) if seen), None)
            run.scheduler.step()
            if run.ema is not None:
                run.ema.update(run.model)
            run.iteration += 1
            run.loss_sum, run.loss_count = run.loss_sum + loss_value, run.loss_count + 1
            if run.batch_pos >= run.batches_per_epoch:  # the epoch is over: the next step starts the next one
                run.epoch, run.batch_pos, run.data, epoch_done = run.epoch + 1, 0, None, True

            lr = run.optimizer.param_groups[0]["lr"]
            now = time.time()
            speed = seen_images * info.world_size / max(now - tick, 1e-9)
            bar.set_postfix(loss=f"{loss_value:.4g}", lr=f"{lr:.3g}", img_s=f"{speed:.1f}", refresh=False)
            bar.update(1)
            if run.writer is not None and (run.iteration % t.log_every == 0 or run.iteration == 1):
                run.writer.add_scalar("train/loss", loss_value, run.iteration)
                run.writer.add_scalar("train/lr", lr, run.iteration)
                run.writer.add_scalar("train/images_per_s", speed, run.iteration)
                seen_images, tick = 0, now

            evaluate_now = (t.eval_every > 0 and run.iteration % t.eval_every == 0) or (
                t.eval_every == 0 and epoch_done
            )
            if evaluate_now or run.iteration == run.total:
                last_record = evaluate_and_save(run)
                patience = t.early_stop_patience
                if patience > 0 and run.evals_since_best >= patience and run.iteration < run.total:
                    bar.close()
                    run.log(
                        f"early stop at iteration {run.iteration}: no better mean IU in {patience} evaluations "
                        f"(best {run.best:.4f}, kept in {run.run_dir / 'checkpoints' / 'best.pt'})"
                    )
                    stopped_early = True
                    break
            elif t.checkpoint_every > 0 and run.iteration % t.checkpoint_every == 0:
                save_last(run)
            if stop_now and run.iteration < run.total:  # at the last iteration the run is complete
                if not evaluate_now:
                    save_last(run)
                bar.close()
                if stop_now == "SIGINT":
                    run.log(f"interrupted: saved {last} at iteration {run.iteration}")
                else:
                    run.log(
                        f"preempted by {stop_now}: saved {last} at iteration {run.iteration} of {run.total}; "
                        "start again with training.resume=auto to go on from it"
                    )
                    stopped_by = stop_now
                break
    if run.writer is not None:
        run.writer.close()
    distributed.cleanup()
    return {
        "iteration": run.iteration,
        "best_miou": run.best,
        "metrics": last_record,
        "run_dir": str(run.run_dir),
        "stopped_early": stopped_early,
        "signal": stopped_by,
    }


def fit(cfg: DictConfig) -> dict:
    """Train as the config says (setup, then train); return train()'s summary."""
    return train(setup(cfg))


# ----------------------------------------------------------------------------- evaluation, checkpoints


def evaluate_and_save(run: Run) -> dict:
    """Evaluate the model (and its EMA) on the validation split, log the metrics (console,
    TensorBoard, metrics.jsonl, the fixed-batch grid), save last.pt and, when the mean IU improved,
    best.pt; return the metrics record."""
    cfg, info = run.cfg, run.info
    # BatchNorm statistics drift apart across processes between DDP's broadcasts at each forward;
    # every process evaluates rank 0's, the ones the checkpoint holds
    distributed.broadcast_buffers(run.model)
    if run.ema is not None:
        distributed.broadcast_buffers(run.ema.module)
    n = cfg.model.num_classes
    ignore, window = cfg.data.ignore_index, window_options(cfg)
    window["geometric_classes"] = int(cfg.model.geometric_classes)
    metrics = evaluate(
        run.model, run.val_loader, n, run.device, amp=run.amp, desc="eval", ignore_index=ignore, **window
    )
    record = {"iteration": run.iteration, "epoch": run.epoch, "time": time.time(), **metrics}
    record["train_loss"] = run.loss_sum / max(run.loss_count, 1)  # mean since the previous evaluation
    run.loss_sum, run.loss_count = 0.0, 0
    record.pop("confusion")
    score = metrics["mean_iou"]
    if run.ema is not None:
        ema_metrics = evaluate(
            run.ema.module,
            run.val_loader,
            n,
            run.device,
            amp=run.amp,
            desc="eval ema",
            ignore_index=ignore,
            **window,
        )
        ema_metrics.pop("confusion")
        record["ema"] = ema_metrics
        score = ema_metrics["mean_iou"]
    if info.is_primary:
        _log_evaluation(run, metrics, record)
    improved = score > run.best
    if improved:
        run.best = score
    run.evals_since_best = 0 if improved else run.evals_since_best + 1
    save_last(run)
    if improved and info.is_primary:
        state = weights_checkpoint(
            model=run.model,
            ema=run.ema.module if run.ema is not None else None,
            config=fcn_config.to_dict(cfg),
            iteration=run.iteration,
            epoch=run.epoch,
            best_miou=run.best,
        )
        save_checkpoint(state, run.run_dir / "checkpoints" / "best.pt")
    distributed.barrier()
    return record


def _log_evaluation(run: Run, metrics: dict, record: dict) -> None:
    """Write one evaluation to the console, TensorBoard (scalars, the confusion matrix and the
    per-class IU chart), the fixed-batch grid and metrics.jsonl."""
    writer, it = run.writer, run.iteration
    run.log(f"\niteration {it}/{run.total} (epoch {run.epoch})\n{format_table(metrics, run.class_names)}")
    if "ema" in record:
        run.log(f"EMA weights: mean IU {record['ema']['mean_iou']:.4f}")
    if "geometric" in metrics:
        run.log(f"geometric pixel accuracy {100 * metrics['geometric_pixel_acc']:.2f}")
        writer.add_scalar("val/geometric_pixel_acc", metrics["geometric_pixel_acc"], it)
    for key in ("pixel_acc", "mean_acc", "mean_iou", "fwavacc"):
        writer.add_scalar(f"val/{key}", metrics[key], it)
        if "ema" in record:
            writer.add_scalar(f"val_ema/{key}", record["ema"][key], it)
    for name, value in zip(run.class_names, metrics["iou"]):
        if not math.isnan(value):
            writer.add_scalar(f"val_iou/{name}", value, it)
    from fcn.visualize import confusion_image, iou_chart

    title = f"iteration {it}: mean IU {100 * metrics['mean_iou']:.1f}"
    writer.add_image(
        "val/confusion", confusion_image(metrics["confusion"], run.class_names, title), it, dataformats="HWC"
    )
    writer.add_image(
        "val/iou", iou_chart(metrics["iou"], run.class_names, run.palette, title), it, dataformats="HWC"
    )
    vis_indices = list(range(min(run.cfg.training.vis_images, len(run.val_set))))
    if vis_indices:
        from fcn.visualize import save_png

        grid = _vis_grid(run, vis_indices)
        save_png(grid, run.run_dir / "vis" / f"iter_{it:07d}.png")
        writer.add_image("val/fixed_batch", grid, it, dataformats="HWC")
    with open(run.run_dir / "metrics.jsonl", "a") as f:
        f.write(json.dumps(record, allow_nan=True) + "\n")


def _vis_grid(run: Run, indices: list[int]) -> np.ndarray:
    """Return the image | ground truth | prediction grid of the given validation images."""
    from fcn.data.transforms import denormalize, input_normalization
    from fcn.visualize import prediction_grid

    images, gts, preds = [], [], []
    model, cfg = run.model, run.cfg
    was_training = model.training
    model.eval()
    with torch.no_grad():
        for index in indices:
            image, mask = run.val_set[index]
            with autocast(run.device, run.amp):
                logits = model(image.unsqueeze(0).to(run.device))
            # The semantic head (and mask) of a two-headed model are what the grid shows.
            preds.append(logits[:, : cfg.model.num_classes].argmax(1)[0].cpu().numpy().astype(np.uint8))
            images.append(
                denormalize(image, input_normalization(cfg.data.transforms), cfg.data.display_channels)
            )
            gts.append(mask.numpy().astype(np.uint8).reshape(-1, *mask.shape[-2:])[0])
    model.train(was_training)
    return prediction_grid(
        images, gts, preds, run.palette, run.class_names, ignore_index=cfg.data.ignore_index
    )


def save_last(run: Run) -> None:
    """Save the resumable checkpoints/last.pt (every process's RNG states, gathered to rank 0)."""
    info = run.info
    rng_ranks = distributed.all_gather_object(capture_rng_state()) if info.enabled else None
    if info.is_primary:
        images_per_batch = run.cfg.data.batch_size * info.world_size
        state = training_checkpoint(
            model=run.model,
            ema=run.ema.module if run.ema is not None else None,
            optimizer=run.optimizer,
            scheduler=run.scheduler,
            scaler=run.scaler,
            iteration=run.iteration,
            epoch=run.epoch,
            best_miou=run.best,
            # images: of this epoch's order, seen by all processes (resume may change their number)
            sampler={"epoch": run.epoch, "batch": run.batch_pos, "images": run.batch_pos * images_per_batch},
            config=fcn_config.to_dict(run.cfg),
            rng_ranks=rng_ranks,
            evals_since_best=run.evals_since_best,
        )
        save_checkpoint(state, run.run_dir / "checkpoints" / "last.pt")
