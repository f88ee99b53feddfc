"""python -m fcn.data.check on generated folder datasets: every fault named, counts, weights, exit codes."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from fcn.config import load_config
from fcn.data import FolderSegmentation, SBDSegmentation, VOCAugSegmentation, VOCSegmentation
from fcn.data.check import class_weights, inspect_pair, main, weights_line
from fcn.data.dataset import PairDataset
from fcn.data.sbd import list_voc_aug
from fcn.data.voc import list_voc
from tests.helpers import VOC_TRAIN, counts_table, load_bench, make_sbd_tree, make_voc_tree

CLASSES = ["background", "road", "car", "tree"]  # 'tree' is never drawn: its weight must be 0.0
ROOT = Path(__file__).resolve().parents[2]
SIZES = {"a": (30, 20), "b": (24, 18), "c": (40, 22), "d": (30, 20)}  # id: (W, H)


def label_map(sample_id: str, size: tuple[int, int]) -> np.ndarray:
    """Return the id's uint8 labels: background, a road band and a car box of id-dependent extent, void rim."""
    w, h = size
    k = ord(sample_id[-1]) % 7
    label = np.zeros((h, w), np.uint8)
    label[h // 2 :, :] = 1
    label[2 : 5 + k, 3 : 9 + k] = 2
    label[0, :] = 255
    return label


def write_pair(root: Path, sample_id: str, size: tuple[int, int], label: np.ndarray | None = None) -> None:
    """Write JPEGImages/<id>.jpg (noise, so that a cut file misses real data) and its grayscale mask."""
    rng = np.random.default_rng(ord(sample_id[0]))
    w, h = size
    Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(
        root / "JPEGImages" / f"{sample_id}.jpg"
    )
    label = label_map(sample_id, size) if label is None else label
    Image.fromarray(label, mode="L").save(root / "SegmentationClass" / f"{sample_id}.png")


def make_dataset(root: Path, train: dict, val: dict) -> None:
    """Write a VOC-layout folder dataset: train.txt and val.txt listing the given {id: (W, H)} pairs."""
    for sub in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for split, pairs in (("train", train), ("val", val)):
        for sample_id, size in pairs.items():
            write_pair(root, sample_id, size)
        (root / "ImageSets" / "Segmentation" / f"{split}.txt").write_text("\n".join(pairs) + "\n")


def write_config(path: Path, root: Path) -> Path:
    """Write the config a user checks their dataset with (as README's my_data.yml); return its path."""
    path.write_text(
        yaml.safe_dump(
            {
                "model": {"num_classes": len(CLASSES)},
                "data": {
                    "train": {"name": "folder", "root": str(root), "split": "train"},
                    "val": {"name": "folder", "root": str(root), "split": "val"},
                    "classes": CLASSES,
                },
            }
        )
    )
    return path


def run(capsys, config: Path, *overrides: str) -> tuple[int, str, str]:
    """Return (exit code, stdout, stderr) of the checker with the config and key=value overrides."""
    code = main(["--config", str(config), *overrides])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def faulty(tmp_path) -> tuple[Path, Path]:
    """Return (dataset root, config) of a dataset holding every fault the checker looks for at once."""
    root = tmp_path / "my_data"
    make_dataset(root, {"a": (30, 20), "trunc": (30, 20), "text": (30, 20), "small": (30, 20)}, {})
    write_pair(root, "label9", (30, 20), np.full((20, 30), 9, np.uint8))
    write_pair(root, "nomask", (30, 20))
    (root / "SegmentationClass" / "nomask.png").unlink()
    write_pair(root, "noimage", (30, 20))
    (root / "JPEGImages" / "noimage.jpg").unlink()
    jpg = root / "JPEGImages" / "trunc.jpg"
    jpg.write_bytes(jpg.read_bytes()[: jpg.stat().st_size // 2])
    (root / "JPEGImages" / "text.jpg").write_text("this is not a JPEG\n")
    Image.fromarray(np.zeros((8, 10), np.uint8), mode="L").save(root / "SegmentationClass" / "small.png")
    ids = ["a", "trunc", "text", "small", "label9", "a", "noimage", "nomask"]
    (root / "ImageSets" / "Segmentation" / "train.txt").write_text("\n".join(ids) + "\n")
    (root / "ImageSets" / "Segmentation" / "val.txt").write_text("a\n", encoding="utf-16")
    return root, write_config(tmp_path / "my_data.yml", root)


def test_every_planted_fault_is_named_with_file_and_reason_and_exits_1(faulty, capsys):
    root, config = faulty
    code, out, _ = run(capsys, config, "data.num_workers=0")
    assert code == 1
    bad = [line for line in out.splitlines() if line.startswith(str(root))]
    expected = [
        r"ImageSets/Segmentation/train\.txt: id 'a' is listed 2 times",
        r"JPEGImages/noimage\.jpg: no such image .*'noimage' is listed in train\.txt",
        r"SegmentationClass/nomask\.png: no such mask; id 'nomask' is listed in train\.txt",
        r"JPEGImages/trunc\.jpg: cannot decode the image .*truncated",
        r"JPEGImages/text\.jpg: not an image file",
        r"SegmentationClass/small\.png: mask is 10x8 \(WxH\) but its image is 30x20",
        r"SegmentationClass/label9\.png: labels \[9\] are outside 0\.\.3 and 255 \(data\.ignore_index\)",
        r"ImageSets/Segmentation/val\.txt: .*(UTF|utf)-8",
    ]
    assert len(bad) == len(expected), "\n".join(bad)
    for pattern, line in zip(expected, bad):
        assert re.search(f"^{re.escape(str(root))}/{pattern}", line), line
    assert out.splitlines()[-1] == (
        f"data.train folder/train in {root}: 5 pairs, 7 bad; data.val folder/val in {root}: 0 pairs, 1 bad"
    )


def test_report_is_the_same_with_0_and_2_workers(faulty, capsys):
    _, config = faulty
    serial = run(capsys, config, "data.num_workers=0")
    parallel = run(capsys, config, "data.num_workers=2")
    assert serial[:2] == parallel[:2] and serial[0] == 1


def test_clean_dataset_exits_0_with_counts_size_range_and_weights_from_train(tmp_path, capsys):
    root = tmp_path / "my_data"
    train, val = {k: SIZES[k] for k in "abc"}, {"d": SIZES["d"]}
    make_dataset(root, train, val)
    code, out, err = run(capsys, write_config(tmp_path / "my_data.yml", root), "data.num_workers=0")
    assert code == 0, out + err
    for key, pairs in (("data.train", train), ("data.val", val)):
        expected = sum(np.bincount(label_map(i, s).ravel(), minlength=256) for i, s in pairs.items())
        assert counts_table(out, key) == {c: int(expected[c]) for c in [0, 1, 2, 3, 255]}
    assert "image size: W 24..40, H 18..22" in out
    counts = sum(np.bincount(label_map(i, s).ravel(), minlength=256) for i, s in train.items())[:4]
    present = np.count_nonzero(counts)
    line = next(line for line in out.splitlines() if line.startswith("loss:"))
    weights = yaml.safe_load(line)["loss"]["class_weights"]
    assert weights[3] == 0.0 and present == 3
    np.testing.assert_allclose(weights[:3], counts.sum() / (present * counts[:3]), rtol=1e-3)
    assert out.splitlines()[-1].endswith(": 1 pairs, 0 bad") and ": 3 pairs, 0 bad;" in out


def test_weights_line_pastes_into_a_config(tmp_path):
    weights = class_weights(np.array([3_000_000, 90, 9, 0, 1]))  # 7.5e+05 for the last class
    path = tmp_path / "w.yml"
    names = "[a, b, c, d, e]"
    path.write_text(f"model: {{num_classes: 5}}\ndata: {{classes: {names}}}\n{weights_line(weights)}\n")
    loaded = list(load_config([str(path)]).loss.class_weights)
    np.testing.assert_allclose(loaded, weights, rtol=1e-3)
    assert loaded[3] == 0.0 and loaded[4] > 1e5


def test_class_weights_have_pixel_weighted_mean_1_and_0_for_absent_classes():
    counts = np.array([600, 300, 0, 100])
    weights = np.array(class_weights(counts))
    assert weights[2] == 0.0
    assert (weights * counts).sum() / counts.sum() == pytest.approx(1.0)
    # each present class carries the same total weight
    np.testing.assert_allclose((weights * counts)[[0, 1, 3]], counts.sum() / 3)


@pytest.mark.parametrize(
    "args",
    [
        ["model.num_classes=3"],  # data.classes has 4 names
        ["data.train.name=folders"],
        ["--bogus"],
        ["not_an_override"],
    ],
)
def test_config_or_command_line_error_exits_2_with_one_error_line(faulty, capsys, args):
    _, config = faulty
    code, out, err = run(capsys, config, *args)
    assert code == 2 and out == ""
    assert len(err.splitlines()) == 1 and err.startswith("error: "), err


def test_missing_dataset_directory_exits_2_naming_split_and_directory(tmp_path):
    config = write_config(tmp_path / "my_data.yml", tmp_path / "nowhere")
    command = [sys.executable, "-m", "fcn.data.check", "--config", str(config)]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and done.stdout == ""
    assert re.fullmatch(
        r"error: data\.train: folder dataset: directory .*nowhere not found;.*\n", done.stderr
    )


def test_worker_error_of_an_unexpected_kind_comes_back_as_a_problem(tmp_path):
    class Broken(PairDataset):
        def load_raw_mask(self, path):
            raise KeyError("boom")

    root = tmp_path / "d"
    make_dataset(root, {"a": (30, 20)}, {})
    pair = (root / "JPEGImages" / "a.jpg", root / "SegmentationClass" / "a.png")
    result = inspect_pair(pair, Broken([], [], [], num_classes=4))
    assert result.size is None and [str(p) for p in result.problems] == [
        f"{pair[1]}: unexpected KeyError: 'boom'"
    ]


# --- the listings the dataset constructors share with the checker -------------------------------


def test_listing_names_every_missing_file_but_the_constructor_still_raises_one_line(tmp_path):
    base = make_voc_tree(tmp_path)
    (base / "JPEGImages" / f"{VOC_TRAIN[0]}.jpg").unlink()
    (base / "SegmentationClass" / f"{VOC_TRAIN[2]}.png").unlink()
    listing = list_voc(tmp_path, "train")
    assert listing.ids == [VOC_TRAIN[1]]
    assert [p.path.name for p in listing.problems] == [f"{VOC_TRAIN[0]}.jpg", f"{VOC_TRAIN[2]}.png"]
    with pytest.raises(FileNotFoundError) as info:
        VOCSegmentation(tmp_path, "train")
    assert "\n" not in str(info.value) and f"{VOC_TRAIN[0]}.jpg" in str(info.value)


def test_id_listed_twice_is_a_problem_of_the_listing_but_still_trains_twice(tmp_path):
    base = make_voc_tree(tmp_path)
    split = base / "ImageSets" / "Segmentation" / "train.txt"
    split.write_text("\n".join(VOC_TRAIN + VOC_TRAIN[:1]) + "\n")
    assert [str(p) for p in list_voc(tmp_path, "train").problems] == [
        f"{split}: id '{VOC_TRAIN[0]}' is listed 2 times"
    ]
    assert VOCSegmentation(tmp_path, "train").ids == VOC_TRAIN + VOC_TRAIN[:1]


def test_split_file_not_utf8_is_one_line_error_naming_it(tmp_path):
    base = make_voc_tree(tmp_path)
    split = base / "ImageSets" / "Segmentation" / "val.txt"
    split.write_text("2007_000033\n", encoding="utf-16")
    with pytest.raises(ValueError, match=r"val\.txt") as info:
        VOCSegmentation(tmp_path, "val")
    assert "\n" not in str(info.value)


def test_seg11valid_missing_is_a_problem_with_the_download_hint(tmp_path):
    make_voc_tree(tmp_path, seg11valid=False)
    listing = list_voc(tmp_path, "seg11valid")
    assert listing.ids == [] and isinstance(listing.error, FileNotFoundError)
    assert re.fullmatch(r".*seg11valid\.txt: .*--what seg11valid", str(listing.problems[0]))


def test_voc_aug_listing_keeps_the_problems_of_all_four_split_files(tmp_path):
    make_voc_tree(tmp_path)
    sbd = make_sbd_tree(tmp_path)
    (sbd / "val.txt").unlink()
    listing = list_voc_aug(tmp_path)
    assert [p.path for p in listing.problems] == [sbd / "val.txt"]
    assert len(listing.ids) == 5  # VOC train and SBD train still listed
    with pytest.raises(FileNotFoundError, match=r"val\.txt"):
        VOCAugSegmentation(tmp_path)
    assert len(SBDSegmentation(tmp_path, "train")) == 4


def test_folder_constructor_names_a_missing_mask_in_one_line(tmp_path):
    root = tmp_path / "d"
    make_dataset(root, {"a": (30, 20), "b": (24, 18)}, {})
    (root / "SegmentationClass" / "b.png").unlink()
    with pytest.raises(
        FileNotFoundError, match=r"^1 of 2 ids listed in .*train\.txt have no mask .*b\.png[^\n]*$"
    ):
        FolderSegmentation(root, "train")


def test_missing_mask_directory_is_one_error_not_one_problem_per_id(tmp_path):
    base = make_voc_tree(tmp_path)
    (base / "SegmentationClass").rename(base / "moved")
    with pytest.raises(FileNotFoundError, match=r"VOC 2012: directory .*SegmentationClass not found"):
        list_voc(tmp_path, "train")


# --- bench ----------------------------------------------------------------------------------------


def test_bench_times_the_checker_against_decode_only(tmp_path, capsys):
    bench = load_bench("data_check")
    report = bench.main(["--pairs", "5", "--rounds", "1", "--out", str(tmp_path / "r.json")])
    rows = {r["variant"]: r for r in report["results"]}
    assert list(rows) == ["decode only", "checker, 0 workers", "checker, 1 workers", "checker, 2 workers"]
    assert rows["decode only"]["vs_decode_only"] == 1.0 and all(r["pairs_per_s"] > 0 for r in rows.values())
    assert "| checker, 2 workers" in capsys.readouterr().out and (tmp_path / "r.json").is_file()
