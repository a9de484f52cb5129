"""identityres.analytics: kept events, journeys, unique users and funnels (docs/analytics.md),
checked on examples and, on random streams, against the brute-force reference in
identityres.testing."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import identityres as ir
from identityres import analytics
from identityres.storage.sqlite import SQLiteStore
from identityres.testing import reference_funnel, reference_unique_users

DAY = 86400


def two_devices(store: object = None) -> ir.IdentityGraph:
    """Ada reads the docs on her laptop, signs up and calls the API from her phone's app."""
    g = ir.IdentityGraph(store=store, keep_events=True)  # type: ignore[arg-type]
    g.track("Docs viewed", anonymous_id="laptop", timestamp=100)
    g.track("Signed up", anonymous_id="laptop", timestamp=200)
    g.track("API call", anonymous_id="phone", timestamp=300)
    return g


STEPS = ["Docs viewed", "Signed up", "API call"]


def write_jsonl(messages: list[dict[str, object]], path: str) -> None:
    with open(path, "w") as f:
        f.writelines(json.dumps(m) + "\n" for m in messages)


# -- kept events ------------------------------------------------------------------------------


@pytest.fixture(params=["memory", "sqlite"])
def store(request: pytest.FixtureRequest, tmp_path: object) -> object:
    if request.param == "memory":
        return None
    return SQLiteStore(f"{tmp_path}/kept.db")


def test_kept_events_carry_what_was_sent(store: object) -> None:
    g = ir.IdentityGraph(store=store, keep_events=True)  # type: ignore[arg-type]
    g.track("Docs viewed", anonymous_id=" a-1 ", properties={"path": "/docs"}, timestamp=5)
    msg = {
        "type": "page",
        "name": "Pricing",
        "anonymousId": "a-1",
        "timestamp": 6,
        "messageId": "m-1",
        "context": {"app": {"name": "web"}},
    }
    report = g.ingest([msg, msg])  # the second is a duplicate: kept once
    assert report.duplicates == 1
    g.merge(("anonymous_id", "a-1"), "u-1", timestamp=7)  # operator events are not kept
    kept = list(g.kept_events())
    assert [(e.type, e.name, e.ts) for e in kept] == [
        ("track", "Docs viewed", 5.0),
        ("page", "Pricing", 6.0),
    ]
    assert kept[0].identifiers == (ir.Identifier("anonymous_id", "a-1"),)  # normalized
    assert kept[0].properties == {"path": "/docs"} and kept[0].context is None
    assert kept[1].event_id == "m-1" and kept[1].context == {"app": {"name": "web"}}


def test_forget_removes_the_kept_events_of_the_identifier(store: object) -> None:
    g = two_devices(store)
    g.identify("u-1", "laptop", timestamp=150)
    g.forget(("anonymous_id", "laptop"), timestamp=400)
    # the forgotten id is not kept again when it comes back
    g.track("Docs viewed", anonymous_id="laptop", user_id="u-1", timestamp=500)
    kept = list(g.kept_events())
    assert [(e.name, e.identifiers) for e in kept] == [
        ("API call", (ir.Identifier("anonymous_id", "phone"),)),
        ("Docs viewed", (ir.Identifier("user_id", "u-1"),)),
    ]
    if isinstance(store, SQLiteStore):
        assert store.find_bytes(b"laptop") == {}


def test_a_store_without_the_capability_is_refused() -> None:
    from tests.toy_store import ToyStore  # type: ignore[attr-defined]

    with pytest.raises(ir.ConfigurationError, match="EventLog"):
        ir.IdentityGraph(store=ToyStore(), keep_events=True)


def test_keep_events_must_be_a_bool() -> None:
    with pytest.raises(ir.ConfigurationError, match="keep_events"):
        ir.IdentityGraph(keep_events="yes")  # type: ignore[arg-type]


def test_bad_context_is_refused_and_nothing_written() -> None:
    g = ir.IdentityGraph(keep_events=True)
    with pytest.raises(ir.InvalidEventError) as info:
        g.ingest(
            [
                {
                    "type": "track",
                    "event": "x",
                    "anonymousId": "a",
                    "timestamp": 1,
                    "context": ["not", "a", "mapping"],
                }
            ]
        )
    assert info.value.field == "context" and info.value.index == 0
    assert list(g.kept_events()) == [] and g.stats().events == 0


# -- the graph changes the answers --------------------------------------------------------------


