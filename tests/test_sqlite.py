"""The SQLite store (``identityres/storage/sqlite.py``): durability across processes, hostile
values, crash safety under SIGKILL, several writer processes, busy handling, the schema
version check, URLs, and agreement with the in-memory graph on random streams.

The protocol promises themselves are checked by the conformance kit (``test_conformance.py``).
``HYPOTHESIS_PROFILE=ci`` (or ``IDENTITYRES_THOROUGH=1``) runs more crash trials and examples.
"""

from __future__ import annotations

import itertools
import os
import pickle
import random
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import identityres
import identityres.storage.sqlite as sqlite_module
from identityres import (
    Alias,
    ConfigurationError,
    Identify,
    IdentifyCompany,
    IdentityGraph,
    InvalidEventError,
    Reset,
    Rules,
    StorageError,
    Track,
)
from identityres import strategies as irst
from identityres.storage import store_from_url
from identityres.storage.sqlite import SCHEMA_VERSION, SQLiteStore
from identityres.testing import ReferenceResolver, snapshot, snapshot_diff

THOROUGH = os.getenv("HYPOTHESIS_PROFILE") in ("ci", "thorough") or bool(
    os.getenv("IDENTITYRES_THOROUGH")
)
CRASH_TRIALS = 20 if THOROUGH else 5
ROOT = Path(identityres.__file__).resolve().parent.parent


# --- helpers ---------------------------------------------------------------------------------


def make_events(seed: int, n: int, *, users: int = 10) -> list[Any]:
    """A reproducible, realistic-enough stream: users on several devices, shared devices,
    resets, aliases (some refused by the default limits), companies, traits, blocked values,
    timestamps out of order, unique event ids."""
    rng = random.Random(seed)
    anons = {u: [f"a{u}-{d}" for d in range(rng.randint(1, 3))] for u in range(users)}
    shared = [f"shared-{i}" for i in range(2)]
    out: list[Any] = []
    for i in range(n):
        ts = 1_000 + i * 10 + (rng.randint(-300, 0) if rng.random() < 0.2 else 0)
        eid = f"s{seed}-e{i:05d}"
        u = rng.randrange(users)
        user = f"u{u}"
        anon = rng.choice(anons[u] + shared) if rng.random() < 0.9 else "null"
        roll = rng.random()
        if roll < 0.35:
            traits = {"plan": rng.choice(["free", "pro"]), "n": i} if rng.random() < 0.5 else None
            once = {"first": i} if rng.random() < 0.2 else None
            email = {"email": f"p{u}@example.com"} if rng.random() < 0.2 else None
            out.append(
                Identify(
                    user_id=user,
                    anonymous_id=anon,
                    identifiers=email,
                    traits=traits,
                    set_once=once,
                    timestamp=ts,
                    event_id=eid,
                )
            )
        elif roll < 0.7:
            which = rng.choice(["anon", "user", "both"])
            out.append(
                Track(
                    event="Viewed",
                    anonymous_id=anon if which != "user" else None,
                    user_id=user if which != "anon" else None,
                    timestamp=ts,
                    event_id=eid,
                )
            )
        elif roll < 0.78:
            other = f"u{rng.randrange(users)}" if rng.random() < 0.5 else rng.choice(anons[u])
            previous = other if other.startswith("u") else ("anonymous_id", other)
            out.append(Alias(user_id=user, previous_id=previous, timestamp=ts, event_id=eid))
        elif roll < 0.86:
            out.append(
                Reset(anonymous_id=rng.choice(shared + anons[u]), timestamp=ts, event_id=eid)
            )
        else:
            company = rng.choice(["acme", "globex", "initech"])
            traits = {"size": rng.randint(1, 500)} if rng.random() < 0.6 else None
            out.append(
                IdentifyCompany(
                    company_id=company, user_id=user, traits=traits, timestamp=ts, event_id=eid
                )
            )
    return out


