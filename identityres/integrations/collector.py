"""A collector for the official SDKs (docs/integrations.md, "Collector"): an ASGI app that
accepts Segment's HTTP API, what analytics.js, analytics-python and RudderStack's SDKs send:

* ``POST /v1/batch`` with ``{"batch": [message, ...]}`` (and ``/v1/b``, where analytics.js's
  batching delivery sends it);
* ``POST /v1/identify``, ``/v1/track``, ``/v1/page``, ``/v1/screen``, ``/v1/alias``,
  ``/v1/group`` with one message (and analytics.js's short forms ``/v1/i``, ``/v1/t``, …);

and PostHog's capture API, what posthog-python and posthog-js send: ``POST /batch/`` with
``{"api_key": KEY, "batch": [event, ...]}``, and ``/capture/``, ``/e/`` and ``/i/v0/e/`` with
one event or a batch (the project API key as ``api_key`` or ``token``). PostHog events are
read as ``ingest(..., format="posthog")`` reads them (docs/formats.md).

Browsers post from the site's origin, not the collector's: every answer allows any origin
(CORS, ``Access-Control-Allow-Origin: *``, no credentials: the write key, not a cookie, is what
authenticates), and an ``OPTIONS`` preflight on an endpoint is answered ``204`` with the
headers it asks for (analytics.js sends ``Authorization``, which needs one).

Requests are authenticated with a write key the service configures, sent as the user name of
HTTP basic auth (as Segment's SDKs do) or as ``writeKey`` in the body, and compared in
constant time. Bodies may be gzip-compressed; past ``max_body`` bytes (compressed or not) a
request gets a 413. Every message is checked as ``IdentityGraph.ingest`` checks it before any
is written: a malformed payload gets a 400 naming the message and the field, and nothing of it
reaches the graph. A graph is written in a worker thread and the SDK is answered once the
write is done (a store failure is a 503, which the SDKs retry; message ids make the retry a
duplicate); a :class:`~identityres.integrations.Sink` is handed the messages at once.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import hmac
import json
import logging
import re
import zlib
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from datetime import datetime, timezone
from typing import Any

from identityres._events import MESSAGE_FIELDS, RecordBuilder, relabel
from identityres._formats import translate
from identityres._graph import IdentityGraph, _name_fields
from identityres._rules import Rules
from identityres.errors import ConfigurationError, ValidationError
from identityres.integrations.asgi import flush_in_thread
from identityres.integrations.sinks import IntegrationStats, Sink

__all__ = ["ENDPOINTS", "POSTHOG_ENDPOINTS", "Collector"]

log = logging.getLogger("identityres.integrations")

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]

#: path -> the message type it carries (``None``: a batch)
ENDPOINTS: dict[str, str | None] = {"/v1/batch": None, "/v1/b": None, "/v1/import": None}
for _name in ("identify", "track", "page", "screen", "alias", "group"):
    ENDPOINTS[f"/v1/{_name}"] = _name
    ENDPOINTS[f"/v1/{_name[0]}"] = _name
#: body keys of the request itself, not of a message
_REQUEST_KEYS = ("writeKey", "sentAt")
#: PostHog's capture endpoints (with and without the trailing slash its SDKs add)
POSTHOG_ENDPOINTS = frozenset(
    path + end for path in ("/batch", "/capture", "/e", "/i/v0/e") for end in ("", "/")
)
#: body keys of a PostHog request itself, not of an event
_POSTHOG_REQUEST_KEYS = ("api_key", "token", "sent_at")


#: CORS headers on every answer: browsers read the answer of a cross-origin post only with them
_CORS = [(b"access-control-allow-origin", b"*")]
#: how long a browser may reuse a preflight's answer, in seconds
_PREFLIGHT_MAX_AGE = b"86400"
#: a header list a preflight may ask for (names and commas only: it is echoed back)
_HEADER_LIST = re.compile(r"[A-Za-z0-9!#$%&'*+.^_`|~-]+(\s*,\s*[A-Za-z0-9!#$%&'*+.^_`|~-]+)*")

#: status -> the error code of the body, in the shape Segment's API answers errors
#: (``code``, ``message``), which its SDKs read
_CODES = {
    400: "invalid_request",
    401: "unauthorized",
    404: "not_found",
    405: "method_not_allowed",
    413: "request_too_large",
    415: "unsupported_encoding",
    503: "unavailable",
}


class _Gone(Exception):
    """The client disconnected before its body arrived: there is no one to answer."""


class _Refused(Exception):
    def __init__(self, status: int, reason: str, **extra: Any) -> None:
        super().__init__(reason)
        self.status = status
        self.body = {
            "success": False,
            "code": _CODES[status],
            "message": reason,
            "error": reason,
            **extra,
        }


class Collector:
    """The collector app. ``target``: an :class:`IdentityGraph` or a ``Sink``; ``write_keys``:
    the keys SDKs may send (at least one); ``max_body``: the largest body, in bytes, before
    and after decompression (Segment's own limit is 500 KB a batch); ``rules``: the rules the
    messages are checked by when ``target`` is a sink (a graph's own rules otherwise)."""

    def __init__(
        self,
        target: IdentityGraph | Sink,
        *,
        write_keys: Iterable[str],
        max_body: int = 512 * 1024,
        rules: Rules | None = None,
        shutdown_timeout: float = 5.0,
    ) -> None:
        if isinstance(write_keys, str):
            raise ConfigurationError("write_keys: must be a collection of keys, not one str")
        keys = list(write_keys)
        if not keys or not all(isinstance(k, str) and k for k in keys):
            raise ConfigurationError("write_keys: must hold at least one non-empty str")
        if not isinstance(target, (IdentityGraph, Sink)):
            raise ConfigurationError(f"target={target!r}: must be an IdentityGraph or a Sink")
        if isinstance(max_body, bool) or not isinstance(max_body, int) or max_body < 1024:
            raise ConfigurationError(f"max_body={max_body!r}: must be an int >= 1024")
        self.target = target
        self._keys = [k.encode() for k in keys]
        self.max_body = max_body
        self.shutdown_timeout = shutdown_timeout
        if rules is None:
            rules = target.rules if isinstance(target, IdentityGraph) else Rules()
        self._check = RecordBuilder(rules.compiled, _now)
        self.stats = target.stats if isinstance(target, Sink) else IntegrationStats()

    # -- ASGI ------------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":  # a websocket: not ours
            return
        if scope.get("method") == "OPTIONS" and _known(scope.get("path", "")):
            await _preflight(scope, send)
            return
        try:
            body = await self._handle(scope, receive)
            await _respond(send, 200, body)
        except _Gone:
            return
        except _Refused as refused:
            if refused.status >= 500:
                self.stats.add("write_errors")
            else:
                self.stats.add("rejected")
            extra = (
                [(b"www-authenticate", b'Basic realm="identityres"')]
                if refused.status == 401
                else []
            )
            await _respond(send, refused.status, refused.body, extra)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            event = await receive()
            if event["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif event["type"] == "lifespan.shutdown":
                if isinstance(self.target, Sink):
                    await flush_in_thread(self.target, self.shutdown_timeout)
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _handle(self, scope: Scope, receive: Receive) -> dict[str, Any]:
        path = scope.get("path", "")
        posthog = path in POSTHOG_ENDPOINTS
        if not _known(path):
            raise _Refused(404, f"no such endpoint: {path[:100]}")
        if scope.get("method") != "POST":
            raise _Refused(405, "use POST")
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        authorized = self._header_key_ok(headers.get("authorization"))
        raw = await self._read(headers, receive)
        encoding = headers.get("content-encoding", "identity").strip().lower()
        if encoding == "gzip":
            raw = self._gunzip(raw)
        elif encoding not in ("identity", ""):
            raise _Refused(415, f"unsupported Content-Encoding: {encoding[:40]}")
        try:
            body = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            raise _Refused(400, f"the body is not JSON: {exc}") from None
        except RecursionError:
            # json.loads recurses per level: a few KB of brackets would otherwise be a 500
            raise _Refused(400, "the body is not JSON we read: nested too deeply") from None
        if not isinstance(body, dict):
            raise _Refused(400, f"the body must be a JSON object, not {type(body).__name__}")
        if posthog:
            # the project API key travels in the body (the batch's, else the event's own)
            key = body.get("api_key", body.get("token"))
            if key is None and isinstance(body.get("batch"), list) and body["batch"]:
                first = body["batch"][0]
                key = first.get("api_key") if isinstance(first, dict) else None
            if not authorized and not self._key_ok(key):
                raise _Refused(401, "missing or unknown project API key")
            events = self._posthog_events(body)
            await self._write(events, "posthog")
            return {"status": 1}
        if not authorized and not self._key_ok(body.get("writeKey")):
            raise _Refused(401, "missing or unknown write key")
        messages = self._messages(ENDPOINTS[path], body)
        await self._write(messages)
        return {"success": True}

    # -- steps -----------------------------------------------------------------------------

    def _key_ok(self, key: Any) -> bool:
        if not isinstance(key, str) or not key:
            return False
        given = key.encode("utf-8", "surrogatepass")
        ok = False
        for known in self._keys:  # every key, so the time does not say which one matched
            ok |= hmac.compare_digest(given, known)
        return ok

    def _header_key_ok(self, authorization: str | None) -> bool:
        if not authorization:
            return False
        scheme, _, token = authorization.strip().partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            decoded = base64.b64decode(token.strip(), validate=True).decode("utf-8")
        except ValueError:  # binascii.Error, UnicodeDecodeError, and a non-ASCII token
            return False
        return self._key_ok(decoded.partition(":")[0])

    async def _read(self, headers: dict[str, str], receive: Receive) -> bytes:
        declared = headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_body:
            raise _Refused(413, f"the body is larger than {self.max_body} bytes")
        chunks: list[bytes] = []
        size = 0
        while True:
            event = await receive()
            if event["type"] == "http.disconnect":
                raise _Gone
            chunk = event.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                raise _Refused(413, f"the body is larger than {self.max_body} bytes")
            chunks.append(chunk)
            if not event.get("more_body", False):
                return b"".join(chunks)

    def _gunzip(self, raw: bytes) -> bytes:
        inflate = zlib.decompressobj(16 + zlib.MAX_WBITS)
        try:
            out = inflate.decompress(raw, self.max_body + 1)
        except zlib.error as exc:
            raise _Refused(400, f"the body is not valid gzip: {exc}") from None
        if len(out) > self.max_body or inflate.unconsumed_tail:
            raise _Refused(413, f"the decompressed body is larger than {self.max_body} bytes")
        if not inflate.eof:
            raise _Refused(400, "the body is not valid gzip: truncated")
        return out

    def _messages(self, kind: str | None, body: dict[str, Any]) -> list[dict[str, Any]]:
        if kind is None:
            batch = body.get("batch")
            if not isinstance(batch, list):
                raise _Refused(400, "batch: must be a list of messages")
        else:
            single = {k: v for k, v in body.items() if k not in _REQUEST_KEYS}
            given = single.setdefault("type", kind)
            if given != kind:
                raise _Refused(400, f"type={given!r}: this endpoint takes {kind} messages")
            batch = [single]
        received = _now().isoformat()
        messages: list[dict[str, Any]] = []
        for index, msg in enumerate(batch):
            if not isinstance(msg, dict):
                raise _Refused(400, f"batch[{index}]: must be a message object", index=index)
            if msg.get("timestamp") is None and msg.get("originalTimestamp") is None:
                # as Segment does: a message without a time (absent or null) is dated when it
                # arrives, once, so that the check below and the write see the same event
                # (behind a queue, a null would otherwise be dated when the queue writes it)
                msg = {**msg, "timestamp": received}
            try:
                self._check.from_object(msg)
            except ValidationError as exc:
                relabel(exc, MESSAGE_FIELDS)
                raise _Refused(
                    400,
                    f"batch[{index}]: {exc}",
                    index=index,
                    field=exc.field,
                ) from None
            messages.append(msg)
        return messages

    def _posthog_events(self, body: dict[str, Any]) -> list[dict[str, Any]]:
        batch = body.get("batch")
        if batch is None:
            batch = [{k: v for k, v in body.items() if k not in _POSTHOG_REQUEST_KEYS}]
        elif not isinstance(batch, list):
            raise _Refused(400, "batch: must be a list of events")
        received = _now().isoformat()
        sent = body.get("sent_at")
        events: list[dict[str, Any]] = []
        for index, event in enumerate(batch):
            if not isinstance(event, dict):
                raise _Refused(400, f"batch[{index}]: must be an event object", index=index)
            event = {k: v for k, v in event.items() if k not in ("api_key", "token")}
            if event.get("timestamp") is None:
                # dated once, when it arrives (the check and the write see the same event)
                event["timestamp"] = sent if isinstance(sent, str) else received
            op: Any = event
            try:
                for op in translate(event, "posthog"):
                    self._check.from_object(op)
            except ValidationError as exc:
                _name_fields(exc, event, op)  # PostHog's own keys, as ingest() names them
                raise _Refused(
                    400, f"batch[{index}]: {exc}", index=index, field=exc.field
                ) from None
            events.append(event)
        return events

    async def _write(self, messages: list[dict[str, Any]], fmt: str = "segment") -> None:
        if not messages:
            return
        target = self.target
        if isinstance(target, Sink):
            # A 200 tells the SDK to forget the batch, so it is not said for messages a full
            # queue dropped: a 503 makes the SDK retry (the messages it had kept are then
            # duplicates). The sink counts its drops in the stats this collector shares.
            dropped = target.stats.dropped
            target.send(messages)
            if target.stats.dropped > dropped:
                raise _Refused(503, "the queue is full; retry later")
            return
        loop = asyncio.get_running_loop()
        try:
            report = await loop.run_in_executor(
                None, functools.partial(target.ingest, messages, on_error="skip", format=fmt)
            )
        except Exception as exc:
            log.exception("identityres: the collector could not write %d messages", len(messages))
            raise _Refused(503, f"the store could not be written: {type(exc).__name__}") from None
        self.stats.add("written", len(report.outcomes))
        if report.errors:  # an event id reused with other content: checked only at write time
            self.stats.add("rejected", len(report.errors))
            log.warning(
                "identityres: the graph refused %d messages; first: %s",
                len(report.errors),
                report.errors[0].error,
            )


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _known(path: str) -> bool:
    return path in ENDPOINTS or path in POSTHOG_ENDPOINTS


async def _preflight(scope: Scope, send: Send) -> None:
    """A browser's CORS preflight: the post may come, with the headers it asked for."""
    asked = ""
    for name, value in scope["headers"]:
        if name.lower() == b"access-control-request-headers":
            asked = value.decode("latin-1").strip()
    headers = [
        *_CORS,
        (b"access-control-allow-methods", b"POST, OPTIONS"),
        (b"access-control-max-age", _PREFLIGHT_MAX_AGE),
        (b"content-length", b"0"),
    ]
    if asked and len(asked) <= 1000 and _HEADER_LIST.fullmatch(asked):
        headers.append((b"access-control-allow-headers", asked.encode("latin-1")))
    await send({"type": "http.response.start", "status": 204, "headers": headers})
    await send({"type": "http.response.body", "body": b""})


async def _respond(
    send: Send, status: int, body: dict[str, Any], extra: list[tuple[bytes, bytes]] | None = None
) -> None:
    data = json.dumps(body).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(data)).encode()),
        *_CORS,
        *(extra or []),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": data})
