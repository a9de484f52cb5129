"""A toy third-party store, written from the storage protocol's documentation alone (the
docstrings of ``identityres/storage/_protocol.py`` and ``docs/storage.md``).

It keeps every row in plain dicts and uses nothing of identityres but the row types: no
engine, nothing of ``MemoryStore``. It exists to show that the conformance kit accepts an
adapter written by someone who only read the protocol (``tests/test_conformance.py`` runs
the kit on it in one line), and, in the subclasses at the end, that the kit rejects stores
that break a promise.

How it keeps the promises:

* **atomic batches**: a batch buffers its one ``save`` and applies it at the end of the
  ``with`` block, to a copy of the data, which then replaces the data in one assignment; an
  exception in the block throws the buffer away;
* **serialized batches**: one lock per database, held for the whole batch (the simplest
  serializable schedule: one writer at a time);
* **reads see committed batches only**: a read takes the current data once and reads that
  (copy-on-write), without the lock; ``snapshot()`` pins the data a thread's reads take;
* **save writes what it is given**: the changed node and link rows over the stored ones,
  ``Changes.deleted_links`` dropped, ``Changes.deleted`` nodes dropped with their traits and
  company links; erased identifiers are remembered by keyed hash only (``erasure_key``,
  ``suppressed``); counts are counted from the rows (a store may keep the deltas instead);
* **rules**: the first ``bind_rules`` is recorded, later ones get it back.
"""

from __future__ import annotations

import secrets
import threading
from collections import Counter
from collections.abc import Collection, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import attrs

from identityres.errors import StorageError
from identityres.storage import (
    Changes,
    CompanyLinkRow,
    CompanyRows,
    CompanyTraitRow,
    ComponentRows,
    Counts,
    LinkRow,
    NodeRow,
    ProfileRows,
    RulesRecord,
    TraitRow,
)

__all__ = [
    "ToyStore",
    "ToyStoreDroppingRefusals",
    "ToyStoreDroppingTraits",
    "ToyStoreLoadingPartialComponents",
    "ToyStoreWithoutRollback",
]


@attrs.define
class _Data:
    """One committed state: every row, keyed as the protocol says rows are merged."""

    nodes: dict[int, NodeRow] = attrs.Factory(dict)
    refs: dict[tuple[str, str], int] = attrs.Factory(dict)
    links: dict[str, LinkRow] = attrs.Factory(dict)
    traits: dict[tuple[int, str, bool], TraitRow] = attrs.Factory(dict)
    company_links: dict[tuple[int, str], CompanyLinkRow] = attrs.Factory(dict)
    company_traits: dict[tuple[str, str], CompanyTraitRow] = attrs.Factory(dict)
    #: every company ever named: a company outlives the erasure of its members
    companies: set[str] = attrs.Factory(set)
    events: dict[str, bytes] = attrs.Factory(dict)
    blocked: Counter[tuple[str, str]] = attrs.Factory(Counter)
    suppressed: set[bytes] = attrs.Factory(set)
    next_ref: int = 0

    def copy(self) -> _Data:
        return _Data(
            dict(self.nodes),
            dict(self.refs),
            dict(self.links),
            dict(self.traits),
            dict(self.company_links),
            dict(self.company_traits),
            set(self.companies),
            dict(self.events),
            Counter(self.blocked),
            set(self.suppressed),
            self.next_ref,
        )


class _Database:
    """What several handles share: the committed data and the writers' lock."""

    def __init__(self) -> None:
        self.data = _Data()
        self.lock = threading.Lock()
        self.erasure_key = secrets.token_bytes(32)
        self.rules: RulesRecord | None = None


def _newer(key: tuple[float, str], old: Any) -> bool:
    return old is None or key > (old.ts, old.event_id)


def _older(key: tuple[float, str], old: Any) -> bool:
    return old is None or key < (old.ts, old.event_id)


