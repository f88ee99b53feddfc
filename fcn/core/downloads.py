"""Downloading a file from elsewhere as huggingface_hub and torch.hub do: one writer at a time, a
digest checked before the file is used, and files made from a download checked before each use.

- **One writer** (``download_lock``): a ``filelock.FileLock`` on ``.locks/<file>.lock`` in the file's
  directory, as huggingface_hub locks each blob in its cache's ``.locks/``. Two processes asking for
  the same file: one downloads, the other waits (saying so in one line), then finds the finished
  file and verifies it as any file found in place. The empty lock files stay, out of sight in
  ``.locks/`` (filelock never deletes one: deleting a lock another process waits on would let a
  third take a second lock on a new file).
- **One .part name** (``fetch``): ``<file>.part``, written only under that lock, so a leftover .part
  is the one interrupted writer's and resuming it (HTTP Range) is safe; a name unique per process
  would make every interrupted download start again from zero.
- **A digest** (``hexdigests``, ``check_first_use``): published checksums are the caller's to check;
  where no full hash is published, the file's SHA-256 is recorded on its first download (trust on
  first use) in ``fcn-sha256.json`` beside it, said in one printed line, and every later download or
  copy found in place must match it; a file that does not is deleted and named in one DownloadError.
- **A file made from a download** (``write_stamp``, ``stamp_matches``): a converted checkpoint gets a
  sidecar ``<file>.sha256.json`` (its SHA-256, size and mtime) written atomically after it; on use,
  size and mtime equal to the sidecar's pass without reading the file (as make and ccache trust a
  stat), anything else is hashed, and a file without a sidecar or with another digest is not whole:
  the caller makes it again.

No torch; nothing touches the network at import.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import urllib.error
import urllib.request
from pathlib import Path
from typing import Callable, Iterable, Iterator, Optional

from filelock import FileLock, Timeout

from fcn.core.files import atomic_write

USER_AGENT = "pytorch-fcn-download"
CHUNK = 1 << 20
KNOWN_HASHES = "fcn-sha256.json"
"""The file, in the directory of the downloads, holding {file name: {"sha256", "size"}} of the files
without a published full hash, as recorded on their first download."""

LOCKS = ".locks"
"""The directory, beside the files, of their lock files (huggingface_hub's name for its own)."""


class DownloadError(RuntimeError):
    """A download, checksum, extraction or layout problem, with a one-line message saying what to do."""


class RecordError(DownloadError):
    """The recorded SHA-256s (fcn-sha256.json) cannot be read: the file being checked is kept."""


def hexdigests(path: Path, algorithms: Iterable[str]) -> dict[str, str]:
    """Return {algorithm: hex digest} of a file, read once in chunks (algorithms: 'md5', 'sha1', ...)."""
    digests = {name: hashlib.new(name, usedforsecurity=False) for name in algorithms}
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            for digest in digests.values():
                digest.update(block)
    return {name: digest.hexdigest() for name, digest in digests.items()}


@contextlib.contextmanager
def download_lock(dest: Path, log: Callable[[str], None] = print) -> Iterator[None]:
    """Hold the lock of `dest` (``<dest's directory>/.locks/<dest's name>.lock``) for the block; when
    another process holds it, say so in one line and wait until it is done."""
    locks = dest.parent / LOCKS
    locks.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(locks / f"{dest.name}.lock"))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        log(f"{dest.name}: another process is downloading or preparing it ({lock.lock_file}); waiting")
        lock.acquire()
    try:
        yield
    finally:
        lock.release()


