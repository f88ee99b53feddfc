"""Inference on trained checkpoints: load a model, predict with test-time augmentation, score a
validation split at native resolution (evaluate.py) and segment a user's images (predict.py)."""

from __future__ import annotations

import json
import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from PIL import Image
from torch import nn

from fcn.checkpoint import CheckpointError, atomic_write, describe_mismatch, load_checkpoint, model_weights
from fcn.config import config_from_dict, to_dict, with_overrides
from fcn.data.common import VOID
from fcn.data.loaders import DataLoader
from fcn.engines import Engine, available, calibration_slice, model_device, to_engine
from fcn.runtime import autocast, cpu_flags, native_bf16, select_device
from fcn.sliding import argmax_heads, model_logits, softmax_heads, window_options

if TYPE_CHECKING:
    from fcn.api import Segmenter

AUTO_ENGINES = ("onnxruntime", "openvino")
"""The engines eval.fast_path=auto picks on a CPU without native bf16, in order of preference."""
IMAGE_SUFFIXES = (
    ".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm", ".npy"
)  # fmt: skip
"""Files a directory given to predict.py contributes (other files in it are skipped)."""


def _check_weights(model: nn.Module, state: dict, path: str, cfg: DictConfig) -> None:
    """Raise CheckpointError in one line when state's names or shapes do not fit model."""
    problems = describe_mismatch(model.state_dict(), state)
    if problems:
        m = cfg.model
        raise CheckpointError(
            f"{path}: weights do not fit model.arch={m.arch} backbone={m.backbone} geometry={m.geometry} "
            f"num_classes={m.num_classes}: {problems}; do not override model.* keys of a checkpoint"
        )


def load_model(
    checkpoint_path: str | os.PathLike,
    device: torch.device | str = "cpu",
    use_ema: bool | None = None,
    paths: Sequence[str] = (),
    overrides: Sequence[str] = (),
) -> tuple[nn.Module, DictConfig]:
    """Return (model in eval mode on device, config) rebuilt from a checkpoint of this project or
    from weights imported in the reference naming; use_ema=None follows the config's eval.use_ema."""
    model, cfg, _ = _load_model(checkpoint_path, device, use_ema, paths, overrides)
    return model, cfg


def _load_model(
    checkpoint_path: str | os.PathLike,
    device: torch.device | str,
    use_ema: bool | None,
    paths: Sequence[str],
    overrides: Sequence[str],
) -> tuple[nn.Module, DictConfig, str]:
    """Return (model, config, 'ema' | 'model': which weights were loaded)."""
    path = str(checkpoint_path)
    ckpt = load_checkpoint(path, map_location="cpu")
    if not isinstance(ckpt, dict) or "model" not in ckpt or "config" not in ckpt:
        raise CheckpointError(f"{path}: not a pytorch-fcn checkpoint (it needs 'model' and 'config' entries)")
    cfg = config_from_dict(ckpt["config"], source=path, paths=paths, overrides=overrides)
    cfg = resolve_fast_path(cfg, torch.device(device))
    if use_ema is None:
        use_ema = bool(cfg.eval.use_ema)
    from fcn.models import build_model, resolve_normalization

    cfg = resolve_normalization(cfg)  # a no-op for train.py's checkpoints, which hold it resolved
    # Never download backbone weights nor read another checkpoint: the weights come from this one.
    build_cfg = with_overrides(cfg, ["model.pretrained=false", "model.init_from=''"], source=path)
    model = build_model(build_cfg.model)
    state, which = model_weights(ckpt, use_ema)
    _check_weights(model, state, path, cfg)
    model.load_state_dict(state)
    model.to(device).eval()
    if cfg.eval.channels_last:
        model.to(memory_format=torch.channels_last)
    return model, cfg, which


