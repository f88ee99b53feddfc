"""The web demo (demo.py): a Gradio page (on 127.0.0.1 unless asked otherwise) that segments an
uploaded image or one of the validation images with a fcn.api.Segmenter: the overlay, the colour
mask with a legend of the classes present and each one's share of the pixels, an opacity slider,
and what runs the model.

Where it listens: demo.py's --host and --port, else Gradio's own GRADIO_SERVER_NAME and
GRADIO_SERVER_PORT, else 127.0.0.1:7860 (listen_address). Anything but a loopback address makes the
page, and the model behind it, reachable from other machines, and the start line says so.

The page is built by build_app(segmenter) around one function, analyse(segmenter, image, alpha),
which tests call directly and through the page's HTTP API (POST /gradio_api/call/analyse, or
gradio_client's Client.predict(..., api_name="/analyse")). Gradio is imported only by build_app:
it is an optional requirement (requirements.demo.txt).

What one visitor can ask of it is bounded, as a public page's must be: an upload larger than
--max-file-size is refused by Gradio before it is stored; an upload is opened only by the decoders
of the formats predict.py reads (PAGE_FORMATS: never Pillow's EPS, which runs Ghostscript) and its
size read from its header before a pixel is decoded: an image of more than --max-pixels is decoded
at a reduced scale (JPEG's DCT scaling, Pillow's draft) and resized to fit, segmented and shown at
that size, and the status line says so; one that would decode to more than DECODE_FACTOR times
--max-pixels (a PNG, which has no reduced scale) or has more pixels than Pillow's decompression-bomb
limit is refused with a message. The model runs as the page says, not as a checkpoint's or Hub
folder's eval.* says (PAGE_EVAL: one scale, no flip, eval.max_memory=auto). Requests wait in one
bounded queue (--queue-size; a visitor beyond it is told the queue is full) and --concurrency of
them run at a time, the first one (int8's calibration) alone; an input that fails is a message on
the page, which stays up. Uploads and answers are deleted from Gradio's cache DELETE_CACHE[1]
seconds after they are written, and the page serves no file of the machine but its example images.
"""

from __future__ import annotations

import hashlib
import html
import ipaddress
import math
import os
import socket
import threading
import time
import warnings
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from PIL import Image, ImageOps

from fcn.api import Segmenter, as_rgb
from fcn.data.common import to_rgb

GRADIO_MISSING = "the web demo needs Gradio, an optional requirement: pip install -r requirements.demo.txt"
MAX_EXAMPLES = 12
"""Validation images offered as examples under the upload box."""
LOOPBACK = "127.0.0.1"
DEFAULT_PORT = 7860
MAX_PIXELS = 2_000_000
"""demo.py --max-pixels: larger images are downscaled to this many pixels to be segmented and shown
(a 24-megapixel photo's overlay alone takes 45 s to encode as PNG on a 2-core machine)."""
MAX_FILE_MB = 50.0
"""demo.py --max-file-size: the largest upload Gradio accepts, in MB (a 48-megapixel phone JPEG is
10-25 MB)."""
QUEUE_SIZE = 16
"""demo.py --queue-size: requests that may wait; one more is refused (the queue is full)."""
CONCURRENCY = 1
"""demo.py --concurrency: requests segmented at a time (one: the model's threads use every core)."""
DECODE_FACTOR = 8
"""An upload is decoded to at most this many times --max-pixels (16 megapixels at the default): a
larger JPEG is decoded at a reduced scale, a larger PNG, TIFF, ... is refused from its header (a
9000 x 9000 16-bit PNG is 160 KB on the wire and over a gigabyte decoded: 16-bit, then float64 grey in
fcn.data.common.to_rgb, then RGB)."""
PAGE_FORMATS = ("JPEG", "PNG", "WEBP", "BMP", "GIF", "TIFF", "PPM")
"""The decoders an upload may reach (Pillow's format names; Image.open(formats=...)): those of the image
files predict.py reads (fcn.files.IMAGE_SUFFIXES, PPM for .ppm/.pgm/.pbm; a phone's MPO is read by the
JPEG one). Not EPS (Ghostscript), nor the dozens of others Pillow would try on a file from anyone."""
DELETE_CACHE = (300, 1800)
"""gr.Blocks(delete_cache=(frequency, age)): every 5 minutes, the uploads and answers in Gradio's cache
older than 30 minutes are deleted (the slider re-reads the upload: a visitor has that long to use it);
Gradio keeps the example images, and deletes the rest when the page stops."""
PAGE_EVAL = (
    "eval.scales=[1.0]",  # one forward per image: a folder's scales=[0.5,1,2] would be three
    "eval.flip=false",
    "eval.max_memory=auto",  # 2 GB on the CPU: a folder's 'none' would be no limit at all
    "eval.mode=whole",  # the schema's windows, which eval.max_memory falls back to: a
    "eval.tile=512",  # folder's stride=1 would be a forward per pixel
    "eval.stride=341",
    "eval.window_batch=4",
)
"""The eval.* settings the page runs the model with, over whatever the checkpoint's (or a Hub folder's)
config says: the config came from elsewhere, the page's limits are this machine's. demo.py's own
flags and key=value overrides come after them (load_segmenter)."""


