"""The pure-Python engine: one pass per person over their events in key order."""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from identityres._kept import KeptEvent

#: per person: their events in ``(ts, event_id)`` order
People = dict[str, list[KeptEvent]]


def group(rows: Iterable[tuple[str, Any, KeptEvent]]) -> People:
    people: People = {}
    for pid, _, event in rows:
        people.setdefault(pid, []).append(event)
    for events in people.values():
        events.sort(key=lambda e: (e.ts, e.event_id))
    return people


def attempts(
    events: Sequence[KeptEvent],
    steps: Sequence[str],
    within: float,
    order: str,
    exclude: frozenset[str],
) -> list[tuple[int, list[float]]]:
    """For each step-1 event (an entry), by position: the earliest time to each step reached
    from it (``[0.0, t2, …]``; its length is the number of steps reached)."""
    n = len(events)
    names = [e.name for e in events]
    ts = [e.ts for e in events]
    positions: dict[str, list[int]] = {}
    for i, name in enumerate(names):
        positions.setdefault(name, []).append(i)
    excluded = sorted(i for i, name in enumerate(names) if name in exclude)
    need: list[int] = []  # any order: the occurrence of each step's name among steps 2..k
    seen: dict[str, int] = {}
    for step in steps[1:]:
        seen[step] = seen.get(step, 0) + 1
        need.append(seen[step])
    out: list[tuple[int, list[float]]] = []
    for start in positions.get(steps[0], ()):
        t0 = ts[start]
        x = bisect_right(excluded, start)
        stop = excluded[x] if x < len(excluded) else n
        times = [0.0]
        cur = start
        for j in range(1, len(steps)):
            if order == "strict":
                q = cur + 1
                if q >= n or names[q] != steps[j]:
                    break
            else:
                p = positions.get(steps[j])
                if p is None:
                    break
                if order == "sequential":
                    i = bisect_right(p, cur)
                else:  # any: the need[j-1]-th event of that name after the start
                    i = bisect_right(p, start) + need[j - 1] - 1
                if i >= len(p):
                    break
                q = p[i]
            if q >= stop or ts[q] - t0 > within:
                break
            times.append(max(times[-1], ts[q] - t0))
            cur = q
        out.append((start, times))
    return out


def funnel(
    people: People,
    steps: Sequence[str],
    within: float,
    order: str,
    count: str,
    bucket: Callable[[str, KeptEvent], Any] | None,
    exclude: frozenset[str] = frozenset(),
) -> dict[Any, list[list[float]]]:
    """Durations per step, by bucket (one bucket, ``None``, without a breakdown)."""
    out: dict[Any, list[list[float]]] = {}
    k = len(steps)
    for pid, events in people.items():
        found = attempts(events, steps, within, order, exclude)
        if not found:
            continue
        if count == "totals":
            for start, times in found:
                key = None if bucket is None else bucket(pid, events[start])
                durations = out.setdefault(key, [[] for _ in range(k)])
                for j, t in enumerate(times):
                    durations[j].append(t)
            continue
        # first touch: the bucket of the person's earliest entry
        key = None if bucket is None else bucket(pid, events[found[0][0]])
        durations = out.setdefault(key, [[] for _ in range(k)])
        best: list[float] = []
        for _, times in found:
            for j, t in enumerate(times):
                if j == len(best):
                    best.append(t)
                elif t < best[j]:
                    best[j] = t
        for j, t in enumerate(best):
            durations[j].append(t)
    return out
