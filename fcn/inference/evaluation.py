"""Evaluation against ground truth (evaluate.py): a checkpoint's data.val split scored at each
image's native resolution with the eval.* test-time augmentation (fcn.core.scoring's Scorer),
each image's own scores and the worst images drawn, the report written as JSON (and the per-image
rows as CSV), and the error plots: the confusion matrix and the per-class IU chart.

It loads through fcn.inference.loading and predicts through fcn.inference.segment; neither imports
this module."""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from omegaconf import DictConfig
from torch import nn

from fcn.config import to_dict
from fcn.core import distributed
from fcn.core.files import atomic_write, sync
from fcn.core.pipeline import WRITE_NICE, Behind, NetworkThreads, background_threads
from fcn.core.runtime import select_device
from fcn.core.scoring import Scorer
from fcn.core.sliding import window_options
from fcn.core.visualize import save_index_png
from fcn.data.common import VOID
from fcn.data.loaders import DataLoader
from fcn.inference.engines import Engine, model_device
from fcn.inference.fastpath import prepare_fast_path
from fcn.inference.loading import load_with_weights
from fcn.inference.segment import model_heads, predict_labels, predict_probs, task_options

SWEEP_THRESHOLDS = tuple(round(0.05 * k, 2) for k in range(1, 20))
"""evaluate.py --sweep-thresholds: 0.05, 0.10, ..., 0.95 (and eval.threshold)."""


class _SizedCollate:
    """Collate (image, mask) items into a batch and remember each item's native (H, W); masks are
    padded with the ignore index."""

    def __init__(self, ignore_index: int = VOID) -> None:
        self.ignore_index = ignore_index

    def __call__(self, batch: list) -> tuple[torch.Tensor, torch.Tensor, list[tuple[int, int]]]:
        sizes = [tuple(mask.shape[-2:]) for _, mask in batch]
        if len(batch) == 1:
            image, mask = batch[0]
            return image[None], mask[None], sizes
        from fcn.data.collate import pad_collate

        images, masks = pad_collate(batch, ignore_index=self.ignore_index)
        return images, masks, sizes


def _share(dataset: torch.utils.data.Dataset) -> list[int]:
    """Return the indices of the dataset this process scores: all of them alone; under torchrun
    every world-th from its rank (no padding, so no image is counted twice), as training's
    evaluation shares them (fcn.data.loaders.eval_loader); the counts are summed afterwards."""
    rank, world = distributed.rank_and_world()
    return list(range(rank, len(dataset), world))  # type: ignore[arg-type]


def _loader(
    dataset: torch.utils.data.Dataset,
    batch_size: int,
    num_workers: int,
    ignore_index: int,
    device: torch.device,
    indices: Sequence[int],
) -> DataLoader:
    """Return the evaluation's loader: the dataset's items at indices in order, each item's native size kept."""
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=indices,
        num_workers=num_workers,
        collate_fn=_SizedCollate(ignore_index),
        pin_memory=device.type == "cuda",
    )


def _threads(model: nn.Module | Engine, device: torch.device, loader: DataLoader) -> NetworkThreads:
    """How many threads a torch model on the CPU runs on beside the loader's workers and the
    prediction writers: measured on the first batches (fcn.core.pipeline.NetworkThreads)."""
    return NetworkThreads(device.type == "cpu" and not isinstance(model, Engine), iterations=len(loader))


