"""The package as another project installs it: one dependency list, and fcn usable from elsewhere."""

import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _names(lines) -> set[str]:
    """Return the lower-case distribution names of requirement lines (comments, options skipped)."""
    out = set()
    for line in lines:
        line = line.split("#", 1)[0].strip()
        if line and not line.startswith("-"):
            out.add(re.split(r"[<>=!~\[ ;]", line, maxsplit=1)[0].lower())
    return out


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """Build the wheel from a copy of the sources (the checkout gets no build/ or egg-info)."""
    src = tmp_path_factory.mktemp("src")
    for name in ("pyproject.toml", "requirements.txt", "README.md"):
        shutil.copy(REPO / name, src / name)
    shutil.copytree(REPO / "fcn", src / "fcn", ignore=shutil.ignore_patterns("__pycache__"))
    out = tmp_path_factory.mktemp("wheel")
    # No build isolation: the installed setuptools builds it, so the test needs no network.
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "wheel",
        "-q",
        "--no-deps",
        "--no-build-isolation",
        "-w",
        str(out),
        str(src),
    ]
    subprocess.run(cmd, check=True, capture_output=True, text=True)
    (path,) = out.glob("*.whl")
    return path


@pytest.mark.slow
def test_the_wheel_requires_exactly_requirements_txt(wheel):
    with zipfile.ZipFile(wheel) as z:
        meta = z.read(next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))).decode()
    required = [line.split(":", 1)[1] for line in meta.splitlines() if line.startswith("Requires-Dist:")]
    expected = _names((REPO / "requirements.txt").read_text().splitlines())
    assert "timm" in expected
    assert _names(required) == expected


@pytest.mark.slow
def test_the_installed_package_builds_a_timm_model_from_another_directory(wheel, tmp_path):
    site = tmp_path / "site"
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "install",
        "-q",
        "--no-deps",
        "--no-index",
        "--target",
        str(site),
        str(wheel),
    ]
    subprocess.run(cmd, check=True, capture_output=True, text=True)
    code = (
        "import fcn, torch\n"
        "from fcn.config import load_config\n"
        "from fcn.models import build_model\n"
        "cfg = load_config(overrides=['model.backbone=timm:resnet18', 'model.geometry=same',"
        " 'model.pretrained=false'])\n"
        "y = build_model(cfg.model).eval()(torch.zeros(1, 3, 40, 40))\n"
        "print(fcn.__file__, tuple(y.shape))\n"
    )
    env = dict(os.environ, PYTHONPATH=str(site))  # the installed copy only, not the checkout
    run = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    where, shape = run.stdout.split(" ", 1)
    assert Path(where).is_relative_to(site) and shape.strip() == "(1, 21, 40, 40)"
