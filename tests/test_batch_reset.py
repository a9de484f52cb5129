"""A component touched only by resets that no later link event feels is resolved by the batch
engine without the online engine (docs/batch.md, Classify): property tests over streams rich
in resets — before and after other events of their anonymous id, late events, redelivered
resets — against ``IdentityGraph.ingest``, on the tables, on the engine's stored rows (the
reset keys and the link log) and after continuing online."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import identityres as ir
from identityres import batch
from identityres.testing import snapshot, snapshot_diff
from identityres.testing.conformance._machine import _rules_variants
from tests.test_batch import (
    _as_text_columns,
    actual_tables,
    assert_equivalent,
    assert_equivalent_table,
    expected_tables,
    online,
    to_message,
)

pytest.importorskip("pyarrow")


def stored_state(g: ir.IdentityGraph) -> dict[str, Any]:
    """The engine's rows of every component, by identifier rather than by ref: per node its
    first/last sighting, its reset and split keys, its component and profile; per log entry
    its key, members, refusals and type. What ``seed`` writes and later events read."""
    pairs = [(i.kind, i.value) for i, _ in g.identity_map()]
    rows = g.components(pairs)
    by_ref = {n.ref: (n.kind, n.value) for n in rows.nodes}
    groups: dict[int, set[tuple[str, str]]] = {}
    profiles: dict[int, set[tuple[str, str]]] = {}
    for n in rows.nodes:
        groups.setdefault(n.component, set()).add(by_ref[n.ref])
        profiles.setdefault(n.profile, set()).add(by_ref[n.ref])
    nodes = {
        by_ref[n.ref]: (
            n.first_ts,
            n.first_event_id,
            n.last_ts,
            n.reset_ts,
            n.reset_event_id,
            n.split_ts,
            n.split_event_id,
            frozenset(groups[n.component]),
            frozenset(profiles[n.profile]),
        )
        for n in rows.nodes
    }
    links = {
        (
            link.event_id,
            link.ts,
            frozenset(groups[link.component]),
            tuple(by_ref[m] for m in link.members),
            link.refused,
            link.etype,
        )
        for link in rows.links
    }
    return {"nodes": nodes, "links": links}


@st.composite
def reset_streams(draw: st.DrawFn) -> list[Any]:
    """Devices (an anonymous id and its user), each with links (identify, track of both),
    its own tracks, and resets dated anywhere among them; now and then a second user or an
    email on a device, an alias between users, a reset redelivered. Listed in an order that
    is not the key order, so that online some events arrive late (after their reset)."""
    devices = draw(st.integers(1, 5))
    events: list[Any] = []

    def eid() -> str:
        return f"e{len(events):03d}"

    ts = st.integers(0, 12).map(float)
    for d in range(devices):
        anon, user = f"a{d}", f"u{d}"
        for _ in range(draw(st.integers(1, 6))):
            what = draw(st.sampled_from(("identify", "track2", "track1", "reset", "email")))
            t = draw(ts)
            if what == "identify":
                events.append(
                    ir.Identify(user_id=user, anonymous_id=anon, timestamp=t, event_id=eid())
                )
            elif what == "track2":
                events.append(
                    ir.Track(
                        event="x", user_id=user, anonymous_id=anon, timestamp=t, event_id=eid()
                    )
                )
            elif what == "track1":
                events.append(ir.Track(event="x", anonymous_id=anon, timestamp=t, event_id=eid()))
            elif what == "email":
                events.append(
                    ir.Track(
                        event="x",
                        anonymous_id=anon,
                        identifiers={"email": f"{user}@x.io"},
                        timestamp=t,
                        event_id=eid(),
                    )
                )
            else:
                events.append(ir.Reset(anonymous_id=anon, timestamp=t, event_id=eid()))
        if draw(st.integers(0, 4)) == 0:  # a second user on the device: R2 may refuse it
            events.append(
                ir.Identify(user_id=f"v{d}", anonymous_id=anon, timestamp=draw(ts), event_id=eid())
            )
        if devices > 1 and draw(st.integers(0, 4)) == 0:
            other = f"u{draw(st.integers(0, devices - 1))}"
            events.append(
                ir.Alias(user_id=other, previous_id=user, timestamp=draw(ts), event_id=eid())
            )
    resets = [e for e in events if isinstance(e, ir.Reset)]
    for e in draw(st.lists(st.sampled_from(resets), max_size=2) if resets else st.just([])):
        events.append(e)  # a redelivery: a duplicate
    return list(draw(st.permutations(events)))


_SETTINGS = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


@_SETTINGS
@given(stream=reset_streams(), rules=_rules_variants())
def test_reset_rich_streams_batch_equals_online(stream: list[Any], rules: ir.Rules) -> None:
    result = assert_equivalent(stream, rules)
    want, got = stored_state(online(stream, rules)), stored_state(result.graph())
    assert got == want


@_SETTINGS
@given(stream=reset_streams(), rules=_rules_variants())
def test_reset_rich_streams_from_an_arrow_table_equal_online(
    stream: list[Any], rules: ir.Rules
) -> None:
    assert_equivalent_table([to_message(e) for e in stream], rules)


def _outcomes(g: ir.IdentityGraph, rest: list[Any]) -> list[tuple[str, bool, int, bool]]:
    """Ingest ``rest`` one event at a time; what each said (late, replayed, duplicate): a
    late event is one older than its component's newest key, and it replays the log."""
    return [
        (o.event_id, o.late, o.replayed, o.duplicate) for e in rest for o in g.ingest([e]).outcomes
    ]


