"""Example tests of the reference resolver (identityres.testing) against hand-worked results.

Every expectation here was worked out by hand from the merge semantics (docs/merge-rules.md,
R1-R7), not by running the resolver: the reference is the oracle for the engine, so it has to
be checked against something independent of any code.
"""

from __future__ import annotations

import itertools
from datetime import datetime, timezone
from typing import Any

import pytest

from identityres._model import (
    Alias,
    Identifier,
    Identify,
    IdentifyCompany,
    Profile,
    Reason,
    Refusal,
    Reset,
    Track,
)
from identityres._rules import Rules
from identityres.errors import EventIdConflictError, InvalidEventError
from identityres.testing import ReferenceResolver, snapshot, snapshot_diff

T0 = 1_700_000_000

USER = "user_id"
ANON = "anonymous_id"


def t(n: int) -> int:
    """Epoch seconds, ``n`` seconds after an arbitrary origin."""
    return T0 + n


def utc(n: int) -> datetime:
    return datetime.fromtimestamp(T0 + n, tz=timezone.utc)


def members(profile: Profile | None) -> set[tuple[str, str]]:
    assert profile is not None
    return {(kind, v) for kind, values in profile.identifiers.items() for v in values}


def refusal(
    event_id: str,
    ident: tuple[str, str],
    anchor: tuple[str, str],
    reason: Reason,
    kind: str | None = None,
) -> Refusal:
    return Refusal(event_id, Identifier(*ident), Identifier(*anchor), reason, kind)


def limit(event_id: str, ident: tuple[str, str], anchor: tuple[str, str]) -> Refusal:
    return refusal(event_id, ident, anchor, Reason.LIMIT_EXCEEDED, USER)


def replay(events: list[Any], rules: Rules | None = None) -> ReferenceResolver:
    r = ReferenceResolver(rules)
    r.ingest(events)
    return r


# -- R3: the seed scenarios ------------------------------------------------------------------------


def test_r3_no_user_id_ever_identified() -> None:
    r = ReferenceResolver()
    r.track("page", anonymous_id="a1", timestamp=t(1), event_id="e1")
    r.track("page", anonymous_id="a2", timestamp=t(2), event_id="e2")
    r.track("page", anonymous_id="a1", timestamp=t(3), event_id="e3")

    profiles = list(r.profiles())
    assert [p.user_id for p in profiles] == ["a1", "a2"]
    for p in profiles:
        assert p.user_id_kind == ANON
        assert p.identified_user_id is None
        assert not p.is_identified
        assert p.anonymous_ids == frozenset({p.user_id})
        assert p.identifiers == {ANON: frozenset({p.user_id})}
        assert p.company_id is None
        assert p.company_ids == frozenset()
        assert p.traits == {}
    a1, a2 = profiles
    assert (a1.first_seen, a1.last_seen) == (utc(1), utc(3))
    assert (a2.first_seen, a2.last_seen) == (utc(2), utc(2))
    assert list(r.refusals()) == []
    assert r.resolve(anonymous_id="a2") == "a2"


def test_r3_user_identified_after_anonymous_events() -> None:
    r = ReferenceResolver()
    r.track("page", anonymous_id="a1", timestamp=t(1), event_id="e1")
    r.track("signup", anonymous_id="a1", timestamp=t(2), event_id="e2")
    r.identify("u1", "a1", timestamp=t(3), event_id="e3")

    (p,) = r.profiles()
    assert p.user_id == p.identified_user_id == "u1"
    assert p.user_id_kind == USER
    assert p.anonymous_ids == frozenset({"a1"})
    assert p.identifiers == {USER: frozenset({"u1"}), ANON: frozenset({"a1"})}
    assert (p.first_seen, p.last_seen) == (utc(1), utc(3))
    assert r.resolve(anonymous_id="a1") == "u1"
    assert r.profile(anonymous_id="a1") == r.profile(user_id="u1")
    assert list(r.refusals()) == []


