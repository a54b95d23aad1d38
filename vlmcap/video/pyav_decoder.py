"""PyAV: decodes everything FFmpeg does (AV1, MPEG-TS, odd containers, broken metadata)."""

from __future__ import annotations

import contextlib
from typing import ClassVar

import av
import numpy as np

from vlmcap.errors import TruncatedVideo
from vlmcap.video.probe import VideoProbe, open_container

# Decode forward instead of seeking when the next wanted frame is at most this far ahead.
_SEEK_AHEAD_S = 2.0


class _SeekMissed(Exception):
    """A seek landed after the wanted frame or at the end (MPEG-TS with few keyframes does this)."""


class PyAVDecoder:
    name: ClassVar[str] = "pyav"

    def __init__(self, num_threads: int = 1) -> None:
        self.num_threads = num_threads

    def fetch(self, probe: VideoProbe, indices: np.ndarray, size: tuple[int, int]) -> np.ndarray:
        wanted = sorted(set(indices.tolist()))
        try:
            try:
                got = self._collect(probe, wanted, size, seek=True)
            except _SeekMissed:
                got = self._collect(probe, wanted, size, seek=False)  # one sequential pass instead
        except av.error.FFmpegError as e:
            raise TruncatedVideo(f"{probe.path}: decoding stopped ({e.strerror or e})") from None
        missing = [i for i in wanted if i not in got]
        if missing:
            raise TruncatedVideo(f"{probe.path}: stream ended before frame {missing[0]} of {probe.num_frames}")
        return np.stack([got[i] for i in indices.tolist()])

    def _collect(self, probe: VideoProbe, wanted: list[int], size: tuple[int, int], seek: bool) -> dict:
        width, height = size
        got: dict[int, np.ndarray] = {}
        with contextlib.ExitStack() as stack:
            container = open_container(probe.path, stack)
            stream = container.streams.video[0]
            stream.thread_count = self.num_threads
            tb = float(stream.time_base)
            frames = container.decode(stream)
            position_s = float(probe.frame_times_s[0])
            for i in wanted:
                target_s = float(probe.frame_times_s[i])
                target_pts = round(target_s / tb)
                sought = seek and (target_s < position_s or target_s - position_s > _SEEK_AHEAD_S)
                if sought:
                    container.seek(target_pts, stream=stream, backward=True)
                    frames = container.decode(stream)
                for frame in frames:
                    if frame.pts is None:
                        continue
                    if sought and frame.pts > target_pts:
                        raise _SeekMissed
                    sought = False
                    position_s = frame.pts * tb
                    if frame.pts >= target_pts:
                        got[i] = frame.reformat(width=width, height=height, format="rgb24", interpolation="AREA")
                        got[i] = got[i].to_ndarray()
                        break
                else:
                    if sought:
                        raise _SeekMissed
                    break  # end of stream: the caller reports the missing frames
        return got
