"""Bad input is refused at write time (docs/concepts.md, Timestamps and the clock; Errors):
a documented exception naming the field and the value, nothing changed, and in
``ingest(on_error="skip")`` only the bad event skipped.

* timestamps outside the window (epoch milliseconds above all) and stored rows outside what a
  ``datetime`` holds, which must still read;
* lone surrogates, integers too long to turn into text, values that are not JSON data, and
  nesting deeper than the limit, in traits, company traits and properties;
* ``Rules`` options of the wrong shape, and more kinds than the engine holds;
* batches that are not iterables of events, ``str`` subclasses that lie about their text, and
  store URLs that are not valid text.
"""

from __future__ import annotations

import itertools
import math
import sqlite3
from collections.abc import Iterator
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

import identityres as ir
from identityres import errors
from identityres._events import MAX_NESTING, MAX_TIMESTAMP, MIN_TIMESTAMP, RecordBuilder
from identityres._profiles import utc
from identityres.storage import MemoryStore
from identityres.testing import snapshot

UTC = timezone.utc
MS = 1_714_986_000_123  # 2024-05-06T09:00:00.123Z as JavaScript's Date.now() gives it

STORES = ["memory", "batches", "sqlite"]


def _graph(kind: str, tmp_path: Path, rules: ir.Rules | None = None) -> ir.IdentityGraph:
    if kind == "memory":
        return ir.IdentityGraph(rules)
    if kind == "batches":
        return ir.IdentityGraph(rules, store=MemoryStore(in_place=False))
    return ir.IdentityGraph(rules, store=f"sqlite:///{tmp_path / 'ids.db'}")


@pytest.fixture(params=STORES)
def graph(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ir.IdentityGraph]:
    """A graph on each store, holding three events: u1 with a1 and a trait, in acme."""
    g = _graph(request.param, tmp_path)
    g.identify("u1", "a1", traits={"plan": "pro"}, timestamp=1, event_id="m1")
    g.identify_company("acme", user_id="u1", traits={"seats": 5}, timestamp=2, event_id="m2")
    g.track("Seen", anonymous_id="a1", properties={"path": "/"}, timestamp=3, event_id="m3")
    yield g
    g.close()


def _refused(
    g: ir.IdentityGraph, call: Any, exc: type[errors.ValidationError], field: str
) -> errors.ValidationError:
    """``call(g)`` raises ``exc`` naming ``field``, its message can be shown, and nothing
    changed."""
    before = snapshot(g)
    events = g.stats().events
    with pytest.raises(exc) as info:
        call(g)
    error = info.value
    assert isinstance(error, errors.ValidationError)
    assert error.field == field
    message = str(error)  # building and showing the message never fails
    assert message.startswith((field, "events["))
    message.encode("utf-8")  # printable: no lone surrogates in the message
    assert snapshot(g) == before
    assert g.stats().events == events
    return error


_calls = itertools.count()


def _skipped(g: ir.IdentityGraph, bad: Any, field: str) -> None:
    """In ``ingest(on_error="skip")`` only ``bad`` is skipped; raise mode applies nothing."""
    n = next(_calls)
    good = ir.Track(event="Seen", anonymous_id="a-good", timestamp=10, event_id=f"good-{n}")
    good2 = ir.Track(event="Seen", anonymous_id="a-good2", timestamp=11, event_id=f"more-{n}")
    before = snapshot(g)
    events = g.stats().events
    with pytest.raises(errors.ValidationError) as info:
        g.ingest([good, bad, good2])
    assert info.value.index == 1 and info.value.field == field
    str(info.value).encode("utf-8")
    assert snapshot(g) == before and g.stats().events == events
    report = g.ingest([good, bad, good2], on_error="skip")
    assert [(e.index, e.field) for e in report.errors] == [(1, field)]
    assert [o.event_id for o in report.outcomes] == [f"good-{n}", f"more-{n}"]
    assert g.stats().events == events + 2


# -- 1. timestamps -------------------------------------------------------------------------


def test_the_window_is_the_documented_one() -> None:
    assert datetime.fromtimestamp(MIN_TIMESTAMP, UTC) == datetime(1900, 1, 1, tzinfo=UTC)
    assert datetime.fromtimestamp(MAX_TIMESTAMP, UTC) == datetime(3000, 1, 1, tzinfo=UTC)
    # every epoch-milliseconds value after 1971-01-12 is outside it
    assert datetime(1971, 1, 13, tzinfo=UTC).timestamp() * 1000 > MAX_TIMESTAMP


