"""The reference resolver: a small, slow, obviously correct implementation of the merge rules.

:class:`ReferenceResolver` keeps the accepted events and nothing else. Every read recomputes
the whole state from scratch: it sorts the events by ``(timestamp, event_id)`` and folds them
one by one exactly as the merge semantics say (docs/merge-rules.md, R1-R7), with plain dicts
and sets and a profile held as an explicit frozenset of its identifiers. There is no
union-find, no cache and no incremental replay, so there is little that can be wrong; it is
the oracle the real engine (``IdentityGraph``) is tested against.

:func:`snapshot` reads anything with the read API (``profiles()``, ``refusals()``,
``companies()``) into a plain, comparable value: two graphs are in the same state iff their
snapshots are equal.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import datetime, timezone
from typing import Any, Protocol

from identityres._events import (
    COMPANY,
    FORGET,
    IDENTIFY,
    MERGE,
    MESSAGE_FIELDS,
    RESET,
    SPLIT,
    Record,
    RecordBuilder,
    relabel,
)
from identityres._model import (
    Company,
    Event,
    Identifier,
    IdLike,
    Profile,
    Reason,
    Refusal,
)
from identityres._rules import CompiledRules, Rules
from identityres._writes import EventWriter
from identityres.errors import EventIdConflictError, ValidationError

__all__ = ["ReferenceResolver", "ResolverLike", "Snapshot", "snapshot", "snapshot_diff"]

#: An identifier inside the resolver: ``(kind_index, value)``, as in ``Record.ids``.
Node = tuple[int, str]
#: The key that orders events: ``(timestamp, event_id)``.
Key = tuple[float, str]


def _utc(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, tz=timezone.utc)


def _conflict(event_id: str) -> EventIdConflictError:
    return EventIdConflictError("event_id", event_id, "already used by an event with other content")


def _same_content(a: Record, b: Record) -> bool:
    """A duplicate, not a conflict: the same content (``Record.fingerprint`` is a hash of
    ``content``; comparing the content itself cannot be fooled by a hash collision)."""
    return a.content == b.content


class _Fold:
    """The state after folding a set of records in key order (the merge semantics, verbatim).

    Built once per read and thrown away. Attribute names follow the semantics' wording.
    """

    def __init__(self, rules: CompiledRules, records: Iterable[Record]) -> None:
        self.rules = rules
        #: every identifier -> the full member set of its profile (relabelled on merge)
        self.profile_of: dict[Node, frozenset[Node]] = {}
        #: identifier -> key of the earliest record carrying it
        self.first_key: dict[Node, Key] = {}
        #: identifier -> greatest timestamp of a record carrying it
        self.last_ts: dict[Node, float] = {}
        #: anonymous id -> key of its earliest reset
        self.reset_key: dict[Node, Key] = {}
        #: refusals in the order they were decided
        self.refusals: list[Refusal] = []
        #: identifier -> trait name -> (key, value): the regular write with the greatest key
        self.traits: dict[Node, dict[str, tuple[Key, Any]]] = {}
        #: identifier -> trait name -> (key, value): the set_once write with the smallest key
        self.set_once: dict[Node, dict[str, tuple[Key, Any]]] = {}
        #: identifier -> [(key, company_id)]: its company links
        self.company_links: dict[Node, list[tuple[Key, str]]] = {}
        #: company_id -> trait name -> (key, value): the write with the greatest key
        self.company_traits: dict[str, dict[str, tuple[Key, Any]]] = {}

        records = list(records)
        #: erased identifiers (operator ``forget``): dropped from every event, whenever dated
        self.forgotten: set[Node] = {r.ids[0] for r in records if r.etype == FORGET and r.ids}
        #: identifier -> key of its latest split: events dated before it do not carry it
        self.split_key: dict[Node, Key] = {}
        for r in records:
            if r.etype == SPLIT and r.ids:
                node, key = r.ids[0], (r.ts, r.event_id)
                if node not in self.split_key or self.split_key[node] < key:
                    self.split_key[node] = key
        for record in sorted(records, key=lambda r: (r.ts, r.event_id)):
            if record.etype != FORGET:
                self._apply(record)

    # -- the fold ----------------------------------------------------------------------------

    def _apply(self, r: Record) -> None:
        key: Key = (r.ts, r.event_id)
        ids = tuple(n for n in r.ids if n not in self.forgotten)
        anchor_erased = bool(r.ids) and r.ids[0] in self.forgotten

        # 1. nodes, first_seen, last_seen
        for node in ids:
            if node not in self.profile_of:
                self.profile_of[node] = frozenset({node})
            if node not in self.first_key or key < self.first_key[node]:
                self.first_key[node] = key
            if node not in self.last_ts or r.ts > self.last_ts[node]:
                self.last_ts[node] = r.ts

        # 2. reset: the earliest reset key of an anonymous id is what counts
        if r.etype == RESET:
            for node in ids:
                if node[0] == self.rules.anon and (
                    node not in self.reset_key or key < self.reset_key[node]
                ):
                    self.reset_key[node] = key

        # 3. links, without identifiers split off after this event
        linked = tuple(n for n in ids if n not in self.split_key or not key < self.split_key[n])
        if len(linked) >= 2:
            self._link(r, key, linked)

        # 4. traits of an identify belong to its anchor (erased with it)
        if r.etype == IDENTIFY and ids and not anchor_erased:
            anchor = ids[0]
            for name, value in (r.traits or {}).items():
                slot = self.traits.setdefault(anchor, {})
                if name not in slot or key > slot[name][0]:
                    slot[name] = (key, value)
            for name, value in (r.set_once or {}).items():
                slot = self.set_once.setdefault(anchor, {})
                if name not in slot or key < slot[name][0]:
                    slot[name] = (key, value)

        # 5. companies: link the anchor; company traits, greatest key wins
        if r.etype == COMPANY and r.company_id is not None and r.ids:
            cid = r.company_id
            if not anchor_erased:
                self.company_links.setdefault(r.ids[0], []).append((key, cid))
            ctraits = self.company_traits.setdefault(cid, {})
            for name, value in (r.company_traits or {}).items():
                if name not in ctraits or key > ctraits[name][0]:
                    ctraits[name] = (key, value)

    def _retired(self, node: Node, key: Key) -> bool:
        return node[0] == self.rules.anon and node in self.reset_key and self.reset_key[node] < key

    def _count(self, members: frozenset[Node], kind: int) -> int:
        return sum(1 for k, _ in members if k == kind)

    def _broken_limit(self, pa: frozenset[Node], px: frozenset[Node]) -> int | None:
        """The first kind, in priority order, whose limit joining ``pa`` and ``px`` breaks."""
        for kind in range(len(self.rules.kind_names)):
            limit = self.rules.limits[kind]
            if limit is None:
                continue
            added = self._count(px, kind)
            if added and self._count(pa, kind) + added > limit:
                return kind
        return None

    def _link(self, r: Record, key: Key, ids: tuple[Node, ...]) -> None:
        names = self.rules.kind_names
        a = ids[0]
        for x in ids[1:]:
            pa = self.profile_of[a]
            px = self.profile_of[x]
            reason: Reason | None = None
            limit_kind: int | None = None
            if x in pa:
                continue  # already joined
            if r.etype == MERGE:
                pass  # the operator's forced merge: no rule refuses it
            elif self._retired(a, key) or self._retired(x, key):
                reason = Reason.ANONYMOUS_ID_RESET
            else:
                limit_kind = self._broken_limit(pa, px)
                if limit_kind is not None:
                    reason = Reason.LIMIT_EXCEEDED
                elif (
                    self.rules.max_profile_size is not None
                    and len(pa) + len(px) > self.rules.max_profile_size
                ):
                    reason = Reason.PROFILE_SIZE_LIMIT
            if reason is not None:
                self.refusals.append(
                    Refusal(
                        r.event_id,
                        Identifier(names[x[0]], x[1]),
                        Identifier(names[a[0]], a[1]),
                        reason,
                        None if limit_kind is None else names[limit_kind],
                    )
                )
                continue
            merged = pa | px
            for node in merged:
                self.profile_of[node] = merged

    # -- reading the folded state --------------------------------------------------------------

    def canonical(self, members: frozenset[Node]) -> Node:
        return min(members, key=lambda n: (n[0], self.first_key[n], n[1]))

    def profile_sets(self) -> list[frozenset[Node]]:
        """Every profile's member set, ordered by (canonical kind priority, canonical value)."""
        distinct = set(self.profile_of.values())
        # The canonical id is a (kind_index, value) node, and kind_index is the priority.
        return sorted(distinct, key=self.canonical)

    def profile(self, members: frozenset[Node]) -> Profile:
        rules = self.rules
        names = rules.kind_names
        canon = self.canonical(members)
        users = [n for n in members if n[0] == rules.user]
        identified = min(users, key=lambda n: (self.first_key[n], n[1]))[1] if users else None

        by_kind: dict[str, set[str]] = {}
        for kind, value in members:
            by_kind.setdefault(names[kind], set()).add(value)

        trait_names = set()
        for n in members:
            trait_names |= set(self.traits.get(n, {})) | set(self.set_once.get(n, {}))
        traits: dict[str, Any] = {}
        for name in sorted(trait_names):
            regular = [self.traits[n][name] for n in members if name in self.traits.get(n, {})]
            if regular:
                traits[name] = max(regular, key=lambda kv: kv[0])[1]
            else:
                once = [self.set_once[n][name] for n in members if name in self.set_once.get(n, {})]
                traits[name] = min(once, key=lambda kv: kv[0])[1]

        links = [link for n in members for link in self.company_links.get(n, [])]
        company_id = max(links, key=lambda link: link[0])[1] if links else None

        return Profile(
            user_id=canon[1],
            user_id_kind=names[canon[0]],
            identified_user_id=identified,
            anonymous_ids=frozenset(by_kind.get(names[rules.anon], set())),
            identifiers={kind: frozenset(values) for kind, values in by_kind.items()},
            company_id=company_id,
            company_ids=frozenset(cid for _, cid in links),
            traits=traits,
            first_seen=_utc(min(self.first_key[n][0] for n in members)),
            last_seen=_utc(max(self.last_ts[n] for n in members)),
        )

    def company(self, company_id: str) -> Company | None:
        if company_id not in self.company_traits:  # created by the first link, and only so
            return None
        holders = [
            n for n, links in self.company_links.items() if any(c == company_id for _, c in links)
        ]
        profiles = frozenset(self.canonical(self.profile_of[n])[1] for n in holders)
        traits = {name: kv[1] for name, kv in sorted(self.company_traits[company_id].items())}
        return Company(company_id=company_id, traits=traits, profiles=profiles)