def resolve_fast_path(cfg: DictConfig, device: torch.device, log: bool = True) -> DictConfig:
    """Return cfg with eval.fast_path=auto replaced by what it stands for on device, said in one
    line. The one place of the rule, from bench/engines.py's measurements (docs/engines.md):

    - on a GPU: fp32 (eval.amp is the lever there);
    - with eval.engine onnxruntime or openvino given: that engine in fp32;
    - on a CPU with native bf16 (AVX-512 BF16, AMX): bf16 autocast + channels-last in torch;
    - else the first installed of ONNX Runtime, OpenVINO (fp32 on the cached ONNX export: 1.6x
      torch's fp32 on VGG16 and ResNet-18 FCN-8s at 500x500 on AVX2, where winograd gives 1.1-1.6x;
      ONNX Runtime first, within 5% of OpenVINO or ahead in every run but the most loaded one);
    - else winograd where NNPACK is built in, else fp32.

    int8 is never chosen: its results are an approximation to check first."""
    if cfg.eval.fast_path != "auto":
        return cfg
    engine = cfg.eval.engine
    if device.type != "cpu":
        changes, why = ["eval.fast_path=none"], f"fp32 on {device} (the CPU fast paths do not apply)"
    elif engine != "torch":
        changes, why = ["eval.fast_path=none"], f"{engine} fp32 (eval.engine={engine} was given)"
    elif native_bf16(device):
        changes = ["eval.fast_path=none", "eval.amp=bf16", "eval.channels_last=true"]
        flags = "/".join(sorted({"avx512_bf16", "amx_bf16"} & cpu_flags())) or "native bf16"
        why = f"bf16 autocast + channels-last (this CPU has {flags})"
    elif any(available(e) for e in AUTO_ENGINES):
        chosen = next(e for e in AUTO_ENGINES if available(e))
        changes = ["eval.fast_path=none", f"eval.engine={chosen}"]
        why = (
            f"{chosen} fp32 on the ONNX export (no native bf16 on this CPU; {chosen} is installed: "
            "the fastest exact engine in bench/engines.py)"
        )
    elif torch.backends.nnpack.is_available():
        changes, why = (
            ["eval.fast_path=winograd"],
            "winograd (no native bf16 on this CPU and neither openvino nor onnxruntime installed: "
            "the fastest exact torch path)",
        )
    else:
        changes, why = ["eval.fast_path=none"], "fp32 (no native bf16, no other engine and no NNPACK)"
    if log:
        print(f"eval.fast_path=auto: {why}", flush=True)
    return with_overrides(cfg, changes, source="eval.fast_path=auto")


def prepare_fast_path(
    model: nn.Module, cfg: DictConfig, images: Iterable[torch.Tensor], log: bool = True
) -> None:
    """Apply cfg.eval.fast_path to model in place once; int8 calibrates on the first
    cfg.eval.calibration_images of ``images`` ((1, channels, H, W) tensors as the model takes them; with
    eval.mode=slide, their top-left tile, the size the model will see)."""
    from fcn.fastpath import apply_fast_path

    kind = cfg.eval.fast_path
    if kind == "none" or getattr(model, "fast_path", "none") == kind:
        return
    if isinstance(model, Engine):
        model.apply_fast_path(kind, calibration_slice(images, cfg), log=log)
        return
    device = model_device(model)
    calibration = (x.to(device) for x in calibration_slice(images, cfg))
    apply_fast_path(model, kind, calibration, log=log)
    model.fast_path = kind


def _scaled_size(height: int, width: int, scale: float) -> tuple[int, int]:
    return max(1, int(round(height * scale))), max(1, int(round(width * scale)))


