"""The SQLite store (``sqlite:///path.db``): the identity graph in one database file.

``SQLiteStore`` implements the storage protocol (``storage/_protocol.py``) with the standard
library's :mod:`sqlite3` and nothing else. What lives here: the schema and its version check,
the batch (one ``BEGIN IMMEDIATE`` transaction), the reads, and the translation of driver
errors into :class:`~identityres.errors.StorageError`. What does not: any decision — the
engine decides; this module only keeps rows.

Schema (version 1)::

    schema_version(version)             one row: the layout of this file
    meta(name, value)                   the erasure key, the rules; erasure_pending while
                                        an erasure's bytes may remain in the files
    counters(name, value)               events, identifiers, profiles, identified_profiles,
                                        next_ref (refs are never reused)
    kinds(id, name)                     identifier kind names, numbered
    nodes(ref INTEGER PRIMARY KEY, kind, value, first_ts, first_event_id, last_ts,
          reset_ts, reset_event_id, component, profile, split_ts, split_event_id)
                                        unique (kind, value); by component; by profile
    links(event_id PRIMARY KEY, ts, component, members, refused, etype, erased_kind)
                                        members: refs, comma separated, anchor first;
                                        refused: JSON or NULL; by component; refused ones
    traits(node, once, key, ts, event_id, value)            value: JSON
    company_links(node, company_id, ts, event_id)           by company_id
    company_traits(company_id, key, ts, event_id, value)    value: JSON
    companies(company_id)               every company ever linked or described
    events(event_id PRIMARY KEY, fingerprint BLOB)
    blocked(kind, value, count)
    suppressed(hash BLOB PRIMARY KEY)   keyed hashes of erased identifiers

A node's ref is its ``INTEGER PRIMARY KEY``. Every value reaches SQL as a bound parameter.

Erasure: a batch that erases something writes ``erasure_pending`` in its own transaction;
after the commit the file is rebuilt (``VACUUM``: stale copies of cells stay in the unused
space of rebalanced pages, even with ``secure_delete``) and the WAL checkpointed and cut to
nothing, and only then is the row deleted. A busy reader makes that fail
(``ErasureIncompleteError``); ``scrub()`` or the next open finishes it, as after a crash. A new
database file is created readable by its owner only (it holds the erasure key); a damaged row
is reported as a ``StorageError`` naming its table and key (docs/storage.md).

Concurrency: the database is in WAL mode. A batch is one transaction begun with ``BEGIN
IMMEDIATE``, which takes the database's write lock, so batches from any number of threads and
processes are serialized (the protocol's "serializable" promise) while readers go on reading
the last committed state. A database kept busy by another writer for longer than ``timeout``
is retried ``retries`` times with a growing pause, then reported as a ``StorageError``. Two
connections per store object, each used under its own lock: batches write through one, reads
go through the other (one read transaction per read call, or one for a whole ``snapshot()``).

Fork: SQLite connections must not cross a fork (https://www.sqlite.org/howtocorrupt.html).
Neither may they be kept open, unused, in the child: SQLite keeps the file's locks per
process, so the child's own connections would then take no lock the other processes can see,
and a process closing its last connection would checkpoint and delete the WAL under them
(their commits lost). So a child closes, in an ``os.register_at_fork`` hook that runs before
anything else in it, every connection it inherited that no thread was using — closing an idle
connection changes nothing on disk while any other process has the file open — and opens its
own on first use. A connection another thread was using at the fork (inside a batch or a read)
cannot be closed (that would roll back the parent's transaction in the shared WAL index): it is
kept, never used, and the file refuses to be opened again in that child, with a
``StorageError`` saying so. A ``:memory:`` store stays with the process that made it.
"""

from __future__ import annotations

import json
import math
import os
import random
import secrets
import sqlite3
import tempfile
import threading
import time
import weakref
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from typing import Any, TypeVar

from identityres._fork import release_orphaned
from identityres._kept import KeptEvent
from identityres._merge import winners
from identityres._model import Identifier
from identityres._rows import (
    Changes,
    CompanyLinkRow,
    CompanyRows,
    CompanyTraitRow,
    ComponentRows,
    Counts,
    LinkRow,
    NodeRow,
    ProfileRows,
    RefusedMember,
    TraitRow,
)
from identityres._rules import RulesRecord
from identityres.errors import ConfigurationError, ErasureIncompleteError, StorageError
from identityres.storage._sql import NODE_NAMES as _NODE_NAMES
from identityres.storage._sql import (
    company_from_rows,
    decode_link,
    profile_page,
    profile_rows,
    resolver,
    sort_nodes,
    whole_components,
)
from identityres.storage._sql import decode_json as _decode_json
from identityres.storage._sql import encode_json as _encode_json

__all__ = ["SCHEMA_VERSION", "SQLiteStore"]

#: The layout this module writes. A file with a greater version is refused; one with a
#: smaller version is migrated by ``_MIGRATIONS`` (none exist: version 1 is the first).
SCHEMA_VERSION = 1

_T = TypeVar("_T")

