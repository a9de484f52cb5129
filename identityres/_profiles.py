"""Presenting state: profiles and companies built from rows (R5-R7 in docs/merge-rules.md).
One implementation for every store and every reader (the graph, export, the CLI)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timezone
from typing import Any

from identityres._merge import winners
from identityres._model import ANONYMOUS_ID, USER_ID, Company, Profile
from identityres._rows import CompanyTraitRow, NodeRow, ProfileRows
from identityres._rules import CompiledRules

__all__ = ["build_company", "build_profile", "canonical_row", "utc"]


_EARLIEST = datetime.min.replace(tzinfo=timezone.utc)
_LATEST = datetime.max.replace(tzinfo=timezone.utc)


def utc(ts: float) -> datetime:
    """An epoch timestamp as an aware UTC ``datetime``.

    Writes refuse timestamps outside 1900..3000 (docs/concepts.md, Timestamps and the clock),
    but a store written by an older version may hold one that no ``datetime`` can: it is
    shown clamped to ``datetime.min`` or ``datetime.max`` (in UTC) rather than failing the
    read (NaN shows as ``datetime.min``)."""
    try:
        return datetime.fromtimestamp(ts, tz=timezone.utc)
    except (OverflowError, ValueError, OSError):
        return _LATEST if ts > 0 else _EARLIEST


def canonical_row(nodes: Iterable[NodeRow], rules: CompiledRules) -> NodeRow:
    """R5 on rows: highest-priority kind, then earliest key, then value."""
    kind_index = rules.kind_index
    return min(nodes, key=lambda r: (kind_index[r.kind], r.first_ts, r.first_event_id, r.value))


def build_profile(rows: ProfileRows, rules: CompiledRules) -> Profile:
    """Present a profile from its rows."""
    by_kind: dict[str, set[str]] = {}
    for r in rows.nodes:
        by_kind.setdefault(r.kind, set()).add(r.value)
    c = canonical_row(rows.nodes, rules)
    users = [r for r in rows.nodes if r.kind == USER_ID]
    identified = (
        min(users, key=lambda r: (r.first_ts, r.first_event_id, r.value)).value if users else None
    )
    # a regular write always beats set_once; among set_once writes the earliest wins
    best = winners(rows.traits, lambda t: (t.once, t.key), lambda t: t.once)
    traits: dict[str, Any] = {k: t.value for (once, k), t in best.items() if once}
    traits.update((k, t.value) for (once, k), t in best.items() if not once)
    latest = winners(rows.company_links, lambda link: None).get(None)
    return Profile(
        user_id=c.value,
        user_id_kind=c.kind,
        identified_user_id=identified,
        anonymous_ids=frozenset(by_kind.get(ANONYMOUS_ID, ())),
        identifiers={k: frozenset(v) for k, v in sorted(by_kind.items())},
        company_id=None if latest is None else latest.company_id,
        company_ids=frozenset(link.company_id for link in rows.company_links),
        traits=traits,
        first_seen=utc(min(r.first_ts for r in rows.nodes)),
        last_seen=utc(max(r.last_ts for r in rows.nodes)),
    )


def build_company(
    company_id: str, traits: Iterable[CompanyTraitRow], profiles: Iterable[str]
) -> Company:
    """Present a company from its trait rows and the canonical ids of its profiles."""
    best = winners(traits, lambda t: t.key)
    return Company(
        company_id=company_id,
        traits={k: t.value for k, t in best.items()},
        profiles=frozenset(profiles),
    )
