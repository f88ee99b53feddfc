"""data.<split>.name: auto (fcn/config/detect.py): each format's export, written as its format test
writes it (the helpers copied small, never imported: datumaro's own exporters where it has them),
is found by its signature files and becomes the concrete format when the config loads; a folder
that matches none is one line listing what was looked for (exit 2)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from fcn.config import ConfigError, load_config, to_yaml
from fcn.config.detect import SIGNATURES, detect
from fcn.data.check import main as check_main

dm = pytest.importorskip("datumaro")  # tests only (requirements.dev.txt): the tools' own exporters
from datumaro.components.annotation import (  # noqa: E402
    AnnotationType,
    LabelCategories,
    Mask,
    MaskCategories,
    Polygon,
)
from datumaro.components.media import Image as DImage  # noqa: E402

H, W = 6, 8


def _mask() -> np.ndarray:
    lab = np.zeros((H, W), np.int64)
    lab[2:, 3:] = 1
    return lab


def _dataset(
    subset: str = "default", labels=("background", "cat"), colours=True, polygon=False
) -> dm.Dataset:
    """One item with a mask of label 1 (and a polygon), datumaro's categories with colours."""
    cats = {AnnotationType.label: LabelCategories.from_iterable(labels)}
    if colours:
        cats[AnnotationType.mask] = MaskCategories({0: (0, 0, 0), 1: (128, 0, 0)})
    anns = [Mask(image=_mask() == 1, label=1)]
    if polygon:
        anns.append(Polygon([1, 1, 5, 1, 5, 4], label=1))
    item = dm.DatasetItem(
        id="a", subset=subset, media=DImage.from_numpy(np.full((H, W, 3), 90, np.uint8)), annotations=anns
    )
    return dm.Dataset.from_iterable([item], categories=cats)


def cvat_mask(root: Path) -> None:  # test_format_cvat.py's _mask_export: CVAT's "Segmentation mask 1.1"
    _dataset().export(str(root), "voc_segmentation", save_media=True)


def voc_folder(root: Path) -> None:  # a VOC-layout folder: the same without CVAT's labelmap.txt
    cvat_mask(root)
    (root / "labelmap.txt").unlink()


def cvat_xml(root: Path) -> None:  # test_format_cvat.py's _xml_export: "CVAT for images 1.1"
    _dataset(polygon=True).export(str(root), "cvat", save_media=True)


def camvid(root: Path) -> None:  # test_format_camvid.py's write_datumaro
    from datumaro.plugins.data_formats.camvid import make_camvid_categories

    item = dm.DatasetItem(
        id="a",
        subset="train",
        media=DImage.from_numpy(np.zeros((H, W, 3), np.uint8)),
        annotations=[Mask(image=_mask() == 1, label=5)],
    )
    dm.Dataset.from_iterable([item], categories=make_camvid_categories()).export(
        str(root), "camvid", save_media=True
    )


def kitti(root: Path) -> None:  # test_format_kitti.py's write_datumaro
    from datumaro.plugins.data_formats.kitti.format import KittiTask, make_kitti_categories

    item = dm.DatasetItem(
        id="000000_10",
        subset="training",
        media=DImage.from_numpy(np.zeros((H, W, 3), np.uint8)),
        annotations=[Mask(image=_mask() == 1, label=7)],
    )
    dm.Dataset.from_iterable([item], categories=make_kitti_categories()).export(
        str(root), "kitti", save_media=True, tasks=KittiTask.segmentation
    )


def cityscapes(root: Path) -> None:  # test_format_cityscapes.py's write_datumaro
    _dataset("train", labels=("road", "car"), colours=False).export(str(root), "cityscapes", save_media=True)


def coco_panoptic(root: Path) -> None:  # test_format_coco_panoptic.py's export fixture
    _dataset(labels=("road", "cat")).export(str(root), "coco_panoptic", save_media=True)


def coco(
    root: Path,
) -> None:  # datumaro's coco_instances: annotations/instances_default.json, images/default/
    _dataset(polygon=True).export(str(root), "coco_instances", save_media=True)


def roboflow(root: Path) -> None:  # test_format_roboflow.py's write_export: per Roboflow's docs
    (root / "train").mkdir(parents=True)
    (root / "train" / "_classes.csv").write_text("Pixel Value, Class\n0, background\n1, cat\n")
    Image.fromarray(np.zeros((H, W, 3), np.uint8)).save(root / "train" / "a.jpg")
    Image.fromarray(_mask().astype(np.uint8), mode="L").save(root / "train" / "a_mask.png")


def yolo(root: Path) -> None:  # test_format_yolo.py's write_yolo: per Ultralytics' docs
    for sub in ("images", "labels"):
        (root / sub / "train").mkdir(parents=True)
    Image.fromarray(np.zeros((H, W, 3), np.uint8)).save(root / "images" / "train" / "a.png")
    (root / "labels" / "train" / "a.txt").write_text("0 0.1 0.1 0.9 0.1 0.5 0.9\n")
    (root / "data.yaml").write_text(
        "path: .\ntrain: images/train\nval: images/train\nnames:\n  0: cat\nnc: 1\n"
    )


