"""Datasets on tiny generated trees in the official layouts: ids, pairing, dtypes, labels, bad input."""

from __future__ import annotations

import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import scipy.sparse
from PIL import Image

from fcn.config import load_config
from fcn.data import (
    VOC_CLASSES,
    FolderSegmentation,
    SBDSegmentation,
    VOCAugSegmentation,
    VOCSegmentation,
    build_dataset,
    class_names,
    palette,
    read_classes,
    voc_palette,
)
from tests.helpers import (
    SBD_TRAIN,
    SBD_VAL,
    SEG11VALID,
    VOC_TRAIN,
    VOC_VAL,
    index_of,
    make_sbd_tree,
    make_voc_tree,
    python_env,
    sample_label,
    sample_size,
    write_palette_png,
)


def assert_item(item, sample_id: str, source: str = "voc") -> None:
    """Check an item is (RGB PIL image, uint8 HxW mask) of the id, at native size, with its labels."""
    image, mask = item
    assert isinstance(image, Image.Image) and image.mode == "RGB"
    assert image.size == sample_size(sample_id)
    assert abs(float(np.asarray(image).mean()) - 10 * index_of(sample_id)) < 2
    assert isinstance(mask, np.ndarray) and mask.dtype == np.uint8
    np.testing.assert_array_equal(mask, sample_label(sample_id, source))


# --- PASCAL VOC 2012 and seg11valid ---------------------------------------------------------------


@pytest.mark.parametrize(
    "split, ids",
    [("train", VOC_TRAIN), ("val", VOC_VAL), ("trainval", VOC_TRAIN + VOC_VAL), ("seg11valid", SEG11VALID)],
)
def test_voc_split_lists_ids_in_file_order_and_pairs_each_image_with_its_mask(tmp_path, split, ids):
    make_voc_tree(tmp_path)
    ds = VOCSegmentation(tmp_path, split)
    assert ds.ids == ids and len(ds) == len(ids)
    for k, i in enumerate(ids):
        assert_item(ds[k], i)


def test_voc_mask_keeps_void_255_and_class_indices_of_the_palette_png(tmp_path):
    make_voc_tree(tmp_path)
    _, mask = VOCSegmentation(tmp_path, "train")[0]
    assert set(np.unique(mask).tolist()) == {0, index_of(VOC_TRAIN[0]), 255}


def test_voc_seg11valid_list_inside_the_devkit_is_found_too(tmp_path):
    base = make_voc_tree(tmp_path, seg11valid=False)
    (base / "ImageSets" / "Segmentation" / "seg11valid.txt").write_text("2007_000042\n")
    assert VOCSegmentation(tmp_path, "seg11valid").ids == ["2007_000042"]


def test_voc_seg11valid_missing_says_how_to_download_it(tmp_path):
    make_voc_tree(tmp_path, seg11valid=False)
    with pytest.raises(FileNotFoundError, match=r"seg11valid\.txt.*fcn\.data\.download.*--what seg11valid"):
        VOCSegmentation(tmp_path, "seg11valid")


def test_voc_unknown_split_is_rejected(tmp_path):
    make_voc_tree(tmp_path)
    with pytest.raises(ValueError, match="'test'.*train, val, trainval, seg11valid"):
        VOCSegmentation(tmp_path, "test")


