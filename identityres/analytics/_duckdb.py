"""The DuckDB engine (``pip install 'identityres[analytics]'``): events and the identity
map become tables, and the stitching join and the funnels are SQL, so nothing loops over the
events in Python when they come from a JSONL file (docs/analytics.md, "Engines")."""

from __future__ import annotations

import json
import math
import os
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from identityres._events import MAX_TIMESTAMP, MIN_TIMESTAMP
from identityres.analytics._inputs import (
    COMPANY,
    Identities,
    arrow_module,
    identity_map,
    is_parquet,
    is_path,
    load,
    stitch,
)
from identityres.analytics._results import FunnelResult
from identityres.errors import ConfigurationError, InvalidQueryError

#: what ``str.strip()`` strips (the default normalizer), for DuckDB's ``trim``
_WHITESPACE = "".join(chr(c) for c in range(sys.maxunicode + 1) if chr(c).isspace())
_NO_STOP = 1 << 62


def available() -> bool:
    try:
        import duckdb  # noqa: F401
        import pyarrow  # noqa: F401
    except ImportError:
        return False
    return True


def _duckdb() -> Any:
    try:
        import duckdb
        import pyarrow  # noqa: F401 (the identity map goes to DuckDB as Arrow)
    except ImportError:
        raise ConfigurationError(
            "engine='duckdb' needs DuckDB and pyarrow: pip install 'identityres[analytics]'"
        ) from None
    return duckdb


