"""Serve a web page that segments images with a checkpoint (Gradio, on 127.0.0.1 unless --host or
GRADIO_SERVER_NAME says otherwise): upload an image or pick a validation image; see the overlay
(with an opacity slider), the colour mask with its legend, each class's share of the pixels, and
the engine and fast path that run the model.

    pip install -r requirements.demo.txt     # Gradio: optional, only the demo needs it
    python demo.py --checkpoint runs/toy/checkpoints/best.pt            # http://127.0.0.1:7860/
    python demo.py --checkpoint best.pt --fast-path auto --port 8000 --images photos/
    python demo.py --checkpoint best.pt --host 0.0.0.0    # reachable from other machines, on purpose
    python demo.py --checkpoint best.pt --max-pixels 4000000 --max-file-size 25 --queue-size 8

The model runs with the page's eval settings (one scale, no flip, eval.max_memory=auto:
fcn.demo.PAGE_EVAL), whatever the checkpoint's config says; the eval flags here and key=value
overrides change them.
"""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from fcn.cli import add_config_arguments, add_eval_arguments, add_trust_argument, eval_overrides
from fcn.core.errors import leave, run_phases

# The page's bounds (fcn/demo.py); fcn.demo imports no Gradio, so this import is cheap.
from fcn.demo import CONCURRENCY, DECODE_FACTOR, MAX_FILE_MB, MAX_PIXELS, QUEUE_SIZE


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Return the parsed command line."""
    p = argparse.ArgumentParser(description="Serve the segmentation demo page (on 127.0.0.1 by default).")
    p.add_argument("--checkpoint", required=True, help="checkpoint (.pt) written by train.py or imported")
    add_config_arguments(p, "the checkpoint's config")
    add_eval_arguments(p)
    p.add_argument(
        "--host",
        help="address to listen on (default: $GRADIO_SERVER_NAME, else 127.0.0.1: this machine only); "
        "0.0.0.0 makes the page reachable from other machines",
    )
    p.add_argument("--port", type=int, help="port to listen on (default: $GRADIO_SERVER_PORT, else 7860)")
    p.add_argument(
        "--images",
        metavar="DIR",
        help="offer the images of DIR as examples, the only files of this machine the page serves "
        "(default on 127.0.0.1: the checkpoint config's validation images; off loopback: none)",
    )
    add_trust_argument(p)
    p.add_argument(
        "--max-pixels",
        type=int,
        default=MAX_PIXELS,
        metavar="N",
        help=f"segment and show larger images downscaled to N pixels, said on the page (default {MAX_PIXELS:,}; "
        f"0: any size, within eval.max_memory); a PNG or TIFF of more than {DECODE_FACTOR} x N is refused",
    )
    p.add_argument(
        "--max-file-size",
        type=float,
        default=MAX_FILE_MB,
        metavar="MB",
        help=f"refuse larger uploads (Gradio's upload limit; default {MAX_FILE_MB:g} MB)",
    )
    p.add_argument(
        "--queue-size",
        type=int,
        default=QUEUE_SIZE,
        metavar="N",
        help=f"requests that may wait; more are told the queue is full (default {QUEUE_SIZE})",
    )
    p.add_argument(
        "--concurrency",
        type=int,
        default=CONCURRENCY,
        metavar="N",
        help=f"requests segmented at a time (default {CONCURRENCY}; each may use eval.max_memory)",
    )
    args = p.parse_intermixed_args(argv)
    for flag, value in (
        ("--max-pixels", args.max_pixels),
        ("--max-file-size", args.max_file_size),
        ("--queue-size", args.queue_size - 1),
        ("--concurrency", args.concurrency - 1),
    ):
        if value < 0:
            p.error(
                f"{flag} must be {'at least 1' if flag in ('--queue-size', '--concurrency') else 'positive or 0'}"
            )
    if args.max_file_size == 0:
        p.error("--max-file-size must be positive")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Serve until Ctrl-C; return the exit code (fcn.core.errors' rule: 2 if Gradio is missing or the
    port, checkpoint, config or --images is bad, 130 on Ctrl-C)."""
    args = parse_args(argv)

    def prepare():
        from fcn.demo import listen_address

        host, port = listen_address(args.host, args.port)  # first: a bad port stops before loading
        try:
            import gradio  # noqa: F401
        except ImportError:
            from fcn.demo import GRADIO_MISSING

            raise ValueError(GRADIO_MISSING) from None
        from fcn.demo import build_app, example_images, load_segmenter

        # the checkpoint's eval.* gives way to the page's (fcn.demo.PAGE_EVAL), then to these flags
        segmenter = load_segmenter(
            args.checkpoint, args.device, args.config, [*args.overrides, *eval_overrides(args)]
        )
        from fcn.demo import is_loopback

        examples = example_images(
            segmenter, args.images, trust_remote_code=args.trust_remote_code, public=not is_loopback(host)
        )
        app = build_app(
            segmenter,
            examples,
            max_pixels=args.max_pixels or None,
            max_file_mb=args.max_file_size,
            queue_size=args.queue_size,
            concurrency=args.concurrency,
        )
        return app, examples, host, port

    def work(prepared) -> int:
        from fcn.demo import serve, start_line

        app, examples, host, port = prepared
        print(start_line(host, port), flush=True)
        serve(app, port, examples, host=host)
        return 0

    return run_phases(prepare, work)


if __name__ == "__main__":
    sys.exit(leave(main()))
