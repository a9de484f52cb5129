"""Value types users see: identifiers, events, outcomes, refusals, profiles, companies.

The merge logic lives in ``_engine``; validation and normalization in ``_rules`` and
``_events``. Everything here is a frozen value, except :class:`Outcome`, which is built on
the ingest hot path and therefore converts its raw data to value objects only when read.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import attrs

__all__ = [
    "Alias",
    "BlockedValue",
    "Company",
    "Event",
    "Forget",
    "Identifier",
    "Identify",
    "IdentifyCompany",
    "Merge",
    "Outcome",
    "Profile",
    "Reason",
    "Refusal",
    "Reset",
    "Split",
    "Track",
]

USER_ID = "user_id"
ANONYMOUS_ID = "anonymous_id"


@attrs.frozen(order=True)
class Identifier:
    """One identifier: a ``kind`` (``user_id``, ``anonymous_id``, ``email``, …) and a value.

    Wherever an identifier is asked for, a plain ``(kind, value)`` tuple works too.
    """

    kind: str
    value: str

    def __str__(self) -> str:
        return f"{self.kind}:{self.value}"


class Reason(str, enum.Enum):
    """Why an identifier was not joined (a :class:`Refusal`) or not used at all (blocked)."""

    #: Joining would put more identifiers of one kind into a profile than ``Rules.limits``
    #: allows; :attr:`Refusal.kind` names the kind (R2 in docs/merge-rules.md).
    LIMIT_EXCEEDED = "limit_exceeded"
    #: Joining would make the profile larger than ``Rules.max_profile_size`` (R2 in
    #: docs/merge-rules.md).
    PROFILE_SIZE_LIMIT = "profile_size_limit"
    #: The anonymous id was reset before this event and can no longer join (R4 in
    #: docs/merge-rules.md).
    ANONYMOUS_ID_RESET = "anonymous_id_reset"
    #: The value is on the blocked list (defaults, ``blocked_values`` or a pattern;
    #: docs/merge-rules.md).
    BLOCKED_VALUE = "blocked_value"
    #: The value is longer than ``Rules.max_length`` (docs/merge-rules.md, blocked values);
    #: treated as blocked.
    VALUE_TOO_LONG = "value_too_long"

    def __str__(self) -> str:
        return self.value


@attrs.frozen
class Refusal:
    """A link the rules refused: ``identifier`` was demoted instead of joining ``anchor``."""

    event_id: str
    identifier: Identifier
    anchor: Identifier
    reason: Reason
    #: For ``limit_exceeded``: the kind whose limit would have been broken; else ``None``.
    kind: str | None = None


@attrs.frozen
class BlockedValue:
    """An identifier value that was not used because it is blocked (docs/merge-rules.md,
    blocked values)."""

    kind: str
    value: str
    reason: Reason


class Outcome:
    """What one write did. Returned by every write method of ``IdentityGraph``.

    * ``joined``: identifiers this event joined into the anchor's profile;
    * ``already_joined``: identifiers that were already in that profile;
    * ``refused``: :class:`Refusal` for each demoted identifier;
    * ``blocked``: :class:`BlockedValue` for each blocked value;
    * ``duplicate``: the event was seen before (same ``event_id``, same content); nothing changed;
    * ``late``: the event was older than what its part of the graph had seen, and that part
      was replayed (``replayed`` events) so that the result equals in-order arrival (R8 in
      docs/merge-rules.md).
    """

    __slots__ = ("_blocked", "_decisions", "_graph", "duplicate", "event_id", "late", "replayed")

    def __init__(
        self,
        event_id: str,
        graph: Any,
        decisions: Any,
        blocked: Any,
        duplicate: bool = False,
        late: bool = False,
        replayed: int = 0,
    ) -> None:
        self.event_id = event_id
        # Raw decision data, turned into value objects only when read: this object is made
        # on the ingest hot path.  ``decisions`` is ``(anchor, joined, already, refused)`` of
        # node numbers of ``graph`` (the engine), refused items being ``(node, reason,
        # limit_kind_index)``; ``None`` for an event that links nothing.
        self._graph = graph
        self._decisions = decisions
        self._blocked = blocked
        self.duplicate = duplicate
        self.late = late
        self.replayed = replayed

    def _ident(self, node: int) -> Identifier:
        graph = self._graph
        return Identifier(graph.rules.kind_names[graph.kind[node]], graph.value[node])

    @property
    def anchor(self) -> Identifier | None:
        """The highest-priority valid identifier of the event (R1 in docs/merge-rules.md), or
        ``None``."""
        if self._decisions is None:
            return None
        return self._ident(self._decisions[0])

    @property
    def joined(self) -> tuple[Identifier, ...]:
        """Identifiers that this event joined to the anchor's profile."""
        if self._decisions is None:
            return ()
        return tuple(self._ident(n) for n in self._decisions[1])

    @property
    def already_joined(self) -> tuple[Identifier, ...]:
        """Identifiers that were already in the anchor's profile."""
        if self._decisions is None:
            return ()
        return tuple(self._ident(n) for n in self._decisions[2])

    @property
    def refused(self) -> tuple[Refusal, ...]:
        """Identifiers the rules demoted, with the reason."""
        if self._decisions is None:
            return ()
        anchor = self._ident(self._decisions[0])
        names = self._graph.rules.kind_names
        return tuple(
            Refusal(
                self.event_id, self._ident(n), anchor, reason, None if lk is None else names[lk]
            )
            for n, reason, lk in self._decisions[3]
        )

    @property
    def blocked(self) -> tuple[BlockedValue, ...]:
        """Values of the event that were blocked and so linked nothing."""
        return tuple(BlockedValue(kind, value, reason) for kind, value, reason in self._blocked)

    def __repr__(self) -> str:
        parts = [f"event_id={self.event_id!r}"]
        if self.duplicate:
            parts.append("duplicate=True")
        if self.late:
            parts.append(f"late=True, replayed={self.replayed}")
        for name in ("joined", "already_joined", "refused", "blocked"):
            value = getattr(self, name)
            if value:
                parts.append(f"{name}={value!r}")
        return f"Outcome({', '.join(parts)})"


