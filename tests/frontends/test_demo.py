"""The web demo (demo.py, fcn.demo): its function, its page's HTTP API on 127.0.0.1, the examples,
where it listens (flags, Gradio's variables; tests bind 127.0.0.1 only), the one error line when
Gradio is missing or the port is bad, and what a public page must hold to: only its example files
served, uploads read by the image decoders only and sized from their headers, the page's own eval
settings, one calibration at a time, uploads deleted."""

from __future__ import annotations

import socket
import struct
import sys
import threading
import time
import urllib.error
import urllib.request
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import EpsImagePlugin, Image, ImageFile

import demo
from fcn.api import Segmenter, as_rgb
from fcn.core.checkpoint import load_checkpoint, save_checkpoint
from fcn.demo import (
    DELETE_CACHE,
    PAGE_FORMATS,
    analyse,
    build_app,
    describe,
    example_images,
    listen_address,
    load_segmenter,
    open_image,
    serve,
    shares_html,
    start_line,
)
from fcn.inference.budget import MemoryBudgetError
from tests.helpers import CLASSES


@pytest.fixture(scope="module")
def seg(setup):
    return Segmenter.from_checkpoint(setup[2], device="cpu", use_ema=False)  # the brightness detector


def test_analyse_gives_predicts_overlay_colour_mask_and_shares(seg, images):
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


def test_describe_says_engine_device_and_fast_path(setup):
    auto = Segmenter.from_checkpoint(setup[2], device="cpu", fast_path="auto")
    line = describe(auto)
    assert f"engine **{auto.engine}** on **cpu**" in line and "chosen by `--fast-path auto`" in line
    assert f"fast path **{auto.fast_path}**" in line and "best.pt" in line


def test_examples_come_from_images_dir_or_the_validation_split(seg, images, tmp_path):
    assert example_images(seg, images[0].parent) == [str(p) for p in sorted(images)]
    val = example_images(seg)  # the fixture's config names its generated validation folder
    assert len(val) == 4 and all(p.endswith(".png") for p in val)
    with pytest.raises(FileNotFoundError, match="no image files"):
        example_images(seg, tmp_path)


def test_demo_without_gradio_is_one_error_line_naming_the_pip_command(setup, monkeypatch, capsys):
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
def test_the_pages_http_api_returns_what_analyse_returns(seg, images):
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


def test_demo_py_listens_where_gradios_variables_say_and_its_flags_win(setup, monkeypatch, capsys):
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


def test_demo_py_serves_on_the_port_gradio_server_port_names(setup, monkeypatch, capsys):
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
        with pytest.raises(gradio_client.exceptions.AppError, match="cannot read this file"):
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


def test_the_page_shows_a_binary_models_overlay_mask_and_share(binary_setup):
    """A binary checkpoint (tests/training/test_sigmoid.py's brightness logit) on the page: the overlay and the
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


def _get(url: str) -> tuple[int, bytes]:
    """Return (HTTP status, body) of a GET on the page (an error status too)."""
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, b""


def test_the_page_serves_its_example_images_and_no_other_file_of_their_folder(seg, images, tmp_path):
    pytest.importorskip("gradio")
    folder = tmp_path / "photos"
    folder.mkdir()
    for p in images[:2]:
        (folder / p.name).write_bytes(p.read_bytes())
    (folder / ".env").write_text("HF_TOKEN=hf_secret\n")
    (folder / "best.pt").write_bytes(b"weights")
    examples = example_images(seg, folder)
    assert [p.rsplit("/", 1)[-1] for p in examples] == [p.name for p in images[:2]]
    app = build_app(seg, examples)
    url = serve(app, _free_port(), examples, block=False)
    try:
        status, body = _get(f"{url}gradio_api/file={examples[0]}")
        assert status == 200 and body == (folder / images[0].name).read_bytes()
        for name in (".env", "best.pt"):
            assert _get(f"{url}gradio_api/file={folder / name}")[0] == 403, name
    finally:
        app.close()


def _png16(path, width: int, height: int):
    """Write a width x height 16-bit grey PNG of zeros with zlib, a row at a time (no image in memory:
    9000 x 9000 is 160 KB) and return its path."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    z, row = zlib.compressobj(9), bytes(1 + 2 * width)  # filter byte 0, then the row's 16-bit zeros
    data = b"".join(z.compress(row) for _ in range(height)) + z.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 16, 0, 0, 0, 0)  # depth 16, colour type 0: grey
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", data) + chunk(b"IEND", b""))
    return path