def test_a_late_identify_joins_two_half_funnels_and_split_undoes_it() -> None:
    g = two_devices()
    before = analytics.funnel(g, steps=STEPS, within="7d")
    assert isinstance(before, analytics.FunnelResult)
    assert before.counts == [1, 1, 0]
    assert analytics.unique_users(g) == 2
    # the identifies arrive late, dated before the API call: one person, one full funnel
    g.identify("u-1", "laptop", timestamp=150)
    g.identify("u-1", "phone", timestamp=250)
    after = analytics.funnel(g, steps=STEPS, within="7d")
    assert after.counts == [1, 1, 1]  # type: ignore[union-attr]
    assert after.median_seconds == [None, 100.0, 200.0]  # type: ignore[union-attr]
    assert analytics.unique_users(g) == 1
    g.split(("anonymous_id", "phone"), timestamp=260)
    assert analytics.funnel(g, steps=STEPS, within="7d").counts == [1, 1, 0]  # type: ignore[union-attr]
    assert analytics.unique_users(g) == 2


def test_forget_removes_the_person() -> None:
    g = two_devices()
    g.identify("u-1", "laptop", timestamp=150)
    g.identify("u-1", "phone", timestamp=250)
    for ident in [("anonymous_id", "laptop"), ("anonymous_id", "phone"), ("user_id", "u-1")]:
        g.forget(ident, timestamp=1000)
    assert analytics.funnel(g, steps=STEPS, within="7d").counts == [0, 0, 0]  # type: ignore[union-attr]
    assert analytics.unique_users(g) == 0
    assert analytics.journey(g, user_id="u-1") == ()


def test_journey_crosses_identifiers_and_says_where_each_event_came_from() -> None:
    g = two_devices()
    g.identify("u-1", "laptop", timestamp=150)
    g.ingest(
        [
            {
                "type": "track",
                "event": "API call",
                "userId": "u-1",
                "timestamp": 400,
                "messageId": "srv-1",
                "context": {"library": {"name": "server"}},
            }
        ]
    )
    steps = analytics.journey(g, anonymous_id="laptop")
    assert [(s.name, s.identifier.kind, s.identifier.value) for s in steps] == [
        ("Docs viewed", "anonymous_id", "laptop"),
        ("identify", "user_id", "u-1"),
        ("Signed up", "anonymous_id", "laptop"),
        ("API call", "user_id", "u-1"),
    ]
    assert steps[-1].context == {"library": {"name": "server"}}
    assert steps[0].timestamp == datetime.fromtimestamp(100, timezone.utc)
    assert analytics.journey(g, anonymous_id="nobody") == ()


# -- the semantics, example by example --------------------------------------------------------


def graph_of(*events: tuple[str, str, float]) -> ir.IdentityGraph:
    """One event per tuple: (name, anonymous id, timestamp)."""
    g = ir.IdentityGraph(keep_events=True)
    for n, (name, anon, ts) in enumerate(events):
        g.track(name, anonymous_id=anon, timestamp=ts, event_id=f"e{n:03d}")
    return g


def test_some_start_counts_and_within_is_inclusive() -> None:
    g = graph_of(("A", "p", 0), ("A", "p", 50), ("B", "p", 60), ("C", "p", 110))
    # from the entry at 0 C is 110 away (too late); from the entry at 50 it is 60
    r = analytics.funnel(g, steps=["A", "B", "C"], within=60)
    assert r.counts == [1, 1, 1] and r.median_seconds == [None, 10.0, 60.0]  # type: ignore[union-attr]
    assert analytics.funnel(g, steps=["A", "B", "C"], within=59).counts == [1, 1, 0]  # type: ignore[union-attr]


def test_orders() -> None:
    g = graph_of(("A", "p", 0), ("X", "p", 1), ("C", "p", 2), ("B", "p", 3))
    seq = analytics.funnel(g, steps=["A", "B", "C"], within=10)
    strict = analytics.funnel(g, steps=["A", "X"], within=10, order="strict")
    not_strict = analytics.funnel(g, steps=["A", "C"], within=10, order="strict")
    anyorder = analytics.funnel(g, steps=["A", "B", "C"], within=10, order="any")
    assert seq.counts == [1, 1, 0]  # type: ignore[union-attr]
    assert strict.counts == [1, 1] and not_strict.counts == [1, 0]  # type: ignore[union-attr]
    assert anyorder.counts == [1, 1, 1]  # type: ignore[union-attr]
    assert anyorder.median_seconds == [None, 3.0, 3.0]  # type: ignore[union-attr]


def test_repeated_steps_need_distinct_events() -> None:
    g = graph_of(("A", "p", 0), ("A", "q", 0), ("A", "q", 1))
    r = analytics.funnel(g, steps=["A", "A"], within=10)
    assert r.counts == [2, 1]  # type: ignore[union-attr]


def test_totals_count_entries_and_exclusions_end_an_entry() -> None:
    g = graph_of(
        ("A", "p", 0), ("A", "p", 1), ("B", "p", 2), ("A", "p", 3), ("Z", "p", 4), ("B", "p", 5)
    )
    totals = analytics.funnel(g, steps=["A", "B"], within=10, count="totals")
    assert totals.counts == [3, 3]  # type: ignore[union-attr]
    excl = analytics.funnel(g, steps=["A", "B"], within=10, count="totals", exclude=["Z"])
    assert excl.counts == [3, 2]  # type: ignore[union-attr]
    assert excl.conversion_from_first == [1.0, 2 / 3]  # type: ignore[union-attr]


