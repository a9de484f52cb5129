"""The PostgreSQL store (``postgresql://host/db?namespace=NAME``): one identity graph shared by
many processes on many machines.

``PostgresStore`` implements the storage protocol (``storage/_protocol.py``) with psycopg 3 and
its connection pool (``pip install 'identityres[postgres]'``; both are imported only when a
store is made). What lives here: the schema and its version check, the batch (one transaction,
its locks), the reads, and the translation of driver errors into
:class:`~identityres.errors.StorageError`. What does not: any decision — the engine decides;
this module only keeps rows.

Each graph lives in its own PostgreSQL schema, the **namespace** (default ``identityres``),
created on first use; several graphs (tenants, apps) share one database without seeing each
other's rows. Every table name reaches SQL composed by :mod:`psycopg.sql` (``Identifier``),
every value as a bound parameter.

Schema (version 1), in the namespace::

    schema_version(version)             one row: the layout of this namespace
    meta(name, value)                   the erasure key, the rules
    counters(name, slot, value)         events, identifiers, profiles, identified_profiles,
                                        each split over _SLOTS rows (a batch adds to one
                                        slot, so that writers do not queue on one row)
    node_refs                           a sequence: refs are never reused
    nodes(ref PRIMARY KEY, kind, value, first_ts, first_event_id, last_ts, reset_ts,
          reset_event_id, component, profile, split_ts, split_event_id)
                                        unique (kind, value); by (component, profile)
    links(event_id PRIMARY KEY, ts, component, members bigint[], refused, etype,
          erased_kind)                  refused: JSON text or NULL; by component
    traits(node, once, key, ts, event_id, value)            value: JSON text
    company_links(node, company_id, ts, event_id)           by company_id
    company_traits(company_id, key, ts, event_id, value)    value: JSON text
    companies(company_id)
    events(event_id PRIMARY KEY, fingerprint bytea)
    blocked(kind, value, count)
    suppressed(hash bytea PRIMARY KEY)

Text columns use the ``"C"`` collation (byte order, which for UTF-8 is code point order, as
Python compares). PostgreSQL ``text`` cannot hold NUL (U+0000): a batch that would store one
raises :class:`~identityres.errors.UnstorableValueError` naming the field, and nothing of it
is stored; reads of such a value find nothing (JSON trait values may hold NUL: JSON escapes it).

Concurrency (docs/storage.md, "PostgreSQL"; docs/decisions.md): a batch is one ``READ
COMMITTED`` transaction. ``load`` row-locks the root rows of the link components the batch
touches (``SELECT ... ORDER BY ref FOR UPDATE``: ascending ref order, so two batches never wait
for each other in a cycle), then, in later statements of the same pipeline (each sees what
committed before it began, so after the locks were granted), reads the identifiers' components
and their rows again: a component merged or split meanwhile is locked too (or, when its root
sorts below a lock already held, the batch is retried) and read again, until every component
loaded is locked. Every batch that writes a component holds
its root's lock, so between ``load`` and commit nobody else changes what was loaded. What a
lock cannot cover is detected instead: an identifier that another batch created meanwhile
(the unique index on ``(kind, value)``), an event id stored meanwhile (its primary key), and a
``seen``/``suppressed`` answer that changed before the locks were granted (read again under the
locks) all make the batch raise :class:`RetryBatch`, as do serialization failures, deadlocks,
lock timeouts and lost connections; the graph rolls the batch back and replays it, a bounded
number of times, then raises ``StorageError``. Row locks live in the rows, not in the server's
shared lock table, so a batch may lock any number of components. One advisory lock per
namespace orders erasures: every batch holds it shared from its first statement on; a batch
that erases takes it exclusively before it writes and checks that nothing it loaded was
created or regrouped meanwhile (an identifier erased before any batch stored it has no row to
lock).

Round trips: a batch costs five whatever its size (six when it erases): ``seen`` (with
``BEGIN`` and the erasure lock), ``suppressed``, ``load``, ``save`` (each one pipeline) and
``COMMIT``. Its statements are planned generically, with sequential and parallel scans off
(see ``_open_pool``), so that they probe indexes for any number of rows and any table size;
they are not prepared (psycopg prepares nothing with ``prepare_threshold=None``, whatever
``prepare`` says), so each is planned when it runs. Node refs come from the sequence in blocks
kept by the store object.

Connections come from a :class:`psycopg_pool.ConnectionPool` (``pool_size``). A connection the
server dropped (``pg_terminate_backend``, a restart) is discarded and replaced: a read that
finds its connection dead is tried again on another, ``retries`` times with a growing pause; a
batch that loses its connection (at its first statement, which carries its ``BEGIN``, or
later) raises ``RetryBatch`` and is replayed on another.

Erasure: ``forget`` deletes the erased identifier's rows from every table in the batch's
transaction. PostgreSQL keeps the old row versions (dead tuples) in the table files until
``VACUUM`` reclaims their space, and the write-ahead log (and any archive, replica or backup)
keeps the original writes: see ``PostgresStore.vacuum`` and docs/storage.md.

Fork: a forked child never uses the pool (nor the connections) it inherited — closing them
would end the parent's sessions — and opens its own on first use.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import secrets
import threading
import time
import weakref
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

from identityres._fork import release_orphaned
from identityres._merge import winners
from identityres._rows import (
    Changes,
    CompanyRows,
    ComponentRows,
    Counts,
    LinkRow,
    NodeRow,
    ProfileRows,
    RetryBatch,
)
from identityres._rules import RulesRecord
from identityres.errors import ConfigurationError, StorageError, UnstorableValueError
from identityres.storage._sql import (  # what both SQL stores do alike
    NODE_NAMES,
    company_from_rows,
    decode_link,
    encode_json,
    profile_page,
    profile_rows,
    resolver,
    sort_nodes,
    whole_components,
)

if TYPE_CHECKING:
    import psycopg
    from psycopg_pool import ConnectionPool

__all__ = ["SCHEMA_VERSION", "PostgresStore"]

#: The layout this module writes. A namespace with a greater version is refused; one with a
#: smaller version is migrated by ``_MIGRATIONS`` (none exist: version 1 is the first).
SCHEMA_VERSION = 1

_T = TypeVar("_T")

#: how many rows each counter is split over
_SLOTS = 16
_COUNTS = ("events", "identifiers", "profiles", "identified_profiles")

# ``{ns}`` is the namespace, composed with ``psycopg.sql.Identifier``; nothing else is
# formatted into SQL.
_SCHEMA = (
    "CREATE TABLE {ns}.schema_version (version integer NOT NULL)",
    'CREATE TABLE {ns}.meta (name text COLLATE "C" PRIMARY KEY, value bytea NOT NULL)',
    """CREATE TABLE {ns}.counters (
        name text COLLATE "C" NOT NULL,
        slot integer NOT NULL,
        value bigint NOT NULL,
        PRIMARY KEY (name, slot)
    )""",
    "CREATE SEQUENCE {ns}.node_refs AS bigint MINVALUE 0 START WITH 0",
    """CREATE TABLE {ns}.nodes (
        ref bigint PRIMARY KEY,
        kind text COLLATE "C" NOT NULL,
        value text COLLATE "C" NOT NULL,
        first_ts double precision NOT NULL,
        first_event_id text COLLATE "C" NOT NULL,
        last_ts double precision NOT NULL,
        reset_ts double precision,
        reset_event_id text COLLATE "C",
        component bigint NOT NULL,
        profile bigint NOT NULL,
        split_ts double precision,
        split_event_id text COLLATE "C"
    )""",
    "CREATE UNIQUE INDEX nodes_by_value ON {ns}.nodes (kind, value)",
    "CREATE INDEX nodes_by_component ON {ns}.nodes (component, profile)",
    """CREATE TABLE {ns}.links (
        event_id text COLLATE "C" PRIMARY KEY,
        ts double precision NOT NULL,
        component bigint NOT NULL,
        members bigint[] NOT NULL,
        refused text,
        etype text COLLATE "C" NOT NULL,
        erased_kind text COLLATE "C"
    )""",
    "CREATE INDEX links_by_component ON {ns}.links (component)",
    "CREATE INDEX links_refused ON {ns}.links (event_id) WHERE refused IS NOT NULL",
    """CREATE TABLE {ns}.traits (
        node bigint NOT NULL,
        once boolean NOT NULL,
        key text COLLATE "C" NOT NULL,
        ts double precision NOT NULL,
        event_id text COLLATE "C" NOT NULL,
        value text NOT NULL,
        PRIMARY KEY (node, once, key)
    )""",
    """CREATE TABLE {ns}.company_links (
        node bigint NOT NULL,
        company_id text COLLATE "C" NOT NULL,
        ts double precision NOT NULL,
        event_id text COLLATE "C" NOT NULL,
        PRIMARY KEY (node, company_id)
    )""",
    "CREATE INDEX company_links_by_company ON {ns}.company_links (company_id)",
    """CREATE TABLE {ns}.company_traits (
        company_id text COLLATE "C" NOT NULL,
        key text COLLATE "C" NOT NULL,
        ts double precision NOT NULL,
        event_id text COLLATE "C" NOT NULL,
        value text NOT NULL,
        PRIMARY KEY (company_id, key)
    )""",
    'CREATE TABLE {ns}.companies (company_id text COLLATE "C" PRIMARY KEY)',
    """CREATE TABLE {ns}.events (
        event_id text COLLATE "C" PRIMARY KEY,
        fingerprint bytea NOT NULL
    )""",
    """CREATE TABLE {ns}.blocked (
        kind text COLLATE "C" NOT NULL,
        value text COLLATE "C" NOT NULL,
        count bigint NOT NULL,
        PRIMARY KEY (kind, value)
    )""",
    "CREATE TABLE {ns}.suppressed (hash bytea PRIMARY KEY)",
)

#: version -> the statements that bring a namespace from that version to the next one
_MIGRATIONS: dict[int, tuple[str, ...]] = {}

#: the tables an erasure deletes from (what ``vacuum`` cleans)
_ERASED_TABLES = ("nodes", "traits", "company_links", "links", "blocked")

_NODE_COLUMNS = ", ".join(NODE_NAMES)
_LINK_COLUMNS = "event_id, ts, component, members, refused, etype, erased_kind"
_L_LINK_COLUMNS = "l.event_id, l.ts, l.component, l.members, l.refused, l.etype, l.erased_kind"

# The rows of some link components, read one component at a time through its index
# (``nodes_by_component``, ``links_by_component``). Written as a join (``component IN
# (...)``), the plan is the planner's choice, and without statistics (a namespace that
# ``ANALYZE`` has not seen yet: autovacuum off, or behind a growing ingest) it guesses that one
# component holds 0.5% of the table, so hashing the whole table looks cheaper than a few
# hundred probes: a plan made once the tables are big scans every row of ``nodes`` and
# ``links`` in every batch, and the server's work per batch grows with the graph
# (docs/decisions.md, "PostgreSQL at 10^6 identifiers"). ``OFFSET 0`` keeps the ``LATERAL``
# subquery from being flattened into that join: the only plan left is a nested loop, one index
# probe per component. (``{{ns}}`` stays ``{ns}`` for psycopg to fill in, as below.)
_PER_COMPONENT = (
    "SELECT x.* FROM ({components}) AS c(component) CROSS JOIN LATERAL ("
    "SELECT {columns} FROM {{ns}}.{table} AS t WHERE t.component = c.component OFFSET 0) AS x"
)
#: the distinct components holding the identifiers ``(kinds, values)``
_WANTED_COMPONENTS = (
    "SELECT DISTINCT n.component FROM unnest(%b::text[], %b::text[]) AS w(kind, value) "
    "JOIN {ns}.nodes AS n ON n.kind = w.kind AND n.value = w.value"
)
#: the components given as an array of refs
_GIVEN_COMPONENTS = "SELECT DISTINCT * FROM unnest(%b::bigint[])"

# The statements of a batch and of the reads; ``{ns}`` as above. One statement per kind of
# row, whatever the number of rows: the rows travel as arrays (``unnest``).
_STATEMENTS = {
    "lock_shared": "SELECT pg_advisory_xact_lock_shared(%s)",
    "lock": "SELECT pg_advisory_xact_lock(%s)",
    "try_lock": "SELECT pg_try_advisory_xact_lock(%s)",
    "seen": "SELECT event_id, fingerprint FROM {ns}.events WHERE event_id = ANY(%b::text[])",
    "suppressed": "SELECT hash FROM {ns}.suppressed WHERE hash = ANY(%b::bytea[])",
    # the roots of the components holding the wanted identifiers, locked in ascending order
    "lock_roots": (
        "SELECT r.ref FROM {ns}.nodes AS r WHERE r.ref IN ("
        " SELECT n.component FROM unnest(%b::text[], %b::text[]) AS w(kind, value)"
        " JOIN {ns}.nodes AS n ON n.kind = w.kind AND n.value = w.value"
        ") ORDER BY r.ref FOR UPDATE OF r"
    ),
    "lock_refs": (
        "SELECT r.ref FROM {ns}.nodes AS r WHERE r.ref = ANY(%b::bigint[]) "
        "ORDER BY r.ref FOR UPDATE OF r"
    ),
    "roots": (
        "SELECT DISTINCT n.component FROM unnest(%b::text[], %b::text[]) AS w(kind, value)"
        " JOIN {ns}.nodes AS n ON n.kind = w.kind AND n.value = w.value"
    ),
    # the rows of the components holding the wanted identifiers, as of this statement (sent
    # right after ``lock_roots``, in the same pipeline: it sees every batch that committed
    # before the locks were granted). Each component is read by a probe of its own
    # (``_PER_COMPONENT``), whatever the planner thinks of the table.
    "wanted_nodes": _PER_COMPONENT.format(
        components=_WANTED_COMPONENTS, columns=_NODE_COLUMNS, table="nodes"
    ),
    "wanted_links": _PER_COMPONENT.format(
        components=_WANTED_COMPONENTS, columns=_LINK_COLUMNS, table="links"
    ),
    "component_nodes": _PER_COMPONENT.format(
        components=_GIVEN_COMPONENTS, columns=_NODE_COLUMNS, table="nodes"
    ),
    "component_links": _PER_COMPONENT.format(
        components=_GIVEN_COMPONENTS, columns=_LINK_COLUMNS, table="links"
    ),
    "new_refs": "SELECT nextval(%s::oid::regclass) FROM generate_series(1, %s)",
    "delete_nodes": "DELETE FROM {ns}.nodes WHERE ref = ANY(%b::bigint[])",
    "delete_traits": "DELETE FROM {ns}.traits WHERE node = ANY(%b::bigint[])",
    "delete_company_links": "DELETE FROM {ns}.company_links WHERE node = ANY(%b::bigint[])",
    # a node created by another batch since this one loaded is a conflict: nothing inserted
    # for it, and the batch is retried (the row count tells)
    "insert_nodes": (
        f"INSERT INTO {{ns}}.nodes ({_NODE_COLUMNS}) SELECT * FROM unnest("
        "%b::bigint[], %b::text[], %b::text[], %b::float8[], %b::text[], %b::float8[], "
        "%b::float8[], %b::text[], %b::bigint[], %b::bigint[], %b::float8[], %b::text[]) "
        "ON CONFLICT (kind, value) DO NOTHING"
    ),
    # most changed nodes only saw another event: their indexed columns stay as they are
    "update_node_times": (
        "UPDATE {ns}.nodes AS n SET first_ts = u.first_ts, first_event_id = u.first_event_id, "
        "last_ts = u.last_ts, reset_ts = u.reset_ts, reset_event_id = u.reset_event_id, "
        "split_ts = u.split_ts, split_event_id = u.split_event_id FROM unnest("
        "%b::bigint[], %b::float8[], %b::text[], %b::float8[], %b::float8[], %b::text[], "
        "%b::float8[], %b::text[]) AS u(ref, first_ts, first_event_id, last_ts, reset_ts, "
        "reset_event_id, split_ts, split_event_id) WHERE n.ref = u.ref"
    ),
    "update_nodes": (
        "UPDATE {ns}.nodes AS n SET first_ts = u.first_ts, first_event_id = u.first_event_id, "
        "last_ts = u.last_ts, reset_ts = u.reset_ts, reset_event_id = u.reset_event_id, "
        "split_ts = u.split_ts, split_event_id = u.split_event_id, "
        "component = u.component, profile = u.profile FROM unnest("
        "%b::bigint[], %b::float8[], %b::text[], %b::float8[], %b::float8[], %b::text[], "
        "%b::float8[], %b::text[], %b::bigint[], %b::bigint[]) AS u(ref, first_ts, "
        "first_event_id, last_ts, reset_ts, reset_event_id, split_ts, split_event_id, "
        "component, profile) WHERE n.ref = u.ref"
    ),
    "delete_links": "DELETE FROM {ns}.links WHERE event_id = ANY(%b::text[])",
    # members travel as text ('{1,2}'): unnest cannot take an array of arrays of any length
    "upsert_links": (
        f"INSERT INTO {{ns}}.links ({_LINK_COLUMNS}) SELECT e, t, c, m::bigint[], r, y, k "
        "FROM unnest(%b::text[], %b::float8[], %b::bigint[], %b::text[], %b::text[], "
        "%b::text[], %b::text[]) AS u(e, t, c, m, r, y, k) "
        "ON CONFLICT (event_id) DO UPDATE SET ts = excluded.ts, component = excluded.component, "
        "members = excluded.members, refused = excluded.refused, etype = excluded.etype, "
        "erased_kind = excluded.erased_kind"
    ),
    # a write replaces the stored one when its (ts, event_id) is greater (``once``: smaller)
    "upsert_traits": (
        "INSERT INTO {ns}.traits (node, once, key, ts, event_id, value) SELECT * FROM unnest("
        "%b::bigint[], %b::boolean[], %b::text[], %b::float8[], %b::text[], %b::text[]) "
        "ON CONFLICT (node, once, key) DO UPDATE SET ts = excluded.ts, "
        "event_id = excluded.event_id, value = excluded.value WHERE CASE WHEN excluded.once "
        "THEN (excluded.ts, excluded.event_id) < (traits.ts, traits.event_id) "
        "ELSE (excluded.ts, excluded.event_id) > (traits.ts, traits.event_id) END"
    ),
    "insert_companies": (
        "INSERT INTO {ns}.companies (company_id) SELECT * FROM unnest(%b::text[]) "
        "ON CONFLICT DO NOTHING"
    ),
    "upsert_company_links": (
        "INSERT INTO {ns}.company_links (node, company_id, ts, event_id) SELECT * FROM unnest("
        "%b::bigint[], %b::text[], %b::float8[], %b::text[]) "
        "ON CONFLICT (node, company_id) DO UPDATE SET ts = excluded.ts, "
        "event_id = excluded.event_id "
        "WHERE (excluded.ts, excluded.event_id) > (company_links.ts, company_links.event_id)"
    ),
    "upsert_company_traits": (
        "INSERT INTO {ns}.company_traits (company_id, key, ts, event_id, value) SELECT * FROM "
        "unnest(%b::text[], %b::text[], %b::float8[], %b::text[], %b::text[]) "
        "ON CONFLICT (company_id, key) DO UPDATE SET ts = excluded.ts, "
        "event_id = excluded.event_id, value = excluded.value "
        "WHERE (excluded.ts, excluded.event_id) > (company_traits.ts, company_traits.event_id)"
    ),
    # an event stored by another batch since ``seen``: a conflict (the row count tells)
    "insert_events": (
        "INSERT INTO {ns}.events (event_id, fingerprint) SELECT * FROM unnest("
        "%b::text[], %b::bytea[]) ON CONFLICT DO NOTHING"
    ),
    "delete_blocked": (
        "DELETE FROM {ns}.blocked AS b USING unnest(%b::text[], %b::text[]) AS u(kind, value) "
        "WHERE b.kind = u.kind AND b.value = u.value"
    ),
    "upsert_blocked": (
        "INSERT INTO {ns}.blocked (kind, value, count) SELECT * FROM unnest("
        "%b::text[], %b::text[], %b::bigint[]) "
        "ON CONFLICT (kind, value) DO UPDATE SET count = blocked.count + excluded.count"
    ),
    "insert_suppressed": (
        "INSERT INTO {ns}.suppressed (hash) SELECT * FROM unnest(%b::bytea[]) "
        "ON CONFLICT DO NOTHING"
    ),
    "add_counters": (
        "UPDATE {ns}.counters AS c SET value = c.value + d.delta "
        "FROM unnest(%b::text[], %b::bigint[]) AS d(name, delta) "
        "WHERE c.name = d.name AND c.slot = %s"
    ),
    "record_rules": (
        "INSERT INTO {ns}.meta (name, value) VALUES ('rules_digest', %s), ('rules', %s) "
        "ON CONFLICT DO NOTHING"
    ),
    "read_rules": ("SELECT name, value FROM {ns}.meta WHERE name IN ('rules', 'rules_digest')"),
    # reads
    "node": f"SELECT {_NODE_COLUMNS} FROM {{ns}}.nodes WHERE kind = %s AND value = %s",
    "nodes_by_ref": f"SELECT {_NODE_COLUMNS} FROM {{ns}}.nodes WHERE ref = ANY(%b::bigint[])",
    "group_of_ref": "SELECT component, profile FROM {ns}.nodes WHERE ref = %s",
    "group_of": "SELECT component, profile FROM {ns}.nodes WHERE kind = %s AND value = %s",
    "profile_nodes": (
        f"SELECT {_NODE_COLUMNS} FROM {{ns}}.nodes WHERE component = %s AND profile = %s"
    ),
    "profile_traits": (
        "SELECT t.node, t.key, t.ts, t.event_id, t.value, t.once FROM {ns}.nodes AS n "
        "JOIN {ns}.traits AS t ON t.node = n.ref WHERE n.component = %s AND n.profile = %s"
    ),
    "profile_company_links": (
        "SELECT c.node, c.company_id, c.ts, c.event_id FROM {ns}.nodes AS n "
        "JOIN {ns}.company_links AS c ON c.node = n.ref WHERE n.component = %s AND n.profile = %s"
    ),
    "page_nodes": (
        f"SELECT {_NODE_COLUMNS} FROM {{ns}}.nodes WHERE component > %s ORDER BY component LIMIT %s"
    ),
    "page_rest": f"SELECT {_NODE_COLUMNS} FROM {{ns}}.nodes WHERE component = %s",
    "page_traits": (
        "SELECT n.profile, t.node, t.key, t.ts, t.event_id, t.value, t.once "
        "FROM {ns}.nodes AS n JOIN {ns}.traits AS t ON t.node = n.ref "
        "WHERE n.component > %s AND n.component <= %s"
    ),
    "page_company_links": (
        "SELECT n.profile, c.node, c.company_id, c.ts, c.event_id "
        "FROM {ns}.nodes AS n JOIN {ns}.company_links AS c ON c.node = n.ref "
        "WHERE n.component > %s AND n.component <= %s"
    ),
    "refused_page": (
        f"SELECT {_LINK_COLUMNS} FROM {{ns}}.links WHERE refused IS NOT NULL "
        "AND event_id > %s ORDER BY event_id LIMIT %s"
    ),
    "company_ids": "SELECT company_id FROM {ns}.companies",
    "company_known": "SELECT 1 FROM {ns}.companies WHERE company_id = %s",
    "company_members": ("SELECT node FROM {ns}.company_links WHERE company_id = %s ORDER BY node"),
    "company_traits": (
        "SELECT company_id, key, ts, event_id, value FROM {ns}.company_traits WHERE company_id = %s"
    ),
    "counters": "SELECT name, sum(value)::bigint FROM {ns}.counters GROUP BY name",
    "blocked": "SELECT kind, value, count FROM {ns}.blocked",
}

#: how a read (or a snapshot) begins: one consistent, committed state
_READ = "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"
#: identifiers (or refused links) per page when streaming profiles (or refusals)
_PAGE = 2000
#: node refs a store object takes from the sequence at a time (see ``_refs_wanted``)
_REF_BLOCK = 1024
#: the namespace used when none is given
DEFAULT_NAMESPACE = "identityres"
#: SQLSTATEs after which a batch is replayed: serialization failure, deadlock, lock timeout
#: (``lock_not_available``), and the connection-loss classes
_RETRY_STATES = {"40001", "40P01", "55P03"}
_RETRY_CLASSES = ("08", "57P")
#: how ``prepare`` is written in a URL
_BOOLEANS = {"true": True, "1": True, "yes": True, "on": True}
_BOOLEANS.update({"false": False, "0": False, "no": False, "off": False})
#: the options of ``PostgresStore`` (and of its URL)
_OPTIONS = (
    "namespace",
    "pool_size",
    "statement_timeout",
    "lock_timeout",
    "connect_timeout",
    "retries",
    "prepare",
)

_EXTRA_HINT = (
    "the PostgreSQL store needs psycopg 3 and psycopg-pool: pip install 'identityres[postgres]'"
)


def _driver() -> tuple[Any, Any, Any]:
    """``(psycopg, psycopg.sql, psycopg_pool)``, imported on first use."""
    try:
        import psycopg
        import psycopg_pool
        from psycopg import sql
    except ImportError as exc:
        raise ConfigurationError(f"{_EXTRA_HINT} ({exc})") from exc
    return psycopg, sql, psycopg_pool


def _members(stored: Any) -> tuple[int, ...]:
    """Link members as stored here: a ``bigint[]``."""
    return tuple(int(m) for m in stored)


def _decode_link(row: Sequence[Any]) -> LinkRow:
    return decode_link(row, _members)


def _floats(keys: tuple[Any, ...]) -> tuple[Any, ...]:
    """A node's time columns (see ``sort_nodes``) with the timestamps as floats (float8
    columns: a timestamp given as an int is sent as a float)."""
    first_ts, first_eid, last_ts, reset_ts, reset_eid, split_ts, split_eid = keys
    return (
        float(first_ts),
        first_eid,
        float(last_ts),
        None if reset_ts is None else float(reset_ts),
        reset_eid,
        None if split_ts is None else float(split_ts),
        split_eid,
    )


def _node(row: Sequence[Any]) -> NodeRow:
    return NodeRow(*row)


def _holds_nul(value: object) -> bool:
    return isinstance(value, str) and "\x00" in value


def _nul_field(changes: Changes) -> tuple[str, str] | None:
    """The first text field of ``changes`` holding NUL, as ``(field, value)``."""
    for node in changes.nodes:
        for field, value in (
            (node.kind, node.value),
            ("kind", node.kind),
            ("event_id", node.first_event_id),
            ("event_id", node.reset_event_id),
            ("event_id", node.split_event_id),
        ):
            if _holds_nul(value):
                return field, value  # type: ignore[return-value]
    candidates: list[tuple[str, Iterable[object]]] = [
        ("event_id", (link.event_id for link in changes.links)),
        ("event_id", changes.deleted_links),
        ("traits", (t.key for t in changes.traits)),
        ("event_id", (t.event_id for t in changes.traits)),
        ("company_id", (c.company_id for c in changes.company_links)),
        ("event_id", (c.event_id for c in changes.company_links)),
        ("company_id", (c.company_id for c in changes.company_traits)),
        ("traits", (c.key for c in changes.company_traits)),
        ("event_id", (c.event_id for c in changes.company_traits)),
        ("company_id", changes.companies),
        ("event_id", (e.event_id for e in changes.events)),
    ]
    for field, texts in candidates:
        for text in texts:
            if isinstance(text, str) and "\x00" in text:
                return field, text
    for kind, value in (*changes.unblocked, *((b.kind, b.value) for b in changes.blocked)):
        if _holds_nul(value):
            return kind, value
        if _holds_nul(kind):
            return "kind", kind
    return None


def _lock_key(namespace: str, what: str = "schema") -> int:
    """An advisory lock of one namespace: ``schema`` serializes creating and migrating it;
    ``erasure`` is held shared by every batch from ``load`` on, and exclusively by a batch
    that erases (see ``_PostgresBatch.save``)."""
    digest = hashlib.blake2b(
        f"identityres {what}\x00".encode() + namespace.encode("utf-8"), digest_size=8
    ).digest()
    return int.from_bytes(digest, "big", signed=True)


def _check_number(name: str, value: Any, *, minimum: float, integer: bool) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        kind = "an int" if integer else "a number of seconds"
        raise ConfigurationError(f"{name}={value!r}: must be {kind} >= {minimum:g}")
    if integer and not isinstance(value, int):
        raise ConfigurationError(f"{name}={value!r}: must be an int >= {minimum:g}")
    if not math.isfinite(value) or value < minimum:
        kind = "an int" if integer else "a number of seconds"
        raise ConfigurationError(f"{name}={value!r}: must be {kind} >= {minimum:g}")


def _check_namespace(namespace: Any) -> str:
    if not isinstance(namespace, str) or not namespace:
        raise ConfigurationError(f"namespace={namespace!r}: must be a non-empty str")
    if "\x00" in namespace:
        raise ConfigurationError(f"namespace={namespace!r}: may not hold NUL")
    if len(namespace.encode("utf-8", "surrogatepass")) > 63:
        raise ConfigurationError(
            f"namespace={namespace!r}: at most 63 bytes (PostgreSQL's limit for names)"
        )
    if namespace.lower().startswith("pg_") or namespace in ("information_schema", "public"):
        raise ConfigurationError(
            f"namespace={namespace!r}: reserved by PostgreSQL (or shared by every user of the "
            "database); choose a name of its own"
        )
    try:
        namespace.encode("utf-8")
    except UnicodeEncodeError:
        raise ConfigurationError(f"namespace={namespace!r}: not valid text") from None
    return namespace


def _redacted(conninfo: str) -> str:
    """The URL without its password (for messages and ``repr``)."""
    try:
        parts = urlsplit(conninfo)
    except ValueError:
        return "postgresql://<unparseable URL>"
    netloc = parts.netloc
    if "@" in netloc:
        user, _, host = netloc.rpartition("@")
        if ":" in user:
            user = user.split(":", 1)[0] + ":***"
        netloc = f"{user}@{host}"
    query = urlencode(
        [(k, "***" if k.lower() == "password" else v) for k, v in parse_qsl(parts.query)]
    )
    return urlunsplit((parts.scheme, netloc, parts.path, query, ""))


class _PostgresBatch:
    """One transaction (see :meth:`PostgresStore.batch`)."""

    __slots__ = (
        "_begun",
        "_conn",
        "_hashes",
        "_roots",
        "_saved",
        "_seen",
        "_store",
        "_suppressed",
        "_wanted",
    )

    def __init__(self, store: PostgresStore, conn: psycopg.Connection[Any]) -> None:
        self._store = store
        self._conn = conn
        self._saved = False
        self._begun = False  # whether BEGIN was sent (with the first statement)
        # what ``seen`` and ``suppressed`` answered: checked again once ``load`` holds locks
        self._seen: dict[str, bytes] = {}
        self._hashes: list[bytes] = []
        self._suppressed: set[bytes] = set()
        # what ``load`` read: checked again by a batch that erases, once it holds the
        # namespace's erasure lock exclusively
        self._wanted: tuple[list[str], list[str]] = ([], [])
        self._roots: set[int] = set()

    def _execute(self, name: str, params: Sequence[Any] = ()) -> psycopg.Cursor[Any]:
        # Planned generically (``plan_cache_mode``, see ``_open_pool``): a plan for any
        # number of rows, that probes the indexes instead of scanning a table that the planner
        # thinks small. (``prepare`` asks psycopg to prepare it, which it does not do on these
        # connections: ``prepare_threshold=None``; docs/storage.md, "Operating notes".)
        store = self._store
        return self._conn.execute(store._sql[name], params, prepare=store.prepare, binary=True)

    def _open(self) -> None:
        """Queue what begins the transaction: ``BEGIN`` and the namespace's erasure lock
        (shared; exclusively when this batch replays an erasure). Sent with the batch's first
        statement, in its pipeline: no round trip of its own."""
        if self._begun:
            return
        self._begun = True
        self._conn.execute("BEGIN ISOLATION LEVEL READ COMMITTED")
        # Held from the start by every batch (held longer than needed is no harm: a batch
        # that erases only needs every other batch to be past ``load`` or not yet there).
        first, self._store._thread.erase_first = self._store._thread.erase_first, False
        self._execute("lock" if first else "lock_shared", (self._store._erasure_lock,))

    def seen(self, event_ids: Collection[str]) -> Mapping[str, bytes]:
        wanted = [e for e in dict.fromkeys(event_ids) if not _holds_nul(e)]
        with self._store._batch_errors("seen"):
            with self._store._pipeline(self._conn):
                self._open()
                cur = self._execute("seen", (wanted,))
            found = {e: bytes(f) for e, f in cur}
        self._seen = {e: found.get(e, b"") for e in wanted}
        return found

    def suppressed(self, hashes: Collection[bytes]) -> set[bytes]:
        self._hashes = list(dict.fromkeys(hashes))
        with self._store._batch_errors("suppressed"):
            with self._store._pipeline(self._conn):
                self._open()
                cur = self._execute("suppressed", (self._hashes,))
            found = {bytes(h) for (h,) in cur}
        self._suppressed = found
        return found

    def load(self, identifiers: Collection[tuple[str, str]]) -> ComponentRows:
        wanted = sorted({(k, v) for k, v in identifiers if not _holds_nul(k + v)})
        kinds = [k for k, _ in wanted]
        values = [v for _, v in wanted]
        store = self._store
        execute = self._execute
        with store._batch_errors("load"):
            # One pipeline (one round trip): lock the components' roots in ascending ref
            # order; then, in statements that start once the locks are granted (READ
            # COMMITTED: each statement sees what committed before it began), check ``seen``
            # and ``suppressed`` again and read the components' rows as they now are; and
            # take node refs for the nodes this batch may create.
            with store._pipeline(self._conn):
                self._open()
                locked = execute("lock_roots", (kinds, values)) if wanted else None
                seen = execute("seen", (list(self._seen),)) if self._seen else None
                erased = execute("suppressed", (self._hashes,)) if self._hashes else None
                node_cur = execute("wanted_nodes", (kinds, values)) if wanted else None
                link_cur = execute("wanted_links", (kinds, values)) if wanted else None
                refill = store._refs_wanted(len(wanted))
                refs_cur = execute("new_refs", (store._sequence, refill)) if refill else None
            if refs_cur is not None:
                store._add_refs([r for (r,) in refs_cur])
            # ``seen`` and ``suppressed`` were answered before the locks: a batch that
            # committed in between may have stored those events or erased those identifiers.
            if seen is not None:
                stored = {e: bytes(f) for e, f in seen}
                if any(stored.get(e, b"") != f for e, f in self._seen.items()):
                    raise RetryBatch("an event of the batch was stored by another batch")
            if erased is not None and {bytes(h) for (h,) in erased} != self._suppressed:
                raise RetryBatch("an identifier of the batch was erased by another batch")
            roots: set[int] = set()
            nodes: list[NodeRow] = []
            links: list[LinkRow] = []
            if locked is not None and node_cur is not None and link_cur is not None:
                roots = {r for (r,) in locked}
                while True:
                    nodes = list(map(_node, node_cur))
                    now = {n.component for n in nodes}
                    if now <= roots:
                        break
                    # A batch that committed before the locks were granted merged or split a
                    # component: lock the new roots too, and read again.
                    more = sorted(now - roots)
                    if roots and more[0] < max(roots):
                        # taking it now could wait in a cycle with a batch that holds it and
                        # waits for ours: start again instead
                        raise RetryBatch("a component changed while its lock was awaited")
                    got = {r for (r,) in execute("lock_refs", (more,))}
                    if got != set(more):
                        raise RetryBatch("a component's root was deleted meanwhile")
                    roots |= got
                    with store._pipeline(self._conn):
                        node_cur = execute("wanted_nodes", (kinds, values))
                        link_cur = execute("wanted_links", (kinds, values))
                roots = now
                # The links were read by a statement of their own: an identifier another batch
                # created since the nodes were read may have brought its component along;
                # that component is not this batch's (the batch fails to create the
                # identifier and is replayed), every locked one is as the nodes saw it.
                links = [link for link in map(_decode_link, link_cur) if link.component in roots]
            self._wanted, self._roots = (kinds, values), roots
        return ComponentRows(tuple(nodes), tuple(links))

    def save(self, changes: Changes) -> None:
        if self._saved:
            raise RuntimeError("save() called twice in one batch")
        self._saved = True
        found = _nul_field(changes)
        if found is not None:
            field, value = found
            raise UnstorableValueError(
                field,
                value,
                "PostgreSQL text cannot hold NUL (U+0000) characters; nothing of the batch "
                "was stored",
            )
        with self._store._batch_errors("save"):
            if changes.suppressed or changes.deleted or changes.unblocked:
                self._erasing()
            self._save(changes)

    def _erasing(self) -> None:
        """Before a batch that erases writes: take the namespace's erasure lock exclusively
        (granted once no other batch is past ``load``; new ones then wait at ``load``; when
        it is not free at once, the batch is replayed holding it from the start), then check
        that no identifier this batch loaded has joined another component or been created
        meanwhile. An identifier that had no row when this batch loaded had nothing to lock:
        a batch creating it while this one suppresses it would otherwise keep it. Batches
        that erase are rare; the others pause while one commits."""
        kinds, values = self._wanted
        with self._store._pipeline(self._conn):
            lock = self._execute("try_lock", (self._store._erasure_lock,))
            # (read in the same round trip; only looked at once the lock is granted)
            again = self._execute("roots", (kinds, values)) if kinds else None
        ((granted,),) = lock.fetchall()
        if not granted:
            # Waiting here, holding row locks, could deadlock with a batch that waits for
            # them: replay instead, taking the lock exclusively before the row locks.
            self._store._thread.erase_first = True
            raise RetryBatch("an erasure waits for the batches in flight")
        if again is not None:
            now = {r for (r,) in again}
            if now != self._roots:
                self._store._thread.erase_first = True
                raise RetryBatch("an identifier of this erasure was written meanwhile")

    def _save(self, changes: Changes) -> None:
        store = self._store
        execute = self._execute
        new_refs = sorted({row.ref for row in changes.nodes if row.ref < 0}, reverse=True)
        refs: dict[int, int] = {}
        if new_refs:
            refs = dict(zip(new_refs, store._take_refs(self._conn, len(new_refs)), strict=True))
        ref = resolver(refs)
        new, moved, seen = sort_nodes(changes.nodes, changes.regrouped, ref)
        inserts = []
        for row, r, keys, component, profile in new:
            k = _floats(keys)
            inserts.append((r, row.kind, row.value, *k[:5], component, profile, *k[5:]))
        updates = [
            (r, *_floats(keys), component, profile) for _, r, keys, component, profile in moved
        ]
        times = [(r, *_floats(keys)) for _, r, keys, _, _ in seen]
        # One statement per kind of row; the driver sends them one after the other in one
        # pipeline (a single round trip) when libpq supports it.
        checks: list[tuple[str, Any, int, list[Any]]] = []
        with store._pipeline(self._conn):
            deleted = sorted(set(changes.deleted))
            if deleted:
                execute("delete_nodes", (deleted,))
                execute("delete_traits", (deleted,))
                execute("delete_company_links", (deleted,))
            if inserts:
                inserts.sort(key=lambda r: (r[1], r[2]))  # one order for every batch
                cur = execute("insert_nodes", _columns(inserts, 12))
                checks.append(("nodes", cur, len(inserts), inserts))
            if times:
                times.sort()
                cur = execute("update_node_times", _columns(times, 8))
                checks.append(("times", cur, len(times), times))
            if updates:
                updates.sort()
                cur = execute("update_nodes", _columns(updates, 10))
                checks.append(("updates", cur, len(updates), updates))
            if changes.deleted_links:
                execute("delete_links", (sorted(set(changes.deleted_links)),))
            if changes.links:
                latest = {link.event_id: link for link in changes.links}
                rows = [
                    (
                        link.event_id,
                        float(link.ts),
                        ref(link.component),
                        "{" + ",".join(str(ref(m)) for m in link.members) + "}",
                        json.dumps([list(r) for r in link.refused]) if link.refused else None,
                        link.etype,
                        link.erased_kind,
                    )
                    for link in latest.values()
                ]
                rows.sort(key=lambda r: r[0])
                execute("upsert_links", _columns(rows, 7))
            if changes.traits:
                best = winners(
                    changes.traits, lambda t: (ref(t.node), t.once, t.key), lambda t: t.once
                )
                trait_rows = sorted(
                    (
                        node,
                        once,
                        key,
                        float(t.ts),
                        t.event_id,
                        encode_json(f"trait {key!r}", t.value),
                    )
                    for (node, once, key), t in best.items()
                )
                execute("upsert_traits", _columns(trait_rows, 6))
            if changes.companies or changes.company_links or changes.company_traits:
                best_links = winners(changes.company_links, lambda c: (ref(c.node), c.company_id))
                best_traits = winners(changes.company_traits, lambda ct: (ct.company_id, ct.key))
                companies = sorted(
                    {
                        *changes.companies,
                        *(cid for _, cid in best_links),
                        *(cid for cid, _ in best_traits),
                    }
                )
                execute("insert_companies", (companies,))
                if best_links:
                    link_rows = sorted(
                        (n, cid, float(c.ts), c.event_id) for (n, cid), c in best_links.items()
                    )
                    execute("upsert_company_links", _columns(link_rows, 4))
                if best_traits:
                    ct_rows = sorted(
                        (
                            ct.company_id,
                            ct.key,
                            float(ct.ts),
                            ct.event_id,
                            encode_json(f"company {ct.company_id!r} trait {ct.key!r}", ct.value),
                        )
                        for ct in best_traits.values()
                    )
                    execute("upsert_company_traits", _columns(ct_rows, 5))
            if changes.events:
                events = sorted({e.event_id: bytes(e.fingerprint) for e in changes.events}.items())
                cur = execute("insert_events", _columns(events, 2))
                checks.append(("events", cur, len(events), events))
            if changes.unblocked:
                gone = sorted(set(changes.unblocked))
                execute("delete_blocked", _columns(gone, 2))
            if changes.blocked:
                added: dict[tuple[str, str], int] = {}
                for b in changes.blocked:
                    added[(b.kind, b.value)] = added.get((b.kind, b.value), 0) + b.added
                execute(
                    "upsert_blocked",
                    _columns([(k, v, n) for (k, v), n in sorted(added.items())], 3),
                )
            if changes.suppressed:
                execute("insert_suppressed", (sorted(set(map(bytes, changes.suppressed))),))
            counts = changes.counts
            deltas = [
                (name, d)
                for name, d in (
                    ("events", counts.events),
                    ("identifiers", counts.identifiers),
                    ("profiles", counts.profiles),
                    ("identified_profiles", counts.identified_profiles),
                )
                if d
            ]
            if deltas:
                execute("add_counters", (*_columns(deltas, 2), random.randrange(_SLOTS)))
        for what, cur, wanted, sent in checks:
            if cur.rowcount == wanted:
                continue
            if what == "nodes":
                raise RetryBatch("another batch created an identifier of this batch meanwhile")
            if what == "events":
                raise RetryBatch("another batch stored an event of this batch meanwhile")
            held = set(store._nodes_by_ref(self._conn, [r[0] for r in sent]))
            missing = sorted({r[0] for r in sent} - held)
            raise StorageError(f"save: ref {missing[0]} names no stored node ({missing})")


def _columns(rows: Sequence[Sequence[Any]], width: int) -> tuple[list[Any], ...]:
    """Rows as ``width`` column lists, for ``unnest``."""
    if not rows:
        return tuple([] for _ in range(width))
    return tuple(list(col) for col in zip(*rows, strict=True))


class _PerThread(threading.local):
    """What one thread has going on a store: its snapshot (connection and depth), and whether
    its next batch takes the erasure lock exclusively from the start."""

    def __init__(self) -> None:
        self.conn: psycopg.Connection[Any] | None = None
        self.depth = 0
        self.erase_first = False


class PostgresStore:
    """Keeps the graph in a PostgreSQL database, in the schema ``namespace`` (created on
    first use; default ``identityres``), shared by any number of processes and machines.

    ``conninfo``: a libpq connection string or URL (``postgresql://user@host:5432/db``; its
    password, if any, is never shown). Options:

    * ``namespace``: the PostgreSQL schema holding this graph's tables (at most 63 bytes;
      not ``public`` nor ``pg_*``): several graphs share one database, one per namespace;
    * ``pool_size``: the most connections this store object opens (default 4; a graph's
      batches use one at a time, reads one each);
    * ``statement_timeout``, ``lock_timeout``: seconds a statement may run, or wait for a
      lock, before the server cancels it (defaults 60 and 30; 0: no limit). A batch whose
      lock wait times out is retried (``RetryBatch``);
    * ``connect_timeout``: seconds to wait for a connection from the pool (default 10);
    * ``retries``: how many more times a read is tried on another connection when its
      connection turns out dead, after a growing pause (default 3; a batch is replayed
      instead);
    * ``prepare``: meant to prepare a batch's statements once per connection (default
      ``True``); today it changes nothing, as the connections prepare no statement either way
      (``prepare_threshold=None``), so ``False`` behind a pooler that cannot keep prepared
      statements is safe but not needed.

    Raises :class:`~identityres.errors.ConfigurationError` for a bad option (naming it and
    its value), a missing driver (naming the extra to install) or a namespace holding another
    schema version or other tables, and :class:`~identityres.errors.StorageError` when the
    server cannot be reached.
    """

    def __init__(
        self,
        conninfo: str,
        *,
        namespace: str = DEFAULT_NAMESPACE,
        pool_size: int = 4,
        statement_timeout: float = 60.0,
        lock_timeout: float = 30.0,
        connect_timeout: float = 10.0,
        retries: int = 3,
        prepare: bool = True,
    ) -> None:
        if not isinstance(conninfo, str) or not conninfo.strip():
            raise ConfigurationError(f"conninfo={conninfo!r}: must be a PostgreSQL URL or DSN")
        if "\x00" in conninfo:
            raise ConfigurationError("conninfo: may not hold NUL")
        self.namespace = _check_namespace(namespace)
        _check_number("pool_size", pool_size, minimum=1, integer=True)
        _check_number("statement_timeout", statement_timeout, minimum=0, integer=False)
        _check_number("lock_timeout", lock_timeout, minimum=0, integer=False)
        _check_number("connect_timeout", connect_timeout, minimum=0, integer=False)
        _check_number("retries", retries, minimum=0, integer=True)
        if not isinstance(prepare, bool):
            raise ConfigurationError(f"prepare={prepare!r}: must be True or False")
        self.prepare = prepare
        self.pool_size = pool_size
        self.statement_timeout = float(statement_timeout)
        self.lock_timeout = float(lock_timeout)
        self.connect_timeout = float(connect_timeout)
        self.retries = retries
        psycopg, sql, _ = _driver()
        self._psycopg = psycopg
        self._conninfo = conninfo
        self._shown = _redacted(conninfo) if "://" in conninfo else "<conninfo>"
        ns = sql.Identifier(self.namespace)
        self._sql: dict[str, Any] = {
            name: sql.SQL(text).format(ns=ns) for name, text in _STATEMENTS.items()
        }
        self._schema_sql = [sql.SQL(text).format(ns=ns) for text in _SCHEMA]
        self._ns_sql = ns
        self._sql_module = sql
        self._lock = threading.RLock()
        self._pool: ConnectionPool[Any] | None = None
        self._closed = False
        self._thread = _PerThread()
        self._erasure_key = b""
        self._sequence = 0
        #: node refs taken from the sequence and not yet used, ascending (a sequence value
        #: is never given twice: those a process never uses are gaps, as a rolled-back
        #: batch's are)
        self._refs: list[int] = []
        self._erasure_lock = _lock_key(self.namespace, "erasure")
        #: rules to record with the next batch (``bind_rules`` on a namespace that has none)
        self._pending_rules: RulesRecord | None = None
        self._pipelines = bool(psycopg.Pipeline.is_supported())
        try:
            self._pool = self._open_pool()
            self._retrying("open", self._setup)
        except BaseException:
            self.close()
            raise
        _LIVE.add(self)

    @classmethod
    def from_url(cls, url: str, **options: Any) -> PostgresStore:
        """``postgresql://user@host:port/db?namespace=NAME&pool_size=4&statement_timeout=60&
        lock_timeout=30&connect_timeout=10&retries=3&prepare=true`` (``postgres://`` too).
        The store's options are taken out of the query; the rest of the URL (and any other
        query parameter, e.g. ``sslmode``) goes to libpq. Keyword ``options`` win over the
        URL's."""
        if not isinstance(url, str):
            raise ConfigurationError(f"store={url!r}: not a store URL")
        unknown = sorted(set(options) - set(_OPTIONS))
        if unknown:
            raise ConfigurationError(
                f"store={_redacted(url)!r}: unknown options {unknown!r}; the options are "
                + ", ".join(_OPTIONS)
            )
        try:
            parts = urlsplit(url)
            pairs = parse_qsl(parts.query, keep_blank_values=True, strict_parsing=bool(parts.query))
        except ValueError as exc:
            raise ConfigurationError(f"store={_redacted(url)!r}: malformed URL: {exc}") from None
        if parts.scheme.lower() not in ("postgresql", "postgres"):
            raise ConfigurationError(
                f"store={_redacted(url)!r}: a PostgreSQL store URL starts with 'postgresql://'"
            )
        given = dict(options)
        options = {}
        rest: list[tuple[str, str]] = []
        for name, raw in pairs:
            if name not in _OPTIONS:
                rest.append((name, raw))
                continue
            try:
                if name == "namespace":
                    options[name] = raw
                elif name == "prepare":
                    options[name] = _BOOLEANS[raw.lower()]
                elif name in ("pool_size", "retries"):
                    options[name] = int(raw)
                else:
                    options[name] = float(raw)
            except (ValueError, KeyError):
                raise ConfigurationError(
                    f"store={_redacted(url)!r}: {name}={raw!r}: "
                    + (
                        "must be an int"
                        if name in ("pool_size", "retries")
                        else "must be true or false"
                        if name == "prepare"
                        else "must be a number"
                    )
                ) from None
        options.update(given)
        conninfo = urlunsplit(
            ("postgresql", parts.netloc, parts.path, urlencode(rest, quote_via=quote), "")
        )
        try:
            return cls(conninfo, **options)
        except ConfigurationError as exc:
            raise ConfigurationError(f"store={_redacted(url)!r}: {exc}") from None

    def __repr__(self) -> str:
        return f"PostgresStore({self._shown!r}, namespace={self.namespace!r})"

    # -- connections, schema, errors -------------------------------------------------------

    def _open_pool(self) -> ConnectionPool[Any]:
        _, _, psycopg_pool = _driver()
        options = (
            f"-c statement_timeout={int(self.statement_timeout * 1000)} "
            f"-c lock_timeout={int(self.lock_timeout * 1000)} "
            # A batch's statements are planned for any number of rows (generic plans), and
            # every one of them is written for the indexes: a sequential scan (or a parallel
            # one) of a graph table is never the right plan for a few thousand keys, but the
            # planner picks one from its guesses about tables it has no statistics for, and
            # as they grow (docs/decisions.md, "PostgreSQL at 10^6 identifiers"). JIT would
            # compile each plan again for what is a few milliseconds of work.
            "-c plan_cache_mode=force_generic_plan -c jit=off "
            "-c enable_seqscan=off -c max_parallel_workers_per_gather=0"
        )
        pool: ConnectionPool[Any] = psycopg_pool.ConnectionPool(
            self._conninfo,
            min_size=1,
            max_size=self.pool_size,
            kwargs={
                "autocommit": True,
                "options": options,
                "prepare_threshold": None,
                # (operators see whose sessions these are in pg_stat_activity)
                "application_name": f"identityres:{self.namespace}"[:63],
            },
            timeout=self.connect_timeout,
            open=False,
            name=f"identityres-{self.namespace}",
        )
        try:
            pool.open(wait=True, timeout=max(self.connect_timeout, 0.001))
        except Exception as exc:
            with suppress(Exception):
                pool.close(timeout=0)
            raise StorageError(
                f"{self!r}: cannot connect to the server: {type(exc).__name__}: {exc}"
            ) from exc
        return pool

    def _the_pool(self) -> ConnectionPool[Any]:
        with self._lock:
            if self._closed:
                raise StorageError(f"{self!r} is closed")
            if self._pool is None:  # (a forked child: its own pool)
                self._pool = self._open_pool()
            return self._pool

    def _getconn(self) -> psycopg.Connection[Any]:
        pool = self._the_pool()
        try:
            conn: psycopg.Connection[Any] = pool.getconn()
        except Exception as exc:
            raise StorageError(
                f"{self!r}: no connection to the server within {self.connect_timeout:g} s: "
                f"{type(exc).__name__}: {exc}"
            ) from exc
        return conn

    def _putconn(self, conn: psycopg.Connection[Any]) -> None:
        pool = self._pool
        if pool is None:  # (closed meanwhile, or forked)
            with suppress(Exception):
                conn.close()
            return
        with suppress(Exception):
            pool.putconn(conn)  # a broken connection is discarded and replaced

    def _lost(self, exc: BaseException) -> bool:
        """Whether ``exc`` says the connection (or the server) is gone."""
        psycopg = self._psycopg
        if isinstance(exc, psycopg.OperationalError):
            state = getattr(exc, "sqlstate", None)
            return state is None or state.startswith(_RETRY_CLASSES)
        return isinstance(exc, psycopg.InterfaceError)

    def _retryable(self, exc: BaseException) -> bool:
        state = getattr(exc, "sqlstate", None)
        return state in _RETRY_STATES or self._lost(exc)

    def _attempts(
        self, what: str, action: Callable[[psycopg.Connection[Any]], _T], *, keep: bool
    ) -> tuple[psycopg.Connection[Any], _T]:
        """Run ``action`` on a pooled connection. A connection the server dropped (the first
        statement tells: no ``SELECT 1`` is sent beforehand) is discarded and ``action`` tried
        on another, ``retries`` times with a growing pause. With ``keep`` the connection is
        the caller's to give back (``_putconn``)."""
        attempt = 0
        psycopg = self._psycopg
        while True:
            conn = self._getconn()
            try:
                result = action(conn)
            except psycopg.Error as exc:
                self._putconn(conn)
                if not self._lost(exc) or attempt >= self.retries:
                    raise StorageError(f"{self!r}: {what} failed: {exc}") from exc
            except BaseException:
                self._putconn(conn)
                raise
            else:
                if not keep:
                    self._putconn(conn)
                return conn, result
            time.sleep(min(0.05 * 2**attempt, 2.0) * (0.5 + random.random()))
            attempt += 1

    def _retrying(self, what: str, action: Callable[[psycopg.Connection[Any]], _T]) -> _T:
        """``action``'s result on a connection that answers (see ``_attempts``)."""
        return self._attempts(what, action, keep=False)[1]

    def _begin(self, what: str, statement: str) -> psycopg.Connection[Any]:
        """A pooled connection on which ``statement`` (a ``BEGIN``) ran (see ``_attempts``)."""
        return self._attempts(what, lambda conn: conn.execute(statement), keep=True)[0]

    @contextmanager
    def _batch_errors(self, what: str) -> Iterator[None]:
        """Driver errors inside a batch: ``RetryBatch`` for those a replay can cure."""
        psycopg = self._psycopg
        try:
            yield
        except psycopg.Error as exc:
            if self._retryable(exc):
                raise RetryBatch(f"{what}: {exc}") from exc
            raise StorageError(f"{self!r}: {what} failed: {exc}") from exc

    @contextmanager
    def _pipeline(self, conn: psycopg.Connection[Any]) -> Iterator[None]:
        if self._pipelines:
            with conn.pipeline():
                yield
        else:
            yield

    def _setup(self, conn: psycopg.Connection[Any]) -> None:
        """Create the namespace and its tables (or check their version, migrating an older
        layout), under an advisory lock so that processes opening at once do not race; read
        the erasure key and the sequence."""
        sql = self._sql_module
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_lock_key(self.namespace),))
            tables = {
                name
                for (name,) in conn.execute(
                    "SELECT c.relname FROM pg_class AS c JOIN pg_namespace AS n "
                    "ON n.oid = c.relnamespace WHERE n.nspname = %s AND c.relkind IN "
                    "('r', 'p', 'v', 'm', 'f')",
                    (self.namespace,),
                )
            }
            if "schema_version" not in tables:
                if tables:
                    raise ConfigurationError(
                        f"{self!r}: the schema {self.namespace!r} exists but is not an "
                        f"identityres namespace (it has tables {sorted(tables)!r} and no "
                        "schema_version table)"
                    )
                conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(self._ns_sql))
                for statement in self._schema_sql:
                    conn.execute(statement)
                ns = self._ns_sql
                conn.execute(
                    sql.SQL("INSERT INTO {}.schema_version (version) VALUES (%s)").format(ns),
                    (SCHEMA_VERSION,),
                )
                conn.execute(
                    sql.SQL(
                        "INSERT INTO {}.counters (name, slot, value) SELECT n, s, 0 FROM "
                        "unnest(%b::text[]) AS n, generate_series(0, %s) AS s"
                    ).format(ns),
                    (list(_COUNTS), _SLOTS - 1),
                )
                conn.execute(
                    sql.SQL("INSERT INTO {}.meta (name, value) VALUES ('erasure_key', %s)").format(
                        ns
                    ),
                    (secrets.token_bytes(32),),
                )
            else:
                self._check_version(conn)
            found = conn.execute(
                sql.SQL("SELECT value FROM {}.meta WHERE name = 'erasure_key'").format(self._ns_sql)
            ).fetchone()
            if found is None or not found[0]:
                raise StorageError(
                    f"{self!r}: the database is damaged: meta row name='erasure_key' is "
                    "missing; without it erased identifiers cannot be recognized"
                )
            self._erasure_key = bytes(found[0])
            (self._sequence,) = conn.execute(
                "SELECT c.oid::bigint FROM pg_class AS c JOIN pg_namespace AS n "
                "ON n.oid = c.relnamespace WHERE n.nspname = %s AND c.relname = 'node_refs'",
                (self.namespace,),
            ).fetchone() or (0,)
            if not self._sequence:
                raise StorageError(
                    f"{self!r}: the database is damaged: the sequence node_refs is missing"
                )

    # -- node refs ------------------------------------------------------------------------

    def _refs_wanted(self, n: int) -> int:
        """How many refs to take from the sequence (in ``load``'s round trip) so that
        ``n`` new nodes find theirs in this store object's reserve: none, or a block."""
        with self._lock:
            have = len(self._refs)
        return 0 if have >= n else max(n - have, _REF_BLOCK)

    def _add_refs(self, refs: Iterable[int]) -> None:
        with self._lock:
            self._refs.extend(refs)
            self._refs.sort()

    def _take_refs(self, conn: psycopg.Connection[Any], n: int) -> list[int]:
        """``n`` refs from the reserve, smallest first (topped up from the sequence in a
        round trip of its own if another thread took what ``load`` reserved)."""
        with self._lock:
            if len(self._refs) < n:
                extra = conn.execute(
                    self._sql["new_refs"],
                    (self._sequence, max(n - len(self._refs), _REF_BLOCK)),
                    prepare=self.prepare,
                )
                self._refs.extend(r for (r,) in extra)
                self._refs.sort()
            taken, self._refs = self._refs[:n], self._refs[n:]
        return taken

    def _check_version(self, conn: psycopg.Connection[Any]) -> None:
        sql = self._sql_module
        rows = conn.execute(
            sql.SQL("SELECT version FROM {}.schema_version").format(self._ns_sql)
        ).fetchall()
        if len(rows) != 1 or not isinstance(rows[0][0], int):
            raise ConfigurationError(
                f"{self!r}: the schema_version table is damaged (rows: {rows!r}); identityres "
                "cannot tell which layout this namespace has"
            )
        version = rows[0][0]
        if version > SCHEMA_VERSION:
            raise ConfigurationError(
                f"{self!r}: the namespace has schema version {version}, but this identityres "
                f"understands versions up to {SCHEMA_VERSION}: it was written by a newer "
                "identityres; upgrade identityres to open it"
            )
        while version < SCHEMA_VERSION:
            steps = _MIGRATIONS.get(version)
            if steps is None:
                raise ConfigurationError(
                    f"{self!r}: the namespace has schema version {version}, older than version "
                    f"{SCHEMA_VERSION} that this identityres writes, and no migration from it "
                    "exists: open it with the identityres release that wrote it, or create a "
                    "new namespace and ingest the events again"
                )
            for statement in steps:
                conn.execute(sql.SQL(statement).format(ns=self._ns_sql))
            version += 1
            conn.execute(
                sql.SQL("UPDATE {}.schema_version SET version = %s").format(self._ns_sql),
                (version,),
            )

    # -- writing --------------------------------------------------------------------------

    @contextmanager
    def batch(self) -> Iterator[_PostgresBatch]:
        """One ``READ COMMITTED`` transaction on a pooled connection; ``load`` takes the
        locks (see the module docs). Committed when the block exits normally, rolled back when
        it raises."""
        if self._thread.depth:
            raise StorageError(
                f"{self!r}: a batch cannot be opened inside a snapshot (only reads belong "
                "there, and they would not see the batch)"
            )
        # BEGIN travels with the batch's first statement (``_PostgresBatch._open``); a
        # connection the server dropped is found there, and the batch replayed on another.
        conn = self._getconn()
        batch = _PostgresBatch(self, conn)
        try:
            pending = self._pending_rules
            if pending is not None:
                with self._batch_errors("begin a batch"):
                    batch._open()
                self._record_rules(conn, pending)
            yield batch
            if batch._begun:
                with self._batch_errors("commit"):
                    conn.execute("COMMIT")
        except BaseException:
            with suppress(Exception):
                if not conn.closed:
                    conn.execute("ROLLBACK")
            self._putconn(conn)
            raise
        self._putconn(conn)
        self._pending_rules = None

    def _record_rules(self, conn: psycopg.Connection[Any], proposed: RulesRecord) -> None:
        with self._batch_errors("record the rules"):
            conn.execute(
                self._sql["record_rules"],
                (proposed.digest.encode("utf-8"), proposed.description.encode("utf-8")),
            )
            found = _read_rules(conn.execute(self._sql["read_rules"]).fetchall())
        if found is not None and found.digest != proposed.digest:
            raise ConfigurationError(
                f"{self!r}: another handle recorded other rules since this one was opened; "
                f"{proposed.difference(found)}"
            )

    def erasure_key(self) -> bytes:
        """The secret that erased identifiers are hashed with, kept in the namespace."""
        return self._erasure_key

    def bind_rules(self, proposed: RulesRecord) -> RulesRecord:
        """The rules recorded in the namespace (``meta`` rows ``rules`` and
        ``rules_digest``). One that has none records ``proposed`` in the transaction of its
        next batch; that batch raises :class:`~identityres.errors.ConfigurationError` if
        another handle recorded other rules meanwhile."""
        with self._lock:
            if self._pending_rules is not None:
                return self._pending_rules
            with self._reading("bind_rules") as conn:
                found = _read_rules(conn.execute(self._sql["read_rules"]).fetchall())
            if found is not None:
                return found
            self._pending_rules = proposed
            return proposed

    def vacuum(self, *, full: bool = False) -> None:
        """Run ``VACUUM`` (``full``: ``VACUUM FULL``) on the tables an erasure deletes from:
        the space of deleted row versions becomes reusable (``FULL``: the tables are
        rewritten, holding an exclusive lock meanwhile). Neither removes the values from the
        write-ahead log, archives, replicas or backups (docs/storage.md, "PostgreSQL")."""
        sql = self._sql_module
        statement = sql.SQL("VACUUM (FULL) {}" if full else "VACUUM {}").format(
            sql.SQL(", ").join(sql.Identifier(self.namespace, t) for t in _ERASED_TABLES)
        )

        def run(conn: psycopg.Connection[Any]) -> None:
            conn.execute(statement)  # (autocommit: VACUUM runs outside a transaction)

        self._retrying("vacuum", run)

    def find_value(self, value: str) -> dict[str, int]:
        """How many live rows of each table of the namespace hold ``value`` in a text or
        ``bytea`` column (as it is, or as JSON writes it inside a JSON value; in ``bytea``
        its UTF-8 bytes): tables without any are left out. For checking an erasure
        (``identityres forget --verify``). It reads what a query can see, in one consistent
        read: not the dead row versions that ``VACUUM`` has not yet reclaimed, nor the
        write-ahead log, archives, replicas or backups (docs/storage.md, "PostgreSQL"). A
        short value may also occur inside other data. Raises ``TypeError`` for a value that
        is not a ``str``."""
        if not isinstance(value, str):
            raise TypeError(f"value={value!r}: must be a str")
        if not value or _holds_nul(value):
            return {}  # (nothing to look for; PostgreSQL text holds no NUL)
        sql = self._sql_module
        texts = list(dict.fromkeys((value, json.dumps(value, ensure_ascii=False)[1:-1])))
        found: dict[str, int] = {}
        with self._reading("find_value") as conn:
            # (this one reads every row: the sessions' "no sequential scans" does not apply)
            conn.execute("SET LOCAL enable_seqscan = on")
            columns: dict[str, list[tuple[str, str]]] = {}
            for table, column, kind in conn.execute(
                "SELECT c.relname, a.attname, a.atttypid::regtype::text FROM pg_attribute AS a "
                "JOIN pg_class AS c ON c.oid = a.attrelid JOIN pg_namespace AS n "
                "ON n.oid = c.relnamespace WHERE n.nspname = %s AND c.relkind = 'r' "
                "AND a.attnum > 0 AND NOT a.attisdropped "
                "AND a.atttypid IN ('text'::regtype, 'bytea'::regtype) ORDER BY 1, a.attnum",
                (self.namespace,),
            ):
                columns.setdefault(table, []).append((column, kind))
            for table, cols in columns.items():
                tests = [
                    sql.SQL("strpos({}, {}) > 0").format(sql.Identifier(c), sql.Literal(t))
                    for c, kind in cols
                    if kind == "text"
                    for t in texts
                ] + [
                    sql.SQL("position({} in {}) > 0").format(
                        sql.Literal(value.encode("utf-8")), sql.Identifier(c)
                    )
                    for c, kind in cols
                    if kind == "bytea"
                ]
                statement = sql.SQL("SELECT count(*) FROM {} WHERE {}").format(
                    sql.Identifier(self.namespace, table), sql.SQL(" OR ").join(tests)
                )
                ((count,),) = conn.execute(statement).fetchall()
                if count:
                    found[table] = count
        return found

    def drop(self) -> None:
        """Drop the namespace and everything in it (``DROP SCHEMA ... CASCADE``), then close
        this store object. For tests and for deleting a tenant."""
        sql = self._sql_module
        statement = sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(self._ns_sql)
        self._retrying("drop", lambda conn: conn.execute(statement))
        self.close()

    # -- reading --------------------------------------------------------------------------

    @contextmanager
    def _reading(self, what: str) -> Iterator[psycopg.Connection[Any]]:
        """A connection in one ``REPEATABLE READ`` read-only transaction (a consistent view
        of committed batches); inside this thread's :meth:`snapshot`, the snapshot's."""
        snap = self._thread
        if snap.depth and snap.conn is not None:
            with self._read_errors(what):
                yield snap.conn
            return
        with self._read_transaction(what) as conn, self._read_errors(what):
            yield conn

    @contextmanager
    def _read_transaction(self, what: str) -> Iterator[psycopg.Connection[Any]]:
        """A pooled connection in a new ``REPEATABLE READ`` read-only transaction, committed
        when the block exits normally, rolled back when it raises, and given back to the pool
        either way (for ``_reading`` and ``snapshot``)."""
        conn = self._begin(what, _READ)
        try:
            yield conn
            with self._read_errors(what):
                conn.execute("COMMIT")
        except BaseException:
            with suppress(Exception):
                if not conn.closed:
                    conn.execute("ROLLBACK")
            raise
        finally:
            self._putconn(conn)

    @contextmanager
    def _read_errors(self, what: str) -> Iterator[None]:
        try:
            yield
        except self._psycopg.Error as exc:
            raise StorageError(f"{self!r}: {what} failed: {exc}") from exc

    @contextmanager
    def snapshot(self) -> Iterator[None]:
        """Every read this thread makes on this store object inside the block sees the one
        committed state of when the block began: one ``REPEATABLE READ`` transaction held on
        a pooled connection (other threads, handles and processes go on reading and
        writing). Re-entrant. Only reads belong inside: a batch opened there raises
        ``StorageError``."""
        snap = self._thread
        if snap.depth:
            snap.depth += 1
            try:
                yield
            finally:
                snap.depth -= 1
            return
        with self._read_transaction("snapshot") as conn:
            with self._read_errors("snapshot"):
                conn.execute("SELECT 1").fetchall()  # the snapshot is taken at the first query
            snap.conn, snap.depth = conn, 1
            try:
                yield
            finally:
                snap.conn, snap.depth = None, 0

    def read_components(self, identifiers: Collection[tuple[str, str]]) -> ComponentRows:
        """Node and log rows of the components holding ``identifiers`` (no lock)."""
        wanted = sorted({(k, v) for k, v in identifiers if not _holds_nul(k + v)})
        if not wanted:
            return ComponentRows((), ())
        with self._reading("read_components") as conn:
            roots = sorted(
                r
                for (r,) in conn.execute(
                    self._sql["roots"], ([k for k, _ in wanted], [v for _, v in wanted])
                )
            )
            if not roots:
                return ComponentRows((), ())
            nodes = tuple(map(_node, conn.execute(self._sql["component_nodes"], (roots,))))
            links = tuple(map(_decode_link, conn.execute(self._sql["component_links"], (roots,))))
        return ComponentRows(nodes, links)

    def node(self, kind: str, value: str) -> NodeRow | None:
        if _holds_nul(kind) or _holds_nul(value):
            return None  # (PostgreSQL text holds no NUL: no such identifier is stored)
        with self._reading("node") as conn:
            row = conn.execute(self._sql["node"], (kind, value)).fetchone()
        return None if row is None else _node(row)

    def _nodes_by_ref(
        self, conn: psycopg.Connection[Any], refs: Sequence[int]
    ) -> dict[int, NodeRow]:
        rows = conn.execute(self._sql["nodes_by_ref"], (list(refs),)).fetchall()
        return {n.ref: n for n in map(_node, rows)}

    def nodes_by_ref(self, refs: Collection[int]) -> Mapping[int, NodeRow]:
        wanted = sorted({r for r in refs if r >= 0})
        if not wanted:
            return {}
        with self._reading("nodes_by_ref") as conn:
            return self._nodes_by_ref(conn, wanted)

    def profile_rows(self, profile: int) -> ProfileRows:
        with self._reading("profile_rows") as conn:
            found = conn.execute(self._sql["group_of_ref"], (profile,)).fetchone()
            return self._profile_rows(conn, found)

    def profile_of(self, kind: str, value: str) -> ProfileRows | None:
        if _holds_nul(kind) or _holds_nul(value):
            return None
        with self._reading("profile_of") as conn:
            found = conn.execute(self._sql["group_of"], (kind, value)).fetchone()
            if found is None:
                return None
            return self._profile_rows(conn, found)

    def _profile_rows(self, conn: psycopg.Connection[Any], found: Any) -> ProfileRows:
        if found is None:
            return ProfileRows((), (), ())
        key = (found[0], found[1])
        nodes = tuple(map(_node, conn.execute(self._sql["profile_nodes"], key)))
        traits = conn.execute(self._sql["profile_traits"], key).fetchall()
        links = conn.execute(self._sql["profile_company_links"], key).fetchall()
        return profile_rows(nodes, traits, links)

    def iter_profiles(self) -> Iterator[ProfileRows]:
        """Every profile, a few thousand identifiers at a time (whole link components, in
        component ref order), each page in one read transaction (or the snapshot's)."""
        last = -1
        while True:
            with self._reading("iter_profiles") as conn:
                rows = conn.execute(self._sql["page_nodes"], (last, _PAGE)).fetchall()
                if not rows:
                    return
                rows, top = whole_components(
                    rows, _PAGE, lambda c: conn.execute(self._sql["page_rest"], (c,)).fetchall()
                )
                traits = conn.execute(self._sql["page_traits"], (last, top)).fetchall()
                links = conn.execute(self._sql["page_company_links"], (last, top)).fetchall()
            yield from profile_page(map(_node, rows), traits, links)
            last = top

    def iter_refused_links(self) -> Iterator[LinkRow]:
        after = ""
        while True:
            with self._reading("iter_refused_links") as conn:
                rows = conn.execute(self._sql["refused_page"], (after, _PAGE)).fetchall()
            if not rows:
                return
            yield from map(_decode_link, rows)
            after = rows[-1][0]

    def company_ids(self) -> list[str]:
        with self._reading("company_ids") as conn:
            rows = conn.execute(self._sql["company_ids"]).fetchall()
        return sorted(cid for (cid,) in rows)

    def company_rows(self, company_id: str) -> CompanyRows | None:
        if _holds_nul(company_id):
            return None
        with self._reading("company_rows") as conn:
            if conn.execute(self._sql["company_known"], (company_id,)).fetchone() is None:
                return None
            members = [n for (n,) in conn.execute(self._sql["company_members"], (company_id,))]
            traits = conn.execute(self._sql["company_traits"], (company_id,)).fetchall()
        return company_from_rows(members, traits)

    def counts(self) -> Counts:
        with self._reading("counts") as conn:
            counters = dict(conn.execute(self._sql["counters"]).fetchall())
            blocked = {(k, v): n for k, v, n in conn.execute(self._sql["blocked"])}
        missing = [name for name in _COUNTS if not isinstance(counters.get(name), int)]
        if missing:
            raise StorageError(
                f"{self!r}: the database is damaged: counters rows name={missing!r} are missing"
            )
        return Counts(
            events=counters["events"],
            identifiers=counters["identifiers"],
            profiles=counters["profiles"],
            identified_profiles=counters["identified_profiles"],
            blocked=blocked,
        )

    def close(self) -> None:
        """Close the pool and its connections (an open batch is rolled back); idempotent."""
        with self._lock:
            pool, self._pool = self._pool, None
            self._closed = True
            _LIVE.discard(self)
        if pool is not None:
            try:
                pool.close(timeout=5)
            except Exception as exc:
                raise StorageError(f"{self!r}: close failed: {exc}") from exc

    def _after_fork_in_child(self) -> None:
        """The child keeps the parent's pool, unused (closing its connections would end the
        parent's sessions), and opens its own on first use."""
        release_orphaned(self._lock)
        if self._pool is not None:
            _INHERITED.append(self._pool)
        self._pool = None
        self._thread = _PerThread()
        self._refs = []  # (the parent uses its own: the child takes refs of its own)


def _read_rules(rows: Iterable[Sequence[Any]]) -> RulesRecord | None:
    found = {name: bytes(value).decode("utf-8", "replace") for name, value in rows}
    if "rules_digest" not in found:
        return None
    return RulesRecord(found["rules_digest"], found.get("rules", ""))


#: every open ``PostgresStore`` of this process (for the at-fork hook)
_LIVE: weakref.WeakSet[PostgresStore] = weakref.WeakSet()
#: pools a forked child inherited: kept, never used nor closed (see "Fork" in the module docs)
_INHERITED: list[Any] = []


def _after_fork_in_child() -> None:
    for store in list(_LIVE):
        store._after_fork_in_child()


if hasattr(os, "register_at_fork"):  # (not on Windows, which does not fork)
    os.register_at_fork(after_in_child=_after_fork_in_child)
