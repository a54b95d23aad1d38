"""Time segments of a long video, each captioned on its own (docs/VIDEO.md, "Segments").

    none        the whole file is one caption (the default, today's behaviour)
    fixed:S     consecutive windows of S seconds
    scenes      shots found by a shot detector (scenes.py), bounded by a minimum and a maximum length

Times are seconds from the first frame, as `frames_s` in the records and a player show them.
Planning is pure arithmetic on the duration, the cut times and the frame times, so the same file
always gets the same segments: a retry after a crashed decoder resumes at the segment it had reached.

Given the file's frame times, a plan costs what the file is, not what its timestamps claim: only
windows (or parts of a long shot) that hold a frame are made, each reaching to the next one, so a
1.7 KB file whose last frame is stamped a week later plans two segments, not 20,160 (or, at
`fixed:0.001`, 600 million).
"""

from __future__ import annotations

import bisect
import heapq
import itertools
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

SEGMENTS_SPEC = "none, fixed:SECONDS (e.g. fixed:30) or scenes"


@dataclass(frozen=True)
class Segment:
    start_s: float
    end_s: float

    @property
    def length_s(self) -> float:
        return self.end_s - self.start_s


@dataclass(frozen=True)
class SegmentPlan:
    """How a run cuts videos into segments (a run with no plan captions whole files)."""

    mode: str  # fixed | scenes
    window_s: float = 0.0  # fixed: the window length
    min_s: float = 2.0  # shorter pieces join their neighbour (a tail, a flash, a flicker)
    max_s: float = 60.0  # scenes: longer shots are split into equal parts no longer than this
    scene_threshold: float = 27.0  # PySceneDetect ContentDetector's score for a cut (its default)


def parse_segments(text: str) -> tuple[str, float]:
    """`none` | `fixed:30` | `scenes` -> (mode, window_s); ValueError with the accepted forms otherwise."""
    text = text.strip()
    if text in ("none", "scenes"):
        return text, 0.0
    match = re.fullmatch(r"fixed:(\d+(?:\.\d*)?)", text)
    window_s = float(match.group(1)) if match else 0.0
    if math.isinf(window_s):  # digits beyond float's range: would become `"start_s": Infinity/NaN` in records
        raise ValueError(f"{text[:40]!r}...: the window is too large a number of seconds")
    if window_s > 0:
        return "fixed", window_s
    raise ValueError(f"{text!r}: expected {SEGMENTS_SPEC}")


def _parts_holding_frames(
    start_s: float,
    end_s: float,
    count: int,
    edge: Callable[[int], float],
    index_of: Callable[[float], int],
    frame_times_s: Sequence[float],
) -> list[Segment]:
    """[start_s, end_s] cut at `edge(1..count-1)`, keeping only the parts that hold one of the
    (sorted) `frame_times_s`, each reaching to the next kept one (the first from `start_s`): what
    `with_frames` would leave of all `count` parts, in time linear in the frames inside, however
    large `count` is."""
    inside = frame_times_s[bisect.bisect_left(frame_times_s, start_s) : bisect.bisect_right(frame_times_s, end_s)]
    kept = sorted({min(max(index_of(t), 0), count - 1) for t in inside})
    if not kept:
        return [Segment(start_s, end_s)]  # no frame at all: with_frames joins it to a neighbour
    starts = [start_s, *(edge(k) for k in kept[1:])]
    return [Segment(a, b) for a, b in zip(starts, [*starts[1:], end_s], strict=True)]


