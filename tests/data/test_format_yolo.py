"""'yolo' (fcn/data/yolo.py): an Ultralytics YOLO segmentation dataset written as Ultralytics'
"Instance Segmentation Datasets Overview" specifies it (docs.ultralytics.com/datasets/segment/):
its masks against the polygons drawn independently with PIL (background 0, class k -> k + 1, later
over earlier), the classes from data.yaml's names, fcn.data.check's per-class pixels, and each bad
label line's one line."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from fcn.config import load_config
from fcn.data import build_dataset, class_names
from fcn.data.check import main as check_main

H, W = 40, 56  # not square: a swapped height and width would show
# The docs' example line shapes: '<class-index> <x1> <y1> ... <xn> <yn>', normalised to [0, 1].
LABELS = {
    "a": [
        (0, [0.05, 0.1, 0.6, 0.12, 0.4, 0.9]),
        (1, [0.3, 0.2, 0.95, 0.2, 0.95, 0.8, 0.3, 0.8]),  # over the cat where they overlap
        (0, [0.7, 0.4, 0.85, 0.4, 0.8, 0.6]),  # a cat over the dog: file order, later on top
    ],
    "b": [(1, [0.0, 0.0, 1.0, 0.0, 1.0, 1.0, 0.5, 1.0, 0.0, 0.5])],  # vertices on the border
}


def write_yolo(root: Path, labels: dict, split: str = "train", names=("cat", "dog"), yaml_text=None) -> None:
    """Write an export as the docs' layout: data.yaml (path, train, val, names, nc), images/<split>/
    <stem>.jpg (PNG here: lossless pixels) and labels/<split>/<stem>.txt, one polygon a line."""
    (root / "images" / split).mkdir(parents=True, exist_ok=True)
    (root / "labels" / split).mkdir(parents=True, exist_ok=True)
    for i, (stem, objects) in enumerate(labels.items()):
        image = np.random.default_rng(i).integers(0, 256, (H, W, 3), dtype=np.uint8)
        Image.fromarray(image).save(root / "images" / split / f"{stem}.png")
        if objects is not None:
            lines = [" ".join([str(c), *(f"{v:.6f}" for v in xy)]) for c, xy in objects]
            (root / "labels" / split / f"{stem}.txt").write_text("\n".join(lines) + "\n")
    if yaml_text is None:  # as coco8-seg.yaml: the root, split folders relative to it, names by id
        yaml_text = (
            "path: .\ntrain: images/train\nval: images/val\n"
            + "names:\n"
            + "".join(f"  {i}: {n}\n" for i, n in enumerate(names))
            + f"nc: {len(names)}\n"
        )
    (root / "data.yaml").write_text(yaml_text)


def expected(objects) -> np.ndarray:
    """Each polygon in pixels (x * W, y * H) filled and outlined by PIL, in file order, class k as k + 1."""
    canvas = Image.new("L", (W, H), 0)
    draw = ImageDraw.Draw(canvas)
    for c, xy in objects or []:
        points = [(x * W, y * H) for x, y in zip(xy[0::2], xy[1::2])]
        draw.polygon(points, fill=c + 1, outline=c + 1)
    return np.asarray(canvas)


def _config(tmp_path: Path, root: Path) -> Path:
    config = tmp_path / "yolo.yml"
    config.write_text(
        "model: {backbone: resnet18, geometry: same, pretrained: false, arch: fcn32s}\n"
        f"data: {{train: {{name: yolo, root: {root}}}, val: {{name: yolo, root: {root}, split: train}}, "
        "num_workers: 0}\n"
    )
    return config


def train_counts(report: str) -> dict[str, int]:
    """Return the class -> pixels rows of data.train's table in fcn.data.check's report."""
    section = report.split("data.train (", 1)[1].split("\n\n", 1)[0]
    rows = [line.split() for line in section.splitlines()[2:] if line.strip()[:1].isdigit()]
    return {r[1]: int(r[2].replace(",", "")) for r in rows if r[1] != "ignored"}


def test_masks_are_the_polygons_in_file_order_and_the_classes_data_yamls_names(tmp_path, capsys):
    root = tmp_path / "export"
    write_yolo(root, {**LABELS, "empty": None})
    cfg = load_config([str(_config(tmp_path, root))])
    assert class_names(cfg.data) == ["background", "cat", "dog"] and cfg.model.num_classes == 3
    assert "yolo: 3 classes from " in capsys.readouterr().out
    ds = build_dataset(cfg.data.train, cfg.data)
    assert ds.ids == ["a", "b", "empty"]
    for (_, mask), stem in zip(ds, ds.ids):
        assert np.array_equal(mask, expected(LABELS.get(stem))), stem
    assert set(np.unique(expected(LABELS["a"]))) == {0, 1, 2}  # every class drawn
    assert expected(LABELS["a"])[int(0.5 * H), int(0.77 * W)] == 1  # the last cat over the dog
    assert not build_dataset(cfg.data.train, cfg.data)[2][1].any()  # no label file: all background


def test_names_as_a_list_and_roboflows_dot_dot_paths(tmp_path, capsys):
    root = tmp_path / "export"
    # Roboflow's data.yaml: '../train/images' beside data.yaml, names as a list, no path
    (root / "train").mkdir(parents=True)
    write_yolo(root / "train", LABELS, split="", yaml_text="")
    (root / "train" / "data.yaml").unlink()
    (root / "data.yaml").write_text(
        "train: ../train/images\nval: ../valid/images\nnc: 2\nnames: ['cat', 'dog']\n"
    )
    cfg = load_config([str(_config(tmp_path, root))])
    assert class_names(cfg.data) == ["background", "cat", "dog"]
    ds = build_dataset(cfg.data.train, cfg.data)
    assert ds.ids == ["a", "b"] and np.array_equal(ds[0][1], expected(LABELS["a"]))


def test_check_counts_the_pixels_of_the_source_masks(tmp_path, capsys):
    root = tmp_path / "export"
    write_yolo(root, {**LABELS, "empty": None})
    assert check_main(["--config", str(_config(tmp_path, root))]) == 0
    out = capsys.readouterr().out
    counts = np.bincount(
        np.concatenate([expected(LABELS.get(s)).ravel() for s in ("a", "b", "empty")]), minlength=3
    )
    assert "3 good pairs of 3" in out
    assert train_counts(out) == dict(zip(["background", "cat", "dog"], counts.tolist()))


def test_bad_lines_are_one_line_each_naming_the_file_and_line(tmp_path, capsys):
    root = tmp_path / "export"
    write_yolo(
        root,
        {
            "good": LABELS["b"],
            "outside": [(0, [0.1, 0.1, 1.2, 0.1, 0.5, 0.5])],
            "unknown": [(0, [0.1, 0.1, 0.9, 0.1, 0.5, 0.5]), (2, [0.1, 0.1, 0.9, 0.1, 0.5, 0.5])],
            "box": [(1, [0.5, 0.5, 0.2, 0.2])],
        },
    )
    labels = root / "labels" / "train"
    config = _config(tmp_path, root)
    cfg = load_config([str(config)])
    with pytest.raises(ValueError, match="box.txt: line 1: a polygon needs 3 or more x y pairs, got 4"):
        build_dataset(cfg.data.train, cfg.data)
    assert check_main(["--config", str(config)]) == 1
    out = capsys.readouterr().out
    assert f"{labels / 'outside.txt'}: line 1: coordinate 1.2 is outside [0, 1]" in out
    assert f"{labels / 'unknown.txt'}: line 2: class id 2 is not one of data.yaml's names (0..1)" in out
    assert f"{labels / 'box.txt'}: line 1: a polygon needs 3 or more x y pairs" in out
    assert "1 good pairs of 1" in out


def test_a_bad_data_yaml_is_one_line_naming_it(tmp_path):
    root = tmp_path / "export"
    write_yolo(root, LABELS, yaml_text="train: images/train\nnames: [cat, dog]\nnc: 3\n")
    cfg = load_config([str(_config(tmp_path, root))], ["model.num_classes=3"])
    with pytest.raises(ValueError, match=r"data.yaml: nc is 3 but names lists 2 classes"):
        build_dataset(cfg.data.train, cfg.data)
