"""Batch re-resolution: the identity map of a whole event history, columnar, with the same
answer as the online engine (docs/batch.md).

The method, in four phases:

1. **decode** — every event becomes a validated ``Record`` exactly as ``IdentityGraph.ingest``
   makes it (one ``RecordBuilder``: normalization, blocked values, event ids, fingerprints),
   and event-id duplicates and conflicts are decided by the same ``admit`` (R8);
2. **components** — the *link components* (connected components over every link any event
   carried, whatever the rules decide) by a vectorized union-find over numpy arrays;
3. **classify** — a component that no rule can touch (no reset and no operator event in it,
   at most ``limits[kind]`` identifiers of each limited kind, no more than
   ``max_profile_size`` identifiers) is one profile; its canonical id and first/last seen are
   group-wise minima and maxima. Every other component ("conflicted") is decided by the
   online engine itself, over its own events only, in ``(timestamp, event_id)`` order;
4. **tables** — the identity map, profiles, refusals, companies and statistics as Arrow
   tables.

Needs the ``identityres[batch]`` extra (pyarrow, numpy).
"""

from __future__ import annotations

import gzip
import heapq
import json
import os
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

try:
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "identityres.batch needs pyarrow and numpy: pip install 'identityres[batch]'"
    ) from exc

from identityres._engine import Engine, blocked_key
from identityres._events import (
    COMPANY,
    COMPANY_KIND,
    FORGET,
    IDENTIFY,
    MAX_NESTING,
    MAX_TIMESTAMP,
    MERGE,
    MIN_TIMESTAMP,
    RESET,
    SPLIT,
    TRACK,
    Record,
    RecordBuilder,
    _check_mapping,
    _json,
    _json_data,
)
from identityres._formats import translate
from identityres._graph import EventError, IdentityGraph, bad_event
from identityres._merge import keep
from identityres._rules import Rules, strip_whitespace
from identityres._working_set import WorkingSet
from identityres._writers import CONFLICT, admit, conflict
from identityres.errors import ConfigurationError, InvalidEventError, ValidationError
from identityres.storage._protocol import Store
from identityres.storage.memory import MemoryStore

__all__ = ["BatchResult", "resolve"]

Format = Literal["parquet", "jsonl", "jsonl.gz"]
#: the columns a columnar source may carry (docs/batch.md, Input)
COLUMNS = (
    "type",
    "event",
    "name",
    "userId",
    "anonymousId",
    "previousId",
    "groupId",
    "timestamp",
    "originalTimestamp",
    "messageId",
    "traits",
    "properties",
    "identifiers",
    "set_once",
)
_JSON_COLUMNS = ("traits", "properties", "identifiers", "set_once")
_OPERATOR = (RESET, MERGE, SPLIT, FORGET)
_ROWS_PER_CHUNK = 65_536


def _system_clock() -> float:
    return time.time()


# -- reading sources ----------------------------------------------------------------------


def _format_of(path: Path) -> Format:
    name = path.name.lower()
    if name.endswith((".parquet", ".pq")):
        return "parquet"
    if name.endswith((".jsonl.gz", ".ndjson.gz", ".json.gz")):
        return "jsonl.gz"
    if name.endswith((".jsonl", ".ndjson", ".json")):
        return "jsonl"
    raise ConfigurationError(
        f"source={str(path)!r}: cannot tell the format from the name; pass "
        "format='parquet', 'jsonl' or 'jsonl.gz'"
    )


def _files(path: Path, fmt: Format | None) -> list[tuple[Path, Format]]:
    if path.is_dir():
        out = []
        for child in sorted(path.rglob("*")):
            if not child.is_file() or child.name.startswith((".", "_")):
                continue
            try:
                out.append((child, fmt or _format_of(child)))
            except ConfigurationError:
                continue  # (other files in the directory: _SUCCESS, README, ...)
        if not out:
            raise ConfigurationError(f"source={str(path)!r}: no Parquet or JSONL files in it")
        return out
    if not path.exists():
        raise ConfigurationError(f"source={str(path)!r}: no such file or directory")
    return [(path, fmt or _format_of(path))]


def _jsonl_messages(path: Path, gz: bool) -> Iterator[Any]:
    opener: Callable[..., Any] = gzip.open if gz else open
    number = 0
    try:
        # (bytes, decoded line by line: a decoding error then names its line, where a text
        # stream decodes blocks ahead of the lines it hands out)
        with opener(path, "rb") as lines:
            for number, raw in enumerate(lines, 1):
                try:
                    line = raw.decode("utf-8")
                    if not line.strip():
                        continue
                    yield json.loads(line)
                except ValueError as exc:  # (UnicodeDecodeError too)
                    raise InvalidEventError(
                        "line", f"{path}:{number}", f"not a JSON object: {exc}"
                    ) from None
    except (OSError, EOFError) as exc:
        # (not gzip, a truncated gzip stream: the line the reading stopped at, the one
        # after the last read)
        raise InvalidEventError("line", f"{path}:{number + 1}", f"unreadable: {exc}") from None


def _cell(name: str, value: Any) -> Any:
    """One Arrow cell as ``from_message`` reads it (docs/batch.md, Input)."""
    if value is None:
        return None
    if name in _JSON_COLUMNS:
        if isinstance(value, str):
            try:
                return json.loads(value)
            except (ValueError, RecursionError):
                # (not JSON text: the text itself goes to the builder, which refuses it naming
                # the column, so ``on_error="skip"`` skips just this row)
                return value
        if isinstance(value, dict):
            # a struct: its null fields are absent (Parquet cannot tell null from absent)
            return {k: v for k, v in value.items() if v is not None}
        if isinstance(value, list):  # a map column: [(key, value), ...]
            return dict(value)
        return value
    if isinstance(value, datetime):
        return value if value.tzinfo is not None else value.replace(tzinfo=timezone.utc)
    return value


def _table_messages(table: pa.Table) -> Iterator[dict[str, Any]]:
    names = [n for n in table.column_names if n in COLUMNS]
    if "type" not in names:
        raise ConfigurationError(
            "source: a columnar source needs a 'type' column (identify, track, alias, ...); "
            f"it has {table.column_names!r}"
        )
    table = table.select(names)
    for chunk in table.to_batches(max_chunksize=_ROWS_PER_CHUNK):
        columns = [chunk.column(i).to_pylist() for i in range(chunk.num_columns)]
        for row in zip(*columns, strict=True):
            yield {n: _cell(n, v) for n, v in zip(names, row, strict=True) if v is not None}


def _messages(source: Any, fmt: Format | None) -> Iterable[Any]:
    if isinstance(source, pa.Table):
        return _table_messages(source)
    if isinstance(source, pa.RecordBatch):
        return _table_messages(pa.Table.from_batches([source]))
    if isinstance(source, (str, os.PathLike)):
        files = _files(Path(source), fmt)

        def read() -> Iterator[Any]:
            for path, f in files:
                if f == "parquet":
                    try:
                        table = pq.read_table(path)
                    except (pa.ArrowException, OSError) as exc:
                        raise _unreadable_parquet(path, exc) from None
                    yield from _table_messages(table)
                else:
                    yield from _jsonl_messages(path, f == "jsonl.gz")

        return read()
    try:
        import pyarrow.dataset as ds

        if isinstance(source, ds.Dataset):
            return _table_messages(source.to_table())
    except ImportError:  # pragma: no cover
        pass
    if source is None or isinstance(source, (bytes, bytearray, Mapping)):
        raise InvalidEventError(
            "source",
            source,
            "must be a path, a pyarrow Table or Dataset, or an iterable of events",
        )
    return source  # type: ignore[no-any-return]


# -- the events, and the columnar lane --------------------------------------------------


class _Events:
    """The admitted events (each ``event_id`` once): their keys and types as arrays, and the
    ``Record`` of each, kept for the events read through ``RecordBuilder`` and rebuilt on
    demand (with the same builder, so the same record) for the rows of the columnar lane."""

    def __init__(
        self,
        build: RecordBuilder,
        ts: np.ndarray,
        eid: pa.Array[Any],
        etype: np.ndarray,
        py: dict[int, Record],
        table: pa.Table | None,
        row: np.ndarray,
        anchor: np.ndarray | None = None,
        data: _RowData | None = None,
        row_nodes: list[np.ndarray] | None = None,
        node_kind: np.ndarray | None = None,
        node_value: Any = None,
        reload: Callable[[], pa.Table] | None = None,
    ) -> None:
        self.build = build
        self.ts = ts
        self.eid = eid
        self.etype = etype
        self.py = py
        #: the source's rows (``row``: each event's), or how to read them again: a file
        #: source is not kept in memory (a quarter of the peak at 10^6 identifiers) but
        #: read again by ``graph()``/``seed()``, the only readers of the columnar rows
        self.table = table
        self.reload = reload
        self.row = row
        #: per event, the node of its first identifier (-1: none)
        self.anchor = np.full(len(ts), -1, dtype=np.int64) if anchor is None else anchor
        #: per event, the traits and company the columnar lane read (none for the others)
        self.data = data
        #: per identifier column, in kind order, the node of each columnar lane event (the
        #: first ones; -1: none); and the kind and value of every node
        self.row_nodes = row_nodes
        #: how many events the columnar lane read (the first ones)
        self.lane_size = len(row_nodes[0]) if row_nodes else 0
        self.node_kind = node_kind
        self.node_value = node_value

    def __len__(self) -> int:
        return len(self.ts)

    def decided(self, indices: np.ndarray) -> Iterator[Record]:
        """The records of these events (an index array, in the order given) for the engine
        that decides the conflicted components inside :func:`resolve`: the record lane's as
        kept, and the columnar lane's made directly from what the lane read — the identifiers
        as ``RecordBuilder._finish`` orders them (by kind: ``row_nodes`` holds the lane's
        columns kind by kind, at most one value each), the traits and company the lane read
        with the builder's own checks. ``Engine.apply`` reads neither ``content`` nor, beyond
        storing it, ``fingerprint``, so those are left empty: this engine's state is read for
        the tables and never continued (``BatchResult.graph``/``seed`` rebuild every record
        through the builder). ``tests/test_batch_lanes.py`` checks these records against the
        builder's, field by field."""
        py = self.py
        nodes = self.row_nodes
        in_lane = indices < self.lane_size
        lane = indices[in_lane]
        made: list[Record] = []
        if len(lane):
            assert nodes is not None and self.node_kind is not None
            made = self._lane_records(lane, nodes)
        # (the lane's records in ``lane`` order, which is their order among ``indices``)
        next_made = iter(made).__next__
        for i, own in zip(indices.tolist(), in_lane.tolist(), strict=True):
            yield next_made() if own else py[i]

    def _lane_records(self, lane: np.ndarray, nodes: list[np.ndarray]) -> list[Record]:
        """The records of these columnar lane events, in order (see :meth:`decided`). Rows
        are grouped by which identifier columns they hold (a handful of combinations), so
        that each group's ``ids`` tuples are zipped from whole columns of ``(kind, value)``
        pairs, kinds in column order (kind order), as the per-row filter gave them."""
        assert self.node_kind is not None
        held = np.stack([column[lane] for column in nodes], axis=1)
        need = np.unique(held[held >= 0])
        values = self.node_value.take(pa.array(need)).to_pylist()
        pairs = list(zip(self.node_kind[need].tolist(), values, strict=True))
        present = held >= 0
        # per row, which columns it holds, as bits
        signature = (present * (1 << np.arange(held.shape[1], dtype=np.int64))).sum(axis=1)
        ids: list[Any] = [()] * len(lane)
        for sig in np.unique(signature).tolist():
            rows = np.flatnonzero(signature == sig)
            columns = [
                [pairs[p] for p in np.searchsorted(need, held[rows, c]).tolist()]
                for c in range(held.shape[1])
                if sig >> c & 1
            ]
            got = list(zip(*columns, strict=True)) if columns else [()] * len(rows)
            for r, t in zip(rows.tolist(), got, strict=True):
                ids[r] = t
        data = self.data
        etypes = self.etype[lane].tolist()
        tss = self.ts[lane].tolist()
        eids: list[Any] = self.eid.take(pa.array(lane)).to_pylist()
        if data is None:
            return [
                Record(etype, ts, eid, t, (), (), b"")
                for etype, ts, eid, t in zip(etypes, tss, eids, ids, strict=True)
            ]
        traits: list[Any] = [*data.traits, None]  # (code -1: none)
        company: list[Any] = [*data.company, None]
        tcodes = data.traits_code[lane].tolist()
        ccodes = data.company_code[lane].tolist()
        out: list[Record] = []
        append = out.append
        for etype, ts, eid, t, tc, cc in zip(etypes, tss, eids, ids, tcodes, ccodes, strict=True):
            if etype == IDENTIFY:
                append(Record(etype, ts, eid, t, (), (), b"", traits[tc]))
            elif etype == COMPANY:
                append(Record(etype, ts, eid, t, (), (), b"", None, None, company[cc], traits[tc]))
            else:
                append(Record(etype, ts, eid, t, (), (), b""))
        return out

    def rows(self) -> Callable[[], pa.Table | None]:
        """The source's rows, read (a file source: read again) at the first call only, so
        that one caller's several :meth:`records` read a file source once."""
        held: list[pa.Table | None] = []

        def rows() -> pa.Table | None:
            if not held:
                held.append(
                    self.table if self.table is not None or self.reload is None else self.reload()
                )
            return held[0]

        return rows

    def records(
        self,
        indices: Iterable[int],
        *,
        ordered: bool = True,
        rows: Callable[[], pa.Table | None] | None = None,
    ) -> Iterator[tuple[int, Record]]:
        """``(index, record)`` for these events: in the order given, or (``ordered=False``)
        the kept ones first and the rebuilt ones a chunk at a time, in index order. The
        rebuilt ones are read from ``rows()`` (:meth:`rows`; by default a reading of their
        own)."""
        py = self.py
        if not ordered:
            rest: list[int] = []
            for i in indices:
                rec = py.get(i)
                if rec is None:
                    rest.append(i)
                else:
                    yield i, rec
            rest.sort()
            if not rest:
                return
            table = (self.rows() if rows is None else rows)()
            for start in range(0, len(rest), _ROWS_PER_CHUNK):
                yield from self._rebuilt(table, rest[start : start + _ROWS_PER_CHUNK])
            return
        wanted = list(indices)
        built = dict(self.records((i for i in wanted if i not in py), ordered=False, rows=rows))
        for i in wanted:
            rec = py.get(i)
            yield i, built[i] if rec is None else rec

    def _rebuilt(self, table: pa.Table | None, indices: list[int]) -> Iterator[tuple[int, Record]]:
        if not indices:
            return
        assert table is not None
        at = np.array(indices, dtype=np.int64)
        where = self.row[at]
        ascending = bool(np.all(where[1:] >= where[:-1]))
        rows = _take_rows(table, where) if ascending else table.take(where)
        # A track/page/screen row of the lane is what ``from_message`` would pass to
        # ``RecordBuilder.track``: its name, ids and properties, its parsed time (the lane's
        # equals it) and nothing extracted (the lane holds no row with something to
        # extract); those calls are made directly. Other rows are read as messages.
        direct = self.etype[at] == TRACK
        built: dict[int, Record] = {}
        if direct.any():
            track = self.build.track
            sub = rows.filter(pa.array(direct))
            got = {
                c: sub.column(c).to_pylist() if c in sub.column_names else [None] * len(sub)
                for c in ("type", "event", "name", "userId", "anonymousId", "properties")
            }
            parsed: dict[str, Any] = {}
            eids = self.eid.take(at[direct]).to_pylist()
            for j, (i, ts, eid) in enumerate(
                zip(at[direct].tolist(), self.ts[at[direct]].tolist(), eids, strict=True)
            ):
                mtype = got["type"][j]
                name = got["event"][j] if mtype == "track" else got["name"][j] or mtype
                text = got["properties"][j]
                props = None
                if text is not None:
                    props = parsed.get(text)
                    if props is None:
                        props = parsed[text] = json.loads(text)
                built[i] = track(
                    name, got["anonymousId"][j], got["userId"][j], None, props, ts, eid, None
                )
        others = at[~direct].tolist()
        if others:
            messages = _table_messages(rows.filter(pa.array(~direct)))
            for i, msg in zip(others, messages, strict=True):
                built[i] = self.build.from_message(msg)
        for i in indices:
            yield i, built[i]


