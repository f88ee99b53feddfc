"""Plain helpers shared by the test modules: data trees, toy configs, fake checkpoints' weights.

A test module imports them as ``from tests.helpers import ...``; fixtures live in conftest.py, and
no test module imports another (tests/project/test_test_layout.py checks).
"""

from __future__ import annotations

import importlib.util
import math
import os
import re
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import scipy.sparse
import torch
from numpy.lib.stride_tricks import sliding_window_view
from PIL import Image
from torch import nn

from fcn.config import load_config
from fcn.data import (
    voc_palette,
)
from fcn.models import (
    build_model,
)
from tests.helpers_reference import DECONVS, POOL_AFTER, VGG, vgg_weights

# --- from tests/training/test_training_loop.py ---------------------------------------------------------------------

REPO = Path(__file__).resolve().parent.parent


def toy_overrides(root: Path, run_dir: Path, *extra: str) -> list[str]:
    """Return overrides for a fast CPU run on the toy data with a small backbone."""
    from fcn.data.toy import TOY_CLASSES

    return [
        "data.train.name=folder",
        f"data.train.root={root}",
        "data.train.split=train",
        "data.val.name=folder",
        f"data.val.root={root}",
        "data.val.split=val",
        f"data.classes=[{','.join(TOY_CLASSES)}]",
        f"model.num_classes={len(TOY_CLASSES)}",
        "model.arch=fcn8s",
        "model.backbone=resnet18",
        "model.geometry=same",
        "model.pretrained=false",
        "data.transforms.crop_size=32",
        "data.transforms.max_shift=0",
        "data.batch_size=4",
        "data.num_workers=0",
        "optimizer.name=adamw",
        "optimizer.lr=0.003",
        "optimizer.weight_decay=0.0",
        "training.device=cpu",
        "training.vis_images=2",
        f"training.run_dir={run_dir}",
        *extra,
    ]


def python_env(**extra: str) -> dict[str, str]:
    """Return the environment for a Python child process: this one's, with the repository put first
    on PYTHONPATH (an existing PYTHONPATH is kept after it) and the extra variables set."""
    path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
    return dict(os.environ, **extra, PYTHONPATH=path)


# --- from tests/inference/test_evaluate_predict.py -----------------------------------------------------------

CLASSES = ["background", "bright", "dark"]


PALETTE = [[0, 0, 0], [250, 40, 40], [40, 40, 250]]


SIZES = [(75, 101), (67, 131), (110, 79), (93, 93)]  # (H, W): odd sizes, none a multiple of 32


# The fixture's model (_brightness_detector) thresholds brightness v (a pixel's mean RGB in [0, 1]):
# class 1 (bright) where v - 0.5 > THRESHOLD, class 2 (dark) where 0.5 - v > THRESHOLD, else class 0.
GAIN, THRESHOLD = 10.0, 0.27


MARGIN = 0.05  # brightness margin around THRESHOLD inside which _known_labels claims nothing


