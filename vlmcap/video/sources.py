"""Where an input's bytes come from, chosen once per input from how it is written (docs/VIDEO.md).

A local path and an object behind an `s3://`, `gs://` or `http(s)://` URL differ in three things,
and only in these: the key a run knows the input by (resume, compaction, dedup), its identity
(size and modification time, from the file or from the listing / one metadata request, which the
URL then carries to the decode worker), and how a decoder gets a readable file (the path itself,
or a bounded spool copy; vlmcap/video/spool.py).
Each kind is one class; `source_of` picks it, and nothing else along the way asks whether an input
is a URL.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Protocol

from vlmcap.storage.files import FileIdentity, file_identity
from vlmcap.video.remote_listing import look_up
from vlmcap.video.remote_urls import RemoteOptions, is_remote, normalize_url
from vlmcap.video.spool import spooled_copy


class InputSource(Protocol):
    def key(self, video: str) -> str:
        """What resume, compaction and dedup know the input by."""
        ...

    def look(self, video: str) -> tuple[str, FileIdentity | None]:
        """`video` as the decoders get it, and its size and modification time now (None: it cannot
        be looked at; decoding says why)."""
        ...

    def readable(
        self, video: str, progress: Callable[[], None] | None = None
    ) -> contextlib.AbstractContextManager[str]:
        """A local file a decoder can open, for the length of the `with` block."""
        ...


class LocalFile:
    """A path on this machine: known by its real path (symlinks resolved), read where it is."""

    def key(self, video: str) -> str:
        return os.path.realpath(video)

    def look(self, video: str) -> tuple[str, FileIdentity | None]:
        return video, file_identity(video)

    @contextlib.contextmanager
    def readable(self, video: str, progress: Callable[[], None] | None = None) -> Iterator[str]:
        yield video


@dataclass(frozen=True)
class RemoteObject:
    """An object behind a URL: known by its normalized URL, fetched to the worker's spool to be read."""

    options: RemoteOptions = field(default_factory=RemoteOptions)  # timeouts, retries, size limit, spool
    stop: threading.Event | None = None  # set when the run stops: a metadata request is abandoned

    def key(self, video: str) -> str:
        return normalize_url(video)

    def look(self, video: str) -> tuple[str, FileIdentity | None]:
        """The URL carries its metadata (or why there is none) on to the worker: asked once per input."""
        found = look_up(video, self.options, self.stop)
        return found, found.identity

    def readable(
        self, video: str, progress: Callable[[], None] | None = None
    ) -> contextlib.AbstractContextManager[str]:
        return spooled_copy(video, self.options, progress)


_LOCAL = LocalFile()


def source_of(video: str, options: RemoteOptions | None = None, stop: threading.Event | None = None) -> InputSource:
    """The kind of input `video` is, from its scheme: a URL vlmcap reads, or a local path."""
    return RemoteObject(options or RemoteOptions(), stop) if is_remote(video) else _LOCAL
