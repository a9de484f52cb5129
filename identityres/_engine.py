"""The resolver: a union-find of profiles, a second union-find of link components, and
the link log that lets a late event replay only its own component (SPEC §4 R1-R8).

How convergence works (R8). The state must be the fold of all events sorted by
``(timestamp, event_id)``. Two union-finds are kept over the same nodes (identifiers):

* the *profile* union-find joins what the rules accepted;
* the *link* union-find joins everything that any event ever tried to join, accepted or
  refused. Its classes are **link components**, and each keeps its link events and the
  greatest key among them and the resets of its anonymous ids.

A decision only reads the profiles of the event's identifiers, which lie inside one link
component, so the events of one component decide each other and nothing else. An event
newer than everything its component has seen is decided at once (the fast path). An older
one ("late") is added to the component's log and the component alone is re-decided from
its sorted log. Traits, companies, first/last seen and resets are min/max aggregates keyed
by ``(timestamp, event_id)``, so they never need a replay.

This module keeps its state in memory; the storage protocol (issue #3) lifts the same
state behind batched load/store calls.
"""

from __future__ import annotations

from array import array
from collections import Counter
from collections.abc import Iterable, Iterator
from datetime import datetime, timezone
from typing import Any

from identityres._events import COMPANY, IDENTIFY, RESET, Record
from identityres._model import ANONYMOUS_ID, USER_ID, Profile, Reason
from identityres._rows import (
    Changes,
    CompanyLinkRow,
    CompanyTraitRow,
    ComponentRows,
    LinkRow,
    NodeRow,
    ProfileRows,
    TraitRow,
)
from identityres._rules import CompiledRules

__all__ = ["Engine"]

Key = tuple[float, str]
# A link event in a component's log: ``(ts, event_id, nodes)``; tuples sort by key because
# event ids are unique.
LinkEvent = tuple[float, str, tuple[int, ...]]
Refused = tuple[float, tuple[int, ...], tuple[tuple[int, Reason, "int | None"], ...]]

_LIMIT = Reason.LIMIT_EXCEEDED
_SIZE = Reason.PROFILE_SIZE_LIMIT
_RESET = Reason.ANONYMOUS_ID_RESET


def _utc(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, tz=timezone.utc)