def _lit(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _stripped(value: str) -> str:
    """SQL for ``value.strip()``. DuckDB's ``trim`` with a set of characters costs about 2 s
    of CPU per million values; most values have no whitespace at either end, so it only
    runs on those that do. A printable ASCII character at each end (``ord``, cheaper than
    looking the characters up in the set) settles most values without the set."""
    ws = _lit(_WHITESPACE)
    return (
        f"CASE WHEN ord({value}) BETWEEN 33 AND 126 AND ord(right({value}, 1)) BETWEEN 33 AND 126 "
        f"THEN {value} "
        f"WHEN contains({ws}, left({value}, 1)) OR contains({ws}, right({value}, 1)) "
        f"THEN trim({value}, {ws}) ELSE {value} END"
    )


def _iso_shaped(text: str) -> str:
    """SQL: ``text`` starts like an ISO-8601 date (a digit, ``-`` at the 5th and 8th
    characters), which no number DuckDB reads as a ``DOUBLE`` does (a number has at most one
    ``-`` after a leading digit, in its exponent): such text skips the failing cast to a
    number, which costs as much as parsing the timestamp."""
    return (
        f"(substr({text}, 5, 1) = '-' AND substr({text}, 8, 1) = '-' "
        f"AND left({text}, 1) BETWEEN '0' AND '9')"
    )


#: the ISO-8601 texts SQL reads: with seconds and a zone, an hour below 24 (DuckDB reads a
#: text without a zone, a bare date or 24:00 too; ingest refuses them, so Python reads a
#: file holding one and says so; docs/analytics.md)
_ISO = (
    r"\d{4}-\d\d-\d\d[T ]([01]\d|2[0-3]):[0-5]\d:[0-5]\d(\.\d+)?"
    r"([Zz]|[+-]([01]\d|2[0-3]):?[0-5]\d)"
)


def _epoch(text: str) -> str:
    """SQL for the epoch seconds of a timestamp in text: a number, or ISO-8601 of the form
    :data:`_ISO` (``NULL`` otherwise)."""
    iso = (
        f"CASE WHEN regexp_full_match({text}, {_lit(_ISO)}) "
        f"THEN epoch_us(TRY_CAST({text} AS TIMESTAMPTZ)) / 1e6 END"
    )
    number = f"TRY_CAST({text} AS DOUBLE)"
    return f"CASE WHEN {_iso_shaped(text)} THEN {iso} ELSE coalesce({number}, {iso}) END"


def _load_identity_map(con: Any, source: Identities) -> None:
    """``idmap(k, v, person)`` and ``people(person, pid)``: people become integers, so that
    joins and sorts are on ints."""
    path = source.map_file()
    if path is not None:
        # a file: DuckDB reads it (at 3.8 million identifiers, about a third of the CPU
        # pyarrow takes to read it and encode the profile ids, and none of its memory)
        read = f"read_parquet({_lit(path)})"
        try:
            con.execute(
                "CREATE TABLE people AS SELECT pid, (row_number() OVER () - 1)::INTEGER AS "
                f"person FROM (SELECT DISTINCT profile_id AS pid FROM {read})"
            )
            con.execute(
                "CREATE TABLE idmap AS SELECT m.kind AS k, m.value AS v, p.person "
                f"FROM {read} m JOIN people p ON m.profile_id = p.pid"
            )
        except _duckdb().Error as exc:
            raise InvalidQueryError("graph", os.path.dirname(path), f"{path}: {exc}") from None
        return
    import pyarrow.compute as pc

    pa = arrow_module()
    # Arrow to DuckDB without a copy; a person is the dictionary code of their profile id
    table = source.arrow()
    coded = pc.dictionary_encode(table.column("profile_id")).combine_chunks()
    con.register(
        "idmap_arrow",
        pa.table({"k": table.column("kind"), "v": table.column("value"), "person": coded.indices}),
    )
    con.execute("CREATE TABLE idmap AS SELECT * FROM idmap_arrow")
    con.unregister("idmap_arrow")
    del table
    people = coded.dictionary
    con.register(
        "people_arrow",
        pa.table({"person": pa.array(range(len(people)), pa.int32()), "pid": people}),
    )
    con.execute("CREATE TABLE people AS SELECT * FROM people_arrow")
    con.unregister("people_arrow")


@contextmanager
def _session(
    source: Identities,
    events: Any,
    lo: float,
    hi: float,
    company: bool,
    props: bool = True,
    wanted: frozenset[str] | None = None,
    numbered: bool = True,
) -> Iterator[Any]:
    """A DuckDB connection holding ``e(person, ts, event_id, name, props[, seq])``: the
    events of ``lo <= ts < hi`` (named in ``wanted``, when given) stitched to people (an
    integer per profile), numbered per person in key order when ``numbered``."""
    duckdb = _duckdb()
    pa = arrow_module()

    with tempfile.TemporaryDirectory(prefix="identityres-") as tmp:
        con = duckdb.connect(
            config={"threads": os.cpu_count() or 1, "memory_limit": "3GB", "temp_directory": tmp}
        )
        try:
            _load_identity_map(con, source)
            if company:
                held = source.companies()
                con.register(
                    "companies_arrow",
                    pa.table(
                        {
                            "pid": pa.array(list(held), pa.string()),
                            "c": pa.array(list(held.values()), pa.string()),
                        }
                    ),
                )
                con.execute(
                    "CREATE TABLE companies AS SELECT p.person AS p, c.c "
                    "FROM companies_arrow c JOIN people p USING (pid)"
                )
            window = _window_sql(lo, hi, wanted)
            path = os.fspath(events) if is_path(events) else None
            # numbered: a funnel, which orders by event ids (unique_users keeps none)
            if path is None or not _raw(con, source, path, props, window, numbered):
                _stitched_in_python(con, source, events, lo, hi, wanted)
            if numbered:
                con.execute(
                    "CREATE TABLE e AS SELECT person, ts, event_id, name, props, row_number() "
                    "OVER (PARTITION BY person ORDER BY ts, event_id) AS seq FROM ev"
                )
                con.execute("DROP TABLE ev")
            else:
                con.execute("ALTER TABLE ev RENAME TO e")
            yield con
        finally:
            con.close()


def _window_sql(lo: float, hi: float, wanted: frozenset[str] | None) -> tuple[str, str]:
    """SQL conditions on the ``name`` and on the ``ts`` of the events a query looks at."""
    times = []
    if lo != -math.inf:
        times.append(f"ts >= {lo!r}")
    if hi != math.inf:
        times.append(f"ts < {hi!r}")
    names = "true"
    if wanted is not None:
        names = "name IN (" + ", ".join(_lit(n) for n in sorted(wanted)) + ")"
    return names, " AND ".join(times) or "true"


def _stitched_in_python(
    con: Any,
    source: Identities,
    events: Any,
    lo: float,
    hi: float,
    wanted: frozenset[str] | None,
) -> None:
    pa = arrow_module()
    cols: dict[str, list[Any]] = {"pid": [], "ts": [], "event_id": [], "name": [], "props": []}
    pid, ts, eid, name, props = cols.values()
    for p, _, e in stitch(load(source.graph, events), identity_map(source)):
        if lo <= e.ts < hi and (wanted is None or e.name in wanted):
            pid.append(p)
            ts.append(e.ts)
            eid.append(e.event_id)
            name.append(e.name)
            props.append(None if e.properties is None else json.dumps(e.properties))
    con.register(
        "stitched",
        pa.table(
            {
                "pid": pa.array(pid, pa.string()),
                "ts": pa.array(ts, pa.float64()),
                "event_id": pa.array(eid, pa.string()),
                "name": pa.array(name, pa.string()),
                "props": pa.array(props, pa.string()),
            }
        ),
    )
    con.execute(
        "CREATE TABLE ev AS SELECT p.person, s.ts, s.event_id, s.name, s.props::JSON AS props "
        "FROM stitched s JOIN people p USING (pid)"
    )
    con.unregister("stitched")


#: the Segment columns the SQL reads, and what a missing one is
_COLUMNS = {
    "type": "VARCHAR",
    "event": "VARCHAR",
    "name": "VARCHAR",
    "userId": "VARCHAR",
    "anonymousId": "VARCHAR",
    "previousId": "VARCHAR",
    "messageId": "VARCHAR",
    "timestamp": "VARCHAR",
    "originalTimestamp": "VARCHAR",
    "identifiers": "MAP(VARCHAR, VARCHAR)",
    "properties": "JSON",
}
_INTEGER = ("TINYINT", "SMALLINT", "INTEGER", "BIGINT", "UTINYINT", "USMALLINT", "UINTEGER")


def _parquet_columns(con: Any, path: str, props: bool) -> dict[str, str] | None:
    """SQL for each Segment column of a Parquet file, read as ``batch.resolve`` reads it;
    ``None`` for a column type SQL does not read exactly (Python does)."""
    types = {
        name: kind
        for name, kind, *_ in con.execute(
            "DESCRIBE SELECT * FROM read_parquet(?)", [path]
        ).fetchall()
    }
    out: dict[str, str] = {}
    for name, want in _COLUMNS.items():
        col = '"' + name + '"'
        kind = types.get(name)
        if kind is None or (name == "properties" and not props):
            out[name] = f"NULL::{want}"
        elif name in ("timestamp", "originalTimestamp"):
            if kind == "VARCHAR":
                # ISO-8601 text only: ingest refuses a number in text (Python raises it);
                # '' and not NULL, which coalesce() would replace by the originalTimestamp
                out[name] = (
                    f"CASE WHEN {_iso_shaped(col)} OR TRY_CAST({col} AS DOUBLE) IS NULL "
                    f"THEN {col} ELSE '' END"
                )
            elif kind.startswith("TIMESTAMP") or kind in _INTEGER or kind == "DOUBLE":
                # a timestamp without a zone is UTC; numbers are epoch seconds
                out[name] = (
                    f"CAST(epoch_us({col}) / 1e6 AS VARCHAR)"
                    if kind.startswith("TIMESTAMP")
                    else f"CAST({col}::DOUBLE AS VARCHAR)"
                )
            else:
                return None
        elif name == "identifiers":
            if kind == "VARCHAR":  # JSON text of an object
                out[name] = f"CAST({col}::JSON AS MAP(VARCHAR, VARCHAR))"
            elif kind == "MAP(VARCHAR, VARCHAR)":
                out[name] = col
            else:
                return None
        elif name == "properties":
            if kind not in ("VARCHAR", "JSON"):
                return None
            out[name] = f"{col}::JSON"
        elif kind == "VARCHAR" or (kind in _INTEGER and name not in ("type", "event", "name")):
            out[name] = f"CAST({col} AS VARCHAR)" if kind != "VARCHAR" else col
        else:
            return None
    return out


def _raw(
    con: Any, source: Identities, path: str, props: bool, window: tuple[str, str], ids: bool
) -> bool:
    """Stitch a JSONL or Parquet file of Segment messages in SQL; ``False`` when it cannot be
    done exactly there (custom normalizers, messages without ``messageId`` or timestamp, a
    Parquet column of a type SQL does not read as ``ingest`` does): Python does it.
    ``props``: keep the properties (a breakdown by a property needs them); ``window``: the
    condition on ``ts`` and ``name`` of the events wanted; ``ids``: keep the event ids (a
    funnel orders by them)."""
    rules = source.graph.rules
    if rules.normalizers:
        return False
    try:
        return _stitch_in_sql(con, rules, path, props, window, ids)
    except _duckdb().Error:
        # an unreadable file or a line DuckDB cannot read: Python reads it and says what
        # is wrong, naming the line; the optimizer turned off for the stitching statement
        # is turned on again for the statements that stitch in Python's place
        con.execute("RESET disabled_optimizers")
        _drop(con, "msgs", "cand", "dropped", "other", "ids", "ev")
        return False


def _drop(con: Any, *tables: str) -> None:
    for table in tables:
        con.execute(f"DROP TABLE IF EXISTS {table}")


def _stitch_in_sql(
    con: Any, rules: Any, path: str, props: bool, window: tuple[str, str], keep_ids: bool
) -> bool:
    names, times = window
    kinds = "('track', 'page', 'screen', 'identify', 'alias', 'group', 'reset')"
    file = _lit(path)
    stamp = "coalesce(timestamp, originalTimestamp)"
    if is_parquet(path):
        cols = _parquet_columns(con, path, props)
        if cols is None:
            return False
        # file_row_number: the file's order, so that the first of an event id wins
        select = ", ".join(f"{expr} AS {name}" for name, expr in cols.items())
        read = (
            f"SELECT file_row_number AS line, {select} "
            f"FROM read_parquet({file}, file_row_number=true)"
        )
        # columnar: the ids of every message in a cheap pass of their own; the other
        # columns are read once, by the statements that stitch
        ids = (
            f"SELECT file_row_number AS line, {cols['messageId']} AS messageId "
            f"FROM read_parquet({file}, file_row_number=true) WHERE {cols['type']} IN {kinds}"
        )
    else:
        # the times read as JSON: a JSON number is epoch seconds, a string is ISO-8601 text
        # only (ingest refuses a number in a string; as text, DuckDB could not tell them
        # apart). A refused one becomes '', which no time reads as, not NULL: ingest does not
        # fall back on originalTimestamp when the timestamp is there but wrong
        stamps = ("timestamp", "originalTimestamp")
        types = ", ".join(
            f"{name}: '{'JSON' if name in stamps else kind}'"
            for name, kind in _COLUMNS.items()
            if props or name != "properties"
        )

        def as_text(c: str) -> str:
            text = f"({c}->>'$')"
            return (
                f"CASE json_type({c}) WHEN 'VARCHAR' THEN CASE WHEN {_iso_shaped(text)} "
                f"OR TRY_CAST({text} AS DOUBLE) IS NULL THEN {text} ELSE '' END "
                f"WHEN 'NULL' THEN NULL ELSE {c}::VARCHAR END AS {c}"
            )

        read = (
            "SELECT row_number() OVER () AS line, * REPLACE ("
            + ", ".join(as_text(c) for c in stamps)
            + ")"
            + ("" if props else ", NULL::JSON AS properties")
            + f" FROM read_json({file}, format='newline_delimited', columns={{{types}}})"
        )
        ids = "SELECT line, messageId FROM msgs"
    # a message whose name no step wants needs only its id and line (for the
    # first-of-each-id rule): its other columns are not parsed nor kept
    named = f"""SELECT * EXCLUDE (event, name),
            CASE WHEN type = 'track' THEN event
                 WHEN type IN ('page', 'screen') THEN coalesce(nullif(name, ''), type)
                 ELSE type END AS name
        FROM ({read}) WHERE type IN {kinds}"""
    if not is_parquet(path):
        # one pass over the JSON (parsing it is what costs): every message's id and line,
        # the other columns of the wanted ones only
        kept = ", ".join(
            f"CASE WHEN w THEN {c} END AS {c}"
            for c in (
                "userId",
                "anonymousId",
                "previousId",
                "identifiers",
                "timestamp",
                "originalTimestamp",
                "properties",
            )
        )
        con.execute(
            f"CREATE TABLE msgs AS SELECT line, messageId, type, name, {kept}, w "
            f"FROM (SELECT *, coalesce({names}, false) AS w FROM ({named}))"
        )
        named = "SELECT * EXCLUDE (w) FROM msgs WHERE w"
    messages = f"""SELECT line, messageId, type, userId, anonymousId, previousId, identifiers,
            {_epoch(stamp)} AS ts,
            name, CASE WHEN type IN ('track', 'page', 'screen') THEN properties END AS props
        FROM ({named}) WHERE {names}"""
    # the first message of each event id counts, among all of them (a message without an
    # id gets one derived from its content, which no other message's id is): the lines of
    # the others are dropped. Grouping 10^7 ids by a 64-bit hash is about twice as fast as
    # by the text; the few hashes seen twice are then checked on the ids themselves.
    con.execute(
        f"CREATE TABLE cand AS SELECT hash(messageId) AS h FROM ({ids}) "
        "WHERE messageId IS NOT NULL GROUP BY h HAVING count(*) > 1"
    )
    con.execute(
        f"""CREATE TABLE dropped AS SELECT line FROM (
            SELECT line, min(line) OVER (PARTITION BY messageId) AS first FROM ({ids})
            WHERE messageId IS NOT NULL AND hash(messageId) IN (SELECT h FROM cand))
        WHERE line <> first"""
    )
    con.execute("DROP TABLE cand")
    # a wanted message without an id or a timestamp (ingest derives or defaults them, or
    # refuses the message): Python reads the file. Such rows, dropped duplicates included,
    # get a NULL person and are counted below, instead of a pass of their own over the file.
    # (a time outside the window ingest takes, NaN included, is refused by ingest: Python
    # reads the file and says so)
    bad = (
        f"(m.messageId IS NULL OR m.ts IS NULL OR NOT (m.ts >= {MIN_TIMESTAMP!r} "
        f"AND m.ts < {MAX_TIMESTAMP!r}))"
    )
    wanted = f"""SELECT m.* FROM ({messages}) m
        LEFT JOIN (SELECT line AS gone FROM dropped) d ON m.line = d.gone
        WHERE d.gone IS NULL OR {bad}"""
    event_id = "m.messageId AS event_id, " if keep_ids else ""
    priority = {k: i for i, k in enumerate(rules.all_kinds)}
    prio_sql = (
        "CASE i.k " + " ".join(f"WHEN {_lit(k)} THEN {i}" for k, i in priority.items()) + " END"
    )
    # most messages carry a user id and/or an anonymous id and nothing else: those are
    # stitched by one lookup per column, the highest-priority kind first; the others
    # (identifiers maps, aliases) by every identifier they carry
    first, second = ("u", "a") if priority["user_id"] < priority["anonymous_id"] else ("a", "u")
    for statement in f"""
        CREATE TABLE other AS SELECT * FROM ({wanted}) m
            WHERE m.identifiers IS NOT NULL OR m.type = 'alias';
        SET disabled_optimizers = 'build_side_probe_side';
        CREATE TABLE ev AS
        SELECT CASE WHEN NOT {bad} THEN coalesce({first}.person, {second}.person) END AS person,
            m.ts, {event_id}m.name, m.props
        FROM ({wanted}) m
        LEFT JOIN (SELECT v, person FROM idmap WHERE k = 'user_id') u
            ON u.v = {_stripped("m.userId")}
        LEFT JOIN (SELECT v, person FROM idmap WHERE k = 'anonymous_id') a
            ON a.v = {_stripped("m.anonymousId")}
        WHERE m.identifiers IS NULL AND m.type <> 'alias'
            AND ({bad} OR ((u.person IS NOT NULL OR a.person IS NOT NULL) AND {times}));
        RESET disabled_optimizers;
        INSERT INTO ev SELECT NULL, NULL, {"NULL, " if keep_ids else ""}NULL, NULL
            FROM other m WHERE {bad};
        DROP TABLE dropped;
        {"DROP TABLE msgs" if not is_parquet(path) else "SELECT 1"}
        """.split(";"):
        if statement.strip():
            con.execute(statement)
    (missing,) = con.execute("SELECT count(*) FROM ev WHERE person IS NULL").fetchone()
    if missing:
        _drop(con, "other", "ev")
        return False
    for statement in f"""
        CREATE TABLE ids AS
        SELECT line, k, {_stripped("v")} AS v FROM (
            SELECT line, unnest([
                {{'k': 'user_id', 'v': userId}},
                {{'k': 'anonymous_id', 'v': CASE WHEN type <> 'alias' THEN anonymousId END}},
                {{'k': CASE WHEN previousId = anonymousId THEN 'anonymous_id'
                      ELSE 'user_id' END,
                  'v': CASE WHEN type = 'alias' THEN previousId END}}
            ], recursive := true) FROM other
            UNION ALL SELECT line, unnest(map_keys(identifiers)),
                unnest(map_values(identifiers)) FROM other WHERE identifiers IS NOT NULL
        ) WHERE v IS NOT NULL;
        INSERT INTO ev
        SELECT w.person, m.ts, {event_id}m.name, m.props
        FROM other m JOIN (
            SELECT i.line, arg_min(idmap.person, {prio_sql}) AS person
            FROM ids i JOIN idmap ON i.k = idmap.k AND i.v = idmap.v
            GROUP BY i.line
        ) w ON m.line = w.line
        WHERE {times};
        DROP TABLE ids;
        DROP TABLE other
        """.split(";"):
        con.execute(statement)
    return True


def _needs_props(by: str | None) -> bool:
    return by is not None and by not in (COMPANY, "day", "week")


def _bucket_sql(by: str | None) -> str:
    if by is None:
        return "NULL"
    if by == COMPANY:
        return "(SELECT c FROM companies WHERE companies.p = e.person)"
    day = "CAST(floor(e.ts / 86400) AS INTEGER)"
    if by == "day":
        return f"strftime(DATE '1970-01-01' + {day}, '%Y-%m-%d')"
    if by == "week":
        return f"strftime(DATE '1970-01-01' + ({day} - ({day} + 3) % 7), '%Y-%m-%d')"
    return "json_extract(e.props, " + _lit("$." + json.dumps(by)) + ")::VARCHAR"


def _bucket_value(by: str | None, raw: Any) -> Any:
    if by is None or by in (COMPANY, "day", "week") or raw is None:
        return raw
    value = json.loads(raw)
    if isinstance(value, (list, dict)):
        return json.dumps(value, sort_keys=True)
    return value


def unique_users(
    source: Identities,
    events: Any,
    wanted: frozenset[str] | None,
    lo: float,
    hi: float,
    by: str | None,
) -> int | dict[Any, int]:
    with _session(
        source, events, lo, hi, by == COMPANY, _needs_props(by), wanted, numbered=False
    ) as con:
        where = ""
        if wanted is not None:
            where = "WHERE e.name IN (" + ", ".join(_lit(n) for n in sorted(wanted)) + ")"
        if by is None:
            (n,) = con.execute(f"SELECT count(DISTINCT person) FROM e {where}").fetchone()
            return int(n)
        rows = con.execute(
            f"SELECT b, count(DISTINCT person) FROM (SELECT person, {_bucket_sql(by)} AS b "
            f"FROM e {where}) GROUP BY b"
        ).fetchall()
    out = {_bucket_value(by, b): int(n) for b, n in rows}
    return dict(sorted(out.items(), key=lambda kv: (kv[0] is None, str(kv[0]))))


def funnel(
    source: Identities,
    events: Any,
    steps: tuple[str, ...],
    within: float,
    order: str,
    count: str,
    by: str | None,
    lo: float,
    hi: float,
    exclude: frozenset[str],
) -> dict[Any, FunnelResult]:
    k = len(steps)
    # a strict funnel looks at every event of a person (nothing may come between two
    # steps); the others only at the steps and exclusions, in the same relative order
    wanted = None if order == "strict" else frozenset(steps) | exclude
    with _session(source, events, lo, hi, by == COMPANY, _needs_props(by), wanted) as con:
        if order == "any":
            con.execute(
                "CREATE TABLE en AS SELECT person, name, seq, ts, row_number() OVER "
                "(PARTITION BY person, name ORDER BY seq) AS nr FROM e"
            )
        excl = ", ".join(_lit(n) for n in sorted(exclude)) or "NULL"
        con.execute(
            f"""CREATE TABLE s1 AS SELECT s.person, s.seq AS start, s.ts AS t0, s.b,
                coalesce(x.seq, {_NO_STOP}) AS stop, s.seq AS q1, 0.0::DOUBLE AS d1
            FROM (SELECT e.person, e.seq, e.ts, {_bucket_sql(by)} AS b FROM e
                  WHERE e.name = {_lit(steps[0])}) s
            ASOF LEFT JOIN (SELECT person, seq FROM e WHERE name IN ({excl})) x
                ON s.person = x.person AND x.seq > s.seq"""
        )
        need: dict[str, int] = {}
        for j in range(2, k + 1):
            name = _lit(steps[j - 1])
            need[steps[j - 1]] = need.get(steps[j - 1], 0) + 1
            if order == "sequential":
                found = (
                    f"SELECT p.*, n.seq AS nq, n.ts AS nt FROM s{j - 1} p ASOF LEFT JOIN "
                    f"(SELECT person, seq, ts FROM e WHERE name = {name}) n "
                    f"ON p.person = n.person AND n.seq > p.q{j - 1}"
                )
            elif order == "strict":
                found = (
                    f"SELECT p.*, n.seq AS nq, n.ts AS nt FROM s{j - 1} p LEFT JOIN e n "
                    f"ON p.person = n.person AND n.seq = p.q{j - 1} + 1 AND n.name = {name}"
                )
            else:
                found = (
                    f"SELECT p.*, n.seq AS nq, n.ts AS nt FROM s{j - 1} p "
                    f"ASOF LEFT JOIN (SELECT person, seq, nr FROM en WHERE name = {name}) f "
                    f"ON p.person = f.person AND f.seq > p.start "
                    f"LEFT JOIN en n ON n.person = f.person AND n.name = {name} "
                    f"AND n.nr = f.nr + {need[steps[j - 1]] - 1}"
                )
            ok = f"d{j - 1} IS NOT NULL AND nq IS NOT NULL AND nq < stop AND nt - t0 <= {within!r}"
            con.execute(
                f"CREATE TABLE s{j} AS SELECT * EXCLUDE (nq, nt), "
                f"CASE WHEN {ok} THEN nq END AS q{j}, "
                f"CASE WHEN {ok} THEN greatest(d{j - 1}, nt - t0) END AS d{j} FROM ({found})"
            )
            con.execute(f"DROP TABLE s{j - 1}") if j > 2 else None
        final = f"s{k}"
        ds = [f"d{j}" for j in range(1, k + 1)]
        if count == "uniques":
            con.execute(
                "CREATE TABLE per AS SELECT person, arg_min(b, start) AS b, "
                + ", ".join(f"min({d}) AS {d}" for d in ds)
                + f" FROM {final} GROUP BY person"
            )
            final = "per"
        cols = []
        for d in ds:
            cols.append(f"count({d})")
            for p in (50, 90):
                cols.append(
                    f"list_sort(list({d}) FILTER (WHERE {d} IS NOT NULL))"
                    f"[greatest((count({d}) * {p} + 99) // 100, 1)]"
                )
        rows = con.execute(f"SELECT b, {', '.join(cols)} FROM {final} GROUP BY b").fetchall()
    out: dict[Any, FunnelResult] = {}
    for row in rows:
        counts = [int(row[1 + 3 * j]) for j in range(k)]
        medians = [None] + [row[2 + 3 * j] if counts[j] else None for j in range(1, k)]
        p90s = [None] + [row[3 + 3 * j] if counts[j] else None for j in range(1, k)]
        out[_bucket_value(by, row[0])] = FunnelResult.from_counts(steps, counts, medians, p90s)
    return out
