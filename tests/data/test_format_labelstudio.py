"""'labelstudio' (fcn/data/labelstudio.py): exports whose brush RLE label_studio_converter's own brush.py
encodes (and whose PNG export it writes), our decoder against its decoder, polygons in percent, the
z-order, the chosen annotation, the image names, fcn.data.check's per-class pixels and the bad cases."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from fcn.config import load_config
from fcn.data import build_dataset, class_names
from fcn.data.check import main as check_main
from fcn.data.labelstudio import decode_rle

brush = pytest.importorskip("label_studio_converter.brush")  # tests only: Label Studio's own RLE

H, W = 30, 44  # not square: a swapped height and width would show


def brush_result(mask: np.ndarray, label: str, n: int = 0) -> dict:
    """A brushlabels result as Label Studio's JSON export holds it, its RLE from brush.mask2rle."""
    rle = brush.mask2rle((mask * 255).astype(np.uint8))
    return {
        "id": f"b{n}",
        "type": "brushlabels",
        "from_name": "tag",
        "to_name": "image",
        "original_width": W,
        "original_height": H,
        "value": {"format": "rle", "rle": [int(v) for v in rle], "brushlabels": [label]},
    }


def polygon_result(points_px: list[tuple[float, float]], label: str) -> dict:
    pct = [[x * 100.0 / W, y * 100.0 / H] for x, y in points_px]
    return {
        "type": "polygonlabels",
        "from_name": "poly",
        "to_name": "image",
        "original_width": W,
        "original_height": H,
        "value": {"points": pct, "polygonlabels": [label]},
    }


def box(y0, y1, x0, x1) -> np.ndarray:
    m = np.zeros((H, W), dtype=bool)
    m[y0:y1, x0:x1] = True
    return m


TRIANGLE = [(2.0, 2.0), (30.0, 4.0), (10.0, 25.0)]


def triangle() -> np.ndarray:
    canvas = Image.new("L", (W, H))
    ImageDraw.Draw(canvas).polygon(TRIANGLE, outline=1, fill=1)
    return np.asarray(canvas, dtype=bool)


def write_export(root: Path, tasks: list[dict], images=("a1b2c3d4-photo.png", "two.png")) -> Path:
    (root / "images").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for name in images:  # stored without the upload prefix, as a user copies them out
        plain = name.split("-", 1)[1] if name.startswith("a1b2c3d4-") else name
        Image.fromarray(rng.integers(0, 256, (H, W, 3), dtype=np.uint8)).save(root / "images" / plain)
    path = root / "export.json"
    path.write_text(json.dumps(tasks))
    return path


def task(tid: int, image: str, annotations: list[dict]) -> dict:
    return {"id": tid, "data": {"image": image}, "annotations": annotations}


def annotation(aid: int, results: list[dict], updated: str = "2024-05-01T10:00:00Z", cancelled=False) -> dict:
    return {
        "id": aid,
        "completed_by": 1,
        "was_cancelled": cancelled,
        "updated_at": updated,
        "result": results,
    }


def standard_tasks() -> tuple[list[dict], list[np.ndarray]]:
    """Two tasks: a polygon under a brush (z-order), and a task whose latest annotation was cancelled."""
    first = [polygon_result(TRIANGLE, "cat"), brush_result(box(10, 20, 5, 40), "dog", 1)]
    tasks = [
        task(1, "/data/upload/1/a1b2c3d4-photo.png", [annotation(11, first)]),
        task(
            2,
            "s3://bucket/imgs/two.png?X-Amz=1",
            [
                annotation(21, [brush_result(box(0, 5, 0, 5), "cat")], "2024-05-01T10:00:00Z"),
                annotation(
                    22, [brush_result(box(0, 30, 0, 44), "dog")], "2024-06-01T10:00:00Z", cancelled=True
                ),
                annotation(23, [brush_result(box(3, 9, 2, 12), "cat")], "2024-05-02T10:00:00Z"),  # the latest
            ],
        ),
        task(3, "/data/upload/1/unlabelled.png", []),
    ]
    m1 = np.zeros((H, W), dtype=np.uint8)
    m1[triangle()] = 1
    m1[box(10, 20, 5, 40)] = 2  # the brush, later in result, over the polygon
    m2 = np.zeros((H, W), dtype=np.uint8)
    m2[box(3, 9, 2, 12)] = 1
    return tasks, [m1, m2]


def _config(tmp_path: Path, path: Path, extra: str = "") -> Path:
    config = tmp_path / "ls.yml"
    ds = f"{{name: labelstudio, annotations: {path}, images: {tmp_path / 'images'}{extra}}}"
    config.write_text(
        "model: {num_classes: 3, backbone: resnet18, geometry: same, pretrained: false, arch: fcn32s}\n"
        f"data: {{train: {ds}, val: {ds}, num_workers: 0}}\n"
    )
    return config


def train_counts(report: str) -> dict[str, int]:
    section = report.split("data.train (", 1)[1].split("\n\n", 1)[0]
    rows = [line.split() for line in section.splitlines()[2:] if line.strip()[:1].isdigit()]
    return {r[1]: int(r[2].replace(",", "")) for r in rows if r[1] != "ignored"}


