"""vlmcap/video/segments.py: plans cost what the file is, not what its timestamps claim."""

from __future__ import annotations

import itertools
import random

from vlmcap.video.segments import Segment, SegmentPlan, _merge_short, plan_segments, with_frames


def _merge_short_reference(segments: list[Segment], min_s: float) -> list[Segment]:
    """The rule as first written (a rescan after every merge): what the fast one must equal."""
    segments = list(segments)
    while len(segments) > 1:
        short = [i for i, s in enumerate(segments) if s.length_s < min_s]
        if not short:
            break
        i = min(short, key=lambda k: segments[k].length_s)
        if i == 0:
            j = 1
        elif i == len(segments) - 1:
            j = i - 1
        else:
            j = i - 1 if segments[i - 1].length_s <= segments[i + 1].length_s else i + 1
        a, b = sorted((i, j))
        segments[a : b + 1] = [Segment(segments[a].start_s, segments[b].end_s)]
    return segments


def test_merging_short_pieces_equals_the_reference_rule() -> None:
    rng = random.Random(7)
    for _ in range(300):
        cuts = sorted({round(rng.uniform(0, 60), rng.choice([0, 1, 2])) for _ in range(rng.randint(0, 40))})
        bounds = [0.0, *[c for c in cuts if 0 < c < 60], 60.0]
        pieces = [Segment(a, b) for a, b in itertools.pairwise(bounds)]
        min_s = rng.choice([0.5, 2.0, 5.0, 100.0])
        assert _merge_short(pieces, min_s) == _merge_short_reference(pieces, min_s)


def test_a_day_cut_below_the_minimum_is_planned_in_one_pass() -> None:
    day = 86_400.0
    plan = plan_segments(SegmentPlan("fixed", 1.0, min_s=2.0), day)  # 86,400 windows, each too short
    assert plan[0].start_s == 0 and plan[-1].end_s == day
    assert all(s.length_s >= 2.0 for s in plan) and len(plan) == 43_200


def test_a_plan_never_has_more_segments_than_the_file_has_frames() -> None:
    week = 7 * 86_400.0
    frames = [i / 8 for i in range(8)] + [week]  # a 1-second clip, then one frame a week later
    plan = with_frames(plan_segments(SegmentPlan("fixed", 30.0), week), frames)
    assert len(plan) <= len(frames) and plan[0].start_s == 0 and plan[-1].end_s == week
    assert len(plan_segments(SegmentPlan("fixed", 30.0), week)) == 20_160  # what was planned before
    for segment in plan:
        assert any(segment.start_s <= t < segment.end_s or t == segment.end_s == week for t in frames)
    assert with_frames([Segment(0, 10), Segment(10, 20)], [15.0]) == [Segment(0, 20)]
    assert with_frames([Segment(0, 10), Segment(10, 20)], []) == [Segment(0, 10), Segment(10, 20)]


def test_given_its_frames_a_plan_costs_the_frames_not_the_claimed_duration() -> None:
    week = 7 * 86_400.0
    frames = [i / 8 for i in range(8)] + [week]
    for plan in (SegmentPlan("fixed", 0.001, min_s=0.0), SegmentPlan("scenes", min_s=0.0, max_s=0.001)):
        # 604.8 million windows (or parts of the one shot) claimed; only those with a frame are made
        planned = plan_segments(plan, week, [], frames)
        assert len(planned) == len(frames) and planned[0].start_s == 0 and planned[-1].end_s == week
        assert with_frames(planned, frames) == planned
