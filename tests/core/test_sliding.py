"""Sliding-window inference (eval.mode=slide): window placement, blending, and its equality with
whole-image inference where it must be equal."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from fcn.config import ConfigError, load_config
from fcn.core.sliding import argmax_heads, slide_labels, slide_logits, window_starts
from fcn.inference.segment import predict_labels, predict_probs


class _Counting(nn.Module):
    """Wraps a model and records the input shape of every forward."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner, self.shapes = inner, []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.shapes.append(tuple(x.shape))
        return self.inner(x)


def _fcn(seed: int = 0) -> nn.Module:
    """A small random FCN-8s (ResNet-18, 'same' geometry) with non-zero score layers."""
    from fcn.models import build_model

    torch.manual_seed(seed)
    cfg = load_config(
        overrides=[
            "model.arch=fcn8s",
            "model.backbone=resnet18",
            "model.geometry=same",
            "model.pretrained=false",
        ]
    )
    model = build_model(cfg.model)
    for name in ("score_fr", "score_pool4", "score_pool3"):
        nn.init.normal_(getattr(model, name).weight, std=0.1)
    return model.eval()


@pytest.mark.parametrize("length,tile,stride", [(10, 4, 3), (12, 4, 4), (3, 8, 5), (9, 9, 2), (100, 32, 21)])
def test_windows_cover_every_pixel_and_the_last_one_is_flush_with_the_edge(length, tile, stride):
    starts = window_starts(length, tile, stride)
    covered = set()
    for s in starts:
        covered.update(range(s, min(s + tile, length)))
    assert covered == set(range(length))
    assert starts == sorted(set(starts)) and starts[0] == 0
    assert starts[-1] + min(tile, length) == length
    assert all(b - a <= stride for a, b in zip(starts, starts[1:]))


