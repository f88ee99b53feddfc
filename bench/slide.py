"""Whole-image vs sliding-window inference on photo-sized images: time and peak memory per megapixel,
for the paper's FCN-8s VGG16 and FCN-8s ResNet-18, beside fcn.inference.budget's estimates.

Each net (--nets: vgg16 in --geometry, paper by default; resnet18 in the 'same' geometry, as the toy
checkpoint) predicts the labels of a generated natural-looking scene (bench/model/setup.py's make_scene)
with eval.mode=whole at --whole-sizes and eval.mode=slide at --size (--tile, --stride,
--window-batch; the labels-only path, fcn.core.sliding.slide_labels), and whole at --size too
unless --no-whole-at-size; with --classes 4 21 each at both class counts (the calibration of
fcn/inference/budget.py). Random weights, small random score layers (bench/model/setup.py): memory and time
do not depend on the weights.

Each variant runs in a fresh subprocess, so its peak memory is its own. On the CPU: peak RSS (VmHWM
from /proc/self/status, else ru_maxrss; reset through /proc/self/clear_refs after the model and the
image were built, where the OS allows), the RSS at that point ('before') and the difference ('added':
what inference added; the input tensor is made before). On CUDA (--device cuda, or auto where there is
a GPU): torch.cuda.max_memory_allocated beyond the allocation before. 'estimate' is what
fcn.inference.budget estimates for the same pass less the input tensor (the budget counts the
input), to read against 'added'. A variant over --timeout seconds or killed (out of memory) is
reported as such. The slide labels are compared with the whole ones at the same size (agreement of
the argmax: the untrained net's margins are tiny; see docs/evaluation.md for a trained one).

    python -m bench.slide                       # both nets, 21 classes: about 10 minutes on 2 cores
    python -m bench.slide --nets resnet18 --classes 4 21 --whole-sizes 1000 750 2000 1500 4000 3000
    python -m bench.slide --nets vgg16 --size 4000 3000 --window-batch 1

Prints a markdown table; writes bench/results/slide.json.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Sequence

ROOT = Path(__file__).resolve().parents[1]

MB = 2**20


def _config(net: str, geometry: str, classes: int) -> Any:
    """Return the config of FCN-8s on net (vgg16 in geometry, resnet18 'same') with this many classes."""
    from fcn.config import load_config

    names = [] if classes == 21 else [f"data.classes=[{','.join(f'c{i}' for i in range(classes))}]"]
    return load_config(
        overrides=[
            "model.arch=fcn8s",
            f"model.backbone={net}",
            f"model.geometry={geometry if net == 'vgg16' else 'same'}",
            "model.pretrained=false",
            f"model.num_classes={classes}",
            *names,
        ]
    )


def _child(args: argparse.Namespace) -> None:
    """Run one variant in this process; print its result as one JSON line."""
    import numpy as np
    import torch

    from bench.model.memory import _current_memory, _peak_rss, _reset_peak_rss
    from bench.model.setup import make_model, make_scene
    from fcn.inference.segment import predict_labels

    width, height = args.size
    device = torch.device(args.device)
    cfg = _config(args.net, args.geometry, args.classes)
    model = make_model(cfg, device, seed=0).eval()
    scene, _ = make_scene(max(width, height), seed=1)
    x = scene[..., :height, :width].contiguous().to(device)
    del scene
    with torch.inference_mode():
        model(x[..., :64, :64])  # oneDNN's / cuDNN's first-call set-up stays out of the timing
    window = dict(mode=args.mode, tile=args.tile, stride=args.stride, window_batch=args.window_batch)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before, reset = float(torch.cuda.memory_allocated(device)), True
    else:
        reset = _reset_peak_rss()  # the model's construction peak is not inference's
        before = _current_memory(device)
    start = time.perf_counter()
    labels = predict_labels(model, x, **window)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - start
    peak = float(torch.cuda.max_memory_allocated(device)) if device.type == "cuda" else _peak_rss()
    if args.labels:
        np.save(args.labels, labels[0].to(torch.uint8).cpu().numpy())
    print(
        json.dumps({"seconds": seconds, "before_mb": before / MB, "peak_mb": peak / MB, "peak_reset": reset})
    )


def _estimate_mb(args: argparse.Namespace, net: str, classes: int, mode: str, size: Sequence[int]) -> float:
    """Return fcn.inference.budget's estimate of the variant, less the input tensor, in MB."""
    from fcn.config import with_overrides
    from fcn.inference.budget import slide_bytes, whole_bytes

    width, height = size
    cfg = with_overrides(
        _config(net, args.geometry, classes),
        [f"eval.tile={args.tile}", f"eval.stride={args.stride}", f"eval.window_batch={args.window_batch}"],
    )
    if mode == "whole":
        need = whole_bytes(cfg, height, width)
    else:
        need = slide_bytes(cfg, height, width, args.window_batch)
    return (need - 4 * 3 * width * height) / MB


