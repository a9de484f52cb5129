"""The state-machine suite: :func:`run_conformance` runs a hypothesis state machine that
drives an ``IdentityGraph`` on the store under test and a plain in-memory ``IdentityGraph``
side by side with the same realistic events and checks, after every step, that both show the
same state (:func:`~identityres.testing.snapshot`; a difference is shown with
:func:`~identityres.testing.snapshot_diff`). :class:`StateMachineSuite` runs it as one pytest
case, on stores made by the suite's ``make_store`` (and ``reopen``, when given).

The strategies the machine draws from live in ``identityres.strategies``. This module needs
hypothesis (``pip install 'identityres[testing]'``).
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

import functools
import itertools
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal

import attrs

import identityres.strategies as irst
from identityres._graph import IdentityGraph
from identityres._model import (
    Alias,
    Event,
    Forget,
    Identifier,
    Identify,
    Merge,
    Reset,
    Split,
    Track,
)
from identityres._rules import Rules
from identityres.errors import StorageError
from identityres.storage._protocol import Store
from identityres.storage.memory import MemoryStore
from identityres.testing.conformance._fixtures import (
    SuiteBase,
    _assert_same,
    _CrashingStore,
    _without_nul,
)

__all__ = ["StateMachineSuite", "run_conformance"]

#: Steps per state-machine example: enough for several batches to meet in one component.
_STEPS = 10

OnError = Literal["raise", "skip"]
_ON_ERROR: st.SearchStrategy[OnError] = st.sampled_from(["raise", "skip"])


# --- helpers of the state machine -------------------------------------------------------------


def _writes_in_place(store: Store) -> bool:
    # The graph decides in place on an in-place MemoryStore and sends it no batches.
    return isinstance(store, MemoryStore) and store.in_place


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
    text_holds_nul: bool = True

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
            if not self.text_holds_nul:
                self.pending = [_without_nul(e) for e in self.pending]
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
        if not self.text_holds_nul:
            event = _without_nul(event)
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
        be the state of applying them one after the other (docs/storage.md)."""
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
    text_holds_nul: bool = True,
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
    ``text_holds_nul=False`` is for a store whose text cannot hold NUL (PostgreSQL): the
    events' NULs are replaced by U+FFFD, for both graphs (``SuiteBase.text_holds_nul``).
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
            "text_holds_nul": bool(text_holds_nul),
        },
    )
    # Typed in some hypothesis releases, not in others: call it through Any.
    runner: Any = run_state_machine_as_test
    runner(machine, settings=chosen)


# --- the pytest case ---------------------------------------------------------------------------


class StateMachineSuite(SuiteBase):
    """The state machine of :func:`run_conformance`, as one pytest case, on the suite's
    stores (``max_examples`` sets its size; ``None``: from the active hypothesis profile)."""

    #: examples of the state-machine test (``None``: :func:`run_conformance`'s default)
    max_examples: int | None = None

    def test_random_streams_agree_with_the_memory_graph(self, tmp_path: Path) -> None:
        # The machine's graphs attach the stores to the rules each example draws.
        reopen: Callable[[Store], Store] | None = None
        if self._has_reopen():
            reopen = functools.partial(self._second_handle, attach=False)
        run_conformance(
            functools.partial(self._new_store, tmp_path, attach=False),
            reopen=reopen,
            max_examples=self.max_examples,
            text_holds_nul=self.text_holds_nul,
        )
