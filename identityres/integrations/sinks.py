"""Where integration events go (docs/integrations.md, "Sinks").

Every integration speaks Segment-spec message dicts (the format ``IdentityGraph.ingest``
reads, docs/concepts.md) and hands them to a :class:`Sink`:

* :class:`GraphSink` writes them to an in-process graph in the caller's thread;
* :class:`EventQueue` keeps them in a bounded queue that a background thread writes in batches
  to a *writer*: a graph (:class:`GraphWriter`) or a remote collector (:class:`CollectorWriter`,
  an HTTP POST of Segment ``/v1/batch`` bodies). A full queue drops what does not fit, and
  counts it; the queue is flushed at interpreter exit.

Nothing here raises into the caller's request: failures are counted in an
:class:`IntegrationStats` and logged on the ``identityres.integrations`` logger.
"""

from __future__ import annotations

import atexit
import base64
import gzip
import json
import logging
import os
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
import weakref
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timezone
from typing import Any, Protocol, runtime_checkable

from identityres._graph import IdentityGraph
from identityres.errors import ConfigurationError

__all__ = [
    "CollectorError",
    "CollectorWriter",
    "EventQueue",
    "GraphSink",
    "GraphWriter",
    "IntegrationStats",
    "Sink",
    "as_sink",
    "message",
]

log = logging.getLogger("identityres.integrations")

Message = dict[str, Any]
Writer = Callable[[list[Message]], None]


def message(kind: str, **fields: Any) -> Message:
    """A Segment-spec message of type ``kind`` with a fresh ``messageId`` (UUID4) and the
    current time as ``timestamp``: both are fixed here, once, so a retried delivery of the
    message is recognized as a duplicate (docs/concepts.md, "Event ids and duplicates").
    Fields that are ``None`` are left out."""
    msg: Message = {
        "type": kind,
        "messageId": str(uuid.uuid4()),
        "timestamp": datetime.now(timezone.utc).isoformat(),
    }
    msg.update((k, v) for k, v in fields.items() if v is not None)
    return msg


class IntegrationStats:
    """Counters of an integration, safe to update from several threads. Read the attributes,
    or :meth:`as_dict` for all of them at once.

    ``calls``: requests recorded; ``skipped``: requests the ``skip`` hook passed through;
    ``unidentified``: recorded requests that carried no identifier, so made no event;
    ``events``: messages handed to the sink; ``hook_errors``: hooks (or the JWT verifier)
    that raised or returned something unusable; ``internal_errors``: calls whose recording
    failed in identityres itself (logged with the traceback); ``send_errors``: sinks that raised on
    ``send``; ``queued``: messages a queue accepted; ``dropped``: messages a full (or closed)
    queue refused; ``written``: messages a writer delivered; ``rejected``: messages the graph
    refused as invalid; ``write_errors``: batches whose write failed; ``failed``: the messages
    of those batches; ``retries``: HTTP retries of a collector writer.
    """

    FIELDS = (
        "calls",
        "skipped",
        "unidentified",
        "events",
        "hook_errors",
        "internal_errors",
        "send_errors",
        "queued",
        "dropped",
        "written",
        "rejected",
        "write_errors",
        "failed",
        "retries",
    )

    calls: int
    skipped: int
    unidentified: int
    events: int
    hook_errors: int
    internal_errors: int
    send_errors: int
    queued: int
    dropped: int
    written: int
    rejected: int
    write_errors: int
    failed: int
    retries: int

    def __init__(self) -> None:
        self._lock = threading.Lock()
        for name in self.FIELDS:
            setattr(self, name, 0)

    def add(self, name: str, n: int = 1) -> None:
        """Add ``n`` to the counter ``name``."""
        with self._lock:
            setattr(self, name, getattr(self, name) + n)

    def as_dict(self) -> dict[str, int]:
        """Every counter, read at one moment."""
        with self._lock:
            return {name: getattr(self, name) for name in self.FIELDS}

    def __repr__(self) -> str:
        inner = ", ".join(f"{k}={v}" for k, v in self.as_dict().items() if v)
        return f"IntegrationStats({inner})"


