"""Your own Dataset class, named by import path: data.train.name: 'my_package.my_module:MyDataset'.

The class is imported, constructed with data.<split>.args as keyword arguments, and wrapped so that
its items go through the same steps as the built-in readers' (data.label_map / reduce_zero_label,
the label check, the project's transforms). The protocol (docs/datasets.md, "Your own Dataset class"):

- ``len(ds)`` is the number of items (at least 1);
- ``ds[i]`` returns ``(image, mask)`` BEFORE any transform: image a PIL image (any mode: converted
  to RGB as the built-in readers do) or an HxWx3 (or HxW) uint8 numpy array; mask a PIL image
  (modes L, P, I, I;16) or an HxW numpy array of integer raw ids 0..65535, the image's size;
- optional ``ds.ids``: one name per item (used for --save-predictions and per-image scores).

The project's transforms then get (RGB PIL image, HxW uint8 class indices), as from every reader.
Every failure is a ValueError of one line naming the class: an import error, a missing class, a
constructor that raises, an item that breaks the protocol (the first item is read at setup, so a
wrong return type is found before any work).
"""

from __future__ import annotations

import importlib
from typing import Any, Callable, Optional

import numpy as np
from PIL import Image

from fcn.config import VOID
from fcn.data.images import to_rgb
from fcn.data.masks import LabelMap, check_pair

_MASK_MODES = ("L", "P", "1", "I", "I;16", "I;16B", "I;16L", "I;16N")


def load_class(name: str) -> type:
    """Return the class 'package.module:Class' names; ValueError of one line naming it otherwise."""
    module_name, _, attr = name.partition(":")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # ImportError, or whatever the module raises while it is imported
        raise ValueError(
            f"dataset class {name}: cannot import module '{module_name}' ({type(exc).__name__}: {exc}); "
            "install it or put its directory on PYTHONPATH"
        ) from None
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ValueError(f"dataset class {name}: module '{module_name}' has no attribute '{attr}'")
        obj = getattr(obj, part)
    if not callable(obj):
        raise ValueError(f"dataset class {name}: '{attr}' is a {type(obj).__name__}, not a class")
    return obj


def _image(name: str, index: int, image: Any) -> Image.Image:
    """Return the item's image as RGB PIL; ValueError naming the class when it is neither PIL nor uint8 HxW(x3)."""
    if isinstance(image, Image.Image):
        return to_rgb(image)
    if isinstance(image, np.ndarray) and image.dtype == np.uint8:
        if image.ndim == 2:
            return Image.fromarray(np.repeat(image[:, :, None], 3, axis=2), mode="RGB")
        if image.ndim == 3 and image.shape[2] == 3:
            return Image.fromarray(np.ascontiguousarray(image), mode="RGB")
    what = f"{type(image).__name__}" + (
        f" of shape {image.shape} and dtype {image.dtype}" if isinstance(image, np.ndarray) else ""
    )
    raise ValueError(
        f"dataset class {name}: item {index}'s image is a {what}; return a PIL image or an HxWx3 uint8 numpy array"
    )


def _mask(name: str, index: int, mask: Any) -> np.ndarray:
    """Return the item's mask as a 2-D integer array of raw ids; ValueError naming the class otherwise."""
    if isinstance(mask, Image.Image):
        if mask.mode not in _MASK_MODES:
            raise ValueError(
                f"dataset class {name}: item {index}'s mask is a PIL image of mode {mask.mode!r}; "
                f"return label ids (modes {', '.join(_MASK_MODES)}) or an HxW integer numpy array"
            )
        mask = np.array(mask, dtype=np.uint8) if mask.mode in ("P", "L", "1") else np.asarray(mask)
    if not isinstance(mask, np.ndarray) or mask.ndim != 2 or not np.issubdtype(mask.dtype, np.integer):
        what = f"{type(mask).__name__}" + (
            f" of shape {mask.shape} and dtype {mask.dtype}" if isinstance(mask, np.ndarray) else ""
        )
        raise ValueError(
            f"dataset class {name}: item {index}'s mask is a {what}; return an HxW integer numpy array of label ids"
        )
    return mask


class ExternalDataset:
    """A user's Dataset class (see the module doc) behind the readers' contract: an item is
    (RGB PIL image, uint8 HxW class indices), or transforms(image, mask)."""

    def __init__(
        self,
        name: str,
        args: Optional[dict] = None,
        transforms: Optional[Callable] = None,
        num_classes: Optional[int] = None,
        ignore_index: int = VOID,
        labels: Optional[LabelMap] = None,
        probe: bool = True,
    ) -> None:
        cls = load_class(name)
        args = dict(args or {})
        try:
            self.inner = cls(**args)
        except Exception as exc:
            message = " ".join(str(exc).split()) or "no message"
            raise ValueError(
                f"dataset class {name}({_args_text(args)}) raised {type(exc).__name__}: {message}"
            ) from None
        self.name = name
        self.transforms = transforms
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.labels = labels if labels is not None else LabelMap(ignore_index=ignore_index)
        try:
            n = len(self.inner)
        except Exception as exc:
            raise ValueError(
                f"dataset class {name}: len() failed ({type(exc).__name__}: {exc}); define __len__"
            ) from None
        if n < 1:
            raise ValueError(f"dataset class {name}({_args_text(args)}) has no items (len {n})")
        self._len = n
        ids = getattr(self.inner, "ids", None)
        self.ids = (
            [str(i) for i in ids] if ids is not None and len(ids) == n else [f"{i:06d}" for i in range(n)]
        )
        if probe:  # the protocol checked on the first item now, before any work
            self.load(0)

    def __len__(self) -> int:
        return self._len

    def raw_item(self, index: int) -> tuple[Image.Image, np.ndarray]:
        """Return item `index` as (RGB PIL image, raw integer ids); ValueError naming the class when
        it breaks the protocol."""
        try:
            item = self.inner[index]
        except Exception as exc:
            message = " ".join(str(exc).split()) or "no message"
            raise ValueError(
                f"dataset class {self.name}: item {index} raised {type(exc).__name__}: {message}"
            ) from None
        if not isinstance(item, (tuple, list)) or len(item) != 2:
            what = f"a {type(item).__name__}" + (
                f" of {len(item)}" if isinstance(item, (tuple, list)) else ""
            )
            raise ValueError(
                f"dataset class {self.name}: item {index} is {what}; __getitem__ must return (image, mask)"
            )
        return _image(self.name, index, item[0]), _mask(self.name, index, item[1])

    def load(self, index: int) -> tuple[Image.Image, np.ndarray]:
        """Return item `index` as (RGB PIL image, uint8 class indices): label map applied, labels checked."""
        image, raw = self.raw_item(index)
        where = f"dataset class {self.name} item {index}"
        if raw.size and raw.min() < 0:
            raise ValueError(f"{where}: mask has negative ids ({int(raw.min())}); label ids are 0 or more")
        mask = self.labels(raw, where)
        check_pair(image, mask, self.num_classes, where, self.ignore_index)
        return image, mask

    def __getitem__(self, index: int):
        image, mask = self.load(index)
        if self.transforms is not None:
            return self.transforms(image, mask)
        return image, mask

    def __repr__(self) -> str:
        return f"ExternalDataset({self.name}, {len(self)} items)"


def _args_text(args: dict) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in args.items())
