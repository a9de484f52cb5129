"""The in-memory store, the default: the engine's own arrays are the storage.

``MemoryStore`` implements the storage protocol (so the conformance kit checks it like any
adapter), and in addition lets the graph decide events *in place* — no load, no save, no
row objects — which is what makes the default fast. ``MemoryStore(in_place=False)`` sends
every batch through the protocol instead.

One lock per store, shared by every handle (:meth:`MemoryStore.handle`) and every graph
using it: writes in place, batches and reads all take it, so several graphs on one store in
several threads are as safe as one. ``snapshot()`` holds it for a block of reads.

A forked child gets a copy of the store. The copy is used as it is unless another thread held
the lock at the fork: it may then be half-written, and every use of it in the child raises
``StorageError`` (docs/storage.md, "Fork").
"""

from __future__ import annotations

import os
import threading
import weakref
from collections.abc import Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from identityres._engine import _ABSENT, Engine, _put
from identityres._fork import release_orphaned
from identityres._kept import KeptEvent
from identityres._merge import keep
from identityres._rows import (
    Changes,
    CompanyRows,
    CompanyTraitRow,
    ComponentRows,
    Counts,
    LinkRow,
    NodeRow,
    ProfileRows,
)
from identityres._rules import RulesRecord
from identityres._state_rows import (
    component_rows,
    load_rows,
    node_row,
    profile_rows,
    refused_link_rows,
)
from identityres.errors import ConfigurationError, StorageError

__all__ = ["MemoryStore"]


class _State:
    """What every handle on one memory store shares."""

    __slots__ = ("__weakref__", "broken", "engine", "events", "lock", "rules")

    def __init__(self) -> None:
        self.engine: Engine | None = None
        #: kept events by event id (``keep_events``, docs/analytics.md)
        self.events: dict[str, KeptEvent] = {}
        self.rules: RulesRecord | None = None
        self.lock = threading.RLock()
        #: why this state may not be used (a fork while another thread held the lock)
        self.broken: str | None = None
        _STATES.add(self)


#: every memory store's state in this process (for the at-fork hook)
_STATES: weakref.WeakSet[_State] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for state in list(_STATES):
        # The lock is made free in place: the writers and graphs that cached it keep it.
        if release_orphaned(state.lock):
            state.broken = (
                "MemoryStore: this process was forked while another thread was using this "
                "memory store, so its copy here may be half-written and is not used: make a "
                "new store in the child (or fork while no thread uses the store)"
            )


if hasattr(os, "register_at_fork"):  # (not on Windows, which does not fork)
    os.register_at_fork(after_in_child=_after_fork_in_child)


class _MemoryBatch:
    __slots__ = ("_changes", "_store")

    def __init__(self, store: MemoryStore) -> None:
        self._store = store
        self._changes: Changes | None = None

    def seen(self, event_ids: Collection[str]) -> Mapping[str, bytes]:
        seen = self._store.engine.seen
        return {e: seen[e] for e in event_ids if e in seen}

    def load(self, identifiers: Collection[tuple[str, str]]) -> ComponentRows:
        return self._store.read_components(identifiers)

    def suppressed(self, hashes: Collection[bytes]) -> set[bytes]:
        held = self._store.engine.suppressed
        return {h for h in hashes if h in held}

    def save(self, changes: Changes) -> None:
        if self._changes is not None:
            raise RuntimeError("save() called twice in one batch")
        self._changes = changes