_SCHEMA = (
    "CREATE TABLE schema_version (version INTEGER NOT NULL)",
    "CREATE TABLE meta (name TEXT PRIMARY KEY, value BLOB NOT NULL) WITHOUT ROWID",
    "CREATE TABLE counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID",
    "CREATE TABLE kinds (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE)",
    """CREATE TABLE nodes (
        ref INTEGER PRIMARY KEY,
        kind INTEGER NOT NULL,
        value TEXT NOT NULL,
        first_ts REAL NOT NULL,
        first_event_id TEXT NOT NULL,
        last_ts REAL NOT NULL,
        reset_ts REAL,
        reset_event_id TEXT,
        component INTEGER NOT NULL,
        profile INTEGER NOT NULL,
        split_ts REAL,
        split_event_id TEXT
    )""",
    "CREATE UNIQUE INDEX nodes_by_value ON nodes (kind, value)",
    # profiles lie inside components: one index serves load (by component) and profile reads
    "CREATE INDEX nodes_by_component ON nodes (component, profile)",
    """CREATE TABLE links (
        event_id TEXT PRIMARY KEY,
        ts REAL NOT NULL,
        component INTEGER NOT NULL,
        members TEXT NOT NULL,
        refused TEXT,
        etype TEXT NOT NULL,
        erased_kind TEXT
    ) WITHOUT ROWID""",
    "CREATE INDEX links_by_component ON links (component)",
    "CREATE INDEX links_refused ON links (event_id) WHERE refused IS NOT NULL",
    """CREATE TABLE traits (
        node INTEGER NOT NULL,
        once INTEGER NOT NULL,
        key TEXT NOT NULL,
        ts REAL NOT NULL,
        event_id TEXT NOT NULL,
        value TEXT NOT NULL,
        PRIMARY KEY (node, once, key)
    ) WITHOUT ROWID""",
    """CREATE TABLE company_links (
        node INTEGER NOT NULL,
        company_id TEXT NOT NULL,
        ts REAL NOT NULL,
        event_id TEXT NOT NULL,
        PRIMARY KEY (node, company_id)
    ) WITHOUT ROWID""",
    "CREATE INDEX company_links_by_company ON company_links (company_id)",
    """CREATE TABLE company_traits (
        company_id TEXT NOT NULL,
        key TEXT NOT NULL,
        ts REAL NOT NULL,
        event_id TEXT NOT NULL,
        value TEXT NOT NULL,
        PRIMARY KEY (company_id, key)
    ) WITHOUT ROWID""",
    "CREATE TABLE companies (company_id TEXT PRIMARY KEY) WITHOUT ROWID",
    "CREATE TABLE events (event_id TEXT PRIMARY KEY, fingerprint BLOB NOT NULL) WITHOUT ROWID",
    """CREATE TABLE blocked (
        kind TEXT NOT NULL,
        value TEXT NOT NULL,
        count INTEGER NOT NULL,
        PRIMARY KEY (kind, value)
    ) WITHOUT ROWID""",
    "CREATE TABLE suppressed (hash BLOB PRIMARY KEY) WITHOUT ROWID",
)
# Kept events (``keep_events``, docs/analytics.md): created by the first ``keep_events``, so a
# file that keeps none has the layout of SCHEMA_VERSION 1 exactly.
_KEPT_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS kept_events (
        event_id TEXT PRIMARY KEY,
        ts REAL NOT NULL,
        type TEXT NOT NULL,
        name TEXT NOT NULL,
        identifiers TEXT NOT NULL,
        properties TEXT,
        context TEXT
    ) WITHOUT ROWID""",
    "CREATE INDEX IF NOT EXISTS kept_events_by_key ON kept_events (ts, event_id)",
    """CREATE TABLE IF NOT EXISTS kept_event_ids (
        kind TEXT NOT NULL,
        value TEXT NOT NULL,
        event_id TEXT NOT NULL,
        PRIMARY KEY (kind, value, event_id)
    ) WITHOUT ROWID""",
)
_COUNTS = ("events", "identifiers", "profiles", "identified_profiles")
_COUNTERS = (*_COUNTS, "next_ref")

#: version -> the statements that bring a file from that version to the next one
_MIGRATIONS: dict[int, tuple[str, ...]] = {}

# Per-connection scratch tables for the look-ups of a batch (TEMP: never in the file).
_TEMP_SCHEMA = (
    "CREATE TEMP TABLE IF NOT EXISTS wanted (kind INTEGER NOT NULL, value TEXT NOT NULL)",
    "CREATE TEMP TABLE IF NOT EXISTS wanted_components (ref INTEGER PRIMARY KEY)",
)

_NODE_COLUMNS = ", ".join(_NODE_NAMES)
_N_NODE_COLUMNS = ", ".join(f"n.{c}" for c in _NODE_NAMES)
_LINK_NAMES = ("event_id", "ts", "component", "members", "refused", "etype", "erased_kind")
_LINK_COLUMNS = ", ".join(_LINK_NAMES)
_L_LINK_COLUMNS = ", ".join(f"l.{c}" for c in _LINK_NAMES)

_INSERT_NODE = f"INSERT INTO nodes ({_NODE_COLUMNS}) VALUES ({', '.join('?' * 12)})"
# Most changed nodes only saw another event: leave their indexed columns alone.
_UPDATE_NODE_TIMES = (
    "UPDATE nodes SET first_ts = ?, first_event_id = ?, last_ts = ?, reset_ts = ?, "
    "reset_event_id = ?, split_ts = ?, split_event_id = ? WHERE ref = ?"
)
_UPDATE_NODE = (
    "UPDATE nodes SET first_ts = ?, first_event_id = ?, last_ts = ?, reset_ts = ?, "
    "reset_event_id = ?, split_ts = ?, split_event_id = ?, component = ?, profile = ? "
    "WHERE ref = ?"
)
_UPSERT_LINK = (
    f"INSERT INTO links ({_LINK_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?) "
    "ON CONFLICT (event_id) DO UPDATE SET "
    + ", ".join(f"{c} = excluded.{c}" for c in _LINK_NAMES[1:])
)
# A write replaces the stored one when its (ts, event_id) is greater (``once``: smaller).
_UPSERT_TRAIT = (
    "INSERT INTO traits (node, once, key, ts, event_id, value) VALUES (?, 0, ?, ?, ?, ?) "
    "ON CONFLICT (node, once, key) DO UPDATE SET ts = excluded.ts, "
    "event_id = excluded.event_id, value = excluded.value WHERE excluded.ts > traits.ts "
    "OR (excluded.ts = traits.ts AND excluded.event_id > traits.event_id)"
)
_UPSERT_TRAIT_ONCE = (
    "INSERT INTO traits (node, once, key, ts, event_id, value) VALUES (?, 1, ?, ?, ?, ?) "
    "ON CONFLICT (node, once, key) DO UPDATE SET ts = excluded.ts, "
    "event_id = excluded.event_id, value = excluded.value WHERE excluded.ts < traits.ts "
    "OR (excluded.ts = traits.ts AND excluded.event_id < traits.event_id)"
)
_UPSERT_COMPANY_LINK = (
    "INSERT INTO company_links (node, company_id, ts, event_id) VALUES (?, ?, ?, ?) "
    "ON CONFLICT (node, company_id) DO UPDATE SET ts = excluded.ts, "
    "event_id = excluded.event_id WHERE excluded.ts > company_links.ts "
    "OR (excluded.ts = company_links.ts AND excluded.event_id > company_links.event_id)"
)
_UPSERT_COMPANY_TRAIT = (
    "INSERT INTO company_traits (company_id, key, ts, event_id, value) VALUES (?, ?, ?, ?, ?) "
    "ON CONFLICT (company_id, key) DO UPDATE SET ts = excluded.ts, "
    "event_id = excluded.event_id, value = excluded.value WHERE excluded.ts > company_traits.ts "
    "OR (excluded.ts = company_traits.ts AND excluded.event_id > company_traits.event_id)"
)
_UPSERT_BLOCKED = (
    "INSERT INTO blocked (kind, value, count) VALUES (?, ?, ?) "
    "ON CONFLICT (kind, value) DO UPDATE SET count = blocked.count + excluded.count"
)

#: the ``meta`` row that an erasure writes in its own transaction and that is deleted once
#: no byte of the erased values can remain in the files (see ``SQLiteStore.scrub``)
_ERASURE_PENDING = "erasure_pending"
#: identifiers (or refused links) per page when streaming profiles (or refusals)
_PAGE = 2000
#: SQLite's primary result codes for "another connection holds the lock"
_SQLITE_BUSY = 5
_SQLITE_LOCKED = 6


def _busy(exc: sqlite3.Error) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)  # Python >= 3.11
    if code is not None:
        return (code & 0xFF) in (_SQLITE_BUSY, _SQLITE_LOCKED)
    text = str(exc).lower()
    return "locked" in text or "busy" in text


def _chunks(items: Sequence[_T], size: int) -> Iterator[Sequence[_T]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def _placeholders(n: int) -> str:
    return ", ".join("?" * n)


def _encode_refused(refused: tuple[RefusedMember, ...]) -> str | None:
    return json.dumps([list(r) for r in refused]) if refused else None


def _members(text: Any) -> tuple[int, ...]:
    """Link members as stored here: refs joined by commas."""
    return tuple(map(int, text.split(","))) if text else ()


def _decode_link(row: tuple[Any, ...]) -> LinkRow:
    return decode_link(row, _members)


def _find_in_file(path: str, needle: bytes, *, chunk: int = 1 << 20) -> list[int]:
    """The offsets of every occurrence of ``needle`` in the file at ``path`` (read in chunks
    that overlap by ``len(needle) - 1`` bytes, so an occurrence across two is found)."""
    if not needle:
        return []
    found: list[int] = []
    keep = len(needle) - 1
    with open(path, "rb") as f:
        base = 0  # the file offset of ``data[0]``
        data = b""
        while True:
            block = f.read(max(chunk, 1))
            if not block:
                break
            data += block
            at = data.find(needle)
            while at >= 0:
                found.append(base + at)
                at = data.find(needle, at + 1)
            cut = max(len(data) - keep, 0)
            base += cut
            data = data[cut:]
    return found


def _create_owner_only(path: str) -> None:
    """Create the database file, empty, readable and writable by its owner only (it holds the
    erasure key); SQLite gives its ``-wal`` and ``-shm`` files the database file's mode. A
    file that exists already keeps the mode its owner gave it."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError:
        return  # it exists (someone else's mode stays), or SQLite will say why it cannot open it
    try:
        fchmod = getattr(os, "fchmod", None)  # POSIX; the umask could have taken more away
        if fchmod is not None:
            fchmod(fd, 0o600)
    finally:
        os.close(fd)


