"""Services fork (gunicorn ``--preload``, Celery prefork, ``multiprocessing`` with the fork
start method): a graph or store used in a forked child works with its own connections and
locks, or raises a clear ``StorageError`` — it never hangs and never damages the database of
the parent or of the siblings (docs/storage.md, "Fork").

Every case forks for real (``os.fork`` or the ``"fork"`` multiprocessing context); children
report through a pipe and leave with ``os._exit``; the parent kills a child that overruns its
time, and says so.
"""

from __future__ import annotations

import contextlib
import gc
import multiprocessing
import os
import signal
import sqlite3
import threading
import time
from collections.abc import Callable, Collection, Iterator
from pathlib import Path

import pytest

from identityres import IdentityGraph, StorageError
from identityres.storage import Batch, ComponentRows, MemoryStore
from identityres.storage.sqlite import SQLiteStore
from identityres.testing.conformance._fixtures import _ProxyBatch, _ProxyStore

pytestmark = [
    pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork"),
    # (Python 3.12 warns when a process with threads forks: that is what is tested here)
    pytest.mark.filterwarnings("ignore:.*fork.*:DeprecationWarning"),
]

#: seconds a child may take before it counts as hung
CHILD_TIMEOUT = 60.0


# --- children ---------------------------------------------------------------------------------


class Child:
    """A forked child running ``body``; ``result()`` is ``(exit code, what it said)``, the exit
    code ``None`` when it overran its time (then it is killed)."""

    def __init__(self, body: Callable[[], str]) -> None:
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - runs in the child
            os.close(read)
            code, said = 0, "ok"
            try:
                said = body()
            except BaseException as exc:
                code, said = 1, f"{type(exc).__name__}: {exc}"
            finally:
                with contextlib.suppress(BaseException):
                    os.write(write, said.encode("utf-8", "replace")[:8000])
                os._exit(code)
        os.close(write)
        self.pid = pid
        self._read = read

    def result(self, timeout: float = CHILD_TIMEOUT) -> tuple[int | None, str]:
        deadline = time.monotonic() + timeout
        status = None
        while time.monotonic() < deadline:
            done, status = os.waitpid(self.pid, os.WNOHANG)
            if done:
                break
            time.sleep(0.01)
        else:
            os.kill(self.pid, signal.SIGKILL)
            os.waitpid(self.pid, 0)
            os.close(self._read)
            return None, "hung: killed after the timeout"
        chunks = []
        while chunk := os.read(self._read, 8192):
            chunks.append(chunk)
        os.close(self._read)
        assert status is not None
        return os.waitstatus_to_exitcode(status), b"".join(chunks).decode()


