"""``IdentityGraph``: the public façade. It validates input (``_events``), recognizes
duplicates and conflicting ``event_id`` reuse, serializes writers with a lock, and hands
records to the engine (``_engine``); reads turn engine state into ``Profile`` values.
"""

from __future__ import annotations

import heapq
import os
import time
import weakref
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import datetime
from typing import Any, Literal

import attrs

from identityres._events import (
    COMPANY_KIND,
    FORGET,
    MESSAGE_FIELDS,
    Record,
    RecordBuilder,
    Translated,
    check_context,
    relabel,
)
from identityres._explain import (
    Decision,
    Explanation,
    explain_chain,
    profile_history,
)
from identityres._fork import release_orphaned
from identityres._formats import FORMATS, translate
from identityres._kept import KeptEvent, kept_event
from identityres._model import (
    EVENT_CLASSES,
    Company,
    Identifier,
    IdLike,
    Outcome,
    Profile,
    Reason,
    Refusal,
    TimestampLike,
    profile_id,
)
from identityres._profiles import build_company, build_profile, canonical_row
from identityres._rows import ComponentRows
from identityres._rules import Rules
from identityres._writers import (
    CONFLICT,
    BatchWriter,
    ConflictAt,
    InPlaceWriter,
    admit,
    conflict,
)
from identityres._writes import EventWriter
from identityres.errors import (
    ConfigurationError,
    InvalidEventError,
    ValidationError,
)
from identityres.storage._protocol import EventLog, Store
from identityres.storage._registry import store_from_url
from identityres.storage.memory import MemoryStore

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
    #: the position in the batch of the event each outcome is of (one message of another
    #: platform can be several operations, so several outcomes share a position)
    indexes: tuple[int, ...] = attrs.field(default=(), eq=False, repr=False)

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
    #: refusals in effect by reason code
    refusals: Counter[str]
    #: how often each blocked value was seen, by ``"kind:value"``
    blocked_values: Counter[str]
    #: component replays this graph object did (late events, resets, splits, erasures);
    #: not kept by the store, so it starts at 0 for each graph
    replays: int
    #: number of identifiers -> number of profiles that size, by size ascending
    sizes: Mapping[int, int] = attrs.field(factory=dict)
    #: the largest profiles as ``(canonical id, number of identifiers)``, largest first;
    #: among equal sizes by the priority of the canonical id's kind, then the id
    largest: tuple[tuple[str, int], ...] = ()
    #: ``limit_exceeded`` refusals by the kind whose limit they kept
    refusals_by_kind: Mapping[str, int] = attrs.field(factory=dict)

    def __str__(self) -> str:
        from identityres.export import visible

        lines = [f"{self.profiles} profiles, {self.identifiers} identifiers"]
        lines.append("profile sizes (identifiers: profiles)")
        lines.extend(f"  {size:>6}: {count}" for size, count in self.sizes.items())
        if self.largest:
            lines.append("largest profiles")
            width = max(len(visible(c)) for c, _ in self.largest)
            lines.extend(f"  {visible(c):<{width}}  {n}" for c, n in self.largest)
        total = sum(self.refusals.values())
        lines.append(f"refusals {total}")
        lines.extend(f"  {reason}: {n}" for reason, n in self.refusals.items())
        lines.extend(f"    {kind}: {n}" for kind, n in self.refusals_by_kind.items())
        return "\n".join(lines)


def _name_fields(error: ValidationError, event: Any, op: Any) -> None:
    """Rename an error's field to the key the user wrote: the Segment key (``userId``) for a
    message dict, and the other platform's path (``distinct_id``) for a message read by
    ``_formats``."""
    if isinstance(op, Mapping):
        relabel(error, MESSAGE_FIELDS)
        if isinstance(op, Translated):
            relabel(error, op.fields)
    elif isinstance(event, dict):
        fields = getattr(op, "fields", None)
        relabel(error, fields if isinstance(fields, Mapping) else MESSAGE_FIELDS)


def bad_event(
    exc: ValidationError,
    event: Any,
    index: int,
    on_error: str,
    errors: list[EventError],
    op: Any = None,
) -> None:
    """A bad event of a batch as ``ingest`` reports it (``batch.resolve`` too): the error
    names the key the user wrote (``_name_fields``; ``op``: the operation a message of
    another platform was read into, when it failed) and carries the event's index; raised
    (``on_error="raise"``) or listed in ``errors``."""
    _name_fields(exc, event, event if op is None else op)
    exc.at_index(index)
    if on_error == "raise":
        raise exc
    errors.append(EventError(index, exc.field, exc.value, exc.reason, exc))


