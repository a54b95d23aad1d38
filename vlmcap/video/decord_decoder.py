"""decord: fast random access for the common case (H.264/HEVC/VP9 in MP4/MKV/WebM)."""

from __future__ import annotations

import contextlib
from typing import ClassVar

import numpy as np

# isort: off
import torch  # noqa: F401  -- decord must be imported after torch, or the process can segfault

with contextlib.suppress(ImportError):  # decord bundles an older FFmpeg: loaded first, its libav
    import av  # noqa: F401  -- symbols break PyAV's (VP9 encoding fails with EINVAL)
import decord

# isort: on
from vlmcap.video.decoders import DecoderUnsuitable
from vlmcap.video.probe import VideoProbe, is_utf8_path

# decord 0.6.0 bundles an FFmpeg without these decoders (it mis-decodes or fails on them).
_UNSUPPORTED_CODECS = {"av1", "libdav1d", "libaom-av1"}


class DecordDecoder:
    name: ClassVar[str] = "decord"

    def __init__(self, num_threads: int = 1) -> None:
        self.num_threads = num_threads

    def fetch(self, probe: VideoProbe, indices: np.ndarray, size: tuple[int, int]) -> np.ndarray:
        if probe.codec in _UNSUPPORTED_CODECS:
            raise DecoderUnsuitable(f"decord cannot decode {probe.codec}")
        if not is_utf8_path(probe.path):
            raise DecoderUnsuitable("file name is not valid UTF-8")  # decord passes it to FFmpeg as UTF-8
        if probe.rotation:
            # decord applies the display matrix to the frame shape but not to the pixel copy: garbage.
            raise DecoderUnsuitable(f"rotated stream ({probe.rotation} degrees)")
        width, height = size
        try:
            reader = decord.VideoReader(
                probe.path, ctx=decord.cpu(0), width=width, height=height, num_threads=self.num_threads
            )
        except decord.DECORDError as e:
            raise DecoderUnsuitable(f"cannot open: {str(e).splitlines()[0][:200]}") from None
        # decord trusts the container's frame count; when that exceeds the frames actually there,
        # seeking to them loops forever inside native code. The probe counted the real packets.
        if len(reader) > probe.num_frames:
            raise DecoderUnsuitable(f"container reports {len(reader)} frames, stream has {probe.num_frames}")
        if len(reader) < probe.num_frames:  # its frame indices would not match the probe's timestamps
            raise DecoderUnsuitable(f"decord sees {len(reader)} frames, the stream has {probe.num_frames}")
        try:
            frames = reader.get_batch(indices.tolist()).asnumpy()
        except Exception as e:  # DECORDError, or anything else its native layer throws: let PyAV try
            raise DecoderUnsuitable(
                f"decode failed: {str(e).splitlines()[0][:200] if str(e) else type(e).__name__}"
            ) from None
        if frames.shape[1:] != (height, width, 3):
            raise DecoderUnsuitable(f"unexpected frame shape {frames.shape[1:]}")
        return frames
