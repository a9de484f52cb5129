"""Compatibility shim: the conformance kit now lives in :mod:`identityres.testing.conformance`
(one module per suite). Import from there, or from :mod:`identityres.testing`.

Kept because ``tests/test_convergence.py`` imports ``_rules_variants`` from here; once that
import reads ``from identityres.testing.conformance._machine import _rules_variants``, this
module can go.
"""

from identityres.testing.conformance import (
    ConcurrencySuite,
    GraphSuite,
    RowSuite,
    StateMachineSuite,
    StoreConformance,
    run_conformance,
    server_url,
)
from identityres.testing.conformance._machine import _rules_variants

__all__ = [
    "ConcurrencySuite",
    "GraphSuite",
    "RowSuite",
    "StateMachineSuite",
    "StoreConformance",
    "_rules_variants",
    "run_conformance",
    "server_url",
]
