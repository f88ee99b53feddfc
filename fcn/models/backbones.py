"""Backbones: VGG16 convolutionised as in the paper, other torchvision classifiers, and any timm model.

A backbone maps an image batch to a dict of feature maps keyed by their stride: ``{8: ..., 16: ...,
32: ...}``, and says how many channels each has in ``.channels``. For VGG16 these are the reference's
``pool3``, ``pool4`` and ``drop7`` (fc7 after ReLU and dropout); for ResNets the outputs of
``layer2``, ``layer3`` and ``layer4``; for MobileNetV3 the last blocks before the stride-16 and
stride-32 downsamplings and the final 1x1 convolution. The last one passes through dropout (the
reference's drop7; an added one for non-VGG backbones) before the FCN's ``score_fr``. A timm model
(``timm:<name>``) gives the last feature map of each of the strides 8, 16 and 32 that its
``feature_info`` lists (timm's ``features_only`` extractor), whatever the family. With
``finest_stride=4`` (FCN-4s) the dict also holds the stride-4 map: VGG16's ``pool2``, ResNet's
``layer1``, MobileNetV3's last block before the stride-8 downsampling, timm's last stride-4 feature.
With ``finest_stride=1`` (the U-Net decoder) it holds every finer map the backbone has as well:
VGG16's conv1_2 (stride 1) and pool1 (2), ResNet's stem after its ReLU and before the max-pool (2),
MobileNetV3's last block before the stride-4 downsampling (2), and timm's stride-1 and -2 features
where its feature_info lists them (ResNets and EfficientNets do; ConvNeXt's 4x4 stem has none).

Every backbone rounds sizes up: a stride-s map of an H-pixel input has ceil(H / s) pixels, so the
'same' geometry's fusion needs no offsets. VGG16 (pools without padding) centres pixel u of a
stride-s map on input coordinate s*u + (s - 1)/2, which is the 'same' upsamplers' convention; the
torchvision ResNets and MobileNetV3 (padded stride-2 convolutions) centre it on s*u, so their score
maps land (s - 1)/2 input pixels off after upsampling, as in torchvision's own segmentation models.
A timm model sees its input zero-padded (bottom and right) to a multiple of 32, since some families
round down (ConvNeXt's 4x4 stem), and its maps are cropped back to ceil(H / s).

ImageNet weights come from torchvision (``pretrained=True``; downloaded into torch hub's cache when
online) or from a local file holding torchvision's state dict for that backbone
(``pretrained='/path/to/file.pth'``); a timm backbone's from timm (Hugging Face hub) or a local timm
state dict (``.safetensors`` or ``.pth``). Nothing is downloaded at import time, and timm is imported
only when a timm backbone is built.

Inputs of another channel count than RGB's (``in_channels``: grey, RGB-D, multispectral) get a first
convolution of that many input channels. Pretrained weights are adapted to it, never re-initialised,
by timm's rule (``timm.models._manipulate.adapt_input_conv``): ``adapt_input_conv`` below for the
torchvision backbones, local files and staged init; timm itself (``create_model(in_chans=...)``)
for timm backbones, which applies the same rule.
"""

from __future__ import annotations

import difflib
import math
import os
import urllib.parse
from typing import Any, Dict, Mapping, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fcn.config import BACKBONES, VGG_BACKBONES, is_timm, with_overrides
from fcn.core.checkpoint import CheckpointError, describe_mismatch, read_torch_file
from fcn.models.resnet import RESNET_LAYERS, ResNetTrunk

# torchvision's ImageNet weights per backbone (torchvision.models' enum and member). VGG16 is the
# paper's ImageNet model (VGG16_Weights.IMAGENET1K_V1); the ResNet-50/101 V2 weights are
# torchvision's better recipe. torchvision itself is imported only where they are fetched, and for
# MobileNetV3: importing it costs a second or more of start-up (fcn/models/resnet.py).
IMAGENET_WEIGHTS = {
    "vgg16": ("VGG16_Weights", "IMAGENET1K_V1"),
    "vgg16_bn": ("VGG16_BN_Weights", "IMAGENET1K_V1"),
    "resnet18": ("ResNet18_Weights", "IMAGENET1K_V1"),
    "resnet34": ("ResNet34_Weights", "IMAGENET1K_V1"),
    "resnet50": ("ResNet50_Weights", "IMAGENET1K_V2"),
    "resnet101": ("ResNet101_Weights", "IMAGENET1K_V2"),
    "mobilenet_v3_large": ("MobileNet_V3_Large_Weights", "IMAGENET1K_V1"),
}


