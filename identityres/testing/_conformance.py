"""The storage conformance kit (SPEC §6): proves that a store keeps the promises of the
storage protocol (``identityres/storage/_protocol.py``).

Two parts, used together or apart:

* :class:`StoreConformance`: a pytest base class. A store's test file subclasses it, says how
  to make a store (``make_store``, and ``reopen`` for a second handle on the same data), and
  inherits one plain test per promise of the protocol, hand-written rows and event sequences
  whose right answers are known, plus the state machine below.
* :func:`run_conformance`: one call that runs a hypothesis state machine. It drives an
  ``IdentityGraph`` on the store under test and a plain in-memory ``IdentityGraph`` side by
  side with the same realistic events and checks, after every step, that both show the same
  state (:func:`~identityres.testing.snapshot`; a difference is shown with
  :func:`~identityres.testing.snapshot_diff`).

What does not live here: the reference resolver and snapshots (``_reference``), and the
strategies the state machine draws from (``identityres.strategies``).

This module needs hypothesis (``pip install 'identityres[testing]'``); pytest is needed only to
run :class:`StoreConformance`'s tests, and is imported when one of them skips.
"""

from __future__ import annotations

try:
    from hypothesis import HealthCheck, note
    from hypothesis import settings as Settings
    from hypothesis import strategies as st
    from hypothesis.stateful import (
        RuleBasedStateMachine,
        initialize,
        invariant,
        precondition,
        rule,
        run_state_machine_as_test,
    )
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "the identityres conformance kit needs hypothesis: pip install 'identityres[testing]'"
    ) from exc

import contextlib
import functools
import itertools
import threading
import time
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, NoReturn, TypeVar

import attrs

import identityres.strategies as irst
from identityres._graph import IdentityGraph
from identityres._model import (
    Alias,
    Event,
    Forget,
    Identifier,
    Identify,
    IdentifyCompany,
    Merge,
    Profile,
    Reset,
    Split,
    Track,
)
from identityres._rules import Rules
from identityres.errors import StorageError, ValidationError
from identityres.storage._protocol import (
    Batch,
    Changes,
    CompanyLinkRow,
    CompanyTraitRow,
    ComponentRows,
    LinkRow,
    NodeRow,
    ProfileRows,
    Store,
    TraitRow,
)
from identityres.storage.memory import MemoryStore
from identityres.testing._reference import Snapshot, snapshot, snapshot_diff

__all__ = ["StoreConformance", "run_conformance"]

#: Steps per state-machine example: enough for several batches to meet in one component.
_STEPS = 10

T = TypeVar("T")
OnError = Literal["raise", "skip"]
_ON_ERROR: st.SearchStrategy[OnError] = st.sampled_from(["raise", "skip"])


# --- helpers shared by both parts ----------------------------------------------------------


def _attach(store: Any, rules: Rules) -> None:
    # Not part of the protocol: ``IdentityGraph`` calls ``store.attach(compiled_rules)`` when
    # a store has it (``MemoryStore`` needs it to know the kinds). Row-level tests do the same.
    _attach_compiled(store, rules.compiled)


def _attach_compiled(store: Any, compiled: Any) -> None:
    attach = getattr(store, "attach", None)
    if attach is not None:
        attach(compiled)


def _writes_in_place(store: Store) -> bool:
    # The graph decides in place on an in-place MemoryStore and sends it no batches.
    return isinstance(store, MemoryStore) and store.in_place


def _profile_key(p: Profile) -> tuple[Any, ...]:
    # The same fields as a snapshot's profile entry (traits by repr: values may be unhashable).
    return (
        p.user_id_kind,
        p.user_id,
        p.identified_user_id,
        p.all_identifiers(),
        p.company_id,
        p.company_ids,
        repr(sorted(p.traits.items(), key=lambda kv: kv[0])),
        p.first_seen,
        p.last_seen,
    )


def _stats(graph: IdentityGraph) -> dict[str, Any]:
    # ``replays`` counts work done, not state: the in-place engine and a store's working sets
    # replay differently and both are right.
    stats = attrs.asdict(graph.stats(), recurse=False)
    del stats["replays"]
    return stats


def _differences(expected: IdentityGraph, actual: IdentityGraph) -> str:
    """How ``actual`` (on the store under test) differs from ``expected`` (in memory): "" if
    in nothing. Reads everything a user can read: profiles, refusals, companies, stats, and
    each identifier's profile (``resolve``/``profile`` go through ``Store.node``)."""
    want: Snapshot = snapshot(expected)
    got: Snapshot = snapshot(actual)
    if want != got:
        return "snapshots differ (expected: in-memory graph; actual: store):\n" + snapshot_diff(
            want, got
        )
    want_stats, got_stats = _stats(expected), _stats(actual)
    if want_stats != got_stats:
        return f"stats() differ:\n  expected: {want_stats!r}\n  actual:   {got_stats!r}"
    if len(expected) != len(actual):
        return f"len() differs: expected {len(expected)}, actual {len(actual)}"
    for p in expected.profiles():
        for ident in sorted(p.all_identifiers(), key=lambda i: (i.kind, i.value)):
            found = actual.profile(identifier=(ident.kind, ident.value))
            if found is None or _profile_key(found) != _profile_key(p):
                return (
                    f"profile(identifier={(ident.kind, ident.value)!r}) differs:\n"
                    f"  expected: {p!r}\n  actual:   {found!r}"
                )
    if actual.resolve(user_id="never-seen-by-the-conformance-kit") is not None:
        return "resolve() of an identifier never written is not None"
    return ""


def _assert_same(expected: IdentityGraph, actual: IdentityGraph, where: str) -> None:
    try:
        problem = _differences(expected, actual)
    except AssertionError:
        raise
    except Exception as exc:  # a store that breaks reads fails the kit, it does not crash it
        raise AssertionError(
            f"{where}: reading the graph on the store raised {type(exc).__name__}: {exc}"
        ) from exc
    if problem:
        raise AssertionError(f"{where}: {problem}")


def _write_one(graph: IdentityGraph, event: Event) -> None:
    """Write one event through the graph's write method of its type (not ``ingest``)."""

    def d(m: Mapping[str, Any] | None) -> dict[str, Any] | None:
        return None if m is None else dict(m)

    if isinstance(event, Track):
        graph.track(
            event.event,
            anonymous_id=event.anonymous_id,
            user_id=event.user_id,
            identifiers=d(event.identifiers),
            properties=d(event.properties),
            timestamp=event.timestamp,
            event_id=event.event_id,
        )
    elif isinstance(event, Identify):
        graph.identify(
            event.user_id,
            event.anonymous_id,
            identifiers=d(event.identifiers),
            traits=d(event.traits),
            set_once=d(event.set_once),
            timestamp=event.timestamp,
            event_id=event.event_id,
        )
    elif isinstance(event, Alias):
        graph.alias(
            event.user_id, event.previous_id, timestamp=event.timestamp, event_id=event.event_id
        )
    elif isinstance(event, Reset):
        graph.reset(event.anonymous_id, timestamp=event.timestamp, event_id=event.event_id)
    elif isinstance(event, Merge):
        graph.merge(event.a, event.b, timestamp=event.timestamp, event_id=event.event_id)
    elif isinstance(event, Split):
        graph.split(event.identifier, timestamp=event.timestamp, event_id=event.event_id)
    elif isinstance(event, Forget):
        graph.forget(event.identifier, timestamp=event.timestamp, event_id=event.event_id)
    else:
        graph.identify_company(
            event.company_id,
            user_id=event.user_id,
            anonymous_id=event.anonymous_id,
            traits=d(event.traits),
            timestamp=event.timestamp,
            event_id=event.event_id,
        )


def _outcome(call: Callable[[], Any]) -> tuple[Any, BaseException | None]:
    try:
        return call(), None
    except Exception as exc:  # compared between the two graphs by the caller
        return None, exc


def _same_outcome(
    expected: Callable[[], Any], actual: Callable[[], Any], where: str
) -> tuple[Any, Any]:
    """Run one write on both graphs: both must succeed, or fail with the same exception type."""
    want, want_exc = _outcome(expected)
    got, got_exc = _outcome(actual)
    if type(want_exc) is not type(got_exc):
        raise AssertionError(
            f"{where}: the in-memory graph {_describe(want_exc)} but the graph on the store "
            f"{_describe(got_exc)}"
        ) from got_exc
    return want, got


def _describe(exc: BaseException | None) -> str:
    return "succeeded" if exc is None else f"raised {type(exc).__name__}: {exc}"


def _applied(report: Any) -> int | None:
    # Only the number of events applied is compared: it shows whether ``seen`` recognized
    # the stored events. Which events a batch reports as duplicates or conflicts differs
    # between the in-place graph and the protocol path when a batch both reuses a stored
    # event id and re-delivers the stored event (a graph difference, not a store's).
    return None if report is None else int(report.applied)


# --- a store that fails after save: for the atomicity rule -------------------------------------


class _SimulatedCrash(Exception):
    """Raised by :class:`_CrashingStore` after a batch's ``save``, before it commits."""


class _ProxyBatch:
    """A batch of the store under test, passed through (subclasses add a fault)."""

    def __init__(self, batch: Batch) -> None:
        self._batch = batch

    def seen(self, event_ids: Collection[str]) -> Mapping[str, bytes]:
        return self._batch.seen(event_ids)

    def suppressed(self, hashes: Collection[bytes]) -> set[bytes]:
        return self._batch.suppressed(hashes)

    def load(self, identifiers: Collection[tuple[str, str]]) -> ComponentRows:
        return self._batch.load(identifiers)

    def save(self, changes: Changes) -> None:
        self._batch.save(changes)


