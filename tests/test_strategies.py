"""The hypothesis strategies of ``identityres.strategies`` make what their docstrings promise.

Each generated event must pass validation (blocked values are not errors); each family of
values and each feature of a stream that is promised must turn up across examples (found with
``hypothesis.find``); each flag that turns a feature off must keep it out; bad arguments raise
``InvalidArgument``.
"""

from __future__ import annotations

import importlib
import sys
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, find, given, settings
from hypothesis import strategies as st
from hypothesis.errors import InvalidArgument

from identityres._events import EVENT_TYPES as BUILDER_EVENT_TYPES
from identityres._events import RecordBuilder
from identityres._model import (
    Alias,
    Event,
    Forget,
    Identifier,
    Identify,
    IdentifyCompany,
    Merge,
    Reason,
    Reset,
    Split,
    Track,
)
from identityres._rules import DEFAULT_BLOCKED_EXACT, DEFAULT_BLOCKED_INSENSITIVE, Rules
from identityres.strategies import (
    EVENT_TYPES,
    OPERATOR_TYPES,
    SEGMENT_TYPES,
    arrival_orders,
    blocked_values,
    events,
    identifier_values,
    identifiers,
    segment_messages,
    streams,
)

RULES = Rules().compiled
# These tests check generators, not the library: a hundred examples each is plenty, whatever
# the profile (the ``ci`` profile's 400 would only slow CI down).
CHECKS = settings(max_examples=min(settings.default.max_examples, 100))
# Streams are the slowest strategy here; generation time is not what these tests are about.
STREAM_SETTINGS = settings(max_examples=50, suppress_health_check=[HealthCheck.too_slow])
# ``found`` explores up to this many examples; everything promised turns up far sooner. It does
# not shrink what it finds: only whether something turns up matters.
FIND_SETTINGS = settings(
    max_examples=2000,
    database=None,
    phases=[Phase.generate],
    suppress_health_check=[HealthCheck.too_slow],
)


def builder() -> RecordBuilder:
    return RecordBuilder(RULES, clock=lambda: 0.0)


def reason(value: str) -> Reason | None:
    """Why the default rules block ``value``, after the default normalization."""
    return RULES.blocked_reason(value.strip())


class Found(Exception):
    pass


def found(strategy: st.SearchStrategy[Any], condition: Callable[[Any], bool]) -> None:
    """Pass when some example of ``strategy`` satisfies ``condition``."""

    @FIND_SETTINGS
    @given(strategy)
    def search(example: Any) -> None:
        if condition(example):
            raise Found

    with pytest.raises(Found):
        search()


def distinct(stream: list[Event]) -> list[Event]:
    """The events of a delivered stream, each once, in their true order."""
    by_id = {e.event_id: e for e in stream}
    return sorted(by_id.values(), key=lambda e: str(e.event_id))


def ids_of(event: Event) -> list[str]:
    """Every identifier value an event carries (not the company id)."""
    values: list[Any] = []
    for field in ("user_id", "anonymous_id"):
        values.append(getattr(event, field, None))
    values += list((getattr(event, "identifiers", None) or {}).values())
    if isinstance(event, Alias):
        previous = event.previous_id
        values.append(previous.value if isinstance(previous, Identifier) else previous)
    return [str(v) for v in values if v is not None]


# --- import without hypothesis -----------------------------------------------------------------


def test_import_without_hypothesis_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "hypothesis", None)
    monkeypatch.delitem(sys.modules, "identityres.strategies")
    with pytest.raises(ImportError, match=r"pip install 'identityres\[testing\]'") as info:
        importlib.import_module("identityres.strategies")
    assert isinstance(info.value.__cause__, ImportError)


