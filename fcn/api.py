"""The Python API: a checkpoint turned into a callable on images.

    from fcn import Segmenter

    seg = Segmenter.from_checkpoint("runs/toy/checkpoints/best.pt", device="cpu")
    mask = seg("photo.jpg")              # H x W uint8 class indices, what predict.py writes
    probs = seg.probabilities(photo)     # C x H x W float32 softmax
    picture = seg.overlay(photo, alpha=0.6)

predict.py (images and videos) and demo.py segment through a Segmenter, so the API, the command
line and the web page give the same pixels. An image is a path (read as predict.py reads it:
any mode to RGB, turned upright as its EXIF orientation says), a PIL image or an H x W x C uint8
array (C = 1, 3 or 4; alpha is dropped), taken as it is; a list of them gives a list of results.
"""

from __future__ import annotations

import os
import sys
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import torch
from omegaconf import DictConfig
from PIL import Image
from torch import nn

from fcn.config import ENGINES  # what runs the network (eval.engine); _load is the one place that builds it


def _load(
    checkpoint: str | os.PathLike,
    *,
    device: torch.device,
    engine: str | None,
    use_ema: bool | None,
    paths: Sequence[str],
    overrides: Sequence[str],
) -> tuple[nn.Module, DictConfig]:
    """Return (model or engine, config): the one loading call of the API (fcn.inference.loading.load, as
    predict.py and evaluate.py load). engine=None keeps the config's eval.engine. The config's
    eval.fast_path=auto is resolved here (said in one line; it may choose an engine); a fast path
    that needs images (int8's calibration) is applied on the first ones segmented."""
    if engine is not None and engine not in ENGINES:
        raise ValueError(f"engine '{engine}' is not one of {', '.join(ENGINES)}")
    from fcn.inference.loading import load

    chosen = [] if engine is None else [f"eval.engine={engine}"]
    return load(checkpoint, device, use_ema, paths, [*overrides, *chosen])


def _eval_overrides(
    fast_path: str | None,
    flip: bool | None,
    scales: Sequence[float] | None,
    mode: str | None,
    tile: int | None,
    stride: int | None,
    amp: str | None,
) -> list[str]:
    """Return the eval.* key=value overrides the keyword arguments of from_checkpoint stand for."""
    out = []
    if fast_path is not None:
        out.append(f"eval.fast_path={fast_path}")
    if flip is not None:
        out.append(f"eval.flip={'true' if flip else 'false'}")
    if scales is not None:
        out.append("eval.scales=[" + ",".join(repr(float(s)) for s in scales) + "]")
    if mode is not None:
        out.append(f"eval.mode={mode}")
    if tile is not None:
        out.append(f"eval.tile={int(tile)}")
    if stride is not None:
        out.append(f"eval.stride={int(stride)}")
    if amp is not None:
        out.append(f"eval.amp={amp}")
    return out


def as_rgb(image: Any) -> Image.Image:
    """Return an image given as a path, a PIL image or an H x W [x C] uint8 array as 8-bit RGB PIL:
    a path as predict.py reads it (fcn.data.common.read_image, upright), the others as they are
    (fcn.data.common.to_rgb: grey repeated, alpha dropped); ValueError naming what is wrong."""
    from fcn.data.common import read_image, to_rgb

    if isinstance(image, (str, os.PathLike)):
        return read_image(image, upright=True)
    if isinstance(image, Image.Image):
        return to_rgb(image)
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8:
            raise ValueError(f"an image array must be uint8 (0..255), got {image.dtype}")
        if image.ndim == 3 and image.shape[2] == 1:
            image = image[:, :, 0]
        if not (image.ndim == 2 or (image.ndim == 3 and image.shape[2] in (3, 4))):
            raise ValueError(f"an image array must be H x W x C with C = 1, 3 or 4, got shape {image.shape}")
        return to_rgb(Image.fromarray(np.ascontiguousarray(image)))
    raise ValueError(
        f"an image is a path, a PIL image or an H x W x C uint8 array, not {type(image).__name__}"
    )


