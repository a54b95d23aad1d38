"""The videos a driver has taken and not finished yet: the one bookkeeping both drivers share.

A video is taken once however often it is named; it is finished by its failure (an error outcome
at once, its segments captioned so far dropped, any still in the pipeline ignored) or by its
caption (with `--segments`, when its last segment is captioned: segment_assembly.py gathers
them). The local driver (pipeline.py) and the Ray driver (ray_pipeline.py) build an `Outcome` per
item as they get it and hand it here; what comes back is what the run writes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from vlmcap.engines.batch.records import Outcome
from vlmcap.engines.batch.segment_assembly import SegmentAssembly
from vlmcap.engines.batch.selection import VideoTask

if TYPE_CHECKING:
    from vlmcap.video.worker import SegmentRef


class InFlight:
    def __init__(self) -> None:
        self._tasks: dict[str, VideoTask] = {}
        self._segments = SegmentAssembly()

    def __len__(self) -> int:
        return len(self._tasks)

    def admit(self, task: VideoTask) -> bool:
        """Take `task`; False when its video is in flight already (named twice)."""
        if task.video in self._tasks:
            return False
        self._tasks[task.video] = task
        return True

    def task(self, video: str) -> VideoTask | None:
        """The task of `video`, or None once it is finished (a late segment of a failed video)."""
        return self._tasks.get(video)

    def failed(self, outcome: Outcome) -> Outcome:
        """A video's error outcome: it is finished, and its segments are dropped."""
        self._segments.fail(outcome.task.video)
        self._tasks.pop(outcome.task.video, None)
        return outcome

    def captioned(self, outcome: Outcome, segment: SegmentRef | None = None) -> Outcome | None:
        """A captioned video, or one captioned segment of it: the video's outcome when it is complete,
        None while segments are missing or when the video has failed meanwhile."""
        video = outcome.task.video
        if video not in self._tasks:
            return None
        if segment is not None:
            whole = self._segments.add(outcome, segment)
            if whole is None:
                return None
            outcome = whole
        del self._tasks[video]
        return outcome
