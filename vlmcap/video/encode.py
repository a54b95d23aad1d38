"""H.264 files from RGB frames, streamed (synthetic data sets, benchmark inputs)."""

from __future__ import annotations

from collections.abc import Iterable
from fractions import Fraction
from pathlib import Path

import av
import numpy as np


def write_h264(
    path: Path, frames: Iterable[np.ndarray], fps: int, width: int, height: int, x264_options: dict[str, str]
) -> None:
    """Encode (height, width, 3) uint8 RGB frames at `fps` as yuv420p H.264, one frame in memory at a time."""
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = x264_options
        stream.codec_context.time_base = Fraction(1, fps)
        for image in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