class _SQLiteBatch:
    """One ``BEGIN IMMEDIATE`` transaction (see :meth:`SQLiteStore.batch`)."""

    __slots__ = ("_conn", "_saved", "_store", "erased")

    def __init__(self, store: SQLiteStore, conn: sqlite3.Connection) -> None:
        self._store = store
        self._conn = conn
        self._saved = False
        #: the batch erased something (see ``SQLiteStore.batch``)
        self.erased = False

    def seen(self, event_ids: Collection[str]) -> Mapping[str, bytes]:
        with self._store._errors("seen"):
            return dict(
                self._store._in_list(
                    self._conn, "events", "event_id", "fingerprint", list(dict.fromkeys(event_ids))
                )
            )

    def suppressed(self, hashes: Collection[bytes]) -> set[bytes]:
        """Those of ``hashes`` (keyed hashes of identifiers) that were erased (one call)."""
        with self._store._errors("suppressed"):
            if self._conn.execute("SELECT 1 FROM suppressed LIMIT 1").fetchone() is None:
                return set()  # nothing was ever erased: the common case
            found = self._store._in_list(self._conn, "suppressed", "hash", "hash", list(hashes))
        return {h for h, _ in found}

    def load(self, identifiers: Collection[tuple[str, str]]) -> ComponentRows:
        with self._store._errors("load"):
            return self._store._components(self._conn, identifiers)

    def save(self, changes: Changes) -> None:
        self.erased = bool(changes.deleted or changes.suppressed or changes.unblocked)
        if self._saved:
            raise RuntimeError("save() called twice in one batch")
        self._saved = True
        with self._store._errors("save"):
            self._save(changes)
            if self.erased:
                # In the erasure's own transaction: until the file is rewritten and the WAL
                # emptied, this row says so, and a crash leaves the job to the next open.
                # A fresh token per erasure: finishing an older one leaves this one pending.
                self._conn.execute(
                    "INSERT OR REPLACE INTO meta (name, value) VALUES (?, ?)",
                    (_ERASURE_PENDING, secrets.token_bytes(8)),
                )

    def _save(self, changes: Changes) -> None:
        conn = self._conn
        store = self._store
        # New nodes (negative refs) get fresh refs; the write lock is held, so no other writer
        # takes them meanwhile. Refs are never reused: stale rows can never name a new node.
        (first,) = conn.execute("SELECT value FROM counters WHERE name = 'next_ref'").fetchone()
        new_refs = sorted({row.ref for row in changes.nodes if row.ref < 0}, reverse=True)
        ref = resolver({r: first + i for i, r in enumerate(new_refs)})
        kind_id = store._kind_id
        new, moved, seen = sort_nodes(changes.nodes, changes.regrouped, ref)
        inserts = [
            (r, kind_id(conn, row.kind), row.value, *keys[:5], component, profile, *keys[5:])
            for row, r, keys, component, profile in new
        ]
        updates = [(*keys, component, profile, r) for _, r, keys, component, profile in moved]
        # (only first/last seen, resets or splits: the indexed columns are left alone)
        times = [(*keys, r) for _, r, keys, _, _ in seen]
        deleted = sorted(set(changes.deleted))
        if deleted:
            gone = [(r,) for r in deleted]
            conn.executemany("DELETE FROM nodes WHERE ref = ?", gone)
            conn.executemany("DELETE FROM traits WHERE node = ?", gone)
            conn.executemany("DELETE FROM company_links WHERE node = ?", gone)
        if inserts:
            conn.executemany(_INSERT_NODE, inserts)
        for statement, rows in ((_UPDATE_NODE_TIMES, times), (_UPDATE_NODE, updates)):
            if rows and conn.executemany(statement, rows).rowcount != len(rows):
                # A ref the store never gave out, or one erased since: a caller's bug.
                wanted = [row[-1] for row in rows]
                held = set(store._nodes_by_ref(conn, wanted))
                missing = sorted(set(wanted) - held)
                raise StorageError(f"save: ref {missing[0]} names no stored node ({missing})")
        if changes.deleted_links:
            conn.executemany(
                "DELETE FROM links WHERE event_id = ?", [(e,) for e in changes.deleted_links]
            )
        if changes.links:
            conn.executemany(
                _UPSERT_LINK,
                [
                    (
                        link.event_id,
                        link.ts,
                        ref(link.component),
                        ",".join(str(ref(m)) for m in link.members),
                        _encode_refused(link.refused),
                        link.etype,
                        link.erased_kind,
                    )
                    for link in changes.links
                ],
            )
        if changes.traits:
            self._save_traits(changes.traits, ref)
        if changes.companies or changes.company_links or changes.company_traits:
            self._save_companies(
                changes.companies, changes.company_links, changes.company_traits, ref
            )
        if changes.events:
            conn.executemany(
                "INSERT INTO events (event_id, fingerprint) VALUES (?, ?)", changes.events
            )
        if changes.unblocked:
            conn.executemany("DELETE FROM blocked WHERE kind = ? AND value = ?", changes.unblocked)
        if changes.blocked:
            conn.executemany(_UPSERT_BLOCKED, changes.blocked)
        if changes.suppressed:
            conn.executemany(
                "INSERT OR IGNORE INTO suppressed (hash) VALUES (?)",
                [(h,) for h in changes.suppressed],
            )
        counts = changes.counts
        deltas = {
            "events": counts.events,
            "identifiers": counts.identifiers,
            "profiles": counts.profiles,
            "identified_profiles": counts.identified_profiles,
            "next_ref": len(new_refs),
        }
        conn.executemany(
            "UPDATE counters SET value = value + ? WHERE name = ?",
            [(d, name) for name, d in deltas.items() if d],
        )

    def _save_traits(self, traits: Iterable[TraitRow], ref: Callable[[int], int]) -> None:
        # Merge within the batch first: one row per (node, once, key) reaches SQL.
        best = winners(traits, lambda t: (ref(t.node), t.once, t.key), lambda t: t.once)
        latest: list[tuple[Any, ...]] = []
        earliest: list[tuple[Any, ...]] = []
        for (node, once, key), t in best.items():
            row = (node, key, t.ts, t.event_id, _encode_json(f"trait {key!r}", t.value))
            (earliest if once else latest).append(row)
        if latest:
            self._conn.executemany(_UPSERT_TRAIT, latest)
        if earliest:
            self._conn.executemany(_UPSERT_TRAIT_ONCE, earliest)

    def _save_companies(
        self,
        named: Iterable[str],
        links: Iterable[CompanyLinkRow],
        traits: Iterable[CompanyTraitRow],
        ref: Callable[[int], int],
    ) -> None:
        conn = self._conn
        best_links = winners(links, lambda c: (ref(c.node), c.company_id))
        best_traits = winners(traits, lambda ct: (ct.company_id, ct.key))
        companies = dict.fromkeys(
            [*named, *(cid for _, cid in best_links), *(cid for cid, _ in best_traits)]
        )
        conn.executemany(
            "INSERT OR IGNORE INTO companies (company_id) VALUES (?)", [(c,) for c in companies]
        )
        if best_links:
            conn.executemany(
                _UPSERT_COMPANY_LINK,
                [(n, cid, c.ts, c.event_id) for (n, cid), c in best_links.items()],
            )
        if best_traits:
            conn.executemany(
                _UPSERT_COMPANY_TRAIT,
                [
                    (
                        ct.company_id,
                        ct.key,
                        ct.ts,
                        ct.event_id,
                        _encode_json(f"company {ct.company_id!r} trait {ct.key!r}", ct.value),
                    )
                    for ct in best_traits.values()
                ],
            )