class _ProxyStore:
    """The store under test, passed through. A graph on a proxy always writes through the
    protocol's batches, even when the store underneath is one it would write in place."""

    def __init__(self, store: Store) -> None:
        self._store = store

    def attach(self, rules: Any) -> None:
        _attach_compiled(self._store, rules)

    def _wrap(self, batch: Batch) -> Batch:
        return _ProxyBatch(batch)

    @contextlib.contextmanager
    def batch(self) -> Iterator[Batch]:
        with self._store.batch() as batch:
            yield self._wrap(batch)

    def erasure_key(self) -> bytes:
        return self._store.erasure_key()

    def read_components(self, identifiers: Collection[tuple[str, str]]) -> ComponentRows:
        return self._store.read_components(identifiers)

    def node(self, kind: str, value: str) -> NodeRow | None:
        return self._store.node(kind, value)

    def nodes_by_ref(self, refs: Collection[int]) -> Mapping[int, NodeRow]:
        return self._store.nodes_by_ref(refs)

    def profile_rows(self, profile: int) -> ProfileRows:
        return self._store.profile_rows(profile)

    def iter_profiles(self) -> Iterator[ProfileRows]:
        return self._store.iter_profiles()

    def iter_refused_links(self) -> Iterator[LinkRow]:
        return self._store.iter_refused_links()

    def company_ids(self) -> list[str]:
        return self._store.company_ids()

    def company_rows(self, company_id: str) -> tuple[list[CompanyTraitRow], list[int]] | None:
        return self._store.company_rows(company_id)

    def counts(self) -> Mapping[str, Any]:
        return self._store.counts()

    def close(self) -> None:
        pass  # the store under test is closed by its owner


class _CrashingBatch(_ProxyBatch):
    def save(self, changes: Changes) -> None:
        self._batch.save(changes)
        raise _SimulatedCrash("the conformance kit's simulated crash between save and commit")


class _CrashingStore(_ProxyStore):
    """Every batch raises after ``save``: the store must then discard the batch (the
    exception leaves its ``with`` block)."""

    def _wrap(self, batch: Batch) -> Batch:
        return _CrashingBatch(batch)


class _PausingBatch(_ProxyBatch):
    def __init__(self, batch: Batch, loaded: threading.Event, pause: float) -> None:
        super().__init__(batch)
        self._loaded = loaded
        self._pause = pause

    def load(self, identifiers: Collection[tuple[str, str]]) -> ComponentRows:
        rows = self._batch.load(identifiers)
        if not self._loaded.is_set():
            self._loaded.set()
            time.sleep(self._pause)  # another writer tries the same component meanwhile
        return rows


class _PausingStore(_ProxyStore):
    """The first batch pauses after ``load``."""

    def __init__(self, store: Store, pause: float) -> None:
        super().__init__(store)
        self.loaded = threading.Event()
        self._pause = pause

    def _wrap(self, batch: Batch) -> Batch:
        return _PausingBatch(batch, self.loaded, self._pause)


# --- the state machine ---------------------------------------------------------------------


def _rules_variants() -> st.SearchStrategy[Rules]:
    """Default rules and tighter ones, so that every refusal reason shows up."""
    return st.one_of(
        st.just(Rules()),
        st.builds(
            Rules,
            limits=st.fixed_dictionaries(
                {"user_id": st.sampled_from([1, 2, None]), "email": st.sampled_from([1, None])}
            ),
            max_profile_size=st.sampled_from([2, 3, 5, None]),
        ),
    )


class _StoreMachine(RuleBasedStateMachine):
    """An ``IdentityGraph`` on the store under test (``actual``) against a plain in-memory one
    (``expected``), fed the same events. ``factory`` and ``reopen`` are set on a subclass
    made per :func:`run_conformance` call."""

    factory: Callable[[], Store]
    reopen: Callable[[Store], Store] | None = None

    def __init__(self) -> None:
        super().__init__()
        self.stores: list[Store] = []
        self.expected = IdentityGraph()
        self.actual: IdentityGraph | None = None
        self.second: IdentityGraph | None = None
        self.crashing: IdentityGraph | None = None
        self.graph_rules = Rules()
        #: delivered events not yet sent, in delivery order (streams are drawn on demand)
        self.pending: list[Event] = []
        #: every event sent so far, for re-delivery
        self.sent: list[Event] = []
        self.streams = itertools.count()
        self.operations = itertools.count()

    @initialize(rules=_rules_variants())
    def open_graphs(self, rules: Rules) -> None:
        self.graph_rules = rules
        self.expected = IdentityGraph(rules)
        store = type(self).factory()
        self.stores.append(store)
        self.actual = IdentityGraph(rules, store=store)
        # Batches that crash are batches: not for a store the graph writes in place (mixing
        # in-place and batch writers on one store is checked by a plain case instead).
        if not _writes_in_place(store):
            self.crashing = IdentityGraph(rules, store=_CrashingStore(store))
        reopen = type(self).reopen
        if reopen is not None:
            other = reopen(store)
            if other is not store:
                self.stores.append(other)
            self.second = IdentityGraph(rules, store=other)

    def teardown(self) -> None:
        for store in self.stores:
            store.close()

    # -- drawing events ---------------------------------------------------------------------

    def _take(self, data: st.DataObject) -> list[Event]:
        """The next chunk of delivered events; a new realistic stream when none are left.
        Streams already carry late and duplicate deliveries (``streams()``)."""
        if not self.pending:
            stream = data.draw(
                irst.streams(users=3, max_events=24, hostile=data.draw(st.booleans())),
                label="stream",
            )
            # Streams number their events e00, e01, ...: keep each stream's ids apart.
            prefix = f"s{next(self.streams)}-"
            self.pending = [attrs.evolve(e, event_id=f"{prefix}{e.event_id}") for e in stream]
        size = data.draw(st.integers(min_value=1, max_value=12), label="chunk size")
        chunk, self.pending = self.pending[:size], self.pending[size:]
        note(f"chunk: {chunk!r}")
        return chunk

    def _ingest(
        self, graph: IdentityGraph, chunk: list[Event], on_error: OnError, where: str
    ) -> None:
        want, got = _same_outcome(
            lambda: self.expected.ingest(chunk, on_error=on_error),
            lambda: graph.ingest(chunk, on_error=on_error),
            where,
        )
        if _applied(want) != _applied(got):
            raise AssertionError(
                f"{where}: the in-memory graph applied {_applied(want)} events of the batch, "
                f"the graph on the store {_applied(got)} (are stored events seen?)"
            )

    def _write_both(self, graph: IdentityGraph, event: Event, where: str) -> None:
        _same_outcome(
            functools.partial(_write_one, self.expected, event),
            functools.partial(_write_one, graph, event),
            where,
        )

    # -- rules ----------------------------------------------------------------------------------

    # (hypothesis tries rules with fewer arguments first and most often: this one has one)
    @rule(data=st.data())
    def ingest_batch(self, data: st.DataObject) -> None:
        """A batch of a realistic stream, late and duplicate deliveries included."""
        assert self.actual is not None
        chunk = self._take(data)
        on_error = data.draw(_ON_ERROR, label="on_error")
        self._ingest(self.actual, chunk, on_error, "ingest")
        self.sent += chunk

    @rule(event=irst.events(blocked=True))
    def write_one(self, event: Event) -> None:
        """One write call (``track``, ``identify``, …), hostile and blocked values included.
        Its event id may clash with an earlier event's: both graphs must then refuse it."""
        assert self.actual is not None
        self._write_both(self.actual, event, "write")
        self.sent.append(event)

    @precondition(lambda self: len(self.expected) > 0)
    @rule(data=st.data(), operation=st.sampled_from(["merge", "split", "forget"]))
    def operate(self, data: st.DataObject, operation: str) -> None:
        """The operator's merge, split or forget of identifiers in the graph, dated among
        the stream's events (so often late: a replay) or after all of them; alone, or in a
        batch of other events."""
        assert self.actual is not None
        timestamp = data.draw(
            st.one_of(st.integers(min_value=0, max_value=80), st.just(2_000_000_000)),
            label="timestamp",
        )
        batch = data.draw(st.booleans(), label="in a batch")
        known = sorted(
            {(i.kind, i.value) for p in self.expected.profiles() for i in p.all_identifiers()}
        )
        pick = st.sampled_from(known).map(lambda kv: Identifier(*kv))
        event_id = f"op{next(self.operations)}"
        event: Event
        if operation == "merge":
            event = Merge(
                a=data.draw(pick), b=data.draw(pick), timestamp=timestamp, event_id=event_id
            )
        elif operation == "split":
            event = Split(identifier=data.draw(pick), timestamp=timestamp, event_id=event_id)
        else:
            event = Forget(identifier=data.draw(pick), timestamp=timestamp, event_id=event_id)
        if batch:
            # among a chunk of the stream, which may write to the same identifiers
            chunk = self._take(data)
            chunk.insert(data.draw(st.integers(min_value=0, max_value=len(chunk))), event)
            self._ingest(self.actual, chunk, "raise", f"ingest with a {operation}")
            self.sent += chunk
        else:
            self._write_both(self.actual, event, operation)
            self.sent.append(event)

    @precondition(lambda self: bool(self.sent))
    @rule(data=st.data(), single=st.booleans())
    def redeliver(self, data: st.DataObject, single: bool) -> None:
        """Events sent before, again: duplicates, recognized by their stored fingerprints."""
        actual = self.actual
        assert actual is not None
        again = data.draw(st.lists(st.sampled_from(self.sent), min_size=1, max_size=6))
        if single:
            for event in again:
                self._write_both(actual, event, "re-delivered write")
        else:
            self._ingest(actual, again, "raise", "re-delivery")

    @precondition(lambda self: bool(self.sent))
    @rule(data=st.data(), on_error=_ON_ERROR)
    def reuse_event_id(self, data: st.DataObject, on_error: OnError) -> None:
        """An event id sent before, with other content, in a batch: a conflict both graphs
        must see (``raise``: nothing of the batch applied; ``skip``: the rest applied)."""
        assert self.actual is not None
        old = data.draw(st.sampled_from(self.sent))
        clash = Track(
            event="conformance kit: conflicting reuse",
            anonymous_id="conformance-kit-clash",
            timestamp=1,
            event_id=old.event_id,
        )
        chunk = self._take(data)
        position = data.draw(st.integers(min_value=0, max_value=len(chunk)))
        chunk.insert(position, clash)
        self._ingest(self.actual, chunk, on_error, "ingest with a reused event id")
        if on_error == "skip":
            self.sent += [e for e in chunk if e is not clash]
        else:
            self.pending = [e for e in chunk if e is not clash] + self.pending

    @precondition(lambda self: self.crashing is not None)
    @rule(data=st.data(), on_error=_ON_ERROR)
    def crash_between_save_and_commit(self, data: st.DataObject, on_error: OnError) -> None:
        """A batch that fails after ``save``: the store must discard all of it."""
        crashing = self.crashing
        assert crashing is not None
        chunk = self._take(data)
        _, exc = _outcome(lambda: crashing.ingest(chunk, on_error=on_error))
        if exc is not None and not isinstance(exc, StorageError):
            raise AssertionError(
                f"a batch that failed inside the store raised {type(exc).__name__}, "
                f"not StorageError: {exc}"
            ) from exc
        # Nothing was applied: deliver the chunk again later.
        self.pending = chunk + self.pending

    @precondition(lambda self: self.second is not None)
    @rule(data=st.data(), on_error=_ON_ERROR)
    def interleave_handles(self, data: st.DataObject, on_error: OnError) -> None:
        """A batch through a second handle on the same data, between the first's batches:
        each handle reads what the other committed."""
        assert self.second is not None
        assert self.actual is not None
        chunk = self._take(data)
        self._ingest(self.second, chunk, on_error, "ingest through the second handle")
        self.sent += chunk
        _assert_same(self.expected, self.second, "read through the second handle")

    @precondition(lambda self: self.second is not None)
    @rule(data=st.data(), on_error=_ON_ERROR)
    def concurrent_batches(self, data: st.DataObject, on_error: OnError) -> None:
        """Two batches at once, from two threads, through the two handles: the state must
        be the state of applying them one after the other (SPEC §6)."""
        assert self.second is not None
        assert self.actual is not None
        first, second = self._take(data), self._take(data)
        failures: dict[int, BaseException] = {}

        def run(index: int, graph: IdentityGraph, chunk: list[Event]) -> None:
            try:
                graph.ingest(chunk, on_error=on_error)
            except BaseException as exc:  # compared below, in the main thread
                failures[index] = exc

        thread = threading.Thread(target=run, args=(1, self.second, second))
        thread.start()
        run(0, self.actual, first)
        thread.join()
        for index, chunk in enumerate((first, second)):
            _, want = _outcome(functools.partial(self.expected.ingest, chunk, on_error=on_error))
            got = failures.get(index)
            if type(want) is not type(got):
                raise AssertionError(
                    f"concurrent batch {index + 1} of 2: the in-memory graph {_describe(want)} "
                    f"but the graph on the store {_describe(got)}"
                ) from got
        self.sent += first + second

    @invariant()
    def same_state(self) -> None:
        if self.actual is not None:
            _assert_same(self.expected, self.actual, "after this step")


