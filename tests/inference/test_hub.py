"""Folders in the Hub's shape (fcn.inference.hub): save_pretrained and python -m fcn.export --format hub
write model.safetensors, config.json and a model card; from_pretrained reads a folder, or a Hub
repository through huggingface_hub's cache, without pickle, and predicts the same masks."""

from __future__ import annotations

import hashlib
import http.server
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import huggingface_hub.constants
import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from fcn import Segmenter
from fcn.config import load_config, to_dict
from fcn.core.checkpoint import CheckpointError, save_checkpoint, weights_checkpoint
from fcn.export import main as export_main
from fcn.models import build_model

TINY = [
    "model.arch=fcn32s",
    "model.backbone=mobilenet_v3_large",
    "model.geometry=same",
    "model.upsampling=bilinear",
    "model.pretrained=false",
    "data.classes=[sky,tree,road]",
    "data.palette=[[0,0,255],[0,255,0],[128,128,128]]",
]
IMAGE = np.random.default_rng(1).integers(0, 256, (37, 50, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def run_checkpoint(tmp_path_factory) -> Path:
    """runs/tiny/checkpoints/best.pt of a 'run' (random weights, BatchNorm statistics moved off their
    defaults) and its metrics.jsonl with two evaluations, the second the checkpoint's."""
    torch.manual_seed(0)
    cfg = load_config(overrides=TINY)
    model = build_model(cfg.model).train()
    with torch.no_grad():
        model(torch.randn(4, 3, 64, 64))  # BatchNorm running statistics
    run = tmp_path_factory.mktemp("runs") / "tiny"
    path = run / "checkpoints" / "best.pt"
    save_checkpoint(
        weights_checkpoint(model=model, config=to_dict(cfg), iteration=20, epoch=2, best_miou=0.6), path
    )
    records = [
        {
            "iteration": 10,
            "epoch": 1,
            "pixel_acc": 0.5,
            "mean_acc": 0.4,
            "mean_iou": 0.3,
            "fwavacc": 0.35,
            "iou": [0.1, 0.2, 0.6],
        },
        {
            "iteration": 20,
            "epoch": 2,
            "pixel_acc": 0.8,
            "mean_acc": 0.7,
            "mean_iou": 0.6,
            "fwavacc": 0.65,
            "iou": [0.5, float("nan"), 0.7],
        },
    ]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def no_pickle(monkeypatch) -> None:
    """Make any torch.load (the one door to pickle here) fail the test."""

    def refuse(*args, **kwargs):
        raise AssertionError("torch.load (pickle) was called")

    monkeypatch.setattr(torch, "load", refuse)


def test_save_pretrained_then_from_pretrained_gives_the_same_masks_without_pickle(
    run_checkpoint, tmp_path, monkeypatch
):
    seg = Segmenter.from_checkpoint(run_checkpoint, device="cpu")
    expected = seg(IMAGE)
    folder = Path(seg.save_pretrained(tmp_path / "tiny-fcn"))
    assert sorted(p.name for p in folder.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    for path in folder.iterdir():
        head = path.read_bytes()[:2]
        assert head not in (b"PK", b"\x80\x02") and not head.startswith(b"\x80")  # no zip/pickle file
    no_pickle(monkeypatch)
    again = Segmenter.from_pretrained(folder, device="cpu")
    assert again.classes == ["sky", "tree", "road"]
    assert np.array_equal(again(IMAGE), expected)
    assert np.array_equal(again.palette[:3], [[0, 0, 255], [0, 255, 0], [128, 128, 128]])


def test_the_model_card_holds_the_classes_input_metrics_and_usage(run_checkpoint, tmp_path):
    folder = Path(Segmenter.from_checkpoint(run_checkpoint, device="cpu").save_pretrained(tmp_path / "f"))
    card = (folder / "README.md").read_text()
    assert card.startswith("---\nlibrary_name: pytorch-fcn\npipeline_tag: image-segmentation\n")
    assert "| 0 | sky | (0, 0, 255) | 50.00 |" in card and "| 1 | tree | (0, 255, 0) | - |" in card
    assert "| 80.00 | 70.00 | 60.00 | 65.00 |" in card  # iteration 20's evaluation, the checkpoint's
    assert "evaluated at iteration 20" in card
    assert "mean (0.485, 0.456, 0.406), std (0.229, 0.224, 0.225)" in card
    assert 'Segmenter.from_pretrained("<user>/<repo>")' in card and "hf upload <user>/<repo>" in card
    meta = json.loads((folder / "config.json").read_text())
    assert meta["format"] == "pytorch-fcn" and meta["run"]["iteration"] == 20
    assert meta["config"]["data"]["classes"] == ["sky", "tree", "road"]


def test_export_format_hub_writes_the_same_weights_from_a_checkpoint(run_checkpoint, tmp_path, capsys):
    assert (
        export_main(
            ["--checkpoint", str(run_checkpoint), "--output", str(tmp_path / "hub"), "--format", "hub"]
        )
        == 0
    )
    assert "wrote" in capsys.readouterr().out
    state = load_file(tmp_path / "hub" / "model.safetensors")
    source = torch.load(run_checkpoint, weights_only=True)["model"]
    assert state.keys() == source.keys() and all(torch.equal(state[k], source[k]) for k in state)


def populate_hub_cache(cache: Path, repo: str, folder: Path) -> Path:
    """Lay folder out as huggingface_hub's cache holds a downloaded snapshot of repo (refs/main ->
    snapshots/<commit>/), what `snapshot_download` leaves after a first online call."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    root = cache / f"models--{repo.replace('/', '--')}"
    (root / "refs").mkdir(parents=True)
    (root / "refs" / "main").write_text(commit)
    snapshot = root / "snapshots" / commit
    snapshot.mkdir(parents=True)
    for path in folder.iterdir():
        (snapshot / path.name).write_bytes(path.read_bytes())
    return snapshot


def test_a_hub_repository_id_is_read_from_huggingface_hubs_cache_offline(
    run_checkpoint, tmp_path, monkeypatch
):
    seg = Segmenter.from_checkpoint(run_checkpoint, device="cpu")
    folder = Path(seg.save_pretrained(tmp_path / "f"))
    snapshot = populate_hub_cache(tmp_path / "hf", "alice/tiny-fcn", folder)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # HF_HUB_OFFLINE=1
    no_pickle(monkeypatch)
    again = Segmenter.from_pretrained("alice/tiny-fcn", device="cpu")
    assert Path(again.checkpoint) == snapshot
    assert np.array_equal(again(IMAGE), seg(IMAGE))
    with pytest.raises(OSError) as err:
        Segmenter.from_pretrained("bob/not-cached", device="cpu")
    message = str(err.value)
    assert (
        message.startswith("bob/not-cached: cannot get it from the Hugging Face Hub") and "\n" not in message
    )
    assert "HF_HUB_OFFLINE=1" in message


class HubHandler(http.server.BaseHTTPRequestHandler):
    """The few Hub endpoints snapshot_download calls, for one repository: its revision (commit and
    files), its file tree, and each file by commit (X-Repo-Commit and ETag headers, as the Hub)."""

    repo = "alice/tiny-fcn"
    commit = "0123456789abcdef0123456789abcdef01234567"
    files: dict[str, bytes] = {}
    requests: list[str] = []

    def _send(self, body: bytes, code: int = 200, headers: tuple = ()) -> None:
        self.send_response(code)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def do_HEAD(self) -> None:
        self.do_GET()

    def do_GET(self) -> None:
        path = self.path.split("?")[0]
        self.requests.append(f"{self.command} {path}")
        as_json = (("Content-Type", "application/json"),)
        if path.startswith(f"/api/models/{self.repo}/tree/"):
            tree = [
                {"type": "file", "path": n, "size": len(d), "oid": hashlib.sha1(d).hexdigest()}
                for n, d in self.files.items()
            ]
            return self._send(json.dumps(tree).encode(), headers=as_json)
        if path.startswith(f"/api/models/{self.repo}/revision/"):
            info = {"id": self.repo, "sha": self.commit, "siblings": [{"rfilename": n} for n in self.files]}
            return self._send(json.dumps(info).encode(), headers=as_json)
        prefix = f"/{self.repo}/resolve/{self.commit}/"
        if path.startswith(prefix) and path[len(prefix) :] in self.files:
            data = self.files[path[len(prefix) :]]
            etag = f'"{hashlib.sha256(data).hexdigest()}"'
            return self._send(data, headers=(("X-Repo-Commit", self.commit), ("ETag", etag)))
        self._send(b'{"error": "Repository not found"}', 404, (("X-Error-Code", "RepoNotFound"),))

    def log_message(self, *args) -> None:
        pass


def segment_in_a_new_process(repo: str, out: Path, env: dict) -> subprocess.CompletedProcess:
    """Run Segmenter.from_pretrained(repo) in a fresh Python (huggingface_hub reads HF_ENDPOINT and
    HF_HUB_OFFLINE when imported) and save its mask of IMAGE to out."""
    code = (
        "import sys, numpy as np; from fcn import Segmenter; "
        f"seg = Segmenter.from_pretrained({repo!r}, device='cpu'); "
        f"np.save({str(out)!r}, seg(np.load({str(out.with_name('image.npy'))!r})))"
    )
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_a_hub_repository_is_downloaded_through_hf_endpoint_once_then_read_offline(run_checkpoint, tmp_path):
    seg = Segmenter.from_checkpoint(run_checkpoint, device="cpu")
    folder = Path(seg.save_pretrained(tmp_path / "f"))
    handler = type(
        "Hub", (HubHandler,), {"files": {p.name: p.read_bytes() for p in folder.iterdir()}, "requests": []}
    )
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    np.save(tmp_path / "image.npy", IMAGE)
    env = {
        **os.environ,
        "HF_ENDPOINT": f"http://127.0.0.1:{httpd.server_address[1]}",
        "HF_HUB_CACHE": str(tmp_path / "hf"),
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "PYTHONPATH": str(Path(__file__).resolve().parents[2]),
    }
    env.pop("HF_HUB_OFFLINE", None)
    try:
        first = segment_in_a_new_process("alice/tiny-fcn", tmp_path / "online.npy", env)
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)
    assert first.returncode == 0, first.stderr
    assert any("/resolve/" in r and r.endswith("model.safetensors") for r in handler.requests)
    offline = segment_in_a_new_process(
        "alice/tiny-fcn", tmp_path / "offline.npy", {**env, "HF_HUB_OFFLINE": "1"}
    )
    assert offline.returncode == 0, offline.stderr  # the server is gone: the Hub's cache answers
    expected = seg(IMAGE)
    assert np.array_equal(np.load(tmp_path / "online.npy"), expected)
    assert np.array_equal(np.load(tmp_path / "offline.npy"), expected)


@pytest.mark.parametrize("damage", ["no weights", "not our config", "truncated weights"])
def test_a_damaged_folder_is_one_line_naming_the_file(damage, run_checkpoint, tmp_path):
    folder = Path(Segmenter.from_checkpoint(run_checkpoint, device="cpu").save_pretrained(tmp_path / "f"))
    if damage == "no weights":
        (folder / "model.safetensors").unlink()
    elif damage == "not our config":
        (folder / "config.json").write_text('{"model_type": "bert"}')
    else:
        data = (folder / "model.safetensors").read_bytes()
        (folder / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError) as err:
        Segmenter.from_pretrained(folder, device="cpu")
    assert str(folder) in str(err.value) and "\n" not in str(err.value)


def test_a_name_that_is_nothing_lists_what_from_pretrained_takes(tmp_path):
    with pytest.raises(
        ValueError, match="neither a registry name .*voc-fcn8s.* a folder nor a Hub repository"
    ):
        Segmenter.from_pretrained(str(tmp_path / "missing.pt"))


def test_from_pretrained_takes_a_revision_of_a_hub_repository(run_checkpoint, tmp_path, monkeypatch):
    seg = Segmenter.from_checkpoint(run_checkpoint, device="cpu")
    folder = Path(seg.save_pretrained(tmp_path / "f"))
    snapshot = populate_hub_cache(tmp_path / "hf", "alice/tiny-fcn", folder)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    pinned = Segmenter.from_pretrained("alice/tiny-fcn", revision=snapshot.name, device="cpu")
    assert Path(pinned.checkpoint) == snapshot
    with pytest.raises(OSError, match=r"^alice/tiny-fcn@v9: cannot get it from the Hugging Face Hub"):
        Segmenter.from_pretrained("alice/tiny-fcn", revision="v9", device="cpu")
    with pytest.raises(ValueError, match="revision='main' is for a Hub repository"):
        Segmenter.from_pretrained(folder, revision="main", device="cpu")


def test_predict_and_evaluate_take_a_hub_repository_id_as_from_pretrained_does(tmp_path, monkeypatch, capsys):
    import evaluate
    import predict
    from fcn.data.toy import main as toy_main

    root = tmp_path / "toy"
    toy_main(["--root", str(root), "--train", "1", "--val", "2", "--size", "32"])
    cfg = load_config(
        [str(Path(__file__).resolve().parents[2] / "predefined_configs" / "toy.yml")],
        [f"data.train.root={root}", f"data.val.root={root}"],
    )
    torch.manual_seed(0)
    ckpt = tmp_path / "best.pt"
    save_checkpoint(weights_checkpoint(model=build_model(cfg.model), config=to_dict(cfg)), ckpt)
    folder = Path(Segmenter.from_checkpoint(ckpt, device="cpu").save_pretrained(tmp_path / "f"))
    snapshot = populate_hub_cache(tmp_path / "hf", "alice/toy-fcn", folder)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    image = next((root / "JPEGImages").glob("*.jpg"))
    common = ["--device", "cpu", "--no-progress"]
    for name, out in (("alice/toy-fcn", "hub"), (str(ckpt), "file")):
        assert (
            predict.main(
                ["--checkpoint", name, "--input", str(image), "--output", str(tmp_path / out), *common]
            )
            == 0
        )
    assert (tmp_path / "hub" / f"{image.stem}.png").read_bytes() == (
        tmp_path / "file" / f"{image.stem}.png"
    ).read_bytes()
    report = tmp_path / "val.json"
    assert evaluate.main(["--checkpoint", "alice/toy-fcn", "--output", str(report), *common]) == 0
    assert json.loads(report.read_text())["checkpoint"] == "alice/toy-fcn"  # as the user named it
    assert snapshot.is_dir()
    capsys.readouterr()
    # Not in the cache, offline: exit 2 and one line; a missing .pt file is never looked for on the Hub.
    assert (
        predict.main(
            ["--checkpoint", "bob/not-cached", "--input", str(image), "--output", str(tmp_path / "x")]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert (
        err.startswith("error: bob/not-cached: cannot get it from the Hugging Face Hub")
        and err.count("\n") == 1
    )
    assert (
        predict.main(["--checkpoint", "runs/best.pt", "--input", str(image), "--output", str(tmp_path / "x")])
        == 2
    )
    assert "Hugging Face" not in capsys.readouterr().err
