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

All or nothing. A write that raises leaves the state
exactly as it was. The fast paths (``_seen_again``) only read until their last call that can
fail, then commit with plain container writes. The general path records an undo *journal*
of every fact it overwrites (first/last seen, traits, company links, blocked counts, the
link union-find, logs, newest keys, resets, splits, erasures); on failure ``rollback`` plays
it backwards, removes the nodes the write created (arrays are only appended to: truncating
them to their old length is their undo), and re-decides each touched link component from
its restored log, which re-derives the profile union-find and the refusals (they are a
function of the log, R8), so the hot ``_decide``/``_union`` journal nothing. A *savepoint*
(``savepoint``/``rollback``/``release``) does the same for a whole ``ingest`` call: inside
one, the fast paths journal too.

This module keeps its state in memory; the storage protocol (issue #3) lifts the same
state behind batched load/store calls.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from array import array
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from operator import setitem
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

#: An undo journal, played backwards by ``restore``: a flat list of entries, each its
#: arguments, then the function to call with them, then their number (``j += (d, k, old,
#: _put, 3)``); the fast paths' entries inside a savepoint end in a negative code instead
#: (``_FAST_ONE``, ``_FAST_PAIR``). Flat, an ingest's journal is one list, not an object per
#: entry for the garbage collector to track (which made ``ingest()`` a quarter slower).
Journal = list[Any]
_FAST_ONE = -1
_FAST_PAIR = -2
#: How many characters of a long blocked value are kept (a preview, with a hash: ``blocked_key``).
BLOCKED_PREVIEW = 64
_ABSENT: Any = object()


def _put(mapping: Any, key: Any, old: Any) -> None:
    """Undo of a write to ``mapping[key]``: put back ``old`` (``_ABSENT``: no entry)."""
    if old is _ABSENT:
        mapping.pop(key, None)
    else:
        mapping[key] = old


def _cut(items: list[Any], length: int) -> None:
    """Undo of appends to a list: cut it back to ``length``."""
    del items[length:]


def _keyed_hash(key: bytes, kind: str, value: str) -> bytes:
    msg = f"{kind}\x1f{value}".encode("utf-8", "surrogatepass")
    return hmac.new(key, msg, hashlib.sha256).digest()


def blocked_key(value: str) -> str:
    """What a store keeps of a blocked value, and ``stats().blocked_values`` shows: the value
    itself up to :data:`BLOCKED_PREVIEW` characters; a longer one as its first 64
    characters, ``…#`` and 16 hex digits of a SHA-256 of the whole value, so that two long
    values with one beginning are counted apart and a 1 MB value costs a few dozen bytes.
    (Not keyed: every store shows one value alike; the first 64 characters are shown
    anyway, and a forgotten value's count goes with its preview.)"""
    if len(value) <= BLOCKED_PREVIEW:
        return value
    digest = hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()[:16]
    return f"{value[:BLOCKED_PREVIEW]}\u2026#{digest}"


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
        #: (kind name, ``blocked_key`` of the value) -> how many events carried it; a value
        #: once forgotten is never counted again (its keyed hash is in ``suppressed``)
        self.blocked = Counter[tuple[str, str]]()
        self.replays = 0
        #: the undo journal of the write in progress (``None``: none is kept)
        self._journal: Journal | None = None

    #: whether a failed ``apply`` undoes itself; a working set's batch is thrown away instead
    undoable = True

    # -- nodes ----------------------------------------------------------------------------

    def node(self, kind: int, value: str) -> int | None:
        return self.nodes[kind].get(value)

    def new_node(self, kind: int, value: str, ts: float, eid: str) -> int:
        """A new node; all or nothing (arrays first, the value's entry last)."""
        n = len(self.value)
        try:
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
        except BaseException:
            self._truncate(n)
            raise
        self.nodes[kind][value] = n
        return n

    def _node_arrays(self) -> list[Any]:
        return [
            self.kind,
            self.value,
            self.parent,
            self.nxt,
            self.size,
            *self.counts.values(),
            self.first_ts,
            self.first_eid,
            self.last_ts,
            self.lparent,
        ]

    def _truncate(self, mark: int) -> None:
        """Drop the nodes from ``mark`` on from every per-node array (undo of appends)."""
        for arr in self._node_arrays():
            del arr[mark:]

    def drop_log(self, lroot: int) -> None:
        """Forget a link component's log, refusals and newest key (rows replace them)."""
        for _, eid, _, _ in self.log.pop(lroot, ()):
            self.refusals.pop(eid, None)
        self.newest.pop(lroot, None)

    def seen_key(self, lroot: int, key: Key) -> None:
        """Widen a link component's newest key to include ``key``."""
        top = self.newest.get(lroot)
        if top is None or top < key:
            if self._journal is not None:
                self._journal += (self.newest, lroot, _ABSENT if top is None else top, _put, 3)
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
        if p == n:
            return n
        # Path halving is journaled like any write: a rollback that left a halved pointer
        # would leave a node in a component it had joined only in the undone batch, or
        # pointing at a node the rollback removed.
        j = self._journal
        while p != n:
            gp = parent[p]
            if gp != p:
                if j is not None:
                    j += (parent, n, p, setitem, 3)
                parent[n] = gp
            n = p
            p = gp
        return n

    # -- applying one event -----------------------------------------------------------------

    def apply(self, rec: Record, journal: Journal | None = None) -> tuple[Any, bool, int]:
        """Apply a validated, not yet seen record. Returns ``(decisions, late, replayed)``.

        All or nothing: if it raises, the state is as it was. Alone (no ``journal``) a
        failed apply undoes itself; inside a :meth:`savepoint` (its ``journal``) every
        change is journaled there and the savepoint's owner rolls back."""
        eid = rec.event_id
        etype = rec.etype
        if etype <= IDENTIFY and rec.traits is None and rec.set_once is None and not rec.blocked:
            fast = self._seen_again(rec, rec.ts, eid, etype, journal)
            if fast is not None:
                self.seen[eid] = rec.fingerprint
                return fast, False, 0
        if journal is not None or not self.undoable:
            out = self._apply(rec)
        else:
            mark = len(self.value)
            j: Journal = []
            self._journal = j
            try:
                out = self._apply(rec)
            except BaseException:
                self.rollback(mark, j, (rec,))
                raise
            self._journal = None
        self.seen[eid] = rec.fingerprint
        return out

    def savepoint(self) -> tuple[int, Journal]:
        """Start journaling several applies (pass the journal to each): ``rollback`` undoes
        them all, ``release`` keeps them."""
        j: Journal = []
        self._journal = j
        return len(self.value), j

    def release(self) -> None:
        """End a savepoint, keeping what was applied."""
        self._journal = None

    def rollback(self, mark: int, journal: Journal, recs: Sequence[Record]) -> None:
        """Undo the applies of ``recs`` (the records whose apply began since ``mark`` and
        ``journal`` were taken): play the journal backwards, remove the nodes they created,
        forget their event ids and re-decide each link component they touched from its
        restored log (the profile union-find and refusals are a function of the log)."""
        self.restore(mark, journal)
        for rec in recs:
            self.seen.pop(rec.event_id, None)
            self.refusals.pop(rec.event_id, None)
        nodes = self.nodes
        touched: dict[int, list[int]] = {}
        for rec in recs:
            for k, v in rec.ids:
                n = nodes[k].get(v)
                if n is not None:
                    touched.setdefault(self.lfind(n), []).append(n)
        for root, extra in touched.items():
            self._decide_log(self._undo(root, extra), None, None)

    def restore(self, mark: int, journal: Journal) -> None:
        """Play ``journal`` backwards and remove the nodes made since ``mark`` (arrays are
        only appended to, and a node's value entry is made last); what the journal does not
        cover (the profile union-find, refusals) the caller re-derives."""
        self._journal = None
        j = journal
        last = self.last_ts
        i = len(j)
        while i:
            code = j[i - 1]
            if code == _FAST_ONE:
                last[j[i - 3]] = j[i - 2]
                i -= 3
            elif code == _FAST_PAIR:
                a, last_a, b, last_b, root, newest = j[i - 7 : i - 1]
                last[a] = last_a
                last[b] = last_b
                self.log[root].pop()
                self.newest[root] = newest
                i -= 7
            else:
                start = i - 2 - code
                j[i - 2](*j[start : i - 2])
                i = start
        journal.clear()
        nodes = self.nodes
        kind = self.kind
        value = self.value
        for n in range(mark, len(value)):
            by_value = nodes[kind[n]]
            if by_value.get(value[n]) == n:
                del by_value[value[n]]
        end = max(len(arr) for arr in self._node_arrays())
        for n in range(mark, end):
            for per_node in (
                self.log,
                self.newest,
                self.canon,
                self.traits,
                self.traits_once,
                self.company_links,
                self.resets,
                self.splits,
            ):
                per_node.pop(n, None)
        self._truncate(mark)

    def _apply(self, rec: Record) -> tuple[Any, bool, int]:
        """The general path of :meth:`apply` (journaled when ``self._journal`` is set)."""
        ts = rec.ts
        eid = rec.event_id
        etype = rec.etype
        if rec.blocked:
            self._count_blocked(rec.blocked)
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
            if etype == COMPANY and rec.company_id is not None and not rec.ids and not rec.blocked:
                # a company's own traits, with no member (another platform's group update,
                # docs/formats.md)
                self._write_company(None, ts, eid, rec.company_id, rec.company_traits)
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

    def _seen_again(
        self, rec: Record, ts: float, eid: str, etype: int, journal: Journal | None
    ) -> Any:
        """The commonest events, decided without the general machinery: a track of one
        identifier, and a track or identify of two known identifiers already in one
        profile, newer than everything their link component has seen and than the first
        sighting of each. Returns the decisions, or ``None`` when the event needs the
        general path (nothing changed). All or nothing: everything is read before the
        commit, made of plain writes (journaled in ``journal`` inside a savepoint)."""
        ids = rec.ids
        if len(ids) == 1:
            k, v = ids[0]
            n = self.nodes[k].get(v)
            if n is None:
                if self.suppressed:  # a new value may be a forgotten one
                    return None
                # all or nothing by itself; a savepoint's rollback truncates it
                return (self.new_node(k, v, ts, eid), (), (), ())
            # a value in the graph was never forgotten
            if ts <= self.first_ts[n]:
                return None  # it may move the first sighting (and the canonical id)
            last = self.last_ts
            old = last[n]
            if ts > old:
                if journal is not None:
                    journal += (n, old, _FAST_ONE)
                last[n] = ts
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
        first = self.first_ts
        if ts <= first[a] or ts <= first[b]:
            return None  # it may move a first sighting (and the canonical id)
        mylog = self.log[root]
        last = self.last_ts
        if journal is not None:
            journal += (a, last[a], b, last[b], root, newest, _FAST_PAIR)
        # the commit: plain writes, nothing that can fail
        if ts > last[a]:
            last[a] = ts
        if ts > last[b]:
            last[b] = ts
        mylog.append((ts, eid, (a, b), etype))
        self.newest[root] = key
        return (a, (), (b,), ())

    def _count_blocked(self, blocked: tuple[tuple[str, str, Reason], ...]) -> None:
        """Count the blocked values of an event, by ``blocked_key``; a value once forgotten
        is never counted again, whenever dated (as a forgotten identifier is dropped from
        every event), so the count does not depend on arrival order (R8)."""
        counts = self.blocked
        suppressed = self.suppressed
        j = self._journal
        for kind, value, _ in blocked:
            if suppressed and self.name_hash(kind, value) in suppressed:
                continue
            key = (kind, blocked_key(value))
            if j is not None:
                j += (counts, key, counts.get(key, _ABSENT), _put, 3)
            counts[key] += 1

    def _seen_at(self, n: int, ts: float, eid: str) -> None:
        """Widen a node's first/last seen to include ``(ts, eid)``."""
        j = self._journal
        f = self.first_ts[n]
        if ts < f or (ts == f and eid < self.first_eid[n]):
            if j is not None:
                j += (self.first_ts, n, f, setitem, 3)
                j += (self.first_eid, n, self.first_eid[n], setitem, 3)
            self.first_ts[n] = ts
            self.first_eid[n] = eid
            self._touch_canon(n)
        last = self.last_ts[n]
        if ts > last:
            if j is not None:
                j += (self.last_ts, n, last, setitem, 3)
            self.last_ts[n] = ts

    def _forget(self, rec: Record) -> tuple[Any, bool, int]:
        """GDPR erasure (``forget``, docs/operator-tools.md): remove the identifier, its links,
        traits and company links; remember only a keyed hash so that no replay brings it
        back."""
        if not rec.ids:
            return None, False, 0
        j = self._journal
        k, v = rec.ids[0]
        kind_name = self.rules.kind_names[k]
        h = self.erasure_hash(k, v)
        if h not in self.suppressed:
            if j is not None:
                j += (self.suppressed, h, set.discard, 2)
            self.suppressed.add(h)
            self._suppressed_hash(h)
        # a blocked value's count goes too, and it is never counted again (its hash is
        # suppressed): not even a preview of it is kept
        bkey = (kind_name, blocked_key(v))
        if bkey in self.blocked:
            if j is not None:
                j += (self.blocked, bkey, self.blocked[bkey], _put, 3)
            del self.blocked[bkey]
        self._unblocked(*bkey)
        n = self.nodes[k].get(v)
        if n is None:
            return None, False, 0
        root = self.lfind(n)
        entries = self.log.pop(root, None)
        old_newest = self.newest.pop(root, _ABSENT)
        if j is not None:
            j += (self.log, root, _ABSENT if entries is None else entries, _put, 3)
            j += (self.newest, root, old_newest, _put, 3)
        if entries is None:
            entries = []
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
        if j is not None:
            j += (self.erasures, rec.event_id, None, dict.pop, 3)
        self.erasures[rec.event_id] = kind_name
        self._erased(n)
        self._erase_node(n)
        live = members - {n}
        lparent = self.lparent
        if j is not None:
            for m in members:
                j += (lparent, m, lparent[m], setitem, 3)
        lparent[n] = n
        replayed = 0
        if live:
            # A new root for what is left of the component; the erased node leaves it.
            new_root = min(live)
            for m in live:
                lparent[m] = new_root
            if j is not None:
                j += (self.log, new_root, self.log.get(new_root, _ABSENT), _put, 3)
                j += (self.newest, new_root, self.newest.get(new_root, _ABSENT), _put, 3)
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
        j = self._journal
        if j is not None:
            for per_node in (self.traits, self.traits_once, self.resets, self.splits):
                j += (per_node, n, per_node.get(n, _ABSENT), _put, 3)
            j += (self.company_links, n, self.company_links.get(n, _ABSENT), _put, 3)
            j += (self.nodes[self.kind[n]], self.value[n], n, _put, 3)
            j += (self.value, n, self.value[n], setitem, 3)
            j += (self.first_eid, n, self.first_eid[n], setitem, 3)
            j += (self.dead, n, set.discard, 2)
        self.traits.pop(n, None)
        self.traits_once.pop(n, None)
        self.resets.pop(n, None)
        self.splits.pop(n, None)
        for cid in self.company_links.pop(n, {}):
            # The company stays, with its traits: they describe the company, not the person.
            holders = self.company_members.get(cid)
            if holders is not None and n in holders:
                if j is not None:
                    j += (holders, n, set.add, 2)
                holders.discard(n)
        self.nodes[self.kind[n]].pop(self.value[n], None)
        self.value[n] = ""
        self.first_eid[n] = ""
        self.dead.add(n)

    def _is_suppressed(self, pair: tuple[int, str]) -> bool:
        return self.erasure_hash(pair[0], pair[1]) in self.suppressed

    def erasure_hash(self, kind: int, value: str) -> bytes:
        """The keyed hash an erased identifier is remembered by (never its value)."""
        return _keyed_hash(self.erasure_key, self.rules.kind_names[kind], value)

    def name_hash(self, kind: str, value: str) -> bytes:
        """:meth:`erasure_hash` by kind name (a blocked value's kind may be ``company_id``)."""
        return _keyed_hash(self.erasure_key, kind, value)

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
        self.nodes[ka][va] = a  # (the value entries last: see ``restore``)
        self.nodes[kb][vb] = b
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
        j = self._journal
        mylog = self.log.get(root)
        if mylog is None:
            if j is not None:
                j += (self.log, root, None, dict.pop, 3)
            mylog = self.log[root] = []
        elif j is not None:
            j += (mylog, len(mylog), _cut, 2)
        mylog.append((key[0], key[1], (n,), etype))
        return root

    def _split(self, n: int, key: Key) -> tuple[bool, int]:
        root = self._log_single(n, key, SPLIT)
        old = self.splits.get(n)
        if old is None or old < key:
            if self._journal is not None:
                self._journal += (self.splits, n, _ABSENT if old is None else old, _put, 3)
            self.splits[n] = key
        self.seen_key(root, key)
        # Links dated before the split change meaning: re-decide the component.
        return True, self._replay(root)[1]

    def _reset(self, n: int, key: Key) -> tuple[bool, int]:
        root = self._log_single(n, key, RESET)
        j = self._journal
        newest = self.newest.get(root)
        if newest is None or newest < key:
            if j is not None:
                j += (self.newest, root, _ABSENT if newest is None else newest, _put, 3)
            self.newest[root] = key  # the log's newest key, whatever the reset changes
        old = self.resets.get(n)
        if old is not None and old <= key:
            return False, 0  # an earlier reset already retired it: nothing can change
        if j is not None:
            j += (self.resets, n, _ABSENT if old is None else old, _put, 3)
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
        j = self._journal
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
                if j is not None:
                    j += (self.lparent, r, r, setitem, 3)  # r was a root
                self.lparent[r] = root
                small = log.pop(r, None)
                if small is not None and j is not None:
                    j += (log, r, small, setitem, 3)
                if small:
                    if big is None:
                        if j is not None:
                            j += (log, root, None, dict.pop, 3)
                            j += (small, len(small), _cut, 2)
                        big = log[root] = small
                    else:
                        if j is not None:
                            j += (big, len(big), _cut, 2)
                        big.extend(small)
                old = newest.pop(r, _ABSENT)
                if j is not None and old is not _ABSENT:
                    j += (newest, r, old, setitem, 3)
            if top is not None:
                if j is not None:
                    j += (newest, root, newest.get(root, _ABSENT), _put, 3)
                newest[root] = top
        entry = (ts, eid, nodes, etype)
        mylog = log.get(root)
        if mylog is None:
            if j is not None:
                j += (log, root, None, dict.pop, 3)
            log[root] = [entry]
        else:
            if j is not None:
                j += (mylog, len(mylog), _cut, 2)
            mylog.append(entry)
        if late:
            decisions, replayed = self._replay(root, eid)
            return decisions, True, replayed
        if j is not None:
            j += (newest, root, newest.get(root, _ABSENT), _put, 3)
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
        if self._journal is not None:
            self._journal += (self, "replays", self.replays, setattr, 3)
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
        elif self._journal is not None:
            # (the journal's cuts of this log assume its order)
            self._journal += (events, slice(None), events[:], setitem, 3)
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
        j = self._journal
        if traits:
            mine = self._slot(self.traits, n, j)
            for k, v in traits.items():
                if j is not None:
                    j += (mine, k, mine.get(k, _ABSENT), _put, 3)
                keep(mine, k, ts, eid, v)
        if set_once:
            once = self._slot(self.traits_once, n, j)
            for k, v in set_once.items():
                if j is not None:
                    j += (once, k, once.get(k, _ABSENT), _put, 3)
                keep(once, k, ts, eid, v, True)

    @staticmethod
    def _slot(mapping: dict[Any, Any], key: Any, j: Journal | None) -> Any:
        """``mapping.setdefault(key, {})``, journaled."""
        slot = mapping.get(key)
        if slot is None:
            if j is not None:
                j += (mapping, key, None, dict.pop, 3)
            slot = mapping[key] = {}
        return slot

    def _write_company(
        self, n: int | None, ts: float, eid: str, cid: str, traits: dict[str, Any] | None
    ) -> None:
        """Link node ``n`` (``None``: no one, the anchor was erased) to company ``cid`` and
        write the company's traits."""
        j = self._journal
        holders = self.company_members.get(cid)
        if holders is None:
            if j is not None:
                j += (self.company_members, cid, None, dict.pop, 3)
            holders = self.company_members[cid] = set()
        if n is not None:
            links = self._slot(self.company_links, n, j)
            if j is not None:
                j += (links, cid, links.get(cid, _ABSENT), _put, 3)
                if n not in holders:
                    j += (holders, n, set.discard, 2)
            keep(links, cid, ts, eid, None)
            holders.add(n)
        ctraits = self._slot(self.company_traits, cid, j)
        if traits:
            for k, v in traits.items():
                if j is not None:
                    j += (ctraits, k, ctraits.get(k, _ABSENT), _put, 3)
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
