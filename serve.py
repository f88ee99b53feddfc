"""Serve a checkpoint over HTTP in the Open Inference Protocol (KServe v2, as Triton and KServe speak
it): health, metadata and POST /v2/models/<name>/infer (IMAGE in; MASK and, when asked, PROBS out),
batched, bounded, with Prometheus metrics at /metrics (fcn/serving.py; docs/deployment.md).

    python serve.py --checkpoint runs/x/checkpoints/best.pt --port 8000
    FCN_API_KEY=... python serve.py --checkpoint best.pt --host 0.0.0.0 --port 8000 --fast-path auto
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Sequence

from fcn.cli import add_config_arguments, add_eval_arguments, eval_overrides
from fcn.core.errors import leave, run_phases

KEY_VARIABLE = "FCN_API_KEY"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Return the parsed command line."""
    from fcn.serving import BATCH_WAIT_MS, MAX_BATCH, MAX_FILE_MB, MAX_PIXELS, MAX_QUEUE

    p = argparse.ArgumentParser(description="Serve a checkpoint in the Open Inference Protocol (KServe v2).")
    p.add_argument("--checkpoint", required=True, help="checkpoint (.pt) or save_pretrained folder to serve")
    p.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)"
    )
    p.add_argument(
        "--port",
        type=int,
        default=8000,
        help="port to listen on (default 8000, as Triton's HTTP; 0: a free one, said in the start line)",
    )
    p.add_argument("--model-name", default="fcn", help="the model's name in /v2/models/<name> (default fcn)")
    p.add_argument(
        "--max-batch",
        type=int,
        default=MAX_BATCH,
        help=f"images of one size segmented together (default {MAX_BATCH}; 1: no batching)",
    )
    p.add_argument(
        "--batch-wait-ms",
        type=float,
        default=BATCH_WAIT_MS,
        help=f"how long a request waits for others to batch with (default {BATCH_WAIT_MS:g})",
    )
    p.add_argument(
        "--max-queue",
        type=int,
        default=MAX_QUEUE,
        help=f"requests that may wait; one more gets 503 at once (default {MAX_QUEUE})",
    )
    p.add_argument(
        "--max-request-mb",
        type=float,
        default=MAX_FILE_MB,
        help=f"largest request body in MB (default {MAX_FILE_MB:g}; 413 above)",
    )
    p.add_argument(
        "--max-pixels",
        type=int,
        default=MAX_PIXELS,
        help=f"largest image in pixels (default {MAX_PIXELS:,}; 413 above, from the header)",
    )
    p.add_argument(
        "--api-key",
        default=None,
        help=f"require 'Authorization: Bearer <key>' (default: ${KEY_VARIABLE} when set; prefer the variable: "
        "a flag shows in the process list)",
    )
    add_config_arguments(p, "the checkpoint's config")
    add_eval_arguments(p)
    args = p.parse_intermixed_args(argv)
    if not 0 <= args.port < 65536:
        p.error(f"--port {args.port} is not a port number (1..65535; 0: a free one)")
    for flag, value in (
        ("--max-batch", args.max_batch),
        ("--max-queue", args.max_queue),
        ("--max-pixels", args.max_pixels),
    ):
        if value < 1:
            p.error(f"{flag} {value} must be at least 1")
    if args.batch_wait_ms < 0 or args.max_request_mb <= 0:
        p.error("--batch-wait-ms must be 0 or more and --max-request-mb more than 0")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Serve until SIGTERM or Ctrl-C; return the exit code (fcn.core.errors' rule: 2 if the
    checkpoint or config is bad, 0 after a drained shutdown)."""
    args = parse_args(argv)
    api_key = args.api_key or os.environ.get(KEY_VARIABLE) or None

    def prepare():
        from fcn.api import Segmenter
        from fcn.serving import build_app

        overrides = [*args.overrides, *eval_overrides(args)]
        segmenter = Segmenter.from_checkpoint(
            args.checkpoint, device=args.device, config=args.config, overrides=overrides
        )
        return build_app(
            segmenter,
            model_name=args.model_name,
            max_batch=args.max_batch,
            batch_wait_ms=args.batch_wait_ms,
            max_queue=args.max_queue,
            max_request_mb=args.max_request_mb,
            max_pixels=args.max_pixels,
            api_key=api_key,
        )

    def work(app) -> int:
        from fcn.serving import listen, serve, start_line

        sock = listen(args.host, args.port)
        print(start_line(args.host, sock.getsockname()[1], args.model_name, api_key), flush=True)
        return serve(app, sock)

    return run_phases(prepare, work)


if __name__ == "__main__":
    sys.exit(leave(main()))
