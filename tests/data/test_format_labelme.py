"""'labelme' (fcn/data/labelme.py): a folder written with labelme's own LabelFile, its masks against
labelme.utils.shape_to_mask drawn in file order, the classes from data.classes / labels.txt / the
labels seen, fcn.data.check's per-class pixels, and each bad file's one line."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fcn.config import load_config
from fcn.data import build_dataset, class_names
from fcn.data.check import main as check_main

PILLOW_LIMIT = Image.MAX_IMAGE_PIXELS
labelme = pytest.importorskip("labelme")  # tests only (requirements.dev.txt): labelme's own writer
from labelme import LabelFile  # noqa: E402
from labelme.utils import shape_to_mask  # noqa: E402

# labelme's import sets Pillow's decompression-bomb limit to None for the whole process: put it back, so
# that the tests collected after this module (tests/frontends/test_demo.py's) see Pillow's default.
Image.MAX_IMAGE_PIXELS = PILLOW_LIMIT

H, W = 40, 56  # not square: a swapped height and width would show
SHAPES = [
    {"label": "cat", "points": [[2, 3], [30, 5], [20, 35]], "shape_type": "polygon"},
    {"label": "dog", "points": [[25, 10], [50, 30]], "shape_type": "rectangle"},
    {"label": "cat", "points": [[40.5, 20.2], [46, 27]], "shape_type": "circle"},  # over the dog
    {"label": "_background_", "points": [[44, 12], [48, 16]], "shape_type": "rectangle"},  # a hole
    {"label": "dog", "points": [[1, 1], [10, 10]], "shape_type": "line"},  # no area: nothing drawn
]


def _png_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def write_labelme(folder: Path, stem: str, shapes: list[dict], embed: bool) -> np.ndarray:
    """Write <stem>.json with labelme.LabelFile (imageData embedded, or the PNG beside it); return the image."""
    folder.mkdir(parents=True, exist_ok=True)
    image = np.random.default_rng(len(stem)).integers(0, 256, (H, W, 3), dtype=np.uint8)
    data = _png_bytes(image)
    if not embed:
        (folder / f"{stem}.png").write_bytes(data)
    full = [{"group_id": None, "description": "", "flags": {}, "mask": None, **s} for s in shapes]
    LabelFile().save(str(folder / f"{stem}.json"), full, f"{stem}.png", H, W, data if embed else None)
    return image


def expected(shapes: list[dict], classes: list[str]) -> np.ndarray:
    """The mask labelme's shapes_to_label rule gives: shape_to_mask per shape, later over earlier."""
    index = {n: i for i, n in enumerate(classes)} | {"_background_": 0}
    mask = np.zeros((H, W), dtype=np.uint8)
    for s in shapes:
        if s["shape_type"] in ("line", "point", "linestrip"):
            continue
        mask[shape_to_mask((H, W), s["points"], s["shape_type"])] = index[s["label"]]
    return mask


def train_counts(report: str) -> dict[str, int]:
    """Return the class -> pixels rows of data.train's table in fcn.data.check's report."""
    section = report.split("data.train (", 1)[1].split("\n\n", 1)[0]
    rows = [line.split() for line in section.splitlines()[2:] if line.strip()[:1].isdigit()]
    return {r[1]: int(r[2].replace(",", "")) for r in rows if r[1] != "ignored"}


def _config(tmp_path: Path, folder: Path, classes: str = "") -> Path:
    config = tmp_path / "labelme.yml"
    ds = f"{{name: labelme, root: {folder}}}"
    config.write_text(
        "model: {num_classes: 3, backbone: resnet18, geometry: same, pretrained: false, arch: fcn32s}\n"
        f"data: {{train: {ds}, val: {ds}, num_workers: 0{classes}}}\n"
    )
    return config


def test_masks_are_labelmes_shape_to_mask_in_file_order_with_image_data_or_beside(tmp_path, capsys):
    folder = tmp_path / "ann"
    a = write_labelme(folder, "a", SHAPES, embed=True)
    b = write_labelme(folder, "b", SHAPES[1:3], embed=False)
    cfg = load_config([str(_config(tmp_path, folder))])
    assert class_names(cfg.data) == ["background", "cat", "dog"]  # the labels seen, sorted
    assert "labelme: 3 classes from the labels of the JSON files" in capsys.readouterr().out
    ds = build_dataset(cfg.data.train, cfg.data)
    assert ds.ids == ["a", "b"]
    for (image, mask), want_image, shapes in zip(ds, (a, b), (SHAPES, SHAPES[1:3])):
        want = expected(shapes, ["background", "cat", "dog"])
        assert np.array_equal(np.asarray(image), want_image)  # imageData decoded, or the file beside
        assert np.array_equal(mask, want)
        assert len(np.unique(want)) == 3  # every class drawn: the test can tell them apart
    assert (folder / ".fcn_labelme_cache").is_dir()  # a.json's imageData, written once as a file