class SQLiteStore:
    """Keeps the graph in an SQLite database file (``sqlite:///path.db``), or in memory
    (``":memory:"``: not durable, this store object only).

    ``timeout``: seconds a statement waits for another connection's lock before SQLite gives
    up; ``retries``: how many more times starting a batch (or a read) is tried, after a
    growing pause, before :class:`~identityres.errors.StorageError` is raised. The longest
    wait is about ``timeout * (retries + 1)`` plus the pauses.

    Opening raises :class:`~identityres.errors.ConfigurationError` for a file that is not an
    identityres store or was written with another schema version (see ``SCHEMA_VERSION``),
    and :class:`~identityres.errors.StorageError` when the file cannot be opened at all.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        timeout: float = 30.0,
        retries: int = 3,
        create: bool = True,
    ) -> None:
        if (
            isinstance(timeout, bool)
            or not isinstance(timeout, (int, float))
            or not math.isfinite(timeout)
            or timeout < 0
        ):
            raise ConfigurationError(f"timeout={timeout!r}: must be a number of seconds >= 0")
        if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
            raise ConfigurationError(f"retries={retries!r}: must be an int >= 0")
        self.path = os.fspath(path)
        if not isinstance(self.path, str):
            raise ConfigurationError(f"path={path!r}: must be a str or an os.PathLike of str")
        try:
            # a lone surrogate is no file name: refuse it here, not deep in os.open
            os.fsencode(self.path)
        except UnicodeEncodeError as exc:
            raise ConfigurationError(
                f"path={self.path!a}: not valid text (a lone surrogate at {exc.start})"
            ) from None
        self.timeout = float(timeout)
        self.retries = retries
        # Two connections: batches write through one, under ``_write_lock`` (held for the
        # whole batch); reads go through the other, so that they see committed batches only,
        # even while this store has a batch open.
        self._write_lock = threading.RLock()
        self._read_lock = threading.RLock()
        # ``None``: not open (yet): a forked child opens its own on first use (see "Fork" in
        # the module docs), unless ``_unusable`` says why it may not.
        self._writer: sqlite3.Connection | None = None
        self._reader: sqlite3.Connection | None = None
        self._unusable: str | None = None
        #: depth of the snapshot open on the reader connection, by the holder of ``_read_lock``
        self._snapshots = 0
        self._kind_ids: dict[str, int] = {}
        self._kind_names: dict[int, str] = {}
        # kinds added by the open batch: forgotten if it rolls back
        self._new_kinds: list[str] = []
        self._max_variables = 999
        self._erasure_key = b""
        #: rules to record with the next batch (``bind_rules`` on a file that has none)
        self._pending_rules: RulesRecord | None = None
        self._temporary: Callable[[], Any] | None = None
        if self.path == ":memory:":
            # A private database that lives as long as the store. It is kept in a temporary
            # file rather than in memory so that the reader connection can see it.
            fd, temporary = tempfile.mkstemp(prefix="identityres-", suffix=".db")
            os.close(fd)
            self._temporary = weakref.finalize(self, _remove_database, temporary)
            self._file = temporary
        elif not create and not os.path.exists(self.path):
            # Opening creates the file: a reader with a mistyped path would see an empty store.
            raise ConfigurationError(f"path={self.path!r}: does not exist")
        else:
            self._file = self.path
            _create_owner_only(self._file)  # before SQLite creates it with the umask's mode
        try:
            self._writer = self._connect(setup=True)
            self._reader = self._connect(setup=False)
        except BaseException:
            self.close()
            raise
        _LIVE.add(self)

    @classmethod
    def from_url(cls, url: str, **options: Any) -> SQLiteStore:
        """``sqlite:///relative/path.db``, ``sqlite:////absolute/path.db`` or
        ``sqlite:///:memory:``; options ``?timeout=SECONDS&retries=N`` in the URL, or as
        keyword arguments (``timeout``, ``retries``, ``create``), which win over the URL's.
        ``create=False`` refuses a database file that does not exist yet."""
        unknown = sorted(set(options) - {"timeout", "retries", "create"})
        if unknown:
            raise ConfigurationError(
                f"store={url!r}: unknown options {unknown!r}; the options are timeout, "
                "retries and create"
            )
        if not isinstance(url, str):
            raise ConfigurationError(f"store={url!r}: not a store URL")
        scheme, sep, rest = url.partition("://")
        if scheme.lower() != "sqlite" or not sep:
            raise ConfigurationError(f"store={url!r}: an SQLite store URL starts with 'sqlite://'")
        if not rest.startswith("/"):
            raise ConfigurationError(
                f"store={url!r}: an SQLite URL names no host: write 'sqlite:///relative.db' "
                "or 'sqlite:////absolute/path.db'"
            )
        path, _, query = rest[1:].partition("?")
        if not path:
            raise ConfigurationError(
                f"store={url!r}: no database path; e.g. 'sqlite:///ids.db' or 'sqlite:///:memory:'"
            )
        if "#" in path or "\x00" in path:
            raise ConfigurationError(f"store={url!r}: the database path may not hold '#' or NUL")
        given = options
        options = {}
        for part in query.split("&") if query else ():
            name, eq, raw = part.partition("=")
            try:
                if not eq:
                    raise ValueError("expected name=value")
                if name == "timeout":
                    options["timeout"] = float(raw)
                elif name == "retries":
                    options["retries"] = int(raw)
                else:
                    raise ValueError("the options are timeout and retries")
            except ValueError as exc:
                raise ConfigurationError(f"store={url!r}: bad option {part!r}: {exc}") from None
        options.update(given)
        try:
            return cls(path, **options)
        except ConfigurationError as exc:
            raise ConfigurationError(f"store={url!r}: {exc}") from None

    def __repr__(self) -> str:
        return f"SQLiteStore({self.path!r})"

    # -- connection, schema, errors --------------------------------------------------------

    @contextmanager
    def _errors(self, what: str) -> Iterator[None]:
        try:
            yield
        except sqlite3.Error as exc:
            raise StorageError(f"{self!r}: {what} failed: {exc}") from exc

    def _retrying(self, what: str, action: Callable[[], _T]) -> _T:
        """Run ``action``; while the database is busy, pause and retry, ``retries`` times."""
        attempt = 0
        while True:
            try:
                return action()
            except sqlite3.OperationalError as exc:
                if not _busy(exc):
                    raise StorageError(f"{self!r}: {what} failed: {exc}") from exc
                if attempt >= self.retries:
                    raise StorageError(
                        f"{self!r}: {what}: the database stayed locked by another connection "
                        f"({attempt + 1} tries, timeout={self.timeout:g} s each): {exc}"
                    ) from exc
            except sqlite3.Error as exc:
                raise StorageError(f"{self!r}: {what} failed: {exc}") from exc
            time.sleep(min(0.01 * 2**attempt, 1.0) * (0.5 + random.random()))
            attempt += 1

    def _connect(self, *, setup: bool) -> sqlite3.Connection:
        if _POISONED and _file_key(self._file) in _POISONED:
            raise StorageError(_poisoned(self))
        try:
            conn = sqlite3.connect(
                self._file, timeout=self.timeout, isolation_level=None, check_same_thread=False
            )
        except sqlite3.Error as exc:
            raise StorageError(f"{self!r}: cannot open the database: {exc}") from exc
        try:
            self._retrying("open", lambda: self._setup(conn, schema=setup))
        except BaseException:
            conn.close()
            raise
        return conn

    def _connection(self, *, writer: bool) -> sqlite3.Connection:
        """The writer (or the reader) connection; opened here in a forked child, whose
        inherited ones are not its own. The caller holds the connection's lock."""
        conn = self._writer if writer else self._reader
        if conn is None:
            if self._unusable is not None:
                raise StorageError(self._unusable)
            conn = self._connect(setup=writer)
            if writer:
                self._writer = conn
            else:
                self._reader = conn
        return conn

    def _setup(self, conn: sqlite3.Connection, *, schema: bool) -> None:
        if schema:
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise StorageError(f"{self!r}: cannot put the database in WAL mode ({mode})")
        # FULL: a committed batch survives a power cut too, for one fsync per batch.
        durable = self._temporary is None
        conn.execute(f"PRAGMA synchronous = {'FULL' if durable else 'OFF'}")
        conn.execute(f"PRAGMA cache_size = {-65536 if schema else -16384}")  # KiB
        # Checkpoint the WAL into the file every ~64 MiB rather than every 4 MiB: a page
        # that many batches change is copied once, and commits stay short.
        conn.execute("PRAGMA wal_autocheckpoint = 16384")
        conn.execute("PRAGMA temp_store = MEMORY")
        # Erasure (forget) must leave no copy of a value in the file: deleted content is
        # overwritten with zeros, and the WAL is checkpointed and truncated after the batch.
        conn.execute("PRAGMA secure_delete = ON")
        getlimit = getattr(conn, "getlimit", None)  # Python >= 3.11
        limit = getattr(sqlite3, "SQLITE_LIMIT_VARIABLE_NUMBER", None)
        if getlimit is not None and limit is not None:
            self._max_variables = min(getlimit(limit), 10000)
        elif sqlite3.sqlite_version_info >= (3, 32, 0):
            self._max_variables = 10000
        if schema:
            # Read the version without the write lock (another process may be writing); take
            # the lock only to create the tables or to migrate them.
            conn.execute("BEGIN")
            try:
                ready = self._check_schema(conn, change=False)
            finally:
                conn.execute("COMMIT")
            if not ready:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    self._check_schema(conn, change=True)
                    conn.execute("COMMIT")
                except BaseException:
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                    raise
            found = conn.execute("SELECT value FROM meta WHERE name = 'erasure_key'").fetchone()
            if found is None or not isinstance(found[0], bytes) or not found[0]:
                raise StorageError(
                    f"{self!r}: the database is damaged: meta row name='erasure_key' is "
                    f"{'missing' if found is None else 'not a key (no bytes)'}; without it "
                    "erased identifiers cannot be recognized"
                )
            self._erasure_key = found[0]
            self._read_kinds(conn)
            pending = conn.execute(
                "SELECT 1 FROM meta WHERE name = ?", (_ERASURE_PENDING,)
            ).fetchone()
            if pending is not None:
                # An erasure met a busy reader, or a crash came before its end: finish it.
                with suppress(ErasureIncompleteError):  # still busy: scrub() or the next open
                    self._finish_erasure()
        for statement in _TEMP_SCHEMA:
            conn.execute(statement)

    def _check_schema(self, conn: sqlite3.Connection, *, change: bool) -> bool:
        """Whether the file has this module's schema; with ``change``, create the tables in
        an empty file or migrate an older layout. Refuse any other file."""
        tables = {
            name for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        }
        if "schema_version" not in tables:
            if tables:
                raise ConfigurationError(
                    f"{self!r}: the file is an SQLite database but not an identityres store "
                    f"(it has tables {sorted(tables)!r} and no schema_version table)"
                )
            if not change:
                return False
            for statement in _SCHEMA:
                conn.execute(statement)
            conn.execute("INSERT INTO schema_version (version) VALUES (?)", (SCHEMA_VERSION,))
            conn.executemany(
                "INSERT INTO counters (name, value) VALUES (?, 0)", [(c,) for c in _COUNTERS]
            )
            conn.execute(
                "INSERT INTO meta (name, value) VALUES ('erasure_key', ?)",
                (secrets.token_bytes(32),),
            )
            return True
        rows = conn.execute("SELECT version FROM schema_version").fetchall()
        if len(rows) != 1 or not isinstance(rows[0][0], int):
            raise ConfigurationError(
                f"{self!r}: the schema_version table is damaged (rows: {rows!r}); "
                "identityres cannot tell which layout this file has"
            )
        version = rows[0][0]
        if version > SCHEMA_VERSION:
            raise ConfigurationError(
                f"{self!r}: the database has schema version {version}, but this identityres "
                f"understands versions up to {SCHEMA_VERSION}: the file was written by a newer "
                "identityres; upgrade identityres to open it"
            )
        if version < SCHEMA_VERSION and not change:
            return False
        while version < SCHEMA_VERSION:
            steps = _MIGRATIONS.get(version)
            if steps is None:
                raise ConfigurationError(
                    f"{self!r}: the database has schema version {version}, older than version "
                    f"{SCHEMA_VERSION} that this identityres writes, and no migration from it "
                    "exists: open it with the identityres release that wrote it, or create a "
                    "new store and ingest the events again"
                )
            for statement in steps:
                conn.execute(statement)
            version += 1
            conn.execute("UPDATE schema_version SET version = ?", (version,))
        return True

    def _read_kinds(self, conn: sqlite3.Connection) -> None:
        for kind_id, name in conn.execute("SELECT id, name FROM kinds"):
            self._kind_ids[name] = kind_id
            self._kind_names[kind_id] = name

    def _kind_id(self, conn: sqlite3.Connection, name: str) -> int:
        """The number of a kind, added to ``kinds`` if new (inside the batch)."""
        kind_id = self._kind_ids.get(name)
        if kind_id is None:
            self._read_kinds(conn)
            kind_id = self._kind_ids.get(name)
            if kind_id is None:
                cursor = conn.execute("INSERT INTO kinds (name) VALUES (?)", (name,))
                kind_id = cursor.lastrowid
                assert kind_id is not None
                self._kind_ids[name] = kind_id
                self._kind_names[kind_id] = name
                self._new_kinds.append(name)
        return kind_id

    def _decode_nodes(
        self, conn: sqlite3.Connection, rows: Iterable[tuple[Any, ...]]
    ) -> tuple[NodeRow, ...]:
        names = self._kind_names
        out = []
        for r in rows:
            name = names.get(r[1])
            if name is None:
                self._read_kinds(conn)  # a kind another process added since
                name = names.get(r[1])
                if name is None:
                    raise StorageError(
                        f"{self!r}: the database is damaged: nodes row ref={r[0]!r} has kind "
                        f"{r[1]!r}, and the kinds table has no row with id={r[1]!r}"
                    )
            out.append(NodeRow(r[0], name, *r[2:]))
        return tuple(out)

    def _in_list(
        self, conn: sqlite3.Connection, table: str, key: str, column: str, keys: Sequence[Any]
    ) -> list[tuple[Any, Any]]:
        """``(key, column)`` of the rows whose ``key`` is in ``keys``: one statement per
        ``_max_variables`` keys (names here are this module's constants, never input)."""
        out: list[tuple[Any, Any]] = []
        for chunk in _chunks(keys, self._max_variables):
            out.extend(
                conn.execute(
                    f"SELECT {key}, {column} FROM {table} "
                    f"WHERE {key} IN ({_placeholders(len(chunk))})",
                    chunk,
                )
            )
        return out

    def _nodes_by_ref(self, conn: sqlite3.Connection, refs: Sequence[int]) -> dict[int, NodeRow]:
        out: dict[int, NodeRow] = {}
        for chunk in _chunks(refs, self._max_variables):
            rows = conn.execute(
                f"SELECT {_NODE_COLUMNS} FROM nodes WHERE ref IN ({_placeholders(len(chunk))})",
                chunk,
            ).fetchall()
            out.update((n.ref, n) for n in self._decode_nodes(conn, rows))
        return out

    def _components(
        self, conn: sqlite3.Connection, identifiers: Collection[tuple[str, str]]
    ) -> ComponentRows:
        """Every node and link row of the components holding ``identifiers``: a fixed
        number of statements, whatever the number of identifiers."""
        kind_ids = self._kind_ids
        wanted = [(kind_ids[k], v) for k, v in identifiers if k in kind_ids]
        if len(wanted) < len(identifiers):
            self._read_kinds(conn)
            wanted = [(kind_ids[k], v) for k, v in identifiers if k in kind_ids]
        if not wanted:
            return ComponentRows((), ())
        conn.execute("DELETE FROM temp.wanted")
        conn.execute("DELETE FROM temp.wanted_components")
        conn.executemany("INSERT INTO temp.wanted (kind, value) VALUES (?, ?)", wanted)
        conn.execute(
            "INSERT OR IGNORE INTO temp.wanted_components (ref) SELECT n.component "
            "FROM temp.wanted AS w CROSS JOIN nodes AS n "
            "ON n.kind = w.kind AND n.value = w.value"
        )
        node_rows = conn.execute(
            f"SELECT {_N_NODE_COLUMNS} FROM temp.wanted_components AS c "
            "CROSS JOIN nodes AS n ON n.component = c.ref"
        ).fetchall()
        link_rows = conn.execute(
            f"SELECT {_L_LINK_COLUMNS} FROM temp.wanted_components AS c "
            "CROSS JOIN links AS l ON l.component = c.ref"
        ).fetchall()
        return ComponentRows(
            self._decode_nodes(conn, node_rows), tuple(map(_decode_link, link_rows))
        )

    # -- writing --------------------------------------------------------------------------

    @contextmanager
    def batch(self) -> Iterator[_SQLiteBatch]:
        """One transaction begun with ``BEGIN IMMEDIATE``: it holds the database's write lock
        from the start, so the batches of all threads and processes are serialized.
        Committed when the block exits normally, rolled back when it raises."""
        with self._write_lock:
            if self._snapshots and self._read_lock._is_owned():  # type: ignore[attr-defined]
                raise StorageError(
                    f"{self!r}: a batch cannot be opened inside a snapshot (only reads belong "
                    "there, and they would not see the batch)"
                )
            conn = self._connection(writer=True)
            if conn.in_transaction:
                raise StorageError(f"{self!r}: a batch is already open on this store")
            self._retrying("begin a batch", lambda: conn.execute("BEGIN IMMEDIATE"))
            self._new_kinds.clear()
            batch = _SQLiteBatch(self, conn)
            try:
                pending = self._pending_rules
                if pending is not None:
                    self._record_rules(conn, pending)
                yield batch
                if conn is not self._writer:  # (closed, or this very thread forked meanwhile)
                    raise StorageError(f"{self!r}: the batch's connection is gone; not committed")
                self._retrying("commit", lambda: conn.execute("COMMIT"))
            except BaseException:
                self._rollback(conn)
                raise
            self._pending_rules = None
            self._new_kinds.clear()
            if batch.erased:
                self._finish_erasure()

    # -- erasure: no byte of an erased value left in the files ------------------------------

    def scrub(self) -> None:
        """Finish an erasure whose bytes may still be in the files: one that met a busy
        reader (:class:`~identityres.errors.ErasureIncompleteError`), or that a crash
        interrupted (opening the store tries this too). Raises ``ErasureIncompleteError``
        when it still cannot; does nothing when no erasure is pending."""
        with self._write_lock:
            self._connection(writer=True)  # StorageError when the store is closed
            self._finish_erasure()

    def find_bytes(self, data: bytes) -> dict[str, list[int]]:
        """Where ``data`` occurs in the database file, its ``-wal``, ``-shm`` and ``-journal``
        files: the offsets, by file path (files without it are left out). For checking an
        erasure (``identityres forget --verify``: the value's UTF-8 bytes); the files are read
        as they are, without a lock. A short value may also occur inside other data."""
        if not isinstance(data, bytes):
            raise TypeError(f"data={data!r}: must be bytes")
        found: dict[str, list[int]] = {}
        for suffix in ("", "-wal", "-shm", "-journal"):
            path = self._file + suffix
            try:
                offsets = _find_in_file(path, data)
            except FileNotFoundError:
                continue
            except OSError as exc:
                raise StorageError(f"{self!r}: cannot read {path!r}: {exc}") from exc
            if offsets:
                found[path] = offsets
        return found

    def files(self) -> list[str]:
        """The paths of the store's files that exist now: the database, and its ``-wal``,
        ``-shm`` and ``-journal`` files if there are any."""
        return [
            self._file + suffix
            for suffix in ("", "-wal", "-shm", "-journal")
            if os.path.exists(self._file + suffix)
        ]

    def _finish_erasure(self) -> None:
        """Remove every copy of erased values from the database file and its WAL, then delete
        the ``erasure_pending`` row. ``PRAGMA secure_delete`` zeroes the deleted rows, but
        B-tree rebalancing leaves stale copies of cells in the unused space of index pages,
        and the WAL holds the pages as they were before the erasure: ``VACUUM`` rebuilds every
        page from the live rows, and a ``TRUNCATE`` checkpoint copies the new pages into the
        file and cuts the WAL to nothing. That checkpoint cannot finish while another
        connection reads an older state: then the row stays and ``ErasureIncompleteError``
        says so. Called with the write lock held (no batch of this store is open)."""
        try:
            conn = sqlite3.connect(
                self._file, timeout=self.timeout, isolation_level=None, check_same_thread=False
            )
        except sqlite3.Error as exc:
            raise self._incomplete(f"cannot open the database: {exc}") from exc
        try:
            try:
                with self._errors("erasure"):
                    conn.execute("PRAGMA secure_delete = ON")
                    conn.execute("PRAGMA temp_store = MEMORY")  # the rebuilt copy: no temp file
                    durable = self._temporary is None
                    conn.execute(f"PRAGMA synchronous = {'FULL' if durable else 'OFF'}")
                row = self._retrying(
                    "erasure: read the pending mark",
                    lambda: conn.execute(
                        "SELECT value FROM meta WHERE name = ?", (_ERASURE_PENDING,)
                    ).fetchone(),
                )
                if row is None:
                    return  # nothing pending (another handle finished it)
                self._retrying("erasure: rebuild the file", lambda: conn.execute("VACUUM"))
                busy, log, done = self._retrying(
                    "erasure: empty the WAL",
                    lambda: conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone(),
                )
                if busy or log != done:
                    raise self._incomplete(
                        "another connection is reading an older state of the database, so "
                        f"the write-ahead log cannot be emptied yet ({done} of {log} pages "
                        "copied into the file)"
                    )
                # Only the mark this erasure saw: one committed since stays pending.
                self._retrying(
                    "erasure: delete the pending mark",
                    lambda: conn.execute(
                        "DELETE FROM meta WHERE name = ? AND value = ?", (_ERASURE_PENDING, row[0])
                    ),
                )
                with suppress(sqlite3.Error):  # the WAL holds that deletion only: no value
                    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
            except ErasureIncompleteError:
                raise
            except StorageError as exc:
                raise self._incomplete(str(exc)) from exc
        finally:
            conn.close()

    def _incomplete(self, why: str) -> ErasureIncompleteError:
        return ErasureIncompleteError(
            f"{self!r}: the erasure is committed (the identifier is deleted and suppressed; no "
            "read returns it), but bytes of the erased values may remain in the database "
            f"file or its WAL: {why}. They are removed by the next open of the store, or by "
            "store.scrub(), once no other connection holds a read transaction"
        )

    def _record_rules(self, conn: sqlite3.Connection, proposed: RulesRecord) -> None:
        with self._errors("record the rules"):
            found = _read_rules(conn)
            if found is None:
                conn.executemany(
                    "INSERT INTO meta (name, value) VALUES (?, ?)",
                    [("rules_digest", proposed.digest), ("rules", proposed.description)],
                )
        if found is not None and found.digest != proposed.digest:
            raise ConfigurationError(
                f"{self!r}: another handle recorded other rules since this one was opened; "
                f"{proposed.difference(found)}"
            )

    def _rollback(self, conn: sqlite3.Connection) -> None:
        for name in self._new_kinds:
            kind_id = self._kind_ids.pop(name, None)
            if kind_id is not None:
                self._kind_names.pop(kind_id, None)
        self._new_kinds.clear()
        try:
            # (a connection inherited across a fork is never used: see the module docs)
            if conn is self._writer and conn.in_transaction:
                conn.execute("ROLLBACK")
        except sqlite3.Error:
            pass  # the error being raised says more; SQLite undoes a broken transaction

    def erasure_key(self) -> bytes:
        """The secret that erased identifiers are hashed with, kept in the file."""
        return self._erasure_key

    def bind_rules(self, proposed: RulesRecord) -> RulesRecord:
        """The rules recorded in the file (``meta`` rows ``rules`` and ``rules_digest``). A
        file that has none (a new one, or one written by 0.1) records ``proposed`` in the
        transaction of its next batch, so that opening needs no write lock; that batch
        raises :class:`~identityres.errors.ConfigurationError` if another handle recorded
        other rules meanwhile."""
        with self._write_lock:
            # Two graphs on this one store object: the first one's rules wait to be recorded,
            # and the second one gets them back (and is refused if its own differ).
            if self._pending_rules is not None:
                return self._pending_rules
            with self._reading("bind_rules") as conn:
                found = _read_rules(conn)
            if found is not None:
                return found
            self._pending_rules = proposed
            return proposed

    # -- kept events (the EventLog capability, docs/analytics.md) ---------------------------

    def keep_events(self, events: Sequence[KeptEvent]) -> None:
        """Insert ``events`` in one transaction; an event id already kept stays as it is."""
        if not events:
            return
        rows = []
        id_rows: list[tuple[str, str, str]] = []
        for e in events:
            rows.append(
                (
                    e.event_id,
                    e.ts,
                    e.type,
                    e.name,
                    json.dumps([[i.kind, i.value] for i in e.identifiers]),
                    None if e.properties is None else _encode_json("properties", e.properties),
                    None if e.context is None else _encode_json("context", e.context),
                )
            )
            id_rows.extend((i.kind, i.value, e.event_id) for i in e.identifiers)
        with self.batch() as batch:
            conn = batch._conn
            with self._errors("keep_events"):
                for statement in _KEPT_SCHEMA:
                    conn.execute(statement)
                before = conn.total_changes
                conn.executemany(
                    "INSERT OR IGNORE INTO kept_events "
                    "(event_id, ts, type, name, identifiers, properties, context) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?)",
                    rows,
                )
                if conn.total_changes - before:
                    # (the identifier rows of an event already kept are there already)
                    conn.executemany(
                        "INSERT OR IGNORE INTO kept_event_ids (kind, value, event_id) "
                        "VALUES (?, ?, ?)",
                        id_rows,
                    )

    def _has_kept(self, conn: sqlite3.Connection) -> bool:
        return (
            conn.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'kept_events'"
            ).fetchone()
            is not None
        )

    def forget_events(self, kind: str, value: str) -> int:
        """Delete the kept events carrying ``(kind, value)``; the file is then rebuilt as for
        any erasure, so no byte of them stays (docs/storage.md, Erasure)."""
        with self.batch() as batch:
            conn = batch._conn
            with self._errors("forget_events"):
                if not self._has_kept(conn):
                    return 0
                gone = [
                    eid
                    for (eid,) in conn.execute(
                        "SELECT event_id FROM kept_event_ids WHERE kind = ? AND value = ?",
                        (kind, value),
                    )
                ]
                for chunk in _chunks(gone, 500):
                    marks = _placeholders(len(chunk))
                    conn.execute(f"DELETE FROM kept_events WHERE event_id IN ({marks})", chunk)
                    conn.execute(f"DELETE FROM kept_event_ids WHERE event_id IN ({marks})", chunk)
                if gone:
                    batch.erased = True
                    conn.execute(
                        "INSERT OR REPLACE INTO meta (name, value) VALUES (?, ?)",
                        (_ERASURE_PENDING, secrets.token_bytes(8)),
                    )
        return len(gone)

    def iter_events(self) -> Iterator[KeptEvent]:
        """Kept events in ``(ts, event_id)`` order, a page per read transaction."""
        after: tuple[float, str] | None = None
        while True:
            with self._reading("iter_events") as conn:
                if not self._has_kept(conn):
                    return
                if after is None:
                    page = conn.execute(
                        "SELECT event_id, ts, type, name, identifiers, properties, context "
                        "FROM kept_events ORDER BY ts, event_id LIMIT ?",
                        (_PAGE,),
                    ).fetchall()
                else:
                    page = conn.execute(
                        "SELECT event_id, ts, type, name, identifiers, properties, context "
                        "FROM kept_events WHERE (ts, event_id) > (?, ?) "
                        "ORDER BY ts, event_id LIMIT ?",
                        (*after, _PAGE),
                    ).fetchall()
            for eid, ts, etype, name, ids, props, ctx in page:
                yield KeptEvent(
                    eid,
                    ts,
                    etype,
                    name,
                    tuple(Identifier(k, v) for k, v in _decode_json("kept_events", eid, ids)),
                    None if props is None else _decode_json("kept_events", eid, props),
                    None if ctx is None else _decode_json("kept_events", eid, ctx),
                )
            if len(page) < _PAGE:
                return
            after = (page[-1][1], page[-1][0])

    # -- reading --------------------------------------------------------------------------

    @contextmanager
    def _reading(self, what: str) -> Iterator[sqlite3.Connection]:
        """The reader connection in one read transaction: a consistent view of the committed
        batches. Inside this thread's :meth:`snapshot`, the snapshot's transaction."""
        with self._read_lock:
            if self._snapshots:  # (held by whoever holds the lock: this thread)
                conn = self._reader
                if conn is None:
                    raise StorageError(self._unusable or f"{self!r}: the snapshot is gone")
                with self._errors(what):
                    yield conn
                return
            conn = self._connection(writer=False)
            self._retrying(what, lambda: conn.execute("BEGIN"))
            try:
                with self._errors(what):
                    yield conn
            finally:
                if conn.in_transaction and conn is self._reader:
                    with self._errors(what):
                        conn.execute("COMMIT")

    @contextmanager
    def snapshot(self) -> Iterator[None]:
        """Every read this thread makes on this store object inside the block sees the one
        committed state of when the block began: one read transaction on the reader
        connection, held with the reader's lock (other threads' reads on this object wait
        for the block; other handles and processes go on reading and writing). Re-entrant.
        Only reads belong inside: a batch opened there raises ``StorageError``."""
        with self._read_lock:
            if self._snapshots:
                self._snapshots += 1
                try:
                    yield
                finally:
                    self._snapshots -= 1
                return
            conn = self._connection(writer=False)

            def begin() -> None:
                if conn.in_transaction:  # (a try that found the database busy)
                    conn.execute("ROLLBACK")
                conn.execute("BEGIN")
                # A deferred transaction takes its snapshot at its first read: take it now.
                conn.execute("SELECT version FROM schema_version").fetchall()

            try:
                self._retrying("snapshot", begin)
            except BaseException:
                with suppress(sqlite3.Error):
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                raise
            self._snapshots = 1
            try:
                yield
            finally:
                self._snapshots = 0
                if conn.in_transaction and conn is self._reader:
                    with self._errors("snapshot"):
                        conn.execute("COMMIT")

    def read_components(self, identifiers: Collection[tuple[str, str]]) -> ComponentRows:
        """Node and log rows of the components holding ``identifiers`` (no write lock)."""
        with self._reading("read_components") as conn:
            return self._components(conn, identifiers)

    def node(self, kind: str, value: str) -> NodeRow | None:
        with self._reading("node") as conn:
            kind_id = self._kind_ids.get(kind)
            if kind_id is None:
                self._read_kinds(conn)
                kind_id = self._kind_ids.get(kind)
                if kind_id is None:
                    return None
            row = conn.execute(
                f"SELECT {_NODE_COLUMNS} FROM nodes WHERE kind = ? AND value = ?",
                (kind_id, value),
            ).fetchone()
            return None if row is None else self._decode_nodes(conn, (row,))[0]

    def nodes_by_ref(self, refs: Collection[int]) -> Mapping[int, NodeRow]:
        wanted = sorted({r for r in refs if r >= 0})
        with self._reading("nodes_by_ref") as conn:
            return self._nodes_by_ref(conn, wanted)

    def profile_rows(self, profile: int) -> ProfileRows:
        with self._reading("profile_rows") as conn:
            # ``profile`` is a root's ref; should the profile have joined another one since
            # the caller read it, these are the rows of the profile it joined.
            found = conn.execute(
                "SELECT component, profile FROM nodes WHERE ref = ?", (profile,)
            ).fetchone()
            return self._profile_rows(conn, found)

    def profile_of(self, kind: str, value: str) -> ProfileRows | None:
        with self._reading("profile_of") as conn:
            kind_id = self._kind_ids.get(kind)
            if kind_id is None:
                self._read_kinds(conn)
                kind_id = self._kind_ids.get(kind)
                if kind_id is None:
                    return None
            found = conn.execute(
                "SELECT component, profile FROM nodes WHERE kind = ? AND value = ?",
                (kind_id, value),
            ).fetchone()
            if found is None:
                return None
            return self._profile_rows(conn, found)

    def _profile_rows(self, conn: sqlite3.Connection, found: tuple[int, int] | None) -> ProfileRows:
        if found is None:
            return ProfileRows((), (), ())
        where = "n.component = ? AND n.profile = ?"
        rows = conn.execute(
            f"SELECT {_N_NODE_COLUMNS} FROM nodes AS n WHERE {where}", found
        ).fetchall()
        traits = conn.execute(
            "SELECT t.node, t.key, t.ts, t.event_id, t.value, t.once FROM nodes AS n "
            f"CROSS JOIN traits AS t ON t.node = n.ref WHERE {where}",
            found,
        ).fetchall()
        links = conn.execute(
            "SELECT c.node, c.company_id, c.ts, c.event_id FROM nodes AS n "
            f"CROSS JOIN company_links AS c ON c.node = n.ref WHERE {where}",
            found,
        ).fetchall()
        return profile_rows(self._decode_nodes(conn, rows), traits, links)

    def iter_profiles(self) -> Iterator[ProfileRows]:
        """Every profile, read a few thousand identifiers at a time (whole link components,
        in ref order), each page in one read transaction: batches that other connections
        commit meanwhile may show in the later pages."""
        last = -1
        while True:
            with self._reading("iter_profiles") as conn:
                rows = conn.execute(
                    f"SELECT {_NODE_COLUMNS} FROM nodes WHERE component > ? "
                    "ORDER BY component LIMIT ?",
                    (last, _PAGE),
                ).fetchall()
                if not rows:
                    return
                rows, top = whole_components(
                    rows,
                    _PAGE,
                    lambda c: conn.execute(
                        f"SELECT {_NODE_COLUMNS} FROM nodes WHERE component = ?", (c,)
                    ),
                )
                traits = conn.execute(
                    "SELECT n.profile, t.node, t.key, t.ts, t.event_id, t.value, t.once "
                    "FROM nodes AS n CROSS JOIN traits AS t ON t.node = n.ref "
                    "WHERE n.component > ? AND n.component <= ?",
                    (last, top),
                ).fetchall()
                links = conn.execute(
                    "SELECT n.profile, c.node, c.company_id, c.ts, c.event_id "
                    "FROM nodes AS n CROSS JOIN company_links AS c ON c.node = n.ref "
                    "WHERE n.component > ? AND n.component <= ?",
                    (last, top),
                ).fetchall()
                nodes = self._decode_nodes(conn, rows)
            yield from profile_page(nodes, traits, links)
            last = top

    def iter_refused_links(self) -> Iterator[LinkRow]:
        after: tuple[str, ...] = ()
        while True:
            condition = " AND event_id > ?" if after else ""
            with self._reading("iter_refused_links") as conn:
                rows = conn.execute(
                    f"SELECT {_LINK_COLUMNS} FROM links WHERE refused IS NOT NULL{condition} "
                    "ORDER BY event_id LIMIT ?",
                    (*after, _PAGE),
                ).fetchall()
            if not rows:
                return
            yield from map(_decode_link, rows)
            after = (rows[-1][0],)

    def company_ids(self) -> list[str]:
        with self._reading("company_ids") as conn:
            rows = conn.execute("SELECT company_id FROM companies").fetchall()
        return sorted(cid for (cid,) in rows)

    def company_rows(self, company_id: str) -> CompanyRows | None:
        with self._reading("company_rows") as conn:
            known = conn.execute(
                "SELECT 1 FROM companies WHERE company_id = ?", (company_id,)
            ).fetchone()
            if known is None:
                return None
            members = [
                n
                for (n,) in conn.execute(
                    "SELECT node FROM company_links WHERE company_id = ? ORDER BY node",
                    (company_id,),
                )
            ]
            traits = conn.execute(
                "SELECT company_id, key, ts, event_id, value FROM company_traits "
                "WHERE company_id = ?",
                (company_id,),
            ).fetchall()
        return company_from_rows(members, traits)

    def counts(self) -> Counts:
        with self._reading("counts") as conn:
            counters = dict(conn.execute("SELECT name, value FROM counters").fetchall())
            missing = [name for name in _COUNTS if not isinstance(counters.get(name), int)]
            if missing:
                raise StorageError(
                    f"{self!r}: the database is damaged: counters rows name={missing!r} are "
                    "missing or not numbers"
                )
            blocked = {
                (kind, value): count
                for kind, value, count in conn.execute("SELECT kind, value, count FROM blocked")
            }
        return Counts(
            events=counters["events"],
            identifiers=counters["identifiers"],
            profiles=counters["profiles"],
            identified_profiles=counters["identified_profiles"],
            blocked=blocked,
        )

    def close(self) -> None:
        """Close the connections (an open batch is rolled back); idempotent."""
        with self._write_lock, self._read_lock:
            connections = (self._writer, self._reader)
            self._writer = self._reader = None
            self._unusable = f"{self!r} is closed"
            _LIVE.discard(self)
            failure: sqlite3.Error | None = None
            for conn in connections:
                if conn is not None:
                    try:
                        conn.close()
                    except sqlite3.Error as exc:
                        failure = exc
            if self._temporary is not None:
                self._temporary()
            if failure is not None:
                raise StorageError(f"{self!r}: close failed: {failure}") from failure

    def _after_fork_in_child(self) -> None:
        """Make this store object the child's own (see "Fork" in the module docs)."""
        writing = release_orphaned(self._write_lock)
        reading = release_orphaned(self._read_lock)
        self._snapshots = 0
        # What another thread's batch may have half-changed; read again from the file.
        self._kind_ids, self._kind_names, self._new_kinds = {}, {}, []
        inherited_in_use = False
        for conn, busy in ((self._writer, writing), (self._reader, reading)):
            if conn is None:
                continue
            if busy or conn.in_transaction:
                _INHERITED.append(conn)  # never closed (closing rolls back), never used
                inherited_in_use = True
            else:
                with suppress(sqlite3.Error):
                    conn.close()
        self._writer = self._reader = None
        if isinstance(self._temporary, weakref.finalize):
            self._temporary.detach()  # the parent's file: the child must not remove it
            self._unusable = (
                f"{self!r}: a private database (':memory:') stays with the process that made "
                "it, and this process was forked from that one"
            )
        if inherited_in_use:
            key = _file_key(self._file)
            if key is not None:
                _POISONED.add(key)


