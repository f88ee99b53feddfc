"""The checkpoint format: atomic writes, safe loads with one-line errors, the schema, unwrapping,
and exact RNG round trips."""

import os
import random

import numpy as np
import pytest
import torch

from fcn.core.checkpoint import (
    CHECKPOINT_VERSION,
    CheckpointError,
    bare_state_dict,
    capture_rng_state,
    describe_mismatch,
    load_checkpoint,
    model_weights,
    restore_rng_state,
    save_checkpoint,
    training_checkpoint,
    unwrap,
    weights_checkpoint,
)
from fcn.core.files import atomic_write


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


class _Wrapper(torch.nn.Module):
    """Stands for DistributedDataParallel: the wrapped model as `.module`."""

    def __init__(self, module: torch.nn.Module) -> None:
        super().__init__()
        self.module = module


def test_unwrap_reaches_the_bare_model_through_compile_and_ddp_wrappers():
    bare = torch.nn.Conv2d(3, 4, 1)
    wrapped = _Wrapper(torch.compile(bare))  # compile is lazy: nothing is compiled here
    assert unwrap(wrapped) is bare and unwrap(bare) is bare
    assert set(wrapped.state_dict()) == {"module._orig_mod.weight", "module._orig_mod.bias"}
    assert bare_state_dict(wrapped.state_dict()).keys() == bare.state_dict().keys()


def test_bare_state_dict_drops_averaged_models_counter_and_keeps_plain_names():
    ema = {"module.w": torch.ones(1), "n_averaged": torch.tensor(3)}
    assert list(bare_state_dict(ema)) == ["w"]
    plain = {"module_count": torch.ones(1), "w": torch.ones(1)}  # not every key prefixed: unchanged
    assert bare_state_dict(plain) is not plain and list(bare_state_dict(plain)) == ["module_count", "w"]


def test_the_two_checkpoint_kinds_hold_their_schema_and_load_back(tmp_path):
    model = torch.nn.Linear(2, 3)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda i: 1.0)
    sampler = {"epoch": 1, "batch": 2, "images": 8}
    resumable = training_checkpoint(
        model=_Wrapper(model), ema=None, optimizer=optimizer, scheduler=scheduler, scaler=None,
        iteration=5, epoch=1, best_miou=0.25, sampler=sampler, config={"a": 1},
    )  # fmt: skip
    assert set(resumable) == {
        "version", "model", "ema", "optimizer", "scheduler", "scaler", "iteration", "epoch",
        "best_miou", "evals_since_best", "rng", "sampler", "config",
    }  # fmt: skip
    weights = weights_checkpoint(model=model, config={"a": 1}, iteration=5, best_miou=0.25)
    assert set(weights) == {"version", "model", "ema", "config", "iteration", "best_miou"}
    for name, state in (("last.pt", resumable), ("best.pt", weights)):
        save_checkpoint(state, tmp_path / name)
        loaded = load_checkpoint(tmp_path / name)
        assert loaded["version"] == CHECKPOINT_VERSION and set(loaded["model"]) == {"weight", "bias"}
        assert model_weights(loaded, use_ema=True)[1] == "model"  # no EMA: the model's weights
    with pytest.raises(TypeError, match="unexpected"):
        weights_checkpoint(model=model, config={}, optimizer=1)


def test_a_checkpoint_without_a_version_key_is_read_as_version_1(tmp_path):
    torch.save({"model": {}, "config": {}}, tmp_path / "old.pt")
    assert load_checkpoint(tmp_path / "old.pt") == {"model": {}, "config": {}}


def test_describe_mismatch_names_missing_unexpected_and_reshaped_tensors():
    expected = {"a": torch.zeros(2, 3), "b": torch.zeros(1), "c": torch.zeros(4)}
    given = {"a": torch.zeros(4, 3), "c": torch.zeros(4), "d": torch.zeros(1)}
    assert describe_mismatch(expected, expected) == ""
    text = describe_mismatch(expected, given)
    assert "1 of 3 missing (e.g. b)" in text and "1 unexpected (e.g. d)" in text
    assert "a: (4, 3) given, (2, 3) expected" in text
    assert "unexpected" not in describe_mismatch(expected, given, unexpected=False)


def test_atomic_write_gives_the_usual_mode_and_leaves_nothing_on_failure(tmp_path):
    path = tmp_path / "sub" / "x.txt"
    atomic_write(path, lambda tmp: tmp.write_text("one"))
    umask = os.umask(0)
    os.umask(umask)
    assert path.read_text() == "one" and path.stat().st_mode & 0o777 == 0o666 & ~umask

    def fail(tmp):
        tmp.write_text("partial")
        raise ValueError("not an OS error: raised as it is")

    with pytest.raises(ValueError, match="as it is"):
        atomic_write(path, fail)
    assert path.read_text() == "one" and os.listdir(path.parent) == ["x.txt"]
