"""Reads see one state (docs/storage.md, "Reads"): every read call of ``IdentityGraph`` that
makes several store calls makes them inside one ``Store.snapshot()``, so a batch another
handle commits meanwhile (a ``forget`` above all: it deletes rows) cannot tear the answer.

Before snapshots, ``refusals()`` raised ``KeyError`` and ``company()`` ``ValueError: min()
arg is an empty sequence`` when a forget committed between two of their store calls.
"""

from __future__ import annotations

import contextlib
import random
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from identityres import Identifier, IdentityGraph
from identityres._model import IdLike
from identityres.errors import ErasureIncompleteError
from identityres.storage import MemoryStore, NodeRow, Store
from identityres.storage.sqlite import SQLiteStore

#: how long the threads of the stress test run
STRESS_SECONDS = 3.0


def _setup(graph: IdentityGraph, n: int) -> None:
    """``n`` users, each on a device with a refused second user (a refusal per user) and in
    a company."""
    for i in range(n):
        graph.identify(f"u{i}", f"a{i}", traits={"n": i}, timestamp=10 * i + 1, event_id=f"i{i}")
        graph.identify(f"v{i}", f"a{i}", timestamp=10 * i + 2, event_id=f"r{i}")  # refused
        graph.identify_company(f"c{i % 3}", user_id=f"u{i}", timestamp=10 * i + 3, event_id=f"c{i}")


def forget(graph: IdentityGraph, identifier: IdLike | Identifier, **kwargs: Any) -> None:
    """``graph.forget``. SQLite commits an erasure and then raises ``ErasureIncompleteError``
    when a reader holds an older state (as these tests' readers do on purpose), so the bytes
    cannot be scrubbed yet: the erasure is committed all the same."""
    with contextlib.suppress(ErasureIncompleteError):
        graph.forget(identifier, **kwargs)


# --- a forget committed between two store calls of one read ---------------------------------


class _Interleaving:
    """Wraps one store read so that, the first time it is called, another thread commits
    ``action`` through another handle first (waiting for it half a second: a store whose
    snapshot holds a lock makes it wait until the read is over): the worst moment for a read
    made of several calls."""

    def __init__(self, store: Store, name: str, action: Callable[[], Any]) -> None:
        self.fired = False
        self.failures: list[BaseException] = []
        self.thread: threading.Thread | None = None
        original = getattr(store, name)

        def run() -> None:
            try:
                action()
            except BaseException as exc:  # reported by ``done``
                self.failures.append(exc)

        def wrapped(*args: Any, **kwargs: Any) -> Any:
            if not self.fired:
                self.fired = True
                self.thread = threading.Thread(target=run)
                self.thread.start()
                self.thread.join(0.5)
            return original(*args, **kwargs)

        setattr(store, name, wrapped)

    def done(self) -> None:
        """Wait for the other thread's write; raise what it raised."""
        assert self.fired and self.thread is not None
        self.thread.join(30)
        assert not self.thread.is_alive()
        assert not self.failures, self.failures


def _sqlite_pair(tmp_path: Path) -> tuple[SQLiteStore, SQLiteStore]:
    """A reader and a writer handle on one file. (The writer's short timeout: an erasure
    waits that long for the reader's older state before it reports the scrub pending.)"""
    path = tmp_path / "reads.db"
    return SQLiteStore(path), SQLiteStore(path, timeout=0.5, retries=20)


