"""Example tests: the R3 seed scenarios and the cases issue #2 lists, worked out by hand
from docs/merge-rules.md (expected values are written from the rules, not read off the
engine)."""

from __future__ import annotations

import re
from datetime import datetime, timezone

import pytest

import identityres as ir
from identityres import Identifier, Reason

UTC = timezone.utc


def ids(profile: ir.Profile | None) -> set[tuple[str, str]]:
    assert profile is not None
    return {(i.kind, i.value) for i in profile.all_identifiers()}


# --- R3: the seed scenarios -----------------------------------------------------------------


def test_no_user_ever_identified_one_anonymous_profile_per_anonymous_id() -> None:
    g = ir.IdentityGraph()
    g.track("Docs viewed", anonymous_id="a1", timestamp=1)
    g.track("Docs viewed", anonymous_id="a2", timestamp=2)
    g.track("Pricing viewed", anonymous_id="a1", timestamp=3)
    profiles = list(g.profiles())
    assert len(profiles) == 2
    for p, anon in zip(profiles, ["a1", "a2"], strict=True):
        assert p.identified_user_id is None
        assert p.user_id == anon
        assert p.user_id_kind == "anonymous_id"
        assert p.anonymous_ids == {anon}


def test_user_identified_after_anonymous_events_takes_over_the_anonymous_profile() -> None:
    g = ir.IdentityGraph()
    g.track("Docs viewed", anonymous_id="a1", timestamp=1)
    g.track("Docs viewed", anonymous_id="a1", timestamp=2)
    out = g.identify("u1", "a1", timestamp=3)
    assert out.joined == (Identifier("anonymous_id", "a1"),)
    p = g.profile(anonymous_id="a1")
    assert p is not None
    assert p.user_id == p.identified_user_id == "u1"
    assert p.first_seen == datetime.fromtimestamp(1, UTC)
    assert p.last_seen == datetime.fromtimestamp(3, UTC)
    assert len(list(g.profiles())) == 1


def test_same_user_on_several_devices_merges_the_anonymous_profiles() -> None:
    g = ir.IdentityGraph()
    g.track("Docs viewed", anonymous_id="laptop", timestamp=1)
    g.track("Docs viewed", anonymous_id="phone", timestamp=2)
    g.identify("u1", "laptop", timestamp=3)
    g.identify("u1", "phone", timestamp=4)
    (p,) = g.profiles()
    assert p.user_id == "u1"
    assert p.anonymous_ids == {"laptop", "phone"}


def test_several_users_on_one_device_without_reset_stay_apart() -> None:
    g = ir.IdentityGraph()
    g.identify("u1", "shared", timestamp=1)
    out = g.identify("u2", "shared", timestamp=2)
    assert out.joined == ()
    (refusal,) = out.refused
    assert refusal.identifier == Identifier("anonymous_id", "shared")
    assert refusal.anchor == Identifier("user_id", "u2")
    assert refusal.reason is Reason.LIMIT_EXCEEDED
    assert refusal.kind == "user_id"
    assert g.resolve(anonymous_id="shared") == "u1"
    assert ids(g.profile(user_id="u2")) == {("user_id", "u2")}
    assert len(list(g.profiles())) == 2


def test_several_users_on_one_device_with_reset_give_two_clean_profiles() -> None:
    g = ir.IdentityGraph()
    g.identify("u1", "a-before", timestamp=1)
    g.reset("a-before", timestamp=2)
    # the client rotates to a new anonymous id after the reset
    g.track("Docs viewed", anonymous_id="a-after", timestamp=3)
    g.identify("u2", "a-after", timestamp=4)
    assert ids(g.profile(user_id="u1")) == {("user_id", "u1"), ("anonymous_id", "a-before")}
    assert ids(g.profile(user_id="u2")) == {("user_id", "u2"), ("anonymous_id", "a-after")}
    assert list(g.refusals()) == []


# --- other cases listed in issue #2 -----------------------------------------------------------


