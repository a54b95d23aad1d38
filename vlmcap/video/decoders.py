"""Frame decoders (decord first, PyAV as fallback) and the one function that decodes a video.

`decode_video` probes the file (PyAV, see probe.py), picks the frames in the middle of T equal
time segments, and asks each decoder of the chain in turn to fetch them. A decoder that cannot
handle a file (decord: AV1, rotated streams, over-reported frame counts, seek failures) raises
`DecoderUnsuitable` and the next one tries; PyAV, the last, reports real decode errors.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import ClassVar, Protocol

import numpy as np

from vlmcap.errors import TruncatedVideo, UnsupportedFrameSize, VideoError
from vlmcap.video.probe import VideoProbe, probe_video
from vlmcap.video.remote_urls import RemoteOptions
from vlmcap.video.sampling import sample_indices
from vlmcap.video.segments import Segment, SegmentPlan, plan_segments, with_frames
from vlmcap.video.types import DecodedVideo, VideoMeta

log = logging.getLogger(__name__)

DEFAULT_DECODERS = ("decord", "pyav")


class DecoderUnsuitable(Exception):
    """This decoder cannot handle this file; the next decoder in the chain should try."""


class FrameDecoder(Protocol):
    name: ClassVar[str]

    def fetch(self, probe: VideoProbe, indices: np.ndarray, size: tuple[int, int]) -> np.ndarray:
        """Frames `indices` (into probe.frame_times_s) as RGB uint8 (T, h, w, 3), coded orientation, `size`=(w, h)."""
        ...


@dataclass(frozen=True)
class DecodeOptions:
    num_frames: int = 8
    # Frames are decoded at most this big on their short side, so a 4K video costs what a 720p one does.
    # Kept well above the vision model's input (336) so the model's own resize does the final step.
    max_short_side: int = 720
    decoders: tuple[str, ...] = DEFAULT_DECODERS
    threads_per_decoder: int = 1  # parallelism comes from worker processes
    # Refused before decoding (UnsupportedFrameSize): resizing the short side up to the model's size
    # makes memory grow with the aspect ratio (a 16x8192 stream needs 6 GB), and huge frames with area.
    max_frame_pixels: int = 8192 * 8192
    max_aspect_ratio: float = 8.0
    memory_limit_mb: int | None = 4096  # address-space limit of each decode worker (None: no limit)
    remote: RemoteOptions = field(default_factory=RemoteOptions)  # URL inputs: spool, timeouts, retries
    # An absolute folder: each worker writes there a contact sheet of the frames it sends (thumbnails.py).
    thumbnail_dir: str | None = None


def decode_size(width: int, height: int, max_short_side: int) -> tuple[int, int]:
    """(w, h) scaled down so the short side is at most `max_short_side`, aspect kept."""
    short = min(width, height)
    if short <= max_short_side:
        return width, height
    scale = max_short_side / short
    return max(1, round(width * scale)), max(1, round(height * scale))


def rotate_frames(frames: np.ndarray, rotation: int) -> np.ndarray:
    """Apply a counter-clockwise display rotation to (T, H, W, 3) frames."""
    k = (rotation // 90) % 4
    return np.ascontiguousarray(np.rot90(frames, k=k, axes=(1, 2))) if k else frames


def check_frame_size(path: str, width: int, height: int, options: DecodeOptions) -> None:
    """Refuse frames whose decoding and resizing would take unbounded memory, before any is decoded."""
    if width <= 0 or height <= 0:
        return  # the container does not say; the decoder's own frame will
    if width * height > options.max_frame_pixels:
        raise UnsupportedFrameSize(
            f"{path}: frames of {width}x{height} ({width * height / 1e6:.0f} Mpx) are over the limit of "
            f"{options.max_frame_pixels / 1e6:.0f} Mpx"
        )
    aspect = max(width, height) / min(width, height)
    if aspect > options.max_aspect_ratio:
        raise UnsupportedFrameSize(
            f"{path}: frames of {width}x{height} (aspect {aspect:.0f}:1) are beyond the limit of "
            f"{options.max_aspect_ratio:g}:1"
        )


def load_decoder(name: str, num_threads: int = 1) -> FrameDecoder:
    """`decord`, `pyav`, or `module:Class` for a custom decoder (tests use this to inject faults)."""
    if name == "decord":
        from vlmcap.video.decord_decoder import DecordDecoder

        return DecordDecoder(num_threads)
    if name == "pyav":
        from vlmcap.video.pyav_decoder import PyAVDecoder

        return PyAVDecoder(num_threads)
    module, _, attr = name.partition(":")
    if not attr:
        raise ValueError(f"unknown decoder {name!r}: use decord, pyav or module:Class")
    return getattr(importlib.import_module(module), attr)()


def available_decoders(names: Sequence[str]) -> tuple[str, ...]:
    """The chain without decoders whose library is not installed (decord has wheels for few platforms)."""
    return tuple(n for n in names if n != "decord" or importlib.util.find_spec("decord") is not None)


def decode_video(path: str, options: DecodeOptions | None = None, window: Segment | None = None) -> DecodedVideo:
    """Decode the T sampled frames of `path` (of `window` only, when given: seconds from the first
    frame), or raise a VideoError naming the file and the cause."""
    options = options or DecodeOptions()
    probe = _probe(path, options)
    return _decode(probe, sample_indices(probe.frame_times_s, probe.end_s, options.num_frames, window), options)


def decode_segments(
    path: str,
    options: DecodeOptions,
    plan: SegmentPlan,
    first: int = 0,
    progress: Callable[[], None] | None = None,
) -> Iterator[tuple[int, list[Segment], DecodedVideo]]:
    """(index, all segments, frames of that segment) for each segment from `first` on, decoded one
    at a time, so memory holds one segment's frames however long the file. `progress()` is called
    while scenes are being detected (a pass over every frame)."""
    probe = _probe(path, options)
    cuts = None
    if plan.mode == "scenes":
        from vlmcap.video.scenes import detect_cuts

        cuts = detect_cuts(path, plan.scene_threshold, plan.min_s, progress)
    segments = with_frames(plan_segments(plan, probe.duration_s, cuts, probe.frame_times_s), probe.frame_times_s)
    for index in range(first, len(segments)):
        indices = sample_indices(probe.frame_times_s, probe.end_s, options.num_frames, segments[index])
        yield index, segments, _decode(probe, indices, options)


def _probe(path: str, options: DecodeOptions) -> VideoProbe:
    return probe_video(path, lambda w, h: check_frame_size(path, w, h, options))


def _decode(probe: VideoProbe, indices: np.ndarray, options: DecodeOptions) -> DecodedVideo:
    path = probe.path
    display_w, display_h = probe.display_size()
    coded_size = decode_size(probe.width, probe.height, options.max_short_side)
    chain = available_decoders(options.decoders)
    reasons = []
    for name in chain:
        decoder = load_decoder(name, options.threads_per_decoder)
        try:
            frames = decoder.fetch(probe, indices, coded_size)
        except DecoderUnsuitable as e:
            reasons.append(f"{name}: {e}")
            log.debug("%s: %s unsuitable (%s), trying the next decoder", path, name, e)
            continue
        if frames.shape[0] != len(indices):
            raise TruncatedVideo(f"{path}: {name} returned {frames.shape[0]} of {len(indices)} frames")
        return DecodedVideo(
            frames=rotate_frames(frames, probe.rotation),
            # Seconds from the first frame, as a player shows them (MPEG-TS streams start at ~1.4 s of PTS).
            timestamps_s=[round(float(probe.frame_times_s[i] - probe.frame_times_s[0]), 6) for i in indices],
            meta=VideoMeta(
                duration_s=round(probe.duration_s, 6),
                fps=round(probe.fps, 6),
                num_frames=probe.num_frames,
                width=display_w,
                height=display_h,
                codec=probe.codec,
                decoder=decoder.name,
                rotation=probe.rotation,
            ),
        )
    raise VideoError(f"{path}: no decoder could read it ({'; '.join(reasons) or 'no decoder installed'})")
