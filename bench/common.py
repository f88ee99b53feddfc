"""Small helpers shared by the benchmarks: machine description, interleaved timing, tables, JSON."""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Sequence

import torch

# CPU features that decide which low-precision paths oneDNN can take (bf16 needs avx512_bf16/amx or,
# in PyTorch's check, at least avx512bw/avx512_core; without them bf16 convolutions fall back to ATen).
CPU_FLAGS = ("avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx512_bf16", "avx512_fp16", "amx_bf16")


def cpu_info() -> Dict[str, Any]:
    """Return the CPU model name and which of CPU_FLAGS it has (from /proc/cpuinfo; empty elsewhere)."""
    model, flags = platform.processor() or platform.machine(), set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                model = value.strip()
            elif key.strip() == "flags":
                flags = set(value.split())
    except OSError:
        pass
    return {"model": model, "flags": {flag: flag in flags for flag in CPU_FLAGS}}


def machine_info(device: torch.device) -> Dict[str, Any]:
    """Return what a reader needs to reproduce a number: versions, device, threads, CPU flags, load."""
    info: Dict[str, Any] = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "device": str(device),
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "cpu": cpu_info(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "load_average": load_average(),
    }
    try:
        info["mkldnn_bf16_supported"] = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        info["mkldnn_bf16_supported"] = None
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def load_average() -> List[float] | None:
    """Return the 1/5/15-minute load averages (None where the OS has none): other work skews timings."""
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (a no-op on the CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_call(fn: Callable[[], Any], device: torch.device) -> tuple[float, Any]:
    """Return (seconds, result) of one call, synchronising the device on both sides."""
    synchronize(device)
    start = time.perf_counter()
    result = fn()
    synchronize(device)
    return time.perf_counter() - start, result


def time_interleaved(
    fns: Mapping[str, Callable[[], Any]], rounds: Mapping[str, int], device: torch.device
) -> tuple[Dict[str, List[float]], Dict[str, Any]]:
    """Return ({name: seconds per call}, {name: last result}), calling the functions in turn.

    Round r calls every function that asks for more than r rounds, so that load from other processes
    falls on all of them alike and their ratios stay fair.
    """
    times: Dict[str, List[float]] = {name: [] for name in fns}
    results: Dict[str, Any] = {}
    for r in range(max(rounds.values(), default=0)):
        for name, fn in fns.items():
            if r < rounds[name]:
                seconds, results[name] = time_call(fn, device)
                times[name].append(seconds)
    return times, results


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Return a markdown table with columns padded to their widest cell."""
    cells = [[str(c) for c in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(row, widths)) + " |" for row in cells]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def write_json(path: str | Path, data: Any) -> None:
    """Write data as indented JSON to path, creating its directory."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, default=str) + "\n")


RESULTS = Path(__file__).resolve().parent / "results"


def write_table(
    name: str,
    title: str,
    headers: Sequence[str],
    rows: Sequence[Sequence[Any]],
    device: torch.device | str = "cpu",
    directory: str | Path = RESULTS,
    extra: Mapping[str, Any] | None = None,
) -> str:
    """Return the benchmark's table as markdown (a title line, the machine line, the table) and write
    it to directory/<name>.md, with directory/<name>.json holding the same rows and the machine
    (CPU model and flags, torch version, device, threads, load) and the date: the table
    docs/performance.md copies, and the facts that say where its numbers hold."""
    machine = machine_info(torch.device(device))
    date = time.strftime("%Y-%m-%d")
    flags = (
        ", ".join(f for f, present in machine["cpu"]["flags"].items() if present) or "none of those probed"
    )
    where = machine.get("gpu") or machine["cpu"]["model"]
    line = (
        f"{where}; CPU flags: {flags}; torch {machine['torch']}, {machine['torch_threads']} threads; "
        f"device {machine['device']}; {date}"
    )
    text = f"**{title}** ({line})\n\n{markdown_table(headers, rows)}\n"
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / f"{name}.md").write_text(text)
    record = {"title": title, "date": date, "machine": machine, "headers": list(headers)}
    record["rows"] = [list(row) for row in rows]
    write_json(directory / f"{name}.json", {**record, **dict(extra or {})})
    return text
