"""Property tests (hypothesis) for the merge rules of docs/merge-rules.md: the engine equals
the reference resolver on random streams, and R8's convergence promise holds."""

from __future__ import annotations

import random
from collections import Counter
from typing import Any

from hypothesis import given, note
from hypothesis import strategies as st

import identityres as ir
from identityres import strategies as irst
from identityres.testing import ReferenceResolver, snapshot, snapshot_diff
from identityres.testing.conformance._machine import _rules_variants

# The kit's own variants: default rules and tighter ones, so every refusal reason shows up.
rules_variants = _rules_variants


def graph_of(events: list[Any], rules: ir.Rules, *, bulk: bool = False) -> ir.IdentityGraph:
    g = ir.IdentityGraph(rules)
    if bulk:
        g.ingest(events)
    else:
        for e in events:
            g.ingest([e])
    return g


def reference_of(events: list[Any], rules: ir.Rules) -> ReferenceResolver:
    ref = ReferenceResolver(rules)
    ref.ingest(events)
    return ref


def unique(stream: list[Any]) -> list[Any]:
    return list({e.event_id: e for e in stream}.values())


def assert_same(expected: Any, actual: Any) -> None:
    a, b = snapshot(expected), snapshot(actual)
    assert a == b, snapshot_diff(a, b)


@given(stream=irst.streams(), rules=rules_variants())
def test_engine_equals_reference_on_realistic_streams(stream: list[Any], rules: ir.Rules) -> None:
    assert_same(reference_of(stream, rules), graph_of(stream, rules))


@given(stream=irst.streams(hostile=True, users=4), rules=rules_variants())
def test_engine_equals_reference_with_hostile_values(stream: list[Any], rules: ir.Rules) -> None:
    assert_same(reference_of(stream, rules), graph_of(stream, rules))


@given(
    events=st.lists(irst.events(hostile=False, blocked=True), max_size=30),
    rules=rules_variants(),
)
def test_engine_equals_reference_on_arbitrary_events(events: list[Any], rules: ir.Rules) -> None:
    # Drawn independently, two events may share an event_id: keep the first of each.
    unique = list({e.event_id: e for e in reversed(events)}.values())
    assert_same(reference_of(unique, rules), graph_of(unique, rules))


@given(stream=irst.streams(), data=st.data(), rules=rules_variants())
def test_any_arrival_order_with_duplicates_gives_the_same_state(
    stream: list[Any], data: st.DataObject, rules: ir.Rules
) -> None:
    first = graph_of(stream, rules)
    other_order = data.draw(irst.arrival_orders(stream, duplicates=True))
    assert_same(first, graph_of(other_order, rules))


@given(stream=irst.streams(), rules=rules_variants())
def test_bulk_ingest_equals_one_by_one(stream: list[Any], rules: ir.Rules) -> None:
    assert_same(graph_of(stream, rules), graph_of(stream, rules, bulk=True))


@given(stream=irst.streams(), seed=st.integers(0, 2**32 - 1))
def test_bulk_ingest_in_chunks_equals_one_call(stream: list[Any], seed: int) -> None:
    rnd = random.Random(seed)
    g = ir.IdentityGraph()
    i = 0
    while i < len(stream):
        step = rnd.randint(1, 10)
        g.ingest(stream[i : i + step])
        i += step
    assert_same(graph_of(stream, ir.Rules(), bulk=True), g)


# --- rule-by-rule invariants ---------------------------------------------------------------


@given(stream=irst.streams(users=4), rules=rules_variants())
def test_r1_anchor_is_the_highest_priority_valid_identifier(
    stream: list[Any], rules: ir.Rules
) -> None:
    g = ir.IdentityGraph(rules)
    priority = {k: i for i, k in enumerate(rules.all_kinds)}
    for e in stream:
        out = g.ingest([e]).outcomes[0]
        if out.anchor is None:
            continue
        others = [*out.joined, *out.already_joined, *(r.identifier for r in out.refused)]
        assert all(priority[out.anchor.kind] <= priority[o.kind] for o in others)
        assert all(r.anchor == out.anchor for r in out.refused)