def test_r3_same_user_on_several_devices() -> None:
    r = ReferenceResolver()
    r.track("page", anonymous_id="phone", timestamp=t(0), event_id="e0")
    r.identify("u1", "laptop", timestamp=t(1), event_id="e1")
    r.identify("u1", "phone", timestamp=t(2), event_id="e2")

    (p,) = r.profiles()
    assert p.user_id == p.identified_user_id == "u1"
    assert p.anonymous_ids == frozenset({"laptop", "phone"})
    assert members(p) == {(USER, "u1"), (ANON, "laptop"), (ANON, "phone")}
    assert (p.first_seen, p.last_seen) == (utc(0), utc(2))
    assert list(r.refusals()) == []


def _several_users_one_device_no_reset() -> list[Any]:
    return [
        Identify(user_id="u1", anonymous_id="a1", timestamp=t(1), event_id="e1"),
        Identify(user_id="u2", anonymous_id="a1", timestamp=t(2), event_id="e2"),
        Track(event="page", anonymous_id="a1", timestamp=t(3), event_id="e3"),
    ]


def test_r3_several_users_one_device_without_reset() -> None:
    r = replay(_several_users_one_device_no_reset())

    u1, u2 = r.profiles()
    assert members(u1) == {(USER, "u1"), (ANON, "a1")}
    assert members(u2) == {(USER, "u2")}
    assert u1.user_id == u1.identified_user_id == "u1"
    assert u2.user_id == u2.identified_user_id == "u2"
    # a1 stays with u1 and keeps being seen there.
    assert (u1.first_seen, u1.last_seen) == (utc(1), utc(3))
    assert (u2.first_seen, u2.last_seen) == (utc(2), utc(2))
    assert r.resolve(anonymous_id="a1") == "u1"
    assert list(r.refusals()) == [limit("e2", (ANON, "a1"), (USER, "u2"))]


def test_r3_without_reset_first_user_is_by_time_not_by_arrival() -> None:
    forward = _several_users_one_device_no_reset()
    backward = replay(list(reversed(forward)))
    assert backward.resolve(anonymous_id="a1") == "u1"
    assert snapshot(backward) == snapshot(replay(forward))


def test_r3_several_users_one_device_with_reset() -> None:
    r = ReferenceResolver()
    r.identify("u1", "a1", timestamp=t(1), event_id="e1")
    r.reset("a1", timestamp=t(2), event_id="e2")
    r.identify("u2", "a2", timestamp=t(3), event_id="e3")
    r.track("page", anonymous_id="a2", timestamp=t(4), event_id="e4")

    u1, u2 = r.profiles()
    assert members(u1) == {(USER, "u1"), (ANON, "a1")}
    assert members(u2) == {(USER, "u2"), (ANON, "a2")}
    # The reset carries a1, so it counts as a sighting of a1.
    assert (u1.first_seen, u1.last_seen) == (utc(1), utc(2))
    assert (u2.first_seen, u2.last_seen) == (utc(3), utc(4))
    assert list(r.refusals()) == []


# -- R1: links are transitive ------------------------------------------------------------------


def test_transitive_chain_across_kinds() -> None:
    r = ReferenceResolver()
    r.track("page", anonymous_id="a", identifiers={"email": "b@x.com"}, timestamp=t(1))
    r.track("call", identifiers={"email": "b@x.com", "phone": "555"}, timestamp=t(2))

    (p,) = r.profiles()
    assert members(p) == {(ANON, "a"), ("email", "b@x.com"), ("phone", "555")}
    # email outranks phone and anonymous_id in the default priority.
    assert (p.user_id, p.user_id_kind, p.identified_user_id) == ("b@x.com", "email", None)
    assert r.resolve(identifier=("phone", "555")) == "b@x.com"
    assert r.resolve(identifier=Identifier(ANON, "a")) == "b@x.com"


def test_transitive_alias_chain_with_lifted_user_limit() -> None:
    r = ReferenceResolver(Rules(limits={USER: None}))
    r.alias("b", "a", timestamp=t(1), event_id="e1")
    r.alias("c", "b", timestamp=t(2), event_id="e2")

    (p,) = r.profiles()
    assert members(p) == {(USER, "a"), (USER, "b"), (USER, "c")}
    # a and b were first seen by the same event: the tie goes to the smaller value.
    assert p.user_id == p.identified_user_id == "a"
    assert r.resolve(user_id="c") == "a"


