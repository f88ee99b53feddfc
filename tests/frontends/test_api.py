"""fcn.Segmenter, the Python API: the same pixels as predict.py, from a path, a PIL image or an
array; probabilities, overlays, the example of docs/api.md, and a cheap ``import fcn``."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import predict
from fcn import Segmenter
from tests.helpers import CLASSES, PALETTE, _known_labels, _read_png

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
@pytest.mark.parametrize("flip", [False, True])
def test_seg_equals_predict_index_png_bit_for_bit(setup, images, tmp_path, flip):
    # from a path (str or Path), a PIL image and arrays (RGBA and RGB): the same pixels as predict.py
    _, _, ckpt = setup
    out = tmp_path / "out"
    args = ["--checkpoint", str(ckpt), "--input", *map(str, images), "--output", str(out), "--device", "cpu"]
    assert predict.main([*args, "--no-progress", *(["--flip"] if flip else [])]) == 0
    seg = Segmenter.from_checkpoint(ckpt, device="cpu", flip=flip)
    for path in images:
        written = _read_png(out / f"{path.stem}.png")
        with Image.open(path) as pil:
            pil.load()
        for given in (path, str(path), pil, np.asarray(pil), np.asarray(pil.convert("RGB"))):
            mask = seg(given)
            assert mask.dtype == np.uint8 and mask.shape == written.shape
            assert np.array_equal(mask, written), type(given)
        assert np.array_equal(seg.overlay(path), _read_png(out / f"{path.stem}_overlay.png"))
        assert np.array_equal(seg.colorize(written), _read_png(out / f"{path.stem}_color.png"))
    assert set(np.unique(written)) <= {0, 1, 2}


def test_segmenter_predicts_the_known_labels_and_takes_a_list(setup, images):
    _, _, ckpt = setup
    seg = Segmenter.from_checkpoint(ckpt, device="cpu", use_ema=False)  # the weights set to detect brightness
    masks = seg([np.asarray(Image.open(p).convert("RGB")) for p in images])
    assert isinstance(masks, list) and len(masks) == 2
    for path, mask in zip(images, masks):
        known = _known_labels(np.asarray(Image.open(path).convert("RGB")))
        assert (known != 255).mean() > 0.1  # the check covers a good part of the image
        assert np.array_equal(mask[known != 255], known[known != 255])


def test_prepare_then_segment_is_seg_and_an_image_over_the_budget_waits_for_segment(setup, images):
    from fcn.inference.budget import MemoryBudgetError

    _, _, ckpt = setup
    seg = Segmenter.from_checkpoint(ckpt, device="cpu")
    for path in images:
        picture, x = seg.prepare(path)
        assert x is not None and tuple(x.shape) == (1, 3, picture.height, picture.width)
        assert np.array_equal(seg.segment(picture, x), seg(path))
    tiny = Segmenter.from_checkpoint(ckpt, device="cpu", overrides=["eval.max_memory=0.000001"])
    picture, x = tiny.prepare(images[0])
    assert x is None
    with pytest.raises(MemoryBudgetError):
        tiny.segment(picture, x)


def test_probabilities_are_a_softmax_whose_argmax_is_the_mask(setup, images):
    _, _, ckpt = setup
    seg = Segmenter.from_checkpoint(ckpt, device="cpu", scales=[0.75, 1.0])
    probs = seg.probabilities(images[0])
    mask = seg(images[0])
    assert probs.dtype == np.float32 and probs.shape == (len(CLASSES), *mask.shape)
    assert np.allclose(probs.sum(0), 1.0, atol=1e-5)
    top2 = np.sort(probs, axis=0)[-2:]
    clear = top2[1] - top2[0] > 1e-5  # where float rounding cannot swap the two best classes
    assert clear.mean() > 0.9
    assert np.array_equal(probs.argmax(0)[clear], mask[clear])


def test_classes_palette_shares_and_repr(setup, images):
    _, _, ckpt = setup
    seg = Segmenter.from_checkpoint(ckpt, device="cpu", fast_path="none", mode="slide", tile=32, stride=24)
    assert seg.classes == CLASSES and seg.num_classes == 3
    assert seg.palette.shape == (256, 3) and seg.palette.dtype == np.uint8
    assert seg.palette[: len(PALETTE)].tolist() == PALETTE
    mask = seg(images[0])
    shares = seg.shares(mask)
    assert abs(sum(s for _, _, s in shares) - 1.0) < 1e-9
    assert [s for _, _, s in shares] == sorted((s for _, _, s in shares), reverse=True)
    assert {(label, name) for label, name, _ in shares} <= set(enumerate(CLASSES))
    text = repr(seg)
    assert text.startswith("Segmenter(fcn8s resnet18, 3 classes, engine=torch, device=cpu, fast_path=fp32")
    assert "mode=slide" in text


def test_onnxruntime_engine_gives_the_torch_mask(setup, images):
    pytest.importorskip("onnxruntime")
    _, _, ckpt = setup
    torch_seg = Segmenter.from_checkpoint(ckpt, device="cpu")
    ort_seg = Segmenter.from_checkpoint(ckpt, device="cpu", engine="onnxruntime")
    assert ort_seg.engine == "onnxruntime" and "engine=onnxruntime" in repr(ort_seg)
    for path in images:
        a, b = torch_seg(path), ort_seg(path)
        assert a.shape == b.shape and (a == b).mean() >= 0.9999


def test_unknown_engine_and_bad_inputs_are_value_errors(setup):
    _, _, ckpt = setup
    with pytest.raises(ValueError, match="engine 'tensorrt' is not one of torch, onnxruntime, openvino"):
        Segmenter.from_checkpoint(ckpt, device="cpu", engine="tensorrt")
    with pytest.raises(ValueError, match="eval.mode"):
        Segmenter.from_checkpoint(ckpt, device="cpu", mode="tiles")
    seg = Segmenter.from_checkpoint(ckpt, device="cpu")
    with pytest.raises(ValueError, match="must be uint8"):
        seg(np.zeros((8, 8, 3), np.float32))
    with pytest.raises(ValueError, match="C = 1, 3 or 4"):
        seg(np.zeros((8, 8, 2), np.uint8))
    with pytest.raises(FileNotFoundError, match="missing.png"):
        seg("missing.png")


def _docs_example() -> str:
    """Return the Python block of docs/api.md that follows its '<!-- tested: tests/frontends/test_api.py -->' mark."""
    text = (ROOT / "docs" / "api.md").read_text(encoding="utf-8")
    found = re.search(r"<!-- tested: tests/frontends/test_api.py -->\s*```python\n(.*?)```", text, re.S)
    assert found, "docs/api.md lost its tested example"
    return found.group(1)


def test_the_five_line_example_of_docs_api_md_runs(setup, images, tmp_path, monkeypatch):
    _, _, ckpt = setup
    code = _docs_example()
    assert len([line for line in code.splitlines() if line.strip()]) <= 5
    assert "runs/toy/checkpoints/best.pt" in code and "data/toy/JPEGImages/val_00000.jpg" in code
    code = code.replace("runs/toy/checkpoints/best.pt", str(ckpt))
    code = code.replace("data/toy/JPEGImages/val_00000.jpg", str(images[0]))
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(code, "docs/api.md", "exec"), namespace)
    assert np.array_equal(namespace["mask"], Segmenter.from_checkpoint(ckpt, device="cpu")(images[0]))
    with Image.open(tmp_path / "overlay.png") as written:
        assert written.size == (57, 41) and written.mode == "RGB"


def test_import_fcn_does_not_import_torch_until_segmenter_is_used():
    code = (
        "import sys, fcn; assert 'torch' not in sys.modules, 'import fcn pulled torch';"
        "from fcn import Segmenter; assert 'torch' in sys.modules and Segmenter.__module__ == 'fcn.api'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)