@pytest.fixture(scope="module")
def bomb(tmp_path_factory):
    """A 9000 x 9000 16-bit PNG: 160 KB on the wire, 81 megapixels (under Pillow's bomb limit)."""
    return _png16(tmp_path_factory.mktemp("bomb") / "bomb.png", 9000, 9000)


def _fails(what: str):
    """Return a function that raises AssertionError(what): an Exception, so that in the page's server
    thread it is an error answer, not a hang (pytest.fail's is a BaseException)."""

    def fail(*args, **kwargs):
        raise AssertionError(what)

    return fail


def _no_decoding(monkeypatch):
    """Make any decoding of pixels (load, convert) fail the test."""
    decoded = _fails("the image was decoded")
    for cls in (Image.Image, ImageFile.ImageFile):
        monkeypatch.setattr(cls, "load", decoded)
    monkeypatch.setattr(Image.Image, "convert", decoded)


def test_a_png_too_large_to_decode_is_refused_from_its_header(bomb, tmp_path, monkeypatch):
    assert bomb.stat().st_size < 300_000 and Image.MAX_IMAGE_PIXELS > 9000 * 9000
    small16 = tmp_path / "small16.png"  # a 16-bit PNG within the bound: read as predict.py reads it
    Image.fromarray((np.arange(200 * 300).reshape(200, 300) * 1000 % 65536).astype(np.uint16)).save(small16)
    rgb, line = open_image(small16, max_pixels=None)
    assert np.array_equal(np.asarray(rgb), np.asarray(as_rgb(small16))) and line == "300 x 200 px"
    with pytest.raises(ValueError, match=r"^300 x 200 px \(0.1 megapixels\) is more than this page decodes"):
        open_image(small16, max_pixels=5000)  # 8 x 5000 pixels at most: a PNG has no reduced scale
    with monkeypatch.context() as m:
        _no_decoding(m)
        with pytest.raises(
            ValueError,
            match=r"^9000 x 9000 px \(81.0 megapixels\) is more than this page decodes \(16.0 megapixels; "
            "a JPEG would be decoded at a reduced scale\\)$",
        ):
            open_image(bomb)  # the default --max-pixels: 2,000,000, so 16 megapixels decoded at most


def test_an_eps_upload_is_refused_and_pillows_eps_plugin_never_runs(tmp_path, monkeypatch):
    Image.init()  # every plugin registered, as Gradio's import does
    eps = tmp_path / "figure.eps"
    eps.write_text("%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n%%EndComments\nshowpage\n%%EOF\n")
    Image.open(eps).close()  # Pillow alone opens it (and load() would run Ghostscript)
    touched = []

    def accept(prefix):
        touched.append("accept")
        return True

    monkeypatch.setitem(Image.OPEN, "EPS", (Image.OPEN["EPS"][0], accept))
    monkeypatch.setattr(EpsImagePlugin.EpsImageFile, "_open", _fails("the EPS plugin ran"))
    with pytest.raises(
        ValueError, match=r"^cannot read this file: it is not a JPEG, PNG, WEBP, BMP, GIF, TIFF"
    ):
        open_image(eps)
    assert touched == []


def test_the_pages_formats_are_those_of_the_images_predict_reads():
    from fcn.files import IMAGE_SUFFIXES

    Image.init()
    formats = {Image.registered_extensions()[s] for s in IMAGE_SUFFIXES if s != ".npy"}
    assert formats == set(PAGE_FORMATS)


def test_the_page_refuses_an_eps_and_a_png_bomb_with_its_message_decoding_neither(
    seg, bomb, tmp_path, monkeypatch
):
    pytest.importorskip("gradio")
    gradio_client = pytest.importorskip("gradio_client")
    eps = tmp_path / "figure.eps"
    eps.write_text("%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n%%EndComments\nshowpage\n%%EOF\n")
    app = build_app(seg)
    url = serve(app, _free_port(), block=False)
    try:
        client = gradio_client.Client(url, verbose=False)
        monkeypatch.setattr(EpsImagePlugin.EpsImageFile, "_open", _fails("the EPS plugin ran"))
        with pytest.raises(gradio_client.exceptions.AppError, match="it is not a JPEG, PNG"):
            client.predict(gradio_client.handle_file(str(eps)), 0.5, api_name="/analyse")
        _no_decoding(monkeypatch)  # the server runs in this process: neither Gradio nor the page decodes it
        with pytest.raises(
            gradio_client.exceptions.AppError, match=r"9000 x 9000 px .* more than this page decodes"
        ):
            client.predict(gradio_client.handle_file(str(bomb)), 0.5, api_name="/analyse")
    finally:
        app.close()


