"""The memory budget of one image (eval.max_memory, fcn.inference.budget): the estimates, the switch
to sliding windows said in one line with the labels at the input's size, the refusal of an image
that does not fit even window by window (one error line naming file, size and key; the others done),
and the budget on CUDA."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

import predict
from fcn import Segmenter
from fcn.config import ConfigError, load_config
from fcn.inference.budget import (
    ACTIVATION_BYTES,
    AUTO_CPU_GB,
    GB,
    MemoryBudgetError,
    budget_bytes,
    plan,
    slide_bytes,
    whole_bytes,
)


def _cfg(*overrides: str):
    base = ["model.backbone=resnet18", "model.geometry=same", "model.pretrained=false"]
    return load_config(overrides=[*base, *overrides])


def _photo(width: int, height: int, seed: int = 0) -> Image.Image:
    """A smooth picture with bright and dark regions (the fixture's model thresholds brightness)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    wave = 127 + 120 * np.sin(xx / rng.uniform(7, 13)) * np.cos(yy / rng.uniform(5, 11))
    return Image.fromarray(np.repeat(wave[:, :, None], 3, axis=2).astype(np.uint8))


def test_whole_estimate_grows_with_pixels_classes_and_the_papers_padding():
    small, large = whole_bytes(_cfg(), 750, 1000), whole_bytes(_cfg(), 3000, 4000)
    assert 12 < large / small < 16  # linear in the pixels, plus a fixed overhead
    forty = _cfg("model.num_classes=40", "data.classes=[" + ",".join(f"c{i}" for i in range(40)) + "]")
    assert whole_bytes(forty, 750, 1000) > small
    paper, same = (_cfg("model.backbone=vgg16", f"model.geometry={g}") for g in ("paper", "same"))
    assert whole_bytes(paper, 1000, 1000) > 1.3 * whole_bytes(same, 1000, 1000)  # 1200 x 1200 seen
    # a backbone that was not measured is given the largest measured cost per pixel
    unmeasured = _cfg("model.backbone=mobilenet_v3_large")
    assert whole_bytes(unmeasured, 750, 1000) == whole_bytes(same, 750, 1000)
    assert max(ACTIVATION_BYTES.values()) == ACTIVATION_BYTES["vgg16"]


def test_sliding_estimate_is_bounded_by_the_tile_and_a_band_of_rows():
    cfg = _cfg()
    whole = whole_bytes(cfg, 4000, 6000)
    slide = slide_bytes(cfg, 4000, 6000, 4)
    assert slide < whole / 3
    # what grows with the image is the input and the labels (20 bytes a pixel) and the band's width
    assert slide_bytes(cfg, 8000, 6000, 4) - slide == pytest.approx(20 * 4000 * 6000)
    assert slide_bytes(cfg, 4000, 6000, 1) < slide
    # test-time augmentation holds the averaged probabilities at the image's size
    assert slide_bytes(_cfg("eval.flip=true"), 4000, 6000, 4) > slide + 3 * 4 * 21 * 4000 * 6000


def test_an_image_over_the_budget_slides_said_in_one_line():
    cfg = _cfg("eval.max_memory=1.5")
    window, line = plan(cfg, 300, 400, "cpu")
    assert window == {"mode": "whole", "tile": 512, "stride": 341, "window_batch": 4} and line is None
    window, line = plan(cfg, 4000, 6000, "cpu")
    assert window["mode"] == "slide" and window["tile"] == 512 and window["stride"] == 341
    assert (
        "6000 x 4000 px" in line and "eval.max_memory=1.5 (1.5 GB here)" in line and "sliding windows" in line
    )
    none, line = plan(_cfg("eval.max_memory=none"), 4000, 6000, "cpu")
    assert none["mode"] == "whole" and line is None  # no limit: eval.mode as set


def test_fewer_windows_per_forward_when_that_is_what_fits():
    cfg = _cfg("eval.mode=slide", "eval.window_batch=64")
    need_one = slide_bytes(cfg, 1000, 1000, 1)
    assert slide_bytes(cfg, 1000, 1000, 64) > need_one * 2
    budget_gb = 1.1 * need_one / GB
    window, line = plan(
        _cfg("eval.mode=slide", "eval.window_batch=64", f"eval.max_memory={budget_gb}"), 1000, 1000, "cpu"
    )
    assert window["mode"] == "slide" and window["window_batch"] == 1 and "1 window per forward" in line


def test_an_image_that_does_not_fit_even_one_window_is_refused_naming_size_and_key():
    with pytest.raises(
        MemoryBudgetError, match=r"6000 x 4000 px needs about .* even one 512 px window"
    ) as info:
        plan(_cfg("eval.max_memory=0.1"), 4000, 6000, "cpu")
    assert "raise eval.max_memory" in str(info.value) and "eval.tile" in str(info.value)
    assert isinstance(info.value, ValueError)


def test_the_budget_is_2_gb_on_the_cpu_and_the_free_memory_on_cuda(monkeypatch):
    assert budget_bytes("auto", "cpu") == AUTO_CPU_GB * GB == 2 * GB
    assert budget_bytes("3.5", "cpu") == 3.5 * GB and budget_bytes("none", "cpu") is None
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (10 * GB, 80 * GB))
    assert budget_bytes("auto", "cuda") == pytest.approx(9 * GB)
    assert budget_bytes("4", "cuda") == 4 * GB and budget_bytes("40", "cuda") == pytest.approx(9 * GB)


