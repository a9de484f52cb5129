"""A client session: the Python analog of a browser SDK (docs/integrations.md, "Session").

A :class:`Session` owns an anonymous id (a UUID4, made on first use and kept by a
:class:`Persistence`), identifies the user on login, tracks events, and on logout
(:meth:`Session.reset`) tells the graph that the anonymous id's session ended and starts a new
one. Every message gets its ``messageId`` and ``timestamp`` when it is made, so that a retried
delivery is a duplicate, not a second event.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
import uuid
from collections.abc import Mapping
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from identityres._events import RecordBuilder
from identityres._rules import Rules
from identityres.errors import ConfigurationError, IdentifierTypeError, InvalidEventError
from identityres.integrations._calls import cookie_value
from identityres.integrations.sinks import IntegrationStats, Message, Sink, as_sink, message

__all__ = [
    "CookiePersistence",
    "JsonFilePersistence",
    "MemoryPersistence",
    "Persistence",
    "Session",
]

log = logging.getLogger("identityres.integrations")

#: the state a persistence keeps: ``anonymous_id``, and where allowed ``user_id``, ``company_id``
STATE_KEYS = ("anonymous_id", "user_id", "company_id")


@runtime_checkable
class Persistence(Protocol):
    """Where a session keeps its state between runs: ``load()`` gives what ``save()`` was last
    given (a mapping of ``anonymous_id``, ``user_id``, ``company_id`` to strings, keys absent
    when unknown); a fresh persistence loads ``{}``."""

    def load(self) -> Mapping[str, str]: ...

    def save(self, state: Mapping[str, str]) -> None: ...


class MemoryPersistence:
    """Keeps the state in this object only (tests, short-lived scripts)."""

    def __init__(self) -> None:
        self.state: dict[str, str] = {}

    def load(self) -> Mapping[str, str]:
        return dict(self.state)

    def save(self, state: Mapping[str, str]) -> None:
        self.state = dict(state)


class JsonFilePersistence:
    """Keeps the state in a JSON file that only its owner can read (mode 0600), written
    atomically (a temporary file renamed over it). A missing file is a fresh state; a damaged
    one is logged and replaced."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    def load(self) -> Mapping[str, str]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            log.warning(
                "identityres: session file %s unreadable (%s); starting anew", self.path, exc
            )
            return {}
        if not isinstance(data, dict):
            return {}
        return {k: v for k, v in data.items() if k in STATE_KEYS and isinstance(v, str)}

    def save(self, state: Mapping[str, str]) -> None:
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        temporary = self.path.with_name(f".{self.path.name}.{os.getpid()}.{uuid.uuid4().hex}")
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                json.dump(dict(state), out)
            os.replace(temporary, self.path)
        except BaseException:
            temporary.unlink(missing_ok=True)
            raise


class CookiePersistence:
    """For server-rendered web apps: reads the anonymous id from the request's ``Cookie``
    header and, when it changes, gives the ``Set-Cookie`` header to add to the response
    (:attr:`headers`). Only the anonymous id is kept: the user and company of a request come
    from the application's own authentication, never from a cookie the client could edit.

    The default cookie name, ``ajs_anonymous_id``, is the one analytics.js uses and the one
    the server middleware reads, so that the browser's activity and its API calls meet.
    """

    def __init__(
        self,
        cookie_header: str | None,
        *,
        name: str = "ajs_anonymous_id",
        max_age: int = 365 * 24 * 3600,
        path: str = "/",
        domain: str | None = None,
        secure: bool = True,
        httponly: bool = True,
        samesite: str = "Lax",
    ) -> None:
        self.cookie_header = cookie_header
        self.name = name
        self.max_age = max_age
        self.cookie_path = path
        self.domain = domain
        self.secure = secure
        self.httponly = httponly
        self.samesite = samesite
        self.headers: list[tuple[str, str]] = []

    def load(self) -> Mapping[str, str]:
        value = cookie_value(self.cookie_header, self.name)
        return {} if value is None else {"anonymous_id": value}

    def save(self, state: Mapping[str, str]) -> None:
        value = state.get("anonymous_id")
        if value is None or value == cookie_value(self.cookie_header, self.name):
            return
        cookie: SimpleCookie = SimpleCookie()
        cookie[self.name] = value
        morsel = cookie[self.name]
        morsel["max-age"] = str(self.max_age)
        morsel["path"] = self.cookie_path
        morsel["samesite"] = self.samesite
        if self.domain:
            morsel["domain"] = self.domain
        if self.secure:
            morsel["secure"] = True
        if self.httponly:
            morsel["httponly"] = True
        self.headers = [("Set-Cookie", morsel.OutputString())]


