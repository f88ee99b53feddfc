"""The bilinear kernel and the three ways of upsampling score maps.

Every upsampler here brings an ``n``-pixel map up by an even ``factor`` with one of two alignments:

- ``geometry='paper'``: the output has ``(n + 1) * factor`` pixels and input pixel ``i`` lands on
  output coordinate ``i * factor + factor - 0.5``, exactly what the reference's bias-free
  Deconvolution with kernel ``2 * factor``, stride ``factor`` and no padding does (``upscore`` k64/s32,
  ``upscore2`` k4/s2, ``upscore16`` k32/s16, ``upscore_pool4`` k4/s2, ``upscore8`` k16/s8 in
  voc-fcn*/train.prototxt). The crop offsets of the paper's nets (5, 9, 19, 27, 31) assume this.
- ``geometry='same'``: the output has ``n * factor`` pixels and input pixel ``i`` lands on output
  coordinate ``i * factor + factor / 2 - 0.5``, the centre of the ``factor x factor`` block it came
  from (``F.interpolate(..., align_corners=False)``'s convention), so maps align without offsets.

The three modes share those alignments, so any of them can stand in for another:

- ``'transposed'``: the paper's deconvolution, bilinear-initialised, frozen unless learnable.
- ``'bilinear'``: bilinear interpolation (no parameters); equal to the frozen deconvolution away
  from the border, where the deconvolution fades towards zero and this one clamps.
- ``'nearest_conv'``: nearest upsampling and a 1x1 convolution (identity-initialised, always
  trainable: learning it is the point of the mode).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

UPSAMPLING_MODES = ("transposed", "bilinear", "nearest_conv")


def upsample_filt(size: int) -> Tensor:
    """Return the (size, size) bilinear kernel of the reference's ``surgery.upsample_filt``."""
    factor = (size + 1) // 2
    center = factor - 1 if size % 2 == 1 else factor - 0.5
    og = torch.arange(size, dtype=torch.float64)
    filt = 1 - (og - center).abs() / factor
    return torch.outer(filt, filt).float()


def bilinear_weight(channels: int, size: int) -> Tensor:
    """Return a (channels, channels, size, size) deconvolution weight: upsample_filt on the channel
    diagonal, zero elsewhere (the reference's ``surgery.interp``)."""
    weight = torch.zeros(channels, channels, size, size)
    index = torch.arange(channels)
    weight[index, index] = upsample_filt(size)
    return weight


def _check(factor: int, geometry: str) -> None:
    if factor < 2 or factor % 2:
        raise ValueError(f"upsampling factor {factor} must be an even number >= 2")
    if geometry not in ("paper", "same"):
        raise ValueError(f"geometry='{geometry}' must be 'paper' or 'same'")


def _resize(x: Tensor, factor: int, geometry: str, mode: str) -> Tensor:
    """Return x interpolated by factor with the alignment of ``geometry`` (see the module docstring)."""
    if geometry == "paper":
        # Pad one pixel, interpolate, then drop factor/2 pixels per side: input i then lands on
        # i * factor + factor - 0.5 in an output of (n + 1) * factor pixels, like the deconvolution.
        x = F.pad(x, (1, 1, 1, 1), mode="replicate")
    h, w = x.shape[-2:]
    align = {"align_corners": False} if mode == "bilinear" else {}
    y = F.interpolate(x, size=(h * factor, w * factor), mode=mode, **align)
    if geometry == "paper":
        half = factor // 2
        y = y[..., half : y.shape[-2] - half, half : y.shape[-1] - half]
    return y


class BilinearDeconv(nn.Module):
    """A bias-free transposed convolution (kernel 2*factor, stride factor) with bilinear init."""

    def __init__(self, channels: int, factor: int, geometry: str = "paper", learnable: bool = False):
        super().__init__()
        _check(factor, geometry)
        self.factor = factor
        # 'paper': no padding, as the reference's Deconvolution layers; 'same': padding factor/2
        # trims the output to n * factor pixels centred on the input blocks.
        self.padding = 0 if geometry == "paper" else factor // 2
        # The reference freezes these layers (param { lr_mult: 0 }); learnable=True trains them.
        self.weight = nn.Parameter(bilinear_weight(channels, 2 * factor), requires_grad=learnable)

    def forward(self, x: Tensor) -> Tensor:
        return F.conv_transpose2d(x, self.weight, stride=self.factor, padding=self.padding)

    def extra_repr(self) -> str:
        return f"factor={self.factor}, padding={self.padding}, learnable={self.weight.requires_grad}"


class Interpolate(nn.Module):
    """Bilinear interpolation by factor, aligned like the deconvolution of the same geometry."""

    def __init__(self, factor: int, geometry: str = "paper"):
        super().__init__()
        _check(factor, geometry)
        self.factor, self.geometry = factor, geometry

    def forward(self, x: Tensor) -> Tensor:
        return _resize(x, self.factor, self.geometry, "bilinear")

    def extra_repr(self) -> str:
        return f"factor={self.factor}, geometry={self.geometry}"


class NearestConv(nn.Module):
    """Nearest upsampling by factor followed by a 1x1 convolution (identity-initialised)."""

    def __init__(self, channels: int, factor: int, geometry: str = "paper"):
        super().__init__()
        _check(factor, geometry)
        self.factor, self.geometry = factor, geometry
        self.weight = nn.Parameter(torch.eye(channels).reshape(channels, channels, 1, 1))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: Tensor) -> Tensor:
        # A 1x1 convolution commutes with nearest upsampling; running it first costs factor^2 less.
        return _resize(F.conv2d(x, self.weight, self.bias), self.factor, self.geometry, "nearest")

    def extra_repr(self) -> str:
        return f"factor={self.factor}, geometry={self.geometry}"


def make_upsampling(
    mode: str, channels: int, factor: int, geometry: str = "paper", learnable: bool = False
) -> nn.Module:
    """Return the upsampler of ``mode`` ('transposed', 'bilinear' or 'nearest_conv') for factor."""
    if mode == "transposed":
        return BilinearDeconv(channels, factor, geometry, learnable)
    if mode == "bilinear":
        return Interpolate(factor, geometry)
    if mode == "nearest_conv":
        return NearestConv(channels, factor, geometry)
    raise ValueError(f"upsampling='{mode}' is not one of {', '.join(UPSAMPLING_MODES)}")
