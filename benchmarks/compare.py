"""Before/after comparison of two checkouts of identityres on the headline figures.

    python benchmarks/compare.py OLD_TREE NEW_TREE [--size 1e5] [--sqlite-size 1e4] [--repeats 5]

Each repeat runs one fresh process per tree, alternating trees (interleaved, so machine noise
hits both alike), on the same workload (``benchmarks/workload.py`` of this checkout). Each
process measures, in CPU seconds: the per-event API over the stream, ``ingest()`` in batches
of 1,000, ``resolve()`` of every identifier, and ``ingest()`` into a fresh SQLite file at the
smaller size. The best of the repeats is reported for each tree, with the spread of the
repeats (worst / best - 1) as the noise figure.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent

_CHILD = r"""
import json, sys, tempfile, time, os
sys.path.insert(0, sys.argv[1])
sys.path.insert(1, sys.argv[2])
import identityres
from workload import Workload, apply_events, batches, to_objects
size, sqlite_size = int(sys.argv[3]), int(sys.argv[4])
events = list(Workload(size).events())
objects = list(to_objects(events))
out = {"identityres": identityres.__file__, "events": len(events)}
t = time.process_time()
graph = identityres.IdentityGraph()
apply_events(graph, events)
out["api_s"] = time.process_time() - t
chunks = list(batches(objects, 1000))
t = time.process_time()
g2 = identityres.IdentityGraph()
for chunk in chunks:
    g2.ingest(chunk)
out["ingest_s"] = time.process_time() - t
ids = [(ev[1], ev[2]) for ev in events]
t = time.process_time()
resolve = graph.resolve
n = 0
for user, anon in ids:
    if user is not None:
        resolve(user_id=user)
        n += 1
    if anon is not None:
        resolve(anonymous_id=anon)
        n += 1
out["resolve_ns"] = (time.process_time() - t) / n * 1e9
small = list(to_objects(Workload(sqlite_size).events()))
with tempfile.TemporaryDirectory() as d:
    t = time.process_time()
    g3 = identityres.IdentityGraph(store="sqlite:///" + os.path.join(d, "ids.db"))
    for chunk in batches(small, 1000):
        g3.ingest(chunk)
    out["sqlite_s"] = time.process_time() - t
    out["sqlite_events"] = len(small)
    g3.close()
print(json.dumps(out))
"""


def run(tree: str, size: int, sqlite_size: int) -> dict[str, float]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    with tempfile.TemporaryDirectory() as cwd:  # import identityres from ``tree`` only
        done = subprocess.run(
            [sys.executable, "-c", _CHILD, tree, str(HERE), str(size), str(sqlite_size)],
            check=True,
            capture_output=True,
            text=True,
            cwd=cwd,
            env=env,
        )
    result: dict[str, float] = json.loads(done.stdout)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("old")
    parser.add_argument("new")
    parser.add_argument("--size", type=float, default=1e5)
    parser.add_argument("--sqlite-size", type=float, default=1e4)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    trees = {"old": args.old, "new": args.new}
    runs: dict[str, list[dict[str, float]]] = {k: [] for k in trees}
    for i in range(args.repeats):
        for name, tree in trees.items():
            result = run(tree, int(args.size), int(args.sqlite_size))
            runs[name].append(result)
            print(f"repeat {i + 1} {name}: {json.dumps(result)}", file=sys.stderr)
    rows = []
    for key, unit in (("api_s", "ev/s"), ("ingest_s", "ev/s"), ("resolve_ns", "ns"),
                      ("sqlite_s", "ev/s")):  # fmt: skip
        line = [key]
        for name in trees:
            values = [r[key] for r in runs[name]]
            best = min(values)
            noise = max(values) / best - 1
            events = runs[name][0]["sqlite_events" if key == "sqlite_s" else "events"]
            shown = f"{best:.0f} ns" if unit == "ns" else f"{events / best:,.0f} ev/s"
            line.append(f"{shown} (spread {noise:.0%})")
        rows.append(line)
    print("| figure | before | after |\n|---|---|---|")
    for line in rows:
        print("| " + " | ".join(line) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
