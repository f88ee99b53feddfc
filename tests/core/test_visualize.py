"""Colour masks, overlays, grids, legends and atomic PNG writing."""

import os

import numpy as np
import pytest
import torch
from PIL import Image

from fcn.core import visualize
from fcn.core.visualize import colorize, legend, overlay, prediction_grid, save_png


@pytest.fixture
def palette() -> np.ndarray:
    """A palette with easily checked colours: class k -> (k, 2k mod 256, 255 - k)."""
    k = np.arange(256)
    return np.stack([k, (2 * k) % 256, 255 - k], axis=1).astype(np.uint8)


def make_sample(h: int, w: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    gt = rng.integers(0, 4, (h, w)).astype(np.uint8)
    gt[0, :] = 255
    pred = rng.integers(0, 4, (h, w)).astype(np.int64)
    return image, gt, pred


def test_colorize_maps_each_class_to_its_palette_colour(palette):
    mask = np.array([[0, 1], [7, 255]], dtype=np.int64)
    out = colorize(mask, palette)
    assert out.shape == (2, 2, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out[1, 0], [7, 14, 248])
    np.testing.assert_array_equal(out[1, 1], palette[255])
    np.testing.assert_array_equal(colorize(torch.from_numpy(mask), palette), out)


def test_colorize_rejects_bad_palette_and_mask(palette):
    with pytest.raises(ValueError, match=r"\(256, 3\) uint8"):
        colorize(np.zeros((2, 2), np.uint8), palette[:21])
    with pytest.raises(ValueError, match="outside"):
        colorize(np.array([[0, 300]]), palette)
    with pytest.raises(ValueError, match="2-D integer"):
        colorize(np.zeros((2, 2), np.float32), palette)


def test_overlay_blends_classes_and_leaves_void_as_image(palette):
    image, gt, _ = make_sample(6, 5)
    out = overlay(image, gt, palette, alpha=0.5)
    assert out.shape == image.shape and out.dtype == np.uint8
    np.testing.assert_array_equal(out[0], image[0])  # void row untouched
    expected = np.rint(0.5 * image[1:].astype(np.float32) + 0.5 * palette[gt[1:]].astype(np.float32))
    np.testing.assert_array_equal(out[1:], expected.astype(np.uint8))
    np.testing.assert_array_equal(overlay(image, gt, palette, alpha=0.0), image)
    np.testing.assert_array_equal(overlay(image, gt, palette, alpha=1.0)[1:], palette[gt[1:]])
    np.testing.assert_array_equal(overlay(Image.fromarray(image), gt, palette), out)


@pytest.mark.parametrize("seed", range(6))
def test_overlay_by_table_equals_the_float32_blend_over_every_pixel(seed):
    rng = np.random.default_rng(seed)
    pal = rng.integers(0, 256, (256, 3)).astype(np.uint8)
    h, w = (int(v) for v in rng.integers(1, 120, 2))
    image = rng.integers(0, 256, (h, w, 3)).astype(np.uint8)
    for dtype in (np.uint8, np.int32, np.int64, np.uint16):
        mask = rng.integers(0, int(rng.integers(1, 257)), (h, w)).astype(dtype)
        for alpha in (0.0, 0.3, 0.5, 0.6, 1.0, float(rng.random())):
            for ignore in (0, 3, 255, 300):
                blended = np.rint(
                    (1.0 - alpha) * image.astype(np.float32) + alpha * pal[mask].astype(np.float32)
                )
                expected = np.where((mask == ignore)[:, :, None], image, blended.astype(np.uint8))
                assert np.array_equal(overlay(image, mask, pal, alpha, ignore), expected), (
                    dtype,
                    alpha,
                    ignore,
                )


def test_overlay_rejects_size_mismatch(palette):
    image, gt, _ = make_sample(6, 5)
    with pytest.raises(ValueError, match="same H, W"):
        overlay(image, gt[:4], palette)


def test_prediction_grid_places_tiles_in_columns(palette):
    samples = [make_sample(20, 30, 0), make_sample(16, 24, 1)]
    images, gts, preds = zip(*samples)
    grid = prediction_grid(images, gts, preds, palette, min_height=1)
    assert grid.dtype == np.uint8 and grid.ndim == 3 and grid.shape[2] == 3
    gap = visualize._GAP
    assert grid.shape[1] == 3 * 30 + 4 * gap
    title_h = grid.shape[0] - (20 + 16 + 2 * gap)
    assert title_h > 8
    top = title_h
    np.testing.assert_array_equal(grid[top : top + 20, gap : gap + 30], images[0])
    np.testing.assert_array_equal(grid[top : top + 20, 2 * gap + 30 : 2 * gap + 60], palette[gts[0]])
    np.testing.assert_array_equal(grid[top : top + 20, 3 * gap + 60 : 3 * gap + 90], palette[preds[0]])
    second = top + 20 + gap
    np.testing.assert_array_equal(grid[second : second + 16, 3 * gap + 60 : 3 * gap + 84], palette[preds[1]])
    assert (grid[:title_h] < 128).any(), "column titles were not drawn"


def test_prediction_grid_without_ground_truth_has_two_columns(palette):
    image, _, pred = make_sample(20, 30)
    grid = prediction_grid([image], None, [pred], palette, min_height=1)
    assert grid.shape[1] == 2 * 30 + 3 * visualize._GAP


def test_prediction_grid_with_class_names_adds_legend(palette):
    image, gt, pred = make_sample(20, 30)
    plain = prediction_grid([image], [gt], [pred], palette)
    with_legend = prediction_grid([image], [gt], [pred], palette, class_names=["a", "b", "c", "d"])
    assert with_legend.shape[0] > plain.shape[0]
    np.testing.assert_array_equal(with_legend[: plain.shape[0], : plain.shape[1]], plain)


def test_prediction_grid_rejects_mismatched_inputs(palette):
    image, gt, pred = make_sample(20, 30)
    with pytest.raises(ValueError, match="1 images but 2 predictions"):
        prediction_grid([image], [gt], [pred, pred], palette)
    with pytest.raises(ValueError, match="row 0"):
        prediction_grid([image], [gt[:10]], [pred], palette)


def test_legend_draws_one_swatch_per_class(palette):
    one_column = legend([1, 3], ["bg", "one", "two", "three"], palette)
    assert one_column.dtype == np.uint8 and one_column.ndim == 3
    for k in (1, 3):
        assert (one_column == palette[k]).all(axis=2).sum() >= 25, f"swatch of class {k} missing"
    assert not (one_column == palette[2]).all(axis=2).any()
    wide = legend(list(range(4)), ["bg", "one", "two", "three"], palette, max_width=1000)
    assert wide.shape[0] < legend(list(range(4)), ["bg", "one", "two", "three"], palette).shape[0]
    assert wide.shape[1] <= 1000


def test_save_png_round_trips_and_leaves_no_temp_file(tmp_path):
    image, gt, _ = make_sample(7, 9)
    path = tmp_path / "sub" / "out.png"
    save_png(image, path)
    save_png(gt, tmp_path / "mask.png")
    np.testing.assert_array_equal(np.asarray(Image.open(path)), image)
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "mask.png")), gt)
    assert sorted(os.listdir(path.parent)) == ["out.png"]


