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
from fcn.core.files import atomic_write

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
    return _check_palette(palette).take(_check_mask(mask), axis=0)  # 3-4x palette[mask]'s speed


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
    palette = _check_palette(palette)
    # A tinted pixel is rint((1 - alpha) * pixel + alpha * colour) in float32: for each class present
    # and channel, 256 values, computed once as a table and looked up at (class << 8 | pixel), the
    # untinted label's row the identity. The same bytes as the arithmetic over every pixel, 2.5x faster.
    present = np.flatnonzero(np.bincount(mask.ravel().astype(np.intp, copy=False), minlength=256))
    levels = np.arange(256, dtype=np.float32)
    tables = np.empty((3, 256, 256), np.uint8)  # channel, class, pixel value
    tables[:] = np.arange(256, dtype=np.uint8)
    for k in (int(c) for c in present):
        if k != ignore_index:
            colour = palette[k].astype(np.float32)[:, None]
            tables[:, k, :] = np.rint((1.0 - alpha) * levels[None, :] + alpha * colour).astype(np.uint8)
    high = mask.astype(np.uint16) << 8
    out = np.empty(image.shape, np.uint8)
    for c in range(3):
        np.take(tables[c].reshape(-1), high | image[:, :, c], out=out[:, :, c])
    return out


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


def save_png(array: Any, path: str | os.PathLike, *, durable: bool = True) -> None:
    """Write an HxW or HxWx3/4 uint8 array (or a PIL image) to ``path`` as PNG, atomically
    (fcn.core.files.atomic_write: readers never see a half-written file; durable as it says);
    parent directories are created."""

    picture = (
        array if isinstance(array, Image.Image) else Image.fromarray(np.ascontiguousarray(_to_numpy(array)))
    )

    def write(tmp: Path) -> None:
        with open(tmp, "xb") as f:
            picture.save(f, format="PNG")

    atomic_write(path, write, durable=durable)


# ----------------------------------------------------------------------------- pictures of the errors


def _vertical_text(text: str, font: Any, colour: tuple[int, int, int] = (0, 0, 0)) -> Image.Image:
    """Return ``text`` drawn on white and turned 90 degrees counter-clockwise (reads bottom-up)."""
    w, h = _text_size(font, text)
    strip = Image.new("RGB", (w + 2, h + 2), (_BACKGROUND,) * 3)
    ImageDraw.Draw(strip).text((1, 1), text, fill=colour, font=font)
    return strip.rotate(90, expand=True)


def _cell_colour(share: float) -> tuple[int, int, int]:
    """Return white for 0 up to dark blue for 1 (a share of a row)."""
    light, dark = np.array([247, 251, 255]), np.array([8, 48, 107])
    return tuple(int(round(v)) for v in light + (dark - light) * min(max(share, 0.0), 1.0) ** 0.8)


