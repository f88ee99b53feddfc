"""Mixing: CutMix, MixUp and Mosaic keep images aligned with masks, invent no labels, and replay."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from fcn.config import MixingConfig, load_config
from fcn.data import mixing
from fcn.data.mixing import Mixer, build_mixer, cutmix, cyclic_permutation, mixup, mosaic


def coded_batch(seed: int, n: int, height: int, width: int, block: int = 2):
    """Return (images, masks): channel 0 codes the label (mask + 1; 0 = padding), channel 1 the image (i + 1).

    Masks are made of block x block squares aligned to even coordinates, so halving the image
    (Mosaic) averages only equal pixels and the code stays exact.
    """
    g = torch.Generator().manual_seed(seed)
    labels = torch.tensor([0, 1, 2, 3, 5, 255])
    small = labels[torch.randint(len(labels), (n, -(-height // block), -(-width // block)), generator=g)]
    masks = small.repeat_interleave(block, 1).repeat_interleave(block, 2)[:, :height, :width].contiguous()
    images = torch.stack(
        [
            masks.float() + 1,
            torch.arange(1, n + 1).float().view(n, 1, 1).expand(n, height, width),
            torch.rand(n, height, width, generator=g),
        ],
        dim=1,
    )
    return images, masks


def assert_aligned(images: torch.Tensor, masks: torch.Tensor) -> None:
    """Every pixel's label code in the image equals its mask; padding (code 0) has mask 255."""
    code = images[:, 0]
    expected = torch.where(code == 0, torch.full_like(masks, 255), code.round().long() - 1)
    assert torch.equal(masks, expected)


def labels(masks: torch.Tensor) -> set[int]:
    return set(masks.unique().tolist())


def test_cyclic_permutation_has_no_fixed_points():
    g = torch.Generator().manual_seed(0)
    for n in range(2, 9):
        for _ in range(5):
            perm = cyclic_permutation(n, g)
            assert sorted(perm.tolist()) == list(range(n))
            assert (perm != torch.arange(n)).all()
            seen, i = set(), 0  # one cycle through all n
            for _ in range(n):
                seen.add(i)
                i = int(perm[i])
            assert len(seen) == n
    assert cyclic_permutation(1, g).tolist() == [0]


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), n=st.integers(1, 5), height=st.integers(2, 40), width=st.integers(2, 40))
def test_cutmix_pastes_one_box_with_its_mask(seed, n, height, width):
    images, masks = coded_batch(seed, n, height, width)
    out, out_masks = cutmix(images, masks, alpha=1.0, generator=torch.Generator().manual_seed(seed))
    assert_aligned(out, out_masks)
    assert labels(out_masks) <= labels(masks)
    # The pasted region is the same box in every image, taken from one other image.
    changed = out[:, 1] != images[:, 1]
    if n > 1 and changed.any():
        box = changed[0]
        rows, cols = box.any(1).nonzero(), box.any(0).nonzero()
        assert box.sum() == len(rows) * len(cols)  # a rectangle
        assert (changed == box).all()
        assert torch.equal(out_masks[:, ~box], masks[:, ~box])
        sources = out[:, 1][:, box].unique(dim=1)
        assert sources.shape[1] == 1 and (sources[:, 0] != torch.arange(1, n + 1)).all()


def test_cutmix_box_area_follows_alpha():
    images, masks = coded_batch(0, 2, 32, 32)
    g = torch.Generator().manual_seed(1)

    def areas(alpha: float) -> torch.Tensor:
        return torch.tensor(
            [
                float((cutmix(images, masks, alpha, g)[0][:, 1] != images[:, 1]).float().mean())
                for _ in range(200)
            ]
        )

    # Beta(0.2, 0.2) is U-shaped (boxes of nearly nothing or nearly everything); Beta(4, 4) peaks at 1/2.
    assert areas(0.2).std() > 1.5 * areas(4.0).std()


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 10_000), n=st.integers(1, 5), height=st.integers(2, 24), width=st.integers(2, 24))
def test_mixup_blends_images_and_keeps_both_targets(seed, n, height, width):
    images, masks = coded_batch(seed, n, height, width)
    masks[:, 0, 0] = torch.arange(n)  # the first pixel names the image
    out, masks_b, lam = mixup(images, masks, alpha=0.4, generator=torch.Generator().manual_seed(seed))
    assert 0.0 <= lam <= 1.0
    partner = masks_b[:, 0, 0]
    assert torch.equal(masks_b, masks[partner])
    if n > 1:
        assert (partner != torch.arange(n)).all()  # never blended with itself
    torch.testing.assert_close(out, lam * images + (1 - lam) * images[partner], atol=1e-5, rtol=1e-5)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), n=st.integers(1, 6), half_h=st.integers(1, 20), half_w=st.integers(1, 20))
