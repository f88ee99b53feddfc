"""The reference nets of fcn.berkeleyvision.org computed layer by layer, for the model tests.

``reference_trunk`` and ``reference_head`` are written from voc-fcn32s/16s/8s/8s-atonce
train.prototxt with plain functional calls and Caffe's rules: Convolution is cross-correlation,
Pooling rounds up, Deconvolution is the transposed convolution with the blob laid out (in, out, kh,
kw), Crop takes ``offset`` on both spatial axes and fails when out of range. ``vgg_weights`` makes
random conv1_1 ... fc7 weights in the reference naming. Used by tests/models/test_models_reference.py (the
VOC nets), tests/models/test_paper_models.py (the NYUDv2 and SIFT Flow nets) and the Caffe import tests.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

VGG = [("conv1_1", 3, 64), ("conv1_2", 64, 64), ("conv2_1", 64, 128), ("conv2_2", 128, 128)]
VGG += [("conv3_1", 128, 256), ("conv3_2", 256, 256), ("conv3_3", 256, 256)]
VGG += [("conv4_1", 256, 512), ("conv4_2", 512, 512), ("conv4_3", 512, 512)]
VGG += [("conv5_1", 512, 512), ("conv5_2", 512, 512), ("conv5_3", 512, 512)]
POOL_AFTER = {"conv1_2": 1, "conv2_2": 2, "conv3_3": 3, "conv4_3": 4, "conv5_3": 5}
DECONVS = {
    "fcn32s": {"upscore": 64},
    "fcn16s": {"upscore2": 4, "upscore16": 32},
    "fcn8s": {"upscore2": 4, "upscore_pool4": 4, "upscore8": 16},
}


def vgg_weights(g: torch.Generator, in_channels: int = 3, real: bool = True) -> dict:
    """Random conv1_1 ... fc7 in the reference naming (meta tensors when not real)."""
    state = {}
    layers = [(n, (in_channels if n == "conv1_1" else c_in), c_out, 3) for n, c_in, c_out in VGG]
    layers += [("fc6", 512, 4096, 7), ("fc7", 4096, 4096, 1)]
    for name, c_in, c_out, k in layers:
        if real:
            state[f"{name}.weight"] = torch.randn(c_out, c_in, k, k, generator=g) * math.sqrt(
                2 / (k * k * c_in)
            )
            state[f"{name}.bias"] = torch.randn(c_out, generator=g) * 0.1
        else:
            state[f"{name}.weight"] = torch.empty(c_out, c_in, k, k, device="meta")
            state[f"{name}.bias"] = torch.empty(c_out, device="meta")
    return state


def reference_trunk(w: dict, x: torch.Tensor) -> dict:
    """Return pool3, pool4 and drop7 (dropout is the identity at test time) of the reference nets."""
    pools = {}
    for name, _, _ in VGG:
        x = F.relu(
            F.conv2d(x, w[f"{name}.weight"], w[f"{name}.bias"], padding=100 if name == "conv1_1" else 1)
        )
        if name in POOL_AFTER:
            x = F.max_pool2d(x, kernel_size=2, stride=2, ceil_mode=True)
            pools[POOL_AFTER[name]] = x
    x = F.relu(F.conv2d(x, w["fc6.weight"], w["fc6.bias"]))
    x = F.relu(F.conv2d(x, w["fc7.weight"], w["fc7.bias"]))
    return {"pool3": pools[3], "pool4": pools[4], "drop7": x}


def caffe_crop(x: torch.Tensor, offset: int, h: int, w: int) -> torch.Tensor:
    assert x.shape[2] >= offset + h and x.shape[3] >= offset + w, "Caffe's Crop would fail"
    return x[:, :, offset : offset + h, offset : offset + w]


def reference_head(w: dict, trunk: dict, arch: str, h: int, wd: int) -> torch.Tensor:
    """Return the reference net's score blob for an input of h x wd pixels."""
    score_fr = F.conv2d(trunk["drop7"], w["score_fr.weight"], w["score_fr.bias"])
    if arch == "fcn32s":
        upscore = F.conv_transpose2d(score_fr, w["upscore.weight"], stride=32)
        return caffe_crop(upscore, 19, h, wd)
    upscore2 = F.conv_transpose2d(score_fr, w["upscore2.weight"], stride=2)
    pool4 = trunk["pool4"] * 0.01 if arch == "fcn8s_atonce" else trunk["pool4"]  # scale_pool4
    score_pool4 = F.conv2d(pool4, w["score_pool4.weight"], w["score_pool4.bias"])
    fuse_pool4 = upscore2 + caffe_crop(score_pool4, 5, upscore2.shape[2], upscore2.shape[3])
    if arch == "fcn16s":
        upscore16 = F.conv_transpose2d(fuse_pool4, w["upscore16.weight"], stride=16)
        return caffe_crop(upscore16, 27, h, wd)
    upscore_pool4 = F.conv_transpose2d(fuse_pool4, w["upscore_pool4.weight"], stride=2)
    pool3 = trunk["pool3"] * 0.0001 if arch == "fcn8s_atonce" else trunk["pool3"]  # scale_pool3
    score_pool3 = F.conv2d(pool3, w["score_pool3.weight"], w["score_pool3.bias"])
    fuse_pool3 = upscore_pool4 + caffe_crop(score_pool3, 9, upscore_pool4.shape[2], upscore_pool4.shape[3])
    upscore8 = F.conv_transpose2d(fuse_pool3, w["upscore8.weight"], stride=8)
    return caffe_crop(upscore8, 31, h, wd)


def reference_feature_sizes(h: int) -> dict:
    """Return the sizes of pool3, pool4 and drop7 along one axis for an input of h pixels."""
    size = h + 2 * 100 - 2  # conv1_1: 3x3, pad 100
    pools = []
    for _ in range(5):
        size = -(-size // 2)  # 2x2/2 max-pool, rounded up
        pools.append(size)
    return {"pool3": pools[2], "pool4": pools[3], "drop7": pools[4] - 6}  # fc6: 7x7, no pad


def assert_close_relative(actual: torch.Tensor, expected: torch.Tensor) -> None:
    assert actual.shape == expected.shape
    scale = expected.abs().max().item()
    assert scale > 0
    torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-5 * scale)
