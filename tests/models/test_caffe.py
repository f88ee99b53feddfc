"""The authors' .caffemodel files, read without Caffe: the wire-format reader, the mapping onto the
models, the conversion command, its errors, and what the converted checkpoint is good for.

The files are written here by a small protobuf writer of the test's own (``varint`` ... ``net``),
from the field numbers of caffe.proto, in both encodings Caffe has used: the current ``layer``
(NetParameter field 100, blob shapes as BlobShape) and the legacy V1 ``layers`` (field 2, blob shapes
as num/channels/height/width), with floats packed or one field per value. The weights are random,
in the VGG16 geometry of the reference nets (tests/models/test_models_reference.py), so a full-size file is
547 MB: it is written once (FCN-8s) and the other nets are checked in memory.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

import evaluate
from fcn.config import load_config
from fcn.core import distributed
from fcn.core.caffemodel import parse_caffemodel, read_caffemodel
from fcn.inference.loading import load_model
from fcn.models import FCN8s, FCN8sAtOnce, FCN16s, FCN32s, build_model, load_reference_weights
from fcn.models.reference import CAFFE_MEAN_BGR, reference_weights_from_caffe
from fcn.models.reference import main as reference_main
from fcn.training.state import init_from
from tests.helpers import (
    NUM_CLASSES,
    SEG11VALID,
    blob,
    field_key,
    layer,
    make_voc_tree,
    message,
    net,
    net_layers,
    number,
    random_reference_weights,
    varint,
    weights_for,
    write,
)

CLASSES = {"fcn32s": FCN32s, "fcn16s": FCN16s, "fcn8s": FCN8s, "fcn8s_atonce": FCN8sAtOnce}

# --- a protobuf writer: messages are lists of byte chunks, so a 400 MB blob is never copied twice ---


def tiny_net(encoding: str, legacy: bool, packed: bool) -> tuple[dict, list]:
    """Return ({layer: arrays}, NetParameter chunks) of a small net of every kind of layer."""
    g = np.random.default_rng(0)
    arrays = {
        "data": [],
        "conv": [g.standard_normal((4, 3, 3, 3), np.float32), g.standard_normal(4, np.float32)],
        "relu": [],
        "up": [g.standard_normal((2, 2, 4, 4), np.float32)],
        "long": [g.standard_normal((3, 5000), np.float32)],  # a long run of unpacked values
    }
    v1 = encoding == "v1"
    chunks = []
    for name, blobs in arrays.items():
        encoded = [blob(b, legacy, packed, extra=name == "conv") for b in blobs]
        chunks += layer(name, "Convolution" if blobs else "ReLU", encoded, v1, extra=name == "up")
    return arrays, net(chunks)


# --- the reader ------------------------------------------------------------------------------------


@pytest.mark.parametrize("encoding", ["layer", "v1"])
@pytest.mark.parametrize("legacy", [False, True], ids=["blobshape", "num-channels-height-width"])
@pytest.mark.parametrize("packed", [True, False], ids=["packed", "unpacked"])
def test_reader_returns_every_layers_blobs_in_their_shapes(encoding, legacy, packed):
    arrays, chunks = tiny_net(encoding, legacy, packed)
    layers = parse_caffemodel(bytearray(b"".join(chunks)), "tiny.caffemodel")
    assert list(layers) == list(arrays)
    for name, blobs in arrays.items():
        assert len(layers[name]) == len(blobs)
        for got, want in zip(layers[name], blobs):
            # Legacy blobs are 4-D, (num, channels, height, width): a bias of 4 is (1, 1, 1, 4).
            shape = (1,) * (4 - want.ndim) + want.shape if legacy else want.shape
            assert got.shape == shape and got.dtype == np.float32
            np.testing.assert_array_equal(got.reshape(want.shape), want)


def test_reader_takes_double_data_and_values_split_over_several_fields():
    values = np.arange(12, dtype=np.float32) / 7
    shape = message(7, [field_key(1, 0) + varint(3), field_key(1, 0) + varint(4)])  # BlobShape, dims unpacked
    split = [*shape, *message(5, [values[:5].tobytes()]), *blob(values[5:], False, packed=False)[-1:]]
    double = blob(values.reshape(3, 4), legacy=False, packed=True, double=True)
    chunks = net(layer("a", "Convolution", [split, double], v1=False))
    got = parse_caffemodel(b"".join(chunks))["a"]
    np.testing.assert_array_equal(got[0], values.reshape(3, 4))  # packed then unpacked, concatenated
    assert got[1].dtype == np.float64
    np.testing.assert_array_equal(got[1], values.reshape(3, 4))


def test_reader_of_a_file_gives_writable_views(tmp_path):
    arrays, chunks = tiny_net("layer", legacy=False, packed=True)
    write(tmp_path / "tiny.caffemodel", chunks)
    conv = read_caffemodel(tmp_path / "tiny.caffemodel")["conv"][0]
    assert conv.flags.writeable and not conv.flags.owndata  # a view of the file's bytes, no copy
    np.testing.assert_array_equal(conv, arrays["conv"][0])


def _png_bytes() -> bytes:
    import io

    buf = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buf, format="PNG")
    return buf.getvalue()


def _torch_bytes() -> bytes:
    import io

    buf = io.BytesIO()
    torch.save({"score_fr.weight": torch.zeros(2, 3, 1, 1)}, buf)
    return buf.getvalue()


def _short_blob() -> list:
    return [*number(1, 2), *number(2, 3), *message(5, [np.float32(1).tobytes()])]


def _truncated() -> bytes:
    data = b"".join(tiny_net("layer", legacy=False, packed=True)[1])
    return data[: len(data) - 100]  # inside the last layer's blob


MALFORMED = {
    "random-bytes": (np.random.default_rng(1).bytes(4096), r"not a Caffe NetParameter \(\.caffemodel\): "),
    "png": (_png_bytes(), r"not a Caffe NetParameter \(\.caffemodel\): field number 0 at byte 10"),
    "torch-file": (_torch_bytes(), r"not a Caffe NetParameter \(\.caffemodel\) \(a zip archive: a PyTorch"),
    "empty": (b"", "no layers found"),
    "mean-binaryproto": (b"".join(blob(np.zeros((1, 3, 2, 2)), True, True)), "field 2 has wire type 0"),
    "truncated": (
        _truncated(),
        r"truncated at byte \d+ \(field 100 needs \d+ bytes at byte \d+; 4 layers read before\)",
    ),
    "bad-blob-size": (  # legacy num and channels given, height and width left out: 0
        b"".join(net(layer("data", "Python", [], False) + layer("a", "Convolution", [_short_blob()], False))),
        r"corrupt \.caffemodel: a blob of shape \(2, 3, 0, 0\) holds 1 values at byte \d+",
    ),
    "layer-and-layers": (
        b"".join(net(layer("a", "ReLU", [], False) + layer("b", "RELU", [], True))),
        "both 'layer' and legacy 'layers'",
    ),
    "two-weighted-layers-one-name": (
        b"".join(net(layer("a", "Convolution", [blob([1.0], False, True)], False) * 2)),
        "two layers named 'a' hold weights",
    ),
}


@pytest.mark.parametrize("kind", list(MALFORMED))
def test_reader_refuses_what_is_not_a_whole_netparameter_in_one_line(kind, tmp_path):
    data, pattern = MALFORMED[kind]
    path = tmp_path / f"{kind}.caffemodel"
    path.write_bytes(data)
    with pytest.raises(ValueError, match=pattern) as info:
        read_caffemodel(path)
    message_ = str(info.value)
    assert message_.startswith(f"{path}: ") and "\n" not in message_


# --- the conversion command: errors before anything is written --------------------------------------


def _small_file(tmp_path, name: str, layers: list) -> str:
    path = tmp_path / name
    write(path, net(layers))
    return str(path)


def _score_fr(v1: bool = False) -> list:
    g = np.random.default_rng(0)
    weight, bias = g.standard_normal((NUM_CLASSES, 4096, 1, 1), np.float32), np.zeros(NUM_CLASSES, np.float32)
    return layer("score_fr", "Convolution", [blob(weight, v1, True), blob(bias, v1, True)], v1)


def _bad_inputs(tmp_path) -> dict:
    g = np.random.default_rng(0)
    wrong = [blob(g.standard_normal((64, 3, 5, 5), np.float32), False, True), blob(np.zeros(64), False, True)]
    scale = layer("scale_pool4", "Scale", [blob(np.full(512, 0.01), False, True)], False)
    junk = tmp_path / "junk.pth"
    junk.write_bytes(np.random.default_rng(1).bytes(4096))
    for name, data in (
        ("random.caffemodel", MALFORMED["random-bytes"][0]),
        ("image.caffemodel", _png_bytes()),
    ):
        (tmp_path / name).write_bytes(data)
    (tmp_path / "weights.caffemodel").write_bytes(_torch_bytes())
    (tmp_path / "cut.caffemodel").write_bytes(_truncated())
    return {
        "random-bytes": (tmp_path / "random.caffemodel", "fcn8s", "not a Caffe NetParameter"),
        "png": (tmp_path / "image.caffemodel", "fcn8s", "not a Caffe NetParameter"),
        "torch-file-misnamed": (tmp_path / "weights.caffemodel", "fcn8s", "a zip archive: a PyTorch file"),
        "truncated": (tmp_path / "cut.caffemodel", "fcn8s", "truncated at byte"),
        "missing-layer": (
            _small_file(tmp_path, "heads.caffemodel", _score_fr()),
            "fcn8s",
            "layer 'conv1_1' with weights is missing; fcn8s needs it (the file has weights for score_fr)",
        ),
        "shape-that-does-not-fit": (
            _small_file(
                tmp_path, "wrong.caffemodel", layer("conv1_1", "Convolution", wrong, False) + _score_fr()
            ),
            "fcn8s",
            "layer 'conv1_1' blob 0 (weight) has shape (64, 3, 5, 5), fcn8s expects (64, 3, 3, 3)",
        ),
        "at-once-file-as-fcn8s": (
            _small_file(tmp_path, "atonce.caffemodel", scale + _score_fr()),
            "fcn8s",
            "layer 'scale_pool4' holds weights but fcn8s has no such layer (the at-once net's: --arch fcn8s_atonce)",
        ),
        "no-score-layer": (
            _small_file(tmp_path, "vgg.caffemodel", layer("conv1_1", "Convolution", wrong, False)),
            "fcn8s",
            "no layer 'score_fr' with weights: not one of the authors' FCNs (the file has weights for conv1_1)",
        ),
        "caffemodel-without-its-suffix": (  # not a torch file: read as a caffemodel
            _small_file(tmp_path, "fcn.bin", _score_fr(v1=True)),
            "fcn32s",
            "layer 'conv1_1' with weights is missing; fcn32s needs it",
        ),
        "neither-torch-nor-caffe": (junk, "fcn8s", "not a Caffe NetParameter (.caffemodel): "),
    }


BAD_INPUTS = [
    "random-bytes",
    "png",
    "torch-file-misnamed",
    "truncated",
    "missing-layer",
    "shape-that-does-not-fit",
    "at-once-file-as-fcn8s",
    "no-score-layer",
    "caffemodel-without-its-suffix",
    "neither-torch-nor-caffe",
]


@pytest.mark.parametrize("kind", BAD_INPUTS)
def test_conversion_of_a_bad_caffemodel_is_one_line_exit_2_and_writes_nothing(kind, tmp_path, capsys):
    path, arch, expected = _bad_inputs(tmp_path)[kind]
    out = tmp_path / "out" / "converted.pt"
    assert reference_main([str(path), str(out), "--arch", arch]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"error: {path}: ")
    assert expected in err
    if kind == "neither-torch-nor-caffe":
        assert err.rstrip().endswith("(nor is it a PyTorch file)")
    assert not out.exists() and not out.parent.exists()


# --- full-size files: what the conversion gives -------------------------------------------------------


@pytest.fixture(scope="module")
def weights():
    return random_reference_weights(seed=3)


def _empty_model(arch: str, trunk: bool = True) -> torch.nn.Module:
    """A model with uninitialised tensors (the trunk on the meta device unless trunk), for an import
    that overwrites every one of them."""
    with torch.device("meta"):
        model = CLASSES[arch](num_classes=NUM_CLASSES)
    for name, child in model.named_children():
        if trunk or name != "backbone":
            child.to_empty(device="cpu")
    return model.eval()


def _importer_model(weights: dict, arch: str, trunk: bool = True) -> torch.nn.Module:
    """The model the existing reference-naming importer loads from the weights."""
    model = _empty_model(arch, trunk)
    load_reference_weights(model, weights_for(weights, arch))
    return model


@pytest.fixture(scope="module")
def fcn8s_caffe(weights, tmp_path_factory):
    """Return the checkpoint converted (by the command) from FCN-8s's .caffemodel in the 'layer' encoding."""
    root = tmp_path_factory.mktemp("caffe")
    caffemodel, checkpoint = root / "fcn8s-heavy-pascal.caffemodel", root / "fcn8s-caffe.pt"
    write(caffemodel, net(net_layers(weights_for(weights, "fcn8s"), "layer")))
    assert reference_main([str(caffemodel), str(checkpoint), "--arch", "fcn8s"]) == 0
    caffemodel.unlink()  # 547 MB: only the checkpoint is needed from here on
    return checkpoint


