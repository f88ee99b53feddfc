"""Whole-image vs sliding-window inference on a photo-sized image: time and peak memory.

FCN-8s VGG16 (pretrained=False, 21 classes, small random score layers as in bench/model.py) predicts
the labels of a generated natural-looking scene (bench/model.py's make_scene) of --size W H (default
4000 x 3000, a 12-megapixel photo) with eval.mode=whole and eval.mode=slide (--tile, --stride,
--window-batch), and whole at smaller sizes (--whole-sizes) to show how its memory grows with the
image. Geometry 'same' by default: a sliding window is an image of its own, and the 'paper' geometry
pads every one of them by 100 pixels (a 512 tile computes as 712: about 1.4x the time here);
--geometry paper measures that.

Each variant runs in a fresh subprocess, so its peak memory is its own: peak RSS (VmHWM from
/proc/self/status, else ru_maxrss; reset through /proc/self/clear_refs after the model and the
image were built, where the OS allows), the RSS at that point ('before'), and the difference (what
inference added). tracemalloc would not see torch's allocations. A
variant that exceeds --timeout seconds or dies (out of memory) is reported as such. The slide
prediction is compared with the whole one at the same size (pixel agreement of the argmax).

    python bench/slide.py                      # about 10 minutes on 2 cores
    python bench/slide.py --size 2000 1500 --whole-sizes 1000 750

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
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

MB = 2**20


def _child(args: argparse.Namespace) -> None:
    """Run one variant in this process; print its result as one JSON line."""
    import numpy as np
    import torch
    from model_memory import _current_memory, _peak_rss, _reset_peak_rss
    from model_setup import make_model, make_scene, model_config

    from fcn.inference.segment import predict_labels

    width, height = args.size
    device = torch.device("cpu")
    cfg = model_config("fcn8s", args.geometry)
    model = make_model(cfg, device, seed=0).eval()
    scene, _ = make_scene(max(width, height), seed=1)
    x = scene[..., :height, :width].contiguous()
    del scene
    with torch.inference_mode():
        model(x[..., :64, :64])  # oneDNN's first-call set-up stays out of the timing
    window = dict(mode=args.mode, tile=args.tile, stride=args.stride, window_batch=args.window_batch)
    reset = _reset_peak_rss()  # the model's construction peak is not inference's
    before = _current_memory(device)
    start = time.perf_counter()
    labels = predict_labels(model, x, **window)
    seconds = time.perf_counter() - start
    peak = _peak_rss()
    if args.labels:
        np.save(args.labels, labels[0].to(torch.uint8).numpy())
    print(
        json.dumps({"seconds": seconds, "before_mb": before / MB, "peak_mb": peak / MB, "peak_reset": reset})
    )


def _run_variant(args: argparse.Namespace, mode: str, size: Sequence[int], labels: Path) -> Dict[str, Any]:
    """Return one variant's row, run in a subprocess."""
    command = [
        sys.executable,
        __file__,
        "--child",
        "--mode",
        mode,
        "--size",
        *map(str, size),
        "--geometry",
        args.geometry,
        "--tile",
        str(args.tile),
        "--stride",
        str(args.stride),
        "--window-batch",
        str(args.window_batch),
        "--labels",
        str(labels),
    ]
    row: Dict[str, Any] = {
        "mode": mode,
        "size": f"{size[0]}x{size[1]}",
        "tile": f"{args.tile}/{args.stride}" if mode == "slide" else "-",
    }
    print(f"{mode} {row['size']} ...", flush=True)
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=args.timeout)
    except subprocess.TimeoutExpired:
        return {**row, "status": f"over {args.timeout:.0f} s"}
    if done.returncode != 0:
        why = "killed (out of memory?)" if done.returncode < 0 else f"exit {done.returncode}"
        tail = done.stderr.strip().splitlines()[-1:] or [""]
        return {**row, "status": why, "error": tail[0]}
    result = json.loads(done.stdout.strip().splitlines()[-1])
    return {**row, "status": "ok", **result, "added_mb": result["peak_mb"] - result["before_mb"]}


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Return the command-line options."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, nargs=2, default=[4000, 3000], metavar=("W", "H"))
    p.add_argument(
        "--whole-sizes",
        type=int,
        nargs="+",
        default=[1000, 750, 2000, 1500],
        metavar="W H",
        help="smaller sizes (W H pairs) predicted whole too (default 1000 750 2000 1500)",
    )
    p.add_argument("--geometry", choices=("same", "paper"), default="same")
    p.add_argument("--tile", type=int, default=512)
    p.add_argument("--stride", type=int, default=341)
    p.add_argument("--window-batch", type=int, default=4)
    p.add_argument("--timeout", type=float, default=1200.0, help="seconds per variant (default 1200)")
    p.add_argument("--json", type=Path, default=ROOT / "bench" / "results" / "slide.json")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--mode", choices=("whole", "slide"), help=argparse.SUPPRESS)
    p.add_argument("--labels", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if len(args.whole_sizes) % 2:
        p.error("--whole-sizes takes W H pairs")
    return args


def main(argv: Sequence[str] | None = None) -> dict:
    """Run every variant, print the table and write the JSON; return the results."""
    args = parse_args(argv)
    if args.child:
        _child(args)
        return {}
    import numpy as np
    import torch
    from common import machine_info, markdown_table, write_json

    info = machine_info(torch.device("cpu"))
    print(
        f"# bench/slide.py: FCN-8s VGG16 ({args.geometry} geometry) on {info['cpu']['model']}, "
        f"{info['torch_threads']} threads, torch {info['torch']}; load average {info['load_average']}",
        flush=True,
    )
    smaller = [args.whole_sizes[i : i + 2] for i in range(0, len(args.whole_sizes), 2)]
    rows: List[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        for size in smaller:
            rows.append(_run_variant(args, "whole", size, Path(tmp) / "small.npy"))
        whole_labels, slide_labels = Path(tmp) / "whole.npy", Path(tmp) / "slide.npy"
        rows.append(_run_variant(args, "slide", args.size, slide_labels))
        rows.append(_run_variant(args, "whole", args.size, whole_labels))
        if whole_labels.is_file() and slide_labels.is_file():
            agree = float((np.load(whole_labels) == np.load(slide_labels)).mean())
            rows[-2]["agree_with_whole"] = agree
    table = markdown_table(
        [
            "mode",
            "size",
            "tile/stride",
            "status",
            "seconds",
            "RSS before MB",
            "peak RSS MB",
            "added MB",
            "agree %",
        ],
        [
            [
                r["mode"],
                r["size"],
                r["tile"],
                r["status"],
                f"{r['seconds']:.1f}" if "seconds" in r else "-",
                f"{r['before_mb']:.0f}" if "before_mb" in r else "-",
                f"{r['peak_mb']:.0f}" if "peak_mb" in r else "-",
                f"{r['added_mb']:.0f}" if "added_mb" in r else "-",
                f"{100 * r['agree_with_whole']:.2f}" if "agree_with_whole" in r else "-",
            ]
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