@pytest.mark.parametrize(
    "call",
    [
        lambda g: g.track("Seen", anonymous_id="a2", timestamp=MS, event_id="e9"),  # fast path
        lambda g: g.track("Seen", anonymous_id="a2", timestamp=MS),
        lambda g: g.track("Seen", anonymous_id="a2", properties={"k": 1}, timestamp=float(MS)),
        lambda g: g.identify("u2", "a2", timestamp=MS, event_id="e9"),  # fast path
        lambda g: g.identify("u2", traits={"k": 1}, timestamp=MS),
        lambda g: g.alias("u1", ("email", "e@x.io"), timestamp=MS),
        lambda g: g.reset("a1", timestamp=MS),
        lambda g: g.identify_company("acme", user_id="u1", timestamp=MS),
        lambda g: g.merge("u1", ("email", "e@x.io"), timestamp=MS),
        lambda g: g.split("u1", timestamp=MS),
        lambda g: g.forget("u1", timestamp=MS),
    ],
)
def test_epoch_milliseconds_are_refused_with_a_hint(graph: ir.IdentityGraph, call: Any) -> None:
    error = _refused(graph, call, errors.InvalidTimestampError, "timestamp")
    assert error.value == MS or error.value == float(MS)
    assert "epoch milliseconds" in error.reason and "from_epoch_ms" in error.reason
    assert "1714986000123" in str(error)


@pytest.mark.parametrize(
    "value",
    [
        1e20,
        -1e20,
        2**63,
        -(2**63),
        10**5000,  # an int too long even to show in full
        MAX_TIMESTAMP,
        MIN_TIMESTAMP - 1,
        math.nextafter(MIN_TIMESTAMP, -math.inf),
        datetime(9999, 12, 31, 23, 59, 59, tzinfo=timezone(timedelta(hours=-14))),
        datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=14))),
        datetime(3000, 1, 1, tzinfo=UTC),
        datetime(1899, 12, 31, 23, 59, 59, tzinfo=UTC),
    ],
    ids=lambda v: "10**5000" if v == 10**5000 else repr(v),
)
def test_timestamps_outside_the_window_are_refused(graph: ir.IdentityGraph, value: Any) -> None:
    for call in (
        lambda g: g.track("Seen", anonymous_id="a2", timestamp=value, event_id="e9"),
        lambda g: g.identify("u2", "a2", timestamp=value, event_id="e9"),
        lambda g: g.forget("a1", timestamp=value),
        lambda g: g.forget(("anonymous_id", "a1"), timestamp=value, event_id="f1"),
    ):
        error = _refused(graph, call, errors.InvalidTimestampError, "timestamp")
        assert "1900-01-01" in error.reason and "3000-01-01" in error.reason


@pytest.mark.parametrize(
    "text", ["9999-12-31T23:59:59-14:00", "0001-01-01T00:00:00+14:00", "3000-01-01T00:00:00Z"]
)
def test_iso_timestamps_outside_the_window_are_refused(graph: ir.IdentityGraph, text: str) -> None:
    bad = {"type": "track", "event": "x", "anonymousId": "a2", "timestamp": text}
    _refused(graph, lambda g: g.ingest([bad]), errors.InvalidTimestampError, "timestamp")
    _skipped(graph, bad, "timestamp")


def test_a_clock_in_milliseconds_is_refused(tmp_path: Path) -> None:
    g = ir.IdentityGraph(clock=lambda: MS)
    error = _refused(
        g, lambda g: g.track("Seen", anonymous_id="a"), ir.InvalidTimestampError, "timestamp"
    )
    assert "milliseconds" in error.reason


def test_skip_mode_skips_only_the_milliseconds_event(graph: ir.IdentityGraph) -> None:
    _skipped(
        graph, ir.Track(event="x", anonymous_id="a2", timestamp=MS, event_id="e9"), "timestamp"
    )
    _skipped(
        graph,
        {"type": "identify", "userId": "u2", "timestamp": MS, "messageId": "e8"},
        "timestamp",
    )


def test_from_epoch_ms_is_the_documented_way_to_feed_milliseconds(
    graph: ir.IdentityGraph,
) -> None:
    assert ir.from_epoch_ms(MS) == 1_714_986_000.123
    assert ir.from_epoch_ms(0) == 0.0
    graph.track("Seen", anonymous_id="a-ms", timestamp=ir.from_epoch_ms(MS), event_id="ms-1")
    p = graph.profile(anonymous_id="a-ms")
    assert p is not None
    assert p.first_seen == datetime(2024, 5, 6, 9, 0, 0, 123_000, tzinfo=UTC)


