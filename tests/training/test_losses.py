"""Each loss against an independent float64 computation from its paper's formula (value and
gradient), the default loss bit for bit, the normalisation over micro-batches, class weights."""

from __future__ import annotations

import json
import math
import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fcn.config import ConfigError, load_config
from fcn.training.loop import train_one_step
from fcn.training.losses import (
    SegmentationLoss,
    build_loss,
    cross_entropy_sum,
    dice_loss,
    focal_sum,
    lovasz_softmax,
    ohem_cross_entropy,
)

C = 4
IGNORE = 255


def sample(ignored: bool, seed: int = 0, ignore_index: int = IGNORE) -> tuple[torch.Tensor, torch.Tensor]:
    """Return random logits (2, C, 5, 6) and masks; a quarter of the pixels ignored if asked."""
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(2, C, 5, 6, generator=g) * 2
    masks = torch.randint(0, C, (2, 5, 6), generator=g)
    if ignored:
        masks[torch.rand(masks.shape, generator=g) < 0.25] = ignore_index
    return logits, masks


WEIGHTS = torch.tensor([0.5, 2.0, 1.0, 3.0])


def pixels(logits: torch.Tensor, masks: torch.Tensor, ignore: int) -> list[tuple[torch.Tensor, int]]:
    """Return [(float64 logit vector, label)] of the labelled pixels, in a plain loop."""
    out = []
    n, _, h, w = logits.shape
    for b in range(n):
        for y in range(h):
            for x in range(w):
                label = int(masks[b, y, x])
                if label != ignore:
                    out.append((logits[b, :, y, x], label))
    return out


def softmax64(z: torch.Tensor) -> torch.Tensor:
    e = torch.exp(z - z.max())
    return e / e.sum()


def ref_ce(logits, masks, weight, ignore, eps=0.0):
    # sum_i (1 - eps) w_y (-log p_y) + eps / C sum_c w_c (-log p_c)
    w = weight.double() if weight is not None else torch.ones(C, dtype=torch.float64)
    total = logits.new_zeros(())
    for z, y in pixels(logits, masks, ignore):
        nll = -torch.log(softmax64(z))
        total = total + (1 - eps) * w[y] * nll[y] + eps / C * (w * nll).sum()
    return total


def ref_focal(logits, masks, weight, ignore, gamma=2.0):
    # Lin et al. eq. 5: FL(p_t) = -alpha_t (1 - p_t)^gamma log(p_t)
    total = logits.new_zeros(())
    for z, y in pixels(logits, masks, ignore):
        pt = softmax64(z)[y]
        alpha = weight[y].double() if weight is not None else 1.0
        total = total - alpha * (1 - pt) ** gamma * torch.log(pt)
    return total


def ref_ohem(logits, masks, weight, ignore, keep):
    losses = [(-torch.log(softmax64(z)[y]), y) for z, y in pixels(logits, masks, ignore)]
    k = math.ceil(keep * len(losses)) if keep <= 1 else int(keep)
    hardest = sorted(losses, key=lambda item: -float(item[0].detach()))[:k]
    w = [float(weight[y]) if weight is not None else 1.0 for _, y in hardest]
    return sum(wi * loss for wi, (loss, _) in zip(w, hardest)) / sum(w)


def ref_dice(logits, masks, weight, ignore, smooth=1.0):
    labelled = pixels(logits, masks, ignore)
    probs = [softmax64(z) for z, _ in labelled]
    num, den = logits.new_zeros(()), 0.0
    for c in range(C):
        gt = [1.0 if y == c else 0.0 for _, y in labelled]
        if sum(gt) == 0:
            continue  # classes present in the labels only
        inter = sum(p[c] * g for p, g in zip(probs, gt))
        dice = (2 * inter + smooth) / (sum(p[c] for p in probs) + sum(gt) + smooth)
        wc = float(weight[c]) if weight is not None else 1.0
        num, den = num + wc * (1 - dice), den + wc
    return num / den


