"""The registry of published weights (fcn.models.pretrained, python -m fcn.pretrained): files served
by a loopback HTTP server (a mirror) are downloaded into torch hub's cache, checked, converted once and
read back without the network; every bad file is one error line and leaves nothing behind."""

from __future__ import annotations

import hashlib
import http.server
import io
import json
import os
import threading
import urllib.request
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from torchvision.models.segmentation import fcn_resnet50

from fcn import Segmenter
from fcn.config import load_config
from fcn.core import distributed
from fcn.data.download import DownloadError, Resource
from fcn.models import build_model
from fcn.models.pretrained import (
    IMAGENET_INPUT,
    PRETRAINED,
    Pretrained,
    converted_path,
    download_path,
    pretrained_checkpoint,
    registry_markdown,
)
from fcn.training.state import init_from

REPO = Path(__file__).resolve().parents[2]
TINY = (
    "model.arch=fcn32s",
    "model.backbone=mobilenet_v3_large",
    "model.geometry=same",
    "model.upsampling=bilinear",
    "data.classes=[sky,tree,road]",
)
HTML = b"<!DOCTYPE html><html><head><title>404 Not Found</title></head><body>gone</body></html>\n"


class Handler(http.server.BaseHTTPRequestHandler):
    """Serves `files` by name; a name in `cut` announces its whole length and stops halfway."""

    files: dict[str, bytes] = {}
    cut: set[str] = set()
    requests: list[str] = []

    def do_GET(self) -> None:
        name = self.path.lstrip("/")
        self.requests.append(name)
        if name not in self.files:
            self.send_error(404)
            return
        data = self.files[name]
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data[: len(data) // 2] if name in self.cut else data)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def server():
    """Yield (base URL, handler class) of a loopback HTTP server that stops after the test."""
    handler = type("TinyHandler", (Handler,), {"files": {}, "cut": set(), "requests": []})
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", handler
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)