class MemoryStore:
    """Keeps the graph in this process's memory (``memory://``). Not durable."""

    def __init__(self, *, in_place: bool = True) -> None:
        self.in_place = in_place
        self._state = _State()

    @classmethod
    def from_url(cls, url: str, **options: object) -> MemoryStore:
        """``memory://`` (nothing may follow the scheme); option ``in_place`` (bool)."""
        if not isinstance(url, str) or url.lower() not in ("memory://", "memory:///"):
            raise ConfigurationError(f"store={url!r}: a memory store URL is just 'memory://'")
        in_place = options.pop("in_place", True)
        if options:
            raise ConfigurationError(
                f"store={url!r}: unknown options {sorted(options)!r}; the option is in_place"
            )
        if not isinstance(in_place, bool):
            raise ConfigurationError(f"in_place={in_place!r}: must be a bool")
        return cls(in_place=in_place)

    def handle(self, *, in_place: bool | None = None) -> MemoryStore:
        """Another handle on this store's data (as a second connection is to a database):
        graphs on either see one state, serialized by one lock."""
        other = MemoryStore(in_place=self.in_place if in_place is None else in_place)
        other._state = self._state
        return other

    def __repr__(self) -> str:
        return f"MemoryStore(in_place={self.in_place})"

    def bind_rules(self, proposed: RulesRecord) -> RulesRecord:
        state = self._state
        if proposed.rules is None:
            raise ConfigurationError(
                "store: a MemoryStore decides in memory and needs the Rules object itself "
                "(RulesRecord.rules)"
            )
        with state.lock:
            if state.broken is not None:
                raise StorageError(state.broken)
            if state.rules is None:
                state.engine = Engine(proposed.rules.compiled)
                state.rules = proposed
            held = state.rules.rules
            if (
                held is not None
                and state.rules.digest == proposed.digest
                and not held.compiled.decides_like(proposed.rules.compiled)
            ):
                # The digest names normalizers by qualified name; the engine here runs the
                # first graph's functions, so two lambdas of one name must not share it.
                raise ConfigurationError(
                    "store: this MemoryStore decides with other normalizer functions of the "
                    "same names; give each set of rules its own store"
                )
            return state.rules

    @property
    def engine(self) -> Engine:
        """The engine that holds the state (internal)."""
        state = self._state
        if state.broken is not None:
            raise StorageError(state.broken)
        engine = state.engine
        if engine is None:
            raise ConfigurationError("store: no graph has used this MemoryStore yet")
        return engine

    @property
    def fork_error(self) -> str | None:
        """Why this process may not use the store: it was forked while another thread was
        using it (internal)."""
        return self._state.broken

    @property
    def lock(self) -> threading.RLock:
        """The lock every graph and handle on this store shares (internal)."""
        return self._state.lock

    @contextmanager
    def batch(self) -> Iterator[_MemoryBatch]:
        with self.lock:
            batch = _MemoryBatch(self)
            yield batch
            # Only a batch that ran to the end is applied: an exception above discards it.
            if batch._changes is not None:
                _apply(self.engine, batch._changes)

    # -- reading --------------------------------------------------------------------------

    @contextmanager
    def snapshot(self) -> Iterator[None]:
        """Holds the store's lock: no write of any thread or handle lands inside the block."""
        with self.lock:
            yield

    def node(self, kind: str, value: str) -> NodeRow | None:
        with self.lock:
            engine = self.engine
            k = engine.rules.kind_index.get(kind)
            n = None if k is None else engine.node(k, value)
            return None if n is None else node_row(engine, n)

    def nodes_by_ref(self, refs: Collection[int]) -> Mapping[int, NodeRow]:
        with self.lock:
            engine = self.engine
            size = len(engine.value)
            dead = engine.dead
            return {r: node_row(engine, r) for r in refs if 0 <= r < size and r not in dead}

    def profile_rows(self, profile: int) -> ProfileRows:
        with self.lock:
            engine = self.engine
            if not 0 <= profile < len(engine.value) or profile in engine.dead:
                return ProfileRows((), (), ())
            return profile_rows(engine, engine.find(profile))

    def profile_of(self, kind: str, value: str) -> ProfileRows | None:
        with self.lock:
            engine = self.engine
            k = engine.rules.kind_index.get(kind)
            n = None if k is None else engine.node(k, value)
            return None if n is None else profile_rows(engine, engine.find(n))

    def iter_profiles(self) -> Iterator[ProfileRows]:
        # One profile per hold of the lock: writers on other threads go on meanwhile.
        n = 0
        while True:
            with self.lock:
                engine = self.engine
                parent = engine.parent
                dead = engine.dead
                end = len(parent)
                while n < end and (parent[n] != n or n in dead):
                    n += 1
                if n >= end:
                    return
                rows = profile_rows(engine, n)
            yield rows
            n += 1

    def iter_refused_links(self) -> Iterator[LinkRow]:
        with self.lock:
            rows = list(refused_link_rows(self.engine))
        yield from rows

    def erasure_key(self) -> bytes:
        """The secret that erased identifiers are hashed with (kept with the data)."""
        return self.engine.erasure_key

    def read_components(self, identifiers: Collection[tuple[str, str]]) -> ComponentRows:
        """Node and log rows of the components holding ``identifiers``."""
        with self.lock:
            engine = self.engine
            kind_index = engine.rules.kind_index
            roots = []
            for kind, value in identifiers:
                k = kind_index.get(kind)
                n = None if k is None else engine.node(k, value)
                if n is not None:
                    roots.append(engine.lfind(n))
            return component_rows(engine, roots)

    def company_ids(self) -> list[str]:
        with self.lock:
            return sorted(self.engine.company_members)

    def company_rows(self, company_id: str) -> CompanyRows | None:
        with self.lock:
            engine = self.engine
            members = engine.company_members.get(company_id)
            if members is None:
                return None
            traits = tuple(
                CompanyTraitRow(company_id, k, ts, eid, v)
                for k, (ts, eid, v) in engine.company_traits.get(company_id, {}).items()
            )
            return CompanyRows(traits, tuple(sorted(members)))

    def counts(self) -> Counts:
        # The engine is the state: count it exactly rather than keep counters beside it.
        with self.lock:
            engine = self.engine
            user = engine.rules.user
            user_counts = engine.counts.get(user)
            profiles = identified = 0
            for r in engine.roots():
                profiles += 1
                if user_counts is not None:
                    identified += user_counts[r] > 0
                else:
                    identified += any(engine.kind[n] == user for n in engine.members(r))
            return Counts(
                events=len(engine.seen),
                identifiers=len(engine.value) - len(engine.dead),
                profiles=profiles,
                identified_profiles=identified,
                blocked=dict(engine.blocked),
            )

    # -- kept events (the EventLog capability, docs/analytics.md) ---------------------------

    def keep_events(self, events: Sequence[KeptEvent]) -> None:
        with self.lock:
            kept = self._state.events
            for event in events:
                kept.setdefault(event.event_id, event)

    def forget_events(self, kind: str, value: str) -> int:
        with self.lock:
            kept = self._state.events
            gone = [
                eid
                for eid, event in kept.items()
                if any(i.kind == kind and i.value == value for i in event.identifiers)
            ]
            for eid in gone:
                del kept[eid]
            return len(gone)

    def iter_events(self) -> Iterator[KeptEvent]:
        with self.lock:
            events = sorted(self._state.events.values(), key=lambda e: (e.ts, e.event_id))
        return iter(events)

    def close(self) -> None:
        pass


