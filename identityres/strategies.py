"""hypothesis strategies for testing code that uses identityres, and identityres itself
(docs/merge-rules.md, "Checking it: the reference resolver and property tests").

What lives here:

* :func:`identifier_values`, :func:`blocked_values` and :func:`identifiers`: identifier values
  and ``Identifier`` objects, hostile ones (quotes, SQL, NUL, Unicode, padding, 400-character
  values) and blocked ones (docs/merge-rules.md, Blocked values) on request;
* :func:`events`: single event objects (``Track``, ``Identify``, ``Alias``, ``Reset``,
  ``IdentifyCompany``, and on request the operator's ``Merge``, ``Split``, ``Forget``) with
  explicit timestamps and event ids;
* :func:`streams`: realistic, small lists of events (users with several devices, shared devices
  with and without resets, anonymous visitors, aliases, companies, traits, occasional blocked
  values) delivered partly out of order and partly twice;
* :func:`arrival_orders`: any other delivery order of a given list of events;
* :func:`segment_messages`: Segment-spec message dicts, for ingestion tests.

What does not: the conformance kit and the reference resolver (``identityres.testing``).

Unless an argument says otherwise, the values generated here are checked against the *default*
:class:`~identityres.Rules`: "not blocked" means not blocked by those rules (after the default
normalization, which strips surrounding whitespace), and ``identifiers=`` mappings use only the
kinds they declare (``email``, ``phone``, ``api_key``). Strategy arguments are keyword-only and
validated: a bad one raises :class:`hypothesis.errors.InvalidArgument` when the strategy is made.

hypothesis is not a dependency of the core library; install ``identityres[testing]``.
"""

from __future__ import annotations

try:
    from hypothesis import strategies as st
    from hypothesis.errors import InvalidArgument
except ImportError as exc:
    raise ImportError(
        "identityres.strategies needs hypothesis: pip install 'identityres[testing]'"
    ) from exc

import functools
import re
from collections.abc import Callable, Collection, Iterator, Sequence
from datetime import datetime, timedelta, timezone
from typing import Any

import attrs

from identityres._model import (
    ANONYMOUS_ID,
    USER_ID,
    Alias,
    Event,
    Forget,
    Identifier,
    Identify,
    IdentifyCompany,
    Merge,
    Reset,
    Split,
    TimestampLike,
    Track,
)
from identityres._rules import DEFAULT_BLOCKED_EXACT, DEFAULT_BLOCKED_INSENSITIVE, Rules

__all__ = [
    "EVENT_TYPES",
    "OPERATOR_TYPES",
    "SEGMENT_TYPES",
    "arrival_orders",
    "blocked_values",
    "events",
    "identifier_values",
    "identifiers",
    "segment_messages",
    "streams",
]

#: The event types services send (docs/concepts.md), by the name of the graph's write method: what
#: :func:`events` makes by default.
EVENT_TYPES = ("track", "identify", "alias", "reset", "identify_company")
#: The operator's event types (``Merge``, ``Split``, ``Forget``): :func:`events` makes them
#: when ``types`` names them.
OPERATOR_TYPES = ("merge", "split", "forget")
#: Message types :func:`segment_messages` can make (``reset`` is an identityres extension).
SEGMENT_TYPES = ("identify", "track", "page", "screen", "alias", "group", "reset")

_DEFAULT_RULES = Rules().compiled
_DECLARED_KINDS = Rules().kinds
_KIND_NAME = re.compile(r"[a-z][a-z0-9_]*\Z")
# Epoch seconds from 1970 to 2100: wide enough for any real event, and every value converts to
# a UTC datetime on every platform.
_MAX_EPOCH = 4_102_444_800
# Realistic identifiers are ASCII words; shrinking towards "0"/"a" keeps failures readable.
_WORD_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.@+"
# Every Unicode scalar value except lone surrogates, which are not valid text.
_ANY_CHAR = st.characters(exclude_categories=["Cs"])

# Values that have broken identity systems and storage layers: quoting, SQL, LIKE wildcards,
# NUL, escapes, Unicode that changes length or direction, look-alikes of blocked values that
# are *not* blocked, and lengths at the 400-character limit (each within it after stripping).
_HOSTILE_EXAMPLES = (
    "'",
    '"',
    "`",
    "O'Brien",
    'say "hi"',
    "'; DROP TABLE identifiers; --",
    "' OR '1'='1",
    "1; SELECT pg_sleep(10)",
    "SELECT",
    "DELETE FROM profiles",
    "NULL",
    "Null",
    "NONE",
    "nil",
    "NAN",
    "[object object]",
    "%",
    "_",
    "%_%",
    "\\",
    "\\x00",
    "\\'",
    "$1",
    "?",
    ":name",
    "{}",
    "[]",
    "a,b",
    "a|b",
    "a\x00b",
    "\x00",
    "\x00\x00",
    "\x7f",
    "line\nbreak",
    "tab\tinside",
    "ünïcødé",
    "用户",
    "👤",
    "😀😀😀",
    "e\u0301",
    "\u202eevil",
    "\u200b",
    "\ufeffbom",
    "İ",
    "ß",
    "ﬃ",
    "Ω",
    "user_id:1",
    "anonymous_id",
    "1",
    "01",
    "-0",
    "+1",
    "1e3",
    "0.0",
    "-",
    "--",
    "0x0",
    "<script>alert(1)</script>",
    "../../etc/passwd",
    "a" * 399,
    "b" * 400,
    "é" * 400,
    "😀" * 400,
    " " + "c" * 400 + "\n",
)
_PADDING = (" ", "  ", "\t", "\n", "\r\n", "\xa0", "\u3000", "\u2028")
_SQL_FRAGMENTS = ("'", '"', ";", "--", "/*", "*/", " OR 1=1", "DROP TABLE x", "\x00", "%", "\\")


