"""The local driver's two threaded stages and the queues between them (the driver: pipeline.py).

    tasks -> DecodeStage (a pool of processes) --decoded--> VisionStage --encoded--> the LLM stage

Each stage is a thread that owns its loop, counts what it waited (where a run's time goes:
`vlmcap bench batch`), and keeps its own failure for the driver to raise in the consumer's thread.
Every put checks the run's `Interrupt`, so no stage can block forever on a queue nobody reads.
"""

from __future__ import annotations

import os
import queue
import threading
import time
from collections.abc import Iterable, Iterator
from typing import Any

from vlmcap.config.schema import BatchConfig
from vlmcap.engines.batch.in_flight import InFlight
from vlmcap.engines.batch.llm_stage import DONE
from vlmcap.engines.batch.run import Interrupt
from vlmcap.engines.batch.selection import VideoTask
from vlmcap.engines.runtime.engines import Engines
from vlmcap.video.decoders import DecodeOptions
from vlmcap.video.image_spec import ImageSpec
from vlmcap.video.pool import DecodePool
from vlmcap.video.worker import DecodeResult


class EnginesGate:
    """Opened once the engines are up, or once the run knows it needs none (`engines` None): the
    vision stage waits for it, and the decode stage counts its blocked time only from then on (before,
    a full queue is the engines loading, not the stages after it being slow)."""

    def __init__(self) -> None:
        self._opened = threading.Event()
        self.engines: Engines | None = None
        self.opened_at: float | None = None

    def open(self, engines: Engines | None) -> None:
        self.engines, self.opened_at = engines, time.perf_counter()
        self._opened.set()

    def wait(self) -> Engines | None:
        self._opened.wait()
        return self.engines


class Unreadable:
    """Stands in the decoded queue for an input that was never decoded (its task holds the problem)."""

    ok = False

    def __init__(self, path: str) -> None:
        self.path = path


class DecodeStage(threading.Thread):
    """Tasks -> the decode pool -> `decoded`. Each video is admitted once (`in_flight`); an input with
    a problem goes straight on as `Unreadable`; `has_work` is set by the first video to decode."""

    def __init__(
        self,
        tasks: Iterable[VideoTask],
        in_flight: InFlight,
        options: DecodeOptions,
        spec: ImageSpec,
        settings: BatchConfig,
        decoded: queue.Queue,
        gate: EnginesGate,
        interrupt: Interrupt,
    ) -> None:
        super().__init__(name="vlmcap-decode", daemon=True)
        self.tasks, self.in_flight, self.options, self.spec = tasks, in_flight, options, spec
        self.settings, self.decoded, self.gate, self.interrupt = settings, decoded, gate, interrupt
        self.has_work = threading.Event()
        self.blocked_s = 0.0  # on a full `decoded` queue since the engines were up: the stages after it are behind
        self.pool_stats: dict[str, int] = {}  # the pool's counters, once it finished
        self.failure: BaseException | None = None

    def _intake(self) -> Iterator[str]:
        for task in self.tasks:
            if self.interrupt.stop.is_set():
                return
            if not self.in_flight.admit(task):
                continue  # named twice while the first is still in flight
            if task.problem is not None:  # nothing to decode: straight to its error line
                put(self.decoded, Unreadable(task.video), self.interrupt, force=True)
                continue
            self.has_work.set()
            yield task.video

    def run(self) -> None:
        settings = self.settings
        try:
            with DecodePool(
                self.options, self.spec, settings.workers, settings.decode_timeout_s, segments=settings.segment_plan
            ) as pool:
                for result in pool.imap_unordered(self._intake()):
                    if self.interrupt.stop.is_set():
                        break  # interrupted: in-flight decodes are dropped (a re-run does them)
                    t0 = time.perf_counter()
                    put(self.decoded, result, self.interrupt)
                    if self.gate.opened_at is not None:
                        self.blocked_s += time.perf_counter() - max(t0, self.gate.opened_at)
            self.pool_stats = dict(pool.stats)
        except BaseException as e:  # raised in the consumer's thread, unless the run is stopping anyway
            if not self.interrupt.stop.is_set():
                self.failure = e
        finally:
            put(self.decoded, DONE, self.interrupt, force=True)


