"""Turning user input into validated event records: the write methods' arguments, event
objects and Segment/RudderStack-spec dicts all become a :class:`Record` here
(docs/concepts.md: operations, errors).

A ``Record`` holds normalized identifiers in priority order (blocked ones set aside), the
timestamp as epoch seconds, the ``event_id`` (derived from the content when missing) and a
fingerprint of the content that tells a duplicate from an ``event_id`` reused with other
content. Nothing here touches the graph: validation finishes before anything is applied.
"""

from __future__ import annotations

import hashlib
import json
import math
import struct
from collections.abc import Callable, Mapping
from datetime import datetime
from json.encoder import c_make_encoder as _c_make_encoder  # type: ignore[attr-defined]
from json.encoder import encode_basestring_ascii as _encode_ascii
from typing import Any

from identityres._model import (
    ANONYMOUS_ID,
    USER_ID,
    Alias,
    Forget,
    Identifier,
    Identify,
    IdentifyCompany,
    Merge,
    Reason,
    Reset,
    Split,
    Track,
)
from identityres._rules import CompiledRules, strip_whitespace
from identityres.errors import (
    IdentifierTypeError,
    InvalidEventError,
    InvalidTimestampError,
    UnknownKindError,
    ValidationError,
)

__all__ = [
    "ALIAS",
    "COMPANY",
    "FORGET",
    "IDENTIFY",
    "MERGE",
    "RESET",
    "SPLIT",
    "TRACK",
    "Record",
    "RecordBuilder",
]

TRACK, IDENTIFY, ALIAS, RESET, COMPANY, MERGE, SPLIT, FORGET = range(8)
#: Pseudo kind for company ids: validated like identifier values, normalized by stripping.
COMPANY_KIND = -1
EVENT_TYPES = (
    "track",
    "identify",
    "alias",
    "reset",
    "identify_company",
    "merge",
    "split",
    "forget",
)

Clock = Callable[[], "datetime | float | int"]


class Record:
    """One validated event, ready for the engine."""

    __slots__ = (
        "blocked",
        "company_id",
        "company_traits",
        "content",
        "etype",
        "event_id",
        "fingerprint",
        "ids",
        "set_once",
        "traits",
        "ts",
    )

    def __init__(
        self,
        etype: int,
        ts: float,
        event_id: str,
        ids: tuple[tuple[int, str], ...],
        blocked: tuple[tuple[str, str, Reason], ...],
        content: tuple[Any, ...],
        fingerprint: bytes,
        traits: dict[str, Any] | None = None,
        set_once: dict[str, Any] | None = None,
        company_id: str | None = None,
        company_traits: dict[str, Any] | None = None,
    ) -> None:
        self.etype = etype
        self.ts = ts
        self.event_id = event_id
        #: valid identifiers as ``(kind_index, value)``, priority order, no repeats
        self.ids = ids
        #: blocked values as ``(kind, value, reason)``
        self.blocked = blocked
        #: everything that makes the event what it is, as a hashable tuple: equal content
        #: with an equal ``event_id`` is a duplicate, other content is a conflict
        self.content = content
        #: :func:`fingerprint` of ``content``: what stores keep to recognize a redelivery
        self.fingerprint = fingerprint
        self.traits = traits
        self.set_once = set_once
        self.company_id = company_id
        self.company_traits = company_traits


# Content fingerprints must not depend on dict order: sort keys.  ``default=repr`` keeps
# odd but harmless values (datetimes in properties) from failing the write.  One encoder
# for the process: ``json.dumps`` with options builds a new one per call, which was a tenth
# of the per-event cost of a track with properties; ``JSONEncoder.encode`` still builds the
# C encoder per call, so the C encoder is built once here (the same options as the
# ``JSONEncoder``, which stays the fallback where the C accelerator is missing). Without the
# circular-reference markers, a cycle ends in ``RecursionError`` like very deep nesting
# does: both are bad input.
_CONTENT_JSON = json.JSONEncoder(sort_keys=True, separators=(",", ":"), default=repr)
_C_JSON = (
    None
    if _c_make_encoder is None
    else _c_make_encoder(None, repr, _encode_ascii, None, ":", ",", True, False, True)
)


