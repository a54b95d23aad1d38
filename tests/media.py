"""Test clips made with PyAV: several codecs and containers, odd shapes, rotation, variable frame rate."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np


def pattern(index: int, width: int, height: int) -> np.ndarray:
    """A frame whose content says which frame it is: a bright bar that moves right, on a colour ramp."""
    img = np.zeros((height, width, 3), np.uint8)
    img[..., 0] = np.linspace(0, 255, width, dtype=np.uint8)[None, :]
    img[..., 2] = np.linspace(0, 255, height, dtype=np.uint8)[:, None]
    x = (index * 7) % max(width - 4, 1)
    img[:, x : x + 4, 1] = 255
    return img


def write_clip(
    path: Path,
    codec: str = "libx264",
    width: int = 160,
    height: int = 96,
    num_frames: int = 30,
    fps: int = 10,
    pix_fmt: str = "yuv420p",
    rotation: int = 0,
    frame_times_s: list[float] | None = None,
    marker: bool = False,
) -> Path:
    """Encode `num_frames` pattern frames; `frame_times_s` gives variable-rate timestamps."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as out:
        stream = out.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
        stream.options = {"libsvtav1": {"preset": "12"}, "libx265": {"x265-params": "log-level=error"}}.get(codec, {})
        if frame_times_s is not None:
            stream.codec_context.time_base = Fraction(1, 1000)
        if rotation:
            stream.set_display_rotation(rotation)
        for i in range(num_frames):
            img = pattern(i, width, height)
            if marker:  # a white block in the top-left corner, to check orientation
                img[: height // 4, : width // 4] = 255
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            if frame_times_s is not None:
                frame.pts = round(frame_times_s[i] * 1000)
                frame.time_base = Fraction(1, 1000)
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def write_audio_only(path: Path) -> Path:
    with av.open(str(path), "w", format="mp4") as out:
        stream = out.add_stream("aac", rate=16000)
        samples = np.zeros((1, 1024), np.float32)
        for i in range(10):
            frame = av.AudioFrame.from_ndarray(samples, format="fltp", layout="mono")
            frame.sample_rate = 16000
            frame.pts = i * 1024
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


VFR_TIMES = [0, 0.1, 0.2, 0.3, 1.0, 1.05, 1.1, 1.15, 1.2, 2.5, 2.6, 3.0]

# name -> (file name, write_clip kwargs); each is decodable and has a known frame count.
GOOD_CLIPS = {
    "h264_mp4": ("h264.mp4", {}),
    "hevc_mkv": ("hevc.mkv", {"codec": "libx265"}),
    "vp9_webm": ("vp9.webm", {"codec": "libvpx-vp9"}),
    "mpeg4_avi": ("mpeg4.avi", {"codec": "mpeg4"}),
    "av1_mp4": ("av1.mp4", {"codec": "libsvtav1", "width": 128, "height": 96}),
    "vfr_mp4": ("vfr.mp4", {"num_frames": 12, "frame_times_s": VFR_TIMES}),
    "one_frame": ("one_frame.mp4", {"num_frames": 1}),
    "short_0_2s": ("short.mp4", {"num_frames": 2}),
    "odd_97x61": ("odd_97x61.mkv", {"width": 97, "height": 61, "pix_fmt": "yuv444p"}),
    "portrait": ("portrait.mp4", {"width": 96, "height": 160}),
    "rotated_90": ("rotated_90.mp4", {"rotation": 90, "marker": True}),
    "rotated_180": ("rotated_180.mp4", {"rotation": 180, "marker": True}),
}
