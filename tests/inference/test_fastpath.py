"""fcn.inference.fastpath: Winograd convolutions through NNPACK and int8 post-training quantization."""

from __future__ import annotations

import copy
import re

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from fcn.config import ConfigError, load_config
from fcn.inference import fastpath
from fcn.inference.fastpath import (
    WinogradConv2d,
    apply_fast_path,
    check_fast_path,
    quantize_int8,
    use_winograd,
    winograd_eligible,
)
from fcn.models import build_model

needs_nnpack = pytest.mark.skipif(not torch.backends.nnpack.is_available(), reason="no NNPACK in this build")


@pytest.fixture
def nnpack_everywhere(monkeypatch):
    """Send every eligible layer through NNPACK, whatever its size (tests use tiny maps)."""
    monkeypatch.setattr(fastpath, "WINOGRAD_MIN_PIXELS", 0)
    monkeypatch.setattr(fastpath, "WINOGRAD_MIN_WORK", 0)


def _model(backbone: str = "resnet18", geometry: str = "same", seed: int = 0) -> nn.Module:
    """Return an eval-mode FCN-8s whose zero-initialised score layers got random weights (so the
    logits depend on the features and a numerical difference shows)."""
    cfg = load_config(
        overrides=[
            "model.arch=fcn8s",
            f"model.backbone={backbone}",
            f"model.geometry={geometry}",
            "model.pretrained=false",
        ]
    )
    torch.manual_seed(seed)
    model = build_model(cfg.model)
    with torch.no_grad():
        for name in ("score_fr", "score_pool4", "score_pool3"):
            layer = getattr(model, name)
            layer.weight.normal_(0.0, 1.0 / layer.in_channels**0.5)
    return model.eval()


def _relative_error(out: torch.Tensor, ref: torch.Tensor) -> float:
    return float((out - ref).norm() / ref.norm())


