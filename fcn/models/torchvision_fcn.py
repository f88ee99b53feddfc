"""torchvision's FCN (``torchvision.models.segmentation.fcn_resnet50`` / ``fcn_resnet101``) as
``model.arch=torchvision_fcn``.

What it computes, as torchvision's ``_fcn_resnet`` builds it:

- the trunk: a ResNet-50 or -101 with ``replace_stride_with_dilation=[False, True, True]``: layer3
  and layer4 keep stride 8 and dilate their 3x3 convolutions by 2 and 4 instead (output stride 8);
- ``classifier``: FCNHead(2048, classes) on layer4 (3x3 conv to 512 without bias, BatchNorm, ReLU,
  Dropout(0.1), 1x1 conv), upsampled bilinearly (align_corners=False) to the input size;
- ``aux_classifier`` (``aux_weight > 0``): FCNHead(1024, classes) on layer3, upsampled the same way.
  torchvision's reference (references/segmentation/train.py ``criterion``) trains it with
  ``loss = loss(out) + 0.5 * loss(aux)``; ``aux_weight`` is that 0.5.

The state dict has torchvision's names (``backbone.conv1.weight`` ... ``backbone.layer4.*``,
``classifier.*``, ``aux_classifier.*``), so torchvision's own files load into it unchanged.

Outputs: in eval mode the logits (N, classes, H, W), as every model here; in training mode with an
auxiliary head, the main logits then the auxiliary ones along the channels (N, 2 * classes, H, W),
which ``fcn.training.losses.AuxHeadLoss`` splits. ``forward_heads`` gives both in any mode.
"""

from __future__ import annotations

from typing import Dict, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fcn.models.backbones import load_torchvision_weights, set_in_channels, torchvision_state_dict
from fcn.models.resnet import ResNetTrunk

TORCHVISION_FCN_BACKBONES = ("resnet50", "resnet101")
"""The trunks torchvision builds an FCN on (its BasicBlock ResNets cannot dilate)."""


class FCNHead(nn.Sequential):
    """torchvision's FCNHead (torchvision.models.segmentation.fcn): a 3x3 convolution to in_channels/4
    (no bias), BatchNorm, ReLU, Dropout(0.1) and a 1x1 convolution to num_classes, the 'extra head'
    of the document's timm results; the paper's FCNs use it in place of a 1x1 score layer on every
    scored stride (model.head=fcn)."""

    def __init__(self, in_channels: int, num_classes: int):
        inter = in_channels // 4
        super().__init__(
            nn.Conv2d(in_channels, inter, 3, padding=1, bias=False),
            nn.BatchNorm2d(inter),
            nn.ReLU(inplace=True),
            nn.Dropout(0.1),
            nn.Conv2d(inter, num_classes, 1),
        )


class DilatedResNet(nn.Module):
    """A torchvision ResNet-50/101 with dilated layer3/layer4 (output stride 8), without its pool and fc."""

    def __init__(self, name: str):
        super().__init__()
        if name not in TORCHVISION_FCN_BACKBONES:
            raise ValueError(f"backbone='{name}' must be one of {', '.join(TORCHVISION_FCN_BACKBONES)}")
        # torchvision's resnet50/101(replace_stride_with_dilation=[False, True, True]), without importing
        # torchvision (fcn.models.resnet); registered in torchvision's order (its IntermediateLayerGetter
        # keeps conv1 ... layer4).
        net = ResNetTrunk(name, dilate=(False, True, True))
        self.conv1, self.bn1, self.relu, self.maxpool = net.conv1, net.bn1, net.relu, net.maxpool
        self.layer1, self.layer2, self.layer3, self.layer4 = net.layer1, net.layer2, net.layer3, net.layer4

    def forward(self, x: Tensor) -> Tuple[Tensor, Tensor]:
        """Return (layer3, layer4) features, both at stride 8."""
        x = self.layer2(self.layer1(self.maxpool(self.relu(self.bn1(self.conv1(x))))))
        c4 = self.layer3(x)
        return c4, self.layer4(c4)

    def torchvision_key_map(self) -> Dict[str, str]:
        """Return {torchvision ImageNet key: own key} (the classifier 'fc' has no counterpart)."""
        return {key: key for key in self.state_dict()}


class TorchvisionFCN(nn.Module):
    """torchvision's FCN-ResNet50/101: a dilated ResNet, FCNHead on layer4, optional FCNHead on layer3."""

    arch = "torchvision_fcn"

    def __init__(
        self,
        num_classes: int = 21,
        backbone: str = "resnet50",
        aux_weight: float = 0.5,
        in_channels: int = 3,
        pretrained: bool | str = False,
    ):
        super().__init__()
        self.num_classes, self.backbone_name, self.aux_weight = num_classes, backbone, float(aux_weight)
        self.backbone = DilatedResNet(backbone)
        set_in_channels(self.backbone, in_channels)
        # ImageNet weights for the trunk (model.pretrained), as for the paper's nets' backbones.
        state = torchvision_state_dict(backbone, pretrained)
        if state is not None:
            source = pretrained if isinstance(pretrained, str) else f"torchvision {backbone}"
            load_torchvision_weights(self.backbone, state, source)
        self.classifier = FCNHead(2048, num_classes)
        self.aux_classifier: Optional[nn.Module] = FCNHead(1024, num_classes) if aux_weight > 0 else None

    def forward_heads(self, x: Tensor) -> Tuple[Tensor, Optional[Tensor]]:
        """Return (main logits, auxiliary logits or None), both at the input's size: torchvision's
        FCN's result['out'] and result['aux']."""
        size = x.shape[-2:]
        c4, c5 = self.backbone(x)
        out = F.interpolate(self.classifier(c5), size=size, mode="bilinear", align_corners=False)
        if self.aux_classifier is None:
            return out, None
        aux = F.interpolate(self.aux_classifier(c4), size=size, mode="bilinear", align_corners=False)
        return out, aux

    def forward(self, x: Tensor) -> Tensor:
        if not (self.training and self.aux_classifier is not None):
            # Evaluation never needs the auxiliary head: skip its 3x3 convolution on layer3.
            size = x.shape[-2:]
            _, c5 = self.backbone(x)
            return F.interpolate(self.classifier(c5), size=size, mode="bilinear", align_corners=False)
        out, aux = self.forward_heads(x)
        return torch.cat([out, aux], 1)
