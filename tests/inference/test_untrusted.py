"""A file from elsewhere is data, never code (docs/security.md): the config inside a checkpoint or a
Hub folder names no code that evaluate.py, predict.py or the Segmenter runs, reads no environment
variable, carries no tracker password; a malformed one is one line; the ONNX cache follows the
config as well as the weights."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from evaluate import main as evaluate_main
from fcn import Segmenter
from fcn.config import ConfigError, config_from_dict, load_config, to_dict
from fcn.core.checkpoint import CheckpointError, load_checkpoint, save_checkpoint, weights_checkpoint
from fcn.models import build_model
from predict import main as predict_main

TINY = [
    "model.arch=fcn32s",
    "model.backbone=mobilenet_v3_large",
    "model.geometry=same",
    "model.upsampling=bilinear",
    "model.pretrained=false",
    "data.classes=[sky,tree,road]",
    "data.palette=[[0,0,255],[0,255,0],[128,128,128]]",
]
IMAGE = np.random.default_rng(3).integers(0, 256, (29, 41, 3), dtype=np.uint8)
SECRET = "s3cr3t-value-from-the-environment"


@pytest.fixture(scope="module")
def made(tmp_path_factory) -> dict:
    """A tiny model's weights checkpoint (best.pt) and its save_pretrained folder."""
    torch.manual_seed(0)
    cfg = load_config(overrides=TINY)
    model = build_model(cfg.model).eval()
    root = tmp_path_factory.mktemp("made")
    pt = root / "best.pt"
    save_checkpoint(weights_checkpoint(model=model, config=to_dict(cfg)), pt)
    folder = Path(Segmenter.from_checkpoint(pt, device="cpu").save_pretrained(root / "folder"))
    return {"pt": pt, "folder": folder}


def _edit_folder(made: dict, tmp_path: Path, edit) -> Path:
    """Return a copy of the folder whose config.json edit(meta) changed."""
    folder = tmp_path / "shared"
    folder.mkdir()
    for path in made["folder"].iterdir():
        (folder / path.name).write_bytes(path.read_bytes())
    meta = json.loads((folder / "config.json").read_text())
    edit(meta)
    (folder / "config.json").write_text(json.dumps(meta))
    return folder


def _edit_pt(made: dict, tmp_path: Path, edit) -> Path:
    """Return a copy of best.pt whose checkpoint dict edit(state) changed."""
    state = load_checkpoint(made["pt"])
    edit(state)
    path = tmp_path / "shared.pt"
    save_checkpoint(state, path)
    return path


def _popen_val(marker: Path):
    """An edit that names subprocess.Popen as the validation set, touching marker when it runs."""

    def edit(config: dict) -> None:
        config["data"]["val"] = {"name": "subprocess:Popen", "args": {"args": ["touch", str(marker)]}}

    return edit


@pytest.fixture(params=["folder", "pt"])
def shared_with_code(request, made, tmp_path) -> tuple[Path, Path]:
    """(a folder or a .pt whose config names subprocess:Popen as data.val, the marker it would touch)."""
    marker = tmp_path / "marker.txt"
    edit = _popen_val(marker)
    if request.param == "folder":
        return _edit_folder(made, tmp_path, lambda meta: edit(meta["config"])), marker
    return _edit_pt(made, tmp_path, lambda state: edit(state["config"])), marker


