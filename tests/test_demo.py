"""The web demo (demo.py, fcn.demo): its function, its page's HTTP API on 127.0.0.1, the examples,
and the one error line when Gradio is missing."""

from __future__ import annotations

import socket
import sys

import numpy as np
import pytest
from PIL import Image

import demo
from fcn.api import Segmenter
from fcn.demo import analyse, build_app, describe, example_images, serve, shares_html
from tests.test_api import images  # noqa: F401  (the module-scoped image fixture)
from tests.test_evaluate_predict import (
    CLASSES,
    setup,  # noqa: F401  (the module-scoped checkpoint fixture)
)


@pytest.fixture(scope="module")
def seg(setup):  # noqa: F811
    return Segmenter.from_checkpoint(setup[2], device="cpu", use_ema=False)  # the brightness detector


def test_analyse_gives_predicts_overlay_colour_mask_and_shares(seg, images):  # noqa: F811
    picture, colour, shares = analyse(seg, images[0], 0.3)
    mask = seg(images[0])
    assert (mask != 0).any()  # tinted pixels, which the opacity changes
    assert np.array_equal(picture, seg.overlay(images[0], alpha=0.3))
    assert np.array_equal(colour, seg.colorize(mask))
    assert shares == seg.shares(mask)
    again, _, _ = analyse(seg, Image.open(images[0]), 0.9, mask=mask)  # the slider: re-blend only
    assert np.array_equal(again, seg.overlay(images[0], alpha=0.9))
    assert not np.array_equal(again, picture)


def test_shares_html_is_a_legend_with_percentages(seg):
    text = shares_html([(1, "bright", 0.625), (0, "<bg>", 0.375)], seg.palette)
    assert text.index("bright") < text.index("&lt;bg&gt;")  # in the order given, names escaped
    assert "62.5%" in text and "37.5%" in text and "rgb(250,40,40)" in text
    assert "(no image)" in shares_html([], seg.palette)


def test_describe_says_engine_device_and_fast_path(setup):  # noqa: F811
    auto = Segmenter.from_checkpoint(setup[2], device="cpu", fast_path="auto")
    line = describe(auto)
    assert "engine **torch** on **cpu**" in line and "chosen by `--fast-path auto`" in line
    assert f"fast path **{auto.fast_path}**" in line and "best.pt" in line


def test_examples_come_from_images_dir_or_the_validation_split(seg, images, tmp_path):  # noqa: F811
    assert example_images(seg, images[0].parent) == [str(p) for p in sorted(images)]
    val = example_images(seg)  # the fixture's config names its generated validation folder
    assert len(val) == 4 and all(p.endswith(".png") for p in val)
    with pytest.raises(FileNotFoundError, match="no image files"):
        example_images(seg, tmp_path)


def test_demo_without_gradio_is_one_error_line_naming_the_pip_command(setup, monkeypatch, capsys):  # noqa: F811
    monkeypatch.setitem(sys.modules, "gradio", None)  # import gradio raises ImportError
    assert demo.main(["--checkpoint", str(setup[2])]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "pip install -r requirements.demo.txt" in err
    assert len(err.splitlines()) == 1


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_the_pages_http_api_returns_what_analyse_returns(seg, images):  # noqa: F811
    pytest.importorskip("gradio")
    gradio_client = pytest.importorskip("gradio_client")
    app = build_app(seg, examples=[str(p) for p in images])
    url = serve(app, _free_port(), examples=[str(p) for p in images], block=False)
    try:
        assert url.startswith("http://127.0.0.1:")
        client = gradio_client.Client(url, verbose=False)
        for alpha in (0.3, 0.8):  # the second call re-blends the cached mask
            picture, colour, table, status = client.predict(
                gradio_client.handle_file(str(images[1])), alpha, api_name="/analyse"
            )
            expected = analyse(seg, images[1], alpha)
            with Image.open(picture) as p, Image.open(colour) as c:
                assert np.array_equal(np.asarray(p.convert("RGB")), expected[0])
                assert np.array_equal(np.asarray(c.convert("RGB")), expected[1])
            assert all(name in table for _, name, _ in expected[2]) and set(CLASSES) >= {
                name for _, name, _ in expected[2]
            }
            assert "38 x 50 px" in status
        assert "mask cached" in status
    finally:
        app.close()