def run_conformance(
    factory: Callable[[], Store],
    *,
    reopen: Callable[[Store], Store] | None = None,
    max_examples: int | None = None,
    settings: Settings | None = None,
) -> None:
    """Check a store against the in-memory graph with a hypothesis state machine.

    ``factory()`` must return a new, empty store each time it is called (one per example):
    a class with a no-argument constructor will do (``run_conformance(MyStore)``); a store
    that needs a file or a server takes a closure that makes a fresh file or database. The
    kit closes every store it made.

    ``reopen(store)``, when given, returns a second handle on the same data as ``store``
    (e.g. a second connection to the same database file); the machine then also writes
    through it, between and *at the same time as* the first handle's batches (two threads).

    Every example opens an ``IdentityGraph`` on a new store and a plain ``IdentityGraph()``
    with the same (drawn) ``Rules`` and feeds both the same events: chunks of realistic
    streams (:func:`identityres.strategies.streams`: several devices per user, shared
    devices, resets, aliases, companies, traits, blocked and hostile values, late and
    duplicate deliveries), single write calls, re-deliveries, reused event ids, the
    operator's merges, splits and erasures, batches that crash between ``save`` and commit,
    and the second handle's batches. After every step the
    two must agree on everything a user can read: :func:`~identityres.testing.snapshot`
    (profiles, canonical ids, traits, refusals, companies), ``stats()`` and each identifier's
    ``profile()``.

    Raises :class:`AssertionError` naming the first difference found, after hypothesis has
    shrunk the steps leading to it (printed as a falsifying example).

    ``max_examples`` defaults to a fifth of the active hypothesis profile's (at least 10);
    ``settings`` replaces the kit's hypothesis settings altogether (the kit's: no deadline,
    ``stateful_step_count=10``, slow data generation allowed, first failure reported).
    """
    if not callable(factory):
        raise TypeError(f"factory={factory!r}: must be a callable returning a new store")
    if reopen is not None and not callable(reopen):
        raise TypeError(f"reopen={reopen!r}: must be a callable store -> store, or None")
    chosen = settings
    if chosen is None:
        default = Settings()  # the active profile
        chosen = Settings(
            max_examples=max(10, default.max_examples // 5),
            deadline=None,
            stateful_step_count=_STEPS,
            suppress_health_check=[
                *default.suppress_health_check,
                HealthCheck.too_slow,
                HealthCheck.data_too_large,
                HealthCheck.filter_too_much,
            ],
            report_multiple_bugs=False,
        )
    if max_examples is not None:
        chosen = Settings(chosen, max_examples=max_examples)
    machine = type(
        "StoreConformanceMachine",
        (_StoreMachine,),
        {
            "factory": staticmethod(factory),
            "reopen": None if reopen is None else staticmethod(reopen),
        },
    )
    # Typed in some hypothesis releases, not in others: call it through Any.
    runner: Any = run_state_machine_as_test
    runner(machine, settings=chosen)


# --- the plain pytest cases ------------------------------------------------------------------


class _Boom(Exception):
    """Raised by the kit inside a batch."""


def _node(
    ref: int,
    kind: str,
    value: str,
    first: tuple[float, str],
    last: float,
    component: int,
    profile: int,
    reset: tuple[float, str] | None = None,
    split: tuple[float, str] | None = None,
) -> NodeRow:
    return NodeRow(
        ref,
        kind,
        value,
        first[0],
        first[1],
        last,
        None if reset is None else reset[0],
        None if reset is None else reset[1],
        component,
        profile,
        None if split is None else split[0],
        None if split is None else split[1],
    )


def _first_changes() -> Changes:
    """Three components, all new (negative refs):

    * X: ``u1`` and ``a1`` joined by ``e1``; ``u2`` refused by ``e3`` (``u1`` already has a user
      id) — one link component, two profiles;
    * Y: ``a9``, reset by ``e4``, no links;
    * Z: ``x@example.com`` and ``a2`` joined by ``e5``.

    Traits and company rows come twice for some keys within the batch: the store merges them.
    """
    return Changes(
        nodes=(
            _node(-1, "user_id", "u1", (10.0, "e1"), 30.0, -1, -1),
            _node(-2, "anonymous_id", "a1", (10.0, "e1"), 20.0, -1, -1),
            _node(-3, "user_id", "u2", (30.0, "e3"), 30.0, -1, -3, split=(35.0, "e3s")),
            _node(-4, "anonymous_id", "a9", (40.0, "e4"), 40.0, -4, -4, reset=(40.0, "e4")),
            _node(-5, "email", "x@example.com", (50.0, "e5"), 50.0, -5, -5),
            _node(-6, "anonymous_id", "a2", (50.0, "e5"), 50.0, -5, -5),
        ),
        links=(
            LinkRow("e1", 10.0, -1, (-1, -2), etype="identify"),
            LinkRow("e4", 40.0, -4, (-4,), etype="reset"),
            LinkRow("e3", 30.0, -1, (-1, -3), ((1, "limit_exceeded", "user_id"),), "alias"),
            LinkRow("e5", 50.0, -5, (-5, -6), etype="identify"),
        ),
        traits=(
            TraitRow(-1, "plan", 10.0, "e1", "free", False),
            TraitRow(-1, "plan", 20.0, "e2", "pro", False),
            TraitRow(-1, "first_referrer", 10.0, "e1", "google", True),
            TraitRow(-1, "first_referrer", 20.0, "e2", "hn", True),
            TraitRow(-5, "name", 50.0, "e5", "Ada", False),
        ),
        company_links=(
            CompanyLinkRow(-1, "c1", 10.0, "e1"),
            CompanyLinkRow(-1, "c1", 25.0, "e2b"),
            CompanyLinkRow(-6, "c2", 50.0, "e5"),
        ),
        company_traits=(
            CompanyTraitRow("c1", "name", 10.0, "e1", "Acme"),
            CompanyTraitRow("c1", "name", 25.0, "e2b", "Acme Inc"),
            CompanyTraitRow("c2", "employees", 50.0, "e5", 12),
        ),
        events=(
            ("e1", b"\x01fp-e1"),
            ("e2", b"fp-e2"),
            ("e2b", b"fp-e2b"),
            ("e3", b"fp-e3"),
            ("e4", b"\x00fp-e4\xff"),
            ("e5", b"fp-e5"),
        ),
        blocked=(("user_id", "null", 2),),
    )


def _second_changes(ref: Mapping[str, int]) -> Changes:
    """A later batch on components X and Z (``ref``: value -> stored ref): a late event
    ``e0`` joins ``u2`` and ``a1`` before ``e1``, so the replay refuses ``e1`` instead; ``e6``
    merges Z into X; ``e7`` brings a new phone number (ref ``-1`` again: negative refs are
    local to one ``Changes``). Trait and company rows older, newer and tied with stored ones."""
    u1, a1, u2, email, a2 = (ref[v] for v in ("u1", "a1", "u2", "x@example.com", "a2"))
    return Changes(
        nodes=(
            _node(u1, "user_id", "u1", (10.0, "e1"), 30.0, u1, u1),
            _node(a1, "anonymous_id", "a1", (5.0, "e0"), 20.0, u1, u2),
            _node(u2, "user_id", "u2", (5.0, "e0"), 60.0, u1, u2, split=(35.0, "e3s")),
            _node(email, "email", "x@example.com", (50.0, "e5"), 60.0, u1, u2),
            _node(a2, "anonymous_id", "a2", (50.0, "e5"), 70.0, u1, u2),
            _node(-1, "phone", "+1 555 0100", (70.0, "e7"), 70.0, u1, u2),
        ),
        links=(
            LinkRow("e0", 5.0, u1, (u2, a1), etype="identify"),
            LinkRow("e1", 10.0, u1, (u1, a1), ((1, "limit_exceeded", "user_id"),), "identify"),
            LinkRow("e3", 30.0, u1, (u1, u2), ((1, "limit_exceeded", "user_id"),), "alias"),
            LinkRow("e5", 50.0, u1, (email, a2), etype="identify"),
            LinkRow("e6", 60.0, u1, (u2, email), etype="track"),
            LinkRow("e7", 70.0, u1, (-1, a2), etype="track"),
        ),
        traits=(
            TraitRow(u2, "plan", 5.0, "e0", "team", False),
            TraitRow(u1, "plan", 15.0, "e0b", "older: ignored", False),
            TraitRow(u1, "plan", 20.0, "e2z", "enterprise", False),  # same ts, greater id
            TraitRow(u1, "first_referrer", 10.0, "e0c", "docs", True),  # same ts, smaller id
            TraitRow(u1, "first_referrer", 12.0, "e0d", "newer: ignored", True),
            TraitRow(-1, "verified", 70.0, "e7", True, False),
        ),
        company_links=(
            CompanyLinkRow(u1, "c1", 12.0, "e0d"),  # older than the stored (25, e2b)
            CompanyLinkRow(-1, "c1", 70.0, "e7"),
        ),
        company_traits=(
            CompanyTraitRow("c1", "name", 30.0, "e6", "Acme Corp"),
            CompanyTraitRow("c2", "employees", 40.0, "e0e", 7),  # older: ignored
        ),
        events=(("e0", b"fp-e0"), ("e6", b"fp-e6"), ("e7", b"fp-e7")),
        blocked=(("user_id", "null", 1), ("email", "", 3)),
    )


_VALUES = {
    "u1": ("user_id", "u1"),
    "a1": ("anonymous_id", "a1"),
    "u2": ("user_id", "u2"),
    "a9": ("anonymous_id", "a9"),
    "x@example.com": ("email", "x@example.com"),
    "a2": ("anonymous_id", "a2"),
    "+1 555 0100": ("phone", "+1 555 0100"),
}

#: Identifier values, event ids, trait keys and values, company ids and fingerprints that
#: break stores which build queries from strings or mangle text or bytes.
_HOSTILE = (
    "'",
    '"',
    "O'Brien",
    "'; DROP TABLE nodes; --",
    "' OR '1'='1",
    "a;b",
    "SELECT * FROM links",
    "NULL",
    "%_%",
    "\\",
    "a\x00b",
    "\u202eevil",
    "é" * 200,
    "\U0001f600 \U0001f3f3\ufe0f\u200d\U0001f308 \U0001d518\U0001d52b",
    "x" * 399,
)


def _mapped(row: Any, ref: Mapping[int, int]) -> Any:
    """``row`` with its refs translated by ``ref`` (refs not in it are kept)."""

    def m(r: int) -> int:
        return ref.get(r, r)

    if isinstance(row, NodeRow):
        return attrs.evolve(row, ref=m(row.ref), component=m(row.component), profile=m(row.profile))
    if isinstance(row, LinkRow):
        return attrs.evolve(
            row, component=m(row.component), members=tuple(m(x) for x in row.members)
        )
    if isinstance(row, (TraitRow, CompanyLinkRow)):
        return attrs.evolve(row, node=m(row.node))
    return row


def _same_value(a: Any, b: Any) -> bool:
    """Equal and of the same types all the way down (``True`` is not ``1``, ``1.0`` not
    ``1``): a trait value must come back as it went in."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same_value(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_same_value(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def _same_row(got: Any, want: Any) -> bool:
    """Equal rows, with trait values of the same types (``_same_value``)."""
    if type(got) is not type(want) or got != want:
        return False
    return not hasattr(want, "value") or _same_value(got.value, want.value)


def _check_rows(what: str, got: Iterable[Any], want: Iterable[Any]) -> None:
    """The same rows, in any order."""
    got_l, want_l = sorted(got, key=repr), sorted(want, key=repr)
    if len(got_l) != len(want_l) or not all(map(_same_row, got_l, want_l)):
        lines = [f"{what} differ:", "  expected:"]
        lines += [f"    {w!r}" for w in want_l]
        lines.append("  actual:")
        lines += [f"    {g!r}" for g in got_l]
        raise AssertionError("\n".join(lines))


def _require(condition: bool, message: str) -> None:
    # Not ``assert``: the kit must fail under ``python -O`` too, and pytest rewrites asserts
    # only in test modules.
    if not condition:
        raise AssertionError(message)


def _some(value: T | None, message: str) -> T:
    if value is None:
        raise AssertionError(message)
    return value


def _check(what: str, got: Any, want: Any) -> None:
    if got != want:
        raise AssertionError(f"{what}:\n  expected: {want!r}\n  actual:   {got!r}")


def _skip(reason: str) -> NoReturn:
    import pytest  # only here: the kit's other parts work without pytest

    pytest.skip(reason)
    raise AssertionError("unreachable")  # pragma: no cover - pytest.skip raises


class StoreConformance:
    """The conformance tests of a store, for pytest: subclass it in a test module.

    Say how to make the store, either with a method::

        class TestMyStore(StoreConformance):
            def make_store(self, tmp_path):
                return MyStore(tmp_path / "graph.db")

            def reopen(self, store, tmp_path):  # optional: a second handle, same data
                return MyStore(tmp_path / "graph.db")

    or, for a store that needs no directory, with class arguments::

        class TestMyStore(StoreConformance, factory=MyStore, reopen=MyStore.reopen): ...

    ``tmp_path`` is a new, empty directory for each store the kit makes. The tests that need
    ``reopen`` skip, saying so, when it is not given. The subclass inherits one test per
    promise of the storage protocol (rows written by hand, with known right answers), a few
    hand-written event sequences run through ``IdentityGraph(store=...)``, and the state
    machine of :func:`run_conformance` (``max_examples`` sets its size; ``None``: from the
    active hypothesis profile).
    """

    #: examples of the state-machine test (``None``: :func:`run_conformance`'s default)
    max_examples: int | None = None
    #: why the store gives no second handle (shown when the multi-handle cases skip)
    no_reopen_reason: str | None = None
    #: the directory each store was made in, by ``id(store)``, for ``reopen``
    _dirs: dict[int, Path]
    _made: Iterator[int]

    def __init_subclass__(
        cls,
        *,
        factory: Callable[[], Store] | None = None,
        reopen: Callable[[Store], Store] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init_subclass__(**kwargs)
        if factory is not None:
            make = factory

            def make_store(self: StoreConformance, tmp_path: Path) -> Store:
                return make()

            cls.make_store = make_store  # type: ignore[method-assign]
        if reopen is not None:
            again = reopen

            def reopen_store(self: StoreConformance, store: Store, tmp_path: Path) -> Store:
                return again(store)

            cls.reopen = reopen_store  # type: ignore[method-assign]

    # -- what a subclass provides -------------------------------------------------------------

    def make_store(self, tmp_path: Path) -> Store:
        """A new, empty store, keeping any files in ``tmp_path``."""
        raise NotImplementedError(
            f"{type(self).__name__}: define make_store(self, tmp_path) or pass factory="
        )

    def reopen(self, store: Store, tmp_path: Path) -> Store:
        """A second handle on the data of ``store`` (made in ``tmp_path``)."""
        _skip(
            self.no_reopen_reason
            or f"{type(self).__name__} gives no second handle on a store (define "
            "reopen(self, store, tmp_path) or pass reopen=); multi-handle cases not run"
        )

    # -- plumbing -------------------------------------------------------------------------------

    def _has_reopen(self) -> bool:
        return type(self).reopen is not StoreConformance.reopen

    def _new_store(
        self, tmp_path: Path, rules: Rules | None = None, *, attach: bool = True
    ) -> Store:
        dirs: dict[int, Path] | None = getattr(self, "_dirs", None)
        if dirs is None:
            # (pytest makes a new instance per test and allows no __init__)
            dirs = self._dirs = {}
            self._made = itertools.count()
        where = tmp_path / f"store-{next(self._made)}"
        where.mkdir()
        store = self.make_store(where)
        if not isinstance(store, Store):
            raise AssertionError(
                f"make_store() returned {store!r}, which does not implement "
                "identityres.storage.Store (a runtime-checkable Protocol: every method needed)"
            )
        dirs[id(store)] = where
        if attach:
            _attach(store, rules or Rules())
        return store

    def _second_handle(
        self, store: Store, rules: Rules | None = None, *, attach: bool = True
    ) -> Store:
        other = self.reopen(store, self._dirs[id(store)])
        if attach:
            _attach(other, rules or Rules())
        return other

    @contextlib.contextmanager
    def _store(self, tmp_path: Path) -> Iterator[Store]:
        store = self._new_store(tmp_path)
        try:
            yield store
        finally:
            store.close()

    @staticmethod
    def _save(store: Store, changes: Changes) -> None:
        with store.batch() as batch:
            batch.save(changes)

    @staticmethod
    def _refs(store: Store) -> dict[str, int]:
        """Stored ref of each identifier of the hand-written rows, by value."""
        refs: dict[str, int] = {}
        for name, (kind, value) in _VALUES.items():
            row = store.node(kind, value)
            if row is not None:
                refs[name] = row.ref
        return refs

    def _saved_world(self, store: Store, *, both: bool = False) -> dict[str, int]:
        """Save the first (and with ``both`` the second) hand-written batch; value -> ref."""
        self._save(store, _first_changes())
        refs = self._refs(store)
        if both:
            self._save(store, _second_changes(refs))
            refs = self._refs(store)
        return refs

    # -- the protocol ---------------------------------------------------------------------------

    def test_store_and_batch_implement_the_protocol(self, tmp_path: Path) -> None:
        with self._store(tmp_path) as store:
            _require(isinstance(store, Store), "isinstance(store, Store)")
            with store.batch() as batch:
                _require(isinstance(batch, Batch), f"{batch!r} does not implement Batch")

    def test_empty_store_reads_nothing(self, tmp_path: Path) -> None:
        with self._store(tmp_path) as store:
            _check("node() of an empty store", store.node("user_id", "u1"), None)
            _check("nodes_by_ref() of an empty store", dict(store.nodes_by_ref([0, 1])), {})
            _check("iter_profiles() of an empty store", list(store.iter_profiles()), [])
            _check("iter_refused_links() of an empty store", list(store.iter_refused_links()), [])
            _check("company_ids() of an empty store", store.company_ids(), [])
            _check("company_rows() of an empty store", store.company_rows("c1"), None)
            counts = dict(store.counts())
            counts["blocked"] = dict(counts["blocked"])
            _check(
                "counts() of an empty store",
                counts,
                {
                    "events": 0,
                    "identifiers": 0,
                    "profiles": 0,
                    "identified_profiles": 0,
                    "blocked": {},
                },
            )
            with store.batch() as batch:
                _check("seen() in an empty store", dict(batch.seen(["e1"])), {})
                _check(
                    "load() in an empty store",
                    batch.load([("user_id", "u1")]),
                    ComponentRows((), ()),
                )

    def test_batch_commits_on_normal_exit(self, tmp_path: Path) -> None:
        with self._store(tmp_path) as store:
            self._save(store, _first_changes())
            _require(store.node("user_id", "u1") is not None, "saved node missing after commit")
            _check("counts()['events'] after one batch", store.counts()["events"], 6)

    def test_exception_in_batch_discards_everything(self, tmp_path: Path) -> None:
        with self._store(tmp_path) as store:
            boom = _Boom("raised by the conformance kit inside a batch, after save")
            try:
                with store.batch() as batch:
                    batch.seen(["e1"])
                    batch.load([("user_id", "u1")])
                    batch.save(_first_changes())
                    raise boom
            except _Boom as exc:
                _require(exc is boom, "the batch replaced the exception raised inside it")
            else:
                raise AssertionError("the batch swallowed the exception raised inside it")
            _check("node() after a failed batch", store.node("user_id", "u1"), None)
            _check("iter_profiles() after a failed batch", list(store.iter_profiles()), [])
            _check("company_ids() after a failed batch", store.company_ids(), [])
            _check("counts()['events'] after a failed batch", store.counts()["events"], 0)
            _check("counts()['blocked'] after a failed batch", dict(store.counts()["blocked"]), {})
            with store.batch() as batch:
                _check("seen() after a failed batch", dict(batch.seen(["e1", "e4"])), {})
            # The store is still usable, and the next batch starts from nothing.
            self._save(store, _first_changes())
            _check("identifiers after a failed then a good batch", store.counts()["identifiers"], 6)

    def test_exception_in_second_batch_keeps_the_first(self, tmp_path: Path) -> None:
        with self._store(tmp_path) as store:
            refs = self._saved_world(store)
            before = sorted(map(repr, store.iter_profiles()))
            with contextlib.suppress(_Boom), store.batch() as batch:
                batch.load([("user_id", "u2"), ("email", "x@example.com")])
                batch.save(_second_changes(refs))
                raise _Boom
            _check(
                "profiles after a failed second batch",
                sorted(map(repr, store.iter_profiles())),
                before,
            )
            _check("node() after a failed second batch", store.node("phone", "+1 555 0100"), None)

    def test_batch_without_save_changes_nothing(self, tmp_path: Path) -> None:
        with self._store(tmp_path) as store:
            with store.batch() as batch:
                batch.seen(["e1"])
                batch.load([("user_id", "u1")])
            _check(
                "counts()['identifiers'] after a batch with no save",
                store.counts()["identifiers"],
                0,
            )

    def test_save_maps_new_refs_consistently(self, tmp_path: Path) -> None:
        with self._store(tmp_path) as store:
            changes = _first_changes()
            refs = self._saved_world(store)
            ref = {row.ref: refs[row.value] for row in changes.nodes}  # -n -> stored ref
            stored = list(ref.values())
            _require(all(r >= 0 for r in stored), f"stored refs must be >= 0: {ref!r}")
            _require(len(set(stored)) == len(stored), f"two nodes got one ref: {ref!r}")
            by_ref = store.nodes_by_ref(stored)
            _check_rows("node rows", by_ref.values(), [_mapped(n, ref) for n in changes.nodes])
            for r, row in by_ref.items():
                _check(f"nodes_by_ref()[{r}].ref", row.ref, r)
            with store.batch() as batch:
                rows = batch.load([("user_id", "u1"), ("anonymous_id", "a2")])
            _check_rows(
                "link rows",
                rows.links,
                [_mapped(link, ref) for link in changes.links if link.event_id != "e4"],
            )
            traits = [t for p in store.iter_profiles() for t in p.traits]
            _require(
                {t.node for t in traits} == {ref[-1], ref[-5]},
                f"trait rows on refs {sorted({t.node for t in traits})}, expected on "
                f"{sorted({ref[-1], ref[-5]})} (the refs given to -1 and -5)",
            )
            found = store.company_rows("c2")
            _require(
                found is not None and sorted(found[1]) == [ref[-6]],
                f"company c2's members: {found!r}, expected [{ref[-6]}] (the ref given to -6)",
            )
            # A second batch's negative refs are its own: -1 is a new node again.
            refs2 = self._saved_world_second(store, refs)
            phone = refs2["+1 555 0100"]
            _require(phone >= 0 and phone not in stored, f"new node got ref {phone}, in {stored}")
            (profile,) = [p for p in store.iter_profiles() if any(n.ref == phone for n in p.nodes)]
            _require(
                any(t.node == phone and t.key == "verified" for t in profile.traits),
                f"the second batch's trait on ref -1 is not on {phone}: {profile.traits!r}",
            )
            found = store.company_rows("c1")
            _require(
                found is not None and sorted(found[1]) == sorted([ref[-1], phone]),
                f"company c1's members: {found!r}, expected {sorted([ref[-1], phone])}",
            )

    def test_load_returns_whole_components(self, tmp_path: Path) -> None:
        with self._store(tmp_path) as store:
            changes = _first_changes()
            refs = self._saved_world(store)
            ref = {row.ref: refs[row.value] for row in changes.nodes}
            nodes = {n.value: _mapped(n, ref) for n in changes.nodes}
            links = {link.event_id: _mapped(link, ref) for link in changes.links}
            x = ([nodes[v] for v in ("u1", "a1", "u2")], [links["e1"], links["e3"]])
            y = ([nodes["a9"]], [links["e4"]])
            z = ([nodes[v] for v in ("x@example.com", "a2")], [links["e5"]])
            cases: list[tuple[list[tuple[str, str]], list[tuple[list[Any], list[Any]]]]] = [
                # u2 is in X by a refused link only: the component, not the profile
                ([("user_id", "u2")], [x]),
                ([("anonymous_id", "a1")], [x]),
                ([("anonymous_id", "a9")], [y]),
                ([("anonymous_id", "a2"), ("user_id", "u1"), ("anonymous_id", "a1")], [x, z]),
                ([("user_id", "nobody"), ("anonymous_id", "a9")], [y]),
                ([("user_id", "nobody"), ("no_such_kind", "u1"), ("email", "u1")], []),
                ([], []),
            ]
            for identifiers, components in cases:
                with store.batch() as batch:
                    rows = batch.load(identifiers)
                want_nodes = [n for c in components for n in c[0]]
                want_links = [link for c in components for link in c[1]]
                _check_rows(f"load({identifiers!r}).nodes", rows.nodes, want_nodes)
                _check_rows(f"load({identifiers!r}).links", rows.links, want_links)

    def test_load_after_a_merge_returns_the_merged_component(self, tmp_path: Path) -> None:
        with self._store(tmp_path) as store:
            refs = self._saved_world(store, both=True)
            with store.batch() as batch:
                rows = batch.load([("anonymous_id", "a2")])
            _check(
                "identifiers loaded with a2 after e6 merged its component into u1's",
                sorted(n.value for n in rows.nodes),
                sorted(["u1", "a1", "u2", "x@example.com", "a2", "+1 555 0100"]),
            )
            _check(
                "event ids of the links loaded with a2",
                sorted(link.event_id for link in rows.links),
                ["e0", "e1", "e3", "e5", "e6", "e7"],
            )
            root = refs["u1"]
            for n in rows.nodes:
                _check(f"component of {n.value} after the merge", n.component, root)
            for link in rows.links:
                _check(f"component of link {link.event_id} after the merge", link.component, root)

    def test_saved_rows_replace_rows_with_the_same_ref_or_event_id(self, tmp_path: Path) -> None:
        with self._store(tmp_path) as store:
            refs = self._saved_world(store, both=True)
            u1, a1, u2 = refs["u1"], refs["a1"], refs["u2"]
            a1_row = store.node("anonymous_id", "a1")
            _check(
                "a1's row after the second batch",
                a1_row,
                _node(a1, "anonymous_id", "a1", (5.0, "e0"), 20.0, u1, u2),
            )
            refused = {link.event_id: link for link in store.iter_refused_links()}
            _check("event ids of the refused links", sorted(refused), ["e1", "e3"])
            _check(
                "refusals of e1 (now refused: replayed)",
                refused["e1"].refused,
                ((1, "limit_exceeded", "user_id"),),
            )
            _check("members of e1", refused["e1"].members, (u1, a1))
            profiles = {tuple(sorted(n.value for n in p.nodes)) for p in store.iter_profiles()}
            _check(
                "profiles after the second batch",
                profiles,
                {
                    ("u1",),
                    ("a9",),
                    tuple(sorted(["+1 555 0100", "a1", "a2", "u2", "x@example.com"])),
                },
            )
            # A replay that lifts a refusal saves the link again without it: gone from reads.
            with store.batch() as batch:
                rows = batch.load([("user_id", "u1")])
                batch.save(
                    Changes(
                        nodes=rows.nodes,
                        links=tuple(
                            attrs.evolve(link, refused=()) if link.event_id == "e3" else link
                            for link in rows.links
                        ),
                    )
                )
            _check(
                "refused links once e3's refusal is lifted",
                sorted(link.event_id for link in store.iter_refused_links()),
                ["e1"],
            )

    def test_save_replaces_the_links_of_loaded_components(self, tmp_path: Path) -> None:
        """A save rewrites the components it loaded: a link row of such a component that is
        not among the saved links is gone (the engine drops an erased identifier's own reset
        or split from a log so); other components keep theirs."""
        with self._store(tmp_path) as store:
            self._saved_world(store)
            with store.batch() as batch:
                rows = batch.load([("user_id", "u1")])
                kept = tuple(link for link in rows.links if link.event_id != "e3")
                batch.save(Changes(nodes=rows.nodes, links=kept))
            with store.batch() as batch:
                rows = batch.load([("user_id", "u1"), ("email", "x@example.com")])
            _check(
                "event ids of the links after a save without e3",
                sorted(link.event_id for link in rows.links),
                ["e1", "e5"],
            )
            _check("iter_refused_links() after e3 went", list(store.iter_refused_links()), [])

    def test_deleted_nodes_go_with_their_traits_and_company_links(self, tmp_path: Path) -> None:
        """``Changes.deleted`` (an erasure, ``forget``): the node rows, their traits and
        company links go; the company stays, with its traits and no members."""
        with self._store(tmp_path) as store:
            refs = self._saved_world(store)
            email, a2 = refs["x@example.com"], refs["a2"]
            node = _node(email, "email", "x@example.com", (50.0, "e5"), 50.0, email, email)
            links = (
                LinkRow("e5", 50.0, email, (email,), etype="identify"),
                LinkRow("f1", 60.0, email, (), etype="forget", erased_kind="anonymous_id"),
            )
            with store.batch() as batch:
                batch.load([("anonymous_id", "a2")])
                batch.save(
                    Changes(
                        nodes=(node,),
                        links=links,
                        events=(("f1", b"fp-f1"),),
                        deleted=(a2,),
                        suppressed=(b"\x00keyed hash of a2\xff",),
                    )
                )
            _check("node() of the erased identifier", store.node("anonymous_id", "a2"), None)
            _check(
                "nodes_by_ref() of the erased ref",
                dict(store.nodes_by_ref([a2, email])),
                {email: node},
            )
            rows = store.profile_rows(email)
            _check_rows("the e-mail's profile's nodes after the erasure", rows.nodes, [node])
            _check_rows(
                "the e-mail's profile's traits after the erasure",
                rows.traits,
                [TraitRow(email, "name", 50.0, "e5", "Ada", False)],
            )
            _check_rows("the e-mail's profile's company links", rows.company_links, [])
            _require(
                all(n.ref != a2 for p in store.iter_profiles() for n in p.nodes),
                "iter_profiles() still shows the erased node",
            )
            _check(
                "company_ids() after erasing c2's only member", store.company_ids(), ["c1", "c2"]
            )
            found = _some(store.company_rows("c2"), "company_rows('c2') is None after erasure")
            _check_rows(
                "c2's trait rows after the erasure",
                found[0],
                [CompanyTraitRow("c2", "employees", 50.0, "e5", 12)],
            )
            _check("c2's member refs after the erasure", list(found[1]), [])
            counts = dict(store.counts())
            counts["blocked"] = dict(counts["blocked"])
            _check(
                "counts() after the erasure",
                counts,
                {
                    "events": 7,
                    "identifiers": 5,
                    "profiles": 4,
                    "identified_profiles": 2,
                    "blocked": {("user_id", "null"): 2},
                },
            )
            with store.batch() as batch:
                loaded = batch.load([("email", "x@example.com")])
            _check_rows("the e-mail's component after the erasure", loaded.nodes, [node])
            _check_rows("the e-mail's component's links after the erasure", loaded.links, links)

    def test_erasure_key_and_suppressed_hashes(self, tmp_path: Path) -> None:
        """``erasure_key()``: a secret kept with the data, the same from every handle;
        ``Batch.suppressed(hashes)``: those of ``hashes`` saved in ``Changes.suppressed``."""
        with self._store(tmp_path) as store:
            key = store.erasure_key()
            _require(
                isinstance(key, bytes) and len(key) >= 16,
                f"erasure_key() must be bytes, 16 or more: {key!r}",
            )
            _check("erasure_key() called again", store.erasure_key(), key)
            h1, h2 = b"\x00h1" + bytes(29), b"h2'\xff" * 8
            self._save(store, Changes(suppressed=(h1,)))
            with store.batch() as batch:
                _check(
                    "suppressed([h1, h2]) after saving h1", set(batch.suppressed([h1, h2])), {h1}
                )
                _check("suppressed([])", set(batch.suppressed([])), set())
            self._save(store, Changes(suppressed=(h1, h2)))
            with store.batch() as batch:
                _check(
                    "suppressed([h1, h2]) after saving both",
                    set(batch.suppressed([h1, h2])),
                    {h1, h2},
                )
            _check("erasure_key() after writes", store.erasure_key(), key)
            if self._has_reopen():
                other = self._second_handle(store)
                try:
                    _check("erasure_key() through a second handle", other.erasure_key(), key)
                finally:
                    other.close()

    def test_read_components_is_load_without_a_batch(self, tmp_path: Path) -> None:
        """``read_components``: what ``load`` returns, outside a batch, committed only."""
        with self._store(tmp_path) as store:
            refs = self._saved_world(store)
            asked = [("anonymous_id", "a2"), ("user_id", "u2"), ("user_id", "nobody")]
            with store.batch() as batch:
                loaded = batch.load(asked)
            read = store.read_components(asked)
            _check_rows("read_components().nodes", read.nodes, loaded.nodes)
            _check_rows("read_components().links", read.links, loaded.links)
            _check("read_components([])", store.read_components([]), ComponentRows((), ()))
            with store.batch() as batch:
                batch.load([("user_id", "u2"), ("email", "x@example.com")])
                batch.save(_second_changes(refs))
                _check_rows(
                    "read_components() while a batch is not yet committed",
                    store.read_components(asked).nodes,
                    loaded.nodes,
                )
            _require(
                any(n.value == "+1 555 0100" for n in store.read_components(asked).nodes),
                "read_components() after commit misses the new phone number",
            )

    def test_seen_returns_stored_fingerprints_of_stored_ids_only(self, tmp_path: Path) -> None:
        with self._store(tmp_path) as store:
            self._saved_world(store)
            with store.batch() as batch:
                _check(
                    "seen(['e1', 'e4', 'e9'])",
                    dict(batch.seen(["e1", "e4", "e9"])),
                    {"e1": b"\x01fp-e1", "e4": b"\x00fp-e4\xff"},
                )
                _check("seen([])", dict(batch.seen([])), {})
                _check("seen(['E1', 'e1 '])", dict(batch.seen(["E1", "e1 "])), {})
                got = batch.seen(["e1"])
                _require(
                    all(isinstance(v, bytes) for v in got.values()),
                    f"fingerprints must come back as bytes: {got!r}",
                )

    def test_fingerprints_written_by_the_graph_are_seen_by_batches(self, tmp_path: Path) -> None:
        """What the graph stores for an event is the fingerprint ``seen`` gives back (bytes,
        the same in every process): a second graph writing the same store through batches
        recognizes the event as a duplicate, and its reuse with other content as a
        conflict."""
        with self._store(tmp_path) as store:
            event = Identify(user_id="u1", anonymous_id="a1", timestamp=1, event_id="e1")
            IdentityGraph(store=store).ingest([event])
            with store.batch() as batch:
                got = dict(batch.seen(["e1"]))
            _require(
                set(got) == {"e1"} and isinstance(got["e1"], bytes),
                f"seen(['e1']) after the graph wrote e1: {got!r}, expected bytes",
            )
            other = IdentityGraph(store=_ProxyStore(store))
            report = other.ingest([event], on_error="skip")
            _check(
                "a second graph's (duplicates, errors) for the same event",
                (report.duplicates, [str(e.error) for e in report.errors]),
                (1, []),
            )
            clash = Track(event="other content", anonymous_id="a9", timestamp=1, event_id="e1")
            report = other.ingest([clash], on_error="skip")
            _check(
                "a second graph's error fields for e1 with other content",
                [e.field for e in report.errors],
                ["event_id"],
            )

    def test_traits_keep_newest_regular_and_oldest_set_once(self, tmp_path: Path) -> None:
        with self._store(tmp_path) as store:
            refs = self._saved_world(store)
            u1 = refs["u1"]
            (p,) = [p for p in store.iter_profiles() if any(n.ref == u1 for n in p.nodes)]
            _check_rows(
                "u1's profile's trait rows after one batch",
                p.traits,
                [
                    TraitRow(u1, "plan", 20.0, "e2", "pro", False),
                    TraitRow(u1, "first_referrer", 10.0, "e1", "google", True),
                ],
            )
            refs = self._saved_world_second(store, refs)
            u1, u2, phone, email = (
                refs["u1"],
                refs["u2"],
                refs["+1 555 0100"],
                refs["x@example.com"],
            )
            _check_rows(
                "u1's profile's trait rows after two batches",
                store.profile_rows(u1).traits,
                [
                    TraitRow(u1, "plan", 20.0, "e2z", "enterprise", False),
                    TraitRow(u1, "first_referrer", 10.0, "e0c", "docs", True),
                ],
            )
            _check_rows(
                "u2's profile's trait rows after two batches",
                store.profile_rows(u2).traits,
                [
                    TraitRow(u2, "plan", 5.0, "e0", "team", False),
                    TraitRow(email, "name", 50.0, "e5", "Ada", False),
                    TraitRow(phone, "verified", 70.0, "e7", True, False),
                ],
            )

    def _saved_world_second(self, store: Store, refs: dict[str, int]) -> dict[str, int]:
        self._save(store, _second_changes(refs))
        return self._refs(store)

    def test_company_rows_keep_newest_link_and_traits(self, tmp_path: Path) -> None:
        with self._store(tmp_path) as store:
            refs = self._saved_world(store)
            u1, a2 = refs["u1"], refs["a2"]
            _check_rows(
                "u1's company links",
                store.profile_rows(u1).company_links,
                [CompanyLinkRow(u1, "c1", 25.0, "e2b")],
            )
            _check("company_ids()", store.company_ids(), ["c1", "c2"])
            found = _some(store.company_rows("c1"), "company_rows('c1') is None")
            _check_rows(
                "c1's trait rows",
                found[0],
                [CompanyTraitRow("c1", "name", 25.0, "e2b", "Acme Inc")],
            )
            _check("c1's member refs", sorted(found[1]), [u1])
            found = _some(store.company_rows("c2"), "company_rows('c2') is None")
            _check_rows(
                "c2's trait rows", found[0], [CompanyTraitRow("c2", "employees", 50.0, "e5", 12)]
            )
            _check("c2's member refs", sorted(found[1]), [a2])
            _check("company_rows('c3')", store.company_rows("c3"), None)
            refs = self._saved_world_second(store, refs)
            phone = refs["+1 555 0100"]
            _check_rows(
                "u1's company links after two batches",
                store.profile_rows(refs["u1"]).company_links,
                [CompanyLinkRow(u1, "c1", 25.0, "e2b")],
            )
            _check_rows(
                "u2's profile's company links after two batches",
                store.profile_rows(refs["u2"]).company_links,
                [CompanyLinkRow(a2, "c2", 50.0, "e5"), CompanyLinkRow(phone, "c1", 70.0, "e7")],
            )
            found = _some(store.company_rows("c1"), "company_rows('c1') is None")
            _check_rows(
                "c1's trait rows after two batches",
                found[0],
                [CompanyTraitRow("c1", "name", 30.0, "e6", "Acme Corp")],
            )
            _check("c1's member refs after two batches", sorted(found[1]), sorted([u1, phone]))
            found = _some(store.company_rows("c2"), "company_rows('c2') is None")
            _check_rows(
                "c2's trait rows after two batches",
                found[0],
                [CompanyTraitRow("c2", "employees", 50.0, "e5", 12)],
            )

    def test_a_named_company_exists_without_members(self, tmp_path: Path) -> None:
        """A company exists once a batch names it (``Changes.companies``), with or without
        traits, even when no node links to it (its only member was erased)."""
        with self._store(tmp_path) as store:
            self._save(
                store,
                Changes(
                    companies=("c8", "c9"),
                    company_traits=(CompanyTraitRow("c9", "plan", 1.0, "e9", "team"),),
                    events=(("e9", b"fp-e9"),),
                ),
            )
            _check("company_ids() of named companies", store.company_ids(), ["c8", "c9"])
            _check("company_rows('c8')", store.company_rows("c8"), ([], []))
            found = _some(store.company_rows("c9"), "company_rows('c9') is None")
            _check_rows(
                "c9's trait rows", found[0], [CompanyTraitRow("c9", "plan", 1.0, "e9", "team")]
            )
            _check("c9's member refs", list(found[1]), [])

    def test_blocked_counts_add_up(self, tmp_path: Path) -> None:
        with self._store(tmp_path) as store:
            self._saved_world(store, both=True)
            _check(
                "counts()['blocked'] after two batches",
                dict(store.counts()["blocked"]),
                {("user_id", "null"): 3, ("email", ""): 3},
            )

    def test_reads_agree_with_what_was_saved(self, tmp_path: Path) -> None:
        with self._store(tmp_path) as store:
            changes = _first_changes()
            refs = self._saved_world(store)
            ref = {row.ref: refs[row.value] for row in changes.nodes}
            for row in changes.nodes:
                _check(
                    f"node({row.kind!r}, {row.value!r})",
                    store.node(row.kind, row.value),
                    _mapped(row, ref),
                )
            _check("node() of an unknown value", store.node("user_id", "a1"), None)
            _check("node() of an unknown kind", store.node("no_such_kind", "u1"), None)
            asked = [*ref.values(), 10**12, -1]
            _check(
                "nodes_by_ref() keys (unknown refs left out)",
                sorted(store.nodes_by_ref(asked)),
                sorted(ref.values()),
            )
            profiles = list(store.iter_profiles())
            _check("number of profiles from iter_profiles()", len(profiles), 4)
            for p in profiles:
                roots = {n.profile for n in p.nodes}
                _require(len(roots) == 1, f"iter_profiles() mixed profiles {roots}: {p!r}")
                (root,) = roots
                _check_rows(f"profile_rows({root}).nodes", store.profile_rows(root).nodes, p.nodes)
                _check_rows(
                    f"profile_rows({root}).traits", store.profile_rows(root).traits, p.traits
                )
                _check_rows(
                    f"profile_rows({root}).company_links",
                    store.profile_rows(root).company_links,
                    p.company_links,
                )
            _check_rows(
                "nodes of all profiles",
                [n for p in profiles for n in p.nodes],
                [_mapped(n, ref) for n in changes.nodes],
            )
            _check_rows(
                "iter_refused_links()",
                store.iter_refused_links(),
                [_mapped(link, ref) for link in changes.links if link.refused],
            )
            counts = dict(store.counts())
            counts["blocked"] = dict(counts["blocked"])
            _check(
                "counts()",
                counts,
                {
                    "events": 6,
                    "identifiers": 6,
                    "profiles": 4,
                    "identified_profiles": 2,
                    "blocked": {("user_id", "null"): 2},
                },
            )

    def test_hostile_values_round_trip(self, tmp_path: Path) -> None:
        with self._store(tmp_path) as store:
            n = len(_HOSTILE)
            kinds = ["user_id", "anonymous_id", "email", "phone", "api_key"]
            nodes = tuple(
                _node(-(i + 1), kinds[i % 5], v, (float(i), v), float(i), -(i + 1), -(i + 1))
                for i, v in enumerate(_HOSTILE)
            )
            trait_values: list[Any] = [
                None,
                True,
                False,
                0,
                -1,
                2**63,
                2**70,
                1.5,
                0.1 + 0.2,
                1e300,
                "",
                [1, "x", None, [True]],
                {"nested": {"list": [1.25, False], "'": "\x00"}},
                "😀" * 100,
            ]
            traits = tuple(
                TraitRow(-(i % n + 1), k, 1.0, "t", value, i % 2 == 0)
                for i, (k, value) in enumerate(zip(_HOSTILE, itertools.cycle(trait_values)))
            ) + tuple(
                TraitRow(-1, f"value {i}", 1.0, "t", value, False)
                for i, value in enumerate(trait_values)
            )
            changes = Changes(
                nodes=nodes,
                traits=traits,
                company_links=tuple(CompanyLinkRow(-1, v, 2.0, v) for v in _HOSTILE),
                company_traits=tuple(CompanyTraitRow(v, v, 2.0, v, v + "!") for v in _HOSTILE),
                events=tuple((v, v.encode("utf-8") + b"\x00\xff") for v in _HOSTILE),
                blocked=tuple(("user_id", v, 1) for v in _HOSTILE),
            )
            self._save(store, changes)
            ref = {}
            for row in nodes:
                got = _some(
                    store.node(row.kind, row.value), f"node({row.kind!r}, {row.value!r}) is None"
                )
                ref[row.ref] = got.ref
            for row in nodes:
                _check(
                    f"node({row.kind!r}, {row.value!r})",
                    store.node(row.kind, row.value),
                    _mapped(row, ref),
                )
            _check_rows(
                "trait rows of hostile keys and values",
                [t for p in store.iter_profiles() for t in p.traits],
                [_mapped(t, ref) for t in traits],
            )
            _check("company_ids() of hostile ids", store.company_ids(), sorted(_HOSTILE))
            for v in _HOSTILE:
                found = _some(store.company_rows(v), f"company_rows({v!r}) is None")
                _check_rows(
                    f"company_rows({v!r}) traits",
                    found[0],
                    [CompanyTraitRow(v, v, 2.0, v, v + "!")],
                )
                _check(f"company_rows({v!r}) members", list(found[1]), [ref[-1]])
            with store.batch() as batch:
                _check(
                    "seen() of hostile event ids",
                    dict(batch.seen(_HOSTILE)),
                    {v: v.encode("utf-8") + b"\x00\xff" for v in _HOSTILE},
                )
                _check("seen() of a prefix of a hostile id", dict(batch.seen(["a", "O"])), {})
            _check(
                "counts()['blocked'] of hostile values",
                dict(store.counts()["blocked"]),
                {("user_id", v): 1 for v in _HOSTILE},
            )
            _check("node() of a LIKE pattern", store.node("user_id", "%"), None)

    def test_close_is_idempotent(self, tmp_path: Path) -> None:
        store = self._new_store(tmp_path)
        self._save(store, _first_changes())
        store.close()
        store.close()
        empty = self._new_store(tmp_path)
        empty.close()
        empty.close()

    def test_reads_see_only_committed_batches(self, tmp_path: Path) -> None:
        with self._store(tmp_path) as store:
            refs = self._saved_world(store)
            before = sorted(map(repr, store.iter_profiles()))
            with store.batch() as batch:
                batch.load([("user_id", "u2"), ("email", "x@example.com")])
                batch.save(_second_changes(refs))
                _check(
                    "node() of a node saved in a batch not yet committed",
                    store.node("phone", "+1 555 0100"),
                    None,
                )
                _check(
                    "profiles while a batch is not yet committed",
                    sorted(map(repr, store.iter_profiles())),
                    before,
                )
                _check(
                    "counts()['events'] while a batch is not yet committed",
                    store.counts()["events"],
                    6,
                )
            _require(store.node("phone", "+1 555 0100") is not None, "committed node missing")

    # -- several handles ------------------------------------------------------------------------

    def test_second_handle_reads_committed_batches_only(self, tmp_path: Path) -> None:
        with self._store(tmp_path) as store:
            other = self._second_handle(store)
            try:
                refs = self._saved_world(store)
                _check(
                    "node() through the second handle",
                    other.node("user_id", "u1"),
                    store.node("user_id", "u1"),
                )
                with store.batch() as batch:
                    batch.load([("user_id", "u2"), ("email", "x@example.com")])
                    batch.save(_second_changes(refs))
                    _check(
                        "node() through the second handle of an uncommitted node",
                        other.node("phone", "+1 555 0100"),
                        None,
                    )
                    _check(
                        "counts()['events'] through the second handle before commit",
                        other.counts()["events"],
                        6,
                    )
                _check(
                    "node() through the second handle after commit",
                    other.node("phone", "+1 555 0100"),
                    store.node("phone", "+1 555 0100"),
                )
            finally:
                other.close()

    def test_batches_on_one_component_are_serialized(self, tmp_path: Path) -> None:
        """Handle A loads a component and pauses; meanwhile handle B writes a link into the
        same component. B must wait for A (or one of them must get ``RetryBatch`` and be
        replayed): nothing B wrote may be lost when A saves (SPEC §6)."""
        with self._store(tmp_path) as store:
            other = self._second_handle(store)
            try:
                self._check_serialized(store, other)
            finally:
                other.close()

    def _check_serialized(self, store: Store, other: Store) -> None:
        # B moves u1's profile under a bigger profile's root; a lost update shows as u1
        # and a1 split off again when A saves the rows it loaded before B committed.
        setup = [
            Identify(user_id="u1", anonymous_id="a1", timestamp=1, event_id="e1"),
            Track(
                event="x",
                anonymous_id="a2",
                identifiers={"email": "m@x.io", "phone": "1"},
                timestamp=2,
                event_id="e2",
            ),
        ]
        a_events = [Identify(user_id="u1", anonymous_id="a3", timestamp=3, event_id="e3")]
        b_events = [Identify(user_id="u1", anonymous_id="a2", timestamp=4, event_id="e4")]
        IdentityGraph(store=store).ingest(setup)
        pausing = _PausingStore(store, pause=0.3)
        graph_a = IdentityGraph(store=pausing)
        graph_b = IdentityGraph(store=other)
        failures: list[BaseException] = []

        def write_a() -> None:
            try:
                graph_a.ingest(a_events)
            except BaseException as exc:  # reported below
                failures.append(exc)

        thread = threading.Thread(target=write_a)
        thread.start()
        if not pausing.loaded.wait(10):
            raise AssertionError("handle A's batch never reached load()")
        try:
            graph_b.ingest(b_events)
        finally:
            thread.join()
        if failures:
            raise AssertionError(f"handle A's batch failed: {failures[0]!r}") from failures[0]
        expected = IdentityGraph()
        expected.ingest(setup + a_events + b_events)
        _assert_same(expected, IdentityGraph(store=store), "after two writers met on u1")

    # -- through IdentityGraph ------------------------------------------------------------------

    def _check_graph(
        self, tmp_path: Path, events: Sequence[Any], rules: Rules | None = None
    ) -> None:
        """The events one batch each, and all in one batch, on two new stores: both must read
        like the in-memory graph (and like each other)."""
        rules = rules or Rules()
        expected = IdentityGraph(rules)
        expected.ingest(events, on_error="skip")
        for how in ("one batch per event", "one batch"):
            store = self._new_store(tmp_path, rules)
            try:
                actual = IdentityGraph(rules, store=store)
                if how == "one batch":
                    actual.ingest(events, on_error="skip")
                else:
                    for event in events:
                        with contextlib.suppress(ValidationError):  # reused event ids
                            actual.ingest([event])
                _assert_same(expected, actual, how)
                if self._has_reopen():
                    other = self._second_handle(store, rules)
                    try:
                        _assert_same(
                            expected,
                            IdentityGraph(rules, store=other),
                            f"{how}, read through a second handle",
                        )
                    finally:
                        other.close()
            finally:
                store.close()

    def test_graph_quickstart(self, tmp_path: Path) -> None:
        self._check_graph(
            tmp_path,
            [
                Track(event="Docs viewed", anonymous_id="anon-7f3a", timestamp=1_714_986_000),
                Identify(
                    user_id="usr_1001",
                    anonymous_id="anon-7f3a",
                    traits={"plan": "free"},
                    timestamp=1_714_986_300,
                ),
                Track(
                    event="API key created",
                    user_id="usr_1001",
                    identifiers={"api_key": "key_9c2e"},
                    timestamp=1_714_986_900,
                ),
                Track(
                    event="API call", identifiers={"api_key": "key_9c2e"}, timestamp=1_714_990_000
                ),
            ],
        )

    def test_graph_late_event_replays_its_component(self, tmp_path: Path) -> None:
        self._check_graph(
            tmp_path,
            [
                Identify(user_id="u1", anonymous_id="a1", timestamp=10, event_id="e10"),
                Alias(
                    user_id="u2", previous_id=("anonymous_id", "a1"), timestamp=20, event_id="e20"
                ),
                Track(
                    event="x",
                    anonymous_id="a1",
                    identifiers={"email": "m@x.io"},
                    timestamp=30,
                    event_id="e30",
                ),
                # late: u2 had a1 first, so u1 is the one refused
                Identify(user_id="u2", anonymous_id="a1", timestamp=5, event_id="e05"),
                Identify(
                    user_id="u1",
                    anonymous_id="a5",
                    set_once={"ref": "late"},
                    timestamp=1,
                    event_id="e01",
                ),
                # u8 is tied to a7 by a refused link only; the late reset of a7 must re-decide
                # that link too (reason: limit -> reset), though u8 is not in a7's profile
                Identify(user_id="u7", anonymous_id="a7", timestamp=10, event_id="f10"),
                Alias(
                    user_id="u8", previous_id=("anonymous_id", "a7"), timestamp=20, event_id="f20"
                ),
                Reset(anonymous_id="a7", timestamp=5, event_id="f05"),
            ],
        )

    def test_graph_resets_and_shared_devices(self, tmp_path: Path) -> None:
        self._check_graph(
            tmp_path,
            [
                Identify(user_id="u1", anonymous_id="shared", timestamp=1, event_id="e1"),
                Reset(anonymous_id="shared", timestamp=2, event_id="e2"),
                Identify(user_id="u2", anonymous_id="shared", timestamp=3, event_id="e3"),
                Identify(
                    user_id="u2",
                    anonymous_id="laptop",
                    identifiers={"email": "fam@x.io"},
                    timestamp=4,
                    event_id="e4",
                ),
                Identify(
                    user_id="u3", identifiers={"email": "fam@x.io"}, timestamp=5, event_id="e5"
                ),
                # a late reset, before e1: re-decides the shared device's component
                Reset(anonymous_id="shared", timestamp=0.5, event_id="e0"),
            ],
        )

    def test_graph_tight_limits(self, tmp_path: Path) -> None:
        self._check_graph(
            tmp_path,
            [
                Identify(user_id="u1", anonymous_id=f"a{i}", timestamp=i, event_id=f"e{i}")
                for i in range(6)
            ]
            + [
                Identify(
                    user_id="u1",
                    identifiers={"email": f"{i}@x.io"},
                    timestamp=10 + i,
                    event_id=f"m{i}",
                )
                for i in range(3)
            ],
            Rules(limits={"email": 1}, max_profile_size=4),
        )

    def test_graph_traits_and_companies(self, tmp_path: Path) -> None:
        self._check_graph(
            tmp_path,
            [
                Identify(
                    user_id="u1",
                    anonymous_id="a1",
                    traits={"plan": "free", "n": 1},
                    set_once={"first": "hn"},
                    timestamp=1,
                    event_id="e1",
                ),
                Identify(
                    user_id="u1",
                    traits={"plan": "pro", "tags": ["a", "b"]},
                    set_once={"first": "google"},
                    timestamp=3,
                    event_id="e3",
                ),
                Identify(
                    user_id="u1",
                    traits={"plan": "old"},
                    set_once={"first": "earliest"},
                    timestamp=0,
                    event_id="e0",
                ),
                IdentifyCompany(
                    company_id="c1",
                    user_id="u1",
                    traits={"name": "Acme"},
                    timestamp=2,
                    event_id="c2",
                ),
                IdentifyCompany(
                    company_id="c1",
                    anonymous_id="a2",
                    traits={"name": "Acme Inc", "seats": 5},
                    timestamp=4,
                    event_id="c4",
                ),
                IdentifyCompany(company_id="c2", user_id="u1", timestamp=5, event_id="c5"),
                IdentifyCompany(
                    company_id="c1",
                    user_id="u1",
                    traits={"name": "Old"},
                    timestamp=1,
                    event_id="c1",
                ),
                Identify(user_id="u9", anonymous_id="a2", timestamp=6, event_id="e6"),
            ],
        )

    def test_graph_duplicates_conflicts_and_blocked_values(self, tmp_path: Path) -> None:
        once = Identify(user_id="u1", anonymous_id="a1", timestamp=1, event_id="e1")
        self._check_graph(
            tmp_path,
            [
                once,
                once,
                Track(
                    event="other content, same id", anonymous_id="a7", timestamp=1, event_id="e1"
                ),
                Identify(user_id="null", anonymous_id="a2", timestamp=2, event_id="e2"),
                Identify(user_id="u2", anonymous_id="undefined", timestamp=3, event_id="e3"),
                Track(
                    event="x", user_id="u2", identifiers={"email": ""}, timestamp=4, event_id="e4"
                ),
                Track(event="x", anonymous_id="a3", timestamp=5),  # derived event id
                Track(event="x", anonymous_id="a3", timestamp=5),  # ... and its duplicate
            ],
        )

    def test_graph_operator_merge_split_forget(self, tmp_path: Path) -> None:
        self._check_graph(
            tmp_path,
            [
                Identify(user_id="u1", anonymous_id="a1", timestamp=1, event_id="e1"),
                Identify(
                    user_id="u2",
                    anonymous_id="a2",
                    traits={"plan": "pro"},
                    timestamp=2,
                    event_id="e2",
                ),
                Merge(
                    a=("user_id", "u1"), b=Identifier("user_id", "u2"), timestamp=3, event_id="m3"
                ),
                Track(
                    event="x",
                    anonymous_id="a1",
                    identifiers={"email": "m@x.io"},
                    timestamp=4,
                    event_id="e4",
                ),
                Split(identifier=("anonymous_id", "a1"), timestamp=5, event_id="s5"),
                Identify(user_id="u1", anonymous_id="a1", timestamp=6, event_id="e6"),
                IdentifyCompany(
                    company_id="c1", anonymous_id="a2", traits={"n": 1}, timestamp=7, event_id="c7"
                ),
                Forget(identifier=("anonymous_id", "a2"), timestamp=8, event_id="f8"),
                Track(event="x", anonymous_id="a2", timestamp=9, event_id="e9"),
                # late: a reset before everything, and the erased id in an early event
                Reset(anonymous_id="a1", timestamp=0.5, event_id="r0"),
                Identify(user_id="u3", anonymous_id="a2", timestamp=0, event_id="e0"),
            ],
        )

    def test_graph_hostile_values(self, tmp_path: Path) -> None:
        events: list[Any] = []
        for i, v in enumerate(_HOSTILE):
            events.append(
                Identify(
                    user_id=v,
                    anonymous_id=f"{v}-anon",
                    identifiers={"email": v},
                    traits={v: v, "nested": {v: [v, i, None]}},
                    set_once={"k": v},
                    timestamp=i,
                    event_id=v,
                )
            )
            events.append(
                IdentifyCompany(
                    company_id=v,
                    user_id=v,
                    traits={v: i},
                    timestamp=100 + i,
                    event_id=f"company {v}",
                )
            )
        self._check_graph(tmp_path, events, Rules(limits={"user_id": None}))

    # -- the state machine ----------------------------------------------------------------------

    def test_random_streams_agree_with_the_memory_graph(self, tmp_path: Path) -> None:
        # The machine's graphs attach the stores to the rules each example draws.
        reopen: Callable[[Store], Store] | None = None
        if self._has_reopen():
            reopen = functools.partial(self._second_handle, attach=False)
        run_conformance(
            functools.partial(self._new_store, tmp_path, attach=False),
            reopen=reopen,
            max_examples=self.max_examples,
        )