def _json(value: dict[str, Any], field: str) -> str:
    try:
        if _C_JSON is not None:
            return "".join(_C_JSON(value, 0))
        return _CONTENT_JSON.encode(value)
    except (TypeError, ValueError) as exc:  # e.g. a nested mapping with mixed key types
        raise InvalidEventError(field, value, f"not JSON-like: {exc}") from None
    except RecursionError:
        raise InvalidEventError(
            field, value, "nested too deeply, or holds itself (a circular reference)"
        ) from None


def _kind_of(pair: tuple[int, str]) -> int:
    return pair[0]


# A fingerprint's text: the fields of the content joined by ``_SEP``, each field tagged by its
# first character (``s`` a str, ``n`` None, ``#`` the repr of anything else, ``k`` a kind and
# value), ``_SEP`` doubled inside values. Fields are never empty and never start with
# ``_SEP``, so a single ``_SEP`` always ends a field: the text tells every content apart. The
# timestamp comes first, as the 8 bytes of the double (NaN for none), which is cheaper than
# its repr. No length prefixes: on the fast paths, identifiers are ASCII and properties are
# ASCII JSON, so only the event name can hold ``_SEP`` and needs the (rare) doubling.
_SEP = "\uffff"
_SEP2 = _SEP + _SEP
_TS = struct.Struct("<d").pack
_NO_TS = _TS(math.nan)


def _field(value: Any) -> str:
    if value is None:
        return "n"
    if type(value) is str:
        return "s" + value.replace(_SEP, _SEP2)
    return "#" + repr(value).replace(_SEP, _SEP2)


def fingerprint(content: tuple[Any, ...], kind_names: tuple[str, ...]) -> bytes:
    """A digest of an event's content that is the same in every process (``hash()`` of
    strings is not) and does not depend on the rules' priority (kinds are named, not
    numbered). Equal digests under one ``event_id``: a redelivery; different: a conflict.

    One function for every writer: the in-place engine, batches and every store keep these
    bytes. ``RecordBuilder``'s track and identify fast paths write the same text inline
    (checked by ``tests/test_fast_paths.py``)."""
    etype, ts, pairs, *rest = content
    fields = [EVENT_TYPES[etype]]
    fields.extend(f"k{kind_names[k]}={v.replace(_SEP, _SEP2)}" for k, v in pairs)
    fields.extend(_field(r) for r in rest)
    text = _SEP.join(fields)
    stamp = _NO_TS if ts is None else _TS(ts)
    return _digest(stamp + text.encode("utf-8", "surrogatepass"), digest_size=16).digest()


_digest = hashlib.blake2b


def legacy_fingerprint(content: tuple[Any, ...], kind_names: tuple[str, ...]) -> bytes:
    """The digest identityres 0.1 stored as a fingerprint, and still the digest a derived
    ``event_id`` is made of (so that events sent without an id keep their ids). Computed
    only when a stored fingerprint differs from :func:`fingerprint`'s, to recognize a
    redelivery of an event that a store written by 0.1 holds."""
    etype, ts, pairs, *rest = content
    named = (EVENT_TYPES[etype], ts, tuple((kind_names[k], v) for k, v in pairs), *rest)
    return _digest(repr(named).encode("utf-8", "surrogatepass"), digest_size=16).digest()


def same_content(stored: bytes, rec: Record, kind_names: tuple[str, ...]) -> bool:
    """Whether ``stored`` (a fingerprint a store holds under ``rec.event_id``) is this
    record's: a redelivery rather than a conflicting reuse of the id."""
    return stored == rec.fingerprint or stored == legacy_fingerprint(rec.content, kind_names)


def derive_event_id(content: tuple[Any, ...], kind_names: tuple[str, ...]) -> str:
    """The ``event_id`` of an event written without one: a digest of its content, so the
    same event sent twice is recognized as a duplicate (docs/concepts.md, event ids)."""
    return "ev-" + legacy_fingerprint(content, kind_names).hex()


