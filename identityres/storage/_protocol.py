"""The storage protocol (SPEC §6): the rows a store keeps and the calls the graph makes.

A store persists the state of the identity graph as rows; it never decides anything. The
graph's write path is, for each batch of events:

1. open a **batch** (``Store.batch()``): an atomic unit of work;
2. ask which of the batch's event ids are already stored (``Batch.seen``), in one call;
3. **load** the link components that hold the batch's identifiers (``Batch.load``), in one
   call: every node row and every link row of those components;
4. decide in memory (the engine re-decides a component from its link log when an event is
   late, SPEC R8);
5. **save** what changed (``Batch.save``), in one call; leaving the ``with`` block commits.

Erasure (``forget``): ``Changes.deleted`` lists refs whose rows — and their traits and
company links — the store must delete so that the value is gone from storage; the store
keeps only the keyed hashes of ``Changes.suppressed`` (see ``Store.erasure_key``).

Rows refer to nodes by *ref*: a store-assigned integer ``>= 0`` for a stored node, or a
negative integer for a node created in this batch (the store maps it to a new ref on save,
consistently within one ``Changes``). A component's or profile's ref is the ref of its root
node; a root's own ``component``/``profile`` is itself.

Concurrency model: the store guarantees that batches are **serializable** with respect to
the components they load — between ``load`` and the end of ``save`` no other batch may
change those components (SQLite takes the database's write lock, ``BEGIN IMMEDIATE``; a
multi-machine store locks the component roots in ascending ref order). A store that detects
a conflict instead of preventing it raises :class:`RetryBatch` from ``load`` or ``save``;
the graph then rolls back and replays the whole batch, a bounded number of times, before
raising :class:`~identityres.errors.StorageError`. Reads take no lock and see committed
batches only.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Mapping
from contextlib import AbstractContextManager
from typing import Any, Protocol, runtime_checkable

from identityres._rows import (
    Changes,
    CompanyLinkRow,
    CompanyTraitRow,
    ComponentRows,
    LinkRow,
    NodeRow,
    ProfileRows,
    RetryBatch,
    TraitRow,
)

__all__ = [
    "Batch",
    "Changes",
    "CompanyLinkRow",
    "CompanyTraitRow",
    "ComponentRows",
    "LinkRow",
    "NodeRow",
    "ProfileRows",
    "RetryBatch",
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
        """Write ``changes``; visible to others only once the batch commits. Called at most
        once per batch."""
        ...


@runtime_checkable
class Store(Protocol):
    """A place the identity graph lives. Implementations: ``MemoryStore``, ``SQLiteStore``;
    third-party ones register a URL scheme in the ``identityres.stores`` entry-point group and
    prove themselves with :mod:`identityres.testing`'s conformance kit."""

    def batch(self) -> AbstractContextManager[Batch]:
        """An atomic batch: everything saved in it is committed when the ``with`` block exits
        normally and discarded when it raises — after a crash, wholly present or wholly
        absent. Batches touching the same components are serialized (see module docs)."""
        ...

    def erasure_key(self) -> bytes:
        """The secret this store's erased identifiers are hashed with (SPEC §3 forget):
        created once, kept with the data, the same for every handle on the store."""
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

    def iter_profiles(self) -> Iterator[ProfileRows]:
        """The rows of every profile, one profile at a time (not all in memory at once)."""
        ...

    def iter_refused_links(self) -> Iterator[LinkRow]:
        """Every link row with at least one refusal."""
        ...

    def company_ids(self) -> list[str]:
        """Every company id, sorted."""
        ...

    def company_rows(self, company_id: str) -> tuple[list[CompanyTraitRow], list[int]] | None:
        """A company's trait rows and the refs of the nodes linked to it, or ``None``."""
        ...

    def counts(self) -> Mapping[str, Any]:
        """``{"events": int, "identifiers": int, "profiles": int, "identified_profiles": int,
        "blocked": {(kind, value): count}}``."""
        ...

    def close(self) -> None:
        """Release connections and files. Idempotent."""
        ...
