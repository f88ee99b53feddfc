"""ONNX / TorchScript export agrees with PyTorch on inputs of several sizes."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from fcn.export import check_onnx, check_torchscript, export_onnx, export_torchscript

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
