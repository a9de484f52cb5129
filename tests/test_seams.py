"""The seams other code plugs into: the public read API, ``Profile.id``, stores that remember
their rules, store options, and one process-independent fingerprint for every writer."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import types
from pathlib import Path

import pytest

import identityres as ir
from identityres._events import RecordBuilder, legacy_fingerprint
from identityres.errors import ConfigurationError
from identityres.storage import MemoryStore, store_from_url
from identityres.storage.sqlite import SQLiteStore


@pytest.fixture(params=["memory", "batches", "sqlite"])
def graph(request: pytest.FixtureRequest, tmp_path: Path) -> ir.IdentityGraph:
    if request.param == "memory":
        return ir.IdentityGraph()
    if request.param == "batches":
        return ir.IdentityGraph(store=MemoryStore(in_place=False))
    return ir.IdentityGraph(store=f"sqlite:///{tmp_path / 'ids.db'}")


def _two_1001s(graph: ir.IdentityGraph) -> None:
    graph.track("Viewed", anonymous_id="1001", timestamp=1)
    graph.identify("1001", anonymous_id="a-x", timestamp=2)


# --- Profile.id -----------------------------------------------------------------------------


def test_profile_id_tells_apart_profiles_that_resolve_to_the_same_value(
    graph: ir.IdentityGraph,
) -> None:
    _two_1001s(graph)
    # resolve() keeps the canonical value (Moesif's meaning): both say "1001"
    assert graph.resolve(anonymous_id="1001") == graph.resolve(user_id="1001") == "1001"
    anonymous = graph.profile(anonymous_id="1001")
    identified = graph.profile(user_id="1001")
    assert anonymous is not None and identified is not None
    assert anonymous.id == "anonymous_id:1001"
    assert identified.id == "user_id:1001"
    assert len({p.id for p in graph.profiles()}) == 2


# --- the read API ---------------------------------------------------------------------------


def test_identity_map_gives_every_identifier_its_profile_id(graph: ir.IdentityGraph) -> None:
    _two_1001s(graph)
    graph.identify("u2", anonymous_id="a-y", identifiers={"email": "b@x.io"}, timestamp=3)
    stream = graph.identity_map()
    assert isinstance(stream, types.GeneratorType)  # streamed, not built
    mapping = dict(stream)
    assert mapping == {
        ir.Identifier("anonymous_id", "1001"): "anonymous_id:1001",
        ir.Identifier("user_id", "1001"): "user_id:1001",
        ir.Identifier("anonymous_id", "a-x"): "user_id:1001",
        ir.Identifier("user_id", "u2"): "user_id:u2",
        ir.Identifier("anonymous_id", "a-y"): "user_id:u2",
        ir.Identifier("email", "b@x.io"): "user_id:u2",
    }
    # the same answer as building every profile
    built = {i: p.id for p in graph.profiles() for i in p.all_identifiers()}
    assert built == mapping


def test_profiles_are_streamed(graph: ir.IdentityGraph) -> None:
    _two_1001s(graph)
    stream = graph.profiles()
    assert isinstance(stream, types.GeneratorType)
    assert sorted(p.id for p in stream) == ["anonymous_id:1001", "user_id:1001"]


def test_components_and_identifier_are_public(graph: ir.IdentityGraph) -> None:
    graph.identify("u1", anonymous_id="a1", timestamp=1)
    graph.identify("u2", anonymous_id="a1", timestamp=2)  # refused: a1 is u1's
    assert graph.identifier(user_id="  u1 ") == ir.Identifier("user_id", "u1")
    rows = graph.components([graph.identifier(anonymous_id="a1"), ("email", "nobody")])
    assert sorted(n.value for n in rows.nodes) == ["a1", "u1", "u2"]
    assert sorted(link.event_id for link in rows.links) == sorted(
        e.event_id for e in graph.history(user_id="u1") if e.event_id
    )
    with pytest.raises(ir.errors.ValidationError):
        graph.identifier()


def test_stats_is_the_one_statistics_call(graph: ir.IdentityGraph) -> None:
    graph.identify("u1", anonymous_id="a1", identifiers={"email": "a@x.io"}, timestamp=1)
    graph.identify("u2", anonymous_id="a1", timestamp=2)
    graph.track("Viewed", anonymous_id="a9", timestamp=3)
    stats = graph.stats(top=1)
    assert (stats.profiles, stats.identifiers, stats.joins) == (3, 5, 2)
    assert stats.sizes == {1: 2, 3: 1}
    assert stats.largest == (("u1", 3),)
    assert stats.refusals == {"limit_exceeded": 1}
    assert stats.refusals_by_kind == {"user_id": 1}
    assert graph.profile_sizes() == stats.sizes
    assert graph.stats(top=0).largest == ()
    for bad in (-1, 1.5, True, "3"):
        with pytest.raises(ConfigurationError, match="top="):
            graph.stats(top=bad)  # type: ignore[arg-type]


# --- a store remembers its rules --------------------------------------------------------------


def test_sqlite_refuses_a_graph_with_other_rules(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'ids.db'}"
    with ir.IdentityGraph(ir.Rules(limits={"email": 1}), store=url) as g:
        g.identify("u1", anonymous_id="a1", timestamp=1)
    with pytest.raises(ConfigurationError) as info:
        ir.IdentityGraph(store=url)
    message = str(info.value)
    assert "other rules" in message and "limits" in message
    assert "'email': 1" in message and "'email': None" in message
    # the same rules open it
    with ir.IdentityGraph(ir.Rules(limits={"email": 1}), store=url) as g:
        assert g.resolve(anonymous_id="a1") == "u1"


def test_sqlite_records_the_rules_with_the_first_batch(tmp_path: Path) -> None:
    """Opening needs no write lock: the rules are written by the first batch, and a second
    handle opened before it with other rules is refused when it writes."""
    path = tmp_path / "ids.db"
    first = ir.IdentityGraph(ir.Rules(max_profile_size=5), store=SQLiteStore(path))
    second = ir.IdentityGraph(store=SQLiteStore(path))  # nothing recorded yet: accepted
    first.identify("u1", anonymous_id="a1", timestamp=1)
    with pytest.raises(ConfigurationError, match="max_profile_size"):
        second.identify("u2", anonymous_id="a2", timestamp=2)
    assert second.resolve(anonymous_id="a2") is None  # nothing of the refused batch
    first.close()
    second.close()


def test_a_file_without_recorded_rules_adopts_the_first_writers(tmp_path: Path) -> None:
    """A file written before stores recorded rules (0.1) opens with any rules and keeps
    those of the first graph that writes it."""
    path = tmp_path / "ids.db"
    with ir.IdentityGraph(store=SQLiteStore(path)) as g:
        g.identify("u1", anonymous_id="a1", timestamp=1)
    conn = sqlite3.connect(path)
    with conn:
        conn.execute("DELETE FROM meta WHERE name IN ('rules', 'rules_digest')")
    conn.close()
    rules = ir.Rules(kinds=("email",))
    with ir.IdentityGraph(rules, store=SQLiteStore(path)) as g:
        g.identify("u2", anonymous_id="a2", timestamp=2)
    with pytest.raises(ConfigurationError, match="priority"):
        ir.IdentityGraph(store=SQLiteStore(path))


def test_a_memory_store_refuses_a_second_graph_with_other_rules() -> None:
    store = MemoryStore()
    ir.IdentityGraph(store=store).identify("u1", anonymous_id="a1", timestamp=1)
    with pytest.raises(ConfigurationError, match="limits"):
        ir.IdentityGraph(ir.Rules(limits={"user_id": None}), store=store)
    same = ir.IdentityGraph(store=store.handle())
    assert same.resolve(anonymous_id="a1") == "u1"


def test_normalizers_are_part_of_the_recorded_rules(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'ids.db'}"
    with ir.IdentityGraph(ir.Rules(normalizers={"email": ir.normalize_email}), store=url) as g:
        g.identify("u1", identifiers={"email": "A@X.IO"}, timestamp=1)
    with pytest.raises(ConfigurationError, match="normalize_email"):
        ir.IdentityGraph(store=url)


# --- store options ----------------------------------------------------------------------------


def test_store_from_url_takes_options(tmp_path: Path) -> None:
    store = store_from_url(f"sqlite:///{tmp_path / 'a.db'}?timeout=3", timeout=7, retries=1)
    assert isinstance(store, SQLiteStore) and (store.timeout, store.retries) == (7.0, 1)
    store.close()
    with pytest.raises(ConfigurationError, match="does not exist"):
        store_from_url(f"sqlite:///{tmp_path / 'missing.db'}", create=False)
    with pytest.raises(ConfigurationError, match="unknown options"):
        store_from_url(f"sqlite:///{tmp_path / 'a.db'}", pool_size=3)
    memory = store_from_url("memory://", in_place=False)
    assert isinstance(memory, MemoryStore) and not memory.in_place
    with pytest.raises(ConfigurationError, match="in_place"):
        store_from_url("memory://", in_place="no")


# --- one fingerprint --------------------------------------------------------------------------


def _fingerprint_in_a_new_process(seed: str) -> str:
    code = (
        "import identityres as ir\n"
        "from identityres._events import RecordBuilder\n"
        "b = RecordBuilder(ir.Rules().compiled, lambda: 0)\n"
        "props = {'b': [1, 'é'], 'a': None}\n"
        "r = b.track('Viewed', 'a1', 'u1', {'email': 'x@y.z'}, props, 5, 'e1')\n"
        "print(r.fingerprint.hex())\n"
    )
    env = {**os.environ, "PYTHONHASHSEED": seed}
    done = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True, env=env
    )
    return done.stdout.strip()


def test_the_fingerprint_is_the_same_in_every_process() -> None:
    assert _fingerprint_in_a_new_process("1") == _fingerprint_in_a_new_process("2")


def test_a_redelivery_of_an_event_stored_with_the_old_fingerprint_is_a_duplicate(
    tmp_path: Path,
) -> None:
    """Stores written by 0.1 hold the old digest: a redelivery is still a duplicate, and
    other content under the id is still a conflict."""
    path = tmp_path / "ids.db"
    event = ir.Identify(user_id="u1", anonymous_id="a1", timestamp=1, event_id="e1")
    with ir.IdentityGraph(store=SQLiteStore(path)) as g:
        g.ingest([event])
        rec = RecordBuilder(ir.Rules().compiled, lambda: 0).from_object(event)
    old = legacy_fingerprint(rec.content, ir.Rules().compiled.kind_names)
    assert old != rec.fingerprint
    conn = sqlite3.connect(path)
    with conn:
        conn.execute("UPDATE events SET fingerprint = ? WHERE event_id = 'e1'", (old,))
    conn.close()
    with ir.IdentityGraph(store=SQLiteStore(path)) as g:
        assert g.ingest([event]).duplicates == 1
        other = ir.Identify(user_id="u9", anonymous_id="a9", timestamp=1, event_id="e1")
        with pytest.raises(ir.errors.EventIdConflictError):
            g.ingest([other])


# --- review findings: one store object, two graphs; errors located like validation ones ------


def test_one_sqlite_store_object_gives_its_second_graph_the_first_ones_rules(
    tmp_path: Path,
) -> None:
    store = SQLiteStore(tmp_path / "ids.db")
    first = ir.IdentityGraph(ir.Rules(max_profile_size=5), store=store)
    with pytest.raises(ConfigurationError, match="max_profile_size"):
        ir.IdentityGraph(store=store)  # nothing recorded yet, but the first graph's rules wait
    first.identify("u1", anonymous_id="a1", timestamp=1)
    store.close()


def test_a_memory_store_tells_apart_two_normalizers_of_one_name() -> None:
    store = MemoryStore()
    ir.IdentityGraph(ir.Rules(normalizers={"email": lambda v: v.lower()}), store=store)
    with pytest.raises(ConfigurationError, match="normalizer functions"):
        ir.IdentityGraph(ir.Rules(normalizers={"email": lambda v: v.upper()}), store=store)


def test_a_graph_closes_the_store_it_opened_when_the_rules_differ(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"sqlite:///{tmp_path / 'ids.db'}"
    with ir.IdentityGraph(ir.Rules(limits={"email": 1}), store=url) as g:
        g.identify("u1", anonymous_id="a1", timestamp=1)
    closed: list[SQLiteStore] = []
    close = SQLiteStore.close

    def recording_close(self: SQLiteStore) -> None:
        closed.append(self)
        close(self)

    monkeypatch.setattr(SQLiteStore, "close", recording_close)
    with pytest.raises(ConfigurationError):
        ir.IdentityGraph(store=url)
    assert len(closed) == 1


@pytest.mark.parametrize("store", ["memory", "sqlite"])
def test_a_reused_event_id_is_located_like_a_validation_error(store: str, tmp_path: Path) -> None:
    url = "memory://" if store == "memory" else f"sqlite:///{tmp_path / 'ids.db'}"
    graph = ir.IdentityGraph(store=url)
    graph.ingest([{"type": "identify", "userId": "u1", "messageId": "m1", "timestamp": 1}])
    batch = [
        {"type": "track", "event": "A", "anonymousId": "a1", "messageId": "m2", "timestamp": 2},
        {"type": "track", "event": "B", "anonymousId": "a2", "messageId": "m1", "timestamp": 0},
    ]
    with pytest.raises(ir.errors.EventIdConflictError) as info:
        graph.ingest(batch)
    assert (info.value.index, info.value.field) == (1, "messageId")
    assert graph.resolve(anonymous_id="a1") is None  # nothing of the batch applied
    report = graph.ingest(batch, on_error="skip")
    assert [(e.index, e.field) for e in report.errors] == [(1, "messageId")]
    assert report.applied == 1


def test_the_command_line_opens_a_store_with_the_rules_it_was_written_with(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from identityres.cli import main

    url = f"sqlite:///{tmp_path / 'ids.db'}"
    rules = ir.Rules(kinds=("email",), normalizers={"email": ir.normalize_email})
    with ir.IdentityGraph(rules, store=url) as g:
        g.identify("u1", identifiers={"email": "Ada@Example.com"}, timestamp=1)
    assert main(["profile", "email:ADA@example.com", "--store", url, "--json"]) == 0
    assert '"u1"' in capsys.readouterr().out


def test_identity_rows_are_the_identity_map(graph: ir.IdentityGraph) -> None:
    """The analytics join table (a fast path on the in-place memory store) says what
    identity_map() says."""
    _two_1001s(graph)
    graph.identify("u-2", anonymous_id="a-y", identifiers={"email": "e@x.io"}, timestamp=3)
    graph.forget(("anonymous_id", "a-y"), timestamp=4)
    rows = sorted(graph._identity_rows())
    assert rows == sorted((i.kind, i.value, pid) for i, pid in graph.identity_map())
    assert rows  # (the fixture's graph is not empty)
