"""A training run's state and its checkpoints: the ``Run`` that fcn.training.loop.setup() builds and
train() moves on, and what the run writes and reads back.

Written: ``checkpoints/last.pt`` (save_last: everything resume needs, every process's RNG states)
and ``checkpoints/best.pt`` (save_best: the weights at the best mean IU). Read back:
training.resume (resume_checkpoint_path, resume_from: the objects, the RNGs and the position in the
data) and model.init_from (init_from: the paper's staged initialisation). The format itself is
fcn.core.checkpoint's.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from omegaconf import DictConfig
from torch import nn
from torch.utils.data import DataLoader, Dataset

from fcn import config as fcn_config
from fcn.core import distributed
from fcn.core.checkpoint import (
    CheckpointError,
    bare_state_dict,
    capture_rng_state,
    describe_mismatch,
    load_checkpoint,
    restore_rng_state,
    save_checkpoint,
    training_checkpoint,
    weights_checkpoint,
)
from fcn.core.runtime import seed_everything
from fcn.data.loaders import EpochBatchSampler, SeededItems, mix_seed, resume_position
from fcn.training.ema import ModelEMA
from fcn.training.losses import SegmentationLoss


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
    trackers: Any  # fcn.training.trackers.Trackers on the primary process, else None
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
        log(self.info, message)


def log(info: distributed.DistInfo, message: str) -> None:
    """Print a line above the progress bar, on the primary process only (before a Run exists)."""
    if info.is_primary:
        from tqdm import tqdm

        tqdm.write(message)


# ----------------------------------------------------------------------------- written


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
            trackers=run.trackers.ids() if run.trackers is not None else None,
        )
        save_checkpoint(state, run.run_dir / "checkpoints" / "last.pt")


def save_best(run: Run) -> None:
    """Save checkpoints/best.pt: the weights (and EMA) of the run's best mean IU so far."""
    state = weights_checkpoint(
        model=run.model,
        ema=run.ema.module if run.ema is not None else None,
        config=fcn_config.to_dict(run.cfg),
        iteration=run.iteration,
        epoch=run.epoch,
        best_miou=run.best,
    )
    save_checkpoint(state, run.run_dir / "checkpoints" / "best.pt")


# ----------------------------------------------------------------------------- read back


def resume_checkpoint_path(cfg: DictConfig, run_dir: Path) -> Path | None:
    """Return the checkpoint training.resume names (auto: the run's last.pt if there is one), or None."""
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


def resume_from(
    path: Path,
    cfg: DictConfig,
    info: distributed.DistInfo,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    scaler: Any,
    ema: ModelEMA | None,
) -> tuple[int, int, int, float, int, dict]:
    """Load a resumable checkpoint into the run's objects and RNGs; return (iteration, epoch,
    batch, best mean IU, evaluations since the best) to go on from, and the tracker run ids it
    keeps ({} in checkpoints from before logging.trackers)."""
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
    log(info, f"resumed from {path} at iteration {iteration} (epoch {epoch}, batch {batch})")
    return iteration, epoch, batch, best, evals_since_best, dict(state.get("trackers") or {})


def init_from(model: nn.Module, path: str, info: distributed.DistInfo) -> None:
    """Copy the tensors of checkpoint `path` that fit model (the paper's staged init); an error when
    none fits, which is a wrong path rather than another stage. 'pretrained:<name>' is an entry of
    the registry (fcn.models.pretrained): downloaded and converted by the primary process first."""
    from fcn.models import describe_init, init_from_state_dict
    from fcn.models.pretrained import PREFIX, pretrained_checkpoint

    if path.startswith(PREFIX):
        name = path[len(PREFIX) :]
        if info.is_primary:
            path = str(pretrained_checkpoint(name, log=lambda line: log(info, line)))
        distributed.barrier()  # the others read the primary's cache
        if not info.is_primary:
            path = str(pretrained_checkpoint(name, progress=False, log=lambda line: None))
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
    log(info, f"init_from {path}: {describe_init(copied, new)}")
