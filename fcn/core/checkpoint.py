"""The checkpoint format: what a checkpoint holds, writing it atomically and reading it back.

What a checkpoint holds (a dict, loadable with ``torch.load(weights_only=True)``: tensors, numbers,
strings, lists and dicts only, never pickled objects):

- a **resumable** one (``checkpoints/last.pt``, ``training_checkpoint``): everything resume needs --
  ``model``, ``ema`` (or None), ``optimizer``, ``scheduler``, ``scaler`` (or None), ``iteration``,
  ``epoch``, ``best_miou``, ``evals_since_best`` (evaluations in a row without a better mean IU:
  training.early_stop_patience's count; a checkpoint without it resumes with 0), ``sampler`` (the
  position in the epoch's order), ``rng`` (this process's RNG states, as tensors), ``rng_ranks``
  (every process's, under torchrun) and ``config``;
- a **weights** one (``checkpoints/best.pt``, an imported reference net; ``weights_checkpoint``):
  ``model``, ``ema`` (or None), ``config``, and where it came from a run, ``iteration``, ``epoch``
  and ``best_miou``.

Both carry ``version`` (``CHECKPOINT_VERSION``); ``load_checkpoint`` refuses a newer one with a line
that says so. ``save_checkpoint`` writes through ``fcn.core.files.atomic_write``: a crash, a kill or a
full disk leaves the previous checkpoint whole.
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from fcn.core.files import atomic_write

CHECKPOINT_VERSION = 1
"""The format written; bump it when a key changes meaning, and read older versions in load_checkpoint."""


class CheckpointError(RuntimeError):
    """A checkpoint that is missing, unreadable, truncated, newer than this code or not a dict; the
    message names the file."""


def save_checkpoint(state: dict, path: str | os.PathLike) -> None:
    """Write ``state`` to ``path`` with torch.save, atomically (see atomic_write)."""
    if not isinstance(state, dict):
        raise TypeError(f"save_checkpoint: state must be a dict, got {type(state).__name__}")

    def write(tmp: Path) -> None:
        # Through a Python file object, so that an OS error (no space) surfaces as itself behind
        # torch's "unexpected pos" RuntimeError instead of being lost in its C++ writer.
        with open(tmp, "xb") as f:
            torch.save(state, f)

    atomic_write(path, write)


def _reason(exc: BaseException) -> str:
    """Return the first sentence of the innermost message of a torch.load failure, on one line."""
    # torch wraps the unpickler's own error (e.g. "Unsupported global: ...") in a long advice text
    # that recommends weights_only=False; only the unpickler's reason is kept.
    inner = exc.__context__ if isinstance(exc.__context__, Exception) and str(exc.__context__) else exc
    text = " ".join(str(inner).split()) or type(inner).__name__
    if "weights_only" in text:
        text = type(inner).__name__
    return text.split(". ")[0][:160]


def read_torch_file(path: str | os.PathLike, what: str = "checkpoint", map_location: Any = "cpu") -> Any:
    """Return what torch.load(weights_only=True) reads from path, else raise CheckpointError in one
    line naming the file. A file the safe load refuses is never loaded unsafely, and the message
    does not suggest it (torch's own advice, weights_only=False, would run its code)."""
    path = Path(path)
    if not path.is_file():
        state = "is a directory, not a file" if path.is_dir() else "not found"
        raise CheckpointError(f"{what} {path} {state}")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:
        raise CheckpointError(
            f"cannot load {what} {path}: {_reason(exc)} (corrupt, truncated, or holding objects "
            "that weights_only=True refuses)"
        ) from None


def load_checkpoint(path: str | os.PathLike, map_location: Any = "cpu") -> dict:
    """Return the dict saved at ``path`` (torch.load with weights_only=True), else raise
    CheckpointError: missing, unreadable, not a dict, or written in a newer format."""
    path = Path(path)
    state = read_torch_file(path, "checkpoint", map_location)
    if not isinstance(state, dict):
        raise CheckpointError(
            f"checkpoint {path} holds a {type(state).__name__}, not a dict of training state"
        )
    version = state.get("version", 1)  # files from before the version key are version 1
    if not isinstance(version, int) or isinstance(version, bool):
        raise CheckpointError(
            f"checkpoint {path} has format version {version!r}, not a number: it was not written by pytorch-fcn"
        )
    if version > CHECKPOINT_VERSION:
        raise CheckpointError(
            f"checkpoint {path} has format version {version}, newer than this pytorch-fcn reads "
            f"({CHECKPOINT_VERSION}); update pytorch-fcn to load it"
        )
    return state


def unwrap(model: nn.Module) -> nn.Module:
    """Return the bare model inside DistributedDataParallel and/or torch.compile wrappers."""
    while True:
        for attr in ("_orig_mod", "module"):  # torch.compile, DistributedDataParallel
            inner = getattr(model, attr, None)
            if isinstance(inner, nn.Module):
                model = inner
                break
        else:
            return model


WRAPPER_PREFIXES = ("module.", "_orig_mod.")
"""State-dict key prefixes of DistributedDataParallel and torch.compile around the bare model."""


def bare_state_dict(state: dict) -> dict:
    """Return a state dict with the wrappers' prefixes (and AveragedModel's 'n_averaged' counter)
    removed, as the bare model names its tensors."""
    state = {k: v for k, v in state.items() if k != "n_averaged"}
    changed = True
    while changed and state:
        changed = False
        for prefix in WRAPPER_PREFIXES:
            if all(k.startswith(prefix) for k in state):
                state = {k[len(prefix) :]: v for k, v in state.items()}
                changed = True
    return state


def describe_mismatch(expected: dict, given: dict, unexpected: bool = True) -> str:
    """Return how the tensors of a state dict differ from those a model expects, e.g. "3 missing
    (e.g. score_fr.weight), 1 of another shape (e.g. x: (2, 3) given, (4, 3) expected)"; '' when
    they fit (names beyond the expected ones count only when `unexpected`)."""
    missing = [k for k in expected if k not in given]
    extra = [k for k in given if k not in expected] if unexpected else []
    other = [k for k in expected if k in given and tuple(given[k].shape) != tuple(expected[k].shape)]
    parts = []
    if missing:
        parts.append(f"{len(missing)} of {len(expected)} missing (e.g. {missing[0]})")
    if extra:
        parts.append(f"{len(extra)} unexpected (e.g. {extra[0]})")
    if other:
        k = other[0]
        parts.append(
            f"{len(other)} of another shape (e.g. {k}: {tuple(given[k].shape)} given, "
            f"{tuple(expected[k].shape)} expected)"
        )
    return ", ".join(parts)


def training_checkpoint(
    *,
    model: nn.Module,
    ema: nn.Module | None,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    scaler: Any,
    iteration: int,
    epoch: int,
    best_miou: float,
    sampler: dict,
    config: dict,
    rng_ranks: list[dict] | None = None,
    evals_since_best: int = 0,
    trackers: dict[str, str] | None = None,
) -> dict:
    """Return the resumable checkpoint of a training run (see the module doc)."""
    state = {
        "version": CHECKPOINT_VERSION,
        "model": unwrap(model).state_dict(),
        "ema": ema.state_dict() if ema is not None else None,
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "scaler": scaler.state_dict() if scaler is not None else None,
        "iteration": iteration,
        "epoch": epoch,
        "best_miou": best_miou,
        "evals_since_best": evals_since_best,
        "rng": capture_rng_state(),
        "sampler": sampler,
        "config": config,
    }
    if rng_ranks is not None:
        state["rng_ranks"] = rng_ranks  # every process's RNGs (dropout), in rank order
    if trackers:
        state["trackers"] = trackers  # {tracker: run id}: a resumed run continues those runs
    return state


def weights_checkpoint(
    *, model: nn.Module, config: dict, ema: nn.Module | None = None, **run: int | float
) -> dict:
    """Return a weights checkpoint (see the module doc); run holds iteration, epoch, best_miou."""
    unknown = set(run) - {"iteration", "epoch", "best_miou"}
    if unknown:
        raise TypeError(f"weights_checkpoint: unexpected {sorted(unknown)}")
    return {
        "version": CHECKPOINT_VERSION,
        "model": unwrap(model).state_dict(),
        "ema": ema.state_dict() if ema is not None else None,
        "config": config,
        **run,
    }


def model_weights(checkpoint: dict, use_ema: bool) -> tuple[dict, str]:
    """Return (bare state dict, 'ema' | 'model'): the EMA weights when asked and present, else the
    model's."""
    ema = checkpoint.get("ema")
    if use_ema and ema:
        return bare_state_dict(ema), "ema"
    return bare_state_dict(checkpoint["model"]), "model"


def capture_rng_state() -> dict:
    """Return the states of Python's, NumPy's global, torch's CPU and (if present) CUDA RNGs as
    tensors, ints and lists, so that weights_only=True loads them."""
    version, internal, gauss_next = random.getstate()
    np_kind, np_keys, np_pos, np_has_gauss, np_cached = np.random.get_state(legacy=True)
    state = {
        "python": {
            "version": version,
            "state": torch.tensor(internal, dtype=torch.int64),  # 624 uint32 words + position
            "gauss_next": [] if gauss_next is None else [gauss_next],
        },
        "numpy": {
            "kind": np_kind,
            "keys": torch.from_numpy(np_keys.astype(np.int64)),
            "pos": int(np_pos),
            "has_gauss": int(np_has_gauss),
            "cached_gaussian": float(np_cached),
        },
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }
    return state


def restore_rng_state(state: dict) -> None:
    """Set Python's, NumPy's, torch's CPU and CUDA RNGs from a capture_rng_state() dict (CUDA states
    are restored for the devices present in both the capture and this machine)."""
    try:
        py = state["python"]
        internal = tuple(int(v) for v in py["state"].tolist())
        random.setstate((int(py["version"]), internal, py["gauss_next"][0] if py["gauss_next"] else None))
        npst = state["numpy"]
        keys = npst["keys"].cpu().numpy().astype(np.uint32)
        np.random.set_state(
            (npst["kind"], keys, int(npst["pos"]), int(npst["has_gauss"]), float(npst["cached_gaussian"]))
        )
        torch.set_rng_state(state["torch"].cpu().to(torch.uint8))
        cuda_states = state.get("cuda") or []
        if cuda_states and torch.cuda.is_available():
            for device, cuda_state in enumerate(cuda_states[: torch.cuda.device_count()]):
                torch.cuda.set_rng_state(cuda_state.cpu().to(torch.uint8), device)
    except (KeyError, TypeError, AttributeError, ValueError) as exc:
        raise CheckpointError(f"checkpoint RNG state is malformed ({type(exc).__name__}: {exc})") from exc
