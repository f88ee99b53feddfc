"""model.arch=unet: U-Net's decoder on every backbone family (input-sized logits at odd sizes, the
finer skips each backbone gives), its config checks, ONNX export parity, the int8 fast path and the
memory budget's estimate against a measured peak."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from fcn.config import ConfigError, load_config
from fcn.models import FCN4s, UNet, build_model

ROOT = Path(__file__).resolve().parents[2]
BASE = ["model.arch=unet", "model.backbone=resnet18", "model.geometry=same", "model.pretrained=false"]


def _smooth(h: int, w: int, seed: int = 0) -> torch.Tensor:
    """A (1, 3, h, w) image of smooth bright and dark regions, normalised about zero."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.randn(1, 3, max(2, h // 8), max(2, w // 8), generator=g)
    return nn.functional.interpolate(coarse, size=(h, w), mode="bilinear", align_corners=False)


@pytest.mark.parametrize(
    "backbone, skips",
    [
        ("resnet18", {2, 4, 8, 16, 32}),  # the stem before the max-pool at 2
        ("vgg16", {1, 2, 4, 8, 16, 32}),  # conv1_2 at 1, pool1 at 2
        ("mobilenet_v3_large", {2, 4, 8, 16, 32}),
        ("timm:resnet18", {2, 4, 8, 16, 32}),
        ("timm:convnext_tiny", {4, 8, 16, 32}),  # a 4x4 stem: blocks 2 and 1 have no skip
    ],
)
def test_unet_gives_input_sized_logits_at_odd_sizes_on_every_backbone_family(backbone, skips):
    if backbone.startswith("timm:"):
        pytest.importorskip("timm")
    torch.manual_seed(0)
    model = UNet(num_classes=3, backbone=backbone).eval()
    assert set(model.backbone.channels) == skips
    with torch.no_grad():
        for h, w in [(37, 50), (97, 131), (1, 1)]:
            feats = model.backbone(torch.randn(1, 3, h, w))
            assert {s: f.shape[-2:] for s, f in feats.items()} == {s: (-(-h // s), -(-w // s)) for s in skips}
            assert model(torch.randn(1, 3, h, w)).shape == (1, 3, h, w)
    # every decoder block takes the skip its stride has, and trains
    previous = model.backbone.channels[32]
    for stride, width, block in zip((16, 8, 4, 2, 1), (256, 128, 64, 32, 16), model.decoder):
        assert block.conv1[0].in_channels == previous + model.backbone.channels.get(stride, 0)
        previous = block.conv2[0].out_channels
        assert previous == width
    model.train()
    model(torch.randn(2, 3, 32, 32)).sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.decoder[-1].parameters())


def test_the_fcn_backbones_give_what_they_gave_without_the_unet_skips():
    # finest_stride 8 and 4 (the paper's nets, FCN-4s) keep their maps: the extra ones are U-Net's only
    torch.manual_seed(0)
    fcn4 = FCN4s(num_classes=2, backbone="resnet18", geometry="same").eval()
    assert set(fcn4.backbone.channels) == {4, 8, 16, 32}
    vgg = build_model(load_config(overrides=["model.arch=fcn8s", "model.pretrained=false"]).model)
    assert set(vgg.backbone.channels) == {8, 16, 32} and vgg.backbone.scored == (3, 4)


def test_unet_config_builds_and_refuses_the_fcn_decoder_keys():
    assert isinstance(build_model(load_config(overrides=BASE).model), UNet)
    with pytest.raises(ConfigError, match="model.arch=unet .* needs model.geometry=same"):
        load_config(overrides=[*BASE[:2], "model.backbone=vgg16", "model.geometry=paper"])
    with pytest.raises(ConfigError, match=r"has no model.upsampling, model.head: leave them unset"):
        load_config(overrides=[*BASE, "model.upsampling=bilinear", "model.head=fcn"])
    with pytest.raises(ConfigError, match=r"has no model.geometric_classes"):
        load_config(overrides=[*BASE, "model.geometric_classes=3"])
    with pytest.raises(ValueError, match="fusion='full' is an FCN decoder's option"):
        UNet(2, fusion="full")


@pytest.mark.parametrize("backbone", ["resnet18", "mobilenet_v3_large", "timm:resnet18"])
def test_unet_exports_to_onnx_and_onnxruntime_gives_torchs_logits_at_odd_sizes(backbone, tmp_path):
    pytest.importorskip("onnxruntime")
    if backbone.startswith("timm:"):
        pytest.importorskip("timm")
    from fcn.inference.engines import make_engine
    from fcn.inference.onnx import check_onnx, export_onnx

    torch.manual_seed(0)
    model = UNet(num_classes=2, backbone=backbone).eval()
    export_onnx(model, tmp_path / "m.onnx", sample_shape=(1, 3, 64, 64))
    diffs = check_onnx(model, tmp_path / "m.onnx", shapes=[(1, 3, 64, 64), (2, 3, 37, 50)])
    assert max(diffs) < 1e-3, diffs
    engine = make_engine("onnxruntime", tmp_path / "m.onnx")
    x = torch.randn(1, 3, 97, 131)
    with torch.inference_mode():
        torch.testing.assert_close(engine(x), model(x), atol=1e-3, rtol=1e-3)


def test_unet_int8_fast_path_runs_and_agrees_with_fp32_on_98_percent_of_pixels():
    from fcn.inference.fastpath import apply_fast_path

    torch.manual_seed(0)
    model = UNet(num_classes=3, backbone="resnet18").eval()
    images = [_smooth(96, 128, seed) for seed in range(4)]
    with torch.inference_mode():
        fp32 = [model(x).argmax(1) for x in images]
    apply_fast_path(model, "int8", images, log=False)
    assert type(model.backbone).__name__ == "GraphModule"  # the backbone quantized; the decoder fp32
    test = _smooth(97, 131, seed=9)
    with torch.inference_mode():
        int8 = [model(x).argmax(1) for x in images]
        assert model(test).shape == (1, 3, 97, 131)
    agreement = sum(float((a == b).float().mean()) for a, b in zip(fp32, int8)) / len(images)
    assert agreement >= 0.98, agreement


_PEAK = """
import json, sys, torch
from pathlib import Path
from fcn.config import load_config
from fcn.models import build_model
from fcn.inference.budget import whole_bytes

def status(field):
    for line in open("/proc/self/status"):
        if line.startswith(field):
            return float(line.split()[1]) * 1024

torch.set_num_threads(1)
cfg = load_config(overrides=sys.argv[1:])
model = build_model(cfg.model).eval()
h, w = 600, 800
x = torch.randn(1, 3, h, w)
with torch.inference_mode():
    model(torch.randn(1, 3, 32, 32))  # oneDNN's first-call set-up is not the image's
    before = status("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS
    labels = model(x).argmax(1)
    peak = status("VmHWM")
print(json.dumps({"added": peak - before, "estimate": whole_bytes(cfg, h, w) - 4 * 3 * h * w}))
"""


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux's peak-RSS reset")
@pytest.mark.parametrize("backbone", ["resnet18", "vgg16"])
def test_the_budget_estimate_of_a_unet_bounds_its_measured_peak_closely(backbone):
    # the whole-image pass at 0.48 megapixels in a fresh process, as bench/slide.py measures
    overrides = [
        *BASE[:1],
        f"model.backbone={backbone}",
        *BASE[2:],
        "model.num_classes=2",
        "data.classes=[a,b]",
    ]
    out = subprocess.run(
        [sys.executable, "-c", _PEAK, *overrides], cwd=ROOT, capture_output=True, text=True, check=True
    )
    got = json.loads(out.stdout.strip().splitlines()[-1])
    fcn8s = load_config(overrides=[o.replace("unet", "fcn8s") for o in overrides])
    from fcn.inference.budget import whole_bytes

    assert got["estimate"] > whole_bytes(fcn8s, 600, 800) - 4 * 3 * 600 * 800  # the decoder counts
    assert got["added"] <= got["estimate"] <= 1.6 * got["added"], got