@pytest.mark.parametrize("value", [math.nan, math.inf, "1714986000123", True, None, 1e30, 10**400])
def test_from_epoch_ms_refuses_what_is_not_a_timestamp(value: Any) -> None:
    with pytest.raises(ir.InvalidTimestampError) as info:
        ir.from_epoch_ms(value)
    assert info.value.field == "timestamp"
    str(info.value)


_outside = st.one_of(
    st.floats(min_value=MAX_TIMESTAMP, allow_nan=False, allow_infinity=False),
    st.floats(
        max_value=math.nextafter(MIN_TIMESTAMP, -math.inf), allow_nan=False, allow_infinity=False
    ),
    st.integers(min_value=int(MAX_TIMESTAMP)),
    st.integers(max_value=int(MIN_TIMESTAMP) - 1),
)
_inside = st.one_of(
    st.floats(min_value=MIN_TIMESTAMP, max_value=math.nextafter(MAX_TIMESTAMP, 0)),
    st.integers(min_value=int(MIN_TIMESTAMP), max_value=int(MAX_TIMESTAMP) - 1),
)


@given(ts=_outside, fast=st.booleans())
def test_any_timestamp_outside_the_window_is_refused(ts: float | int, fast: bool) -> None:
    g = ir.IdentityGraph()

    def write() -> None:
        if fast:
            g.track("Seen", anonymous_id="a", timestamp=ts, event_id="e1")
        else:
            g.identify("u", traits={"k": 1}, timestamp=ts)

    with pytest.raises(ir.InvalidTimestampError) as info:
        write()
    assert info.value.field == "timestamp"
    str(info.value)
    assert g.stats().events == 0


@given(ts=_inside, store=st.sampled_from(["memory", "batches"]))
def test_any_timestamp_inside_the_window_round_trips_through_profile(
    ts: float | int, store: str
) -> None:
    g = _graph(store, Path("."))
    g.identify("u", "a", timestamp=ts, event_id="e1")
    g.track("Seen", anonymous_id="a", timestamp=ts, event_id="e2")
    p = g.profile(user_id="u")
    assert p is not None and g.resolve(anonymous_id="a") == "u"
    assert p.first_seen == p.last_seen == datetime.fromtimestamp(ts, UTC)
    assert abs(p.first_seen.timestamp() - ts) <= 1e-6 + abs(ts) * 1e-15
    assert [q.user_id for q in g.profiles()] == ["u"]


def _builders() -> tuple[RecordBuilder, RecordBuilder]:
    compiled = ir.Rules().compiled
    fast = RecordBuilder(compiled, lambda: 1_700_000_000.5)
    slow = RecordBuilder(compiled, lambda: 1_700_000_000.5)
    slow._plain_pair = False
    return fast, slow


@given(
    ts=st.one_of(
        _outside,
        _inside,
        st.sampled_from([MIN_TIMESTAMP, MAX_TIMESTAMP, MS, float(MS), 2**63, 10**5000]),
    )
)
def test_fast_paths_apply_the_same_window(ts: float | int) -> None:
    fast, slow = _builders()

    def outcome(builder: RecordBuilder, method: str, *args: Any) -> Any:
        try:
            rec = getattr(builder, method)(*args)
        except errors.ValidationError as exc:
            return (type(exc), exc.field, str(exc))
        return (rec.ts, rec.fingerprint, rec.event_id, rec.content)

    for method, args in (
        ("track", ("Seen", "a", None, None, None, ts, "e1")),
        ("track", ("Seen", "a", "u", None, {"k": 1}, ts, "e1")),
        ("identify", ("u", "a", None, None, None, ts, "e1")),
    ):
        assert outcome(fast, method, *args) == outcome(slow, method, *args)


def test_presenting_clamps_timestamps_a_datetime_cannot_hold() -> None:
    assert utc(1e20) == datetime.max.replace(tzinfo=UTC)
    assert utc(float(MS)) == datetime.max.replace(tzinfo=UTC)
    assert utc(-1e20) == datetime.min.replace(tzinfo=UTC)
    assert utc(math.inf) == datetime.max.replace(tzinfo=UTC)
    assert utc(-math.inf) == datetime.min.replace(tzinfo=UTC)
    assert utc(1.5) == datetime(1970, 1, 1, 0, 0, 1, 500_000, tzinfo=UTC)