def apply_changes(data: _Data, changes: Changes) -> None:
    """Write ``changes`` into ``data`` (a private copy), as the protocol says."""
    # Negative refs are this batch's new nodes: give each a fresh ref, the same in every row.
    new: dict[int, int] = {}
    for row in changes.nodes:
        if row.ref < 0 and row.ref not in new:
            new[row.ref] = data.next_ref
            data.next_ref += 1

    def ref(r: int) -> int:
        return new[r] if r < 0 else r

    for row in changes.nodes:
        old = data.nodes.get(row.ref) if row.ref >= 0 else None
        if row.ref >= 0 and (old is None or (old.kind, old.value) != (row.kind, row.value)):
            raise StorageError(f"save: ref {row.ref} names no stored {row.kind} node")

    for r in changes.deleted:
        old = data.nodes.pop(r, None)
        if old is not None:
            del data.refs[(old.kind, old.value)]
        data.traits = {k: t for k, t in data.traits.items() if t.node != r}
        data.company_links = {k: c for k, c in data.company_links.items() if c.node != r}
    for event_id in changes.deleted_links:
        data.links.pop(event_id, None)
    for row in changes.nodes:
        row = attrs.evolve(
            row, ref=ref(row.ref), component=ref(row.component), profile=ref(row.profile)
        )
        data.nodes[row.ref] = row
        data.refs[(row.kind, row.value)] = row.ref
    for link in changes.links:
        data.links[link.event_id] = attrs.evolve(
            link, component=ref(link.component), members=tuple(ref(m) for m in link.members)
        )
    for t in changes.traits:
        t = attrs.evolve(t, node=ref(t.node))
        key = (t.node, t.key, t.once)
        keep = _older if t.once else _newer
        if keep((t.ts, t.event_id), data.traits.get(key)):
            data.traits[key] = t
    for c in changes.company_links:
        c = attrs.evolve(c, node=ref(c.node))
        if _newer((c.ts, c.event_id), data.company_links.get((c.node, c.company_id))):
            data.company_links[(c.node, c.company_id)] = c
        data.companies.add(c.company_id)
    for ct in changes.company_traits:
        if _newer((ct.ts, ct.event_id), data.company_traits.get((ct.company_id, ct.key))):
            data.company_traits[(ct.company_id, ct.key)] = ct
        data.companies.add(ct.company_id)
    data.companies.update(changes.companies)
    for event_id, fingerprint in changes.events:
        data.events[event_id] = fingerprint
    for kind, value in changes.unblocked:  # erased blocked values: their counts go first
        data.blocked.pop((kind, value), None)
    for kind, value, count in changes.blocked:
        data.blocked[(kind, value)] += count
    data.suppressed.update(changes.suppressed)


def components(data: _Data, identifiers: Collection[tuple[str, str]]) -> ComponentRows:
    """Every node and link row of the components holding ``identifiers``."""
    roots = {data.nodes[data.refs[i]].component for i in identifiers if i in data.refs}
    return ComponentRows(
        tuple(n for n in data.nodes.values() if n.component in roots),
        tuple(link for link in data.links.values() if link.component in roots),
    )


class _ToyBatch:
    def __init__(self, data: _Data) -> None:
        self.data = data
        self.changes: Changes | None = None

    def seen(self, event_ids: Collection[str]) -> Mapping[str, bytes]:
        return {e: self.data.events[e] for e in event_ids if e in self.data.events}

    def load(self, identifiers: Collection[tuple[str, str]]) -> ComponentRows:
        return components(self.data, identifiers)

    def suppressed(self, hashes: Collection[bytes]) -> set[bytes]:
        return {h for h in hashes if h in self.data.suppressed}

    def save(self, changes: Changes) -> None:
        if self.changes is not None:
            raise RuntimeError("save() called twice in one batch")
        self.changes = changes


