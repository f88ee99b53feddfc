"""Fixtures shared by the test modules (module-scoped where building them takes seconds)."""

from __future__ import annotations

import pytest

from fcn.config import load_config, to_dict
from fcn.core.checkpoint import save_checkpoint
from tests.helpers import (
    _brightness_detector,
    _brightness_logit,
    _overrides,
    _pairs,
    _write_binary_pairs,
    _write_folder_dataset,
)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """Return (dataset root, ids, checkpoint path): the brightness detector's weights as 'model' and
    those weights times 0.5 as 'ema' (a different, recognisable set)."""
    tmp = tmp_path_factory.mktemp("evalpredict")
    root = tmp / "data"
    ids = _write_folder_dataset(root)
    cfg = load_config(overrides=_overrides(root))
    model = _brightness_detector(cfg)
    ema = {k: (v * 0.5 if v.dtype.is_floating_point else v) for k, v in model.state_dict().items()}
    path = tmp / "best.pt"
    save_checkpoint(
        {"version": 1, "model": model.state_dict(), "ema": ema, "iteration": 0, "config": to_dict(cfg)}, path
    )
    return root, ids, path


@pytest.fixture(scope="module")
def binary_setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("binary")
    root = tmp / "data"
    _write_binary_pairs(root)
    overrides = [
        "model.arch=fcn8s",
        "model.backbone=resnet18",
        "model.geometry=same",
        "model.pretrained=false",
        *_pairs("binary", "[bright]", ["loss.terms=[{name: bce}]", "data.num_workers=0"]),
        f"data.train.images={root}/images",
        f"data.train.masks={root}/masks",
        f"data.val.images={root}/images",
        f"data.val.masks={root}/masks",
    ]
    cfg = load_config(overrides=overrides)
    model = _brightness_logit(cfg)
    path = tmp / "best.pt"
    save_checkpoint({"version": 1, "model": model.state_dict(), "iteration": 0, "config": to_dict(cfg)}, path)
    return root, path, model, cfg
