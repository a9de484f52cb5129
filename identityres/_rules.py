"""The configurable part of the merge rules: kinds and priority, limits, blocked values,
normalizers (docs/concepts.md; R1, R2 in docs/merge-rules.md).

``Rules`` is the frozen value users build; ``CompiledRules`` is what the engine reads on the
hot path (kinds as small integers in priority order, tuples instead of mappings). The merge
decisions themselves live in ``_engine``.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import attrs

from identityres._model import ANONYMOUS_ID, USER_ID, Reason
from identityres.errors import ConfigurationError

__all__ = [
    "DEFAULT_BLOCKED_EXACT",
    "DEFAULT_BLOCKED_INSENSITIVE",
    "DEFAULT_EXTRACTION",
    "Extract",
    "Rules",
    "RulesRecord",
    "normalize_email",
]

#: Blocked whatever their case (docs/merge-rules.md, blocked values).
DEFAULT_BLOCKED_INSENSITIVE = frozenset(
    {
        "anonymous",
        "guest",
        "distinctid",
        "distinct_id",
        "id",
        "not_authenticated",
        "email",
        "undefined",
        "true",
        "false",
    }
)
#: Blocked exactly as written (docs/merge-rules.md, blocked values); the empty string is
#: blocked too.
DEFAULT_BLOCKED_EXACT = frozenset(
    {"", "[object Object]", "NaN", "nan", "None", "none", "null", "0", "-1"}
)

_KIND_NAME = re.compile(r"[a-z][a-z0-9_]*\Z")


def strip_whitespace(value: str) -> str:
    """The default normalizer of every kind: strip surrounding whitespace (docs/concepts.md,
    normalization)."""
    return value.strip()


def normalize_email(value: str) -> str:
    """Normalizer for e-mail addresses: strip surrounding whitespace and lower-case.

    Not on by default (docs/concepts.md: ``User@x.com`` and ``user@x.com`` stay distinct unless a
    normalizer says otherwise); turn it on with ``Rules(normalizers={"email": normalize_email})``.
    """
    return value.strip().lower()


#: Most kinds a set of rules may have, ``user_id`` and ``anonymous_id`` included: the engine
#: keeps a node's kind in one signed byte (docs/concepts.md, Kinds and priority).
MAX_KINDS = 100
#: Largest ``limits``, ``max_profile_size`` and ``max_length``: what a 64-bit count holds.
MAX_COUNT = 2**63 - 1


def shown(value: Any) -> str:
    """``repr(value)`` for an error message, or a stand-in when it cannot be made (an int too
    long to turn into text)."""
    try:
        return repr(value)
    except Exception:
        return f"<{type(value).__name__} that cannot be shown>"


def _collection(option: str, value: Any, *, ordered: bool) -> tuple[Any, ...]:
    """The items of a collection option: refuses a ``str``/``bytes`` (which would be split
    into characters), ``None``, a mapping, anything not iterable, and, where the order is
    the meaning (``ordered``), a set, whose order changes from process to process."""
    wrong = value is None or isinstance(value, (str, bytes, bytearray, memoryview, Mapping))
    if not wrong and ordered and isinstance(value, (set, frozenset)):
        raise ConfigurationError(
            f"{option}={shown(value)}: the order is the meaning; give a list or tuple, not a "
            f"{type(value).__name__}"
        )
    if not wrong:
        try:
            return tuple(value)
        except TypeError:
            pass
    what = "of names" if ordered else "of values"
    raise ConfigurationError(
        f"{option}={shown(value)}: must be a list or tuple {what}, not {type(value).__name__}"
    )


def _kinds_tuple(value: Iterable[str]) -> tuple[str, ...]:
    return _collection("kinds", value, ordered=True)


def _optional_kinds_tuple(value: Iterable[str] | None) -> tuple[str, ...] | None:
    return None if value is None else _collection("priority", value, ordered=True)


def _values_set(value: Iterable[str]) -> frozenset[str]:
    values = _collection("blocked_values", value, ordered=False)
    for item in values:
        if not isinstance(item, str):
            raise ConfigurationError(f"blocked_values: {shown(item)} is not a str")
        _check_text("blocked_values", item)
    return frozenset(values)


def _check_text(option: str, text: str) -> None:
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise ConfigurationError(
                f"{option}: {text!r} holds a lone surrogate; not valid Unicode text"
            ) from None


def _pattern_key(pattern: Any) -> tuple[str, int]:
    if isinstance(pattern, re.Pattern):
        return (str(pattern.pattern), pattern.flags)
    return (str(pattern), 0)


def _patterns_tuple(
    value: Iterable[str | re.Pattern[str]],
) -> tuple[str | re.Pattern[str], ...]:
    patterns = _collection("blocked_patterns", value, ordered=False)
    for pattern in patterns:
        text = pattern.pattern if isinstance(pattern, re.Pattern) else pattern
        if not isinstance(text, str):
            raise ConfigurationError(
                f"blocked_patterns: {shown(pattern)} is not a str pattern (identifier values "
                "are str; a bytes pattern never matches one)"
            )
        _check_text("blocked_patterns", text)
    if isinstance(value, (set, frozenset)):
        # the record lists patterns in the order given: a set's order changes with
        # PYTHONHASHSEED, so give it one
        patterns = tuple(sorted(patterns, key=_pattern_key))
    return patterns


#: Message types an extraction rule may name (docs/formats.md, Identifiers inside messages).
MESSAGE_TYPES = ("identify", "track", "page", "screen", "group")
_PATH = re.compile(r"[A-Za-z0-9_$][A-Za-z0-9_$-]*(\.[A-Za-z0-9_$][A-Za-z0-9_$-]*)*\Z")


def _path_tuple(value: Any) -> tuple[str, ...]:
    if not isinstance(value, str) or not _PATH.match(value):
        raise ConfigurationError(
            f"extraction: path={shown(value)}: must be a dotted message path such as "
            "'traits.email' (letters, digits, '_', '$', '-' between the dots)"
        )
    return tuple(value.split("."))


def _types_tuple(value: Iterable[str]) -> tuple[str, ...]:
    if isinstance(value, str):
        return (value,)
    if isinstance(value, (bytes, Mapping)) or not isinstance(value, Iterable):
        # (tuple() would raise a bare TypeError, or split bytes into ints)
        raise ConfigurationError(f"types={shown(value)}: must be a message type or a list of them")
    return tuple(value)


@attrs.frozen
class Extract:
    """One identifier extraction rule (docs/formats.md, Identifiers inside messages): the value
    at ``path`` of a message (dotted: ``"context.traits.email"``) becomes an identifier of
    ``kind``, on messages of the ``types`` given (default: every type extraction applies to,
    ``identify``, ``track``, ``page``, ``screen``, ``group``) whose paths in ``when`` hold one
    of the values given, e.g. ``when={"context.device.type": "ios"}``."""

    kind: str
    path: str
    types: tuple[str, ...] = attrs.field(default=MESSAGE_TYPES, converter=_types_tuple)
    when: Mapping[str, str | tuple[str, ...]] = attrs.field(factory=dict)

    def describe(self) -> list[Any]:
        """The rule as JSON data, for the rules record."""
        when = {k: [v] if isinstance(v, str) else list(v) for k, v in sorted(self.when.items())}
        return [self.kind, self.path, list(self.types), when]


def _email_rules(kind: str) -> tuple[Extract, ...]:
    return (
        Extract(kind, f"traits.{kind}", types=("identify",)),
        Extract(kind, f"context.traits.{kind}"),
        Extract(kind, f"properties.{kind}", types=("track", "page", "screen")),
    )


#: What Segment Unify promotes to identifiers by default, for the kinds a set of rules
#: declares (docs/formats.md, Identifiers inside messages): ``email`` and ``phone`` from
#: ``traits`` (identify), ``context.traits`` (every type) and ``properties`` (track, page,
#: screen); device ids from ``context.device`` by ``context.device.type``; and, for the
#: declared ``api_key`` kind, an API server's ``properties.api_key`` on a track.
DEFAULT_EXTRACTION: tuple[Extract, ...] = (
    *_email_rules("email"),
    *_email_rules("phone"),
    Extract("api_key", "properties.api_key", types=("track",)),
    Extract("ios_id", "context.device.id", when={"context.device.type": "ios"}),
    Extract("ios_idfa", "context.device.advertisingId", when={"context.device.type": "ios"}),
    Extract("android_id", "context.device.id", when={"context.device.type": "android"}),
    Extract(
        "android_idfa", "context.device.advertisingId", when={"context.device.type": "android"}
    ),
)


def _extraction_tuple(value: Any) -> tuple[Extract, ...] | None:
    if value is None:
        return None
    items = _collection("extraction", value, ordered=True)
    out: list[Extract] = []
    for item in items:
        if isinstance(item, Mapping):
            unknown = set(item) - {"kind", "path", "types", "when"}
            if unknown:
                raise ConfigurationError(
                    f"extraction: unknown key {sorted(unknown)[0]!r} in {shown(dict(item))}; "
                    "the keys are kind, path, types, when"
                )
            try:
                item = Extract(**item)
            except TypeError as exc:
                raise ConfigurationError(f"extraction: {shown(dict(item))}: {exc}") from None
        if not isinstance(item, Extract):
            raise ConfigurationError(
                f"extraction: {shown(item)} is not an identityres.Extract or a mapping"
            )
        out.append(item)
    return tuple(out)


def _default_limits() -> dict[str, int | None]:
    return {USER_ID: 1}


def _check_kinds(instance: Rules, attribute: attrs.Attribute[Any], kinds: tuple[str, ...]) -> None:
    if len(kinds) + 2 > MAX_KINDS:
        raise ConfigurationError(
            f"kinds: {len(kinds)} kinds declared; at most {MAX_KINDS - 2} (with user_id and "
            f"anonymous_id, {MAX_KINDS} kinds in total)"
        )
    seen: set[str] = set()
    for kind in kinds:
        if not isinstance(kind, str) or not _KIND_NAME.match(kind):
            raise ConfigurationError(
                f"kinds: {shown(kind)} is not a valid kind name (lower-case letters, digits, '_')"
            )
        if kind in (USER_ID, ANONYMOUS_ID):
            raise ConfigurationError(f"kinds: {kind!r} is built in; declare only further kinds")
        if kind in seen:
            raise ConfigurationError(f"kinds: {kind!r} is declared twice")
        seen.add(kind)


@attrs.frozen
class Rules:
    """Configuration of the merge rules.

    * ``kinds``: identifier kinds beyond the built-in ``user_id`` and ``anonymous_id``, in
      priority order; by default ``email``, ``phone``, ``api_key``.
    * ``priority``: the full priority order of all kinds, highest first. By default
      ``user_id``, then ``kinds`` in order, then ``anonymous_id`` (R1 in docs/merge-rules.md).
    * ``limits``: most identifiers of a kind one profile may hold, merged over the default
      ``{"user_id": 1}``; ``None`` lifts a limit (R2 in docs/merge-rules.md).
    * ``max_profile_size``: most identifiers in one profile (default 10,000; ``None``: no cap).
    * ``blocked_values``: further exact values that never link (after normalization).
    * ``blocked_patterns``: regular expressions (strings or compiled); a value that
      ``re.search`` matches is blocked — anchor them (``^[0-]*$``) to block whole values.
    * ``max_length``: values longer than this are blocked (default 400).
    * ``normalizers``: per-kind ``str -> str`` functions that replace the default (strip
      surrounding whitespace), e.g. ``{"email": normalize_email}``.
    * ``default_blocked_values``: keep the default blocked list of docs/merge-rules.md
      (default True).
    * ``extraction``: which values inside a message become identifiers (:class:`Extract`
      rules, or mappings with the same keys); by default ``DEFAULT_EXTRACTION``'s rules for
      the kinds declared; ``()`` extracts nothing (docs/formats.md).

    Collections must be collections (a ``str`` is not split into characters, ``None`` is
    refused), ``kinds`` and ``priority`` ordered ones (no sets), mappings mappings; patterns
    are ``str`` patterns; counts are ints from 1 to ``2**63 - 1``; at most 100 kinds in all,
    ``user_id`` and ``anonymous_id`` included. Anything else raises
    :class:`~identityres.errors.ConfigurationError` naming the option (docs/concepts.md,
    Errors).
    """

    kinds: tuple[str, ...] = attrs.field(
        default=("email", "phone", "api_key"), converter=_kinds_tuple, validator=_check_kinds
    )
    priority: tuple[str, ...] | None = attrs.field(default=None, converter=_optional_kinds_tuple)
    limits: Mapping[str, int | None] = attrs.field(factory=_default_limits)
    max_profile_size: int | None = 10_000
    blocked_values: frozenset[str] = attrs.field(default=frozenset(), converter=_values_set)
    blocked_patterns: tuple[str | re.Pattern[str], ...] = attrs.field(
        default=(), converter=_patterns_tuple
    )
    max_length: int = 400
    normalizers: Mapping[str, Callable[[str], str]] = attrs.field(factory=dict)
    default_blocked_values: bool = True
    extraction: tuple[Extract, ...] | None = attrs.field(default=None, converter=_extraction_tuple)
    _compiled: CompiledRules = attrs.field(init=False, repr=False, eq=False)

    def __attrs_post_init__(self) -> None:
        object.__setattr__(self, "_compiled", CompiledRules(self))

    @property
    def compiled(self) -> CompiledRules:
        """The engine's view of these rules (internal; stable only within a release)."""
        return self._compiled

    @property
    def all_kinds(self) -> tuple[str, ...]:
        """Every kind, highest priority first."""
        return self._compiled.kind_names

    def record(self) -> RulesRecord:
        """What a store records of these rules (see :class:`RulesRecord`)."""
        return RulesRecord.of(self)


