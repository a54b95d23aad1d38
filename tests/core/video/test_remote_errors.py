"""vlmcap/video/remote.py: a failed request is typed as docs/VIDEO.md says, with the tries made, against
a real HTTP server on 127.0.0.1 through fsspec and aiohttp (fsspec reports all of these as FileNotFoundError)."""

from __future__ import annotations

import http.server
import socket
import threading
from collections.abc import Iterator
from typing import ClassVar

import pytest

from vlmcap.errors import RemoteConnectionError, RemoteNotFound, RemoteRedirectLoop
from vlmcap.video.remote import RemoteOptions, stat

OPTIONS = RemoteOptions(retries=1, backoff_s=0.01, timeout_s=5.0)


class _Handler(http.server.BaseHTTPRequestHandler):
    """/broken.mp4: HTTP 500; /loop.mp4: redirects to itself; anything else: 404."""

    hits: ClassVar[dict[str, int]] = {}

    def _answer(self) -> None:
        self.hits[self.path] = self.hits.get(self.path, 0) + 1
        if self.path == "/broken.mp4":
            self.send_error(500)
        elif self.path == "/loop.mp4":
            self.send_response(302)
            self.send_header("Location", "/loop.mp4")
            self.send_header("Content-Length", "0")
            self.end_headers()
        else:
            self.send_error(404)

    do_HEAD = do_GET = _answer

    def log_message(self, *args) -> None:
        pass


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def test_a_server_error_is_retried_and_typed_as_one(server: str) -> None:
    _Handler.hits.clear()
    with pytest.raises(RemoteConnectionError, match=r"server error HTTP 500 after 2 tries"):
        stat(f"{server}/broken.mp4", OPTIONS)
    assert _Handler.hits["/broken.mp4"] >= 2  # each try asked again (fsspec: a HEAD, then a GET)


def test_a_refused_connection_is_retried_and_typed_as_one() -> None:
    with socket.socket() as s:  # a port nothing listens on once this is closed
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(RemoteConnectionError, match=r"connection failed after 2 tries"):
        stat(f"http://127.0.0.1:{port}/a.mp4", OPTIONS)


def test_a_redirect_loop_and_a_missing_object_are_final(server: str) -> None:
    _Handler.hits.clear()
    with pytest.raises(RemoteRedirectLoop, match="redirected in a loop"):
        stat(f"{server}/loop.mp4", OPTIONS)
    with pytest.raises(RemoteNotFound, match="no such object"):
        stat(f"{server}/missing.mp4", OPTIONS)
    assert _Handler.hits["/missing.mp4"] <= 2  # one try: a 404 does not change when asked again