@runtime_checkable
class Sink(Protocol):
    """What the integrations hand their messages to. ``send`` must not block for long and
    must not raise for a delivery problem (count it instead); ``flush`` waits until what was
    sent is delivered (``True``) or ``timeout`` seconds pass (``False``)."""

    stats: IntegrationStats

    def send(self, messages: Sequence[Mapping[str, Any]]) -> None: ...

    def flush(self, timeout: float | None = None) -> bool: ...

    def close(self, timeout: float | None = None) -> None: ...


class GraphWriter:
    """A writer that applies a batch to a graph with ``ingest(..., on_error="skip")``: the
    messages the graph refuses are counted as ``rejected`` and logged, the others applied."""

    def __init__(self, graph: IdentityGraph, stats: IntegrationStats | None = None) -> None:
        if not isinstance(graph, IdentityGraph):
            raise ConfigurationError(f"graph={graph!r}: must be an identityres.IdentityGraph")
        self.graph = graph
        self.stats = stats if stats is not None else IntegrationStats()

    def __call__(self, batch: list[Message]) -> None:
        report = self.graph.ingest(batch, on_error="skip")
        self.stats.add("written", len(report.outcomes))
        if report.errors:
            self.stats.add("rejected", len(report.errors))
            first = report.errors[0]
            log.warning(
                "identityres: the graph refused %d of %d messages; first: %s",
                len(report.errors),
                len(batch),
                first.error,
            )


class GraphSink:
    """Write each ``send`` to a graph at once, in the caller's thread. For an in-memory graph
    that is microseconds; a graph on a store (SQLite, PostgreSQL) is better written through an
    :class:`EventQueue`, so that a slow store never slows a request."""

    def __init__(self, graph: IdentityGraph, stats: IntegrationStats | None = None) -> None:
        self.stats = stats if stats is not None else IntegrationStats()
        self._write = GraphWriter(graph, self.stats)

    def send(self, messages: Sequence[Mapping[str, Any]]) -> None:
        if not messages:
            return
        try:
            self._write([dict(m) for m in messages])
        except Exception:
            self.stats.add("write_errors")
            self.stats.add("failed", len(messages))
            log.exception("identityres: writing %d messages to the graph failed", len(messages))

    def flush(self, timeout: float | None = None) -> bool:
        return True

    def close(self, timeout: float | None = None) -> None:
        return None


class CollectorError(Exception):
    """A collector answered a batch with an error that retrying will not fix (a 4xx)."""

    def __init__(self, status: int, body: str) -> None:
        super().__init__(f"the collector answered {status}: {body[:200]}")
        self.status = status
        self.body = body


class CollectorWriter:
    """A writer that POSTs each batch to a collector speaking Segment's HTTP API
    (``URL/v1/batch``, a JSON body ``{"batch": [...], "sentAt": ...}``, gzip-compressed, the
    write key as the user name of HTTP basic auth, as Segment's SDKs send it).

    ``url`` is the collector's base URL (``http://127.0.0.1:8080``); a user name in it
    (``http://KEY@host:port``) is taken as the write key. A connection failure, a 5xx or a
    429 is retried ``retries`` times with exponential back-off; the batch keeps its message
    ids, so a retry the collector had already applied is a duplicate there, not a second event.
    """

    def __init__(
        self,
        url: str,
        write_key: str | None = None,
        *,
        timeout: float = 10.0,
        retries: int = 3,
        backoff: float = 0.5,
        compress: bool = True,
        stats: IntegrationStats | None = None,
    ) -> None:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigurationError(f"url={url!r}: must be an http:// or https:// URL")
        if parts.username is not None:
            if write_key is None:
                write_key = urllib.parse.unquote(parts.username)
            netloc = parts.hostname if parts.port is None else f"{parts.hostname}:{parts.port}"
            if ":" in parts.hostname:  # an IPv6 literal
                netloc = f"[{parts.hostname}]" + ("" if parts.port is None else f":{parts.port}")
            parts = parts._replace(netloc=netloc)
        base = urllib.parse.urlunsplit(parts).rstrip("/")
        self.url = base if base.endswith("/v1/batch") else base + "/v1/batch"
        self.write_key = write_key
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self.compress = compress
        self.stats = stats if stats is not None else IntegrationStats()

    def __repr__(self) -> str:  # never shows the write key
        return f"CollectorWriter({self.url!r})"

    def __call__(self, batch: list[Message]) -> None:
        body = json.dumps(
            {"batch": batch, "sentAt": datetime.now(timezone.utc).isoformat()},
            separators=(",", ":"),
            ensure_ascii=False,
        ).encode()
        headers = {"Content-Type": "application/json", "User-Agent": "identityres"}
        if self.compress:
            body = gzip.compress(body)
            headers["Content-Encoding"] = "gzip"
        if self.write_key is not None:
            token = base64.b64encode(f"{self.write_key}:".encode()).decode()
            headers["Authorization"] = f"Basic {token}"
        attempt = 0
        while True:
            request = urllib.request.Request(self.url, data=body, headers=headers, method="POST")
            try:
                with urllib.request.urlopen(request, timeout=self.timeout) as response:
                    response.read()
                self.stats.add("written", len(batch))
                return
            except urllib.error.HTTPError as exc:
                text = exc.read().decode("utf-8", "replace")
                if exc.code < 500 and exc.code != 429:
                    raise CollectorError(exc.code, text) from None
                error: Exception = CollectorError(exc.code, text)
            except (urllib.error.URLError, OSError) as exc:
                error = exc
            if attempt >= self.retries:
                raise error
            attempt += 1
            self.stats.add("retries")
            time.sleep(self.backoff * 2 ** (attempt - 1))


