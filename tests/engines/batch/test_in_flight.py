"""engines/batch/in_flight.py: the bookkeeping both drivers share (each driver's own tests run it end to end:
tests/core/video/test_segments.py locally, tests/engines/batch/test_ray.py on Ray)."""

from __future__ import annotations

from vlmcap.engines.batch.in_flight import InFlight
from vlmcap.engines.batch.records import Outcome
from vlmcap.engines.batch.selection import VideoTask
from vlmcap.video.worker import SegmentRef


def _task(video: str) -> VideoTask:
    return VideoTask(video, None, real_path=f"/real/{video}")


def _part(task: VideoTask, caption: str, duration_s: float = 9.0) -> Outcome:
    return Outcome(task, decode_ms=1.0, caption=caption, duration_s=duration_s, frames_s=[0.5], finish_reason="stop")


def test_a_video_is_taken_once_and_finished_by_its_caption() -> None:
    flight = InFlight()
    a = _task("a.mp4")
    assert flight.admit(a) and not flight.admit(_task("a.mp4")) and len(flight) == 1
    done = flight.captioned(_part(a, "하나"))
    assert done is not None and done.caption == "하나" and len(flight) == 0 and flight.task("a.mp4") is None
    assert flight.captioned(_part(a, "again")) is None  # finished: a late copy is not a second line


def test_segments_are_gathered_in_order_into_one_outcome() -> None:
    flight = InFlight()
    long = _task("long.mp4")
    flight.admit(long)
    spans = [SegmentRef(i, 3, 3.0 * i, 3.0 * (i + 1)) for i in range(3)]
    assert flight.captioned(_part(long, "둘"), spans[1]) is None
    assert flight.captioned(_part(long, "셋"), spans[2]) is None
    whole = flight.captioned(_part(long, "하나"), spans[0])
    assert whole is not None and [s.caption for s in whole.segments] == ["하나", "둘", "셋"]
    assert whole.decode_ms == 3.0 and len(flight) == 0


def test_a_failure_finishes_the_video_and_drops_its_segments() -> None:
    flight = InFlight()
    long = _task("long.mp4")
    flight.admit(long)
    assert flight.captioned(_part(long, "하나"), SegmentRef(0, 2, 0.0, 3.0)) is None
    failed = flight.failed(Outcome(long, 2.0, "TruncatedVideo", "cut short"))
    assert failed.error_type == "TruncatedVideo" and flight.task("long.mp4") is None
    assert flight.captioned(_part(long, "둘"), SegmentRef(1, 2, 3.0, 6.0)) is None  # no partial line ever
