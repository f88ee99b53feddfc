"""The issue's bars for data.task binary and multilabel (#32): the toy sets train, on the starter recipe
with the CPU check's ResNet-18 from scratch and 64x64 crops, to an IoU on held-out toy images (another
seed): multilabel to mean IoU 0.7 with the overlap predicted as both; binary (thin scratches) to
foreground IoU 0.7 with binary.yml's FCN-4s."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

RECIPE = ["predefined_configs/starter.yml", "predefined_configs/cpu_check.yml"]


def _train_and_score(tmp_path: Path, task: str, iters: int, size: int = 64) -> tuple[dict, Path, Path]:
    """Return (evaluate.py's report on a held-out toy set, its root, the checkpoint) of a run of
    predefined_configs/<task>.yml over the CPU check on a generated toy set."""
    from fcn.config import load_config
    from fcn.data.toy import generate
    from fcn.inference.evaluation import evaluate_checkpoint
    from fcn.training.loop import fit

    train, held_out = tmp_path / "train", tmp_path / "held_out"
    generate(train, seed=0, n_train=160, n_val=16, size=size, workers=1, fmt="pairs", task=task)
    generate(held_out, seed=1, n_train=1, n_val=24, size=size, workers=1, fmt="pairs", task=task)
    overrides = [
        *(f"data.{s}.{k}={train}/{s}/{k}" for s in ("train", "val") for k in ("images", "masks")),
        f"training.run_dir={tmp_path / 'run'}",
        "training.device=cpu",
        "training.amp=none",  # fp32 on every CPU: the bar is the recipe's, not a precision's
        f"training.iters={iters}",
        f"training.eval_every={iters}",
        "training.vis_images=0",
        "data.batch_size=8",
        "data.num_workers=0",
        "data.transforms.crop_size=64",
        "optimizer.lr=3.0e-3",
        "schedule.warmup_iters=20",
    ]
    cfg = load_config([*RECIPE, f"predefined_configs/{task}.yml"], overrides)
    fit(cfg)
    checkpoint = tmp_path / "run" / "checkpoints" / "last.pt"
    held = [f"data.val.{k}={held_out}/val/{k}" for k in ("images", "masks")]
    report, _ = evaluate_checkpoint(checkpoint, overrides=held, device="cpu", progress=False)
    return report, held_out, checkpoint


@pytest.mark.slow
def test_binary_toy_trains_to_foreground_iou_0_7_on_held_out_images(tmp_path):
    """binary.yml's FCN-4s (scores every 4 px, FCN heads) on the 5-7 px scratches: 0.775 and 0.782 on
    the held-out images in 800 iterations with training seeds 0 and 1 (docs/performance.md), where
    the paper's FCN-8s reached 0.64: its scores every 8 px, upsampled bilinearly, cannot place the
    edges of a line that falls between two of them."""
    # 96x96 images (64x64 crops): a scratch 5-7 px wide keeps its width in the stride-4 scores
    report, _, _ = _train_and_score(tmp_path, "binary", 800, size=96)
    assert report["num_images"] == 24
    assert report["per_class"]["scratch"]["iou"] >= 0.7, report["per_class"]


@pytest.mark.slow
def test_multilabel_toy_trains_to_mean_iou_0_7_and_predicts_the_overlap_as_both(tmp_path):
    from fcn.api import Segmenter
    from fcn.data.common import read_multilabel_mask

    report, held_out, checkpoint = _train_and_score(tmp_path, "multilabel", 200)
    assert report["mean_iou"] >= 0.7, report["per_class"]
    seg = Segmenter.from_checkpoint(checkpoint, device="cpu")
    both = right = 0
    for image in sorted((held_out / "val" / "images").iterdir()):
        truth = read_multilabel_mask(held_out / "val" / "masks" / "disc" / image.name, ["disc", "band"])
        overlap = truth.all(0)
        assert overlap.sum() >= 0.2 * truth.sum(axis=(1, 2)).max()  # the toy's overlap: a fifth of each
        both += int(overlap.sum())
        right += int((seg(image).all(0) & overlap).sum())  # predicted as disc and as band
    assert right >= 0.8 * both, (right, both)


def test_toy_sets_are_what_the_bar_asks_for(tmp_path):
    """Binary: thin foreground, present and under 10% of the pixels; multilabel: classes
    overlapping on >= 20% of each."""
    from fcn.data.toy import make_binary_sample, make_multilabel_sample

    for i in range(20):
        _, mask = make_binary_sample(np.random.default_rng(i), 96)
        assert 0 < mask.mean() < 0.1
        _, masks = make_multilabel_sample(np.random.default_rng(i), 96)
        overlap = masks.all(0).sum()
        assert overlap >= 0.2 * masks[0].sum() and overlap >= 0.2 * masks[1].sum()