def _in_place_canonical(writer: InPlaceWriter) -> Callable[[int, str], str | None]:
    """``resolve`` on an in-place engine: the hot read, straight from the union-find."""
    engine = writer.engine
    lock = writer.lock
    nodes = engine.nodes
    value = engine.value

    def canonical(k: int, v: str) -> str | None:
        with lock:
            n = nodes[k].get(v)
            if n is None:
                return None
            return value[engine.canonical(engine.find(n))]

    return canonical


def _system_clock() -> float:
    return time.time()


class IdentityGraph(EventWriter[Outcome]):
    """An identity graph: feed it events, read back profiles (docs/concepts.md).

    ``rules`` configures the merge rules (:class:`Rules`); ``clock`` returns the time given
    to events written without a ``timestamp`` (a tz-aware ``datetime`` or epoch seconds).
    ``keep_events=True`` keeps every event written (its name, timestamp, id, identifiers,
    properties and Segment ``context``) on the store, for ``identityres.analytics``
    (docs/analytics.md); the store must have the ``EventLog`` capability.

    All methods are thread-safe: writes are serialized by a lock, so several threads writing
    one graph end in the same state as any sequential order of their events (R8 in
    docs/merge-rules.md).
    """

    def __init__(
        self,
        rules: Rules | None = None,
        *,
        clock: Callable[[], datetime | float | int] | None = None,
        store: Store | str | None = None,
        keep_events: bool = False,
    ) -> None:
        if not isinstance(keep_events, bool):
            raise ConfigurationError(f"keep_events={keep_events!r}: must be a bool")
        if rules is None:
            rules = Rules()
        elif not isinstance(rules, Rules):
            raise ConfigurationError(f"rules={rules!r}: must be an identityres.Rules")
        if clock is not None and not callable(clock):
            raise ConfigurationError(f"clock={clock!r}: must be a callable")
        self._rules = rules
        compiled = rules.compiled
        self._kinds = compiled.kind_names
        self._build = RecordBuilder(compiled, clock or _system_clock)
        opened = store is None or isinstance(store, str)
        if store is None:
            store = MemoryStore()
        elif isinstance(store, str):
            store = store_from_url(store)
        elif not isinstance(store, Store):
            raise ConfigurationError(
                f"store={store!r}: must be a store URL or an object implementing "
                "identityres.storage.Store"
            )
        # A store remembers the rules it was written with: other rules would decide its
        # components differently from how they were decided (docs/storage.md).
        proposed = rules.record()
        try:
            recorded = store.bind_rules(proposed)
            if recorded.digest != proposed.digest:
                hint = (
                    " (a store written before extraction rules existed: Rules(extraction=()))"
                    if '"extraction"' not in recorded.description
                    and '"extraction"' in proposed.description
                    else ""
                )
                raise ConfigurationError(
                    f"store={store!r}: written with other rules; "
                    f"{proposed.difference(recorded)}. Open it with the rules it was written "
                    f"with{hint}, or resolve the events again into a new store"
                )
        except BaseException:
            if opened:  # a store this graph opened is this graph's to close
                store.close()
            raise
        if keep_events and not isinstance(store, EventLog):
            if opened:
                store.close()
            raise ConfigurationError(
                f"keep_events=True: store={store!r} cannot keep events (it does not implement "
                "identityres.storage.EventLog); use a memory or SQLite store, or analyse an "
                "iterable or file of events instead (docs/analytics.md)"
            )
        self._store: Store = store
        self._keep_events = keep_events
        #: the store's event log: forget() erases kept events from it even when this graph
        #: keeps none itself (another graph on the store may have)
        self._event_log: EventLog | None = store if isinstance(store, EventLog) else None
        # The one place the graph looks at what kind of store it has: the in-memory store
        # lets the engine decide in place (the fast path), every other store is written
        # through batches.
        self._writer: InPlaceWriter | BatchWriter = (
            InPlaceWriter(store.engine, store.lock)
            if isinstance(store, MemoryStore) and store.in_place
            else BatchWriter(store, compiled)
        )
        self._lock = self._writer.lock
        # The write methods call ``self._submit``: the writer's own method, one call less
        # per event than a method here that forwards to it.
        self._submit = self._writer.submit  # type: ignore[method-assign]
        self._canonical_value = (
            _in_place_canonical(self._writer)
            if isinstance(self._writer, InPlaceWriter)
            else self._stored_canonical
        )
        if keep_events:
            # (a graph that keeps no events keeps the per-event fast path as it was)
            self._submit = self._submit_keeping  # type: ignore[method-assign]
        _GRAPHS.add(self)

    def _after_fork_in_child(self) -> None:
        """In a forked child (docs/storage.md, "Fork"). The locks a parent thread held at the
        fork are made free in place, so the lock cached above (``_lock``, the writer's, the
        closure of ``_in_place_canonical``) stays the one to take; the stores judge what such
        a thread may have left half-done in them (the memory store's hook ran already: it was
        registered first, when this module imported it)."""
        writer = self._writer
        if isinstance(writer, BatchWriter):
            release_orphaned(writer.lock)
            return
        store = self._store
        if isinstance(store, MemoryStore) and store.fork_error is not None:
            # The engine may be half-written: write and read through batches and the store's
            # read calls, which raise the store's error, instead of touching it in place.
            self._writer = BatchWriter(store, self._rules.compiled)
            self._lock = self._writer.lock
            self._submit = self._writer.submit  # type: ignore[method-assign]
            self._canonical_value = self._stored_canonical

    @property
    def rules(self) -> Rules:
        """The rules this graph decides by."""
        return self._rules

    @property
    def store(self) -> Store:
        """The store this graph keeps its state in."""
        return self._store

    def close(self) -> None:
        """Close the store (files, connections). The graph is unusable afterwards."""
        self._store.close()

    def __enter__(self) -> IdentityGraph:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- writing --------------------------------------------------------------------------

    def _submit(self, rec: Record) -> Outcome:  # replaced per instance in ``__init__``
        return self._writer.submit(rec)

    @property
    def keeps_events(self) -> bool:
        """Whether this graph keeps the events it is given (``keep_events=True``)."""
        return self._keep_events

    def kept_events(self) -> Iterator[KeptEvent]:
        """The events kept on this graph's store, in ``(timestamp, event_id)`` order
        (docs/analytics.md); ``ConfigurationError`` if the store cannot keep events."""
        log = self._event_log
        if log is None:
            raise ConfigurationError(
                f"store={self._store!r} keeps no events (it does not implement "
                "identityres.storage.EventLog)"
            )
        return log.iter_events()

    def forget(
        self,
        identifier: IdLike | Identifier | tuple[str, IdLike],
        *,
        timestamp: TimestampLike | None = None,
        event_id: str | None = None,
    ) -> Outcome:
        """GDPR erasure (docs/operator-tools.md): remove the identifier, its links, traits and
        company links, and the events kept of it (docs/analytics.md). The graph keeps only a
        keyed hash of it on a suppression list, so no replay or late event brings it back;
        profiles bridged only by it fall apart."""
        rec = self._build.forget(identifier, timestamp, event_id)
        outcome = self._writer.submit(rec)
        self._after_write([(rec, None, None)], {})
        return outcome

    def _submit_keeping(self, rec: Record) -> Outcome:
        outcome = self._writer.submit(rec)
        self._after_write([(rec, None, None)], {} if outcome.duplicate else {rec.event_id: 1})
        return outcome

    def _after_write(
        self,
        written: Sequence[tuple[Record, str | None, Mapping[str, Any] | None]],
        fresh: Mapping[str, int],
    ) -> None:
        """Keep the fresh events just written (``keep_events``) and erase the kept events of
        identifiers just forgotten. Runs after the graph's own write has committed: the kept
        events are a second write (docs/decisions.md, "Kept events")."""
        log = self._event_log
        if log is None:
            return
        names = self._kinds
        keep: list[KeptEvent] = []
        for rec, mtype, context in written:
            if rec.etype == FORGET:
                ((k, v),) = rec.ids
                log.forget_events(names[k], v)
            elif self._keep_events and rec.event_id in fresh:
                event = kept_event(rec, names, mtype, context)
                if event is None:
                    continue
                # An identifier the graph does not hold after the write is one it has
                # forgotten (a suppressed value): it is not kept.
                held = tuple(
                    i
                    for i, (k, v) in zip(event.identifiers, rec.ids, strict=True)
                    if self._canonical_value(k, v) is not None
                )
                if held != event.identifiers:
                    if not held:
                        continue
                    event = attrs.evolve(event, identifiers=held)
                keep.append(event)
        if keep:
            log.keep_events(keep)

    def ingest(
        self,
        events: Iterable[Any],
        *,
        on_error: Literal["raise", "skip"] = "raise",
        format: str = "auto",
    ) -> IngestReport:
        """Apply a batch of event objects (``Track``, ``Identify``, …) and/or message dicts.

        ``format`` says what the dicts are (docs/formats.md): ``"segment"`` (Segment and
        RudderStack), ``"posthog"``, ``"mixpanel"``, ``"amplitude"`` (HTTP API v2),
        ``"moesif"``, or ``"auto"`` (the default): each dict's own format, detected; a dict no
        format fits raises :class:`~identityres.errors.UnknownFormatError`, which names them.
        A batch body as a client posts it (``{"batch": [...]}``, ``{"events": [...]}``) is
        read as its messages, and one message may be several operations (a PostHog event
        with ``$groups`` is a track and a company membership), each with its outcome.

        ``on_error="raise"``: the first bad event raises its :class:`ValidationError` (with
        ``index`` set) and nothing of the batch is applied. ``"skip"``: the good events are
        applied and the bad ones reported in :attr:`IngestReport.errors`. Either way the
        state equals applying the good events one by one, in any order (R8 in
        docs/merge-rules.md).
        """
        if on_error not in ("raise", "skip"):
            raise InvalidEventError("on_error", on_error, 'must be "raise" or "skip"')
        if format != "auto" and format not in FORMATS:
            raise InvalidEventError(
                "format", format, f"must be one of {', '.join(('auto', *FORMATS))}"
            )
        build = self._build
        writer = self._writer
        names = self._kinds
        records: list[tuple[int, Record]] = []
        errors: list[EventError] = []
        in_batch: dict[str, bytes] = {}
        keeping = self._keep_events
        contexts: dict[int, Mapping[str, Any] | None] = {}
        events_list = build.batch(events)  # an iterable of events, else InvalidEventError
        segment_first = format in ("auto", "segment")
        with self._lock:
            # (a batch writer holds nothing here: it asks its store inside the batch)
            stored = writer.held
            for index, event in enumerate(events_list):
                op: Any = event
                try:
                    # One operation per event is the common case: an event object, or a
                    # Segment message (a dict with "type"), read without translation. The
                    # order of the tests keeps the slow ABC check for other mappings only.
                    cls = type(event)
                    if cls is dict:
                        single = segment_first and "type" in event
                    else:
                        single = cls in EVENT_CLASSES or not isinstance(event, Mapping)
                    ops: Any = (event,) if single else translate(event, format)
                    built: list[tuple[str, Record]] = []
                    for op in ops:
                        rec = build.from_object(op)
                        eid = rec.event_id
                        held = in_batch.get(eid)
                        if held is None:
                            held = stored.get(eid)
                        if held is not None and admit(held, rec, names) == CONFLICT:
                            raise conflict(rec)
                        built.append((eid, rec))
                    if keeping and isinstance(event, Mapping):
                        contexts[index] = check_context(event.get("context"))
                except ValidationError as exc:
                    bad_event(exc, event, index, on_error, errors, op)
                    continue
                for eid, rec in built:
                    in_batch.setdefault(eid, rec.fingerprint)
                    records.append((index, rec))
            try:
                outcomes, conflicts = writer.write(records, raise_errors=on_error == "raise")
            except ConflictAt as first:
                if isinstance(events_list[first.index], dict):
                    relabel(first.error, MESSAGE_FIELDS)
                raise first.error.at_index(first.index) from None
        if keeping:
            fresh = {o.event_id: 1 for o in outcomes if not o.duplicate}
            written = []
            for index, rec in records:
                event = events_list[index]
                if isinstance(event, Mapping):
                    mtype = event.get("type")
                    written.append(
                        (rec, mtype if isinstance(mtype, str) else None, contexts.get(index))
                    )
                else:
                    written.append((rec, None, None))
            self._after_write(written, fresh)
        elif self._event_log is not None:
            forgotten = [(rec, None, None) for _, rec in records if rec.etype == FORGET]
            if forgotten:
                self._after_write(forgotten, {})
        if conflicts:
            refused = {(index, reused.value) for index, reused in conflicts}
            indexes = tuple([i for i, rec in records if (i, rec.event_id) not in refused])
        else:
            indexes = tuple([i for i, _ in records])
        for index, reused in conflicts:
            if isinstance(events_list[index], dict):
                relabel(reused, MESSAGE_FIELDS)
            reused.at_index(index)
            errors.append(EventError(index, reused.field, reused.value, reused.reason, reused))
        errors.sort(key=lambda e: e.index)
        return IngestReport(tuple(outcomes), tuple(errors), indexes)

    # -- reading --------------------------------------------------------------------------
    #
    # Every read goes through the store's read calls, which the in-memory store answers from
    # its engine; ``resolve`` alone reads an in-place engine directly, being the hot read.

    def identifier(
        self,
        *,
        user_id: IdLike | None = None,
        anonymous_id: IdLike | None = None,
        identifier: Identifier | tuple[str, IdLike] | None = None,
    ) -> Identifier:
        """The one identifier these arguments name, validated and normalized as every read
        does (exactly one of them must be given); raises a ``ValidationError`` otherwise."""
        k, v = self._build.lookup(user_id, anonymous_id, identifier)
        return Identifier(self._kinds[k], v)

    def resolve(
        self,
        *,
        user_id: IdLike | None = None,
        anonymous_id: IdLike | None = None,
        identifier: Identifier | tuple[str, IdLike] | None = None,
    ) -> str | None:
        """The canonical id (``profile.user_id``) of the profile holding this identifier, or
        ``None`` if the graph has never seen it (or it is blocked). Two profiles of
        different kinds can have the same canonical id: count people by
        :attr:`Profile.id` (see :meth:`identity_map`)."""
        k, v = self._build.lookup(user_id, anonymous_id, identifier)
        return self._canonical_value(k, v)

    # A read made of one store call sees one state as it is; one made of several makes them
    # inside ``Store.snapshot()`` (docs/storage.md, "Reads").

    def _stored_canonical(self, k: int, v: str) -> str | None:
        rows = self._store.profile_of(self._kinds[k], v)
        return None if rows is None else canonical_row(rows.nodes, self._rules.compiled).value

    def _profile_of(self, kind: str, value: str) -> Profile | None:
        rows = self._store.profile_of(kind, value)
        return None if rows is None else build_profile(rows, self._rules.compiled)

    def profile(
        self,
        *,
        user_id: IdLike | None = None,
        anonymous_id: IdLike | None = None,
        identifier: Identifier | tuple[str, IdLike] | None = None,
    ) -> Profile | None:
        """The profile holding this identifier, or ``None``."""
        k, v = self._build.lookup(user_id, anonymous_id, identifier)
        return self._profile_of(self._kinds[k], v)

    def profiles(self) -> Iterator[Profile]:
        """Every profile, one at a time as the store pages them (never all in memory), in the
        store's order: sort them if you need an order. On a store that other processes
        write, profiles committed during the iteration may or may not show."""
        rules = self._rules.compiled
        for rows in self._store.iter_profiles():
            yield build_profile(rows, rules)

    def identity_map(self) -> Iterator[tuple[Identifier, str]]:
        """``(identifier, profile id)`` for every identifier of the graph, streamed from the
        store without building profiles: the join table that turns events under any
        identifier into events of a person (:attr:`Profile.id`)."""
        rules = self._rules.compiled
        for rows in self._store.iter_profiles():
            c = canonical_row(rows.nodes, rules)
            pid = profile_id(c.kind, c.value)
            for node in rows.nodes:
                yield Identifier(node.kind, node.value), pid

    def _identity_rows(self) -> Iterable[tuple[str, str, str]]:
        """``(kind, value, profile id)`` for every identifier: :meth:`identity_map` as plain
        tuples, for the analytics join. On an in-place memory store, read from the engine's
        union-find in one pass under the lock (one consistent state; no rows built)."""
        writer = self._writer
        if not isinstance(writer, InPlaceWriter):
            return ((i.kind, i.value, pid) for i, pid in self.identity_map())
        engine = writer.engine
        names = self._kinds
        kind, value, dead = engine.kind, engine.value, engine.dead
        find, canonical = engine.find, engine.canonical
        out: list[tuple[str, str, str]] = []
        append = out.append
        pids: dict[int, str] = {}
        with self._lock:
            for k, nodes in enumerate(engine.nodes):
                name = names[k]
                for v, n in nodes.items():
                    if n in dead:
                        continue
                    root = find(n)
                    pid = pids.get(root)
                    if pid is None:
                        c = canonical(root)
                        pid = pids[root] = profile_id(names[kind[c]], value[c])
                    append((name, v, pid))
        return out

    def components(self, identifiers: Iterable[Identifier | tuple[str, str]]) -> ComponentRows:
        """The storage rows (nodes and link log) of the link components holding these
        identifiers (``Identifier`` values or normalized ``(kind, value)`` pairs; unknown
        ones are ignored), in one consistent read: what ``explain``, ``history`` and export
        are built from."""
        wanted = list(
            dict.fromkeys(
                (i.kind, i.value) if isinstance(i, Identifier) else (str(i[0]), str(i[1]))
                for i in identifiers
            )
        )
        return self._store.read_components(wanted)

    def refusals(self) -> Iterator[Refusal]:
        """Every refusal in effect, by event key (R1 in docs/merge-rules.md: demoted
        identifiers), from one committed state of the store."""
        with self._store.snapshot():
            links = list(self._store.iter_refused_links())
            refs = {m for link in links for m in link.members}
            nodes = self._store.nodes_by_ref(refs)
        links.sort(key=lambda link: (link.ts, link.event_id))
        out: list[Refusal] = []
        for link in links:
            key = (link.ts, link.event_id)
            # The anchor is the first identifier not split off after this event.
            anchor = next(
                node
                for node in (nodes[m] for m in link.members)
                if node.split_ts is None or not key < (node.split_ts, node.split_event_id or "")
            )
            for refused in link.refused:
                node = nodes[link.members[refused.position]]
                out.append(
                    Refusal(
                        link.event_id,
                        Identifier(node.kind, node.value),
                        Identifier(anchor.kind, anchor.value),
                        Reason(refused.reason),
                        refused.limit_kind,
                    )
                )
        return iter(out)

    def company(self, company_id: IdLike) -> Company | None:
        """A company with its traits and profiles, or ``None`` if never seen."""
        cid = self._build.identifier_value("company_id", COMPANY_KIND, company_id)
        return self._company(cid)

    def _company(self, cid: str) -> Company | None:
        rules = self._rules.compiled
        with self._store.snapshot():
            found = self._store.company_rows(cid)
            if found is None:
                return None
            nodes = self._store.nodes_by_ref(found.members)
            canon = [
                canonical_row(self._store.profile_rows(p).nodes, rules).value
                for p in {n.profile for n in nodes.values()}
            ]
        return build_company(cid, found.traits, canon)

    def companies(self) -> Iterator[Company]:
        """Every company, by id, from one committed state of the store."""
        with self._store.snapshot():
            ids = self._store.company_ids()
            result = [self._company(cid) for cid in ids]
        return iter(c for c in result if c is not None)

    def stats(self, *, top: int = 10) -> GraphStats:
        """Counts for operators: events, identifiers, profiles, joins, the profile size
        distribution and the ``top`` largest profiles (to spot a super-profile), refusals by
        reason and by kind, blocked values. Reads every profile once, all from one committed
        state of the store (a memory store's writers wait meanwhile)."""
        if isinstance(top, bool) or not isinstance(top, int) or top < 0:
            raise ConfigurationError(f"top={top!r}: must be an int >= 0")
        rules = self._rules.compiled
        kind_index = rules.kind_index
        sizes: Counter[int] = Counter()

        def ranked() -> Iterator[tuple[int, int, str]]:
            # (minus the size, priority of the canonical id's kind, canonical id): the
            # smallest are the largest profiles
            for rows in self._store.iter_profiles():
                size = len(rows.nodes)
                sizes[size] += 1
                c = canonical_row(rows.nodes, rules)
                yield -size, kind_index.get(c.kind, len(kind_index)), c.value

        with self._store.snapshot():
            counts = self._store.counts()
            refused = list(self._store.iter_refused_links())
            entries = ranked()
            largest = heapq.nsmallest(top, entries)  # keeps ``top`` entries at a time
            for _ in entries:  # (``nsmallest`` reads nothing when ``top`` is 0)
                pass
        refusals: Counter[str] = Counter()
        by_kind: Counter[str] = Counter()
        for link in refused:
            for r in link.refused:
                refusals[r.reason] += 1
                if r.limit_kind is not None:
                    by_kind[r.limit_kind] += 1
        blocked: Counter[str] = Counter()
        for (kind, value), count in counts.blocked.items():
            blocked[f"{kind}:{value}"] += count
        return GraphStats(
            events=counts.events,
            identifiers=counts.identifiers,
            profiles=counts.profiles,
            identified_profiles=counts.identified_profiles,
            anonymous_profiles=counts.profiles - counts.identified_profiles,
            joins=counts.identifiers - counts.profiles,
            refusals=Counter(dict(sorted(refusals.items()))),
            blocked_values=blocked,
            replays=self._writer.replays,
            sizes=dict(sorted(sizes.items())),
            largest=tuple((c, -size) for size, _, c in largest),
            refusals_by_kind={k: by_kind[k] for k in rules.kind_names if by_kind[k]},
        )

    def profile_sizes(self) -> dict[int, int]:
        """How many profiles have each size (number of identifiers), by size ascending: a
        super-profile built from a bad identifier shows as a lone large size
        (``stats().sizes``)."""
        return dict(self.stats(top=0).sizes)

    def __len__(self) -> int:
        """Number of identifiers in the graph."""
        return self._store.counts().identifiers

    # -- explaining and exporting (docs/operator-tools.md) ---------------------------------

    def explain(
        self,
        a: IdLike | Identifier | tuple[str, IdLike],
        b: IdLike | Identifier | tuple[str, IdLike],
    ) -> Explanation | None:
        """Why ``a`` and ``b`` are one person (docs/operator-tools.md): the shortest chain of
        accepted links (events) joining them, or ``None`` when they are not in one profile (or
        unknown). The same identifier twice gives a chain of no steps. Like ``merge``, an
        ``Identifier`` or a ``(kind, value)`` pair names any kind and a plain value means a
        ``user_id``.

        Links are tried earliest first, so among chains of equal length the one made of the
        earliest events is given."""
        build = self._build
        ka, va = build.operator_identifier("a", a)
        kb, vb = build.operator_identifier("b", b)
        pa, pb = (self._kinds[ka], va), (self._kinds[kb], vb)
        rows = self.components([pa, pb])
        by_id = {(n.kind, n.value): n for n in rows.nodes}
        na, nb = by_id.get(pa), by_id.get(pb)
        if na is None or nb is None or na.profile != nb.profile:
            return None
        steps = explain_chain(rows, na, nb, self._rules.compiled)
        if steps is None:  # (the rows of a store written to meanwhile)
            return None
        members = [n for n in rows.nodes if n.profile == na.profile]
        canon = canonical_row(members, self._rules.compiled).value
        return Explanation(Identifier(*pa), Identifier(*pb), canon, steps)

    def history(
        self,
        *,
        user_id: IdLike | None = None,
        anonymous_id: IdLike | None = None,
        identifier: Identifier | tuple[str, IdLike] | None = None,
    ) -> tuple[Decision, ...]:
        """The decisions that shaped the profile holding this identifier
        (docs/operator-tools.md), in ``(timestamp, event_id)`` order: joins, identifiers
        already joined, refusals with their reason codes, operators' merges, resets, splits,
        and erasures (by kind only:
        an erased value is never kept). Shown: the events carrying an identifier of the
        profile, the splits of identifiers that took part in its links (a split is how a
        profile loses one), and the erasures in its link component. Empty for an identifier
        the graph does not hold."""
        k, v = self._build.lookup(user_id, anonymous_id, identifier)
        pair = (self._kinds[k], v)
        rows = self.components([pair])
        start = next((n for n in rows.nodes if (n.kind, n.value) == pair), None)
        if start is None:
            return ()
        return profile_history(rows, start, self._rules.compiled)

    def to_networkx(
        self,
        *,
        user_id: IdLike | None = None,
        anonymous_id: IdLike | None = None,
        identifier: Identifier | tuple[str, IdLike] | None = None,
    ) -> Any:
        """The identity graph as a ``networkx.MultiGraph``: of the profile holding the given
        identifier, or of the whole graph when none is given. See
        :func:`identityres.export.to_networkx` (needs the ``identityres[networkx]`` extra)."""
        from identityres.export import to_networkx

        return to_networkx(self, user_id=user_id, anonymous_id=anonymous_id, identifier=identifier)


#: every graph of this process (for the at-fork hook)
_GRAPHS: weakref.WeakSet[IdentityGraph] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for graph in list(_GRAPHS):
        graph._after_fork_in_child()


if hasattr(os, "register_at_fork"):  # (not on Windows, which does not fork)
    os.register_at_fork(after_in_child=_after_fork_in_child)
