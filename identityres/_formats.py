"""Reading other platforms' messages (docs/formats.md): PostHog, Mixpanel, Amplitude HTTP API v2
and Moesif events become the operations a Segment-spec message names (as dicts of that spec, or
``Merge`` objects), which ``RecordBuilder`` validates like any other.

Each reader is a function of one message alone, so that the operations it gives, and so the
profiles, never depend on the order messages arrive in (R8 in docs/merge-rules.md). Errors name
the platform's own fields: a translated dict (``Translated``) carries ``fields``, the Segment
keys it filled mapped to the platform's paths, which ``IdentityGraph.ingest`` relabels errors
with.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from typing import Any

from identityres._events import MAX_TIMESTAMP, MIN_TIMESTAMP, Translated, parse_iso_timestamp
from identityres._model import ANONYMOUS_ID, USER_ID, Merge
from identityres.errors import InvalidEventError, InvalidTimestampError, UnknownFormatError

__all__ = ["FORMATS", "detect", "translate"]

#: The formats ``ingest(..., format=...)`` reads; ``"auto"`` detects one per message.
FORMATS = ("segment", "posthog", "mixpanel", "amplitude", "moesif")
SEGMENT_TYPES = frozenset({"identify", "track", "page", "screen", "alias", "group", "reset"})
#: The group type that is a profile's company on the platforms with several group types.
COMPANY_GROUP = "company"

_WHAT_FITS = (
    "segment (a 'type' of identify, track, page, screen, alias, group, reset), "
    "posthog ('event' and 'distinct_id'), "
    "mixpanel ('event' and 'properties', without a top-level 'distinct_id'; '$distinct_id' "
    "for /engage; '$group_key' for /groups), "
    "amplitude ('event_type'), "
    "moesif ('request' with 'response' or 'action_name'; 'user_id' or 'company_id' with "
    "'metadata')"
)


def detect(msg: Mapping[str, Any]) -> str | None:
    """The format a message is in, or ``None`` when none fits."""
    if "type" in msg:
        return "segment"
    if "event_type" in msg:
        return "amplitude"
    if "event" in msg and "distinct_id" in msg:
        return "posthog"
    if "event" in msg and isinstance(msg.get("properties"), Mapping):
        return "mixpanel"  # (its ids are in the properties)
    if "$distinct_id" in msg or "$group_key" in msg:
        return "mixpanel"
    if "request" in msg and ("response" in msg or "action_name" in msg):
        return "moesif"
    if ("user_id" in msg or "company_id" in msg) and "metadata" in msg:
        return "moesif"
    return None


def envelope(msg: Mapping[str, Any]) -> list[Any] | None:
    """The messages of a batch body as the clients post it (``{"batch": [...]}`` of Segment,
    RudderStack and PostHog, ``{"events": [...]}`` of Amplitude), else ``None``. The body's
    ``sentAt`` / ``sent_at`` is copied into messages that lack it (a time of last resort)."""
    if "type" in msg or "event" in msg or "event_type" in msg:
        return None
    for key in ("batch", "events"):
        inner = msg.get(key)
        if isinstance(inner, list):
            sent = msg.get("sentAt", msg.get("sent_at"))
            out: list[Any] = []
            for item in inner:
                if isinstance(item, Mapping) and sent is not None:
                    name = "sent_at" if "distinct_id" in item else "sentAt"
                    if name not in item:
                        item = {**item, name: sent}
                out.append(item)
            return out
    return None


def translate(msg: Mapping[str, Any], fmt: str) -> list[Any]:
    """The operations of one message of format ``fmt`` (``"auto"``: detected): Segment-spec
    dicts (``Translated``, carrying ``fields``) and ``Merge`` objects. Raises
    :class:`~identityres.errors.UnknownFormatError` when the message is not of the format."""
    inner = envelope(msg)
    if inner is not None:
        out: list[Any] = []
        for i, item in enumerate(inner):
            if not isinstance(item, Mapping):
                raise InvalidEventError(
                    f"batch[{i}]", item, f"must be a message object, not {type(item).__name__}"
                )
            out.extend(translate(item, fmt))
        return out
    found = detect(msg) if fmt == "auto" else fmt
    if found is None:
        raise UnknownFormatError(
            "message",
            _keys(msg),
            f"no format fits this message; the formats are {_WHAT_FITS}",
        )
    if fmt != "auto" and found != "segment" and detect(msg) not in (found, None):
        raise UnknownFormatError(
            "message",
            _keys(msg),
            f"not a {found} message (it looks like {detect(msg)}); the formats are {_WHAT_FITS}",
        )
    if found == "segment":
        return [msg]
    reader = _READERS[found]
    return reader(msg)


def _keys(msg: Mapping[str, Any]) -> str:
    keys = sorted(str(k) for k in msg)
    shown = ", ".join(keys[:8]) + (", ..." if len(keys) > 8 else "")
    return "{" + shown + "}"


# -- shared pieces ------------------------------------------------------------------------


def _mapping(field: str, value: Any) -> Mapping[str, Any] | None:
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise InvalidEventError(field, value, f"must be an object, not {type(value).__name__}")
    return value


def _epoch(field: str, value: Any) -> float | None:
    """Epoch seconds or milliseconds (a number of 10^11 or more is milliseconds: in seconds it
    would be after the year 5000, outside the supported window), or an ISO-8601 string."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise InvalidTimestampError(
            field,
            value,
            f"must be epoch seconds, epoch milliseconds or ISO-8601, not {type(value).__name__}",
        )
    if isinstance(value, str):
        return parse_iso_timestamp(value, field)
    seconds = value / 1000 if abs(value) >= 1e11 else float(value)
    if not MIN_TIMESTAMP <= seconds < MAX_TIMESTAMP:
        raise InvalidTimestampError(
            field,
            value,
            "outside the supported window 1900-01-01T00:00:00Z .. "
            "3000-01-01T00:00:00Z (as epoch seconds or milliseconds)",
        )
    return seconds


