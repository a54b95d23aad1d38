"""Which frames to take: the middle of T equal time segments (docs/VIDEO.md)."""

from __future__ import annotations

import numpy as np

from vlmcap.video.segments import Segment


def segment_middle_times(duration_s: float, num_frames: int, start_s: float = 0.0) -> np.ndarray:
    """Times at the middle of `num_frames` equal segments of [start, start + duration)."""
    return start_s + (np.arange(num_frames) + 0.5) * (duration_s / num_frames)


def frames_at_times(frame_times_s: np.ndarray, targets_s: np.ndarray) -> np.ndarray:
    """Index of the frame on screen at each target time (last frame starting at or before it).

    `frame_times_s` are the presentation times of every frame, sorted. Works for variable frame
    rate, and for videos with fewer frames than targets (indices then repeat).
    """
    # The epsilon keeps a target that lands exactly on a frame's start (CFR) from rounding down.
    idx = np.searchsorted(frame_times_s, np.asarray(targets_s) + 1e-6, side="right") - 1
    return np.clip(idx, 0, len(frame_times_s) - 1)


def sample_indices(
    frame_times_s: np.ndarray, end_s: float, num_frames: int, window: Segment | None = None
) -> np.ndarray:
    """Frame indices for T segments spanning from the first frame to `end_s`, or `window` only
    (seconds from the first frame, as a segment of a long video or a labelled one is given)."""
    first = float(frame_times_s[0])
    if window is None:
        window = Segment(0.0, max(end_s - first, 0.0))
    return frames_at_times(frame_times_s, segment_middle_times(window.length_s, num_frames, first + window.start_s))
