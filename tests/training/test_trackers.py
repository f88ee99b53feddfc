"""logging.trackers: a real MLflow server and an offline W&B run get the parameters, the metric history
of metrics.jsonl and the pictures; a resumed run continues the same tracker run without a step twice;
a tracker that is not installed stops the run before any work, one that fails mid-run does not stop it."""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from fcn.config import load_config
from fcn.training.loop import fit
from fcn.training.trackers import flat_params
from tests.helpers import python_env, toy_overrides


@pytest.fixture(scope="module")
def toy_root(tmp_path_factory):
    from fcn.data.toy import generate

    root = tmp_path_factory.mktemp("toy")
    generate(root, seed=0, n_train=8, n_val=2, size=32)
    return root


def _cfg(root, run_dir, *extra):
    return load_config(
        overrides=toy_overrides(root, run_dir, "training.eval_every=2", "training.log_every=1", *extra)
    )


def _records(run_dir: Path) -> dict[int, dict]:
    """Return metrics.jsonl's records by iteration (the first of a replayed one)."""
    records: dict[int, dict] = {}
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        record = json.loads(line)
        records.setdefault(record["iteration"], record)
    return records


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def mlflow_server(tmp_path):
    """A real `mlflow server` on 127.0.0.1 with a SQLite backend in tmp_path; yields (url, process)."""
    pytest.importorskip("mlflow")
    import urllib.request

    port = _free_port()
    command = [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port)]
    command += ["--backend-store-uri", f"sqlite:///{tmp_path / 'mlflow.db'}", "--workers", "1"]
    command += ["--artifacts-destination", str(tmp_path / "artifacts")]
    url = f"http://127.0.0.1:{port}"
    with open(tmp_path / "server.log", "w") as log:
        # its own process group: the server's worker processes end with it
        server = subprocess.Popen(
            command,
            cwd=tmp_path,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=python_env(),
            start_new_session=True,
        )
        try:
            for _ in range(240):
                try:
                    urllib.request.urlopen(f"{url}/health", timeout=2)
                    break
                except OSError:
                    assert server.poll() is None, (tmp_path / "server.log").read_text()[-2000:]
                    time.sleep(0.5)
            else:
                pytest.fail("mlflow server did not start in 120 s")
            yield url, server
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(server.pid, signal.SIGTERM)
            server.wait(30)


@pytest.mark.slow
def test_mlflow_server_gets_params_history_images_and_resume_continues_the_run(
    toy_root, tmp_path, mlflow_server, capsys
):
    from mlflow import MlflowClient

    url, server = mlflow_server
    run_dir = tmp_path / "run"
    last = run_dir / "checkpoints" / "last.pt"
    extra = ("logging.trackers=[tensorboard,mlflow]", f"logging.mlflow_uri={url}", "logging.experiment=toy")
    cfg = _cfg(toy_root, run_dir, "training.iters=4", *extra)

    def keep_iteration_2(record):  # last.pt as a run killed at iteration 3 or 4 would have left it
        if record["iteration"] == 2:
            shutil.copy(last, tmp_path / "last2.pt")

    fit(cfg, on_evaluation=[keep_iteration_2])
    run_id = torch.load(last, weights_only=True)["trackers"]["mlflow"]
    client = MlflowClient(url)
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED" and run.info.run_name == "run"
    assert client.get_experiment(run.info.experiment_id).name == "toy"
    assert run.data.params == flat_params(cfg) and run.data.params["optimizer.lr"] == "0.003"
    assert list(run_dir.glob("events.out.tfevents.*"))  # TensorBoard beside it, as before

    # Resumed from iteration 2 (as after a SIGKILL at 4): iterations 3 and 4 are replayed, not logged twice.
    shutil.copy(tmp_path / "last2.pt", last)
    fit(_cfg(toy_root, run_dir, "training.iters=6", "training.resume=auto", *extra))
    assert torch.load(last, weights_only=True)["trackers"]["mlflow"] == run_id
    assert client.get_run(run_id).info.status == "FINISHED"
    assert len(client.search_runs([run.info.experiment_id])) == 1

    records = _records(run_dir)
    assert sorted(records) == [2, 4, 6]

    def history(key):
        return [
            (m.step, m.value) for m in sorted(client.get_metric_history(run_id, key), key=lambda m: m.step)
        ]

    for key in ("mean_iou", "pixel_acc", "mean_acc", "fwavacc"):
        assert history(f"val/{key}") == [(it, r[key]) for it, r in records.items()]
    assert history("train/mean_loss") == [(it, r["train_loss"]) for it, r in records.items()]
    for c, name in enumerate(("background", "circle", "square", "triangle")):
        expected = [(it, r["iou"][c]) for it, r in records.items() if not math.isnan(r["iou"][c])]
        assert history(f"val_iou/{name}") == expected
    assert [step for step, _ in history("train/loss")] == [1, 2, 3, 4, 5, 6]
    assert [step for step, _ in history("train/lr")] == [1, 2, 3, 4, 5, 6]

    images = [a.path for a in client.list_artifacts(run_id, "images")]
    for tag in ("val~fixed_batch", "val~confusion", "val~iou"):
        steps = sorted(
            int(p.split("+step+")[1].split("+")[0]) for p in images if tag in p and p.endswith(".png")
        )
        assert steps == [2, 4, 6], (tag, images)
    png = next(p for p in images if "val~fixed_batch+step+6" in p and p.endswith(".png"))
    local = client.download_artifacts(run_id, png, str(tmp_path / "download"))
    assert Path(local).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # The server goes away at iteration 8: one warning line, and training and checkpoints go on.
    capsys.readouterr()

    def stop_server(record):
        if record["iteration"] == 8:
            server.terminate()
            server.wait(30)

    extra_ckpt = ("logging.log_checkpoints=true",)
    summary = fit(
        _cfg(toy_root, run_dir, "training.iters=10", "training.resume=auto", *extra, *extra_ckpt),
        [stop_server],
    )
    state = torch.load(last, weights_only=True)
    assert summary["iteration"] == 10 and state["iteration"] == 10
    assert state["trackers"]["mlflow"] == run_id  # kept: a resume once the server is back continues the run
    warnings = [line for line in capsys.readouterr().out.splitlines() if line.startswith("warning: logging")]
    assert len(warnings) == 1 and "mlflow failed" in warnings[0] and "training goes on" in warnings[0]
    assert sorted(_records(run_dir)) == [2, 4, 6, 8, 10]


