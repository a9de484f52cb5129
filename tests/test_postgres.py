"""The PostgreSQL store (``identityres/storage/postgres.py``) against a real server.

The server's URL comes from ``IDENTITYRES_POSTGRES_URL`` (CI: ``postgresql://postgres@
127.0.0.1:5432/test``). Unset: every test here skips, saying so. Set and the server does not
answer: every test here fails (``identityres.testing.server_url``). Each test works in
namespaces of its own (PostgreSQL schemas named ``t_<random>``), dropped afterwards.

What is checked: the whole conformance kit; URLs and options; schema versions; rules; two
namespaces apart; NUL refused; a batch's round trips independent of its size; eight processes
writing overlapping slices of one stream end in the reference resolver's state; a worker
killed with SIGKILL mid-batch; connections killed by the server; a server restart in the
middle of an ingest (``slow``).
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import random
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from identityres import (
    ConfigurationError,
    Forget,
    Identifier,
    Identify,
    IdentityGraph,
    Merge,
    Rules,
    StorageError,
    Track,
    UnstorableValueError,
)
from identityres.storage import Store, store_from_url
from identityres.testing import ReferenceResolver, StoreConformance, server_url
from tests.test_sqlite import (
    assert_same,
    chunked,
    counts_of,
    make_events,
    memory_graph,
    python_env,
    write_script,
)

psycopg = pytest.importorskip("psycopg", reason="the PostgreSQL tests need identityres[postgres]")
from psycopg import sql  # noqa: E402

from identityres.storage.postgres import SCHEMA_VERSION, PostgresStore  # noqa: E402

VARIABLE = "IDENTITYRES_POSTGRES_URL"


def _reach(url: str) -> None:
    with psycopg.connect(url, connect_timeout=5) as conn:
        conn.execute("SELECT 1")


@pytest.fixture(scope="session")
def postgres_url() -> str:
    return server_url(VARIABLE, check=_reach, what="PostgreSQL")


class Namespaces:
    """Fresh namespace names for one test; every one is dropped when the test ends."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.made: list[str] = []

    def new(self) -> str:
        name = f"t_{secrets.token_hex(6)}"
        self.made.append(name)
        return name

    def drop(self) -> None:
        if not self.made:
            return
        with psycopg.connect(self.url, autocommit=True) as conn:
            for name in self.made:
                conn.execute(
                    sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(name))
                )


@pytest.fixture
def namespaces(postgres_url: str) -> Iterator[Namespaces]:
    made = Namespaces(postgres_url)
    try:
        yield made
    finally:
        made.drop()


def _schemas(url: str) -> set[str]:
    with psycopg.connect(url) as conn:
        return {n for (n,) in conn.execute("SELECT nspname FROM pg_namespace")}


# --- the conformance kit ------------------------------------------------------------------------


class TestPostgresStore(StoreConformance):
    """Each store the kit makes gets a namespace of its own; ``reopen`` is a second store
    object (its own pool) on the same namespace."""

    text_holds_nul = False  # PostgreSQL text cannot hold NUL: refused, and checked
    max_examples = 10 if os.getenv("HYPOTHESIS_PROFILE") != "ci" else 40

    @pytest.fixture(autouse=True)
    def _server(self, namespaces: Namespaces) -> None:
        self.spaces = namespaces
        self.where: dict[Path, str] = {}

    def make_store(self, tmp_path: Path) -> Store:
        name = self.spaces.new()
        self.where[tmp_path] = name
        return PostgresStore(self.spaces.url, namespace=name, pool_size=2)

    def reopen(self, store: Store, tmp_path: Path) -> Store:
        return PostgresStore(self.spaces.url, namespace=self.where[tmp_path], pool_size=2)


def test_the_kit_drops_its_namespaces(postgres_url: str) -> None:
    # (after the conformance tests above: no t_ schema of theirs is left behind)
    spaces = Namespaces(postgres_url)
    name = spaces.new()
    PostgresStore(postgres_url, namespace=name).close()
    assert name in _schemas(postgres_url)
    spaces.drop()
    assert name not in _schemas(postgres_url)


# --- URLs and options -----------------------------------------------------------------------------


