"""What a run checks of its remote inputs before any work: the scheme's backend installed, s3
credentials there, each bucket there and listable (exit 2 otherwise, docs/BATCH.md)."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable

from vlmcap.errors import ConfigError, RemoteAccessDenied, RemoteError, RemoteNotFound
from vlmcap.video.remote_listing import is_prefix
from vlmcap.video.remote_requests import CREDENTIAL_CODES, error_code, with_retries
from vlmcap.video.remote_urls import (
    BACKENDS,
    RemoteOptions,
    backend_missing,
    bucket_and_key,
    filesystem,
    fs_path,
    url_scheme,
)


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
        if prefix_input or code in CREDENTIAL_CODES:
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