def test_breakdowns_first_touch_and_company() -> None:
    g = ir.IdentityGraph(keep_events=True)
    g.track("A", anonymous_id="p", properties={"src": "ads"}, timestamp=0)
    g.track("A", anonymous_id="p", properties={"src": "blog"}, timestamp=1)
    g.track("B", anonymous_id="p", timestamp=2)
    g.track("A", anonymous_id="q", properties={"src": "blog"}, timestamp=3)
    g.identify("u-q", "q", timestamp=4)
    g.identify_company("acme", user_id="u-q", timestamp=5)
    by_src = analytics.funnel(g, steps=["A", "B"], within=10, by="src")
    assert {k: v.counts for k, v in by_src.items()} == {"ads": [1, 1], "blog": [1, 0]}  # type: ignore[union-attr]
    by_company = analytics.funnel(g, steps=["A", "B"], within=10, by="company")
    assert {k: v.counts for k, v in by_company.items()} == {"acme": [1, 0], None: [1, 1]}  # type: ignore[union-attr]
    assert analytics.unique_users(g, by="company") == {"acme": 1, None: 1}
    assert analytics.unique_users(g, event="A", by="src") == {"ads": 1, "blog": 2}


def test_unique_users_by_day_and_week() -> None:
    monday = datetime(2024, 5, 6, tzinfo=timezone.utc).timestamp()
    g = graph_of(
        ("A", "p", monday),
        ("A", "p", monday + 3600),
        ("A", "q", monday + DAY),
        ("A", "q", monday + 8 * DAY),
    )
    assert analytics.unique_users(g, by="day") == {
        "2024-05-06": 1,
        "2024-05-07": 1,
        "2024-05-14": 1,
    }
    assert analytics.unique_users(g, by="week") == {"2024-05-06": 2, "2024-05-13": 1}
    start = datetime(2024, 5, 7, tzinfo=timezone.utc)
    assert analytics.unique_users(g, start=start, end=start + timedelta(days=1)) == 1


def test_events_from_an_iterable_or_a_file(tmp_path: object) -> None:
    g = ir.IdentityGraph()
    msgs = [
        {
            "type": "page",
            "name": "Docs viewed",
            "anonymousId": "a",
            "timestamp": 1,
            "messageId": "1",
        },
        {"type": "identify", "userId": "u", "anonymousId": "a", "timestamp": 2, "messageId": "2"},
        {"type": "track", "event": "Signed up", "userId": "u", "timestamp": 3, "messageId": "3"},
    ]
    g.ingest(msgs)
    path = f"{tmp_path}/events.jsonl"
    write_jsonl(msgs, path)
    for events in (
        msgs,
        path,
        [
            ir.Track(event="Docs viewed", anonymous_id="a", timestamp=1),
            ir.Track(event="Signed up", user_id="u", timestamp=3),
        ],
    ):
        r = analytics.funnel(
            g, events, steps=["Docs viewed", "Signed up"], within="1h", engine="python"
        )
        assert r.counts == [1, 1]  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"steps": "A", "within": 1}, "steps"),
        ({"steps": [], "within": 1}, "steps"),
        ({"steps": ["A", ""], "within": 1}, "steps"),
        ({"steps": ["A"], "within": -1}, "within"),
        ({"steps": ["A"], "within": "7 days"}, "within"),
        ({"steps": ["A"], "within": True}, "within"),
        ({"steps": ["A"], "within": 1, "order": "loose"}, "order"),
        ({"steps": ["A"], "within": 1, "count": "all"}, "count"),
        ({"steps": ["A"], "within": 1, "by": 3}, "by"),
        ({"steps": ["A"], "within": 1, "exclude": ["A"]}, "exclude"),
        ({"steps": ["A"], "within": 1, "start": 10, "end": 5}, "end"),
        ({"steps": ["A"], "within": 1, "start": "soon"}, "start"),
        ({"steps": ["A"], "within": 1, "engine": "spark"}, "engine"),
    ],
)
def test_funnel_arguments_are_checked(kwargs: dict[str, object], field: str) -> None:
    g = graph_of(("A", "p", 0))
    with pytest.raises(ir.ValidationError) as info:
        analytics.funnel(g, **kwargs)  # type: ignore[arg-type]
    assert info.value.field == field


def test_other_arguments_are_checked() -> None:
    with pytest.raises(ir.InvalidQueryError) as info:
        analytics.unique_users("graph")
    assert info.value.field == "graph"
    g = graph_of(("A", "p", 0))
    with pytest.raises(ir.InvalidQueryError) as info:
        analytics.unique_users(g, event="")
    assert info.value.field == "event"
    with pytest.raises(ir.InvalidQueryError) as info:
        analytics.unique_users(g, {"type": "track"})
    assert info.value.field == "events"
    with pytest.raises(ir.IdentifierTypeError) as info2:
        analytics.unique_users(g, [{"type": "track", "event": "A", "userId": 1.5}])
    assert (info2.value.index, info2.value.field) == (0, "userId")
    with pytest.raises(ir.ValidationError):
        analytics.journey(g)


