"""The web demo (demo.py, fcn.demo): its function, its page's HTTP API on 127.0.0.1, the examples,
where it listens (flags, Gradio's variables; tests bind 127.0.0.1 only) and the one error line when
Gradio is missing or the port is bad."""

from __future__ import annotations

import socket
import sys

import numpy as np
import pytest
from PIL import Image

import demo
from fcn.api import Segmenter
from fcn.demo import (
    analyse,
    build_app,
    describe,
    example_images,
    listen_address,
    serve,
    shares_html,
    start_line,
)
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
    assert f"engine **{auto.engine}** on **cpu**" in line and "chosen by `--fast-path auto`" in line
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


def test_listen_address_takes_the_flags_then_gradios_variables_then_loopback():
    env = {"GRADIO_SERVER_NAME": "0.0.0.0", "GRADIO_SERVER_PORT": "8123"}
    assert listen_address(None, None, {}) == ("127.0.0.1", 7860)
    assert listen_address(None, None, env) == ("0.0.0.0", 8123)
    assert listen_address("127.0.0.1", 9000, env) == ("127.0.0.1", 9000)  # the flags win
    assert listen_address(None, 9000, env) == ("0.0.0.0", 9000)
    with pytest.raises(ValueError, match=r"^GRADIO_SERVER_PORT=http is not a port number"):
        listen_address(None, None, {"GRADIO_SERVER_PORT": "http"})
    with pytest.raises(ValueError, match=r"^--port 70000 is not a port number"):
        listen_address(None, 70000, env)


def test_the_start_line_says_when_other_machines_can_reach_the_page():
    for host in ("127.0.0.1", "127.0.0.2", "::1", "localhost"):
        assert "this machine only" in start_line(host, 7860), host
    line = start_line("0.0.0.0", 8000)
    assert line.startswith("serving on http://0.0.0.0:8000/ (every network interface")
    assert "reachable from other machines" in line
    assert "reachable from other machines" in start_line("192.168.1.20", 8000)
    assert start_line("::", 8000).startswith("serving on http://[::]:8000/")


def _fake_serve(calls: list):
    def fake(app, port, examples=(), block=True, host="127.0.0.1"):  # binds nothing
        calls.append((host, port))

    return fake


def test_demo_py_listens_where_gradios_variables_say_and_its_flags_win(setup, monkeypatch, capsys):  # noqa: F811
    pytest.importorskip("gradio")
    import fcn.demo

    calls = []
    monkeypatch.setattr(fcn.demo, "serve", _fake_serve(calls))
    monkeypatch.setenv("GRADIO_SERVER_NAME", "0.0.0.0")
    monkeypatch.setenv("GRADIO_SERVER_PORT", "8123")
    assert demo.main(["--checkpoint", str(setup[2]), "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "serving on http://0.0.0.0:8123/" in out and "reachable from other machines" in out
    assert (
        demo.main(["--checkpoint", str(setup[2]), "--device", "cpu", "--host", "127.0.0.1", "--port", "9001"])
        == 0
    )
    assert calls == [("0.0.0.0", 8123), ("127.0.0.1", 9001)]
    assert "serving on http://127.0.0.1:9001/ (this machine only" in capsys.readouterr().out


def test_a_bad_port_is_one_error_line_before_the_checkpoint_is_read(monkeypatch, capsys, tmp_path):
    monkeypatch.setenv("GRADIO_SERVER_PORT", "seventy")
    assert demo.main(["--checkpoint", str(tmp_path / "missing.pt")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "error: GRADIO_SERVER_PORT=seventy is not a port number (1..65535)"


def test_demo_py_serves_on_the_port_gradio_server_port_names(setup, monkeypatch, capsys):  # noqa: F811
    pytest.importorskip("gradio")
    import urllib.request

    import fcn.demo

    real_serve, pages = fcn.demo.serve, []

    def serve_then_fetch(app, port, examples=(), block=True, host="127.0.0.1"):
        assert host == "127.0.0.1"  # tests never listen beyond this machine
        url = real_serve(app, port, examples, block=False, host=host)
        try:
            with urllib.request.urlopen(url, timeout=30) as response:
                pages.append((url, response.status, response.read()))
        finally:
            app.close()

    monkeypatch.setattr(fcn.demo, "serve", serve_then_fetch)
    monkeypatch.delenv("GRADIO_SERVER_NAME", raising=False)
    port = _free_port()
    monkeypatch.setenv("GRADIO_SERVER_PORT", str(port))
    assert demo.main(["--checkpoint", str(setup[2]), "--device", "cpu"]) == 0
    assert f"serving on http://127.0.0.1:{port}/ (this machine only" in capsys.readouterr().out
    [(url, status, body)] = pages
    assert url == f"http://127.0.0.1:{port}/" and status == 200 and b"pytorch-fcn" in body
