"""Atomic checkpoint writes, safe loads with one-line errors, and exact RNG round trips."""

import os
import random

import numpy as np
import pytest
import torch

from fcn.checkpoint import (
    CheckpointError,
    capture_rng_state,
    load_checkpoint,
    restore_rng_state,
    save_checkpoint,
)


def draw_all() -> tuple:
    """Return a few draws from every RNG a training run uses (gauss exercises the cached values)."""
    return (
        [random.random() for _ in range(3)] + [random.gauss(0, 1)],
        np.random.rand(3).tolist() + [np.random.standard_normal()],
        torch.rand(3).tolist() + torch.randn(1).tolist(),
    )


def test_save_load_round_trip(tmp_path):
    state = {
        "model": {"w": torch.arange(6.0).view(2, 3)},
        "iteration": 7,
        "best": 0.5,
        "name": "x",
        "opt": None,
    }
    path = tmp_path / "deep" / "dir" / "last.pt"
    save_checkpoint(state, path)
    loaded = load_checkpoint(path)
    assert torch.equal(loaded["model"]["w"], state["model"]["w"])
    assert {k: loaded[k] for k in ("iteration", "best", "name", "opt")} == {
        "iteration": 7,
        "best": 0.5,
        "name": "x",
        "opt": None,
    }
    assert os.listdir(path.parent) == ["last.pt"]


def test_rng_state_round_trip_through_checkpoint_restores_sequences(tmp_path):
    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    random.gauss(0, 1)  # leaves a cached gaussian in Python's state
    np.random.standard_normal()  # and in NumPy's
    save_checkpoint({"rng": capture_rng_state()}, tmp_path / "c.pt")
    expected = draw_all()
    draw_all()  # move every generator on
    restore_rng_state(load_checkpoint(tmp_path / "c.pt")["rng"])
    assert draw_all() == expected


def test_rng_state_holds_only_weights_only_types():
    def check(value, where):
        if isinstance(value, dict):
            for k, v in value.items():
                check(v, f"{where}.{k}")
        elif isinstance(value, (list, tuple)):
            for i, v in enumerate(value):
                check(v, f"{where}[{i}]")
        else:
            assert isinstance(value, (torch.Tensor, int, float, str)), f"{where} is {type(value).__name__}"

    check(capture_rng_state(), "rng")


def test_crash_during_save_keeps_previous_checkpoint_and_no_temp_file(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    save_checkpoint({"iteration": 1, "w": torch.ones(3)}, path)
    before = path.read_bytes()
    real_save = torch.save

    def crashing_save(obj, f, *args, **kwargs):
        real_save(obj, f, *args, **kwargs)
        f.truncate(10)  # half-written file, then the process "dies"
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", crashing_save)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint({"iteration": 2, "w": torch.zeros(3)}, path)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["last.pt"]
    monkeypatch.undo()
    assert load_checkpoint(path)["iteration"] == 1


def one_line_error(path, match):
    with pytest.raises(CheckpointError, match=match) as info:
        load_checkpoint(path)
    message = str(info.value)
    assert str(path) in message and "\n" not in message
    return message


def test_missing_file_raises_checkpoint_error(tmp_path):
    one_line_error(tmp_path / "nope.pt", "not found")


def test_corrupt_file_raises_checkpoint_error_naming_it(tmp_path):
    path = tmp_path / "corrupt.pt"
    path.write_bytes(b"this is not a checkpoint\n" * 10)
    one_line_error(path, "cannot load checkpoint")


def test_truncated_file_raises_checkpoint_error(tmp_path):
    path = tmp_path / "truncated.pt"
    save_checkpoint({"w": torch.randn(1000)}, path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    one_line_error(path, "cannot load checkpoint")


def test_not_a_dict_raises_checkpoint_error(tmp_path):
    path = tmp_path / "list.pt"
    torch.save([1, 2, 3], path)
    one_line_error(path, "holds a list, not a dict")


class Foreign:
    pass


def test_pickled_object_is_refused(tmp_path):
    path = tmp_path / "foreign.pt"
    torch.save({"obj": Foreign()}, path)
    one_line_error(path, "cannot load checkpoint")


def test_directory_raises_checkpoint_error(tmp_path):
    one_line_error(tmp_path, "is a directory")


def test_checkpoint_error_is_runtime_error():
    assert issubclass(CheckpointError, RuntimeError)


def test_save_rejects_non_dict(tmp_path):
    with pytest.raises(TypeError, match="must be a dict"):
        save_checkpoint([1], tmp_path / "x.pt")
    assert not os.listdir(tmp_path)
