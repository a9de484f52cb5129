"""Testing tools shipped with identityres (SPEC §6, §7).

* :class:`ReferenceResolver`: a small, slow, obviously correct implementation of the merge
  rules with the same write and read API as ``IdentityGraph``; the oracle the engine and the
  storage adapters are checked against.
* :func:`snapshot`: the state of a graph (or of the reference) as a plain, order-independent,
  comparable value; :func:`snapshot_diff` explains how two snapshots differ.

Nothing here needs hypothesis.
"""

from identityres.testing._reference import (
    ReferenceResolver,
    ResolverLike,
    Snapshot,
    snapshot,
    snapshot_diff,
)

__all__ = ["ReferenceResolver", "ResolverLike", "Snapshot", "snapshot", "snapshot_diff"]
