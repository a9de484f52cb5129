"""ASGI 3 middleware: every HTTP call becomes an ``"API call"`` event with the caller's
identity (docs/integrations.md). Pure ASGI: it depends on no framework.

    app = IdentityMiddleware(app, sink=graph, identify_user=...)

Hooks are called as ``hook(scope, response)`` and may be coroutine functions; ``response``
is a :class:`~identityres.integrations.Response` (``None`` for ``skip``, which runs before
the call). Lifespan and websocket scopes pass through to the application unchanged (the
middleware only notices the lifespan shutdown, to flush its sink before the server stops);
response messages are forwarded one by one, so streaming responses stay streaming.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from identityres.integrations._calls import (
    FAILED,
    CallRecorder,
    Hook,
    Response,
    api_key_identifier,
    headers_text,
)
from identityres.integrations.sinks import IntegrationStats, Sink

__all__ = ["ROUTE_KEY", "Hook", "IdentityMiddleware", "Response", "api_key_identifier"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

#: the scope key an application may set to the route template (Starlette and FastAPI set
#: ``scope["route"]``, which is read first)
ROUTE_KEY = "identityres.route"


async def flush_in_thread(sink: Sink, timeout: float) -> None:
    """Flush ``sink`` without blocking the event loop."""
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, sink.flush, timeout)


def lifespan_flusher(send: Send, sink: Sink, timeout: float) -> Send:
    """A ``send`` that flushes ``sink`` before passing on ``lifespan.shutdown.complete``."""

    async def forward(message: Message) -> None:
        if message.get("type") == "lifespan.shutdown.complete":
            await flush_in_thread(sink, timeout)
        await send(message)

    return forward


class _Exchange:
    """One HTTP call as the middleware sees it: when it started, and what the application's
    response said, captured from the messages it sends (which go on unchanged and one by one,
    so streaming stays streaming)."""

    def __init__(self, send: Send) -> None:
        self._send = send
        self.started = time.perf_counter()
        self.start_wall = time.time()
        self.status = 0  # 0 until http.response.start
        self.headers: list[tuple[str, str]] = []
        self.ended = 0.0  # perf_counter() at the last body message, 0.0 before

    async def send(self, message: Message) -> None:
        kind = message.get("type")
        if kind == "http.response.start":
            self.status = int(message.get("status", 500))
            self.headers.extend(headers_text(message.get("headers", ())))
        await self._send(message)
        if kind == "http.response.body" and not message.get("more_body", False):
            self.ended = time.perf_counter()


class IdentityMiddleware:
    """Record each HTTP call of ``app`` to ``sink`` (an ``IdentityGraph``, a collector URL, an
    ``EventQueue`` or any ``Sink``; a graph or URL is written by a background thread).

    The options are those of :class:`identityres.integrations.wsgi.IdentityMiddleware`, plus
    ``shutdown_timeout``: how long the lifespan shutdown waits for the sink to flush.
    """

    def __init__(
        self, app: ASGIApp, *, sink: Any, shutdown_timeout: float = 5.0, **options: Any
    ) -> None:
        self.app = app
        self.recorder = CallRecorder(sink=sink, **options)
        self.stats: IntegrationStats = self.recorder.stats
        self.shutdown_timeout = shutdown_timeout

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until the recorded calls are written (``False`` if ``timeout`` passed). This
        blocks: from a coroutine, use ``await asyncio.to_thread(middleware.flush)``."""
        return self.recorder.flush(timeout)

    def close(self, timeout: float | None = None) -> None:
        """Flush and stop the sink's thread (it is also done at interpreter exit)."""
        self.recorder.close(timeout)

    async def _hook(self, name: str, hook: Hook, scope: Scope, response: Response | None) -> Any:
        rec = self.recorder
        result = rec.call(name, hook, scope, response)
        if inspect.isawaitable(result):
            try:
                return await result
            except Exception as exc:
                return rec.failed(name, exc)
        return result

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope.get("type")
        if kind == "lifespan":
            await self.app(
                scope, receive, lifespan_flusher(send, self.recorder.sink, self.shutdown_timeout)
            )
            return
        if kind != "http":
            await self.app(scope, receive, send)
            return
        rec = self.recorder
        if rec.skip is not None:
            skipped = await self._hook("skip", rec.skip, scope, None)
            if skipped is not FAILED and skipped:
                rec.stats.add("skipped")
                await self.app(scope, receive, send)
                return
        call = _Exchange(send)
        try:
            await self.app(scope, receive, call.send)
        finally:  # a call that raised is recorded too (as a 500 if no response started)
            await self._record_safely(scope, call)

    async def _record_safely(self, scope: Scope, call: _Exchange) -> None:
        try:
            await self._record(scope, call)
        except Exception:  # the recording itself must never break a request
            self.recorder.internal_error()

    async def _record(self, scope: Scope, call: _Exchange) -> None:
        rec = self.recorder
        status = call.status or 500  # no response started: the server answers 500
        headers = call.headers
        duration_ms = ((call.ended or time.perf_counter()) - call.started) * 1000
        response = Response(status, headers)
        user = company = metadata = key_id = None
        if rec.identify_user is not None:
            user = await self._hook("identify_user", rec.identify_user, scope, response)
        if rec.identify_company is not None:
            company = await self._hook("identify_company", rec.identify_company, scope, response)
        if rec.get_metadata is not None:
            metadata = await self._hook("get_metadata", rec.get_metadata, scope, response)
        if rec.api_key_id is not None:
            key_id = await self._hook("api_key_id", rec.api_key_id, scope, response)

        request_headers: dict[str, str] = {}
        for k, v in scope.get("headers", ()):
            name = k.decode("latin-1").lower()
            value = v.decode("latin-1")
            # repeated Cookie headers are one list (RFC 9113 allows splitting them)
            if name in request_headers:
                joiner = "; " if name == "cookie" else ", "
                request_headers[name] = request_headers[name] + joiner + value
            else:
                request_headers[name] = value

        route_obj = scope.get("route")
        route = getattr(route_obj, "path", None)
        if not isinstance(route, str):
            route = scope.get(ROUTE_KEY)
        rec.send(
            rec.messages(
                header=lambda name: request_headers.get(name.lower()),
                method=str(scope.get("method", "GET")),
                path=str(scope.get("root_path", "")) + str(scope.get("path", "")),
                route=route if isinstance(route, str) else None,
                status=status,
                duration_ms=duration_ms,
                started=call.start_wall,
                user=user,
                company=company,
                metadata=metadata,
                key_id=key_id,
            )
        )
