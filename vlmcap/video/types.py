"""What decoding a video produces."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class VideoMeta:
    """Facts about the video stream, as the decoder that read it saw them (rotation already applied)."""

    duration_s: float
    fps: float
    num_frames: int
    width: int  # display width after rotation, before any decode-time downscaling
    height: int
    codec: str
    decoder: str
    rotation: int = 0  # degrees counter-clockwise from the container's display matrix


@dataclass
class DecodedVideo:
    """T sampled frames, RGB uint8 (T, H, W, 3), with their presentation times in seconds."""

    frames: np.ndarray
    timestamps_s: list[float]
    meta: VideoMeta
