"""A remote object's identity, asked once per run, and the listing of a prefix.

An object's metadata is asked for once per run (`look_up`, or the listing of its prefix), and the
URL carries the answer to the decode worker (`RemoteVideo`), so the request deadlines
(remote_requests.py) hold per input, not per process.
"""

from __future__ import annotations

import datetime
import email.utils
import functools
import json
import logging
import threading
from collections.abc import Callable, Iterator
from typing import Any

from vlmcap import errors
from vlmcap.errors import RemoteError
from vlmcap.storage.files import FileIdentity
from vlmcap.video.remote_requests import Abandoned, bounded, with_retries
from vlmcap.video.remote_urls import RemoteOptions, filesystem, fs_path, url_scheme

log = logging.getLogger(__name__)


class RemoteVideo(str):
    """A URL with what the server said about its object, asked once per run: by the listing of its
    prefix, or by the one metadata request selection makes (`look_up`). It travels with its task,
    pickled whole, to the decode worker, which then asks nothing before it downloads: a server that
    trickles its headers costs one metadata deadline, not one here and another in the worker."""

    identity: FileIdentity | None  # what resume knows the object by; None: no answer (`error`), or not asked
    size: int | None  # bytes, as the server said; None when it did not say (no Content-Length)
    error: RemoteError | None  # why the metadata request failed: the worker reports it without asking again

    def __new__(
        cls, url: str, identity: FileIdentity | None = None, size: int | None = None, error: RemoteError | None = None
    ) -> RemoteVideo:
        self = super().__new__(cls, url)
        self.identity, self.size, self.error = identity, size, error
        return self

    @classmethod
    def described(cls, url: str, info: dict[str, Any]) -> RemoteVideo:
        """`url` with its object's metadata as fsspec gives it (`info`, or a listing's entry)."""
        size = info.get("size")
        return cls(url, identity_of(info), None if size is None else int(size))

    @property
    def asked(self) -> bool:
        """The server answered for this object, with its metadata or with an error."""
        return self.identity is not None or self.error is not None

    def __reduce__(self) -> tuple:
        return (RemoteVideo, (str(self), self.identity, self.size, self.error))

    def as_json(self) -> str:
        """What the server said, as JSON text: how it rides in a Ray Data column, which keeps strings only."""
        identity = self.identity.as_dict() if self.identity is not None else None
        error = [type(self.error).__name__, str(self.error)] if self.error is not None else None
        return json.dumps({"identity": identity, "size": self.size, "error": error})

    @classmethod
    def from_json(cls, url: str, text: str) -> RemoteVideo:
        """The `RemoteVideo` that `as_json` wrote."""
        said = json.loads(text)
        identity = FileIdentity(**said["identity"]) if said["identity"] is not None else None
        error = None
        if said["error"] is not None:
            name, message = said["error"]
            kind = getattr(errors, name, None)
            error = (kind if isinstance(kind, type) and issubclass(kind, RemoteError) else RemoteError)(message)
        return cls(url, identity, said["size"], error)


def _mtime_ns(value: Any) -> int | None:
    if isinstance(value, datetime.datetime):
        when = value
    elif isinstance(value, (int, float)):
        return int(value * 1e9)
    elif isinstance(value, str):
        try:
            when = email.utils.parsedate_to_datetime(value)  # HTTP Last-Modified
        except (TypeError, ValueError):
            try:
                when = datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))  # GCS "updated"
            except ValueError:
                return None
    else:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.timezone.utc)
    epoch = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)
    return (when - epoch) // datetime.timedelta(microseconds=1) * 1000


def identity_of(info: dict[str, Any]) -> FileIdentity:
    """What resume knows an object by: its size and last-modified time (S3 LastModified, GCS
    updated, HTTP Last-Modified). A server that sends no time leaves 0: only a size change shows."""
    size = int(info.get("size") or 0)
    for key in ("LastModified", "last_modified", "Last-Modified", "updated", "mtime"):
        mtime_ns = _mtime_ns(info.get(key))
        if mtime_ns is not None:
            return FileIdentity(size, mtime_ns)
    return FileIdentity(size, 0)


def stat(url: str, options: RemoteOptions, stop: threading.Event | None = None) -> dict[str, Any]:
    """The object's metadata (fsspec `info`), or the RemoteError that says why not."""
    fs = filesystem(url_scheme(url), options)
    request = functools.partial(fs._info, fs_path(url))
    return with_retries(url, lambda: bounded(fs, request, options.timeout_s, stop), options, stop)


def look_up(url: str, options: RemoteOptions, stop: threading.Event | None = None) -> RemoteVideo:
    """`url` with its object's metadata: from its listing when it came from one, else from one
    metadata request (`stat`: each try within `remote.timeout_s`, `remote.retries` more after a
    timeout). A failure is kept as the error the video's line will say (the decode worker raises it
    without asking again); only a request abandoned by a stopping run leaves nothing known."""
    if isinstance(url, RemoteVideo) and url.asked:
        return url
    try:
        return RemoteVideo.described(url, stat(url, options, stop))
    except Abandoned:
        return RemoteVideo(url)  # no line says this: the next run selects it again
    except RemoteError as e:
        log.debug("%s", e)
        return RemoteVideo(url, error=e)


def is_prefix(url: str, is_video_name: Callable[[str], bool]) -> bool:
    """An s3/gs URL that names a folder-like prefix rather than one video (http names one resource)."""
    return url_scheme(url) in ("s3", "gs") and (url.endswith("/") or not is_video_name(url))


def list_videos(
    url: str, options: RemoteOptions, is_video_name: Callable[[str], bool], stop: threading.Event | None = None
) -> Iterator[RemoteVideo]:
    """Every video under an s3/gs prefix, recursively, sorted by key, each with its identity. A
    listing is one request per 1,000 keys: it has no total deadline (each socket read has
    `remote.timeout_s`), but a stopping run abandons it."""
    scheme = url_scheme(url)
    fs = filesystem(scheme, options)
    request = functools.partial(fs._find, fs_path(url), detail=True)
    found = with_retries(url, lambda: bounded(fs, request, None, stop), options, stop)
    for name in sorted(found):
        info = found[name]
        if info.get("type", "file") == "file" and is_video_name(name):
            yield RemoteVideo.described(f"{scheme}://{name}", info)
