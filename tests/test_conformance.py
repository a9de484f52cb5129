"""The storage conformance kit (``identityres.testing``) run against every store: the
built-in ones, a toy third-party store (``tests/toy_store.py``), and broken variants of the
toy store that the kit must reject."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import Phase, settings

from identityres.storage import MemoryStore, Store
from identityres.storage.sqlite import SQLiteStore
from identityres.testing import StoreConformance, run_conformance
from tests.toy_store import (
    ToyStore,
    ToyStoreDroppingRefusals,
    ToyStoreDroppingTraits,
    ToyStoreLoadingPartialComponents,
    ToyStoreWithoutRollback,
)

# --- the built-in stores -----------------------------------------------------------------------


# Known flaw: MemoryStore.batch() takes no lock, and two in-place graphs on one store each hold
# only their own lock, so two graphs writing one MemoryStore from two threads lose writes or
# corrupt the union-find (the kit's serialization case hangs). No second handle to test yet.
_MEMORY_HANDLES = "MemoryStore gives no second handle: one store shared by two graphs is not safe"


class TestMemoryStore(StoreConformance):
    """The default store; the graph decides in place (the fast path)."""

    no_reopen_reason = _MEMORY_HANDLES

    def make_store(self, tmp_path: Path) -> Store:
        return MemoryStore()

    @pytest.mark.xfail(
        strict=True,
        reason="known flaw: written in place, MemoryStore keeps hash(content) (an int, salted "
        "per process) as an event's fingerprint, so Batch.seen returns no stable bytes and a "
        "graph writing the same store through batches takes re-deliveries for conflicts",
    )
    def test_fingerprints_written_by_the_graph_are_seen_by_batches(self, tmp_path: Path) -> None:
        super().test_fingerprints_written_by_the_graph_are_seen_by_batches(tmp_path)


class TestMemoryStoreThroughTheProtocol(StoreConformance):
    """The in-memory store with every batch sent through seen → load → save."""

    no_reopen_reason = _MEMORY_HANDLES

    def make_store(self, tmp_path: Path) -> Store:
        return MemoryStore(in_place=False)


class TestSQLiteStore(StoreConformance):
    """The embedded durable store; a second handle is a second connection to the file."""

    def make_store(self, tmp_path: Path) -> Store:
        return SQLiteStore(str(tmp_path / "identities.db"))

    def reopen(self, store: Store, tmp_path: Path) -> Store:
        return SQLiteStore(str(tmp_path / "identities.db"))


# --- a third-party store: the kit in one line ---------------------------------------------------


class TestToyStore(StoreConformance, factory=ToyStore, reopen=ToyStore.reopen):
    """A store written from the protocol's documentation alone: the class line is all."""


# --- the kit catches broken stores -------------------------------------------------------------

# The first failure is enough here: no shrinking, no example database (which would replay
# a failure found before and so hide whether the kit still finds it).
_FIND = settings(
    max_examples=50,
    deadline=None,
    phases=[Phase.generate],
    database=None,
    report_multiple_bugs=False,
    suppress_health_check=list(settings.default.suppress_health_check),
)


@pytest.mark.parametrize(
    "broken",
    [
        ToyStoreDroppingTraits,
        ToyStoreDroppingRefusals,
        ToyStoreWithoutRollback,
        ToyStoreLoadingPartialComponents,
    ],
)
def test_state_machine_rejects_a_broken_store(broken: type[ToyStore]) -> None:
    with pytest.raises(AssertionError):
        run_conformance(broken, settings=_FIND)


@pytest.mark.parametrize(
    ("broken", "case"),
    [
        (ToyStoreDroppingTraits, "test_traits_keep_newest_regular_and_oldest_set_once"),
        (ToyStoreDroppingTraits, "test_graph_traits_and_companies"),
        (ToyStoreDroppingRefusals, "test_reads_agree_with_what_was_saved"),
        (ToyStoreDroppingRefusals, "test_graph_late_event_replays_its_component"),
        (ToyStoreWithoutRollback, "test_exception_in_batch_discards_everything"),
        (ToyStoreWithoutRollback, "test_exception_in_second_batch_keeps_the_first"),
        (ToyStoreLoadingPartialComponents, "test_load_returns_whole_components"),
        (ToyStoreLoadingPartialComponents, "test_graph_late_event_replays_its_component"),
    ],
)
def test_plain_cases_reject_a_broken_store(
    broken: type[ToyStore], case: str, tmp_path: Path
) -> None:
    class Kit(StoreConformance, factory=broken):
        pass

    with pytest.raises(AssertionError):
        getattr(Kit(), case)(tmp_path)
