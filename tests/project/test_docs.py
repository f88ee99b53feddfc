"""The documentation stays true: links resolve, named configs validate, runnable commands run, and
every config key, command-line flag, module and file the docs name exists; each page opens with the
command it is about.

A fenced block right after a line `<!-- runnable -->` in README.md or docs/*.md is run, line by line,
in a scratch directory holding the repository's entry points, the toy dataset in data/toy and a
short toy run's checkpoint in runs/toy (what `make demo` leaves, from a 2-iteration run). Other blocks are shown, not
run (they need a dataset, weights, a GPU or several minutes).
"""

import argparse
import dataclasses
import importlib
import importlib.util
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from fcn.config import Config, load_config
from tests.helpers import python_env

REPO = Path(__file__).resolve().parents[2]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
FENCE = re.compile(r"^(```|~~~)")
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
RUNNABLE = "<!-- runnable -->"


def _prose(text: str, code: bool = False) -> str:
    """Return text with fenced blocks removed, and inline code too unless code (links there are not
    links; a heading's inline code is part of its anchor)."""
    out, fenced = [], False
    for line in text.splitlines():
        if FENCE.match(line.strip()):
            fenced = not fenced
            continue
        if not fenced:
            out.append(line if code else re.sub(r"`[^`]*`", "", line))
    return "\n".join(out)


def anchors(path: Path) -> set[str]:
    """Return the anchors GitHub gives a page's headings (lower case, punctuation dropped, spaces to
    hyphens, a repeated heading numbered -1, -2, ...)."""
    seen: dict[str, int] = {}
    found = set()
    for line in _prose(path.read_text(), code=True).splitlines():
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


# --- Every config key, command-line flag, module and file the docs name exists. ---

SECTIONS = tuple(f.name for f in dataclasses.fields(Config))
# A dotted key: `training.iters`, `data.train.root`, `data.<split>.name`, `data.*.images`; not a file
# name (`bench/data.py`, `model.safetensors`) nor part of a longer name or an address.
CONFIG_KEY = re.compile(rf"(?<![\w/.$<-])(?:{'|'.join(SECTIONS)})(?:\.(?:[A-Za-z_]\w*|\*|<\w+>))+")
FILE_SUFFIXES = {"py", "yml", "yaml", "md", "json", "jsonl", "pt", "pth", "onnx", "safetensors", "png", "txt"}
SCRIPTS = ("train.py", "evaluate.py", "predict.py", "demo.py", "tune.py")
SEPARATORS = {"&&", "||", "|", ";", "&", ">", ">>", "<", "(", ")"}


def _code(text: str) -> list[str]:
    """Return a page's code: each fenced block's lines, with backslash continuations joined, and each
    inline code span (one may run over a line break within its paragraph)."""
    out, fenced, held, prose = [], False, "", []
    for line in text.splitlines():
        if FENCE.match(line.strip()):
            fenced, held = not fenced, ""
            prose.append("")
            continue
        if fenced:
            held += line.rstrip()
            if held.endswith("\\"):
                held = held[:-1] + " "
                continue
            out.append(held)
            held = ""
        else:
            prose.append(line)
    for paragraph in "\n".join(prose).split("\n\n"):
        out += [span.replace("\n", " ") for span in re.findall(r"`([^`]+)`", paragraph)]
    return out


def config_key_exists(key: str) -> bool:
    """Return whether a dotted key is in the schema (a placeholder split, <split> or *, stands for
    train; any key below a free-form mapping such as data.label_map is accepted)."""
    node: object = Config()
    for part in re.sub(r"\.(\*|<\w+>)(?=\.|$)", ".train", key).split("."):
        if isinstance(node, dict):
            return True
        if not dataclasses.is_dataclass(node) or part not in {f.name for f in dataclasses.fields(node)}:
            return False
        node = getattr(node, part)
    return True


