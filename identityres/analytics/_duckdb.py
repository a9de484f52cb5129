"""The DuckDB engine (``pip install 'identityres[analytics]'``): events and the identity
map become tables, and the stitching join and the funnels are SQL, so nothing loops over the
events in Python when they come from a JSONL file (docs/analytics.md, "Engines")."""

from __future__ import annotations

import csv
import json
import math
import os
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from identityres.analytics._inputs import (
    COMPANY,
    identity_map,
    is_path,
    load,
    stitch,
)
from identityres.analytics._results import FunnelResult
from identityres.errors import ConfigurationError

if TYPE_CHECKING:
    from identityres._graph import IdentityGraph

#: what ``str.strip()`` strips (the default normalizer), for DuckDB's ``trim``
_WHITESPACE = "".join(chr(c) for c in range(sys.maxunicode + 1) if chr(c).isspace())
_NO_STOP = 1 << 62


def available() -> bool:
    try:
        import duckdb  # noqa: F401
    except ImportError:
        return False
    return True


def _duckdb() -> Any:
    try:
        import duckdb
    except ImportError:
        raise ConfigurationError(
            "engine='duckdb' needs DuckDB: pip install 'identityres[analytics]'"
        ) from None
    return duckdb


def _lit(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


@contextmanager
def _session(
    graph: IdentityGraph, events: Any, lo: float, hi: float, company: bool, props: bool = True
) -> Iterator[Any]:
    """A DuckDB connection holding ``e(person, ts, event_id, name, props, seq)``: the
    events of ``lo <= ts < hi`` stitched to people, numbered per person in key order."""
    duckdb = _duckdb()
    with tempfile.TemporaryDirectory(prefix="identityres-") as tmp:
        con = duckdb.connect(
            config={"threads": os.cpu_count() or 1, "memory_limit": "3GB", "temp_directory": tmp}
        )
        try:
            idmap = os.path.join(tmp, "idmap.csv")
            with open(idmap, "w", encoding="utf-8", newline="") as f:
                csv.writer(f, quoting=csv.QUOTE_ALL).writerows(graph._identity_rows())
            con.execute(
                "CREATE TABLE idmap AS SELECT * FROM read_csv(?, header=false, delim=',', "
                "quote='\"', escape='\"', columns={k: 'VARCHAR', v: 'VARCHAR', p: 'VARCHAR'})",
                [idmap],
            )
            if company:
                companies = os.path.join(tmp, "companies.jsonl")
                with open(companies, "w", encoding="utf-8") as f:
                    for p in graph.profiles():
                        f.write(json.dumps({"p": p.id, "c": p.company_id}) + "\n")
                con.execute(
                    "CREATE TABLE companies AS SELECT * FROM read_json(?, "
                    "format='newline_delimited', columns={p: 'VARCHAR', c: 'VARCHAR'})",
                    [companies],
                )
            if not (is_path(events) and _raw(con, graph, os.fspath(events), props)):
                _stitched_in_python(con, graph, events, tmp)
            lo_sql = "-1e300" if lo == -math.inf else repr(lo)
            hi_sql = "1e300" if hi == math.inf else repr(hi)
            con.execute(
                "CREATE TABLE e AS SELECT person, ts, event_id, name, props, row_number() "
                "OVER (PARTITION BY person ORDER BY ts, event_id) AS seq FROM ev "
                f"WHERE ts >= {lo_sql} AND ts < {hi_sql}"
            )
            yield con
        finally:
            con.close()


def _stitched_in_python(con: Any, graph: IdentityGraph, events: Any, tmp: str) -> None:
    path = os.path.join(tmp, "events.jsonl")
    with open(path, "w", encoding="utf-8") as f:
        for pid, _, e in stitch(load(graph, events), identity_map(graph)):
            props = None if e.properties is None else json.dumps(e.properties)
            f.write(
                json.dumps({"p": pid, "t": e.ts, "i": e.event_id, "n": e.name, "r": props}) + "\n"
            )
    con.execute(
        "CREATE TABLE ev AS SELECT p AS person, t AS ts, i AS event_id, n AS name, "
        "r::JSON AS props FROM read_json(?, format='newline_delimited', columns={p: 'VARCHAR', "
        "t: 'DOUBLE', i: 'VARCHAR', n: 'VARCHAR', r: 'VARCHAR'})",
        [path],
    )


def _raw(con: Any, graph: IdentityGraph, path: str, props: bool) -> bool:
    """Stitch a JSONL file of Segment messages in SQL; ``False`` when it cannot be done
    exactly there (custom normalizers, messages without ``messageId`` or timestamp): Python
    does it. ``props``: keep the properties (a breakdown by a property needs them)."""
    if graph.rules.normalizers:
        return False
    ws = _lit(_WHITESPACE)
    stamp = "coalesce(timestamp, originalTimestamp)"
    con.execute(
        f"""CREATE TABLE msgs AS SELECT messageId, type, userId, anonymousId, previousId,
            identifiers,
            coalesce(TRY_CAST({stamp} AS DOUBLE),
                     epoch_us(TRY_CAST({stamp} AS TIMESTAMPTZ)) / 1e6) AS ts,
            CASE WHEN type = 'track' THEN event
                 WHEN type IN ('page', 'screen') THEN coalesce(nullif(name, ''), type)
                 ELSE type END AS name,
            {
            "CASE WHEN type IN ('track', 'page', 'screen') THEN properties END"
            if props
            else "NULL::JSON"
        } AS props
        FROM (SELECT row_number() OVER () AS line, * FROM read_json(?,
            format='newline_delimited', columns={{type: 'VARCHAR', event: 'VARCHAR',
            name: 'VARCHAR', userId: 'VARCHAR', anonymousId: 'VARCHAR',
            previousId: 'VARCHAR', messageId: 'VARCHAR', timestamp: 'VARCHAR',
            originalTimestamp: 'VARCHAR', identifiers: 'MAP(VARCHAR, VARCHAR)'
            {", properties: 'JSON'" if props else ""}}}))
        WHERE type IN ('track', 'page', 'screen', 'identify', 'alias', 'group', 'reset')
        QUALIFY row_number() OVER (PARTITION BY messageId ORDER BY line) = 1""",
        [path],
    )
    (missing,) = con.execute(
        "SELECT count(*) FROM msgs WHERE messageId IS NULL OR ts IS NULL"
    ).fetchone()
    if missing:
        con.execute("DROP TABLE msgs")
        return False
    priority = {k: i for i, k in enumerate(graph.rules.all_kinds)}
    prio_sql = (
        "CASE i.k " + " ".join(f"WHEN {_lit(k)} THEN {i}" for k, i in priority.items()) + " END"
    )
    for statement in f"""
        CREATE TABLE ids AS
        SELECT messageId, k, trim(v, {ws}) AS v FROM (
            SELECT messageId, unnest([
                {{'k': 'user_id', 'v': userId}},
                {{'k': 'anonymous_id', 'v': CASE WHEN type <> 'alias' THEN anonymousId END}},
                {{'k': CASE WHEN previousId = anonymousId THEN 'anonymous_id'
                      ELSE 'user_id' END,
                  'v': CASE WHEN type = 'alias' THEN previousId END}}
            ], recursive := true) FROM msgs
            UNION ALL SELECT messageId, unnest(map_keys(identifiers)),
                unnest(map_values(identifiers)) FROM msgs WHERE identifiers IS NOT NULL
        ) WHERE v IS NOT NULL;
        CREATE TABLE ev AS
        SELECT w.person, m.ts, m.messageId AS event_id, m.name, m.props
        FROM msgs m JOIN (
            SELECT i.messageId, arg_min(idmap.p, {prio_sql}) AS person
            FROM ids i JOIN idmap ON i.k = idmap.k AND i.v = idmap.v
            GROUP BY i.messageId
        ) w ON m.messageId = w.messageId
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
    graph: IdentityGraph,
    events: Any,
    wanted: frozenset[str] | None,
    lo: float,
    hi: float,
    by: str | None,
) -> int | dict[Any, int]:
    with _session(graph, events, lo, hi, by == COMPANY, _needs_props(by)) as con:
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
    graph: IdentityGraph,
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
    with _session(graph, events, lo, hi, by == COMPANY, _needs_props(by)) as con:
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