def _sample(rng: np.random.Generator, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """Return (RGB uint8 image, uint8 mask): a bright box (1) in the left half and a dark box (2) in
    the right half on grey noise, with a void (255) border around each box. The boxes span a third
    to a half of the height and a quarter to a half of the width: large enough for the stride-8
    model to see their interiors (_known_labels) in the evaluation images."""
    image = rng.integers(100, 156, (h, w, 3)).astype(np.uint8)
    mask = np.zeros((h, w), np.uint8)
    for label, value, left in ((1, 240, 0), (2, 15, w // 2)):
        bh, bw = int(rng.integers(h // 3, h // 2 + 1)), int(rng.integers(w // 4, w // 2 - 1))
        y, x = int(rng.integers(0, h - bh + 1)), left + int(rng.integers(0, w // 2 - bw + 1))
        mask[y : y + bh, x : x + bw] = 255
        mask[y + 1 : y + bh - 1, x + 1 : x + bw - 1] = label
        image[y : y + bh, x : x + bw] = value
    return image, mask


def _known_labels(image: np.ndarray) -> np.ndarray:
    """Return the class the fixture's raw weights predict at each pixel of an RGB uint8 image by
    construction, 255 where it is not known.

    Output pixel y reads the stride-8 scores of the features i with 8i - 11 <= y <= 8i + 4
    (upscore8: kernel 16, stride 8, padding 4), each the maximum over input rows 8i - 2 ... 8i + 2
    (the stem's stride 2, then the 3x3/2 max pool), so input rows y - 13 ... y + 6; columns alike.
    Where all those pixels are of one brightness class, MARGIN or more from the threshold, every
    feature's logits put that class ahead by GAIN * MARGIN, and so does upscore8's weighted sum
    (all its weights are positive).
    """
    v = image.astype(np.float64).mean(-1) / 255 - 0.5
    pixel = np.full(v.shape, 255)
    pixel[np.abs(v) < THRESHOLD - MARGIN] = 0
    pixel[v > THRESHOLD + MARGIN] = 1
    pixel[v < -THRESHOLD - MARGIN] = 2
    pad = ((13, 6), (13, 6))  # the window of output pixel (y, x): rows y - 13 ... y + 6, columns alike

    def windows(fill: int) -> np.ndarray:
        return sliding_window_view(np.pad(pixel, pad, constant_values=fill), (20, 20))

    low, high = windows(255).min(axis=(-2, -1)), windows(0).max(axis=(-2, -1))
    return np.where(low == high, high, 255).astype(np.uint8)


def _write_folder_dataset(root: Path) -> list[str]:
    rng = np.random.default_rng(0)
    for sub in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (root / sub).mkdir(parents=True)
    ids = []
    for i, (h, w) in enumerate(SIZES):
        name = f"img_{i}"
        image, mask = _sample(rng, h, w)
        Image.fromarray(image).save(root / "JPEGImages" / f"{name}.png")
        Image.fromarray(mask).save(root / "SegmentationClass" / f"{name}.png")
        ids.append(name)
    (root / "ImageSets" / "Segmentation" / "val.txt").write_text("\n".join(ids) + "\n")
    return ids


def _overrides(root: Path) -> list[str]:
    return [
        "model.arch=fcn8s",
        "model.backbone=resnet18",
        "model.geometry=same",
        "model.pretrained=false",
        f"model.num_classes={len(CLASSES)}",
        f"data.classes=[{','.join(CLASSES)}]",
        "data.palette=[" + ",".join(f"[{r},{g},{b}]" for r, g, b in PALETTE) + "]",
        "data.val.name=folder",
        f"data.val.root={root}",
        "data.val.split=val",
        "data.num_workers=0",
    ]


def _brightness_detector(cfg) -> nn.Module:
    """Return cfg's ResNet-18 FCN-8s with weights set (not trained) so that it thresholds brightness.

    The stem passes v - 0.5 and 0.5 - v (v: the pixel's mean RGB in [0, 1], computed from the
    normalised input) on channels 0 and 1, and its ReLU keeps the positive one; every BatchNorm is
    the identity and every residual branch is zero, so each block passes its (non-negative) input
    through, the downsampling 1x1 convolutions keeping channels 0 and 1; score_pool3 maps them to
    the logits (0, GAIN * (bright - THRESHOLD), GAIN * (dark - THRESHOLD)); score_fr and score_pool4
    stay zero and the upsampling bilinear. What it predicts follows from these numbers, not from
    the CPU's kernels or a training run (see _known_labels).
    """
    from fcn.data.transforms import IMAGENET_MEAN, IMAGENET_STD, input_normalization
    from fcn.models import build_model

    assert input_normalization(cfg.data.transforms) in ("auto", "torchvision")  # the stem undoes it
    model = build_model(cfg.model)
    net = model.backbone
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, nn.Conv2d):
                module.weight.zero_()
            elif isinstance(module, nn.BatchNorm2d):
                module.weight.fill_(1.0)
                module.bias.zero_()
                module.running_mean.zero_()
                module.running_var.fill_(1.0)
        # Normalised x_c = (p_c - mean_c) / std_c with p_c in [0, 1], so v = sum_c (std_c x_c + mean_c) / 3.
        weight = torch.tensor(IMAGENET_STD) / 3
        offset = sum(IMAGENET_MEAN) / 3 - 0.5
        net.conv1.weight[0, :, 3, 3], net.conv1.weight[1, :, 3, 3] = weight, -weight  # 7x7 centre tap
        net.bn1.bias[0], net.bn1.bias[1] = offset, -offset
        for layer in (net.layer2, net.layer3, net.layer4):
            layer[0].downsample[0].weight[0, 0] = layer[0].downsample[0].weight[1, 1] = 1.0
        model.score_pool3.weight[1, 0] = model.score_pool3.weight[2, 1] = GAIN
        model.score_pool3.bias.copy_(torch.tensor([0.0, -GAIN * THRESHOLD, -GAIN * THRESHOLD]))
    return model.eval()


def _read_png(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.array(image)


# --- from tests/project/test_bench.py ----------------------------------------------------------------------


def load_bench(name: str):
    """Return the module `python -m bench.<name>` runs (bench.model's __main__ for a subpackage)."""
    module = importlib.import_module(f"bench.{name}")
    return importlib.import_module(f"bench.{name}.__main__") if hasattr(module, "__path__") else module


# --- from tests/data/test_data_datasets.py --------------------------------------------------------------

VOC_TRAIN = ["2007_000032", "2007_000039", "2008_000002"]


VOC_VAL = ["2007_000033", "2007_000042", "2009_000013"]


SEG11VALID = ["2007_000033", "2009_000013"]


SBD_TRAIN = ["2008_000002", "2008_000003", "2007_000033", "2010_000001"]  # one VOC train id, one VOC val id


SBD_VAL = ["2008_000004", "2008_000003"]  # 2008_000003 repeated: must appear once in voc_aug


def index_of(sample_id: str) -> int:
    """Return a small number that identifies an id (its last digits), used to make each pair unique."""
    return int(sample_id[-3:]) % 20 + 1


def sample_size(sample_id: str) -> tuple[int, int]:
    """Return a (W, H) unique to the id, so that a wrongly paired image and mask differ in size."""
    k = index_of(sample_id)
    return 24 + k, 16 + (k * 7) % 13


def sample_label(sample_id: str, source: str = "voc") -> np.ndarray:
    """Return the id's label map: background, a box of class index_of(id) (SBD: the next class), void rim."""
    w, h = sample_size(sample_id)
    label = np.zeros((h, w), dtype=np.uint8)
    k = index_of(sample_id) if source == "voc" else index_of(sample_id) % 20 + 1
    label[3 : h - 3, 4 : w - 4] = k
    if source == "voc":  # VOC's void border; SBD's .mat files have none
        label[2, 3 : w - 3] = 255
    return label


def write_image(path: Path, sample_id: str) -> None:
    """Write a uniform JPEG whose grey level encodes the id."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", sample_size(sample_id), (10 * index_of(sample_id),) * 3).save(path, quality=100)


def write_palette_png(path: Path, label: np.ndarray) -> None:
    """Write a label map as a palette ('P') PNG with VOC's colours, like SegmentationClass/."""
    path.parent.mkdir(parents=True, exist_ok=True)
    img = Image.fromarray(label, mode="P")
    img.putpalette(voc_palette().tobytes())
    img.save(path)


def write_sbd_mat(path: Path, label: np.ndarray) -> None:
    """Write an SBD cls/*.mat: a GTcls struct with Boundaries (cell of sparse), Segmentation, CategoriesPresent."""
    path.parent.mkdir(parents=True, exist_ok=True)
    boundaries = np.empty((20, 1), dtype=object)
    for c in range(20):
        boundaries[c, 0] = scipy.sparse.csc_matrix(label.shape, dtype=np.float64)
    present = np.unique(label[(label > 0) & (label < 255)]).astype(np.uint8)
    gtcls = {"Boundaries": boundaries, "Segmentation": label, "CategoriesPresent": present}
    scipy.io.savemat(str(path), {"GTcls": gtcls})


def make_voc_tree(root: Path, seg11valid: bool = True) -> Path:
    """Write VOCdevkit/VOC2012 as the official archive extracts (plus <root>/seg11valid.txt); return its dir."""
    base = root / "VOCdevkit" / "VOC2012"
    for i in VOC_TRAIN + VOC_VAL:
        write_image(base / "JPEGImages" / f"{i}.jpg", i)
        write_palette_png(base / "SegmentationClass" / f"{i}.png", sample_label(i))
    sets = base / "ImageSets" / "Segmentation"
    sets.mkdir(parents=True, exist_ok=True)
    (sets / "train.txt").write_text("\n".join(VOC_TRAIN) + "\n")
    (sets / "val.txt").write_text("\n".join(VOC_VAL) + "\n")
    (sets / "trainval.txt").write_text("\n".join(VOC_TRAIN + VOC_VAL) + "\n")
    if seg11valid:
        (root / "seg11valid.txt").write_text("\n".join(SEG11VALID) + "\n")
    return base


def make_sbd_tree(root: Path) -> Path:
    """Write benchmark_RELEASE/dataset as benchmark.tgz extracts (img/, cls/, train.txt, val.txt); return it."""
    base = root / "benchmark_RELEASE" / "dataset"
    for i in SBD_TRAIN + SBD_VAL:
        write_image(base / "img" / f"{i}.jpg", i)
        write_sbd_mat(base / "cls" / f"{i}.mat", sample_label(i, "sbd"))
    (base / "train.txt").write_text("\n".join(SBD_TRAIN) + "\n")
    (base / "val.txt").write_text("\n".join(SBD_VAL) + "\n")
    return base


# --- from tests/models/test_models_reference.py -----------------------------------------------------------

NUM_CLASSES = 21


def random_reference_weights(seed: int = 0, trunk: bool = True) -> dict:
    """Return random weights for every layer of the four nets, in the reference naming.

    trunk=False leaves conv1_1 ... fc7 as meta tensors (shapes only) for tests of the heads alone.
    """
    g = torch.Generator().manual_seed(seed)

    def conv(name, c_out, c_in, k, std):
        state[f"{name}.weight"] = torch.randn(c_out, c_in, k, k, generator=g) * std
        state[f"{name}.bias"] = torch.randn(c_out, generator=g) * 0.1

    state: dict = vgg_weights(g, real=trunk)
    conv("score_fr", NUM_CLASSES, 4096, 1, math.sqrt(1 / 4096))
    conv("score_pool4", NUM_CLASSES, 512, 1, math.sqrt(1 / 512))
    conv("score_pool3", NUM_CLASSES, 256, 1, math.sqrt(1 / 256))
    for name, k in {**DECONVS["fcn32s"], **DECONVS["fcn16s"], **DECONVS["fcn8s"]}.items():
        state[f"{name}.weight"] = torch.randn(NUM_CLASSES, NUM_CLASSES, k, k, generator=g) * 0.05
    return state


def weights_for(state: dict, arch: str) -> dict:
    """Return the subset of state that the reference net ``arch`` has."""
    heads = {"fcn32s": ["score_fr"], "fcn16s": ["score_fr", "score_pool4"]}
    scores = heads.get(arch, ["score_fr", "score_pool4", "score_pool3"])
    layers = [n for n, _, _ in VGG] + ["fc6", "fc7"] + scores + list(DECONVS[arch.removesuffix("_atonce")])
    subset = {k: v for k, v in state.items() if k.split(".")[0] in layers}
    if arch == "fcn8s_atonce":
        # A trained at-once net has large skip weights that undo the 0.01 / 0.0001 scales; these make
        # the skips count here as they do there (and a missing scale would change the output a lot).
        subset["score_pool4.weight"] = subset["score_pool4.weight"] * 100
        subset["score_pool3.weight"] = subset["score_pool3.weight"] * 10000
    return subset


# --- from tests/data/test_data_check.py -----------------------------------------------------------------


def counts_table(out: str, key: str) -> dict[int, int]:
    """Return {label: pixels} from the table printed under the split's heading."""
    lines = out.splitlines()
    start = next(k for k, line in enumerate(lines) if line.startswith(f"{key} ("))
    table = {}
    for line in lines[start + 2 :]:
        m = re.match(r"\s+(\d+)\s+\S+\s+([\d,]+)\s+[\d.]+%$", line)
        if m is None:
            break
        table[int(m.group(1))] = int(m.group(2).replace(",", ""))
    return table


# --- from tests/training/test_distributed.py ----------------------------------------------------------------

TINY_CLASSES = 4


class TinyNet(nn.Module):
    """A stand-in for an FCN: two convolutions, optionally BatchNorm (per-rank running statistics)
    or dropout (draws from the global RNG, so a resume must restore every rank's RNG)."""

    def __init__(self, num_classes: int = TINY_CLASSES, bn: bool = False, dropout: float = 0.0) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.norm = nn.BatchNorm2d(8) if bn else nn.Identity()
        self.drop = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(8, num_classes, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(self.drop(torch.relu(self.norm(self.conv1(x)))))


def finish(proc: subprocess.Popen, timeout: float, what: str = "the process") -> tuple[int, str]:
    """Return (exit code, output with \\r as line breaks) of a process writing to one pipe; a test
    failure with the output's end if it runs past timeout (stopped by SIGTERM, then SIGKILL)."""
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.terminate()  # torchrun passes SIGTERM on to its workers (they run in their own sessions)
        try:
            out, _ = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
        pytest.fail(f"{what} did not finish within {timeout} s:\n{out[-3000:]}")
    return proc.returncode, out.replace("\r", "\n")


# --- from tests/models/test_caffe.py ----------------------------------------------------------------------

AT_ONCE_SCALES = {"scale_pool4": (512, 0.01), "scale_pool3": (256, 0.0001)}  # Scale { constant }


# V1LayerParameter.LayerType values of caffe.proto (the V1 encoding names a layer's type by number).
V1_TYPES = {
    "Convolution": 4,
    "Deconvolution": 39,
    "Dropout": 6,
    "Pooling": 17,
    "ReLU": 18,
    "SoftmaxWithLoss": 21,
}


def varint(n: int) -> bytes:
    n &= (1 << 64) - 1  # a negative int32/int64 is ten bytes, as protobuf writes it
    out = bytearray()
    while n >= 0x80:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def field_key(field: int, wire: int) -> bytes:
    return varint(field << 3 | wire)


def size(chunks: list) -> int:
    return sum(len(c) for c in chunks)


def message(field: int, chunks: list) -> list:
    """A length-delimited field holding the message (or bytes) given as chunks."""
    return [field_key(field, 2) + varint(size(chunks)), *chunks]


def string(field: int, text: str) -> list:
    return message(field, [text.encode()])


def number(field: int, n: int) -> list:
    return [field_key(field, 0) + varint(n)]


def unknown_fields() -> list:
    """One field of each wire type under numbers caffe.proto's messages do not use here."""
    return [
        field_key(901, 0) + varint(7),
        field_key(902, 1) + bytes(8),
        *string(903, "skip me"),
        field_key(904, 5) + bytes(4),
    ]


def blob(array, legacy: bool, packed: bool, double: bool = False, extra: bool = False) -> list:
    """A BlobProto: shape as BlobShape (field 7) or legacy num/channels/height/width (1-4); data as float
    (5) or double_data (8), packed or one field per value."""
    a = np.asarray(array)
    chunks = unknown_fields() if extra else []
    if legacy:
        dims = (1,) * (4 - a.ndim) + a.shape
        chunks += [number(f, d)[0] for f, d in zip((1, 2, 3, 4), dims)]
    else:
        chunks += message(7, message(1, [b"".join(map(varint, a.shape))]))  # BlobShape, dims packed
    field, wire, dtype = (8, 1, "<f8") if double else (5, 5, "<f4")
    raw = np.ascontiguousarray(a, dtype=dtype).tobytes()
    if packed:
        chunks += message(field, [raw])
    else:
        width = np.dtype(dtype).itemsize
        records = np.empty((a.size, 1 + width), np.uint8)
        records[:, 0] = field << 3 | wire
        records[:, 1:] = np.frombuffer(raw, np.uint8).reshape(a.size, width)
        chunks.append(records.tobytes())
    return chunks


def layer(name: str, kind: str, blobs: list, v1: bool, extra: bool = False) -> list:
    """A LayerParameter (NetParameter field 100: name 1, type 2, bottom 3, top 4, param 6, blobs 7) or
    a V1LayerParameter (field 2: bottom 2, top 3, name 4, type 5 as an enum, blobs 6)."""
    if v1:
        body = [*string(2, "bottom"), *string(3, name), *string(4, name), *number(5, V1_TYPES.get(kind, 0))]
    else:
        lr_mult = field_key(3, 5) + struct.pack("<f", 1.0)  # ParamSpec { lr_mult: 1 }
        body = [*string(1, name), *string(2, kind), *string(3, "bottom"), *string(4, name)]
        body += [*message(6, [lr_mult]), *number(10, 1)]  # param, phase: TEST
    body += unknown_fields() if extra else []
    for b in blobs:
        body += message(6 if v1 else 7, b)
    return message(2 if v1 else 100, body)


def net_layers(weights: dict, encoding: str, arch: str = "", heads: bool = True, trunk: bool = True) -> list:
    """The layers of a reference net in file order, those without weights (data, ReLU, Pooling, Crop,
    Dropout, loss) included. 'layer': BlobShape, the trunk packed, the heads' floats unpacked and
    score_fr's bias as double_data; 'v1': legacy shapes, the biases and the heads unpacked."""
    v1 = encoding == "v1"
    chunks = layer("data", "Python", [], v1) if trunk else []
    names = list(dict.fromkeys(k.split(".")[0] for k in weights))
    for name in names:
        is_trunk = name.startswith(("conv", "fc"))
        if (is_trunk and not trunk) or (not is_trunk and not heads):
            continue
        if arch == "fcn8s_atonce" and name in ("score_pool4", "score_pool3"):
            channels, value = AT_ONCE_SCALES[name.replace("score", "scale")]
            scale = blob(np.full(channels, value, np.float32), legacy=v1, packed=not v1)
            chunks += layer(name.replace("score", "scale"), "Scale", [scale], v1)
        blobs = []
        for param in ("weight", "bias"):
            if f"{name}.{param}" not in weights:
                continue
            value = weights[f"{name}.{param}"].numpy()
            small = not is_trunk or (v1 and param == "bias")
            double = encoding == "layer" and name == "score_fr" and param == "bias"
            blobs.append(blob(value, legacy=v1, packed=not small, double=double, extra=name == "conv1_1"))
        kind = "Deconvolution" if name.startswith("upscore") else "Convolution"
        chunks += layer(name, kind, blobs, v1, extra=name == "conv1_2")
        if is_trunk:
            chunks += layer(name.replace("conv", "relu").replace("fc", "relu"), "ReLU", [], v1)
            if name in POOL_AFTER:
                chunks += layer(f"pool{POOL_AFTER[name]}", "Pooling", [], v1)
            if name.startswith("fc"):
                chunks += layer(name.replace("fc", "drop"), "Dropout", [], v1)
    if heads:
        chunks += layer("score", "Crop", [], v1) + layer("loss", "SoftmaxWithLoss", [], v1)
    return chunks


def net(layers: list, name: str = "voc-fcn") -> list:
    """A NetParameter: a name (field 1), unknown fields, the layers."""
    return [*string(1, name), *unknown_fields(), *layers]


def write(path, chunks: list) -> None:
    with open(path, "wb") as f:
        f.writelines(chunks)


# --- from tests/models/test_paper_models.py ---------------------------------------------------------------


def head_weights(g: torch.Generator, arch: str, n: int) -> dict:
    """Random score layers and deconvolutions of one head of ``arch`` in the VOC naming."""
    state = {}
    scores = {"score_fr": 4096, "score_pool4": 512, "score_pool3": 256}
    keep = {"fcn32s": 1, "fcn16s": 2, "fcn8s": 3}[arch]
    for name, c_in in list(scores.items())[:keep]:
        state[f"{name}.weight"] = torch.randn(n, c_in, 1, 1, generator=g) * math.sqrt(1 / c_in)
        state[f"{name}.bias"] = torch.randn(n, generator=g) * 0.1
    for name, k in DECONVS[arch].items():
        state[f"{name}.weight"] = torch.randn(n, n, k, k, generator=g) * 0.05
    return state


def renamed(state: dict, rename) -> dict:
    return {f"{rename(k.rsplit('.', 1)[0])}.{k.rsplit('.', 1)[1]}": v for k, v in state.items()}


def model_of(overrides: list[str], trunk: bool = True) -> torch.nn.Module:
    """The model the config describes, its tensors uninitialised (the trunk on meta unless trunk)."""
    cfg = load_config(overrides=["model.pretrained=false", "data.transforms.normalization=caffe", *overrides])
    with torch.device("meta"):
        model = build_model(cfg.model)
    for name, child in model.named_children():
        if trunk or name != "backbone":
            child.to_empty(device="cpu")
    return model.eval()


NYUD_DATA = ["model.num_classes=40", "data.train.name=nyud", "data.val.name=nyud"]


EARLY = [*NYUD_DATA, "model.in_channels=4"] + [f"data.{k}.modalities=[color,depth]" for k in ("train", "val")]


LATE = [*NYUD_DATA, "model.in_channels=6", "model.late_fusion=[color,hha]"]


LATE += [f"data.{k}.modalities=[color,hha]" for k in ("train", "val")]


def siftflow(arch: str) -> list[str]:
    return [
        f"model.arch={arch}",
        "model.num_classes=33",
        "model.geometric_classes=3",
        "loss.normalize=false",
    ] + [f"data.{k}.name=siftflow" for k in ("train", "val")]


# --- from tests/training/test_sigmoid.py --------------------------------------------------------------------


def _pairs(task: str, classes: str, extra: list[str] = ()) -> list[str]:
    return [
        f"data.task={task}",
        f"data.classes={classes}",
        "data.train={name: pairs, images: i, masks: m}",
        "data.val={name: pairs, images: i, masks: m}",
        *extra,
    ]


BINARY_SIZES = [(70, 90), (81, 64), (96, 77)]


def _write_binary_pairs(root: Path) -> None:
    """Bright boxes (foreground, 255) on grey noise: the brightness detector's task."""
    rng = np.random.default_rng(0)
    for sub in ("images", "masks"):
        (root / sub).mkdir(parents=True)
    for i, (h, w) in enumerate(BINARY_SIZES):
        image = rng.integers(100, 156, (h, w, 3)).astype(np.uint8)
        mask = np.zeros((h, w), np.uint8)
        y, x = int(rng.integers(0, h // 2)), int(rng.integers(0, w // 2))
        image[y : y + h // 2, x : x + w // 2] = 240
        mask[y : y + h // 2, x : x + w // 2] = 255
        Image.fromarray(image).save(root / "images" / f"im{i}.png")
        Image.fromarray(mask, mode="L").save(root / "masks" / f"im{i}.png")


def _brightness_logit(cfg) -> nn.Module:
    """Return cfg's one-logit ResNet-18 FCN-8s with weights set so that its logit is
    GAIN * (v - 0.5 - THRESHOLD) at stride 8 (v: the mean RGB in [0, 1]; as test_evaluate_predict's
    brightness detector, with one output)."""
    from fcn.data.transforms import IMAGENET_MEAN, IMAGENET_STD
    from fcn.models import build_model

    model = build_model(cfg.model)
    net = model.backbone
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, nn.Conv2d):
                module.weight.zero_()
            elif isinstance(module, nn.BatchNorm2d):
                module.weight.fill_(1.0)
                module.bias.zero_()
                module.running_mean.zero_()
                module.running_var.fill_(1.0)
        net.conv1.weight[0, :, 3, 3] = torch.tensor(IMAGENET_STD) / 3
        net.bn1.bias[0] = sum(IMAGENET_MEAN) / 3 - 0.5
        for layer in (net.layer2, net.layer3, net.layer4):
            layer[0].downsample[0].weight[0, 0] = 1.0
        model.score_pool3.weight[0, 0] = GAIN
        model.score_pool3.bias.fill_(-GAIN * THRESHOLD)
    return model.eval()


# --- from tests/models/test_models.py ---------------------------------------------------------------------


def meta_model(cls, **options):
    """Return cls built on the meta device (shapes only, no memory, no init cost), in eval mode."""
    with torch.device("meta"):
        return cls(**options).eval()
