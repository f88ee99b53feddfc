"""Evaluation during training: evaluate() (the paper's metrics of a model over a loader, reused by
bench/ and the tests) and evaluate_and_save(), what the loop does every training.eval_every
iterations: evaluate the model (and its EMA), log the result (console, TensorBoard scalars, the
confusion matrix and per-class IU pictures, the fixed-batch grid, metrics.jsonl), keep the count
for early stopping and save last.pt and, when the mean IU improved, best.pt (fcn.training.state).

evaluate.py's evaluation (test-time augmentation, saved predictions, per-image scores) is
fcn.inference.evaluation's; both score with fcn.core.scoring.Scorer.
"""

from __future__ import annotations

import json
import math
import time

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from fcn.config import VOID
from fcn.config.schema import EVAL_METRICS
from fcn.core import distributed
from fcn.core.metrics import format_sigmoid_table, format_table
from fcn.core.runtime import autocast
from fcn.core.scoring import Scorer
from fcn.core.sliding import class_argmax, model_logits, window_options
from fcn.core.tasks import display_labels, is_sigmoid, task_labels
from fcn.training.state import Run, save_best, save_last


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader: DataLoader,
    num_classes: int,
    device: torch.device,
    *,
    amp: str = "none",
    channels_last: bool = False,
    progress: bool = False,
    desc: str = "eval",
    mode: str = "whole",
    tile: int = 512,
    stride: int = 341,
    window_batch: int = 4,
    ignore_index: int = VOID,
    geometric_classes: int = 0,
    task: str = "multiclass",
    threshold: float = 0.5,
    fscore_beta: float = 1.0,
) -> dict:
    """Return the metrics of a model over a loader, summed across processes, at the masks' own
    resolution (padding is void): fcn.core.scoring.Scorer.compute() of its logits (the paper's four,
    then Dice, F-score, precision, recall; a two-headed model (geometric_classes > 0, SIFT Flow)
    adds 'geometric' and 'geometric_pixel_acc'; a sigmoid task's at `threshold`) with 'confusion'.
    With mode='slide', each batch is predicted by tile x tile windows (fcn.core.sliding.slide_logits).

    Evaluation during training; evaluate.py adds test-time augmentation and saved predictions
    (fcn.inference.evaluation.evaluate_model) and scores with the same Scorer."""
    from tqdm import tqdm

    was_training = model.training
    model.eval()
    scorer = Scorer(
        num_classes,
        task=task,
        ignore_index=ignore_index,
        geometric_classes=geometric_classes,
        threshold=threshold,
        fscore_beta=fscore_beta,
        device=device,
    )
    window = dict(mode=mode, tile=tile, stride=stride, window_batch=window_batch)
    for images, masks in tqdm(loader, desc=desc, leave=False, disable=not progress, dynamic_ncols=True):
        images = images.to(device, non_blocking=True)
        with autocast(device, amp):
            logits = model_logits(model, images, channels_last, **window)
        scorer.update(logits, masks.to(device, non_blocking=True))
    scorer.all_reduce()
    model.train(was_training)
    return scorer.compute()


def evaluate_and_save(run: Run) -> dict:
    """Evaluate the model (and its EMA) on the validation split, log the metrics (console,
    TensorBoard, metrics.jsonl, the fixed-batch grid), save last.pt and, when the mean IU improved,
    best.pt; return the metrics record."""
    cfg, info = run.cfg, run.info
    # BatchNorm statistics drift apart across processes between DDP's broadcasts at each forward;
    # every process evaluates rank 0's, the ones the checkpoint holds
    distributed.broadcast_buffers(run.model)
    if run.ema is not None:
        distributed.broadcast_buffers(run.ema.module)
    n = cfg.model.num_classes
    ignore, window = cfg.data.ignore_index, window_options(cfg)
    window["geometric_classes"] = int(cfg.model.geometric_classes)
    window.update(
        task=str(cfg.data.task), threshold=float(cfg.eval.threshold), fscore_beta=float(cfg.eval.fscore_beta)
    )
    metrics = evaluate(
        run.model, run.val_loader, n, run.device, amp=run.amp, desc="eval", ignore_index=ignore, **window
    )
    record = {"iteration": run.iteration, "epoch": run.epoch, "time": time.time(), **metrics}
    record["train_loss"] = run.loss_sum / max(run.loss_count, 1)  # mean since the previous evaluation
    run.loss_sum, run.loss_count = 0.0, 0
    record.pop("confusion")
    key = EVAL_METRICS[str(cfg.eval.metric)]  # what chooses best.pt: mean IU unless eval.metric names another
    score = metrics[key]
    if run.ema is not None:
        ema_metrics = evaluate(
            run.ema.module,
            run.val_loader,
            n,
            run.device,
            amp=run.amp,
            desc="eval ema",
            ignore_index=ignore,
            **window,
        )
        ema_metrics.pop("confusion")
        record["ema"] = ema_metrics
        score = ema_metrics[key]
    if info.is_primary:
        _log_evaluation(run, metrics, record)
    improved = score > run.best
    if improved:
        run.best = score
    run.evals_since_best = 0 if improved else run.evals_since_best + 1
    save_last(run)
    if improved and info.is_primary:
        save_best(run)
    distributed.barrier()
    return record