def imagenet_weights(name: str) -> Any:
    """Return torchvision's ImageNet weights enum member for backbone name (IMAGENET_WEIGHTS)."""
    import torchvision.models

    enum, member = IMAGENET_WEIGHTS[name]
    return getattr(getattr(torchvision.models, enum), member)


# VGG16's thirteen 3x3 convolutions in the reference's naming, five max-pools between the groups.
VGG16_BLOCKS = (
    (("conv1_1", 3, 64), ("conv1_2", 64, 64)),
    (("conv2_1", 64, 128), ("conv2_2", 128, 128)),
    (("conv3_1", 128, 256), ("conv3_2", 256, 256), ("conv3_3", 256, 256)),
    (("conv4_1", 256, 512), ("conv4_2", 512, 512), ("conv4_3", 512, 512)),
    (("conv5_1", 512, 512), ("conv5_2", 512, 512), ("conv5_3", 512, 512)),
)


def adapt_input_conv(weight: Tensor, in_channels: int) -> Tensor:
    """Return the first convolution's weight (O, I, kH, kW) adapted to in_channels inputs.

    timm's rule (timm.models._manipulate.adapt_input_conv): one channel gets the sum of the I source
    filters; otherwise the source filters are repeated cyclically over the in_channels (channel c
    gets filter c mod I) and scaled by I / in_channels, so an input whose channels all equal one
    grey image gives the same response as the source's grey RGB image. Same count: unchanged.
    """
    if weight.ndim != 4:
        raise ValueError(
            f"adapt_input_conv needs a Conv2d weight (O, I, kH, kW), got shape {tuple(weight.shape)}"
        )
    source = weight.shape[1]
    if in_channels < 1:
        raise ValueError(f"in_channels={in_channels} must be at least 1")
    if in_channels == source:
        return weight
    dtype, w = weight.dtype, weight.float()  # half weights: sum in float32, as timm
    if in_channels == 1:
        w = w.sum(dim=1, keepdim=True)
    else:
        w = w.repeat(1, math.ceil(in_channels / source), 1, 1)[:, :in_channels] * (source / in_channels)
    return w.to(dtype)


def input_conv_name(module: nn.Module) -> str:
    """Return the name of module's first convolution (the one that sees the image): the first
    nn.Conv2d in registration order, which every backbone here (and an FCN, backbone first) keeps."""
    for name, child in module.named_modules():
        if isinstance(child, nn.Conv2d):
            return name
    raise ValueError(f"{type(module).__name__} has no convolution")


