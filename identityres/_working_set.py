"""A working set: an engine loaded with the link components one batch touches, which hands
back what the batch changed as rows for its store (``docs/storage.md``, the write path).

The engine decides; this subclass only remembers which store ref each node has and what
the decisions wrote, so that ``changes()`` can give the store exactly the rows that changed,
the link rows that went, and how the store's counters move. A store therefore never works
out a domain fact itself.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from identityres._engine import Engine
from identityres._events import Record
from identityres._model import USER_ID
from identityres._rows import (
    BlockedCount,
    Changes,
    CompanyLinkRow,
    CompanyTraitRow,
    CountDeltas,
    EventRow,
    LinkRow,
    NodeRow,
    TraitRow,
)
from identityres._rules import CompiledRules
from identityres._state_rows import link_row, load_rows, node_row
from identityres.storage._protocol import Batch

__all__ = ["WorkingSet"]


class WorkingSet(Engine):
    """The engine of one batch. Nodes created here have negative refs (``-(node + 1)``),
    which the store replaces with refs of its own on save.

    A failed apply is not undone here: the batch that raised is thrown away (the store
    rolls it back), so the working set journals nothing."""

    undoable = False

    def __init__(self, rules: CompiledRules, erasure_key: bytes) -> None:
        super().__init__(rules)
        self.erasure_key = erasure_key
        #: node -> the store's ref of it
        self.refs: list[int] = []
        self._loaded_nodes: dict[int, NodeRow] = {}
        self._loaded_links: dict[str, LinkRow] = {}
        self._traits: list[TraitRow] = []
        self._company_links: list[CompanyLinkRow] = []
        self._company_traits: list[CompanyTraitRow] = []
        self._companies: list[str] = []
        self._erased_blocked: list[tuple[str, str]] = []
        self._new_hashes: list[bytes] = []
        self._erased_refs: list[int] = []

    def ref(self, n: int) -> int:
        return self.refs[n]

    def load(
        self,
        batch: Batch,
        identifiers: Collection[tuple[str, str]],
        blocked: Collection[tuple[str, str]] = (),
    ) -> None:
        """Load the components holding ``identifiers`` (``(kind name, value)`` pairs) and
        which of their keyed hashes, and of the ``blocked`` values' (a forgotten blocked
        value is not counted), are suppressed: two calls, whatever the batch's size."""
        kinds = self.rules.kind_index
        hashes = {self.erasure_hash(kinds[k], v): None for k, v in identifiers}
        hashes.update((self.name_hash(k, v), None) for k, v in blocked)
        self.suppressed = set(batch.suppressed(list(hashes)))
        rows = batch.load(identifiers)
        local = load_rows(self, rows.nodes, rows.links)
        for ref, n in local.items():
            self.refs[n] = ref
        self._loaded_nodes = {row.ref: row for row in rows.nodes}
        self._loaded_links = {link.event_id: link for link in rows.links}

    # -- what the engine's decisions wrote --------------------------------------------------

    def new_node(self, kind: int, value: str, ts: float, eid: str) -> int:
        n = super().new_node(kind, value, ts, eid)
        self.refs.append(-(n + 1))
        return n

    def _fresh_pair(self, ka: int, va: str, kb: int, vb: str, rec: Record) -> Any:
        a = len(self.value)
        self.refs.extend((-(a + 1), -(a + 2)))
        return super()._fresh_pair(ka, va, kb, vb, rec)

    def _write_traits(
        self,
        n: int,
        ts: float,
        eid: str,
        traits: dict[str, Any] | None,
        set_once: dict[str, Any] | None,
    ) -> None:
        ref = self.refs[n]
        for k, v in (traits or {}).items():
            self._traits.append(TraitRow(ref, k, ts, eid, v, False))
        for k, v in (set_once or {}).items():
            self._traits.append(TraitRow(ref, k, ts, eid, v, True))
        super()._write_traits(n, ts, eid, traits, set_once)

    def _write_company(
        self, n: int | None, ts: float, eid: str, cid: str, traits: dict[str, Any] | None
    ) -> None:
        self._companies.append(cid)
        if n is not None:
            self._company_links.append(CompanyLinkRow(self.refs[n], cid, ts, eid))
        for k, v in (traits or {}).items():
            self._company_traits.append(CompanyTraitRow(cid, k, ts, eid, v))
        super()._write_company(n, ts, eid, cid, traits)

    def _suppressed_hash(self, h: bytes) -> None:
        self._new_hashes.append(h)

    def _unblocked(self, kind: str, value: str) -> None:
        self._erased_blocked.append((kind, value))

    def _erased(self, n: int) -> None:
        self._erased_refs.append(self.refs[n])

    # -- the rows to save -------------------------------------------------------------------

    def changes(self) -> Changes:
        """What this batch changed, as the store must save it (see ``Changes``)."""
        ref = self.ref
        dead = self.dead
        before = self._loaded_nodes
        nodes: list[NodeRow] = []
        regrouped: list[int] = []
        roots: set[int] = set()
        identified: set[int] = set()
        live = 0
        for n in range(len(self.value)):
            if n in dead:
                continue
            live += 1
            row = node_row(self, n, ref)
            if row.ref == row.profile:
                roots.add(row.ref)
            if row.kind == USER_ID:
                identified.add(row.profile)
            old = before.get(row.ref)
            if old is None:
                nodes.append(row)
            elif row != old:
                nodes.append(row)
                if old.component != row.component or old.profile != row.profile:
                    regrouped.append(row.ref)
        loaded_links = self._loaded_links
        links: list[LinkRow] = []
        kept: set[str] = set()
        for root, entries in self.log.items():
            for entry in entries:
                link = link_row(self, entry, root, ref)
                kept.add(link.event_id)
                if loaded_links.get(link.event_id) != link:
                    links.append(link)
        old_roots = sum(1 for row in before.values() if row.ref == row.profile)
        old_identified = len({row.profile for row in before.values() if row.kind == USER_ID})
        gone = set(self._erased_refs)  # the refs of the nodes an erasure removed
        return Changes(
            nodes=tuple(nodes),
            regrouped=tuple(regrouped),
            links=tuple(links),
            deleted_links=tuple(e for e in loaded_links if e not in kept),
            traits=tuple(t for t in self._traits if t.node not in gone),
            company_links=tuple(c for c in self._company_links if c.node not in gone),
            company_traits=tuple(self._company_traits),
            events=tuple(EventRow(e, fp) for e, fp in self.seen.items()),
            unblocked=tuple(dict.fromkeys(self._erased_blocked)),
            blocked=tuple(BlockedCount(k, v, c) for (k, v), c in self.blocked.items()),
            companies=tuple(dict.fromkeys(self._companies)),
            deleted=tuple(r for r in self._erased_refs if r >= 0),
            suppressed=tuple(self._new_hashes),
            counts=CountDeltas(
                events=len(self.seen),
                identifiers=live - len(before),
                profiles=len(roots) - old_roots,
                identified_profiles=len(identified) - old_identified,
            ),
        )