_ISO = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,6})?Z$"
_FAST_TYPES = ("identify", "track", "page", "screen", "group")


#: per length of an ISO-8601 ``...Z`` text _ISO matches, what each byte must be: a digit
#: (``None``) or that character
_ISO_FORMS = {
    length: [None if ch == "d" else ord(ch) for ch in form]
    for form in ["dddd-dd-ddTdd:dd:ddZ"] + [f"dddd-dd-ddTdd:dd:dd.{'d' * k}Z" for k in range(1, 7)]
    for length in [len(form)]
}


def _iso_times(texts: Any) -> np.ndarray:
    """Per text (a string array): whether it matches :data:`_ISO` (False for a null). When
    every text is valid and of one length, the check is made on the bytes in numpy, a chunk
    of rows at a time (the texts' bytes as a matrix, one row per text: each position must be
    a digit or the form's character, which is what the pattern says of a text of that
    length); else by Arrow's regex."""
    n = len(texts)
    if n == 0:
        return np.zeros(0, dtype=bool)
    low, high = (x.as_py() for x in pc.min_max(pc.binary_length(texts)).values())
    form = _ISO_FORMS.get(high)
    if texts.null_count or low != high or form is None:
        iso: Any = pc.fill_null(pc.match_substring_regex(texts, _ISO), False)
        out: np.ndarray = iso.to_numpy(zero_copy_only=False)
        return out
    width = int(high)
    start = int(np.frombuffer(texts.buffers()[1], dtype=np.int32)[texts.offset])
    data = np.frombuffer(texts.buffers()[2], dtype=np.uint8)[start : start + n * width]
    digit = [i for i, c in enumerate(form) if c is None]
    fixed = [i for i, c in enumerate(form) if c is not None]
    chars = np.array([form[i] for i in fixed], dtype=np.uint8)
    out = np.empty(n, dtype=bool)
    step = 1 << 18
    for lo in range(0, n, step):
        rows = data[lo * width : min(n, lo + step) * width].reshape(-1, width)
        out[lo : lo + len(rows)] = ((rows[:, digit] - np.uint8(48)) < 10).all(axis=1) & (
            rows[:, fixed] == chars
        ).all(axis=1)
    return out


def _string_column(table: pa.Table, name: str) -> Any:
    """A column as one string array (``None`` when absent); other types raise ``TypeError``."""
    if name not in table.column_names:
        return None
    col: Any = table.column(name)
    if pa.types.is_dictionary(col.type) and _is_text(col.type.value_type):
        col = col.cast(pa.string())
    col = col.combine_chunks()
    if pa.types.is_large_string(col.type):
        col = col.cast(pa.string())
    if pa.types.is_null(col.type):
        return pa.nulls(len(col), pa.string())
    if not pa.types.is_string(col.type):
        raise TypeError(name)
    return col


def _is_text(t: Any) -> bool:
    return bool(pa.types.is_string(t) or pa.types.is_large_string(t))


def _coded(table: pa.Table, name: str) -> tuple[np.ndarray, Any] | None:
    """A text column as codes: per row the code of its value (-1: null) and the distinct
    values (a string array); ``None`` when absent, ``TypeError`` for other types. A
    dictionary column (as Parquet text columns are read: ``_read_table``) is used as it
    is, its chunks' dictionaries unified; a string column is dictionary-encoded."""
    if name not in table.column_names:
        return None
    col: Any = table.column(name)
    if pa.types.is_null(col.type):
        return np.full(len(col), -1, dtype=np.int64), pa.array([], pa.string())
    if pa.types.is_dictionary(col.type):
        if not _is_text(col.type.value_type):
            raise TypeError(name)
        chunks = col.chunks
        if not chunks:
            return np.zeros(0, dtype=np.int64), pa.array([], pa.string())
        values, maps, which = _unified(chunks)
        # (indices cast first: they may be unsigned, where -1 is no value)
        codes = np.concatenate(
            [
                maps[k][pc.fill_null(c.indices.cast(pa.int64()), -1).to_numpy(zero_copy_only=False)]
                for c, k in zip(chunks, which, strict=True)
            ]
        )
        if values.null_count:
            # a valid index may point at a null value (Arrow allows it, Parquet never writes
            # it): that row is a null, as the builder reads it
            null_value = values.is_null().to_numpy(zero_copy_only=False)
            codes[_lookup(codes, null_value)] = -1
        return codes, values
    if not _is_text(col.type):
        raise TypeError(name)
    enc: Any = pc.dictionary_encode(col.combine_chunks().cast(pa.string()))
    codes = pc.fill_null(enc.indices, -1).to_numpy(zero_copy_only=False).astype(np.int64)
    return codes, enc.dictionary


def _unified(chunks: list[Any]) -> tuple[Any, list[np.ndarray], list[int]]:
    """What ``unify_dictionaries`` makes of dictionary chunks, computed over their distinct
    dictionaries only: the unified values (a string array), per distinct dictionary the
    unified code of each of its codes (with a last entry -1, where a null index lands), and
    per chunk which distinct dictionary it holds. The Parquet reader hands every batch of a
    row group the same dictionary (one buffer), so 21 chunks of 2.6x10^6 rows hold 3;
    ``unify_dictionaries`` over all 21 cost ~1 s at 10^6 identifiers, over the 3 ~0.3 s.
    Dictionaries are told apart by their buffers (same buffers, offset and length: same
    values); the order is unify_dictionaries' own (first appearance, dictionary after
    dictionary), so values and codes are the same."""
    seen: dict[tuple[Any, ...], int] = {}
    which: list[int] = []
    distinct: list[Any] = []
    for c in chunks:
        d = c.dictionary
        key = (
            *(None if b is None else b.address for b in d.buffers()),
            d.offset,
            len(d),
        )
        k = seen.get(key)
        if k is None:
            k = seen[key] = len(distinct)
            distinct.append(d)
        which.append(k)
    if len(distinct) == 1:  # (one dictionary: its codes are the unified ones)
        values: Any = distinct[0].cast(pa.string())
        return values, [np.append(np.arange(len(values), dtype=np.int64), -1)], which
    # (the distinct dictionaries end to end, dictionary-encoded: values in order of first
    # appearance, as unify_dictionaries adds them, and a null entry a null code, where
    # unify_dictionaries refuses a dictionary holding one: "cannot yet unify dictionaries
    # with nulls", which Arrow allows and the builder reads as a null row)
    enc: Any = pc.dictionary_encode(pa.concat_arrays([d.cast(pa.string()) for d in distinct]))
    codes = pc.fill_null(enc.indices.cast(pa.int64()), -1).to_numpy(zero_copy_only=False)
    ends = np.cumsum([len(d) for d in distinct])[:-1]
    maps = [np.append(part, -1) for part in np.split(codes, ends)]
    return enc.dictionary, maps, which


def _lookup(codes: np.ndarray, per_value: np.ndarray, null: bool = False) -> np.ndarray:
    """Per row, ``per_value`` of its code (``null`` for a null)."""
    table = np.empty(len(per_value) + 1, dtype=per_value.dtype)
    table[0] = null
    table[1:] = per_value
    out: np.ndarray = table[codes + 1]
    return out


def _valid(arr: Any, n: int) -> np.ndarray:
    if arr is None:
        return np.zeros(n, dtype=bool)
    out: np.ndarray = arr.is_valid().to_numpy(zero_copy_only=False)
    return out


#: per identifier column: its kind, each row's code, the normalized value of each code
Columns = list[tuple[int, np.ndarray, Any]]


class _RowData:
    """What the columnar lane read beside the identifiers: per row, the code of its traits
    (an identify's traits, a group's company traits; -1: none) and of its company (a
    group's ``groupId``; -1: none), and per code the traits as the builder makes them (JSON
    data; ``None`` for ``{}``) and the normalized company id."""

    def __init__(
        self,
        traits_code: np.ndarray,
        traits: list[dict[str, Any] | None],
        company_code: np.ndarray,
        company: list[str | None],
    ) -> None:
        self.traits_code = traits_code
        self.traits = traits
        self.company_code = company_code
        self.company = company

    def take(self, rows: np.ndarray, extra: int) -> _RowData:
        """The data of these rows, then ``extra`` rows of none (the record lane's)."""
        pad = np.full(extra, -1, dtype=np.int64)
        return _RowData(
            np.concatenate([self.traits_code[rows], pad]),
            self.traits,
            np.concatenate([self.company_code[rows], pad]),
            self.company,
        )


def _traits_extraction(rules: Any) -> tuple[list[tuple[str, int, str]], set[str]]:
    """An identify's extractors that read a key of ``traits`` itself, unconditionally, for a
    kind other than user_id and anonymous_id (``(leaf, kind, path)`` in the rules' order:
    the lane extracts them as the builder does), and the keys of ``traits`` other
    extractors read (a row holding one is left to the builder)."""
    compiled = rules.extractors.get("identify")
    plain: list[tuple[str, int, str]] = []
    other: set[str] = set()
    if compiled is None:
        return plain, other
    parents, extractors = compiled
    for at, leaf, kind, conditions, path in extractors:
        parent = parents[at]
        if not parent or parent[0] != "traits":
            continue
        if parent == ("traits",) and not conditions and kind not in (rules.user, rules.anon):
            plain.append((leaf, kind, path))
        else:
            other.add(parent[1] if len(parent) > 1 else leaf)
    return plain, other


def _traits_of(
    texts: list[str | None],
    wanted: np.ndarray,
    build: RecordBuilder,
    rules: Any,
    extract: list[tuple[str, int, str]] | None = None,
    keys: frozenset[str] | set[str] = frozenset(),
    plain: np.ndarray | None = None,
    flat: np.ndarray | None = None,
) -> tuple[np.ndarray, list[Any], dict[int, list[str | None]]]:
    """Per distinct traits text (those ``wanted``): whether the builder reads it alike (the
    JSON text of an object, JSON data, no key in ``keys``, what ``extract`` finds valid and
    not blocked), the traits it makes of it, and per kind the identifier ``extract`` finds
    in each text (the first extractor of a kind that finds a str or int winning, as
    ``RecordBuilder.extract``; only kinds found in some good text). A text ``plain`` says
    is certainly JSON data once parsed (:func:`_plain_json`) is not written and read again
    to check it. The texts ``flat`` says are each exactly one flat JSON object
    (:func:`_flat_json`) are parsed by one ``json.loads`` of their JSON array, which is each
    one's ``json.loads`` (a JSON array of valid values reads as the list of their readings)
    at a quarter of the cost. The steps go column by column over the texts rather than text
    by text (fewer Python operations per text); the values found are normalized per distinct
    ``(kind, value)`` (:func:`_normalized`)."""
    good = np.zeros(len(texts), dtype=bool)
    out: list[Any] = [None] * len(texts)
    found: dict[int, list[str | None]] = {}
    at = np.flatnonzero(wanted)
    if not len(at):
        return good, out, found
    chosen = [texts[j] or "" for j in at.tolist()]
    # the reading of each wanted text (None: unreadable, which is never an object)
    read: list[Any] = [None] * len(at)
    alone = np.ones(len(at), dtype=bool)
    if flat is not None:
        together = np.flatnonzero(flat[at])
        if len(together):
            try:
                joined = json.loads("[" + ",".join([chosen[p] for p in together.tolist()]) + "]")
            except (ValueError, RecursionError):  # (cannot happen: then each on its own)
                joined = None
            if isinstance(joined, list) and len(joined) == len(together):
                for p, value in zip(together.tolist(), joined, strict=True):
                    read[p] = value
                alone[together] = False
    for p in np.flatnonzero(alone).tolist():
        try:
            read[p] = json.loads(chosen[p])
        except (ValueError, RecursionError):
            continue
    ok = [type(v) is dict and keys.isdisjoint(v) for v in read]
    data: list[Any] = [None] * len(at)
    sure = [False] * len(at) if plain is None else plain[at].tolist()
    for p, (value, fine, known) in enumerate(zip(read, ok, sure, strict=True)):
        if not fine:
            continue
        if known:
            data[p] = value or None  # (what the check below returns for such a text)
            continue
        try:
            checked = _json_data("traits", _check_mapping("traits", value))
            if checked is not None:
                _json(checked, "traits")
            data[p] = checked
        except (ValueError, ValidationError, RecursionError):
            ok[p] = False
    # identifiers in the traits: per kind, the first extractor's str/int value per text
    taken: dict[int, dict[int, Any]] = {}
    paths: dict[tuple[int, Any], str] = {}
    for leaf, kind, path in extract or ():
        mine = taken.setdefault(kind, {})
        raws = [v.get(leaf) if fine else None for v, fine in zip(read, ok, strict=True)]
        for p, raw in enumerate(raws):
            if (type(raw) is str or type(raw) is int) and p not in mine:
                mine[p] = raw
                paths.setdefault((kind, raw), path)
    if paths:
        normal = _normalized(paths, build, rules)
        for kind, mine in taken.items():
            for p, raw in mine.items():
                if normal[kind, raw] is None:
                    ok[p] = False
        for kind, mine in sorted(taken.items()):
            values = {p: normal[kind, raw] for p, raw in mine.items() if ok[p]}
            if values:
                per_text: list[str | None] = [None] * len(texts)
                for p, v in values.items():
                    per_text[int(at[p])] = v
                found[kind] = per_text
    for p in np.flatnonzero(np.array(ok, dtype=bool)).tolist():
        j = int(at[p])
        good[j] = True
        out[j] = data[p]
    return good, out, found