@torch.inference_mode()
def predict_probs(
    model: nn.Module,
    images: torch.Tensor,
    *,
    flip: bool = False,
    scales: Sequence[float] = (1.0,),
    amp: str = "none",
    channels_last: bool = False,
    mode: str = "whole",
    tile: int = 512,
    stride: int = 341,
    window_batch: int = 4,
    heads: Sequence[int] | None = None,
) -> torch.Tensor:
    """Return softmax probabilities (N, C, H, W) float32 at the input's size, averaged over the
    scales (input resized bilinearly, logits resized back) and, with flip, the mirrored input; each
    of them predicted whole or by sliding windows (mode, tile, stride, window_batch: fcn.sliding).
    heads: the channels of each head of a two-headed model (SIFT Flow's [33, 3]), each its own softmax."""
    if images.ndim != 4:
        raise ValueError(
            f"predict_probs expects images of shape (N, channels, H, W), got {tuple(images.shape)}"
        )
    scales = [float(s) for s in scales] or [1.0]
    height, width = images.shape[-2:]
    window = dict(mode=mode, tile=tile, stride=stride, window_batch=window_batch)
    total = None
    count = 0
    with autocast(images.device, amp):
        for scale in scales:
            x = images
            if scale != 1.0:
                size = _scaled_size(height, width, scale)
                x = F.interpolate(images, size=size, mode="bilinear", align_corners=False)
            for mirrored in (False, True) if flip else (False,):
                xi = x.flip(-1) if mirrored else x
                logits = model_logits(model, xi, channels_last, **window).float()
                if mirrored:
                    logits = logits.flip(-1)
                if logits.shape[-2:] != (height, width):
                    logits = F.interpolate(logits, size=(height, width), mode="bilinear", align_corners=False)
                probs = softmax_heads(logits, heads)
                del logits  # at a photo's size each (N, C, H, W) float32 tensor is a gigabyte
                total = probs if total is None else total.add_(probs)
                count += 1
    return total.div_(count)


def predict_labels(
    model: nn.Module,
    images: torch.Tensor,
    *,
    flip: bool = False,
    scales: Sequence[float] = (1.0,),
    amp: str = "none",
    channels_last: bool = False,
    mode: str = "whole",
    tile: int = 512,
    stride: int = 341,
    window_batch: int = 4,
    heads: Sequence[int] | None = None,
) -> torch.Tensor:
    """Return predicted class indices (N, H, W) int64: argmax of the logits, or of the averaged
    probabilities when flip or scales ask for test-time augmentation; whole or by sliding windows.
    With heads (a two-headed model's channels per head), (N, K, H, W): each head's own argmax."""
    window = dict(mode=mode, tile=tile, stride=stride, window_batch=window_batch)
    if flip or [float(s) for s in scales] != [1.0]:
        probs = predict_probs(
            model,
            images,
            flip=flip,
            scales=scales,
            amp=amp,
            channels_last=channels_last,
            heads=heads,
            **window,
        )
        return argmax_heads(probs, heads)
    with torch.inference_mode(), autocast(images.device, amp):
        return argmax_heads(model_logits(model, images, channels_last, **window), heads)


def segment(
    model: nn.Module,
    image: Image.Image,
    cfg: DictConfig,
    *,
    flip: bool | None = None,
    scales: Sequence[float] | None = None,
    amp: str | None = None,
    channels_last: bool | None = None,
) -> np.ndarray:
    """Return the predicted uint8 class-index mask (H, W) of one PIL image of any mode and size;
    test-time augmentation and precision default to the config's eval.* keys, as does whole or
    sliding-window inference (eval.mode)."""
    from fcn.data.transforms import input_normalization, preprocess

    e = cfg.eval
    x = preprocess(image, input_normalization(cfg.data.transforms)).unsqueeze(0)
    x = x.to(model_device(model))
    labels = predict_labels(
        model,
        x,
        flip=bool(e.flip) if flip is None else flip,
        scales=list(e.scales) if scales is None else scales,
        amp=e.amp if amp is None else amp,
        channels_last=bool(e.channels_last) if channels_last is None else channels_last,
        heads=model_heads(cfg),
        **window_options(cfg),
    )
    if labels.ndim == 4:  # a two-headed model (SIFT Flow): the semantic head's labels
        labels = labels[:, 0]
    return labels[0].to(torch.uint8).cpu().numpy()