@pytest.mark.slow
def test_converted_fcn8s_computes_what_the_reference_importer_loads(fcn8s_caffe, weights):
    model, cfg = load_model(fcn8s_caffe, "cpu", use_ema=False)  # what evaluate.py and predict.py load
    assert cfg.model.arch == "fcn8s" and cfg.data.transforms.normalization == "caffe"
    reference = _importer_model(weights, "fcn8s")
    for key, value in reference.state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key
    x = torch.randn(1, 3, 7, 5, generator=torch.Generator().manual_seed(1)) * 50
    with torch.no_grad():
        got, expected = model(x), reference(x)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5 * expected.abs().max().item())


@pytest.mark.slow
@pytest.mark.parametrize("encoding", ["layer", "v1"])
def test_every_net_in_both_encodings_maps_onto_the_reference_weights_exactly(weights, encoding):
    # The trunk's 547 MB are encoded once; each net's file is that trunk plus its own head layers.
    trunk = b"".join(net(net_layers(weights, encoding, heads=False)))
    g = torch.Generator().manual_seed(2)
    feats = {8: torch.rand(1, 256, 40, 40, generator=g), 16: torch.rand(1, 512, 20, 20, generator=g)}
    feats[32] = torch.rand(1, 4096, 4, 4, generator=g) * 10
    for arch, cls in CLASSES.items():
        expected = weights_for(weights, arch)
        heads = b"".join(net_layers(expected, encoding, arch, trunk=False))
        source = f"{arch}-{encoding}.caffemodel"
        buf = bytearray(trunk)
        buf += heads
        layers = parse_caffemodel(buf, source)
        with torch.device("meta"):
            model = cls(num_classes=NUM_CLASSES)
        state = reference_weights_from_caffe(layers, model, source)
        scales = {k: state.pop(k) for k in ("scale_pool4.weight", "scale_pool3.weight") if k in state}
        assert set(scales) == (
            {"scale_pool4.weight", "scale_pool3.weight"} if arch == "fcn8s_atonce" else set()
        )
        assert set(state) == set(expected)
        for key, value in expected.items():
            assert state[key].shape == value.shape and torch.equal(state[key], value), (arch, key)
        # The heads' outputs, loaded through the importer from the file and from the weights.
        converted = _empty_model(arch, trunk=False)
        load_reference_weights(converted, {**state, **scales})
        with torch.no_grad():
            got = converted.decode(feats, (20, 20))
            torch.testing.assert_close(
                got, _importer_model(weights, arch, trunk=False).decode(feats, (20, 20))
            )
        if arch == "fcn8s_atonce":
            # Without its Scale layers the file is FCN-8s's, which the at-once net would compute wrongly.
            plain = b"".join(net_layers(weights_for(weights, "fcn8s"), encoding, trunk=False))
            with pytest.raises(ValueError, match="layer 'scale_pool4' with weights is missing; fcn8s_atonce"):
                reference_weights_from_caffe(
                    parse_caffemodel(bytearray(trunk + plain), source), model, source
                )