def test_alias_chain_under_default_limit_merges_nothing() -> None:
    r = ReferenceResolver()
    r.alias("b", "a", timestamp=t(1), event_id="e1")
    r.alias("c", "b", timestamp=t(2), event_id="e2")
    assert [members(p) for p in r.profiles()] == [{(USER, "a")}, {(USER, "b")}, {(USER, "c")}]
    assert list(r.refusals()) == [
        limit("e1", (USER, "a"), (USER, "b")),
        limit("e2", (USER, "b"), (USER, "c")),
    ]


# -- R2: limits --------------------------------------------------------------------------------


def test_limit_demotes_identifier_of_another_user() -> None:
    r = ReferenceResolver()
    r.identify("u1", identifiers={"email": "e@x.com"}, timestamp=t(1), event_id="e1")
    r.identify("u2", identifiers={"email": "e@x.com"}, timestamp=t(2), event_id="e2")

    u1, u2 = r.profiles()
    assert members(u1) == {(USER, "u1"), ("email", "e@x.com")}
    assert members(u2) == {(USER, "u2")}
    assert u2.identifiers == {USER: frozenset({"u2"})}
    # e@x.com was carried at t2 too, and it lives in u1's profile.
    assert (u1.first_seen, u1.last_seen) == (utc(1), utc(2))
    assert r.resolve(identifier=("email", "e@x.com")) == "u1"
    assert list(r.refusals()) == [limit("e2", ("email", "e@x.com"), (USER, "u2"))]


def test_total_cap() -> None:
    r = ReferenceResolver(Rules(max_profile_size=2))
    r.track("page", anonymous_id="a1", identifiers={"email": "e1@x"}, timestamp=t(1), event_id="e1")
    r.identify("u1", identifiers={"email": "e1@x"}, timestamp=t(2), event_id="e2")
    r.identify("u2", "a2", identifiers={"email": "e2@x"}, timestamp=t(3), event_id="e3")

    assert [members(p) for p in r.profiles()] == [
        {(USER, "u1")},
        {(USER, "u2"), ("email", "e2@x")},
        {("email", "e1@x"), (ANON, "a1")},
        {(ANON, "a2")},
    ]
    assert list(r.refusals()) == [
        refusal("e2", ("email", "e1@x"), (USER, "u1"), Reason.PROFILE_SIZE_LIMIT),
        # e3 joins in priority order: e2@x first (size 2), then a2 would make 3.
        refusal("e3", (ANON, "a2"), (USER, "u2"), Reason.PROFILE_SIZE_LIMIT),
    ]


def test_kind_limit_is_checked_before_total_cap() -> None:
    r = ReferenceResolver(Rules(max_profile_size=1))
    r.alias("u2", "u1", timestamp=t(1), event_id="e1")
    r.identify("u3", "a3", timestamp=t(2), event_id="e2")
    assert list(r.refusals()) == [
        limit("e1", (USER, "u1"), (USER, "u2")),
        refusal("e2", (ANON, "a3"), (USER, "u3"), Reason.PROFILE_SIZE_LIMIT),
    ]


def test_limit_on_a_declared_kind() -> None:
    r = ReferenceResolver(Rules(limits={"email": 1}))
    r.identify("u1", identifiers={"email": "one@x"}, timestamp=t(1), event_id="e1")
    r.identify("u1", identifiers={"email": "two@x"}, timestamp=t(2), event_id="e2")
    assert [members(p) for p in r.profiles()] == [
        {(USER, "u1"), ("email", "one@x")},
        {("email", "two@x")},
    ]
    assert list(r.refusals()) == [
        refusal("e2", ("email", "two@x"), (USER, "u1"), Reason.LIMIT_EXCEEDED, "email")
    ]


# -- R4: reset ---------------------------------------------------------------------------------


