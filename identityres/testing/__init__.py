"""Testing tools shipped with identityres (SPEC §6, §7).

* :class:`ReferenceResolver`: a small, slow, obviously correct implementation of the merge
  rules with the same write and read API as ``IdentityGraph``; the oracle the engine and the
  storage adapters are checked against.
* :func:`snapshot`: the state of a graph (or of the reference) as a plain, order-independent,
  comparable value; :func:`snapshot_diff` explains how two snapshots differ.
* The storage conformance kit: :class:`StoreConformance` (a pytest base class) and
  :func:`run_conformance` (a hypothesis state machine); see ``docs/storage.md``.

The reference resolver and snapshots need nothing more than identityres; the conformance kit
needs hypothesis (``pip install 'identityres[testing]'``) and is imported on first use.
"""

from typing import TYPE_CHECKING, Any

from identityres.testing._reference import (
    ReferenceResolver,
    ResolverLike,
    Snapshot,
    snapshot,
    snapshot_diff,
)

if TYPE_CHECKING:
    from identityres.testing._conformance import StoreConformance, run_conformance

__all__ = [
    "ReferenceResolver",
    "ResolverLike",
    "Snapshot",
    "StoreConformance",
    "run_conformance",
    "snapshot",
    "snapshot_diff",
]

_KIT = frozenset({"StoreConformance", "run_conformance"})


def __getattr__(name: str) -> Any:
    # The kit imports hypothesis: only when asked for (a clear ImportError without it).
    if name in _KIT:
        from identityres.testing import _conformance

        return getattr(_conformance, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
