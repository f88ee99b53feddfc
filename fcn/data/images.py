"""Reading images: one PIL image (RGB for the network), N-channel arrays (TIFF, .npy), their pixel
scale, and the layer input the paper's readers give.

Every reader raises one clear error naming the file (ValueError or FileNotFoundError) instead of
letting PIL or tifffile fail deep inside a data-loader worker."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image, ImageOps

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".npy")
"""Image file endings a VOC-layout folder may use, tried in this order (.tif/.tiff/.npy: N-channel
images, see read_channels)."""

ARRAY_EXTENSIONS = (".tif", ".tiff", ".npy")
"""Image files read as arrays of any channel count (tifffile, NumPy) instead of through PIL."""


def _open(path: Path) -> Image.Image:
    """Return the fully decoded PIL image at `path`, or raise ValueError naming the file."""
    try:
        img = Image.open(path)
        img.load()
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: file not found") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        reason = " ".join(str(exc).split()) or type(exc).__name__
        raise ValueError(
            f"{path}: cannot read the image ({reason}); the file is damaged, truncated or not an image"
        ) from None
    return img


_INTEGER_MODES = ("I", "I;16", "I;16B", "I;16L", "I;16N")


def to_rgb(image: Image.Image) -> Image.Image:
    """Return the image as 8-bit RGB, whatever its mode: the one rule every reader uses.

    16-bit (and 32-bit integer) grayscale is taken as 0..65535 and divided by 257, whatever its
    values (Pillow opens a 16-bit PNG as 'I;16' or 'I' depending on its version: both read alike);
    float ('F') images are taken as 0..1 when they fit, else clipped to 0..255; a palette image with
    transparency and RGBA/LA images lose their alpha (labels refer to the pixels, not a composite).
    """
    if image.mode == "RGB":
        return image
    if image.mode in _INTEGER_MODES or image.mode == "F":
        # PIL's convert('RGB') would clip these to 0..255 instead of rescaling them.
        values = np.asarray(image, dtype=np.float64)
        scale = 1.0 / 257.0
        if image.mode == "F":
            scale = 255.0 if values.max(initial=0.0) <= 1.0 else 1.0
        gray = np.clip(np.rint(values * scale), 0, 255).astype(np.uint8)
        return Image.fromarray(np.repeat(gray[:, :, None], 3, axis=2), mode="RGB")
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")  # PIL warns converting a transparent palette image straight to RGB
    return image.convert("RGB")


def read_image(path: str | os.PathLike, upright: bool = False) -> Image.Image:
    """Return the image at `path` as 8-bit RGB (any mode, see to_rgb); ValueError naming the file
    if it cannot be decoded. upright=True turns it as its EXIF orientation says (photos given to
    predict.py); datasets read pixels as stored, as their masks are."""
    img = _open(Path(path))
    if upright:
        img = ImageOps.exif_transpose(img)
    return to_rgb(img)


def _array_file(path: Path) -> np.ndarray:
    """Return the pixels of a .npy or TIFF file as stored, with TIFF planes moved last (HxWxC)."""
    try:
        if path.suffix.lower() == ".npy":
            return np.load(path, allow_pickle=False)
        import tifffile  # imported here: only N-channel datasets need it

        with tifffile.TiffFile(path) as tif:
            series = tif.series[0]
            array, axes = series.asarray(), series.axes
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: file not found") from None
    except Exception as exc:  # NumPy and tifffile raise several unrelated types for damaged files
        reason = " ".join(str(exc).split()) or type(exc).__name__
        raise ValueError(
            f"{path}: cannot read the image ({reason}); the file is damaged or not an image"
        ) from None
    # tifffile names the axes: 'YXS' is interleaved (samples last); 'CYX', 'SYX', 'QYX' or 'IYX'
    # is planar (one page or sample plane per channel), the usual layout of multispectral files.
    if array.ndim == 3 and axes[-2:] == "YX":
        array = np.moveaxis(array, 0, -1)
    return array


def image_array(path: str | os.PathLike, upright: bool = False) -> np.ndarray:
    """Return the pixels at `path` as stored, HxWxC (HxW files get C = 1): .tif/.tiff/.npy through
    tifffile/NumPy, other files through PIL (L/I;16/F one channel, LA two, RGB and palette three,
    RGBA four); ValueError naming the file when it cannot be read as an image."""
    path = Path(path)
    if path.suffix.lower() in ARRAY_EXTENSIONS:
        array = _array_file(path)
    else:
        img = _open(path)
        if upright:
            img = ImageOps.exif_transpose(img)
        if img.mode == "P":
            img = img.convert("RGBA" if "transparency" in img.info else "RGB")
        elif img.mode in ("1", "CMYK", "YCbCr", "LAB", "HSV"):
            img = img.convert("RGB" if img.mode != "1" else "L")
        array = np.array(img)  # a copy: torch.from_numpy wants writable memory
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim != 3:
        raise ValueError(f"{path}: image array has shape {array.shape}; expected HxWxC or HxW")
    return array


class LayerInput(np.ndarray):
    """An H x W x C float32 array that is the network input already: the authors' data-layer input
    (fcn/data/paper.py: NYUDv2's stacked modalities, SIFT Flow's BGR, each minus its mean). The
    transforms move it geometrically and do not scale or normalise it (unlike read_channels' float
    pixels, which are on the 0-255 scale). Make one with ``array.view(LayerInput)``."""


def read_channels(
    path: str | os.PathLike, channels: int = 3, upright: bool = False
) -> Image.Image | np.ndarray:
    """Return the image at `path` with `channels` channels: an 8-bit RGB PIL image when channels is 3
    and the file is not a .tif/.tiff/.npy (read_image, unchanged), else an HxWxC array, uint8 for
    8-bit pixels and float32 on the 0-255 scale otherwise (16-bit / 257, float * 255: a float 1.0
    is white). ValueError naming the file when it has another channel count or an unsupported type.

    Arrays may be HxWxC or HxW (one channel); a TIFF may also be planar (CxHxW, tifffile's 'CYX').
    PIL files give their own channels: L/I;16/F one, LA two, RGB (and palette) three, RGBA four.
    """
    path = Path(path)
    if path.suffix.lower() not in ARRAY_EXTENSIONS and channels == 3:
        return read_image(path, upright)
    array = image_array(path, upright)
    if array.ndim == 3 and array.shape[2] == 1 and channels == 3:
        array = np.repeat(array, 3, axis=2)  # grey for an RGB model, as to_rgb does for PIL images
    if array.shape[2] != channels:
        raise ValueError(
            f"{path}: image has {array.shape[2]} channels, expected {channels} (model.in_channels); "
            "fix the file or set model.in_channels"
        )
    return scale_pixels(array, path)


def scale_pixels(array: np.ndarray, path: str | os.PathLike = "image") -> np.ndarray:
    """Return an HxWxC array on the 0-255 scale the transforms take: uint8 as it is (no copy),
    uint16 (and bool) as float32 x / 257 (x * 255), float as float32 x * 255; ValueError otherwise."""
    if array.dtype == np.uint8:
        return array
    if array.dtype == np.bool_:
        return array.astype(np.float32) * np.float32(255.0)
    if array.dtype == np.uint16:
        return array.astype(np.float32) / np.float32(257.0)
    if np.issubdtype(array.dtype, np.floating):
        out = array.astype(np.float32) * np.float32(255.0)
        if not np.isfinite(out).all():
            raise ValueError(
                f"{path}: image holds NaN or infinite values; fill them (e.g. 0) before training"
            )
        return out
    raise ValueError(
        f"{path}: pixel type {array.dtype} is not supported; save images as uint8, uint16 or float "
        "(float 1.0 = the 8-bit 255)"
    )


def display_pixels(image: Image.Image | np.ndarray, display: Sequence[int] = ()) -> np.ndarray:
    """Return the HxWx3 uint8 picture of an image as read_channels gives it: the channels `display`
    names (three as R, G, B, one as grey; empty: 0-2, or 0 as grey below three channels), float
    pixels rounded and clipped to 0..255 (data.display_channels)."""
    array = np.asarray(image)
    if array.ndim == 2:
        array = array[:, :, None]
    shown = list(display) or ([0, 1, 2] if array.shape[2] >= 3 else [0])
    picture = array[:, :, shown if len(shown) == 3 else shown * 3]
    if picture.dtype != np.uint8:
        picture = np.clip(np.rint(picture), 0, 255).astype(np.uint8)
    return np.ascontiguousarray(picture)


def image_size(image: Image.Image | np.ndarray) -> tuple[int, int]:
    """Return (width, height) of a PIL image or an HxW(xC) array."""
    if isinstance(image, np.ndarray):
        return int(image.shape[1]), int(image.shape[0])
    return image.width, image.height
