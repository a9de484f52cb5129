"""Batched ingest into the SQLite store against the in-memory store, on the same stream.

The stream is ``sqlite_rss.stream`` (seeded; users with 1-3 anonymous ids, identify events with
message ids and increasing timestamps, some tracks), cut into batches of ``--batch`` events and
ingested with ``IdentityGraph.ingest``, once into the default in-memory store and once into a
new SQLite file, alternately, ``--repeats`` times each. The best rate of each is reported, and
their ratio::

    python benchmarks/sqlite_throughput.py                         # 200,000 identifiers
    python benchmarks/sqlite_throughput.py --identifiers 20000 --repeats 1
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from sqlite_rss import stream
from workload import batches


def _run(graph: Any, chunks: list[list[dict[str, Any]]]) -> float:
    start = time.perf_counter()
    for chunk in chunks:
        graph.ingest(chunk)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--identifiers", type=int, default=200_000)
    parser.add_argument("--batch", type=int, default=5000, help="events per ingest call")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--dir", help="where the SQLite files go (default: the temp dir)")
    parser.add_argument("--profile", action="store_true", help="cProfile one SQLite run")
    args = parser.parse_args(argv)

    from identityres import IdentityGraph

    chunks = list(batches(stream(args.identifiers, seed=args.seed), args.batch))
    events = sum(map(len, chunks))
    print(f"{events:,} events over {args.identifiers:,} identifiers, batches of {args.batch:,}")
    best = {"memory": float("inf"), "sqlite": float("inf")}
    with tempfile.TemporaryDirectory(prefix="identityres-bench-", dir=args.dir) as tmp:
        if args.profile:
            import cProfile
            import pstats

            with IdentityGraph(store=f"sqlite:///{tmp}/profile.db") as graph:
                cProfile.runctx("_run(graph, chunks)", globals(), locals(), f"{tmp}/prof")
            pstats.Stats(f"{tmp}/prof").sort_stats("tottime").print_stats(30)
            return
        for repeat in range(args.repeats):
            memory = _run(IdentityGraph(), chunks)
            path = os.path.join(tmp, f"run{repeat}.db")
            with IdentityGraph(store=f"sqlite:///{path}") as graph:
                sqlite = _run(graph, chunks)
            best["memory"] = min(best["memory"], memory)
            best["sqlite"] = min(best["sqlite"], sqlite)
            print(
                f"  repeat {repeat + 1}: memory {events / memory:9,.0f} events/s   "
                f"sqlite {events / sqlite:9,.0f} events/s   ratio {memory / sqlite:.2f}",
                flush=True,
            )
    memory_rate = events / best["memory"]
    sqlite_rate = events / best["sqlite"]
    print(f"memory: {memory_rate:,.0f} events/s (best of {args.repeats})")
    print(f"sqlite: {sqlite_rate:,.0f} events/s (best of {args.repeats})")
    print(f"ratio sqlite/memory: {sqlite_rate / memory_rate:.2f}")


if __name__ == "__main__":
    main()
