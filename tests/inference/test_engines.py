"""eval.engine (fcn/inference/engines.py): the checkpoint exported to ONNX and run by ONNX Runtime or OpenVINO
through evaluate.py and predict.py, against the torch path on test_evaluate_predict's checkpoint
whose weights are set (a brightness detector), not trained."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import evaluate
import predict
from fcn.config import ConfigError, load_config, to_dict
from fcn.core.checkpoint import load_checkpoint, save_checkpoint
from fcn.inference.engines import OpenVinoEngine, cached_onnx
from fcn.inference.fastpath import resolve_fast_path
from fcn.inference.loading import load
from tests.helpers import _brightness_detector, _overrides, _write_folder_dataset

HAS_OPENVINO = importlib.util.find_spec("openvino") is not None
ENGINES = [
    "onnxruntime",
    pytest.param("openvino", marks=pytest.mark.skipif(not HAS_OPENVINO, reason="openvino not installed")),
]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """Return (dataset root, ids, checkpoint path, torch's evaluate.py report, torch's predictions)."""
    tmp = tmp_path_factory.mktemp("engines")
    root = tmp / "data"
    ids = _write_folder_dataset(root)
    cfg = load_config(overrides=_overrides(root))
    path = tmp / "best.pt"
    model = _brightness_detector(cfg)
    save_checkpoint({"version": 1, "model": model.state_dict(), "iteration": 0, "config": to_dict(cfg)}, path)
    report, preds = _evaluate(path, tmp / "torch", "--engine", "torch")
    return root, ids, path, report, preds


def _evaluate(ckpt: Path, out: Path, *flags: str) -> tuple[dict, dict[str, np.ndarray]]:
    args = ["--checkpoint", str(ckpt), "--no-progress", "--device", "cpu", *flags]
    code = evaluate.main([*args, "--output", str(out / "val.json"), "--save-predictions", str(out / "p")])
    assert code == 0
    report = json.loads((out / "val.json").read_text())
    return report, {p.stem: np.array(Image.open(p)) for p in sorted((out / "p").glob("*.png"))}


def _agreement(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> float:
    assert a.keys() == b.keys()
    return sum(int((a[k] == b[k]).sum()) for k in a) / sum(a[k].size for k in a)


@pytest.mark.parametrize("engine", ENGINES)
def test_evaluate_with_an_engine_gives_the_torch_paths_results(setup, engine, tmp_path, capsys):
    _, _, ckpt, torch_report, torch_preds = setup
    report, preds = _evaluate(ckpt, tmp_path, "--engine", engine)
    assert report["eval"]["engine"] == engine
    assert report["mean_iou"] == pytest.approx(torch_report["mean_iou"], abs=0.01)
    assert _agreement(preds, torch_preds) >= 0.9999


@pytest.mark.parametrize("engine", ENGINES)
def test_predict_with_an_engine_writes_the_torch_paths_masks(setup, engine, tmp_path):
    root, ids, ckpt, _, _ = setup
    images = [str(root / "JPEGImages" / f"{i}.png") for i in ids[:2]]
    masks = {}
    for name in ("torch", engine):
        out = tmp_path / name
        flags = ["--engine", name, "--device", "cpu", "--no-progress", "--flip"]  # TTA is shared
        assert (
            predict.main(["--checkpoint", str(ckpt), "--input", *images, "--output", str(out), *flags]) == 0
        )
        masks[name] = {i: np.array(Image.open(out / f"{i}.png")) for i in ids[:2]}
    assert _agreement(masks[engine], masks["torch"]) >= 0.9999


@pytest.mark.slow  # two exports
def test_the_onnx_export_is_cached_by_checksum_and_replaced_when_the_checkpoint_changes(
    setup, tmp_path, capsys
):
    ckpt = tmp_path / "best.pt"
    shutil.copy(setup[2], ckpt)
    load(ckpt, overrides=["eval.engine=onnxruntime"])
    assert "exported" in capsys.readouterr().out
    (first,) = tmp_path.glob("best.pt.*.onnx")
    stamp = first.stat().st_mtime_ns
    import fcn.models

    def no_build(*args, **kwargs):
        raise AssertionError("a cached export was found: the torch model need not be built")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(fcn.models, "build_model", no_build)
        engine, _ = load(ckpt, overrides=["eval.engine=onnxruntime"])
    assert "exported" not in capsys.readouterr().out  # reused, from the file alone
    assert engine.onnx_path == str(first) and first.stat().st_mtime_ns == stamp

    state = load_checkpoint(ckpt)
    state["model"]["score_pool3.bias"] += 1.0  # another model: the cached export must not serve it
    save_checkpoint(state, ckpt)
    engine, _ = load(ckpt, overrides=["eval.engine=onnxruntime"])
    (second,) = tmp_path.glob("best.pt.*.onnx")  # the stale export is removed
    assert second != first and "exported" in capsys.readouterr().out
    model, _ = load(ckpt, overrides=["eval.engine=torch"])
    x = torch.randn(1, 3, 40, 56)
    with torch.inference_mode():
        torch.testing.assert_close(engine(x), model(x), atol=1e-4, rtol=1e-4)  # the new weights


def test_a_missing_engine_package_is_one_error_line_with_the_pip_command(setup, monkeypatch, capsys):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == "openvino" else real(n, *a))
    code = evaluate.main(["--checkpoint", str(setup[2]), "--device", "cpu", "--engine", "openvino"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert err[0].startswith("error: ") and "pip install openvino" in err[0]


def test_an_export_that_fails_is_one_error_line(setup, tmp_path, monkeypatch, capsys):
    import fcn.inference.onnx

    ckpt = tmp_path / "best.pt"
    shutil.copy(setup[2], ckpt)

    def fail(*args, **kwargs):
        raise NotImplementedError("Unsupported: ONNX export of operator aten::made_up")

    monkeypatch.setattr(fcn.inference.onnx, "export_onnx", fail)
    code = evaluate.main(["--checkpoint", str(ckpt), "--device", "cpu", "--engine", "onnxruntime"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert "export to ONNX failed" in err[0] and "aten::made_up" in err[0]
    assert not list(tmp_path.glob("*.onnx"))


@pytest.mark.parametrize(
    ("bf16", "installed", "expected"),
    [
        (False, {"openvino", "onnxruntime"}, ("onnxruntime", "none", "none")),
        (False, {"openvino"}, ("openvino", "none", "none")),
        (True, {"openvino", "onnxruntime"}, ("torch", "none", "bf16")),
    ],
)
def test_auto_chooses_the_engine_by_cpu_and_install_and_says_so(
    bf16, installed, expected, monkeypatch, capsys
):
    import fcn.inference.fastpath
    import fcn.inference.loading

    monkeypatch.setattr(fcn.inference.fastpath, "native_bf16", lambda device: bf16)
    monkeypatch.setattr(fcn.inference.fastpath, "available", lambda engine: engine in installed)
    cfg = resolve_fast_path(load_config(overrides=["eval.fast_path=auto"]), torch.device("cpu"))
    assert (cfg.eval.engine, cfg.eval.fast_path, cfg.eval.amp) == expected
    (line,) = capsys.readouterr().out.strip().splitlines()
    assert line.startswith("eval.fast_path=auto: ") and (expected[0] in line or "bf16" in line)


def test_auto_with_no_engine_installed_falls_back_to_winograd(monkeypatch, capsys):
    import fcn.inference.fastpath
    import fcn.inference.loading

    monkeypatch.setattr(fcn.inference.fastpath, "native_bf16", lambda device: False)
    monkeypatch.setattr(fcn.inference.fastpath, "available", lambda engine: engine == "torch")
    cfg = resolve_fast_path(load_config(overrides=["eval.fast_path=auto"]), torch.device("cpu"))
    want = "winograd" if torch.backends.nnpack.is_available() else "none"
    assert (cfg.eval.engine, cfg.eval.fast_path) == ("torch", want)
    assert "neither openvino nor onnxruntime" in capsys.readouterr().out or want == "none"


def test_an_engine_rejects_torch_only_options_at_load_time():
    with pytest.raises(ConfigError, match="eval.fast_path=winograd is a PyTorch path"):
        load_config(overrides=["eval.engine=onnxruntime", "eval.fast_path=winograd"])
    with pytest.raises(ConfigError, match="eval.engine=openvino runs the fp32 export"):
        load_config(overrides=["eval.engine=openvino", "eval.amp=bf16"])
    with pytest.raises(ConfigError, match="eval.engine"):
        load_config(overrides=["eval.engine=tensorrt"])


@pytest.mark.parametrize(
    "engine",
    [
        "onnxruntime",
        pytest.param(
            "openvino",
            marks=[
                pytest.mark.slow,
                pytest.mark.skipif(
                    not HAS_OPENVINO or importlib.util.find_spec("nncf") is None,
                    reason="openvino/nncf missing",
                ),
                # NNCF's int8 (nncf 3.4, OpenVINO 2026.4) of this hand-set net loses its decision: 33%
                # of the pixels agree (also with weight noise, the mixed preset or no bias correction)
                # on an AVX2 CPU, while make demo's trained checkpoint keeps its mean IU
                # (docs/performance.md). Not strict: only AVX2 was tried, and OpenVINO's int8 kernels
                # differ on AVX-512 VNNI / AMX, where it may pass (reported as XPASS).
                pytest.mark.xfail(strict=False, reason="NNCF int8 of the hand-set brightness detector"),
            ],
        ),
    ],
)
def test_int8_on_an_engine_runs_and_stays_close_to_fp32(setup, engine, tmp_path, capsys):
    _, _, ckpt, torch_report, torch_preds = setup
    report, preds = _evaluate(ckpt, tmp_path, "--engine", engine, "--fast-path", "int8")
    assert f"eval.fast_path=int8: {engine} static int8, calibrated on 4 images" in capsys.readouterr().out
    assert _agreement(preds, torch_preds) >= 0.95  # an approximation: a loose bound
    assert report["mean_iou"] == pytest.approx(torch_report["mean_iou"], abs=0.1)


@pytest.mark.skipif(not HAS_OPENVINO, reason="openvino not installed")
def test_openvino_compiles_once_per_shape_and_keeps_a_bounded_number(setup):
    _, _, ckpt, _, _ = setup
    model, cfg = load(ckpt, overrides=["eval.engine=torch"])
    engine = OpenVinoEngine(cached_onnx(model, cfg, ckpt, "model"), max_shapes=2)
    # Each shape twice: the first time the dynamic-shape model serves it, the second compiles it.
    shapes = [(1, 3, 40, 48), (1, 3, 64, 64), (1, 3, 40, 48), (1, 3, 33, 65)] * 2
    with torch.inference_mode():
        for shape in shapes:
            x = torch.randn(shape)
            got = engine(x)
            assert got.shape == (1, 3, *shape[-2:])
            torch.testing.assert_close(got, model(x), atol=1e-4, rtol=1e-4)
            assert (engine.dynamic is not None) and len(engine.compiled) <= 2
    assert list(engine.compiled) == [(1, 3, 40, 48), (1, 3, 33, 65)]  # 64x64 was least recently used