class Engine:
    """In-memory identity graph state and the merge decisions (not thread-safe by itself;
    ``IdentityGraph`` serializes calls)."""

    def __init__(self, rules: CompiledRules, *, working_set: bool = False) -> None:
        self.rules = rules
        # A working set is an engine loaded with some components of a store for one batch:
        # it maps its nodes to the store's refs and collects trait and company writes so the
        # batch can save them as rows.
        self.refs: list[int] | None = [] if working_set else None
        self.pending_traits: list[TraitRow] | None = [] if working_set else None
        self.pending_company_links: list[CompanyLinkRow] = []
        self.pending_company_traits: list[CompanyTraitRow] = []
        nk = len(rules.kind_names)
        #: value -> node, one dict per kind
        self.nodes: list[dict[str, int]] = [{} for _ in range(nk)]
        self.kind = array("b")
        self.value: list[str] = []
        # profile union-find; ``nxt`` is a circular list of each profile's members so a
        # profile can be listed without scanning the graph
        self.parent = array("q")
        self.nxt = array("q")
        self.size = array("q")
        #: per limited kind, at profile roots: how many members of that kind
        self.counts: dict[int, array[int]] = {k: array("q") for k in rules.limited}
        self.first_ts = array("d")
        self.first_eid: list[str] = []
        self.last_ts = array("d")
        # link union-find and each component's log and newest key (only components with
        # at least one link event or reset have entries)
        self.lparent = array("q")
        self.log: dict[int, list[LinkEvent]] = {}
        self.newest: dict[int, Key] = {}
        #: anonymous id node -> earliest reset key
        self.resets: dict[int, Key] = {}
        #: event_id -> (ts, nodes, ((node, reason, limit_kind), ...)) for events with refusals
        self.refusals: dict[str, Refused] = {}
        #: event_id -> content fingerprint: recognizes duplicates and conflicting reuse
        self.seen: dict[str, object] = {}
        #: node -> {trait: (ts, eid, value)}; regular writes keep the newest, set_once the oldest
        self.traits: dict[int, dict[str, tuple[float, str, Any]]] = {}
        self.traits_once: dict[int, dict[str, tuple[float, str, Any]]] = {}
        #: node -> {company_id: newest key of identify_company linking them}
        self.company_links: dict[int, dict[str, Key]] = {}
        self.company_members: dict[str, set[int]] = {}
        self.company_traits: dict[str, dict[str, tuple[float, str, Any]]] = {}
        #: profile root -> canonical node, dropped whenever the profile changes
        self.canon: dict[int, int] = {}
        self.blocked = Counter[tuple[str, str]]()
        self.replays = 0

    # -- nodes ----------------------------------------------------------------------------

    def node(self, kind: int, value: str) -> int | None:
        return self.nodes[kind].get(value)

    def _new_node(self, kind: int, value: str, ts: float, eid: str) -> int:
        n = len(self.value)
        self.nodes[kind][value] = n
        self.kind.append(kind)
        self.value.append(value)
        self.parent.append(n)
        self.nxt.append(n)
        self.size.append(1)
        for k, arr in self.counts.items():
            arr.append(1 if k == kind else 0)
        self.first_ts.append(ts)
        self.first_eid.append(eid)
        self.last_ts.append(ts)
        self.lparent.append(n)
        if self.refs is not None:
            self.refs.append(-(n + 1))
        return n

    def find(self, n: int) -> int:
        parent = self.parent
        p = parent[n]
        while p != n:
            gp = parent[p]
            parent[n] = gp  # path halving
            n = p
            p = gp
        return n

    def lfind(self, n: int) -> int:
        parent = self.lparent
        p = parent[n]
        while p != n:
            gp = parent[p]
            parent[n] = gp
            n = p
            p = gp
        return n

    # -- applying one event -----------------------------------------------------------------

    def apply(self, rec: Record, fingerprint: object) -> tuple[Any, bool, int]:
        """Apply a validated, not yet seen record. Returns ``(decisions, late, replayed)``."""
        ts = rec.ts
        eid = rec.event_id
        self.seen[eid] = fingerprint
        if rec.blocked:
            for b in rec.blocked:
                self.blocked[(b[0], b[1])] += 1
        nodes_by_kind = self.nodes
        ids = rec.ids
        if not ids:
            return None, False, 0
        first_ts = self.first_ts
        last_ts = self.last_ts
        nodes: list[int] = []
        fresh = 0
        for kind, value in ids:
            n = nodes_by_kind[kind].get(value)
            if n is None:
                n = self._new_node(kind, value, ts, eid)
                fresh += 1
            else:
                f = first_ts[n]
                if ts < f or (ts == f and eid < self.first_eid[n]):
                    first_ts[n] = ts
                    self.first_eid[n] = eid
                    self._touch_canon(n)
                if ts > last_ts[n]:
                    last_ts[n] = ts
            nodes.append(n)

        etype = rec.etype
        if etype == IDENTIFY and (rec.traits or rec.set_once):
            self._write_traits(nodes[0], ts, eid, rec.traits, rec.set_once)
        elif etype == COMPANY and rec.company_id is not None:
            self._write_company(nodes[0], ts, eid, rec.company_id, rec.company_traits)

        if fresh == 2 == len(nodes):
            return self._link_fresh_pair(ts, eid, nodes[0], nodes[1]), False, 0
        decisions: Any = None
        late = False
        replayed = 0
        if len(nodes) > 1:
            decisions, late, replayed = self._link(ts, eid, tuple(nodes))
        else:
            if etype == RESET:
                late, replayed = self._reset(nodes[0], (ts, eid))
            decisions = (nodes[0], (), (), ())
        return decisions, late, replayed

    def _link_fresh_pair(self, ts: float, eid: str, a: int, b: int) -> Any:
        """A link between two identifiers seen for the first time (the commonest link: a
        new device identified as a new user). Same decisions as ``_link``: neither has a
        component, a reset or a profile yet."""
        self.lparent[b] = a
        self.log[a] = [(ts, eid, (a, b))]
        self.newest[a] = (ts, eid)
        rules = self.rules
        counts = self.counts
        for k in rules.limited:
            arr = counts[k]
            lim = rules.limits[k]
            if lim is not None and arr[a] + arr[b] > lim:
                refused: tuple[tuple[int, Reason, int | None], ...] = ((b, _LIMIT, k),)
                self.refusals[eid] = (ts, (a, b), refused)
                return (a, (), (), refused)
        cap = rules.max_profile_size
        if cap is not None and cap < 2:
            refused = ((b, _SIZE, None),)
            self.refusals[eid] = (ts, (a, b), refused)
            return (a, (), (), refused)
        self._union(a, b)
        return (a, (b,), (), ())

    def _reset(self, n: int, key: Key) -> tuple[bool, int]:
        old = self.resets.get(n)
        if old is not None and old <= key:
            return False, 0  # an earlier reset already retired it: nothing can change
        self.resets[n] = key
        root = self.lfind(n)
        newest = self.newest.get(root)
        if newest is None or newest < key:
            self.newest[root] = key
            return False, 0
        # Events after this reset were decided as if the id were not yet retired.
        return True, self._replay(root)[1]

    def _link(self, ts: float, eid: str, nodes: tuple[int, ...]) -> tuple[Any, bool, int]:
        key = (ts, eid)
        lfind = self.lfind
        newest = self.newest
        log = self.log
        roots: list[int] = []
        for n in nodes:
            r = lfind(n)
            if r not in roots:
                roots.append(r)
        late = False
        top: Key | None = None
        for r in roots:
            t = newest.get(r)
            if t is not None:
                if key < t:
                    late = True
                if top is None or top < t:
                    top = t
        root = roots[0]
        if len(roots) > 1:
            # The longest log is kept and the others appended to it, so that each link
            # event is moved O(log n) times over the life of the graph.
            root = max(roots, key=lambda r: len(log.get(r) or ()))
            big = log.get(root)
            for r in roots:
                if r == root:
                    continue
                self.lparent[r] = root
                small = log.pop(r, None)
                if small:
                    if big is None:
                        big = log[root] = small
                    else:
                        big.extend(small)
                newest.pop(r, None)
            if top is not None:
                newest[root] = top
        entry = (ts, eid, nodes)
        mylog = log.get(root)
        if mylog is None:
            log[root] = [entry]
        else:
            mylog.append(entry)
        if late:
            decisions, replayed = self._replay(root, eid)
            return decisions, True, replayed
        newest[root] = key
        return self._decide(ts, eid, nodes, True), False, 0

    def _decide(self, ts: float, eid: str, nodes: tuple[int, ...], report: bool) -> Any:
        """Apply R1-R4 to one link event on the current profiles."""
        find = self.find
        a = nodes[0]
        ra = find(a)
        key = (ts, eid)
        resets = self.resets
        anchor_retired = bool(resets) and a in resets and resets[a] < key
        rules = self.rules
        limited = rules.limited
        limits = rules.limits
        counts = self.counts
        size = self.size
        cap = rules.max_profile_size
        joined: list[int] = []
        already: list[int] = []
        refused: list[tuple[int, Reason, int | None]] = []
        for x in nodes[1:]:
            rx = find(x)
            if rx == ra:
                already.append(x)
                continue
            if anchor_retired or (resets and x in resets and resets[x] < key):
                refused.append((x, _RESET, None))
                continue
            bad: int | None = None
            for k in limited:
                arr = counts[k]
                lim = limits[k]
                assert lim is not None
                if arr[ra] + arr[rx] > lim:
                    bad = k
                    break
            if bad is not None:
                refused.append((x, _LIMIT, bad))
                continue
            if cap is not None and size[ra] + size[rx] > cap:
                refused.append((x, _SIZE, None))
                continue
            ra = self._union(ra, rx)
            joined.append(x)
        if refused:
            self.refusals[eid] = (ts, nodes, tuple(refused))
        if not report:
            return None
        return (a, joined, already, refused)

    def _union(self, ra: int, rb: int) -> int:
        size = self.size
        if size[ra] < size[rb]:
            ra, rb = rb, ra
        self.parent[rb] = ra
        size[ra] += size[rb]
        for arr in self.counts.values():
            arr[ra] += arr[rb]
        nxt = self.nxt
        nxt[ra], nxt[rb] = nxt[rb], nxt[ra]
        canon = self.canon
        if canon:
            canon.pop(ra, None)
            canon.pop(rb, None)
        return ra

    def _replay(self, lroot: int, target: str | None = None) -> tuple[Any, int]:
        """Re-decide one link component from its sorted log (R8); returns the decisions of
        the ``target`` event and how many events were replayed."""
        events = self.log.get(lroot)
        if not events:
            return None, 0
        events.sort()
        self.replays += 1
        members: set[int] = set()
        refusals = self.refusals
        for _, eid, nodes in events:
            members.update(nodes)
            refusals.pop(eid, None)
        parent = self.parent
        nxt = self.nxt
        size = self.size
        kind = self.kind
        canon = self.canon
        counts = self.counts.items()
        # Profiles never cross link components, so these members' profiles hold only
        # members: undoing them is resetting each member to a singleton.
        for n in members:
            if parent[n] == n:
                canon.pop(n, None)
            parent[n] = n
            nxt[n] = n
            size[n] = 1
            for k, arr in counts:
                arr[n] = 1 if kind[n] == k else 0
        decisions: Any = None
        for ts, eid, nodes in events:
            if eid == target:
                decisions = self._decide(ts, eid, nodes, True)
            else:
                self._decide(ts, eid, nodes, False)
        return decisions, len(events)

    # -- traits and companies (order-independent aggregates) -------------------------------

    def _write_traits(
        self,
        n: int,
        ts: float,
        eid: str,
        traits: dict[str, Any] | None,
        set_once: dict[str, Any] | None,
    ) -> None:
        pending = self.pending_traits
        if pending is not None:
            ref = self.ref(n)
            for k, v in (traits or {}).items():
                pending.append(TraitRow(ref, k, ts, eid, v, False))
            for k, v in (set_once or {}).items():
                pending.append(TraitRow(ref, k, ts, eid, v, True))
        if traits:
            mine = self.traits.setdefault(n, {})
            for k, v in traits.items():
                old = mine.get(k)
                if old is None or (old[0], old[1]) < (ts, eid):
                    mine[k] = (ts, eid, v)
        if set_once:
            once = self.traits_once.setdefault(n, {})
            for k, v in set_once.items():
                old = once.get(k)
                if old is None or (old[0], old[1]) > (ts, eid):
                    once[k] = (ts, eid, v)

    def _write_company(
        self, n: int, ts: float, eid: str, cid: str, traits: dict[str, Any] | None
    ) -> None:
        if self.refs is not None:
            ref = self.ref(n)
            self.pending_company_links.append(CompanyLinkRow(ref, cid, ts, eid))
            for k, v in (traits or {}).items():
                self.pending_company_traits.append(CompanyTraitRow(cid, k, ts, eid, v))
        links = self.company_links.setdefault(n, {})
        old = links.get(cid)
        if old is None or old < (ts, eid):
            links[cid] = (ts, eid)
        self.company_members.setdefault(cid, set()).add(n)
        ctraits = self.company_traits.setdefault(cid, {})
        if traits:
            for k, v in traits.items():
                prev = ctraits.get(k)
                if prev is None or (prev[0], prev[1]) < (ts, eid):
                    ctraits[k] = (ts, eid, v)

    def _touch_canon(self, n: int) -> None:
        if self.canon:
            self.canon.pop(self.find(n), None)

    # -- reading ----------------------------------------------------------------------------

    def members(self, root: int) -> list[int]:
        nxt = self.nxt
        out = [root]
        n = nxt[root]
        while n != root:
            out.append(n)
            n = nxt[n]
        return out

    def canonical(self, root: int) -> int:
        """The canonical node of a profile (R5), cached per root for ``resolve``."""
        c = self.canon.get(root)
        if c is not None:
            return c
        if self.size[root] == 1:
            return root
        kind = self.kind
        first_ts = self.first_ts
        first_eid = self.first_eid
        value = self.value
        c = min(self.members(root), key=lambda n: (kind[n], first_ts[n], first_eid[n], value[n]))
        self.canon[root] = c
        return c

    def roots(self) -> Iterator[int]:
        parent = self.parent
        for n in range(len(parent)):
            if parent[n] == n:
                yield n

    # -- rows: the storage protocol's view of this state -----------------------------------

    def ref(self, n: int) -> int:
        refs = self.refs
        return n if refs is None else refs[n]

    def node_row(self, n: int) -> NodeRow:
        ref = self.ref
        reset = self.resets.get(n)
        return NodeRow(
            ref(n),
            self.rules.kind_names[self.kind[n]],
            self.value[n],
            self.first_ts[n],
            self.first_eid[n],
            self.last_ts[n],
            None if reset is None else reset[0],
            None if reset is None else reset[1],
            ref(self.lfind(n)),
            ref(self.find(n)),
        )

    def link_row(self, ts: float, eid: str, nodes: tuple[int, ...]) -> LinkRow:
        ref = self.ref
        names = self.rules.kind_names
        refused = self.refusals.get(eid)
        items: tuple[tuple[int, str, str | None], ...] = ()
        if refused is not None:
            items = tuple(
                (nodes.index(x), reason.value, None if lk is None else names[lk])
                for x, reason, lk in refused[2]
            )
        return LinkRow(eid, ts, ref(self.lfind(nodes[0])), tuple(ref(n) for n in nodes), items)

    def component_rows(self, lroots: Iterable[int]) -> ComponentRows:
        """Every node and link row of the given link components."""
        nodes: set[int] = set()
        links: list[LinkRow] = []
        for r in set(lroots):
            nodes.add(r)
            for ts, eid, members in self.log.get(r, ()):
                nodes.update(members)
                links.append(self.link_row(ts, eid, members))
        return ComponentRows(tuple(self.node_row(n) for n in sorted(nodes)), tuple(links))

    def load_rows(self, nodes: Iterable[NodeRow], links: Iterable[LinkRow]) -> dict[int, int]:
        """Make these rows the state of their components: whole components, as ``load``
        returns and ``changes`` gives. Returns ``{ref: node}`` for the rows' refs."""
        kind_index = self.rules.kind_index
        by_kind = self.nodes
        local: dict[int, int] = {}
        rows = list(nodes)
        # Drop the old logs of every component these nodes were in: the rows replace them.
        for row in rows:
            n = by_kind[kind_index[row.kind]].get(row.value)
            if n is not None:
                old = self.lfind(n)
                for _, eid, _ in self.log.pop(old, ()):
                    self.refusals.pop(eid, None)
                self.newest.pop(old, None)
        for row in rows:
            k = kind_index[row.kind]
            n = by_kind[k].get(row.value)
            if n is None:
                n = self._new_node(k, row.value, row.first_ts, row.first_event_id)
            else:
                self.first_ts[n] = row.first_ts
                self.first_eid[n] = row.first_event_id
            self.last_ts[n] = row.last_ts
            if self.refs is not None and row.ref >= 0:
                self.refs[n] = row.ref
            if row.reset_ts is None or row.reset_event_id is None:
                self.resets.pop(n, None)
            else:
                self.resets[n] = (row.reset_ts, row.reset_event_id)
            local[row.ref] = n
        groups: dict[int, list[int]] = {}
        for row in rows:
            n = local[row.ref]
            root = local[row.profile]
            self.parent[n] = root
            self.lparent[n] = local[row.component]
            groups.setdefault(root, []).append(n)
        kind = self.kind
        for root, members in groups.items():
            members.remove(root)
            members.insert(0, root)
            for i, n in enumerate(members):
                self.nxt[n] = members[(i + 1) % len(members)]
                self.canon.pop(n, None)
            self.size[root] = len(members)
            for k, arr in self.counts.items():
                arr[root] = sum(1 for n in members if kind[n] == k)
        for link in links:
            members_t = tuple(local[m] for m in link.members)
            lroot = local[link.component]
            self.log.setdefault(lroot, []).append((link.ts, link.event_id, members_t))
            if link.refused:
                self.refusals[link.event_id] = (
                    link.ts,
                    members_t,
                    tuple(
                        (members_t[pos], Reason(code), None if lk is None else kind_index[lk])
                        for pos, code, lk in link.refused
                    ),
                )
            key = (link.ts, link.event_id)
            top = self.newest.get(lroot)
            if top is None or top < key:
                self.newest[lroot] = key
        for row in rows:
            if row.reset_ts is not None and row.reset_event_id is not None:
                n = local[row.ref]
                lroot = self.lfind(n)
                key = (row.reset_ts, row.reset_event_id)
                top = self.newest.get(lroot)
                if top is None or top < key:
                    self.newest[lroot] = key
        return local

    def save_changes(self, changes: Changes) -> None:
        """Apply a batch's rows to this (store-owned) engine."""
        local = self.load_rows(changes.nodes, changes.links)

        def node_of(ref: int) -> int:
            return local.get(ref, ref)

        for t in changes.traits:
            if t.once:
                self._write_traits(node_of(t.node), t.ts, t.event_id, None, {t.key: t.value})
            else:
                self._write_traits(node_of(t.node), t.ts, t.event_id, {t.key: t.value}, None)
        for c in changes.company_links:
            self._write_company(node_of(c.node), c.ts, c.event_id, c.company_id, None)
        for ct in changes.company_traits:
            ctraits = self.company_traits.setdefault(ct.company_id, {})
            prev = ctraits.get(ct.key)
            if prev is None or (prev[0], prev[1]) < (ct.ts, ct.event_id):
                ctraits[ct.key] = (ct.ts, ct.event_id, ct.value)
        for eid, fp in changes.events:
            self.seen[eid] = fp
        for kind_name, value, count in changes.blocked:
            self.blocked[(kind_name, value)] += count

    def changes(self, events: Iterable[tuple[str, bytes]]) -> Changes:
        """Everything in this working set, as rows to save."""
        links: list[LinkRow] = []
        for entries in self.log.values():
            links.extend(self.link_row(ts, eid, members) for ts, eid, members in entries)
        return Changes(
            nodes=tuple(self.node_row(n) for n in range(len(self.value))),
            links=tuple(links),
            traits=tuple(self.pending_traits or ()),
            company_links=tuple(self.pending_company_links),
            company_traits=tuple(self.pending_company_traits),
            events=tuple(events),
            blocked=tuple((k, v, c) for (k, v), c in self.blocked.items()),
        )

    def profile_rows(self, root: int) -> ProfileRows:
        members = self.members(root)
        ref = self.ref
        traits: list[TraitRow] = []
        links: list[CompanyLinkRow] = []
        for n in members:
            for k, (ts, eid, v) in self.traits.get(n, {}).items():
                traits.append(TraitRow(ref(n), k, ts, eid, v, False))
            for k, (ts, eid, v) in self.traits_once.get(n, {}).items():
                traits.append(TraitRow(ref(n), k, ts, eid, v, True))
            for cid, (ts, eid) in self.company_links.get(n, {}).items():
                links.append(CompanyLinkRow(ref(n), cid, ts, eid))
        return ProfileRows(tuple(self.node_row(n) for n in members), tuple(traits), tuple(links))


