"""The vectorized lanes of batch.resolve give the online engine's answer (docs/batch.md, The
method): JSONL read into columns, identifier values checked vectorized (values needing
normalization, blocked values), and the keys the rules' extraction reads inside properties."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import identityres as ir
from identityres import strategies as irst
from identityres.testing import snapshot, snapshot_diff
from tests.test_batch import _as_text_columns, actual_tables, expected_tables, online

pa = pytest.importorskip("pyarrow")
batch = pytest.importorskip("identityres.batch")
np = pytest.importorskip("numpy")

#: values that exercise the vectorized check: whitespace at either end (normalized), blocked
#: words in any case, quoted blocked words, long values, non-ASCII, control characters
AWKWARD = st.one_of(
    st.sampled_from(
        [
            "u1",
            " u1",
            "u1\t",
            "null",
            "NULL",
            "Undefined",
            '"null"',
            "'guest'",
            '"',
            "",
            " ",
            "x" * 401,
            "x" * 400,
            "é1",
            "u\x00",
            "\x1cu1",
            "0",
            "-1",
            "Anonymous",
        ]
    ),
    st.text(max_size=6),
)


@st.composite
def awkward_messages(draw: st.DrawFn) -> list[dict[str, Any]]:
    """Segment messages whose ids are drawn from :data:`AWKWARD`, some carrying keys the
    extraction reads (``properties.email``, ``context.traits``), some of types the columns
    cannot hold (an int ``userId``), some without a timestamp."""
    out = []
    for i, msg in enumerate(draw(st.lists(irst.segment_messages(blocked=True), max_size=25))):
        msg = dict(msg)
        for key in ("userId", "anonymousId"):
            if key in msg and draw(st.booleans()):
                msg[key] = draw(AWKWARD)
        extra = draw(st.integers(0, 7))
        if extra == 1 and msg["type"] in ("track", "page", "screen"):
            msg["properties"] = {"email": draw(st.sampled_from(["a@x.io", " A@x.io", "null"]))}
        elif extra == 2:
            msg["context"] = {"traits": {"email": "c@x.io"}}
        elif extra == 3 and "userId" in msg:
            msg["userId"] = draw(st.integers(0, 3))
        elif extra == 4:
            msg.pop("timestamp", None)
            msg["originalTimestamp"] = "2024-05-01T12:00:00Z"
        elif extra == 5:
            msg["integrations"] = {"All": True}
        elif extra == 6 and msg["type"] in ("identify", "group"):
            # an identify's traits.email is an identifier (extracted); a group's is not
            msg["traits"] = {"email": draw(AWKWARD), "plan": draw(st.sampled_from([1, "pro"]))}
        elif extra == 7:
            msg["traits"] = draw(st.sampled_from([{}, {"n": float("nan")}, {"big": 1e300}]))
        msg["messageId"] = f"m{i}" if draw(st.integers(0, 5)) else "m0"
        out.append(msg)
    return out


def _assert_same(messages: list[dict[str, Any]], source: Any) -> None:
    rules = ir.Rules()
    try:
        g = online(messages, rules)
    except ir.ValidationError as exc:
        with pytest.raises(type(exc)):
            batch.resolve(source, rules=rules)
        return
    result = batch.resolve(source, rules=rules)
    assert actual_tables(result) == expected_tables(g)
    assert result.blocked_values() == g.stats().blocked_values
    a, b = snapshot(g), snapshot(result.graph())
    assert a == b, snapshot_diff(a, b)


@settings(max_examples=25, suppress_health_check=[HealthCheck.too_slow])
@given(messages=awkward_messages())
def test_jsonl_read_into_columns_equals_online(messages: list[dict[str, Any]]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "events.jsonl"
        path.write_text("".join(json.dumps(m) + "\n" for m in messages))
        _assert_same(messages, path)


def _table_rows(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    # (a table has only the Segment columns: what is not one is not in the table either;
    # nor can its text column hold an int userId)
    return [
        {k: v for k, v in m.items() if k in batch.COLUMNS}
        for m in messages
        if not isinstance(m.get("userId"), int)
    ]


@settings(max_examples=25, suppress_health_check=[HealthCheck.too_slow])
@given(messages=awkward_messages())
def test_arrow_table_of_awkward_values_equals_online(messages: list[dict[str, Any]]) -> None:
    rows = _table_rows(messages)
    if rows:
        _assert_same(rows, _as_text_columns(rows))


@settings(max_examples=200)
@given(value=AWKWARD, patterns=st.booleans())
def test_a_value_called_plain_is_its_own_normal_form_and_not_blocked(
    value: str, patterns: bool
) -> None:
    from identityres._events import RecordBuilder

    rules = ir.Rules(blocked_patterns=[r"^x+$"] if patterns else []).compiled
    build = RecordBuilder(rules, lambda: 0.0)
    (plain,) = batch._plain_values(pa.array([value], pa.string()), rules, rules.user)
    if plain:
        assert build.identifier_value("user_id", rules.user, value) == value
        assert rules.blocked_reason(value) is None


def test_ordinary_values_are_plain_and_the_rest_go_to_the_builder() -> None:
    rules = ir.Rules().compiled
    values = ["u1", "a-1 b", " u1", "null", "NULL", '"guest"', "x" * 401, "é", "0"]
    got = batch._plain_values(pa.array(values, pa.string()), rules, rules.user).tolist()
    assert got == [True, True, False, False, True, False, False, False, False]  # NULL: allowed
    with_patterns = ir.Rules(blocked_patterns=["^z"]).compiled
    assert not batch._plain_values(pa.array(["u1"]), with_patterns, with_patterns.user).any()


def test_properties_holding_an_extracted_key_leave_the_columnar_lane() -> None:
    messages = [
        {
            "type": "track",
            "event": "Paid",
            "anonymousId": "a1",
            "properties": {"email": "x@y.io", "plan": "pro"},
            "timestamp": "2024-01-01T00:00:00Z",
            "messageId": "m1",
        },
        {
            "type": "page",
            "anonymousId": "a2",
            "properties": {"path": "/"},
            "timestamp": "2024-01-01T00:00:01Z",
            "messageId": "m2",
        },
    ]
    result = batch.resolve(_as_text_columns(messages))
    rows = {(r["kind"], r["value"]): r["profile_id"] for r in result.identity_map.to_pylist()}
    assert rows[("anonymous_id", "a1")] == "email:x@y.io"
    assert len(result._events.py) == 1  # (the page row stays vectorized)


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=4),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner),
    max_leaves=12,
)


@settings(max_examples=300)
@given(value=st.dictionaries(st.text(max_size=4), JSON, max_size=4))
def test_traits_called_plain_json_read_as_the_builder_reads_them(value: dict[str, Any]) -> None:
    from identityres._events import _check_mapping, _json_data

    text = json.dumps(value)
    (plain,) = batch._plain_json(pa.array([text], pa.string()))
    if plain:
        parsed = json.loads(text)
        assert _json_data("traits", _check_mapping("traits", parsed)) == (parsed or None)


def _decided_fields(rec: Any) -> tuple[Any, ...]:
    # what ``Engine.apply`` reads of a record (it stores the fingerprint, never reads it,
    # and never reads ``content``)
    return (
        rec.etype,
        rec.ts,
        rec.event_id,
        rec.ids,
        rec.blocked,
        rec.traits,
        rec.set_once,
        rec.company_id,
        rec.company_traits,
    )


def _assert_decided_records_are_the_builders(source: Any, rules: ir.Rules) -> None:
    try:
        result = batch.resolve(source, rules=rules)
    except ir.ValidationError:
        return
    events = result._events
    lane = events.lane_size
    every = np.arange(len(events), dtype=np.int64)
    direct = [_decided_fields(r) for r in events.decided(every)]
    built = [_decided_fields(r) for _, r in events.records(every.tolist())]
    assert direct == built
    assert lane == 0 or any(r.fingerprint == b"" for r in events.decided(every[:lane]))


@settings(max_examples=40, suppress_health_check=[HealthCheck.too_slow])
@given(messages=awkward_messages(), patterns=st.booleans())
def test_records_made_for_the_engine_from_the_lane_are_the_builders(
    messages: list[dict[str, Any]], patterns: bool
) -> None:
    # the engine deciding the conflicted components is fed the columnar lane's rows as
    # records made directly from the lane's columns: each must be what ``RecordBuilder``
    # makes of the row (identifiers in the same order, the same traits and company), or
    # the engine would decide differently from the online one
    rules = ir.Rules(blocked_patterns=[r"^x+$"]) if patterns else ir.Rules()
    rows = _table_rows(messages)
    if rows:
        _assert_decided_records_are_the_builders(_as_text_columns(rows), rules)


@settings(max_examples=25, suppress_health_check=[HealthCheck.too_slow])
@given(stream=irst.streams(users=4, companies=True), conflicted=st.booleans())
def test_records_made_for_the_engine_from_realistic_rows_are_the_builders(
    stream: list[Any], conflicted: bool
) -> None:
    from tests.test_batch import to_message

    # (limits of one user id and one email make most components conflicted)
    rules = ir.Rules(limits={"user_id": 1, "email": 1}) if conflicted else ir.Rules()
    _assert_decided_records_are_the_builders(
        _as_text_columns([to_message(e) for e in stream]), rules
    )


def _as_dictionary_chunks(table: Any, cut: int) -> Any:
    # text columns as dictionaries, in two chunks with their own dictionaries (as Parquet
    # row groups are read: ``batch._read_parquet``)
    columns = {}
    for name in table.column_names:
        col = table.column(name).combine_chunks()
        if pa.types.is_string(col.type) and name != "messageId":
            parts = [col.slice(0, cut), col.slice(cut)]
            col = pa.chunked_array([p.dictionary_encode() for p in parts])
        columns[name] = col
    return pa.table(columns)


@settings(max_examples=25, suppress_health_check=[HealthCheck.too_slow])
@given(messages=awkward_messages(), cut=st.integers(0, 25))
def test_dictionary_columns_in_chunks_equal_online(
    messages: list[dict[str, Any]], cut: int
) -> None:
    rows = _table_rows(messages)
    if rows:
        table = _as_text_columns(rows)
        _assert_same(rows, _as_dictionary_chunks(table, min(cut, table.num_rows)))


@settings(max_examples=25, suppress_health_check=[HealthCheck.too_slow])
@given(stream=irst.streams(users=4, companies=True), cut=st.integers(0, 60))
def test_parquet_read_as_dictionaries_equals_online(stream: list[Any], cut: int) -> None:
    import pyarrow.parquet as pq

    from tests.test_batch import to_message

    messages = [to_message(e) for e in stream]
    table = _as_text_columns(messages)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "events.parquet"
        # small row groups: several dictionaries per column
        pq.write_table(table, path, row_group_size=max(1, min(cut, table.num_rows) or 1))
        assert pa.types.is_dictionary(batch._read_parquet(path).schema.field("type").type)
        _assert_same(messages, path)


@settings(max_examples=300)
@given(
    values=st.lists(
        st.one_of(st.none(), st.sampled_from(["", "a", "ab", "é"]), st.text("ab", min_size=1)),
        max_size=40,
    )
    | st.integers(1, 40).flatmap(
        lambda width: st.lists(st.text("abc", min_size=width, max_size=width), max_size=40)
    ),
    start=st.integers(0, 3),
)
def test_once_is_exactly_the_ids_that_occur_once(values: list[str | None], start: int) -> None:
    # (a slice: the Arrow buffers start before the array)
    arr = pa.array(["x" * 9] * start + values, pa.string()).slice(start)
    want = [v is not None and values.count(v) == 1 for v in values]
    assert batch._once(arr).tolist() == want


@settings(max_examples=100)
@given(
    sizes=st.lists(st.integers(0, 5), min_size=1, max_size=5),
    data=st.data(),
)
def test_take_rows_is_take(sizes: list[int], data: st.DataObject) -> None:
    values = [f"v{i}" for i in range(sum(sizes))]
    chunks, at = [], 0
    for size in sizes:
        chunks.append(pa.array(values[at : at + size], pa.string()).dictionary_encode())
        at += size
    table = pa.table({"v": pa.chunked_array(chunks, pa.dictionary(pa.int32(), pa.string()))})
    rows = sorted(data.draw(st.sets(st.integers(0, max(0, len(values) - 1)))))
    rows = [r for r in rows if r < len(values)]
    got = batch._take_rows(table, np.array(rows, dtype=np.int64))
    assert got.column("v").to_pylist() == [values[r] for r in rows]


@st.composite
def profile_writes(draw: st.DrawFn) -> list[dict[str, Any]]:
    """Identify and group calls of two users at random times: several companies per
    profile (two raw ids of one company among them), traits written by one or several
    events, some events read by the record lane (no messageId: a derived id)."""
    out: list[dict[str, Any]] = []
    for i in range(draw(st.integers(1, 10))):
        user = draw(st.sampled_from(["u1", "u2"]))
        second = draw(st.integers(0, 59))
        msg: dict[str, Any] = {
            "userId": user,
            "timestamp": f"2024-05-01T09:00:{second:02d}Z",
            "messageId": f"m{i}",
        }
        if draw(st.booleans()):
            msg["type"] = "group"
            msg["groupId"] = draw(st.sampled_from(["c1", " c1", "c2", "c3"]))
            if draw(st.booleans()):
                msg["traits"] = {"size": draw(st.integers(0, 3))}
        else:
            msg["type"] = "identify"
            keys = draw(st.lists(st.sampled_from(["plan", "name", "seats"]), max_size=2))
            msg["traits"] = {k: draw(st.integers(0, 3)) for k in keys}
            if draw(st.booleans()):
                msg["anonymousId"] = f"a-{user}"
        if not draw(st.integers(0, 3)):
            del msg["messageId"]
        out.append(msg)
    return out


@settings(max_examples=60, suppress_health_check=[HealthCheck.too_slow])
@given(messages=profile_writes())
def test_traits_and_company_links_of_untouched_profiles_equal_online(
    messages: list[dict[str, Any]],
) -> None:
    # (the profiles are untouched: one user id each; their traits and companies are what
    # the tables merge outside the engine)
    _assert_same(messages, _as_text_columns(messages))


@st.composite
def redelivered_messages(draw: st.DrawFn) -> list[dict[str, Any]]:
    """Segment messages, some delivered again later: alike (a duplicate), with another
    timestamp or other traits (a conflict, or a later key), or with ``-0.0`` for ``0.0``."""
    plain = irst.segment_messages(hostile=False)
    out = [dict(m) for m in draw(st.lists(plain, min_size=1, max_size=12))]
    for i, msg in enumerate(out):
        msg["messageId"] = f"m{i}"
    for _ in range(draw(st.integers(0, 6))):
        again = dict(draw(st.sampled_from(out)))
        change = draw(st.integers(0, 5))
        if change == 1:
            again["timestamp"] = "2024-06-01T00:00:00Z"
        elif change == 2:
            again["traits"] = {"plan": "other"}
        elif change == 3:
            again["traits"] = {"score": 0.0}
            out.append({**again, "traits": {"score": -0.0}})
        out.insert(draw(st.integers(0, len(out))), again)
    return out


@settings(max_examples=40, suppress_health_check=[HealthCheck.too_slow])
@given(messages=redelivered_messages())
def test_redelivered_rows_equal_online(messages: list[dict[str, Any]]) -> None:
    # (hostile=False: most rows are plain, so most redeliveries are the columnar lane's)
    rows = [{k: v for k, v in m.items() if k in batch.COLUMNS} for m in messages]
    try:
        duplicates = ir.IdentityGraph().ingest(rows).duplicates
    except ir.ValidationError:
        duplicates = None
    _assert_same(rows, _as_text_columns(rows))
    if duplicates is not None:
        assert batch.resolve(_as_text_columns(rows)).stat("duplicates") == duplicates
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "events.jsonl"
        path.write_text("".join(json.dumps(m) + "\n" for m in messages))
        _assert_same(messages, path)


def _as_odd_dictionaries(table: Any, index_type: Any) -> Any:
    # the text columns Parquet is read with as dictionaries (``batch._read_parquet``), as
    # dictionaries Arrow allows but Parquet never writes: indices of another
    # integer type (unsigned too), and a null *value* in the dictionary that the rows' nulls
    # point at (a valid index), next to a null index
    columns = {}
    for name in table.column_names:
        col = table.column(name).combine_chunks()
        if pa.types.is_string(col.type) and name in batch._DICTIONARY_COLUMNS:
            values = [v for v in dict.fromkeys(col.to_pylist()) if v is not None] + [None]
            codes = [
                values.index(v) if v is not None or i % 2 else None
                for i, v in enumerate(col.to_pylist())
            ]
            col = pa.DictionaryArray.from_arrays(
                pa.array(codes, index_type), pa.array(values, pa.string())
            )
        columns[name] = col
    return pa.table(columns)


@settings(max_examples=25, suppress_health_check=[HealthCheck.too_slow])
@given(
    messages=awkward_messages(),
    index_type=st.sampled_from([pa.int8(), pa.uint8(), pa.uint16(), pa.uint32(), pa.int64()]),
)
def test_dictionaries_with_null_values_and_unsigned_indices_equal_online(
    messages: list[dict[str, Any]], index_type: Any
) -> None:
    rows = _table_rows(messages)
    if rows:
        _assert_same(rows, _as_odd_dictionaries(_as_text_columns(rows), index_type))


def test_a_null_value_in_a_dictionary_is_a_null() -> None:
    rows: list[dict[str, Any]] = [
        {
            "type": "track",
            "event": "e",
            "userId": "u1",
            "messageId": "m1",
            "timestamp": "2024-01-01T00:00:00Z",
            "properties": {"a": 1},
        },
        {
            "type": "track",
            "event": "e",
            "anonymousId": "a1",
            "messageId": "m2",
            "timestamp": "2024-01-01T00:00:01Z",
        },
        {
            "type": "identify",
            "userId": "u2",
            "messageId": "m3",
            "timestamp": "2024-01-01T00:00:02Z",
            "traits": {"plan": "pro"},
        },
        {
            "type": "identify",
            "anonymousId": "a1",
            "messageId": "m4",
            "timestamp": "2024-01-01T00:00:03Z",
        },
    ]
    table = _as_text_columns(rows)
    for index_type in (pa.int32(), pa.uint8()):
        odd = _as_odd_dictionaries(table, index_type)
        # (the second row's null properties and userId are a valid index to a null value)
        assert odd.column("properties").chunk(0).indices[1].is_valid
        _assert_same(rows, odd)
