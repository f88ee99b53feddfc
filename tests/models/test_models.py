"""Tests of fcn.models: upsampling, output geometry, frozen layers, staged init, options, weights.

VGG16 is heavy on a CPU, so geometry over many sizes runs on the meta device (shapes only) and real
computation uses ResNet-18 / MobileNetV3 or a model's head alone; the VGG16 forward passes that
compare against an independent implementation of the reference nets are in test_models_reference.py.
"""

from __future__ import annotations

import urllib.error
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torchvision
from torch import nn

import fcn.models.fcn as fcn_module
from fcn.config import load_config
from fcn.models import (
    FCN8s,
    FCN8sAtOnce,
    FCN16s,
    FCN32s,
    build_model,
    describe_init,
    init_from_state_dict,
    load_reference_weights,
    upsample_filt,
)
from fcn.models.backbones import VGG16Backbone, hub_cache_path
from fcn.models.upsampling import BilinearDeconv, Interpolate, NearestConv, bilinear_weight, make_upsampling
from tests.helpers import meta_model

ARCH_CLASSES = {"fcn32s": FCN32s, "fcn16s": FCN16s, "fcn8s": FCN8s, "fcn8s_atonce": FCN8sAtOnce}
# (arch, fusion) pairs the config allows: at-once is the paper's skip fusion only.
HEADS = [(a, f) for a in ARCH_CLASSES for f in ("skip", "full") if not (a == "fcn8s_atonce" and f == "full")]
UPSAMPLING = ("transposed", "bilinear", "nearest_conv")
SIZES = [(h, (h * 7) % 45 + 1) for h in range(1, 34)] + [(1, 97), (97, 1), (500, 375), (129, 224)]


@pytest.fixture
def strict_crops(monkeypatch):
    """Make every crop fail unless the map covers it, like Caffe's Crop layer (slicing would shrink)."""
    original = fcn_module._crop

    def checked(x, offset, size):
        assert x.shape[-2] >= offset + size[0] and x.shape[-1] >= offset + size[1], (x.shape, offset, size)
        return original(x, offset, size)

    monkeypatch.setattr(fcn_module, "_crop", checked)


# ---------------------------------------------------------------- bilinear kernel and upsampling


def reference_upsample_filt(size: int) -> np.ndarray:
    # The formula of surgery.upsample_filt (fcn.berkeleyvision.org), written out with numpy.
    factor = (size + 1) // 2
    center = factor - 1 if size % 2 == 1 else factor - 0.5
    og = np.ogrid[:size, :size]
    return (1 - abs(og[0] - center) / factor) * (1 - abs(og[1] - center) / factor)


@pytest.mark.parametrize("size", [1, 2, 3, 4, 5, 7, 16, 32, 64])
def test_bilinear_kernel_matches_upsample_filt(size):
    np.testing.assert_allclose(upsample_filt(size).numpy(), reference_upsample_filt(size), rtol=0, atol=1e-7)


def test_bilinear_kernel_known_values():
    assert upsample_filt(4)[0].tolist() == pytest.approx([0.0625, 0.1875, 0.1875, 0.0625])
    assert upsample_filt(3)[1].tolist() == pytest.approx([0.5, 1.0, 0.5])


def test_deconvolution_weight_is_the_kernel_on_the_channel_diagonal():
    w = bilinear_weight(3, 4)
    for i in range(3):
        for j in range(3):
            expected = upsample_filt(4) if i == j else torch.zeros(4, 4)
            assert torch.equal(w[i, j], expected)


def ramp(n_h: int, n_w: int) -> torch.Tensor:
    i = torch.arange(n_h, dtype=torch.float32).view(-1, 1)
    j = torch.arange(n_w, dtype=torch.float32).view(1, -1)
    return torch.stack([2 * i + 3 * j + 1, -i + 0.5 * j + 0 * i]).unsqueeze(0)  # (1, 2, n_h, n_w)


