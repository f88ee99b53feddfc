"""Input normalisation arithmetic, without torch: the named normalisations, the statistics they
stand for, and the per-channel mean/std of N-channel input.

The network input is (x / 255 - mean) / std for 0-255 pixels x (torchvision's and timm's
convention), or the reference's x - mean on BGR pixels ('caffe'); fcn.data.transforms applies
them, fcn.models resolves a timm backbone's statistics with extend_stats, and the ONNX export
records them.
"""

from __future__ import annotations

from typing import Any, NamedTuple

NORMALIZATIONS = ("auto", "torchvision", "caffe")
"""The named normalisations ('auto' with no mean/std resolved is torchvision's)."""

# ImageNet statistics of RGB images in [0, 1], as torchvision's pretrained backbones expect.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# The reference's BGR mean on 0-255 pixels (fcn.berkeleyvision.org, voc_layers.py: self.mean).
CAFFE_MEAN_BGR = (104.00698793, 116.66876762, 122.67891434)
# Statistics 'auto' gives the channels past the third (depth, near infrared, ...): values spread
# over [0, 1] land roughly in [-2, 2], the range ImageNet's statistics give RGB pixels.
EXTRA_MEAN, EXTRA_STD = 0.5, 0.25


class MeanStd(NamedTuple):
    """Per-channel mean and std of pixels in [0, 1]: the network input is (x / 255 - mean) / std
    (timm's pretrained_cfg convention; torchvision's ImageNet values are one such pair)."""

    mean: tuple[float, ...]
    std: tuple[float, ...]


def extend_stats(mean: tuple[float, ...], std: tuple[float, ...], channels: int) -> MeanStd:
    """Return RGB statistics fitted to `channels`: the first `channels` of them, then
    EXTRA_MEAN/EXTRA_STD for every channel past the third ('auto' normalisation of N channels)."""
    extra = max(channels - len(mean), 0)
    return MeanStd(
        tuple(float(v) for v in mean[:channels]) + (EXTRA_MEAN,) * extra,
        tuple(float(v) for v in std[:channels]) + (EXTRA_STD,) * extra,
    )


def channel_stats(normalization: str | MeanStd, channels: int) -> MeanStd:
    """Return the MeanStd that normalizes `channels`-channel input: 'auto'/'torchvision' give
    ImageNet's for channels 0-2 and 0.5/0.25 after; a MeanStd must have `channels` values."""
    if isinstance(normalization, MeanStd):
        if len(normalization.mean) != channels:
            raise ValueError(
                f"normalization has {len(normalization.mean)} means for an image of {channels} channels; "
                "set data.transforms.mean/std to model.in_channels values each"
            )
        return normalization
    if normalization == "caffe":
        raise ValueError(f"normalization 'caffe' is for 3-channel BGR images, not {channels} channels")
    return extend_stats(IMAGENET_MEAN, IMAGENET_STD, channels)


def input_normalization(tr_cfg: Any) -> str | MeanStd:
    """Return what normalize() takes for cfg.data.transforms: its mean/std when set (normalization
    'auto'), else its normalization name.

    A timm backbone's mean/std reach the config through fcn.models.resolve_normalization (train.py
    and the checkpoint loaders call it); 'auto' with none set is torchvision's.
    """
    if tr_cfg.mean:
        return MeanStd(tuple(float(v) for v in tr_cfg.mean), tuple(float(v) for v in tr_cfg.std))
    return str(tr_cfg.normalization)