# --- argument validation -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("strategy", "kwargs"),
    [
        (identifier_values, {"hostile": 1}),
        (identifier_values, {"blocked": "yes"}),
        (blocked_values, {"too_long": None}),
        (identifiers, {"kinds": "email"}),
        (identifiers, {"kinds": ()}),
        (identifiers, {"kinds": ("Email",)}),
        (identifiers, {"kinds": ("email", "email")}),
        (identifiers, {"kinds": (1,)}),
        (identifiers, {"hostile": 0}),
        (events, {"types": ("track", "page")}),
        (events, {"types": ()}),
        (events, {"kinds": ("user_id",)}),
        (events, {"kinds": "email"}),
        (events, {"blocked": None}),
        (streams, {"users": -1}),
        (streams, {"users": 2.0}),
        (streams, {"users": True}),
        (streams, {"max_events": 0}),
        (streams, {"late": "no"}),
        (streams, {"duplicates": 1}),
        (streams, {"resets": None}),
        (streams, {"companies": 0}),
        (streams, {"traits": 0}),
        (streams, {"blocked": 0}),
        (streams, {"hostile": 0}),
        (segment_messages, {"types": ("identify", "screenshot")}),
        (segment_messages, {"types": "track"}),
        (segment_messages, {"hostile": "no"}),
        (arrival_orders, {"stream": "e1"}),
        (arrival_orders, {"stream": {1, 2}}),
        (arrival_orders, {"stream": [], "duplicates": 2}),
    ],
)
def test_invalid_arguments_raise_invalid_argument(
    strategy: Callable[..., st.SearchStrategy[Any]], kwargs: dict[str, Any]
) -> None:
    with pytest.raises(InvalidArgument):
        strategy(**kwargs).validate()


def test_positional_arguments_are_refused() -> None:
    with pytest.raises(TypeError):
        identifier_values(True)  # type: ignore[misc]
    with pytest.raises(TypeError):
        streams(3)  # type: ignore[misc]


# --- identifier values -------------------------------------------------------------------------


@CHECKS
@given(identifier_values())
def test_hostile_values_are_valid_text_and_never_blocked(value: str) -> None:
    assert isinstance(value, str)
    value.encode("utf-8")  # no lone surrogates
    assert reason(value) is None


@CHECKS
@given(blocked_values())
def test_blocked_values_are_all_blocked(value: str) -> None:
    value.encode("utf-8")
    assert reason(value) is not None


@CHECKS
@given(blocked_values(too_long=False))
def test_blocked_values_without_too_long_are_blocked_words(value: str) -> None:
    assert reason(value) is Reason.BLOCKED_VALUE


@pytest.mark.parametrize(
    ("description", "condition"),
    [
        ("a quote", lambda v: "'" in v or '"' in v),
        ("a semicolon", lambda v: ";" in v),
        ("an SQL keyword", lambda v: any(w in v.upper() for w in ("SELECT", "DROP", "DELETE"))),
        ("NUL", lambda v: "\x00" in v),
        ("non-ASCII", lambda v: not v.isascii()),
        ("outside the BMP", lambda v: any(ord(c) > 0xFFFF for c in v)),
        ("whitespace padding", lambda v: v != v.strip() and v.strip()),
        ("a 400-character value", lambda v: len(v.strip()) == 400),
        ("a look-alike of a blocked value", lambda v: v in ("NULL", "Null", "NONE")),
    ],
)
def test_hostile_values_include(description: str, condition: Callable[[str], bool]) -> None:
    found(identifier_values(hostile=True), condition)


@CHECKS
@given(identifier_values(hostile=False))
def test_plain_values_are_neither_blocked_nor_hostile(value: str) -> None:
    assert reason(value) is None
    assert value == value.strip()
    assert value.isascii()
    assert "\x00" not in value
    assert ";" not in value


INSENSITIVE = sorted(DEFAULT_BLOCKED_INSENSITIVE)
EXACT = sorted(DEFAULT_BLOCKED_EXACT)


@pytest.mark.parametrize(
    ("family", "condition"),
    [
        ("empty", lambda v: v == ""),
        ("whitespace only", lambda v: v and not v.strip()),
        (
            "an insensitive word in mixed case",
            lambda v: v.lower() in INSENSITIVE and v != v.lower(),
        ),
        ("an insensitive word in upper case", lambda v: v.lower() in INSENSITIVE and v.isupper()),
        ("an exact value", lambda v: v in EXACT and v != ""),
        ("[object Object]", lambda v: v == "[object Object]"),
        ("a single-quoted word", lambda v: v[:1] == v[-1:] == "'" and len(v) > 2),
        ("a double-quoted word", lambda v: v[:1] == v[-1:] == '"' and len(v) > 2),
        ("quoted empty", lambda v: v in ("''", '""')),
        ("a padded word", lambda v: v != v.strip() and v.strip()),
        ("too long", lambda v: reason(v) is Reason.VALUE_TOO_LONG),
    ],
)
def test_blocked_values_include_each_family(family: str, condition: Callable[[str], bool]) -> None:
    found(blocked_values(), condition)


def test_blocked_true_mixes_blocked_and_linkable_values() -> None:
    found(identifier_values(blocked=True), lambda v: reason(v) is Reason.BLOCKED_VALUE)
    found(identifier_values(blocked=True), lambda v: reason(v) is Reason.VALUE_TOO_LONG)
    found(identifier_values(blocked=True), lambda v: reason(v) is None)


