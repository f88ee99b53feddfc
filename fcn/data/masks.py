"""Reading masks: palette, grey, 16-bit and colour PNGs, SBD's .mat files, binary and multilabel masks,
the one LabelMap applied after every reader, and the check of a mask against its image.

Every reader raises one clear error naming the file (ValueError or FileNotFoundError)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

import numpy as np
from PIL import Image

from fcn.config import VOID
from fcn.data.classes import make_palette
from fcn.data.images import _INTEGER_MODES, ARRAY_EXTENSIONS, _array_file, _open, image_size


def palette_lookup(colours: np.ndarray) -> dict[int, int]:
    """Return {packed 0xRRGGBB colour: label} for a (N, 3) palette; the first label of a repeated colour wins."""
    lut: dict[int, int] = {}
    for label, (r, g, b) in enumerate(np.asarray(colours, dtype=np.int64)):
        lut.setdefault(int(r) << 16 | int(g) << 8 | int(b), label)
    return lut


def colour_lookup(
    palette: Optional[Sequence[Sequence[int]] | np.ndarray],
    num_classes: Optional[int],
    ignore_index: int = VOID,
) -> dict[int, int]:
    """Return {0xRRGGBB: label} for colour masks: the first num_classes colours, and the palette's
    colour of ignore_index (VOC's void colour for 255) -> ignore_index."""
    given = 0 if palette is None else len(palette)
    full = make_palette(palette)
    n = num_classes if num_classes is not None else (given if 0 < given < 256 else 21)
    lut = palette_lookup(full[:n])
    r, g, b = (int(c) for c in full[ignore_index])
    lut.setdefault(r << 16 | g << 8 | b, ignore_index)
    return lut


def rgb_to_index(
    rgb: np.ndarray,
    lut: dict[int, int],
    path: Path,
    where: str = "not in the palette; add it to data.palette (index order) or fix the mask",
) -> np.ndarray:
    """Return the uint8 label map of an HxWx3 colour mask, or raise ValueError naming an unknown
    colour, its place and then `where` (what the colours come from and what to do)."""
    packed = (rgb[..., 0].astype(np.int32) << 16) | (rgb[..., 1].astype(np.int32) << 8) | rgb[..., 2]
    colours, inverse = np.unique(packed, return_inverse=True)
    labels = np.empty(len(colours), dtype=np.uint8)
    for k, colour in enumerate(colours.tolist()):
        if colour not in lut:
            y, x = np.argwhere(packed == colour)[0]
            rgb_t = (colour >> 16 & 255, colour >> 8 & 255, colour & 255)
            raise ValueError(f"{path}: colour {rgb_t} at (x={x}, y={y}) is {where}")
        labels[k] = lut[colour]
    return labels[inverse.reshape(packed.shape)]


def read_png_mask(path: Path, lut: Optional[dict[int, int]] = None, raw: bool = False) -> np.ndarray:
    """Return the HxW label map of a mask image: palette ('P') or grayscale indices, or colours via `lut`.

    uint8, except with raw=True, where an 8- or 16-bit grayscale mask keeps its raw ids (a uint16 or
    int32 array; ids above 255 allowed) for a LabelMap to translate; otherwise ids above 255 are an error.
    """
    img = _open(path)
    if img.mode in ("P", "L", "1"):
        # np.array of a 'P' image gives the palette indices, i.e. the labels (VOC's SegmentationClass);
        # a 1-bit mask gives labels 0 and 1.
        return np.array(img, dtype=np.uint8)
    if img.mode in _INTEGER_MODES:
        arr = np.asarray(img)
        if arr.size and arr.min() < 0:
            raise ValueError(f"{path}: mask has negative values; label ids must be 0 or more")
        if raw:
            return arr
        if arr.size and arr.max() > 255:
            raise ValueError(
                f"{path}: 16-bit mask has values outside 0..255; save labels as an 8-bit PNG, "
                "or translate its ids with data.label_map"
            )
        return arr.astype(np.uint8)
    if img.mode in ("RGB", "RGBA"):
        if lut is None:
            raise ValueError(f"{path}: colour (RGB) mask but no palette to convert it; set data.palette")
        return rgb_to_index(np.asarray(img.convert("RGB")), lut, path)
    raise ValueError(
        f"{path}: mask image mode {img.mode!r} is not supported; save labels as a palette or grayscale PNG"
    )


MAX_RAW_ID = 65535
"""The largest raw label id a LabelMap translates (16-bit masks)."""


class LabelMap:
    """data.label_map and data.reduce_zero_label: raw mask ids -> class indices, the one place where
    every dataset kind's masks are translated (after the reader, before the checks and transforms).

    label_map: {raw id: class index}; ids it does not list become ignore_index. reduce_zero_label
    (mmsegmentation's rule): raw 0 -> ignore_index, raw k -> k - 1, raw 255 (void) stays ignored.
    With neither, masks pass through unchanged (ids above 255 are an error). Raw ids may be 0..65535
    (16-bit PNGs); the result is uint8, by one lookup in a 64 KiB table.
    """

    def __init__(
        self,
        label_map: Optional[dict[int, int]] = None,
        reduce_zero_label: bool = False,
        ignore_index: int = VOID,
        binary: bool = False,
    ) -> None:
        self.ignore_index = int(ignore_index)
        self.binary = bool(binary) and not label_map  # a label map says what each raw id is itself
        self.table: Optional[np.ndarray] = None  # raw id -> class index
        self.listed: Optional[np.ndarray] = None  # raw id -> whether data.label_map names it
        self.max_raw = MAX_RAW_ID  # the largest raw id the table can translate
        if label_map:
            self.table = np.full(MAX_RAW_ID + 1, self.ignore_index, np.uint8)
            self.listed = np.zeros(MAX_RAW_ID + 1, bool)
            for raw, index in label_map.items():
                self.table[int(raw)] = int(index)
                self.listed[int(raw)] = True
        elif reduce_zero_label:
            self.max_raw = 256  # k - 1 must fit 0..255
            self.table = np.zeros(MAX_RAW_ID + 1, np.uint8)
            self.table[1:257] = np.arange(256)
            self.table[0] = self.table[255] = self.ignore_index
        self._lut8 = None if self.table is None else self.table[:256].tolist()

    @property
    def identity(self) -> bool:
        """Return whether masks pass through unchanged (no label_map, no reduce_zero_label, not binary)."""
        return self.table is None and not self.binary

    def __call__(self, raw: np.ndarray, path: object) -> np.ndarray:
        """Return the uint8 class-index map of raw ids; ValueError naming `path` for an id it cannot map."""
        if self.binary:
            return binary_labels(raw, path, self.ignore_index)
        if raw.dtype != np.uint8 and raw.size:  # 8-bit ids always fit: no scan of the mask for them
            low, high = int(raw.min()), int(raw.max())
            limit = 255 if self.table is None else self.max_raw
            if low < 0 or high > limit:
                hint = "translate them with data.label_map" if self.table is None else "they cannot be mapped"
                raise ValueError(f"{path}: label ids {low}..{high} do not fit 0..{limit}; {hint}")
        if self.table is None:
            return raw.astype(np.uint8, copy=False)
        if raw.dtype == np.uint8 and raw.ndim == 2:
            # PIL's point() is a plain C lookup: 3x faster than numpy's gather on a 2048x1024 mask.
            return np.array(Image.fromarray(raw).point(self._lut8))
        return np.take(self.table, raw)

    def unlisted(self, raw: np.ndarray) -> dict[int, int]:
        """Return {raw id: pixels} of the ids data.label_map does not list (they train as ignored)."""
        if self.listed is None or raw.size == 0:
            return {}
        counts = np.bincount(raw.ravel().astype(np.int64), minlength=1)  # ids are checked to be >= 0 first
        ids = np.flatnonzero(counts)
        keep = ids[(ids > MAX_RAW_ID) | ~self.listed[np.minimum(ids, MAX_RAW_ID)]]
        return {int(i): int(counts[i]) for i in keep}


def binary_labels(raw: np.ndarray, path: object, ignore_index: int = VOID) -> np.ndarray:
    """Return the uint8 0/1 map of a binary task's mask as annotation tools write it: {0, 255} or
    {0, 1} (255 or 1 = foreground); pixels equal to ignore_index, when it is neither 0, 1 nor 255
    (data.ignore_index set to the mask's void value), stay ignore_index. ValueError naming `path` and
    the values found for any other value, or for 1 and 255 in one mask (which one is foreground?)."""
    if raw.size == 0:
        return raw.astype(np.uint8)
    values = (
        np.unique(raw) if raw.dtype != np.uint8 else np.flatnonzero(np.bincount(raw.ravel(), minlength=256))
    )
    void = ignore_index not in (0, 1, 255)
    allowed = {0, 1, 255} | ({ignore_index} if void else set())
    found = [int(v) for v in values]
    if not set(found) <= allowed or {1, 255} <= set(found):
        void_note = f", {ignore_index} = void (data.ignore_index)" if void else ""
        raise ValueError(
            f"{path}: binary mask holds values {found}; data.task=binary reads masks of {{0, 255}} or {{0, 1}} "
            f"(foreground 255 or 1{void_note}): fix the mask, or set data.ignore_index to its void value"
        )
    out = ((raw == 1) | (raw == 255)).astype(np.uint8)
    if void:
        out[raw == ignore_index] = ignore_index
    return out


def read_binary_mask(path: Path) -> np.ndarray:
    """Return the raw values of a binary task's mask image: grey ('L', '1', 16-bit) or palette
    indices as stored, and a colour (RGB/RGBA) mask's grey level when it is grey (R = G = B), as
    some tools export black-and-white masks; ValueError naming the file for a coloured mask."""
    img = _open(path)
    if img.mode in ("RGB", "RGBA", "LA"):
        rgb = np.asarray(img.convert("RGB"))
        if not ((rgb[..., 0] == rgb[..., 1]) & (rgb[..., 1] == rgb[..., 2])).all():
            raise ValueError(
                f"{path}: colour mask, but data.task=binary reads black-and-white masks ({{0, 255}} or {{0, 1}}); "
                "save it as a grayscale PNG"
            )
        return np.ascontiguousarray(rgb[..., 0])
    return read_png_mask(path, None, raw=True)


def multilabel_paths(path: Path, classes: Sequence[str]) -> list[Path]:
    """Return the per-class mask files of a multilabel task's listed mask: the listing names the
    first class's, <masks>/<classes[0]>/<id>.png; the others are <masks>/<class>/<id>.png."""
    return [path.parent.parent / name / path.name for name in classes]


def read_multilabel_mask(path: Path, classes: Sequence[str], ignore_index: int = VOID) -> np.ndarray:
    """Return the C x H x W uint8 0/1 masks of a multilabel task's item (ignore_index where void):
    a .npy file holding a C x H x W array of 0/1 (or bool, or 0/255), a multi-page TIFF of C pages
    (tifffile), else the C per-class binary
    PNGs of multilabel_paths (each read as data.task=binary reads one: {0, 255} or {0, 1}).
    ValueError or FileNotFoundError naming the file for a missing or bad one."""
    if path.suffix.lower() in ARRAY_EXTENSIONS:
        array = _array_file(path)  # .npy as stored (C x H x W); a multi-page TIFF with its pages last
        if path.suffix.lower() != ".npy" and array.ndim == 3:
            array = np.moveaxis(array, -1, 0)  # one page per class
        if array.ndim != 3 or array.shape[0] != len(classes):
            raise ValueError(
                f"{path}: multilabel mask array has shape {array.shape}; expected {len(classes)} x H x W "
                f"(one plane per class of data.classes, in their order)"
            )
        if array.dtype == np.bool_:
            return array.astype(np.uint8)
        if not np.issubdtype(array.dtype, np.integer):
            raise ValueError(f"{path}: multilabel mask array is {array.dtype}; save 0/1 integers or bool")
        return np.stack(
            [binary_labels(plane, f"{path} (plane {c})", ignore_index) for c, plane in enumerate(array)]
        )
    planes = []
    for file in multilabel_paths(path, classes):
        planes.append(binary_labels(read_binary_mask(file), file, ignore_index))
        if planes[-1].shape != planes[0].shape:
            raise ValueError(
                f"{file}: mask is {planes[-1].shape[1]}x{planes[-1].shape[0]} (WxH) but {path} is "
                f"{planes[0].shape[1]}x{planes[0].shape[0]}; one image's class masks must have its size"
            )
    return np.stack(planes)


def read_sbd_mat(path: Path) -> np.ndarray:
    """Return the HxW uint8 label map of an SBD cls/*.mat file (its GTcls.Segmentation)."""
    import scipy.io  # imported here: scipy is only needed for SBD

    try:
        mat = scipy.io.loadmat(str(path), squeeze_me=True, struct_as_record=False)
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: file not found") from None
    except Exception as exc:  # scipy raises several unrelated types for damaged files
        raise ValueError(
            f"{path}: cannot read the .mat file ({exc}); the file is damaged, replace it"
        ) from None
    gt = mat.get("GTcls")
    seg = getattr(gt, "Segmentation", None)
    if seg is None:
        raise ValueError(f"{path}: no GTcls.Segmentation inside; not an SBD cls/ file")
    seg = np.asarray(seg)
    if seg.ndim != 2 or (seg.size and (seg.min() < 0 or seg.max() > 255)):
        raise ValueError(
            f"{path}: GTcls.Segmentation must be a 2-D array of labels 0..255, got shape {seg.shape}"
        )
    return seg.astype(np.uint8)


def check_pair(
    image: Image.Image | np.ndarray,
    mask: np.ndarray,
    num_classes: Optional[int],
    mask_path: Path,
    ignore_index: int = VOID,
) -> None:
    """Raise ValueError naming `mask_path` when the mask's size or labels do not fit the image and
    classes: labels must lie in 0..num_classes-1 or equal ignore_index."""
    width, height = image_size(image)
    if mask.shape[-2:] != (height, width):
        raise ValueError(
            f"{mask_path}: mask is {mask.shape[1]}x{mask.shape[0]} (WxH) but its image is "
            f"{width}x{height}; masks must match their images pixel for pixel"
        )
    if num_classes is not None:
        counts = np.bincount(mask.ravel(), minlength=256)  # cheaper than np.unique on 500x375 masks
        counts[ignore_index] = 0
        bad = np.flatnonzero(counts[num_classes:]) + num_classes
        if bad.size:
            raise ValueError(
                f"{mask_path}: labels {bad.tolist()} are outside 0..{num_classes - 1} and {ignore_index} "
                "(data.ignore_index); "
                "fix the mask or set data.classes / model.num_classes"
            )