def test_reset_then_reuse_of_retired_anonymous_id() -> None:
    r = ReferenceResolver()
    r.identify("u1", "a1", timestamp=t(1), event_id="e1")
    r.reset("a1", timestamp=t(2), event_id="e2")
    r.identify("u2", "a1", timestamp=t(3), event_id="e3")
    r.track("page", anonymous_id="a1", identifiers={"email": "z@x"}, timestamp=t(4), event_id="e4")

    u1, u2, z = r.profiles()
    assert members(u1) == {(USER, "u1"), (ANON, "a1")}
    assert members(u2) == {(USER, "u2")}
    assert members(z) == {("email", "z@x")}
    assert (z.user_id, z.user_id_kind) == ("z@x", "email")
    assert (u1.first_seen, u1.last_seen) == (utc(1), utc(4))
    assert r.resolve(anonymous_id="a1") == "u1"
    assert list(r.refusals()) == [
        refusal("e3", (ANON, "a1"), (USER, "u2"), Reason.ANONYMOUS_ID_RESET),
        # The email outranks the anonymous id, so it anchors; the retired a1 is refused.
        refusal("e4", (ANON, "a1"), ("email", "z@x"), Reason.ANONYMOUS_ID_RESET),
    ]


def test_reset_retires_only_for_later_event_keys() -> None:
    # Same timestamp as the reset: the event_id breaks the tie ("r0" < "r1" < "r2").
    events = [
        Reset(anonymous_id="a1", timestamp=t(5), event_id="r1"),
        Identify(user_id="u1", anonymous_id="a1", timestamp=t(5), event_id="r0"),
        Identify(user_id="u2", anonymous_id="a1", timestamp=t(5), event_id="r2"),
    ]
    r = replay(events)
    assert r.resolve(anonymous_id="a1") == "u1"
    assert list(r.refusals()) == [
        refusal("r2", (ANON, "a1"), (USER, "u2"), Reason.ANONYMOUS_ID_RESET)
    ]


def test_reset_reason_wins_over_limit() -> None:
    # Without the reset, e3 would be refused for the user_id limit; the reset check comes first.
    r = ReferenceResolver()
    r.identify("u1", "a1", timestamp=t(1), event_id="e1")
    r.reset("a1", timestamp=t(2), event_id="e2")
    r.identify("u2", "a1", timestamp=t(3), event_id="e3")
    (only,) = r.refusals()
    assert only.reason is Reason.ANONYMOUS_ID_RESET
    assert only.kind is None


def test_already_joined_retired_id_is_not_refused() -> None:
    r = ReferenceResolver()
    r.identify("u1", "a1", timestamp=t(1), event_id="e1")
    r.reset("a1", timestamp=t(2), event_id="e2")
    r.identify("u1", "a1", timestamp=t(3), event_id="e3")
    assert list(r.refusals()) == []
    (p,) = r.profiles()
    assert p.last_seen == utc(3)


# -- R5: canonical id --------------------------------------------------------------------------


def test_canonical_id_is_earliest_seen_user_id_when_limits_are_lifted() -> None:
    r = ReferenceResolver(Rules(limits={USER: None}))
    r.track("page", user_id="zed", timestamp=t(1), event_id="e1")
    r.track("page", user_id="amy", timestamp=t(2), event_id="e2")
    r.identify("bob", timestamp=t(3), event_id="e3")
    r.alias("amy", "zed", timestamp=t(4), event_id="e4")
    r.alias("bob", "amy", timestamp=t(5), event_id="e5")

    (p,) = r.profiles()
    assert members(p) == {(USER, "zed"), (USER, "amy"), (USER, "bob")}
    assert p.user_id == p.identified_user_id == "zed"
    assert (p.first_seen, p.last_seen) == (utc(1), utc(5))

    # A late event shows bob earlier than anyone: bob becomes canonical.
    r.track("page", user_id="bob", timestamp=t(0), event_id="e0")
    (p,) = r.profiles()
    assert p.user_id == p.identified_user_id == "bob"
    assert r.resolve(user_id="zed") == "bob"
    assert p.first_seen == utc(0)


def test_canonical_id_prefers_kind_priority_over_age() -> None:
    r = ReferenceResolver()
    r.track("page", anonymous_id="a1", timestamp=t(1), event_id="e1")
    r.track("page", anonymous_id="a1", identifiers={"phone": "555"}, timestamp=t(2))
    r.track("page", identifiers={"phone": "555", "email": "e@x"}, timestamp=t(3))
    (p,) = r.profiles()
    assert (p.user_id, p.user_id_kind, p.identified_user_id) == ("e@x", "email", None)