# -- random streams against the reference ----------------------------------------------------

NAMES = ("A", "B", "C", "X")


@st.composite
def streams(draw: st.DrawFn) -> list[dict[str, object]]:
    n = draw(st.integers(1, 14))
    out: list[dict[str, object]] = []
    for i in range(n):
        ts = draw(st.integers(0, 12))
        kind = draw(st.sampled_from(["track", "track", "track", "identify"]))
        anon = f"a{draw(st.integers(0, 3))}"
        msg: dict[str, object] = {
            "type": kind,
            "anonymousId": anon,
            "timestamp": ts,
            "messageId": f"m{i:02d}",
        }
        if kind == "identify":
            msg["userId"] = f"u{draw(st.integers(0, 1))}"
        else:
            msg["event"] = draw(st.sampled_from(NAMES))
            msg["properties"] = {"src": draw(st.sampled_from(["x", "y"]))}
        out.append(msg)
    # a message delivered twice (same id, same content) counts once
    for i in draw(st.lists(st.integers(0, n - 1), max_size=2)):
        out.append(dict(out[i]))
    return out


QUERY = st.fixed_dictionaries(
    {
        "steps": st.lists(st.sampled_from(NAMES[:3]), min_size=1, max_size=3),
        "within": st.integers(0, 8),
        "order": st.sampled_from(["sequential", "strict", "any"]),
        "count": st.sampled_from(["uniques", "totals"]),
        "by": st.sampled_from([None, "src"]),
        "exclude": st.sampled_from([(), ("X",)]),
    }
)


def assert_same_funnel(
    got: object, want: dict[object, dict[str, object]], q: dict[str, object]
) -> None:
    """An engine's funnel equals the reference's: counts, medians and p90s, per bucket."""
    if q["by"] is None:
        got = {None: got}
    assert set(got) == set(want) or all(r.counts[0] == 0 for r in got.values())  # type: ignore[attr-defined, call-overload]
    for key, w in want.items():
        r = got[key]  # type: ignore[index]
        assert (r.counts, r.median_seconds, r.p90_seconds) == (
            w["counts"],
            w["median_seconds"],
            w["p90_seconds"],
        ), key


def check_against_reference(
    stream: list[dict[str, object]], q: dict[str, object], engine: str, tmp: str | None = None
) -> None:
    g = ir.IdentityGraph(keep_events=True)
    g.ingest(stream)
    kept = list(g.kept_events())
    events: object = None if tmp is None else tmp
    got = analytics.funnel(g, events, engine=engine, **q)  # type: ignore[arg-type]
    assert_same_funnel(got, reference_funnel(g, kept, **q), q)  # type: ignore[arg-type]
    users = analytics.unique_users(g, events, event=["A", "B"], engine=engine)
    assert users == reference_unique_users(g, kept, event=["A", "B"])


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(streams(), QUERY)
def test_python_engine_matches_the_reference(
    stream: list[dict[str, object]], q: dict[str, object]
) -> None:
    check_against_reference(stream, q, "python")


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(streams(), QUERY)
def test_duckdb_engine_matches_the_reference(
    stream: list[dict[str, object]], q: dict[str, object]
) -> None:
    check_against_reference(stream, q, "duckdb")


