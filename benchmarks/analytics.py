"""Benchmark of identityres.analytics (issue #14): a 3-step funnel and daily unique users
over the workload stream (benchmarks/workload.py), DuckDB engine on the stream's JSONL file
against the pure-Python brute-force reference (identityres.testing), best of ``--repeat``.

    python benchmarks/analytics.py --identifiers 1e5 --repeat 3
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(__file__))

import workload

import identityres as ir
from identityres import analytics
from identityres.testing import reference_funnel, reference_unique_users

STEPS = ["Docs", "Dashboard Viewed", "API Call"]
WEEK = 7 * 86400


def say(out: dict[str, object], key: str, value: object) -> None:
    out[key] = value
    print(f"{key}: {value}", file=sys.stderr, flush=True)


def best(fn, repeat):  # type: ignore[no-untyped-def]
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return min(times), out


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--identifiers", type=float, default=1e5)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--no-reference", action="store_true")
    args = parser.parse_args()
    w = workload.Workload(identifiers=int(args.identifiers))
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "events.jsonl")
        with open(path, "w") as f:
            n = workload.write_jsonl(w.events(), f)
        graph = ir.IdentityGraph()
        t = time.perf_counter()
        workload.apply_events(graph, w.events())
        ingest = time.perf_counter() - t
        out: dict[str, object] = {}
        say(out, "events", n)
        say(out, "identifiers", len(graph))
        say(out, "ingest_s", ingest)
        t_f, r = best(lambda: analytics.funnel(graph, path, steps=STEPS, within=WEEK,
                                               engine="duckdb"), args.repeat)
        say(out, "duckdb_funnel_s", t_f)
        say(out, "funnel_counts", r.counts)  # type: ignore[union-attr]
        t_u, u = best(lambda: analytics.unique_users(graph, path, by="day", engine="duckdb"),
                      args.repeat)
        say(out, "duckdb_users_by_day_s", t_u)
        say(out, "rss_before_reference_mb", rss_mb())
        if not args.no_reference:
            t = time.perf_counter()
            kept = list(analytics._inputs.load(graph, path))
            say(out, "load_events_in_python_s", time.perf_counter() - t)
            t = time.perf_counter()
            want = reference_funnel(graph, kept, steps=STEPS, within=WEEK)
            say(out, "reference_funnel_s", time.perf_counter() - t)
            assert want[None]["counts"] == r.counts, (want, r)  # type: ignore[union-attr]
            t = time.perf_counter()
            users = reference_unique_users(graph, kept, by="day")
            say(out, "reference_users_by_day_s", time.perf_counter() - t)
            assert users == u
            say(out, "python_engine_funnel_s", best(
                lambda: analytics.funnel(graph, kept, steps=STEPS, within=WEEK,
                                         engine="python"), 1)[0])
        say(out, "peak_rss_mb", rss_mb())
        print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