# -- R6: traits --------------------------------------------------------------------------------


def test_traits_last_write_wins_across_a_merge_and_set_once_keeps_earliest() -> None:
    r = ReferenceResolver(Rules(limits={USER: None}))
    r.identify(
        "u2",
        traits={"plan": "free"},
        set_once={"first_plan": "free", "name": "Bob"},
        timestamp=t(1),
        event_id="e1",
    )
    r.identify(
        "u1",
        traits={"plan": "pro", "name": "Ann"},
        set_once={"first_plan": "pro"},
        timestamp=t(3),
        event_id="e2",
    )
    u1 = r.profile(user_id="u1")
    assert u1 is not None
    assert u1.traits == {"plan": "pro", "name": "Ann", "first_plan": "pro"}

    r.alias("u1", "u2", timestamp=t(5), event_id="e3")
    (p,) = r.profiles()
    assert p.user_id == "u2"  # first seen at t1
    # plan: u2@t1 free, u1@t3 pro -> pro. name: a regular write beats any set_once.
    # first_plan: set_once only, the earliest is u2@t1.
    assert p.traits == {"plan": "pro", "name": "Ann", "first_plan": "free"}

    # Late writes: a regular one dated after u1's write wins; a set_once dated later loses.
    r.identify(
        "u2",
        traits={"plan": "enterprise"},
        set_once={"first_plan": "trial"},
        timestamp=t(4),
        event_id="e4",
    )
    assert r.resolve(user_id="u1") == "u2"
    (p,) = r.profiles()
    assert p.traits == {"plan": "enterprise", "name": "Ann", "first_plan": "free"}

    # A set_once dated before all others wins.
    r.identify("u2", set_once={"first_plan": "early"}, timestamp=t(0), event_id="e5")
    (p,) = r.profiles()
    assert p.traits == {"plan": "enterprise", "name": "Ann", "first_plan": "early"}


def test_traits_of_a_refused_link_stay_with_the_anchor() -> None:
    r = ReferenceResolver()
    r.identify("u1", "a1", traits={"plan": "free"}, timestamp=t(1), event_id="e1")
    r.identify("u2", "a1", traits={"plan": "pro"}, timestamp=t(2), event_id="e2")
    u1, u2 = r.profiles()
    assert u1.traits == {"plan": "free"}
    assert u2.traits == {"plan": "pro"}


# -- R7: companies -----------------------------------------------------------------------------


def test_company_kept_through_a_merge() -> None:
    r = ReferenceResolver()
    r.identify_company(
        "acme",
        anonymous_id="a1",
        traits={"name": "Acme", "size": 10},
        timestamp=t(1),
        event_id="e1",
    )
    a1 = r.profile(anonymous_id="a1")
    assert a1 is not None
    assert (a1.company_id, a1.company_ids) == ("acme", frozenset({"acme"}))
    acme = r.company("acme")
    assert acme is not None
    assert acme.profiles == frozenset({"a1"})

    r.identify("u1", "a1", timestamp=t(2), event_id="e2")
    (p,) = r.profiles()
    assert (p.company_id, p.company_ids) == ("acme", frozenset({"acme"}))
    acme = r.company("acme")
    assert acme is not None
    assert acme.profiles == frozenset({"u1"})

    r.identify_company("globex", user_id="u1", traits={"name": "Globex"}, timestamp=t(3))
    # A late write to acme's traits: an older "name" loses, a new key is added.
    r.identify_company(
        "acme", user_id="u1", traits={"name": "Acme Old", "plan": "x"}, timestamp=t(0)
    )
    # A blocked company id links nothing.
    r.identify_company("null", user_id="u1", timestamp=t(4))

    (p,) = r.profiles()
    assert p.company_id == "globex"  # the latest identify_company with a company
    assert p.company_ids == frozenset({"acme", "globex"})
    assert r.company("null") is None
    assert r.company("nope") is None
    companies = list(r.companies())
    assert [c.company_id for c in companies] == ["acme", "globex"]
    acme, globex = companies
    assert acme.traits == {"name": "Acme", "plan": "x", "size": 10}
    assert acme.profiles == frozenset({"u1"})
    assert globex.traits == {"name": "Globex"}
    assert globex.profiles == frozenset({"u1"})