def test_a_store_holding_an_out_of_range_timestamp_still_reads(tmp_path: Path) -> None:
    # rows an older version let through: epoch milliseconds stored as seconds
    url = f"sqlite:///{tmp_path / 'old.db'}"
    with ir.IdentityGraph(store=url) as g:
        g.identify("u1", "a1", timestamp=1, event_id="m1")
        g.track("Seen", anonymous_id="a1", timestamp=2, event_id="m2")
    with sqlite3.connect(tmp_path / "old.db") as conn:
        conn.execute("UPDATE nodes SET last_ts = ?", (float(MS),))
        conn.execute("UPDATE nodes SET first_ts = ?", (-1e20,))
    conn.close()
    with ir.IdentityGraph(store=url) as g:
        assert g.resolve(anonymous_id="a1") == "u1"
        p = g.profile(anonymous_id="a1")
        assert p is not None
        assert p.first_seen == datetime.min.replace(tzinfo=UTC)
        assert p.last_seen == datetime.max.replace(tzinfo=UTC)
        assert [q.user_id for q in g.profiles()] == ["u1"]
        g.explain(("user_id", "u1"), ("anonymous_id", "a1"))
        g.history(user_id="u1")


# -- 4. values that are not what they seem -------------------------------------------------

LONE = "\ud83d"  # the first half of an emoji, cut off
BIG = 10**5000  # more digits than Python turns into text


def _deep(levels: int) -> dict[str, Any]:
    """A mapping ``levels`` deep: ``{"k": {"k": ... {} ...}}`` (itself level 1)."""
    value: dict[str, Any] = {}
    for _ in range(levels - 1):
        value = {"k": value}
    return value


def _deep_list(levels: int) -> dict[str, Any]:
    value: list[Any] = []
    for _ in range(levels - 2):
        value = [value]
    return {"k": value}


def _cycle() -> dict[str, Any]:
    value: dict[str, Any] = {}
    value["self"] = value
    return value


BAD_DATA: dict[str, Any] = {
    "lone surrogate value": {"k": LONE},
    "lone surrogate key": {LONE: 1},
    "nested lone surrogate": {"k": [{"j": "x" + LONE + "y"}]},
    "lone low surrogate": {"k": "\ude00"},
    "nested lone surrogate key": {"k": {LONE: 1}},
    "big int": {"k": BIG},
    "nested big int": {"k": [1, {"j": -BIG}]},
    "big int key": {"k": {BIG: 1}},
    "set": {"k": {"a", "b"}},
    "frozenset": {"k": frozenset({1})},
    "object": {"k": object()},
    "bytes": {"k": b"x"},
    "nan": {"k": math.nan},
    "inf": {"k": math.inf},
    "-inf": {"k": [-math.inf]},
    "too deep": _deep(MAX_NESTING + 1),
    "too deep list": _deep_list(MAX_NESTING + 1),
    "far too deep": _deep(5000),
    "cycle": _cycle(),
}


def _writes_with(field: str, data: Any) -> list[Any]:
    """The write calls that carry ``data`` as ``field``."""
    if field == "properties":
        return [
            lambda g: g.track(
                "Seen", anonymous_id="a2", properties=data, timestamp=5, event_id="e9"
            ),
            lambda g: g.track("Seen", anonymous_id="a2", properties=data, timestamp=5),
            lambda g: g.track(
                "Seen", user_id="u1", anonymous_id="a1", properties=data, timestamp=5
            ),
            lambda g: g.track("Seen", identifiers={"email": "e@x"}, properties=data, timestamp=5),
        ]
    if field == "traits":
        return [
            lambda g: g.identify("u1", traits=data, timestamp=5),
            lambda g: g.identify("u2", "a2", traits=data, timestamp=5, event_id="e9"),
            lambda g: g.identify_company("acme", user_id="u1", traits=data, timestamp=5),
        ]
    return [lambda g: g.identify("u1", set_once=data, timestamp=5)]


@pytest.mark.parametrize("field", ["properties", "traits", "set_once"])
@pytest.mark.parametrize("case", sorted(BAD_DATA))
def test_data_that_is_not_json_data_is_refused(
    graph: ir.IdentityGraph, field: str, case: str
) -> None:
    data = BAD_DATA[case]
    for call in _writes_with(field, data):
        error = _refused(graph, call, errors.InvalidEventError, field)
        assert error.value is data or error.value == data  # what was given (or a copy)


@pytest.mark.parametrize("case", sorted(BAD_DATA))
def test_skip_mode_skips_only_the_event_with_bad_data(graph: ir.IdentityGraph, case: str) -> None:
    data = BAD_DATA[case]
    _skipped(
        graph, ir.Track(event="x", anonymous_id="a2", properties=data, timestamp=5), "properties"
    )
    _skipped(graph, ir.Identify(user_id="u2", traits=data, timestamp=5), "traits")
    _skipped(
        graph,
        {"type": "group", "groupId": "acme", "userId": "u1", "traits": data, "messageId": "g9"},
        "traits",
    )


