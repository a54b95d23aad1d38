"""s3://, gs://, http(s):// inputs through fsspec: which text is such a URL, its normal form, the
backend each scheme needs and its filesystem (one per scheme and `RemoteOptions`).

Credentials come from the environment, read by each backend's own library: botocore's chain for
s3 (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_SESSION_TOKEN, AWS_PROFILE, a role; the
endpoint from AWS_ENDPOINT_URL or AWS_ENDPOINT_URL_S3, which botocore reads itself), Google's
default credentials for gs (GOOGLE_APPLICATION_CREDENTIALS). vlmcap never takes a secret on its
command line or in its config, where it would end up in shell history and `config show`.
The libraries' own retry loops are turned off here: remote_requests.py has the one loop.
"""

from __future__ import annotations

import functools
import importlib.util
import re
import urllib.parse
from dataclasses import dataclass
from typing import TYPE_CHECKING

from vlmcap.errors import RemoteBackendMissing

if TYPE_CHECKING:
    from fsspec import AbstractFileSystem

    from vlmcap.config.schema import RemoteConfig


# scheme -> (the module its fsspec backend needs, fsspec's protocol name)
BACKENDS = {"s3": ("s3fs", "s3"), "gs": ("gcsfs", "gcs"), "http": ("aiohttp", "http"), "https": ("aiohttp", "http")}
EXTRA = "pip install 'vlmcap[remote]'"
_URL = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")


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