def test_identify_as_the_very_first_event() -> None:
    g = ir.IdentityGraph()
    out = g.identify("u1", timestamp=5)
    assert out.anchor == Identifier("user_id", "u1")
    p = g.profile(user_id="u1")
    assert p is not None and p.user_id == "u1" and p.anonymous_ids == frozenset()


def test_self_link_identify_with_anonymous_id_equal_to_user_id() -> None:
    # Different kinds with the same value are different identifiers: they join.
    g = ir.IdentityGraph()
    out = g.identify("u1", anonymous_id="u1", timestamp=1)
    assert out.joined == (Identifier("anonymous_id", "u1"),)
    assert ids(g.profile(user_id="u1")) == {("user_id", "u1"), ("anonymous_id", "u1")}
    # and the same identifier twice in one event is one identifier
    out = g.identify("u1", identifiers={"user_id": "u1"}, timestamp=2)
    assert out.joined == () and out.refused == ()


def test_transitive_chain_joins_everything() -> None:
    g = ir.IdentityGraph()
    g.track("Signed up", anonymous_id="a", identifiers={"email": "b@x.io"}, timestamp=1)
    g.track("Key created", identifiers={"email": "b@x.io", "api_key": "c"}, timestamp=2)
    assert g.resolve(anonymous_id="a") == g.resolve(identifier=("api_key", "c")) == "b@x.io"
    p = g.profile(identifier=Identifier("api_key", "c"))
    assert p is not None and p.user_id_kind == "email" and p.identified_user_id is None


def test_alias_between_two_identified_users_is_refused() -> None:
    g = ir.IdentityGraph()
    g.identify("old-id", "a1", timestamp=1)
    g.identify("new-id", "a2", timestamp=2)
    out = g.alias("new-id", "old-id", timestamp=3)
    (refusal,) = out.refused
    assert refusal.identifier == Identifier("user_id", "old-id")
    assert refusal.reason is Reason.LIMIT_EXCEEDED and refusal.kind == "user_id"
    assert g.resolve(user_id="old-id") == "old-id"
    assert g.resolve(user_id="new-id") == "new-id"


def test_alias_of_an_anonymous_id_joins() -> None:
    g = ir.IdentityGraph()
    g.track("Docs viewed", anonymous_id="a1", timestamp=1)
    out = g.alias("u1", Identifier("anonymous_id", "a1"), timestamp=2)
    assert out.joined == (Identifier("anonymous_id", "a1"),)
    assert g.resolve(anonymous_id="a1") == "u1"


@pytest.mark.parametrize(
    "value",
    [
        "",
        "   ",
        "Anonymous",
        "GUEST",
        "distinctid",
        "Distinct_Id",
        "ID",
        "not_authenticated",
        "Email",
        "undefined",
        "TRUE",
        "false",
        "[object Object]",
        "NaN",
        "nan",
        "None",
        "none",
        "null",
        "0",
        "-1",
        "'null'",
        '"undefined"',
        '""',
        "x" * 401,
    ],
)
def test_default_blocked_values_link_nothing(value: str) -> None:
    g = ir.IdentityGraph()
    g.identify("u1", "a1", timestamp=1)
    out = g.identify("u2", value, timestamp=2)
    (blocked,) = out.blocked
    assert blocked.kind == "anonymous_id"
    assert blocked.reason is (Reason.VALUE_TOO_LONG if len(value) > 400 else Reason.BLOCKED_VALUE)
    assert out.joined == () and out.refused == ()
    assert g.resolve(anonymous_id=value) is None
    # a blocked user id does not even get a profile, and the event is still recorded
    out = g.identify(value, "a1", timestamp=3)
    assert out.anchor == Identifier("anonymous_id", "a1") and len(out.blocked) == 1
    assert g.stats().events == 3
    assert len(list(g.profiles())) == 2


def test_values_close_to_blocked_ones_are_not_blocked() -> None:
    g = ir.IdentityGraph()
    for value in ("Null", "NULL", "0.0", "guest-42", "x" * 400, "nullable"):
        out = g.identify(value, timestamp=1)
        assert out.blocked == (), value
        assert g.resolve(user_id=value) == value