def _yaml_keys(block: str) -> list[str]:
    """Return the dotted keys of a YAML block that is a config (its top-level keys are sections)."""
    try:
        tree = yaml.safe_load(block)
    except yaml.YAMLError:
        return []
    if not isinstance(tree, dict) or not tree or not set(map(str, tree)) <= set(SECTIONS):
        return []

    def walk(node: dict, prefix: str):
        for name, value in node.items():
            key = f"{prefix}{name}"
            yield key
            if isinstance(value, dict) and config_key_exists(key) and not isinstance(_schema_node(key), dict):
                yield from walk(value, key + ".")

    return list(walk(tree, ""))


def _schema_node(key: str) -> object:
    node: object = Config()
    for part in key.split("."):
        node = getattr(node, part)
    return node


def _without_error_examples(text: str) -> str:
    """Return text less the fenced blocks that show an error line (a made-up key on purpose)."""
    out, block = [], None
    for line in text.splitlines():
        if FENCE.match(line.strip()):
            if block is None:
                block = [line]
                continue
            if not any(b.startswith("error: ") for b in block):
                out += [*block, line]
            block = None
        elif block is not None:
            block.append(line)
        else:
            out.append(line)
    return "\n".join(out + (block or []))


def keys_named(text: str) -> set[str]:
    """Return the config keys a page names: dotted names anywhere (code, overrides, prose) and the
    nested keys of its YAML config blocks; not those of a block that shows an error."""
    text = _without_error_examples(text)
    keys = {k for k in CONFIG_KEY.findall(text) if k.rsplit(".", 1)[-1] not in FILE_SUFFIXES}
    keys = {k for k in keys if not k.endswith(".*")}  # `eval.*`: a whole section
    blocks = re.findall(r"^```ya?ml\n(.*?)^```", text, flags=re.S | re.M)
    return keys | {k for block in blocks for k in _yaml_keys(block)}


def unknown_keys(text: str) -> list[str]:
    """Return the config keys a text names that the schema does not have."""
    return sorted(k for k in keys_named(text) if not config_key_exists(k))


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_config_keys_named_exist(page):
    assert unknown_keys(page.read_text()) == [], f"{page.relative_to(REPO)} names keys the schema lacks"


def test_config_key_check_rejects_a_made_up_key():
    text = "`training.iters=10 data.train.root=x`\n```yaml\ndata:\n  train: {name: folder, rooot: x}\n```\n"
    assert unknown_keys(text) == ["data.train.rooot"]
    assert unknown_keys("`python train.py training.itters=10 eval.fast_path=auto`") == ["training.itters"]
    assert unknown_keys("see bench/data.py and model.safetensors, `data.label_map.7`") == []
    assert unknown_keys("```\n$ python train.py optimizer.lrr=0.1\nerror: key 'optimizer.lrr'\n```\n") == []


def _is_python(token: str) -> bool:
    return re.fullmatch(r"python3?", token) is not None


def commands(text: str) -> list[tuple[str, list[str]]]:
    """Return (script or module, its arguments) for each `python SCRIPT ...`, `python -m fcn... ...`,
    `python -m bench... ...` or `torchrun ... train.py ...` in a page's code."""
    found = []
    for line in _code(text):
        try:
            lexer = shlex.shlex(line.removeprefix("$ "), posix=True, punctuation_chars=True)
            lexer.whitespace_split, lexer.commenters = True, "#"
            tokens = list(lexer)
        except ValueError:  # an unbalanced quote: prose, not a command
            continue
        for i, token in enumerate(tokens):
            before = tokens[max(i - 2, 0) : i]
            module = before[-1:] == ["-m"] and re.match(r"fcn|bench\.\w", token) and _is_python(before[0])
            script = token in SCRIPTS and (
                _is_python(before[-1] if before else "") or "torchrun" in tokens[:i]
            )
            if module or script:
                rest = tokens[i + 1 :]
                end = next((j for j, t in enumerate(rest) if t in SEPARATORS), len(rest))
                found.append((token, rest[:end]))
    return found


class _Parser(BaseException):
    """Raised in place of parsing: carries the parser a script built."""

    def __init__(self, parser: argparse.ArgumentParser) -> None:
        super().__init__()
        self.parser = parser


