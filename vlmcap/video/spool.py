"""A remote video as a local file for the decoders (decord and PyAV need a path), for as long as it
is decoded and no longer.

Each decode worker streams the object in chunks into its own folder under `remote.spool_dir`
(`vlmcap-spool-<pid>`), never holding it in memory, and deletes it when decoding ends, however it
ends. A worker killed mid-download (decode timeout, crash) cannot clean up after itself, so the
pool removes the folder of every worker it stops (`discard_worker_spool`). The spool therefore
holds at most one object per worker, each at most `remote.max_object_mb`: an object larger than
that is refused from its metadata before a byte is fetched, or when the stream passes the limit
(a server that sends no size).

The decode pool's timeout is per message, and a download is not a hang while bytes arrive: the
worker sends a progress message at most once a second while it reads, so a slow but moving
download of a big file is not killed as a hung decode. A stalled or trickling one ends by
`remote.timeout_s` (the longest one MiB of it may take: `RemoteTimeout`), retried `remote.retries`
times. The object's size comes with its URL (`RemoteVideo`: selection asked the server once), so
the worker asks for no metadata; only a URL that comes without it (`spooled_copy` called directly)
is looked up here, within the same deadline.
"""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vlmcap.errors import RemoteTooLarge
from vlmcap.video.remote_listing import RemoteVideo
from vlmcap.video.remote_requests import bounded, with_retries
from vlmcap.video.remote_urls import RemoteOptions, filesystem, fs_path, url_scheme

if TYPE_CHECKING:
    from fsspec import AbstractFileSystem

# A download must bring each piece within remote.timeout_s (a trickle is a timeout, not a hang);
# memory holds one piece.
PIECE_BYTES = 1 << 20
PROGRESS_EVERY_S = 1.0


def worker_spool_dir(options: RemoteOptions, pid: int) -> Path:
    return Path(options.spool_dir or tempfile.gettempdir()) / f"vlmcap-spool-{pid}"


def discard_worker_spool(options: RemoteOptions, pid: int | None) -> None:
    """Remove what a (stopped or killed) worker left in the spool."""
    if pid is not None:
        shutil.rmtree(worker_spool_dir(options, pid), ignore_errors=True)


def _too_large(url: str, size: int, options: RemoteOptions, known: bool) -> RemoteTooLarge:
    said = f"is {size / (1 << 20):.1f} MB" if known else f"passed {options.max_object_mb} MB while downloading"
    return RemoteTooLarge(f"{url}: {said}, over remote.max_object_mb ({options.max_object_mb} MB); raise it to take it")


async def _piece(source: Any, n: int) -> bytes:
    """The next `n` bytes of a stream (fewer at its end): a stream read returns what has arrived."""
    parts, got = [], 0
    while got < n:
        part = await source.read(n - got)
        if not part:
            break
        parts.append(part)
        got += len(part)
    return b"".join(parts)


async def _http_stream(fs: AbstractFileSystem, url: str, size: int | None) -> Any:
    """fsspec's http `open_async` without the metadata request it makes when it is given no size
    (a server that sends no Content-Length): the stream is read to its end either way."""
    from fsspec.implementations.http import AsyncStreamFile

    return AsyncStreamFile(fs, url, loop=fs.loop, session=await fs.set_session(), size=size)


def _pieces(url: str, fs: AbstractFileSystem, size: int | None, deadline_s: float) -> Iterator[bytes]:
    """The object's bytes, PIECE_BYTES at a time, each piece within `deadline_s` (bounded): one
    streaming GET on http (some servers serve no ranges) and S3, ranged GETs on GCS (gcsfs has no
    stream)."""
    path = fs_path(url)
    if url_scheme(url) == "gs":
        for start in range(0, size or 0, PIECE_BYTES):
            end = min(start + PIECE_BYTES, size or 0)
            yield bounded(fs, functools.partial(fs._cat_file, path, start=start, end=end), deadline_s, None)
        return
    if url_scheme(url) in ("http", "https"):
        opening = functools.partial(_http_stream, fs, path, size)
    else:
        opening = functools.partial(fs.open_async, path, "rb")
    source = bounded(fs, opening, deadline_s, None)
    try:
        while piece := bounded(fs, functools.partial(_piece, source, PIECE_BYTES), deadline_s, None):
            yield piece
    finally:
        bounded(fs, source.close, deadline_s, None)


def _size(url: str, fs: AbstractFileSystem, options: RemoteOptions) -> int | None:
    """The object's size in bytes (None: the server does not say), as selection learned it; a
    metadata request that failed there fails the download the same way, without a second one."""
    if isinstance(url, RemoteVideo) and url.asked:
        if url.error is not None:
            raise url.error
        return url.size
    return bounded(fs, functools.partial(fs._info, fs_path(url)), options.timeout_s, None).get("size")


def _download(url: str, target: Path, options: RemoteOptions, progress: Callable[[], None] | None) -> None:
    """One try: the object's bytes into `target`, piece by piece."""
    fs = filesystem(url_scheme(url), options)
    limit = options.max_object_bytes
    size = _size(url, fs, options)
    if size is not None and size > limit:
        raise _too_large(url, size, options, known=True)
    written, last_sign = 0, time.monotonic()
    with open(target, "wb") as sink:
        for piece in _pieces(url, fs, size, options.timeout_s):
            written += len(piece)
            if written > limit:
                raise _too_large(url, written, options, known=False)
            sink.write(piece)
            if progress is not None and time.monotonic() - last_sign >= PROGRESS_EVERY_S:
                progress()
                last_sign = time.monotonic()
    if size is not None and written != size:
        raise ConnectionError(f"the stream ended after {written} of {size} bytes")


@contextlib.contextmanager
def spooled_copy(path: str, options: RemoteOptions, progress: Callable[[], None] | None = None) -> Iterator[str]:
    """A spool file with the bytes of the object at the URL `path`, deleted on exit."""
    folder = worker_spool_dir(options, os.getpid())
    folder.mkdir(parents=True, exist_ok=True)
    # The URL's extension kept: some containers (MPEG-TS) are probed by name as well as by content.
    suffix = os.path.splitext(path.rsplit("/", 1)[-1])[1][:16]
    fd, name = tempfile.mkstemp(dir=folder, suffix=suffix)
    os.close(fd)
    try:
        with_retries(path, lambda: _download(path, Path(name), options, progress), options)
        yield name
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(name)
