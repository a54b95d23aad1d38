"""`vlmcap batch` on one machine: stages overlapping through bounded queues.

    discover -> resume/shard/limit filter -> decode pool (processes) --q--> vision (thread) --q--> LLM + writer

- The decode pool has at most `workers` videos in flight and both queues hold at most two
  batches, so memory stays flat however many inputs there are, and a slow or hung video holds
  up nothing but its own worker (it is killed at the timeout and becomes an error line).
- Vision runs in its own thread (ONNX Runtime releases the GIL) while the LLM generates the
  previous batch; the LLM stage and the writer share the main thread, so one thread writes.
- Decoding starts while the LLM engine is still loading (vLLM takes a while).
- SIGINT/SIGTERM stop intake; the batch in the LLM finishes and is written, the rest is
  dropped (a re-run picks it up), and the run exits 130/143. A second signal stops at once.
"""

from __future__ import annotations

import logging
import queue
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vlmcap.engines.captioner import Captioner
from vlmcap.engines.output import CaptionWriter, read_resume_state
from vlmcap.engines.progress import Progress
from vlmcap.engines.stages import (
    BatchTimings,
    Shard,
    TaskFilter,
    VideoTask,
    decoded_fields,
    error_record,
    ok_record,
    pixel_batch,
)
from vlmcap.export.bundle import Bundle

from vlmcap.video.decoders import DecodeOptions
from vlmcap.video.pool import DecodePool
from vlmcap.video.preprocess import ImageSpec
from vlmcap.video.worker import DecodeResult

log = logging.getLogger(__name__)

EXIT_OK, EXIT_SOME_FAILED = 0, 1
SIGNAL_EXIT = {signal.SIGINT: 130, signal.SIGTERM: 143}
_DONE = object()


@dataclass
class BatchOptions:
    out: Path
    batch_size: int = 8
    workers: int = 2
    decode_timeout_s: float = 60.0
    decoders: tuple[str, ...] = ("decord", "pyav")
    prompt: str | None = None
    limit: int | None = None
    shard: Shard | None = None
    retry_errors: bool = False
    overwrite: bool = False
    batch_wait_s: float = 2.0  # how long a partial batch waits for more decoded videos
    log_every_s: float = 30.0
    progress_bar: bool | None = None  # None: a bar on a TTY, log lines otherwise


@dataclass
class RunStats:
    captioned: int = 0
    failed: int = 0
    skipped_ok: int = 0
    skipped_failed: int = 0
    other_shard: int = 0
    torn_bytes_repaired: int = 0
    compacted_lines: int = 0
    interrupted_by: str | None = None
    wall_s: float = 0.0
    stage_s: dict[str, float] = field(default_factory=lambda: {"decode": 0.0, "vision": 0.0, "llm": 0.0, "write": 0.0})
    generated_tokens: int = 0
    engines: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        done = self.captioned + self.failed
        llm_s = self.stage_s["llm"]
        return {
            **{k: v for k, v in vars(self).items() if k != "stage_s"},
            "stage_s": {k: round(v, 3) for k, v in self.stage_s.items()},
            "videos_per_s": round(done / self.wall_s, 3) if self.wall_s else 0.0,
            "captioned_per_s": round(self.captioned / self.wall_s, 3) if self.wall_s else 0.0,
            "tokens_per_s": round(self.generated_tokens / llm_s, 1) if llm_s else 0.0,
        }

    @property
    def exit_code(self) -> int:
        if self.interrupted_by:
            return SIGNAL_EXIT[signal.Signals[self.interrupted_by]]
        return EXIT_SOME_FAILED if self.failed else EXIT_OK


class Interrupt:
    """First SIGINT/SIGTERM: stop intake and finish cleanly. Second: stop now."""

    def __init__(self) -> None:
        self.stop = threading.Event()
        self.hard = threading.Event()
        self.signal: signal.Signals | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> Interrupt:
        if threading.current_thread() is threading.main_thread():
            for sig in SIGNAL_EXIT:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def _handle(self, signum: int, frame) -> None:
        if self.stop.is_set():
            self.hard.set()
            raise KeyboardInterrupt  # unwinds the main thread out of whatever it waits on
        self.signal = signal.Signals(signum)
        self.stop.set()
        print(
            f"\nvlmcap: {self.signal.name}: finishing the batch in progress and flushing (again to stop now)",
            file=sys.stderr,
        )


