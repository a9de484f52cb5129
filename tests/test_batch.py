"""batch.resolve gives the online engine's answer (docs/batch.md): property tests over random
streams with every operation, and the input formats, seeding and the command line."""

from __future__ import annotations

import gzip
import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st

import identityres as ir
from identityres import batch
from identityres import strategies as irst
from identityres.testing import snapshot, snapshot_diff
from identityres.testing.conformance._machine import _rules_variants
from tests.test_formats import MIXED

pa = pytest.importorskip("pyarrow")


def online(events: list[Any], rules: ir.Rules) -> ir.IdentityGraph:
    g = ir.IdentityGraph(rules)
    g.ingest(events)
    return g


def expected_tables(g: ir.IdentityGraph) -> dict[str, Any]:
    profiles = list(g.profiles())
    idmap = {
        (i.kind, i.value, p.id, p.user_id, p.identified_user_id)
        for p in profiles
        for i in p.all_identifiers()
    }
    rows = {
        (
            p.id,
            p.user_id,
            p.user_id_kind,
            p.identified_user_id,
            sum(len(v) for v in p.identifiers.values()),
            p.first_seen,
            p.last_seen,
            p.company_id,
            tuple(sorted(p.company_ids)),
            json.dumps(dict(p.traits), sort_keys=True) if p.traits else None,
        )
        for p in profiles
    }
    refusals = [
        (
            r.event_id,
            r.identifier.kind,
            r.identifier.value,
            r.anchor.kind,
            r.anchor.value,
            str(r.reason),
            r.kind,
        )
        for r in g.refusals()
    ]
    companies = {
        c.company_id: (
            json.dumps(dict(c.traits), sort_keys=True) if c.traits else None,
            frozenset(c.profiles),
        )
        for c in g.companies()
    }
    return {"identity_map": idmap, "profiles": rows, "refusals": refusals, "companies": companies}


def actual_tables(r: batch.BatchResult) -> dict[str, Any]:
    idmap = {tuple(row.values()) for row in r.identity_map.to_pylist()}
    rows = {
        tuple(tuple(v) if isinstance(v, list) else v for v in row.values())
        for row in r.profiles.to_pylist()
    }
    refusals = [tuple(row.values()) for row in r.refusals.to_pylist()]
    companies = {
        row["company_id"]: (
            row["traits"],
            frozenset(pid.split(":", 1)[1] for pid in row["profile_ids"]),
        )
        for row in r.companies.to_pylist()
    }
    return {"identity_map": idmap, "profiles": rows, "refusals": refusals, "companies": companies}


def assert_equivalent(events: list[Any], rules: ir.Rules) -> batch.BatchResult:
    g = online(events, rules)
    result = batch.resolve(events, rules=rules)
    want, got = expected_tables(g), actual_tables(result)
    for table in want:
        assert got[table] == want[table], table
    # one row per identifier, one per profile
    assert result.identity_map.num_rows == len(g)
    assert result.profiles.num_rows == g.stats().profiles
    assert result.blocked_values() == g.stats().blocked_values
    # the full state, as the online engine holds it (what seeding writes)
    a, b = snapshot(g), snapshot(result.graph())
    assert a == b, snapshot_diff(a, b)
    return result


@st.composite
def operated_streams(draw: st.DrawFn, **options: Any) -> list[Any]:
    """A stream with forced merges and splits of its own identifiers among its events."""
    stream = draw(irst.streams(**options))
    idents: list[ir.Identifier] = []
    for e in stream:
        for kind, attr in (("user_id", "user_id"), ("anonymous_id", "anonymous_id")):
            value = getattr(e, attr, None)
            if isinstance(value, str) and value.strip():
                idents.append(ir.Identifier(kind, value.strip()))
    times = [e.timestamp for e in stream if isinstance(e.timestamp, (int, float))]
    if not idents or not times:
        return stream
    ops: list[Any] = []
    for i in range(draw(st.integers(0, 3))):
        ts = draw(st.sampled_from(times))
        if draw(st.booleans()):
            a, b = draw(st.sampled_from(idents)), draw(st.sampled_from(idents))
            ops.append(ir.Merge(a=a, b=b, timestamp=ts, event_id=f"op{i}"))
        else:
            ops.append(
                ir.Split(identifier=draw(st.sampled_from(idents)), timestamp=ts, event_id=f"op{i}")
            )
    out = list(stream)
    for op in ops:
        out.insert(draw(st.integers(0, len(out))), op)
    return out


