"""Train an FCN as a YAML config says.

python train.py                                        # config.yml
python train.py --config predefined_configs/toy.yml training.iters=100
torchrun --standalone --nproc_per_node=4 train.py --config predefined_configs/fcn8s.yml
"""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from fcn.cli import add_config_arguments
from fcn.core.errors import exit_code, leave, run_phases


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Return the parsed command line."""
    p = argparse.ArgumentParser(
        description="Train an FCN as a YAML config says (see config.yml for every key).",
        epilog="Example: python train.py --config predefined_configs/toy.yml training.iters=100",
    )
    add_config_arguments(p, "the defaults (default: config.yml)")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Train; return the exit code (fcn.core.errors: 2 for a bad config or input before training, 1 for a
    failure during it or of the process group, 143 / 75 when preempted by SIGTERM / SIGUSR1),
    each error as one line."""
    args = parse_args(argv)
    from fcn.config import load_config
    from fcn.core import distributed
    from fcn.training import loop
    from fcn.training.state import Run

    def prepare() -> Run:
        return loop.setup(load_config(args.config or ["config.yml"], args.overrides))

    def work(run: Run) -> int:
        return exit_code(loop.train(run)["signal"])  # 143 or 75 when preempted

    info = distributed.env_info()
    return run_phases(prepare, work, prefix=f"rank {info.rank}: " if info.enabled else "")


if __name__ == "__main__":
    sys.exit(leave(main()))
