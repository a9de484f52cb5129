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

from identityres._engine import Engine, build_profile, canonical_row
from identityres._events import (
    COMPANY_KIND,
    MESSAGE_FIELDS,
    Record,
    RecordBuilder,
    relabel,
    stable_fingerprint,
)
from identityres._explain import (
    Decision,
    Explanation,
    explain_chain,
    profile_history,
)
from identityres._model import (
    Company,
    Identifier,
    IdLike,
    Outcome,
    Profile,
    Reason,
    Refusal,
)
from identityres._rows import ComponentRows
from identityres._rules import Rules
from identityres._writes import EventWriter
from identityres.errors import (
    ConfigurationError,
    EventIdConflictError,
    IdentityResError,
    InvalidEventError,
    StorageError,
    ValidationError,
)
from identityres.storage._protocol import RetryBatch, Store
from identityres.storage._registry import store_from_url
from identityres.storage.memory import MemoryStore

#: How often a batch is retried when a store reports a conflicting concurrent batch.
_RETRIES = 20

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


def _key_order(records: list[tuple[int, Record]]) -> list[int]:
    """Positions of ``records`` in ``(timestamp, event_id)`` order."""
    keys = [(rec.ts, rec.event_id) for _, rec in records]
    return sorted(range(len(keys)), key=keys.__getitem__)


def _system_clock() -> float:
    return time.time()