def to_timestamp(value: Any, field: str = "timestamp") -> float:
    """Validate a timestamp and return epoch seconds (docs/concepts.md: operations, errors)."""
    t = type(value)
    if t is float or t is int:
        try:
            ts = float(value)
        except OverflowError:  # an int beyond any float
            ts = math.inf
        if not math.isfinite(ts):
            raise InvalidTimestampError(field, value, "must be a finite number of epoch seconds")
        return ts
    if isinstance(value, datetime):
        if value.tzinfo is None or value.utcoffset() is None:
            raise InvalidTimestampError(
                field, value, "naive datetime: give a timezone-aware datetime (e.g. tzinfo=UTC)"
            )
        return value.timestamp()
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return to_timestamp(float(value) if isinstance(value, float) else int(value), field)
    raise InvalidTimestampError(
        field, value, f"must be a tz-aware datetime or epoch seconds, not {t.__name__}"
    )


def parse_iso_timestamp(value: Any, field: str) -> float:
    """An ISO-8601 string (as in Segment messages) or any value ``to_timestamp`` takes."""
    if isinstance(value, str):
        text = value.strip()
        if text.endswith(("Z", "z")):
            text = text[:-1] + "+00:00"
        try:
            parsed = datetime.fromisoformat(text)
        except ValueError:
            raise InvalidTimestampError(field, value, "not an ISO-8601 timestamp") from None
        return to_timestamp(parsed, field)
    return to_timestamp(value, field)


def _json_data(field: str, value: dict[str, Any] | None) -> dict[str, Any] | None:
    """Traits are stored: they must be JSON data, and are kept as JSON reads them back
    (tuples become lists), so that every store gives the same values."""
    if value is None:
        return None
    try:
        data: dict[str, Any] = json.loads(json.dumps(value, allow_nan=True))
    except (TypeError, ValueError) as exc:
        raise InvalidEventError(field, value, f"must be JSON data: {exc}") from None
    return data


def _check_mapping(field: str, value: Any) -> dict[str, Any] | None:
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise InvalidEventError(field, value, f"must be a mapping, not {type(value).__name__}")
    for key in value:
        if not isinstance(key, str):
            raise InvalidEventError(field, value, f"keys must be str, found {key!r}")
    # ``{}`` and ``None`` say the same thing; keep them the same content.
    return dict(value) if value else None


