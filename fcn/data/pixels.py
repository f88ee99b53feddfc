"""The network input of an image, without torchvision: a PIL image or an array as a CxHxW tensor,
normalised ('torchvision', 'caffe', 'auto' or a MeanStd: fcn.core.normalize), and back to a picture.

Inference reads images through here (fcn.inference, fcn.api), so that segmenting with a checkpoint
does not import torchvision (a second or more of start-up); the training transforms
(fcn.data.transforms) end with the same normalize.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import PIL.Image
import torch

from fcn.core.normalize import (
    CAFFE_MEAN_BGR,
    IMAGENET_MEAN,
    IMAGENET_STD,
    NORMALIZATIONS,
    MeanStd,
    channel_stats,
)
from fcn.data.images import LayerInput, scale_pixels, to_rgb

# Normalisation as one multiply and one subtract per channel on 0-255 pixels:
# torchvision's (x / 255 - mean) / std, and the reference's x - mean (after RGB -> BGR).
_TORCHVISION_SCALE = 1.0 / (255.0 * torch.tensor(IMAGENET_STD).view(3, 1, 1))
_TORCHVISION_SHIFT = torch.tensor(IMAGENET_MEAN).view(3, 1, 1) / torch.tensor(IMAGENET_STD).view(3, 1, 1)
_CAFFE_SHIFT = torch.tensor(CAFFE_MEAN_BGR).view(3, 1, 1)


def _affine(normalization: str | MeanStd, channels: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    """Return (scale, shift) with input = x * scale - shift for 0-255 pixels x of `channels` channels."""
    if not isinstance(normalization, MeanStd) and channels == 3:
        return _TORCHVISION_SCALE, _TORCHVISION_SHIFT
    stats = channel_stats(normalization, channels)
    mean = torch.tensor(stats.mean).view(channels, 1, 1)
    std = torch.tensor(stats.std).view(channels, 1, 1)
    return 1.0 / (255.0 * std), mean / std


def _check_normalization(normalization: str | MeanStd) -> None:
    if isinstance(normalization, MeanStd):
        n = len(normalization.mean)
        if n < 1 or len(normalization.std) != n or min(normalization.std) <= 0:
            raise ValueError(f"normalization {normalization} needs one mean and one positive std per channel")
        return
    if normalization not in NORMALIZATIONS:
        raise ValueError(
            f"normalization='{normalization}' is not one of {', '.join(NORMALIZATIONS)} "
            "(set data.transforms.normalization)"
        )


def _pil_tensor(image: PIL.Image.Image) -> torch.Tensor:
    """Return an RGB PIL image's pixels as a uint8 CxHxW view of HxWxC memory (as torchvision's
    pil_to_tensor gives them)."""
    array = np.array(image, copy=True)
    return torch.from_numpy(array).view(image.size[1], image.size[0], -1).permute(2, 0, 1)


def image_tensor(image: Any) -> torch.Tensor:
    """Return the image as a CxHxW tensor: uint8, or float32 on the 0-255 scale, or
    float32 network input as it is (a LayerInput: the authors' data-layer input, fcn/data/paper.py).

    From a PIL image (made RGB), an HxWxC or HxW array (fcn.data.images.read_channels: uint8, or
    any other type scaled by scale_pixels), or a uint8/float32 CxHxW tensor.
    """
    if isinstance(image, PIL.Image.Image):
        return _pil_tensor(to_rgb(image))
    if isinstance(image, LayerInput):
        if image.ndim != 3:
            raise TypeError(f"a LayerInput must be H x W x C, got shape {image.shape}")
        array = np.ascontiguousarray(image.view(np.ndarray), dtype=np.float32)
        return torch.from_numpy(array).permute(2, 0, 1)
    if isinstance(image, np.ndarray) and image.ndim in (2, 3):
        array = scale_pixels(image if image.ndim == 3 else image[:, :, None])
        # A CxHxW view of the HxWxC pixels: the interleaved layout the uint8 resize kernels are fast on.
        return torch.from_numpy(np.ascontiguousarray(array)).permute(2, 0, 1)
    if isinstance(image, torch.Tensor) and image.dtype in (torch.uint8, torch.float32) and image.ndim == 3:
        return image
    raise TypeError(
        f"image must be a PIL image, an HxWxC array or a uint8/float32 tensor of shape CxHxW, got "
        f"{type(image).__name__} {getattr(image, 'dtype', '')} {tuple(getattr(image, 'shape', ()))}"
    )


def normalize(image: torch.Tensor, normalization: str | MeanStd) -> torch.Tensor:
    """Return the float CxHxW network input for a CxHxW image of 0-255 pixels (uint8 or float;
    'caffe', 'torchvision', 'auto' = torchvision's, or a MeanStd; see channel_stats for C != 3)."""
    _check_normalization(normalization)
    image = image.as_subclass(torch.Tensor)
    channels = image.shape[0]
    if normalization == "caffe" and channels != 3:
        # Only a data layer's input (fcn/data/paper.py: LayerInput, not normalised here) has more.
        raise ValueError(
            f"normalization 'caffe' is for 3-channel BGR images, not {channels} channels (a nyud net's "
            "stacked input is read by its dataset reader: evaluate.py)"
        )
    if normalization == "caffe":
        # The reference feeds BGR pixels in 0..255 minus the mean (voc_layers.py: load_image).
        out = image.flip(0).to(torch.float32, memory_format=torch.contiguous_format)
        return out.sub_(_CAFFE_SHIFT)
    out = image.to(torch.float32, memory_format=torch.contiguous_format, copy=True)
    scale, shift = _affine(normalization, channels)
    return out.mul_(scale).sub_(shift)


def denormalize(image: torch.Tensor, normalization: str | MeanStd, display: Sequence[int] = ()) -> np.ndarray:
    """Return the uint8 HxWx3 RGB picture of a normalised CxHxW network input (for visualisation).

    It shows the channels `display` names (three as R, G, B; one as grey; empty: channels 0-2, or
    channel 0 as grey when there are fewer than three: data.display_channels).
    """
    _check_normalization(normalization)
    x = image.detach().to("cpu", torch.float64)
    channels = x.shape[0]
    if normalization == "caffe" and channels != 3:
        # A data layer's stacked input (NYUDv2's modalities, fcn/data/paper.py): its first three
        # channels (the colour's BGR for [color, ...], else HHA) are shown with the Caffe mean added
        # back; a lone depth channel stands for all three. Further channels stay as they are.
        if channels < 3:
            x, channels = x[:1].expand(3, -1, -1), 3
        bgr = x[:3] + torch.tensor(CAFFE_MEAN_BGR, dtype=torch.float64).view(3, 1, 1)
        x = torch.cat([bgr.flip(0), x[3:]])
    elif normalization == "caffe":
        x = (x + torch.tensor(CAFFE_MEAN_BGR, dtype=torch.float64).view(3, 1, 1)).flip(0)
    else:
        stats = channel_stats(normalization, channels)
        std = torch.tensor(stats.std, dtype=torch.float64).view(channels, 1, 1)
        mean = torch.tensor(stats.mean, dtype=torch.float64).view(channels, 1, 1)
        x = (x * std + mean) * 255.0
    shown = list(display) or ([0, 1, 2] if channels >= 3 else [0])
    if max(shown) >= channels or len(shown) not in (1, 3):
        raise ValueError(f"display channels {shown} must be one or three of the image's {channels}")
    x = x[shown] if len(shown) == 3 else x[shown].expand(3, -1, -1)
    return x.round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()


def preprocess(image: PIL.Image.Image | np.ndarray, normalization: str | MeanStd) -> torch.Tensor:
    """Return the float CxHxW network input for a user image (any PIL mode, made RGB; or an HxWxC
    array from read_channels), at its native size."""
    return normalize(image_tensor(image), normalization)
