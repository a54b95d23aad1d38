"""The host buffer a vision batch is assembled in, and its one copy to the device.

The decode workers hand over uint8 (T, h, w, 3) frames per video, already resized and cropped.
Each video is written straight into its slot of a buffer allocated once (no `np.stack`, no
per-batch allocation), and the batch then reaches the device in one copy: page-locked (pinned)
memory when the device is a GPU, so that copy is a single asynchronous DMA instead of a staged
one through a driver bounce buffer.

Two layouts, one per kind of engine:
- raw (uint8 (B, T, h, w, 3)): the torch engine copies the bytes and normalises on the device,
  a quarter of the float32 traffic;
- `host_normalize` (float32 (B, T, 3, h, w)): ONNX Runtime graphs take float32 pixel_values whatever
  their precision (export/precision.py), so the frames are normalised on the host, into the buffer.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import torch

from vlmcap.video.image_spec import ImageSpec
from vlmcap.video.preprocess import normalization, normalize_into

log = logging.getLogger(__name__)


class FrameStaging:
    """A reusable (pinned on GPUs) host buffer for vision batches of `num_frames` frames per video.

    `capacity` videos are allocated up front (0: sized by the first batch). A larger batch grows the
    buffer to fit rather than being split: the engine then sees the caller's batch in one call, as
    with `encode`, and callers batch at a fixed size, so with `capacity` set to it no growth happens.
    `allocations` and `transfers` count (re)allocations and host->device handoffs for tests and stats.
    """

    def __init__(
        self,
        num_frames: int,
        spec: ImageSpec,
        *,
        host_normalize: bool,
        pinned: bool,
        device: torch.device | str = "cpu",
        capacity: int = 0,
    ) -> None:
        self.num_frames = num_frames
        self.frame_hw = spec.output_hw
        self.host_normalize = host_normalize
        # Page-locked memory needs a CUDA build of torch with a device; the flag is ignored without one.
        self.pinned = pinned and torch.cuda.is_available()
        self.device = torch.device(device)
        self.mean, self.std = normalization(spec)
        # Moved once, so normalising on a GPU adds no per-batch copies of the constants.
        self.device_mean, self.device_std = self.mean.to(self.device), self.std.to(self.device)
        self.buffer: torch.Tensor | None = None
        self.allocations = 0
        self.transfers = 0
        if capacity:
            self._allocate(capacity)

    @property
    def capacity(self) -> int:
        return 0 if self.buffer is None else len(self.buffer)

    @property
    def expected_shape(self) -> tuple[int, int, int, int]:
        return (self.num_frames, *self.frame_hw, 3)

    def _allocate(self, videos: int) -> None:
        h, w = self.frame_hw
        if self.host_normalize:
            shape, dtype = (videos, self.num_frames, 3, h, w), torch.float32
        else:
            shape, dtype = (videos, self.num_frames, h, w, 3), torch.uint8
        if self.buffer is not None:
            log.debug("vision staging buffer grows from %d to %d videos", len(self.buffer), videos)
        self.buffer = torch.empty(shape, dtype=dtype, pin_memory=self.pinned)
        self.allocations += 1

    def write(self, frames: Sequence[np.ndarray] | np.ndarray) -> torch.Tensor:
        """Write each video's frames into the buffer; returns the filled host view (n videos).

        The caller must be done with the previous batch's view (its device copy included) first.
        """
        n = len(frames)
        if n == 0:
            raise ValueError("no videos to encode: the batch is empty")
        expected = self.expected_shape
        for i, video in enumerate(frames):
            if not isinstance(video, np.ndarray) or video.shape != expected or video.dtype != np.uint8:
                got = f"{video.shape} {video.dtype}" if isinstance(video, np.ndarray) else type(video).__name__
                raise ValueError(
                    f"video {i} of the batch has frames {got}, expected {expected} uint8 "
                    "(num_frames, height, width, 3) decoded for this bundle"
                )
        if n > self.capacity:
            self._allocate(n)
        staged = self.buffer[:n]
        for slot, video in zip(staged, frames, strict=True):
            if self.host_normalize:
                normalize_into(torch.from_numpy(video), slot, self.mean, self.std)
            else:
                slot.copy_(torch.from_numpy(video))
        return staged

    def to_device(self, staged: torch.Tensor) -> torch.Tensor:
        """The batch's one host->device handoff, counted in `transfers`.

        For a CUDA device this is the one copy (asynchronous from pinned memory; the engine's
        read-back of the result synchronises before the buffer is written again). For the CPU it is
        `Tensor.to`'s identity: the engine reads the buffer in place. ONNX Runtime keeps a CPU
        staging device and does the copy to its own device from the bound buffer.
        """
        self.transfers += 1
        return staged.to(self.device, non_blocking=True)

    def normalize(self, raw: torch.Tensor) -> torch.Tensor:
        """Raw uint8 (n, T, h, w, 3) on the device -> float32 (n, T, 3, h, w) there, as `normalize` computes it."""
        h, w = self.frame_hw
        out = torch.empty((len(raw), self.num_frames, 3, h, w), dtype=torch.float32, device=raw.device)
        return normalize_into(raw, out, self.device_mean, self.device_std)