def test_nesting_up_to_the_limit_is_accepted(graph: ir.IdentityGraph) -> None:
    graph.identify("u1", traits={"deep": _deep(MAX_NESTING - 1)}, timestamp=5)
    graph.track("Seen", anonymous_id="a1", properties=_deep(MAX_NESTING), timestamp=6)
    graph.track("Seen", anonymous_id="a1", properties=_deep_list(MAX_NESTING), timestamp=7)
    p = graph.profile(user_id="u1")
    assert p is not None and p.traits["deep"] == _deep(MAX_NESTING - 1)
    # many containers side by side are not deep
    wide = {"k": [{"a": [1]} for _ in range(200)]}
    graph.track("Seen", anonymous_id="a1", properties=wide, timestamp=8)
    graph.identify("u1", traits=wide, timestamp=9)


def test_valid_text_and_long_ints_below_the_limit_are_accepted(graph: ir.IdentityGraph) -> None:
    traits = {"emoji": "\U0001f600 ok", "é": "ünï", "big": 10**4000, "text": "\\ud83d"}
    graph.identify("u1", traits=traits, timestamp=5)
    graph.track("Seen", anonymous_id="a1", properties=traits, timestamp=6, event_id="p1")
    graph.identify_company("acme", user_id="u1", traits=traits, timestamp=7)
    p = graph.profile(user_id="u1")
    assert p is not None and p.traits["emoji"] == "\U0001f600 ok" and p.traits["big"] == 10**4000
    assert p.traits["text"] == "\\ud83d"
    company = graph.company("acme")
    assert company is not None and company.traits["é"] == "ünï"


def test_datetimes_in_properties_and_traits(graph: ir.IdentityGraph) -> None:
    when = datetime(2024, 5, 6, 9, 0, tzinfo=UTC)
    # properties: accepted, and the derived event id depends only on the value
    a = graph.track("Seen", anonymous_id="a1", properties={"at": when}, timestamp=5)
    b = graph.track("Seen", anonymous_id="a1", properties={"at": when}, timestamp=5)
    assert b.duplicate and b.event_id == a.event_id
    # traits: stored as ISO-8601 strings, as JSON has no datetimes
    graph.identify("u1", traits={"signed_up": when, "born": date(1990, 1, 2)}, timestamp=6)
    p = graph.profile(user_id="u1")
    assert p is not None
    assert p.traits["signed_up"] == "2024-05-06T09:00:00+00:00"
    assert p.traits["born"] == "1990-01-02"


def test_datetimes_in_properties_keep_the_event_ids_earlier_versions_derived() -> None:
    # properties are never stored: a datetime in them only makes the event's identity, which
    # must not change across the upgrade (the id identityres 0.1.0.dev0 derived)
    when = datetime(2024, 5, 6, tzinfo=UTC)
    out = ir.IdentityGraph().track("Seen", anonymous_id="a", properties={"at": when}, timestamp=5)
    assert out.event_id == "ev-402894590abbcf99ff197b2531807b3a"


def test_event_ids_derived_from_properties_do_not_depend_on_the_hash_seed() -> None:
    # a set would make the derived id depend on PYTHONHASHSEED: it is refused instead
    with pytest.raises(ir.InvalidEventError):
        ir.IdentityGraph().track(
            "Seen", anonymous_id="a", properties={"k": {"x", "y"}}, timestamp=1
        )


@pytest.mark.parametrize(
    "call",
    [
        lambda g: g.track(LONE, anonymous_id="a2", timestamp=5, event_id="e9"),  # fast path
        lambda g: g.track("x" + LONE, anonymous_id="a2", properties={"k": 1}, timestamp=5),
    ],
)
def test_event_names_with_lone_surrogates_are_refused(graph: ir.IdentityGraph, call: Any) -> None:
    _refused(graph, call, errors.InvalidEventError, "event")


@pytest.mark.parametrize(
    ("call", "field"),
    [
        (lambda g: g.identify(LONE, timestamp=5), "user_id"),
        (
            lambda g: g.track("x", anonymous_id="a" + LONE, timestamp=5, event_id="e9"),
            "anonymous_id",
        ),
        (lambda g: g.track("x", identifiers={"email": LONE}, timestamp=5), "identifiers['email']"),
        (lambda g: g.identify_company(LONE, user_id="u1", timestamp=5), "company_id"),
        (lambda g: g.identify("u1", timestamp=5, event_id="m" + LONE), "event_id"),
    ],
)
def test_identifiers_and_event_ids_with_lone_surrogates_are_refused(
    graph: ir.IdentityGraph, call: Any, field: str
) -> None:
    error = _refused(graph, call, errors.ValidationError, field)
    assert "surrogate" in error.reason


