"""Inference engines: the checkpoint's model run by PyTorch, or exported once to ONNX and run by ONNX
Runtime or OpenVINO on the CPU (``eval.engine``).

An engine is a drop-in replacement for the torch model in fcn.inference.loading: called on an (N, 3, H, W)
float32 normalised CPU tensor it returns the (N, num_classes, H, W) float32 logits, so test-time
augmentation, sliding windows, pre/post-processing and the outputs are the torch path's code.

- ``onnxruntime``: one session on the dynamic-shape export (any batch, height and width).
- ``openvino``: the export read once, then reshaped to an input's static shape and compiled for it
  (OpenVINO picks faster kernels for static shapes) from the second time that shape is met, the
  dynamic-shape model serving its first time; compiled models are kept per shape in a bounded LRU
  (OPENVINO_CACHE_SHAPES). A video, a folder of same-size photos or VOC's few common sizes compile
  once per size; a stream of distinct native sizes pays no compilation per image.
  The precision hint is f32: on a CPU with bf16, OpenVINO would otherwise compute in bf16.

The export (fcn.inference.onnx.export_onnx) is cached beside the checkpoint as ``<checkpoint>.<key>.onnx``,
the key a digest of the checkpoint's bytes and the export options (which weights, opset, exporter
format), so an export is reused until the checkpoint changes; older exports of the same checkpoint
name are removed when a new one is written. A checkpoint in a read-only directory is exported to
``$XDG_CACHE_HOME/pytorch-fcn`` (``~/.cache/pytorch-fcn``) instead.

``eval.fast_path=int8`` on an engine is that runtime's static post-training int8: ONNX Runtime's QDQ
quantization (onnxruntime.quantization.quantize_static: per-channel int8 weights, int8 activations
ranged by MinMax calibration) or OpenVINO's through NNCF (nncf.quantize, performance preset), both
calibrated on the first ``eval.calibration_images`` images of the data being processed; the
quantized model lives in memory only (it depends on that data).
"""

from __future__ import annotations

import hashlib
import importlib.util
import itertools
import logging
import os
import re
import tempfile
import time
from collections import OrderedDict
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import torch
from omegaconf import DictConfig
from torch import Tensor, nn

from fcn.config import ENGINES

EXPORT_FORMAT = 1
"""Bumped when the export itself changes (fcn.export, the model code's traced graph), so that older
cached exports are not reused."""
OPENVINO_CACHE_SHAPES = 8
"""Compiled OpenVINO models kept, one per input shape (least recently used dropped first)."""
PIP = {"onnxruntime": "onnxruntime", "openvino": "openvino", "nncf": "nncf", "onnx": "onnx onnxscript"}


def require(package: str, what: str) -> None:
    """Raise ValueError in one line naming the pip command unless package can be imported."""
    names = ["onnx", "onnxscript"] if package == "onnx" else [package]
    missing = [n for n in names if importlib.util.find_spec(n) is None]
    if missing:
        raise ValueError(
            f"{what} needs {', '.join(missing)}, which is not installed: pip install {PIP[package]}"
        )


def available(engine: str) -> bool:
    """Return whether engine can run here: torch always, the others when their package is installed
    (and ONNX export with it)."""
    if engine == "torch":
        return True
    needed = [engine, "onnx", "onnxscript"]
    return all(importlib.util.find_spec(n) is not None for n in needed)


def model_device(model: nn.Module | Engine) -> torch.device:
    """Return the device a model (its first parameter's) or an engine (the CPU) computes on."""
    if isinstance(model, nn.Module):
        return next(model.parameters()).device
    return model.device


# ---------------------------------------------------------------------------------------------
# The ONNX export, cached beside the checkpoint