def test_voc_missing_root_names_the_directory(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        VOCSegmentation(tmp_path / "nowhere", "train")
    with pytest.raises(FileNotFoundError, match=r"VOCdevkit.*VOC2012.*holding VOCdevkit"):
        VOCSegmentation(tmp_path, "train")


def test_voc_missing_split_file_names_the_file(tmp_path):
    base = make_voc_tree(tmp_path)
    (base / "ImageSets" / "Segmentation" / "val.txt").unlink()
    with pytest.raises(FileNotFoundError, match=r"val\.txt"):
        VOCSegmentation(tmp_path, "val")


def test_voc_id_listed_without_its_image_fails_at_construction(tmp_path):
    base = make_voc_tree(tmp_path)
    (base / "JPEGImages" / "2007_000039.jpg").unlink()
    with pytest.raises(FileNotFoundError, match=r"1 of 3 ids listed in .*train\.txt.*2007_000039\.jpg"):
        VOCSegmentation(tmp_path, "train")


def test_voc_id_listed_without_its_mask_fails_at_construction(tmp_path):
    base = make_voc_tree(tmp_path)
    (base / "SegmentationClass" / "2007_000042.png").unlink()
    with pytest.raises(FileNotFoundError, match=r"2007_000042\.png"):
        VOCSegmentation(tmp_path, "val")


def test_voc_truncated_image_fails_at_load_naming_the_file(tmp_path):
    base = make_voc_tree(tmp_path)
    path = base / "JPEGImages" / f"{VOC_TRAIN[1]}.jpg"
    path.write_bytes(path.read_bytes()[:120])
    ds = VOCSegmentation(tmp_path, "train")
    with pytest.raises(ValueError, match=rf"{VOC_TRAIN[1]}\.jpg: cannot read the image"):
        ds[1]


def test_voc_unreadable_mask_fails_at_load_naming_the_file(tmp_path):
    base = make_voc_tree(tmp_path)
    (base / "SegmentationClass" / f"{VOC_TRAIN[0]}.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match=rf"{VOC_TRAIN[0]}\.png: cannot read"):
        VOCSegmentation(tmp_path, "train")[0]


def test_voc_mask_of_another_size_than_its_image_is_an_error(tmp_path):
    base = make_voc_tree(tmp_path)
    write_palette_png(base / "SegmentationClass" / f"{VOC_VAL[0]}.png", np.zeros((5, 7), np.uint8))
    with pytest.raises(ValueError, match=rf"{VOC_VAL[0]}\.png: mask is 7x5 .* image is"):
        VOCSegmentation(tmp_path, "val")[0]


def test_voc_mask_label_outside_the_classes_and_255_is_an_error(tmp_path):
    base = make_voc_tree(tmp_path)
    label = sample_label(VOC_VAL[1])
    label[0, 0] = 21
    write_palette_png(base / "SegmentationClass" / f"{VOC_VAL[1]}.png", label)
    ds = VOCSegmentation(tmp_path, "val")
    ds[0]  # the others load
    with pytest.raises(ValueError, match=rf"{VOC_VAL[1]}\.png: labels \[21\] are outside 0\.\.20 and 255"):
        ds[1]
    assert VOCSegmentation(tmp_path, "val", num_classes=None)[1][1][0, 0] == 21  # unchecked on request


def test_voc_rgb_copy_of_a_mask_is_read_through_the_voc_palette(tmp_path):
    base = make_voc_tree(tmp_path)
    label = sample_label(VOC_TRAIN[0])
    Image.fromarray(voc_palette()[label]).save(base / "SegmentationClass" / f"{VOC_TRAIN[0]}.png")
    np.testing.assert_array_equal(VOCSegmentation(tmp_path, "train")[0][1], label)


def test_transforms_receive_image_and_mask_and_their_result_is_returned(tmp_path):
    make_voc_tree(tmp_path)
    seen = []

    def transforms(image, mask):
        seen.append((image.size, mask.shape))
        return "image", int(mask.max())

    ds = VOCSegmentation(tmp_path, "train", transforms=transforms)
    assert ds[0] == ("image", 255)
    w, h = sample_size(VOC_TRAIN[0])
    assert seen == [((w, h), (h, w))]


# --- SBD and voc_aug -------------------------------------------------------------------------------


@pytest.mark.parametrize("split, ids", [("train", SBD_TRAIN), ("val", SBD_VAL)])
def test_sbd_reads_gtcls_segmentation_of_each_mat_file(tmp_path, split, ids):
    make_sbd_tree(tmp_path)
    ds = SBDSegmentation(tmp_path, split)
    assert ds.ids == ids
    for k, i in enumerate(ids):
        assert_item(ds[k], i, "sbd")


def test_sbd_mat_without_gtcls_is_an_error_naming_the_file(tmp_path):
    base = make_sbd_tree(tmp_path)
    scipy.io.savemat(str(base / "cls" / f"{SBD_VAL[0]}.mat"), {"GTinst": {"Segmentation": np.zeros((2, 2))}})
    with pytest.raises(ValueError, match=rf"{SBD_VAL[0]}\.mat: no GTcls\.Segmentation"):
        SBDSegmentation(tmp_path, "val")[0]


def test_sbd_missing_root_and_listed_id_without_mat(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"benchmark_RELEASE.*--what sbd"):
        SBDSegmentation(tmp_path, "train")
    base = make_sbd_tree(tmp_path)
    (base / "cls" / f"{SBD_TRAIN[2]}.mat").unlink()
    with pytest.raises(FileNotFoundError, match=rf"{SBD_TRAIN[2]}\.mat"):
        SBDSegmentation(tmp_path, "train")
    with pytest.raises(ValueError, match="'trainval'"):
        SBDSegmentation(tmp_path, "trainval")


def test_voc_aug_is_voc_train_plus_sbd_train_and_val_minus_voc_val(tmp_path):
    make_voc_tree(tmp_path)
    make_sbd_tree(tmp_path)
    ds = VOCAugSegmentation(tmp_path)
    # VOC train first, then SBD train and val in file order; 2007_000033 (VOC val) left out,
    # 2008_000002 (VOC train) and 2008_000003 (in both SBD splits) listed once.
    assert ds.ids == VOC_TRAIN + ["2008_000003", "2010_000001", "2008_000004"]
    assert len(set(ds.ids) & set(VOC_VAL)) == 0
    by_id = dict(zip(ds.ids, range(len(ds))))
    assert_item(ds[by_id["2008_000002"]], "2008_000002", "voc")  # in VOC and SBD: VOC's PNG wins
    assert_item(ds[by_id["2010_000001"]], "2010_000001", "sbd")
    with pytest.raises(ValueError, match="only 'train'"):
        VOCAugSegmentation(tmp_path, "val")


# --- any VOC-layout folder -------------------------------------------------------------------------


def make_folder(root: Path, masks: str = "P", ext: str = ".png", ids=("a", "b")) -> None:
    """Write a two-image VOC-layout dataset with 3 classes; masks as 'P', 'L' or 'RGB' (custom palette)."""
    colours = [[10, 20, 30], [200, 0, 0], [0, 200, 0]]
    for n, i in enumerate(ids):
        label = np.zeros((12, 10 + n), dtype=np.uint8)
        label[2:6, 2:6] = 1
        label[7:10, 3:8] = 2
        label[0, :] = 255
        (root / "JPEGImages").mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (10 + n, 12), (90, 90, 90)).save(root / "JPEGImages" / f"{i}{ext}")
        (root / "SegmentationClass").mkdir(parents=True, exist_ok=True)
        out = root / "SegmentationClass" / f"{i}.png"
        if masks == "P":
            write_palette_png(out, label)
        elif masks == "L":
            Image.fromarray(label, mode="L").save(out)
        else:
            pal = np.array(colours + [[224, 224, 192]] * 253, np.uint8)
            Image.fromarray(pal[label]).save(out)
    (root / "ImageSets" / "Segmentation").mkdir(parents=True, exist_ok=True)
    (root / "ImageSets" / "Segmentation" / "train.txt").write_text("\n".join(ids) + "\n")
    (root / "classes.txt").write_text("".join(f"c{k} {r} {g} {b}\n" for k, (r, g, b) in enumerate(colours)))


@pytest.mark.parametrize("masks", ["P", "L", "RGB"])
def test_folder_reads_palette_grayscale_and_colour_masks_as_the_same_labels(tmp_path, masks):
    make_folder(tmp_path, masks)
    _, colours = read_classes(tmp_path / "classes.txt")
    ds = FolderSegmentation(tmp_path, "train", palette=colours if masks == "RGB" else None, num_classes=3)
    assert ds.ids == ["a", "b"]
    image, mask = ds[1]
    assert image.size == (11, 12) and mask.shape == (12, 11) and mask.dtype == np.uint8
    assert set(np.unique(mask).tolist()) == {0, 1, 2, 255}
    assert mask[3, 3] == 1 and mask[8, 4] == 2 and mask[0, 0] == 255


def test_folder_reads_a_one_bit_mask_as_labels_0_and_1(tmp_path):
    make_folder(tmp_path, ids=("a",))
    bits = np.zeros((12, 10), dtype=bool)
    bits[4:8, 2:5] = True
    Image.fromarray(bits).save(tmp_path / "SegmentationClass" / "a.png")
    assert Image.open(tmp_path / "SegmentationClass" / "a.png").mode == "1"
    np.testing.assert_array_equal(
        FolderSegmentation(tmp_path, "train", num_classes=2)[0][1], bits.astype(np.uint8)
    )


def test_folder_colour_mask_with_an_unknown_colour_names_file_and_colour(tmp_path):
    make_folder(tmp_path, "RGB")
    _, colours = read_classes(tmp_path / "classes.txt")
    rgb = np.asarray(Image.open(tmp_path / "SegmentationClass" / "b.png")).copy()
    rgb[5, 9] = (1, 2, 3)
    Image.fromarray(rgb).save(tmp_path / "SegmentationClass" / "b.png")
    ds = FolderSegmentation(tmp_path, "train", palette=colours)
    ds[0]
    with pytest.raises(ValueError, match=r"b\.png: colour \(1, 2, 3\) at \(x=9, y=5\) is not in the palette"):
        ds[1]


def test_folder_colour_mask_without_palette_uses_voc_colours(tmp_path):
    make_folder(tmp_path, "P")
    path = tmp_path / "SegmentationClass" / "a.png"
    Image.open(path).convert("RGB").save(path)  # VOC colours as RGB
    assert set(np.unique(FolderSegmentation(tmp_path, "train")[0][1]).tolist()) == {0, 1, 2, 255}


def test_folder_missing_pieces_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="folder dataset.*JPEGImages"):
        FolderSegmentation(tmp_path, "train")
    make_folder(tmp_path, ext=".jpg")
    with pytest.raises(FileNotFoundError, match=r"val\.txt"):
        FolderSegmentation(tmp_path, "val")
    (tmp_path / "JPEGImages" / "b.jpg").unlink()
    with pytest.raises(FileNotFoundError, match=r"1 of 2 ids .*no image .*e\.g\. b with \.jpg/\.jpeg/\.png"):
        FolderSegmentation(tmp_path, "train")


