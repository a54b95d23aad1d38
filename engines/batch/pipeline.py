"""The local driver of a batch run: stages overlapping through bounded queues on one machine.

    tasks -> DecodeStage (processes) --decoded--> VisionStage (thread) --encoded--> LLMStage -> outcomes

The decode and vision stages are threads of their own (local_stages.py); the LLM stage
(llm_stage.py) runs in the thread that consumes the outcomes; the videos in flight and their
segments are kept by `InFlight` (in_flight.py), which the Ray driver shares.

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

import queue
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from vlmcap.bundle import Bundle
from vlmcap.config.schema import BatchConfig
from vlmcap.engines.batch.in_flight import InFlight
from vlmcap.engines.batch.llm_stage import Captioned, EncodedFeed, LLMStage, failures_only, streaming_bound
from vlmcap.engines.batch.local_stages import DecodeStage, EnginesGate, VisionStage, drain
from vlmcap.engines.batch.records import Outcome
from vlmcap.engines.batch.run import Interrupt
from vlmcap.engines.batch.selection import VideoTask
from vlmcap.engines.runtime.engines import Engines


class LocalPipeline:
    """`engines`: engines to use as they are (the caller closes them), or a function that opens
    them once a task comes (closed at the end of the run)."""

    def __init__(self, bundle: Bundle, settings: BatchConfig, engines: Engines | Callable[[], Engines]) -> None:
        self.bundle = bundle
        self.settings = settings
        self.engines = engines
        self.decode_pool: dict[str, int] = {}  # the pool's counters, after the run
        self.llm_batches: dict[str, Any] = {}  # the LLM stage's schedule and how full it kept the engine
        # Seconds each stage waited on its neighbours: where a run's time goes (`vlmcap bench batch`).
        self.waits = {"decode_blocked_s": 0.0, "vision_idle_s": 0.0, "llm_idle_s": 0.0}
        # perf_counter times each model stage had work: vision from its first call to the end of its
        # last, the LLM from the first rows (the end of vision's first call) to its last caption.
        self.spans: dict[str, tuple[float, float]] = {}

    def outcomes(
        self, tasks: Iterable[VideoTask], interrupt: Interrupt, ready: Callable[[dict[str, str]], None]
    ) -> Iterator[list[Outcome]]:
        settings = self.settings
        decoded: queue.Queue = queue.Queue(maxsize=2 * settings.vision_batch_size)
        encoded: queue.Queue = queue.Queue(maxsize=2)
        in_flight = InFlight()
        gate = EnginesGate()
        options = settings.decode_options(self.bundle.manifest.video.num_frames)
        spec = self.bundle.manifest.image.spec()
        decoder = DecodeStage(tasks, in_flight, options, spec, settings, decoded, gate, interrupt)
        encoder = VisionStage(decoded, encoded, gate, settings.vision_batch_size, settings.batch_wait_s, interrupt)
        decoder.start()
        encoder.start()
        try:
            engines = None
            try:
                while not decoder.has_work.wait(0.1) and decoder.is_alive():
                    pass  # listing and resume filtering run until the first video to caption
                if decoder.has_work.is_set() and not interrupt.stop.is_set():
                    # Decoding has already started meanwhile.
                    engines = self.engines if isinstance(self.engines, Engines) else self.engines()
            finally:
                gate.open(engines)
            feed = EncodedFeed(encoded, interrupt.stop)
            if engines is not None:
                bound = streaming_bound(settings, engines.llm)
                stage = LLMStage(engines, settings.prompt, settings.batch_size, settings.batch_wait_s, bound)
                ready({"vision": engines.vision.name, "llm": engines.llm.name, "llm_schedule": stage.describe()})
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
                outcomes = _failed_outcomes(feed, in_flight)
                outcomes += _captioned_outcomes(captioned, in_flight)
                if engines is not None:
                    self.llm_batches = dict(stage.stats)
                if outcomes:
                    if encoder.first_call:
                        self.spans["llm"] = (encoder.first_call[1], time.perf_counter())
                    yield outcomes
            tail = _failed_outcomes(feed, in_flight)  # failures read with the end of the stream
            if tail:
                yield tail
            self.waits["llm_idle_s"] = feed.idle_s
        except BaseException:  # a second signal, a crash, or the consumer gave up (GeneratorExit)
            interrupt.hard.set()  # nobody reads the queues any more: no thread may wait on them
            raise
        finally:
            interrupt.stop.set()  # whatever ended the loop, stop intake
            drain(decoded)
            drain(encoded)
            # After a second signal nobody waits: the threads are daemons and the decode workers
            # are daemon processes, which die with this process.
            encoder.join(timeout=1.0 if interrupt.hard.is_set() else 30.0)
            decoder.join(timeout=1.0 if interrupt.hard.is_set() else settings.decode_timeout_s + 10)
            if gate.engines is not None and not isinstance(self.engines, Engines):
                gate.engines.close()  # opened by this run: closed by it
            if decoder.pool_stats:
                self.decode_pool = dict(decoder.pool_stats)
            self.waits["decode_blocked_s"] += decoder.blocked_s
            self.waits["vision_idle_s"] += encoder.idle_s
            if encoder.first_call:
                self.spans["vision"] = (encoder.first_call[0], encoder.last_end)
        for stage in (decoder, encoder):
            if stage.failure is not None:
                raise stage.failure


def _failed_outcomes(feed: EncodedFeed, in_flight: InFlight) -> list[Outcome]:
    """The error outcomes of the decode failures the feed has met."""
    outcomes = []
    for result in feed.pop_failed():
        task = in_flight.task(result.path)
        if task is None:
            continue  # a later segment of a video whose error outcome is out already
        outcomes.append(in_flight.failed(Outcome.unreadable(task) if task.problem else Outcome.failed(task, result)))
    return outcomes


def _captioned_outcomes(captioned: list[Captioned], in_flight: InFlight) -> list[Outcome]:
    """The outcomes of the videos these captions finish (a segment finishes its video with the last one)."""
    outcomes = []
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
    return outcomes
