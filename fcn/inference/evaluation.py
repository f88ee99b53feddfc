"""Evaluation against ground truth (evaluate.py): a checkpoint's data.val split scored at each
image's native resolution with the eval.* test-time augmentation (fcn.core.metrics' ConfusionMatrix),
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
    num_classes: int,
    *,
    batch_size: int = 1,
    num_workers: int = 0,
    flip: bool = False,
    scales: Sequence[float] = (1.0,),
    amp: str = "none",
    channels_last: bool = False,
    window: dict | None = None,
    save_predictions: str | os.PathLike | None = None,
    palette: np.ndarray | None = None,
    progress: bool = True,
    per_image: bool = False,
    ignore_index: int = VOID,
    geometric_classes: int = 0,
    task: str = "multiclass",
    threshold: float = 0.5,
    sweep: Sequence[float] = (),
    class_names: Sequence[str] | None = None,
) -> dict:
    """Return the metrics dict (ConfusionMatrix.compute() plus 'confusion') of model on dataset at
    each image's native resolution, pixels labelled ignore_index left out; optionally write each
    prediction as <id>.png in palette. geometric_classes > 0 (SIFT Flow's two-headed net, masks
    2 x H x W): the metrics are the semantic head's, plus 'geometric_pixel_acc' and 'geometric'
    (the geometric head's ConfusionMatrix.compute()); predictions and per-image scores are semantic.
    window: window_options() (whole or sliding windows); None is whole. per_image adds
    'per_image': one image_scores() dict per image, with its 'id', 'index', 'height', 'width'.

    A sigmoid task (binary, multilabel): evaluate_sigmoid's metrics at `threshold` (and at each of
    `sweep`'s thresholds, under 'sweep')."""
    from tqdm import tqdm

    from fcn.core.metrics import ConfusionMatrix

    if task != "multiclass":
        return evaluate_sigmoid(
            model,
            dataset,
            num_classes,
            task=task,
            threshold=threshold,
            sweep=sweep,
            batch_size=batch_size,
            num_workers=num_workers,
            options=dict(flip=flip, scales=scales, amp=amp, channels_last=channels_last, **(window or {})),
            save_predictions=save_predictions,
            progress=progress,
            per_image=per_image,
            ignore_index=ignore_index,
            class_names=class_names,
        )
    device = model_device(model)
    indices = _share(dataset)
    loader = _loader(dataset, batch_size, num_workers, ignore_index, device, indices)
    ids = list(getattr(dataset, "ids", range(len(dataset))))
    if save_predictions is not None:
        Path(save_predictions).mkdir(parents=True, exist_ok=True)
        if palette is None:
            raise ValueError("save_predictions needs the dataset's palette")
    matrix = ConfusionMatrix(num_classes, ignore_index=ignore_index, device=device)
    heads = [num_classes, geometric_classes] if geometric_classes else None
    geo = ConfusionMatrix(geometric_classes, ignore_index=ignore_index, device=device) if heads else None
    rows: list[dict] = []
    tta = flip or [float(s) for s in scales] != [1.0]
    window = dict(window or {})
    # Sliding windows over a padded image would tile the padding too: slide image by image.
    one_by_one = tta or window.get("mode", "whole") == "slide"
    index = 0
    bar = tqdm(loader, desc="evaluate", unit="batch", disable=not progress, dynamic_ncols=True)
    # Predictions are encoded and written behind the network (one sync at the end makes them durable).
    with _threads(model, device, loader) as threads, Behind(background_threads(), nice=WRITE_NICE) as behind:
        for images, masks, sizes in bar:
            threads.step()
            images = images.to(device, non_blocking=True)
            masks = masks.to(device, non_blocking=True)
            options = dict(
                flip=flip, scales=scales, amp=amp, channels_last=channels_last, heads=heads, **window
            )
            if one_by_one and any(size != tuple(images.shape[-2:]) for size in sizes):
                # Mirroring or rescaling a padded image would move or blend the padding into the
                # image, so a padded batch gets test-time augmentation image by image.
                preds = torch.zeros(masks.shape, dtype=torch.long, device=device)
                for i, (h, w) in enumerate(sizes):
                    preds[i, ..., :h, :w] = predict_labels(model, images[i : i + 1, :, :h, :w], **options)[0]
            else:
                preds = predict_labels(model, images, **options)
            if geo is not None:  # two heads: the geometric one scored on its own, the rest is semantic
                geo.update(preds[:, 1], masks[:, 1])
                preds, masks = preds[:, 0], masks[:, 0]
            # pad_collate pads bottom/right with void, so padded pixels never enter the matrix.
            matrix.update(preds, masks)
            if per_image:
                for k, (h, w) in enumerate(sizes):
                    scores = image_scores(preds[k, :h, :w], masks[k, :h, :w], num_classes, ignore_index)
                    position = indices[index + k]
                    rows.append(
                        {"id": str(ids[position]), "index": position, "height": h, "width": w, **scores}
                    )
            if save_predictions is not None:
                for k, (pred, (h, w)) in enumerate(zip(preds.cpu().numpy().astype(np.uint8), sizes)):
                    # Encoded and written behind the network; made durable by one sync at the end.
                    path = Path(save_predictions) / f"{ids[indices[index + k]]}.png"
                    behind.submit(save_index_png, pred[:h, :w], palette, path, durable=False)
            index += len(sizes)
    if index and save_predictions is not None:
        sync()
    matrix.all_reduce()  # torchrun: every process's counts summed, so each computes the whole set's metrics
    if geo is not None:
        geo.all_reduce()
    metrics = matrix.compute()
    metrics["confusion"] = matrix.mat.cpu().tolist()
    if geo is not None:
        metrics["geometric"] = geo.compute()
        metrics["geometric_pixel_acc"] = metrics["geometric"]["pixel_acc"]
    if per_image:
        metrics["per_image"] = _gather_rows(rows)
    return metrics


def _gather_rows(rows: list[dict]) -> list[dict]:
    """Return every process's per-image rows in the dataset's order (this process's alone)."""
    return sorted(
        (r for share in distributed.all_gather_object(rows) for r in share), key=lambda r: r["index"]
    )


def evaluate_sigmoid(
    model: nn.Module,
    dataset: torch.utils.data.Dataset,
    num_classes: int,
    *,
    task: str,
    threshold: float = 0.5,
    sweep: Sequence[float] = (),
    batch_size: int = 1,
    num_workers: int = 0,
    options: dict | None = None,
    save_predictions: str | os.PathLike | None = None,
    progress: bool = True,
    per_image: bool = False,
    ignore_index: int = VOID,
    class_names: Sequence[str] | None = None,
) -> dict:
    """Return a sigmoid task's metrics of model on dataset at native resolution: ThresholdCounts.compute()
    at `threshold` plus 'confusion' (tp, fp, fn, tn per class), and with `sweep` 'sweep' (compute()
    at each threshold of sweep and `threshold`) and 'best' ({metric: the sweep's row of its highest
    value}). options: predict_probs' keywords (flip, scales, amp, channels_last, window). Predictions
    are saved as masks_png() writes them; per_image adds a row per image (pixel_acc, mean_iou, iou)."""
    from tqdm import tqdm

    from fcn.core.metrics import ThresholdCounts
    from fcn.core.tasks import threshold_labels

    device = model_device(model)
    indices = _share(dataset)
    loader = _loader(dataset, batch_size, num_workers, ignore_index, device, indices)
    ids = list(getattr(dataset, "ids", range(len(dataset))))
    grid = sorted({*[float(t) for t in sweep], float(threshold)})
    counts = ThresholdCounts(num_classes, grid, ignore_index=ignore_index, device=device)
    main = grid.index(float(threshold))
    options = dict(options or {})
    rows: list[dict] = []
    seen = 0
    # Predictions are encoded and written behind the network (one sync at the end makes them durable).
    with _threads(model, device, loader) as threads, Behind(background_threads(), nice=WRITE_NICE) as behind:
        for images, masks, sizes in tqdm(
            loader, desc="evaluate", unit="batch", disable=not progress, dynamic_ncols=True
        ):
            threads.step()
            images = images.to(device, non_blocking=True)
            masks = masks.to(device, non_blocking=True)
            probs = torch.zeros((images.shape[0], num_classes, *images.shape[-2:]), device=device)
            for i, (h, w) in enumerate(sizes):  # image by image: flip, scales and windows never see padding
                x = images[i : i + 1, :, :h, :w]
                probs[i, :, :h, :w] = predict_probs(model, x, task=task, **options)[0]
            counts.update(probs, masks)
            for k, (h, w) in enumerate(sizes):
                position, seen = indices[seen], seen + 1
                if per_image:
                    one = ThresholdCounts(
                        num_classes, [float(threshold)], ignore_index=ignore_index, device=device
                    )
                    one.update(probs[k : k + 1, :, :h, :w], masks[k : k + 1, ..., :h, :w])
                    scores = one.compute()
                    row = {
                        "pixel_acc": scores["pixel_acc"],
                        "mean_iou": scores["mean_iou"],
                        "iou": scores["iou"],
                    }
                    rows.append({"id": str(ids[position]), "index": position, "height": h, "width": w, **row})
                if save_predictions is not None:
                    labels = threshold_labels(probs[k : k + 1, :, :h, :w], task, threshold)[0].cpu().numpy()
                    # Encoded and written behind the network; made durable by one sync at the end.
                    behind.submit(
                        write_sigmoid_masks,
                        labels,
                        Path(save_predictions),
                        str(ids[position]),
                        class_names,
                        durable=False,
                    )
    if save_predictions is not None:
        sync()
    counts.all_reduce()
    metrics = counts.compute(main)
    metrics["confusion"] = counts.confusion(main).tolist()
    if sweep:
        metrics["sweep"] = counts.sweep()
        metrics["best"] = {
            key: max(metrics["sweep"], key=lambda r: -math.inf if math.isnan(r[key]) else r[key])
            for key in ("mean_iou", "mean_dice", "mean_precision", "mean_recall", "pixel_acc")
        }
    if per_image:
        metrics["per_image"] = _gather_rows(rows)
    return metrics


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
    from fcn.core.metrics import ConfusionMatrix

    matrix = ConfusionMatrix(num_classes, ignore_index=ignore_index, device=pred.device)
    matrix.update(pred[None], mask[None])
    scores = matrix.compute()
    return {"pixel_acc": scores["pixel_acc"], "mean_iou": scores["mean_iou"], "iou": scores["iou"]}


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
    metrics = evaluate_model(
        ev.model,
        dataset,
        int(cfg.model.num_classes),
        batch_size=int(cfg.data.val_batch_size),
        num_workers=int(cfg.data.num_workers),
        flip=bool(e.flip),
        scales=list(e.scales),
        amp=e.amp,
        channels_last=bool(e.channels_last),
        window=window_options(cfg),
        save_predictions=save_predictions,
        palette=palette(cfg.data),
        progress=progress,
        per_image=per_image,
        ignore_index=int(cfg.data.ignore_index),
        geometric_classes=int(cfg.model.geometric_classes),
        **task_options(cfg),
        sweep=sweep,
        class_names=class_names(cfg.data),
    )
    names = class_names(cfg.data)
    if cfg.data.task != "multiclass":
        per_class = {
            name: {key: metrics[key][c] for key in ("iou", "dice", "precision", "recall")}
            for c, name in enumerate(names)
        }
        extra = {key: metrics[key] for key in ("sweep", "best", "per_image") if key in metrics}
        return {
            "checkpoint": ev.checkpoint,
            "weights": ev.weights,
            "dataset": to_dict(cfg.data.val),
            "num_images": len(dataset),
            "eval": to_dict(cfg.eval),
            "task": str(cfg.data.task),
            **{k: v for k, v in metrics.items() if k not in extra},
            "per_class": per_class,
            **extra,
        }
    return {
        "checkpoint": ev.checkpoint,
        "weights": ev.weights,
        "dataset": to_dict(cfg.data.val),
        "num_images": len(dataset),
        "eval": to_dict(cfg.eval),
        "pixel_acc": metrics["pixel_acc"],
        "mean_acc": metrics["mean_acc"],
        "mean_iou": metrics["mean_iou"],
        "fwavacc": metrics["fwavacc"],
        **({"geometric_pixel_acc": metrics["geometric_pixel_acc"]} if "geometric" in metrics else {}),
        "per_class": {
            name: {"iou": iou, "acc": acc} for name, iou, acc in zip(names, metrics["iou"], metrics["acc"])
        },
        "iou": metrics["iou"],
        "acc": metrics["acc"],
        "confusion": metrics["confusion"],
        **({"per_image": metrics["per_image"]} if per_image else {}),
    }


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