# --- argument validation --------------------------------------------------------------------


def _check_bool(name: str, value: object) -> None:
    if not isinstance(value, bool):
        raise InvalidArgument(f"{name}={value!r} must be a bool")


def _check_int(name: str, value: object, min_value: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool):
        raise InvalidArgument(f"{name}={value!r} must be an int")
    if value < min_value:
        raise InvalidArgument(f"{name}={value!r} must be at least {min_value}")


def _check_sequence(name: str, value: object) -> None:
    if isinstance(value, str) or not isinstance(value, Sequence):
        raise InvalidArgument(f"{name}={value!r} must be a sequence (tuple or list)")


def _check_choices(
    name: str, value: object, allowed: Collection[str] | None, *, allow_empty: bool = False
) -> tuple[str, ...]:
    """A sequence of distinct names, each in ``allowed`` (or, if None, a valid kind name)."""
    _check_sequence(name, value)
    assert isinstance(value, Sequence)
    items = tuple(value)
    if not items and not allow_empty:
        raise InvalidArgument(f"{name}={value!r} must not be empty")
    for item in items:
        if not isinstance(item, str):
            raise InvalidArgument(f"{name}={value!r}: {item!r} is not a str")
        if allowed is not None and item not in allowed:
            raise InvalidArgument(f"{name}={value!r}: {item!r} is not one of {sorted(allowed)}")
        if allowed is None and not _KIND_NAME.match(item):
            raise InvalidArgument(
                f"{name}={value!r}: {item!r} is not a kind name (lower-case letters, digits, '_')"
            )
    if len(set(items)) != len(items):
        raise InvalidArgument(f"{name}={value!r} names a value twice")
    return items


@functools.lru_cache(maxsize=4096)
def _below(n: int) -> st.SearchStrategy[int]:
    """``0 <= i < n``. Composite strategies here make many small draws; building each strategy
    once saves much of their cost."""
    return st.integers(min_value=0, max_value=n - 1)


# --- identifier values ----------------------------------------------------------------------


def _linkable(value: str) -> bool:
    # The default normalizer strips surrounding whitespace; blocking is judged after it.
    return _DEFAULT_RULES.blocked_reason(value.strip()) is None


@functools.cache
def _realistic_values() -> st.SearchStrategy[str]:
    return st.one_of(
        st.text(_WORD_CHARS, min_size=1, max_size=24),
        st.integers(min_value=1, max_value=10**12).map(str),
        st.uuids().map(str),
    )


