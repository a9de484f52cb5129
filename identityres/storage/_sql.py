"""What the SQL stores (``storage/sqlite.py``, ``storage/postgres.py``) share: the node
columns, the encoding and decoding of stored values, the sorting of a batch's node rows into
inserts and updates, and the assembling of profiles from the rows a read returns. The SQL
itself stays in each store (the dialects and layouts differ); the logic here is the same for
both, so it is written once.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

from identityres._rows import (
    CompanyLinkRow,
    CompanyRows,
    CompanyTraitRow,
    LinkRow,
    NodeRow,
    ProfileRows,
    RefusedMember,
    TraitRow,
)
from identityres.errors import StorageError

#: the columns of a node row, in ``NodeRow``'s order
NODE_NAMES = (
    "ref",
    "kind",
    "value",
    "first_ts",
    "first_event_id",
    "last_ts",
    "reset_ts",
    "reset_event_id",
    "component",
    "profile",
    "split_ts",
    "split_event_id",
)
COMPONENT_COLUMN = NODE_NAMES.index("component")

#: what decoding a damaged stored value raises (bad JSON, wrong shapes, wrong types)
DECODING_ERRORS = (ValueError, TypeError, KeyError, AttributeError, IndexError)


def encode_json(what: str, value: Any) -> str:
    try:
        return json.dumps(value)
    except (TypeError, ValueError) as exc:
        raise StorageError(f"{what}={value!r}: cannot be stored as JSON: {exc}") from exc


def damaged(table: str, row: str, what: str, exc: BaseException) -> StorageError:
    """The error for a stored row that cannot be read back: it names the table and the row
    (never its values: a row may hold personal data)."""
    return StorageError(
        f"the database is damaged: {table} row {row}: {what} cannot be read "
        f"({type(exc).__name__}: {exc})"
    )


def decode_json(table: str, row: str, text: Any) -> Any:
    """A JSON value of a ``traits`` or ``company_traits`` row."""
    try:
        return json.loads(text)
    except DECODING_ERRORS as exc:
        raise damaged(table, row, "the JSON value", exc) from exc


def trait_key(node: Any, once: Any, key: Any) -> str:
    return f"(node={node!r}, once={once!r}, key={key!r})"


def decode_link(row: Sequence[Any], members: Callable[[Any], tuple[int, ...]]) -> LinkRow:
    """A ``links`` row ``(event_id, ts, component, members, refused, etype, erased_kind)``;
    ``members`` turns the stored members into refs (each store keeps them its own way)."""
    eid, ts, component, stored, refused, etype, erased_kind = row
    items: tuple[RefusedMember, ...] = ()
    try:
        if refused is not None:
            items = tuple(
                RefusedMember(int(p), str(code), kind) for p, code, kind in json.loads(refused)
            )
        refs = members(stored)
    except DECODING_ERRORS as exc:
        raise damaged("links", f"event_id={eid!r}", "members or refused", exc) from exc
    return LinkRow(eid, ts, component, refs, items, etype, erased_kind)


def resolver(refs: Mapping[int, int]) -> Callable[[int], int]:
    """The stored ref of a batch's ref: itself when stored already (>= 0), else the one
    ``refs`` gives the batch's new node."""

    def ref(r: int) -> int:
        if r >= 0:
            return r
        try:
            return refs[r]
        except KeyError:
            raise StorageError(f"save: ref {r} names no node of this batch") from None

    return ref


#: a node row of a batch, its stored ref, its time columns (first_ts, first_event_id,
#: last_ts, reset_ts, reset_event_id, split_ts, split_event_id), component and profile
Placed = tuple[NodeRow, int, tuple[Any, ...], int, int]


def sort_nodes(
    nodes: Iterable[NodeRow], regrouped: Iterable[int], ref: Callable[[int], int]
) -> tuple[list[Placed], list[Placed], list[Placed]]:
    """A batch's node rows as ``(inserts, updates, times)``: new nodes; stored nodes that
    changed component or profile; stored nodes of which only the times changed (their
    indexed columns are left alone)."""
    moved = set(regrouped)
    inserts: list[Placed] = []
    updates: list[Placed] = []
    times: list[Placed] = []
    for row in nodes:
        keys = (
            row.first_ts,
            row.first_event_id,
            row.last_ts,
            row.reset_ts,
            row.reset_event_id,
            row.split_ts,
            row.split_event_id,
        )
        placed = (row, ref(row.ref), keys, ref(row.component), ref(row.profile))
        if row.ref < 0:
            inserts.append(placed)
        elif row.ref in moved:
            updates.append(placed)
        else:
            times.append(placed)
    return inserts, updates, times


def profile_rows(
    nodes: Sequence[NodeRow],
    traits: Iterable[Sequence[Any]],
    company_links: Iterable[Sequence[Any]],
) -> ProfileRows:
    """One profile from its nodes, its ``(node, key, ts, event_id, value, once)`` trait rows
    and its ``(node, company_id, ts, event_id)`` company links."""
    return ProfileRows(
        tuple(nodes),
        tuple(
            TraitRow(n, k, ts, e, decode_json("traits", trait_key(n, o, k), v), bool(o))
            for n, k, ts, e, v, o in traits
        ),
        tuple(CompanyLinkRow(*c) for c in company_links),
    )


def company_from_rows(members: Iterable[int], traits: Iterable[Sequence[Any]]) -> CompanyRows:
    """One company from its member node refs (in the order read) and its ``(company_id, key,
    ts, event_id, value)`` trait rows."""
    return CompanyRows(
        tuple(
            CompanyTraitRow(
                c, k, ts, e, decode_json("company_traits", f"(company_id={c!r}, key={k!r})", v)
            )
            for c, k, ts, e, v in traits
        ),
        tuple(members),
    )


def whole_components(
    rows: list[Any], page: int, rest: Callable[[Any], Iterable[Any]]
) -> tuple[list[Any], Any]:
    """A page of node rows read in component order (at most ``page``), ended at a whole
    component: when the page is full, its last component may go on past it, so that one is
    read whole (``rest(component)``). Returns the rows and the page's last component."""
    top = rows[-1][COMPONENT_COLUMN]
    if len(rows) == page:
        while rows and rows[-1][COMPONENT_COLUMN] == top:
            rows.pop()
        rows.extend(rest(top))
    return rows, top


def profile_page(
    nodes: Iterable[NodeRow],
    traits: Iterable[Sequence[Any]],
    company_links: Iterable[Sequence[Any]],
) -> Iterator[ProfileRows]:
    """The profiles of one page of whole components, in profile ref order: ``traits`` rows
    are ``(profile, node, key, ts, event_id, value, once)``, ``company_links`` rows
    ``(profile, node, company_id, ts, event_id)``."""
    page: dict[int, tuple[list[NodeRow], list[TraitRow], list[CompanyLinkRow]]] = {}
    for node in nodes:
        page.setdefault(node.profile, ([], [], []))[0].append(node)
    for p, n, k, ts, e, v, o in traits:
        value = decode_json("traits", trait_key(n, o, k), v)
        page[p][1].append(TraitRow(n, k, ts, e, value, bool(o)))
    for p, n, cid, ts, e in company_links:
        page[p][2].append(CompanyLinkRow(n, cid, ts, e))
    for p in sorted(page):
        ns, trs, cls = page[p]
        yield ProfileRows(tuple(ns), tuple(trs), tuple(cls))
