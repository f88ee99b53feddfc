"""serve.py: a Segmenter behind the Open Inference Protocol (KServe v2), as Triton, KServe and
MLServer speak it over HTTP, so that their clients (tritonclient.http, KServe's InferenceRESTClient,
curl) call it unchanged.

    GET  /v2/health/live, /v2/health/ready          open (as KServe's and Triton's are)
    GET  /v2/models/<name>/ready                    open
    GET  /v2, /v2/models/<name>                     server and model metadata
    POST /v2/models/<name>/infer                    IMAGE in; MASK (and PROBS when asked) out
    GET  /metrics                                   Prometheus text format

Input IMAGE: BYTES [1], an encoded image file (JPEG, PNG, TIFF, BMP, WebP, GIF, PPM; base64 in a
JSON tensor), read as predict.py reads a file (upright, any mode to RGB); or UINT8 [H, W, C] pixels
taken as they are (fcn.api.as_input). Outputs: MASK UINT8 [H, W], the Segmenter's class indices
(binary: 0/1; multilabel: [C, H, W] 0/1 planes), and PROBS FP32 [C, H, W] when the request's
`outputs` names it (binary: C = 1). Tensors travel as JSON or in the binary tensor data extension
(Inference-Header-Content-Length, `binary_data`, `binary_data_size`), as Triton's clients send them.

Why FastAPI + uvicorn and a hand-written codec, not KServe's ModelServer or MLServer: kserve 0.21
depends on kubernetes, grpcio-tools, pandas, cryptography and aiohttp among 30 packages, and its
Python server batches nothing itself (KServe batches in a sidecar agent); mlserver 1.7 pulls gevent,
aiokafka and OpenTelemetry and pins fastapi<0.116, below what Gradio 6 (requirements.demo.txt)
needs. FastAPI and uvicorn come with Gradio already; the protocol's part we speak is two JSON
shapes and one binary layout, checked against NVIDIA's own client in tests/frontends/test_serve.py.

Load: requests of one image size (and the same outputs) that arrive within --batch-wait-ms go
through the network as one batch of up to --max-batch (Segmenter.segment_many: the same pixels as
one at a time); at most --max-queue wait, and one more is answered 503 at once. A request body over
--max-request-mb is refused (413) before it is read, an image over --max-pixels (the demo's bounds)
from its header, before it is decoded; a bad image is a 400 with a message. SIGTERM stops listening,
finishes the requests in flight, and exits 0. With a key (--api-key or FCN_API_KEY), everything but
the health and readiness routes needs `Authorization: Bearer <key>` (401 otherwise). Each request is
one JSON line on stderr (never a header, so never the key).
"""

import asyncio
import base64
import binascii
import collections
import concurrent.futures
import hmac
import io
import json
import math
import signal
import socket
import struct
import sys
import threading
import time
import warnings
from dataclasses import dataclass
from typing import Any, Callable, TextIO

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from fcn.api import Segmenter
from fcn.demo import MAX_FILE_MB, MAX_PIXELS, QUEUE_SIZE, is_loopback

SERVE_MISSING = "serve.py needs FastAPI, uvicorn and prometheus_client: pip install -r requirements.serve.txt"
MAX_BATCH = 4
"""serve.py --max-batch: images of one size that go through the network together."""
BATCH_WAIT_MS = 5.0
"""serve.py --batch-wait-ms: how long the first request of a batch waits for others (Triton's
max_queue_delay_microseconds, in milliseconds)."""
MAX_QUEUE = QUEUE_SIZE
"""serve.py --max-queue: requests that may wait for the network (the demo's --queue-size)."""
FORMATS = ("JPEG", "PNG", "TIFF", "BMP", "WEBP", "GIF", "PPM")
"""The image formats IMAGE may hold (Pillow's names): Image.open tries no other decoder."""
HEADER = "Inference-Header-Content-Length"
DTYPES = {
    "BOOL": np.bool_,
    "UINT8": np.uint8,
    "INT8": np.int8,
    "UINT16": np.dtype("<u2"),
    "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
}
"""The protocol's tensor types this server reads and writes (little-endian, as the extension says)."""


