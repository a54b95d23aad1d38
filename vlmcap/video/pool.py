"""Decoding in worker processes that can hang or die without taking the run with them.

decord can hang inside native code while holding the GIL, and can abort the process on corrupt
input, so threads are not enough: each worker is a process with one task at a time. The parent
waits on the workers' pipes and process sentinels with a deadline; a worker past its deadline is
killed (SIGKILL), a dead one is noticed, and either way a fresh worker takes its place. The video
is then retried once with the fallback decoders (PyAV) before it is reported as failed. Workers
are also recycled after `max_tasks_per_worker` videos, because decord leaks memory.

With a segment plan a video comes back one segment at a time, and the deadline is per message:
`timeout_s` is the longest a worker may go without delivering a segment (or, while it detects
scenes, a sign of progress), so an hour-long file is not killed as a hang while a stuck decoder
still is. A retry resumes at the first segment not yet delivered.

Workers never run the parent's main script. multiprocessing's spawn and forkserver methods start
each child by running the parent's `__main__` again (as `__mp_main__`, unless it is a `python -m`
package's `__main__`), which is how a child finds functions defined there. A worker's target and
arguments are all vlmcap's, so it needs none of that; and a script with no
`if __name__ == "__main__":` guard (the README's Python API block saved as a file) would start a
whole run inside every worker, which then died before decoding anything. So the preparation data
of a decode worker leaves the main module out (`_without_main`).
"""

from __future__ import annotations

import functools
import logging
import multiprocessing as mp
import multiprocessing.spawn
import signal
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from multiprocessing.connection import Connection, wait

from vlmcap.errors import ConfigError
from vlmcap.video.decoders import DecodeOptions, available_decoders
from vlmcap.video.image_spec import ImageSpec
from vlmcap.video.segments import Segment, SegmentPlan
from vlmcap.video.spool import discard_worker_spool
from vlmcap.video.worker import PROGRESS, DecodeResult, worker_main

log = logging.getLogger(__name__)

_WORKER_MODULE = "vlmcap.video.worker"
WORKER_NAME = "vlmcap-decode"
# What multiprocessing's preparation data names the parent's main module by (CPython 3.4 to 3.14).
_MAIN_MODULE_KEYS = ("init_main_from_path", "init_main_from_name")


def _without_main(get_preparation_data: Callable[[str], dict]) -> Callable[[str], dict]:
    """`multiprocessing.spawn.get_preparation_data`, leaving the main module out for decode workers
    (the module docstring says why). Both start methods vlmcap uses (forkserver, spawn) call it through
    the module, once per child, with the child's name; every other process is left as it was."""

    @functools.wraps(get_preparation_data)
    def prepare(name: str) -> dict:
        data = get_preparation_data(name)
        if name == WORKER_NAME:
            for key in _MAIN_MODULE_KEYS:
                data.pop(key, None)
        return data

    prepare.vlmcap_without_main = True  # type: ignore[attr-defined]  -- installed once per process
    return prepare


if not getattr(multiprocessing.spawn.get_preparation_data, "vlmcap_without_main", False):
    multiprocessing.spawn.get_preparation_data = _without_main(multiprocessing.spawn.get_preparation_data)


def check_can_start_workers() -> None:
    """A daemonic process (a `multiprocessing.Pool` worker) may not start processes: say so before any
    work, instead of failing at the first video."""
    if mp.current_process().daemon:
        raise ConfigError(
            f"vlmcap cannot start its decode workers inside the daemonic process {mp.current_process().name!r} "
            "(a multiprocessing.Pool worker); call it from a multiprocessing.Process or a "
            "concurrent.futures.ProcessPoolExecutor instead"
        )


@dataclass
class _Task:
    index: int
    path: str
    decoders: tuple[str, ...]
    failures: list[str] = field(default_factory=list)
    first_segment: int = 0  # segments before it were delivered already
    window: Segment | None = None  # decode this time segment only (training on segments)


@dataclass
class _Worker:
    process: mp.process.BaseProcess
    conn: Connection
    tasks_done: int = 0
    task: _Task | None = None
    deadline: float = 0.0


def _signal_name(exitcode: int | None) -> str:
    if exitcode is not None and exitcode < 0:
        try:
            return f"signal {signal.Signals(-exitcode).name}"
        except ValueError:
            return f"signal {-exitcode}"
    return f"exit code {exitcode}"


