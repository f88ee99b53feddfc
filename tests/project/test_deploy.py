"""The Dockerfile and the KServe manifest (docs/deployment.md, Docker and KServe): the image copies
files that exist and runs serve.py on port 8080 with its health check; the InferenceService runs
that container with the model KServe puts in /mnt/models. (Neither is built or applied here: that
needs a Docker daemon and a cluster.)"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
FROM_THE_SERVING_BRANCH = {"serve.py", "requirements.serve.txt"}  # issue 43's server, written beside this


def _instructions() -> list[tuple[str, str]]:
    """Return the Dockerfile's (instruction, arguments) with continuation lines joined."""
    text = (REPO / "Dockerfile").read_text().replace("\\\n", " ")
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in lines]


def _copied() -> list[str]:
    sources = []
    for op, rest in _instructions():
        if op == "COPY":
            *src, _ = shlex.split(rest)
            sources += [s for s in src if not s.startswith("--")]
    return sources


def test_the_dockerfile_copies_files_of_the_repository():
    sources = _copied()
    assert {"fcn", "requirements.txt", "requirements.deploy.txt", "serve.py"} <= set(sources)
    missing = [s for s in sources if not (REPO / s).exists() and s not in FROM_THE_SERVING_BRANCH]
    assert missing == []


@pytest.mark.skipif(not (REPO / "serve.py").exists(), reason="serve.py comes with the serving branch")
def test_every_file_the_dockerfile_copies_exists():
    assert [s for s in _copied() if not (REPO / s).exists()] == []


def test_the_image_runs_serve_py_on_8080_as_a_user_with_a_health_check():
    ops = _instructions()
    first = dict(ops)  # one of each that matters
    assert first["FROM"].startswith("python:3.12-slim")
    assert json.loads(first["ENTRYPOINT"]) == ["python", "serve.py", "--host", "0.0.0.0", "--port", "8080"]
    assert json.loads(first["CMD"]) == ["--checkpoint", "/models/model", "--model-name", "fcn"]
    assert first["EXPOSE"] == "8080"
    assert "/v2/health/ready" in first["HEALTHCHECK"] and "8080" in first["HEALTHCHECK"]
    users = [rest for op, rest in ops if op == "USER"]
    assert users and users[-1] not in ("root", "0")
    installs = " ".join(rest for op, rest in ops if op == "RUN")
    for requirements in ("requirements.txt", "requirements.serve.txt", "requirements.deploy.txt"):
        assert requirements in installs


def test_the_onnxruntime_the_image_installs_is_in_requirements_deploy():
    (run,) = [rest for op, rest in _instructions() if op == "RUN" and "requirements.deploy.txt" in rest]
    words = shlex.split(run)
    pattern = words[words.index("-E") + 1]
    lines = (REPO / "requirements.deploy.txt").read_text().splitlines()
    picked = [line.split()[0] for line in lines if re.match(pattern, line)]
    assert [p.split(">")[0] for p in picked] == ["onnx", "onnxscript", "onnxruntime"]


def test_the_inferenceservice_runs_the_container_on_the_models_kserve_downloads():
    (isvc,) = list(yaml.safe_load_all((REPO / "deploy" / "kserve" / "inferenceservice.yaml").read_text()))
    assert isvc["apiVersion"] == "serving.kserve.io/v1beta1" and isvc["kind"] == "InferenceService"
    (container,) = isvc["spec"]["predictor"]["containers"]
    assert container["name"] == "kserve-container"
    assert container["args"] == ["--checkpoint", "/mnt/models", "--model-name", "fcn"]
    assert [p["containerPort"] for p in container["ports"]] == [8080]
    probe = container["readinessProbe"]["httpGet"]
    assert probe == {"path": "/v2/health/ready", "port": 8080}
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["STORAGE_URI"].split("://")[0] in ("pvc", "s3", "gs", "https")
    assert {"cpu", "memory"} <= set(container["resources"]["requests"])
