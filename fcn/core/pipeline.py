"""Overlapping the work around the network with the network: the next inputs read and decoded
ahead, finished outputs encoded and written behind, each in background threads, while the caller's
thread runs the model.

Decoding (JPEG, PNG), PNG encoding (zlib) and NumPy's array work release the GIL, so on a machine
whose cores the network leaves idle between layers they run in parallel with it. Order is kept:
read_ahead yields results in the inputs' order, and a failed read is yielded in its place (not
raised), so a caller reports it where it belongs and goes on. Background writes that fail raise in
the caller's thread, at the next submit or at close, after the writes queued before them have
finished: what was written before a failure is whole.
"""

from __future__ import annotations

import collections
import os
import queue
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Callable, Iterable, Iterator, Tuple, TypeVar

WRITE_NICE = 10
"""How much lower the writing threads of predict.py, evaluate.py and videos run than the network
(Behind's nice): they fill the cores it leaves idle instead of slowing its parallel layers down."""

T = TypeVar("T")
R = TypeVar("R")


def read_ahead(
    items: Iterable[T],
    read: Callable[[T], R],
    *,
    depth: int = 2,
    errors: Tuple[type[BaseException], ...] = (Exception,),
) -> Iterator[tuple[T, R | None, BaseException | None]]:
    """Yield (item, read(item), None) for each item in order, read(item) computed up to depth items
    ahead in one background thread; (item, None, exception) where read raised one of errors (other
    exceptions propagate). depth=0 reads in the caller's thread, one item at a time."""
    if depth <= 0:
        for item in items:
            try:
                yield item, read(item), None
            except errors as exc:
                yield item, None, exc
        return
    pending: collections.deque[tuple[T, Future]] = collections.deque()
    source = iter(items)
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="fcn-read") as pool:
        try:
            for item in source:
                pending.append((item, pool.submit(read, item)))
                if len(pending) > depth:
                    yield _settled(*pending.popleft(), errors)
            while pending:
                yield _settled(*pending.popleft(), errors)
        finally:
            for _, future in pending:  # the caller stopped early: reads not started are dropped
                future.cancel()


def _settled(item: T, future: Future, errors: Tuple[type[BaseException], ...]) -> tuple:
    try:
        return item, future.result(), None
    except errors as exc:
        return item, None, exc


_END = object()