def ref_lovasz(logits, masks, weight, ignore):
    # Berman et al. 2018: the Lovasz extension of Delta_J(M) = |M| / |F u M| (F: the class's pixels),
    # sum_i m_pi(i) (Delta_J({pi(1..i)}) - Delta_J({pi(1..i-1)})) with errors m sorted decreasing.
    labelled = pixels(logits, masks, ignore)
    probs = [softmax64(z) for z, _ in labelled]
    num, den = logits.new_zeros(()), 0.0
    for c in range(C):
        fg = {i for i, (_, y) in enumerate(labelled) if y == c}
        if not fg:
            continue
        errors = [abs((1.0 if i in fg else 0.0) - p[c]) for i, p in enumerate(probs)]
        order = sorted(range(len(errors)), key=lambda i: -float(errors[i].detach()))

        def jaccard_loss(chosen: set, fg: set = fg) -> float:
            return len(chosen) / len(fg | chosen) if chosen else 0.0

        loss, chosen = logits.new_zeros(()), set()
        for i in order:
            before = jaccard_loss(chosen)
            chosen.add(i)
            loss = loss + errors[i] * (jaccard_loss(chosen) - before)
        wc = float(weight[c]) if weight is not None else 1.0
        num, den = num + wc * loss, den + wc
    return num / den


CASES = {
    "ce": (lambda lo, m, w, i: cross_entropy_sum(lo, m, w, i), lambda lo, m, w, i: ref_ce(lo, m, w, i)),
    "ce_smoothed": (
        lambda lo, m, w, i: cross_entropy_sum(lo, m, w, i, label_smoothing=0.1),
        lambda lo, m, w, i: ref_ce(lo, m, w, i, eps=0.1),
    ),
    "focal": (lambda lo, m, w, i: focal_sum(lo, m, w, i, 2.0), lambda lo, m, w, i: ref_focal(lo, m, w, i)),
    "focal_gamma_half": (
        lambda lo, m, w, i: focal_sum(lo, m, w, i, 0.5),
        lambda lo, m, w, i: ref_focal(lo, m, w, i, 0.5),
    ),
    "ohem_fraction": (
        lambda lo, m, w, i: ohem_cross_entropy(lo, m, w, i, 0.3),
        lambda lo, m, w, i: ref_ohem(lo, m, w, i, 0.3),
    ),
    "ohem_count": (
        lambda lo, m, w, i: ohem_cross_entropy(lo, m, w, i, 7),
        lambda lo, m, w, i: ref_ohem(lo, m, w, i, 7),
    ),
    "dice": (lambda lo, m, w, i: dice_loss(lo, m, w, i), lambda lo, m, w, i: ref_dice(lo, m, w, i)),
    "lovasz": (lambda lo, m, w, i: lovasz_softmax(lo, m, w, i), lambda lo, m, w, i: ref_lovasz(lo, m, w, i)),
}


@pytest.mark.parametrize("weighted", [False, True], ids=["uniform", "class_weights"])
@pytest.mark.parametrize("ignored", [False, True], ids=["all_labelled", "ignored_pixels"])
@pytest.mark.parametrize("name", list(CASES))
def test_loss_matches_its_paper_formula_in_value_and_gradient(name, ignored, weighted):
    ours, reference = CASES[name]
    logits, masks = sample(ignored, seed=len(name))
    weight = WEIGHTS if weighted else None
    x = logits.clone().requires_grad_(True)
    value = ours(x, masks, weight, IGNORE)
    (grad,) = torch.autograd.grad(value, x)
    x64 = logits.double().requires_grad_(True)
    expected = reference(x64, masks, weight, IGNORE)
    (expected_grad,) = torch.autograd.grad(expected, x64)
    assert value.item() == pytest.approx(expected.item(), rel=1e-5, abs=1e-6)
    torch.testing.assert_close(grad.double(), expected_grad, rtol=1e-4, atol=1e-6)
    if ignored:  # ignored pixels get no gradient
        assert torch.all(grad.permute(0, 2, 3, 1)[masks == IGNORE] == 0)


@pytest.mark.parametrize("name", list(CASES))
def test_loss_respects_another_ignore_index(name):
    ours, reference = CASES[name]
    logits, masks = sample(False, seed=3)
    masks[masks == 0] = 2  # class 0 is the ignore label now: no pixel of it is a class
    masks[:, :2, :] = 0
    x = logits.clone().requires_grad_(True)
    value = ours(x, masks, WEIGHTS, 0)
    (grad,) = torch.autograd.grad(value, x)
    x64 = logits.double().requires_grad_(True)
    expected = reference(x64, masks, WEIGHTS, 0)
    (expected_grad,) = torch.autograd.grad(expected, x64)
    assert value.item() == pytest.approx(expected.item(), rel=1e-5, abs=1e-6)
    torch.testing.assert_close(grad.double(), expected_grad, rtol=1e-4, atol=1e-6)


