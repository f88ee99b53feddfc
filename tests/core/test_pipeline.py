"""fcn.core.pipeline: reading ahead in order with failures in place, writing behind with a bounded
queue and the first failure raised; and the start-up of inference without torchvision."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

import pytest

from fcn.core.pipeline import Behind, NetworkThreads, iterate_ahead, read_ahead
from tests.helpers import REPO, python_env


def _read(n: int) -> int:
    if n % 3 == 1:
        raise ValueError(f"item {n} is unreadable")
    time.sleep(0.001 * (n % 2))  # finish out of order in the background
    return n * n


@pytest.mark.parametrize("depth", [0, 1, 3])
def test_read_ahead_yields_in_order_with_failures_in_place(depth):
    got = list(read_ahead(range(8), _read, depth=depth, errors=(ValueError,)))
    assert [item for item, _, _ in got] == list(range(8))
    for item, value, exc in got:
        if item % 3 == 1:
            assert value is None and isinstance(exc, ValueError) and f"item {item}" in str(exc)
        else:
            assert value == item * item and exc is None


def test_read_ahead_raises_errors_it_was_not_told_to_yield():
    def read(n):
        raise KeyError(n)

    with pytest.raises(KeyError):
        list(read_ahead(range(3), read, depth=2, errors=(ValueError,)))


def test_read_ahead_reads_at_most_depth_items_ahead_and_stops_with_the_caller():
    started = []

    def read(n):
        started.append(n)
        return n

    gen = read_ahead(range(100), read, depth=2)
    assert next(gen)[0] == 0
    time.sleep(0.05)
    assert len(started) <= 4  # the one yielded, the depth read ahead, one being submitted
    gen.close()
    time.sleep(0.05)
    assert len(started) <= 4


def test_behind_keeps_at_most_its_queue_and_finishes_every_call():
    running, peak, done = [0], [0], []
    lock = threading.Lock()

    def work(n):
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        time.sleep(0.005)
        with lock:
            running[0] -= 1
            done.append(n)

    with Behind(workers=2, queue=3) as behind:
        for n in range(12):
            behind.submit(work, n)
            assert len(behind._pending) <= 3
    assert sorted(done) == list(range(12)) and peak[0] <= 2


def test_behind_raises_the_first_failure_after_the_calls_queued_before_it_finished():
    done = []

    def work(n):
        time.sleep(0.002)
        if n == 2:
            raise OSError("disk full at 2")
        done.append(n)

    with pytest.raises(OSError, match="disk full at 2"), Behind(workers=1, queue=2) as behind:
        for n in range(10):
            behind.submit(work, n)
    assert {0, 1} <= set(done) and max(done) < 2 + 3  # it stopped within a queue's length


def test_behind_with_no_workers_runs_each_call_at_once():
    done = []
    behind = Behind(workers=0)
    behind.submit(done.append, 1)
    assert done == [1]
    with pytest.raises(ZeroDivisionError):
        behind.submit(lambda: 1 / 0)


@pytest.mark.skipif(not hasattr(os, "setpriority"), reason="no per-thread priorities on this OS")
def test_behind_runs_its_calls_at_lower_priority_by_nice_and_predict_files_asks_write_nice(
    setup,
    tmp_path,
    monkeypatch,
):
    import numpy as np
    from PIL import Image

    import fcn.files
    from fcn.api import Segmenter
    from fcn.core.pipeline import WRITE_NICE
    from fcn.files import predict_files

    def priority() -> int:
        return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())

    base = priority()
    seen: list[int] = []
    with Behind(workers=2, nice=3) as behind:
        for _ in range(4):
            behind.submit(lambda: seen.append(priority()))
    assert seen == [min(base + 3, 19)] * 4
    assert priority() == base  # the caller's thread is untouched

    write = fcn.files.write_outputs
    monkeypatch.setattr(fcn.files, "write_outputs", lambda *a, **k: (seen.append(priority()), write(*a, **k)))
    seen.clear()
    path = tmp_path / "a.png"
    Image.fromarray(np.zeros((24, 20, 3), np.uint8)).save(path)
    assert (
        predict_files(
            Segmenter.from_checkpoint(setup[2], device="cpu"), [path, path], tmp_path / "out", progress=False
        )[0]
        == 2
    )
    assert seen == [min(base + WRITE_NICE, 19)] * 2


def test_the_cached_legend_bytes_are_save_pngs(tmp_path):
    import numpy as np

    from fcn.core.visualize import legend, save_png
    from fcn.files import _legend_png

    palette = np.random.default_rng(0).integers(0, 256, (256, 3)).astype(np.uint8)
    for present in [(), (0,), (0, 2), (1, 2)]:
        save_png(legend(list(present), ["a", "b", "c"], palette), tmp_path / "l.png", durable=False)
        assert _legend_png(present, ("a", "b", "c"), palette.tobytes()) == (tmp_path / "l.png").read_bytes()


_SEGMENT = """
import sys
import numpy as np
import torch
from fcn.config import load_config, to_dict
from fcn.core.checkpoint import save_checkpoint, weights_checkpoint
from fcn.models import build_model
cfg = load_config(overrides=["model.arch=fcn8s", "model.backbone=resnet18", "model.geometry=same",
                             "model.pretrained=false", "data.classes=[a,b,c]"])
