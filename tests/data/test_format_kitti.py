"""'kitti': an export written by datumaro's own kitti exporter (segmentation task: training/image_2,
training/semantic labelIds), read through Cityscapes' labelId -> trainId table."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from fcn.config import load_config
from fcn.data import build_dataset, class_names
from fcn.data.check import main
from fcn.data.cityscapes import CITYSCAPES_CLASSES, CITYSCAPES_TRAIN_IDS

dm = pytest.importorskip("datumaro")  # tests only (requirements.dev.txt)
ROOT = Path(__file__).resolve().parents[2]


def counts_table(out: str, key: str) -> dict[int, int]:
    """Return {label: pixels} of the check's table under the split's heading (names may hold spaces)."""
    lines = out.splitlines()
    start = next(k for k, line in enumerate(lines) if line.startswith(f"{key} ("))
    table = {}
    for line in lines[start + 2 :]:
        m = re.match(r"\s+(\d+)\s+.+?\s+([\d,]+)\s+[\d.]+%$", line)
        if m is None:
            break
        table[int(m.group(1))] = int(m.group(2).replace(",", ""))
    return table


def label_ids() -> np.ndarray:
    """Return a 6x8 mask of Cityscapes labelIds: unlabeled 0, road 7, car 26, out of roi 3."""
    lab = np.zeros((6, 8), np.int64)
    lab[2:, 3:] = 7
    lab[0, :] = 26
    lab[5, 0] = 3
    return lab


def write_datumaro(root: Path) -> None:
    """Export one 'training' item with datumaro's kitti exporter (its KittiLabelMap: index = labelId)."""
    from datumaro.components.annotation import Mask
    from datumaro.components.media import Image as DImage
    from datumaro.plugins.data_formats.kitti.format import KittiTask, make_kitti_categories

    lab = label_ids()
    image = DImage.from_numpy(np.full((6, 8, 3), 60, np.uint8))
    masks = [Mask(image=lab == k, label=int(k)) for k in np.unique(lab)]
    item = dm.DatasetItem(id="000000_10", subset="training", media=image, annotations=masks)
    dataset = dm.Dataset.from_iterable([item], categories=make_kitti_categories())
    dataset.export(str(root), "kitti", save_media=True, tasks=KittiTask.segmentation)


def config(tmp_path: Path, root: Path) -> Path:
    """Write the config of a KITTI root (no val split of its own: training for both here)."""
    path = tmp_path / "kitti.yml"
    ds = {"name": "kitti", "root": str(root), "split": "training"}
    path.write_text(yaml.safe_dump({"data": {"train": ds, "val": ds}}))
    return path


def test_train_id_table_is_the_cityscapes_config_label_map():
    cfg = yaml.safe_load((ROOT / "predefined_configs" / "cityscapes_fcn8s.yml").read_text())
    trained = {k: v for k, v in cfg["data"]["label_map"].items() if v != 255}
    assert trained == CITYSCAPES_TRAIN_IDS and cfg["data"]["classes"] == list(CITYSCAPES_CLASSES)


def test_datumaro_export_reads_as_train_ids_and_the_check_counts_them(tmp_path, capsys):
    root = tmp_path / "data_semantics"
    write_datumaro(root)
    cfg = load_config([str(config(tmp_path, root))])
    assert cfg.model.num_classes == 19 and class_names(cfg.data) == list(CITYSCAPES_CLASSES)
    expected = np.full((6, 8), 255, np.uint8)
    expected[2:, 3:] = 0  # road
    expected[0, :] = 13  # car
    expected[5, 0] = 255  # out of roi: void
    np.testing.assert_array_equal(build_dataset(cfg.data.train, cfg.data)[0][1], expected)
    assert main(["--config", str(config(tmp_path, root)), "data.num_workers=0"]) == 0
    table = counts_table(capsys.readouterr().out, "data.train")
    counts = np.bincount(expected.ravel(), minlength=256)
    assert {c: n for c, n in table.items() if n} == {c: int(counts[c]) for c in np.flatnonzero(counts)}


def test_an_id_that_is_no_cityscapes_id_is_one_line_naming_the_mask(tmp_path, capsys):
    root = tmp_path / "data_semantics"
    write_datumaro(root)
    Image.fromarray(np.full((6, 8), 40, np.uint8), mode="L").save(
        root / "training" / "semantic" / "000000_10.png"
    )
    assert main(["--config", str(config(tmp_path, root)), "data.num_workers=0"]) == 1
    out = capsys.readouterr().out
    assert f"{root}/training/semantic/000000_10.png: label ids [40] are no Cityscapes labelIds" in out


def test_testing_has_no_labels_and_says_so(tmp_path):
    root = tmp_path / "data_semantics"
    write_datumaro(root)
    cfg = load_config([str(config(tmp_path, root))], ["data.val.split=testing"])
    with pytest.raises(ValueError, match="testing/ has no labels"):
        build_dataset(cfg.data.val, cfg.data)
