"""What a run reports per video (`Outcome`), and the JSONL record it becomes (docs/BATCH.md, "Output").

Drivers produce outcomes; `to_record` is the one place the record schema is written, so the local
pipeline and Ray write identical lines.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from vlmcap.engines.batch.provenance import Provenance
from vlmcap.engines.batch.selection import VideoTask
from vlmcap.engines.runtime.caption_quality import Quality

if TYPE_CHECKING:  # the worker module imports torch; records are built before the lock is taken too
    from vlmcap.video.worker import DecodeResult


@dataclass
class SegmentCaption:
    """One time segment of a video and its caption (docs/BATCH.md, "Segments")."""

    start_s: float
    end_s: float
    caption: str
    frames_s: list[float]
    num_tokens: int
    finish_reason: str
    quality: Quality = field(default_factory=Quality)
    thumbnail: str | None = None  # --thumbnails: the contact sheet of this segment's frames


@dataclass
class Outcome:
    """One video's result: decoded and captioned, or the typed error that stopped it."""

    task: VideoTask
    decode_ms: float
    error_type: str | None = None  # set: the video failed (a VideoError subclass name)
    error_message: str = ""
    frames_s: list[float] = field(default_factory=list)
    duration_s: float = 0.0
    decoder: str = ""
    caption: str = ""
    num_tokens: int = 0
    finish_reason: str = ""  # "stop" (end of turn) or "length" (cut at max_new_tokens)
    vision_ms: float = 0.0  # vision and LLM run per batch: this video's share of its batch
    llm_ms: float = 0.0
    segments: list[SegmentCaption] | None = None  # a run with --segments: the captions per time segment
    quality: Quality = field(
        default_factory=Quality
    )  # the caption guards' findings (engines/runtime/caption_quality.py)
    duplicate_of: str | None = None  # --dedup: the video whose caption (or error) this copies (engines/batch/dedup.py)
    # --dedup: the caption (or error) is an earlier one of the same bytes, no engine ran for it: a
    # copy (`duplicate_of`), or a touched file's own earlier caption (it stays the original)
    copied: bool = False
    # --thumbnails: the contact sheet of its frames (a segmented video: its first segment's)
    thumbnail: str | None = None

    @property
    def ok(self) -> bool:
        return self.error_type is None

    @classmethod
    def unreadable(cls, task: VideoTask) -> Outcome:
        """An input entry that could not be looked into (discovery's `InputProblem`)."""
        assert task.problem is not None
        return cls(task, 0.0, task.problem.error_type, task.problem.message)

    @classmethod
    def failed(cls, task: VideoTask, result: DecodeResult) -> Outcome:
        return cls(task, result.decode_ms, result.error_type or "VideoError", result.error_message or "")

    @classmethod
    def decoded(cls, task: VideoTask, result: DecodeResult) -> Outcome:
        """A decoded video, caption still to come."""
        video = result.video
        assert video is not None
        return cls(
            task,
            result.decode_ms,
            frames_s=[round(t, 3) for t in video.timestamps_s],
            duration_s=round(video.meta.duration_s, 3),
            decoder=video.meta.decoder,
            thumbnail=result.thumbnail,
        )

    def set_segments(self, segments: list[SegmentCaption]) -> None:
        """The video's captions per segment; the whole-file fields summarise them: the captions in
        time order one per line, every frame, the tokens summed, "length" when any was cut."""
        self.segments = segments
        self.caption = "\n".join(s.caption for s in segments)
        self.frames_s = [t for s in segments for t in s.frames_s]
        self.num_tokens = sum(s.num_tokens for s in segments)
        self.finish_reason = "length" if any(s.finish_reason == "length" for s in segments) else "stop"
        self.quality = Quality.combine(s.quality for s in segments)
        self.thumbnail = segments[0].thumbnail if segments else None

    def reject_flagged(self) -> bool:
        """`--strict-quality`: a caption the guards still flag becomes an error; True when it did."""
        if not self.ok or not self.quality.flags:
            return False
        self.error_type = "CaptionQualityError"
        retry = " after a retry" if self.quality.retried else ""
        self.error_message = f"{self.task.video}: caption flagged{retry}: {', '.join(self.quality.flags)}"
        return True


def utc_now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def to_record(outcome: Outcome, provenance: Provenance) -> dict[str, Any]:
    o = outcome
    head: dict[str, Any] = {"video": o.task.video}
    if o.ok:
        head |= {
            "status": "ok",
            "caption": o.caption,
            "frames_s": [float(t) for t in o.frames_s],
            "duration_s": float(o.duration_s),
            "decoder": o.decoder,
        }
    else:
        head |= {"status": "error", "error": {"type": o.error_type, "message": o.error_message}}
        if o.quality.flags:  # --strict-quality: what the guards found in the caption it refused
            head["quality"] = o.quality.to_dict()
    if o.thumbnail is not None:  # also on an error line when the frames were seen (--strict-quality)
        head["thumbnail"] = o.thumbnail
    if o.duplicate_of is not None:  # --dedup: the caption (or error) is copied from that video's line
        head["duplicate_of"] = o.duplicate_of
    head |= {"bundle": provenance.bundle_id, "prompt": provenance.prompt}
    if o.ok:
        head |= {"num_tokens": int(o.num_tokens), "finish_reason": o.finish_reason, "quality": o.quality.to_dict()}
        if o.segments is not None:
            head["segments"] = [
                {
                    "start_s": float(s.start_s),
                    "end_s": float(s.end_s),
                    "caption": s.caption,
                    "frames_s": [float(t) for t in s.frames_s],
                    "num_tokens": int(s.num_tokens),
                    "finish_reason": s.finish_reason,
                    "quality": s.quality.to_dict(),
                    **({"thumbnail": s.thumbnail} if s.thumbnail is not None else {}),
                }
                for s in o.segments
            ]
        timings = {"decode": round(o.decode_ms, 1), "vision": round(o.vision_ms, 1), "llm": round(o.llm_ms, 1)}
    else:
        timings = {"decode": round(o.decode_ms, 1)}
    return {
        **head,
        "timings_ms": timings,
        "file": {"path": o.task.real_path, **o.task.identity.as_dict()} if o.task.identity else None,
        **({"sha256": o.task.sha256} if o.task.sha256 is not None else {}),
        "provenance": provenance.fields,
        "finished_at": utc_now(),
    }
