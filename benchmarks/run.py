"""The identityres benchmark suite (issue #5): the library against union-find baselines, side by
side in one run, at growing graph sizes.

::

    python benchmarks/run.py --quick            # 10^4 and 10^5 identifiers, under two minutes
    python benchmarks/run.py                    # 10^4, 10^5, 10^6 (writes docs/benchmarks.md)
    python benchmarks/run.py --max-size 1e7 --side-max 1e6  # ... and 10^7 (an hour, ~20 GB)
    python benchmarks/run.py --smoke --out DIR  # 2,000 identifiers, one repeat, no plots
    python benchmarks/run.py --profile-only     # cProfile of the per-event API at 10^5

What is measured, at each size, on one seeded stream (``benchmarks/workload.py``):

* **ingest throughput** (events per second) of the per-event API (``identify`` / ``track`` /
  ``reset`` / ``identify_company`` calls), of ``ingest()`` with lists of event objects
  (``--batch`` events per call), and of two baselines on the very same stream, in the same
  process: ``networkx.utils.UnionFind`` (``union`` of the two identifiers of every event that
  carries two, ``uf[x]`` for the others) and a bare dict union-find with path halving, inlined
  (the CPython floor). The contenders run interleaved, in a rotating order, each on a fresh
  structure, and each figure is the best of the repeats. In-process figures use CPU time
  (``time.process_time``), which time-slicing on a shared machine disturbs less than wall time;
  both are kept in ``results.json``;
* **late events**: the per-event API on the delivered stream (1% late) against the same events
  sorted by timestamp;
* **lookups**: ``resolve(user_id=)`` / ``resolve(anonymous_id=)`` against a plain dict lookup
  loop over a dict holding each identifier's canonical id;
* **memory per identifier** (``tracemalloc``, in-memory store, its own pass with the stream made
  lazily): what the graph retains after ingesting, divided by its identifiers;
* **SQLite** (when ``identityres/storage/sqlite.py`` exists): ``ingest()`` into
  ``sqlite:///…`` against ``ingest()`` into the in-memory store, each in its own subprocess
  (wall time, peak RSS from ``VmHWM``), alternating;
* **the CLI** end to end: ``python -m identityres resolve EVENTS.jsonl`` on the stream written
  as Segment JSONL (wall time of the subprocess, peak RSS).

The output is a markdown report (the targets table, a table per size, the workload, the method,
the machine, the top allocation sites and a cProfile of the per-event API) and PNG plots:
``docs/benchmarks.md`` and ``docs/benchmarks/*.png`` for a full run; ``--quick`` and ``--smoke``
write to ``benchmarks/results/`` unless ``--out`` says otherwise, so that ``nox -s bench`` does
not overwrite the published numbers. ``results.json`` beside the report holds every raw time.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import gc
import io
import json
import linecache
import math
import os
import platform
import pstats
import random
import re
import resource
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime, timezone
from importlib import metadata
from operator import itemgetter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.floors import CallFloor, DedupFloor, ResolveFloor  # noqa: E402
from benchmarks.workload import (  # noqa: E402
    Workload,
    apply_events,
    batches,
    count_late,
    describe,
    to_objects,
    write_jsonl,
)

#: (key, figure, target as written in the issue, comparison, threshold)
TARGETS: tuple[tuple[str, str, str, str, float], ...] = (
    ("api_vs_nx", "per-event API ingest vs networkx.utils.UnionFind", ">= 1.5x faster", ">=", 1.5),
    ("api_vs_dict", "per-event API ingest vs bare dict union-find", ">= 0.4x", ">=", 0.4),
    ("ingest_vs_dict", "ingest() of a list vs bare dict union-find", ">= 0.6x", ">=", 0.6),
    ("resolve_vs_dict", "resolve() vs dict lookup loop", ">= 0.3x", ">=", 0.3),
    (
        "bytes_per_id",
        "memory per identifier at 10^6 identifiers (in-memory store)",
        "<= 400 bytes",
        "<=",
        400.0,
    ),
    ("growth", "throughput at 10^7 identifiers vs at 10^5", ">= 0.7x", ">=", 0.7),
    (
        "late_ratio",
        "stream with 1% late events vs same stream in order",
        "<= 1.3x the time",
        "<=",
        1.3,
    ),
    ("sqlite_vs_memory", "SQLite ingest vs in-memory ingest", ">= 0.25x", ">=", 0.25),
)
FIGURES = [t[1] for t in TARGETS]

CONTENDERS = ("api", "api_in_order", "ingest", "networkx", "dict")
LABELS = {
    "api": "per-event API",
    "api_in_order": "per-event API, in order",
    "ingest": "ingest() of lists",
    "networkx": "networkx UnionFind",
    "dict": "dict union-find",
    "floor_call": "floor: calls only",
    "floor_dedup": "floor: validate + dedup",
    "sqlite": "SQLite ingest()",
    "memory_store": "in-memory ingest() (subprocess)",
}
PHASES = ("throughput", "lookups", "memory", "sqlite", "cli", "profile")


def _size(text: str) -> int:
    value = float(text)
    if not math.isfinite(value) or value < 100:
        raise argparse.ArgumentTypeError(f"{text!r}: give a size of at least 100, e.g. 1e5")
    return int(value)


def _pow10(n: int) -> str:
    e = math.log10(n) if n > 0 else 0
    if e == int(e):
        return f"10^{int(e)}"
    return f"{n:,}"


# -- timing ------------------------------------------------------------------------------------


class Timed:
    """Wall and CPU seconds of one run."""

    __slots__ = ("cpu", "result", "wall")

    def __init__(self, wall: float, cpu: float, result: Any = None) -> None:
        self.wall = wall
        self.cpu = cpu
        self.result = result


def timed(fn: Callable[[], Any]) -> Timed:
    gc.collect()
    w0 = time.perf_counter()
    c0 = time.process_time()
    result = fn()
    c1 = time.process_time()
    w1 = time.perf_counter()
    return Timed(w1 - w0, c1 - c0, result)


def interleaved(
    contenders: dict[str, Callable[[], Any]], repeats: int, keep: str | None = None
) -> tuple[dict[str, dict[str, list[float]]], Any]:
    """Run each contender ``repeats`` times, in a rotating order; returns the times, and the
    structure that ``keep``'s last run built (run last of all, so that no other contender
    runs while it is alive)."""
    names = list(contenders)
    times: dict[str, dict[str, list[float]]] = {n: {"wall": [], "cpu": []} for n in names}
    kept = None
    for r in range(repeats):
        k = r % len(names)
        order = names[k:] + names[:k]
        if keep is not None and r == repeats - 1:
            order.remove(keep)
            order.append(keep)
        for name in order:
            t = timed(contenders[name])
            if name == keep and r == repeats - 1:
                kept = t.result
            t.result = None  # drop the structure before the next run
            times[name]["wall"].append(t.wall)
            times[name]["cpu"].append(t.cpu)
    return times, kept


def best(times: dict[str, list[float]], clock: str = "cpu") -> float:
    return min(times[clock])


# -- contenders --------------------------------------------------------------------------------


def run_api(events: Sequence[Any]) -> Any:
    from identityres import IdentityGraph

    graph = IdentityGraph()
    apply_events(graph, events)
    return graph


def run_ingest(event_batches: Sequence[list[Any]]) -> Any:
    from identityres import IdentityGraph

    graph = IdentityGraph()
    ingest = graph.ingest
    for batch in event_batches:
        ingest(batch)
    return graph


def run_networkx(events: Iterable[Any]) -> Any:
    from networkx.utils import UnionFind

    uf = UnionFind()
    union = uf.union
    for _op, user, anon, _name, _data, _ts, _eid in events:
        if user is not None and anon is not None:
            union(user, anon)
        else:
            uf[anon if user is None else user]
    return uf


def run_dict(events: Iterable[Any]) -> dict[str, str]:
    """Union of the two identifiers of each event carrying two; path halving; no ranks; no
    rules, no validation, no event ids. User ids and anonymous ids never share a value in the
    generated streams, so plain values are the keys."""
    parent: dict[str, str] = {}
    get = parent.get
    for _op, user, anon, _name, _data, _ts, _eid in events:
        if user is None or anon is None:
            x = anon if user is None else user
            if x not in parent:
                parent[x] = x
            continue
        x = user
        p = get(x)
        if p is None:
            parent[x] = x
        else:
            while p != x:
                gp = parent[p]
                parent[x] = gp
                x = gp
                p = parent[x]
        ra = x
        x = anon
        p = get(x)
        if p is None:
            parent[x] = x
        else:
            while p != x:
                gp = parent[p]
                parent[x] = gp
                x = gp
                p = parent[x]
        if ra != x:
            parent[x] = ra
    return parent


def dict_find(parent: dict[str, str], x: str) -> str:
    p = parent[x]
    while p != x:
        gp = parent[p]
        parent[x] = gp
        x = gp
        p = parent[x]
    return x


# -- one size ----------------------------------------------------------------------------------


def repeats_at(size: int, args: argparse.Namespace) -> int:
    repeats: int = args.repeats
    if args.quick and size >= 10**5:
        return 1
    if size >= 10**7:
        return min(repeats, 2)
    if size >= 10**6:
        return min(repeats, 3)
    return repeats


def log(msg: str) -> None:
    stamp = datetime.now().strftime("%H:%M:%S")
    print(f"[{stamp}] {msg}", file=sys.stderr, flush=True)


def measure_size(size: int, args: argparse.Namespace, out: dict[str, Any]) -> dict[str, Any]:
    res: dict[str, Any] = {"size": size}
    repeats = repeats_at(size, args)
    res["repeats"] = repeats
    w = Workload(size, seed=args.seed)
    skip = set(args.skip)
    if size > args.side_max:
        # the slow side figures only up to --side-max
        skip |= {"memory", "sqlite", "cli"}

    t = timed(lambda: list(w.events()))
    stream: list[Any] = t.result
    t.result = None
    res["events"] = len(stream)
    res["generate_seconds"] = t.wall
    log(f"{_pow10(size)}: {len(stream):,} events generated in {t.wall:.1f} s")
    res["stream"] = describe(stream)
    res["stream"]["late_deliveries"] = count_late(stream)

    graph = None
    if "throughput" not in skip:
        in_order = sorted(stream, key=itemgetter(5))  # every event has its own millisecond
        obj_batches = list(batches(to_objects(stream), args.batch))
        contenders: dict[str, Callable[[], Any]] = {
            "api": lambda: run_api(stream),
            "api_in_order": lambda: run_api(in_order),
            "ingest": lambda: run_ingest(obj_batches),
            "networkx": lambda: run_networkx(stream),
            "dict": lambda: run_dict(stream),
            # what the API's shape costs before any resolution (benchmarks/floors.py)
            "floor_call": lambda: apply_events(CallFloor(), stream),
            "floor_dedup": lambda: apply_events(DedupFloor(), stream),
        }
        # imported before the clocks start
        import networkx.utils  # noqa: F401

        import identityres  # noqa: F401

        log(f"{_pow10(size)}: throughput, {repeats} interleaved repeats")
        times, graph = interleaved(contenders, repeats, keep="api")
        res["times"] = times
        res["best_cpu"] = {n: best(tm) for n, tm in times.items()}
        res["best_wall"] = {n: best(tm, "wall") for n, tm in times.items()}
        res["eps"] = {n: len(stream) / s for n, s in res["best_cpu"].items()}
        in_order = obj_batches = []
        contenders.clear()
        log(f"{_pow10(size)}: " + ", ".join(f"{n} {v:,.0f}/s" for n, v in res["eps"].items()))

    if "lookups" not in skip:
        if graph is None:
            graph = run_api(stream)
        log(f"{_pow10(size)}: lookups")
        res["lookups"] = measure_lookups(graph, stream, args, repeats)
    if graph is not None:
        res["graph"] = graph_stats(graph)
    graph = None
    if args.profile_size == size and "profile" not in skip:
        out["profile"] = profile_api(stream, size, args.profile_top)
    stream = []  # free the stream before the other phases
    gc.collect()

    if "memory" not in skip:
        log(f"{_pow10(size)}: memory (tracemalloc)")
        graph, res["memory"] = measure_memory(w, top=size <= args.memory_top_max)
        res.setdefault("graph", graph_stats(graph))
        graph = None
        gc.collect()
    if "sqlite" not in skip:
        res["stores"] = measure_stores(size, args, repeats)
    elif size <= args.side_max:
        res["stores"] = {"skipped": "--skip sqlite"}
    if "cli" not in skip:
        log(f"{_pow10(size)}: CLI")
        res["cli"] = measure_cli(w)
    return res


def graph_stats(graph: Any) -> dict[str, Any]:
    s = graph.stats()
    return {
        "events": s.events,
        "identifiers": s.identifiers,
        "profiles": s.profiles,
        "identified_profiles": s.identified_profiles,
        "anonymous_profiles": s.anonymous_profiles,
        "joins": s.joins,
        "refusals": dict(s.refusals),
        "blocked_values": sum(s.blocked_values.values()),
        "replays": s.replays,
    }


def measure_memory(w: Workload, *, top: bool) -> tuple[Any, dict[str, Any]]:
    """Ingest the stream, made lazily, under tracemalloc; what the graph retains per
    identifier. Returns the graph too (the lookups use it)."""
    from identityres import IdentityGraph

    gc.collect()
    tracemalloc.start(1)
    try:
        before = tracemalloc.get_traced_memory()[0]
        graph = IdentityGraph()
        events = apply_events(graph, w.events())
        gc.collect()
        current, peak = tracemalloc.get_traced_memory()
        sites: list[dict[str, Any]] = []
        if top:
            snapshot = tracemalloc.take_snapshot().filter_traces(
                [tracemalloc.Filter(False, tracemalloc.__file__)]
            )
            for stat in snapshot.statistics("lineno")[:15]:
                frame = stat.traceback[0]
                name = frame.filename
                with contextlib.suppress(ValueError):
                    name = str(Path(name).resolve().relative_to(ROOT))
                sites.append(
                    {
                        "site": f"{name}:{frame.lineno}",
                        "code": linecache.getline(frame.filename, frame.lineno).strip(),
                        "bytes": stat.size,
                        "blocks": stat.count,
                    }
                )
            del snapshot
    finally:
        tracemalloc.stop()
    ids = len(graph)
    retained = current - before
    return graph, {
        "identifiers": ids,
        "events": events,
        "retained_bytes": retained,
        "peak_bytes": peak - before,
        "per_identifier": retained / ids if ids else float("nan"),
        "per_event": retained / events if events else float("nan"),
        "top_sites": sites,
    }


def measure_lookups(
    graph: Any, events: Sequence[Any], args: argparse.Namespace, repeats: int
) -> dict[str, Any]:
    from benchmarks.workload import BLOCKED_VALUES

    blocked = set(BLOCKED_VALUES)
    users: dict[str, None] = {}
    anons: dict[str, None] = {}
    for _op, user, anon, _name, _data, _ts, _eid in events:
        if user is not None and user not in blocked:
            users[user] = None
        if anon is not None and anon not in blocked:
            anons[anon] = None
    rng = random.Random(args.seed)
    n = min(args.lookups, len(users) + len(anons))
    n_users = round(n * len(users) / max(1, len(users) + len(anons)))
    qu = rng.sample(list(users), n_users)
    qa = rng.sample(list(anons), n - n_users)
    parent = run_dict(events)
    canonical = {v: dict_find(parent, v) for v in (*users, *anons)}
    del parent, users, anons

    def with_dict() -> None:
        d = canonical
        for v in qu:
            d[v]
        for v in qa:
            d[v]

    def lookups(resolve: Callable[..., Any]) -> None:
        for v in qu:
            resolve(user_id=v)
        for v in qa:
            resolve(anonymous_id=v)

    def with_resolve() -> None:
        lookups(graph.resolve)

    floor = ResolveFloor(canonical)

    def with_floor() -> None:
        lookups(floor.resolve)

    # lookups are short: more repeats
    times, _ = interleaved(
        {"resolve": with_resolve, "dict": with_dict, "floor": with_floor}, max(3, repeats)
    )
    return {
        "queries": n,
        "times": times,
        "resolve_per_s": n / best(times["resolve"]),
        "dict_per_s": n / best(times["dict"]),
    }


# -- subprocesses ------------------------------------------------------------------------------


def _proc_status_mb(field: str) -> float | None:
    """``VmHWM`` / ``VmRSS`` of this process from /proc (Linux), in MB."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def peak_rss_mb() -> float:
    """Peak RSS of this process. ``VmHWM`` where there is one: unlike ``ru_maxrss`` it starts
    afresh at ``exec``, so a subprocess of a big parent does not report the parent's size."""
    hwm = _proc_status_mb("VmHWM")
    if hwm is not None:
        return hwm
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def rss_mb() -> float:
    now = _proc_status_mb("VmRSS")
    return peak_rss_mb() if now is None else now


