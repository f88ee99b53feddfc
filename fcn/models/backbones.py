"""Backbones: VGG16 convolutionised as in the paper, and other torchvision classifiers.

A backbone maps an image batch to a dict of feature maps keyed by their stride: ``{8: ..., 16: ...,
32: ...}``, and says how many channels each has in ``.channels``. For VGG16 these are the reference's
``pool3``, ``pool4`` and ``drop7`` (fc7 after ReLU and dropout); for ResNets the outputs of
``layer2``, ``layer3`` and ``layer4``; for MobileNetV3 the last blocks before the stride-16 and
stride-32 downsamplings and the final 1x1 convolution. The last one passes through dropout (the
reference's drop7; an added one for non-VGG backbones) before the FCN's ``score_fr``.

Every backbone rounds sizes up: a stride-s map of an H-pixel input has ceil(H / s) pixels, so the
'same' geometry's fusion needs no offsets. VGG16 (pools without padding) centres pixel u of a
stride-s map on input coordinate s*u + (s - 1)/2, which is the 'same' upsamplers' convention; the
torchvision ResNets and MobileNetV3 (padded stride-2 convolutions) centre it on s*u, so their score
maps land (s - 1)/2 input pixels off after upsampling, as in torchvision's own segmentation models.

ImageNet weights come from torchvision (``pretrained=True``; downloaded into torch hub's cache when
online) or from a local file holding torchvision's state dict for that backbone
(``pretrained='/path/to/file.pth'``). Nothing is downloaded at import time.
"""

from __future__ import annotations

import os
import urllib.parse
from typing import Callable, Dict, Mapping, Tuple

import torch
import torch.nn.functional as F
import torchvision
from torch import Tensor, nn
from torchvision.models import (
    MobileNet_V3_Large_Weights,
    ResNet18_Weights,
    ResNet34_Weights,
    ResNet50_Weights,
    ResNet101_Weights,
    VGG16_BN_Weights,
    VGG16_Weights,
)

from fcn.checkpoint import CheckpointError, read_torch_file
from fcn.config import BACKBONES, VGG_BACKBONES

# torchvision's ImageNet weights per backbone. VGG16 is the paper's ImageNet model
# (VGG16_Weights.IMAGENET1K_V1); the ResNet-50/101 V2 weights are torchvision's better recipe.
IMAGENET_WEIGHTS = {
    "vgg16": VGG16_Weights.IMAGENET1K_V1,
    "vgg16_bn": VGG16_BN_Weights.IMAGENET1K_V1,
    "resnet18": ResNet18_Weights.IMAGENET1K_V1,
    "resnet34": ResNet34_Weights.IMAGENET1K_V1,
    "resnet50": ResNet50_Weights.IMAGENET1K_V2,
    "resnet101": ResNet101_Weights.IMAGENET1K_V2,
    "mobilenet_v3_large": MobileNet_V3_Large_Weights.IMAGENET1K_V1,
}

# VGG16's thirteen 3x3 convolutions in the reference's naming, five max-pools between the groups.
VGG16_BLOCKS = (
    (("conv1_1", 3, 64), ("conv1_2", 64, 64)),
    (("conv2_1", 64, 128), ("conv2_2", 128, 128)),
    (("conv3_1", 128, 256), ("conv3_2", 256, 256), ("conv3_3", 256, 256)),
    (("conv4_1", 256, 512), ("conv4_2", 512, 512), ("conv4_3", 512, 512)),
    (("conv5_1", 512, 512), ("conv5_2", 512, 512), ("conv5_3", 512, 512)),
)


def make_dropout(kind: str, p: float) -> nn.Module:
    """Return element-wise dropout ('element', the reference's Caffe Dropout) or Dropout2d ('channel')."""
    if kind == "element":
        return nn.Dropout(p)
    if kind == "channel":
        return nn.Dropout2d(p)
    raise ValueError(f"dropout='{kind}' must be 'element' or 'channel'")


