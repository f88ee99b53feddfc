"""'roboflow': Roboflow's Semantic Segmentation Masks export, written as Roboflow's docs describe it
(train/ valid/ test/, abc.jpg beside abc_mask.png of grey class indices, _classes.csv with the
header 'Pixel Value, Class'), read by build_dataset and python -m fcn.data.check."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from fcn.config import load_config
from fcn.data import build_dataset, class_names
from fcn.data.check import main
from tests.helpers import counts_table

CLASSES = ["background", "cat", "dog"]


def label(seed: int) -> np.ndarray:
    """Return a 6x8 uint8 mask: background, a cat block and a dog row that move with seed."""
    mask = np.zeros((6, 8), np.uint8)
    mask[1 : 3 + seed, 2:5] = 1
    mask[5, seed:] = 2
    return mask


def write_export(root: Path, splits: dict[str, list[str]], classes=CLASSES) -> dict[str, np.ndarray]:
    """Write a Roboflow export (per its docs): <split>/<stem>.jpg, <stem>_mask.png, _classes.csv; return the masks."""
    masks = {}
    for folder, stems in splits.items():
        (root / folder).mkdir(parents=True)
        rows = ["Pixel Value, Class"] + [f"{v}, {name}" for v, name in enumerate(classes)]
        (root / folder / "_classes.csv").write_text("\n".join(rows) + "\n")
        for k, stem in enumerate(stems):
            Image.fromarray(np.full((6, 8, 3), 40 * k, np.uint8)).save(root / folder / f"{stem}.jpg")
            masks[f"{folder}/{stem}"] = label(k)
            Image.fromarray(label(k), mode="L").save(root / folder / f"{stem}_mask.png")
    return masks


def write_config(tmp_path: Path, root: Path) -> Path:
    """Write the config a Roboflow user writes: two lines, no classes, no num_classes."""
    config = tmp_path / "rf.yml"
    train, val = (
        {"name": "roboflow", "root": str(root)},
        {"name": "roboflow", "root": str(root), "split": "val"},
    )
    config.write_text(yaml.safe_dump({"data": {"train": train, "val": val}}))
    return config


def test_classes_come_from_classes_csv_printed_once_and_num_classes_inferred(tmp_path, capsys):
    root = tmp_path / "export"
    write_export(root, {"train": ["a", "b"], "valid": ["c"]})
    cfg = load_config([str(write_config(tmp_path, root))])
    assert cfg.model.num_classes == 3
    assert class_names(cfg.data) == CLASSES and class_names(cfg.data) == CLASSES
    out = capsys.readouterr().out
    assert out.count("roboflow: 3 classes from") == 1
    assert f"roboflow: 3 classes from {root}/valid/_classes.csv: background=0, cat=1, dog=2" in out


def test_check_counts_the_pixels_of_the_masks_written_and_items_read_exactly(tmp_path, capsys):
    root = tmp_path / "export"
    masks = write_export(root, {"train": ["a", "b"], "valid": ["c"]})
    code = main(["--config", str(write_config(tmp_path, root)), "data.num_workers=0"])
    out = capsys.readouterr().out
    assert code == 0, out
    for key, folder in (("data.train", "train"), ("data.val", "valid")):
        expected = sum(np.bincount(m.ravel(), minlength=3) for k, m in masks.items() if k.startswith(folder))
        assert counts_table(out, key) == {**{c: int(expected[c]) for c in range(3)}, 255: 0}
    cfg = load_config([str(write_config(tmp_path, root))])
    train = build_dataset(cfg.data.train, cfg.data)
    assert train.ids == ["a", "b"]
    for k, stem in enumerate(train.ids):
        np.testing.assert_array_equal(train[k][1], masks[f"train/{stem}"])


def test_a_val_folder_reads_as_valid(tmp_path):
    root = tmp_path / "export"
    write_export(root, {"train": ["a"], "val": ["c"]})
    cfg = load_config([str(write_config(tmp_path, root))])
    assert build_dataset(cfg.data.val, cfg.data).ids == ["c"]


def test_a_grey_value_no_row_names_is_one_line_naming_the_mask(tmp_path, capsys):
    root = tmp_path / "export"
    write_export(root, {"train": ["a"], "valid": ["c"]})
    Image.fromarray(np.full((6, 8), 7, np.uint8), mode="L").save(root / "train" / "a_mask.png")
    code = main(["--config", str(write_config(tmp_path, root)), "data.num_workers=0"])
    out = capsys.readouterr().out
    assert code == 1
    assert f"{root}/train/a_mask.png: labels [7] are outside 0..2" in out


@pytest.mark.parametrize(
    "rows, error",
    [
        (
            ["Pixel Value, Class", "0, background", "x, cat"],
            "line 3 'x,cat' is not 'pixel value, class name'",
        ),
        (["Pixel Value, Class", "0, background", "2, cat"], "pixel values [0, 2] are not 0..1"),
    ],
)
def test_a_bad_classes_csv_is_one_line_naming_it(tmp_path, rows, error):
    root = tmp_path / "export"
    write_export(root, {"train": ["a"], "valid": ["c"]})
    (root / "train" / "_classes.csv").write_text("\n".join(rows) + "\n")
    cfg = load_config([str(write_config(tmp_path, root))], ["data.classes=[a,b,c]"])
    with pytest.raises(ValueError) as info:
        build_dataset(cfg.data.train, cfg.data)
    assert str(info.value).startswith(f"{root}/train/_classes.csv: {error}")
    assert "\n" not in str(info.value)


def test_an_image_without_its_mask_is_named(tmp_path, capsys):
    root = tmp_path / "export"
    write_export(root, {"train": ["a", "b"], "valid": ["c"]})
    (root / "train" / "b_mask.png").unlink()
    code = main(["--config", str(write_config(tmp_path, root)), "data.num_workers=0"])
    assert code == 1
    assert f"{root}/train/b_mask.png: no such mask for b.jpg" in capsys.readouterr().out