@pytest.mark.slow
def test_converted_checkpoint_is_evaluated_on_caffe_input(fcn8s_caffe, tmp_path, capsys):
    make_voc_tree(tmp_path / "data")
    report, preds = tmp_path / "val.json", tmp_path / "preds"
    args = ["--checkpoint", str(fcn8s_caffe), "--no-progress", "--output", str(report), "--save-predictions"]
    args += [
        str(preds),
        f"data.val.root={tmp_path / 'data'}",
        "data.val.split=seg11valid",
        "data.num_workers=0",
    ]
    assert evaluate.main(args) == 0
    assert json.loads(report.read_text())["num_images"] == len(SEG11VALID)
    # The reference's input, computed here as its infer.py does: BGR, 0-255, minus the mean.
    model, _ = load_model(fcn8s_caffe, "cpu", use_ema=False)
    image = np.asarray(Image.open(tmp_path / "data/VOCdevkit/VOC2012/JPEGImages" / f"{SEG11VALID[0]}.jpg"))
    x = (image[:, :, ::-1].astype(np.float32) - np.array(CAFFE_MEAN_BGR, np.float32)).transpose(2, 0, 1)
    with torch.no_grad():
        expected = model(torch.from_numpy(x.copy())[None])[0].argmax(0).numpy()
    got = np.asarray(Image.open(preds / f"{SEG11VALID[0]}.png"))
    assert len(np.unique(expected)) > 1  # the comparison says something
    assert (got == expected).mean() > 0.99


