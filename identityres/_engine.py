"""The resolver: a union-find of profiles, a second union-find of link components, and
the link log that lets a late event replay only its own component (R1-R8 in
docs/merge-rules.md).

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
its sorted log. Traits, companies and first/last seen are min/max aggregates keyed by
``(timestamp, event_id)``, so they never need a replay; a reset, a split and an erasure
change what earlier-decided links mean, so they replay their component.

This module keeps its state in memory; the storage protocol (issue #3) lifts the same
state behind batched load/store calls.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from array import array
from collections import Counter
from collections.abc import Iterable, Iterator
from typing import Any

from identityres._events import (
    COMPANY,
    FORGET,
    IDENTIFY,
    MERGE,
    RESET,
    SPLIT,
    Record,
)
from identityres._merge import keep
from identityres._model import Reason
from identityres._rules import CompiledRules

__all__ = ["Engine"]

Key = tuple[float, str]
# An entry of a component's log: ``(ts, event_id, nodes, etype)``; tuples sort by key
# because event ids are unique. Links (``nodes[0]`` anchors), forced merges, resets and
# splits are logged; erasures are logged with no nodes so that history can show them.
LinkEvent = tuple[float, str, tuple[int, ...], int]
Refused = tuple[float, tuple[int, ...], tuple[tuple[int, Reason, "int | None"], ...]]

_LIMIT = Reason.LIMIT_EXCEEDED
_SIZE = Reason.PROFILE_SIZE_LIMIT
_RESET = Reason.ANONYMOUS_ID_RESET


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
        #: node -> latest split key: links carrying it dated before that are severed
        self.splits: dict[int, Key] = {}
        # Erasure (``forget``, docs/operator-tools.md): keyed hashes of forgotten identifiers,
        # never the value; forgotten nodes stay as tombstones (no value, no profile) so arrays
        # keep their indexes; erasure log entries remember the kind for history.
        self.erasure_key: bytes = secrets.token_bytes(32)
        self.suppressed: set[bytes] = set()
        self.dead: set[int] = set()
        self.erasures: dict[str, str] = {}
        #: event_id -> (ts, nodes, ((node, reason, limit_kind), ...)) for events with refusals
        self.refusals: dict[str, Refused] = {}
        #: event_id -> content fingerprint: recognizes duplicates and conflicting reuse
        self.seen: dict[str, bytes] = {}
        #: node -> {trait: (ts, eid, value)}; regular writes keep the newest, set_once the oldest
        self.traits: dict[int, dict[str, tuple[float, str, Any]]] = {}
        self.traits_once: dict[int, dict[str, tuple[float, str, Any]]] = {}
        #: node -> {company_id: (ts, event_id, None) of the newest identify_company linking
        #: them}
        self.company_links: dict[int, dict[str, tuple[float, str, None]]] = {}
        self.company_members: dict[str, set[int]] = {}
        self.company_traits: dict[str, dict[str, tuple[float, str, Any]]] = {}
        #: profile root -> canonical node, dropped whenever the profile changes
        self.canon: dict[int, int] = {}
        self.blocked = Counter[tuple[str, str]]()
        self.replays = 0

    # -- nodes ----------------------------------------------------------------------------

    def node(self, kind: int, value: str) -> int | None:
        return self.nodes[kind].get(value)

    def new_node(self, kind: int, value: str, ts: float, eid: str) -> int:
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

    def drop_log(self, lroot: int) -> None:
        """Forget a link component's log, refusals and newest key (rows replace them)."""
        for _, eid, _, _ in self.log.pop(lroot, ()):
            self.refusals.pop(eid, None)
        self.newest.pop(lroot, None)

    def seen_key(self, lroot: int, key: Key) -> None:
        """Widen a link component's newest key to include ``key``."""
        top = self.newest.get(lroot)
        if top is None or top < key:
            self.newest[lroot] = key

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
        self.seen[eid] = rec.fingerprint
        etype = rec.etype
        if etype <= IDENTIFY and rec.traits is None and rec.set_once is None and not rec.blocked:
            fast = self._seen_again(rec, ts, eid, etype)
            if fast is not None:
                return fast, False, 0
        if rec.blocked:
            for b in rec.blocked:
                self.blocked[(b[0], b[1])] += 1
        nodes_by_kind = self.nodes
        ids = rec.ids
        if etype == FORGET:
            return self._forget(rec)
        anchor_erased = False
        if self.suppressed and ids:
            # A value still in the graph was never erased: hash only unseen values.
            kept = tuple(
                p for p in ids if p[1] in nodes_by_kind[p[0]] or not self._is_suppressed(p)
            )
            anchor_erased = kept[:1] != ids[:1]
            ids = kept
            if not ids and etype == COMPANY and rec.company_id is not None:
                self._write_company(None, ts, eid, rec.company_id, rec.company_traits)
        if not ids:
            return None, False, 0
        if len(ids) == 2 and etype != MERGE and not anchor_erased:
            (ka, va), (kb, vb) = ids
            if va not in nodes_by_kind[ka] and vb not in nodes_by_kind[kb]:
                return self._fresh_pair(ka, va, kb, vb, rec), False, 0
        nodes: list[int] = []
        for kind, value in ids:
            n = nodes_by_kind[kind].get(value)
            if n is None:
                n = self.new_node(kind, value, ts, eid)
            else:
                self._seen_at(n, ts, eid)
            nodes.append(n)

        # Traits and company links belong to the event's anchor (R6, R7); when the anchor is
        # an erased identifier they are erased with it, not handed to the next one.
        if anchor_erased:
            if etype == COMPANY and rec.company_id is not None:
                # the company and its traits are not the erased person's data
                self._write_company(None, ts, eid, rec.company_id, rec.company_traits)
        elif etype == IDENTIFY and (rec.traits or rec.set_once):
            self._write_traits(nodes[0], ts, eid, rec.traits, rec.set_once)
        elif etype == COMPANY and rec.company_id is not None:
            self._write_company(nodes[0], ts, eid, rec.company_id, rec.company_traits)

        decisions: Any = None
        late = False
        replayed = 0
        if len(nodes) > 1:
            decisions, late, replayed = self._link(ts, eid, tuple(nodes), etype)
        else:
            if etype == RESET:
                late, replayed = self._reset(nodes[0], (ts, eid))
            elif etype == SPLIT:
                late, replayed = self._split(nodes[0], (ts, eid))
            decisions = (nodes[0], (), (), ())
        return decisions, late, replayed

    def _seen_again(self, rec: Record, ts: float, eid: str, etype: int) -> Any:
        """The commonest events, decided without the general machinery: a track of one
        identifier, and a track or identify of two known identifiers already in one
        profile, newer than everything their link component has seen. Returns the
        decisions, or ``None`` when the event needs the general path (nothing changed)."""
        ids = rec.ids
        if len(ids) == 1:
            k, v = ids[0]
            n = self.nodes[k].get(v)
            if n is None:
                if self.suppressed:  # a new value may be a forgotten one
                    return None
                n = self.new_node(k, v, ts, eid)
            else:  # a value in the graph was never forgotten
                self._seen_at(n, ts, eid)
            return (n, (), (), ())
        if len(ids) != 2:
            return None
        (ka, va), (kb, vb) = ids
        a = self.nodes[ka].get(va)
        if a is None:
            return None
        b = self.nodes[kb].get(vb)
        if b is None:
            return None
        splits = self.splits
        if splits and (a in splits or b in splits):
            return None  # a split may make this event carry fewer identifiers
        root = self.lfind(a)
        if root != self.lfind(b):
            return None
        key = (ts, eid)
        newest = self.newest.get(root)
        if newest is None or not newest < key or self.find(a) != self.find(b):
            return None
        self._seen_at(a, ts, eid)
        self._seen_at(b, ts, eid)
        self.log[root].append((ts, eid, (a, b), etype))
        self.newest[root] = key
        return (a, (), (b,), ())

    def _seen_at(self, n: int, ts: float, eid: str) -> None:
        """Widen a node's first/last seen to include ``(ts, eid)``."""
        f = self.first_ts[n]
        if ts < f or (ts == f and eid < self.first_eid[n]):
            self.first_ts[n] = ts
            self.first_eid[n] = eid
            self._touch_canon(n)
        if ts > self.last_ts[n]:
            self.last_ts[n] = ts

    def _forget(self, rec: Record) -> tuple[Any, bool, int]:
        """GDPR erasure (``forget``, docs/operator-tools.md): remove the identifier, its links,
        traits and company links; remember only a keyed hash so that no replay brings it
        back."""
        if not rec.ids:
            return None, False, 0
        k, v = rec.ids[0]
        h = self.erasure_hash(k, v)
        if h not in self.suppressed:
            self.suppressed.add(h)
            self._suppressed_hash(h)
        # a blocked value is counted by value: the count goes too
        self.blocked.pop((self.rules.kind_names[k], v), None)
        self._unblocked(self.rules.kind_names[k], v)
        n = self.nodes[k].get(v)
        if n is None:
            return None, False, 0
        root = self.lfind(n)
        entries = self.log.pop(root, [])
        self.newest.pop(root, None)
        members = {root}
        kept: list[LinkEvent] = []
        for ts, eid, nodes, etype in entries:
            members.update(nodes)
            if n in nodes:
                nodes = tuple(x for x in nodes if x != n)
                if not nodes:
                    continue  # its own reset or split: nothing left to say
            kept.append((ts, eid, nodes, etype))
        kept.append((rec.ts, rec.event_id, (), FORGET))
        self.erasures[rec.event_id] = self.rules.kind_names[k]
        self._erased(n)
        self._erase_node(n)
        live = members - {n}
        self.lparent[n] = n
        replayed = 0
        if live:
            # A new root for what is left of the component; the erased node leaves it.
            new_root = min(live)
            for m in live:
                self.lparent[m] = new_root
            self.log[new_root] = kept
            self.newest[new_root] = max((e[0], e[1]) for e in kept)
            replayed = self._replay(new_root, extra=members)[1]
        else:
            self._replay(n, extra=(n,))
        return None, True, replayed

    # Hooks for a working set, which hands what an erasure changed to its store as rows; the
    # in-place engine keeps nothing of the erased value, not even in a list nobody reads.

    def _suppressed_hash(self, h: bytes) -> None:
        """A keyed hash added to the suppression list."""

    def _unblocked(self, kind: str, value: str) -> None:
        """An erased value's blocked count dropped."""

    def _erased(self, n: int) -> None:
        """Node ``n`` is about to be erased."""

    def _erase_node(self, n: int) -> None:
        """Remove a node's value and everything hanging on it; it stays as a tombstone."""
        if n in self.dead or not 0 <= n < len(self.value):
            return
        self.traits.pop(n, None)
        self.traits_once.pop(n, None)
        self.resets.pop(n, None)
        self.splits.pop(n, None)
        for cid in self.company_links.pop(n, {}):
            # The company stays, with its traits: they describe the company, not the person.
            self.company_members.get(cid, set()).discard(n)
        self.nodes[self.kind[n]].pop(self.value[n], None)
        self.value[n] = ""
        self.first_eid[n] = ""
        self.dead.add(n)

    def _is_suppressed(self, pair: tuple[int, str]) -> bool:
        return self.erasure_hash(pair[0], pair[1]) in self.suppressed

    def erasure_hash(self, kind: int, value: str) -> bytes:
        """The keyed hash an erased identifier is remembered by (never its value)."""
        msg = f"{self.rules.kind_names[kind]}\x1f{value}".encode()
        return hmac.new(self.erasure_key, msg, hashlib.sha256).digest()

    def _fresh_pair(self, ka: int, va: str, kb: int, vb: str, rec: Record) -> Any:
        """Two identifiers never seen before, in one event (the commonest link: a new device
        identified as a new user): create them already joined, or apart if the rules refuse.
        The same result as creating two nodes and deciding the link, in fewer steps."""
        ts = rec.ts
        eid = rec.event_id
        a = len(self.value)
        b = a + 1
        refusal = self.rules.pair_refusal[ka][kb]
        joined = refusal is None
        self.nodes[ka][va] = a
        self.nodes[kb][vb] = b
        self.kind.append(ka)
        self.kind.append(kb)
        self.value.append(va)
        self.value.append(vb)
        if joined:
            self.parent.append(a)
            self.parent.append(a)
            self.nxt.append(b)
            self.nxt.append(a)
            self.size.append(2)
            self.size.append(1)
            for k, arr in self.counts.items():
                arr.append((ka == k) + (kb == k))
                arr.append(kb == k)
        else:
            self.parent.append(a)
            self.parent.append(b)
            self.nxt.append(a)
            self.nxt.append(b)
            self.size.append(1)
            self.size.append(1)
            for k, arr in self.counts.items():
                arr.append(ka == k)
                arr.append(kb == k)
        self.first_ts.append(ts)
        self.first_ts.append(ts)
        self.first_eid.append(eid)
        self.first_eid.append(eid)
        self.last_ts.append(ts)
        self.last_ts.append(ts)
        self.lparent.append(a)
        self.lparent.append(a)
        self.log[a] = [(ts, eid, (a, b), rec.etype)]
        self.newest[a] = (ts, eid)
        etype = rec.etype
        if etype == IDENTIFY and (rec.traits or rec.set_once):
            self._write_traits(a, ts, eid, rec.traits, rec.set_once)
        elif etype == COMPANY and rec.company_id is not None:
            self._write_company(a, ts, eid, rec.company_id, rec.company_traits)
        if refusal is None:
            return (a, (b,), (), ())
        refused = ((b, refusal[0], refusal[1]),)
        self.refusals[eid] = (ts, (a, b), refused)
        return (a, (), (), refused)

    def _log_single(self, n: int, key: Key, etype: int) -> int:
        root = self.lfind(n)
        self.log.setdefault(root, []).append((key[0], key[1], (n,), etype))
        return root

    def _split(self, n: int, key: Key) -> tuple[bool, int]:
        root = self._log_single(n, key, SPLIT)
        old = self.splits.get(n)
        if old is None or old < key:
            self.splits[n] = key
        self.seen_key(root, key)
        # Links dated before the split change meaning: re-decide the component.
        return True, self._replay(root)[1]

    def _reset(self, n: int, key: Key) -> tuple[bool, int]:
        root = self._log_single(n, key, RESET)
        newest = self.newest.get(root)
        if newest is None or newest < key:
            self.newest[root] = key  # the log's newest key, whatever the reset changes
        old = self.resets.get(n)
        if old is not None and old <= key:
            return False, 0  # an earlier reset already retired it: nothing can change
        self.resets[n] = key
        if newest is None or newest < key:
            return False, 0
        # Events after this reset were decided as if the id were not yet retired.
        return True, self._replay(root)[1]

    def _link(
        self, ts: float, eid: str, nodes: tuple[int, ...], etype: int
    ) -> tuple[Any, bool, int]:
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
            longest = len(log.get(root) or ())
            for r in roots[1:]:
                n = len(log.get(r) or ())
                if n > longest:
                    root, longest = r, n
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
        entry = (ts, eid, nodes, etype)
        mylog = log.get(root)
        if mylog is None:
            log[root] = [entry]
        else:
            mylog.append(entry)
        if late:
            decisions, replayed = self._replay(root, eid)
            return decisions, True, replayed
        newest[root] = key
        return self._decide(ts, eid, nodes, etype, True), False, 0

    def _decide(self, ts: float, eid: str, nodes: tuple[int, ...], etype: int, report: bool) -> Any:
        """Apply R1-R4 to one link event on the current profiles."""
        key = (ts, eid)
        logged = nodes
        splits = self.splits
        if splits:
            # Identifiers split after this event are as if the event never carried them.
            nodes = tuple(n for n in nodes if n not in splits or not key < splits[n])
            if len(nodes) < 2:
                return (nodes[0], (), (), ()) if nodes and report else None
        if etype == MERGE:
            return self._force(nodes, report)
        find = self.find
        a = nodes[0]
        ra = find(a)
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
                # only a profile that brings identifiers of the kind can break its limit (a
                # force-merged profile over the limit can still gain other identifiers)
                if arr[rx] and arr[ra] + arr[rx] > lim:
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
            self.refusals[eid] = (ts, logged, tuple(refused))
        if not report:
            return None
        return (a, joined, already, refused)

    def _force(self, nodes: tuple[int, ...], report: bool) -> Any:
        """An operator's forced merge: no limit, cap or reset applies (``merge``,
        docs/operator-tools.md)."""
        find = self.find
        a = nodes[0]
        ra = find(a)
        joined: list[int] = []
        already: list[int] = []
        for x in nodes[1:]:
            rx = find(x)
            if rx == ra:
                already.append(x)
            else:
                ra = self._union(ra, rx)
                joined.append(x)
        return (a, joined, already, []) if report else None

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

    def _replay(
        self, lroot: int, target: str | None = None, extra: Iterable[int] = ()
    ) -> tuple[Any, int]:
        """Re-decide one link component from its sorted log (R8); returns the decisions of
        the ``target`` event and how many events were replayed. ``extra`` nodes are reset
        to singletons too (an erased node that no log entry names any more)."""
        events = self._undo(lroot, extra)
        self.replays += 1
        return self._decide_log(events, target, None), len(events)

    def _decide_log(
        self,
        events: list[LinkEvent],
        target: str | None,
        record: list[tuple[LinkEvent, Any]] | None,
    ) -> Any:
        """Decide a sorted, undone log again (the one replay loop): returns the decisions
        of the ``target`` event; with ``record``, appends every entry with its decisions
        (``None`` for resets, splits and erasures, whose effect is in resets/splits)."""
        decisions: Any = None
        decide = self._decide
        for entry in events:
            ts, eid, nodes, etype = entry
            if len(nodes) < 2:
                if record is not None:
                    record.append((entry, None))
                continue
            report = record is not None or eid == target
            decided = decide(ts, eid, nodes, etype, report)
            if record is not None:
                record.append((entry, decided))
            if eid == target:
                decisions = decided
        return decisions

    def _undo(self, lroot: int, extra: Iterable[int] = ()) -> list[LinkEvent]:
        """Undo every decision of one link component (and its refusals), leaving each member
        (and each ``extra`` node) a singleton profile; returns its log, sorted, to decide
        again."""
        events = self.log.get(lroot)
        if events is None:
            events = []
        events.sort()
        members: set[int] = set(extra)
        refusals = self.refusals
        for _, eid, nodes, _ in events:
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
        return events

    def decisions_in_order(self, lroot: int) -> list[tuple[LinkEvent, Any]]:
        """Re-decide one link component from its sorted log, as ``_replay`` does, and return
        every log entry with its decisions, in ``(timestamp, event_id)`` order: what
        ``IdentityGraph.history`` shows. Link entries (two or more nodes) come with
        ``(anchor, joined, already, refused)`` as ``apply`` reports them (``None`` when later
        splits left fewer than two of its identifiers); resets, splits and erasures with
        ``None``. The state afterwards is the state ``_replay`` leaves."""
        out: list[tuple[LinkEvent, Any]] = []
        self._decide_log(self._undo(lroot), None, out)
        return out

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
                keep(mine, k, ts, eid, v)
        if set_once:
            once = self.traits_once.setdefault(n, {})
            for k, v in set_once.items():
                keep(once, k, ts, eid, v, True)

    def _write_company(
        self, n: int | None, ts: float, eid: str, cid: str, traits: dict[str, Any] | None
    ) -> None:
        """Link node ``n`` (``None``: no one, the anchor was erased) to company ``cid`` and
        write the company's traits."""
        holders = self.company_members.setdefault(cid, set())
        if n is not None:
            keep(self.company_links.setdefault(n, {}), cid, ts, eid, None)
            holders.add(n)
        ctraits = self.company_traits.setdefault(cid, {})
        if traits:
            for k, v in traits.items():
                keep(ctraits, k, ts, eid, v)

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
        dead = self.dead
        for n in range(len(parent)):
            if parent[n] == n and n not in dead:
                yield n
