"""The table of dataset formats: one set of names in the schema, the config's key rules and the data
readers, and no branch on a dataset name left outside fcn/data/formats/ and fcn/config/formats.py."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from fcn.config import DATASETS, Config, config_from_dict
from fcn.config.formats import FORMAT_KEYS
from fcn.data import build_dataset, class_names
from fcn.data.formats import FORMATS, IMPORT_PATH, format_of

ROOT = Path(__file__).resolve().parents[2]

# Modules that name a layout for another reason than reading it: toy.py writes its toy dataset in
# one of three layouts (voc, pairs, coco), chosen by its own --format.
WRITERS = {
    "fcn/data/toy.py",
    "fcn/inference/preannotations.py",
}  # predict.py --export writes the tools' formats


def test_schema_names_config_rules_and_readers_are_one_list():
    assert tuple(FORMATS) == tuple(FORMAT_KEYS) == DATASETS


def test_every_format_carries_its_own_key_rules_and_name():
    for name, fmt in FORMATS.items():
        assert fmt.name == name
        assert fmt.keys is FORMAT_KEYS[name], name
        assert fmt.about and "\n" not in fmt.about, name
    assert IMPORT_PATH.files is False and all(fmt.files for fmt in FORMATS.values())


def test_an_import_path_finds_its_format_and_an_unknown_name_is_refused_with_the_choices():
    assert format_of("my_pkg.mod:MyDataset") is IMPORT_PATH
    with pytest.raises(
        ValueError, match="dataset name 'vocc' is not one of voc, sbd, .*siftflow.*, package.module:Class"
    ):
        format_of("vocc")


def test_class_names_come_from_the_format_that_has_its_own():
    data = OmegaConf.structured(Config).data  # unvalidated: only the names matter here
    assert len(class_names(data)) == 21
    data.train.name = data.val.name = "nyud"
    assert len(class_names(data)) == 40 == FORMAT_KEYS["nyud"].own_classes


def test_build_dataset_opens_the_tables_reader(tmp_path):
    cfg = config_from_dict({"data": {"val": {"name": "voc", "root": str(tmp_path), "split": "val"}}})
    with pytest.raises(FileNotFoundError, match="VOC"):
        build_dataset(cfg.data.val, cfg.data)


def _dataset_name_branches(path: Path, root: Path = ROOT) -> list[str]:
    """Return the lines of `path` that compare something with a dataset name literal."""
    names = "|".join(re.escape(n) for n in DATASETS)
    literal = rf"['\"](?:{names})['\"]"
    pattern = re.compile(
        rf"(?:==|!=|\bin\b)\s*\(?\s*{literal}"  # x == "coco", name in ("folder", ...
        rf"|{literal}\s*(?:==|!=|\bin\b)"  # "coco" in (d.train.name, ...)
        rf"|\bname\s*(?:not\s+)?in\s*\(\s*{literal}"
    )
    text = path.read_text(encoding="utf-8").splitlines()
    return [
        f"{path.relative_to(root)}:{i}: {line.strip()}"
        for i, line in enumerate(text, 1)
        if pattern.search(line)
    ]


def test_no_branch_on_a_dataset_name_outside_the_table():
    allowed = ("fcn/data/formats/", "fcn/config/formats.py")
    found = []
    for path in sorted((ROOT / "fcn").rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        if rel.startswith(allowed) or rel in WRITERS:
            continue
        found += _dataset_name_branches(path)
    assert not found, "branches on dataset names outside fcn/data/formats/:\n" + "\n".join(found)


def test_the_branch_finder_finds_the_branches_the_table_replaced(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text(
        'if ds.name == "coco":\n    pass\nif ds_cfg.name in ("pascal_context", "nyud"):\n    pass\n'
        'coco = "coco" in (d.train.name, d.val.name)\nif o.name == "sgd":\n    pass\n',
        encoding="utf-8",
    )
    assert len(_dataset_name_branches(probe, tmp_path)) == 3
