"""Batched ingest by 1, 2, 4 and 8 worker processes into one PostgreSQL namespace, next to the
same worker counts on one SQLite file and to the in-memory store (one process).

The stream is ``sqlite_rss.stream`` (seeded; users with 1-3 anonymous ids, identify events with
message ids and increasing timestamps, some tracks), cut into batches of ``--batch`` events that
are dealt to the workers round robin, as a queue feeds its consumers: batch ``i`` goes to worker
``i % workers``. Each worker is a process of its own with its own store object; all wait for one
signal, and the rate is all the stream's events over the wall time from that signal until the
last worker is done. The runs are interleaved (memory, then each worker count on PostgreSQL and
on SQLite), ``--repeats`` times; the best rate of each is reported, with the spread::

    IDENTITYRES_POSTGRES_URL=postgresql://postgres@127.0.0.1:5432/test \\
        python benchmarks/postgres_throughput.py --identifiers 100000 --repeats 3

Every PostgreSQL run writes a fresh namespace, dropped afterwards; every SQLite run a new file.
``--json FILE`` writes the figures. Each run also reports the CPU seconds of its workers
(``time.process_time()`` of each worker's ingest, summed) and, for PostgreSQL on this machine,
of the server processes of its sessions (``/proc``), and the load average after it.
``--identifiers 100000,1000000`` runs several stream sizes, interleaved within each repeat;
``--events N`` ingests only each stream's first ``N`` events.
"""

from __future__ import annotations

import argparse
import itertools
import json
import multiprocessing
import os
import queue
import secrets
import signal
import sys
import tempfile
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from sqlite_rss import stream
from workload import batches


def _chunks(
    identifiers: int, seed: int, size: int, limit: int | None = None
) -> list[list[dict[str, Any]]]:
    """The stream in batches of ``size``; with ``limit``, only its first ``limit`` events."""
    return list(batches(itertools.islice(stream(identifiers, seed=seed), limit), size))


def _worker(
    url: str, share: list[list[dict[str, Any]]], ready: Any, go: Any, done: Any, release: Any
) -> None:
    from identityres import IdentityGraph
    from identityres.storage import store_from_url

    with IdentityGraph(store=store_from_url(url)) as graph:
        graph.resolve(user_id="warm-up")  # the connection (and the schema check) before the clock
        ready.release()
        go.wait()
        cpu = time.process_time()
        for chunk in share:
            graph.ingest(chunk)
        done.put((os.getpid(), time.process_time() - cpu))
        # (the server sessions stay open until the parent has read their CPU time)
        release.wait(300)


def _server_cpu(base: str, namespace: str) -> float:
    """CPU seconds the server processes of ``namespace``'s sessions used (this machine's
    ``/proc``; 0 when the server runs elsewhere)."""
    import psycopg

    with psycopg.connect(base, autocommit=True) as conn:
        pids = [
            p
            for (p,) in conn.execute(
                "SELECT pid FROM pg_stat_activity WHERE application_name = %s",
                (f"identityres:{namespace}",),
            )
        ]
    total = 0.0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def _run_workers(
    url: str, chunks: list[list[dict[str, Any]]], workers: int, server: Any = None
) -> tuple[float, float, float]:
    """Wall seconds from the signal until ``workers`` processes have ingested ``chunks``, the
    workers' CPU seconds for it, and the server's (``server()``, read before the workers
    close their sessions)."""
    ctx = multiprocessing.get_context("spawn")
    ready = ctx.Semaphore(0)
    go = ctx.Event()
    release = ctx.Event()
    done = ctx.Queue()
    procs = [
        ctx.Process(target=_worker, args=(url, chunks[w::workers], ready, go, done, release))
        for w in range(workers)
    ]
    for p in procs:
        p.start()
    for _ in procs:
        if not ready.acquire(timeout=300):
            raise RuntimeError("a worker never became ready")
    start = time.perf_counter()
    go.set()
    finished = 0
    cpu = 0.0
    while finished < len(procs):
        try:
            cpu += done.get(timeout=1)[1]
            finished += 1
        except queue.Empty:
            failed = [p.exitcode for p in procs if p.exitcode not in (None, 0)]
            if failed:  # a batch that failed (not retried to success) fails the run
                for p in procs:
                    p.kill()
                raise RuntimeError(f"a worker failed (exit codes {failed})") from None
    elapsed = time.perf_counter() - start
    server_cpu = server() if server is not None else 0.0
    release.set()
    for p in procs:
        p.join()
        if p.exitcode != 0:
            raise RuntimeError(f"a worker failed (exit code {p.exitcode})")
    return elapsed, cpu, server_cpu


def _run_memory(chunks: list[list[dict[str, Any]]]) -> tuple[float, float, float]:
    from identityres import IdentityGraph

    graph = IdentityGraph()
    start, cpu = time.perf_counter(), time.process_time()
    for chunk in chunks:
        graph.ingest(chunk)
    return time.perf_counter() - start, time.process_time() - cpu, 0.0


def _loadavg() -> str:
    try:
        with open("/proc/loadavg") as f:
            return f.read().strip()
    except OSError:
        return ""


def _postgres_url(base: str, namespace: str) -> str:
    return f"{base}{'&' if '?' in base else '?'}namespace={namespace}"


