"""The hot paths must not change what an event *is*: a record built by a fast path equals,
field by field, the record the general path builds from the same arguments, and arguments
the fast path does not take fall through to the general path's errors.

The reference resolver shares ``RecordBuilder`` with the engine, so the engine-vs-reference
property tests cannot see a fast path that builds the wrong record; these tests can.
"""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

import identityres as ir
from identityres import strategies as irst
from identityres._events import Record, RecordBuilder
from identityres.errors import ValidationError


def _builders(rules: ir.Rules) -> tuple[RecordBuilder, RecordBuilder]:
    compiled = rules.compiled
    fast = RecordBuilder(compiled, lambda: 1_700_000_000.5)
    slow = RecordBuilder(compiled, lambda: 1_700_000_000.5)
    # the fast paths are taken only under the default normalizers and priority
    slow._plain_pair = False
    return fast, slow


def _fields(rec: Record) -> tuple[Any, ...]:
    return tuple(getattr(rec, name) for name in Record.__slots__)


def _outcome(builder: RecordBuilder, method: str, *args: Any) -> Any:
    try:
        return _fields(getattr(builder, method)(*args))
    except ValidationError as exc:
        return (type(exc), exc.field, str(exc))
    except Exception as exc:  # not a documented error: the comparison shows it
        return (type(exc), str(exc))


def _same(fast: RecordBuilder, slow: RecordBuilder, method: str, *args: Any) -> None:
    expected = _outcome(slow, method, *args)
    assert not (isinstance(expected, tuple) and expected and expected[0] is OverflowError)
    assert _outcome(fast, method, *args) == expected


FAST, SLOW = _builders(ir.Rules())

# Plain ASCII values first: those are what the fast paths take.
_plain = st.from_regex(r"[A-Za-z0-9_.@-]{1,12}", fullmatch=True)
_values = st.one_of(
    _plain,
    st.none(),
    irst.identifier_values(hostile=True, blocked=True),
    st.sampled_from(["  padded  ", "", " ", "null", "NULL", "'quoted'", "x" * 401, "é-ünïcode"]),
    st.integers(),
    st.booleans(),
    st.floats(),
)
_timestamps = st.one_of(
    st.integers(min_value=0, max_value=4_000_000_000),
    st.floats(min_value=0, max_value=4e9),
    st.sampled_from([math.nan, math.inf, -math.inf, 10**400, -(10**400)]),
    st.none(),
)
_props = st.one_of(
    st.none(),
    st.dictionaries(_plain, _plain, max_size=3),
    st.just({}),
    st.dictionaries(st.text(max_size=5), st.one_of(st.integers(), st.text(max_size=5)), max_size=3),
    st.just({1: "int key"}),
    st.just([("not", "a mapping")]),
)
_event_ids = st.one_of(
    _plain, st.none(), st.text(min_size=0, max_size=8), st.just("é-id"), st.integers(), st.just("")
)


@given(
    event=st.one_of(st.sampled_from(["Page Viewed", "", " x "]), st.integers(), _plain),
    user_id=_values,
    anonymous_id=_values,
    properties=_props,
    timestamp=_timestamps,
    event_id=_event_ids,
)
def test_track_fast_path_builds_the_general_record(
    event: Any, user_id: Any, anonymous_id: Any, properties: Any, timestamp: Any, event_id: Any
) -> None:
    _same(FAST, SLOW, "track", event, anonymous_id, user_id, None, properties, timestamp, event_id)


@given(
    user_id=_values,
    anonymous_id=_values,
    timestamp=_timestamps,
    event_id=_event_ids,
)
def test_identify_fast_path_builds_the_general_record(
    user_id: Any, anonymous_id: Any, timestamp: Any, event_id: Any
) -> None:
    _same(FAST, SLOW, "identify", user_id, anonymous_id, None, None, None, timestamp, event_id)


@given(event=irst.events(blocked=True))
def test_event_objects_build_the_same_record_on_both_paths(event: Any) -> None:
    _same(FAST, SLOW, "from_object", event)


@pytest.mark.parametrize(
    "props",
    [{"b": 1, "a": [1, 2]}, {"a": [1, 2], "b": 1}],
)
def test_property_order_does_not_change_the_content(props: dict[str, Any]) -> None:
    rec = FAST.track("Viewed", "anon-1", "user-1", None, props, 1.0, "e1")
    assert rec.content[-1] == '{"a":[1,2],"b":1}'


def _answer(graph: ir.IdentityGraph, **kw: Any) -> Any:
    try:
        return graph.resolve(**kw)
    except ValidationError as exc:
        return (type(exc), exc.field, str(exc))


@given(
    stream=irst.streams(),
    queries=st.lists(st.tuples(st.sampled_from(["user_id", "anonymous_id"]), _values), max_size=8),
)
def test_resolve_fast_path_answers_like_the_general_path(
    stream: list[Any], queries: list[tuple[str, Any]]
) -> None:
    graph = ir.IdentityGraph()
    graph.ingest(stream)
    asked = [(kind, value) for kind, value in queries]
    # and identifiers the graph knows, as written and padded with whitespace
    for event in stream:
        for kind in ("user_id", "anonymous_id"):
            value = getattr(event, kind, None)
            if value is not None:
                asked += [(kind, value), (kind, f" {value} ")]
    fast = [_answer(graph, **{kind: value}) for kind, value in asked]
    with pytest.raises(ir.errors.InvalidEventError):  # both at once is an error
        graph.resolve(user_id="u", anonymous_id="a")
    graph._build._plain_lookup = False
    slow = [_answer(graph, **{kind: value}) for kind, value in asked]
    assert fast == slow
