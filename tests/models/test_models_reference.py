"""FCN32s/16s/8s/8sAtOnce against an independent, layer-by-layer implementation of the reference nets.

The reference nets are computed layer by layer by tests/helpers_reference.py (``reference_trunk`` and
``reference_head``, written from voc-fcn32s/16s/8s/8s-atonce train.prototxt with Caffe's rules).
Weights are random (score layers and deconvolutions included, so every path counts) and reach the
models only through ``load_reference_weights``.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
import torchvision

from fcn.config import config_from_dict
from fcn.models import FCN8s, FCN8sAtOnce, FCN16s, FCN32s, load_reference_weights
from fcn.models.reference import main as reference_main
from tests.helpers import NUM_CLASSES, python_env, random_reference_weights, weights_for
from tests.helpers_reference import (
    assert_close_relative,
    reference_feature_sizes,
    reference_head,
    reference_trunk,
)

CLASSES = {"fcn32s": FCN32s, "fcn16s": FCN16s, "fcn8s": FCN8s, "fcn8s_atonce": FCN8sAtOnce}


def load_models(weights: dict, trunk: bool) -> dict:
    """Return {arch: model} with weights loaded through load_reference_weights (trunk on meta if not trunk)."""
    models = {}
    for arch, cls in CLASSES.items():
        with torch.device("meta"):
            model = cls(num_classes=NUM_CLASSES)
        for name, child in model.named_children():
            if trunk or name != "backbone":
                child.to_empty(device="cpu")  # every tensor is then overwritten by the strict import
        load_reference_weights(model, weights_for(weights, arch))
        models[arch] = model.eval()
    return models


@pytest.fixture(scope="module")
def reference_weights():
    return random_reference_weights()


@pytest.fixture(scope="module")
def loaded(reference_weights):
    return load_models(reference_weights, trunk=True)


@pytest.fixture(scope="module")
def head_weights():
    return random_reference_weights(trunk=False)


@pytest.fixture(scope="module")
def loaded_heads(head_weights):
    return load_models(head_weights, trunk=False)


@pytest.mark.slow
def test_models_compute_what_the_reference_nets_compute(loaded, reference_weights):
    x = torch.randn(1, 3, 7, 5, generator=torch.Generator().manual_seed(1)) * 50  # odd, non-square
    with torch.no_grad():
        trunk = reference_trunk(reference_weights, x)
        for arch, model in loaded.items():
            expected = reference_head(weights_for(reference_weights, arch), trunk, arch, 7, 5)
            assert_close_relative(model(x), expected)


@pytest.mark.parametrize("size", [(1, 1), (2, 3), (17, 1), (31, 32), (33, 47), (64, 64), (100, 3)])
def test_heads_compute_what_the_reference_heads_compute_at_any_size(loaded_heads, head_weights, size):
    # The same comparison from random pool3/pool4/drop7 maps of the sizes the trunk makes for the input
    # size, so that many sizes are cheap; the full forward pass is compared above.
    h, w = size
    sh, sw = reference_feature_sizes(h), reference_feature_sizes(w)
    g = torch.Generator().manual_seed(h * 1000 + w)
    channels = {"pool3": 256, "pool4": 512, "drop7": 4096}
    trunk = {k: torch.rand(1, c, sh[k], sw[k], generator=g) * 10 for k, c in channels.items()}
    feats = {8: trunk["pool3"], 16: trunk["pool4"], 32: trunk["drop7"]}
    with torch.no_grad():
        for arch, model in loaded_heads.items():
            expected = reference_head(weights_for(head_weights, arch), trunk, arch, h, w)
            assert_close_relative(model.decode(feats, (h, w)), expected)


def test_at_once_scales_are_exactly_undone_by_skip_weights_100_and_10000_times_larger(loaded_heads):
    # weights_for gives the at-once net FCN-8s's skip weights times 100 and 10000: with pool4 scaled by
    # exactly 0.01 and pool3 by 0.0001 the two nets agree; a scale off by any factor would not.
    loaded = loaded_heads
    assert loaded["fcn8s_atonce"].at_once and not loaded["fcn8s"].at_once
    g = torch.Generator().manual_seed(0)
    feats = {8: torch.rand(1, 256, 40, 40, generator=g), 16: torch.rand(1, 512, 20, 20, generator=g)}
    feats[32] = torch.rand(1, 4096, 4, 4, generator=g)
    with torch.no_grad():
        at_once, fcn8s = (
            loaded["fcn8s_atonce"].decode(feats, (20, 20)),
            loaded["fcn8s"].decode(feats, (20, 20)),
        )
    torch.testing.assert_close(at_once, fcn8s, rtol=1e-4, atol=1e-4 * fcn8s.abs().max().item())


@pytest.mark.slow
def test_pretrained_path_loads_a_torchvision_vgg16_state_dict(tmp_path):
    with torch.device("meta"):
        shapes = {k: v.shape for k, v in torchvision.models.vgg16().state_dict().items()}
    g = torch.Generator().manual_seed(0)
    state = {k: torch.randn(s, generator=g) * 0.01 for k, s in shapes.items()}  # a random torchvision VGG16
    path = tmp_path / "vgg16.pth"
    torch.save(state, path)
    del state
    state = torch.load(path, weights_only=True)
    model = FCN32s(pretrained=str(path))
    vgg = model.backbone
    assert torch.equal(vgg.fc6.weight, state["classifier.0.weight"].view(4096, 512, 7, 7))
    assert torch.equal(vgg.fc6.bias, state["classifier.0.bias"])
    assert torch.equal(vgg.fc7.weight, state["classifier.3.weight"].view(4096, 4096, 1, 1))
    assert torch.equal(vgg.conv1_1.weight, state["features.0.weight"])
    assert torch.equal(vgg.conv5_3.bias, state["features.28.bias"])
    assert not model.score_fr.weight.any()  # fc8 (classifier.6) is dropped, score_fr starts at zero


@pytest.mark.slow
def test_conversion_command_writes_an_evaluable_checkpoint(reference_weights, tmp_path):
    source = tmp_path / "fcn16s_reference.pth"
    weights = weights_for(reference_weights, "fcn16s")
    torch.save(weights, source)
    out = tmp_path / "out" / "fcn16s.pt"
    assert reference_main([str(source), str(out), "--arch", "fcn16s"]) == 0
    checkpoint = torch.load(out, weights_only=True)
    cfg = config_from_dict(checkpoint["config"])
    assert cfg.model.arch == "fcn16s" and cfg.model.num_classes == NUM_CLASSES
    assert cfg.data.transforms.normalization == "caffe" and cfg.model.pretrained.lower() == "false"
    state = checkpoint["model"]
    assert torch.equal(state["backbone.fc6.weight"], weights["fc6.weight"])
    assert torch.equal(state["upscore16.weight"], weights["upscore16.weight"])
    with torch.device("meta"):
        model = FCN16s()
    assert set(state) == set(model.state_dict())


@pytest.mark.slow
def test_conversion_command_reports_a_bad_input_in_one_line(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "fcn.models.reference", str(tmp_path / "missing.pth"), str(tmp_path / "o.pt")],
        env=python_env(),
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 2  # a bad input, found before anything is written
    assert result.stderr.strip().count("\n") == 0 and "missing.pth" in result.stderr
    assert "RuntimeWarning" not in result.stderr
