"""predict.py --export labelstudio | coco | cvat_mask: the masks predict.py writes, read back by each
tool's own library (label-studio-converter, pycocotools, datumaro: tests only), are the same masks.
The checkpoints' weights are set, not trained (test_evaluate_predict's and test_sigmoid's
brightness detectors), so that
every image has several classes."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import predict
from fcn.config import load_config, to_dict
from fcn.core.checkpoint import save_checkpoint
from fcn.inference.preannotations import FORMATS, brush_rle
from tests.helpers import CLASSES, SIZES, _brightness_detector, _brightness_logit, _overrides, _sample


def _read(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image)


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> list[Path]:
    """Four odd-sized photos, each with a bright box (class 1) and a dark box (class 2) on grey."""
    folder = tmp_path_factory.mktemp("photos") / "photos"
    folder.mkdir()
    rng = np.random.default_rng(0)
    paths = []
    for i, (h, w) in enumerate(SIZES):
        path = folder / f"p{i}.png"
        Image.fromarray(_sample(rng, h, w)[0]).save(path)
        paths.append(path)
    return paths


def _checkpoint(tmp: Path, task: str) -> Path:
    """Return a checkpoint of the brightness detector as a multiclass (background, bright, dark),
    binary (bright) or multilabel (everything, bright, dark: overlapping) model."""
    overrides = _overrides(tmp)
    if task != "multiclass":
        classes = "[bright]" if task == "binary" else "[everything,bright,dark]"
        keep = [o for o in overrides if o.startswith("model.") and not o.startswith("model.num_classes")]
        overrides = [
            *keep,
            f"data.task={task}",
            f"data.classes={classes}",
            "data.train={name: pairs, images: i, masks: m}",
            "data.val={name: pairs, images: i, masks: m}",
            "loss.terms=[{name: bce}]",
        ]
    cfg = load_config(overrides=overrides)
    if task == "binary":
        model = _brightness_logit(cfg)
    else:
        model = _brightness_detector(cfg)
        if task == "multilabel":
            with torch.no_grad():
                model.score_pool3.bias[0] = 1.0  # class 0 everywhere, under the other two
    path = tmp / f"{task}.pt"
    save_checkpoint({"version": 1, "model": model.state_dict(), "iteration": 0, "config": to_dict(cfg)}, path)
    return path


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("ckpt")
    return {task: _checkpoint(tmp, task) for task in ("multiclass", "binary", "multilabel")}


def _predict(checkpoint: Path, images: list[Path], out: Path, *extra: str) -> int:
    argv = ["--checkpoint", str(checkpoint), "--input", str(images[0].parent), "--output", str(out)]
    return predict.main([*argv, "--device", "cpu", "--no-progress", *extra])


def _planes(out: Path, stem: str, task: str) -> dict[str, np.ndarray]:
    """Return {class name: boolean mask} of the classes predict.py wrote for stem (multiclass:
    background left out), read from its mask PNGs."""
    if task == "multiclass":
        mask = _read(out / f"{stem}.png")
        return {name: mask == c for c, name in enumerate(CLASSES) if c and (mask == c).any()}
    if task == "binary":
        return {"bright": _read(out / f"{stem}.png") > 0}
    planes = {name: _read(out / f"{stem}_{name}.png") > 0 for name in ("everything", "bright", "dark")}
    return {name: plane for name, plane in planes.items() if plane.any()}


# Label Studio's "Semantic Segmentation with Masks" template, with the classes as its labels
LABEL_CONFIG = (
    '<View><Image name="image" value="$image" zoom="true"/><BrushLabels name="tag" toName="image">'
    "{}</BrushLabels></View>"
)


def _decoded_by_label_studio(tasks: list[dict], classes: list[str], tmp: Path) -> list[dict[str, np.ndarray]]:
    """Return {label: boolean mask} per task of predict.py's tasks as Label Studio's converter reads
    them once accepted: its JSON export (each prediction's result as an annotation's) through
    label_studio_converter.Converter and brush.decode_from_annotation."""
    from label_studio_converter import Converter
    from label_studio_converter.brush import decode_from_annotation

    exported = [
        {"id": n, "data": t["data"], "annotations": [{"id": n, "result": t["predictions"][0]["result"]}]}
        for n, t in enumerate(tasks)
    ]
    path = tmp / "label_studio_export.json"
    path.write_text(json.dumps(exported))
    config = LABEL_CONFIG.format("".join(f'<Label value="{c}"/>' for c in classes))
    converter = Converter(config=config, project_dir=str(tmp), download_resources=False)
    decoded = []
    for item in converter.iter_from_json_file(str(path)):
        layers = decode_from_annotation("tag", item["output"].get("tag", []))  # {"tag-<label>-<n>": H x W}
        assert all(key.endswith("-0") for key in layers)  # one result per class
        decoded.append({key[len("tag-") : -len("-0")]: plane > 0 for key, plane in layers.items()})
    return decoded


def test_predict_export_formats_are_the_modules():
    assert predict.EXPORT_FORMATS == FORMATS


@pytest.mark.parametrize("shape", [(1, 1), (3, 5), (41, 37), (300, 400)])
def test_brush_rle_is_decoded_by_label_studio_converter_to_the_mask(shape):
    from label_studio_converter.brush import decode_rle

    rng = np.random.default_rng(shape[0])
    box = np.zeros(shape, bool)
    box[shape[0] // 3 :, : (shape[1] + 1) // 2] = True  # at 300 x 400: runs longer than one block's 65536
    for mask in (rng.random(shape) > 0.5, box, np.zeros(shape, bool), np.ones(shape, bool)):
        decoded = decode_rle(brush_rle(mask)).reshape(*shape, 4)
        assert np.array_equal(decoded, np.repeat(mask[..., None], 4, axis=2) * np.uint8(255))


@pytest.mark.parametrize("task", ["multiclass", "binary", "multilabel"])
def test_labelstudio_export_decoded_by_label_studio_converter_equals_predict_masks(
    task, checkpoints, images, tmp_path, capsys
):
    out, tasks = tmp_path / "out", tmp_path / "tasks.json"
    base = images[0].parent.parent
    extra = ["--export-image-base", str(base), "--export-model-version", "v1"]
    assert _predict(checkpoints[task], images, out, "--export", "labelstudio", str(tasks), *extra) == 0
    assert f"wrote {tasks} (labelstudio, 4 image(s))" in capsys.readouterr().out
    written = json.loads(tasks.read_text())
    classes = {
        "multiclass": CLASSES[1:],
        "binary": ["bright"],
        "multilabel": ["everything", "bright", "dark"],
    }
    decoded_all = _decoded_by_label_studio(written, classes[task], tmp_path)
    assert len(decoded_all) == len(written) == 4
    assert [t["data"]["image"] for t in written] == [
        f"/data/local-files/?d=photos/p{i}.png" for i in range(4)
    ]
    for i, entry in enumerate(written):
        (prediction,) = entry["predictions"]
        assert prediction["model_version"] == "v1"
        result = prediction["result"]
        assert {(r["from_name"], r["to_name"], r["type"]) for r in result} == {
            ("tag", "image", "brushlabels")
        }
        assert all((r["original_height"], r["original_width"]) == SIZES[i] for r in result)
        expected = _planes(out, f"p{i}", task)
        assert len(expected) >= (1 if task == "binary" else 2)  # the boxes are found: a test that can fail
        decoded = decoded_all[i]
        assert sorted(decoded) == sorted(expected)
        for name, plane in expected.items():
            assert np.array_equal(decoded[name], plane), (i, name)


@pytest.mark.parametrize("task", ["multiclass", "binary", "multilabel"])
def test_coco_export_loads_with_pycocotools_and_decodes_to_predict_masks(task, checkpoints, images, tmp_path):
    from pycocotools.coco import COCO

    out, path = tmp_path / "out", tmp_path / "pred.json"
    base = images[0].parent
    assert (
        _predict(
            checkpoints[task], images, out, "--export", "coco", str(path), "--export-image-base", str(base)
        )
        == 0
    )
    coco = COCO(str(path))
    names = {
        "multiclass": ["bright", "dark"],
        "binary": ["bright"],
        "multilabel": ["everything", "bright", "dark"],
    }
    assert [c["name"] for c in coco.loadCats(coco.getCatIds())] == names[task]
    assert [img["file_name"] for img in coco.loadImgs(coco.getImgIds())] == [f"p{i}.png" for i in range(4)]
    for i, image in enumerate(coco.loadImgs(coco.getImgIds())):
        assert (image["height"], image["width"]) == SIZES[i]
        anns = coco.loadAnns(coco.getAnnIds(imgIds=image["id"]))
        assert all(a["iscrowd"] == 0 and isinstance(a["segmentation"]["counts"], str) for a in anns)
        decoded = {coco.cats[a["category_id"]]["name"]: coco.annToMask(a) > 0 for a in anns}
        expected = _planes(out, f"p{i}", task)
        assert sorted(decoded) == sorted(expected) and len(expected) >= 1
        for name, plane in expected.items():
            assert np.array_equal(decoded[name], plane), (i, name)
        assert [a["area"] for a in anns] == [
            float(expected[coco.cats[a["category_id"]]["name"]].sum()) for a in anns
        ]


@pytest.mark.parametrize(
    "task, target", [("multiclass", "cvat"), ("multiclass", "cvat.zip"), ("binary", "cvat")]
)
def test_cvat_mask_export_imports_with_datumaro_as_cvat_does_and_equals_predict_masks(
    task, target, checkpoints, images, tmp_path
):
    import datumaro as dm

    out, path = tmp_path / "out", tmp_path / target
    assert _predict(checkpoints[task], images, out, "--export", "cvat_mask", str(path)) == 0
    folder = path
    if target.endswith(".zip"):
        folder = tmp_path / "unzipped"
        with zipfile.ZipFile(path) as zf:
            zf.extractall(folder)
        assert not (tmp_path / "cvat").exists()  # the folder the zip was made from is gone
    assert (folder / "ImageSets/Segmentation/default.txt").read_text() == "".join(f"p{i}\n" for i in range(4))
    dataset = dm.Dataset.import_from(str(folder), "voc_segmentation")  # CVAT's Segmentation mask 1.1 importer
    labels = [c.name for c in dataset.categories()[dm.AnnotationType.label]]
    assert labels == (CLASSES if task == "multiclass" else ["background", "bright"])
    items = sorted(dataset, key=lambda item: item.id)
    assert [item.id for item in items] == [f"p{i}" for i in range(4)]
    for i, item in enumerate(items):
        class_masks = [a for a in item.annotations if a.type == dm.AnnotationType.mask and a.attributes == {}]
        decoded = {
            labels[a.label]: a.image.astype(bool) for a in class_masks if labels[a.label] != "background"
        }
        expected = _planes(out, f"p{i}", task)
        assert len(expected) >= 1 and sorted(decoded) == sorted(expected)
        for name, plane in expected.items():
            assert np.array_equal(decoded[name], plane), (i, name)


def test_cvat_mask_export_of_a_multilabel_model_is_refused_in_one_line(checkpoints, images, tmp_path, capsys):
    code = _predict(
        checkpoints["multilabel"], images, tmp_path / "out", "--export", "cvat_mask", str(tmp_path / "c")
    )
    err = capsys.readouterr().err
    assert code == 2 and "--export cvat_mask: a multilabel model's classes overlap" in err
    assert "Traceback" not in err and not (tmp_path / "out").exists()


def test_export_without_the_mask_output_or_of_an_image_outside_the_base_is_one_line(
    checkpoints, images, tmp_path, capsys
):
    ckpt, tasks = checkpoints["multiclass"], str(tmp_path / "t.json")
    assert (
        _predict(ckpt, images, tmp_path / "a", "--outputs", "overlay", "--export", "labelstudio", tasks) == 2
    )
    assert "keep mask in --outputs" in capsys.readouterr().err
    other = tmp_path / "elsewhere"
    other.mkdir()
    code = _predict(
        ckpt, images, tmp_path / "b", "--export", "coco", tasks, "--export-image-base", str(other)
    )
    err = capsys.readouterr().err
    assert code == 2 and f"p0.png: not under --export-image-base {other}" in err
    assert not (tmp_path / "b").exists() and not Path(tasks).exists()


def test_resume_exports_the_skipped_images_from_their_mask_files(checkpoints, images, tmp_path, capsys):
    ckpt, out = checkpoints["multiclass"], tmp_path / "out"
    one, two = tmp_path / "one.json", tmp_path / "two.json"
    base = ["--export-image-base", str(images[0].parent)]
    assert _predict(ckpt, images, out, "--export", "labelstudio", str(one), *base) == 0
    (out / "p2_legend.png").unlink()  # p2 stopped before its last file: segmented again
    capsys.readouterr()
    assert _predict(ckpt, images, out, "--resume", "--export", "labelstudio", str(two), *base) == 0
    printed = capsys.readouterr().out
    assert "wrote 1 image(s)" in printed and "3 skipped" in printed and "(labelstudio, 4 image(s))" in printed
    assert two.read_bytes() == one.read_bytes()