def _normalized(
    paths: dict[tuple[int, Any], str], build: RecordBuilder, rules: Any
) -> dict[tuple[int, Any], str | None]:
    """Per ``(kind, raw value)`` found in traits (``paths``: the path it was found at), the
    value as the builder normalizes it, or ``None`` when it is invalid or blocked. ASCII
    text values are checked kind by kind by :func:`_plain_values` first (certainly their
    own normal form and not blocked: the value as it is); only the rest ask the builder."""
    normal: dict[tuple[int, Any], str | None] = {}
    by_kind: dict[int, list[str]] = {}
    for kind, raw in paths:
        if type(raw) is str and raw.isascii():
            by_kind.setdefault(kind, []).append(raw)
    for kind, raws in by_kind.items():
        sure = _plain_values(pa.array(raws, pa.string()), rules, kind)
        for raw, ok in zip(raws, sure.tolist(), strict=True):
            if ok:
                normal[kind, raw] = raw
    for pair, path in paths.items():
        if pair not in normal:
            kind, raw = pair
            try:
                normal[pair] = _builder_value(build, rules, path, kind, raw)
            except (ValueError, RecursionError):  # (a normalizer's: as the text's reading)
                normal[pair] = None
    return normal


def _plain_json(texts: Any) -> np.ndarray:
    """Per JSON text (a string array): True when what ``json.loads`` makes of it is
    certainly JSON data as the builder checks it (``_json_data``): ASCII text with no
    escaped surrogate (``\\ud...``), no ``NaN``/``Infinity``, no number that could overflow
    a float (an exponent, or 16 digits in a row) and at most ``MAX_NESTING`` brackets.
    False means "check it", not "invalid"."""
    if len(texts) == 0:
        return np.zeros(0, dtype=bool)
    risky = r"\\u[dD]|NaN|Infinity|[0-9][eE]|[0-9]{16}"
    ok: Any = pc.and_(pc.string_is_ascii(texts), pc.invert(pc.match_substring_regex(texts, risky)))
    brackets: Any = pc.count_substring_regex(texts, r"[\[{]")
    ok = pc.and_(ok, pc.less_equal(brackets, pa.scalar(MAX_NESTING)))
    out: np.ndarray = pc.fill_null(ok, False).to_numpy(zero_copy_only=False)
    return out


#: one JSON object whose values are strings, numbers, booleans or nulls (no nesting), with
#: JSON's own whitespace: the grammar of RFC 8259, restricted
_JSON_WS = r"[ \t\n\r]*"
_JSON_STRING = r'"(?:[^"\\\x00-\x1f]|\\["\\/bfnrt]|\\u[0-9a-fA-F]{4})*"'
_JSON_SCALAR = (
    _JSON_STRING + r"|-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?|true|false|null"
)
_JSON_MEMBER = f"{_JSON_WS}{_JSON_STRING}{_JSON_WS}:{_JSON_WS}(?:{_JSON_SCALAR}){_JSON_WS}"
_FLAT_OBJECT = f"^{_JSON_WS}\\{{(?:{_JSON_MEMBER}(?:,{_JSON_MEMBER})*|{_JSON_WS})\\}}{_JSON_WS}$"


def _flat_json(texts: Any) -> np.ndarray:
    """Per text (a string array): True when it is certainly exactly one JSON object of
    scalars (:data:`_FLAT_OBJECT`, checked by Arrow), so that texts of this form joined by
    commas inside brackets are a JSON array of exactly them. False means "read it on its
    own", not "invalid"."""
    if len(texts) == 0:
        return np.zeros(0, dtype=bool)
    ok: Any = pc.fill_null(pc.match_substring_regex(texts, _FLAT_OBJECT), False)
    out: np.ndarray = ok.to_numpy(zero_copy_only=False)
    return out


def _columnar(
    table: pa.Table, build: RecordBuilder, rules: Any
) -> tuple[np.ndarray, np.ndarray, np.ndarray, Columns, _RowData, np.ndarray] | None:
    """The vectorized reading of a columnar source: which rows need nothing
    ``RecordBuilder`` would not do alike (plain track/page/screen/identify/group rows: a
    unique ASCII ``messageId`` (or the first of rows that are one event redelivered), an
    ISO-8601 ``...Z`` or Arrow timestamp in the window, no
    identifiers/set_once, identifier values that are valid, normalized per distinct value
    by the builder itself and not blocked, properties and traits as JSON text of an object
    holding no key the extraction reads, a group's company id not blocked).
    Returns ``(fast, etype, ts, columns, data, dropped)`` for the rows (``columns``: per
    identifier column its kind, each row's code in it, and the normalized value of each
    code; ``data``: the rows' traits and companies; ``dropped``: the later rows of a
    redelivery group whose first row is fast), or ``None`` when the table's column types
    leave no fast rows. Every other row is read by ``RecordBuilder`` like ``ingest`` reads
    it."""
    n = table.num_rows
    try:
        mtype = _coded(table, "type")
        mid = _string_column(table, "messageId")
        user = _coded(table, "userId")
        anon = _coded(table, "anonymousId")
        event = _coded(table, "event")
        props = _coded(table, "properties")
    except TypeError:
        return None
    if mtype is None or mid is None or n == 0:
        return None
    type_codes, type_values = mtype
    type_names = type_values.to_pylist()

    def of_type(*names: str) -> np.ndarray:
        return _lookup(type_codes, np.array([t in names for t in type_names], dtype=bool))

    fast = of_type(*_FAST_TYPES)
    is_identify = of_type("identify")
    is_track = of_type("track")
    for name in ("identifiers", "set_once"):
        if name in table.column_names:
            fast &= ~table.column(name).is_valid().to_numpy(zero_copy_only=False)
    is_group = of_type("group")
    # traits (an identify's, a group's company traits): per distinct text, by the builder's
    # own checks
    traits_code = np.full(n, -1, dtype=np.int64)
    traits: list[Any] = []
    extracted: Columns = []  # (identifiers found in an identify's traits)
    try:
        traits_col = _coded(table, "traits")
    except TypeError:  # (a struct or map column: those rows are the builder's)
        traits_col = None
        fast &= ~(
            (is_identify | is_group)
            & table.column("traits").is_valid().to_numpy(zero_copy_only=False)
        )
    if traits_col is not None:
        traits_code, traits_values = traits_col
        extract, traits_keys = _traits_extraction(rules)
        texts = traits_values.to_pylist()
        # an identify's traits may hold identifiers (``traits.email``): extracted here, per
        # distinct text; a group's traits are the company's (nothing is extracted from them)
        has_traits = traits_code >= 0
        for_identify = np.zeros(len(texts), dtype=bool)
        for_identify[traits_code[has_traits & is_identify & fast]] = True
        for_group = np.zeros(len(texts), dtype=bool)
        for_group[traits_code[has_traits & is_group & fast]] = True
        plain = _plain_json(traits_values)
        flat = _flat_json(traits_values)
        good_i, traits, found = _traits_of(
            texts, for_identify, build, rules, extract, traits_keys, plain, flat
        )
        good_g, company_traits, _ = _traits_of(
            texts, for_group, build, rules, plain=plain, flat=flat
        )
        ok_traits = np.ones(n, dtype=bool)
        code = traits_code[has_traits]
        ok_traits[has_traits] = np.where(
            is_identify[has_traits],
            good_i[code],
            np.where(is_group[has_traits], good_g[code], True),
        )
        fast &= ok_traits
        # group rows: their codes point past the identify codes, at the company traits
        traits_code = np.where(
            is_identify, traits_code, np.where(is_group & has_traits, traits_code + len(texts), -1)
        )
        traits = traits + company_traits
        for leaf_kind, per_text in sorted(found.items()):
            kind_codes = np.where(is_identify, traits_code, -1)
            have = np.array([v is not None for v in per_text] + [False], dtype=bool)
            kind_codes = np.where(have[kind_codes], kind_codes, -1)
            extracted.append((leaf_kind, kind_codes, pa.array(per_text, pa.string())))
    # a group's company: per distinct groupId, validated and normalized by the builder
    company_code = np.full(n, -1, dtype=np.int64)
    company: list[str | None] = []
    try:
        group_col = _coded(table, "groupId")
    except TypeError:
        group_col = None
    if group_col is None:
        fast &= ~is_group
    else:
        group_codes, group_values = group_col
        company_code = np.where(is_group, group_codes, -1)
        good_company = np.zeros(len(group_values) + 1, dtype=bool)
        for j, raw in enumerate(group_values.to_pylist()):
            cid = _builder_value(build, rules, "company_id", COMPANY_KIND, raw)
            company.append(cid)
            good_company[j + 1] = cid is not None
        fast &= ~is_group | good_company[company_code + 1]
    has_user = np.zeros(n, dtype=bool) if user is None else user[0] >= 0
    has_anon = np.zeros(n, dtype=bool) if anon is None else anon[0] >= 0
    fast &= np.where(is_identify, has_user, has_user | has_anon)
    if event is not None:
        named: Any = pc.fill_null(pc.greater(pc.binary_length(event[1]), pa.scalar(0)), False)
        fast &= ~is_track | _lookup(event[0], named.to_numpy(zero_copy_only=False))
    else:
        fast &= ~is_track
    if "name" in table.column_names:  # page/screen names: any str; other types: the builder
        try:
            _string_column(table, "name")
        except TypeError:
            fast &= ~(~is_identify & ~is_track)
    # event ids: ASCII, non-empty, each once in the table
    ok_id: Any = pc.and_(pc.string_is_ascii(mid), pc.greater(pc.binary_length(mid), pa.scalar(0)))
    fast &= pc.fill_null(ok_id, False).to_numpy(zero_copy_only=False)
    once = _once(mid)
    first_of = _redeliveries(table, mid, once)
    fast &= once | (first_of == np.arange(n))
    # timestamps
    ts = np.zeros(n, dtype=np.float64)
    if "timestamp" not in table.column_names:
        return None
    tcol: Any = table.column("timestamp").combine_chunks()
    if pa.types.is_timestamp(tcol.type) and tcol.type.unit in ("s", "ms", "us"):
        micros: Any = tcol.cast(pa.timestamp("us", tz=tcol.type.tz)).cast(pa.int64())
        fast &= micros.is_valid().to_numpy(zero_copy_only=False)
        ts = pc.fill_null(micros, 0).to_numpy(zero_copy_only=False) / 1e6
    elif pa.types.is_string(tcol.type) or pa.types.is_large_string(tcol.type):
        tcol = tcol.cast(pa.string())
        fast &= _iso_times(tcol)
        parsed: Any = None
        if not tcol.null_count:
            # every text as it is, when Arrow reads them all (only the fast rows' times are
            # used, and a time is read alike whatever the others are); else only the fast
            # rows', the others replaced, as a text Arrow cannot read must not fail the cast
            try:
                parsed = pc.cast(tcol, pa.timestamp("us", tz="UTC")).cast(pa.int64())
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                parsed = None
        if parsed is None:
            text: Any = pc.if_else(pa.array(fast), tcol, pa.scalar("1970-01-01T00:00:00Z"))
            try:
                parsed = pc.cast(text, pa.timestamp("us", tz="UTC")).cast(pa.int64())
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                return None
        ts = parsed.to_numpy(zero_copy_only=False) / 1e6
    else:
        return None
    fast &= (ts >= MIN_TIMESTAMP) & (ts < MAX_TIMESTAMP)
    # identifiers the rules' extraction would find (docs/formats.md, Identifiers inside
    # messages): a row whose properties hold a key an extractor reads is the builder's
    watched, _, other_roots = _extraction_keys(rules)
    for mtype_name, root in other_roots:
        if root in table.column_names:
            held = table.column(root).is_valid().to_numpy(zero_copy_only=False)
            fast &= ~(of_type(mtype_name) & held)
    # properties: JSON text of an object, checked per distinct text by the builder's own check
    if props is not None and (fast & ~is_identify & (props[0] >= 0)).any():
        pcodes, pvalues = props
        has_props = (pcodes >= 0) & ~is_identify
        wanted = np.zeros(len(pvalues), dtype=bool)
        wanted[pcodes[has_props & fast]] = True
        at = np.flatnonzero(wanted)
        good = np.zeros(len(pvalues), dtype=bool)
        for j, text in zip(at.tolist(), pvalues.take(pa.array(at)).to_pylist(), strict=True):
            try:
                value = json.loads(text)
                _check_mapping("properties", value)
                if isinstance(value, dict) and value:
                    _json(value, "properties")
                good[j] = isinstance(value, dict) and watched.isdisjoint(value)
            except (ValueError, ValidationError, RecursionError):
                good[j] = False
        fast &= ~has_props | _lookup(pcodes, good)
    etype = np.where(is_identify, IDENTIFY, np.where(is_group, COMPANY, TRACK)).astype(np.int8)
    columns: Columns = []
    for field, kind, col in (("user_id", rules.user, user), ("anonymous_id", rules.anon, anon)):
        if col is None:
            continue
        codes, raw_values = col
        used = np.zeros(len(raw_values) + 1, dtype=bool)
        used[codes[fast] + 1] = True
        used = used[1:]
        # most values are certainly their own normal form and not blocked (checked
        # vectorized); only the rest go through the builder, one Python call per value
        plain = _plain_values(raw_values, rules, kind)
        ask = np.flatnonzero(used & ~plain)
        ok = np.zeros(len(raw_values) + 1, dtype=bool)
        ok[0] = True  # (no value)
        ok[1:] = used & plain
        asked: list[str | None] = []
        for j, raw in zip(ask.tolist(), raw_values.take(ask).to_pylist(), strict=True):
            value = _builder_value(build, rules, field, kind, raw)
            asked.append(value)
            ok[j + 1] = value is not None
        fast &= ok[codes + 1]
        values: Any = raw_values
        if len(ask):
            mask = np.zeros(len(raw_values), dtype=bool)
            mask[ask] = True
            values = pc.replace_with_mask(values, pa.array(mask), pa.array(asked, pa.string()))
        values = pc.if_else(pa.array(ok[1:]), values, pa.scalar(None, pa.string()))
        columns.append((kind, codes, values))
    columns.extend(extracted)
    later = first_of >= 0
    later[later] = first_of[later] != np.flatnonzero(later)
    dropped = np.zeros(n, dtype=bool)
    dropped[later] = fast[first_of[later]]
    data = _RowData(traits_code, traits, company_code, company)
    return fast, etype, ts, columns, data, dropped


_MIX = np.uint64(0x9E3779B97F4A7C15)


