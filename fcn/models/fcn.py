"""FCN-32s, FCN-16s, FCN-8s and FCN-8s at-once (Long, Shelhamer, Darrell), FCN-4s, and build_model.

With the defaults (VGG16, ``geometry='paper'``, ``upsampling='transposed'``, ``fusion='skip'``) each
model computes what the reference's ``voc-fcn32s``, ``voc-fcn16s``, ``voc-fcn8s`` and
``voc-fcn8s-atonce`` nets compute (fcn.berkeleyvision.org, ``net.py`` / ``train.prototxt``):

- ``score_fr``, ``score_pool4``, ``score_pool3``: 1x1 convolutions, zero-initialised (the
  reference's solve.py starts them at zero; only the ImageNet layers carry weights).
- ``upscore`` (k64/s32) for 32s; ``upscore2`` (k4/s2) and ``upscore16`` (k32/s16) for 16s;
  ``upscore2``, ``upscore_pool4`` (k4/s2) and ``upscore8`` (k16/s8) for 8s: bias-free
  deconvolutions with the bilinear kernel, frozen unless ``learnable_upsampling``.
- ``score_pool4c`` crops at offset 5, ``score_pool3c`` at 9 and the final ``score`` at 19 (32s),
  27 (16s) or 31 (8s), so the logits have the input's height and width for any input size.
- FCN-8s at-once scales ``pool4`` by 0.01 and ``pool3`` by 0.0001 before their score layers
  (``scale_pool4`` / ``scale_pool3``, fixed: lr_mult 0).

Options beyond the paper: ``geometry='same'`` (no padding of 100, fc6 padded, maps aligned at their
block centres so no offsets are needed; about half the compute at 500x500), the upsampling modes of
``fcn.models.upsampling``, ``fusion='full'`` (each stride's score map brought to the input size and
summed with learned per-class weights), the backbones of ``fcn.models.backbones`` (torchvision's and
any timm model's), and ``head='fcn'``: torchvision's FCNHead in place of each 1x1 score layer.

FCN-4s (``arch='fcn4s'``) continues the paper's skip fusion one stride further, as its section 4.2
describes and leaves ("we do not continue fusing even lower layers" once the returns on PASCAL
diminished): FCN-8s's ``fuse_pool3`` upsampled 2x (``upscore_pool3``) plus ``score_pool2`` on the
stride-4 map (VGG16's pool2, ResNet's layer1), then ``upscore4`` (k8/s4). Scores every 4 pixels
instead of 8 can place the edges of structures a few pixels wide (scratches, vessels, cracks), which
a stride-8 map upsampled bilinearly cannot: between two of its samples 8 px apart a bilinear ramp
crosses zero once, so a 6 px line that falls between them is drawn wider or not at all.
"""

from __future__ import annotations

import contextlib
import threading
from typing import Any, Callable, Iterator, List, Mapping, Sequence, Tuple

import torch
from torch import Tensor, nn

from fcn.config import ARCHS, MODALITY_CHANNELS, VGG_BACKBONES, is_timm, pretrained_choice
from fcn.core.checkpoint import bare_state_dict
from fcn.models.backbones import (
    adapt_input_conv,
    build_backbone,
    input_conv_name,
    load_torchvision_weights,
    torchvision_state_dict,
)
from fcn.models.torchvision_fcn import TORCHVISION_FCN_BACKBONES, FCNHead, TorchvisionFCN
from fcn.models.unet import UNet
from fcn.models.upsampling import make_upsampling

# Crop offsets of the reference nets (crop_param { offset: ... } in voc-fcn*/train.prototxt).
SCORE_POOL4_OFFSET = 5  # score_pool4c
SCORE_POOL3_OFFSET = 9  # score_pool3c
# FCN-4s in the paper's geometry, by the coord_map arithmetic below: pool2's u lies at data
# coordinate 4u - 97.5 and fuse_pool3's v (score_pool3c's grid) at 8v - 23.5; upscore_pool3 (k4/s2)
# puts v at 2v + 1.5, i.e. its w at 4w - 29.5, so score_pool2c = pool2 from u = w + 17; upscore4
# (k8/s4) puts w at 4w + 3.5, i.e. output o at o - 33. (The same arithmetic gives FCN-8s's 31.)
SCORE_POOL2_OFFSET = 17  # score_pool2c
SCORE_OFFSET = {32: 19, 16: 27, 8: 31, 4: 33}  # score (voc-fcn32s, voc-fcn16s, voc-fcn8s; fcn4s)

