"""The reference analytics: the definitions of docs/analytics.md written out as plainly as
possible, by brute force, sharing no code with ``identityres.analytics``. The oracle the
fast engines are checked against; slow on purpose (every chain of events is tried)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta, timezone
from fractions import Fraction
from itertools import combinations, permutations
from typing import Any

from identityres._kept import KeptEvent

__all__ = ["reference_funnel", "reference_people", "reference_unique_users"]


def reference_people(graph: Any, events: Iterable[KeptEvent]) -> dict[str, list[KeptEvent]]:
    """Each person's events, first of each event id only, sorted by (ts, event_id). A person
    is the profile of the event's highest-priority identifier that the graph holds, looked up
    one identifier at a time with ``graph.profile``."""
    priority = list(graph.rules.all_kinds)
    cache: dict[tuple[str, str], str | None] = {}
    people: dict[str, list[KeptEvent]] = {}
    seen = set()
    for e in events:
        if e.event_id in seen:
            continue
        seen.add(e.event_id)
        for ident in sorted(e.identifiers, key=lambda i: priority.index(i.kind)):
            key = (ident.kind, ident.value)
            if key not in cache:
                p = graph.profile(identifier=key)
                cache[key] = None if p is None else p.id
            if cache[key] is not None:
                people.setdefault(cache[key], []).append(e)  # type: ignore[arg-type]
                break
    for evs in people.values():
        evs.sort(key=lambda e: (e.ts, e.event_id))
    return people


def _bucket(by: str, graph: Any, person: str, e: KeptEvent) -> Any:
    if by == "company":
        for p in graph.profiles():
            if p.id == person:
                return p.company_id
        return None
    day = datetime.fromtimestamp(e.ts, timezone.utc).date()
    if by == "day":
        return str(day)
    if by == "week":
        return str(day - timedelta(days=day.weekday()))
    value = (e.properties or {}).get(by)
    if isinstance(value, (list, dict)):
        import json

        return json.dumps(value, sort_keys=True)
    return value


def reference_unique_users(
    graph: Any,
    events: Iterable[KeptEvent],
    *,
    event: Sequence[str] | None = None,
    start: float = -math.inf,
    end: float = math.inf,
    by: str | None = None,
) -> Any:
    people = reference_people(graph, [e for e in events if start <= e.ts < end])
    buckets: dict[Any, set[str]] = {}
    for person, evs in people.items():
        for e in evs:
            if event is None or e.name in event:
                key = None if by is None else _bucket(by, graph, person, e)
                buckets.setdefault(key, set()).add(person)
    if by is None:
        return len(buckets.get(None, set()))
    return {k: len(v) for k, v in buckets.items()}


def _chain_ok(
    evs: list[KeptEvent], chain: Sequence[int], within: float, exclude: Sequence[str]
) -> bool:
    t0 = evs[chain[0]].ts
    if any(evs[i].ts - t0 > within for i in chain):
        return False
    last = max(chain)
    return not any(evs[x].name in exclude for x in range(chain[0] + 1, last))


def _chains(evs: list[KeptEvent], s: int, k: int, order: str) -> Iterable[tuple[int, ...]]:
    rest = range(s + 1, len(evs))
    if order == "sequential":
        for c in combinations(rest, k - 1):
            yield (s, *c)
    elif order == "strict":
        if s + k <= len(evs):
            yield tuple(range(s, s + k))
    else:
        for c in permutations(rest, k - 1):
            yield (s, *c)


def _entry(
    evs: list[KeptEvent],
    s: int,
    steps: Sequence[str],
    within: float,
    order: str,
    exclude: Sequence[str],
) -> list[float]:
    """The least time to each step reached from the entry at ``s`` (every chain tried)."""
    best = [0.0]
    for k in range(2, len(steps) + 1):
        times = [
            max(evs[i].ts for i in chain) - evs[s].ts
            for chain in _chains(evs, s, k, order)
            if all(evs[i].name == steps[j] for j, i in enumerate(chain))
            and _chain_ok(evs, chain, within, exclude)
        ]
        if not times:
            break
        best.append(min(times))
    return best


def _percentile(values: list[float], p: int) -> float | None:
    if not values:
        return None
    return sorted(values)[math.ceil(Fraction(p, 100) * len(values)) - 1]


def reference_funnel(
    graph: Any,
    events: Iterable[KeptEvent],
    *,
    steps: Sequence[str],
    within: float,
    order: str = "sequential",
    count: str = "uniques",
    by: str | None = None,
    start: float = -math.inf,
    end: float = math.inf,
    exclude: Sequence[str] = (),
) -> dict[Any, dict[str, list[Any]]]:
    """By bucket (``None`` without ``by``): ``counts``, ``median_seconds``, ``p90_seconds``."""
    people = reference_people(graph, [e for e in events if start <= e.ts < end])
    durations: dict[Any, list[list[float]]] = {}
    for person, evs in people.items():
        entries = [s for s, e in enumerate(evs) if e.name == steps[0]]
        if not entries:
            continue
        results = [(s, _entry(evs, s, steps, within, order, exclude)) for s in entries]
        if count == "totals":
            for s, times in results:
                key = None if by is None else _bucket(by, graph, person, evs[s])
                d = durations.setdefault(key, [[] for _ in steps])
                for j, t in enumerate(times):
                    d[j].append(t)
        else:
            key = None if by is None else _bucket(by, graph, person, evs[entries[0]])
            d = durations.setdefault(key, [[] for _ in steps])
            for j in range(len(steps)):
                reached = [times[j] for _, times in results if len(times) > j]
                if reached:
                    d[j].append(min(reached))
    return {
        key: {
            "counts": [len(x) for x in d],
            "median_seconds": [None] + [_percentile(x, 50) for x in d[1:]],
            "p90_seconds": [None] + [_percentile(x, 90) for x in d[1:]],
        }
        for key, d in durations.items()
    }