def evaluate_model(
    model: nn.Module,
    dataset: torch.utils.data.Dataset,
    scorer: Scorer,
    *,
    batch_size: int = 1,
    num_workers: int = 0,
    options: dict | None = None,
    save_predictions: str | os.PathLike | None = None,
    palette: np.ndarray | None = None,
    class_names: Sequence[str] | None = None,
    progress: bool = True,
    per_image: bool = False,
) -> dict:
    """Return scorer.compute() (fcn.core.scoring: the metrics, 'confusion', a geometric head's and
    a sigmoid task's sweep) of model on dataset at each image's native resolution, pixels labelled
    the scorer's ignore_index left out. options: predict_labels' keywords (flip, scales, amp,
    channels_last and window_options()'s; the task, threshold and heads are the scorer's).
    save_predictions writes each prediction: multiclass <id>.png in palette (the semantic head's),
    a sigmoid task as write_sigmoid_masks does (class_names). per_image adds 'per_image': one row
    per image (its 'id', 'index', 'height', 'width', and pixel_acc, mean_iou, iou of its own
    fresh scorer: the semantic head's)."""
    from tqdm import tqdm

    from fcn.core.tasks import threshold_labels

    device = model_device(model)
    task, sigmoid = scorer.task, scorer.sigmoid
    indices = _share(dataset)
    loader = _loader(dataset, batch_size, num_workers, scorer.ignore_index, device, indices)
    ids = list(getattr(dataset, "ids", range(len(dataset))))
    if save_predictions is not None:
        Path(save_predictions).mkdir(parents=True, exist_ok=True)
        if palette is None and not sigmoid:
            raise ValueError("save_predictions needs the dataset's palette")
    options = dict(options or {})
    tta = options.get("flip", False) or [float(s) for s in options.get("scales", (1.0,))] != [1.0]
    # Sliding windows over a padded image would tile the padding too, and mirroring or rescaling a
    # padded image would move or blend the padding into it: those go image by image (see _predict).
    one_by_one = tta or options.get("mode", "whole") == "slide"
    rows: list[dict] = []
    seen = 0
    bar = tqdm(loader, desc="evaluate", unit="batch", disable=not progress, dynamic_ncols=True)
    # Predictions are encoded and written behind the network (one sync at the end makes them durable).
    with _threads(model, device, loader) as threads, Behind(background_threads(), nice=WRITE_NICE) as behind:
        for images, masks, sizes in bar:
            threads.step()
            images = images.to(device, non_blocking=True)
            masks = masks.to(device, non_blocking=True)
            output = _predict(model, images, masks, sizes, scorer, options, one_by_one)
            # pad_collate pads bottom/right with void, so padded pixels are never counted.
            scorer.update(output, masks, probs=sigmoid)
            for k, (h, w) in enumerate(sizes):
                position, seen = indices[seen], seen + 1
                mine = output[k : k + 1, ..., :h, :w]
                if per_image:
                    one = scorer.fresh()
                    one.update(mine, masks[k : k + 1, ..., :h, :w], probs=sigmoid)
                    scores = {key: value for key, value in one.compute().items() if key in _ROW_KEYS}
                    rows.append(
                        {"id": str(ids[position]), "index": position, "height": h, "width": w, **scores}
                    )
                if save_predictions is None:
                    continue
                # Encoded and written behind the network; made durable by one sync at the end.
                if sigmoid:
                    labels = threshold_labels(mine, task, scorer.threshold)[0].cpu().numpy()
                    directory, stem = Path(save_predictions), str(ids[position])
                    behind.submit(write_sigmoid_masks, labels, directory, stem, class_names, durable=False)
                else:
                    semantic = (mine[:, 0] if scorer.heads else mine)[0].cpu().numpy().astype(np.uint8)
                    path = Path(save_predictions) / f"{ids[position]}.png"
                    behind.submit(save_index_png, semantic, palette, path, durable=False)
    if seen and save_predictions is not None:
        sync()
    scorer.all_reduce()  # torchrun: every process's counts summed, so each computes the whole set's metrics
    metrics = scorer.compute()
    if per_image:
        metrics["per_image"] = _gather_rows(rows)
    return metrics


_ROW_KEYS = ("pixel_acc", "mean_iou", "iou")
"""What a per-image row holds (evaluate.py --per-image's CSV columns)."""


def _predict(
    model: nn.Module | Engine,
    images: torch.Tensor,
    masks: torch.Tensor,
    sizes: list[tuple[int, int]],
    scorer: Scorer,
    options: dict,
    one_by_one: bool,
) -> torch.Tensor:
    """Return what the scorer counts of a batch: a sigmoid task's probabilities (N, C, H, W), else
    the labels (N, H, W), (N, 2, H, W) with a geometric head; image by image (zeros in the padding)
    when one_by_one and the batch is padded, and always for a sigmoid task (as it always was: the
    same bits whatever data.val_batch_size)."""
    if scorer.sigmoid:
        out = torch.zeros((images.shape[0], scorer.num_classes, *images.shape[-2:]), device=images.device)
        predict, options = predict_probs, {**options, "task": scorer.task}
    else:
        out = torch.zeros(masks.shape, dtype=torch.long, device=images.device)
        predict, options = predict_labels, {**options, "heads": scorer.heads}
    if not scorer.sigmoid and (not one_by_one or all(size == tuple(images.shape[-2:]) for size in sizes)):
        return predict(model, images, **options)
    for i, (h, w) in enumerate(sizes):
        out[i, ..., :h, :w] = predict(model, images[i : i + 1, :, :h, :w], **options)[0]
    return out