def as_input(image: Any, channels: int) -> Image.Image | np.ndarray:
    """Return an image given as a path, a PIL image or an array as the model's input reader gives
    it: as_rgb for a 3-channel model; for model.in_channels=C otherwise, an H x W x C array on the
    0-255 scale (a path read as predict.py reads it, fcn.data.common.read_channels); ValueError
    naming what is wrong."""
    if channels == 3:
        return as_rgb(image)
    from fcn.data.common import read_channels, scale_pixels

    if isinstance(image, (str, os.PathLike)):
        return read_channels(image, channels, upright=True)
    array = np.asarray(image)
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim != 3 or array.shape[2] != channels:
        raise ValueError(
            f"an image for this model must be H x W x {channels} (model.in_channels), got shape {array.shape}"
        )
    return scale_pixels(array)


class Segmenter:
    """A segmentation model with its classes, palette and eval.* options: call it on an image to
    get the class-index mask predict.py writes; probabilities() and overlay() for the rest."""

    def __init__(
        self,
        model: nn.Module,
        cfg: DictConfig,
        *,
        device: torch.device | str | None = None,
        checkpoint: str | os.PathLike | None = None,
        requested_fast_path: str | None = None,
    ) -> None:
        """Wrap a loaded model (fcn.inference.loading.load_model's) and its config; most users call
        from_checkpoint instead. device defaults to where the model's parameters are."""
        from fcn.data import class_names, palette

        self.model = model
        self.cfg = cfg
        if device is None:
            from fcn.inference.engines import model_device

            device = model_device(model)
        self.device = torch.device(device)
        self.engine: str = str(cfg.eval.engine)
        """What runs the network: torch, onnxruntime or openvino (eval.engine, after fast_path=auto)."""
        self.checkpoint = None if checkpoint is None else str(checkpoint)
        self.requested_fast_path = requested_fast_path or str(cfg.eval.fast_path)
        self.classes: list[str] = class_names(cfg.data)
        """The class names in label order (label i is classes[i]; a sigmoid task: channel i's)."""
        self.task: str = str(cfg.data.task)
        """data.task: 'multiclass' (masks of class indices), 'binary' (an H x W boolean mask) or
        'multilabel' (a C x H x W boolean mask, one plane per class)."""
        self.palette: np.ndarray = palette(cfg.data)
        """(256, 3) uint8 colours indexed by label (row 255: the void colour), as predict.py's PNGs."""
        self.log: Callable[[str], None] = _note
        """Where the lines about an image go (an image too large for the whole-image pass under
        eval.max_memory, segmented in sliding windows): 'note: ...' on stderr by default; each line
        is said once."""
        self._said: set[str] = set()
        self._prepared = False

    @classmethod
    def from_checkpoint(
        cls,
        checkpoint: str | os.PathLike,
        *,
        device: str | torch.device = "auto",
        engine: str | None = None,
        fast_path: str | None = None,
        flip: bool | None = None,
        scales: Sequence[float] | None = None,
        mode: str | None = None,
        tile: int | None = None,
        stride: int | None = None,
        amp: str | None = None,
        use_ema: bool | None = None,
        config: Sequence[str | os.PathLike] = (),
        overrides: Sequence[str] = (),
    ) -> Segmenter:
        """Return the Segmenter of a checkpoint of this project (or imported reference weights), a
        folder save_pretrained wrote, or a Hugging Face Hub repository '<user>/<repo>' holding one
        (its default branch; from_pretrained takes a revision).

        device: 'auto' (CUDA, else Apple's MPS, else CPU), 'cpu', 'cuda', 'cuda:N' or 'mps'. engine: 'torch',
        'onnxruntime' or 'openvino' (None: the config's eval.engine; fast_path='auto' may choose one).
        fast_path, flip, scales, mode, tile, stride and amp override the checkpoint config's eval.*
        keys of the same names (None keeps the config's); config (YAML files) and overrides
        (key=value) are merged over it as on the command line, before the keyword arguments.
        use_ema=None follows eval.use_ema. Errors: ConfigError / ValueError / CheckpointError
        naming the file or key."""
        from fcn.core.runtime import select_device
        from fcn.inference.loading import resolve_checkpoint

        # '<user>/<repo>': its downloaded folder, so .checkpoint names the files the weights came from.
        checkpoint = resolve_checkpoint(checkpoint)
        dev = device if isinstance(device, torch.device) else select_device(str(device))
        every = [*overrides, *_eval_overrides(fast_path, flip, scales, mode, tile, stride, amp)]
        model, cfg = _load(
            checkpoint,
            device=dev,
            engine=engine,
            use_ema=use_ema,
            paths=[str(p) for p in config],
            overrides=every,
        )
        requested = fast_path
        if requested is None:
            for item in reversed(every):
                if item.startswith("eval.fast_path="):
                    requested = item.split("=", 1)[1]
                    break
        return cls(model, cfg, device=dev, checkpoint=checkpoint, requested_fast_path=requested)

    @classmethod
    def from_pretrained(
        cls,
        name: str | os.PathLike,
        *,
        mirror: str | None = None,
        revision: str | None = None,
        **options: Any,
    ) -> Segmenter:
        """Return the Segmenter of published weights: a name of the registry (python -m
        fcn.pretrained; downloaded, checked and converted into torch hub's cache on first use, from
        mirror or $FCN_DATA_MIRROR when set), a folder save_pretrained wrote, or a Hugging Face Hub
        repository '<user>/<repo>' holding one at revision (a branch, tag or commit hash: pin a
        commit to get the same files every time; huggingface_hub's cache; HF_HUB_OFFLINE honoured).
        No pickle is read from a folder, and its config is data: nothing it names is imported or
        resolved (docs/security.md). options: from_checkpoint's keyword arguments."""
        from fcn.inference.hub import REPO_ID, download_repo, is_folder
        from fcn.models.pretrained import PRETRAINED, pretrained_checkpoint

        text = str(name)
        if revision is not None and (not REPO_ID.match(text) or os.path.exists(text) or text in PRETRAINED):
            raise ValueError(f"revision={revision!r} is for a Hub repository '<user>/<repo>', not '{text}'")
        if text in PRETRAINED:
            return cls.from_checkpoint(pretrained_checkpoint(text, mirror), **options)
        if is_folder(text):
            return cls.from_checkpoint(text, **options)
        if REPO_ID.match(text) and not os.path.exists(text):
            return cls.from_checkpoint(download_repo(text, revision), **options)
        raise ValueError(
            f"'{text}' is neither a registry name ({', '.join(PRETRAINED)}), a folder nor a Hub repository "
            "'<user>/<repo>'; a .pt checkpoint goes to Segmenter.from_checkpoint"
        )

    def save_pretrained(self, directory: str | os.PathLike) -> str:
        """Write the model as a folder in the Hub's shape (model.safetensors, config.json, README.md:
        the model card with the classes, input and the run's metrics) and return its path. The
        weights are the checkpoint's (those the config's eval.use_ema picks), as from_checkpoint read
        them, before any fast path; upload it with `hf upload <user>/<repo> <directory> . --exclude "*.onnx"`."""
        from fcn.config import to_dict
        from fcn.inference.hub import run_record, write_folder

        if self.checkpoint is None:
            if not isinstance(self.model, nn.Module):
                raise ValueError("save_pretrained needs the torch model (engine=torch) or a checkpoint")
            return str(write_folder(self.model, to_dict(self.cfg), directory))
        from fcn.inference.loading import load_model

        model, cfg = load_model(self.checkpoint, "cpu")
        return str(write_folder(model, to_dict(cfg), directory, run_record(self.checkpoint)))

    # -----------------------------------------------------------------------------------------

    @property
    def num_classes(self) -> int:
        """The number of classes the model predicts."""
        return int(self.cfg.model.num_classes)

    @property
    def fast_path(self) -> str:
        """What runs, in words: the resolved eval.fast_path, or the precision when it is none
        ('fp32', 'bf16 autocast + channels-last', ...)."""
        e = self.cfg.eval
        if e.fast_path != "none":
            return str(e.fast_path)
        text = "fp32" if e.amp == "none" else f"{e.amp} autocast"
        return text + (" + channels-last" if e.channels_last else "")

    @property
    def untinted(self) -> int:
        """The label overlays leave untinted (fcn.api.untinted_label: a background class)."""
        from fcn.api import untinted_label

        return untinted_label(self.cfg)

    def __repr__(self) -> str:
        m, e = self.cfg.model, self.cfg.eval
        auto = " (auto)" if self.requested_fast_path == "auto" else ""
        return (
            f"Segmenter({m.arch} {m.backbone}, {self.num_classes} classes, engine={self.engine}, "
            f"device={self.device}, fast_path={self.fast_path}{auto}, flip={bool(e.flip)}, "
            f"scales={list(e.scales)}, mode={e.mode})"
        )

    # -----------------------------------------------------------------------------------------

    def calibrate(self, images: Iterable[Any]) -> None:
        """Apply the config's eval.fast_path to the model once (int8 calibrates on the first
        eval.calibration_images of images; unreadable ones are skipped); without this call, the
        first image segmented calibrates it. A no-op for the fast paths that need no images."""
        from fcn.inference.fastpath import prepare_fast_path

        def inputs():
            for image in images:
                try:
                    pixels = self.read(image)
                    window, _ = self.plan(pixels)  # an image over eval.max_memory is skipped
                except (ValueError, FileNotFoundError):
                    continue
                x = self._input(pixels)
                if window["mode"] == "slide":  # the window the model will see, not the whole photo
                    x = x[..., : window["tile"], : window["tile"]].clone()
                yield x

        prepare_fast_path(self.model, self.cfg, inputs())
        self._prepared = True

    def read(self, image: Any) -> Image.Image | np.ndarray:
        """Return an image (a path, a PIL image or an array) as the model's input reader gives it:
        RGB PIL for a 3-channel model, an H x W x C array for model.in_channels=C (as_input)."""
        return as_input(image, int(self.cfg.model.in_channels))

    def prepare(self, image: Any) -> tuple[Image.Image | np.ndarray, torch.Tensor | None]:
        """Return (read(image), its model input for segment(), or None where that waits for
        segment(): an image over eval.max_memory, which segment() refuses before any work): the part
        of segmenting that a reading thread can do ahead of the network (predict.py's pipeline)."""
        from fcn.inference.budget import MemoryBudgetError

        pixels = self.read(image)
        try:
            self.plan(pixels)
        except MemoryBudgetError:
            return pixels, None
        return pixels, self._input(pixels)

    def _input(self, image: Image.Image) -> torch.Tensor:
        """Return the (1, C, H, W) model input of an image as read() gives it, on the device."""
        from fcn.core.normalize import input_normalization
        from fcn.data.pixels import preprocess

        x = preprocess(image, input_normalization(self.cfg.data.transforms)).unsqueeze(0)
        return x.to(self.device)

    def _ready(self, image: Image.Image) -> None:
        if not self._prepared:
            self.calibrate([image])

    def plan(self, image: Image.Image | np.ndarray, probabilities: bool = False) -> tuple[dict, str | None]:
        """Return (eval.mode, tile, stride and window_batch for this image, the line that says why
        they differ from the config's, or None) under eval.max_memory (fcn.inference.budget.plan);
        MemoryBudgetError (a ValueError naming the size and the key) when even one window does not fit.
        A sigmoid task's labels are its thresholded probabilities: planned as probabilities."""
        from fcn.inference.budget import plan

        height, width = (image.height, image.width) if isinstance(image, Image.Image) else image.shape[:2]
        probabilities = probabilities or self.task != "multiclass"
        return plan(self.cfg, int(height), int(width), self.device, probabilities=probabilities)

    def _options(self, image: Image.Image | np.ndarray, probabilities: bool = False) -> dict:
        from fcn.inference.segment import model_heads, task_options

        window, line = self.plan(image, probabilities)
        if line is not None and line not in self._said:
            self._said.add(line)
            self.log(line)
        e = self.cfg.eval
        return dict(
            flip=bool(e.flip),
            scales=list(e.scales),
            amp=e.amp,
            channels_last=bool(e.channels_last),
            heads=model_heads(self.cfg),  # a two-headed model (SIFT Flow): each head its own softmax
            **window,
            **task_options(self.cfg),
        )

    def __call__(self, image: Any) -> np.ndarray | list[np.ndarray]:
        """Return the H x W uint8 class-index mask of an image (a list of them for a list), at the
        image's size, with the config's eval.* options: bit for bit predict.py's <stem>.png. A
        sigmoid task: a boolean mask, H x W (binary) or C x H x W (multilabel), true where the
        class's probability is above eval.threshold."""
        if isinstance(image, (list, tuple)):
            return [self(one) for one in image]
        return self.segment(self.read(image))

    def segment(self, image: Image.Image, x: torch.Tensor | None = None) -> np.ndarray:
        """Return the H x W uint8 class-index mask of an RGB PIL image (what __call__ computes; a
        sigmoid task's boolean mask). x: the image's model input made beforehand (prepare(), in a
        reading thread), else it is made here."""
        from fcn.inference.segment import predict_labels

        options = self._options(image)  # first: an image over the budget is refused before any work
        self._ready(image)
        labels = predict_labels(self.model, self._input(image) if x is None else x, **options)
        return self._mask(labels, 0)

    def _mask(self, labels: torch.Tensor, i: int) -> np.ndarray:
        """Return image i's mask of predict_labels' output, as segment() gives it."""
        if self.task != "multiclass":
            return labels[i].cpu().numpy() == 1
        if labels.ndim == 4:  # a two-headed model (SIFT Flow): the semantic head's labels
            labels = labels[:, 0]
        return labels[i].to(torch.uint8).cpu().numpy()

    def _probs(self, probs: torch.Tensor, i: int) -> np.ndarray:
        """Return image i's probabilities of predict_probs' output, as probabilities() gives them."""
        if self.task == "binary":
            return probs[i, 0].cpu().numpy()
        return probs[i, : self.num_classes].cpu().numpy()  # a two-headed model's semantic head

    def batches(self, image: Image.Image | np.ndarray, count: int) -> bool:
        """Return whether count images of this one's size (as read() gives them) may go through the
        network as one batch: on the torch engine, when eval.max_memory gives count times the
        image's pixels the whole-image pass without a word (segment_many's rule)."""
        if count < 2 or self.engine != "torch":
            return False
        height, width = (image.height, image.width) if isinstance(image, Image.Image) else image.shape[:2]
        from fcn.inference.budget import MemoryBudgetError, plan

        try:  # a batch of count images costs what one image count times as tall does
            window, line = plan(self.cfg, int(height) * count, int(width), self.device, probabilities=True)
        except MemoryBudgetError:
            return False
        return window["mode"] == "whole" and line is None

    def segment_many(
        self, images: Sequence[Image.Image | np.ndarray], probabilities: bool = False
    ) -> list[tuple[np.ndarray, np.ndarray | None]]:
        """Return (mask, probabilities or None) of each image (as read() gives them, all of one
        size): segment()'s mask and, with probabilities, probabilities()' array, from one forward of
        the whole batch where batches() allows it, else one image at a time (the server's batching)."""
        images = list(images)
        if not self.batches(images[0], len(images)):
            out = []
            for image in images:
                probs = self.probabilities(image) if probabilities else None
                out.append((self.segment(image), probs))
            return out
        from fcn.inference.segment import predict_labels, predict_probs

        options = self._options(images[0])
        self._ready(images[0])
        x = torch.cat([self._input(image) for image in images])
        labels = predict_labels(self.model, x, **options)
        probs = None
        if probabilities:
            del options["threshold"]  # probabilities: no decision
            probs = predict_probs(self.model, x, **options)
        return [
            (self._mask(labels, i), None if probs is None else self._probs(probs, i))
            for i in range(len(images))
        ]

    def probabilities(self, image: Any) -> np.ndarray | list[np.ndarray]:
        """Return the C x H x W float32 softmax of an image (a list of them for a list), averaged
        over the eval.* test-time augmentation; its argmax is __call__'s mask wherever the best
        two classes differ by more than float rounding. A sigmoid task: each class's sigmoid, H x W
        for binary (its one class), C x H x W for multilabel; above eval.threshold is __call__'s mask."""
        if isinstance(image, (list, tuple)):
            return [self.probabilities(one) for one in image]
        from fcn.inference.segment import predict_probs

        pixels = self.read(image)
        options = self._options(pixels, probabilities=True)
        self._ready(pixels)
        with torch.inference_mode():
            del options["threshold"]  # probabilities: no decision
            probs = predict_probs(self.model, self._input(pixels), **options)
        return self._probs(probs, 0)

    def display(self, mask: np.ndarray) -> np.ndarray:
        """Return the H x W uint8 labels a mask is drawn in with self.palette: a class-index mask as
        it is; a sigmoid task's boolean mask as 0 (no class) or 1 + the class (multilabel: the highest
        class present; overlay() blends the colours of overlapping classes)."""
        from fcn.core.tasks import display_labels

        mask = np.asarray(mask)
        return display_labels(mask.astype(np.uint8), self.task) if self.task != "multiclass" else mask

    def colorize(self, mask: np.ndarray) -> np.ndarray:
        """Return the H x W x 3 uint8 colour picture of a mask in the palette (predict.py's _color.png)."""
        from fcn.core.visualize import colorize

        return colorize(self.display(mask), self.palette)

    def overlay(self, image: Any, alpha: float = 0.5, mask: np.ndarray | None = None) -> np.ndarray:
        """Return the H x W x 3 uint8 image tinted with its mask's colours at opacity alpha, the
        background class left untinted: predict.py's _overlay.png. mask: one computed before
        (seg(image)), else it is predicted."""
        from fcn.core.visualize import overlay
        from fcn.data.common import display_pixels

        pixels = self.read(image)
        if mask is None:
            mask = self.segment(pixels)
        shown = display_pixels(pixels, self.cfg.data.display_channels)  # data.display_channels
        if self.task == "multilabel":
            from fcn.core.visualize import overlay_planes

            return overlay_planes(
                shown, np.asarray(mask), self.palette[1 : len(self.classes) + 1], alpha=alpha
            )
        return overlay(shown, self.display(mask), self.palette, alpha=alpha, ignore_index=self.untinted)

    def shares(self, mask: np.ndarray) -> list[tuple[int, str, float]]:
        """Return (label, class name, fraction of the pixels) of each label present in a mask,
        largest first (ties by label); void and labels without a name are named by their number. A
        sigmoid task's boolean mask: (display label: class index + 1, the palette row of its colour;
        name, share) of each class present (multilabel: shares may add up to more than 1 where
        classes overlap), so that the demo's legend shows the colours of colorize() and overlay()."""
        if self.task != "multiclass":
            planes = np.asarray(mask, dtype=bool).reshape(-1, *np.shape(mask)[-2:])
            found = [(c + 1, name, float(p.mean())) for c, (name, p) in enumerate(zip(self.classes, planes))]
            return sorted([f for f in found if f[2] > 0], key=lambda f: (-f[2], f[0]))
        counts = np.bincount(np.asarray(mask, dtype=np.int64).ravel(), minlength=256)
        total = max(1, int(counts.sum()))
        present = [int(c) for c in np.flatnonzero(counts)]
        present.sort(key=lambda c: (-counts[c], c))
        return [
            (c, self.classes[c] if c < len(self.classes) else str(c), float(counts[c] / total))
            for c in present
        ]


def _note(line: str) -> None:
    print(f"note: {line}", file=sys.stderr, flush=True)


def untinted_label(cfg: DictConfig) -> int:
    """Return the label overlays leave untinted: a background class (named 'background' or 'bg'),
    so that the objects stand out on the photo, else the ignore index."""
    from fcn.data import class_names

    if cfg.data.task != "multiclass":  # display label 0: no class
        return 0
    return 0 if class_names(cfg.data)[0].lower() in ("background", "bg") else int(cfg.data.ignore_index)
