"""'cityscapes' for an export without city folders: datumaro's own 'cityscapes' exporter (the library
CVAT exports with) writes leftImg8bit/<split>/<id>_leftImg8bit.png, gtFine/<split>/<id>_gtFine_
labelIds.png and label_colors.txt; read with the file's classes (no data.label_map), masks equal to
the source masks, fcn.data.check's per-class pixels, and a value the file does not name one line."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from fcn.config import ConfigError, load_config
from fcn.data import build_dataset, class_names
from fcn.data.check import main

dm = pytest.importorskip("datumaro")  # tests only (requirements.dev.txt): datumaro's own exporter

LABELS = ["road", "car", "person"]  # the source's labels: no background among them


def source_mask(seed: int) -> np.ndarray:
    """Return a 6x8 mask of source label indices, -1 where no mask covers a pixel."""
    lab = np.full((6, 8), -1, np.int64)
    lab[3:, :] = 0
    lab[1:4, 2 + seed : 5 + seed] = 1
    lab[0, 6:] = 2
    return lab


def write_datumaro(root: Path, colours: bool = True, split: str = "train") -> dict[str, np.ndarray]:
    """Export two items with datumaro's cityscapes exporter; return each id's source mask."""
    from datumaro.components.annotation import AnnotationType, LabelCategories, Mask, MaskCategories
    from datumaro.components.media import Image as DImage

    items, sources = [], {}
    for i, stem in enumerate(("frame_b", "frame_a")):
        lab = source_mask(i)
        masks = [Mask(image=lab == k, label=int(k)) for k in np.unique(lab) if k >= 0]
        image = DImage.from_numpy(np.full((6, 8, 3), 40 * i, np.uint8))
        items.append(dm.DatasetItem(id=stem, subset=split, media=image, annotations=masks))
        sources[stem] = lab
    categories = {AnnotationType.label: LabelCategories.from_iterable(LABELS)}
    if colours:
        categories[AnnotationType.mask] = MaskCategories(
            {0: (128, 64, 128), 1: (0, 0, 142), 2: (220, 20, 60)}
        )
    dm.Dataset.from_iterable(items, categories=categories).export(str(root), "cityscapes", save_media=True)
    return sources


def config(tmp_path: Path, root: Path, split: str = "train") -> Path:
    """Write the config of a Cityscapes-like root (train and val both its one split here)."""
    path = tmp_path / "cityscapes.yml"
    ds = {"name": "cityscapes", "root": str(root), "split": split}
    model = {"backbone": "resnet18", "geometry": "same", "pretrained": False}
    path.write_text(yaml.safe_dump({"model": model, "data": {"train": ds, "val": ds, "num_workers": 0}}))
    return path


def test_datumaro_export_without_cities_reads_label_colors_with_background_first(tmp_path, capsys):
    root = tmp_path / "export"
    sources = write_datumaro(root)
    assert (root / "leftImg8bit" / "train" / "frame_a_leftImg8bit.png").is_file()  # no city folder
    assert "background" not in (root / "label_colors.txt").read_text()  # the exporter leaves it out
    cfg = load_config([str(config(tmp_path, root))])  # no data.label_map: the file names the ids
    assert class_names(cfg.data) == ["background", *LABELS] and cfg.model.num_classes == 4
    assert (
        f"cityscapes: 4 classes from {root}/label_colors.txt: background=0, road=1" in capsys.readouterr().out
    )
    ds = build_dataset(cfg.data.train, cfg.data)
    assert ds.ids == ["frame_a", "frame_b"]
    for (_, mask), stem in zip(ds, ds.ids):
        np.testing.assert_array_equal(mask, sources[stem] + 1)  # uncovered -> background 0


def test_labels_without_colours_and_the_check_counts_the_source_pixels(tmp_path, capsys):
    root = tmp_path / "export"
    sources = write_datumaro(root, colours=False, split="val")
    assert main(["--config", str(config(tmp_path, root, "val"))]) == 0
    out = capsys.readouterr().out
    counts = np.bincount(np.concatenate([m.ravel() + 1 for m in sources.values()]), minlength=4)
    section = out.split("data.train (", 1)[1].split("\n\n", 1)[0]
    rows = [line.split() for line in section.splitlines()[2:] if line.strip()[:1].isdigit()]
    table = {r[1]: int(r[2].replace(",", "")) for r in rows if r[1] != "ignored"}
    assert "2 good pairs of 2" in out
    assert table == dict(zip(["background", *LABELS], counts.tolist()))


def test_a_value_label_colors_does_not_name_is_one_line_naming_the_mask(tmp_path, capsys):
    root = tmp_path / "export"
    write_datumaro(root)
    bad = root / "gtFine" / "train" / "frame_a_gtFine_labelIds.png"
    Image.fromarray(np.full((6, 8), 9, np.uint8), mode="L").save(bad)
    assert main(["--config", str(config(tmp_path, root))]) == 1
    out = capsys.readouterr().out
    assert f"{bad}: " in out and "1 good pairs of 2" in out


def test_without_label_colors_the_official_label_map_is_still_needed(tmp_path):
    root = tmp_path / "export"
    write_datumaro(root)
    (root / "label_colors.txt").unlink()
    with pytest.raises(ConfigError, match="reads raw labelIds: set data.label_map"):
        load_config([str(config(tmp_path, root))])