@attrs.frozen
class Profile:
    """One person as the rules see them: a set of identifiers and what is known of it.

    ``user_id`` is the canonical id (R5 in docs/merge-rules.md): the highest-priority
    identifier in the profile, the earliest seen among several of that kind;
    ``user_id_kind`` says which kind it is (``anonymous_id`` for a profile nobody
    identified). ``identified_user_id`` is the
    profile's ``user_id``-kind identifier, or ``None``.
    """

    user_id: str
    user_id_kind: str
    identified_user_id: str | None
    anonymous_ids: frozenset[str]
    #: Every identifier value of the profile, by kind (kinds with none are left out).
    identifiers: Mapping[str, frozenset[str]]
    company_id: str | None
    company_ids: frozenset[str]
    traits: Mapping[str, Any]
    first_seen: datetime
    last_seen: datetime

    @property
    def id(self) -> str:
        """The profile's unique id: its canonical identifier as ``"kind:value"``
        (``"user_id:1001"``, ``"anonymous_id:a-7f3a"``). Unlike ``user_id`` it never names two
        profiles at once, whatever their kinds: count people by it. It is deterministic and
        changes only when the canonical identifier does (docs/merge-rules.md, R5): when an
        anonymous profile is identified, or profiles join."""
        return profile_id(self.user_id_kind, self.user_id)

    @property
    def is_identified(self) -> bool:
        """True when the profile holds a ``user_id``."""
        return self.identified_user_id is not None

    def all_identifiers(self) -> frozenset[Identifier]:
        """Every identifier of the profile as :class:`Identifier` values."""
        return frozenset(Identifier(k, v) for k, vs in self.identifiers.items() for v in vs)


def profile_id(kind: str, value: str) -> str:
    """The id of the profile whose canonical identifier is ``(kind, value)``
    (:attr:`Profile.id`)."""
    return f"{kind}:{value}"


@attrs.frozen
class Company:
    """A company (R7 in docs/merge-rules.md): its traits and the canonical ids of the
    profiles in it."""

    company_id: str
    traits: Mapping[str, Any]
    profiles: frozenset[str]


# --- Event objects -----------------------------------------------------------------------
#
# Plain containers for ``IdentityGraph.ingest``; they are validated when applied, exactly
# like the keyword arguments of the matching write method, so a batch can report each bad
# event by its index.

IdLike = str | int
TimestampLike = datetime | int | float


@attrs.frozen(kw_only=True)
class Track:
    """An observation (``IdentityGraph.track``); a link if it carries two or more ids."""

    event: str
    anonymous_id: IdLike | None = None
    user_id: IdLike | None = None
    identifiers: Mapping[str, IdLike] | None = None
    properties: Mapping[str, Any] | None = None
    timestamp: TimestampLike | None = None
    event_id: str | None = None


@attrs.frozen(kw_only=True)
class Identify:
    """This device/session is this user (``IdentityGraph.identify``)."""

    user_id: IdLike
    anonymous_id: IdLike | None = None
    identifiers: Mapping[str, IdLike] | None = None
    traits: Mapping[str, Any] | None = None
    set_once: Mapping[str, Any] | None = None
    timestamp: TimestampLike | None = None
    event_id: str | None = None


@attrs.frozen(kw_only=True)
class Alias:
    """Declare ``previous`` another name of ``user_id`` (``IdentityGraph.alias``)."""

    user_id: IdLike
    previous_id: IdLike | Identifier | tuple[str, IdLike]
    timestamp: TimestampLike | None = None
    event_id: str | None = None


@attrs.frozen(kw_only=True)
class Reset:
    """The session of ``anonymous_id`` ended (``IdentityGraph.reset``)."""

    anonymous_id: IdLike
    timestamp: TimestampLike | None = None
    event_id: str | None = None


@attrs.frozen(kw_only=True)
class IdentifyCompany:
    """This person belongs to this company (``IdentityGraph.identify_company``)."""

    company_id: IdLike
    user_id: IdLike | None = None
    anonymous_id: IdLike | None = None
    traits: Mapping[str, Any] | None = None
    timestamp: TimestampLike | None = None
    event_id: str | None = None


OperatorId = IdLike | Identifier | tuple[str, IdLike]


@attrs.frozen(kw_only=True)
class Merge:
    """Operator's forced merge of the profiles of ``a`` and ``b`` (``IdentityGraph.merge``)."""

    a: OperatorId
    b: OperatorId
    timestamp: TimestampLike | None = None
    event_id: str | None = None


@attrs.frozen(kw_only=True)
class Split:
    """Detach ``identifier`` from its profile (``IdentityGraph.split``)."""

    identifier: OperatorId
    timestamp: TimestampLike | None = None
    event_id: str | None = None


@attrs.frozen(kw_only=True)
class Forget:
    """Erase ``identifier`` (``IdentityGraph.forget``)."""

    identifier: OperatorId
    timestamp: TimestampLike | None = None
    event_id: str | None = None


Event = Track | Identify | Alias | Reset | IdentifyCompany | Merge | Split | Forget

#: the event classes, for a type test faster than ``isinstance(x, Mapping)`` on the hot path
EVENT_CLASSES: frozenset[type] = frozenset(
    (Track, Identify, Alias, Reset, IdentifyCompany, Merge, Split, Forget)
)
