"""`python -m bench.model`'s memory measurements: peak memory of a training step and growth over many steps."""

import gc
import resource
import time
import warnings
from pathlib import Path
from typing import Dict

import torch
from torch import Tensor

from bench.common import (
    synchronize,
    time_call,
)
from bench.model.setup import MB, make_model, make_scene, model_config, train_step_fn
from fcn.training.loop import build_optimizer

# ----------------------------------------------------------------------------- memory


def _proc_status(field: str) -> float | None:
    """Return a /proc/self/status memory field (VmRSS, VmHWM) in bytes, None where there is none."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return float(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _reset_peak_rss() -> bool:
    """Reset the process's peak RSS (VmHWM) to its current RSS; return whether the OS allowed it."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _peak_rss() -> float:
    """Return the peak RSS in bytes (VmHWM, else ru_maxrss in KiB on Linux)."""
    hwm = _proc_status("VmHWM")
    return hwm if hwm is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024.0


def _current_memory(device: torch.device) -> float:
    """Return allocated CUDA memory, or the process RSS on the CPU, in bytes."""
    if device.type == "cuda":
        return float(torch.cuda.memory_allocated(device))
    rss = _proc_status("VmRSS")
    return rss if rss is not None else float("nan")


def peak_train_memory(size: int, device: torch.device) -> dict:
    """Return the memory of an fp32 FCN-8s (paper) training step at batch 1: state and step peak."""
    cfg = model_config("fcn8s", "paper")
    model = make_model(cfg, device).train()
    optimizer = build_optimizer(model, cfg)
    x, mask = (t.to(device) for t in make_scene(size, seed=3))
    step = train_step_fn(model, optimizer, x, mask, "none", device)
    step()  # allocates the momentum buffers, so the measured step is a steady-state one
    params = sum(p.numel() * p.element_size() for p in model.parameters())
    trainable = sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad)
    result = {
        "size": size,
        "params_mb": params / MB,
        "grads_mb": trainable / MB,
        "momentum_mb": trainable / MB,
    }
    gc.collect()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        seconds, _ = time_call(step, device)
        peak = torch.cuda.max_memory_allocated(device)
        result.update(kind="cuda max_memory_allocated", peak_reset=True)
    else:
        reset = _reset_peak_rss()
        before = _current_memory(device)
        seconds, _ = time_call(step, device)
        peak = _peak_rss()
        result.update(kind="process RSS (VmHWM / ru_maxrss)", peak_reset=reset)
    result.update(
        before_mb=before / MB, peak_mb=peak / MB, step_growth_mb=(peak - before) / MB, seconds=seconds
    )
    del model, optimizer, step
    gc.collect()
    return result


def _live_tensors() -> int:
    """Return how many torch tensors the garbage collector can see."""
    with warnings.catch_warnings():  # isinstance() touches deprecated module aliases that gc also holds
        warnings.simplefilter("ignore", FutureWarning)
        return sum(1 for obj in gc.get_objects() if isinstance(obj, Tensor))


def memory_growth(steps: int, size: int, device: torch.device) -> dict:
    """Return memory and live-tensor counts after step 10 and after the last of `steps` training steps.

    FCN-8s in the paper's geometry: its pad of 100 keeps fc6's input at 8x8 or more even for a tiny
    image, where the 'same' geometry would put fc6's backward on oneDNN's slow reference path.
    """
    cfg = model_config("fcn8s", "paper")
    model = make_model(cfg, device).train()
    optimizer = build_optimizer(model, cfg)
    x, mask = (t.to(device) for t in make_scene(size, seed=4))
    step = train_step_fn(model, optimizer, x, mask, "none", device)
    marks: Dict[int, dict] = {}
    start = time.perf_counter()
    for i in range(1, steps + 1):
        step()
        if i in (10, steps):
            synchronize(device)
            gc.collect()
            marks[i] = {"memory_mb": _current_memory(device) / MB, "live_tensors": _live_tensors()}
    seconds = time.perf_counter() - start
    first, last = marks[10], marks[steps]
    growth = last["memory_mb"] - first["memory_mb"]
    # Allocator noise is a few MB; one retained FCN-8s graph at this size would be tens of MB, and a
    # retained tensor shows in the count.
    tolerance = max(32.0, 0.02 * first["memory_mb"])
    ok = growth <= tolerance and last["live_tensors"] <= first["live_tensors"]
    del model, optimizer, step
    gc.collect()
    return {
        "steps": steps,
        "size": size,
        "arch": "fcn8s",
        "geometry": "paper",
        "kind": "cuda memory_allocated" if device.type == "cuda" else "process RSS (VmRSS)",
        "step10": first,
        "last": last,
        "growth_mb": growth,
        "tolerance_mb": tolerance,
        "ok": ok,
        "seconds_per_step": seconds / steps,
    }
