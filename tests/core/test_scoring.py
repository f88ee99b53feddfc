"""fcn.core.scoring.Scorer: the compared metrics against torchmetrics (an independent implementation,
tests only), the absent-class rule, merging, and training's evaluation equal to evaluate.py's."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from fcn.config import load_config
from fcn.core.metrics import ConfusionMatrix
from fcn.core.scoring import Scorer

tm = pytest.importorskip("torchmetrics.classification")

N = 5
IGNORE = 255


def _cases() -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Return name -> (pred, target) (N, H, W) class-index maps, random and edge cases."""
    g = torch.Generator().manual_seed(0)
    target = torch.randint(0, N, (3, 23, 29), generator=g)
    pred = torch.where(
        torch.rand(target.shape, generator=g) < 0.6, target, torch.randint(0, N, target.shape, generator=g)
    )
    target[:, :4] = IGNORE
    absent = target.clone()
    absent[absent == 3] = 1  # class 3: only predicted
    absent_pred = pred.clone()
    absent_pred[absent_pred == 4] = 0  # class 4: only in the ground truth
    both = torch.where(target == 2, 0, target), torch.where(pred == 2, 0, pred)  # class 2: nowhere
    ignored = target.clone()
    ignored[1] = IGNORE  # one image all ignore
    one = torch.full((2, 9, 7), 1)
    return {
        "random": (pred, target),
        "only_predicted": (pred, absent),
        "only_in_truth": (absent_pred, target),
        "absent_everywhere": (both[1], both[0]),
        "an_all_ignore_image": (pred, ignored),
        "one_class": (one, one.clone()),
        "one_class_wrong": (one, torch.full((2, 9, 7), 3)),
    }


def _nanmean(values: torch.Tensor, defined: torch.Tensor) -> float:
    """The mean of values where defined (score.py's nan-mean, computed here on torchmetrics' values)."""
    return float(values[defined].double().mean()) if bool(defined.any()) else math.nan


@pytest.mark.parametrize("beta", [1.0, 0.5, 2.0])
@pytest.mark.parametrize("case", list(_cases()))
def test_every_compared_metric_equals_torchmetrics(case, beta):
    pred, target = _cases()[case]
    scorer = Scorer(N, ignore_index=IGNORE, fscore_beta=beta)
    scorer.update(pred, target)
    ours = scorer.compute()
    kw = dict(num_classes=N, ignore_index=IGNORE)
    valid = target != IGNORE
    truth = torch.bincount(target[valid], minlength=N) > 0
    predicted = torch.bincount(pred[valid], minlength=N) > 0
    either = truth | predicted
    metrics = {
        # key: (torchmetrics class, its extra arguments, where our per-class value is defined)
        "iou": (tm.MulticlassJaccardIndex, {}, either),
        "dice": (tm.MulticlassF1Score, {}, either),
        "fscore": (tm.MulticlassFBetaScore, {"beta": beta}, either),
        "precision": (tm.MulticlassPrecision, {}, predicted),
        "recall": (tm.MulticlassRecall, {}, truth),
    }
    for key, (metric, extra, defined) in metrics.items():
        per_class = metric(average=None, **kw, **extra)(pred, target)
        values = torch.tensor(ours[key], dtype=torch.float64)
        # Defined classes: the same ratio (torchmetrics in float32). Undefined (0/0): nan here,
        # torchmetrics' zero_division (0).
        assert torch.equal(values.isnan(), ~defined), key
        torch.testing.assert_close(values[defined], per_class[defined].double(), rtol=1e-6, atol=1e-7)
        assert bool((per_class[~defined] == 0).all())
        # The mean: our nan-mean is the mean over the defined classes of torchmetrics' per-class values.
        expected = _nanmean(per_class, defined)
        assert (math.isnan(ours[f"mean_{key}"]) and math.isnan(expected)) or ours[
            f"mean_{key}"
        ] == pytest.approx(expected, rel=1e-6), key
        macro = float(metric(average="macro", **kw, **extra)(pred, target))
        if key in ("iou", "dice", "fscore") and bool(defined.any()):
            # torchmetrics' macro leaves out the classes absent from both, as score.py: the same rule
            assert ours[f"mean_{key}"] == pytest.approx(macro, rel=1e-6), key
    # recall is the paper's per-class accuracy: mean recall = mean acc, bit for bit
    assert np.array_equal(ours["recall"], ours["acc"], equal_nan=True)
    assert ours["mean_recall"] == ours["mean_acc"] or math.isnan(ours["mean_acc"])


def test_macro_precision_and_recall_differ_from_torchmetrics_only_by_the_absent_class_rule():
    pred, target = _cases()["only_in_truth"]  # class 4 in the ground truth, never predicted
    scorer = Scorer(N, ignore_index=IGNORE)
    scorer.update(pred, target)
    ours = scorer.compute()
    macro = float(tm.MulticlassPrecision(num_classes=N, ignore_index=IGNORE, average="macro")(pred, target))
    assert math.isnan(ours["precision"][4])  # 0/0: left out here, counted as 0 by torchmetrics
    assert ours["mean_precision"] > macro
    assert macro == pytest.approx(sum(ours["precision"][:4]) / N, rel=1e-6)


def test_nothing_labelled_is_nan_everywhere():
    scorer = Scorer(N)
    scorer.update(torch.zeros(1, 3, 3, dtype=torch.long), torch.full((1, 3, 3), IGNORE))
    out = scorer.compute()
    for key in ("pixel_acc", "mean_acc", "mean_iou", "fwavacc", "mean_dice", "mean_fscore", "mean_precision"):
        assert math.isnan(out[key]), key