class ReferenceResolver(EventWriter[None]):
    """The oracle: the same write and read API as ``IdentityGraph``, computed the slow way.

    It stores the accepted :class:`~identityres._events.Record` objects by ``event_id`` and
    recomputes everything on each read. Writes return ``None``. Input is validated exactly as
    the graph validates it (both use ``RecordBuilder``), and a failing write changes nothing.
    """

    def __init__(
        self,
        rules: Rules | None = None,
        *,
        clock: Callable[[], datetime | float | int] | None = None,
    ) -> None:
        self.rules = Rules() if rules is None else rules
        self._compiled = self.rules.compiled
        self._build = RecordBuilder(self._compiled, clock or time.time)
        #: event_id -> accepted record
        self._records: dict[str, Record] = {}

    # -- writing ------------------------------------------------------------------------------

    @property
    def records(self) -> tuple[Record, ...]:
        """The accepted records, in arrival order (duplicates left out)."""
        return tuple(self._records.values())

    def _submit(self, record: Record) -> None:
        self._accept(record)

    def _accept(self, record: Record) -> None:
        seen = self._records.get(record.event_id)
        if seen is None:
            self._records[record.event_id] = record
        elif not _same_content(seen, record):
            raise _conflict(record.event_id)
        # else: a duplicate, ignored

    def ingest(self, events: Iterable[Event | Mapping[str, Any]]) -> None:
        """Apply a batch of event objects and/or Segment-spec dicts, all or nothing.

        The first bad event raises its ``ValidationError`` with ``index`` set (field names
        relabelled to message keys for dicts); then nothing of the batch is applied.
        """
        batch: dict[str, Record] = {}
        for index, event in enumerate(events):
            try:
                record = self._build.from_object(event)
                earlier = batch.get(record.event_id)
                if earlier is None:
                    earlier = self._records.get(record.event_id)
                if earlier is not None and not _same_content(earlier, record):
                    raise _conflict(record.event_id)
            except ValidationError as exc:
                if isinstance(event, Mapping):
                    relabel(exc, MESSAGE_FIELDS)
                raise exc.at_index(index) from None
            batch.setdefault(record.event_id, record)
        for record in batch.values():
            self._accept(record)

    # -- reading ------------------------------------------------------------------------------

    def _fold(self) -> _Fold:
        return _Fold(self._compiled, self._records.values())

    def _node(self, user_id: IdLike | None, anonymous_id: IdLike | None, identifier: Any) -> Node:
        return self._build.lookup(user_id, anonymous_id, identifier)

    def profiles(self) -> Iterator[Profile]:
        """Every profile, by (priority of the canonical id's kind, canonical id)."""
        fold = self._fold()
        return iter([fold.profile(members) for members in fold.profile_sets()])

    def profile(
        self,
        *,
        user_id: IdLike | None = None,
        anonymous_id: IdLike | None = None,
        identifier: Identifier | tuple[str, IdLike] | None = None,
    ) -> Profile | None:
        """The profile holding this identifier (give exactly one), or ``None`` if unseen."""
        node = self._node(user_id, anonymous_id, identifier)
        fold = self._fold()
        members = fold.profile_of.get(node)
        return None if members is None else fold.profile(members)

    def resolve(
        self,
        *,
        user_id: IdLike | None = None,
        anonymous_id: IdLike | None = None,
        identifier: Identifier | tuple[str, IdLike] | None = None,
    ) -> str | None:
        """The canonical id (``profile.user_id``) of the profile holding this identifier."""
        found = self.profile(user_id=user_id, anonymous_id=anonymous_id, identifier=identifier)
        return None if found is None else found.user_id

    def refusals(self) -> Iterator[Refusal]:
        """Every refusal, in event-key order, then in the event's identifier (priority) order."""
        return iter(self._fold().refusals)

    def blocked_counts(self) -> Counter[tuple[str, str]]:
        """How often each blocked ``(kind, value)`` was seen (what ``stats().blocked_values``
        counts, there by ``"kind:preview"``): once per accepted event carrying it, except
        that a value ever forgotten is not counted at all. A forget of a blocked value
        applies, like a forget of an identifier, to the events dated before it and to those
        dated after it alike (docs/operator-tools.md): the count is a function of the set of
        events, whatever their order."""
        names = self._compiled.kind_names
        records = self._records.values()
        forgotten = {(names[r.ids[0][0]], r.ids[0][1]) for r in records if r.etype == FORGET}
        counts: Counter[tuple[str, str]] = Counter()
        for r in records:
            for kind, value, _ in r.blocked:
                if (kind, value) not in forgotten:
                    counts[(kind, value)] += 1
        return counts

    def company(self, company_id: IdLike) -> Company | None:
        """A company with its traits and the canonical ids of its profiles, or ``None``."""
        rules = self._compiled
        cid = self._build.identifier_value("company_id", rules.user, company_id)
        return self._fold().company(cid)

    def companies(self) -> Iterator[Company]:
        """Every company, by id."""
        fold = self._fold()
        found = (fold.company(cid) for cid in sorted(fold.company_traits))
        return iter([c for c in found if c is not None])


