"""A request to a remote input: its deadline, what its failure means, and its retries.

The libraries' own retry loops are turned off (s3fs retries 5 times with its own backoff, botocore
up to 5 more per call): the one loop here (`with_retries`) retries dropped connections and
timeouts only, `remote.retries` times with `remote.backoff_s` doubling, so a run's settings say
how long a dead server can hold a video. A 403 or a 404 is never retried.

Every request has a total deadline (`bounded`), not only the sockets' idle timeouts: a server that
trickles its headers a byte at a time never lets a socket timeout fire, and would hold the run's
intake forever. A metadata request must be answered within `remote.timeout_s`; a download must
bring each MiB within it (vlmcap/video/spool.py). A run that is stopping (its first SIGINT/SIGTERM)
abandons the request in progress at once instead of waiting for either.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, TypeVar

from vlmcap.errors import (
    RemoteAccessDenied,
    RemoteConnectionError,
    RemoteError,
    RemoteNotFound,
    RemoteRedirectLoop,
    RemoteTimeout,
)
from vlmcap.video.remote_urls import RemoteOptions

if TYPE_CHECKING:
    from fsspec import AbstractFileSystem

log = logging.getLogger(__name__)

# Client errors that say the object or bucket is not there / not ours; everything else from S3 with
# a code (InternalError, SlowDown, ...) counts as a server problem worth a retry.
DENIED_CODES = {"AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken", "InvalidToken"}
CREDENTIAL_CODES = DENIED_CODES - {"AccessDenied"}
POLL_S = 0.1  # how often a waiting request looks whether the run is stopping

T = TypeVar("T")


class Abandoned(RemoteError):
    """The run is stopping (its first signal): the request in progress was given up, not failed.
    No record says this; the input is selected again by the next run."""


def bounded(
    fs: AbstractFileSystem, request: Callable[[], Awaitable[T]], deadline_s: float | None, stop: threading.Event | None
) -> T:
    """`await request()` on the filesystem's event loop, given up (TimeoutError) after `deadline_s`
    in all, and at once (`Abandoned`) when `stop` is set. fsspec's own sync call waits as long as
    the sockets keep receiving something, a byte a minute included."""
    future = asyncio.run_coroutine_threadsafe(asyncio.wait_for(request(), deadline_s), fs.loop)
    while not concurrent.futures.wait([future], timeout=POLL_S).done:
        if stop is not None and stop.is_set():
            future.cancel()
            raise Abandoned("the run is stopping")
    return future.result()


def _names(e: BaseException) -> str:
    return " ".join(c.__name__ for c in type(e).__mro__)


def _status(e: BaseException) -> int | None:
    """The HTTP status of an aiohttp response error (http backend), if that is what `e` is."""
    status = getattr(e, "status", None)
    return status if isinstance(status, int) else None


def error_code(e: BaseException) -> str | None:
    """The S3 error code behind an exception s3fs translated (`NoSuchBucket`, `AccessDenied`, ...)."""
    for cause in (e, e.__cause__, e.__context__):
        response = getattr(cause, "response", None)
        if isinstance(response, dict):
            return response.get("Error", {}).get("Code")
    return None


def _cause(e: BaseException) -> BaseException:
    """What really failed: fsspec's http backend reports every failed metadata request as
    `FileNotFoundError(url) from <the error>` (a 500, a refused connection, a timeout alike)."""
    while isinstance(e, FileNotFoundError) and e.__cause__ is not None:
        e = e.__cause__
    return e


def is_transient(e: BaseException) -> bool:
    """A dropped connection, a timeout or a server error: worth another try (a 403/404 is not)."""
    e = _cause(e)
    if isinstance(e, (FileNotFoundError, PermissionError, RemoteError)):
        return False
    status = _status(e)
    if status is not None:
        return status >= 500 or status == 429
    if isinstance(e, (ConnectionError, TimeoutError)):
        return True
    # The libraries' own classes, by name, so this module imports none of them: aiohttp's
    # ClientConnectionError / ClientPayloadError / ServerDisconnectedError, botocore's
    # EndpointConnectionError / ConnectionClosedError / ReadTimeoutError / ResponseStreamingError,
    # http.client's IncompleteRead, fsspec's FSTimeoutError.
    names = _names(e)
    return any(word in names for word in ("Timeout", "Connection", "Payload", "Disconnected", "IncompleteRead"))


def remote_error(url: str, e: BaseException, options: RemoteOptions, tries: int = 1) -> RemoteError:
    """The typed per-video error for a failed fetch of `url` (the record's `error.type`)."""
    if isinstance(e, RemoteError):
        return e
    e = _cause(e)
    detail = str(e) or type(e).__name__
    status = _status(e)
    if isinstance(e, FileNotFoundError) or status in (404, 410) or error_code(e) in ("NoSuchKey", "NoSuchBucket"):
        return RemoteNotFound(f"{url}: no such object ({detail})")
    if isinstance(e, PermissionError) or status in (401, 403) or error_code(e) in DENIED_CODES:
        return RemoteAccessDenied(f"{url}: access denied ({detail}); check the credentials and the object's policy")
    after = f" after {tries} {'try' if tries == 1 else 'tries'}"
    if "Redirect" in _names(e):  # aiohttp's TooManyRedirects: the same answer on every try
        return RemoteRedirectLoop(f"{url}: redirected in a loop ({detail})")
    if status is not None and is_transient(e):
        return RemoteConnectionError(f"{url}: server error HTTP {status}{after} ({detail})")
    if is_transient(e) and "Timeout" in _names(e):
        return RemoteTimeout(f"{url}: no answer within {options.timeout_s:g} s{after} ({detail})")
    if is_transient(e):
        return RemoteConnectionError(f"{url}: connection failed{after} ({type(e).__name__}: {detail})")
    return RemoteError(f"{url}: {type(e).__name__}: {detail}")


def with_retries(url: str, call: Callable[[], T], options: RemoteOptions, stop: threading.Event | None = None) -> T:
    """`call()`, tried again after a dropped connection or a timeout (backoff doubling each time);
    any failure comes out as the RemoteError it means. A stopping run (`stop` set) tries no more."""
    for attempt in range(options.retries + 1):
        try:
            return call()
        except RemoteError:
            raise
        except Exception as e:
            if not is_transient(e) or attempt == options.retries:
                raise remote_error(url, e, options, attempt + 1) from e
            wait_s = options.backoff_s * 2**attempt
            log.info("%s: %s: %s; trying again in %g s", url, type(e).__name__, e, wait_s)
            if (stop or threading.Event()).wait(wait_s):
                raise Abandoned(f"{url}: the run is stopping") from e
    raise AssertionError("unreachable")
