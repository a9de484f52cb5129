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
import re
import struct
import sys
from collections.abc import Callable, Mapping
from datetime import date, datetime, time
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
    AliasRefusedError,
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
    "MAX_NESTING",
    "MAX_TIMESTAMP",
    "MERGE",
    "MIN_TIMESTAMP",
    "RESET",
    "SPLIT",
    "TRACK",
    "Record",
    "RecordBuilder",
    "check_context",
    "from_epoch_ms",
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

#: The timestamps an event may carry, in epoch seconds: from 1900-01-01T00:00:00Z (included)
#: to 3000-01-01T00:00:00Z (excluded) (docs/concepts.md, Timestamps and the clock).
MIN_TIMESTAMP = -2_208_988_800.0
MAX_TIMESTAMP = 32_503_680_000.0
#: How deep properties, traits and set_once may nest: the mapping itself is level 1, each
#: mapping or list inside it one level more (docs/concepts.md, Errors).
MAX_NESTING = 32


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


# Properties and traits must be JSON data (docs/concepts.md, Errors): ``dict`` with ``str``
# keys at the top, lists and tuples, ``str``, ``int``, finite ``float``, ``bool``, ``None``,
# and ``datetime``/``date``/``time`` values. Sets (their order follows ``PYTHONHASHSEED``),
# other objects (their repr may hold an address), NaN and infinities are refused, and so are
# lone surrogates, ints too long to turn into text and nesting deeper than ``MAX_NESTING``.
#
# Content fingerprints must not depend on dict order: sort keys. One encoder for the
# process: ``json.dumps`` with options builds a new one per call, which was a tenth of the
# per-event cost of a track with properties; ``JSONEncoder.encode`` still builds the C
# encoder per call, so the C encoder is built once here (the same options as the
# ``JSONEncoder``, which stays the fallback where the C accelerator is missing). Without the
# circular-reference markers, a cycle ends in ``RecursionError`` like very deep nesting
# does: both are bad input. The ASCII output escapes every non-ASCII character, so a lone
# surrogate can only be there when the text holds ``\ud``, and nesting deeper than the
# limit only when it holds more brackets than the limit: two cheap tests on the hot path,
# and a walk of the value only when one of them says so.


def _content_default(value: Any) -> Any:
    """What the content encoder makes of a value JSON has no type for: datetimes as their
    repr, as identityres 0.1 encoded them (properties are never stored: they only make the
    event id and fingerprint, which must stay the same), anything else refused."""
    if isinstance(value, (datetime, date, time)):
        return repr(value)
    raise _NotJSON(_not_json(value))


def _data_default(value: Any) -> Any:
    """What stored traits make of a value JSON has no type for: datetimes as ISO-8601
    strings (``datetime.isoformat``), anything else refused."""
    if isinstance(value, (datetime, date, time)):
        return value.isoformat()
    raise _NotJSON(_not_json(value))


class _NotJSON(TypeError):
    """A value JSON has no type for (its message is the whole reason)."""


def _not_json(value: Any) -> str:
    name = type(value).__name__
    if isinstance(value, (set, frozenset)):
        return f"a {name} is not JSON data (its order is not fixed): give a sorted list"
    return f"a {name} is not JSON data (give a str, int, float, bool, None, list or dict)"


_CONTENT_JSON = json.JSONEncoder(
    sort_keys=True, separators=(",", ":"), default=_content_default, allow_nan=False
)
_C_JSON = (
    None
    if _c_make_encoder is None
    else _c_make_encoder(None, _content_default, _encode_ascii, None, ":", ",", True, False, False)
)


def _shown(value: Any) -> str:
    """``repr(value)``, or a stand-in when it cannot be made (an int too long for text)."""
    try:
        return repr(value)
    except Exception:
        return f"<{type(value).__name__} that cannot be shown>"


