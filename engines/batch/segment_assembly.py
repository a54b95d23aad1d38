"""A long video's segment captions, gathered back into the one outcome (and JSONL line) of its file.

Segments travel through vision and the LLM as independent items, mixed with other videos' so
they fill engine batches like short videos do (docs/BATCH.md, "Segments"). The file stays the
unit of output and resume: its outcome is complete when its last segment is captioned, and a
video whose decoding fails part-way, or a run that stops before its end, leaves no partial line.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from vlmcap.engines.batch.records import Outcome, SegmentCaption

if TYPE_CHECKING:
    from vlmcap.video.worker import SegmentRef


@dataclass
class _Partial:
    outcome: Outcome
    count: int
    parts: dict[int, SegmentCaption] = field(default_factory=dict)


class SegmentAssembly:
    """Both drivers build an `Outcome` per captioned item as for a whole video; for a segment they
    hand it here with its `SegmentRef` and get the video's outcome back with its last segment."""

    def __init__(self) -> None:
        self._partial: dict[str, _Partial] = {}
        self._failed: set[str] = set()

    def add(self, part: Outcome, segment: SegmentRef) -> Outcome | None:
        """One captioned segment (its caption, frames and times in `part`); the video's outcome
        once all its segments are in, None before, and None for a video that failed meanwhile."""
        video = part.task.video
        if video in self._failed:
            return None  # its error line is written; segments still in the pipeline are dropped
        partial = self._partial.get(video)
        if partial is None:
            whole = Outcome(part.task, 0.0, duration_s=part.duration_s, decoder=part.decoder)
            partial = self._partial[video] = _Partial(whole, segment.count)
        whole = partial.outcome
        whole.decode_ms += part.decode_ms
        whole.vision_ms += part.vision_ms
        whole.llm_ms += part.llm_ms
        partial.parts[segment.index] = SegmentCaption(
            segment.start_s,
            segment.end_s,
            part.caption,
            part.frames_s,
            part.num_tokens,
            part.finish_reason,
            part.quality,
            part.thumbnail,
        )
        if len(partial.parts) < partial.count:
            return None
        del self._partial[video]
        whole.set_segments([partial.parts[i] for i in range(partial.count)])
        return whole

    def fail(self, video: str) -> None:
        """The video failed: its segments captioned so far, and any still to come, are dropped."""
        self._partial.pop(video, None)
        self._failed.add(video)
