"""CVAT's exports as CVAT writes them: 'cvat_mask' (Segmentation mask 1.1) and 'cvat_xml' (CVAT for
images 1.1), each written by datumaro, the library CVAT exports with (its voc_segmentation and cvat
exporters), then read by build_dataset and python -m fcn.data.check."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

dm = pytest.importorskip("datumaro")
from datumaro.components.annotation import (  # noqa: E402
    AnnotationType,
    Bbox,
    LabelCategories,
    Mask,
    MaskCategories,
    Polygon,
)
from datumaro.components.media import Image as DmImage  # noqa: E402

from fcn.config import ConfigError, load_config  # noqa: E402
from fcn.data import build_dataset, class_names, palette  # noqa: E402
from fcn.data.check import main as check_main  # noqa: E402
from fcn.data.scan import check_dataset  # noqa: E402

H, W = 12, 16
NAMES = ["background", "cat", "dog"]
COLOURS = {0: (0, 0, 0), 1: (250, 50, 83), 2: (36, 179, 83)}  # CVAT's default label colours


def _box(y0, y1, x0, x1):
    m = np.zeros((H, W), np.uint8)
    m[y0:y1, x0:x1] = 1
    return m


def _dataset(shapes=True):
    """Return a datumaro dataset of two images: overlapping masks (dog drawn over cat by z_order),
    and, with `shapes`, a polygon and a box on the second."""
    cats = {
        AnnotationType.label: LabelCategories.from_iterable(NAMES),
        AnnotationType.mask: MaskCategories(dict(COLOURS)),
    }
    second = [Mask(image=_box(0, 4, 0, 5), label=2)]
    if shapes:
        second += [Polygon([2, 6, 12, 6, 12, 11, 2, 11], label=1, z_order=1), Bbox(10, 0, 4, 3, label=1)]
    items = [
        dm.DatasetItem(
            id="a",
            subset="default",
            media=DmImage.from_numpy(data=np.full((H, W, 3), 90, np.uint8)),
            annotations=[
                Mask(image=_box(2, 8, 2, 10), label=1, z_order=0),
                Mask(image=_box(5, 11, 6, 14), label=2, z_order=1),  # over the cat where they meet
            ],
        ),
        dm.DatasetItem(
            id="b",
            subset="default",
            media=DmImage.from_numpy(data=np.full((H, W, 3), 40, np.uint8)),
            annotations=second,
        ),
    ]
    return dm.Dataset.from_iterable(items, categories=cats)


def _mask_export(tmp_path: Path) -> Path:
    root = tmp_path / "cvat_mask"
    dataset = _dataset()  # CVAT turns polygons and boxes into masks (datumaro's transforms) to write them
    dataset.transform("polygons_to_masks")
    dataset.transform("boxes_to_masks")
    dataset.export(str(root), "voc_segmentation", save_media=True)
    return root


def _source_masks(root: Path) -> dict[str, np.ndarray]:
    """Return the class indices of the export's own colour masks (the truth both formats must read)."""
    lut = {c: i for i, c in COLOURS.items()}
    out = {}
    for item in ("a", "b"):
        rgb = np.asarray(Image.open(root / "SegmentationClass" / f"{item}.png").convert("RGB"))
        out[item] = np.vectorize(lambda r, g, b: lut[(r, g, b)])(rgb[..., 0], rgb[..., 1], rgb[..., 2])
    return out


def _config(tmp_path: Path, ds: str, *extra: str) -> Path:
    config = tmp_path / "cvat.yml"
    config.write_text(
        "model: {backbone: resnet18, geometry: same, pretrained: false, arch: fcn32s}\n"
        f"data: {{train: {ds}, val: {ds}, num_workers: 0{''.join(', ' + e for e in extra)}}}\n"
    )
    return config


def _mask_cfg(tmp_path, root, *overrides):
    return load_config(
        [str(_config(tmp_path, f"{{name: cvat_mask, root: {root}, split: default}}"))], overrides
    )


def test_cvat_mask_reads_labelmap_classes_and_colours_and_check_counts_the_source_pixels(tmp_path, capsys):
    root = _mask_export(tmp_path)
    assert (
        (root / "labelmap.txt").read_text().startswith("# label:color_rgb:parts:actions\nbackground:0,0,0::")
    )
    cfg = _mask_cfg(tmp_path, root)
    assert cfg.model.num_classes == 3  # inferred from labelmap.txt
    assert class_names(cfg.data) == NAMES and class_names(cfg.data) == NAMES
    assert [tuple(palette(cfg.data)[i]) for i in range(3)] == list(COLOURS.values())
    out = capsys.readouterr().out
    assert out.count(f"cvat_mask: 3 classes from {root / 'labelmap.txt'}: background=0, cat=1, dog=2\n") == 1
    truth = _source_masks(root)
    ds = build_dataset(cfg.data.train, cfg.data)
    assert ds.ids == ["a", "b"]
    for i, item in enumerate(ds.ids):
        np.testing.assert_array_equal(ds[i][1], truth[item])
    assert ds[0][1][6, 7] == 2  # the dog over the cat, as z_order drew it
    report = check_dataset(cfg)[0]
    expected = np.bincount(np.concatenate([m.ravel() for m in truth.values()]), minlength=3)
    np.testing.assert_array_equal(report.counts[:3], expected)
    assert report.good == 2 and not report.problems