def test_user_blocked_values_and_patterns() -> None:
    rules = ir.Rules(
        blocked_values={"test-user"}, blocked_patterns=[r"^[0-]*$", re.compile("@example\\.com$")]
    )
    g = ir.IdentityGraph(rules)
    assert g.identify("test-user", "a", timestamp=1).blocked[0].reason is Reason.BLOCKED_VALUE
    assert g.identify("00-000", "a", timestamp=2).blocked[0].reason is Reason.BLOCKED_VALUE
    out = g.identify("u1", "a", identifiers={"email": "x@example.com"}, timestamp=3)
    assert [b.value for b in out.blocked] == ["x@example.com"]
    assert g.identify("u2", "b", timestamp=4).blocked == ()
    assert ir.IdentityGraph(ir.Rules(max_length=5)).identify("abcdef").blocked[0].reason is (
        Reason.VALUE_TOO_LONG
    )


def test_email_normalizer_off_by_default_on_when_configured() -> None:
    g = ir.IdentityGraph()
    g.identify("u1", identifiers={"email": " Ada@X.io "}, timestamp=1)
    g.track("Seen", anonymous_id="a", identifiers={"email": "ada@x.io"}, timestamp=2)
    # default: only whitespace is stripped, case is kept: two emails, two profiles
    assert g.resolve(identifier=("email", "Ada@X.io")) == "u1"
    assert g.resolve(identifier=("email", "ada@x.io")) == "ada@x.io"

    g = ir.IdentityGraph(ir.Rules(normalizers={"email": ir.normalize_email}))
    g.identify("u1", identifiers={"email": " Ada@X.io "}, timestamp=1)
    g.track("Seen", anonymous_id="a", identifiers={"email": "ada@x.io"}, timestamp=2)
    assert g.resolve(anonymous_id="a") == "u1"
    assert g.resolve(identifier=("email", "ADA@x.io")) == "u1"


def test_per_kind_limit_demotes_by_priority() -> None:
    g = ir.IdentityGraph()
    g.identify("u1", identifiers={"email": "e@x.io"}, timestamp=1)
    out = g.identify("u2", identifiers={"email": "e@x.io"}, timestamp=2)
    assert out.anchor == Identifier("user_id", "u2")
    (refusal,) = out.refused
    assert refusal.identifier == Identifier("email", "e@x.io")
    assert refusal.reason is Reason.LIMIT_EXCEEDED and refusal.kind == "user_id"
    assert ids(g.profile(user_id="u2")) == {("user_id", "u2")}
    assert g.resolve(identifier=("email", "e@x.io")) == "u1"


def test_declared_kind_limit() -> None:
    g = ir.IdentityGraph(ir.Rules(limits={"email": 1}))
    g.identify("u1", identifiers={"email": "a@x.io"}, timestamp=1)
    out = g.identify("u1", identifiers={"email": "b@x.io"}, timestamp=2)
    assert out.refused[0].kind == "email"
    assert g.resolve(identifier=("email", "b@x.io")) == "b@x.io"


def test_total_cap_refuses_with_profile_size_limit() -> None:
    g = ir.IdentityGraph(ir.Rules(max_profile_size=3))
    g.identify("u1", "a1", timestamp=1)
    g.identify("u1", "a2", timestamp=2)
    out = g.identify("u1", "a3", timestamp=3)
    (refusal,) = out.refused
    assert refusal.reason is Reason.PROFILE_SIZE_LIMIT and refusal.kind is None
    assert g.resolve(anonymous_id="a3") == "a3"
    p = g.profile(user_id="u1")
    assert p is not None and p.anonymous_ids == {"a1", "a2"}


def test_reset_then_reuse_of_the_retired_anonymous_id_is_refused() -> None:
    g = ir.IdentityGraph()
    g.identify("u1", "a1", timestamp=1)
    g.reset("a1", timestamp=2)
    out = g.identify("u2", "a1", timestamp=3)
    (refusal,) = out.refused
    assert refusal.reason is Reason.ANONYMOUS_ID_RESET
    assert g.resolve(anonymous_id="a1") == "u1"
    # a retired anonymous id also cannot pull in a new identifier
    out = g.track("Seen", anonymous_id="a1", identifiers={"email": "e@x.io"}, timestamp=4)
    assert out.refused[0].reason is Reason.ANONYMOUS_ID_RESET
    assert g.resolve(identifier=("email", "e@x.io")) == "e@x.io"
    # an event dated before the reset still joins (it happened before logout)
    g.track("Seen", anonymous_id="a1", identifiers={"phone": "+100"}, timestamp=1.5)
    assert g.resolve(identifier=("phone", "+100")) == "u1"