@settings(
    max_examples=20,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(streams(), QUERY)
def test_duckdb_engine_stitches_a_jsonl_file_in_sql(
    tmp_path: object, stream: list[dict[str, object]], q: dict[str, object]
) -> None:
    path = f"{tmp_path}/stream.jsonl"
    write_jsonl(stream, path)
    check_against_reference(stream, q, "duckdb", path)


def test_a_graph_that_keeps_nothing_still_erases_what_was_kept(tmp_path: object) -> None:
    path = f"{tmp_path}/kept.db"
    with two_devices(SQLiteStore(path)) as g:
        assert len(list(g.kept_events())) == 3
    with ir.IdentityGraph(store=SQLiteStore(path)) as g:  # keep_events left off
        assert not g.keeps_events
        g.ingest([ir.Forget(identifier=("anonymous_id", "laptop"), timestamp=400)])
        assert [e.name for e in g.kept_events()] == ["API call"]
        g.forget(("anonymous_id", "phone"), timestamp=401)
        assert list(g.kept_events()) == []
        g.track("Seen", anonymous_id="other", timestamp=402)
        assert list(g.kept_events()) == []  # nothing new is kept


def test_kept_events_of_a_memory_store_are_shared_by_its_handles() -> None:
    from identityres.storage import MemoryStore

    store = MemoryStore()
    g = ir.IdentityGraph(store=store, keep_events=True)
    g.track("Seen", anonymous_id="a", timestamp=1)
    other = ir.IdentityGraph(store=store.handle())
    assert [e.name for e in other.kept_events()] == ["Seen"]


def test_without_duckdb_the_message_names_the_extra(
    monkeypatch: pytest.MonkeyPatch, tmp_path: object
) -> None:
    import sys

    from identityres import analytics as an

    g = graph_of(("A", "p", 0), ("B", "p", 1))
    monkeypatch.setitem(sys.modules, "duckdb", None)  # import duckdb raises ImportError
    with pytest.raises(ir.ConfigurationError, match=r"identityres\[analytics\]"):
        an.funnel(g, steps=["A", "B"], within=10, engine="duckdb")
    # auto picks the pure-Python engine, even for a large file
    path = f"{tmp_path}/big.jsonl"
    with open(path, "w") as f:
        f.write(
            json.dumps(
                {
                    "type": "track",
                    "event": "A",
                    "anonymousId": "p",
                    "timestamp": 0,
                    "messageId": "x",
                }
            )
            + "\n"
        )
        f.write(" " * an.AUTO_DUCKDB_BYTES + "\n")
    assert an.funnel(g, path, steps=["A", "B"], within=10).counts == [1, 0]  # type: ignore[union-attr]


def test_duckdb_reads_a_file_as_ingest_does(tmp_path: object) -> None:
    """Whitespace around ids, int ids, ISO timestamps with milliseconds, blank lines."""
    path = f"{tmp_path}/events.jsonl"
    with open(path, "w") as f:
        f.write(
            json.dumps(
                {
                    "type": "track",
                    "event": "A",
                    "anonymousId": " p ",
                    "timestamp": "2024-05-06T09:00:00.123Z",
                    "messageId": "1",
                    "identifiers": {"api_key": 1001},
                }
            )
            + "\n\n"
        )
        f.write(
            json.dumps(
                {
                    "type": "track",
                    "event": "B",
                    "userId": 1001,
                    "timestamp": 1714986001,
                    "messageId": "2",
                }
            )
            + "\n"
        )
    g = ir.IdentityGraph()
    g.ingest(analytics._inputs.read_jsonl(path))
    g.identify("1001", identifiers={"api_key": "1001"}, timestamp=5)
    python = analytics.funnel(g, path, steps=["A", "B"], within=10, engine="python")
    duck = analytics.funnel(g, path, steps=["A", "B"], within=10, engine="duckdb")
    assert python == duck and duck.counts == [1, 1]  # type: ignore[union-attr]


def test_duckdb_reads_an_alias_as_ingest_does(tmp_path: object) -> None:
    """An alias message's identifiers are userId and previousId, an anonymous id when the
    message has no other anonymousId (docs/merge-rules.md, Aliases)."""
    msgs = [
        {"type": "track", "event": "A", "anonymousId": "x", "timestamp": 1, "messageId": "1"},
        {
            "type": "alias",
            "userId": "u-new",
            "previousId": "u-old",  # the device's anonymous id (docs/merge-rules.md, Aliases)
            "timestamp": 2,
            "messageId": "2",
        },
        # both ids blocked: the alias is nobody's
        {
            "type": "alias",
            "userId": "null",
            "previousId": "undefined",
            "anonymousId": "undefined",
            "timestamp": 3,
            "messageId": "3",
        },
    ]
    path = f"{tmp_path}/events.jsonl"
    write_jsonl(msgs, path)
    g = ir.IdentityGraph()
    g.ingest(msgs)
    for engine in ("python", "duckdb"):
        assert analytics.unique_users(g, path, event="alias", by="day", engine=engine) == {
            "1970-01-01": 1
        }
        assert analytics.unique_users(g, path, engine=engine) == 2


# -- Parquet input and the identity map without a graph ---------------------------------------


def write_parquet(stream: list[dict[str, object]], path: str, stamps: str = "text") -> None:
    """The stream as a Parquet file of Segment columns (docs/batch.md, Input columns):
    properties as JSON text, timestamps as ISO-8601 text (``"text"``) or as an Arrow
    timestamp without a zone (``"arrow"``, read as UTC)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    columns = ("type", "event", "userId", "anonymousId", "messageId")
    table: dict[str, object] = {
        c: pa.array([m.get(c) for m in stream], pa.string()) for c in columns
    }
    props = [m.get("properties") for m in stream]
    table["properties"] = pa.array(
        [None if p is None else json.dumps(p) for p in props], pa.string()
    )
    ts = [m["timestamp"] for m in stream]
    if stamps == "arrow":
        table["timestamp"] = pa.array(
            [datetime.fromtimestamp(t, timezone.utc).replace(tzinfo=None) for t in ts],  # type: ignore[arg-type]
            pa.timestamp("ms"),
        )
    else:
        table["timestamp"] = pa.array(
            [datetime.fromtimestamp(t, timezone.utc).isoformat() for t in ts],  # type: ignore[arg-type]
            pa.string(),
        )
    pq.write_table(pa.table(table), path)  # type: ignore[arg-type]


@settings(
    max_examples=20,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(streams(), QUERY, st.sampled_from(["python", "duckdb"]), st.sampled_from(["text", "arrow"]))
def test_a_parquet_file_is_read_as_ingest_reads_it(
    tmp_path: object,
    stream: list[dict[str, object]],
    q: dict[str, object],
    engine: str,
    stamps: str,
) -> None:
    path = f"{tmp_path}/stream.parquet"
    write_parquet(stream, path, stamps)
    check_against_reference(stream, q, engine, path)


def test_parquet_columns_sql_cannot_read_exactly_are_read_in_python(tmp_path: object) -> None:
    """A struct of identifiers and a boolean user id go through the Python reading; int ids
    and an Arrow timestamp with a zone are read by DuckDB itself: the answers are the same."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = {
        "type": ["track", "track", "identify"],
        "event": ["A", "B", None],
        "userId": [None, 7, 7],
        "anonymousId": ["p", None, "p"],
        "messageId": ["1", "2", "3"],
        "timestamp": pa.array(
            [datetime(2024, 5, 6, 9, 0, s, tzinfo=timezone.utc) for s in (0, 1, 2)],
            pa.timestamp("us", tz="UTC"),
        ),
    }
    ints = f"{tmp_path}/ints.parquet"
    pq.write_table(pa.table(rows), ints)
    struct = f"{tmp_path}/struct.parquet"
    pq.write_table(pa.table({**rows, "identifiers": [{"api_key": "k"}, None, None]}), struct)
    g = ir.IdentityGraph()
    g.identify("7", "p", identifiers={"api_key": "k"}, timestamp=0)
    for path in (ints, struct):
        answers = [
            analytics.funnel(g, path, steps=["A", "B"], within=10, engine=engine)
            for engine in ("python", "duckdb")
        ]
        assert answers[0] == answers[1] and answers[0].counts == [1, 1], path  # type: ignore[union-attr]