_PARSERS: dict[str, argparse.ArgumentParser | None] = {}


def command_parser(name: str) -> argparse.ArgumentParser | None:
    """Return the argparse parser of a script (train.py) or a module (fcn.data.toy, bench.model), built
    by calling its parse_args() or main() with parsing replaced by a raise; None for a module without
    one (python -m fcn.config)."""
    if name in _PARSERS:
        return _PARSERS[name]
    saved_path = list(sys.path)
    originals = {m: getattr(argparse.ArgumentParser, m) for m in ("parse_args", "parse_intermixed_args")}

    def capture(self, *args, **kwargs):
        raise _Parser(self)

    try:
        for method in originals:
            setattr(argparse.ArgumentParser, method, capture)
        if name.endswith(".py"):
            path = REPO / name
            sys.path[:0] = [str(path.parent), str(REPO)]
            spec = importlib.util.spec_from_file_location(f"_docs_{path.stem}", path)
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
        else:
            module = importlib.import_module(name)
            if hasattr(module, "__path__") and importlib.util.find_spec(f"{name}.__main__"):
                module = importlib.import_module(f"{name}.__main__")  # python -m bench.model
        entry = getattr(module, "parse_args", None) or getattr(module, "main", None)
        parser = None
        if entry is not None:
            try:
                entry([]) if entry.__code__.co_argcount else entry()
            except _Parser as built:
                parser = built.parser
    finally:
        for method, original in originals.items():
            setattr(argparse.ArgumentParser, method, original)
        sys.path[:] = saved_path
    _PARSERS[name] = parser
    return parser


def bad_flags(text: str) -> list[str]:
    """Return `command --flag` (or `command --flag value`) for each flag a text gives a command that
    its parser does not take (or a value outside the flag's choices)."""
    bad = []
    for name, args in commands(text):
        if not name.endswith(".py") and importlib.util.find_spec(name) is None:
            continue  # test_modules_named_exist reports it
        flags = [a for a in args if a.startswith("--")]
        parser = command_parser(name) if flags else None
        for i, arg in enumerate(args):
            if not arg.startswith("--"):
                continue
            flag, _, inline = arg.partition("=")
            action = parser._option_string_actions.get(flag) if parser else None
            if action is None:
                bad.append(f"{name} {flag}")
                continue
            if not action.choices:
                continue
            values = [inline] if inline else []
            for value in [] if inline else args[i + 1 :]:  # the value, or with nargs +/* the values
                if value.startswith("-") or "=" in value:
                    break
                values.append(value)
                if action.nargs not in ("+", "*"):
                    break
            for value in values:
                if value not in map(str, action.choices):
                    bad.append(f"{name} {flag} {value}")
    return bad


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_command_flags_named_exist(page):
    assert bad_flags(page.read_text()) == [], f"{page.relative_to(REPO)}: flags its commands do not take"


def test_flag_check_rejects_a_made_up_flag():
    assert commands("`python train.py --config a.yml training.iters=2 && python evaluate.py --flip`") == [
        ("train.py", ["--config", "a.yml", "training.iters=2"]),
        ("evaluate.py", ["--flip"]),
    ]
    assert bad_flags("`python evaluate.py --checkpoint x.pt --flipp`") == ["evaluate.py --flipp"]
    assert bad_flags("```\npython -m fcn.data.toy --root r \\\n    --format vco\n```") == [
        "fcn.data.toy --format vco"
    ]
    assert bad_flags("`torchrun --nproc_per_node=2 train.py --config a.yml`") == []
    assert bad_flags("`python -m bench.model --quick --quik` and `python -m bench.metrics --size 9`") == [
        "bench.model --quik"
    ]
    assert bad_flags(
        "Run `python predict.py --checkpoint x.pt\n--input a.jpg --output out/ --frame` once."
    ) == ["predict.py --frame"]


def modules_named(text: str) -> set[str]:
    """Return the fcn and bench modules a text runs with `python -m`."""
    return {name for name, _ in commands(text) if not name.endswith(".py")}


