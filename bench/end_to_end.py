"""What users wait for: whole commands, process start to exit, for each fast path, beside the lower
bound of the same run (``python -c "import torch"`` + the network's forwards alone).

On a folder of generated 500x500 JPEGs (natural-looking scenes) and a ResNet-18 FCN-8s checkpoint
(random weights unless --checkpoint names one: the times do not depend on the weights):

- predict.py over the folder (process wall), the same writing only the class-index PNGs (``--outputs
  mask``), and over one image (start-up to the first image);
- evaluate.py over the same images as a VOC-layout folder with masks, --save-predictions;
- Segmenter per image (in one process: read, forward, argmax; median);
- predict_files one after another (pipeline=False) against pipelined, its writing threads at lower
  priority (fcn.core.pipeline.WRITE_NICE) and at the network's (in one process, so the ratios are
  the pipeline's alone);
- the lower bound: ``python -c "import torch"`` + the forwards of the same images on that fast
  path (in one process, after a warm-up, median of rounds x the image count).

Variants run in interleaved rounds, so that load from other processes falls on all alike; compare
ratios within a run. On a GPU (--device cuda) the same table.

    python -m bench.end_to_end                        # none and auto, 24 images, 3 rounds
    python -m bench.end_to_end --fast-paths none auto winograd --engines onnxruntime --rounds 5
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image

from bench.common import machine_info, markdown_table, write_json

ROOT = Path(__file__).resolve().parents[1]

CLASSES = ["background", "circle", "square", "triangle"]


def make_checkpoint(path: Path) -> None:
    """Write a ResNet-18 FCN-8s checkpoint (4 classes, random weights) as train.py would."""
    from fcn.config import load_config, to_dict
    from fcn.core.checkpoint import save_checkpoint, weights_checkpoint
    from fcn.models import build_model

    cfg = load_config(
        overrides=[
            "model.arch=fcn8s",
            "model.backbone=resnet18",
            "model.geometry=same",
            "model.pretrained=false",
            f"data.classes=[{','.join(CLASSES)}]",
        ]
    )
    torch.manual_seed(0)
    save_checkpoint(weights_checkpoint(model=build_model(cfg.model), config=to_dict(cfg)), path)


def make_images(root: Path, count: int, size: int, scenes: str = "photo") -> list[Path]:
    """Write count JPEGs of size x size and a VOC-layout folder of the same images with masks; return
    the JPEG paths. scenes: 'photo', shapes on a smooth background with sensor noise (its PNGs
    compress as photos do); 'toy', fcn.data.toy's scenes (what train.py's toy checkpoint learnt)."""
    from fcn.data.toy import make_sample

    rng = np.random.default_rng(0)
    sample = make_sample if scenes == "toy" else _photo_sample
    jpegs = root / "JPEGImages"
    masks = root / "SegmentationClass"
    sets = root / "ImageSets" / "Segmentation"
    for d in (jpegs, masks, sets):
        d.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        image, mask = sample(rng, size)
        path = jpegs / f"img_{i:03d}.jpg"
        Image.fromarray(image).save(path, quality=90)
        Image.fromarray(mask).save(masks / f"img_{i:03d}.png")
        paths.append(path)
    (sets / "val.txt").write_text("".join(f"{p.stem}\n" for p in paths))
    (root / "classes.txt").write_text("\n".join(CLASSES) + "\n")
    return paths


def _photo_sample(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Return (image, mask) as uint8 arrays: five discs of CLASSES' labels on a smooth gradient
    with sensor noise."""
    from PIL import ImageDraw

    yy, xx = np.mgrid[0:size, 0:size] / size
    base = np.stack([80 + 60 * xx, 90 + 50 * yy, 120 + 40 * xx * yy], -1)
    noisy = base + rng.normal(0, 8, base.shape)
    image = Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8))
    mask = Image.new("L", (size, size), 0)
    for _ in range(5):
        r = int(rng.integers(size // 16, size // 4))
        x, y = (int(v) for v in rng.integers(0, size - r, 2))
        label = int(rng.integers(1, len(CLASSES)))
        colour = tuple(int(v) for v in rng.integers(0, 255, 3))
        box = [x, y, x + r, y + r]
        ImageDraw.Draw(image).ellipse(box, fill=colour)
        ImageDraw.Draw(mask).ellipse(box, fill=label)
    return np.asarray(image), np.asarray(mask)


def process_seconds(args: Sequence[str]) -> float:
    """Return the wall time of one Python process running args (it must exit 0)."""
    env = dict(
        os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    )
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(
            f"{' '.join(args[:3])} ... failed ({proc.returncode}): {proc.stderr.strip()[-400:]}"
        )
    return seconds


def path_flags(variant: str) -> list[str]:
    """Return predict.py/evaluate.py's flags of a variant: a fast path, or engine:<name>."""
    if variant.startswith("engine:"):
        return ["--engine", variant.split(":", 1)[1], "--fast-path", "none"]
    return ["--fast-path", variant]


def in_process(
    checkpoint: Path, images: list[Path], variant: str, device: str, rounds: int, out: Path
) -> dict:
    """Return the in-process times of a variant: forward-only per image (the lower bound's part),
    Segmenter per image, and predict_files one after another vs pipelined (seconds for the folder)."""
    import fcn.core.pipeline as pipeline_module
    from fcn.api import Segmenter
    from fcn.core.runtime import amp_forward, autocast
    from fcn.files import predict_files

    kwargs = (
        dict(engine=variant.split(":", 1)[1], fast_path="none")
        if variant.startswith("engine:")
        else dict(fast_path=variant)
    )
    seg = Segmenter.from_checkpoint(checkpoint, device=device, **kwargs)
    pictures = [seg.read(p) for p in images]
    seg.calibrate(pictures)
    inputs = [seg._input(p) for p in pictures]
    e = seg.cfg.eval

    def forwards() -> None:
        with torch.inference_mode(), autocast(seg.device, e.amp):
            for x in inputs:
                x = x.contiguous(memory_format=torch.channels_last) if e.channels_last else x
                amp_forward(seg.model, x)  # as the Segmenter calls it (weights cast once)
        if seg.device.type == "cuda":
            torch.cuda.synchronize(seg.device)

    def segmenter() -> None:
        for p in images:
            seg(str(p))

    def files(pipeline: bool, nice: int = pipeline_module.WRITE_NICE) -> None:
        default, pipeline_module.WRITE_NICE = pipeline_module.WRITE_NICE, nice
        try:
            predict_files(
                seg, images, out / f"{pipeline}", progress=False, log=lambda line: None, pipeline=pipeline
            )
        finally:
            pipeline_module.WRITE_NICE = default

    forwards()  # warm-up (oneDNN primitives, an engine's first run)
    times: dict[str, list[float]] = {
        n: [] for n in ("forward", "segmenter", "sequential", "pipelined", "nice0")
    }
    for _ in range(rounds):
        for name, fn in (
            ("forward", forwards),
            ("segmenter", segmenter),
            ("sequential", lambda: files(False)),
            ("pipelined", lambda: files(True)),
            ("nice0", lambda: files(True, 0)),  # writers at the network's priority
        ):
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    same = all(
        (out / "True" / p.name).read_bytes() == (out / "False" / p.name).read_bytes()
        for p in (out / "False").iterdir()
    )
    result = {name: statistics.median(values) for name, values in times.items()}
    result["runs"] = seg.fast_path if seg.engine == "torch" else f"{seg.engine} ({seg.fast_path})"
    result["pipelined_same_bytes"] = same
    return result


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.end_to_end", description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", type=Path, help="a checkpoint (default: a random ResNet-18 FCN-8s)")
    p.add_argument("--images", type=int, default=24, help="how many JPEGs (default 24)")
    p.add_argument("--size", type=int, default=500, help="their side in pixels (default 500)")
    p.add_argument(
        "--scenes",
        choices=["photo", "toy"],
        default="photo",
        help="photo: shapes on a noisy background, compressing as photos do (default); toy: "
        "fcn.data.toy's scenes, for train.py's toy checkpoint (--checkpoint runs/toy/checkpoints/best.pt)",
    )
    p.add_argument("--fast-paths", nargs="+", default=["none", "auto"], help="eval.fast_path values to time")
    p.add_argument("--engines", nargs="*", default=[], help="engines to time as well (onnxruntime, openvino)")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds (medians are reported)")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--json", type=Path, default=ROOT / "bench" / "results" / "end_to_end.json")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> dict:
    args = parse_args(argv)
    variants = [*args.fast_paths, *(f"engine:{e}" for e in args.engines)]
    with tempfile.TemporaryDirectory(prefix="fcn-e2e-") as tmp:
        tmp = Path(tmp)
        checkpoint = args.checkpoint or tmp / "best.pt"
        if args.checkpoint is None:
            make_checkpoint(checkpoint)
        images = make_images(tmp / "data", args.images, args.size, args.scenes)
        common = ["--checkpoint", str(checkpoint), "--device", args.device, "--no-progress"]
        for variant in variants:  # an engine's ONNX export is written once, before timing
            process_seconds(["predict.py", *common, *path_flags(variant), "--input", str(images[0]),
                             "--output", str(tmp / "warm")])  # fmt: skip
        evaluate_data = ["data.val.name=folder", f"data.val.root={tmp / 'data'}", "data.val.split=val"]
        walls: dict[str, dict[str, list[float]]] = {
            v: {"predict": [], "masks": [], "first": [], "evaluate": []} for v in variants
        }
        torch_import: list[float] = []
        for r in range(args.rounds):
            torch_import.append(process_seconds(["-c", "import torch"]))
            for variant in variants:
                flags = [*common, *path_flags(variant)]
                w = walls[variant]
                out = tmp / f"out_{r}"
                w["predict"].append(
                    process_seconds(["predict.py", *flags, "--input", str(images[0].parent), "--output", str(out / variant)])
                )  # fmt: skip
                w["masks"].append(
                    process_seconds(["predict.py", *flags, "--input", str(images[0].parent), "--output", str(out / f"{variant}_masks"),
                                     "--outputs", "mask"])
                )  # fmt: skip
                w["first"].append(
                    process_seconds(["predict.py", *flags, "--input", str(images[0]), "--output", str(out / "first")])
                )  # fmt: skip
                w["evaluate"].append(
                    process_seconds(["evaluate.py", *flags, "--output", str(out / "eval.json"),
                                     "--save-predictions", str(out / "preds"), *evaluate_data])
                )  # fmt: skip
        inside = {
            v: in_process(checkpoint, images, v, args.device, args.rounds, tmp / f"in_{v}") for v in variants
        }
    base = statistics.median(torch_import)
    rows, records = [], []
    none = "none" if "none" in variants else variants[0]
    for variant in variants:
        w = {k: statistics.median(v) for k, v in walls[variant].items()}
        i = inside[variant]
        bound = base + i["forward"]
        record = {
            "variant": variant,
            "runs": i["runs"],
            "import_torch_s": base,
            "forwards_s": i["forward"],
            "lower_bound_s": bound,
            "predict_s": w["predict"],
            "predict_vs_bound": w["predict"] / bound,
            "predict_masks_s": w["masks"],
            "predict_masks_vs_bound": w["masks"] / bound,
            "first_image_s": w["first"],
            "evaluate_s": w["evaluate"],
            "segmenter_ms": 1e3 * i["segmenter"] / len(images),
            "files_sequential_s": i["sequential"],
            "files_pipelined_s": i["pipelined"],
            "files_pipelined_nice0_s": i["nice0"],
            "pipelined_same_bytes": i["pipelined_same_bytes"],
        }
        records.append(record)
    by = {r["variant"]: r for r in records}
    for r in records:
        rows.append(
            [
                r["variant"],
                r["runs"],
                f"{r['import_torch_s']:.2f} + {r['forwards_s']:.2f} = {r['lower_bound_s']:.2f}",
                f"{r['predict_s']:.2f}",
                f"{r['predict_vs_bound']:.2f}x",
                f"{by[none]['predict_s'] / r['predict_s']:.2f}x",
                f"{r['predict_masks_s']:.2f} ({r['predict_masks_vs_bound']:.2f}x)",
                f"{r['first_image_s']:.2f}",
                f"{r['evaluate_s']:.2f}",
                f"{r['segmenter_ms']:.0f}",
                f"{by[none]['segmenter_ms'] / r['segmenter_ms']:.2f}x",
                f"{r['files_sequential_s']:.2f} / {r['files_pipelined_s']:.2f} / {r['files_pipelined_nice0_s']:.2f}"
                + ("" if r["pipelined_same_bytes"] else " (bytes differ!)"),
            ]
        )
    headers = [
        "variant",
        "runs",
        "bound: import torch + forwards s",
        "predict.py s",
        "vs bound",
        f"vs {none}",
        "--outputs mask s (vs bound)",
        "1 image s",
        "evaluate.py s",
        "Segmenter ms/img",
        f"vs {none}",
        "files seq / piped / piped nice 0 s",
    ]
    print(f"{len(images)} JPEGs of {args.size}x{args.size} ({args.scenes} scenes), "
          f"{args.checkpoint or 'ResNet-18 FCN-8s (random weights)'}, device {args.device}, "
          f"medians of {args.rounds} interleaved rounds")  # fmt: skip
    print(markdown_table(headers, rows))
    result = {
        "machine": machine_info(torch.device(args.device)),
        "images": len(images),
        "scenes": args.scenes,
        "checkpoint": str(args.checkpoint or "random ResNet-18 FCN-8s"),
        "rows": records,
    }
    write_json(args.json, result)
    return result


if __name__ == "__main__":
    main()