def test_cvat_mask_maps_labels_to_data_classes_by_name(tmp_path):
    root = _mask_export(tmp_path)
    cfg = _mask_cfg(tmp_path, root, "data.classes=[background,dog,cat]")
    mask = build_dataset(cfg.data.train, cfg.data)[0][1]
    np.testing.assert_array_equal(mask, np.array([0, 2, 1])[_source_masks(root)["a"]])
    cfg = _mask_cfg(tmp_path, root, "data.classes=[background,cat]")
    with pytest.raises(ValueError, match=r"labelmap.txt: label 'dog' is not in data.classes"):
        build_dataset(cfg.data.train, cfg.data)


def test_cvat_mask_colour_not_in_labelmap_is_one_line_naming_the_mask_and_colour(tmp_path, capsys):
    root = _mask_export(tmp_path)
    bad = root / "SegmentationClass" / "b.png"
    rgb = np.asarray(Image.open(bad).convert("RGB")).copy()
    rgb[0, 0] = (1, 2, 3)
    Image.fromarray(rgb).save(bad)
    config = _config(tmp_path, f"{{name: cvat_mask, root: {root}, split: default}}")
    assert check_main(["--config", str(config)]) == 1
    out = capsys.readouterr().out
    assert f"{bad}: colour (1, 2, 3) at (x=0, y=0) is not in {root / 'labelmap.txt'}" in out
    cfg = load_config([str(config)])
    with pytest.raises(
        ValueError, match=r"b.png: colour \(1, 2, 3\) at \(x=0, y=0\) is not in .*labelmap.txt"
    ) as exc:
        build_dataset(cfg.data.train, cfg.data)[1]
    assert "\n" not in str(exc.value)


def test_cvat_mask_subsets_default_all_and_a_missing_one_names_those_there_are(tmp_path):
    root = _mask_export(tmp_path)
    (root / "ImageSets" / "Segmentation" / "Train.txt").write_text("b\n")
    cfg = _mask_cfg(tmp_path, root, "data.train.split=all")
    assert build_dataset(cfg.data.train, cfg.data).ids == ["b", "a", "b"]  # Train then default, in name order
    cfg = _mask_cfg(tmp_path, root, "data.train.split=train")
    with pytest.raises(
        FileNotFoundError, match=r"no subset 'train' in .*Segmentation \(it has: Train, default\)"
    ):
        build_dataset(cfg.data.train, cfg.data)


def test_cvat_mask_bad_labelmap_or_no_images_is_one_line(tmp_path):
    root = _mask_export(tmp_path)
    (root / "labelmap.txt").write_text("# label:color_rgb:parts:actions\nbackground:0,0,0::\ncat:300,0,0::\n")
    with pytest.raises(ConfigError, match=r"labelmap.txt:3: expected 'name:r,g,b::'"):
        _mask_cfg(tmp_path, root)
    (root / "labelmap.txt").unlink()  # no labelmap: CVAT wrote PASCAL VOC's labels
    assert _mask_cfg(tmp_path, root).model.num_classes == 21
    for f in (root / "JPEGImages").iterdir():
        f.unlink()
    (root / "JPEGImages").rmdir()
    cfg = _mask_cfg(tmp_path, root)
    with pytest.raises(FileNotFoundError, match=r"JPEGImages not found; the export holds no images"):
        build_dataset(cfg.data.train, cfg.data)


# ------------------------------------------------------------------------------------------------
# cvat_xml


def _xml_export(tmp_path: Path, shapes=True) -> Path:
    root = tmp_path / "cvat_xml"
    _dataset(shapes).export(str(root), "cvat", save_media=True)
    xml = root / "default.xml"
    text = xml.read_text()
    for name, rgb in zip(NAMES, COLOURS.values()):  # CVAT writes each label's colour; datumaro does not
        text = text.replace(f"<name>{name}</name>", f"<name>{name}</name><color>#{bytes(rgb).hex()}</color>")
    xml.write_text(text)
    return xml


def _xml_cfg(tmp_path, xml, *overrides):
    ds = f"{{name: cvat_xml, annotations: {xml}, images: {xml.parent / 'images'}}}"
    return load_config([str(_config(tmp_path, ds))], overrides)