# --- identifiers -------------------------------------------------------------------------------


@CHECKS
@given(identifiers(kinds=("user_id", "email", "api_key")))
def test_identifiers_have_the_given_kinds(identifier: Identifier) -> None:
    assert isinstance(identifier, Identifier)
    assert identifier.kind in ("user_id", "email", "api_key")
    assert reason(identifier.value) is None
    builder().identifier("identifier", identifier)


def test_identifiers_cover_every_kind_and_look_like_them() -> None:
    for kind in ("user_id", "anonymous_id", "email"):
        found(identifiers(), lambda i, kind=kind: i.kind == kind)
    found(identifiers(kinds=("email",), hostile=False), lambda i: "@" in i.value)
    found(identifiers(kinds=("email",), blocked=True), lambda i: reason(i.value) is not None)


# --- single events -----------------------------------------------------------------------------


@CHECKS
@given(events())
def test_every_event_is_valid(event: Event) -> None:
    assert not isinstance(event, (Merge, Split, Forget))  # only on request
    record = builder().from_object(event)
    assert record.event_id == event.event_id
    assert event.timestamp is not None
    assert not record.blocked


@CHECKS
@given(events(blocked=True, types=("track", "identify", "identify_company")))
def test_events_with_blocked_values_are_still_valid(event: Event) -> None:
    builder().from_object(event)


@CHECKS
@given(events(hostile=False))
def test_plain_events_are_valid(event: Event) -> None:
    builder().from_object(event)


@CHECKS
@given(events(types=OPERATOR_TYPES, blocked=True))
def test_operator_events_are_valid(event: Event) -> None:
    assert isinstance(event, (Merge, Split, Forget))
    builder().from_object(event)


@pytest.mark.parametrize("cls", [Merge, Split, Forget])
def test_operator_events_include(cls: type) -> None:
    found(events(types=OPERATOR_TYPES), lambda e: type(e) is cls)


@pytest.mark.parametrize(
    ("description", "condition"),
    [
        *[(cls.__name__, lambda e, cls=cls: type(e) is cls) for cls in (Track, Identify, Alias)],
        *[(cls.__name__, lambda e, cls=cls: type(e) is cls) for cls in (Reset, IdentifyCompany)],
        ("an int timestamp", lambda e: type(e.timestamp) is int),
        ("a float timestamp", lambda e: type(e.timestamp) is float),
        (
            "a non-UTC datetime",
            lambda e: hasattr(e.timestamp, "utcoffset") and e.timestamp.utcoffset().total_seconds(),
        ),
        ("an int user id", lambda e: type(getattr(e, "user_id", None)) is int),
        ("identifiers=", lambda e: getattr(e, "identifiers", None)),
        ("traits", lambda e: getattr(e, "traits", None)),
        ("set_once", lambda e: getattr(e, "set_once", None)),
    ],
)
def test_events_include(description: str, condition: Callable[[Event], bool]) -> None:
    found(events(), condition)


@pytest.mark.parametrize("form", [Identifier, tuple, str])
def test_alias_events_give_previous_id_in_every_form(form: type) -> None:
    found(events(types=("alias",)), lambda e: isinstance(e.previous_id, form))


def test_events_blocked_includes_blocked_ints_and_company_ids() -> None:
    found(events(blocked=True, types=("identify",)), lambda e: e.user_id in (0, -1))
    found(
        events(blocked=True, types=("identify_company",)),
        lambda e: builder().from_object(e).company_id is None,
    )


@CHECKS
@given(events(types=("reset", "alias"), kinds=()))
def test_events_keep_to_the_given_types_and_kinds(event: Event) -> None:
    assert isinstance(event, (Reset, Alias))
    if isinstance(event, Alias):
        previous = event.previous_id
        kind = previous.kind if isinstance(previous, Identifier) else "user_id"
        if isinstance(previous, tuple):
            kind = previous[0]
        assert kind in ("user_id", "anonymous_id")
    record = builder().from_object(event)
    assert all(RULES.kind_names[k] in ("user_id", "anonymous_id") for k, _ in record.ids)


# --- streams -----------------------------------------------------------------------------------


@STREAM_SETTINGS
@given(streams())
def test_stream_events_are_valid_and_well_formed(stream: list[Event]) -> None:
    assert 1 <= len(stream) <= 60
    b = builder()
    by_id: dict[str, Event] = {}
    for event in stream:
        assert event.event_id is not None
        assert isinstance(event.timestamp, (int, float))
        # A duplicate delivery is the same object again, never other content under the same id.
        assert by_id.setdefault(event.event_id, event) is event
        b.from_object(event)
    # The ids sort in the true order, and time never runs backwards in it.
    true_order = distinct(stream)
    times = [e.timestamp for e in true_order]
    assert times == sorted(times)  # type: ignore[type-var]