def model_heads(cfg: DictConfig) -> list[int] | None:
    """Return the channels of each head of a two-headed model ([semantic, geometric] classes for
    model.geometric_classes > 0), or None for the usual one head."""
    geometric = int(cfg.model.geometric_classes)
    return [int(cfg.model.num_classes), geometric] if geometric else None


# ---------------------------------------------------------------------------------------------
# Output files


def save_index_png(mask: np.ndarray, palette: np.ndarray, path: str | os.PathLike) -> None:
    """Write a class-index mask as a palette ('P' mode) PNG, atomically: pixel values are the class
    indices (255 = void), the palette colours them in any viewer, as VOC's SegmentationClass PNGs."""
    if mask.ndim != 2:
        raise ValueError(f"{path}: an index mask must be 2-D, got shape {mask.shape}")
    image = Image.fromarray(np.asarray(mask, dtype=np.uint8), mode="P")
    image.putpalette(np.asarray(palette, dtype=np.uint8).reshape(-1)[: 256 * 3].tolist())

    def write(tmp: Path) -> None:
        with open(tmp, "xb") as f:
            image.save(f, format="PNG")

    atomic_write(path, write)


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


# ---------------------------------------------------------------------------------------------
# evaluate.py


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
) -> dict:
    """Return the metrics dict (ConfusionMatrix.compute() plus 'confusion') of model on dataset at
    each image's native resolution, pixels labelled ignore_index left out; optionally write each
    prediction as <id>.png in palette. geometric_classes > 0 (SIFT Flow's two-headed net, masks
    2 x H x W): the metrics are the semantic head's, plus 'geometric_pixel_acc' and 'geometric'
    (the geometric head's ConfusionMatrix.compute()); predictions and per-image scores are semantic.
    window: window_options() (whole or sliding windows); None is whole. per_image adds
    'per_image': one image_scores() dict per image, with its 'id', 'index', 'height', 'width'."""
    from tqdm import tqdm

    from fcn.metrics import ConfusionMatrix

    device = model_device(model)
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=False,
        num_workers=num_workers,
        collate_fn=_SizedCollate(ignore_index),
        pin_memory=device.type == "cuda",
    )
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
    for images, masks, sizes in bar:
        images = images.to(device, non_blocking=True)
        masks = masks.to(device, non_blocking=True)
        options = dict(flip=flip, scales=scales, amp=amp, channels_last=channels_last, heads=heads, **window)
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
                position = len(rows)
                rows.append({"id": str(ids[position]), "index": position, "height": h, "width": w, **scores})
        if save_predictions is not None:
            for pred, (h, w) in zip(preds.cpu().numpy().astype(np.uint8), sizes):
                save_index_png(pred[:h, :w], palette, Path(save_predictions) / f"{ids[index]}.png")
                index += 1
    metrics = matrix.compute()
    metrics["confusion"] = matrix.mat.cpu().tolist()
    if geo is not None:
        metrics["geometric"] = geo.compute()
        metrics["geometric_pixel_acc"] = metrics["geometric"]["pixel_acc"]
    if per_image:
        metrics["per_image"] = rows
    return metrics


def image_scores(pred: torch.Tensor, mask: torch.Tensor, num_classes: int, ignore_index: int = VOID) -> dict:
    """Return one image's pixel_acc, mean_iou and per-class iou (list): the IU of a class absent
    from both its ground truth and its prediction is NaN, and the mean is over the others (the
    classes present in the image's ground truth or prediction); NaN where nothing is labelled."""
    from fcn.metrics import ConfusionMatrix

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