class IdentityGraph(EventWriter[Outcome]):
    """An identity graph: feed it events, read back profiles (SPEC §3-§5).

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
        store: Any = None,
    ) -> None:
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
        if store is None:
            store = MemoryStore()
        elif isinstance(store, str):
            store = store_from_url(store)
        elif not isinstance(store, Store):
            raise ConfigurationError(
                f"store={store!r}: must be a store URL or an object implementing "
                "identityres.storage.Store"
            )
        attach = getattr(store, "attach", None)
        if attach is not None:
            attach(compiled)
        self._store: Any = store
        # The in-memory store lets the engine decide in place: the fast path.
        self._engine: Engine | None = (
            store.engine if isinstance(store, MemoryStore) and store.in_place else None
        )
        self._lock = threading.RLock()
        self.replays = 0

    @property
    def rules(self) -> Rules:
        """The rules this graph decides by."""
        return self._rules

    @property
    def store(self) -> Any:
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

    def _submit(self, rec: Record) -> Outcome:
        engine = self._engine
        if engine is None:
            outcomes, _ = self._write([(0, rec)], raise_errors=True)
            return outcomes[0]
        fingerprint = hash(rec.content)
        with self._lock:
            seen = engine.seen.get(rec.event_id)
            if seen is not None:
                if seen != fingerprint:
                    raise EventIdConflictError(
                        "event_id", rec.event_id, "already used by an event with other content"
                    )
                return Outcome(rec.event_id, engine, None, rec.blocked, duplicate=True)
            decisions, late, replayed = engine.apply(rec, fingerprint)
        return Outcome(rec.event_id, engine, decisions, rec.blocked, False, late, replayed)

    def _write(
        self, records: list[tuple[int, Record]], *, raise_errors: bool
    ) -> tuple[list[Outcome], list[tuple[int, ValidationError]]]:
        """Apply validated records (an event id repeats only as a duplicate) as one atomic batch,
        in ``(timestamp, event_id)`` order, returning outcomes in the given order and the
        records refused for reusing a stored event id (raised instead if ``raise_errors``)."""
        order = _key_order(records)
        names = self._kinds
        for attempt in range(_RETRIES):
            try:
                with self._lock, self._store.batch() as batch:
                    return self._write_batch(batch, records, order, names, raise_errors)
            except RetryBatch:
                time.sleep(min(0.001 * 2**attempt, 0.1))
            except IdentityResError:
                raise
            except Exception as exc:
                raise StorageError(f"store {self._store!r} failed: {exc}") from exc
        raise StorageError(f"store {self._store!r}: batch still conflicting after {_RETRIES} tries")

    def _write_batch(
        self,
        batch: Any,
        records: list[tuple[int, Record]],
        order: list[int],
        names: tuple[str, ...],
        raise_errors: bool,
    ) -> tuple[list[Outcome], list[tuple[int, ValidationError]]]:
        fingerprints = [stable_fingerprint(rec.content, names) for _, rec in records]
        stored = batch.seen([rec.event_id for _, rec in records])
        errors: list[tuple[int, ValidationError]] = []
        fresh: list[int] = []
        for i in order:
            index, rec = records[i]
            fp = stored.get(rec.event_id)
            if fp is not None and fp != fingerprints[i]:
                exc = EventIdConflictError(
                    "event_id", rec.event_id, "already used by an event with other content"
                )
                if raise_errors:
                    raise exc
                errors.append((index, exc))
            elif fp is None:
                fresh.append(i)
        identifiers = {(names[k], v) for i in fresh for k, v in records[i][1].ids}
        engine = Engine(self._rules.compiled, working_set=True)
        # Erased identifiers are known to the store only by keyed hash: ask for the hashes
        # of this batch's identifiers, in one call.
        engine.erasure_key = self._store.erasure_key()
        kinds = self._rules.compiled.kind_index
        hashes = {engine.erasure_hash(kinds[k], v): None for k, v in identifiers}
        engine.suppressed = set(batch.suppressed(list(hashes)))
        rows = batch.load(identifiers)
        engine.load_rows(rows.nodes, rows.links)
        outcomes: list[Any] = [None] * len(records)
        events: list[tuple[str, bytes]] = []
        fresh_set = set(fresh)
        for i in order:
            rec = records[i][1]
            if i in fresh_set and rec.event_id in engine.seen:
                # the same event twice in one batch: the second is a duplicate
                outcomes[i] = Outcome(rec.event_id, engine, None, rec.blocked, duplicate=True)
            elif i in fresh_set:
                decisions, late, replayed = engine.apply(rec, fingerprints[i])
                self.replays += late
                outcomes[i] = Outcome(
                    rec.event_id, engine, decisions, rec.blocked, False, late, replayed
                )
                events.append((rec.event_id, fingerprints[i]))
            elif rec.event_id in stored and stored[rec.event_id] == fingerprints[i]:
                outcomes[i] = Outcome(rec.event_id, engine, None, rec.blocked, duplicate=True)
        if events:
            batch.save(engine.changes(events))
        return [o for o in outcomes if o is not None], errors

    @staticmethod
    def _apply_in_place(
        engine: Engine, records: list[tuple[int, Record]], fingerprints: list[int]
    ) -> list[Outcome]:
        """Apply checked records to the in-place engine in ``(timestamp, event_id)`` order
        (late-event replays then stay with the events late against the graph, not against
        the batch; the result is the same, R8). Outcomes come back in the given order."""
        outcomes: list[Any] = [None] * len(records)
        seen = engine.seen
        apply = engine.apply
        for i in _key_order(records):
            rec = records[i][1]
            eid = rec.event_id
            if eid in seen:  # the same event twice in one batch: the second is a duplicate
                outcomes[i] = Outcome(eid, engine, None, rec.blocked, duplicate=True)
            else:
                decisions, late, replayed = apply(rec, fingerprints[i])
                outcomes[i] = Outcome(eid, engine, decisions, rec.blocked, False, late, replayed)
        return outcomes

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
        fingerprints: list[int] = []
        errors: list[EventError] = []
        batch_seen: dict[str, object] = {}
        events_list = list(events)
        engine = self._engine
        seen: dict[str, object] = engine.seen if engine is not None else {}
        with self._lock:
            for index, event in enumerate(events_list):
                try:
                    rec = build.from_object(event)
                    mine = hash(rec.content)
                    fp = batch_seen.get(rec.event_id)
                    if fp is None:
                        fp = seen.get(rec.event_id)
                    if fp is not None and fp != mine:
                        # (stores other than the in-place memory store check stored event
                        # ids inside the batch, against stable fingerprints)
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
                batch_seen[rec.event_id] = mine
                records.append((index, rec))
                fingerprints.append(mine)
            if engine is not None:
                return IngestReport(
                    tuple(self._apply_in_place(engine, records, fingerprints)), tuple(errors)
                )
            # Applying in key order keeps late-event replays to the events that are late
            # against the graph, not against the batch; the result is the same (R8).
            outcomes, conflicts = self._write(records, raise_errors=on_error == "raise")
            for index, conflict in conflicts:
                if isinstance(events_list[index], dict):
                    relabel(conflict, MESSAGE_FIELDS)
                conflict.at_index(index)
                errors.append(
                    EventError(index, conflict.field, conflict.value, conflict.reason, conflict)
                )
        errors.sort(key=lambda e: e.index)
        return IngestReport(tuple(outcomes), tuple(errors))

    # -- reading --------------------------------------------------------------------------

    def _key(
        self, user_id: IdLike | None, anonymous_id: IdLike | None, identifier: Any
    ) -> tuple[int, str]:
        return self._build.lookup(user_id, anonymous_id, identifier)

    def resolve(
        self,
        *,
        user_id: IdLike | None = None,
        anonymous_id: IdLike | None = None,
        identifier: Identifier | tuple[str, IdLike] | None = None,
    ) -> str | None:
        """The canonical id (``profile.user_id``) of the profile holding this identifier, or
        ``None`` if the graph has never seen it (or it is blocked)."""
        engine = self._engine
        k, v = self._key(user_id, anonymous_id, identifier)
        if engine is not None:
            with self._lock:
                n = engine.nodes[k].get(v)
                if n is None:
                    return None
                return engine.value[engine.canonical(engine.find(n))]
        profile = self._profile_of(k, v)
        return None if profile is None else profile.user_id

    def _profile_of(self, k: int, v: str) -> Profile | None:
        with self._lock:
            row = self._store.node(self._kinds[k], v)
            if row is None:
                return None
            return build_profile(self._store.profile_rows(row.profile), self._rules.compiled)

    def profile(
        self,
        *,
        user_id: IdLike | None = None,
        anonymous_id: IdLike | None = None,
        identifier: Identifier | tuple[str, IdLike] | None = None,
    ) -> Profile | None:
        """The profile holding this identifier, or ``None``."""
        k, v = self._key(user_id, anonymous_id, identifier)
        return self._profile_of(k, v)

    def profiles(self) -> Iterator[Profile]:
        """Every profile, ordered by the priority of the canonical id's kind, then by the
        canonical id."""
        rules = self._rules.compiled
        with self._lock:
            result = [build_profile(rows, rules) for rows in self._store.iter_profiles()]
        result.sort(key=lambda p: (rules.kind_index[p.user_id_kind], p.user_id))
        return iter(result)

    def refusals(self) -> Iterator[Refusal]:
        """Every refusal in effect, by event key (SPEC R1: demoted identifiers)."""
        with self._lock:
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
            for pos, code, kind in link.refused:
                node = nodes[link.members[pos]]
                out.append(
                    Refusal(
                        link.event_id,
                        Identifier(node.kind, node.value),
                        Identifier(anchor.kind, anchor.value),
                        Reason(code),
                        kind,
                    )
                )
        return iter(out)

    def company(self, company_id: IdLike) -> Company | None:
        """A company with its traits and profiles, or ``None`` if never seen."""
        cid = self._build.identifier_value("company_id", COMPANY_KIND, company_id)
        return self._company(cid)

    def _company(self, cid: str) -> Company | None:
        rules = self._rules.compiled
        with self._lock:
            found = self._store.company_rows(cid)
            if found is None:
                return None
            trait_rows, members = found
            nodes = self._store.nodes_by_ref(members)
            profiles = {n.profile for n in nodes.values()}
            canon = frozenset(
                canonical_row(self._store.profile_rows(p).nodes, rules).value for p in profiles
            )
        traits: dict[str, Any] = {}
        newest: dict[str, tuple[float, str]] = {}
        for t in trait_rows:
            if t.key not in newest or newest[t.key] < (t.ts, t.event_id):
                newest[t.key] = (t.ts, t.event_id)
                traits[t.key] = t.value
        return Company(company_id=cid, traits=traits, profiles=canon)

    def companies(self) -> Iterator[Company]:
        """Every company, by id."""
        with self._lock:
            ids = self._store.company_ids()
            result = [self._company(cid) for cid in ids]
        return iter(c for c in result if c is not None)

    def stats(self) -> GraphStats:
        """Counts for operators: profiles, joins, refusals by reason, blocked values."""
        with self._lock:
            counts = self._store.counts()
            refusals: Counter[str] = Counter()
            for link in self._store.iter_refused_links():
                for _, code, _ in link.refused:
                    refusals[code] += 1
        blocked: Counter[str] = Counter()
        for (kind, value), count in counts["blocked"].items():
            blocked[f"{kind}:{value}"] += count
        return GraphStats(
            events=counts["events"],
            identifiers=counts["identifiers"],
            profiles=counts["profiles"],
            identified_profiles=counts["identified_profiles"],
            anonymous_profiles=counts["profiles"] - counts["identified_profiles"],
            joins=counts["identifiers"] - counts["profiles"],
            refusals=refusals,
            blocked_values=blocked,
            replays=self.replays + (self._engine.replays if self._engine is not None else 0),
        )

    def __len__(self) -> int:
        """Number of identifiers in the graph."""
        with self._lock:
            return int(self._store.counts()["identifiers"])

    # -- explaining and exporting (SPEC §5) -------------------------------------------------

    def _read_components(self, identifiers: Iterable[tuple[str, str]]) -> ComponentRows:
        """Node and log rows of the link components holding ``identifiers`` (``(kind name,
        value)`` pairs), in one read."""
        wanted = list(dict.fromkeys(identifiers))
        with self._lock:
            rows: ComponentRows = self._store.read_components(wanted)
        return rows

    def explain(
        self,
        a: IdLike | Identifier | tuple[str, IdLike],
        b: IdLike | Identifier | tuple[str, IdLike],
    ) -> Explanation | None:
        """Why ``a`` and ``b`` are one person (SPEC §5): the shortest chain of accepted links
        (events) joining them, or ``None`` when they are not in one profile (or unknown). The
        same identifier twice gives a chain of no steps. Like ``merge``, an ``Identifier`` or a
        ``(kind, value)`` pair names any kind and a plain value means a ``user_id``.

        Links are tried earliest first, so among chains of equal length the one made of the
        earliest events is given."""
        build = self._build
        ka, va = build.operator_identifier("a", a)
        kb, vb = build.operator_identifier("b", b)
        pa, pb = (self._kinds[ka], va), (self._kinds[kb], vb)
        rows = self._read_components([pa, pb])
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
        """The decisions that shaped the profile holding this identifier (SPEC §5), in
        ``(timestamp, event_id)`` order: joins, identifiers already joined, refusals with
        their reason codes, operators' merges, resets, splits, and erasures (by kind only:
        an erased value is never kept). Shown: the events carrying an identifier of the
        profile, the splits of identifiers that took part in its links (a split is how a
        profile loses one), and the erasures in its link component. Empty for an identifier
        the graph does not hold."""
        k, v = self._key(user_id, anonymous_id, identifier)
        pair = (self._kinds[k], v)
        rows = self._read_components([pair])
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

    def profile_sizes(self) -> dict[int, int]:
        """How many profiles have each size (number of identifiers), by size ascending: a
        super-profile built from a bad identifier shows as a lone large size."""
        sizes: Counter[int] = Counter()
        with self._lock:
            for rows in self._store.iter_profiles():
                sizes[len(rows.nodes)] += 1
        return dict(sorted(sizes.items()))
