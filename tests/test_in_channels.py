"""model.in_channels: the first convolution takes that many channels, for every backbone family."""

from __future__ import annotations

import pytest
import torch

from fcn.config import ConfigError, load_config
from fcn.models import build_model
from fcn.models.backbones import ResNetBackbone, load_torchvision_weights


@pytest.mark.parametrize("backbone", ["vgg16", "resnet18", "mobilenet_v3_large"])
def test_first_convolution_takes_in_channels(backbone):
    geometry = "paper" if backbone == "vgg16" else "same"
    overrides = [f"model.backbone={backbone}", f"model.geometry={geometry}", "model.pretrained=false"]
    # A folder dataset: VOC's readers give RGB images, which a 4-channel model refuses at load time.
    folder = [
        "data.train.name=folder",
        "data.val.name=folder",
        "model.num_classes=21",
        f"data.classes=[{','.join('c' * 21)}]",
    ]
    cfg = load_config(overrides=[*overrides, *folder, "model.in_channels=4"])
    with torch.device("meta"):
        model = build_model(cfg.model).eval()
        out = model(torch.empty(1, 4, 37, 29))
    assert out.shape == (1, 21, 37, 29)
    first = next(p for n, p in model.named_parameters() if n.endswith("weight") and p.ndim == 4)
    assert first.shape[1] == 4


def test_in_channels_below_one_is_a_config_error():
    with pytest.raises(ConfigError, match=r"model.in_channels=0 must be at least 1"):
        load_config(overrides=["model.in_channels=0"])
    with pytest.raises(ConfigError, match=r"model.in_channels=4 but data.train.name=sbd gives RGB images"):
        load_config(overrides=["model.in_channels=4"])


def test_pretrained_rgb_first_convolution_is_adapted_by_timms_rule():
    # A torchvision-style state dict of ResNet-18 whose conv1 is RGB, loaded into a 4-channel model.
    rgb = ResNetBackbone("resnet18")
    state = {k: v.clone() for k, v in rgb.state_dict().items()}
    four = ResNetBackbone("resnet18", in_channels=4)
    load_torchvision_weights(four, state, "test")
    w, w3 = four.conv1.weight, state["conv1.weight"]
    # Channels repeat R, G, B, R and are scaled by 3/4, so an input constant over channels sees
    # the same response as RGB would.
    torch.testing.assert_close(w[:, :3], w3 * 0.75)
    torch.testing.assert_close(w[:, 3], w3[:, 0] * 0.75)
