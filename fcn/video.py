"""Segment a video frame by frame (predict.py --input clip.mp4): an overlay video at the clip's size
and frame rate, and optionally each frame's class-index PNG.

Decoding and encoding go through PyAV (``av`` on PyPI: bindings to FFmpeg's libraries, with FFmpeg
in its wheels), so every container and codec FFmpeg reads is accepted; torchvision.io has no video
functions in the torchvision this project pins (0.29). The overlay is H.264 (libx264) in an MP4;
frames keep their presentation times, so the output has the input's frame count and rate.
"""

from __future__ import annotations

import os
from contextlib import closing
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fcn.api import Segmenter

VIDEO_SUFFIXES = (".mp4", ".mov", ".avi", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg")
"""Inputs predict.py reads as videos (frame by frame) rather than as images."""


def is_video(path: str | os.PathLike) -> bool:
    """Return whether predict.py treats path as a video (by its suffix)."""
    return Path(path).suffix.lower() in VIDEO_SUFFIXES


def _import_av():
    try:
        import av
    except ImportError:
        raise ValueError("segmenting a video needs PyAV: pip install av") from None
    return av


def _frames(av, path: Path):
    """Yield the video's frames as RGB PIL images (int8's calibration images); nothing if unreadable."""
    try:
        with av.open(str(path)) as source:
            for frame in source.decode(video=0):
                yield frame.to_image()
    except (av.error.FFmpegError, OSError):
        return


def predict_video(
    segmenter: Segmenter,
    path: str | os.PathLike,
    output_dir: str | os.PathLike,
    *,
    alpha: float = 0.5,
    save_frames: bool = False,
    progress: bool = True,
) -> int:
    """Segment every frame of the video at path with a fcn.api.Segmenter (its config's eval.*
    options; int8 calibrates on the clip's first frames) and write <output_dir>/<stem>_overlay.mp4
    at the clip's size and frame rate; with save_frames, also <stem>_frames/<stem>_<frame:06d>.png
    (class indices); return the frames done. A file that is not a readable video is a ValueError
    naming it."""
    if segmenter.cfg.model.in_channels != 3:
        raise ValueError(
            f"{path}: video frames are RGB but the model takes model.in_channels={segmenter.cfg.model.in_channels} "
            "channels; give it images (.tif/.npy) instead"
        )
    av = _import_av()
    from tqdm import tqdm

    from fcn.core.files import atomic_write, sync
    from fcn.core.pipeline import WRITE_NICE, Behind, NetworkThreads, iterate_ahead
    from fcn.core.visualize import save_index_png

    path, out = Path(path), Path(output_dir)
    segmenter.calibrate(_frames(av, path))
    try:
        source = av.open(str(path))
    except (av.error.FFmpegError, OSError) as exc:
        raise ValueError(f"{path}: not a readable video ({exc})") from None
    out.mkdir(parents=True, exist_ok=True)
    frames_dir = out / f"{path.stem}_frames"
    if save_frames:
        frames_dir.mkdir(exist_ok=True)
    target = out / f"{path.stem}_overlay.mp4"
    done = 0

    def encode(tmp: Path) -> None:
        nonlocal done
        stream = source.streams.video[0]
        rate = stream.average_rate or stream.guessed_rate or 25
        width, height = stream.codec_context.width, stream.codec_context.height
        with av.open(str(tmp), mode="w", format="mp4") as sink:
            encoder = sink.add_stream("libx264", rate=rate)
            encoder.width, encoder.height = width, height
            # 4:2:0, what every player decodes, needs even sides; odd ones keep full chroma instead.
            encoder.pix_fmt = "yuv420p" if width % 2 == 0 and height % 2 == 0 else "yuv444p"
            encoder.time_base = stream.time_base
            total = stream.frames or None
            # The next frames are decoded (and made the network's input: Segmenter.prepare) ahead and
            # the finished ones drawn and encoded behind the network, in order (one thread: the
            # encoder takes frames in presentation order).
            decoded = iterate_ahead(
                (frame, *segmenter.prepare(frame.to_image())) for frame in source.decode(stream)
            )

            def finish(frame: Any, image: Any, mask: Any, index: int) -> None:
                blended = segmenter.overlay(image, alpha=alpha, mask=mask)
                picture = av.VideoFrame.from_ndarray(blended, format="rgb24")
                picture.pts, picture.time_base = frame.pts, frame.time_base
                for packet in encoder.encode(picture):
                    sink.mux(packet)
                if save_frames:
                    path_png = frames_dir / f"{path.stem}_{index:06d}.png"
                    save_index_png(mask, segmenter.palette, path_png, durable=False)

            # The network's share of the cores beside the decoder and encoder threads: measured.
            threads = NetworkThreads(
                segmenter.engine == "torch" and segmenter.device.type == "cpu", iterations=total
            )
            with closing(decoded), threads, Behind(workers=1, queue=4, nice=WRITE_NICE) as behind:
                for frame, image, x in tqdm(
                    decoded, total=total, desc=path.name, unit="frame", disable=not progress
                ):
                    threads.step()
                    behind.submit(finish, frame, image, segmenter.segment(image, x), done)
                    done += 1
            for packet in encoder.encode():  # flush the encoder's delayed frames
                sink.mux(packet)
        if done == 0:
            raise ValueError(f"{path}: no frame could be decoded")

    try:
        if not source.streams.video:
            raise ValueError(f"{path}: no video stream")
        atomic_write(target, encode)  # written whole or not at all: never a half video
    except av.error.FFmpegError as exc:
        raise ValueError(f"{path}: {exc}") from None
    finally:
        source.close()
    if save_frames:
        sync()  # the frame PNGs, written without an fsync each
    return done
