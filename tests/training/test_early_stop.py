"""training.early_stop_patience: the run stops after that many evaluations without a better mean IU,
keeps best.pt, and a resumed run goes on counting from last.pt."""

from __future__ import annotations

import pytest
import torch

import fcn.training.validate
from fcn.config import ConfigError, load_config
from fcn.core.checkpoint import save_checkpoint
from fcn.training.loop import fit
from tests.helpers import toy_overrides


@pytest.fixture(scope="module")
def toy_root(tmp_path_factory):
    from fcn.data.toy import generate

    root = tmp_path_factory.mktemp("toy")
    generate(root, seed=0, n_train=8, n_val=2, size=32)
    return root


@pytest.fixture
def flat_scores(monkeypatch):
    """Make every evaluation score the given mean IUs in turn (then the last one forever)."""

    def use(*scores: float) -> list[int]:
        calls: list[int] = []

        def evaluate(model, loader, num_classes, device, **kwargs):
            score = scores[min(len(calls), len(scores) - 1)]
            calls.append(1)
            n = num_classes
            return {
                "pixel_acc": score,
                "mean_acc": score,
                "mean_iou": score,
                "fwavacc": score,
                "iou": [score] * n,
                "acc": [score] * n,
                "confusion": torch.eye(n, dtype=torch.long).tolist(),
            }

        monkeypatch.setattr(fcn.training.validate, "evaluate", evaluate)
        return calls

    return use


def _cfg(root, run_dir, *extra):
    return load_config(
        overrides=toy_overrides(root, run_dir, "training.eval_every=2", "training.vis_images=0", *extra)
    )


def test_a_run_that_cannot_improve_stops_after_patience_evaluations(toy_root, tmp_path, flat_scores, capsys):
    run = tmp_path / "run"
    flat_scores(0.5)  # the first evaluation sets the best; none after it is better
    summary = fit(_cfg(toy_root, run, "training.iters=40", "training.early_stop_patience=3"))
    assert summary["stopped_early"] and summary["iteration"] == 8  # evaluations at 2 (best), 4, 6, 8
    assert summary["best_miou"] == 0.5
    lines = [line for line in capsys.readouterr().out.splitlines() if "early stop" in line]
    assert lines == [
        f"early stop at iteration 8: no better mean IU in 3 evaluations (best 0.5000, kept in {run / 'checkpoints' / 'best.pt'})"
    ]
    best = torch.load(run / "checkpoints" / "best.pt", weights_only=True)
    assert best["iteration"] == 2
    assert torch.load(run / "checkpoints" / "last.pt", weights_only=True)["evals_since_best"] == 3
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run), size_guidance={"images": 0})
    events.Reload()
    for tag in ("val/confusion", "val/iou"):  # the pictures of the errors, at each evaluation
        assert [e.step for e in events.Images(tag)] == [2, 4, 6, 8]


def test_an_improving_run_and_patience_zero_run_to_the_end(toy_root, tmp_path, flat_scores):
    flat_scores(0.1, 0.2, 0.3, 0.4, 0.5)
    assert (
        fit(_cfg(toy_root, tmp_path / "a", "training.iters=10", "training.early_stop_patience=1"))[
            "iteration"
        ]
        == 10
    )
    flat_scores(0.5)
    summary = fit(_cfg(toy_root, tmp_path / "b", "training.iters=10"))
    assert summary["iteration"] == 10 and not summary["stopped_early"]


@pytest.mark.slow
def test_a_resumed_run_goes_on_counting_and_an_older_checkpoint_starts_at_zero(
    toy_root, tmp_path, flat_scores
):
    run = tmp_path / "run"
    flat_scores(0.5)
    fit(_cfg(toy_root, run, "training.iters=6"))  # evaluations at 2 (best), 4, 6: two without a better one
    last = run / "checkpoints" / "last.pt"
    assert torch.load(last, weights_only=True)["evals_since_best"] == 2
    resumed = ("training.iters=40", "training.early_stop_patience=3", "training.resume=auto")
    assert fit(_cfg(toy_root, run, *resumed))["iteration"] == 8  # the third at 8

    older = tmp_path / "older"
    fit(_cfg(toy_root, older, "training.iters=6"))
    state = torch.load(older / "checkpoints" / "last.pt", weights_only=True)
    del state["evals_since_best"]  # a checkpoint written before the count existed
    save_checkpoint(state, older / "checkpoints" / "last.pt")
    assert fit(_cfg(toy_root, older, *resumed))["iteration"] == 12  # 8, 10, 12


def test_negative_patience_is_rejected():
    with pytest.raises(ConfigError, match="training.early_stop_patience=-1 must be >= 0"):
        load_config(overrides=["training.early_stop_patience=-1"])
