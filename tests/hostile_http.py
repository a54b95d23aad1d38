"""An HTTP server on 127.0.0.1 that answers the way servers fail (tests/core/video/test_remote_errors.py,
tests/engines/batch/test_chaos.py): by path, a video, an error, a redirect loop, or an answer
trickled a byte at a time so that no socket timeout ever fires."""

from __future__ import annotations

import contextlib
import http.server
import threading
import time
from collections.abc import Iterator
from typing import ClassVar

TRICKLE_S = 0.05  # a byte this often: every socket read gets something, long before any idle timeout
BODY_BYTES = 4 << 20


class HostileHandler(http.server.BaseHTTPRequestHandler):
    """/video.mp4 (and `/a b.mp4`): `body`; /broken.mp4: HTTP 500; /loop.mp4: redirects to itself;
    /slow-headers.mp4: its headers a byte at a time; /slow-body.mp4: a 4 MiB body a byte at a
    time; anything else: 404. `hits` counts the requests per path; `requests` lists them, (method, path)."""

    body: bytes = b""
    hits: ClassVar[dict[str, int]] = {}
    requests: ClassVar[list[tuple[str, str]]] = []

    def _trickle(self, data: bytes) -> None:
        try:
            for byte in data:
                self.wfile.write(bytes([byte]))
                self.wfile.flush()
                time.sleep(TRICKLE_S)
        except OSError:  # the client gave up: what a test wants
            pass

    def _send(self, status: int, length: int, **headers: str) -> None:
        self.send_response(status)
        self.send_header("Content-Length", str(length))
        for name, value in headers.items():
            self.send_header(name.replace("_", "-"), value)
        self.end_headers()

    def _answer(self) -> None:
        self.hits[self.path] = self.hits.get(self.path, 0) + 1
        self.requests.append((self.command, self.path))
        if self.path in ("/video.mp4", "/a%20b.mp4"):
            self._send(200, len(self.body), Last_Modified="Tue, 01 Dec 2026 10:00:00 GMT")
            if self.command == "GET":
                self.wfile.write(self.body)
        elif self.path == "/slow-headers.mp4":
            self.wfile.write(b"HTTP/1.1 200 OK\r\n")
            self._trickle(b"X-Padding: " + b"a" * 10_000)
        elif self.path == "/slow-body.mp4":
            self._send(200, BODY_BYTES)
            if self.command == "GET":
                self._trickle(b"\0" * BODY_BYTES)
        elif self.path == "/broken.mp4":
            self.send_error(500)
        elif self.path == "/loop.mp4":
            self._send(302, 0, Location="/loop.mp4")
        else:
            self.send_error(404)

    do_HEAD = do_GET = _answer

    def log_message(self, *args) -> None:
        pass


@contextlib.contextmanager
def hostile_server(body: bytes = b"") -> Iterator[tuple[str, type[HostileHandler]]]:
    """(the server's base URL, its handler class, whose `hits` and `requests` this server fills)."""
    handler = type("Handler", (HostileHandler,), {"body": body, "hits": {}, "requests": []})
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", handler
    finally:
        httpd.shutdown()
        httpd.server_close()
