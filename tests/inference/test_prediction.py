"""fcn.inference.loading: test-time augmentation, image modes, index PNGs, output naming; and the JSON
report writer of fcn.inference.evaluation."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from fcn.core.visualize import save_index_png
from fcn.data.common import read_image, to_rgb
from fcn.files import list_images, output_stems
from fcn.inference.evaluation import write_json
from fcn.inference.segment import predict_labels, predict_probs


def _conv_model(symmetric: bool, seed: int = 0) -> nn.Module:
    """A 3x3 convolution to 4 classes; with symmetric=True its kernels are mirror-symmetric, so
    the model commutes with a horizontal flip."""
    torch.manual_seed(seed)
    conv = nn.Conv2d(3, 4, 3, padding=1)
    if symmetric:
        with torch.no_grad():
            conv.weight.copy_((conv.weight + conv.weight.flip(-1)) / 2)
    return conv.eval()


def _image(h: int = 9, w: int = 13, symmetric: bool = False, seed: int = 0) -> torch.Tensor:
    x = torch.randn(1, 3, h, w, generator=torch.Generator().manual_seed(seed))
    return (x + x.flip(-1)) / 2 if symmetric else x


def test_predict_probs_are_softmax_at_native_size():
    x = _image(11, 7)
    probs = predict_probs(_conv_model(False), x, scales=(0.5, 1.0, 1.5), flip=True)
    assert probs.shape == (1, 4, 11, 7) and probs.dtype == torch.float32
    assert torch.allclose(probs.sum(1), torch.ones(1, 11, 7), atol=1e-5)


def test_flip_tta_on_symmetric_input_and_model_equals_no_tta():
    model, x = _conv_model(True), _image(symmetric=True)
    plain = predict_probs(model, x)
    flipped = predict_probs(model, x, flip=True)
    # Equal up to rounding: the mirrored convolution adds the same products in another order.
    assert torch.allclose(plain, flipped, atol=1e-6)
    # So the labels agree wherever the best class leads by more than that rounding can move it.
    top2 = plain.topk(2, dim=1).values
    clear = top2[:, 0] - top2[:, 1] > 2 * (flipped - plain).abs().max()
    assert clear.float().mean() > 0.9  # the check below covers the image, not a few pixels
    assert torch.equal(predict_labels(model, x, flip=True)[clear], predict_labels(model, x)[clear])


def test_flip_tta_averages_the_mirrored_prediction():
    model, x = _conv_model(False), _image()
    expected = (model(x).softmax(1) + model(x.flip(-1)).flip(-1).softmax(1)) / 2
    got = predict_probs(model, x, flip=True)
    assert torch.allclose(got, expected, atol=1e-6)
    assert not torch.allclose(got, predict_probs(model, x), atol=1e-3)


def test_multiscale_resizes_input_and_brings_logits_back_to_native_size():
    model, x = _conv_model(False), _image(10, 14)
    small = F.interpolate(x, size=(5, 7), mode="bilinear", align_corners=False)
    back = F.interpolate(model(small), size=(10, 14), mode="bilinear", align_corners=False)
    expected = (back.softmax(1) + model(x).softmax(1)) / 2
    assert torch.allclose(predict_probs(model, x, scales=(0.5, 1.0)), expected, atol=1e-6)


def test_predict_labels_without_tta_is_the_argmax_of_the_logits():
    model, x = _conv_model(False), _image()
    assert torch.equal(predict_labels(model, x), model(x).argmax(1))


def test_bf16_and_channels_last_give_nearly_the_same_probabilities():
    model, x = _conv_model(False), _image()
    ref = predict_probs(model, x)
    got = predict_probs(model, x, amp="bf16", channels_last=True)
    assert got.dtype == torch.float32 and not torch.equal(got, ref)  # bf16 was used
    # The bound bf16 allows whatever the CPU's kernels: the input, the weights and the output are
    # each rounded to 8 significant bits (relative error <= 2^-9) and products accumulate in fp32,
    # so a logit moves by less than 4 * 2^-9 * sum |w| |x| + |b|, and a probability (softmax of
    # logits each moved by at most e) by at most expm1(2 e).
    with torch.no_grad():
        magnitude = F.conv2d(x.abs(), model.weight.abs(), model.bias.abs(), padding=1).max()
    assert (got - ref).abs().max() <= torch.expm1(2 * 4 * 2**-9 * magnitude)


@pytest.mark.parametrize("mode", ["L", "LA", "RGBA", "CMYK", "P", "1", "I;16", "I", "F"])
def test_to_rgb_turns_any_mode_into_rgb_of_the_same_size(mode):
    rgb = Image.fromarray(np.random.default_rng(0).integers(0, 256, (7, 5, 3), dtype=np.uint8))
    image = rgb.convert(mode) if mode not in ("I;16", "I", "F") else rgb.convert("L").convert(mode)
    out = to_rgb(image)
    assert out.mode == "RGB" and out.size == (5, 7)


def test_to_rgb_scales_16_bit_images_instead_of_clipping():
    values = np.array([[0, 257 * 100, 65535]], dtype=np.uint16)
    image = Image.frombytes("I;16", (3, 1), values.astype("<u2").tobytes())
    out = np.asarray(to_rgb(image))
    assert out[0, :, 0].tolist() == [0, 100, 255]


def test_save_index_png_keeps_indices_and_palette(tmp_path):
    mask = np.array([[0, 1, 2], [255, 1, 0]], dtype=np.uint8)
    palette = np.zeros((256, 3), dtype=np.uint8)
    palette[1], palette[2], palette[255] = (10, 20, 30), (200, 100, 0), (224, 224, 192)
    save_index_png(mask, palette, tmp_path / "sub" / "a.png")
    with Image.open(tmp_path / "sub" / "a.png") as image:
        assert image.mode == "P"
        assert np.array_equal(np.asarray(image), mask)
        assert np.asarray(image.convert("RGB"))[0, 1].tolist() == [10, 20, 30]
    assert [p.name for p in (tmp_path / "sub").iterdir()] == ["a.png"]
    umask = os.umask(0)
    os.umask(umask)
    assert (tmp_path / "sub" / "a.png").stat().st_mode & 0o777 == 0o666 & ~umask  # not mkstemp's 0600


def test_write_json_writes_nan_as_null(tmp_path):
    write_json({"iou": [0.5, float("nan")]}, tmp_path / "m.json")
    assert json.loads((tmp_path / "m.json").read_text()) == {"iou": [0.5, None]}


def test_output_stems_are_distinct_when_names_clash(tmp_path):
    files = [tmp_path / "a.jpg", tmp_path / "a.png", tmp_path / "b.jpg", tmp_path / "x" / "b.jpg"]
    stems = output_stems(files)
    assert stems[:2] == ["a_jpg", "a_png"]
    assert len(set(stems)) == 4


def test_list_images_reads_directories_and_reports_missing_inputs(tmp_path):
    (tmp_path / "b.png").write_bytes(b"")
    (tmp_path / "a.JPG").write_bytes(b"")
    (tmp_path / "notes.txt").write_text("not an image")
    files, errors = list_images([tmp_path, tmp_path / "missing.jpg"])
    assert [f.name for f in files] == ["a.JPG", "b.png"]
    assert len(errors) == 1 and "missing.jpg" in errors[0]


def test_one_reader_gives_predict_and_training_the_same_pixels_for_a_16_bit_file(tmp_path):
    from fcn.config import load_config
    from fcn.data.transforms import build_transforms, preprocess

    # Values at most 255 in a 16-bit file: the case where two rules (always / only above 255) differed.
    values = np.array([[0, 100, 255], [257, 25700, 65535]], dtype="<u2")
    path = tmp_path / "deep.png"
    Image.frombytes("I;16", (3, 2), values.tobytes()).save(path)
    tr = load_config().data.transforms
    image, _ = build_transforms(tr, train=False)(read_image(path), np.zeros((2, 3), np.uint8))
    assert torch.equal(image, preprocess(read_image(path, upright=True), tr.normalization))
    assert np.asarray(read_image(path))[:, :, 0].tolist() == [[0, 0, 1], [1, 100, 255]]


def test_read_image_names_an_unreadable_file(tmp_path):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not a jpeg")
    with pytest.raises(ValueError, match="broken.jpg"):
        read_image(bad)