def test_mosaic_tiles_images_and_masks_alike(seed, n, half_h, half_w):
    height, width = 2 * half_h, 2 * half_w
    images, masks = coded_batch(seed, n, height, width)
    out, out_masks = mosaic(images, masks, generator=torch.Generator().manual_seed(seed))
    assert out.shape == images.shape and out_masks.shape == masks.shape
    assert_aligned(out, out_masks)
    assert labels(out_masks) <= labels(masks) | {255}
    if n >= 4:  # four different images in every output
        for i in range(n):
            sources = set(out[i, 1].unique().tolist()) - {0.0}
            assert len(sources) == 4 and float(i + 1) in sources


def test_mosaic_quadrants_are_half_size_corners():
    images, masks = coded_batch(3, 4, 16, 24)
    out, out_masks = mosaic(images, masks, torch.Generator().manual_seed(0))
    # The top-left quadrant of output 0 ends at the centre with the bottom-right corner of image 0.
    sources = out[0, 1]
    cy = int((sources == 1).any(1).nonzero().max()) + 1
    cx = int((sources == 1).any(0).nonzero().max()) + 1
    assert 4 <= cy <= 12 and 6 <= cx <= 18
    half = masks[0, ::2, ::2]
    top, left = min(cy, 8), min(cx, 12)
    assert torch.equal(out_masks[0, cy - top : cy, cx - left : cx], half[8 - top :, 12 - left :])


@pytest.mark.parametrize("key", ["cutmix_p", "mixup_p", "mosaic_p"])
def test_mixer_is_reproducible_from_the_generator(key):
    images, masks = coded_batch(0, 4, 16, 16)
    mixer = Mixer(**{key: 1.0}, alpha=0.5)
    first = mixer(images, masks, torch.Generator().manual_seed(5))
    again = mixer(images, masks, torch.Generator().manual_seed(5))
    other = mixer(images, masks, torch.Generator().manual_seed(6))
    for a, b in zip(first, again):
        assert (a is None and b is None) or (torch.equal(a, b) if torch.is_tensor(a) else a == b)
    assert not torch.equal(first[0], other[0])
    assert torch.equal(images, coded_batch(0, 4, 16, 16)[0])  # inputs are not modified


def test_mixer_picks_each_mixing_with_its_probability(monkeypatch):
    calls = []
    for name in ("cutmix", "mixup", "mosaic"):
        real = getattr(mixing, name)
        monkeypatch.setattr(
            mixing, name, lambda *a, _n=name, _f=real, **k: (calls.append(_n), _f(*a, **k))[1]
        )
    mixer = Mixer(cutmix_p=0.2, mixup_p=0.3, mosaic_p=0.1)
    images, masks = coded_batch(0, 2, 4, 4)
    g = torch.Generator().manual_seed(0)
    trials = 2000
    for _ in range(trials):
        before = len(calls)
        _, _, masks_b, _ = mixer(images, masks, g)
        assert len(calls) - before <= 1  # at most one mixing per batch
        assert (masks_b is not None) == (len(calls) > before and calls[-1] == "mixup")
    for name, p in (("cutmix", 0.2), ("mixup", 0.3), ("mosaic", 0.1)):
        assert abs(calls.count(name) / trials - p) < 0.04


def test_mixer_return_values():
    images, masks = coded_batch(1, 3, 8, 8)
    g = torch.Generator().manual_seed(0)
    out, out_masks, masks_b, lam = Mixer(mixup_p=1.0)(images, masks, g)
    assert masks_b is not None and torch.equal(out_masks, masks) and 0 <= lam <= 1
    for key in ("cutmix_p", "mosaic_p"):
        out, out_masks, masks_b, lam = Mixer(**{key: 1.0})(images, masks, g)
        assert masks_b is None and lam == 1.0
        assert_aligned(out, out_masks)


def test_build_mixer_from_config():
    assert build_mixer(MixingConfig()) is None
    cfg = load_config(
        overrides=["data.mixing.cutmix_p=0.5", "data.mixing.mixup_p=0.25", "data.mixing.alpha=0.4"]
    )
    mixer = build_mixer(cfg.data.mixing)
    assert isinstance(mixer, Mixer) and (mixer.cutmix_p, mixer.mixup_p, mixer.mosaic_p, mixer.alpha) == (
        0.5,
        0.25,
        0.0,
        0.4,
    )
    with pytest.raises(ValueError, match="must be at most 1"):
        build_mixer(MixingConfig(cutmix_p=0.6, mixup_p=0.6))


def test_mixer_rejects_mismatched_batches():
    with pytest.raises(ValueError, match="same N, H, W"):
        Mixer(cutmix_p=1.0)(
            torch.zeros(2, 3, 4, 4), torch.zeros(2, 4, 5, dtype=torch.long), torch.Generator()
        )
