"""Training: fit(cfg) = setup(cfg), then train(run); train_one_step() is the piece bench/ reuses.

setup() builds everything from the config into one plain ``Run`` (fcn.training.state), in named steps: the
runtime (device, processes, precision), the data and its order, the model, what trains it
(optimizer, schedule, scaler, EMA), the resume position, the run directory's logs. train() is the
loop: a step, then every ``training.eval_every`` iterations (or at each epoch's end) an evaluation
that logs the metrics and saves ``checkpoints/last.pt`` and ``checkpoints/best.pt``
(fcn.training.validate); a Ctrl-C, SIGTERM or SIGUSR1 stops it at an iteration's end (fcn.training.preemption).
A resumed run continues exactly: the data order is a pure function of (seed, epoch), every
sample's augmentation a pure function of (seed, epoch, index) (fcn.data.loaders), every batch's
mixing a pure function of (seed, iteration), and the checkpoint (fcn.core.checkpoint, written and read
by fcn.training.state) holds the model, optimizer, scheduler, scaler, EMA, RNG states and the data position.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from omegaconf import DictConfig
from torch import nn
from torch.utils.data import Dataset

from fcn import config as fcn_config
from fcn.config import VOID
from fcn.core import distributed
from fcn.core.files import atomic_write
from fcn.core.runtime import (
    autocast,
    configure_determinism,
    resolve_amp,
    resolve_channels_last,
    seed_everything,
    select_device,
)
from fcn.data.loaders import EpochBatchSampler, SeededItems, eval_loader, mix_seed, train_loader
from fcn.training.ema import ModelEMA
from fcn.training.losses import SegmentationLoss, build_loss, cross_entropy_sum, labelled
from fcn.training.preemption import StopFlag
from fcn.training.rundir import check_run_dir, holds_run, release_run_dir, replace_run
from fcn.training.state import Run, init_from, log, resume_checkpoint_path, resume_from, save_last
from fcn.training.trackers import Trackers, check_installed
from fcn.training.validate import evaluate_and_save


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


# ----------------------------------------------------------------------------- setup


def total_iterations(cfg: DictConfig, batches_per_epoch: int) -> int:
    """Return the number of optimizer steps the run makes (training.iters, else by epochs)."""
    if cfg.training.iters > 0:
        return cfg.training.iters
    return cfg.training.epochs * batches_per_epoch // cfg.training.accumulate


def class_weight_tensor(
    cfg: DictConfig, device: torch.device, info: distributed.DistInfo
) -> torch.Tensor | None:
    """Return loss.class_weights as a tensor on the device (None when uniform): the list as given,
    or inverse_frequency / median_frequency from data.train's pixel counts (fcn.data.weights,
    cached beside the dataset), logged in one line."""
    weights = cfg.loss.class_weights
    if not isinstance(weights, str):
        return torch.tensor([float(w) for w in weights], device=device) if len(weights) else None
    from fcn.data.weights import frequency_weights, split_report_cached

    report, cache, cached = split_report_cached(
        cfg.data.train, cfg.data, cfg.data.num_workers, cfg.model.in_channels
    )
    values = frequency_weights(report, weights, cfg.model.num_classes, cfg.data.ignore_index, cfg.data.task)
    source = (
        f"read from {cache}"
        if cached
        else f"counted in {report.good} masks" + (f", cached in {cache}" if cache else "")
    )
    log(info, f"loss.class_weights={weights} ({source}): [{', '.join(f'{w:.4g}' for w in values)}]")
    return torch.tensor(values, device=device)


def setup(cfg: DictConfig) -> Run:
    """Return the run the config describes, ready to train: datasets listed, model built (and
    initialised or resumed), optimizer, schedule, loaders, run directory. Errors here are the
    config's or the input files' (nothing has been trained). The run directory is this run's
    (fcn.training.rundir's claim) until train() ends, or setup fails."""
    check_installed(cfg)  # a tracker named but not installed: one line, before anything
    device, info, amp, channels_last = _setup_runtime(cfg)
    # First: a directory that another run is using, or that holds another run, stops here, nothing done.
    for line in check_run_dir(cfg, info):
        log(info, line)
    try:
        return _setup_claimed(cfg, device, info, amp, channels_last)
    except BaseException:  # the claim let go; an overwritten run put back
        release_run_dir(Path(cfg.training.run_dir), lambda line: log(info, line))
        raise


def _setup_claimed(
    cfg: DictConfig, device: torch.device, info: distributed.DistInfo, amp: str, channels_last: bool
) -> Run:
    """Return setup()'s run, once training.run_dir is this run's."""
    from fcn.data import class_names, palette, resolve_classes
    from fcn.data.mixing import build_mixer
    from fcn.models import resolve_normalization

    # 'auto' normalisation of a timm backbone: its mean/std, written into the run's config (and so
    # its checkpoints), which evaluate.py, predict.py and the export read back.
    cfg = resolve_normalization(cfg)
    # An export's own class names (Roboflow's _classes.csv, ...) written into the run's config, so
    # that its checkpoints name their classes wherever they are used.
    cfg = resolve_classes(cfg)
    t = cfg.training
    run_dir = Path(t.run_dir)
    train_set, val_set, sampler = _setup_data(cfg, info)
    total = total_iterations(cfg, sampler.batches_per_epoch())
    model = _setup_model(cfg, info, device, channels_last)
    ema = ModelEMA(model, t.ema_decay) if t.ema_decay > 0 else None
    optimizer = build_optimizer(model, cfg)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda i: lr_factor(i, total, cfg))
    scaler = torch.amp.GradScaler("cuda") if amp == "fp16" else None
    weight = class_weight_tensor(cfg, device, info)
    iteration, epoch, batch_pos, best, evals_since_best, tracker_ids = _setup_resume(
        cfg, info, run_dir, model, optimizer, scheduler, scaler, ema
    )
    train_model = _training_wrapper(model, cfg, info, device)
    trackers = _setup_run_dir(cfg, info, run_dir, tracker_ids)
    ignore = cfg.data.ignore_index
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
            cfg.loss,
            ignore,
            weight,
            int(cfg.model.num_classes),
            int(cfg.model.geometric_classes),
            task=str(cfg.data.task),
            aux_weight=float(cfg.model.aux_weight),  # torchvision_fcn's auxiliary head
        ),
        mixer=build_mixer(cfg.data.mixing, ignore),
        total=total,
        class_names=class_names(cfg.data),
        palette=palette(cfg.data),
        trackers=trackers,
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