def listen_address(
    host: str | None = None, port: int | None = None, environ: Mapping[str, str] | None = None
) -> tuple[str, int]:
    """Return (host, port) the page listens on: the flags given (not None), else Gradio's own
    GRADIO_SERVER_NAME / GRADIO_SERVER_PORT from environ (os.environ by default), else
    127.0.0.1:7860; ValueError naming the flag or variable for a port outside 1..65535."""
    environ = os.environ if environ is None else environ
    if host is None:
        host = environ.get("GRADIO_SERVER_NAME") or LOOPBACK
    source = f"--port {port}"
    if port is None:
        text = environ.get("GRADIO_SERVER_PORT", "").strip() or str(DEFAULT_PORT)
        source = f"GRADIO_SERVER_PORT={text}"
        port = int(text) if text.isdigit() else 0
    if not 0 < port < 65536:
        raise ValueError(f"{source} is not a port number (1..65535)")
    return host, port


def is_loopback(host: str) -> bool:
    """Return whether host is this machine only (127.0.0.0/8, ::1, localhost): a name is resolved,
    and counts as loopback only when every address it has is."""
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None)
    except OSError:
        return False
    return bool(infos) and all(ipaddress.ip_address(info[4][0].split("%")[0]).is_loopback for info in infos)


def url(host: str, port: int) -> str:
    """Return the page's URL on host:port (an IPv6 address in brackets)."""
    return f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"


def start_line(host: str, port: int) -> str:
    """Return demo.py's start line: where the page listens, and, off loopback, that other machines
    can reach it."""
    if is_loopback(host):
        return f"serving on {url(host, port)} (this machine only; Ctrl-C stops)"
    where = "every network interface of this machine" if host in ("0.0.0.0", "::") else host
    return (
        f"serving on {url(host, port)} ({where}: reachable from other machines, which can use the "
        "model; Ctrl-C stops)"
    )


def load_segmenter(
    checkpoint: str | os.PathLike,
    device: str = "auto",
    config: Sequence[str | os.PathLike] = (),
    overrides: Sequence[str] = (),
) -> Segmenter:
    """Return the page's Segmenter of a checkpoint (Segmenter.from_checkpoint): the config's eval.*
    replaced by PAGE_EVAL, then config (YAML files) and overrides (key=value, demo.py's eval flags)
    from the command line; a --config file's eval.* keys are under PAGE_EVAL (from_checkpoint merges
    the files before the overrides): set those keys as overrides."""
    return Segmenter.from_checkpoint(
        checkpoint, device=device, config=config, overrides=[*PAGE_EVAL, *overrides]
    )


def analyse(
    segmenter: Segmenter, image: Any, alpha: float = 0.5, mask: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, list[tuple[int, str, float]]]:
    """Return (overlay, colour mask, shares) of an image: the H x W x 3 uint8 overlay at opacity
    alpha and colour mask that predict.py writes as <stem>_overlay.png and <stem>_color.png, and
    (label, class name, fraction of the pixels) of each class present, largest first. mask: the
    image's mask when already predicted (the slider re-blends without running the model again)."""
    rgb = as_rgb(image)
    if mask is None:
        mask = segmenter.segment(rgb)
    return segmenter.overlay(rgb, alpha=alpha, mask=mask), segmenter.colorize(mask), segmenter.shares(mask)


