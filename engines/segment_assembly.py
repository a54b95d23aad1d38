"""A long video's segment captions, gathered back into the one outcome (and JSONL line) of its file.

Segments travel through vision and the LLM as independent items, mixed with other videos' so
they fill engine batches like short videos do (docs/BATCH.md, "Segments"). The file stays the
unit of output and resume: its outcome is complete when its last segment is captioned, and a
video whose decoding fails part-way, or a run that stops before its end, leaves no partial line.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from vlmcap.engines.records import Outcome, SegmentCaption
from vlmcap.engines.selection import VideoTask

if TYPE_CHECKING:
    from vlmcap.engines.captioner import Caption
    from vlmcap.video.worker import DecodeResult


@dataclass
class _Partial:
    outcome: Outcome
    count: int
    parts: dict[int, SegmentCaption] = field(default_factory=dict)


class SegmentAssembly:
    def __init__(self) -> None:
        self._partial: dict[str, _Partial] = {}

    def add(
        self, task: VideoTask, result: DecodeResult, caption: Caption, vision_ms: float, llm_ms: float
    ) -> Outcome | None:
        """Record one captioned segment (and its share of its batches' time); the video's outcome
        once all its segments are in."""
        segment, video = result.segment, result.video
        assert segment is not None and video is not None
        partial = self._partial.get(result.path)
        if partial is None:
            outcome = Outcome.decoded(task, result)
            outcome.decode_ms, outcome.frames_s = 0.0, []
            partial = self._partial[result.path] = _Partial(outcome, segment.count)
        partial.outcome.decode_ms += result.decode_ms
        partial.outcome.vision_ms += vision_ms
        partial.outcome.llm_ms += llm_ms
        partial.parts[segment.index] = SegmentCaption(
            start_s=segment.start_s,
            end_s=segment.end_s,
            caption=caption.text,
            frames_s=[round(t, 3) for t in video.timestamps_s],
            num_tokens=caption.num_tokens,
            finish_reason=caption.finish_reason,
        )
        if len(partial.parts) < partial.count:
            return None
        del self._partial[result.path]
        partial.outcome.set_segments([partial.parts[i] for i in range(partial.count)])
        return partial.outcome

    def discard(self, path: str) -> None:
        """The video failed: its segments captioned so far are dropped (the error line replaces them)."""
        self._partial.pop(path, None)
