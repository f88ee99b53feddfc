"""Split files and directories: the ids a split file lists, a required directory, a directory's names."""

from __future__ import annotations

import os
from pathlib import Path

from fcn.config import read_text


def read_split(path: Path) -> list[str]:
    """Return the ids of a split file (one id per line, first word; blank lines skipped), in order."""
    if not path.is_file():
        raise FileNotFoundError(f"split file {path} not found")
    ids = []
    for line in read_text(path).splitlines():
        words = line.split()
        if words:
            ids.append(words[0])
    if not ids:
        raise ValueError(f"split file {path} lists no ids")
    return ids


def require_dir(path: Path, what: str, hint: str) -> None:
    """Raise FileNotFoundError naming `path` when it is not a directory."""
    if not path.is_dir():
        raise FileNotFoundError(f"{what}: directory {path} not found; {hint}")


def list_names(directory: Path) -> set[str]:
    """Return the file names in `directory` (one listdir: far cheaper than a stat per id)."""
    try:
        return set(os.listdir(directory))
    except FileNotFoundError:
        return set()
