"""The toy dataset: VOC layout readable as a 'folder' dataset, deterministic, colour does not tell the class."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import pytest

from fcn.config import load_config
from fcn.data import FolderSegmentation, build_dataset, read_classes
from fcn.data.toy import TOY_CLASSES, TOY_PALETTE, generate, main


def digest(root: Path) -> str:
    """Return one hash over every file's relative path and bytes under `root`."""
    h = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        h.update(str(path.relative_to(root)).encode())
        h.update(path.read_bytes())
    return h.hexdigest()


@pytest.fixture(scope="module")
def toy(tmp_path_factory) -> Path:
    """Return a small toy dataset (60 train, 8 val, 48x48)."""
    root = tmp_path_factory.mktemp("toy") / "toy"
    assert generate(root, seed=0, n_train=60, n_val=8, size=48, workers=1)
    return root


def test_toy_is_a_voc_layout_folder_dataset_with_its_classes_file(toy):
    names, colours = read_classes(toy / "classes.txt")
    assert names == list(TOY_CLASSES) and colours == [list(c) for c in TOY_PALETTE]
    train = FolderSegmentation(toy, "train", palette=colours)
    val = FolderSegmentation(toy, "val", palette=colours)
    assert train.ids[:2] == ["train_00000", "train_00001"] and len(train) == 60 and len(val) == 8
    assert not set(train.ids) & set(val.ids)
    image, mask = val[3]
    assert (
        image.mode == "RGB" and image.size == (48, 48) and mask.shape == (48, 48) and mask.dtype == np.uint8
    )
    labels = set()
    for k in range(len(train)):
        labels |= set(np.unique(train[k][1]).tolist())
    assert labels == {0, 1, 2, 3, 255}  # every class and the void band between regions


def test_toy_loads_from_the_config_as_a_folder_dataset(toy):
    cfg = load_config(
        overrides=[
            "data.train.name=folder",
            f"data.train.root={toy}",
            "data.val.name=folder",
            f"data.val.root={toy}",
            "data.val.split=val",
            f"model.num_classes={len(TOY_CLASSES)}",
            f"data.classes=[{','.join(TOY_CLASSES)}]",
        ]
    )
    assert len(build_dataset(cfg.data.val, cfg.data)) == 8


def test_toy_is_deterministic_from_the_seed_whatever_the_worker_count(toy, tmp_path):
    assert generate(tmp_path / "same", seed=0, n_train=60, n_val=8, size=48, workers=2)
    assert digest(tmp_path / "same") == digest(toy)
    generate(tmp_path / "other", seed=1, n_train=60, n_val=8, size=48, workers=1)
    assert digest(tmp_path / "other") != digest(toy)


def test_toy_colour_does_not_tell_the_class(toy):
    # Per-instance mean colours of each class spread over the whole range and have about the same
    # average, so a pixel's colour says nothing about whether it is a circle, a square or a triangle.
    ds = FolderSegmentation(toy, "train")
    means: dict[int, list[np.ndarray]] = {c: [] for c in range(len(TOY_CLASSES))}
    for k in range(len(ds)):
        image, mask = ds[k]
        rgb = np.asarray(image, dtype=np.float64)
        for c in np.unique(mask):
            if c != 255:
                means[int(c)].append(rgb[mask == c].mean(0))
    centres = {c: np.mean(v, 0) for c, v in means.items()}
    for c, v in means.items():
        assert len(v) >= 10, f"class {TOY_CLASSES[c]} too rare"
        assert np.std(v, 0).min() > 40, f"class {TOY_CLASSES[c]} has a narrow colour range"
        assert np.abs(centres[c] - centres[0]).max() < 45, f"class {TOY_CLASSES[c]} has its own colour"


def test_second_run_does_nothing_and_other_settings_are_refused(toy, tmp_path):
    before = {p: p.stat().st_mtime_ns for p in toy.rglob("*")}
    assert generate(toy, seed=0, n_train=60, n_val=8, size=48) is False
    assert {p: p.stat().st_mtime_ns for p in toy.rglob("*")} == before
    with pytest.raises(FileExistsError, match="made with .*'train': 60.*not .*'train': 61"):
        generate(toy, seed=0, n_train=61, n_val=8, size=48)
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "mine.txt").write_text("x")
    with pytest.raises(FileExistsError, match="not a complete toy dataset"):
        generate(tmp_path / "busy", n_train=2, n_val=1, size=32)


def test_command_line_writes_then_reports_already_present(tmp_path, capsys):
    args = ["--root", str(tmp_path / "t"), "--train", "3", "--val", "2", "--size", "32", "--workers", "1"]
    assert main(args) == 0
    assert "wrote 3 train and 2 val images (32x32)" in capsys.readouterr().out
    assert main(args) == 0
    assert "already present" in capsys.readouterr().out
    assert main(["--root", str(tmp_path / "u"), "--train", "0"]) == 2
    assert not (tmp_path / "u").exists() and not list(tmp_path.glob(".u.partial*"))


def test_command_line_into_a_folder_of_other_files_is_one_error_line_and_exit_2(tmp_path, capsys):
    busy = tmp_path / "photos"
    busy.mkdir()
    (busy / "mine.jpg").write_bytes(b"not yours")
    assert main(["--root", str(busy), "--train", "2", "--val", "1", "--size", "32", "--workers", "1"]) == 2
    err = capsys.readouterr().err
    assert err.splitlines() == [
        f"error: {busy} exists and is not a complete toy dataset; remove it or choose another --root"
    ]
    assert [p.name for p in tmp_path.iterdir()] == ["photos"] and os.listdir(busy) == ["mine.jpg"]
    assert (busy / "mine.jpg").read_bytes() == b"not yours"