class VGG16Backbone(nn.Module):
    """VGG16 (optionally with batch norm) up to drop7, with fc6/fc7 as convolutions."""

    def __init__(
        self,
        batch_norm: bool = False,
        geometry: str = "paper",
        dropout: str = "element",
        dropout_p: float = 0.5,
    ):
        super().__init__()
        if geometry not in ("paper", "same"):
            raise ValueError(f"geometry='{geometry}' must be 'paper' or 'same'")
        self.batch_norm, self.geometry = batch_norm, geometry
        self.channels = {8: 256, 16: 512, 32: 4096}
        for block in VGG16_BLOCKS:
            for name, c_in, c_out in block:
                # conv1_1 { pad: 100 } (voc-fcn*/net.py): the paper's margin that lets any input
                # size through fc6's 7x7 window; 'same' pads by 1 like every other conv.
                pad = 100 if name == "conv1_1" and geometry == "paper" else 1
                setattr(self, name, nn.Conv2d(c_in, c_out, 3, padding=pad))
                if batch_norm:
                    setattr(self, "bn" + name[4:], nn.BatchNorm2d(c_out))
        # fc6: Convolution { kernel_size: 7 pad: 0 }, fc7: kernel_size 1; 'same' pads fc6 by 3.
        self.fc6 = nn.Conv2d(512, 4096, 7, padding=0 if geometry == "paper" else 3)
        self.fc7 = nn.Conv2d(4096, 4096, 1)
        # drop6/drop7: Dropout { dropout_ratio: 0.5 }, element-wise as Caffe's.
        self.drop6 = make_dropout(dropout, dropout_p)
        self.drop7 = make_dropout(dropout, dropout_p)
        self._init_random()

    def _init_random(self) -> None:
        # torchvision's VGG init: Kaiming for convolutions, N(0, 0.01) for the classifier's linears.
        for name, module in self.named_children():
            if isinstance(module, nn.Conv2d):
                if name in ("fc6", "fc7"):
                    nn.init.normal_(module.weight, 0.0, 0.01)
                else:
                    nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(module.bias)

    def forward(self, x: Tensor) -> Dict[int, Tensor]:
        pools = []
        for block in VGG16_BLOCKS:
            for name, _, _ in block:
                x = getattr(self, name)(x)
                if self.batch_norm:
                    x = getattr(self, "bn" + name[4:])(x)
                x = F.relu(x, inplace=True)
            # pool1..pool5: Pooling { pool: MAX kernel_size: 2 stride: 2 }; Caffe rounds up.
            x = F.max_pool2d(x, 2, 2, ceil_mode=True)
            pools.append(x)
        x = self.drop6(F.relu(self.fc6(x), inplace=True))
        x = self.drop7(F.relu(self.fc7(x), inplace=True))
        return {8: pools[2], 16: pools[3], 32: x}

    def torchvision_key_map(self) -> Dict[str, str]:
        """Return {torchvision key: own key} (fc8, i.e. classifier.6, has no counterpart)."""
        mapping, index = {}, 0
        params = ["weight", "bias"]
        bn_entries = ["weight", "bias", "running_mean", "running_var", "num_batches_tracked"]
        for block in VGG16_BLOCKS:
            for name, _, _ in block:
                mapping.update({f"features.{index}.{p}": f"{name}.{p}" for p in params})
                index += 1
                if self.batch_norm:
                    mapping.update({f"features.{index}.{p}": f"bn{name[4:]}.{p}" for p in bn_entries})
                    index += 1
                index += 1  # ReLU
            index += 1  # MaxPool2d
        # classifier: Linear(25088, 4096), ReLU, Dropout, Linear(4096, 4096), ReLU, Dropout, fc8.
        mapping.update({f"classifier.0.{p}": f"fc6.{p}" for p in params})
        mapping.update({f"classifier.3.{p}": f"fc7.{p}" for p in params})
        return mapping


_RESNETS: Dict[str, Callable[..., nn.Module]] = {
    "resnet18": torchvision.models.resnet18,
    "resnet34": torchvision.models.resnet34,
    "resnet50": torchvision.models.resnet50,
    "resnet101": torchvision.models.resnet101,
}


class ResNetBackbone(nn.Module):
    """A torchvision ResNet without its pooling and classifier; layer2/3/4 give strides 8/16/32."""

    def __init__(self, name: str, dropout: str = "element", dropout_p: float = 0.5):
        super().__init__()
        net = _RESNETS[name](weights=None)
        self.conv1, self.bn1, self.relu, self.maxpool = net.conv1, net.bn1, net.relu, net.maxpool
        self.layer1, self.layer2, self.layer3, self.layer4 = net.layer1, net.layer2, net.layer3, net.layer4
        width = net.layer1[0].expansion
        self.channels = {8: 128 * width, 16: 256 * width, 32: 512 * width}
        self.drop = make_dropout(dropout, dropout_p)

    def forward(self, x: Tensor) -> Dict[int, Tensor]:
        x = self.layer1(self.maxpool(self.relu(self.bn1(self.conv1(x)))))
        c3 = self.layer2(x)
        c4 = self.layer3(c3)
        c5 = self.layer4(c4)
        return {8: c3, 16: c4, 32: self.drop(c5)}

    def torchvision_key_map(self) -> Dict[str, str]:
        """Return {torchvision key: own key} (the classifier 'fc' has no counterpart)."""
        return {key: key for key in self.state_dict()}


class MobileNetV3Backbone(nn.Module):
    """torchvision's MobileNetV3-Large feature extractor split at its stride-16 and -32 blocks."""

    def __init__(self, dropout: str = "element", dropout_p: float = 0.5):
        super().__init__()
        self.features = torchvision.models.mobilenet_v3_large(weights=None).features
        # Blocks with _is_cn downsample (as torchvision's LR-ASPP finds its stages); the last two
        # start the stride-16 and stride-32 stages.
        downsampling = [i for i, block in enumerate(self.features) if getattr(block, "_is_cn", False)]
        self.splits = (downsampling[-2], downsampling[-1])
        last = self.features[-1]
        self.channels = {
            8: self.features[self.splits[0] - 1].out_channels,
            16: self.features[self.splits[1] - 1].out_channels,
            32: last.out_channels,
        }
        self.drop = make_dropout(dropout, dropout_p)

    def forward(self, x: Tensor) -> Dict[int, Tensor]:
        feats = {}
        for i, block in enumerate(self.features):
            if i in self.splits:
                feats[8 if i == self.splits[0] else 16] = x
            x = block(x)
        feats[32] = self.drop(x)
        return feats

    def torchvision_key_map(self) -> Dict[str, str]:
        """Return {torchvision key: own key} (the 'classifier' has no counterpart)."""
        return {key: key for key in self.state_dict()}