def missing_modules(text: str) -> list[str]:
    return sorted(m for m in modules_named(text) if importlib.util.find_spec(m) is None)


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_modules_named_exist(page):
    assert missing_modules(page.read_text()) == [], f"{page.relative_to(REPO)} runs modules that do not exist"


def test_module_check_rejects_a_made_up_module():
    assert missing_modules(
        "`python -m fcn.engine --checkpoint x` and `python -m fcn.export --checkpoint x`"
    ) == ["fcn.engine"]
    assert missing_modules("`python -m bench.model_memory` or `python -m bench.model`") == [
        "bench.model_memory"
    ]


def missing_names(text: str) -> list[str]:
    """Return the `fcn.x.y` names (a module, or an attribute of one) and the `fcn/...py`, `bench/...py`
    and `tests/...py` files a text's code names that do not exist."""
    missing = []
    named = {n for code in _code(text) for n in re.findall(r"(?<![\w/.])fcn(?:\.\w+)+", code)}
    for name in sorted(n for n in named if n.rsplit(".", 1)[-1] not in FILE_SUFFIXES):  # not fcn.onnx
        parts = name.split(".")
        for i in range(len(parts), 0, -1):
            module_name = ".".join(parts[:i])
            try:
                if importlib.util.find_spec(module_name) is None:
                    continue
            except ModuleNotFoundError:
                continue
            node = importlib.import_module(module_name)
            for attr in parts[i:]:
                node = getattr(node, attr, None)
            if node is None:
                missing.append(name)
            break
        else:
            missing.append(name)
    files = set(re.findall(r"(?<![\w/.])(?:fcn|bench|tests)/[\w/]+\.py\b", text))
    return missing + sorted(f for f in files if not (REPO / f).is_file())


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_code_names_exist(page):
    assert missing_names(page.read_text()) == [], f"{page.relative_to(REPO)} names what does not exist"


def test_name_check_rejects_moved_names():
    text = "`fcn.engine.fit`, `fcn.inference.fastpath.resolve_fast_path`, fcn/checkpoint.py, fcn/core/checkpoint.py"
    assert missing_names(text) == ["fcn.engine.fit", "fcn/checkpoint.py"]


