"""Benchmarks of batch re-resolution (issue #15, docs/batch.md): ``identityres.batch.resolve``
end to end from Parquet and from JSONL, against ``networkx.utils.UnionFind`` over the same
events and against the online ``IdentityGraph.ingest()``, with peak RSS, the fraction of events
in conflicted components and the time of each phase.

Each contender runs in its own subprocess (so each peak RSS is its own), one after the other,
on a stream of ``benchmarks/workload.py`` written to Parquet and JSONL beforehand (not timed)::

    python benchmarks/batch.py --identifiers 1e6             # all contenders
    python benchmarks/batch.py --identifiers 1e7 --skip online --skip networkx
    python benchmarks/batch.py --identifiers 1e6 --dir /tmp/b6 --repeat 3   # best of 3

CPU seconds are reported beside wall seconds: on a shared machine wall time measures the
neighbours too.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

CONTENDERS = ("batch-parquet", "batch-jsonl", "networkx", "online")


def _size(text: str) -> int:
    return int(float(text))


def ensure_inputs(identifiers: int, directory: Path) -> None:
    """Write the inputs into ``directory`` unless its ``events.parquet`` is there already (a
    kept ``--dir`` is reused across runs)."""
    if not (directory / "events.parquet").exists():
        t = time.perf_counter()
        meta = write_inputs(identifiers, directory)
        print(f"inputs: {meta} in {time.perf_counter() - t:.0f} s", file=sys.stderr)


def write_inputs(identifiers: int, directory: Path) -> dict[str, Any]:
    """The workload's stream as Parquet (Segment columns, traits/properties as JSON text)
    and as JSONL."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from workload import Workload, to_segment, write_jsonl

    w = Workload(identifiers)
    cols = [
        "type",
        "event",
        "userId",
        "anonymousId",
        "groupId",
        "traits",
        "properties",
        "timestamp",
        "messageId",
    ]
    dumps = json.JSONEncoder(separators=(",", ":")).encode
    schema = pa.schema([(c, pa.string()) for c in cols])
    # (a million rows at a time: at 10^7 identifiers the whole stream as Python lists would
    # take ~20 GB before the first byte is written)
    chunk = 1 << 20
    events = 0
    with pq.ParquetWriter(directory / "events.parquet", schema) as writer:
        rows: dict[str, list[Any]] = {c: [] for c in cols}

        def flush() -> None:
            writer.write_table(pa.table({c: pa.array(v, pa.string()) for c, v in rows.items()}))
            for v in rows.values():
                v.clear()

        for ev in w.events():
            msg = to_segment(ev)
            for c in cols:
                v = msg.get(c)
                rows[c].append(dumps(v) if isinstance(v, dict) else v)
            events += 1
            if len(rows["type"]) >= chunk:
                flush()
        if rows["type"]:
            flush()
    with open(directory / "events.jsonl", "w", encoding="utf-8") as out:
        write_jsonl(w.events(), out)
    return {"identifiers": identifiers, "events": events}


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_one(contender: str, directory: Path, identifiers: int) -> dict[str, Any]:
    """One contender in this process; returns its figures."""
    cpu0, wall0 = time.process_time(), time.perf_counter()
    out: dict[str, Any] = {"contender": contender}
    if contender.startswith("batch"):
        from identityres import batch

        path = directory / ("events.parquet" if contender == "batch-parquet" else "events.jsonl")
        cpu_phases: dict[str, float] = {}
        rss_phases: dict[str, float] = {}
        last = [time.process_time()]

        def progress(phase: str, _seconds: float) -> None:
            now = time.process_time()
            cpu_phases[phase] = round(now - last[0], 3)
            # (the peak so far as each phase ends: where the memory goes)
            rss_phases[phase] = round(_rss_mb())
            last[0] = now

        result = batch.resolve(path, progress=progress)
        out["phases"] = {k: round(v, 3) for k, v in result.times.items()}
        out["cpu_phases"] = cpu_phases
        out["peak_rss_mb_after"] = rss_phases
        out["events"] = int(result.stat("events") + result.stat("duplicates"))
        out["conflicted_fraction"] = result.stat("conflicted_fraction")
        out["identifiers"] = result.identity_map.num_rows
        out["profiles"] = result.profiles.num_rows
    elif contender == "networkx":
        import pyarrow.parquet as pq
        from networkx.utils import UnionFind

        table = pq.read_table(directory / "events.parquet", columns=["userId", "anonymousId"])
        users = table.column("userId").to_pylist()
        anons = table.column("anonymousId").to_pylist()
        del table
        read = time.process_time() - cpu0
        uf = UnionFind()
        t = time.process_time()
        for u, a in zip(users, anons, strict=True):
            if u is not None and a is not None:
                uf.union(("user_id", u), ("anonymous_id", a))
            elif u is not None:
                uf[("user_id", u)]
            elif a is not None:
                uf[("anonymous_id", a)]
        out["phases"] = {"read": round(read, 3), "union": round(time.process_time() - t, 3)}
        out["events"] = len(users)
    elif contender == "online":
        from workload import Workload, batches, to_objects

        import identityres as ir

        graph = ir.IdentityGraph()
        spent = 0.0
        n = 0
        for chunk in batches(to_objects(Workload(identifiers).events()), 10_000):
            t = time.process_time()
            graph.ingest(chunk)
            spent += time.process_time() - t
            n += len(chunk)
        out["phases"] = {"ingest": round(spent, 3)}
        out["events"] = n
        out["cpu_ingest_only"] = spent
    else:
        raise SystemExit(f"unknown contender {contender!r}")
    out["cpu"] = time.process_time() - cpu0
    out["wall"] = time.perf_counter() - wall0
    out["peak_rss_mb"] = _rss_mb()
    out["load"] = os.getloadavg()
    return out


