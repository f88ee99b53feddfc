"""The download command end to end, offline: tiny archives in the official layouts served on 127.0.0.1."""

from __future__ import annotations

import hashlib
import http.server
import io
import json
import socket
import subprocess
import sys
import tarfile
import threading
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

import fcn.data.download as dl
from fcn.data import SBDSegmentation, VOCAugSegmentation, VOCSegmentation
from tests.helpers import REPO, SEG11VALID, make_sbd_tree, make_voc_tree, python_env

SEG11VALID_TEXT = "".join(f"{2007 + k % 5}_{k:06d}\n" for k in range(736))


class Handler(http.server.BaseHTTPRequestHandler):
    """Serves `files` by name, honouring 'Range: bytes=N-' unless `ignore_range`; records each request."""

    files: dict[str, bytes] = {}
    requests: list[tuple[str, str | None]] = []
    ignore_range = False
    hold: threading.Event | None = None
    """When set to an Event, each answer waits for it (up to 30 s): a download the test keeps open."""

    def do_GET(self) -> None:
        name = self.path.lstrip("/")
        self.requests.append((name, self.headers.get("Range")))
        if self.hold is not None:
            self.hold.wait(30)
        if name not in self.files:
            self.send_error(404)
            return
        data = self.files[name]
        start = 0
        rng = self.headers.get("Range")
        if rng and not self.ignore_range:
            start = int(rng.removeprefix("bytes=").split("-")[0])
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(data) - start))
        self.end_headers()
        self.wfile.write(data[start:])

    def log_message(self, *args) -> None:  # keep pytest's output clean
        pass


@pytest.fixture
def server():
    """Yield (base URL, handler class) of a loopback HTTP server that stops after the test (or 60 s)."""
    handler = type(
        "TestHandler", (Handler,), {"files": {}, "requests": [], "ignore_range": False, "hold": None}
    )
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    watchdog = threading.Timer(60.0, httpd.shutdown)  # never outlives a hung test
    watchdog.daemon = True
    watchdog.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", handler
    finally:
        watchdog.cancel()
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)


def entries(directory: Path) -> list[str]:
    """Return the names in directory, less the lock files' .locks/ and the recorded SHA-256s."""
    return sorted(p.name for p in directory.iterdir() if p.name not in (".locks", "fcn-sha256.json"))


def tar_bytes(source: Path, top: str, mode: str) -> bytes:
    """Return a tar archive (mode 'w' or 'w:gz') of source/top, with paths starting at `top`."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode=mode) as tar:
        tar.add(source / top, arcname=top)
    return buf.getvalue()


@pytest.fixture(scope="module")
def archives(tmp_path_factory) -> dict[str, bytes]:
    """Return tiny VOCtrainval and benchmark.tgz archives in the official layouts, and a seg11valid list."""
    src = tmp_path_factory.mktemp("src")
    make_voc_tree(src, seg11valid=False)
    make_sbd_tree(src)
    return {
        "VOCtrainval_11-May-2012.tar": tar_bytes(src, "VOCdevkit", "w"),
        "benchmark.tgz": tar_bytes(src, "benchmark_RELEASE", "w:gz"),
        "seg11valid.txt": ("\n".join(SEG11VALID) + "\n").encode(),
    }


def tiny_resources(files: dict[str, bytes]) -> dict[str, dl.Resource]:
    """Return the official resource table with the MD5s of the tiny archives (and a 2-id seg11valid check)."""

    def two_ids(path: Path) -> None:
        if path.read_text().split() != SEG11VALID:
            raise dl.DownloadError(f"{path}: not the test's seg11valid")

    table = {
        name: replace(r, md5=hashlib.md5(files[r.filename]).hexdigest()) for name, r in dl.RESOURCES.items()
    }
    table["seg11valid"] = replace(table["seg11valid"], md5=None, validate=two_ids)
    return table


def run(root: Path, base: str, files: dict[str, bytes], what=("voc2012", "sbd", "seg11valid"), **kwargs):
    """Download `what` from the loopback mirror with the tiny archives' checksums; return (done, log lines)."""
    lines: list[str] = []
    done = dl.download(
        root, what, mirror=base, resources=tiny_resources(files), progress=False, log=lines.append, **kwargs
    )
    return done, lines