@_SETTINGS
@given(stream=reset_streams(), rules=_rules_variants(), cut=st.floats(0, 1))
def test_reset_rich_streams_continue_online_after_graph(
    stream: list[Any], rules: ir.Rules, cut: float
) -> None:
    half = int(len(stream) * cut)
    first, rest = stream[:half], stream[half:]
    seeded = batch.resolve(first, rules=rules).graph()
    reference = online(first, rules)
    assert _outcomes(seeded, rest) == _outcomes(reference, rest)
    want, got = snapshot(reference), snapshot(seeded)
    assert want == got, snapshot_diff(want, got)
    assert stored_state(seeded) == stored_state(reference)


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(stream=reset_streams(), rules=_rules_variants(), cut=st.floats(0, 1))
def test_reset_rich_streams_continue_online_after_seeding_sqlite(
    tmp_path_factory: pytest.TempPathFactory, stream: list[Any], rules: ir.Rules, cut: float
) -> None:
    half = int(len(stream) * cut)
    first, rest = stream[:half], stream[half:]
    path = tmp_path_factory.mktemp("seed") / "ids.db"
    seeded = batch.resolve(first, rules=rules).seed(f"sqlite:///{path}")
    try:
        reference = online(first, rules)
        assert _outcomes(seeded, rest) == _outcomes(reference, rest)
        want, got = snapshot(reference), snapshot(seeded)
        assert want == got, snapshot_diff(want, got)
        assert stored_state(seeded) == stored_state(reference)
        if first:
            assert seeded.ingest(first[:1]).duplicates == 1
    finally:
        seeded.close()


# -- which components the classification frees -----------------------------------------------


def _device(*after: Any) -> list[Any]:
    return [
        ir.Track(event="x", anonymous_id="a1", timestamp=1, event_id="e1"),
        ir.Identify(user_id="u1", anonymous_id="a1", timestamp=2, event_id="e2"),
        ir.Reset(anonymous_id="a1", timestamp=5, event_id="r1"),
        *after,
    ]


def test_a_reset_after_the_last_link_of_its_id_leaves_the_component_untouched() -> None:
    # single-identifier events after the reset and a link dated before it, listed after it
    stream = _device(
        ir.Track(event="x", anonymous_id="a1", timestamp=7, event_id="e3"),
        ir.Track(event="x", anonymous_id="a1", user_id="u1", timestamp=4, event_id="e4"),
        ir.Reset(anonymous_id="a1", timestamp=6, event_id="r2"),
    )
    result = assert_equivalent(stream, ir.Rules())
    assert result.stat("conflicted_events") == 0
    assert stored_state(result.graph()) == stored_state(online(stream, ir.Rules()))
    # continuing online: a link dated before the reset is late (the reset is the
    # component's newest key) and replays the whole log, resets included, as online
    g, reference = result.graph(), online(stream, ir.Rules())
    before = [ir.Track(event="x", anonymous_id="a1", identifiers={"phone": "+100"}, timestamp=4.5)]
    said = _outcomes(g, before)
    assert said == _outcomes(reference, before)
    assert said[0][1:] == (True, 5, False)  # (e2, e4, r1, r2 and itself)
    # the id is retired from the earliest reset on (R4)
    out = g.identify("u2", anonymous_id="a1", timestamp=5.5, event_id="late")
    assert [r.reason for r in out.refused] == [ir.Reason.ANONYMOUS_ID_RESET]
    assert g.identify("u3", anonymous_id="a1", timestamp=4.5, event_id="early").refused[
        0
    ].reason is (ir.Reason.LIMIT_EXCEEDED)


@pytest.mark.parametrize(
    "after",
    [
        # the id links after its reset: its anchor's profile is already its own ("already"),
        # which the classification does not try to prove
        ir.Identify(user_id="u1", anonymous_id="a1", timestamp=6, event_id="e3"),
        # a new identifier after the reset: refused (R4)
        ir.Track(
            event="x",
            anonymous_id="a1",
            identifiers={"email": "e@x.io"},
            timestamp=6,
            event_id="e3",
        ),
        # a second user after the reset: refused by R4, not by R2
        ir.Identify(user_id="u2", anonymous_id="a1", timestamp=6, event_id="e3"),
    ],
)
def test_a_link_after_the_reset_keeps_the_component_conflicted(after: Any) -> None:
    stream = _device(after)
    result = assert_equivalent(stream, ir.Rules())
    assert result.stat("conflicted_events") == len(stream)


def test_the_earliest_of_several_resets_counts() -> None:
    # a link between two resets of its id: the earliest reset retires it
    stream = _device(
        ir.Track(
            event="x",
            anonymous_id="a1",
            identifiers={"email": "e@x.io"},
            timestamp=6,
            event_id="e3",
        ),
        ir.Reset(anonymous_id="a1", timestamp=8, event_id="r2"),
    )
    result = assert_equivalent(stream, ir.Rules())
    assert result.stat("conflicted_events") == len(stream)
    assert [r["reason"] for r in result.refusals.to_pylist()] == ["anonymous_id_reset"]


@pytest.mark.parametrize("late", [False, True])
def test_a_columnar_link_is_placed_before_or_after_the_reset_by_its_key(late: bool) -> None:
    # the links are columnar rows, the reset a record-lane row; the last link, listed last,
    # is dated before the reset (the component is untouched) or after it (conflicted)
    stream = _device(
        ir.Track(
            event="x", user_id="u1", anonymous_id="a1", timestamp=4 if late else 6, event_id="e3"
        )
    )
    messages = [to_message(e) for e in stream]
    assert_equivalent_table(messages, ir.Rules())
    result = batch.resolve(_as_text_columns(messages))
    assert len(result._events.py) == 1  # (only the reset went through the record lane)
    assert result.stat("conflicted_events") == (0 if late else len(stream))
    assert actual_tables(result) == expected_tables(online(messages, ir.Rules()))
