"""Model speed: FLOPs, time per image and achieved FLOP/s of FCN-32s/16s/8s against a measured matmul rate.

For each arch (VGG16, pretrained=False, 21 classes) and geometry ('paper': the reference's pad 100;
'same') at --size, this counts the FLOPs (torch.utils.flop_counter on the meta device), times
inference (eval, torch.inference_mode) and a training step (forward, loss, backward, SGD step;
batch 1) for the variants fp32, bf16 autocast, channels-last (cl), torch.compile and their
combinations, and divides the achieved FLOP/s by a dense matmul rate measured in this run on the same
device and dtype. Variants of a group are timed in interleaved rounds (best of the rounds is kept) so
that load from other processes falls on all of them alike. Every fast inference variant is compared
with fp32 on a generated natural-looking scene (smooth gradients and blurred shapes) through a model
whose zero-initialised score layers get small random weights (biases centring the logits on that
scene), so that the argmax map is not trivial: pixel agreement of the argmax and relative logit error.

A variant whose time, estimated from a probe (one VGG conv layer at --probe-size, in each dtype and
layout), exceeds --max-seconds per call is not run; the table shows the estimate marked '~'. On a CPU without native bf16 (no avx512_bf16/amx) this is where bf16
ends up. The fp32 matmul is timed again in every group's rounds; '% mm' of fp32 rows uses that rate.

--backbones adds other backbones beside VGG16 (e.g. resnet18 timm:resnet18 timm:convnext_tiny), in the
'same' geometry only; their rows read 'fcn8s <backbone>' in the arch column.

Also: peak memory of an fp32 training step (FCN-8s, paper geometry, --size) and a check that 100
training steps (FCN-8s, paper geometry, at --growth-size) retain no memory or tensors (step 10 vs 100).

    python -m bench.model [--quick] [--size 500] [--archs fcn32s fcn16s fcn8s] [--no-compile]
                          [--backbones vgg16 resnet50 timm:resnet50d]
                          [--json bench/results/model.json]

Prints markdown tables and the issue-8 targets (PASS/MISS and by how much); writes JSON.
"""

from __future__ import annotations

import argparse
import copy
import functools
import gc
import math
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Sequence

import torch
from torch import Tensor, nn

from bench.common import (
    load_average,
    machine_info,
    markdown_table,
    time_call,
    time_interleaved,
    write_json,
)
from bench.model.memory import (
    memory_growth,
    peak_train_memory,
)
from bench.model.report import (
    _format_value,
    evaluate_targets,
    fraction_of_matmul,
    results_table,
)
from bench.model.setup import (
    ARCHS,
    CALIBRATION_SEEDS,
    GB,
    GEOMETRIES,
    MATMUL,
    QUICK_VARIANTS,
    TARGET_TRAIN_SIZE,
    VARIANTS,
    count_flops,
    inference_fn,
    make_model,
    make_scene,
    matmul_rate,
    model_config,
    reset_compiler,
    train_step_fn,
)
from fcn.core.runtime import autocast, select_device
from fcn.inference.fastpath import quantize_int8, use_winograd
from fcn.training.loop import build_optimizer

ROOT = Path(__file__).resolve().parents[2]


