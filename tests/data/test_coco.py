"""COCO-format segmentation JSON (fcn/data/coco.py) on data the tests write: masks against PIL's drawing
of the same polygons and against the RLE's source masks, the overlap, crowd and unlisted-category
rules, the mask cache, fcn.data.check's reports and train.py's one error line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

import train
from fcn.config import ConfigError, load_config
from fcn.data import CocoSegmentation, build_dataset
from fcn.data.check import main as check_main
from fcn.data.coco import list_coco
from fcn.data.toy import generate

CLASSES = ["background", "cat", "dog"]
H, W = 48, 64  # not square: a swapped height and width would show


def write_coco(
    root: Path, images: dict[str, tuple[int, int]], annotations: list[dict], categories=None
) -> Path:
    """Write images (name -> (H, W), random pixels) into root/images and their COCO JSON; return its path."""
    rng = np.random.default_rng(0)
    (root / "images").mkdir(parents=True, exist_ok=True)
    entries = []
    for k, (name, (h, w)) in enumerate(images.items(), 1):
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(root / "images" / name)
        entries.append({"id": k, "file_name": name, "height": h, "width": w})
    if categories is None:
        categories = [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}]
    anns = [{"id": n, "iscrowd": 0, **a} for n, a in enumerate(annotations, 1)]
    path = root / "ann.json"
    path.write_text(json.dumps({"images": entries, "annotations": anns, "categories": categories}))
    return path


def uncompressed_rle(mask: np.ndarray) -> dict:
    """COCO's uncompressed RLE written out by hand: column-major runs, starting with a run of zeros."""
    flat = mask.T.ravel().astype(bool).tolist()
    counts, value, run = [], False, 0
    for v in flat:
        if v != value:
            counts.append(run)
            value, run = v, 0
        run += 1
    counts.append(run)
    return {"size": list(mask.shape), "counts": counts}


def compressed_rle(mask: np.ndarray) -> dict:
    from pycocotools import mask as mask_utils

    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": list(rle["size"]), "counts": rle["counts"].decode("ascii")}


def rle(mask: np.ndarray, category: int, **extra) -> dict:
    return {"image_id": 1, "category_id": category, "segmentation": uncompressed_rle(mask), **extra}