def input_coordinate(n_out: int, factor: int, geometry: str) -> torch.Tensor:
    """Input-pixel coordinate of every output pixel (input i lands at i*f + shift)."""
    shift = factor - 0.5 if geometry == "paper" else factor / 2 - 0.5
    return (torch.arange(n_out, dtype=torch.float32) - shift) / factor


@pytest.mark.parametrize("geometry", ["paper", "same"])
@pytest.mark.parametrize("factor", [2, 8, 32])
@pytest.mark.parametrize("mode", ["transposed", "bilinear"])
def test_upsampling_a_ramp_is_bilinear_interpolation_in_the_interior(mode, geometry, factor):
    n_h, n_w = 5, 4
    y = make_upsampling(mode, 2, factor, geometry)(ramp(n_h, n_w))
    extra = 1 if geometry == "paper" else 0
    assert y.shape == (1, 2, (n_h + extra) * factor, (n_w + extra) * factor)
    ci = input_coordinate(y.shape[-2], factor, geometry)
    cj = input_coordinate(y.shape[-1], factor, geometry)
    rows = (ci >= 0) & (ci <= n_h - 1)
    cols = (cj >= 0) & (cj <= n_w - 1)
    assert rows.sum() == (n_h - 1) * factor  # the whole interior is checked
    expected0 = 2 * ci[rows].view(-1, 1) + 3 * cj[cols].view(1, -1) + 1
    expected1 = -ci[rows].view(-1, 1) + 0.5 * cj[cols].view(1, -1)
    torch.testing.assert_close(y[0, 0][rows][:, cols], expected0, rtol=0, atol=1e-4)
    torch.testing.assert_close(y[0, 1][rows][:, cols], expected1, rtol=0, atol=1e-4)


@pytest.mark.parametrize("geometry", ["paper", "same"])
def test_frozen_deconvolution_equals_bilinear_interpolation_away_from_the_border(geometry):
    x = torch.randn(1, 3, 6, 5, generator=torch.Generator().manual_seed(0))
    factor = 8
    deconv = BilinearDeconv(3, factor, geometry)(x)
    interp = Interpolate(factor, geometry)(x)
    assert deconv.shape == interp.shape
    ci = input_coordinate(deconv.shape[-2], factor, geometry)
    cj = input_coordinate(deconv.shape[-1], factor, geometry)
    rows, cols = (ci >= 0) & (ci <= 5), (cj >= 0) & (cj <= 4)
    torch.testing.assert_close(
        deconv[..., rows, :][..., cols], interp[..., rows, :][..., cols], atol=1e-5, rtol=0
    )


@pytest.mark.parametrize("geometry", ["paper", "same"])
def test_nearest_conv_copies_the_nearest_input_pixel(geometry):
    x = torch.randn(1, 3, 4, 3, generator=torch.Generator().manual_seed(1))
    factor = 4
    y = NearestConv(3, factor, geometry)(x)
    ci = input_coordinate(y.shape[-2], factor, geometry)
    cj = input_coordinate(y.shape[-1], factor, geometry)
    ii = torch.floor(ci + 0.5).clamp(0, 3).long()
    jj = torch.floor(cj + 0.5).clamp(0, 2).long()
    assert torch.equal(y, x[:, :, ii][:, :, :, jj])


# ---------------------------------------------------------------- output geometry


@pytest.mark.parametrize("mode", UPSAMPLING)
def test_upsampling_modes_agree_on_output_size(mode):
    for geometry, extra in (("paper", 1), ("same", 0)):
        for factor in (2, 8, 16, 32):
            for n in (1, 2, 3, 6):
                y = make_upsampling(mode, 2, factor, geometry)(torch.zeros(1, 2, n, n + 1))
                assert y.shape[-2:] == ((n + extra) * factor, (n + 1 + extra) * factor)