@pytest.mark.slow
def test_init_from_the_converted_checkpoint_with_other_classes_keeps_every_tensor_that_fits(
    fcn8s_caffe, weights, capsys
):
    # A user's own dataset of 5 classes, FCN-8s started from the authors' weights.
    overrides = [
        "model.arch=fcn8s",
        "model.pretrained=false",
        "model.num_classes=5",
        "data.classes=[a,b,c,d,e]",
    ]
    model = build_model(load_config(overrides=[*overrides, f"model.init_from={fcn8s_caffe}"]).model)
    init_from(model, str(fcn8s_caffe), distributed.env_info())  # what train.py's setup() calls
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("init_from"))
    state = model.state_dict()
    for key, value in weights_for(weights, "fcn8s").items():
        if key.startswith(("conv", "fc")):
            assert torch.equal(state[f"backbone.{key}"], value), key
    new = ["score_fr", "score_pool4", "score_pool3", "upscore2", "upscore_pool4", "upscore8"]
    assert f"copied {2 * 15} tensors" in line and all(name in line.split("new", 1)[1] for name in new)
    assert not state["score_fr.weight"].any() and state["score_fr.weight"].shape[0] == 5
    assert math.isclose(float(state["upscore2.weight"][0, 0].sum()), 4.0)  # still the bilinear kernel