def test_company_link_goes_to_the_anchor_even_when_the_link_is_refused() -> None:
    r = ReferenceResolver()
    r.identify("u1", "a1", timestamp=t(1), event_id="e1")
    r.identify_company("initech", user_id="u2", anonymous_id="a1", timestamp=t(2), event_id="e2")
    u1, u2 = r.profiles()
    assert u1.company_ids == frozenset()
    assert u1.company_id is None
    assert (u2.company_id, u2.company_ids) == ("initech", frozenset({"initech"}))
    initech = r.company("initech")
    assert initech is not None
    assert initech.profiles == frozenset({"u2"})
    assert initech.traits == {}
    assert list(r.refusals()) == [limit("e2", (ANON, "a1"), (USER, "u2"))]


# -- blocked values ------------------------------------------------------------------------------


def test_blocked_values_belong_to_no_profile() -> None:
    r = ReferenceResolver()
    r.identify("null", "a1", timestamp=t(1), event_id="e1")
    r.track("page", anonymous_id="undefined", timestamp=t(2), event_id="e2")
    assert [members(p) for p in r.profiles()] == [{(ANON, "a1")}]
    assert r.profile(user_id="null") is None
    assert r.resolve(anonymous_id="undefined") is None
    assert len(r.records) == 2  # still accepted, for dedup
    r.track("page", anonymous_id="undefined", timestamp=t(2), event_id="e2")
    assert len(r.records) == 2


# -- R8: duplicates, conflicts, arrival order -----------------------------------------------------


def test_duplicate_event_is_ignored() -> None:
    r = ReferenceResolver()
    r.identify("u1", "a1", traits={"plan": "free"}, timestamp=t(1), event_id="e1")
    r.identify("u2", timestamp=t(2))  # event_id derived from the content
    before = snapshot(r)

    r.identify("u1", "a1", traits={"plan": "free"}, timestamp=t(1), event_id="e1")
    r.identify("u2", timestamp=t(2))
    r.ingest([Identify(user_id="u1", anonymous_id="a1", traits={"plan": "free"},
                       timestamp=t(1), event_id="e1")])  # fmt: skip
    assert len(r.records) == 2
    assert snapshot(r) == before


def test_event_id_conflict_raises_and_changes_nothing() -> None:
    r = ReferenceResolver()
    r.identify("u1", "a1", timestamp=t(1), event_id="e1")
    before = snapshot(r)

    with pytest.raises(EventIdConflictError) as info:
        r.identify("u2", "a1", timestamp=t(1), event_id="e1")
    assert (info.value.field, info.value.value) == ("event_id", "e1")
    with pytest.raises(EventIdConflictError):
        r.identify("u1", "a1", timestamp=t(9), event_id="e1")  # only the time differs
    assert snapshot(r) == before
    assert len(r.records) == 1

    # In a batch: the conflict is reported at its index and nothing of the batch applies.
    with pytest.raises(EventIdConflictError) as info:
        r.ingest(
            [
                Track(event="page", anonymous_id="fresh", timestamp=t(2), event_id="e2"),
                Reset(anonymous_id="a1", timestamp=t(3), event_id="e1"),
            ]
        )
    assert info.value.index == 1
    assert r.resolve(anonymous_id="fresh") is None
    assert snapshot(r) == before

    # A conflict inside one batch.
    with pytest.raises(EventIdConflictError) as info:
        r.ingest(
            [
                Track(event="page", anonymous_id="fresh", timestamp=t(2), event_id="e2"),
                Track(event="other", anonymous_id="fresh", timestamp=t(2), event_id="e2"),
            ]
        )
    assert info.value.index == 1
    assert snapshot(r) == before


def _mixed_story() -> list[Any]:
    return [
        Track(event="page", anonymous_id="a1", timestamp=t(1), event_id="e1"),
        Identify(user_id="u1", anonymous_id="a1", traits={"plan": "free"}, timestamp=t(2)),
        Reset(anonymous_id="a1", timestamp=t(3), event_id="e3"),
        Identify(user_id="u2", anonymous_id="a1", timestamp=t(4), event_id="e4"),
        IdentifyCompany(company_id="acme", user_id="u2", timestamp=t(5), event_id="e5"),
        Alias(user_id="u1", previous_id=("email", "u1@x"), timestamp=t(6), event_id="e6"),
    ]


