"""The paper's other nets (#24) against independent, layer-by-layer computations of their prototxts.

- pascalcontext-fcn*s: the VOC nets with 60 outputs (num_classes only: test_models_reference covers them).
- nyud-fcn32s-color-d (early fusion): data = Concat(color, depth), 4 channels into ``conv1_1_bgrd``
  (pad 100), then FCN-32s (score_fr, upscore k64/s32, crop 19).
- nyud-fcn32s-color-hha (late fusion): a whole trunk per modality (``conv1_1color`` ... ``fc7color``,
  ``score_frcolor``; the same with ``hha``), ``score_fused`` = Eltwise SUM coeff [0.5, 0.5], upscore
  k64/s32, crop 19.
- siftflow-fcn*s: one trunk, two heads with their own skip paths (``score_fr_sem``, ``upscore2_sem``,
  ``score_pool4_sem`` crop 5, ``fuse_pool4_sem``, ``upscore_pool4_sem``, ``score_pool3_sem`` crop 9,
  ``upscore8_sem`` crop 31; the same with ``_geo``), loss + loss_geo (SoftmaxWithLoss, normalize false).

The reference functions are those of tests/helpers_reference.py (written from voc-fcn*s'
prototxts: trunk, crops and heads), fed with each net's own weights under their reference names;
the models get their weights only through load_reference_weights, so the names are tested too.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from fcn.config import load_config
from fcn.models import FCN8s, FCN16s, FCN32s, build_model, load_reference_weights
from fcn.training.losses import build_loss
from tests.helpers import EARLY, LATE, head_weights, model_of, renamed, siftflow
from tests.helpers_reference import (
    assert_close_relative,
    caffe_crop,
    reference_feature_sizes,
    reference_head,
    reference_trunk,
    vgg_weights,
)

NYUD = 40
SIFT_SEM, SIFT_GEO = 33, 3
CLASSES = {"fcn32s": FCN32s, "fcn16s": FCN16s, "fcn8s": FCN8s}


# ------------------------------------------------------------------ whole nets (VGG16 on a CPU: slow)


@pytest.mark.slow
def test_early_fusion_is_nyud_fcn32s_color_d():
    g = torch.Generator().manual_seed(0)
    w = {**vgg_weights(g, in_channels=4), **head_weights(g, "fcn32s", NYUD)}
    model = model_of(EARLY)
    load_reference_weights(model, renamed(w, lambda n: "conv1_1_bgrd" if n == "conv1_1" else n))
    x = torch.randn(1, 4, 7, 5, generator=g) * 50  # Concat(color, depth): 3 + 1 channels
    with torch.no_grad():
        expected = reference_head(w, reference_trunk(w, x), "fcn32s", 7, 5)
        assert_close_relative(model(x), expected)


@pytest.mark.slow
def test_late_fusion_is_nyud_fcn32s_color_hha():
    g = torch.Generator().manual_seed(1)
    color = {**vgg_weights(g), **head_weights(g, "fcn32s", NYUD)}
    hha = {**vgg_weights(g), **head_weights(g, "fcn32s", NYUD)}
    model = model_of(LATE)
    state = {}
    for suffix, w in (("color", color), ("hha", hha)):
        state.update(
            renamed(
                {k: v for k, v in w.items() if not k.startswith("upscore")},
                lambda n, suffix=suffix: n + suffix,
            )
        )
    state["upscore.weight"] = color["upscore.weight"]
    load_reference_weights(model, state)
    x = torch.randn(1, 6, 7, 5, generator=g) * 50
    with torch.no_grad():
        score_color = F.conv2d(
            reference_trunk(color, x[:, :3])["drop7"], color["score_fr.weight"], color["score_fr.bias"]
        )
        score_hha = F.conv2d(
            reference_trunk(hha, x[:, 3:])["drop7"], hha["score_fr.weight"], hha["score_fr.bias"]
        )
        score_fused = 0.5 * score_color + 0.5 * score_hha  # Eltwise { operation: SUM coeff: 0.5 coeff: 0.5 }
        upscore = F.conv_transpose2d(score_fused, color["upscore.weight"], stride=32)
        assert_close_relative(model(x), caffe_crop(upscore, 19, 7, 5))


@pytest.mark.slow
def test_siftflow_fcn8s_has_two_heads_on_one_trunk():
    g = torch.Generator().manual_seed(2)
    trunk, sem, geo = vgg_weights(g), head_weights(g, "fcn8s", SIFT_SEM), head_weights(g, "fcn8s", SIFT_GEO)
    model = model_of(siftflow("fcn8s"))
    load_reference_weights(
        model, {**trunk, **renamed(sem, lambda n: n + "_sem"), **renamed(geo, lambda n: n + "_geo")}
    )
    x = torch.randn(1, 3, 7, 5, generator=g) * 50
    with torch.no_grad():
        feats = reference_trunk(trunk, x)
        score_sem = reference_head({**trunk, **sem}, feats, "fcn8s", 7, 5)
        score_geo = reference_head({**trunk, **geo}, feats, "fcn8s", 7, 5)
        out = model(x)
    assert out.shape == (1, SIFT_SEM + SIFT_GEO, 7, 5)
    assert_close_relative(out[:, :SIFT_SEM], score_sem)
    assert_close_relative(out[:, SIFT_SEM:], score_geo)


# ------------------------------------------------------------------ heads at many sizes (cheap)


@pytest.mark.parametrize("arch", ["fcn32s", "fcn16s", "fcn8s"])
@pytest.mark.parametrize("size", [(1, 1), (33, 47), (100, 3)])
def test_siftflow_heads_compute_the_reference_heads_at_any_size(arch, size):
    h, w = size
    g = torch.Generator().manual_seed(h * 1000 + w)
    sem, geo = head_weights(g, arch, SIFT_SEM), head_weights(g, arch, SIFT_GEO)
    model = model_of(siftflow(arch), trunk=False)
    state = {
        **vgg_weights(g, real=False),
        **renamed(sem, lambda n: n + "_sem"),
        **renamed(geo, lambda n: n + "_geo"),
    }
    load_reference_weights(model, state)
    sh, sw = reference_feature_sizes(h), reference_feature_sizes(w)
    channels = {"pool3": 256, "pool4": 512, "drop7": 4096}
    trunk = {k: torch.rand(1, c, sh[k], sw[k], generator=g) * 10 for k, c in channels.items()}
    feats = {8: trunk["pool3"], 16: trunk["pool4"], 32: trunk["drop7"]}
    with torch.no_grad():
        assert_close_relative(model.decode(feats, (h, w)), reference_head(sem, trunk, arch, h, w))
        assert_close_relative(model.decode(feats, (h, w), "_geo"), reference_head(geo, trunk, arch, h, w))


@pytest.mark.parametrize("size", [(1, 1), (37, 29), (500, 375)])
def test_nyud_nets_give_logits_of_the_input_size(size):
    with torch.device("meta"):
        for overrides, channels in ((EARLY, 4), (LATE, 6)):
            cfg = load_config(
                overrides=["model.pretrained=false", "data.transforms.normalization=caffe", *overrides]
            )
            model = build_model(cfg.model).eval()
            assert model(torch.empty(2, channels, *size)).shape == (2, NYUD, *size)


@pytest.mark.slow
def test_late_fusion_trunks_are_separate_and_start_from_the_same_imagenet_weights(tmp_path):
    # A random torchvision VGG16 state dict stands for the ImageNet weights each trunk starts from
    # (the authors initialise both trunks from VGG16); score_fr of each starts at zero.
    import torchvision

    with torch.device("meta"):
        shapes = {k: v.shape for k, v in torchvision.models.vgg16().state_dict().items()}
    g = torch.Generator().manual_seed(0)
    path = tmp_path / "vgg16.pth"
    torch.save({k: torch.randn(s, generator=g) * 0.01 for k, s in shapes.items()}, path)
    cfg = load_config(overrides=[*LATE, f"model.pretrained={path}", "data.transforms.normalization=caffe"])
    model = build_model(cfg.model)
    color, hha = model.backbone["color"], model.backbone["hha"]
    assert color is not hha and torch.equal(color.fc7.weight, hha.fc7.weight)
    assert not model.score_fr["color"].weight.any() and not model.score_fr["hha"].weight.any()


# ------------------------------------------------------------------ the SIFT Flow loss


def test_siftflow_loss_is_the_sum_of_both_heads_unnormalised_cross_entropies():
    cfg = load_config(overrides=[*siftflow("fcn32s"), "data.transforms.normalization=caffe"])
    loss_fn = build_loss(cfg.loss, 255, None, 33, 3)
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 36, 4, 5, generator=g, requires_grad=True)
    sem = torch.randint(0, 33, (2, 4, 5), generator=g)
    geo = torch.randint(0, 3, (2, 4, 5), generator=g)
    sem[0, 0, :3] = 255  # void in each map, not at the same pixels
    geo[1, 2, 1:] = 255
    masks = torch.stack([sem, geo], 1)
    # Written out: -log softmax of the labelled class, each head over its own channels, summed.
    expected = torch.zeros((), dtype=torch.float64)
    for (lo, hi), labels in (((0, 33), sem), ((33, 36), geo)):
        logp = torch.log_softmax(logits[:, lo:hi].double(), 1)
        for n, i, j in torch.nonzero(labels != 255).tolist():
            expected = expected - logp[n, labels[n, i, j], i, j]
    got = loss_fn.pixel_sum(logits, masks)
    torch.testing.assert_close(got.double(), expected, rtol=1e-5, atol=1e-5)
    assert loss_fn.batch_mean(logits, masks) is None
    assert int(loss_fn.labelled(masks)) == 2 * 20 - 3 + 2 * 20 - 4
    # The loss reaches both heads: each one's gradient equals its own term's.
    (grad,) = torch.autograd.grad(got, logits)
    (grad_geo,) = torch.autograd.grad(
        F.cross_entropy(logits[:, 33:], geo, ignore_index=255, reduction="sum"), logits
    )
    torch.testing.assert_close(grad[:, 33:], grad_geo[:, 33:])


def test_two_head_evaluation_scores_each_head_on_its_own_mask():
    from fcn.training.validate import evaluate

    sem_pred = torch.tensor([[0, 1, 2], [2, 2, 0]])
    geo_pred = torch.tensor([[0, 0, 1], [1, 1, 1]])

    class Fixed(torch.nn.Module):
        def forward(self, x):  # 3 semantic channels, then 2 geometric ones, one-hot of the predictions
            sem = F.one_hot(sem_pred, 3).permute(2, 0, 1).float()
            geo = F.one_hot(geo_pred, 2).permute(2, 0, 1).float() * 5  # larger: a joint argmax would pick it
            return torch.cat([sem, geo])[None].expand(x.shape[0], -1, -1, -1)

    sem = torch.tensor([[0, 1, 1], [2, 255, 0]])  # 5 labelled, 4 right
    geo = torch.tensor([[0, 1, 1], [255, 1, 0]])  # 5 labelled, 3 right
    loader = [(torch.zeros(1, 3, 2, 3), torch.stack([sem, geo])[None])]
    result = evaluate(Fixed(), loader, 3, torch.device("cpu"), geometric_classes=2)
    assert result["pixel_acc"] == pytest.approx(4 / 5)
    assert result["geometric_pixel_acc"] == pytest.approx(3 / 5)
    assert result["geometric"]["acc"] == pytest.approx([1 / 2, 2 / 3])  # class 0: 1 of 2; class 1: 2 of 3
    assert len(result["iou"]) == 3 and len(result["geometric"]["iou"]) == 2
