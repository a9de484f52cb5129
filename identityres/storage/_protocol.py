"""The storage protocol: the rows a store keeps and the calls the graph makes. The whole
contract, with a worked adapter, is ``docs/storage.md``.

A store persists the state of the identity graph as rows; it never decides anything. The
graph's write path is, for each batch of events:

1. open a **batch** (``Store.batch()``): an atomic unit of work;
2. ask which of the batch's event ids are already stored (``Batch.seen``), in one call;
3. ask which keyed hashes of its identifiers are erased (``Batch.suppressed``), in one call;
4. **load** the link components that hold the batch's identifiers (``Batch.load``), in one
   call: every node row and every link row of those components;
5. decide in memory (the engine re-decides a component from its link log when an event is
   late, R8 in docs/merge-rules.md);
6. **save** what changed (``Batch.save``), in one call: the changed rows, the link rows to
   delete and how the counters move (``Changes``); leaving the ``with`` block commits.

Rows refer to nodes by *ref*: a store-assigned integer ``>= 0`` for a stored node, or a
negative integer for a node created in this batch (the store maps it to a new ref on save,
consistently within one ``Changes``). A component's or profile's ref is the ref of its root
node; a root's own ``component``/``profile`` is itself.

Concurrency model: batches are **serializable** with respect to the components they load —
between ``load`` and the end of ``save`` no other batch may change those components. A store
that detects a conflict instead of preventing it raises :class:`RetryBatch` from ``load``,
``save`` or the commit; the graph then discards the batch and replays it, a bounded number
of times, before raising :class:`~identityres.errors.StorageError`. Each read call sees one
committed state; the read calls one thread makes inside :meth:`Store.snapshot` all see the
same one (how ``IdentityGraph`` answers a read that needs several calls).
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from typing import Protocol, runtime_checkable

from identityres._kept import KeptEvent
from identityres._rows import (
    BlockedCount,
    Changes,
    CompanyLinkRow,
    CompanyRows,
    CompanyTraitRow,
    ComponentRows,
    CountDeltas,
    Counts,
    EventRow,
    LinkRow,
    NodeRow,
    ProfileRows,
    RefusedMember,
    RetryBatch,
    TraitRow,
)
from identityres._rules import RulesRecord

__all__ = [
    "Batch",
    "BlockedCount",
    "Changes",
    "CompanyLinkRow",
    "CompanyRows",
    "CompanyTraitRow",
    "ComponentRows",
    "CountDeltas",
    "Counts",
    "EventLog",
    "EventRow",
    "KeptEvent",
    "LinkRow",
    "NodeRow",
    "ProfileRows",
    "RefusedMember",
    "RetryBatch",
    "RulesRecord",
    "Store",
    "TraitRow",
]


@runtime_checkable
class Batch(Protocol):
    """One atomic unit of work, obtained from :meth:`Store.batch`."""

    def seen(self, event_ids: Collection[str]) -> Mapping[str, bytes]:
        """The stored fingerprints of those of ``event_ids`` already stored (one call)."""
        ...

    def suppressed(self, hashes: Collection[bytes]) -> set[bytes]:
        """Those of ``hashes`` (keyed hashes of identifiers, see :meth:`Store.erasure_key`)
        on the suppression list of erased identifiers (one call)."""
        ...

    def load(self, identifiers: Collection[tuple[str, str]]) -> ComponentRows:
        """Every node and link row of the link components holding any of ``identifiers``
        (``(kind, value)`` pairs; unknown ones are ignored), in one call. From here to the end
        of the batch no other batch changes these components (or :class:`RetryBatch`)."""
        ...

    def save(self, changes: Changes) -> None:
        """Write ``changes`` as given (see :class:`Changes`): insert the new nodes, write
        over the changed ones, upsert the link rows and delete ``deleted_links``, merge the
        trait and company rows (newest wins), add the counter deltas. Visible to others
        only once the batch commits. Called at most once per batch."""
        ...


@runtime_checkable
class Store(Protocol):
    """A place the identity graph lives. Implementations: ``MemoryStore``, ``SQLiteStore``;
    third-party ones register a URL scheme in the ``identityres.stores`` entry-point group and
    prove themselves with :mod:`identityres.testing`'s conformance kit (docs/storage.md)."""

    def batch(self) -> AbstractContextManager[Batch]:
        """An atomic batch: everything saved in it is committed when the ``with`` block exits
        normally and discarded when it raises — after a crash, wholly present or wholly
        absent. Batches touching the same components are serialized (see module docs)."""
        ...

    def bind_rules(self, proposed: RulesRecord) -> RulesRecord:
        """The rules this store was written with. A store that holds none yet records
        ``proposed`` — at the latest in the transaction of the next batch it commits, which
        then fails with ``ConfigurationError`` if another handle recorded other rules
        first — and returns it; one that holds some returns those, unchanged. Every handle
        or graph on one store object gets the same answer. The graph compares the digests
        and refuses other rules."""
        ...

    def erasure_key(self) -> bytes:
        """The secret this store's erased identifiers are hashed with (``forget``, see
        docs/operator-tools.md): created once, kept with the data, the same for every handle
        on the store."""
        ...

    def snapshot(self) -> AbstractContextManager[None]:
        """A block of reads that see one state: every read call this thread makes on this
        store object inside the ``with`` block sees the same committed state — that of when
        the block began — whatever other handles, threads or processes commit meanwhile
        (they are not held up, or only as long as the block lasts). Re-entrant: an inner
        block reads the outer one's state. Streams (``iter_profiles``,
        ``iter_refused_links``) consumed inside the block read that state too. Only reads
        belong inside: a store may refuse a batch opened there (``StorageError``). E.g. one
        read transaction held open on a connection, a lock that keeps writers out, or the
        committed version pinned for the block."""
        ...

    def read_components(self, identifiers: Collection[tuple[str, str]]) -> ComponentRows:
        """Like :meth:`Batch.load`, outside any batch and without a lock: for explanations,
        history and export. Sees committed batches only."""
        ...

    def node(self, kind: str, value: str) -> NodeRow | None:
        """The node row of an identifier, or ``None``."""
        ...

    def nodes_by_ref(self, refs: Collection[int]) -> Mapping[int, NodeRow]:
        """Node rows by ref (unknown refs are left out)."""
        ...

    def profile_rows(self, profile: int) -> ProfileRows:
        """The rows of the profile whose root has ref ``profile``."""
        ...

    def profile_of(self, kind: str, value: str) -> ProfileRows | None:
        """The rows of the profile holding this identifier, in one consistent read, or
        ``None``."""
        ...

    def iter_profiles(self) -> Iterator[ProfileRows]:
        """The rows of every profile, one profile at a time (not all in memory at once)."""
        ...

    def iter_refused_links(self) -> Iterator[LinkRow]:
        """Every link row with at least one refusal."""
        ...

    def company_ids(self) -> list[str]:
        """Every company id, sorted."""
        ...

    def company_rows(self, company_id: str) -> CompanyRows | None:
        """A company's trait rows and the refs of the nodes linked to it, or ``None`` for a
        company no event named."""
        ...

    def counts(self) -> Counts:
        """The counters: the sums of every saved batch's ``Changes.counts`` and blocked
        counts."""
        ...

    def close(self) -> None:
        """Release connections and files. Idempotent."""
        ...


@runtime_checkable
class EventLog(Protocol):
    """The optional capability of a store to keep ingested events for analysis
    (``IdentityGraph(..., keep_events=True)``, docs/analytics.md and docs/storage.md).

    A store that lacks it still works as a store; a graph asked to keep events on it raises
    ``ConfigurationError``. Three calls, each its own transaction, so that any store can add
    them beside its tables (a PostgreSQL store: one table of events and one of their
    identifiers, indexed by ``(kind, value)``)."""

    def keep_events(self, events: Sequence[KeptEvent]) -> None:
        """Store ``events`` (in one transaction). An ``event_id`` already kept is left as it
        is: the first kept copy stays (a redelivery is the same event)."""
        ...

    def forget_events(self, kind: str, value: str) -> int:
        """Delete every kept event carrying the identifier ``(kind, value)``, leaving no copy
        of them behind as the store's erasure does (docs/storage.md, Erasure); how many."""
        ...

    def iter_events(self) -> Iterator[KeptEvent]:
        """Every kept event in ``(ts, event_id)`` order, streamed (not all in memory at
        once on a store that pages)."""
        ...
