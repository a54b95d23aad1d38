"""Properties of the segment planner (vlmcap/video/segments.py) over inputs hypothesis makes up:
a plan tiles the file, joins what is too short, splits what is too long, and never has a segment
without a frame or more segments than frames."""

from __future__ import annotations

import itertools

from hypothesis import given, settings
from hypothesis import strategies as st

from vlmcap.video.segments import Segment, SegmentPlan, _merge_short, plan_segments, with_frames

seconds = st.floats(min_value=0.01, max_value=10_000, allow_nan=False, allow_infinity=False)
plans = st.one_of(
    st.builds(SegmentPlan, mode=st.just("fixed"), window_s=st.floats(1, 1_000), min_s=st.floats(0, 100)),
    st.builds(
        SegmentPlan, mode=st.just("scenes"), min_s=st.floats(0, 100), max_s=st.floats(1, 1_000), window_s=st.just(0.0)
    ),
)


def _tiles(segments: list[Segment], duration_s: float) -> None:
    assert segments[0].start_s == 0.0 and segments[-1].end_s == duration_s
    assert all(a.end_s == b.start_s for a, b in itertools.pairwise(segments))
    assert all(s.end_s >= s.start_s for s in segments)


@settings(max_examples=300, deadline=None)
@given(plan=plans, duration_s=seconds, cuts=st.lists(st.floats(-10, 10_010, allow_nan=False), max_size=60))
def test_a_plan_tiles_the_file_and_respects_its_bounds(plan: SegmentPlan, duration_s: float, cuts: list[float]) -> None:
    segments = plan_segments(plan, duration_s, cuts)
    _tiles(segments, duration_s)
    if plan.mode == "scenes":
        # Every shot no longer than max_s (to float rounding), and a short one only when the file is.
        assert all(s.length_s <= plan.max_s * (1 + 1e-9) for s in segments)
    else:
        short = [s for s in segments if s.length_s < plan.min_s]
        assert not short or len(segments) == 1


@settings(max_examples=300, deadline=None)
@given(lengths=st.lists(st.floats(0, 50, allow_nan=False), min_size=1, max_size=80), min_s=st.floats(0, 60))
def test_merging_leaves_no_short_piece_unless_one_is_left(lengths: list[float], min_s: float) -> None:
    bounds = list(itertools.accumulate(lengths, initial=0.0))
    pieces = [Segment(a, b) for a, b in itertools.pairwise(bounds)]
    merged = _merge_short(pieces, min_s)
    _tiles(merged, bounds[-1])
    assert len(merged) == 1 or all(s.length_s >= min_s for s in merged)
    assert {s.start_s for s in merged} <= {p.start_s for p in pieces}  # only joins, never new cuts


@settings(max_examples=300, deadline=None)
@given(
    plan=plans,
    duration_s=seconds,
    frames=st.lists(st.floats(0, 10_000, allow_nan=False), min_size=1, max_size=120),
)
def test_every_segment_holds_a_frame_and_there_are_never_more_segments_than_frames(
    plan: SegmentPlan, duration_s: float, frames: list[float]
) -> None:
    times = sorted(t for t in frames if t <= duration_s) or [0.0]
    planned = plan_segments(plan, duration_s, [duration_s / 3], times)  # as the decoder plans: bounded by frames
    assert len(planned) <= len(times) + 2  # a frameless shot is one segment until with_frames joins it
    segments = with_frames(planned, times)
    _tiles(segments, duration_s)
    assert len(segments) <= len(times)
    for i, s in enumerate(segments):
        last = i == len(segments) - 1
        assert any(s.start_s <= t < s.end_s or (last and t == s.end_s) for t in times) or len(segments) == 1
