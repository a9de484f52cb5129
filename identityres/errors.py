"""Exceptions raised by identityres.

Every error the library raises on purpose derives from one root, and each also inherits
the builtin exception it refines, so ``except ValueError`` keeps working for callers that
do not know this module (docs/concepts.md, Errors)::

    IdentityResError
    ├── ValidationError (ValueError)            bad input to a public entry point
    │   ├── IdentifierTypeError (TypeError)     an id that is neither ``str`` nor ``int``
    │   ├── UnknownKindError                    an identifier kind the rules do not declare
    │   ├── InvalidTimestampError               naive datetime, NaN/inf, wrong type,
    │   │                                       outside 1900-01-01 .. 3000-01-01 UTC
    │   ├── EventIdConflictError                an ``event_id`` reused with other content
    │   ├── InvalidEventError                   anything else malformed about an event
    │   │   ├── AliasRefusedError               an alias from a previous *user* id, which
    │   │   │                                   the ``user_id`` limit refuses
    │   │   └── UnknownFormatError              a message no reader of ``ingest(format=)``
    │   │                                       recognizes (or not the format asked for)
    │   ├── UnstorableValueError                a value the store cannot hold (NUL in
    │   │                                       PostgreSQL text)
    │   └── InvalidQueryError                   a bad argument to an analytics query
    ├── ConfigurationError (ValueError)         bad ``Rules`` or store configuration
    └── StorageError                            a store failed (driver errors are chained)
        └── ErasureIncompleteError              an erasure is committed, but bytes of the
                                                value may remain in the store's files

Validation errors carry ``field`` (the argument or message key at fault), ``value`` (what
was given) and ``index`` (the position in a batch given to ``ingest``, else ``None``).
A call that raises a validation error has changed nothing.

Blocked identifier values are *not* errors (docs/concepts.md, Blocked values): they are
reported in the outcome.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "AliasRefusedError",
    "ConfigurationError",
    "ErasureIncompleteError",
    "EventIdConflictError",
    "IdentifierTypeError",
    "IdentityResError",
    "InvalidEventError",
    "InvalidQueryError",
    "InvalidTimestampError",
    "StorageError",
    "UnknownFormatError",
    "UnknownKindError",
    "UnstorableValueError",
    "ValidationError",
]


class IdentityResError(Exception):
    """Root of every exception identityres raises on purpose."""


class ValidationError(IdentityResError, ValueError):
    """Bad input to a public entry point; nothing was changed.

    ``field`` names the argument (or, for ``ingest`` dicts, the message key) at fault and
    ``value`` holds what was given. ``index`` is the event's position in the batch when the
    error comes from :meth:`IdentityGraph.ingest`.
    """

    def __init__(self, field: str, value: Any, reason: str, *, index: int | None = None) -> None:
        self.field = field
        self.value = value
        self.reason = reason
        self.index = index
        super().__init__(self._message())

    def _message(self) -> str:
        try:
            shown = repr(self.value)
        except Exception:  # an int too long for text, nesting too deep: still say what failed
            shown = f"<{type(self.value).__name__} that cannot be shown>"
        if len(shown) > 120:
            shown = shown[:117] + "..."
        where = f"events[{self.index}]: " if self.index is not None else ""
        return f"{where}{self.field}={shown}: {self.reason}"

    def at_index(self, index: int) -> ValidationError:
        """Return the same error, located at ``index`` of an ingest batch."""
        self.index = index
        self.args = (self._message(),)
        return self

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (type(self), self.field, self.value, self.reason, self.index))


def _rebuild(
    cls: type[ValidationError], field: str, value: Any, reason: str, index: int | None
) -> ValidationError:
    return cls(field, value, reason, index=index)


class IdentifierTypeError(ValidationError, TypeError):
    """An identifier value that is neither ``str`` nor ``int`` (``bool`` is refused too)."""


class UnknownKindError(ValidationError):
    """An identifier kind that the rules do not declare."""


class InvalidTimestampError(ValidationError):
    """A timestamp that is a naive datetime, NaN or infinite, of an unsupported type, or
    outside the window from 1900-01-01T00:00:00Z (included) to 3000-01-01T00:00:00Z
    (excluded); epoch milliseconds are outside it (``identityres.from_epoch_ms`` converts
    them)."""


class EventIdConflictError(ValidationError):
    """An ``event_id`` already used by an event with different content (docs/merge-rules.md, R8)."""


class InvalidEventError(ValidationError):
    """An event that is malformed in any other way: missing identifiers, a bad dict, a batch
    that is not an iterable of events, traits or properties that are not JSON data (sets,
    objects, NaN, infinities, lone surrogates, ints too long for text, nesting deeper than
    32 levels), an event name or id with lone surrogates."""


class AliasRefusedError(InvalidEventError):
    """An ``alias`` message whose ``previousId`` is a previous *user* id (it differs from the
    message's ``anonymousId``): an id migration between two identified users, which the
    default ``user_id`` limit refuses. Join them on purpose with ``IdentityGraph.merge``, or
    lift the limit (``Rules(limits={"user_id": None})``) (docs/merge-rules.md, Aliases)."""


class UnknownFormatError(InvalidEventError):
    """A message that no reader recognizes (auto-detection), or that is not of the format
    given to ``ingest(..., format=...)``; the message names the formats (docs/formats.md)."""


class UnstorableValueError(ValidationError):
    """A value that the graph accepts but the store cannot hold, raised by the store when the
    batch is saved; the whole batch is discarded, so nothing was changed. The PostgreSQL store
    raises it for text holding NUL (U+0000: PostgreSQL ``text`` cannot hold it) in an
    identifier value (``field`` is the identifier's kind), an ``event_id``, a trait key
    (``traits``) or a ``company_id``; trait and property *values* may hold NUL (they are
    stored as JSON, which escapes it). ``index`` is ``None``: the store does not know the
    event's position (docs/storage.md, "PostgreSQL")."""


class InvalidQueryError(ValidationError):
    """A bad argument to an ``identityres.analytics`` query (docs/analytics.md): ``field``
    names the argument (``steps``, ``within``, ``order``, ``by``, …)."""


class ConfigurationError(IdentityResError, ValueError):
    """Invalid configuration: bad :class:`Rules` arguments, malformed store URL, unknown scheme."""


class StorageError(IdentityResError):
    """A storage backend failed; the driver's exception is chained as ``__cause__``."""


class ErasureIncompleteError(StorageError):
    """An erasure is committed — the whole batch: ``forget``, or an ``ingest`` holding a
    ``Forget`` event; the identifier is deleted and suppressed, and no read returns it — but
    the store could not yet remove every copy of its bytes from its files:
    the SQLite store could not rewrite the file and empty its write-ahead log because another
    connection was still reading an older state. The store finishes the job when it is next
    opened or when ``scrub()`` is called after the readers finished (docs/storage.md,
    Erasure). Calling ``forget`` again does not help: it is a duplicate."""