BOMB_PIXELS = 89_478_485
"""Pillow's own decompression-bomb limit (Image.MAX_IMAGE_PIXELS's default: a quarter of a GiB of
RGB pixels): the page's bound even where another library in the process set Pillow's to None (labelme
does, on import)."""


def bomb_pixels() -> int:
    """Return the decompression-bomb limit the page applies: Pillow's, or BOMB_PIXELS where it is unset."""
    return min(n for n in (Image.MAX_IMAGE_PIXELS, BOMB_PIXELS) if n)


def decode_limit(max_pixels: int | None = MAX_PIXELS) -> int | None:
    """Return the most pixels the page decodes of one upload: DECODE_FACTOR times max_pixels, at most
    the decompression-bomb limit (bomb_pixels); that limit for max_pixels=None."""
    limits = [n for n in (bomb_pixels(), max_pixels and DECODE_FACTOR * max_pixels) if n]
    return min(limits) if limits else None


def open_image(image: Any, max_pixels: int | None = MAX_PIXELS) -> tuple[Image.Image, str]:
    """Return (the RGB image to segment, a line on its size) of an upload (a path, a PIL image or an
    array): as predict.py reads it (upright, any mode) when it has at most max_pixels pixels (None:
    any); else decoded at a reduced scale where the format allows (JPEG) and resized (bilinear) to at
    most max_pixels, the line saying so. A path is opened by the PAGE_FORMATS decoders only and its
    size read from the header before a pixel is decoded. ValueError naming the size when it has more
    pixels than Pillow's decompression-bomb limit or would decode to more than decode_limit, or when
    it is no image the page reads; FileNotFoundError when the file is gone."""
    if not isinstance(image, (str, os.PathLike)):
        rgb = as_rgb(image)
        return _fit(rgb, rgb.size, max_pixels)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # refused below instead
            opened = Image.open(image, formats=PAGE_FORMATS)  # lazy: reads the header only
    except FileNotFoundError:
        raise
    except Image.DecompressionBombError as exc:  # Pillow's own refusal, at twice its limit
        raise ValueError(f"this image is more than this page takes ({' '.join(str(exc).split())})") from None
    except Image.UnidentifiedImageError:  # its message names the server's path: not shown
        raise ValueError(f"cannot read this file: it is not a {', '.join(PAGE_FORMATS)} image") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ValueError(
            f"cannot read this image ({' '.join(str(exc).split()) or type(exc).__name__})"
        ) from None
    with opened:
        width, height = opened.size  # the header's: nothing decoded yet
        _refuse_over(width, height, width * height, bomb_pixels(), "takes")
        if max_pixels is not None and width * height > max_pixels:
            scale = math.sqrt(max_pixels / (width * height))
            # JPEG: decoded at 1/2, 1/4 or 1/8 of its size (opened.size says which); others as they are
            opened.draft("RGB", (max(1, int(width * scale)), max(1, int(height * scale))))
        decoded = opened.size[0] * opened.size[1]
        jpeg = "" if opened.format in ("JPEG", "MPO") else "; a JPEG would be decoded at a reduced scale"
        _refuse_over(width, height, decoded, decode_limit(max_pixels), "decodes", jpeg)
        try:
            turned = opened.getexif().get(0x0112, 1) in (5, 6, 7, 8)  # EXIF orientation: a quarter turn
            rgb = to_rgb(ImageOps.exif_transpose(opened))  # fcn.data.common.read_image's steps, upright
        except (OSError, SyntaxError, ValueError, EOFError) as exc:
            reason = " ".join(str(exc).split()) or type(exc).__name__
            raise ValueError(f"cannot read this image ({reason})") from None
    return _fit(rgb, (height, width) if turned else (width, height), max_pixels)