def _clear_winner(ref: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """Return where ref's best logit leads its second by more than twice the largest |out - ref|:
    the only pixels where out's argmax must be ref's whatever the rounding of either."""
    top2 = ref.topk(2, dim=1).values
    return top2[:, 0] - top2[:, 1] > 2 * (out - ref).abs().max()


@needs_nnpack
@pytest.mark.parametrize(("geometry", "converted"), [("paper", 12), ("same", 13)])
def test_winograd_vgg_gives_fp32_results_and_leaves_conv1_1_pad_100_alone(
    geometry, converted, nnpack_everywhere
):
    model = _model("vgg16", geometry)
    x = torch.randn(1, 3, 36, 44)
    with torch.inference_mode():
        ref = model(x)
    keys = list(model.state_dict())
    assert use_winograd(model) == converted  # conv1_1 (pad 100 in 'paper'), fc6 (7x7), fc7 (1x1) stay
    assert type(model.backbone.conv1_1) is (nn.Conv2d if geometry == "paper" else WinogradConv2d)
    assert type(model.backbone.fc6) is nn.Conv2d and type(model.backbone.conv5_3) is WinogradConv2d
    assert list(model.state_dict()) == keys
    with torch.inference_mode():
        out = model(x)
    assert out.shape == ref.shape
    assert _relative_error(out, ref) < 1e-4  # fp32 rounding (~1e-6) through the Winograd transforms
    # The argmax is fp32's wherever rounding cannot tip it; a near tie may go either way.
    clear = _clear_winner(ref, out)
    assert torch.equal(out.argmax(1)[clear], ref.argmax(1)[clear])


@needs_nnpack
@pytest.mark.parametrize("size", [(1, 1), (2, 3), (5, 7), (8, 8), (17, 9)])
@pytest.mark.parametrize("padding", [0, 1, 2])
def test_winograd_conv_equals_conv2d_at_small_and_odd_sizes(size, padding, nnpack_everywhere):
    torch.manual_seed(0)
    conv = nn.Conv2d(5, 6, 3, padding=padding)
    x = torch.randn(2, 5, size[0] + 2 * (padding == 0), size[1] + 2 * (padding == 0))
    ref = conv(x)
    fast = copy.deepcopy(conv)
    assert use_winograd(fast) == 1
    torch.testing.assert_close(fast(x), ref, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(
    "conv",
    [
        nn.Conv2d(3, 4, 3, padding=100),
        nn.Conv2d(3, 4, 3, stride=2, padding=1),
        nn.Conv2d(3, 4, 3, padding=2, dilation=2),
        nn.Conv2d(4, 4, 3, padding=1, groups=2),
        nn.Conv2d(3, 4, 3, padding=1, padding_mode="reflect"),
        nn.Conv2d(3, 4, 5, padding=2),
        nn.Conv2d(3, 4, 3, padding="same"),
    ],
    ids=["pad100", "stride2", "dilated", "grouped", "reflect", "5x5", "same-string"],
)
def test_winograd_skips_convolutions_nnpack_cannot_compute(conv):
    assert not winograd_eligible(conv)


@needs_nnpack
def test_winograd_uses_nnpack_on_large_maps_only(monkeypatch):
    calls = []
    real = torch._nnpack_spatial_convolution
    monkeypatch.setattr(torch, "_nnpack_spatial_convolution", lambda *a: calls.append(a[0].shape) or real(*a))
    conv = nn.Conv2d(64, 64, 3, padding=1)
    use_winograd(conv)
    with torch.inference_mode():
        conv(torch.randn(1, 64, 16, 16))  # 64 * 64 * 256 pixels: too little work, stays on oneDNN
        assert calls == []
        conv(torch.randn(1, 64, 160, 160))
    assert calls == [(1, 64, 160, 160)]


def test_winograd_layer_still_runs_bf16_through_conv2d():
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 4, 3, padding=1)
    conv.__class__ = WinogradConv2d
    x = torch.randn(1, 3, 6, 6)
    out = conv.to(torch.bfloat16)(x.to(torch.bfloat16))
    ref = F.conv2d(x.to(torch.bfloat16), conv.weight, conv.bias, padding=1)
    assert torch.equal(out, ref)


@pytest.mark.slow
@pytest.mark.parametrize("backbone", ["resnet18", "vgg16_bn", "mobilenet_v3_large"])
def test_int8_backbone_is_quantized_and_close_to_fp32(backbone):
    model = _model(backbone)
    torch.manual_seed(1)
    calibration = [torch.randn(1, 3, 64, 64) for _ in range(3)]
    x = torch.randn(2, 3, 48, 80)  # another batch size and shape than the calibration's
    with torch.inference_mode():
        ref = model(x)
    assert quantize_int8(model, iter(calibration)) == 3
    kinds = {type(m).__module__ for m in model.backbone.modules()}
    assert any("quantized" in k for k in kinds)
    assert not any(isinstance(m, nn.Conv2d) for m in model.backbone.modules())
    assert all(p.dtype == torch.float32 for p in model.parameters())  # the head stays fp32
    with torch.inference_mode():
        out = model(x)
    assert out.shape == ref.shape and out.dtype == torch.float32
    # Loose bounds for an approximation, not an outcome to the digit: measured 0.02-0.05 relative
    # error and 96-99% agreement (x86 engine, 7-bit activations) on these random models, where many
    # pixels are near ties; a broken conversion (wrong scale, lost layer) is far outside them.
    assert _relative_error(out, ref) < 0.15
    assert (out.argmax(1) == ref.argmax(1)).float().mean() > 0.6


def test_int8_refuses_a_training_model_and_an_empty_calibration():
    model = _model()
    with pytest.raises(ValueError, match="eval mode"):
        quantize_int8(model.train(), [torch.randn(1, 3, 32, 32)])
    with pytest.raises(ValueError, match="at least one calibration image"):
        quantize_int8(model.eval(), [])


def test_fast_paths_are_cpu_only_and_named_in_the_error():
    check_fast_path("none", torch.device("cuda"))  # nothing to check without a fast path
    with pytest.raises(ValueError, match=r"eval.fast_path=int8 runs on the CPU only .*eval.amp"):
        check_fast_path("int8", torch.device("cuda"))
    with pytest.raises(ValueError, match="must be one of none, auto, winograd, int8"):
        check_fast_path("fp8", torch.device("cpu"))
    with pytest.raises(ValueError, match="auto must be resolved first"):  # a choice, not a path
        check_fast_path("auto", torch.device("cpu"))


def test_apply_fast_path_none_leaves_the_model_alone(capsys):
    model = _model()
    before = copy.deepcopy(model.state_dict())
    assert apply_fast_path(model, "none") is model
    assert capsys.readouterr().out == ""
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_apply_fast_path_int8_says_what_it_did(capsys):
    model = _model()
    apply_fast_path(model, "int8", (torch.randn(1, 3, 32, 32) for _ in range(2)))
    printed = capsys.readouterr().out
    assert "eval.fast_path=int8: backbone quantized to int8" in printed
    assert "calibrated on 2 images" in printed


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            ["eval.fast_path=int9"],
            "eval.fast_path='int9' is not one of none, auto, winograd, int8 (did you mean 'int8'?)",
        ),
        (["eval.fast_path=int8", "eval.amp=bf16"], "set eval.amp=none and eval.channels_last=false"),
        (["eval.fast_path=winograd", "eval.channels_last=true"], "eval.fast_path=winograd computes"),
        (["eval.calibration_images=0"], "eval.calibration_images=0 must be > 0"),
    ],
)
def test_config_rejects_impossible_fast_path_settings(overrides, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(overrides=overrides)
