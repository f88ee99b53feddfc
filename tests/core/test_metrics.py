"""ConfusionMatrix against a direct NumPy transcription of the reference score.py."""

import math
import os
import socket
import warnings

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

from fcn.core import metrics
from fcn.core.metrics import ConfusionMatrix, format_table

N = 7  # class 4: in ground truth only; class 5: absent everywhere; class 6: in prediction only


def reference_scores(gt: np.ndarray, pred: np.ndarray, n: int) -> dict:
    """score.py's fast_hist and the four numbers, written out in NumPy."""
    k = (gt >= 0) & (gt < n)
    hist = np.bincount(n * gt[k].astype(int) + pred[k], minlength=n**2).reshape(n, n)
    with np.errstate(divide="ignore", invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        acc = np.diag(hist) / hist.sum(1)
        iu = np.diag(hist) / (hist.sum(1) + hist.sum(0) - np.diag(hist))
        freq = hist.sum(1) / hist.sum()
        return {
            "hist": hist,
            "pixel_acc": np.diag(hist).sum() / hist.sum(),
            "mean_acc": np.nanmean(acc),
            "mean_iou": np.nanmean(iu),
            "fwavacc": (freq[freq > 0] * iu[freq > 0]).sum(),
            "iou": iu,
            "acc": acc,
        }


def random_maps(seed: int, shape=(3, 37, 41)) -> tuple[np.ndarray, np.ndarray]:
    """Return (gt, pred) int64 maps with 255s, out-of-range targets and absent classes 4/5/6."""
    rng = np.random.default_rng(seed)
    gt = rng.choice([0, 1, 2, 3, 4], size=shape, p=[0.4, 0.2, 0.2, 0.1, 0.1])
    pred = rng.choice([0, 1, 2, 3, 6], size=shape)
    gt[rng.random(shape) < 0.1] = 255
    gt[rng.random(shape) < 0.02] = 9  # outside [0, N): ignored like 255
    # pred agrees with gt on about half the valid pixels so the numbers are not all near chance
    agree = (rng.random(shape) < 0.5) & (gt < 4)
    pred[agree] = gt[agree]
    return gt, pred


def assert_matches(got: dict, ref: dict) -> None:
    for key in ("pixel_acc", "mean_acc", "mean_iou", "fwavacc"):
        assert isinstance(got[key], float), key
        assert got[key] == pytest.approx(float(ref[key]), rel=1e-12, abs=1e-15), key
    for key in ("iou", "acc"):
        assert isinstance(got[key], list) and all(isinstance(v, float) for v in got[key]), key
        np.testing.assert_allclose(np.array(got[key]), ref[key], rtol=1e-12, equal_nan=True)


@pytest.mark.parametrize("lanes", [1, 4])  # 1 is the path taken on CUDA
@pytest.mark.parametrize("pred_dtype", [torch.int64, torch.int32, torch.uint8])
@pytest.mark.parametrize("target_dtype", [torch.int64, torch.uint8])
def test_matches_reference_formulas(target_dtype, pred_dtype, lanes, monkeypatch):
    monkeypatch.setattr(metrics, "_CPU_LANES", lanes)
    gt, pred = random_maps(0)
    cm = ConfusionMatrix(N)
    pred_t, gt_t = torch.from_numpy(pred).to(pred_dtype), torch.from_numpy(gt).to(target_dtype)
    pred_copy, gt_copy = pred_t.clone(), gt_t.clone()
    cm.update(pred_t, gt_t)
    assert torch.equal(pred_t, pred_copy) and torch.equal(gt_t, gt_copy), "inputs were modified"
    ref = reference_scores(gt, pred, N)
    np.testing.assert_array_equal(cm.mat.numpy(), ref["hist"])
    assert cm.mat.dtype == torch.int64
    assert_matches(cm.compute(), ref)


def test_absent_classes_are_nan_and_left_out_of_means():
    gt, pred = random_maps(1)
    m = ConfusionMatrix(N)
    m.update(torch.from_numpy(pred), torch.from_numpy(gt))
    m = m.compute()
    assert math.isnan(m["iou"][5]) and math.isnan(m["acc"][5])  # absent everywhere
    assert m["iou"][6] == 0.0 and math.isnan(m["acc"][6])  # predicted, never in ground truth
    assert m["iou"][4] == 0.0 and m["acc"][4] == 0.0  # in ground truth, never predicted
    assert m["mean_iou"] == pytest.approx(np.mean([v for i, v in enumerate(m["iou"]) if i != 5]))
    assert m["mean_acc"] == pytest.approx(np.mean(m["acc"][:5]))


def test_streaming_equals_one_shot():
    maps = [random_maps(seed) for seed in range(4)]
    streamed = ConfusionMatrix(N)
    for gt, pred in maps:
        streamed.update(torch.from_numpy(pred), torch.from_numpy(gt))
    gt_all = np.concatenate([gt.ravel() for gt, _ in maps])
    pred_all = np.concatenate([pred.ravel() for _, pred in maps])
    one_shot = ConfusionMatrix(N)
    one_shot.update(torch.from_numpy(pred_all), torch.from_numpy(gt_all))
    assert torch.equal(streamed.mat, one_shot.mat)
    assert_matches(streamed.compute(), reference_scores(gt_all, pred_all, N))


def test_streaming_over_changing_sizes():
    shapes = [(2, 5, 7), (3, 37, 41), (1, 3, 3), (4, 40, 50)]
    maps = [random_maps(seed, shape) for seed, shape in enumerate(shapes)]
    streamed = ConfusionMatrix(N)
    for gt, pred in maps:
        streamed.update(torch.from_numpy(pred), torch.from_numpy(gt))
    hist = sum(reference_scores(gt, pred, N)["hist"] for gt, pred in maps)
    np.testing.assert_array_equal(streamed.mat.numpy(), hist)


def test_merge_equals_one_shot():
    (gt_a, pred_a), (gt_b, pred_b) = random_maps(5), random_maps(6)
    a, b, both = ConfusionMatrix(N), ConfusionMatrix(N), ConfusionMatrix(N)
    a.update(torch.from_numpy(pred_a), torch.from_numpy(gt_a))
    b.update(torch.from_numpy(pred_b), torch.from_numpy(gt_b))
    both.update(torch.from_numpy(pred_a), torch.from_numpy(gt_a))
    both.update(torch.from_numpy(pred_b), torch.from_numpy(gt_b))
    assert a.merge(b) is a
    assert torch.equal(a.mat, both.mat)


def test_merge_rejects_other_num_classes():
    with pytest.raises(ValueError, match="num_classes=3"):
        ConfusionMatrix(N).merge(ConfusionMatrix(3))


def test_targets_outside_range_are_ignored():
    pred = torch.tensor([0, 1, 2, 1, 0, 2, 1])
    target = torch.tensor([0, 1, -1, 255, 3, 10**6, 2**40])  # 2**40 would wrap to 0 in int32
    cm = ConfusionMatrix(3)
    cm.update(pred, target)
    expected = torch.zeros(3, 3, dtype=torch.int64)
    expected[0, 0] = expected[1, 1] = 1
    assert torch.equal(cm.mat, expected)


@pytest.mark.parametrize("dtype", [torch.int64, torch.uint8])
def test_ignore_index_inside_class_range(dtype):
    cm = ConfusionMatrix(3, ignore_index=0)
    cm.update(torch.tensor([0, 1, 2, 2], dtype=dtype), torch.tensor([0, 1, 2, 0], dtype=dtype))
    assert torch.equal(cm.mat, torch.diag(torch.tensor([0, 1, 1])))


def test_bool_and_int16_inputs():
    cm = ConfusionMatrix(2)
    cm.update(torch.tensor([True, False, True]), torch.tensor([1, 0, 0], dtype=torch.int16))
    assert torch.equal(cm.mat, torch.tensor([[1, 1], [0, 1]]))


def test_shape_mismatch_raises():
    with pytest.raises(ValueError, match=r"pred shape \(2, 3\) != target shape \(3, 2\)"):
        ConfusionMatrix(N).update(torch.zeros(2, 3, dtype=torch.long), torch.zeros(3, 2, dtype=torch.long))


@pytest.mark.parametrize("bad", [-1, N, 255, 2**32, -(2**40)])
def test_pred_out_of_range_raises_and_counts_nothing(bad):
    cm = ConfusionMatrix(N)
    pred = torch.zeros(4, dtype=torch.long)
    pred[2] = bad
    with pytest.raises(ValueError, match=f"pred holds class index {bad}, outside"):
        cm.update(pred, torch.zeros(4, dtype=torch.long))
    assert int(cm.mat.sum()) == 0


def test_float_pred_raises():
    with pytest.raises(TypeError, match="argmax"):
        ConfusionMatrix(N).update(torch.zeros(2, N, 4, 4), torch.zeros(2, N, 4, 4, dtype=torch.long))


def test_empty_update_and_reset():
    cm = ConfusionMatrix(N)
    cm.update(torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long))
    assert int(cm.mat.sum()) == 0
    cm.update(torch.ones(5, dtype=torch.long), torch.ones(5, dtype=torch.long))
    assert int(cm.mat[1, 1]) == 5
    cm.reset()
    assert int(cm.mat.sum()) == 0
    assert math.isnan(cm.compute()["mean_iou"])


