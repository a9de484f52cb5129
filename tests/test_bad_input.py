"""Bad input (docs/concepts.md, Errors): every public entry point validates; bad input
raises the documented exception naming the field and the value, and changes nothing."""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any

import pytest

import identityres as ir
from identityres import errors
from identityres.testing import snapshot


@pytest.fixture
def graph() -> ir.IdentityGraph:
    g = ir.IdentityGraph()
    g.identify("u1", "a1", traits={"plan": "pro"}, timestamp=1, event_id="m1")
    g.identify_company("acme", user_id="u1", timestamp=2, event_id="m2")
    g.reset("a1", timestamp=3, event_id="m3")
    return g


def unchanged(g: ir.IdentityGraph, before: Any) -> None:
    assert snapshot(g) == before
    assert g.stats().events == 3


@pytest.mark.parametrize(
    ("call", "exc", "field", "shown"),
    [
        (lambda g: g.identify(1.5, "a2"), errors.IdentifierTypeError, "user_id", "1.5"),
        (lambda g: g.identify(True, "a2"), errors.IdentifierTypeError, "user_id", "True"),
        (lambda g: g.identify("u2", b"a2"), errors.IdentifierTypeError, "anonymous_id", "b'a2'"),
        (
            lambda g: g.track("x", anonymous_id=["a"]),
            errors.IdentifierTypeError,
            "anonymous_id",
            "['a']",
        ),
        (lambda g: g.identify("u2", "\ud800"), errors.IdentifierTypeError, "anonymous_id", "ud800"),
        (
            lambda g: g.identify("u2", timestamp=datetime(2026, 1, 1)),
            errors.InvalidTimestampError,
            "timestamp",
            "datetime",
        ),
        (
            lambda g: g.identify("u2", timestamp=math.nan),
            errors.InvalidTimestampError,
            "timestamp",
            "nan",
        ),
        (
            lambda g: g.identify("u2", timestamp=math.inf),
            errors.InvalidTimestampError,
            "timestamp",
            "inf",
        ),
        (  # an int beyond any float: not an OverflowError, on the fast path or not
            lambda g: g.identify("u2", "a2", timestamp=10**400, event_id="e9"),
            errors.InvalidTimestampError,
            "timestamp",
            "1000000",
        ),
        (
            lambda g: g.track("Viewed", anonymous_id="a2", timestamp=-(10**400), event_id="e9"),
            errors.InvalidTimestampError,
            "timestamp",
            "-1000000",
        ),
        (
            lambda g: g.identify("u2", timestamp="2026"),
            errors.InvalidTimestampError,
            "timestamp",
            "'2026'",
        ),
        (
            lambda g: g.track("x", identifiers={"fax": "1"}),
            errors.UnknownKindError,
            "identifiers",
            "'fax'",
        ),
        (
            lambda g: g.resolve(identifier=("fax", "1")),
            errors.UnknownKindError,
            "identifier",
            "'fax'",
        ),
        (
            lambda g: g.identify("u1", "a1", traits={"plan": "free"}, timestamp=1, event_id="m1"),
            errors.EventIdConflictError,
            "event_id",
            "'m1'",
        ),
        (lambda g: g.track("x"), errors.InvalidEventError, "identifiers", "None"),
        (lambda g: g.track("", anonymous_id="a"), errors.InvalidEventError, "event", "''"),
        (
            lambda g: g.identify("u2", traits=["plan"]),
            errors.InvalidEventError,
            "traits",
            "['plan']",
        ),
        (
            lambda g: g.identify("u2", traits={1: "x"}),
            errors.InvalidEventError,
            "traits",
            "{1: 'x'}",
        ),
        (lambda g: g.identify("u2", event_id=""), errors.InvalidEventError, "event_id", "''"),
        (lambda g: g.identify_company("acme"), errors.InvalidEventError, "user_id", "None"),
        (
            lambda g: g.identify("u2", identifiers={"user_id": "u3"}),
            errors.InvalidEventError,
            "identifiers",
            "'u3'",
        ),
        (lambda g: g.resolve(), errors.InvalidEventError, "identifier", "None"),
        (
            lambda g: g.ingest([], on_error="ignore"),
            errors.InvalidEventError,
            "on_error",
            "'ignore'",
        ),
    ],
)
def test_bad_input_raises_documented_error_and_changes_nothing(
    graph: ir.IdentityGraph, call: Any, exc: type[Exception], field: str, shown: str
) -> None:
    before = snapshot(graph)
    with pytest.raises(exc) as info:
        call(graph)
    assert isinstance(info.value, errors.IdentityResError)
    assert isinstance(info.value, ValueError)
    assert info.value.field == field  # type: ignore[attr-defined]
    assert field in str(info.value) and shown in str(info.value)
    unchanged(graph, before)


def test_type_errors_are_also_type_errors() -> None:
    with pytest.raises(TypeError):
        ir.IdentityGraph().identify(3.0)