def run_group(
    arch: str,
    geometry: str,
    size: int,
    mode: str,
    variants: Sequence[str],
    probe: Dict[tuple, dict],
    args: argparse.Namespace,
    device: torch.device,
    max_seconds: float,
    backbone: str = "vgg16",
) -> List[dict]:
    """Return one row per variant of (arch, geometry, size, mode 'infer'/'train'): times, agreement."""
    cfg = model_config(arch, geometry, backbone)
    training = mode == "train"
    flops = count_flops(cfg, size, training)
    x, mask = (t.to(device) for t in make_scene(size, seed=1))
    reset_compiler()
    base = make_model(cfg, device, scene=None if training else x).train(training)
    if training or device.type != "cpu":  # the fast paths are CPU inference paths
        variants = [v for v in variants if VARIANTS[v].fast_path == "none"]
    # One model per (channels_last, fast_path) in use; compiled variants wrap the eager model they share.
    models: Dict[tuple, nn.Module] = {(False, "none"): base}
    for key in {(VARIANTS[v].channels_last, VARIANTS[v].fast_path) for v in variants} - {(False, "none")}:
        models[key] = copy.deepcopy(base)
        if key[0]:
            models[key].to(memory_format=torch.channels_last)
        if key[1] == "winograd":
            use_winograd(models[key])
        elif key[1] == "int8":
            quantize_int8(models[key], (make_scene(size, seed)[0].to(device) for seed in CALIBRATION_SEEDS))
    inputs = {False: x, True: x.contiguous(memory_format=torch.channels_last)}
    optimizers = {key: build_optimizer(m, cfg) for key, m in models.items()} if training else {}

    def make_fn(name: str) -> Callable[[], Tensor]:
        v = VARIANTS[name]
        key = (v.channels_last, v.fast_path)
        net = torch.compile(models[key]) if v.compile else models[key]
        if training:
            return train_step_fn(net, optimizers[key], inputs[v.channels_last], mask, v.amp, device)
        return inference_fn(net, inputs[v.channels_last], v.amp, device)

    if backbone != "vgg16":  # the targets and the other tables read the VGG16 rows by their arch alone
        arch = f"{arch} {backbone}"
    label = f"{arch} {geometry} {size} {mode}"
    fns = {name: make_fn(name) for name in variants}
    first_fp32, _ = time_call(fns["fp32"], device)  # warm-up, and the base of the estimates
    rows: Dict[str, dict] = {}
    rounds: Dict[str, int] = {}
    for name in variants:
        amp, cl, compiled, _ = VARIANTS[name]
        # fp32 variants: fp32's time times the probe's ratio. Others: the FLOPs at the probe's rate,
        # since a fallback path (bf16 on a CPU without it) runs at one rate whatever the size, while
        # oneDNN's fp32 rate grows with the size (a ratio taken on the probe would flatter bf16).
        if amp == "none":
            estimate = first_fp32 * probe[(mode, amp, cl)]["slowdown"]
        else:
            estimate = flops / probe[(mode, amp, cl)]["flops_per_s"]
        row = {"arch": arch, "geometry": geometry, "size": size, "mode": mode, "variant": name}
        row.update(flops=flops, estimate_s=estimate, measured=estimate <= max_seconds, compile_s=None)
        rows[name] = row
        if not row["measured"]:
            print(f"  {label} {name}: skipped, ~{estimate:.0f} s per call > --max-seconds", flush=True)
            continue
        rounds[name] = max(1, min(args.rounds, int(args.round_budget // max(estimate, 1e-9))))
        if compiled:  # the first call compiles; what it takes beyond a steady call is the compile time
            try:
                row["first_call_s"], _ = time_call(fns[name], device)
            except Exception as exc:  # a compiler failure is a result to report, not a reason to stop
                row.update(measured=False, error=f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}")
                print(f"  {label} {name}: torch.compile failed: {row['error']}", flush=True)
                del rounds[name]
        elif name != "fp32" and estimate <= max_seconds / 4:  # one-off costs of a long call are < 1%
            time_call(fns[name], device)
    measured = {name: fns[name] for name in variants if rows[name]["measured"]}
    print(f"  {label}: timing {', '.join(f'{n} x{rounds[n]}' for n in measured)}", flush=True)
    # The fp32 matmul runs in the same rounds, so '% mm' compares rates measured at the same moment.
    # Repeated to fill about a second: a lone ~2 ms product right after a model call pays the threads'
    # wake-up and cold caches, which would understate the rate.
    n = args.matmul_n
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    one, _ = time_call(functools.partial(torch.mm, a, b), device)
    repeats = max(1, math.ceil(1.0 / max(one, 1e-6)))
    c = torch.empty(n, n, device=device)

    def matmuls() -> Tensor:
        for _ in range(repeats):
            torch.mm(a, b, out=c)
        return c

    measured[MATMUL] = matmuls
    rounds[MATMUL] = max(rounds.values())
    time_call(measured[MATMUL], device)
    times, outputs = time_interleaved(measured, rounds, device)
    matmul_fp32 = repeats * 2 * n**3 / min(times[MATMUL])
    reference = outputs["fp32"].float() if not training else None
    for name, row in rows.items():
        if not row["measured"]:
            continue
        row["times_s"] = times[name]
        row["seconds"] = min(times[name])
        row["median_s"] = statistics.median(times[name])
        if "first_call_s" in row:
            row["compile_s"] = max(row.pop("first_call_s") - row["seconds"], 0.0)
        if reference is not None:
            out = outputs[name].float()
            row["agreement"] = (out.argmax(1) == reference.argmax(1)).float().mean().item()
            row["logit_rel_err"] = ((out - reference).norm() / reference.norm()).item()
            if name == "fp32":
                counts = torch.bincount(reference.argmax(1).flatten(), minlength=reference.shape[1])
                row["classes_in_argmax"] = int((counts > 0).sum())
                row["largest_class_share"] = (counts.max() / counts.sum()).item()
        else:
            row["loss"] = outputs[name].item()
    fp32_s = rows["fp32"]["seconds"]
    for row in rows.values():
        row["speedup"] = fp32_s / (row["seconds"] if row["measured"] else row["estimate_s"])
        row["matmul_fp32_flops_per_s"] = matmul_fp32
    return list(rows.values())


def probe_variants(args: argparse.Namespace, device: torch.device) -> tuple[Dict[tuple, dict], List[dict]]:
    """Return {(mode, amp, channels_last): seconds, slowdown vs fp32, FLOP/s} of a VGG conv layer.

    Only to decide which variants are too slow to run and to estimate those: convolutions are ~all
    of the FLOPs, and one 3x3 256->256 layer at --probe-size (forward for 'infer', forward and both
    gradients for 'train') shows each dtype/layout's rate without running a whole slow model.
    """
    torch.manual_seed(0)
    conv = nn.Conv2d(256, 256, 3, padding=1).to(device)
    convs = {False: conv, True: copy.deepcopy(conv).to(memory_format=torch.channels_last)}
    x = torch.randn(1, 256, args.probe_size, args.probe_size, device=device)
    inputs = {False: x, True: x.contiguous(memory_format=torch.channels_last)}

    def make(mode: str, amp: str, cl: bool) -> Callable[[], Any]:
        if mode == "infer":
            return inference_fn(convs[cl], inputs[cl], amp, device)

        leaf = inputs[cl].detach().requires_grad_()  # a mid-network layer also computes its input's gradient

        def step() -> None:
            convs[cl].zero_grad(set_to_none=True)
            leaf.grad = None
            with autocast(device, amp):
                y = convs[cl](leaf)
            y.float().square().mean().backward()

        return step

    keys = [
        (mode, amp, cl) for mode in ("infer", "train") for amp in ("none", "bf16") for cl in (False, True)
    ]
    fns = {key: make(*key) for key in keys}
    for fn in fns.values():
        time_call(fn, device)
    times, _ = time_interleaved(fns, {key: 1 for key in fns}, device)
    flops = {"infer": 2 * 256 * 256 * 9 * args.probe_size**2}
    flops["train"] = 3 * flops["infer"]
    probe: Dict[tuple, dict] = {}
    for key in keys:
        seconds = min(times[key])
        slowdown = seconds / min(times[(key[0], "none", False)])
        probe[key] = {"seconds": seconds, "slowdown": slowdown, "flops_per_s": flops[key[0]] / seconds}
    rows = [{"mode": m, "amp": a, "channels_last": c, **probe[(m, a, c)]} for m, a, c in keys]
    return probe, rows


# ----------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Return the command-line options."""
    parser = argparse.ArgumentParser(prog="python -m bench.model", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick",
        action="store_true",
        help="FCN-8s, paper geometry, no compile, fewer rounds, training only at 320",
    )
    parser.add_argument("--size", type=int, default=500, help="image side for the main table (default 500)")
    parser.add_argument("--archs", nargs="+", choices=ARCHS, default=None, help="default: all (quick: fcn8s)")
    parser.add_argument(
        "--geometries", nargs="+", choices=GEOMETRIES, default=None, help="default: both (quick: paper)"
    )
    parser.add_argument(
        "--backbones",
        nargs="+",
        default=["vgg16"],
        help="model.backbone values (default vgg16); others run in the 'same' geometry only",
    )
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile variants")
    parser.add_argument(
        "--infer-only",
        action="store_true",
        help="inference groups only: no training steps, peak-memory or retention check",
    )
    parser.add_argument(
        "--variants",
        nargs="+",
        choices=list(VARIANTS),
        default=None,
        help="run only these variants (fp32 always runs: it is the reference)",
    )
    parser.add_argument("--device", default="auto", help="auto (CUDA if present), cpu or cuda")
    parser.add_argument(
        "--rounds", type=int, default=None, help="timed rounds per variant (default 3, quick 2)"
    )
    parser.add_argument(
        "--max-seconds",
        type=float,
        default=None,
        help="skip a variant whose estimated call takes longer (default 150, quick 30)",
    )
    parser.add_argument(
        "--probe-size", type=int, default=32, help="side of the probe that estimates slow variants"
    )
    parser.add_argument(
        "--growth-steps", type=int, default=None, help="steps of the retention check (100; quick 30)"
    )
    parser.add_argument(
        "--growth-size", type=int, default=32, help="image side of the retention check (paper geometry)"
    )
    parser.add_argument(
        "--json",
        type=Path,
        default=ROOT / "bench" / "results" / "model.json",
        help="where to write the results",
    )
    args = parser.parse_args(argv)
    args.archs = args.archs or (["fcn8s"] if args.quick else list(ARCHS))
    args.geometries = args.geometries or (["paper"] if args.quick else list(GEOMETRIES))
    args.rounds = args.rounds or (2 if args.quick else 3)
    args.growth_steps = args.growth_steps or (30 if args.quick else 100)
    args.max_seconds = args.max_seconds or (30.0 if args.quick else 150.0)
    args.round_budget = args.max_seconds  # a variant's timed rounds take about this long at most
    return args


def main(argv: Sequence[str] | None = None) -> dict:
    """Run the benchmark, print its tables and write the JSON; return the results."""
    args = parse_args(argv)
    device = select_device(args.device)
    started = time.time()
    info = machine_info(device)
    flags = ", ".join(f"{k}={'yes' if v else 'no'}" for k, v in info["cpu"]["flags"].items())
    print(f"# python -m bench.model on {info['cpu']['model']} ({info['device']}), torch {info['torch']}")
    print(
        f"torch threads {info['torch_threads']}, cpu count {info['cpu_count']}, capability {info['cpu_capability']}"
    )
    print(f"cpu flags: {flags}; mkldnn bf16 supported: {info['mkldnn_bf16_supported']}")
    print(f"load average at start: {info['load_average']}", flush=True)

    chosen = ["fp32", *[v for v in args.variants if v != "fp32"]] if args.variants else None
    variants = [
        v
        for v in (chosen or (QUICK_VARIANTS if args.quick else VARIANTS))
        if not (args.no_compile and VARIANTS[v].compile)
    ]
    peak = None
    if not args.infer_only:
        print("peak memory of a training step ...", flush=True)
        peak = peak_train_memory(args.size, device)
    print("matmul rates ...", flush=True)
    mm_start = {
        amp: matmul_rate(device, dtype, 1.0)
        for amp, dtype in (("none", torch.float32), ("bf16", torch.bfloat16))
    }
    args.matmul_n = mm_start["none"]["n"]
    print("probing variant rates ...", flush=True)
    probe, probe_rows = probe_variants(args, device)

    rows: List[dict] = []
    for backbone in args.backbones:
        geometries = args.geometries if backbone in ("vgg16", "vgg16_bn") else ["same"]
        for geometry in geometries:
            for arch in args.archs:
                # --quick times training only at the bf16 target's size (below), the slow part of the run.
                for mode in ("infer",) if args.quick or args.infer_only else ("infer", "train"):
                    rows += run_group(
                        arch,
                        geometry,
                        args.size,
                        mode,
                        variants,
                        probe,
                        args,
                        device,
                        args.max_seconds,
                        backbone,
                    )
                    gc.collect()  # compiled graphs keep reference cycles to the group's models
    if (
        not args.infer_only
        and (args.quick or args.size != TARGET_TRAIN_SIZE)
        and "paper" in args.geometries
        and "fcn8s" in args.archs
    ):
        # The bf16 training target is at 320x320; its bf16 rows may take a longer call than the rest.
        rows += run_group(
            "fcn8s",
            "paper",
            TARGET_TRAIN_SIZE,
            "train",
            variants,
            probe,
            args,
            device,
            2 * args.max_seconds,
        )
    growth = None
    if not args.infer_only:
        print(f"retention check over {args.growth_steps} steps ...", flush=True)
        growth = memory_growth(args.growth_steps, args.growth_size, device)
    mm_end = {
        amp: matmul_rate(device, dtype, 1.0)
        for amp, dtype in (("none", torch.float32), ("bf16", torch.bfloat16))
    }
    # The practical limit: the best rate seen at either end of the run (other load only lowers rates).
    rates = {amp: max(mm_start[amp]["flops_per_s"], mm_end[amp]["flops_per_s"]) for amp in mm_start}
    for row in rows:
        row["fraction_of_matmul"] = fraction_of_matmul(row, rates)
    targets = evaluate_targets(rows, rates, growth, args.size)
    info["load_average_end"] = load_average()
    elapsed = time.time() - started

    print()
    print("## Dense matmul rate (torch.mm n x n, best of 3 calls): the practical limit\n")
    in_groups = [r["matmul_fp32_flops_per_s"] / GB for r in rows]
    mm_rows = [
        [
            amp if amp != "none" else "fp32",
            mm_start[amp]["n"],
            f"{mm_start[amp]['flops_per_s'] / GB:.1f}",
            f"{mm_end[amp]['flops_per_s'] / GB:.1f}",
            f"{min(in_groups):.1f}-{max(in_groups):.1f}" if amp == "none" and in_groups else "-",
            "each group's own" if amp == "none" else f"{rates[amp] / GB:.1f}",
        ]
        for amp in rates
    ]
    headers = ["dtype", "n", "GFLOP/s at start", "at end", "within the groups", "rows divided by"]
    print(markdown_table(headers, mm_rows))
    print(
        f"\n## Model: batch 1, VGG16, 21 classes; best of the interleaved rounds (torch threads {info['torch_threads']})\n"
    )
    print(results_table(rows, rates))
    print(
        "\ncl = channels-last; GFLOP counted by torch.utils.flop_counter (train = forward + backward); "
        "% mm = achieved FLOP/s over the matmul rate of the variant's dtype; agree = pixels with fp32's argmax; "
        "logit err = |out - fp32| / |fp32|; '~' = not run (estimated > --max-seconds): "
        "fp32's time times the probe's ratio (fp32 variants), the FLOPs at the probe's rate (bf16)."
    )
    ref = next((r for r in rows if r["variant"] == "fp32" and "classes_in_argmax" in r), None)
    if ref:
        print(
            f"fp32 argmax on the scene ({ref['arch']} {ref['geometry']}): {ref['classes_in_argmax']} classes present, "
            f"largest covers {100 * ref['largest_class_share']:.0f}% of pixels."
        )
    print(
        f"\n## Probe: conv 256->256 3x3 at {args.probe_size}x{args.probe_size}, eager (decides what is too slow to run)\n"
    )
    probe_table = [
        [
            r["mode"],
            r["amp"],
            r["channels_last"],
            f"{r['seconds']:.3f}",
            f"{r['flops_per_s'] / GB:.1f}",
            f"{r['slowdown']:.2f}",
        ]
        for r in probe_rows
    ]
    print(markdown_table(["mode", "amp", "channels-last", "s", "GFLOP/s", "x fp32 time"], probe_table))
    if peak is not None and growth is not None:
        print(f"\n## Memory ({peak['kind']})\n")
        print(
            f"fp32 training step, fcn8s paper {peak['size']}x{peak['size']}, batch 1: peak {peak['peak_mb']:.0f} MB, "
            f"{peak['before_mb']:.0f} MB before the step, growth during the step {peak['step_growth_mb']:.0f} MB "
            f"(parameters {peak['params_mb']:.0f} MB, gradients {peak['grads_mb']:.0f} MB, momentum {peak['momentum_mb']:.0f} MB; "
            f"peak reset before the step: {peak['peak_reset']})."
        )
        last = growth["last"]
        print(
            f"retention ({growth['arch']} {growth['geometry']} {growth['size']}x{growth['size']}, {growth['kind']}): "
            f"step 10 {growth['step10']['memory_mb']:.1f} MB / {growth['step10']['live_tensors']} tensors, "
            f"step {growth['steps']} {last['memory_mb']:.1f} MB / {last['live_tensors']} tensors "
            f"(growth {growth['growth_mb']:+.1f} MB, {growth['seconds_per_step']:.2f} s/step)."
        )
    print("\n## Targets (issue 8)\n")
    print(
        markdown_table(
            ["target", "measured", "required", "verdict", "note"],
            [
                [
                    t["target"],
                    _format_value(t["value"]),
                    _format_value(t["required"]),
                    t["verdict"],
                    t.get("note", ""),
                ]
                for t in targets
            ],
        )
    )
    print(f"\nload average at end: {info['load_average_end']}; total {elapsed / 60:.1f} min")
    print(f"command: python -m bench.model {' '.join(sys.argv[1:] if argv is None else argv)}")

    results = {
        "machine": info,
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "matmul": {"start": mm_start, "end": mm_end, "used_flops_per_s": rates},
        "probe": probe_rows,
        "rows": rows,
        "memory": {"peak_train_step": peak, "retention": growth},
        "targets": targets,
        "elapsed_s": elapsed,
    }
    write_json(args.json, results)
    print(f"wrote {args.json}")
    return results


if __name__ == "__main__":
    main()
