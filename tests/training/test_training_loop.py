"""End-to-end training on a tiny generated dataset: run directory, resume, staged init, accumulation."""

from __future__ import annotations

import json
import math
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from fcn.config import load_config
from fcn.data.loaders import EpochBatchSampler
from fcn.training.loop import fit, lr_factor, segmentation_loss
from tests.helpers import REPO, python_env, toy_overrides


@pytest.fixture(scope="module")
def toy_root(tmp_path_factory) -> Path:
    from fcn.data.toy import generate

    root = tmp_path_factory.mktemp("toy")
    generate(root, seed=0, n_train=24, n_val=6, size=32)
    return root


def test_sampler_splits_ranks_and_resumes_mid_epoch():
    full = EpochBatchSampler(10, 2, seed=3)
    batches = list(full)
    assert len(batches) == 5 and sorted(i for b in batches for i, _ in b) == list(range(10))
    full.set_position(0, 3)
    assert list(full) == batches[3:]
    ranks = [EpochBatchSampler(9, 2, seed=3, rank=r, world_size=2) for r in range(2)]
    seen = [i for s in ranks for b in s for i, _ in b]
    assert len(seen) == 8 and set(seen) <= set(range(9))
    full.set_position(1, 0)
    assert list(full) != batches  # a new epoch reshuffles


def test_lr_schedules_warm_up_and_decay():
    cfg = load_config(
        overrides=["schedule.name=poly", "schedule.warmup_iters=10", "schedule.warmup_factor=0.1"]
    )
    assert lr_factor(0, 100, cfg) == pytest.approx(0.1)
    assert lr_factor(50, 100, cfg) == pytest.approx(0.5**0.9)
    assert lr_factor(100, 100, cfg) == pytest.approx(0.0)
    fixed = load_config()
    assert lr_factor(77, 100, fixed) == 1.0


def test_loss_normalized_is_summed_over_labelled_pixels():
    logits = torch.randn(2, 3, 4, 5)
    masks = torch.randint(0, 3, (2, 4, 5))
    masks[0, 0] = 255
    summed = segmentation_loss(logits, masks, normalize=False)
    mean = segmentation_loss(logits, masks, normalize=True)
    assert mean.item() == pytest.approx(summed.item() / (masks != 255).sum().item(), rel=1e-6)
    assert segmentation_loss(logits, torch.full_like(masks, 255), normalize=True).item() == 0.0


