"""The storage conformance kit (``identityres.testing``) run against every store: the
built-in ones, a toy third-party store (``tests/toy_store.py``), and broken variants of the
toy store that the kit must reject."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import Phase, settings

from identityres.storage import MemoryStore, Store
from identityres.storage.sqlite import SQLiteStore
from identityres.testing import (
    ConcurrencySuite,
    GraphSuite,
    RowSuite,
    StateMachineSuite,
    StoreConformance,
    run_conformance,
    server_url,
)
from identityres.testing.conformance import SuiteBase
from tests.toy_store import (
    ToyStore,
    ToyStoreDroppingRefusals,
    ToyStoreDroppingTraits,
    ToyStoreLoadingPartialComponents,
    ToyStoreWithoutRollback,
)

# --- the built-in stores -----------------------------------------------------------------------


class TestMemoryStore(StoreConformance):
    """The default store; the graph decides in place (the fast path). A second handle shares
    the state and the lock (``MemoryStore.handle()``)."""

    def make_store(self, tmp_path: Path) -> Store:
        return MemoryStore()

    def reopen(self, store: Store, tmp_path: Path) -> Store:
        assert isinstance(store, MemoryStore)
        return store.handle()


class TestMemoryStoreThroughTheProtocol(StoreConformance):
    """The in-memory store with every batch sent through seen → load → save."""

    def make_store(self, tmp_path: Path) -> Store:
        return MemoryStore(in_place=False)

    def reopen(self, store: Store, tmp_path: Path) -> Store:
        assert isinstance(store, MemoryStore)
        return store.handle()


class TestSQLiteStore(StoreConformance):
    """The embedded durable store; a second handle is a second connection to the file."""

    def make_store(self, tmp_path: Path) -> Store:
        return SQLiteStore(str(tmp_path / "identities.db"))

    def reopen(self, store: Store, tmp_path: Path) -> Store:
        return SQLiteStore(str(tmp_path / "identities.db"))


# --- a third-party store: the kit in one line ---------------------------------------------------


class TestToyStore(StoreConformance, factory=ToyStore, reopen=ToyStore.reopen):
    """A store written from the protocol's documentation alone: the class line is all."""


# --- the suites, alone or combined -------------------------------------------------------------


class TestToyStoreRowSuiteAlone(RowSuite, factory=ToyStore):
    """A store author may inherit only some suites: here the row cases alone."""


_SUITES: tuple[type[SuiteBase], ...] = (RowSuite, GraphSuite, ConcurrencySuite, StateMachineSuite)


def _cases(suite: type) -> set[str]:
    return {name for name in dir(suite) if name.startswith("test_")}


def test_store_conformance_is_the_suites_together() -> None:
    # Every case is in exactly one suite, and StoreConformance has them all.
    names = [name for suite in _SUITES for name in _cases(suite)]
    assert len(names) == len(set(names))
    assert _cases(StoreConformance) == set(names)
    assert all(issubclass(StoreConformance, suite) for suite in _SUITES)
    assert all(_cases(suite) for suite in _SUITES)


@pytest.mark.parametrize(
    ("suite", "case"),
    [
        (RowSuite, "test_load_returns_whole_components"),
        (GraphSuite, "test_graph_traits_and_companies"),
        (ConcurrencySuite, "test_batches_on_one_component_are_serialized"),
        (StateMachineSuite, "test_random_streams_agree_with_the_memory_graph"),
    ],
)
def test_each_suite_runs_alone(suite: type[SuiteBase], case: str, tmp_path: Path) -> None:
    # Each suite carries the plumbing (make_store, reopen, factory=/reopen=) by itself.
    class Alone(suite, factory=ToyStore, reopen=ToyStore.reopen):  # type: ignore[valid-type,misc]
        max_examples = 2

    assert issubclass(Alone, SuiteBase)
    getattr(Alone(), case)(tmp_path)


def test_a_suite_alone_still_rejects_a_broken_store(tmp_path: Path) -> None:
    class Rows(RowSuite, factory=ToyStoreWithoutRollback):
        pass

    with pytest.raises(AssertionError):
        Rows().test_exception_in_batch_discards_everything(tmp_path)


# --- server_url: skip when not configured, fail when broken -------------------------------------

_VARIABLE = "IDENTITYRES_CONFORMANCE_TEST_URL"


@pytest.mark.parametrize("value", [None, "", "  "])
def test_server_url_skips_when_the_variable_is_not_set(
    value: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    if value is None:
        monkeypatch.delenv(_VARIABLE, raising=False)
    else:
        monkeypatch.setenv(_VARIABLE, value)
    checked: list[str] = []
    with pytest.raises(pytest.skip.Exception, match=f"{_VARIABLE} is not set") as info:
        server_url(_VARIABLE, check=checked.append, what="PostgreSQL")
    assert "the PostgreSQL conformance tests need a server; set it to run them" in str(info.value)
    assert checked == []


def test_server_url_fails_when_the_server_does_not_answer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    url = "postgresql://kit@db.invalid:5432/conformance"
    monkeypatch.setenv(_VARIABLE, url)

    def refuse(url: str) -> None:
        raise ConnectionRefusedError("connection refused")

    with pytest.raises(pytest.fail.Exception) as info:
        server_url(_VARIABLE, check=refuse, what="PostgreSQL")
    message = str(info.value)
    assert _VARIABLE in message
    assert url in message
    assert "ConnectionRefusedError: connection refused" in message


def test_server_url_hides_the_password_when_it_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(_VARIABLE, "redis://kit:s3cret@cache.invalid:6379/0")

    def refuse(url: str) -> None:
        raise OSError("no route to host")

    with pytest.raises(pytest.fail.Exception) as info:
        server_url(_VARIABLE, check=refuse)
    assert "redis://kit:***@cache.invalid:6379/0" in str(info.value)
    assert "s3cret" not in str(info.value)


def test_server_url_returns_the_url(monkeypatch: pytest.MonkeyPatch) -> None:
    url = "postgresql://kit@localhost:5432/conformance"
    monkeypatch.setenv(_VARIABLE, url)
    checked: list[str] = []
    assert server_url(_VARIABLE, check=checked.append, what="PostgreSQL") == url
    assert checked == [url]
    assert server_url(_VARIABLE) == url


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