def file_digest(path: str | os.PathLike) -> str:
    """Return the SHA-256 hex digest of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def graph_config(cfg: DictConfig) -> str:
    """Return, as canonical JSON, every config value an export depends on: the model.* keys that
    build the graph (all but pretrained and init_from, whose weights are replaced by the
    checkpoint's) and the metadata written into the file (classes, palette, normalisation, task,
    threshold: fcn.inference.onnx.export_metadata)."""
    import json

    from fcn.config import to_dict
    from fcn.inference.onnx import export_metadata

    model = {k: v for k, v in to_dict(cfg.model).items() if k not in ("pretrained", "init_from")}
    return json.dumps({"model": model, "metadata": export_metadata(cfg)}, sort_keys=True, default=str)


def export_key(checkpoint: str | os.PathLike, weights: str, opset: int, cfg: DictConfig) -> str:
    """Return the cache key of an export: 16 hex digits of the checkpoint's bytes, the options and
    graph_config(cfg), so that a changed model.* key (or class list) in a folder's config, with the
    same weights file, makes a new export instead of reusing a stale one."""
    text = f"{file_digest(checkpoint)} weights={weights} opset={opset} format={EXPORT_FORMAT} {graph_config(cfg)}"
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _cache_dirs(checkpoint: Path) -> list[Path]:
    home = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return [checkpoint.parent, home / "pytorch-fcn"]


def find_cached_onnx(checkpoint: str | os.PathLike, weights: str, cfg: DictConfig) -> Path | None:
    """Return the cached ONNX export of the checkpoint's ``weights`` ('model' or 'ema') under cfg
    (see export_key) if one was written (beside it, or in ~/.cache/pytorch-fcn), else None: then
    the model need not be built."""
    from fcn.inference.onnx import DEFAULT_OPSET

    ckpt = Path(checkpoint)
    name = f"{ckpt.name}.{export_key(ckpt, weights, DEFAULT_OPSET, cfg)}.onnx"
    for directory in _cache_dirs(ckpt):
        if (directory / name).is_file():
            return directory / name
    return None


def cached_onnx(
    model: nn.Module, cfg: DictConfig, checkpoint: str | os.PathLike, weights: str, log: bool = True
) -> Path:
    """Return the ONNX export of model (the checkpoint's ``weights``: 'model' or 'ema'): the cached
    file when one with this key exists, else a new export written atomically (older exports of the
    same checkpoint name removed). An export that fails raises RuntimeError in one line."""
    from fcn.inference.onnx import DEFAULT_OPSET, export_metadata, export_onnx

    found = find_cached_onnx(checkpoint, weights, cfg)
    if found is not None:
        return found
    require("onnx", "exporting the checkpoint to ONNX")
    ckpt = Path(checkpoint)
    name = f"{ckpt.name}.{export_key(ckpt, weights, DEFAULT_OPSET, cfg)}.onnx"
    pattern = re.compile(re.escape(ckpt.name) + r"\.[0-9a-f]{16}\.onnx")
    last_error: OSError | None = None
    for directory in _cache_dirs(ckpt):
        path = directory / name
        start = time.perf_counter()
        try:
            directory.mkdir(parents=True, exist_ok=True)
            export_onnx(model.cpu().eval(), path, opset=DEFAULT_OPSET, metadata=export_metadata(cfg))
        except OSError as exc:  # a read-only directory: try the next one
            last_error = exc
            continue
        except Exception as exc:  # the exporter's own errors are of many kinds
            message = " ".join(str(exc).split())[:300] or type(exc).__name__
            raise RuntimeError(f"{ckpt}: export to ONNX failed ({type(exc).__name__}: {message})") from None
        for stale in directory.iterdir():
            if stale.name != name and pattern.fullmatch(stale.name):
                stale.unlink(missing_ok=True)
        if log:
            print(
                f"eval.engine: exported {ckpt} to {path} in {time.perf_counter() - start:.1f} s", flush=True
            )
        return path
    raise OSError(f"{ckpt}: cannot write its ONNX export anywhere ({last_error})")


# ---------------------------------------------------------------------------------------------
# Engines


class Engine:
    """An exported model run by another runtime: call it as the torch model (see the module doc)."""

    name = "engine"
    device = torch.device("cpu")

    def __init__(self, onnx_path: str | os.PathLike, threads: int | None = None) -> None:
        self.onnx_path = str(onnx_path)
        self.threads = int(threads or torch.get_num_threads())
        self.fast_path = "none"
        self.training = False

    def eval(self) -> Engine:
        """Return self (an engine only infers; for code written for nn.Module)."""
        return self

    def __call__(self, x: Tensor) -> Tensor:
        if x.device.type != "cpu":
            raise ValueError(f"eval.engine={self.name} runs on the CPU; got an input on {x.device}")
        array = np.ascontiguousarray(x.detach().float().numpy())
        return torch.from_numpy(self.run(array))

    def run(self, array: np.ndarray) -> np.ndarray:
        """Return the logits of a contiguous float32 (N, 3, H, W) array."""
        raise NotImplementedError

    def quantize(self, calibration: Iterable[Tensor]) -> int:
        """Replace the model by its static int8 version calibrated on calibration; return the count."""
        raise NotImplementedError

    def apply_fast_path(self, kind: str, calibration: Iterable[Tensor] = (), log: bool = True) -> None:
        """Apply eval.fast_path kind ('none' or 'int8') once, saying so in one line."""
        if kind == self.fast_path or kind == "none":
            return
        if kind != "int8":
            raise ValueError(
                f"eval.fast_path={kind} is a torch path; with eval.engine={self.name} use none or int8"
            )
        start = time.perf_counter()
        count = self.quantize(calibration)
        self.fast_path = kind
        if log:
            print(
                f"eval.fast_path=int8: {self.name} static int8, calibrated on {count} "
                f"image{'s' * (count != 1)} in {time.perf_counter() - start:.1f} s",
                flush=True,
            )


def _calibration_arrays(calibration: Iterable[Tensor]) -> list[np.ndarray]:
    arrays = [np.ascontiguousarray(x.detach().cpu().float().numpy()) for x in calibration]
    if not arrays:
        raise ValueError("eval.fast_path=int8 needs at least one calibration image, got none")
    return arrays


class OnnxRuntimeEngine(Engine):
    """ONNX Runtime's CPU execution provider on the dynamic-shape export."""

    name = "onnxruntime"

    def __init__(self, onnx_path: str | os.PathLike, threads: int | None = None) -> None:
        super().__init__(onnx_path, threads)
        self.session = self._session(self.onnx_path)

    def _session(self, model: str | bytes):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = self.threads  # as torch's: the same cores for a fair choice
        options.inter_op_num_threads = 1
        # Idle workers sleep instead of spinning: predict.py's reading and writing threads share the
        # cores (pipelined predict_files 1.12x faster on 2 cores; one forward as fast; performance.md).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])

    def run(self, array: np.ndarray) -> np.ndarray:
        (logits,) = self.session.run(["logits"], {"image": array})
        return logits

    def quantize(self, calibration: Iterable[Tensor]) -> int:
        from onnxruntime.quantization import (
            CalibrationDataReader,
            CalibrationMethod,
            QuantFormat,
            QuantType,
            quantize_static,
        )

        arrays = _calibration_arrays(calibration)

        class Reader(CalibrationDataReader):
            def __init__(self) -> None:
                self.items = iter(arrays)

            def get_next(self):
                item = next(self.items, None)
                return None if item is None else {"image": item}

        root = logging.getLogger()  # quantize_static advises on the root logger, a line per layer
        level = root.level
        root.setLevel(logging.ERROR)
        try:
            with tempfile.TemporaryDirectory(prefix="fcn-int8-") as tmp:
                out = Path(tmp) / "int8.onnx"
                # S8S8 (int8 activations and weights) in QDQ, ONNX Runtime's recommended default:
                # uint8 activations (U8S8) lost a whole class of the tests' model on an AVX2 CPU
                # (VPMADDUBSW saturates), 85% of pixels agreeing against 99.9% with S8S8.
                quantize_static(
                    self.onnx_path,
                    out,
                    Reader(),
                    quant_format=QuantFormat.QDQ,
                    per_channel=True,
                    activation_type=QuantType.QInt8,
                    weight_type=QuantType.QInt8,
                    calibrate_method=CalibrationMethod.MinMax,
                )
                self.session = self._session(out.read_bytes())
        finally:
            root.setLevel(level)
        return len(arrays)


class OpenVinoEngine(Engine):
    """OpenVINO's CPU plugin, compiled per static input shape (bounded LRU of compiled models)."""

    name = "openvino"

    def __init__(
        self,
        onnx_path: str | os.PathLike,
        threads: int | None = None,
        precision: str = "f32",
        max_shapes: int = OPENVINO_CACHE_SHAPES,
    ) -> None:
        import openvino as ov

        super().__init__(onnx_path, threads)
        self.core = ov.Core()
        self.model = self.core.read_model(self.onnx_path)
        self.precision = precision
        self.max_shapes = int(max_shapes)
        self.compiled: OrderedDict[tuple, object] = OrderedDict()
        self.seen: set[tuple] = set()  # shapes met once (compiled statically when met again)
        self.dynamic = None  # the dynamic-shape model, compiled when a shape is first met

    def _compile(self, shape: tuple | None):
        model = self.model
        if shape is not None:
            model = model.clone()
            model.reshape({model.input(0).get_any_name(): list(shape)})
        config = {
            "INFERENCE_NUM_THREADS": self.threads,
            "INFERENCE_PRECISION_HINT": self.precision,  # f32: exact; the CPU plugin's default may be bf16
            "PERFORMANCE_HINT": "LATENCY",
        }
        return self.core.compile_model(model, "CPU", config)

    def compiled_for(self, shape: Sequence[int]):
        """Return the model compiled for input shape: from the LRU; compiled for it on the second
        time it is met; the first time, the dynamic-shape model (compiled once), so that a stream
        of distinct sizes (native-size evaluation) does not pay a compilation per image."""
        key = tuple(int(s) for s in shape)
        if key in self.compiled:
            self.compiled.move_to_end(key)
            return self.compiled[key]
        if key not in self.seen:
            if len(self.seen) >= 4096:
                self.seen.clear()
            self.seen.add(key)
            if self.dynamic is None:
                self.dynamic = self._compile(None)
            return self.dynamic
        compiled = self._compile(key)
        self.compiled[key] = compiled
        while len(self.compiled) > self.max_shapes:
            self.compiled.popitem(last=False)
        return compiled

    def run(self, array: np.ndarray) -> np.ndarray:
        compiled = self.compiled_for(array.shape)
        return compiled(array)[0]

    def quantize(self, calibration: Iterable[Tensor]) -> int:
        require("nncf", "eval.fast_path=int8 with eval.engine=openvino")
        import nncf

        arrays = _calibration_arrays(calibration)
        logging.getLogger("nncf").setLevel(logging.ERROR)
        self.model = nncf.quantize(
            self.model,
            nncf.Dataset(arrays),
            preset=nncf.QuantizationPreset.PERFORMANCE,
            subset_size=len(arrays),
        )
        self.compiled.clear()
        self.dynamic = None
        return len(arrays)


def make_engine(engine: str, onnx_path: str | os.PathLike, threads: int | None = None) -> Engine:
    """Return the engine of that name on an ONNX file (package missing: one line with the pip command)."""
    if engine == "onnxruntime":
        require("onnxruntime", "eval.engine=onnxruntime")
        return OnnxRuntimeEngine(onnx_path, threads)
    if engine == "openvino":
        require("openvino", "eval.engine=openvino")
        return OpenVinoEngine(onnx_path, threads)
    raise ValueError(f"eval.engine='{engine}' must be one of {', '.join(ENGINES)}")


def check_engine(engine: str) -> None:
    """Raise ValueError in one line naming the pip command unless engine's packages are installed."""
    if engine == "torch":
        return
    require(engine, f"eval.engine={engine}")
    require("onnx", f"eval.engine={engine} (the checkpoint is exported to ONNX)")


def to_engine(
    model: nn.Module, cfg: DictConfig, checkpoint_path: str | os.PathLike, weights: str, log: bool = True
) -> nn.Module | Engine:
    """Return model itself for eval.engine=torch, else its ONNX export (cached beside the
    checkpoint) in that engine, on the CPU."""
    engine = cfg.eval.engine
    if engine == "torch":
        return model
    check_engine(engine)  # an engine runs on the CPU whatever device the torch model was built on
    return make_engine(engine, cached_onnx(model, cfg, checkpoint_path, weights, log=log))


def calibration_slice(images: Iterable[Tensor], cfg: DictConfig) -> Iterable[Tensor]:
    """Return the first eval.calibration_images of images (each its top-left tile with eval.mode=slide)."""
    e = cfg.eval
    side = int(e.tile) if e.mode == "slide" else None
    return (x[..., :side, :side] for x in itertools.islice(images, int(e.calibration_images)))