@pytest.mark.parametrize("scheme", ["postgresql", "postgres"])
def test_urls_choose_the_store_and_carry_options(
    scheme: str, postgres_url: str, namespaces: Namespaces
) -> None:
    name = namespaces.new()
    base = postgres_url.replace("postgresql://", f"{scheme}://", 1)
    sep = "&" if "?" in base else "?"
    url = (
        f"{base}{sep}namespace={name}&pool_size=3&statement_timeout=5&lock_timeout=2.5&retries=1"
        "&prepare=false"
    )
    store = store_from_url(url, connect_timeout=4)
    try:
        assert isinstance(store, PostgresStore)
        assert (store.namespace, store.pool_size, store.retries) == (name, 3, 1)
        assert store.prepare is False  # (batches then run unprepared statements)
        assert (store.statement_timeout, store.lock_timeout, store.connect_timeout) == (5, 2.5, 4)
        with IdentityGraph(store=store) as graph:
            graph.identify("u1", "a1", timestamp=1, event_id="e1")
        with psycopg.connect(postgres_url) as conn:
            conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(name)))
            timeouts = conn.execute("SELECT count(*) FROM nodes").fetchone()
        assert timeouts == (2,)
        # keyword options win over the URL's
        again = store_from_url(url, pool_size=1)
        assert isinstance(again, PostgresStore) and again.pool_size == 1
        assert again.node("user_id", "u1") is not None
        again.close()
    finally:
        store.close()
    # an object is a store too
    with IdentityGraph(store=PostgresStore(postgres_url, namespace=name)) as graph:
        assert graph.resolve(anonymous_id="a1") == "u1"


@pytest.mark.parametrize(
    ("query", "kwargs", "named"),
    [
        ("pool_size=0", {}, "pool_size=0"),
        ("pool_size=two", {}, "pool_size='two'"),
        ("statement_timeout=-1", {}, "statement_timeout=-1"),
        ("lock_timeout=nan", {}, "lock_timeout=nan"),
        ("retries=-2", {}, "retries=-2"),
        ("", {"connect_timeout": "10"}, "connect_timeout='10'"),
        ("", {"pool_size": True}, "pool_size=True"),
        ("namespace=pg_catalog", {}, "namespace='pg_catalog'"),
        ("namespace=public", {}, "namespace='public'"),
        ("", {"namespace": ""}, "namespace=''"),
        ("", {"namespace": "x" * 64}, "namespace='xxxx"),
        ("", {"colour": "blue"}, "unknown options ['colour']"),
        ("prepare=maybe", {}, "prepare='maybe': must be true or false"),
        ("", {"prepare": "yes"}, "prepare='yes'"),
    ],
)
def test_bad_options_raise_configuration_errors_naming_them(
    query: str, kwargs: dict[str, Any], named: str, postgres_url: str
) -> None:
    url = f"postgresql://kit:s3cret@127.0.0.1:1/none?{query}"
    with pytest.raises(ConfigurationError) as info:
        store_from_url(url, **kwargs)
    assert named in str(info.value)
    assert "s3cret" not in str(info.value)


def test_the_password_is_never_shown(postgres_url: str) -> None:
    with pytest.raises(StorageError) as info:
        PostgresStore("postgresql://kit:s3cret@127.0.0.1:1/none", connect_timeout=0.5)
    assert "s3cret" not in str(info.value)
    assert "postgresql://kit:***@127.0.0.1:1/none" in str(info.value)


def test_a_missing_driver_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "psycopg_pool", None)  # as if it were not installed
    with pytest.raises(ConfigurationError, match=r"pip install 'identityres\[postgres\]'"):
        store_from_url("postgresql://127.0.0.1/test")


# --- schema versions, rules, namespaces ----------------------------------------------------------


def _sql(url: str, namespace: str, statement: str, *params: Any) -> list[Any]:
    with psycopg.connect(url) as conn:
        conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(namespace)))
        cur = conn.execute(statement, params)
        return cur.fetchall() if cur.description else []


def test_schema_versions_newer_refused_older_refused_with_instructions(
    postgres_url: str, namespaces: Namespaces
) -> None:
    name = namespaces.new()
    with IdentityGraph(store=PostgresStore(postgres_url, namespace=name)) as graph:
        graph.identify("u1", "a1", timestamp=1, event_id="e1")
    _sql(postgres_url, name, "UPDATE schema_version SET version = %s", SCHEMA_VERSION + 1)
    with pytest.raises(ConfigurationError, match="newer identityres; upgrade identityres"):
        PostgresStore(postgres_url, namespace=name)
    _sql(postgres_url, name, "UPDATE schema_version SET version = 0")
    with pytest.raises(ConfigurationError, match="no migration from it exists") as info:
        PostgresStore(postgres_url, namespace=name)
    assert "create a new namespace and ingest the events again" in str(info.value)
    _sql(postgres_url, name, "UPDATE schema_version SET version = %s", SCHEMA_VERSION)
    with IdentityGraph(store=PostgresStore(postgres_url, namespace=name)) as graph:
        assert graph.resolve(anonymous_id="a1") == "u1"


def test_a_schema_that_is_not_a_namespace_is_refused(
    postgres_url: str, namespaces: Namespaces
) -> None:
    name = namespaces.new()
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(name)))
        conn.execute(sql.SQL("CREATE TABLE {} (x int)").format(sql.Identifier(name, "mine")))
    with pytest.raises(ConfigurationError, match="not an identityres namespace"):
        PostgresStore(postgres_url, namespace=name)