def _apply(engine: Engine, changes: Changes) -> None:
    """Store a batch's rows in the engine that holds this store's state: rebuild each
    component the changes touch from its current rows with the changed ones laid over."""
    size = len(engine.value)
    roots: set[int] = set()

    def stored(ref: int) -> bool:
        return 0 <= ref < size and ref not in engine.dead

    kind_index = engine.rules.kind_index
    for row in changes.nodes:
        if row.ref >= 0 and not (
            stored(row.ref)
            and engine.value[row.ref] == row.value
            and kind_index.get(row.kind) == engine.kind[row.ref]
        ):
            # Refs of stored nodes come from this store, and a node's identifier never
            # changes: anything else is a caller's bug (docs/storage.md).
            raise StorageError(f"save: ref {row.ref} names no stored {row.kind} node")
    for row in changes.nodes:
        for ref in (row.ref, row.component, row.profile):
            if stored(ref):
                roots.add(engine.lfind(ref))
    for ref in changes.deleted:
        if stored(ref):
            roots.add(engine.lfind(ref))
    for link in changes.links:
        for ref in (link.component, *link.members):
            if stored(ref):
                roots.add(engine.lfind(ref))
    gone_links = set(changes.deleted_links)
    if gone_links:  # (only erasures delete links: a scan of the logs is affordable)
        for root, entries in engine.log.items():
            if any(e[1] in gone_links for e in entries):
                roots.add(root)
    current = component_rows(engine, roots)
    deleted = set(changes.deleted)
    for ref in deleted:
        if not stored(ref):
            raise StorageError(f"save: ref {ref} names no stored node")
    nodes = {row.ref: row for row in current.nodes if row.ref not in deleted}
    nodes.update((row.ref, row) for row in changes.nodes)
    links = {link.event_id: link for link in current.links if link.event_id not in gone_links}
    links.update((link.event_id, link) for link in changes.links)
    # All or nothing: the writes below are journaled (the engine's own writers journal
    # theirs), and if one fails the components are loaded again from ``current``.
    mark, journal = engine.savepoint()
    try:
        _save(engine, changes, roots, deleted, nodes, links, journal)
    except BaseException:
        engine.restore(mark, journal)
        for row in current.nodes:  # (their parents may name nodes that were just removed)
            engine.parent[row.ref] = engine.lparent[row.ref] = row.ref
        known = {link.event_id for link in current.links}
        for link in changes.links:
            if link.event_id not in known:
                engine.refusals.pop(link.event_id, None)
                engine.erasures.pop(link.event_id, None)
        load_rows(engine, current.nodes, current.links)
        raise
    engine.release()