def set_in_channels(backbone: nn.Module, in_channels: int) -> None:
    """Replace a torchvision backbone's first convolution by one taking in_channels inputs, with
    the random initialisation torchvision gives its convolutions (Kaiming normal, fan_out, zero
    bias: the same distribution whatever the input count); pretrained weights are adapted later."""
    name = input_conv_name(backbone)
    old = backbone.get_submodule(name)
    if old.in_channels == in_channels:
        return
    new = nn.Conv2d(
        in_channels,
        old.out_channels,
        old.kernel_size,
        old.stride,
        old.padding,
        old.dilation,
        old.groups,
        old.bias is not None,
    )
    nn.init.kaiming_normal_(new.weight, mode="fan_out", nonlinearity="relu")
    if new.bias is not None:
        nn.init.zeros_(new.bias)
    parent, _, attr = name.rpartition(".")
    setattr(backbone.get_submodule(parent) if parent else backbone, attr, new)


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
        finest_stride: int = 8,
    ):
        super().__init__()
        if geometry not in ("paper", "same"):
            raise ValueError(f"geometry='{geometry}' must be 'paper' or 'same'")
        self.batch_norm, self.geometry = batch_norm, geometry
        self.channels = {1: 64, 2: 64, 4: 128, 8: 256, 16: 512, 32: 4096}
        self.channels = {s: c for s, c in self.channels.items() if s >= finest_stride}
        self.scored = tuple(stage for stage in (1, 2, 3, 4) if 2**stage in self.channels)  # pools returned
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
        pools = {}
        for stage, block in enumerate(VGG16_BLOCKS, start=1):
            for name, _, _ in block:
                x = getattr(self, name)(x)
                if self.batch_norm:
                    x = getattr(self, "bn" + name[4:])(x)
                x = F.relu(x, inplace=True)
            if stage == 1 and 1 in self.channels:
                pools[1] = x  # conv1_2, the U-Net decoder's stride-1 skip
            # pool1..pool5: Pooling { pool: MAX kernel_size: 2 stride: 2 }; Caffe rounds up.
            x = F.max_pool2d(x, 2, 2, ceil_mode=True)
            if stage in self.scored:  # only the scored pools are kept: the others are freed at once
                pools[2**stage] = x
        x = self.drop6(F.relu(self.fc6(x), inplace=True))
        x = self.drop7(F.relu(self.fc7(x), inplace=True))
        return {**pools, 32: x}

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


class ResNetBackbone(nn.Module):
    """A torchvision ResNet without its pooling and classifier (fcn.models.resnet: the same modules,
    names and initialisation); layer2/3/4 give strides 8/16/32, layer1 stride 4 with finest_stride=4,
    and the stem (conv1, bn1, relu: before the max-pool) stride 2 with finest_stride 1 or 2."""

    def __init__(self, name: str, dropout: str = "element", dropout_p: float = 0.5, finest_stride: int = 8):
        super().__init__()
        net = ResNetTrunk(name)
        self.conv1, self.bn1, self.relu, self.maxpool = net.conv1, net.bn1, net.relu, net.maxpool
        self.layer1, self.layer2, self.layer3, self.layer4 = net.layer1, net.layer2, net.layer3, net.layer4
        width = net.expansion
        self.channels = {8: 128 * width, 16: 256 * width, 32: 512 * width}
        if finest_stride <= 4:
            self.channels = {4: 64 * width, **self.channels}
        if finest_stride <= 2:
            self.channels = {2: 64, **self.channels}
        self.drop = make_dropout(dropout, dropout_p)

    def forward(self, x: Tensor) -> Dict[int, Tensor]:
        c1 = self.relu(self.bn1(self.conv1(x)))
        c2 = self.layer1(self.maxpool(c1))
        c3 = self.layer2(c2)
        c4 = self.layer3(c3)
        c5 = self.layer4(c4)
        feats = {8: c3, 16: c4, 32: self.drop(c5)}
        if 4 in self.channels:
            feats = {4: c2, **feats}
        return {2: c1, **feats} if 2 in self.channels else feats

    def torchvision_key_map(self) -> Dict[str, str]:
        """Return {torchvision key: own key} (the classifier 'fc' has no counterpart)."""
        return {key: key for key in self.state_dict()}


class MobileNetV3Backbone(nn.Module):
    """torchvision's MobileNetV3-Large feature extractor split at its stride-16 and -32 blocks."""

    def __init__(self, dropout: str = "element", dropout_p: float = 0.5, finest_stride: int = 8):
        super().__init__()
        import torchvision.models

        self.features = torchvision.models.mobilenet_v3_large(weights=None).features
        # Blocks with _is_cn downsample (as torchvision's LR-ASPP finds its stages); the last three
        # start the stride-8, -16 and -32 stages: the map before each is the previous stride's last.
        downsampling = [i for i, block in enumerate(self.features) if getattr(block, "_is_cn", False)]
        strides = {1: (2, 4, 8, 16), 2: (2, 4, 8, 16), 4: (4, 8, 16)}.get(finest_stride, (8, 16))
        self.splits = dict(zip(downsampling[-len(strides) :], strides))  # {block index: stride before it}
        self.channels = {stride: self.features[i - 1].out_channels for i, stride in self.splits.items()}
        self.channels[32] = self.features[-1].out_channels
        self.drop = make_dropout(dropout, dropout_p)

    def forward(self, x: Tensor) -> Dict[int, Tensor]:
        feats = {}
        for i, block in enumerate(self.features):
            if i in self.splits:
                feats[self.splits[i]] = x
            x = block(x)
        feats[32] = self.drop(x)
        return feats

    def torchvision_key_map(self) -> Dict[str, str]:
        """Return {torchvision key: own key} (the 'classifier' has no counterpart)."""
        return {key: key for key in self.state_dict()}