def test_decode_rle_equals_label_studio_converters_decoder():
    rng = np.random.default_rng(1)
    mask = (rng.random((H, W)) > 0.7) | box(0, 30, 10, 30)  # single pixels, short and long runs
    rgba = np.repeat((mask * 255).astype(np.uint8).ravel(), 4)
    rgba[::4] = rng.integers(0, 256, H * W)  # literal words too
    rle = brush.encode_rle(rgba)
    assert np.array_equal(decode_rle(rle), brush.decode_rle(rle))
    assert np.array_equal(decode_rle(rle), rgba)
    long = np.zeros(300 * 300 * 4, dtype=np.uint8)  # a run longer than 2**16: several 16-bit runs
    assert np.array_equal(decode_rle(brush.encode_rle(long)), long)


def test_masks_follow_z_order_latest_annotation_and_upload_names(tmp_path, capsys):
    tasks, want = standard_tasks()
    path = write_export(tmp_path, tasks)
    (tmp_path / "images" / "unlabelled.png").write_bytes((tmp_path / "images" / "two.png").read_bytes())
    cfg = load_config([str(_config(tmp_path, path))])
    assert class_names(cfg.data) == ["background", "cat", "dog"]
    assert f"labelstudio: 3 classes from the labels used in {path} (sorted): background=0, cat=1, dog=2" in (
        capsys.readouterr().out
    )
    ds = build_dataset(cfg.data.train, cfg.data)
    assert ds.ids == ["photo", "two"]  # task 3 has no annotation: left out
    for (_, mask), expected in zip(ds, want):
        assert np.array_equal(mask, expected)


def test_check_counts_the_source_masks_pixels(tmp_path, capsys):
    tasks, want = standard_tasks()
    path = write_export(tmp_path, tasks[:2])
    assert check_main(["--config", str(_config(tmp_path, path))]) == 0
    out = capsys.readouterr().out
    counts = np.bincount(np.concatenate([m.ravel() for m in want]), minlength=3)
    assert train_counts(out) == dict(zip(["background", "cat", "dog"], map(int, counts)))


def test_brush_to_png_export_reads_as_the_rle(tmp_path):
    tasks, want = standard_tasks()
    path = write_export(tmp_path, tasks[:2])
    pngs = tmp_path / "pngs"
    pngs.mkdir()
    for t in tasks[:2]:  # the converter's own PNG writer, fed each annotation as Label Studio does
        for a in t["annotations"]:
            results = [
                {**r, "rle": r["value"]["rle"], "brushlabels": r["value"]["brushlabels"]}
                for r in a["result"]
                if r["type"] == "brushlabels"
            ]
            item = {
                "id": t["id"],
                "annotation_id": a["id"],
                "completed_by": a["completed_by"],
                "output": {"tag": results},
            }
            brush.convert_task(item, str(pngs), out_format="png")
    assert (pngs / "task-1-annotation-11-by-1-tag-dog-0.png").is_file()
    cfg = load_config([str(_config(tmp_path, path, f", masks: {pngs}"))])
    ds = build_dataset(cfg.data.train, cfg.data)
    for (_, mask), expected in zip(ds, want):
        assert np.array_equal(mask, expected)
    (pngs / "task-2-annotation-23-by-1-tag-cat-0.png").unlink()
    with pytest.raises(
        FileNotFoundError, match=r"task 2 result 0: no task-2-annotation-23-by-\*-tag-cat-0.png"
    ):
        build_dataset(cfg.data.train, cfg.data)


def test_bad_tasks_are_one_line_naming_the_file(tmp_path, capsys):
    outside = polygon_result([(2, 2), (60, 4), (10, 25)], "cat")  # x = 60 > W
    short = brush_result(box(0, 5, 0, 5), "cat")
    short["original_width"] = W + 1  # the RLE's size disagrees with the size it claims
    tasks = [
        task(1, "/data/upload/1/a1b2c3d4-photo.png", [annotation(1, [outside])]),
        task(2, "two.png", [annotation(2, [brush_result(box(0, 5, 0, 5), "zebra")])]),
        task(3, "two.png", [annotation(3, [short])]),
        task(4, "gone.png", [annotation(4, [])]),
        task(5, "two.png", [annotation(5, [brush_result(box(0, 5, 0, 5), "cat")])]),
    ]
    path = write_export(tmp_path, tasks)
    config = _config(tmp_path, path)
    assert check_main(["--config", str(config), "data.classes=[background, cat]", "model.num_classes=2"]) == 1
    out = capsys.readouterr().out
    pct = 60 * 100 / W
    assert (
        f"{path}: task 1 result 0: polygon point ({pct:g}%, {4 * 100 / H:g}%) outside its {W}x{H} image"
        in out
    )
    assert f"{path}: task 2 result 0: label 'zebra' is not among the classes (background, cat)" in out
    assert (
        f"{path}: task 3 result 0: rle holds {H * W * 4} values but original_width x original_height x 4"
        in out
    )
    assert f"{tmp_path / 'images' / 'gone.png'}: no such image; task 4 of export.json" in out
    assert "1 good pairs of 1" in out
    path.write_text('[{"id": 1, "data": {}}')
    assert check_main(["--config", str(config)]) == 1
    assert f"{path}: not valid JSON at line 1 column 23" in capsys.readouterr().out