#: Runs the CLI like ``python -m identityres`` does, then reports its own peak RSS (Linux).
CLI_WRAPPER = """\
import sys
from identityres.cli import main
code = main(sys.argv[1:])
with open("/proc/self/status") as f:
    hwm = [line.split()[1] for line in f if line.startswith("VmHWM:")]
sys.stderr.write(f"\\nPEAK_RSS_MB={int(hwm[0]) / 1024 if hwm else float('nan')}\\n")
sys.exit(code)
"""


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    return env


def sqlite_available() -> str | None:
    """``None`` when the SQLite store can be used, else why not."""
    if not (ROOT / "identityres" / "storage" / "sqlite.py").exists():
        return "identityres/storage/sqlite.py does not exist yet"
    try:
        from identityres.storage.sqlite import SQLiteStore  # noqa: F401
    except Exception as exc:  # a module in progress may not import
        return f"identityres.storage.sqlite does not import: {type(exc).__name__}: {exc}"
    return None


def worker_store(args: argparse.Namespace) -> int:
    """Subprocess: ingest the stream into one store; print a JSON line."""
    from identityres import IdentityGraph

    w = Workload(args.worker_size, seed=args.seed)
    prebuilt = list(batches(to_objects(w.events()), args.sqlite_batch))
    events = sum(len(b) for b in prebuilt)
    rss_before = rss_mb()
    with tempfile.TemporaryDirectory(prefix="identityres-bench-") as tmp:
        path = os.path.join(tmp, "ids.db")
        store = f"sqlite:///{path}" if args.worker == "sqlite" else None
        graph = IdentityGraph(store=store)
        w0 = time.perf_counter()
        c0 = time.process_time()
        for batch in prebuilt:
            graph.ingest(batch)
        cpu = time.process_time() - c0
        wall = time.perf_counter() - w0
        identifiers = len(graph)
        graph.close()
        db_bytes = os.path.getsize(path) if os.path.exists(path) else 0
    print(
        json.dumps(
            {
                "store": args.worker,
                "events": events,
                "identifiers": identifiers,
                "wall": wall,
                "cpu": cpu,
                "rss_before_mb": rss_before,
                "peak_rss_mb": peak_rss_mb(),
                "db_bytes": db_bytes,
            }
        )
    )
    return 0