def run_batch(
    paths: Iterable[str],
    bundle: Bundle,
    open_captioner: Callable[[], Captioner],
    options: BatchOptions,
    keep_engines: bool = False,
) -> RunStats:
    """Caption every selected path into `options.out`; the caller holds the output lock.

    The engines are closed at the end unless `keep_engines` (a caller that reuses them)."""
    stats = RunStats()
    start = time.perf_counter()
    writer = CaptionWriter(options.out, overwrite=options.overwrite)
    stats.torn_bytes_repaired = writer.torn_bytes
    task_filter = TaskFilter(read_resume_state(options.out), options.retry_errors, options.shard, options.limit)
    spec = ImageSpec.from_fields(bundle["image"])
    decode_options = DecodeOptions(num_frames=int(bundle["video"]["num_frames"]), decoders=options.decoders)
    prompt_text = bundle["prompt"]["default_prompt"] if options.prompt is None else options.prompt
    decoded: queue.Queue = queue.Queue(maxsize=2 * options.batch_size)
    encoded: queue.Queue = queue.Queue(maxsize=2)
    failures: list[BaseException] = []
    progress = Progress(options.progress_bar, options.log_every_s)

    with Interrupt() as interrupt:
        tasks: dict[str, VideoTask] = {}
        has_work = threading.Event()  # the engines start only once something is to be captioned

        def intake() -> Iterable[str]:
            for task in task_filter(paths):
                if interrupt.stop.is_set():
                    return
                if task.video in tasks:
                    continue  # named twice while the first is still in flight
                tasks[task.video] = task
                has_work.set()
                yield task.video

        def decode_stage() -> None:
            try:
                with DecodePool(decode_options, spec, options.workers, options.decode_timeout_s) as pool:
                    for result in pool.imap_unordered(intake()):
                        if interrupt.stop.is_set():
                            break  # interrupted: in-flight decodes are dropped (a re-run does them)
                        _put(decoded, result, interrupt)
            except BaseException as e:  # surfaces in the main thread, unless we are stopping anyway
                if not interrupt.stop.is_set():
                    failures.append(e)
            finally:
                _put(decoded, _DONE, interrupt, force=True)

        captioner_ready = threading.Event()
        captioner_box: list[Captioner] = []

        def vision_stage() -> None:
            try:
                captioner_ready.wait()
                finished = False
                while not finished:
                    batch, errors, finished = _gather(decoded, options.batch_size, options.batch_wait_s)
                    if errors:
                        _put(encoded, ("errors", errors, None, 0.0), interrupt, force=True)
                    if batch and not interrupt.stop.is_set() and captioner_box:
                        t0 = time.perf_counter()
                        rows = captioner_box[0].encode(pixel_batch([r.video.frames for r in batch], spec))
                        _put(encoded, ("batch", batch, rows, time.perf_counter() - t0), interrupt)
            except BaseException as e:
                failures.append(e)
            finally:
                _put(encoded, _DONE, interrupt, force=True)

        decoder = threading.Thread(target=decode_stage, name="vlmcap-decode", daemon=True)
        encoder = threading.Thread(target=vision_stage, name="vlmcap-vision", daemon=True)
        decoder.start()
        encoder.start()
        try:
            try:
                while not has_work.wait(0.1) and decoder.is_alive():
                    pass  # listing and resume filtering run until the first video to caption
                if has_work.is_set() and not interrupt.stop.is_set():
                    captioner = open_captioner()  # decoding has already started meanwhile
                    captioner_box.append(captioner)
                    stats.engines = {"vision": captioner.vision.name, "llm": captioner.llm.name}
            finally:
                captioner_ready.set()
            progress.start(stats)
            while True:
                item = encoded.get()
                if item is _DONE:
                    break
                kind, results, rows, vision_s = item
                if kind == "errors":
                    records = [
                        error_record(
                            tasks.pop(r.path),
                            r.error_type or "VideoError",
                            r.error_message or "",
                            bundle.id,
                            prompt_text,
                            r.decode_ms,
                        )
                        for r in results
                    ]
                    stats.failed += len(records)
                else:
                    if interrupt.stop.is_set():
                        continue  # interrupted: drop encoded batches that have not started; a re-run does them
                    t0 = time.perf_counter()
                    try:
                        captions, tokens = captioner.caption(rows, [options.prompt] * len(results))
                    except Exception:
                        if interrupt.stop.is_set():
                            break  # the signal reached the LLM engine's processes too: drop this batch
                        raise
                    llm_s = time.perf_counter() - t0
                    timings = BatchTimings(vision_s * 1e3, llm_s * 1e3)
                    records = [
                        ok_record(
                            tasks.pop(r.path), decoded_fields(r), c, n, bundle.id, prompt_text, timings, len(results)
                        )
                        for r, c, n in zip(results, captions, tokens, strict=True)
                    ]
                    stats.captioned += len(records)
                    stats.generated_tokens += sum(tokens)
                    stats.stage_s["vision"] += vision_s
                    stats.stage_s["llm"] += llm_s
                stats.stage_s["decode"] += sum(r.decode_ms for r in results) / 1e3
                t0 = time.perf_counter()
                writer.append(records)
                stats.stage_s["write"] += time.perf_counter() - t0
                progress.update(stats)
        except KeyboardInterrupt:
            if not interrupt.hard.is_set():
                interrupt.hard.set()
                raise
        except BaseException:
            interrupt.hard.set()  # nobody reads the queues any more: no thread may wait on them
            raise
        finally:
            interrupt.stop.set()  # whatever ended the loop, stop intake
            _drain(decoded)
            _drain(encoded)
            # After a second signal nobody waits: the threads are daemons and the decode workers
            # are daemon processes, which die with this process.
            patience = 1.0 if interrupt.hard.is_set() else 30.0
            encoder.join(timeout=patience)
            decoder.join(timeout=1.0 if interrupt.hard.is_set() else options.decode_timeout_s + 10)
            if captioner_box and not keep_engines:
                captioner_box[0].close()
            writer.close()
            progress.close()
        if failures:
            raise failures[0]
        stats.interrupted_by = interrupt.signal.name if interrupt.signal else None

    counts = task_filter.counts
    stats.skipped_ok, stats.skipped_failed, stats.other_shard = (
        counts.skipped_ok,
        counts.skipped_failed,
        counts.other_shard,
    )
    if not stats.interrupted_by and counts.superseding:
        stats.compacted_lines = writer.compact()
    stats.wall_s = time.perf_counter() - start
    return stats


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
        if item is _DONE:
            return batch, errors, True
        (batch if item.ok else errors).append(item)
        if deadline is None:
            deadline = time.monotonic() + wait_s
        if errors and not batch:
            break  # report failures promptly rather than holding them for a batch
    return batch, errors, False
