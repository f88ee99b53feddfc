"""Checkpoints written atomically and loaded safely, and the RNG states that exact resume needs.

``save_checkpoint`` writes to a temporary file in the target's directory, fsyncs it and renames it
over the target, so a crash or a kill mid-save leaves the previous checkpoint intact.
``load_checkpoint`` uses ``torch.load(weights_only=True)``: a checkpoint holds tensors, numbers,
strings, lists, tuples and dicts only, never pickled objects (hence the RNG states are captured as
tensors and ints below).
"""

from __future__ import annotations

import os
import random
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import torch


class CheckpointError(RuntimeError):
    """A checkpoint that is missing, unreadable, truncated or not a dict; the message names the file."""


def save_checkpoint(state: dict, path: str | os.PathLike) -> None:
    """Write ``state`` to ``path`` atomically (temp file in the same directory, fsync, os.replace)."""
    if not isinstance(state, dict):
        raise TypeError(f"save_checkpoint: state must be a dict, got {type(state).__name__}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Same directory, hence the same file system: os.replace is then an atomic rename.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(tmp, "xb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:  # also KeyboardInterrupt: never leave the temp file behind
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def _fsync_dir(directory: Path) -> None:
    """Make the rename durable where the platform allows fsync on a directory (POSIX)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _reason(exc: BaseException) -> str:
    """Return the first sentence of the innermost message of a torch.load failure, on one line."""
    # torch wraps the unpickler's own error (e.g. "Unsupported global: ...") in a long advice text.
    inner = exc.__context__ if isinstance(exc.__context__, Exception) and str(exc.__context__) else exc
    text = " ".join(str(inner).split()) or type(inner).__name__
    return text.split(". ")[0][:160]


def load_checkpoint(path: str | os.PathLike, map_location: Any = "cpu") -> dict:
    """Return the dict saved at ``path`` (torch.load with weights_only=True), else raise CheckpointError."""
    path = Path(path)
    if not path.is_file():
        what = "is a directory, not a file" if path.is_dir() else "not found"
        raise CheckpointError(f"checkpoint {path} {what}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:
        raise CheckpointError(
            f"cannot load checkpoint {path}: {_reason(exc)} (corrupt, truncated, or holding objects "
            "that weights_only=True refuses)"
        ) from exc
    if not isinstance(state, dict):
        raise CheckpointError(
            f"checkpoint {path} holds a {type(state).__name__}, not a dict of training state"
        )
    return state


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