def _timm() -> Any:
    """Return the timm module, imported on first use (a second or so; only timm backbones need it)."""
    try:
        import timm
    except ImportError:
        raise ImportError("a timm:<name> backbone needs timm: pip install timm") from None
    return timm


def check_timm_name(name: str) -> None:
    """Raise a one-line ValueError naming model.backbone, with close timm names, unless timm knows
    ``name`` (an architecture, optionally with a pretrained tag: resnet50.a1_in1k)."""
    timm = _timm()
    arch, _, tag = name.partition(".")
    if not timm.is_model(name):
        candidates, what = timm.list_models(), "model"
    elif tag and name not in timm.list_pretrained(f"{arch}.*"):
        candidates, what = timm.list_pretrained(f"{arch}.*"), "pretrained tag"
    else:
        return
    near = difflib.get_close_matches(name, candidates, n=3, cutoff=0.5)
    hint = f" (did you mean {', '.join('timm:' + n for n in near)}?)" if near else ""
    raise ValueError(
        f"model.backbone='timm:{name}': timm {timm.__version__} has no {what} '{name}'{hint}; "
        "timm.list_models() lists them"
    )


def timm_pretrained_cfg(name: str) -> Dict[str, Any]:
    """Return timm's pretrained config (mean, std, hf_hub_id, ...) of model ``name`` (tag or
    default tag), building the model on the meta device: no weights, no download."""
    check_timm_name(name)
    with torch.device("meta"):
        return dict(_timm().create_model(name, pretrained=False).pretrained_cfg)


def read_timm_state_dict(name: str, path: str) -> Dict[str, Tensor]:
    """Return the timm state dict for model ``name`` in the file at path (.safetensors, or .pth/.pt
    read with weights_only=True), checked against the model's names and shapes (its classifier,
    which an FCN drops, may differ); a one-line error naming model.pretrained otherwise."""
    key = f"model.pretrained='{path}'"
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"{key}: no such file (give a timm state dict of {name}, .safetensors or .pth; true or false)"
        )
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file

        try:
            state: Any = load_file(path, device="cpu")
        except Exception as exc:  # SafetensorError, OSError: a damaged or foreign file
            raise ValueError(f"{key}: cannot read it as safetensors ({type(exc).__name__}: {exc})") from None
    else:
        state = read_state_dict(path)
        if isinstance(state, Mapping) and isinstance(state.get("state_dict"), Mapping):
            state = state["state_dict"]  # a checkpoint of timm's train.py
    if not isinstance(state, Mapping) or not all(isinstance(v, Tensor) for v in state.values()):
        raise ValueError(f"{key}: not a state dict (expected a mapping of names to tensors)")
    state = {k.removeprefix("module."): v for k, v in state.items()}
    with torch.device("meta"):  # names and shapes only: nothing allocated, nothing downloaded
        reference = _timm().create_model(name, pretrained=False)
    classifier = reference.pretrained_cfg.get("classifier") or ()
    heads = tuple(f"{c}." for c in ((classifier,) if isinstance(classifier, str) else classifier))
    expected = {k: v for k, v in reference.state_dict().items() if not k.startswith(heads)}
    problems = describe_mismatch(expected, {k: v for k, v in state.items() if not k.startswith(heads)})
    if problems:
        raise ValueError(f"{key}: not a timm {name} state dict: {problems}")
    return dict(state)


