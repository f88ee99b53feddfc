"""torchrun on the CPU (gloo, two processes): DDP equals one process with the global batch, ranks stay
identical, distributed evaluation is exact, resume and Ctrl-C work, only rank 0 writes, a failing rank
fails the run.

The multi-process tests start the real ``torchrun`` (``python -m torch.distributed.run --standalone``).
Most of them run this file as the worker (``-m tests.training.test_distributed child ...``): the worker swaps
``fcn.models.build_model`` for a tiny conv net, calls ``train.main`` (train.py's command line) and
saves each rank's final state for the test to compare. One test runs train.py itself.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from torch import nn

from fcn.config import load_config
from fcn.core import distributed
from tests.helpers import TINY_CLASSES as NUM_CLASSES
from tests.helpers import TinyNet, finish, python_env, toy_overrides

REPO = Path(__file__).resolve().parents[2]
TIMEOUT = 300  # seconds for one torchrun launch on a busy 2-core machine; a hang fails, never blocks


# ----------------------------------------------------------------------------- the worker side


def _child(argv: list[str]) -> int:
    """Run as a torchrun worker: argv is [mode, spec.json]; return the exit code."""
    import fcn.models
    import fcn.training.loop
    import train

    mode, spec_path = argv
    spec = json.loads(Path(spec_path).read_text())
    rank = int(os.environ["RANK"])
    built: list[nn.Module] = []

    def build(model_cfg):
        built.append(TinyNet(model_cfg.num_classes, **spec.get("net", {})))
        return built[-1]

    fcn.models.build_model = build
    step = fcn.training.loop.train_one_step

    def failing_step(*args, **kwargs):
        if rank == spec.get("fail_rank") and kwargs["iteration"] == spec["fail_at"]:
            raise ValueError(f"injected failure on rank {rank} at iteration {spec['fail_at'] + 1}")
        if rank == spec.get("interrupt_rank") and kwargs["iteration"] == spec["interrupt_at"]:
            os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C reaching one rank a step before the others
        return step(*args, **kwargs)

    fcn.training.loop.train_one_step = failing_step
    if mode == "fail":
        return train.main(spec["overrides"])

    # mode "runs": several runs in one process group, kept alive between them
    distributed.cleanup = lambda: None
    out = Path(spec["out"])
    for run in spec["runs"]:
        built.clear()
        spec["net"] = run.get("net", {})
        spec["interrupt_rank"], spec["interrupt_at"] = run.get("interrupt_rank"), run.get("interrupt_at")
        code = train.main(run["overrides"] + run.get("rank_overrides", {}).get(str(rank), []))
        print(f"run {run['name']} rank {rank} exit {code}", flush=True)
        if built:
            torch.save(built[-1].state_dict(), out / f"{run['name']}.rank{rank}.pt")
        if run.get("copy_last") and rank == 0:
            shutil.copy(Path(run["run_dir"]) / "checkpoints" / "last.pt", out / run["copy_last"])
        if run.get("eval_odd_set"):
            _child_evaluate(run, out, rank)
        distributed.barrier()
    torch.distributed.destroy_process_group()
    return 0


def _child_evaluate(run: dict, out: Path, rank: int) -> None:
    """Evaluate the run's last.pt over the validation set split across ranks; rank 0 saves the matrix."""
    from fcn.data import build_dataset
    from fcn.data.loaders import eval_loader
    from fcn.data.transforms import build_transforms
    from fcn.training.validate import evaluate

    cfg = load_config(overrides=run["overrides"])
    model = TinyNet(**run.get("net", {}))
    model.load_state_dict(torch.load(Path(run["run_dir"]) / "checkpoints" / "last.pt")["model"])
    val_set = build_dataset(cfg.data.val, cfg.data, build_transforms(cfg.data.transforms, train=False))
    info = distributed.env_info()
    loader = eval_loader(
        val_set, batch_size=cfg.data.val_batch_size, num_workers=0, rank=info.rank, world_size=info.world_size
    )
    result = evaluate(model, loader, NUM_CLASSES, "cpu")
    if rank == 0:
        (out / f"{run['name']}.confusion.json").write_text(json.dumps(result["confusion"]))


# ----------------------------------------------------------------------------- the test side