def test_lovasz_gradient_matches_a_finite_difference():
    logits, masks = sample(True, seed=5)
    x = logits.double().requires_grad_(True)
    (grad,) = torch.autograd.grad(lovasz_softmax(x, masks, WEIGHTS, IGNORE), x)
    h, index = 1e-3, (1, 2, 3, 4)
    plus, minus = logits.double().clone(), logits.double().clone()
    plus[index] += h
    minus[index] -= h
    numeric = (ref_lovasz(plus, masks, WEIGHTS, IGNORE) - ref_lovasz(minus, masks, WEIGHTS, IGNORE)) / (2 * h)
    assert grad[index].item() == pytest.approx(numeric.item(), rel=1e-3, abs=1e-6)


def test_all_pixels_ignored_gives_zero_and_a_zero_gradient():
    logits, masks = sample(False)
    masks[:] = IGNORE
    for name in ("ce", "focal", "ohem", "dice", "lovasz"):
        loss = SegmentationLoss(terms=((name, 1.0),))
        x = logits.clone().requires_grad_(True)
        value = loss.term(name, x, masks)
        (grad,) = torch.autograd.grad(value, x)
        assert value.item() == 0.0 and torch.all(grad == 0), name


# ----------------------------------------------------------------------------- the default, bit for bit


def old_segmentation_loss(logits, masks, normalize, weight=None):
    """The loss before loss.terms (fcn.training.loop.segmentation_loss at 630d203), verbatim."""
    total = F.cross_entropy(logits.float(), masks, weight=weight, ignore_index=255, reduction="sum")
    if not normalize:
        return total
    valid = masks != 255
    labelled = valid.sum().float() if weight is None else weight[masks[valid]].sum()
    return total / labelled.clamp_min(1)


def old_train_one_step(model, optimizer, batches, *, normalize, weight=None):
    """train_one_step's loss at 630d203 (one process, no AMP), verbatim but for DDP."""

    def count(masks):
        valid = masks != 255
        return valid.sum().float() if weight is None else weight[masks[valid]].sum()

    if normalize:
        denom = torch.as_tensor(sum(count(masks) for _, masks, _, _ in batches)).float().clamp_min(1)
    optimizer.zero_grad(set_to_none=True)
    loss_value = 0.0
    for images, masks, masks_b, lam in batches:
        logits = model(images)
        loss = old_segmentation_loss(logits, masks, False, weight)
        if masks_b is not None:
            loss = lam * loss + (1.0 - lam) * old_segmentation_loss(logits, masks_b, False, weight)
        if normalize:
            loss = loss / denom
        (loss * 1).backward()
        loss_value += loss.item()
    optimizer.step()
    return loss_value


def tiny_model(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(8, C, 1))


def micro_batches(mixup: bool) -> list:
    g = torch.Generator().manual_seed(1)
    out = []
    for k in range(3):
        images = torch.randn(2, 3, 6, 7, generator=g)
        masks = torch.randint(0, C, (2, 6, 7), generator=g)
        masks[torch.rand(masks.shape, generator=g) < 0.2] = IGNORE
        masks_b = masks.flip(0) if mixup and k != 1 else None
        out.append((images, masks, masks_b, 0.7 if masks_b is not None else 1.0))
    return out


@pytest.mark.parametrize("normalize", [True, False])
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("mixup", [False, True])
def test_default_loss_is_unchanged_bit_for_bit(normalize, weighted, mixup):
    weight = WEIGHTS if weighted else None
    batches = micro_batches(mixup)
    old_model, new_model = tiny_model(), tiny_model()
    old_opt = torch.optim.SGD(old_model.parameters(), lr=0.1, momentum=0.9)
    new_opt = torch.optim.SGD(new_model.parameters(), lr=0.1, momentum=0.9)
    loss_fn = build_loss(load_config().loss, 255, weight)  # the schema's default loss.terms
    for _ in range(2):
        old = old_train_one_step(old_model, old_opt, batches, normalize=normalize, weight=weight)
        new = train_one_step(new_model, new_opt, batches, normalize=normalize, weight=weight, loss_fn=loss_fn)
        assert old == new
    for a, b in zip(old_model.parameters(), new_model.parameters()):
        assert torch.equal(a, b)


def test_batch_mean_terms_are_averaged_over_micro_batches():
    batches = micro_batches(mixup=True)
    model = tiny_model()
    loss_fn = SegmentationLoss(terms=(("dice", 0.5),))
    with torch.no_grad():
        expected = 0.0
        for images, masks, masks_b, lam in batches:
            logits = model(images)
            value = dice_loss(logits, masks)
            if masks_b is not None:
                value = lam * value + (1 - lam) * dice_loss(logits, masks_b)
            expected += 0.5 * float(value) / len(batches)
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    assert train_one_step(model, opt, batches, normalize=True, loss_fn=loss_fn) == pytest.approx(
        expected, rel=1e-6
    )