def _gather_rows(rows: list[dict]) -> list[dict]:
    """Return every process's per-image rows in the dataset's order (this process's alone)."""
    return sorted(
        (r for share in distributed.all_gather_object(rows) for r in share), key=lambda r: r["index"]
    )


def write_sigmoid_masks(
    labels: np.ndarray,
    directory: Path,
    stem: str,
    class_names: Sequence[str] | None,
    *,
    durable: bool = True,
) -> list[Path]:
    """Write a sigmoid task's 0/1 labels as 0/255 grayscale PNGs (what annotation tools and masks
    read back by data.task=binary use): a binary (H, W) map as directory/<stem>.png; a multilabel
    (C, H, W) map as directory/<class name>/<stem>.png per class (class_names; None: the class
    index), the layout a multilabel dataset's masks take. Each file atomically (durable: as
    fcn.core.files.atomic_write's). Returns the paths written."""
    from PIL import Image

    planes = [(directory / f"{stem}.png", labels)] if labels.ndim == 2 else [
        (directory / (class_names[c] if class_names else str(c)) / f"{stem}.png", plane)
        for c, plane in enumerate(labels)
    ]  # fmt: skip
    for path, plane in planes:
        path.parent.mkdir(parents=True, exist_ok=True)
        picture = Image.fromarray((np.asarray(plane) == 1).astype(np.uint8) * 255, mode="L")
        atomic_write(path, lambda tmp, picture=picture: picture.save(tmp, format="PNG"), durable=durable)
    return [path for path, _ in planes]


def image_scores(pred: torch.Tensor, mask: torch.Tensor, num_classes: int, ignore_index: int = VOID) -> dict:
    """Return one image's pixel_acc, mean_iou and per-class iou (list): the IU of a class absent
    from both its ground truth and its prediction is NaN, and the mean is over the others (the
    classes present in the image's ground truth or prediction); NaN where nothing is labelled."""
    scorer = Scorer(num_classes, ignore_index=ignore_index, device=pred.device)
    scorer.update(pred[None], mask[None])
    scores = scorer.compute()
    return {key: scores[key] for key in _ROW_KEYS}


def worst_images(rows: Sequence[dict], count: int = 5) -> list[dict]:
    """Return the count rows of lowest mean IU (images with nothing labelled, NaN, left out)."""
    scored = [r for r in rows if not math.isnan(r["mean_iou"])]
    return sorted(scored, key=lambda r: (r["mean_iou"], r["index"]))[:count]


def write_per_image_csv(rows: Sequence[dict], class_names: Sequence[str], path: str | os.PathLike) -> None:
    """Write one CSV row per image, atomically: id, height, width, pixel_acc, mean_iou and one IU
    column per class (iou_<name>); an empty cell where a value is NaN (a class absent from the
    image's ground truth and prediction)."""
    import csv
    import io

    def cell(value: float) -> str:
        return "" if math.isnan(value) else f"{value:.6f}"

    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["id", "height", "width", "pixel_acc", "mean_iou", *[f"iou_{n}" for n in class_names]])
    for r in rows:
        writer.writerow(
            [
                r["id"],
                r["height"],
                r["width"],
                cell(r["pixel_acc"]),
                cell(r["mean_iou"]),
                *map(cell, r["iou"]),
            ]
        )
    text = buffer.getvalue()
    atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def write_json(data: Any, path: str | os.PathLike) -> None:
    """Write data as indented JSON, atomically; NaN (a class absent everywhere) becomes null."""
    text = json.dumps(_json_safe(data), indent=2) + "\n"
    atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def worst_grid(ev: Evaluation, rows: Sequence[dict]) -> np.ndarray:
    """Return the image | ground truth | prediction grid (fcn.core.visualize.prediction_grid) of the given
    per-image rows, predicted again one by one as evaluate.py predicts (eval.* options)."""
    from fcn.core.normalize import input_normalization
    from fcn.core.tasks import display_labels
    from fcn.core.visualize import prediction_grid
    from fcn.data import display_names, palette
    from fcn.data.transforms import denormalize

    cfg, device = ev.cfg, model_device(ev.model)
    e = cfg.eval
    images, gts, preds = [], [], []
    for r in rows:
        image, mask = ev.dataset[r["index"]]
        pred = predict_labels(
            ev.model,
            image[None].to(device),
            flip=bool(e.flip),
            scales=list(e.scales),
            amp=e.amp,
            channels_last=bool(e.channels_last),
            heads=model_heads(cfg),
            **window_options(cfg),
            **task_options(cfg),
        )
        images.append(denormalize(image, input_normalization(cfg.data.transforms), cfg.data.display_channels))
        if cfg.data.task != "multiclass":
            gts.append(display_labels(mask, cfg.data.task, int(cfg.data.ignore_index)))
            preds.append(display_labels(pred[0], cfg.data.task))
            continue
        pred = pred[:, 0] if pred.ndim == 4 else pred  # the semantic head of a two-headed model
        gts.append(mask.numpy().astype(np.uint8).reshape(-1, *mask.shape[-2:])[0])
        preds.append(pred[0].cpu().numpy().astype(np.uint8))
    return prediction_grid(images, gts, preds, palette(cfg.data), display_names(cfg.data))