def fixed_segments(
    duration_s: float, window_s: float, min_s: float, frame_times_s: Sequence[float] | None = None
) -> list[Segment]:
    """Windows of `window_s` from 0; a last window shorter than `min_s` joins the one before it,
    and a video shorter than one window is one segment. With `frame_times_s`, only the windows
    that hold a frame (bounded by the file, not by its claimed duration)."""
    count = max(1, math.ceil(duration_s / window_s - 1e-9))
    if frame_times_s is None:
        bounds = [min(i * window_s, duration_s) for i in range(count)] + [duration_s]
        windows = [Segment(a, b) for a, b in itertools.pairwise(bounds)]
    else:
        windows = _parts_holding_frames(
            0.0, duration_s, count, lambda i: min(i * window_s, duration_s), lambda t: int(t // window_s), frame_times_s
        )
    return _merge_short(windows, min_s)


def scene_segments(
    cuts_s: list[float],
    duration_s: float,
    min_s: float,
    max_s: float,
    frame_times_s: Sequence[float] | None = None,
) -> list[Segment]:
    """Shots between `cuts_s`, with shots shorter than `min_s` joined to a neighbour (a flickering
    file does not become thousands of segments) and shots longer than `max_s` split into equal
    parts (a static hour does not become one caption): with `frame_times_s`, only the parts that
    hold a frame."""
    inside = sorted(t for t in cuts_s if 0.0 < t < duration_s)
    bounds = [0.0, *inside, duration_s]
    shots = _merge_short([Segment(a, b) for a, b in itertools.pairwise(bounds) if b > a], min_s)
    segments = []
    for shot in shots:
        segments += _split(shot, max(1, math.ceil(shot.length_s / max_s - 1e-9)), frame_times_s)
    return segments


def _split(shot: Segment, parts: int, frame_times_s: Sequence[float] | None) -> list[Segment]:
    """`shot` in `parts` equal parts; with `frame_times_s`, only those holding a frame."""

    def edge(i: int) -> float:
        return shot.start_s + shot.length_s * i / parts

    if frame_times_s is None or parts == 1:
        return [Segment(a, b) for a, b in itertools.pairwise([*map(edge, range(parts)), shot.end_s])]
    step = shot.length_s / parts
    return _parts_holding_frames(
        shot.start_s, shot.end_s, parts, edge, lambda t: int((t - shot.start_s) // step), frame_times_s
    )


def plan_segments(
    plan: SegmentPlan,
    duration_s: float,
    cuts_s: list[float] | None = None,
    frame_times_s: Sequence[float] | None = None,
) -> list[Segment]:
    """The plan's segments of a file of `duration_s`; given the file's (sorted) `frame_times_s`,
    bounded by them (then `with_frames` makes sure each segment holds one)."""
    if plan.mode == "fixed":
        return fixed_segments(duration_s, plan.window_s, plan.min_s, frame_times_s)
    return scene_segments(cuts_s or [], duration_s, plan.min_s, plan.max_s, frame_times_s)


def _merge_short(segments: list[Segment], min_s: float) -> list[Segment]:
    """Join each segment shorter than `min_s` to its shorter neighbour (the left one on a tie), the
    shortest first (the leftmost of equals), until none is left or one remains.

    A heap of the live segments by (length, start) and links to their neighbours, so a plan of n
    windows costs O(n log n): the earlier rescan of every segment after each merge made a long file
    cut below `segment_min_s` take minutes to plan.
    """
    n = len(segments)
    if n <= 1:
        return list(segments)
    start = [s.start_s for s in segments]
    end = [s.end_s for s in segments]
    left = list(range(-1, n - 1))
    right = [*range(1, n), -1]
    alive = [True] * n
    heap = [(end[i] - start[i], start[i], i) for i in range(n)]
    heapq.heapify(heap)
    count = n
    while count > 1 and heap:
        length, first, i = heapq.heappop(heap)
        if not alive[i] or length != end[i] - start[i] or first != start[i]:
            continue  # an entry from before this segment grew
        if length >= min_s:
            break  # the shortest is long enough: so is every other
        a, b = left[i], right[i]
        if a < 0:
            keep, gone = i, b
        elif b < 0:
            keep, gone = a, i
        else:
            keep, gone = (a, i) if end[a] - start[a] <= end[b] - start[b] else (i, b)
        end[keep] = end[gone]  # `keep` is the left one of the two: it takes the right one's end
        alive[gone] = False
        right[keep] = right[gone]
        if right[gone] >= 0:
            left[right[gone]] = keep
        count -= 1
        heapq.heappush(heap, (end[keep] - start[keep], start[keep], keep))
    return [Segment(start[i], end[i]) for i in range(n) if alive[i]]


def with_frames(segments: list[Segment], frame_times_s: Sequence[float]) -> list[Segment]:
    """`segments` joined so that each holds at least one of the file's frames: a segment without one
    (a timestamp jump of a week in a 1.7 KB file) joins the one before it (the first: the one after),
    so a plan never has more segments than the file has frames. Linear in both."""
    if not segments or not len(frame_times_s):
        return list(segments)
    kept: list[Segment] = []
    pending_start: float | None = None  # frameless segments at the very beginning, waiting for one
    f, times = 0, frame_times_s  # sorted (VideoProbe.frame_times_s)
    for index, segment in enumerate(segments):
        last = index == len(segments) - 1
        while f < len(times) and times[f] < segment.start_s:
            f += 1
        has_frame = f < len(times) and (times[f] < segment.end_s or (last and times[f] <= segment.end_s))
        if has_frame:
            kept.append(Segment(pending_start if pending_start is not None else segment.start_s, segment.end_s))
            pending_start = None
        elif kept:
            kept[-1] = Segment(kept[-1].start_s, segment.end_s)
        elif pending_start is None:
            pending_start = segment.start_s
    return kept or [Segment(segments[0].start_s, segments[-1].end_s)]  # no segment held a frame: one span


def overlap_s(a: Segment, b: Segment) -> float:
    return max(0.0, min(a.end_s, b.end_s) - max(a.start_s, b.start_s))
