"""Data-pipeline throughput: images/s per worker process for each transform preset.

Generates 500x375 JPEGs with palette-PNG masks (the size of most PASCAL VOC images) into a temporary
directory, then times, in this one process with one torch thread (as a DataLoader worker runs), the
load (JPEG + PNG decode, as the datasets do) plus the transform of each preset, in CPU time per image
(what a worker with a core of its own spends; wall time is shown too). From the rate it states how
many worker processes keep a model running at --step-rate images/s fed.

    python -m bench.data_loading [--step-rate 20] [--images 48] [--seconds 3]
    python -m bench.data_loading --layouts-only [--layout-images 200 --layout-size 256]

Then the same toy images (fcn.data.toy) in VOC layout and as COCO JSON, read as training reads them
(decode only, no transform), epoch after epoch: COCO's first epoch rasterises each mask and writes
it to the cache beside the JSON; later epochs read the cached PNGs, as the VOC layout reads its own.

Prints tables and writes bench/results/data.json.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFilter

from bench.common import load_average
from fcn.config import load_config
from fcn.data.transforms import build_transforms

WIDTH, HEIGHT = 500, 375  # the commonest PASCAL VOC image size
TARGET = 150  # images/s per worker for the 'standard' preset (issue 8)

# name, train, config overrides
PRESETS = [
    ("paper", True, ["data.transforms.preset=paper", "data.batch_size=1"]),
    ("standard", True, ["data.transforms.preset=standard"]),
    (
        "standard scale 0.5-2 jitter 0.4",
        True,
        [
            "data.transforms.preset=standard",
            "data.transforms.scale_min=0.5",
            "data.transforms.scale_max=2.0",
            "data.transforms.color_jitter=0.4",
        ],
    ),
    ("eval", False, []),
]


def make_images(root: Path, count: int, seed: int = 0) -> list[tuple[Path, Path]]:
    """Write count photo-like JPEGs and VOC-style palette PNG masks; return their paths."""
    rng = np.random.default_rng(seed)
    palette = rng.integers(0, 256, (256, 3), dtype=np.uint8)
    palette[255] = (224, 224, 192)
    pairs = []
    for i in range(count):
        # Smooth background (low-resolution noise, upsampled), then a few shapes and sensor noise.
        low = rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)
        image = Image.fromarray(low).resize((WIDTH, HEIGHT), Image.BICUBIC)
        mask = Image.new("L", (WIDTH, HEIGHT), 0)
        draw_img, draw_mask = ImageDraw.Draw(image), ImageDraw.Draw(mask)
        for _ in range(int(rng.integers(1, 5))):
            x0, y0 = int(rng.integers(0, WIDTH - 60)), int(rng.integers(0, HEIGHT - 60))
            x1, y1 = x0 + int(rng.integers(40, 250)), y0 + int(rng.integers(40, 200))
            label = int(rng.integers(1, 21))
            colour = tuple(int(c) for c in rng.integers(0, 256, 3))
            # VOC masks outline objects with a 255 (void) border about 5 px wide.
            draw_mask.ellipse((x0, y0, x1, y1), fill=255)
            draw_mask.ellipse((x0 + 3, y0 + 3, x1 - 3, y1 - 3), fill=label)
            draw_img.ellipse((x0, y0, x1, y1), fill=colour)
        pixels = np.asarray(image.filter(ImageFilter.GaussianBlur(1.5)), dtype=np.int16)
        pixels = np.clip(pixels + rng.normal(0, 6, pixels.shape), 0, 255).astype(np.uint8)
        jpg, png = root / f"{i:04d}.jpg", root / f"{i:04d}.png"
        Image.fromarray(pixels).save(jpg, quality=90)
        mask.putpalette(palette.tobytes())
        mask.save(png)
        pairs.append((jpg, png))
    return pairs


def load(pair: tuple[Path, Path]) -> tuple[Image.Image, np.ndarray]:
    """Return (RGB image, uint8 mask) as a dataset item is read from disk."""
    with Image.open(pair[0]) as image:
        rgb = image.convert("RGB")
    with Image.open(pair[1]) as mask:
        return rgb, np.asarray(mask)


def time_preset(transform, pairs, seconds: float) -> dict:
    """Return images/s (from this process's CPU time, and from wall time) and per-image milliseconds.

    CPU time is what one worker process with a core of its own spends per image; on a shared
    machine the wall time also counts the moments other processes held the core.
    """
    for pair in pairs[:4]:  # warm-up
        item = load(pair)
        if transform is not None:
            transform(*item)
    decode = work = 0.0
    count = 0
    wall = time.perf_counter()
    while time.perf_counter() - wall < seconds or count < len(pairs):
        pair = pairs[count % len(pairs)]
        t0 = time.process_time()
        item = load(pair)
        t1 = time.process_time()
        if transform is not None:
            transform(*item)
        t2 = time.process_time()
        decode, work, count = decode + t1 - t0, work + t2 - t1, count + 1
    wall = time.perf_counter() - wall
    return {
        "images_per_s": count / (decode + work),
        "wall_images_per_s": count / wall,
        "decode_ms": 1e3 * decode / count,
        "transform_ms": 1e3 * work / count,
        "images": count,
    }


def time_layouts(images: int, size: int, epochs: int) -> list[dict]:
    """Return images/s (CPU and wall) of each epoch of reading the toy data in VOC layout and as COCO JSON."""
    from fcn.data import CocoSegmentation, FolderSegmentation
    from fcn.data.toy import TOY_CLASSES, TOY_PALETTE, generate

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        voc, coco = Path(tmp) / "voc", Path(tmp) / "coco"
        generate(voc, n_train=images, n_val=1, size=size, workers=1)
        generate(coco, n_train=images, n_val=1, size=size, workers=1, fmt="coco")
        classes = list(TOY_CLASSES)
        for name, make in (
            ("voc", lambda: FolderSegmentation(voc, "train", TOY_PALETTE, num_classes=len(classes))),
            (
                "coco",
                lambda: CocoSegmentation(
                    coco / "annotations" / "train.json", coco / "images", classes, None, "ignore", "last"
                ),
            ),
        ):
            for epoch in range(1, epochs + 1):
                cpu, wall = time.process_time(), time.perf_counter()
                dataset = make()  # listing (and the JSON's parse and checksum) counts, as each run pays it
                for index in range(len(dataset)):
                    dataset[index]
                cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
                rows.append(
                    {
                        "layout": name,
                        "epoch": epoch,
                        "images_per_s": images / cpu,
                        "wall_images_per_s": images / wall,
                    }
                )
    return rows


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m bench.data_loading", description=__doc__.splitlines()[0])
    parser.add_argument("--step-rate", type=float, default=20.0, help="model images/s to keep fed")
    parser.add_argument("--images", type=int, default=48, help="distinct generated images")
    parser.add_argument("--seconds", type=float, default=2.0, help="timing per preset and round")
    parser.add_argument(
        "--rounds", type=int, default=3, help="rounds; the fastest round of each preset counts"
    )
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent / "results" / "data.json"))
    parser.add_argument(
        "--layout-images", type=int, default=200, help="toy images for VOC layout vs COCO JSON"
    )
    parser.add_argument("--layout-size", type=int, default=256, help="side of those toy images")
    parser.add_argument("--layout-epochs", type=int, default=3, help="epochs read per layout")
    parser.add_argument("--layouts-only", action="store_true", help="only VOC layout vs COCO JSON")
    args = parser.parse_args(argv)

    torch.set_num_threads(1)  # a DataLoader worker process runs with one torch thread
    layouts = time_layouts(args.layout_images, args.layout_size, args.layout_epochs)
    print(
        f"toy data, {args.layout_images} images {args.layout_size}x{args.layout_size}, read as training reads "
        f"them (no transform), 1 process, load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs"
    )
    print(f"{'layout':8s} {'epoch':>5s} {'img/s':>8s} {'wall img/s':>11s}")
    for row in layouts:
        print(
            f"{row['layout']:8s} {row['epoch']:5d} {row['images_per_s']:8.1f} {row['wall_images_per_s']:11.1f}"
        )
    print(
        "coco epoch 1 rasterises every mask and caches it as a PNG beside the JSON; later epochs read the cache"
    )
    if args.layouts_only:
        report = {"layouts": layouts, "layout_image_size": args.layout_size, "load_average": load_average()}
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {out}")
        return report
    with tempfile.TemporaryDirectory() as tmp:
        pairs = make_images(Path(tmp), args.images)
        presets = [("decode only", None)] + [
            (name, build_transforms(load_config(overrides=overrides).data.transforms, train=train))
            for name, train, overrides in PRESETS
        ]
        # Rounds interleave the presets so that a burst of load from other processes does not
        # fall on one preset only; the fastest round of each is the least disturbed measurement.
        best: dict[str, dict] = {}
        for _ in range(args.rounds):
            for name, transform in presets:
                r = time_preset(transform, pairs, args.seconds)
                if name not in best or r["images_per_s"] > best[name]["images_per_s"]:
                    best[name] = r
        rows = [(name, best[name]) for name, _ in presets]

    crop = load_config().data.transforms.crop_size
    print(
        f"{WIDTH}x{HEIGHT} JPEG + PNG mask, crop {crop}, 1 process, 1 torch thread, "
        f"fastest of {args.rounds} rounds, load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs"
    )
    print(
        f"{'preset':34s} {'img/s/worker':>12s} {'decode ms':>10s} {'transform ms':>13s} "
        f"{'workers':>8s} {'wall img/s':>11s}"
    )
    results = []
    for name, r in rows:
        workers = math.ceil(args.step_rate / r["images_per_s"])
        print(
            f"{name:34s} {r['images_per_s']:12.1f} {r['decode_ms']:10.2f} {r['transform_ms']:13.2f} "
            f"{workers:8d} {r['wall_images_per_s']:11.1f}"
        )
        results.append({"preset": name, **r, "workers_needed": workers})
    print(
        f"img/s/worker from CPU time per image (load + transform); workers = processes needed to feed "
        f"{args.step_rate:g} images/s; wall img/s includes time other processes held the core"
    )
    standard = best["standard"]["images_per_s"]
    verdict = "met" if standard >= TARGET else f"missed by {100 * (1 - standard / TARGET):.0f}%"
    print(f"target: 'standard' >= {TARGET} images/s per worker: {standard:.0f}, {verdict}")

    report = {
        "image_size": [HEIGHT, WIDTH],
        "crop_size": crop,
        "step_rate": args.step_rate,
        "rounds": args.rounds,
        "target_standard_images_per_s": TARGET,
        "torch": torch.__version__,
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "load_average": load_average(),  # other work skews timings
        "results": results,
        "layouts": layouts,
        "layout_image_size": args.layout_size,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {out}")
    return report


if __name__ == "__main__":
    main()