@dataclass
class Evaluation:
    """A checkpoint ready to be scored: its model, config, which weights, and the dataset."""

    checkpoint: str
    model: nn.Module | Engine
    cfg: DictConfig
    weights: str
    dataset: torch.utils.data.Dataset


def prepare_evaluation(
    checkpoint: str | os.PathLike,
    paths: Sequence[str] = (),
    overrides: Sequence[str] = (),
    *,
    device: str = "auto",
    trust_remote_code: bool = False,
) -> Evaluation:
    """Return the model of a checkpoint and its config's data.val split (listed, not yet read);
    errors here are the command line's, the config's or the input files'. A dataset class by
    import path in the checkpoint's config is imported only with trust_remote_code (or when paths
    or overrides name data.val themselves)."""
    from fcn.data import build_dataset
    from fcn.data.transforms import build_transforms

    model, cfg, which = load_with_weights(
        checkpoint,
        select_device(device),
        None,
        paths,
        overrides,
        trust_remote_code=trust_remote_code,
        datasets=True,
    )
    dataset = build_dataset(
        cfg.data.val,
        cfg.data,
        transforms=build_transforms(cfg.data.transforms, train=False),
        channels=cfg.model.in_channels,
    )
    if len(dataset) == 0:
        raise ValueError(
            f"data.val ({cfg.data.val.name} '{cfg.data.val.split}' in {cfg.data.val.root}) is empty"
        )
    return Evaluation(str(checkpoint), model, cfg, which, dataset)


