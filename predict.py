"""Segment images and videos with a checkpoint: per image, a class-index PNG, a colour mask, an
overlay on the image and a legend of the classes present, with the class names and palette of the
model's config; per video (.mp4, .mov, .avi, .mkv, ...), an overlay video <stem>_overlay.mp4 at its
size and frame rate (and with --frames, each frame's class-index PNG).

    python predict.py --checkpoint runs/x/checkpoints/best.pt --input photo.jpg folder/ --output out/
    python predict.py --checkpoint best.pt --input folder/ --output out/ --flip --scales 0.75 1.0 1.25
    python predict.py --checkpoint best.pt --input photo_4000x3000.jpg --output out/ --mode slide --tile 512
    python predict.py --checkpoint best.pt --input clip.mp4 --output out/ [--frames]
    torchrun --nproc_per_node=4 predict.py --checkpoint best.pt --input folder/ --output out/ [--resume]
    python predict.py --checkpoint best.pt --input folder/ --output out/ --export labelstudio tasks.json

Under torchrun each process segments every N-th input (the same files and bytes as one process);
--resume skips the images whose output files all exist (a run stopped before its end goes on).
--export FORMAT PATH also writes the images' masks as pre-annotations a labelling tool imports
(fcn.inference.preannotations: Label Studio JSON, COCO RLE JSON, CVAT's Segmentation mask 1.1 folder or .zip).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from fcn.cli import add_config_arguments, add_eval_arguments, eval_overrides
from fcn.core.errors import EXIT_FAILURE, leave, run_phases

if TYPE_CHECKING:
    from fcn.inference.preannotations import Export


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
    p.add_argument(
        "--resume",
        action="store_true",
        help="skip the images whose output files (--outputs) all exist in DIR: a stopped run goes on "
        "(without it, every output is written again)",
    )
    add_export_arguments(p)
    args = p.parse_intermixed_args(argv)
    if not 0.0 <= args.alpha <= 1.0:
        p.error(f"--alpha {args.alpha} must be between 0 and 1")
    if args.export and args.export[0] not in EXPORT_FORMATS:
        p.error(f"--export {args.export[0]}: choose one of {', '.join(EXPORT_FORMATS)}")
    return args


EXPORT_FORMATS = ("coco", "cvat_mask", "labelstudio")  # fcn.inference.preannotations.FORMATS (a test says so)


def add_export_arguments(p: argparse.ArgumentParser) -> None:
    """Add --export and the flags that say how its file names images and classes."""
    p.add_argument(
        "--export",
        nargs=2,
        metavar=("FORMAT", "PATH"),
        help="also write the images' masks as pre-annotations: labelstudio FILE.json (Label Studio tasks "
        "with brush predictions), coco FILE.json (COCO, RLE masks), cvat_mask DIR or FILE.zip (CVAT "
        "Segmentation mask 1.1); made from the mask files, so keep mask in --outputs",
    )
    p.add_argument(
        "--export-image-root",
        default=None,
        metavar="PREFIX",
        help="labelstudio: written before each image's path (default /data/local-files/?d=, Label "
        "Studio's local files storage; or a URL prefix such as https://host/images/)",
    )
    p.add_argument(
        "--export-image-base",
        default=None,
        metavar="DIR",
        help="labelstudio, coco: image paths are written relative to DIR (default: "
        "$LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT for labelstudio if set, else the current directory)",
    )
    p.add_argument(
        "--export-from-name", default="tag", help="labelstudio: the BrushLabels name (default tag)"
    )
    p.add_argument("--export-to-name", default="image", help="labelstudio: the Image name (default image)")
    p.add_argument(
        "--export-model-version",
        default=None,
        help="labelstudio: model_version (default: the checkpoint's name)",
    )


def export_target(args: argparse.Namespace, segmenter) -> Export | None:
    """Return the fcn.inference.preannotations.Export that args ask for (None without --export), checked."""
    import os

    from fcn.inference.preannotations import LOCAL_FILES, Export, check_export

    if not args.export:
        return None
    fmt, path = args.export
    base = args.export_image_base
    if base is None:
        base = os.environ.get("LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT", ".") if fmt == "labelstudio" else "."
    export = Export(
        format=fmt,
        path=Path(path),
        task=segmenter.task,
        classes=tuple(segmenter.classes),
        palette=segmenter.palette,
        untinted=segmenter.untinted,
        image_root=LOCAL_FILES if args.export_image_root is None else args.export_image_root,
        image_base=Path(base),
        from_name=args.export_from_name,
        to_name=args.export_to_name,
        model_version=args.export_model_version or Path(args.checkpoint).name,
    )
    check_export(export, args.outputs)
    return export


def main(argv: Sequence[str] | None = None) -> int:
    """Segment the inputs; return the exit code (fcn.core.errors' rule: 2 if the checkpoint or config is
    bad or no input exists, 1 if any input failed, after doing the others)."""
    args = parse_args(argv)
    from fcn.api import Segmenter
    from fcn.core import distributed
    from fcn.core.runtime import select_device
    from fcn.files import check_outputs, list_images, predict_files, share_of
    from fcn.video import is_video, predict_video

    def prepare():
        # torchrun: every process lists every input and segments its share (fcn.files.share_of)
        device = distributed.process_device(args.device)
        info = distributed.setup(select_device(device))
        files, missing = list_images(args.input)
        for line in missing if info.is_primary else ():
            print(f"error: {line}", file=sys.stderr)
        if not files:
            raise FileNotFoundError("no input image to segment (see above); give image files or directories")
        overrides = [*args.overrides, *eval_overrides(args)]
        segmenter = Segmenter.from_checkpoint(
            args.checkpoint, device=device, config=args.config, overrides=overrides
        )
        check_outputs(args.outputs, segmenter.task)  # before any work: one line naming the bad kind
        export = export_target(args, segmenter)
        if export is not None and export.format != "cvat_mask":
            from fcn.inference.preannotations import image_reference

            for file in files:
                if not is_video(file):
                    image_reference(file, export)  # an image the file cannot name: one line, before any work
        return segmenter, files, missing, info, export

    def work(prepared) -> int:
        segmenter, files, missing, info, export = prepared
        videos = [f for f in files if is_video(f)][info.rank :: info.world_size]
        images = [f for f in files if not is_video(f)]
        done, unreadable, skipped, finished = 0, [], 0, []
        if images:
            mine, stems, skipped = share_of(
                images,
                args.output,
                rank=info.rank,
                world_size=info.world_size,
                resume=args.resume,
                outputs=check_outputs(args.outputs, segmenter.task),
                task=segmenter.task,
                classes=segmenter.classes,
            )
            done, unreadable = predict_files(
                segmenter,
                mine,
                args.output,
                alpha=args.alpha,
                progress=not args.no_progress and info.is_primary,
                outputs=args.outputs,
                stems=stems,
                calibration=images,  # int8: calibrated as one process calibrates, on the first images
                finished=finished,
            )
            total, nskipped = (sum(n) for n in zip(*distributed.all_gather_object((done, skipped))))
            if info.is_primary:
                kept = f" ({nskipped} skipped: their outputs were complete)" if nskipped else ""
                print(f"wrote {total} image(s) to {Path(args.output)}{kept}")
            if export is not None:
                write_preannotations(export, images, set(stems), set(finished), info)
            skipped = nskipped
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
        # every process ends with the run's exit code: the counts of all of them
        done, failed = (sum(n) for n in zip(*distributed.all_gather_object((done, len(unreadable)))))
        failed += len(missing)
        if failed and info.is_primary:
            others = "the others were written" if done + skipped else "nothing was written"
            print(f"error: {failed} input(s) failed (listed above); {others}", file=sys.stderr)
        return EXIT_FAILURE if failed else 0

    def write_preannotations(export, images, to_do: set[str], finished: set[str], info) -> None:
        # This process's share of the images segmented now or skipped by --resume (a failed one is
        # left out); their masks are read back from the files just written, then one process writes.
        from fcn.files import output_stems
        from fcn.inference.preannotations import export_share, write_export

        share = list(enumerate(zip(images, output_stems(images))))[info.rank :: info.world_size]
        jobs = [(i, f, s) for i, (f, s) in share if s not in to_do or s in finished]
        records = export_share(export, Path(args.output), jobs)
        gathered = [r for part in distributed.all_gather_object(records) for r in part]
        if info.is_primary:
            path = write_export(export, gathered)
            print(f"wrote {path} ({export.format}, {len(gathered)} image(s))")

    code = 1
    try:
        code = run_phases(prepare, work)
        return code
    finally:
        distributed.cleanup(synchronize=code == 0)


if __name__ == "__main__":
    sys.exit(leave(main()))