# No `from __future__ import annotations` here: FastAPI reads the routes' annotations (Request) at
# definition time, and those names are imported inside build_app.


class RequestError(Exception):
    """A request the server refuses: the HTTP status and the one-line message of the error body."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


# ---- the protocol's tensors -------------------------------------------------------------------


@dataclass
class InferRequest:
    """A parsed inference request: its id, input tensors by name (BYTES as a list of bytes), and the
    outputs asked for with whether each travels binary (None: the request named none)."""

    id: str | None
    inputs: dict[str, tuple[str, list[int], Any]]
    outputs: dict[str, bool] | None
    binary_default: bool


def parse_infer(body: bytes, header_length: int | None) -> InferRequest:
    """Return the InferRequest of a request body: JSON, or JSON followed by the binary tensors when
    header_length (Inference-Header-Content-Length) is given; RequestError(400) naming what is wrong."""
    if header_length is not None and not 0 <= header_length <= len(body):
        raise RequestError(400, f"{HEADER}: {header_length} is not within the body's {len(body)} bytes")
    head = body if header_length is None else body[:header_length]
    try:
        request = json.loads(head)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RequestError(400, f"the request is not JSON ({exc}); send an inference request") from None
    if not isinstance(request, dict) or not isinstance(request.get("inputs"), list):
        raise RequestError(400, "the request has no 'inputs' list (Open Inference Protocol)")
    binary = memoryview(body)[len(head) :]
    inputs = {}
    for item in request["inputs"]:
        if not isinstance(item, dict) or not {"name", "datatype", "shape"} <= item.keys():
            raise RequestError(400, "each input needs 'name', 'datatype' and 'shape'")
        name, datatype, shape = str(item["name"]), str(item["datatype"]), item["shape"]
        if not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape):
            raise RequestError(400, f"input '{name}': shape {shape!r} is not a list of sizes")
        size = (item.get("parameters") or {}).get("binary_data_size")
        if size is not None:
            if not isinstance(size, int) or size < 0 or size > len(binary):
                raise RequestError(400, f"input '{name}': binary_data_size {size!r} is past the body's end")
            data, binary = binary[:size], binary[size:]
            inputs[name] = (datatype, shape, _from_binary(name, datatype, shape, bytes(data)))
        elif "data" in item:
            inputs[name] = (datatype, shape, _from_json(name, datatype, shape, item["data"]))
        else:
            raise RequestError(400, f"input '{name}' has neither 'data' nor binary_data_size")
    outputs = None
    if isinstance(request.get("outputs"), list):
        outputs = {}
        for item in request["outputs"]:
            if not isinstance(item, dict) or "name" not in item:
                raise RequestError(400, "each requested output needs a 'name'")
            flag = (item.get("parameters") or {}).get("binary_data")
            outputs[str(item["name"])] = flag
    default = bool((request.get("parameters") or {}).get("binary_data_output", False))
    if outputs is not None:
        outputs = {k: default if v is None else bool(v) for k, v in outputs.items()}
    rid = request.get("id")
    return InferRequest(None if rid is None else str(rid), inputs, outputs, default)


def _count(shape: list[int]) -> int:
    return math.prod(shape) if shape else 1


def _from_binary(name: str, datatype: str, shape: list[int], data: bytes) -> Any:
    if datatype == "BYTES":  # each element: a 4-byte little-endian length, then its bytes
        items, at = [], 0
        while at < len(data):
            if at + 4 > len(data):
                raise RequestError(400, f"input '{name}': a BYTES element's length is cut off")
            (length,) = struct.unpack_from("<I", data, at)
            if at + 4 + length > len(data):
                raise RequestError(400, f"input '{name}': a BYTES element runs past its data")
            items.append(data[at + 4 : at + 4 + length])
            at += 4 + length
        return items
    if datatype not in DTYPES:
        raise RequestError(
            400, f"input '{name}': datatype {datatype} is not one of BYTES, {', '.join(DTYPES)}"
        )
    dtype = np.dtype(DTYPES[datatype])
    if len(data) != _count(shape) * dtype.itemsize:
        raise RequestError(400, f"input '{name}': {len(data)} bytes do not hold {datatype} {shape}")
    return np.frombuffer(data, dtype=dtype).reshape(shape)


def _from_json(name: str, datatype: str, shape: list[int], data: Any) -> Any:
    flat = list(_flatten(data))
    if datatype == "BYTES":  # JSON carries no raw bytes: an encoded file is base64 text
        try:
            return [base64.b64decode(item, validate=True) for item in flat]
        except (binascii.Error, TypeError, ValueError):
            raise RequestError(400, f"input '{name}': a BYTES element in JSON must be base64 text") from None
    if datatype not in DTYPES:
        raise RequestError(
            400, f"input '{name}': datatype {datatype} is not one of BYTES, {', '.join(DTYPES)}"
        )
    if len(flat) != _count(shape):
        raise RequestError(400, f"input '{name}': {len(flat)} values do not fill shape {shape}")
    try:
        values = np.asarray(flat, dtype=np.float64 if datatype.startswith("FP") else np.int64)
    except (TypeError, ValueError):
        raise RequestError(400, f"input '{name}': 'data' holds something that is not a number") from None
    info = np.iinfo(DTYPES[datatype]) if values.dtype.kind == "i" and datatype != "BOOL" else None
    if info is not None and values.size and (values.min() < info.min or values.max() > info.max):
        raise RequestError(400, f"input '{name}': values outside {datatype}'s {info.min}..{info.max}")
    return values.astype(DTYPES[datatype]).reshape(shape)


def _flatten(data: Any):
    if isinstance(data, list):
        for item in data:
            yield from _flatten(item)
    else:
        yield data


def encode_infer(
    model_name: str, rid: str | None, outputs: list[tuple[str, str, np.ndarray, bool]]
) -> tuple[bytes, int | None]:
    """Return (response body, its JSON header's length when any output travels binary, else None) of
    outputs given as (name, datatype, array, binary)."""
    tensors, blobs = [], []
    for name, datatype, array, binary in outputs:
        array = np.ascontiguousarray(array, dtype=DTYPES[datatype])
        tensor: dict[str, Any] = {"name": name, "datatype": datatype, "shape": list(array.shape)}
        if binary:
            blob = array.tobytes()
            tensor["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        else:
            tensor["data"] = array.ravel().tolist()
        tensors.append(tensor)
    response: dict[str, Any] = {"model_name": model_name, "model_version": "1", "outputs": tensors}
    if rid is not None:
        response["id"] = rid
    head = json.dumps(response, separators=(",", ":")).encode()
    if not blobs:
        return head, None
    return head + b"".join(blobs), len(head)


# ---- images ------------------------------------------------------------------------------------


def decode_image(data: bytes, max_pixels: int) -> Image.Image:
    """Return an encoded image file (one of FORMATS) as predict.py reads a file (upright, 8-bit
    RGB), its size checked against max_pixels from the header before anything is decoded;
    RequestError 400 when it is not such an image, 413 when it has more pixels."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # refused below instead
            opened = Image.open(io.BytesIO(data), formats=FORMATS)
    except UnidentifiedImageError:
        raise RequestError(
            400, f"IMAGE is not an image file of the formats this server reads ({', '.join(FORMATS)})"
        ) from None
    except Image.DecompressionBombError as exc:
        raise RequestError(413, f"IMAGE is too large ({' '.join(str(exc).split())})") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise RequestError(400, f"IMAGE cannot be read ({' '.join(str(exc).split())})") from None
    with opened:
        width, height = opened.size  # the header only: nothing decoded yet
        check_pixels(width, height, max_pixels)
        try:
            opened.load()
            from fcn.data.common import to_rgb  # as fcn.data.common.read_image(upright=True) reads a file

            return to_rgb(ImageOps.exif_transpose(opened))
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
            reason = " ".join(str(exc).split()) or type(exc).__name__
            raise RequestError(
                400, f"IMAGE cannot be decoded ({reason}); it is damaged or truncated"
            ) from None


def check_pixels(width: int, height: int, max_pixels: int) -> None:
    """Raise RequestError(413) naming the size when an image of width x height has more than max_pixels."""
    if width * height > max_pixels:
        raise RequestError(
            413,
            f"IMAGE is {width} x {height} px ({width * height / 1e6:.1f} megapixels), more than this server "
            f"takes ({max_pixels:,} pixels: serve.py --max-pixels)",
        )


def read_input(segmenter: Segmenter, request: InferRequest, max_pixels: int) -> Any:
    """Return the request's IMAGE as segmenter.read() gives it; RequestError naming what is wrong."""
    if "IMAGE" not in request.inputs:
        raise RequestError(
            400, f"the request has no input 'IMAGE' (it has: {', '.join(request.inputs) or 'none'})"
        )
    datatype, shape, data = request.inputs["IMAGE"]
    channels = int(segmenter.cfg.model.in_channels)
    if datatype == "BYTES":
        if len(data) != 1:
            raise RequestError(400, f"IMAGE as BYTES holds one encoded image, not {len(data)} (shape [1])")
        if channels != 3:
            raise RequestError(
                400, f"this model takes {channels} channels: send IMAGE as UINT8 [H, W, {channels}]"
            )
        return segmenter.read(decode_image(data[0], max_pixels))
    if datatype != "UINT8" or len(shape) not in (2, 3):
        raise RequestError(
            400, f"IMAGE is BYTES [1] (an image file) or UINT8 [H, W, C], not {datatype} {shape}"
        )
    check_pixels(shape[1], shape[0], max_pixels)
    try:
        return segmenter.read(np.asarray(data))
    except ValueError as exc:
        raise RequestError(400, f"IMAGE: {exc}") from None


# ---- batching ----------------------------------------------------------------------------------


class QueueFull(Exception):
    """The batcher's queue holds --max-queue requests already."""


class Batcher:
    """One thread that runs the network: it takes the oldest waiting request and, for up to
    wait_s, the others of its image size and outputs, up to max_batch, and segments them together
    (Segmenter.segment_many). At most max_queue requests wait; submit() refuses one more at once."""

    def __init__(
        self,
        segmenter: Segmenter,
        max_batch: int,
        wait_s: float,
        max_queue: int,
        on_batch: Callable[[int], None] = lambda size: None,
        on_depth: Callable[[int], None] = lambda depth: None,
    ) -> None:
        self.segmenter = segmenter
        self.max_batch, self.wait_s, self.max_queue = max_batch, wait_s, max_queue
        self.on_batch, self.on_depth = on_batch, on_depth
        self._jobs: collections.deque = collections.deque()
        self._cond = threading.Condition()
        self._stop = False
        self._thread = threading.Thread(target=self._run, name="fcn-batcher", daemon=True)
        self._thread.start()

    def depth(self) -> int:
        """Return how many requests wait for the network."""
        return len(self._jobs)

    def full(self) -> bool:
        """Return whether one more request would be refused."""
        return len(self._jobs) >= self.max_queue

    def submit(self, pixels: Any, probabilities: bool) -> concurrent.futures.Future:
        """Return the future (mask, probabilities or None) of an image as segmenter.read() gives it;
        QueueFull when max_queue requests wait already."""
        future: concurrent.futures.Future = concurrent.futures.Future()
        key = (np.shape(pixels) if isinstance(pixels, np.ndarray) else pixels.size, probabilities)
        with self._cond:
            if len(self._jobs) >= self.max_queue:
                raise QueueFull
            self._jobs.append((key, pixels, future))
            self.on_depth(len(self._jobs))
            self._cond.notify()
        return future

    def close(self) -> None:
        """Finish the waiting requests, then stop the thread."""
        with self._cond:
            self._stop = True
            self._cond.notify()
        self._thread.join()

    def _take(self) -> list | None:
        with self._cond:
            while not self._jobs:
                if self._stop:
                    return None
                self._cond.wait()
            key, pixels, future = self._jobs.popleft()
            batch = [(pixels, future)]
            if self.max_batch > 1 and self.segmenter.batches(pixels, 2):
                deadline = time.monotonic() + self.wait_s
                while len(batch) < self.max_batch:
                    same = next((job for job in self._jobs if job[0] == key), None)
                    if same is not None:
                        self._jobs.remove(same)
                        batch.append(same[1:])
                        continue
                    left = deadline - time.monotonic()
                    if left <= 0 or self._stop:
                        break
                    self._cond.wait(left)
            self.on_depth(len(self._jobs))
            return [key, batch]

    def _run(self) -> None:
        while (taken := self._take()) is not None:
            (_, probabilities), batch = taken
            batch = [(p, f) for p, f in batch if f.set_running_or_notify_cancel()]
            if not batch:
                continue
            self.on_batch(len(batch))
            try:
                results = self.segmenter.segment_many([p for p, _ in batch], probabilities=probabilities)
            except Exception as exc:  # the requests fail; the thread, and the server, go on
                for _, future in batch:
                    future.set_exception(exc)
                continue
            for (_, future), result in zip(batch, results):
                future.set_result(result)


# ---- the HTTP server ---------------------------------------------------------------------------


def model_metadata(segmenter: Segmenter, name: str) -> dict:
    """Return the protocol's model metadata: IMAGE in (BYTES [1]; UINT8 [H, W, C] is taken too),
    MASK and PROBS out with their types and shapes (-1: the image's size)."""
    classes = segmenter.num_classes
    mask = [classes, -1, -1] if segmenter.task == "multilabel" else [-1, -1]
    return {
        "name": name,
        "versions": ["1"],
        "platform": "pytorch_fcn",
        "inputs": [{"name": "IMAGE", "datatype": "BYTES", "shape": [1]}],
        "outputs": [
            {"name": "MASK", "datatype": "UINT8", "shape": mask},
            {
                "name": "PROBS",
                "datatype": "FP32",
                "shape": [1 if segmenter.task == "binary" else classes, -1, -1],
            },
        ],
    }


def _outputs(segmenter: Segmenter, request: InferRequest) -> dict[str, bool]:
    """Return the outputs to send and whether each is binary: MASK unless outputs name others."""
    wanted = request.outputs if request.outputs else {"MASK": request.binary_default}
    unknown = sorted(set(wanted) - {"MASK", "PROBS"})
    if unknown:
        raise RequestError(400, f"unknown output '{unknown[0]}' (this model has MASK and PROBS)")
    return wanted


def build_app(
    segmenter: Segmenter,
    *,
    model_name: str = "fcn",
    max_batch: int = MAX_BATCH,
    batch_wait_ms: float = BATCH_WAIT_MS,
    max_queue: int = MAX_QUEUE,
    max_request_mb: float = MAX_FILE_MB,
    max_pixels: int = MAX_PIXELS,
    api_key: str | None = None,
    log: TextIO | None = None,
):
    """Return the FastAPI application serving segmenter as model_name (module docstring); its
    state.draining, set on SIGTERM, makes readiness 503 and refuses new inference requests."""
    try:
        import prometheus_client as prom
        from fastapi import FastAPI, Request, Response
        from fastapi.responses import JSONResponse
        from starlette.concurrency import run_in_threadpool
    except ImportError as exc:
        raise ImportError(f"{SERVE_MISSING} ({exc})") from None
    from contextlib import asynccontextmanager

    prom.disable_created_metrics()  # the *_created series say when a counter began: noise for a scraper
    registry = prom.CollectorRegistry()
    requests = prom.Counter(
        "fcn_requests", "HTTP requests by route and status", ["route", "code"], registry=registry
    )
    latency = prom.Histogram(
        "fcn_request_duration_seconds",
        "time from a request's arrival to its response, by route",
        ["route"],
        buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
        registry=registry,
    )
    batch_size = prom.Histogram(
        "fcn_batch_size",
        "images per forward of the network",
        buckets=(1, 2, 4, 8, 16, 32, 64),
        registry=registry,
    )
    queue_depth = prom.Gauge(
        "fcn_queue_depth", "inference requests waiting for the network", registry=registry
    )
    errors = prom.Counter("fcn_errors", "refused or failed requests by reason", ["reason"], registry=registry)
    reasons = {
        400: "bad_request",
        401: "unauthorized",
        404: "not_found",
        413: "too_large",
        503: "unavailable",
    }
    max_bytes = int(max_request_mb * 1e6)
    stream = sys.stderr if log is None else log
    batcher: Batcher | None = None

    @asynccontextmanager
    async def lifespan(app):
        nonlocal batcher
        batcher = Batcher(
            segmenter, max_batch, batch_wait_ms / 1000.0, max_queue, batch_size.observe, queue_depth.set
        )
        yield
        await run_in_threadpool(batcher.close)  # the requests in flight have been answered by now

    app = FastAPI(title="pytorch-fcn", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)
    app.state.draining = False
    open_paths = ("/v2/health/live", "/v2/health/ready", f"/v2/models/{model_name}/ready")

    def error(status: int, message: str) -> JSONResponse:
        return JSONResponse({"error": message}, status_code=status)

    def route_of(path: str) -> str:
        if path.startswith("/v2/health/"):
            return "health"
        if path.endswith("/infer"):
            return "infer"
        if path.endswith("/ready"):
            return "model_ready"
        if path.startswith("/v2"):
            return "metadata"
        return "metrics" if path == "/metrics" else "other"

    @app.middleware("http")
    async def operations(request: Request, call_next):
        start = time.perf_counter()
        path = request.url.path
        if api_key is not None and path not in open_paths and not _authorized(request, api_key):
            response = error(401, "this server needs 'Authorization: Bearer <key>' (serve.py --api-key)")
            response.headers["WWW-Authenticate"] = "Bearer"
        else:
            try:
                response = await call_next(request)
            except Exception as exc:  # a bug, not the client's: one line, the server stays up
                print(f"error: {request.method} {path}: {type(exc).__name__}: {exc}", file=stream, flush=True)
                response = error(500, f"internal error ({type(exc).__name__}); see the server's log")
        seconds = time.perf_counter() - start
        route = route_of(path)
        requests.labels(route, str(response.status_code)).inc()
        latency.labels(route).observe(seconds)
        if response.status_code >= 400:
            errors.labels(reasons.get(response.status_code, "internal")).inc()
        line = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "client": request.client.host if request.client else None,
            "method": request.method,
            "path": path,
            "status": response.status_code,
            "ms": round(seconds * 1000, 2),
            "bytes_in": int(request.headers.get("content-length") or 0),
            "bytes_out": int(response.headers.get("content-length") or 0),
        }
        print(json.dumps(line), file=stream, flush=True)  # no header is logged: the key stays out
        return response

    @app.get("/v2/health/live")
    async def live():
        return {"live": True}

    @app.get("/v2/health/ready")
    async def ready():
        if app.state.draining or batcher is None:
            return JSONResponse({"ready": False}, status_code=503)
        return {"ready": True}

    @app.get("/v2")
    async def server_metadata():
        return {"name": "pytorch-fcn", "version": "0.1.0", "extensions": ["binary_tensor_data"]}

    def known(name: str) -> None:
        if name != model_name:
            raise RequestError(404, f"unknown model '{name}' (this server serves '{model_name}')")

    @app.exception_handler(RequestError)
    async def refused(request: Request, exc: RequestError):
        return error(exc.status, exc.message)

    @app.get("/v2/models/{name}")
    @app.get("/v2/models/{name}/versions/{version}")
    async def metadata(name: str, version: str = "1"):
        known(name)
        return model_metadata(segmenter, model_name)

    @app.get("/v2/models/{name}/ready")
    @app.get("/v2/models/{name}/versions/{version}/ready")
    async def model_ready(name: str, version: str = "1"):
        known(name)
        if app.state.draining or batcher is None:
            return JSONResponse({"name": model_name, "ready": False}, status_code=503)
        return {"name": model_name, "ready": True}

    @app.post("/v2/models/{name}/infer")
    @app.post("/v2/models/{name}/versions/{version}/infer")
    async def infer(name: str, request: Request, version: str = "1"):
        known(name)
        if app.state.draining:
            raise RequestError(503, "the server is shutting down; send the request to another replica")
        if batcher.full():  # refused before the body is read or decoded
            raise RequestError(503, f"the queue is full ({max_queue} requests wait); try again later")
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > max_bytes:
            raise RequestError(
                413,
                f"the request has {int(declared):,} bytes, more than this server takes "
                f"({max_bytes:,}: serve.py --max-request-mb)",
            )
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > max_bytes:
                raise RequestError(
                    413, f"the request has more than {max_bytes:,} bytes (serve.py --max-request-mb)"
                )
            chunks.append(chunk)
        length = request.headers.get(HEADER.lower())
        if length is not None and not length.isdigit():
            raise RequestError(400, f"{HEADER}: '{length}' is not a number of bytes")
        body = b"".join(chunks)

        def prepare():
            parsed = parse_infer(body, None if length is None else int(length))
            return parsed, _outputs(segmenter, parsed), read_input(segmenter, parsed, max_pixels)

        parsed, wanted, pixels = await run_in_threadpool(prepare)
        try:
            future = batcher.submit(pixels, "PROBS" in wanted)
        except QueueFull:
            raise RequestError(
                503, f"the queue is full ({max_queue} requests wait); try again later"
            ) from None
        try:
            mask, probs = await asyncio.wrap_future(future)
        except ValueError as exc:  # eval.max_memory's refusal of an image too large for it
            raise RequestError(413, f"IMAGE: {exc}") from None
        out = []
        for key, binary in wanted.items():
            if key == "MASK":
                out.append(("MASK", "UINT8", np.asarray(mask, dtype=np.uint8), binary))
            else:
                out.append(
                    (
                        "PROBS",
                        "FP32",
                        np.asarray(probs, dtype=np.float32).reshape(-1, *np.shape(mask)[-2:]),
                        binary,
                    )
                )
        content, header = await run_in_threadpool(encode_infer, model_name, parsed.id, out)
        if header is None:
            return Response(content, media_type="application/json")
        return Response(content, media_type="application/octet-stream", headers={HEADER: str(header)})

    @app.get("/metrics")
    async def metrics():
        queue_depth.set(0 if batcher is None else batcher.depth())
        return Response(prom.generate_latest(registry), media_type=prom.CONTENT_TYPE_LATEST)

    return app


