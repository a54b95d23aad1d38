"""One batch run, whoever drives it: selected videos in, caption records out (docs/BATCH.md).

    tasks (resume/shard/limit filtered) -> driver (local pipeline | Ray Data) -> outcomes -> records

`BatchRun` is the core both drivers share: it owns the signals, the run's stats, the progress
report and the record schema, and yields the records of each finished batch. Whoever
consumes it decides what records are for: `vlmcap batch` appends them to the JSONL, `vlmcap
eval` and `vlmcap bench batch` keep them in memory.

SIGINT/SIGTERM: the first one stops intake; the driver finishes the batch in its LLM and yields
it, then stops, and the run ends with 130/143. A second signal raises KeyboardInterrupt at once.
"""

from __future__ import annotations

import json
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, BinaryIO, Protocol

from vlmcap.engines.batch.progress import Progress
from vlmcap.engines.batch.provenance import Provenance
from vlmcap.engines.batch.records import Outcome, to_record
from vlmcap.engines.batch.selection import VideoTask

EXIT_OK, EXIT_SOME_FAILED = 0, 1
SIGNAL_EXIT = {signal.SIGINT: 130, signal.SIGTERM: 143}


STATS_MAX_BYTES = 16 << 20  # a stats file with many engines and flags is a few kB


def is_run_stats(f: BinaryIO) -> bool:
    """Whether the open file is what `vlmcap batch --stats` writes (a JSON object of the run's counts)."""
    try:
        stats = json.loads(f.read(STATS_MAX_BYTES))
    except (ValueError, RecursionError):
        return False
    return isinstance(stats, dict) and {"captioned", "failed", "wall_s"} <= stats.keys()


@dataclass
class RunStats:
    """What a run did. Every line it writes is exactly one of `captioned`, `copied` or `failed`."""

    captioned: int = 0  # ok lines whose caption the engines made in this run
    copied: int = 0  # --dedup: ok lines copied from an earlier caption of the same bytes; no engine ran
    failed: int = 0  # error lines, copied errors (--dedup) included
    skipped_ok: int = 0
    skipped_failed: int = 0
    other_shard: int = 0
    recaptioned_stale: int = 0  # --recaption stale: videos captioned again, their line from another bundle or prompt
    skipped_stale: int = 0  # of skipped_ok: lines from another bundle or prompt, kept (no --recaption stale)
    torn_bytes_repaired: int = 0
    compacted_lines: int = 0
    foreign_lines: int = 0  # lines of the output that are no caption record, skipped and left in place
    duplicates: int = 0  # --dedup: lines that name another video of the same bytes (`duplicate_of`), errors included
    hashed_bytes: int = 0  # --dedup: bytes read to hash the selected files
    interrupted_by: str | None = None
    wall_s: float = 0.0
    engines_ready_s: float | None = None  # from the run's start until both engines were up (the night's start-up)
    # From the run's start to its first and its last outcome: before the first, the engines' start and
    # the first video's way through both; after the last, only the engines' shutdown and the close.
    first_output_s: float | None = None
    last_output_s: float | None = None
    # Local runs: [from, to] seconds from the run's start while each model stage had work (vision:
    # its first call to the end of its last; llm: the first rows to the last caption).
    spans_s: dict[str, list[float]] = field(default_factory=dict)
    stage_s: dict[str, float] = field(default_factory=lambda: {"decode": 0.0, "vision": 0.0, "llm": 0.0, "write": 0.0})
    generated_tokens: int = 0
    truncated: int = 0  # captions cut at max_new_tokens (finish_reason "length")
    segments: int = 0  # segment captions in the captioned videos' lines (--segments)
    llm_batches: dict[str, Any] = field(default_factory=dict)  # local runs: the LLM schedule, calls and items
    waits: dict[str, float] = field(default_factory=dict)  # local runs: seconds each stage waited on another
    engines: dict[str, str] = field(default_factory=dict)
    quality: dict[str, Any] = field(
        default_factory=lambda: {"flagged": {}, "retried": 0, "recovered": 0, "still_flagged": {}, "rejected": 0}
    )  # the caption guards, per video (docs/BATCH.md, "Caption quality")
    decode_pool: dict[str, int] = field(default_factory=dict)  # local runs: timeouts, crashes, retries, workers

    def add(self, outcomes: list[Outcome]) -> None:
        for o in outcomes:
            self.stage_s["decode"] += o.decode_ms / 1e3
            if not o.copied:  # a copy's caption was checked (and counted) when it was made
                self._count_quality(o)
            self.duplicates += o.duplicate_of is not None
            if not o.ok:
                self.failed += 1  # a copied error too: its line is an error line (exit 1)
                continue
            if o.copied:
                self.copied += 1  # not captioned by this run: no tokens, no engine time
                continue
            self.captioned += 1
            self.generated_tokens += o.num_tokens
            self.truncated += o.finish_reason == "length"
            self.segments += len(o.segments or ())
            self.stage_s["vision"] += o.vision_ms / 1e3
            self.stage_s["llm"] += o.llm_ms / 1e3

    def unwritten(self, o: Outcome) -> None:
        """`o` was counted ok, but its line became an error line (its sidecar could not be written):
        a line of its own, which names no original (the engines' work for it stays counted in time and tokens)."""
        self.failed += 1
        self.duplicates -= o.duplicate_of is not None
        if o.copied:
            self.copied -= 1
        else:
            self.captioned -= 1

    def _count_quality(self, o: Outcome) -> None:
        q, counts = o.quality, self.quality
        for flag in q.retried_for if q.retried else q.flags:  # the first attempt's flags
            counts["flagged"][flag] = counts["flagged"].get(flag, 0) + 1
        counts["retried"] += q.retried
        counts["recovered"] += q.retried and not q.flags
        if o.error_type == "CaptionQualityError":
            counts["rejected"] += 1
        elif o.ok:
            for flag in q.flags:
                counts["still_flagged"][flag] = counts["still_flagged"].get(flag, 0) + 1

    def to_dict(self) -> dict[str, Any]:
        done = self.captioned + self.copied + self.failed
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
        self.forced = False  # a second signal: stop without waiting for anything
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
            self.forced = True
            raise KeyboardInterrupt  # unwinds the main thread out of whatever it waits on
        self.signal = signal.Signals(signum)
        self.stop.set()
        print(
            f"\nvlmcap: {self.signal.name}: finishing the batch in progress and flushing (again to stop now)",
            file=sys.stderr,
        )