@contextlib.contextmanager
def gc_disabled() -> Iterator[None]:
    """Keeps garbage (a graph and its store: they hold cycles) uncollected until a child has
    been forked with it."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def write_events(path: Path, tag: str, n: int, *, collect_at: int = -1) -> str:
    """``n`` identifies through a store of one's own; ``gc.collect()`` before the event
    ``collect_at``."""
    with IdentityGraph(store=SQLiteStore(path, retries=100)) as graph:
        for i in range(n):
            if i == collect_at:
                gc.collect()
            graph.identify(f"{tag}-u{i}", f"{tag}-a{i}", timestamp=i, event_id=f"{tag}-{i}")
            assert graph.resolve(anonymous_id=f"{tag}-a{i}") == f"{tag}-u{i}"
    return "ok"


def check_file(path: Path) -> tuple[str, int]:
    conn = sqlite3.connect(path)
    try:
        (ok,) = conn.execute("PRAGMA integrity_check").fetchone()
        (events,) = conn.execute("SELECT count(*) FROM events").fetchone()
    finally:
        conn.close()
    return ok, events


# --- (1) a store dropped in the parent, collected in the children -----------------------------


def test_stores_dropped_before_a_fork_never_break_the_parent_or_the_siblings(
    tmp_path: Path,
) -> None:
    """The parent opens stores, drops them uncollected and forks; each child writes through
    its own store, collecting the garbage it inherited midway, while the parent writes and
    closes everything it has. Every write of every process must be in the file.

    Before the at-fork hook, about one commit in thirteen was lost here: the children's own
    connections shared SQLite's per-process lock state with the inherited ones, so they took
    no lock the other processes could see, and the last process to close deleted the WAL
    under them. (Keeping the inherited connections open forever loses nearly half.)"""
    path = tmp_path / "forked.db"
    children, writes = 4, 150
    with gc_disabled():
        started: list[Child] = []
        for c in range(children):
            graph = IdentityGraph(store=SQLiteStore(path))
            graph.identify(f"setup{c}", f"s{c}", timestamp=1, event_id=f"setup{c}")
            list(graph.refusals())
            del graph  # (a cycle: collected later, inside the children)
            started.append(
                Child(lambda c=c: write_events(path, f"c{c}", writes, collect_at=writes // 3))
            )
    gc.collect()  # the parent's dropped stores, closed in the parent
    write_events(path, "p", writes // 3)  # the parent writes, then has nothing open
    results = [child.result() for child in started]
    assert results == [(0, "ok")] * children
    got = check_file(path)
    assert got == ("ok", children + writes // 3 + children * writes), got


def test_a_child_may_use_an_idle_graph_it_inherited(tmp_path: Path) -> None:
    path = tmp_path / "inherited.db"
    graph = IdentityGraph(store=SQLiteStore(path))
    graph.identify("u0", "a0", timestamp=1, event_id="e0")

    def child(c: int) -> str:
        for i in range(40):
            graph.identify(f"c{c}-u{i}", f"c{c}-a{i}", timestamp=i, event_id=f"c{c}-{i}")
        assert graph.resolve(anonymous_id="a0") == "u0"
        assert graph.resolve(anonymous_id=f"c{c}-a39") == f"c{c}-u39"
        graph.close()  # closes what the child opened, nothing it inherited
        return "ok"

    started = [Child(lambda c=c: child(c)) for c in range(3)]
    for i in range(40):
        graph.identify(f"p-u{i}", f"p-a{i}", timestamp=i, event_id=f"p-{i}")
    assert [child.result() for child in started] == [(0, "ok")] * 3
    assert graph.resolve(anonymous_id="c2-a0") == "c2-u0"
    graph.close()
    assert check_file(path) == ("ok", 1 + 4 * 40)


def _mp_child(path: str, tag: str, conn: multiprocessing.connection.Connection) -> None:
    try:
        gc.collect()
        conn.send(write_events(Path(path), tag, 50))
    except BaseException as exc:  # reported to the parent
        conn.send(f"{type(exc).__name__}: {exc}")


def test_multiprocessing_fork_children_with_inherited_garbage(tmp_path: Path) -> None:
    path = tmp_path / "mp.db"
    context = multiprocessing.get_context("fork")
    with gc_disabled():
        graph = IdentityGraph(store=SQLiteStore(path))
        graph.identify("u0", "a0", timestamp=1, event_id="e0")
        del graph
        pipes, processes = [], []
        for c in range(3):
            mine, theirs = context.Pipe()
            process = context.Process(target=_mp_child, args=(str(path), f"m{c}", theirs))
            process.start()
            pipes.append(mine)
            processes.append(process)
    gc.collect()
    said = []
    for mine, process in zip(pipes, processes, strict=True):
        said.append(mine.recv() if mine.poll(CHILD_TIMEOUT) else "hung")
        process.join(CHILD_TIMEOUT)
        if process.is_alive():  # pragma: no cover - a failure
            process.kill()
    assert said == ["ok"] * 3
    assert [p.exitcode for p in processes] == [0] * 3
    assert check_file(path) == ("ok", 1 + 3 * 50)


def test_a_private_sqlite_database_stays_with_its_process(tmp_path: Path) -> None:
    graph = IdentityGraph(store="sqlite:///:memory:")
    graph.identify("u0", "a0", timestamp=1, event_id="e0")

    def child() -> str:
        try:
            graph.resolve(user_id="u0")
        except StorageError as exc:
            graph.close()
            return "refused" if "fork" in str(exc) else f"unclear: {exc}"
        return "read"

    assert Child(child).result() == (0, "refused")
    assert graph.resolve(anonymous_id="a0") == "u0"  # the child removed nothing
    graph.close()


# --- (2) a thread inside a write when the process forks ---------------------------------------


class _SlowBatch(_ProxyBatch):
    def __init__(self, batch: Batch, loaded: threading.Event, release: threading.Event) -> None:
        super().__init__(batch)
        self._loaded, self._release = loaded, release

    def load(self, identifiers: Collection[tuple[str, str]]) -> ComponentRows:
        rows = self._batch.load(identifiers)
        if not self._loaded.is_set():
            self._loaded.set()
            self._release.wait(30)
        return rows


class _SlowStore(_ProxyStore):
    """The first batch waits after ``load`` until released: the store's batch is open."""

    def __init__(self, store: SQLiteStore | MemoryStore) -> None:
        super().__init__(store)
        self.loaded = threading.Event()
        self.release = threading.Event()

    def _wrap(self, batch: Batch) -> Batch:
        return _SlowBatch(batch, self.loaded, self.release)


