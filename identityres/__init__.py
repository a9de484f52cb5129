"""identityres — identity resolution for product analytics.

Stitches one person's activity together across contexts (an anonymous docs visitor, the
same person signed into the web app, the same person calling the API with a token) with
deterministic, order-independent merge rules. The public names are all here; the
machinery lives in the private modules.
"""

from identityres._events import from_epoch_ms
from identityres._explain import Decision, Explanation, Step
from identityres._formats import session_token_identifier
from identityres._graph import EventError, GraphStats, IdentityGraph, IngestReport
from identityres._kept import KeptEvent
from identityres._model import (
    Alias,
    BlockedValue,
    Company,
    Event,
    Forget,
    Identifier,
    Identify,
    IdentifyCompany,
    Merge,
    Outcome,
    Profile,
    Reason,
    Refusal,
    Reset,
    Split,
    Track,
)
from identityres._rules import DEFAULT_EXTRACTION, Extract, Rules, normalize_email
from identityres.errors import (
    AliasRefusedError,
    ConfigurationError,
    ErasureIncompleteError,
    EventIdConflictError,
    IdentifierTypeError,
    IdentityResError,
    InvalidEventError,
    InvalidQueryError,
    InvalidTimestampError,
    StorageError,
    UnknownFormatError,
    UnknownKindError,
    UnstorableValueError,
    ValidationError,
)

__version__ = "0.1.0.dev0"

__all__ = [
    "DEFAULT_EXTRACTION",
    "Alias",
    "AliasRefusedError",
    "BlockedValue",
    "Company",
    "ConfigurationError",
    "Decision",
    "ErasureIncompleteError",
    "Event",
    "EventError",
    "EventIdConflictError",
    "Explanation",
    "Extract",
    "Forget",
    "GraphStats",
    "Identifier",
    "IdentifierTypeError",
    "Identify",
    "IdentifyCompany",
    "IdentityGraph",
    "IdentityResError",
    "IngestReport",
    "InvalidEventError",
    "InvalidQueryError",
    "InvalidTimestampError",
    "KeptEvent",
    "Merge",
    "Outcome",
    "Profile",
    "Reason",
    "Refusal",
    "Reset",
    "Rules",
    "Split",
    "Step",
    "StorageError",
    "Track",
    "UnknownFormatError",
    "UnknownKindError",
    "UnstorableValueError",
    "ValidationError",
    "from_epoch_ms",
    "normalize_email",
    "session_token_identifier",
]
