"""The fast paths of batch.resolve's decode phase give exactly what the slower readings they
replace give (docs/batch.md, The method; docs/decisions.md): dictionary chunks unified over
their distinct dictionaries, traits texts read by one ``json.loads`` of their array, and
identifiers found in traits checked vectorized before the builder is asked."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import identityres as ir
from tests.test_batch_lanes import AWKWARD, JSON

pa = pytest.importorskip("pyarrow")
batch = pytest.importorskip("identityres.batch")
np = pytest.importorskip("numpy")


def _unified_codes(col: Any) -> tuple[Any, Any]:
    """What ``_coded`` gave before: ``unify_dictionaries`` over every chunk."""
    chunks = col.unify_dictionaries().chunks
    values = chunks[0].dictionary.cast(pa.string())
    codes = np.concatenate(
        [pc_fill(c.indices.cast(pa.int64())).to_numpy(zero_copy_only=False) for c in chunks]
    )
    null_value = np.append(values.is_null().to_numpy(zero_copy_only=False), False)
    codes[null_value[codes]] = -1
    return codes, values


def pc_fill(indices: Any) -> Any:
    import pyarrow.compute as pc

    return pc.fill_null(indices, -1)


DICTIONARIES = st.lists(
    st.lists(st.sampled_from(["a", "b", "c", "d", "é", ""]) | st.none(), min_size=1, max_size=5),
    min_size=1,
    max_size=4,
)


@settings(max_examples=200)
@given(
    dictionaries=DICTIONARIES,
    layout=st.lists(st.tuples(st.integers(0, 3), st.lists(st.integers(-1, 4), max_size=6))),
)
def test_dictionary_codes_are_unify_dictionaries_codes(
    dictionaries: list[list[str | None]], layout: list[tuple[int, list[int]]]
) -> None:
    # chunks sharing one dictionary object (as the Parquet reader hands a row group's
    # batches), others with their own (equal or not, of equal lengths or not), null indices
    # and null dictionary entries
    shared = [pa.array(d, pa.string()) for d in dictionaries]
    chunks = []
    sources: set[int] = set()  # (which dictionary objects the chunks hold)
    for j, (which, indices) in enumerate(layout):
        if which >= len(shared):  # (a copy of an equal dictionary: other buffers)
            d = pa.array(shared[0].to_pylist(), pa.string())
            sources.add(-1 - j)
        else:
            d = shared[which]
            sources.add(which)
        idx = [None if i < 0 else i % len(d) for i in indices]
        chunks.append(pa.DictionaryArray.from_arrays(pa.array(idx, pa.int32()), d))
    if not chunks:
        return
    col = pa.chunked_array(chunks)
    try:
        want_codes, want_values = _unified_codes(col)
    except pa.ArrowInvalid:  # ("cannot yet unify dictionaries with nulls": _coded does)
        want_codes = want_values = None
    codes, values = batch._coded(pa.table({"userId": col}), "userId")
    assert [None if c < 0 else values[c].as_py() for c in codes] == col.to_pylist()
    if want_values is not None and all(len(set(d)) == len(d) for d in dictionaries):
        # (a dictionary repeating a value, which Parquet never writes, may keep it twice
        # where unify_dictionaries merged it: the rows' values are the same)
        assert values.equals(want_values)
        assert codes.tolist() == want_codes.tolist()


def test_chunks_with_other_dictionaries_of_one_length_are_not_confused() -> None:
    one = pa.array(["a", "b"], pa.string())
    other = pa.array(["c", "d"], pa.string())
    col = pa.chunked_array(
        [
            pa.DictionaryArray.from_arrays(pa.array([0, 1], pa.int32()), one),
            pa.DictionaryArray.from_arrays(pa.array([1, 0], pa.int32()), other),
            pa.DictionaryArray.from_arrays(pa.array([1, None], pa.int32()), one),
            pa.DictionaryArray.from_arrays(pa.array([0], pa.int32()), other.slice(1)),
        ]
    )
    codes, values = batch._coded(pa.table({"userId": col}), "userId")
    assert values.to_pylist() == ["a", "b", "c", "d"]
    assert [None if c < 0 else values[c].as_py() for c in codes] == [
        "a",
        "b",
        "d",
        "c",
        "b",
        None,
        "d",
    ]


def test_dictionaries_with_null_entries_in_several_chunks_read_as_online() -> None:
    # (Arrow allows a dictionary holding a null, which unify_dictionaries refuses: "cannot
    # yet unify dictionaries with nulls"; a row indexing it is a null, as the builder reads it)
    from tests.test_batch import actual_tables, expected_tables, online

    rows = [("identify", "u1", "a1"), ("identify", "u2", "a1"), ("identify", None, "a2")]
    table = pa.table(
        {
            "type": [r[0] for r in rows],
            "userId": pa.chunked_array(
                [
                    pa.DictionaryArray.from_arrays(
                        pa.array([0, 2], pa.int32()), pa.array(["u1", None, "u2"])
                    ),
                    pa.DictionaryArray.from_arrays(
                        pa.array([1], pa.int32()), pa.array(["u2", None])
                    ),
                ]
            ),
            "anonymousId": [r[2] for r in rows],
            "messageId": [f"m{i}" for i in range(len(rows))],
            "timestamp": [f"2024-01-01T00:00:0{i}Z" for i in range(len(rows))],
        }
    )
    messages = [{k: v for k, v in m.items() if v is not None} for m in table.to_pylist()]
    result = batch.resolve(table)
    assert actual_tables(result) == expected_tables(online(messages, ir.Rules()))


#: texts that a loose check would call one object, but which are not, or not alone
NOT_ONE_OBJECT = [
    "{},{}",
    '{"a":"},{"b":1}',
    '{"a":1},{"b":2}',
    '{"a":[1,2]}',
    '{"a":{"b":1}}',
    '{"a":1,}',
    '{"a":01}',
    '{"a":NaN}',
    '{"a":"\x01"}',
    '\ufeff{"a":1}',
    '{"a":1}x',
    '{"a":1} {"b":2}',
    '{"a" 1}',
    "",
    "[1",
    "2]",
]


@pytest.mark.parametrize("text", NOT_ONE_OBJECT)
def test_texts_that_are_not_one_flat_object_are_read_alone(text: str) -> None:
    assert not batch._flat_json(pa.array([text], pa.string())).any()


FLAT = st.dictionaries(
    st.text(max_size=4),
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=4),
    max_size=4,
)


@settings(max_examples=300)
@given(
    values=st.lists(FLAT | JSON, min_size=1, max_size=6),
    indent=st.sampled_from([None, 1]),
    pieces=st.lists(st.sampled_from(NOT_ONE_OBJECT), max_size=3),
)
def test_flat_texts_joined_read_as_each_alone(
    values: list[Any], indent: int | None, pieces: list[str]
) -> None:
    texts = [json.dumps(v, indent=indent) for v in values] + pieces
    flat = batch._flat_json(pa.array(texts, pa.string()))
    chosen = [t for t, f in zip(texts, flat.tolist(), strict=True) if f]
    for t in chosen:
        assert isinstance(json.loads(t), dict)
    joined = json.loads("[" + ",".join(chosen) + "]")
    assert repr(joined) == repr([json.loads(t) for t in chosen])
    # (the benchmark's traits: flat objects, read together)
    assert batch._flat_json(pa.array(['{"plan":"pro","seats":3,"email":"u@x.io"}'])).all()


TRAITS = st.dictionaries(
    st.sampled_from(["email", "phone", "plan", "x"]),
    AWKWARD | st.integers(-3, 3) | st.booleans() | st.none() | JSON,
    max_size=3,
)


def _reading(texts: list[str | None], rules: Any, fast: bool) -> Any:
    from identityres._events import RecordBuilder

    build = RecordBuilder(rules, lambda: 0.0)
    extract, keys = batch._traits_extraction(rules)
    arr = pa.array(texts, pa.string())
    wanted = np.array([t is not None for t in texts], dtype=bool)
    plain = batch._plain_json(arr) if fast else None
    flat = batch._flat_json(arr) if fast else None
    good, out, found = batch._traits_of(texts, wanted, build, rules, extract, keys, plain, flat)
    return good.tolist(), out, found


@settings(max_examples=300)
@given(
    values=st.lists(TRAITS, max_size=6),
    raw=st.lists(st.sampled_from([*NOT_ONE_OBJECT, "null", "[]", '"x"']), max_size=2),
    rules_variant=st.sampled_from(["default", "patterns", "normalizer", "blocked"]),
)
def test_traits_read_fast_as_one_at_a_time_through_the_builder(
    values: list[dict[str, Any]], raw: list[str], rules_variant: str
) -> None:
    rules = {
        "default": ir.Rules(),
        "patterns": ir.Rules(blocked_patterns=[r"^x+$"]),
        "normalizer": ir.Rules(normalizers={"email": ir.normalize_email}),
        "blocked": ir.Rules(blocked_values=["u1", "0"]),
    }[rules_variant].compiled
    texts: list[str | None] = [json.dumps(v) for v in values] + raw + [None]
    good, out, found = _reading(texts, rules, True)
    assert repr((good, out, found)) == repr(_reading(texts, rules, False))
    # one text at a time, as the builder reads it: the traits it makes, what it extracts
    from identityres._events import RecordBuilder

    build = RecordBuilder(rules, lambda: 0.0)
    for j, (text, ok) in enumerate(zip(texts, good, strict=True)):
        if not ok:
            assert all(per_text[j] is None for per_text in found.values())
            continue
        pairs = [(k, per_text[j]) for k, per_text in found.items() if per_text[j] is not None]
        assert text is not None
        message = {"type": "identify", "userId": "u", "traits": json.loads(text)}
        message.update(timestamp="2024-01-01T00:00:00Z", messageId="m")
        rec = build.from_message(message)
        assert repr(rec.traits) == repr(out[j])
        names = rules.kind_names
        assert sorted((names[k], v) for k, v in pairs) == sorted(
            (names[k], v) for k, v in rec.ids if names[k] not in ("user_id",)
        )


def test_values_found_in_traits_are_normalized_as_the_builder_normalizes_them() -> None:
    from identityres._events import RecordBuilder

    rules = ir.Rules().compiled
    build = RecordBuilder(rules, lambda: 0.0)
    email = rules.kind_names.index("email")
    raws = ["u@x.io", " u@x.io ", "null", '"guest"', "x" * 401, "é@x.io", "\ud800", 7]
    paths = {(email, r): "traits.email" for r in raws}
    got = batch._normalized(paths, build, rules)
    assert got == {
        (email, r): batch._builder_value(build, rules, "traits.email", email, r) for r in raws
    }
    assert got[email, " u@x.io "] == "u@x.io" and got[email, "null"] is None


def _redeliveries_by_python(table: Any, ids: Any, once: Any) -> list[int]:
    """What ``_redeliveries`` gave before (and still gives for other column types): rows
    grouped by id in Python, compared by the ``repr`` of their cells."""
    first_of = np.full(table.num_rows, -1, dtype=np.int64)
    maybe = np.flatnonzero(~once & ids.is_valid().to_numpy(zero_copy_only=False))
    names = [c for c in table.column_names if c in batch.COLUMNS]
    rows = table.select(names).take(pa.array(maybe, pa.int64()))
    cells = [rows.column(c).to_pylist() for c in names]
    groups: dict[str, list[int]] = {}
    for j, eid in enumerate(ids.take(pa.array(maybe, pa.int64())).to_pylist()):
        groups.setdefault(eid, []).append(j)
    for members in groups.values():
        if len(members) > 1 and len({repr([c[j] for c in cells]) for j in members}) == 1:
            at = maybe[members]
            first_of[at] = at[0]
    return first_of.tolist()


@settings(max_examples=200)
@given(
    rows=st.lists(
        st.tuples(
            st.sampled_from(["m1", "m2", "m3", "m4"]),
            st.sampled_from(["a", "b", None]),
            st.sampled_from(["x", "", None]),
        ),
        max_size=12,
    ),
    dictionary=st.booleans(),
    chunks=st.integers(1, 3),
)
def test_text_redeliveries_are_the_python_comparison(
    rows: list[tuple[str, str | None, str | None]], dictionary: bool, chunks: int
) -> None:
    ids = pa.array([r[0] for r in rows], pa.string())
    user = pa.array([r[1] for r in rows], pa.string())
    traits = pa.array([r[2] for r in rows], pa.string())
    if dictionary:
        user = user.dictionary_encode()
    table = pa.table({"messageId": ids, "userId": user, "traits": traits, "other": ids})
    if len(rows) > 1 and chunks > 1:  # (several record batches, as a read file has)
        cut = len(rows) // chunks
        table = pa.concat_tables([table.slice(0, cut), table.slice(cut)])
    once = batch._once(ids)
    got = batch._redeliveries(table, ids, once).tolist()
    assert got == _redeliveries_by_python(table, ids, once)


def test_redelivered_rows_differing_in_one_cell_are_not_one_event() -> None:
    ids = pa.array(["m1", "m2", "m1", "m2", "m1"], pa.string())
    user = pa.array(["u", "v", "u", None, "u"], pa.string())
    table = pa.table({"messageId": ids, "userId": user})
    got = batch._redeliveries(table, ids, np.zeros(5, dtype=bool)).tolist()
    assert got == [0, -1, 0, -1, 0]


ISO_TEXTS = st.sampled_from(
    [
        "2024-01-01T00:00:00Z",
        "2024-01-01T00:00:00.1Z",
        "2024-01-01T00:00:00.123456Z",
        "2024-01-01T00:00:00.1234567Z",
        "2024-01-01 00:00:00.123Z",
        "2024-01-01T00:00:00.123+00",
        "2024-01-01T00:00:0a.123Z",
        "2024-01-01T00:00:00.12éZ",
        "2024-1-01T00:00:00.1234Z",
        "20240101T000000.123456Z",
    ]
)


@settings(max_examples=300)
@given(
    texts=st.lists(ISO_TEXTS | st.text(alphabet="0123456789-T:.Z ", max_size=27), max_size=6),
    one_length=st.booleans(),
)
def test_iso_check_on_bytes_is_the_pattern(texts: list[str], one_length: bool) -> None:
    import pyarrow.compute as pc

    if one_length and texts:  # (the byte check: every text of one length)
        texts = [t for t in texts if len(t.encode()) == len(texts[0].encode())]
    arr = pa.array(texts, pa.string())
    want = pc.fill_null(pc.match_substring_regex(arr, batch._ISO), False).to_pylist()
    assert batch._iso_times(arr).tolist() == want
    sliced = pa.array(["x", *texts], pa.string()).slice(1)  # (an offset into the buffers)
    assert batch._iso_times(sliced).tolist() == want


@pytest.mark.parametrize("fraction", range(7))
def test_iso_check_on_bytes_refuses_any_one_wrong_byte(fraction: int) -> None:
    import pyarrow.compute as pc

    valid = "2024-05-01T09:01:02" + ("." + "123456"[:fraction] if fraction else "") + "Z"
    texts = [valid]
    for at in range(len(valid)):
        for wrong in ("x", "5", "-", "Z", "/"):
            if wrong != valid[at]:
                texts.append(valid[:at] + wrong + valid[at + 1 :])
    arr = pa.array(texts, pa.string())
    want = pc.fill_null(pc.match_substring_regex(arr, batch._ISO), False).to_pylist()
    assert want[0] and not all(want)
    assert batch._iso_times(arr).tolist() == want


def test_a_parquet_file_reads_as_read_table_reads_it(tmp_path: Any) -> None:
    import pyarrow.parquet as pq

    rows = {
        "type": ["track", "identify", "group", "track"] * 5,
        "userId": [None, "u1", "u2", "u1"] * 5,
        "timestamp": ["2024-01-01T00:00:00Z"] * 20,
        "messageId": [f"m{i}" for i in range(20)],
        "seats": list(range(20)),
    }
    path = tmp_path / "events.parquet"
    pq.write_table(pa.table(rows), path, row_group_size=6)
    got = batch._read_parquet(path)
    wanted = [c for c in batch._DICTIONARY_COLUMNS if c in rows]
    assert got.equals(pq.read_table(path, read_dictionary=wanted))
    assert pa.types.is_dictionary(got.schema.field("userId").type)
    assert got.column("userId").num_chunks == 4  # (one per row group)


def test_lane_records_of_every_combination_of_identifier_columns_are_the_builders() -> None:
    from tests.test_batch import _as_text_columns
    from tests.test_batch_lanes import _decided_fields

    ts = "2024-01-01T00:00:0{}Z"
    messages: list[dict[str, Any]] = [
        {"type": "track", "event": "A", "anonymousId": "a1"},
        {"type": "track", "event": "A", "userId": "u1"},
        {"type": "track", "event": "A", "userId": "u1", "anonymousId": "a2"},
        {"type": "identify", "userId": "u2", "traits": {"email": "e@x.io", "plan": 1}},
        {"type": "identify", "userId": "u2", "anonymousId": "a1", "traits": {"phone": "5"}},
        {"type": "identify", "userId": "u3", "traits": {"email": "e@x.io", "phone": "6"}},
        {"type": "page", "name": "Home", "anonymousId": "a3"},
        {"type": "group", "userId": "u1", "groupId": "c1", "traits": {"name": "C"}},
        {"type": "group", "anonymousId": "a3", "groupId": "c2"},
    ]
    for i, m in enumerate(messages):
        m.update(timestamp=ts.format(i), messageId=f"m{i}")
    rules = ir.Rules(limits={"user_id": 1, "email": 1})
    result = batch.resolve(_as_text_columns(messages), rules=rules)
    events = result._events
    assert events.lane_size == len(messages)  # (every row read by the lane)
    every = np.arange(len(events), dtype=np.int64)
    for order in (every, every[::-1], every[[4, 0, 8, 2, 6, 1, 3, 5, 7]]):
        direct = [_decided_fields(r) for r in events.decided(order)]
        built = [_decided_fields(r) for _, r in events.records(order.tolist())]
        assert direct == built


def _refusing(value: str) -> str:
    if "@" not in value:
        raise ValueError("not an address")
    return value.strip()


def test_a_value_a_normalizer_raises_on_leaves_its_text_to_the_builder() -> None:
    # (the text by text reading caught it as an unreadable text; so does this one)
    rules = ir.Rules(normalizers={"email": _refusing}).compiled
    texts: list[str | None] = ['{"email":"x"}', '{"email":"u@x.io"}']
    good, out, found = _reading(texts, rules, True)
    assert good == [False, True] and out == [None, {"email": "u@x.io"}]
    assert list(found.values()) == [[None, "u@x.io"]]


@pytest.mark.parametrize("bad", ["2024-13-01T00:00:00Z", None])
def test_a_time_arrow_cannot_read_leaves_the_other_rows_in_the_lane(bad: str | None) -> None:
    from tests.test_batch import _as_text_columns, actual_tables, expected_tables

    messages: list[dict[str, Any]] = [
        {"type": "track", "event": "A", "anonymousId": f"a{i}", "userId": f"u{i % 2}"}
        for i in range(4)
    ]
    for i, m in enumerate(messages):
        m.update(timestamp=f"2024-05-01T09:00:0{i}.5Z", messageId=f"m{i}")
    # (an alias, never the lane's, at a month 13 or with no time: the clock's)
    messages[2] = {"type": "alias", "previousId": "a2", "userId": "u9", "timestamp": bad}
    g = ir.IdentityGraph(clock=lambda: 1.7e9)
    g.ingest(messages, on_error="skip")
    result = batch.resolve(_as_text_columns(messages), on_error="skip", clock=lambda: 1.7e9)
    assert actual_tables(result) == expected_tables(g)
    assert result._events.lane_size == 3  # (the other rows: read by the lane)
    assert sorted(result._events.ts[:3].tolist()) == [1714554000.5, 1714554001.5, 1714554003.5]