# Full fusion in the paper's geometry upsamples each score map straight to stride 1. Caffe's
# coord_map puts score_fr pixel v at data coordinate 32v + 12.5, score_pool4's u at 16u - 91.5 and
# score_pool3's u at 8u - 95.5; a k=2f/s=f deconvolution puts input i at output i*f + f - 0.5, so
# the crops are 32 - 0.5 - 12.5 = 19, 16 - 0.5 + 91.5 = 107 and 8 - 0.5 + 95.5 = 103 (the same as
# 27 + 16 * 5 and 31 + 8 * 9, the skip path's crops composed).
FULL_FUSION_OFFSET = {32: 19, 16: 107, 8: 103}

# FCN-8s at-once: Scale { filler { type: "constant" value: 0.01 } } on pool4, 0.0001 on pool3.
AT_ONCE_SCALE = {16: 0.01, 8: 0.0001}


def _crop(x: Tensor, offset: int, size: Tuple[int, int]) -> Tensor:
    """Return x[..., offset:offset + h, offset:offset + w] (Caffe's Crop layer on axes 2 and 3)."""
    h, w = size
    return x[..., offset : offset + h, offset : offset + w]


def _check_options(
    stride: int,
    backbone: str,
    fusion: str,
    head: str,
    at_once: bool,
    in_channels: int,
    late_fusion: Tuple[str, ...],
    geometric_classes: int,
) -> None:
    """Raise a ValueError naming the option when a combination is not one FCN can build."""
    if late_fusion and (stride != 32 or fusion != "skip" or backbone not in VGG_BACKBONES):
        raise ValueError("late fusion is nyud-fcn32s-color-hha: stride=32, fusion='skip' and a VGG backbone")
    if late_fusion and in_channels != sum(MODALITY_CHANNELS[m] for m in late_fusion):
        width = sum(MODALITY_CHANNELS[m] for m in late_fusion)
        raise ValueError(f"late_fusion={list(late_fusion)} takes {width} input channels, not {in_channels}")
    if geometric_classes and (fusion != "skip" or head != "score" or late_fusion):
        raise ValueError(
            "the geometric head (siftflow-fcn*s) needs fusion='skip', head='score' and one trunk"
        )
    if stride not in (32, 16, 8, 4):
        raise ValueError(f"stride={stride} must be 32, 16, 8 or 4")
    if stride == 4 and (fusion != "skip" or geometric_classes):
        raise ValueError("FCN-4s is skip fusion with one head (fusion='skip', no geometric head)")
    if fusion not in ("skip", "full"):
        raise ValueError(f"fusion='{fusion}' must be 'skip' or 'full'")
    if head not in ("score", "fcn"):
        raise ValueError(f"head='{head}' must be 'score' or 'fcn'")
    if at_once and (stride != 8 or fusion != "skip"):
        raise ValueError("at-once scaling is the paper's FCN-8s with skip fusion (stride=8, fusion='skip')")


