"""'pairs' datasets: images and masks in two folders paired by file stem (fcn/data/pairs.py)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from fcn.config import ConfigError, load_config
from fcn.data import FolderSegmentation, PairsSegmentation, build_dataset
from fcn.data.check import main as check_main
from fcn.data.common import make_palette
from fcn.data.toy import TOY_CLASSES, generate
from fcn.data.toy import main as toy_main
from fcn.training.loop import fit

SIZE, N_TRAIN, N_VAL = 32, 6, 3


@pytest.fixture(scope="module")
def trees(tmp_path_factory) -> tuple[Path, Path]:
    """Return (the toy data written as pairs, the same seed as a VOC tree)."""
    base = tmp_path_factory.mktemp("pairs")
    for fmt in ("pairs", "voc"):
        args = ["--root", str(base / fmt), "--train", str(N_TRAIN), "--val", str(N_VAL), "--size", str(SIZE)]
        assert toy_main([*args, "--workers", "1", "--format", fmt]) == 0
    return base / "pairs", base / "voc"


@pytest.fixture
def pairs(trees, tmp_path) -> Path:
    """Return a copy of the pairs tree that a test may change."""
    return Path(shutil.copytree(trees[0], tmp_path / "pairs"))


def overrides(root: Path, *extra: str) -> list[str]:
    """Return the overrides of a config reading the toy pairs tree under root."""
    return [
        "data.train.name=pairs",
        f"data.train.images={root / 'train' / 'images'}",
        f"data.train.masks={root / 'train' / 'masks'}",
        "data.val.name=pairs",
        f"data.val.images={root / 'val' / 'images'}",
        f"data.val.masks={root / 'val' / 'masks'}",
        f"data.classes=[{','.join(TOY_CLASSES)}]",
        f"model.num_classes={len(TOY_CLASSES)}",
        *extra,
    ]


def arrays(dataset) -> list[tuple[np.ndarray, np.ndarray]]:
    """Return every (image, mask) of a dataset as arrays."""
    return [(np.asarray(image), mask) for image, mask in (dataset[k] for k in range(len(dataset)))]


def assert_same_items(a, b) -> None:
    assert len(a) == len(b) > 0
    for (image_a, mask_a), (image_b, mask_b) in zip(arrays(a), arrays(b)):
        assert np.array_equal(image_a, image_b) and np.array_equal(mask_a, mask_b)


def test_toy_pairs_layout_has_two_folders_per_split_and_the_classes_file(trees):
    root = trees[0]
    for split, n in (("train", N_TRAIN), ("val", N_VAL)):
        assert len(list((root / split / "images").glob("*.jpg"))) == n
        assert len(list((root / split / "masks").glob("*.png"))) == n
    assert (root / "classes.txt").read_text() == (trees[1] / "classes.txt").read_text()


def test_pairs_tree_gives_the_voc_tree_arrays_of_the_same_seed(trees):
    pairs, voc = trees
    cfg = load_config(overrides=overrides(pairs))
    for split in ("train", "val"):
        ds = build_dataset(cfg.data[split], cfg.data)
        assert isinstance(ds, PairsSegmentation) and ds.ids == FolderSegmentation(voc, split).ids
        assert_same_items(ds, FolderSegmentation(voc, split))
    labels = set()
    for _, mask in arrays(build_dataset(cfg.data.train, cfg.data)):
        labels |= set(np.unique(mask).tolist())
    assert labels <= {0, 1, 2, 3, 255} and 255 in labels and len(labels) >= 3


def test_ids_file_chooses_the_images_in_its_order(pairs, tmp_path):
    ids = tmp_path / "some.txt"
    ids.write_text("train_00004\ntrain_00001\n")
    ds = PairsSegmentation(pairs / "train" / "images", pairs / "train" / "masks", ids)
    assert ds.ids == ["train_00004", "train_00001"]
    assert ds.images[0].name == "train_00004.jpg" and ds.masks[1].name == "train_00001.png"


def test_listed_id_without_its_mask_or_image_is_the_error_naming_it(pairs, tmp_path):
    ids = tmp_path / "some.txt"
    ids.write_text("train_00004\ntrain_00001\n")
    (pairs / "train" / "masks" / "train_00001.png").unlink()
    with pytest.raises(
        FileNotFoundError, match=r"1 of 2 ids listed in .*some.txt have no mask .*train_00001\.png"
    ):
        PairsSegmentation(pairs / "train" / "images", pairs / "train" / "masks", ids)
    ids.write_text("train_00004\nnot_there\n")
    with pytest.raises(FileNotFoundError, match=r"have no image in .*images \(e\.g\. not_there with \.jpg/"):
        PairsSegmentation(pairs / "train" / "images", pairs / "train" / "masks", ids)
    with pytest.raises(FileNotFoundError, match="split file .*missing.txt not found"):
        PairsSegmentation(pairs / "train" / "images", pairs / "train" / "masks", tmp_path / "missing.txt")


def test_orphans_are_named_by_the_check_but_the_rest_trains(pairs, tmp_path, capsys):
    masks = pairs / "train" / "masks"
    (masks / "train_00002.png").unlink()
    shutil.copy(masks / "train_00003.png", masks / "lonely.png")
    config = tmp_path / "c.yml"
    config.write_text(yaml.safe_dump({"data": {"num_workers": 0}}))
    code = check_main(["--config", str(config), *overrides(pairs)])
    out = capsys.readouterr().out
    assert code == 1
    assert f"{masks / 'train_00002.png'}: no such mask for train_00002.jpg" in out
    assert f"{masks / 'lonely.png'}: no image of stem 'lonely' in {pairs / 'train' / 'images'}" in out
    assert (
        f"1 of {N_TRAIN} images in {pairs / 'train' / 'images'} have no mask and 1 of {N_TRAIN} masks in "
        f"{masks} have no image: left out" in out
    )
    assert f"{N_TRAIN - 1} good pairs of {N_TRAIN - 1}" in out and "  3  triangle" in out
    ds = PairsSegmentation(pairs / "train" / "images", masks)
    assert "train_00002" not in ds.ids and "lonely" not in ds.ids and len(ds) == N_TRAIN - 1
    assert len(ds.left_out) == 1


def test_no_pair_at_all_is_the_error_naming_both_folders(pairs, tmp_path):
    images, empty = pairs / "train" / "images", tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError) as error:
        PairsSegmentation(images, empty)
    assert str(error.value).startswith(f"pairs dataset: no image in {images} has its mask in {empty} (")
    with pytest.raises(
        FileNotFoundError, match=f"no image in {empty} has its mask in {pairs / 'val' / 'masks'}"
    ):
        PairsSegmentation(empty, pairs / "val" / "masks")


def test_two_images_of_one_stem_is_the_error_naming_both_files(pairs):
    images = pairs / "train" / "images"
    Image.open(images / "train_00001.jpg").save(images / "train_00001.png")
    with pytest.raises(ValueError) as error:
        PairsSegmentation(images, pairs / "train" / "masks")
    assert str(error.value) == (
        f"pairs dataset: {images / 'train_00001.jpg'} and {images / 'train_00001.png'} are two images of "
        "stem 'train_00001'; keep one of them (a mask labels one image)"
    )


def test_mask_suffix_pairs_abc_jpg_with_abc_mask_png_in_another_or_the_same_folder(pairs, trees):
    masks = pairs / "train" / "masks"
    for mask in sorted(masks.glob("*.png")):
        mask.rename(masks / f"{mask.stem}_mask.png")
    with pytest.raises(
        FileNotFoundError, match=r"masks are named like train_00000_mask\.png \(set mask_suffix"
    ):
        PairsSegmentation(pairs / "train" / "images", masks)
    expected = FolderSegmentation(trees[1], "train")
    assert_same_items(PairsSegmentation(pairs / "train" / "images", masks, mask_suffix="_mask"), expected)
    # Roboflow's export: abc.jpg and abc_mask.png side by side; the masks are not taken for images.
    together = pairs / "together"
    shutil.copytree(pairs / "train" / "images", together)
    for mask in masks.iterdir():
        shutil.copy(mask, together / mask.name)
    ds = PairsSegmentation(together, together, mask_suffix="_mask")
    assert len(ds) == N_TRAIN and ds.left_out == []  # no mask was listed as an image without a mask
    assert_same_items(ds, expected)
    with pytest.raises(ValueError, match="images and masks are both .*together: set mask_suffix"):
        PairsSegmentation(together, together)


def test_colour_and_16bit_masks_read_through_the_palette_and_the_label_map(pairs, trees, tmp_path, capsys):
    expected = FolderSegmentation(trees[1], "train")
    masks = pairs / "train" / "masks"
    colours = [[10, 20, 30], [200, 0, 0], [0, 200, 0], [0, 0, 200]]  # not VOC's: data.palette must be used
    lut = make_palette(colours)  # void (255) keeps VOC's colour, as for a folder dataset
    for mask, (_, label) in zip(sorted(masks.glob("*.png")), arrays(expected)):
        Image.fromarray(lut[label]).save(mask)  # an RGB colour mask
    palette = f"data.palette=[{','.join('[' + ','.join(map(str, c)) + ']' for c in colours)}]"
    cfg = load_config(overrides=overrides(pairs, palette))
    assert_same_items(build_dataset(cfg.data.train, cfg.data), expected)
    config = tmp_path / "c.yml"
    config.write_text(yaml.safe_dump({"data": {"num_workers": 0}}))
    assert check_main(["--config", str(config), *overrides(pairs, palette)]) == 0, capsys.readouterr().out
    for mask, (_, label) in zip(sorted(masks.glob("*.png")), arrays(expected)):
        raw = np.where(label == 255, 60000, label.astype(np.uint16) * 1000).astype(np.uint16)
        Image.fromarray(raw).save(mask)  # a 16-bit grayscale PNG
    label_map = "data.label_map={0: 0, 1000: 1, 2000: 2, 3000: 3}"  # 60000 unlisted: ignored (255)
    cfg = load_config(overrides=overrides(pairs, label_map))
    assert_same_items(build_dataset(cfg.data.train, cfg.data), expected)


def write_yaml(path: Path, train: dict, classes: bool = True) -> str:
    data = {"data": {"train": train}, "model": {"num_classes": 4}}
    if classes:
        data["data"]["classes"] = list(TOY_CLASSES)
    path.write_text(yaml.safe_dump(data))
    return str(path)


@pytest.mark.parametrize(
    ("train", "classes", "message"),
    [
        (
            {"name": "pairs", "images": "i"},
            True,
            "data.train.name='pairs' needs data.train.masks: the directory",
        ),
        (
            {"name": "pairs", "masks": "m"},
            True,
            "data.train.name='pairs' needs data.train.images: the directory",
        ),
        ({"name": "pairs", "images": "i", "masks": "m"}, False, "data.train.name='pairs' needs data.classes"),
        (
            {"name": "folder", "masks": "m"},
            True,
            "data.train.masks is for name 'pairs', 'coco_panoptic' or 'labelstudio', not 'folder'",
        ),
        ({"name": "voc", "mask_suffix": "_m"}, True, "data.train.mask_suffix is for name 'pairs', not 'voc'"),
        (
            {"name": "pairs", "images": "i", "masks": "m", "mask_suffix": "_mask.png"},
            True,
            "data.train.mask_suffix='_mask.png' must be what the mask's name adds",
        ),
        ({"name": "pairs", "images": "i", "masks": "m", "idz": "x"}, True, "key 'data.train.idz'"),
    ],
)
def test_config_errors_name_the_key_and_the_file(tmp_path, train, classes, message):
    path = write_yaml(tmp_path / "bad.yml", train, classes)
    with pytest.raises(ConfigError) as error:
        load_config([path])
    assert str(error.value).startswith(f"{path}") and message in str(error.value)
    assert "\n" not in str(error.value)


def test_train_runs_on_a_pairs_config_warns_of_orphans_and_writes_checkpoints(pairs, tmp_path, capsys):
    images = pairs / "train" / "images"
    Image.open(images / "train_00000.jpg").save(images / "extra.jpg")  # an image without a mask
    run = tmp_path / "run"
    cfg = load_config(
        overrides=overrides(
            pairs,
            "model.arch=fcn32s",
            "model.backbone=resnet18",
            "model.geometry=same",
            "model.pretrained=false",
            "data.transforms.crop_size=32",
            "data.transforms.max_shift=0",
            "data.batch_size=2",
            "data.val_batch_size=3",
            "data.num_workers=0",
            "loss.class_weights=inverse_frequency",
            "training.device=cpu",
            "training.iters=2",
            "training.eval_every=2",
            "training.vis_images=0",
            f"training.run_dir={run}",
        )
    )
    torch.set_num_threads(1)
    assert fit(cfg)["iteration"] == 2
    assert (run / "checkpoints" / "last.pt").is_file() and (run / "checkpoints" / "best.pt").is_file()
    warnings = [line for line in capsys.readouterr().out.splitlines() if line.startswith("warning:")]
    assert warnings == [
        f"warning: data.train: 1 of {N_TRAIN + 1} images in {images} have no mask and 0 of {N_TRAIN} masks "
        f"in {pairs / 'train' / 'masks'} have no image: left out (python -m fcn.data.check names them)"
    ]
    # The class counts are cached beside the masks (root is not a pairs dataset's directory).
    assert len(list((pairs / "train" / "masks").glob(".fcn_class_counts_train_*.json"))) == 1


def test_toy_writes_the_same_files_as_pairs_and_as_voc(trees):
    pairs, voc = trees
    for split, n in (("train", N_TRAIN), ("val", N_VAL)):
        for k in range(n):
            name = f"{split}_{k:05d}"
            assert (pairs / split / "images" / f"{name}.jpg").read_bytes() == (
                voc / "JPEGImages" / f"{name}.jpg"
            ).read_bytes()
            assert (pairs / split / "masks" / f"{name}.png").read_bytes() == (
                voc / "SegmentationClass" / f"{name}.png"
            ).read_bytes()
    with pytest.raises(ValueError, match="not one of voc, coco, pairs"):
        generate(pairs.parent / "x", fmt="tiles")
