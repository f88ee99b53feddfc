"""data.val_fraction: one export, two splits (a share of data.train's items held out by a hash of the name)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fcn.config import ConfigError, load_config
from fcn.core import distributed
from fcn.data import build_dataset
from fcn.data.check import main as check_main
from fcn.data.listing import held_out
from fcn.training.loop import _setup_data

CLASSES = ["background", "thing"]


def write_export(root: Path, names: list[str]) -> None:
    """Write one 'pairs' subset: images/<name>.png and masks/<name>.png, 4x4, the mask's label 1 in
    a corner that differs per item (so an item's mask says which item it is)."""
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(parents=True, exist_ok=True)
    for name in names:
        Image.fromarray(np.full((4, 4, 3), 128, np.uint8)).save(root / "images" / f"{name}.png")
        Image.fromarray(np.zeros((4, 4), np.uint8)).save(root / "masks" / f"{name}.png")


def overrides(root: Path, share: float, *extra: str) -> list[str]:
    """Return the overrides of a config whose data.train and data.val both read the export at root."""
    keys = ["name=pairs", "split=train", f"images={root / 'images'}", f"masks={root / 'masks'}"]
    return [
        *(f"data.{split}.{k}" for split in ("train", "val") for k in keys),
        f"data.classes=[{','.join(CLASSES)}]",
        f"data.val_fraction={share}",
        "data.num_workers=0",
        *extra,
    ]


def split(root: Path, share: float) -> tuple[list[str], list[str]]:
    """Return (data.train's ids, data.val's ids) as build_dataset reads them."""
    cfg = load_config([], overrides(root, share))
    return build_dataset(cfg.data.train, cfg.data).ids, build_dataset(cfg.data.val, cfg.data).ids


NAMES = [f"frame_{k:03d}" for k in range(60)]


def test_an_item_is_held_out_when_sha256_of_its_name_is_below_the_share():
    for name in NAMES:
        value = int(hashlib.sha256(name.encode()).hexdigest()[:16], 16) / 2**64  # the first 8 bytes
        assert held_out(name, 0.3) == (value < 0.3)
    assert not any(held_out(n, 0.0) for n in NAMES)


def test_the_two_splits_are_disjoint_cover_the_export_and_repeat(tmp_path):
    write_export(tmp_path / "export", NAMES)
    train, val = split(tmp_path / "export", 0.25)
    assert not set(train) & set(val)
    assert sorted(train + val) == sorted(NAMES)
    assert 0 < len(val) < len(NAMES) // 2  # about a quarter of 60
    assert split(tmp_path / "export", 0.25) == (train, val)  # deterministic
    assert set(val) == {n for n in NAMES if held_out(n, 0.25)}


def test_items_keep_their_side_when_items_are_added(tmp_path):
    write_export(tmp_path / "export", NAMES[:30])
    train, val = split(tmp_path / "export", 0.3)
    write_export(tmp_path / "export", [f"new_{k}" for k in range(40)] + NAMES[30:])
    train2, val2 = split(tmp_path / "export", 0.3)
    assert set(val) <= set(val2) and set(train) <= set(train2)
    assert not set(train2) & set(val2)


def test_train_and_the_check_say_it_first(tmp_path, capsys):
    write_export(tmp_path / "export", NAMES)
    held = sum(held_out(n, 0.2) for n in NAMES)
    line = (
        f"data.val_fraction=0.2: {held} of {len(NAMES)} items of data.train held out for validation "
        "(by a hash of the item name)"
    )
    cfg = load_config([], overrides(tmp_path / "export", 0.2, "data.batch_size=2"))
    train_set, val_set, _ = _setup_data(cfg, distributed.env_info())
    assert (len(train_set), len(val_set)) == (len(NAMES) - held, held)
    assert capsys.readouterr().out.splitlines()[0] == line
    assert check_main(overrides(tmp_path / "export", 0.2)) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == line
    assert "data.train (pairs" in out[1] and f"{len(NAMES) - held} good pairs" in out[1]


def test_it_is_a_one_line_config_error_when_val_names_another_source(tmp_path):
    root = tmp_path / "export"
    with pytest.raises(
        ConfigError, match=r"data.val_fraction=0.2 holds out items of data.train, but data.val.masks="
    ):
        load_config([], overrides(root, 0.2, f"data.val.masks={tmp_path / 'other'}"))
    with pytest.raises(ConfigError, match=r"data.val_fraction=1.0 must be 0 \(off\) or a share below 1"):
        load_config([], overrides(root, 1.0))
    with pytest.raises(ConfigError, match="names none"):
        load_config(
            [],
            [
                "data.train.name=my.module:Data",
                "data.val.name=my.module:Data",
                f"data.classes=[{','.join(CLASSES)}]",
                "data.val_fraction=0.2",
            ],
        )
    cfg = load_config([], overrides(root, 0.0, f"data.val.masks={tmp_path / 'other'}"))  # off: any data.val
    assert cfg.data.val_fraction == 0
