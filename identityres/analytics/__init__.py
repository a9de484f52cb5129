"""Journeys, unique users and funnels of people, not of identifiers (docs/analytics.md).

Events are stitched at query time: each event belongs to the profile (``Profile.id``) that
holds its highest-priority identifier in the graph *now*, so a late identify, a ``split`` or
a ``forget`` changes every result computed afterwards, past events included.

``events`` is ``None`` (the events kept by a graph opened with ``keep_events=True``), an
iterable of events in any form ``IdentityGraph.ingest`` reads (event objects, Segment
message dicts) or of :class:`~identityres.KeptEvent`, or the path of a JSONL file of
Segment messages. The DuckDB engine (``pip install 'identityres[analytics]'``) answers
``funnel`` and ``unique_users`` over large files; the pure-Python engine answers the rest.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import Any, Literal

from identityres._model import Identifier, IdLike
from identityres.analytics import _python
from identityres.analytics._inputs import (
    COMPANY,
    Identities,
    arrow_module,
    bounds,
    bucket_key,
    check_by,
    check_engine,
    check_graph,
    choice,
    event_filter,
    identity_map,
    is_parquet,
    is_path,
    load,
    names,
    seconds,
    sort_buckets,
    stitch,
)
from identityres.analytics._results import FunnelResult, JourneyEvent
from identityres.errors import InvalidQueryError

__all__ = [
    "FunnelResult",
    "JourneyEvent",
    "funnel",
    "journey",
    "unique_users",
    "write_identity_map",
]

#: a JSONL file at least this large goes to DuckDB when ``engine="auto"`` (and it is installed)
AUTO_DUCKDB_BYTES = 8 << 20

Order = Literal["sequential", "strict", "any"]
Count = Literal["uniques", "totals"]
Engine = Literal["auto", "python", "duckdb"]


def _use_duckdb(engine: str, events: Any) -> bool:
    if engine == "python":
        return False
    if engine == "duckdb":
        return True
    if not is_path(events):
        return False
    from identityres.analytics._duckdb import available

    if is_parquet(events):
        return available()
    try:
        big = os.path.getsize(events) >= AUTO_DUCKDB_BYTES
    except OSError:
        return False
    return big and available()


def _check_events(source: Identities, events: Any) -> None:
    if events is None and not source.live:
        raise InvalidQueryError(
            "events", None, "only a graph keeps events: give the events to stitch with this map"
        )


def _in_window(graph: Any, events: Any, lo: float, hi: float) -> Any:
    return (e for e in load(graph, events) if lo <= e.ts < hi)


def write_identity_map(graph: Any, directory: str | os.PathLike[str]) -> str:
    """Write the graph's identity map (``kind``, ``value``, ``profile_id``) as
    ``identity_map.parquet`` in ``directory`` (made if missing), as ``BatchResult.write``
    does, and return its path. The directory can then stand for the graph in ``funnel`` and
    ``unique_users``: a snapshot that a query reads without building the graph (needs
    pyarrow, ``pip install 'identityres[batch]'``)."""
    source = check_graph(graph)
    arrow_module()
    import pyarrow.parquet as pq

    table = source.arrow()
    try:
        os.makedirs(directory, exist_ok=True)
        path = os.path.join(os.fspath(directory), "identity_map.parquet")
        pq.write_table(table, path)
    except OSError as exc:
        raise InvalidQueryError("directory", os.fspath(directory), str(exc)) from None
    return path


def journey(
    graph: Any,
    events: Any = None,
    *,
    user_id: IdLike | None = None,
    anonymous_id: IdLike | None = None,
    identifier: Identifier | tuple[str, IdLike] | None = None,
) -> tuple[JourneyEvent, ...]:
    """The events of the person holding this identifier, in ``(timestamp, event_id)`` order,
    across every identifier of their profile, each with the identifier that made it theirs
    and its context. Empty for an identifier the graph does not hold."""
    source = check_graph(graph)
    if not source.live:
        raise InvalidQueryError("graph", graph, "journey needs an identityres.IdentityGraph")
    graph = source.graph
    profile = graph.profile(user_id=user_id, anonymous_id=anonymous_id, identifier=identifier)
    if profile is None:
        return ()
    person = profile.id
    found = [
        (event, ident)
        for pid, ident, event in stitch(load(graph, events), identity_map(source))
        if pid == person
    ]
    found.sort(key=lambda pair: (pair[0].ts, pair[0].event_id))
    return tuple(
        JourneyEvent(
            datetime.fromtimestamp(e.ts, timezone.utc),
            e.event_id,
            e.type,
            e.name,
            ident,
            e.properties,
            e.context,
        )
        for e, ident in found
    )


def unique_users(
    graph: Any,
    events: Any = None,
    *,
    event: str | Sequence[str] | None = None,
    start: Any = None,
    end: Any = None,
    by: str | None = None,
    engine: Engine = "auto",
) -> int | dict[Any, int]:
    """Distinct people among the events named ``event`` (any event when ``None``) with
    ``start <= timestamp < end``: an ``int``, or with ``by`` (``"day"``, ``"week"`` (the
    Monday, UTC), ``"company"`` or a property name) a mapping from bucket to people."""
    source = check_graph(graph)
    _check_events(source, events)
    wanted = event_filter(event)
    lo, hi = bounds(start, end)
    by = check_by(by)
    engine_name = check_engine(engine)
    if _use_duckdb(engine_name, events):
        from identityres.analytics import _duckdb

        return _duckdb.unique_users(source, events, wanted, lo, hi, by)
    rows = stitch(_in_window(source.graph, events, lo, hi), identity_map(source))
    if wanted is not None:
        rows = (r for r in rows if r[2].name in wanted)
    if by is None:
        return len({pid for pid, _, _ in rows})
    people: dict[Any, set[str]] = {}
    if by == COMPANY:
        company = source.companies()
        for pid, _, _ in rows:
            people.setdefault(company.get(pid), set()).add(pid)
    else:
        for pid, _, e in rows:
            people.setdefault(bucket_key(by, e), set()).add(pid)
    return sort_buckets({key: len(p) for key, p in people.items()})


def funnel(
    graph: Any,
    events: Any = None,
    *,
    steps: Sequence[str],
    within: Any,
    order: Order = "sequential",
    count: Count = "uniques",
    by: str | None = None,
    start: Any = None,
    end: Any = None,
    exclude: Sequence[str] = (),
    engine: Engine = "auto",
) -> FunnelResult | dict[Any, FunnelResult]:
    """A funnel of people (docs/analytics.md for the exact semantics).

    A person reaches step *k* when, for some step-1 event at time t0 (an *entry*), there are
    distinct events of steps 2..k, in ``(timestamp, event_id)`` order after it
    (``"sequential"``), directly after one another with no other event of the person between
    (``"strict"``) or in any order after it (``"any"``), all at most ``within`` after t0 and
    before the person's first ``exclude`` event after the entry; the furthest step over all
    entries counts. ``count="totals"`` counts entries instead of people. ``by`` breaks the
    funnel down (``"company"``, ``"day"``, ``"week"`` or a property of the step-1 event;
    people by first touch: their earliest entry) into a mapping from bucket to result.
    Only events with ``start <= timestamp < end`` are considered."""
    source = check_graph(graph)
    _check_events(source, events)
    step_names = names("steps", steps)
    window = seconds("within", within)
    order = choice("order", order, ("sequential", "strict", "any"))  # type: ignore[assignment]
    count = choice("count", count, ("uniques", "totals"))  # type: ignore[assignment]
    by = check_by(by)
    lo, hi = bounds(start, end)
    excluded = frozenset(names("exclude", exclude, empty=True))
    clash = excluded.intersection(step_names)
    if clash:
        raise InvalidQueryError("exclude", list(exclude), f"names a step: {sorted(clash)[0]!r}")
    engine_name = check_engine(engine)
    if _use_duckdb(engine_name, events):
        from identityres.analytics import _duckdb

        by_bucket = _duckdb.funnel(
            source, events, step_names, window, order, count, by, lo, hi, excluded
        )
    else:
        rows = stitch(_in_window(source.graph, events, lo, hi), identity_map(source))
        people = _python.group(rows)
        bucket = None
        if by == COMPANY:
            company = source.companies()

            def bucket(pid: str, event: Any) -> Any:
                return company.get(pid)

        elif by is not None:
            key = by

            def bucket(pid: str, event: Any) -> Any:
                return bucket_key(key, event)

        durations = _python.funnel(people, step_names, window, order, count, bucket, excluded)
        by_bucket = {key: FunnelResult.build(step_names, d) for key, d in durations.items()}
    if by is None:
        empty = FunnelResult.build(step_names, [[] for _ in step_names])
        return by_bucket.get(None, empty)
    return sort_buckets(by_bucket)