@settings(max_examples=25, suppress_health_check=[HealthCheck.too_slow])
@given(stream=irst.streams(users=4), rules=_rules_variants())
def test_batch_equals_online_on_realistic_streams(stream: list[Any], rules: ir.Rules) -> None:
    note(repr(rules))
    assert_equivalent(stream, rules)


@settings(max_examples=25, suppress_health_check=[HealthCheck.too_slow])
@given(stream=operated_streams(users=4, forgets=True), rules=_rules_variants())
def test_batch_equals_online_with_merges_splits_and_forgets(
    stream: list[Any], rules: ir.Rules
) -> None:
    note(repr(rules))
    assert_equivalent(stream, rules)


@settings(max_examples=25, suppress_health_check=[HealthCheck.too_slow])
@given(stream=irst.streams(users=3, hostile=True), rules=_rules_variants())
def test_batch_equals_online_on_hostile_values(stream: list[Any], rules: ir.Rules) -> None:
    assert_equivalent(stream, rules)


@settings(max_examples=25, suppress_health_check=[HealthCheck.too_slow])
@given(messages=st.lists(irst.segment_messages(), max_size=30))
def test_batch_equals_online_on_segment_messages(messages: list[dict[str, Any]]) -> None:
    # (independent draws may reuse a messageId with other content: both then refuse alike)
    rules = ir.Rules()
    try:
        online(messages, rules)
    except ir.ValidationError as exc:
        with pytest.raises(type(exc)):
            batch.resolve(messages, rules=rules)
        return
    assert_equivalent(messages, rules)


# -- the columnar lane ------------------------------------------------------------------------


def _iso(ts: Any) -> Any:
    if isinstance(ts, datetime):
        return ts.isoformat()  # (an offset, not Z: read by the slow lane)
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _text(value: Any) -> Any:
    return None if value is None else str(value)


def to_message(e: Any) -> dict[str, Any]:
    """An event object as the Segment message a warehouse would hold."""
    msg: dict[str, Any] = {"timestamp": _iso(e.timestamp), "messageId": e.event_id}
    if isinstance(e, ir.Track):
        msg.update(
            type="track", event=e.event, properties=e.properties, identifiers=e.identifiers or None
        )
    elif isinstance(e, ir.Identify):
        msg.update(
            type="identify", traits=e.traits, set_once=e.set_once, identifiers=e.identifiers or None
        )
    elif isinstance(e, ir.Alias):
        previous = e.previous_id
        if isinstance(previous, (ir.Identifier, tuple)):
            kind, value = (
                (previous.kind, previous.value) if isinstance(previous, ir.Identifier) else previous
            )
            msg.update(previousId=_text(value))
            if kind == "anonymous_id":
                msg.update(anonymousId=_text(value))
        else:
            msg.update(previousId=_text(previous))
        msg.update(type="alias")
    elif isinstance(e, ir.Reset):
        msg.update(type="reset")
    elif isinstance(e, ir.IdentifyCompany):
        msg.update(type="group", groupId=_text(e.company_id), traits=e.traits)
    if getattr(e, "user_id", None) is not None:
        msg["userId"] = _text(e.user_id)
    if getattr(e, "anonymous_id", None) is not None and "anonymousId" not in msg:
        msg["anonymousId"] = _text(e.anonymous_id)
    return {k: v for k, v in msg.items() if v is not None}


def test_columnar_lane_is_used_for_plain_rows() -> None:
    result = batch.resolve(_as_text_columns(MESSAGES))
    slow = batch.resolve(_as_text_columns(MESSAGES), columnar=False)
    assert actual_tables(result) == actual_tables(slow)
    # m7 has a blocked user id, and reset and alias are never read vectorized; the identify
    # with traits (m2), the track (m3), the group call (m5) and m1, delivered twice alike
    # (its second row a duplicate, read no further), are
    assert len(result._events.py) == 3
    assert result.stat("duplicates") == slow.stat("duplicates") == 1
    assert len(slow._events.py) == 7


