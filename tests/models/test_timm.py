"""timm backbones (model.backbone=timm:<name>), the FCN head (model.head=fcn) and the input
normalisation that follows a timm model's pretrained config. Offline: pretrained=false, weights
saved here from randomly initialised timm models, timm's downloads replaced by a network error."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import yaml
from torch import nn

from fcn.config import ConfigError, load_config
from fcn.models import FCN8s, FCNHead, build_model, resolve_normalization
from fcn.models.backbones import TimmBackbone

timm = pytest.importorskip("timm")

# Three families whose stages differ: ResNet (stride-2 stem + max-pool, 5 levels), ConvNeXt (4x4
# stride-4 stem that rounds sizes down, 4 levels), MobileNetV3 (inverted residuals, 5 levels).
FAMILIES = ["resnet18", "convnext_atto", "mobilenetv3_small_050"]
# A small model whose pretrained config is not ImageNet's mean/std (its tag's is 0.5 everywhere).
HALF_MEAN_MODEL = "mobilenetv4_conv_small_050.e3000_r224_in1k"


def model_cfg(*overrides: str):
    base = [
        "model.geometry=same",
        "model.pretrained=false",
        "model.num_classes=5",
        "data.classes=[a,b,c,d,e]",
    ]
    return load_config(overrides=[*base, *overrides])


@pytest.mark.parametrize("arch", ["fcn32s", "fcn16s", "fcn8s"])
def test_timm_backbone_gives_logits_of_the_input_size(arch):
    model = build_model(model_cfg(f"model.arch={arch}", "model.backbone=timm:resnet18").model).eval()
    with torch.no_grad():
        assert model(torch.randn(2, 3, 67, 45)).shape == (2, 5, 67, 45)


@pytest.mark.parametrize("name", FAMILIES)
def test_strides_8_16_32_are_found_from_feature_info(name):
    backbone = TimmBackbone(name).eval()
    info = timm.create_model(name, features_only=True).feature_info
    for stride in (8, 16, 32):
        last = max(i for i, r in enumerate(info.reduction()) if r == stride)
        assert backbone.channels[stride] == info.channels()[last]
    with torch.no_grad():
        feats = backbone(torch.randn(1, 3, 67, 45))
    for stride, f in feats.items():  # the 'same' geometry's rule, also for ConvNeXt's rounding-down stem
        assert f.shape == (1, backbone.channels[stride], math.ceil(67 / stride), math.ceil(45 / stride))


@pytest.mark.parametrize("name", FAMILIES)
def test_every_family_gives_fcn8s_logits_of_odd_input_sizes(name):
    model = build_model(model_cfg("model.arch=fcn8s", f"model.backbone=timm:{name}").model).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 33, 70)).shape == (1, 5, 33, 70)


def test_a_model_without_stride_8_16_32_features_is_one_clear_error():
    with pytest.raises(ValueError, match=r"timm:vit_tiny_patch16_224.*strides") as info:
        TimmBackbone("vit_tiny_patch16_224")
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("backbone", ["resnet18", "timm:resnet18"])
def test_fcn_head_scores_every_stride(backbone):
    model = build_model(model_cfg("model.arch=fcn8s", f"model.backbone={backbone}", "model.head=fcn").model)
    for layer, stride in ((model.score_fr, 32), (model.score_pool4, 16), (model.score_pool3, 8)):
        assert isinstance(layer, FCNHead)
        conv3, bn, _, drop, conv1 = layer
        channels = model.backbone.channels[stride]
        assert conv3.weight.shape == (channels // 4, channels, 3, 3) and conv3.bias is None
        assert isinstance(bn, nn.BatchNorm2d) and isinstance(drop, nn.Dropout) and drop.p == 0.1
        assert conv1.weight.shape == (5, channels // 4, 1, 1)
        assert conv1.weight.any()  # torchvision's init: a zero last layer starved the head's gradient
    model.eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 41, 29)).shape == (1, 5, 41, 29)


def test_fcn_head_works_on_vgg_in_the_paper_geometry():
    from tests.helpers import meta_model

    model = meta_model(FCN8s, head="fcn")
    assert isinstance(model.score_fr, FCNHead) and model.score_fr[0].in_channels == 4096


def test_score_head_is_the_default_and_unchanged():
    assert load_config().model.head == "score"
    torch.manual_seed(0)
    default = FCN8s(num_classes=5, backbone="resnet18", geometry="same")
    torch.manual_seed(0)
    score = FCN8s(num_classes=5, backbone="resnet18", geometry="same", head="score")
    assert list(default.state_dict()) == list(score.state_dict())
    for key, value in default.state_dict().items():
        assert torch.equal(value, score.state_dict()[key]), key
    assert isinstance(default.score_fr, nn.Conv2d) and default.score_fr.weight.shape == (5, 512, 1, 1)


def test_timm_dropout_follows_model_dropout():
    backbone = TimmBackbone("resnet18", dropout="channel", dropout_p=0.25)
    assert isinstance(backbone.drop, nn.Dropout2d) and backbone.drop.p == 0.25


def test_unknown_timm_name_is_one_line_with_a_suggestion():
    cfg = model_cfg("model.backbone=timm:resnet19")  # validation leaves timm names to timm
    with pytest.raises(ValueError) as info:
        build_model(cfg.model)
    message = str(info.value)
    assert "\n" not in message and "model.backbone='timm:resnet19'" in message and "timm:resnet18" in message


def test_unknown_pretrained_tag_is_one_line_with_the_model_tags():
    with pytest.raises(ValueError, match=r"no pretrained tag 'resnet18\.a1_in1kk'.*timm:resnet18\.a1_in1k"):
        TimmBackbone("resnet18.a1_in1kk")


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_pretrained_local_timm_file_loads(tmp_path, suffix):
    torch.manual_seed(1)
    source = timm.create_model("resnet18")
    state = source.state_dict()
    path = tmp_path / f"model{suffix}"
    if suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file(state, str(path))
    else:
        torch.save(state, path)
    model = build_model(model_cfg("model.backbone=timm:resnet18", f"model.pretrained={path}").model)
    own = model.backbone.body.state_dict()
    for key in ("conv1.weight", "layer4.1.bn2.running_var", "layer2.0.downsample.0.weight"):
        assert torch.equal(own[key], state[key]), key
    assert "state_dict" not in model.backbone.pretrained_cfg  # the file's tensors are not kept twice


def test_pretrained_file_of_another_model_is_one_line(tmp_path):
    path = tmp_path / "resnet34.pth"
    torch.save(timm.create_model("resnet34").state_dict(), path)
    with pytest.raises(ValueError) as info:
        build_model(model_cfg("model.backbone=timm:resnet18", f"model.pretrained={path}").model)
    message = str(info.value)
    assert "\n" not in message and f"model.pretrained='{path}'" in message and "unexpected" in message


def test_pretrained_file_with_a_wrong_shape_names_the_tensor(tmp_path):
    state = timm.create_model("resnet18").state_dict()
    state["conv1.weight"] = torch.zeros(64, 3, 3, 3)
    path = tmp_path / "bad.pth"
    torch.save(state, path)
    with pytest.raises(ValueError, match=r"conv1\.weight: \(64, 3, 3, 3\) given, \(64, 3, 7, 7\) expected"):
        build_model(model_cfg("model.backbone=timm:resnet18", f"model.pretrained={path}").model)


def test_pretrained_true_offline_is_one_line_saying_how_to_pass_a_file(monkeypatch):
    import timm.models._builder as builder

    def offline(*args, **kwargs):
        raise OSError("[Errno 101] Network is unreachable")

    # Every way timm fetches weights, so the test never reaches the network even where it could.
    for fetch in (
        "load_state_dict_from_hf",
        "load_state_dict_from_url",
        "download_cached_file",
        "load_custom_from_hf",
    ):
        monkeypatch.setattr(builder, fetch, offline, raising=False)
    with pytest.raises(FileNotFoundError) as info:
        build_model(model_cfg("model.backbone=timm:resnet18", "model.pretrained=true").model)
    message = str(info.value)
    assert "\n" not in message and "Network is unreachable" in message
    assert "model.pretrained=/path/to/model.safetensors" in message


def test_config_accepts_any_timm_name_and_checks_head_and_normalization():
    assert load_config(overrides=["model.backbone=timm:anything.at_all", "model.geometry=same"])
    with pytest.raises(ConfigError, match="model.geometry='paper' needs a VGG backbone"):
        load_config(overrides=["model.backbone=timm:resnet18"])
    with pytest.raises(ConfigError, match=r"model.backbone='timm:' is not one of"):
        load_config(overrides=["model.backbone='timm:'"])
    with pytest.raises(ConfigError, match="model.head='fpn' is not one of score, fcn"):
        load_config(overrides=["model.head=fpn"])
    with pytest.raises(ConfigError, match="must be model.in_channels=3 values each"):
        load_config(overrides=["data.transforms.mean=[0.5,0.5,0.5]"])
    with pytest.raises(ConfigError, match="apply with normalization=auto, not 'caffe'"):
        load_config(
            overrides=[
                "data.transforms.normalization=caffe",
                "data.transforms.mean=[1,1,1]",
                "data.transforms.std=[1,1,1]",
            ]
        )


def test_auto_normalization_follows_the_timm_pretrained_cfg_and_reaches_the_transform():
    from fcn.data.transforms import MeanStd, build_transforms, input_normalization

    expected = timm.get_pretrained_cfg(HALF_MEAN_MODEL)
    cfg = resolve_normalization(model_cfg(f"model.backbone=timm:{HALF_MEAN_MODEL}"))
    assert list(cfg.data.transforms.mean) == list(expected.mean) == [0.5, 0.5, 0.5]
    assert list(cfg.data.transforms.std) == list(expected.std)
    transform = build_transforms(cfg.data.transforms, train=False)
    assert transform.normalization == MeanStd(tuple(expected.mean), tuple(expected.std))
    pixels = np.array([[[0, 255], [51, 204]]] * 3, dtype=np.uint8).transpose(1, 2, 0)
    image, _ = transform(pixels_to_pil(pixels), np.zeros((2, 2), np.uint8))
    np.testing.assert_allclose(image[0].numpy(), (pixels[..., 0] / 255 - 0.5) / 0.5, atol=1e-6)
    # Set by hand or another normalisation: kept; torchvision backbones: unchanged (torchvision's).
    for overrides in (["data.transforms.normalization=torchvision"], ["model.backbone=resnet18"]):
        cfg = model_cfg(f"model.backbone=timm:{HALF_MEAN_MODEL}", *overrides)
        assert resolve_normalization(cfg) is cfg and input_normalization(cfg.data.transforms) in (
            "torchvision",
            "auto",
        )


def pixels_to_pil(pixels: np.ndarray):
    from PIL import Image

    return Image.fromarray(pixels)


def test_torchvision_mean_std_normalizes_bit_for_bit_like_torchvision():
    from fcn.data.transforms import IMAGENET_MEAN, IMAGENET_STD, MeanStd, normalize

    image = torch.randint(0, 256, (3, 7, 5), dtype=torch.uint8)
    named = normalize(image, "torchvision")
    assert torch.equal(normalize(image, "auto"), named)
    assert torch.equal(normalize(image, MeanStd(IMAGENET_MEAN, IMAGENET_STD)), named)


@pytest.mark.slow
def test_resolved_mean_std_is_saved_in_the_checkpoint_and_used_by_inference(tmp_path):
    from fcn.data.toy import generate
    from fcn.inference.loading import load_model
    from fcn.training.loop import fit
    from tests.helpers import toy_overrides

    root = tmp_path / "toy"
    generate(root, seed=0, n_train=4, n_val=2, size=32)
    run = tmp_path / "run"
    extra = (
        f"model.backbone=timm:{HALF_MEAN_MODEL}",
        "model.head=fcn",
        "training.iters=1",
        "training.vis_images=1",
    )
    fit(load_config(overrides=toy_overrides(root, run, *extra)))
    saved = torch.load(run / "checkpoints" / "last.pt", weights_only=True)["config"]["data"]["transforms"]
    assert (
        saved["normalization"] == "auto"
        and saved["mean"] == [0.5, 0.5, 0.5]
        and saved["std"] == [0.5, 0.5, 0.5]
    )
    written = yaml.safe_load((run / "config.yml").read_text())["data"]["transforms"]
    assert written["mean"] == [0.5, 0.5, 0.5] and written["std"] == [0.5, 0.5, 0.5]
    _, cfg = load_model(run / "checkpoints" / "last.pt")
    assert list(cfg.data.transforms.mean) == [0.5, 0.5, 0.5]


def test_a_timm_resnet_from_scratch_starts_its_blocks_as_torchvision_does():
    from fcn.models.backbones import _timm_features

    net = _timm_features("resnet18", False, (2, 3, 4))
    # timm's zero_init_last would start every block's last BatchNorm at 0 (an identity block);
    # from scratch, the blocks start as torchvision's: BatchNorm weights at 1.
    assert all(bool((block.bn2.weight == 1).all()) for block in net.layer1)


def test_a_timm_fcn_exported_at_one_size_gives_torchs_logits_at_another(tmp_path):
    # TimmBackbone pads to a multiple of 32 and crops back: traced at 64x64 (no padding needed) the
    # export once left the padding out and kept 64x64's crops, so a 37x50 image came out wrong.
    pytest.importorskip("onnxruntime")
    from fcn.inference.onnx import check_onnx, export_onnx

    torch.manual_seed(0)
    model = FCN8s(num_classes=2, backbone="timm:resnet18", geometry="same").eval()
    with torch.no_grad():
        for layer in (model.score_fr, model.score_pool4, model.score_pool3):
            nn.init.normal_(layer.weight, std=0.1)  # every path counts in the logits
    export_onnx(model, tmp_path / "m.onnx", sample_shape=(1, 3, 64, 64))
    diffs = check_onnx(model, tmp_path / "m.onnx", shapes=[(1, 3, 64, 64), (2, 3, 37, 50)])
    assert max(diffs) < 1e-3, diffs