def test_traits_last_write_wins_across_a_merge_and_set_once_keeps_the_first() -> None:
    g = ir.IdentityGraph()
    # an anonymous-era trait written to an email-anchored profile
    g.identify("u1", "a1", traits={"plan": "free"}, set_once={"source": "docs"}, timestamp=1)
    g.identify("u1", traits={"plan": "pro"}, set_once={"source": "ads"}, timestamp=5)
    g.track("Seen", anonymous_id="a2", identifiers={"email": "e@x.io"}, timestamp=2)
    g.alias("u2", ("email", "e@x.io"), timestamp=3)
    g.identify("u2", traits={"plan": "team", "seats": 3}, timestamp=4)
    p = g.profile(user_id="u1")
    assert p is not None
    assert p.traits == {"plan": "pro", "source": "docs"}
    # now u2's profile merges into u1's with the user_id limit lifted
    g2 = ir.IdentityGraph(ir.Rules(limits={"user_id": None}))
    for method, args, kwargs in [
        (
            "identify",
            ("u1", "a1"),
            {"traits": {"plan": "free"}, "set_once": {"source": "docs"}, "timestamp": 1},
        ),
        (
            "identify",
            ("u2", "a2"),
            {"traits": {"plan": "team", "seats": 3}, "set_once": {"source": "ads"}, "timestamp": 4},
        ),
        ("identify", ("u1",), {"traits": {"plan": "pro"}, "timestamp": 3}),
        ("alias", ("u1", "u2"), {"timestamp": 6}),
    ]:
        getattr(g2, method)(*args, **kwargs)
    merged = g2.profile(user_id="u2")
    assert merged is not None and merged.user_id == "u1"  # u1 seen first
    assert merged.traits == {"plan": "team", "seats": 3, "source": "docs"}


def test_company_kept_through_a_merge_and_latest_company_wins() -> None:
    g = ir.IdentityGraph()
    g.identify_company("acme", anonymous_id="a1", traits={"plan": "free"}, timestamp=1)
    g.identify_company("globex", user_id="u1", traits={"size": 10}, timestamp=2)
    g.identify("u1", "a1", timestamp=3)
    p = g.profile(user_id="u1")
    assert p is not None
    assert p.company_ids == {"acme", "globex"}
    assert p.company_id == "globex"
    g.identify_company("acme", user_id="u1", traits={"plan": "enterprise"}, timestamp=4)
    p = g.profile(anonymous_id="a1")
    assert p is not None and p.company_id == "acme"
    acme = g.company("acme")
    assert acme is not None
    assert acme.traits == {"plan": "enterprise"}
    assert acme.profiles == {"u1"}
    assert g.company("unknown") is None


def test_identify_arriving_before_earlier_anonymous_events() -> None:
    g = ir.IdentityGraph()
    g.identify("u1", "a1", timestamp=10)
    g.track("Docs viewed", anonymous_id="a1", timestamp=1)
    g.track("Docs viewed", anonymous_id="a1", timestamp=2)
    p = g.profile(anonymous_id="a1")
    assert p is not None and p.user_id == "u1"
    assert p.first_seen == datetime.fromtimestamp(1, UTC)


