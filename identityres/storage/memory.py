"""The in-memory store, the default: the engine's own arrays are the storage.

``MemoryStore`` implements the storage protocol (so the conformance kit can check it like
any adapter), and in addition lets the graph decide events *in place* — no load, no save,
no row objects — which is what makes the default fast. ``MemoryStore(in_place=False)``
sends every batch through the protocol instead (the conformance kit uses both).
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from identityres._engine import Engine
from identityres._rules import CompiledRules
from identityres.errors import ConfigurationError
from identityres.storage._protocol import (
    Changes,
    CompanyTraitRow,
    ComponentRows,
    LinkRow,
    NodeRow,
    ProfileRows,
)

__all__ = ["MemoryStore"]


class _MemoryBatch:
    __slots__ = ("_changes", "_store")

    def __init__(self, store: MemoryStore) -> None:
        self._store = store
        self._changes: Changes | None = None

    def seen(self, event_ids: Collection[str]) -> Mapping[str, bytes]:
        seen = self._store.engine.seen
        return {e: seen[e] for e in event_ids if e in seen}  # type: ignore[misc]

    def load(self, identifiers: Collection[tuple[str, str]]) -> ComponentRows:
        engine = self._store.engine
        kind_index = engine.rules.kind_index
        roots = []
        for kind, value in identifiers:
            k = kind_index.get(kind)
            n = None if k is None else engine.node(k, value)
            if n is not None:
                roots.append(engine.lfind(n))
        return engine.component_rows(roots)

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
        self._engine: Engine | None = None

    @classmethod
    def from_url(cls, url: str) -> MemoryStore:
        """``memory://`` (nothing may follow the scheme)."""
        if url.lower() not in ("memory://", "memory:///"):
            raise ConfigurationError(f"store={url!r}: a memory store URL is just 'memory://'")
        return cls()

    def attach(self, rules: CompiledRules) -> None:
        """Bind the store to the rules of the graph using it (one set of kinds per store)."""
        if self._engine is None:
            self._engine = Engine(rules)
        elif not self._engine.rules.decides_like(rules):
            # The in-place engine decides with the rules it was made with: a second graph
            # with other rules would silently decide by the first one's.
            raise ConfigurationError(
                "store: this MemoryStore is already used by a graph with other rules; "
                "give each set of rules its own store"
            )

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            raise ConfigurationError("store: MemoryStore is not attached to a graph yet")
        return self._engine

    @contextmanager
    def batch(self) -> Iterator[_MemoryBatch]:
        batch = _MemoryBatch(self)
        yield batch
        # Only a batch that ran to the end is applied: an exception above discards it.
        if batch._changes is not None:
            self.engine.save_changes(batch._changes)

    # -- reading --------------------------------------------------------------------------

    def node(self, kind: str, value: str) -> NodeRow | None:
        engine = self.engine
        k = engine.rules.kind_index.get(kind)
        n = None if k is None else engine.node(k, value)
        return None if n is None else engine.node_row(n)

    def nodes_by_ref(self, refs: Collection[int]) -> Mapping[int, NodeRow]:
        engine = self.engine
        size = len(engine.value)
        dead = engine.dead
        return {r: engine.node_row(r) for r in refs if 0 <= r < size and r not in dead}

    def profile_rows(self, profile: int) -> ProfileRows:
        engine = self.engine
        return engine.profile_rows(engine.find(profile))

    def iter_profiles(self) -> Iterator[ProfileRows]:
        engine = self.engine
        for root in list(engine.roots()):
            yield engine.profile_rows(root)

    def iter_refused_links(self) -> Iterator[LinkRow]:
        yield from self.engine.refused_link_rows()

    def erasure_key(self) -> bytes:
        """The secret that erased identifiers are hashed with (kept with the data)."""
        return self.engine.erasure_key

    def read_components(self, identifiers: Collection[tuple[str, str]]) -> ComponentRows:
        """Node and log rows of the components holding ``identifiers`` (no lock taken)."""
        return _MemoryBatch(self).load(identifiers)

    def company_ids(self) -> list[str]:
        return sorted(self.engine.company_members)

    def company_rows(self, company_id: str) -> tuple[list[CompanyTraitRow], list[int]] | None:
        engine = self.engine
        members = engine.company_members.get(company_id)
        if members is None:
            return None
        traits = [
            CompanyTraitRow(company_id, k, ts, eid, v)
            for k, (ts, eid, v) in engine.company_traits.get(company_id, {}).items()
        ]
        return traits, sorted(members)

    def counts(self) -> Mapping[str, Any]:
        engine = self.engine
        user = engine.rules.user
        user_counts = engine.counts.get(user)
        profiles = identified = 0
        live = len(engine.value) - len(engine.dead)
        for r in engine.roots():
            profiles += 1
            if user_counts is not None:
                identified += user_counts[r] > 0
            else:
                identified += any(engine.kind[n] == user for n in engine.members(r))
        return {
            "events": len(engine.seen),
            "identifiers": live,
            "profiles": profiles,
            "identified_profiles": identified,
            "blocked": dict(engine.blocked),
        }

    def close(self) -> None:
        pass
