"""Floors: what the per-event API and ``resolve()`` cost before any identity resolution.

The targets of issue #5 compare identityres with union-finds that take two strings and
nothing else. These stand-ins take the same calls as ``IdentityGraph`` and do strictly
less than the docs ask, so their speed bounds what any pure-Python implementation of the
API can reach on this interpreter:

* ``CallFloor``: the write methods with identityres's signatures, doing nothing. The price
  of a Python method call with keyword arguments.
* ``DedupFloor``: the same, plus the least that docs/concepts.md ("Event ids and duplicates")
  demands of every event before the graph is touched: type checks of the ids, the timestamp
  and the ``event_id``, and remembering each ``event_id`` with a hash of the content so that
  a redelivery is a duplicate and a reuse with other content is an error. No blocked values,
  no normalization, no graph, no outcome.
* ``ResolveFloor``: ``resolve(user_id=...)``'s signature over a plain dict of canonical
  ids, under a lock as a thread-safe graph must take one.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Mapping
from typing import Any


class CallFloor:
    """The write methods of ``IdentityGraph``, doing nothing."""

    def track(
        self,
        event: str,
        *,
        anonymous_id: Any = None,
        user_id: Any = None,
        identifiers: Any = None,
        properties: Any = None,
        timestamp: Any = None,
        event_id: Any = None,
    ) -> None:
        return None

    def identify(
        self,
        user_id: Any,
        anonymous_id: Any = None,
        *,
        identifiers: Any = None,
        traits: Any = None,
        set_once: Any = None,
        timestamp: Any = None,
        event_id: Any = None,
    ) -> None:
        return None

    def reset(self, anonymous_id: Any, *, timestamp: Any = None, event_id: Any = None) -> None:
        return None

    def identify_company(
        self,
        company_id: Any,
        *,
        user_id: Any = None,
        anonymous_id: Any = None,
        traits: Any = None,
        timestamp: Any = None,
        event_id: Any = None,
    ) -> None:
        return None


def _ok_id(value: Any) -> bool:
    return value is None or type(value) is str


class DedupFloor(CallFloor):
    """Validation of types and event-id deduplication only; raises ``ValueError`` on
    anything it does not take (the workload never sends that)."""

    def __init__(self) -> None:
        self.seen: dict[str, int] = {}

    def _remember(self, event_id: Any, timestamp: Any, content: tuple[Any, ...]) -> None:
        if type(event_id) is not str or not event_id:
            raise ValueError(f"event_id={event_id!r}")
        if type(timestamp) not in (float, int) or not math.isfinite(timestamp):
            raise ValueError(f"timestamp={timestamp!r}")
        mine = hash(content)
        seen = self.seen.get(event_id)
        if seen is None:
            self.seen[event_id] = mine
        elif seen != mine:
            raise ValueError(f"event_id={event_id!r} reused")

    def _props(self, data: Any) -> Any:
        if data is None:
            return None
        if not isinstance(data, Mapping):
            raise ValueError(f"properties={data!r}")
        # content must not depend on key order; plain values in the workload
        return tuple(sorted(data.items()))

    def track(
        self,
        event: str,
        *,
        anonymous_id: Any = None,
        user_id: Any = None,
        identifiers: Any = None,
        properties: Any = None,
        timestamp: Any = None,
        event_id: Any = None,
    ) -> None:
        if not (_ok_id(anonymous_id) and _ok_id(user_id)) or type(event) is not str:
            raise ValueError("ids")
        content = (0, timestamp, user_id, anonymous_id, event, self._props(properties))
        self._remember(event_id, timestamp, content)

    def identify(
        self,
        user_id: Any,
        anonymous_id: Any = None,
        *,
        identifiers: Any = None,
        traits: Any = None,
        set_once: Any = None,
        timestamp: Any = None,
        event_id: Any = None,
    ) -> None:
        if type(user_id) is not str or not _ok_id(anonymous_id):
            raise ValueError("ids")
        content = (1, timestamp, user_id, anonymous_id, self._props(traits))
        self._remember(event_id, timestamp, content)

    def reset(self, anonymous_id: Any, *, timestamp: Any = None, event_id: Any = None) -> None:
        if type(anonymous_id) is not str:
            raise ValueError("ids")
        self._remember(event_id, timestamp, (3, timestamp, anonymous_id))

    def identify_company(
        self,
        company_id: Any,
        *,
        user_id: Any = None,
        anonymous_id: Any = None,
        traits: Any = None,
        timestamp: Any = None,
        event_id: Any = None,
    ) -> None:
        if type(company_id) is not str or not (_ok_id(anonymous_id) and _ok_id(user_id)):
            raise ValueError("ids")
        content = (4, timestamp, company_id, user_id, anonymous_id, self._props(traits))
        self._remember(event_id, timestamp, content)


class ResolveFloor:
    """``resolve()``'s signature over a dict of canonical ids, under a lock."""

    def __init__(self, canonical: dict[str, str]) -> None:
        self._canonical = canonical
        self._lock = threading.RLock()

    def resolve(
        self, *, user_id: Any = None, anonymous_id: Any = None, identifier: Any = None
    ) -> str | None:
        value = anonymous_id if user_id is None else user_id
        with self._lock:
            return self._canonical.get(value)