@pytest.mark.parametrize(
    ("call", "field"),
    [
        (lambda g: g.identify(BIG, timestamp=5), "user_id"),
        (lambda g: g.identify("u2", -BIG, timestamp=5), "anonymous_id"),
        (lambda g: g.track("x", identifiers={"email": BIG}, timestamp=5), "identifiers['email']"),
        (lambda g: g.identify_company(BIG, user_id="u1", timestamp=5), "company_id"),
        (lambda g: g.alias("u1", BIG, timestamp=5), "previous_id"),
        (lambda g: g.forget(BIG, timestamp=5), "identifier"),
        (lambda g: g.identify("u1", timestamp=5, event_id=BIG), "event_id"),
        (lambda g: g.identify("u1", timestamp=BIG), "timestamp"),
        (lambda g: g.track("x", anonymous_id="a", timestamp=-BIG, event_id="e9"), "timestamp"),
        (lambda g: g.track("x", anonymous_id="a", properties={BIG: 1}, timestamp=5), "properties"),
        (lambda g: g.resolve(user_id=BIG), "user_id"),
        (lambda g: g.profile(identifier=("email", BIG)), "identifier"),
    ],
)
def test_ints_too_long_for_text_are_refused(graph: ir.IdentityGraph, call: Any, field: str) -> None:
    error = _refused(graph, call, errors.ValidationError, field)
    value = error.value
    assert (
        value in (BIG, -BIG)
        or value == ("email", BIG)
        or (isinstance(value, dict) and BIG in value)
    )


def test_skip_mode_skips_only_the_event_with_a_long_int(graph: ir.IdentityGraph) -> None:
    _skipped(graph, ir.Identify(user_id=BIG, timestamp=5), "user_id")
    _skipped(graph, {"type": "identify", "userId": "u2", "messageId": BIG}, "messageId")
    _skipped(graph, {"type": "identify", "userId": "u2", "timestamp": BIG}, "timestamp")


class Lying(str):
    """A str that says it is something else."""

    def __str__(self) -> str:
        return "liar"


class LyingInt(int):
    def __str__(self) -> str:
        return "liar"

    def __int__(self) -> int:
        return 666


def test_str_subclasses_count_as_the_text_they_hold(graph: ir.IdentityGraph) -> None:
    out = graph.identify(Lying("u7"), Lying("a7"), timestamp=5, event_id=Lying("m7"))
    assert out.event_id == "m7"
    assert graph.resolve(user_id="u7") == "u7" and graph.resolve(anonymous_id="a7") == "u7"
    assert graph.resolve(user_id="liar") is None
    assert graph.resolve(user_id=Lying("u7")) == "u7"
    graph.identify(LyingInt(8), timestamp=6, event_id=LyingInt(9))  # type: ignore[arg-type]
    assert graph.resolve(user_id="8") == "8" and graph.resolve(user_id=LyingInt(8)) == "8"
    assert graph.resolve(user_id="liar") is None and graph.resolve(user_id="666") is None
    assert graph.track("x", anonymous_id="a7", timestamp=7, event_id=Lying("é")).event_id == "é"


@pytest.mark.parametrize(
    "events",
    [None, 5, 1.5, "abc", b"abc", {"type": "track"}, ir.Track(event="x", anonymous_id="a")],
    ids=lambda v: type(v).__name__,
)
def test_a_batch_must_be_an_iterable_of_events(graph: ir.IdentityGraph, events: Any) -> None:
    for mode in ("raise", "skip"):
        error = _refused(
            graph,
            lambda g, mode=mode: g.ingest(events, on_error=mode),
            errors.InvalidEventError,
            "events",
        )
        assert error.value is events and error.index is None


def test_a_batch_can_be_any_iterable(graph: ir.IdentityGraph) -> None:
    events = (
        ir.Track(event="x", anonymous_id=f"a-{i}", timestamp=5, event_id=f"i{i}") for i in range(3)
    )
    assert graph.ingest(events).applied == 3
    assert graph.ingest(()).applied == 0


LIMIT = 2**63 - 1