def _refuse_over(width: int, height: int, pixels: int, limit: int | None, verb: str, note: str = "") -> None:
    """Raise the page's ValueError on a width x height upload when pixels (its own, or those it
    decodes to) are more than limit (None: no limit)."""
    if limit and pixels > limit:
        raise ValueError(
            f"{width} x {height} px ({width * height / 1e6:.1f} megapixels) is more than this page {verb} "
            f"({limit / 1e6:.1f} megapixels{note})"
        )


def _fit(rgb: Image.Image, size: tuple[int, int], max_pixels: int | None) -> tuple[Image.Image, str]:
    """Return (rgb resized to at most max_pixels, keeping its shape; a line on it) for an image of
    size (width, height) as uploaded."""
    width, height = size
    if max_pixels is None or width * height <= max_pixels:
        return rgb, f"{width} x {height} px"
    scale = math.sqrt(max_pixels / (width * height))
    target = (max(1, int(width * scale)), max(1, int(height * scale)))
    small = rgb.resize(target, Image.Resampling.BILINEAR, reducing_gap=2.0) if rgb.size != target else rgb
    return small, (
        f"{width} x {height} px, segmented and shown at {target[0]} x {target[1]} px "
        f"(at most {max_pixels:,} pixels: --max-pixels)"
    )


def shares_html(shares: Sequence[tuple[int, str, float]], palette: np.ndarray) -> str:
    """Return the legend of a colour mask as an HTML table: each class present with its colour,
    its share of the pixels in percent and a bar of that length, largest first."""
    rows = []
    for label, name, share in shares:
        r, g, b = (int(v) for v in palette[label])
        swatch = f"background:rgb({r},{g},{b})"
        rows.append(
            "<tr>"
            f'<td><span class="fcn-swatch" style="{swatch}"></span></td>'
            f"<td>{html.escape(name)}</td>"
            f'<td class="fcn-num">{100 * share:.1f}%</td>'
            f'<td class="fcn-barcell"><div class="fcn-bar" style="width:{100 * share:.1f}%;{swatch}"></div></td>'
            "</tr>"
        )
    body = "".join(rows) or '<tr><td colspan="4">(no image)</td></tr>'
    return (
        '<table class="fcn-shares"><thead><tr><th></th><th>class</th><th>pixels</th><th></th></tr></thead>'
        f"<tbody>{body}</tbody></table>"
    )


def describe(segmenter: Segmenter) -> str:
    """Return the Markdown line that says what runs: checkpoint, model, engine, device, fast path
    (and whether auto chose it) and the eval.* options."""
    m, e = segmenter.cfg.model, segmenter.cfg.eval
    name = Path(segmenter.checkpoint).name if segmenter.checkpoint else "(in memory)"
    chosen = " (chosen by `--fast-path auto`)" if segmenter.requested_fast_path == "auto" else ""
    tta = ("flip, " if e.flip else "") + "scales " + ", ".join(f"{s:g}" for s in e.scales)
    window = "whole image" if e.mode == "whole" else f"sliding {e.tile} px windows every {e.stride} px"
    return (
        f"**{m.arch.upper()}** on **{m.backbone}**, {segmenter.num_classes} classes · "
        f"checkpoint `{name}` · engine **{segmenter.engine}** on **{segmenter.device}** · "
        f"fast path **{segmenter.fast_path}**{chosen} · {tta}; {window}"
    )


def example_images(
    segmenter: Segmenter,
    images_dir: str | os.PathLike | None = None,
    *,
    trust_remote_code: bool = False,
    public: bool = False,
) -> list[str]:
    """Return up to MAX_EXAMPLES image paths to offer: the image files of images_dir, else the
    checkpoint config's validation images (data.val) where they are on this machine, else none.
    The checkpoint's config is data (docs/security.md): a dataset class it names by import path is
    built only with trust_remote_code, and a page that other machines reach (public) offers only
    images_dir, never the folders a shared config points to."""
    if images_dir is not None:
        from fcn.files import list_images

        files, errors = list_images([images_dir])
        if errors:
            raise FileNotFoundError(errors[0])
        return [str(f) for f in files[:MAX_EXAMPLES]]
    from fcn.config import is_import_path

    if public or (is_import_path(segmenter.cfg.data.val.name) and not trust_remote_code):
        return []
    from fcn.data import build_dataset

    try:
        dataset = build_dataset(segmenter.cfg.data.val, segmenter.cfg.data)
    except (ValueError, OSError):
        return []  # the validation data is where training ran, not here
    return [str(p) for p in dataset.images[:MAX_EXAMPLES] if Path(p).is_file()]