def _callable_name(fn: Callable[..., Any]) -> str:
    return f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', repr(fn))}"


def _import_normalizer(kind: str, name: str) -> Callable[[str], str]:
    # "package.module.Class.function": try the longest module path first
    for cut in range(1, name.count(".") + 1):
        module_name, *attr_path = name.rsplit(".", cut)
        try:
            obj: Any = importlib.import_module(module_name)
        except ImportError:
            continue
        try:
            for attr in attr_path:
                obj = getattr(obj, attr)
        except AttributeError:
            break
        if callable(obj):
            return obj  # type: ignore[no-any-return]
        break
    raise ConfigurationError(
        f"normalizers[{kind!r}]: the recorded normalizer {name!r} cannot be imported by its "
        "name; open the store with the Rules it was written with"
    )


@attrs.frozen
class RulesRecord:
    """The rules a store was written with, as the store keeps them: ``description`` is a
    readable JSON object of everything that decides (kinds in priority order, limits, the
    profile cap, blocked values and patterns, normalizers by qualified name) and ``digest``
    its SHA-256. A graph opened on a store recorded with another digest raises
    :class:`~identityres.errors.ConfigurationError` naming what differs.

    ``rules`` is the ``Rules`` object itself, for an in-process store (``MemoryStore``)
    that decides with it; it is never stored and not compared."""

    digest: str
    description: str
    rules: Rules | None = attrs.field(default=None, eq=False, repr=False)

    @classmethod
    def of(cls, rules: Rules) -> RulesRecord:
        c = rules.compiled
        data = {
            "priority": list(c.kind_names),
            "limits": {k: c.limits[i] for i, k in enumerate(c.kind_names)},
            "max_profile_size": c.max_profile_size,
            "max_length": c.max_length,
            "blocked_values": sorted(c.blocked_exact),
            "blocked_values_any_case": sorted(c.blocked_insensitive),
            "blocked_patterns": [[p.pattern, p.flags] for p in c.patterns],
            "normalizers": {
                k: _callable_name(fn) for k, fn in zip(c.kind_names, c.normalizers, strict=True)
            },
        }
        if c.extraction:
            # (absent when nothing is extracted: the record of a store written before
            # extraction rules existed)
            data["extraction"] = [rule.describe() for rule in c.extraction]
        text = json.dumps(data, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
        digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()
        return cls(digest, text, rules)

    def to_rules(self) -> Rules:
        """The :class:`Rules` this record describes, for a tool that opens a store without
        knowing its rules (the command line). Raises :class:`ConfigurationError` when they
        cannot be rebuilt: a normalizer that cannot be imported by its name (a lambda, a
        local function) or a case-insensitive blocked list other than the default one."""
        try:
            data = json.loads(self.description)
            priority = [str(k) for k in data["priority"]]
            limits = {str(k): v for k, v in data["limits"].items()}
            exact = set(data["blocked_values"])
            any_case = set(data["blocked_values_any_case"])
            patterns = [re.compile(p, f) for p, f in data["blocked_patterns"]]
            names = dict(data["normalizers"])
            max_profile_size = data["max_profile_size"]
            max_length = data["max_length"]
            extraction = [
                Extract(kind, path, tuple(types), {k: tuple(v) for k, v in when.items()})
                for kind, path, types, when in data.get("extraction", [])
            ]
        except (ValueError, KeyError, TypeError, AttributeError, re.error) as exc:
            raise ConfigurationError(
                f"the recorded rules cannot be read ({exc!r}): {self.description[:200]!r}"
            ) from None
        default = any_case == set(DEFAULT_BLOCKED_INSENSITIVE) and exact >= DEFAULT_BLOCKED_EXACT
        if any_case and not default:
            raise ConfigurationError(
                "the recorded rules block words in any case other than the default list; "
                "open the store with the Rules it was written with"
            )
        exact -= {""} | (DEFAULT_BLOCKED_EXACT if default else set())
        normalizers: dict[str, Callable[[str], str]] = {}
        for kind, name in names.items():
            if name == _callable_name(strip_whitespace):
                continue
            normalizers[kind] = _import_normalizer(kind, str(name))
        rules = Rules(
            kinds=[k for k in priority if k not in (USER_ID, ANONYMOUS_ID)],
            priority=priority,
            limits=limits,
            max_profile_size=max_profile_size,
            blocked_values=exact,
            blocked_patterns=patterns,
            max_length=max_length,
            normalizers=normalizers,
            default_blocked_values=default,
            extraction=extraction,
        )
        if rules.record().digest != self.digest:
            raise ConfigurationError(
                "the recorded rules cannot be rebuilt exactly; open the store with the Rules "
                f"it was written with: {self.description[:200]!r}"
            )
        return rules

    def difference(self, other: RulesRecord) -> str:
        """What differs between these rules and ``other`` (the recorded ones), in words."""
        try:
            mine = json.loads(self.description)
            theirs = json.loads(other.description)
        except ValueError:
            return f"the recorded rules are unreadable: {other.description[:200]!r}"
        if not isinstance(mine, dict) or not isinstance(theirs, dict):
            return f"the recorded rules are unreadable: {other.description[:200]!r}"
        parts = [
            f"{key}: recorded {theirs.get(key)!r}, given {mine.get(key)!r}"
            for key in sorted({*mine, *theirs})
            if mine.get(key) != theirs.get(key)
        ]
        return "; ".join(parts) or "the recorded digest differs"


def _count(value: Any) -> bool:
    """An int from 1 to ``MAX_COUNT`` (not a bool)."""
    return isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= MAX_COUNT


#: a compiled extraction rule (see ``CompiledRules.extractors``)
Extractor = tuple[int, str, int, tuple[tuple[tuple[str, ...], tuple[str, ...]], ...], str]


class CompiledRules:
    """Precomputed tables for the hot path. Kinds are indexes into ``kind_names``, which is
    in priority order, so sorting identifiers by priority is sorting by index."""

    __slots__ = (
        "anon",
        "blocked_exact",
        "blocked_insensitive",
        "ci_max_len",
        "extraction",
        "extractors",
        "kind_index",
        "kind_names",
        "limited",
        "limits",
        "max_length",
        "max_profile_size",
        "normalizers",
        "pair_refusal",
        "patterns",
        "user",
    )

    def __init__(self, rules: Rules) -> None:
        declared = (USER_ID, *rules.kinds, ANONYMOUS_ID)
        if rules.priority is None:
            names = declared
        else:
            names = rules.priority
            if (
                not all(isinstance(k, str) for k in names)
                or sorted(names) != sorted(declared)
                or len(set(names)) != len(names)
            ):
                raise ConfigurationError(
                    f"priority={shown(names)}: must order exactly the kinds {declared!r}"
                )
        self.kind_names: tuple[str, ...] = names
        self.kind_index: dict[str, int] = {k: i for i, k in enumerate(names)}
        self.user = self.kind_index[USER_ID]
        self.anon = self.kind_index[ANONYMOUS_ID]

        if not isinstance(rules.limits, Mapping):
            raise ConfigurationError(
                f"limits={shown(rules.limits)}: must be a mapping kind -> int, not "
                f"{type(rules.limits).__name__}"
            )
        merged: dict[str, int | None] = {USER_ID: 1, **rules.limits}
        limits: list[int | None] = [None] * len(names)
        for kind, limit in merged.items():
            if kind not in self.kind_index:
                raise ConfigurationError(f"limits: unknown kind {shown(kind)}")
            if limit is not None and not _count(limit):
                raise ConfigurationError(
                    f"limits[{kind!r}]={shown(limit)}: must be an int from 1 to 2**63-1, or None"
                )
            limits[self.kind_index[kind]] = limit
        self.limits: tuple[int | None, ...] = tuple(limits)
        self.limited: tuple[int, ...] = tuple(i for i, lim in enumerate(limits) if lim is not None)

        cap = rules.max_profile_size
        if cap is not None and not _count(cap):
            raise ConfigurationError(
                f"max_profile_size={shown(cap)}: must be an int from 1 to 2**63-1, or None"
            )
        self.max_profile_size: int | None = cap
        # What joining two singletons of kinds (i, j) gives: None (allowed) or the refusal
        # (R2), precomputed for the hot path of two first-seen identifiers.
        self.pair_refusal: tuple[tuple[tuple[Reason, int | None] | None, ...], ...] = tuple(
            tuple(self._singletons(i, j, limits, cap) for j in range(len(names)))
            for i in range(len(names))
        )
        if not _count(rules.max_length):
            raise ConfigurationError(
                f"max_length={shown(rules.max_length)}: must be an int from 1 to 2**63-1"
            )
        self.max_length: int = rules.max_length

        # The empty string never identifies anyone, default list or not.
        exact: set[str] = {""}
        insensitive: set[str] = set()
        if not isinstance(rules.default_blocked_values, bool):
            raise ConfigurationError(
                f"default_blocked_values={shown(rules.default_blocked_values)}: must be True "
                "or False"
            )
        if rules.default_blocked_values:
            exact |= DEFAULT_BLOCKED_EXACT
            insensitive |= DEFAULT_BLOCKED_INSENSITIVE
        exact |= rules.blocked_values  # str values, checked by the converter
        self.blocked_exact = frozenset(exact)
        self.blocked_insensitive = frozenset(insensitive)
        self.ci_max_len = max((len(w) for w in insensitive), default=0)
        patterns: list[re.Pattern[str]] = []
        for pattern in rules.blocked_patterns:
            try:
                patterns.append(pattern if isinstance(pattern, re.Pattern) else re.compile(pattern))
            except (re.error, TypeError) as exc:
                raise ConfigurationError(
                    f"blocked_patterns: {shown(pattern)} is not a regex: {exc}"
                ) from exc
        self.patterns: tuple[re.Pattern[str], ...] = tuple(patterns)

        normalizers: list[Callable[[str], str]] = [strip_whitespace] * len(names)
        if not isinstance(rules.normalizers, Mapping):
            raise ConfigurationError(
                f"normalizers={shown(rules.normalizers)}: must be a mapping kind -> function, "
                f"not {type(rules.normalizers).__name__}"
            )
        for kind, fn in rules.normalizers.items():
            if kind not in self.kind_index:
                raise ConfigurationError(f"normalizers: unknown kind {shown(kind)}")
            if not callable(fn):
                raise ConfigurationError(f"normalizers[{kind!r}]={shown(fn)}: not callable")
            normalizers[self.kind_index[kind]] = fn
        self.normalizers: tuple[Callable[[str], str], ...] = tuple(normalizers)
        self.extraction: tuple[Extract, ...] = self._extraction(rules.extraction)
        #: per message type: ``(kind index, path parts, ((path parts, allowed values), ...),
        #: dotted path)`` in rule order
        #: per message type: the distinct parent paths its rules read (each dug out of a
        #: message once), and the rules in order as ``(parent index, leaf key, kind index,
        #: ((condition path, allowed values), ...), dotted path)``
        self.extractors: dict[str, tuple[tuple[tuple[str, ...], ...], tuple[Extractor, ...]]] = {}
        for t in MESSAGE_TYPES:
            parents: list[tuple[str, ...]] = []
            compiled: list[Extractor] = []
            for r in self.extraction:
                if t not in r.types:
                    continue
                *parent, leaf = r.path.split(".")
                if tuple(parent) not in parents:
                    parents.append(tuple(parent))
                conditions = tuple(
                    (tuple(p.split(".")), (v,) if isinstance(v, str) else tuple(v))
                    for p, v in sorted(r.when.items())
                )
                compiled.append(
                    (
                        parents.index(tuple(parent)),
                        leaf,
                        self.kind_index[r.kind],
                        conditions,
                        r.path,
                    )
                )
            if compiled:
                self.extractors[t] = (tuple(parents), tuple(compiled))

    def _extraction(self, given: tuple[Extract, ...] | None) -> tuple[Extract, ...]:
        if given is None:
            return tuple(r for r in DEFAULT_EXTRACTION if r.kind in self.kind_index)
        for i, rule in enumerate(given):
            where = f"extraction[{i}]"
            if rule.kind not in self.kind_index or rule.kind in (USER_ID, ANONYMOUS_ID):
                raise ConfigurationError(
                    f"{where}.kind={shown(rule.kind)}: must be a declared kind other than "
                    f"user_id and anonymous_id (userId and anonymousId are read as such); "
                    f"declared: {list(self.kind_names)}"
                )
            try:
                _path_tuple(rule.path)
            except ConfigurationError:
                raise ConfigurationError(
                    f"{where}.path={shown(rule.path)}: must be a dotted message path such as "
                    "'traits.email'"
                ) from None
            if not rule.types or any(t not in MESSAGE_TYPES for t in rule.types):
                raise ConfigurationError(
                    f"{where}.types={shown(rule.types)}: must name some of {list(MESSAGE_TYPES)}"
                )
            if not isinstance(rule.when, Mapping):
                raise ConfigurationError(
                    f"{where}.when={shown(rule.when)}: must be a mapping path -> value(s)"
                )
            for path, allowed in rule.when.items():
                try:
                    _path_tuple(path)
                except ConfigurationError:
                    raise ConfigurationError(
                        f"{where}.when: {shown(path)} is not a dotted message path"
                    ) from None
                values = (allowed,) if isinstance(allowed, str) else allowed
                if (
                    not isinstance(values, (tuple, list))
                    or not values
                    or not all(isinstance(v, str) for v in values)
                ):
                    raise ConfigurationError(
                        f"{where}.when[{path!r}]={shown(allowed)}: must be a str or a tuple of str"
                    )
        return given

    @staticmethod
    def _singletons(
        i: int, j: int, limits: list[int | None], cap: int | None
    ) -> tuple[Reason, int | None] | None:
        for k, limit in enumerate(limits):
            if limit is not None and (i == k) + (j == k) > limit:
                return (Reason.LIMIT_EXCEEDED, k)
        if cap is not None and cap < 2:
            return (Reason.PROFILE_SIZE_LIMIT, None)
        return None

    def decides_like(self, other: CompiledRules) -> bool:
        """Whether ``other`` decides exactly as these rules do: every table equal, the same
        normalizer functions. Read from ``__slots__``, so a table added later is compared
        too."""
        return all(getattr(self, name) == getattr(other, name) for name in self.__slots__)

    def blocked_reason(self, value: str) -> Reason | None:
        """Why a normalized value is blocked, or ``None`` when it may link
        (docs/merge-rules.md, blocked values)."""
        if len(value) > self.max_length:
            return Reason.VALUE_TOO_LONG
        if self._is_blocked_word(value):
            return Reason.BLOCKED_VALUE
        quoted = len(value) >= 2 and value[0] in "'\"" and value[-1] == value[0]
        if quoted and self._is_blocked_word(value[1:-1]):
            return Reason.BLOCKED_VALUE
        for pattern in self.patterns:
            if pattern.search(value):
                return Reason.BLOCKED_VALUE
        return None

    def _is_blocked_word(self, value: str) -> bool:
        if value in self.blocked_exact:
            return True
        # Long values cannot be one of the short case-insensitive words: skip lower().
        return len(value) <= self.ci_max_len and value.lower() in self.blocked_insensitive