def test_other_rules_are_refused(postgres_url: str, namespaces: Namespaces) -> None:
    name = namespaces.new()
    with IdentityGraph(store=PostgresStore(postgres_url, namespace=name)) as graph:
        graph.identify("u1", "a1", timestamp=1, event_id="e1")
    with pytest.raises(ConfigurationError, match="limits"):
        IdentityGraph(
            Rules(limits={"user_id": 3}), store=PostgresStore(postgres_url, namespace=name)
        )


def test_two_namespaces_never_see_each_others_identifiers(
    postgres_url: str, namespaces: Namespaces
) -> None:
    first, second = namespaces.new(), namespaces.new()
    with (
        IdentityGraph(store=PostgresStore(postgres_url, namespace=first)) as one,
        IdentityGraph(store=PostgresStore(postgres_url, namespace=second)) as two,
    ):
        one.identify("u1", "a1", traits={"tenant": 1}, timestamp=1, event_id="e1")
        two.identify("u2", "a1", traits={"tenant": 2}, timestamp=1, event_id="e1")
        one.identify_company("c1", user_id="u1", timestamp=2, event_id="c")
        assert one.resolve(anonymous_id="a1") == "u1"
        assert two.resolve(anonymous_id="a1") == "u2"
        assert one.resolve(user_id="u2") is None and two.resolve(user_id="u1") is None
        assert [p.traits for p in two.profiles()] == [{"tenant": 2}]
        assert list(two.companies()) == [] and len(list(one.companies())) == 1
        assert one.stats().identifiers == two.stats().identifiers == 2
        two.forget("u2", timestamp=3, event_id="f")
        assert one.resolve(user_id="u1") == "u1"
    # a hostile namespace name is a name, not SQL
    odd = namespaces.new() + '"; DROP SCHEMA public; --'
    namespaces.made.append(odd)
    with IdentityGraph(store=PostgresStore(postgres_url, namespace=odd)) as graph:
        graph.identify("u'1", 'a"1', timestamp=1, event_id="e'1")
        assert graph.resolve(anonymous_id='a"1') == "u'1"
    assert odd in _schemas(postgres_url) and "public" in _schemas(postgres_url)


def test_hostile_values_round_trip_and_nul_is_refused(
    postgres_url: str, namespaces: Namespaces
) -> None:
    store = PostgresStore(postgres_url, namespace=namespaces.new())
    with IdentityGraph(store=store) as graph:
        values = ["O'Brien", "'; DROP TABLE nodes; --", "\u202eevil", "é" * 390, "😀" * 200, "%_\\"]
        for i, v in enumerate(values):
            graph.identify(v, f"{v}-anon", traits={v: v, "nul": "a\x00b"}, timestamp=i, event_id=v)
        for v in values:
            profile = graph.profile(user_id=v)
            assert profile is not None and profile.traits == {v: v, "nul": "a\x00b"}
        before = counts_of(graph)
        for event in [
            Identify(user_id="u\x00", anonymous_id="fine", timestamp=1, event_id="n1"),
            Identify(user_id="fine", anonymous_id="fine", timestamp=1, event_id="n\x00"),
            Identify(user_id="fine", traits={"k\x00": 1}, timestamp=1, event_id="n3"),
        ]:
            ok = Track(event="x", anonymous_id="other", timestamp=2, event_id="ok")
            with pytest.raises(UnstorableValueError, match=r"PostgreSQL text cannot hold NUL"):
                graph.ingest([ok, event])
        assert counts_of(graph) == before  # nothing of those batches was stored
        assert graph.resolve(anonymous_id="other") is None
        assert graph.resolve(user_id="u\x00") is None
        with pytest.raises(UnstorableValueError) as info:
            graph.identify("u\x00", timestamp=1, event_id="n4")
        assert info.value.field == "user_id" and info.value.value == "u\x00"


# --- round trips ---------------------------------------------------------------------------------


def _trips(trace: Path) -> int:
    """The times the client waited for the server: the Sync and simple-Query messages it
    sent, from libpq's protocol trace."""
    n = 0
    for line in trace.read_text(errors="replace").splitlines():
        fields = line.split("\t")
        if len(fields) >= 3 and fields[0] == "F" and fields[2].split(" ")[0] in ("Sync", "Query"):
            n += 1
    return n


