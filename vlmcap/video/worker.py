"""Code that runs inside a decode worker process.

Imported by the forkserver before it forks workers (torch first, then decord, as decord needs),
so a replacement worker starts in milliseconds instead of re-importing the stack.
"""

from __future__ import annotations

import signal
import time
from dataclasses import dataclass, replace
from multiprocessing.connection import Connection

import torch

from vlmcap.errors import VideoError
from vlmcap.video.decoders import DecodeOptions, available_decoders, decode_video
from vlmcap.video.preprocess import ImageSpec, resize_and_crop
from vlmcap.video.types import DecodedVideo

if "decord" in available_decoders(("decord",)):
    import decord  # noqa: F401  -- preloaded after torch


@dataclass
class DecodeResult:
    """One input's outcome: a decoded video, or the typed error that explains why not."""

    index: int
    path: str
    video: DecodedVideo | None = None
    error_type: str | None = None
    error_message: str | None = None
    decode_ms: float = 0.0

    @property
    def ok(self) -> bool:
        return self.video is not None


def decode_one(index: int, path: str, options: DecodeOptions, image_spec: ImageSpec | None) -> DecodeResult:
    start = time.perf_counter()
    try:
        video = decode_video(path, options)
        if image_spec is not None:
            video.frames = resize_and_crop(video.frames, image_spec)
        return DecodeResult(index, path, video, decode_ms=(time.perf_counter() - start) * 1e3)
    except VideoError as e:
        kind, message = type(e).__name__, str(e)
    except Exception as e:  # a decoder bug must cost one video, not the run
        kind, message = "VideoError", f"{path}: {type(e).__name__}: {e}"
    return DecodeResult(index, path, None, kind, message, (time.perf_counter() - start) * 1e3)


def worker_main(conn: Connection, options: DecodeOptions, image_spec: ImageSpec | None) -> None:
    """Serve tasks `(index, path, decoders)` until `None`; the parent owns interrupts and timeouts.

    Ctrl-C on a terminal and `systemctl stop` signal the whole process group: the worker ignores
    both, so the parent decides how to stop (it ends workers with a message or SIGKILL).
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    torch.set_num_threads(1)
    while True:
        task = conn.recv()
        if task is None:
            return
        index, path, decoders = task
        conn.send(decode_one(index, path, _with_decoders(options, decoders), image_spec))


def _with_decoders(options: DecodeOptions, decoders: tuple[str, ...]) -> DecodeOptions:
    return options if decoders == options.decoders else replace(options, decoders=decoders)