@st.composite
def _long_values(draw: st.DrawFn, *, min_size: int, max_size: int) -> str:
    # Repeat a short drawn chunk: drawing hundreds of characters one by one is slow and
    # shrinks badly. Non-space ends keep the length after stripping.
    chunk = draw(st.text(_ANY_CHAR, min_size=1, max_size=8))
    size = draw(st.integers(min_value=min_size, max_value=max_size))
    body = (chunk * (size // len(chunk) + 1))[: size - 2]
    return "x" + body + "x"


@st.composite
def _padded(draw: st.DrawFn, values: st.SearchStrategy[str]) -> str:
    left = draw(st.sampled_from(("", *_PADDING)))
    right = draw(st.sampled_from(_PADDING))
    return left + draw(values) + right


@st.composite
def _sql_values(draw: st.DrawFn) -> str:
    parts = draw(
        st.lists(
            st.one_of(st.sampled_from(_SQL_FRAGMENTS), st.text(_WORD_CHARS, max_size=6)),
            min_size=1,
            max_size=5,
        )
    )
    return "".join(parts)


@functools.cache
def _hostile_values() -> st.SearchStrategy[str]:
    core = st.one_of(
        st.sampled_from(_HOSTILE_EXAMPLES),
        st.text(_ANY_CHAR, min_size=1, max_size=40),
        # Nested, so that long values (slow to print, slow to store) come up less often.
        st.one_of(_sql_values(), _long_values(min_size=380, max_size=400)),
    )
    return st.one_of(core, _padded(core))


@functools.cache
def _linkable_values(*, hostile: bool) -> st.SearchStrategy[str]:
    values = _realistic_values()
    if hostile:
        values = st.one_of(values, _hostile_values())
    return values.filter(_linkable)


@st.composite
def _case_variants(draw: st.DrawFn, words: Sequence[str]) -> str:
    word = draw(st.sampled_from(words))
    upper = draw(st.lists(st.booleans(), min_size=len(word), max_size=len(word)))
    return "".join(c.upper() if up else c for c, up in zip(word, upper, strict=True))


@st.composite
def _quoted(draw: st.DrawFn, values: st.SearchStrategy[str]) -> str:
    quote = draw(st.sampled_from("'\""))
    return quote + draw(values) + quote


def blocked_values(*, too_long: bool = True) -> st.SearchStrategy[str]:
    """Identifier values that the default rules block (docs/merge-rules.md, Blocked values).

    Every family of the default list: the empty string and whitespace-only values; the
    case-insensitive words in any mix of case (``Guest``, ``UNDEFINED``); the exact values
    (``null``, ``[object Object]``, ``0``, …); those words wrapped in single or double quotes;
    any of them padded with whitespace (blocked after normalization). With ``too_long=True``
    also values longer than the default maximum of 400 characters.
    """
    _check_bool("too_long", too_long)
    return _blocked_values(too_long=too_long)


@functools.cache
def _blocked_values(*, too_long: bool) -> st.SearchStrategy[str]:
    words = st.one_of(
        st.sampled_from(sorted(DEFAULT_BLOCKED_EXACT)),
        _case_variants(sorted(DEFAULT_BLOCKED_INSENSITIVE)),
    )
    families = [words, _quoted(words), st.sampled_from(_PADDING)]
    if too_long:
        families.append(_long_values(min_size=401, max_size=600))
    plain = st.one_of(families)
    return st.one_of(plain, _padded(plain))


def identifier_values(*, hostile: bool = True, blocked: bool = False) -> st.SearchStrategy[str]:
    """Identifier values (``str``; valid Unicode, never lone surrogates).

    Realistic values (words, decimal database ids, UUIDs) always. With ``hostile=True`` also:
    quotes, ``;`` and SQL fragments, LIKE wildcards, backslashes, NUL and control characters,
    non-ASCII and direction-changing Unicode, look-alikes of blocked values that are *not*
    blocked (``NULL``, ``[object object]``), values padded with whitespace, and values of
    380 to 400 characters after stripping (the default limit, not over it).

    With ``blocked=False`` (the default) no value is blocked by the default rules. With
    ``blocked=True`` values from :func:`blocked_values` (over-long ones included) are mixed in.
    """
    _check_bool("hostile", hostile)
    _check_bool("blocked", blocked)
    return _identifier_values(hostile=hostile, blocked=blocked)


@functools.cache
def _identifier_values(*, hostile: bool, blocked: bool) -> st.SearchStrategy[str]:
    values = _linkable_values(hostile=hostile)
    if blocked:
        return st.one_of(values, _blocked_values(too_long=True))
    return values


@functools.cache
def _kind_values(kind: str, *, hostile: bool, blocked: bool) -> st.SearchStrategy[str]:
    if kind == "email":
        realistic: st.SearchStrategy[str] = st.emails()
    elif kind == ANONYMOUS_ID:
        realistic = st.one_of(
            st.uuids().map(str), st.integers(min_value=1, max_value=10**6).map("anon-{}".format)
        )
    else:
        realistic = _realistic_values().filter(_linkable)
    values = realistic
    if hostile:
        values = st.one_of(realistic, _linkable_values(hostile=True))
    if blocked:
        values = st.one_of(values, _blocked_values(too_long=True))
    return values


def identifiers(
    *,
    kinds: Sequence[str] = (USER_ID, ANONYMOUS_ID, "email"),
    hostile: bool = True,
    blocked: bool = False,
) -> st.SearchStrategy[Identifier]:
    """:class:`~identityres.Identifier` objects of the given ``kinds``.

    Values look like their kind (e-mail addresses for ``email``, UUIDs for ``anonymous_id``);
    ``hostile`` and ``blocked`` mix in values as :func:`identifier_values` does. A kind other
    than the default ones must be declared in the rules the identifiers are used with.
    """
    names = _check_choices("kinds", kinds, None)
    _check_bool("hostile", hostile)
    _check_bool("blocked", blocked)
    return st.one_of(
        [
            st.builds(
                Identifier, st.just(kind), _kind_values(kind, hostile=hostile, blocked=blocked)
            )
            for kind in names
        ]
    )


# --- single events ----------------------------------------------------------------------------


@functools.cache
def _timezones() -> st.SearchStrategy[timezone]:
    # Fixed offsets, not zoneinfo: no tzdata needed, and still tz-aware with odd offsets.
    return st.one_of(
        st.just(timezone.utc),
        st.integers(min_value=-23 * 60 - 59, max_value=23 * 60 + 59).map(
            lambda minutes: timezone(timedelta(minutes=minutes))
        ),
    )


@functools.cache
def _timestamps() -> st.SearchStrategy[TimestampLike]:
    return st.one_of(
        st.integers(min_value=0, max_value=_MAX_EPOCH),
        st.floats(min_value=0, max_value=_MAX_EPOCH, allow_nan=False, allow_infinity=False),
        st.datetimes(
            min_value=datetime(1970, 1, 2),
            max_value=datetime(2099, 12, 31),
            timezones=_timezones(),
        ),
    )


@functools.cache
def _event_ids(*, hostile: bool) -> st.SearchStrategy[str]:
    plain = st.one_of(
        st.integers(min_value=0, max_value=10**9).map("e{}".format), st.uuids().map(str)
    )
    if hostile:
        return st.one_of(plain, st.text(_ANY_CHAR, min_size=1, max_size=40))
    return plain


@functools.cache
def _json_values(*, hostile: bool) -> st.SearchStrategy[Any]:
    # JSON-like values that survive a round trip and compare equal to themselves: no NaN,
    # lists not tuples, 64-bit integers.
    text = st.text(_ANY_CHAR, max_size=20) if hostile else st.text(_WORD_CHARS, max_size=12)
    scalars = st.one_of(
        st.none(),
        st.booleans(),
        st.integers(min_value=-(2**63), max_value=2**63 - 1),
        st.floats(allow_nan=False, allow_infinity=False),
        text,
    )
    if not hostile:
        return scalars
    return st.recursive(
        scalars,
        lambda children: st.one_of(
            st.lists(children, max_size=3), st.dictionaries(text, children, max_size=3)
        ),
        max_leaves=6,
    )


@functools.cache
def _json_objects(*, hostile: bool) -> st.SearchStrategy[dict[str, Any]]:
    keys = st.one_of(
        st.sampled_from(("name", "plan", "email", "seats", "created_at")),
        st.text(_ANY_CHAR, max_size=20) if hostile else st.text(_WORD_CHARS, max_size=10),
    )
    return st.dictionaries(keys, _json_values(hostile=hostile), max_size=4)


@functools.cache
def _id_args(*, hostile: bool, blocked: bool) -> st.SearchStrategy[str | int]:
    # Identifier arguments of the write methods: str, or int (database ids).
    ints = st.integers(min_value=1, max_value=2**63 - 1)
    if blocked:
        ints = st.one_of(ints, st.sampled_from((0, -1)))
    return st.one_of(_identifier_values(hostile=hostile, blocked=blocked), ints)


@st.composite
def _extra_identifiers(
    draw: st.DrawFn, *, kinds: tuple[str, ...], hostile: bool, blocked: bool
) -> dict[str, str] | None:
    # An ``identifiers=`` mapping: some of the declared kinds, each with a value of its kind.
    chosen = draw(st.lists(st.sampled_from(kinds), unique=True)) if kinds else []
    return {k: draw(_kind_values(k, hostile=hostile, blocked=blocked)) for k in chosen} or None


@st.composite
def _operator_ids(
    draw: st.DrawFn, *, kinds: tuple[str, ...], hostile: bool, blocked: bool
) -> str | Identifier | tuple[str, str]:
    # Alias's previous id, or an operator's identifier, in each form it takes: Identifier,
    # (kind, value), or a bare value meaning a user id.
    kind = draw(st.sampled_from((USER_ID, ANONYMOUS_ID, *kinds)))
    value = draw(_kind_values(kind, hostile=hostile, blocked=blocked))
    form = draw(_below(3))
    if form == 0 or (form == 2 and kind != USER_ID):
        return Identifier(kind, value)
    return (kind, value) if form == 1 else value


@st.composite
def _with_some_id(draw: st.DrawFn, events: st.SearchStrategy[Event], fallback: str) -> Event:
    # Track and identify_company need at least one identifier: fill ``fallback`` when none.
    event = draw(events)
    if all(getattr(event, f, None) is None for f in ("user_id", "anonymous_id", "identifiers")):
        filled: dict[str, Any] = {fallback: str(draw(_id_args(hostile=False, blocked=False)))}
        event = attrs.evolve(event, **filled)
    return event


@functools.cache
def _events(
    *, types: tuple[str, ...], kinds: tuple[str, ...], hostile: bool, blocked: bool
) -> st.SearchStrategy[Event]:
    ids = _id_args(hostile=hostile, blocked=blocked)
    anon = _kind_values(ANONYMOUS_ID, hostile=hostile, blocked=blocked)
    objects = st.none() | _json_objects(hostile=hostile)
    common: dict[str, st.SearchStrategy[Any]] = {
        "timestamp": _timestamps(),
        "event_id": _event_ids(hostile=hostile),
    }
    extra = _extra_identifiers(kinds=kinds, hostile=hostile, blocked=blocked)
    names = st.text(_ANY_CHAR if hostile else _WORD_CHARS, min_size=1, max_size=30)
    operator_ids = _operator_ids(kinds=kinds, hostile=hostile, blocked=blocked)
    by_type: dict[str, st.SearchStrategy[Event]] = {
        "track": _with_some_id(
            st.builds(
                Track,
                event=names,
                user_id=st.none() | ids,
                anonymous_id=st.none() | anon,
                identifiers=extra,
                properties=objects,
                **common,
            ),
            "anonymous_id",
        ),
        "identify": st.builds(
            Identify,
            user_id=ids,
            anonymous_id=st.none() | anon,
            identifiers=extra,
            traits=objects,
            set_once=objects,
            **common,
        ),
        "alias": st.builds(
            Alias,
            user_id=ids,
            previous_id=operator_ids,
            **common,
        ),
        "reset": st.builds(Reset, anonymous_id=anon, **common),
        "identify_company": _with_some_id(
            st.builds(
                IdentifyCompany,
                company_id=ids,
                user_id=st.none() | ids,
                anonymous_id=st.none() | anon,
                traits=objects,
                **common,
            ),
            "user_id",
        ),
        "merge": st.builds(Merge, a=operator_ids, b=operator_ids, **common),
        "split": st.builds(Split, identifier=operator_ids, **common),
        "forget": st.builds(Forget, identifier=operator_ids, **common),
    }
    return st.one_of([by_type[t] for t in types])


def events(
    *,
    types: Sequence[str] = EVENT_TYPES,
    kinds: Sequence[str] = _DECLARED_KINDS,
    hostile: bool = True,
    blocked: bool = False,
) -> st.SearchStrategy[Event]:
    """Single event objects, one of ``types``: names from :data:`EVENT_TYPES` (the default, what
    services send) and :data:`OPERATOR_TYPES` (``merge``, ``split``, ``forget``).

    Every event has an explicit ``event_id`` and an explicit ``timestamp``: epoch seconds
    (``int`` or ``float``) or a tz-aware ``datetime`` with a UTC offset, between 1970 and 2100.
    Identifier arguments are ``str`` or ``int``; ``identifiers=`` mappings, ``Alias`` previous
    ids and operators' identifiers (an ``Identifier``, a ``(kind, value)`` pair or a bare user
    id) use the declared ``kinds`` too (by default those of ``Rules()``; ``()`` for none).
    Traits and properties are JSON-like (no NaN). ``hostile`` and ``blocked`` apply to every
    identifier value, the company id included, as in :func:`identifier_values`.

    Each event passes validation on its own; two events drawn separately may share an
    ``event_id`` with different content, so use :func:`streams` for sets of events.
    """
    type_names = _check_choices("types", types, EVENT_TYPES + OPERATOR_TYPES)
    kind_names = _check_choices("kinds", kinds, None, allow_empty=True)
    if USER_ID in kind_names or ANONYMOUS_ID in kind_names:
        raise InvalidArgument(
            f"kinds={kinds!r}: name only declared kinds, not the built-in user_id, anonymous_id"
        )
    _check_bool("hostile", hostile)
    _check_bool("blocked", blocked)
    return _events(types=type_names, kinds=kind_names, hostile=hostile, blocked=blocked)


# --- streams ------------------------------------------------------------------------------------

# An event before it has its place in time: its class and its arguments but the timestamp and
# the event_id.
_Draft = tuple[Callable[..., Event], dict[str, Any]]

_PAGES = ("page_view", "docs_view", "signup", "login", "api_call", "checkout", "logout")
# Trait values come from small pools, so that writes to the same key collide
# (docs/merge-rules.md, R6).
_TRAIT_VALUES: dict[str, tuple[Any, ...]] = {
    "name": ("Ada", "Grace", "Alan"),
    "plan": ("free", "pro", "team"),
    "seats": (1, 2, 5),
    "verified": (True, False),
}
_SET_ONCE_VALUES: dict[str, tuple[Any, ...]] = {
    "first_referrer": ("google", "hn", "docs"),
    "plan": ("free", "trial"),
}
_COMPANY_TRAIT_VALUES: dict[str, tuple[Any, ...]] = {
    "name": ("Acme", "Initech", "Globex"),
    "plan": ("startup", "enterprise"),
    "employees": (12, 250, 4000),
}
# Skewed: most users have one device, a few have many.
_DEVICE_COUNTS = (1, 2, 1, 3, 1, 2, 5)
# Small steps so that ties happen; a 0.5 step turns the timestamps into floats.
_TIME_STEPS = (1, 0, 2, 0.5, 3)
_IDENTIFIER_FIELDS = ("user_id", "anonymous_id", "company_id", "previous_id", "identifiers")


def _small_dicts(values: dict[str, tuple[Any, ...]]) -> st.SearchStrategy[dict[str, Any]]:
    # Every dict of one or two keys, in three variants of values, drawn in one draw (a
    # fixed_dictionaries draw costs a draw per key) and copied, as callers may keep them.
    keys = sorted(values)
    subsets = [(k,) for k in keys] + [(a, b) for i, a in enumerate(keys) for b in keys[i + 1 :]]
    choices = [
        tuple((k, values[k][variant % len(values[k])]) for k in subset)
        for variant in range(3)
        for subset in subsets
    ]
    return st.sampled_from(choices).map(dict)


_TRAITS = _small_dicts(_TRAIT_VALUES)
_SET_ONCE = _small_dicts(_SET_ONCE_VALUES)
_COMPANY_TRAITS = _small_dicts(_COMPANY_TRAIT_VALUES)
# (event, path, server-side call with the user id only): a quarter are server-side.
_PAGE_VIEWS = st.sampled_from(
    [(event, path, False) for event in _PAGES for path in ("/", "/docs", "/pricing")]
    + [("api_call", f"/v1/{r}", True) for r in ("users", "events", "keys", "usage", "search")]
    + [("export", "/v1/export", True), ("billing", "/v1/billing", True)]
)
_BOOLEANS = st.booleans()
_BLOCKED = st.lists(_blocked_values(too_long=True), min_size=1, max_size=2)

# What a signed-in session does besides pages, as bits of one drawn number (one draw instead
# of seven: many small draws are what makes a composite strategy slow). Two-bit flags happen
# in a quarter of sessions.
_WITH_EMAIL = 1
_WITH_TRAITS = 2
_WITH_SET_ONCE = 4
_TRAIT_UPDATE = 8 | 16
_JOINS_COMPANY = 32 | 64
_COMPANY_BY_ANONYMOUS_ID = 128 | 256
_SESSION_SHAPES = st.integers(min_value=0, max_value=511)


class _Names:
    """Hands out fresh values for one kind of entity of a stream: readable ones (``u1``, ``u2``,
    …) or, when hostile, drawn ones that are distinct after the default normalization (else two
    "different" users would be one)."""

    def __init__(self, draw: st.DrawFn, kind: str, template: str, *, hostile: bool) -> None:
        self.draw = draw
        self.kind = kind
        self.template = template
        self.hostile = hostile
        self.used: set[str] = set()

    def __call__(self) -> str:
        if not self.hostile:
            self.used.add(self.template.format(len(self.used) + 1))
            return self.template.format(len(self.used))
        value = self.draw(_kind_values(self.kind, hostile=True, blocked=False))
        key = value.strip()
        while key in self.used:
            # hypothesis repeats values on purpose; tag the repeat rather than reject the whole
            # stream (a filter would). The tag keeps it within the length limit, not blocked.
            value = key = f"{key[:390]}#{len(self.used)}"
        self.used.add(key)
        return value


class _Population:
    """The people and devices of one stream. Each device is a generator of drafts in its true
    order, drawing only when the stream asks for its next event, so that the cost of a stream
    follows its length and not the size of the population."""

    def __init__(
        self,
        draw: st.DrawFn,
        *,
        users: int,
        companies: bool,
        traits: bool,
        resets: bool,
        hostile: bool,
    ) -> None:
        self.draw = draw
        self.traits = traits
        self.resets = resets
        self.new_anon = _Names(draw, ANONYMOUS_ID, "a{}", hostile=hostile)
        new_user = _Names(draw, USER_ID, "u{}", hostile=hostile)
        new_email = _Names(draw, "email", "user{}@example.com", hostile=hostile)
        self.user_ids = [new_user() for _ in range(users)]
        own = [new_email() for _ in range(users)]
        # No e-mail, the user's own, or (a family address) the first user's.
        self.emails = [draw(st.sampled_from((None, mine, own[0]))) for mine in own]
        self.companies: st.SearchStrategy[str] | None = None
        if companies:
            new_company = _Names(draw, USER_ID, "c{}", hostile=hostile)
            count = draw(st.integers(min_value=1, max_value=3))
            self.companies = st.sampled_from([new_company() for _ in range(count)])
        self.user_anons: list[list[str]] = [[] for _ in range(users)]
        self.visitor_anons: list[str] = []

    def page(self, *, anonymous_id: str | None = None, user_id: str | None = None) -> _Draft:
        event, path, server_side = self.draw(_PAGE_VIEWS)
        fields: dict[str, Any] = {"event": event, "properties": {"path": path}}
        if user_id is not None:
            fields["user_id"] = user_id
        if anonymous_id is not None and not (server_side and user_id is not None):
            fields["anonymous_id"] = anonymous_id
        return Track, fields

    def reset(self, anon: str) -> _Draft:
        return Reset, {"anonymous_id": anon}

    def session(self, u: int, anon: str) -> Iterator[_Draft]:
        """One signed-in session of user ``u`` on the device that currently has ``anon``."""
        draw = self.draw
        user = self.user_ids[u]
        self.user_anons[u].append(anon)
        shape = draw(_SESSION_SHAPES)

        def has(flag: int) -> bool:
            return shape & flag == flag

        for _ in range(draw(_below(3))):
            yield self.page(anonymous_id=anon)
        identify: dict[str, Any] = {"user_id": user, "anonymous_id": anon}
        email = self.emails[u]
        if email is not None and has(_WITH_EMAIL):
            identify["identifiers"] = {"email": email}
        if self.traits and has(_WITH_TRAITS):
            identify["traits"] = draw(_TRAITS)
            if has(_WITH_SET_ONCE):
                identify["set_once"] = draw(_SET_ONCE)
        yield Identify, identify
        for _ in range(draw(_below(4))):
            yield self.page(anonymous_id=anon, user_id=user)
        if self.traits and has(_TRAIT_UPDATE):
            # A later server-side update of the profile: last write wins (docs/merge-rules.md, R6).
            yield Identify, {"user_id": user, "traits": draw(_TRAITS)}
        if self.companies is not None and has(_JOINS_COMPANY):
            company: dict[str, Any] = {"company_id": draw(self.companies)}
            if has(_COMPANY_BY_ANONYMOUS_ID):
                company["anonymous_id"] = anon
            else:
                company["user_id"] = user
            if self.traits and has(_WITH_TRAITS):
                company["traits"] = draw(_COMPANY_TRAITS)
            yield IdentifyCompany, company

    def personal_device(self, u: int) -> Iterator[_Draft]:
        anon = self.new_anon()
        yield from self.session(u, anon)
        if self.resets and self.draw(_below(4)) == 3:
            # Logged out and in again: a fresh anonymous id for the same user.
            yield self.reset(anon)
            yield from self.session(u, self.new_anon())

    def shared_device(self, owners: list[int]) -> Iterator[_Draft]:
        anon = self.new_anon()
        for position, u in enumerate(owners):
            # Without a reset the next user signs in on the previous user's anonymous id.
            if position and self.resets and self.draw(_BOOLEANS):
                yield self.reset(anon)
                anon = self.new_anon()
            yield from self.session(u, anon)

    def visitor(self) -> Iterator[_Draft]:
        anon = self.new_anon()
        self.visitor_anons.append(anon)
        for _ in range(self.draw(st.integers(min_value=1, max_value=3))):
            yield self.page(anonymous_id=anon)
        if self.resets and self.draw(_BOOLEANS):
            yield self.reset(anon)
            anon = self.new_anon()
            self.visitor_anons.append(anon)
            yield self.page(anonymous_id=anon)

    def aliases(self) -> Iterator[_Draft]:
        draw = self.draw
        n = len(self.user_ids)
        for _ in range(draw(st.integers(min_value=1, max_value=2))):
            u = draw(_below(n))
            # Anonymous ids seen so far, the user's own or a visitor's; or another user's id,
            # which the default limit of one user id per profile refuses.
            choices: list[str | Identifier] = [
                Identifier(ANONYMOUS_ID, a) for a in self.user_anons[u] + self.visitor_anons
            ]
            choices += [self.user_ids[v] for v in range(n) if v != u]
            if choices:
                previous = draw(st.sampled_from(choices))
                yield Alias, {"user_id": self.user_ids[u], "previous_id": previous}


@st.composite
def _arrivals(
    draw: st.DrawFn, true_order: list[Event], *, late: bool, room: int, full: bool
) -> list[Event]:
    """Deliver ``true_order`` with some events moved (late) and up to ``room`` duplicates."""
    out = list(true_order)
    n = len(out)
    if full and n > 1:
        out = list(draw(st.permutations(out)))
    elif late and n > 1:
        for _ in range(draw(_below(max(1, n // 4) + 1))):
            i, j = divmod(draw(_below(n * n)), n)
            out.insert(j, out.pop(i))
    if room > 0 and n > 0:
        for _ in range(draw(_below(min(room, max(1, n // 5)) + 1))):
            k, position = divmod(draw(_below(n * (len(out) + 1))), len(out) + 1)
            out.insert(position, true_order[k])
    return out


def _substitute(fields: dict[str, Any], bad: str, draw: st.DrawFn) -> str | None:
    """Put the blocked value ``bad`` into one identifier field of a draft (a buggy client);
    returns the identifier kind it now stands for (``None``: the company id)."""
    present = [f for f in _IDENTIFIER_FIELDS if fields.get(f) is not None]
    field = present[draw(_below(len(present)))]
    old = fields[field]
    if field == "identifiers":
        fields[field] = dict.fromkeys(old, bad)
        return str(next(iter(old)))
    if isinstance(old, Identifier):
        fields[field] = Identifier(old.kind, bad)
        return old.kind
    fields[field] = bad
    if field == "company_id":
        return None
    return ANONYMOUS_ID if field == ANONYMOUS_ID else USER_ID


def _forget_targets(people: _Population) -> list[Identifier]:
    """The identifiers of a population that a ``Forget`` of a stream may name."""
    found = [Identifier(USER_ID, u) for u in people.user_ids]
    found += [Identifier("email", e) for e in dict.fromkeys(people.emails) if e is not None]
    for anons in (*people.user_anons, people.visitor_anons):
        found += [Identifier(ANONYMOUS_ID, a) for a in anons]
    return found


@st.composite
def _streams(
    draw: st.DrawFn,
    *,
    users: int,
    max_events: int,
    late: bool,
    duplicates: bool,
    resets: bool,
    companies: bool,
    traits: bool,
    blocked: bool,
    hostile: bool,
    forgets: bool = False,
) -> list[Event]:
    n_users = draw(st.integers(min_value=min(1, users), max_value=users))
    people = _Population(
        draw, users=n_users, companies=companies, traits=traits, resets=resets, hostile=hostile
    )
    devices: list[Iterator[_Draft]] = []
    for u in range(n_users):
        devices += [people.personal_device(u) for _ in range(draw(st.sampled_from(_DEVICE_COUNTS)))]
    if n_users >= 2:
        for _ in range(draw(_below(3))):
            owners = st.lists(_below(n_users), min_size=2, max_size=min(3, n_users), unique=True)
            devices.append(people.shared_device(draw(owners)))
    for _ in range(draw(st.integers(min_value=0 if n_users else 1, max_value=2))):
        devices.append(people.visitor())
    if n_users and draw(_BOOLEANS):
        devices.append(people.aliases())

    # Interleave the devices into one true order, within the budget of events, and give each
    # event the time step since the one before (one draw for both choices).
    budget = max_events - max_events // 6 if duplicates else max_events
    # Room for the erasures, inserted once the true order is drawn.
    reserve = min(3, budget // 4) if forgets else 0
    budget -= reserve
    order: list[_Draft] = []
    steps: list[float] = []
    while devices and len(order) < budget:
        i, step = divmod(draw(_below(len(devices) * len(_TIME_STEPS))), len(_TIME_STEPS))
        draft = next(devices[i], None)
        if draft is None:
            del devices[i]
            continue
        order.append(draft)
        steps.append(_TIME_STEPS[step])

    substituted: list[Identifier] = []
    if blocked and order:
        bad_values = draw(_BLOCKED)
        for _ in range(draw(_below(4))):
            bad = bad_values[draw(_below(len(bad_values)))]
            kind = _substitute(order[draw(_below(len(order)))][1], bad, draw)
            if kind is not None:
                substituted.append(Identifier(kind, bad))

    if forgets and order:
        # An erasure, anywhere in time: of a blocked value the stream carries (before, between
        # or after the events carrying it), or of one of the population's identifiers.
        targets = _forget_targets(people)
        for _ in range(draw(_below(reserve + 1))):
            pool = substituted if substituted and (not targets or draw(_BOOLEANS)) else targets
            if not pool:
                break
            target = pool[draw(_below(len(pool)))]
            order.insert(draw(_below(len(order) + 1)), (Forget, {"identifier": target}))
            steps.append(_TIME_STEPS[draw(_below(len(_TIME_STEPS)))])

    width = len(str(max_events))
    t: float = draw(_below(11))
    true_order: list[Event] = []
    for n, (cls, fields) in enumerate(order):
        if n:
            t += steps[n]
        # Zero-padded ids sort like n, so (timestamp, event_id) order is the true order.
        true_order.append(cls(**fields, timestamp=t, event_id=f"e{n:0{width}d}"))
    room = max_events - len(true_order) if duplicates else 0
    return draw(_arrivals(true_order, late=late, room=room, full=False))


def streams(
    *,
    users: int = 3,
    max_events: int = 60,
    late: bool = True,
    duplicates: bool = True,
    resets: bool = True,
    companies: bool = True,
    traits: bool = True,
    blocked: bool = True,
    hostile: bool = False,
    forgets: bool = False,
) -> st.SearchStrategy[list[Event]]:
    """Realistic delivered event streams: lists of event objects, as a service would send them.

    The population: up to ``users`` identified users (at least one when ``users >= 1``) and up
    to two anonymous-only visitors. Each user has a skewed number of devices (mostly one, some
    up to five), and each device an anonymous id; up to two devices are shared by two or three
    users, one after the other, with or without a ``Reset`` between them. On each device a user
    browses anonymously, is identified (``Identify`` with the anonymous id, sometimes an
    ``email`` identifier, which two users may share), and tracks events with both ids or, for
    server-side calls, the user id only. Users sometimes log out (``Reset``) and back in on a
    fresh anonymous id, join a company (``IdentifyCompany``, by user id or anonymous id), and
    are aliased (``Alias`` from a user id to one of their own or a visitor's anonymous ids, or
    to another user's id, which the default limits refuse).

    Every event has a unique explicit ``event_id`` (``e00``, ``e01``, …, zero-padded) and an
    explicit timestamp: small epoch seconds, ``int`` or ``float``, never decreasing in the true
    order, with ties. Sorting the distinct events by ``(timestamp, event_id)`` gives back the
    true order. The delivered list then differs from it:

    * ``late``: some events are moved elsewhere in the list (late deliveries);
    * ``duplicates``: some events are delivered twice (the same object again);
    * ``resets``, ``companies``, ``traits`` (traits and ``set_once`` of ``Identify``, company
      traits): leave these out when ``False``;
    * ``blocked``: a few identifier fields (a company id included) carry a blocked value from
      :func:`blocked_values`, often the same one across events, as a buggy client sends it;
    * ``hostile``: identifier values from :func:`identifier_values` instead of readable
      ``u1``/``a1``/``c1`` ones (always distinct after normalization, never blocked);
    * ``forgets``: up to three ``Forget`` events (docs/operator-tools.md; fewer when
      ``max_events`` is under 12), anywhere in time, each of one of the stream's identifiers
      or (with ``blocked``) of a blocked value the stream carries, so that erasures fall
      before, between and after the events they name.

    ``len(stream) <= max_events``, duplicates included; every stream has at least one event.
    """
    _check_int("users", users, 0)
    _check_int("max_events", max_events, 1)
    for name, value in (
        ("late", late),
        ("duplicates", duplicates),
        ("resets", resets),
        ("companies", companies),
        ("traits", traits),
        ("blocked", blocked),
        ("hostile", hostile),
        ("forgets", forgets),
    ):
        _check_bool(name, value)
    return _streams(
        users=users,
        max_events=max_events,
        late=late,
        duplicates=duplicates,
        resets=resets,
        companies=companies,
        traits=traits,
        blocked=blocked,
        hostile=hostile,
        forgets=forgets,
    )


def arrival_orders(
    stream: Sequence[Event], *, duplicates: bool = True
) -> st.SearchStrategy[list[Event]]:
    """Other delivery orders of ``stream``: any permutation of it, and with ``duplicates=True``
    some of its events delivered a second time (the same objects).

    For the core promise (docs/merge-rules.md, R8): ingesting any arrival order gives the
    same state.
    """
    _check_sequence("stream", stream)
    _check_bool("duplicates", duplicates)
    events_ = list(stream)
    room = max(1, len(events_) // 5) if duplicates else 0
    return _arrivals(events_, late=False, room=room, full=True)


# --- Segment messages ---------------------------------------------------------------------------


@functools.cache
def _iso_timestamps() -> st.SearchStrategy[str]:
    def iso(moment: datetime) -> str:
        return moment.isoformat(timespec="milliseconds") + "Z"

    return st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2099, 12, 31)).map(iso)


@st.composite
def _segment_messages(
    draw: st.DrawFn, *, types: tuple[str, ...], hostile: bool, blocked: bool
) -> dict[str, Any]:
    mtype = draw(st.sampled_from(types))
    ids = _identifier_values(hostile=hostile, blocked=blocked)
    anon = _kind_values(ANONYMOUS_ID, hostile=hostile, blocked=blocked)
    message: dict[str, Any] = {
        "type": mtype,
        "messageId": draw(_event_ids(hostile=hostile)),
        "timestamp": draw(_iso_timestamps()),
    }
    if draw(_BOOLEANS):
        message["context"] = {"library": {"name": "analytics-python", "version": "2.3.2"}}
        message["sentAt"] = message["timestamp"]
    objects = _json_objects(hostile=hostile)
    if mtype == "identify":
        message["userId"] = draw(ids)
        if draw(_BOOLEANS):
            message["anonymousId"] = draw(anon)
        message["traits"] = draw(objects)
    elif mtype in ("track", "page", "screen", "group"):
        which = draw(st.sampled_from(("both", "userId", "anonymousId")))
        if which != "anonymousId":
            message["userId"] = draw(ids)
        if which != "userId":
            message["anonymousId"] = draw(anon)
        if mtype == "track":
            message["event"] = draw(st.sampled_from(_PAGES))
            message["properties"] = draw(objects)
        elif mtype == "group":
            message["groupId"] = draw(ids)
            message["traits"] = draw(objects)
        else:
            message["name"] = draw(st.sampled_from(("Home", "Docs", "Pricing")))
            message["properties"] = draw(objects)
    elif mtype == "alias":
        message["userId"] = draw(ids)
        # previousId is the device's anonymous id: the message's own anonymousId
        # (analytics.js, mobile before sign-in), or with no anonymousId (the server SDKs). A
        # previous *user* id is an id migration, refused (docs/merge-rules.md, Aliases).
        message["previousId"] = draw(anon)
        if draw(_BOOLEANS):
            message["anonymousId"] = message["previousId"]
    else:
        message["anonymousId"] = draw(anon)
    return message


def segment_messages(
    *,
    types: Sequence[str] = ("identify", "track", "alias", "group"),
    hostile: bool = True,
    blocked: bool = False,
) -> st.SearchStrategy[dict[str, Any]]:
    """Segment-spec message dicts of the given ``types`` (names from :data:`SEGMENT_TYPES`).

    Keys as Segment sends them: ``type``, ``userId``, ``anonymousId``, ``previousId`` (alias;
    sometimes equal to the message's ``anonymousId``), ``groupId`` (group), ``traits``,
    ``properties``, ``event`` (track), ``name`` (page, screen), ``messageId``, an ISO-8601
    UTC ``timestamp`` ending in ``Z`` (``2024-05-01T12:00:00.000Z``), and sometimes
    ``context`` and ``sentAt``, which ingestion ignores. Track, page, screen and group
    messages carry a ``userId``, an ``anonymousId`` or both; ``reset`` (an identityres
    extension) an ``anonymousId``. ``hostile`` and ``blocked`` apply to the ids as in
    :func:`identifier_values`.
    """
    type_names = _check_choices("types", types, SEGMENT_TYPES)
    _check_bool("hostile", hostile)
    _check_bool("blocked", blocked)
    return _segment_messages(types=type_names, hostile=hostile, blocked=blocked)