class FCN(nn.Module):
    """A fully convolutional network with skip fusion down to stride 32, 16, 8 or 4.

    Use FCN32s, FCN16s, FCN8s, FCN8sAtOnce or FCN4s; forward maps (N, in_channels, H, W) to logits
    (N, num_classes, H, W). FCN-32s has a single path, so its 'full' fusion is its 'skip' fusion.
    """

    arch = "fcn"

    def __init__(
        self,
        stride: int,
        num_classes: int = 21,
        pretrained: bool | str = False,
        *,
        backbone: str = "vgg16",
        geometry: str = "paper",
        upsampling: str = "transposed",
        learnable_upsampling: bool = False,
        fusion: str = "skip",
        head: str = "score",
        dropout: str = "element",
        dropout_p: float = 0.5,
        at_once: bool = False,
        in_channels: int = 3,
        late_fusion: Sequence[str] = (),
        geometric_classes: int = 0,
    ):
        super().__init__()
        late_fusion = tuple(late_fusion)
        _check_options(stride, backbone, fusion, head, at_once, in_channels, late_fusion, geometric_classes)
        self.stride, self.num_classes, self.at_once = stride, num_classes, at_once
        self.backbone_name, self.geometry = backbone, geometry
        self.upsampling, self.fusion, self.head = upsampling, fusion, head
        self.in_channels, self.late_fusion, self.geometric_classes = (
            in_channels,
            late_fusion,
            geometric_classes,
        )

        def up(factor: int, classes: int = num_classes) -> nn.Module:
            return make_upsampling(upsampling, classes, factor, geometry, learnable_upsampling)

        # Built in this order: the modules' registration order is the state_dict's key order.
        channels = self._build_trunk(pretrained, dropout, dropout_p)
        self._build_score_layers(channels)
        self._build_upsampling(up)
        if geometric_classes:
            self._build_geometric_head(channels, up)
        self._zero_score_layers()
        self._load_torchvision_weights(pretrained)

    def _build_trunk(self, pretrained: bool | str, dropout: str, dropout_p: float) -> dict[int, int]:
        """Build self.backbone (one trunk per modality for late fusion); return its channels per stride."""
        backbone, geometry = self.backbone_name, self.geometry
        if self.late_fusion:
            # nyud-fcn32s-color-hha (late fusion): one whole VGG16 trunk and score_fr per modality,
            # every layer named with the modality as a suffix (conv1_1color ... score_frhha).
            self.backbone = nn.ModuleDict(
                {
                    m: build_backbone(backbone, geometry, dropout, dropout_p, False, MODALITY_CHANNELS[m])
                    for m in self.late_fusion
                }
            )
            return self.backbone[self.late_fusion[0]].channels
        # A timm backbone loads its own weights (timm maps them into its feature extractor).
        timm_weights = pretrained if is_timm(backbone) else False
        self.backbone = build_backbone(
            backbone, geometry, dropout, dropout_p, timm_weights, self.in_channels, min(self.stride, 8)
        )
        return self.backbone.channels

    def _build_score_layers(self, channels: Mapping[int, int]) -> None:
        """Build score_fr (one per modality for late fusion), score_pool4 (16s, 8s, 4s), score_pool3
        (8s, 4s) and score_pool2 (4s): 1x1 convolutions to the classes, or FCNHeads with head='fcn'."""

        def score(in_channels: int) -> nn.Module:
            if self.head == "fcn":
                return FCNHead(in_channels, self.num_classes)
            return nn.Conv2d(in_channels, self.num_classes, 1)

        if self.late_fusion:
            self.score_fr = nn.ModuleDict({m: score(channels[32]) for m in self.late_fusion})
        else:
            self.score_fr = score(channels[32])
        if self.stride <= 16:
            self.score_pool4 = score(channels[16])
        if self.stride <= 8:
            self.score_pool3 = score(channels[8])
        if self.stride <= 4:
            self.score_pool2 = score(channels[4])

    def _build_upsampling(self, up: Callable[..., nn.Module]) -> None:
        """Build the upsampling layers: the skip path's (upscore; upscore2, upscore16; upscore2,
        upscore_pool4, upscore8; upscore2, upscore_pool4, upscore_pool3, upscore4) or full fusion's (one
        per stride, straight to stride 1, and fuse_weight)."""
        stride = self.stride
        if stride == 32:
            self.upscore = up(32)
        elif self.fusion == "skip" and stride == 16:
            self.upscore2, self.upscore16 = up(2), up(16)
        elif self.fusion == "skip" and stride == 8:
            self.upscore2, self.upscore_pool4, self.upscore8 = up(2), up(2), up(8)
        elif self.fusion == "skip":
            self.upscore2, self.upscore_pool4, self.upscore_pool3, self.upscore4 = up(2), up(2), up(2), up(4)
        else:
            # Full fusion: every score map goes straight to stride 1 (upscore x32, upscore16 x16,
            # upscore8 x8), then a learned per-class weight per path; 1 everywhere starts it as the
            # sum of the paths, which is what skip fusion computes up to the upsampling kernels.
            self.upscore = up(32)
            self.upscore16 = up(16)
            if stride == 8:
                self.upscore8 = up(8)
            self.fuse_weight = nn.Parameter(torch.ones(2 if stride == 16 else 3, self.num_classes))

    def _build_geometric_head(self, channels: Mapping[int, int], up: Callable[..., nn.Module]) -> None:
        """Build siftflow-fcn*s's second, geometric head on the same trunk with its own whole skip
        path (score_fr_geo, upscore2_geo, score_pool4_geo, ... upscore8_geo), as the semantic one."""
        g, stride = self.geometric_classes, self.stride
        self.score_fr_geo = nn.Conv2d(channels[32], g, 1)
        if stride <= 16:
            self.score_pool4_geo = nn.Conv2d(channels[16], g, 1)
        if stride <= 8:
            self.score_pool3_geo = nn.Conv2d(channels[8], g, 1)
        if stride == 32:
            self.upscore_geo = up(32, g)
        elif stride == 16:
            self.upscore2_geo, self.upscore16_geo = up(2, g), up(16, g)
        else:
            self.upscore2_geo, self.upscore_pool4_geo, self.upscore8_geo = up(2, g), up(2, g), up(8, g)

    def _zero_score_layers(self) -> None:
        """Zero the 1x1 score layers, as the reference's solve.py starts them."""
        scores = [*self.score_fr.values()] if self.late_fusion else [self.score_fr]
        for name in (
            "score_pool4",
            "score_pool3",
            "score_pool2",
            "score_fr_geo",
            "score_pool4_geo",
            "score_pool3_geo",
        ):
            scores.append(getattr(self, name, None))
        for layer in scores:
            # The FCN head keeps torchvision's initialisation: zeroing its last 1x1 convolution as
            # well blocked the gradient to its 3x3 convolution and BatchNorm at the start, and on
            # the toy demo (ResNet-18, 600 iterations) cost 80+ -> 37 mean IU.
            if layer is not None and not isinstance(layer, FCNHead):
                nn.init.zeros_(layer.weight)
                nn.init.zeros_(layer.bias)

    def _load_torchvision_weights(self, pretrained: bool | str) -> None:
        """Load torchvision's (or a file's) ImageNet weights into every trunk of a torchvision backbone."""
        backbone = self.backbone_name
        state = None if is_timm(backbone) else torchvision_state_dict(backbone, pretrained)
        if state is not None:
            source = pretrained if isinstance(pretrained, str) else f"torchvision {backbone}"
            for trunk in self.backbone.values() if self.late_fusion else [self.backbone]:
                load_torchvision_weights(trunk, state, source)

    def forward(self, x: Tensor) -> Tensor:
        size = (x.shape[-2], x.shape[-1])
        if self.late_fusion:
            return self.decode_late_fusion(x, size)
        feats = self.backbone(x)
        logits = self.decode(feats, size)
        if self.geometric_classes:
            # Two heads, one tensor: semantic logits, then the geometric ones, along the channels.
            return torch.cat([logits, self.decode(feats, size, "_geo")], 1)
        return logits

    def decode_late_fusion(self, x: Tensor, size: Tuple[int, int]) -> Tensor:
        """Return the logits of the late-fusion net: each modality's channels through its own trunk
        and score_fr, then score_fused = Eltwise SUM with coeff 1/n each (nyud-fcn32s-color-hha:
        coeff 0.5, 0.5), upscore and crop as FCN-32s."""
        parts = torch.split(x, [MODALITY_CHANNELS[m] for m in self.late_fusion], dim=1)
        coeff = 1.0 / len(self.late_fusion)
        fused = sum(
            coeff * self.score_fr[m](self.backbone[m](part)[32]) for m, part in zip(self.late_fusion, parts)
        )
        return _crop(self.upscore(fused), SCORE_OFFSET[32] if self.geometry == "paper" else 0, size)

    def decode(self, feats: Mapping[int, Tensor], size: Tuple[int, int], head: str = "") -> Tensor:
        """Return logits of the input size from the backbone's {4, 8, 16, 32}-stride features; head
        '_geo' takes the geometric head's layers (score_fr_geo, upscore2_geo, ...)."""
        paper = self.geometry == "paper"
        score = getattr(self, "score_fr" + head)(feats[32])
        if self.stride == 32:
            return _crop(getattr(self, "upscore" + head)(score), SCORE_OFFSET[32] if paper else 0, size)
        pool4 = feats[16] * AT_ONCE_SCALE[16] if self.at_once else feats[16]
        score_pool4 = getattr(self, "score_pool4" + head)(pool4)
        if self.stride <= 8:
            pool3 = feats[8] * AT_ONCE_SCALE[8] if self.at_once else feats[8]
            score_pool3 = getattr(self, "score_pool3" + head)(pool3)
        if self.fusion == "full":
            offsets = FULL_FUSION_OFFSET if paper else {32: 0, 16: 0, 8: 0}
            paths = [(self.upscore, score, 32), (self.upscore16, score_pool4, 16)]
            if self.stride == 8:
                paths.append((self.upscore8, score_pool3, 8))
            out = 0
            for weight, (upsample, s, stride) in zip(self.fuse_weight, paths):
                out = out + weight.view(1, -1, 1, 1) * _crop(upsample(s), offsets[stride], size)
            return out
        fuse = self._fuse(
            getattr(self, "upscore2" + head)(score), score_pool4, SCORE_POOL4_OFFSET
        )  # fuse_pool4
        if self.stride == 16:
            return _crop(getattr(self, "upscore16" + head)(fuse), SCORE_OFFSET[16] if paper else 0, size)
        fuse = self._fuse(
            getattr(self, "upscore_pool4" + head)(fuse), score_pool3, SCORE_POOL3_OFFSET
        )  # fuse_pool3
        if self.stride == 8:
            return _crop(getattr(self, "upscore8" + head)(fuse), SCORE_OFFSET[8] if paper else 0, size)
        fuse = self._fuse(
            self.upscore_pool3(fuse), self.score_pool2(feats[4]), SCORE_POOL2_OFFSET
        )  # fuse_pool2
        return _crop(self.upscore4(fuse), SCORE_OFFSET[4] if paper else 0, size)

    def _fuse(self, upscored: Tensor, skip: Tensor, offset: int) -> Tensor:
        """Return the element-wise sum of an upsampled score map and a finer skip score map."""
        if self.geometry == "paper":
            # Crop { offset: 5 or 9 } of the skip map to the upsampled one's size, then Eltwise SUM.
            return upscored + _crop(skip, offset, upscored.shape[-2:])
        # 'same': both maps start at the image's top-left block; the upsampled one is at least as large.
        return _crop(upscored, 0, skip.shape[-2:]) + skip