def worst_grid(ev: Evaluation, rows: Sequence[dict]) -> np.ndarray:
    """Return the image | ground truth | prediction grid (fcn.visualize.prediction_grid) of the given
    per-image rows, predicted again one by one as evaluate.py predicts (eval.* options)."""
    from fcn.data import class_names, palette
    from fcn.data.transforms import denormalize, input_normalization
    from fcn.visualize import prediction_grid

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
        )
        pred = pred[:, 0] if pred.ndim == 4 else pred  # the semantic head of a two-headed model
        images.append(denormalize(image, input_normalization(cfg.data.transforms), cfg.data.display_channels))
        gts.append(mask.numpy().astype(np.uint8).reshape(-1, *mask.shape[-2:])[0])
        preds.append(pred[0].cpu().numpy().astype(np.uint8))
    return prediction_grid(images, gts, preds, palette(cfg.data), class_names(cfg.data))


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
) -> Evaluation:
    """Return the model of a checkpoint and its config's data.val split (listed, not yet read);
    errors here are the command line's, the config's or the input files'."""
    from fcn.data import build_dataset
    from fcn.data.transforms import build_transforms

    model, cfg, which = _load_model(checkpoint, select_device(device), None, paths, overrides)
    model = to_engine(model, cfg, checkpoint, which)
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
) -> dict:
    """Return the report of a prepared evaluation: the checkpoint scored on its data.val split at
    native resolution with the config's eval.* test-time augmentation; the metrics, the per-class
    IU/accuracy by class name, the confusion matrix and what was evaluated (and with per_image,
    'per_image': evaluate_model's rows)."""
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
    )
    names = class_names(cfg.data)
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
    (fcn.visualize.confusion_image, iou_chart), titled with the split and the mean IU."""
    from fcn.data import class_names, palette
    from fcn.visualize import confusion_image, iou_chart, save_png

    names = class_names(cfg.data)
    v = cfg.data.val
    title = f"{v.name} '{v.split}', {report['num_images']} images: mean IU {100 * report['mean_iou']:.1f}"
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


# ---------------------------------------------------------------------------------------------
# predict.py


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


def untinted_label(cfg: DictConfig) -> int:
    """Return the label overlays leave untinted: a background class (named 'background' or 'bg'),
    so that the objects stand out on the photo, else the ignore index."""
    from fcn.data import class_names

    return 0 if class_names(cfg.data)[0].lower() in ("background", "bg") else int(cfg.data.ignore_index)


def predict_files(
    segmenter: Segmenter,
    files: Sequence[Path],
    output_dir: str | os.PathLike,
    *,
    alpha: float = 0.5,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
) -> tuple[int, list[str]]:
    """Segment every image file (as list_images lists them) with a fcn.api.Segmenter and write, per
    image, <stem>.png (class indices, palette PNG), <stem>_color.png, <stem>_overlay.png (input
    size) and <stem>_legend.png (classes present); return (images done, error lines of the files
    that could not be read). int8 calibrates on the readable files."""
    from tqdm import tqdm

    from fcn.visualize import legend, save_png

    if log is None:

        def log(line: str) -> None:
            tqdm.write(line, file=sys.stderr)

    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    errors: list[str] = []
    segmenter.calibrate(files)
    done = 0
    for file, stem in tqdm(
        list(zip(files, output_stems(files))), desc="predict", unit="image", disable=not progress
    ):
        try:
            image = segmenter.read(file)
        except (ValueError, FileNotFoundError) as exc:
            errors.append(str(exc))
            log(f"error: {exc}")
            continue
        mask = segmenter.segment(image)
        save_index_png(mask, segmenter.palette, out / f"{stem}.png")
        save_png(segmenter.colorize(mask), out / f"{stem}_color.png")
        save_png(segmenter.overlay(image, alpha=alpha, mask=mask), out / f"{stem}_overlay.png")
        present = [int(c) for c in np.unique(mask) if c < len(segmenter.classes)]
        save_png(legend(present, segmenter.classes, segmenter.palette), out / f"{stem}_legend.png")
        done += 1
    return done, errors
