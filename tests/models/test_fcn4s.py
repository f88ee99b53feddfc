"""model.arch=fcn4s: FCN-8s's skip fusion continued to the stride-4 features (score_pool2), its crops
in the paper's geometry checked against Caffe's coordinate arithmetic, and its config."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from fcn.config import ConfigError, load_config
from fcn.models import FCN4s, FCN8s, build_model, init_from_state_dict
from fcn.models.upsampling import BilinearDeconv, bilinear_weight


def _one_path(cls, geometry: str, path: str, size: tuple[int, int]) -> tuple[nn.Module, dict]:
    """Return (cls with a meta VGG16 trunk and a real head in which only `path`'s score layer passes
    channel 0 through, the trunk's feature shapes for an input of `size`)."""
    with torch.device("meta"):
        model = cls(num_classes=1, geometry=geometry).eval()
    shapes = {s: f.shape for s, f in model.backbone(torch.empty(1, 3, *size, device="meta")).items()}
    model.to_empty(device="cpu")
    with torch.no_grad():
        for name in ("score_fr", "score_pool4", "score_pool3", "score_pool2"):
            if hasattr(model, name):
                layer = getattr(model, name)
                nn.init.zeros_(layer.weight)
                nn.init.zeros_(layer.bias)
                if name == path:
                    layer.weight[0, 0] = 1.0
        for module in model.modules():
            if isinstance(module, BilinearDeconv):
                module.weight.copy_(bilinear_weight(module.weight.shape[0], module.weight.shape[-1]))
    return model, shapes


def _centre_of_impulse(model: nn.Module, shapes: dict, stride: int, u: int, size: tuple[int, int]) -> tuple:
    """Return the (row, column) centre of mass of the logits when the stride-`stride` map holds one
    impulse at (u, u): where the net puts that map's pixel u on the input."""
    feats = {s: torch.zeros(shape) for s, shape in shapes.items()}
    feats[stride][0, 0, u, u] = 1.0
    with torch.no_grad():
        out = model.decode(feats, size)[0, 0]
    assert out.shape == size and out.sum() > 0
    rows, cols = torch.arange(size[0], dtype=torch.float64), torch.arange(size[1], dtype=torch.float64)
    mass = out.double()
    return float((mass.sum(1) * rows).sum() / mass.sum()), float((mass.sum(0) * cols).sum() / mass.sum())


@pytest.mark.parametrize(
    "cls, stride, u, centre",
    [
        # Caffe's coord_map (fcn.models.fcn's comments): pool3's u at 8u - 95.5 (the reference's
        # crops 9 and 31 put it there: this row checks the method), pool2's u at 4u - 97.5
        (FCN8s, 8, 15, 8 * 15 - 95.5),
        (FCN4s, 4, 30, 4 * 30 - 97.5),
    ],
)
def test_paper_geometry_crops_put_each_skip_map_where_caffe_puts_it(cls, stride, u, centre):
    size = (64, 56)
    path = {8: "score_pool3", 4: "score_pool2"}[stride]
    model, shapes = _one_path(cls, "paper", path, size)
    assert _centre_of_impulse(model, shapes, stride, u, size) == pytest.approx((centre, centre), abs=1e-6)


def test_same_geometry_centres_pool2_pixels_on_their_block():
    size = (40, 36)
    model, shapes = _one_path(FCN4s, "same", "score_pool2", size)
    assert shapes[4][-2:] == (10, 9)  # ceil(H / 4)
    assert _centre_of_impulse(model, shapes, 4, 4, size) == pytest.approx(
        (4 * 4 + 1.5, 4 * 4 + 1.5), abs=1e-6
    )


@pytest.mark.parametrize("backbone", ["resnet18", "mobilenet_v3_large"])
def test_fcn4s_gives_input_sized_logits_and_scores_the_stride_4_map(backbone):
    torch.manual_seed(0)
    model = FCN4s(num_classes=2, backbone=backbone, geometry="same").eval()
    assert set(model.backbone.channels) == {4, 8, 16, 32}
    with torch.no_grad():
        for h, w in [(1, 1), (7, 5), (33, 20), (64, 64)]:
            feats = model.backbone(torch.randn(1, 3, h, w))
            assert feats[4].shape[-2:] == (-(-h // 4), -(-w // 4))
            assert feats[4].shape[1] == model.backbone.channels[4] == model.score_pool2.in_channels
            assert model(torch.randn(1, 3, h, w)).shape == (1, 2, h, w)
    # score_pool2 starts at zero, so FCN-4s starts where FCN-8s would: its gradient is not zero
    model.train()
    model(torch.randn(2, 3, 32, 32)).sum().backward()
    assert model.score_pool2.weight.grad.abs().sum() > 0


def test_fcn8s_keeps_its_layers_and_fcn4s_starts_from_it():
    fcn8 = FCN8s(num_classes=3, backbone="resnet18", geometry="same")
    assert not hasattr(fcn8, "score_pool2") and 4 not in fcn8.backbone.channels
    fcn4 = FCN4s(num_classes=3, backbone="resnet18", geometry="same")
    copied, new = init_from_state_dict(fcn4, fcn8.state_dict())
    assert set(new) == {"score_pool2.weight", "score_pool2.bias", "upscore_pool3.weight", "upscore4.weight"}
    assert set(copied) == set(fcn4.state_dict()) - set(new)


def test_fcn4s_config_builds_and_refuses_full_fusion():
    cfg = load_config(
        overrides=[
            "model.arch=fcn4s",
            "model.backbone=resnet18",
            "model.geometry=same",
            "model.pretrained=false",
        ]
    )
    assert isinstance(build_model(cfg.model), FCN4s)
    with pytest.raises(ConfigError, match="model.arch=fcn4s is skip fusion"):
        load_config(overrides=["model.arch=fcn4s", "model.fusion=full"])


def test_fcn4s_exports_to_onnx_with_dynamic_sizes(tmp_path):
    pytest.importorskip("onnxruntime")
    from fcn.inference.onnx import check_onnx, export_onnx

    torch.manual_seed(0)
    model = FCN4s(num_classes=1, backbone="resnet18", geometry="same").eval()
    with torch.no_grad():
        for layer in (model.score_fr, model.score_pool4, model.score_pool3, model.score_pool2):
            nn.init.normal_(layer.weight, std=0.1)  # every path counts in the logits
    export_onnx(model, tmp_path / "m.onnx", sample_shape=(1, 3, 64, 64))
    diffs = check_onnx(model, tmp_path / "m.onnx", shapes=[(1, 3, 64, 64), (2, 3, 37, 50)])
    assert max(diffs) < 1e-3, diffs
