"""The write seam: how validated records reach the state of a graph.

``IdentityGraph`` picks one writer when it is made and never looks at its store's type again:

* :class:`InPlaceWriter` — the default in-memory store: the engine that *is* the store
  decides each record where it lies (no rows, no load, no save: the fast path);
* :class:`BatchWriter` — every other store: each batch loads the link components it
  touches into a working set, decides there, and saves the changed rows, as
  ``docs/storage.md`` describes.

Both recognize duplicates and conflicting ``event_id`` reuse with one function,
:func:`admit`, over one process-independent fingerprint (``Record.fingerprint``), so a store
written by one writer is read right by the other.

Both are all or nothing, per call: a write that fails half-way leaves the state as it was
and raises a documented error, the unexpected cause chained (:class:`StorageError`). The
in-place writer undoes a failed ``Engine.apply`` (it undoes itself) and a failed ``write``
(every record of the call, through an engine savepoint); a batch writer's failed batch is
rolled back by its store.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from typing import Any

from identityres._engine import Engine
from identityres._events import Record, same_content
from identityres._model import Outcome
from identityres._rules import CompiledRules
from identityres._working_set import WorkingSet
from identityres.errors import EventIdConflictError, IdentityResError, StorageError
from identityres.storage._protocol import Batch, RetryBatch, Store

__all__ = [
    "CONFLICT",
    "DUPLICATE",
    "FRESH",
    "BatchWriter",
    "ConflictAt",
    "InPlaceWriter",
    "admit",
]

#: What :func:`admit` says of a record.
FRESH, DUPLICATE, CONFLICT = range(3)

#: How often a batch is retried when a store reports a conflicting concurrent batch.
RETRIES = 20

Written = tuple[list[Outcome], list[tuple[int, EventIdConflictError]]]


class ConflictAt(Exception):
    """Raised out of a batch (so that it rolls back) by a writer asked to raise on reused
    event ids: the first such record by its position in the caller's input."""

    def __init__(self, index: int, error: EventIdConflictError) -> None:
        super().__init__(index, error)
        self.index = index
        self.error = error


def admit(stored: bytes | None, rec: Record, kind_names: tuple[str, ...]) -> int:
    """The one duplicate decision: ``stored`` is the fingerprint already held under
    ``rec.event_id`` (``None``: none). The same content is a duplicate (a redelivery);
    other content is a conflict (the id reused)."""
    if stored is None:
        return FRESH
    return DUPLICATE if same_content(stored, rec, kind_names) else CONFLICT


def conflict(rec: Record) -> EventIdConflictError:
    return EventIdConflictError(
        "event_id", rec.event_id, "already used by an event with other content"
    )


def failed(what: str, exc: Exception) -> StorageError:
    """The documented error for an unexpected one inside a write (nothing was applied)."""
    error = StorageError(f"{what} failed, and nothing of it was applied: {exc!r}")
    error.__cause__ = exc
    return error


def key_order(records: list[tuple[int, Record]]) -> list[int]:
    """Positions of ``records`` in ``(timestamp, event_id)`` order. Applying a batch in this
    order keeps late-event replays to the events late against the graph, not against the
    batch; the result is the same in any order (R8 in docs/merge-rules.md)."""
    keys = [(rec.ts, rec.event_id) for _, rec in records]
    return sorted(range(len(keys)), key=keys.__getitem__)


class InPlaceWriter:
    """Decides records in the engine of an in-place ``MemoryStore``, under the store's lock
    (shared by every graph and handle on that store)."""

    __slots__ = ("engine", "held", "kind_names", "lock")

    def __init__(self, engine: Engine, lock: threading.RLock) -> None:
        self.engine = engine
        self.kind_names = engine.rules.kind_names
        self.lock = lock
        #: the fingerprints held by event id, readable without a batch (under the lock)
        self.held: Mapping[str, bytes] = engine.seen

    @property
    def replays(self) -> int:
        return self.engine.replays

    def submit(self, rec: Record) -> Outcome:
        engine = self.engine
        with self.lock:
            held = engine.seen.get(rec.event_id)
            if held is not None:  # ``admit``, its commonest answer (fresh) written out
                if admit(held, rec, self.kind_names) == CONFLICT:
                    raise conflict(rec)
                return Outcome(rec.event_id, engine, None, rec.blocked, duplicate=True)
            try:
                decisions, late, replayed = engine.apply(rec)  # undoes itself if it fails
            except IdentityResError:
                raise
            except Exception as exc:
                raise failed(f"writing event {rec.event_id!r}", exc) from exc
        return Outcome(rec.event_id, engine, decisions, rec.blocked, False, late, replayed)

    def write(self, records: list[tuple[int, Record]], *, raise_errors: bool) -> Written:
        """Apply checked records (``ingest`` checked each against :attr:`held` under the
        lock it still holds, so nothing here conflicts); outcomes in the given order. All
        or nothing: if one fails, none of them stays applied."""
        engine = self.engine
        outcomes: list[Any] = [None] * len(records)
        seen = engine.seen
        apply = engine.apply
        started: list[Record] = []
        mark, journal = engine.savepoint()
        try:
            for i in key_order(records):
                rec = records[i][1]
                eid = rec.event_id
                if eid in seen:  # the same event twice in one batch: the second is a duplicate
                    outcomes[i] = Outcome(eid, engine, None, rec.blocked, duplicate=True)
                else:
                    started.append(rec)
                    decisions, late, replayed = apply(rec, journal)
                    outcomes[i] = Outcome(
                        eid, engine, decisions, rec.blocked, False, late, replayed
                    )
        except BaseException as exc:
            engine.rollback(mark, journal, started)
            if isinstance(exc, Exception) and not isinstance(exc, IdentityResError):
                raise failed(f"ingesting {len(records)} events", exc) from exc
            raise
        engine.release()
        return outcomes, []