class FCN32s(FCN):
    """FCN-32s (voc-fcn32s): score_fr upsampled 32x by upscore, cropped at 19."""

    arch = "fcn32s"

    def __init__(self, num_classes: int = 21, pretrained: bool | str = False, **options: Any):
        super().__init__(32, num_classes, pretrained, **options)


class FCN16s(FCN):
    """FCN-16s (voc-fcn16s): upscore2(score_fr) + score_pool4 (crop 5), upscore16, crop 27."""

    arch = "fcn16s"

    def __init__(self, num_classes: int = 21, pretrained: bool | str = False, **options: Any):
        super().__init__(16, num_classes, pretrained, **options)


class FCN8s(FCN):
    """FCN-8s (voc-fcn8s): FCN-16s's fusion, upscore_pool4 + score_pool3 (crop 9), upscore8, crop 31."""

    arch = "fcn8s"

    def __init__(self, num_classes: int = 21, pretrained: bool | str = False, **options: Any):
        super().__init__(8, num_classes, pretrained, **options)


class FCN8sAtOnce(FCN):
    """FCN-8s at-once (voc-fcn8s-atonce): FCN-8s with pool4 scaled by 0.01 and pool3 by 0.0001."""

    arch = "fcn8s_atonce"

    def __init__(self, num_classes: int = 21, pretrained: bool | str = False, **options: Any):
        super().__init__(8, num_classes, pretrained, at_once=True, **options)


