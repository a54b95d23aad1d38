"""s3://, gs://, http(s):// inputs through fsspec: which text is such a URL, the filesystem of each
scheme, an object's identity, prefix listing, and the checks a run makes before any work.

Credentials come from the environment, read by each backend's own library: botocore's chain for
s3 (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_SESSION_TOKEN, AWS_PROFILE, a role; the
endpoint from AWS_ENDPOINT_URL or AWS_ENDPOINT_URL_S3, which botocore reads itself), Google's
default credentials for gs (GOOGLE_APPLICATION_CREDENTIALS). vlmcap never takes a secret on its
command line or in its config, where it would end up in shell history and `config show`.

The libraries' own retry loops are turned off (s3fs retries 5 times with its own backoff, botocore
up to 5 more per call): the one loop here (`with_retries`) retries dropped connections and
timeouts only, `remote.retries` times with `remote.backoff_s` doubling, so a run's settings say
how long a dead server can hold a video. A 403 or a 404 is never retried.

Every request has a total deadline (`bounded`), not only the sockets' idle timeouts: a server that
trickles its headers a byte at a time never lets a socket timeout fire, and would hold the run's
intake forever. A metadata request must be answered within `remote.timeout_s`; a download must
bring each MiB within it (vlmcap/video/spool.py). An object's metadata is asked for once per run
(`look_up`), and the URL carries the answer to the decode worker (`RemoteVideo`), so these bounds
hold per input, not per process. A run that is stopping (its first SIGINT/SIGTERM) abandons the
request in progress at once instead of waiting for either.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import datetime
import email.utils
import functools
import importlib.util
import json
import logging
import re
import threading
import urllib.parse
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from vlmcap import errors
from vlmcap.errors import (
    ConfigError,
    RemoteAccessDenied,
    RemoteBackendMissing,
    RemoteConnectionError,
    RemoteError,
    RemoteNotFound,
    RemoteRedirectLoop,
    RemoteTimeout,
)
from vlmcap.files import FileIdentity

if TYPE_CHECKING:
    from fsspec import AbstractFileSystem

    from vlmcap.config import RemoteConfig

log = logging.getLogger(__name__)

# scheme -> (the module its fsspec backend needs, fsspec's protocol name)
BACKENDS = {"s3": ("s3fs", "s3"), "gs": ("gcsfs", "gcs"), "http": ("aiohttp", "http"), "https": ("aiohttp", "http")}
EXTRA = "pip install 'vlmcap[remote]'"
_URL = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
# Client errors that say the object or bucket is not there / not ours; everything else from S3 with
# a code (InternalError, SlowDown, ...) counts as a server problem worth a retry.
_DENIED_CODES = {"AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken", "InvalidToken"}
_CREDENTIAL_CODES = _DENIED_CODES - {"AccessDenied"}
POLL_S = 0.1  # how often a waiting request looks whether the run is stopping

T = TypeVar("T")


@dataclass(frozen=True)
class RemoteOptions:
    """`batch.remote` as the decode workers get it (picklable, hashable: one filesystem per value)."""

    spool_dir: str | None = None
    max_object_mb: int = 2048
    timeout_s: float = 60.0
    retries: int = 3
    backoff_s: float = 1.0
    anonymous: bool = False

    @classmethod
    def from_config(cls, config: RemoteConfig) -> RemoteOptions:
        return cls(**config.model_dump())

    @property
    def max_object_bytes(self) -> int:
        return self.max_object_mb << 20


class Abandoned(RemoteError):
    """The run is stopping (its first signal): the request in progress was given up, not failed.
    No record says this; the input is selected again by the next run."""


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


def url_scheme(text: str) -> str | None:
    """The scheme of `text` when it is written as a URL (`scheme://...`), lower-cased; else None."""
    match = _URL.match(text)
    return match.group(1).lower() if match else None


def is_remote(text: str) -> bool:
    return url_scheme(text) in BACKENDS


def normalize_url(url: str) -> str:
    """The spelling resume knows an object by: the scheme lower-cased, and for http(s) the host too
    (with its default port dropped, and no #fragment, which never reaches the server) and the path
    escaped one way. Bucket names and keys are case-sensitive and kept as they are (an s3 key may
    hold `%20` itself)."""
    scheme = url_scheme(url)
    rest = url[len(scheme) + 3 :] if scheme else url
    if scheme in ("http", "https"):
        rest = rest.split("#", 1)[0]
        host, slash, path = rest.partition("/")
        host = host.lower()
        default_port = ":80" if scheme == "http" else ":443"
        host = host.removesuffix(default_port)
        # One spelling of the path: `%20` and a space (or `%41` and `A`) name the same resource, so
        # each segment's escapes are undone and what a segment cannot hold is escaped again, the
        # same way (segment by segment: an escaped `/`, `%2F`, stays one).
        path, question, query = path.partition("?")
        path = "/".join(urllib.parse.quote(urllib.parse.unquote(s), safe=":@!$&'()*+,;=~") for s in path.split("/"))
        rest = host + slash + path + question + query
    return f"{scheme}://{rest}"


def bucket_and_key(url: str) -> tuple[str, str]:
    """`s3://bucket/a/b.mp4` -> ("bucket", "a/b.mp4")."""
    rest = url.split("://", 1)[1]
    bucket, _, key = rest.partition("/")
    return bucket, key


def backend_missing(scheme: str) -> str | None:
    """Why URLs of `scheme` cannot be read here, or None when its backend is installed."""
    module = BACKENDS[scheme][0]
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):  # ValueError: blocked in sys.modules (set to None)
        spec = None
    if spec is None:
        return f"{scheme}:// inputs need the {module} package: {EXTRA}"
    return None


@functools.cache
def filesystem(scheme: str, options: RemoteOptions) -> AbstractFileSystem:
    """The fsspec filesystem for `scheme`, with this run's timeouts and without library retries."""
    missing = backend_missing(scheme)
    if missing:
        raise RemoteBackendMissing(missing)
    import fsspec

    timeout = options.timeout_s
    if scheme == "s3":
        fs = fsspec.filesystem(
            "s3",
            anon=options.anonymous,
            config_kwargs={
                "connect_timeout": timeout,
                "read_timeout": timeout,
                "retries": {"total_max_attempts": 1},
            },
            skip_instance_cache=True,
        )
        fs.retries = 1  # s3fs's own loop (class attribute, 5): with_retries decides instead
        return fs
    if scheme == "gs":
        return fsspec.filesystem(
            "gcs", token="anon" if options.anonymous else None, retries=1, skip_instance_cache=True
        )
    import aiohttp

    client_timeout = aiohttp.ClientTimeout(total=None, sock_connect=timeout, sock_read=timeout)
    return fsspec.filesystem("http", client_kwargs={"timeout": client_timeout}, skip_instance_cache=True)


def fs_path(url: str) -> str:
    """What the filesystem of `url` calls it: s3fs and gcsfs drop the scheme, http keeps the URL."""
    scheme = url_scheme(url)
    return url if scheme in ("http", "https") else url.split("://", 1)[1]


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


# --- errors ---------------------------------------------------------------------------------------


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
    if isinstance(e, PermissionError) or status in (401, 403) or error_code(e) in _DENIED_CODES:
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


# --- identity and listing -------------------------------------------------------------------------


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


# --- checks before any work -----------------------------------------------------------------------


def _require_s3_credentials() -> None:
    import botocore.session

    if botocore.session.get_session().get_credentials() is None:
        raise ConfigError(
            "s3:// inputs: no AWS credentials found; set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY "
            "(or AWS_PROFILE), or pass --remote-anonymous for a public bucket"
        )


def _check_bucket(url: str, options: RemoteOptions, prefix_input: bool) -> None:
    scheme = url_scheme(url)
    bucket, key = bucket_and_key(url)
    fs = filesystem(scheme, options)
    if scheme == "s3":
        # The request a listing makes, for one key: it needs what the run needs and nothing more.
        call = functools.partial(fs.call_s3, "list_objects_v2", Bucket=bucket, Prefix=key, MaxKeys=1)
    else:
        call = functools.partial(fs.ls, bucket if not prefix_input else fs_path(url))
    try:
        with_retries(url, call, options)
    except RemoteNotFound:
        raise ConfigError(f"{url}: the bucket {bucket!r} does not exist (or these credentials cannot see it)") from None
    except RemoteAccessDenied as e:
        code = error_code(e.__cause__) if e.__cause__ else None
        # One object may be readable where its bucket cannot be listed; a bad key never works.
        if prefix_input or code in _CREDENTIAL_CODES:
            why = e.__cause__ or e
            raise ConfigError(f"{url}: cannot list it ({why}); check the credentials and the bucket's policy") from None
    except RemoteError as e:
        raise ConfigError(f"{url}: cannot reach the server ({e})") from None


def check_remote_inputs(inputs: Iterable[str], options: RemoteOptions, is_video_name: Callable[[str], bool]) -> None:
    """Usage errors before any work, for the URLs named as inputs (list files are read during the
    run; their lines' problems are per-video error lines): a scheme vlmcap cannot read, a backend
    that is not installed, s3 without credentials, a bucket that does not exist or cannot be listed."""
    checked: set[tuple[str, str, str, bool]] = set()
    for item in inputs:
        scheme = url_scheme(item)
        if scheme is None:
            continue
        if scheme not in BACKENDS:
            raise ConfigError(f"{item}: vlmcap cannot read {scheme}:// URLs; use s3://, gs://, http:// or https://")
        missing = backend_missing(scheme)
        if missing:
            raise ConfigError(missing)
        if scheme not in ("s3", "gs"):
            continue
        if scheme == "s3" and not options.anonymous:
            _require_s3_credentials()
        prefix_input = is_prefix(item, is_video_name)
        bucket, key = bucket_and_key(item)
        if not bucket:
            raise ConfigError(f"{item}: no bucket named; write {scheme}://BUCKET/PREFIX")
        check = (scheme, bucket, key if prefix_input else "", prefix_input)
        if check not in checked:
            checked.add(check)
            _check_bucket(item, options, prefix_input)
