"""The documentation stays true: links resolve, named configs validate, runnable commands run.

A fenced block right after a line `<!-- runnable -->` in README.md or docs/*.md is run, line by line,
in a scratch directory holding the repository's entry points, the toy dataset in data/toy and a
short toy run's checkpoint in runs/toy (what `make demo` leaves, from a 2-iteration run). Other blocks are shown, not
run (they need a dataset, weights, a GPU or several minutes).
"""

import os
import re
import subprocess
from pathlib import Path

import pytest

from fcn.config import load_config
from tests.test_engine import python_env

REPO = Path(__file__).resolve().parent.parent
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
FENCE = re.compile(r"^(```|~~~)")
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
RUNNABLE = "<!-- runnable -->"


def _prose(text: str) -> str:
    """Return text with fenced blocks and inline code removed (links there are not links)."""
    out, fenced = [], False
    for line in text.splitlines():
        if FENCE.match(line.strip()):
            fenced = not fenced
            continue
        if not fenced:
            out.append(re.sub(r"`[^`]*`", "", line))
    return "\n".join(out)


def anchors(path: Path) -> set[str]:
    """Return the anchors GitHub gives a page's headings (lower case, punctuation dropped, spaces to
    hyphens, a repeated heading numbered -1, -2, ...)."""
    seen: dict[str, int] = {}
    found = set()
    for line in _prose(path.read_text()).splitlines():
        m = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if not m:
            continue
        slug = re.sub(r"[^\w\- ]", "", m.group(1).strip().lower()).replace(" ", "-")
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        found.add(slug if n == 0 else f"{slug}-{n}")
    return found


def _links():
    for page in PAGES:
        for target in LINK.findall(_prose(page.read_text())):
            if not re.match(r"^[a-z]+:", target):
                yield pytest.param(page, target, id=f"{page.relative_to(REPO)}:{target}")


@pytest.mark.parametrize(("page", "target"), list(_links()))
def test_relative_link_resolves(page, target):
    file, _, anchor = target.partition("#")
    dest = (page.parent / file).resolve() if file else page
    assert dest.exists(), f"{page.relative_to(REPO)}: link to {file}, which does not exist"
    if anchor:
        assert anchor in anchors(dest), f"{page.relative_to(REPO)}: no heading '#{anchor}' in {dest.name}"


def _configs_named():
    names = set()
    for page in PAGES:
        names |= set(re.findall(r"predefined_configs/[\w./{},-]+?\.yml", page.read_text()))
    for name in sorted(names):
        # predefined_configs/fcn{32s,16s}.yml stands for each name in the braces.
        m = re.match(r"(.*)\{(.*)\}(.*)", name)
        yield from [m.group(1) + part + m.group(3) for part in m.group(2).split(",")] if m else [name]


@pytest.mark.parametrize("name", sorted(set(_configs_named())))
def test_named_config_exists_and_validates(name):
    assert (REPO / name).is_file(), f"the docs name {name}, which does not exist"
    load_config([str(REPO / name)])


def runnable_blocks() -> list:
    """Return (page, first line number, commands) for every block marked runnable."""
    blocks = []
    for page in PAGES:
        lines = page.read_text().splitlines()
        for i, line in enumerate(lines):
            if line.strip() != RUNNABLE:
                continue
            assert FENCE.match(lines[i + 1].strip()), f"{page.name}:{i + 1}: {RUNNABLE} must precede a fence"
            end = next(j for j in range(i + 2, len(lines)) if FENCE.match(lines[j].strip()))
            commands = [c for c in lines[i + 2 : end] if c.strip() and not c.lstrip().startswith("#")]
            blocks.append(pytest.param(commands, id=f"{page.relative_to(REPO)}:{i + 3}"))
    return blocks


def test_some_blocks_are_marked_runnable():
    assert len(runnable_blocks()) >= 3


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    """A scratch directory laid out as a checkout after `make demo` (with a 2-iteration run)."""
    ws = tmp_path_factory.mktemp("docs")
    for name in ("train.py", "evaluate.py", "predict.py", "config.yml", "fcn", "predefined_configs", "bench"):
        os.symlink(REPO / name, ws / name)
    setup = [
        "python -m fcn.data.toy --root data/toy",
        "python train.py --config predefined_configs/toy.yml training.iters=2 training.eval_every=2"
        " training.device=cpu data.num_workers=0 data.batch_size=4",
    ]
    for command in setup:
        _run(command, ws)
    assert (ws / "runs/toy/checkpoints/best.pt").is_file()
    return ws


def _run(command: str, cwd: Path) -> None:
    run = subprocess.run(
        ["bash", "-c", command], cwd=cwd, env=python_env(OMP_NUM_THREADS="1"), capture_output=True, text=True
    )
    assert run.returncode == 0, f"`{command}` exited {run.returncode}:\n{run.stderr[-2000:]}"


@pytest.mark.slow
@pytest.mark.parametrize("commands", runnable_blocks())
def test_runnable_block_runs(commands, workspace):
    for command in commands:
        _run(command, workspace)