def _setup_runtime(cfg: DictConfig) -> tuple[torch.device, distributed.DistInfo, str, bool]:
    """Return (device, process group info, amp, channels_last) for training.*, the process group
    joined and the RNGs seeded and made deterministic as asked."""
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
    configure_determinism(t.deterministic, fixed_sizes=cfg.data.transforms.preset == "standard")
    seed_everything(t.seed)
    return device, info, amp, channels_last


def _setup_data(cfg: DictConfig, info: distributed.DistInfo) -> tuple[Dataset, Dataset, EpochBatchSampler]:
    """Return (train set, validation set, the order of the training epochs): the split's files
    listed (a missing one is an error here; files a split leaves out are a warning line each)."""
    from fcn.data import build_dataset
    from fcn.data.listing import hold_out_line
    from fcn.data.transforms import build_transforms

    ignore = cfg.data.ignore_index
    channels = cfg.model.in_channels
    train_set = build_dataset(
        cfg.data.train, cfg.data, build_transforms(cfg.data.transforms, True, ignore), channels
    )
    val_set = build_dataset(
        cfg.data.val, cfg.data, build_transforms(cfg.data.transforms, False, ignore), channels
    )
    if float(cfg.data.val_fraction):  # one export, two splits: said before anything else of the data
        share = float(cfg.data.val_fraction)
        log(info, hold_out_line(share, len(val_set), len(train_set) + len(val_set)))
    for key, dataset in (("train", train_set), ("val", val_set)):
        for line in getattr(dataset, "left_out", ()):  # files a 'pairs' split leaves out
            log(info, f"warning: data.{key}: {line} (python -m fcn.data.check names them)")
    sampler = EpochBatchSampler(
        len(train_set), cfg.data.batch_size, cfg.training.seed, True, info.rank, info.world_size
    )
    if sampler.batches_per_epoch() == 0:
        raise ValueError(
            f"data.train: {len(train_set)} images are fewer than data.batch_size={cfg.data.batch_size}"
            + (f" x {info.world_size} processes" if info.enabled else "")
        )
    return train_set, val_set, sampler