def _with_eval(checkpoint, path, **keys):
    """Write checkpoint's copy at path with its config's eval.* keys replaced and return path."""
    state = load_checkpoint(checkpoint)
    state["config"]["eval"].update(keys)
    save_checkpoint(state, path)
    return path


def test_a_checkpoints_eval_settings_give_way_to_the_pages(setup, tmp_path, monkeypatch):
    pytest.importorskip("gradio")
    import fcn.demo

    shared = _with_eval(
        setup[2],
        tmp_path / "shared.pt",
        scales=[0.5, 1.0, 2.0],
        flip=True,
        max_memory="none",
        mode="slide",
        stride=1,
    )
    assert Segmenter.from_checkpoint(shared, device="cpu").cfg.eval.max_memory == "none"
    apps = []
    monkeypatch.setattr(fcn.demo, "serve", lambda app, *args, **kwargs: apps.append(app))
    assert demo.main(["--checkpoint", str(shared), "--device", "cpu"]) == 0
    e = apps[0].fcn_segmenter.cfg.eval
    assert (list(e.scales), e.flip, e.max_memory, e.mode, e.tile, e.stride) == (
        [1.0],
        False,
        "auto",
        "whole",
        512,
        341,
    )
    assert "scales 1; whole image" in describe(apps[0].fcn_segmenter)
    # the operator's own flags and overrides still choose, after the page's settings
    assert demo.main(["--checkpoint", str(shared), "--device", "cpu", "--flip", "eval.max_memory=4"]) == 0
    e = apps[1].fcn_segmenter.cfg.eval
    assert (e.flip, list(e.scales), str(e.max_memory)) == (True, [1.0], "4")


def test_the_first_segmentation_calibrates_alone_while_a_second_request_waits(setup, images, monkeypatch):
    pytest.importorskip("gradio")
    fresh = load_segmenter(setup[2], "cpu")  # not yet calibrated: its first image calibrates it
    app = build_app(fresh, concurrency=2)
    real, active, most, calls, count = fresh.calibrate, [0], [0], [], threading.Lock()

    def slow(batch):
        with count:
            active[0] += 1
            most[0] = max(most[0], active[0])
        time.sleep(0.3)  # long enough for the other request to arrive meanwhile
        real(batch)
        calls.append(1)
        with count:
            active[0] -= 1

    monkeypatch.setattr(fresh, "calibrate", slow)
    answers = []
    threads = [
        threading.Thread(target=lambda p=p: answers.append(app.fcn_run(str(p), 0.5))) for p in images[:2]
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(answers) == 2 and all("segmented in" in a[3] for a in answers)
    assert most[0] == 1 and len(calls) == 1  # one calibration; the other request used it


def test_the_page_deletes_uploads_from_its_cache(seg, images, tmp_path):
    gr = pytest.importorskip("gradio")
    gradio_client = pytest.importorskip("gradio_client")
    assert build_app(seg).delete_cache == DELETE_CACHE
    app = build_app(seg, delete_cache=(1, 1))  # every second, files older than a second
    url = serve(app, _free_port(), block=False)
    try:
        client = gradio_client.Client(url, verbose=False)
        _, _, _, status = client.predict(gradio_client.handle_file(str(images[1])), 0.5, api_name="/analyse")
        assert status.startswith("38 x 50 px")
        uploads = [p for p in app.upload_file_set if p.endswith(images[1].name)]
        assert uploads and all(Path(p).is_file() for p in uploads)
        deadline = time.monotonic() + 15
        while any(Path(p).exists() for p in uploads) and time.monotonic() < deadline:
            time.sleep(0.25)
        assert not any(Path(p).exists() for p in uploads)
        with pytest.raises(gr.Error, match="no longer on the server .* upload it again"):
            app.fcn_run({"path": uploads[0]}, 0.7)  # the slider moved after the upload was deleted
    finally:
        app.close()


def test_the_page_keeps_its_bomb_limit_when_another_library_turned_pillows_off(monkeypatch):
    from PIL import Image

    from fcn.demo import BOMB_PIXELS, decode_limit

    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)  # what `import labelme` does to the process
    assert decode_limit(None) == BOMB_PIXELS
    assert decode_limit(1000) == 8000
