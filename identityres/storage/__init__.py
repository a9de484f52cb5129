"""Storage: the protocol every store implements, the built-in stores, and URL lookup.

See ``docs/storage.md`` for the concurrency model and how to write an adapter.
"""

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
    EventLog,
    EventRow,
    KeptEvent,
    LinkRow,
    NodeRow,
    ProfileRows,
    RefusedMember,
    RetryBatch,
    RulesRecord,
    Store,
    TraitRow,
)
from identityres.storage._registry import ENTRY_POINT_GROUP, store_from_url
from identityres.storage.memory import MemoryStore

__all__ = [
    "ENTRY_POINT_GROUP",
    "Batch",
    "BlockedCount",
    "Changes",
    "CompanyLinkRow",
    "CompanyRows",
    "CompanyTraitRow",
    "ComponentRows",
    "CountDeltas",
    "Counts",
    "EventLog",
    "EventRow",
    "KeptEvent",
    "LinkRow",
    "MemoryStore",
    "NodeRow",
    "ProfileRows",
    "RefusedMember",
    "RetryBatch",
    "RulesRecord",
    "Store",
    "TraitRow",
    "store_from_url",
]