def build_backbone(
    name: str, geometry: str = "paper", dropout: str = "element", dropout_p: float = 0.5
) -> nn.Module:
    """Return the randomly initialised backbone ``name`` (one of BACKBONES)."""
    if name not in BACKBONES:
        raise ValueError(f"backbone='{name}' is not one of {', '.join(BACKBONES)}")
    if name in VGG_BACKBONES:
        return VGG16Backbone(name == "vgg16_bn", geometry, dropout, dropout_p)
    if geometry != "same":
        raise ValueError(
            f"geometry='{geometry}' needs a VGG backbone (its offsets are VGG16's); use geometry='same' with {name}"
        )
    if name in _RESNETS:
        return ResNetBackbone(name, dropout, dropout_p)
    return MobileNetV3Backbone(dropout, dropout_p)


def hub_cache_path(name: str) -> str:
    """Return where torch hub keeps (or would keep) torchvision's ImageNet file for backbone name."""
    filename = os.path.basename(urllib.parse.urlparse(IMAGENET_WEIGHTS[name].url).path)
    return os.path.join(torch.hub.get_dir(), "checkpoints", filename)


def read_state_dict(path: str) -> object:
    """Return what torch.load reads from path with weights_only=True, or raise a one-line
    ValueError naming the file (a bad model.pretrained value)."""
    try:
        return read_torch_file(path, "weights file")
    except CheckpointError as exc:
        raise ValueError(str(exc)) from None


def torchvision_state_dict(name: str, pretrained: bool | str) -> Mapping[str, Tensor] | None:
    """Return torchvision's ImageNet state dict for backbone name (None when pretrained is False).

    True reads torch hub's cache, downloading into it when the file is not there; a string is a
    local file holding torchvision's state dict.
    """
    if pretrained is False:
        return None
    if isinstance(pretrained, str):
        if not os.path.isfile(pretrained):
            raise FileNotFoundError(
                f"model.pretrained='{pretrained}': no such file (give torchvision's {name} state dict, "
                "true or false)"
            )
        state = read_state_dict(pretrained)
        source = pretrained
    else:
        path = hub_cache_path(name)
        source = path
        if os.path.isfile(path):
            state = read_state_dict(path)
        else:
            weights = IMAGENET_WEIGHTS[name]
            try:
                state = torch.hub.load_state_dict_from_url(
                    weights.url, progress=True, check_hash=True, map_location="cpu", weights_only=True
                )
            except Exception as exc:  # URLError, HTTPError, socket errors, hash mismatch: all mean "no file"
                raise FileNotFoundError(
                    f"model.pretrained=true: torchvision's {weights} for {name} is not in the cache and could "
                    f"not be downloaded ({type(exc).__name__}: {exc}); put {weights.url} at {path} "
                    "or set model.pretrained to a local state-dict file"
                ) from None
    if not isinstance(state, Mapping) or not all(isinstance(v, Tensor) for v in state.values()):
        raise ValueError(f"{source}: not a torchvision state dict (expected a mapping of names to tensors)")
    return state


def load_torchvision_weights(backbone: nn.Module, state: Mapping[str, Tensor], source: str) -> None:
    """Copy torchvision's state dict into backbone (reshaping VGG's fc6/fc7), checking every key."""
    mapping = backbone.torchvision_key_map()
    own = backbone.state_dict()
    # Torchvision's classifiers (fc8, fc, classifier) have no counterpart in an FCN and are dropped.
    dropped = ("classifier.6.",) if isinstance(backbone, VGG16Backbone) else ("fc.", "classifier.")
    for key in state:
        if key not in mapping and not key.startswith(dropped):
            raise ValueError(f"{source}: unexpected key '{key}' for a torchvision {type(backbone).__name__}")
    plan: Dict[str, Tuple[str, Tensor]] = {}
    for tv_key, own_key in mapping.items():
        if tv_key not in state:
            if tv_key.endswith("num_batches_tracked"):  # absent from files saved before PyTorch 0.4.1
                continue
            raise ValueError(f"{source}: missing key '{tv_key}' (is this torchvision's state dict?)")
        value, target = state[tv_key], own[own_key]
        if value.numel() != target.numel():
            raise ValueError(
                f"{source}: '{tv_key}' has shape {tuple(value.shape)}, expected {tuple(target.shape)}"
            )
        plan[own_key] = (tv_key, value)
    with torch.no_grad():
        for own_key, (_, value) in plan.items():
            # fc6/fc7: the linear (4096, 25088) is the 7x7 convolution (4096, 512, 7, 7), flattened in
            # the same (channel, row, column) order (the reference's surgery.transplant "coercing").
            own[own_key].copy_(value.reshape(own[own_key].shape))
