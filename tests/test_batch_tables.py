"""The tables phase of batch.resolve takes shortcuts (docs/batch.md, The method, step 5): the
conflicted engine's profiles and refusals read from its arrays in bulk, the canonical id of
an untouched component as a group-wise minimum with the value compared only on ties, a
profile's columnar traits merged in event order, a company's columnar traits merged once per
distinct traits. Each test here is built so that a shortcut that diverged from what the
online engine presents would fail it."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import identityres as ir
from identityres._events import MAX_TIMESTAMP, MIN_TIMESTAMP
from identityres._profiles import utc
from tests.test_batch import actual_tables, expected_tables, online, operated_streams

pa = pytest.importorskip("pyarrow")
batch = pytest.importorskip("identityres.batch")
np = pytest.importorskip("numpy")


def _same(events: list[Any], rules: ir.Rules, source: Any = None) -> Any:
    g = online(events, rules)
    result = batch.resolve(events if source is None else source, rules=rules)
    want, got = expected_tables(g), actual_tables(result)
    for table in want:
        assert got[table] == want[table], table
    return result


def _table(messages: list[dict[str, Any]]) -> Any:
    """Messages as an Arrow table of text columns (JSON text for objects), every key a
    column (``from_pylist`` alone takes the first row's)."""
    keys = list(dict.fromkeys(k for m in messages for k in m))
    return pa.table(
        {
            k: pa.array(
                [json.dumps(m[k]) if isinstance(m.get(k), dict) else m.get(k) for m in messages],
                pa.string(),
            )
            for k in keys
        }
    )


@settings(max_examples=200)
@given(
    rows=st.lists(
        st.tuples(st.integers(0, 5), st.integers(0, 3), st.sampled_from(["b", "a", "ab", "é", ""])),
        max_size=30,
    )
)
def test_smallest_is_the_minimum_of_key_then_value(rows: list[tuple[int, int, str]]) -> None:
    # (few groups, keys and values: ties on the key, which the value must break)
    group = np.array([g for g, _, _ in rows], dtype=np.int64)
    key = np.array([k for _, k, _ in rows], dtype=np.int64)
    values = pa.array([v for _, _, v in rows], pa.string())
    got = batch._smallest(group, key, values).tolist()
    want = [
        min((i for i, row in enumerate(rows) if row[0] == g), key=lambda i: rows[i][1:])
        for g in sorted({g for g, _, _ in rows})
    ]
    # (equal rows are interchangeable: compare what was chosen)
    assert [rows[i] for i in got] == [rows[i] for i in want]


@settings(max_examples=300)
@given(
    seconds=st.lists(
        st.one_of(
            st.floats(MIN_TIMESTAMP, MAX_TIMESTAMP),
            # (exact halves of a microsecond: where rounding half to even decides)
            st.integers(int(MIN_TIMESTAMP) * 2_000_000, int(MAX_TIMESTAMP) * 2_000_000).map(
                lambda n: n / 2_000_000
            ),
            st.integers(-10, 10).map(lambda n: n * 0.5e-6),
        ),
        max_size=20,
    )
)
def test_timestamps_round_as_profile_first_seen(seconds: list[float]) -> None:
    # both parts' first/last seen are made by _timestamps; Profile.first_seen by utc()
    got = batch._timestamps(np.array(seconds, dtype=np.float64)).to_pylist()
    assert got == [utc(s) for s in seconds]


def test_ties_on_the_first_event_are_broken_by_the_value() -> None:
    # Two identifiers of one kind first seen in one event: the same (kind, first key), so
    # R5 takes the smaller value. Untouched (the limit allows two user ids), the smaller
    # value first and second, and conflicted (a forced merge puts the component in the engine).
    events: list[Any] = [
        ir.Alias(user_id="u-b", previous_id=("user_id", "u-a"), timestamp=10, event_id="e1"),
        ir.Alias(user_id="u-e", previous_id=("user_id", "u-f"), timestamp=11, event_id="e5"),
        ir.Alias(user_id="u-d", previous_id=("user_id", "u-c"), timestamp=12, event_id="e2"),
        ir.Identify(user_id="u-d", anonymous_id="a-9", timestamp=13, event_id="e3"),
        ir.Merge(a=("user_id", "u-d"), b=("anonymous_id", "a-9"), timestamp=14, event_id="e4"),
    ]
    result = _same(events, ir.Rules(limits={"user_id": 2}))
    ids = {r["value"]: r["profile_id"] for r in result.identity_map.to_pylist()}
    assert ids["u-b"] == "user_id:u-a" and ids["u-f"] == "user_id:u-e"
    assert ids["u-d"] == "user_id:u-c"
    assert result.stat("conflicted_profiles") == 1


def test_conflicted_ties_on_the_timestamp_are_broken_by_the_event_id() -> None:
    # One timestamp, two events: the earlier event id is first seen, whatever the values
    # say (R5, and the identified user: the smallest (first_ts, first_eid, value))
    events: list[Any] = [
        ir.Identify(user_id="u-z", anonymous_id="a-1", timestamp=5, event_id="e1"),
        ir.Identify(user_id="u-a", anonymous_id="a-1", timestamp=5, event_id="e2"),
        ir.Merge(a=("user_id", "u-z"), b=("anonymous_id", "a-1"), timestamp=9, event_id="e3"),
    ]
    result = _same(events, ir.Rules(limits={"user_id": 2}))
    (row,) = result.profiles.to_pylist()
    assert row["profile_id"] == "user_id:u-z" and row["identified_user_id"] == "u-z"
    assert result.stat("conflicted_profiles") == 1


def test_columnar_traits_merge_in_event_order_not_input_order() -> None:
    # One profile's identifies, out of order, two at one timestamp (then by messageId: "m10"
    # before "m9"), each key's newest write winning; another profile also holding a record
    # lane's set_once (a row with a set_once column), merged by keep() with it.
    rows = [
        ("u1", "2024-05-01T09:00:05Z", "m9", {"plan": "late", "seats": 1}),
        ("u1", "2024-05-01T09:00:01Z", "m1", {"plan": "first", "colour": "red"}),
        ("u1", "2024-05-01T09:00:05Z", "m10", {"plan": "tie-first", "seats": 2}),
        ("u1", "2024-05-01T09:00:03Z", "m3", {"colour": "blue"}),
        ("u2", "2024-05-01T09:00:02Z", "m2", {"plan": "pro"}),
        ("u2", "2024-05-01T09:00:04Z", "m4", {"plan": "team"}),
    ]
    messages: list[dict[str, Any]] = [
        {"type": "identify", "userId": u, "timestamp": ts, "messageId": m, "traits": t}
        for u, ts, m, t in rows
    ]
    messages.append(
        {
            "type": "identify",
            "userId": "u2",
            "timestamp": "2024-05-01T09:00:00Z",
            "messageId": "m0",
            "traits": {"plan": "old"},
            "set_once": {"plan": "once", "since": 2020},
        }
    )
    result = _same(messages, ir.Rules(), source=_table(messages))
    traits = {r["user_id"]: json.loads(r["traits"]) for r in result.profiles.to_pylist()}
    assert traits["u1"] == {"plan": "late", "seats": 1, "colour": "blue"}
    assert traits["u2"] == {"plan": "team", "since": 2020}


def test_company_traits_newest_event_of_each_distinct_traits() -> None:
    # Company c1's traits: A, then B, then A again (one text, a newer event): A wins; two raw
    # ids of one company (" c2" normalizes to "c2"); and c3 in a conflicted component too.
    a = {"plan": "a", "n": 1}
    b = {"plan": "b"}
    groups = [
        ("a1", "c1", "2024-05-01T09:00:01Z", a),
        ("a2", "c1", "2024-05-01T09:00:02Z", b),
        ("a3", "c1", "2024-05-01T09:00:03Z", a),
        ("a1", "c2", "2024-05-01T09:00:04Z", {"x": 1}),
        ("a2", " c2", "2024-05-01T09:00:05Z", {"x": 2}),
        ("a4", "c3", "2024-05-01T09:00:06Z", {"y": 1}),
    ]
    messages: list[dict[str, Any]] = [
        {"type": "group", "anonymousId": anon, "groupId": cid, "timestamp": ts, "traits": t}
        for anon, cid, ts, t in groups
    ]
    messages += [
        {
            "type": "identify",
            "userId": "u1",
            "anonymousId": "a4",
            "timestamp": "2024-05-01T09:01:00Z",
        },
        {
            "type": "identify",
            "userId": "u2",
            "anonymousId": "a4",
            "timestamp": "2024-05-01T09:02:00Z",
        },
        {
            "type": "group",
            "userId": "u2",
            "groupId": "c3",
            "timestamp": "2024-05-01T09:03:00Z",
            "traits": {"y": 2},
        },
    ]
    for i, m in enumerate(messages):
        m["messageId"] = f"m{i}"
    result = _same(messages, ir.Rules(), source=_table(messages))
    companies = {r["company_id"]: r for r in result.companies.to_pylist()}
    assert json.loads(companies["c1"]["traits"]) == a
    assert json.loads(companies["c2"]["traits"]) == {"x": 2}
    assert len(companies["c3"]["profile_ids"]) == 2 and result.stat("refusals") == 1


@settings(max_examples=40, suppress_health_check=[HealthCheck.too_slow])
@given(stream=operated_streams(users=3, forgets=True))
def test_conflicted_tables_in_the_engines_order(stream: list[Any]) -> None:
    # every table of the conflicted part, row for row, in the order IdentityGraph presents
    # them (profiles by root, identifiers by (kind, value), refusals by event key), with
    # forced merges, splits and erasures; an all-conflicted stream (max_profile_size=1 would
    # refuse everything: a limit of one identifier per kind sends most components there)
    rules = ir.Rules(limits={"anonymous_id": 1})
    try:
        g = online(stream, rules)
    except ir.ValidationError:
        return
    result = _same(stream, rules)
    n = int(result.stat("conflicted_profiles"))
    engine_rows = [
        (p.id, p.user_id, p.identified_user_id, p.first_seen, p.last_seen)
        for p in result._conflicted.profiles()
    ]
    table = result.profiles.slice(result.profiles.num_rows - n).to_pylist()
    assert [
        (r["profile_id"], r["user_id"], r["identified_user_id"], r["first_seen"], r["last_seen"])
        for r in table
    ] == engine_rows
    idmap = result.identity_map.slice(result.identity_map.num_rows - len(result._conflicted))
    assert [(r["kind"], r["value"], r["profile_id"]) for r in idmap.to_pylist()] == [
        (i.kind, i.value, p.id)
        for p in result._conflicted.profiles()
        for i in sorted(p.all_identifiers(), key=lambda i: (i.kind, i.value))
    ]
    assert result.refusals.num_rows == len(list(g.refusals()))
