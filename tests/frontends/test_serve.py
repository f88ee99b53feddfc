"""serve.py as production calls it: a real process on 127.0.0.1, asked through NVIDIA's
tritonclient.http (the Open Inference Protocol, JSON and binary tensors) and plain HTTP, giving the
Segmenter's pixels; refusing load, bad images and missing tokens with the protocol's errors; and
draining on SIGTERM."""

from __future__ import annotations

import base64
import io
import json
import os
import signal
import struct
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fcn import Segmenter
from fcn.config import load_config, to_dict
from fcn.core.checkpoint import save_checkpoint, weights_checkpoint
from fcn.models import build_model

httpclient = pytest.importorskip("tritonclient.http")
from tritonclient.utils import InferenceServerException  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
TINY = [
    "model.arch=fcn8s",
    "model.backbone=resnet18",
    "model.geometry=same",
    "model.upsampling=bilinear",
    "model.pretrained=false",
    "data.classes=[sky,tree,road]",
    "data.palette=[[0,0,255],[0,255,0],[128,128,128]]",
]
KEY = "t0ken-for-the-test"
AUTH = {"Authorization": f"Bearer {KEY}"}


def _png(array: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray(array).save(out, "PNG")
    return out.getvalue()


def _bomb() -> bytes:
    """A PNG whose header says 9000 x 9000 px (81 megapixels, 243 MB of RGB), with the start of its
    pixel data: what Image.open reads before any decoding."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", 9000, 9000, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\0" * 100_000)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat)


class Served:
    """serve.py running in a subprocess on a free port; its stderr goes to a file."""

    def __init__(self, checkpoint: Path, log: Path, *flags: str, key: str | None = KEY) -> None:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        env.pop("FCN_API_KEY", None)
        if key is not None:
            env["FCN_API_KEY"] = key
        self.log = log
        self.process = subprocess.Popen(
            [sys.executable, str(ROOT / "serve.py"), "--checkpoint", str(checkpoint), "--device", "cpu"]
            + ["--port", "0", *flags],
            stdout=subprocess.PIPE,
            stderr=log.open("w"),
            text=True,
            env=env,
        )
        line = self.process.stdout.readline()
        assert "serving model 'fcn' on http://127.0.0.1:" in line, log.read_text()
        self.port = int(line.split("127.0.0.1:")[1].split("/")[0])
        self.url = f"127.0.0.1:{self.port}"

    def get(self, path: str, headers: dict | None = None) -> tuple[int, bytes]:
        return self.request("GET", path, None, headers)

    def request(self, method: str, path: str, body: bytes | None, headers: dict | None = None):
        """Return (status, body) of one plain HTTP request."""
        req = urllib.request.Request(
            f"http://{self.url}{path}", data=body, method=method, headers=headers or {}
        )
        try:
            with urllib.request.urlopen(req, timeout=30) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=30)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    cfg = load_config(overrides=TINY)
    pt = tmp_path_factory.mktemp("serve") / "best.pt"
    model = build_model(cfg.model).eval()
    with torch.no_grad():  # the reference's zero score layers would give every pixel one class
        for name, p in model.named_parameters():
            if name.startswith("score") and p.ndim > 1:
                p.normal_(0.0, 0.05)
    save_checkpoint(weights_checkpoint(model=model, config=to_dict(cfg)), pt)
    return pt


@pytest.fixture(scope="module")
def segmenter(checkpoint) -> Segmenter:
    return Segmenter.from_checkpoint(checkpoint, device="cpu")


@pytest.fixture(scope="module")
def server(checkpoint, tmp_path_factory):
    served = Served(checkpoint, tmp_path_factory.mktemp("log") / "stderr.txt", "--max-queue", "2")
    yield served
    served.stop()


@pytest.fixture(scope="module")
def client(server):
    return httpclient.InferenceServerClient(url=server.url)


IMAGE = np.random.default_rng(5).integers(0, 256, (37, 53, 3), dtype=np.uint8)


def _ask(client, image: bytes | np.ndarray, outputs=("MASK",), binary: bool = True):
    if isinstance(image, bytes):
        one = httpclient.InferInput("IMAGE", [1], "BYTES")
        one.set_data_from_numpy(np.array([image], dtype=object), binary_data=True)
    else:
        one = httpclient.InferInput("IMAGE", list(image.shape), "UINT8")
        one.set_data_from_numpy(image, binary_data=binary)
    wanted = [httpclient.InferRequestedOutput(name, binary_data=binary) for name in outputs]
    return client.infer("fcn", [one], outputs=wanted, headers=dict(AUTH))  # tritonclient adds to the dict


def test_tritonclient_gets_the_segmenters_mask_from_a_png_and_probabilities_when_asked(
    server, client, segmenter, tmp_path
):
    assert client.is_server_live() and client.is_server_ready() and client.is_model_ready("fcn")
    meta = client.get_model_metadata("fcn", headers=dict(AUTH))
    assert meta["inputs"] == [{"name": "IMAGE", "datatype": "BYTES", "shape": [1]}]
    assert [(o["name"], o["datatype"], o["shape"]) for o in meta["outputs"]] == [
        ("MASK", "UINT8", [-1, -1]),
        ("PROBS", "FP32", [3, -1, -1]),
    ]
    path = tmp_path / "photo.png"
    path.write_bytes(_png(IMAGE))
    result = _ask(client, path.read_bytes(), outputs=("MASK", "PROBS"))
    mask = result.as_numpy("MASK")
    assert mask.dtype == np.uint8 and mask.shape == IMAGE.shape[:2]
    np.testing.assert_array_equal(mask, segmenter(path))  # as predict.py reads the file
    np.testing.assert_allclose(result.as_numpy("PROBS"), segmenter.probabilities(path), atol=1e-6)
    assert len(np.unique(mask)) > 1  # a mask of one class would match by chance


def test_json_tensors_and_uint8_pixels_give_the_same_pixels(server, client, segmenter):
    result = _ask(client, IMAGE, outputs=("MASK", "PROBS"), binary=False)
    assert result.get_response()["outputs"][0]["data"][:3] == segmenter(IMAGE).ravel()[:3].tolist()
    np.testing.assert_array_equal(result.as_numpy("MASK"), segmenter(IMAGE))
    np.testing.assert_allclose(result.as_numpy("PROBS"), segmenter.probabilities(IMAGE), atol=1e-6)
    # what curl sends: the file as base64 in a JSON tensor, no outputs named: MASK only, as JSON
    body = {
        "inputs": [
            {
                "name": "IMAGE",
                "datatype": "BYTES",
                "shape": [1],
                "data": [base64.b64encode(_png(IMAGE)).decode()],
            }
        ]
    }
    status, raw = server.request("POST", "/v2/models/fcn/infer", json.dumps(body).encode(), AUTH)
    answer = json.loads(raw)
    assert status == 200 and [o["name"] for o in answer["outputs"]] == ["MASK"]
    assert answer["outputs"][0]["shape"] == [37, 53]
    np.testing.assert_array_equal(np.array(answer["outputs"][0]["data"]).reshape(37, 53), segmenter(IMAGE))


def test_bad_images_are_400_a_bomb_is_refused_from_its_header_and_the_server_stays_ready(server, client):
    for image, status, words in (
        (b"this is not an image at all", 400, "is not an image file"),
        (_png(IMAGE)[:200], 400, "cannot be decoded"),
        (_bomb(), 413, "9000 x 9000 px"),
    ):
        start = time.perf_counter()
        with pytest.raises(InferenceServerException, match=words) as caught:
            _ask(client, image)
        assert caught.value.status() == str(status)
        assert time.perf_counter() - start < 2.0  # 81 megapixels were never decoded
    status, raw = server.request("POST", "/v2/models/fcn/infer", b"{not json", AUTH)
    assert status == 400 and "not JSON" in json.loads(raw)["error"]
    status, raw = server.request(
        "POST", "/v2/models/fcn/infer", b"x" * 100, {**AUTH, "Inference-Header-Content-Length": "5000"}
    )
    assert status == 400 and "Inference-Header-Content-Length" in json.loads(raw)["error"]
    assert client.is_server_ready() and _ask(client, IMAGE).as_numpy("MASK").shape == (37, 53)


def test_thirty_two_concurrent_requests_are_answered_right_or_refused_at_once(server, segmenter):
    big = np.random.default_rng(6).integers(0, 256, (320, 400, 3), dtype=np.uint8)
    expected = segmenter(big)
    outcomes = []

    def one():
        client = httpclient.InferenceServerClient(url=server.url)
        start = time.perf_counter()
        try:
            mask = _ask(client, big).as_numpy("MASK")
            outcomes.append(("ok", np.array_equal(mask, expected), time.perf_counter() - start))
        except InferenceServerException as exc:
            outcomes.append((exc.status(), "queue is full" in str(exc), time.perf_counter() - start))

    threads = [threading.Thread(target=one) for _ in range(32)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(outcomes) == 32
    assert all(right for _, right, _ in outcomes), (
        outcomes
    )  # every answer is the mask, every refusal says why
    assert {kind for kind, _, _ in outcomes} == {"ok", "503"}  # --max-queue 2: 32 at once overflow it
    slowest_ok = max(s for kind, _, s in outcomes if kind == "ok")
    assert min(s for kind, _, s in outcomes if kind == "503") < slowest_ok  # refused at once, not timed out


def test_a_bearer_token_guards_all_but_health_and_metrics_count_the_requests(server):
    assert server.get("/v2/health/live")[0] == 200 and server.get("/v2/health/ready")[0] == 200
    assert server.get("/v2/models/fcn/ready")[0] == 200
    for headers in (None, {"Authorization": "Bearer wrong"}, {"Authorization": KEY}):
        status, raw = server.get("/v2/models/fcn", headers)
        assert status == 401 and "Bearer" in json.loads(raw)["error"]
        assert server.request("POST", "/v2/models/fcn/infer", b"{}", headers)[0] == 401
        assert server.get("/metrics", headers)[0] == 401
    assert server.get("/v2/models/nope", AUTH)[0] == 404
    status, raw = server.get("/metrics", AUTH)
    text = raw.decode()
    assert status == 200
    for name in (
        'fcn_requests_total{code="200",route="infer"}',
        'fcn_requests_total{code="401",route="metadata"}',
        "fcn_request_duration_seconds_bucket",
        "fcn_batch_size_count",
        "fcn_queue_depth",
        'fcn_errors_total{reason="bad_request"}',
        'fcn_errors_total{reason="unavailable"}',
    ):
        assert name in text, name
    lines = [json.loads(line) for line in server.log.read_text().splitlines() if line.startswith("{")]
    assert {"time", "client", "method", "path", "status", "ms"} <= lines[-1].keys()
    assert KEY not in server.log.read_text()


@pytest.mark.slow
def test_same_size_requests_batch_and_sigterm_drains_the_one_in_flight_then_exits_0(
    checkpoint, segmenter, tmp_path
):
    # --batch-wait-ms 1500: a lone request waits in the batcher, in flight, when SIGTERM comes
    served = Served(
        checkpoint, tmp_path / "stderr.txt", "--max-batch", "2", "--batch-wait-ms", "1500", key=None
    )
    try:
        client = httpclient.InferenceServerClient(url=served.url, concurrency=2)
        start = time.perf_counter()
        pending = [client.async_infer("fcn", [_input(IMAGE)]) for _ in range(2)]
        masks = [p.get_result().as_numpy("MASK") for p in pending]
        assert time.perf_counter() - start < 1.4  # the second filled the batch: no 1.5 s wait
        assert all(np.array_equal(m, segmenter(IMAGE)) for m in masks)
        assert "fcn_batch_size_sum 2.0" in served.get("/metrics")[1].decode()
        answers = []

        def late():  # a client of its own: tritonclient's (gevent) clients stay in their thread
            answers.append(_ask(httpclient.InferenceServerClient(url=served.url), IMAGE).as_numpy("MASK"))

        thread = threading.Thread(target=late)
        thread.start()
        time.sleep(0.5)
        served.process.send_signal(signal.SIGTERM)
        thread.join(timeout=10)
        assert served.process.wait(timeout=10) == 0
        assert len(answers) == 1 and np.array_equal(answers[0], segmenter(IMAGE))
    finally:
        served.stop()


def _input(image: np.ndarray):
    one = httpclient.InferInput("IMAGE", list(image.shape), "UINT8")
    one.set_data_from_numpy(image, binary_data=True)
    return one
