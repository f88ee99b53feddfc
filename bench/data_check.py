"""Dataset checker throughput: pairs/s of `python -m fcn.data.check` against decoding the same files.

Generates --pairs 500x375 JPEG + palette-PNG pairs (bench/data_loading.py's photo-like images, VOC's commonest
size) in VOC folder layout in a temporary directory (4/5 train, 1/5 val), then times in interleaved
rounds, fastest round counting: 'decode only' (PIL open + load of every image and mask in this one
process: the floor any checker pays) and the checker's whole main() (config, listing, reading in
data.num_workers processes, report) with 0, 1 and 2 workers. Wall time: workers run in processes
of their own.

    python -m bench.data_check [--pairs 400] [--rounds 3]

Prints a table and writes bench/results/data_check.json.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import tempfile
from pathlib import Path
from typing import Sequence

import torch
from PIL import Image

from bench.common import cpu_info, load_average, markdown_table, time_interleaved, write_json
from bench.data_loading import HEIGHT, WIDTH, make_images
from fcn.data import VOC_CLASSES
from fcn.data.check import main as check_main

ROOT = Path(__file__).resolve().parents[1]

WORKERS = (0, 1, 2)


def make_voc_folder(root: Path, count: int) -> list[tuple[Path, Path]]:
    """Write count pairs in VOC folder layout with train.txt (4/5) and val.txt (1/5); return the pairs."""
    flat = root / "flat"
    flat.mkdir()
    for sub in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (root / sub).mkdir(parents=True)
    pairs = []
    for jpg, png in make_images(flat, count):
        pairs.append(
            (jpg.rename(root / "JPEGImages" / jpg.name), png.rename(root / "SegmentationClass" / png.name))
        )
    ids = [jpg.stem for jpg, _ in pairs]
    split = len(ids) * 4 // 5
    (root / "ImageSets/Segmentation/train.txt").write_text("\n".join(ids[:split]) + "\n")
    (root / "ImageSets/Segmentation/val.txt").write_text("\n".join(ids[split:]) + "\n")
    return pairs


def write_config(path: Path, root: Path) -> None:
    """Write the config a user would check this dataset with (VOC's 21 classes: its labels are 0..20)."""
    path.write_text(
        "data:\n"
        f"  train: {{name: folder, root: '{root}', split: train}}\n"
        f"  val: {{name: folder, root: '{root}', split: val}}\n"
        f"  classes: [{', '.join(VOC_CLASSES)}]\n"
    )


def decode_only(pairs: Sequence[tuple[Path, Path]]) -> int:
    """Decode every image and mask once in this process (no checks); return the pairs decoded."""
    for jpg, png in pairs:
        for path in (jpg, png):
            with Image.open(path) as img:
                img.load()
    return len(pairs)


def run_checker(config: Path, workers: int) -> int:
    """Run the checker's main() with `workers` processes, its report discarded; return its exit code."""
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        return check_main(["--config", str(config), f"data.num_workers={workers}"])


def main(argv: Sequence[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m bench.data_check", description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=400, help="generated image/mask pairs")
    parser.add_argument("--rounds", type=int, default=3, help="rounds; the fastest of each variant counts")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "data_check.json"))
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        root, config = Path(tmp) / "data", Path(tmp) / "check.yml"
        root.mkdir()
        pairs = make_voc_folder(root, args.pairs)
        write_config(config, root)
        decode_only(pairs)  # warm the page cache: every variant then reads from memory
        fns = {"decode only": lambda: decode_only(pairs)}
        fns.update({f"checker, {w} workers": (lambda w=w: run_checker(config, w)) for w in WORKERS})
        times, results = time_interleaved(fns, {name: args.rounds for name in fns}, torch.device("cpu"))
    for w in WORKERS:
        code = results[f"checker, {w} workers"]
        if code != 0:
            raise SystemExit(f"the checker exited {code} on the generated data with {w} workers")

    best = {name: min(t) for name, t in times.items()}
    rate = {name: args.pairs / seconds for name, seconds in best.items()}
    base = rate["decode only"]
    rows = [[name, f"{best[name]:.2f}", f"{rate[name]:.0f}", f"{rate[name] / base:.2f}x"] for name in fns]
    print(
        f"{args.pairs} pairs of {WIDTH}x{HEIGHT} JPEG + palette PNG, fastest of {args.rounds} rounds, "
        f"{os.cpu_count()} CPUs, load average {load_average()}"
    )
    print(markdown_table(["variant", "s", "pairs/s", "vs decode only"], rows))
    report = {
        "pairs": args.pairs,
        "image_size": [HEIGHT, WIDTH],
        "rounds": args.rounds,
        "cpu": cpu_info()["model"],
        "cpu_count": os.cpu_count(),
        "load_average": load_average(),  # other work skews timings
        "results": [
            {
                "variant": name,
                "seconds": best[name],
                "pairs_per_s": rate[name],
                "vs_decode_only": rate[name] / base,
            }
            for name in fns
        ],
    }
    write_json(args.out, report)
    print(f"wrote {args.out}")
    return report


if __name__ == "__main__":
    main()
