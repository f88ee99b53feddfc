"""U-Net's decoder on the FCN backbones (``model.arch=unet``): not one of the paper's nets.

FCN's decoder scores each stride and adds the upsampled scores; U-Net's (Ronneberger et al. 2015, as
segmentation_models_pytorch's ``Unet`` builds it on a classification encoder) refines features at
every stride up to the input's: from the stride-32 features, each of the five ``decoder`` blocks
upsamples 2x (nearest), concatenates the backbone's skip feature of that stride where the backbone
has one (strides 16, 8, 4, 2, and 1 on VGG16; fcn.models.backbones with finest_stride=1) and applies
two 3x3 convolution + BatchNorm + ReLU blocks, with UNET_DECODER_CHANNELS channels (smp's default
(256, 128, 64, 32, 16)); ``score``, a 1x1 convolution, gives the logits at stride 1. A stride the
backbone has no map of (ConvNeXt's 4x4 stem: none at 2) is upsampled and refined without a skip.

Any input size: every backbone gives ceil(H / s) pixels at stride s, so the 2x upsampled map has at
least as many as the next finer skip and is cropped to it from the top left, as the 'same' geometry's
fusion crops (smp instead refuses sizes that are not multiples of 32). Only model.geometry=same: the
paper's pad-100 geometry offsets the maps, which U-Net's concatenation has no crops for.
"""

from __future__ import annotations

from typing import Any, Dict, Mapping, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fcn.config import UNET_UNUSED_OPTIONS, is_timm
from fcn.models.backbones import build_backbone, load_torchvision_weights, torchvision_state_dict

UNET_DECODER_CHANNELS = (256, 128, 64, 32, 16)
"""Output channels of the decoder blocks at strides 16, 8, 4, 2 and 1 (smp's Unet default)."""
UNET_STRIDES = (16, 8, 4, 2, 1)


def conv_bn_relu(in_channels: int, out_channels: int) -> nn.Sequential:
    """Return a 3x3 convolution (no bias: BatchNorm follows), BatchNorm and ReLU (smp's Conv2dReLU)."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class DecoderBlock(nn.Module):
    """Upsample 2x (nearest), crop to the skip's size and concatenate it (or crop to ``size`` where
    there is no skip and a size is given), then two conv_bn_relu blocks."""

    def __init__(self, in_channels: int, skip_channels: int, out_channels: int):
        super().__init__()
        self.conv1 = conv_bn_relu(in_channels + skip_channels, out_channels)
        self.conv2 = conv_bn_relu(out_channels, out_channels)

    def forward(self, x: Tensor, skip: Tensor | None, size: Tuple[int, int] | None = None) -> Tensor:
        x = F.interpolate(x, scale_factor=2.0, mode="nearest")
        # Sizes taken from tensors' shapes, never computed from them: an ONNX export traces them
        # as the graph's own shapes, so it stays right at any input size.
        if skip is not None:
            x = torch.cat([x[..., : skip.shape[-2], : skip.shape[-1]], skip], 1)
        elif size is not None:
            x = x[..., : size[0], : size[1]]
        return self.conv2(self.conv1(x))


class UNet(nn.Module):
    """U-Net's decoder on an FCN backbone: forward maps (N, in_channels, H, W) to logits
    (N, num_classes, H, W), through the backbone's stride-32 features refined up the skips."""

    arch = "unet"

    def __init__(
        self,
        num_classes: int = 21,
        pretrained: bool | str = False,
        *,
        backbone: str = "resnet18",
        geometry: str = "same",
        dropout: str = "element",
        dropout_p: float = 0.5,
        in_channels: int = 3,
        decoder_channels: Sequence[int] = UNET_DECODER_CHANNELS,
        **unused: Any,
    ):
        super().__init__()
        # build_model passes every FCN key; those U-Net has no use for must be at their defaults.
        defaults = {**UNET_UNUSED_OPTIONS, "late_fusion": ()}
        for key, value in unused.items():
            if key not in defaults:
                raise TypeError(f"UNet() got an unexpected keyword argument '{key}'")
            if (tuple(value) if isinstance(value, list) else value) != defaults[key]:
                raise ValueError(f"{key}={value!r} is an FCN decoder's option; model.arch=unet has none")
        if geometry != "same":
            raise ValueError(f"geometry='{geometry}': model.arch=unet needs geometry='same'")
        if len(decoder_channels) != len(UNET_STRIDES):
            raise ValueError(
                f"decoder_channels={list(decoder_channels)} must give {len(UNET_STRIDES)} widths"
            )
        self.num_classes, self.backbone_name, self.geometry = num_classes, backbone, geometry
        self.in_channels = in_channels
        timm_weights = pretrained if is_timm(backbone) else False
        self.backbone = build_backbone(backbone, geometry, dropout, dropout_p, timm_weights, in_channels, 1)
        channels: Mapping[int, int] = self.backbone.channels
        blocks, previous = [], channels[32]
        for stride, width in zip(UNET_STRIDES, decoder_channels):
            blocks.append(DecoderBlock(previous, channels.get(stride, 0), width))
            previous = width
        self.decoder = nn.ModuleList(blocks)
        self.score = nn.Conv2d(previous, num_classes, 1)
        self._init_decoder()
        state = None if is_timm(backbone) else torchvision_state_dict(backbone, pretrained)
        if state is not None:
            source = pretrained if isinstance(pretrained, str) else f"torchvision {backbone}"
            load_torchvision_weights(self.backbone, state, source)

    def _init_decoder(self) -> None:
        # smp's initialize_decoder / initialize_head: Kaiming-uniform (fan_in, ReLU) convolutions,
        # BatchNorm at 1 and 0, a Xavier-uniform score layer with a zero bias.
        for module in self.decoder.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_uniform_(module.weight, mode="fan_in", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        nn.init.xavier_uniform_(self.score.weight)
        nn.init.zeros_(self.score.bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.decode(self.backbone(x), (x.shape[-2], x.shape[-1]))

    def decode(self, feats: Dict[int, Tensor], size: Tuple[int, int]) -> Tensor:
        """Return logits of the input size from the backbone's features keyed by stride."""
        x = feats[32]
        for stride, block in zip(UNET_STRIDES, self.decoder):
            # A stride without a skip keeps its 2x map whole (at least ceil(H / s) pixels, top-left
            # aligned); the last block crops to the input's size.
            x = block(x, feats.get(stride), size if stride == 1 else None)
        return self.score(x)