def test_ce_plus_dice_is_the_normalised_ce_plus_the_mean_dice():
    batches = micro_batches(mixup=False)
    model = tiny_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    ce = train_one_step(model, opt, batches, normalize=True, loss_fn=SegmentationLoss())
    dice = train_one_step(
        model, opt, batches, normalize=True, loss_fn=SegmentationLoss(terms=(("dice", 1.0),))
    )
    both = train_one_step(
        model, opt, batches, normalize=True, loss_fn=SegmentationLoss(terms=(("ce", 1.0), ("dice", 0.5)))
    )
    assert both == pytest.approx(ce + 0.5 * dice, rel=1e-6)


# ----------------------------------------------------------------------------- config


def test_loss_terms_override_from_the_command_line():
    cfg = load_config(overrides=["loss.terms=[{name:ce,weight:1.0},{name:dice,weight:0.5}]"])
    assert [(t.name, t.weight) for t in cfg.loss.terms] == [("ce", 1.0), ("dice", 0.5)]
    assert build_loss(cfg.loss).terms == (("ce", 1.0), ("dice", 0.5))


@pytest.mark.parametrize(
    "override, message",
    [
        ("loss.terms=[{name: ce, weight: 1.0}, {name: dise, weight: 0.5}]", "loss.terms[1].name='dise'"),
        ("loss.terms=[{name: ce, weight: -1.0}]", "loss.terms[0].weight=-1.0"),
        ("loss.terms=[]", "loss.terms is empty"),
        ("loss.class_weights=inverse", "loss.class_weights='inverse'"),
        ("loss.class_weights=[1.0, 2.0]", "loss.class_weights has 2 values"),
        ("loss.ohem_keep=2.5", "loss.ohem_keep=2.5"),
        ("loss.label_smoothing=1.0", "loss.label_smoothing=1.0"),
        ("data.ignore_index=300", "data.ignore_index=300"),
    ],
)
def test_bad_loss_settings_are_one_line_errors_naming_the_key(override, message):
    with pytest.raises(ConfigError) as info:
        load_config(overrides=[override])
    text = str(info.value)
    assert message in text and "\n" not in text
    if "dise" in override:
        assert "did you mean 'dice'" in text


# ----------------------------------------------------------------------------- class weights from counts


def test_median_frequency_follows_eigen_and_fergus():
    from fcn.data.check import SplitReport, frequency_weights

    report = SplitReport("data.train", "", 3)
    report.counts[:4] = [600, 100, 50, 0]
    report.present_pixels[:4] = [1000, 400, 100, 0]  # pixels of the images where the class occurs
    freq = np.array([600 / 1000, 100 / 400, 50 / 100])
    median = np.median(freq)
    assert frequency_weights(report, "median_frequency", 4, 255) == pytest.approx([*(median / freq), 0.0])
    inverse = frequency_weights(report, "inverse_frequency", 4, 255)
    assert inverse == pytest.approx([750 / (3 * 600), 750 / (3 * 100), 750 / (3 * 50), 0.0])
    # the ignore index inside the classes counts as absent
    assert frequency_weights(report, "inverse_frequency", 4, 0)[0] == 0.0


def test_class_weights_are_counted_once_cached_and_logged(tmp_path, capsys):
    from fcn.core.distributed import env_info
    from fcn.data.check import split_report_cached
    from fcn.data.toy import TOY_CLASSES, generate
    from fcn.training.loop import class_weight_tensor

    generate(tmp_path, seed=0, n_train=6, n_val=2, size=24)
    cfg = load_config(
        overrides=[
            "data.train.name=folder",
            f"data.train.root={tmp_path}",
            f"data.classes=[{','.join(TOY_CLASSES)}]",
            f"model.num_classes={len(TOY_CLASSES)}",
            "data.num_workers=0",
            "loss.class_weights=inverse_frequency",
        ]
    )
    weights = class_weight_tensor(cfg, torch.device("cpu"), env_info())
    caches = list(tmp_path.glob(".fcn_class_counts_train_*.json"))
    assert len(caches) == 1
    counts = np.array(json.loads(caches[0].read_text())["counts"])
    assert counts[: len(TOY_CLASSES)].sum() > 0
    total = counts[: len(TOY_CLASSES)].sum()
    assert float((weights.double() * torch.from_numpy(counts[: len(TOY_CLASSES)])).sum()) == pytest.approx(
        total
    )
    assert "loss.class_weights=inverse_frequency (counted in 6 masks" in capsys.readouterr().out
    report, cache, cached = split_report_cached(cfg.data.train, cfg.data)
    assert cached and cache == caches[0]
    # a changed mask file is a new checksum, counted again
    mask = sorted((tmp_path / "SegmentationClass").glob("*.png"))[0]
    os.utime(mask, ns=(mask.stat().st_atime_ns, mask.stat().st_mtime_ns + 10**9))
    assert split_report_cached(cfg.data.train, cfg.data)[2] is False