@given(stream=irst.streams(users=4), rules=rules_variants())
def test_r2_no_profile_breaks_a_limit_or_the_cap(stream: list[Any], rules: ir.Rules) -> None:
    g = graph_of(stream, rules)
    limits = {"user_id": 1, **rules.limits}
    for p in g.profiles():
        for kind, limit in limits.items():
            if limit is not None:
                assert len(p.identifiers.get(kind, ())) <= limit
        if rules.max_profile_size is not None:
            assert sum(len(v) for v in p.identifiers.values()) <= rules.max_profile_size


@given(stream=irst.streams(users=4, resets=True))
def test_r4_a_retired_anonymous_id_joins_nothing_after_its_reset(stream: list[Any]) -> None:
    g = graph_of(stream, ir.Rules())
    reset_at: dict[str, tuple[float, str]] = {}
    for e in stream:
        if isinstance(e, ir.Reset):
            key = (float(e.timestamp), str(e.event_id))
            a = str(e.anonymous_id).strip()
            reset_at[a] = min(reset_at.get(a, key), key)
    # Replay the accepted links in key order: none made after a reset may touch the id.
    g2 = ir.IdentityGraph()
    for e in sorted(unique(stream), key=lambda e: (float(e.timestamp), str(e.event_id))):
        out = g2.ingest([e]).outcomes[0]
        key = (float(e.timestamp), str(e.event_id))
        for joined in out.joined:
            if joined.kind == "anonymous_id" and joined.value in reset_at:
                assert key < reset_at[joined.value]
        anchor = out.anchor
        if out.joined and anchor is not None and anchor.kind == "anonymous_id":
            assert anchor.value not in reset_at or key < reset_at[anchor.value]
    assert_same(g, g2)


@given(stream=irst.streams(users=4), rules=rules_variants())
def test_r5_canonical_id_is_the_earliest_seen_of_the_highest_priority_kind(
    stream: list[Any], rules: ir.Rules
) -> None:
    g = graph_of(stream, rules)
    builder = ir.IdentityGraph(rules)._build
    first: dict[tuple[str, str], tuple[float, str]] = {}
    for e in unique(stream):
        rec = builder.from_object(e)
        for k, v in rec.ids:
            ident = (rules.all_kinds[k], v)
            key = (rec.ts, rec.event_id)
            first[ident] = min(first.get(ident, key), key)
    priority = {k: i for i, k in enumerate(rules.all_kinds)}
    for p in g.profiles():
        members = [(i.kind, i.value) for i in p.all_identifiers()]
        best = min(members, key=lambda m: (priority[m[0]], first[m], m[1]))
        assert (p.user_id_kind, p.user_id) == best
        users = [m for m in members if m[0] == "user_id"]
        expected = min(users, key=lambda m: (first[m], m[1]))[1] if users else None
        assert p.identified_user_id == expected


@given(stream=irst.streams(hostile=True, blocked=True))
def test_every_valid_identifier_is_in_exactly_one_profile_and_blocked_in_none(
    stream: list[Any],
) -> None:
    g = graph_of(stream, ir.Rules())
    rules = ir.Rules()
    builder = ir.IdentityGraph(rules)._build
    valid: set[tuple[str, str]] = set()
    for e in stream:
        rec = builder.from_object(e)
        valid |= {(rules.all_kinds[k], v) for k, v in rec.ids}
        for kind, value, _ in rec.blocked:
            if kind != "company_id":
                assert g.resolve(identifier=(kind, value)) is None
    counted = Counter((i.kind, i.value) for p in g.profiles() for i in p.all_identifiers())
    note(repr(counted))
    assert set(counted) == valid
    assert all(c == 1 for c in counted.values())


@given(stream=irst.streams(traits=True, companies=True), data=st.data())
def test_r6_r7_traits_and_companies_do_not_depend_on_arrival_order(
    stream: list[Any], data: st.DataObject
) -> None:
    a = graph_of(stream, ir.Rules())
    b = graph_of(data.draw(irst.arrival_orders(stream, duplicates=True)), ir.Rules())
    assert {p.user_id: p.traits for p in a.profiles()} == {
        p.user_id: p.traits for p in b.profiles()
    }
    assert [(c.company_id, c.traits, c.profiles) for c in a.companies()] == [
        (c.company_id, c.traits, c.profiles) for c in b.companies()
    ]
