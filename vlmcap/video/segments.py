"""Time segments of a long video, each captioned on its own (docs/VIDEO.md, "Segments").

    none        the whole file is one caption (the default, today's behaviour)
    fixed:S     consecutive windows of S seconds
    scenes      shots found by a shot detector (scenes.py), bounded by a minimum and a maximum length

Times are seconds from the first frame, as `frames_s` in the records and a player show them.
Planning is pure arithmetic on the duration and the cut times, so the same file always gets the
same segments: a retry after a crashed decoder resumes at the segment it had reached.
"""

from __future__ import annotations

import itertools
import math
import re
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


def fixed_segments(duration_s: float, window_s: float, min_s: float) -> list[Segment]:
    """Windows of `window_s` from 0; a last window shorter than `min_s` joins the one before it,
    and a video shorter than one window is one segment."""
    count = max(1, math.ceil(duration_s / window_s - 1e-9))
    bounds = [min(i * window_s, duration_s) for i in range(count)] + [duration_s]
    return _merge_short([Segment(a, b) for a, b in itertools.pairwise(bounds)], min_s)


def scene_segments(cuts_s: list[float], duration_s: float, min_s: float, max_s: float) -> list[Segment]:
    """Shots between `cuts_s`, with shots shorter than `min_s` joined to a neighbour (a flickering
    file does not become thousands of segments) and shots longer than `max_s` split into equal
    parts (a static hour does not become one caption)."""
    inside = sorted(t for t in cuts_s if 0.0 < t < duration_s)
    bounds = [0.0, *inside, duration_s]
    shots = _merge_short([Segment(a, b) for a, b in itertools.pairwise(bounds) if b > a], min_s)
    segments = []
    for shot in shots:
        parts = max(1, math.ceil(shot.length_s / max_s - 1e-9))
        edges = [shot.start_s + shot.length_s * i / parts for i in range(parts)] + [shot.end_s]
        segments += [Segment(a, b) for a, b in itertools.pairwise(edges)]
    return segments


def plan_segments(plan: SegmentPlan, duration_s: float, cuts_s: list[float] | None = None) -> list[Segment]:
    if plan.mode == "fixed":
        return fixed_segments(duration_s, plan.window_s, plan.min_s)
    return scene_segments(cuts_s or [], duration_s, plan.min_s, plan.max_s)


def _merge_short(segments: list[Segment], min_s: float) -> list[Segment]:
    """Join each segment shorter than `min_s` to its shorter neighbour, until none is left (or one remains)."""
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


def overlap_s(a: Segment, b: Segment) -> float:
    return max(0.0, min(a.end_s, b.end_s) - max(a.start_s, b.start_s))
