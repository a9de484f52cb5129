"""A store that detects a conflicting concurrent batch raises ``RetryBatch``; the graph
rolls back and replays the whole batch a bounded number of times (storage protocol)."""

from __future__ import annotations

from collections.abc import Collection, Iterator
from contextlib import contextmanager
from typing import Any

import pytest

import identityres as ir
from identityres.storage import ComponentRows, MemoryStore, RetryBatch
from identityres.testing import snapshot


class ConflictingStore(MemoryStore):
    """Raises RetryBatch from ``load`` the first ``conflicts`` times, as a store using
    compare-and-set would when another writer changed the components it loaded."""

    def __init__(self, conflicts: int) -> None:
        super().__init__(in_place=False)
        self.conflicts = conflicts
        self.batches = 0

    @contextmanager
    def batch(self) -> Iterator[Any]:
        self.batches += 1
        with super().batch() as inner:
            store = self

            class Wrapped:
                def seen(self, ids: Collection[str]) -> Any:
                    return inner.seen(ids)

                def suppressed(self, hashes: Collection[bytes]) -> set[bytes]:
                    return inner.suppressed(hashes)

                def load(self, identifiers: Collection[tuple[str, str]]) -> ComponentRows:
                    if store.conflicts > 0:
                        store.conflicts -= 1
                        raise RetryBatch
                    return inner.load(identifiers)

                def save(self, changes: Any) -> None:
                    inner.save(changes)

            yield Wrapped()


def events() -> list[Any]:
    return [
        ir.Identify(user_id="u1", anonymous_id="a1", timestamp=1, event_id="e1"),
        ir.Identify(user_id="u2", anonymous_id="a1", timestamp=2, event_id="e2"),
        ir.Track(event="x", anonymous_id="a2", timestamp=3, event_id="e3"),
    ]


def test_a_conflicting_batch_is_retried_and_applied_once() -> None:
    store = ConflictingStore(conflicts=3)
    g = ir.IdentityGraph(store=store)
    report = g.ingest(events())
    assert store.batches == 4  # three conflicts, then the batch that went through
    assert report.applied == 3
    expected = ir.IdentityGraph()
    expected.ingest(events())
    assert snapshot(g) == snapshot(expected)


def test_a_batch_that_keeps_conflicting_ends_in_storage_error_and_changes_nothing() -> None:
    store = ConflictingStore(conflicts=10_000)
    g = ir.IdentityGraph(store=store)
    with pytest.raises(ir.StorageError, match="conflicting"):
        g.ingest(events())
    assert store.batches == 20
    assert list(g.profiles()) == []