@pytest.mark.parametrize(
    ("kwargs", "option"),
    [
        ({"blocked_patterns": r"^qa$"}, "blocked_patterns"),
        ({"blocked_patterns": None}, "blocked_patterns"),
        ({"blocked_patterns": [rb"^qa$"]}, "blocked_patterns"),
        ({"blocked_patterns": [__import__("re").compile(rb"^qa$")]}, "blocked_patterns"),
        ({"blocked_patterns": [5]}, "blocked_patterns"),
        ({"blocked_patterns": 5}, "blocked_patterns"),
        ({"blocked_patterns": ["^" + LONE]}, "blocked_patterns"),
        ({"blocked_patterns": [__import__("re").compile(LONE)]}, "blocked_patterns"),
        ({"kinds": "email"}, "kinds"),
        ({"kinds": None}, "kinds"),
        ({"kinds": b"email"}, "kinds"),
        ({"kinds": {"email", "phone"}}, "kinds"),
        ({"kinds": {"email": 1}}, "kinds"),
        ({"kinds": 3}, "kinds"),
        ({"kinds": [BIG]}, "kinds"),
        ({"priority": "user_id"}, "priority"),
        ({"priority": {"user_id", "anonymous_id", "email", "phone", "api_key"}}, "priority"),
        ({"blocked_values": "x"}, "blocked_values"),
        ({"blocked_values": None}, "blocked_values"),
        ({"blocked_values": b"x"}, "blocked_values"),
        ({"blocked_values": {"x": 1}}, "blocked_values"),
        ({"blocked_values": [b"x"]}, "blocked_values"),
        ({"blocked_values": ["x" + LONE]}, "blocked_values"),
        ({"blocked_values": 7}, "blocked_values"),
        ({"limits": [("email", 1)]}, "limits"),
        ({"limits": None}, "limits"),
        ({"limits": {"email": BIG}}, "limits"),
        ({"limits": {"email": LIMIT + 1}}, "limits"),
        ({"normalizers": [("email", str.lower)]}, "normalizers"),
        ({"normalizers": None}, "normalizers"),
        ({"normalizers": "email"}, "normalizers"),
        ({"max_profile_size": BIG}, "max_profile_size"),
        ({"max_length": LIMIT + 1}, "max_length"),
        ({"max_length": "400"}, "max_length"),
        ({"default_blocked_values": "no"}, "default_blocked_values"),
        ({"default_blocked_values": None}, "default_blocked_values"),
    ],
    ids=lambda v: v if isinstance(v, str) else "-".join(sorted(v)),
)
def test_rules_options_of_the_wrong_shape_are_refused(kwargs: dict[str, Any], option: str) -> None:
    with pytest.raises(ir.ConfigurationError) as info:
        ir.Rules(**kwargs)
    message = str(info.value)
    assert message.startswith(option), message
    message.encode("utf-8")


def test_rules_options_of_the_right_shape_are_accepted() -> None:
    import re

    rules = ir.Rules(
        kinds=iter(["email", "phone"]),
        priority=["user_id", "email", "phone", "anonymous_id"],
        blocked_values={"x", "y"},
        blocked_patterns=(r"^qa$", re.compile("^test-")),
        limits={"email": LIMIT},
        max_profile_size=LIMIT,
        max_length=LIMIT,
    )
    assert rules.kinds == ("email", "phone")
    g = ir.IdentityGraph(rules)
    g.identify("qa", "a1", timestamp=1)
    assert g.resolve(anonymous_id="a1") == "a1"  # "qa" is blocked, nothing else
    g.identify("u1", "a1", timestamp=2)
    assert g.resolve(anonymous_id="a1") == "u1"


def test_a_set_of_patterns_is_recorded_in_one_order() -> None:
    a = ir.Rules(blocked_patterns={"^b", "^a", "^c"}).record()
    b = ir.Rules(blocked_patterns=["^a", "^b", "^c"]).record()
    assert a.digest == b.digest


def test_at_most_100_kinds(tmp_path: Path) -> None:
    kinds = [f"k{i}" for i in range(98)]
    rules = ir.Rules(kinds=kinds)
    assert len(rules.all_kinds) == 100
    for store in STORES:  # the last kind fits the engine's and every store's tables
        with _graph(store, tmp_path, rules) as g:
            g.identify("u1", identifiers={"k97": "v"}, anonymous_id="a1", timestamp=1)
            assert g.resolve(identifier=("k97", "v")) == "u1"
            assert g.profile(anonymous_id="a1") is not None
    for many in (99, 125, 126, 200):
        with pytest.raises(ir.ConfigurationError, match="kinds") as info:
            ir.Rules(kinds=[f"k{i}" for i in range(many)])
        assert "100" in str(info.value)


