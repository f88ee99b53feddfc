"""Bad input and failures seen by a user: each is one 'error:' line naming the file or key, with the
exit code of fcn/cli.py (2 before work starts, 1 during it), under num_workers 0 and 2, and nothing
complete is lost."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import evaluate
import predict
import train
from fcn.config import load_config, to_dict
from fcn.core.checkpoint import CheckpointError, load_checkpoint, save_checkpoint, weights_checkpoint
from fcn.core.files import WriteError
from fcn.data.loaders import DataLoader
from tests.helpers import python_env

REPO = Path(__file__).resolve().parents[2]
CLASSES = ["background", "bright", "dark"]
SIZE = 24  # (H, W) of every image


def _write_dataset(root: Path, n: int = 4) -> list[str]:
    """Write a VOC-layout folder dataset of n pairs (split 'all'); return the ids."""
    rng = np.random.default_rng(0)
    for sub in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    ids = [f"img_{i}" for i in range(n)]
    for name in ids:
        mask = np.zeros((SIZE, SIZE), np.uint8)
        mask[4:12, 4:12], mask[14:20, 10:22] = 1, 2
        image = rng.integers(100, 156, (SIZE, SIZE, 3)).astype(np.uint8)
        image[mask == 1], image[mask == 2] = 240, 15
        Image.fromarray(image).save(root / "JPEGImages" / f"{name}.jpg", quality=95)
        Image.fromarray(mask).save(root / "SegmentationClass" / f"{name}.png")
    (root / "ImageSets" / "Segmentation" / "all.txt").write_text("\n".join(ids) + "\n")
    return ids


def _overrides(root: Path, run_dir: Path, workers: int, *extra: str) -> list[str]:
    return [
        "model.arch=fcn32s",
        "model.backbone=resnet18",
        "model.geometry=same",
        "model.pretrained=false",
        f"model.num_classes={len(CLASSES)}",
        f"data.classes=[{','.join(CLASSES)}]",
        *(f"data.{s}.{k}={v}" for s in ("train", "val") for k, v in (("name", "folder"), ("root", root))),
        "data.train.split=all",
        "data.val.split=all",
        "data.batch_size=2",
        f"data.num_workers={workers}",
        f"data.transforms.crop_size={SIZE}",
        "data.transforms.max_shift=0",
        "training.iters=2",
        "training.eval_every=2",
        "training.vis_images=0",
        "training.device=cpu",
        f"training.run_dir={run_dir}",
        *extra,
    ]


def _one_error(err: str) -> str:
    """Return the one 'error:' line of a command's stderr (progress bars may share it)."""
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, err
    assert "Traceback" not in err and "Caught" not in err and "worker process" not in err, err
    return lines[0]


def _break(root: Path, fault: str) -> Path:
    """Plant one fault in the dataset's last pair; return the file it is in."""
    image, mask = root / "JPEGImages" / "img_3.jpg", root / "SegmentationClass" / "img_3.png"
    if fault == "truncated":
        image.write_bytes(image.read_bytes()[:200])
        return image
    if fault == "text":
        image.write_text("this is not a picture\n")
        return image
    if fault == "size":
        Image.fromarray(np.zeros((SIZE, SIZE + 3), np.uint8)).save(mask)
        return mask
    if fault == "label":
        Image.fromarray(np.full((SIZE, SIZE), 7, np.uint8)).save(mask)
        return mask
    raise AssertionError(fault)


REASONS = {
    "truncated": "cannot read the image",
    "text": "cannot read the image",
    "size": "masks must match their images",
    "label": "labels [7] are outside 0..2",
}


@pytest.mark.slow
@pytest.mark.parametrize("workers", [0, 2])
@pytest.mark.parametrize("fault", list(REASONS))
def test_a_broken_file_met_in_training_is_one_line_naming_it(tmp_path, capsys, fault, workers):
    root = tmp_path / "data"
    _write_dataset(root)
    bad = _break(root, fault)
    code = train.main(_overrides(root, tmp_path / "run", workers))
    line = _one_error(capsys.readouterr().err)
    assert code == 1  # met during the work
    assert str(bad) in line and REASONS[fault] in line