def test_a_batch_result_or_a_written_identity_map_stands_for_the_graph(tmp_path: object) -> None:
    """The identity map of ``batch.resolve`` or of ``write_identity_map``: the same answers
    as the graph's, without the graph (docs/analytics.md, "The identity map")."""
    from identityres import batch

    msgs: list[dict[str, object]] = [
        {"type": "track", "event": "A", "anonymousId": "laptop", "timestamp": 1, "messageId": "1"},
        {
            "type": "identify",
            "userId": "u",
            "anonymousId": "laptop",
            "timestamp": 2,
            "messageId": "2",
        },
        {
            "type": "track",
            "event": "B",
            "userId": "u",
            "anonymousId": "phone",
            "timestamp": 3,
            "messageId": "3",
        },
        {"type": "group", "groupId": "acme", "userId": "u", "timestamp": 4, "messageId": "4"},
        {"type": "track", "event": "C", "anonymousId": "phone", "timestamp": 5, "messageId": "5"},
    ]
    path = f"{tmp_path}/events.jsonl"
    write_jsonl(msgs, path)
    g = ir.IdentityGraph()
    g.ingest(msgs)
    result = batch.resolve(msgs)
    written = analytics.write_identity_map(g, f"{tmp_path}/tables")
    assert written == f"{tmp_path}/tables/identity_map.parquet"
    result.write(f"{tmp_path}/batch-tables")
    for engine in ("python", "duckdb"):
        want = analytics.funnel(g, path, steps=["A", "B", "C"], within=10, engine=engine)
        assert want.counts == [1, 1, 1]  # type: ignore[union-attr]
        for source in (result, f"{tmp_path}/tables", f"{tmp_path}/batch-tables"):
            got = analytics.funnel(source, path, steps=["A", "B", "C"], within=10, engine=engine)
            assert got == want, (source, engine)
            assert analytics.unique_users(source, path, engine=engine) == 1
        for source in (result, f"{tmp_path}/batch-tables"):  # profiles.parquet: the company
            assert analytics.unique_users(source, path, by="company", engine=engine) == {"acme": 1}
    with pytest.raises(ir.InvalidQueryError) as info:
        analytics.unique_users(f"{tmp_path}/tables", path, by="company")
    assert info.value.field == "by"  # write_identity_map writes no profiles


def test_an_identity_map_without_a_graph_is_checked(tmp_path: object) -> None:
    from identityres import batch

    result = batch.resolve([{"type": "track", "event": "A", "anonymousId": "p", "timestamp": 1}])
    with pytest.raises(ir.InvalidQueryError) as info:
        analytics.funnel(result, steps=["A"], within=1)  # a batch result keeps no events
    assert info.value.field == "events"
    with pytest.raises(ir.InvalidQueryError) as info:
        analytics.journey(result, anonymous_id="p")
    assert info.value.field == "graph"
    with pytest.raises(ir.InvalidQueryError) as info:
        analytics.unique_users(str(tmp_path), [])  # no identity_map.parquet in it
    assert info.value.field == "graph"
    with pytest.raises(ir.InvalidQueryError) as info:
        analytics.unique_users(ir.IdentityGraph(), f"{tmp_path}/missing.parquet")
    assert info.value.field == "events"