class ToyStore:
    """A store in plain dicts. ``ToyStore()`` is a new, empty database;
    :meth:`reopen` gives another handle on the same one."""

    def __init__(self, database: _Database | None = None) -> None:
        self._db = database if database is not None else _Database()
        self._pinned = threading.local()

    def reopen(self) -> ToyStore:
        return type(self)(self._db)

    @contextmanager
    def batch(self) -> Iterator[_ToyBatch]:
        with self._db.lock:
            batch = _ToyBatch(self._db.data)
            yield batch  # an exception here leaves the data as it was
            if batch.changes is not None:
                self._commit(batch.changes)

    def _commit(self, changes: Changes) -> None:
        data = self._db.data.copy()
        apply_changes(data, changes)
        self._db.data = data

    def bind_rules(self, proposed: RulesRecord) -> RulesRecord:
        with self._db.lock:
            if self._db.rules is None:
                self._db.rules = RulesRecord(proposed.digest, proposed.description)
            return self._db.rules

    def erasure_key(self) -> bytes:
        """The secret erased identifiers are hashed with: one per database."""
        return self._db.erasure_key

    # -- reads: the committed data, taken once per call ----------------------------------

    @contextmanager
    def snapshot(self) -> Iterator[None]:
        """This thread's reads take the data committed when the block began (a commit
        replaces the data object and never changes it, so holding it is enough)."""
        outer = getattr(self._pinned, "data", None)
        self._pinned.data = outer if outer is not None else self._db.data
        try:
            yield
        finally:
            self._pinned.data = outer

    def _committed(self) -> _Data:
        pinned: _Data | None = getattr(self._pinned, "data", None)
        return self._db.data if pinned is None else pinned

    def read_components(self, identifiers: Collection[tuple[str, str]]) -> ComponentRows:
        return components(self._committed(), identifiers)

    def node(self, kind: str, value: str) -> NodeRow | None:
        data = self._committed()
        ref = data.refs.get((kind, value))
        return None if ref is None else data.nodes[ref]

    def nodes_by_ref(self, refs: Collection[int]) -> Mapping[int, NodeRow]:
        data = self._committed()
        return {r: data.nodes[r] for r in refs if r in data.nodes}

    @staticmethod
    def _profile(data: _Data, nodes: list[NodeRow]) -> ProfileRows:
        refs = {n.ref for n in nodes}
        return ProfileRows(
            tuple(nodes),
            tuple(t for t in data.traits.values() if t.node in refs),
            tuple(c for c in data.company_links.values() if c.node in refs),
        )

    def profile_rows(self, profile: int) -> ProfileRows:
        data = self._committed()
        return self._profile(data, [n for n in data.nodes.values() if n.profile == profile])

    def profile_of(self, kind: str, value: str) -> ProfileRows | None:
        data = self._committed()
        ref = data.refs.get((kind, value))
        if ref is None:
            return None
        profile = data.nodes[ref].profile
        return self._profile(data, [n for n in data.nodes.values() if n.profile == profile])

    def iter_profiles(self) -> Iterator[ProfileRows]:
        data = self._committed()
        by_profile: dict[int, list[NodeRow]] = {}
        for n in data.nodes.values():
            by_profile.setdefault(n.profile, []).append(n)
        for nodes in by_profile.values():
            yield self._profile(data, nodes)

    def iter_refused_links(self) -> Iterator[LinkRow]:
        return iter([link for link in self._committed().links.values() if link.refused])

    def company_ids(self) -> list[str]:
        return sorted(self._committed().companies)

    def company_rows(self, company_id: str) -> CompanyRows | None:
        data = self._committed()
        if company_id not in data.companies:
            return None
        members = sorted(n for n, cid in data.company_links if cid == company_id)
        traits = [t for (cid, _), t in data.company_traits.items() if cid == company_id]
        return CompanyRows(tuple(traits), tuple(members))

    def counts(self) -> Counts:
        data = self._committed()
        profiles = {n.profile for n in data.nodes.values()}
        identified = {n.profile for n in data.nodes.values() if n.kind == "user_id"}
        return Counts(
            events=len(data.events),
            identifiers=len(data.nodes),
            profiles=len(profiles),
            identified_profiles=len(identified),
            blocked=dict(data.blocked),
        )

    def close(self) -> None:
        pass


# --- broken on purpose: the conformance kit must reject each of these ---------------------


class ToyStoreDroppingTraits(ToyStore):
    """Silently ignores trait rows (a forgotten table in an INSERT loop)."""

    def _commit(self, changes: Changes) -> None:
        super()._commit(attrs.evolve(changes, traits=()))


class ToyStoreDroppingRefusals(ToyStore):
    """Keeps link rows but not their ``refused`` column."""

    def _commit(self, changes: Changes) -> None:
        links = tuple(attrs.evolve(link, refused=()) for link in changes.links)
        super()._commit(attrs.evolve(changes, links=links))


class ToyStoreWithoutRollback(ToyStore):
    """Writes on ``save`` instead of on commit (autocommit mode): an exception later in the
    batch no longer takes the batch back."""

    @contextmanager
    def batch(self) -> Iterator[_ToyBatch]:
        with self._db.lock:
            batch = _EagerBatch(self)
            yield batch


class _EagerBatch(_ToyBatch):
    def __init__(self, store: ToyStore) -> None:
        super().__init__(store._db.data)
        self.store = store

    def save(self, changes: Changes) -> None:
        self.store._commit(changes)


class ToyStoreLoadingPartialComponents(ToyStore):
    """``load`` returns the *profiles* of the identifiers (with the links inside them)
    instead of their link components: the identifiers a refused link tied to them, and
    those links, are missing."""

    @contextmanager
    def batch(self) -> Iterator[_ToyBatch]:
        with self._db.lock:
            batch = _ProfileLoadingBatch(self._db.data)
            yield batch
            if batch.changes is not None:
                self._commit(batch.changes)


class _ProfileLoadingBatch(_ToyBatch):
    def load(self, identifiers: Collection[tuple[str, str]]) -> ComponentRows:
        data = self.data
        profiles = {data.nodes[data.refs[i]].profile for i in identifiers if i in data.refs}
        nodes = tuple(n for n in data.nodes.values() if n.profile in profiles)
        refs = {n.ref for n in nodes}
        # Every node's component must be among the rows the engine gets: keep it valid.
        nodes = tuple(attrs.evolve(n, component=n.profile) for n in nodes)
        links = tuple(
            attrs.evolve(link, component=data.nodes[link.members[0]].profile)
            for link in data.links.values()
            if link.members and set(link.members) <= refs
        )
        return ComponentRows(nodes, links)