@STREAM_SETTINGS
@given(streams(late=False, duplicates=False, blocked=False))
def test_stream_flags_keep_late_duplicates_and_blocked_values_out(stream: list[Event]) -> None:
    assert stream == distinct(stream)
    b = builder()
    for event in stream:
        assert b.from_object(event).blocked == ()


@STREAM_SETTINGS
@given(streams(resets=False, companies=False, traits=False))
def test_stream_flags_keep_resets_companies_and_traits_out(stream: list[Event]) -> None:
    for event in stream:
        assert not isinstance(event, (Reset, IdentifyCompany))
        assert getattr(event, "traits", None) is None
        assert getattr(event, "set_once", None) is None


@settings(STREAM_SETTINGS, max_examples=25)
@given(streams(hostile=True, blocked=False))
def test_hostile_streams_are_valid_and_never_blocked(stream: list[Event]) -> None:
    b = builder()
    for event in stream:
        assert b.from_object(event).blocked == ()


@settings(STREAM_SETTINGS, max_examples=25)
@given(streams(users=1, max_events=8, blocked=False))
def test_stream_size_arguments_are_kept(stream: list[Event]) -> None:
    assert len(stream) <= 8
    assert len({e.user_id for e in stream if isinstance(e, Identify)}) <= 1


@CHECKS
@given(streams(users=0, max_events=10))
def test_a_stream_without_users_has_only_anonymous_visitors(stream: list[Event]) -> None:
    assert stream
    assert all(
        isinstance(e, (Track, Reset)) and getattr(e, "user_id", None) is None for e in stream
    )


def users_per_anonymous_id(stream: list[Event]) -> Counter[str]:
    users: dict[str, set[Any]] = {}
    for e in stream:
        if isinstance(e, Identify) and e.anonymous_id is not None:
            users.setdefault(str(e.anonymous_id), set()).add(e.user_id)
    return Counter({anon: len(u) for anon, u in users.items()})


def logged_out(stream: list[Event]) -> bool:
    """Some identified anonymous id is reset."""
    reset = {str(e.anonymous_id) for e in stream if isinstance(e, Reset)}
    return any(anon in reset for anon in users_per_anonymous_id(stream))


def has_blocked(stream: list[Event]) -> bool:
    b = builder()
    return any(b.from_object(e).blocked for e in stream)


def anonymous_only(stream: list[Event]) -> bool:
    identified = {str(e.anonymous_id) for e in stream if isinstance(e, Identify)}
    return any(
        isinstance(e, Track) and e.user_id is None and str(e.anonymous_id) not in identified
        for e in stream
    )


def alias_between_users(stream: list[Event]) -> bool:
    return any(isinstance(e, Alias) and isinstance(e.previous_id, str) for e in stream)


def user_with_devices(n: int) -> Callable[[list[Event]], bool]:
    def condition(stream: list[Event]) -> bool:
        devices: dict[Any, set[Any]] = {}
        for e in stream:
            if isinstance(e, Identify) and e.anonymous_id is not None:
                devices.setdefault(e.user_id, set()).add(e.anonymous_id)
        return any(len(d) >= n for d in devices.values())

    return condition


def timestamp_tie(stream: list[Event]) -> bool:
    times = [e.timestamp for e in distinct(stream)]
    return len(set(times)) < len(times)


