"""Export an identity graph for analysis and for people (docs/operator-tools.md).

* :func:`to_networkx`: a ``networkx.MultiGraph`` of one profile or of the whole graph, with
  node and edge attributes (needs the ``identityres[networkx]`` extra; ``networkx`` is
  imported only when called, never on the ingest path);
* :func:`to_dot` and :func:`to_mermaid`: one profile drawn for people, as Graphviz DOT or a
  Mermaid flowchart (no extra needed);
* :func:`to_jsonl_records`: nodes and edges as plain JSON-ready dicts (``identityres export
  --format jsonl``);

Profile sizes, the largest profiles and refusals by reason — the numbers to check for a
super-profile built from a bad identifier — are ``IdentityGraph.stats()``.

**Nodes** are identifiers, keyed ``"kind:value"`` (kind names hold no ``:``, so the first
``:`` splits the key), with attributes ``kind``, ``value``, ``first_seen``, ``last_seen``
(tz-aware UTC datetimes) and ``profile`` (the canonical id of its profile, R5 in
docs/merge-rules.md).

**Edges**: every link event (two or more identifiers) gives one edge per ``(anchor, member)``
pair — the anchor is the event's highest-priority identifier not split off after it (R1 in
docs/merge-rules.md). Attributes: ``event_id``, ``etype`` (``track``, ``identify``, ``alias``,
``identify_company``, ``merge``), ``timestamp``, ``anchor`` (the anchor's node key),
``accepted`` (``True`` if the rules joined them or found them joined), ``reason`` (the
refusal's reason code, ``"split"`` for a pair severed by a later split, ``None`` when
accepted) and ``limit_kind`` (the kind of a ``limit_exceeded`` refusal). In a
``MultiGraph`` the edge key is the ``event_id``.

**One profile** (``user_id=``, ``anonymous_id=`` or ``identifier=``): the profile's
identifiers and the links among them, plus each refused or severed link that touches them
with its other end (which belongs to another profile: its ``profile`` attribute says which).
An identifier the graph has never seen gives an empty graph. **No argument**: every
identifier and every link of the graph (read one batch of link components at a time; a
store that is written to meanwhile may show the writes in part).
"""

from __future__ import annotations

import importlib
from collections import Counter
from collections.abc import Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

import attrs

from identityres._explain import Edge, component_edges, iso
from identityres._model import Identifier, IdLike
from identityres._profiles import canonical_row
from identityres._profiles import utc as _utc
from identityres._rows import ComponentRows, NodeRow

if TYPE_CHECKING:
    from identityres._graph import IdentityGraph

__all__ = [
    "to_dot",
    "to_jsonl_records",
    "to_mermaid",
    "to_networkx",
]

#: identifiers asked for per ``read_components`` call when exporting the whole graph
_CHUNK = 2_000


# -- what an export shows --------------------------------------------------------------------


@attrs.frozen
class _Node:
    key: str
    kind: str
    value: str
    first_seen: datetime
    last_seen: datetime
    profile: str
    #: in the profile asked for (always true for a whole-graph export)
    inside: bool
    #: the canonical identifier of its profile
    canonical: bool


@attrs.frozen
class _Link:
    anchor: str
    member: str
    edge: Edge

    @property
    def accepted(self) -> bool:
        return self.edge.status == "accepted"


@attrs.frozen
class _View:
    nodes: tuple[_Node, ...]
    links: tuple[_Link, ...]
    #: the canonical id of the profile asked for; ``None`` for the whole graph
    profile: str | None


def _key(row: NodeRow) -> str:
    return f"{row.kind}:{row.value}"


def _view_of(
    graph: IdentityGraph,
    rows: ComponentRows,
    inside: set[int] | None,
    profile: str | None,
) -> _View:
    """Nodes and links of ``rows``: all of them (``inside`` is ``None``), or the nodes with
    refs in ``inside`` and the links touching them."""
    rules = graph.rules.compiled
    kind_index = rules.kind_index
    by_profile: dict[int, list[NodeRow]] = {}
    for n in rows.nodes:
        by_profile.setdefault(n.profile, []).append(n)
    canon = {p: canonical_row(ns, rules) for p, ns in by_profile.items()}
    nodes = {n.ref: n for n in rows.nodes}
    links: list[_Link] = []
    shown: set[int] = set(inside) if inside is not None else set(nodes)
    for e in component_edges(rows):
        if inside is not None and e.anchor not in inside and e.member not in inside:
            continue
        shown.add(e.anchor)
        shown.add(e.member)
        links.append(_Link(_key(nodes[e.anchor]), _key(nodes[e.member]), e))

    def order(n: NodeRow) -> tuple[Any, ...]:
        # the profile asked for first, then by profile, each in canonical order (R5)
        c = canon[n.profile]
        own = inside is not None and n.ref in inside
        return (
            not own,
            kind_index.get(c.kind, len(kind_index)),
            c.value,
            kind_index.get(n.kind, len(kind_index)),
            n.first_ts,
            n.first_event_id,
            n.value,
        )

    out = [
        _Node(
            _key(n),
            n.kind,
            n.value,
            _utc(n.first_ts),
            _utc(n.last_ts),
            canon[n.profile].value,
            inside is None or n.ref in inside,
            canon[n.profile].ref == n.ref,
        )
        for n in sorted((nodes[r] for r in shown), key=order)
    ]
    return _View(tuple(out), tuple(links), profile)


