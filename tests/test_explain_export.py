"""``explain``, ``history`` and the exports (docs/operator-tools.md).

Every expectation here was worked out by hand from the merge rules (docs/merge-rules.md,
notes/semantics.md) and the definition of an accepted link: in a link event at key
``(ts, event_id)``, the identifiers not split off after it are the event's *effective*
identifiers, the first of them is the anchor, and each other one not refused is linked to it.
Each graph-level test runs on the in-place memory store, the memory store driven through the
storage protocol, and SQLite.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

import pytest

import identityres as ir
from identityres import Identifier, Reason, Refusal
from identityres import export as ex
from identityres._explain import Decision, Explanation, Step

ROOT = Path(__file__).resolve().parent.parent

STORES = ["memory", "memory-protocol", "sqlite"]


def _sqlite_store(path: Path) -> object:
    from identityres.storage.sqlite import SQLiteStore

    return SQLiteStore(path)


@pytest.fixture(params=STORES)
def graph(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ir.IdentityGraph]:
    kind = request.param
    if kind == "memory":
        g = ir.IdentityGraph()
    elif kind == "memory-protocol":
        g = ir.IdentityGraph(store=ir.storage.MemoryStore(in_place=False))
    else:
        g = ir.IdentityGraph(store=_sqlite_store(tmp_path / "ids.db"))
    yield g
    g.close()


def t(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, tz=timezone.utc)


U = "user_id"
A = "anonymous_id"


def uid(v: str) -> Identifier:
    return Identifier(U, v)


def anon(v: str) -> Identifier:
    return Identifier(A, v)


# --- explain ----------------------------------------------------------------------------------


def test_explain_a_chain_names_each_event(graph: ir.IdentityGraph) -> None:
    # a1 --identify e1-- u1 --track e2-- k1
    graph.identify("u1", "a1", timestamp=1, event_id="e1")
    graph.track("API call", user_id="u1", identifiers={"api_key": "k1"}, timestamp=2, event_id="e2")
    found = graph.explain(anon("a1"), ("api_key", "k1"))
    assert found == Explanation(
        anon("a1"),
        Identifier("api_key", "k1"),
        "u1",
        (
            Step("e1", "identify", t(1), anon("a1"), uid("u1")),
            Step("e2", "track", t(2), uid("u1"), Identifier("api_key", "k1")),
        ),
    )
    assert str(found) == (
        "anonymous_id:a1 and api_key:k1 are one person (profile u1): 2 links\n"
        "  1. 1970-01-01T00:00:01Z  identify e1: anonymous_id:a1 -- user_id:u1\n"
        "  2. 1970-01-01T00:00:02Z  track e2: user_id:u1 -- api_key:k1"
    )
    # the other way round: the same links, walked from the other end
    back = graph.explain(("api_key", "k1"), anon("a1"))
    assert back is not None
    assert [(s.event_id, s.source, s.target) for s in back.steps] == [
        ("e2", Identifier("api_key", "k1"), uid("u1")),
        ("e1", uid("u1"), anon("a1")),
    ]


def test_explain_takes_the_shortest_chain_and_the_earliest_event(graph: ir.IdentityGraph) -> None:
    graph.identify("u1", "a1", identifiers={"email": "x@y.z"}, timestamp=1, event_id="e1")
    # a1 and the email again, directly: one link instead of two through u1
    graph.track(
        "Seen", anonymous_id="a1", identifiers={"email": "x@y.z"}, timestamp=2, event_id="e2"
    )
    found = graph.explain(anon("a1"), ("email", "x@y.z"))
    assert found is not None
    assert found.steps == (Step("e2", "track", t(2), anon("a1"), Identifier("email", "x@y.z")),)
    # two events at one timestamp carry u1 and a1: the smaller event id is named
    graph.track("Again", user_id="u1", anonymous_id="a1", timestamp=0.5, event_id="z")
    graph.track("Again", user_id="u1", anonymous_id="a1", timestamp=0.5, event_id="b")
    found = graph.explain("u1", anon("a1"))
    assert found is not None and [s.event_id for s in found.steps] == ["b"]


def test_explain_does_not_use_refused_links(graph: ir.IdentityGraph) -> None:
    graph.identify("u1", "a1", timestamp=1, event_id="e1")
    graph.identify("u2", "a2", timestamp=2, event_id="e2")
    # u2 on a1's device: refused (limit_exceeded, user_id) — the direct link is not accepted
    out = graph.track("Seen", user_id="u2", anonymous_id="a1", timestamp=3, event_id="e3")
    assert out.refused[0].reason is Reason.LIMIT_EXCEEDED
    assert graph.explain("u2", anon("a1")) is None
    # the operator merges the two users: now u2 and a1 are one person through the merge
    graph.merge("u1", "u2", timestamp=4, event_id="m1")
    found = graph.explain("u2", anon("a1"))
    assert found is not None
    assert found.steps == (
        Step("m1", "merge", t(4), uid("u2"), uid("u1")),
        Step("e1", "identify", t(1), uid("u1"), anon("a1")),
    )
    assert found.profile == "u1"  # R5: u1 was seen first


def test_explain_does_not_use_links_severed_by_a_split(graph: ir.IdentityGraph) -> None:
    graph.identify("u1", "a1", timestamp=1, event_id="e1")
    graph.identify("u1", "a2", timestamp=2, event_id="e2")
    graph.split(anon("a1"), timestamp=3, event_id="s1")
    assert graph.explain("u1", anon("a1")) is None
    assert graph.explain("u1", anon("a2")) is not None  # e2 is not a1's
    # a link dated after the split rejoins a1: it, not e1, is the explanation
    graph.track("Back", user_id="u1", anonymous_id="a1", timestamp=4, event_id="e4")
    found = graph.explain(anon("a1"), "u1")
    assert found is not None
    assert found.steps == (Step("e4", "track", t(4), anon("a1"), uid("u1")),)


def test_explain_across_profiles_unknown_and_the_same_identifier(graph: ir.IdentityGraph) -> None:
    graph.identify("u1", "a1", timestamp=1, event_id="e1")
    graph.identify("u2", "a2", timestamp=2, event_id="e2")
    assert graph.explain("u1", "u2") is None
    assert graph.explain("u1", "nobody") is None
    assert graph.explain("nobody", "nobody") is None
    assert graph.explain("u1", "null") is None  # a blocked value is in no profile
    same = graph.explain(anon("a1"), Identifier(A, " a1 "))  # normalized: the same identifier
    assert same == Explanation(anon("a1"), anon("a1"), "u1", ())
    assert str(same) == "anonymous_id:a1 is anonymous_id:a1: the same identifier (profile u1)"
    assert len(same) == 0


def test_explain_validates_its_arguments(graph: ir.IdentityGraph) -> None:
    with pytest.raises(ir.UnknownKindError):
        graph.explain(("emial", "x"), "u1")
    with pytest.raises(ir.IdentifierTypeError):
        graph.explain(1.5, "u1")  # type: ignore[arg-type]


# --- history ----------------------------------------------------------------------------------


def _story(graph: ir.IdentityGraph) -> None:
    """A profile shaped by every kind of decision."""
    graph.identify("u1", "a1", timestamp=1, event_id="e1")  # joins a1 to u1
    graph.track("Seen", user_id="u1", anonymous_id="a1", timestamp=2, event_id="e2")  # already
    graph.reset("a1", timestamp=3, event_id="r1")  # logout: a1 retired
    graph.identify("u2", "a1", timestamp=4, event_id="e3")  # refused: anonymous_id_reset
    graph.identify("u3", "a3", timestamp=5, event_id="e4")  # (severed by s1 below)
    graph.merge("u1", "u3", timestamp=6, event_id="m1")  # forced merge joins u3
    graph.identify("u1", identifiers={"email": "x@y.z"}, timestamp=7, event_id="e5")
    graph.forget(("email", "x@y.z"), timestamp=8, event_id="f1")  # erases the email
    graph.split(anon("a3"), timestamp=9, event_id="s1")  # a3 leaves; e4 is severed
    graph.track("Elsewhere", user_id="u9", anonymous_id="a9", timestamp=10, event_id="e9")


def test_history_shows_every_kind_of_decision_in_key_order(graph: ir.IdentityGraph) -> None:
    _story(graph)
    p = graph.profile(user_id="u1")
    assert p is not None and p.all_identifiers() == {uid("u1"), anon("a1"), uid("u3")}
    history = graph.history(user_id="u1")
    assert [d.event_id for d in history] == ["e1", "e2", "r1", "e3", "e4", "m1", "e5", "f1", "s1"]
    e1, e2, r1, e3, e4, m1, e5, f1, s1 = history
    assert e1 == Decision("e1", "identify", t(1), uid("u1"), joined=(anon("a1"),))
    assert e2 == Decision("e2", "track", t(2), uid("u1"), already_joined=(anon("a1"),))
    assert (r1.etype, r1.anchor, r1.timestamp) == ("reset", anon("a1"), t(3))
    assert "retired" in r1.note
    assert e3 == Decision(
        "e3",
        "identify",
        t(4),
        uid("u2"),
        refused=(Refusal("e3", anon("a1"), uid("u2"), Reason.ANONYMOUS_ID_RESET, None),),
    )
    # e4 carried u3 and a3; a3 was split off after it, so e4 is read as carrying u3 only
    assert (e4.anchor, e4.joined, e4.refused) == (uid("u3"), (), ())
    assert e4.note == "severed by a later split: anonymous_id:a3"
    assert m1 == Decision(
        "m1", "merge", t(6), uid("u1"), joined=(uid("u3"),), note="operator's forced merge"
    )
    # e5's email was erased: what is left of the event links nothing
    assert (e5.anchor, e5.joined) == (uid("u1"), ())
    assert "erased" in e5.note
    assert f1 == Decision(
        "f1",
        "forget",
        t(8),
        None,
        note="an identifier of kind email was erased (its value is not kept)",
    )
    assert (s1.etype, s1.anchor) == ("split", anon("a3"))
    # never the erased value, in any form
    assert "x@y.z" not in repr(history) and "x@y.z" not in "\n".join(map(str, history))


def test_history_str_is_readable(graph: ir.IdentityGraph) -> None:
    _story(graph)
    lines = [str(d) for d in graph.history(anonymous_id="a1")]
    assert lines[0] == "1970-01-01T00:00:01Z  identify e1: joined anonymous_id:a1 to user_id:u1"
    assert lines[1] == "1970-01-01T00:00:02Z  track e2: anonymous_id:a1 already with user_id:u1"
    assert lines[3] == (
        "1970-01-01T00:00:04Z  identify e3: refused anonymous_id:a1 for user_id:u2 "
        "(anonymous_id_reset)"
    )
    assert lines[5] == (
        "1970-01-01T00:00:06Z  merge m1: joined user_id:u3 to user_id:u1; operator's forced merge"
    )
    assert lines[7] == (
        "1970-01-01T00:00:08Z  forget f1: an identifier of kind email was erased "
        "(its value is not kept)"
    )


def test_history_of_other_profiles_and_unknown_identifiers(graph: ir.IdentityGraph) -> None:
    _story(graph)
    # u2 only ever took part in e3 (refused)
    assert [d.event_id for d in graph.history(user_id="u2")] == ["e3", "f1"]
    # a3, split off: its link e4 (severed), its split, and the erasure in its component
    assert [d.event_id for d in graph.history(anonymous_id="a3")] == ["e4", "f1", "s1"]
    # a separate component
    assert [d.event_id for d in graph.history(user_id="u9")] == ["e9"]
    assert graph.history(identifier=("email", "x@y.z")) == ()
    assert graph.history(user_id="nobody") == ()
    graph.track("Alone", anonymous_id="solo", timestamp=1)
    assert graph.history(anonymous_id="solo") == ()


def test_history_shows_the_limit_kind_and_late_events_in_key_order(
    graph: ir.IdentityGraph,
) -> None:
    # delivered out of order: the history is in key order, decided as in key order
    graph.identify("u2", "kiosk", timestamp=5, event_id="dan")
    graph.identify("u1", "kiosk", timestamp=1, event_id="cleo")
    history = graph.history(anonymous_id="kiosk")
    assert [d.event_id for d in history] == ["cleo", "dan"]
    assert history[0].joined == (anon("kiosk"),)
    assert history[1].refused == (
        Refusal("dan", anon("kiosk"), uid("u2"), Reason.LIMIT_EXCEEDED, "user_id"),
    )


# --- networkx -------------------------------------------------------------------------------


def _small(graph: ir.IdentityGraph) -> None:
    graph.identify("u1", "a1", identifiers={"email": "x@y.z"}, timestamp=1, event_id="e1")
    graph.track("Seen", user_id="u1", anonymous_id="a1", timestamp=2, event_id="e2")
    graph.identify("u2", "a1", timestamp=3, event_id="e3")  # refused: limit_exceeded (user_id)
    graph.track("Docs", anonymous_id="a9", timestamp=4, event_id="e4")  # no link


def test_to_networkx_whole_graph(graph: ir.IdentityGraph) -> None:
    pytest.importorskip("networkx")
    _small(graph)
    g = graph.to_networkx()
    assert sorted(g.nodes) == [
        "anonymous_id:a1",
        "anonymous_id:a9",
        "email:x@y.z",
        "user_id:u1",
        "user_id:u2",
    ]
    assert dict(g.nodes["anonymous_id:a1"]) == {
        "kind": "anonymous_id",
        "value": "a1",
        "first_seen": t(1),
        "last_seen": t(3),  # e3 carried it, refused or not
        "profile": "u1",
    }
    assert g.nodes["user_id:u2"]["profile"] == "u2"
    assert g.nodes["anonymous_id:a9"]["profile"] == "a9"
    # e1: (u1, email), (u1, a1); e2: (u1, a1); e3: (u2, a1) refused
    assert g.number_of_edges() == 4
    assert sorted((min(u, v), max(u, v), k) for u, v, k in g.edges(keys=True)) == [
        ("anonymous_id:a1", "user_id:u1", "e1"),
        ("anonymous_id:a1", "user_id:u1", "e2"),
        ("anonymous_id:a1", "user_id:u2", "e3"),
        ("email:x@y.z", "user_id:u1", "e1"),
    ]
    assert g.edges["user_id:u2", "anonymous_id:a1", "e3"] == {
        "event_id": "e3",
        "etype": "identify",
        "timestamp": t(3),
        "anchor": "user_id:u2",
        "accepted": False,
        "reason": "limit_exceeded",
        "limit_kind": "user_id",
    }
    assert g.edges["user_id:u1", "anonymous_id:a1", "e2"]["accepted"] is True
    assert g.edges["user_id:u1", "anonymous_id:a1", "e2"]["reason"] is None


def test_to_networkx_one_profile(graph: ir.IdentityGraph) -> None:
    pytest.importorskip("networkx")
    _small(graph)
    g = ex.to_networkx(graph, anonymous_id="a1")
    assert g.graph["profile"] == "u1"
    # the profile, plus u2 at the other end of the refused link touching a1
    assert set(g.nodes) == {"user_id:u1", "email:x@y.z", "anonymous_id:a1", "user_id:u2"}
    assert g.number_of_edges() == 4
    g2 = graph.to_networkx(user_id="u2")
    assert set(g2.nodes) == {"user_id:u2", "anonymous_id:a1"}
    assert [k for _, _, k in g2.edges(keys=True)] == ["e3"]
    g9 = graph.to_networkx(anonymous_id="a9")
    assert (g9.number_of_nodes(), g9.number_of_edges()) == (1, 0)
    assert graph.to_networkx(user_id="nobody").number_of_nodes() == 0


def test_to_networkx_marks_split_severed_links(graph: ir.IdentityGraph) -> None:
    pytest.importorskip("networkx")
    graph.identify("u1", "a1", timestamp=1, event_id="e1")
    graph.split(anon("a1"), timestamp=2, event_id="s1")
    g = graph.to_networkx()
    edge = g.edges["user_id:u1", "anonymous_id:a1", "e1"]
    assert (edge["accepted"], edge["reason"]) == (False, "split")
    assert g.nodes["anonymous_id:a1"]["profile"] == "a1"


def test_graphml_export_round_trips_with_hostile_values(tmp_path: Path) -> None:
    nx = pytest.importorskip("networkx")
    graph = ir.IdentityGraph()
    graph.identify("u\x01<&>", "a1", timestamp=1, event_id="e1")
    graph.track("x", user_id="u\x01<&>", anonymous_id="a1", timestamp=2, event_id="e2")
    ready = ex.graphml_ready(graph.to_networkx())
    path = tmp_path / "g.graphml"
    nx.write_graphml(ready, path)
    back = nx.read_graphml(path)
    assert set(back.nodes) == {"user_id:u\\x01<&>", "anonymous_id:a1"}
    assert back.nodes["anonymous_id:a1"]["first_seen"] == "1970-01-01T00:00:01Z"
    assert back.number_of_edges() == 2


def test_networkx_is_imported_only_when_asked_for() -> None:
    code = (
        "import sys, identityres, identityres.export as ex\n"
        "g = identityres.IdentityGraph()\n"
        "g.identify('u1', 'a1', timestamp=1)\n"
        "ex.to_dot(g, user_id='u1'); ex.to_mermaid(g, user_id='u1'); g.stats()\n"
        "g.explain('u1', ('anonymous_id', 'a1')); g.history(user_id='u1')\n"
        "assert 'networkx' not in sys.modules, 'networkx imported'\n"
        "sys.modules['networkx'] = None\n"
        "try:\n"
        "    g.to_networkx()\n"
        "except ImportError as exc:\n"
        "    assert 'identityres[networkx]' in str(exc), exc\n"
        "else:\n"
        "    raise AssertionError('no ImportError')\n"
    )
    env_path = str(ROOT)
    subprocess.run(
        [sys.executable, "-c", code], check=True, env={"PYTHONPATH": env_path, "PATH": ""}
    )


# --- DOT and Mermaid ------------------------------------------------------------------------


def test_to_dot_draws_a_profile(graph: ir.IdentityGraph) -> None:
    _small(graph)
    dot = ex.to_dot(graph, user_id="u1")
    lines = dot.splitlines()
    assert lines[0] == "graph identity {"
    assert lines[-1] == "}"
    assert '  label="identity graph of profile u1";' in lines
    # members in canonical order (kind priority), then the other profile's u2
    assert '  n0 [label="user_id:u1", penwidth=2];' in lines
    assert '  n1 [label="email:x@y.z"];' in lines
    assert '  n2 [label="anonymous_id:a1"];' in lines
    assert (
        '  n3 [label="user_id:u2", style="rounded,dashed", color=gray40, fontcolor=gray40];'
        in lines
    )
    # accepted links solid with the event type; e1 and e2 between u1 and a1 drawn once
    assert '  n0 -- n1 [label="identify e1"];' in lines
    assert '  n0 -- n2 [label="identify e1 (+1 more)"];' in lines
    assert (
        '  n3 -- n2 [label="refused limit_exceeded (user_id): identify e3", '
        "style=dashed, color=red, fontcolor=red];"
    ) in lines
    assert sum(" -- " in line for line in lines) == 3


def test_to_mermaid_draws_a_profile(graph: ir.IdentityGraph) -> None:
    _small(graph)
    text = ex.to_mermaid(graph, anonymous_id="a1")
    lines = text.splitlines()
    assert lines[0] == "flowchart LR"
    assert '  n0["user_id:u1"]' in lines
    assert '  n3["user_id:u2"]' in lines
    assert '  n0 ---|"identify e1"| n1' in lines
    assert '  n0 ---|"identify e1 (+1 more)"| n2' in lines
    assert '  n3 -.-|"refused limit_exceeded (user_id): identify e3"| n2' in lines
    assert "  class n0 canonical" in lines
    assert "  class n3 outside" in lines
    assert "  linkStyle 2 stroke:#d00,color:#d00" in lines  # the third line drawn is the refusal


HOSTILE = 'a"b\\c\n]|<i>#x;`\u202e'


def test_drawings_escape_hostile_values() -> None:
    graph = ir.IdentityGraph()
    graph.identify(HOSTILE, "a1", timestamp=1, event_id='ev"1\n')
    dot = ex.to_dot(graph, anonymous_id="a1")
    # quotes and backslashes escaped; the newline and the bidi override shown as escapes
    assert '  n0 [label="user_id:a\\"b\\\\\\\\c\\\\n]|<i>#x;`\\\\u202e", penwidth=2];' in dot
    assert '[label="identify ev\\"1\\\\n"];' in dot
    mermaid = ex.to_mermaid(graph, anonymous_id="a1")
    assert '  n0["user_id:a#quot;b\\\\c\\n]#124;#lt;i#gt;#35;x;#96;\\u202e"]' in mermaid
    assert '---|"identify ev#quot;1\\n"|' in mermaid
    for text in (dot, mermaid):
        assert "\u202e" not in text
        # no value breaks out of its line: every line is a statement of the drawing
        for line in text.splitlines():
            assert line in ("graph identity {", "}", "flowchart LR") or line.startswith("  ")


# --- statistics -----------------------------------------------------------------------------


def test_graph_stats_and_profile_sizes(graph: ir.IdentityGraph) -> None:
    _small(graph)
    stats = graph.stats(top=2)
    # profiles: {u1, email, a1}, {u2}, {a9}
    assert stats.profiles == 3 and stats.identifiers == 5
    assert stats.sizes == {1: 2, 3: 1}
    # among the size-1 profiles a user id comes before an anonymous id (as in profiles())
    assert stats.largest == (("u1", 3), ("u2", 1))
    assert stats.refusals == {"limit_exceeded": 1}
    assert stats.refusals_by_kind == {"user_id": 1}
    assert graph.profile_sizes() == {1: 2, 3: 1}
    text = str(stats)
    assert "3 profiles, 5 identifiers" in text and "limit_exceeded: 1" in text
    assert graph.stats(top=0).largest == ()


def test_jsonl_records(graph: ir.IdentityGraph) -> None:
    _small(graph)
    records = ex.to_jsonl_records(graph, user_id="u2")
    assert records == [
        {
            "type": "node",
            "id": "user_id:u2",
            "kind": "user_id",
            "value": "u2",
            "first_seen": "1970-01-01T00:00:03Z",
            "last_seen": "1970-01-01T00:00:03Z",
            "profile": "u2",
        },
        {
            "type": "node",
            "id": "anonymous_id:a1",
            "kind": "anonymous_id",
            "value": "a1",
            "first_seen": "1970-01-01T00:00:01Z",
            "last_seen": "1970-01-01T00:00:03Z",
            "profile": "u1",
        },
        {
            "type": "edge",
            "source": "user_id:u2",
            "target": "anonymous_id:a1",
            "event_id": "e3",
            "etype": "identify",
            "timestamp": "1970-01-01T00:00:03Z",
            "accepted": False,
            "reason": "limit_exceeded",
            "limit_kind": "user_id",
        },
    ]
