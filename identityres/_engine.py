"""The resolver: a union-find of profiles, a second union-find of link components, and
the link log that lets a late event replay only its own component (SPEC §4 R1–R8).

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
from collections.abc import Iterator
from datetime import datetime, timezone
from typing import Any

from identityres._events import COMPANY, IDENTIFY, RESET, Record
from identityres._model import Company, Identifier, Profile, Reason, Refusal
from identityres._rules import CompiledRules

__all__ = ["Engine"]

Key = tuple[float, str]
# A link event in a component's log: ``(ts, event_id, nodes)``; tuples sort by key because
# event ids are unique.
LinkEvent = tuple[float, str, tuple[int, ...]]

_LIMIT = Reason.LIMIT_EXCEEDED
_SIZE = Reason.PROFILE_SIZE_LIMIT
_RESET = Reason.ANONYMOUS_ID_RESET


def _utc(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, tz=timezone.utc)


class Engine:
    """In-memory identity graph state and the merge decisions (not thread-safe by itself;
    ``IdentityGraph`` serializes calls)."""

    def __init__(self, rules: CompiledRules) -> None:
        self.rules = rules
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
        #: event_id -> ((ts, anchor), ((node, reason, limit_kind), ...)) for events with refusals
        self.refusals: dict[str, tuple[tuple[float, int], tuple[tuple[int, Reason, int | None], ...]]] = {}
        #: event_id -> content fingerprint: recognizes duplicates and conflicting reuse
        self.seen: dict[str, int] = {}
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
        self.joins = 0
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

    def apply(self, rec: Record) -> tuple[Any, bool, int]:
        """Apply a validated, not yet seen record. Returns ``(decisions, late, replayed)``."""
        ts = rec.ts
        eid = rec.event_id
        self.seen[eid] = hash(rec.content)
        for b in rec.blocked:
            self.blocked[(b[0], b[1])] += 1
        nodes_by_kind = self.nodes
        ids = rec.ids
        if not ids:
            return None, False, 0
        first_ts = self.first_ts
        last_ts = self.last_ts
        nodes: list[int] = []
        for kind, value in ids:
            n = nodes_by_kind[kind].get(value)
            if n is None:
                n = self._new_node(kind, value, ts, eid)
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

        decisions: Any = None
        late = False
        replayed = 0
        if len(nodes) > 1:
            decisions, late, replayed = self._link(ts, eid, tuple(nodes))
        elif etype == RESET:
            late, replayed = self._reset(nodes[0], (ts, eid))
        else:
            decisions = (nodes[0], (), (), ())
        return decisions, late, replayed

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
        """Apply R1–R4 to one link event on the current profiles."""
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
            self.refusals[eid] = ((ts, a), tuple(refused))
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
        self.joins += 1
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
                self.joins -= size[n] - 1
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
        c = self.canon.get(root)
        if c is not None:
            return c
        if self.size[root] == 1:
            return root
        kind = self.kind
        first_ts = self.first_ts
        first_eid = self.first_eid
        value = self.value
        c = min(
            self.members(root), key=lambda n: (kind[n], first_ts[n], first_eid[n], value[n])
        )
        self.canon[root] = c
        return c

    def roots(self) -> Iterator[int]:
        parent = self.parent
        for n in range(len(parent)):
            if parent[n] == n:
                yield n

    def profile(self, root: int) -> Profile:
        rules = self.rules
        names = rules.kind_names
        kind = self.kind
        value = self.value
        members = self.members(root)
        by_kind: dict[str, set[str]] = {}
        for n in members:
            by_kind.setdefault(names[kind[n]], set()).add(value[n])
        c = self.canonical(root)
        identified: str | None = None
        users = [n for n in members if kind[n] == rules.user]
        if users:
            u = min(users, key=lambda n: (self.first_ts[n], self.first_eid[n], value[n]))
            identified = value[u]
        traits: dict[str, Any] = {}
        newest: dict[str, tuple[float, str, Any]] = {}
        oldest: dict[str, tuple[float, str, Any]] = {}
        company_ids: set[str] = set()
        latest_company: tuple[Key, str] | None = None
        for n in members:
            t = self.traits.get(n)
            if t:
                for k, w in t.items():
                    cur = newest.get(k)
                    if cur is None or (cur[0], cur[1]) < (w[0], w[1]):
                        newest[k] = w
            o = self.traits_once.get(n)
            if o:
                for k, w in o.items():
                    cur = oldest.get(k)
                    if cur is None or (cur[0], cur[1]) > (w[0], w[1]):
                        oldest[k] = w
            links = self.company_links.get(n)
            if links:
                for cid, key in links.items():
                    company_ids.add(cid)
                    if latest_company is None or latest_company[0] < key:
                        latest_company = (key, cid)
        for k, w in oldest.items():
            traits[k] = w[2]
        for k, w in newest.items():
            traits[k] = w[2]
        return Profile(
            user_id=value[c],
            user_id_kind=names[kind[c]],
            identified_user_id=identified,
            anonymous_ids=frozenset(by_kind.get(names[rules.anon], ())),
            identifiers={k: frozenset(v) for k, v in sorted(by_kind.items())},
            company_id=None if latest_company is None else latest_company[1],
            company_ids=frozenset(company_ids),
            traits=traits,
            first_seen=_utc(min(self.first_ts[n] for n in members)),
            last_seen=_utc(max(self.last_ts[n] for n in members)),
        )

    def company(self, cid: str) -> Company | None:
        members = self.company_members.get(cid)
        if members is None:
            return None
        traits = {k: w[2] for k, w in self.company_traits.get(cid, {}).items()}
        profiles = frozenset(self.value[self.canonical(self.find(n))] for n in members)
        return Company(company_id=cid, traits=traits, profiles=profiles)

    def iter_refusals(self) -> Iterator[Refusal]:
        names = self.rules.kind_names
        kind = self.kind
        value = self.value
        def ident(n: int) -> Identifier:
            return Identifier(names[kind[n]], value[n])

        for eid, ((_, a), items) in sorted(self.refusals.items(), key=lambda i: (i[1][0][0], i[0])):
            for x, reason, lk in items:
                yield Refusal(eid, ident(x), ident(a), reason, None if lk is None else names[lk])
