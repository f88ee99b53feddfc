"""Fetch PASCAL VOC 2012, SBD and the paper's seg11valid list into a data root; verify and extract.
On request, the authors' trained PASCAL FCNs (Caffe .caffemodel files) too.

    python -m fcn.data.download --root data [--what voc2012 sbd seg11valid] [--mirror URL]
    python -m fcn.data.download --root data --what fcn8s-caffe [fcn32s-caffe fcn16s-caffe fcn8s-atonce-caffe]

Result (the layout the datasets read):

    <root>/VOCdevkit/VOC2012/...          VOCtrainval_11-May-2012.tar (about 2 GB)
    <root>/benchmark_RELEASE/dataset/...  benchmark.tgz (about 1.4 GB)
    <root>/seg11valid.txt                 736 ids, fcn.berkeleyvision.org data/pascal/seg11valid.txt
    <root>/models/fcn8s-heavy-pascal.caffemodel ...   about 540 MB each, kept as they are

Downloads go to <file>.part and resume from where they stopped (HTTP Range); a finished file is
checked against its published MD5 or SHA-1 and its content (seg11valid.txt: its ids; a caffemodel:
that it is one), and a bad one is deleted. A file with no published hash (seg11valid.txt, most
caffemodels) has its SHA-256 recorded on its first download in <its directory>/fcn-sha256.json,
said in one line, and every later download or copy in place is checked against it.
Each resource is prepared under a lock, .locks/<file>.lock beside it (filelock, as huggingface_hub
locks its blobs): a second process asking for it waits, then finds it in place; the .part is the
lock holder's alone, so resuming it is safe (fcn.core.downloads).
Archives are extracted into a temporary directory, checked for the expected layout and only then
moved into place, so an interrupted or failed run leaves nothing half-extracted under <root>.
A resource whose layout is already present is skipped. Nothing touches the network at import.

torchvision.datasets.utils.download_url is not used because it cannot resume a partial download,
and its tar extraction applies no member filter; this module keeps both in ~150 lines.
The VOC, SBD and seg11valid addresses are https; the authors' caffemodels are served over plain
http only (see MODELS), where their checksums are what guard them.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import sys
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Optional, Sequence

# DownloadError, fetch and hexdigests live in fcn.core.downloads (fcn.models.pretrained uses them
# too) and are kept importable from here, where the command's users and tests find them.
from fcn.core.downloads import (  # noqa: F401
    CHUNK,
    USER_AGENT,
    DownloadError,
    RecordError,
    check_first_use,
    download_lock,
    fetch,
    hexdigests,
)

MIRROR_ENV = "FCN_DATA_MIRROR"
"""Environment variable: a base URL serving the files by their names, used instead of the official addresses."""


@dataclass(frozen=True)
class Resource:
    """One downloadable file: where it is published, how to verify it, what it must produce under the root."""

    name: str
    url: str
    filename: str
    md5: Optional[str]
    """Published MD5 of the file (None: none published; `sha1` or `validate` checks it instead)."""
    required: tuple[str, ...]
    """Paths relative to the root that must exist (directories non-empty) once the resource is in place."""
    archive: bool = True
    """Extract the file into the root (True) or keep it as <root>/<directory>/<filename> (False)."""
    validate: Optional[Callable[[Path], None]] = None
    """Extra content check of the downloaded file; raises DownloadError."""
    sha1: Optional[str] = None
    """Published SHA-1 of the file, where that is what a public source lists."""
    directory: str = ""
    """Where under the root the file is downloaded (and kept, when not an archive)."""
    sha256_prefix: Optional[str] = None
    """The first hex digits of the file's SHA-256, as torch hub names its files (<name>-<prefix>.pth)."""


def check_seg11valid(path: Path) -> None:
    """Raise DownloadError unless `path` lists 736 distinct VOC ids (YYYY_NNNNNN), the paper's seg11valid."""
    ids = path.read_text(errors="replace").split()
    bad = [i for i in ids if not re.fullmatch(r"\d{4}_\d{6}", i)]
    if bad or len(ids) != 736 or len(set(ids)) != 736:
        raise DownloadError(
            f"{path}: expected 736 distinct ids like 2007_000033, got {len(ids)} ids"
            + (f" including {bad[0][:40]!r}" if bad else "")
            + "; the file at that address is not the authors' seg11valid.txt"
        )