def _timm_features(
    name: str, pretrained: bool | str, out_indices: Tuple[int, ...], in_channels: int = 3
) -> nn.Module:
    """Return timm's features_only extractor of ``name`` with weights as model.pretrained says,
    taking in_channels inputs (timm adapts pretrained first convolutions by adapt_input_conv's rule)."""
    timm = _timm()
    kwargs: Dict[str, Any] = dict(features_only=True, out_indices=out_indices, in_chans=in_channels)
    if pretrained is False:
        # From scratch, residual blocks start as torchvision's do: timm zero-initialises the last
        # BatchNorm of each block (zero_init_last), which on the toy demo cost 77.0 -> 52.9 mean IU
        # in 600 iterations; with it off, timm:resnet18 starts bitwise like torchvision's resnet18.
        # Pretrained weights overwrite these either way.
        try:
            return timm.create_model(name, pretrained=False, zero_init_last=False, **kwargs)
        except TypeError:  # a family without the option
            return timm.create_model(name, pretrained=False, **kwargs)
    if isinstance(pretrained, str):
        # timm loads the state dict into the whole classifier before cutting it into the extractor,
        # as it does its downloads (its checkpoint filter and classifier handling apply alike).
        state = read_timm_state_dict(name, pretrained)
        net = timm.create_model(
            name, pretrained=True, pretrained_cfg_overlay=dict(state_dict=state), **kwargs
        )
        net.pretrained_cfg = {k: v for k, v in net.pretrained_cfg.items() if k != "state_dict"}
        return net
    try:
        return timm.create_model(name, pretrained=True, **kwargs)
    except Exception as exc:  # no network, no cache, no such weights: all mean "no file"
        reason = " ".join(f"{type(exc).__name__}: {exc}".split())[:200]
        hub = timm_pretrained_cfg(name).get("hf_hub_id")
        where = f" (https://huggingface.co/{hub})" if hub else ""
        raise FileNotFoundError(
            f"model.pretrained=true: timm could not load the weights of {name} ({reason}); download "
            f"model.safetensors{where} where you are online and pass it as "
            "model.pretrained=/path/to/model.safetensors"
        ) from None