def labelme(root: Path) -> None:  # test_format_labelme.py's write_labelme: labelme's own LabelFile
    from labelme import LabelFile

    root.mkdir(parents=True)
    Image.fromarray(np.zeros((H, W, 3), np.uint8)).save(root / "a.png")
    shape = {
        "label": "cat",
        "points": [[1, 1], [6, 1], [4, 5]],
        "shape_type": "polygon",
        "group_id": None,
        "description": "",
        "flags": {},
        "mask": None,
    }
    LabelFile().save(str(root / "a.json"), [shape], "a.png", H, W, None)


def labelstudio(root: Path) -> None:  # test_format_labelstudio.py's write_export: its JSON export
    (root / "images").mkdir(parents=True)
    Image.fromarray(np.zeros((H, W, 3), np.uint8)).save(root / "images" / "a.png")
    result = {
        "type": "polygonlabels",
        "from_name": "label",
        "to_name": "image",
        "original_width": W,
        "original_height": H,
        "value": {"points": [[10, 10], [80, 10], [50, 80]], "polygonlabels": ["cat"]},
    }
    tasks = [
        {
            "id": 1,
            "data": {"image": "/data/upload/1/a.png"},
            "annotations": [{"id": 1, "result": [result], "was_cancelled": False}],
        }
    ]
    (root / "export.json").write_text(json.dumps(tasks))


def pairs(root: Path) -> None:  # images/ and masks/ paired by stem
    for sub in ("images", "masks"):
        (root / sub).mkdir(parents=True)
    Image.fromarray(np.zeros((H, W, 3), np.uint8)).save(root / "images" / "a.png")
    Image.fromarray(_mask().astype(np.uint8), mode="L").save(root / "masks" / "a.png")


WRITERS = {
    "cvat_mask": cvat_mask,
    "folder": voc_folder,
    "roboflow": roboflow,
    "yolo": yolo,
    "camvid": camvid,
    "kitti": kitti,
    "cityscapes": cityscapes,
    "labelme": labelme,
    "coco": coco,
    "coco_panoptic": coco_panoptic,
    "labelstudio": labelstudio,
    "cvat_xml": cvat_xml,
    "pairs": pairs,
}


def test_every_format_that_takes_a_folder_has_a_signature_and_an_export_here():
    assert sorted(name for name, _, _ in SIGNATURES) == sorted(WRITERS)


@pytest.mark.parametrize("name", list(WRITERS))
def test_auto_finds_each_formats_export(tmp_path, name):
    root = tmp_path / name
    WRITERS[name](root)
    found = detect(root, "train")
    assert found is not None and found.name == name, found
    for key, value in found.keys.items():
        if key in ("annotations", "images", "masks"):
            assert Path(value).exists(), (key, value)


@pytest.mark.parametrize(
    "name, chosen",
    [
        (
            "cvat_mask",
            "cvat_mask (labelmap.txt, SegmentationClass/) -> {name: cvat_mask, root: {root}, split: default}",
        ),
        ("yolo", "yolo (data.yaml, labels/) -> {name: yolo, root: {root}, split: train}"),
        (
            "coco",
            "coco (annotations/instances_default.json with images, annotations, categories, "
            "segmentation) -> {name: coco, annotations: {root}/annotations/instances_default.json, images: {root}/images/default}",
        ),
    ],
)
def test_the_config_holds_the_concrete_format_and_says_so_in_one_line(tmp_path, capsys, name, chosen):
    root = tmp_path / name
    WRITERS[name](root)
    ds = {"name": "auto", "root": str(root)}
    config = tmp_path / "auto.yml"
    model = {"backbone": "resnet18", "geometry": "same", "pretrained": False}
    classes = {"classes": ["background", "cat"]} if name == "coco" else {}
    config.write_text(
        yaml.safe_dump({"model": model, "data": {"train": ds, "val": {**ds, "split": "train"}, **classes}})
    )
    cfg = load_config([str(config)])
    assert cfg.data.train.name == cfg.data.val.name == name
    for ds_cfg in (cfg.data.train, cfg.data.val):  # config.yml and checkpoints hold the concrete keys
        assert "name: auto" not in to_yaml(ds_cfg) and f"name: {name}" in to_yaml(ds_cfg)
    out = capsys.readouterr().out
    assert f"auto: data.train: {chosen.replace('{root}', str(root))}\n" in out


def test_an_empty_folder_lists_what_was_looked_for_in_one_line(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError) as exc:
        load_config([], ["data.train.name=auto", f"data.train.root={tmp_path / 'empty'}"])
    message = str(exc.value)
    assert (
        "\n" not in message
        and f"data.train.name=auto: {tmp_path / 'empty'} holds no export it knows" in message
    )
    for name, looked_for, _ in SIGNATURES:
        assert f"{name} ({looked_for})" in message
    assert check_main(["data.train.name=auto", f"data.train.root={tmp_path / 'empty'}"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "looked for cvat_mask (labelmap.txt + SegmentationClass/)" in err