def test_a_batch_makes_the_same_number_of_round_trips_whatever_its_size(
    postgres_url: str, namespaces: Namespaces, tmp_path: Path
) -> None:
    def trips_for(n: int, *, erase: bool) -> int:
        store = PostgresStore(postgres_url, namespace=namespaces.new(), pool_size=1)
        with IdentityGraph(store=store) as graph:
            graph.ingest(
                [
                    Identify(user_id=f"u{i}", anonymous_id=f"a{i}", timestamp=i, event_id=f"f{i}")
                    for i in range(n)
                ]
            )
            batch: list[Any] = [
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
            if erase:
                batch.append(Forget(identifier=("user_id", "u0"), timestamp=3 * n, event_id="gone"))
            trace = tmp_path / f"trace{n}-{erase}"
            pool = store._pool
            assert pool is not None
            conn = pool.getconn()  # (the pool's one connection: the one the batch uses)
            with open(trace, "w") as out:
                conn.pgconn.trace(out.fileno())
                conn.pgconn.set_trace_flags(psycopg.pq.Trace.SUPPRESS_TIMESTAMPS)
                pool.putconn(conn)
                graph.ingest(batch)
                with pool.connection() as again:
                    again.pgconn.untrace()
        return _trips(trace)

    # seen (with BEGIN and the erasure lock), suppressed, load (the row locks, the checks
    # made again under them, the components' rows, node refs), save (every write), COMMIT
    assert trips_for(3, erase=False) == trips_for(800, erase=False) == 5
    # a batch that erases also takes the erasure lock exclusively and reads its
    # identifiers' components again (docs/storage.md, "PostgreSQL"): one more
    assert trips_for(3, erase=True) == trips_for(800, erase=True) == 6


def test_a_batch_probes_the_indexes_for_its_components_however_big_the_tables(
    postgres_url: str, namespaces: Namespaces
) -> None:
    """A batch's ``load`` and ``read_components`` read the components they need through the
    indexes, not by scanning ``nodes`` or ``links``, when the plans are made on big tables
    that were never analyzed (docs/decisions.md, "PostgreSQL at 10^6 identifiers"). With the
    planner's default guess that a component holds 0.5% of a table, a join of the wanted
    components with the table hashed all of it once the tables held a few hundred thousand
    rows, and the server's work per batch grew with the graph. Counted with the
    transaction's own scan counters."""
    name = namespaces.new()
    n = 150_000  # users, each with one anonymous id: 300,000 nodes, 150,000 links

    # identifiers and event ids shaped as the benchmark stream's (their width sets how many
    # rows the planner guesses from the size of the table)
    def user(i: int) -> str:
        return f"user-{i:09d}"

    def anon(i: int) -> str:
        return hashlib.md5(f"a{i}".encode()).hexdigest()

    def eid(i: int) -> str:
        return hashlib.md5(f"e{i}".encode()).hexdigest()

    with IdentityGraph(store=PostgresStore(postgres_url, namespace=name, pool_size=1)) as graph:
        graph.identify(user(0), anon(0), timestamp=0, event_id=eid(0))
    # The rows that ingesting Identify(user(i), anon(i), timestamp=i, event_id=eid(i)) writes
    # (as the first one's above), made by the server in one statement each: a big graph in a
    # few seconds. No ANALYZE (nor VACUUM) runs on them, whatever the server's autovacuum
    # setting.
    fill: list[tuple[str, tuple[Any, ...]]] = [
        ("ALTER TABLE nodes SET (autovacuum_enabled = false)", ()),
        ("ALTER TABLE links SET (autovacuum_enabled = false)", ()),
        (
            "INSERT INTO nodes (ref, kind, value, first_ts, first_event_id, last_ts, "
            "component, profile) SELECT r, CASE r %% 2 WHEN 0 THEN 'user_id' "
            "ELSE 'anonymous_id' END, CASE r %% 2 WHEN 0 THEN 'user-' || lpad((r / 2)::text, "
            "9, '0') ELSE md5('a' || r / 2) END, r / 2, md5('e' || r / 2), r / 2, r - r %% 2, "
            "r - r %% 2 FROM generate_series(2, %s) AS r",
            (2 * n - 1,),
        ),
        (
            "INSERT INTO links (event_id, ts, component, members, etype) SELECT md5('e' || i), "
            "i, 2 * i, ARRAY[2 * i, 2 * i + 1], 'identify' FROM generate_series(1, %s) AS i",
            (n - 1,),
        ),
        # every identifier seen once more, as later events do: the old row versions stay
        # (no VACUUM), and the planner guesses the rows from the table's size
        ("UPDATE nodes SET last_ts = last_ts + 1", ()),
        ("SELECT setval('node_refs', %s)", (2 * n,)),
    ]
    for statement, params in fill:
        _sql(postgres_url, name, statement, *params)
    some = range(0, n, 150)
    wanted = [("user_id", user(i)) for i in some] + [("anonymous_id", "new")]
    count_scans = (
        "SELECT c.relname, pg_stat_get_xact_numscans(c.oid) FROM pg_class AS c "
        "WHERE c.relnamespace = %s::regnamespace AND c.relname IN ('nodes', 'links')"
    )
    # a new store object on the big tables (its own connections and plans)
    store = PostgresStore(postgres_url, namespace=name, pool_size=1)
    try:
        with store.batch() as batch:
            loaded = batch.load(wanted)
            in_load = dict(batch._conn.execute(count_scans, (name,)).fetchall())
        with store.snapshot():
            read = store.read_components(wanted)
            conn = store._thread.conn
            assert conn is not None
            in_read = dict(conn.execute(count_scans, (name,)).fetchall())
        with IdentityGraph(store=store) as graph:  # (the rows are what an ingest writes)
            graph.identify(user(n - 1), "b", timestamp=n, event_id="last")
            assert graph.resolve(anonymous_id=anon(n - 1)) == user(n - 1)
            assert graph.resolve(anonymous_id="b") == user(n - 1)
    finally:
        store.close()
    # each wanted user with its anonymous id, and the link between them
    assert sorted((r.kind, r.value) for r in loaded.nodes) == sorted(
        [("user_id", user(i)) for i in some] + [("anonymous_id", anon(i)) for i in some]
    )
    assert sorted(link.event_id for link in loaded.links) == sorted(eid(i) for i in some)
    assert sorted(read.nodes, key=lambda r: r.ref) == sorted(loaded.nodes, key=lambda r: r.ref)
    assert sorted(read.links, key=lambda r: r.event_id) == sorted(
        loaded.links, key=lambda r: r.event_id
    )
    assert in_load == {"nodes": 0, "links": 0}  # sequential scans in this transaction
    assert in_read == {"nodes": 0, "links": 0}


# --- several processes at once ------------------------------------------------------------------

INGEST_SCRIPT = """
    import pickle, sys, time
    from pathlib import Path
    from identityres import IdentityGraph, Rules
    from identityres.storage.postgres import PostgresStore

    url, namespace, batches_file = sys.argv[1], sys.argv[2], sys.argv[3]
    go = Path(sys.argv[4]) if len(sys.argv) > 4 else None
    rules, batches = pickle.loads(Path(batches_file).read_bytes())
    store = PostgresStore(url, namespace=namespace, pool_size=2)
    with IdentityGraph(rules, store=store) as graph:
        print("ready", flush=True)
        while go is not None and not go.exists():
            time.sleep(0.005)
        for i, batch in enumerate(batches):
            print("start", i, flush=True)
            graph.ingest(batch)
            print("done", i, flush=True)
    print("finished", flush=True)
"""

#: limits tight enough that concurrent batches decide refusals
RULES = Rules(limits={"user_id": 1, "email": 2}, max_profile_size=12)


def _stream(seed: int, n: int) -> list[Any]:
    """A realistic stream (resets, aliases refused by the limits, companies, late events)
    with operator merges and erasures mixed in."""
    rng = random.Random(seed)
    events = make_events(seed, n, users=max(8, n // 60))
    known = sorted(
        {(("user_id", e.user_id)) for e in events if getattr(e, "user_id", None)}
        | {("anonymous_id", e.anonymous_id) for e in events if getattr(e, "anonymous_id", None)}
    )
    extra: list[Any] = []
    for i in range(max(4, n // 100)):
        a, b = rng.sample(known, 2)
        ts = rng.uniform(900, 1_000 + n * 10)
        extra.append(Merge(a=Identifier(*a), b=Identifier(*b), timestamp=ts, event_id=f"m{i}"))
    for i in range(max(2, n // 400)):
        kind, value = rng.choice(known)
        ts = rng.uniform(1_000, 1_000 + n * 10)
        extra.append(Forget(identifier=(kind, value), timestamp=ts, event_id=f"f{i}"))
    for event in extra:
        events.insert(rng.randrange(len(events) + 1), event)
    return events


def _race(
    url: str, namespace: str, tmp_path: Path, events: list[Any], *, workers: int, seed: int
) -> dict[str, Any]:
    """``workers`` processes, each ingesting an overlapping slice of ``events`` (about 40%
    of it, partly shuffled) in batches of 5-60, all at once; returns the union, by id."""
    rng = random.Random(seed)
    PostgresStore(url, namespace=namespace).close()  # the schema, before the race
    go = tmp_path / f"go-{namespace}"
    script = write_script(tmp_path, "pg_ingest.py", INGEST_SCRIPT)
    union: dict[str, Any] = {}
    children = []
    n = len(events)
    for p in range(workers):
        start = rng.randrange(n)
        mine = [events[(start + k) % n] for k in range(int(n * 0.4))]
        for _ in range(len(mine) // 10):  # some deliveries out of order
            i, j = rng.randrange(len(mine)), rng.randrange(len(mine))
            mine[i], mine[j] = mine[j], mine[i]
        union.update((e.event_id, e) for e in mine)
        batches: list[list[Any]] = []
        while mine:
            size = rng.randint(5, 60)
            batches.append(mine[:size])
            mine = mine[size:]
        batches_file = tmp_path / f"batches-{namespace}-{p}.pkl"
        batches_file.write_bytes(pickle.dumps((RULES, batches)))
        children.append(
            subprocess.Popen(
                [sys.executable, str(script), url, namespace, str(batches_file), str(go)],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=python_env(),
                text=True,
            )
        )
    try:
        for child in children:
            assert child.stdout is not None
            assert child.stdout.readline().strip() == "ready"
        go.touch()
        for child in children:
            _, err = child.communicate(timeout=600)
            assert child.returncode == 0, err
    finally:
        for child in children:
            child.kill()
            child.wait()
    return union


def _check_race(url: str, namespaces: Namespaces, tmp_path: Path, *, seed: int, n: int) -> None:
    events = _stream(seed, n)
    namespace = namespaces.new()
    union = _race(url, namespace, tmp_path, events, workers=8, seed=seed)
    reference = ReferenceResolver(RULES)
    reference.ingest(list(union.values()))
    with IdentityGraph(RULES, store=PostgresStore(url, namespace=namespace)) as graph:
        assert_same(reference, graph)
        sequential = IdentityGraph(RULES)
        sequential.ingest(list(union.values()))
        assert counts_of(graph) == counts_of(sequential)


@pytest.mark.parametrize("seed", [1, 2])
def test_eight_processes_on_overlapping_slices_end_in_the_reference_state(
    seed: int, postgres_url: str, namespaces: Namespaces, tmp_path: Path
) -> None:
    _check_race(postgres_url, namespaces, tmp_path, seed=seed, n=3000)


@pytest.mark.slow
@pytest.mark.parametrize("seed", [3, 4, 5])
def test_eight_processes_on_bigger_streams(
    seed: int, postgres_url: str, namespaces: Namespaces, tmp_path: Path
) -> None:
    _check_race(postgres_url, namespaces, tmp_path, seed=seed, n=6000)


# --- faults --------------------------------------------------------------------------------------


def _stored_ids(url: str, namespace: str) -> set[str]:
    return {e for (e,) in _sql(url, namespace, "SELECT event_id FROM events")}


@pytest.mark.parametrize("trial", range(3))
def test_sigkill_mid_batch_leaves_whole_batches_and_reingest_converges(
    trial: int, postgres_url: str, namespaces: Namespaces, tmp_path: Path
) -> None:
    rng = random.Random(trial)
    events = make_events(200 + trial, 400)
    batches = chunked(events, rng.randint(10, 30))
    namespace = namespaces.new()
    batches_file = tmp_path / "batches.pkl"
    batches_file.write_bytes(pickle.dumps((Rules(), batches)))
    script = write_script(tmp_path, "pg_ingest.py", INGEST_SCRIPT)
    child = subprocess.Popen(
        [sys.executable, str(script), postgres_url, namespace, str(batches_file)],
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
                time.sleep(rng.uniform(0, 0.02))  # inside batch ``victim``, or a bit later
                break
        child.send_signal(signal.SIGKILL)
    finally:
        child.kill()
        child.wait(timeout=60)
    stored = _stored_ids(postgres_url, namespace)
    count = 0
    for batch in batches:  # whole batches, a prefix of them
        ids = {e.event_id for e in batch}
        if ids <= stored:
            count += 1
            continue
        assert not ids & stored, "a batch was half-written"
        break
    assert stored == {e.event_id for batch in batches[:count] for e in batch}
    with IdentityGraph(store=PostgresStore(postgres_url, namespace=namespace)) as graph:
        assert_same(memory_graph(batches[:count]), graph)
        graph.ingest(events)
        expected = memory_graph(batches)
        assert_same(expected, graph)
        assert counts_of(graph) == counts_of(expected)


def _terminate(url: str, namespace: str) -> int:
    """``pg_terminate_backend`` on every session of the store objects on ``namespace``."""
    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s",
            (f"identityres:{namespace}"[:63],),
        ).fetchall()
    return len(rows)


def test_connections_the_server_drops_are_replaced_from_the_pool(
    postgres_url: str, namespaces: Namespaces
) -> None:
    namespace = namespaces.new()
    store = PostgresStore(postgres_url, namespace=namespace, pool_size=3)
    events = make_events(7, 300)
    with IdentityGraph(store=store) as graph:
        for i, batch in enumerate(chunked(events, 25)):
            if i % 3 == 1:
                assert _terminate(postgres_url, namespace) >= 1
            graph.ingest(batch)
            assert graph.resolve(user_id="u1") is not None or i == 0
            if i % 3 == 2:
                assert _terminate(postgres_url, namespace) >= 1
                assert graph.stats().events > 0  # a read on a replaced connection
        assert_same(memory_graph([events]), graph)
    # a batch whose connection is killed while it holds its locks is replayed
    store = PostgresStore(postgres_url, namespace=namespace, pool_size=2)
    with IdentityGraph(store=store) as graph:
        pause = threading.Event()

        class Killing:
            def __init__(self, inner: Any) -> None:
                self.inner = inner

            def __getattr__(self, name: str) -> Any:
                return getattr(self.inner, name)

            def load(self, identifiers: Any) -> Any:
                rows = self.inner.load(identifiers)
                if not pause.is_set():
                    pause.set()
                    _terminate(postgres_url, namespace)
                return rows

        original = store.batch

        def batch() -> Any:
            from contextlib import contextmanager

            @contextmanager
            def wrapped() -> Iterator[Any]:
                with original() as inner:
                    yield Killing(inner)

            return wrapped()

        store.batch = batch  # type: ignore[method-assign]
        graph.identify("u1", "late-device", timestamp=5, event_id="after-kill")
        assert pause.is_set()
        assert graph.resolve(anonymous_id="late-device") == "u1"


RESTART = ["pg_ctlcluster", "--skip-systemctl-redirect"]


def _cluster() -> tuple[str, str] | None:
    if shutil.which("pg_ctlcluster") is None or os.geteuid() != 0:
        return None
    versions = sorted(os.listdir("/etc/postgresql")) if os.path.isdir("/etc/postgresql") else []
    return (versions[-1], "main") if versions else None


@pytest.mark.slow
def test_a_server_restart_mid_ingest_fails_clearly_or_retries_and_reingest_converges(
    postgres_url: str, namespaces: Namespaces, tmp_path: Path
) -> None:
    cluster = _cluster()
    if cluster is None:
        pytest.fail("the restart test needs root and pg_ctlcluster (a Debian PostgreSQL cluster)")
    namespace = namespaces.new()
    events = make_events(11, 3000)
    batches = chunked(events, 20)
    outcomes: list[str] = []
    store = PostgresStore(postgres_url, namespace=namespace, retries=2, connect_timeout=2)
    graph = IdentityGraph(store=store)
    stop = threading.Event()

    def ingest() -> None:
        for batch in batches:
            if stop.is_set():
                return
            try:
                graph.ingest(batch)
                outcomes.append("ok")
            except StorageError as exc:
                outcomes.append(f"error: {exc}")
                time.sleep(0.2)

    thread = threading.Thread(target=ingest)
    thread.start()
    try:
        while len(outcomes) < 20:
            time.sleep(0.05)
        subprocess.run([*RESTART, *cluster, "restart"], check=True, timeout=120)
        thread.join(300)
    finally:
        stop.set()
        thread.join(60)
        subprocess.run([*RESTART, *cluster, "start"], check=False, timeout=120)
    errors = [o for o in outcomes if o != "ok"]
    print(f"restart: {len(errors)} of {len(outcomes)} batches raised StorageError")  # (-s shows it)
    for error in errors:  # a clear message, not a bare driver error
        assert "PostgresStore(" in error or "store PostgresStore" in error, error
    assert outcomes.count("ok") > 20
    graph.ingest(events)  # the whole input again
    expected = memory_graph(batches)
    assert_same(expected, graph)
    assert counts_of(graph) == counts_of(expected)
    graph.close()


# --- erasure --------------------------------------------------------------------------------------


def test_forget_removes_the_value_from_every_table(
    postgres_url: str, namespaces: Namespaces
) -> None:
    namespace = namespaces.new()
    store = PostgresStore(postgres_url, namespace=namespace)
    secret = "very-secret-user-7"
    with IdentityGraph(store=store) as graph:
        graph.identify(secret, "anon-1", traits={"plan": "pro"}, timestamp=1, event_id="e1")
        graph.identify_company("c1", user_id=secret, timestamp=2, event_id="e2")
        graph.forget(secret, timestamp=3, event_id="gone")
        store.vacuum()
        graph.identify(secret, "anon-2", timestamp=4, event_id="e4")  # suppressed
        assert graph.resolve(user_id=secret) is None
    with psycopg.connect(postgres_url) as conn:
        tables = [
            t
            for (t,) in conn.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = %s", (namespace,)
            )
        ]
        for table in tables:
            text = conn.execute(
                sql.SQL("SELECT coalesce(string_agg(t::text, ' '), '') FROM {} AS t").format(
                    sql.Identifier(namespace, table)
                )
            ).fetchone()
            assert text is not None and secret not in text[0], table


@pytest.mark.parametrize("first_write", ["identify", "alias"])
def test_an_erasure_racing_the_first_write_of_its_identifier_wins(
    first_write: str, postgres_url: str, namespaces: Namespaces
) -> None:
    """Batch A erases an identifier no batch has stored yet, and pauses after ``load`` (it
    had no row to lock); meanwhile batch B stores that identifier for the first time. The
    result must be one of the two orders: the identifier erased either way."""
    from identityres.testing.conformance._fixtures import _PausingStore

    namespace = namespaces.new()
    store = PostgresStore(postgres_url, namespace=namespace)
    other = PostgresStore(postgres_url, namespace=namespace)
    IdentityGraph(store=store).identify("u-old", "a-old", timestamp=1, event_id="setup")
    pausing = _PausingStore(store, pause=0.5)
    erase = Forget(identifier=("user_id", "u-new"), timestamp=10, event_id="erase")
    write: Any = (
        Identify(user_id="u-new", anonymous_id="a-old", timestamp=5, event_id="write")
        if first_write == "alias"
        else Identify(user_id="u-new", anonymous_id="a-new", timestamp=5, event_id="write")
    )
    failures: list[BaseException] = []

    def run() -> None:
        try:
            IdentityGraph(store=pausing).ingest([erase])
        except BaseException as exc:  # reported below
            failures.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    assert pausing.loaded.wait(10)
    IdentityGraph(store=other).ingest([write])
    thread.join(30)
    assert not failures, failures
    setup = Identify(user_id="u-old", anonymous_id="a-old", timestamp=1, event_id="setup")
    expected = memory_graph([[setup, write, erase]])
    with IdentityGraph(store=store) as graph:
        assert graph.resolve(user_id="u-new") is None
        assert_same(expected, graph)
    other.close()


def _sessions(url: str, namespace: str) -> set[int]:
    with psycopg.connect(url) as conn:
        return {
            pid
            for (pid,) in conn.execute(
                "SELECT pid FROM pg_stat_activity WHERE application_name = %s",
                (f"identityres:{namespace}"[:63],),
            )
        }


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork is POSIX only")
def test_a_forked_child_opens_its_own_connections_and_leaves_the_parents_alone(
    postgres_url: str, namespaces: Namespaces
) -> None:
    namespace = namespaces.new()
    store = PostgresStore(postgres_url, namespace=namespace, pool_size=2)
    graph = IdentityGraph(store=store)
    graph.identify("u1", "a1", timestamp=1, event_id="e1")
    before = _sessions(postgres_url, namespace)
    assert before
    pid = os.fork()
    if pid == 0:  # the child: write through the inherited graph, then leave at once
        code = 1
        try:
            graph.identify("u2", "a2", timestamp=2, event_id="e2")
            code = 0 if graph.resolve(anonymous_id="a1") == "u1" else 3
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert before <= _sessions(postgres_url, namespace)  # the parent's sessions live on
    assert graph.resolve(anonymous_id="a2") == "u2"
    graph.identify("u3", "a3", timestamp=3, event_id="e3")
    assert graph.stats().identifiers == 6
    graph.close()


def test_concurrent_graphs_in_threads_on_one_store(
    postgres_url: str, namespaces: Namespaces
) -> None:
    namespace = namespaces.new()
    store = PostgresStore(postgres_url, namespace=namespace, pool_size=4)
    events = make_events(9, 600)
    slices = [events[i::4] for i in range(4)]
    failures: list[BaseException] = []

    def run(part: list[Any]) -> None:
        try:
            graph = IdentityGraph(store=store)
            for batch in chunked(part, 15):
                graph.ingest(batch)
        except BaseException as exc:  # reported below
            failures.append(exc)

    threads = [threading.Thread(target=run, args=(s,)) for s in slices]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not failures, failures
    reference = ReferenceResolver()
    reference.ingest(events)
    with IdentityGraph(store=store) as graph:
        assert_same(reference, graph)


# --- the benchmark still runs ----------------------------------------------------------------


def test_the_throughput_benchmark_runs(postgres_url: str, tmp_path: Path) -> None:
    script = Path(__file__).resolve().parent.parent / "benchmarks" / "postgres_throughput.py"
    proc = subprocess.run(
        [
            *(sys.executable, str(script), "--identifiers", "600", "--batch", "100"),
            *("--repeats", "1", "--workers", "1,2", "--url", postgres_url),
            *("--json", str(tmp_path / "out.json")),
        ],
        capture_output=True,
        text=True,
        env=python_env(),
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "postgres 2 workers / 1:" in proc.stdout
    assert "postgres 1 worker / sqlite 1 writer:" in proc.stdout
    data = json.loads((tmp_path / "out.json").read_text())
    assert set(data["best"]) == {"memory", "postgres/1", "postgres/2", "sqlite/1", "sqlite/2"}
    # one schema per PostgreSQL run, each dropped after it (only the run's own: another run
    # may share the server)
    made = data["namespaces"]
    assert len(made) == 2 and all(n.startswith("bench_") for n in made)
    assert not set(made) & _schemas(postgres_url)
