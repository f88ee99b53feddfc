"""Segment images and videos with a checkpoint: per image, a class-index PNG, a colour mask, an
overlay on the image and a legend of the classes present, with the class names and palette of the
model's config; per video (.mp4, .mov, .avi, .mkv, ...), an overlay video <stem>_overlay.mp4 at its
size and frame rate (and with --frames, each frame's class-index PNG).

    python predict.py --checkpoint runs/x/checkpoints/best.pt --input photo.jpg folder/ --output out/
    python predict.py --checkpoint best.pt --input folder/ --output out/ --flip --scales 0.75 1.0 1.25
    python predict.py --checkpoint best.pt --input photo_4000x3000.jpg --output out/ --mode slide --tile 512
    python predict.py --checkpoint best.pt --input clip.mp4 --output out/ [--frames]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

from fcn.cli import add_config_arguments, add_eval_arguments, eval_overrides
from fcn.core.errors import EXIT_FAILURE, leave, run_phases


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Return the parsed command line."""
    p = argparse.ArgumentParser(
        description="Write <stem>.png (class indices), <stem>_color.png, <stem>_overlay.png and "
        "<stem>_legend.png for each input image."
    )
    p.add_argument("--checkpoint", required=True, help="checkpoint (.pt) written by train.py or imported")
    p.add_argument(
        "--input",
        required=True,
        nargs="+",
        metavar="IMAGE_OR_DIR",
        help="image files, video files (.mp4, .mov, .avi, .mkv, ...) and/or directories of images",
    )
    p.add_argument("--output", required=True, metavar="DIR", help="directory for the output PNGs (created)")
    add_config_arguments(p, "the checkpoint's config")
    add_eval_arguments(p)
    p.add_argument(
        "--frames",
        action="store_true",
        help="videos: also write each frame's class-index PNG to DIR/<stem>_frames/",
    )
    p.add_argument(
        "--alpha", type=float, default=0.5, help="opacity of the colour mask in the overlay (default 0.5)"
    )
    p.add_argument(
        "--outputs",
        nargs="+",
        default=["mask", "color", "overlay", "legend"],
        choices=["mask", "color", "overlay", "legend"],
        metavar="KIND",
        help="images: which files to write, of mask (<stem>.png), color, overlay and legend (default: "
        "all four; a binary or multilabel model: mask and overlay); fewer is faster",
    )
    args = p.parse_intermixed_args(argv)
    if not 0.0 <= args.alpha <= 1.0:
        p.error(f"--alpha {args.alpha} must be between 0 and 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Segment the inputs; return the exit code (fcn.core.errors' rule: 2 if the checkpoint or config is
    bad or no input exists, 1 if any input failed, after doing the others)."""
    args = parse_args(argv)
    from fcn.api import Segmenter
    from fcn.files import check_outputs, list_images, predict_files
    from fcn.video import is_video, predict_video

    def prepare():
        files, missing = list_images(args.input)
        for line in missing:
            print(f"error: {line}", file=sys.stderr)
        if not files:
            raise FileNotFoundError("no input image to segment (see above); give image files or directories")
        overrides = [*args.overrides, *eval_overrides(args)]
        segmenter = Segmenter.from_checkpoint(
            args.checkpoint, device=args.device, config=args.config, overrides=overrides
        )
        check_outputs(args.outputs, segmenter.task)  # before any work: one line naming the bad kind
        return segmenter, files, missing

    def work(prepared) -> int:
        segmenter, files, missing = prepared
        videos = [f for f in files if is_video(f)]
        images = [f for f in files if not is_video(f)]
        done, unreadable = 0, []
        if images:
            done, unreadable = predict_files(
                segmenter,
                images,
                args.output,
                alpha=args.alpha,
                progress=not args.no_progress,
                outputs=args.outputs,
            )
            print(f"wrote {done} image(s) to {Path(args.output)}")
        for video in videos:
            try:
                frames = predict_video(
                    segmenter,
                    video,
                    args.output,
                    alpha=args.alpha,
                    save_frames=args.frames,
                    progress=not args.no_progress,
                )
            except ValueError as exc:
                print(f"error: {exc}", file=sys.stderr)
                unreadable.append(str(exc))
                continue
            done += 1
            print(f"wrote {Path(args.output) / (video.stem + '_overlay.mp4')} ({frames} frames)")
        failed = len(missing) + len(unreadable)
        if failed:
            others = "the others were written" if done else "nothing was written"
            print(f"error: {failed} input(s) failed (listed above); {others}", file=sys.stderr)
            return EXIT_FAILURE
        return 0

    return run_phases(prepare, work)


if __name__ == "__main__":
    sys.exit(leave(main()))
