"""``IdentityGraph``: the public façade. It validates input (``_events``), recognizes
duplicates and conflicting ``event_id`` reuse, serializes writers with a lock, and hands
records to the engine (``_engine``); reads turn engine state into ``Profile`` values.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime
from typing import Any, Literal

import attrs

from identityres._engine import Engine
from identityres._events import COMPANY_KIND, MESSAGE_FIELDS, Record, RecordBuilder, relabel
from identityres._model import (
    Company,
    Identifier,
    IdLike,
    Outcome,
    Profile,
    Reason,
    Refusal,
    TimestampLike,
)
from identityres._rules import Rules
from identityres.errors import EventIdConflictError, InvalidEventError, ValidationError

__all__ = ["EventError", "GraphStats", "IdentityGraph", "IngestReport"]


@attrs.frozen
class EventError:
    """One bad event of an ``ingest(..., on_error="skip")`` batch."""

    index: int
    field: str
    value: Any
    reason: str
    error: ValidationError


@attrs.frozen
class IngestReport:
    """What ``ingest`` did: an outcome per applied event (in input order) and the bad ones."""

    outcomes: tuple[Outcome, ...]
    errors: tuple[EventError, ...]

    @property
    def applied(self) -> int:
        """Events applied for the first time (not duplicates)."""
        return sum(1 for o in self.outcomes if not o.duplicate)

    @property
    def duplicates(self) -> int:
        """Events recognized as already seen."""
        return sum(1 for o in self.outcomes if o.duplicate)

    @property
    def late(self) -> int:
        """Events that arrived late and caused a replay of their component."""
        return sum(1 for o in self.outcomes if o.late)


@attrs.frozen
class GraphStats:
    """Counts an operator reads to understand a graph (the CLI prints them)."""

    events: int
    identifiers: int
    profiles: int
    identified_profiles: int
    anonymous_profiles: int
    #: accepted joins in effect (identifiers - profiles)
    joins: int
    refusals: Counter[str]
    blocked_values: Counter[str]
    replays: int


def _system_clock() -> float:
    return time.time()


class IdentityGraph:
    """An identity graph: feed it events, read back profiles (SPEC §3–§5).

    ``rules`` configures the merge rules (:class:`Rules`); ``clock`` returns the time given
    to events written without a ``timestamp`` (a tz-aware ``datetime`` or epoch seconds).

    All methods are thread-safe: writes are serialized by a lock, so several threads writing
    one graph end in the same state as any sequential order of their events (SPEC R8).
    """

    def __init__(
        self,
        rules: Rules | None = None,
        *,
        clock: Callable[[], datetime | float | int] | None = None,
    ) -> None:
        if rules is None:
            rules = Rules()
        elif not isinstance(rules, Rules):
            from identityres.errors import ConfigurationError

            raise ConfigurationError(f"rules={rules!r}: must be an identityres.Rules")
        self._rules = rules
        compiled = rules.compiled
        self._kinds = compiled.kind_names
        self._build = RecordBuilder(compiled, clock or _system_clock)
        self._engine = Engine(compiled)
        self._lock = threading.RLock()

    @property
    def rules(self) -> Rules:
        """The rules this graph decides by."""
        return self._rules

    # -- writing --------------------------------------------------------------------------

    def _apply(self, rec: Record) -> Outcome:
        with self._lock:
            engine = self._engine
            seen = engine.seen.get(rec.event_id)
            if seen is not None:
                if seen != hash(rec.content):
                    raise EventIdConflictError(
                        "event_id", rec.event_id, "already used by an event with other content"
                    )
                return Outcome(rec.event_id, engine, None, rec.blocked, duplicate=True)
            decisions, late, replayed = engine.apply(rec)
        return Outcome(rec.event_id, engine, decisions, rec.blocked, False, late, replayed)

    def track(
        self,
        event: str,
        *,
        anonymous_id: IdLike | None = None,
        user_id: IdLike | None = None,
        identifiers: dict[str, IdLike] | None = None,
        properties: dict[str, Any] | None = None,
        timestamp: TimestampLike | None = None,
        event_id: str | None = None,
    ) -> Outcome:
        """Record an observation; with two or more identifiers it is also a link (SPEC §3)."""
        return self._apply(
            self._build.track(
                event, anonymous_id, user_id, identifiers, properties, timestamp, event_id
            )
        )

    def identify(
        self,
        user_id: IdLike,
        anonymous_id: IdLike | None = None,
        *,
        identifiers: dict[str, IdLike] | None = None,
        traits: dict[str, Any] | None = None,
        set_once: dict[str, Any] | None = None,
        timestamp: TimestampLike | None = None,
        event_id: str | None = None,
    ) -> Outcome:
        """This device/session (``anonymous_id``) is this user. ``traits`` are written to the
        user (last write wins); ``set_once`` traits keep their earliest value (SPEC R6)."""
        return self._apply(
            self._build.identify(
                user_id, anonymous_id, identifiers, traits, set_once, timestamp, event_id
            )
        )

    def alias(
        self,
        user_id: IdLike,
        previous_id: IdLike | Identifier | tuple[str, IdLike],
        *,
        timestamp: TimestampLike | None = None,
        event_id: str | None = None,
    ) -> Outcome:
        """Declare ``previous_id`` another name of ``user_id`` — still subject to the rules,
        so two identified users are not merged (use the operator's forced merge for that).

        A plain ``previous_id`` is a ``user_id``; pass ``Identifier("anonymous_id", ...)``
        or a ``(kind, value)`` pair for another kind.
        """
        return self._apply(self._build.alias(user_id, previous_id, timestamp, event_id))

    def reset(
        self,
        anonymous_id: IdLike,
        *,
        timestamp: TimestampLike | None = None,
        event_id: str | None = None,
    ) -> Outcome:
        """The session of ``anonymous_id`` ended: from now on it joins nothing (SPEC R4)."""
        return self._apply(self._build.reset(anonymous_id, timestamp, event_id))

    def identify_company(
        self,
        company_id: IdLike,
        *,
        user_id: IdLike | None = None,
        anonymous_id: IdLike | None = None,
        traits: dict[str, Any] | None = None,
        timestamp: TimestampLike | None = None,
        event_id: str | None = None,
    ) -> Outcome:
        """This person belongs to this company; ``traits`` are the company's (SPEC R7)."""
        return self._apply(
            self._build.identify_company(
                company_id, user_id, anonymous_id, traits, timestamp, event_id
            )
        )

    def ingest(
        self, events: Iterable[Any], *, on_error: Literal["raise", "skip"] = "raise"
    ) -> IngestReport:
        """Apply a batch of event objects (``Track``, ``Identify``, …) and/or Segment-spec
        message dicts.

        ``on_error="raise"``: the first bad event raises its :class:`ValidationError` (with
        ``index`` set) and nothing of the batch is applied. ``"skip"``: the good events are
        applied and the bad ones reported in :attr:`IngestReport.errors`. Either way the
        state equals applying the good events one by one, in any order (SPEC R8).
        """
        if on_error not in ("raise", "skip"):
            raise InvalidEventError("on_error", on_error, 'must be "raise" or "skip"')
        build = self._build
        records: list[tuple[int, Record]] = []
        errors: list[EventError] = []
        batch_seen: dict[str, int] = {}
        with self._lock:
            seen = self._engine.seen
            for index, event in enumerate(events):
                try:
                    rec = build.from_object(event)
                    fp = batch_seen.get(rec.event_id)
                    if fp is None:
                        fp = seen.get(rec.event_id)
                    if fp is not None and fp != hash(rec.content):
                        raise EventIdConflictError(
                            "event_id", rec.event_id, "already used by an event with other content"
                        )
                except ValidationError as exc:
                    if isinstance(event, dict):
                        relabel(exc, MESSAGE_FIELDS)
                    exc.at_index(index)
                    if on_error == "raise":
                        raise
                    errors.append(EventError(index, exc.field, exc.value, exc.reason, exc))
                    continue
                batch_seen[rec.event_id] = hash(rec.content)
                records.append((index, rec))
            # Applying in key order keeps late-event replays to the events that are late
            # against the graph, not against the batch; the result is the same (R8).
            order = sorted(range(len(records)), key=lambda i: (records[i][1].ts, records[i][1].event_id))
            outcomes: list[Outcome | None] = [None] * len(records)
            for i in order:
                outcomes[i] = self._apply(records[i][1])
        return IngestReport(tuple(o for o in outcomes if o is not None), tuple(errors))

    # -- reading --------------------------------------------------------------------------

    def _lookup(
        self, user_id: IdLike | None, anonymous_id: IdLike | None, identifier: Any
    ) -> int | None:
        given = [x is not None for x in (user_id, anonymous_id, identifier)]
        if sum(given) != 1:
            raise InvalidEventError(
                "identifier",
                (user_id, anonymous_id, identifier),
                "give exactly one of user_id=, anonymous_id=, identifier=",
            )
        build = self._build
        rules = self._rules.compiled
        if user_id is not None:
            k, v = rules.user, build.identifier_value("user_id", rules.user, user_id)
        elif anonymous_id is not None:
            k, v = rules.anon, build.identifier_value("anonymous_id", rules.anon, anonymous_id)
        else:
            k, v = build.identifier("identifier", identifier)
        with self._lock:
            n = self._engine.node(k, v)
            return None if n is None else self._engine.find(n)

    def resolve(
        self,
        *,
        user_id: IdLike | None = None,
        anonymous_id: IdLike | None = None,
        identifier: Identifier | tuple[str, IdLike] | None = None,
    ) -> str | None:
        """The canonical id (``profile.user_id``) of the profile holding this identifier, or
        ``None`` if the graph has never seen it (or it is blocked)."""
        root = self._lookup(user_id, anonymous_id, identifier)
        if root is None:
            return None
        with self._lock:
            engine = self._engine
            return engine.value[engine.canonical(engine.find(root))]

    def profile(
        self,
        *,
        user_id: IdLike | None = None,
        anonymous_id: IdLike | None = None,
        identifier: Identifier | tuple[str, IdLike] | None = None,
    ) -> Profile | None:
        """The profile holding this identifier, or ``None``."""
        root = self._lookup(user_id, anonymous_id, identifier)
        if root is None:
            return None
        with self._lock:
            return self._engine.profile(self._engine.find(root))

    def profiles(self) -> Iterator[Profile]:
        """Every profile, ordered by canonical id kind priority, then canonical id."""
        with self._lock:
            engine = self._engine
            roots = sorted(
                engine.roots(),
                key=lambda r: (engine.kind[engine.canonical(r)], engine.value[engine.canonical(r)]),
            )
            result = [engine.profile(r) for r in roots]
        return iter(result)

    def refusals(self) -> Iterator[Refusal]:
        """Every refusal in effect, by event key (SPEC R1: demoted identifiers)."""
        with self._lock:
            return iter(list(self._engine.iter_refusals()))

    def company(self, company_id: IdLike) -> Company | None:
        """A company with its traits and profiles, or ``None`` if never seen."""
        cid = self._build.identifier_value("company_id", COMPANY_KIND, company_id)
        with self._lock:
            return self._engine.company(cid)

    def companies(self) -> Iterator[Company]:
        """Every company, by id."""
        with self._lock:
            engine = self._engine
            result = [engine.company(cid) for cid in sorted(engine.company_members)]
        return iter(c for c in result if c is not None)

    def stats(self) -> GraphStats:
        """Counts for operators: profiles, joins, refusals by reason, blocked values."""
        with self._lock:
            engine = self._engine
            profiles = 0
            identified = 0
            user = self._rules.compiled.user
            counts = engine.counts.get(user)
            for r in engine.roots():
                profiles += 1
                if counts is not None:
                    if counts[r]:
                        identified += 1
                elif any(engine.kind[n] == user for n in engine.members(r)):
                    identified += 1
            refusals: Counter[str] = Counter()
            for _, items in engine.refusals.values():
                for _, reason, _ in items:
                    refusals[reason.value] += 1
            blocked: Counter[str] = Counter()
            for (kind, value), count in engine.blocked.items():
                blocked[f"{kind}:{value}"] += count
            return GraphStats(
                events=len(engine.seen),
                identifiers=len(engine.value),
                profiles=profiles,
                identified_profiles=identified,
                anonymous_profiles=profiles - identified,
                joins=engine.joins,
                refusals=refusals,
                blocked_values=blocked,
                replays=engine.replays,
            )

    def __len__(self) -> int:
        """Number of identifiers in the graph."""
        return len(self._engine.value)