def box(y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
    m = np.zeros((H, W), bool)
    m[y0:y1, x0:x1] = True
    return m


def edge_distance(polygons: list, h: int, w: int) -> np.ndarray:
    """Return each pixel's distance (pixel (x, y) at the point (x, y)) to the nearest edge of any polygon."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    best = np.full((h, w), np.inf)
    for pts in polygons:
        p = np.asarray(pts, dtype=np.float64)
        for (x0, y0), (x1, y1) in zip(p, np.roll(p, -1, axis=0)):
            dx, dy = x1 - x0, y1 - y0
            t = np.clip(((xx - x0) * dx + (yy - y0) * dy) / (dx * dx + dy * dy), 0, 1)
            best = np.minimum(best, np.hypot(xx - x0 - t * dx, yy - y0 - t * dy))
    return best


def test_polygon_masks_equal_pil_drawing_of_the_same_polygons(tmp_path):
    # PIL's fill also covers the pixels its outline touches, pycocotools' does not (the polygon is
    # the area): they differ on boundary pixels only, < 1% of these images' pixels.
    h, w = 2 * H, 2 * W
    rng = np.random.default_rng(1)
    images, anns, drawn, polygons = {}, [], [], []
    for k in range(4):
        polygons.append([])
        images[f"{k}.png"] = (h, w)
        label = Image.new("L", (w, h), 0)
        # Two star-shaped polygons per image (non-convex), kept apart: left and right half.
        for half, category in ((0, 1), (1, 2)):
            n = int(rng.integers(5, 12))
            angles = np.sort(rng.uniform(0, 2 * np.pi, n))
            radii = rng.uniform(12, 30, n)
            cx, cy = w / 4 + half * w / 2, h / 2
            pts = [(cx + r * np.cos(a), cy + r * np.sin(a)) for r, a in zip(radii, angles)]
            ImageDraw.Draw(label).polygon(pts, fill=category)
            polygons[-1].append(pts)
            anns.append(
                {"image_id": k + 1, "category_id": category, "segmentation": [[c for p in pts for c in p]]}
            )
        drawn.append(np.asarray(label))
    ds = CocoSegmentation(write_coco(tmp_path, images, anns), tmp_path / "images", CLASSES)
    for k, expected in enumerate(drawn):
        image, mask = ds[k]
        assert image.size == (w, h) and mask.shape == (h, w)
        assert (mask == expected).mean() >= 0.99
        # Interior pixels (more than 2 px from every polygon edge: PIL's outline and a half-pixel
        # centre convention stay within 1.6 px) are exact; most of the area is interior.
        interior = edge_distance(polygons[k], h, w) > 2.0
        assert interior.mean() > 0.8 and (mask[interior] == expected[interior]).all()
        assert set(np.unique(mask)) == set(np.unique(expected))


@pytest.mark.parametrize("encode", [uncompressed_rle, compressed_rle])
def test_rle_equals_its_source_mask_exactly(tmp_path, encode):
    rng = np.random.default_rng(2)
    source = rng.random((H, W)) < 0.4  # many short runs, both values at the borders
    source[0, 0], source[-1, -1] = True, False
    ann = {"image_id": 1, "category_id": 2, "segmentation": encode(source)}
    _, mask = CocoSegmentation(write_coco(tmp_path, {"a.png": (H, W)}, [ann]), tmp_path / "images", CLASSES)[
        0
    ]
    assert (mask == np.where(source, 2, 0)).all()


def test_overlap_ignore_is_torchvisions_rule_and_last_lets_the_later_win(tmp_path):
    cat1, cat2, dog, crowd = box(0, 20, 0, 20), box(10, 30, 10, 30), box(15, 40, 25, 50), box(40, 48, 0, 10)
    anns = [rle(cat1, 1), rle(cat2, 1), rle(dog, 2), rle(crowd, 1, iscrowd=1)]
    path = write_coco(tmp_path, {"a.png": (H, W)}, anns)
    _, ignore = CocoSegmentation(path, tmp_path / "images", CLASSES)[0]
    expected = np.zeros((H, W), np.uint8)
    expected[cat1 | cat2] = 1  # two cats overlapping: still cat
    expected[dog] = 2
    expected[(cat1 | cat2) & dog] = 255  # different classes overlapping: ignored
    expected[crowd] = 255
    assert (ignore == expected).all()
    _, last = CocoSegmentation(path, tmp_path / "images", CLASSES, overlap="last")[0]
    expected[(cat1 | cat2) & dog] = 2  # the dog comes later in the file
    assert (last == expected).all()


def test_image_without_annotations_is_background(tmp_path):
    path = write_coco(tmp_path, {"a.png": (H, W), "b.png": (H, W)}, [rle(box(0, 5, 0, 5), 1)])
    ds = CocoSegmentation(path, tmp_path / "images", CLASSES)
    assert len(ds) == 2 and (ds[1][1] == 0).all() and (ds[0][1] == 1).sum() == 25


@pytest.mark.parametrize("unlisted, value", [("ignore", 255), ("background", 0)])
def test_unlisted_category_is_an_error_naming_it_unless_ignored_or_background(tmp_path, unlisted, value):
    categories = [{"id": 1, "name": "cat"}, {"id": 7, "name": "zebra"}, {"id": 9, "name": "unused"}]
    anns = [rle(box(0, 10, 0, 10), 1), rle(box(20, 30, 20, 30), 7)]
    path = write_coco(tmp_path, {"a.png": (H, W)}, anns, categories)
    with pytest.raises(
        ValueError, match=r"category 'zebra' \(1 annotations\) is not in data.classes"
    ) as info:
        CocoSegmentation(path, tmp_path / "images", CLASSES)
    assert "unused" not in str(info.value)  # a category no annotation uses is not an error
    _, mask = CocoSegmentation(path, tmp_path / "images", CLASSES, unlisted=unlisted)[0]
    assert (mask[20:30, 20:30] == value).all() and (mask[0:10, 0:10] == 1).all()


def test_masks_are_cached_reused_and_invalidated_when_the_json_or_an_option_changes(tmp_path):
    path = write_coco(tmp_path, {"a.png": (H, W)}, [rle(box(0, 10, 0, 10), 1)])
    ds = CocoSegmentation(path, tmp_path / "images", CLASSES)
    cached = ds.masks[0]
    assert not cached.exists()
    first = ds[0][1]
    assert cached.is_file() and cached.parent.parent == tmp_path / ".fcn_coco_cache"
    # A second dataset reads the cached PNG, not the JSON: prove it by planting a different mask there.
    Image.fromarray(np.full((H, W), 2, np.uint8)).save(cached)
    assert (CocoSegmentation(path, tmp_path / "images", CLASSES)[0][1] == 2).all()
    # An option that changes masks, or a changed JSON, uses a new cache.
    other = CocoSegmentation(path, tmp_path / "images", CLASSES, overlap="last")
    assert other.masks[0] != cached and (other[0][1] == first).all()
    doc = json.loads(path.read_text())
    doc["annotations"][0]["category_id"] = 2
    path.write_text(json.dumps(doc))
    changed = CocoSegmentation(path, tmp_path / "images", CLASSES)
    assert changed.masks[0].parent != cached.parent
    assert (changed[0][1] == np.where(first == 1, 2, 0)).all()


def test_size_in_the_json_that_differs_from_the_image_is_one_line_naming_both(tmp_path):
    path = write_coco(tmp_path, {"a.png": (H, W)}, [])
    doc = json.loads(path.read_text())
    doc["images"][0].update(width=H, height=W)
    path.write_text(json.dumps(doc))
    with pytest.raises(ValueError, match=rf"image 'a.png' is {W}x{H} but the JSON says {H}x{W}"):
        CocoSegmentation(path, tmp_path / "images", CLASSES)[0]


def _config(tmp_path: Path, path: Path, *extra: str) -> Path:
    config = tmp_path / "coco.yml"
    ds = f"{{name: coco, annotations: {path}, images: {tmp_path / 'images'}}}"
    config.write_text(
        f"model: {{num_classes: 3, backbone: resnet18, geometry: same, pretrained: false, arch: fcn32s}}\n"
        f"data: {{train: {ds}, val: {ds}, classes: [{', '.join(CLASSES)}], num_workers: 0}}\n"
    )
    return config


def _bad_dataset(tmp_path: Path) -> Path:
    categories = [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}, {"id": 3, "name": "zebra"}]
    anns = [
        {"image_id": 1, "category_id": 1, "segmentation": [[1, 1, 20, 1, 20, 20]]},
        {"image_id": 1, "category_id": 2, "segmentation": [[30, 5, 90, 5, 40, 30]]},  # x=90 > W
        {"image_id": 2, "category_id": 3, "segmentation": [[1, 1, 9, 1, 9, 9]]},
    ]
    path = write_coco(tmp_path, {"a.png": (H, W), "b.png": (H, W), "gone.png": (H, W)}, anns, categories)
    (tmp_path / "images" / "gone.png").unlink()
    return path


def test_check_names_polygon_outside_unknown_category_and_missing_image(tmp_path, capsys):
    path = _bad_dataset(tmp_path)
    assert check_main(["--config", str(_config(tmp_path, path))]) == 1
    out = capsys.readouterr().out
    assert (
        f"{path}: annotation 2 (image 'a.png') has a polygon vertex (90, 5) outside its {W}x{H} image" in out
    )
    assert f"{path}: category 'zebra' (1 annotations) is not in data.classes" in out
    assert f"{tmp_path / 'images' / 'gone.png'}: no such image; listed in ann.json" in out
    assert "data.train (coco" in out and "2 good pairs of 2" in out  # the readable images are still counted


def test_check_and_train_name_malformed_json_with_line_and_column(tmp_path, capsys):
    path = write_coco(tmp_path, {"a.png": (H, W)}, [])
    path.write_text('{"images": [\n  {"id": 1,, "file_name": "a.png"}\n]}\n')
    config = _config(tmp_path, path)
    assert check_main(["--config", str(config)]) == 1
    assert f"{path}: not valid JSON at line 2 column 12: Expecting property name" in capsys.readouterr().out
    run_dir = tmp_path / "run"
    assert train.main(["--config", str(config), "training.device=cpu", f"training.run_dir={run_dir}"]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert errors == [
        f"error: {path}: not valid JSON at line 2 column 12: Expecting property name enclosed in double quotes"
    ]
    assert not run_dir.exists()  # nothing written


def test_build_dataset_reads_coco_from_the_config_and_validation_names_missing_keys(tmp_path):
    path = write_coco(tmp_path, {"a.png": (H, W)}, [rle(box(0, 10, 0, 10), 2)])
    cfg = load_config([str(_config(tmp_path, path))], ["data.coco_overlap=last"])
    ds = build_dataset(cfg.data.train, cfg.data)
    assert isinstance(ds, CocoSegmentation) and ds.overlap == "last" and (ds[0][1] == 2).sum() == 100
    with pytest.raises(ConfigError, match=r"data.val.name='coco' needs data.val.annotations"):
        load_config([str(_config(tmp_path, path))], ["data.val.annotations=''"])
    with pytest.raises(
        ConfigError, match=r"data.coco_unlisted='drop' is not one of error, ignore, background"
    ):
        load_config([str(_config(tmp_path, path))], ["data.coco_unlisted=drop"])


def test_toy_export_has_polygons_and_both_rles_and_masks_equal_the_voc_layouts(tmp_path):
    generate(tmp_path / "voc", n_train=12, n_val=1, size=40, workers=1)
    generate(tmp_path / "coco", n_train=12, n_val=1, size=40, workers=1, fmt="coco")
    path = tmp_path / "coco" / "annotations" / "train.json"
    kinds = {
        "polygon" if isinstance(a["segmentation"], list) else type(a["segmentation"]["counts"]).__name__
        for a in json.loads(path.read_text())["annotations"]
    }
    assert kinds == {"polygon", "list", "str"}  # polygons, uncompressed and compressed RLE
    listing = list_coco(
        path, tmp_path / "coco" / "images", ["background", "circle", "square", "triangle"], "ignore", "last"
    )
    assert listing.error is None and not listing.problems and len(listing.ids) == 12
    ds = CocoSegmentation(
        path,
        tmp_path / "coco" / "images",
        ["background", "circle", "square", "triangle"],
        None,
        "ignore",
        "last",
    )
    equal = total = 0
    for k in range(12):
        image, mask = ds[k]
        voc = np.asarray(Image.open(tmp_path / "voc" / "SegmentationClass" / f"train_{k:05d}.png"))
        assert np.array_equal(
            np.asarray(image), np.asarray(Image.open(tmp_path / "voc" / "JPEGImages" / f"train_{k:05d}.jpg"))
        )
        equal, total = equal + (mask == voc).sum(), total + voc.size
    assert equal / total >= 0.99


def test_class_counts_for_loss_weights_are_cached_beside_the_masks(tmp_path):
    from fcn.data.check import split_report_cached

    path = write_coco(tmp_path, {"a.png": (H, W)}, [rle(box(0, 10, 0, 10), 1), rle(box(20, 30, 0, 5), 2)])
    cfg = load_config([str(_config(tmp_path, path))])
    report, cache, cached = split_report_cached(cfg.data.train, cfg.data)
    assert not cached and cache.parent.parent == tmp_path / ".fcn_coco_cache"
    assert report.counts[:3].tolist() == [H * W - 150, 100, 50]
    assert split_report_cached(cfg.data.train, cfg.data)[2] is True