def _resident_mb(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def _run_capped(cmd: list[str], max_rss_gb: float | None) -> tuple[int, str, str]:
    """Run one contender; with ``max_rss_gb``, kill it when its resident memory passes that
    (polled ten times a second), rather than let the kernel's OOM killer pick a process."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        child = subprocess.Popen(cmd, stdout=out, stderr=err, text=True, env=os.environ.copy())
        seen = 0.0
        while child.poll() is None:
            seen = max(seen, _resident_mb(child.pid))
            if max_rss_gb is not None and seen > max_rss_gb * 1024:
                child.kill()
                child.wait()
                err.write(f"\nstopped: resident memory passed {max_rss_gb} GB ({seen:.0f} MB)\n")
                break
            time.sleep(0.1)
        out.seek(0)
        err.seek(0)
        return child.returncode, out.read(), err.read()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--identifiers", type=_size, default=1_000_000)
    parser.add_argument("--skip", action="append", default=[], choices=CONTENDERS)
    parser.add_argument("--dir", help="where the inputs are (or are written); default a temp dir")
    parser.add_argument("--json", metavar="PATH", help="also write the figures here")
    parser.add_argument(
        "--repeat", type=int, default=1, help="runs per contender, interleaved; best CPU kept"
    )
    parser.add_argument(
        "--max-rss-gb",
        type=float,
        help="stop a contender whose resident memory passes this (a shared machine has no swap)",
    )
    parser.add_argument("--one", choices=CONTENDERS, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one:
        print(json.dumps(run_one(args.one, Path(args.dir), args.identifiers)))
        return 0
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        directory = Path(args.dir or tmp)
        ensure_inputs(args.identifiers, directory)
        runs: dict[str, list[dict[str, Any]]] = {}
        for _, contender in [
            (r, c) for r in range(args.repeat) for c in CONTENDERS if c not in args.skip
        ]:
            cmd = [
                sys.executable,
                __file__,
                "--one",
                contender,
                "--dir",
                str(directory),
                "--identifiers",
                str(args.identifiers),
            ]
            code, stdout, stderr = _run_capped(cmd, args.max_rss_gb)
            if code:
                print(stderr, file=sys.stderr)
                runs.setdefault(contender, []).append(
                    {"contender": contender, "error": stderr[-2000:], "cpu": float("inf")}
                )
                continue
            figures = json.loads(stdout.strip().splitlines()[-1])
            print(json.dumps(figures), file=sys.stderr)
            runs.setdefault(contender, []).append(figures)
        results = []
        for tried in runs.values():
            best = dict(min(tried, key=lambda f: f["cpu"]))
            best["runs"] = len(tried)
            best["cpu_all"] = [f["cpu"] for f in tried]
            best["wall_all"] = [f.get("wall") for f in tried]
            results.append(best)
    report = {"identifiers": args.identifiers, "load": os.getloadavg(), "results": results}
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
