"""The write methods shared by ``IdentityGraph`` and the reference resolver: each turns
its arguments into a validated ``Record`` and submits it. One definition, so that the
oracle and the engine cannot drift apart in what they accept."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Generic, TypeVar

from identityres._events import Record, RecordBuilder
from identityres._model import Identifier, IdLike, TimestampLike

__all__ = ["EventWriter"]

R = TypeVar("R")


class EventWriter(Generic[R]):
    """Mixin: ``track``, ``identify``, ``alias``, ``reset``, ``identify_company``, ``merge``,
    ``split`` and ``forget``; the class provides ``_build`` and ``_submit``."""

    _build: RecordBuilder

    def _submit(self, record: Record) -> R:
        raise NotImplementedError

    def track(
        self,
        event: str,
        *,
        anonymous_id: IdLike | None = None,
        user_id: IdLike | None = None,
        identifiers: Mapping[str, IdLike] | None = None,
        properties: Mapping[str, Any] | None = None,
        timestamp: TimestampLike | None = None,
        event_id: str | None = None,
    ) -> R:
        """Record an observation; with two or more identifiers it is also a link
        (docs/concepts.md)."""
        return self._submit(
            self._build.track(
                event, anonymous_id, user_id, identifiers, properties, timestamp, event_id
            )
        )

    def identify(
        self,
        user_id: IdLike | None,
        anonymous_id: IdLike | None = None,
        *,
        identifiers: Mapping[str, IdLike] | None = None,
        traits: Mapping[str, Any] | None = None,
        set_once: Mapping[str, Any] | None = None,
        timestamp: TimestampLike | None = None,
        event_id: str | None = None,
    ) -> R:
        """This device/session (``anonymous_id``) is this user. ``traits`` are written to the
        user (last write wins); ``set_once`` traits keep their earliest value
        (docs/merge-rules.md, R6). ``user_id=None`` with an ``anonymous_id`` (or
        ``identifiers``) writes a visitor's traits."""
        return self._submit(
            self._build.identify(
                user_id, anonymous_id, identifiers, traits, set_once, timestamp, event_id
            )
        )

    def alias(
        self,
        user_id: IdLike,
        previous_id: IdLike | Identifier | tuple[str, IdLike],
        *,
        timestamp: TimestampLike | None = None,
        event_id: str | None = None,
    ) -> R:
        """Declare ``previous_id`` another name of ``user_id`` — still subject to the rules,
        so two identified users are not merged (use the operator's forced merge for that).

        A plain ``previous_id`` is a ``user_id``; pass ``Identifier("anonymous_id", ...)``
        or a ``(kind, value)`` pair for another kind.
        """
        return self._submit(self._build.alias(user_id, previous_id, timestamp, event_id))

    def reset(
        self,
        anonymous_id: IdLike,
        *,
        timestamp: TimestampLike | None = None,
        event_id: str | None = None,
    ) -> R:
        """The session of ``anonymous_id`` ended: from now on it joins nothing
        (docs/merge-rules.md, R4)."""
        return self._submit(self._build.reset(anonymous_id, timestamp, event_id))

    def identify_company(
        self,
        company_id: IdLike,
        *,
        user_id: IdLike | None = None,
        anonymous_id: IdLike | None = None,
        traits: Mapping[str, Any] | None = None,
        timestamp: TimestampLike | None = None,
        event_id: str | None = None,
    ) -> R:
        """This person belongs to this company; ``traits`` are the company's
        (docs/merge-rules.md, R7)."""
        return self._submit(
            self._build.identify_company(
                company_id, user_id, anonymous_id, traits, timestamp, event_id
            )
        )

    def merge(
        self,
        a: IdLike | Identifier | tuple[str, IdLike],
        b: IdLike | Identifier | tuple[str, IdLike],
        *,
        timestamp: TimestampLike | None = None,
        event_id: str | None = None,
    ) -> R:
        """Operator's forced merge of the profiles of ``a`` and ``b`` (docs/operator-tools.md):
        it joins what the rules would refuse (two identified users, a full profile, a reset
        anonymous id), but never a blocked value. The canonical id rule (R5) picks the
        surviving id. Like every event it is logged and replayed in key order, so it is
        audited (``history``) and arrival order still does not matter. A plain value means a
        ``user_id``."""
        return self._submit(self._build.merge(a, b, timestamp, event_id))

    def split(
        self,
        identifier: IdLike | Identifier | tuple[str, IdLike],
        *,
        timestamp: TimestampLike | None = None,
        event_id: str | None = None,
    ) -> R:
        """Detach ``identifier`` from its profile (docs/operator-tools.md): the links carrying
        it dated before the split are severed; identifiers held together only through it fall
        apart; events dated after the split apply normally, so a later identify can rejoin it."""
        return self._submit(self._build.split(identifier, timestamp, event_id))

    def forget(
        self,
        identifier: IdLike | Identifier | tuple[str, IdLike],
        *,
        timestamp: TimestampLike | None = None,
        event_id: str | None = None,
    ) -> R:
        """GDPR erasure (docs/operator-tools.md): remove the identifier, its links, traits and
        company links. The graph keeps only a keyed hash of it on a suppression list, so no
        replay or late event brings it back; profiles bridged only by it fall apart."""
        return self._submit(self._build.forget(identifier, timestamp, event_id))