@pytest.mark.slow
@pytest.mark.parametrize("workers", [0, 2])
def test_evaluate_on_labels_beyond_the_checkpoints_classes_names_the_mask(tmp_path, capsys, workers):
    root = tmp_path / "data"
    _write_dataset(root)
    cfg = load_config(overrides=_overrides(root, tmp_path / "run", workers))
    from fcn.models import build_model

    ckpt = tmp_path / "best.pt"
    save_checkpoint(weights_checkpoint(model=build_model(cfg.model), config=to_dict(cfg)), ckpt)
    bad = _break(root, "label")
    code = evaluate.main(["--checkpoint", str(ckpt), "--device", "cpu", "--no-progress"])
    line = _one_error(capsys.readouterr().err)
    assert code == 1 and str(bad) in line and "labels [7]" in line


class _Failing:
    def __len__(self) -> int:
        return 6

    def __getitem__(self, index: int) -> torch.Tensor:
        if index == 4:
            raise FileNotFoundError(f"/data/img{index}.jpg: file not found")
        return torch.zeros(2)


@pytest.mark.parametrize("workers", [0, 2])
def test_the_loader_re_raises_a_worker_error_as_the_dataset_raised_it(workers):
    with pytest.raises(FileNotFoundError) as info:
        list(DataLoader(_Failing(), batch_size=2, num_workers=workers))
    assert str(info.value) == "/data/img4.jpg: file not found"


def test_a_config_file_that_is_not_utf8_is_named_and_exits_2(tmp_path, capsys):
    bad = tmp_path / "latin1.yml"
    bad.write_bytes("# caf\xe9 au lait\ntraining:\n  iters: 3\n".encode("latin-1"))
    assert train.main(["--config", str(bad)]) == 2
    line = _one_error(capsys.readouterr().err)
    assert str(bad) in line and "not UTF-8" in line and "0xe9" in line


@pytest.mark.slow
@pytest.mark.parametrize("workers", [0, 2])
def test_a_split_file_saved_as_utf16_is_named_and_exits_2(tmp_path, capsys, workers):
    root = tmp_path / "data"
    ids = _write_dataset(root)
    split = root / "ImageSets" / "Segmentation" / "all.txt"
    split.write_text("\n".join(ids) + "\n", encoding="utf-16")
    assert train.main(_overrides(root, tmp_path / "run", workers)) == 2
    line = _one_error(capsys.readouterr().err)
    assert str(split) in line and "UTF-16" in line
    assert not (tmp_path / "run").exists()  # found before any work: nothing written


def test_init_from_where_nothing_fits_is_an_error_that_says_why(tmp_path, capsys):
    root = tmp_path / "data"
    _write_dataset(root)
    other = load_config(overrides=[*_overrides(root, tmp_path / "a", 0), "model.backbone=mobilenet_v3_large"])
    from fcn.models import build_model

    ckpt = tmp_path / "other.pt"
    save_checkpoint(weights_checkpoint(model=build_model(other.model), config=to_dict(other)), ckpt)
    code = train.main(_overrides(root, tmp_path / "run", 0, f"model.init_from={ckpt}"))
    line = _one_error(capsys.readouterr().err)
    assert code == 2 and "model.init_from" in line and str(ckpt) in line
    assert "none of the backbone" in line and "missing (e.g. backbone." in line
    assert not (tmp_path / "run").exists()


