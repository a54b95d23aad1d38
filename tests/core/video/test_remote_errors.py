"""vlmcap/video/remote_requests.py: a failed request is typed as docs/VIDEO.md says, with the tries made, against
a real HTTP server on 127.0.0.1 through fsspec and aiohttp (fsspec reports all of these as FileNotFoundError);
a server that trickles its answer is held to the request's total deadline."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hostile_http import HostileHandler, hostile_server

from vlmcap.errors import RemoteConnectionError, RemoteNotFound, RemoteRedirectLoop, RemoteTimeout
from vlmcap.video.remote_listing import stat
from vlmcap.video.remote_requests import Abandoned
from vlmcap.video.remote_urls import RemoteOptions
from vlmcap.video.spool import spooled_copy

OPTIONS = RemoteOptions(retries=1, backoff_s=0.01, timeout_s=5.0)


@pytest.fixture(scope="module")
def served() -> Iterator[tuple[str, type[HostileHandler]]]:
    with hostile_server() as found:
        yield found


@pytest.fixture
def server(served) -> str:
    served[1].hits.clear()
    return served[0]


def test_a_server_error_is_retried_and_typed_as_one(server: str, served) -> None:
    with pytest.raises(RemoteConnectionError, match=r"server error HTTP 500 after 2 tries"):
        stat(f"{server}/broken.mp4", OPTIONS)
    assert served[1].hits["/broken.mp4"] >= 2  # each try asked again (fsspec: a HEAD, then a GET)


def test_a_refused_connection_is_retried_and_typed_as_one() -> None:
    with socket.socket() as s:  # a port nothing listens on once this is closed
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(RemoteConnectionError, match=r"connection failed after 2 tries"):
        stat(f"http://127.0.0.1:{port}/a.mp4", OPTIONS)


def test_a_redirect_loop_and_a_missing_object_are_final(server: str, served) -> None:
    with pytest.raises(RemoteRedirectLoop, match="redirected in a loop"):
        stat(f"{server}/loop.mp4", OPTIONS)
    with pytest.raises(RemoteNotFound, match="no such object"):
        stat(f"{server}/missing.mp4", OPTIONS)
    assert served[1].hits["/missing.mp4"] <= 2  # one try: a 404 does not change when asked again


TRICKLE_OPTIONS = RemoteOptions(retries=1, backoff_s=0.01, timeout_s=1.0)


def test_headers_trickled_a_byte_at_a_time_are_a_timeout_within_the_deadline(server: str) -> None:
    t0 = time.monotonic()
    with pytest.raises(RemoteTimeout, match=r"no answer within 1 s after 2 tries"):
        stat(f"{server}/slow-headers.mp4", TRICKLE_OPTIONS)
    assert time.monotonic() - t0 < 4  # two tries of 1 s and a backoff, not the 500 s the headers take


def test_a_body_trickled_a_byte_at_a_time_is_a_timeout_within_the_deadline(server: str, tmp_path: Path) -> None:
    options = RemoteOptions(retries=0, timeout_s=1.0, spool_dir=str(tmp_path))
    t0 = time.monotonic()
    with pytest.raises(RemoteTimeout, match=r"after 1 try"), spooled_copy(f"{server}/slow-body.mp4", options):
        pass
    assert time.monotonic() - t0 < 3
    assert not [p for p in tmp_path.rglob("*") if p.is_file()]  # nothing left in the spool


def test_a_stopping_run_abandons_the_request_in_progress_at_once(server: str) -> None:
    stop = threading.Event()
    threading.Timer(0.3, stop.set).start()
    t0 = time.monotonic()
    with pytest.raises(Abandoned):
        stat(f"{server}/slow-headers.mp4", RemoteOptions(timeout_s=60.0, retries=3), stop)
    assert time.monotonic() - t0 < 1.5  # not the 60 s deadline, nor its retries