def test_any_arrival_order_gives_the_same_state() -> None:
    events = _mixed_story()
    expected = snapshot(replay(events))
    for order in itertools.permutations(events):
        r = ReferenceResolver()
        for event in order:
            r.ingest([event])
        got = snapshot(r)
        assert got == expected, snapshot_diff(expected, got)

    # And the hand-worked state itself.
    r = replay(events)
    u1, u2 = r.profiles()
    assert members(u1) == {(USER, "u1"), (ANON, "a1"), ("email", "u1@x")}
    assert u1.traits == {"plan": "free"}
    assert members(u2) == {(USER, "u2")}
    assert u2.company_ids == frozenset({"acme"})
    assert list(r.refusals()) == [
        refusal("e4", (ANON, "a1"), (USER, "u2"), Reason.ANONYMOUS_ID_RESET)
    ]


# -- ingest and the read API -------------------------------------------------------------------


def test_ingest_segment_messages() -> None:
    r = ReferenceResolver()
    r.ingest(
        [
            {
                "type": "page",
                "anonymousId": "a1",
                "timestamp": "2024-01-01T00:00:00Z",
                "messageId": "m1",
            },
            {
                "type": "identify",
                "userId": "u1",
                "anonymousId": "a1",
                "traits": {"plan": "free"},
                "timestamp": "2024-01-01T00:01:00Z",
                "messageId": "m2",
            },
            {
                "type": "group",
                "groupId": "acme",
                "userId": "u1",
                "timestamp": "2024-01-01T00:02:00Z",
                "messageId": "m3",
            },
        ]
    )
    (p,) = r.profiles()
    assert members(p) == {(USER, "u1"), (ANON, "a1")}
    assert p.traits == {"plan": "free"}
    assert p.company_id == "acme"
    assert p.first_seen == datetime(2024, 1, 1, tzinfo=timezone.utc)
    assert p.last_seen == datetime(2024, 1, 1, 0, 2, tzinfo=timezone.utc)


def test_bad_event_in_batch_applies_nothing() -> None:
    r = ReferenceResolver()
    with pytest.raises(InvalidEventError) as info:
        r.ingest(
            [
                {"type": "track", "event": "x", "anonymousId": "a1", "timestamp": t(1)},
                {"type": "identify", "traits": {"plan": "free"}, "timestamp": t(2)},
            ]
        )
    assert (info.value.index, info.value.field) == (1, "userId")
    assert list(r.profiles()) == []
    assert r.records == ()


def test_clock_gives_missing_timestamps() -> None:
    r = ReferenceResolver(clock=lambda: utc(7))
    r.track("page", anonymous_id="a1")
    p = r.profile(anonymous_id="a1")
    assert p is not None
    assert p.first_seen == p.last_seen == utc(7)


def test_lookup_needs_exactly_one_identifier() -> None:
    r = ReferenceResolver()
    r.identify("u1", "a1", timestamp=t(1))
    with pytest.raises(InvalidEventError):
        r.profile()
    with pytest.raises(InvalidEventError):
        r.resolve(user_id="u1", anonymous_id="a1")
    assert r.resolve(user_id=" u1 ") == "u1"  # lookups are normalized like writes
    assert r.resolve(user_id="nobody") is None
    assert r.resolve(user_id=1) is None


def test_snapshot_handles_unhashable_traits_and_diffs() -> None:
    a = ReferenceResolver()
    a.identify("u1", traits={"tags": ["x", "y"], "meta": {"k": 1}}, timestamp=t(1))
    b = ReferenceResolver()
    b.identify("u1", traits={"tags": ["x", "y"], "meta": {"k": 1}}, timestamp=t(1))
    assert snapshot(a) == snapshot(b)
    assert snapshot_diff(snapshot(a), snapshot(b)) == ""
    b.identify("u2", "a1", timestamp=t(2))
    assert snapshot(a) != snapshot(b)
    assert "unexpected profile" in snapshot_diff(snapshot(a), snapshot(b))
