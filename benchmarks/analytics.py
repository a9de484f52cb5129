"""Benchmark of identityres.analytics (issue #14): a 3-step funnel and daily unique users over
the workload stream (benchmarks/workload.py), DuckDB engine against the pure-Python brute-force
reference (identityres.testing).

    python benchmarks/analytics.py --identifiers 3.8e5 --dir /tmp/a6 --repeat 2
    python benchmarks/analytics.py --identifiers 3.8e6 --dir /tmp/a7 --sample 10

``--dir`` keeps the inputs between runs: the stream as Segment JSONL and as Parquet (the same
rows, every column a string, properties JSON text), and ``identity_map.parquet``, written by
``analytics.write_identity_map`` from a graph built with the per-event API in its own
subprocess (its time and peak RSS are reported apart). Every query then runs in a fresh
subprocess that stitches with that identity map (``funnel(DIR, EVENTS, ...)``), so its peak
RSS is the query's own: DuckDB, the Arrow identity map, the interpreter, not the graph.
Repeats are interleaved (JSONL, Parquet, JSONL, ...); CPU is the subprocess's
``time.process_time()`` (DuckDB's threads included), wall its ``perf_counter``.

The reference runs on the events of a sample of people, one in ``--sample`` (by a hash of
the profile id; ``--sample 1``: everyone), in its own subprocess; the DuckDB engine runs on
that same sample file and the script asserts equal answers (counts, medians and p90s of the
funnel; the daily counts). With ``--sample`` > 1 the full reference time is an estimate: the
sample's times multiplied by ``--sample`` (its work is per person).

``--shards K`` runs the reference over *every* person instead, in K shards of people (by the
same CRC), one subprocess each, so that no process holds all the events (at 10^7 events the
reference would need about 10 GB): its times are the sums over the shards, its peak RSS the
largest shard's. Shards are disjoint sets of people, so the funnel's counts and the daily
counts add up: the script asserts their sums equal the DuckDB engine's answer on the whole
file, and each shard's full answer (medians and p90s included) the DuckDB engine's on that
shard's file.

    python benchmarks/analytics.py --identifiers 3.8e6 --dir /tmp/a7 --shards 4
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
import zlib
from pathlib import Path
from typing import Any

sys.path.insert(0, os.path.dirname(__file__))

STEPS = ["Docs", "Dashboard Viewed", "API Call"]
WEEK = 7 * 86400


def say(key: str, value: object) -> None:
    print(f"{key}: {value}", file=sys.stderr, flush=True)


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def prepare(identifiers: int, d: Path) -> dict[str, Any]:
    """The stream's JSONL and Parquet files, and the graph's identity map."""
    import workload

    out: dict[str, Any] = {}
    w = workload.Workload(identifiers=identifiers)
    jsonl = d / "events.jsonl"
    if not jsonl.exists():
        with open(str(jsonl) + ".tmp", "w", encoding="utf-8") as f:
            workload.write_jsonl(w.events(), f)
        os.replace(str(jsonl) + ".tmp", jsonl)
    parquet = d / "events.parquet"
    if not parquet.exists():
        import duckdb

        con = duckdb.connect(config={"memory_limit": "2GB"})
        cols = ["type", "event", "userId", "anonymousId", "groupId", "timestamp", "messageId"]
        types = ", ".join(f"{c}: 'VARCHAR'" for c in cols)
        con.execute(
            f"COPY (SELECT * FROM read_json(?, format='newline_delimited', columns={{{types}, "
            "traits: 'VARCHAR', properties: 'VARCHAR'})) TO '"
            + str(parquet)
            + ".tmp' (FORMAT parquet)",
            [str(jsonl)],
        )
        con.close()
        os.replace(str(parquet) + ".tmp", parquet)
    built = d / "build.json"  # the graph's figures, kept with the identity map
    if not (d / "identity_map.parquet").exists():
        built.write_text(json.dumps(child(["--build", str(d), "--identifiers", str(identifiers)])))
    if built.exists():
        out["graph"] = json.loads(built.read_text())
    with open(jsonl, "rb") as f:
        out["events"] = sum(1 for _ in f)
    return out


def build(identifiers: int, d: Path) -> dict[str, Any]:
    import workload

    import identityres as ir
    from identityres import analytics

    cpu, wall = time.process_time(), time.perf_counter()
    graph = ir.IdentityGraph()
    workload.apply_events(graph, workload.Workload(identifiers=identifiers).events())
    out = {"ingest_cpu_s": time.process_time() - cpu, "ingest_wall_s": time.perf_counter() - wall}
    out["identifiers"] = len(graph)
    out["graph_rss_mb"] = rss_mb()
    cpu, wall = time.process_time(), time.perf_counter()
    analytics.write_identity_map(graph, d)
    out["write_map_cpu_s"] = time.process_time() - cpu
    out["write_map_wall_s"] = time.perf_counter() - wall
    out["peak_rss_mb"] = rss_mb()
    return out


def query(what: str, d: Path, events: str) -> dict[str, Any]:
    """One query in this process: ``funnel`` or ``users``, DuckDB or the reference."""
    from identityres import analytics

    cpu, wall = time.process_time(), time.perf_counter()
    if what == "funnel":
        r = analytics.funnel(str(d), events, steps=STEPS, within=WEEK, engine="duckdb")
        answer: Any = [r.counts, r.median_seconds, r.p90_seconds]  # type: ignore[union-attr]
    elif what == "users":
        answer = analytics.unique_users(str(d), events, by="day", engine="duckdb")
    else:
        return reference(d, events)
    return {
        "cpu_s": time.process_time() - cpu,
        "wall_s": time.perf_counter() - wall,
        "peak_rss_mb": rss_mb(),
        "answer": answer,
    }


class _Profile:
    def __init__(self, pid: str) -> None:
        self.id = pid


class _Graph:
    """What the reference asks of a graph (``rules``, ``profile(identifier=)``), answered from
    the identity map the DuckDB engine stitches with: the graph itself does not fit beside
    10^7 events in Python."""

    def __init__(self, idmap: dict[tuple[str, str], str]) -> None:
        import identityres as ir

        self.rules = ir.Rules()
        self._map = idmap

    def profile(self, *, identifier: tuple[str, str]) -> _Profile | None:
        pid = self._map.get(identifier)
        return None if pid is None else _Profile(pid)


def _idmap(d: Path) -> dict[tuple[str, str], str]:
    import pyarrow.parquet as pq

    t = pq.read_table(d / "identity_map.parquet")
    cols = [t.column(c).to_pylist() for c in ("kind", "value", "profile_id")]
    return {(k, v): p for k, v, p in zip(*cols, strict=True)}


def reference(d: Path, events: str) -> dict[str, Any]:
    import identityres as ir
    from identityres import KeptEvent
    from identityres.analytics._inputs import load
    from identityres.testing import reference_funnel, reference_unique_users

    out: dict[str, Any] = {}
    cpu, wall = time.process_time(), time.perf_counter()
    graph = _Graph(_idmap(d))
    # the events as the engines read them (validated, first of each id); the properties
    # are dropped to fit in memory: neither query reads them
    kept = [
        KeptEvent(e.event_id, e.ts, e.type, e.name, e.identifiers, None, None)
        for e in load(ir.IdentityGraph(), events)
    ]
    out["load_cpu_s"] = time.process_time() - cpu
    out["load_wall_s"] = time.perf_counter() - wall
    cpu, wall = time.process_time(), time.perf_counter()
    f = reference_funnel(graph, kept, steps=STEPS, within=WEEK)[None]
    out["funnel_cpu_s"] = time.process_time() - cpu
    out["funnel_wall_s"] = time.perf_counter() - wall
    cpu, wall = time.process_time(), time.perf_counter()
    users = reference_unique_users(graph, kept, by="day")
    out["users_cpu_s"] = time.process_time() - cpu
    out["users_wall_s"] = time.perf_counter() - wall
    out["answer"] = {
        "funnel": [f["counts"], f["median_seconds"], f["p90_seconds"]],
        "users": dict(sorted(users.items())),
    }
    out["peak_rss_mb"] = rss_mb()
    return out


def person(idmap: dict[tuple[str, str], str], line: str) -> str | None:
    """The profile id of a workload message: its messages carry a user id and/or an
    anonymous id (nothing else, no whitespace), and the event is the person's of the first
    the graph holds."""
    msg = json.loads(line)
    return idmap.get(("user_id", msg.get("userId"))) or idmap.get(
        ("anonymous_id", msg.get("anonymousId"))
    )


def sample(d: Path, every: int) -> str:
    """The events of one person in ``every`` (by a CRC of the profile id), as JSONL."""
    if every == 1:
        return str(d / "events.jsonl")
    path = d / f"sample-{every}.jsonl"
    if path.exists():
        return str(path)
    idmap = _idmap(d)
    with (
        open(d / "events.jsonl", encoding="utf-8") as src,
        open(str(path) + ".tmp", "w", encoding="utf-8") as dst,
    ):
        for line in src:
            pid = person(idmap, line)
            if pid is not None and zlib.crc32(pid.encode()) % every == 0:
                dst.write(line)
    os.replace(str(path) + ".tmp", path)
    return str(path)


def shards(d: Path, k: int) -> list[str]:
    """The events of each of ``k`` disjoint shards of people (by a CRC of the profile id,
    as :func:`sample`), as JSONL files written in one pass."""
    paths = [d / f"shard-{k}-{i}.jsonl" for i in range(k)]
    if all(p.exists() for p in paths):
        return [str(p) for p in paths]
    idmap = _idmap(d)
    outs = [open(str(p) + ".tmp", "w", encoding="utf-8") for p in paths]  # noqa: SIM115
    try:
        with open(d / "events.jsonl", encoding="utf-8") as src:
            for line in src:
                pid = person(idmap, line)
                if pid is not None:
                    outs[zlib.crc32(pid.encode()) % k].write(line)
    finally:
        for f in outs:
            f.close()
    for p in paths:
        os.replace(str(p) + ".tmp", p)
    return [str(p) for p in paths]


def cached_reference(d: Path, cached: Path, events: str) -> dict[str, Any]:
    """The reference's run on ``events``, kept in ``cached`` (it takes long; its code does
    not change)."""
    if cached.exists():
        return json.loads(cached.read_text())  # type: ignore[no-any-return]
    ref = {"load_average_start": loadavg()}
    ref.update(child(["--query", "reference", str(d), events]))
    ref["load_average_end"] = loadavg()
    cached.write_text(json.dumps(ref))
    return ref


def sharded_reference(d: Path, k: int, out: dict[str, Any]) -> dict[str, Any]:
    """The reference over every person in ``k`` shards; checked against the DuckDB engine's
    answers (see the module's docstring)."""
    runs = []
    for i, events in enumerate(shards(d, k)):
        ref = cached_reference(d, d / f"reference-shard-{k}-{i}.json", events)
        got = {
            "funnel": child(["--query", "funnel", str(d), events])["answer"],
            "users": child(["--query", "users", str(d), events])["answer"],
        }
        assert json.loads(json.dumps(ref["answer"])) == got, (i, ref["answer"], got)
        say(f"reference shard {i}", {x: v for x, v in ref.items() if x != "answer"})
        runs.append(ref)
    counts = [sum(r["answer"]["funnel"][0][j] for r in runs) for j in range(len(STEPS))]
    users: dict[str, int] = {}
    for r in runs:
        for day, n in r["answer"]["users"].items():
            users[day] = users.get(day, 0) + n
    for fmt in ("jsonl", "parquet"):
        if f"duckdb_funnel_{fmt}_answer" in out:
            assert out[f"duckdb_funnel_{fmt}_answer"][0] == counts, (fmt, counts)
            assert out[f"duckdb_users_{fmt}_answer"] == dict(sorted(users.items())), fmt
    total: dict[str, Any] = {"shards": k, "funnel_counts": counts, "users": users}
    for key in ("load", "funnel", "users"):
        for unit in ("cpu_s", "wall_s"):
            total[f"{key}_{unit}"] = sum(r[f"{key}_{unit}"] for r in runs)
    total["peak_rss_mb"] = max(r["peak_rss_mb"] for r in runs)
    total["runs"] = [{x: v for x, v in r.items() if x != "answer"} for r in runs]
    return total


def child(args: list[str]) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, __file__, *args], capture_output=True, text=True, check=False
    )
    if proc.returncode:
        raise SystemExit(f"{args}: {proc.stderr}")
    return json.loads(proc.stdout)  # type: ignore[no-any-return]