def _id(field: str, value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise IdentifierTypeError(field, value, f"must be str or int, not {type(value).__name__}")
    text = str(value).strip()
    if not text:
        raise InvalidEventError(field, value, "must not be empty")
    return text


class Session:
    """One client's session, sending Segment-spec messages to ``sink`` (an ``IdentityGraph``
    or a collector URL, written by a background queue; or any ``Sink``).

    The methods check their message as the graph will (a bad one raises a
    ``ValidationError`` and nothing is sent) and never block on the sink.
    """

    def __init__(
        self,
        sink: Any,
        *,
        persistence: Persistence | None = None,
        stats: IntegrationStats | None = None,
    ) -> None:
        if persistence is None:
            persistence = MemoryPersistence()
        elif not isinstance(persistence, Persistence):
            raise ConfigurationError(
                f"persistence={persistence!r}: must have load() and save(state)"
            )
        self.persistence = persistence
        self.stats = stats if stats is not None else IntegrationStats()
        self.sink: Sink = as_sink(sink, self.stats)
        self._lock = threading.RLock()
        state = persistence.load()
        self._anonymous_id: str | None = state.get("anonymous_id")
        self._user_id: str | None = state.get("user_id")
        self._company_id: str | None = state.get("company_id")
        self._check = RecordBuilder(Rules().compiled, time.time)

    # -- state -------------------------------------------------------------------------------

    @property
    def anonymous_id(self) -> str:
        """The anonymous id, made (a UUID4) and saved on first use."""
        with self._lock:
            if self._anonymous_id is None:
                self._anonymous_id = str(uuid.uuid4())
                self._save()
            return self._anonymous_id

    @property
    def user_id(self) -> str | None:
        return self._user_id

    @property
    def company_id(self) -> str | None:
        return self._company_id

    def _save(self) -> None:
        state = {
            k: v
            for k, v in (
                ("anonymous_id", self._anonymous_id),
                ("user_id", self._user_id),
                ("company_id", self._company_id),
            )
            if v is not None
        }
        self.persistence.save(state)

    # -- messages ----------------------------------------------------------------------------

    def _send(self, msg: Message) -> Message:
        self._check.from_message(msg)  # raises the ValidationError the graph would
        self.sink.send([msg])
        self.stats.add("events")
        return msg

    def identify_user(self, user_id: str | int, traits: Mapping[str, Any] | None = None) -> Message:
        """This session is ``user_id`` (on sign-up and login); ``traits`` are the user's.
        Returns the message sent."""
        uid = _id("user_id", user_id)
        with self._lock:
            msg = message(
                "identify",
                userId=uid,
                anonymousId=self.anonymous_id,
                traits=None if traits is None else dict(traits),
            )
            self._send(msg)
            self._user_id = uid
            self._save()
        return msg

    def identify_company(
        self, company_id: str | int, traits: Mapping[str, Any] | None = None
    ) -> Message:
        """This session's person belongs to ``company_id``; ``traits`` are the company's."""
        cid = _id("company_id", company_id)
        with self._lock:
            msg = message(
                "group",
                groupId=cid,
                userId=self._user_id,
                anonymousId=self.anonymous_id,
                traits=None if traits is None else dict(traits),
            )
            self._send(msg)
            self._company_id = cid
            self._save()
        return msg

    def track(self, event: str, properties: Mapping[str, Any] | None = None) -> Message:
        """An event of this session, under its anonymous id (and user id once identified)."""
        with self._lock:
            msg = message(
                "track",
                event=event,
                userId=self._user_id,
                anonymousId=self.anonymous_id,
                properties=None if properties is None else dict(properties),
            )
            return self._send(msg)

    def reset(self) -> str:
        """Logout: tell the graph that this anonymous id's session ended (so it joins nobody
        who signs in on this device later, docs/merge-rules.md R4), forget the user and the
        company, and start over with a new anonymous id, which is returned."""
        with self._lock:
            if self._anonymous_id is not None:
                self._send(message("reset", anonymousId=self._anonymous_id))
            self._anonymous_id = str(uuid.uuid4())
            self._user_id = None
            self._company_id = None
            self._save()
            return self._anonymous_id

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every message sent so far is written (``False`` if ``timeout`` passed)."""
        return self.sink.flush(timeout)

    def close(self, timeout: float | None = None) -> None:
        """Flush and stop the sink's background thread."""
        self.sink.close(timeout)