def _torchrun(args: list[str], timeout: float = TIMEOUT) -> tuple[int, str, float]:
    """Run `torchrun --standalone --nproc_per_node=2 <args>`; return (exit code, output, seconds)."""
    env = python_env(OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", *args]
    start = time.time()
    proc = subprocess.Popen(
        cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    code, out = finish(proc, timeout, "torchrun")
    return code, out, time.time() - start


def _torchrun_child(mode: str, spec: dict, path: Path) -> tuple[int, str, float]:
    path.write_text(json.dumps(spec))
    return _torchrun(["-m", "tests.training.test_distributed", "child", mode, str(path)])


@pytest.fixture(scope="module")
def toy_root(tmp_path_factory) -> Path:
    from fcn.data.toy import generate

    root = tmp_path_factory.mktemp("toy")
    generate(root, seed=0, n_train=24, n_val=7, size=32)  # 7 validation images: not a multiple of 2
    return root


def _tiny(root: Path, run_dir: Path, *extra: str) -> list[str]:
    return toy_overrides(root, run_dir, "training.vis_images=0", "data.transforms.scale_min=0.75", *extra)


# SGD, not toy_overrides' AdamW: an SGD step is linear in the gradient, so two processes' sums (in
# another order than one process's) give weights equal up to fp32 rounding; AdamW divides each
# gradient by its own magnitude, which can turn the rounding of a near-zero gradient into a step.
DP_EXTRA = ("optimizer.name=sgd", "optimizer.lr=0.1", "optimizer.momentum=0.9", "training.iters=3")


def _trackers_extra(base: Path) -> tuple[str, ...]:
    """Return the overrides that log the dp run to an MLflow store in base (only rank 0 may)."""
    uri = f"logging.mlflow_uri=sqlite:///{base / 'mlflow.db'}"
    return ("logging.trackers=[tensorboard,mlflow]", uri, "training.log_every=1")


RESUME_EXTRA = (  # everything that draws random numbers, so that an inexact resume shows
    "training.iters=7",  # 24 images / (2 x 2) = 6 steps an epoch: the resume crosses into epoch 1
    "training.eval_every=4",
    "training.checkpoint_every=1",
    "training.deterministic=true",
    "data.batch_size=2",
    "data.mixing.cutmix_p=0.5",
    "data.transforms.hflip=true",
    "schedule.name=poly",
)


@pytest.fixture(scope="module")
def ddp_runs(toy_root, tmp_path_factory) -> dict:
    """One torchrun launch doing several tiny-net runs; return their directories and the output."""
    base = tmp_path_factory.mktemp("ddp")
    out = base / "out"
    out.mkdir()
    dropout = {"dropout": 0.5}
    runs = [
        # no BatchNorm: two processes with batch 2 must equal one process with batch 4
        {
            "name": "dp",
            "overrides": _tiny(
                toy_root,
                base / "dp",
                "data.batch_size=2",
                *DP_EXTRA,
                *(() if importlib.util.find_spec("mlflow") is None else _trackers_extra(base)),
            ),
        },
        {
            "name": "bn",
            "net": {"bn": True},
            "overrides": _tiny(
                toy_root, base / "bn", "data.batch_size=2", "training.iters=2", "data.val_batch_size=2"
            ),
            "eval_odd_set": True,
        },
        {"name": "straight", "net": dropout, "overrides": _tiny(toy_root, base / "straight", *RESUME_EXTRA)},
        {
            "name": "stopped",
            "net": dropout,
            "overrides": _tiny(toy_root, base / "resumed", *RESUME_EXTRA),
            "interrupt_rank": 1,
            "interrupt_at": 2,  # rank 1 alone is interrupted during the third step
            "copy_last": "stopped.pt",
        },
        {
            "name": "resumed",
            "net": dropout,
            "overrides": _tiny(
                toy_root, base / "resumed", *RESUME_EXTRA, f"training.resume={out / 'stopped.pt'}"
            ),
        },
        {  # rank 1 does not find rank 0's checkpoint (as on a node without the shared run directory)
            "name": "mismatch",
            "overrides": _tiny(toy_root, base / "resumed", *RESUME_EXTRA, "training.resume=auto"),
            "rank_overrides": {"1": [f"training.run_dir={base / 'elsewhere'}"]},
        },
        {"name": "syncbn", "overrides": _tiny(toy_root, base / "syncbn", "training.sync_bn=true")},
    ]
    for run in runs:
        run["run_dir"] = str(base / ("resumed" if run["name"] == "stopped" else run["name"]))
    code, output, seconds = _torchrun_child("runs", {"out": str(out), "runs": runs}, base / "spec.json")
    assert code == 0, output[-4000:]
    return {"base": base, "out": out, "output": output, "runs": {r["name"]: r for r in runs}}


def _states(out: Path, name: str) -> tuple[dict, dict]:
    return tuple(torch.load(out / f"{name}.rank{r}.pt", weights_only=True) for r in (0, 1))


def _assert_ranks_identical(out: Path, name: str) -> dict:
    rank0, rank1 = _states(out, name)
    for key, value in rank0.items():
        assert torch.equal(value, rank1[key]), f"{name}: {key} differs between ranks"
    return rank0


def _evaluate_as_the_workers(model: nn.Module, val_set, batch_size: int) -> dict:
    """Return evaluate()'s result over val_set computed as the torchrun workers computed it: rank r
    takes images r, r + 2, ... (make_eval_loader) in batches of batch_size, on one thread
    (OMP_NUM_THREADS=1), so the same kernels see the same batches and give the same bits; the
    matrices are summed as all_reduce sums them. (A batch of 1 on two threads may round otherwise.)"""
    from torch.utils.data import DataLoader, Subset

    from fcn.core.metrics import ConfusionMatrix
    from fcn.training.validate import evaluate

    total = ConfusionMatrix(NUM_CLASSES)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for rank in range(2):
            share = Subset(val_set, list(range(rank, len(val_set), 2)))
            result = evaluate(
                model, DataLoader(share, batch_size=batch_size), NUM_CLASSES, torch.device("cpu")
            )
            total.mat += torch.tensor(result["confusion"])
    finally:
        torch.set_num_threads(threads)
    return {**total.compute(), "confusion": total.mat.tolist()}


def _single_process_fit(overrides: list[str], monkeypatch, **net) -> None:
    import fcn.models
    import fcn.training.loop

    monkeypatch.setattr(fcn.models, "build_model", lambda model_cfg: TinyNet(model_cfg.num_classes, **net))
    fcn.training.loop.fit(load_config(overrides=overrides))


@pytest.mark.slow
def test_two_processes_equal_one_process_with_the_global_batch(ddp_runs, toy_root, tmp_path, monkeypatch):
    out, run_dir = ddp_runs["out"], Path(ddp_runs["runs"]["dp"]["run_dir"])
    rank0 = _assert_ranks_identical(out, "dp")
    saved = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)
    assert saved["iteration"] == 3
    for key, value in rank0.items():
        assert torch.equal(value, saved["model"][key])

    single = tmp_path / "single"
    _single_process_fit(_tiny(toy_root, single, "data.batch_size=4", *DP_EXTRA), monkeypatch)
    reference = torch.load(single / "checkpoints" / "last.pt", weights_only=True)
    torch.manual_seed(0)  # training.seed: the start, to show that both runs trained
    start = TinyNet().state_dict()
    for key, value in reference["model"].items():
        # the same gradient sums in another order (see DP_EXTRA): fp32 rounding (~1e-7 relative)
        torch.testing.assert_close(rank0[key], value, rtol=1e-4, atol=1e-6)
        assert not torch.equal(value, start[key])
    # the logged training loss is the loss of the whole global batch, not rank 0's share of it
    logged = json.loads((run_dir / "metrics.jsonl").read_text().splitlines()[-1])["train_loss"]
    expected = json.loads((single / "metrics.jsonl").read_text().splitlines()[-1])["train_loss"]
    assert logged == pytest.approx(expected, rel=1e-4)


@pytest.mark.slow
def test_only_the_primary_process_logs_to_the_trackers(ddp_runs):
    pytest.importorskip("mlflow")
    from mlflow import MlflowClient

    base, run_dir = ddp_runs["base"], Path(ddp_runs["runs"]["dp"]["run_dir"])
    client = MlflowClient(f"sqlite:///{base / 'mlflow.db'}")
    (run,) = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert [m.step for m in client.get_metric_history(run.info.run_id, "train/loss")] == [1, 2, 3]
    assert len(list(run_dir.glob("events.out.tfevents.*"))) == 1


@pytest.mark.slow
def test_ranks_end_with_identical_weights_and_batchnorm_buffers(ddp_runs):
    state = _assert_ranks_identical(ddp_runs["out"], "bn")
    assert state["norm.num_batches_tracked"].item() == 2


@pytest.mark.slow
def test_distributed_evaluation_of_an_odd_sized_set_equals_single_process(ddp_runs):
    from fcn.data import build_dataset
    from fcn.data.transforms import build_transforms

    run = ddp_runs["runs"]["bn"]
    cfg = load_config(overrides=run["overrides"])
    val_set = build_dataset(cfg.data.val, cfg.data, build_transforms(cfg.data.transforms, train=False))
    assert len(val_set) % 2 == 1
    model = TinyNet(bn=True)
    saved = torch.load(Path(run["run_dir"]) / "checkpoints" / "last.pt", weights_only=True)
    model.load_state_dict(saved["model"])
    single = _evaluate_as_the_workers(model, val_set, cfg.data.val_batch_size)
    confusion = json.loads((ddp_runs["out"] / "bn.confusion.json").read_text())
    assert confusion == single["confusion"]
    assert sum(map(sum, confusion)) == sum(int((m != 255).sum()) for _, m in val_set)
    # fit()'s own evaluation at the end of the run is exact too (every rank evaluates rank 0's buffers)
    record = json.loads((Path(run["run_dir"]) / "metrics.jsonl").read_text().splitlines()[-1])
    for key in ("pixel_acc", "mean_acc", "mean_iou", "fwavacc"):
        assert record[key] == single[key], key


@pytest.mark.slow
def test_ctrl_c_on_one_rank_stops_every_rank_at_the_same_iteration(ddp_runs):
    out = ddp_runs["output"]
    assert "run stopped rank 0 exit 0" in out and "run stopped rank 1 exit 0" in out
    assert "interrupted: saved" in out and "at iteration 3" in out
    assert torch.load(ddp_runs["out"] / "stopped.pt", weights_only=True)["iteration"] == 3
    _assert_ranks_identical(ddp_runs["out"], "stopped")


@pytest.mark.slow
def test_resume_under_torchrun_equals_the_uninterrupted_run(ddp_runs):
    out, runs = ddp_runs["out"], ddp_runs["runs"]
    assert "resumed from" in ddp_runs["output"] and "at iteration 3 (epoch 0, batch 3)" in ddp_runs["output"]
    straight = _assert_ranks_identical(out, "straight")
    resumed = _assert_ranks_identical(out, "resumed")
    for key, value in straight.items():
        assert torch.equal(value, resumed[key]), key
    a = torch.load(Path(runs["straight"]["run_dir"]) / "checkpoints" / "last.pt", weights_only=True)
    b = torch.load(Path(runs["resumed"]["run_dir"]) / "checkpoints" / "last.pt", weights_only=True)
    assert a["iteration"] == b["iteration"] == 7 and a["epoch"] == 1
    for key, value in a["model"].items():
        assert torch.equal(value, b["model"][key]), key
    assert len(b["rng_ranks"]) == 2 and not torch.equal(
        b["rng_ranks"][0]["torch"], b["rng_ranks"][1]["torch"]
    )


@pytest.mark.slow
def test_resume_with_another_number_of_processes_keeps_the_data_position(
    ddp_runs, toy_root, tmp_path, monkeypatch, capsys
):
    # 3 steps x 2 processes x batch 2 = 12 images of epoch 0 seen: one process with batch 2 goes on at batch 6
    extra = [x for x in RESUME_EXTRA if not x.startswith("training.iters")]
    overrides = _tiny(
        toy_root,
        tmp_path / "one",
        *extra,
        "training.iters=4",
        f"training.resume={ddp_runs['out'] / 'stopped.pt'}",
    )
    _single_process_fit(overrides, monkeypatch, dropout=0.5)
    captured = capsys.readouterr()
    assert "at iteration 3 (epoch 0, batch 6)" in captured.out + captured.err


@pytest.mark.slow
def test_ranks_resuming_from_different_positions_stop_with_an_error(ddp_runs):
    out = ddp_runs["output"]
    assert (
        "run mismatch rank 0 exit 2" in out and "run mismatch rank 1 exit 2" in out
    )  # found before training
    assert "error: rank 1: training.resume: the processes would start at different" in out
    assert not (ddp_runs["base"] / "elsewhere").exists()


@pytest.mark.slow
def test_sync_bn_on_the_cpu_is_a_one_line_error(ddp_runs):
    out = ddp_runs["output"]
    assert "run syncbn rank 0 exit 2" in out and "run syncbn rank 1 exit 2" in out
    assert "training.sync_bn" in out


@pytest.mark.slow
def test_torchrun_train_py_trains_and_only_rank_0_writes_files(toy_root, tmp_path):
    from fcn.data import build_dataset
    from fcn.data.transforms import build_transforms
    from fcn.models import build_model

    run = tmp_path / "run"
    overrides = toy_overrides(toy_root, run, "data.batch_size=2", "training.iters=4", "training.eval_every=2")
    code, out, _ = _torchrun([str(REPO / "train.py"), *overrides])
    assert code == 0, out[-4000:]
    assert out.count("effective batch 2 x 1 accumulated x 2 processes = 4") == 1  # rank 1 is quiet
    assert out.count("iteration 4/4 (epoch 0)") == 1
    files = sorted(str(p.relative_to(run)) for p in run.rglob("*") if p.is_file())
    events = [f for f in files if f.startswith("events.out.tfevents.")]
    assert len(events) == 1  # one SummaryWriter: rank 0's
    assert sorted(set(files) - set(events)) == [
        "checkpoints/best.pt",
        "checkpoints/last.pt",
        "config.yml",
        "metrics.jsonl",
        "vis/iter_0000002.png",
        "vis/iter_0000004.png",
    ]
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in records] == [2, 4]
    # the run's distributed evaluation (BatchNorm backbone) equals a single-process one of last.pt
    cfg = load_config(overrides=[*overrides, "model.pretrained=false"])
    model = build_model(cfg.model)
    model.load_state_dict(torch.load(run / "checkpoints" / "last.pt", weights_only=True)["model"])
    val_set = build_dataset(cfg.data.val, cfg.data, build_transforms(cfg.data.transforms, train=False))
    single = _evaluate_as_the_workers(model, val_set, cfg.data.val_batch_size)
    for key in ("pixel_acc", "mean_acc", "mean_iou", "fwavacc"):
        assert records[-1][key] == single[key], key