def loadavg() -> str:
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--identifiers", type=float, default=1e5)
    parser.add_argument("--dir", required=False)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--sample", type=int, default=1)
    parser.add_argument("--shards", type=int, default=0, help="the reference in K shards")
    parser.add_argument("--no-reference", action="store_true")
    parser.add_argument("--only-reference", action="store_true", help="prepare, reference")
    parser.add_argument("--build", metavar="DIR")
    parser.add_argument("--query", nargs=3, metavar=("WHAT", "DIR", "EVENTS"))
    args = parser.parse_args()
    if args.build:
        print(json.dumps(build(int(args.identifiers), Path(args.build))))
        return
    if args.query:
        what, d, events = args.query
        print(json.dumps(query(what, Path(d), events)))
        return
    d = Path(args.dir)
    d.mkdir(parents=True, exist_ok=True)
    out: dict[str, Any] = {"load_average_start": loadavg()}
    out.update(prepare(int(args.identifiers), d))
    say("prepared", out)
    runs: dict[str, list[dict[str, Any]]] = {}
    for _ in range(0 if args.only_reference else args.repeat):
        for what in ("funnel", "users"):
            for fmt in ("jsonl", "parquet"):
                r = child(["--query", what, str(d), str(d / f"events.{fmt}")])
                r["load_average"] = loadavg()
                runs.setdefault(f"duckdb_{what}_{fmt}", []).append(r)
                say(f"duckdb_{what}_{fmt}", {k: v for k, v in r.items() if k != "answer"})
    for name, rs in runs.items():
        answers = {json.dumps(r.pop("answer")) for r in rs}
        assert len(answers) == 1, (name, answers)  # JSONL and Parquet, every repeat
        out[name] = {
            "best_cpu_s": min(r["cpu_s"] for r in rs),
            "best_wall_s": min(r["wall_s"] for r in rs),
            "peak_rss_mb": max(r["peak_rss_mb"] for r in rs),
            "runs": rs,
        }
        out[name + "_answer"] = json.loads(answers.pop())
    if args.shards and not args.no_reference:
        out["reference_sharded"] = sharded_reference(d, args.shards, out)
    elif not args.no_reference:
        events = sample(d, args.sample)
        ref = cached_reference(d, d / f"reference-{args.sample}.json", events)
        want = ref.pop("answer")
        if args.only_reference:
            got = want
        elif args.sample == 1:
            got = {"funnel": out["duckdb_funnel_jsonl_answer"]}
            got["users"] = out["duckdb_users_jsonl_answer"]
        else:
            got = {
                "funnel": child(["--query", "funnel", str(d), events])["answer"],
                "users": child(["--query", "users", str(d), events])["answer"],
            }
        assert json.loads(json.dumps(want)) == got, (want, got)
        out["reference"] = ref
        out["reference_sample"] = args.sample
        out["reference_answer"] = want
    out["load_average_end"] = loadavg()
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
