"""The benchmarks (`python -m bench.<name>`, bench/README.md): each one run on tiny inputs, the package
kept importable without sys.path edits, and the docs' commands in the module form."""

from __future__ import annotations

import importlib
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
while not (ROOT / "bench" / "__init__.py").is_file() and ROOT.parent != ROOT:  # tests/ may gain subfolders
    ROOT = ROOT.parent


def benchmarks() -> list[str]:
    """Return the `python -m bench.<name>` names: every module of bench/ that runs as a script, and
    every subpackage with a __main__.py (bench.model)."""
    names = []
    for path in sorted((ROOT / "bench").rglob("*.py")):
        dotted = ".".join(path.relative_to(ROOT / "bench").with_suffix("").parts)
        if path.name == "__main__.py":
            names.append(dotted.removesuffix(".__main__"))
        elif 'if __name__ == "__main__":' in path.read_text():
            names.append(dotted)
    return names


def load_bench(name: str):
    """Return the module `python -m bench.<name>` runs (bench.model's __main__ for a subpackage)."""
    module = importlib.import_module(f"bench.{name}")
    return importlib.import_module(f"bench.{name}.__main__") if hasattr(module, "__path__") else module


def run_bench(name: str, *args: str) -> str:
    """Return the stdout of `python -m bench.<name> args` run from the repository root (it must exit 0)."""
    proc = subprocess.run(
        [sys.executable, "-m", f"bench.{name}", *map(str, args)], cwd=ROOT, capture_output=True, text=True
    )
    assert proc.returncode == 0, f"python -m bench.{name} exited {proc.returncode}: {proc.stderr[-2000:]}"
    return proc.stdout


def test_every_benchmark_has_a_smoke_test():
    called = set()
    for test_file in (ROOT / "tests").rglob("test_*.py"):
        called |= set(re.findall(r"(?:load|run)_bench\(\s*\"([\w.]+)\"", test_file.read_text()))
    assert len(benchmarks()) >= 18
    assert sorted(set(benchmarks()) - called) == []


def test_bench_is_a_package_without_sys_path_edits():
    edits = [str(p.relative_to(ROOT)) for p in (ROOT / "bench").rglob("*.py") if "sys.path" in p.read_text()]
    assert edits == []
    assert "known-third-party" not in (ROOT / "pyproject.toml").read_text()


def test_docs_run_the_benchmarks_as_modules():
    pages = [
        ROOT / "README.md",
        ROOT / "Makefile",
        *(ROOT / "docs").glob("*.md"),
        *(ROOT / "bench").rglob("*"),
    ]
    old = [
        f"{page.relative_to(ROOT)}: {match}"
        for page in pages
        if page.is_file() and page.suffix in ("", ".md", ".py", ".yml")
        for match in re.findall(r"python3? bench/\S+", page.read_text())
    ]
    assert old == []


def test_every_benchmark_imports_as_a_module_and_names_its_command():
    for name in benchmarks():
        module = load_bench(name)
        assert module.main.__module__.startswith(f"bench.{name}")
    assert "usage: python -m bench.model " in run_bench("model", "--help")


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


def _tiny_checkpoint(path: Path, classes: int = 2) -> Path:
    """Write a random-weight FCN-8s ResNet-18 checkpoint ('same' geometry) of `classes` classes to path."""
    from fcn.config import load_config, to_dict
    from fcn.core.checkpoint import save_checkpoint, weights_checkpoint
    from fcn.models import build_model

    names = ["background", "circle", "square", "triangle"][:classes]
    overrides = ["model.backbone=resnet18", "model.geometry=same", "model.upsampling=bilinear"]
    overrides += ["model.pretrained=false", f"data.classes=[{','.join(names)}]"]
    overrides.append(f"data.palette={[[60 * i] * 3 for i in range(classes)]}".replace(" ", ""))
    cfg = load_config(overrides=overrides)
    save_checkpoint(weights_checkpoint(model=build_model(cfg.model).eval(), config=to_dict(cfg)), path)
    return path


def test_argmax_checks_and_times_both_decisions(monkeypatch, capsys):
    argmax = load_bench("argmax")
    monkeypatch.setattr(argmax, "CASES", [(4, 24, 32)])
    argmax.main([])
    assert "| 4       | 24x32 |" in capsys.readouterr().out


def test_metrics_times_the_update_against_bincount(tmp_path):
    out = run_bench(
        "metrics", "--size", "24", "--classes", "4", "--repeats", "1", "--out", tmp_path / "m.json"
    )
    assert "fast_hist" in out or "bincount" in out
    assert (tmp_path / "m.json").is_file()


def test_checkpoint_save_times_one_last_pt(tmp_path):
    out = run_bench("checkpoint_save", "--backbones", "resnet18", "--dir", tmp_path, "--rounds", "1")
    assert re.search(r"\| fcn8s resnet18 \| \d+ MB \|", out)