@pytest.mark.parametrize("url", ["sqlite:///\ud800.db", "memory://\ud800", "nosuch\ud800://x"])
def test_store_urls_that_are_not_valid_text_are_refused(url: str) -> None:
    with pytest.raises(ir.ConfigurationError) as info:
        ir.IdentityGraph(store=url)
    assert "store=" in str(info.value)
    str(info.value).encode("utf-8")


def test_a_store_path_of_undecodable_bytes_still_opens(tmp_path: Path) -> None:
    # os.fsdecode gives such a name to a file whose name is not UTF-8: it stays usable
    url = f"sqlite:///{tmp_path}/\udcff.db"
    with ir.IdentityGraph(store=url) as g:
        g.identify("u1", timestamp=1)
    assert (tmp_path / "\udcff.db").exists()


def test_a_store_path_that_is_not_valid_text_is_refused(tmp_path: Path) -> None:
    from identityres.storage.sqlite import SQLiteStore

    for path in (f"{tmp_path}/\ud800.db", Path(f"{tmp_path}/\ud83d.db")):
        with pytest.raises(ir.ConfigurationError, match="path=") as info:
            SQLiteStore(path)
        str(info.value).encode("utf-8")  # the message itself is printable
    assert list(tmp_path.iterdir()) == []
    # what os.fsdecode makes of bytes that are not UTF-8 is a usable name
    SQLiteStore(f"{tmp_path}/\udcff.db").close()
    assert (tmp_path / "\udcff.db").exists()


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("9999-12-31T23:59:59-14:00", "outside the supported window"),
        ("3000-01-01T00:00:00Z", "outside the supported window"),
        ("2024-05-09T00:00:00", "no timezone: add one, e.g. Z"),
        ("2024-05-09", "no timezone: add one, e.g. Z"),
    ],
)
def test_iso_timestamp_errors_name_the_text_in_its_own_words(text: str, words: str) -> None:
    # the value named is the string the message holds (not the datetime made of it), and
    # a string gets no advice about datetimes (tzinfo=) or epoch milliseconds
    bad = {"type": "track", "event": "x", "anonymousId": "a", "originalTimestamp": text}
    with pytest.raises(errors.InvalidTimestampError) as info:
        ir.IdentityGraph().ingest([bad])
    error = info.value
    assert error.field == "originalTimestamp" and error.value == text
    assert words in error.reason
    assert "tzinfo" not in error.reason and "milliseconds" not in error.reason


@pytest.mark.parametrize(
    "text",
    [
        "2024-W01-1T00:00:00Z",  # week dates
        "20240101T000000Z",  # the basic format
        "2024-01-01T000000Z",
        "2024-01-01T00:00:00.5+05",  # an offset of hours only
        "2024-001T00:00:00Z",  # ordinal dates
    ],
)
def test_iso_forms_only_python_3_11_reads_are_refused_on_every_python(text: str) -> None:
    # Python 3.11's fromisoformat reads these, 3.10's does not: a file must resolve the same
    # on both (issue #11), so they are refused on both (docs/formats.md, Timestamps)
    bad = {"type": "track", "event": "x", "anonymousId": "a", "timestamp": text}
    with pytest.raises(errors.InvalidTimestampError, match="not an ISO-8601 timestamp"):
        ir.IdentityGraph().ingest([bad])


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2024-01-01T00:00:00Z", 1704067200.0),
        ("2024-01-01 00:00:00z", 1704067200.0),
        ("2024-01-01T00:00Z", 1704067200.0),
        ("2024-01-01T00Z", 1704067200.0),
        ("2024-01-01T00:00:00.12Z", 1704067200.12),
        ("2024-01-01T00:00:00,5Z", 1704067200.5),
        ("2024-01-01T00:00:00.1234567Z", 1704067200.123456),
        ("2024-01-01T00:00:00+0000", 1704067200.0),
        ("2024-01-01T05:30:00.123+05:30", 1704067200.123),
        ("2024-01-01T00:00:00+00:00:00.5", 1704067200.0),
        (" 2024-01-01T00:00:00Z\n", 1704067200.0),
    ],
)
def test_the_iso_forms_every_python_reads(text: str, expected: float) -> None:
    g = ir.IdentityGraph()
    g.ingest([{"type": "track", "event": "x", "anonymousId": "a", "timestamp": text}])
    p = g.profile(anonymous_id="a")
    assert p is not None and p.first_seen.timestamp() == pytest.approx(expected, abs=1e-6)
