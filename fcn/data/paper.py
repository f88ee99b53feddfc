"""The paper's other datasets, read as the authors' data layers read them (fcn.berkeleyvision.org
``pascalcontext_layers.py``, ``nyud_layers.py``, ``siftflow_layers.py``), through the one reader
contract: an item is (image, mask) or transforms(image, mask).

- ``pascal_context``: ``<root>/VOC2010/`` (or ``<root>/VOCdevkit/VOC2010/``: JPEGImages/,
  ImageSets/Main/{train,val}.txt) and ``<root>/pascal-context/`` (labels.txt, 59_labels.txt,
  trainval/<id>.mat with its 400-label ``LabelMap``). The layer's mapping: pixels of the i-th of the
  59 task classes (59_labels.txt's order, found by name in labels.txt's 400) get i + 1, every other
  pixel 0 = background (a class, not void): 60 classes. The image is an RGB PIL image, as VOC's.
- ``nyud``: ``<root>/{train,val,test,trainval}.txt``, ``data/images/img_<id>.png`` (colour),
  ``data/depth/img_<id>.png``, ``data/hha/img_<id>.png``, ``segmentation/img_<id>.mat``
  (``segmentation``: 0 = void, 1..40 classes, minus 1 as uint8 so void wraps to 255). The image
  is the layer's input, float32 H x W x C, the modalities stacked in data.*.modalities' order:
  colour as BGR minus (116.190, 97.203, 92.318), depth as log(depth) minus 7.844, HHA minus
  (132.431, 94.076, 118.477) (not flipped).
- ``siftflow``: ``<root>/{trainval,test}.txt``, ``Images/<D>/<id>.jpg``, ``SemanticLabels/<D>/<id>.mat``
  and ``GeoLabels/<D>/<id>.mat`` (``S``; D = spatial_envelope_256x256_static_8outdoorcategories). The
  geometric map's -1 becomes 0 first; both maps as uint8 minus 1 (0 = unlabelled wraps to 255). The
  image is the layer's input (BGR minus (114.578, 115.294, 108.353), float32 H x W x 3); the mask is
  2 x H x W: semantic (33 classes), then geometric (3 classes).

The float images are already normalised, marked so by their type (fcn.data.images.LayerInput;
data.transforms.normalization=caffe is required for nyud and siftflow, which the config checks): the
transforms move their C channels geometrically and pass their values through. Masks are the raw maps
(load_raw_mask); data.label_map applies after, as for every reader. Like every reader here, no
torch is imported.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np

from fcn.config import MODALITY_CHANNELS, VOID, read_text
from fcn.data.dataset import PairDataset
from fcn.data.images import LayerInput, _open, read_image
from fcn.data.listing import Listing, Problem, list_pairs, read_split_leniently
from fcn.data.masks import LabelMap
from fcn.data.splits import list_names, require_dir

# fmt: off
PASCAL_CONTEXT_CLASSES = (
    "background",
    *["aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow", "table", "dog", "horse", "motorbike", "person"],
    *["pottedplant", "sheep", "sofa", "train", "tvmonitor", "bag", "bed", "bench", "book", "building", "cabinet", "ceiling", "cloth"],
    *["computer", "cup", "door", "fence", "floor", "flower", "food", "grass", "ground", "keyboard", "light", "mountain", "mouse", "curtain"],
    *["platform", "sign", "plate", "road", "rock", "shelves", "sidewalk", "sky", "snow", "bedclothes", "track", "tree", "truck", "wall"],
    *["water", "window", "wood"],
)
# fmt: on
"""Background and the 59 PASCAL-Context classes (Mottaghi et al. 2014) in the order of the dataset's
59_labels.txt after the layer's renames (diningtable -> table, bedcloth -> bedclothes, clothes ->
cloth); the reader checks the file against data.classes, so a different file order is an error."""
PASCAL_CONTEXT_RENAMES = {"diningtable": "table", "bedcloth": "bedclothes", "clothes": "cloth"}
"""pascalcontext_layers.py: 59_labels.txt names renamed to labels.txt's spelling."""

# fmt: off
NYUD_CLASSES = (
    *["wall", "floor", "cabinet", "bed", "chair", "sofa", "table", "door", "window", "bookshelf", "picture", "counter", "blinds", "desk"],
    *["shelves", "curtain", "dresser", "pillow", "mirror"],
    "floor mat",
    *["clothes", "ceiling", "books", "refridgerator", "television", "paper", "towel"],
    "shower curtain",
    *["box", "whiteboard", "person"],
    "night stand",
    *["toilet", "sink", "lamp", "bathtub", "bag", "otherstructure", "otherfurniture", "otherprop"],
)
# fmt: on
"""NYUDv2's 40 classes of Gupta et al. (ECCV 2014), label 0..39 (the authors' data/nyud/classes.txt
spelling)."""