def test_download_verifies_extracts_and_checks_all_three_then_the_datasets_load(tmp_path, server, archives):
    base, handler = server
    handler.files.update(archives)
    done, lines = run(tmp_path, base, archives)
    assert done == ["voc2012", "sbd", "seg11valid"]
    assert [name for name, _ in handler.requests] == list(archives)
    assert VOCSegmentation(tmp_path, "seg11valid").ids == SEG11VALID
    assert len(SBDSegmentation(tmp_path, "val")) == 2 and len(VOCAugSegmentation(tmp_path)) == 6
    # Archives are deleted after extraction unless asked; no .part or staging directory is left.
    assert entries(tmp_path) == ["VOCdevkit", "benchmark_RELEASE", "seg11valid.txt"]
    assert any("voc2012: ready" in line for line in lines)


def test_second_run_does_nothing_and_says_so(tmp_path, server, archives):
    base, handler = server
    handler.files.update(archives)
    run(tmp_path, base, archives)
    handler.requests.clear()
    done, lines = run(tmp_path, base, archives)
    assert done == [] and handler.requests == []
    assert lines == [
        f"{n}: already present in {tmp_path}; nothing to do" for n in ("voc2012", "sbd", "seg11valid")
    ]


def test_partial_download_resumes_with_an_http_range_request(tmp_path, server, archives):
    base, handler = server
    handler.files.update(archives)
    data = archives["benchmark.tgz"]
    (tmp_path / "benchmark.tgz.part").write_bytes(data[: len(data) // 2])
    done, lines = run(tmp_path, base, archives, what=["sbd"], keep_archives=True)
    assert done == ["sbd"]
    assert handler.requests == [("benchmark.tgz", f"bytes={len(data) // 2}-")]
    assert (tmp_path / "benchmark.tgz").read_bytes() == data
    assert any(f"resuming after {len(data) // 2} bytes" in line for line in lines)
    assert SBDSegmentation(tmp_path, "train").ids


def test_a_complete_part_file_is_finished_by_the_416_answer(tmp_path, server, archives):
    base, handler = server
    handler.files.update(archives)
    (tmp_path / "benchmark.tgz.part").write_bytes(archives["benchmark.tgz"])
    assert run(tmp_path, base, archives, what=["sbd"])[0] == ["sbd"]
    assert handler.requests == [("benchmark.tgz", f"bytes={len(archives['benchmark.tgz'])}-")]


def test_server_ignoring_range_restarts_the_download_from_zero(tmp_path, server, archives):
    base, handler = server
    handler.files.update(archives)
    handler.ignore_range = True
    (tmp_path / "benchmark.tgz.part").write_bytes(b"garbage that must not stay in front")
    assert run(tmp_path, base, archives, what=["sbd"], keep_archives=True)[0] == ["sbd"]
    assert (tmp_path / "benchmark.tgz").read_bytes() == archives["benchmark.tgz"]


def test_corrupted_download_is_rejected_deleted_and_nothing_extracted(tmp_path, server, archives):
    base, handler = server
    bad = bytearray(archives["VOCtrainval_11-May-2012.tar"])
    bad[len(bad) // 3] ^= 0xFF
    handler.files["VOCtrainval_11-May-2012.tar"] = bytes(bad)
    with pytest.raises(
        dl.DownloadError, match=r"voc2012: .* MD5 [0-9a-f]{32}, expected [0-9a-f]{32}; .*deleted"
    ):
        run(tmp_path, base, archives, what=["voc2012"])
    assert entries(tmp_path) == []
    # The next run downloads afresh and succeeds.
    handler.files.update(archives)
    assert run(tmp_path, base, archives, what=["voc2012"])[0] == ["voc2012"]


def test_corrupted_partial_download_is_rejected_after_resuming(tmp_path, server, archives):
    base, handler = server
    handler.files.update(archives)
    data = archives["benchmark.tgz"]
    (tmp_path / "benchmark.tgz.part").write_bytes(b"\0" * (len(data) // 2))  # wrong first half
    with pytest.raises(dl.DownloadError, match="MD5"):
        run(tmp_path, base, archives, what=["sbd"])
    assert entries(tmp_path) == []


def test_archive_with_the_wrong_layout_leaves_nothing_in_place(tmp_path, server, archives):
    base, handler = server
    src = tmp_path / "src"
    (src / "VOCdevkit" / "VOC2012" / "JPEGImages").mkdir(parents=True)
    (src / "VOCdevkit" / "VOC2012" / "JPEGImages" / "x.jpg").write_bytes(b"x")
    wrong = {**archives, "VOCtrainval_11-May-2012.tar": tar_bytes(src, "VOCdevkit", "w")}
    handler.files.update(wrong)
    root = tmp_path / "data"
    with pytest.raises(dl.DownloadError, match=r"extracted, but .*SegmentationClass.* is missing"):
        run(root, base, wrong, what=["voc2012"])
    assert entries(root) == []


def test_unreadable_archive_leaves_nothing_in_place(tmp_path, server, archives):
    base, handler = server
    junk = {**archives, "benchmark.tgz": b"\x1f\x8b this is not gzip data"}
    handler.files.update(junk)
    with pytest.raises(dl.DownloadError, match=r"benchmark\.tgz: cannot extract"):
        run(tmp_path, base, junk, what=["sbd"])
    assert entries(tmp_path) == []


def test_archive_escaping_the_root_is_refused(tmp_path, server, archives):
    base, handler = server
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        info = tarfile.TarInfo("../escaped.txt")
        info.size = 1
        tar.addfile(info, io.BytesIO(b"x"))
    evil = {**archives, "benchmark.tgz": buf.getvalue()}
    handler.files.update(evil)
    root = tmp_path / "data"
    with pytest.raises(dl.DownloadError, match="cannot extract"):
        run(root, base, evil, what=["sbd"])
    assert not (tmp_path / "escaped.txt").exists() and entries(root) == []


def test_seg11valid_content_is_checked_against_the_papers_736_ids(tmp_path, server):
    base, handler = server
    handler.files["seg11valid.txt"] = SEG11VALID_TEXT.encode()
    assert dl.download(tmp_path, ["seg11valid"], mirror=base, progress=False, log=lambda _: None) == [
        "seg11valid"
    ]
    assert len((tmp_path / "seg11valid.txt").read_text().split()) == 736
    (tmp_path / "seg11valid.txt").unlink()
    handler.files["seg11valid.txt"] = b"<html>404: Not Found</html>\n"
    with pytest.raises(dl.DownloadError, match="expected 736 distinct ids"):
        dl.download(tmp_path, ["seg11valid"], mirror=base, progress=False, log=lambda _: None)
    assert entries(tmp_path) == []


def test_a_damaged_seg11valid_already_in_place_is_fetched_again(tmp_path, server):
    base, handler = server
    handler.files["seg11valid.txt"] = SEG11VALID_TEXT.encode()
    (tmp_path / "seg11valid.txt").write_text("2007_000033\n")
    lines: list[str] = []
    assert dl.download(tmp_path, ["seg11valid"], mirror=base, progress=False, log=lines.append) == [
        "seg11valid"
    ]
    assert "expected 736 distinct ids" in lines[0] and "downloading again" in lines[0]
    assert (tmp_path / "seg11valid.txt").read_text() == SEG11VALID_TEXT


def test_command_line_exits_nonzero_on_a_checksum_mismatch(tmp_path, server, archives, capsys):
    base, handler = server
    handler.files.update(archives)  # the tiny archive does not have the official MD5
    code = dl.main(["--root", str(tmp_path), "--what", "voc2012", "--mirror", base, "--no-progress"])
    assert code == 1
    err = capsys.readouterr().err
    assert err.startswith("error: voc2012: ") and "expected 6cd6e144f989b92b3379bac3b3de84fd" in err
    assert entries(tmp_path) == []


def test_command_line_mirror_from_the_environment_and_http_errors(tmp_path, server, capsys, monkeypatch):
    base, handler = server
    monkeypatch.setenv(dl.MIRROR_ENV, base)
    assert dl.main(["--root", str(tmp_path), "--what", "seg11valid", "--no-progress"]) == 1
    assert "HTTP 404" in capsys.readouterr().err and handler.requests == [("seg11valid.txt", None)]
    handler.files["seg11valid.txt"] = SEG11VALID_TEXT.encode()
    assert dl.main(["--root", str(tmp_path), "--what", "seg11valid", "--no-progress"]) == 0
    assert dl.main(["--root", str(tmp_path), "--what", "seg11valid"]) == 0
    assert "already present" in capsys.readouterr().out


def test_unreachable_server_is_a_clear_error(tmp_path):
    with socket.socket() as s:  # a port with nothing listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(dl.DownloadError, match=r"cannot connect .*--mirror"):
        dl.download(
            tmp_path, ["seg11valid"], mirror=f"http://127.0.0.1:{port}", progress=False, log=lambda _: None
        )


_IMPORT_OFFLINE = """
import socket
def refuse(*args, **kwargs):
    raise AssertionError("network access at import")
socket.create_connection = refuse
socket.socket.connect = refuse
import fcn.data.download as dl
assert dl.RESOURCES["voc2012"].md5 == "6cd6e144f989b92b3379bac3b3de84fd"
assert dl.RESOURCES["sbd"].md5 == "82b4d87ceb2ed10f6038a1cba92111cb"
"""


def test_importing_the_module_touches_no_network():
    # In a fresh process: reloading the module here would give it a second DownloadError class, which
    # the modules that imported the first (fcn.models.pretrained) would no longer catch.
    proc = subprocess.run(
        [sys.executable, "-c", _IMPORT_OFFLINE], cwd=REPO, env=python_env(), capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr


# --- the authors' Caffe models (fetched only on request, kept as files under <root>/models/) --------


@pytest.fixture(scope="module")
def tiny_caffemodel() -> bytes:
    """Return a NetParameter of one layer, score_fr, with one 3x4x1x1 blob: what the content check looks
    for. caffe.proto: NetParameter.layer = 100, LayerParameter.name = 1 and blobs = 7, BlobProto.shape
    = 7 (BlobShape.dim = 1, packed) and data = 5 (packed floats); every length here is under 128."""

    def field(key: bytes, payload: bytes) -> bytes:
        return key + bytes([len(payload)]) + payload

    shape = field(b"\x3a", field(b"\x0a", bytes([3, 4, 1, 1])))
    data = field(b"\x2a", np.full(12, 0.5, "<f4").tobytes())
    return field(b"\xa2\x06", field(b"\x0a", b"score_fr") + field(b"\x3a", shape + data))


def model_table(data: bytes, md5: bool = True, sha1: bool = True) -> dict[str, dl.Resource]:
    """Return the official fcn8s-caffe entry with the tiny file's checksums (or none)."""
    entry = replace(
        dl.MODELS["fcn8s-caffe"],
        md5=hashlib.md5(data).hexdigest() if md5 else None,
        sha1=hashlib.sha1(data).hexdigest() if sha1 else None,
    )
    return {"fcn8s-caffe": entry}


def fetch_models(root: Path, base: str, table: dict, log=lambda _: None) -> list[str]:
    return dl.download(root, list(table), mirror=base, resources=table, progress=False, log=log)


def test_caffe_model_is_downloaded_verified_and_kept_under_models(tmp_path, server, tiny_caffemodel):
    from fcn.core.caffemodel import read_caffemodel

    base, handler = server
    handler.files["fcn8s-heavy-pascal.caffemodel"] = tiny_caffemodel
    table = model_table(tiny_caffemodel)
    assert fetch_models(tmp_path, base, table) == ["fcn8s-caffe"]
    path = tmp_path / "models" / "fcn8s-heavy-pascal.caffemodel"
    assert path.read_bytes() == tiny_caffemodel and read_caffemodel(path)["score_fr"][0].shape == (3, 4, 1, 1)
    files = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if ".locks" not in p.parts)
    assert files == ["models", "models/fcn8s-heavy-pascal.caffemodel"]  # kept as it is, no .part left
    handler.requests.clear()
    lines: list[str] = []
    assert fetch_models(tmp_path, base, table, lines.append) == [] and handler.requests == []
    assert lines == [f"fcn8s-caffe: already present in {tmp_path}; nothing to do"]


def test_partial_caffe_model_download_resumes(tmp_path, server, tiny_caffemodel):
    base, handler = server
    handler.files["fcn8s-heavy-pascal.caffemodel"] = tiny_caffemodel
    half = len(tiny_caffemodel) // 2
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "fcn8s-heavy-pascal.caffemodel.part").write_bytes(tiny_caffemodel[:half])
    assert fetch_models(tmp_path, base, model_table(tiny_caffemodel)) == ["fcn8s-caffe"]
    assert handler.requests == [("fcn8s-heavy-pascal.caffemodel", f"bytes={half}-")]
    assert (tmp_path / "models" / "fcn8s-heavy-pascal.caffemodel").read_bytes() == tiny_caffemodel


def test_caffe_model_with_a_wrong_sha1_is_deleted(tmp_path, server, tiny_caffemodel):
    base, handler = server
    handler.files["fcn8s-heavy-pascal.caffemodel"] = tiny_caffemodel
    table = model_table(tiny_caffemodel, md5=False)
    table["fcn8s-caffe"] = replace(table["fcn8s-caffe"], sha1="0" * 40)
    with pytest.raises(
        dl.DownloadError, match=r"fcn8s-caffe: .* SHA-1 [0-9a-f]{40}, expected 0{40}; .*deleted"
    ):
        fetch_models(tmp_path, base, table)
    assert entries(tmp_path / "models") == []


def test_caffe_model_without_a_checksum_is_still_checked_to_be_a_caffemodel(tmp_path, server):
    # FCN-16s and at-once have no published checksum: an error page served with 200 is still refused.
    base, handler = server
    handler.files["fcn16s-heavy-pascal.caffemodel"] = b"<html><body>Moved</body></html>\n"
    assert dl.MODELS["fcn16s-caffe"].md5 is None and dl.MODELS["fcn16s-caffe"].sha1 is None
    with pytest.raises(dl.DownloadError, match=r"not a Caffe NetParameter .* not the authors' model"):
        fetch_models(tmp_path, base, {"fcn16s-caffe": dl.MODELS["fcn16s-caffe"]})
    assert entries(tmp_path / "models") == []


def test_command_line_fetches_a_named_caffe_model_against_its_official_checksum(
    tmp_path, server, tiny_caffemodel, capsys
):
    base, handler = server
    assert "fcn8s-caffe" not in dl.RESOURCES  # the default --what: the data only
    handler.files["fcn8s-heavy-pascal.caffemodel"] = tiny_caffemodel  # not the official checksums
    code = dl.main(["--root", str(tmp_path), "--what", "fcn8s-caffe", "--mirror", base, "--no-progress"])
    assert code == 1 and "expected c03b2953ebd846c270da1a8e8f200c09" in capsys.readouterr().err
    assert entries(tmp_path / "models") == []


def test_the_authors_model_files_as_their_repository_lists_them():
    urls = {name: r.url for name, r in dl.MODELS.items()}
    assert urls == {
        "fcn32s-caffe": "http://dl.caffe.berkeleyvision.org/fcn32s-heavy-pascal.caffemodel",
        "fcn16s-caffe": "http://dl.caffe.berkeleyvision.org/fcn16s-heavy-pascal.caffemodel",
        "fcn8s-caffe": "http://dl.caffe.berkeleyvision.org/fcn8s-heavy-pascal.caffemodel",
        "fcn8s-atonce-caffe": "http://dl.caffe.berkeleyvision.org/fcn8s-atonce-pascal.caffemodel",
    }
    assert dl.MODELS["fcn8s-caffe"].md5 == "c03b2953ebd846c270da1a8e8f200c09"
    assert dl.MODELS["fcn8s-caffe"].sha1 == "c449ea74dd7d83751d1357d6a8c323fcf4038962"
    assert dl.MODELS["fcn32s-caffe"].sha1 == "05eb922d7829c39448f57e5ab9d8cd75d6c0be6d"


# --- trust on first use, one writer at a time, https ---------------------------------------------

OTHER_SEG11VALID_TEXT = "".join(f"{2008 + k % 4}_{k:06d}\n" for k in range(736))  # valid, but not the same


def seg11valid(root: Path, base: str, log=lambda _: None) -> list[str]:
    return dl.download(root, ["seg11valid"], mirror=base, progress=False, log=log)


def test_a_file_without_a_published_hash_has_its_sha256_recorded_then_a_changed_one_is_refused(
    tmp_path, server
):
    base, handler = server
    handler.files["seg11valid.txt"] = SEG11VALID_TEXT.encode()
    assert dl.RESOURCES["seg11valid"].md5 is None  # the authors publish no checksum for it
    lines: list[str] = []
    assert seg11valid(tmp_path, base, lines.append) == ["seg11valid"]
    digest = hashlib.sha256(SEG11VALID_TEXT.encode()).hexdigest()
    known = tmp_path / "fcn-sha256.json"
    assert json.loads(known.read_text()) == {"seg11valid.txt": {"sha256": digest, "size": 736 * 12}}
    (recorded,) = [line for line in lines if "recorded sha256" in line]
    assert recorded.startswith(f"seg11valid: recorded sha256 {digest} of seg11valid.txt on first download")
    assert recorded.endswith("later downloads are checked against it")

    # The server now serves another file (still 736 valid ids): the next download is refused, the
    # file deleted, and the one line names the file, both digests and what to do.
    (tmp_path / "seg11valid.txt").unlink()
    handler.files["seg11valid.txt"] = OTHER_SEG11VALID_TEXT.encode()
    other = hashlib.sha256(OTHER_SEG11VALID_TEXT.encode()).hexdigest()
    with pytest.raises(dl.DownloadError) as info:
        seg11valid(tmp_path, base)
    message = str(info.value)
    assert "\n" not in message and message.startswith("seg11valid: ")
    assert f"seg11valid.txt with SHA-256 {other}, expected {digest}" in message
    assert str(known) in message and "remove 'seg11valid.txt' from that file and run again" in message
    assert entries(tmp_path) == []  # the refused file is gone; the record stays
    assert json.loads(known.read_text())["seg11valid.txt"]["sha256"] == digest


def test_a_copy_in_place_that_differs_from_the_recorded_sha256_is_deleted_and_downloaded_again(
    tmp_path, server
):
    base, handler = server
    handler.files["seg11valid.txt"] = SEG11VALID_TEXT.encode()
    digest = hashlib.sha256(SEG11VALID_TEXT.encode()).hexdigest()
    (tmp_path / "fcn-sha256.json").write_text(json.dumps({"seg11valid.txt": {"sha256": digest, "size": 1}}))
    (tmp_path / "seg11valid.txt").write_text(OTHER_SEG11VALID_TEXT)  # valid ids, wrong SHA-256
    lines: list[str] = []
    assert seg11valid(tmp_path, base, lines.append) == ["seg11valid"]
    assert f"expected {digest}" in lines[0] and "downloading again" in lines[0]
    assert (tmp_path / "seg11valid.txt").read_text() == SEG11VALID_TEXT
    assert handler.requests == [("seg11valid.txt", None)]


_DOWNLOAD_SEG11VALID = """
import sys
import fcn.data.download as dl
sys.exit(dl.main(["--root", sys.argv[1], "--what", "seg11valid", "--mirror", sys.argv[2], "--no-progress"]))
"""


def test_two_processes_downloading_the_same_file_both_succeed_with_one_download(tmp_path, server):
    """The first process's answer is held open until the second is waiting for the lock (or, without a
    lock, has sent its own request): one download, the other process finds the finished file."""
    base, handler = server
    handler.files["seg11valid.txt"] = SEG11VALID_TEXT.encode()
    handler.hold = threading.Event()
    outputs: list[list[str]] = [[], []]

    def start(k: int) -> subprocess.Popen:
        proc = subprocess.Popen(
            [sys.executable, "-u", "-c", _DOWNLOAD_SEG11VALID, str(tmp_path), base],
            cwd=REPO,
            env=python_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        threading.Thread(target=lambda: outputs[k].extend(proc.stdout), daemon=True).start()
        return proc

    def wait_for(condition, seconds: float = 30.0) -> None:
        deadline = time.monotonic() + seconds
        while not condition() and time.monotonic() < deadline:
            time.sleep(0.02)

    first = start(0)
    wait_for(lambda: handler.requests)  # the first one is downloading (and holds the lock)
    second = start(1)
    wait_for(lambda: any("waiting" in line for line in outputs[1]) or len(handler.requests) > 1)
    handler.hold.set()
    codes = [first.wait(60), second.wait(60)]
    time.sleep(0.1)  # the reader threads take the last lines
    assert codes == [0, 0], outputs
    assert handler.requests == [("seg11valid.txt", None)]  # one download
    assert any("another process is downloading or preparing it" in line for line in outputs[1]), outputs
    assert any("already present" in line for line in outputs[1])
    assert (tmp_path / "seg11valid.txt").read_text() == SEG11VALID_TEXT
    assert entries(tmp_path) == ["seg11valid.txt"]  # no .part left behind


def test_a_damaged_record_of_sha256s_is_one_line_and_the_download_is_kept(tmp_path, server):
    base, handler = server
    handler.files["seg11valid.txt"] = SEG11VALID_TEXT.encode()
    (tmp_path / "fcn-sha256.json").write_text("{not json")
    with pytest.raises(dl.DownloadError, match=r"fcn-sha256\.json: unreadable .*repair or delete it"):
        seg11valid(tmp_path, base)
    assert (tmp_path / "seg11valid.txt").read_text() == SEG11VALID_TEXT  # the file was not at fault
    with pytest.raises(dl.DownloadError, match="unreadable"):  # nor is it taken unchecked next time
        seg11valid(tmp_path, base)


HTTP_ONLY_HOSTS = {"dl.caffe.berkeleyvision.org"}
"""Hosts not known to serve https: their files must be guarded by a full hash (published, or
recorded on first download, which every file without a published one gets)."""


def test_every_registry_address_is_https_unless_its_host_serves_only_http():
    from urllib.parse import urlsplit

    from fcn.models.pretrained import PRETRAINED

    resources = [*dl.RESOURCES.values(), *dl.MODELS.values(), *(e.resource for e in PRETRAINED.values())]
    for resource in resources:
        parts = urlsplit(resource.url)
        assert parts.scheme == ("http" if parts.hostname in HTTP_ONLY_HOSTS else "https"), resource.url
    assert dl.RESOURCES["voc2012"].url.startswith("https://host.robots.ox.ac.uk/")


def test_the_download_command_follows_the_projects_exit_code_rule(tmp_path, capsys, monkeypatch):
    from fcn.data import download as dl

    root_file = tmp_path / "afile"
    root_file.write_text("x")
    assert dl.main(["--root", str(root_file), "--what", "seg11valid"]) == 2  # bad input, before any work
    assert dl.main(["--root", str(tmp_path), "--mirror", "ftp:/nope", "--what", "seg11valid"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all(line.startswith("error: ") for line in err)

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(dl, "download", interrupted)
    assert dl.main(["--root", str(tmp_path), "--what", "seg11valid"]) == 130
    assert capsys.readouterr().err.strip() == "error: interrupted; run the same command again to resume"