class FCN4s(FCN):
    """FCN-4s (not one of the paper's nets): FCN-8s's fusion, upscore_pool3 + score_pool2 (crop 17),
    upscore4, crop 33; the fusion section 4.2 of the paper stops short of, for thin structures."""

    arch = "fcn4s"

    def __init__(self, num_classes: int = 21, pretrained: bool | str = False, **options: Any):
        super().__init__(4, num_classes, pretrained, **options)


MODELS = {
    "fcn32s": FCN32s,
    "fcn16s": FCN16s,
    "fcn8s": FCN8s,
    "fcn8s_atonce": FCN8sAtOnce,
    "fcn4s": FCN4s,
    "unet": UNet,
}
assert (*MODELS, TorchvisionFCN.arch) == ARCHS


# torch.nn.init's in-place initialisers: what the layers' reset_parameters and our own code draw
# weights with, skipped by build_model(initialize=False).
_INITIALISERS = (
    "uniform_", "normal_", "trunc_normal_", "constant_", "ones_", "zeros_", "eye_", "dirac_",
    "xavier_uniform_", "xavier_normal_", "kaiming_uniform_", "kaiming_normal_", "orthogonal_", "sparse_",
)  # fmt: skip
_INIT_LOCK = threading.Lock()


@contextlib.contextmanager
def _no_initialisation() -> Iterator[None]:
    """Make torch.nn.init's initialisers return their tensor untouched while models are built (the
    tensors keep torch.empty's contents), one build at a time; restored on leaving."""
    with _INIT_LOCK:
        saved = {name: getattr(nn.init, name) for name in _INITIALISERS}
        try:
            for name in saved:
                setattr(nn.init, name, lambda tensor, *args, **kwargs: tensor)
            yield
        finally:
            for name, function in saved.items():
                setattr(nn.init, name, function)


