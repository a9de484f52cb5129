"""Seeded, realistic identity event streams for the benchmarks (issue #5).

A stream is a sequence of *event tuples*, cheap to make and to unpack::

    (op, user_id, anonymous_id, name, data, timestamp, event_id)

=============  ==========================  ======================================
``op``         ``name``                    ``data``
=============  ==========================  ======================================
``IDENTIFY``   ``None``                    traits dict or ``None``
``TRACK``      event name                  properties dict or ``None``
``RESET``      ``None``                    ``None`` (``user_id`` is ``None`` too)
``COMPANY``    company id                  company traits dict or ``None``
=============  ==========================  ======================================

``timestamp`` is epoch seconds (a float with millisecond precision) and ``event_id`` a
32-hex-digit message id. :func:`apply_events` feeds tuples to the per-event API
(``identify`` / ``track`` / ``reset`` / ``identify_company``), :func:`to_object` turns one into
an event object for ``IdentityGraph.ingest`` and :func:`to_segment` into a Segment-spec message
dict (``type``/``userId``/``anonymousId``/``traits``/``properties``/``timestamp``/``messageId``).

What a stream holds (every knob is a field of :class:`Workload`):

* **visitors who never identify** (``anonymous_only``, default 70% of the people): one
  anonymous id, one to a few anonymous ``track`` calls;
* **identified users** with a skewed number of devices: Zipf-like over ``1..max_devices``
  (weight ``1/k**zipf_s``; the defaults give one device to 65% of users, a mean of 1.9). On
  each device: anonymous page views, an ``identify`` (with traits for ``traits`` of them),
  signed-in ``track`` calls carrying both ids (as analytics.js sends them); some users make
  server-side calls with the user id alone;
* **shared devices** (``shared_device`` of the devices): a second, new user signs in on the
  device later, after the first user logged out (``reset`` and a fresh anonymous id; for
  ``shared_reset`` of them, sometimes followed by a stale event still carrying the old id) or
  without a reset (the rules refuse the second user: ``limit_exceeded``);
* **companies** (``company`` of the users): ``identify_company`` with a user id, companies
  drawn with a skew from a pool of ``identifiers // 50``;
* **blocked values** (``blocked``): that share of events has its anonymous id (else its user
  id) replaced by a value of the default blocked list of docs/merge-rules.md (``null``,
  ``undefined``, ``0``, ``""``…);
* **late deliveries** (``late``): that share of events is held back and delivered after
  ``d`` newer events, ``d`` log-uniform in ``1..max_delay``; the event keeps its timestamp, so
  it arrives older than what was delivered before it;
* **duplicates** (``duplicates``): that share of events is delivered a second time (same
  ``event_id``, same content), ``d`` events later.

People are generated a few thousand at a time (``active``) and their events interleaved, in
increasing timestamp order (every event has its own millisecond); the late and duplicate
deliveries then reorder that sequence. The content, the late deliveries and the duplicates use
separate seeded random generators, so ``dataclasses.replace(workload, late=0).events()`` is the
same events as ``workload.events()`` without the late deliveries; sorting a delivered stream by
timestamp gives the same stream in order (a duplicate right after its original). Everything is a
generator: memory stays flat at any size (10^7 identifiers included), except for the held-back
events (about ``(late + duplicates) * max_delay / 9`` of them).

Run it as a script to write Segment-spec JSONL for the CLI (``identityres resolve FILE``)::

    python benchmarks/workload.py --identifiers 1e5 --jsonl events.jsonl
    python benchmarks/workload.py --identifiers 1e4 --stats      # what a stream holds
"""

from __future__ import annotations

import argparse
import functools
import heapq
import json
import math
import random
import sys
import time
from bisect import bisect
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from itertools import accumulate
from typing import Any, TextIO

IDENTIFY, TRACK, RESET, COMPANY = 0, 1, 2, 3
#: Names of the ops, by op number (also the graph method each one calls).
OPS = ("identify", "track", "reset", "identify_company")