def _use(graph: IdentityGraph, tag: str) -> str:
    """Write and read through ``graph``; a clear ``StorageError`` naming the fork is an
    allowed answer."""
    try:
        graph.identify(f"{tag}-u", f"{tag}-a", timestamp=5, event_id=f"{tag}-e")
        assert graph.resolve(anonymous_id=f"{tag}-a") == f"{tag}-u"
        assert graph.profile(user_id="u0") is not None
        list(graph.refusals())
    except StorageError as exc:
        return "refused" if "fork" in str(exc) else f"unclear: {exc}"
    return "wrote"


def _fork_during(graph: IdentityGraph, hold: Callable[[threading.Event], None]) -> str:
    """Fork while a parent thread runs ``hold`` (which sets the event once it holds what it
    holds); the child uses the inherited graph and must not hang."""
    holding = threading.Event()
    thread = threading.Thread(target=hold, args=(holding,))
    thread.start()
    assert holding.wait(10)
    try:
        code, said = Child(lambda: _use(graph, "child")).result()
    finally:
        thread.join(30)
    assert code == 0, said
    return said


def _holding(
    lock: Callable[[], contextlib.AbstractContextManager[object]], seconds: float
) -> Callable[[threading.Event], None]:
    """A ``hold`` for :func:`_fork_during`: holds ``lock()`` for ``seconds``."""

    def hold(holding: threading.Event) -> None:
        with lock():
            holding.set()
            time.sleep(seconds)

    return hold


def test_a_child_never_hangs_on_a_graph_lock_a_parent_thread_held(tmp_path: Path) -> None:
    path = tmp_path / "held.db"
    graph = IdentityGraph(store=SQLiteStore(path))
    graph.identify("u0", "a0", timestamp=1, event_id="e0")
    said = _fork_during(graph, _holding(lambda: graph._lock, 1.0))
    # only the graph's own lock was held: the store's connections were idle
    assert said == "wrote"
    assert graph.resolve(anonymous_id="child-a") == "child-u"
    graph.close()
    assert check_file(path) == ("ok", 2)


def test_a_child_never_hangs_on_a_batch_a_parent_thread_had_open(tmp_path: Path) -> None:
    path = tmp_path / "batch.db"
    store = SQLiteStore(path)
    IdentityGraph(store=store).identify("u0", "a0", timestamp=1, event_id="e0")
    slow = _SlowStore(store)
    graph = IdentityGraph(store=slow)

    def hold(holding: threading.Event) -> None:
        threading.Thread(target=lambda: (slow.loaded.wait(10), holding.set())).start()
        graph.identify("u1", "a1", timestamp=2, event_id="e1")  # waits inside its batch

    holding = threading.Event()
    thread = threading.Thread(target=hold, args=(holding,))
    thread.start()
    assert holding.wait(10)
    try:
        code, said = Child(lambda: _use(graph, "child")).result()
        # a sibling forked meanwhile opens the file anew: it must not hang or damage either
        code2, said2 = Child(lambda: write_events(path, "sibling", 20)).result()
    finally:
        slow.release.set()
        thread.join(30)
    # the batch's connection cannot be closed in the child (that would roll back the
    # parent's transaction in the shared WAL index), nor kept beside new ones: the file is
    # refused in that child, saying why
    assert (code, said) == (0, "refused")
    assert code2 == 1 and "forked while another thread was using" in said2, said2
    graph.identify("u2", "a2", timestamp=3, event_id="e2")  # the parent goes on
    graph.close()
    store.close()
    ok, events = check_file(path)
    assert (ok, events) == ("ok", 3)


def test_a_child_never_hangs_on_a_snapshot_a_parent_thread_had_open(tmp_path: Path) -> None:
    path = tmp_path / "snapshot.db"
    store = SQLiteStore(path)
    graph = IdentityGraph(store=store)
    graph.identify("u0", "a0", timestamp=1, event_id="e0")
    # the reader connection is inside a read transaction: as with a batch, refused
    assert _fork_during(graph, _holding(store.snapshot, 1.0)) == "refused"
    graph.identify("u1", "a1", timestamp=2, event_id="e1")  # the parent goes on
    assert graph.resolve(anonymous_id="a1") == "u1"
    graph.close()
    assert check_file(path) == ("ok", 2)


@pytest.mark.parametrize("in_place", [True, False])
def test_a_child_never_hangs_on_a_memory_store_a_parent_thread_was_using(in_place: bool) -> None:
    store = MemoryStore(in_place=in_place)
    graph = IdentityGraph(store=store)
    graph.identify("u0", "a0", timestamp=1, event_id="e0")
    said = _fork_during(graph, _holding(lambda: store.lock, 1.0))
    # the state may be half-written in the child: it says so rather than use it
    assert said == "refused"
    # a memory store nobody was using at the fork works in the child
    assert Child(lambda: _use(graph, "child")).result() == (0, "wrote")
    assert graph.resolve(anonymous_id="child-a") is None  # (the child's own copy)