def _collect(
    graph: IdentityGraph,
    user_id: IdLike | None,
    anonymous_id: IdLike | None,
    identifier: Identifier | tuple[str, IdLike] | None,
) -> _View:
    if user_id is None and anonymous_id is None and identifier is None:
        return _view_of(graph, _whole_graph(graph), None, None)
    ident = graph.identifier(user_id=user_id, anonymous_id=anonymous_id, identifier=identifier)
    pair = (ident.kind, ident.value)
    rows = graph.components([pair])
    start = next((n for n in rows.nodes if (n.kind, n.value) == pair), None)
    if start is None:
        return _View((), (), None)
    members = [n for n in rows.nodes if n.profile == start.profile]
    canon = canonical_row(members, graph.rules.compiled).value
    return _view_of(graph, rows, {n.ref for n in members}, canon)


def _whole_graph(graph: IdentityGraph) -> ComponentRows:
    """Every node and link row, read a batch of components at a time."""
    nodes: dict[int, NodeRow] = {}
    links: dict[str, Any] = {}
    covered: set[tuple[str, str]] = set()
    pending: list[tuple[str, str]] = []

    def read() -> None:
        rows = graph.components(pending)
        pending.clear()
        for n in rows.nodes:
            nodes[n.ref] = n
            covered.add((n.kind, n.value))
        for link in rows.links:
            links[link.event_id] = link

    for ident, _ in graph.identity_map():
        pair = (ident.kind, ident.value)
        if pair in covered:
            continue  # its component was read with an earlier profile's
        covered.add(pair)
        pending.append(pair)
        if len(pending) >= _CHUNK:
            read()
    if pending:
        read()
    return ComponentRows(tuple(nodes.values()), tuple(links.values()))


# -- networkx --------------------------------------------------------------------------------


def _networkx() -> Any:
    try:
        # (imported by name: the core is type-checked without networkx's stubs)
        networkx: Any = importlib.import_module("networkx")
    except ImportError as exc:
        raise ImportError(
            "identityres export to networkx needs networkx: pip install 'identityres[networkx]'"
        ) from exc
    return networkx


def to_networkx(
    graph: IdentityGraph,
    *,
    user_id: IdLike | None = None,
    anonymous_id: IdLike | None = None,
    identifier: Identifier | tuple[str, IdLike] | None = None,
) -> Any:
    """A ``networkx.MultiGraph`` of the profile holding the given identifier (with the refused
    links touching it), or of the whole graph when none is given; attributes as in the module
    docs. Raises ``ImportError`` without the ``identityres[networkx]`` extra."""
    nx = _networkx()
    view = _collect(graph, user_id, anonymous_id, identifier)
    g = nx.MultiGraph()
    if view.profile is not None:
        g.graph["profile"] = view.profile
    for n in view.nodes:
        g.add_node(
            n.key,
            kind=n.kind,
            value=n.value,
            first_seen=n.first_seen,
            last_seen=n.last_seen,
            profile=n.profile,
        )
    for link in view.links:
        e = link.edge
        g.add_edge(
            link.anchor,
            link.member,
            key=e.event_id,
            event_id=e.event_id,
            etype=e.etype,
            timestamp=_utc(e.ts),
            anchor=link.anchor,
            accepted=link.accepted,
            reason=e.reason,
            limit_kind=e.limit_kind,
        )
    return g


