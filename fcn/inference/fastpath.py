"""Faster inference on the CPU: Winograd 3x3 convolutions (same results) and int8 quantization (close).

``eval.fast_path`` picks one for ``evaluate.py`` and ``predict.py`` (training never uses them):

- ``winograd``: 3x3 stride-1 convolutions on large maps run through NNPACK's Winograd transform, which
  needs fewer multiplications than the direct kernels PyTorch picks at batch 1 (it uses NNPACK only
  for batches of 16 or more). The numbers are fp32's up to rounding (relative error ~1e-6). It pays
  off on VGG16 at VOC sizes; on small maps (ResNet's deep layers, small images) layers stay on oneDNN.
- ``int8``: the backbone is quantized after training (torch.ao FX graph mode, per-channel int8
  weights, int8 activations whose ranges are observed on ``eval.calibration_images`` images of the
  data being processed; no labels are used). The head (score layers, upsampling, fusion) stays fp32.
  The result is an approximation of fp32's: measure the agreement on your model
  (``bench/fast_paths.py --checkpoint``) before trusting its numbers.

Both are CPU paths: on a GPU, bf16/fp16 autocast (``eval.amp``) is the lever. ``auto`` chooses by the
CPU and the installed engines (``fcn.inference.fastpath.resolve_fast_path``): bf16 autocast + channels-last
where bf16 is native (AVX-512 BF16 or AMX), else ONNX Runtime or OpenVINO fp32 where installed
(fcn/inference/engines.py), else ``winograd``; never ``int8``. ``bench/model.py`` measures their speed and agreement
against fp32.
"""

from __future__ import annotations

import copy
import time
import warnings
from typing import Iterable

import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from torch import Tensor, nn

from fcn.config import FAST_PATHS, with_overrides
from fcn.core.runtime import cpu_flags, native_bf16
from fcn.inference.engines import Engine, available, calibration_slice, model_device

# NNPACK's transforms pay off on large maps only. Measured layer by layer against oneDNN at batch 1
# (2 AVX2 cores): 1.3-1.7x from 40x40 pixels and C_in * C_out * H * W >= 1e8 up (VGG16 at 500x500:
# 64 channels at 350x350 1.4x, 256 at 88x88 1.7x, 512 at 44x44 1.3x); 2-9x slower below (512 channels
# at 12x12: 0.26x; 64 at 96x96: 0.67x). Smaller layers keep oneDNN's direct kernels.
WINOGRAD_MIN_PIXELS = 40 * 40
WINOGRAD_MIN_WORK = 1e8


