"""Where and in what precision a model runs: device selection, autocast, seeding and determinism;
used alike by training (fcn.training.loop) and inference (fcn.inference.loading)."""

from __future__ import annotations

import contextlib
import os
import random

import numpy as np
import torch


def select_device(name: str = "auto") -> torch.device:
    """Return the device for 'auto' (CUDA if available, else Apple's MPS if available, else CPU),
    'cpu', 'cuda', 'cuda:N' or 'mps'."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps" if _mps_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"device '{name}' is not auto, cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device '{name}' was asked for but no CUDA device is available; use auto or cpu")
    if device.type == "mps" and not _mps_available():
        raise ValueError(f"device '{name}' was asked for but torch has no MPS device here; use auto or cpu")
    if device.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"device '{name}' is not auto, cpu, cuda, cuda:N or mps")
    return device


def _mps_available() -> bool:
    """Return whether torch can run on Apple's Metal GPU (torch.backends.mps, macOS builds)."""
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def autocast(device: torch.device, amp: str) -> contextlib.AbstractContextManager:
    """Return the autocast context for amp 'bf16'/'fp16', or a null context for 'none'."""
    if amp == "none":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if amp == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


# The modules whose weights autocast casts to its dtype at every call, on every device it runs on
# (their ops are on CPU and CUDA autocast's lower-precision lists: conv2d, conv_transpose2d, linear).
# Exact types: a subclass (fcn.inference.fastpath.WinogradConv2d) may run another kernel.
_CAST_ONCE = (torch.nn.Conv2d, torch.nn.ConvTranspose2d, torch.nn.Linear)


def amp_forward(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Return model(x); for a model marked ``cast_once`` (the inference loader marks the models it
    builds; training's are not) under autocast without gradients, with the convolution and linear
    weights cast to autocast's dtype once and kept (recast when a weight changes in place or is
    replaced) instead of at every call. autocast casts them the same way: the same outputs, bit for
    bit (tests/core/test_runtime.py); 1.1x faster for a bf16 ResNet-18 FCN-8s at 500x500 on the CPU."""
    kind = x.device.type
    if (
        not isinstance(model, torch.nn.Module)
        or not getattr(model, "cast_once", False)
        or kind not in ("cpu", "cuda")
        or not torch.is_autocast_enabled(kind)
        or torch.is_grad_enabled()
    ):
        return model(x)
    dtype = torch.get_autocast_dtype(kind)
    sources = [
        (f"{name}.{key}" if name else key, p)
        for name, module in model.named_modules()
        if type(module) in _CAST_ONCE
        for key, p in module.named_parameters(recurse=False)
        if p.dtype == torch.float32 and p.device.type == kind
    ]
    if not sources:
        return model(x)
    stamp = (dtype, torch.is_inference_mode_enabled(), tuple((id(p), p._version) for _, p in sources))
    cached = model.__dict__.get("_fcn_cast_once")
    if cached is None or cached[0] != stamp:
        cached = (stamp, {name: p.detach().to(dtype) for name, p in sources})
        model.__dict__["_fcn_cast_once"] = cached
    return torch.func.functional_call(model, cached[1], (x,))


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's global and torch's RNGs."""
    random.seed(seed)
    np.random.seed(seed % (1 << 32))
    torch.manual_seed(seed)


def configure_determinism(enabled: bool, fixed_sizes: bool = True) -> None:
    """Use deterministic algorithms only (bitwise-repeatable runs), or let cuDNN pick the fastest
    kernels where input sizes are fixed.

    cudnn.benchmark times candidate kernels once per input shape: a gain with fixed crops, a loss
    with the paper's native-size batches of 1, where nearly every image is a new shape and pays the
    search again (fixed_sizes=False leaves it off).
    """
    if enabled:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False
    else:
        torch.backends.cudnn.benchmark = fixed_sizes


def cpu_flags() -> frozenset[str]:
    """Return the CPU's feature flags as the kernel lists them (Linux /proc/cpuinfo), or, elsewhere,
    what torch's own probes say ('avx512_bf16', 'amx_bf16' when present)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    found = set()
    probes = {"avx512_bf16": "_is_avx512_bf16_supported", "amx_bf16": "_is_amx_tile_supported"}
    for flag, probe in probes.items():
        check = getattr(torch.cpu, probe, None)  # private helpers of torch 2.x; absent: unknown
        if check is not None and check():
            found.add(flag)
    return frozenset(found)


def native_bf16(device: torch.device) -> bool:
    """Return whether bf16 arithmetic is native on device: a CUDA device that supports it, or a CPU
    with AVX-512 BF16 or AMX (oneDNN's bf16 kernels; elsewhere bf16 convolutions fall back to a
    generic kernel 10-50x slower than fp32)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type != "cpu":  # mps: not the CPU's flags; fp32 there
        return False
    return bool({"avx512_bf16", "amx_bf16"} & cpu_flags())


def resolve_amp(amp: str, device: torch.device) -> str:
    """Return the precision 'auto' stands for on device (bf16 where it is native, else none); other
    values unchanged."""
    if amp != "auto":
        return amp
    return "bf16" if native_bf16(device) else "none"


def resolve_channels_last(value: str, device: torch.device, amp: str) -> bool:
    """Return whether channels-last is used: 'true'/'false' as given; 'auto' on CUDA with bf16/fp16
    (tensor cores read NHWC: 1.42x measured on an H200 under bf16), off on the CPU (slower for AVX2
    training) and in fp32."""
    text = str(value).lower()
    if text != "auto":
        return text == "true"
    return device.type == "cuda" and amp in ("bf16", "fp16")
