"""Published FCN weights by name: the authors' Caffe nets and torchvision's FCN-ResNet50/101.

    from fcn import Segmenter
    seg = Segmenter.from_pretrained("voc-fcn8s")            # or in a config: model.init_from=pretrained:voc-fcn8s
    python -m fcn.pretrained                                # the table
    python -m fcn.pretrained voc-fcn8s [--mirror URL]       # download, check and convert now

``pretrained_checkpoint(name)`` returns a checkpoint of this project for an entry of ``PRETRAINED``,
as torchvision's and timm's weights APIs do with their files:

1. the published file is downloaded once, with a progress bar, into torch hub's cache
   (``torch.hub.get_dir()/checkpoints``: ``$TORCH_HOME/hub/checkpoints``, where torchvision keeps its
   own copy of the same files), from the official address or ``<mirror>/<filename>`` with
   ``$FCN_DATA_MIRROR`` or ``mirror=`` (as ``python -m fcn.data.download``);
2. it is checked (a published checksum where one exists, SHA-256 prefix in torchvision's file names,
   and for a caffemodel that it is one with an FCN's ``score_fr``); no file here has a published
   full hash but FCN-8s's and FCN-32s's, so the others' SHA-256 is recorded on the first download in
   ``checkpoints/fcn-sha256.json`` (one printed line) and checked on every later one
   (fcn.core.downloads.check_first_use); a file that fails is deleted, an interrupted download too
   (it starts again next time, as torch hub's do);
3. it is converted once into a weights checkpoint (``fcn.models.reference.convert`` for a
   caffemodel; torchvision's state dict loaded as it is into ``model.arch=torchvision_fcn``) kept in
   ``torch.hub.get_dir()/fcn/<name>.pt`` with a sidecar ``<name>.pt.sha256.json`` (its SHA-256,
   size, mtime), which every later call checks (a stat; the digest when the stat differs) and reads
   without the network; a converted file that is not whole, or has no sidecar, is made again.

Each step runs under a file lock (``.locks/<file>.lock`` beside it, as huggingface_hub locks each blob): processes
asking for the same name at once (a torchrun job, two notebooks) download and convert it once; the
others wait, then read the finished file.

Every failure is one ``DownloadError`` line; offline, it names the address and where to put the file.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

import torch

from fcn.config import load_config, to_dict
from fcn.core.checkpoint import save_checkpoint, weights_checkpoint
from fcn.core.downloads import DownloadError, RecordError, download_lock, fetch, stamp_matches, write_stamp
from fcn.data.download import MIRROR_ENV, Resource, check_caffemodel, mirror_url, verify

PREFIX = "pretrained:"
"""model.init_from=pretrained:<name> names an entry of PRETRAINED."""

CAFFE_INPUT = "caffe: BGR, 0-255, minus the mean (104.01, 116.67, 122.68)"
IMAGENET_INPUT = "torchvision: RGB / 255, ImageNet mean (0.485, 0.456, 0.406), std (0.229, 0.224, 0.225)"


@dataclass(frozen=True)
class Pretrained:
    """One entry of the registry: where the file is, how it is checked, what it holds and what its
    authors report for it."""

    name: str
    resource: Resource
    """The published file (its URL, file name and checksums), as fcn.data.download downloads it."""
    arch: str
    """model.arch (and backbone) of the converted checkpoint."""
    backbone: str
    classes: str
    """The classes (their names and palette come with the converted checkpoint's config)."""
    normalization: str
    """The input the weights expect (the converted config's data.transforms.normalization)."""
    reported: str
    """The number its authors report, with where."""
    checksum: str
    """Which checksum is checked, and whose, or that none is published."""
    overrides: tuple[str, ...] = ()
    """Config key=value of the model whose state dict the file holds (torchvision's FCN); empty for
    a caffemodel, whose config fcn.models.reference.convert reads from its layers."""
    modalities: tuple[str, ...] = ()
    """The input modalities of a one-trunk NYUDv2 net (fcn.models.reference.convert's --modalities)."""


def _caffe(
    name: str,
    filename: str,
    arch: str,
    classes: str,
    reported: str,
    normalization: str = CAFFE_INPUT,
    md5: Optional[str] = None,
    sha1: Optional[str] = None,
    checksum: str = (
        "none published (the content is checked: a caffemodel with score_fr); SHA-256 recorded on first download"
    ),
    modalities: tuple[str, ...] = (),
) -> Pretrained:
    resource = Resource(
        name=name,
        # <authors' folder>/caffemodel-url. Plain http: the host is not known to serve https; the
        # published MD5/SHA-1, else the SHA-256 recorded on first download, guards the file.
        url=f"http://dl.caffe.berkeleyvision.org/{filename}",
        filename=filename,
        md5=md5,
        sha1=sha1,
        required=(),
        archive=False,
        validate=check_caffemodel,
    )
    return Pretrained(
        name, resource, arch, "vgg16", classes, normalization, reported, checksum, (), modalities
    )


def _torchvision(backbone: str, digest: str, miou: float, pixel_acc: float) -> Pretrained:
    filename = f"fcn_{backbone}_coco-{digest}.pth"
    resource = Resource(
        name=f"torchvision-fcn-{backbone}",
        url=f"https://download.pytorch.org/models/{filename}",
        filename=filename,
        md5=None,
        required=(),
        archive=False,
        sha256_prefix=digest,
    )
    return Pretrained(
        resource.name,
        resource,
        "torchvision_fcn",
        backbone,
        "21: background + the 20 PASCAL VOC classes, trained on the COCO images that hold them",
        IMAGENET_INPUT,
        f"{miou} mean IU / {pixel_acc} pixel acc on COCO val2017 with VOC labels (torchvision's "
        f"FCN_{backbone.replace('resnet', 'ResNet')}_Weights.COCO_WITH_VOC_LABELS_V1 metadata)",
        # torchvision publishes only these 32 bits: kept as torch hub checks them, not a full hash.
        "the SHA-256 prefix in torchvision's file name (torch hub's check); SHA-256 recorded on first download",
        (
            "model.arch=torchvision_fcn",
            f"model.backbone={backbone}",
            "model.geometry=same",
            "model.upsampling=bilinear",
            "model.head=fcn",
            "model.dropout_p=0",
            "model.aux_weight=0.5",
            "model.num_classes=21",
        ),
    )


_VOC = "21: background + the 20 PASCAL VOC classes"
_CONTEXT = "60: background + PASCAL-Context's 59"
_NYUD = "40: NYUDv2's (Gupta et al.)"
_SIFTFLOW = "33 semantic + 3 geometric (two heads)"
_NYUD_INPUT = "the authors' NYUDv2 data-layer input (fcn.data.paper; data.transforms.normalization=caffe)"
_SIFTFLOW_INPUT = (
    "the authors' SIFT Flow data-layer input (fcn.data.paper; data.transforms.normalization=caffe)"
)
_README = "mean IU on seg11valid (fcn.berkeleyvision.org README)"
_PAMI = "PAMI 2016 (arXiv:1605.06211), as transcribed in docs/paper_datasets.md"

# The addresses are the authors' <folder>/caffemodel-url files (fcn.berkeleyvision.org); the VOC
# checksums are fcn.data.download.MODELS' (public download scripts; the authors list none).
# nyud-fcn32s-color-d has no caffemodel-url (no file published); FCN-AlexNet is not an arch here.
_ENTRIES = [
    _caffe(
        "voc-fcn32s",
        "fcn32s-heavy-pascal.caffemodel",
        "fcn32s",
        _VOC,
        f"63.6 {_README}",
        sha1="05eb922d7829c39448f57e5ab9d8cd75d6c0be6d",
        checksum="SHA-1 (an earlier OpenCV opencv_extra download_models.py)",
    ),
    _caffe("voc-fcn16s", "fcn16s-heavy-pascal.caffemodel", "fcn16s", _VOC, f"65.0 {_README}"),
    _caffe(
        "voc-fcn8s",
        "fcn8s-heavy-pascal.caffemodel",
        "fcn8s",
        _VOC,
        f"65.5 {_README}; 67.2 on seg12test",
        md5="c03b2953ebd846c270da1a8e8f200c09",
        sha1="c449ea74dd7d83751d1357d6a8c323fcf4038962",
        checksum="MD5 (wkentaro/fcn's download code) and SHA-1 (OpenCV opencv_extra download_models.py)",
    ),
    _caffe("voc-fcn8s-atonce", "fcn8s-atonce-pascal.caffemodel", "fcn8s_atonce", _VOC, f"65.4 {_README}"),
    _caffe(
        "pascalcontext-fcn32s",
        "pascalcontext-fcn32s-heavy.caffemodel",
        "fcn32s",
        _CONTEXT,
        f"36.7 mean IU on val, {_PAMI}",
    ),
    _caffe(
        "pascalcontext-fcn16s",
        "pascalcontext-fcn16s-heavy.caffemodel",
        "fcn16s",
        _CONTEXT,
        f"38.4 mean IU on val, {_PAMI}",
    ),
    _caffe(
        "pascalcontext-fcn8s",
        "pascalcontext-fcn8s-heavy.caffemodel",
        "fcn8s",
        _CONTEXT,
        f"39.1 mean IU on val, {_PAMI}",
    ),
    _caffe(
        "nyud-fcn32s-color",
        "nyud-fcn32s-color-heavy.caffemodel",
        "fcn32s",
        _NYUD,
        f"31.6 mean IU on test, {_PAMI}",
        _NYUD_INPUT,
    ),
    _caffe(
        "nyud-fcn32s-hha",
        "nyud-fcn32s-hha-heavy.caffemodel",
        "fcn32s",
        _NYUD,
        f"25.2 mean IU on test, {_PAMI}",
        _NYUD_INPUT,
        modalities=("hha",),
    ),
    _caffe(
        "nyud-fcn32s-color-hha",
        "nyud-fcn32s-color-hha-heavy.caffemodel",
        "fcn32s",
        _NYUD + ", late fusion of colour and HHA",
        f"33.3 mean IU on test, {_PAMI}",
        _NYUD_INPUT,
    ),
    _caffe(
        "siftflow-fcn32s",
        "siftflow-fcn32s-heavy.caffemodel",
        "fcn32s",
        _SIFTFLOW,
        "none reported for this net",
        _SIFTFLOW_INPUT,
    ),
    _caffe(
        "siftflow-fcn16s",
        "siftflow-fcn16s-heavy.caffemodel",
        "fcn16s",
        _SIFTFLOW,
        "39.5 mean IU, 85.2 pixel acc, 94.3 geometric pixel acc on test (CVPR 2015, Table 5)",
        _SIFTFLOW_INPUT,
    ),
    _caffe(
        "siftflow-fcn8s",
        "siftflow-fcn8s-heavy.caffemodel",
        "fcn8s",
        _SIFTFLOW,
        "none reported for this net",
        _SIFTFLOW_INPUT,
    ),
    # torchvision.models.segmentation.FCN_ResNet{50,101}_Weights.COCO_WITH_VOC_LABELS_V1: url and meta.
    _torchvision("resnet50", "1167a1af", 60.5, 91.4),
    _torchvision("resnet101", "7ecb50ca", 63.7, 91.9),
]
PRETRAINED = {entry.name: entry for entry in _ENTRIES}
"""The registry: name -> Pretrained."""


def pretrained_entry(name: str) -> Pretrained:
    """Return the entry called name, or raise a one-line ValueError listing the names."""
    if name not in PRETRAINED:
        raise ValueError(f"no pretrained weights called '{name}'; choose from {', '.join(PRETRAINED)}")
    return PRETRAINED[name]


def download_path(entry: Pretrained) -> Path:
    """Return where the published file is kept: torch hub's checkpoints directory ($TORCH_HOME)."""
    return Path(torch.hub.get_dir()) / "checkpoints" / entry.resource.filename


def converted_path(entry: Pretrained) -> Path:
    """Return where the converted checkpoint is kept: torch.hub.get_dir()/fcn/<name>.pt."""
    return Path(torch.hub.get_dir()) / "fcn" / f"{entry.name}.pt"


def entry_of(checkpoint: str | os.PathLike) -> Optional[Pretrained]:
    """Return the entry whose converted checkpoint is at that path, else None."""
    path = Path(checkpoint).resolve()
    return next((e for e in PRETRAINED.values() if converted_path(e).resolve() == path), None)


def _download(entry: Pretrained, mirror: Optional[str], progress: bool, log: Callable[[str], None]) -> Path:
    """Return the published file in the cache, downloaded (and checked) when it is not there yet."""
    dest = download_path(entry)
    with download_lock(dest, log):  # one process downloads; the others wait, then verify its file
        return _download_locked(entry, dest, mirror, progress, log)


def _download_locked(
    entry: Pretrained, dest: Path, mirror: Optional[str], progress: bool, log: Callable[[str], None]
) -> Path:
    """_download() with dest's lock held."""
    resource = entry.resource
    if dest.exists():
        try:  # a file placed by hand (or torchvision's own copy) is checked as a download is
            verify(resource, dest, str(dest), log)
            return dest
        except RecordError:
            raise  # nothing can be checked until the record is repaired
        except DownloadError as exc:
            log(f"{entry.name}: {exc}; downloading again")
    mirror = mirror if mirror is not None else os.environ.get(MIRROR_ENV) or None
    url = mirror_url(mirror, resource) if mirror else resource.url
    dest.parent.mkdir(parents=True, exist_ok=True)
    log(f"{entry.name}: downloading {url} to {dest}")
    part = dest.with_name(dest.name + ".part")
    part.unlink(missing_ok=True)
    try:
        fetch(url, dest, progress)
    except (DownloadError, KeyboardInterrupt) as exc:
        part.unlink(missing_ok=True)  # no half file left behind: the next call starts again
        if isinstance(exc, KeyboardInterrupt):
            raise
        raise DownloadError(
            f"{entry.name}: {exc} -- {dest.name} is not in the cache: download {resource.url} where you "
            f"are online and put it at {dest} (or point ${MIRROR_ENV} at a server holding it)"
        ) from None
    try:
        verify(resource, dest, url, log)  # deletes a file that fails
    except DownloadError as exc:
        text = str(exc)
        raise DownloadError(text if text.startswith(f"{entry.name}:") else f"{entry.name}: {text}") from None
    return dest


def _convert(entry: Pretrained, source: Path, out: Path) -> None:
    """Write the weights checkpoint of entry from its published file: a caffemodel through
    fcn.models.reference.convert, a state dict loaded as it is (strictly) into the model its
    overrides describe."""
    out.parent.mkdir(parents=True, exist_ok=True)
    if not entry.overrides:
        from fcn.models.reference import convert

        try:
            convert(str(source), str(out), entry.arch, list(entry.modalities))
        except ValueError as exc:
            raise DownloadError(f"{entry.name}: {exc}") from None
        return
    from fcn.core.checkpoint import CheckpointError, read_torch_file
    from fcn.models.fcn import build_model

    cfg = load_config(overrides=[*entry.overrides, "model.pretrained=false"])
    model = build_model(cfg.model)
    try:
        model.load_state_dict(read_torch_file(source, "weights file"))
    except (CheckpointError, RuntimeError, TypeError) as exc:
        first = str(exc).strip().splitlines()[0]
        raise DownloadError(
            f"{entry.name}: {source} does not hold the weights of {entry.arch} ({entry.backbone}): {first}"
        ) from None
    save_checkpoint(weights_checkpoint(model=model, config=to_dict(cfg)), out)


def pretrained_checkpoint(
    name: str,
    mirror: Optional[str] = None,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> Path:
    """Return the converted checkpoint of the registry entry name: read from the cache, else
    downloaded, checked and converted (see the module doc); DownloadError/ValueError in one line."""
    entry = pretrained_entry(name)
    out = converted_path(entry)
    with download_lock(out, log):  # one process converts; the others wait, then read its file
        if stamp_matches(out):
            return out
        if out.exists():  # cut short, damaged, or written before sidecars: of no use as it is
            log(f"{entry.name}: {out} does not match its sidecar {out.name}.sha256.json; converting again")
        source = _download(entry, mirror, progress, log)
        log(f"{entry.name}: converting {source.name} to {out}")
        _convert(entry, source, out)
        write_stamp(out)  # after the file: a crash between the two leaves no sidecar, hence a rebuild
    return out


def registry_rows(names: Sequence[str] = ()) -> list[list[str]]:
    """Return the table rows (name, arch, classes, input, reported, checksum, URL) of the entries."""
    rows = []
    for entry in (pretrained_entry(n) for n in names) if names else PRETRAINED.values():
        arch = f"{entry.arch} ({entry.backbone})"
        rows.append(
            [
                entry.name,
                arch,
                entry.classes,
                entry.normalization,
                entry.reported,
                entry.checksum,
                entry.resource.url,
            ]
        )
    return rows


TABLE_HEADER = ["name", "model.arch", "classes", "input", "reported by its authors", "checksum", "file"]


def registry_markdown() -> str:
    """Return the registry as a Markdown table (docs/pretrained.md holds it; a test compares)."""
    lines = ["| " + " | ".join(TABLE_HEADER) + " |", "|" + "---|" * len(TABLE_HEADER)]
    for row in registry_rows():
        cells = [
            f"`{row[0]}`",
            f"`{row[1].split(' ')[0]}` {row[1].split(' ', 1)[1]}",
            *row[2:6],
            f"<{row[6]}>",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
