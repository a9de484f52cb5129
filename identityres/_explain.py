"""Why is this one person? Explanations and histories of profiles (docs/operator-tools.md:
``explain``, ``history``), and the edges that exports draw.

Everything here reads the rows of one link component (a store's ``read_components``), so it
works the same on every store. A link row's *accepted links* are computed from the row alone:

* the row's key is ``(ts, event_id)``; a member whose split key is greater than the row's key
  was severed by that split (the event is read as if it never carried it);
* the *anchor* is the first member not severed;
* each other member that is neither severed nor refused in the row (``LinkRow.refused``
  positions index ``members``) is linked to the anchor.

The profiles are the connected pieces of those links (that is how the engine built them), so a
chain of accepted links joins two identifiers exactly when they share a profile.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping
from datetime import datetime, timezone
from typing import Literal

import attrs

from identityres._engine import Engine
from identityres._events import EVENT_TYPES, FORGET, MERGE, RESET, SPLIT
from identityres._model import Identifier, Reason, Refusal
from identityres._profiles import utc as _utc
from identityres._rows import ComponentRows, LinkRow, NodeRow
from identityres._rules import CompiledRules
from identityres._state_rows import load_rows

__all__ = ["Decision", "Explanation", "Step", "show_identifier", "show_text"]

Key = tuple[float, str]
#: what became of one (anchor, member) pair of a link row
Status = Literal["accepted", "refused", "severed"]


def iso(dt: datetime) -> str:
    """A timestamp as ISO-8601 UTC with a ``Z`` (``2024-05-06T09:08:05Z``)."""
    return dt.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")


def show_text(text: str) -> str:
    """``text`` as is when it is plain printable text, else its Python ``repr`` (quotes and
    escapes): a hostile value cannot move the cursor, reorder a line or fake another line."""
    if text and text.isprintable() and text == text.strip() and "'" not in text:
        return text
    return repr(text)


def show_identifier(kind: str, value: str) -> str:
    """``kind:value`` for people (see :func:`show_text`)."""
    return f"{kind}:{show_text(value)}"


def _show(ident: Identifier | None) -> str:
    return "-" if ident is None else show_identifier(ident.kind, ident.value)


@attrs.frozen
class Step:
    """One accepted link of an :class:`Explanation`: the event ``event_id`` (of type
    ``etype``, at ``timestamp``) carried both ``source`` and ``target`` and joined them (or
    found them already joined). ``source`` is the side the chain comes from."""

    event_id: str
    etype: str
    timestamp: datetime
    source: Identifier
    target: Identifier

    def __str__(self) -> str:
        return (
            f"{iso(self.timestamp)}  {self.etype} {show_text(self.event_id)}: "
            f"{_show(self.source)} -- {_show(self.target)}"
        )


@attrs.frozen
class Explanation:
    """Why ``a`` and ``b`` are one profile: the shortest chain of accepted links from ``a`` to
    ``b``, one :class:`Step` per link (none when ``a`` and ``b`` are the same identifier).
    ``profile`` is the canonical id of the profile (R5 in docs/merge-rules.md)."""

    a: Identifier
    b: Identifier
    profile: str
    steps: tuple[Step, ...]

    def __len__(self) -> int:
        return len(self.steps)

    def __str__(self) -> str:
        a, b = _show(self.a), _show(self.b)
        where = f"profile {show_text(self.profile)}"
        if not self.steps:
            return f"{a} is {b}: the same identifier ({where})"
        n = len(self.steps)
        lines = [f"{a} and {b} are one person ({where}): {n} link{'s' if n != 1 else ''}"]
        lines.extend(f"  {i}. {step}" for i, step in enumerate(self.steps, 1))
        return "\n".join(lines)


@attrs.frozen
class Decision:
    """One decision that shaped a profile (``IdentityGraph.history``).

    For a link event (``etype`` ``track``, ``identify``, ``alias``, ``identify_company``, or
    the operator's ``merge``): ``anchor`` is the identifier it anchored on, ``joined`` the
    identifiers it joined into the anchor's profile, ``already_joined`` those already there,
    ``refused`` the demoted ones with reason codes. For ``reset`` and ``split`` ``anchor`` is
    the identifier reset or split off. For ``forget`` ``anchor`` is ``None`` and ``note`` names
    the erased identifier's kind only — its value is not kept anywhere.
    """

    event_id: str
    etype: str
    timestamp: datetime
    anchor: Identifier | None
    joined: tuple[Identifier, ...] = ()
    already_joined: tuple[Identifier, ...] = ()
    refused: tuple[Refusal, ...] = ()
    note: str = ""

    def __str__(self) -> str:
        head = f"{iso(self.timestamp)}  {self.etype} {show_text(self.event_id)}"
        parts: list[str] = []
        anchor = _show(self.anchor)
        if self.joined:
            parts.append(f"joined {', '.join(map(_show, self.joined))} to {anchor}")
        if self.already_joined:
            parts.append(f"{', '.join(map(_show, self.already_joined))} already with {anchor}")
        for r in self.refused:
            reason = r.reason.value if r.kind is None else f"{r.reason.value}, {r.kind}"
            parts.append(f"refused {_show(r.identifier)} for {anchor} ({reason})")
        if self.note:
            parts.append(self.note)
        return f"{head}: {'; '.join(parts)}" if parts else head


# -- edges of a component ------------------------------------------------------------------


@attrs.frozen
class Edge:
    """One ``(anchor, member)`` pair of a link row and what became of it."""

    event_id: str
    etype: str
    ts: float
    anchor: int
    member: int
    status: Status
    #: the refusal's reason code, ``"split"`` for a severed pair, ``None`` when accepted
    reason: str | None
    limit_kind: str | None

    @property
    def key(self) -> Key:
        return (self.ts, self.event_id)


def _severed_after(node: NodeRow | None, key: Key) -> bool:
    if node is None or node.split_ts is None or node.split_event_id is None:
        return False
    return key < (node.split_ts, node.split_event_id)


def link_edges(link: LinkRow, nodes: Mapping[int, NodeRow]) -> list[Edge]:
    """The ``(anchor, member)`` pairs of one link row (none for a row with fewer than two
    members: resets, splits, erasures)."""
    members = link.members
    if len(members) < 2:
        return []
    key = (link.ts, link.event_id)
    effective = [m for m in members if not _severed_after(nodes.get(m), key)]
    anchor = effective[0] if effective else members[0]
    refused = {pos: (code, kind) for pos, code, kind in link.refused}
    out: list[Edge] = []
    for pos, m in enumerate(members):
        if m == anchor:
            continue
        status: Status
        reason: str | None = None
        kind: str | None = None
        if m not in effective or anchor not in effective:
            status, reason = "severed", "split"
        elif pos in refused:
            status = "refused"
            reason, kind = refused[pos]
        else:
            status = "accepted"
        out.append(Edge(link.event_id, link.etype, link.ts, anchor, m, status, reason, kind))
    return out


def component_edges(rows: ComponentRows) -> list[Edge]:
    """Every ``(anchor, member)`` pair of the rows' link rows, in key order."""
    nodes = {n.ref: n for n in rows.nodes}
    out: list[Edge] = []
    for link in sorted(rows.links, key=lambda r: (r.ts, r.event_id)):
        out.extend(e for e in link_edges(link, nodes) if e.anchor in nodes and e.member in nodes)
    return out


def _ident(row: NodeRow) -> Identifier:
    return Identifier(row.kind, row.value)


# -- explain -------------------------------------------------------------------------------


def explain_chain(
    rows: ComponentRows, a: NodeRow, b: NodeRow, rules: CompiledRules
) -> tuple[Step, ...] | None:
    """The shortest chain of accepted links from ``a`` to ``b`` (breadth-first; among links
    of equal length the earliest events win: neighbours are tried in ``(timestamp,
    event_id, kind priority, value)`` order), or ``None``."""
    if a.ref == b.ref:
        return ()
    nodes = {n.ref: n for n in rows.nodes}
    kind_index = rules.kind_index
    adjacent: dict[int, list[tuple[tuple[float, str, int, str], int, Edge]]] = {}
    for e in component_edges(rows):
        if e.status != "accepted":
            continue
        for x, y in ((e.anchor, e.member), (e.member, e.anchor)):
            ny = nodes[y]
            order = (e.ts, e.event_id, kind_index.get(ny.kind, len(kind_index)), ny.value)
            adjacent.setdefault(x, []).append((order, y, e))
    for items in adjacent.values():
        items.sort(key=lambda item: item[0])
    came: dict[int, tuple[int, Edge] | None] = {a.ref: None}
    queue = deque([a.ref])
    while queue:
        x = queue.popleft()
        for _, y, e in adjacent.get(x, ()):
            if y in came:
                continue
            came[y] = (x, e)
            if y == b.ref:
                queue.clear()
                break
            queue.append(y)
    if b.ref not in came:
        return None
    steps: list[Step] = []
    y = b.ref
    while True:
        back = came[y]
        if back is None:
            break
        x, e = back
        steps.append(Step(e.event_id, e.etype, _utc(e.ts), _ident(nodes[x]), _ident(nodes[y])))
        y = x
    steps.reverse()
    return tuple(steps)


# -- history -------------------------------------------------------------------------------


def profile_history(
    rows: ComponentRows, start: NodeRow, rules: CompiledRules
) -> tuple[Decision, ...]:
    """The decisions of the component's log that touch the profile holding ``start`` now,
    the splits of identifiers that took part in its links, and the component's erasures, in
    key order, re-decided to tell joins from identifiers already joined
    (``Engine.decisions_in_order``)."""
    engine = Engine(rules)
    local = load_rows(engine, rows.nodes, rows.links)
    names = rules.kind_names
    members = {local[r.ref] for r in rows.nodes if r.profile == start.profile}
    lroot = engine.lfind(local[start.ref])
    erased_kinds = {
        link.event_id: link.erased_kind for link in rows.links if link.erased_kind is not None
    }

    def ident(n: int) -> Identifier:
        return Identifier(names[engine.kind[n]], engine.value[n])

    def idents(ns: Iterable[int]) -> tuple[Identifier, ...]:
        return tuple(ident(n) for n in ns)

    out: list[Decision] = []
    entries = engine.decisions_in_order(lroot)
    # Identifiers that took part in a link of this profile: a split of one of them is
    # shown too (splitting an identifier off is how a profile loses it).
    related = {
        n
        for (_, _, nodes, _), _ in entries
        if len(nodes) > 1 and any(n in members for n in nodes)
        for n in nodes
    }
    for (ts, eid, nodes, etype), decided in entries:
        if etype == SPLIT and len(nodes) == 1:
            if nodes[0] not in related:
                continue
        elif etype != FORGET and not any(n in members for n in nodes):
            continue
        when = _utc(ts)
        ename = EVENT_TYPES[etype]
        key = (ts, eid)
        if etype == FORGET:
            kind = erased_kinds.get(eid) or engine.erasures.get(eid)
            what = f"an identifier of kind {kind}" if kind else "an identifier"
            note = f"{what} was erased (its value is not kept)"
            out.append(Decision(eid, ename, when, None, note=note))
        elif len(nodes) == 1 and etype == RESET:
            n = nodes[0]
            first = engine.resets.get(n)
            if first is not None and first < key:
                note = f"{_show(ident(n))} reset again (retired since {show_text(first[1])})"
            else:
                note = f"{_show(ident(n))} retired: later events cannot join it to another profile"
            out.append(Decision(eid, ename, when, ident(n), note=note))
        elif len(nodes) == 1 and etype == SPLIT:
            n = nodes[0]
            latest = engine.splits.get(n)
            if latest is not None and key < latest:
                later = show_text(latest[1])
                note = f"{_show(ident(n))} split off (the later split {later} supersedes it)"
            else:
                note = (
                    f"{_show(ident(n))} split off: links carrying it dated before this are severed"
                )
            out.append(Decision(eid, ename, when, ident(n), note=note))
        elif len(nodes) == 1:
            # a link whose other identifiers were all erased since
            shown = _show(ident(nodes[0]))
            note = f"{shown} linked to nothing: the event's other identifiers were erased"
            out.append(Decision(eid, ename, when, ident(nodes[0]), note=note))
        else:
            severed = [n for n in nodes if n in engine.splits and key < engine.splits[n]]
            notes: list[str] = []
            if etype == MERGE:
                notes.append("operator's forced merge")
            if severed:
                shown = ", ".join(_show(x) for x in idents(severed))
                notes.append(f"severed by a later split: {shown}")
            if decided is None:
                out.append(Decision(eid, ename, when, None, note="; ".join(notes)))
                continue
            a, joined, already, refused = decided
            anchor = ident(a)
            refusals = tuple(
                Refusal(eid, ident(x), anchor, Reason(reason), None if lk is None else names[lk])
                for x, reason, lk in refused
            )
            out.append(
                Decision(
                    eid,
                    ename,
                    when,
                    anchor,
                    idents(joined),
                    idents(already),
                    refusals,
                    "; ".join(notes),
                )
            )
    return tuple(out)