def iterate_ahead(iterable: Iterable[T], depth: int = 2) -> Iterator[T]:
    """Yield the items of iterable in order, the iteration itself (a decoder's next frame) run up to
    depth items ahead in a background thread; an exception it raises is raised here, in its place.
    Stopping early (close, break) stops the background thread."""
    items: queue.Queue = queue.Queue(maxsize=max(1, depth))
    stop = threading.Event()

    def put(entry: tuple) -> bool:
        while not stop.is_set():
            try:
                items.put(entry, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def run() -> None:
        try:
            for item in iterable:
                if not put((item, None)):
                    return
            put((_END, None))
        except BaseException as exc:  # noqa: BLE001 (raised in the caller's thread)
            put((_END, exc))

    thread = threading.Thread(target=run, name="fcn-read", daemon=True)
    thread.start()
    try:
        while True:
            item, exc = items.get()
            if item is _END:
                if exc is not None:
                    raise exc
                return
            yield item
    finally:
        stop.set()
        thread.join()


class Behind:
    """Run calls in background threads, at most `queue` waiting or running at a time (submit blocks
    until one finishes): a bounded queue of writes behind the caller. The first failure is raised
    in the caller's thread by the next submit or by close(); close() (or leaving a with block)
    waits for every call queued. workers=0 runs each call at once in the caller's thread."""

    def __init__(
        self, workers: int = 1, queue: int | None = None, name: str = "fcn-write", nice: int = 0
    ) -> None:
        self._pool = (
            ThreadPoolExecutor(
                max_workers=workers, thread_name_prefix=name, initializer=_renice, initargs=(nice,)
            )
            if workers > 0
            else None
        )
        self._limit = max(1, queue if queue is not None else 2 * workers)
        self._pending: collections.deque[Future] = collections.deque()

    def submit(self, call: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        """Queue call(*args, **kwargs); raise the first failure of an earlier call, if any."""
        if self._pool is None:
            call(*args, **kwargs)
            return
        self._raise_done()
        while len(self._pending) >= self._limit:
            self._pending.popleft().result()
        self._pending.append(self._pool.submit(call, *args, **kwargs))

    def _raise_done(self) -> None:
        while self._pending and self._pending[0].done():
            self._pending.popleft().result()

    def close(self) -> None:
        """Wait for every queued call; raise the first failure (after all have finished)."""
        if self._pool is None:
            return
        first: BaseException | None = None
        try:
            for future in self._pending:
                try:
                    future.result()
                except BaseException as exc:  # noqa: BLE001 (re-raised below, after the others finish)
                    first = first or exc
        finally:
            self._pending.clear()
            self._pool.shutdown(wait=True)
        if first is not None:
            raise first

    def __enter__(self) -> Behind:
        return self

    def __exit__(self, kind, exc, tb) -> None:
        if exc is None:
            self.close()
            return
        # The caller failed: finish what is queued (files stay whole), keep the caller's error.
        if self._pool is not None:
            self._pool.shutdown(wait=True)


def _renice(nice: int) -> None:
    """Lower the calling thread's priority by nice (where the OS has per-thread priorities)."""
    if nice > 0 and hasattr(os, "setpriority") and hasattr(threading, "get_native_id"):
        try:
            tid = threading.get_native_id()
            os.setpriority(os.PRIO_PROCESS, tid, os.getpriority(os.PRIO_PROCESS, tid) + nice)
        except OSError:
            pass


class NetworkThreads:
    """Choose, by trying, how many threads the network runs on while background threads read and
    write beside it: all the intra-op threads torch has (or ``get()`` returns), or one fewer, which leaves a
    core to the readers and writers instead of letting them preempt the network's parallel layers.

    Which is faster depends on the model, the fast path and the machine (2 cores: a bf16 ResNet-18
    gains from a core left to the PNG encoder, fp32 loses more in its layers; docs/performance.md),
    so it is measured on the work itself. Call step() once an iteration, just before the network
    runs: the first `warmup` iterations run on all threads, then blocks of `block` iterations
    alternate all, fewer, all, fewer, each iteration timed from step to step (waiting for a read,
    the network, queueing the writes), and the count with the smaller total is kept for the rest.
    close() puts the count back as it was. Results do not depend on the count, only the time does.

    Disabled (a GPU, an engine with threads of its own, one thread, or fewer iterations than twice
    the trial) it changes nothing."""

    def __init__(
        self,
        enabled: bool,
        iterations: int | None = None,
        warmup: int = 1,
        block: int = 2,
        get: Callable[[], int] | None = None,
        set: Callable[[int], None] | None = None,
    ) -> None:
        if get is None or set is None:  # torch's intra-op threads (get/set: another pool, or a test's)
            import torch

            get, set = torch.get_num_threads, torch.set_num_threads
        self._set = set
        self.full = get()
        fewer = self.full - 1
        self._plan = [self.full] * warmup + ([self.full] * block + [fewer] * block) * 2
        self.enabled = enabled and self.full > 1 and (iterations is None or iterations >= 2 * len(self._plan))
        self._totals = {self.full: 0.0, fewer: 0.0}
        self._step = 0
        self._last = 0.0
        self._warmup = warmup
        self.chosen: int = self.full
        """The count kept (all threads until the trial ends, and where disabled)."""

    def step(self) -> None:
        """Mark the start of an iteration (before its network run)."""
        if not self.enabled or self._step > len(self._plan):
            return
        now = time.perf_counter()
        if self._step > self._warmup:  # the iteration that just ended was a trial one
            self._totals[self._plan[self._step - 1]] += now - self._last
        if self._step == len(self._plan):  # the trial is over: keep the faster (all threads on a tie)
            self.chosen = min(self._totals, key=lambda n: (self._totals[n], -n))
            self._set(self.chosen)
        else:
            self._set(self._plan[self._step])
        self._step += 1
        self._last = time.perf_counter()

    def close(self) -> None:
        """Give torch back the thread count it had."""
        if self.enabled:
            self._set(self.full)

    def __enter__(self) -> NetworkThreads:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def background_threads() -> int:
    """Return how many background threads predict.py and evaluate.py write with: 2 (1 on a one-core
    machine). At photo sizes one image's PNGs take as long as its network run or longer (the
    overlay's zlib alone is 30-55 ms at 500x500), so on 2 cores a second writer, at WRITE_NICE, keeps
    both cores busy where one writer left the network waiting on the queue (predict.py over 24
    photos: bf16 1.97 -> 1.78 s, ONNX Runtime 3.27 -> 2.89 s; docs/performance.md)."""
    return 1 if (os.cpu_count() or 1) <= 1 else 2