def test_save_png_failure_keeps_previous_file(tmp_path, monkeypatch):
    image, _, _ = make_sample(7, 9)
    path = tmp_path / "out.png"
    save_png(image, path)
    before = path.read_bytes()

    def broken_save(self, fp, *args, **kwargs):
        fp.write(b"\x89PNG partial")
        raise OSError("disk full")

    monkeypatch.setattr(Image.Image, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        save_png(np.zeros_like(image), path)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["out.png"]


def test_prediction_grid_enlarges_small_images_by_a_whole_factor(palette):
    image = np.zeros((20, 30, 3), np.uint8)
    image[5, 7] = (1, 2, 3)  # a colour neither the canvas nor the palette uses
    mask = np.zeros((20, 30), np.uint8)
    small = prediction_grid([image], None, [mask], palette, min_height=1)
    large = prediction_grid([image], None, [mask], palette, min_height=64)  # 20 px -> x4 = 80 px
    assert large.shape[1] - small.shape[1] == 2 * 3 * 30
    marked = np.argwhere((large == (1, 2, 3)).all(axis=2))
    assert len(marked) == 16 and np.ptp(marked[:, 0]) == 3 and np.ptp(marked[:, 1]) == 3


@pytest.mark.parametrize("n", [3, 21])
def test_confusion_image_shades_the_row_shares_and_greys_a_class_without_pixels(n):
    names = [f"class{k}" for k in range(n)]
    mat = np.eye(n, dtype=np.int64) * 90
    mat[0, 1] = 10  # class0: 90% right, 10% taken for class1
    mat[n - 1] = 0  # the last class has no ground-truth pixels
    picture = visualize.confusion_image(mat, names, title="t")
    assert picture.dtype == np.uint8 and picture.ndim == 3 and picture.shape[2] == 3
    # The rows are the last n cells of the picture, bottom-up: the bottom row is grey (no pixels),
    # the others hold a dark diagonal cell; their layout: a square grid ending GAP from the corner.
    cell = int(np.clip(560 // n, 30, 72))
    right, bottom = picture.shape[1] - visualize._GAP, picture.shape[0] - visualize._GAP

    def centre(i: int, j: int) -> np.ndarray:
        return picture[bottom - (n - i) * cell + 3, right - (n - j) * cell + 3].astype(int)

    assert (centre(n - 1, 0) == 225).all()  # grey row
    assert centre(1, 1).sum() < 300  # a full share: dark blue
    assert centre(1, 0).sum() > 700  # none: near white
    assert 300 < centre(0, 1).sum() < centre(1, 0).sum()  # 10%: lightly shaded


def test_confusion_image_and_iou_chart_reject_a_wrong_number_of_names():
    with pytest.raises(ValueError, match="for 2 class names"):
        visualize.confusion_image(np.eye(3), ["a", "b"])
    with pytest.raises(ValueError, match="3 IU values for 2 class names"):
        visualize.iou_chart([0.1, 0.2, 0.3], ["a", "b"])


@pytest.mark.parametrize("n", [3, 21])
def test_iou_chart_draws_one_bar_per_class_and_marks_an_absent_one(palette, n):
    iou = [k / n for k in range(n)]
    iou[1] = float("nan")
    picture = visualize.iou_chart(iou, [f"c{k}" for k in range(n)], palette, title="per-class IU")
    assert picture.dtype == np.uint8 and picture.shape[2] == 3
    colours = {tuple(c) for c in picture.reshape(-1, 3)}
    assert tuple(palette[n - 1]) in colours  # the longest bar, in its class colour
    assert tuple(palette[1]) not in colours  # the absent class has no bar