RESOURCES = {
    # PASCAL VOC 2012 trainval, from the challenge's own server (MD5 as published with the devkit),
    # over https: the server serves it (keras-cv's and tensorflow_datasets' VOC loaders use it).
    "voc2012": Resource(
        name="voc2012",
        url="https://host.robots.ox.ac.uk/pascal/VOC/voc2012/VOCtrainval_11-May-2012.tar",
        filename="VOCtrainval_11-May-2012.tar",
        md5="6cd6e144f989b92b3379bac3b3de84fd",
        required=(
            "VOCdevkit/VOC2012/JPEGImages",
            "VOCdevkit/VOC2012/SegmentationClass",
            "VOCdevkit/VOC2012/ImageSets/Segmentation/train.txt",
            "VOCdevkit/VOC2012/ImageSets/Segmentation/val.txt",
            "VOCdevkit/VOC2012/ImageSets/Segmentation/trainval.txt",
        ),
    ),
    # SBD (Hariharan et al. 2011), from the Berkeley semantic contours page.
    "sbd": Resource(
        name="sbd",
        url="https://www2.eecs.berkeley.edu/Research/Projects/CS/vision/grouping/semantic_contours/benchmark.tgz",
        filename="benchmark.tgz",
        md5="82b4d87ceb2ed10f6038a1cba92111cb",
        required=(
            "benchmark_RELEASE/dataset/img",
            "benchmark_RELEASE/dataset/cls",
            "benchmark_RELEASE/dataset/train.txt",
            "benchmark_RELEASE/dataset/val.txt",
        ),
    ),
    # The paper's validation ids, published with the reference implementation (no MD5 published:
    # the content is checked instead).
    "seg11valid": Resource(
        name="seg11valid",
        url="https://raw.githubusercontent.com/shelhamer/fcn.berkeleyvision.org/master/data/pascal/seg11valid.txt",
        filename="seg11valid.txt",
        md5=None,
        required=("seg11valid.txt",),
        archive=False,
        validate=check_seg11valid,
    ),
}


def check_caffemodel(path: Path) -> None:
    """Raise DownloadError unless `path` is a Caffe NetParameter holding an FCN's score_fr weights."""
    from fcn.core.caffemodel import read_caffemodel  # numpy only, but fcn.models imports torch: on use

    try:
        layers = read_caffemodel(path)
    except ValueError as exc:
        raise DownloadError(f"{exc}; the file at that address is not the authors' model") from None
    if not layers.get("score_fr"):
        raise DownloadError(f"{path}: a Caffe net without an FCN's score_fr layer, not the authors' model")


# The authors' PASCAL VOC models at the addresses their repository lists (fcn.berkeleyvision.org
# voc-fcn*/caffemodel-url), scored in its README (mean IU on seg11valid: 63.6, 65.0, 65.5, 65.4).
# The authors list no checksums; these are the ones public download scripts check: FCN-8s's MD5
# (wkentaro/fcn's earlier download code; Toby Breckon's OpenCV examples script) and SHA-1 (OpenCV's
# opencv_extra testdata/dnn/download_models.py), FCN-32s's SHA-1 (an earlier version of that script).
# FCN-16s and at-once: none found; check_caffemodel still checks every file's content, and their
# SHA-256 is recorded on the first download (trust on first use) and checked from then on.
# Plain http: dl.caffe.berkeleyvision.org is not known to serve https (every public script and
# the authors' caffemodel-url files use http), so these checksums are what guard the file.
MODELS = {
    name: Resource(
        name=name,
        url=f"http://dl.caffe.berkeleyvision.org/{filename}",
        filename=filename,
        md5=md5,
        sha1=sha1,
        required=(f"models/{filename}",),
        archive=False,
        validate=check_caffemodel,
        directory="models",
    )
    for name, filename, md5, sha1 in (
        ("fcn32s-caffe", "fcn32s-heavy-pascal.caffemodel", None, "05eb922d7829c39448f57e5ab9d8cd75d6c0be6d"),
        ("fcn16s-caffe", "fcn16s-heavy-pascal.caffemodel", None, None),
        (
            "fcn8s-caffe",
            "fcn8s-heavy-pascal.caffemodel",
            "c03b2953ebd846c270da1a8e8f200c09",
            "c449ea74dd7d83751d1357d6a8c323fcf4038962",
        ),
        ("fcn8s-atonce-caffe", "fcn8s-atonce-pascal.caffemodel", None, None),
    )
}
"""The authors' trained FCNs, fetched only when asked for (--what fcn8s-caffe ...)."""


def missing_paths(resource: Resource, base: Path) -> list[str]:
    """Return the resource's required paths that are absent (or empty directories) under `base`."""
    missing = []
    for rel in resource.required:
        path = base / rel
        if not path.exists() or (path.is_dir() and not any(path.iterdir())):
            missing.append(rel)
    return missing