def _keep_off_the_llm_cores(engines: Engines) -> None:
    """This thread (the vision stage's) computes on the cores vLLM was not bound to, where it has
    them: the two engines then never take turns on one core (an ONNX Runtime or torch engine on
    one thread computes in the calling thread; OpenVINO's own threads are not moved)."""
    llm_cores = getattr(engines.llm, "cores", None)
    spare = os.sched_getaffinity(0) - set(llm_cores or ())
    if llm_cores and spare:
        os.sched_setaffinity(0, spare)


class VisionStage(threading.Thread):
    """`decoded` -> vision rows -> `encoded`, up to `vision_batch` videos per call once the engines are
    up (ONNX Runtime releases the GIL, so it runs while the LLM generates); decode failures pass on."""

    def __init__(
        self,
        decoded: queue.Queue,
        encoded: queue.Queue,
        gate: EnginesGate,
        vision_batch: int,
        batch_wait_s: float,
        interrupt: Interrupt,
    ) -> None:
        super().__init__(name="vlmcap-vision", daemon=True)
        self.decoded, self.encoded, self.gate, self.interrupt = decoded, encoded, gate, interrupt
        self.vision_batch, self.batch_wait_s = vision_batch, batch_wait_s
        self.idle_s = 0.0  # waiting for decoded videos: decoding is behind
        # perf_counter times of its first call's start and end, and of its last call's end
        self.first_call: tuple[float, float] | None = None
        self.last_end = 0.0
        self.failure: BaseException | None = None

    def run(self) -> None:
        try:
            engines = self.gate.wait()
            if engines is not None:
                _keep_off_the_llm_cores(engines)
            finished = False
            while not finished:
                t0 = time.perf_counter()
                batch, errors, finished = gather(self.decoded, self.vision_batch, self.batch_wait_s)
                self.idle_s += time.perf_counter() - t0
                if errors:
                    put(self.encoded, ("errors", errors, None, 0.0), self.interrupt, force=True)
                if batch and not self.interrupt.stop.is_set() and engines is not None:
                    t0 = time.perf_counter()
                    rows = engines.encode_frames([r.video.frames for r in batch])
                    t1 = time.perf_counter()
                    self.first_call, self.last_end = self.first_call or (t0, t1), t1
                    put(self.encoded, ("batch", batch, rows, t1 - t0), self.interrupt)
        except BaseException as e:
            self.failure = e
        finally:
            put(self.encoded, DONE, self.interrupt, force=True)


def put(q: queue.Queue, item: Any, interrupt: Interrupt, force: bool = False) -> None:
    """Put, checking for a stop: after the first signal only `force`d items (end markers, error
    records) still go through; after the second nothing waits, so no thread can block forever."""
    while True:
        try:
            q.put(item, timeout=0.2)
            return
        except queue.Full:
            if interrupt.hard.is_set() or (interrupt.stop.is_set() and not force):
                return


def drain(q: queue.Queue) -> None:
    while True:
        try:
            q.get_nowait()
        except queue.Empty:
            return


def gather(decoded: queue.Queue, batch_size: int, wait_s: float) -> tuple[list[DecodeResult], list[DecodeResult], bool]:
    """Up to `batch_size` decoded videos (and any failures seen meanwhile); True when the stream ended.

    Blocks for the first item, then waits at most `wait_s` for the batch to fill, so a trickle of
    slow videos still moves while a fast stream forms full batches.
    """
    batch: list[DecodeResult] = []
    errors: list[DecodeResult] = []
    deadline: float | None = None
    while len(batch) < batch_size:
        timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
        try:
            item = decoded.get(timeout=timeout)
        except queue.Empty:
            break
        if item is DONE:
            return batch, errors, True
        (batch if item.ok else errors).append(item)
        if deadline is None:
            deadline = time.monotonic() + wait_s
        if errors and not batch:
            break  # report failures promptly rather than holding them for a batch
    return batch, errors, False
