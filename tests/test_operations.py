"""Operator tools as events (docs/operator-tools.md: merge, split, forget): example tests for
each operation's edge cases, and property tests that they keep the convergence promise (R8)
and agree with the reference resolver."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

import identityres as ir
from identityres import Identifier, Reason
from identityres import strategies as irst
from identityres.testing import ReferenceResolver, snapshot, snapshot_diff


def members(g: ir.IdentityGraph, **lookup: Any) -> set[tuple[str, str]]:
    p = g.profile(**lookup)
    assert p is not None
    return {(i.kind, i.value) for i in p.all_identifiers()}


# --- merge -------------------------------------------------------------------------------------


def test_merge_joins_two_identified_users_and_the_earliest_user_id_survives() -> None:
    g = ir.IdentityGraph()
    g.identify("new-42", "a2", timestamp=5)
    g.identify("old-7", "a1", timestamp=1)
    out = g.merge("new-42", "old-7", timestamp=10)
    assert out.joined == (Identifier("user_id", "old-7"),)
    p = g.profile(user_id="new-42")
    assert p is not None and p.user_id == "old-7"  # R5: seen first
    assert p.anonymous_ids == {"a1", "a2"}


def test_merge_bypasses_limits_and_resets_but_not_blocked_values() -> None:
    g = ir.IdentityGraph(ir.Rules(max_profile_size=2))
    g.identify("u1", "a1", timestamp=1)
    g.reset("a2", timestamp=2)
    g.merge(("anonymous_id", "a2"), "u1", timestamp=3)
    assert members(g, user_id="u1") == {
        ("user_id", "u1"),
        ("anonymous_id", "a1"),
        ("anonymous_id", "a2"),
    }
    out = g.merge("u1", "null", timestamp=4)
    assert out.joined == () and out.blocked[0].reason is Reason.BLOCKED_VALUE


def test_merge_of_already_merged_profiles_changes_nothing() -> None:
    g = ir.IdentityGraph()
    g.identify("u1", "a1", timestamp=1)
    before = snapshot(g)
    out = g.merge("u1", ("anonymous_id", "a1"), timestamp=1)
    assert out.already_joined == (Identifier("anonymous_id", "a1"),) and out.joined == ()
    # (operator events count as events carrying the identifiers: dated within the
    # profile's life, nothing at all changes)
    assert snapshot(g) == before


# --- split -------------------------------------------------------------------------------------


def test_split_detaches_and_what_it_held_together_falls_apart() -> None:
    g = ir.IdentityGraph()
    g.identify("u1", "laptop", timestamp=1)
    g.identify("u1", "phone", timestamp=2)
    g.split("u1", timestamp=3)
    assert members(g, user_id="u1") == {("user_id", "u1")}
    assert g.resolve(anonymous_id="laptop") == "laptop"
    assert g.resolve(anonymous_id="phone") == "phone"
    # links dated after the split apply normally: a later identify rejoins
    g.identify("u1", "phone", timestamp=4)
    assert g.resolve(anonymous_id="phone") == "u1"
    assert g.resolve(anonymous_id="laptop") == "laptop"


def test_split_of_the_identifier_the_profile_was_created_from() -> None:
    g = ir.IdentityGraph()
    g.track("Docs", anonymous_id="a1", timestamp=1)  # the profile starts from a1
    g.identify("u1", "a1", identifiers={"email": "e@x.io"}, timestamp=2)
    g.split(("anonymous_id", "a1"), timestamp=3)
    assert members(g, user_id="u1") == {("user_id", "u1"), ("email", "e@x.io")}
    assert members(g, anonymous_id="a1") == {("anonymous_id", "a1")}


def test_split_of_a_singleton_and_of_an_unknown_identifier() -> None:
    g = ir.IdentityGraph()
    g.track("Docs", anonymous_id="a1", timestamp=2)
    before = snapshot(g)
    g.split(("anonymous_id", "a1"), timestamp=2)
    assert snapshot(g) == before
    g.split("nobody", timestamp=3)
    assert g.resolve(user_id="nobody") == "nobody"


def test_a_late_split_severs_only_links_dated_before_it() -> None:
    g = ir.IdentityGraph()
    g.identify("u1", "a1", timestamp=1)
    g.identify("u1", "a2", timestamp=5)
    g.split(("anonymous_id", "a1"), timestamp=3)  # between the two
    g.split(("anonymous_id", "a2"), timestamp=3)  # a2's link is after: it stays
    assert members(g, user_id="u1") == {("user_id", "u1"), ("anonymous_id", "a2")}


# --- forget ------------------------------------------------------------------------------------


def test_forget_erases_the_identifier_its_traits_and_company_links() -> None:
    g = ir.IdentityGraph()
    g.identify("u1", "a1", traits={"name": "Ada"}, timestamp=1)
    g.identify_company("acme", user_id="u1", traits={"plan": "pro"}, timestamp=2)
    g.identify("u1", identifiers={"email": "ada@x.io"}, timestamp=3)
    g.forget("u1", timestamp=4)
    assert g.resolve(user_id="u1") is None
    # a1 and the email were held together only by u1: they fall apart
    assert g.resolve(anonymous_id="a1") == "a1"
    assert g.resolve(identifier=("email", "ada@x.io")) == "ada@x.io"
    for p in g.profiles():
        assert p.traits == {} and p.company_ids == frozenset()
    acme = g.company("acme")
    assert acme is not None and acme.profiles == frozenset() and acme.traits == {"plan": "pro"}
    engine_values = g.store.engine.value  # no trace of the value in the engine
    assert "u1" not in engine_values


def test_forget_then_replay_does_not_bring_it_back() -> None:
    events = [
        ir.Identify(
            user_id="u1", anonymous_id="a1", traits={"name": "Ada"}, timestamp=1, event_id="e1"
        ),
        ir.Identify(user_id="u1", anonymous_id="a2", timestamp=2, event_id="e2"),
    ]
    g = ir.IdentityGraph()
    g.ingest(events)
    g.forget("u1", timestamp=3, event_id="f1")
    after = snapshot(g)
    g.ingest(events)  # replayed deliveries are duplicates
    g.ingest([ir.Identify(user_id="u1", anonymous_id="a3", timestamp=9, event_id="e3")])
    assert g.resolve(user_id="u1") is None and g.resolve(anonymous_id="a3") == "a3"
    # forget first, events later: the same state
    h = ir.IdentityGraph()
    h.forget("u1", timestamp=3, event_id="f1")
    h.ingest([*events, ir.Identify(user_id="u1", anonymous_id="a3", timestamp=9, event_id="e3")])
    assert snapshot(h) == snapshot(g)
    assert after["refusals"] == ()


def test_forget_of_an_unknown_identifier_only_suppresses_it() -> None:
    g = ir.IdentityGraph()
    g.identify("u1", "a1", timestamp=1)
    before = snapshot(g)
    g.forget(("email", "never@seen.io"), timestamp=2)
    assert snapshot(g) == before
    g.track("Seen", anonymous_id="a9", identifiers={"email": "never@seen.io"}, timestamp=3)
    assert g.resolve(identifier=("email", "never@seen.io")) is None
    assert g.resolve(anonymous_id="a9") == "a9"


# --- properties --------------------------------------------------------------------------------


@st.composite
def streams_with_operations(draw: st.DrawFn) -> list[Any]:
    stream = draw(irst.streams(users=3, blocked=False))
    distinct = list({e.event_id: e for e in stream}.values())
    ids: list[tuple[str, str]] = []
    for e in distinct:
        for field in ("user_id", "anonymous_id"):
            value = getattr(e, field, None)
            if isinstance(value, str):
                ids.append((field, value))
    if not ids:
        return stream
    times = [float(e.timestamp) for e in distinct if not hasattr(e.timestamp, "tzinfo")]
    top = max(times, default=10.0) + 2
    ops: list[Any] = []
    for n in range(draw(st.integers(0, 4))):
        ts = draw(st.floats(0, top).map(lambda t: round(t * 2) / 2))
        which = draw(st.sampled_from(["merge", "split", "forget"]))
        x = draw(st.sampled_from(ids))
        if which == "merge":
            ops.append(ir.Merge(a=x, b=draw(st.sampled_from(ids)), timestamp=ts, event_id=f"op{n}"))
        elif which == "split":
            ops.append(ir.Split(identifier=x, timestamp=ts, event_id=f"op{n}"))
        else:
            ops.append(ir.Forget(identifier=x, timestamp=ts, event_id=f"op{n}"))
    return draw(st.permutations(stream + ops))


@given(stream=streams_with_operations())
def test_operations_agree_with_the_reference(stream: list[Any]) -> None:
    ref = ReferenceResolver()
    ref.ingest(stream)
    g = ir.IdentityGraph()
    for e in stream:
        g.ingest([e])
    a, b = snapshot(ref), snapshot(g)
    assert a == b, snapshot_diff(a, b)


@given(stream=streams_with_operations(), data=st.data())
def test_operations_keep_arrival_order_irrelevant(stream: list[Any], data: st.DataObject) -> None:
    g = ir.IdentityGraph()
    for e in stream:
        g.ingest([e])
    other = data.draw(irst.arrival_orders(stream, duplicates=True))
    h = ir.IdentityGraph(store=ir.storage.MemoryStore(in_place=False))
    for e in other:
        h.ingest([e])
    a, b = snapshot(g), snapshot(h)
    assert a == b, snapshot_diff(a, b)


def test_forget_in_the_same_batch_as_the_writes_leaves_nothing_behind() -> None:
    for store in (ir.storage.MemoryStore(), ir.storage.MemoryStore(in_place=False)):
        g = ir.IdentityGraph(store=store)
        g.ingest(
            [
                ir.Identify(
                    user_id="u1",
                    anonymous_id="a1",
                    traits={"email": "secret@x"},
                    timestamp=1,
                    event_id="e1",
                ),
                ir.IdentifyCompany(company_id="acme", user_id="u1", timestamp=2, event_id="e2"),
                ir.Forget(identifier="u1", timestamp=3, event_id="f1"),
            ]
        )
        engine = store.engine
        assert "secret@x" not in repr(engine.traits)
        assert all(not members for members in engine.company_members.values())
        assert g.resolve(anonymous_id="a1") == "a1"


def test_forget_of_a_blocked_value_drops_its_count() -> None:
    long_email = "x" * 401 + "@mail.com"
    for store in (ir.storage.MemoryStore(), ir.storage.MemoryStore(in_place=False)):
        g = ir.IdentityGraph(store=store)
        g.track("Seen", anonymous_id="a1", identifiers={"email": long_email}, timestamp=1)
        assert g.stats().blocked_values
        g.forget(("email", long_email), timestamp=2)
        assert not g.stats().blocked_values


def test_a_force_merged_profile_over_the_limit_can_still_gain_other_identifiers() -> None:
    g = ir.IdentityGraph()
    g.identify("u1", "a1", timestamp=1)
    g.identify("u2", "a2", timestamp=2)
    g.merge("u1", "u2", timestamp=3)
    out = g.identify("u1", "a3", timestamp=4)
    assert out.joined == (Identifier("anonymous_id", "a3"),)
    # but a third user id is still refused
    g.identify("u3", timestamp=5)
    assert g.alias("u1", "u3", timestamp=6).refused[0].reason is Reason.LIMIT_EXCEEDED


def test_forget_keeps_no_copy_of_the_value_in_the_in_place_engine() -> None:
    """The in-place engine hands no rows to a store: after forget, the erased value must
    not be anywhere in its state, pending lists included."""
    graph = ir.IdentityGraph()
    graph.identify("u1", "a1", identifiers={"email": "alice@example.com"}, timestamp=1)
    graph.track("Viewed", anonymous_id="undefined", timestamp=2)  # a blocked value
    graph.forget(("email", "alice@example.com"), timestamp=3)
    graph.forget(("anonymous_id", "undefined"), timestamp=4)
    engine = graph.store.engine
    assert engine is not None
    state = repr({k: v for k, v in vars(engine).items() if k != "rules"})
    assert "alice@example.com" not in state
    assert "'undefined'" not in state


@pytest.mark.parametrize("store", ["in place", "through batches", "sqlite"])
def test_a_blocked_value_erased_and_blocked_again_in_one_batch_counts_nothing(
    store: str, tmp_path: Any
) -> None:
    """Every store ends with the in-place count. A forgotten blocked value is never counted
    again, dated before or after the erasure (docs/operator-tools.md): that is what makes
    the counts independent of arrival order. (Found in review first: batch stores added the
    old count back.)"""
    from identityres.storage.memory import MemoryStore

    target: Any = {
        "in place": None,
        "through batches": MemoryStore(in_place=False),
        "sqlite": f"sqlite:///{tmp_path / 'ids.db'}",
    }[store]
    graph = ir.IdentityGraph(store=target)
    graph.track("Viewed", anonymous_id="undefined", timestamp=1, event_id="e1")
    graph.ingest(
        [
            ir.Forget(identifier=("anonymous_id", "undefined"), timestamp=10, event_id="e2"),
            ir.Track(event="Viewed", anonymous_id="undefined", timestamp=20, event_id="e3"),
        ]
    )
    assert graph.stats().blocked_values == {}
