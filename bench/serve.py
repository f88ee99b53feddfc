"""serve.py under load: throughput and p50/p99 latency at 1, 4 and 16 concurrent clients, with
batching (--max-batch) and without (--max-batch 1), against the Segmenter in-process on the same
images, in one run. Each client sends the binary tensor extension's request (UINT8 [H, W, 3] in,
MASK out) over its own keep-alive connection; every answer is checked against the Segmenter's mask.

    python -m bench.serve --checkpoint runs/toy/checkpoints/best.pt
    python -m bench.serve --checkpoint best.pt --size 500 500 --requests 64 --max-batch 8 --json r.json
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Sequence

import numpy as np

from bench.common import machine_info, markdown_table, write_json
from fcn import Segmenter

ROOT = Path(__file__).resolve().parents[1]


def request_body(image: np.ndarray) -> tuple[bytes, dict]:
    """Return (body, headers) of an inference request with image as binary UINT8 and MASK binary."""
    head = {
        "inputs": [
            {
                "name": "IMAGE",
                "datatype": "UINT8",
                "shape": list(image.shape),
                "parameters": {"binary_data_size": image.nbytes},
            }
        ],
        "outputs": [{"name": "MASK", "parameters": {"binary_data": True}}],
    }
    text = json.dumps(head).encode()
    headers = {"Inference-Header-Content-Length": str(len(text)), "Content-Type": "application/octet-stream"}
    return text + image.tobytes(), headers


def mask_of(raw: bytes, header_length: int) -> np.ndarray:
    """Return the MASK of a binary inference response."""
    head = json.loads(raw[:header_length])
    shape = head["outputs"][0]["shape"]
    return np.frombuffer(raw[header_length:], dtype=np.uint8).reshape(shape)


def start_server(
    checkpoint: str, max_batch: int, wait_ms: float, extra: Sequence[str]
) -> tuple[subprocess.Popen, int]:
    """Return (serve.py's process, its port) once it prints its start line."""
    process = subprocess.Popen(
        [sys.executable, str(ROOT / "serve.py"), "--checkpoint", checkpoint, "--port", "0"]
        + ["--max-batch", str(max_batch), "--batch-wait-ms", str(wait_ms), "--max-queue", "256", *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,  # the access lines
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    line = process.stdout.readline()
    if "127.0.0.1:" not in line:
        process.kill()
        raise SystemExit(f"serve.py did not start: {line!r}")
    return process, int(line.split("127.0.0.1:")[1].split("/")[0])


def load(port: int, images: list[np.ndarray], expected: list[np.ndarray], clients: int) -> dict:
    """Return throughput and latencies of len(images) requests spread over clients threads."""
    bodies = [request_body(image) for image in images]
    latencies, wrong = [], []
    lock = threading.Lock()
    next_index = iter(range(len(images)))

    def client():
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        while True:
            with lock:
                i = next(next_index, None)
            if i is None:
                break
            body, headers = bodies[i]
            start = time.perf_counter()
            conn.request("POST", "/v2/models/fcn/infer", body, headers)
            response = conn.getresponse()
            raw = response.read()
            seconds = time.perf_counter() - start
            ok = response.status == 200 and np.array_equal(
                mask_of(raw, int(response.getheader("Inference-Header-Content-Length"))), expected[i]
            )
            with lock:
                latencies.append(seconds)
                if not ok:
                    wrong.append(i)
        conn.close()

    start = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return summary(latencies, time.perf_counter() - start) | {"wrong": len(wrong)}


def summary(latencies: list[float], wall: float) -> dict:
    """Return images/s and p50/p99 latency in ms."""
    ordered = sorted(latencies)
    p99 = ordered[min(len(ordered) - 1, int(round(0.99 * (len(ordered) - 1))))]
    return {
        "images_per_s": len(latencies) / wall,
        "p50_ms": 1e3 * statistics.median(ordered),
        "p99_ms": 1e3 * p99,
    }


def main(argv: Sequence[str] | None = None) -> dict:
    """Run the benchmark; print the table and return the results."""
    p = argparse.ArgumentParser(prog="python -m bench.serve", description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--size", type=int, nargs=2, default=[320, 240], metavar=("W", "H"))
    p.add_argument("--requests", type=int, default=48, help="requests per concurrency level")
    p.add_argument("--clients", type=int, nargs="+", default=[1, 4, 16])
    p.add_argument("--max-batch", type=int, default=4, help="the batching server's --max-batch")
    p.add_argument("--batch-wait-ms", type=float, default=5.0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--json", default="bench/results/serve.json")
    args = p.parse_args(argv)
    width, height = args.size
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (height, width, 3), dtype=np.uint8) for _ in range(args.requests)]
    segmenter = Segmenter.from_checkpoint(args.checkpoint, device=args.device)
    expected = [segmenter(image) for image in images]  # also the warm-up

    latencies, start = [], time.perf_counter()
    for image in images:
        t = time.perf_counter()
        segmenter(image)
        latencies.append(time.perf_counter() - t)
    rows = [
        {"variant": "Segmenter in-process", "clients": 1} | summary(latencies, time.perf_counter() - start)
    ]
    rows[0]["wrong"] = 0
    del segmenter  # its threads would compete with the server's

    for name, batch in (
        (f"serve.py --max-batch {args.max_batch}", args.max_batch),
        ("serve.py --max-batch 1", 1),
    ):
        process, port = start_server(args.checkpoint, batch, args.batch_wait_ms, ["--device", args.device])
        try:
            load(port, images[:2], expected[:2], 1)  # warm-up
            for clients in args.clients:
                rows.append({"variant": name, "clients": clients} | load(port, images, expected, clients))
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=60)

    print(f"{width} x {height} px, {args.requests} requests per row, device {args.device}")
    print(
        markdown_table(
            ["variant", "clients", "images/s", "p50 ms", "p99 ms", "wrong"],
            [
                [
                    r["variant"],
                    r["clients"],
                    f"{r['images_per_s']:.1f}",
                    f"{r['p50_ms']:.1f}",
                    f"{r['p99_ms']:.1f}",
                    r["wrong"],
                ]
                for r in rows
            ],
        )
    )
    import torch

    result = {"machine": machine_info(torch.device(args.device)), "args": vars(args), "rows": rows}
    write_json(args.json, result)
    return result


if __name__ == "__main__":
    main()