def graphml_ready(g: Any) -> Any:
    """A copy of a graph from :func:`to_networkx` that ``networkx.write_graphml`` accepts:
    datetimes as ISO-8601 text, ``None`` attributes left out, and characters XML 1.0 cannot
    hold (control characters) written as visible ``\\xNN`` escapes."""
    nx = _networkx()
    out = nx.MultiGraph()

    def clean(attrs_: Mapping[str, Any]) -> dict[str, Any]:
        done: dict[str, Any] = {}
        for k, v in attrs_.items():
            if v is None:
                continue
            if isinstance(v, datetime):
                v = iso(v)
            elif isinstance(v, str):
                v = _xml_text(v)
            done[k] = v
        return done

    out.graph.update(clean(g.graph))
    for n, data in g.nodes(data=True):
        out.add_node(_xml_text(n), **clean(data))
    seen: Counter[str] = Counter()
    for u, v, k, data in g.edges(keys=True, data=True):
        # GraphML edge ids are unique in a document: one event gives several edges
        seen[k] += 1
        out.add_edge(_xml_text(u), _xml_text(v), key=_xml_text(f"{k}/{seen[k]}"), **clean(data))
    return out


def _xml_text(text: str) -> str:
    if all(_xml_ok(c) for c in text):
        return text
    return "".join(c if _xml_ok(c) else _escape_char(c) for c in text)


def _xml_ok(c: str) -> bool:
    o = ord(c)
    if o < 0x20:
        return c in "\t\n\r"
    return o <= 0xD7FF or 0xE000 <= o <= 0xFFFD or o >= 0x10000


def _escape_char(c: str) -> str:
    o = ord(c)
    if o <= 0xFF:
        return f"\\x{o:02x}"
    if o <= 0xFFFF:
        return f"\\u{o:04x}"
    return f"\\U{o:08x}"


# -- JSON lines ------------------------------------------------------------------------------


def to_jsonl_records(
    graph: IdentityGraph,
    *,
    user_id: IdLike | None = None,
    anonymous_id: IdLike | None = None,
    identifier: Identifier | tuple[str, IdLike] | None = None,
) -> list[dict[str, Any]]:
    """The nodes, then the edges, as JSON-ready dicts (``"type": "node"`` / ``"edge"``;
    timestamps as ISO-8601 UTC text): what ``identityres export --format jsonl`` writes, one
    per line. Same scope and attributes as :func:`to_networkx`, without networkx."""
    view = _collect(graph, user_id, anonymous_id, identifier)
    out: list[dict[str, Any]] = [
        {
            "type": "node",
            "id": n.key,
            "kind": n.kind,
            "value": n.value,
            "first_seen": iso(n.first_seen),
            "last_seen": iso(n.last_seen),
            "profile": n.profile,
        }
        for n in view.nodes
    ]
    for link in view.links:
        e = link.edge
        out.append(
            {
                "type": "edge",
                "source": link.anchor,
                "target": link.member,
                "event_id": e.event_id,
                "etype": e.etype,
                "timestamp": iso(_utc(e.ts)),
                "accepted": link.accepted,
                "reason": e.reason,
                "limit_kind": e.limit_kind,
            }
        )
    return out


# -- drawings for people ---------------------------------------------------------------------


def visible(text: str) -> str:
    """``text`` with every character that does not print (control characters, line and
    paragraph separators, bidirectional overrides, ...) and the backslash written as a
    visible escape (``\\n``, ``\\x1b``, ``\\u202e``, ``\\\\``): a drawn label shows the value
    exactly and on one line."""
    if text.isprintable() and "\\" not in text:
        return text
    out: list[str] = []
    for c in text:
        if c == "\\":
            out.append("\\\\")
        elif c.isprintable():
            out.append(c)
        elif c in _NAMED:
            out.append(_NAMED[c])
        else:
            out.append(_escape_char(c))
    return "".join(out)


_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


@attrs.frozen
class _Drawn:
    """Links between one pair of identifiers with one outcome, drawn as one line."""

    anchor: str
    member: str
    status: str
    reason: str | None
    limit_kind: str | None
    first: Edge
    more: int

    def label(self) -> str:
        e = self.first
        text = f"{e.etype} {e.event_id}"
        if self.more:
            text += f" (+{self.more} more)"
        if self.status == "refused":
            why = self.reason or "refused"
            if self.limit_kind is not None:
                why += f" ({self.limit_kind})"
            return f"refused {why}: {text}"
        if self.status == "severed":
            return f"severed by split: {text}"
        return text


def _drawn(view: _View) -> list[_Drawn]:
    """The view's links, those between one pair with one outcome drawn once (the earliest
    event named, the others counted)."""
    groups: dict[tuple[str, str, str, str | None, str | None], list[Edge]] = {}
    for link in view.links:
        e = link.edge
        key = (link.anchor, link.member, e.status, e.reason, e.limit_kind)
        groups.setdefault(key, []).append(e)
    out = [
        _Drawn(a, m, status, reason, kind, edges[0], len(edges) - 1)
        for (a, m, status, reason, kind), edges in groups.items()
    ]
    # accepted lines first, then by their first event
    place = {n.key: i for i, n in enumerate(view.nodes)}
    out.sort(key=lambda d: (d.status != "accepted", d.first.key, place[d.anchor], place[d.member]))
    return out


