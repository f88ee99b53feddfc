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
from fcn.api import Segmenter, as_rgb
from fcn.demo import (
    analyse,
    build_app,
    describe,
    example_images,
    listen_address,
    open_image,
    serve,
    shares_html,
    start_line,
)
from fcn.inference.budget import MemoryBudgetError
from tests.test_api import images  # noqa: F401  (the module-scoped image fixture)
from tests.test_evaluate_predict import (
    CLASSES,
    setup,  # noqa: F401  (the module-scoped checkpoint fixture)
)
from tests.test_sigmoid import binary_setup  # noqa: F401  (a binary checkpoint, module-scoped)


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


def _jpeg(path, width: int, height: int, orientation: int = 1):
    """Write a smooth width x height JPEG (EXIF orientation as given) and return its path."""
    yy, xx = np.mgrid[0:height, 0:width]
    pixels = np.stack([xx * 255 // max(1, width - 1), yy * 255 // max(1, height - 1), (xx + yy) % 256], -1)
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(pixels.astype(np.uint8)).save(path, quality=92, exif=exif)
    return path


def test_a_large_upload_is_decoded_small_and_said_a_small_one_is_read_as_predict_reads_it(tmp_path):
    big = _jpeg(tmp_path / "big.jpg", 1200, 800)
    rgb, line = open_image(big, max_pixels=60_000)
    assert rgb.mode == "RGB" and rgb.width * rgb.height <= 60_000 and rgb.width * rgb.height > 50_000
    assert abs(rgb.width / rgb.height - 1.5) < 0.02
    assert (
        line
        == f"1200 x 800 px, segmented and shown at {rgb.width} x {rgb.height} px (at most 60,000 pixels: --max-pixels)"
    )
    # the downscaled picture is the photo's, not a crop: it matches the full decode resized
    full = np.asarray(
        Image.open(big).convert("RGB").resize(rgb.size, Image.Resampling.BILINEAR), dtype=np.int16
    )
    assert np.abs(np.asarray(rgb, dtype=np.int16) - full).mean() < 4
    small, line = open_image(big, max_pixels=None)
    assert np.array_equal(np.asarray(small), np.asarray(as_rgb(big))) and line == "1200 x 800 px"
    # a phone's portrait photo: stored 1200 x 800 with a quarter turn in its EXIF, shown upright
    turned = _jpeg(tmp_path / "turned.jpg", 1200, 800, orientation=6)
    rgb, line = open_image(turned, max_pixels=60_000)
    assert rgb.height > rgb.width and line.startswith("800 x 1200 px, segmented and shown at")
    array, line = open_image(np.zeros((300, 400, 3), np.uint8), max_pixels=30_000)
    assert array.size == (200, 150) and line.startswith("400 x 300 px, segmented")


def test_an_image_beyond_pillows_bomb_limit_or_unreadable_is_refused_with_a_message(tmp_path, monkeypatch):
    big = _jpeg(tmp_path / "big.jpg", 600, 400)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 200_000)
    with pytest.raises(
        ValueError, match=r"600 x 400 px \(0.2 megapixels\) is more than this page takes \(0.2"
    ):
        open_image(big)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100_000)  # Pillow refuses it itself at twice its limit
    with pytest.raises(ValueError, match=r"this image is more than this page takes"):
        open_image(big)
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8 not a jpeg")
    with pytest.raises(ValueError, match="cannot read"):
        open_image(broken)


def test_the_page_bounds_its_queue_and_uploads(seg):
    pytest.importorskip("gradio")
    app = build_app(seg, max_pixels=1000, max_file_mb=2, queue_size=3, concurrency=1)
    assert app._queue.max_size == 3 and app._queue.default_concurrency_limit == 1  # no public getter
    assert app.fcn_max_file_size == 2 * 2**20


def test_the_page_downscales_a_large_upload_says_so_and_survives_a_broken_one(seg, tmp_path, monkeypatch):
    pytest.importorskip("gradio")
    gradio_client = pytest.importorskip("gradio_client")
    app = build_app(seg, max_pixels=20_000, max_file_mb=1)
    url = serve(app, _free_port(), block=False)
    try:
        client = gradio_client.Client(url, verbose=False)
        big = _jpeg(tmp_path / "big.jpg", 600, 400)
        picture, colour, _, status = client.predict(
            gradio_client.handle_file(str(big)), 0.5, api_name="/analyse"
        )
        expected, line = open_image(big, 20_000)
        assert status.startswith(line) and "segmented and shown at" in status
        with Image.open(picture) as p, Image.open(colour) as c:
            assert p.size == c.size == expected.size
            assert np.array_equal(np.asarray(c.convert("RGB")), seg.colorize(seg(expected)))
        broken = tmp_path / "broken.png"
        broken.write_bytes(b"\x89PNG not really")
        with pytest.raises(gradio_client.exceptions.AppError):  # Gradio's image check opens it first
            client.predict(gradio_client.handle_file(str(broken)), 0.5, api_name="/analyse")
        huge = tmp_path / "huge.png"  # over the 1 MB upload limit: refused before it is stored
        Image.fromarray(np.random.default_rng(0).integers(0, 256, (800, 800, 3), dtype=np.uint8)).save(huge)
        assert huge.stat().st_size > 2**20
        with pytest.raises(ValueError, match="exceeds the maximum file size of 1048576 bytes"):
            client.predict(gradio_client.handle_file(str(huge)), 0.5, api_name="/analyse")

        def too_large(image):
            raise MemoryBudgetError("40 x 30 px needs about 9 GB even one 512 px window at a time")

        small = _jpeg(tmp_path / "small.jpg", 40, 30)
        with monkeypatch.context() as m:  # a failure while segmenting: its message reaches the visitor
            m.setattr(seg, "segment", too_large)
            with pytest.raises(gradio_client.exceptions.AppError, match="needs about 9 GB"):
                client.predict(gradio_client.handle_file(str(small)), 0.5, api_name="/analyse")
        # the page is still up and answers
        _, _, _, status = client.predict(gradio_client.handle_file(str(small)), 0.5, api_name="/analyse")
        assert status.startswith("40 x 30 px · ")
    finally:
        app.close()


def test_the_page_shows_a_binary_models_overlay_mask_and_share(binary_setup):  # noqa: F811
    """A binary checkpoint (tests/test_sigmoid.py's brightness logit) on the page: the overlay and the
    colour mask in its two palette colours, the foreground's share in the legend."""
    root, ckpt, _, _ = binary_setup
    seg = Segmenter.from_checkpoint(ckpt, device="cpu")
    image = root / "images" / "im0.png"
    picture, colour, shares = analyse(seg, image, 0.5)
    mask = seg(image)
    assert picture.shape == colour.shape == (*mask.shape, 3)
    assert (colour[mask] == seg.palette[1]).all() and (colour[~mask] == seg.palette[0]).all()
    assert shares == [(1, "bright", pytest.approx(mask.mean()))]
    assert "bright" in shares_html(shares, seg.palette)
