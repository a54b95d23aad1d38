"""Code that runs inside a decode worker process.

Imported by the forkserver before it forks workers (torch first, then decord, as decord needs),
so a replacement worker starts in milliseconds instead of re-importing the stack.
"""

from __future__ import annotations

import errno
import resource
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from multiprocessing.connection import Connection
from pathlib import Path

import torch

from vlmcap.errors import ThumbnailWriteError, VideoError
from vlmcap.video.decoders import DecodeOptions, available_decoders, decode_segments, decode_video
from vlmcap.video.image_spec import ImageSpec
from vlmcap.video.preprocess import resize_and_crop
from vlmcap.video.segments import Segment, SegmentPlan
from vlmcap.video.sources import source_of
from vlmcap.video.types import DecodedVideo

if "decord" in available_decoders(("decord",)):
    import vlmcap.video.decord_decoder  # noqa: F401  -- preloads decord after torch and PyAV


# Sent by a worker while it works through a long pass that yields no frames (scene detection, the
# download of a remote video): the pool takes any message as a sign of life.
PROGRESS = "progress"


@dataclass(frozen=True)
class SegmentRef:
    """Which segment of its video a result holds (seconds from the first frame)."""

    index: int
    count: int
    start_s: float
    end_s: float

    @property
    def last(self) -> bool:
        return self.index == self.count - 1


@dataclass
class DecodeResult:
    """One input's outcome: a decoded video (or one segment of it), or the typed error that explains why not."""

    index: int
    path: str
    video: DecodedVideo | None = None
    error_type: str | None = None
    error_message: str | None = None
    decode_ms: float = 0.0
    segment: SegmentRef | None = None  # set when the run captions segments
    thumbnail: str | None = None  # the contact sheet of these frames, written before this result was sent

    @property
    def ok(self) -> bool:
        return self.video is not None

    @property
    def final(self) -> bool:
        """The last message of its video: a whole video, its last segment, or an error."""
        return self.segment is None or self.segment.last or not self.ok


def decode_one(
    index: int,
    path: str,
    options: DecodeOptions,
    image_spec: ImageSpec | None,
    window: Segment | None = None,
    progress: Callable[[], None] | None = None,
) -> DecodeResult:
    """Decode one video; a URL is first fetched to a spool file (`progress()` while it downloads)."""
    start = time.perf_counter()
    local = path
    try:
        with source_of(path, options.remote).readable(path, progress) as local:
            video = decode_video(local, options, window)
        if image_spec is not None:
            video.frames = resize_and_crop(video.frames, image_spec)
        thumbnail = write_thumbnail(path, video, options)
        return DecodeResult(index, path, video, decode_ms=(time.perf_counter() - start) * 1e3, thumbnail=thumbnail)
    except Exception as e:  # a decoder bug must cost one video, not the run
        return _error_result(index, path, options, e, start, local)


def send_segments(
    conn: Connection,
    index: int,
    path: str,
    options: DecodeOptions,
    plan: SegmentPlan,
    first: int,
    image_spec: ImageSpec | None,
) -> None:
    """Send the video's segments from `first` on, one result each, as they are decoded; then nothing
    (the last one says so), or an error result. The send blocks while the parent is not reading, so
    a worker holds one segment's frames however long the file."""
    start = time.perf_counter()
    local = path
    progress = lambda: conn.send(PROGRESS)  # noqa: E731
    try:
        with source_of(path, options.remote).readable(path, progress) as local:
            for number, segments, video in decode_segments(local, options, plan, first, progress):
                if image_spec is not None:
                    video.frames = resize_and_crop(video.frames, image_spec)
                segment = segments[number]
                ref = SegmentRef(number, len(segments), round(segment.start_s, 3), round(segment.end_s, 3))
                thumbnail = write_thumbnail(path, video, options, number)
                decode_ms = (time.perf_counter() - start) * 1e3
                conn.send(DecodeResult(index, path, video, decode_ms=decode_ms, segment=ref, thumbnail=thumbnail))
                if ref.last:
                    return
                start = time.perf_counter()
        raise VideoError(f"{path}: has fewer segments than an earlier attempt found ({first})")
    except Exception as e:
        conn.send(_error_result(index, path, options, e, start, local))