EventTuple = tuple[int, "str | None", "str | None", "str | None", "Any", float, str]

#: Values of the default blocked list (docs/merge-rules.md, Blocked values), as broken clients
#: send them.
BLOCKED_VALUES = (
    "null",
    "undefined",
    "0",
    "anonymous",
    "guest",
    "",
    "None",
    "[object Object]",
    "-1",
    '"null"',
    "NaN",
    "false",
)

_PAGES = ("Home", "Pricing", "Docs", "Blog", "Signup", "Changelog")
_PATHS = tuple(f"/{page.lower()}" for page in _PAGES)
_SIGNED_IN = ("Dashboard Viewed", "Project Created", "Key Created", "Invite Sent", "Upgrade")
_SERVER = ("API Call", "Webhook Delivered", "Export Finished")
_PLANS = ("free", "pro", "team", "enterprise")
_INDUSTRIES = ("software", "retail", "finance", "health", "media")
_T0_MS = 1_700_000_000_000


@dataclass(frozen=True)
class Workload:
    """The parameters of one stream. Equal parameters give the same stream, in every process."""

    #: distinct identifiers (user ids and anonymous ids) to make, approximately (blocked
    #: replacements remove a few)
    identifiers: int
    seed: int = 1
    #: share of people who never identify
    anonymous_only: float = 0.7
    max_devices: int = 10
    zipf_s: float = 2.0
    #: share of an identified user's devices on which a second user signs in later
    shared_device: float = 0.03
    #: share of those shared devices where the first user logged out (``reset``) first
    shared_reset: float = 0.5
    #: share of identified users who get an ``identify_company``
    company: float = 0.4
    #: share of ``identify`` (and of ``identify_company``) calls that carry traits
    traits: float = 0.3
    #: share of ``track`` calls that carry properties
    properties: float = 0.5
    #: share of events delivered late
    late: float = 0.01
    #: share of events delivered twice
    duplicates: float = 0.005
    #: share of events with a blocked value in place of an identifier
    blocked: float = 0.001
    #: the longest delay of a late or duplicate delivery, in events
    max_delay: int = 10_000
    #: people whose events are interleaved at any time
    active: int = 2000

    def events(self) -> Iterator[EventTuple]:
        """The stream as delivered: key order, then late and duplicate deliveries."""
        return deliver(self.in_key_order(), self)

    def in_key_order(self) -> Iterator[EventTuple]:
        """Every distinct event once, in ``(timestamp, event_id)`` order."""
        return _key_order(self)


def _zipf_cumulative(n: int, s: float) -> list[float]:
    return list(accumulate(1.0 / k**s for k in range(1, n + 1)))


