"""'camvid': an export written by datumaro's own camvid exporter (the library CVAT uses: RGB masks of
label_colors.txt, Void first) and SegNet's 12-index layout, read by build_dataset and the check."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from fcn.config import load_config
from fcn.config.exports import SEGNET_CAMVID_CLASSES
from fcn.data import build_dataset, class_names
from fcn.data.check import main
from tests.helpers import counts_table

dm = pytest.importorskip("datumaro")  # tests only (requirements.dev.txt)


def camvid_label() -> np.ndarray:
    """Return a 6x8 mask in the 32 labels of datumaro's CamvidLabelMap: Void 0, Building 5, Road 18."""
    lab = np.zeros((6, 8), np.int64)
    lab[2:, 3:] = 18
    lab[1, :] = 5
    return lab


def write_datumaro(root: Path) -> None:
    """Export one train item with datumaro's camvid exporter (train/a.jpg, trainannot/a.png RGB, label_colors.txt)."""
    from datumaro.components.annotation import Mask
    from datumaro.components.media import Image as DImage
    from datumaro.plugins.data_formats.camvid import make_camvid_categories

    lab = camvid_label()
    image = DImage.from_numpy(np.full((6, 8, 3), 90, np.uint8))
    masks = [Mask(image=lab == k, label=int(k)) for k in np.unique(lab)]
    item = dm.DatasetItem(id="a", subset="train", media=image, annotations=masks)
    dm.Dataset.from_iterable([item], categories=make_camvid_categories()).export(
        str(root), "camvid", save_media=True
    )


def config(tmp_path: Path, root: Path) -> Path:
    """Write the two-line config of a CamVid root (train and val both its train split here)."""
    path = tmp_path / "camvid.yml"
    ds = {"name": "camvid", "root": str(root), "split": "train"}
    path.write_text(yaml.safe_dump({"data": {"train": ds, "val": ds}}))
    return path


def test_datumaro_export_reads_label_colors_less_void_and_void_is_ignored(tmp_path, capsys):
    root = tmp_path / "camvid"
    write_datumaro(root)
    cfg = load_config([str(config(tmp_path, root))])
    names = class_names(cfg.data)
    assert cfg.model.num_classes == 31 and "Void" not in names
    expected = np.full((6, 8), 255, np.uint8)  # Void
    expected[2:, 3:] = names.index("Road")
    expected[1, :] = names.index("Building")
    np.testing.assert_array_equal(build_dataset(cfg.data.train, cfg.data)[0][1], expected)
    assert main(["--config", str(config(tmp_path, root)), "data.num_workers=0"]) == 0
    out = capsys.readouterr().out
    assert f"camvid: 31 classes from {root}/label_colors.txt: Animal=0," in out
    counts = np.bincount(expected.ravel(), minlength=256)
    table = counts_table(out, "data.train")
    assert {c: n for c, n in table.items() if n} == {c: int(counts[c]) for c in np.flatnonzero(counts)}


def test_segnet_layout_has_its_11_classes_and_11_is_ignored(tmp_path, capsys):
    root = tmp_path / "CamVid"
    for sub in ("train", "trainannot"):
        (root / sub).mkdir(parents=True)
    mask = np.arange(48, dtype=np.uint8).reshape(6, 8) % 12  # every class and Unlabelled (11)
    Image.fromarray(np.zeros((6, 8, 3), np.uint8)).save(root / "train" / "0001TP_006690.png")
    Image.fromarray(mask, mode="L").save(root / "trainannot" / "0001TP_006690.png")
    cfg = load_config([str(config(tmp_path, root))])
    assert cfg.model.num_classes == 11 and class_names(cfg.data) == list(SEGNET_CAMVID_CLASSES)
    np.testing.assert_array_equal(
        build_dataset(cfg.data.train, cfg.data)[0][1], np.where(mask == 11, 255, mask)
    )
    Image.fromarray(np.full((6, 8), 12, np.uint8), mode="L").save(root / "trainannot" / "0001TP_006690.png")
    assert main(["--config", str(config(tmp_path, root)), "data.num_workers=0"]) == 1
    assert (
        f"{root}/trainannot/0001TP_006690.png: mask values [12] are no class of SegNet's CamVid"
        in capsys.readouterr().out
    )


def test_a_colour_label_colors_does_not_name_is_one_line_naming_the_mask(tmp_path, capsys):
    root = tmp_path / "camvid"
    write_datumaro(root)
    Image.fromarray(np.full((6, 8, 3), 7, np.uint8)).save(root / "trainannot" / "a.png")
    assert main(["--config", str(config(tmp_path, root)), "data.num_workers=0"]) == 1
    assert (
        f"{root}/trainannot/a.png: colour (7, 7, 7) at (x=0, y=0) is not in the palette"
        in capsys.readouterr().out
    )
