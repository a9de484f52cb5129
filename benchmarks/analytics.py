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

import workload  # noqa: E402

import identityres as ir  # noqa: E402
from identityres import analytics  # noqa: E402
from identityres.testing import reference_funnel, reference_unique_users  # noqa: E402

STEPS = ["Docs", "Dashboard Viewed", "API Call"]
WEEK = 7 * 86400


def best(fn, repeat):  # type: ignore[no-untyped-def]
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return min(times), out


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
        for batch in workload.batches(workload.to_objects(w.events()), 50_000):
            graph.ingest(batch)
        ingest = time.perf_counter() - t
        out: dict[str, object] = {"events": n, "identifiers": len(graph), "ingest_s": ingest}
        t_f, r = best(lambda: analytics.funnel(graph, path, steps=STEPS, within=WEEK,
                                               engine="duckdb"), args.repeat)
        t_u, u = best(lambda: analytics.unique_users(graph, path, by="day", engine="duckdb"),
                      args.repeat)
        out |= {"duckdb_funnel_s": t_f, "duckdb_users_by_day_s": t_u,
                "funnel_counts": r.counts}  # type: ignore[union-attr]
        if not args.no_reference:
            kept = list(analytics._inputs.load(graph, path))
            t = time.perf_counter()
            want = reference_funnel(graph, kept, steps=STEPS, within=WEEK)
            out["reference_funnel_s"] = time.perf_counter() - t
            t = time.perf_counter()
            users = reference_unique_users(graph, kept, by="day")
            out["reference_users_by_day_s"] = time.perf_counter() - t
            assert want[None]["counts"] == r.counts, (want, r)  # type: ignore[union-attr]
            assert users == u
            out["python_engine_funnel_s"] = best(
                lambda: analytics.funnel(graph, kept, steps=STEPS, within=WEEK,
                                         engine="python"), 1)[0]
        out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