class EventQueue:
    """A bounded queue of messages that a background thread writes in batches.

    ``target`` is a writer (a callable taking a list of messages), an
    :class:`IdentityGraph` (written with :class:`GraphWriter`) or a collector URL (written with
    :class:`CollectorWriter`). A batch is written when ``batch_size`` messages wait, or
    ``flush_interval`` seconds after the first of them arrived, or on :meth:`flush`.

    :meth:`send` never blocks on the writer: past ``max_queue`` waiting messages, the ones
    that do not fit are dropped and counted (``stats.dropped``). A batch whose write raises is
    counted (``write_errors``, ``failed``), logged and not retried here (a
    :class:`CollectorWriter` retries by itself). The queue is flushed and closed at
    interpreter exit (``atexit``), waiting at most ``shutdown_timeout`` seconds; the ASGI
    middleware and the collector also flush it on the lifespan shutdown. In a forked child
    the queue starts empty, with a thread of its own (the parent writes what it had queued).
    """

    def __init__(
        self,
        target: Writer | IdentityGraph | str,
        *,
        batch_size: int = 100,
        flush_interval: float = 1.0,
        max_queue: int = 10_000,
        shutdown_timeout: float = 5.0,
        stats: IntegrationStats | None = None,
    ) -> None:
        for name, value in (("batch_size", batch_size), ("max_queue", max_queue)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigurationError(f"{name}={value!r}: must be an int >= 1")
        for name, seconds in (
            ("flush_interval", flush_interval),
            ("shutdown_timeout", shutdown_timeout),
        ):
            if (
                isinstance(seconds, bool)
                or not isinstance(seconds, (int, float))
                or not seconds > 0
            ):
                raise ConfigurationError(f"{name}={seconds!r}: must be a number of seconds > 0")
        self.stats = stats if stats is not None else IntegrationStats()
        writer: Writer
        if isinstance(target, IdentityGraph):
            writer = GraphWriter(target, self.stats)
        elif isinstance(target, str):
            writer = CollectorWriter(target, stats=self.stats)
        elif callable(target):
            writer = target
        else:
            raise ConfigurationError(
                f"target={target!r}: must be a writer (a callable), an IdentityGraph or a URL"
            )
        self.writer = writer
        self.batch_size = batch_size
        self.flush_interval = float(flush_interval)
        self.max_queue = max_queue
        self.shutdown_timeout = float(shutdown_timeout)
        self._reset_state()
        _QUEUES.add(self)

    def _reset_state(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._items: deque[Message] = deque()
        self._in_flight = 0
        self._flushing = False
        self._closed = False
        self._thread: threading.Thread | None = None

    def __repr__(self) -> str:
        return f"EventQueue({self.writer!r}, waiting={len(self._items)})"

    def send(self, messages: Sequence[Mapping[str, Any]]) -> None:
        if not messages:
            return
        with self._cond:
            if self._closed:
                accepted = 0
            else:
                accepted = max(0, min(len(messages), self.max_queue - len(self._items)))
                self._items.extend(dict(m) for m in messages[:accepted])
                if self._thread is None:
                    self._start()
                if len(self._items) >= self.batch_size or self._in_flight == 0:
                    self._cond.notify_all()
        if accepted:
            self.stats.add("queued", accepted)
        dropped = len(messages) - accepted
        if dropped:
            self.stats.add("dropped", dropped)
            total = self.stats.dropped
            if total == dropped or total.bit_length() != (total - dropped).bit_length():
                # the first drop, then at each power of two: loud enough, never a flood
                log.warning(
                    "identityres: event queue %s; %d messages dropped so far",
                    "closed" if self._closed else f"full ({self.max_queue})",
                    total,
                )

    def _start(self) -> None:
        thread = threading.Thread(target=self._run, name="identityres-event-queue", daemon=True)
        self._thread = thread
        thread.start()

    def _next_batch(self) -> list[Message] | None:
        """Wait for a batch to write (under the lock); ``None`` once closed and drained."""
        deadline: float | None = None
        while True:
            n = len(self._items)
            if n == 0:
                deadline = None
                if self._closed:
                    return None
            elif n >= self.batch_size or self._flushing or self._closed:
                break
            elif deadline is None:
                deadline = time.monotonic() + self.flush_interval
            elif time.monotonic() >= deadline:
                break
            self._cond.wait(None if deadline is None else max(0.0, deadline - time.monotonic()))
        take = min(n, self.batch_size)
        batch = [self._items.popleft() for _ in range(take)]
        self._in_flight = take
        return batch

    def _run(self) -> None:
        while True:
            with self._cond:
                batch = self._next_batch()
                if batch is None:
                    return
            try:
                self.writer(batch)
            except Exception:
                self.stats.add("write_errors")
                self.stats.add("failed", len(batch))
                log.exception("identityres: writing a batch of %d messages failed", len(batch))
            finally:
                with self._cond:
                    self._in_flight = 0
                    if not self._items:
                        self._flushing = False
                    self._cond.notify_all()

    @property
    def waiting(self) -> int:
        """Messages queued and not yet handed to the writer."""
        return len(self._items)

    def flush(self, timeout: float | None = None) -> bool:
        """Write everything queued now; ``True`` once it is written (or failed and counted),
        ``False`` if ``timeout`` seconds passed first."""
        with self._cond:
            if not self._items and not self._in_flight:
                return True
            if self._thread is None or not self._thread.is_alive():
                self._start()
            self._flushing = True
            self._cond.notify_all()
            return self._cond.wait_for(
                lambda: not self._items and not self._in_flight, timeout=timeout
            )

    def close(self, timeout: float | None = None) -> None:
        """Flush (waiting at most ``timeout``, default ``shutdown_timeout``), then stop the
        thread. Messages still waiting after that are counted as dropped; later sends are
        dropped too."""
        if timeout is None:
            timeout = self.shutdown_timeout
        self.flush(timeout)
        with self._cond:
            self._closed = True
            left = len(self._items)
            self._items.clear()
            self._cond.notify_all()
            thread = self._thread
        if left:
            self.stats.add("dropped", left)
            log.warning("identityres: event queue closed with %d messages unwritten", left)
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)


def as_sink(target: Any, stats: IntegrationStats | None = None) -> Sink:
    """The sink for ``target``: a :class:`Sink` as it is; an :class:`IdentityGraph` or a
    collector URL behind an :class:`EventQueue` (a background thread, so the request never
    waits for the write); a writer callable behind an :class:`EventQueue` too."""
    if isinstance(target, Sink):
        return target
    if isinstance(target, (IdentityGraph, str)) or callable(target):
        return EventQueue(target, stats=stats)
    raise ConfigurationError(
        f"sink={target!r}: must be an IdentityGraph, a collector URL, a writer callable or a "
        "Sink (GraphSink, EventQueue)"
    )


#: every queue of this process, for the exit and fork hooks
_QUEUES: weakref.WeakSet[EventQueue] = weakref.WeakSet()


@atexit.register
def _close_queues() -> None:
    for q in list(_QUEUES):
        try:
            q.close()
        except Exception:  # pragma: no cover - nothing to report to at exit but the log
            log.exception("identityres: closing an event queue at exit failed")


def _after_fork_in_child() -> None:
    for q in list(_QUEUES):
        q._reset_state()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
