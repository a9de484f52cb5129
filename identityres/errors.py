"""Exceptions raised by identityres.

Every error the library raises on purpose derives from one root, and each also inherits
the builtin exception it refines, so ``except ValueError`` keeps working for callers that
do not know this module (docs/concepts.md, Errors)::

    IdentityResError
    ├── ValidationError (ValueError)            bad input to a public entry point
    │   ├── IdentifierTypeError (TypeError)     an id that is neither ``str`` nor ``int``
    │   ├── UnknownKindError                    an identifier kind the rules do not declare
    │   ├── InvalidTimestampError               naive datetime, NaN/inf, wrong type
    │   ├── EventIdConflictError                an ``event_id`` reused with other content
    │   └── InvalidEventError                   anything else malformed about an event
    ├── ConfigurationError (ValueError)         bad ``Rules`` or store configuration
    └── StorageError                            a store failed (driver errors are chained)

Validation errors carry ``field`` (the argument or message key at fault), ``value`` (what
was given) and ``index`` (the position in a batch given to ``ingest``, else ``None``).
A call that raises a validation error has changed nothing.

Blocked identifier values are *not* errors (docs/concepts.md, Blocked values): they are
reported in the outcome.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "ConfigurationError",
    "EventIdConflictError",
    "IdentifierTypeError",
    "IdentityResError",
    "InvalidEventError",
    "InvalidTimestampError",
    "StorageError",
    "UnknownKindError",
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
        shown = repr(self.value)
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
    """A timestamp that is a naive datetime, NaN or infinite, or of an unsupported type."""


class EventIdConflictError(ValidationError):
    """An ``event_id`` already used by an event with different content (docs/merge-rules.md, R8)."""


class InvalidEventError(ValidationError):
    """An event that is malformed in any other way (missing identifiers, bad traits, bad dict)."""


class ConfigurationError(IdentityResError, ValueError):
    """Invalid configuration: bad :class:`Rules` arguments, malformed store URL, unknown scheme."""


class StorageError(IdentityResError):
    """A storage backend failed; the driver's exception is chained as ``__cause__``."""
