"""Row types of the storage protocol: what a store keeps (see ``storage/_protocol.py``).

They live outside the ``storage`` package so that the engine can build and read rows
without importing the stores.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

import attrs

__all__ = [
    "BlockedCount",
    "Changes",
    "CompanyLinkRow",
    "CompanyRows",
    "CompanyTraitRow",
    "ComponentRows",
    "CountDeltas",
    "Counts",
    "EventRow",
    "LinkRow",
    "NodeRow",
    "ProfileRows",
    "RefusedMember",
    "RetryBatch",
    "TraitRow",
]


class RetryBatch(Exception):
    """Raised by a store when a concurrent batch changed what this batch loaded."""


@attrs.frozen
class NodeRow:
    """One identifier and where it stands."""

    ref: int
    kind: str
    value: str
    #: key of the earliest event carrying it (R5)
    first_ts: float
    first_event_id: str
    #: timestamp of the latest event carrying it
    last_ts: float
    #: key of its earliest reset (anonymous ids only; R4)
    reset_ts: float | None
    reset_event_id: str | None
    #: ref of its link component's root and of its profile's root
    component: int
    profile: int
    #: key of its latest split (operator ``split``): links dated before it are severed
    split_ts: float | None = None
    split_event_id: str | None = None


class RefusedMember(NamedTuple):
    """One identifier a link event did not join, and why (``LinkRow.refused``)."""

    #: its position in ``LinkRow.members``
    position: int
    #: the reason code (``identityres.Reason`` values: ``limit_exceeded``, ...)
    reason: str
    #: for ``limit_exceeded``: the kind whose limit it would have broken
    limit_kind: str | None


class EventRow(NamedTuple):
    """An applied event: its id and content fingerprint (``Changes.events``)."""

    event_id: str
    fingerprint: bytes


class BlockedCount(NamedTuple):
    """How many more times a batch saw a blocked value (``Changes.blocked``)."""

    kind: str
    #: what is kept of the value: itself up to 64 characters, else its first 64 characters,
    #: ``…#`` and 16 hex digits of a keyed hash of the whole value (the store's erasure
    #: key); the key of the count, and what ``stats().blocked_values`` shows
    value: str
    #: how many more times it was seen
    added: int


@attrs.frozen
class LinkRow:
    """One entry of a component's log and its decision: a link event (two or more valid
    identifiers), or a reset, split or erasure kept for history (fewer members)."""

    event_id: str
    ts: float
    #: ref of the component's root (all members are in that component)
    component: int
    #: refs of the event's identifiers in priority order; ``members[0]`` is the anchor
    members: tuple[int, ...]
    #: each member the event did not join, and why
    refused: tuple[RefusedMember, ...] = ()
    #: the event type: track, identify, alias, identify_company, merge, reset, split, forget
    etype: str = "link"
    #: for ``forget``: the kind of the erased identifier (its value is never kept)
    erased_kind: str | None = None


@attrs.frozen
class TraitRow:
    """A trait write on a node. Stores keep, per ``(node, key, once)``, the write with the
    greatest ``(ts, event_id)`` when ``once`` is false and the smallest when true (R6)."""

    node: int
    key: str
    ts: float
    event_id: str
    value: Any
    once: bool


@attrs.frozen
class CompanyLinkRow:
    """A node's link to a company; stores keep the greatest key per ``(node, company)``."""

    node: int
    company_id: str
    ts: float
    event_id: str


@attrs.frozen
class CompanyTraitRow:
    """A company trait write; stores keep the greatest key per ``(company, key)``."""

    company_id: str
    key: str
    ts: float
    event_id: str
    value: Any


@attrs.frozen
class ComponentRows:
    """Everything the engine needs to decide events in some link components."""

    nodes: tuple[NodeRow, ...]
    links: tuple[LinkRow, ...]


@attrs.frozen
class ProfileRows:
    """Everything needed to present one profile."""

    nodes: tuple[NodeRow, ...]
    traits: tuple[TraitRow, ...]
    company_links: tuple[CompanyLinkRow, ...]


@attrs.frozen
class CompanyRows:
    """A company as a store keeps it (``Store.company_rows``)."""

    traits: tuple[CompanyTraitRow, ...]
    #: refs of the nodes linked to it, ascending
    members: tuple[int, ...]


@attrs.frozen
class CountDeltas:
    """How one batch changes the counters a store keeps (``Changes.counts``): the engine
    works them out; a store adds them to what it holds, in the batch's transaction."""

    events: int = 0
    identifiers: int = 0
    profiles: int = 0
    #: profiles holding a ``user_id``
    identified_profiles: int = 0


@attrs.frozen
class Counts:
    """The counters of a store (``Store.counts``)."""

    events: int
    identifiers: int
    profiles: int
    identified_profiles: int
    #: how often each blocked ``(kind, value)`` was seen
    blocked: Mapping[tuple[str, str], int]


@attrs.frozen
class Changes:
    """What one batch changed, worked out by the engine: a store writes it as given, in the
    batch's transaction, and decides nothing (``docs/storage.md``, saving a batch).

    Node rows are the *changed* ones only: new nodes (negative refs, which the store maps to
    refs of its own, the same ref for every mention of one negative ref in these changes)
    and stored nodes whose row differs from the one ``load`` returned. Link rows likewise:
    new ones and changed ones, written over the stored row with the same ``event_id``;
    ``deleted_links`` lists those to remove. The trait and company rows merge as their docs
    say (newest wins). ``unblocked`` rows go before ``blocked`` counts are added: a value
    erased and then blocked again in one batch keeps only the count after its erasure."""

    #: new nodes (ref < 0) and changed stored nodes, whole rows
    nodes: tuple[NodeRow, ...] = ()
    #: refs of the stored nodes among ``nodes`` whose ``component`` or ``profile`` changed
    #: (the others changed only first/last seen, resets or splits)
    regrouped: tuple[int, ...] = ()
    #: new and changed link rows
    links: tuple[LinkRow, ...] = ()
    #: event ids of stored link rows to delete (an erasure removed them from the log)
    deleted_links: tuple[str, ...] = ()
    traits: tuple[TraitRow, ...] = ()
    company_links: tuple[CompanyLinkRow, ...] = ()
    company_traits: tuple[CompanyTraitRow, ...] = ()
    #: the events the batch applied
    events: tuple[EventRow, ...] = ()
    #: ``(kind, value)`` of blocked values erased: delete their counts first
    unblocked: tuple[tuple[str, str], ...] = ()
    #: blocked values seen: add these counts
    blocked: tuple[BlockedCount, ...] = ()
    #: ids of companies written to (a company exists once any event names it, even when
    #: it has no traits and its only member was erased)
    companies: tuple[str, ...] = ()
    #: refs of erased nodes: delete their rows, traits and company links
    deleted: tuple[int, ...] = ()
    #: keyed hashes of erased identifiers, to add to the suppression list
    suppressed: tuple[bytes, ...] = ()
    #: how the store's counters move
    counts: CountDeltas = CountDeltas()
