"""Whole-image vs sliding-window labels of a trained checkpoint on a VOC-layout dataset's validation
images and on mosaics of them: the share of pixels with the same label, and the mean IU of each.

The toy data's images are 96 x 96: a tile at least that large is one window and gives the whole-image
labels bit for bit; smaller tiles split them. The mosaics (4 x 4 validation images, 384 x 384 for the
toy data) show the seams on images larger than the tile, as a photo is.

    python -m bench.slide_agreement --checkpoint runs/toy/checkpoints/best.pt --root data/toy

Prints one line per image set and tile/stride (eval.max_memory=none: eval.mode as asked).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image

from fcn import Segmenter


def mean_iou(preds, truths, classes: int) -> float:
    """Return the nan-mean IU over classes of predictions against ground truths (255 ignored)."""
    hist = np.zeros((classes, classes), np.int64)
    for p, t in zip(preds, truths):
        keep = t < classes
        hist += np.bincount(classes * t[keep].astype(int) + p[keep], minlength=classes**2).reshape(
            classes, classes
        )
    with np.errstate(invalid="ignore", divide="ignore"):
        iu = np.diag(hist) / (hist.sum(0) + hist.sum(1) - np.diag(hist))
    return float(np.nanmean(iu))


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m bench.slide_agreement", description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--root", required=True, help="dataset root with JPEGImages/val_* and SegmentationClass/")
    p.add_argument("--windows", type=int, nargs="+", default=[64, 43, 48, 32, 128, 85], metavar="TILE STRIDE")
    args = p.parse_args()
    paths = sorted(Path(args.root, "JPEGImages").glob("val_*.jpg"))
    images = [np.asarray(Image.open(f).convert("RGB")) for f in paths]
    truths = [np.asarray(Image.open(Path(args.root, "SegmentationClass", f.stem + ".png"))) for f in paths]
    groups = range(0, len(images) - 15, 16)
    mosaic = lambda items, i: np.vstack([np.hstack(items[i + 4 * r : i + 4 * r + 4]) for r in range(4)])  # noqa: E731
    sets = [
        (f"{len(images)} validation images", images, truths),
        (
            f"{len(groups)} mosaics of 4 x 4",
            [mosaic(images, i) for i in groups],
            [mosaic(truths, i) for i in groups],
        ),
    ]
    whole = Segmenter.from_checkpoint(args.checkpoint, device="cpu", overrides=["eval.max_memory=none"])
    classes = whole.num_classes
    for name, data, truth in sets:
        wholes = [whole(x) for x in data]
        print(f"{name}: whole mean IU {100 * mean_iou(wholes, truth, classes):.2f}", flush=True)
        for tile, stride in zip(args.windows[::2], args.windows[1::2]):
            slide = Segmenter.from_checkpoint(
                args.checkpoint,
                device="cpu",
                mode="slide",
                tile=tile,
                stride=stride,
                overrides=["eval.max_memory=none"],
            )
            slid = [slide(x) for x in data]
            agree = np.mean([np.mean(a == b) for a, b in zip(wholes, slid)])
            print(
                f"  slide {tile}/{stride}: {100 * agree:.2f}% of pixels agree, mean IU {100 * mean_iou(slid, truth, classes):.2f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