def confusion_image(confusion: Any, class_names: Sequence[str], title: str | None = None) -> np.ndarray:
    """Return an HxWx3 uint8 picture of a confusion matrix (rows: ground truth, columns:
    prediction) normalised by rows: each cell shaded and labelled with the percentage of that
    class's pixels predicted as the column's class; class names on both axes; a row without pixels
    is grey."""
    mat = np.asarray(confusion, dtype=np.float64)
    n = len(class_names)
    if mat.shape != (n, n):
        raise ValueError(f"confusion matrix of shape {mat.shape} for {n} class names")
    totals = mat.sum(1, keepdims=True)
    shares = np.divide(mat, totals, out=np.zeros_like(mat), where=totals > 0)
    cell = int(np.clip(560 // n, 30, 72))  # 21 classes: 30 px cells; 3 classes: 72 px
    font = _font(int(np.clip(cell // 3, 10, 20)))
    label_font = _font(int(np.clip(cell // 2.5, 12, 18)))
    names = [str(c) for c in class_names]
    name_w = max(_text_size(label_font, s)[0] for s in names) + 2 * _GAP
    _, line_h = _text_size(label_font, "Ag")
    title_h = line_h + 2 * _GAP if title else 0
    left = line_h + 2 * _GAP + name_w  # the axis title, then the row names
    top = title_h + line_h + 2 * _GAP + name_w  # the title, the axis title, then the column names
    width, height = left + n * cell + _GAP, top + n * cell + _GAP
    canvas = Image.new("RGB", (width, height), (_BACKGROUND,) * 3)
    draw = ImageDraw.Draw(canvas)
    if title:
        draw.text((_GAP, _GAP), title, fill=(0, 0, 0), font=label_font)
    axis = "prediction"
    draw.text(
        (left + (n * cell - _text_size(label_font, axis)[0]) // 2, title_h + _GAP),
        axis,
        (0, 0, 0),
        label_font,
    )
    gt_axis = _vertical_text("ground truth", label_font)
    canvas.paste(gt_axis, (_GAP, top + max(0, (n * cell - gt_axis.height) // 2)))
    for i, name in enumerate(names):
        tw, _ = _text_size(label_font, name)
        draw.text(
            (left - _GAP - tw, top + i * cell + (cell - line_h) // 2), name, fill=(0, 0, 0), font=label_font
        )
        column = _vertical_text(name, label_font)
        canvas.paste(column, (left + i * cell + (cell - column.width) // 2, top - _GAP - column.height))
    _, digit_h = _text_size(font, "0")
    decimals = 1 if cell >= 48 else 0  # "99.6" fits a large cell; a small one gets ">99"
    for i in range(n):
        if totals[i, 0] == 0:
            y = top + i * cell
            draw.rectangle([left, y, left + n * cell - 1, y + cell - 1], fill=(225, 225, 225))
            note = "no pixels of this class in the ground truth"
            draw.text((left + _GAP, y + (cell - digit_h) // 2), note, fill=(110, 110, 110), font=font)
            continue
        for j in range(n):
            x, y = left + j * cell, top + i * cell
            share = shares[i, j]
            draw.rectangle(
                [x, y, x + cell - 1, y + cell - 1], fill=_cell_colour(share), outline=(230, 230, 230)
            )
            if mat[i, j] == 0:
                continue
            percent = 100 * share
            text = f"{percent:.{decimals}f}"
            if percent < 10**-decimals:
                text = f"<{10**-decimals:g}"
            elif percent < 100 and text.startswith("100"):
                text = f">{100 - 10**-decimals:g}"
            tw, _ = _text_size(font, text)
            colour = (255, 255, 255) if share > 0.45 else (0, 0, 0)
            draw.text((x + (cell - tw) // 2, y + (cell - digit_h) // 2), text, fill=colour, font=font)
    for k in range(n):  # the diagonal (correct pixels) outlined
        x, y = left + k * cell, top + k * cell
        draw.rectangle([x, y, x + cell - 1, y + cell - 1], outline=(200, 60, 30))
    return np.asarray(canvas).copy()


def iou_chart(
    iou: Sequence[float],
    class_names: Sequence[str],
    palette: np.ndarray | None = None,
    title: str | None = None,
) -> np.ndarray:
    """Return an HxWx3 uint8 horizontal bar chart of per-class IU (0..1): one bar per class with its
    name and value in percent, a class absent from ground truth and prediction (NaN) marked
    'absent', and a line at the mean IU over the present classes; bars in the palette's colours
    when one is given."""
    values = [float(v) for v in iou]
    if len(values) != len(class_names):
        raise ValueError(f"{len(values)} IU values for {len(class_names)} class names")
    if palette is not None:
        palette = _check_palette(palette)
    font = _font(14)
    _, line_h = _text_size(font, "Ag")
    bar_h = line_h + 8
    names = [str(c) for c in class_names]
    name_w = max(_text_size(font, s)[0] for s in names) + 3 * _GAP
    plot_w = 400
    value_w = _text_size(font, "100.0 ")[0] + _GAP + _text_size(font, "absent")[0]
    title_h = line_h + 3 * _GAP if title else _GAP
    axis_h = line_h + 3 * _GAP
    width = name_w + plot_w + value_w + 2 * _GAP
    height = title_h + len(values) * bar_h + axis_h + line_h + 2 * _GAP
    canvas = Image.new("RGB", (width, height), (_BACKGROUND,) * 3)
    draw = ImageDraw.Draw(canvas)
    if title:
        draw.text((_GAP, _GAP), title, fill=(0, 0, 0), font=font)
    x0, y0 = name_w, title_h
    bottom = y0 + len(values) * bar_h
    for tick in range(0, 101, 20):  # a light grid every 20 points
        x = x0 + plot_w * tick // 100
        draw.line([x, y0, x, bottom], fill=(225, 225, 225))
        tw, _ = _text_size(font, str(tick))
        draw.text((x - tw // 2, bottom + _GAP), str(tick), fill=(90, 90, 90), font=font)
    present = [v for v in values if not np.isnan(v)]
    mean = float(np.mean(present)) if present else float("nan")
    if present:  # dashed, behind the bars and their labels
        x = x0 + int(round(plot_w * mean))
        for yy in range(y0, bottom, 6):
            draw.line([x, yy, x, min(yy + 3, bottom)], fill=(200, 40, 40), width=2)
    for k, (name, value) in enumerate(zip(names, values)):
        y = y0 + k * bar_h
        tw, _ = _text_size(font, name)
        draw.text((name_w - _GAP - tw, y + (bar_h - line_h) // 2), name, fill=(0, 0, 0), font=font)
        if np.isnan(value):
            draw.text((x0 + _GAP, y + (bar_h - line_h) // 2), "absent", fill=(150, 150, 150), font=font)
            continue
        colour = (70, 110, 170) if palette is None else tuple(int(c) for c in palette[k % 256])
        length = int(round(plot_w * min(max(value, 0.0), 1.0)))
        draw.rectangle([x0, y + 3, x0 + max(length, 1), y + bar_h - 4], fill=colour, outline=(60, 60, 60))
        label = f"{100 * value:.1f}"
        lx, ly = x0 + length + _GAP, y + (bar_h - line_h) // 2
        draw.rectangle(
            [lx - 1, ly, lx + _text_size(font, label)[0] + 1, ly + line_h], fill=(_BACKGROUND,) * 3
        )
        draw.text((lx, ly), label, fill=(0, 0, 0), font=font)
    if present:
        x = x0 + int(round(plot_w * mean))
        text = f"mean IU {100 * mean:.1f}"
        tw, _ = _text_size(font, text)
        draw.text(
            (min(max(x - tw // 2, 0), width - tw - _GAP), bottom + axis_h),
            text,
            fill=(200, 40, 40),
            font=font,
        )
    xlabel = "IU (%)"
    draw.text(
        (name_w - 2 * _GAP - _text_size(font, xlabel)[0], bottom + _GAP), xlabel, fill=(90, 90, 90), font=font
    )
    return np.asarray(canvas).copy()


def save_index_png(
    mask: np.ndarray, palette: np.ndarray, path: str | os.PathLike, *, durable: bool = True
) -> None:
    """Write a class-index mask as a palette ('P' mode) PNG, atomically (durable: as save_png):
    pixel values are the class indices (255 = void), the palette colours them in any viewer, as
    VOC's SegmentationClass PNGs."""
    if mask.ndim != 2:
        raise ValueError(f"{path}: an index mask must be 2-D, got shape {mask.shape}")
    image = Image.fromarray(np.asarray(mask, dtype=np.uint8), mode="P")
    image.putpalette(np.asarray(palette, dtype=np.uint8).reshape(-1)[: 256 * 3].tolist())

    def write(tmp: Path) -> None:
        with open(tmp, "xb") as f:
            image.save(f, format="PNG")

    atomic_write(path, write, durable=durable)


def overlay_planes(image: Any, planes: Any, colours: Any, alpha: float = 0.5) -> np.ndarray:
    """Return ``image`` (H x W x 3 uint8) tinted by C boolean masks (C x H x W), class c in
    colours[c] at opacity ``alpha``; where classes overlap, their colours are averaged, so overlap
    shows as a mix; pixels of no class are left as the image (a multilabel task's overlay)."""
    image = _check_image(image)
    planes = np.asarray(planes, dtype=bool)
    colours = np.asarray(colours, dtype=np.float32)
    if planes.ndim != 3 or planes.shape[1:] != image.shape[:2] or len(colours) < planes.shape[0]:
        raise ValueError(
            f"overlay_planes needs C x H x W masks of the image's size and C colours, got masks "
            f"{planes.shape}, image {image.shape[:2]}, {len(colours)} colours"
        )
    count = planes.sum(0)
    mixed = np.einsum("chw,ck->hwk", planes.astype(np.float32), colours[: planes.shape[0]])
    mixed /= np.maximum(count, 1)[:, :, None]
    blended = np.rint((1.0 - alpha) * image.astype(np.float32) + alpha * mixed).astype(np.uint8)
    return np.where((count > 0)[:, :, None], blended, image)