@pytest.mark.parametrize("geometry", ["paper", "same"])
def test_output_has_the_input_size_for_every_head_and_size(geometry, strict_crops):
    # Shapes on the meta device: the VGG16 trunk once per size, then every head (arch x fusion x
    # upsampling; 'bilinear' has nearest_conv's sizes, checked above, and is slow on the meta device).
    models = {
        (arch, fusion, up): meta_model(ARCH_CLASSES[arch], geometry=geometry, fusion=fusion, upsampling=up)
        for arch, fusion in HEADS
        for up in ("transposed", "nearest_conv")
    }
    trunk = next(iter(models.values())).backbone
    for h, w in SIZES:
        feats = trunk(torch.empty(1, 3, h, w, device="meta"))
        for key, model in models.items():
            out = model.decode(feats, (h, w))
            assert out.shape == (1, 21, h, w), (key, h, w, tuple(out.shape))


def test_vgg16_bn_has_vgg16_geometry():
    plain, bn = meta_model(FCN8s).backbone, meta_model(FCN8s, backbone="vgg16_bn").backbone
    for h, w in [(1, 1), (5, 3), (64, 33)]:
        x = torch.empty(1, 3, h, w, device="meta")
        assert {s: f.shape for s, f in plain(x).items()} == {s: f.shape for s, f in bn(x).items()}