@pytest.mark.parametrize("value", ["0", "-2", "lots", "inf"])
def test_a_bad_max_memory_is_a_config_error_naming_the_key(value):
    with pytest.raises(
        ConfigError, match=f"eval.max_memory='{value}' must be auto, none or a positive number"
    ):
        _cfg(f"eval.max_memory={value}")


def test_segmenter_slides_an_image_over_the_budget_to_full_size_labels_said_once(setup):
    _, _, ckpt = setup
    photo = _photo(240, 180)
    window = dict(tile=64, stride=48, device="cpu", use_ema=False)
    whole = Segmenter.from_checkpoint(ckpt, **window, overrides=["eval.max_memory=none"])
    slide = Segmenter.from_checkpoint(ckpt, **window, mode="slide", overrides=["eval.max_memory=none"])
    between = (whole_bytes(whole.cfg, 180, 240) + slide_bytes(whole.cfg, 180, 240, 4)) / 2 / GB
    budget = Segmenter.from_checkpoint(ckpt, **window, overrides=[f"eval.max_memory={between}"])
    lines: list[str] = []
    budget.log = lines.append
    mask = budget(photo)
    assert mask.shape == (180, 240) and mask.dtype == np.uint8
    assert np.array_equal(mask, slide(photo))  # the configured tile and stride, as eval.mode=slide
    assert len(lines) == 1 and "240 x 180 px" in lines[0] and "sliding windows" in lines[0]
    budget(photo)
    assert len(lines) == 1  # once per size, not once per frame of a video
    assert np.array_equal(budget(_photo(32, 24)), whole(_photo(32, 24)))  # a small one: whole, no line
    assert len(lines) == 1
    assert (mask != whole(photo)).mean() < 0.05  # the seams


def test_predict_names_the_image_too_large_for_the_budget_and_writes_the_others(setup, tmp_path, capsys):
    _, _, ckpt = setup
    inputs = tmp_path / "in"
    inputs.mkdir()
    _photo(48, 32).save(inputs / "a_small.png")
    _photo(600, 400).save(inputs / "b_large.jpg", quality=90)
    _photo(40, 30, seed=1).save(inputs / "c_small.png")
    out = tmp_path / "out"
    args = ["--checkpoint", str(ckpt), "--input", str(inputs), "--output", str(out), "--no-progress"]
    cfg = Segmenter.from_checkpoint(ckpt, device="cpu").cfg
    budget = (whole_bytes(cfg, 32, 48) + slide_bytes(cfg, 400, 600, 1)) / 2 / GB
    assert whole_bytes(cfg, 30, 40) < budget * GB  # the small ones fit, the large one does not
    code = predict.main([*args, "--device", "cpu", f"eval.max_memory={budget}"])
    err = capsys.readouterr().err
    assert code == 1
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 2 and "Traceback" not in err  # the file's line, then the summary
    assert "b_large.jpg" in errors[0] and "600 x 400 px" in errors[0] and "eval.max_memory" in errors[0]
    for stem, size in (("a_small", (48, 32)), ("c_small", (40, 30))):
        with Image.open(out / f"{stem}.png") as index:
            assert index.size == size
    assert not any(p.name.startswith("b_large") for p in out.iterdir())


def test_int8_calibrates_on_the_window_of_an_image_that_slides(setup, monkeypatch):
    import fcn.inference.fastpath

    _, _, ckpt = setup
    seen = []
    monkeypatch.setattr(
        fcn.inference.fastpath,
        "prepare_fast_path",
        lambda model, cfg, images: seen.extend(x.shape for x in images),
    )
    seg = Segmenter.from_checkpoint(
        ckpt, device="cpu", tile=64, stride=48, overrides=["eval.max_memory=none"]
    )
    between = (whole_bytes(seg.cfg, 180, 240) + slide_bytes(seg.cfg, 180, 240, 4)) / 2 / GB
    seg = Segmenter.from_checkpoint(
        ckpt, device="cpu", tile=64, stride=48, overrides=[f"eval.max_memory={between}"]
    )
    seg.calibrate([_photo(240, 180), _photo(40, 30)])
    assert [tuple(s) for s in seen] == [(1, 3, 64, 64), (1, 3, 30, 40)]  # the window; the small one whole