def _title(view: _View) -> str:
    if view.profile is None:
        return "identity graph"
    return f"identity graph of profile {view.profile}"


def _dot_string(text: str) -> str:
    """A DOT double-quoted string showing ``text`` literally."""
    shown = visible(text).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{shown}"'


def to_dot(
    graph: IdentityGraph,
    *,
    user_id: IdLike | None = None,
    anonymous_id: IdLike | None = None,
    identifier: Identifier | tuple[str, IdLike] | None = None,
) -> str:
    """Graphviz DOT text of the profile holding the given identifier (or of the whole graph):
    nodes labelled ``kind:value`` (the canonical id bold, identifiers of other profiles
    dashed and grey), accepted links solid and labelled with the event type and id, refused
    links dashed and red with the reason. Links between one pair with one outcome are drawn
    once, naming the earliest event (``(+N more)``). Render with ``dot -Tsvg``."""
    view = _collect(graph, user_id, anonymous_id, identifier)
    ids = {n.key: f"n{i}" for i, n in enumerate(view.nodes)}
    lines = [
        "graph identity {",
        f"  label={_dot_string(_title(view))};",
        "  labelloc=t;",
        '  node [shape=box, style=rounded, fontname="Helvetica"];',
        '  edge [fontname="Helvetica", fontsize=10];',
    ]
    for n in view.nodes:
        extra = ""
        if not n.inside:
            extra = ', style="rounded,dashed", color=gray40, fontcolor=gray40'
        elif n.canonical:
            extra = ", penwidth=2"
        lines.append(f"  {ids[n.key]} [label={_dot_string(n.key)}{extra}];")
    for d in _drawn(view):
        style = ""
        if d.status != "accepted":
            style = ", style=dashed, color=red, fontcolor=red"
        lines.append(
            f"  {ids[d.anchor]} -- {ids[d.member]} [label={_dot_string(d.label())}{style}];"
        )
    lines.append("}")
    return "\n".join(lines) + "\n"


_MERMAID_ENTITIES = {
    '"': "#quot;",
    "#": "#35;",
    "&": "#amp;",
    "<": "#lt;",
    ">": "#gt;",
    "|": "#124;",
    "`": "#96;",
}


def _mermaid_string(text: str) -> str:
    """A Mermaid quoted label showing ``text`` literally (entity codes for the characters the
    syntax or the HTML label would read)."""
    shown = "".join(_MERMAID_ENTITIES.get(c, c) for c in visible(text))
    return f'"{shown}"'


def to_mermaid(
    graph: IdentityGraph,
    *,
    user_id: IdLike | None = None,
    anonymous_id: IdLike | None = None,
    identifier: Identifier | tuple[str, IdLike] | None = None,
) -> str:
    """A Mermaid flowchart of the profile holding the given identifier (or of the whole
    graph), drawn like :func:`to_dot`: accepted links solid (``---``) with the event type and
    id, refused links dotted (``-.-``) and red with the reason."""
    view = _collect(graph, user_id, anonymous_id, identifier)
    ids = {n.key: f"n{i}" for i, n in enumerate(view.nodes)}
    lines = ["flowchart LR", f"  %% {visible(_title(view))}"]
    for n in view.nodes:
        lines.append(f"  {ids[n.key]}[{_mermaid_string(n.key)}]")
    refused: list[str] = []
    for i, d in enumerate(_drawn(view)):
        line = "---" if d.status == "accepted" else "-.-"
        if d.status != "accepted":
            refused.append(str(i))
        lines.append(f"  {ids[d.anchor]} {line}|{_mermaid_string(d.label())}| {ids[d.member]}")
    canonical = [ids[n.key] for n in view.nodes if n.inside and n.canonical]
    outside = [ids[n.key] for n in view.nodes if not n.inside]
    if canonical:
        lines.append("  classDef canonical stroke-width:3px")
        lines.append(f"  class {','.join(canonical)} canonical")
    if outside:
        lines.append("  classDef outside stroke-dasharray:4 3,color:#666")
        lines.append(f"  class {','.join(outside)} outside")
    if refused:
        lines.append(f"  linkStyle {','.join(refused)} stroke:#d00,color:#d00")
    return "\n".join(lines) + "\n"