def _run_worker(store: str, size: int, args: argparse.Namespace) -> dict[str, Any]:
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--worker",
        store,
        "--worker-size",
        str(size),
        "--seed",
        str(args.seed),
        "--sqlite-batch",
        str(args.sqlite_batch),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=_env(), check=False)
    if proc.returncode != 0:
        tail = proc.stderr.strip().splitlines()[-3:]
        return {"error": f"exit {proc.returncode}: " + " | ".join(tail)}
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


def measure_stores(size: int, args: argparse.Namespace, repeats: int) -> dict[str, Any]:
    why = sqlite_available()
    if why is not None:
        log(f"{_pow10(size)}: SQLite skipped: {why}")
        return {"skipped": why}
    n = 1 if args.quick or size >= 10**6 else min(repeats, 2 if size >= 10**5 else 3)
    log(f"{_pow10(size)}: SQLite vs in-memory ingest(), {n} alternating subprocess runs each")
    runs: dict[str, list[dict[str, Any]]] = {"memory": [], "sqlite": []}
    for r in range(n):
        for store in ("memory", "sqlite") if r % 2 == 0 else ("sqlite", "memory"):
            got = _run_worker(store, size, args)
            if "error" in got:
                log(f"{_pow10(size)}: {store} worker failed: {got['error']}")
                return {"error": f"{store}: {got['error']}", "runs": runs}
            runs[store].append(got)
    out: dict[str, Any] = {"runs": runs, "batch": args.sqlite_batch}
    for store, rs in runs.items():
        fastest = min(rs, key=itemgetter("wall"))
        out[store] = {
            "events": fastest["events"],
            "identifiers": fastest["identifiers"],
            "wall": fastest["wall"],
            "eps": fastest["events"] / fastest["wall"],
            "peak_rss_mb": max(x["peak_rss_mb"] for x in rs),
            "rss_before_mb": max(x["rss_before_mb"] for x in rs),
            "db_bytes": fastest["db_bytes"],
        }
    out["ratio"] = out["memory"]["wall"] / out["sqlite"]["wall"]
    return out