@settings(max_examples=25, suppress_health_check=[HealthCheck.too_slow])
@given(stream=irst.streams(users=4), rules=_rules_variants(), hostile=st.booleans())
def test_batch_from_an_arrow_table_equals_online(
    stream: list[Any], rules: ir.Rules, hostile: bool
) -> None:
    messages = [to_message(e) for e in stream]
    assert_equivalent_table(messages, rules)


@settings(max_examples=25, suppress_health_check=[HealthCheck.too_slow])
@given(stream=irst.streams(users=3, hostile=True), rules=_rules_variants())
def test_batch_from_an_arrow_table_of_hostile_values_equals_online(
    stream: list[Any], rules: ir.Rules
) -> None:
    assert_equivalent_table([to_message(e) for e in stream], rules)


def assert_equivalent_table(messages: list[dict[str, Any]], rules: ir.Rules) -> None:
    g = online(messages, rules)
    result = batch.resolve(_as_text_columns(messages), rules=rules)
    want, got = expected_tables(g), actual_tables(result)
    for table in want:
        assert got[table] == want[table], table
    assert result.blocked_values() == g.stats().blocked_values
    a, b = snapshot(g), snapshot(result.graph())
    assert a == b, snapshot_diff(a, b)


# -- seeding a store, then continuing online ------------------------------------------------


def _continue(g: ir.IdentityGraph, rest: list[Any]) -> ir.IdentityGraph:
    for e in rest:
        g.ingest([e])
    return g