@pytest.fixture
def hub(tmp_path, monkeypatch) -> Path:
    """Point torch hub's cache ($TORCH_HOME) at an empty directory; return it."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.delenv("FCN_DATA_MIRROR", raising=False)
    return tmp_path / "torch" / "hub"


@pytest.fixture(scope="module")
def tiny_file() -> bytes:
    """A state dict of the tiny model (MobileNetV3 FCN-32s, 3 classes), as torch.save writes it."""
    torch.manual_seed(0)
    model = build_model(load_config(overrides=[*TINY, "model.pretrained=false"]).model)
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    return buffer.getvalue()


def tiny_entry(data: bytes, base: str = "http://127.0.0.1:9", name: str = "tiny-fcn") -> Pretrained:
    """An entry of the registry's shape for data: torch hub's <name>-<sha256 prefix>.pth naming."""
    digest = hashlib.sha256(data).hexdigest()[:8]
    filename = f"tiny_fcn-{digest}.pth"
    resource = Resource(
        name, f"{base}/{filename}", filename, md5=None, required=(), archive=False, sha256_prefix=digest
    )
    return Pretrained(
        name,
        resource,
        "fcn32s",
        "mobilenet_v3_large",
        "3",
        IMAGENET_INPUT,
        "12.3 mean IU (a test)",
        "SHA-256",
        TINY,
    )


def cache_files(hub: Path) -> list[str]:
    """Return the files under hub, less the empty lock files in .locks/ directories."""
    if not hub.exists():
        return []
    return sorted(str(p.relative_to(hub)) for p in hub.rglob("*") if p.is_file() and ".locks" not in p.parts)


def refuse_network(monkeypatch) -> None:
    def refuse(*args, **kwargs):
        raise AssertionError("the network was used")

    monkeypatch.setattr(urllib.request, "urlopen", refuse)


def test_first_call_downloads_checks_converts_and_caches_then_the_second_reads_the_cache(
    hub, server, tiny_file, monkeypatch
):
    base, handler = server
    entry = tiny_entry(tiny_file, base)
    handler.files[entry.resource.filename] = tiny_file
    monkeypatch.setitem(PRETRAINED, entry.name, entry)
    lines = []
    path = pretrained_checkpoint(entry.name, progress=False, log=lines.append)
    assert path == converted_path(entry) == hub / "fcn" / "tiny-fcn.pt"
    assert cache_files(hub) == [
        "checkpoints/fcn-sha256.json",  # no full hash published: recorded on this first download
        "checkpoints/" + entry.resource.filename,
        "fcn/tiny-fcn.pt",
        "fcn/tiny-fcn.pt.sha256.json",  # the converted file's sidecar
    ]
    assert download_path(entry).read_bytes() == tiny_file
    assert handler.requests == [entry.resource.filename]
    assert any("downloading" in line for line in lines) and any("converting" in line for line in lines)

    refuse_network(monkeypatch)
    image = np.random.default_rng(0).integers(0, 256, (40, 52, 3), dtype=np.uint8)
    seg = Segmenter.from_pretrained(entry.name, device="cpu")
    assert seg.classes == ["sky", "tree", "road"]
    mask = seg(image)
    assert mask.shape == (40, 52) and mask.max() < 3
    reference = build_model(load_config(overrides=[*TINY, "model.pretrained=false"]).model).eval()
    reference.load_state_dict(torch.load(io.BytesIO(tiny_file), weights_only=True))
    with torch.no_grad():
        expected = reference(seg._input(seg.read(image))).argmax(1)[0].numpy()
    assert np.array_equal(mask, expected)  # the served weights, unchanged
    assert handler.requests == [entry.resource.filename]
    card = (Path(seg.save_pretrained(hub.parent / "folder")) / "README.md").read_text()
    assert f"Published weights (<{entry.resource.url}>)" in card
    assert "Reported by their authors, not measured here: 12.3 mean IU (a test)." in card


def test_the_mirror_from_the_environment_replaces_the_official_address(hub, server, tiny_file, monkeypatch):
    base, handler = server
    entry = tiny_entry(tiny_file)  # its official address is a closed port
    handler.files[entry.resource.filename] = tiny_file
    monkeypatch.setitem(PRETRAINED, entry.name, entry)
    monkeypatch.setenv("FCN_DATA_MIRROR", base + "/")
    assert pretrained_checkpoint(entry.name, progress=False, log=lambda _: None).is_file()
    assert handler.requests == [entry.resource.filename]


def test_a_file_placed_by_hand_is_checked_and_converted_without_the_network(hub, tiny_file, monkeypatch):
    entry = tiny_entry(tiny_file)
    monkeypatch.setitem(PRETRAINED, entry.name, entry)
    download_path(entry).parent.mkdir(parents=True)
    download_path(entry).write_bytes(tiny_file)
    refuse_network(monkeypatch)
    assert pretrained_checkpoint(entry.name, progress=False, log=lambda _: None).is_file()


def run_command(args: list[str], hub: Path, mirror: str, monkeypatch, capsys) -> tuple[int, str]:
    """Return (exit code, stderr) of python -m fcn.pretrained with args, $FCN_DATA_MIRROR=mirror."""
    from fcn.pretrained import main

    monkeypatch.setenv("FCN_DATA_MIRROR", mirror)
    capsys.readouterr()
    code = main(args)
    return code, capsys.readouterr().err


def _bad_file(kind: str, good: bytes) -> bytes:
    if kind == "wrong checksum":
        return good[:-1] + bytes([good[-1] ^ 1])
    if kind == "html error page":
        return HTML
    return good[: len(good) // 3]  # a truncated copy on the server


@pytest.mark.parametrize("kind", ["wrong checksum", "html error page", "truncated file", "connection cut"])
@pytest.mark.parametrize("which", ["torchvision-fcn-resnet50", "voc-fcn16s"])
def test_a_bad_download_is_one_error_line_and_leaves_no_file(
    kind, which, hub, server, tiny_file, monkeypatch, capsys
):
    """torchvision's entry is checked by its SHA-256 prefix; voc-fcn16s has no published checksum and
    is checked for being a caffemodel with score_fr: an HTML page or a cut file is neither."""
    base, handler = server
    entry = PRETRAINED[which]
    good = tiny_file
    handler.files[entry.resource.filename] = good if kind == "connection cut" else _bad_file(kind, good)
    if kind == "connection cut":
        handler.cut.add(entry.resource.filename)
    code, stderr = run_command([which, "--no-progress"], hub, base, monkeypatch, capsys)
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert code == 1, stderr
    assert len(errors) == 1, stderr
    assert which in errors[0] and entry.resource.filename in errors[0]
    assert cache_files(hub) == []


def test_offline_a_missing_file_is_one_line_with_its_address_and_where_to_put_it(hub, monkeypatch, capsys):
    code, stderr = run_command(["voc-fcn8s", "--no-progress"], hub, "http://127.0.0.1:9", monkeypatch, capsys)
    entry = PRETRAINED["voc-fcn8s"]
    assert code == 1
    (line,) = [x for x in stderr.strip().splitlines() if x.startswith("error:")]
    assert line.startswith("error: voc-fcn8s: ")
    assert entry.resource.url in line and "FCN_DATA_MIRROR" in line
    assert f"put it at {hub / 'checkpoints' / 'fcn8s-heavy-pascal.caffemodel'}" in line
    assert cache_files(hub) == []


def test_an_unknown_name_lists_the_registry(hub, capsys):
    with pytest.raises(
        ValueError, match="no pretrained weights called 'voc-fcn9s'; choose from voc-fcn32s, "
    ):
        pretrained_checkpoint("voc-fcn9s")


def test_the_command_lists_every_entry_with_its_arch_classes_input_number_checksum_and_file(capsys):
    from fcn.pretrained import main

    assert main([]) == 0
    out = capsys.readouterr().out
    for name, entry in PRETRAINED.items():
        assert name in out and entry.resource.url in out and entry.reported in out and entry.checksum in out
    assert "none published" in out


def test_the_registry_holds_the_published_files_as_their_sources_name_them():
    from torchvision.models.segmentation import FCN_ResNet50_Weights, FCN_ResNet101_Weights

    for entry, weights in (
        (PRETRAINED["torchvision-fcn-resnet50"], FCN_ResNet50_Weights.COCO_WITH_VOC_LABELS_V1),
        (PRETRAINED["torchvision-fcn-resnet101"], FCN_ResNet101_Weights.COCO_WITH_VOC_LABELS_V1),
    ):
        assert entry.resource.url == weights.url
        assert entry.resource.filename.endswith(f"-{entry.resource.sha256_prefix}.pth")
        metrics = weights.meta["_metrics"]["COCO-val2017-VOC-labels"]
        assert f"{metrics['miou']} mean IU / {metrics['pixel_acc']} pixel acc" in entry.reported
        assert len(weights.meta["categories"]) == 21
    # fcn.berkeleyvision.org's <folder>/caffemodel-url for every folder that has one (14, less FCN-AlexNet)
    caffe = {n: e.resource.url for n, e in PRETRAINED.items() if not n.startswith("torchvision")}
    assert len(caffe) == 13 and "nyud-fcn32s-color-d" not in caffe
    assert caffe["voc-fcn8s"] == "http://dl.caffe.berkeleyvision.org/fcn8s-heavy-pascal.caffemodel"
    assert caffe["nyud-fcn32s-hha"] == "http://dl.caffe.berkeleyvision.org/nyud-fcn32s-hha-heavy.caffemodel"
    assert caffe["siftflow-fcn8s"] == "http://dl.caffe.berkeleyvision.org/siftflow-fcn8s-heavy.caffemodel"


def test_the_docs_page_holds_the_registry_table():
    assert registry_markdown() in (REPO / "docs" / "pretrained.md").read_text()


def test_init_from_pretrained_name_copies_every_tensor_that_fits(hub, server, tiny_file, monkeypatch, capsys):
    base, handler = server
    entry = tiny_entry(tiny_file, base)
    handler.files[entry.resource.filename] = tiny_file
    monkeypatch.setitem(PRETRAINED, entry.name, entry)
    cfg = load_config(overrides=[*TINY[:4], "model.pretrained=false", "data.classes=[a,b,c,d,e]"])
    model = build_model(cfg.model)
    init_from(model, f"pretrained:{entry.name}", distributed.env_info())  # what train.py's setup() calls
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("init_from"))
    assert "new 2: score_fr.weight, score_fr.bias" in line  # 5 classes, not 3: only the score layer is new
    source = torch.load(io.BytesIO(tiny_file), weights_only=True)
    assert torch.equal(
        model.state_dict()["backbone.features.0.0.weight"], source["backbone.features.0.0.weight"]
    )


@pytest.mark.slow
def test_torchvisions_own_file_is_converted_into_torchvision_fcn(hub, server, monkeypatch):
    """The torchvision entry's path with a file torchvision's own model saved (random weights, so
    the SHA-256 prefix is this file's): it loads as it is and predicts what torchvision's model does."""
    torch.manual_seed(0)
    theirs = fcn_resnet50(weights=None, weights_backbone=None, aux_loss=True).eval()
    buffer = io.BytesIO()
    torch.save(theirs.state_dict(), buffer)
    data = buffer.getvalue()
    digest = hashlib.sha256(data).hexdigest()[:8]
    entry = PRETRAINED["torchvision-fcn-resnet50"]
    resource = replace(entry.resource, filename=f"fcn_resnet50_coco-{digest}.pth", sha256_prefix=digest)
    entry = replace(entry, resource=resource)
    monkeypatch.setitem(PRETRAINED, entry.name, entry)
    base, handler = server
    handler.files[resource.filename] = data
    seg = Segmenter.from_pretrained(entry.name, mirror=base, device="cpu")
    assert seg.cfg.model.arch == "torchvision_fcn" and seg.classes[1] == "aeroplane"
    x = torch.randn(1, 3, 48, 64)
    with torch.no_grad():
        assert torch.allclose(seg.model(x), theirs(x)["out"], atol=1e-5)


def test_a_converted_checkpoint_cut_short_or_without_its_sidecar_is_converted_again(
    hub, server, tiny_file, monkeypatch
):
    base, handler = server
    entry = tiny_entry(tiny_file, base)
    handler.files[entry.resource.filename] = tiny_file
    monkeypatch.setitem(PRETRAINED, entry.name, entry)
    out = pretrained_checkpoint(entry.name, progress=False, log=lambda _: None)
    whole = out.read_bytes()
    refuse_network(monkeypatch)  # the downloaded file is in the cache: rebuilt from it, offline

    out.write_bytes(whole[: len(whole) // 2])  # a copy cut short (a full disk, a killed cp)
    lines: list[str] = []
    assert pretrained_checkpoint(entry.name, progress=False, log=lines.append) == out
    assert any("does not match its sidecar" in line and "converting again" in line for line in lines)
    rebuilt, original = torch.load(out, weights_only=True), torch.load(io.BytesIO(whole), weights_only=True)
    assert all(torch.equal(rebuilt["model"][k], v) for k, v in original["model"].items())

    Path(str(out) + ".sha256.json").unlink()  # a file of ours with no sidecar is not trusted either
    lines.clear()
    pretrained_checkpoint(entry.name, progress=False, log=lines.append)
    assert any("converting again" in line for line in lines)
    lines.clear()
    pretrained_checkpoint(entry.name, progress=False, log=lines.append)  # whole now: read as it is
    assert lines == []
    os.utime(out, ns=(1, 1))  # a copied cache: another mtime, the same bytes: hashed, kept as it is
    pretrained_checkpoint(entry.name, progress=False, log=lines.append)
    assert lines == [] and json.loads(Path(str(out) + ".sha256.json").read_text())["mtime_ns"] == 1


def test_a_published_file_changed_after_its_first_download_is_refused(hub, server, tiny_file, monkeypatch):
    """An entry with no published hash at all: its SHA-256 is recorded on the first download; the
    server then serves other (valid) weights under the same name: refused, deleted, one line."""
    base, handler = server
    entry = tiny_entry(tiny_file, base)
    entry = replace(entry, resource=replace(entry.resource, sha256_prefix=None))
    handler.files[entry.resource.filename] = tiny_file
    monkeypatch.setitem(PRETRAINED, entry.name, entry)
    lines: list[str] = []
    pretrained_checkpoint(entry.name, progress=False, log=lines.append)
    digest = hashlib.sha256(tiny_file).hexdigest()
    assert any(f"recorded sha256 {digest} of {entry.resource.filename} on first download" in x for x in lines)

    torch.manual_seed(1)
    buffer = io.BytesIO()
    torch.save(
        build_model(load_config(overrides=[*TINY, "model.pretrained=false"]).model).state_dict(), buffer
    )
    handler.files[entry.resource.filename] = buffer.getvalue()
    download_path(entry).unlink()
    converted_path(entry).unlink()
    with pytest.raises(DownloadError) as info:
        pretrained_checkpoint(entry.name, progress=False, log=lambda _: None)
    message = str(info.value)
    other = hashlib.sha256(buffer.getvalue()).hexdigest()
    assert message.startswith(f"{entry.name}: ") and "\n" not in message
    assert f"{entry.resource.filename} with SHA-256 {other}, expected {digest}" in message
    assert not download_path(entry).exists() and not converted_path(entry).exists()


def test_the_torchvision_entries_check_the_prefix_and_record_the_full_sha256(
    hub, server, tiny_file, monkeypatch
):
    base, handler = server
    entry = tiny_entry(tiny_file, base)  # torchvision's shape: <name>-<sha256 prefix>.pth
    handler.files[entry.resource.filename] = tiny_file
    monkeypatch.setitem(PRETRAINED, entry.name, entry)
    pretrained_checkpoint(entry.name, progress=False, log=lambda _: None)
    known = json.loads((hub / "checkpoints" / "fcn-sha256.json").read_text())
    assert known[entry.resource.filename]["sha256"] == hashlib.sha256(tiny_file).hexdigest()
    for name in ("torchvision-fcn-resnet50", "torchvision-fcn-resnet101"):
        assert "SHA-256 recorded on first download" in PRETRAINED[name].checksum