def measure_cli(w: Workload) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="identityres-bench-") as tmp:
        path = os.path.join(tmp, "events.jsonl")
        with open(path, "w", encoding="utf-8") as f:
            lines = write_jsonl(w.events(), f)
        size = os.path.getsize(path)
        cmd = [sys.executable, "-c", CLI_WRAPPER, "resolve", path, "--json"]
        with open(os.path.join(tmp, "summary.json"), "wb") as sink:
            w0 = time.perf_counter()
            proc = subprocess.Popen(cmd, stdout=sink, stderr=subprocess.PIPE, env=_env())
            assert proc.stderr is not None
            err = proc.stderr.read().decode(errors="replace")
            _, status, usage = os.wait4(proc.pid, 0)
            wall = time.perf_counter() - w0
            proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode != 0:
            return {"error": f"exit {proc.returncode}: {err[-300:]}"}
        peak = float(err.rsplit("PEAK_RSS_MB=", 1)[1].split()[0])
    return {
        "lines": lines,
        "bytes": size,
        "wall": wall,
        "cpu": usage.ru_utime + usage.ru_stime,
        "eps": lines / wall,
        "peak_rss_mb": peak,
    }


# -- profile -----------------------------------------------------------------------------------


def profile_api(events: Sequence[Any], size: int, top: int) -> dict[str, Any]:
    """cProfile of the per-event API over the stream; the functions with the most own time."""
    from identityres import IdentityGraph

    log(f"{_pow10(size)}: cProfile of the per-event API")
    graph = IdentityGraph()
    profiler = cProfile.Profile()
    gc.collect()
    c0 = time.process_time()
    profiler.enable()
    apply_events(graph, events)
    profiler.disable()
    cpu = time.process_time() - c0
    stats = pstats.Stats(profiler, stream=io.StringIO())
    total = stats.total_tt
    rows = []
    for (filename, lineno, func), (cc, nc, tt, ct, _callers) in stats.stats.items():
        name = filename
        with contextlib.suppress(ValueError):
            name = str(Path(filename).resolve().relative_to(ROOT))
        where = f"{name}:{lineno}({func})" if lineno else func
        rows.append({"function": where, "calls": nc, "primitive": cc, "tottime": tt, "cumtime": ct})
    rows.sort(key=itemgetter("tottime"), reverse=True)
    return {
        "size": size,
        "events": len(events),
        "cpu_seconds_profiled": cpu,
        "total_tt": total,
        "top": rows[:top],
    }


# -- report ------------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    cpu = platform.processor() or "unknown"
    with contextlib.suppress(OSError), open("/proc/cpuinfo", encoding="utf-8") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = None
    with contextlib.suppress(OSError), open("/proc/meminfo", encoding="utf-8") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                mem = int(line.split()[1]) * 1024
                break
    try:
        affinity = len(os.sched_getaffinity(0))
    except AttributeError:
        affinity = os.cpu_count()
    commit = "unknown"
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        commit = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(ROOT), "status", "--porcelain", "--", "identityres"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        if dirty:
            commit += " + uncommitted changes in identityres/"
    import identityres

    versions = {"identityres": identityres.__version__}
    for dist in ("networkx", "matplotlib"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = "not installed"
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "usable_cores": affinity,
        "memory_bytes": mem,
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "platform": platform.platform(),
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "commit": commit,
        "load_average": os.getloadavg(),
        "versions": versions,
    }