def run_evaluation(
    ev: Evaluation,
    *,
    save_predictions: str | os.PathLike | None = None,
    progress: bool = True,
    per_image: bool = False,
    sweep: Sequence[float] = (),
) -> dict:
    """Return the report of a prepared evaluation: the checkpoint scored on its data.val split at
    native resolution with the config's eval.* test-time augmentation; the metrics, the per-class
    IU/accuracy by class name, the confusion matrix and what was evaluated (and with per_image,
    'per_image': evaluate_model's rows). A sigmoid task: its metrics at eval.threshold, per class
    IoU, Dice, precision and recall, and with sweep (thresholds) 'sweep' and 'best' per metric."""
    from fcn.data import class_names, palette

    cfg, dataset, e = ev.cfg, ev.dataset, ev.cfg.eval
    prepare_fast_path(ev.model, cfg, (dataset[i][0][None] for i in range(len(dataset))))
    names = class_names(cfg.data)
    scorer = Scorer(
        int(cfg.model.num_classes),
        task=str(cfg.data.task),
        ignore_index=int(cfg.data.ignore_index),
        geometric_classes=int(cfg.model.geometric_classes),
        threshold=float(e.threshold),
        sweep=sweep,
        fscore_beta=float(e.fscore_beta),
        device=model_device(ev.model),
    )
    options = dict(
        flip=bool(e.flip),
        scales=list(e.scales),
        amp=e.amp,
        channels_last=bool(e.channels_last),
        **window_options(cfg),
    )
    metrics = evaluate_model(
        ev.model,
        dataset,
        scorer,
        batch_size=int(cfg.data.val_batch_size),
        num_workers=int(cfg.data.num_workers),
        options=options,
        save_predictions=save_predictions,
        palette=palette(cfg.data),
        class_names=names,
        progress=progress,
        per_image=per_image,
    )
    head = {
        "checkpoint": ev.checkpoint,
        "weights": ev.weights,
        "dataset": to_dict(cfg.data.val),
        "num_images": len(dataset),
        "eval": to_dict(cfg.eval),
    }
    if cfg.data.task != "multiclass":
        per_class = {name: {key: metrics[key][c] for key in PER_CLASS} for c, name in enumerate(names)}
        extra = {key: metrics[key] for key in ("sweep", "best", "per_image") if key in metrics}
        return {
            **head,
            "task": str(cfg.data.task),
            **{k: v for k, v in metrics.items() if k not in extra},
            "per_class": per_class,
            **extra,
        }
    keys = ("iou", "acc", *PER_CLASS[1:])
    return {
        **head,
        # the paper's four first, as they always were, then the compared means
        **{k: metrics[k] for k in ("pixel_acc", "mean_acc", "mean_iou", "fwavacc")},
        **({"geometric_pixel_acc": metrics["geometric_pixel_acc"]} if "geometric" in metrics else {}),
        **{f"mean_{k}": metrics[f"mean_{k}"] for k in PER_CLASS if k != "iou"},
        "fscore_beta": metrics["fscore_beta"],
        "per_class": {name: {k: metrics[k][c] for k in keys} for c, name in enumerate(names)},
        **{k: metrics[k] for k in keys},
        "confusion": metrics["confusion"],
        **({"per_image": metrics["per_image"]} if per_image else {}),
    }


PER_CLASS = ("iou", "dice", "fscore", "precision", "recall")
"""The per-class metrics of every task in a report's per_class (multiclass adds the paper's acc)."""


def plot_paths(output: str | os.PathLike | None, plots: str | os.PathLike | None) -> list[tuple[Path, Path]]:
    """Return the (confusion, IU chart) PNG paths evaluate.py writes: x_confusion.png and x_iou.png
    beside --output x.json, and DIR/confusion.png and DIR/iou.png for --plots DIR."""
    pairs = []
    if output:
        out = Path(output)
        pairs.append((out.with_name(f"{out.stem}_confusion.png"), out.with_name(f"{out.stem}_iou.png")))
    if plots:
        pairs.append((Path(plots) / "confusion.png", Path(plots) / "iou.png"))
    return pairs


def save_error_plots(
    report: dict, cfg: DictConfig, confusion_path: str | os.PathLike, iou_path: str | os.PathLike
) -> None:
    """Write the report's row-normalised confusion matrix and its per-class IU bar chart as PNGs
    (fcn.core.visualize.confusion_image, iou_chart), titled with the split and the mean IU."""
    from fcn.core.visualize import confusion_image, iou_chart, save_png
    from fcn.data import class_names, class_palette, palette

    names = class_names(cfg.data)
    v = cfg.data.val
    title = f"{v.name} '{v.split}', {report['num_images']} images: mean IU {100 * report['mean_iou']:.1f}"
    if cfg.data.task != "multiclass":  # no confusion between classes: the IoU chart only
        save_png(iou_chart(report["iou"], names, class_palette(cfg.data), title=title), iou_path)
        return
    save_png(confusion_image(report["confusion"], names, title=f"{title}; % of each row"), confusion_path)
    save_png(iou_chart(report["iou"], names, palette(cfg.data), title=title), iou_path)


def evaluate_checkpoint(
    checkpoint: str | os.PathLike,
    paths: Sequence[str] = (),
    overrides: Sequence[str] = (),
    *,
    device: str = "auto",
    save_predictions: str | os.PathLike | None = None,
    progress: bool = True,
) -> tuple[dict, DictConfig]:
    """Return (report, config) of prepare_evaluation then run_evaluation."""
    ev = prepare_evaluation(checkpoint, paths, overrides, device=device)
    return run_evaluation(ev, save_predictions=save_predictions, progress=progress), ev.cfg