@pytest.mark.parametrize("kind", ["sqlite", "memory"])
def test_refusals_see_one_state_when_a_forget_commits_between_calls(
    tmp_path: Path, kind: str
) -> None:
    if kind == "sqlite":
        reader, writer = _sqlite_pair(tmp_path)
    else:
        reader = MemoryStore(in_place=False)
        writer = reader.handle()
    graph = IdentityGraph(store=reader)
    _setup(graph, 3)
    other = IdentityGraph(store=writer)
    expected = sorted((r.event_id, r.identifier.value) for r in graph.refusals())
    assert len(expected) == 3

    # ``refusals`` reads the refused links, then their nodes: v1 is forgotten in between.
    hook = _Interleaving(reader, "nodes_by_ref", lambda: forget(other, "v1", timestamp=100))
    got = sorted((r.event_id, r.identifier.value) for r in graph.refusals())
    hook.done()
    assert got == expected  # the state before the forget, whole
    after = sorted((r.event_id, r.identifier.value) for r in graph.refusals())
    assert after == [e for e in expected if e[0] != "r1"]  # (v1 was the anchor of r1)
    reader.close()
    writer.close()


def test_company_sees_one_state_when_a_forget_commits_between_calls(tmp_path: Path) -> None:
    reader, writer = _sqlite_pair(tmp_path)
    graph = IdentityGraph(store=reader)
    _setup(graph, 6)
    other = IdentityGraph(store=writer)
    before = graph.company("c1")
    assert before is not None and len(before.profiles) == 2

    # ``company`` reads the company's members, their nodes, then each member's profile: the
    # members are forgotten after the first call.
    def forget_members() -> None:
        forget(other, "u1", timestamp=100)
        forget(other, Identifier("anonymous_id", "a1"), timestamp=101)

    hook = _Interleaving(reader, "nodes_by_ref", forget_members)
    got = graph.company("c1")
    hook.done()
    assert got == before
    after = graph.company("c1")
    assert after is not None and len(after.profiles) == 1
    reader.close()
    writer.close()


def test_stats_and_explain_see_one_state(tmp_path: Path) -> None:
    reader, writer = _sqlite_pair(tmp_path)
    graph = IdentityGraph(store=reader)
    _setup(graph, 4)
    other = IdentityGraph(store=writer)
    before = graph.stats()

    # ``stats`` reads the counts, then the refused links and every profile.
    hook = _Interleaving(reader, "iter_refused_links", lambda: forget(other, "v2", timestamp=100))
    got = graph.stats()
    hook.done()
    assert got == before
    assert graph.stats().identifiers == before.identifiers - 1
    reader.close()
    writer.close()


def test_a_snapshot_pins_one_committed_state(tmp_path: Path) -> None:
    reader, writer = _sqlite_pair(tmp_path)
    graph = IdentityGraph(store=reader)
    _setup(graph, 2)
    other = IdentityGraph(store=writer)
    with reader.snapshot():
        assert reader.node("user_id", "u0") is not None
        forget(other, "u0", timestamp=100)
        other.identify("u9", "a9", timestamp=101)
        with reader.snapshot():  # re-entrant
            assert reader.node("user_id", "u0") is not None
        assert reader.node("user_id", "u9") is None
        assert graph.resolve(user_id="u0") == "u0"
        assert len(list(graph.profiles())) == 4
    assert reader.node("user_id", "u0") is None
    assert graph.resolve(user_id="u9") == "u9"
    reader.close()
    writer.close()


def test_a_snapshot_on_one_thread_does_not_pin_another_threads_reads(tmp_path: Path) -> None:
    reader, writer = _sqlite_pair(tmp_path)
    _setup(IdentityGraph(store=reader), 1)
    other = IdentityGraph(store=writer)
    seen: list[NodeRow | None] = []
    with reader.snapshot():
        assert reader.node("user_id", "u0") is not None
        forget(other, "u0", timestamp=100)
        # another thread's read waits for the snapshot or reads the newest state, never the
        # pinned one
        thread = threading.Thread(target=lambda: seen.append(reader.node("user_id", "u0")))
        thread.start()
        thread.join(0.2)
    thread.join(10)
    assert seen == [None]
    reader.close()
    writer.close()


# --- many writers with forgets, one reader ----------------------------------------------------


