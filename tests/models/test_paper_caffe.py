"""The .caffemodel import of the paper's other nets (#24): files written as the authors' nets name
their layers (conv1_1_bgrd; conv1_1color ... score_frhha; score_fr_sem ... upscore8_geo), read by
fcn.core.caffemodel and mapped onto the models, and the command that recognises each net.

The VGG16 trunks are zeros but for a few layers (a zero tensor is allocated lazily and encodes as
fast as any), so that a trunk mapped onto the wrong one would show; the heads are random.
"""

from __future__ import annotations

import pytest
import torch

from fcn.config import config_from_dict
from fcn.core.caffemodel import parse_caffemodel
from fcn.inference.loading import load_model
from fcn.models.reference import main as reference_main
from fcn.models.reference import net_options, reference_key_map, reference_weights_from_caffe
from tests.helpers import EARLY, LATE, head_weights, model_of, net, net_layers, renamed, siftflow, write


def trunk(seed: int, in_channels: int = 3) -> dict:
    """conv1_1 ... fc7 in the reference naming: zeros, but conv1_1, conv5_3 and fc7's bias random."""
    from tests.helpers_reference import VGG

    g = torch.Generator().manual_seed(seed)
    state = {}
    layers = [(n, in_channels if n == "conv1_1" else c_in, c_out, 3) for n, c_in, c_out in VGG]
    for name, c_in, c_out, k in [*layers, ("fc6", 512, 4096, 7), ("fc7", 4096, 4096, 1)]:
        shape = (c_out, c_in, k, k)
        random = name in ("conv1_1", "conv5_3")
        state[f"{name}.weight"] = torch.randn(shape, generator=g) if random else torch.zeros(shape)
        state[f"{name}.bias"] = (
            torch.randn(c_out, generator=g) if name in ("conv1_1", "fc7") else torch.zeros(c_out)
        )
    return state


def early_fusion() -> dict:
    g = torch.Generator().manual_seed(5)
    w = {**trunk(1, in_channels=4), **head_weights(g, "fcn32s", 40)}
    return renamed(w, lambda n: "conv1_1_bgrd" if n == "conv1_1" else n)


def late_fusion() -> dict:
    g = torch.Generator().manual_seed(6)
    state = {}
    for seed, modality in ((2, "color"), (3, "hha")):
        w = {
            **trunk(seed),
            **{k: v for k, v in head_weights(g, "fcn32s", 40).items() if k.startswith("score")},
        }
        state.update(renamed(w, lambda n, m=modality: n + m))
    state["upscore.weight"] = torch.randn(40, 40, 64, 64, generator=g)
    return state


def siftflow_net(arch: str) -> dict:
    g = torch.Generator().manual_seed(7)
    sem = renamed(head_weights(g, arch, 33), lambda n: n + "_sem")
    geo = renamed(head_weights(g, arch, 3), lambda n: n + "_geo")
    return {**trunk(4), **sem, **geo}


def caffemodel(weights: dict) -> bytearray:
    """The bytes of a NetParameter holding these layers ('layer' encoding, as the authors' files)."""
    return bytearray(b"".join(net(net_layers(weights, "layer"))))


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["early", "late", "siftflow8s", "siftflow16s", "siftflow32s"])
def test_each_net_maps_from_its_caffemodel_onto_the_model_exactly(kind):
    weights, overrides = {
        "early": (early_fusion, EARLY),
        "late": (late_fusion, LATE),
        "siftflow8s": (lambda: siftflow_net("fcn8s"), siftflow("fcn8s")),
        "siftflow16s": (lambda: siftflow_net("fcn16s"), siftflow("fcn16s")),
        "siftflow32s": (lambda: siftflow_net("fcn32s"), siftflow("fcn32s")),
    }[kind]
    expected = weights()
    layers = parse_caffemodel(caffemodel(expected), f"{kind}.caffemodel")
    with torch.device("meta"):
        model = model_of(overrides, trunk=False)
    state = reference_weights_from_caffe(layers, model, f"{kind}.caffemodel")
    assert set(state) == set(expected) == set(reference_key_map(model))
    for key, value in expected.items():
        assert torch.equal(state[key], value), key
    shapes = {name: tuple(blobs[0].shape) for name, blobs in layers.items() if blobs}
    num_classes = int(next(v for k, v in expected.items() if k.startswith("score_fr")).shape[0])
    options = [
        "model.pretrained=false",
        "data.transforms.normalization=caffe",
        *net_options(shapes, num_classes),
    ]
    cfg = config_from_dict(
        {}, overrides=[f"model.arch={model.arch}", f"model.num_classes={num_classes}", *options]
    )
    assert cfg.model.in_channels == model.in_channels and list(cfg.model.late_fusion) == list(
        model.late_fusion
    )
    assert cfg.model.geometric_classes == model.geometric_classes


@pytest.mark.slow
def test_conversion_command_writes_an_early_fusion_checkpoint_evaluate_loads(tmp_path):
    weights = early_fusion()
    path = tmp_path / "nyud-fcn32s-color-d-heavy.caffemodel"
    write(path, net(net_layers(weights, "layer")))
    out = tmp_path / "color-d.pt"
    assert reference_main([str(path), str(out), "--arch", "fcn32s"]) == 0
    path.unlink()
    model, cfg = load_model(out, "cpu", use_ema=False)
    assert cfg.model.in_channels == 4 and cfg.data.val.name == "nyud" and cfg.data.val.split == "test"
    assert (
        list(cfg.data.val.modalities) == ["color", "depth"] and cfg.data.transforms.normalization == "caffe"
    )
    assert torch.equal(model.backbone.conv1_1.weight, weights["conv1_1_bgrd.weight"])
    assert torch.equal(model.upscore.weight, weights["upscore.weight"])


def test_the_command_recognises_each_net_by_its_layer_names():
    vgg = {"conv1_1": (64, 3, 3, 3), "fc7": (4096, 4096, 1, 1)}
    assert net_options({**vgg, "score_fr": (60, 4096, 1, 1)}, 60)[0] == "data.train.name=pascal_context"
    assert "data.val.modalities=[color]" in net_options({**vgg, "score_fr": (40, 4096, 1, 1)}, 40)
    assert "data.val.modalities=[hha]" in net_options({**vgg, "score_fr": (40, 4096, 1, 1)}, 40, ["hha"])
    early = net_options({"conv1_1_bgrd": (64, 4, 3, 3), "score_fr": (40, 4096, 1, 1)}, 40)
    assert "model.in_channels=4" in early and "data.val.modalities=[color,depth]" in early
    late = net_options({"conv1_1color": (64, 3, 3, 3), "conv1_1hha": (64, 3, 3, 3)}, 40)
    assert late[:2] == ["model.late_fusion=[color,hha]", "model.in_channels=6"]
    sift = net_options({**vgg, "score_fr_sem": (33, 4096, 1, 1), "score_fr_geo": (3, 4096, 1, 1)}, 33)
    assert sift[0] == "model.geometric_classes=3" and "data.val.name=siftflow" in sift
    assert net_options({**vgg, "score_fr": (21, 4096, 1, 1)}, 21) == []  # VOC: as before
