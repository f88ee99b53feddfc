"""The benchmark scripts that README.md tells users to run on their own checkpoints and runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tests.helpers import load_bench


def _write_run(run_dir: Path, losses: list[float]) -> None:
    from torch.utils.tensorboard import SummaryWriter

    with SummaryWriter(str(run_dir)) as writer:
        for step, loss in enumerate(losses, start=1):
            writer.add_scalar("train/loss", loss, step)


def test_loss_curves_tell_noise_from_a_shift(tmp_path, capsys):
    loss_curves = load_bench("loss_curves")
    torch.manual_seed(0)
    base = (1.0 / torch.arange(1, 101) + 0.05 * torch.randn(100)).tolist()
    _write_run(tmp_path / "a", base)
    _write_run(tmp_path / "same", [v + 0.001 for v in base])
    _write_run(tmp_path / "shifted", [v + 0.2 for v in base[:60]])  # fewer iterations: compared on 60
    out = tmp_path / "r.json"
    result = loss_curves.main([str(tmp_path / "a"), str(tmp_path / "same"), "--json", str(out)])
    assert "within noise" in capsys.readouterr().out
    assert [r["count"] for r in result["rows"]] == [25, 25, 25, 25]
    assert json.loads(out.read_text())["rows"][0]["first"] == 1
    result = loss_curves.main([str(tmp_path / "a"), str(tmp_path / "shifted"), "--json", str(out)])
    assert "beyond noise" in capsys.readouterr().out
    assert sum(r["count"] for r in result["rows"]) == 60
    assert all(r["difference"] == pytest.approx(0.2, abs=1e-4) for r in result["rows"])


def test_loss_curves_name_a_directory_without_events(tmp_path):
    loss_curves = load_bench("loss_curves")
    with pytest.raises(SystemExit, match="no TensorBoard events"):
        loss_curves.main([str(tmp_path), str(tmp_path)])


@pytest.mark.slow  # five short processes
def test_end_to_end_times_the_commands_and_the_pipeline_writes_the_same_bytes(tmp_path, capsys):
    end_to_end = load_bench("end_to_end")
    result = end_to_end.main(
        [
            "--images",
            "2",
            "--size",
            "96",
            "--rounds",
            "1",
            "--fast-paths",
            "none",
            "--json",
            str(tmp_path / "e.json"),
        ]
    )
    (row,) = result["rows"]
    assert row["variant"] == "none" and row["runs"] == "fp32" and row["pipelined_same_bytes"]
    assert row["lower_bound_s"] == pytest.approx(row["import_torch_s"] + row["forwards_s"])
    assert all(row[k] > 0 for k in ("predict_s", "first_image_s", "evaluate_s", "segmenter_ms"))
    assert "| none" in capsys.readouterr().out and (tmp_path / "e.json").is_file()
    # --scenes toy: fcn.data.toy's scenes as a VOC-layout folder, labels among the toy classes and void
    import numpy as np
    from PIL import Image

    jpegs = end_to_end.make_images(tmp_path / "toy", 2, 64, "toy")
    assert [p.name for p in jpegs] == ["img_000.jpg", "img_001.jpg"] and Image.open(jpegs[0]).size == (64, 64)
    mask = np.asarray(Image.open(tmp_path / "toy" / "SegmentationClass" / "img_000.png"))
    assert set(np.unique(mask)) <= {*range(len(end_to_end.CLASSES)), 255} and len(np.unique(mask)) > 1


def test_build_times_both_builds_of_each_net(capsys):
    rows = load_bench("build").main(["--backbones", "resnet18", "--rounds", "1"])
    assert [row[0] for row in rows] == ["fcn8s resnet18"] and rows[0][3].endswith("x")
    assert "built bare s" in capsys.readouterr().out


@pytest.mark.slow  # two serve.py processes
def test_serve_bench_times_the_server_batched_and_not_against_the_segmenter(tmp_path, capsys):
    from fcn.config import load_config, to_dict
    from fcn.core.checkpoint import save_checkpoint, weights_checkpoint
    from fcn.models import build_model

    tiny = [
        "model.backbone=resnet18",
        "model.geometry=same",
        "model.upsampling=bilinear",
        "model.pretrained=false",
    ]
    cfg = load_config(overrides=[*tiny, "data.classes=[a,b]", "data.palette=[[0,0,0],[255,255,255]]"])
    pt = tmp_path / "best.pt"
    save_checkpoint(weights_checkpoint(model=build_model(cfg.model).eval(), config=to_dict(cfg)), pt)
    serve = load_bench("serve")
    args = ["--checkpoint", str(pt), "--size", "64", "48", "--requests", "8", "--clients", "1", "4"]
    result = serve.main([*args, "--json", str(tmp_path / "r.json")])
    assert [(r["variant"], r["clients"]) for r in result["rows"]] == [
        ("Segmenter in-process", 1),
        ("serve.py --max-batch 4", 1),
        ("serve.py --max-batch 4", 4),
        ("serve.py --max-batch 1", 1),
        ("serve.py --max-batch 1", 4),
    ]
    assert all(r["wrong"] == 0 and r["images_per_s"] > 0 for r in result["rows"])
    assert "p99 ms" in capsys.readouterr().out


@pytest.mark.slow
def test_own_data_trains_ours_and_smp_on_the_same_batches_and_prints_the_table(tmp_path, capsys):
    pytest.importorskip("segmentation_models_pytorch")
    own_data = load_bench("own_data")
    out = tmp_path / "r.json"
    args = ["--seconds", "1", "--seeds", "0", "--tasks", "binary", "--train-images", "16"]
    args += ["--heldout-images", "2", "--size", "64", "--probe", "1", "--data", str(tmp_path / "d")]
    result = own_data.main([*args, "--json", str(out)])
    printed = capsys.readouterr().out
    assert "| binary | 0    | ours fcn4s |" in printed and "| binary | 0    | smp Unet   |" in printed
    rows = json.loads(out.read_text())["rows"]
    assert [r["model"] for r in rows] == ["ours fcn4s", "smp Unet"] == [r["model"] for r in result["rows"]]
    assert all(r["iterations"] >= 1 and 0.0 <= r["metric"] <= 1.0 for r in rows)
    assert "cpu" in json.loads(out.read_text())["machine"]