def headline(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The targets table: each figure at the size it is defined for, or the largest run."""
    by_size = {r["size"]: r for r in results}
    largest_tp = max((r for r in results if "eps" in r), key=itemgetter("size"), default=None)
    rows: list[dict[str, Any]] = []

    def row(key: str, value: float | None, note: str, *, exact: bool = True) -> None:
        _, figure, target, op, threshold = next(t for t in TARGETS if t[0] == key)
        if value is None:
            met = "n/a"
        else:
            ok = value >= threshold if op == ">=" else value <= threshold
            met = ("yes" if ok else "no") if exact else ("(yes)" if ok else "(no)")
        rows.append(
            {
                "key": key,
                "figure": figure,
                "value": value,
                "note": note,
                "target": target,
                "met": met,
            }
        )

    def at(r: dict[str, Any] | None) -> str:
        return f"at {_pow10(r['size'])}" if r else "not measured"

    if largest_tp is not None:
        b = largest_tp["best_cpu"]
        row("api_vs_nx", b["networkx"] / b["api"], at(largest_tp))
        row("api_vs_dict", b["dict"] / b["api"], at(largest_tp))
        row("ingest_vs_dict", b["dict"] / b["ingest"], at(largest_tp))
    else:
        for key in ("api_vs_nx", "api_vs_dict", "ingest_vs_dict"):
            row(key, None, "not measured")
    lk = max((r for r in results if "lookups" in r), key=itemgetter("size"), default=None)
    if lk is not None:
        t = lk["lookups"]["times"]
        row("resolve_vs_dict", best(t["dict"]) / best(t["resolve"]), at(lk))
    else:
        row("resolve_vs_dict", None, "not measured")
    mem = by_size.get(10**6)
    if mem is not None and "memory" in mem:
        row("bytes_per_id", mem["memory"]["per_identifier"], "at 10^6")
    else:
        mr = max((r for r in results if "memory" in r), key=itemgetter("size"), default=None)
        if mr is None:
            row("bytes_per_id", None, "not measured")
        else:
            row(
                "bytes_per_id",
                mr["memory"]["per_identifier"],
                f"at {_pow10(mr['size'])} (10^6 not run)",
                exact=False,
            )
    base = by_size.get(10**5)
    if base is not None and "eps" in base and largest_tp is not None and largest_tp["size"] > 10**5:
        ratio = largest_tp["eps"]["api"] / base["eps"]["api"]
        if largest_tp["size"] >= 10**7:
            row("growth", ratio, f"{_pow10(largest_tp['size'])} vs 10^5, per-event API")
        else:
            row(
                "growth",
                ratio,
                f"{_pow10(largest_tp['size'])} vs 10^5, per-event API (10^7 not run)",
                exact=False,
            )
    else:
        row("growth", None, "needs 10^5 and a larger size")
    if largest_tp is not None:
        b = largest_tp["best_cpu"]
        row("late_ratio", b["api"] / b["api_in_order"], at(largest_tp))
    else:
        row("late_ratio", None, "not measured")
    sq = max(
        (r for r in results if "ratio" in r.get("stores", {})), key=itemgetter("size"), default=None
    )
    if sq is not None:
        row("sqlite_vs_memory", sq["stores"]["ratio"], at(sq) + ", ingest() wall time")
    else:
        why = next(
            (
                r["stores"].get("skipped") or r["stores"].get("error")
                for r in results
                if "stores" in r
            ),
            "not measured",
        )
        row("sqlite_vs_memory", None, f"skipped: {why}")
    return rows


def floors_section(results: list[dict[str, Any]]) -> list[str]:
    """The speed targets next to the floors of benchmarks/floors.py: stand-ins with the
    API's calls that do strictly less than the docs ask, measured in the same run."""
    tp = max(
        (r for r in results if "floor_dedup" in r.get("best_cpu", {})),
        default=None,
        key=itemgetter("size"),
    )
    lk = max(
        (r for r in results if "floor" in r.get("lookups", {}).get("times", {})),
        default=None,
        key=itemgetter("size"),
    )
    if tp is None and lk is None:
        return []
    out = [
        "",
        "### How far the speed targets are from pure Python's floor",
        "",
        "Floors (benchmarks/floors.py) take the very calls the benchmark makes and do strictly",
        "less than the docs ask: *calls only* returns at once; *validate + dedup* checks the",
        "types and remembers each event_id with a hash of its content (see [Event ids and",
        "duplicates](concepts.md#event-ids-and-duplicates), and R8 in",
        "[Merge rules](merge-rules.md#r8-determinism-and-convergence)), with no graph at all;",
        "resolve()'s floor is its call and lock over a plain dict. No",
        "implementation of this API in pure Python can beat its floor, so a target above the",
        "floor's ratio cannot be met on this interpreter by optimizing identityres.",
        "",
        "| figure | target | calls only | validate + dedup | identityres |",
        "|---|---|---|---|---|",
    ]
    if tp is not None:
        b = tp["best_cpu"]
        where = f" (at {_pow10(tp['size'])})"
        for base, label, target in (
            ("networkx", "per-event API vs networkx.utils.UnionFind", ">= 1.5x"),
            ("dict", "per-event API vs bare dict union-find", ">= 0.4x"),
        ):
            out.append(
                f"| {label}{where} | {target} | {b[base] / b['floor_call']:.2f}x "
                f"| {b[base] / b['floor_dedup']:.2f}x | {b[base] / b['api']:.2f}x |"
            )
        out.append(
            f"| ingest() of a list vs bare dict union-find{where} | >= 0.6x | "
            f"{b['dict'] / b['floor_call']:.2f}x | {b['dict'] / b['floor_dedup']:.2f}x "
            f"| {b['dict'] / b['ingest']:.2f}x |"
        )
    if lk is not None:
        t = lk["lookups"]["times"]
        d = best(t["dict"])
        out.append(
            f"| resolve() vs dict lookup loop (at {_pow10(lk['size'])}) | >= 0.3x | - "
            f"| {d / best(t['floor']):.2f}x (call + lock) | {d / best(t['resolve']):.2f}x |"
        )
    return out


def _fmt_value(key: str, value: float | None) -> str:
    if value is None:
        return "-"
    if key == "bytes_per_id":
        return f"{value:,.0f} bytes"
    if key == "late_ratio":
        return f"{value:.2f}x the time"
    return f"{value:.2f}x"


def _cell(text: Any) -> str:
    """Text made safe for a markdown table cell."""
    return " ".join(str(text).split()).replace("|", "\\|")


def _eps(v: float | None) -> str:
    return "-" if v is None else f"{v:,.0f}"


def size_table(results: list[dict[str, Any]]) -> list[str]:
    cols = [
        "identifiers (graph)",
        "events",
        "per-event API ev/s",
        "ingest() ev/s",
        "networkx ev/s",
        "dict UF ev/s",
        "API vs nx",
        "API vs dict",
        "ingest() vs dict",
        "late / in order",
        "resolve vs dict",
        "bytes / identifier",
        "SQLite vs memory",
        "CLI ev/s",
    ]
    lines = ["| size | " + " | ".join(cols) + " |", "|" + "---|" * (len(cols) + 1)]
    for r in results:
        cells = [_pow10(r["size"])]
        g = r.get("graph") or r.get("memory") or {}
        cells.append(f"{g['identifiers']:,}" if "identifiers" in g else "-")
        cells.append(f"{r['events']:,}")
        eps = r.get("eps", {})
        for n in ("api", "ingest", "networkx", "dict"):
            cells.append(_eps(eps.get(n)))
        b = r.get("best_cpu")
        if b:
            cells += [
                f"{b['networkx'] / b['api']:.2f}x",
                f"{b['dict'] / b['api']:.2f}x",
                f"{b['dict'] / b['ingest']:.2f}x",
                f"{b['api'] / b['api_in_order']:.2f}x",
            ]
        else:
            cells += ["-"] * 4
        lk = r.get("lookups")
        cells.append(
            f"{best(lk['times']['dict']) / best(lk['times']['resolve']):.3f}x" if lk else "-"
        )
        m = r.get("memory")
        cells.append(f"{m['per_identifier']:,.0f}" if m else "-")
        st = r.get("stores", {})
        if "ratio" in st:
            cells.append(f"{st['ratio']:.2f}x")
        else:
            cells.append("failed" if "error" in st else "skipped")
        cli = r.get("cli", {})
        cells.append(_eps(cli.get("eps")) if "eps" in cli else "-")
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def plots(results: list[dict[str, Any]], outdir: Path) -> list[str]:
    """Write the PNG plots; returns their file names (empty without matplotlib)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log("matplotlib is not installed: no plots (pip install -e '.[bench]')")
        return []
    outdir.mkdir(parents=True, exist_ok=True)
    names = []
    tp = [r for r in results if "eps" in r]

    def ids(r: dict[str, Any]) -> int:
        return int((r.get("graph") or r.get("memory") or {}).get("identifiers", r["size"]))

    if tp:
        fig, ax = plt.subplots(figsize=(7.5, 4.5))
        for n, style in (
            ("dict", "k:"),
            ("networkx", "C7--"),
            ("api", "C0-o"),
            ("api_in_order", "C0:"),
            ("ingest", "C1-s"),
        ):
            ax.plot([ids(r) for r in tp], [r["eps"][n] for r in tp], style, label=LABELS[n])
        sq = [r for r in results if "ratio" in r.get("stores", {})]
        if sq:
            ax.plot(
                [ids(r) for r in sq],
                [r["stores"]["sqlite"]["eps"] for r in sq],
                "C3-^",
                label=LABELS["sqlite"],
            )
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("identifiers in the graph")
        ax.set_ylabel("events per second (best CPU time)")
        ax.set_title("Ingest throughput against graph size")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(outdir / "throughput.png", dpi=110)
        plt.close(fig)
        names.append("throughput.png")
    mem = [r for r in results if "memory" in r]
    if mem:
        fig, ax = plt.subplots(figsize=(7.5, 4.0))
        ax.plot(
            [ids(r) for r in mem],
            [r["memory"]["per_identifier"] for r in mem],
            "C0-o",
            label="retained per identifier",
        )
        ax.axhline(400, color="C3", linestyle="--", label="target: 400 bytes")
        ax.set_xscale("log")
        ax.set_ylim(bottom=0)
        ax.set_xlabel("identifiers in the graph")
        ax.set_ylabel("bytes per identifier (tracemalloc)")
        ax.set_title("Memory per identifier, in-memory store")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(outdir / "memory.png", dpi=110)
        plt.close(fig)
        names.append("memory.png")
    return names


def report(
    results: list[dict[str, Any]],
    extra: dict[str, Any],
    args: argparse.Namespace,
    pngs: list[str],
    png_rel: str,
) -> str:
    m = extra["machine"]
    sizes = [r["size"] for r in results]
    largest = max(sizes)
    cmd = "python benchmarks/run.py " + " ".join(args.argv)
    out: list[str] = ["# Benchmarks", ""]
    out += [
        "How fast identityres ingests and resolves, and how much memory it keeps, against",
        "union-find baselines on the same realistic event streams (issue #5). Generated by",
        f"`{cmd.strip()}` on {m['date']}; sizes run: "
        + ", ".join(_pow10(s) for s in sizes)
        + " identifiers."
        + (
            f" The largest size run is {_pow10(largest)}: 10^7 needs a long run"
            " (`--max-size 1e7`) and has not been run for this report."
            if largest < 10**7
            else ""
        ),
        "",
        "Reproduce (from the repository root, with `pip install -e '.[bench]'`):",
        "",
        "```console",
        "python benchmarks/run.py --quick        # 10^4 and 10^5, under two minutes",
        "python benchmarks/run.py                # 10^4, 10^5, 10^6: this page",
        "python benchmarks/run.py --max-size 1e7 --side-max 1e6  # and 10^7 (an hour, ~20 GB)",
        "```",
        "",
        "## Against the targets",
        "",
        "Ratios are speeds relative to the baseline (baseline time / identityres time), measured",
        "in one process on the same stream, interleaved, best of the repeats; full rules on.",
        "A met? in parentheses is judged at a smaller size than the target names.",
        "",
        "| figure | measured | target | met? |",
        "|---|---|---|---|",
    ]
    for h in headline(results):
        out.append(
            f"| {h['figure']} | {_fmt_value(h['key'], h['value'])} ({_cell(h['note'])}) "
            f"| {h['target']} | {h['met']} |"
        )
    out += floors_section(results)
    out += ["", "## At each size", ""]
    out += size_table(results)
    out += [
        "",
        "Events per second count every delivered event (duplicates included), by best CPU time.",
        "",
    ]
    for name in pngs:
        title = {"throughput.png": "Throughput", "memory.png": "Memory per identifier"}[name]
        out += [f"![{title} against graph size]({png_rel}/{name})", ""]

    # absolute numbers that the ratios hide
    out += ["### Times", ""]
    out += [
        "| size | contender | best CPU s | best wall s | all CPU s |",
        "|---|---|---|---|---|",
    ]
    for r in results:
        for n, t in r.get("times", {}).items():
            out.append(
                f"| {_pow10(r['size'])} | {LABELS[n]} | {min(t['cpu']):.3f} | {min(t['wall']):.3f}"
                f" | {', '.join(f'{x:.2f}' for x in t['cpu'])} |"
            )
        lk = r.get("lookups")
        if lk:
            for n, t in lk["times"].items():
                label = {
                    "resolve": "resolve()",
                    "dict": "dict lookup loop",
                    "floor": "floor: resolve()'s call and lock over a dict",
                }[n]
                out.append(
                    f"| {_pow10(r['size'])} | {label} ({lk['queries']:,} lookups) "
                    f"| {min(t['cpu']):.4f} | {min(t['wall']):.4f} | "
                    f"{', '.join(f'{x:.3f}' for x in t['cpu'])} |"
                )
    out.append("")

    stores = [r for r in results if "stores" in r]
    if stores:
        out += ["### SQLite and the in-memory store", ""]
        if any("ratio" in r["stores"] for r in stores):
            out += [
                f"`ingest()` in batches of {args.sqlite_batch:,} event objects (built before the"
                " clock starts), each store in its own subprocess, alternating; wall time; peak RSS"
                " is the subprocess's `VmHWM` (the prebuilt batches included: RSS before"
                " ingest shows their share).",
                "",
                "| size | store | events/s | peak RSS MB | RSS before ingest MB | database MB |",
                "|---|---|---|---|---|---|",
            ]
            for r in stores:
                st = r["stores"]
                if "ratio" not in st:
                    why = _cell(st.get("error") or st.get("skipped") or "-")
                    out.append(f"| {_pow10(r['size'])} | - | {why} | | | |")
                    continue
                for store in ("memory", "sqlite"):
                    s = st[store]
                    out.append(
                        f"| {_pow10(r['size'])} | {store} | {s['eps']:,.0f} | "
                        f"{s['peak_rss_mb']:,.0f} | {s['rss_before_mb']:,.0f} | "
                        + (f"{s['db_bytes'] / 1e6:,.1f}" if store == "sqlite" else "-")
                        + " |"
                    )
            out.append("")
            for r in stores:
                if r["stores"].get("note"):
                    out += [f"At {_pow10(r['size'])}: {r['stores']['note']}", ""]
        else:
            why = stores[0]["stores"].get("skipped") or stores[0]["stores"].get("error")
            out += [f"Not measured: {why}.", ""]
        out.append("")

    clis = [r for r in results if "cli" in r]
    if clis:
        out += [
            "### The CLI end to end",
            "",
            "`identityres resolve EVENTS.jsonl --json` (`identityres.cli.main`, as"
            " `python -m identityres` runs it) on the stream written as Segment JSONL by"
            " `benchmarks/workload.py`; wall time of the subprocess (interpreter start included);"
            " peak RSS is its `VmHWM`.",
            "",
            "| size | lines | file MB | wall s | events/s | peak RSS MB |",
            "|---|---|---|---|---|---|",
        ]
        for r in clis:
            c = r["cli"]
            if "skipped" in c or "error" in c:
                out.append(f"| {_pow10(r['size'])} | {_cell(c.get('error', 'skipped'))} | | | | |")
                continue
            out.append(
                f"| {_pow10(r['size'])} | {c['lines']:,} | {c['bytes'] / 1e6:,.1f} | "
                f"{c['wall']:.2f} | {c['eps']:,.0f} | {c['peak_rss_mb']:,.0f} |"
            )
        out.append("")

    out += workload_section(results)
    out += method_section(args)
    out += memory_section(results)
    if extra.get("profile"):
        out += profile_section(extra["profile"])
    out += [
        "## Machine",
        "",
        "| | |",
        "|---|---|",
        f"| CPU | {m['cpu']} |",
        f"| cores | {m['cores']} ({m['usable_cores']} usable by this process) |",
        f"| memory | {m['memory_bytes'] / 2**30:.1f} GiB |"
        if m["memory_bytes"]
        else "| memory | unknown |",
        f"| Python | {m['python']} |",
        f"| platform | {m['platform']} |",
        f"| date | {m['date']} |",
        f"| identityres | {m['versions']['identityres']}, commit {m['commit']} |",
        f"| networkx, matplotlib | {m['versions']['networkx']}, {m['versions']['matplotlib']} |",
        f"| load average at start | {', '.join(f'{x:.2f}' for x in m['load_average'])} |",
        "",
        "The machine is shared with other work (see the load average): absolute rates move from",
        "run to run by tens of percent; the ratios, measured interleaved in one process, move",
        "much less. Run the suite on an idle machine for publishable absolute numbers.",
        "",
    ]
    return "\n".join(out)


def workload_section(results: list[dict[str, Any]]) -> list[str]:
    r = max(results, key=itemgetter("size"))
    s = r["stream"]
    w = Workload(r["size"])
    g = r.get("graph")
    out = [
        "## Workload",
        "",
        "`benchmarks/workload.py` (seed 1): 70% of visitors never identify (anonymous `track`"
        " calls only); identified users have a Zipf-like number of devices in 1..10 (weight"
        " `1/k^2`, mean 1.9), each with anonymous page views, an `identify` (30% with traits)"
        " and signed-in `track` calls carrying both ids; 3% of devices are shared with a second"
        " user, half of them after a `reset`; 40% of users get an `identify_company`; 50% of"
        f" `track` calls carry properties; {w.late:.0%} of events are delivered late (held back"
        f" by a log-uniform 1..{w.max_delay:,} events), {w.duplicates:.1%} twice, and"
        f" {w.blocked:.1%} carry a blocked value. Message ids and anonymous ids are 32 hex digits.",
        "",
        f"At {_pow10(r['size'])}: {s['events']:,} events ("
        + ", ".join(f"{n} {c:,}" for n, c in s["by_op"].items())
        + f"); {s['identifiers']:,} identifiers ({s['user_ids']:,} user ids,"
        f" {s['anonymous_ids']:,} anonymous ids); {s['links']:,} events carry two identifiers;"
        f" {s['late_deliveries']:,} deliveries are older than one delivered before them"
        f" (duplicates included); {s['duplicates']:,} duplicates; {s['blocked_values']:,} blocked"
        f" values; {s['companies']:,} companies.",
    ]
    if g:
        refusals = ", ".join(f"{k} {v:,}" for k, v in sorted(g["refusals"].items())) or "none"
        out[-1] += (
            f" The graph: {g['profiles']:,} profiles ({g['identified_profiles']:,} identified),"
            f" {g['joins']:,} joins, refusals: {refusals}; {g['replays']:,} late-event replays."
        )
    out.append("")
    return out


def method_section(args: argparse.Namespace) -> list[str]:
    return [
        "## Method",
        "",
        "* One process per run; at each size the stream is made once (a list of event tuples)"
        " and every contender runs on it, on a fresh structure, interleaved in a rotating order;"
        f" best of {args.repeats} repeats (at most 3 at 10^6 and 2 at 10^7; `--quick`: 1 at"
        " 10^5); `gc.collect()` before each run, the garbage collector left on during it (it is"
        " part of the cost users pay). The SQLite comparison runs 3 subprocesses per store at"
        " 10^4, 2 at 10^5 and 1 from 10^6; the CLI runs once per size.",
        "* Ratios use CPU time (`time.process_time`), which other processes on a shared machine"
        " disturb less than wall time; `results.json` keeps both. The SQLite and CLI figures use"
        " wall time (they wait on I/O).",
        "* **per-event API**: one `identify` / `track` / `reset` / `identify_company` call per"
        " event tuple, with `timestamp=` (epoch seconds) and `event_id=`, traits and properties"
        " as generated.",
        f"* **ingest()**: `ingest(list)` calls of {args.batch:,} event objects (`Identify`,"
        " `Track`, `Reset`, `IdentifyCompany`) each, built before the clock starts.",
        "* **networkx.utils.UnionFind**: `uf.union(user_id, anonymous_id)` for each event with"
        " both, `uf[x]` for each event with one. **dict union-find**: the same over a plain"
        " dict, path halving, finds inlined, no ranks. Neither validates anything, keeps event"
        " ids, traits or companies, nor applies a merge rule: they are floors, not equivalents.",
        "* **floors** (`benchmarks/floors.py`): the per-event calls on stand-ins with the API's"
        " signatures: *calls only* returns at once; *validate + dedup* checks types and"
        " remembers each event_id with a hash of its content, no graph. resolve()'s floor is its"
        " call and a lock over a dict of canonical ids. They bound what pure Python can reach.",
        "* **late events**: the per-event API on the delivered stream (1% late) against the same"
        " delivered events sorted by timestamp.",
        f"* **resolve()**: {args.lookups:,} lookups (or every identifier, if fewer), user ids and"
        " anonymous ids in their proportion, `resolve(user_id=)` / `resolve(anonymous_id=)`,"
        " against `d[value]` over a dict of each identifier's canonical id.",
        "* **memory** (up to `--side-max`, like SQLite and the CLI): a separate pass with"
        " `tracemalloc` on, the stream made lazily: bytes the"
        " graph (in-memory store) retains after ingesting, after `gc.collect()`, divided by its"
        " identifiers. tracemalloc counts Python allocations (not allocator overhead or"
        " fragmentation), strings shared with the caller included.",
        "",
    ]


def memory_section(results: list[dict[str, Any]]) -> list[str]:
    with_sites = [r for r in results if r.get("memory", {}).get("top_sites")]
    r = max(with_sites, key=itemgetter("size"), default=None)
    if r is None:
        return []
    m = r["memory"]
    out = [
        f"## Where the memory goes ({_pow10(r['size'])} identifiers)",
        "",
        f"{m['retained_bytes'] / 1e6:,.1f} MB retained for {m['identifiers']:,} identifiers and"
        f" {m['events']:,} events: {m['per_identifier']:,.0f} bytes per identifier,"
        f" {m['per_event']:,.0f} per event (peak during ingest {m['peak_bytes'] / 1e6:,.1f} MB)."
        " Top allocation sites still alive after ingest (tracemalloc, by line):",
        "",
        "| site | code | MB | blocks | bytes / identifier |",
        "|---|---|---|---|---|",
    ]
    for s in m["top_sites"]:
        code = s.get("code", "").replace("|", "\\|")
        out.append(
            f"| `{s['site']}` | `{code}` | {s['bytes'] / 1e6:,.1f} | {s['blocks']:,} |"
            f" {s['bytes'] / m['identifiers']:,.0f} |"
        )
    out.append("")
    return out


def profile_section(p: dict[str, Any]) -> list[str]:
    out = [
        f"## Where the time goes (cProfile, per-event API, {_pow10(p['size'])})",
        "",
        f"{p['events']:,} events; {p['cpu_seconds_profiled']:.2f} s CPU under the profiler"
        " (cProfile inflates the cost of each Python call; the shares still rank the hot spots)."
        " Functions by own time:",
        "",
        "| function | calls | own s | own % | cumulative s |",
        "|---|---|---|---|---|",
    ]
    total = p["total_tt"] or 1.0
    for row in p["top"]:
        out.append(
            f"| `{row['function']}` | {row['calls']:,} | {row['tottime']:.3f} |"
            f" {100 * row['tottime'] / total:.1f} | {row['cumtime']:.3f} |"
        )
    out.append("")
    return out


def print_table(results: list[dict[str, Any]]) -> None:
    print("\n| figure | measured | target | met? |\n|---|---|---|---|")
    for h in headline(results):
        print(
            f"| {h['figure']} | {_fmt_value(h['key'], h['value'])} ({_cell(h['note'])}) "
            f"| {h['target']} | {h['met']} |"
        )
    print()
    print("\n".join(size_table(results)))


# -- main --------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="benchmarks/run.py",
        description=(__doc__ or "").split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument(
        "--quick",
        action="store_true",
        help="10^4 (3 repeats) and 10^5 (1 repeat); memory, SQLite, CLI and cProfile at 10^4",
    )
    mode.add_argument(
        "--smoke", action="store_true", help="2,000 identifiers, 1 repeat, no plots (a test)"
    )
    mode.add_argument(
        "--profile-only", action="store_true", help="only the cProfile at --profile-size"
    )
    parser.add_argument("--max-size", type=_size, default=10**6, help="largest size (1e7 ok)")
    parser.add_argument("--sizes", help="comma-separated sizes instead, e.g. 1e4,3e5")
    parser.add_argument("--repeats", type=int, help="best of N (default 5; --quick 3)")
    parser.add_argument("--batch", type=int, default=1000, help="events per ingest() call")
    parser.add_argument(
        "--sqlite-batch", type=int, default=5000, help="events per ingest() call, store figures"
    )
    parser.add_argument("--lookups", type=int, default=100_000, help="resolve() calls per run")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--skip",
        default="",
        help=f"comma-separated phases to skip: {', '.join(PHASES)} (--smoke: sqlite,cli,profile;"
        " 'none' runs them all)",
    )
    parser.add_argument(
        "--profile-size",
        type=float,
        help="cProfile at this size (default 1e5; --quick 1e4; 0: none)",
    )
    parser.add_argument(
        "--side-max",
        type=float,
        help="largest size for the memory, SQLite and CLI phases (default: all; --quick 1e4)",
    )
    parser.add_argument("--profile-top", type=int, default=25)
    parser.add_argument(
        "--memory-top-max",
        type=float,
        default=1e6,
        help="list allocation sites up to this size (the snapshot is costly)",
    )
    parser.add_argument("--out", help="directory for the report, plots and results.json")
    parser.add_argument("--doc", help="report path (default: OUT/benchmarks.md, or docs/...)")
    parser.add_argument("--no-plots", action="store_true")
    parser.add_argument(
        "--report-from", metavar="RESULTS_JSON", help="only write the report of a saved run again"
    )
    parser.add_argument("--worker", choices=("memory", "sqlite"), help=argparse.SUPPRESS)
    parser.add_argument("--worker-size", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    args.skip_given = bool(args.skip)
    args.out_given = args.out is not None
    args.doc_given = args.doc is not None
    args.skip = [s for s in args.skip.split(",") if s and s != "none"]
    for s in args.skip:
        if s not in PHASES:
            parser.error(f"--skip: unknown phase {s!r}; phases: {', '.join(PHASES)}")
    if args.smoke:
        sizes = [2000]
        # the subprocess phases cost seconds of interpreter start-up: out unless asked for
        if not args.skip_given:
            args.skip = ["sqlite", "cli", "profile"]
        args.repeats = args.repeats or 1
        args.no_plots = True
        args.profile_size = 0
        args.lookups = min(args.lookups, 2000)
    elif args.quick:
        sizes = [10**4, 10**5]
        args.repeats = args.repeats or 3
        args.side_max = 1e4 if args.side_max is None else args.side_max
        args.profile_size = 1e4 if args.profile_size is None else args.profile_size
    else:
        sizes = [10**k for k in range(4, 8) if 10**k <= args.max_size]
        args.repeats = args.repeats or 5
    if args.sizes:
        sizes = sorted({_size(s) for s in args.sizes.split(",")})
    args.sizes_list = sizes
    args.profile_size = int(1e5 if args.profile_size is None else args.profile_size)
    args.side_max = math.inf if args.side_max is None else args.side_max
    if args.out is None:
        if args.smoke or args.quick or args.sizes:
            args.out = str(ROOT / "benchmarks" / "results")
            args.doc = args.doc or str(Path(args.out) / "benchmarks.md")
        else:
            args.out = str(ROOT / "docs" / "benchmarks")
            args.doc = args.doc or str(ROOT / "docs" / "benchmarks.md")
    args.doc = args.doc or str(Path(args.out) / "benchmarks.md")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker:
        return worker_store(args)
    if args.profile_only:
        events = list(Workload(args.profile_size, seed=args.seed).events())
        p = profile_api(events, args.profile_size, args.profile_top)
        print("\n".join(profile_section(p)))
        return 0
    if args.report_from:
        return rerender(args)
    start = time.perf_counter()
    extra: dict[str, Any] = {"machine": machine()}
    results: list[dict[str, Any]] = []
    log(
        f"sizes {', '.join(_pow10(s) for s in args.sizes_list)}; repeats {args.repeats}; "
        f"report {args.doc}"
    )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for size in args.sizes_list:
        results.append(measure_size(size, args, extra))
        # A checkpoint after each size: a long run that dies at 10^7 (out of memory, a
        # reboot) keeps what it measured; `--report-from` renders it.
        partial = {**extra, "results": results, "args": vars(args), "partial": True}
        (out / "results.json").write_text(
            json.dumps(partial, indent=1, default=str), encoding="utf-8"
        )
    write_outputs(results, extra, args, out, Path(args.doc))
    extra["results"] = results
    extra["args"] = vars(args)
    (out / "results.json").write_text(json.dumps(extra, indent=1, default=str), encoding="utf-8")
    print_table(results)
    log(f"done in {time.perf_counter() - start:.0f} s: {args.doc}, {out / 'results.json'}")
    return 0


def write_outputs(
    results: list[dict[str, Any]],
    extra: dict[str, Any],
    args: argparse.Namespace,
    out: Path,
    doc: Path,
) -> None:
    out.mkdir(parents=True, exist_ok=True)
    pngs = [] if args.no_plots else plots(results, out)
    doc.parent.mkdir(parents=True, exist_ok=True)
    png_rel = os.path.relpath(out, doc.parent)
    text = report(results, extra, args, pngs, png_rel)
    # Sections other benchmarks wrote into the page (benchmarks/postgres_throughput.py) stay.
    kept = _KEPT.findall(doc.read_text(encoding="utf-8")) if doc.exists() else []
    if kept:
        text = text.rstrip("\n") + "\n\n" + "\n".join(kept)
    doc.write_text(text, encoding="utf-8")


#: a section of the page that this script does not write: kept when it writes the page again
_KEPT = re.compile(r"<!-- kept: begin -->.*?<!-- kept: end -->\n", re.S)


def rerender(args: argparse.Namespace) -> int:
    """``--report-from RESULTS``: write the report and plots of a saved run again (after a
    change of the report, or of results.json), measuring nothing."""
    source = Path(args.report_from)
    saved = json.loads(source.read_text(encoding="utf-8"))
    results = saved.pop("results")
    run_args = argparse.Namespace(**saved["args"])
    run_args.argv = saved["args"].get("argv", [])
    run_args.no_plots = args.no_plots
    out = Path(args.out) if args.out_given else source.parent
    doc = Path(args.doc) if args.doc_given else Path(run_args.doc)
    write_outputs(results, saved, run_args, out, doc)
    print_table(results)
    log(f"report written again from {source}: {doc}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
