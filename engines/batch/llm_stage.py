"""The LLM stage of the local pipeline: encoded videos (or segments) in, captions out, in one of two schedules.

- batched (the transformers engine, or vLLM with `--llm-schedule batch`): `batch_size` items per
  `generate` call; the next batch enters when the longest caption of this one is done, so the
  engine idles through each batch's tail.
- streaming (vLLM's default): an item enters the engine as soon as its vision rows exist and leaves
  when its caption is done, with at most `max_inflight` in the engine; vLLM's continuous batching
  then always has work, and there is no barrier between batches.

Either way the captions come out in completion order, a list at a time; the pipeline turns them
into outcomes and the run writes those (resume, crash safety and exit codes do not depend on order).
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from vlmcap.config.schema import BatchConfig
from vlmcap.engines.runtime.engines import Caption, Engines
from vlmcap.engines.runtime.llm import LLMEngine, StreamingLLMEngine
from vlmcap.video.worker import DecodeResult

log = logging.getLogger(__name__)

DONE = object()  # the end of the vision stage's output


@dataclass
class Encoded:
    """One video (or segment) out of the vision stage."""

    result: DecodeResult
    rows: np.ndarray  # (T*M, Dl) vision rows
    vision_ms: float  # its share of its vision call


@dataclass
class Captioned:
    item: Encoded
    caption: Caption
    llm_ms: float  # its share of the engine's time: a batch's time split evenly, or each step's among those in it


class EncodedFeed:
    """The vision stage's queue, an item at a time.

    The queue carries `("batch", results, rows, vision_s)` and `("errors", results, None, 0)`
    messages, then `DONE`. Decode failures met on the way collect in `failed` for the pipeline to
    write; after a stop, encoded items are dropped (a re-run captions them) but failures still
    come through, so no error line is lost.
    """

    def __init__(self, q: queue.Queue, stop: threading.Event) -> None:
        self.q = q
        self.stop = stop
        self.pending: deque[Encoded] = deque()
        self.failed: list[DecodeResult] = []
        self.ended = False
        self.idle_s = 0.0  # time the LLM stage waited with nothing to do (the stages before it were slower)

    @property
    def exhausted(self) -> bool:
        return self.ended and not self.pending

    def take(self, n: int, block: bool, wait_s: float = 0.0) -> list[Encoded]:
        """Up to `n` items. `block`: wait for the first one (or the end); then wait at most `wait_s` more
        for the rest, so a trickle of slow videos still moves while a fast stream fills up."""
        if not self.pending and block and not self.ended:
            t0 = time.perf_counter()
            while not self.pending and not self.ended and not self.failed:  # failures are reported promptly
                self._read(timeout=0.2)
            self.idle_s += time.perf_counter() - t0
        deadline = time.monotonic() + wait_s
        while len(self.pending) < n and not self.ended:
            left = deadline - time.monotonic()
            if not self._read(timeout=left if left > 0 else None, wait=left > 0):
                break
        return [self.pending.popleft() for _ in range(min(n, len(self.pending)))]

    def pop_failed(self) -> list[DecodeResult]:
        failed, self.failed = self.failed, []
        return failed

    def _read(self, timeout: float | None, wait: bool = True) -> bool:
        """One message into `pending`/`failed`; False when none came."""
        try:
            message = self.q.get(timeout=timeout) if wait else self.q.get_nowait()
        except queue.Empty:
            return False
        if message is DONE:
            self.ended = True
            return True
        kind, results, rows, vision_s = message
        if kind == "errors":
            self.failed.extend(results)
        elif not self.stop.is_set():
            share = vision_s * 1e3 / len(results)
            self.pending.extend(Encoded(r, rows[i], share) for i, r in enumerate(results))
        return True


def streaming_bound(settings: BatchConfig, engine: LLMEngine) -> int | None:
    """How many requests the streaming schedule keeps in the engine; None: run batched.

    `auto` streams whenever the engine can (vLLM). The default bound is what the engine's KV cache
    holds at full length (capped by its scheduler): a finished request's slot is refilled before
    the next step, and nothing waits in memory for a slot that cannot exist.
    """
    streams = isinstance(engine, StreamingLLMEngine)
    if settings.llm_schedule == "batch" or not streams:
        if settings.llm_schedule == "stream":  # only `auto` backends get here: vLLM did not start
            log.warning("--llm-schedule stream needs vLLM; %s runs batched generate", engine.name)
        return None
    return settings.max_inflight or engine.capacity()


def failures_only(feed: EncodedFeed) -> Iterator[list[Captioned]]:
    """The LLM stage of a run where nothing came to caption: it only passes the failures on."""
    while not feed.exhausted:
        feed.take(0, block=True)
        yield []


@dataclass
class LLMStage:
    """Runs the chosen schedule over a feed; `stats` says how full the engine was kept."""

    engines: Engines
    prompt: str | None
    batch_size: int
    batch_wait_s: float
    max_inflight: int | None  # None: batched; else the streaming bound
    stats: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> str:
        if self.max_inflight is None:
            return f"batch ({self.batch_size} per call)"
        return f"stream (at most {self.max_inflight} in flight)"

    def run(self, feed: EncodedFeed) -> Iterator[list[Captioned]]:
        """Lists of finished captions (empty when only failures arrived); ends when the feed does."""
        return self._batched(feed) if self.max_inflight is None else self._streaming(feed)

    def _batched(self, feed: EncodedFeed) -> Iterator[list[Captioned]]:
        self.stats.update(schedule="batch", calls=0, items=0)
        while not feed.exhausted:
            items = feed.take(self.batch_size, block=True, wait_s=self.batch_wait_s)
            if not items:
                yield []
                continue
            t0 = time.perf_counter()
            rows = np.stack([item.rows for item in items])
            captions = self.engines.caption(rows, [self.prompt] * len(items))  # guards' retries included
            share = (time.perf_counter() - t0) * 1e3 / len(items)
            self.stats["calls"] += 1
            self.stats["items"] += len(items)
            yield [Captioned(item, caption, share) for item, caption in zip(items, captions, strict=True)]

    def _streaming(self, feed: EncodedFeed) -> Iterator[list[Captioned]]:
        engine = self.engines.llm
        assert isinstance(engine, StreamingLLMEngine)
        bound = self.max_inflight
        # request key -> (item, the slot clock when it entered, its first caption when this is the
        # guards' retry). The slot clock sums each step's time divided by the requests in it, so a
        # request's share is the clock's advance while it was in flight: O(1) per step, however many
        # are in flight.
        inflight: dict[str, tuple[Encoded, float, Caption | None]] = {}
        slot_ms = 0.0
        keys = map(str, itertools.count())
        self.stats.update(schedule="stream", max_inflight=bound, steps=0, items=0, peak_inflight=0)
        running_sum = 0

        def submit(item: Encoded, since: float, first: Caption | None) -> None:
            key = next(keys)
            embeds = self.engines.embed(item.rows[None], [self.prompt]).unpadded(0)
            params = self.engines.params if first is None else self.engines.retry_params
            engine.submit(key, embeds, params)
            inflight[key] = (item, since, first)

        try:
            while True:
                if len(inflight) < bound and not feed.exhausted:
                    # Block for work only when the engine has none; otherwise take what is ready and step.
                    for item in feed.take(bound - len(inflight), block=not inflight):
                        submit(item, slot_ms, None)
                        self.stats["items"] += 1
                if not inflight:
                    if feed.exhausted:
                        return
                    yield []  # failures only
                    continue
                t0 = time.perf_counter()
                finished = engine.step()
                slot_ms += (time.perf_counter() - t0) * 1e3 / len(inflight)
                self.stats["steps"] += 1
                self.stats["peak_inflight"] = max(self.stats["peak_inflight"], len(inflight))
                running_sum += len(inflight)
                self.stats["mean_inflight"] = round(running_sum / self.stats["steps"], 2)
                done = []
                if finished:  # (a tokenizer decodes an empty batch to [""])
                    entered = [inflight.pop(key) for key, _ in finished]
                    captions = self.engines.captions([g for _, g in finished], [self.prompt] * len(finished))
                    for (item, since, first), caption in zip(entered, captions, strict=True):
                        if first is not None:
                            done.append(Captioned(item, self.engines.better(first, caption), slot_ms - since))
                        elif self.engines.wants_retry(caption):
                            submit(item, since, caption)  # back in at once, in the slot it just freed
                        else:
                            done.append(Captioned(item, caption, slot_ms - since))
                if done or feed.failed:
                    yield done
        finally:
            if inflight:  # the run is ending early (an error, a second signal): free the engine's slots
                with contextlib.suppress(Exception):  # the engine may be going down with the run
                    engine.abort(list(inflight))