# Small images (the toy data set's 96 x 96) fill their box, pixels kept sharp so class edges stay exact.
_CSS = """
.fcn-shares { border-collapse: collapse; width: 100%; font-size: 15px; }
.fcn-shares th { text-align: left; font-weight: 600; padding: 4px 8px; border-bottom: 1px solid #ccc; }
.fcn-shares td { padding: 4px 8px; }
.fcn-swatch { display: inline-block; width: 18px; height: 18px; border: 1px solid #555; border-radius: 3px;
  vertical-align: middle; }
.fcn-num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
.fcn-barcell { width: 45%; }
.fcn-big img { width: 100% !important; height: 100% !important; object-fit: contain; image-rendering: pixelated; }
.fcn-bar { height: 14px; border: 1px solid #555; border-radius: 2px; min-width: 2px; }
"""


def build_app(
    segmenter: Segmenter,
    examples: Sequence[str] = (),
    cache_size: int = 8,
    *,
    max_pixels: int | None = MAX_PIXELS,
    max_file_mb: float = MAX_FILE_MB,
    queue_size: int = QUEUE_SIZE,
    concurrency: int = CONCURRENCY,
    delete_cache: tuple[int, int] | None = DELETE_CACHE,
):
    """Return the Gradio Blocks page of the demo around analyse(segmenter, ...): an image input
    (upload, or an example; the first one is shown segmented when the page opens), the opacity slider, the overlay, the colour mask, the legend with pixel
    shares and what runs the model. The last cache_size masks are kept, keyed by the image's pixels,
    so that moving the slider only re-blends. Its HTTP API is /analyse (image, alpha).

    Bounds (module docstring): images of more than max_pixels pixels are segmented and shown
    downscaled (open_image; None: any size), uploads above max_file_mb MB are refused (serve passes
    it to Gradio's launch), at most queue_size requests wait and concurrency of them run at a time,
    the first segmentation (int8's calibration, Segmenter.calibrate) alone, and Gradio deletes uploads
    and answers as delete_cache = (every so many seconds, those older than so many) says (None:
    never). An input that cannot be read or segmented is a message on the page (gr.Error).

    The page's function is app.fcn_run(image, alpha), its Segmenter app.fcn_segmenter (for tests)."""
    import gradio as gr

    masks: OrderedDict[str, np.ndarray] = OrderedDict()
    lock = threading.Lock()  # the mask cache, when concurrency > 1
    calibrating = threading.Lock()  # the first segmentation calibrates int8: one at a time
    calibrated = threading.Event()
    age = delete_cache[1] if delete_cache else None
    kept = "a while" if age is None else f"{age // 60} minutes" if age >= 120 else f"{age} s"

    def segment(rgb: Image.Image) -> np.ndarray:
        if calibrated.is_set():
            return segmenter.segment(rgb)
        with calibrating:  # a second request waits here, then finds the model calibrated
            mask = segmenter.segment(rgb)
            calibrated.set()
        return mask

    def run(image: Any, alpha: float):
        # The events run unprocessed (preprocess=False): Gradio's own Image.open, which would try every
        # decoder Pillow has, never sees an upload; image is Gradio's file record (a dict), or a path.
        if isinstance(image, Mapping):
            image = image.get("path")
        if image is None:
            return None, None, shares_html([], segmenter.palette), ""
        try:
            try:
                rgb, size = open_image(image, max_pixels)
            except FileNotFoundError:
                raise ValueError(
                    f"this image is no longer on the server (uploads are kept {kept}): upload it again"
                ) from None
            pixels = np.asarray(rgb)
            key = hashlib.sha1(pixels.tobytes() + str(pixels.shape).encode()).hexdigest()
            start = time.perf_counter()
            with lock:
                mask = masks.get(key)
                if mask is not None:
                    masks.move_to_end(key)
            if mask is None:
                mask = segment(rgb)
                with lock:
                    masks[key] = mask
                    while len(masks) > cache_size:
                        masks.popitem(last=False)
                timing = f"segmented in {1000 * (time.perf_counter() - start):.0f} ms"
            else:
                timing = "re-blended (mask cached)"
            picture, colour, shares = analyse(segmenter, rgb, float(alpha), mask=mask)
        except (ValueError, OSError, RuntimeError) as exc:  # this input's failure, not the page's
            raise gr.Error(" ".join(str(exc).split()) or type(exc).__name__, print_exception=False) from None
        present = f"{len(shares)} class" + ("" if len(shares) == 1 else "es")
        status = f"{size} · {present} present · {timing}"
        return picture, colour, shares_html(shares, segmenter.palette), status

    m = segmenter.cfg.model
    with gr.Blocks(title=f"pytorch-fcn: {m.arch} {m.backbone}", delete_cache=delete_cache) as app:
        gr.Markdown(f"## pytorch-fcn · semantic segmentation demo\n{describe(segmenter)}")
        with gr.Row(equal_height=False):
            with gr.Column(scale=1):
                # The file as uploaded (type filepath, image_mode None, unprocessed), read by open_image
                # as predict.py reads it (16-bit grey rescaled, not clipped as Gradio's default
                # convert("RGB") would), a large photo decoded at a reduced scale.
                image = gr.Image(
                    value=examples[0] if examples else None,
                    label="image",
                    type="filepath",  # the upload's file, not decoded by Gradio: open_image reads it
                    image_mode=None,
                    sources=["upload", "clipboard"],
                    height=360,
                    elem_classes=["fcn-big"],
                )
                alpha = gr.Slider(0.0, 1.0, value=0.5, step=0.05, label="mask opacity in the overlay")
                if examples:
                    gr.Examples(
                        examples=[[e] for e in examples],
                        inputs=[image],
                        label="validation images (click one)",
                        examples_per_page=MAX_EXAMPLES,
                    )
            with gr.Column(scale=1):
                overlay = _picture(gr, "overlay")
                status = gr.Markdown()
            with gr.Column(scale=1):
                colour = _picture(gr, "colour mask")
                gr.Markdown("**legend** · share of the pixels")
                table = gr.HTML(shares_html([], segmenter.palette))
        outputs = [overlay, colour, table, status]
        image.change(run, [image, alpha], outputs, api_name="analyse", preprocess=False)
        alpha.release(run, [image, alpha], outputs, api_name=False, preprocess=False)
        if examples:  # the page opens with the first example segmented
            app.load(run, [image, alpha], outputs, api_name=False, preprocess=False)
    app.queue(default_concurrency_limit=concurrency, max_size=queue_size)
    app.fcn_css = _CSS  # Gradio 6 takes css in launch(): serve() passes it
    app.fcn_max_file_size = int(max_file_mb * 2**20)  # and the upload limit, in bytes
    app.fcn_run, app.fcn_segmenter = run, segmenter
    return app


def serve(
    app, port: int = DEFAULT_PORT, examples: Sequence[str] = (), block: bool = True, host: str = LOOPBACK
) -> str:
    """Start the app on host:port (block=False: in a thread, the caller closes it with app.close())
    and return its URL. Gradio may serve the example files themselves (allowed_paths), never their
    folders: a checkpoint or a .env beside the images stays on this machine."""
    allowed = sorted({str(Path(e).resolve()) for e in examples})
    app.launch(
        server_name=host,
        server_port=port,
        prevent_thread_lock=not block,
        quiet=not block,
        allowed_paths=allowed,
        css=getattr(app, "fcn_css", None),
        max_file_size=getattr(app, "fcn_max_file_size", None),
        footer_links=[],
    )
    return url(host, port)


def _picture(gr, label: str):
    """Return one of the page's two result pictures (the overlay, the colour mask): read-only PNGs."""
    return gr.Image(
        label=label, type="numpy", interactive=False, height=360, format="png", elem_classes=["fcn-big"]
    )
