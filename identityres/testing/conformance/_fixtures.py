"""What every suite of the conformance kit shares: the plumbing base class
:class:`SuiteBase` (how a store is made, reopened, saved to and read back), the hand-written
rows and values whose right answers are known, the comparison helpers, and the proxy stores
that pass a store through to a graph, crash a batch between ``save`` and commit, or pause it
after ``load``.

Nothing here is a test: the suites (``_rows``, ``_graph``, ``_concurrency``, ``_machine``)
inherit :class:`SuiteBase` and use the rest. pytest is needed only when a case skips, and is
imported then.
"""

from __future__ import annotations

import contextlib
import itertools
import threading
import time
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import attrs

from identityres._graph import IdentityGraph
from identityres._model import Profile
from identityres._rules import Rules, RulesRecord
from identityres.storage._protocol import (
    Batch,
    BlockedCount,
    Changes,
    CompanyLinkRow,
    CompanyRows,
    CompanyTraitRow,
    ComponentRows,
    CountDeltas,
    Counts,
    EventRow,
    LinkRow,
    NodeRow,
    ProfileRows,
    RefusedMember,
    Store,
    TraitRow,
)
from identityres.testing._reference import Snapshot, snapshot, snapshot_diff

__all__ = ["SuiteBase"]

T = TypeVar("T")


# --- helpers shared by every suite -------------------------------------------------------------


def _attach(store: Store, rules: Rules) -> None:
    # What ``IdentityGraph`` does first with a store: bind it to the rules (row-level tests
    # need it too: ``MemoryStore`` learns its kinds from them).
    store.bind_rules(rules.record())


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

    def bind_rules(self, proposed: RulesRecord) -> RulesRecord:
        return self._store.bind_rules(proposed)

    def _wrap(self, batch: Batch) -> Batch:
        return _ProxyBatch(batch)

    @contextlib.contextmanager
    def batch(self) -> Iterator[Batch]:
        with self._store.batch() as batch:
            yield self._wrap(batch)

    def erasure_key(self) -> bytes:
        return self._store.erasure_key()

    def snapshot(self) -> contextlib.AbstractContextManager[None]:
        return self._store.snapshot()

    def read_components(self, identifiers: Collection[tuple[str, str]]) -> ComponentRows:
        return self._store.read_components(identifiers)

    def node(self, kind: str, value: str) -> NodeRow | None:
        return self._store.node(kind, value)

    def nodes_by_ref(self, refs: Collection[int]) -> Mapping[int, NodeRow]:
        return self._store.nodes_by_ref(refs)

    def profile_rows(self, profile: int) -> ProfileRows:
        return self._store.profile_rows(profile)

    def profile_of(self, kind: str, value: str) -> ProfileRows | None:
        return self._store.profile_of(kind, value)

    def iter_profiles(self) -> Iterator[ProfileRows]:
        return self._store.iter_profiles()

    def iter_refused_links(self) -> Iterator[LinkRow]:
        return self._store.iter_refused_links()

    def company_ids(self) -> list[str]:
        return self._store.company_ids()

    def company_rows(self, company_id: str) -> CompanyRows | None:
        return self._store.company_rows(company_id)

    def counts(self) -> Counts:
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


# --- hand-written rows and values, and how to compare them --------------------------------


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
            LinkRow(
                "e3", 30.0, -1, (-1, -3), (RefusedMember(1, "limit_exceeded", "user_id"),), "alias"
            ),
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
            EventRow("e1", b"\x01fp-e1"),
            EventRow("e2", b"fp-e2"),
            EventRow("e2b", b"fp-e2b"),
            EventRow("e3", b"fp-e3"),
            EventRow("e4", b"\x00fp-e4\xff"),
            EventRow("e5", b"fp-e5"),
        ),
        blocked=(BlockedCount("user_id", "null", 2),),
        # six new identifiers in four profiles (u1's, u2's, a9's, Ada's), two identified
        counts=CountDeltas(events=6, identifiers=6, profiles=4, identified_profiles=2),
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
            LinkRow(
                "e1",
                10.0,
                u1,
                (u1, a1),
                (RefusedMember(1, "limit_exceeded", "user_id"),),
                "identify",
            ),
            LinkRow(
                "e3", 30.0, u1, (u1, u2), (RefusedMember(1, "limit_exceeded", "user_id"),), "alias"
            ),
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
        events=(EventRow("e0", b"fp-e0"), EventRow("e6", b"fp-e6"), EventRow("e7", b"fp-e7")),
        blocked=(BlockedCount("user_id", "null", 1), BlockedCount("email", "", 3)),
        regrouped=(a1, email, a2),
        # a new phone; Ada's profile joins u2's
        counts=CountDeltas(events=3, identifiers=1, profiles=-1),
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


def _hostile_values(text_holds_nul: bool) -> tuple[str, ...]:
    """The hostile values a store keeps as text: all of them, or those without NUL for a
    store whose text cannot hold it (``SuiteBase.text_holds_nul``)."""
    return _HOSTILE if text_holds_nul else tuple(v for v in _HOSTILE if "\x00" not in v)


def _without_nul(value: Any) -> Any:
    """``value`` (an event, an identifier, a mapping, a sequence, a str) with every NUL in
    its text replaced by U+FFFD: the events the state machine sends a store whose text cannot
    hold NUL (the same events go to the in-memory graph)."""
    if isinstance(value, str):
        return value.replace("\x00", "\ufffd") if "\x00" in value else value
    if attrs.has(type(value)):
        return attrs.evolve(
            value,
            **{
                f.alias: _without_nul(getattr(value, f.name))
                for f in attrs.fields(type(value))
                if f.init
            },
        )
    if isinstance(value, Mapping):
        return {_without_nul(k): _without_nul(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(map(_without_nul, value))
    return value


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


class SuiteBase:
    """The plumbing every suite inherits: how the kit makes a store, opens a second handle on
    its data, saves the hand-written rows to it and reads their refs back. It holds no test.

    Say how to make the store, either with a method::

        class TestMyStore(RowSuite):
            def make_store(self, tmp_path):
                return MyStore(tmp_path / "graph.db")

            def reopen(self, store, tmp_path):  # optional: a second handle, same data
                return MyStore(tmp_path / "graph.db")

    or, for a store that needs no directory, with class arguments::

        class TestMyStore(RowSuite, GraphSuite, factory=MyStore, reopen=MyStore.reopen): ...

    ``tmp_path`` is a new, empty directory for each store the kit makes. The cases that need
    ``reopen`` skip, saying so, when it is not given.
    """

    #: why the store gives no second handle (shown when the multi-handle cases skip)
    no_reopen_reason: str | None = None
    #: whether the store's text holds NUL (U+0000). A store whose text cannot (PostgreSQL
    #: ``text``) sets it to ``False``: the hostile-value cases then leave NUL out of the text
    #: they store (trait values and fingerprints keep it) and check instead that a batch
    #: holding one raises :class:`~identityres.errors.UnstorableValueError` and changes
    #: nothing; the state machine sends events whose NULs are replaced by U+FFFD.
    text_holds_nul: bool = True
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

            def make_store(self: SuiteBase, tmp_path: Path) -> Store:
                return make()

            cls.make_store = make_store  # type: ignore[method-assign]
        if reopen is not None:
            again = reopen

            def reopen_store(self: SuiteBase, store: Store, tmp_path: Path) -> Store:
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
        return type(self).reopen is not SuiteBase.reopen

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

    def _saved_world_second(self, store: Store, refs: dict[str, int]) -> dict[str, int]:
        self._save(store, _second_changes(refs))
        return self._refs(store)