def opens_with_command(text: str) -> bool:
    """Return whether the first thing after a page's title is a code block (the command it is about)."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines or not lines[0].startswith("# "):
        return False
    first = next((line for line in lines[1:] if not line.startswith("<!--")), "")
    return bool(FENCE.match(first))


@pytest.mark.parametrize("page", PAGES[1:], ids=lambda p: str(p.relative_to(REPO)))
def test_page_opens_with_its_command(page):
    assert opens_with_command(page.read_text()), (
        f"{page.relative_to(REPO)}: begin with the command it is about"
    )


def test_command_check_rejects_a_page_that_opens_with_prose():
    assert opens_with_command("# Training\n\n```bash\npython train.py\n```\n")
    assert not opens_with_command("# Training\n\nTrain a model:\n\n```bash\npython train.py\n```\n")


# --- docs/ is a manual: no issue numbers, commit hashes or verdicts of the work. ---

DOCS = sorted((REPO / "docs").glob("*.md"))
ISSUE_NUMBER = re.compile(r"(?<![\w&/#])#\d+\b|\b[Ii]ssues? \d+")
# A commit hash: a word of 7-40 hex digits with a digit and a letter, not part of a file name or URL.
COMMIT_HASH = re.compile(r"(?<![\w\-./])(?=[0-9a-f]*[0-9])(?=[0-9a-f]*[a-f])[0-9a-f]{7,40}(?![\w\-./])")
VERDICT = re.compile(r"\b(?:PASS|MISS|FAIL)\b")  # `FAIL` in code is a state's name (Optuna's)


def _without_fences(text: str) -> str:
    """Return text less its fenced blocks (inline code kept)."""
    return _prose(text, code=True)


def work_notes(text: str) -> list[str]:
    """Return the issue numbers, commit hashes and verdict words a page's text holds outside its
    fenced blocks (a verdict also outside inline code)."""
    kept = _without_fences(text)
    # A checksum that says so (`MD5 ...`, `SHA-1 ...`, `sha256 ...`) is a file's, not a commit's.
    hashes = [
        m.group(0)
        for m in COMMIT_HASH.finditer(kept)
        if not re.search(r"(?i)(md5|sha-?\d+)\W{0,6}$", kept[max(m.start() - 12, 0) : m.start()])
    ]
    return ISSUE_NUMBER.findall(kept) + hashes + VERDICT.findall(_prose(text))


@pytest.mark.parametrize("page", DOCS, ids=lambda p: str(p.relative_to(REPO)))
def test_docs_hold_no_issue_numbers_hashes_or_verdicts(page):
    assert work_notes(page.read_text()) == [], f"{page.relative_to(REPO)}: notes of the work, not the manual"


def test_work_notes_check_finds_each_kind():
    text = "Fixed in #31 (issue 45), commit `85d8910`: PASS, 0.8 MISS.\n"
    assert work_notes(text) == ["#31", "issue 45", "85d8910", "PASS", "MISS"]
    clean = (
        "See [the table](performance.md#speed), colour `#ff0000`, fcn_resnet50_coco-1167a1af.pth, "
        "1234567 pixels, an Optuna trial `FAIL`s, FAILED in MLflow, MD5 `c03b2953ebd846c270da1a8e8f200c09`."
        "\n```\nrev 85d8910\n```\n"
    )
    assert work_notes(clean) == []


def shared_run_dirs(text: str) -> list[str]:
    """Return the train.py commands whose run directory is a shipped recipe's (their last --config is
    under predefined_configs/) while they give a dataset of their own on the command line (data.train,
    data.val, data.classes): a second dataset trained the same way would be refused in that run
    directory, so each must name training.run_dir."""
    bad = []
    for name, args in commands(text):
        if name != "train.py":
            continue
        configs = [args[i + 1] for i, a in enumerate(args[:-1]) if a == "--config"]
        own_data = any(
            a.startswith(("data.train=", "data.val=", "data.classes=", "data.train.name=")) for a in args
        )
        named = any(a.startswith("training.run_dir=") for a in args)
        if configs and configs[-1].startswith("predefined_configs/") and own_data and not named:
            bad.append(" ".join(["train.py", *args]))
    return bad


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_a_command_line_dataset_names_its_run_directory(page):
    assert shared_run_dirs(page.read_text()) == [], f"{page.relative_to(REPO)}: give training.run_dir"


def test_run_directory_check_finds_a_shared_one():
    text = "`python train.py --config predefined_configs/starter.yml data.classes=[a,b]`"
    assert shared_run_dirs(text) == ["train.py --config predefined_configs/starter.yml data.classes=[a,b]"]
    assert shared_run_dirs(text.replace("]`", "] training.run_dir=runs/ab`")) == []
    assert shared_run_dirs("`python train.py --config predefined_configs/starter.yml --config my.yml`") == []


# The seed's numbers by its name, the authors' by their page (fcn.berkeleyvision.org).
SEED_NUMBERS = ("62.3", "73.3", "75.5", "75.8")


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_the_seeds_numbers_are_cited_by_name(page):
    text = page.read_text()
    if any(re.search(rf"(?<![\d.]){re.escape(n)}(?![\d])", _prose(text, code=True)) for n in SEED_NUMBERS):
        assert "xevolesi/pytorch-fcn" in text, f"{page.relative_to(REPO)}: name the seed's README"
    assert "the document this project started from" not in text


@pytest.mark.parametrize("name", ["your_data.md", "api.md", "deployment.md"])
def test_the_manual_pages_run_their_offline_commands(name):
    ids = [p.id for p in runnable_blocks()]
    assert any(i.startswith(f"docs/{name}:") for i in ids), f"docs/{name}: mark its offline blocks runnable"