# fmt: off
SIFTFLOW_CLASSES = tuple(
    ["awning", "balcony", "bird", "boat", "bridge", "building", "bus", "car", "cow", "crosswalk", "desert", "door", "fence", "field", "grass", "moon", "mountain", "person", "plant", "pole", "river", "road", "rock", "sand", "sea", "sidewalk", "sign", "sky", "staircase", "streetlight", "sun", "tree", "window"]
)
# fmt: on
"""SIFT Flow's 33 semantic classes (Liu et al.), label 0..32, alphabetical."""
SIFTFLOW_GEOMETRIC_CLASSES = ("sky", "horizontal", "vertical")
"""SIFT Flow's 3 geometric classes, label 0..2."""

PAPER_CLASSES = {"pascal_context": PASCAL_CONTEXT_CLASSES, "nyud": NYUD_CLASSES, "siftflow": SIFTFLOW_CLASSES}

NYUD_MEAN_BGR = (116.190, 97.203, 92.318)  # nyud_layers.py: mean_bgr
NYUD_MEAN_HHA = (132.431, 94.076, 118.477)  # mean_hha
NYUD_MEAN_LOGD = 7.844  # mean_logd
SIFTFLOW_MEAN_BGR = (114.578, 115.294, 108.353)  # siftflow_layers.py: self.mean
SIFTFLOW_DIR = "spatial_envelope_256x256_static_8outdoorcategories"

PASCAL_CONTEXT_SPLITS = ("train", "val")
NYUD_SPLITS = ("train", "val", "test", "trainval")
SIFTFLOW_SPLITS = ("trainval", "test")


def read_mat(path: Path, key: str) -> np.ndarray:
    """Return the 2-D array under `key` of a .mat file, or a one-line error naming the file."""
    import scipy.io  # only the .mat datasets need scipy

    try:
        mat = scipy.io.loadmat(str(path))
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: file not found") from None
    except Exception as exc:  # scipy raises several unrelated types for damaged files
        raise ValueError(
            f"{path}: cannot read the .mat file ({exc}); the file is damaged, replace it"
        ) from None
    if key not in mat:
        raise ValueError(
            f"{path}: no '{key}' inside (keys: {', '.join(k for k in mat if not k.startswith('__'))})"
        )
    value = np.asarray(mat[key])
    if value.ndim != 2:
        raise ValueError(f"{path}: '{key}' must be a 2-D label map, got shape {value.shape}")
    return value


def minus_one(labels: np.ndarray) -> np.ndarray:
    """Return labels as uint8 minus 1, wrapping 0 to 255 (the layers' ``label.astype(np.uint8) - 1``)."""
    return labels.astype(np.uint8) - np.uint8(1)


# ----------------------------------------------------------------------------- PASCAL-Context


def pascal_context_dirs(root: str | Path) -> tuple[Path, Path]:
    """Return (VOC2010 directory, pascal-context directory) under root."""
    root = Path(root)
    voc = root / "VOC2010"
    if not voc.is_dir() and (root / "VOCdevkit" / "VOC2010").is_dir():
        voc = root / "VOCdevkit" / "VOC2010"
    return voc, root / "pascal-context"