class RecordBuilder:
    """Validates input against one set of rules and builds :class:`Record` objects."""

    __slots__ = (
        "_clock",
        "_plain_lookup",
        "_plain_pair",
        "_quick_exact",
        "_quick_len",
        "_quick_words",
        "_rules",
    )

    def __init__(self, rules: CompiledRules, clock: Clock) -> None:
        self._rules = rules
        self._clock = clock
        # The fast paths apply when user ids and anonymous ids use the default normalizer
        # and user_id outranks anonymous_id; they then need only ``_quick`` per value.
        # A lookup needs only the default normalizers; a write also the default priority.
        self._plain_lookup = (
            rules.normalizers[rules.user] is strip_whitespace
            and rules.normalizers[rules.anon] is strip_whitespace
        )
        self._plain_pair = self._plain_lookup and rules.user < rules.anon and not rules.patterns
        self._quick_exact = rules.blocked_exact
        self._quick_words = rules.blocked_insensitive
        self._quick_len = (rules.ci_max_len, rules.max_length)

    def _quick(self, value: str) -> bool:
        """True when ``value`` is certainly not blocked (most real ids); False means "ask
        ``blocked_reason``", not "blocked"."""
        short, longest = self._quick_len
        n = len(value)
        if n > longest or value in self._quick_exact or value[0] in "'\"":
            return False
        return n > short or value.lower() not in self._quick_words

    # -- pieces ---------------------------------------------------------------------------

    def timestamp(self, value: Any) -> float:
        if value is None:
            value = self._clock()
        return to_timestamp(value)

    def identifier_value(self, field: str, kind: int, raw: Any) -> str:
        t = type(raw)
        if t is str:
            value: str = raw
        elif t is int or isinstance(raw, str):
            value = str(raw)
        elif isinstance(raw, int) and not isinstance(raw, bool):
            value = str(int(raw))
        else:
            raise IdentifierTypeError(field, raw, f"must be str or int, not {t.__name__}")
        value = value.strip() if kind == COMPANY_KIND else self._rules.normalizers[kind](value)
        if type(value) is not str:
            raise IdentifierTypeError(field, raw, "the kind's normalizer did not return a str")
        if not value.isascii():
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                raise IdentifierTypeError(
                    field, raw, "contains lone surrogates; not valid Unicode text"
                ) from None
        return value

    def kind(self, field: str, kind: Any) -> int:
        index = self._rules.kind_index.get(kind) if isinstance(kind, str) else None
        if index is None:
            raise UnknownKindError(
                field, kind, f"unknown identifier kind; declared: {list(self._rules.kind_names)}"
            )
        return index

    def identifier(self, field: str, ident: Any) -> tuple[int, str]:
        """An ``Identifier`` or ``(kind, value)`` pair, validated and normalized."""
        if isinstance(ident, Identifier):
            kind, raw = ident.kind, ident.value
        elif isinstance(ident, tuple) and len(ident) == 2:
            kind, raw = ident
        else:
            raise InvalidEventError(field, ident, "must be an Identifier or a (kind, value) pair")
        k = self.kind(field, kind)
        return k, self.identifier_value(field, k, raw)

    def lookup(self, user_id: Any, anonymous_id: Any, identifier: Any) -> tuple[int, str]:
        """The identifier a read asks for: exactly one of ``user_id=``, ``anonymous_id=``,
        ``identifier=``, validated and normalized like a write's."""
        if identifier is None and self._plain_lookup:
            # The hot path of bulk lookups: a plain ASCII str under the default normalizer
            # needs no more validation than stripping (the same answer as below).
            if anonymous_id is None and type(user_id) is str and user_id.isascii():
                return self._rules.user, user_id.strip()
            if user_id is None and type(anonymous_id) is str and anonymous_id.isascii():
                return self._rules.anon, anonymous_id.strip()
        if sum(x is not None for x in (user_id, anonymous_id, identifier)) != 1:
            raise InvalidEventError(
                "identifier",
                (user_id, anonymous_id, identifier),
                "give exactly one of user_id=, anonymous_id=, identifier=",
            )
        rules = self._rules
        if user_id is not None:
            return rules.user, self.identifier_value("user_id", rules.user, user_id)
        if anonymous_id is not None:
            return rules.anon, self.identifier_value("anonymous_id", rules.anon, anonymous_id)
        return self.identifier("identifier", identifier)

    def event_id(self, value: Any) -> str:
        if type(value) is str and value and value.isascii():
            return value
        if isinstance(value, str) and value:
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                raise InvalidEventError(
                    "event_id", value, "contains lone surrogates; not valid Unicode text"
                ) from None
            return str(value)
        if isinstance(value, int) and not isinstance(value, bool):
            return str(value)
        raise InvalidEventError("event_id", value, "must be a non-empty str (or an int)")

    def _finish(
        self,
        etype: int,
        ts: float,
        event_id: Any,
        pairs: list[tuple[int, str]],
        payload: tuple[Any, ...],
        traits: dict[str, Any] | None = None,
        set_once: dict[str, Any] | None = None,
        company_id: str | None = None,
        company_traits: dict[str, Any] | None = None,
        clocked: bool = False,
    ) -> Record:
        rules = self._rules
        blocked_reason = rules.blocked_reason
        valid: list[tuple[int, str]] = []
        blocked: list[tuple[str, str, Reason]] = []
        for pair in pairs:
            reason = blocked_reason(pair[1])
            if reason is None:
                if pair not in valid:
                    valid.append(pair)
            else:
                item = (rules.kind_names[pair[0]], pair[1], reason)
                if item not in blocked:
                    blocked.append(item)
        if len(valid) > 1:
            # Stable sort: equal kinds keep the caller's order (alias: the new id anchors).
            valid.sort(key=_kind_of)
        # Repeats of one identifier are one identifier: they do not make other content.
        # A timestamp taken from the clock is not part of what the caller sent: an event
        # redelivered under the same event_id must still be a duplicate, not a conflict.
        # (Without an event_id the clock time stays in, or two calls a second apart would
        # be one event.)
        stamped = None if clocked and event_id is not None else ts
        content = (etype, stamped, tuple(dict.fromkeys(pairs)), company_id, *payload)
        if event_id is None:
            eid = derive_event_id(content, rules.kind_names)
        else:
            eid = self.event_id(event_id)
        return Record(
            etype,
            ts,
            eid,
            tuple(valid),
            tuple(blocked),
            content,
            fingerprint(content, rules.kind_names),
            traits,
            set_once,
            company_id,
            company_traits,
        )

    def _extra(self, identifiers: Any, pairs: list[tuple[int, str]]) -> None:
        if identifiers is None:
            return
        if not isinstance(identifiers, Mapping):
            raise InvalidEventError("identifiers", identifiers, "must be a mapping kind -> value")
        extra = []
        for kind, raw in identifiers.items():
            k = self.kind("identifiers", kind)
            extra.append((k, self.identifier_value(f"identifiers[{kind!r}]", k, raw)))
        # A mapping's order carries no meaning: sort so that it does not change the content.
        extra.sort()
        pairs.extend(extra)

    def _single_kind_check(self, pairs: list[tuple[int, str]]) -> None:
        # ``user_id=`` and ``identifiers={"user_id": ...}`` naming two different values
        # would be two identified users in one event: almost surely a caller bug.
        by_kind: dict[int, str] = {}
        for k, v in pairs:
            if by_kind.setdefault(k, v) != v:
                name = self._rules.kind_names[k]
                raise InvalidEventError(
                    "identifiers", v, f"a second {name} in one event (already {by_kind[k]!r})"
                )

    # -- one builder per operation ---------------------------------------------------------

    def _fast_track(
        self,
        event: str,
        user_id: Any,
        anonymous_id: Any,
        properties: Any,
        timestamp: float,
        event_id: str,
    ) -> Record | None:
        """The record of a track whose values need no more than ``_quick``
        (plain str ids, plain dict properties); ``None``: take the general path, which
        raises or handles what this one does not, in its own order of checks."""
        try:
            ts = float(timestamp)
        except OverflowError:
            return None
        if ts - ts != 0.0:  # NaN or infinite
            return None
        rules = self._rules
        quick = self._quick
        if user_id is None:
            if type(anonymous_id) is not str:
                return None
            a = anonymous_id.strip()
            if not (a.isascii() and quick(a)):
                return None
            ids: tuple[tuple[int, str], ...] = ((rules.anon, a),)
            text = f"\uffffkanonymous_id={a}"
        elif anonymous_id is None:
            if type(user_id) is not str:
                return None
            u = user_id.strip()
            if not (u.isascii() and quick(u)):
                return None
            ids = ((rules.user, u),)
            text = f"\uffffkuser_id={u}"
        else:
            if type(user_id) is not str or type(anonymous_id) is not str:
                return None
            u = user_id.strip()
            a = anonymous_id.strip()
            if not (u.isascii() and a.isascii() and quick(u) and quick(a)):
                return None
            ids = ((rules.user, u), (rules.anon, a))
            text = f"\uffffkuser_id={u}\uffffkanonymous_id={a}"
        if not properties:
            if properties is not None and type(properties) is not dict:
                return None
            props = None
        else:
            if type(properties) is not dict:
                return None
            for key in properties:
                if type(key) is not str:
                    return None
            props = _json(properties, "properties")
        # ``fingerprint``'s text for this content, written out (identifiers here are ASCII
        # and so is the properties' JSON: only the event name may hold the separator)
        name = event if "\uffff" not in event else event.replace(_SEP, _SEP2)
        text = f"track{text}\uffffn\uffffs{name}\uffff" + ("n" if props is None else "s" + props)
        digest = _digest(_TS(ts) + text.encode("utf-8", "surrogatepass"), digest_size=16).digest()
        return Record(TRACK, ts, event_id, ids, (), (TRACK, ts, ids, None, event, props), digest)

    def track(
        self,
        event: Any,
        anonymous_id: Any,
        user_id: Any,
        identifiers: Any,
        properties: Any,
        timestamp: Any,
        event_id: Any,
    ) -> Record:
        rules = self._rules
        if (
            type(event) is str
            and event
            and identifiers is None
            and type(event_id) is str
            and event_id
            and event_id.isascii()
            and type(timestamp) in (float, int)
            and self._plain_pair
        ):
            # The hot path of bulk tracking: same result as below, fewer calls.
            fast = self._fast_track(event, user_id, anonymous_id, properties, timestamp, event_id)
            if fast is not None:
                return fast
        if not isinstance(event, str) or not event:
            raise InvalidEventError("event", event, "the event name must be a non-empty str")
        pairs: list[tuple[int, str]] = []
        if user_id is not None:
            pairs.append((rules.user, self.identifier_value("user_id", rules.user, user_id)))
        if anonymous_id is not None:
            pairs.append(
                (rules.anon, self.identifier_value("anonymous_id", rules.anon, anonymous_id))
            )
        self._extra(identifiers, pairs)
        if not pairs:
            raise InvalidEventError(
                "identifiers", None, "track needs anonymous_id, user_id or identifiers"
            )
        if identifiers:
            self._single_kind_check(pairs)
        props = _check_mapping("properties", properties)
        ts = self.timestamp(timestamp)
        payload = (event, None if props is None else _json(props, "properties"))
        return self._finish(TRACK, ts, event_id, pairs, payload, clocked=timestamp is None)

    def identify(
        self,
        user_id: Any,
        anonymous_id: Any,
        identifiers: Any,
        traits: Any,
        set_once: Any,
        timestamp: Any,
        event_id: Any,
    ) -> Record:
        rules = self._rules
        if (
            type(user_id) is str
            and type(anonymous_id) is str
            and identifiers is None
            and traits is None
            and set_once is None
            and type(event_id) is str
            and event_id
            and event_id.isascii()
            and type(timestamp) in (float, int)
            and self._plain_pair
        ):
            # The hot path of bulk identify: same result as below, fewer calls.
            try:
                ts = float(timestamp)
            except OverflowError:  # the general path says which field is wrong first
                ts = math.nan
            u = user_id.strip()
            a = anonymous_id.strip()
            if ts - ts == 0.0 and u.isascii() and a.isascii() and self._quick(u) and self._quick(a):
                fast = ((rules.user, u), (rules.anon, a))
                # ``fingerprint``'s text for this content, written out
                text = f"identify\uffffkuser_id={u}\uffffkanonymous_id={a}\uffffn\uffffn\uffffn"
                digest = _digest(_TS(ts) + text.encode(), digest_size=16).digest()
                content = (IDENTIFY, ts, fast, None, None, None)
                return Record(IDENTIFY, ts, event_id, fast, (), content, digest)
        if user_id is None:
            raise InvalidEventError("user_id", None, "identify needs a user_id")
        pairs = [(rules.user, self.identifier_value("user_id", rules.user, user_id))]
        if anonymous_id is not None:
            pairs.append(
                (rules.anon, self.identifier_value("anonymous_id", rules.anon, anonymous_id))
            )
        if identifiers is not None:
            self._extra(identifiers, pairs)
            self._single_kind_check(pairs)
        t = _json_data("traits", _check_mapping("traits", traits))
        s = _json_data("set_once", _check_mapping("set_once", set_once))
        ts = self.timestamp(timestamp)
        payload = (
            None if t is None else _json(t, "traits"),
            None if s is None else _json(s, "set_once"),
        )
        return self._finish(
            IDENTIFY, ts, event_id, pairs, payload, traits=t, set_once=s, clocked=timestamp is None
        )

    def alias(self, user_id: Any, previous_id: Any, timestamp: Any, event_id: Any) -> Record:
        rules = self._rules
        if user_id is None:
            raise InvalidEventError("user_id", None, "alias needs a user_id")
        pairs = [(rules.user, self.identifier_value("user_id", rules.user, user_id))]
        if previous_id is None:
            raise InvalidEventError("previous_id", None, "alias needs a previous_id")
        if isinstance(previous_id, (Identifier, tuple)):
            pairs.append(self.identifier("previous_id", previous_id))
        else:
            pairs.append(
                (rules.user, self.identifier_value("previous_id", rules.user, previous_id))
            )
        ts = self.timestamp(timestamp)
        return self._finish(ALIAS, ts, event_id, pairs, (), clocked=timestamp is None)

    def reset(self, anonymous_id: Any, timestamp: Any, event_id: Any) -> Record:
        rules = self._rules
        if anonymous_id is None:
            raise InvalidEventError("anonymous_id", None, "reset needs an anonymous_id")
        pairs = [(rules.anon, self.identifier_value("anonymous_id", rules.anon, anonymous_id))]
        ts = self.timestamp(timestamp)
        return self._finish(RESET, ts, event_id, pairs, (), clocked=timestamp is None)

    def identify_company(
        self,
        company_id: Any,
        user_id: Any,
        anonymous_id: Any,
        traits: Any,
        timestamp: Any,
        event_id: Any,
    ) -> Record:
        rules = self._rules
        if company_id is None:
            raise InvalidEventError("company_id", None, "identify_company needs a company_id")
        # Company ids share the identifier validation (type, normalization, blocking) so a
        # company called "null" is as blocked as a user called "null".
        cid = self.identifier_value("company_id", COMPANY_KIND, company_id)
        pairs: list[tuple[int, str]] = []
        if user_id is not None:
            pairs.append((rules.user, self.identifier_value("user_id", rules.user, user_id)))
        if anonymous_id is not None:
            pairs.append(
                (rules.anon, self.identifier_value("anonymous_id", rules.anon, anonymous_id))
            )
        if not pairs:
            raise InvalidEventError(
                "user_id", None, "identify_company needs a user_id or an anonymous_id"
            )
        t = _json_data("traits", _check_mapping("traits", traits))
        ts = self.timestamp(timestamp)
        blocked_company = rules.blocked_reason(cid)
        record = self._finish(
            COMPANY,
            ts,
            event_id,
            pairs,
            (None if t is None else _json(t, "traits"),),
            company_id=cid if blocked_company is None else None,
            company_traits=t if blocked_company is None else None,
            clocked=timestamp is None,
        )
        if blocked_company is not None:
            record.blocked = (*record.blocked, ("company_id", cid, blocked_company))
        return record

    def operator_identifier(self, field: str, ident: Any) -> tuple[int, str]:
        """An operator's identifier argument: an ``Identifier``, a ``(kind, value)`` pair, or
        a plain value meaning a ``user_id``."""
        if isinstance(ident, (Identifier, tuple)):
            return self.identifier(field, ident)
        if ident is None:
            raise InvalidEventError(field, None, "an identifier is required")
        user = self._rules.user
        return user, self.identifier_value(field, user, ident)

    def merge(self, a: Any, b: Any, timestamp: Any, event_id: Any) -> Record:
        pairs = [self.operator_identifier("a", a), self.operator_identifier("b", b)]
        ts = self.timestamp(timestamp)
        return self._finish(MERGE, ts, event_id, pairs, (), clocked=timestamp is None)

    def split(self, identifier: Any, timestamp: Any, event_id: Any) -> Record:
        pairs = [self.operator_identifier("identifier", identifier)]
        ts = self.timestamp(timestamp)
        return self._finish(SPLIT, ts, event_id, pairs, (), clocked=timestamp is None)

    def forget(self, identifier: Any, timestamp: Any, event_id: Any) -> Record:
        pair = self.operator_identifier("identifier", identifier)
        ts = self.timestamp(timestamp)
        record = self._finish(FORGET, ts, event_id, [pair], (), clocked=timestamp is None)
        # A blocked value is no identifier, but it can still be asked to be forgotten:
        # erase it (there is nothing to remove) rather than ignore the request.
        record.ids = (pair,)
        record.blocked = ()
        return record

    # -- event objects and Segment-spec dicts ----------------------------------------------

    def from_object(self, event: Any) -> Record:
        if isinstance(event, Track):
            return self.track(
                event.event,
                event.anonymous_id,
                event.user_id,
                event.identifiers,
                event.properties,
                event.timestamp,
                event.event_id,
            )
        if isinstance(event, Identify):
            return self.identify(
                event.user_id,
                event.anonymous_id,
                event.identifiers,
                event.traits,
                event.set_once,
                event.timestamp,
                event.event_id,
            )
        if isinstance(event, Alias):
            return self.alias(event.user_id, event.previous_id, event.timestamp, event.event_id)
        if isinstance(event, Reset):
            return self.reset(event.anonymous_id, event.timestamp, event.event_id)
        if isinstance(event, IdentifyCompany):
            return self.identify_company(
                event.company_id,
                event.user_id,
                event.anonymous_id,
                event.traits,
                event.timestamp,
                event.event_id,
            )
        if isinstance(event, Merge):
            return self.merge(event.a, event.b, event.timestamp, event.event_id)
        if isinstance(event, Split):
            return self.split(event.identifier, event.timestamp, event.event_id)
        if isinstance(event, Forget):
            return self.forget(event.identifier, event.timestamp, event.event_id)
        if isinstance(event, Mapping):
            return self.from_message(event)
        raise InvalidEventError(
            "event", event, "must be an event object (Track, Identify, …) or a message dict"
        )

    def from_message(self, msg: Mapping[str, Any]) -> Record:
        """A Segment/RudderStack-spec message (``type``, ``userId``, ``anonymousId``, …).

        identityres extensions: ``identifiers`` (kind -> value) on track and identify,
        ``set_once`` on identify, and ``type: "reset"``. ``page`` and ``screen`` messages are
        observations like ``track``.
        """
        mtype = msg.get("type")
        ts_raw = msg.get("timestamp", msg.get("originalTimestamp"))
        ts: Any = None if ts_raw is None else parse_iso_timestamp(ts_raw, "timestamp")
        event_id = msg.get("messageId")
        user_id = msg.get("userId")
        anonymous_id = msg.get("anonymousId")
        if mtype == "identify":
            return self.identify(
                user_id,
                anonymous_id,
                msg.get("identifiers"),
                msg.get("traits"),
                msg.get("set_once"),
                ts,
                event_id,
            )
        if mtype in ("track", "page", "screen"):
            name = msg.get("event") if mtype == "track" else msg.get("name") or mtype
            return self.track(
                name,
                anonymous_id,
                user_id,
                msg.get("identifiers"),
                msg.get("properties"),
                ts,
                event_id,
            )
        if mtype == "alias":
            previous = msg.get("previousId")
            # Segment's previousId is "an anonymous id or a user id the user had": it is an
            # anonymous id when it is the message's own anonymousId, else a user id.
            if previous is not None and anonymous_id is not None and previous == anonymous_id:
                previous = (ANONYMOUS_ID, previous)
            elif previous is not None:
                previous = (USER_ID, previous)
            return self.alias(user_id, previous, ts, event_id)
        if mtype == "group":
            return self.identify_company(
                msg.get("groupId"), user_id, anonymous_id, msg.get("traits"), ts, event_id
            )
        if mtype == "reset":
            return self.reset(anonymous_id, ts, event_id)
        raise InvalidEventError(
            "type", mtype, "must be one of identify, track, page, screen, alias, group, reset"
        )


def relabel(error: ValidationError, mapping: Mapping[str, str]) -> ValidationError:
    """Rename an error's field to the message key the user wrote (``userId``, …)."""
    field = error.field
    for ours, theirs in mapping.items():
        if field == ours or field.startswith(ours + "["):
            error.field = theirs + field[len(ours) :]
            error.args = (error._message(),)
            break
    return error


#: Our argument names -> Segment message keys, for error messages about ingested dicts.
MESSAGE_FIELDS = {
    "user_id": "userId",
    "anonymous_id": "anonymousId",
    "previous_id": "previousId",
    "company_id": "groupId",
    "event_id": "messageId",
    "event": "event",
}