def test_cvat_xml_draws_masks_polygons_and_boxes_as_cvats_mask_export_does(tmp_path, capsys):
    xml = _xml_export(tmp_path)
    assert 'rle="' in xml.read_text() and "<polygon" in xml.read_text() and "<box" in xml.read_text()
    cfg = _xml_cfg(tmp_path, xml)
    assert cfg.model.num_classes == 3 and class_names(cfg.data) == NAMES
    assert [tuple(palette(cfg.data)[i]) for i in range(3)] == list(COLOURS.values())
    assert f"cvat_xml: 3 classes from {xml}: background=0, cat=1, dog=2" in capsys.readouterr().out
    truth = _source_masks(_mask_export(tmp_path))  # the same shapes through CVAT's mask export
    ds = build_dataset(cfg.data.train, cfg.data)
    assert ds.ids == ["a.jpg", "b.jpg"]
    for i, item in enumerate(("a", "b")):
        np.testing.assert_array_equal(ds[i][1], truth[item])
    report = check_dataset(cfg)[0]
    expected = np.bincount(np.concatenate([m.ravel() for m in truth.values()]), minlength=3)
    np.testing.assert_array_equal(report.counts[:3], expected)


def test_cvat_xml_z_order_decides_overlaps_and_equal_z_keeps_file_order(tmp_path):
    xml = _xml_export(tmp_path, shapes=False)
    text = xml.read_text()
    cfg = _xml_cfg(tmp_path, xml)
    assert build_dataset(cfg.data.train, cfg.data)[0][1][6, 7] == 2  # dog z=1 over cat z=0
    xml.write_text(text.replace('z_order="1"', 'z_order="-1"'))
    assert build_dataset(cfg.data.train, cfg.data)[0][1][6, 7] == 1  # now the cat is on top
    xml.write_text(text.replace('z_order="1"', 'z_order="0"'))
    assert build_dataset(cfg.data.train, cfg.data)[0][1][6, 7] == 2  # equal: the later in the file


def test_cvat_xml_rle_is_cvats_row_major_runs_over_the_box(tmp_path):
    xml = _xml_export(tmp_path, shapes=False)
    text = xml.read_text()
    start = text.index("<mask", text.index('<image id="1"'))
    end = text.index(">", start)
    # 3x2 box at (left 4, top 1): rows 110 / 011
    mask = '<mask label="cat" rle="0, 2, 2, 2" left="4" top="1" width="3" height="2" z_order="5"'
    xml.write_text(text[:start] + mask + text[end:])
    got = build_dataset(_xml_cfg(tmp_path, xml).data.train, _xml_cfg(tmp_path, xml).data)[1][1]
    expected = np.zeros((H, W), np.uint8)
    expected[1, 4:6] = expected[2, 5:7] = 1
    np.testing.assert_array_equal(got, expected)


def test_cvat_xml_bad_shapes_unknown_label_and_missing_image_are_one_line_each(tmp_path, capsys):
    xml = _xml_export(tmp_path)
    text = xml.read_text()
    text = text.replace('label="dog"', 'label="zebra"', 1)
    text = text.replace('points="', 'points="40.00,3.00;', 1)  # x=40 beyond the 16-pixel width
    text = text.replace('rle="', 'rle="1, ', 1)  # runs that no longer sum to the box
    xml.write_text(text)
    (xml.parent / "images" / "b.jpg").unlink()
    ds = f"{{name: cvat_xml, annotations: {xml}, images: {xml.parent / 'images'}}}"
    assert check_main(["--config", str(_config(tmp_path, ds))]) == 1
    out = capsys.readouterr().out
    assert f"{xml}: label 'zebra' (1 shapes) is not in data.classes" in out
    assert f"{xml}: image 'b.jpg': <polygon> has a point (40, 3) outside its {W}x{H} image" in out
    assert f"{xml}: image 'a.jpg': <mask> rle runs sum to 193, not its {W}x{H} box" in out
    assert f"{xml.parent / 'images' / 'b.jpg'}: no such image; listed in default.xml" in out


def test_cvat_xml_shapes_without_area_are_left_out_with_one_note(tmp_path, capsys):
    xml = _xml_export(tmp_path, shapes=False)
    text = xml.read_text().replace(
        "</image>", '<polyline label="cat" points="1,1;5,5" z_order="0"></polyline></image>', 1
    )
    xml.write_text(text)
    cfg = _xml_cfg(tmp_path, xml)
    build_dataset(cfg.data.train, cfg.data)
    build_dataset(cfg.data.val, cfg.data)
    out = capsys.readouterr().out
    assert out.count("cvat_xml: default.xml: 1 polylines left out (no area") == 1


def test_cvat_xml_label_map_is_rejected_and_missing_xml_named(tmp_path):
    xml = _xml_export(tmp_path, shapes=False)
    with pytest.raises(
        ConfigError, match="data.label_map and data.reduce_zero_label do not apply to 'cvat_xml'"
    ):
        _xml_cfg(tmp_path, xml, "data.reduce_zero_label=true")
    with pytest.raises(ConfigError, match=r"data.train: CVAT XML .*gone.xml not found; set data.classes"):
        _xml_cfg(tmp_path, xml.parent / "gone.xml")