def test_a_checkpoint_of_a_newer_format_is_refused_in_one_line(tmp_path):
    path = tmp_path / "future.pt"
    torch.save({"version": 99, "model": {}, "config": {}}, path)
    with pytest.raises(CheckpointError, match="format version 99, newer than") as info:
        load_checkpoint(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


_FULL_DISK = """
import resource, signal, sys, torch
from fcn.core.checkpoint import save_checkpoint
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the write fails with EFBIG instead of killing us
limit = int(sys.argv[2])
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
save_checkpoint({"iteration": 2, "w": torch.zeros(4 * limit)}, sys.argv[1])
"""


def test_a_checkpoint_that_does_not_fit_on_disk_names_the_file_and_keeps_the_previous_one(tmp_path):
    path = tmp_path / "checkpoints" / "last.pt"
    save_checkpoint({"iteration": 1, "w": torch.ones(8)}, path)
    before = path.read_bytes()
    proc = subprocess.run(
        [sys.executable, "-c", _FULL_DISK, str(path), "100000"],
        env=python_env(OMP_NUM_THREADS="1"),
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode != 0
    last = proc.stderr.strip().splitlines()[-1]
    assert "WriteError: cannot write" in last and str(path) in last
    assert "File too large" in last and "the previous last.pt is intact" in last
    assert path.read_bytes() == before and os.listdir(path.parent) == ["last.pt"]


@pytest.mark.slow
def test_training_on_a_full_disk_exits_1_and_keeps_the_last_checkpoint(tmp_path):
    root = tmp_path / "data"
    _write_dataset(root)
    run = tmp_path / "run"
    args = [
        sys.executable,
        "train.py",
        *_overrides(root, run, 0, "training.iters=1", "training.eval_every=1"),
    ]
    first = subprocess.run(
        args, env=python_env(OMP_NUM_THREADS="1"), cwd=REPO, capture_output=True, text=True, check=False
    )
    assert first.returncode == 0, first.stderr
    last = run / "checkpoints" / "last.pt"
    size, before = last.stat().st_size, last.read_bytes()
    # The resumed run may write small files (events, metrics) but no checkpoint: as on a full disk.
    limit = f"import resource, signal; signal.signal(signal.SIGXFSZ, signal.SIG_IGN); resource.setrlimit(resource.RLIMIT_FSIZE, ({size // 2}, {size // 2}))"
    script = f"{limit}; import sys, train; sys.exit(train.main(sys.argv[1:]))"
    resumed = [sys.executable, "-c", script, *args[2:-2], "training.iters=2", "training.resume=auto"]
    proc = subprocess.run(
        resumed, env=python_env(OMP_NUM_THREADS="1"), cwd=REPO, capture_output=True, text=True, check=False
    )
    line = _one_error(proc.stderr)
    assert proc.returncode == 1
    assert (
        f"cannot write {last}" in line
        and "File too large" in line
        and "the previous last.pt is intact" in line
    )
    assert last.read_bytes() == before and load_checkpoint(last)["iteration"] == 1
    assert sorted(os.listdir(last.parent)) == ["best.pt", "last.pt"]  # no temporary file left


def test_predict_with_only_missing_inputs_says_nothing_was_done(tmp_path, capsys):
    root = tmp_path / "data"
    _write_dataset(root)
    cfg = load_config(overrides=_overrides(root, tmp_path / "run", 0))
    from fcn.models import build_model

    ckpt = tmp_path / "best.pt"
    save_checkpoint(weights_checkpoint(model=build_model(cfg.model), config=to_dict(cfg)), ckpt)
    missing = tmp_path / "nope.jpg"
    code = predict.main(["--checkpoint", str(ckpt), "--input", str(missing), "--output", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2 and str(missing) in err and "others were written" not in err
    assert "no input image to segment" in err and not (tmp_path / "o").exists()


def test_a_malicious_pickle_is_never_run_nor_advised_to_be_loaded_unsafely(tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    path = tmp_path / "evil.pth"
    torch.save({"score_fr.weight": Evil()}, path)
    proc = subprocess.run(
        [sys.executable, "-m", "fcn.models.reference", str(path), str(tmp_path / "out.pt")],
        env=python_env(OMP_NUM_THREADS="1"),
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    line = _one_error(proc.stderr)
    assert proc.returncode == 2 and str(path) in line
    assert "weights_only=False" not in line and "weights_only` set to `False" not in line
    assert not marker.exists() and not (tmp_path / "out.pt").exists()


def test_write_error_is_an_os_error():
    assert issubclass(WriteError, OSError)
