"""Arguments and events of the analytics queries: validation, loading, stitching."""

from __future__ import annotations

import json
import math
import os
import re
import sys
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

from identityres._events import MESSAGE_FIELDS, check_context, relabel, to_timestamp
from identityres._kept import KeptEvent, kept_event
from identityres._model import Identifier
from identityres.errors import ConfigurationError, InvalidQueryError, ValidationError

if TYPE_CHECKING:
    from identityres._graph import IdentityGraph

#: ``by`` values that are not property names
TIME_BUCKETS = ("day", "week")
COMPANY = "company"

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


class Identities:
    """What a query stitches events with (docs/analytics.md, "The identity map"): a live
    graph, a ``batch.resolve`` result, or a directory of tables ``BatchResult.write`` (or
    :func:`identityres.analytics.write_identity_map`) wrote. ``graph`` validates the events
    (the live graph, else an empty graph with the same rules)."""

    def __init__(
        self, graph: IdentityGraph, live: bool, batch: Any = None, path: Any = None
    ) -> None:
        self.graph = graph
        self.live = live
        self._batch = batch
        self._path = path

    def rows(self) -> Iterable[tuple[str, str, str]]:
        """``(kind, value, profile id)`` for every identifier."""
        if self.live:
            return self.graph._identity_rows()
        table = self.arrow()
        return zip(*(table.column(c).to_pylist() for c in _MAP_COLUMNS), strict=True)

    def arrow(self) -> Any:
        """The identity map as an Arrow table (``kind``, ``value``, ``profile_id``)."""
        pa = arrow_module()
        if self._batch is not None:
            return self._batch.identity_map.select(list(_MAP_COLUMNS))
        if self._path is not None:
            return _read_table(self._path, "identity_map", _MAP_COLUMNS)
        rows = self.graph._identity_rows()
        columns = [list(c) for c in zip(*rows, strict=True)] if rows else [[] for _ in _MAP_COLUMNS]
        return pa.table(
            {c: pa.array(v, pa.string()) for c, v in zip(_MAP_COLUMNS, columns, strict=True)}
        )

    def map_file(self) -> str | None:
        """The path of the ``identity_map.parquet`` the map is read from, if it is a file."""
        if self._path is None:
            return None
        return os.path.join(os.fspath(self._path), "identity_map.parquet")

    def companies(self) -> dict[str, str | None]:
        """Each profile's company now."""
        if self.live:
            return {p.id: p.company_id for p in self.graph.profiles()}
        if self._batch is not None:
            table = self._batch.profiles
        else:
            table = _read_table(self._path, "profiles", ("profile_id", "company_id"))
        return dict(
            zip(
                table.column("profile_id").to_pylist(),
                table.column("company_id").to_pylist(),
                strict=True,
            )
        )


_MAP_COLUMNS = ("kind", "value", "profile_id")


def arrow_module() -> Any:
    try:
        import pyarrow
    except ImportError:
        raise ConfigurationError(
            "reading Parquet or a batch result needs pyarrow: pip install 'identityres[batch]'"
        ) from None
    return pyarrow


def _read_table(directory: Any, name: str, columns: tuple[str, ...]) -> Any:
    arrow_module()
    import pyarrow.parquet as pq

    path = os.path.join(directory, name + ".parquet")
    try:
        return pq.read_table(path, columns=list(columns))
    except (OSError, KeyError, ValueError) as exc:
        field = "graph" if name == "identity_map" else "by"
        raise InvalidQueryError(field, os.fspath(directory), f"{path}: {exc}") from None


def check_graph(graph: Any) -> Identities:
    """The identity map to stitch with: an ``IdentityGraph``, a ``BatchResult`` or the path
    of a directory holding ``identity_map.parquet``."""
    from identityres._graph import IdentityGraph

    if isinstance(graph, IdentityGraph):
        return Identities(graph, True)
    batch = sys.modules.get("identityres.batch")
    if batch is not None and isinstance(graph, batch.BatchResult):
        return Identities(IdentityGraph(rules=graph.rules), False, batch=graph)
    if is_path(graph):
        if not os.path.isfile(os.path.join(graph, "identity_map.parquet")):
            raise InvalidQueryError(
                "graph", os.fspath(graph), "is not a directory holding identity_map.parquet"
            )
        return Identities(IdentityGraph(), False, path=graph)
    raise InvalidQueryError(
        "graph",
        graph,
        "must be an identityres.IdentityGraph, a batch.BatchResult or a directory holding "
        "identity_map.parquet",
    )


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


def is_parquet(path: Any) -> bool:
    """A Parquet file, by its name (``.parquet``/``.pq``), as ``batch.resolve`` tells it."""
    name: str = os.fspath(path)
    return name.lower().endswith((".parquet", ".pq"))


#: columns of a Parquet file of events read as JSON objects (docs/batch.md, Input columns)
_JSON_COLUMNS = frozenset(("traits", "properties", "identifiers", "set_once", "context"))


def _cell(name: str, value: Any) -> Any:
    if name in _JSON_COLUMNS:
        if isinstance(value, str):
            return json.loads(value)
        if isinstance(value, dict):  # a struct: its null fields are absent
            return {k: v for k, v in value.items() if v is not None}
        if isinstance(value, list):  # a map: [(key, value), ...]
            return dict(value)
        return value
    if isinstance(value, datetime) and value.tzinfo is None:
        return value.replace(tzinfo=timezone.utc)  # a timestamp without a zone is UTC
    return value


def read_parquet(path: str | os.PathLike[str]) -> Iterator[dict[str, Any]]:
    """The messages of a Parquet file of events, one per row, as ``batch.resolve`` reads them:
    the Segment fields as columns, a null cell the same as an absent key."""
    arrow_module()
    import pyarrow.parquet as pq

    try:
        handle = pq.ParquetFile(os.fspath(path))
    except (OSError, ValueError) as exc:
        raise InvalidQueryError("events", os.fspath(path), f"cannot be read: {exc}") from None
    for batch in handle.iter_batches(batch_size=65_536):
        names = batch.schema.names
        columns = [batch.column(i).to_pylist() for i in range(batch.num_columns)]
        for row in zip(*columns, strict=True):
            yield {n: _cell(n, v) for n, v in zip(names, row, strict=True) if v is not None}


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
        source = read_parquet(events) if is_parquet(events) else read_jsonl(events)
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


def identity_map(source: Identities) -> dict[tuple[str, str], str]:
    return {(k, v): pid for k, v, pid in source.rows()}


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