def _ms(field: str, value: Any) -> float | None:
    """Epoch milliseconds (Amplitude's ``time``)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidTimestampError(
            field, value, f"must be epoch milliseconds (an int), not {type(value).__name__}"
        )
    seconds = value / 1000
    if not MIN_TIMESTAMP <= seconds < MAX_TIMESTAMP:
        raise InvalidTimestampError(
            field,
            value,
            "epoch milliseconds outside the supported window "
            "1900-01-01T00:00:00Z .. 3000-01-01T00:00:00Z",
        )
    return seconds


def _message(
    mtype: str,
    fields: dict[str, str],
    *,
    company_only: bool = False,
    previous_kind: str | None = None,
    **keys: Any,
) -> Translated:
    data = {"type": mtype, **{k: v for k, v in keys.items() if v is not None}}
    return Translated(data, fields, company_only=company_only, previous_kind=previous_kind)


def _derived(base_id: Any, part: str) -> str | None:
    """The event id of a second operation of one message: ``None`` (an id derived from the
    content) when the message has no id of its own, never ``"None#part"``, which would be
    the same id for every such message."""
    return None if base_id is None else f"{base_id}#{part}"


def _membership(
    base_id: Any, ts: Any, user: Any, anon: Any, company: Any, fields: dict[str, str]
) -> Translated:
    """A ``group`` message: this person belongs to ``company`` (its own event id)."""
    return _message(
        "group",
        fields,
        messageId=_derived(base_id, "group"),
        timestamp=ts,
        userId=user,
        anonymousId=anon,
        groupId=company,
    )


# -- PostHog ----------------------------------------------------------------------------


def _posthog(msg: Mapping[str, Any]) -> list[Any]:
    event = msg.get("event")
    if not isinstance(event, str) or not event:
        raise InvalidEventError("event", event, "the event name must be a non-empty str")
    props = _mapping("properties", msg.get("properties")) or {}
    ts = msg.get("timestamp")
    ts = _epoch("timestamp", ts) if ts is not None else _epoch("sent_at", msg.get("sent_at"))
    uuid = msg.get("uuid")
    distinct = msg.get("distinct_id")
    if distinct is None:
        distinct = props.get("distinct_id")
    fields = {"messageId": "uuid", "timestamp": "timestamp"}
    # Which distinct_id is anonymous (docs/formats.md, PostHog): the event says so
    # ($is_identified false, $process_person_profile false), or it is the event's own
    # $device_id; else it is a user id, and a $device_id beside it is the device's
    # anonymous id.
    device = props.get("$device_id")
    anonymous = (
        props.get("$is_identified") is False
        or props.get("$process_person_profile") is False
        or (device is not None and device == distinct)
    )
    user, anon = (None, distinct) if anonymous else (distinct, device)
    fields.update(
        {
            "userId": "distinct_id",
            "anonymousId": "distinct_id" if anonymous else "properties.$device_id",
        }
    )
    sets = msg.get("$set", props.get("$set"))
    once = msg.get("$set_once", props.get("$set_once"))
    where_set = "$set" if "$set" in msg else "properties.$set"
    where_once = "$set_once" if "$set_once" in msg else "properties.$set_once"
    fields.update({"traits": where_set, "set_once": where_once})
    if event == "$identify":
        previous = props.get("$anon_distinct_id")
        fields["anonymousId"] = "properties.$anon_distinct_id"
        return [
            _message(
                "identify",
                fields,
                messageId=uuid,
                timestamp=ts,
                userId=distinct,
                anonymousId=previous if previous is not None else device,
                traits=sets,
                set_once=once,
            )
        ]
    if event == "$create_alias":
        alias = props.get("alias")
        fields.update({"userId": "properties.alias", "previousId": "distinct_id"})
        return [
            _message(
                "alias",
                fields,
                messageId=uuid,
                timestamp=ts,
                userId=alias,
                previousId=distinct,
                previous_kind=USER_ID if props.get("$is_identified") is True else ANONYMOUS_ID,
            )
        ]
    if event == "$merge_dangerously":
        alias = props.get("alias")
        if alias is None:
            raise InvalidEventError("properties.alias", None, "$merge_dangerously needs an alias")
        # Two identified persons joined on purpose: the operator's merge (merge rules do
        # not apply to it).
        return [
            _Merge(
                a=(USER_ID, distinct),
                b=(USER_ID, alias),
                timestamp=ts,
                event_id=uuid,
                fields={"a": "distinct_id", "b": "properties.alias", "event_id": "uuid"},
            )
        ]
    if event == "$groupidentify":
        gtype = props.get("$group_type")
        if gtype != COMPANY_GROUP:
            return []
        fields.update({"groupId": "properties.$group_key", "traits": "properties.$group_set"})
        return [
            _message(
                "group",
                fields,
                messageId=uuid,
                timestamp=ts,
                groupId=props.get("$group_key"),
                traits=props.get("$group_set"),
                company_only=True,
            )
        ]
    ops: list[Any] = []
    if event in ("$set", "$set_once") or sets is not None or once is not None:
        ops.append(
            _message(
                "identify",
                fields,
                messageId=uuid if event in ("$set", "$set_once") else _derived(uuid, "set"),
                timestamp=ts,
                userId=user,
                anonymousId=anon,
                traits=sets,
                set_once=once,
            )
        )
    if event not in ("$set", "$set_once"):
        clean = {k: v for k, v in props.items() if k not in ("$set", "$set_once")}
        ops.insert(
            0,
            _message(
                "track",
                fields,
                messageId=uuid,
                timestamp=ts,
                event=event,
                userId=user,
                anonymousId=anon,
                properties=clean,
            ),
        )
        groups = _mapping("properties.$groups", props.get("$groups"))
        company = None if groups is None else groups.get(COMPANY_GROUP)
        if company is not None:
            fields2 = {**fields, "groupId": f"properties.$groups.{COMPANY_GROUP}"}
            ops.append(_membership(uuid, ts, user, anon, company, fields2))
    return ops


class _Merge(Merge):
    """A ``Merge`` read from a platform's message, with the fields to name in errors."""

    def __init__(self, *, fields: dict[str, str], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        object.__setattr__(self, "_fields_", fields)

    @property
    def fields(self) -> dict[str, str]:
        found: dict[str, str] = getattr(self, "_fields_", {})
        return found


# -- Mixpanel ---------------------------------------------------------------------------

_MIXPANEL_RESERVED = {"$email": "email", "$phone": "phone", "$name": "name"}
_DEVICE = "$device:"


def _mixpanel_traits(value: Any, field: str) -> dict[str, Any] | None:
    found = _mapping(field, value)
    if found is None:
        return None
    return {_MIXPANEL_RESERVED.get(k, k): v for k, v in found.items()}


def _mixpanel_distinct(value: Any) -> tuple[Any, Any]:
    """(user id, anonymous id) of a bare distinct_id: ``$device:X`` is device X, else a user."""
    if isinstance(value, str) and value.startswith(_DEVICE):
        return None, value[len(_DEVICE) :]
    return value, None


def _mixpanel(msg: Mapping[str, Any]) -> list[Any]:
    if "$group_key" in msg:
        if msg.get("$group_key") != COMPANY_GROUP:
            return []
        fields = {"groupId": "$group_id", "traits": "$set", "timestamp": "$time"}
        return [
            _message(
                "group",
                fields,
                timestamp=_epoch("$time", msg.get("$time")),
                groupId=msg.get("$group_id"),
                traits=_mapping("$set", msg.get("$set")),
                company_only=True,
            )
        ]
    if "$distinct_id" in msg:
        # /engage: a profile update of one distinct_id
        user, anon = _mixpanel_distinct(msg.get("$distinct_id"))
        fields = {
            "userId": "$distinct_id",
            "anonymousId": "$distinct_id",
            "traits": "$set",
            "set_once": "$set_once",
            "timestamp": "$time",
        }
        ts = _epoch("$time", msg.get("$time"))
        traits = _mixpanel_traits(msg.get("$set"), "$set")
        once = _mixpanel_traits(msg.get("$set_once"), "$set_once")
        if traits is None and once is None:
            return []  # $add, $unset, ...: nothing a profile's identity needs
        ops: list[Any] = [
            _message(
                "identify",
                fields,
                timestamp=ts,
                userId=user,
                anonymousId=anon,
                traits=traits,
                set_once=once,
            )
        ]
        company = (traits or {}).get(COMPANY_GROUP)
        if isinstance(company, list) and len(company) == 1:
            company = company[0]
        if isinstance(company, (str, int)) and not isinstance(company, bool):
            ops.append(
                _membership(None, ts, user, anon, company, {**fields, "groupId": "$set.company"})
            )
        return ops
    event = msg.get("event")
    if not isinstance(event, str) or not event:
        raise InvalidEventError("event", event, "the event name must be a non-empty str")
    props = _mapping("properties", msg.get("properties")) or {}
    ts = _epoch("properties.time", props.get("time"))
    insert = props.get("$insert_id")
    fields = {"messageId": "properties.$insert_id", "timestamp": "properties.time"}
    if event == "$identify":
        fields.update({"userId": "properties.$identified_id", "anonymousId": "properties.$anon_id"})
        return [
            _message(
                "identify",
                fields,
                messageId=insert,
                timestamp=ts,
                userId=props.get("$identified_id"),
                anonymousId=props.get("$anon_id"),
            )
        ]
    if event == "$create_alias":
        fields.update({"userId": "properties.alias", "previousId": "properties.distinct_id"})
        return [
            _message(
                "alias",
                fields,
                messageId=insert,
                timestamp=ts,
                userId=props.get("alias"),
                previousId=props.get("distinct_id"),
                previous_kind=ANONYMOUS_ID,
            )
        ]
    if event == "$merge":
        ids = props.get("$distinct_ids")
        if not isinstance(ids, list) or len(ids) != 2:
            raise InvalidEventError(
                "properties.$distinct_ids", ids, "$merge needs a list of two distinct_ids"
            )
        return [
            _Merge(
                a=(USER_ID, ids[0]),
                b=(USER_ID, ids[1]),
                timestamp=ts,
                event_id=insert,
                fields={
                    "a": "properties.$distinct_ids[0]",
                    "b": "properties.$distinct_ids[1]",
                    "event_id": "properties.$insert_id",
                },
            )
        ]
    # Simplified ID Merge: $user_id and $device_id say who; a bare distinct_id is a user id
    # unless it is "$device:..." (docs/formats.md, Mixpanel).
    user = props.get("$user_id")
    anon = props.get("$device_id")
    fields.update({"userId": "properties.$user_id", "anonymousId": "properties.$device_id"})
    if user is None and anon is None:
        user, anon = _mixpanel_distinct(props.get("distinct_id"))
        fields.update({"userId": "properties.distinct_id", "anonymousId": "properties.distinct_id"})
    skip = {"token", "distinct_id", "time", "$insert_id", "$user_id", "$device_id"}
    ops = [
        _message(
            "track",
            fields,
            messageId=insert,
            timestamp=ts,
            event=event,
            userId=user,
            anonymousId=anon,
            properties={k: v for k, v in props.items() if k not in skip},
        )
    ]
    company = props.get(COMPANY_GROUP)
    if isinstance(company, list) and len(company) == 1:
        company = company[0]
    if isinstance(company, (str, int)) and not isinstance(company, bool):
        ops.append(
            _membership(
                insert, ts, user, anon, company, {**fields, "groupId": "properties.company"}
            )
        )
    return ops


# -- Amplitude HTTP API v2 --------------------------------------------------------------


def _amplitude_ops(value: Any, field: str) -> tuple[Any, Any]:
    """($set, $setOnce) of Amplitude user or group properties; plain properties are $set."""
    props = _mapping(field, value)
    if props is None:
        return None, None
    if not any(isinstance(k, str) and k.startswith("$") for k in props):
        return props, None
    return props.get("$set"), props.get("$setOnce")


def _amplitude(msg: Mapping[str, Any]) -> list[Any]:
    etype = msg.get("event_type")
    if not isinstance(etype, str) or not etype:
        raise InvalidEventError("event_type", etype, "must be a non-empty str")
    ts = _ms("time", msg.get("time"))
    insert = msg.get("insert_id")
    user, device = msg.get("user_id"), msg.get("device_id")
    fields = {
        "messageId": "insert_id",
        "timestamp": "time",
        "userId": "user_id",
        "anonymousId": "device_id",
        "traits": "user_properties.$set",
        "set_once": "user_properties.$setOnce",
    }
    groups = _mapping("groups", msg.get("groups"))
    company = None if groups is None else groups.get(COMPANY_GROUP)
    if isinstance(company, list) and len(company) == 1:
        company = company[0]
    if etype == "$groupidentify":
        if company is None:
            return []
        sets, _ = _amplitude_ops(msg.get("group_properties"), "group_properties")
        fields.update({"groupId": "groups.company", "traits": "group_properties.$set"})
        return [
            _message(
                "group",
                fields,
                messageId=insert,
                timestamp=ts,
                groupId=company,
                traits=sets,
                company_only=True,
            )
        ]
    sets, once = _amplitude_ops(msg.get("user_properties"), "user_properties")
    ops: list[Any] = []
    if etype == "$identify" or sets is not None or once is not None:
        ops.append(
            _message(
                "identify",
                fields,
                messageId=insert if etype == "$identify" else _derived(insert, "identify"),
                timestamp=ts,
                userId=user,
                anonymousId=device,
                traits=sets,
                set_once=once,
            )
        )
    if etype != "$identify":
        ops.insert(
            0,
            _message(
                "track",
                {**fields, "properties": "event_properties"},
                messageId=insert,
                timestamp=ts,
                event=etype,
                userId=user,
                anonymousId=device,
                properties=msg.get("event_properties"),
            ),
        )
    if isinstance(company, (str, int)) and not isinstance(company, bool):
        ops.append(
            _membership(insert, ts, user, device, company, {**fields, "groupId": "groups.company"})
        )
    return ops


# -- Moesif -----------------------------------------------------------------------------


def session_token_identifier(token: str) -> str:
    """The ``api_key`` identifier a Moesif event's ``session_token`` becomes: ``"st_"`` and
    32 hex digits of its SHA-256 (docs/formats.md, Moesif). The token is a credential (the
    caller's API key or session token), so it is never stored as it is; look a caller up with
    ``graph.profile(identifier=("api_key", session_token_identifier(token)))``."""
    if not isinstance(token, str):
        raise InvalidEventError("session_token", token, "must be a str")
    return "st_" + hashlib.sha256(token.strip().encode("utf-8", "surrogatepass")).hexdigest()[:32]


def _token(token: Any) -> Any:
    """A session token as its identifier; what is not a usable token (an empty or non-text
    value) is left as it is, to be refused by the reading, naming ``session_token``."""
    if isinstance(token, int) and not isinstance(token, bool):
        token = str(token)
    if not isinstance(token, str) or not token.strip():
        return token
    return session_token_identifier(token)


def _moesif(msg: Mapping[str, Any]) -> list[Any]:
    request = _mapping("request", msg.get("request"))
    user, company = msg.get("user_id"), msg.get("company_id")
    token = _token(msg.get("session_token"))
    fields = {
        "userId": "user_id",
        "groupId": "company_id",
        "identifiers": "session_token",
        "messageId": "transaction_id",
        "timestamp": "request.time",
    }
    if request is None:
        # a user or company profile update: metadata are its traits
        metadata = _mapping("metadata", msg.get("metadata"))
        ts = _epoch("modified_time", msg.get("modified_time"))
        fields.update({"traits": "metadata", "timestamp": "modified_time"})
        if user is None:
            return [
                _message(
                    "group",
                    fields,
                    timestamp=ts,
                    groupId=company,
                    traits=metadata,
                    company_only=True,
                )
            ]
        ops: list[Any] = [_message("identify", fields, timestamp=ts, userId=user, traits=metadata)]
        if company is not None:
            ops.append(_membership(None, ts, user, None, company, fields))
        return ops
    ts = _epoch("request.time", request.get("time"))
    action = msg.get("action_name")
    name = action if action is not None else "API call"
    if action is not None:
        fields["event"] = "action_name"
    response = _mapping("response", msg.get("response")) or {}
    props = {
        k: v
        for k, v in (
            ("verb", request.get("verb")),
            ("uri", request.get("uri")),
            ("status", response.get("status")),
        )
        if v is not None
    }
    event_id = msg.get("transaction_id")
    ops = [
        _message(
            "track",
            fields,
            messageId=event_id,
            timestamp=ts,
            event=name,
            userId=user,
            identifiers=None if token is None else {"api_key": token},
            properties=props or None,
        )
    ]
    if company is not None and (user is not None or token is not None):
        membership = _membership(event_id, ts, user, None, company, fields)
        if user is None:
            membership["identifiers"] = {"api_key": token}
        ops.append(membership)
    return ops


_READERS: dict[str, Callable[[Mapping[str, Any]], list[Any]]] = {
    "posthog": _posthog,
    "mixpanel": _mixpanel,
    "amplitude": _amplitude,
    "moesif": _moesif,
}