def test_trackers_time_tensorboard(monkeypatch, capsys):
    trackers = load_bench("trackers")
    monkeypatch.setattr(trackers, "TRACKERS", {"tensorboard": trackers.TRACKERS["tensorboard"]})
    monkeypatch.setattr(trackers, "ROUNDS", 2)
    trackers.main([])
    assert re.search(r"\| tensorboard \| [\d.]+ s", capsys.readouterr().out)


def test_data_loading_times_the_presets_and_the_layouts(tmp_path):
    args = [
        "--images",
        "2",
        "--seconds",
        "0.1",
        "--rounds",
        "1",
        "--layout-images",
        "2",
        "--layout-size",
        "32",
    ]
    out = run_bench("data_loading", *args, "--layout-epochs", "1", "--out", tmp_path / "d.json")
    assert "coco" in out and json.loads((tmp_path / "d.json").read_text())


def test_engines_time_torch_on_a_random_resnet18(tmp_path):
    args = ["--models", "resnet18", "--rows", "torch", "--size", "64", "--rounds", "1", "--threads", "1"]
    out = run_bench("engines", *args, "--json", tmp_path / "e.json")
    assert "torch" in out and json.loads((tmp_path / "e.json").read_text())


@pytest.mark.slow  # the matmul rate calibration and one quick inference group: about 50 s here
def test_model_bench_quick_inference_group(tmp_path):
    args = ["--quick", "--infer-only", "--size", "64", "--rounds", "1", "--max-seconds", "5"]
    out = run_bench("model", *args, "--variants", "winograd", "--json", tmp_path / "m.json")
    assert "# python -m bench.model on" in out and json.loads((tmp_path / "m.json").read_text())


@pytest.mark.slow  # one process per variant
def test_slide_bench_runs_whole_and_sliding_children(tmp_path):
    args = ["--nets", "resnet18", "--classes", "2", "--size", "96", "64", "--whole-sizes", "--tile", "64"]
    out = run_bench("slide", *args, "--stride", "43", "--device", "cpu", "--json", tmp_path / "s.json")
    rows = json.loads((tmp_path / "s.json").read_text())["rows"]
    assert {r["mode"] for r in rows} == {"whole", "slide"} and "# python -m bench.slide on" in out


@pytest.mark.slow  # toy data and a checkpoint
def test_slide_agreement_scores_whole_against_windows(tmp_path):
    subprocess.run(
        [sys.executable, "-m", "fcn.data.toy", "--root", tmp_path / "toy", "--train", "1", "--val", "16"],
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    pt = _tiny_checkpoint(tmp_path / "best.pt", classes=4)
    out = run_bench(
        "slide_agreement", "--checkpoint", pt, "--root", tmp_path / "toy", "--windows", "64", "43"
    )
    assert "16 validation images" in out


def test_starter_trains_each_recipe_and_scores_best_pt_on_the_heldout_set(tmp_path, monkeypatch, capsys):
    starter = load_bench("starter")
    commands = []

    def fake_run(args: list[str], log: Path) -> float:  # the trainings' outputs, without training
        commands.append(args)
        if args[0] == "train.py":
            run_dir = Path(next(a for a in args if a.startswith("training.run_dir=")).partition("=")[2])
            run_dir.mkdir(parents=True)
            (run_dir / "metrics.jsonl").write_text('{"mean_iou": 0.5}\n{"mean_iou": 0.6}\n')
        elif args[0] == "evaluate.py":
            Path(args[args.index("--output") + 1]).write_text('{"mean_iou": 0.55}')
        return 1.0

    from bench import common

    monkeypatch.setattr(starter, "run", fake_run)
    monkeypatch.setattr(  # its results table, not the checkout's
        starter, "write_table", lambda *a, **k: common.write_table(*a, directory=tmp_path, **k)
    )
    monkeypatch.setattr(sys, "argv", ["starter", "--work", str(tmp_path / "w")])
    starter.main()
    assert [c[0] for c in commands] == ["-m", "-m", "train.py", "evaluate.py", "train.py", "evaluate.py"]
    assert "| demo" in capsys.readouterr().out
    assert len(json.loads((tmp_path / "starter.json").read_text())["rows"]) == 2


def test_vs_torchfcn_needs_torchfcns_sources():
    # the comparison itself needs torchfcn's sdist (not installed, not downloaded here): its command only
    assert "--models-dir" in run_bench("vs_torchfcn", "--help")


def test_a_benchmark_writes_its_table_as_markdown_and_json_with_the_machine(tmp_path, capsys):
    argmax = load_bench("argmax")
    from bench import common

    argmax.CASES = [(4, 20, 30)]
    argmax.write_table = lambda *a, **k: common.write_table(*a, directory=tmp_path, **k)
    argmax.main([])
    text = (tmp_path / "argmax.md").read_text()
    assert text in capsys.readouterr().out
    assert "torch " + torch.__version__ in text and "CPU flags:" in text and "| classes |" in text
    record = json.loads((tmp_path / "argmax.json").read_text())
    assert record["machine"]["torch"] == torch.__version__ and "flags" in record["machine"]["cpu"]
    assert len(record["date"]) == 10 and record["rows"][0][:2] == [4, "20x30"]
