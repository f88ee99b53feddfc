"""Atomic file writing, the one way this project writes a file (no torch here: the data tools,
pictures and reports use it without importing torch).

``atomic_write`` writes to a temporary file beside the target, fsyncs it, gives it the usual mode
(0666 less the umask) and renames it over the target; a crash, a kill or a full disk leaves the
previous file whole and no temporary file behind. An OS error (no space, no permission) is raised as
a ``WriteError`` naming the file, the cause and what is left on disk.
"""

from __future__ import annotations

import errno
import os
import uuid
from pathlib import Path
from typing import Callable


class WriteError(OSError):
    """A file could not be written (no space, no permission); the message names the file, the cause
    and what is left on disk."""


def _os_error(exc: BaseException) -> OSError | None:
    """Return the OSError behind exc (itself, or one it was raised from or while handling, unless
    that context was suppressed with 'raise ... from None'), if any."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, OSError):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or (None if exc.__suppress_context__ else exc.__context__)
    return None


def atomic_write(path: str | os.PathLike, write: Callable[[Path], None], *, durable: bool = True) -> None:
    """Write a file as write(temp_path) does, atomically: the temporary file beside path is fsynced,
    given the usual mode and renamed over path; on any failure it is removed and path is untouched.
    An OS error (no space left, no permission) is raised as a WriteError naming path and the cause.

    durable=False leaves out the two fsyncs (the file's and its directory's), for outputs written by
    the hundred that the caller makes durable once, with sync() after the last one: readers still
    never see a half-written file, only a power cut before that sync can lose them."""
    path = Path(path)
    existed = path.exists()
    # Same directory, hence the same file system: os.replace is then an atomic rename.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write(tmp)
        if durable:
            fd = os.open(tmp, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        os.chmod(tmp, 0o666 & ~_umask())  # some writers (mkstemp-based ones) create 0600
        os.replace(tmp, path)
    except BaseException as exc:  # also KeyboardInterrupt: never leave the temp file behind
        tmp.unlink(missing_ok=True)
        cause = _os_error(exc)
        if cause is None or isinstance(exc, WriteError):
            raise
        reason = cause.strerror or str(cause)
        if cause.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
            reason += " (free some space or write elsewhere)"
        kept = f"the previous {path.name} is intact" if existed else f"no {path.name} was written"
        error = WriteError(f"cannot write {path}: {reason}; {kept}")
        error.errno = cause.errno
        raise error from None
    if durable:
        _fsync_dir(path.parent)


def sync() -> None:
    """Flush every file written so far to disk (what atomic_write's durable=False left out), once."""
    if hasattr(os, "sync"):
        os.sync()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync_dir(directory: Path) -> None:
    """Make the rename durable where the platform allows fsync on a directory (POSIX)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
