"""The local driver of a batch run: stages overlapping through bounded queues on one machine.

    tasks -> decode pool (processes) --q--> vision (thread) --q--> LLM (the consumer's thread) -> outcomes

- The decode pool has at most `workers` videos in flight and both queues hold at most two
  vision batches, so memory stays flat however many inputs there are, and a slow or hung video
  holds up nothing but its own worker (it is killed at the timeout and becomes an error outcome).
- Vision runs in its own thread (ONNX Runtime releases the GIL), `vision_batch` videos per call,
  while the LLM generates; the LLM stage (engines/batch/llm_stage.py: batched, or streamed on vLLM)
  runs in the thread that consumes the outcomes, so what it yields is handled (written) before
  it goes on.
- With `--segments`, a video comes out of the decode pool one segment at a time; segments are
  batched like videos (one long file fills batches as short ones do) and gathered back into
  the video's one outcome when its last segment is captioned (in_flight.py, shared with Ray).
- Decoding starts while the LLM engine is still loading (vLLM takes a while), and the engines are
  not started at all when no task comes.
- After the first signal intake stops, the batch in the LLM (streamed: the requests in flight)
  finishes and is yielded, queued work is dropped (a re-run picks it up). After the second
  nothing waits.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from vlmcap.bundle import Bundle
from vlmcap.config import BatchConfig
from vlmcap.engines.batch.in_flight import InFlight
from vlmcap.engines.batch.llm_stage import DONE, EncodedFeed, LLMStage, failures_only, streaming_bound
from vlmcap.engines.batch.records import Outcome
from vlmcap.engines.batch.run import Interrupt
from vlmcap.engines.batch.selection import VideoTask
from vlmcap.engines.model.captioner import Captioner
from vlmcap.video.pool import DecodePool
from vlmcap.video.worker import DecodeResult

log = logging.getLogger(__name__)


class _Unreadable:
    """Stands in the decoded queue for an input that was never decoded (its task holds the problem)."""

    ok = False

    def __init__(self, path: str) -> None:
        self.path = path


class LocalPipeline:
    """`captioner`: engines to use as they are (the caller closes them), or a function that opens
    them once a task comes (closed at the end of the run)."""

    def __init__(self, bundle: Bundle, settings: BatchConfig, captioner: Captioner | Callable[[], Captioner]) -> None:
        self.bundle = bundle
        self.settings = settings
        self.captioner = captioner
        self.decode_pool: dict[str, int] = {}  # the pool's counters, after the run
        self.llm_batches: dict[str, Any] = {}  # the LLM stage's schedule and how full it kept the engine
        # Seconds each stage waited on its neighbours: where a run's time goes (`vlmcap bench batch`).
        self.waits = {"decode_blocked_s": 0.0, "vision_idle_s": 0.0, "llm_idle_s": 0.0}

    def outcomes(
        self, tasks: Iterable[VideoTask], interrupt: Interrupt, ready: Callable[[dict[str, str]], None]
    ) -> Iterator[list[Outcome]]:
        settings = self.settings
        spec = self.bundle.manifest.image.spec()
        decode_options = settings.decode_options(self.bundle.manifest.video.num_frames)
        vision_batch = settings.vision_batch_size
        decoded: queue.Queue = queue.Queue(maxsize=2 * vision_batch)
        encoded: queue.Queue = queue.Queue(maxsize=2)
        failures: list[BaseException] = []
        in_flight = InFlight()
        has_work = threading.Event()

        def intake() -> Iterator[str]:
            for task in tasks:
                if interrupt.stop.is_set():
                    return
                if not in_flight.admit(task):
                    continue  # named twice while the first is still in flight
                if task.problem is not None:  # nothing to decode: straight to its error line
                    _put(decoded, _Unreadable(task.video), interrupt, force=True)
                    continue
                has_work.set()
                yield task.video

        def decode_stage() -> None:
            try:
                with DecodePool(
                    decode_options, spec, settings.workers, settings.decode_timeout_s, segments=settings.segment_plan
                ) as pool:
                    for result in pool.imap_unordered(intake()):
                        if interrupt.stop.is_set():
                            break  # interrupted: in-flight decodes are dropped (a re-run does them)
                        t0 = time.perf_counter()
                        _put(decoded, result, interrupt)
                        if ready_at:  # blocked since the engines were up: the stages after it are behind
                            self.waits["decode_blocked_s"] += time.perf_counter() - max(t0, ready_at[0])
                self.decode_pool = dict(pool.stats)
            except BaseException as e:  # surfaces in the consumer's thread, unless we are stopping anyway
                if not interrupt.stop.is_set():
                    failures.append(e)
            finally:
                _put(decoded, DONE, interrupt, force=True)

        def failed_outcomes(feed: EncodedFeed) -> list[Outcome]:
            outcomes = []
            for result in feed.pop_failed():
                task = in_flight.task(result.path)
                if task is None:
                    continue  # a later segment of a video whose error outcome is out already
                outcomes.append(
                    in_flight.failed(Outcome.unreadable(task) if task.problem else Outcome.failed(task, result))
                )
            return outcomes

        captioner_ready = threading.Event()
        ready_at: list[float] = []  # when the engines were up (or the run knew it needs none)
        captioner_box: list[Captioner] = []

        def vision_stage() -> None:
            try:
                captioner_ready.wait()
                finished = False
                while not finished:
                    t0 = time.perf_counter()
                    batch, errors, finished = _gather(decoded, vision_batch, settings.batch_wait_s)
                    self.waits["vision_idle_s"] += time.perf_counter() - t0
                    if errors:
                        _put(encoded, ("errors", errors, None, 0.0), interrupt, force=True)
                    if batch and not interrupt.stop.is_set() and captioner_box:
                        t0 = time.perf_counter()
                        rows = captioner_box[0].encode_frames([r.video.frames for r in batch])
                        _put(encoded, ("batch", batch, rows, time.perf_counter() - t0), interrupt)
            except BaseException as e:
                failures.append(e)
            finally:
                _put(encoded, DONE, interrupt, force=True)

        decoder = threading.Thread(target=decode_stage, name="vlmcap-decode", daemon=True)
        encoder = threading.Thread(target=vision_stage, name="vlmcap-vision", daemon=True)
        decoder.start()
        encoder.start()
        owns_captioner = not isinstance(self.captioner, Captioner)
        try:
            try:
                while not has_work.wait(0.1) and decoder.is_alive():
                    pass  # listing and resume filtering run until the first video to caption
                if has_work.is_set() and not interrupt.stop.is_set():
                    captioner = self.captioner if isinstance(self.captioner, Captioner) else self.captioner()
                    captioner_box.append(captioner)  # decoding has already started meanwhile
            finally:
                ready_at.append(time.perf_counter())
                captioner_ready.set()
            feed = EncodedFeed(encoded, interrupt.stop)
            if captioner_box:
                captioner = captioner_box[0]
                bound = streaming_bound(settings, captioner.llm)
                stage = LLMStage(captioner, settings.prompt, settings.batch_size, settings.batch_wait_s, bound)
                ready({"vision": captioner.vision.name, "llm": captioner.llm.name, "llm_schedule": stage.describe()})
                finished = stage.run(feed)
            else:
                finished = failures_only(feed)  # nothing to caption came: error lines only
            while True:
                try:
                    captioned = next(finished, None)
                except Exception:
                    if interrupt.stop.is_set():
                        break  # the signal reached the LLM engine's processes too: drop what is in it
                    raise
                if captioned is None:
                    break
                outcomes = failed_outcomes(feed)
                for done in captioned:
                    result = done.item.result
                    task = in_flight.task(result.path)
                    if task is None:
                        continue  # a segment of a video that failed meanwhile: its error line is written
                    outcome = Outcome.decoded(task, result)
                    outcome.caption, outcome.num_tokens = done.caption.text, done.caption.num_tokens
                    outcome.finish_reason, outcome.quality = done.caption.finish_reason, done.caption.quality
                    outcome.vision_ms, outcome.llm_ms = done.item.vision_ms, done.llm_ms
                    outcome = in_flight.captioned(outcome, result.segment)
                    if outcome is not None:  # None: more segments to come
                        outcomes.append(outcome)
                if captioner_box:
                    self.llm_batches = dict(stage.stats)
                if outcomes:
                    yield outcomes
            tail = failed_outcomes(feed)  # failures read with the end of the stream
            if tail:
                yield tail
            self.waits["llm_idle_s"] = feed.idle_s
        except BaseException:  # a second signal, a crash, or the consumer gave up (GeneratorExit)
            interrupt.hard.set()  # nobody reads the queues any more: no thread may wait on them
            raise
        finally:
            interrupt.stop.set()  # whatever ended the loop, stop intake
            _drain(decoded)
            _drain(encoded)
            # After a second signal nobody waits: the threads are daemons and the decode workers
            # are daemon processes, which die with this process.
            encoder.join(timeout=1.0 if interrupt.hard.is_set() else 30.0)
            decoder.join(timeout=1.0 if interrupt.hard.is_set() else settings.decode_timeout_s + 10)
            if captioner_box and owns_captioner:
                captioner_box[0].close()
        if failures:
            raise failures[0]


def _put(q: queue.Queue, item: Any, interrupt: Interrupt, force: bool = False) -> None:
    """Put, checking for a stop: after the first signal only `force`d items (end markers, error
    records) still go through; after the second nothing waits, so no thread can block forever."""
    while True:
        try:
            q.put(item, timeout=0.2)
            return
        except queue.Full:
            if interrupt.hard.is_set() or (interrupt.stop.is_set() and not force):
                return


def _drain(q: queue.Queue) -> None:
    while True:
        try:
            q.get_nowait()
        except queue.Empty:
            return


def _gather(
    decoded: queue.Queue, batch_size: int, wait_s: float
) -> tuple[list[DecodeResult], list[DecodeResult], bool]:
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