@pytest.mark.parametrize("suffix", ["jsonl", "parquet"])
def test_the_first_message_of_an_event_id_counts_in_a_file(tmp_path: object, suffix: str) -> None:
    """Two messages with one id and different names: the first in the file counts, in both
    engines, whatever the query looks at."""
    msgs: list[dict[str, object]] = [
        {"type": "track", "event": "A", "anonymousId": "p", "timestamp": 1, "messageId": "1"},
        {"type": "track", "event": "X", "anonymousId": "p", "timestamp": 2, "messageId": "2"},
        {"type": "track", "event": "B", "anonymousId": "p", "timestamp": 3, "messageId": "2"},
        {"type": "track", "event": "B", "anonymousId": "q", "timestamp": 4, "messageId": "3"},
        {"type": "track", "event": "A", "anonymousId": "q", "timestamp": 0, "messageId": "3"},
    ]
    path = f"{tmp_path}/events.{suffix}"
    (write_parquet if suffix == "parquet" else write_jsonl)(msgs, path)
    g = ir.IdentityGraph()
    g.ingest([msgs[0], msgs[1], msgs[3]])
    for engine in ("python", "duckdb"):
        r = analytics.funnel(g, path, steps=["A", "B"], within=10, engine=engine)
        assert r.counts == [1, 0], engine  # type: ignore[union-attr]
        assert analytics.unique_users(g, path, event="B", engine=engine) == 1
        assert analytics.unique_users(g, path, event="A", engine=engine) == 1