class TimmBackbone(nn.Module):
    """Any timm model through timm.create_model(name, features_only=True): the last feature map of
    each of the strides 8, 16 and 32 in its feature_info (and 4 with finest_stride=4; 1 and 2 as well
    where it lists them with finest_stride 1 or 2), the stride-32 one through dropout."""

    def __init__(
        self,
        name: str,
        dropout: str = "element",
        dropout_p: float = 0.5,
        pretrained: bool | str = False,
        in_channels: int = 3,
        finest_stride: int = 8,
    ):
        super().__init__()
        check_timm_name(name)
        with torch.device("meta"):  # feature_info only
            info = _timm().create_model(name, pretrained=False, features_only=True).feature_info
        reductions = info.reduction()
        indices = {}
        for stride in (1, 2, 4, 8, 16, 32):
            found = [i for i, r in enumerate(reductions) if r == stride]
            if stride < finest_stride or (stride < 4 and not found):  # the finer U-Net skips are optional
                continue
            if not found:
                needs = (
                    "8, 16 and 32"
                    if finest_stride == 8
                    else f"4, 8, 16 and 32 (model.arch={'fcn4s' if finest_stride == 4 else 'unet'})"
                )
                raise ValueError(
                    f"model.backbone='timm:{name}': its features are at strides {reductions}; an FCN needs "
                    f"{needs} (a convolutional or hierarchical model, not a plain ViT)"
                )
            indices[stride] = found[-1]
        self.name = name
        self.body = _timm_features(name, pretrained, tuple(indices.values()), in_channels)
        self.channels = dict(zip(indices, self.body.feature_info.channels()))
        self.drop = make_dropout(dropout, dropout_p)

    @property
    def pretrained_cfg(self) -> Dict[str, Any]:
        """timm's pretrained config of the model (mean, std, tag, ...)."""
        return dict(self.body.pretrained_cfg)

    def forward(self, x: Tensor) -> Dict[int, Tensor]:
        height, width = x.shape[-2:]
        pad_h, pad_w = -height % 32, -width % 32
        # An ONNX export traces this: the padding is recorded whatever the sample's size (a pad of 0
        # changes nothing) and the crops are floor divisions of the traced sizes, not math.ceil's
        # constants, so the exported graph is right at every size, not only at the sample's.
        if pad_h or pad_w or torch.jit.is_tracing():
            x = F.pad(x, (0, pad_w, 0, pad_h))
        *finer, c5 = self.body(x)
        feats = {**dict(zip(self.channels, finer)), 32: self.drop(c5)}
        return {s: f[..., : (height + s - 1) // s, : (width + s - 1) // s] for s, f in feats.items()}


def build_backbone(
    name: str,
    geometry: str = "paper",
    dropout: str = "element",
    dropout_p: float = 0.5,
    pretrained: bool | str = False,
    in_channels: int = 3,
    finest_stride: int = 8,
) -> nn.Module:
    """Return the backbone ``name`` (one of BACKBONES, or 'timm:<name>') taking in_channels inputs
    and giving the maps of strides finest_stride (8, 4 for FCN-4s, 1 for the U-Net decoder: every finer
    map it has) to 32; torchvision backbones
    are randomly initialised (see load_torchvision_weights), a timm one has the weights
    ``pretrained`` names."""
    if not is_timm(name) and name not in BACKBONES:
        raise ValueError(f"backbone='{name}' is not one of {', '.join(BACKBONES)}, timm:<name>")
    if finest_stride not in (1, 2, 4, 8):
        raise ValueError(f"finest_stride={finest_stride} must be 1, 2, 4 or 8")
    if is_timm(name) and geometry == "same":
        return TimmBackbone(
            name.removeprefix("timm:"), dropout, dropout_p, pretrained, in_channels, finest_stride
        )
    backbone = _torchvision_backbone(name, geometry, dropout, dropout_p, finest_stride)
    set_in_channels(backbone, in_channels)
    return backbone


def _torchvision_backbone(
    name: str, geometry: str, dropout: str, dropout_p: float, finest_stride: int = 8
) -> nn.Module:
    """Return the randomly initialised torchvision backbone ``name`` (3 input channels)."""
    if name in VGG_BACKBONES:
        return VGG16Backbone(name == "vgg16_bn", geometry, dropout, dropout_p, finest_stride)
    if geometry != "same":
        raise ValueError(
            f"geometry='{geometry}' needs a VGG backbone (its offsets are VGG16's); use geometry='same' with {name}"
        )
    if name in RESNET_LAYERS:
        return ResNetBackbone(name, dropout, dropout_p, finest_stride)
    return MobileNetV3Backbone(dropout, dropout_p, finest_stride)


def resolve_normalization(cfg: Any) -> Any:
    """Return cfg with data.transforms.mean/std set to a timm backbone's pretrained_cfg mean/std when
    normalization is 'auto' and they are unset (a new config: the run writes it into config.yml and
    its checkpoints); cfg itself otherwise."""
    tr, backbone = cfg.data.transforms, str(cfg.model.backbone)
    if tr.normalization != "auto" or tr.mean or not is_timm(backbone):
        return cfg
    pretrained_cfg = timm_pretrained_cfg(backbone.removeprefix("timm:"))
    mean, std = pretrained_cfg.get("mean"), pretrained_cfg.get("std")
    if not mean or not std or len(mean) != 3:
        return cfg  # no RGB statistics published: torchvision's, as for other backbones
    from fcn.core.normalize import extend_stats

    mean, std = extend_stats(tuple(mean), tuple(std), int(cfg.model.in_channels))

    def listed(v: Any) -> str:
        return "[" + ",".join(repr(float(x)) for x in v) + "]"

    return with_overrides(
        cfg,
        [f"data.transforms.mean={listed(mean)}", f"data.transforms.std={listed(std)}"],
        source=f"model.backbone={backbone}'s pretrained_cfg",
    )


def hub_cache_path(name: str) -> str:
    """Return where torch hub keeps (or would keep) torchvision's ImageNet file for backbone name."""
    filename = os.path.basename(urllib.parse.urlparse(imagenet_weights(name).url).path)
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
            weights = imagenet_weights(name)
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
    first = input_conv_name(backbone) + ".weight"
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
        if own_key == first and value.ndim == 4 and value.shape[1] != target.shape[1]:
            value = adapt_input_conv(value, target.shape[1])  # RGB filters -> in_channels inputs
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