class WinogradConv2d(nn.Conv2d):
    """A 3x3 stride-1 Conv2d whose fp32 CPU forward on a large enough map runs through NNPACK's
    Winograd transform (see WINOGRAD_MIN_PIXELS); anything else runs F.conv2d as nn.Conv2d does."""

    def _conv_forward(self, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        if x.device.type == "cpu" and x.dtype == weight.dtype == torch.float32 and x.dim() == 4:
            pixels = x.shape[-2] * x.shape[-1]
            if (
                pixels >= WINOGRAD_MIN_PIXELS
                and self.in_channels * self.out_channels * pixels >= WINOGRAD_MIN_WORK
            ):
                return torch._nnpack_spatial_convolution(x.contiguous(), weight, bias, list(self.padding))
        return F.conv2d(x, weight, bias, self.stride, self.padding, self.dilation, self.groups)


def winograd_eligible(conv: nn.Module) -> bool:
    """Return whether NNPACK can compute this layer: a plain Conv2d, 3x3, stride 1, no dilation or
    groups, zero padding below the kernel size (so not the reference's conv1_1 with its pad 100)."""
    return (
        type(conv) is nn.Conv2d
        and conv.kernel_size == (3, 3)
        and conv.stride == (1, 1)
        and conv.dilation == (1, 1)
        and conv.groups == 1
        and conv.padding_mode == "zeros"
        and isinstance(conv.padding, tuple)
        and all(0 <= p < 3 for p in conv.padding)
    )


def use_winograd(model: nn.Module) -> int:
    """Turn the model's eligible convolutions (see winograd_eligible) into WinogradConv2d in place;
    return how many. Raises ValueError when this PyTorch build has no NNPACK."""
    if not torch.backends.nnpack.is_available():
        raise ValueError("eval.fast_path=winograd needs NNPACK, which this PyTorch build lacks; use none")
    torch._nnpack_available()  # initialises NNPACK: its convolutions fail until this has run once
    count = 0
    for module in model.modules():
        if winograd_eligible(module):
            module.__class__ = WinogradConv2d  # same parameters and state_dict, another forward
            count += 1
    return count


def _quantized_engine() -> str:
    """Return the quantized engine for this CPU: x86 (fbgemm + oneDNN) where built, else the first."""
    engines = torch.backends.quantized.supported_engines
    for engine in ("x86", "fbgemm", "qnnpack"):
        if engine in engines:
            return engine
    raise ValueError("eval.fast_path=int8 needs a quantized engine, which this PyTorch build lacks")


def quantize_int8(model: nn.Module, images: Iterable[Tensor]) -> int:
    """Quantize ``model.backbone`` to int8 in place, calibrated on ``images`` ((N, 3, H, W) batches,
    normalised as the model expects); return how many images calibrated it.

    Post-training static quantization in FX graph mode with the engine's default mapping: per-channel
    symmetric int8 weights, activation ranges from histogram observers, BatchNorm folded into its
    convolution, ReLU fused. The model must be in eval mode on the CPU.
    """
    from torch.ao.quantization import get_default_qconfig_mapping
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    if model.training:
        raise ValueError("quantize_int8 needs a model in eval mode (call model.eval() first)")
    engine = _quantized_engine()
    torch.backends.quantized.engine = engine
    batches = iter(images)
    first = next(batches, None)
    if first is None:
        raise ValueError("eval.fast_path=int8 needs at least one calibration image, got none")
    count = 0
    with warnings.catch_warnings():
        # torch.ao.quantization announces its move to torchao; the pinned torch still ships it.
        warnings.filterwarnings(
            "ignore", message=r"torch\.ao\.quantization is deprecated", category=DeprecationWarning
        )
        warnings.filterwarnings("ignore", message=r".*quant_min and quant_max.*")
        warnings.filterwarnings("ignore", message=r".*quantized tensor.*")
        prepared = prepare_fx(
            copy.deepcopy(model.backbone), get_default_qconfig_mapping(engine), example_inputs=(first,)
        )
        with torch.inference_mode():
            for batch in (first, *batches):
                prepared(batch)
                count += batch.shape[0]
        model.backbone = convert_fx(prepared)
    return count


def check_fast_path(kind: str, device: torch.device) -> None:
    """Raise ValueError unless fast path ``kind`` can run on ``device`` (both fast paths are CPU paths)."""
    if kind not in FAST_PATHS:
        raise ValueError(f"eval.fast_path='{kind}' must be one of {', '.join(FAST_PATHS)}")
    if kind == "auto":  # a choice, not a path: fcn.inference.fastpath.resolve_fast_path makes it
        raise ValueError(
            "eval.fast_path=auto must be resolved first (fcn.inference.fastpath.resolve_fast_path)"
        )
    if kind != "none" and device.type != "cpu":
        raise ValueError(
            f"eval.fast_path={kind} runs on the CPU only (device is {device}); "
            "on a GPU use eval.amp=bf16 or fp16, or pass --device cpu"
        )


def apply_fast_path(
    model: nn.Module, kind: str, calibration: Iterable[Tensor] = (), log: bool = True
) -> nn.Module:
    """Apply eval.fast_path ``kind`` to ``model`` in place ('int8' calibrates on ``calibration``);
    print one line saying what was done unless log is False; return the model."""
    device = next(model.parameters()).device
    check_fast_path(kind, device)
    start = time.perf_counter()
    if kind == "winograd":
        done = f"{use_winograd(model)} convolutions use NNPACK's Winograd transform on large maps"
    elif kind == "int8":
        count = quantize_int8(model, calibration)
        done = f"backbone quantized to int8 ({torch.backends.quantized.engine}), calibrated on {count} image{'s' * (count != 1)}"
    else:
        return model
    if log:
        print(f"eval.fast_path={kind}: {done} in {time.perf_counter() - start:.1f} s", flush=True)
    return model


AUTO_ENGINES = ("onnxruntime", "openvino")
"""The engines eval.fast_path=auto picks on a CPU without native bf16, in order of preference."""


def resolve_fast_path(cfg: DictConfig, device: torch.device, log: bool = True) -> DictConfig:
    """Return cfg with eval.fast_path=auto replaced by what it stands for on device, said in one
    line. The one place of the rule, from bench/engines.py's measurements (docs/performance.md):

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