def read_wandb_records(path: Path):
    """Yield the protobuf Records of a W&B run file (.wandb): W&B's LevelDB-style log, a 7-byte
    header then 32 KiB blocks of chunks (crc32, length, type: 1 full, 2 first, 3 middle, 4 last)."""
    from wandb.proto import wandb_internal_pb2 as pb

    data, block, pos, parts = path.read_bytes(), 32768, 7, b""
    assert data[:4] == b":W&B"
    while pos + 7 <= len(data):
        left = block - pos % block
        if left < 7:  # a block's tail too short for a header is padding
            pos += left
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if kind == 0:
            pos += left
            continue
        parts += data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):
            record = pb.Record()
            record.ParseFromString(parts)
            parts = b""
            yield record


@pytest.mark.slow
def test_wandb_offline_writes_the_same_history(toy_root, tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    run_dir = tmp_path / "run"
    cfg = _cfg(toy_root, run_dir, "training.iters=4", "logging.trackers=[wandb]", "logging.wandb_project=toy")
    fit(cfg)
    assert not list(run_dir.glob("events.out.tfevents.*"))  # tensorboard not asked for
    run_id = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)["trackers"]["wandb"]
    (file,) = run_dir.glob(f"wandb/offline-run-*-{run_id}/run-{run_id}.wandb")
    rows, config = {}, {}
    for record in read_wandb_records(file):
        kind = record.WhichOneof("record_type")
        if kind == "history":
            row = {
                item.key or "/".join(item.nested_key): json.loads(item.value_json)
                for item in record.history.item
            }
            rows[row["_step"]] = row
        elif kind in ("run", "config"):  # the config given to wandb.init, then any update
            updates = record.run.config.update if kind == "run" else record.config.update
            config.update({item.key: json.loads(item.value_json) for item in updates})
    assert config["optimizer.lr"] == "0.003" and config["model.backbone"] == "resnet18"
    assert sorted(rows) == [1, 2, 3, 4]
    for it, r in _records(run_dir).items():
        for key in ("mean_iou", "pixel_acc", "mean_acc", "fwavacc"):
            assert rows[it][f"val/{key}"] == r[key]
        assert rows[it]["train/mean_loss"] == r["train_loss"]
        for tag in ("val/fixed_batch", "val/confusion", "val/iou"):
            assert rows[it][f"{tag}/_type"] == "image-file"
            assert (file.parent / "files" / rows[it][f"{tag}/path"]).is_file()
    assert all(isinstance(rows[it]["train/loss"], float) for it in (1, 2, 3, 4))


def test_a_tracker_not_installed_is_one_error_line_before_any_work(toy_root, tmp_path, monkeypatch, capsys):
    import importlib.util

    import train

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a)
    )
    run_dir = tmp_path / "run"
    code = train.main(toy_overrides(toy_root, run_dir, "logging.trackers=[tensorboard,wandb]"))
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert err[0].startswith("error: logging.trackers: 'wandb' is not installed; pip install wandb")
    assert not run_dir.exists()


def test_logging_trackers_choices_are_checked(tmp_path):
    from fcn.config import ConfigError

    with pytest.raises(ConfigError, match=r"logging.trackers='mlfow' is not one of .*did you mean 'mlflow'"):
        load_config(overrides=["logging.trackers=[mlfow]"])
    with pytest.raises(ConfigError, match="names a tracker twice"):
        load_config(overrides=["logging.trackers=[mlflow,mlflow]"])
