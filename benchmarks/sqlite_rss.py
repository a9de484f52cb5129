"""Peak memory of a large ingest into the SQLite store.

Generates a seeded stream of Segment-style messages over ``--identifiers`` identifiers (users
with 1-3 anonymous ids each: anonymous page views, an ``identify`` per device with a
``messageId`` and increasing timestamps, some signed-in ``track`` calls), ingests it in batches
of ``--batch`` events through ``IdentityGraph(store="sqlite:///...")`` and prints the peak
resident set size (``resource.getrusage(...).ru_maxrss``) and the throughput.

The stream is generated lazily and the store keeps the graph on disk, so peak RSS should not
grow with the number of identifiers::

    python benchmarks/sqlite_rss.py                        # 2,000,000 identifiers (minutes)
    python benchmarks/sqlite_rss.py --identifiers 50000    # a quick run

``stream()`` is also used by ``sqlite_throughput.py``; ``batches()`` is the workload's.
"""

from __future__ import annotations

import argparse
import os
import random
import resource
import sys
import tempfile
import time
from collections.abc import Iterator
from typing import Any

from workload import batches  # this directory is on sys.path when run as a script

_PAGES = ("Home", "Pricing", "Docs", "Signup", "Checkout")
_PLANS = ("free", "pro", "team", "enterprise")


def _user_script(rng: random.Random, user: str, anons: list[str]) -> list[dict[str, Any]]:
    """One user's messages in their own order (timestamps and message ids come later)."""
    out: list[dict[str, Any]] = []
    for anon in anons:
        for _ in range(rng.choice((0, 0, 1, 2))):
            out.append({"type": "track", "event": rng.choice(_PAGES), "anonymousId": anon})
        identify: dict[str, Any] = {"type": "identify", "userId": user, "anonymousId": anon}
        if rng.random() < 0.3:
            identify["traits"] = {"plan": rng.choice(_PLANS), "seats": rng.randint(1, 50)}
        out.append(identify)
        if rng.random() < 0.5:
            out.append({"type": "track", "event": rng.choice(_PAGES), "userId": user})
    out.reverse()  # popped from the end
    return out


def stream(identifiers: int, *, seed: int = 1, active: int = 2000) -> Iterator[dict[str, Any]]:
    """A reproducible message stream carrying about ``identifiers`` distinct identifiers.

    ``active`` users are in flight at a time, their messages interleaved, so a user's
    messages fall into different batches (later batches load what earlier ones stored).
    """
    rng = random.Random(seed)
    made = 0
    users = 0
    pool: list[list[dict[str, Any]]] = []
    ts = 1_700_000_000.0
    n = 0

    def new_user() -> list[dict[str, Any]]:
        nonlocal made, users
        users += 1
        anons = [f"{rng.getrandbits(128):032x}" for _ in range(rng.randint(1, 3))]
        made += 1 + len(anons)
        return _user_script(rng, f"user-{users:09d}", anons)

    while made < identifiers and len(pool) < active:
        pool.append(new_user())
    while pool:
        i = rng.randrange(len(pool))
        script = pool[i]
        message = script.pop()
        if not script:
            if made < identifiers:
                pool[i] = new_user()
            else:
                pool[i] = pool[-1]
                pool.pop()
        ts += rng.random() * 0.01
        n += 1
        message["messageId"] = f"msg-{n:010d}"
        message["timestamp"] = round(ts, 3)
        yield message


def peak_rss_mb() -> float:
    """Peak RSS of this process so far, in MB (Linux reports KiB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--identifiers", type=int, default=2_000_000)
    parser.add_argument("--batch", type=int, default=5000, help="events per ingest call")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--db", help="database file (default: a new file in a temporary dir)")
    parser.add_argument("--every", type=int, default=50, help="progress line every N batches")
    args = parser.parse_args(argv)

    from identityres import IdentityGraph

    tmp = None
    path = args.db
    if path is None:
        tmp = tempfile.TemporaryDirectory(prefix="identityres-rss-")
        path = os.path.join(tmp.name, "ids.db")
    events = 0
    start = time.perf_counter()
    print(f"before ingest: peak RSS {peak_rss_mb():.1f} MB", flush=True)
    with IdentityGraph(store=f"sqlite:///{os.path.abspath(path)}") as graph:
        for n, batch in enumerate(batches(stream(args.identifiers, seed=args.seed), args.batch)):
            graph.ingest(batch)
            events += len(batch)
            if args.every and (n + 1) % args.every == 0:
                elapsed = time.perf_counter() - start
                print(
                    f"  {events:>10,} events  {elapsed:8.1f} s  {events / elapsed:9,.0f} events/s"
                    f"  peak RSS {peak_rss_mb():7.1f} MB",
                    flush=True,
                )
        elapsed = time.perf_counter() - start
        counts = graph.store.counts()
    size = os.path.getsize(path)
    print(
        f"identifiers: {counts['identifiers']:,}  profiles: {counts['profiles']:,}  "
        f"events: {events:,}  batches of {args.batch:,}"
    )
    print(
        f"time: {elapsed:.1f} s  throughput: {events / elapsed:,.0f} events/s, "
        f"{counts['identifiers'] / elapsed:,.0f} identifiers/s"
    )
    print(f"database: {size / 1e6:,.0f} MB")
    print(f"peak RSS: {peak_rss_mb():.1f} MB")
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