@settings(
    max_examples=15,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(
    stream=operated_streams(users=4, forgets=True),
    rules=_rules_variants(),
    cut=st.floats(0, 1),
)
def test_seeded_sqlite_store_continues_as_all_online(
    tmp_path_factory: pytest.TempPathFactory, stream: list[Any], rules: ir.Rules, cut: float
) -> None:
    half = int(len(stream) * cut)
    first, rest = stream[:half], stream[half:]
    path = tmp_path_factory.mktemp("seed") / "ids.db"
    seeded = batch.resolve(first, rules=rules).seed(f"sqlite:///{path}")
    try:
        _continue(seeded, rest)
        want, got = snapshot(online(stream, rules)), snapshot(seeded)
        assert want == got, snapshot_diff(want, got)
        # redelivering a batched event is a duplicate there too
        if first:
            assert seeded.ingest(first[:1]).duplicates == 1
    finally:
        seeded.close()


@settings(max_examples=25)
@given(stream=operated_streams(users=4, forgets=True), rules=_rules_variants(), cut=st.floats(0, 1))
def test_seeded_memory_graph_continues_as_all_online(
    stream: list[Any], rules: ir.Rules, cut: float
) -> None:
    half = int(len(stream) * cut)
    seeded = _continue(batch.resolve(stream[:half], rules=rules).graph(), stream[half:])
    want, got = snapshot(online(stream, rules)), snapshot(seeded)
    assert want == got, snapshot_diff(want, got)


def test_seeding_refuses_a_store_that_is_not_empty(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'ids.db'}"
    with ir.IdentityGraph(store=url) as g:
        g.identify("u1", anonymous_id="a1", timestamp=1)
    result = batch.resolve([ir.Identify(user_id="u2", timestamp=1, event_id="e1")])
    with pytest.raises(ir.ConfigurationError, match="not empty"):
        result.seed(url)


# -- sources ----------------------------------------------------------------------------------

MESSAGES: list[dict[str, Any]] = [
    {"type": "page", "anonymousId": "a1", "timestamp": "2024-01-01T00:00:00Z", "messageId": "m1"},
    {
        "type": "identify",
        "userId": "u1",
        "anonymousId": "a1",
        "traits": {"plan": "free", "seats": 2},
        "timestamp": "2024-01-01T00:00:01Z",
        "messageId": "m2",
    },
    {
        "type": "track",
        "event": "Signed in",
        "userId": "u2",
        "anonymousId": "a1",
        "properties": {"n": 1},
        "timestamp": "2024-01-01T00:00:02.5Z",
        "messageId": "m3",
    },
    {"type": "reset", "anonymousId": "a1", "timestamp": "2024-01-01T00:00:03Z", "messageId": "m4"},
    {
        "type": "group",
        "groupId": "acme",
        "userId": "u1",
        "traits": {"size": 10},
        "timestamp": "2024-01-01T00:00:04Z",
        "messageId": "m5",
    },
    {
        "type": "alias",
        "userId": "u3",
        "previousId": "a3",
        "anonymousId": "a3",
        "timestamp": "2024-01-01T00:00:05Z",
        "messageId": "m6",
    },
    {
        "type": "identify",
        "userId": "null",
        "anonymousId": "a4",
        "timestamp": "2024-01-01T00:00:06Z",
        "messageId": "m7",
    },
    # a redelivery
    {"type": "page", "anonymousId": "a1", "timestamp": "2024-01-01T00:00:00Z", "messageId": "m1"},
]


def _columns(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every row with every key (``from_pylist`` takes the columns from the first row)."""
    keys = list(dict.fromkeys(k for m in messages for k in m))
    return [{k: m.get(k) for k in keys} for m in messages]


def _as_text_columns(messages: list[dict[str, Any]]) -> Any:
    rows = [
        {k: json.dumps(v) if isinstance(v, dict) else v for k, v in m.items()}
        for m in _columns(messages)
    ]
    return pa.Table.from_pylist(rows)


def _check(result: batch.BatchResult) -> None:
    want = expected_tables(online(MESSAGES, ir.Rules()))
    got = actual_tables(result)
    assert got == want
    assert result.stat("duplicates") == 1 and result.stat("events") == 7


def test_jsonl_and_gzipped_jsonl(tmp_path: Path) -> None:
    text = "".join(json.dumps(m) + "\n" for m in MESSAGES)
    (tmp_path / "events.jsonl").write_text(text + "\n")  # a blank line is skipped
    with gzip.open(tmp_path / "events.jsonl.gz", "wt") as out:
        out.write(text)
    _check(batch.resolve(tmp_path / "events.jsonl"))
    _check(batch.resolve(str(tmp_path / "events.jsonl.gz")))
    (tmp_path / "events.txt").write_text(text)
    _check(batch.resolve(tmp_path / "events.txt", format="jsonl"))
    with pytest.raises(ir.ConfigurationError, match="cannot tell the format"):
        batch.resolve(tmp_path / "events.txt")


def _utc(text: str) -> datetime:
    """``2024-01-01T00:00:02.5Z`` as an aware datetime (Python 3.10's ``fromisoformat`` reads
    neither the ``Z`` nor a fraction of other than 3 or 6 digits)."""
    whole, _, fraction = text.removesuffix("Z").partition(".")
    parsed = datetime.strptime(whole, "%Y-%m-%dT%H:%M:%S")
    return parsed.replace(microsecond=int(fraction.ljust(6, "0")), tzinfo=timezone.utc)


def test_parquet_file_and_directory_with_json_text_and_struct_columns(tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    pq.write_table(_as_text_columns(MESSAGES), tmp_path / "all.parquet")
    _check(batch.resolve(tmp_path / "all.parquet"))
    parts = tmp_path / "parts"
    parts.mkdir()
    pq.write_table(_as_text_columns(MESSAGES[:4]), parts / "part-0.parquet")
    pq.write_table(_as_text_columns(MESSAGES[4:]), parts / "part-1.parquet")
    (parts / "_SUCCESS").write_text("")
    _check(batch.resolve(parts))
    # traits as a struct column (its null fields absent), Arrow timestamps
    table = pa.Table.from_pylist(_columns(MESSAGES))
    assert pa.types.is_struct(table.schema.field("traits").type)
    stamps = pa.array(
        [_utc(m["timestamp"]) for m in MESSAGES],
        pa.timestamp("us", tz="UTC"),
    )
    table = table.set_column(table.schema.get_field_index("timestamp"), "timestamp", stamps)
    _check(batch.resolve(table))


def test_bad_events_raise_with_their_index_or_are_skipped() -> None:
    bad = [
        *MESSAGES,
        {
            "type": "identify",
            "userId": 1.5,
            "anonymousId": "a9",
            "messageId": "m9",
            "timestamp": "2024-01-01T00:00:09Z",
        },
    ]
    with pytest.raises(ir.ValidationError) as raised:
        batch.resolve(bad)
    assert raised.value.index == len(MESSAGES) and raised.value.field == "userId"
    result = batch.resolve(bad, on_error="skip")
    assert [(e.index, e.field) for e in result.errors] == [(len(MESSAGES), "userId")]
    _check(result)
    reused = [*MESSAGES, {**MESSAGES[0], "anonymousId": "a2"}]
    with pytest.raises(ir.EventIdConflictError):
        batch.resolve(reused)


def test_write_parquet_and_csv(tmp_path: Path) -> None:
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    result = batch.resolve(MESSAGES)
    written = result.write(tmp_path / "out")
    assert sorted(p.name for p in written) == sorted(
        f"{t}.parquet" for t in ("identity_map", "profiles", "refusals", "companies", "stats")
    )
    assert pq.read_table(tmp_path / "out" / "identity_map.parquet").equals(result.identity_map)
    result.write(tmp_path / "csv", format="csv")
    profiles = pacsv.read_csv(tmp_path / "csv" / "profiles.csv")
    assert profiles.num_rows == result.profiles.num_rows
    assert sorted(profiles.column("profile_id").to_pylist()) == sorted(
        result.profiles.column("profile_id").to_pylist()
    )


# -- the command line -------------------------------------------------------------------------


def test_cli_batch_engine_writes_the_profiles_the_online_engine_writes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from identityres.cli import main

    events = tmp_path / "events.jsonl"
    events.write_text("".join(json.dumps(m) + "\n" for m in MESSAGES))
    assert main(["resolve", str(events), "-o", str(tmp_path / "online.jsonl")]) == 0
    capsys.readouterr()
    code = main(
        [
            "resolve",
            str(events),
            "--engine",
            "batch",
            "--json",
            "-o",
            str(tmp_path / "batch.jsonl"),
            "--tables",
            str(tmp_path / "tables"),
        ]
    )
    assert code == 0
    summary = json.loads(capsys.readouterr().out)
    assert (tmp_path / "batch.jsonl").read_bytes() == (tmp_path / "online.jsonl").read_bytes()
    assert summary["engine"] == "batch"
    assert summary["events"] == {"applied": 7, "duplicates": 1, "skipped": 0}
    assert summary["refusals"] == {"total": 1, "by_reason": {"limit_exceeded": 1}}
    assert set(summary["seconds"]) == {
        "read",
        "decode",
        "components",
        "classify",
        "engine",
        "tables",
    }
    assert (tmp_path / "tables" / "identity_map.parquet").exists()


def test_cli_auto_engine_and_usage_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import pyarrow.parquet as pq

    from identityres.cli import main

    pq.write_table(_as_text_columns(MESSAGES), tmp_path / "events.parquet")
    assert main(["resolve", str(tmp_path / "events.parquet"), "--engine", "auto", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["engine"] == "batch"
    small = tmp_path / "events.jsonl"
    small.write_text(json.dumps(MESSAGES[0]) + "\n")
    assert main(["resolve", str(small), "--engine", "auto", "--json"]) == 0
    assert "engine" not in json.loads(capsys.readouterr().out)  # the online summary
    assert main(["resolve", "-", "--engine", "batch"]) == 1
    assert main(["resolve", str(small), "--tables", str(tmp_path / "t")]) == 1
    assert "--tables needs the batch engine" in capsys.readouterr().err
    assert main(["resolve", str(tmp_path / "missing.jsonl"), "--engine", "batch"]) == 2


# -- thorough runs (pytest -m slow) ------------------------------------------------------------

_THOROUGH = settings(
    max_examples=400,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


@pytest.mark.slow
@_THOROUGH
@given(stream=operated_streams(users=5, forgets=True, max_events=120), rules=_rules_variants())
def test_batch_equals_online_thorough(stream: list[Any], rules: ir.Rules) -> None:
    assert_equivalent(stream, rules)


@pytest.mark.slow
@_THOROUGH
@given(stream=irst.streams(users=5, hostile=True, max_events=120), rules=_rules_variants())
def test_batch_from_an_arrow_table_equals_online_thorough(
    stream: list[Any], rules: ir.Rules
) -> None:
    assert_equivalent_table([to_message(e) for e in stream], rules)


@pytest.mark.slow
@settings(
    max_examples=150,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(stream=operated_streams(users=4, forgets=True), rules=_rules_variants(), cut=st.floats(0, 1))
def test_seeded_sqlite_store_continues_as_all_online_thorough(
    tmp_path_factory: pytest.TempPathFactory, stream: list[Any], rules: ir.Rules, cut: float
) -> None:
    test_seeded_sqlite_store_continues_as_all_online.hypothesis.inner_test(  # type: ignore[attr-defined]
        tmp_path_factory, stream, rules, cut
    )


@given(
    n=st.integers(1, 60),
    edges=st.lists(st.tuples(st.integers(0, 59), st.integers(0, 59)), max_size=120),
)
def test_numpy_union_find_labels_each_component_by_its_smallest_node(
    n: int, edges: list[tuple[int, int]]
) -> None:
    import numpy as np

    edges = [(a % n, b % n) for a, b in edges]
    parent = list(range(n))

    def find(x: int) -> int:
        while parent[x] != x:
            x = parent[x]
        return x

    for a, b in edges:
        ra, rb = find(a), find(b)
        parent[max(ra, rb)] = min(ra, rb)
    want = [min(m for m in range(n) if find(m) == find(x)) for x in range(n)]
    a = np.array([e[0] for e in edges], dtype=np.int64)
    b = np.array([e[1] for e in edges], dtype=np.int64)
    assert batch.components(n, a, b).tolist() == want


@settings(max_examples=15, deadline=None)
@given(st.permutations(MIXED))
def test_batch_reads_other_platforms_messages_as_ingest_does(stream: list[Any]) -> None:
    # PostHog, Amplitude, Mixpanel and Moesif messages (docs/formats.md), in any order
    result = assert_equivalent(stream, ir.Rules())
    assert result.errors == ()
    bad = [*stream, {"event": "$pageview", "distinct_id": 7.5, "uuid": "bad"}]
    with pytest.raises(ir.ValidationError) as info:
        batch.resolve(bad)
    assert info.value.field == "distinct_id" and info.value.index == len(stream)


_LINE = (
    b'{"type": "track", "event": "e", "userId": "u", "messageId": "m1", '
    b'"timestamp": "2024-01-01T00:00:00Z"}\n'
)


@pytest.mark.parametrize("columnar", [True, False])
@pytest.mark.parametrize(
    ("name", "content", "error", "where"),
    [
        ("e.parquet", b"not parquet", ir.ConfigurationError, "e.parquet'"),
        ("e.jsonl.gz", b"\x00\x01not gzip", ir.InvalidEventError, "e.jsonl.gz:1"),
        ("e.jsonl.gz", gzip.compress(_LINE * 3)[:-9], ir.InvalidEventError, ".gz:"),
        ("e.jsonl", _LINE + b'{"event": "\xff"}\n', ir.InvalidEventError, "e.jsonl:2"),
    ],
)
def test_an_unreadable_file_is_an_identityres_error_naming_it(
    tmp_path: Path, name: str, content: bytes, error: type, where: str, columnar: bool
) -> None:
    # (not pyarrow's ArrowInvalid, gzip's BadGzipFile, EOFError or UnicodeDecodeError)
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(error) as caught:
        batch.resolve(path, columnar=columnar)
    assert where in str(caught.value)


@pytest.mark.parametrize("column", ["traits", "properties", "identifiers", "set_once"])
def test_a_table_cell_that_is_not_json_text_is_an_invalid_event(column: str) -> None:
    """A JSON column's cell that is not JSON text (cut short, a BOM, a 5000-digit number) is
    refused with an identityres error naming the column, as any bad event is, and
    ``on_error="skip"`` skips that row alone."""
    good = {
        "type": "identify",
        "userId": "u1",
        "anonymousId": "a1",
        "messageId": "m1",
        "timestamp": "2024-01-01T00:00:00Z",
    }
    bad = {**good, "userId": "u2", "anonymousId": "a2", "messageId": "m2"}
    if column == "properties":
        good.update(type="track", event="Clicked")
        bad.update(type="track", event="Clicked")
    for text in ('{"plan": "pro"', "\ufeff{}", "[" * 100_000):
        # (the good row holds the column too: from_pylist takes the schema from the first row)
        table = pa.Table.from_pylist([{**good, column: None}, {**bad, column: text}])
        with pytest.raises(ir.InvalidEventError, match=column):
            batch.resolve(table)
        result = batch.resolve(table, on_error="skip")
        assert [e.index for e in result.errors] == [1]
        assert sorted(result.identity_map.column("value").to_pylist()) == ["a1", "u1"]
