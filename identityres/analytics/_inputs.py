"""Arguments and events of the analytics queries: validation, loading, stitching."""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

from identityres._events import MESSAGE_FIELDS, check_context, relabel, to_timestamp
from identityres._kept import KeptEvent, kept_event
from identityres._model import Identifier
from identityres.errors import InvalidQueryError, ValidationError

if TYPE_CHECKING:
    from identityres._graph import IdentityGraph

#: ``by`` values that are not property names
TIME_BUCKETS = ("day", "week")
COMPANY = "company"

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def check_graph(graph: Any) -> IdentityGraph:
    from identityres._graph import IdentityGraph

    if not isinstance(graph, IdentityGraph):
        raise InvalidQueryError("graph", graph, "must be an identityres.IdentityGraph")
    return graph


def seconds(field: str, value: Any) -> float:
    """A duration: a ``timedelta``, seconds (``int``/``float`` >= 0) or ``"7d"``/``"12h"``/
    ``"30m"``/``"45s"``/``"2w"``."""
    if isinstance(value, timedelta):
        out = value.total_seconds()
    elif isinstance(value, bool):
        raise InvalidQueryError(field, value, "must be a timedelta, seconds or a '7d' string")
    elif isinstance(value, (int, float)):
        out = float(value)
    elif isinstance(value, str):
        m = _DURATION.match(value)
        if m is None:
            raise InvalidQueryError(
                field, value, "must be a number followed by s, m, h, d or w (e.g. '7d')"
            )
        out = float(m.group(1)) * _UNIT[m.group(2)]
    else:
        raise InvalidQueryError(field, value, "must be a timedelta, seconds or a '7d' string")
    if not math.isfinite(out) or out < 0:
        raise InvalidQueryError(field, value, "must be a finite duration >= 0")
    return out


def bounds(start: Any, end: Any) -> tuple[float, float]:
    lo = -math.inf if start is None else to_timestamp(start, "start")
    hi = math.inf if end is None else to_timestamp(end, "end")
    if lo >= hi:
        raise InvalidQueryError("end", end, f"must be after start={start!r}")
    return lo, hi


def names(field: str, value: Any, *, empty: bool = False) -> tuple[str, ...]:
    if isinstance(value, str) or not isinstance(value, Iterable):
        raise InvalidQueryError(field, value, "must be a list of event names")
    out = tuple(value)
    if not out and not empty:
        raise InvalidQueryError(field, value, "must name at least one event")
    for name in out:
        if not isinstance(name, str) or not name:
            raise InvalidQueryError(field, value, f"event names must be non-empty str: {name!r}")
    return out


def event_filter(value: Any) -> frozenset[str] | None:
    if value is None:
        return None
    if isinstance(value, str):
        if not value:
            raise InvalidQueryError("event", value, "must be a non-empty event name")
        return frozenset((value,))
    return frozenset(names("event", value))


def check_by(value: Any) -> str | None:
    if value is not None and (not isinstance(value, str) or not value):
        raise InvalidQueryError(
            "by", value, "must be None, 'day', 'week', 'company' or a property name"
        )
    return value


def choice(field: str, value: Any, options: tuple[str, ...]) -> str:
    if not isinstance(value, str) or value not in options:
        raise InvalidQueryError(field, value, "must be one of " + ", ".join(map(repr, options)))
    return value


def check_engine(value: Any) -> str:
    return choice("engine", value, ("auto", "python", "duckdb"))


def is_path(events: Any) -> bool:
    return isinstance(events, (str, os.PathLike))


def read_jsonl(path: str | os.PathLike[str]) -> Iterator[dict[str, Any]]:
    """The messages of a JSONL file (blank lines skipped)."""
    try:
        handle = open(path, encoding="utf-8")  # noqa: SIM115 (closed below)
    except OSError as exc:
        raise InvalidQueryError("events", os.fspath(path), f"cannot be read: {exc}") from None
    with handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                msg = json.loads(line)
            except ValueError as exc:
                raise InvalidQueryError(
                    "events", os.fspath(path), f"line {number} is not JSON: {exc}"
                ) from None
            if not isinstance(msg, dict):
                raise InvalidQueryError(
                    "events", os.fspath(path), f"line {number} is not a JSON object"
                )
            yield msg


