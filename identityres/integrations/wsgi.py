"""WSGI middleware: every API call becomes an ``"API call"`` event with the caller's identity
(docs/integrations.md). Depends on no framework.

    app.wsgi_app = IdentityMiddleware(app.wsgi_app, sink=graph, identify_user=...)

Hooks are called as ``hook(environ, response)``; ``response`` is a
:class:`~identityres.integrations.Response` (``None`` for ``skip``, which runs before the
call). The response body is passed on chunk by chunk, as the application yields it: a
streaming response stays streaming, and the call is recorded when the server closes it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from identityres.integrations._calls import (
    FAILED,
    CallRecorder,
    Hook,
    Response,
    api_key_identifier,
    status_code,
)
from identityres.integrations.sinks import IntegrationStats

__all__ = ["ROUTE_KEY", "Hook", "IdentityMiddleware", "Response", "api_key_identifier"]

Environ = dict[str, Any]
StartResponse = Callable[..., Any]
WSGIApp = Callable[[Environ, StartResponse], Iterable[bytes]]

#: the environ key a framework helper (or the application) sets to the route template
ROUTE_KEY = "identityres.route"


class _Call:
    __slots__ = ("done", "headers", "start_wall", "started", "status")

    def __init__(self) -> None:
        self.status: int | None = None
        self.headers: list[tuple[str, str]] = []
        self.started = time.perf_counter()
        self.start_wall = time.time()
        self.done = False


class _Body:
    """The application's iterable, passed through; records the call once, on ``close``."""

    def __init__(self, body: Iterable[bytes], finish: Callable[[bool], None]) -> None:
        self._body = body
        self._finish = finish

    def __iter__(self) -> Iterator[bytes]:
        try:
            yield from self._body
        except BaseException:
            self._finish(True)
            raise

    def close(self) -> None:
        try:
            close = getattr(self._body, "close", None)
            if close is not None:
                close()
        finally:
            self._finish(False)


class IdentityMiddleware:
    """Record each call of ``app`` to ``sink`` (an ``IdentityGraph``, a collector URL, an
    ``EventQueue`` or any ``Sink``; a graph or URL is written by a background thread).

    Options (all keyword-only; docs/integrations.md explains each): ``identify_user``,
    ``identify_company``, ``skip``, ``get_metadata`` and ``api_key_id`` hooks;
    ``api_key_secret`` (the key of the HMAC that turns a credential into an ``api_key``
    identifier), ``api_key_header``; ``anonymous_cookie`` (the cookie holding the browser's
    anonymous id, ``None`` to ignore it); ``trusted_user_header`` and
    ``trusted_company_header`` (only for headers that a proxy you control sets);
    ``verify_jwt``, ``jwt_user_claim``, ``jwt_company_claim``; ``event`` (the event name);
    ``record_path`` (also record the raw path, off by default).
    """

    def __init__(self, app: WSGIApp, *, sink: Any, **options: Any) -> None:
        self.app = app
        self.recorder = CallRecorder(sink=sink, **options)
        self.stats: IntegrationStats = self.recorder.stats

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until the recorded calls are written (``False`` if ``timeout`` passed)."""
        return self.recorder.flush(timeout)

    def close(self, timeout: float | None = None) -> None:
        """Flush and stop the sink's thread (it is also done at interpreter exit)."""
        self.recorder.close(timeout)

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        rec = self.recorder
        if rec.skip is not None:
            skipped = rec.call("skip", rec.skip, environ, None)
            if skipped is not FAILED and skipped:
                rec.stats.add("skipped")
                return self.app(environ, start_response)
        call = _Call()

        def capture(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            call.status = status_code(status)
            call.headers = list(headers)
            if exc_info is not None:
                return start_response(status, headers, exc_info)
            return start_response(status, headers)

        def finish(raised: bool) -> None:
            if call.done:
                return
            call.done = True
            if raised and call.status is None:
                call.status = 500
            try:
                self._record(environ, call)
            except Exception:  # the recording itself must never break a request
                rec.internal_error()

        try:
            body = self.app(environ, capture)
        except BaseException:
            finish(True)
            raise
        return _Body(body, finish)

    def _record(self, environ: Environ, call: _Call) -> None:
        rec = self.recorder
        duration_ms = (time.perf_counter() - call.started) * 1000
        response = Response(call.status or 500, call.headers)
        user = company = metadata = key_id = None
        if rec.identify_user is not None:
            user = rec.call("identify_user", rec.identify_user, environ, response)
        if rec.identify_company is not None:
            company = rec.call("identify_company", rec.identify_company, environ, response)
        if rec.get_metadata is not None:
            metadata = rec.call("get_metadata", rec.get_metadata, environ, response)
        if rec.api_key_id is not None:
            key_id = rec.call("api_key_id", rec.api_key_id, environ, response)

        def header(name: str) -> str | None:
            key = name.upper().replace("-", "_")
            if key not in ("CONTENT_TYPE", "CONTENT_LENGTH"):
                key = "HTTP_" + key
            value = environ.get(key)
            return value if isinstance(value, str) else None

        route = environ.get(ROUTE_KEY)
        rec.send(
            rec.messages(
                header=header,
                method=str(environ.get("REQUEST_METHOD", "GET")),
                path=str(environ.get("SCRIPT_NAME", "")) + str(environ.get("PATH_INFO", "")),
                route=route if isinstance(route, str) else None,
                status=response.status,
                duration_ms=duration_ms,
                started=call.start_wall,
                user=user,
                company=company,
                metadata=metadata,
                key_id=key_id,
            )
        )
