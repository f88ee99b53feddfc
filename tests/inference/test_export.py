"""ONNX / TorchScript export agrees with PyTorch on inputs of several sizes."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from fcn.inference.onnx import check_onnx, check_torchscript, export_onnx, export_torchscript

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")


class PaperGeometryNet(nn.Module):
    """A tiny stand-in with the paper's shape arithmetic: pad 100, ceil-mode pools, an unpadded
    'fc6', a stride-4 deconvolution and a crop at a fixed offset back to the input's size."""

    def __init__(self, num_classes: int = 3) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3, padding=100)
        self.pool = nn.MaxPool2d(2, 2, ceil_mode=True)
        self.fc6 = nn.Conv2d(4, 6, 7)
        self.score = nn.Conv2d(6, num_classes, 1)
        self.upscore = nn.ConvTranspose2d(num_classes, num_classes, 8, 4, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[2:]
        y = self.upscore(self.score(torch.relu(self.fc6(self.pool(self.pool(torch.relu(self.conv1(x))))))))
        return y[:, :, 19 : 19 + h, 19 : 19 + w]


def _model() -> nn.Module:
    torch.manual_seed(0)
    return PaperGeometryNet().eval()


def test_onnx_dynamic_export_matches_pytorch_on_two_sizes(tmp_path):
    model, path = _model(), tmp_path / "m.onnx"
    export_onnx(model, path, sample_shape=(1, 3, 32, 48))
    diffs = check_onnx(model, path, [(1, 3, 41, 67), (2, 3, 90, 33)])
    assert len(diffs) == 2
    # ONNX Runtime's kernels round otherwise than PyTorch's: ~1e-6 of the logits' size. 1e-4 is far
    # above that for the logits of these tests (at most ~11, measured diffs <= 7e-6) and far below
    # what a wrong crop, pad or operator gives (of the logits' own size).
    assert max(diffs) < 1e-4


def test_onnx_export_embeds_metadata_and_leaves_no_temp_file(tmp_path):
    import onnx

    path = tmp_path / "m.onnx"
    export_onnx(
        _model(), path, sample_shape=(1, 3, 32, 32), metadata={"classes": json.dumps(["a", "b", "c"])}
    )
    props = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    assert json.loads(props["classes"]) == ["a", "b", "c"]
    assert [p.name for p in tmp_path.iterdir()] == ["m.onnx"]


def test_static_onnx_export_rejects_another_size(tmp_path):
    model, path = _model(), tmp_path / "m.onnx"
    export_onnx(model, path, dynamic=False, sample_shape=(1, 3, 32, 32))
    assert check_onnx(model, path, [(1, 3, 32, 32)])[0] < 1e-4
    with pytest.raises(Exception):  # noqa: B017 - onnxruntime's own error type for a wrong shape
        check_onnx(model, path, [(1, 3, 40, 32)])


def test_torchscript_export_matches_pytorch_on_two_sizes(tmp_path):
    model, path = _model(), tmp_path / "m.pt"
    export_torchscript(model, path, sample_shape=(1, 3, 32, 48))
    assert max(check_torchscript(model, path, [(1, 3, 41, 67), (1, 3, 25, 30)])) < 1e-5


def _randomize_zero_params(model: nn.Module) -> nn.Module:
    """Give the reference's zero-initialised score layers random weights, so outputs are not all 0."""
    torch.manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            if not p.any():
                p.normal_(0, 0.05)
    return model.eval()


def _build(*overrides: str) -> tuple[nn.Module, object]:
    from fcn.config import load_config
    from fcn.models import build_model

    cfg = load_config(overrides=["model.pretrained=false", *overrides])
    torch.manual_seed(0)
    return _randomize_zero_params(build_model(cfg.model)), cfg


@pytest.mark.slow
def test_export_cli_writes_a_checked_onnx_model_of_a_checkpoint(tmp_path, capsys):
    from fcn.config import to_dict
    from fcn.core.checkpoint import save_checkpoint
    from fcn.export import main

    model, cfg = _build("model.arch=fcn8s", "model.backbone=resnet18", "model.geometry=same")
    ckpt, out = tmp_path / "best.pt", tmp_path / "model.onnx"
    save_checkpoint({"model": model.state_dict(), "config": to_dict(cfg)}, ckpt)
    assert (
        main(["--checkpoint", str(ckpt), "--output", str(out), "--size", "48", "64", "--atol", "1e-4"]) == 0
    )
    printed = capsys.readouterr().out
    assert printed.count("max |onnx - pytorch|") == 3
    assert max(check_onnx(model, out, [(1, 3, 45, 71), (1, 3, 70, 33)])) < 1e-4


def test_export_cli_reports_a_missing_checkpoint_in_one_line(tmp_path, capsys):
    from fcn.export import main

    assert main(["--checkpoint", str(tmp_path / "nope.pt"), "--output", str(tmp_path / "m.onnx")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "nope.pt" in err and len(err.splitlines()) == 1


@pytest.mark.slow
def test_paper_geometry_vgg_fcn8s_exports_with_dynamic_crops(tmp_path):
    model, _ = _build("model.arch=fcn8s", "model.backbone=vgg16", "model.geometry=paper")
    # Slim fc6/fc7 (4096 -> 16 channels) to keep the file small; the geometry (pad 100, ceil-mode
    # pools, unpadded 7x7 fc6, the reference's crop offsets) is untouched.
    model.backbone.fc6 = nn.Conv2d(512, 16, 7)
    model.backbone.fc7 = nn.Conv2d(16, 16, 1)
    model.score_fr = nn.Conv2d(16, model.num_classes, 1)
    model.eval()
    path = tmp_path / "paper.onnx"
    export_onnx(model, path, sample_shape=(1, 3, 32, 32))
    diffs = check_onnx(model, path, [(1, 3, 37, 45), (1, 3, 64, 31)])
    assert max(diffs) < 1e-4
    assert model(torch.randn(1, 3, 37, 45)).abs().max() > 1e-3  # the comparison is not of zeros


TINY = [
    "model.arch=fcn32s",
    "model.backbone=mobilenet_v3_large",
    "model.geometry=same",
    "model.upsampling=bilinear",
    "model.pretrained=false",
    "data.classes=[sky,tree,road]",
    "data.palette=[[0,0,255],[0,255,0],[128,128,128]]",
]


@pytest.fixture(scope="module")
def triton_repo(tmp_path_factory) -> dict:
    """A tiny model's checkpoint and the Triton repository `python -m fcn.export --triton` wrote of it."""
    from fcn.config import load_config, to_dict
    from fcn.core.checkpoint import save_checkpoint, weights_checkpoint
    from fcn.export import main
    from fcn.models import build_model

    torch.manual_seed(0)
    cfg = load_config(overrides=TINY)
    model = build_model(cfg.model).eval()
    root = tmp_path_factory.mktemp("triton")
    pt = root / "best.pt"
    save_checkpoint(weights_checkpoint(model=model, config=to_dict(cfg)), pt)
    repo = root / "repository"
    argv = ["--checkpoint", str(pt), "--triton", str(repo), "--model-name", "seg", "--size", "32", "32"]
    assert main([*argv, "--max-batch-size", "4", "--atol", "1e-4"]) == 0
    return {"pt": pt, "repo": repo, "model": model}


def test_triton_repository_config_is_a_model_config_with_the_onnx_models_tensors(triton_repo):
    import onnx
    from google.protobuf import text_format

    model_config_pb2 = pytest.importorskip("tritonclient.grpc.model_config_pb2")
    folder = triton_repo["repo"] / "seg"
    assert sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*")) == [
        "1",
        "1/model.onnx",
        "config.pbtxt",
    ]
    config = text_format.Parse((folder / "config.pbtxt").read_text(), model_config_pb2.ModelConfig())
    assert config.name == "seg" and config.platform == "onnxruntime_onnx"
    assert config.max_batch_size == 4 and config.HasField("dynamic_batching")
    graph = onnx.load(str(folder / "1" / "model.onnx")).graph
    fp32 = model_config_pb2.DataType.Value("TYPE_FP32")
    for got, want in ((config.input, graph.input), (config.output, graph.output)):
        assert [t.name for t in got] == [t.name for t in want]  # 'image' / 'logits', as exported
        for tensor, value in zip(got, want):
            assert tensor.data_type == fp32 and value.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
            dims = [d.dim_value if d.HasField("dim_value") else -1 for d in value.type.tensor_type.shape.dim]
            assert dims[0] == -1 and list(tensor.dims) == dims[1:]  # the batch dimension is Triton's
    assert list(config.input[0].dims) == [3, -1, -1] and list(config.output[0].dims) == [3, -1, -1]
    params = {k: v.string_value for k, v in config.parameters.items()}
    assert json.loads(params["classes"]) == ["sky", "tree", "road"]
    assert json.loads(params["palette"]) == [[0, 0, 255], [0, 255, 0], [128, 128, 128]]
    assert params["task"] == "multiclass"


def test_triton_repositorys_model_onnx_gives_the_segmenters_logits_and_mask(triton_repo):
    import numpy as np
    import onnxruntime as ort

    from fcn import Segmenter

    segmenter = Segmenter.from_checkpoint(triton_repo["pt"], device="cpu")
    image = np.random.default_rng(3).integers(0, 256, (29, 41, 3), dtype=np.uint8)
    _, x = segmenter.prepare(image)  # the pixels as the Segmenter normalises them, (1, 3, H, W)
    session = ort.InferenceSession(
        str(triton_repo["repo"] / "seg" / "1" / "model.onnx"), providers=["CPUExecutionProvider"]
    )
    batch = torch.cat([x, x.flip(-1)])  # a batch of two, as Triton's dynamic batcher stacks requests
    (logits,) = session.run(["logits"], {"image": batch.numpy()})
    with torch.no_grad():
        expected = triton_repo["model"](batch).numpy()
    assert logits.shape == (2, 3, 29, 41)
    assert np.abs(logits - expected).max() < 1e-4
    assert (logits.argmax(1)[0] == segmenter(image)).all()


def test_triton_export_refuses_a_static_model_in_one_line(triton_repo, tmp_path, capsys):
    from fcn.export import main

    with pytest.raises(SystemExit) as exc:
        main(["--checkpoint", str(triton_repo["pt"]), "--triton", str(tmp_path), "--no-dynamic"])
    assert exc.value.code == 2 and "--triton needs --dynamic" in capsys.readouterr().err