class BatchWriter:
    """Sends records through the storage protocol: one atomic batch per call, retried a
    bounded number of times when the store raises :class:`RetryBatch`."""

    __slots__ = ("held", "lock", "replays", "rules", "store")

    def __init__(self, store: Store, rules: CompiledRules) -> None:
        self.store = store
        self.rules = rules
        self.lock = threading.RLock()
        #: component replays done by this graph's batches (a store keeps no such count)
        self.replays = 0
        #: nothing is readable without a batch: the store is asked inside it
        self.held: Mapping[str, bytes] = {}

    def submit(self, rec: Record) -> Outcome:
        try:
            outcomes, _ = self.write([(0, rec)], raise_errors=True)
        except ConflictAt as reused:
            raise reused.error from None
        return outcomes[0]

    def write(self, records: list[tuple[int, Record]], *, raise_errors: bool) -> Written:
        """Apply validated records (an event id repeats only as a duplicate) as one atomic
        batch, returning outcomes in the given order and the records refused for reusing a
        stored event id (raised instead if ``raise_errors``)."""
        order = key_order(records)
        store = self.store
        for attempt in range(RETRIES):
            try:
                with self.lock, store.batch() as batch:
                    written, replays = self._write_batch(batch, records, order, raise_errors)
                # (counted once the batch is stored: a failed or retried one replayed nothing)
                self.replays += replays
                return written
            except RetryBatch:
                time.sleep(min(0.001 * 2**attempt, 0.1))
            except (IdentityResError, ConflictAt):
                raise
            except Exception as exc:
                raise StorageError(f"store {store!r} failed: {exc}") from exc
        raise StorageError(f"store {store!r}: batch still conflicting after {RETRIES} tries")

    def _write_batch(
        self,
        batch: Batch,
        records: list[tuple[int, Record]],
        order: list[int],
        raise_errors: bool,
    ) -> tuple[Written, int]:
        names = self.rules.kind_names
        stored = batch.seen([rec.event_id for _, rec in records])
        errors: list[tuple[int, EventIdConflictError]] = []
        verdicts = [admit(stored.get(rec.event_id), rec, names) for _, rec in records]
        fresh: list[int] = []
        for i in order:
            if verdicts[i] == CONFLICT:
                errors.append((records[i][0], conflict(records[i][1])))
            elif verdicts[i] == FRESH:
                fresh.append(i)
        if errors and raise_errors:
            # as validation errors are: the first by position in the input
            raise ConflictAt(*min(errors, key=lambda e: e[0]))
        work = WorkingSet(self.rules, self.store.erasure_key())
        work.load(
            batch,
            {(names[k], v) for i in fresh for k, v in records[i][1].ids},
            {(b[0], b[1]) for i in fresh for b in records[i][1].blocked},
        )
        outcomes: list[Any] = [None] * len(records)
        replays = 0
        for i in order:
            rec = records[i][1]
            verdict = verdicts[i]
            if verdict == FRESH and rec.event_id in work.seen:
                # the same event twice in one batch: the second is a duplicate
                verdict = DUPLICATE
            if verdict == FRESH:
                decisions, late, replayed = work.apply(rec)
                replays += late
                outcomes[i] = Outcome(
                    rec.event_id, work, decisions, rec.blocked, False, late, replayed
                )
            elif verdict == DUPLICATE:
                outcomes[i] = Outcome(rec.event_id, work, None, rec.blocked, duplicate=True)
        if work.seen:
            batch.save(work.changes())
        return ([o for o in outcomes if o is not None], errors), replays
