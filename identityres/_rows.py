"""Row types of the storage protocol: what a store keeps (see ``storage/_protocol.py``).

They live outside the ``storage`` package so that the engine can build and read rows
without importing the stores.
"""

from __future__ import annotations

from typing import Any

import attrs

__all__ = [
    "Changes",
    "CompanyLinkRow",
    "CompanyTraitRow",
    "ComponentRows",
    "LinkRow",
    "NodeRow",
    "ProfileRows",
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
    #: ``(position in members, reason code, limit kind or None)`` for each demoted member
    refused: tuple[tuple[int, str, str | None], ...] = ()
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
class Changes:
    """What one batch changes. The trait and company rows merge as their docs say;
    ``events`` adds ``(event_id, fingerprint)``; ``blocked`` adds ``(kind, value, count)``,
    and a count of 0 deletes that value's row (it was erased). Rows apply in order, and the
    deletions come first: a value erased and then blocked again in one batch keeps only the
    count after its erasure.

    ``nodes`` and ``links`` always hold *whole* link components, as loaded plus what the
    batch created: a store replaces everything it held for those components with them
    (links of theirs that are not re-sent are gone, as after an erasure)."""

    nodes: tuple[NodeRow, ...] = ()
    links: tuple[LinkRow, ...] = ()
    traits: tuple[TraitRow, ...] = ()
    company_links: tuple[CompanyLinkRow, ...] = ()
    company_traits: tuple[CompanyTraitRow, ...] = ()
    events: tuple[tuple[str, bytes], ...] = ()
    blocked: tuple[tuple[str, str, int], ...] = ()
    #: ids of companies written to (a company exists once any event names it, even when
    #: it has no traits and its only member was erased)
    companies: tuple[str, ...] = ()
    #: refs of erased nodes: delete their rows, traits and company links
    deleted: tuple[int, ...] = ()
    #: keyed hashes of erased identifiers, to add to the suppression list
    suppressed: tuple[bytes, ...] = ()