def _setup_model(
    cfg: DictConfig, info: distributed.DistInfo, device: torch.device, channels_last: bool
) -> nn.Module:
    """Return the bare model on the device: built, initialised from model.init_from, with
    SyncBatchNorm and channels-last where asked."""
    from fcn.models import build_model

    model = build_model(cfg.model)
    if cfg.model.init_from:
        init_from(model, cfg.model.init_from, info)
    if cfg.training.sync_bn and info.enabled:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    model.to(device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    return model


def _setup_resume(
    cfg: DictConfig,
    info: distributed.DistInfo,
    run_dir: Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LambdaLR,
    scaler: torch.amp.GradScaler | None,
    ema: ModelEMA | None,
) -> tuple[int, int, int, float, int, dict]:
    """Return the position to start from (iteration, epoch, batch, best mean IU, evaluations since
    the best) and the tracker runs to continue: training.resume's checkpoint loaded into the
    objects, else the start; every process must start at the same one."""
    t = cfg.training
    if info.rank > 0:  # dropout masks differ across processes as across the images of one batch
        seed_everything(mix_seed(t.seed, info.rank))
    position = (0, 0, 0, -1.0, 0, {})  # iteration, epoch, batch, best mean IU, evaluations since the best
    resume = resume_checkpoint_path(cfg, run_dir)
    if resume is not None:
        position = resume_from(resume, cfg, info, model, optimizer, scheduler, scaler, ema)
        if resume.resolve() != (run_dir / "checkpoints" / "last.pt").resolve():
            position = (*position[:5], {})  # another run's checkpoint: new tracker runs
    if info.enabled:  # without a shared filesystem a node may not see training.resume's checkpoint
        with distributed.backend_failures("before training started"):
            positions = distributed.all_gather_object(position[:3])
        if len(set(positions)) > 1:
            raise TrainingError(
                f"training.resume: the processes would start at different (iteration, epoch, batch) "
                f"{positions}; every node must read the same checkpoint (a shared run directory or a "
                "training.resume path present on every node)"
            )
    return position


def _training_wrapper(
    model: nn.Module, cfg: DictConfig, info: distributed.DistInfo, device: torch.device
) -> nn.Module:
    """Return the model the steps run: compiled (training.compile) and/or wrapped in
    DistributedDataParallel under torchrun; the bare model otherwise."""
    train_model: nn.Module = model
    if cfg.training.compile:
        train_model = torch.compile(train_model)
    if info.enabled:
        ddp_kwargs = {"device_ids": [device.index]} if device.type == "cuda" else {}
        with distributed.backend_failures("before training started"):  # DDP broadcasts rank 0's weights
            train_model = nn.parallel.DistributedDataParallel(train_model, **ddp_kwargs)
    return train_model


def _setup_run_dir(
    cfg: DictConfig, info: distributed.DistInfo, run_dir: Path, tracker_ids: dict
) -> Trackers | None:
    """Return the started trackers (logging.trackers; those of tracker_ids continued) on the
    primary process (with training.overwrite the previous run's files moved aside, run_dir/checkpoints
    made, the resolved config written to run_dir/config.yml), None on the others."""
    if not info.is_primary:
        return None

    if cfg.training.overwrite and holds_run(run_dir):
        # Only now, with the config, data and model checked; kept aside until this run writes
        # last.pt, put back if it fails before (fcn.training.rundir.settle, at train()'s end).
        moved = replace_run(run_dir)
        log(
            info,
            f"training.overwrite=true: moved the previous run's {len(moved)} files in {run_dir} aside into "
            f"{run_dir / '.replaced'}: deleted once this run has written checkpoints/last.pt, put back if it "
            "fails before",
        )
    (run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
    text = fcn_config.to_yaml(cfg)
    atomic_write(run_dir / "config.yml", lambda tmp: tmp.write_text(text, encoding="utf-8"))
    return Trackers.start(cfg, run_dir, tracker_ids, lambda line: log(info, line))


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


def train(run: Run, on_evaluation: Sequence[Callable[[dict], bool | None]] = ()) -> dict:
    """Train the run to its last iteration (or a Ctrl-C, SIGTERM or SIGUSR1, or
    training.early_stop_patience evaluations without a better mean IU); return a summary
    (iterations, best mean IU, last metrics, run_dir, stopped_early, and `signal`: the name of the
    signal that stopped the run before its end, else None).

    on_evaluation: functions called with each evaluation's record (metrics.jsonl's line) on every
    process; one that returns True stops the run there (stopped_early), as a patience would: how
    tune.py prunes a trial. They must answer alike on every process.

    A failure of the process group (a lost peer, a collective timeout) is a DistributedError whose
    one line says to check the peers and resume."""
    try:
        return _train(run, on_evaluation)
    except RuntimeError as exc:
        if not (run.info.enabled and distributed.is_backend_failure(exc)):
            raise
        raise distributed.lost_peer(exc, f"after iteration {run.iteration}") from None
    finally:
        if run.trackers is not None:  # still open: the run failed
            run.trackers.close("FAILED")
        release_run_dir(run.run_dir, run.log)  # after the trackers, whose files are in it


def _train(run: Run, on_evaluation: Sequence[Callable[[dict], bool | None]]) -> dict:
    from tqdm import tqdm

    cfg, t, info = run.cfg, run.cfg.training, run.info
    bar = tqdm(
        total=run.total, initial=run.iteration, disable=not info.is_primary, dynamic_ncols=True, desc="train"
    )
    last_record: dict = {}
    stopped_early, stopped_by, status = False, None, "FINISHED"  # status: the trackers' end
    seen_images, tick = 0, time.time()
    run.train_model.train()
    last = run.run_dir / "checkpoints" / "last.pt"
    with StopFlag(last) as stop, bar:  # an error closes the bar before its line is printed
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
            loss_value, stop_now = stop.agree(loss_value, info, run.device)  # summed over processes
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
            if run.trackers is not None and (run.iteration % t.log_every == 0 or run.iteration == 1):
                scalars = {"train/loss": loss_value, "train/lr": lr, "train/images_per_s": speed}
                run.trackers.scalars(scalars, run.iteration)
                seen_images, tick = 0, now

            evaluate_now = (t.eval_every > 0 and run.iteration % t.eval_every == 0) or (
                t.eval_every == 0 and epoch_done
            )
            if evaluate_now or run.iteration == run.total:
                last_record = evaluate_and_save(run)
                asked = [callback(last_record) for callback in on_evaluation]  # e.g. tune.py's pruning
                if any(asked) and run.iteration < run.total:
                    bar.close()
                    run.log(f"stopped at iteration {run.iteration}: asked by an evaluation callback")
                    stopped_early = True
                    break
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
                status = "KILLED"  # to be resumed
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
    if run.trackers is not None:
        best = run.run_dir / "checkpoints" / "best.pt" if cfg.logging.log_checkpoints else None
        run.trackers.close(status, best)
    distributed.cleanup()
    return {
        "iteration": run.iteration,
        "best_miou": run.best,
        "metrics": last_record,
        "run_dir": str(run.run_dir),
        "stopped_early": stopped_early,
        "signal": stopped_by,
    }


def fit(cfg: DictConfig, on_evaluation: Sequence[Callable[[dict], bool | None]] = ()) -> dict:
    """Train as the config says (setup, then train); return train()'s summary."""
    return train(setup(cfg), on_evaluation)
