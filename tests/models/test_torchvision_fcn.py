"""model.arch=torchvision_fcn: torchvision's FCN-ResNet50/101, output for output, and its aux loss."""

from __future__ import annotations

import pytest
import torch
from torchvision.models.segmentation import fcn_resnet50, fcn_resnet101

from fcn.config import ConfigError, load_config
from fcn.models import build_model, init_from_state_dict
from fcn.training.losses import AuxHeadLoss, SegmentationLoss, build_loss

TV = {"resnet50": fcn_resnet50, "resnet101": fcn_resnet101}
ARCH = "predefined_configs/torchvision_fcn_resnet50.yml"


def config(*overrides: str):
    return load_config([ARCH], overrides=["model.pretrained=false", *overrides])


def randomised(model: torch.nn.Module) -> torch.nn.Module:
    """Give every BatchNorm random statistics and affine terms, so that the comparison sees them."""
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.num_features, generator=g) * 0.1)
    return model


@pytest.mark.parametrize("backbone", ["resnet50", "resnet101"])
def test_outputs_equal_torchvisions_fcn_in_float64_main_and_aux(backbone):
    torch.manual_seed(0)
    theirs = randomised(TV[backbone](weights=None, weights_backbone=None, aux_loss=True)).double().eval()
    ours = build_model(config(f"model.backbone={backbone}").model).double().eval()
    ours.load_state_dict(theirs.state_dict())  # strict: the same names, nothing renamed
    x = torch.randn(2, 3, 45, 61, dtype=torch.float64)
    with torch.no_grad():
        expected = theirs(x)
        out, aux = ours.forward_heads(x)
        plain = ours(x)
    assert out.shape == (2, 21, 45, 61)
    assert (out - expected["out"]).abs().max().item() <= 1e-10
    assert (aux - expected["aux"]).abs().max().item() <= 1e-10
    assert torch.equal(plain, out)  # eval mode: the main head's logits only


def test_a_state_dict_saved_by_torchvision_loads_as_it_is(tmp_path):
    theirs = fcn_resnet50(weights=None, weights_backbone=None, aux_loss=True, num_classes=5)
    torch.save(theirs.state_dict(), tmp_path / "fcn_resnet50.pth")
    ours = build_model(config("data.classes=[a,b,c,d,e]").model)
    state = torch.load(tmp_path / "fcn_resnet50.pth", weights_only=True)
    assert ours.load_state_dict(state) is not None  # strict, raises on any difference
    copied, new = init_from_state_dict(build_model(config().model), state)  # 21 classes: heads' last conv new
    assert sorted(new) == [
        "aux_classifier.4.bias",
        "aux_classifier.4.weight",
        "classifier.4.bias",
        "classifier.4.weight",
    ]


def test_training_mode_returns_main_then_aux_logits_and_the_loss_weights_aux_by_half():
    torch.manual_seed(0)
    cfg = config("data.classes=[a,b,c]")
    model = build_model(cfg.model).train()
    x = torch.randn(2, 3, 32, 32)
    logits = model(x)
    assert logits.shape == (2, 6, 32, 32)
    masks = torch.randint(0, 3, (2, 32, 32))
    masks[0, :4] = 255
    loss_fn = build_loss(cfg.loss, 255, None, 3, 0, float(cfg.model.aux_weight))
    assert isinstance(loss_fn, AuxHeadLoss)
    total = loss_fn.pixel_sum(logits, masks) / loss_fn.labelled(masks)
    # torchvision's reference criterion: mean CE of out + 0.5 * mean CE of aux, void ignored.
    ce = torch.nn.functional.cross_entropy
    expected = ce(logits[:, :3], masks, ignore_index=255) + 0.5 * ce(logits[:, 3:], masks, ignore_index=255)
    assert torch.allclose(total, expected, rtol=1e-5)
    assert isinstance(build_loss(cfg.loss, 255, None, 3), SegmentationLoss)


def test_no_aux_head_with_aux_weight_zero():
    model = build_model(config("model.aux_weight=0").model).train()
    assert model.aux_classifier is None
    assert model(torch.randn(1, 3, 24, 24)).shape == (1, 21, 24, 24)


@pytest.mark.parametrize(
    "overrides, words",
    [
        (
            ["model.arch=torchvision_fcn", "model.backbone=resnet50"],
            "set model.geometry=same model.upsampling=bilinear model.head=fcn model.dropout_p=0.0",
        ),
        (
            ["model.backbone=resnet18"],
            "model.arch=torchvision_fcn needs model.backbone=resnet50 or resnet101",
        ),
        (
            ["model.arch=fcn8s", "model.geometry=paper", "model.backbone=vgg16"],
            "model.aux_weight is torchvision_fcn's",
        ),
        (["model.aux_weight=-1"], "model.aux_weight=-1.0 must be >= 0"),
    ],
)
def test_options_that_torchvision_fcn_does_not_have_are_one_error_line(overrides, words):
    paths = [] if overrides[0].startswith("model.arch=torchvision_fcn") else [ARCH]
    with pytest.raises(ConfigError) as err:
        load_config(paths, overrides=overrides)
    assert words in str(err.value) and "\n" not in str(err.value)
