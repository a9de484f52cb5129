"""The storage conformance kit (docs/storage.md): proves that a store keeps the promises of the
storage protocol (``identityres/storage/_protocol.py``).

The kit is a set of pytest suites, one per concern, each a mixin a store's test class
inherits (the way dogpile.cache composes its backend test suites):

* :class:`RowSuite` (``_rows``): the protocol's promises one by one, on rows written by
  hand whose right answers are known: atomic batches, whole components, saves that replace
  rows, deletions and erasure, fingerprints, traits, companies, counts, hostile values.
* :class:`GraphSuite` (``_graph``): hand-written event sequences run through
  ``IdentityGraph(store=...)``, read back like a plain in-memory graph.
* :class:`ConcurrencySuite` (``_concurrency``): reads see committed batches only; a second
  handle on the same data (``reopen``); batches on one component serialized.
* :class:`StateMachineSuite` (``_machine``): the hypothesis state machine of
  :func:`run_conformance` as one case.

:class:`StoreConformance` combines all four: a store's test file subclasses it and says how
to make a store (``make_store``, and ``reopen`` for a second handle on the same data). A
store that keeps only some promises, or a test run that wants only some cases, combines the
suites it needs instead (``class TestMyStore(RowSuite, GraphSuite): ...``): each suite
inherits the plumbing (``_fixtures.SuiteBase``) and runs alone.

:func:`run_conformance` is also one call on its own, without pytest: it drives an
``IdentityGraph`` on the store under test and a plain in-memory ``IdentityGraph`` side by
side with the same realistic events and checks, after every step, that both show the same
state. :func:`server_url` finds a server-backed store's server in the environment, skipping
when it is not configured and failing when it is configured but broken.

What does not live here: the reference resolver and snapshots (``identityres.testing``), and
the strategies the state machine draws from (``identityres.strategies``).

This package needs hypothesis (``pip install 'identityres[testing]'``); pytest is needed only
to run the suites' tests, and is imported when one of them skips (or :func:`server_url`
skips or fails).
"""

from __future__ import annotations

from identityres.testing.conformance._concurrency import ConcurrencySuite
from identityres.testing.conformance._fixtures import SuiteBase
from identityres.testing.conformance._graph import GraphSuite
from identityres.testing.conformance._machine import StateMachineSuite, run_conformance
from identityres.testing.conformance._rows import RowSuite
from identityres.testing.conformance._server import server_url

__all__ = [
    "ConcurrencySuite",
    "GraphSuite",
    "RowSuite",
    "StateMachineSuite",
    "StoreConformance",
    "SuiteBase",
    "run_conformance",
    "server_url",
]


class StoreConformance(RowSuite, GraphSuite, ConcurrencySuite, StateMachineSuite):
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

    It is :class:`RowSuite`, :class:`GraphSuite`, :class:`ConcurrencySuite` and
    :class:`StateMachineSuite` together; a test class may inherit some of them instead.
    """