def fetch(url: str, dest: Path, progress: bool = True, timeout: float = 60.0) -> Path:
    """Download `url` to `dest`, resuming `dest`.part when present (HTTP Range); return `dest`.

    The caller holds download_lock(dest): the .part is then this process's alone. The file is not
    verified here; an interrupted download leaves `dest`.part to resume from.
    """
    from tqdm import tqdm

    part = dest.with_name(dest.name + ".part")
    offset = part.stat().st_size if part.exists() else 0
    headers = {"User-Agent": USER_AGENT}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    try:
        response = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and offset:  # the .part already holds the whole file
            os.replace(part, dest)
            return dest
        raise DownloadError(f"{url}: HTTP {exc.code} {exc.reason}; check the address (or --mirror)") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise DownloadError(f"{url}: cannot connect ({reason}); check the network or use --mirror") from None
    with response:
        if offset and response.status != 206:
            offset = 0  # the server ignored Range: start again from the beginning
        length = response.headers.get("Content-Length")
        total = offset + int(length) if length is not None else None
        received = offset
        with (
            open(part, "ab" if offset else "wb") as f,
            tqdm(
                total=total,
                initial=offset,
                unit="B",
                unit_scale=True,
                unit_divisor=1024,
                desc=dest.name,
                disable=not progress,
            ) as bar,
        ):
            try:
                for block in iter(lambda: response.read(CHUNK), b""):
                    f.write(block)
                    received += len(block)
                    bar.update(len(block))
            except OSError as exc:
                raise DownloadError(
                    f"{url}: download stopped after {received} bytes ({exc}); run again to resume"
                ) from None
    if total is not None and received != total:
        raise DownloadError(f"{url}: got {received} of {total} bytes; run again to resume")
    os.replace(part, dest)
    return dest


def _read_json(path: Path) -> dict:
    """Return the JSON object in path ({} when there is none); a damaged one is a DownloadError."""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise RecordError(f"{path}: unreadable ({exc}); repair or delete it and run again") from None
    if not isinstance(data, dict):
        raise RecordError(f"{path}: not a JSON object; repair or delete it and run again")
    return data


def recorded_sha256(dest: Path) -> Optional[str]:
    """Return the SHA-256 recorded for dest's file name on its first download, or None."""
    entry = _read_json(dest.parent / KNOWN_HASHES).get(dest.name)
    return entry.get("sha256") if isinstance(entry, dict) else None


def check_first_use(
    name: str, dest: Path, sha256: str, source: str, log: Callable[[str], None] = print
) -> None:
    """Check dest (SHA-256 `sha256`, from `source`) against the SHA-256 recorded for its file name,
    or record it there when there is none, saying so in one line. On a mismatch the file is deleted
    and a DownloadError names it, both digests and what to do.

    Call it only for a file with no published full hash, and only once its content checks passed."""
    known = dest.parent / KNOWN_HASHES
    with download_lock(known, log):  # two files of one directory may finish at once
        table = _read_json(known)
        entry = table.get(dest.name)
        expected = entry.get("sha256") if isinstance(entry, dict) else None
        if expected is None:
            table[dest.name] = {"sha256": sha256, "size": dest.stat().st_size}
            text = json.dumps(table, indent=1, sort_keys=True) + "\n"
            atomic_write(known, lambda tmp: tmp.write_text(text))
            log(
                f"{name}: recorded sha256 {sha256} of {dest.name} on first download (in {known}); "
                "later downloads are checked against it"
            )
            return
    if sha256 != expected:
        dest.unlink(missing_ok=True)
        raise DownloadError(
            f"{name}: {source} gave {dest.name} with SHA-256 {sha256}, expected {expected} (recorded on "
            f"its first download in {known}); the file was deleted: if its publisher changed it on "
            f"purpose, remove '{dest.name}' from that file and run again, else check the source (or --mirror)"
        )


def stamp_path(path: Path) -> Path:
    """Return the sidecar of a file made from a download: <file>.sha256.json."""
    return path.with_name(path.name + ".sha256.json")


def write_stamp(path: Path, sha256: Optional[str] = None) -> None:
    """Write the sidecar of path (its SHA-256, computed unless given, size and mtime), atomically,
    once path is complete."""
    st = path.stat()
    sha256 = sha256 or hexdigests(path, ["sha256"])["sha256"]
    stamp = {"sha256": sha256, "size": st.st_size, "mtime_ns": st.st_mtime_ns}
    atomic_write(stamp_path(path), lambda tmp: tmp.write_text(json.dumps(stamp) + "\n"))


def stamp_matches(path: Path) -> bool:
    """Return whether path is the whole file its sidecar describes: True when size and mtime match
    (no read), else when its SHA-256 does (the sidecar then takes the new mtime: a copied cache is
    hashed once); False when the file or its sidecar is missing or damaged."""
    try:
        stamp = json.loads(stamp_path(path).read_text())
        st = path.stat()
        if st.st_size != stamp["size"]:
            return False
        if st.st_mtime_ns == stamp["mtime_ns"]:
            return True
        if hexdigests(path, ["sha256"])["sha256"] != stamp["sha256"]:
            return False
        write_stamp(path, stamp["sha256"])
        return True
    except (OSError, ValueError, KeyError, TypeError):
        return False