def _authorized(request, api_key: str) -> bool:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(), api_key.encode())


def start_line(host: str, port: int, model_name: str, api_key: str | None) -> str:
    """Return serve.py's start line: where the model listens, whether a key guards it, and, off
    loopback, that other machines can reach it."""
    base = f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
    where = "this machine only" if is_loopback(host) else "reachable from other machines"
    key = "a bearer token required" if api_key else "no token"
    return f"serving model '{model_name}' on {base}/v2/models/{model_name} ({where}; {key}; SIGTERM or Ctrl-C stops)"


def listen(host: str, port: int) -> socket.socket:
    """Return a socket bound to host:port (port 0: a free one) for serve(); OSError naming the
    address when it cannot be bound (in use, or not this machine's)."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host.strip("[]"), port))
    except OSError as exc:
        sock.close()
        raise OSError(
            f"cannot listen on {host}:{port} ({exc.strerror or exc}); choose another --host or --port"
        ) from None
    sock.listen(2048)  # from the start line on, a client's connection waits for the server, never refused
    return sock


def serve(app, sock: socket.socket) -> int:
    """Serve app on a bound socket until SIGTERM or Ctrl-C; return 0 once the requests in flight
    are answered (uvicorn's graceful shutdown: the listening socket closes first)."""
    import uvicorn

    class Server(uvicorn.Server):
        def handle_exit(self, sig, frame):  # readiness goes 503 at once, while in-flight requests finish
            app.state.draining = True
            super().handle_exit(sig, frame)

    server = Server(uvicorn.Config(app, log_level="warning", access_log=False))
    # uvicorn raises the signal it caught again once it has shut down: a handler that returns makes
    # a drained SIGTERM exit 0, as Kubernetes expects of a pod that finished its work.
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: None)
    try:
        server.run(sockets=[sock])
    finally:
        signal.signal(signal.SIGTERM, previous)
    return 0