@pytest.mark.parametrize("backbone", ["resnet50", "mobilenet_v3_large"])
def test_backbone_features_have_ceil_strided_sizes(backbone):
    trunk = meta_model(FCN8s, backbone=backbone, geometry="same").backbone
    for h, w in [(1, 1), (7, 5), (33, 64), (65, 17)]:
        feats = trunk(torch.empty(1, 3, h, w, device="meta"))
        for stride, feat in feats.items():
            assert feat.shape[-2:] == (-(-h // stride), -(-w // stride)), (stride, h, w)
            assert feat.shape[1] == trunk.channels[stride]


REAL_VARIANTS = [
    ("resnet18", "fcn32s", "skip", "transposed"),
    ("resnet18", "fcn16s", "full", "nearest_conv"),
    ("resnet18", "fcn8s", "skip", "bilinear"),
    ("resnet18", "fcn8s_atonce", "skip", "transposed"),
    ("mobilenet_v3_large", "fcn8s", "full", "transposed"),
]


@pytest.mark.parametrize("backbone,arch,fusion,upsampling", REAL_VARIANTS)
def test_small_backbones_compute_input_sized_logits(backbone, arch, fusion, upsampling, strict_crops):
    torch.manual_seed(0)
    model = ARCH_CLASSES[arch](
        num_classes=5, backbone=backbone, geometry="same", fusion=fusion, upsampling=upsampling
    ).eval()
    with torch.no_grad():
        for h, w in [(1, 1), (7, 5), (33, 20)]:
            out = model(torch.randn(1, 3, h, w))
            assert out.shape == (1, 5, h, w)
            assert torch.isfinite(out).all()


def test_paper_geometry_needs_a_vgg_backbone():
    with pytest.raises(ValueError, match="geometry='same'"):
        FCN8s(backbone="resnet18", geometry="paper")


def test_at_once_needs_skip_fusion():
    with pytest.raises(ValueError, match="skip"):
        meta_model(FCN8sAtOnce, fusion="full")


# ---------------------------------------------------------------- parameters


def n_params(model: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def test_parameter_counts_of_the_paper_models():
    # VGG16 convs 14,714,688 + fc6 102,764,544 + fc7 16,781,312 + score_fr 86,037, plus per model:
    # 32s: upscore 21*21*64*64; 16s: score_pool4 10,773 + upscore2 21*21*4*4 + upscore16 21*21*32*32;
    # 8s: score_pool4 + score_pool3 5,397 + upscore2 + upscore_pool4 + upscore8 21*21*16*16.
    expected = {
        FCN32s: (136_152_917, 134_346_581),
        FCN16s: (134_815_994, 134_357_354),
        FCN8s: (134_489_759, 134_362_751),
        FCN8sAtOnce: (134_489_759, 134_362_751),
    }
    for cls, (total, trainable) in expected.items():
        model = meta_model(cls)
        assert (n_params(model), n_params(model, trainable_only=True)) == (total, trainable), cls.__name__


def test_score_layers_start_at_zero():
    model = FCN8s(num_classes=4, backbone="resnet18", geometry="same")
    for layer in (model.score_fr, model.score_pool4, model.score_pool3):
        assert not layer.weight.any() and not layer.bias.any()


def test_frozen_deconvolutions_get_no_gradient_and_are_not_trainable():
    torch.manual_seed(0)
    model = FCN8s(num_classes=3, backbone="resnet18", geometry="same").eval()  # eval: BN on tiny maps
    nn.init.normal_(model.score_fr.weight)  # so gradients reach everything
    frozen = {"upscore2.weight", "upscore_pool4.weight", "upscore8.weight"}
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert frozen.isdisjoint(trainable) and "score_pool3.weight" in trainable
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    in_optimizer = {id(p) for group in optimizer.param_groups for p in group["params"]}
    assert all(id(getattr(model, n.split(".")[0]).weight) not in in_optimizer for n in frozen)
    before = model.upscore8.weight.clone()
    model(torch.randn(1, 3, 17, 20)).square().mean().backward()
    optimizer.step()
    for name in frozen:
        assert getattr(model, name.split(".")[0]).weight.grad is None
    assert torch.equal(model.upscore8.weight, before)
    assert model.score_pool3.weight.grad is not None and model.score_pool3.weight.grad.any()


def test_learnable_upsampling_trains_the_deconvolutions():
    model = FCN16s(num_classes=3, backbone="resnet18", geometry="same", learnable_upsampling=True).eval()
    nn.init.normal_(model.score_fr.weight)
    model(torch.randn(1, 3, 16, 16)).sum().backward()
    assert model.upscore2.weight.requires_grad and model.upscore2.weight.grad.abs().sum() > 0
    assert model.upscore16.weight.grad.abs().sum() > 0


def test_nearest_conv_is_trainable_and_bilinear_has_no_parameters():
    nearest = meta_model(FCN8s, backbone="resnet18", geometry="same", upsampling="nearest_conv")
    assert isinstance(nearest.upscore8, NearestConv) and nearest.upscore8.weight.requires_grad
    bilinear = meta_model(FCN8s, backbone="resnet18", geometry="same", upsampling="bilinear")
    assert not any("upscore" in name for name, _ in bilinear.named_parameters())


def test_dropout_is_element_wise_by_default_and_channel_wise_on_request():
    vgg = meta_model(FCN32s).backbone
    assert type(vgg.drop6) is nn.Dropout and type(vgg.drop7) is nn.Dropout and vgg.drop7.p == 0.5
    channel = meta_model(FCN32s, dropout="channel", dropout_p=0.3).backbone
    assert type(channel.drop6) is nn.Dropout2d and channel.drop7.p == 0.3
    assert type(
        meta_model(FCN32s, backbone="resnet18", geometry="same", dropout="channel").backbone.drop
    ) is (nn.Dropout2d)


# ---------------------------------------------------------------- fusion


def randomize_(module: nn.Module, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.1)


def test_at_once_scales_pool4_by_1e_2_and_pool3_by_1e_4():
    torch.manual_seed(0)
    plain = FCN8s(num_classes=4, backbone="resnet18", geometry="same").eval()
    for layer in (plain.score_fr, plain.score_pool4, plain.score_pool3):
        randomize_(layer, seed=len(layer.weight))
    at_once = FCN8sAtOnce(num_classes=4, backbone="resnet18", geometry="same").eval()
    at_once.load_state_dict(plain.state_dict())
    x = torch.randn(1, 3, 40, 24)
    with torch.no_grad():
        unscaled = at_once(x)
        # The scales are linear: scaling pool4/pool3 equals scaling their score layers' weights.
        plain.score_pool4.weight.mul_(0.01)
        plain.score_pool3.weight.mul_(0.0001)
        torch.testing.assert_close(unscaled, plain(x), rtol=1e-5, atol=1e-6)
        plain.score_pool3.weight.mul_(10)
        assert not torch.allclose(unscaled, plain(x), rtol=1e-5, atol=1e-6)


def head_only(cls, geometry, seed, **options):
    """Return (model, feats for an input size) with a real head and a meta VGG trunk (decode only)."""
    model = meta_model(cls, geometry=geometry, **options)
    model.to_empty(device="cpu")
    for name in ("score_fr", "score_pool4", "score_pool3"):
        if hasattr(model, name):
            randomize_(getattr(model, name), seed)
    for module in model.modules():
        if isinstance(module, BilinearDeconv):
            module.weight.data.copy_(bilinear_weight(module.weight.shape[0], module.weight.shape[-1]))
    if hasattr(model, "fuse_weight"):
        nn.init.ones_(model.fuse_weight)
    return model


@pytest.mark.parametrize("geometry", ["paper", "same"])
@pytest.mark.parametrize("upsampling", ["transposed", "bilinear"])
def test_full_fusion_paths_are_aligned_like_the_skip_paths(geometry, upsampling):
    # With frozen bilinear upsampling the skip nets are linear in each score map, so zeroing the coarser
    # maps leaves one path whose output must equal the full-fusion path of the same map: that checks the
    # full-fusion crops (19, 107, 103 in the paper's geometry) against the reference's (5, 9, 27, 31).
    trunk = meta_model(FCN8s, geometry=geometry).backbone
    size = (37, 50)
    g = torch.Generator().manual_seed(0)
    feats = {
        s: torch.randn(f.shape, generator=g)
        for s, f in trunk(torch.empty(1, 3, *size, device="meta")).items()
    }
    for cls, zeroed in [(FCN32s, ()), (FCN16s, ("score_fr",)), (FCN8s, ("score_fr", "score_pool4"))]:
        skip = head_only(cls, geometry, 1, upsampling=upsampling)
        full = head_only(cls, geometry, 1, upsampling=upsampling, fusion="full")
        for name in zeroed:
            for m in (skip, full):
                nn.init.zeros_(getattr(m, name).weight)
                nn.init.zeros_(getattr(m, name).bias)
        with torch.no_grad():
            expected, actual = skip.decode(feats, size), full.decode(feats, size)
        assert expected.abs().max() > 0.1
        torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-5)


def test_full_fusion_weights_are_learned_per_path_and_class():
    model = FCN8s(num_classes=3, backbone="resnet18", geometry="same", fusion="full").eval()
    assert model.fuse_weight.shape == (3, 3) and model.fuse_weight.requires_grad
    nn.init.normal_(model.score_pool3.weight)
    model(torch.randn(1, 3, 16, 16)).sum().backward()
    assert model.fuse_weight.grad[2].abs().sum() > 0


# ---------------------------------------------------------------- staged init


def test_staged_init_copies_exactly_the_shared_tensors():
    torch.manual_seed(0)
    fcn32 = FCN32s(num_classes=4, backbone="resnet18", geometry="same")
    randomize_(fcn32.score_fr, seed=3)
    fcn16 = FCN16s(num_classes=4, backbone="resnet18", geometry="same")
    copied, new = init_from_state_dict(fcn16, fcn32.state_dict())
    assert set(new) == {"score_pool4.weight", "score_pool4.bias", "upscore2.weight", "upscore16.weight"}
    assert set(copied) == set(fcn16.state_dict()) - set(new)
    assert set(copied) == set(fcn32.state_dict()) - {"upscore.weight"}
    assert torch.equal(fcn16.score_fr.weight, fcn32.score_fr.weight)
    assert torch.equal(fcn16.backbone.layer4[1].bn2.running_var, fcn32.backbone.layer4[1].bn2.running_var)

    fcn8 = FCN8s(num_classes=4, backbone="resnet18", geometry="same")
    wrapped = {"module." + k: v for k, v in fcn16.state_dict().items()}  # as DistributedDataParallel saves
    copied, new = init_from_state_dict(fcn8, wrapped)
    expected_new = {"score_pool3.weight", "score_pool3.bias", "upscore_pool4.weight", "upscore8.weight"}
    assert set(new) == expected_new
    assert "score_pool4.weight" in copied and "upscore2.weight" in copied


def test_staged_init_of_the_paper_models_names():
    copied, new = init_from_state_dict(meta_model(FCN16s), meta_model(FCN32s).state_dict())
    assert set(new) == {"score_pool4.weight", "score_pool4.bias", "upscore2.weight", "upscore16.weight"}
    assert "backbone.fc6.weight" in copied and "score_fr.bias" in copied and len(copied) == 32
    copied, new = init_from_state_dict(meta_model(FCN8s), meta_model(FCN16s).state_dict())
    assert set(new) == {"score_pool3.weight", "score_pool3.bias", "upscore_pool4.weight", "upscore8.weight"}


def test_staged_init_leaves_tensors_of_another_shape_new():
    copied, new = init_from_state_dict(meta_model(FCN16s, num_classes=5), meta_model(FCN32s).state_dict())
    assert "score_fr.weight" in new and "score_fr.bias" in new and "backbone.conv5_3.weight" in copied


# ---------------------------------------------------------------- build_model


def test_build_model_builds_what_the_config_describes():
    cfg = load_config(
        overrides=[
            "model.arch=fcn16s",
            "model.backbone=mobilenet_v3_large",
            "model.pretrained=false",
            "model.geometry=same",
            "model.upsampling=nearest_conv",
            "model.fusion=full",
            "model.dropout=channel",
            "model.dropout_p=0.2",
        ]
    )
    with torch.device("meta"):
        model = build_model(cfg.model)
    assert type(model) is FCN16s and model.fusion == "full" and model.geometry == "same"
    assert isinstance(model.upscore16, NearestConv)
    assert type(model.backbone.drop) is nn.Dropout2d and model.backbone.drop.p == 0.2


@pytest.mark.parametrize("arch", list(ARCH_CLASSES))
def test_build_model_defaults_are_the_paper_nets(arch):
    cfg = SimpleNamespace(
        arch=arch,
        backbone="vgg16",
        num_classes=21,
        pretrained="false",
        geometry="paper",
        upsampling="transposed",
        learnable_upsampling=False,
        fusion="skip",
        head="score",
        dropout="element",
        dropout_p=0.5,
        init_from="",
        in_channels=3,
    )
    with torch.device("meta"):
        model = build_model(cfg)
    assert type(model) is ARCH_CLASSES[arch] and isinstance(model.backbone, VGG16Backbone)
    assert model.backbone.conv1_1.padding == (100, 100) and model.backbone.fc6.padding == (0, 0)


def test_same_geometry_drops_the_padding_of_100():
    vgg = meta_model(FCN8s, geometry="same").backbone
    assert vgg.conv1_1.padding == (1, 1) and vgg.fc6.padding == (3, 3)


# ---------------------------------------------------------------- ImageNet weights (never downloaded)


def random_torchvision_state_dict(factory) -> dict:
    with torch.device("meta"):
        shapes = {k: v.shape for k, v in factory().state_dict().items()}
    g = torch.Generator().manual_seed(0)
    return {k: torch.randn(s, generator=g) if len(s) else torch.tensor(7) for k, s in shapes.items()}


@pytest.fixture(scope="module")
def resnet18_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("weights") / "resnet18.pth"
    state = random_torchvision_state_dict(torchvision.models.resnet18)
    torch.save(state, path)
    return path, state


@pytest.fixture
def no_download(monkeypatch):
    def refuse(*args, **kwargs):
        raise urllib.error.URLError("no network in tests")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", refuse)


def test_pretrained_path_loads_torchvision_weights_into_the_backbone(resnet18_file, no_download):
    path, state = resnet18_file
    model = FCN8s(backbone="resnet18", geometry="same", pretrained=str(path))
    own = model.backbone.state_dict()
    for key, value in state.items():
        if not key.startswith("fc."):
            assert torch.equal(own[key], value), key
    assert not model.score_fr.weight.any()


def test_pretrained_true_reads_the_hub_cache(resnet18_file, tmp_path, monkeypatch, no_download):
    path, state = resnet18_file
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    cached = hub_cache_path("resnet18")
    assert cached.startswith(str(tmp_path / "checkpoints")) and cached.endswith(".pth")
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / cached.rsplit("/", 1)[1]).write_bytes(path.read_bytes())
    model = FCN32s(backbone="resnet18", geometry="same", pretrained=True)
    assert torch.equal(model.backbone.conv1.weight, state["conv1.weight"])


def test_pretrained_true_offline_says_where_to_put_the_file(tmp_path, monkeypatch, no_download):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    with pytest.raises(FileNotFoundError) as info:
        FCN32s(backbone="resnet18", geometry="same", pretrained=True)
    message = str(info.value)
    assert "\n" not in message and hub_cache_path("resnet18") in message and "model.pretrained" in message


def test_pretrained_file_with_a_foreign_key_is_rejected(resnet18_file, tmp_path):
    _, state = resnet18_file
    broken = dict(state)
    del broken["layer3.0.conv1.weight"]
    broken["head.weight"] = torch.zeros(1)
    path = tmp_path / "broken.pth"
    torch.save(broken, path)
    with pytest.raises(ValueError, match="head.weight"):
        FCN32s(backbone="resnet18", geometry="same", pretrained=str(path))
    del broken["head.weight"]
    torch.save(broken, path)
    with pytest.raises(ValueError, match="layer3.0.conv1.weight"):
        FCN32s(backbone="resnet18", geometry="same", pretrained=str(path))


def test_pretrained_missing_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        FCN32s(backbone="resnet18", geometry="same", pretrained=str(tmp_path / "nope.pth"))


@pytest.mark.parametrize(
    "batch_norm,factory", [(False, torchvision.models.vgg16), (True, torchvision.models.vgg16_bn)]
)
def test_vgg_key_map_covers_torchvision_vgg_but_fc8(batch_norm, factory):
    with torch.device("meta"):
        tv = factory().state_dict()
        vgg = VGG16Backbone(batch_norm=batch_norm)
    mapping = vgg.torchvision_key_map()
    assert set(mapping) == set(tv) - {"classifier.6.weight", "classifier.6.bias"}
    assert set(mapping.values()) == set(vgg.state_dict())
    own = vgg.state_dict()
    assert all(tv[k].numel() == own[v].numel() for k, v in mapping.items())
    assert mapping["features.28.weight" if not batch_norm else "features.40.weight"] == "conv5_3.weight"


# ---------------------------------------------------------------- reference-naming import (shapes only)


def reference_state_dict_like(model) -> dict:
    return {
        k.removeprefix("backbone."): torch.empty(v.shape, device="meta")
        for k, v in model.state_dict().items()
    }


@pytest.mark.parametrize("cls", list(ARCH_CLASSES.values()))
def test_reference_names_are_the_prototxt_layer_names(cls):
    names = {k.split(".")[0] for k in reference_state_dict_like(meta_model(cls))}
    vgg = {f"conv{b}_{i}" for b, n in enumerate([2, 2, 3, 3, 3], 1) for i in range(1, n + 1)} | {"fc6", "fc7"}
    heads = {
        FCN32s: {"score_fr", "upscore"},
        FCN16s: {"score_fr", "score_pool4", "upscore2", "upscore16"},
        FCN8s: {"score_fr", "score_pool4", "score_pool3", "upscore2", "upscore_pool4", "upscore8"},
    }
    assert names == vgg | heads.get(cls, heads[FCN8s])


def test_reference_import_rejects_missing_and_unexpected_keys():
    model = meta_model(FCN8s)
    state = reference_state_dict_like(model)
    load_reference_weights(model, state)  # complete: accepted
    with pytest.raises(ValueError, match="'upscore8.weight'"):
        load_reference_weights(model, {k: v for k, v in state.items() if k != "upscore8.weight"})
    with pytest.raises(ValueError, match="'upscore.weight'"):
        load_reference_weights(model, {**state, "upscore.weight": state["upscore8.weight"]})
    with pytest.raises(ValueError, match="'score_fr.weight' has shape"):
        load_reference_weights(
            model, {**state, "score_fr.weight": torch.empty(60, 4096, 1, 1, device="meta")}
        )


def test_reference_import_accepts_linear_fc6_and_constant_at_once_scales():
    model = meta_model(FCN8sAtOnce)
    state = reference_state_dict_like(model)
    state["fc6.weight"] = torch.empty(4096, 25088, device="meta")
    load_reference_weights(model, {**state, "scale_pool4.weight": torch.full((512,), 0.01)})
    with pytest.raises(ValueError, match="scale_pool3.weight"):
        load_reference_weights(model, {**state, "scale_pool3.weight": torch.full((256,), 0.01)})
    with pytest.raises(ValueError, match="scale_pool4.weight"):
        load_reference_weights(meta_model(FCN8s), {**state, "scale_pool4.weight": torch.full((512,), 0.01)})


def test_reference_import_needs_the_reference_architecture():
    with pytest.raises(ValueError, match="upsampling=bilinear"):
        load_reference_weights(meta_model(FCN8s, upsampling="bilinear"), {})
    with pytest.raises(ValueError, match="backbone=vgg16_bn"):
        load_reference_weights(meta_model(FCN8s, backbone="vgg16_bn"), {})


def test_staged_init_report_is_one_line_naming_the_new_tensors():
    line = describe_init(
        ["backbone.fc6.weight", "score_fr.weight"], ["score_pool4.weight", "upscore2.weight"]
    )
    assert "\n" not in line and "copied 2" in line and "score_pool4.weight, upscore2.weight" in line


def test_unknown_options_are_named():
    with pytest.raises(ValueError, match="resnet19"):
        FCN8s(backbone="resnet19", geometry="same")
    with pytest.raises(ValueError, match="bicubic"):
        meta_model(FCN8s, upsampling="bicubic")
    with pytest.raises(ValueError, match="dropout='none'"):
        meta_model(FCN8s, dropout="none")


def test_pretrained_file_that_is_not_a_state_dict_is_one_line_error(tmp_path):
    path = tmp_path / "garbage.pth"
    path.write_bytes(b"not a torch file")
    with pytest.raises(ValueError, match="garbage.pth") as info:
        FCN32s(backbone="resnet18", geometry="same", pretrained=str(path))
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("backbone", ["resnet18", "vgg16"])
def test_build_model_without_initialisation_loads_to_the_same_net_and_draws_nothing(backbone):
    """fcn.inference.loading's build: no random draws (the generator is left as it was), and with the
    weights loaded, the same outputs as a normally built net; torch.nn.init is back as it was."""
    from fcn.models import build_model

    geometry = ["model.geometry=same"] if backbone != "vgg16" else []
    cfg = load_config(overrides=[f"model.backbone={backbone}", "model.pretrained=false", *geometry])
    torch.manual_seed(3)
    reference = build_model(cfg.model).eval()
    initialisers = {name: getattr(nn.init, name) for name in fcn_module._INITIALISERS}
    state = torch.random.get_rng_state()
    bare = build_model(cfg.model, initialize=False)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert all(getattr(nn.init, name) is f for name, f in initialisers.items())
    bare.load_state_dict(reference.state_dict())
    x = torch.randn(1, 3, 64, 48)
    with torch.no_grad():
        assert torch.equal(bare.eval()(x), reference(x))


def test_no_initialisation_restores_torch_nn_init_after_a_failed_build():
    from fcn.models import build_model

    saved = nn.init.kaiming_uniform_
    with pytest.raises(ValueError, match="model.arch='nope'"):
        build_model(SimpleNamespace(arch="nope"), initialize=False)
    assert nn.init.kaiming_uniform_ is saved
