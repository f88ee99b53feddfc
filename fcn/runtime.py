"""Where and in what precision a model runs: device selection, autocast, seeding and determinism;
used alike by training (fcn.engine) and inference (fcn.inference)."""

from __future__ import annotations

import contextlib
import os
import random

import numpy as np
import torch


def select_device(name: str = "auto") -> torch.device:
    """Return the device for 'auto' (CUDA if available, else CPU), 'cpu', 'cuda' or 'cuda:N'."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"device '{name}' is not auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device '{name}' was asked for but no CUDA device is available; use auto or cpu")
    return device


def autocast(device: torch.device, amp: str) -> contextlib.AbstractContextManager:
    """Return the autocast context for amp 'bf16'/'fp16', or a null context for 'none'."""
    if amp == "none":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if amp == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's global and torch's RNGs."""
    random.seed(seed)
    np.random.seed(seed % (1 << 32))
    torch.manual_seed(seed)


def configure_determinism(enabled: bool) -> None:
    """Use deterministic algorithms only (bitwise-repeatable runs), or let cuDNN pick the fastest."""
    if enabled:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False
    else:
        torch.backends.cudnn.benchmark = True