def test_check_counts_the_pixels_of_the_source_masks(tmp_path, capsys):
    folder = tmp_path / "ann"
    write_labelme(folder, "a", SHAPES, embed=True)
    write_labelme(folder, "b", SHAPES[:2], embed=False)
    assert check_main(["--config", str(_config(tmp_path, folder))]) == 0
    out = capsys.readouterr().out
    classes = ["background", "cat", "dog"]
    counts = np.bincount(
        np.concatenate([expected(SHAPES, classes).ravel(), expected(SHAPES[:2], classes).ravel()]),
        minlength=3,
    )
    assert "2 good pairs of 2" in out
    assert train_counts(out) == {name: int(n) for name, n in zip(classes, counts)}


def test_labels_txt_orders_the_classes_and_ignore_draws_the_ignore_index(tmp_path, capsys):
    folder = tmp_path / "ann"
    shapes = [*SHAPES[:2], {"label": "__ignore__", "points": [[0, 0], [5, 5]], "shape_type": "rectangle"}]
    write_labelme(folder, "a", shapes, embed=True)
    (folder / "labels.txt").write_text("__ignore__\n_background_\ndog\ncat\n")  # labelme2voc's file
    cfg = load_config([str(_config(tmp_path, folder))])
    assert class_names(cfg.data) == ["_background_", "dog", "cat"]
    assert (
        f"labelme: 3 classes from {folder / 'labels.txt'}: _background_=0, dog=1, cat=2"
        in capsys.readouterr().out
    )
    _, mask = build_dataset(cfg.data.train, cfg.data)[0]
    want = expected(SHAPES[:2], ["_background_", "dog", "cat"])
    want[shape_to_mask((H, W), [[0, 0], [5, 5]], "rectangle")] = 255
    assert np.array_equal(mask, want)


def test_data_classes_win_over_the_export(tmp_path):
    folder = tmp_path / "ann"
    write_labelme(folder, "a", SHAPES[:2], embed=True)
    cfg = load_config([str(_config(tmp_path, folder, ", classes: [background, dog, cat]"))])
    assert class_names(cfg.data) == ["background", "dog", "cat"]
    _, mask = build_dataset(cfg.data.train, cfg.data)[0]
    assert np.array_equal(mask, expected(SHAPES[:2], ["background", "dog", "cat"]))


def test_bad_files_are_one_line_each_naming_the_file(tmp_path, capsys):
    folder = tmp_path / "ann"
    write_labelme(folder, "good", SHAPES[:1], embed=True)
    write_labelme(
        folder,
        "outside",
        [{"label": "cat", "points": [[1, 1], [90, 5], [9, 9]], "shape_type": "polygon"}],
        True,
    )
    write_labelme(
        folder,
        "unknown",
        [{"label": "zebra", "points": [[1, 1], [9, 1], [9, 9]], "shape_type": "polygon"}],
        True,
    )
    write_labelme(folder, "gone", SHAPES[:1], embed=False)
    (folder / "gone.png").unlink()
    (folder / "broken.json").write_text('{"shapes": [\n  {,}\n]}\n')
    config = _config(tmp_path, folder, ", classes: [background, cat]")
    cfg = load_config([str(config)], ["model.num_classes=2"])
    with pytest.raises(ValueError, match="broken.json: not valid JSON at line 2 column 4"):
        build_dataset(cfg.data.train, cfg.data)
    assert check_main(["--config", str(config), "model.num_classes=2"]) == 1
    out = capsys.readouterr().out
    assert f"{folder / 'outside.json'}: shape 0 ('cat'): vertex (90, 5) outside its {W}x{H} image" in out
    assert (
        f"{folder / 'unknown.json'}: shape 0: label 'zebra' is not among the classes (background, cat)" in out
    )
    assert f"{folder / 'gone.png'}: no such image; named by gone.json's imagePath" in out
    assert f"{folder / 'broken.json'}: not valid JSON at line 2 column 4" in out
    assert "1 good pairs of 1" in out