def _drop(base: str, namespace: str) -> None:
    import psycopg
    from psycopg import sql

    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(namespace)))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--identifiers",
        default="100000",
        help="comma-separated stream sizes (e.g. 100000,1000000), run interleaved",
    )
    parser.add_argument(
        "--events", type=int, help="ingest only each stream's first EVENTS events (default: all)"
    )
    parser.add_argument("--batch", type=int, default=1000, help="events per ingest call")
    parser.add_argument("--workers", default="1,2,4,8", help="comma-separated worker counts")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--url", default=os.environ.get("IDENTITYRES_POSTGRES_URL", ""))
    parser.add_argument("--dir", help="where the SQLite files go (default: the temp dir)")
    parser.add_argument("--no-sqlite", action="store_true")
    parser.add_argument("--json", help="write the figures to this file")
    args = parser.parse_args(argv)
    if not args.url:
        parser.error("no server: pass --url or set IDENTITYRES_POSTGRES_URL")
    counts = [int(w) for w in args.workers.split(",")]
    sizes = [int(float(n)) for n in args.identifiers.split(",")]
    # A run stopped by `kill` (or a test's timeout) unwinds like Ctrl-C, so the `finally` below
    # still drops the schema of the run in progress.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    streams = {n: _chunks(n, args.seed, args.batch, args.events) for n in sizes}
    events = {n: sum(map(len, chunks)) for n, chunks in streams.items()}
    for n, chunks in streams.items():
        print(
            f"{events[n]:,} events over {n:,} identifiers"
            + (f" (the stream's first {args.events:,})" if args.events else "")
            + f", {len(chunks)} batches of {args.batch:,}",
            flush=True,
        )
    print(f"workers {counts}; {os.cpu_count()} CPUs (the server shares them)", flush=True)

    def key(n: int, name: str) -> str:  # (one size: the names alone, as before)
        return name if len(sizes) == 1 else f"{n}/{name}"

    rates: dict[str, list[float]] = {}
    for n in sizes:
        rates[key(n, "memory")] = []
        for w in counts:
            rates[key(n, f"postgres/{w}")] = []
            if not args.no_sqlite:
                rates[key(n, f"sqlite/{w}")] = []
    #: every run: store/workers, wall s, the workers' CPU s, the server's CPU s, load average
    runs: list[dict[str, Any]] = []
    #: the schemas this run made (each dropped after its run); in the JSON so that a caller can
    #: check exactly these are gone, whatever else shares the database
    namespaces: list[str] = []

    def record(n: int, name: str, result: tuple[float, float, float]) -> None:
        wall, cpu, server = result
        rates[key(n, name)].append(events[n] / wall)
        runs.append(
            {
                "identifiers": n,
                "run": name,
                "wall": wall,
                "cpu": cpu,
                "server_cpu": server,
                "loadavg": _loadavg().split()[:3],
            }
        )
        extra = f", server {server:.1f}" if server else ""
        print(
            f"  {key(n, name)} {events[n] / wall:,.0f}/s ({wall:.1f} s wall, cpu {cpu:.1f}"
            f"{extra}; load {' '.join(_loadavg().split()[:3])})",
            flush=True,
        )

    with tempfile.TemporaryDirectory(prefix="identityres-bench-", dir=args.dir) as tmp:
        for repeat in range(args.repeats):
            print(f"repeat {repeat + 1}:", flush=True)
            for n, chunks in streams.items():
                record(n, "memory", _run_memory(chunks))
                for w in counts:
                    namespace = f"bench_{secrets.token_hex(4)}"
                    namespaces.append(namespace)
                    url = _postgres_url(args.url, namespace)
                    try:
                        result = _run_workers(
                            url, chunks, w, server=lambda ns=namespace: _server_cpu(args.url, ns)
                        )
                    finally:
                        _drop(args.url, namespace)
                    record(n, f"postgres/{w}", result)
                    if not args.no_sqlite:
                        path = os.path.join(tmp, f"run{repeat}-{n}-{w}.db")
                        record(n, f"sqlite/{w}", _run_workers(f"sqlite:///{path}", chunks, w))
                        for suffix in ("", "-wal", "-shm"):
                            if os.path.exists(path + suffix):
                                os.remove(path + suffix)
    best = {name: max(r) for name, r in rates.items()}
    print(f"best of {args.repeats} (events/s; spread = (best - worst) / best):")
    for name, r in rates.items():
        spread = (max(r) - min(r)) / max(r)
        print(f"  {name:20} {best[name]:10,.0f}   spread {spread:5.1%}")
    for n in sizes:
        one = best[key(n, f"postgres/{counts[0]}")]
        label = "" if len(sizes) == 1 else f"{n:,} identifiers: "
        for w in counts[1:]:
            ratio = best[key(n, f"postgres/{w}")] / one
            print(f"  {label}postgres {w} workers / {counts[0]}: {ratio:.2f}x")
        if not args.no_sqlite:
            print(
                f"  {label}postgres 1 worker / sqlite 1 writer: "
                f"{one / best[key(n, 'sqlite/1')]:.2f}x"
            )
        print(f"  {label}postgres 1 worker / memory: {one / best[key(n, 'memory')]:.2f}x")
    if args.json:
        with open(args.json, "w") as out:
            json.dump(
                {
                    "events": events[sizes[0]] if len(sizes) == 1 else events,
                    "identifiers": sizes[0] if len(sizes) == 1 else sizes,
                    "events_cap": args.events,
                    "batch": args.batch,
                    "cpus": os.cpu_count(),
                    "rates": rates,
                    "best": best,
                    "runs": runs,
                    "namespaces": namespaces,
                },
                out,
                indent=1,
            )


if __name__ == "__main__":
    main()