def _logged_losses(run_dir: Path) -> dict[int, float]:
    """Return {iteration: loss} of the run's TensorBoard scalar train/loss."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    events.Reload()
    return {e.step: e.value for e in events.Scalars("train/loss")}


@pytest.mark.slow
def test_fit_writes_the_run_directory_and_logs_the_loss(toy_root, tmp_path):
    run = tmp_path / "run"
    extra = ("training.iters=24", "training.eval_every=6", "training.log_every=1")
    cfg = load_config(overrides=toy_overrides(toy_root, run, *extra))
    summary = fit(cfg)
    assert summary["iteration"] == 24
    assert (run / "config.yml").is_file()
    assert (run / "checkpoints" / "last.pt").is_file() and (run / "checkpoints" / "best.pt").is_file()
    assert list(run.glob("events.out.tfevents.*"))
    assert len(list((run / "vis").glob("iter_*.png"))) == 4
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in records] == [6, 12, 18, 24]
    assert {"pixel_acc", "mean_acc", "mean_iou", "fwavacc", "iou", "train_loss"} <= set(records[0])
    # Not "the loss falls", which is what 24 steps happen to do on a given CPU, but what holds on any:
    # the score layers start at zero, so every logit of the first step is 0 and its loss ln(4 classes);
    # each record's train_loss is the mean of the steps' losses since the previous evaluation.
    losses = _logged_losses(run)
    assert sorted(losses) == list(range(1, 25))
    assert losses[1] == pytest.approx(math.log(4), rel=1e-5)
    for record in records:
        since = [losses[i] for i in range(record["iteration"] - 5, record["iteration"] + 1)]
        assert record["train_loss"] == pytest.approx(sum(since) / 6, rel=1e-5)
    ckpt = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    assert ckpt["iteration"] == 24 and ckpt["config"]["model"]["arch"] == "fcn8s"
    assert ckpt["model"]["score_fr.weight"].abs().sum() > 0  # it trained: the score layers left zero


def _run_train(args: list[str], **kwargs) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, str(REPO / "train.py"), *args],
        cwd=REPO,
        env=python_env(OMP_NUM_THREADS="1"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kwargs,
    )


@pytest.mark.slow
def test_killed_and_resumed_run_equals_uninterrupted_run_bitwise(toy_root, tmp_path):
    extra = (
        "training.iters=10",
        "training.eval_every=5",
        "training.checkpoint_every=1",
        "training.deterministic=true",
        "training.vis_images=0",
        "data.mixing.cutmix_p=0.5",
        "data.transforms.hflip=true",
        "data.transforms.scale_min=0.75",
        "data.transforms.scale_max=1.25",
        "model.dropout_p=0.5",
    )
    straight = _run_train(toy_overrides(toy_root, tmp_path / "a", *extra))
    out, err = straight.communicate(timeout=300)
    assert straight.returncode == 0, err

    run_b = tmp_path / "b"
    victim = _run_train(toy_overrides(toy_root, run_b, *extra))
    last = run_b / "checkpoints" / "last.pt"
    deadline = time.time() + 240
    while time.time() < deadline:
        if last.is_file() and torch.load(last, weights_only=True)["iteration"] >= 3:
            break
        time.sleep(0.05)
    victim.send_signal(signal.SIGKILL)
    victim.communicate()
    killed_at = torch.load(last, weights_only=True)["iteration"]
    assert 3 <= killed_at < 10, "the run finished before it could be killed"

    resumed = _run_train(toy_overrides(toy_root, run_b, *extra, "training.resume=auto"))
    out, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err
    assert f"resumed from {last} at iteration {killed_at}" in out + err

    a = torch.load(tmp_path / "a" / "checkpoints" / "last.pt", weights_only=True)
    b = torch.load(last, weights_only=True)
    assert a["iteration"] == b["iteration"] == 10
    for name, tensor in a["model"].items():
        assert torch.equal(tensor, b["model"][name]), name
    for state_a, state_b in zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values()):
        for key in state_a:
            assert torch.equal(state_a[key], state_b[key])


class TinyNet(torch.nn.Module):
    """A BatchNorm-free stand-in for an FCN: accumulation is exact only without BatchNorm."""

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.conv1 = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.conv2 = torch.nn.Conv2d(8, num_classes, 3, padding=1)

    def forward(self, x):
        return self.conv2(torch.relu(self.conv1(x)))


@pytest.mark.parametrize("normalize", [True, False])
def test_gradient_accumulation_of_k_batches_of_one_equals_one_batch_of_k(
    toy_root, tmp_path, monkeypatch, normalize
):
    import fcn.models

    monkeypatch.setattr(fcn.models, "build_model", lambda model_cfg: TinyNet(model_cfg.num_classes))
    common = (
        f"loss.normalize={str(normalize).lower()}",
        "optimizer.name=sgd",
        f"optimizer.lr={0.1 if normalize else 1e-4}",
        "optimizer.momentum=0.9",
        "training.iters=3",
        "training.vis_images=0",
        "data.transforms.scale_min=0.75",  # random scales: labelled pixel counts differ per image
    )
    results = {}
    for name, batch, accumulate in (("one", 4, 1), ("acc", 1, 4)):
        run = tmp_path / name
        overrides = toy_overrides(
            toy_root, run, *common, f"data.batch_size={batch}", f"training.accumulate={accumulate}"
        )
        assert fit(load_config(overrides=overrides))["iteration"] == 3
        results[name] = torch.load(run / "checkpoints" / "last.pt", weights_only=True)["model"]
    torch.manual_seed(0)  # training.seed: fit() builds the model right after seeding
    start = TinyNet(4).state_dict()
    for name, value in results["one"].items():
        # The same sums in another order (per image, then over images): equal up to fp32 rounding
        # (~1e-7 relative), which SGD passes on linearly over 3 steps.
        torch.testing.assert_close(value, results["acc"][name], rtol=1e-4, atol=1e-6)
        assert not torch.equal(value, start[name])  # it did train


@pytest.mark.slow
def test_staged_init_copies_the_previous_stage(toy_root, tmp_path, capsys):
    stage1 = tmp_path / "s1"
    base = ("training.iters=2", "training.vis_images=0")
    fit(load_config(overrides=toy_overrides(toy_root, stage1, *base, "model.arch=fcn32s")))
    ckpt = stage1 / "checkpoints" / "last.pt"
    fit(
        load_config(
            overrides=toy_overrides(
                toy_root,
                tmp_path / "s2",
                *base,
                "model.arch=fcn16s",
                f"model.init_from={ckpt}",
                "training.iters=1",
            )
        )
    )
    out = capsys.readouterr()
    line = next(x for x in (out.out + out.err).splitlines() if x.startswith("init_from"))
    copied, new = line.split("new", 1)
    assert "score_pool4.weight" in new and "upscore2" in new and "score_fr" not in new


def test_train_py_bad_key_is_one_line_and_nonzero(tmp_path):
    proc = _run_train(["model.archh=fcn8s"])
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 2
    lines = [x for x in err.strip().splitlines() if x]
    assert len(lines) == 1 and "model.archh" in lines[0] and "Traceback" not in err


def test_ema_channels_last_clipping_and_class_weights_run_and_are_recorded(toy_root, tmp_path, monkeypatch):
    import fcn.models

    monkeypatch.setattr(fcn.models, "build_model", lambda model_cfg: TinyNet(model_cfg.num_classes))
    run = tmp_path / "run"
    extra = (
        "training.iters=4",
        "training.eval_every=2",
        "training.ema_decay=0.5",
        "training.channels_last=true",
        "training.clip_grad_norm=0.01",
        "loss.class_weights=[1.0,2.0,2.0,2.0]",
        "schedule.name=cosine",
        "schedule.warmup_iters=2",
        "training.vis_images=0",
    )
    fit(load_config(overrides=toy_overrides(toy_root, run, *extra)))
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert all("ema" in r and 0.0 <= r["ema"]["mean_iou"] <= 1.0 for r in records)
    ckpt = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    ema, raw = ckpt["ema"], ckpt["model"]
    assert any(not torch.equal(ema[k], raw[k]) for k in raw)  # the average lags the weights
    lrs = [group["lr"] for group in ckpt["optimizer"]["param_groups"]]
    assert lrs[1] == pytest.approx(2 * lrs[0])  # biases at twice the rate (lr_mult 2)