def md5sum(path: Path) -> str:
    """Return the hex MD5 of a file, read in chunks."""
    return hexdigests(path, ["md5"])["md5"]


def verify(resource: Resource, path: Path, url: str, log: Callable[[str], None] = print) -> None:
    """Raise DownloadError (after deleting `path`) when the file fails its checksums or content check.

    Checked: the published MD5/SHA-1 where there is one; torchvision's SHA-256 prefix; the content
    check; and, where no full hash is published, the SHA-256 recorded on the file's first download
    (fcn.core.downloads.check_first_use: recorded now, said in one line, when there is none yet)."""
    published = (("md5", resource.md5), ("sha1", resource.sha1), ("sha256", resource.sha256_prefix))
    expected = {name: value for name, value in published if value}
    try:
        got = hexdigests(path, [*expected, "sha256"])
        for name, value in expected.items():
            if not got[name].startswith(value) or (name != "sha256" and got[name] != value):
                label = {"md5": "MD5", "sha1": "SHA-1", "sha256": "SHA-256"}[name]
                raise DownloadError(
                    f"{resource.name}: {url} gave a file with {label} {got[name]}, expected {value}; "
                    "the corrupt download was deleted: run the command again (or check --mirror)"
                )
        if resource.validate is not None:
            resource.validate(path)
        if not (resource.md5 or resource.sha1):  # no full hash published: trust on first use
            check_first_use(resource.name, path, got["sha256"], url, log)
    except RecordError:
        raise  # the record is damaged, not the file: keep it
    except DownloadError:
        path.unlink(missing_ok=True)
        raise


def _move_into(src: Path, dst: Path) -> None:
    """Move the entries of directory `src` into `dst`, merging with directories already there."""
    dst.mkdir(parents=True, exist_ok=True)
    for entry in src.iterdir():
        target = dst / entry.name
        if entry.is_dir() and target.is_dir():
            _move_into(entry, target)
        else:
            if target.is_dir():
                shutil.rmtree(target)
            os.replace(entry, target)


def _safe_extractall(tar: tarfile.TarFile, dest: Path) -> None:
    """Extract every member of `tar` under `dest`, refusing paths and links that would leave it."""
    if hasattr(tarfile, "data_filter"):
        # The 'data' filter refuses absolute paths, '..', links out of the tree and device files.
        tar.extractall(dest, filter="data")
        return
    for member in tar.getmembers():  # Pythons before 3.10.12 / 3.11.4 have no extraction filters
        parts = Path(member.name).parts
        if member.name.startswith("/") or ".." in parts or member.issym() or member.islnk() or member.isdev():
            raise tarfile.TarError(f"unsafe member {member.name!r}")
    tar.extractall(dest)


def extract(resource: Resource, archive: Path, root: Path) -> None:
    """Extract `archive` into a temporary directory, check the layout, then move it into `root`."""
    staging = root / f".extract-{resource.name}-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    try:
        try:
            with tarfile.open(archive) as tar:
                _safe_extractall(tar, staging)
        except (tarfile.TarError, EOFError, OSError) as exc:
            raise DownloadError(f"{archive}: cannot extract ({exc}); delete it and run again") from None
        missing = missing_paths(resource, staging)
        if missing:
            raise DownloadError(
                f"{archive}: extracted, but {', '.join(missing)} is missing; not the expected archive "
                "(delete it and run again, or check --mirror)"
            )
        _move_into(staging, root)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def prepare(
    resource: Resource,
    root: str | Path,
    url: Optional[str] = None,
    progress: bool = True,
    keep_archive: bool = False,
    log: Callable[[str], None] = print,
) -> bool:
    """Put `resource` in place under `root` (download, verify, extract, check); return False if it already was."""
    root = Path(root)
    url = url or resource.url
    dest = root / resource.directory / resource.filename
    with download_lock(dest, log):  # one process prepares it; the others wait, then find it in place
        return _prepare(resource, root, dest, url, progress, keep_archive, log)


