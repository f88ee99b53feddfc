"""'coco_panoptic': a COCO panoptic export written by datumaro (CVAT's format library), read as semantic masks."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from fcn.config import ConfigError, load_config
from fcn.data import build_dataset, class_names
from fcn.data.check import main as check_main
from fcn.data.scan import check_dataset

dm = pytest.importorskip("datumaro")
from datumaro.components.media import Image as DmImage  # noqa: E402

LABELS = ["sky", "cat", "dog"]
H, W = 6, 8


def source_masks() -> dict[str, list[tuple[np.ndarray, int, bool]]]:
    """Return each item's segments: (0/1 mask, label, iscrowd); some pixels are left unlabelled."""
    rng = np.random.default_rng(0)
    items = {}
    for name in ("a1", "b2"):
        owner = rng.integers(0, 5, size=(H, W))  # 0..2 a class, 3 crowd dog, 4 unlabelled
        segs = [(owner == k, k, False) for k in range(3)] + [(owner == 3, 2, True)]
        items[name] = [(m, label, crowd) for m, label, crowd in segs if m.any()]
    return items


def expected_mask(segments) -> np.ndarray:
    out = np.full((H, W), 255, np.uint8)
    for m, label, crowd in segments:
        out[m] = 255 if crowd else label
    return out


@pytest.fixture(scope="module")
def export(tmp_path_factory) -> Path:
    """Return the folder datumaro's coco_panoptic exporter wrote (annotations/, images/)."""
    out = tmp_path_factory.mktemp("panoptic")
    items = []
    for name, segments in source_masks().items():
        anns = [
            dm.Mask(image=m, label=label, id=k + 1, attributes={"is_crowd": crowd})
            for k, (m, label, crowd) in enumerate(segments)
        ]
        media = DmImage.from_numpy(np.full((H, W, 3), 90, np.uint8))
        items.append(dm.DatasetItem(id=name, subset="default", media=media, annotations=anns))
    dm.Dataset.from_iterable(items, categories=LABELS).export(str(out), "coco_panoptic", save_media=True)
    return out


def keys(root: Path, *extra: str) -> list[str]:
    json_file = root / "annotations" / "panoptic_default.json"
    return [
        *(
            f"data.{s}.{k}"
            for s in ("train", "val")
            for k in (
                "name=coco_panoptic",
                f"annotations={json_file}",
                f"images={root / 'images' / 'default'}",
            )
        ),
        "data.num_workers=0",
        *extra,
    ]


def test_classes_come_from_the_json_and_each_mask_reads_exactly(export, capsys):
    cfg = load_config([], keys(export))
    assert cfg.model.num_classes == 3 and class_names(cfg.data) == LABELS
    dataset = build_dataset(cfg.data.train, cfg.data)
    assert (
        "coco_panoptic: 3 classes from panoptic_default.json categories: sky=0, cat=1, dog=2"
        in capsys.readouterr().out
    )
    assert dataset.ids == ["a1", "b2"]
    for k, segments in enumerate(source_masks().values()):
        np.testing.assert_array_equal(dataset[k][1], expected_mask(segments))


def test_the_check_counts_the_source_masks_pixels(export, capsys):
    cfg = load_config([], keys(export))
    train = check_dataset(cfg)[0]
    truth = np.zeros(256, np.int64)
    for segments in source_masks().values():
        truth += np.bincount(expected_mask(segments).ravel(), minlength=256)
    np.testing.assert_array_equal(train.counts[:3], truth[:3])
    assert train.counts[255] == truth[255] and not train.problems
    assert check_main(keys(export)) == 0


def test_data_classes_map_categories_by_name(export):
    cfg = load_config([], keys(export, "data.classes=[background,dog,cat,sky]"))
    dataset = build_dataset(cfg.data.train, cfg.data)
    segments = next(iter(source_masks().values()))
    want = expected_mask(segments)
    remap = np.array([3, 2, 1] + [255] * 253, np.uint8)
    np.testing.assert_array_equal(dataset[0][1], remap[want])
    cfg = load_config([], keys(export, "data.classes=[sky,cat]"))
    with pytest.raises(
        ValueError, match=r"panoptic_default.json: category 'dog' is not in data.classes \(sky, cat\)"
    ):
        build_dataset(cfg.data.train, cfg.data)


def test_the_png_folder_may_be_named_and_missing_files_are_one_line_each(export, tmp_path):
    root = Path(shutil.copytree(export, tmp_path / "e"))
    moved = root / "pngs"
    (root / "annotations" / "panoptic_default").rename(moved)
    cfg = load_config([], keys(root, f"data.train.masks={moved}", f"data.val.masks={moved}"))
    assert len(build_dataset(cfg.data.train, cfg.data)) == 2
    (moved / "b2.png").unlink()
    with pytest.raises(
        FileNotFoundError, match=r"^.*pngs/b2.png: no such panoptic PNG; panoptic_default.json names it$"
    ):
        build_dataset(cfg.data.train, cfg.data)
    (root / "images" / "default" / "a1.jpg").unlink()
    assert check_main(keys(root, f"data.train.masks={moved}", f"data.val.masks={moved}")) == 1
    cfg = load_config([], keys(root))
    with pytest.raises(FileNotFoundError, match="COCO panoptic PNGs: directory .*panoptic_default not found"):
        build_dataset(cfg.data.train, cfg.data)


def test_a_label_map_is_a_config_error(export):
    with pytest.raises(ConfigError, match="do not apply to 'coco_panoptic'"):
        load_config([], keys(export, "data.label_map={1: 0}"))
