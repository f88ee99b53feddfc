"""A labelled set round-trips through the labelling tool: Label Studio's JSON export (its brush RLE
written by label_studio_converter) -> train.py -> predict.py --export labelstudio -> decoded by Label
Studio's own converter, equal to predict.py's masks; the run's config names the export's classes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

brush = pytest.importorskip("label_studio_converter.brush")  # tests only: Label Studio's own RLE

H, W = 40, 48
LABELS = ["cat", "dog"]


def _scene(rng: np.random.Generator) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Return (image, {label: boolean mask}) of a scene: a bright square (cat) and a dark one (dog)."""
    image = rng.integers(90, 140, (H, W, 3), dtype=np.uint8)
    masks = {}
    for label, value in zip(LABELS, (250, 10)):
        y, x = rng.integers(0, H - 14), rng.integers(0, W - 14)
        mask = np.zeros((H, W), bool)
        mask[y : y + 12, x : x + 12] = True
        image[mask] = value
        masks[label] = mask
    masks["cat"] &= ~masks["dog"]  # dog drawn last: over cat, as the export's result order says
    return image, masks


def _export(root: Path, n: int = 6) -> tuple[Path, Path]:
    """Write a Label Studio JSON export (Export > JSON) of n scenes and their images; return both paths."""
    rng = np.random.default_rng(7)
    images = root / "images"
    images.mkdir(parents=True)
    tasks = []
    for i in range(n):
        image, masks = _scene(rng)
        Image.fromarray(image).save(images / f"s{i}.png")
        result = [
            {
                "type": "brushlabels",
                "from_name": "tag",
                "to_name": "image",
                "original_width": W,
                "original_height": H,
                "value": {
                    "format": "rle",
                    "rle": [int(v) for v in brush.mask2rle(masks[label].astype(np.uint8) * 255)],
                    "brushlabels": [label],
                },
            }
            for label in LABELS
        ]
        tasks.append(
            {
                "id": i + 1,
                "data": {"image": f"/data/upload/1/0a1b2c3d-s{i}.png"},
                "annotations": [{"id": i + 1, "result": result, "was_cancelled": False}],
            }
        )
    path = root / "export.json"
    path.write_text(json.dumps(tasks))
    return path, images


LABEL_CONFIG = (
    '<View><Image name="image" value="$image"/><BrushLabels name="tag" toName="image">'
    + "".join(f'<Label value="{c}"/>' for c in LABELS)
    + "</BrushLabels></View>"
)


def _decoded(tasks: list[dict], tmp: Path) -> list[dict[str, np.ndarray]]:
    """Return {label: mask} per task, as Label Studio's converter reads the predictions once accepted."""
    from label_studio_converter import Converter
    from label_studio_converter.brush import decode_from_annotation

    accepted = [
        {"id": n, "data": t["data"], "annotations": [{"id": n, "result": t["predictions"][0]["result"]}]}
        for n, t in enumerate(tasks)
    ]
    path = tmp / "accepted.json"
    path.write_text(json.dumps(accepted))
    converter = Converter(config=LABEL_CONFIG, project_dir=str(tmp), download_resources=False)
    out = []
    for item in converter.iter_from_json_file(str(path)):
        layers = decode_from_annotation("tag", item["output"].get("tag", []))
        out.append({key[len("tag-") : -len("-0")]: plane > 0 for key, plane in layers.items()})
    return out


@pytest.mark.slow
def test_a_label_studio_export_trains_and_its_predictions_go_back_to_label_studio(tmp_path, monkeypatch):
    from predict import main as predict_main
    from train import main as train_main

    monkeypatch.chdir(tmp_path)
    annotations, images = _export(tmp_path / "export")
    export = {"name": "labelstudio", "annotations": str(annotations), "images": str(images)}
    config = {
        "model": {"arch": "fcn8s", "backbone": "resnet18", "geometry": "same", "pretrained": False},
        "data": {
            "train": export,
            "val": export,
            "batch_size": 2,
            "val_batch_size": 2,
            "num_workers": 0,
            "transforms": {"crop_size": 32, "scale_min": 1.0, "scale_max": 1.0, "max_shift": 0},
        },
        "optimizer": {"name": "adamw", "lr": 1.0e-3},
        "training": {"iters": 4, "eval_every": 4, "vis_images": 0, "run_dir": "runs/ls"},
        "logging": {"trackers": []},
    }
    (tmp_path / "ls.yml").write_text(yaml.safe_dump(config))
    assert train_main(["--config", "ls.yml"]) == 0
    written = yaml.safe_load((tmp_path / "runs/ls/config.yml").read_text())
    assert written["data"]["classes"] == ["background", "cat", "dog"]  # the export's, kept with the run
    assert written["model"]["num_classes"] == 3

    out, tasks_path = tmp_path / "out", tmp_path / "tasks.json"
    args = ["--checkpoint", "runs/ls/checkpoints/last.pt", "--input", str(images), "--output", str(out)]
    extra = ["--export", "labelstudio", str(tasks_path), "--export-image-base", str(tmp_path)]
    assert predict_main([*args, *extra, "--no-progress"]) == 0
    tasks = json.loads(tasks_path.read_text())
    assert len(tasks) == 6
    for task, decoded in zip(tasks, _decoded(tasks, tmp_path)):
        stem = Path(task["data"]["image"]).stem
        predicted = np.asarray(Image.open(out / f"{stem}.png"))
        expected = {name: predicted == c for c, name in enumerate(["background", *LABELS]) if c}
        expected = {name: plane for name, plane in expected.items() if plane.any()}
        assert sorted(decoded) == sorted(expected), stem
        for name, plane in expected.items():
            assert np.array_equal(decoded[name], plane), (stem, name)
