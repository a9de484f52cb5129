"""Engine state as storage rows and back (the row types are in ``_rows.py``).

The in-memory store answers the storage protocol's reads from its engine through these
functions; a working set (``_working_set.py``) uses them to load a batch's components and to
hand the result back as rows. ``ref`` maps an engine node to the ref a store knows it by
(the identity for the memory store's own engine)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

from identityres._engine import Engine
from identityres._events import EVENT_TYPES, FORGET
from identityres._model import Reason
from identityres._rows import (
    CompanyLinkRow,
    ComponentRows,
    LinkRow,
    NodeRow,
    ProfileRows,
    RefusedMember,
    TraitRow,
)

__all__ = [
    "component_rows",
    "link_row",
    "load_rows",
    "node_row",
    "profile_rows",
    "refused_link_rows",
]

Ref = Callable[[int], int]


def _same(n: int) -> int:
    return n


def node_row(engine: Engine, n: int, ref: Ref = _same) -> NodeRow:
    reset = engine.resets.get(n)
    split = engine.splits.get(n)
    return NodeRow(
        ref(n),
        engine.rules.kind_names[engine.kind[n]],
        engine.value[n],
        engine.first_ts[n],
        engine.first_eid[n],
        engine.last_ts[n],
        None if reset is None else reset[0],
        None if reset is None else reset[1],
        ref(engine.lfind(n)),
        ref(engine.find(n)),
        None if split is None else split[0],
        None if split is None else split[1],
    )


def link_row(
    engine: Engine,
    entry: tuple[float, str, tuple[int, ...], int],
    lroot: int,
    ref: Ref = _same,
) -> LinkRow:
    ts, eid, nodes, etype = entry
    names = engine.rules.kind_names
    refused = engine.refusals.get(eid)
    items: tuple[RefusedMember, ...] = ()
    if refused is not None:
        items = tuple(
            RefusedMember(nodes.index(x), reason.value, None if lk is None else names[lk])
            for x, reason, lk in refused[2]
        )
    return LinkRow(
        eid,
        ts,
        ref(lroot),
        tuple(ref(n) for n in nodes),
        items,
        EVENT_TYPES[etype],
        engine.erasures.get(eid) if etype == FORGET else None,
    )


def refused_link_rows(engine: Engine, ref: Ref = _same) -> Iterator[LinkRow]:
    for eid, (_, nodes, _) in list(engine.refusals.items()):
        root = engine.lfind(nodes[0])
        entry = next((e for e in engine.log.get(root, ()) if e[1] == eid), None)
        if entry is not None:
            yield link_row(engine, entry, root, ref)


def component_rows(engine: Engine, lroots: Iterable[int], ref: Ref = _same) -> ComponentRows:
    """Every node and link row of the given link components."""
    nodes: set[int] = set()
    links: list[LinkRow] = []
    for r in set(lroots):
        if r not in engine.dead:
            nodes.add(r)
        for entry in engine.log.get(r, ()):
            nodes.update(entry[2])
            links.append(link_row(engine, entry, r, ref))
    return ComponentRows(tuple(node_row(engine, n, ref) for n in sorted(nodes)), tuple(links))


def profile_rows(engine: Engine, root: int, ref: Ref = _same) -> ProfileRows:
    members = engine.members(root)
    traits: list[TraitRow] = []
    links: list[CompanyLinkRow] = []
    for n in members:
        r = ref(n)
        for k, (ts, eid, v) in engine.traits.get(n, {}).items():
            traits.append(TraitRow(r, k, ts, eid, v, False))
        for k, (ts, eid, v) in engine.traits_once.get(n, {}).items():
            traits.append(TraitRow(r, k, ts, eid, v, True))
        for cid, (ts, eid, _) in engine.company_links.get(n, {}).items():
            links.append(CompanyLinkRow(r, cid, ts, eid))
    return ProfileRows(
        tuple(node_row(engine, n, ref) for n in members), tuple(traits), tuple(links)
    )


def load_rows(engine: Engine, nodes: Iterable[NodeRow], links: Iterable[LinkRow]) -> dict[int, int]:
    """Make these rows the state of their components: whole components, as ``load``
    returns them. Returns ``{ref: node}`` for the rows' refs."""
    kind_index = engine.rules.kind_index
    by_kind = engine.nodes
    local: dict[int, int] = {}
    rows = list(nodes)
    # Drop the old logs of every component these nodes were in: the rows replace them.
    for row in rows:
        n = by_kind[kind_index[row.kind]].get(row.value)
        if n is not None:
            engine.drop_log(engine.lfind(n))
    for row in rows:
        k = kind_index[row.kind]
        n = by_kind[k].get(row.value)
        if n is None:
            n = engine.new_node(k, row.value, row.first_ts, row.first_event_id)
        else:
            engine.first_ts[n] = row.first_ts
            engine.first_eid[n] = row.first_event_id
        engine.last_ts[n] = row.last_ts
        if row.reset_ts is None or row.reset_event_id is None:
            engine.resets.pop(n, None)
        else:
            engine.resets[n] = (row.reset_ts, row.reset_event_id)
        if row.split_ts is None or row.split_event_id is None:
            engine.splits.pop(n, None)
        else:
            engine.splits[n] = (row.split_ts, row.split_event_id)
        local[row.ref] = n
    groups: dict[int, list[int]] = {}
    for row in rows:
        n = local[row.ref]
        root = local[row.profile]
        engine.parent[n] = root
        engine.lparent[n] = local[row.component]
        groups.setdefault(root, []).append(n)
    kind = engine.kind
    for root, members in groups.items():
        members.remove(root)
        members.insert(0, root)
        for i, n in enumerate(members):
            engine.nxt[n] = members[(i + 1) % len(members)]
            engine.canon.pop(n, None)
        engine.size[root] = len(members)
        for k, arr in engine.counts.items():
            arr[root] = sum(1 for n in members if kind[n] == k)
    etypes = {name: i for i, name in enumerate(EVENT_TYPES)}
    for link in links:
        members_t = tuple(local[m] for m in link.members)
        lroot = local[link.component]
        etype = etypes.get(link.etype, 0)
        engine.log.setdefault(lroot, []).append((link.ts, link.event_id, members_t, etype))
        if etype == FORGET and link.erased_kind is not None:
            engine.erasures[link.event_id] = link.erased_kind
        if link.refused:
            engine.refusals[link.event_id] = (
                link.ts,
                members_t,
                tuple(
                    (
                        members_t[r.position],
                        Reason(r.reason),
                        None if r.limit_kind is None else kind_index[r.limit_kind],
                    )
                    for r in link.refused
                ),
            )
        engine.seen_key(lroot, (link.ts, link.event_id))
    for row in rows:
        if row.reset_ts is not None and row.reset_event_id is not None:
            engine.seen_key(engine.lfind(local[row.ref]), (row.reset_ts, row.reset_event_id))
    return local