def _log_evaluation(run: Run, metrics: dict, record: dict) -> None:
    """Write one evaluation to the console, the trackers (scalars, the confusion matrix and the
    per-class IU chart, the fixed-batch grid), vis/ and metrics.jsonl."""
    trackers, it = run.trackers, run.iteration
    sigmoid = is_sigmoid(run.cfg.data.task)
    table = (format_sigmoid_table if sigmoid else format_table)(metrics, run.class_names)
    run.log(f"\niteration {it}/{run.total} (epoch {run.epoch})\n{table}")
    if "ema" in record:
        run.log(f"EMA weights: mean IU {record['ema']['mean_iou']:.4f}")
    scalars = {"train/mean_loss": record["train_loss"]}
    if "geometric" in metrics:
        run.log(f"geometric pixel accuracy {100 * metrics['geometric_pixel_acc']:.2f}")
        scalars["val/geometric_pixel_acc"] = metrics["geometric_pixel_acc"]
    compared = ("mean_dice", "mean_fscore", "mean_precision", "mean_recall")
    keys = ("pixel_acc", "mean_iou") if sigmoid else ("pixel_acc", "mean_acc", "mean_iou", "fwavacc")
    for key in (*keys, *(k for k in compared if k in metrics)):
        scalars[f"val/{key}"] = metrics[key]
        if "ema" in record and key in record["ema"]:
            scalars[f"val_ema/{key}"] = record["ema"][key]
    for name, value in zip(run.class_names, metrics["iou"]):
        if not math.isnan(value):
            scalars[f"val_iou/{name}"] = value
    trackers.scalars(scalars, it)
    from fcn.core.visualize import confusion_image, iou_chart

    title = f"iteration {it}: mean IU {100 * metrics['mean_iou']:.1f}"
    if not sigmoid:  # a sigmoid task's classes are not confused with each other: no matrix
        trackers.image("val/confusion", confusion_image(metrics["confusion"], run.class_names, title), it)
    colours = np.roll(run.palette, -1, axis=0) if sigmoid else run.palette  # fcn.data.class_palette
    trackers.image("val/iou", iou_chart(metrics["iou"], run.class_names, colours, title), it)
    vis_indices = list(range(min(run.cfg.training.vis_images, len(run.val_set))))
    if vis_indices:
        from fcn.core.visualize import save_png

        grid = _vis_grid(run, vis_indices)
        save_png(grid, run.run_dir / "vis" / f"iter_{it:07d}.png")
        trackers.image("val/fixed_batch", grid, it)
    with open(run.run_dir / "metrics.jsonl", "a") as f:
        f.write(json.dumps(record, allow_nan=True) + "\n")


def _vis_grid(run: Run, indices: list[int]) -> np.ndarray:
    """Return the image | ground truth | prediction grid of the given validation images."""
    from fcn.core.normalize import input_normalization
    from fcn.core.visualize import prediction_grid
    from fcn.data.transforms import denormalize

    images, gts, preds = [], [], []
    model, cfg = run.model, run.cfg
    was_training = model.training
    model.eval()
    with torch.no_grad():
        for index in indices:
            image, mask = run.val_set[index]
            with autocast(run.device, run.amp):
                logits = model(image.unsqueeze(0).to(run.device))
            task = str(cfg.data.task)
            images.append(
                denormalize(image, input_normalization(cfg.data.transforms), cfg.data.display_channels)
            )
            if is_sigmoid(task):
                preds.append(display_labels(task_labels(logits, task, float(cfg.eval.threshold))[0], task))
                gts.append(display_labels(mask, task, cfg.data.ignore_index))
                continue
            # The semantic head (and mask) of a two-headed model are what the grid shows.
            preds.append(class_argmax(logits[:, : cfg.model.num_classes])[0].cpu().numpy().astype(np.uint8))
            gts.append(mask.numpy().astype(np.uint8).reshape(-1, *mask.shape[-2:])[0])
    model.train(was_training)
    from fcn.data import display_names

    return prediction_grid(
        images, gts, preds, run.palette, display_names(cfg.data), ignore_index=cfg.data.ignore_index
    )
