"""The readers of the paper's other datasets on tiny trees in the layouts the authors' data layers
read (pascalcontext_layers.py, nyud_layers.py, siftflow_layers.py), their multi-channel inputs
through the transforms, fcn.data.check on them, and a SIFT Flow run end to end (two heads)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import scipy.io
import torch
from PIL import Image

from fcn.config import ConfigError, load_config
from fcn.data import build_dataset, class_names
from fcn.data.check import main as check_main
from fcn.data.collate import pad_collate
from fcn.data.common import LayerInput
from fcn.data.paper import PASCAL_CONTEXT_CLASSES, SIFTFLOW_DIR
from fcn.data.transforms import build_transforms

SIZES = {"a": (13, 9), "b": (11, 14), "c": (16, 10)}  # id -> (W, H), each its own


def rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


def rgb(seed: int, size: tuple[int, int]) -> np.ndarray:
    w, h = size
    return rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


# ----------------------------------------------------------------------------- PASCAL-Context

# 59_labels.txt as the dataset ships it: the three names the layer renames, in VOC's spelling.
RAW_59 = [
    {"table": "diningtable", "bedclothes": "bedcloth", "cloth": "clothes"}.get(n, n)
    for n in PASCAL_CONTEXT_CLASSES[1:]
]


def make_pascal_context(root) -> dict:
    """Write VOC2010/ and pascal-context/ (a 400-label list with the 59 among others, some with
    spaces as labels.txt writes them); return {id: expected 60-class label map}."""
    voc, context = root / "VOC2010", root / "pascal-context"
    (voc / "JPEGImages").mkdir(parents=True)
    (voc / "ImageSets" / "Main").mkdir(parents=True)
    (context / "trainval").mkdir(parents=True)
    task = list(PASCAL_CONTEXT_CLASSES[1:])
    names400 = [f"other{k}" for k in range(400 - len(task))] + task
    order = rng(0).permutation(400)
    names400 = [names400[k] for k in order]
    spaced = {"pottedplant": "potted plant", "tvmonitor": "tv monitor"}
    (context / "labels.txt").write_text(
        "".join(f"{i + 1}: {spaced.get(n, n)}\n" for i, n in enumerate(names400))
    )
    (context / "59_labels.txt").write_text("".join(f"{i + 1}: {n}\n" for i, n in enumerate(RAW_59)))
    expected = {}
    for k, (i, size) in enumerate(SIZES.items()):
        Image.fromarray(rgb(k, size)).save(voc / "JPEGImages" / f"{i}.jpg")
        w, h = size
        label_map = rng(10 + k).integers(0, 401, (h, w)).astype(np.uint16)
        scipy.io.savemat(context / "trainval" / f"{i}.mat", {"LabelMap": label_map})
        # Each pixel by name: its 400-label's name if one of the 59 task classes (index + 1), else 0.
        want = np.zeros((h, w), np.uint8)
        for (y, x), v in np.ndenumerate(label_map):
            name = names400[v - 1] if v > 0 else None
            want[y, x] = task.index(name) + 1 if name in task else 0
        expected[i] = want
    (voc / "ImageSets" / "Main" / "train.txt").write_text("a\nb\n")
    (voc / "ImageSets" / "Main" / "val.txt").write_text("c\n")
    return expected


PC = ["model.num_classes=60", "data.train.name=pascal_context", "data.val.name=pascal_context"]


def test_pascal_context_maps_the_400_labels_onto_59_classes_and_background(tmp_path):
    expected = make_pascal_context(tmp_path)
    cfg = load_config(
        overrides=[*PC, f"data.train.root={tmp_path}", f"data.val.root={tmp_path}", "data.val.split=val"]
    )
    assert class_names(cfg.data) == list(PASCAL_CONTEXT_CLASSES) and len(PASCAL_CONTEXT_CLASSES) == 60
    train = build_dataset(cfg.data.train, cfg.data)
    assert train.ids == ["a", "b"]
    for index, i in enumerate(train.ids):
        image, mask = train[index]
        assert image.size == SIZES[i] and mask.dtype == np.uint8
        assert np.array_equal(mask, expected[i])
        assert (mask > 0).any() and (mask == 0).any()  # both background and classes occur
    val = build_dataset(cfg.data.val, cfg.data)
    assert val.ids == ["c"] and np.array_equal(val[0][1], expected["c"])


def test_pascal_context_refuses_a_59_label_file_in_another_order(tmp_path):
    make_pascal_context(tmp_path)
    path = tmp_path / "pascal-context" / "59_labels.txt"
    lines = path.read_text().splitlines()
    path.write_text("\n".join([lines[1], lines[0], *lines[2:]]) + "\n")
    cfg = load_config(overrides=[*PC, f"data.train.root={tmp_path}"])
    with pytest.raises(ValueError, match=r"59_labels.txt: its class order differs from data.classes'"):
        build_dataset(cfg.data.train, cfg.data)


# ----------------------------------------------------------------------------- NYUDv2


def make_nyud(root) -> None:
    """Write NYUDv2 as nyud_layers.py reads it: colour, 16-bit depth (mm), HHA, .mat labels 0..40."""
    for sub in ("data/images", "data/depth", "data/hha", "segmentation"):
        (root / sub).mkdir(parents=True)
    for k, (i, (w, h)) in enumerate(SIZES.items()):
        Image.fromarray(rgb(k, (w, h))).save(root / "data/images" / f"img_{i}.png")
        depth = rng(20 + k).integers(400, 10000, (h, w)).astype(np.uint16)
        Image.fromarray(depth).save(root / "data/depth" / f"img_{i}.png")
        Image.fromarray(rgb(30 + k, (w, h))).save(root / "data/hha" / f"img_{i}.png")
        labels = rng(40 + k).integers(0, 41, (h, w)).astype(np.uint8)
        scipy.io.savemat(root / "segmentation" / f"img_{i}.mat", {"segmentation": labels})
    (root / "train.txt").write_text("a\nb\n")
    (root / "test.txt").write_text("c\n")


def nyud_cfg(root, modalities: str, channels: int) -> list[str]:
    mods = [f"data.{k}.modalities=[{modalities}]" for k in ("train", "val")]
    return [
        "model.num_classes=40",
        f"model.in_channels={channels}",
        "data.train.name=nyud",
        "data.val.name=nyud",
        f"data.train.root={root}",
        f"data.val.root={root}",
        "data.val.split=test",
        "data.transforms.normalization=caffe",
        *mods,
    ]


def test_nyud_stacks_the_modalities_as_the_layer_and_shifts_labels_void_to_255(tmp_path):
    make_nyud(tmp_path)
    cfg = load_config(overrides=nyud_cfg(tmp_path, "color,depth,hha", 7))
    data = build_dataset(cfg.data.train, cfg.data)
    image, mask = data[1]  # id b
    w, h = SIZES["b"]
    assert image.shape == (h, w, 7) and image.dtype == np.float32
    assert isinstance(image, LayerInput)  # the network input already: the transforms do not normalise it
    colour = np.asarray(Image.open(tmp_path / "data/images/img_b.png"), np.float64)
    depth = np.asarray(Image.open(tmp_path / "data/depth/img_b.png"), np.float64)
    hha = np.asarray(Image.open(tmp_path / "data/hha/img_b.png"), np.float64)
    np.testing.assert_allclose(image[..., 0], colour[..., 2] - 116.190, atol=1e-4)  # B first
    np.testing.assert_allclose(image[..., 2], colour[..., 0] - 92.318, atol=1e-4)
    np.testing.assert_allclose(image[..., 3], np.log(depth) - 7.844, atol=1e-5)
    np.testing.assert_allclose(image[..., 4:], hha - (132.431, 94.076, 118.477), atol=1e-4)  # not flipped
    labels = scipy.io.loadmat(tmp_path / "segmentation/img_b.mat")["segmentation"]
    assert np.array_equal(mask[labels == 0], np.full((labels == 0).sum(), 255))
    assert np.array_equal(mask[labels > 0], labels[labels > 0] - 1)
    assert class_names(cfg.data)[0] == "wall" and len(class_names(cfg.data)) == 40


def test_nyud_transforms_move_every_channel_with_the_mask(tmp_path):
    # A 4-channel float input whose channels encode the label: after scale/crop/shift/flip the
    # relation must still hold at every labelled pixel (padding: mask 255, input 0).
    g = rng(0)
    mask = g.integers(0, 40, (21, 17)).astype(np.uint8)
    image = np.stack([mask + 100.0 * c for c in range(4)], axis=2).astype(np.float32).view(LayerInput)
    overrides = ["data.transforms.crop_size=24", "data.transforms.max_shift=5", "data.transforms.hflip=true"]
    tr = build_transforms(load_config(overrides=overrides).data.transforms, train=True)
    for seed in range(4):
        torch.manual_seed(seed)
        x, y = tr(image, mask)
        assert x.shape == (4, 24, 24) and x.dtype == torch.float32 and y.shape == (24, 24)
        labelled = y != 255
        assert labelled.any()
        for c in range(4):
            assert torch.equal(x[c][labelled], y[labelled].float() + 100.0 * c)
        assert not x[:, ~labelled].any()


def test_nyud_needs_caffe_input_and_matching_channels():
    base = ["model.num_classes=40", "data.train.name=nyud", "data.val.name=nyud"]
    with pytest.raises(ConfigError, match=r"data.train.name=nyud reads the authors' data-layer input"):
        load_config(overrides=base)
    with pytest.raises(
        ConfigError, match=r"modalities=\['color', 'depth'\] stack 4 channels but model.in_channels=3"
    ):
        load_config(
            overrides=[*base, "data.transforms.normalization=caffe", "data.train.modalities=[color,depth]"]
        )
    with pytest.raises(ConfigError, match=r"data.val.modalities=\['hha'\] is for nyud; voc has \[color\]"):
        load_config(overrides=["data.val.modalities=[hha]"])


def test_nyud_reports_a_missing_depth_file(tmp_path):
    make_nyud(tmp_path)
    (tmp_path / "data/depth/img_a.png").unlink()
    cfg = load_config(overrides=nyud_cfg(tmp_path, "color,depth", 4))
    with pytest.raises(FileNotFoundError, match=r"img_a.png: no such file \(id 'a'"):
        build_dataset(cfg.data.train, cfg.data)
    assert build_dataset(cfg.data.val, cfg.data).ids == ["c"]


# ----------------------------------------------------------------------------- SIFT Flow


def make_siftflow(root) -> None:
    """Write SIFT Flow as siftflow_layers.py reads it: .jpg, semantic S in 0..33, geometric S in -1..3."""
    dirs = [root / kind / SIFTFLOW_DIR for kind in ("Images", "SemanticLabels", "GeoLabels")]
    for d in dirs:
        d.mkdir(parents=True)
    for k, (i, (w, h)) in enumerate(SIZES.items()):
        Image.fromarray(rgb(k, (w, h))).save(dirs[0] / f"{i}.jpg")
        scipy.io.savemat(dirs[1] / f"{i}.mat", {"S": rng(50 + k).integers(0, 34, (h, w)).astype(np.int16)})
        scipy.io.savemat(dirs[2] / f"{i}.mat", {"S": rng(60 + k).integers(-1, 4, (h, w)).astype(np.int16)})
    (root / "trainval.txt").write_text("a\nb\n")
    (root / "test.txt").write_text("c\n")


def siftflow_cfg(root, *extra: str) -> list[str]:
    return [
        "model.num_classes=33",
        "model.geometric_classes=3",
        "loss.normalize=false",
        "data.train.name=siftflow",
        "data.val.name=siftflow",
        "data.train.split=trainval",
        "data.val.split=test",
        f"data.train.root={root}",
        f"data.val.root={root}",
        "data.transforms.normalization=caffe",
        *extra,
    ]


def test_siftflow_masks_hold_the_semantic_then_the_geometric_labels(tmp_path):
    make_siftflow(tmp_path)
    cfg = load_config(overrides=siftflow_cfg(tmp_path))
    data = build_dataset(cfg.data.val, cfg.data)
    image, mask = data[0]
    w, h = SIZES["c"]
    assert image.shape == (h, w, 3) and mask.shape == (2, h, w) and mask.dtype == np.uint8
    pixels = np.asarray(Image.open(tmp_path / "Images" / SIFTFLOW_DIR / "c.jpg"), np.float64)
    np.testing.assert_allclose(image, pixels[..., ::-1] - (114.578, 115.294, 108.353), atol=1e-4)
    sem = scipy.io.loadmat(tmp_path / "SemanticLabels" / SIFTFLOW_DIR / "c.mat")["S"].astype(int)
    geo = scipy.io.loadmat(tmp_path / "GeoLabels" / SIFTFLOW_DIR / "c.mat")["S"].astype(int)
    # The layer: geometric -1 -> 0; both minus 1, so 0 (unlabelled) is void (255).
    assert np.array_equal(mask[0], np.where(sem == 0, 255, sem - 1))
    assert np.array_equal(mask[1], np.where(geo <= 0, 255, geo - 1))
    # Batches of two-map masks pad both maps with void.
    batch = [
        build_transforms(cfg.data.transforms, False)(*data[0]),
        build_transforms(cfg.data.transforms, False)(*image_mask(data)),
    ]
    images, masks = pad_collate(batch)
    assert masks.shape[:2] == (2, 2) and (masks[0, :, h:, :] == 255).all()


def image_mask(data):
    train_like = data  # one more item of another size: id c again, flipped, stands for a second image
    image, mask = train_like[0]
    return np.ascontiguousarray(image[:, ::-1][:-2]), np.ascontiguousarray(mask[:, :-2, ::-1])


def test_check_reports_each_paper_dataset(tmp_path, capsys):
    make_pascal_context(tmp_path / "pc")
    make_nyud(tmp_path / "nyud")
    make_siftflow(tmp_path / "sf")
    empty = tmp_path / "empty.yml"
    empty.write_text("{}\n")
    pc = [*PC, f"data.train.root={tmp_path / 'pc'}", f"data.val.root={tmp_path / 'pc'}", "data.val.split=val"]
    for overrides in (pc, nyud_cfg(tmp_path / "nyud", "color,hha", 6), siftflow_cfg(tmp_path / "sf")):
        assert check_main(["--config", str(empty), *overrides, "data.num_workers=0"]) == 0
        out = capsys.readouterr().out
        assert "data.train" in out and ", 0 bad" in out
    (tmp_path / "nyud/data/hha/img_b.png").unlink()
    assert (
        check_main(
            ["--config", str(empty), *nyud_cfg(tmp_path / "nyud", "color,hha", 6), "data.num_workers=0"]
        )
        == 1
    )
    assert "img_b.png: no such file" in capsys.readouterr().out


@pytest.mark.slow
def test_siftflow_trains_both_heads_and_scores_both(tmp_path):
    # ResNet-18 (geometry 'same') stands in for VGG16 to keep the run short; the heads are the same.
    import evaluate
    from fcn.training.loop import fit

    make_siftflow(tmp_path / "sf")
    run = tmp_path / "run"
    overrides = siftflow_cfg(
        tmp_path / "sf",
        "model.arch=fcn8s",
        "model.backbone=resnet18",
        "model.geometry=same",
        "model.pretrained=false",
        "data.batch_size=2",
        "data.num_workers=0",
        "data.transforms.crop_size=16",
        "training.device=cpu",
        "training.iters=2",
        "training.vis_images=1",
        f"training.run_dir={run}",
    )
    summary = fit(load_config(overrides=overrides))
    assert summary["iteration"] == 2
    record = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
    assert 0.0 <= record["geometric_pixel_acc"] <= 1.0 and len(record["geometric"]["iou"]) == 3
    assert len(record["iou"]) == 33
    ckpt = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    assert ckpt["model"]["score_fr_geo.weight"].abs().sum() > 0  # the geometric head trained too
    report = tmp_path / "eval.json"
    args = ["--checkpoint", str(run / "checkpoints" / "best.pt"), "--no-progress", "--output", str(report)]
    assert evaluate.main([*args, "--device", "cpu", "data.num_workers=0"]) == 0
    result = json.loads(report.read_text())
    assert result["num_images"] == 1 and 0.0 <= result["geometric_pixel_acc"] <= 1.0
    assert result["geometric_pixel_acc"] == pytest.approx(record["geometric_pixel_acc"])
    # A loose image (predict.py's path, the Segmenter): the semantic head's labels and softmax, at
    # the image's size.
    from fcn.api import Segmenter

    seg = Segmenter.from_checkpoint(run / "checkpoints" / "best.pt", device="cpu")
    photo = tmp_path / "sf" / "Images" / SIFTFLOW_DIR / "a.jpg"
    labels, probs = seg(photo), seg.probabilities(photo)
    assert labels.shape == SIZES["a"][::-1] and labels.max() < 33
    assert probs.shape == (33, *SIZES["a"][::-1])
    np.testing.assert_allclose(probs.sum(0), 1.0, rtol=1e-5)