def load(graph: IdentityGraph, events: Any) -> Iterator[KeptEvent]:
    """The events to analyse, validated as ``ingest`` validates them, each once (the first of
    an event id wins); operator events (merge, split, forget) are left out."""
    if events is None:
        source: Iterable[Any] = graph.kept_events()
    elif is_path(events):
        source = read_jsonl(events)
    elif isinstance(events, (bytes, Mapping)) or not isinstance(events, Iterable):
        raise InvalidQueryError(
            "events", events, "must be None (the kept events), an iterable of events or a path"
        )
    else:
        source = events
    build = graph._build
    kinds = graph._kinds
    priority = graph.rules.compiled.kind_index
    seen: set[str] = set()
    for index, event in enumerate(source):
        if isinstance(event, KeptEvent):
            kept: KeptEvent | None = event
            ids = tuple(sorted(event.identifiers, key=lambda i: priority.get(i.kind, 1 << 30)))
            if ids != event.identifiers:
                kept = KeptEvent(
                    event.event_id,
                    event.ts,
                    event.type,
                    event.name,
                    ids,
                    event.properties,
                    event.context,
                )
        else:
            try:
                rec = build.from_object(event)
                if isinstance(event, Mapping):
                    mtype = event.get("type")
                    kept = kept_event(
                        rec,
                        kinds,
                        mtype if isinstance(mtype, str) else None,
                        check_context(event.get("context")),
                    )
                else:
                    kept = kept_event(rec, kinds)
            except ValidationError as exc:
                if isinstance(event, Mapping):
                    relabel(exc, MESSAGE_FIELDS)
                raise exc.at_index(index) from None
        if kept is None or kept.event_id in seen:
            continue
        seen.add(kept.event_id)
        yield kept


def identity_map(graph: IdentityGraph) -> dict[tuple[str, str], str]:
    return {(k, v): pid for k, v, pid in graph._identity_rows()}


def companies(graph: IdentityGraph) -> dict[str, str | None]:
    return {p.id: p.company_id for p in graph.profiles()}


def stitch(
    events: Iterable[KeptEvent], idmap: Mapping[tuple[str, str], str]
) -> Iterator[tuple[str, Identifier, KeptEvent]]:
    """``(person, identifier, event)``: the person is the profile of the event's
    highest-priority identifier that the graph holds; events of nobody are left out."""
    for event in events:
        for ident in event.identifiers:
            pid = idmap.get((ident.kind, ident.value))
            if pid is not None:
                yield pid, ident, event
                break


def bucket_key(by: str, event: KeptEvent) -> Any:
    """The bucket of one event for ``by`` (a day, a week, or a property's value)."""
    if by == "day":
        return datetime.fromtimestamp(event.ts, timezone.utc).date().isoformat()
    if by == "week":
        day = datetime.fromtimestamp(event.ts, timezone.utc).date()
        return (day - timedelta(days=day.weekday())).isoformat()
    props = event.properties
    value = None if props is None else props.get(by)
    if isinstance(value, (list, dict)):
        return json.dumps(value, sort_keys=True)
    return value


def sort_buckets(counts: Mapping[Any, Any]) -> dict[Any, Any]:
    return dict(sorted(counts.items(), key=lambda kv: (kv[0] is None, str(kv[0]))))


def nearest_rank(values: Sequence[float], percent: int) -> float | None:
    """The ``percent``-th percentile by the nearest-rank method (an observed value)."""
    if not values:
        return None
    ordered = sorted(values)
    rank = (len(ordered) * percent + 99) // 100
    return ordered[max(rank, 1) - 1]