def test_a_tile_as_large_as_the_image_gives_exactly_the_whole_result():
    model = _fcn()
    x = torch.randn(2, 3, 45, 61, generator=torch.Generator().manual_seed(1))
    for tile in (61, 64, 1000):
        window = dict(mode="slide", tile=tile, stride=tile // 2, window_batch=3)
        assert torch.equal(predict_labels(model, x, **window), predict_labels(model, x))
        assert torch.equal(
            predict_probs(model, x, flip=True, scales=(0.5, 1.0), **window),
            predict_probs(model, x, flip=True, scales=(0.5, 1.0)),
        )


def test_windows_are_batched_and_bounded_by_the_tile():
    model = _Counting(nn.Conv2d(3, 5, 1))
    x = torch.randn(2, 3, 50, 70)
    logits = slide_logits(model, x, tile=32, stride=20, window_batch=4)
    # rows start at 0, 18; columns at 0, 20, 38: 6 windows, batched 4 + 2, for both images at once
    assert logits.shape == (2, 5, 50, 70)
    assert model.shapes == [(8, 3, 32, 32), (4, 3, 32, 32)]


def test_slide_of_a_model_without_spatial_context_equals_whole_up_to_rounding():
    # A 1x1 convolution's logits at a pixel are the same in every window: their mean is that logit.
    model = nn.Conv2d(3, 4, 1).eval()
    x = torch.randn(1, 3, 37, 53)
    with torch.inference_mode():
        whole = model(x)
        slid = slide_logits(model, x, tile=16, stride=11, window_batch=2, channels_last=True)
    torch.testing.assert_close(slid, whole)


def test_overlapping_windows_are_averaged():
    # A model whose logit is the window's own mean: each pixel gets the mean over its windows.
    class WindowMean(nn.Module):
        def forward(self, x):
            return x.mean((1, 2, 3), keepdim=True).expand(-1, 1, *x.shape[-2:])

    x = torch.zeros(1, 3, 1, 6)
    x[..., :3] = 1.0  # windows of 4 at 0 and 2: means 3/4 and 1/4
    slid = slide_logits(WindowMean(), x, tile=4, stride=2)
    expected = torch.tensor([0.75, 0.75, 0.5, 0.5, 0.25, 0.25])
    torch.testing.assert_close(slid[0, 0, 0], expected)


def test_slide_with_tta_and_int8_style_calibration_runs_at_the_image_size():
    model = _fcn()
    x = torch.randn(1, 3, 70, 90)
    probs = predict_probs(model, x, flip=True, scales=(0.75, 1.0), mode="slide", tile=48, stride=32)
    assert probs.shape == (1, 21, 70, 90)
    torch.testing.assert_close(probs.sum(1), torch.ones(1, 70, 90))


@pytest.mark.parametrize(
    "override,message",
    [
        ("eval.mode=tiles", "eval.mode='tiles' is not one of whole, slide"),
        ("eval.tile=0", "eval.tile=0 must be > 0"),
        ("eval.stride=600", "eval.stride=600 is larger than eval.tile=512"),
        ("eval.window_batch=0", "eval.window_batch=0 must be > 0"),
    ],
)
def test_bad_sliding_window_keys_are_rejected_at_load_time(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(overrides=[override])


def test_training_evaluation_in_slide_mode_with_a_covering_tile_equals_whole():
    from fcn.training.validate import evaluate

    model = _fcn()
    images = torch.randn(3, 3, 40, 56, generator=torch.Generator().manual_seed(2))
    masks = torch.randint(0, 21, (3, 40, 56), generator=torch.Generator().manual_seed(3))
    loader = [(images[:2], masks[:2]), (images[2:], masks[2:])]
    whole = evaluate(model, loader, 21, torch.device("cpu"))
    covering = evaluate(model, loader, 21, torch.device("cpu"), mode="slide", tile=64, stride=32)
    assert covering["confusion"] == whole["confusion"]
    slid = evaluate(model, loader, 21, torch.device("cpu"), mode="slide", tile=24, stride=16, window_batch=2)
    assert sum(map(sum, slid["confusion"])) == masks.numel()


@pytest.mark.parametrize("shape", [(1, 4, 37, 53), (2, 21, 64, 40), (3, 2, 1, 1)])
def test_class_argmax_equals_argmax_with_ties_nans_and_infinities(shape, monkeypatch):
    from fcn.core import sliding

    g = torch.Generator().manual_seed(0)
    scores = torch.randint(-2, 3, shape, generator=g).float()  # many exact ties
    scores.view(-1)[::7] = float("nan")
    scores.view(-1)[3::11] = float("inf")
    scores.view(-1)[5::13] = float("-inf")
    expected = scores.argmax(1)
    assert torch.equal(sliding.class_argmax(scores), expected)
    monkeypatch.setattr(sliding, "ARGMAX_CHUNK_BYTES", 1)  # one row at a time
    assert torch.equal(sliding.class_argmax(scores), expected)
    channels_last = scores.contiguous(memory_format=torch.channels_last)
    assert torch.equal(sliding.class_argmax(channels_last), expected)
    assert torch.equal(sliding.class_argmax(scores.to(torch.bfloat16)), scores.to(torch.bfloat16).argmax(1))


def test_argmax_heads_takes_each_heads_argmax(monkeypatch):
    from fcn.core import sliding

    scores = torch.randn(2, 7, 9, 11, generator=torch.Generator().manual_seed(1))
    monkeypatch.setattr(sliding, "ARGMAX_CHUNK_BYTES", 64)
    labels = sliding.argmax_heads(scores, [4, 3])
    assert torch.equal(labels[:, 0], scores[:, :4].argmax(1)) and torch.equal(
        labels[:, 1], scores[:, 4:].argmax(1)
    )


@pytest.mark.parametrize(
    "height,width,tile,stride,batch,heads",
    [
        (70, 53, 24, 16, 1, None),
        (70, 53, 24, 16, 3, None),
        (50, 90, 32, 20, 4, [3, 2]),
        (40, 40, 16, 16, 5, None),
    ],
)
def test_slide_labels_are_the_argmax_of_slide_logits_bit_for_bit(height, width, tile, stride, batch, heads):
    # The banded sums add the same windows in the same order and divide by the same counts.
    torch.manual_seed(3)
    model = nn.Sequential(nn.Conv2d(3, 8, 5, padding=2), nn.ReLU(), nn.Conv2d(8, 5, 3, padding=1)).eval()
    x = torch.randn(2, 3, height, width)
    window = dict(tile=tile, stride=stride, window_batch=batch)
    with torch.inference_mode():
        expected = argmax_heads(slide_logits(model, x, **window), heads)
        got = slide_labels(model, x, heads=heads, **window)
    assert got.dtype == torch.int64 and got.shape == expected.shape
    assert torch.equal(got, expected)


def test_slide_labels_hold_one_band_of_rows_not_the_image():
    # The class sums a forward adds to are at most (tile + stride) rows high, whatever the image height.
    seen = []

    class Spy(nn.Module):
        def forward(self, x):
            seen.append(x.shape)
            return x[:, :2]

    x = torch.randn(1, 3, 200, 30)
    labels = slide_labels(Spy(), x, tile=20, stride=10, window_batch=2)
    assert labels.shape == (1, 200, 30) and len(seen) == 19 * 2 // 2
    assert torch.equal(labels, argmax_heads(slide_logits(Spy(), x, tile=20, stride=10), None))