class DecodePool:
    """`imap_unordered(items)` yields one DecodeResult per item (per segment, with a segment plan),
    in completion order. An item is a path, or `(path, window)` to sample frames inside `window`
    only (a labelled segment of a training manifest).

    At most `num_workers` videos are in flight, so memory stays flat however many paths come in.
    """

    def __init__(
        self,
        options: DecodeOptions | None = None,
        image_spec: ImageSpec | None = None,
        num_workers: int = 2,
        timeout_s: float = 60.0,
        max_tasks_per_worker: int = 200,
        start_method: str = "forkserver",
        segments: SegmentPlan | None = None,
    ) -> None:
        check_can_start_workers()
        options = options or DecodeOptions()
        self.options = replace(options, decoders=available_decoders(options.decoders))
        self.image_spec = image_spec
        self.num_workers = max(1, num_workers)
        self.timeout_s = timeout_s
        self.max_tasks_per_worker = max_tasks_per_worker
        self.segments = segments
        self._ctx = mp.get_context(start_method)
        if start_method == "forkserver":
            self._ctx.set_forkserver_preload([_WORKER_MODULE])
        self._workers: list[_Worker] = []
        self.stats = {"timeouts": 0, "crashes": 0, "retries": 0, "workers_started": 0}

    # -- worker lifecycle -------------------------------------------------------------------------

    def _start_worker(self) -> _Worker:
        parent, child = self._ctx.Pipe()
        process = self._ctx.Process(
            target=worker_main,
            args=(child, self.options, self.image_spec, self.segments),
            daemon=True,
            name=WORKER_NAME,
        )
        process.start()
        child.close()
        self.stats["workers_started"] += 1
        worker = _Worker(process, parent)
        self._workers.append(worker)
        return worker

    def _stop_worker(self, worker: _Worker, kill: bool) -> None:
        if not kill:
            try:
                worker.conn.send(None)
            except OSError:
                kill = True
        if kill:
            worker.process.kill()
        worker.process.join(timeout=5)
        if worker.process.is_alive():
            worker.process.kill()
            worker.process.join()
        worker.conn.close()
        # A worker killed mid-download (or mid-decode of a remote video) left its spool file.
        discard_worker_spool(self.options.remote, worker.process.pid)
        self._workers.remove(worker)

    def close(self) -> None:
        for worker in list(self._workers):
            self._stop_worker(worker, kill=worker.task is not None)

    def __enter__(self) -> DecodePool:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- scheduling -------------------------------------------------------------------------------

    def imap_unordered(self, paths: Iterable[str | tuple[str, Segment]]) -> Iterator[DecodeResult]:
        source = iter(enumerate(paths))
        retries: deque[_Task] = deque()
        exhausted = False
        while True:
            # Hand out work to idle workers: retries first, then new paths.
            for worker in self._idle_workers():
                if retries:
                    task = retries.popleft()
                elif not exhausted:
                    nxt = next(source, None)
                    if nxt is None:
                        exhausted = True
                        break
                    index, item = nxt
                    path, window = item if isinstance(item, tuple) else (item, None)
                    task = _Task(index, path, self.options.decoders, window=window)
                else:
                    break
                self._assign(worker, task)
            busy = [w for w in self._workers if w.task is not None]
            if not busy:
                if exhausted and not retries:
                    return
                continue
            timeout = max(0.0, min(w.deadline for w in busy) - time.monotonic())
            ready = set(wait([w.conn for w in busy] + [w.process.sentinel for w in busy], timeout=timeout))
            now = time.monotonic()
            for worker in busy:
                outcome = self._collect(worker, ready, now)
                if outcome is None:
                    continue
                if isinstance(outcome, DecodeResult):
                    yield outcome
                    continue
                retry = self._after_failure(worker.task, outcome)
                self._replace(worker)
                if isinstance(retry, _Task):
                    retries.append(retry)
                else:
                    yield retry

    def _idle_workers(self) -> list[_Worker]:
        idle = [w for w in self._workers if w.task is None]
        for worker in idle:
            if not worker.process.is_alive():  # died between tasks (OOM killer, ...): just replace it
                self._stop_worker(worker, kill=True)
            elif worker.tasks_done >= self.max_tasks_per_worker:
                self._stop_worker(worker, kill=False)  # recycle: decord leaks memory
        idle = [w for w in self._workers if w.task is None]
        while len(self._workers) < self.num_workers:
            idle.append(self._start_worker())
        return idle

    def _assign(self, worker: _Worker, task: _Task) -> None:
        worker.task = task
        worker.deadline = time.monotonic() + self.timeout_s
        worker.conn.send((task.index, task.path, task.decoders, task.first_segment, task.window))

    def _collect(self, worker: _Worker, ready: set, now: float) -> DecodeResult | tuple[str, str] | None:
        """A result, a failure (type, cause), or None while the worker is still within its deadline."""
        if worker.conn in ready:
            try:
                result = worker.conn.recv()
            except (EOFError, OSError):
                worker.process.join(timeout=1)
                return ("DecoderCrashed", f"decode worker died ({_signal_name(worker.process.exitcode)})")
            worker.deadline = now + self.timeout_s  # a sign of life: the next part has its own deadline
            if result == PROGRESS:
                return None
            if result.final:
                worker.task = None
                worker.tasks_done += 1
            else:
                worker.task.first_segment = result.segment.index + 1
            return result
        if worker.process.sentinel in ready or not worker.process.is_alive():
            worker.process.join(timeout=1)
            return ("DecoderCrashed", f"decode worker died ({_signal_name(worker.process.exitcode)})")
        if now >= worker.deadline:
            part = " a segment" if self.segments is not None else ""
            return ("DecodeTimeout", f"decoding{part} took longer than {self.timeout_s:g} s")
        return None

    def _after_failure(self, task: _Task, failure: tuple[str, str]) -> _Task | DecodeResult:
        kind, cause = failure
        self.stats["timeouts" if kind == "DecodeTimeout" else "crashes"] += 1
        task.failures.append(f"{task.decoders[0]}: {cause}")
        log.warning("%s: %s with %s", task.path, cause, task.decoders[0])
        if len(task.decoders) > 1:
            self.stats["retries"] += 1
            return _Task(task.index, task.path, task.decoders[1:], task.failures, task.first_segment, task.window)
        message = f"{task.path}: " + "; then ".join(task.failures)
        return DecodeResult(task.index, task.path, None, kind, message)

    def _replace(self, worker: _Worker) -> None:
        worker.task = None
        self._stop_worker(worker, kill=True)
        self._start_worker()