class _People:
    """Makes one person's events at a time (a *script*, in their own order)."""

    def __init__(self, w: Workload) -> None:
        self.w = w
        self.rng = random.Random(f"content-{w.seed}")
        self.rnd = self.rng.random
        self.made = 0
        self.users = 0
        cum = _zipf_cumulative(w.max_devices, w.zipf_s)
        self.device_cum = cum
        self.device_total = cum[-1]
        self.companies = max(10, w.identifiers // 50)
        self.props_pool: dict[tuple[str, str], dict[str, Any]] = {}

    def anon(self) -> str:
        self.made += 1
        return f"{self.rng.getrandbits(128):032x}"

    def user(self) -> str:
        self.made += 1
        self.users += 1
        return f"user-{self.users:09d}"

    def pick(self, options: tuple[str, ...]) -> str:
        return options[int(self.rnd() * len(options))]

    def below(self, n: int) -> int:
        return int(self.rnd() * n)

    def _props(self) -> dict[str, Any] | None:
        if self.rnd() >= self.w.properties:
            return None
        path = _PATHS[self.below(len(_PATHS))]
        referrer = self.pick(_PAGES)
        # Equal properties share one dict: a 10^7 stream must fit in memory beside the
        # graphs it feeds (the events are the same; only the harness's memory shrinks).
        props = self.props_pool.get((path, referrer))
        if props is None:
            props = self.props_pool[(path, referrer)] = {"path": path, "referrer": referrer}
        return props

    def _traits(self, user: str) -> dict[str, Any] | None:
        if self.rnd() >= self.w.traits:
            return None
        return {
            "plan": self.pick(_PLANS),
            "seats": 1 + self.below(50),
            "email": f"{user}@example.com",
        }

    def _anon_tracks(self, out: list[tuple[Any, ...]], anon: str, n: int) -> None:
        for _ in range(n):
            out.append((TRACK, None, anon, self.pick(_PAGES), self._props()))

    def _signed_in(self, out: list[tuple[Any, ...]], user: str, anon: str, n: int) -> None:
        for _ in range(n):
            out.append((TRACK, user, anon, self.pick(_SIGNED_IN), self._props()))

    def script(self) -> list[tuple[Any, ...]]:
        """One person's events (without timestamps and ids), reversed: popped from the end."""
        w = self.w
        rnd = self.rnd
        below = self.below
        out: list[tuple[Any, ...]] = []
        if rnd() < w.anonymous_only:
            anon = self.anon()
            n = 1
            while n < 8 and rnd() < 0.5:
                n += 1
            self._anon_tracks(out, anon, n)
            out.reverse()
            return out
        user = self.user()
        devices = bisect(self.device_cum, rnd() * self.device_total) + 1
        for _ in range(min(devices, w.max_devices)):
            anon = self.anon()
            self._anon_tracks(out, anon, below(4))
            out.append((IDENTIFY, user, anon, None, self._traits(user)))
            self._signed_in(out, user, anon, below(5))
            if rnd() < w.shared_device:
                other = self.user()
                if rnd() < w.shared_reset:
                    # the first user logs out; the client rotates to a new anonymous id
                    out.append((RESET, None, anon, None, None))
                    fresh = self.anon()
                    out.append((IDENTIFY, other, fresh, None, self._traits(other)))
                    self._signed_in(out, other, fresh, below(3))
                    if rnd() < 0.2:  # a stale tab still sends the retired id
                        out.append((TRACK, other, anon, self.pick(_SIGNED_IN), None))
                else:
                    out.append((IDENTIFY, other, anon, None, self._traits(other)))
                    self._signed_in(out, other, anon, below(3))
        if rnd() < 0.3:
            out.append((TRACK, user, None, self.pick(_SERVER), self._props()))
        if rnd() < w.company:
            c = int(self.companies * rnd() ** 3)
            traits = None
            if rnd() < w.traits:
                traits = {"name": f"Company {c}", "industry": self.pick(_INDUSTRIES)}
            out.append((COMPANY, user, None, f"company-{c:07d}", traits))
        out.reverse()
        return out


def _key_order(w: Workload) -> Iterator[EventTuple]:
    people = _People(w)
    blocked_rng = random.Random(f"blocked-{w.seed}")
    ids = random.Random(f"ids-{w.seed}").getrandbits
    pool: list[list[tuple[Any, ...]]] = []
    while people.made < w.identifiers and len(pool) < w.active:
        pool.append(people.script())
    ts_ms = _T0_MS
    blocked = w.blocked
    rnd = people.rnd
    while pool:
        i = int(rnd() * len(pool))
        script = pool[i]
        op, user, anon, name, data = script.pop()
        if not script:
            if people.made < w.identifiers:
                pool[i] = people.script()
            else:
                pool[i] = pool[-1]
                pool.pop()
        if blocked and blocked_rng.random() < blocked:
            value = blocked_rng.choice(BLOCKED_VALUES)
            if anon is not None:
                anon = value
            else:
                user = value
        ts_ms += 1 + int(rnd() * 10)
        yield (op, user, anon, name, data, ts_ms / 1000, f"{ids(128):032x}")


def deliver(events: Iterable[EventTuple], w: Workload) -> Iterator[EventTuple]:
    """Delay ``w.late`` of the events and deliver ``w.duplicates`` of them twice."""
    if not w.late and not w.duplicates:
        yield from events
        return
    late_rng = random.Random(f"late-{w.seed}")
    dup_rng = random.Random(f"duplicates-{w.seed}")
    log_max = math.log(max(w.max_delay, 1))
    held: list[tuple[int, int, EventTuple]] = []  # (release position, tie-break, event)
    seq = 0
    for i, ev in enumerate(events):
        while held and held[0][0] <= i:
            yield heapq.heappop(held)[2]
        if w.late and late_rng.random() < w.late:
            seq += 1
            heapq.heappush(held, (i + int(math.exp(late_rng.random() * log_max)), seq, ev))
        else:
            yield ev
        if w.duplicates and dup_rng.random() < w.duplicates:
            seq += 1
            heapq.heappush(held, (i + int(math.exp(dup_rng.random() * log_max)), seq, ev))
    while held:
        yield heapq.heappop(held)[2]


# -- feeding a graph ---------------------------------------------------------------------------


def apply_events(graph: Any, events: Iterable[EventTuple]) -> int:
    """Feed event tuples to the per-event API of ``graph``; returns how many were applied."""
    identify = graph.identify
    track = graph.track
    reset = graph.reset
    identify_company = graph.identify_company
    n = 0
    for op, user, anon, name, data, ts, eid in events:
        n += 1
        if op == TRACK:
            track(
                name, anonymous_id=anon, user_id=user, properties=data, timestamp=ts, event_id=eid
            )
        elif op == IDENTIFY:
            identify(user, anon, traits=data, timestamp=ts, event_id=eid)
        elif op == RESET:
            reset(anon, timestamp=ts, event_id=eid)
        else:
            identify_company(
                name, user_id=user, anonymous_id=anon, traits=data, timestamp=ts, event_id=eid
            )
    return n


@functools.cache
def _classes() -> tuple[Any, Any, Any, Any]:
    from identityres import Identify, IdentifyCompany, Reset, Track

    return Identify, Track, Reset, IdentifyCompany


def to_object(ev: EventTuple) -> Any:
    """The event object (``identityres.Track``, ``Identify``, …) for ``ingest()``."""
    identify_cls, track_cls, reset_cls, company_cls = _classes()
    op, user, anon, name, data, ts, eid = ev
    if op == TRACK:
        return track_cls(
            event=name, anonymous_id=anon, user_id=user, properties=data, timestamp=ts, event_id=eid
        )
    if op == IDENTIFY:
        return identify_cls(
            user_id=user, anonymous_id=anon, traits=data, timestamp=ts, event_id=eid
        )
    if op == RESET:
        return reset_cls(anonymous_id=anon, timestamp=ts, event_id=eid)
    return company_cls(
        company_id=name, user_id=user, anonymous_id=anon, traits=data, timestamp=ts, event_id=eid
    )


def to_objects(events: Iterable[EventTuple]) -> Iterator[Any]:
    """Event objects for ``ingest()``, lazily."""
    return map(to_object, events)


def batches(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    """Lists of ``size`` items (the last one shorter)."""
    batch: list[Any] = []
    for item in items:
        batch.append(item)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def iso(ts: float) -> str:
    """``2023-11-14T22:13:20.123Z``: ISO-8601, UTC, milliseconds."""
    dt = datetime.fromtimestamp(ts, tz=timezone.utc)
    return f"{dt:%Y-%m-%dT%H:%M:%S}.{dt.microsecond // 1000:03d}Z"


def to_segment(ev: EventTuple) -> dict[str, Any]:
    """The Segment-spec message dict (``reset`` is identityres' extension message type)."""
    op, user, anon, name, data, ts, eid = ev
    msg: dict[str, Any] = {"type": ("identify", "track", "reset", "group")[op]}
    if op == TRACK:
        msg["event"] = name
    elif op == COMPANY:
        msg["groupId"] = name
    if user is not None:
        msg["userId"] = user
    if anon is not None:
        msg["anonymousId"] = anon
    if data is not None:
        msg["properties" if op == TRACK else "traits"] = data
    msg["timestamp"] = iso(ts)
    msg["messageId"] = eid
    return msg


def write_jsonl(events: Iterable[EventTuple], out: TextIO) -> int:
    """Write one Segment-spec message per line; returns the number of lines."""
    dumps = json.JSONEncoder(separators=(",", ":")).encode
    n = 0
    write = out.write
    for ev in events:
        write(dumps(to_segment(ev)))
        write("\n")
        n += 1
    return n


def describe(events: Iterable[EventTuple]) -> dict[str, Any]:
    """Counts of a stream: events by op, distinct identifiers, links, blocked values, …"""
    ops: Counter[str] = Counter()
    users: set[str] = set()
    anons: set[str] = set()
    blocked = 0
    links = 0
    with_data = 0
    seen: set[str] = set()
    duplicates = 0
    companies: set[str] = set()
    blocked_set = set(BLOCKED_VALUES)
    for op, user, anon, name, data, _ts, eid in events:
        ops[OPS[op]] += 1
        if eid in seen:
            duplicates += 1
            continue
        seen.add(eid)
        valid = 0
        for value, bucket in ((user, users), (anon, anons)):
            if value is None:
                continue
            if value in blocked_set:
                blocked += 1
            else:
                bucket.add(value)
                valid += 1
        links += valid >= 2
        with_data += data is not None
        if op == COMPANY and name is not None:
            companies.add(name)
    return {
        "events": sum(ops.values()),
        "by_op": dict(ops),
        "identifiers": len(users) + len(anons),
        "user_ids": len(users),
        "anonymous_ids": len(anons),
        "links": links,
        "with_traits_or_properties": with_data,
        "blocked_values": blocked,
        "duplicates": duplicates,
        "companies": len(companies),
    }


def count_late(events: Iterable[EventTuple]) -> int:
    """Deliveries older than the newest event delivered before them (duplicates included)."""
    top = (-math.inf, "")
    late = 0
    for ev in events:
        key = (ev[5], ev[6])
        if key < top:
            late += 1
        else:
            top = key
    return late


def _size(text: str) -> int:
    return int(float(text))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--identifiers", type=_size, default=10_000, help="e.g. 1e5")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--late", type=float, default=Workload.late)
    parser.add_argument("--duplicates", type=float, default=Workload.duplicates)
    parser.add_argument("--blocked", type=float, default=Workload.blocked)
    parser.add_argument("--jsonl", metavar="PATH", help="write Segment-spec JSONL ('-': stdout)")
    parser.add_argument("--stats", action="store_true", help="print what the stream holds")
    args = parser.parse_args(argv)
    w = Workload(
        args.identifiers,
        seed=args.seed,
        late=args.late,
        duplicates=args.duplicates,
        blocked=args.blocked,
    )
    if args.jsonl:
        start = time.perf_counter()
        if args.jsonl == "-":
            n = write_jsonl(w.events(), sys.stdout)
        else:
            with open(args.jsonl, "w", encoding="utf-8") as out:
                n = write_jsonl(w.events(), out)
        print(f"wrote {n:,} messages in {time.perf_counter() - start:.1f} s", file=sys.stderr)
    if args.stats or not args.jsonl:
        stats = describe(w.events())
        stats["late_deliveries"] = count_late(w.events())
        print(json.dumps({"workload": asdict(w), **stats}, indent=2))
    return 0


__all__ = [
    "BLOCKED_VALUES",
    "COMPANY",
    "IDENTIFY",
    "OPS",
    "RESET",
    "TRACK",
    "EventTuple",
    "Workload",
    "apply_events",
    "batches",
    "count_late",
    "deliver",
    "describe",
    "iso",
    "to_object",
    "to_objects",
    "to_segment",
    "write_jsonl",
]

if __name__ == "__main__":
    sys.exit(main())
