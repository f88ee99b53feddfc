"""ResNet-18/34/50/101 trunks (He et al. 2016) without torchvision: the same modules under the same
names as ``torchvision.models.resnet*`` (its state dicts load as they are), the same operations in
the same order (equal outputs, bit for bit, on the same weights), and the same random draws in the
same order (a seeded model from scratch is torchvision's). Only the pooling and classifier are
left out.

Why not torchvision's own: importing torchvision imports its detection ops and, through them, the
compiler stack (torch._dynamo), a second or more before predict.py, evaluate.py or ``from fcn import
Segmenter`` can segment anything with a checkpoint that needs none of it.
"""

from __future__ import annotations

from typing import Sequence

from torch import Tensor, nn

# Blocks per stage, and which block (torchvision's resnet18 ... resnet101).
RESNET_LAYERS = {
    "resnet18": ("basic", (2, 2, 2, 2)),
    "resnet34": ("basic", (3, 4, 6, 3)),
    "resnet50": ("bottleneck", (3, 4, 6, 3)),
    "resnet101": ("bottleneck", (3, 4, 23, 3)),
}


def _conv3x3(c_in: int, c_out: int, stride: int = 1, dilation: int = 1) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, 3, stride=stride, padding=dilation, dilation=dilation, bias=False)


def _conv1x1(c_in: int, c_out: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False)


class BasicBlock(nn.Module):
    """Two 3x3 convolutions and the shortcut (ResNet-18/34)."""

    expansion = 1

    def __init__(
        self, c_in: int, planes: int, stride: int = 1, downsample: nn.Module | None = None, dilation: int = 1
    ) -> None:
        super().__init__()
        if dilation > 1:
            raise ValueError("a ResNet-18/34 block has no dilated version (torchvision's neither)")
        self.conv1 = _conv3x3(c_in, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = _conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += x if self.downsample is None else self.downsample(x)
        return self.relu(out)


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (strided: the "V1.5" ResNet torchvision builds), 1x1 expand, and the shortcut."""

    expansion = 4

    def __init__(
        self, c_in: int, planes: int, stride: int = 1, downsample: nn.Module | None = None, dilation: int = 1
    ) -> None:
        super().__init__()
        self.conv1 = _conv1x1(c_in, planes)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = _conv3x3(planes, planes, stride, dilation)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = _conv1x1(planes, planes * self.expansion)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        out += x if self.downsample is None else self.downsample(x)
        return self.relu(out)


class ResNetTrunk(nn.Module):
    """conv1 ... layer4 of a torchvision ResNet; forward returns layer4's output (stride 32, or less
    where dilate replaces a stage's stride by dilation, as torchvision's replace_stride_with_dilation)."""

    def __init__(self, name: str, dilate: Sequence[bool] = (False, False, False)) -> None:
        super().__init__()
        if name not in RESNET_LAYERS:
            raise ValueError(f"'{name}' is not one of {', '.join(RESNET_LAYERS)}")
        kind, counts = RESNET_LAYERS[name]
        block = BasicBlock if kind == "basic" else Bottleneck
        self.expansion = block.expansion
        self._c_in, self._dilation = 64, 1
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._stage(block, 64, counts[0], 1, False)
        self.layer2 = self._stage(block, 128, counts[1], 2, dilate[0])
        self.layer3 = self._stage(block, 256, counts[2], 2, dilate[1])
        self.layer4 = self._stage(block, 512, counts[3], 2, dilate[2])
        # torchvision builds a 1000-way classifier here; its default initialisation draws from the
        # random generator, so one is built (and dropped) to keep the draws that follow the same.
        nn.Linear(512 * block.expansion, 1000)
        for m in self.modules():  # torchvision's ResNet initialisation (zero_init_residual=False)
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)

    def _stage(self, block: type, planes: int, count: int, stride: int, dilate: bool) -> nn.Sequential:
        previous = self._dilation
        if dilate:
            self._dilation *= stride
            stride = 1
        downsample = None
        if stride != 1 or self._c_in != planes * block.expansion:
            # Built before the block, as torchvision does (the random draws' order).
            downsample = nn.Sequential(
                _conv1x1(self._c_in, planes * block.expansion, stride),
                nn.BatchNorm2d(planes * block.expansion),
            )
        blocks = [block(self._c_in, planes, stride, downsample, previous)]
        self._c_in = planes * block.expansion
        blocks += [block(self._c_in, planes, dilation=self._dilation) for _ in range(1, count)]
        return nn.Sequential(*blocks)

    def forward(self, x: Tensor) -> Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))
