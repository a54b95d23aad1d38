"""Open a file with PyAV and learn what decoding it needs, without decoding more than one frame.

Every decoder starts from a probe: it tells a video from a non-video with a precise cause, lists
the presentation time of every frame from the demuxed packets (the real frame count, whatever
the container header claims), and reads the display rotation off the first decoded frame.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from typing import TYPE_CHECKING

import numpy as np

from vlmcap.errors import NotAVideo, NoVideoStream, TruncatedVideo, UnsupportedCodec, VideoNotFound

if TYPE_CHECKING:  # PyAV is imported where a file is opened: importing the trainer or the manifest
    import av  # checks must not need it (scripts/gpu-check runs on a machine without PyAV)


@dataclass(frozen=True)
class VideoProbe:
    path: str
    codec: str
    width: int  # coded size, before rotation
    height: int
    rotation: int  # counter-clockwise degrees, multiple of 90
    fps: float
    frame_times_s: np.ndarray  # sorted presentation time of every frame
    end_s: float  # end of the last frame

    @property
    def num_frames(self) -> int:
        return len(self.frame_times_s)

    @property
    def duration_s(self) -> float:
        return max(self.end_s - float(self.frame_times_s[0]), 0.0)

    def display_size(self) -> tuple[int, int]:
        """(width, height) as shown, after rotation."""
        return (self.height, self.width) if self.rotation % 180 else (self.width, self.height)


def check_file(path: str) -> None:
    """Errors a decoder library would report vaguely, reported precisely first."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise VideoNotFound(f"{path}: file not found") from None
    except OSError as e:
        raise VideoNotFound(f"{path}: cannot access ({e.strerror})") from None
    if stat.S_ISDIR(st.st_mode):
        raise NotAVideo(f"{path}: is a directory, not a video file")
    if not stat.S_ISREG(st.st_mode):  # a decoder would block on a FIFO until someone writes to it
        raise NotAVideo(f"{path}: not a regular file (a pipe, a socket or a device), not a video file")
    if st.st_size == 0:
        raise NotAVideo(f"{path}: empty file (0 bytes)")
    if not os.access(path, os.R_OK):
        raise VideoNotFound(f"{path}: permission denied")


def _sniff_container(path: str) -> str | None:
    """Name a container from its magic bytes, to tell a broken video from something else entirely."""
    with open(path, "rb") as f:
        head = f.read(12)
    if head[4:8] == b"ftyp":
        return "MP4/MOV"
    if head[:4] == b"\x1a\x45\xdf\xa3":
        return "Matroska/WebM"
    if head[:4] == b"RIFF" and head[8:12] == b"AVI ":
        return "AVI"
    return None


def _rate(stream: av.video.stream.VideoStream) -> float:
    for rate in (stream.average_rate, stream.guessed_rate, stream.base_rate):
        if rate:
            return float(rate)
    return 0.0


def is_utf8_path(path: str) -> bool:
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:  # surrogate escapes: bytes that are not UTF-8 (e.g. a Latin-1 file name)
        return False
    return True


def open_container(path: str, stack: contextlib.ExitStack):
    """`av.open` for any file name: FFmpeg takes names as UTF-8, so a name that is not valid UTF-8
    goes in as a Python file object instead. Both are closed with `stack`."""
    import av

    source = path if is_utf8_path(path) else stack.enter_context(open(path, "rb"))  # noqa: SIM115
    return stack.enter_context(av.open(source))


def probe_video(path: str, check_size: Callable[[int, int], None] | None = None) -> VideoProbe:
    """Probe `path`; raises a VideoError subclass that names the file and the cause.

    `check_size(width, height)` runs on the stream's coded size before any frame is decoded.
    """
    check_file(path)
    with contextlib.ExitStack() as stack:
        return _probe(path, stack, check_size)


def _probe(path: str, stack: contextlib.ExitStack, check_size: Callable[[int, int], None] | None) -> VideoProbe:
    import av

    try:
        container = open_container(path, stack)
    except av.error.FFmpegError as e:
        container_name = _sniff_container(path)
        if container_name:
            raise TruncatedVideo(
                f"{path}: {container_name} header present but the file cannot be read "
                f"({e.strerror or e}): truncated or corrupt"
            ) from None
        raise NotAVideo(f"{path}: not a video container FFmpeg recognises") from None
    if not container.streams.video:
        raise NoVideoStream(f"{path}: has no video stream")
    stream = container.streams.video[0]
    codec = stream.codec_context.name
    if stream.codec_context.codec is None or not stream.codec_context.codec.is_decoder:
        raise UnsupportedCodec(f"{path}: no decoder for codec {codec!r}")
    if check_size is not None:
        check_size(stream.codec_context.width, stream.codec_context.height)
    rotation, time_base = _first_frame_rotation(path, container, stream)
    container.seek(0)
    pts = [p.pts for p in container.demux(stream) if p.pts is not None and p.size > 0]
    fps = _rate(stream)
    if not pts:
        raise TruncatedVideo(f"{path}: the video stream has no frames")
    times = np.sort(np.asarray(pts, dtype=np.float64)) * float(time_base)
    frame_duration = 1.0 / fps if fps > 0 else (float(np.median(np.diff(times))) if len(times) > 1 else 0.0)
    return VideoProbe(
        path=path,
        codec=codec,
        width=stream.codec_context.width,
        height=stream.codec_context.height,
        rotation=rotation,
        fps=fps,
        frame_times_s=times,
        end_s=float(times[-1]) + frame_duration,
    )


def _first_frame_rotation(path: str, container, stream) -> tuple[int, Fraction]:
    import av

    try:
        for frame in container.decode(stream):
            return round(frame.rotation or 0) % 360, stream.time_base
    except av.error.FFmpegError as e:
        raise TruncatedVideo(f"{path}: first frame does not decode ({e.strerror or e})") from None
    raise TruncatedVideo(f"{path}: the video stream has no decodable frame")
