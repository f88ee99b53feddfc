"""Cityscapes, ADE20K, data.label_map / reduce_zero_label (8- and 16-bit masks) and a Dataset class by
import path, on data the tests write in each layout: exact id mappings, one-line errors, the checker."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fcn.config import ConfigError, load_config
from fcn.data import build_dataset, class_names, palette
from fcn.data.check import main as check_main
from fcn.data.check import split_report_cached
from tests.helpers import VOC_TRAIN, make_voc_tree, sample_label

REPO = Path(__file__).resolve().parents[2]
CITYSCAPES = str(REPO / "predefined_configs" / "cityscapes_fcn8s.yml")
ADE20K = str(REPO / "predefined_configs" / "ade20k_fcn8s.yml")

# cityscapesScripts helpers/labels.py, every row: name, id, trainId, colour (the test's own copy).
LABELS_PY = [
    ("unlabeled", 0, 255, (0, 0, 0)),
    ("ego vehicle", 1, 255, (0, 0, 0)),
    ("rectification border", 2, 255, (0, 0, 0)),
    ("out of roi", 3, 255, (0, 0, 0)),
    ("static", 4, 255, (0, 0, 0)),
    ("dynamic", 5, 255, (111, 74, 0)),
    ("ground", 6, 255, (81, 0, 81)),
    ("road", 7, 0, (128, 64, 128)),
    ("sidewalk", 8, 1, (244, 35, 232)),
    ("parking", 9, 255, (250, 170, 160)),
    ("rail track", 10, 255, (230, 150, 140)),
    ("building", 11, 2, (70, 70, 70)),
    ("wall", 12, 3, (102, 102, 156)),
    ("fence", 13, 4, (190, 153, 153)),
    ("guard rail", 14, 255, (180, 165, 180)),
    ("bridge", 15, 255, (150, 100, 100)),
    ("tunnel", 16, 255, (150, 120, 90)),
    ("pole", 17, 5, (153, 153, 153)),
    ("polegroup", 18, 255, (153, 153, 153)),
    ("traffic light", 19, 6, (250, 170, 30)),
    ("traffic sign", 20, 7, (220, 220, 0)),
    ("vegetation", 21, 8, (107, 142, 35)),
    ("terrain", 22, 9, (152, 251, 152)),
    ("sky", 23, 10, (70, 130, 180)),
    ("person", 24, 11, (220, 20, 60)),
    ("rider", 25, 12, (255, 0, 0)),
    ("car", 26, 13, (0, 0, 142)),
    ("truck", 27, 14, (0, 0, 70)),
    ("bus", 28, 15, (0, 60, 100)),
    ("caravan", 29, 255, (0, 0, 90)),
    ("trailer", 30, 255, (0, 0, 110)),
    ("train", 31, 16, (0, 80, 100)),
    ("motorcycle", 32, 17, (0, 0, 230)),
    ("bicycle", 33, 18, (119, 11, 32)),
    ("license plate", -1, -1, (0, 0, 142)),
]
# Every id a labelIds PNG can hold: 0..33, and 255 (where -1 would wrap in 8 bits; also void).
RAW_IDS = [row[1] for row in LABELS_PY if row[1] >= 0] + [255]
TRAIN_ID = {row[1]: (255 if row[2] < 0 else row[2]) for row in LABELS_PY} | {255: 255}


def write_cityscapes(root: Path, split: str, frames: dict[str, np.ndarray]) -> None:
    """Write leftImg8bit/<split>/<city>/<frame>_leftImg8bit.png and its gtFine labelIds mask per frame."""
    for frame, ids in frames.items():
        city = frame.split("_")[0]
        h, w = ids.shape
        for sub, suffix, array in (
            ("leftImg8bit", "_leftImg8bit.png", np.full((h, w, 3), 90, np.uint8)),
            ("gtFine", "_gtFine_labelIds.png", ids.astype(np.uint8)),
        ):
            path = root / sub / split / city / f"{frame}{suffix}"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(array).save(path)


def all_ids_mask() -> np.ndarray:
    """Return a 3x35 labelIds mask: column j holds RAW_IDS[j]."""
    return np.tile(np.asarray(RAW_IDS, np.uint8), (3, 1))


def cityscapes_cfg(root: Path, *extra: str):
    return load_config([CITYSCAPES], [f"data.train.root={root}", f"data.val.root={root}", *extra])


# --- Cityscapes ------------------------------------------------------------------------------------


def test_cityscapes_config_holds_labels_py_train_ids_names_and_colours():
    cfg = load_config([CITYSCAPES])
    train_rows = sorted((t, name, colour) for name, _, t, colour in LABELS_PY if 0 <= t < 255)
    assert class_names(cfg.data) == [name for _, name, _ in train_rows]
    assert [tuple(c) for c in cfg.data.palette] == [colour for _, _, colour in train_rows]
    assert cfg.model.num_classes == 19 and cfg.eval.mode == "slide"
    assert palette(cfg.data)[:19].tolist() == [list(c) for _, _, c in train_rows]


def test_cityscapes_every_label_id_maps_to_its_train_id_or_ignore(tmp_path):
    write_cityscapes(tmp_path, "val", {"aachen_000000_000019": all_ids_mask()})
    dataset = build_dataset(cityscapes_cfg(tmp_path).data.val, cityscapes_cfg(tmp_path).data)
    image, mask = dataset[0]
    assert dataset.ids == ["aachen_000000_000019"] and image.size == (35, 3) and mask.dtype == np.uint8
    expected = np.asarray([TRAIN_ID[i] for i in RAW_IDS], np.uint8)
    assert (mask == expected[None, :]).all()
    assert sorted(set(expected.tolist()) - {255}) == list(range(19))  # each train id reached once


def test_cityscapes_lists_cities_in_order_and_names_a_missing_mask(tmp_path):
    ids = all_ids_mask()
    write_cityscapes(tmp_path, "train", {"bochum_000000_000001": ids, "aachen_000000_000002": ids})
    cfg = cityscapes_cfg(tmp_path)
    assert build_dataset(cfg.data.train, cfg.data).ids == ["aachen_000000_000002", "bochum_000000_000001"]
    (tmp_path / "gtFine/train/bochum/bochum_000000_000001_gtFine_labelIds.png").unlink()
    with pytest.raises(
        FileNotFoundError,
        match=r"1 Cityscapes train images have no gtFine labelIds mask .*bochum_000000_000001_gtFine_labelIds.png",
    ):
        build_dataset(cfg.data.train, cfg.data)
    with pytest.raises(ValueError, match="Cityscapes split 'testing' is not one of train, val, test"):
        build_dataset(cityscapes_cfg(tmp_path, "data.train.split=testing").data.train, cfg.data)


def test_cityscapes_without_a_label_map_is_a_config_error():
    with pytest.raises(
        ConfigError, match=r"data.train.name='cityscapes' reads raw labelIds: set data.label_map"
    ):
        load_config([], ["data.train.name=cityscapes"])


# --- ADE20K ----------------------------------------------------------------------------------------


def write_ade20k(root: Path, split: str, masks: dict[str, np.ndarray]) -> None:
    for name, raw in masks.items():
        for sub, ext, array in (
            ("images", ".jpg", np.full((*raw.shape, 3), 128, np.uint8)),
            ("annotations", ".png", raw.astype(np.uint8)),
        ):
            (root / sub / split).mkdir(parents=True, exist_ok=True)
            Image.fromarray(array).save(root / sub / split / f"{name}{ext}")


def test_ade20k_reduce_zero_label_is_exact_and_config_holds_150_classes(tmp_path):
    raw = np.tile(np.asarray([*range(151), 255], np.uint8), (2, 1))  # every annotation value, and void
    write_ade20k(tmp_path, "validation", {"ADE_val_00000001": raw})
    cfg = load_config([ADE20K], [f"data.val.root={tmp_path}"])
    names = class_names(cfg.data)
    assert len(names) == 150 == len(set(names)) and (names[0], names[2], names[149]) == (
        "wall",
        "sky",
        "flag",
    )
    assert cfg.data.reduce_zero_label and len(cfg.data.palette) == 150
    image, mask = build_dataset(cfg.data.val, cfg.data)[0]
    expected = np.asarray([255, *range(150), 255], np.uint8)
    assert image.size == (152, 2) and (mask == expected[None, :]).all()


def test_ade20k_names_an_image_without_annotation_and_a_bad_split(tmp_path):
    write_ade20k(tmp_path, "training", {"ADE_train_00000001": np.ones((4, 4))})
    (tmp_path / "images/training/ADE_train_00000002.jpg").write_bytes(
        (tmp_path / "images/training/ADE_train_00000001.jpg").read_bytes()
    )
    cfg = load_config([ADE20K], [f"data.train.root={tmp_path}"])
    with pytest.raises(
        FileNotFoundError, match=r"1 ADE20K training images have no annotation .*ADE_train_00000002.png"
    ):
        build_dataset(cfg.data.train, cfg.data)
    bad = load_config([ADE20K], [f"data.train.root={tmp_path}", "data.train.split=train"])
    with pytest.raises(ValueError, match="ADE20K split 'train' is not one of training, validation"):
        build_dataset(bad.data.train, bad.data)


# --- data.label_map on the other kinds, 16-bit masks, validation -----------------------------------


def write_folder(root: Path, masks: dict[str, np.ndarray]) -> None:
    """Write a VOC-layout folder: PNG images, the given masks (uint16 -> 16-bit PNG), train.txt listing them."""
    for sub in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for name, raw in masks.items():
        Image.fromarray(np.zeros((*raw.shape, 3), np.uint8)).save(root / "JPEGImages" / f"{name}.png")
        Image.fromarray(raw).save(root / "SegmentationClass" / f"{name}.png")
    (root / "ImageSets/Segmentation/train.txt").write_text("\n".join(masks) + "\n")


def folder_cfg(root: Path, *extra: str):
    return load_config(
        [],
        [
            "data.train.name=folder",
            f"data.train.root={root}",
            "data.classes=[background,cat,dog]",
            "model.num_classes=3",
            *extra,
        ],
    )


def test_label_map_translates_16_bit_ids_and_unlisted_ids_become_ignore(tmp_path):
    raw = np.asarray([[0, 1000, 2000, 40000, 7]], np.uint16)
    write_folder(tmp_path, {"a": raw})
    assert Image.open(tmp_path / "SegmentationClass/a.png").mode.startswith("I")  # a 16-bit PNG
    cfg = folder_cfg(tmp_path, "data.label_map={0: 0, 1000: 1, 2000: 2, 40000: 255}")
    _, mask = build_dataset(cfg.data.train, cfg.data)[0]
    assert mask.dtype == np.uint8 and mask.tolist() == [[0, 1, 2, 255, 255]]  # 7 is not listed: ignored
    with pytest.raises(ValueError, match=r"a.png: 16-bit mask has values outside 0..255.*data.label_map"):
        build_dataset(folder_cfg(tmp_path).data.train, folder_cfg(tmp_path).data)[0]


def test_label_map_and_reduce_zero_label_apply_to_voc_too(tmp_path):
    make_voc_tree(tmp_path)
    base = [
        "data.train.name=voc",
        f"data.train.root={tmp_path}",
        "data.classes=[a,b,c]",
        "model.num_classes=3",
    ]
    label = sample_label(VOC_TRAIN[0])
    k = int(label[10, 10])
    cfg = load_config([], [*base, f"data.label_map={{0: 0, {k}: 2}}"])
    mask = build_dataset(cfg.data.train, cfg.data)[0][1]
    assert (mask == np.select([label == 0, label == k], [0, 2], 255)).all()
    full = ["data.train.name=voc", f"data.train.root={tmp_path}", "data.reduce_zero_label=true"]
    cfg = load_config([], full)
    mask = build_dataset(cfg.data.train, cfg.data)[0][1]
    assert (mask == np.where((label == 0) | (label == 255), 255, label.astype(int) - 1)).all()


def test_label_map_reads_8_and_16_bit_ids_alike_and_names_what_it_cannot_map():
    from fcn.data.common import LabelMap

    ids = np.arange(256, dtype=np.uint8).reshape(16, 16)
    for labels in (LabelMap({7: 0, 26: 1, 255: 2}, False, 255), LabelMap(None, True, 255)):
        assert labels(ids, "m").tolist() == labels(ids.astype(np.uint16), "m").tolist()
    reduce = LabelMap(None, True, 255)
    assert reduce(np.asarray([[256]], np.uint16), "m").tolist() == [[255]]  # 256 - 1: the ignore index
    with pytest.raises(ValueError, match=r"m: label ids 0..257 do not fit 0..256; they cannot be mapped"):
        reduce(np.asarray([[0, 257]], np.uint16), "m")
    with pytest.raises(
        ValueError, match=r"m: label ids 3..300 do not fit 0..255; translate them with data.label_map"
    ):
        LabelMap()(np.asarray([[3, 300]], np.uint16), "m")


@pytest.mark.parametrize(
    "overrides, message",
    [
        (
            ["data.label_map={3: 21}"],
            r"data.label_map maps 3 to 21, outside 0..20 \(model.num_classes\) and 255",
        ),
        (["data.label_map={70000: 1}"], r"data.label_map id 70000 is outside 0..65535"),
        (
            ["data.label_map={1: 1}", "data.reduce_zero_label=true"],
            r"data.label_map and data.reduce_zero_label are both set",
        ),
        (["data.label_map=[[1, 2]]"], r"data.label_map"),
        (["data.train.args={root: x}"], r"data.train.args is given but data.train.name='sbd' is built in"),
        (["data.train.name=my-module:Data"], r"data.train.name='my-module:Data' is not an import path"),
    ],
)
def test_bad_label_map_or_args_is_a_one_line_config_error(overrides, message):
    with pytest.raises(ConfigError, match=message) as info:
        load_config([], overrides)
    assert "\n" not in str(info.value)


# --- a Dataset class by import path ----------------------------------------------------------------

MODULE = '''
import numpy as np
from PIL import Image


class Squares:
    """A square of class 1 (odd items) or 2 on background, the mask as raw 16-bit ids 0/1000/2000."""

    def __init__(self, n, size=32):
        self.n, self.size = n, size
        self.ids = [f"square{i}" for i in range(n)]

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        s = self.size
        mask = np.zeros((s, s), np.uint16)
        mask[4 : s - 4, 4 : s - 4] = 1000 if i % 2 else 2000
        image = np.zeros((s, s, 3), np.uint8)
        image[mask == 1000] = (255, 0, 0)
        image[mask == 2000] = (0, 0, 255)
        return Image.fromarray(image), mask


class WrongType(Squares):
    def __getitem__(self, i):
        return {"image": 1}


class Raises:
    def __init__(self):
        raise RuntimeError("no data here")
'''

EXTERNAL = [
    "data.label_map={0: 0, 1000: 1, 2000: 2}",
    "data.classes=[background,red,blue]",
    "model.num_classes=3",
]


@pytest.fixture()
def user_module(tmp_path, monkeypatch):
    (tmp_path / "user_data_mod.py").write_text(MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    sys.modules.pop("user_data_mod", None)


def test_dataset_class_by_import_path_gets_its_args_and_the_label_map(user_module):
    cfg = load_config(
        [], ["data.train.name=user_data_mod:Squares", "data.train.args={n: 3, size: 16}", *EXTERNAL]
    )
    dataset = build_dataset(cfg.data.train, cfg.data)
    assert len(dataset) == 3 and dataset.ids == ["square0", "square1", "square2"]
    image, mask = dataset[1]
    assert image.mode == "RGB" and image.size == (16, 16) and mask.dtype == np.uint8
    assert np.bincount(mask.ravel()).tolist() == [16 * 16 - 8 * 8, 8 * 8]
    report, cache, cached = split_report_cached(cfg.data.train, cfg.data)
    assert cache is None and not cached and report.good == 3
    assert report.counts[:3].tolist() == [3 * (256 - 64), 64, 2 * 64]


@pytest.mark.parametrize(
    "name, message",
    [
        (
            "user_data_mod:Missing",
            r"dataset class user_data_mod:Missing: module 'user_data_mod' has no attribute 'Missing'",
        ),
        ("user_data_mod:Raises", r"dataset class user_data_mod:Raises\(\) raised RuntimeError: no data here"),
    ],
)
def test_dataset_class_missing_or_raising_is_one_line_naming_it(user_module, name, message):
    cfg = load_config([], [f"data.train.name={name}", *EXTERNAL])
    with pytest.raises(ValueError, match=message) as info:
        build_dataset(cfg.data.train, cfg.data)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    "name, message",
    [
        (
            "no_such_module_xyz:Data",
            r"dataset class no_such_module_xyz:Data: cannot import module 'no_such_module_xyz'",
        ),
        (
            "user_data_mod:WrongType",
            r"dataset class user_data_mod:WrongType: item 0 is a dict; __getitem__ must return \(image, mask\)",
        ),
    ],
)
@pytest.mark.slow  # a train.py process each: torch's import dominates
def test_dataset_class_errors_are_one_line_exit_2_from_train_py(user_module, tmp_path, name, message):
    run_dir = tmp_path / "run"
    done = subprocess.run(
        [sys.executable, str(REPO / "train.py"), f"data.train.name={name}", "data.train.args={n: 2}", *EXTERNAL,
         "training.device=cpu", f"training.run_dir={run_dir}"],
        cwd=REPO, env=dict(os.environ, PYTHONPATH=f"{REPO}{os.pathsep}{user_module}", OMP_NUM_THREADS="1"),
        capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    lines = [x for x in done.stderr.splitlines() if x.strip()]
    assert done.returncode == 2 and len(lines) == 1, done.stderr
    assert lines[0].startswith("error: ") and re.search(message, lines[0]), lines[0]
    assert not run_dir.exists()  # found at setup: nothing written


# --- python -m fcn.data.check ----------------------------------------------------------------------


def test_check_counts_cityscapes_after_the_map_and_names_an_id_outside_it(tmp_path, capsys):
    write_cityscapes(tmp_path, "train", {"aachen_000000_000001": all_ids_mask()})
    unknown = all_ids_mask()
    unknown[0, :2] = 40  # an id no row of labels.py has
    write_cityscapes(tmp_path, "val", {"bremen_000000_000002": unknown})
    args = [
        "--config",
        CITYSCAPES,
        f"data.train.root={tmp_path}",
        f"data.val.root={tmp_path}",
        "data.num_workers=0",
    ]
    assert check_main(args) == 1
    out = capsys.readouterr().out
    bad = tmp_path / "gtFine/val/bremen/bremen_000000_000002_gtFine_labelIds.png"
    assert (
        f"{bad}: raw label ids 40 (2 px) are not in data.label_map (trained as ignored)" in out.splitlines()
    )
    train = out.split("data.train", 1)[1].split("data.val")[0]
    assert "1 good pairs of 1" in train
    road = next(line for line in train.splitlines() if line.split()[:2] == ["0", "road"])
    ignored = next(line for line in train.splitlines() if line.split()[:2] == ["255", "ignored"])
    assert road.split()[2] == "3" and ignored.split()[2] == f"{3 * 16}"  # 16 void ids x 3 rows
    assert "image size: W 35..35, H 3..3" in train


def test_check_reads_a_dataset_class_and_names_a_bad_item(user_module, capsys):
    module = user_module / "user_data_mod.py"
    module.write_text(
        MODULE + "\n\nclass OneBad(Squares):\n    def __getitem__(self, i):\n"
        "        image, mask = super().__getitem__(i)\n        return (image, mask[:-1]) if i == 2 else (image, mask)\n"
    )
    args = ["data.train.name=user_data_mod:Squares", "data.train.args={n: 2, size: 16}", *EXTERNAL]
    args += ["data.val.name=user_data_mod:OneBad", "data.val.args={n: 3, size: 16}", "data.num_workers=0"]
    assert check_main(args) == 1
    out = capsys.readouterr().out
    assert "user_data_mod:OneBad[2]: mask is 16x15 (WxH) but its image is 16x16" in out
    assert "data.val (user_data_mod:OneBad" in out and "2 good pairs of 3" in out


# --- evaluate.py builds data.val through the same label map ----------------------------------------


def test_evaluate_scores_cityscapes_layout_with_label_map_as_the_same_data_in_voc_layout(setup, tmp_path):
    """The evaluation fixture's checkpoint and data, the data written again as Cityscapes raw labelIds:
    evaluate.py, given data.label_map, scores the very same confusion matrix."""
    import json

    import evaluate

    root, ids, ckpt = setup
    raw_of = np.full(256, 255, np.uint8)
    raw_of[[0, 1, 2]] = [7, 26, 24]  # class k -> a labelId
    frames = {}
    for n, name in enumerate(ids):
        frames[f"x_000000_{n:06d}"] = raw_of[np.array(Image.open(root / "SegmentationClass" / f"{name}.png"))]
    write_cityscapes(tmp_path / "cs", "val", frames)
    for n, name in enumerate(ids):  # the fixture's images, not write_cityscapes' grey ones
        image = Image.open(root / "JPEGImages" / f"{name}.png")
        image.save(tmp_path / "cs/leftImg8bit/val/x" / f"x_000000_{n:06d}_leftImg8bit.png")
    common = [str(ckpt), "--no-progress", "--device", "cpu"]
    assert evaluate.main([*common, "--output", str(tmp_path / "voc.json")]) == 0
    cityscapes = ["data.val.name=cityscapes", f"data.val.root={tmp_path / 'cs'}", "data.val.split=val"]
    label_map = "data.label_map={7: 0, 26: 1, 24: 2, 255: 255}"
    assert evaluate.main([*common, *cityscapes, label_map, "--output", str(tmp_path / "cs.json")]) == 0
    voc, cs = (json.loads((tmp_path / f"{k}.json").read_text()) for k in ("voc", "cs"))
    assert cs["num_images"] == voc["num_images"] == len(ids)
    assert cs["confusion"] == voc["confusion"] and sum(map(sum, voc["confusion"])) > 0