def _prepare(
    resource: Resource,
    root: Path,
    dest: Path,
    url: str,
    progress: bool,
    keep_archive: bool,
    log: Callable[[str], None],
) -> bool:
    """prepare() with dest's lock held."""
    if not resource.archive and dest.exists():
        try:  # a plain file is its own result: check its content, not only that it exists
            verify(resource, dest, str(dest), log)
        except RecordError:
            raise  # nothing can be checked until the record is repaired
        except DownloadError as exc:
            log(f"{resource.name}: {exc}; downloading again")
    if not missing_paths(resource, root):
        log(f"{resource.name}: already present in {root}; nothing to do")
        return False
    dest.parent.mkdir(parents=True, exist_ok=True)
    if dest.exists():
        log(f"{resource.name}: found {dest}, verifying")
        try:
            verify(resource, dest, str(dest), log)
        except DownloadError:
            log(f"{resource.name}: {dest} is corrupt; deleted it, downloading again")
    if not dest.exists():
        part = dest.with_name(dest.name + ".part")
        resume = f" (resuming after {part.stat().st_size} bytes)" if part.exists() else ""
        log(f"{resource.name}: downloading {url}{resume}")
        fetch(url, dest, progress)
        verify(resource, dest, url, log)
    if resource.archive:
        log(f"{resource.name}: extracting {dest}")
        try:
            extract(resource, dest, root)
        except DownloadError:
            dest.unlink(missing_ok=True)  # a verified file that does not extract is of no use either
            raise
        if not keep_archive:
            dest.unlink()
    missing = missing_paths(resource, root)
    if missing:
        raise DownloadError(f"{resource.name}: {', '.join(missing)} still missing under {root}")
    log(f"{resource.name}: ready in {root}")
    return True


def mirror_url(mirror: str, resource: Resource) -> str:
    """Return the resource's address on a mirror serving files by name."""
    return mirror.rstrip("/") + "/" + resource.filename


def download(
    root: str | Path,
    what: Iterable[str] = tuple(RESOURCES),
    mirror: Optional[str] = None,
    resources: Optional[dict[str, Resource]] = None,
    progress: bool = True,
    keep_archives: bool = False,
    log: Callable[[str], None] = print,
) -> list[str]:
    """Put each named resource in place under `root`; return the names that needed work.

    `mirror` (default: $FCN_DATA_MIRROR) replaces the official addresses by <mirror>/<filename>;
    `resources` replaces the table of official resources and models (tests serve tiny files this way).
    """
    table = {**RESOURCES, **MODELS} if resources is None else resources
    mirror = mirror if mirror is not None else os.environ.get(MIRROR_ENV) or None
    names = list(what)
    unknown = [n for n in names if n not in table]
    if unknown:
        raise ValueError(f"unknown resource {unknown[0]!r}; choose from {', '.join(table)}")
    done = []
    for name in names:
        resource = table[name]
        url = mirror_url(mirror, resource) if mirror else resource.url
        if prepare(resource, root, url, progress, keep_archives, log):
            done.append(name)
    return done


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Parse the command line and download; return the exit code, the project's rule
    (fcn.core.errors): 2 for a bad --root or --mirror, 1 for a failed download, 130 on Ctrl-C, each
    with one 'error:' line."""
    parser = argparse.ArgumentParser(prog="python -m fcn.data.download", description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", default="data", help="data root (default: data)")
    parser.add_argument(
        "--what",
        nargs="+",
        choices=[*RESOURCES, *MODELS],
        default=list(RESOURCES),
        help=f"what to fetch (default: the data, {' '.join(RESOURCES)}); the authors' Caffe models "
        f"(about 540 MB each, into <root>/models/) only when named: {' '.join(MODELS)}",
    )
    parser.add_argument(
        "--mirror",
        default=None,
        help=f"base URL serving the files by name (default: ${MIRROR_ENV} or the official sites)",
    )
    parser.add_argument(
        "--keep-archives", action="store_true", help="keep the .tar/.tgz files after extraction"
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    from fcn.core.errors import run_phases

    def prepare() -> None:
        root = Path(args.root)
        if root.exists() and not root.is_dir():
            raise ValueError(f"--root {root} is a file; give the directory the data goes into")
        mirror = args.mirror if args.mirror is not None else os.environ.get(MIRROR_ENV)
        if mirror and not re.match(r"^(https?|file)://", mirror):
            source = "--mirror" if args.mirror is not None else MIRROR_ENV
            raise ValueError(f"{source}={mirror!r} is not an http://, https:// or file:// URL")

    def work(_: None) -> None:
        try:
            download(
                args.root,
                args.what,
                args.mirror,
                progress=not args.no_progress,
                keep_archives=args.keep_archives,
            )
        except KeyboardInterrupt:
            print("error: interrupted; run the same command again to resume", file=sys.stderr)
            raise SystemExit(130) from None

    try:
        return run_phases(prepare, work)
    except SystemExit as exc:
        return int(exc.code)


if __name__ == "__main__":
    sys.exit(main())