def canonical_row(nodes: Iterable[NodeRow], rules: CompiledRules) -> NodeRow:
    """R5 on rows: highest-priority kind, then earliest key, then value."""
    kind_index = rules.kind_index
    return min(nodes, key=lambda r: (kind_index[r.kind], r.first_ts, r.first_event_id, r.value))


def build_profile(rows: ProfileRows, rules: CompiledRules) -> Profile:
    """Present a profile from its rows (SPEC §5, R5-R7). One implementation for every store."""
    by_kind: dict[str, set[str]] = {}
    for r in rows.nodes:
        by_kind.setdefault(r.kind, set()).add(r.value)
    c = canonical_row(rows.nodes, rules)
    users = [r for r in rows.nodes if r.kind == USER_ID]
    identified = (
        min(users, key=lambda r: (r.first_ts, r.first_event_id, r.value)).value if users else None
    )
    newest: dict[str, TraitRow] = {}
    oldest: dict[str, TraitRow] = {}
    for t in rows.traits:
        if t.once:
            cur = oldest.get(t.key)
            if cur is None or (cur.ts, cur.event_id) > (t.ts, t.event_id):
                oldest[t.key] = t
        else:
            cur = newest.get(t.key)
            if cur is None or (cur.ts, cur.event_id) < (t.ts, t.event_id):
                newest[t.key] = t
    traits: dict[str, Any] = {k: t.value for k, t in oldest.items()}
    traits.update((k, t.value) for k, t in newest.items())
    latest: CompanyLinkRow | None = None
    for link in rows.company_links:
        if latest is None or (latest.ts, latest.event_id) < (link.ts, link.event_id):
            latest = link
    return Profile(
        user_id=c.value,
        user_id_kind=c.kind,
        identified_user_id=identified,
        anonymous_ids=frozenset(by_kind.get(ANONYMOUS_ID, ())),
        identifiers={k: frozenset(v) for k, v in sorted(by_kind.items())},
        company_id=None if latest is None else latest.company_id,
        company_ids=frozenset(link.company_id for link in rows.company_links),
        traits=traits,
        first_seen=_utc(min(r.first_ts for r in rows.nodes)),
        last_seen=_utc(max(r.last_ts for r in rows.nodes)),
    )
