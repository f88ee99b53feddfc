"""Prediction with a trained checkpoint: the model rebuilt from it (fcn.engines may swap in an ONNX
engine), eval.fast_path resolved and applied, softmax probabilities and class labels with test-time
augmentation (flip, scales), whole or by sliding windows, and predict.py's side: the input files
listed, and per image a class-index PNG, colour mask, overlay and legend.

fcn.api.Segmenter (predict.py, the video path, demo.py) and fcn.evaluation predict through here;
nothing here scores against ground truth (that is fcn.evaluation, which imports this module and
never the other way round)."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from PIL import Image
from torch import nn

from fcn.checkpoint import CheckpointError, atomic_write, describe_mismatch, load_checkpoint, model_weights
from fcn.config import config_from_dict, with_overrides
from fcn.engines import Engine, available, calibration_slice, model_device
from fcn.runtime import autocast, cpu_flags, native_bf16
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