class Driver(Protocol):
    """Runs the decode, vision and LLM stages over tasks; yields outcomes a batch at a time.

    A driver may also have `decode_pool`, its decode pool's counters, `llm_batches`, its LLM
    schedule with the calls and the videos or segments they held, `waits`, the seconds each
    stage waited on its neighbours, and `spans`, the perf_counter times each model stage had work
    from and to, read after the run.
    """

    def outcomes(
        self, tasks: Iterable[VideoTask], interrupt: Interrupt, ready: Callable[[dict[str, str]], None]
    ) -> Iterator[list[Outcome]]:
        """`ready(engine names)` is called once the engines are up (never, when no task comes)."""
        ...


class BatchRun:
    """The records of each batch the driver finishes, in the order it finishes them.

        with BatchRun(driver, tasks, provenance, stats, progress) as run:
            for records in run:
                ...  # write them, keep them

    The `with` block owns the signal handlers, so a second signal stops the run cleanly wherever
    it lands (in the driver or in the consumer's own code); on leaving, the driver's threads and
    engines are shut down and `stats` gets `wall_s` and `interrupted_by`.
    """

    def __init__(
        self,
        driver: Driver,
        tasks: Iterable[VideoTask],
        provenance: Provenance,
        stats: RunStats,
        progress: Progress,
        strict_quality: bool = False,
        interrupt: Interrupt | None = None,
    ) -> None:
        self.driver = driver
        self.tasks = tasks
        self.provenance = provenance
        self.strict_quality = strict_quality  # a caption still flagged after its retry becomes an error line
        self.stats = stats
        self.progress = progress
        self.interrupt = interrupt or Interrupt()  # given: its `stop` is also what the tasks' remote requests watch
        self.outcomes: list[Outcome] = []  # those of the records yielded last, in their order
        self._records: Iterator[list[dict[str, Any]]] | None = None
        self._start = 0.0

    def __enter__(self) -> BatchRun:
        self._start = time.perf_counter()
        self.interrupt.__enter__()
        return self

    def __iter__(self) -> Iterator[list[dict[str, Any]]]:
        self._records = self._generate()
        return self._records

    def _ready(self, engines: dict[str, str]) -> None:
        self.stats.engines = engines
        self.stats.engines_ready_s = round(time.perf_counter() - self._start, 3)
        self.provenance.set_engines(engines)
        self.progress.start(self.stats)

    def _generate(self) -> Iterator[list[dict[str, Any]]]:
        for outcomes in self.driver.outcomes(self.tasks, self.interrupt, self._ready):
            if self.strict_quality:
                for o in outcomes:
                    o.reject_flagged()
            self.stats.add(outcomes)
            self.stats.last_output_s = round(time.perf_counter() - self._start, 3)
            if self.stats.first_output_s is None:
                self.stats.first_output_s = self.stats.last_output_s
            self.outcomes = outcomes
            yield [to_record(o, self.provenance) for o in outcomes]
            self.progress.update(self.stats)

    def __exit__(self, exc_type, exc, tb) -> bool:
        try:
            if self._records is not None:
                self._records.close()  # an early exit: the driver stops its threads and engines now
        finally:
            self.interrupt.__exit__(exc_type, exc, tb)
            self.progress.close()
            self.stats.decode_pool = dict(getattr(self.driver, "decode_pool", {}))
            self.stats.llm_batches = dict(getattr(self.driver, "llm_batches", {}))
            self.stats.waits = {k: round(v, 3) for k, v in getattr(self.driver, "waits", {}).items()}
            self.stats.spans_s = {
                stage: [round(t - self._start, 3) for t in span]
                for stage, span in getattr(self.driver, "spans", {}).items()
            }
            self.stats.interrupted_by = self.interrupt.signal.name if self.interrupt.signal else None
            self.stats.wall_s = time.perf_counter() - self._start
        # The second signal's KeyboardInterrupt ends the run like the first, just without waiting.
        return exc_type is KeyboardInterrupt and self.interrupt.forced