@pytest.mark.parametrize("suffix", ["jsonl", "parquet"])
def test_duckdb_stitches_a_plain_file_itself(
    tmp_path: object, suffix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file DuckDB can read as ingest does never goes through the Python reading (which
    answers the same, only slower, so only this test sees the difference)."""
    from identityres.analytics import _duckdb

    def refuse(*args: object) -> None:
        raise AssertionError("the file was stitched in Python")

    monkeypatch.setattr(_duckdb, "_stitched_in_python", refuse)
    msgs: list[dict[str, object]] = [
        {"type": "track", "event": "A", "anonymousId": " p", "timestamp": 1, "messageId": "1"},
        {"type": "identify", "userId": "u", "anonymousId": "p", "timestamp": 2, "messageId": "2"},
        {"type": "track", "event": "B", "userId": "u", "timestamp": 3, "messageId": "3"},
        {"type": "track", "event": "B", "userId": "u", "timestamp": 3, "messageId": "3"},
    ]
    path = f"{tmp_path}/events.{suffix}"
    (write_parquet if suffix == "parquet" else write_jsonl)(msgs, path)
    g = ir.IdentityGraph()
    g.ingest(msgs)
    # strict: the identify comes between A and B
    for order, counts in (("sequential", [1, 1]), ("strict", [1, 0]), ("any", [1, 1])):
        r = analytics.funnel(g, path, steps=["A", "B"], within=10, order=order, engine="duckdb")
        assert r.counts == counts, order  # type: ignore[union-attr]
    assert analytics.unique_users(g, path, by="day", engine="duckdb") == {"1970-01-01": 1}


@st.composite
def resent_streams(draw: st.DrawFn) -> list[dict[str, object]]:
    """A stream whose ids are sometimes padded with whitespace (ingest strips it) and whose
    messages are sometimes sent again with the same id and another content: the first in
    the file counts."""
    out = draw(streams())
    for msg in out:
        pad = draw(st.sampled_from(["", "", " ", "\u00a0", "\t"]))
        msg["anonymousId"] = draw(
            st.sampled_from([pad + str(msg["anonymousId"]), str(msg["anonymousId"]) + pad])
        )
    for i in draw(st.lists(st.integers(0, len(out) - 1), max_size=3)):
        again = dict(out[i])
        change = draw(st.sampled_from(["event", "timestamp", "anonymousId"]))
        if change == "event" and again["type"] == "track":
            again["event"] = draw(st.sampled_from(NAMES))
        elif change == "timestamp":
            again["timestamp"] = draw(st.integers(0, 12))
        else:
            again["anonymousId"] = f"a{draw(st.integers(0, 4))}"
        out.insert(draw(st.integers(i + 1, len(out))), again)
    return out


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(resent_streams(), QUERY, st.sampled_from(["jsonl", "parquet"]))
def test_duckdb_stitches_a_file_with_a_written_map_in_sql_as_the_reference(
    tmp_path: object,
    monkeypatch: pytest.MonkeyPatch,
    stream: list[dict[str, object]],
    q: dict[str, object],
    suffix: str,
) -> None:
    """The path the 10^7-event benchmark takes (docs/analytics.md, "Engines"): the identity
    map read by DuckDB from ``identity_map.parquet``, the file deduplicated (first of each
    id, by hash then by id), cut to the wanted names and stitched in SQL without going
    through Python; against the reference on the events ingest keeps."""
    from identityres.analytics import _duckdb

    def refuse(*args: object) -> None:
        raise AssertionError("the file was stitched in Python")

    monkeypatch.setattr(_duckdb, "_stitched_in_python", refuse)
    path = f"{tmp_path}/stream.{suffix}"
    if suffix == "parquet":
        write_parquet(stream, path)
    else:  # some timestamps as ISO-8601 text, the others epoch seconds
        write_jsonl(
            [
                {**m, "timestamp": datetime.fromtimestamp(m["timestamp"], timezone.utc).isoformat()}  # type: ignore[arg-type]
                if n % 2
                else m
                for n, m in enumerate(stream)
            ],
            path,
        )
    firsts: dict[object, dict[str, object]] = {}
    for m in stream:
        firsts.setdefault(m["messageId"], m)
    g = ir.IdentityGraph(keep_events=True)
    g.ingest(list(firsts.values()))
    kept = list(g.kept_events())
    tables = f"{tmp_path}/tables"
    analytics.write_identity_map(g, tables)
    got = analytics.funnel(tables, path, engine="duckdb", **q)  # type: ignore[arg-type]
    assert_same_funnel(got, reference_funnel(g, kept, **q), q)  # type: ignore[arg-type]
    for by in (None, "day"):
        users = analytics.unique_users(tables, path, event=["A", "B"], by=by, engine="duckdb")
        assert users == reference_unique_users(g, kept, event=["A", "B"], by=by)


def _answer(call: object) -> object:
    try:
        return call()  # type: ignore[operator]
    except ir.ValidationError as exc:
        return type(exc)


@pytest.mark.parametrize("original", [False, True])
@pytest.mark.parametrize("suffix", ["jsonl", "parquet"])
@pytest.mark.parametrize(
    "stamp",
    [
        "2024-01-01T00:00:00",  # no timezone
        "2024-01-01",
        "2024-01-01T24:00:00Z",
        "3000-01-01T00:00:00Z",  # the window's end (excluded) and before its start
        "1899-12-31T23:59:59Z",
        "2999-12-31T23:59:59.999999Z",
        "1900-01-01T00:00:00Z",
        "infinity",
        "nan",
        "2024-01-01T00:00:00+05:30",
        "2024-01-01 00:00:00.1234567Z",
        " 2024-01-01T00:00:00Z",
        "1700000000",  # a number in text: ingest refuses it (a JSON number is epoch seconds)
        "1.5e9",
    ],
)
def test_duckdb_reads_a_timestamp_text_as_ingest_does(
    tmp_path: object, stamp: str, suffix: str, original: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Text that DuckDB reads as a time and ingest refuses (or reads otherwise) is read by
    Python: the engines answer alike, an error included; plain ISO text stays SQL's. With
    an ``originalTimestamp`` too: a wrong timestamp is not replaced by it."""
    if stamp in ("2024-01-01T00:00:00+05:30", "2024-01-01 00:00:00.1234567Z"):
        from identityres.analytics import _duckdb

        def refuse(*args: object) -> None:
            raise AssertionError("the file was stitched in Python")

        monkeypatch.setattr(_duckdb, "_stitched_in_python", refuse)
    msgs: list[dict[str, object]] = [
        {
            "type": "track",
            "event": "A",
            "userId": "u",
            "messageId": "1",
            "timestamp": "2024-01-01T00:00:00Z",
        },
        {"type": "track", "event": "B", "userId": "u", "messageId": "2", "timestamp": stamp},
    ]
    if original:
        msgs[1]["originalTimestamp"] = "2024-01-02T00:00:00Z"
    path = f"{tmp_path}/events.{suffix}"
    if suffix == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        # (every row's keys: from_pylist reads the first row's only)
        keys = list(dict.fromkeys(k for m in msgs for k in m))
        pq.write_table(pa.table({k: [m.get(k) for m in msgs] for k in keys}), path)
    else:
        write_jsonl(msgs, path)
    g = ir.IdentityGraph()
    g.ingest(msgs[:1])
    for by in (None, "day"):
        want = _answer(lambda b=by: analytics.unique_users(g, path, by=b, engine="python"))
        got = _answer(lambda b=by: analytics.unique_users(g, path, by=b, engine="duckdb"))
        assert got == want, by
    want = _answer(lambda: analytics.funnel(g, path, steps=["A", "B"], within=DAY, engine="python"))
    got = _answer(lambda: analytics.funnel(g, path, steps=["A", "B"], within=DAY, engine="duckdb"))
    assert got == want