# -- snapshots ---------------------------------------------------------------------------------


class ResolverLike(Protocol):
    """What :func:`snapshot` reads: the read API of ``IdentityGraph`` and the reference."""

    def profiles(self) -> Iterator[Profile]: ...

    def refusals(self) -> Iterator[Refusal]: ...

    def companies(self) -> Iterator[Company]: ...


Snapshot = dict[str, Any]
"""``{"profiles": frozenset[tuple], "refusals": tuple[tuple, ...], "companies": dict}``."""


def _comparable(value: Any) -> Any:
    """``value`` itself if it is hashable and equal to itself, else its ``repr``."""
    try:
        hash(value)
    except TypeError:
        return repr(value)
    if value != value:  # NaN, or anything else not equal to itself
        return repr(value)
    return value


def _traits(traits: Mapping[str, Any]) -> tuple[tuple[str, Any], ...]:
    return tuple(sorted((name, _comparable(value)) for name, value in traits.items()))


def snapshot(resolver: ResolverLike) -> Snapshot:
    """The state of anything with the read API, as a plain, order-independent value.

    * ``profiles``: a frozenset of ``(user_id_kind, user_id, identified_user_id,
      frozenset((kind, value), ...), company_id, frozenset(company_ids), sorted traits items,
      first_seen, last_seen)``; unhashable trait values are compared by ``repr``;
    * ``refusals``: a tuple, in the order ``refusals()`` gives, of ``(event_id, (kind, value),
      (anchor kind, anchor value), reason, limit kind or None)``;
    * ``companies``: ``{company_id: (sorted traits items, frozenset(profile canonical ids))}``.

    Two graphs are in the same state iff their snapshots are equal.
    """
    profiles = frozenset(
        (
            p.user_id_kind,
            p.user_id,
            p.identified_user_id,
            frozenset((kind, value) for kind, values in p.identifiers.items() for value in values),
            p.company_id,
            frozenset(p.company_ids),
            _traits(p.traits),
            p.first_seen,
            p.last_seen,
        )
        for p in resolver.profiles()
    )
    refusals = tuple(
        (
            r.event_id,
            (r.identifier.kind, r.identifier.value),
            (r.anchor.kind, r.anchor.value),
            str(r.reason),
            r.kind,
        )
        for r in resolver.refusals()
    )
    companies = {
        c.company_id: (_traits(c.traits), frozenset(c.profiles)) for c in resolver.companies()
    }
    return {"profiles": profiles, "refusals": refusals, "companies": companies}


def snapshot_diff(expected: Snapshot, actual: Snapshot) -> str:
    """A readable account of how two snapshots differ ("" when they are equal)."""
    lines: list[str] = []
    missing = expected["profiles"] - actual["profiles"]
    extra = actual["profiles"] - expected["profiles"]
    for label, items in (("missing profile", missing), ("unexpected profile", extra)):
        lines.extend(f"{label}: {item!r}" for item in sorted(items, key=repr))
    if expected["refusals"] != actual["refusals"]:
        lines.append("refusals differ:")
        lines.append(f"  expected: {expected['refusals']!r}")
        lines.append(f"  actual:   {actual['refusals']!r}")
    for cid in sorted(set(expected["companies"]) | set(actual["companies"])):
        want, got = expected["companies"].get(cid), actual["companies"].get(cid)
        if want != got:
            lines.append(f"company {cid!r}: expected {want!r}, actual {got!r}")
    return "\n".join(lines)