def test_multi_user_device_in_reverse_order_matches_forward_order() -> None:
    events = [
        ir.Identify(user_id="u1", anonymous_id="shared", timestamp=1, event_id="e1"),
        ir.Identify(user_id="u2", anonymous_id="shared", timestamp=2, event_id="e2"),
        ir.Identify(user_id="u3", anonymous_id="shared", timestamp=3, event_id="e3"),
    ]
    forward = ir.IdentityGraph()
    for e in events:
        forward.ingest([e])
    backward = ir.IdentityGraph()
    outcomes = [backward.ingest([e]).outcomes[0] for e in reversed(events)]
    # u3's identify was decided first, then undone when earlier events arrived
    assert outcomes[1].late and outcomes[2].late
    for g in (forward, backward):
        assert g.resolve(anonymous_id="shared") == "u1"
        assert ids(g.profile(user_id="u3")) == {("user_id", "u3")}
        assert [(r.event_id, r.identifier.value) for r in g.refusals()] == [
            ("e2", "shared"),
            ("e3", "shared"),
        ]


def test_late_reset_replays_the_component() -> None:
    g = ir.IdentityGraph()
    g.identify("u1", "a1", timestamp=1)
    g.identify("u2", "a2", timestamp=4)
    g.identify("u2", "a1", timestamp=3)  # refused: a1 is u1's
    g.track("Seen", anonymous_id="a1", identifiers={"email": "e@x.io"}, timestamp=5)
    assert g.resolve(identifier=("email", "e@x.io")) == "u1"
    out = g.reset("a1", timestamp=2)  # arrives last, dated before everything that used a1
    assert out.late
    assert g.resolve(anonymous_id="a1") == "u1"
    assert g.resolve(identifier=("email", "e@x.io")) == "e@x.io"
    assert {r.reason for r in g.refusals()} == {Reason.ANONYMOUS_ID_RESET}


def test_duplicate_changes_nothing() -> None:
    g = ir.IdentityGraph()
    first = g.identify("u1", "a1", traits={"plan": "pro"}, timestamp=1, event_id="m1")
    again = g.identify("u1", "a1", traits={"plan": "pro"}, timestamp=1, event_id="m1")
    assert not first.duplicate and again.duplicate
    # an event without event_id gets one derived from its content
    x = g.track("Seen", anonymous_id="a9", timestamp=7)
    y = g.track("Seen", anonymous_id="a9", timestamp=7)
    assert x.event_id == y.event_id and y.duplicate
    assert g.stats().events == 2


def test_canonical_id_is_the_earliest_seen_user_id_when_several_are_allowed() -> None:
    g = ir.IdentityGraph(ir.Rules(limits={"user_id": 3}))
    g.identify("zed", "a1", timestamp=5)
    g.identify("amy", "a1", timestamp=7)
    g.identify("bob", timestamp=1)  # bob is seen earliest, but alone
    assert g.resolve(user_id="amy") == "zed"
    g.alias("amy", "bob", timestamp=8)
    assert g.resolve(user_id="zed") == "bob"
    # ties on the key are broken by value
    h = ir.IdentityGraph(ir.Rules(limits={"user_id": None}))
    h.alias("m", "k", timestamp=1)
    assert h.resolve(user_id="m") == "k"


def test_redelivery_without_timestamp_is_a_duplicate_not_a_conflict() -> None:
    clock = iter([100.0, 200.0, 300.0, 400.0])
    g = ir.IdentityGraph(clock=lambda: next(clock))
    first = g.track("Seen", anonymous_id="a1", event_id="m1")
    again = g.track("Seen", anonymous_id="a1", event_id="m1")
    assert again.duplicate and not first.duplicate
    p = g.profile(anonymous_id="a1")
    assert p is not None and p.first_seen == p.last_seen == datetime.fromtimestamp(100, UTC)
    # without an event_id the clock time is part of the event: two calls, two events
    g.track("Seen", anonymous_id="a1")
    g.track("Seen", anonymous_id="a1")
    assert g.stats().events == 3


def test_reset_outcome_names_its_anchor() -> None:
    out = ir.IdentityGraph().reset("a1", timestamp=1)
    assert out.anchor == Identifier("anonymous_id", "a1")


def test_empty_string_stays_blocked_without_the_default_list() -> None:
    g = ir.IdentityGraph(ir.Rules(default_blocked_values=False))
    assert g.identify("u1", "   ", timestamp=1).blocked[0].reason is Reason.BLOCKED_VALUE
    assert g.identify("null", "a1", timestamp=2).blocked == ()