def _run_variant(
    args: argparse.Namespace, net: str, classes: int, mode: str, size: Sequence[int], labels: Path
) -> Dict[str, Any]:
    """Return one variant's row, run in a subprocess."""
    command = [
        sys.executable,
        "-m",
        "bench.slide",
        "--child",
        "--net",
        net,
        "--classes",
        str(classes),
        "--mode",
        mode,
    ]
    command += ["--size", *map(str, size), "--geometry", args.geometry, "--device", args.device]
    command += [
        "--tile",
        str(args.tile),
        "--stride",
        str(args.stride),
        "--window-batch",
        str(args.window_batch),
    ]
    command += ["--labels", str(labels)]
    megapixels = size[0] * size[1] / 1e6
    row: Dict[str, Any] = {
        "net": net if net != "vgg16" else f"vgg16 ({args.geometry})",
        "classes": classes,
        "mode": mode,
        "size": f"{size[0]}x{size[1]}",
        "megapixels": megapixels,
        "tile": f"{args.tile}/{args.stride} x{args.window_batch}" if mode == "slide" else "-",
        "estimate_mb": _estimate_mb(args, net, classes, mode, size),
    }
    print(f"{row['net']} {classes} classes {mode} {row['size']} ...", flush=True)
    try:
        done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=args.timeout)
    except subprocess.TimeoutExpired:
        return {**row, "status": f"over {args.timeout:.0f} s"}
    if done.returncode != 0:
        why = "killed (out of memory?)" if done.returncode < 0 else f"exit {done.returncode}"
        tail = done.stderr.strip().splitlines()[-1:] or [""]
        return {**row, "status": why, "error": tail[0]}
    result = json.loads(done.stdout.strip().splitlines()[-1])
    added = result["peak_mb"] - result["before_mb"]
    return {
        **row,
        "status": "ok",
        **result,
        "added_mb": added,
        "s_per_mp": result["seconds"] / megapixels,
        "added_mb_per_mp": added / megapixels,
    }


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Return the command-line options."""
    p = argparse.ArgumentParser(prog="python -m bench.slide", description=__doc__.splitlines()[0])
    p.add_argument("--nets", nargs="+", choices=("vgg16", "resnet18"), default=["vgg16", "resnet18"])
    p.add_argument("--classes", type=int, nargs="+", default=[21], help="class counts (default 21)")
    p.add_argument("--size", type=int, nargs=2, default=[2000, 1500], metavar=("W", "H"))
    p.add_argument(
        "--whole-sizes",
        type=int,
        nargs="*",
        default=[1000, 750],
        metavar="W H",
        help="smaller sizes (W H pairs) predicted whole too (default 1000 750)",
    )
    p.add_argument("--no-whole-at-size", action="store_true", help="predict --size by sliding windows only")
    p.add_argument("--geometry", choices=("same", "paper"), default="paper", help="VGG16's (default paper)")
    p.add_argument("--tile", type=int, default=512)
    p.add_argument("--stride", type=int, default=341)
    p.add_argument("--window-batch", type=int, default=4)
    p.add_argument("--device", default="auto", help="auto (CUDA if available), cpu or cuda")
    p.add_argument("--timeout", type=float, default=1200.0, help="seconds per variant (default 1200)")
    p.add_argument("--json", type=Path, default=ROOT / "bench" / "results" / "slide.json")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--net", help=argparse.SUPPRESS)
    p.add_argument("--mode", choices=("whole", "slide"), help=argparse.SUPPRESS)
    p.add_argument("--labels", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if len(args.whole_sizes) % 2:
        p.error("--whole-sizes takes W H pairs")
    if args.child:
        args.classes = args.classes[0]
    return args


def main(argv: Sequence[str] | None = None) -> dict:
    """Run every variant, print the table and write the JSON; return the results."""
    args = parse_args(argv)
    if args.child:
        _child(args)
        return {}
    import numpy as np
    import torch

    from bench.common import machine_info, markdown_table, write_json

    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    info = machine_info(torch.device(args.device))
    where = torch.cuda.get_device_name(0) if args.device.startswith("cuda") else info["cpu"]["model"]
    print(
        f"# python -m bench.slide on {args.device} ({where}), {info['torch_threads']} threads, torch {info['torch']}; "
        f"load average {info['load_average']}",
        flush=True,
    )
    smaller = [args.whole_sizes[i : i + 2] for i in range(0, len(args.whole_sizes), 2)]
    rows: List[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        for net in args.nets:
            for classes in args.classes:
                for size in smaller:
                    rows.append(_run_variant(args, net, classes, "whole", size, Path(tmp) / "small.npy"))
                whole_labels, slide_labels = Path(tmp) / "whole.npy", Path(tmp) / "slide.npy"
                whole_labels.unlink(missing_ok=True)
                rows.append(_run_variant(args, net, classes, "slide", args.size, slide_labels))
                if not args.no_whole_at_size:
                    rows.append(_run_variant(args, net, classes, "whole", args.size, whole_labels))
                if whole_labels.is_file() and slide_labels.is_file():
                    agree = float((np.load(whole_labels) == np.load(slide_labels)).mean())
                    rows[-2]["agree_with_whole"] = agree
    kind = "added MB (CUDA allocated)" if args.device.startswith("cuda") else "added MB (RSS)"

    def number(row: dict, key: str, form: str) -> str:
        return format(row[key], form) if key in row else "-"

    table = markdown_table(
        ["net", "classes", "mode", "size", "tile/stride xbatch", "status", "seconds", "s/MP", kind, "MB/MP"]
        + ["estimate MB", "agree %"],
        [
            [r["net"], r["classes"], r["mode"], r["size"], r["tile"], r["status"]]
            + [number(r, "seconds", ".1f"), number(r, "s_per_mp", ".1f"), number(r, "added_mb", ".0f")]
            + [number(r, "added_mb_per_mp", ".0f"), number(r, "estimate_mb", ".0f")]
            + [f"{100 * r['agree_with_whole']:.2f}" if "agree_with_whole" in r else "-"]
            for r in rows
        ],
    )
    print(table)
    results = {"machine": info, "args": {k: v for k, v in vars(args).items() if k != "json"}, "rows": rows}
    write_json(args.json, results)
    print(f"wrote {args.json}")
    return results


if __name__ == "__main__":
    main()