def test_evaluate_refuses_a_shared_configs_code_in_one_line(shared_with_code, capsys):
    shared, marker = shared_with_code
    assert evaluate_main([str(shared), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "Traceback" not in err[0]
    assert "data.val.name='subprocess:Popen'" in err[0] and "--trust-remote-code" in err[0]
    assert not marker.exists()


def test_evaluate_runs_it_only_with_trust_remote_code_and_says_so(shared_with_code, capsys):
    shared, marker = shared_with_code
    code = evaluate_main([str(shared), "--no-progress", "--trust-remote-code"])
    err = capsys.readouterr().err
    for _ in range(100):  # Popen started `touch` (the opt-in does what it says): wait for it to finish
        if marker.exists():
            break
        time.sleep(0.05)
    assert marker.exists()
    assert "importing subprocess:Popen (data.val.name), as --trust-remote-code allows" in err
    assert code == 2  # then Popen is no dataset: the project's one-line error, no traceback
    assert "Traceback" not in err


def test_the_segmenter_and_predict_use_a_shared_model_without_running_its_code(
    shared_with_code, made, tmp_path, capsys
):
    shared, marker = shared_with_code
    expected = Segmenter.from_checkpoint(made["pt"], device="cpu")(IMAGE)
    seg = (
        Segmenter.from_pretrained(shared, device="cpu")
        if shared.is_dir()
        else Segmenter.from_checkpoint(shared, device="cpu")
    )
    assert np.array_equal(seg(IMAGE), expected)
    assert seg.cfg.data.val.name == "subprocess:Popen"  # kept as data, never imported
    from PIL import Image

    Image.fromarray(IMAGE).save(tmp_path / "in.png")
    assert (
        predict_main(
            [
                "--checkpoint",
                str(shared),
                "--input",
                str(tmp_path / "in.png"),
                "--output",
                str(tmp_path / "out"),
            ]
        )
        == 0
    )
    assert (tmp_path / "out" / "in.png").is_file()
    again = Path(seg.save_pretrained(tmp_path / "again"))  # written back as the data it was
    assert (
        json.loads((again / "config.json").read_text())["config"]["data"]["val"]["name"] == "subprocess:Popen"
    )
    assert not marker.exists()


def test_a_users_own_data_val_replaces_the_shared_one_and_its_args(made, tmp_path):
    config = load_checkpoint(made["pt"])["config"]
    _popen_val(tmp_path / "marker.txt")(config)
    cfg = config_from_dict(config, "shared.pt", overrides=["data.val.name=folder", "data.val.root=mine"])
    assert cfg.data.val.name == "folder" and len(cfg.data.val.args) == 0
    own = tmp_path / "own.yml"
    own.write_text("data:\n  val:\n    name: mypackage.sets:Mine\n")
    assert config_from_dict(config, "shared.pt", paths=[str(own)]).data.val.name == "mypackage.sets:Mine"


def test_an_environment_interpolation_in_a_shared_config_is_a_literal_string(made, tmp_path, monkeypatch):
    monkeypatch.setenv("FCN_TEST_SECRET", SECRET)

    def edit(meta: dict) -> None:
        meta["config"]["data"]["classes"] = ["${oc.env:FCN_TEST_SECRET}", "tree", "${data.val.root}"]
        meta["config"]["data"]["val"]["root"] = "${oc.env:FCN_TEST_SECRET}"

    folder = _edit_folder(made, tmp_path, edit)
    seg = Segmenter.from_pretrained(folder, device="cpu")
    assert seg.classes == ["${oc.env:FCN_TEST_SECRET}", "tree", "${data.val.root}"]
    assert seg.cfg.data.val.root == "${oc.env:FCN_TEST_SECRET}"
    again = Path(seg.save_pretrained(tmp_path / "again"))
    for path in again.iterdir():
        assert SECRET.encode() not in path.read_bytes(), path.name
    assert json.loads((again / "config.json").read_text())["config"]["data"]["classes"][0] == (
        "${oc.env:FCN_TEST_SECRET}"
    )


def test_a_shared_config_holds_plain_values_only(made):
    config = load_checkpoint(made["pt"])["config"]
    config["data"]["classes"] = [torch.tensor(1), "tree", "road"]
    with pytest.raises(ConfigError, match=r"key 'data.classes\[0\]' holds a Tensor"):
        config_from_dict(config, "shared.pt")


def test_a_users_own_environment_interpolation_is_resolved_but_never_written(monkeypatch):
    monkeypatch.setenv("FCN_TEST_SECRET", SECRET)
    cfg = load_config(
        overrides=[
            *TINY,
            "data.train.root=${oc.env:FCN_TEST_SECRET}/train",
            "data.val.root=${data.train.root}",
        ]
    )
    assert cfg.data.val.root == f"{SECRET}/train"  # the user's own file: resolved for the run
    written = to_dict(cfg)  # what checkpoints, Hub folders, trackers and JSON reports get
    assert written["data"]["train"]["root"] == "${oc.env:FCN_TEST_SECRET}/train"
    assert written["data"]["val"]["root"] == "${oc.env:FCN_TEST_SECRET}/train"
    assert SECRET not in json.dumps(written)


def test_tracker_credentials_in_the_users_uri_are_refused_naming_mlflows_variables(tmp_path, capsys):
    with pytest.raises(ConfigError) as err:
        load_config(overrides=[*TINY, "logging.mlflow_uri=https://alice:pw123@mlflow.example:5000"])
    message = str(err.value)
    assert "MLFLOW_TRACKING_USERNAME" in message and "MLFLOW_TRACKING_PASSWORD" in message
    assert "pw123" not in message
    from train import main as train_main

    run_dir = tmp_path / "run"
    code = train_main([f"training.run_dir={run_dir}", "logging.mlflow_uri=https://alice:pw123@h/"])
    assert code == 2 and not run_dir.exists()
    assert "pw123" not in capsys.readouterr().err


def test_credentials_in_a_shared_configs_uri_are_dropped(made, tmp_path):
    folder = _edit_folder(
        made,
        tmp_path,
        lambda meta: meta["config"]["logging"].update(mlflow_uri="https://bob:hunter2@host:5000/x"),
    )
    seg = Segmenter.from_pretrained(folder, device="cpu")
    assert seg.cfg.logging.mlflow_uri == "https://host:5000/x"
    again = Path(seg.save_pretrained(tmp_path / "again"))
    assert all(b"hunter2" not in p.read_bytes() for p in again.iterdir())


@pytest.mark.parametrize(
    "damage, words",
    [
        (lambda meta: meta.update(version=None), '"version" is null, not a number'),
        (lambda meta: meta.update(version="2"), '"version" is "2", not a number'),
        (lambda meta: meta.update(run=[1, 2]), '"run" is a list, not a mapping'),
        (lambda meta: meta.update(config=["model"]), "not a pytorch-fcn config"),
    ],
)
def test_a_malformed_folder_config_is_one_line(made, tmp_path, capsys, damage, words):
    folder = _edit_folder(made, tmp_path, damage)
    with pytest.raises(CheckpointError, match=words):
        Segmenter.from_pretrained(folder, device="cpu")
    assert evaluate_main([str(folder), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and words in err[0]


@pytest.mark.parametrize(
    "damage, words",
    [
        (lambda state: state.update(model=[1, 2, 3]), "its 'model' entry is a list, not a state dict"),
        (lambda state: state.update(model={"a": 1}), "its 'model' entry is a dict, not a state dict"),
        (lambda state: state.update(ema=[0]), "its 'ema' entry is a list"),
        (lambda state: state.update(config="fcn32s"), "its 'config' entry is a str, not a mapping"),
        (lambda state: state.update(version=None), "format version None, not a number"),
    ],
)
def test_a_malformed_checkpoint_is_one_line(made, tmp_path, capsys, damage, words):
    path = _edit_pt(made, tmp_path, damage)
    with pytest.raises(CheckpointError, match=words):
        Segmenter.from_checkpoint(path, device="cpu")
    assert evaluate_main([str(path), "--no-progress"]) == 2
    assert (
        predict_main(["--checkpoint", str(path), "--input", str(path), "--output", str(tmp_path / "o")]) == 2
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all(words in line and line.startswith("error: ") for line in err)
    assert not (tmp_path / "o").exists()


def test_the_onnx_cache_follows_the_folders_config_as_well_as_its_weights(made, tmp_path):
    pytest.importorskip("onnxruntime")
    import onnx

    folder = _edit_folder(made, tmp_path, lambda meta: None)
    first = Segmenter.from_pretrained(folder, device="cpu", engine="onnxruntime")
    exports = sorted(folder.glob("*.onnx"))
    assert len(exports) == 1
    meta = json.loads((folder / "config.json").read_text())
    meta["config"]["data"]["classes"] = ["water", "forest", "street"]  # same weights, another config
    (folder / "config.json").write_text(json.dumps(meta))
    second = Segmenter.from_pretrained(folder, device="cpu", engine="onnxruntime")
    export = Path(second.model.onnx_path)
    assert export != Path(first.model.onnx_path)
    written = {p.key: p.value for p in onnx.load(str(export)).metadata_props}
    assert json.loads(written["classes"]) == ["water", "forest", "street"]
    assert second.classes == ["water", "forest", "street"]


def test_error_and_warning_lines_show_no_password_of_a_uri(capsys):
    from fcn.core.errors import report
    from fcn.training.trackers import Trackers

    report(OSError("cannot reach https://alice:pw123@mlflow.example:5000/api (timed out)"))
    trackers = Trackers([], print)
    trackers._warn("mlflow", OSError("Max retries exceeded with url: http://bob:hunter2@host/x"))
    out = capsys.readouterr()
    assert "error: cannot reach https://alice:***@mlflow.example:5000/api (timed out)" in out.err
    assert "http://bob:***@host/x" in out.out
    assert "pw123" not in out.err + out.out and "hunter2" not in out.err + out.out


def test_best_yml_from_a_shared_study_keeps_its_strings_literal_and_flags_a_dataset_class(
    tmp_path, monkeypatch
):
    from types import SimpleNamespace

    from fcn.training.search import best_config

    monkeypatch.setenv("FCN_TEST_SECRET", SECRET)
    config = to_dict(load_config(overrides=TINY))
    config["data"]["classes"] = ["${oc.env:FCN_TEST_SECRET}", "tree", "road"]
    config["data"]["train"] = {"name": "subprocess:Popen", "args": {"args": ["true"]}}
    trial = SimpleNamespace(number=3, value=0.5, user_attrs={"config": config})
    monkeypatch.chdir(tmp_path)
    path, _ = best_config(SimpleNamespace(best_trial=trial, study_name="shared"))
    text = path.read_text()
    assert SECRET not in text
    assert "# data.train.name=subprocess:Popen names code that train.py imports" in text
    cfg = load_config([str(path)])  # the user's own file from now on: the class name stays literal
    assert cfg.data.classes[0] == "${oc.env:FCN_TEST_SECRET}"


def test_the_demo_page_builds_no_dataset_class_a_shared_config_names(shared_with_code, made, tmp_path):
    from demo import parse_args
    from fcn.demo import example_images, load_segmenter

    shared, marker = shared_with_code
    seg = load_segmenter(shared, "cpu")
    assert example_images(seg) == [] and not marker.exists()
    assert parse_args(["--checkpoint", str(shared), "--trust-remote-code"]).trust_remote_code
    assert example_images(seg, trust_remote_code=True) == []  # built (the opt-in), then no dataset
    for _ in range(100):
        if marker.exists():
            break
        time.sleep(0.05)
    assert marker.exists()


def test_a_public_demo_page_offers_no_folder_a_shared_config_points_to(made, tmp_path):
    from PIL import Image

    from fcn.demo import example_images, load_segmenter

    private = tmp_path / "private"  # a folder in VOC layout (fcn/data/folder.py)
    for sub in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (private / sub).mkdir(parents=True)
    Image.fromarray(IMAGE).save(private / "JPEGImages" / "holiday.png")
    Image.fromarray(np.zeros(IMAGE.shape[:2], np.uint8)).save(private / "SegmentationClass" / "holiday.png")
    (private / "ImageSets/Segmentation/val.txt").write_text("holiday\n")

    def edit(meta: dict) -> None:
        meta["config"]["data"]["val"] = {"name": "folder", "root": str(private), "split": "val"}

    seg = load_segmenter(_edit_folder(made, tmp_path, edit), "cpu")
    assert example_images(seg, public=False) == [
        str(private / "JPEGImages" / "holiday.png")
    ]  # this machine only
    assert example_images(seg, public=True) == []


def test_the_demo_legend_shows_a_shared_class_name_as_written(made, tmp_path, monkeypatch):
    from fcn.demo import load_segmenter, shares_html

    monkeypatch.setenv("FCN_TEST_SECRET", SECRET)

    def edit(meta: dict) -> None:
        meta["config"]["data"]["classes"] = ["${oc.env:FCN_TEST_SECRET}", "<b>tree</b>", "road"]

    seg = load_segmenter(_edit_folder(made, tmp_path, edit), "cpu")
    legend = shares_html(seg.shares(np.array([[0, 1], [2, 2]])), seg.palette)
    assert "${oc.env:FCN_TEST_SECRET}" in legend and SECRET not in legend
    assert "&lt;b&gt;tree&lt;/b&gt;" in legend and "<b>" not in legend