def build_model(model_cfg: Any, initialize: bool = True) -> FCN | UNet | TorchvisionFCN:
    """Return the model that cfg.model describes (an OmegaConf node or any object with its fields).

    ``init_from`` is not handled here: the caller loads that checkpoint and calls init_from_state_dict.
    initialize=False skips drawing the random weights (torch.nn.init's initialisers) for a caller
    that loads every weight next, as fcn.inference.loading does: VGG16's 134 M weights take a second
    to draw. The random number generators are then left as they were.
    """
    if not initialize:
        with _no_initialisation():
            return build_model(model_cfg)
    if model_cfg.arch == TorchvisionFCN.arch:
        if model_cfg.backbone not in TORCHVISION_FCN_BACKBONES:
            raise ValueError(
                f"model.arch=torchvision_fcn needs model.backbone {' or '.join(TORCHVISION_FCN_BACKBONES)}, "
                f"not '{model_cfg.backbone}'"
            )
        return TorchvisionFCN(
            num_classes=int(model_cfg.num_classes),
            backbone=str(model_cfg.backbone),
            aux_weight=float(getattr(model_cfg, "aux_weight", 0.0)),
            in_channels=int(getattr(model_cfg, "in_channels", 3)),
            pretrained=pretrained_choice(model_cfg.pretrained),
        )
    if model_cfg.arch not in MODELS:
        raise ValueError(f"model.arch='{model_cfg.arch}' is not one of {', '.join(ARCHS)}")
    return MODELS[model_cfg.arch](
        num_classes=int(model_cfg.num_classes),
        pretrained=pretrained_choice(model_cfg.pretrained),
        backbone=str(model_cfg.backbone),
        geometry=str(model_cfg.geometry),
        upsampling=str(model_cfg.upsampling),
        learnable_upsampling=bool(model_cfg.learnable_upsampling),
        fusion=str(model_cfg.fusion),
        head=str(model_cfg.head),
        dropout=str(model_cfg.dropout),
        dropout_p=float(model_cfg.dropout_p),
        # Keys added after the others default as the schema does, for objects that predate them.
        in_channels=int(getattr(model_cfg, "in_channels", 3)),
        late_fusion=[str(m) for m in getattr(model_cfg, "late_fusion", [])],
        geometric_classes=int(getattr(model_cfg, "geometric_classes", 0)),
    )


def init_from_state_dict(model: nn.Module, state_dict: Mapping[str, Tensor]) -> Tuple[List[str], List[str]]:
    """Copy every tensor whose name and shape match into model; return (copied, new) names.

    The paper's staged training: FCN-16s starts from a trained FCN-32s (score_pool4 and the new
    deconvolutions are new), FCN-8s from FCN-16s. Tensors of the source that the model lacks are
    ignored; a model tensor of another shape (e.g. another number of classes) stays new, except the
    first convolution of a source with another input channel count (a 3-channel checkpoint into a
    4-channel model): it is adapted (adapt_input_conv) and listed in copied as 'name (adapted I->C
    channels)'.
    """
    source = bare_state_dict(dict(state_dict))
    copied: List[str] = []
    new: List[str] = []
    first = input_conv_name(model) + ".weight"
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            value = source.get(name)
            if (
                name == first
                and isinstance(value, Tensor)
                and value.ndim == 4
                and value.shape[0] == tensor.shape[0]
                and value.shape[2:] == tensor.shape[2:]
                and value.shape[1] != tensor.shape[1]
            ):
                tensor.copy_(adapt_input_conv(value, tensor.shape[1]))
                copied.append(f"{name} (adapted {value.shape[1]}->{tensor.shape[1]} channels)")
            elif isinstance(value, Tensor) and value.shape == tensor.shape:
                tensor.copy_(value)
                copied.append(name)
            else:
                new.append(name)
    return copied, new


def describe_init(copied: List[str], new: List[str]) -> str:
    """Return the one log line of a staged init: counts, the new tensors' names and any adapted one."""
    adapted = [name for name in copied if "(adapted" in name]
    line = f"staged init: copied {len(copied)} tensors, new {len(new)}: {', '.join(new) or 'none'}"
    return line + (f"; {', '.join(adapted)}" if adapted else "")
