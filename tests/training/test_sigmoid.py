"""data.task binary and multilabel: masks, losses, metrics, config errors, and evaluate.py / predict.py
/ the Segmenter on a checkpoint whose weights are set (not trained), so that what it predicts is known."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

import evaluate
import predict
from fcn.config import ConfigError, load_config
from fcn.core.metrics import ThresholdCounts
from fcn.data.common import binary_labels, read_multilabel_mask
from fcn.training.losses import SigmoidLoss, bce_sum, lovasz_hinge, sigmoid_dice_loss
from tests.helpers import BINARY_SIZES as SIZES
from tests.helpers import _pairs, _write_binary_pairs

# ----------------------------------------------------------------------------- masks


@pytest.mark.parametrize("foreground", [1, 255])
def test_binary_masks_read_0_255_and_0_1_as_0_1(foreground):
    raw = np.array([[0, foreground], [foreground, 0]], np.uint8)
    assert binary_labels(raw, "m.png").tolist() == [[0, 1], [1, 0]]


def test_binary_mask_with_other_values_is_an_error_naming_file_and_values():
    with pytest.raises(ValueError, match=r"m\.png: binary mask holds values \[0, 7, 255\]"):
        binary_labels(np.array([0, 7, 255], np.uint8), "m.png")
    with pytest.raises(ValueError, match=r"values \[0, 1, 255\]"):  # which one is the foreground?
        binary_labels(np.array([0, 1, 255], np.uint8), "m.png")


def test_binary_mask_keeps_an_explicit_void_value_ignored():
    raw = np.array([0, 255, 128], np.uint8)
    assert binary_labels(raw, "m.png", ignore_index=128).tolist() == [0, 1, 128]


def test_multilabel_mask_reads_one_png_per_class_and_npy(tmp_path):
    for name, plane in (("a", [[0, 255], [255, 255]]), ("b", [[0, 0], [255, 0]])):
        (tmp_path / name).mkdir()
        Image.fromarray(np.array(plane, np.uint8), mode="L").save(tmp_path / name / "x.png")
    masks = read_multilabel_mask(tmp_path / "a" / "x.png", ["a", "b"])
    assert masks.shape == (2, 2, 2) and masks[:, 1, 0].tolist() == [1, 1]  # both classes at one pixel
    np.save(tmp_path / "x.npy", masks.astype(bool))
    assert np.array_equal(read_multilabel_mask(tmp_path / "x.npy", ["a", "b"]), masks)
    with pytest.raises(ValueError, match=r"x\.npy: multilabel mask array has shape \(2, 2, 2\); expected 3"):
        read_multilabel_mask(tmp_path / "x.npy", ["a", "b", "c"])
    tifffile = pytest.importorskip("tifffile")
    tifffile.imwrite(tmp_path / "x.tif", masks * np.uint8(255))  # two pages, one per class
    assert np.array_equal(read_multilabel_mask(tmp_path / "x.tif", ["a", "b"]), masks)
    with pytest.raises(FileNotFoundError, match=r"c/x\.png"):
        read_multilabel_mask(tmp_path / "a" / "x.png", ["a", "c"])


# ----------------------------------------------------------------------------- losses


def _logits_masks(classes: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(2, classes, 5, 6, generator=g, dtype=torch.float64) * 2
    masks = torch.randint(0, 2, (2, classes, 5, 6), generator=g)
    masks[0, :, 0, :2] = 255  # ignored
    return logits, masks


def test_bce_is_the_float64_definition_over_labelled_pairs_with_pos_weight():
    logits, masks = _logits_masks(3)
    pw = torch.tensor([1.0, 2.5, 0.5], dtype=torch.float64)
    p = torch.sigmoid(logits)
    g = (masks == 1).double()
    expected = -(pw.view(1, 3, 1, 1) * g * torch.log(p) + (1 - g) * torch.log(1 - p))
    expected = expected[masks != 255].sum()
    assert float(bce_sum(logits, masks, pw)) == pytest.approx(float(expected), rel=1e-5)


def test_binary_masks_are_n_h_w_and_the_normaliser_counts_labelled_pixels():
    logits, masks = _logits_masks(1)
    loss = SigmoidLoss()
    assert float(loss.pixel_sum(logits, masks[:, 0])) == pytest.approx(
        float(bce_sum(logits, masks)), rel=1e-6
    )
    assert float(loss.labelled(masks[:, 0])) == float((masks != 255).sum())


def test_sigmoid_dice_and_lovasz_hinge_are_zero_when_right_and_have_gradients():
    masks = torch.randint(0, 2, (1, 2, 6, 6), generator=torch.Generator().manual_seed(1))
    perfect = (masks.double() * 2 - 1) * 20  # confident and right: hinge errors 1 - 20 < 0
    assert float(sigmoid_dice_loss(perfect, masks)) < 1e-6
    assert float(lovasz_hinge(perfect, masks)) == 0.0
    logits = torch.zeros(1, 2, 6, 6, dtype=torch.float64, requires_grad=True)
    (sigmoid_dice_loss(logits, masks) + lovasz_hinge(logits, masks)).backward()
    assert logits.grad.abs().sum() > 0


def test_lovasz_hinge_of_one_class_is_the_lovasz_extension_of_its_hinge_errors():
    # Two pixels, positive x=0 (error 1) and negative x=0.5 (error 1.5): sorted errors (1.5, 1); the
    # Jaccard loss with {neg} wrong is 1 - 1/2 = 0.5, with {neg, pos} wrong 1 - 0/2 = 1 -> gradient (0.5, 0.5).
    logits = torch.tensor([0.0, 0.5]).view(1, 1, 1, 2)
    masks = torch.tensor([1, 0]).view(1, 1, 2)
    assert float(lovasz_hinge(logits, masks)) == pytest.approx(1.5 * 0.5 + 1.0 * 0.5)


# ----------------------------------------------------------------------------- metrics


def test_threshold_counts_equal_numpy_counts_at_every_threshold_and_skip_ignored():
    g = torch.Generator().manual_seed(0)
    probs = torch.rand(3, 2, 7, 9, generator=g)
    target = torch.randint(0, 2, (3, 2, 7, 9), generator=g)
    target[1, 0, :3] = 255
    thresholds = [0.2, 0.5, 0.7]
    counts = ThresholdCounts(2, thresholds)
    counts.update(probs[:2], target[:2])
    counts.update(probs[2:], target[2:])  # streaming
    p, t = probs.numpy(), target.numpy()
    for k, thr in enumerate(thresholds):
        result = counts.compute(k)
        for c in range(2):
            valid = t[:, c] != 255
            pred, truth = p[:, c][valid] > thr, t[:, c][valid] == 1
            tp, fp, fn = (pred & truth).sum(), (pred & ~truth).sum(), (~pred & truth).sum()
            assert result["iou"][c] == pytest.approx(tp / (tp + fp + fn))
            assert result["dice"][c] == pytest.approx(2 * tp / (2 * tp + fp + fn))
            assert result["precision"][c] == pytest.approx(tp / (tp + fp))
            assert result["recall"][c] == pytest.approx(tp / (tp + fn))
        assert result["mean_iou"] == pytest.approx(np.mean(result["iou"]))


def test_threshold_counts_leave_a_class_absent_everywhere_out_of_the_means():
    counts = ThresholdCounts(2)
    target = torch.zeros(1, 2, 2, 2, dtype=torch.long)
    target[0, 0, 0, 0] = 1
    probs = target.float() * 0.9  # class 0 right, class 1 absent from truth and prediction
    counts.update(probs, target)
    result = counts.compute()
    assert result["iou"][0] == 1.0 and math.isnan(result["iou"][1]) and result["mean_iou"] == 1.0


# ----------------------------------------------------------------------------- config


def test_binary_config_has_one_logit_and_a_softmax_loss_is_an_error_naming_both_keys():
    cfg = load_config(overrides=_pairs("binary", "[defect]", ["loss.terms=[{name: bce}]"]))
    assert cfg.model.num_classes == 1
    with pytest.raises(ConfigError, match=r"loss.terms\[0\].name=ce .*data.task=binary"):
        load_config(overrides=_pairs("binary", "[defect]"))
    with pytest.raises(ConfigError, match=r"loss.terms\[0\].name=bce .*data.task=multiclass"):
        load_config(overrides=["loss.terms=[{name: bce}]"])


@pytest.mark.parametrize(
    "overrides, message",
    [
        (_pairs("binary", "[a, b]", ["loss.terms=[{name: bce}]"]), "data.task=binary segments one class"),
        (_pairs("multilabel", "[]", ["loss.terms=[{name: bce}]"]), "data.task=multilabel needs data.classes"),
        (
            _pairs("binary", "[a]", ["loss.terms=[{name: bce}]", "eval.metric=fwavacc"]),
            "eval.metric='fwavacc'",
        ),
        (_pairs("binary", "[a]", ["loss.terms=[{name: bce}]", "eval.threshold=1.0"]), "eval.threshold=1.0"),
        (["data.task=binary", "data.classes=[a]", "loss.terms=[{name: bce}]"], "data.train.name=sbd"),
        (["model.num_classes=1"], "data.task=binary"),
    ],
)
def test_sigmoid_task_config_errors_name_the_key(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(overrides=overrides)


def test_eval_metric_is_one_key_for_best_pt_and_tune_with_the_sigmoid_metrics():
    from fcn.training.search import metric_value

    cfg = load_config(
        overrides=_pairs("binary", "[a]", ["loss.terms=[{name: bce}]", "eval.metric=mean_dice"])
    )
    assert cfg.eval.metric == "mean_dice"
    assert (
        load_config(overrides=_pairs("binary", "[a]", ["loss.terms=[{name: bce}]"])).eval.metric == "mean_iu"
    )
    # every task has the compared means (fcn/core/scoring.py); fwavacc is the multiclass paper's only
    assert load_config(overrides=["eval.metric=mean_dice"]).eval.metric == "mean_dice"
    with pytest.raises(ConfigError, match="eval.metric='fwavacc'"):
        load_config(overrides=_pairs("binary", "[a]", ["loss.terms=[{name: bce}]", "eval.metric=fwavacc"]))
    # tune.py reads what chose best.pt: the record's mean_dice, the EMA's where there is one
    assert metric_value({"mean_iou": 0.5, "mean_dice": 0.6}, "mean_dice") == 0.6
    assert metric_value({"mean_dice": 0.6, "ema": {"mean_dice": 0.7}}, "mean_dice") == 0.7
    assert metric_value({"mean_iou": 0.5}, "mean_iu") == 0.5


def test_aux_head_loss_wraps_the_sigmoid_loss():
    from fcn.training.losses import AuxHeadLoss, build_loss

    cfg = load_config(overrides=_pairs("binary", "[a]", ["loss.terms=[{name: bce}, {name: dice}]"]))
    loss_fn = build_loss(cfg.loss, 255, None, 1, 0, 0.5, task="binary")
    assert isinstance(loss_fn, AuxHeadLoss) and isinstance(loss_fn.loss, SigmoidLoss)
    alone = build_loss(cfg.loss, 255, None, 1, task="binary")
    assert isinstance(alone, SigmoidLoss)
    logits = torch.randn(2, 2, 8, 8)  # training mode: the main head's logit, then the auxiliary's
    masks = (torch.rand(2, 8, 8) > 0.5).long()
    for part in ("pixel_sum", "batch_mean"):
        main, aux = (getattr(alone, part)(x, masks) for x in (logits[:, :1], logits[:, 1:]))
        assert torch.allclose(getattr(loss_fn, part)(logits, masks), main + 0.5 * aux)
    assert torch.equal(loss_fn.pixel_sum(logits[:, :1], masks), alone.pixel_sum(logits[:, :1], masks))


# ----------------------------------------------------------------------------- end to end


def test_evaluate_binary_reports_foreground_metrics_saves_0_255_masks_and_sweeps(
    binary_setup, tmp_path, capsys
):
    root, ckpt, model, cfg = binary_setup
    out, preds = tmp_path / "val.json", tmp_path / "preds"
    argv = ["--checkpoint", str(ckpt), "--no-progress", "--device", "cpu", "--output", str(out)]
    assert evaluate.main([*argv, "--save-predictions", str(preds), "--sweep-thresholds"]) == 0
    report = json.loads(out.read_text())
    printed = capsys.readouterr().out
    assert "best mean_iou" in printed and "threshold 0.5" in printed
    from fcn.data.transforms import preprocess

    counts = ThresholdCounts(1)
    for i in range(len(SIZES)):
        with Image.open(root / "images" / f"im{i}.png") as image, torch.inference_mode():
            probs = torch.sigmoid(model(preprocess(image.convert("RGB"), "torchvision")[None]))
        with Image.open(preds / f"im{i}.png") as saved:
            assert saved.mode == "L"
            assert np.array_equal(np.asarray(saved), np.where(probs[0, 0].numpy() > 0.5, 255, 0))
        with Image.open(root / "masks" / f"im{i}.png") as gt:
            counts.update(probs, torch.from_numpy(np.asarray(gt) // 255).long()[None])
    expected = counts.compute()
    assert report["mean_iou"] == pytest.approx(expected["mean_iou"]) and report["mean_iou"] > 0.5
    assert report["per_class"]["bright"]["recall"] == pytest.approx(expected["recall"][0])
    assert [row["threshold"] for row in report["sweep"]][:2] == [0.05, 0.1]
    assert report["best"]["mean_iou"]["mean_iou"] >= report["mean_iou"]


def test_predict_and_segmenter_binary_give_boolean_masks_probabilities_and_0_255_pngs(binary_setup, tmp_path):
    from fcn.api import Segmenter

    root, ckpt, model, _ = binary_setup
    seg = Segmenter.from_checkpoint(ckpt, device="cpu")
    image = root / "images" / "im0.png"
    mask, probs = seg(image), seg.probabilities(image)
    assert mask.dtype == bool and mask.shape == SIZES[0] and probs.shape == SIZES[0]
    assert np.array_equal(mask, probs > 0.5) and 0 < mask.mean() < 1
    assert seg.shares(mask) == [(1, "bright", pytest.approx(mask.mean()))]  # label 1: its palette row
    colour = seg.colorize(mask)
    assert (colour[mask] == seg.palette[1]).all() and (colour[~mask] == seg.palette[0]).all()
    out = tmp_path / "out"
    assert (
        predict.main(
            ["--checkpoint", str(ckpt), "--input", str(image), "--output", str(out), "--no-progress"]
        )
        == 0
    )
    with Image.open(out / "im0.png") as saved:
        assert saved.mode == "L" and np.array_equal(np.asarray(saved), mask * np.uint8(255))
    assert sorted(p.name for p in out.iterdir()) == ["im0.png", "im0_overlay.png"]


@pytest.mark.parametrize("engine", ["onnxruntime", "openvino"])
def test_an_engine_gives_the_binary_masks_of_torch(binary_setup, tmp_path, engine):
    """ONNX Runtime and OpenVINO (skipped where not installed, as in CI) on the export: the sigmoid
    kept, the same masks as torch on >= 99.9% of pixels."""
    pytest.importorskip(engine)
    from fcn.api import Segmenter

    root, ckpt, _, _ = binary_setup
    copy = tmp_path / "best.pt"  # the engine caches its export beside the checkpoint
    copy.write_bytes(ckpt.read_bytes())
    torch_seg = Segmenter.from_checkpoint(copy, device="cpu")
    engine_seg = Segmenter.from_checkpoint(copy, device="cpu", engine=engine)
    same = total = 0
    for i in range(len(SIZES)):
        a, b = torch_seg(root / "images" / f"im{i}.png"), engine_seg(root / "images" / f"im{i}.png")
        assert a.dtype == b.dtype == bool and a.shape == b.shape and a.any() and b.any()
        same, total = same + int((a == b).sum()), total + a.size
    assert same >= 0.999 * total
    import onnx

    exported = next(tmp_path.glob("*.onnx"))
    meta = {p.key: p.value for p in onnx.load(str(exported)).metadata_props}
    assert meta["task"] == "binary" and meta["threshold"] == "0.5"


def test_multilabel_pairs_dataset_reads_class_folders_and_check_counts_each_class(tmp_path, capsys):
    from fcn.data import build_dataset
    from fcn.data.check import main as check_main
    from fcn.data.toy import generate
    from fcn.data.transforms import build_transforms

    root = tmp_path / "toy"
    generate(root, seed=0, n_train=4, n_val=2, size=32, workers=1, fmt="pairs", task="multilabel")
    overrides = _pairs("multilabel", "[disc, band]", ["loss.terms=[{name: bce}]", "data.num_workers=0"])
    overrides += [f"data.{s}.{k}={root}/{s}/{k}" for s in ("train", "val") for k in ("images", "masks")]
    cfg = load_config(overrides=overrides + ["data.transforms.crop_size=24"])
    train = build_dataset(cfg.data.train, cfg.data, build_transforms(cfg.data.transforms, train=True))
    image, mask = train[0]
    assert image.shape == (3, 24, 24) and mask.shape == (2, 24, 24)
    assert set(mask.unique().tolist()) <= {0, 1, 255}
    val = build_dataset(cfg.data.val, cfg.data, build_transforms(cfg.data.transforms, train=False))
    _, mask = val[0]
    truth = read_multilabel_mask(root / "val" / "masks" / "disc" / "val_00000.png", ["disc", "band"])
    assert np.array_equal(mask.numpy(), truth)
    assert check_main(overrides) == 0
    printed = capsys.readouterr().out
    assert "disc" in printed and "band" in printed and "(no class)" in printed


def test_a_bad_binary_mask_is_one_line_naming_the_file_and_its_values(tmp_path, capsys):
    from fcn.data.check import main as check_main

    _write_binary_pairs(tmp_path)
    Image.fromarray(np.full((70, 90), 7, np.uint8), mode="L").save(tmp_path / "masks" / "im0.png")
    overrides = _pairs("binary", "[bright]", ["loss.terms=[{name: bce}]", "data.num_workers=0"])
    overrides += [f"data.{s}.{k}={tmp_path}/{k}" for s in ("train", "val") for k in ("images", "masks")]
    assert check_main(overrides) == 1
    lines = [line for line in capsys.readouterr().out.splitlines() if "im0.png" in line]
    assert lines and "binary mask holds values [7]" in lines[0]


def test_coco_overlap_multilabel_keeps_overlapping_instances_on_both_planes(tmp_path, capsys):
    from fcn.data import build_dataset
    from fcn.data.check import main as check_main

    (tmp_path / "images").mkdir()
    Image.fromarray(np.zeros((20, 30, 3), np.uint8)).save(tmp_path / "images" / "a.png")
    square = lambda x0, y0, x1, y1: [[x0, y0, x1, y0, x1, y1, x0, y1]]  # noqa: E731
    doc = {
        "images": [{"id": 1, "file_name": "a.png", "width": 30, "height": 20}],
        "categories": [{"id": 1, "name": "wet"}, {"id": 2, "name": "green"}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 1, "segmentation": square(0, 0, 20, 20), "iscrowd": 0},
            {"id": 2, "image_id": 1, "category_id": 2, "segmentation": square(10, 0, 30, 20), "iscrowd": 0},
        ],
    }
    (tmp_path / "ann.json").write_text(json.dumps(doc))
    coco = f"{{name: coco, annotations: {tmp_path}/ann.json, images: {tmp_path}/images}}"
    overrides = [
        "data.task=multilabel",
        "data.classes=[wet, green]",
        f"data.train={coco}",
        f"data.val={coco}",
        "data.coco_overlap=multilabel",
        "loss.terms=[{name: bce}]",
        "data.num_workers=0",
    ]
    cfg = load_config(overrides=overrides)
    for _ in range(2):  # rasterised, then read back from the cache
        _, mask = build_dataset(cfg.data.val, cfg.data)[0]
        assert mask.shape == (2, 20, 30)
        assert mask[:, 5, 15].tolist() == [1, 1] and mask[:, 5, 2].tolist() == [1, 0]
    assert list((tmp_path / ".fcn_coco_cache").rglob("*.npy"))
    assert check_main(overrides) == 0
    with pytest.raises(ConfigError, match="data.coco_overlap=ignore with data.task=multilabel"):
        load_config(overrides=[*overrides[:-3], "loss.terms=[{name: bce}]"])


def test_threshold_counts_of_shards_merge_into_the_whole_as_all_reduce_sums_them():
    g = torch.Generator().manual_seed(3)
    probs, target = torch.rand(4, 2, 5, 5, generator=g), torch.randint(0, 2, (4, 2, 5, 5), generator=g)
    whole, first, second = (ThresholdCounts(2, [0.3, 0.6]) for _ in range(3))
    whole.update(probs, target)
    first.update(probs[::2], target[::2])  # the two ranks' shards of a distributed sampler
    second.update(probs[1::2], target[1::2])
    assert torch.equal(first.merge(second).mat, whole.mat)


def test_test_time_flip_averages_the_sigmoids(binary_setup):
    from fcn.inference.segment import predict_labels, predict_probs

    _, _, model, _ = binary_setup
    x = torch.randn(1, 3, 40, 56)
    with torch.inference_mode():
        expected = (torch.sigmoid(model(x)) + torch.sigmoid(model(x.flip(-1))).flip(-1)) / 2
        probs = predict_probs(model, x, flip=True, task="binary")
        labels = predict_labels(model, x, flip=True, task="binary", threshold=0.4)
    assert torch.allclose(probs, expected, atol=1e-6)
    assert labels.shape == (1, 40, 56) and torch.equal(labels, (probs[:, 0] > 0.4).long())


def test_cutmix_and_mosaic_move_every_plane_of_multilabel_masks_with_the_image():
    from fcn.data.mixing import cutmix, mosaic

    g = torch.Generator().manual_seed(0)
    # constant over 2x2 blocks: Mosaic's exact 2x downscale (image: block means, masks: nearest) keeps them
    masks = torch.randint(0, 2, (3, 2, 8, 8), generator=g).repeat_interleave(2, -1).repeat_interleave(2, -2)
    images = torch.cat([masks.float(), masks[:, :1].float()], dim=1)  # the image's channels are the planes
    for mixed, mixed_masks in (cutmix(images, masks, 1.0, g), mosaic(images, masks, g)):
        assert mixed_masks.shape == masks.shape
        labelled = mixed_masks != 255
        assert torch.equal(mixed[:, :2][labelled].long(), mixed_masks[labelled])


def test_binary_inverse_frequency_is_the_pos_weight_background_over_foreground(tmp_path):
    from fcn.data.check import frequency_weights, split_report_cached

    _write_binary_pairs(tmp_path)
    overrides = _pairs(
        "binary", "[bright]", ["loss.terms=[{name: bce}]", "loss.class_weights=inverse_frequency"]
    )
    overrides += [f"data.{s}.{k}={tmp_path}/{k}" for s in ("train", "val") for k in ("images", "masks")]
    cfg = load_config(overrides=overrides)
    report, _, _ = split_report_cached(cfg.data.train, cfg.data)
    foreground = sum(
        int((np.asarray(Image.open(m)) == 255).sum()) for m in (tmp_path / "masks").glob("*.png")
    )
    background = sum(h * w for h, w in SIZES) - foreground
    assert frequency_weights(report, "inverse_frequency", 1, 255, "binary") == [
        pytest.approx(background / foreground)
    ]


def test_multilabel_inverse_frequency_is_each_class_negatives_over_positives(tmp_path, capsys):
    from fcn.core.distributed import env_info
    from fcn.data.check import frequency_weights, split_report_cached
    from fcn.data.check import main as check_main
    from fcn.data.toy import generate
    from fcn.training.loop import class_weight_tensor

    root = tmp_path / "toy"
    generate(root, seed=0, n_train=5, n_val=2, size=32, workers=1, fmt="pairs", task="multilabel")
    train_masks = root / "train" / "masks"
    band = train_masks / "band" / "train_00001.png"
    plane = np.asarray(Image.open(band)).copy()
    plane[:4] = 128  # void on the band's plane only: neither its negative nor its positive
    Image.fromarray(plane, mode="L").save(band)
    overrides = _pairs(
        "multilabel",
        "[disc, band]",
        ["loss.terms=[{name: bce}]", "loss.class_weights=inverse_frequency", "data.ignore_index=128"],
    )
    overrides += [f"data.{s}.{k}={root}/{s}/{k}" for s in ("train", "val") for k in ("images", "masks")]
    cfg = load_config(overrides=overrides + ["data.num_workers=0"])
    expected = []
    for name in ("disc", "band"):  # the direct count, file by file
        planes = [np.asarray(Image.open(m)) for m in sorted((train_masks / name).glob("*.png"))]
        assert len(planes) == 5
        expected.append(sum(int((p == 0).sum()) for p in planes) / sum(int((p == 255).sum()) for p in planes))
    assert expected[0] != pytest.approx(expected[1])  # a class's own counts, not one shared weight
    report, cache, cached = split_report_cached(cfg.data.train, cfg.data)
    assert not cached and cache is not None and cache.parent == train_masks
    assert frequency_weights(report, "inverse_frequency", 2, 128, "multilabel") == pytest.approx(expected)
    report, _, cached = split_report_cached(cfg.data.train, cfg.data)  # read back from the cache
    assert cached
    assert frequency_weights(report, "inverse_frequency", 2, 128, "multilabel") == pytest.approx(expected)
    # what training hands bce as its pos_weight
    assert class_weight_tensor(cfg, torch.device("cpu"), env_info()).tolist() == pytest.approx(expected)
    assert check_main(overrides) == 0
    assert f"loss: {{class_weights: [{expected[0]:.4g}, {expected[1]:.4g}]}}" in capsys.readouterr().out
    with pytest.raises(ConfigError, match=r"loss.class_weights=median_frequency .*data.task=multilabel"):
        load_config(overrides=overrides + ["loss.class_weights=median_frequency"])


@pytest.mark.slow
@pytest.mark.parametrize("engine", ["torch", "onnxruntime"])
def test_int8_keeps_the_sigmoid_boolean_masks_and_0_255_pngs(binary_setup, tmp_path, engine):
    """eval.fast_path=int8 (torch's FX quantization, or ONNX Runtime's static int8) on a binary model:
    calibrated on the inputs, still one sigmoid logit thresholded into boolean masks and 0/255 PNGs,
    close to fp32's (int8 is an approximation: measure it on your model, docs/deployment.md)."""
    if engine == "onnxruntime":
        pytest.importorskip("onnxruntime")
    from fcn.api import Segmenter

    root, ckpt, _, _ = binary_setup
    copy = tmp_path / "best.pt"  # an engine caches its export beside the checkpoint
    copy.write_bytes(ckpt.read_bytes())
    images = [root / "images" / f"im{i}.png" for i in range(len(SIZES))]
    fp32 = Segmenter.from_checkpoint(copy, device="cpu")
    int8 = Segmenter.from_checkpoint(copy, device="cpu", engine=engine, fast_path="int8")
    int8.calibrate(images)
    same = total = 0
    for image in images:
        a, b = fp32(image), int8(image)
        assert b.dtype == bool and b.shape == a.shape
        same, total = same + int((a == b).sum()), total + a.size
    assert same >= 0.98 * total, same / total  # 99.9% here, on both engines
    out = tmp_path / "out"
    argv = ["--checkpoint", str(copy), "--input", str(images[0]), "--output", str(out), "--no-progress"]
    assert predict.main([*argv, "--engine", engine, "--fast-path", "int8"]) == 0
    with Image.open(out / "im0.png") as saved:
        assert saved.mode == "L" and set(np.unique(np.asarray(saved))) <= {0, 255}