def test_all_reduce_is_noop_without_distributed():
    cm = ConfusionMatrix(N)
    cm.update(torch.ones(5, dtype=torch.long), torch.ones(5, dtype=torch.long))
    cm.all_reduce()
    assert int(cm.mat.sum()) == 5


def _all_reduce_worker(rank: int, world: int, port: int, out_dir: str) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        gt, pred = random_maps(100 + rank)
        cm = ConfusionMatrix(N)
        cm.update(torch.from_numpy(pred), torch.from_numpy(gt))
        cm.all_reduce()
        torch.save(cm.mat, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def test_all_reduce_sums_across_ranks(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # spawn, not fork (faster): a fork of a process whose OpenMP pool has run, as after an in-process
    # training earlier in the session (tests/config/test_starter.py's), hangs its children in a futex.
    mp.start_processes(_all_reduce_worker, args=(2, port, str(tmp_path)), nprocs=2, start_method="spawn")
    expected = ConfusionMatrix(N)
    for rank in range(2):
        gt, pred = random_maps(100 + rank)
        expected.update(torch.from_numpy(pred), torch.from_numpy(gt))
    for rank in range(2):
        assert torch.equal(torch.load(tmp_path / f"rank{rank}.pt"), expected.mat)


def test_format_table_shows_metrics_and_classes():
    gt, pred = random_maps(2)
    cm = ConfusionMatrix(N)
    cm.update(torch.from_numpy(pred), torch.from_numpy(gt))
    metrics = cm.compute()
    names = ["background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus"]
    table = format_table(metrics, names)
    first = table.splitlines()[0]
    assert f"mean IU {100 * metrics['mean_iou']:.2f}" in first
    for label in ("pixel acc", "mean acc", "fwavacc"):
        assert label in first
    bottle = next(line for line in table.splitlines() if line.startswith("bottle"))
    assert bottle.split()[1:] == ["-", "-"]  # class 5 is absent: nan shown as '-'
    for name in names:
        assert name in table


def test_format_table_fits_one_screen_for_voc():
    metrics = {"pixel_acc": 0.9, "mean_acc": 0.8, "mean_iou": 0.7, "fwavacc": 0.85}
    metrics |= {"iou": [0.5] * 21, "acc": [0.6] * 21}
    table = format_table(metrics, [f"class{i:02d}" for i in range(21)])
    lines = table.splitlines()
    assert len(lines) <= 24 and max(len(line) for line in lines) <= 110
    assert sum(line.count("class") for line in lines[2:]) == 21


def test_format_table_rejects_wrong_number_of_names():
    with pytest.raises(ValueError, match="2 class names for 3 classes"):
        format_table(
            {"pixel_acc": 1, "mean_acc": 1, "mean_iou": 1, "fwavacc": 1, "iou": [1, 1, 1]}, ["a", "b"]
        )


def _threshold_counts_worker(rank: int, world: int, port: int, out_dir: str) -> None:
    import torch.distributed as dist

    from fcn.core.metrics import ThresholdCounts

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        probs, masks = _sigmoid_batch(rank)
        counts = ThresholdCounts(2, [0.3, 0.5, 0.7])
        counts.update(probs, masks)
        counts.all_reduce()
        torch.save(counts.mat, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def _sigmoid_batch(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A multilabel batch of probabilities (2 classes) and 0/1/void masks, different on each rank."""
    g = torch.Generator().manual_seed(seed)
    probs = torch.rand(3, 2, 9, 7, generator=g)
    masks = torch.randint(0, 2, (3, 2, 9, 7), generator=g)
    masks[0, 1, :2] = 255  # void on one plane
    return probs, masks


def test_threshold_counts_all_reduce_sums_across_ranks(tmp_path):
    """Evaluation of a binary or multilabel task under DDP: each rank's counts summed, so the metrics
    are those of the whole set in one process."""
    from fcn.core.metrics import ThresholdCounts

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.start_processes(
        _threshold_counts_worker, args=(2, port, str(tmp_path)), nprocs=2, start_method="spawn"
    )
    expected = ThresholdCounts(2, [0.3, 0.5, 0.7])
    for rank in range(2):
        expected.update(*_sigmoid_batch(rank))
    assert int(expected.mat.sum()) == 2 * (2 * 3 * 9 * 7 - 2 * 7)  # the void pixels are not counted
    for rank in range(2):
        assert torch.equal(torch.load(tmp_path / f"rank{rank}.pt"), expected.mat)