def _write_loop(
    graph: IdentityGraph, seed: int, stop: float, failures: list[BaseException]
) -> None:
    rnd = random.Random(seed)
    i = 0
    try:
        while time.monotonic() < stop:
            i += 1
            u, a = f"u{rnd.randrange(20)}", f"a{rnd.randrange(30)}"
            ts = rnd.randrange(1_000)
            eid = f"w{seed}-{i}"
            what = rnd.random()
            if what < 0.35:
                graph.identify(u, a, traits={"n": i}, timestamp=ts, event_id=eid)
            elif what < 0.5:
                graph.identify(f"v{rnd.randrange(20)}", a, timestamp=ts, event_id=eid)
            elif what < 0.6:
                graph.identify_company(
                    f"c{rnd.randrange(3)}", user_id=u, timestamp=ts, event_id=eid
                )
            elif what < 0.85:
                forget(
                    graph,
                    rnd.choice([u, Identifier("anonymous_id", a)]),
                    timestamp=ts,
                    event_id=eid,
                )
            else:
                graph.alias(u, Identifier("anonymous_id", a), timestamp=ts, event_id=eid)
    except BaseException as exc:  # reported by the test
        failures.append(exc)


def _read_loop(graph: IdentityGraph, stop: float, failures: list[BaseException]) -> int:
    rnd = random.Random(0)
    reads = 0
    try:
        while time.monotonic() < stop:
            u, a = f"u{rnd.randrange(20)}", f"a{rnd.randrange(30)}"
            list(graph.refusals())
            graph.profile(user_id=u)
            graph.profile(anonymous_id=a)
            graph.resolve(user_id=u)
            graph.resolve(anonymous_id=a)
            graph.company(f"c{rnd.randrange(3)}")
            list(graph.companies())
            graph.explain(u, Identifier("anonymous_id", a))
            graph.history(user_id=u)
            graph.stats(top=3)
            reads += 1
    except BaseException as exc:  # reported by the test
        failures.append(exc)
    return reads


def test_reads_under_writers_with_forgets_on_other_handles_never_fail(tmp_path: Path) -> None:
    path = tmp_path / "stress.db"
    setup = IdentityGraph(store=SQLiteStore(path))
    _setup(setup, 20)
    setup.close()
    writers = [IdentityGraph(store=SQLiteStore(path, retries=50)) for _ in range(8)]
    reader = IdentityGraph(store=SQLiteStore(path))
    failures: list[BaseException] = []
    stop = time.monotonic() + STRESS_SECONDS
    threads = [
        threading.Thread(target=_write_loop, args=(g, seed, stop, failures))
        for seed, g in enumerate(writers)
    ]
    for t in threads:
        t.start()
    reads = _read_loop(reader, stop, failures)
    for t in threads:
        t.join(60)
    for g in (*writers, reader):
        g.close()
    assert not failures, failures
    assert reads > 0


def test_reads_under_writers_on_one_memory_store_never_fail() -> None:
    store = MemoryStore(in_place=False)
    setup = IdentityGraph(store=store)
    _setup(setup, 20)
    writers = [IdentityGraph(store=store.handle(in_place=in_place)) for in_place in (True, False)]
    reader = IdentityGraph(store=store.handle())
    failures: list[BaseException] = []
    stop = time.monotonic() + 1.0
    threads = [
        threading.Thread(target=_write_loop, args=(g, seed, stop, failures))
        for seed, g in enumerate(writers)
    ]
    for t in threads:
        t.start()
    reads = _read_loop(reader, stop, failures)
    for t in threads:
        t.join(60)
    assert not failures, failures
    assert reads > 0


# --- the protocol: every built-in store has ``snapshot`` --------------------------------------


@pytest.mark.parametrize("make", [lambda p: SQLiteStore(p / "s.db"), lambda p: MemoryStore()])
def test_built_in_stores_have_snapshot(tmp_path: Path, make: Callable[[Path], Store]) -> None:
    store = make(tmp_path)
    assert isinstance(store, Store)
    IdentityGraph(store=store)
    with store.snapshot(), store.snapshot():
        assert store.counts().events == 0
    store.close()
