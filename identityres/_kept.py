"""Kept events: what a graph opened with ``keep_events=True`` stores of each event it
ingests, for analysis (docs/analytics.md), and how a validated ``Record`` becomes one."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import attrs

from identityres._events import (
    ALIAS,
    COMPANY,
    IDENTIFY,
    RESET,
    TRACK,
    Record,
)
from identityres._model import Identifier

__all__ = ["KEPT_TYPES", "KeptEvent", "kept_event"]

#: The record types that are kept, and the ``type`` they are kept as. Operator events
#: (merge, split, forget) are decisions about identifiers, not observations of a person.
KEPT_TYPES = {
    TRACK: "track",
    IDENTIFY: "identify",
    ALIAS: "alias",
    RESET: "reset",
    COMPANY: "group",
}


@attrs.frozen
class KeptEvent:
    """One event as kept for analysis (docs/analytics.md).

    ``type`` is the Segment message type (``track``, ``page``, ``screen``, ``identify``,
    ``alias``, ``group``, ``reset``); ``name`` is the event name of a track (a page's or
    screen's name) and the type for the others. ``identifiers`` are the event's valid,
    normalized identifiers in priority order (blocked values left out). ``properties`` are a
    track's properties, ``context`` the message's Segment ``context`` (``None`` when absent).
    """

    event_id: str
    ts: float
    type: str
    name: str
    identifiers: tuple[Identifier, ...]
    properties: Mapping[str, Any] | None = None
    context: Mapping[str, Any] | None = None


def kept_event(
    rec: Record,
    kind_names: tuple[str, ...],
    message_type: str | None = None,
    context: Mapping[str, Any] | None = None,
) -> KeptEvent | None:
    """The kept form of a validated record, or ``None`` for one that is not kept."""
    etype = KEPT_TYPES.get(rec.etype)
    if etype is None:
        return None
    ids = tuple(Identifier(kind_names[k], v) for k, v in rec.ids)
    if rec.etype == TRACK:
        # content: (TRACK, ts, pairs, company, event name, properties as JSON text or None)
        name = rec.content[4]
        props_text = rec.content[5]
        props = None if props_text is None else json.loads(props_text)
        if message_type in ("page", "screen"):
            etype = message_type
    else:
        name = etype
        props = None
    return KeptEvent(rec.event_id, rec.ts, etype, name, ids, props, context)