@pytest.mark.parametrize(
    ("feature", "condition"),
    [
        ("a reset", lambda s: any(isinstance(e, Reset) for e in s)),
        ("a shared device", lambda s: any(n >= 2 for n in users_per_anonymous_id(s).values())),
        # A shared device with a reset between its users looks like a logout in the events: the
        # next user's anonymous id is a new one.
        ("a logout", logged_out),
        ("a user with three devices", user_with_devices(3)),
        ("an anonymous-only visitor", anonymous_only),
        ("an e-mail identifier", lambda s: any(getattr(e, "identifiers", None) for e in s)),
        (
            "a shared e-mail",
            lambda s: (
                len(
                    {
                        e.user_id
                        for e in s
                        if isinstance(e, Identify)
                        and e.identifiers == {"email": "user1@example.com"}
                    }
                )
                >= 2
            ),
        ),
        ("an alias to an anonymous id", lambda s: any(isinstance(e, Alias) for e in s)),
        ("an alias between users", alias_between_users),
        ("a company", lambda s: any(isinstance(e, IdentifyCompany) for e in s)),
        ("company traits", lambda s: any(isinstance(e, IdentifyCompany) and e.traits for e in s)),
        (
            "a company joined by anonymous id",
            lambda s: any(isinstance(e, IdentifyCompany) and e.anonymous_id for e in s),
        ),
        ("traits", lambda s: any(isinstance(e, Identify) and e.traits for e in s)),
        ("set_once", lambda s: any(isinstance(e, Identify) and e.set_once for e in s)),
        (
            "a server-side track",
            lambda s: any(isinstance(e, Track) and not e.anonymous_id for e in s),
        ),
        ("a duplicate delivery", lambda s: len(s) > len(distinct(s))),
        ("a timestamp tie", timestamp_tie),
        ("a float timestamp", lambda s: any(isinstance(e.timestamp, float) for e in s)),
        ("a blocked value", has_blocked),
        ("thirty events", lambda s: len(s) >= 30),
    ],
)
def test_streams_include(feature: str, condition: Callable[[list[Event]], bool]) -> None:
    found(streams(), condition)


def test_streams_include_late_deliveries() -> None:
    found(streams(duplicates=False), lambda s: s != distinct(s))


def test_hostile_streams_use_hostile_values() -> None:
    found(
        streams(hostile=True),
        lambda s: any(not v.isascii() or v != v.strip() for e in s for v in ids_of(e)),
    )


def test_streams_are_often_rich() -> None:
    # Not only *some* stream has each feature: a fair share of them has several at once.
    rich = 0
    examples = 0

    # A share is a statistic of the draws: derandomized, so that it is the same figure in
    # every run rather than a test that fails now and then by chance.
    @settings(STREAM_SETTINGS, derandomize=True, database=None)
    @given(streams())
    def count(stream: list[Event]) -> None:
        nonlocal rich, examples
        examples += 1
        kinds = {type(e) for e in stream}
        if len(kinds) >= 4 and len(stream) >= 10:
            rich += 1

    count()
    assert rich >= examples // 5, (rich, examples)


# --- arrival orders ----------------------------------------------------------------------------


@STREAM_SETTINGS
@given(st.data(), streams(duplicates=False, late=False))
def test_arrival_orders_permute_and_duplicate(data: st.DataObject, stream: list[Event]) -> None:
    arrived = data.draw(arrival_orders(stream))
    assert {id(e) for e in arrived} == {id(e) for e in stream}
    assert len(arrived) >= len(stream)
    plain = data.draw(arrival_orders(stream, duplicates=False))
    assert sorted(map(id, plain)) == sorted(map(id, stream))


def test_arrival_orders_reorder_and_duplicate() -> None:
    stream = [Reset(anonymous_id=f"a{i}", timestamp=i, event_id=f"e{i}") for i in range(6)]
    found(arrival_orders(stream), lambda s: len(s) > len(stream))
    found(arrival_orders(stream, duplicates=False), lambda s: s != stream)
    assert find(arrival_orders([]), lambda s: True) == []


# --- Segment messages --------------------------------------------------------------------------


@CHECKS
@given(segment_messages(types=SEGMENT_TYPES))
def test_segment_messages_are_valid(message: dict[str, Any]) -> None:
    assert message["type"] in SEGMENT_TYPES
    assert message["timestamp"].endswith("Z")
    record = builder().from_object(message)
    assert record.event_id == message["messageId"]
    assert not record.blocked


@CHECKS
@given(segment_messages(blocked=True))
def test_segment_messages_with_blocked_values_are_valid(message: dict[str, Any]) -> None:
    assert message["type"] in ("identify", "track", "alias", "group")
    builder().from_message(message)


def test_segment_messages_include() -> None:
    for mtype in ("identify", "track", "alias", "group"):
        found(segment_messages(), lambda m, mtype=mtype: m["type"] == mtype)
    found(segment_messages(), lambda m: m.get("previousId") == m.get("anonymousId") is not None)
    found(segment_messages(), lambda m: "userId" in m and "anonymousId" in m)
    found(segment_messages(), lambda m: m["type"] == "track" and "userId" not in m)
    found(segment_messages(blocked=True), lambda m: bool(builder().from_message(m).blocked))


def test_events_cover_every_event_type_there_is() -> None:
    assert sorted(EVENT_TYPES + OPERATOR_TYPES) == sorted(BUILDER_EVENT_TYPES)
