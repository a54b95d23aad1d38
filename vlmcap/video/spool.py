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
download of a big file is not killed as a hung decode. A stalled one ends by `remote.timeout_s`
(the longest the server may send nothing), retried `remote.retries` times.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from vlmcap.errors import RemoteTooLarge
from vlmcap.video.remote import RemoteOptions, filesystem, fs_path, url_scheme, with_retries

CHUNK_BYTES = 8 << 20  # one ranged GET per chunk on S3; the pipe and memory see only this much
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


def _download(url: str, target: Path, options: RemoteOptions, progress: Callable[[], None] | None) -> None:
    """One try: the object's bytes into `target`, chunk by chunk."""
    fs = filesystem(url_scheme(url), options)
    limit = options.max_object_bytes
    # block_size 0 on http: one streaming GET instead of ranged requests some servers do not serve.
    block = 0 if url_scheme(url) in ("http", "https") else CHUNK_BYTES
    with fs.open(fs_path(url), "rb", block_size=block, cache_type="none") as source, open(target, "wb") as sink:
        # S3/GCS files know their size from the HEAD their open made; a streamed http GET does not.
        size = fs.info(fs_path(url)).get("size") if block == 0 else getattr(source, "size", None)
        if size is not None and size > limit:
            raise _too_large(url, size, options, known=True)
        written, last_sign = 0, time.monotonic()
        while chunk := source.read(CHUNK_BYTES):
            written += len(chunk)
            if written > limit:
                raise _too_large(url, written, options, known=False)
            sink.write(chunk)
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