def test_paper_four_are_the_confusion_matrix_compute_bit_for_bit():
    pred, target = _cases()["random"]
    cm = ConfusionMatrix(N)
    cm.update(pred, target)
    scorer = Scorer(N)
    scorer.update(pred, target)
    ours, paper = scorer.compute(), cm.compute()
    for key in ("pixel_acc", "mean_acc", "mean_iou", "fwavacc", "iou", "acc"):
        assert ours[key] == paper[key], key
    assert ours["confusion"] == cm.mat.tolist()


def test_logits_and_labels_count_alike_and_merge_equals_one_pass():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(4, N + 3, 8, 9, generator=g)
    target = torch.stack(
        [torch.randint(0, N, (4, 8, 9), generator=g), torch.randint(0, 3, (4, 8, 9), generator=g)], 1
    )
    whole = Scorer(N, geometric_classes=3)
    whole.update(logits, target)
    halves = [Scorer(N, geometric_classes=3) for _ in range(2)]
    labels = torch.stack([logits[:, :N].argmax(1), logits[:, N:].argmax(1)], 1)
    halves[0].update(labels[:2], target[:2])
    halves[1].update(labels[2:], target[2:])
    merged = halves[0].merge(halves[1]).compute()
    assert merged == whole.compute()
    assert merged["geometric_pixel_acc"] == merged["geometric"]["pixel_acc"]


def test_sigmoid_scorer_gives_fscore_and_the_sweep():
    g = torch.Generator().manual_seed(2)
    logits = torch.randn(2, 3, 6, 7, generator=g)
    target = (torch.rand(2, 3, 6, 7, generator=g) > 0.5).long()
    scorer = Scorer(3, task="multilabel", threshold=0.5, sweep=(0.3, 0.7), fscore_beta=2.0)
    scorer.update(logits, target)
    out = scorer.compute()
    assert [row["threshold"] for row in out["sweep"]] == [0.3, 0.5, 0.7] and out["threshold"] == 0.5
    f2 = tm.MultilabelFBetaScore(num_labels=3, beta=2.0, average=None, threshold=0.5)(
        torch.sigmoid(logits), target
    )
    torch.testing.assert_close(torch.tensor(out["fscore"]), f2, check_dtype=False)
    assert set(out["best"]) >= {"mean_fscore", "mean_iou"}
    labels = Scorer(3, task="multilabel")
    labels.update((torch.sigmoid(logits) > 0.5).long(), target)  # 0/1 labels count as the probabilities
    assert labels.compute()["iou"] == out["iou"]


def test_fscore_beta_is_checked_at_load_and_named():
    from fcn.config import ConfigError

    assert load_config().eval.fscore_beta == 1.0
    with pytest.raises(ConfigError, match="eval.fscore_beta=0"):
        load_config(overrides=["eval.fscore_beta=0"])
    assert load_config(overrides=["eval.metric=mean_fscore"]).eval.metric == "mean_fscore"


class _Pixels(nn.Module):
    """A 1x1 convolution: logits that depend on each pixel, the same on any image size."""

    def __init__(self, classes: int) -> None:
        super().__init__()
        torch.manual_seed(3)
        self.conv = nn.Conv2d(3, classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class _Images(torch.utils.data.Dataset):
    """Random images of different sizes, masks with a void border."""

    def __init__(self, classes: int) -> None:
        g = torch.Generator().manual_seed(4)
        self.items = []
        for h, w in [(11, 13), (9, 16), (11, 13), (7, 7), (12, 10)]:
            mask = torch.randint(0, classes, (h, w), generator=g)
            mask[0] = IGNORE
            self.items.append((torch.randn(3, h, w, generator=g), mask))
        self.ids = [f"im{i}" for i in range(len(self.items))]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int):
        return self.items[i]


def test_training_evaluation_and_evaluate_py_give_the_same_numbers():
    from fcn.data.loaders import eval_loader
    from fcn.inference.evaluation import Evaluation, run_evaluation
    from fcn.training.validate import evaluate

    cfg = load_config(overrides=["data.val_batch_size=2", "data.num_workers=0", "eval.fscore_beta=2"])
    classes = int(cfg.model.num_classes)
    model, dataset = _Pixels(classes).eval(), _Images(classes)
    loader = eval_loader(dataset, batch_size=2, num_workers=0, rank=0, world_size=1)
    trained = evaluate(model, loader, classes, torch.device("cpu"), fscore_beta=2.0)
    report = run_evaluation(Evaluation("x.pt", model, cfg, "model", dataset), progress=False, per_image=True)
    assert trained["confusion"] == report["confusion"] and sum(map(sum, report["confusion"])) > 0
    for key in ("pixel_acc", "mean_acc", "mean_iou", "fwavacc", "mean_dice", "mean_fscore", "mean_precision"):
        assert trained[key] == report[key], key
    for key in ("iou", "acc", "dice", "fscore", "precision", "recall"):
        assert np.array_equal(trained[key], report[key], equal_nan=True), key
    assert report["fscore_beta"] == trained["fscore_beta"] == 2.0
    assert list(report)[5:9] == ["pixel_acc", "mean_acc", "mean_iou", "fwavacc"]  # the paper's first
    assert len(report["per_image"]) == len(dataset)