def _save_mode(path: Path, mode: str) -> np.ndarray:
    """Save a 10x12 image in `mode` and return the RGB pixels it should load as."""
    ramp = np.tile(np.arange(0, 240, 20, dtype=np.uint8), (10, 1))
    if mode == "L":
        Image.fromarray(ramp, "L").save(path)
        return np.repeat(ramp[..., None], 3, -1)
    if mode == "I;16":
        Image.fromarray(ramp.astype(np.uint16) * 257).save(path)  # 16-bit grayscale PNG
        return np.repeat(ramp[..., None], 3, -1)
    if mode == "RGBA":
        rgba = np.dstack([ramp, ramp[:, ::-1], np.full_like(ramp, 7), np.full_like(ramp, 128)])
        Image.fromarray(rgba, "RGBA").save(path)
        return rgba[..., :3]
    if mode == "P":
        img = Image.fromarray(ramp // 20, "P")
        img.putpalette(voc_palette().tobytes())
        img.save(path)
        return voc_palette()[ramp // 20]
    if mode == "RGB;16":  # a 48-bit PNG, written by hand (Pillow cannot write one)
        rgb16 = np.dstack([ramp, ramp[:, ::-1], np.full_like(ramp, 50)]).astype(">u2") * 257
        rows = b"".join(b"\0" + row.tobytes() for row in rgb16)

        def chunk(kind: bytes, data: bytes) -> bytes:
            return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

        header = struct.pack(">IIBBBBB", 12, 10, 16, 2, 0, 0, 0)
        path.write_bytes(
            b"\x89PNG\r\n\x1a\n"
            + chunk(b"IHDR", header)
            + chunk(b"IDAT", zlib.compress(rows))
            + chunk(b"IEND", b"")
        )
        return (rgb16 // 257).astype(np.uint8)
    if mode == "CMYK":
        img = Image.new("CMYK", (12, 10), (0, 255, 255, 0))  # red, as a CMYK JPEG
        img.save(path, quality=100)
        return np.asarray(img.convert("RGB"))
    raise AssertionError(mode)


@pytest.mark.parametrize(
    "mode, ext",
    [("L", ".png"), ("I;16", ".png"), ("RGB;16", ".png"), ("RGBA", ".png"), ("P", ".png"), ("CMYK", ".jpg")],
)
def test_grayscale_16bit_rgba_palette_and_cmyk_images_load_as_8bit_rgb(tmp_path, mode, ext):
    make_folder(tmp_path, ids=("a",))
    (tmp_path / "JPEGImages" / "a.png").unlink()
    write_palette_png(tmp_path / "SegmentationClass" / "a.png", np.zeros((10, 12), np.uint8))
    path = tmp_path / "JPEGImages" / f"a{ext}"
    expected = _save_mode(path, mode)
    assert Image.open(path).mode == {"RGB;16": "RGB"}.get(mode, mode)
    image, _ = FolderSegmentation(tmp_path, "train", num_classes=3)[0]
    assert image.mode == "RGB"
    assert np.abs(np.asarray(image).astype(int) - expected).max() <= 2


# --- configuration: build_dataset, class_names, palette ---------------------------------------------


def test_voc_palette_is_the_devkit_colour_map():
    pal = voc_palette()
    assert pal.shape == (256, 3) and pal.dtype == np.uint8
    assert pal[0].tolist() == [0, 0, 0] and pal[1].tolist() == [128, 0, 0]
    assert pal[15].tolist() == [192, 128, 128] and pal[255].tolist() == [224, 224, 192]
    assert len({tuple(c) for c in pal.tolist()}) == 256


def test_class_names_and_palette_follow_the_config():
    cfg = load_config()
    assert class_names(cfg.data) == list(VOC_CLASSES) and len(VOC_CLASSES) == 21
    np.testing.assert_array_equal(palette(cfg.data), voc_palette())
    cfg = load_config(
        overrides=[
            "model.num_classes=3",
            "data.classes=[bg,cat,dog]",
            "data.palette=[[1,2,3],[4,5,6],[7,8,9]]",
        ]
    )
    assert class_names(cfg.data) == ["bg", "cat", "dog"]
    pal = palette(cfg.data)
    assert pal[:3].tolist() == [[1, 2, 3], [4, 5, 6], [7, 8, 9]]
    assert pal[255].tolist() == [224, 224, 192] and pal[3].tolist() == voc_palette()[3].tolist()


def test_build_dataset_selects_each_dataset_by_name(tmp_path):
    make_voc_tree(tmp_path)
    make_sbd_tree(tmp_path)
    make_folder(tmp_path / "mine", "RGB")
    root = f"data.train.root={tmp_path}"
    for name, split, cls, n in [
        ("voc", "seg11valid", VOCSegmentation, 2),
        ("sbd", "train", SBDSegmentation, 4),
        ("voc_aug", "train", VOCAugSegmentation, 6),
    ]:
        cfg = load_config(overrides=[root, f"data.train.name={name}", f"data.train.split={split}"])
        ds = build_dataset(cfg.data.train, cfg.data)
        assert type(ds) is cls and len(ds) == n
    cfg = load_config(
        overrides=[
            f"data.train.root={tmp_path / 'mine'}",
            "data.train.name=folder",
            "model.num_classes=3",
            "data.classes=[c0,c1,c2]",
            "data.palette=[[10,20,30],[200,0,0],[0,200,0]]",
        ]
    )
    ds = build_dataset(cfg.data.train, cfg.data, transforms=lambda image, mask: mask)
    assert type(ds) is FolderSegmentation and ds.num_classes == 3
    assert set(np.unique(ds[0]).tolist()) == {0, 1, 2, 255}


def test_read_classes_rejects_a_malformed_line(tmp_path):
    path = tmp_path / "classes.txt"
    path.write_text("# name R G B\nbackground 0 0 0\nshape 300 0 0\n")
    with pytest.raises(ValueError, match=r"classes\.txt:3: expected 'name R G B'"):
        read_classes(path)


def test_importing_fcn_data_reads_no_files_and_imports_neither_torch_nor_transforms():
    code = "import sys, fcn.data; bad = [m for m in ('torch', 'scipy', 'fcn.data.transforms') if m in sys.modules]; print(bad)"
    out = subprocess.run(
        [sys.executable, "-c", code], env=python_env(), capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]"
