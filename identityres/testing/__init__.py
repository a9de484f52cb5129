"""Testing tools shipped with identityres (docs/storage.md, docs/merge-rules.md).

* :class:`ReferenceResolver`: a small, slow, obviously correct implementation of the merge
  rules with the same write and read API as ``IdentityGraph``; the oracle the engine and the
  storage adapters are checked against.
* :func:`snapshot`: the state of a graph (or of the reference) as a plain, order-independent,
  comparable value; :func:`snapshot_diff` explains how two snapshots differ.
* The storage conformance kit (``identityres.testing.conformance``): :class:`StoreConformance`
  (a pytest base class), made of the suites :class:`RowSuite`, :class:`GraphSuite`,
  :class:`ConcurrencySuite` and :class:`StateMachineSuite` (a test class may inherit only
  some); :func:`run_conformance` (a hypothesis state machine); :func:`server_url` (the server
  of a server-backed store, from the environment); see ``docs/storage.md``.

The reference resolver and snapshots need nothing more than identityres; the conformance kit
needs hypothesis (``pip install 'identityres[testing]'``) and is imported on first use.
"""

from typing import TYPE_CHECKING, Any

from identityres.testing._analytics import (
    reference_funnel,
    reference_people,
    reference_unique_users,
)
from identityres.testing._reference import (
    ReferenceResolver,
    ResolverLike,
    Snapshot,
    snapshot,
    snapshot_diff,
)

if TYPE_CHECKING:
    from identityres.testing.conformance import (
        ConcurrencySuite,
        GraphSuite,
        RowSuite,
        StateMachineSuite,
        StoreConformance,
        run_conformance,
        server_url,
    )

__all__ = [
    "ConcurrencySuite",
    "GraphSuite",
    "ReferenceResolver",
    "ResolverLike",
    "RowSuite",
    "Snapshot",
    "StateMachineSuite",
    "StoreConformance",
    "reference_funnel",
    "reference_people",
    "reference_unique_users",
    "run_conformance",
    "server_url",
    "snapshot",
    "snapshot_diff",
]

_KIT = frozenset(
    {
        "ConcurrencySuite",
        "GraphSuite",
        "RowSuite",
        "StateMachineSuite",
        "StoreConformance",
        "run_conformance",
        "server_url",
    }
)


def __getattr__(name: str) -> Any:
    # The kit imports hypothesis: only when asked for (a clear ImportError without it).
    if name in _KIT:
        from identityres.testing import conformance

        return getattr(conformance, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
