"""A loopback HTTP server for the real-client tests: 127.0.0.1, an ephemeral port, answers
every request 200 with a JSON body, keeps each request's path, headers and body (gzip
undone) and stops itself after ``timeout`` seconds or when the ``with`` block ends."""

from __future__ import annotations

import gzip
import json
import threading
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs

__all__ = ["Captured", "LoopbackServer"]


class Captured:
    """One request as the client sent it."""

    def __init__(self, method: str, path: str, headers: dict[str, str], body: bytes) -> None:
        self.method = method
        self.path = path
        self.headers = headers
        self.body = body

    def text(self) -> str:
        return self.body.decode("utf-8")

    def json(self) -> Any:
        return json.loads(self.text())

    def form(self) -> dict[str, list[str]]:
        return parse_qs(self.text())


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def _read(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        encoding = (self.headers.get("Content-Encoding") or "").lower()
        if encoding == "gzip" or body[:2] == b"\x1f\x8b":
            body = gzip.decompress(body)
        elif encoding == "deflate":
            body = zlib.decompress(body)
        headers = {k.lower(): v for k, v in self.headers.items()}
        self.server.captured.append(Captured(self.command, self.path, headers, body))
        reply = self.server.reply_for(self.path)
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    do_POST = _read
    do_GET = _read

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.captured: list[Captured] = []
        self.replies: dict[str, bytes] = {}

    def reply_for(self, path: str) -> bytes:
        for prefix, reply in self.replies.items():
            if path.startswith(prefix):
                return reply
        return b'{"status": 1, "code": 200, "events_ingested": 1}'


class LoopbackServer:
    """``with LoopbackServer() as server: ... server.url ... server.captured``."""

    def __init__(self, timeout: float = 30.0) -> None:
        self._server = _Server()
        self._timeout = timeout
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._timer = threading.Timer(timeout, self._server.shutdown)
        self._timer.daemon = True

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def captured(self) -> list[Captured]:
        return self._server.captured

    @property
    def replies(self) -> dict[str, bytes]:
        return self._server.replies

    def __enter__(self) -> LoopbackServer:
        self._thread.start()
        self._timer.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._timer.cancel()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
