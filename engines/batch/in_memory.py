"""A batch run whose records stay in memory: the one assembly of the local pipeline that the Python
API's `Captioner.caption` (engines/api.py), evaluation (engines/eval/evaluate.py) and `vlmcap bench batch`
(engines/bench/batch_schedules.py) share. `vlmcap batch` is the same run with the captions file,
its lock and resume around it (run_batch.py)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from vlmcap.bundle import Bundle
from vlmcap.config.schema import BatchConfig
from vlmcap.engines.batch.ledger import ResumeState
from vlmcap.engines.batch.pipeline import LocalPipeline
from vlmcap.engines.batch.progress import Progress
from vlmcap.engines.batch.provenance import Provenance
from vlmcap.engines.batch.run import BatchRun, RunStats
from vlmcap.engines.batch.selection import TaskFilter
from vlmcap.engines.runtime.engines import Engines
from vlmcap.video.discovery import InputProblem


def records_in_memory(
    bundle: Bundle,
    settings: BatchConfig,
    engines: Engines | Callable[[], Engines],
    videos: Iterable[str | InputProblem],
    provenance: Provenance,
    *,
    stats: RunStats | None = None,
    progress: Progress | None = None,
) -> dict[str, dict[str, Any]]:
    """Each video's record by its name, from one run of the local pipeline over `videos` (nothing is
    skipped as done: no captions file is read), with the settings' remote options and caption guards
    as `vlmcap batch` has them. `engines`: open ones (the caller closes them), or a function that opens
    them once a video comes (closed at the end). `stats`, when given, is filled in."""
    tasks = TaskFilter(ResumeState(), remote=settings.remote_options)(videos)
    driver = LocalPipeline(bundle, settings, engines)
    progress = progress or Progress(False)
    by_video: dict[str, dict[str, Any]] = {}
    with BatchRun(driver, tasks, provenance, stats or RunStats(), progress, settings.quality.strict) as run:
        for records in run:
            by_video.update((r["video"], r) for r in records)
    return by_video
