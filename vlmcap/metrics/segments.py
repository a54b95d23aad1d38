"""Scoring captions per time segment (`vlmcap eval` on a manifest with start_s/end_s).

Each reference segment is compared with the predicted segment of its video that overlaps it most,
so a run that cuts a little early or late is still scored on the caption of the right scene; how
well the cuts themselves were found is a separate number, the boundary recall.
"""

from __future__ import annotations

from collections.abc import Sequence

from vlmcap.video.segments import Segment, overlap_s

# A predicted boundary this close to a reference cut finds it: a few frames either way, as a shot
# detector's cut lands on the first frame of the new shot and a hand-written time is rounded.
BOUNDARY_TOLERANCE_S = 0.5
# Boundaries closer than this are one (a start equal to the previous end, written rounded).
_SAME_BOUNDARY_S = 0.05


def _gap_s(a: Segment, b: Segment) -> float:
    return max(0.0, a.start_s - b.end_s, b.start_s - a.end_s)


def best_match(reference: Segment, predicted: Sequence[Segment]) -> int:
    """Index of the predicted segment with the largest overlap with `reference` (the nearest one when
    none overlaps; the earliest on a tie). `predicted` must not be empty."""
    if not predicted:
        raise ValueError("no predicted segments to match")
    return max(
        range(len(predicted)), key=lambda i: (overlap_s(reference, predicted[i]), -_gap_s(reference, predicted[i]), -i)
    )


def inner_boundaries(segments: Sequence[Segment], duration_s: float) -> list[float]:
    """The segments' starts and ends inside the video (its own start and end are not cuts), sorted,
    with boundaries closer than a frame or so merged."""
    times = sorted(
        t for s in segments for t in (s.start_s, s.end_s) if _SAME_BOUNDARY_S < t < duration_s - _SAME_BOUNDARY_S
    )
    merged: list[float] = []
    for t in times:
        if not merged or t - merged[-1] > _SAME_BOUNDARY_S:
            merged.append(t)
    return merged


def boundaries_found(
    reference_cuts: Sequence[float], predicted_cuts: Sequence[float], tolerance_s: float = BOUNDARY_TOLERANCE_S
) -> int:
    """How many reference cuts have a predicted boundary within `tolerance_s`."""
    return sum(any(abs(r - p) <= tolerance_s for p in predicted_cuts) for r in reference_cuts)
