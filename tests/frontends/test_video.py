"""predict.py on a video: an overlay video with the clip's frame count, size and frame rate."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest

import predict

av = pytest.importorskip("av")


def _write_clip(path, frames: int = 8, height: int = 48, width: int = 64, fps: int = 5) -> None:
    """Write a short H.264 clip: a bright box moving right on grey."""
    with av.open(str(path), mode="w") as sink:
        stream = sink.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for i in range(frames):
            image = np.full((height, width, 3), 128, np.uint8)
            image[10:30, 4 * i : 4 * i + 16] = 240
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                sink.mux(packet)
        for packet in stream.encode():
            sink.mux(packet)


def test_predict_writes_an_overlay_video_with_the_clips_frames_size_and_rate(setup, tmp_path, capsys):
    _, _, ckpt = setup
    clip, out = tmp_path / "clip.mp4", tmp_path / "out"
    _write_clip(clip)
    args = ["--checkpoint", str(ckpt), "--input", str(clip), "--output", str(out), "--device", "cpu"]
    assert predict.main([*args, "--no-progress", "--frames"]) == 0
    assert "clip_overlay.mp4 (8 frames)" in capsys.readouterr().out
    with av.open(str(out / "clip_overlay.mp4")) as video:
        stream = video.streams.video[0]
        frames = [frame.to_ndarray(format="rgb24") for frame in video.decode(stream)]
        assert stream.average_rate == Fraction(5)
    assert len(frames) == 8 and all(f.shape == (48, 64, 3) for f in frames)
    masks = sorted((out / "clip_frames").glob("clip_*.png"))
    assert [m.name for m in masks] == [f"clip_{i:06d}.png" for i in range(8)]
    assert not list(out.glob(".*"))  # no temporary file left behind
    # each frame's mask is the Segmenter's on that frame (its input made in the decoding thread)
    from PIL import Image

    from fcn import Segmenter

    seg = Segmenter.from_checkpoint(ckpt, device="cpu")
    with av.open(str(clip)) as video:
        pictures = [frame.to_image() for frame in video.decode(video.streams.video[0])]
    for picture, mask in zip(pictures, masks):
        assert np.array_equal(np.asarray(Image.open(mask)), seg(picture)), mask.name


def test_predict_names_a_broken_video_and_still_does_the_others(setup, tmp_path, capsys):
    _, _, ckpt = setup
    broken, clip = tmp_path / "broken.mp4", tmp_path / "clip.mp4"
    broken.write_bytes(b"not a video")
    _write_clip(clip, frames=2)
    args = ["--checkpoint", str(ckpt), "--input", str(broken), str(clip), "--output", str(tmp_path / "o")]
    assert predict.main([*args, "--device", "cpu", "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert "broken.mp4: not a readable video" in err and "1 input(s) failed" in err
    assert (tmp_path / "o" / "clip_overlay.mp4").is_file() and not (
        tmp_path / "o" / "broken_overlay.mp4"
    ).exists()