def write_thumbnail(path: str, video: DecodedVideo, options: DecodeOptions, segment: int | None = None) -> str | None:
    """The contact sheet of the frames about to be sent, when the run asks for them (`thumbnail_dir`):
    its path. Written before the result leaves the worker, so before the video's JSONL line."""
    if options.thumbnail_dir is None:
        return None
    from vlmcap.video.thumbnails import thumbnail_path, write_contact_sheet  # PIL: only in runs that ask

    target = thumbnail_path(Path(options.thumbnail_dir), source_of(path, options.remote).key(path), segment)
    try:
        write_contact_sheet(target, video.frames)
    except OSError as e:  # the video fails, so --retry-errors writes it again; the others go on
        raise ThumbnailWriteError(f"{path}: cannot write its thumbnail {target} ({e.strerror or e})") from None
    return str(target)


def _error_result(
    index: int, path: str, options: DecodeOptions, e: Exception, start: float, local: str | None = None
) -> DecodeResult:
    if _out_of_memory(e):
        limit = f"{options.memory_limit_mb} MB" if options.memory_limit_mb else "the machine's memory"
        kind, message = "DecodeOutOfMemory", f"{path}: decoding needed more than {limit}"
    elif isinstance(e, VideoError):
        kind, message = type(e).__name__, str(e)
    else:
        kind, message = "VideoError", f"{path}: {type(e).__name__}: {e}"
    if local and local != path:  # a remote video's decoder names its spool file: name the URL instead
        message = message.replace(local, path)
    return DecodeResult(index, path, None, kind, message, (time.perf_counter() - start) * 1e3)


def _out_of_memory(error: BaseException) -> bool:
    """An allocation refused, however the library reports it: MemoryError (Python, PyAV), torch's
    RuntimeError from its CPU allocator, an FFmpeg error with ENOMEM wrapped in a VideoError."""
    for e in (error, error.__cause__, error.__context__):
        if isinstance(e, MemoryError) or (isinstance(e, OSError) and e.errno == errno.ENOMEM):
            return True
    return "can't allocate memory" in str(error) or "Cannot allocate memory" in str(error)


def worker_main(
    conn: Connection, options: DecodeOptions, image_spec: ImageSpec | None, plan: SegmentPlan | None = None
) -> None:
    """Serve tasks `(index, path, decoders, first segment, window)` until `None`; the parent owns
    interrupts and timeouts. With a segment plan, a task gets one result per segment
    (`send_segments`); a task with a window (a labelled segment) gets that window's frames.

    Ctrl-C on a terminal and `systemctl stop` signal the whole process group: the worker ignores
    both, so the parent decides how to stop (it ends workers with a message or SIGKILL).
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    torch.set_num_threads(1)
    if options.memory_limit_mb:
        # The timeout bounds a decode's time; this bounds its memory: an allocation past the limit
        # fails (MemoryError, or the worker dies and is replaced) instead of taking the machine.
        limit = options.memory_limit_mb << 20
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    while True:
        task = conn.recv()
        if task is None:
            return
        index, path, decoders, first_segment, window = task
        task_options = _with_decoders(options, decoders)
        if window is None and plan is not None:
            send_segments(conn, index, path, task_options, plan, first_segment, image_spec)
        else:
            conn.send(decode_one(index, path, task_options, image_spec, window, lambda: conn.send(PROGRESS)))


def _with_decoders(options: DecodeOptions, decoders: tuple[str, ...]) -> DecodeOptions:
    return options if decoders == options.decoders else replace(options, decoders=decoders)