def read_label_names(path: Path) -> list[str]:
    """Return the names of an 'idx: name' label file in its order, spaces removed (as the layer)."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: file not found")
    names = []
    for n, line in enumerate(read_text(path).splitlines(), 1):
        if not line.strip():
            continue
        index, sep, name = line.partition(":")
        if not sep or not index.strip().isdigit() or not name.strip():
            raise ValueError(f"{path}:{n}: expected 'index: name', got {line.strip()!r}")
        names.append(name.replace(" ", "").strip())
    return names


def pascal_context_lookup(context_dir: Path) -> np.ndarray:
    """Return the (401,) uint8 table from LabelMap values (0 and 1..400) to the 60-class labels."""
    labels_400 = read_label_names(context_dir / "labels.txt")
    labels_59 = [PASCAL_CONTEXT_RENAMES.get(n, n) for n in read_label_names(context_dir / "59_labels.txt")]
    table = np.zeros(max(len(labels_400), 400) + 1, dtype=np.uint8)
    for i, name in enumerate(labels_59):
        if name not in labels_400:
            raise ValueError(f"{context_dir / '59_labels.txt'}: '{name}' is not in labels.txt")
        table[labels_400.index(name) + 1] = i + 1
    return table


def list_pascal_context(root: str | Path, split: str) -> Listing:
    """Return the Listing of a PASCAL-Context split (VOC2010 JPEGImages, pascal-context/trainval/*.mat)."""
    if split not in PASCAL_CONTEXT_SPLITS:
        raise ValueError(f"pascal_context split '{split}' is not one of {', '.join(PASCAL_CONTEXT_SPLITS)}")
    voc, context = pascal_context_dirs(root)
    hint = (
        "set the dataset root to the directory holding VOC2010/ and pascal-context/ (docs/paper_datasets.md)"
    )
    for directory in (Path(root), voc / "JPEGImages", context / "trainval"):
        require_dir(directory, "PASCAL-Context", hint)
    split_file = voc / "ImageSets" / "Main" / f"{split}.txt"
    return list_pairs(split_file, voc / "JPEGImages", (".jpg",), context / "trainval", ".mat")


class PascalContextSegmentation(PairDataset):
    """PASCAL-Context, 59 classes + background (pascalcontext_layers.py); see the module doc."""

    def __init__(
        self,
        root: str | Path,
        split: str,
        transforms: Optional[Callable] = None,
        num_classes: Optional[int] = 60,
        ignore_index: int = VOID,
        class_names: Optional[Sequence[str]] = None,
        labels: Optional[LabelMap] = None,
    ) -> None:
        self._init_from_listing(
            list_pascal_context(root, split), root, split, transforms, num_classes, None, ignore_index, labels
        )
        self.context_dir = pascal_context_dirs(root)[1]
        self.table = pascal_context_lookup(self.context_dir)
        if class_names is not None:
            expected = [
                PASCAL_CONTEXT_RENAMES.get(n, n) for n in read_label_names(self.context_dir / "59_labels.txt")
            ]
            if [str(c).replace(" ", "") for c in class_names[1:]] != expected:
                raise ValueError(
                    f"{self.context_dir / '59_labels.txt'}: its class order differs from data.classes' "
                    f"(after background); set data.classes=[background,{','.join(expected)}]"
                )

    def load_raw_mask(self, path: Path) -> np.ndarray:
        """Return the 60-class label map of a trainval/<id>.mat (LabelMap through the 400 -> 59 table)."""
        label_400 = read_mat(path, "LabelMap")
        if label_400.size and (label_400.min() < 0 or label_400.max() >= len(self.table)):
            raise ValueError(
                f"{path}: LabelMap values {label_400.min()}..{label_400.max()} outside 0..{len(self.table) - 1}"
            )
        return self.table[label_400.astype(np.int64)]


def empty_pascal_context(
    num_classes: int, ignore_index: int, root: str | Path, labels: Optional[LabelMap] = None
) -> PascalContextSegmentation:
    """Return an empty PascalContextSegmentation whose load_mask reads its masks (fcn.data.check's reader)."""
    reader = PascalContextSegmentation.__new__(PascalContextSegmentation)
    PairDataset.__init__(reader, [], [], [], None, num_classes, None, ignore_index, labels)
    reader.context_dir = pascal_context_dirs(root)[1]
    reader.table = pascal_context_lookup(reader.context_dir)
    return reader


# ----------------------------------------------------------------------------- NYUDv2


def list_nyud(root: str | Path, split: str, modalities: Sequence[str] = ("color",)) -> Listing:
    """Return the Listing of an NYUDv2 split: images = data/images/img_<id>.png, masks =
    segmentation/img_<id>.mat; every missing depth or HHA file the modalities need is a problem too."""
    if split not in NYUD_SPLITS:
        raise ValueError(f"nyud split '{split}' is not one of {', '.join(NYUD_SPLITS)}")
    root = Path(root)
    hint = "set the dataset root to the directory holding data/ and segmentation/ (docs/paper_datasets.md)"
    dirs = {"color": root / "data" / "images", "depth": root / "data" / "depth", "hha": root / "data" / "hha"}
    for directory in [root, root / "segmentation", *(dirs[m] for m in modalities)]:
        require_dir(directory, "NYUDv2", hint)
    listing = read_split_leniently(root / f"{split}.txt")
    ids, listing.ids = listing.ids, []
    names = {m: list_names(d) for m, d in dirs.items() if m in modalities}
    names["color"] = list_names(dirs["color"])
    masks = list_names(root / "segmentation")
    for i in ids:
        files = {m: dirs[m] / f"img_{i}.png" for m in dict.fromkeys(["color", *modalities])}
        missing = [p for m, p in files.items() if p.name not in names[m]]
        mask = root / "segmentation" / f"img_{i}.mat"
        if mask.name not in masks:
            missing.append(mask)
        for path in missing:
            listing.problems.append(Problem(path, f"no such file; id '{i}' is listed in {split}.txt"))
        if missing:
            if listing.error is None:
                listing.error = FileNotFoundError(
                    f"{missing[0]}: no such file (id '{i}' of {root / f'{split}.txt'}); restore it or remove the id"
                )
            continue
        listing.ids.append(i)
        listing.images.append(files["color"])
        listing.masks.append(mask)
    return listing


def nyud_input(color_path: Path, modalities: Sequence[str]) -> np.ndarray:
    """Return the float32 H x W x C input of nyud_layers.py for the id of color_path (its siblings
    data/depth/ and data/hha/ hold the other modalities), modalities stacked in order."""
    data = color_path.parent.parent
    parts = []
    for m in modalities:
        path = data / {"color": "images", "depth": "depth", "hha": "hha"}[m] / color_path.name
        if m == "color":
            rgb = np.asarray(read_image(path), dtype=np.float32)
            parts.append(rgb[:, :, ::-1] - np.asarray(NYUD_MEAN_BGR, np.float32))
        elif m == "depth":
            depth = np.asarray(_open(path), dtype=np.float32)
            if depth.ndim != 2:
                raise ValueError(f"{path}: depth must be one channel, got shape {depth.shape}")
            if depth.size and depth.min() <= 0:
                raise ValueError(f"{path}: depth values must be > 0 (the layer takes their log)")
            parts.append((np.log(depth) - np.float32(NYUD_MEAN_LOGD))[:, :, None])
        else:
            hha = np.asarray(_open(path).convert("RGB"), dtype=np.float32)
            parts.append(hha - np.asarray(NYUD_MEAN_HHA, np.float32))
    shapes = {p.shape[:2] for p in parts}
    if len(shapes) > 1:
        raise ValueError(f"{color_path}: the modalities {list(modalities)} differ in size: {sorted(shapes)}")
    out = np.concatenate(parts, axis=2).astype(np.float32)
    assert out.shape[2] == sum(MODALITY_CHANNELS[m] for m in modalities)
    return np.ascontiguousarray(out).view(LayerInput)


class NYUDSegmentation(PairDataset):
    """NYUDv2, 40 classes (nyud_layers.py): the image is the stacked modalities' float input."""

    def __init__(
        self,
        root: str | Path,
        split: str,
        transforms: Optional[Callable] = None,
        num_classes: Optional[int] = 40,
        ignore_index: int = VOID,
        modalities: Sequence[str] = ("color",),
        labels: Optional[LabelMap] = None,
    ) -> None:
        self._init_from_listing(
            list_nyud(root, split, modalities),
            root,
            split,
            transforms,
            num_classes,
            None,
            ignore_index,
            labels,
        )
        self.modalities = tuple(modalities)

    def load_raw_mask(self, path: Path) -> np.ndarray:
        """Return segmentation/img_<id>.mat's labels minus 1 (void 0 -> 255)."""
        return minus_one(read_mat(path, "segmentation"))

    def __getitem__(self, index: int):
        image = nyud_input(self.images[index], self.modalities)
        mask = self.load_mask(self.masks[index])
        check_array_pair(image, mask, self.num_classes, self.masks[index], self.ignore_index)
        return self.transforms(image, mask) if self.transforms is not None else (image, mask)


# ----------------------------------------------------------------------------- SIFT Flow


def list_siftflow(root: str | Path, split: str) -> Listing:
    """Return the Listing of a SIFT Flow split: images, and the semantic .mat as the mask (its
    geometric sibling is checked too)."""
    if split not in SIFTFLOW_SPLITS:
        raise ValueError(f"siftflow split '{split}' is not one of {', '.join(SIFTFLOW_SPLITS)}")
    root = Path(root)
    hint = "set the dataset root to the directory holding Images/, SemanticLabels/, GeoLabels/ (docs/paper_datasets.md)"
    dirs = [root / kind / SIFTFLOW_DIR for kind in ("Images", "SemanticLabels", "GeoLabels")]
    for directory in (root, *dirs):
        require_dir(directory, "SIFT Flow", hint)
    listing = list_pairs(root / f"{split}.txt", dirs[0], (".jpg",), dirs[1], ".mat")
    geo = list_names(dirs[2])
    keep = [k for k, i in enumerate(listing.ids) if f"{i}.mat" in geo]
    for i in listing.ids:
        if f"{i}.mat" not in geo:
            listing.problems.append(
                Problem(dirs[2] / f"{i}.mat", f"no such file; id '{i}' is listed in {split}.txt")
            )
            if listing.error is None:
                listing.error = FileNotFoundError(
                    f"{dirs[2] / (i + '.mat')}: no such file (id '{i}'); restore it"
                )
    listing.ids = [listing.ids[k] for k in keep]
    listing.images = [listing.images[k] for k in keep]
    listing.masks = [listing.masks[k] for k in keep]
    return listing


def siftflow_input(path: Path) -> np.ndarray:
    """Return the float32 H x W x 3 input of siftflow_layers.py: BGR minus its mean."""
    rgb = np.asarray(read_image(path), dtype=np.float32)
    return np.ascontiguousarray(rgb[:, :, ::-1] - np.asarray(SIFTFLOW_MEAN_BGR, np.float32)).view(LayerInput)


def geometric_path(semantic: Path) -> Path:
    """Return GeoLabels/<D>/<id>.mat beside SemanticLabels/<D>/<id>.mat."""
    return semantic.parent.parent.parent / "GeoLabels" / semantic.parent.name / semantic.name


class SIFTFlowSegmentation(PairDataset):
    """SIFT Flow (siftflow_layers.py): masks are 2 x H x W, semantic (33) then geometric (3) labels."""

    def __init__(
        self,
        root: str | Path,
        split: str,
        transforms: Optional[Callable] = None,
        num_classes: Optional[int] = 33,
        ignore_index: int = VOID,
        geometric_classes: int = 3,
        labels: Optional[LabelMap] = None,
    ) -> None:
        self._init_from_listing(
            list_siftflow(root, split), root, split, transforms, num_classes, None, ignore_index, labels
        )
        self.geometric_classes = geometric_classes

    def load_raw_mask(self, path: Path) -> np.ndarray:
        """Return the semantic labels of SemanticLabels/<D>/<id>.mat minus 1 (0 -> 255)."""
        return minus_one(read_mat(path, "S"))

    def load_geometric(self, path: Path) -> np.ndarray:
        """Return the geometric labels of GeoLabels/<D>/<id>.mat: -1 -> 0, then minus 1 (0 -> 255)."""
        geo = read_mat(path, "S").copy()
        geo[geo == -1] = 0
        return minus_one(geo)

    def __getitem__(self, index: int):
        image = siftflow_input(self.images[index])
        semantic = self.load_mask(self.masks[index])
        geo_path = geometric_path(self.masks[index])
        geometric = self.load_geometric(geo_path)
        check_array_pair(image, semantic, self.num_classes, self.masks[index], self.ignore_index)
        check_array_pair(image, geometric, self.geometric_classes, geo_path, self.ignore_index)
        mask = np.stack([semantic, geometric])
        return self.transforms(image, mask) if self.transforms is not None else (image, mask)


def check_array_pair(
    image: np.ndarray, mask: np.ndarray, num_classes: Optional[int], mask_path: Path, ignore_index: int = VOID
) -> None:
    """check_pair for an H x W x C array image: the mask's size and labels, or ValueError naming it."""
    from fcn.data.masks import check_pair

    class _Size:  # check_pair reads .width and .height, as a PIL image has
        height, width = image.shape[:2]

    check_pair(_Size, mask, num_classes, mask_path, ignore_index)  # type: ignore[arg-type]


def empty_reader(
    cls: type[PairDataset], num_classes: int, ignore_index: int, labels: Optional[LabelMap] = None
) -> PairDataset:
    """Return an empty dataset of class `cls` (NYUDSegmentation, SIFTFlowSegmentation) whose load_mask
    reads its masks (fcn.data.check's reader)."""
    reader = cls.__new__(cls)
    PairDataset.__init__(reader, [], [], [], None, num_classes, None, ignore_index, labels)
    return reader


__all__ = [
    "NYUDSegmentation",
    "PascalContextSegmentation",
    "SIFTFlowSegmentation",
    "PAPER_CLASSES",
]