#: every open ``SQLiteStore`` of this process (for the at-fork hook)
_LIVE: weakref.WeakSet[SQLiteStore] = weakref.WeakSet()
#: connections a forked child inherited while another thread was using them: kept here, so
#: that they are never closed (that would roll back the parent's transaction) nor used
_INHERITED: list[sqlite3.Connection] = []
#: ``(device, inode)`` of the database files such connections are open on, in this process
_POISONED: set[tuple[int, int]] = set()


def _file_key(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def _poisoned(store: SQLiteStore) -> str:
    return (
        f"{store!r}: this process was forked while another thread was using this database "
        "through an SQLiteStore, and SQLite cannot use the file safely in this process any "
        "more (https://www.sqlite.org/howtocorrupt.html, 'carrying an open database "
        "connection across a fork'): open the store in the child while no thread of the "
        "parent uses it at the fork, or start the processes with the 'spawn' method"
    )


def _after_fork_in_child() -> None:
    for store in list(_LIVE):
        store._after_fork_in_child()


if hasattr(os, "register_at_fork"):  # (not on Windows, which does not fork)
    os.register_at_fork(after_in_child=_after_fork_in_child)


def _read_rules(conn: sqlite3.Connection) -> RulesRecord | None:
    rows = dict(
        conn.execute(
            "SELECT name, value FROM meta WHERE name IN ('rules', 'rules_digest')"
        ).fetchall()
    )
    if "rules_digest" not in rows:
        return None

    def text(value: object) -> str:
        return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)

    return RulesRecord(text(rows["rules_digest"]), text(rows.get("rules", "")))


def _remove_database(path: str) -> None:
    for suffix in ("", "-wal", "-shm", "-journal"):
        with suppress(OSError):
            os.remove(path + suffix)