def _once(ids: Any) -> np.ndarray:
    """Per row of a string array: True when its value is not null and certainly occurs once
    in the array. Ids of one length (the usual hex or UUID event ids) are told apart by a
    64-bit hash of their bytes, computed over the Arrow buffer in numpy: equal ids hash
    alike, so a repeated id is never called once; two distinct ids whose hashes collide
    (about n^2 / 2^65 pairs) are both called "not once", which only sends them to the record
    lane, where ``admit`` decides them exactly. Other arrays are dictionary-encoded (a hash
    table of strings: ~1 s at 2.6x10^6 distinct ids, against ~0.15 s for the hash)."""
    n = len(ids)
    out = np.zeros(n, dtype=bool)
    if n == 0:
        return out
    low, high = (x.as_py() for x in pc.min_max(pc.binary_length(ids)).values())
    if ids.null_count or low != high or not 0 < high <= 256:
        valid = ids.is_valid().to_numpy(zero_copy_only=False)
        enc: Any = pc.dictionary_encode(ids)
        codes = pc.fill_null(enc.indices, 0).to_numpy(zero_copy_only=False)
        counts = np.bincount(codes[valid], minlength=len(enc.dictionary))
        out[valid] = counts[codes[valid]] == 1
        return out
    width = int(high)
    start = int(np.frombuffer(ids.buffers()[1], dtype=np.int32)[ids.offset])
    data = np.frombuffer(ids.buffers()[2], dtype=np.uint8)[start : start + n * width]
    hashed = np.full(n, width, dtype=np.uint64)
    step = 1 << 18
    for lo in range(0, n, step):  # (a chunk at a time: a padded copy stays small)
        rows = data[lo * width : min(n, lo + step) * width].reshape(-1, width)
        if width % 8:
            padded = np.zeros((len(rows), -(-width // 8) * 8), dtype=np.uint8)
            padded[:, :width] = rows
            rows = padded
        h = hashed[lo : lo + len(rows)]
        for word in rows.view(np.uint64).T:
            h ^= word
            h *= _MIX
            h ^= h >> np.uint64(29)
    ordered = np.sort(hashed)
    repeated = ordered[1:][ordered[1:] == ordered[:-1]]
    if not len(repeated):
        return ~out
    again: Any = pc.is_in(pa.array(hashed), value_set=pa.array(np.unique(repeated)))
    once: np.ndarray = ~again.to_numpy(zero_copy_only=False)
    return once


def _redeliveries(table: pa.Table, ids: Any, once: np.ndarray) -> np.ndarray:
    """Per row, the first row of its *redelivery group* (-1: none): the rows holding one
    event id whose every column (of :data:`COLUMNS`) is the same. Such rows are one event
    delivered several times: ``RecordBuilder`` makes them one content, so ``admit`` calls
    every later one a duplicate of the first (R8), whatever the lane. The columnar lane reads
    the first and counts the others as duplicates; a group whose rows differ anywhere (a
    conflict, or another timestamp) is left to the record lane. Only rows not ``once`` are
    looked at (a few percent). When every column is text (or a dictionary of text), rows are
    compared by Arrow, each with the one before it in id order (text is alike exactly when
    equal, or both null); otherwise by Python, values compared by ``repr`` (``0.0`` and
    ``-0.0`` are other content)."""
    n = table.num_rows
    first_of = np.full(n, -1, dtype=np.int64)
    maybe = np.flatnonzero(~once & ids.is_valid().to_numpy(zero_copy_only=False))
    if not len(maybe):
        return first_of
    names = [c for c in table.column_names if c in COLUMNS]
    rows = _take_rows(table.select(names), maybe)
    if all(
        _is_text(t) or (pa.types.is_dictionary(t) and _is_text(t.value_type))
        for t in (rows.schema.field(c).type for c in names)
    ):
        return _text_redeliveries(rows, names, ids.take(pa.array(maybe)), maybe, first_of)
    cells = [rows.column(c).to_pylist() for c in names]
    groups: dict[str, list[int]] = {}
    for j, eid in enumerate(ids.take(pa.array(maybe)).to_pylist()):
        groups.setdefault(eid, []).append(j)
    for members in groups.values():
        if len(members) > 1 and len({repr([c[j] for c in cells]) for j in members}) == 1:
            at = maybe[members]
            first_of[at] = at[0]
    return first_of


def _text_redeliveries(
    rows: pa.Table, names: list[str], eids: Any, maybe: np.ndarray, first_of: np.ndarray
) -> np.ndarray:
    """:func:`_redeliveries` over text columns, by Arrow: the rows sorted by event id (ties
    in row order), each compared with the one before it; a group is alike when every row
    after its first equals the one before it in every column."""
    order = pc.sort_indices(eids).to_numpy()  # (a stable sort: ties keep row order)
    m = len(order)
    if m < 2:
        return first_of
    sorted_ids: Any = eids.take(pa.array(order))
    same_id = pc.equal(sorted_ids[1:], sorted_ids[:-1]).to_numpy(zero_copy_only=False)
    alike = same_id.copy()
    for c in names:
        col: Any = rows.column(c)
        if pa.types.is_dictionary(col.type):  # (chunk by chunk: no dictionary unified)
            col = col.cast(col.type.value_type)
        col = col.combine_chunks().take(pa.array(order))
        a, b = col[1:], col[:-1]
        equal = pc.fill_null(pc.equal(a, b), False).to_numpy(zero_copy_only=False)
        both_null = (~a.is_valid().to_numpy(zero_copy_only=False)) & (
            ~b.is_valid().to_numpy(zero_copy_only=False)
        )
        alike &= equal | both_null
    # groups: runs of one id; a group of two or more rows whose every link is alike
    start = np.ones(m, dtype=bool)
    start[1:] = ~same_id
    group = np.cumsum(start) - 1
    size = np.bincount(group)
    broken = np.zeros(len(size), dtype=bool)
    broken[group[1:][same_id & ~alike]] = True
    keep = (size[group] > 1) & ~broken[group]
    at = maybe[order]
    first = np.minimum.reduceat(at, np.flatnonzero(start))  # (each group's first row)
    first_of[at[keep]] = first[group[keep]]
    return first_of


def _take_rows(table: pa.Table, rows: np.ndarray) -> pa.Table:
    """``table.take(rows)`` for sorted ``rows``, one record batch at a time: a take over
    chunked columns (dictionary columns above all) first combines every chunk, which cost
    ~0.6 s for 33,000 rows of 2.6x10^6 against ~0.01 s this way."""
    parts = []
    start = 0
    for chunk in table.to_batches():
        end = start + chunk.num_rows
        lo, hi = np.searchsorted(rows, [start, end])
        if hi > lo:
            parts.append(chunk.take(pa.array(rows[lo:hi] - start)))
        start = end
    if not parts:
        return table.slice(0, 0)
    return pa.Table.from_batches(parts, schema=table.schema)


def _extraction_keys(rules: Any) -> tuple[set[str], set[str], set[tuple[str, str]]]:
    """What the rules' extraction reads in the columnar lane's types: the keys of
    ``properties`` (track, page, screen) and of ``traits`` (identify) some extractor
    reads, and the ``(type, column)`` pairs of other columns one reads (such a row is left
    to the builder)."""
    props: set[str] = set()
    traits: set[str] = set()
    others: set[tuple[str, str]] = set()
    for mtype in _FAST_TYPES:
        compiled = rules.extractors.get(mtype)
        if compiled is None:
            continue
        parents, extractors = compiled
        for at, leaf, *_ in extractors:
            parent = parents[at]
            root = parent[0] if parent else leaf
            key = parent[1] if len(parent) > 1 else leaf
            if root == "properties" and mtype != "identify":
                props.add(key)
            elif root == "traits" and mtype == "identify":
                traits.add(key)
            elif root in COLUMNS:
                others.add((mtype, root))
    return props, traits, others


def _builder_value(build: RecordBuilder, rules: Any, field: str, kind: int, raw: Any) -> str | None:
    """A value as the builder normalizes it, or ``None`` when it is invalid or blocked (the
    row is then the builder's, which says why)."""
    try:
        value = build.identifier_value(field, kind, raw)
    except ValidationError:
        return None
    return value if rules.blocked_reason(value) is None else None


def _plain_values(values: Any, rules: Any, kind: int) -> np.ndarray:
    """Per distinct identifier value (a string array): True when it is certainly what the
    builder would make of it (the default normalizer leaves it unchanged: printable ASCII
    at both ends) and certainly not blocked (not too long, no blocked word, not quoted);
    False means "ask the builder", not "invalid". Rules with blocked patterns ask always."""
    if rules.normalizers[kind] is not strip_whitespace or rules.patterns or len(values) == 0:
        return np.zeros(len(values), dtype=bool)
    ok: Any = pc.and_(
        pc.string_is_ascii(values),
        pc.match_substring_regex(values, r"(?s)^[!-~](.*[!-~])?$"),
    )
    length: Any = pc.binary_length(values)
    ok = pc.and_(ok, pc.less_equal(length, pa.scalar(rules.max_length)))
    ok = pc.and_(ok, pc.invert(pc.match_substring_regex(values, r"^['\"]")))
    if rules.blocked_exact:
        ok = pc.and_(
            ok,
            pc.invert(
                pc.is_in(values, value_set=pa.array(sorted(rules.blocked_exact), pa.string()))
            ),
        )
    if rules.blocked_insensitive:
        words = pa.array(sorted(rules.blocked_insensitive), pa.string())
        word: Any = pc.and_(
            pc.less_equal(length, pa.scalar(rules.ci_max_len)),
            pc.is_in(pc.ascii_lower(values), value_set=words),
        )
        ok = pc.and_(ok, pc.invert(word))
    out: np.ndarray = pc.fill_null(ok, False).to_numpy(zero_copy_only=False)
    return out


# -- the union-find ---------------------------------------------------------------------


def components(n: int, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Link components of ``n`` nodes joined by the edges ``a[i]-b[i]``: for each node, the
    smallest node of its component. Hook each root onto the smallest root it is joined to,
    then compress by pointer jumping, until no edge joins two roots."""
    parent = np.arange(n, dtype=np.int64)
    if len(a) == 0:
        return parent
    a = a.astype(np.int64, copy=False)
    b = b.astype(np.int64, copy=False)
    while True:
        ra = parent[a]
        rb = parent[b]
        lo = np.minimum(ra, rb)
        hi = np.maximum(ra, rb)
        cross = lo != hi
        if not cross.any():
            return parent
        lo = lo[cross]
        hi = hi[cross]
        order = np.lexsort((lo, hi))
        hi = hi[order]
        lo = lo[order]
        first = np.ones(len(hi), dtype=bool)
        first[1:] = hi[1:] != hi[:-1]
        hi = hi[first]
        parent[hi] = np.minimum(parent[hi], lo[first])
        while True:
            jumped = parent[parent]
            if np.array_equal(jumped, parent):
                break
            parent = jumped
        # (edges whose ends are now one root drop out at the next test)
        a, b = a[cross], b[cross]


# -- the result -------------------------------------------------------------------------


class BatchResult:
    """What :func:`resolve` computed: Arrow tables (``identity_map``, ``profiles``,
    ``refusals``, ``companies``, ``stats``), :meth:`write`, and :meth:`graph` /
    :meth:`seed` to continue online from it (docs/batch.md)."""

    def __init__(
        self,
        rules: Rules,
        events: _Events,
        node_kind: np.ndarray,
        node_value: Any,
        node_index: Mapping[tuple[int, str], int] | None,
        comp: np.ndarray,
        touched: np.ndarray,
        fast_record: np.ndarray,
        first_rank: np.ndarray,
        last_ts: np.ndarray,
        order: np.ndarray,
        conflicted: IdentityGraph,
        errors: tuple[EventError, ...],
        duplicates: int,
        times: dict[str, float],
    ) -> None:
        self.rules = rules
        self._events = events
        self._node_kind = node_kind
        self._node_value = node_value
        self._comp = comp
        self._fast_record = fast_record
        self._first_rank = first_rank
        self._last_ts = last_ts
        self._order = order
        self._touched = touched
        #: (kind, value) -> node, built when first needed (``graph``/``seed``)
        self._index = node_index
        self._conflicted = conflicted
        #: the bad events skipped (``on_error="skip"``), by input position
        self.errors = errors
        self._duplicates = duplicates
        #: seconds per phase
        self.times = times
        t = time.perf_counter()
        self._build_tables()
        times["tables"] = time.perf_counter() - t

    # -- tables ---------------------------------------------------------------------------

    def _build_tables(self) -> None:
        rules = self.rules.compiled
        names = rules.kind_names
        comp = self._comp
        kind = self._node_kind
        n = len(kind)
        fast_node_idx = np.flatnonzero(self._fast_node_mask())
        f_comp = comp[fast_node_idx]
        f_kind = kind[fast_node_idx]
        f_rank = self._first_rank[fast_node_idx]
        values = self._node_values().take(pa.array(fast_node_idx))
        # Canonical id per fast component (R5): smallest (kind, first key, value). Ranks of
        # first keys are the event order, so (kind, first_rank) is (kind, ts, event_id);
        # the identified user is the smallest (first key, value) user id, the same order
        # restricted to one kind.
        canon_local = _smallest(f_comp, f_kind * (len(self._order) + 1) + f_rank, values)
        comps = f_comp[canon_local]
        u_at = np.flatnonzero(f_kind == rules.user)
        u_at = u_at[_smallest(f_comp[u_at], f_rank[u_at], values.take(pa.array(u_at)))]
        # per fast node: its component's position; per component: its position (-1: none)
        comp_pos = np.full(n, -1, dtype=np.int64)
        comp_pos[comps] = np.arange(len(comps), dtype=np.int64)
        node_pos = comp_pos[f_comp]
        ident_at = np.full(len(comps), -1, dtype=np.int64)
        ident_at[comp_pos[f_comp[u_at]]] = u_at
        kind_names = pa.array(list(names), pa.string())
        canon_kinds: Any = kind_names.take(f_kind[canon_local])
        uid_arr: Any = values.take(pa.array(canon_local))
        pid_arr: Any = pc.binary_join_element_wise(canon_kinds, uid_arr, ":")  # (profile_id)
        ident_arr: Any = values.take(pa.array(ident_at, mask=ident_at < 0))
        fast_map = pa.table(
            {
                "kind": kind_names.take(f_kind),
                "value": values,
                "profile_id": pid_arr.take(node_pos),
                "user_id": uid_arr.take(node_pos),
                "identified_user_id": ident_arr.take(node_pos),
            }
        )
        # first/last seen, sizes
        ts_sorted = self._events.ts[self._order]
        first_ts_node = ts_sorted[f_rank] if n else np.zeros(0)
        ncomp = len(comps)
        first_seen = np.full(ncomp, np.inf)
        np.minimum.at(first_seen, node_pos, first_ts_node)
        last_seen = np.full(ncomp, -np.inf)
        np.maximum.at(last_seen, node_pos, self._last_ts[fast_node_idx])
        size = np.bincount(node_pos, minlength=ncomp)
        # traits and companies (R6, R7): the same keep as the engine, per profile
        events = self._events
        fast = self._fast_record
        anchor = events.anchor
        # (each event's rank in key order: the traits' and the companies' event order)
        rank = self._rank = _inverse(self._order)
        traits: dict[int, dict[Any, tuple[float, str, Any]]] = {}
        link_p: list[int] = []  # (the record lane's company links: profile, company, rank)
        link_c: list[str] = []
        link_r: list[int] = []
        for i, rec in events.py.items():
            if not rec.ids or not fast[i]:
                continue
            if rec.etype == IDENTIFY and (rec.traits or rec.set_once):
                p = int(comp_pos[comp[anchor[i]]])
                best = traits.setdefault(p, {})
                for k, v in (rec.traits or {}).items():
                    keep(best, (False, k), rec.ts, rec.event_id, v)
                for k, v in (rec.set_once or {}).items():
                    keep(best, (True, k), rec.ts, rec.event_id, v, True)
            elif rec.etype == COMPANY and rec.company_id is not None:
                link_p.append(int(comp_pos[comp[anchor[i]]]))
                link_c.append(rec.company_id)
                link_r.append(int(rank[i]))
        texts: dict[int, str] = {}
        data = events.data
        company_names: list[str | None] = list(link_c)
        lane_p = lane_code = lane_r = np.zeros(0, dtype=np.int64)
        if data is not None:
            held = fast & (anchor >= 0)
            etype = events.etype
            # a profile whose only traits are one columnar event's has that event's traits,
            # as keep() merges them into nothing: their text is made once per distinct
            # traits; every other profile's traits are merged by keep(), as before
            nonempty = np.zeros(len(data.traits) + 1, dtype=bool)  # (code -1: none)
            nonempty[:-1] = np.fromiter(map(bool, data.traits), dtype=bool, count=len(data.traits))
            ti = np.flatnonzero(held & (etype == IDENTIFY) & nonempty[data.traits_code])
            tp = comp_pos[comp[anchor[ti]]]
            # (the profiles holding traits of the record lane too)
            with_records = np.zeros(ncomp, dtype=bool)
            with_records[np.fromiter(traits, dtype=np.int64, count=len(traits))] = True
            count = np.bincount(tp, minlength=ncomp) + with_records
            single = count[tp] == 1
            # (one text per distinct traits)
            s_pos = tp[single]
            s_code = data.traits_code[ti[single]]
            codes = np.unique(s_code)
            code_text = [_text(data.traits[c]) for c in codes.tolist()]
            at = np.searchsorted(codes, s_code)
            texts.update(zip(s_pos.tolist(), (code_text[a] for a in at.tolist()), strict=True))
            # a profile holding several events' traits, all columnar: the newest write of
            # each key wins (R6), so merging them oldest first by dict.update is keep() over
            # them in (timestamp, event_id) order, rank order; a profile holding traits of
            # the record lane too is merged by keep(), with those
            multi = ti[~single]
            m_pos = tp[~single]
            kept = multi[with_records[m_pos]]
            for p, ts, eid, code in zip(
                m_pos[with_records[m_pos]].tolist(),
                events.ts[kept].tolist(),
                events.eid.take(pa.array(kept)).to_pylist(),
                data.traits_code[kept].tolist(),
                strict=True,
            ):
                best = traits[p]
                for k, v in data.traits[code].items():
                    keep(best, (False, k), ts, str(eid), v)
            plain = multi[~with_records[m_pos]]
            by = np.lexsort((rank[plain], comp_pos[comp[anchor[plain]]]))
            union: dict[int, dict[str, Any]] = {}
            for p, code in zip(
                comp_pos[comp[anchor[plain[by]]]].tolist(),
                data.traits_code[plain[by]].tolist(),
                strict=True,
            ):
                into = union.get(p)
                if into is None:
                    into = union[p] = {}
                into.update(data.traits[code])
            texts.update((p, _text(into)) for p, into in union.items())
            ci = np.flatnonzero(held & (etype == COMPANY) & (data.company_code >= 0))
            lane_p = comp_pos[comp[anchor[ci]]]
            lane_code = data.company_code[ci] + len(link_c)
            lane_r = rank[ci]
            company_names += data.company
        # (only the profiles holding traits cost Python; the rest are nulls, made by Arrow)
        for p, best in traits.items():
            texts[p] = _text(
                {
                    **{k: v[2] for (once, k), v in best.items() if once},
                    **{k: v[2] for (once, k), v in best.items() if not once},
                }
            )
        trait_text = _sparse_text(ncomp, texts)
        # company links, in Arrow and numpy: a profile's company is the company of its
        # newest link event (the greatest rank: (timestamp, event_id) order), its companies
        # the distinct ones, sorted (two raw ids may normalize alike: by their text)
        link_pos = np.concatenate([np.array(link_p, dtype=np.int64), lane_p])
        link_rank = np.concatenate([np.array(link_r, dtype=np.int64), lane_r])
        name_enc: Any = pc.dictionary_encode(pa.array(company_names, pa.string()))
        name_code = pc.fill_null(name_enc.indices, -1).to_numpy(zero_copy_only=False)
        link_code = name_code[
            np.concatenate([np.arange(len(link_c), dtype=np.int64), lane_code])
        ].astype(np.int64)
        company_text: Any = name_enc.dictionary
        newest = np.full(ncomp, -1, dtype=np.int64)
        if len(link_pos):
            by = np.lexsort((link_rank, link_pos))
            last = np.ones(len(by), dtype=bool)
            last[:-1] = link_pos[by][1:] != link_pos[by][:-1]
            newest[link_pos[by][last]] = link_code[by][last]
        company_id = company_text.take(pa.array(newest, mask=newest < 0))
        text_order = pc.sort_indices(company_text).to_numpy(zero_copy_only=False).astype(np.int64)
        text_pos = _inverse(text_order)
        pairs = np.unique(link_pos * max(1, len(company_text)) + text_pos[link_code])
        lengths = np.bincount(pairs // max(1, len(company_text)), minlength=ncomp)
        offsets = np.zeros(ncomp + 1, dtype=np.int32)
        np.cumsum(lengths, out=offsets[1:])
        company_ids = pa.ListArray.from_arrays(
            pa.array(offsets, pa.int32()),
            company_text.take(pa.array(text_order[pairs % max(1, len(company_text))])),
        )
        fast_profiles = _profiles_table(
            pid_arr,
            uid_arr,
            canon_kinds,
            ident_arr,
            size,
            first_seen,
            last_seen,
            company_id,
            company_ids,
            trait_text,
        )
        # the conflicted part, read from the online engine's state
        slow_map, slow_profiles, self._slow_pos, self._slow_pids = self._conflicted_tables()
        self.identity_map: pa.Table = pa.concat_tables([fast_map, slow_map])
        self.profiles: pa.Table = pa.concat_tables([fast_profiles, slow_profiles])
        self.refusals: pa.Table = self._refusal_table()
        self._fast_pids = pid_arr
        self._fast_comp_pos = comp_pos
        self._build_companies(comp_pos, pid_arr)
        self._build_stats()

    @staticmethod
    def _engine_profiles(engine: Engine, keys: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
        """The engine's profiles, from its arrays in bulk: per node the position of its
        profile (-1: an erased node), the profiles in the order ``IdentityGraph.profiles()``
        gives them (their roots ascending, as ``MemoryStore.iter_profiles`` walks them);
        and per profile its canonical node (R5: ``canonical_row``'s smallest ``(kind,
        first_ts, first_eid, value)``). ``keys``: the nodes' key columns (:func:`_engine_keys`)."""
        nn = len(engine.value)
        root = _roots(engine.parent)  # (find() of every node)
        dead = np.zeros(nn, dtype=bool)
        if engine.dead:
            dead[np.fromiter(engine.dead, dtype=np.int64, count=len(engine.dead))] = True
        live = ~dead & ~dead[root]
        roots = np.flatnonzero(live & (root == np.arange(nn, dtype=np.int64)))
        at = np.full(nn, -1, dtype=np.int64)
        at[roots] = np.arange(len(roots), dtype=np.int64)
        pos: np.ndarray = np.where(live, at[root], -1)
        nodes = np.flatnonzero(live)
        by = nodes[_key_order(keys, pos, nodes, with_kind=True)]
        canon: np.ndarray = by[_starts(pos[by])]
        return pos, canon

    def _conflicted_tables(self) -> tuple[pa.Table, pa.Table, np.ndarray, Any]:
        """The identity-map and profile rows of the conflicted components, as
        ``IdentityGraph.profiles()`` presents the engine's profiles (``profile_rows`` then
        ``build_profile``, docs/batch.md, Tables), read in bulk: one row per profile in the
        engine's order, its identifiers sorted by ``(kind, value)`` as the profile's
        ``all_identifiers()`` sort. Only the nodes holding traits or company links cost
        Python, merged by the same ``keep`` as ``winners``."""
        engine = self._conflicted_engine
        rules = engine.rules
        names = rules.kind_names
        keys = _engine_keys(engine)
        values: Any = keys["value"]
        kind: np.ndarray = keys["kind"]
        pos, canon = self._engine_profiles(engine, keys)
        np_ = len(canon)
        kind_names = pa.array(list(names), pa.string())
        nodes = np.flatnonzero(pos >= 0)
        # canonical id (R5) and identified user: the smallest (first_ts, first_eid, value)
        # user id (``build_profile``)
        uid_arr: Any = values.take(pa.array(canon))
        canon_kinds: Any = kind_names.take(pa.array(kind[canon]))
        pid_arr: Any = pc.binary_join_element_wise(canon_kinds, uid_arr, ":")
        users = nodes[kind[nodes] == rules.user]
        ident_at = np.full(np_, -1, dtype=np.int64)
        if len(users):
            u_by = users[_key_order(keys, pos, users, with_kind=False)]
            u_head = _starts(pos[u_by])
            ident_at[pos[u_by][u_head]] = u_by[u_head]
        ident_arr: Any = values.take(pa.array(ident_at, mask=ident_at < 0))
        # first/last seen, sizes
        first_seen = np.full(np_, np.inf)
        np.minimum.at(first_seen, pos[nodes], keys["first_ts"][nodes])
        last_seen = np.full(np_, -np.inf)
        np.maximum.at(last_seen, pos[nodes], np.array(engine.last_ts, dtype=np.float64)[nodes])
        size = np.bincount(pos[nodes], minlength=np_)
        # traits (R6): regular writes beat set_once, the earliest set_once wins
        best_of: dict[int, dict[tuple[bool, str], tuple[float, str, Any]]] = {}
        for once, held in ((False, engine.traits), (True, engine.traits_once)):
            for node, mine in held.items():
                p = int(pos[node])
                if p < 0:
                    continue
                best = best_of.setdefault(p, {})
                for k, (ts, eid, v) in mine.items():
                    keep(best, (once, k), ts, eid, v, once)
        texts: dict[int, str] = {}
        for p, best in best_of.items():
            merged = {k: t[2] for (once, k), t in best.items() if once}
            merged.update((k, t[2]) for (once, k), t in best.items() if not once)
            if merged:
                texts[p] = _text(merged)
        # companies (R7): the newest link's company, and every linked one
        latest: dict[int, tuple[float, str, str]] = {}
        linked: dict[int, set[str]] = {}
        for node, links in engine.company_links.items():
            p = int(pos[node])
            if p < 0:
                continue
            for cid, (ts, eid, _) in links.items():
                keep(latest, p, ts, eid, cid)
                linked.setdefault(p, set()).add(cid)
        newest = {p: t[2] for p, t in latest.items()}
        # identity map: per profile (in order), its identifiers by (kind name, value)
        name_rank = np.empty(len(names), dtype=np.int64)
        name_rank[sorted(range(len(names)), key=names.__getitem__)] = np.arange(len(names))
        m_order = pc.sort_indices(
            pa.table(
                {
                    "profile": pa.array(pos[nodes]),
                    "kind": pa.array(name_rank[kind[nodes]]),
                    "value": values.take(pa.array(nodes)),
                }
            ),
            sort_keys=[("profile", "ascending"), ("kind", "ascending"), ("value", "ascending")],
        ).to_numpy(zero_copy_only=False)
        m_nodes = nodes[m_order]
        m_pos = pos[m_nodes]
        slow_map = pa.table(
            {
                "kind": kind_names.take(pa.array(kind[m_nodes])),
                "value": values.take(pa.array(m_nodes)),
                "profile_id": pid_arr.take(pa.array(m_pos)),
                "user_id": uid_arr.take(pa.array(m_pos)),
                "identified_user_id": ident_arr.take(pa.array(m_pos)),
            }
        )
        slow_profiles = _profiles_table(
            pid_arr,
            uid_arr,
            canon_kinds,
            ident_arr,
            size,
            first_seen,
            last_seen,
            _sparse_text(np_, newest),
            pa.array([sorted(linked.get(p, ())) for p in range(np_)], pa.list_(pa.string())),
            _sparse_text(np_, texts),
        )
        return slow_map, slow_profiles, pos, pid_arr

    def _refusal_table(self) -> pa.Table:
        """The refusals in effect, as ``IdentityGraph.refusals()`` lists them, read from the
        engine: each refused event's link entry (the first in its component's log with its
        event id, as ``refused_link_rows`` finds it), by ``(ts, event_id)``; its anchor is
        its first identifier not split off after it."""
        engine = self._conflicted_engine
        names = engine.rules.kind_names
        splits = engine.splits
        kind = engine.kind
        value = engine.value
        lroot = _roots(engine.lparent)  # (lfind() of every node, without path halving)
        wanted: dict[int, set[str]] = {}
        for eid, (_, nodes, _) in engine.refusals.items():
            wanted.setdefault(int(lroot[nodes[0]]), set()).add(eid)
        entries: list[tuple[float, str, tuple[int, ...], int]] = []
        for root, eids in wanted.items():
            for entry in engine.log.get(root, ()):
                if entry[1] in eids:
                    eids.discard(entry[1])
                    entries.append(entry)
        entries.sort(key=lambda e: (e[0], e[1]))
        cols: dict[str, list[Any]] = {
            c: [] for c in ("event_id", "kind", "value", "anchor_kind", "anchor_value")
        }
        reasons: list[str] = []
        limit_kinds: list[str | None] = []
        for ts, eid, members, _ in entries:
            key = (ts, eid)
            anchor = next(
                m for m in members if (s := splits.get(m)) is None or not key < (s[0], s[1] or "")
            )
            for x, reason, lk in engine.refusals[eid][2]:
                cols["event_id"].append(eid)
                cols["kind"].append(names[kind[x]])
                cols["value"].append(value[x])
                cols["anchor_kind"].append(names[kind[anchor]])
                cols["anchor_value"].append(value[anchor])
                reasons.append(str(reason))
                limit_kinds.append(None if lk is None else names[lk])
        return pa.table(
            {
                **{c: pa.array(v, pa.string()) for c, v in cols.items()},
                "reason": pa.array(reasons, pa.string()),
                "limit_kind": pa.array(limit_kinds, pa.string()),
            }
        )

    def _build_companies(self, comp_pos: np.ndarray, pids: Any) -> None:
        """The companies table; ``comp_pos``: each untouched component's position in
        ``pids`` (the ``Profile.id`` of each, an Arrow string array)."""
        comp = self._comp
        events = self._events
        anchor = events.anchor
        traits: dict[str, dict[str, tuple[float, str, Any]]] = {}
        # (company, Profile.id) of every link, as Arrow arrays and Python lists
        held_c: list[Any] = []
        held_p: list[Any] = []
        link_c: list[str] = []
        link_p: list[int] = []
        for i, rec in events.py.items():
            if (
                rec.etype == COMPANY
                and rec.company_id is not None
                and not rec.ids
                and not rec.blocked  # (members all blocked: nothing, as online)
            ):
                # a company's traits sent with no member (a PostHog $groupidentify, a
                # Mixpanel /groups update; docs/formats.md): in no component, the company's
                # own (newest wins, so meeting it twice changes nothing)
                best = traits.setdefault(rec.company_id, {})
                for k, v in (rec.company_traits or {}).items():
                    keep(best, k, rec.ts, rec.event_id, v)
                continue
            if (
                not self._fast_record[i]
                or rec.etype != COMPANY
                or rec.company_id is None
                or not rec.ids
            ):
                continue
            cid = rec.company_id
            best = traits.setdefault(cid, {})
            for k, v in (rec.company_traits or {}).items():
                keep(best, k, rec.ts, rec.event_id, v)
            link_c.append(cid)
            link_p.append(int(comp_pos[comp[anchor[i]]]))
        held_c.append(pa.array(link_c, pa.string()))
        held_p.append(pids.take(pa.array(link_p, pa.int64())))
        data = events.data
        if data is not None:
            # the columnar lane's company events, vectorized: two raw ids may normalize
            # alike (one company, by its text); a company's traits from one distinct traits
            # value are those of its newest event carrying it (the same dict: keep() over
            # the others changes nothing), so keep() runs once per (company, traits)
            name_enc: Any = pc.dictionary_encode(pa.array(data.company, pa.string()))
            name_code = pc.fill_null(name_enc.indices, -1).to_numpy(zero_copy_only=False)
            ci = np.flatnonzero(
                self._fast_record
                & (events.etype == COMPANY)
                & (data.company_code >= 0)
                & (anchor >= 0)
            )
            code = name_code[data.company_code[ci]].astype(np.int64)
            ci, code = ci[code >= 0], code[code >= 0]
            company_text = name_enc.dictionary.to_pylist()
            for cid in np.unique(code).tolist():
                traits.setdefault(company_text[cid], {})
            pairs = np.unique(code * max(1, len(comp_pos)) + comp_pos[comp[anchor[ci]]])
            held_c.append(name_enc.dictionary.take(pa.array(pairs // max(1, len(comp_pos)))))
            held_p.append(pids.take(pa.array(pairs % max(1, len(comp_pos)))))
            tcode = data.traits_code[ci]
            ci, code, tcode = ci[tcode >= 0], code[tcode >= 0], tcode[tcode >= 0]
            pair = code * (len(data.traits) + 1) + tcode
            by = np.lexsort((self._rank[ci], pair))
            last = np.ones(len(by), dtype=bool)
            last[:-1] = pair[by][1:] != pair[by][:-1]
            newest = by[last]
            for cid, ts, eid, tc in zip(
                code[newest].tolist(),
                events.ts[ci[newest]].tolist(),
                events.eid.take(pa.array(ci[newest])).to_pylist(),
                tcode[newest].tolist(),
                strict=True,
            ):
                best = traits[company_text[cid]]
                for k, v in (data.traits[tc] or {}).items():
                    keep(best, k, ts, str(eid), v)
        engine = self._conflicted_engine
        # the conflicted part's companies (their traits as the engine keeps them; the
        # profiles by Profile.id of the engine's profiles)
        pos = self._slow_pos
        slow_pids = self._slow_pids
        member_c: list[str] = []
        member_p: list[int] = []
        for cid, members in engine.company_members.items():
            best = traits.setdefault(cid, {})
            for k, (ts, eid, v) in engine.company_traits.get(cid, {}).items():
                keep(best, k, ts, eid, v)
            for m in members:
                member_c.append(cid)
                member_p.append(int(pos[m]))
        held_c.append(pa.array(member_c, pa.string()))
        held_p.append(slow_pids.take(pa.array(member_p, pa.int64())))
        ids = sorted(traits)
        id_arr = pa.array(ids, pa.string())
        # profile_ids: the distinct Profile.ids of each company, sorted (by their text)
        all_c: Any = pa.concat_arrays(held_c)
        p_enc: Any = pc.dictionary_encode(pa.concat_arrays(held_p))
        p_text = p_enc.dictionary
        p_order = pc.sort_indices(p_text).to_numpy(zero_copy_only=False).astype(np.int64)
        p_rank = _inverse(p_order)
        at = pc.index_in(all_c, value_set=id_arr).to_numpy(zero_copy_only=False)
        width = max(1, len(p_text))
        key = np.unique(
            at.astype(np.int64) * width
            + p_rank[p_enc.indices.to_numpy(zero_copy_only=False).astype(np.int64)]
        )
        offsets = np.zeros(len(ids) + 1, dtype=np.int32)
        np.cumsum(np.bincount(key // width, minlength=len(ids)), out=offsets[1:])
        self.companies: pa.Table = pa.table(
            {
                "company_id": id_arr,
                "traits": pa.array(
                    [
                        _text({k: v[2] for k, v in traits[c].items()}) if traits[c] else None
                        for c in ids
                    ],
                    pa.string(),
                ),
                "profile_ids": pa.ListArray.from_arrays(
                    pa.array(offsets, pa.int32()), p_text.take(pa.array(p_order[key % width]))
                ),
            }
        )

    def _build_stats(self) -> None:
        fast = self._fast_record
        conflicted_events = int(len(fast) - fast.sum())
        blocked = self.blocked_values()
        figures: dict[str, float] = {
            "events": float(len(self._events)),
            "duplicates": float(self._duplicates),
            "errors": float(len(self.errors)),
            "identifiers": float(self.identity_map.num_rows),
            "profiles": float(self.profiles.num_rows),
            "conflicted_events": float(conflicted_events),
            "conflicted_fraction": conflicted_events / len(fast) if len(fast) else 0.0,
            "conflicted_profiles": float(self.profiles.num_rows - len(self._fast_pids)),
            "refusals": float(self.refusals.num_rows),
            "blocked_values": float(sum(blocked.values())),
        }
        figures.update({f"seconds_{k}": v for k, v in self.times.items()})
        self.stats: pa.Table = pa.table(
            {
                "name": pa.array(list(figures), pa.string()),
                "value": pa.array(list(figures.values()), pa.float64()),
            }
        )

    # -- helpers --------------------------------------------------------------------------

    def _fast_node_mask(self) -> np.ndarray:
        """Per node: whether its link component is untouched by every rule."""
        if len(self._comp) == 0:
            return np.zeros(0, dtype=bool)
        mask: np.ndarray = ~self._touched[self._comp]
        return mask

    def _node_values(self) -> Any:
        """The nodes' values as one Arrow string array (a list is accepted too)."""
        if isinstance(self._node_value, (pa.Array, pa.ChunkedArray)):
            return self._node_value
        return pa.array(self._node_value, pa.string())

    def _node_index(self) -> Mapping[tuple[int, str], int]:
        if self._index is None:
            pairs = zip(self._node_kind.tolist(), self._node_values().to_pylist(), strict=True)
            self._index = {pair: n for n, pair in enumerate(pairs)}
        return self._index

    def _node_of(self, pair: tuple[int, str]) -> int:
        return self._node_index()[pair]

    @property
    def _conflicted_engine(self) -> Engine:
        store = self._conflicted.store
        assert isinstance(store, MemoryStore)
        return store.engine

    def blocked_values(self) -> Counter[str]:
        """How often each blocked value was seen, by ``"kind:value"`` (as
        ``IdentityGraph.stats().blocked_values``)."""
        forgotten = {
            (self.rules.compiled.kind_names[r.ids[0][0]], r.ids[0][1])
            for r in self._events.py.values()
            if r.etype == FORGET and r.ids
        }
        out: Counter[str] = Counter()
        for i, rec in self._events.py.items():
            if not self._fast_record[i]:
                continue
            for kind, value, _ in rec.blocked:
                if (kind, value) not in forgotten:
                    out[f"{kind}:{blocked_key(value)}"] += 1
        for (kind, value), count in self._conflicted_engine.blocked.items():
            out[f"{kind}:{value}"] += count
        return out

    def stat(self, name: str) -> float:
        """One figure of :attr:`stats` by name."""
        names = self.stats.column("name").to_pylist()
        return float(self.stats.column("value")[names.index(name)].as_py())

    # -- writing --------------------------------------------------------------------------

    def write(self, directory: str | os.PathLike[str], *, format: str = "parquet") -> list[Path]:
        """Write every table into ``directory`` as ``<table>.parquet`` (or ``.csv``; list
        columns are written as JSON text in CSV). Returns the paths written."""
        if format not in ("parquet", "csv"):
            raise ConfigurationError(f"format={format!r}: must be 'parquet' or 'csv'")
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        written = []
        for name in ("identity_map", "profiles", "refusals", "companies", "stats"):
            table: pa.Table = getattr(self, name)
            path = out / f"{name}.{format}"
            if format == "parquet":
                pq.write_table(table, path)
            else:
                pacsv.write_csv(_flat(table), path)
            written.append(path)
        return written

    # -- continuing online ----------------------------------------------------------------

    def _fill(self, engine: Engine) -> None:
        """Make ``engine`` (empty) hold exactly the state the online engine would: the
        conflicted events decided by it in key order, the untouched components loaded as
        the one profile each is (nodes, the link log, first/last seen, traits, company
        links, blocked counts and the fingerprints of their events)."""
        events = self._events
        fast = self._fast_record
        order = self._order
        rows = events.rows()  # (a file source read once, for both lanes)
        for _, rec in events.records((i for i in order.tolist() if not fast[i]), rows=rows):
            engine.apply(rec)
        n_of = self._node_index()
        local: dict[int, int] = {}
        kind = self._node_kind
        value = self._node_values().to_pylist()
        mask = self._fast_node_mask()
        ts_sorted = events.ts[order].tolist()
        eid_sorted = [str(e) for e in events.eid.take(order).to_pylist()]
        first_rank = self._first_rank
        last_ts = self._last_ts
        groups: dict[int, list[int]] = {}
        for node in np.flatnonzero(mask).tolist():
            r = int(first_rank[node])
            m = engine.new_node(int(kind[node]), value[node], ts_sorted[r], eid_sorted[r])
            engine.last_ts[m] = float(last_ts[node])
            local[node] = m
            groups.setdefault(int(self._comp[node]), []).append(m)
        for members in groups.values():
            root = members[0]
            for i, m in enumerate(members):
                engine.parent[m] = root
                engine.lparent[m] = root
                engine.nxt[m] = members[(i + 1) % len(members)]
            engine.size[root] = len(members)
            for k, arr in engine.counts.items():
                arr[root] = sum(1 for m in members if engine.kind[m] == k)
        for _, rec in events.records(np.flatnonzero(fast).tolist(), ordered=False, rows=rows):
            engine.seen[rec.event_id] = rec.fingerprint
            if rec.blocked:
                engine._count_blocked(rec.blocked)
            if not rec.ids:
                if rec.etype == COMPANY and rec.company_id is not None and not rec.blocked:
                    # a company's own traits, sent with no member (as the engine keeps them)
                    engine._write_company(
                        None, rec.ts, rec.event_id, rec.company_id, rec.company_traits
                    )
                continue
            nodes = tuple(local[n_of[p]] for p in rec.ids)
            if rec.etype == RESET:
                _load_reset(engine, nodes[0], (rec.ts, rec.event_id))
            elif len(nodes) > 1:
                root = engine.lfind(nodes[0])
                engine.log.setdefault(root, []).append((rec.ts, rec.event_id, nodes, rec.etype))
                engine.seen_key(root, (rec.ts, rec.event_id))
            if rec.etype == IDENTIFY and (rec.traits or rec.set_once):
                engine._write_traits(nodes[0], rec.ts, rec.event_id, rec.traits, rec.set_once)
            elif rec.etype == COMPANY and rec.company_id is not None:
                engine._write_company(
                    nodes[0], rec.ts, rec.event_id, rec.company_id, rec.company_traits
                )

    def graph(self) -> IdentityGraph:
        """An in-memory ``IdentityGraph`` in exactly the state ingesting every event online
        would leave (docs/batch.md, Continuing online). It holds the whole state in Python
        objects, as the online engine does: for inputs that fit the online engine."""
        g = IdentityGraph(self.rules)
        store = g.store
        assert isinstance(store, MemoryStore)
        with store.lock:
            self._fill(store.engine)
        return g

    def seed(self, store: Store | str) -> IdentityGraph:
        """Write this result into an empty store (a ``Store`` or a store URL such as
        ``sqlite:///path.db``) as one batch, and return a graph on it: online events then
        continue exactly as if every event had been ingested online."""
        g = IdentityGraph(self.rules, store=store)
        try:
            self._seed(g)
        except BaseException:
            if isinstance(store, str):  # a store opened here is closed here
                g.close()
            raise
        return g

    def _seed(self, g: IdentityGraph) -> None:
        target = g.store
        if target.counts().events:
            raise ConfigurationError("seed: the store is not empty")
        if isinstance(target, MemoryStore) and target.in_place:
            with target.lock:
                self._fill(target.engine)
            return
        with target.batch() as batch:
            work = WorkingSet(self.rules.compiled, target.erasure_key())
            self._fill(work)
            batch.save(work.changes())


def _load_reset(engine: Engine, n: int, key: tuple[float, str]) -> None:
    """Load a reset of an untouched component as ``Engine._reset`` leaves it: an entry of
    the component's log, its key in the newest key, and the id's earliest reset key, which
    later online events are decided against (R4; its sighting is in first/last seen)."""
    root = engine.lfind(n)
    engine.log.setdefault(root, []).append((key[0], key[1], (n,), RESET))
    engine.seen_key(root, key)
    old = engine.resets.get(n)
    if old is None or key < old:
        engine.resets[n] = key


def _roots(parent: Any) -> np.ndarray:
    """Per node, the root of its tree in a union-find's ``parent`` array (an ``array``
    copied, not viewed: a view would stop the engine from growing), by pointer jumping."""
    root = np.array(parent, dtype=np.int64)
    while True:
        up = root[root]
        if np.array_equal(up, root):
            return root
        root = up


def _profiles_table(
    profile_id: Any,
    user_id: Any,
    user_id_kind: Any,
    identified_user_id: Any,
    identifiers: np.ndarray,
    first_seen: np.ndarray,
    last_seen: np.ndarray,
    company_id: Any,
    company_ids: Any,
    traits: Any,
) -> pa.Table:
    """The ``profiles`` table's columns, in its order (the untouched and the conflicted
    parts are made apart and concatenated: one schema for both)."""
    return pa.table(
        {
            "profile_id": profile_id,
            "user_id": user_id,
            "user_id_kind": user_id_kind,
            "identified_user_id": identified_user_id,
            "identifiers": pa.array(identifiers, pa.int64()),
            "first_seen": _timestamps(first_seen),
            "last_seen": _timestamps(last_seen),
            "company_id": company_id,
            "company_ids": company_ids,
            "traits": traits,
        }
    )


def _timestamps(seconds: np.ndarray) -> pa.Array[Any]:
    """Epoch seconds as UTC microsecond timestamps, rounded as ``datetime.fromtimestamp``
    rounds them (``Profile.first_seen``): the fraction, half to even."""
    frac, whole = np.modf(np.asarray(seconds, dtype=np.float64))
    us = np.round(frac * 1e6)
    whole = np.where(us >= 1e6, whole + 1, np.where(us < 0, whole - 1, whole))
    us = np.where(us >= 1e6, us - 1e6, np.where(us < 0, us + 1e6, us))
    micros = whole.astype(np.int64) * 1_000_000 + us.astype(np.int64)
    return pa.array(micros, pa.timestamp("us", tz="UTC"))


def _sparse_text(n: int, held: dict[int, str]) -> Any:
    """A string array of ``n`` nulls but at the positions ``held`` gives."""
    if not held:
        return pa.nulls(n, pa.string())
    at = np.full(n, -1, dtype=np.int64)
    keys = np.fromiter(held, dtype=np.int64, count=len(held))
    at[keys] = np.arange(len(held), dtype=np.int64)
    where: Any = pa.array(at, mask=at < 0)
    return pa.array(list(held.values()), pa.string()).take(where)


#: JSON text of traits as ``json.dumps(traits, sort_keys=True)`` writes it (the same
#: encoder, made once: ``dumps`` makes one per call, half the cost of a small dict)
_text: Callable[[Any], str] = json.JSONEncoder(sort_keys=True).encode


def _smallest(group: np.ndarray, key: np.ndarray, values: Any) -> np.ndarray:
    """Per group (ascending), the position of its smallest ``(key, value)`` row (``group``:
    nodes; ``key``: integers; ``values``: Arrow strings, whose order is Python's: UTF-8
    bytes in code point order). A group-wise minimum of the key in numpy, then the values
    compared only where two rows of a group tie on its minimum (two identifiers of one kind
    first seen in one event): no sort over every node."""
    if len(group) == 0:
        return np.zeros(0, dtype=np.int64)
    size = int(group.max()) + 1
    low = np.full(size, np.iinfo(np.int64).max, dtype=np.int64)
    np.minimum.at(low, group, key)
    cand = np.flatnonzero(key == low[group])
    g = group[cand]
    win = np.full(size, -1, dtype=np.int64)
    win[g] = cand  # (a tied group's winner is chosen below)
    tied = np.bincount(g, minlength=size)[g] > 1
    if tied.any():
        rows, gs = cand[tied], g[tied]
        o = pc.sort_indices(
            pa.table({"group": pa.array(gs), "value": values.take(pa.array(rows))}),
            sort_keys=[("group", "ascending"), ("value", "ascending")],
        ).to_numpy(zero_copy_only=False)
        rows, gs = rows[o], gs[o]
        head = _starts(gs)
        win[gs[head]] = rows[head]
    out: np.ndarray = win[win >= 0]
    return out


def _engine_keys(engine: Engine) -> dict[str, Any]:
    """An engine's nodes' canonical-id key columns (R5, ``canonical_row``), converted from
    its lists once for every order :func:`_key_order` makes: kind, first_ts, first_eid,
    value."""
    return {
        "kind": np.array(engine.kind, dtype=np.int64),
        # (+ 0.0: -0.0 and 0.0 are one key, as Python compares them)
        "first_ts": np.array(engine.first_ts, dtype=np.float64) + 0.0,
        "first_eid": pa.array(engine.first_eid, pa.string()),
        "value": pa.array(engine.value, pa.string()),
    }


def _key_order(
    keys: dict[str, Any], pos: np.ndarray, nodes: np.ndarray, *, with_kind: bool
) -> np.ndarray:
    """The order of an engine's ``nodes`` by ``(profile, kind, first_ts, first_eid, value)``
    (R5, ``canonical_row``), or without the kind (an identified user, ``build_profile``),
    sorted by Arrow (its string order is Python's). ``pos``: each node's profile; ``keys``:
    :func:`_engine_keys`."""
    at = pa.array(nodes)
    columns: dict[str, Any] = {"profile": pa.array(pos[nodes])}
    if with_kind:
        columns["kind"] = pa.array(keys["kind"][nodes])
    columns["first_ts"] = pa.array(keys["first_ts"][nodes])
    columns["first_eid"] = keys["first_eid"].take(at)
    columns["value"] = keys["value"].take(at)
    order: np.ndarray = pc.sort_indices(
        pa.table(columns), sort_keys=[(c, "ascending") for c in columns]
    ).to_numpy(zero_copy_only=False)
    return order


def _starts(keys: np.ndarray) -> np.ndarray:
    """Per row of sorted ``keys``: whether it starts a run of equal keys (a group's first)."""
    head = np.ones(len(keys), dtype=bool)
    head[1:] = keys[1:] != keys[:-1]
    return head


def _inverse(order: np.ndarray) -> np.ndarray:
    """The inverse of a permutation: per item, its position in ``order``."""
    out = np.empty(len(order), dtype=np.int64)
    out[order] = np.arange(len(order), dtype=np.int64)
    return out


def _flat(table: pa.Table) -> pa.Table:
    """List columns as JSON text (CSV has no lists)."""
    cols = []
    for name in table.column_names:
        col = table.column(name)
        if pa.types.is_list(col.type):
            flat = pa.array([None if v is None else json.dumps(v) for v in col.to_pylist()])
            cols.append(pa.chunked_array([flat]))
        else:
            cols.append(col)
    return pa.table(cols, names=table.column_names)


# -- resolve ------------------------------------------------------------------------------


#: the JSONL keys the columnar lane carries: text, and JSON values (kept as their text)
_LINE_TEXT = frozenset(
    ("type", "event", "name", "userId", "anonymousId", "previousId", "groupId", "timestamp")
)
_LINE_JSON = frozenset(_JSON_COLUMNS)
_LINE_CHUNK = 65_536


class _Lines:
    """A JSONL source read into Segment columns (``table``, row ``i`` being input event
    ``position[i]``), and the lines the columns cannot carry exactly (``other``:
    ``(position, message)``, read by ``RecordBuilder`` as ``ingest`` reads them)."""

    def __init__(self, table: pa.Table, position: np.ndarray, other: list[tuple[int, Any]]):
        self.table = table
        self.position = position
        self.other = other


def _line_keys(rules: Any) -> tuple[frozenset[str], frozenset[str]]:
    """The message keys outside the columns that reading a message may look at: those that
    send a line to the builder, and the keys inside ``context`` that do (a ``context`` with
    none of them changes nothing: docs/formats.md, Identifiers inside messages)."""
    outside: set[str] = {"context"}
    in_context: set[str] = {"traits"}  # (an identify's context.traits are traits)
    for parents, extractors in rules.extractors.values():
        for at, leaf, *_ in extractors:
            parent = parents[at]
            root = parent[0] if parent else leaf
            if root == "context":
                in_context.add(parent[1] if len(parent) > 1 else leaf)
            elif root not in COLUMNS:
                outside.add(root)
    return frozenset(outside), frozenset(in_context)


def _read_lines(files: list[tuple[Path, Format]], rules: Any) -> _Lines:
    """JSONL files as Segment columns. A line goes in the columns when every key it has is
    either a column of the right type (text, or any JSON value for ``traits``,
    ``properties``, ``identifiers``, ``set_once``, kept as JSON text that reads back to the
    same value), a key no reading looks at once ``timestamp`` is text (``sentAt``, ...), or
    a ``context`` holding nothing the rules read; every other line stays a message."""
    outside, in_context = _line_keys(rules)
    dumps = json.JSONEncoder(separators=(",", ":")).encode
    names = sorted(_LINE_TEXT | _LINE_JSON | {"messageId"})
    chunks: list[pa.RecordBatch] = []
    position: list[int] = []
    other: list[tuple[int, Any]] = []
    schema = pa.schema([(c, pa.string()) for c in names])
    rows: list[dict[str, Any]] = []

    def flush() -> None:
        if rows:
            chunks.append(pa.RecordBatch.from_pylist(rows, schema=schema))
            rows.clear()

    index = 0
    for path, f in files:
        for msg in _jsonl_messages(path, f == "jsonl.gz"):
            i = index
            index += 1
            if type(msg) is not dict or type(msg.get("type")) is not str:
                other.append((i, msg))
                continue
            if type(msg.get("timestamp")) is not str:
                other.append((i, msg))
                continue
            row: dict[str, Any] = {}
            for k, v in msg.items():
                if v is None:
                    continue
                if k in _LINE_TEXT:
                    if type(v) is not str:
                        break
                    row[k] = v
                elif k in _LINE_JSON:
                    row[k] = dumps(v)
                elif k == "messageId":
                    if type(v) is not str:
                        break
                    row[k] = v
                elif k in outside and (
                    k != "context" or type(v) is not dict or not in_context.isdisjoint(v)
                ):
                    break
            else:
                position.append(i)
                rows.append(row)
                if len(rows) >= _LINE_CHUNK:
                    flush()
                continue
            other.append((i, msg))
    flush()
    return _Lines(
        pa.Table.from_batches(chunks, schema=schema), np.array(position, dtype=np.int64), other
    )


#: the Parquet text columns read as dictionaries (``_coded`` takes their codes as they are);
#: times and event ids, nearly all distinct, stay text
_DICTIONARY_COLUMNS = tuple(
    c for c in COLUMNS if c not in ("timestamp", "originalTimestamp", "messageId")
)


def _read_parquet(path: Path) -> pa.Table:
    """A Parquet file, its text identifier, type and JSON columns read as dictionaries:
    Parquet stores them dictionary-encoded, and materializing the strings only to encode
    them again cost most of the read (about 1.5 of 2 CPU seconds at 10^6 identifiers,
    docs/benchmarks.md). Read by ``ParquetFile`` rather than ``read_table``: the same
    table, one chunk per row group instead of one per batch of the dataset reader, and
    without importing ``pyarrow.dataset`` (which imports pandas): ~0.8 CPU seconds less
    at 10^6 identifiers in a fresh process."""
    try:
        schema = pq.read_schema(path)
        wanted = [f.name for f in schema if f.name in _DICTIONARY_COLUMNS and _is_text(f.type)]
        with pq.ParquetFile(path, read_dictionary=wanted or None) as file:
            return file.read()
    except (pa.ArrowException, OSError) as exc:
        raise _unreadable_parquet(path, exc) from None


def _unreadable_parquet(path: Path, exc: Exception) -> ConfigurationError:
    return ConfigurationError(f"source={str(path)!r}: not a readable Parquet file: {exc}")


def _read_table(source: Any, fmt: Format | None, rules: Any = None) -> pa.Table | _Lines | None:
    """The source as one Arrow table when it is columnar (a Table, a Dataset, Parquet), or,
    given ``rules``, JSONL files read into columns."""
    if isinstance(source, pa.Table):
        return source
    if isinstance(source, pa.RecordBatch):
        return pa.Table.from_batches([source])
    if isinstance(source, (str, os.PathLike)):
        files = _files(Path(source), fmt)
        if all(f == "parquet" for _, f in files):
            tables = [_read_parquet(path) for path, _ in files]
            return pa.concat_tables(tables, promote_options="permissive")
        if rules is not None and all(f != "parquet" for _, f in files):
            return _read_lines(files, rules)
        return None
    import pyarrow.dataset as ds

    if isinstance(source, ds.Dataset):
        return source.to_table()
    return None


def _reloader(source: Any, fmt: Format | None, rules: Any) -> Callable[[], pa.Table] | None:
    """How to read a file source's table again (``None``: keep the table, the caller's or
    an iterable's). Made before the source is read, so that a file rewritten while it is
    read is refused too. The files must be unchanged then: the same files (a file added to
    a directory would shift or add rows), each file's :func:`_stamp` the same; a change
    raises ``ConfigurationError`` rather than give rows the result was not computed
    from."""
    if not isinstance(source, (str, os.PathLike)):
        return None
    where = Path(source).absolute()  # (the same files, whatever the working directory is then)
    files = _files(where, fmt)
    stamps = [(path, _stamp(path)) for path, _ in files]

    def reload() -> pa.Table:
        def changed(what: Any) -> ConfigurationError:
            return ConfigurationError(
                f"source={str(what)!r}: changed since batch.resolve read it; resolve it again"
            )

        for path, stamp in stamps:
            if _stamp(path) != stamp:
                raise changed(path)
        try:
            now = [path for path, _ in _files(where, fmt)]
        except ConfigurationError:
            now = []
        if now != [path for path, _ in files]:
            raise changed(where)
        read = _read_table(where, fmt, rules)
        table = read.table if isinstance(read, _Lines) else read
        assert table is not None
        return table

    return reload


def _stamp(path: Path) -> tuple[int, ...] | None:
    """What tells a file changed: its size and modification time, and its inode and change
    time, which a copy keeping times (``cp -p``, ``rsync -t``) or a replacing rename does
    not keep (no call sets the change time)."""
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns


def _reset_bound_nodes(
    etype: np.ndarray,
    anchor: np.ndarray,
    rank: np.ndarray,
    occ_r: np.ndarray,
    occ_n: np.ndarray,
    nn: int,
) -> np.ndarray:
    """The anonymous ids whose reset is felt (docs/batch.md, Classify): carried by a link
    event (two or more identifiers) ranked after the id's earliest reset. A reset retires
    its id only for later events (R4), and only a link event's decision reads ``resets``;
    every other reset leaves the fold what plain union makes it."""
    resets = np.flatnonzero((etype == RESET) & (anchor >= 0))
    if not len(resets):
        return np.zeros(0, dtype=np.int64)
    # per node: the rank of its earliest reset (len(rank), past every event: none)
    first_reset = np.full(nn, len(rank), dtype=np.int64)
    np.minimum.at(first_reset, anchor[resets], rank[resets])
    # the occurrences of reset ids (few), those of them in events ranked after the id's
    # earliest reset, and of these the ones in link events (a repeated identifier counted
    # twice would only call more events links)
    mine = np.flatnonzero((first_reset < len(rank))[occ_n])
    r = occ_r[mine]
    n = occ_n[mine]
    later = rank[r] > first_reset[n]
    r = r[later]
    n = n[later]
    bound: np.ndarray = n[np.bincount(occ_r, minlength=len(rank))[r] >= 2]
    return bound


def resolve(
    source: Any,
    *,
    rules: Rules | None = None,
    format: Format | None = None,
    on_error: Literal["raise", "skip"] = "raise",
    clock: Callable[[], datetime | float | int] | None = None,
    progress: Callable[[str, float], None] | None = None,
    columnar: bool = True,
) -> BatchResult:
    """Resolve a whole event history at once, with the answer ``IdentityGraph.ingest`` of
    the same events gives (docs/batch.md).

    ``source``: a Parquet, JSONL or JSONL.gz file or a directory of them, a pyarrow Table or
    Dataset, or an iterable of event objects and message dicts (what ``ingest`` reads).
    ``format`` names the files' format when their names do not. ``on_error`` is as in
    ``ingest``: ``"raise"`` raises the first bad event's error (nothing is resolved),
    ``"skip"`` leaves bad events out and lists them in :attr:`BatchResult.errors`.
    ``progress(phase, seconds)`` is called as each phase ends. ``columnar=False`` reads every
    row of a columnar source through ``RecordBuilder`` (the slow lane; for checking)."""
    if rules is None:
        rules = Rules()
    elif not isinstance(rules, Rules):
        raise ConfigurationError(f"rules={rules!r}: must be an identityres.Rules")
    if on_error not in ("raise", "skip"):
        raise InvalidEventError("on_error", on_error, 'must be "raise" or "skip"')
    if format is not None and format not in ("parquet", "jsonl", "jsonl.gz"):
        raise ConfigurationError(f"format={format!r}: must be 'parquet', 'jsonl' or 'jsonl.gz'")
    compiled = rules.compiled
    names = compiled.kind_names
    build = RecordBuilder(compiled, clock or _system_clock)
    times: dict[str, float] = {}

    def done(phase: str, started: float) -> float:
        # Arrow's allocator keeps what a phase freed (the table read, above all) for Arrow
        # alone; the next phases allocate mostly numpy arrays, so it goes back to the system
        pa.default_memory_pool().release_unused()
        now = time.perf_counter()
        times[phase] = now - started
        if progress is not None:
            progress(phase, times[phase])
        return now

    t = time.perf_counter()
    reader = _reloader(source, format, compiled if columnar else None)
    read = _read_table(source, format, compiled if columnar else None)
    other: list[tuple[int, Any]] = []
    if isinstance(read, _Lines):
        table: pa.Table | None = read.table
        row_position = read.position
        other = read.other
    else:
        table = read
        row_position = np.arange(0 if table is None else table.num_rows, dtype=np.int64)
    if table is not None:
        t = done("read", t)
    # 1. decode. The columnar lane: plain rows, vectorized; every other event through
    # ``RecordBuilder``, as ``ingest`` reads it, with duplicates and conflicts by ``admit``.
    lanes = None if table is None or not columnar else _columnar(table, build, compiled)
    if lanes is not None and table is not None:
        fast_mask, fast_etype, fast_ts, columns, row_data, dropped = lanes
        fast_rows = np.flatnonzero(fast_mask)
        # (redeliveries of a row the columnar lane reads: duplicates, read no further)
        slow_rows = np.flatnonzero(~fast_mask & ~dropped)
        redelivered = int(dropped.sum())
        del fast_mask, dropped
        inputs: Iterable[tuple[int, Any]] = zip(
            row_position[slow_rows].tolist(),
            _table_messages(_take_rows(table, slow_rows)),
            strict=True,
        )
    else:
        fast_rows = np.zeros(0, dtype=np.int64)
        columns = []
        fast_etype = fast_ts = np.zeros(0)
        row_data = _RowData(np.zeros(0, dtype=np.int64), [], np.zeros(0, dtype=np.int64), [])
        redelivered = 0
        if table is None:
            inputs = enumerate(_messages(source, format))
        else:
            inputs = zip(row_position.tolist(), _table_messages(table), strict=True)
    if other:  # (JSONL lines left as messages: in input order among the table's rows)
        inputs = heapq.merge(inputs, other, key=lambda pair: pair[0])
    nf = len(fast_rows)
    fast_eids: Any = pa.array([], pa.string())
    if nf:
        assert table is not None
        fast_eids = table.column("messageId").combine_chunks().cast(pa.string()).take(fast_rows)

    def slowly() -> BatchResult:
        # an event id of the record lane (a derived one, or a JSONL line left as a message)
        # is a columnar row's messageId: read it all the slow way, where ``admit`` sees
        # them together, in input order
        return resolve(
            source,
            rules=rules,
            format=format,
            on_error=on_error,
            clock=clock,
            progress=progress,
            columnar=False,
        )

    def shared(ids: Iterable[str]) -> bool:
        wanted = pa.array(list(ids), pa.string())
        return bool(nf and len(wanted) and pc.any(pc.is_in(fast_eids, value_set=wanted)).as_py())

    held: dict[str, int] = {}
    records: list[Record] = []
    errors: list[EventError] = []
    duplicates = redelivered
    for index, event in inputs:
        op: Any = event
        try:
            # a message of another platform (docs/formats.md) is read as ingest() reads it,
            # into one or more operations, all of them applied or none
            if isinstance(event, Mapping) and not (type(event) is dict and "type" in event):
                ops: Any = translate(event, "auto")
            else:
                ops = (event,)
            built: list[Record] = []
            for op in ops:
                rec = build.from_object(op)
                at = held.get(rec.event_id)
                if at is not None and admit(records[at].fingerprint, rec, names) == CONFLICT:
                    raise conflict(rec)
                built.append(rec)
        except ValidationError as exc:
            if on_error == "raise" and shared(held):
                # (the error online raises first may be a conflict with a columnar row)
                return slowly()
            bad_event(exc, event, index, on_error, errors, op)
            continue
        for rec in built:
            eid = rec.event_id
            at = held.get(eid)
            if at is not None:
                duplicates += 1
                # ``ingest`` applies the first in key order (a clocked timestamp may differ)
                if rec.ts < records[at].ts:
                    records[at] = rec
                continue
            held[eid] = len(records)
            records.append(rec)
    if shared(held):
        return slowly()
    # (a file source is read again when graph()/seed() need its rows, not kept: the peak
    # is in the next phases, and at 10^7 identifiers the table is gigabytes)
    reload = None if table is None else reader
    kept = table if reload is None else None
    del read, table, lanes, held, row_position
    t = done("decode", t)

    # 2. nodes and link components (vectorized)
    nr = nf + len(records)
    ts = np.concatenate([fast_ts[fast_rows], np.array([r.ts for r in records], dtype=np.float64)])
    etype = np.concatenate(
        [fast_etype[fast_rows], np.array([r.etype for r in records], dtype=np.int8)]
    ).astype(np.int8)
    eids = pa.concat_arrays([fast_eids, pa.array([r.event_id for r in records], pa.string())])
    # the fast rows' identifiers: a node per distinct normalized value used (two raw values
    # may normalize alike), numbered kind by kind; the values stay in Arrow
    row_nodes: list[np.ndarray] = []
    node_kind_parts: list[np.ndarray] = []
    node_value_parts: list[Any] = []
    known: dict[int, tuple[int, Any]] = {}  # kind -> (its first node, its values)
    nn = 0
    for kind, codes, values in sorted(columns, key=lambda c: c[0]):
        mine = codes[fast_rows]
        used = np.zeros(len(values) + 1, dtype=bool)
        used[mine + 1] = True
        used_codes = np.flatnonzero(used[1:])
        venc: Any = pc.dictionary_encode(values.take(pa.array(used_codes)))
        node_of = np.full(len(values) + 1, -1, dtype=np.int64)
        node_of[used_codes + 1] = nn + venc.indices.to_numpy(zero_copy_only=False)
        row_nodes.append(node_of[mine + 1])
        uniq = venc.dictionary
        known[kind] = (nn, uniq)
        node_kind_parts.append(np.full(len(uniq), kind, dtype=np.int64))
        node_value_parts.append(uniq)
        nn += len(uniq)
    occ_rec_parts: list[np.ndarray] = []
    occ_node_parts: list[np.ndarray] = []
    anchor = np.full(nr, -1, dtype=np.int64)
    edges_a: list[np.ndarray] = []
    edges_b: list[np.ndarray] = []
    rows_idx = np.arange(nf, dtype=np.int64)
    for nodes in row_nodes:
        present = nodes >= 0
        occ_rec_parts.append(rows_idx[present])
        occ_node_parts.append(nodes[present])
        later = present & (anchor[:nf] >= 0)
        edges_a.append(anchor[:nf][later])
        edges_b.append(nodes[later])
        leads = present & (anchor[:nf] < 0)
        anchor[:nf][leads] = nodes[leads]
    # the record lane's identifiers: looked up among the nodes above, kind by kind (new
    # values become new nodes)
    py: dict[int, Record] = {}
    slow_occ_rec: list[int] = []
    slow_occ_kind: list[int] = []
    slow_occ_value: list[str] = []
    slow_first: list[bool] = []
    for j, rec in enumerate(records):
        i = nf + j
        py[i] = rec
        first = True
        for k, v in rec.ids:
            slow_occ_rec.append(i)
            slow_occ_kind.append(k)
            slow_occ_value.append(v)
            slow_first.append(first)
            first = False
    s_rec = np.array(slow_occ_rec, dtype=np.int64)
    s_kind = np.array(slow_occ_kind, dtype=np.int64)
    s_node = np.full(len(s_rec), -1, dtype=np.int64)
    if len(s_rec):
        s_values = pa.array(slow_occ_value, pa.string())
        for kind in np.unique(s_kind).tolist():
            where = np.flatnonzero(s_kind == kind)
            vals: Any = s_values.take(where)
            if kind in known:
                base, uniq = known[kind]
                # (the lane's values, ~10^6 of a kind, probe a hash of the record lane's few:
                # hashing the lane's values to probe them with these cost ~0.3 s at 10^6)
                few: Any = pc.unique(vals)
                at_few = pc.fill_null(pc.index_in(uniq, value_set=few), -1)
                at_few_np = at_few.to_numpy(zero_copy_only=False).astype(np.int64)
                node_of_few = np.full(len(few) + 1, -1, dtype=np.int64)
                node_of_few[at_few_np[at_few_np >= 0] + 1] = np.flatnonzero(at_few_np >= 0)
                pos = pc.fill_null(pc.index_in(vals, value_set=few), -1)
                found = node_of_few[pos.to_numpy(zero_copy_only=False).astype(np.int64) + 1]
            else:
                found = np.full(len(where), -1, dtype=np.int64)
                base = 0
            hit = found >= 0
            s_node[where[hit]] = base + found[hit]
            if not hit.all():
                menc: Any = pc.dictionary_encode(vals.filter(pa.array(~hit)))
                s_node[where[~hit]] = nn + menc.indices.to_numpy(zero_copy_only=False)
                node_kind_parts.append(np.full(len(menc.dictionary), kind, dtype=np.int64))
                node_value_parts.append(menc.dictionary)
                nn += len(menc.dictionary)
    is_first = np.array(slow_first, dtype=bool)
    anchor[s_rec[is_first]] = s_node[is_first]
    # each further identifier of an event joins its first (the anchor)
    slow_a = anchor[s_rec[~is_first]]
    slow_b = s_node[~is_first]
    slow_occ_node = s_node
    is_operator = np.isin(etype, np.array(_OPERATOR, dtype=np.int8))
    operator_nodes = anchor[is_operator & (anchor >= 0)]
    occ_r = np.concatenate([*occ_rec_parts, s_rec])
    occ_n = np.concatenate([*occ_node_parts, slow_occ_node])
    kind_arr = np.concatenate([np.zeros(0, dtype=np.int64), *node_kind_parts])
    node_value: Any = pa.concat_arrays([pa.array([], pa.string()), *node_value_parts])
    comp = components(
        nn,
        np.concatenate([*edges_a, slow_a]),
        np.concatenate([*edges_b, slow_b]),
    )
    # event order: rank of each event by (timestamp, event_id)
    order = pc.sort_indices(
        pa.table({"ts": pa.array(ts), "eid": eids}),
        sort_keys=[("ts", "ascending"), ("eid", "ascending")],
    ).to_numpy()
    rank = np.empty(nr, dtype=np.int64)
    rank[order] = np.arange(nr, dtype=np.int64)
    first_rank = np.full(nn, nr, dtype=np.int64)
    np.minimum.at(first_rank, occ_n, rank[occ_r])
    last_ts = np.full(nn, -np.inf)
    np.maximum.at(last_ts, occ_n, ts[occ_r])
    # (what only this phase needed goes: the peak of the run is in the next phases)
    fast_eids = eids.slice(0, 0)  # (``shared`` holds the name; the ids are in ``eids``)
    del columns, occ_rec_parts, occ_node_parts, edges_a, edges_b
    del s_rec, s_node, slow_a, slow_b, slow_occ_node, is_first, rows_idx, fast_ts
    t = done("components", t)

    # 3. classify: which components some rule can touch
    touched = np.zeros(nn, dtype=bool)
    if nn:
        # A forced merge, a split or an erasure touches its component; a reset only when a
        # link event after it carries its id (docs/batch.md, Classify): any other reset
        # leaves the component's fold what plain union makes it.
        op_type = etype[is_operator & (anchor >= 0)]  # (the events operator_nodes are of)
        touched[comp[operator_nodes[op_type != RESET]]] = True
        touched[comp[_reset_bound_nodes(etype, anchor, rank, occ_r, occ_n, nn)]] = True
        size = np.bincount(comp, minlength=nn)
        if compiled.max_profile_size is not None:
            touched |= size > compiled.max_profile_size
        for k in compiled.limited:
            lim = compiled.limits[k]
            assert lim is not None
            count = np.bincount(comp[kind_arr == k], minlength=nn)
            touched |= count > lim
    del occ_r, occ_n, rank  # (the occurrences: read by this phase last)
    # an event is fast when its component is untouched (an event of no identifiers is fast)
    fast_record = np.ones(nr, dtype=bool)
    has_ids = anchor >= 0
    fast_record[has_ids] = ~touched[comp[anchor[has_ids]]]
    events = _Events(
        build,
        ts,
        eids,
        etype,
        py,
        kept,
        np.concatenate([fast_rows, np.full(len(records), -1, dtype=np.int64)]),
        anchor,
        row_data.take(fast_rows, len(records)),
        row_nodes,
        kind_arr,
        node_value,
        reload,
    )
    t = done("classify", t)

    # 4. the conflicted components, through the online engine, in key order
    # (first, what only the phases above needed goes: the peak is in the tables, and at
    # 10^7 identifiers these per-row arrays, the table and the lane's codes are gigabytes)
    del row_data
    conflicted = IdentityGraph(rules)
    store = conflicted.store
    assert isinstance(store, MemoryStore)
    with store.lock:
        engine = store.engine
        for rec in events.decided(order[~fast_record[order]]):
            engine.apply(rec)
    t = done("engine", t)
    result = BatchResult(
        rules,
        events,
        kind_arr,
        node_value,
        None,
        comp,
        touched,
        fast_record,
        first_rank,
        last_ts,
        order,
        conflicted,
        tuple(errors),
        duplicates,
        times,
    )
    if progress is not None:
        progress("tables", times["tables"])
    return result