def test_malformed_ingest_dicts_raise_mode_applies_nothing(graph: ir.IdentityGraph) -> None:
    before = snapshot(graph)
    good = {"type": "identify", "userId": "u9", "anonymousId": "a9", "messageId": "g1"}
    bad_cases: list[tuple[Any, str]] = [
        ({"type": "identify", "traits": {"plan": "free"}}, "userId"),
        ({"type": "teleport", "userId": "u"}, "type"),
        ({"type": "track", "anonymousId": "a"}, "event"),
        ({"type": "track", "event": "x", "anonymousId": {"id": 1}}, "anonymousId"),
        ({"type": "identify", "userId": "u", "timestamp": "yesterday"}, "timestamp"),
        ({"type": "identify", "userId": "u", "timestamp": "2026-01-01T00:00:00"}, "timestamp"),
        ({"type": "group", "userId": "u"}, "groupId"),
        ({"type": "alias", "userId": "u"}, "previousId"),
        ({"type": "identify", "userId": "u", "messageId": "m1"}, "messageId"),
        ("not a dict", "event"),
    ]
    for bad, field in bad_cases:
        with pytest.raises(errors.ValidationError) as info:
            graph.ingest([good, bad])
        assert info.value.index == 1, bad
        assert info.value.field == field, bad
        assert str(info.value).startswith("events[1]: " + field)
        unchanged(graph, before)


def test_malformed_ingest_dicts_skip_mode_applies_the_good_ones(graph: ir.IdentityGraph) -> None:
    report = graph.ingest(
        [
            {"type": "identify", "userId": "u9", "anonymousId": "a9", "messageId": "g1"},
            {"type": "identify", "userId": 2.5, "messageId": "g2"},
            {"type": "track", "event": "x", "anonymousId": "a9", "messageId": "g3", "timestamp": 5},
            {"type": "track", "event": "x", "anonymousId": "a9", "messageId": "g3", "timestamp": 5},
            {"type": "track", "event": "y", "anonymousId": "a9", "messageId": "g3", "timestamp": 5},
        ],
        on_error="skip",
    )
    assert [(e.index, e.field) for e in report.errors] == [(1, "userId"), (4, "messageId")]
    assert isinstance(report.errors[0].error, errors.IdentifierTypeError)
    assert report.applied == 2 and report.duplicates == 1
    assert graph.resolve(anonymous_id="a9") == "u9"


@pytest.mark.parametrize(
    "kwargs",
    [
        {"kinds": ("user_id",)},
        {"kinds": ("Email",)},
        {"kinds": ("email", "email")},
        {"limits": {"fax": 1}},
        {"limits": {"user_id": 0}},
        {"max_profile_size": 0},
        {"max_length": -1},
        {"blocked_patterns": ["("]},
        {"normalizers": {"fax": str.lower}},
        {"priority": ("user_id", "anonymous_id")},
    ],
)
def test_bad_rules_raise_configuration_error(kwargs: dict[str, Any]) -> None:
    with pytest.raises(errors.ConfigurationError):
        ir.Rules(**kwargs)


def test_bad_rules_object() -> None:
    with pytest.raises(errors.ConfigurationError):
        ir.IdentityGraph(rules={"limits": {}})  # type: ignore[arg-type]


def test_errors_pickle_round_trip() -> None:
    import pickle

    err = errors.UnknownKindError("identifiers", "fax", "unknown kind")
    err.at_index(3)
    copy = pickle.loads(pickle.dumps(err))
    assert type(copy) is errors.UnknownKindError and str(copy) == str(err) and copy.index == 3


def test_traits_must_be_json_data_and_are_kept_as_json_reads_them() -> None:
    g = ir.IdentityGraph()
    with pytest.raises(errors.InvalidEventError) as info:
        g.identify("u1", traits={"when": object()})
    assert info.value.field == "traits"
    g.identify("u1", traits={"tags": ("a", "b"), "nested": {1: "x"}}, timestamp=1)
    p = g.profile(user_id="u1")
    assert p is not None and p.traits == {"tags": ["a", "b"], "nested": {"1": "x"}}
    assert g.stats().events == 1


def test_event_ids_must_be_valid_unicode() -> None:
    with pytest.raises(errors.InvalidEventError) as info:
        ir.IdentityGraph().identify("u1", event_id="m\ud800")
    assert info.value.field == "event_id"


def test_one_memory_store_serves_one_set_of_rules() -> None:
    from identityres.storage import MemoryStore

    store = MemoryStore()
    ir.IdentityGraph(store=store)
    ir.IdentityGraph(store=store)  # same rules: fine
    with pytest.raises(errors.ConfigurationError):
        ir.IdentityGraph(ir.Rules(limits={"user_id": None}), store=store)


def test_a_memory_store_takes_a_second_graph_only_with_the_same_rules() -> None:
    from identityres.storage.memory import MemoryStore

    store = MemoryStore()
    ir.IdentityGraph(ir.Rules(blocked_patterns=["^test-"]), store=store)
    # equal rules, built again: accepted
    ir.IdentityGraph(ir.Rules(blocked_patterns=["^test-"]), store=store)
    for other in (ir.Rules(), ir.Rules(blocked_patterns=["^demo-"]), ir.Rules(max_length=50)):
        with pytest.raises(errors.ConfigurationError, match="other rules"):
            ir.IdentityGraph(other, store=store)