def _valid_text(text: str) -> bool:
    """Whether ``text`` is valid Unicode (no lone surrogates, e.g. a truncated emoji)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


_LONE_SURROGATE = "holds a lone surrogate (e.g. a truncated emoji): not valid Unicode text"
_TOO_DEEP = f"nested more than {MAX_NESTING} levels deep, or holds itself (a circular reference)"


def _long_int() -> str:
    return (
        f"holds an int of more than {sys.get_int_max_str_digits()} digits, more than Python "
        "turns into text (sys.get_int_max_str_digits())"
    )


def _encoding_failed(field: str, value: Any, exc: Exception) -> InvalidEventError:
    text = str(exc)
    if isinstance(exc, _NotJSON):
        reason = text
    elif "integer string conversion" in text:
        reason = _long_int()
    elif "Out of range float" in text:
        reason = "NaN and infinities are not JSON data"
    else:
        reason = f"must be JSON data: {text}"
    return InvalidEventError(field, value, reason)


def _checked(field: str, value: Any, text: str) -> str:
    """``text`` (the ASCII JSON of ``value``) when ``value`` holds no lone surrogate and
    nests at most ``MAX_NESTING`` levels deep."""
    # Deeper than MAX_NESTING takes more than 2 * MAX_NESTING brackets: short texts (most)
    # are not counted.
    if "\\ud" in text or (
        len(text) > 2 * MAX_NESTING and text.count("{") + text.count("[") > MAX_NESTING
    ):
        problem = _problem(value)
        if problem is not None:
            raise InvalidEventError(field, value, problem)
    return text


def _problem(value: Any) -> str | None:
    """Why ``value`` (which encodes) is not JSON data: a lone surrogate in a key or a
    string, or nesting deeper than ``MAX_NESTING``; ``None`` when it is."""
    stack: list[tuple[Any, int, str]] = [(value, 1, "")]
    while stack:
        item, depth, path = stack.pop()
        if depth > MAX_NESTING:
            return f"nested more than {MAX_NESTING} levels deep (at {path})"
        if isinstance(item, dict):
            pairs: Any = item.items()
        elif isinstance(item, (list, tuple)):
            pairs = enumerate(item)
        else:
            continue
        for key, child in pairs:
            if isinstance(key, str) and not key.isascii() and not _valid_text(key):
                return f"{_LONE_SURROGATE} (a key at {path or 'the top'}: {key!r})"
            if isinstance(child, str):
                if not child.isascii() and not _valid_text(child):
                    return f"{_LONE_SURROGATE} (at {path}[{key!r}])"
            elif isinstance(child, (dict, list, tuple)):
                stack.append((child, depth + 1, f"{path}[{key!r}]"))
    return None


def _json(value: dict[str, Any], field: str) -> str:
    """The content text of properties or traits: sorted, ASCII JSON; raises
    :class:`InvalidEventError` naming ``field`` for what is not JSON data."""
    try:
        if _C_JSON is not None:
            text: str = "".join(_C_JSON(value, 0))
        else:
            text = _CONTENT_JSON.encode(value)
    except (TypeError, ValueError) as exc:  # e.g. a set, NaN, mixed key types
        raise _encoding_failed(field, value, exc) from None
    except RecursionError:
        raise InvalidEventError(field, value, _TOO_DEEP) from None
    return _checked(field, value, text)


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


def _outside(field: str, value: Any, ts: float) -> InvalidTimestampError:
    """The error for a finite timestamp outside the window, with a hint when it is in the
    window once read as milliseconds, microseconds or nanoseconds."""
    reason = (
        "outside the supported window 1900-01-01T00:00:00Z .. 3000-01-01T00:00:00Z "
        f"(epoch seconds {MIN_TIMESTAMP:.0f} .. {MAX_TIMESTAMP:.0f}, the end excluded)"
    )
    for unit, scale, advice in (
        ("milliseconds", 1e3, "divide by 1000, or pass identityres.from_epoch_ms(value)"),
        ("microseconds", 1e6, "divide by 1_000_000"),
        ("nanoseconds", 1e9, "divide by 1_000_000_000"),
    ):
        if MIN_TIMESTAMP <= ts / scale < MAX_TIMESTAMP:
            reason += f"; looks like epoch {unit}: {advice}"
            break
    return InvalidTimestampError(field, value, reason)


def to_timestamp(value: Any, field: str = "timestamp") -> float:
    """Validate a timestamp and return epoch seconds, refusing what lies outside
    ``MIN_TIMESTAMP <= ts < MAX_TIMESTAMP`` (docs/concepts.md, Timestamps and the clock)."""
    t = type(value)
    if t is float or t is int:
        try:
            ts = float(value)
        except OverflowError:  # an int beyond any float: finite, but far outside the window
            raise _outside(field, value, math.inf) from None
        if MIN_TIMESTAMP <= ts < MAX_TIMESTAMP:
            return ts
        if not math.isfinite(ts):
            raise InvalidTimestampError(field, value, "must be a finite number of epoch seconds")
        raise _outside(field, value, ts)
    if isinstance(value, datetime):
        if value.tzinfo is None or value.utcoffset() is None:
            raise InvalidTimestampError(
                field, value, "naive datetime: give a timezone-aware datetime (e.g. tzinfo=UTC)"
            )
        ts = value.timestamp()
        if MIN_TIMESTAMP <= ts < MAX_TIMESTAMP:
            return ts
        raise _outside(field, value, ts)
    if isinstance(value, float):  # a float subclass (numpy.float64): its float value
        return to_timestamp(float.__float__(value), field)
    if isinstance(value, int) and not isinstance(value, bool):
        return to_timestamp(int.__int__(value), field)
    raise InvalidTimestampError(
        field, value, f"must be a tz-aware datetime or epoch seconds, not {t.__name__}"
    )


def from_epoch_ms(value: int | float) -> float:
    """Epoch **milliseconds** (JavaScript's ``Date.now()``) as the epoch seconds every
    ``timestamp=`` argument takes: ``graph.track(..., timestamp=from_epoch_ms(ms))``.

    Raises :class:`~identityres.errors.InvalidTimestampError` (field ``timestamp``) for what
    is not a finite ``int``/``float``, or what lies outside the window once in seconds
    (docs/concepts.md, Timestamps and the clock)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidTimestampError(
            "timestamp",
            value,
            f"epoch milliseconds must be an int or float, not {type(value).__name__}",
        )
    exact = float.__float__(value) if isinstance(value, float) else int.__int__(value)
    try:
        seconds = exact / 1000
    except OverflowError:  # an int beyond any float
        seconds = math.inf if exact > 0 else -math.inf
    if MIN_TIMESTAMP <= seconds < MAX_TIMESTAMP:
        return seconds
    if not math.isfinite(seconds) and not isinstance(value, int):
        raise InvalidTimestampError(
            "timestamp", value, "must be a finite number of epoch milliseconds"
        )
    raise InvalidTimestampError(
        "timestamp",
        value,
        "epoch milliseconds outside the supported window 1900-01-01T00:00:00Z .. "
        "3000-01-01T00:00:00Z (the end excluded)",
    )


_FRACTION = re.compile(r"(?<=:\d\d)[.,](\d+)")
_OFFSET = re.compile(r"(?<=\d)([+-]\d\d)(\d\d)\Z")


def _six_digits(match: re.Match[str]) -> str:
    return "." + (match.group(1) + "00000")[:6]


def parse_iso_timestamp(value: Any, field: str) -> float:
    """An ISO-8601 string (as in Segment messages) or any value ``to_timestamp`` takes."""
    if isinstance(value, str):
        text = value.strip()
        if text.endswith(("Z", "z")):
            text = text[:-1] + "+00:00"
        if len(text) > 10 and (
            text[4] != "-" or text[7] != "-" or text[13:14] not in ":+-" or text[-3] in "+-"
        ):
            # The forms Python 3.11's fromisoformat reads and 3.10's does not, refused on
            # both so that a file resolves the same on each: the basic format (20240101,
            # T000000), week and ordinal dates (2024-W01-1, 2024-001), an offset of hours
            # only (+05). (Character tests, not a regex: this runs for every message.)
            raise InvalidTimestampError(field, value, "not an ISO-8601 timestamp")
        try:
            parsed = datetime.fromisoformat(text)
        except ValueError:
            # The forms Python 3.11 reads and 3.10 does not, read on both: a fraction of
            # other than 3 or 6 digits (``.12``), an offset without a colon (``+0000``).
            try:
                parsed = datetime.fromisoformat(
                    _OFFSET.sub(r"\1:\2", _FRACTION.sub(_six_digits, text))
                )
            except ValueError:
                raise InvalidTimestampError(field, value, "not an ISO-8601 timestamp") from None
        # The errors name the text the message holds, in the words of a string: not the
        # datetime made of it, nor advice about tzinfo= or epoch milliseconds.
        if parsed.tzinfo is None:  # (fromisoformat makes fixed offsets only: aware)
            raise InvalidTimestampError(field, value, _NO_TIMEZONE)
        ts = parsed.timestamp()
        if MIN_TIMESTAMP <= ts < MAX_TIMESTAMP:
            return ts
        raise InvalidTimestampError(field, value, _OUTSIDE)
    return to_timestamp(value, field)


_NO_TIMEZONE = "no timezone: add one, e.g. Z for UTC (2024-05-09T00:00:00Z) or +02:00"
_OUTSIDE = (
    "outside the supported window 1900-01-01T00:00:00Z .. 3000-01-01T00:00:00Z (the end excluded)"
)


def _json_data(field: str, value: dict[str, Any] | None) -> dict[str, Any] | None:
    """Traits are stored: they must be JSON data, and are kept as JSON reads them back
    (tuples become lists, datetimes ISO-8601 strings), so that every store gives the same
    values."""
    if value is None:
        return None
    try:
        text = json.dumps(value, default=_data_default, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise _encoding_failed(field, value, exc) from None
    except RecursionError:
        raise InvalidEventError(field, value, _TOO_DEEP) from None
    data: dict[str, Any] = json.loads(_checked(field, value, text))
    return data


def _check_mapping(field: str, value: Any) -> dict[str, Any] | None:
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise InvalidEventError(field, value, f"must be a mapping, not {type(value).__name__}")
    for key in value:
        if not isinstance(key, str):
            raise InvalidEventError(field, value, f"keys must be str, found {_shown(key)}")
    # ``{}`` and ``None`` say the same thing; keep them the same content.
    return dict(value) if value else None


def check_context(value: Any) -> dict[str, Any] | None:
    """A message's Segment ``context``, as kept with an event (``keep_events``): JSON data
    like traits, or ``None``."""
    return _json_data("context", _check_mapping("context", value))


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
        elif isinstance(raw, str):
            # a str subclass is the text it holds, whatever its ``__str__`` says
            value = str.__str__(raw)
        elif isinstance(raw, int) and not isinstance(raw, bool):
            try:  # an int subclass: its value, whatever its ``__str__``/``__int__`` say
                value = int.__repr__(raw)
            except ValueError:  # more digits than Python turns into text
                raise InvalidEventError(field, raw, _long_int()) from None
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
            if not _valid_text(value):
                raise InvalidEventError(
                    "event_id", value, "contains lone surrogates; not valid Unicode text"
                )
            return str.__str__(value)  # the text a str subclass holds, not its __str__
        if isinstance(value, int) and not isinstance(value, bool):
            try:
                return int.__repr__(value)
            except ValueError:  # more digits than Python turns into text
                raise InvalidEventError("event_id", value, _long_int()) from None
        raise InvalidEventError("event_id", value, "must be a non-empty str (or an int)")

    def batch(self, events: Any) -> list[Any]:
        """The events of an ``ingest`` batch as a list: ``events`` must be an iterable of
        events, not one event, a ``str``/``bytes`` or a mapping (docs/concepts.md, Errors)."""
        if events is None or isinstance(events, (str, bytes, bytearray, memoryview, Mapping)):
            raise InvalidEventError(
                "events",
                events,
                f"must be an iterable of events (a list, ...), not {type(events).__name__}",
            )
        try:
            iterator = iter(events)
        except TypeError:
            hint = " (wrap one event in a list)" if hasattr(events, "timestamp") else ""
            raise InvalidEventError(
                "events",
                events,
                f"must be an iterable of events (a list, ...), not {type(events).__name__}" + hint,
            ) from None
        return list(iterator)

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
        if not MIN_TIMESTAMP <= ts < MAX_TIMESTAMP:  # outside the window, NaN or infinite
            return None
        if event.isascii():
            name = event
        elif _valid_text(event):
            name = event.replace(_SEP, _SEP2)
        else:  # lone surrogates: the general path refuses them
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
        extracted: list[tuple[int, str]] | None = None,
    ) -> Record:
        rules = self._rules
        if (
            not extracted
            and type(event) is str
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
        if not event.isascii() and not _valid_text(event):
            raise InvalidEventError(
                "event", event, "contains lone surrogates; not valid Unicode text"
            )
        pairs: list[tuple[int, str]] = []
        if user_id is not None:
            pairs.append((rules.user, self.identifier_value("user_id", rules.user, user_id)))
        if anonymous_id is not None:
            pairs.append(
                (rules.anon, self.identifier_value("anonymous_id", rules.anon, anonymous_id))
            )
        self._extra(identifiers, pairs)
        if identifiers:
            self._single_kind_check(pairs)
        if extracted:
            pairs.extend(extracted)
        if not pairs:
            raise InvalidEventError(
                "identifiers", None, "track needs anonymous_id, user_id or identifiers"
            )
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
        extracted: list[tuple[int, str]] | None = None,
    ) -> Record:
        rules = self._rules
        if (
            not extracted
            and type(user_id) is str
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
            if (
                MIN_TIMESTAMP <= ts < MAX_TIMESTAMP  # not NaN, infinite or outside the window
                and u.isascii()
                and a.isascii()
                and self._quick(u)
                and self._quick(a)
            ):
                fast = ((rules.user, u), (rules.anon, a))
                # ``fingerprint``'s text for this content, written out
                text = f"identify\uffffkuser_id={u}\uffffkanonymous_id={a}\uffffn\uffffn\uffffn"
                digest = _digest(_TS(ts) + text.encode(), digest_size=16).digest()
                content = (IDENTIFY, ts, fast, None, None, None)
                return Record(IDENTIFY, ts, event_id, fast, (), content, digest)
        pairs: list[tuple[int, str]] = []
        if user_id is not None:
            pairs.append((rules.user, self.identifier_value("user_id", rules.user, user_id)))
        if anonymous_id is not None:
            pairs.append(
                (rules.anon, self.identifier_value("anonymous_id", rules.anon, anonymous_id))
            )
        if identifiers is not None:
            self._extra(identifiers, pairs)
            self._single_kind_check(pairs)
        if extracted:
            pairs.extend(extracted)
        if not pairs:
            # traits for a visitor (only an anonymous id) are fine; traits for nobody are not
            raise InvalidEventError(
                "user_id", None, "identify needs a user_id, an anonymous_id or identifiers"
            )
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
        extracted: list[tuple[int, str]] | None = None,
        members_optional: bool = False,
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
        if extracted:
            pairs.extend(extracted)
        if not pairs and not members_optional:
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

    def message_time(self, msg: Mapping[str, Any]) -> float | None:
        """A message's time: the first of ``timestamp``, ``originalTimestamp``, ``sentAt``,
        ``receivedAt`` that is there and not ``null``; ``None`` (the clock) when none is
        (docs/formats.md, Timestamps). No clock-skew correction: see docs/decisions.md."""
        for key in TIME_KEYS:
            raw = msg.get(key)
            if raw is not None:
                return parse_iso_timestamp(raw, key)
        return None

    def extract(
        self, mtype: str, msg: Mapping[str, Any], given: Any = None
    ) -> list[tuple[int, str]]:
        """The identifiers the extraction rules find in a message of type ``mtype``, one per
        kind (the first rule that finds a value wins), leaving out the kinds ``given`` (the
        ``identifiers`` extension) names (docs/formats.md, Identifiers inside messages)."""
        rules = self._rules
        compiled = rules.extractors.get(mtype)
        if compiled is None:
            return []
        parents, extractors = compiled
        # (``_dig`` inlined: this runs for every message of a bulk ingest, and most messages
        # have none of the parents, which ends the work here)
        found: list[Any] = []
        any_found = False
        for parent in parents:
            value: Any = msg
            for part in parent:
                if type(value) is not dict and not isinstance(value, Mapping):
                    value = None
                    break
                value = value.get(part)
                if value is None:
                    break
            found.append(value)
            any_found = any_found or value is not None
        if not any_found:
            return []
        taken: set[int] | None = None  # made when needed: most messages find nothing
        if given is not None and isinstance(given, Mapping):
            taken = {rules.kind_index[k] for k in given if k in rules.kind_index}
        out: list[tuple[int, str]] = []
        for at, leaf, kind, conditions, path in extractors:
            parent = found[at]
            if parent is None:
                continue
            if type(parent) is not dict and not isinstance(parent, Mapping):
                continue
            raw = parent.get(leaf)
            if raw is None or (taken is not None and kind in taken):
                continue
            if type(raw) is not str and (type(raw) is not int or isinstance(raw, bool)):
                # a trait of another shape (a list, an object, a bool): it stays data and
                # identifies nobody
                continue
            if conditions and not all(_dig(msg, where) in allowed for where, allowed in conditions):
                continue
            if taken is None:
                taken = set()
            taken.add(kind)
            out.append((kind, self.identifier_value(path, kind, raw)))
        return out

    def from_message(self, msg: Mapping[str, Any]) -> Record:
        """A Segment/RudderStack-spec message (``type``, ``userId``, ``anonymousId``, …), read
        as docs/formats.md says: ``context.traits`` under ``traits``, identifiers extracted by
        the rules' ``extraction``, the time by precedence, ``previousId`` by kind.

        identityres extensions: ``identifiers`` (kind -> value) on track and identify,
        ``set_once`` on identify, and ``type: "reset"``. ``page`` and ``screen`` messages are
        observations like ``track``.
        """
        mtype = msg.get("type")
        ts: Any = self.message_time(msg)
        event_id = msg.get("messageId")
        user_id = msg.get("userId")
        anonymous_id = msg.get("anonymousId")
        if mtype == "identify":
            given = msg.get("identifiers")
            return self.identify(
                user_id,
                anonymous_id,
                given,
                _traits(msg),
                msg.get("set_once"),
                ts,
                event_id,
                self.extract(mtype, msg, given),
            )
        if mtype in ("track", "page", "screen"):
            name = msg.get("event") if mtype == "track" else msg.get("name") or mtype
            given = msg.get("identifiers")
            return self.track(
                name,
                anonymous_id,
                user_id,
                given,
                msg.get("properties"),
                ts,
                event_id,
                self.extract(mtype, msg, given),
            )
        if mtype == "alias":
            return self.alias(user_id, self._previous(msg, anonymous_id), ts, event_id)
        if mtype == "group":
            return self.identify_company(
                msg.get("groupId"),
                user_id,
                anonymous_id,
                msg.get("traits"),
                ts,
                event_id,
                self._given(msg.get("identifiers"))
                + self.extract(mtype, msg, msg.get("identifiers")),
                members_optional=isinstance(msg, Translated) and msg.company_only,
            )
        if mtype == "reset":
            return self.reset(anonymous_id, ts, event_id)
        raise InvalidEventError(
            "type", mtype, "must be one of identify, track, page, screen, alias, group, reset"
        )

    def _given(self, identifiers: Any) -> list[tuple[int, str]]:
        pairs: list[tuple[int, str]] = []
        self._extra(identifiers, pairs)
        return pairs

    def _previous(self, msg: Mapping[str, Any], anonymous_id: Any) -> Any:
        """The kind of an alias's ``previousId`` (docs/merge-rules.md, Aliases): the device's
        anonymous id when the message has no ``anonymousId`` (the server SDKs) or the same
        one (analytics.js, mobile before sign-in); a previous *user* id when the message's
        ``anonymousId`` is another value (mobile after sign-in: an id migration)."""
        previous = msg.get("previousId")
        if previous is None:
            return None
        kind = msg.previous_kind if isinstance(msg, Translated) else None
        if kind is None:
            kind = ANONYMOUS_ID if anonymous_id is None or previous == anonymous_id else USER_ID
        if kind == USER_ID and self._rules.limits[self._rules.user] == 1:
            raise AliasRefusedError(
                "previous_id",
                previous,
                "a previous user id (the message's anonymousId is "
                f"{_shown(anonymous_id)}): an alias between two user ids would merge two "
                "identified users, which the user_id limit refuses; merge them on purpose "
                "with IdentityGraph.merge(), or lift the limit with "
                "Rules(limits={'user_id': None}) (docs/merge-rules.md, Aliases)",
            )
        return (kind, previous)


class Translated(dict):  # type: ignore[type-arg]
    """A Segment-spec message that a reader of another platform made (``_formats``), with what
    that platform's message said beyond the spec, kept out of the message's keys so that no
    message can claim it: ``fields`` (Segment key -> the platform's path, for errors),
    ``company_only`` (a group update with no member), ``previous_kind`` (the kind of an
    alias's ``previousId``)."""

    __slots__ = ("company_only", "fields", "previous_kind")

    def __init__(
        self,
        data: dict[str, Any],
        fields: dict[str, str],
        *,
        company_only: bool = False,
        previous_kind: str | None = None,
    ) -> None:
        super().__init__(data)
        self.fields = fields
        self.company_only = company_only
        self.previous_kind = previous_kind


#: The keys a message's time is read from, first found first (docs/formats.md, Timestamps).
TIME_KEYS = ("timestamp", "originalTimestamp", "sentAt", "receivedAt")


def _dig(msg: Mapping[str, Any], parts: tuple[str, ...]) -> Any:
    """The value at a dotted path of a message (the message itself for no parts), or ``None``
    where a step is missing or not a mapping."""
    value: Any = msg
    for part in parts:
        if type(value) is not dict and not isinstance(value, Mapping):  # (dict: the fast test)
            return None
        value = value.get(part)
        if value is None:
            return None
    return value


def _traits(msg: Mapping[str, Any]) -> Any:
    """An identify's traits: ``context.traits`` (where RudderStack and the mobile SDKs put
    them) under ``traits`` (the top level wins on a clash)."""
    top = msg.get("traits")
    context = msg.get("context")
    inner = context.get("traits") if isinstance(context, Mapping) else None
    if inner is None:
        return top
    if not isinstance(inner, Mapping):
        raise InvalidEventError(
            "context.traits", inner, f"must be a mapping, not {type(inner).__name__}"
        )
    if top is None:
        return inner
    if not isinstance(top, Mapping):
        return top  # (refused as traits)
    return {**inner, **top}


def relabel(error: ValidationError, mapping: Mapping[str, str]) -> ValidationError:
    """Rename an error's field to the message key the user wrote (``userId``, …)."""
    field = error.field
    for ours, theirs in mapping.items():
        if field == ours or field.startswith((ours + "[", ours + ".")):
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
