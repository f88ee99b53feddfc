"""Every inference engine x precision (eval.engine, eval.fast_path) on FCN-8s VGG16 (paper geometry)
and ResNet-18 at 500x500, batch 1, and on trained checkpoints: time, ratio to torch fp32, agreement
with torch fp32 and (on a checkpoint) mean IU.

Each row is loaded as evaluate.py loads it (fcn.inference.loading.load: the ONNX export cached beside the
checkpoint; int8 calibrated as evaluate.py calibrates it), then all rows of a model are called in
interleaved rounds (one warm-up call each first), so that load from other processes falls on every
row alike; a row's time is the median over the rounds. The random-weight models get small random
score layers (bench/model/setup.py's make_model) and are timed on a generated scene (bench/model/setup.py's
make_scene), int8 calibrated on two other scenes; a checkpoint is timed on its own validation
images (the sum over them per round, divided by their count) and scored on them. Agreement is the
share of pixels (void excluded) whose argmax equals torch fp32's; `auto` names the row that
eval.fast_path=auto resolves to on this machine and compares it with the fastest exact row.

    python -m bench.engines                                    # VGG16 + ResNet-18, 2 threads
    python -m bench.engines --checkpoint runs/toy/checkpoints/best.pt --models
    python -m bench.engines --models resnet18 --rows torch onnxruntime openvino --rounds 3

Prints a markdown table per model and writes JSON (bench/results/engines.json by default).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import statistics
import tempfile
import time
from pathlib import Path
from typing import Callable, Sequence

import torch

from bench.common import load_average, machine_info, markdown_table, write_json
from bench.model.setup import make_model, make_scene, model_config
from fcn.config import VOID, to_dict
from fcn.core.checkpoint import save_checkpoint
from fcn.core.metrics import ConfusionMatrix
from fcn.core.runtime import autocast, cpu_flags, native_bf16
from fcn.core.sliding import model_logits
from fcn.inference.engines import available
from fcn.inference.fastpath import prepare_fast_path
from fcn.inference.loading import load, load_model_weights

ROOT = Path(__file__).resolve().parents[1]

ROWS = {
    "torch": (["eval.engine=torch", "eval.fast_path=none"], True),
    "torch winograd": (["eval.engine=torch", "eval.fast_path=winograd"], True),
    "torch bf16+cl": (["eval.engine=torch", "eval.amp=bf16", "eval.channels_last=true"], False),
    "onnxruntime": (["eval.engine=onnxruntime"], True),
    "openvino": (["eval.engine=openvino"], True),
    "openvino bf16": (["eval.engine=openvino"], False),
    "torch int8": (["eval.engine=torch", "eval.fast_path=int8"], False),
    "onnxruntime int8": (["eval.engine=onnxruntime", "eval.fast_path=int8"], False),
    "openvino int8": (["eval.engine=openvino", "eval.fast_path=int8"], False),
}
"""Each row's config overrides and whether its results are fp32's (an exact row, auto's candidates).
'openvino bf16' is OpenVINO with its bf16 precision hint (what its CPU plugin uses by default where
bf16 is native); bf16 rows are skipped on a CPU without native bf16 (10-50x slower there)."""
MODELS = {"vgg16": ("vgg16", "paper"), "resnet18": ("resnet18", "same")}


def resolved_auto(checkpoint: Path, overrides: Sequence[str]) -> tuple[str, str]:
    """Return (row name, the one line auto printed) of eval.fast_path=auto on this machine."""

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        _, cfg, _ = load_model_weights(
            checkpoint, torch.device("cpu"), None, (), [*overrides, "eval.fast_path=auto"]
        )
    e = cfg.eval
    if e.amp == "bf16":
        row = "torch bf16+cl"
    elif e.engine != "torch":
        row = e.engine
    else:
        row = "torch winograd" if e.fast_path == "winograd" else "torch"
    return row, out.getvalue().strip()


def load_row(name: str, checkpoint: Path, overrides: Sequence[str], calibration: list) -> tuple:
    """Return (callable, cfg, setup seconds) of one row, prepared as evaluate.py prepares it."""
    start = time.perf_counter()
    model, cfg = load(checkpoint, "cpu", None, (), [*overrides, *ROWS[name][0]], log=False)
    if name == "openvino bf16":
        model.precision = "bf16"
    with contextlib.redirect_stdout(io.StringIO()):
        prepare_fast_path(model, cfg, iter(calibration), log=False)

    def forward(x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode(), autocast(x.device, cfg.eval.amp):
            return model_logits(model, x, bool(cfg.eval.channels_last)).float()

    return forward, cfg, time.perf_counter() - start


def bench_model(
    label: str,
    checkpoint: Path,
    overrides: Sequence[str],
    rows: Sequence[str],
    images: list,
    masks: list,
    calibration: list,
    rounds: int,
    num_classes: int,
) -> dict:
    """Return the rows' times, agreement and mean IU on images (interleaved rounds), printed as a table."""
    loaded: dict[str, tuple[Callable, object, float]] = {}
    for name in rows:
        try:
            loaded[name] = load_row(name, checkpoint, overrides, calibration)
        except (ValueError, RuntimeError, OSError) as exc:
            print(f"{label}: {name} skipped: {exc}", flush=True)
    first: dict[str, float] = {}
    for name, (forward, _, _) in loaded.items():  # warm-up: weights are packed; OpenVINO compiles
        start = time.perf_counter()
        forward(images[0])
        first[name] = time.perf_counter() - start
        for x in images:  # a shape's second call: OpenVINO compiles for it (fcn.inference.engines)
            forward(x)
    times: dict[str, list[float]] = {name: [] for name in loaded}
    outputs: dict[str, list[torch.Tensor]] = {name: [] for name in loaded}
    for r in range(rounds):
        for name, (forward, _, _) in loaded.items():
            total = 0.0
            for _i, x in enumerate(images):
                start = time.perf_counter()
                logits = forward(x)
                total += time.perf_counter() - start
                if r == 0:
                    outputs[name].append(logits.argmax(1))
            times[name].append(total / len(images))
        print(f"{label}: round {r + 1}/{rounds} done, load average {load_average()}", flush=True)
    auto_row, auto_line = resolved_auto(checkpoint, overrides)
    base = statistics.median(times["torch"])
    result_rows = []
    for name in loaded:
        matrix = ConfusionMatrix(num_classes, VOID)
        agree = scored = 0
        for pred, ref, mask in zip(outputs[name], outputs["torch"], masks):
            valid = mask != VOID
            agree += int(((pred == ref) & valid).sum())
            scored += int(valid.sum())
            matrix.update(pred, mask)
        seconds = statistics.median(times[name])
        result_rows.append(
            {
                "row": name,
                "exact": ROWS[name][1],
                "s_per_image": seconds,
                "spread": (min(times[name]), max(times[name])),
                "vs_torch": base / seconds,
                "agreement": agree / max(scored, 1),
                "mean_iou": matrix.compute()["mean_iou"],
                "first_call_s": first[name],
                "setup_s": loaded[name][2],
            }
        )
    exact = [r for r in result_rows if r["exact"]]
    best = min(exact, key=lambda r: r["s_per_image"])
    auto = next((r for r in result_rows if r["row"] == auto_row), None)
    table = markdown_table(
        ["row", "s/img", "min-max", "vs torch", "agree %", "mean IU", "1st call s", "load s"],
        [
            [
                r["row"] + (" (= auto)" if r["row"] == auto_row else ""),
                f"{r['s_per_image']:.4f}",
                f"{r['spread'][0]:.3f}-{r['spread'][1]:.3f}",
                f"{r['vs_torch']:.2f}x",
                f"{100 * r['agreement']:.2f}",
                f"{100 * r['mean_iou']:.2f}",
                f"{r['first_call_s']:.2f}",
                f"{r['setup_s']:.1f}",
            ]
            for r in result_rows
        ],
    )
    verdict = (
        f"auto = {auto_row}: {best['s_per_image'] / auto['s_per_image']:.2f}x the fastest exact row ({best['row']})"
        if auto
        else f"auto = {auto_row} (not among the rows run)"
    )
    print(f"\n### {label}\n\n{table}\n\n{auto_line}\n{verdict}\n", flush=True)
    return {"model": label, "rows": result_rows, "auto": auto_row, "auto_line": auto_line, "verdict": verdict}


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.engines", description=__doc__.splitlines()[0])
    p.add_argument(
        "--models", nargs="*", choices=list(MODELS), default=list(MODELS), help="random-weight models"
    )
    p.add_argument("--checkpoint", action="append", default=[], help="trained checkpoint (repeatable)")
    p.add_argument("--limit", type=int, default=50, help="a checkpoint's validation images timed and scored")
    p.add_argument("--rows", nargs="+", choices=list(ROWS), default=list(ROWS), help="default: all")
    p.add_argument("--size", type=int, default=500, help="side of the random-weight models' input")
    p.add_argument("--rounds", type=int, default=5, help="interleaved rounds (median reported)")
    p.add_argument("--threads", type=int, default=2, help="torch, ONNX Runtime and OpenVINO threads")
    p.add_argument(
        "--workdir", help="where the random-weight checkpoints and exports go (default: a temp dir)"
    )
    p.add_argument("--json", default=str(ROOT / "bench" / "results" / "engines.json"), help="output JSON")
    args = p.parse_intermixed_args(argv)
    if "torch" not in args.rows:
        args.rows.insert(0, "torch")  # the reference of every ratio
    bf16 = native_bf16(torch.device("cpu"))
    args.rows = [r for r in args.rows if bf16 or "bf16" not in r]
    args.rows = [r for r in args.rows if all(available(e) for e in ("onnxruntime", "openvino") if e in r)]
    return args


def main(argv: Sequence[str] | None = None) -> dict:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-engines-", dir=args.workdir) as tmp:
        for name in args.models:
            backbone, geometry = MODELS[name]
            cfg = model_config("fcn8s", geometry, backbone)
            scene, mask = make_scene(args.size, seed=0)
            model = make_model(cfg, torch.device("cpu"), scene)
            path = Path(tmp) / f"{name}.pt"
            save_checkpoint(
                {"version": 1, "model": model.state_dict(), "iteration": 0, "config": to_dict(cfg)}, path
            )
            del model
            calibration = [make_scene(args.size, seed=s)[0] for s in (1, 2)]
            label = f"FCN-8s {name} ({geometry} geometry), {args.size}x{args.size}, random weights"
            results.append(
                bench_model(label, path, [], args.rows, [scene], [mask], calibration, args.rounds, 21)
            )
            path.unlink()
        for checkpoint in args.checkpoint:
            from fcn.data import build_dataset
            from fcn.data.transforms import build_transforms
            from fcn.inference.loading import load_model

            _, cfg = load_model(checkpoint, "cpu")
            dataset = build_dataset(
                cfg.data.val, cfg.data, transforms=build_transforms(cfg.data.transforms, train=False)
            )
            count = min(args.limit, len(dataset)) if args.limit > 0 else len(dataset)
            items = [dataset[i] for i in range(count)]
            images, masks = [x[None] for x, _ in items], [m[None] for _, m in items]
            calibration = images[: int(cfg.eval.calibration_images)]
            label = f"{checkpoint} ({cfg.model.arch} {cfg.model.backbone}), {count} validation images"
            results.append(
                bench_model(
                    label, Path(checkpoint), [], args.rows, images, masks, calibration, args.rounds,
                    int(cfg.model.num_classes),
                )
            )  # fmt: skip
    import onnxruntime

    versions = {"onnxruntime": onnxruntime.__version__}
    if available("openvino"):
        import openvino

        versions["openvino"] = openvino.__version__
    flags = " ".join(
        sorted(f for f in cpu_flags() if f.startswith(("avx2", "avx512f", "avx512_bf16", "amx")))
    )
    print(
        f"CPU flags {flags}; torch {torch.__version__}, {versions}; {args.threads} threads; "
        f"load average {load_average()}"
    )
    result = {"models": results, "versions": versions, "machine": machine_info(torch.device("cpu"))}
    write_json(args.json, result)
    print(f"wrote {args.json}")
    return result


if __name__ == "__main__":
    main()
