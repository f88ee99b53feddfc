"""evaluate.py and predict.py end to end, on a tiny generated dataset of odd-sized images and a
checkpoint whose weights are set, not trained, so that what it predicts is known."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import evaluate
import predict
from fcn.config import load_config
from fcn.core.checkpoint import CheckpointError, save_checkpoint
from fcn.core.metrics import ConfusionMatrix
from fcn.inference.loading import load_model
from tests.helpers import CLASSES, PALETTE, SIZES, _known_labels, _read_png, _sample, load_bench


def test_evaluate_metrics_equal_fcn_metrics_on_its_saved_native_size_predictions(setup, tmp_path, capsys):
    root, ids, ckpt = setup
    out, preds = tmp_path / "val.json", tmp_path / "preds"
    code = evaluate.main(
        [
            "--checkpoint",
            str(ckpt),
            "--no-progress",
            "--no-ema",
            "--device",
            "cpu",
            "--output",
            str(out),
            "--save-predictions",
            str(preds),
        ]
    )
    assert code == 0
    report = json.loads(out.read_text())
    assert report["num_images"] == len(ids) and report["weights"] == "model"
    assert sorted(report["per_class"]) == sorted(CLASSES)
    printed = capsys.readouterr().out
    assert "mean IU" in printed and "bright" in printed

    model, cfg = load_model(ckpt, "cpu", use_ema=False)
    from fcn.data.transforms import preprocess

    matrix = ConfusionMatrix(len(CLASSES))
    known_pixels = np.zeros(len(CLASSES), dtype=int)
    for name, (h, w) in zip(ids, SIZES):
        pred = _read_png(preds / f"{name}.png")
        gt = _read_png(root / "SegmentationClass" / f"{name}.png")
        assert pred.shape == gt.shape == (h, w)  # native resolution, never resized
        with Image.open(root / "JPEGImages" / f"{name}.png") as image, torch.inference_mode():
            rgb = image.convert("RGB")
            direct = model(preprocess(rgb, "torchvision")[None]).argmax(1)[0]  # evaluate.py's computation
        assert np.array_equal(pred, direct.numpy())
        known = _known_labels(np.asarray(rgb))
        assert np.array_equal(pred[known != 255], known[known != 255])  # what the weights were set to do
        known_pixels += np.bincount(known[known != 255], minlength=len(CLASSES))
        matrix.update(torch.from_numpy(pred).long(), torch.from_numpy(gt).long())
    assert (known_pixels > 100).all(), known_pixels  # every class was checked, on more than an edge
    direct_metrics = matrix.compute()
    for key in ("pixel_acc", "mean_acc", "mean_iou", "fwavacc"):
        assert report[key] == pytest.approx(direct_metrics[key], abs=1e-9)
    assert report["confusion"] == matrix.mat.tolist()
    assert set(np.unique(np.concatenate([_read_png(p).ravel() for p in preds.iterdir()]))) == {0, 1, 2}


def test_evaluate_takes_an_unnamed_checkpoint_ema_weights_by_default_and_tta_flags(setup, tmp_path):
    _, _, ckpt = setup
    out = tmp_path / "val.json"
    args = [
        str(ckpt),
        "--no-progress",
        "--output",
        str(out),
        "--flip",
        "--scales",
        "0.75",
        "1.0",
    ]
    assert evaluate.main(args) == 0
    report = json.loads(out.read_text())
    assert report["weights"] == "ema"
    assert report["eval"]["flip"] is True and report["eval"]["scales"] == [0.75, 1.0]


def test_evaluate_with_padded_batches_and_flip_matches_one_image_at_a_time(setup, tmp_path):
    _, ids, ckpt = setup
    for batch in (1, 3):
        args = [
            "--checkpoint",
            str(ckpt),
            "--no-progress",
            "--device",
            "cpu",
            "--flip",
            "--save-predictions",
            str(tmp_path / str(batch)),
        ]
        assert evaluate.main([*args, f"data.val_batch_size={batch}"]) == 0
    assert [_read_png(tmp_path / "3" / f"{name}.png").shape for name in ids] == SIZES
    # Bitwise: the sizes differ, so with flip a padded batch is predicted image by image at its own
    # size (fcn.inference.evaluation.evaluate_model), the same computation as a batch of one.
    for name in ids:
        assert np.array_equal(
            _read_png(tmp_path / "3" / f"{name}.png"), _read_png(tmp_path / "1" / f"{name}.png")
        )


@pytest.mark.skipif(not torch.backends.nnpack.is_available(), reason="no NNPACK in this build")
def test_evaluate_fast_path_winograd_scores_what_fp32_scores(setup, tmp_path, capsys):
    root, ids, ckpt = setup
    reports = {}
    for path in ("none", "winograd"):
        out = tmp_path / f"{path}.json"
        args = [
            "--checkpoint",
            str(ckpt),
            "--no-progress",
            "--no-ema",
            "--device",
            "cpu",
            "--output",
            str(out),
        ]
        assert evaluate.main([*args, "--save-predictions", str(tmp_path / path), "--fast-path", path]) == 0
        reports[path] = json.loads(out.read_text())
    assert (
        "eval.fast_path=winograd: 13 convolutions use NNPACK's Winograd transform on large maps"
        in capsys.readouterr().out
    )
    assert reports["winograd"]["eval"]["fast_path"] == "winograd"
    for name in ids:
        with Image.open(root / "JPEGImages" / f"{name}.png") as image:
            known = _known_labels(np.asarray(image.convert("RGB")))
        pred = _read_png(tmp_path / "winograd" / f"{name}.png")
        assert np.array_equal(pred[known != 255], known[known != 255])
    # Elsewhere the logits equal fp32's up to rounding (~1e-6 relative): only pixels whose two best
    # logits are that close, on box edges, may differ.
    same = sum(
        int(
            (_read_png(tmp_path / "none" / f"{n}.png") == _read_png(tmp_path / "winograd" / f"{n}.png")).sum()
        )
        for n in ids
    )
    assert same / sum(h * w for h, w in SIZES) > 0.999
    assert reports["winograd"]["mean_iou"] == pytest.approx(reports["none"]["mean_iou"], abs=0.01)


def test_evaluate_fast_path_int8_calibrates_on_the_split_and_says_so(setup, tmp_path, capsys):
    _, _, ckpt = setup
    out = tmp_path / "val.json"
    args = ["--checkpoint", str(ckpt), "--no-progress", "--device", "cpu", "--fast-path", "int8"]
    assert evaluate.main([*args, "--output", str(out), "eval.calibration_images=3"]) == 0
    printed = capsys.readouterr().out
    assert (
        "eval.fast_path=int8: backbone quantized to int8" in printed and "calibrated on 3 images" in printed
    )
    report = json.loads(out.read_text())
    assert report["eval"]["fast_path"] == "int8" and 0.0 <= report["mean_iou"] <= 1.0


def test_evaluate_fast_path_with_amp_is_one_error_line(setup, capsys):
    _, _, ckpt = setup
    assert (
        evaluate.main(["--checkpoint", str(ckpt), "--no-progress", "--fast-path", "int8", "--amp", "bf16"])
        == 2
    )
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "eval.fast_path=int8" in err and len(err.splitlines()) == 1


def test_load_model_picks_ema_or_raw_weights(setup):
    _, _, ckpt = setup
    raw, _ = load_model(ckpt, "cpu", use_ema=False)
    ema, cfg = load_model(ckpt, "cpu")
    assert cfg.eval.use_ema and not raw.training and not ema.training
    raw_state, ema_state = raw.state_dict(), ema.state_dict()
    assert raw_state["score_pool3.weight"].abs().sum() > 0  # so that half of the weights differs from them
    for key, value in raw_state.items():
        assert torch.equal(ema_state[key], value * 0.5 if value.dtype.is_floating_point else value), key


@pytest.mark.parametrize(
    "args, expected",
    [
        (["--checkpoint", "/nonexistent/best.pt"], "best.pt"),
        (["training.nope=1"], "training.nope"),
        (["--config", "/nonexistent/extra.yml"], "extra.yml"),
        (["eval.scales=[]"], "eval.scales"),
    ],
)
def test_evaluate_reports_one_error_line_without_traceback(setup, capsys, args, expected):
    _, _, ckpt = setup
    if args[0] != "--checkpoint":
        args = ["--checkpoint", str(ckpt), *args]
    assert evaluate.main([*args, "--no-progress"]) == 2  # bad input, found before any work
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and expected in err
    assert "Traceback" not in err and len(err.splitlines()) == 1


def test_corrupt_or_mismatched_checkpoint_is_a_checkpoint_error(setup, tmp_path):
    _, _, ckpt = setup
    bad = tmp_path / "corrupt.pt"
    bad.write_bytes(b"\x00" * 100)
    with pytest.raises(CheckpointError, match="corrupt.pt"):
        load_model(bad, "cpu")
    state = torch.load(ckpt, weights_only=True)
    state["config"]["model"]["arch"] = "fcn32s"
    mismatched = tmp_path / "mismatched.pt"
    save_checkpoint(state, mismatched)
    with pytest.raises(CheckpointError, match="mismatched.pt: weights do not fit model.arch=fcn32s"):
        load_model(mismatched, "cpu")


def _write_mixed_inputs(folder: Path) -> dict[str, tuple[int, int]]:
    """Write images of several sizes and modes; return {stem: (W, H)}."""
    rng = np.random.default_rng(1)
    folder.mkdir()
    sizes = {}
    for stem, mode, (h, w), ext in [
        ("rgb", "RGB", (37, 53), "jpg"),
        ("gray", "L", (20, 31), "png"),
        ("rgba", "RGBA", (45, 29), "png"),
        ("cmyk", "CMYK", (33, 33), "jpg"),
        ("palette", "P", (27, 40), "png"),
    ]:
        Image.fromarray(_sample(rng, h, w)[0]).convert(mode).save(folder / f"{stem}.{ext}")
        sizes[stem] = (w, h)
    sixteen = (rng.integers(0, 65536, (26, 35))).astype("<u2")
    Image.frombytes("I;16", (35, 26), sixteen.tobytes()).save(folder / "deep.png")
    sizes["deep"] = (35, 26)
    (folder / "broken.jpg").write_bytes(b"this is not a jpeg")
    return sizes


def test_predict_writes_all_outputs_for_mixed_inputs_and_names_the_broken_one(setup, tmp_path, capsys):
    _, _, ckpt = setup
    sizes = _write_mixed_inputs(tmp_path / "in")
    with Image.open(tmp_path / "in" / "deep.png") as image:
        assert image.mode in ("I;16", "I")  # PIL may open a 16-bit PNG as 'I'
    out = tmp_path / "out"
    code = predict.main(
        ["--checkpoint", str(ckpt), "--input", str(tmp_path / "in"), "--output", str(out), "--no-progress"]
    )
    err = capsys.readouterr().err
    assert code == 1
    assert "broken.jpg" in err and "error: " in err and "Traceback" not in err
    colours = {tuple(c) for c in PALETTE}
    for stem, size in sizes.items():
        with Image.open(out / f"{stem}.png") as index:
            assert index.mode == "P" and index.size == size
            assert set(np.unique(np.asarray(index))) <= {0, 1, 2}
        for suffix in ("_color", "_overlay"):
            with Image.open(out / f"{stem}{suffix}.png") as image:
                assert image.size == size and image.mode == "RGB"
        assert {tuple(c) for c in _read_png(out / f"{stem}_color.png").reshape(-1, 3)} <= colours
        assert (out / f"{stem}_legend.png").is_file()
    assert sorted(p.name for p in out.iterdir() if not p.name.endswith(".png")) == []
    assert len(list(out.iterdir())) == 4 * len(sizes)


def test_predict_fast_path_int8_calibrates_on_the_readable_inputs(setup, tmp_path, capsys):
    _, _, ckpt = setup
    sizes = _write_mixed_inputs(tmp_path / "in")
    out = tmp_path / "out"
    args = ["--checkpoint", str(ckpt), "--input", str(tmp_path / "in"), "--output", str(out), "--no-progress"]
    args += ["--device", "cpu"]  # a CPU fast path
    assert predict.main([*args, "--fast-path", "int8", "eval.calibration_images=100"]) == 1  # broken.jpg
    captured = capsys.readouterr()
    assert f"calibrated on {len(sizes)} images" in captured.out  # every readable input, not broken.jpg
    assert "broken.jpg" in captured.err
    for stem, size in sizes.items():
        with Image.open(out / f"{stem}.png") as index:
            assert index.size == size and set(np.unique(np.asarray(index))) <= {0, 1, 2}


def test_predict_names_a_missing_input_and_still_does_the_others(setup, tmp_path, capsys):
    _, _, ckpt = setup
    image = tmp_path / "one.png"
    Image.fromarray(_sample(np.random.default_rng(2), 30, 40)[0]).save(image)
    out = tmp_path / "out"
    args = [
        "--checkpoint",
        str(ckpt),
        "--input",
        str(tmp_path / "missing.jpg"),
        str(image),
        "--output",
        str(out),
    ]
    assert predict.main([*args, "--no-progress", "--flip"]) == 1
    assert "missing.jpg" in capsys.readouterr().err
    assert (out / "one_overlay.png").is_file()
    assert (
        predict.main(
            ["--checkpoint", str(ckpt), "--input", str(image), "--output", str(out), "--no-progress"]
        )
        == 0
    )


def test_bench_fast_paths_scores_every_path_on_the_checkpoint(setup, tmp_path, capsys):
    _, ids, ckpt = setup
    fast_paths = load_bench("fast_paths")
    result = fast_paths.main(["--checkpoint", str(ckpt), "--json", str(tmp_path / "f.json")])
    rows = {r["path"]: r for r in result["rows"]}
    assert list(rows) == ["none", "auto", "winograd", "int8", "bf16+cl"] and result["images"] == len(ids)
    assert rows["none"]["agreement"] == 1.0 and rows["none"]["speedup"] == 1.0
    from fcn.core.runtime import native_bf16
    from fcn.inference.fastpath import resolve_fast_path

    chosen = resolve_fast_path(load_config(overrides=["eval.fast_path=auto"]), torch.device("cpu"), log=False)
    assert rows["auto"]["runs"] == fast_paths.described(
        chosen
    )  # an engine, winograd or bf16 (docs/deployment.md)
    if not native_bf16(torch.device("cpu")):
        assert rows["auto"]["agreement"] > 0.999  # an exact path: fp32's results up to rounding
    assert rows["bf16+cl"]["runs"] == "bf16 + channels-last" and 0.0 < rows["bf16+cl"]["agreement"] <= 1.0
    assert rows["winograd"]["agreement"] > 0.999  # fp32's results up to rounding
    assert 0.0 < rows["int8"]["agreement"] <= 1.0 and rows["int8"]["logit_rel_err"] > 0.0
    assert "| int8" in capsys.readouterr().out


def test_evaluate_and_predict_slide_with_flags_predict_the_known_labels(setup, tmp_path):
    # Every window is an image of its own to the brightness detector: where a pixel's label is known
    # (_known_labels), every window covering it puts that class ahead, and so does their mean.
    root, ids, ckpt = setup
    out, preds = tmp_path / "val.json", tmp_path / "preds"
    slide = ["--mode", "slide", "--tile", "48", "--stride", "32"]
    common = ["--checkpoint", str(ckpt), "--no-progress", "--no-ema", "--device", "cpu", *slide]
    assert evaluate.main([*common, "--output", str(out), "--save-predictions", str(preds)]) == 0
    report = json.loads(out.read_text())
    assert (report["eval"]["mode"], report["eval"]["tile"], report["eval"]["stride"]) == ("slide", 48, 32)
    images = [root / "JPEGImages" / f"{name}.png" for name in ids]
    assert predict.main([*common, "--input", *map(str, images), "--output", str(tmp_path / "out")]) == 0
    for name, (h, w) in zip(ids, SIZES):
        with Image.open(root / "JPEGImages" / f"{name}.png") as image:
            known = _known_labels(np.asarray(image.convert("RGB")))
        for pred in (_read_png(preds / f"{name}.png"), _read_png(tmp_path / "out" / f"{name}.png")):
            assert pred.shape == (h, w)
            assert np.array_equal(pred[known != 255], known[known != 255])


def test_evaluate_writes_the_confusion_matrix_and_iou_chart_beside_the_json_and_in_plots(
    setup, tmp_path, capsys
):
    _, _, ckpt = setup
    out, plots = tmp_path / "val.json", tmp_path / "plots"
    args = ["--checkpoint", str(ckpt), "--no-progress", "--device", "cpu", "--output", str(out)]
    assert evaluate.main([*args, "--plots", str(plots)]) == 0
    printed = capsys.readouterr().out
    for path in (
        tmp_path / "val_confusion.png",
        tmp_path / "val_iou.png",
        plots / "confusion.png",
        plots / "iou.png",
    ):
        assert path.is_file() and str(path) in printed
        with Image.open(path) as image:
            assert image.mode == "RGB" and min(image.size) > 100
    assert np.array_equal(_read_png(tmp_path / "val_confusion.png"), _read_png(plots / "confusion.png"))


def test_evaluate_per_image_csv_scores_each_saved_prediction_and_draws_the_worst(setup, tmp_path, capsys):
    import csv

    root, ids, ckpt = setup
    table, preds = tmp_path / "images.csv", tmp_path / "preds"
    args = ["--checkpoint", str(ckpt), "--no-progress", "--device", "cpu", "--save-predictions", str(preds)]
    assert evaluate.main([*args, "--per-image", str(table)]) == 0
    with open(table, newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["id", "height", "width", "pixel_acc", "mean_iou", *[f"iou_{c}" for c in CLASSES]]
    assert [(r["id"], int(r["height"]), int(r["width"])) for r in rows] == [
        (i, h, w) for i, (h, w) in zip(ids, SIZES)
    ]
    for r in rows:
        pred = torch.from_numpy(_read_png(preds / f"{r['id']}.png")).long()
        gt = torch.from_numpy(_read_png(root / "SegmentationClass" / f"{r['id']}.png")).long()
        matrix = ConfusionMatrix(len(CLASSES))
        matrix.update(pred[None], gt[None])
        expected = matrix.compute()
        assert float(r["mean_iou"]) == pytest.approx(expected["mean_iou"], abs=1e-6)
        assert float(r["pixel_acc"]) == pytest.approx(expected["pixel_acc"], abs=1e-6)
        for name, iou in zip(CLASSES, expected["iou"]):
            assert (
                r[f"iou_{name}"] == ""
                if np.isnan(iou)
                else float(r[f"iou_{name}"]) == pytest.approx(iou, abs=1e-6)
            )
    worst = sorted(rows, key=lambda r: float(r["mean_iou"]))[0]["id"]
    printed = capsys.readouterr().out
    assert "the 4 worst images by mean IU" in printed and printed.index(worst) < printed.index("worst.png")
    with Image.open(tmp_path / "images_worst.png") as grid:
        assert grid.mode == "RGB" and grid.size[1] > 4 * 128  # four rows, small images enlarged


def test_per_image_csv_leaves_nan_cells_empty(tmp_path):
    from fcn.inference.evaluation import image_scores, worst_images, write_per_image_csv

    pred = torch.tensor([[0, 0], [1, 1]])
    mask = torch.tensor([[0, 0], [1, 255]])
    scores = image_scores(pred, mask, 3)
    assert scores["pixel_acc"] == 1.0 and np.isnan(scores["iou"][2]) and scores["mean_iou"] == 1.0
    rows = [{"id": "a", "index": 0, "height": 2, "width": 2, **scores}]
    empty = image_scores(torch.zeros(2, 2, dtype=torch.long), torch.full((2, 2), 255), 3)
    rows.append({"id": "b", "index": 1, "height": 2, "width": 2, **empty})
    write_per_image_csv(rows, ["x", "y", "z"], tmp_path / "t.csv")
    lines = (tmp_path / "t.csv").read_text().splitlines()
    assert lines[1] == "a,2,2,1.000000,1.000000,1.000000,1.000000,"
    assert lines[2] == "b,2,2,,,,,"
    assert [r["id"] for r in worst_images(rows)] == ["a"]  # nothing labelled: not ranked


def test_predict_pipelined_writes_the_same_bytes_and_errors_as_one_after_another(setup, tmp_path):
    from fcn.api import Segmenter
    from fcn.files import list_images, predict_files

    _, _, ckpt = setup
    _write_mixed_inputs(tmp_path / "in")
    files, _ = list_images([tmp_path / "in"])
    seg = Segmenter.from_checkpoint(ckpt, device="cpu", flip=True)
    results = {}
    for pipeline in (False, True):
        out = tmp_path / f"out_{pipeline}"
        done, errors = predict_files(
            seg, files, out, progress=False, log=lambda line: None, pipeline=pipeline
        )
        written = {p.name: p.read_bytes() for p in sorted(out.iterdir())}
        results[pipeline] = (done, errors, written)
    assert results[True] == results[False]
    done, errors, written = results[True]
    assert done == len(files) - 1 and len(errors) == 1 and "broken.jpg" in errors[0]
    assert len(written) == 4 * done and not [name for name in written if name.startswith(".")]


def test_predict_stops_at_a_file_it_cannot_write_and_keeps_the_ones_before_whole(setup, tmp_path, capsys):
    _, _, ckpt = setup
    inputs = tmp_path / "in"
    inputs.mkdir()
    rng = np.random.default_rng(5)
    for k in range(6):
        Image.fromarray(_sample(rng, 40, 48)[0]).save(inputs / f"im{k}.png")
    out = tmp_path / "out"
    (out / "im3_overlay.png").mkdir(parents=True)  # a directory where a file must go: the write fails
    code = predict.main(
        ["--checkpoint", str(ckpt), "--input", str(inputs), "--output", str(out), "--no-progress"]
    )
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert code != 0 and len(lines) == 1 and str(out / "im3_overlay.png") in lines[0], err
    for k in range(3):  # the images before it: all four files, each a whole PNG
        for suffix in ("", "_color", "_overlay", "_legend"):
            with Image.open(out / f"im{k}{suffix}.png") as image:
                image.load()
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]  # no temporary file left


@pytest.mark.parametrize("outputs", [["mask"], ["overlay", "mask"], ["legend", "color"]])
def test_predict_outputs_writes_only_the_kinds_named_with_the_full_runs_bytes(setup, tmp_path, outputs):
    _, _, ckpt = setup
    _write_mixed_inputs(tmp_path / "in")
    common = ["--checkpoint", str(ckpt), "--input", str(tmp_path / "in"), "--no-progress"]
    predict.main([*common, "--output", str(tmp_path / "all")])
    predict.main([*common, "--output", str(tmp_path / "some"), "--outputs", *outputs])
    suffix = {"mask": "", "color": "_color", "overlay": "_overlay", "legend": "_legend"}
    everything = {p.name: p.read_bytes() for p in (tmp_path / "all").iterdir()}
    some = {p.name: p.read_bytes() for p in (tmp_path / "some").iterdir()}
    kinds = ("_color.png", "_overlay.png", "_legend.png")
    stems = {name.removesuffix(".png") for name in everything if not name.endswith(kinds)}
    assert len(everything) == 4 * len(stems) > 0
    expected = {f"{stem}{suffix[kind]}.png" for stem in stems for kind in outputs}
    assert set(some) == expected and all(some[name] == everything[name] for name in some)


def test_predict_outputs_a_sigmoid_model_cannot_write_is_one_error_line(tmp_path, capsys):
    from fcn.files import check_outputs

    assert check_outputs(["overlay", "mask"], "binary") == ("mask", "overlay")
    with pytest.raises(ValueError, match="a multilabel model writes mask and overlay only"):
        check_outputs(["color", "legend"], "multilabel")
    with pytest.raises(ValueError, match="choose one or more of mask, color, overlay, legend"):
        check_outputs([], "multiclass")