def memory_graph(batches: list[list[Any]], rules: Rules | None = None) -> IdentityGraph:
    graph = IdentityGraph(rules)
    for batch in batches:
        graph.ingest(batch)
    return graph


def assert_same(expected: Any, actual: Any) -> None:
    want, got = snapshot(expected), snapshot(actual)
    assert want == got, snapshot_diff(want, got)


def counts_of(graph: IdentityGraph) -> dict[str, Any]:
    counts = attrs.asdict(graph.store.counts())
    return {
        k: counts[k]
        for k in ("events", "identifiers", "profiles", "identified_profiles", "blocked")
    }


def chunked(items: list[Any], size: int) -> list[list[Any]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def python_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    return env


def write_script(tmp_path: Path, name: str, body: str) -> Path:
    script = tmp_path / name
    script.write_text(textwrap.dedent(body))
    return script


# Ingests pickled batches into a database file, saying where it is on stdout.
INGEST_SCRIPT = """
    import pickle, sys, time
    from pathlib import Path
    from identityres import IdentityGraph
    from identityres.storage.sqlite import SQLiteStore

    path, batches_file = sys.argv[1], sys.argv[2]
    go = Path(sys.argv[3]) if len(sys.argv) > 3 else None
    batches = pickle.loads(Path(batches_file).read_bytes())
    with IdentityGraph(store=SQLiteStore(path)) as graph:
        print("ready", flush=True)
        while go is not None and not go.exists():
            time.sleep(0.005)
        for i, batch in enumerate(batches):
            print("start", i, flush=True)
            graph.ingest(batch)
            print("done", i, flush=True)
    print("finished", flush=True)
"""


# --- durability: the data survives the process ------------------------------------------------


def test_data_survives_closing_and_a_new_process(tmp_path: Path) -> None:
    events = make_events(1, 300)
    batches = chunked(events, 37)
    path = tmp_path / "ids.db"
    with IdentityGraph(store=f"sqlite:///{path}") as graph:
        for batch in batches:
            graph.ingest(batch)
        written = snapshot(graph)
    expected = memory_graph(batches)
    assert written == snapshot(expected), snapshot_diff(snapshot(expected), written)

    with IdentityGraph(store=f"sqlite:///{path}") as reopened:
        assert_same(expected, reopened)
        assert counts_of(reopened) == counts_of(expected)

    script = write_script(
        tmp_path,
        "read.py",
        """
        import pickle, sys
        from identityres import IdentityGraph
        from identityres.testing import snapshot
        with IdentityGraph(store="sqlite:///" + sys.argv[1]) as graph:
            sys.stdout.buffer.write(pickle.dumps((snapshot(graph), len(graph))))
    """,
    )
    done = subprocess.run(
        [sys.executable, str(script), str(path)],
        capture_output=True,
        env=python_env(),
        timeout=120,
        check=True,
    )
    other, size = pickle.loads(done.stdout)
    assert other == snapshot(expected), snapshot_diff(snapshot(expected), other)
    assert size == len(expected)


def test_a_second_store_on_the_same_file_sees_committed_batches(tmp_path: Path) -> None:
    path = tmp_path / "two.db"
    with IdentityGraph(store=SQLiteStore(path)) as a, IdentityGraph(store=SQLiteStore(path)) as b:
        a.identify("u1", "a1", timestamp=1, event_id="e1")
        assert b.resolve(anonymous_id="a1") == "u1"
        b.track("x", anonymous_id="a1", timestamp=0, event_id="e0")  # late, through b
        assert a.profile(user_id="u1").first_seen.timestamp() == 0  # type: ignore[union-attr]
        a.ingest(
            [Identify(user_id="u1", anonymous_id="a1", timestamp=1, event_id="e1")]
        )  # a duplicate, via a
        assert len(a) == len(b) == 2


# --- hostile values ---------------------------------------------------------------------------

HOSTILE = [
    "'",
    '"',
    "O'Brien",
    "a;b",
    "'); DROP TABLE nodes;--",
    "Robert'); DROP TABLE students;--",
    "' OR '1'='1",
    "x\x00y",
    "\x00",
    "\x00\x00'\x00",
    "%",
    "_",
    "\\",
    "?",
    ":name",
    "$1",
    "SELECT * FROM nodes",
    "用户😀" * 1000,  # 7 KB of UTF-8
    "é" * 10_000,  # 20 KB of UTF-8
    "a\nb\tc",
    "\u202eevil",
]


def test_hostile_values_round_trip(tmp_path: Path) -> None:
    rules = Rules(max_length=20_000)
    events: list[Any] = []
    for i, v in enumerate(HOSTILE):
        events.append(
            Identify(
                user_id=v,
                anonymous_id=f"{v}-anon",
                traits={v: v, "i": i},
                set_once={v: [v]},
                timestamp=i,
                event_id=f"{v}-identify",
            )
        )
        events.append(
            IdentifyCompany(
                company_id=v,
                user_id=v,
                traits={v: {"nested": v}},
                timestamp=i + 0.25,
                event_id=f"{v}-company",
            )
        )
        events.append(Track(event=v, anonymous_id=f"{v}-anon", timestamp=i + 0.5, event_id=v))
    path = tmp_path / "hostile.db"
    with IdentityGraph(rules, store=SQLiteStore(path)) as graph:
        graph.ingest(events)
    expected = memory_graph([events], rules)
    with IdentityGraph(rules, store=SQLiteStore(path)) as graph:
        assert_same(expected, graph)
        for i, v in enumerate(HOSTILE):
            profile = graph.profile(user_id=v)
            assert profile is not None
            assert profile.user_id == v
            assert profile.anonymous_ids == {f"{v}-anon"}
            assert profile.traits == {v: v, "i": i}
            assert profile.company_id == v
            node = graph.store.node("user_id", v)
            assert node is not None and node.value == v and node.first_event_id == f"{v}-identify"
            company = graph.company(v)
            assert company is not None and company.traits == {v: {"nested": v}}
        assert graph.store.node("user_id", "%") is None or "%" in HOSTILE
        assert graph.resolve(user_id="' OR 1=1 --") is None
        assert len(graph) == 2 * len(HOSTILE)
    # the tables are all still there, unchanged in number
    with sqlite3.connect(path) as conn:
        tables = {name for (name,) in conn.execute("SELECT name FROM sqlite_master")}
        assert {"nodes", "links", "events", "traits"} <= tables
        assert conn.execute("SELECT count(*) FROM events").fetchone()[0] == len(events)


def test_streaming_reads_page_through_everything(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sqlite_module, "_PAGE", 3)  # pages far smaller than most components
    events = make_events(11, 300)
    expected = memory_graph([events])
    with IdentityGraph(store=SQLiteStore(tmp_path / "pages.db")) as graph:
        graph.ingest(events)
        assert_same(expected, graph)  # profiles() and refusals() read through the pages
        profiles = list(graph.store.iter_profiles())
        assert len(profiles) == graph.store.counts().profiles == len(list(expected.profiles()))
        assert sorted(n.ref for p in profiles for n in p.nodes) == sorted(
            n.ref for p in profiles for n in graph.store.profile_rows(p.nodes[0].profile).nodes
        )
        refused = [link.event_id for link in graph.store.iter_refused_links()]
        assert len(refused) == len(set(refused)) > 3


# --- crash safety -----------------------------------------------------------------------------


def _present_batches(path: Path, batches: list[list[Any]]) -> int:
    """The number of batches stored, checking that each is wholly there or wholly absent and
    that they are a prefix of the input (the child commits them in order)."""
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        stored = {eid for (eid,) in conn.execute("SELECT event_id FROM events")}
    present = []
    for i, batch in enumerate(batches):
        ids = {e.event_id for e in batch}
        found = len(ids & stored)
        assert found in (0, len(ids)), f"batch {i}: {found} of {len(ids)} events stored"
        present.append(found == len(ids))
    count = sum(present)
    assert present == [True] * count + [False] * (len(batches) - count), present
    assert stored == {e.event_id for batch in batches[:count] for e in batch}
    return count


@pytest.mark.parametrize("trial", range(CRASH_TRIALS))
def test_sigkill_leaves_whole_batches_and_reingest_converges(tmp_path: Path, trial: int) -> None:
    rng = random.Random(trial)
    events = make_events(100 + trial, 400)
    batches = chunked(events, rng.randint(10, 30))
    path = tmp_path / "crash.db"
    batches_file = tmp_path / "batches.pkl"
    batches_file.write_bytes(pickle.dumps(batches))
    script = write_script(tmp_path, "ingest.py", INGEST_SCRIPT)
    child = subprocess.Popen(
        [sys.executable, str(script), str(path), str(batches_file)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=python_env(),
        text=True,
    )
    victim = rng.randrange(len(batches))
    try:
        assert child.stdout is not None
        for line in child.stdout:
            if line.split() == ["start", str(victim)]:
                time.sleep(rng.uniform(0, 0.05))  # inside batch ``victim``, or a bit later
                break
        child.send_signal(signal.SIGKILL)
    finally:
        child.kill()
        child.wait(timeout=60)

    # (a kill that lands after the last commit leaves every batch: that is fine too)
    count = _present_batches(path, batches)
    assert count <= len(batches)
    with IdentityGraph(store=SQLiteStore(path)) as graph:
        assert_same(memory_graph(batches[:count]), graph)  # the state of the first batches
        graph.ingest(events)  # the whole input again
        expected = memory_graph(batches)
        assert_same(expected, graph)
        assert counts_of(graph) == counts_of(expected)


# --- several processes at once ---------------------------------------------------------------


def test_concurrent_processes_end_in_the_reference_state(tmp_path: Path) -> None:
    rng = random.Random(5)
    events = make_events(5, 360, users=8)
    path = tmp_path / "shared.db"
    SQLiteStore(path).close()  # the schema, before the race
    go = tmp_path / "go"
    script = write_script(tmp_path, "ingest.py", INGEST_SCRIPT)
    union: dict[str, Any] = {}
    children = []
    for p in range(4):
        mine = rng.sample(events, int(len(events) * 0.6))  # overlapping, out of order
        union.update((e.event_id, e) for e in mine)
        batches: list[list[Any]] = []
        while mine:
            size = rng.randint(5, 40)
            batches.append(mine[:size])
            mine = mine[size:]
        batches_file = tmp_path / f"batches{p}.pkl"
        batches_file.write_bytes(pickle.dumps(batches))
        children.append(
            subprocess.Popen(
                [sys.executable, str(script), str(path), str(batches_file), str(go)],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=python_env(),
                text=True,
            )
        )
    for child in children:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "ready"
    go.touch()
    for child in children:
        _, err = child.communicate(timeout=300)
        assert child.returncode == 0, err
    reference = ReferenceResolver()
    reference.ingest(list(union.values()))
    with IdentityGraph(store=SQLiteStore(path)) as graph:
        assert_same(reference, graph)
        assert graph.store.counts().events == len(union)


def test_threads_sharing_one_graph(tmp_path: Path) -> None:
    events = make_events(9, 240)
    chunks = chunked(events, 15)
    with IdentityGraph(store=SQLiteStore(tmp_path / "threads.db")) as graph:
        failures: list[BaseException] = []

        def work(mine: list[list[Any]]) -> None:
            try:
                for chunk in mine:
                    graph.ingest(chunk)
                    len(graph)  # a read, outside the graph's lock
            except BaseException as exc:  # pragma: no cover - reported below
                failures.append(exc)

        threads = [threading.Thread(target=work, args=(chunks[i::4],)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not failures
        assert_same(memory_graph(chunks), graph)


# --- busy databases ---------------------------------------------------------------------------


def test_a_write_lock_held_too_long_raises_storage_error(tmp_path: Path) -> None:
    path = tmp_path / "busy.db"
    SQLiteStore(path).close()
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        # opening and reading need no write lock
        graph = IdentityGraph(store=SQLiteStore(path, timeout=0.05, retries=2))
        assert graph.resolve(user_id="u1") is None
        started = time.monotonic()
        with pytest.raises(StorageError, match="locked") as info:
            graph.identify("u1", "a1", timestamp=1, event_id="e1")
        assert time.monotonic() - started < 5
        assert isinstance(info.value.__cause__, sqlite3.OperationalError)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    graph.identify("u1", "a1", timestamp=1, event_id="e1")
    assert graph.resolve(anonymous_id="a1") == "u1"
    graph.close()


def test_a_short_lock_is_waited_out_by_the_retries(tmp_path: Path) -> None:
    path = tmp_path / "busy.db"
    store = SQLiteStore(path, timeout=0.02, retries=30)
    holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN IMMEDIATE")
    release = threading.Timer(0.3, lambda: holder.execute("ROLLBACK"))
    release.start()
    try:
        with IdentityGraph(store=store) as graph:
            graph.identify("u1", "a1", timestamp=1, event_id="e1")
            assert graph.resolve(anonymous_id="a1") == "u1"
    finally:
        release.join()
        holder.close()


def test_driver_errors_become_storage_errors(tmp_path: Path) -> None:
    with pytest.raises(StorageError, match="cannot open") as info:
        SQLiteStore(tmp_path / "no" / "such" / "dir" / "x.db")
    assert isinstance(info.value.__cause__, sqlite3.Error)
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"this is not a database" * 100)
    with pytest.raises(StorageError) as info:
        SQLiteStore(junk)
    assert isinstance(info.value.__cause__, sqlite3.DatabaseError)
    store = SQLiteStore(tmp_path / "closed.db")
    store.close()
    store.close()
    with pytest.raises(StorageError, match="closed"):
        store.counts()
    with pytest.raises(StorageError, match="closed"), store.batch():
        pass


def test_traits_that_are_not_json_fail_the_batch_cleanly(tmp_path: Path) -> None:
    with IdentityGraph(store=SQLiteStore(tmp_path / "json.db")) as graph:
        graph.identify("u0", "a0", timestamp=0, event_id="e0")
        # refused at validation, before the store sees anything: the same on every store
        with pytest.raises(InvalidEventError, match="JSON"):
            graph.ingest(
                [
                    Identify(user_id="u1", anonymous_id="a1", timestamp=1, event_id="e1"),
                    Identify(user_id="u2", traits={"when": object()}, timestamp=2, event_id="e2"),
                ]
            )
        assert graph.resolve(user_id="u1") is None  # the whole batch was rolled back
        assert len(graph) == 2


# --- batched statements -----------------------------------------------------------------------


class _CountingConnection(sqlite3.Connection):
    calls = 0

    def execute(self, *args: Any, **kwargs: Any) -> sqlite3.Cursor:
        type(self).calls += 1
        return super().execute(*args, **kwargs)

    def executemany(self, *args: Any, **kwargs: Any) -> sqlite3.Cursor:
        type(self).calls += 1
        return super().executemany(*args, **kwargs)


def test_a_batch_makes_the_same_number_of_sql_calls_whatever_its_size(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    connect = sqlite3.connect
    monkeypatch.setattr(
        sqlite3, "connect", lambda *a, **k: connect(*a, factory=_CountingConnection, **k)
    )

    def calls_for(n: int, name: str) -> int:
        with IdentityGraph(store=SQLiteStore(tmp_path / name)) as graph:
            # a first batch, so that the measured one loads stored components
            graph.ingest(
                [
                    Identify(
                        user_id=f"u{i}", anonymous_id=f"a{i}", timestamp=i, event_id=f"first{i}"
                    )
                    for i in range(n)
                ]
            )
            batch = [
                Identify(
                    user_id=f"u{i}",
                    anonymous_id=f"b{i}",
                    traits={"k": i},
                    timestamp=n + i,
                    event_id=f"x{i}",
                )
                for i in range(n)
            ]
            batch += [
                Track(event="t", user_id=f"u{i}", timestamp=i - 0.5, event_id=f"late{i}")
                for i in range(n)
            ]
            before = _CountingConnection.calls
            graph.ingest(batch)
            return _CountingConnection.calls - before

    small, large = calls_for(3, "small.db"), calls_for(600, "large.db")
    assert small == large, (small, large)
    assert large < 40


# --- schema versions and URLs -----------------------------------------------------------------


def _set_version(path: Path, version: int) -> None:
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE schema_version SET version = ?", (version,))


def test_a_newer_schema_version_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "v.db"
    with IdentityGraph(store=SQLiteStore(path)) as graph:
        graph.identify("u1", "a1", timestamp=1, event_id="e1")
    _set_version(path, SCHEMA_VERSION + 1)
    newer = SCHEMA_VERSION + 1
    with pytest.raises(
        ConfigurationError, match=rf"schema version {newer}.* up to {SCHEMA_VERSION}.*upgrade"
    ):
        IdentityGraph(store=f"sqlite:///{path}")
    with sqlite3.connect(path) as conn:  # untouched
        assert conn.execute("SELECT version FROM schema_version").fetchall() == [(newer,)]


def test_an_older_schema_version_is_migrated_or_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "v.db"
    with IdentityGraph(store=SQLiteStore(path)) as graph:
        graph.identify("u1", "a1", timestamp=1, event_id="e1")
    _set_version(path, SCHEMA_VERSION - 1)
    with pytest.raises(
        ConfigurationError,
        match=rf"schema version {SCHEMA_VERSION - 1}, older"
        r".*no migration.*ingest the events again",
    ):
        SQLiteStore(path)
    # a migration, when there is one, runs once, in one transaction
    monkeypatch.setitem(
        sqlite_module._MIGRATIONS, SCHEMA_VERSION - 1, ("CREATE TABLE migrated (x INTEGER)",)
    )
    with IdentityGraph(store=SQLiteStore(path)) as graph:
        assert graph.resolve(anonymous_id="a1") == "u1"
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT version FROM schema_version").fetchall() == [(SCHEMA_VERSION,)]
        assert conn.execute("SELECT count(*) FROM migrated").fetchone() == (0,)


def test_foreign_or_damaged_databases_are_refused(tmp_path: Path) -> None:
    foreign = tmp_path / "foreign.db"
    with sqlite3.connect(foreign) as conn:
        conn.execute("CREATE TABLE customers (id INTEGER)")
    with pytest.raises(ConfigurationError, match="not an identityres store"):
        SQLiteStore(foreign)
    damaged = tmp_path / "damaged.db"
    SQLiteStore(damaged).close()
    with sqlite3.connect(damaged) as conn:
        conn.execute("INSERT INTO schema_version VALUES (7)")
    with pytest.raises(ConfigurationError, match="damaged"):
        SQLiteStore(damaged)


def test_memory_url_works_and_is_private() -> None:
    with (
        IdentityGraph(store="sqlite:///:memory:") as a,
        IdentityGraph(store="sqlite:///:memory:") as b,
    ):
        a.identify("u1", "a1", timestamp=1, event_id="e1")
        assert a.resolve(anonymous_id="a1") == "u1"
        assert b.resolve(anonymous_id="a1") is None
        temporary = a.store._file
        assert os.path.exists(temporary)
    assert not os.path.exists(temporary)
    assert not os.path.exists(":memory:")


def test_relative_and_absolute_urls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "rel").mkdir()
    with IdentityGraph(store="sqlite:///rel/ids.db") as graph:
        graph.identify("u1", "a1", timestamp=1, event_id="e1")
    assert (tmp_path / "rel" / "ids.db").exists()
    absolute = tmp_path / "abs.db"
    url = f"sqlite:///{absolute}"
    assert url.startswith("sqlite:////")
    with IdentityGraph(store=url) as graph:
        graph.identify("u1", "a1", timestamp=1, event_id="e1")
    assert absolute.exists()
    store = store_from_url(f"sqlite:///{absolute}?timeout=0.5&retries=1")
    assert (store.timeout, store.retries, store.path) == (0.5, 1, str(absolute))
    store.close()


@pytest.mark.parametrize(
    "url",
    [
        "sqlite://",
        "sqlite:///",
        "sqlite://host/ids.db",
        "sqlite:ids.db",
        "sqlite:///ids.db?timeout=soon",
        "sqlite:///ids.db?retries=-1",
        "sqlite:///ids.db?colour=blue",
        "sqlite:///ids.db?timeout",
        "sqlite:///ids.db#fragment",
        "sqlite:///ids\x00.db",
    ],
)
def test_bad_urls_raise_configuration_errors(
    url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigurationError) as info:
        IdentityGraph(store=url)
    assert repr(url) in str(info.value) or url in str(info.value)
    with pytest.raises(ConfigurationError):
        SQLiteStore.from_url(url)
    assert list(tmp_path.iterdir()) == []  # nothing was created


# --- agreement with the in-memory graph -------------------------------------------------------


@settings(
    max_examples=30 if THOROUGH else 6,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(
    stream=st.one_of(irst.streams(), irst.streams(hostile=True, max_events=30)),
    cuts=st.lists(st.integers(min_value=0, max_value=60), max_size=4),
)
def test_random_streams_agree_with_the_memory_graph(stream: list[Any], cuts: list[int]) -> None:
    bounds = sorted({0, len(stream), *(c for c in cuts if c < len(stream))})
    chunks = [stream[a:b] for a, b in itertools.pairwise(bounds)]
    memory = IdentityGraph()
    with IdentityGraph(store="sqlite:///:memory:") as graph:
        for chunk in chunks:
            memory.ingest(chunk, on_error="skip")
            graph.ingest(chunk, on_error="skip")
        assert_same(memory, graph)
        assert counts_of(graph) == counts_of(memory)
        reference = ReferenceResolver()
        reference.ingest(list({id(e): e for e in stream}.values()))
        assert_same(reference, graph)


def test_operator_merge_split_and_forget_agree_with_the_memory_graph(tmp_path: Path) -> None:
    def run(graph: IdentityGraph) -> Iterator[Any]:
        graph.ingest(make_events(3, 120, users=5))
        graph.merge("u0", "u1", timestamp=5000, event_id="op-merge")
        yield snapshot(graph)
        graph.split(("anonymous_id", "a2-0"), timestamp=5001, event_id="op-split")
        graph.reset("a3-0", timestamp=5002, event_id="op-reset")
        yield snapshot(graph)
        graph.forget("u3", timestamp=5003, event_id="op-forget")
        graph.forget(("anonymous_id", "a3-0"), timestamp=5004, event_id="op-forget-2")
        yield snapshot(graph)
        graph.ingest(make_events(4, 60, users=5))  # the forgotten ones come back: suppressed
        yield snapshot(graph)

    path = tmp_path / "ops.db"
    with IdentityGraph(store=SQLiteStore(path)) as graph:
        for step, (want, got) in enumerate(zip(run(IdentityGraph()), run(graph), strict=True)):
            assert want == got, f"step {step}:\n{snapshot_diff(want, got)}"
        expected = snapshot(graph)
        assert graph.resolve(user_id="u3") is None
        memory = IdentityGraph()
        for _ in run(memory):
            pass
        assert counts_of(graph) == counts_of(memory)
    with IdentityGraph(store=SQLiteStore(path)) as reopened:
        assert snapshot(reopened) == expected
        with sqlite3.connect(path) as conn:
            values = {v for (v,) in conn.execute("SELECT value FROM nodes")}
        assert "u3" not in values


# --- erasure leaves no bytes behind (issue #4: GDPR forget) -------------------------------------


def _file_bytes(db: Path) -> bytes:
    return b"".join(
        p.read_bytes() for p in (db, Path(f"{db}-wal"), Path(f"{db}-journal")) if p.exists()
    )


def test_forget_leaves_no_trace_of_the_value_in_the_database_files(tmp_path: Path) -> None:
    db = tmp_path / "gdpr.db"
    secret_user = "forget-me-user-7f3a9c"
    secret_email = "forget.me.7f3a9c@example.org"
    with IdentityGraph(store=SQLiteStore(db)) as graph:
        # enough other identifiers that the secret shares pages (and index pages) with them
        graph.ingest(
            [
                Identify(
                    user_id=f"user-{i:05d}",
                    anonymous_id=f"anon-{i:05d}",
                    timestamp=i,
                    event_id=f"e{i}",
                )
                for i in range(3000)
            ]
        )
        graph.identify(
            secret_user,
            "anon-00042",
            identifiers={"email": secret_email},
            traits={"plan": "pro"},
            timestamp=5000,
            event_id="s1",
        )
        graph.track("Seen", identifiers={"email": secret_email}, timestamp=5001, event_id="s2")
        raw = _file_bytes(db)
        assert secret_user.encode() in raw and secret_email.encode() in raw  # the test can fail
        graph.forget(secret_user, timestamp=6000, event_id="f1")
        graph.forget(("email", secret_email), timestamp=6001, event_id="f2")
        raw = _file_bytes(db)
        assert secret_user.encode() not in raw
        assert secret_email.encode() not in raw
        assert graph.resolve(user_id=secret_user) is None
        # the rest is intact, and a replay of the old events cannot bring them back
        assert graph.resolve(anonymous_id="anon-00042") == "user-00042"
        graph.track("Seen", identifiers={"email": secret_email}, timestamp=7000, event_id="s3")
        assert graph.resolve(identifier=("email", secret_email)) is None
    raw = _file_bytes(db)
    assert secret_user.encode() not in raw
    assert secret_email.encode() not in raw


def test_save_refuses_a_ref_that_names_no_stored_node(tmp_path: Path) -> None:
    """Refs >= 0 come from the store (storage protocol); a made-up one is a caller's bug:
    StorageError, and the batch leaves nothing behind."""
    from identityres._rows import Changes, NodeRow
    from identityres.errors import StorageError
    from identityres.storage.sqlite import SQLiteStore

    store = SQLiteStore(tmp_path / "ids.db")
    row = NodeRow(999, "user_id", "u1", 1.0, "e1", 1.0, None, None, 999, 999, None, None)
    with pytest.raises(StorageError, match="ref 999"), store.batch() as batch:
        batch.save(Changes(nodes=(row,), events=(("e1", b"f" * 16),)))
    assert store.counts().identifiers == 0
    with store.batch() as batch:
        assert batch.seen(["e1"]) == {}
    store.close()


def test_create_false_refuses_a_missing_file_and_creates_none(tmp_path: Path) -> None:
    from identityres.errors import ConfigurationError
    from identityres.storage.sqlite import SQLiteStore

    missing = tmp_path / "typo.db"
    with pytest.raises(ConfigurationError, match="does not exist"):
        SQLiteStore.from_url(f"sqlite:///{missing}", create=False)
    assert not missing.exists()
    SQLiteStore(missing).close()  # created by default
    SQLiteStore(missing, create=False).close()  # and then opened