save_checkpoint(weights_checkpoint(model=build_model(cfg.model), config=to_dict(cfg)), sys.argv[1])
assert "torchvision" not in sys.modules, "building a ResNet FCN imported torchvision"
from fcn.api import Segmenter
seg = Segmenter.from_checkpoint(sys.argv[1], device="cpu", fast_path="none")
mask = seg(np.zeros((40, 50, 3), np.uint8))
assert mask.shape == (40, 50)
heavy = [m for m in ("torchvision", "torch._dynamo", "timm", "onnx", "tensorboard", "scipy") if m in sys.modules]
print("heavy:", heavy)
"""


def test_segmenting_with_a_resnet_checkpoint_imports_no_torchvision_nor_compiler(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-c", _SEGMENT, str(tmp_path / "ckpt.pt")],
        env=python_env(OMP_NUM_THREADS="1"),
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "heavy: []" in proc.stdout, proc.stdout


class _Clock:
    """time.perf_counter for NetworkThreads: each iteration lasts what the thread count set makes it."""

    def __init__(self, seconds: dict[int, float]) -> None:
        self.now, self.seconds, self.threads, self.history = 0.0, seconds, 4, []

    def perf_counter(self) -> float:
        return self.now

    def set(self, n: int) -> None:
        self.threads = n
        self.history.append(n)

    def iteration(self) -> None:
        self.now += self.seconds[self.threads]


@pytest.mark.parametrize(
    "seconds, kept", [({4: 1.0, 3: 0.7}, 3), ({4: 1.0, 3: 1.3}, 4), ({4: 1.0, 3: 1.0}, 4)]
)
def test_network_threads_tries_all_and_one_fewer_then_keeps_the_faster_and_restores(
    monkeypatch, seconds, kept
):
    import fcn.core.pipeline as pipeline

    clock = _Clock(seconds)
    monkeypatch.setattr(pipeline.time, "perf_counter", clock.perf_counter)
    with NetworkThreads(True, iterations=30, get=lambda: clock.threads, set=clock.set) as threads:
        for _ in range(30):
            threads.step()
            clock.iteration()
    # warm-up on all, then 2 x (2 on all, 2 on one fewer), then the faster for the rest (a tie: all)
    assert clock.history[:9] == [4, 4, 4, 3, 3, 4, 4, 3, 3]
    assert clock.history[9] == kept and threads.chosen == kept
    assert len(clock.history) == 11 and clock.history[-1] == 4  # set once more: back to 4 at the end


@pytest.mark.parametrize("enabled, full, iterations", [(False, 4, 30), (True, 1, 30), (True, 4, 17)])
def test_network_threads_changes_nothing_where_disabled_or_too_short(enabled, full, iterations):
    calls = []
    with NetworkThreads(enabled, iterations=iterations, get=lambda: full, set=calls.append) as threads:
        for _ in range(iterations):
            threads.step()
    assert calls == [] and threads.chosen == full


def test_predict_files_writes_the_same_bytes_and_gives_torch_its_threads_back(setup, tmp_path):
    """A folder long enough for NetworkThreads' trial: the files equal those of the unpipelined run
    byte for byte, and torch has the threads it had."""
    import numpy as np
    import torch
    from PIL import Image

    from fcn.api import Segmenter
    from fcn.files import predict_files

    files = []
    for i in range(18):
        path = tmp_path / f"{i:02d}.png"
        Image.fromarray(np.full((24, 20, 3), i * 12, np.uint8)).save(path)
        files.append(path)
    seg = Segmenter.from_checkpoint(setup[2], device="cpu")
    before = torch.get_num_threads()
    assert predict_files(seg, files, tmp_path / "piped", progress=False) == (18, [])
    assert torch.get_num_threads() == before
    predict_files(seg, files, tmp_path / "plain", progress=False, pipeline=False)
    written = sorted(p.name for p in (tmp_path / "plain").iterdir())
    assert len(written) == 4 * 18 and written == sorted(p.name for p in (tmp_path / "piped").iterdir())
    for name in written:
        assert (tmp_path / "piped" / name).read_bytes() == (tmp_path / "plain" / name).read_bytes(), name


def test_iterate_ahead_yields_in_order_and_raises_the_iterations_error_in_its_place():
    def frames():
        yield from range(5)
        raise RuntimeError("corrupt packet after frame 4")

    got = []
    with pytest.raises(RuntimeError, match="after frame 4"):
        for item in iterate_ahead(frames(), depth=2):
            got.append(item)
    assert got == list(range(5))


def test_iterate_ahead_stops_its_thread_when_the_caller_stops():
    produced = []

    def endless():
        n = 0
        while True:
            produced.append(n)
            yield n
            n += 1

    before = threading.active_count()
    gen = iterate_ahead(endless(), depth=3)
    assert [next(gen) for _ in range(4)] == [0, 1, 2, 3]
    gen.close()
    count = len(produced)
    time.sleep(0.1)
    assert len(produced) == count <= 4 + 3 + 1 and threading.active_count() == before


@pytest.mark.parametrize("name", ["resnet18", "resnet34", "resnet50", "resnet101"])
def test_resnet_trunk_is_torchvisions_in_names_outputs_and_seeded_draws(name):
    import torch
    import torchvision

    from fcn.models.resnet import ResNetTrunk

    torch.manual_seed(3)
    theirs = getattr(torchvision.models, name)(weights=None).eval()
    after_theirs = torch.rand(3)
    torch.manual_seed(3)
    ours = ResNetTrunk(name).eval()
    after_ours = torch.rand(3)
    reference = {k: v for k, v in theirs.state_dict().items() if not k.startswith("fc.")}
    state = ours.state_dict()
    assert list(state) == list(reference)
    assert all(torch.equal(state[k], reference[k]) for k in state)  # the same seeded initialisation
    assert torch.equal(after_ours, after_theirs)  # and the generator left where torchvision leaves it
    x = torch.randn(1, 3, 67, 93)
    with torch.no_grad():
        t = theirs
        expected = t.layer4(t.layer3(t.layer2(t.layer1(t.maxpool(t.relu(t.bn1(t.conv1(x))))))))
        assert torch.equal(ours(x), expected)
