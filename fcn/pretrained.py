"""List the published FCN weights, or fetch one into the cache (the registry: fcn.models.pretrained).

python -m fcn.pretrained                              # the table
python -m fcn.pretrained voc-fcn8s [--mirror URL]     # download, check, convert; print the checkpoint
"""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from fcn.core.errors import leave, run_phases
from fcn.models.pretrained import (
    PRETRAINED,
    TABLE_HEADER,
    pretrained_checkpoint,
    pretrained_entry,
    registry_rows,
)


def main(argv: Sequence[str] | None = None) -> int:
    """List the registry, or fetch the named entries; return the exit code (fcn.core.errors' rule)."""
    p = argparse.ArgumentParser(prog="python -m fcn.pretrained", description=__doc__.split("\n\n")[0])
    p.add_argument("names", nargs="*", metavar="NAME", help=f"entries to fetch: {', '.join(PRETRAINED)}")
    p.add_argument(
        "--mirror", default=None, help="base URL serving the files by name (default: $FCN_DATA_MIRROR)"
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = p.parse_args(argv)

    def prepare() -> list[str]:
        return [pretrained_entry(name).name for name in args.names]  # a wrong name before any download

    def work(names: list[str]) -> None:
        if not names:
            for name, arch, *details in registry_rows():
                print(f"{name:<26} {arch}")
                for label, value in zip(TABLE_HEADER[2:], details):
                    print(f"{'':<4}{label}: {value}")
            return
        for name in names:
            print(pretrained_checkpoint(name, args.mirror, not args.no_progress))

    return run_phases(prepare, work)


if __name__ == "__main__":
    sys.exit(leave(main()))