# ----------------------------------------------------------------------------- data.ignore_index=0


def test_ignore_index_fills_padding_collate_and_mosaic():
    from torchvision import tv_tensors

    from fcn.data.collate import pad_collate
    from fcn.data.mixing import mosaic
    from fcn.data.transforms import RandomScaleCrop

    crop = RandomScaleCrop(12, (1.0, 1.0), ignore_index=0)
    mask = tv_tensors.Mask(torch.full((6, 6), 3, dtype=torch.uint8))
    out = crop.transform(mask, crop.make_params([mask]))
    assert set(out.unique().tolist()) == {0, 3}  # 6x6 of 3 padded to 12x12 with 0
    _, masks = pad_collate(
        [(torch.ones(3, 4, 4), torch.full((4, 4), 2)), (torch.ones(3, 2, 5), torch.full((2, 5), 2))], 7
    )
    assert masks[1, 3, 0] == 7 and masks[0, 0, 4] == 7
    fills = set()
    for seed in range(20):  # a centre off the middle leaves padding in a quadrant
        g = torch.Generator().manual_seed(seed)
        _, mixed = mosaic(torch.ones(2, 3, 9, 9), torch.full((2, 9, 9), 2), g, ignore_index=9)
        fills.update(mixed.unique().tolist())
    assert fills == {2, 9}


def test_ignore_index_0_with_labels_1_to_n_trains_end_to_end(tmp_path):
    from PIL import Image

    from fcn.data.toy import TOY_CLASSES, generate
    from fcn.training.loop import fit

    root = tmp_path / "toy0"
    generate(root, seed=0, n_train=8, n_val=3, size=32)
    colours = [[224, 224, 192], [0, 0, 0], [128, 0, 0], [0, 128, 0], [128, 128, 0]]
    flat = [c for colour in colours for c in colour]
    for path in (root / "SegmentationClass").glob("*.png"):
        labels = np.array(Image.open(path), dtype=np.int64)
        shifted = np.where(labels == 255, 0, labels + 1).astype(np.uint8)  # 0 = ignore, classes 1..4
        image = Image.fromarray(shifted, mode="P")
        image.putpalette(flat)
        image.save(path)
    names = ["ignored", *TOY_CLASSES]
    overrides = [
        *(f"data.{s}.name=folder" for s in ("train", "val")),
        *(f"data.{s}.root={root}" for s in ("train", "val")),
        "data.val.split=val",
        f"data.classes=[{','.join(names)}]",
        f"data.palette={colours}",
        "data.ignore_index=0",
        f"model.num_classes={len(names)}",
        "model.arch=fcn32s",
        "model.backbone=resnet18",
        "model.geometry=same",
        "model.pretrained=false",
        "data.transforms.crop_size=40",  # larger than the images: padded with the ignore label
        "data.batch_size=4",
        "data.val_batch_size=2",
        "data.num_workers=0",
        "data.mixing.mosaic_p=0.5",
        "loss.terms=[{name:ce,weight:1.0},{name:dice,weight:0.5},{name:lovasz,weight:0.5}]",
        "loss.class_weights=inverse_frequency",
        "optimizer.name=adamw",
        "training.iters=3",
        "training.device=cpu",
        "training.vis_images=1",
        f"training.run_dir={tmp_path / 'run'}",
    ]
    summary = fit(load_config(overrides=overrides))
    metrics = summary["metrics"]
    assert summary["iteration"] == 3 and math.isfinite(metrics["mean_iou"])
    assert math.isnan(metrics["acc"][0])  # label 0 is never a ground truth: ignored by the metrics
    assert all(math.isfinite(a) for a in metrics["acc"][1:])
    counts = json.loads(next(root.glob(".fcn_class_counts_train_*.json")).read_text())["counts"]
    assert counts[255] == 0 and counts[0] > 0  # the void band moved to 0
