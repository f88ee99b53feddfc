"""predict.py's files: the inputs listed (files as given, directories' images sorted by name), one
distinct output name per input, and per image a class-index PNG, colour mask, overlay and legend
written by a fcn.api.Segmenter (a binary or multilabel model: 0/255 masks and an overlay)."""

from __future__ import annotations

import functools
import io
import os
import sys
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np
from PIL import Image

from fcn.api import Segmenter
from fcn.core.files import atomic_write
from fcn.core.visualize import legend, save_index_png, save_png
from fcn.inference.budget import MemoryBudgetError

IMAGE_SUFFIXES = (
    ".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm", ".npy"
)  # fmt: skip
"""Files a directory given to predict.py contributes (other files in it are skipped)."""


def list_images(inputs: Iterable[str | os.PathLike]) -> tuple[list[Path], list[str]]:
    """Return (image files, errors): each input file as given, each directory's image files sorted
    by name; a missing input becomes an error line naming it."""
    files: list[Path] = []
    errors: list[str] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            found = sorted(f for f in p.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                errors.append(f"{p}: no image files ({', '.join(IMAGE_SUFFIXES)}) in this directory")
            files.extend(found)
        elif p.is_file():
            files.append(p)
        else:
            errors.append(f"{p}: no such file or directory")
    return files, errors


def output_stems(files: Sequence[Path]) -> list[str]:
    """Return one distinct output name per file: its stem, or stem_ext / stem_N on a clash."""
    counts: dict[str, int] = {}
    for f in files:
        counts[f.stem] = counts.get(f.stem, 0) + 1
    used: set[str] = set()
    stems = []
    for f in files:
        stem = f.stem if counts[f.stem] == 1 else f"{f.stem}_{f.suffix.lstrip('.').lower() or 'noext'}"
        base, n = stem, 1
        while stem in used:
            n += 1
            stem = f"{base}_{n}"
        used.add(stem)
        stems.append(stem)
    return stems


OUTPUTS = ("mask", "color", "overlay", "legend")
"""What predict.py can write per image (--outputs; all by default): mask = <stem>.png, the class
indices (a binary or multilabel model: its 0/255 masks), color = <stem>_color.png, overlay =
<stem>_overlay.png, legend = <stem>_legend.png. A binary or multilabel model has no color or legend."""


def check_outputs(outputs: Sequence[str], task: str) -> tuple[str, ...]:
    """Return outputs in OUTPUTS' order, or raise ValueError naming what cannot be written."""
    unknown = [o for o in outputs if o not in OUTPUTS]
    if unknown or not outputs:
        raise ValueError(f"--outputs {' '.join(outputs)}: choose one or more of {', '.join(OUTPUTS)}")
    if task != "multiclass" and not {"mask", "overlay"} & set(outputs):
        raise ValueError(
            f"--outputs {' '.join(outputs)}: a {task} model writes mask and overlay only (no color, no legend)"
        )
    return tuple(o for o in OUTPUTS if o in outputs)


def output_names(stem: str, outputs: Sequence[str], task: str, classes: Sequence[str]) -> list[str]:
    """Return the names of the files predict_files writes for one image of output name stem:
    write_outputs' (multiclass) or write_sigmoid_outputs' (binary, multilabel: one mask per class)."""
    if task == "multiclass":
        names = {"mask": f"{stem}.png", "color": f"{stem}_color.png", "overlay": f"{stem}_overlay.png"}
        return [names.get(kind, f"{stem}_legend.png") for kind in outputs]
    masks = [f"{stem}.png"] if task == "binary" else [f"{stem}_{name}.png" for name in classes]
    return [*(masks if "mask" in outputs else []), *([f"{stem}_overlay.png"] if "overlay" in outputs else [])]


def share_of(
    files: Sequence[Path],
    output_dir: str | os.PathLike,
    *,
    rank: int = 0,
    world_size: int = 1,
    resume: bool = False,
    outputs: Sequence[str] = OUTPUTS,
    task: str = "multiclass",
    classes: Sequence[str] = (),
) -> tuple[list[Path], list[str], int]:
    """Return (files, their output names, how many were skipped) that process `rank` of world_size
    segments: every world_size-th file from the rank-th, each named as output_stems names it among
    all the files (so the outputs are the one process's, whatever the number of processes); with
    resume, less those whose files (output_names) all exist in output_dir already: each is written
    atomically (fcn.core.files.atomic_write), so a file that exists is whole."""
    jobs = list(zip(files, output_stems(files)))[rank::world_size]
    if resume:
        out = Path(output_dir)
        left = [
            (f, s)
            for f, s in jobs
            if not all((out / n).is_file() for n in output_names(s, outputs, task, classes))
        ]
        skipped, jobs = len(jobs) - len(left), left
    else:
        skipped = 0
    return [f for f, _ in jobs], [s for _, s in jobs], skipped


def write_outputs(
    segmenter: Segmenter,
    image: Any,
    mask: np.ndarray,
    out: Path,
    stem: str,
    alpha: float = 0.5,
    durable: bool = True,
    outputs: Sequence[str] = OUTPUTS,
) -> None:
    """Write one image's PNGs, all four unless outputs names fewer: <stem>.png (class indices,
    palette PNG), <stem>_color.png, <stem>_overlay.png (input size) and <stem>_legend.png (classes
    present)."""
    if "mask" in outputs:
        save_index_png(mask, segmenter.palette, out / f"{stem}.png", durable=durable)
    if "color" in outputs:
        save_png(segmenter.colorize(mask), out / f"{stem}_color.png", durable=durable)
    if "overlay" in outputs:
        overlay = segmenter.overlay(image, alpha=alpha, mask=mask)
        save_png(overlay, out / f"{stem}_overlay.png", durable=durable)
    if "legend" in outputs:
        counts = np.bincount(mask.ravel(), minlength=256)
        present = tuple(int(c) for c in np.flatnonzero(counts[: len(segmenter.classes)]))
        png = _legend_png(present, tuple(segmenter.classes), segmenter.palette.tobytes())
        atomic_write(out / f"{stem}_legend.png", lambda tmp: tmp.write_bytes(png), durable=durable)


@functools.lru_cache(maxsize=256)
def _legend_png(present: tuple[int, ...], classes: tuple[str, ...], palette: bytes) -> bytes:
    """Return the PNG bytes of the legend of these classes (save_png's bytes): drawn and encoded
    once per set of classes present, which a folder of photos repeats."""
    picture = legend(list(present), list(classes), np.frombuffer(palette, np.uint8).reshape(256, 3))
    buffer = io.BytesIO()
    Image.fromarray(picture).save(buffer, format="PNG")
    return buffer.getvalue()


def predict_files(
    segmenter: Segmenter,
    files: Sequence[Path],
    output_dir: str | os.PathLike,
    *,
    alpha: float = 0.5,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
    pipeline: bool = True,
    outputs: Sequence[str] = OUTPUTS,
    stems: Sequence[str] | None = None,
    calibration: Sequence[Path] | None = None,
    finished: list[str] | None = None,
) -> tuple[int, list[str]]:
    """Segment every image file (as list_images lists them) with a fcn.api.Segmenter and write, per
    image, <stem>.png (class indices, palette PNG), <stem>_color.png, <stem>_overlay.png (input
    size) and <stem>_legend.png (classes present); return (images done, error lines of the files
    that could not be read or that need more memory than eval.max_memory allows even in sliding
    windows, in the files' order). int8 calibrates on the readable files. A binary or multilabel
    model writes write_sigmoid_outputs' files instead. outputs: which of OUTPUTS to write (all;
    fewer write faster: the overlay's PNG is most of the writing at photo sizes). stems: the output
    names (None: output_stems(files)); calibration: the images int8 calibrates on (None: files), both
    given by a process of a torchrun run segmenting its share (share_of) as one process would.
    finished: a list the output names of the images segmented are appended to (predict.py --export
    reads their masks back).

    With pipeline (the default), the next images are read and decoded, and the finished ones drawn,
    encoded and written, in background threads while the network runs (fcn.core.pipeline): the same
    files, bytes and error lines as one after another (pipeline=False), made durable by one sync at
    the end instead of two fsyncs per file. A file that cannot be written stops the run with its
    WriteError after the files before it are written whole."""
    from tqdm import tqdm

    from fcn.core.files import sync
    from fcn.core.pipeline import WRITE_NICE, Behind, NetworkThreads, background_threads, read_ahead

    if log is None:

        def log(line: str) -> None:
            tqdm.write(line, file=sys.stderr)

    outputs = check_outputs(outputs, segmenter.task)
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    errors: list[str] = []
    segmenter.calibrate(files if calibration is None else calibration)
    done = 0
    jobs = list(zip(files, output_stems(files) if stems is None else stems))
    bar = tqdm(total=len(jobs), desc="predict", unit="image", disable=not progress)
    readable = (ValueError, FileNotFoundError)
    write = write_outputs if segmenter.task == "multiclass" else write_sigmoid_outputs
    # On the CPU, torch's threads and the reading and writing threads share the cores: how many the
    # network gets is measured on the first images (NetworkThreads), then kept.
    threads = NetworkThreads(
        pipeline and segmenter.engine == "torch" and segmenter.device.type == "cpu", iterations=len(jobs)
    )
    with bar, threads, Behind(background_threads() if pipeline else 0, nice=WRITE_NICE) as behind:
        # The reading thread also makes the model's input (decoding and normalising off the network's core).
        for (file, stem), read, exc in read_ahead(
            jobs, lambda job: segmenter.prepare(job[0]), depth=2 if pipeline else 0, errors=readable
        ):
            bar.update(1)
            if exc is not None:
                errors.append(str(exc))
                log(f"error: {exc}")
                continue
            threads.step()
            try:
                image, x = read
                mask = segmenter.segment(image, x)
            except MemoryBudgetError as exc:  # too large even window by window: the others are still done
                errors.append(f"{file}: {exc}")
                log(f"error: {file}: {exc}")
                continue
            behind.submit(write, segmenter, image, mask, out, stem, alpha, not pipeline, outputs)
            done += 1
            if finished is not None:
                finished.append(stem)
    if pipeline and done:
        sync()
    return done, errors


def write_sigmoid_outputs(
    segmenter: Segmenter,
    image: Any,
    mask: np.ndarray,
    out: Path,
    stem: str,
    alpha: float = 0.5,
    durable: bool = True,
    outputs: Sequence[str] = OUTPUTS,
) -> None:
    """Write a sigmoid task's prediction (mask and overlay unless outputs names one): the mask,
    binary: <stem>.png (0/255 grayscale, 255 = the class), multilabel: <stem>_<class>.png per class
    (0/255); the overlay, <stem>_overlay.png (overlapping classes' colours mixed). durable: as
    write_outputs'."""
    from fcn.inference.evaluation import write_sigmoid_masks

    if "mask" in outputs:
        if mask.ndim == 2:
            write_sigmoid_masks(mask.astype(np.uint8), out, stem, None, durable=durable)
        else:
            for name, plane in zip(segmenter.classes, mask):
                write_sigmoid_masks(plane.astype(np.uint8), out, f"{stem}_{name}", None, durable=durable)
    if "overlay" in outputs:
        overlay = segmenter.overlay(image, alpha=alpha, mask=mask)
        save_png(overlay, out / f"{stem}_overlay.png", durable=durable)