def _save(
    engine: Engine,
    changes: Changes,
    roots: set[int],
    deleted: set[int],
    nodes: Mapping[int, NodeRow],
    links: Mapping[str, LinkRow],
    journal: list[Any],
) -> None:
    for root in roots:
        engine.drop_log(root)
    for ref in deleted:
        engine._erase_node(ref)
    held = engine.suppressed
    for h in changes.suppressed:
        if h not in held:
            journal += (held, h, set.discard, 2)
            held.add(h)
    local = load_rows(engine, nodes.values(), links.values())

    def node_of(ref: int) -> int:
        return local.get(ref, ref)

    for t in changes.traits:
        if t.once:
            engine._write_traits(node_of(t.node), t.ts, t.event_id, None, {t.key: t.value})
        else:
            engine._write_traits(node_of(t.node), t.ts, t.event_id, {t.key: t.value}, None)
    members = engine.company_members
    for cid in changes.companies:
        if cid not in members:
            journal += (members, cid, None, dict.pop, 3)
            members[cid] = set()
    for c in changes.company_links:
        engine._write_company(node_of(c.node), c.ts, c.event_id, c.company_id, None)
    company_traits = engine.company_traits
    for ct in changes.company_traits:
        traits = company_traits.get(ct.company_id)
        if traits is None:
            journal += (company_traits, ct.company_id, None, dict.pop, 3)
            traits = company_traits[ct.company_id] = {}
        journal += (traits, ct.key, traits.get(ct.key, _ABSENT), _put, 3)
        keep(traits, ct.key, ct.ts, ct.event_id, ct.value)
    seen = engine.seen
    for event_id, fingerprint in changes.events:
        journal += (seen, event_id, seen.get(event_id, _ABSENT), _put, 3)
        seen[event_id] = fingerprint
    blocked = engine.blocked
    for kind_name, value in changes.unblocked:
        key = (kind_name, value)
        if key in blocked:
            journal += (blocked, key, blocked[key], _put, 3)
            del blocked[key]
    for kind, value, count in changes.blocked:
        key = (kind, value)
        journal += (blocked, key, blocked.get(key, _ABSENT), _put, 3)
        blocked[key] += count