@pytest.mark.slow
def test_a_failing_rank_fails_the_run_with_its_message(toy_root, tmp_path):
    spec = {"overrides": _tiny(toy_root, tmp_path / "run", "training.iters=5"), "fail_rank": 1, "fail_at": 1}
    code, out, seconds = _torchrun_child("fail", spec, tmp_path / "spec.json")
    assert code != 0
    assert "error: rank 1: injected failure on rank 1 at iteration 2" in out
    assert seconds < TIMEOUT


def test_helpers_alone_are_a_world_of_one(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    info = distributed.env_info()
    assert (info.rank, info.world_size, info.is_primary, info.enabled) == (0, 1, True, False)
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert distributed.env_info() == distributed.DistInfo(rank=3, local_rank=1, world_size=4)
    assert distributed.all_gather_object({"a": 1}) == [{"a": 1}]
    tensor = torch.ones(2)
    assert distributed.all_reduce_sum(tensor) is tensor and tensor.tolist() == [1.0, 1.0]


if __name__ == "__main__" and sys.argv[1:2] == ["child"]:
    sys.exit(_child(sys.argv[2:]))


# ----------------------------------------------------------------------------- predict.py and evaluate.py


@pytest.fixture(scope="module")
def infer_ckpt(toy_root, tmp_path_factory) -> tuple[Path, list[str]]:
    """A tiny model's checkpoint for the toy classes, and the overrides that evaluate it on toy_root."""
    from fcn.core.checkpoint import save_checkpoint, weights_checkpoint
    from fcn.data.toy import TOY_CLASSES
    from fcn.models import build_model

    data = ["data.val.name=folder", f"data.val.root={toy_root}", "data.val.split=val", "data.num_workers=0"]
    cfg = load_config(
        overrides=[
            *data,
            f"data.classes=[{','.join(TOY_CLASSES)}]",
            f"model.num_classes={len(TOY_CLASSES)}",
            "model.arch=fcn32s",
            "model.backbone=mobilenet_v3_large",
            "model.geometry=same",
            "model.upsampling=bilinear",
            "model.pretrained=false",
        ]
    )
    torch.manual_seed(0)
    model = build_model(cfg.model).eval()
    path = tmp_path_factory.mktemp("infer") / "best.pt"
    from fcn.config import to_dict

    save_checkpoint(weights_checkpoint(model=model, config=to_dict(cfg)), path)
    return path, [*data, "data.val_batch_size=2"]


def _predict_inputs(toy_root: Path) -> list[str]:
    # 31 images (odd: one process gets one more) and a second 'val_00000' (a clash of output names)
    return [str(toy_root / "JPEGImages"), str(toy_root / "SegmentationClass" / "val_00000.png")]


def _files(folder: Path) -> dict[str, bytes]:
    return {
        p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
    }


@pytest.mark.slow
def test_torchrun_predict_writes_the_bytes_of_one_process(infer_ckpt, toy_root, tmp_path):
    from predict import main as predict_main

    ckpt, _ = infer_ckpt
    common = [
        "--checkpoint",
        str(ckpt),
        "--input",
        *_predict_inputs(toy_root),
        "--device",
        "cpu",
        "--no-progress",
    ]
    assert predict_main([*common, "--output", str(tmp_path / "one")]) == 0
    code, out, _ = _torchrun([str(REPO / "predict.py"), *common, "--output", str(tmp_path / "two")])
    assert code == 0, out[-3000:]
    one, two = _files(tmp_path / "one"), _files(tmp_path / "two")
    assert len(one) == 32 * 4 and "val_00000_jpg_overlay.png" in one and "val_00000_png.png" in one
    assert sorted(two) == sorted(one)
    assert [name for name in one if one[name] != two[name]] == []
    assert out.count("wrote 32 image(s)") == 1, out[-3000:]  # rank 0 reports the run's total, once


@pytest.mark.slow
def test_torchrun_evaluate_reports_the_metrics_of_one_process(infer_ckpt, tmp_path):
    from evaluate import main as evaluate_main

    ckpt, data = infer_ckpt
    one, two = tmp_path / "one", tmp_path / "two"
    for folder in (one, two):
        folder.mkdir()

    def argv(folder: Path) -> list[str]:
        return [
            "--checkpoint", str(ckpt), *data, "--device", "cpu", "--no-progress", "--output", str(folder / "val.json"),
            "--per-image", str(folder / "rows.csv"), "--save-predictions", str(folder / "preds"),
        ]  # fmt: skip

    assert evaluate_main(argv(one)) == 0
    code, out, _ = _torchrun([str(REPO / "evaluate.py"), *argv(two)])
    assert code == 0, out[-3000:]
    report = json.loads((one / "val.json").read_text())
    assert report["num_images"] == 7 and len(report["confusion"]) == 4
    assert json.loads((two / "val.json").read_text()) == report
    assert (two / "rows.csv").read_text() == (one / "rows.csv").read_text()  # every image's row, in order
    assert _files(two / "preds") == _files(one / "preds")  # each process wrote its share
    assert out.count(f"wrote {two / 'val.json'}") == 1, out[-3000:]


def test_predict_resume_skips_the_images_whose_outputs_are_complete(infer_ckpt, toy_root, tmp_path, capsys):
    from predict import main as predict_main

    ckpt, _ = infer_ckpt
    out = tmp_path / "out"
    inputs = [str(toy_root / "JPEGImages" / f"val_0000{i}.jpg") for i in range(4)]
    argv = [
        "--checkpoint",
        str(ckpt),
        "--input",
        *inputs,
        "--output",
        str(out),
        "--device",
        "cpu",
        "--no-progress",
    ]
    assert predict_main(argv) == 0
    written = _files(out)
    (out / "val_00001_legend.png").unlink()  # stopped before its last file: incomplete
    for path in out.glob("val_00002*"):
        path.unlink()  # never reached
    past = time.time() - 3600
    for path in out.iterdir():
        os.utime(path, (past, past))
    capsys.readouterr()
    assert predict_main([*argv, "--resume"]) == 0
    printed = capsys.readouterr().out
    assert "wrote 2 image(s)" in printed and "2 skipped" in printed
    assert _files(out) == written
    fresh = sorted(p.name for p in out.iterdir() if p.stat().st_mtime > past + 1)
    assert fresh == [
        f"val_0000{i}{kind}.png" for i in (1, 2) for kind in ("", "_color", "_legend", "_overlay")
    ]
