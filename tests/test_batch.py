"""batch.resolve gives the online engine's answer (docs/batch.md): property tests over random
streams with every operation, and the input formats, seeding and the command line."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st

import identityres as ir
from identityres import batch
from identityres import strategies as irst
from identityres.testing import snapshot, snapshot_diff
from identityres.testing.conformance._machine import _rules_variants

pa = pytest.importorskip("pyarrow")


def online(events: list[Any], rules: ir.Rules) -> ir.IdentityGraph:
    g = ir.IdentityGraph(rules)
    g.ingest(events)
    return g


def expected_tables(g: ir.IdentityGraph) -> dict[str, Any]:
    profiles = list(g.profiles())
    idmap = {
        (i.kind, i.value, p.id, p.user_id, p.identified_user_id)
        for p in profiles
        for i in p.all_identifiers()
    }
    rows = {
        (
            p.id,
            p.user_id,
            p.user_id_kind,
            p.identified_user_id,
            sum(len(v) for v in p.identifiers.values()),
            p.first_seen,
            p.last_seen,
            p.company_id,
            tuple(sorted(p.company_ids)),
            json.dumps(dict(p.traits), sort_keys=True) if p.traits else None,
        )
        for p in profiles
    }
    refusals = [
        (
            r.event_id,
            r.identifier.kind,
            r.identifier.value,
            r.anchor.kind,
            r.anchor.value,
            str(r.reason),
            r.kind,
        )
        for r in g.refusals()
    ]
    companies = {
        c.company_id: (
            json.dumps(dict(c.traits), sort_keys=True) if c.traits else None,
            frozenset(c.profiles),
        )
        for c in g.companies()
    }
    return {"identity_map": idmap, "profiles": rows, "refusals": refusals, "companies": companies}


def actual_tables(r: batch.BatchResult) -> dict[str, Any]:
    idmap = {tuple(row.values()) for row in r.identity_map.to_pylist()}
    rows = {
        tuple(tuple(v) if isinstance(v, list) else v for v in row.values())
        for row in r.profiles.to_pylist()
    }
    refusals = [tuple(row.values()) for row in r.refusals.to_pylist()]
    companies = {
        row["company_id"]: (
            row["traits"],
            frozenset(pid.split(":", 1)[1] for pid in row["profile_ids"]),
        )
        for row in r.companies.to_pylist()
    }
    return {"identity_map": idmap, "profiles": rows, "refusals": refusals, "companies": companies}


def assert_equivalent(events: list[Any], rules: ir.Rules) -> batch.BatchResult:
    g = online(events, rules)
    result = batch.resolve(events, rules=rules)
    want, got = expected_tables(g), actual_tables(result)
    for table in want:
        assert got[table] == want[table], table
    # one row per identifier, one per profile
    assert result.identity_map.num_rows == len(g)
    assert result.profiles.num_rows == g.stats().profiles
    assert result.blocked_values() == g.stats().blocked_values
    # the full state, as the online engine holds it (what seeding writes)
    a, b = snapshot(g), snapshot(result.graph())
    assert a == b, snapshot_diff(a, b)
    return result


@st.composite
def operated_streams(draw: st.DrawFn, **options: Any) -> list[Any]:
    """A stream with forced merges and splits of its own identifiers among its events."""
    stream = draw(irst.streams(**options))
    idents: list[ir.Identifier] = []
    for e in stream:
        for kind, attr in (("user_id", "user_id"), ("anonymous_id", "anonymous_id")):
            value = getattr(e, attr, None)
            if isinstance(value, str) and value.strip():
                idents.append(ir.Identifier(kind, value.strip()))
    times = [e.timestamp for e in stream if isinstance(e.timestamp, (int, float))]
    if not idents or not times:
        return stream
    ops: list[Any] = []
    for i in range(draw(st.integers(0, 3))):
        ts = draw(st.sampled_from(times))
        if draw(st.booleans()):
            a, b = draw(st.sampled_from(idents)), draw(st.sampled_from(idents))
            ops.append(ir.Merge(a=a, b=b, timestamp=ts, event_id=f"op{i}"))
        else:
            ops.append(
                ir.Split(identifier=draw(st.sampled_from(idents)), timestamp=ts, event_id=f"op{i}")
            )
    out = list(stream)
    for op in ops:
        out.insert(draw(st.integers(0, len(out))), op)
    return out


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(stream=irst.streams(users=4), rules=_rules_variants())
def test_batch_equals_online_on_realistic_streams(stream: list[Any], rules: ir.Rules) -> None:
    note(repr(rules))
    assert_equivalent(stream, rules)


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(stream=operated_streams(users=4, forgets=True), rules=_rules_variants())
def test_batch_equals_online_with_merges_splits_and_forgets(
    stream: list[Any], rules: ir.Rules
) -> None:
    note(repr(rules))
    assert_equivalent(stream, rules)


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(stream=irst.streams(users=3, hostile=True), rules=_rules_variants())
def test_batch_equals_online_on_hostile_values(stream: list[Any], rules: ir.Rules) -> None:
    assert_equivalent(stream, rules)


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(messages=st.lists(irst.segment_messages(), max_size=30))
def test_batch_equals_online_on_segment_messages(messages: list[dict[str, Any]]) -> None:
    # (independent draws may reuse a messageId with other content: both then refuse alike)
    rules = ir.Rules()
    try:
        online(messages, rules)
    except ir.ValidationError as exc:
        with pytest.raises(type(exc)):
            batch.resolve(messages, rules=rules)
        return
    assert_equivalent(messages, rules)
