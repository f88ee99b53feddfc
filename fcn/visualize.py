"""Pictures of segmentations: colour masks, overlays, image | ground truth | prediction grids, legends.

Masks are class-index arrays (HxW, 255 = void); a palette is a (256, 3) uint8 array indexed by class
(``fcn.data.palette(cfg.data)``: the config's colours, else VOC's, whose void colour is (224, 224, 192)).
Images are HxWx3 uint8 RGB arrays (torch tensors and PIL images are accepted too).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from fcn.config import VOID  # the default of data.ignore_index

_BACKGROUND = 255  # white canvas behind tiles, titles and legends
_GAP = 4  # pixels between tiles


def _to_numpy(x: Any) -> np.ndarray:
    """Return ``x`` (ndarray, torch tensor or PIL image) as a NumPy array."""
    if isinstance(x, np.ndarray):
        return x
    if isinstance(x, Image.Image):
        return np.asarray(x)
    if hasattr(x, "detach"):  # torch.Tensor, without importing torch here
        return x.detach().cpu().numpy()
    return np.asarray(x)


def _check_palette(palette: Any) -> np.ndarray:
    """Return ``palette`` if it is a (256, 3) uint8 array, else raise ValueError."""
    palette = np.asarray(palette)
    if palette.shape != (256, 3) or palette.dtype != np.uint8:
        raise ValueError(
            f"palette must be a (256, 3) uint8 array (e.g. fcn.data.palette(cfg.data)), "
            f"got shape {palette.shape} dtype {palette.dtype}"
        )
    return palette


def _check_mask(mask: Any, name: str = "mask") -> np.ndarray:
    """Return ``mask`` as a 2-D integer array with values in [0, 255], else raise ValueError."""
    mask = _to_numpy(mask)
    if mask.ndim == 3 and mask.shape[0] == 1:
        mask = mask[0]
    if mask.ndim != 2 or not (np.issubdtype(mask.dtype, np.integer) or mask.dtype == np.bool_):
        raise ValueError(
            f"{name} must be a 2-D integer array of class indices, got shape {mask.shape} {mask.dtype}"
        )
    if mask.dtype != np.uint8 and mask.size and (mask.min() < 0 or mask.max() > 255):
        raise ValueError(
            f"{name} holds values outside [0, 255] ({mask.min()}..{mask.max()}): not a class-index mask"
        )
    return mask


def _check_image(image: Any) -> np.ndarray:
    """Return ``image`` as an HxWx3 uint8 RGB array (grayscale is repeated; alpha dropped)."""
    if isinstance(image, Image.Image):
        image = image.convert("RGB")
    image = _to_numpy(image)
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    if image.ndim != 3 or image.shape[2] not in (3, 4) or image.dtype != np.uint8:
        raise ValueError(
            f"image must be an HxWx3 uint8 RGB array (see fcn.data.transforms.denormalize), "
            f"got shape {image.shape} dtype {image.dtype}"
        )
    return image[:, :, :3]


def colorize(mask: Any, palette: np.ndarray) -> np.ndarray:
    """Return the HxWx3 uint8 colour image of a class-index mask (void 255 in the palette's colour 255)."""
    return _check_palette(palette)[_check_mask(mask).astype(np.intp)]


def overlay(
    image: Any, mask: Any, palette: np.ndarray, alpha: float = 0.5, ignore_index: int = VOID
) -> np.ndarray:
    """Return ``image`` blended with the mask's colours (``alpha`` = colour opacity), same HxWx3 uint8.

    Pixels labelled ``ignore_index`` (void) are left as the image, so only classes are tinted.
    """
    image = _check_image(image)
    mask = _check_mask(mask)
    if image.shape[:2] != mask.shape:
        raise ValueError(f"image is {image.shape[:2]} but mask is {mask.shape}: overlay needs the same H, W")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    colours = colorize(mask, palette).astype(np.float32)
    blended = np.rint((1.0 - alpha) * image.astype(np.float32) + alpha * colours).astype(np.uint8)
    return np.where((mask == ignore_index)[:, :, None], image, blended)


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    """Return PIL's default font at ``size`` pixels (older Pillow: its fixed bitmap font)."""
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has no size argument
        return ImageFont.load_default()


def _text_size(font: Any, text: str) -> tuple[int, int]:
    """Return the (width, height) of ``text`` in ``font``, height including the font's descent."""
    left, _, right, _ = font.getbbox(text)
    _, top, _, bottom = font.getbbox("Ag")
    return right - left, bottom - min(top, 0)


def legend(
    class_ids: Sequence[int],
    class_names: Sequence[str],
    palette: np.ndarray,
    max_width: int | None = None,
    font_size: int = 12,
) -> np.ndarray:
    """Return an HxWx3 uint8 image of colour swatches with class names, one column (or as many as fit
    in ``max_width`` pixels); ids without a name are labelled by their number."""
    palette = _check_palette(palette)
    font = _font(font_size)
    ids = [int(c) for c in class_ids]
    labels = [class_names[c] if 0 <= c < len(class_names) else str(c) for c in ids] or ["(no classes)"]
    _, line_h = _text_size(font, "Ag")
    swatch = line_h + 2
    pad = 4
    entry_w = pad + swatch + pad + max(_text_size(font, s)[0] for s in labels) + 2 * pad
    entry_h = swatch + pad
    columns = 1 if max_width is None else max(1, min(len(labels), (max_width - pad) // entry_w))
    rows = -(-len(labels) // columns)
    canvas = Image.new("RGB", (pad + columns * entry_w, pad + rows * entry_h), (_BACKGROUND,) * 3)
    draw = ImageDraw.Draw(canvas)
    for k, label in enumerate(labels):
        x = pad + (k // rows) * entry_w
        y = pad + (k % rows) * entry_h
        if ids:
            colour = tuple(int(v) for v in palette[ids[k] % 256])
            draw.rectangle([x, y, x + swatch - 1, y + swatch - 1], fill=colour, outline=(64, 64, 64))
        draw.text((x + swatch + pad, y + (swatch - line_h) // 2), label, fill=(0, 0, 0), font=font)
    return np.asarray(canvas).copy()


def prediction_grid(
    images: Sequence[Any],
    gts: Sequence[Any] | None,
    preds: Sequence[Any],
    palette: np.ndarray,
    class_names: Sequence[str] | None = None,
    min_height: int = 128,
    ignore_index: int = VOID,
) -> np.ndarray:
    """Return an HxWx3 uint8 grid, one row per image: image | ground truth | prediction, with column
    titles (gts=None: image | prediction); with class_names, a legend of the classes shown below.
    Rows lower than min_height pixels are enlarged by a whole factor (pixels repeated), so small
    images stay legible."""
    palette = _check_palette(palette)
    if gts is not None and len(gts) != len(images):
        raise ValueError(f"{len(images)} images but {len(gts)} ground-truth masks")
    if len(preds) != len(images):
        raise ValueError(f"{len(images)} images but {len(preds)} predictions")
    if len(images) == 0:
        raise ValueError("prediction_grid needs at least one image")

    rows: list[list[np.ndarray]] = []
    present: set[int] = set()
    for i, image in enumerate(images):
        image = _check_image(image)
        masks = [_check_mask(preds[i], f"preds[{i}]")]
        if gts is not None:
            masks.insert(0, _check_mask(gts[i], f"gts[{i}]"))
        for mask in masks:
            if mask.shape != image.shape[:2]:
                raise ValueError(f"row {i}: image is {image.shape[:2]} but a mask is {mask.shape}")
            present.update(int(c) for c in np.unique(mask) if c != ignore_index)
        tiles = [image] + [colorize(m, palette) for m in masks]
        factor = -(-min_height // image.shape[0]) if image.shape[0] < min_height else 1
        rows.append([tile.repeat(factor, axis=0).repeat(factor, axis=1) for tile in tiles])

    titles = ["image", "ground truth", "prediction"] if gts is not None else ["image", "prediction"]
    col_w = [max(row[c].shape[1] for row in rows) for c in range(len(titles))]
    row_h = [max(tile.shape[0] for tile in row) for row in rows]
    # Titles scale with the tiles: 10 px over thumbnails, up to 20 px over 500-pixel VOC images.
    font_size = int(np.clip(min(col_w) // 22, 10, 20))
    font = _font(font_size)
    _, text_h = _text_size(font, "Ag")
    title_h = text_h + 2 * _GAP
    width = sum(col_w) + _GAP * (len(col_w) + 1)
    height = title_h + sum(row_h) + _GAP * len(rows)

    canvas = np.full((height, width, 3), _BACKGROUND, dtype=np.uint8)
    y = title_h
    for row, h in zip(rows, row_h):
        x = _GAP
        for tile, w in zip(row, col_w):
            canvas[y : y + tile.shape[0], x : x + tile.shape[1]] = tile
            x += w + _GAP
        y += h + _GAP

    picture = Image.fromarray(canvas)
    draw = ImageDraw.Draw(picture)
    x = _GAP
    for title, w in zip(titles, col_w):
        tw, _ = _text_size(font, title)
        draw.text((x + max(0, (w - tw) // 2), _GAP), title, fill=(0, 0, 0), font=font)
        x += w + _GAP
    grid = np.asarray(picture).copy()

    if class_names is not None and present:
        key = legend(sorted(present), class_names, palette, max_width=width, font_size=max(12, font_size))
        out = np.full((grid.shape[0] + key.shape[0], max(width, key.shape[1]), 3), _BACKGROUND, np.uint8)
        out[: grid.shape[0], : grid.shape[1]] = grid
        out[grid.shape[0] :, : key.shape[1]] = key
        grid = out
    return grid


def save_png(array: Any, path: str | os.PathLike) -> None:
    """Write an HxW or HxWx3/4 uint8 array (or a PIL image) to ``path`` as PNG, atomically
    (fcn.checkpoint.atomic_write: readers never see a half-written file); parent directories are
    created."""
    from fcn.checkpoint import atomic_write  # imports torch: only when a picture is written

    picture = (
        array if isinstance(array, Image.Image) else Image.fromarray(np.ascontiguousarray(_to_numpy(array)))
    )

    def write(tmp: Path) -> None:
        with open(tmp, "xb") as f:
            picture.save(f, format="PNG")

    atomic_write(path, write)
