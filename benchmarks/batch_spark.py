"""Benchmark of batch re-resolution on Spark in local mode (issue #15, docs/batch.md#on-spark):
``identityres.batch_spark.resolve`` on the workload stream written to Parquet as
``benchmarks/batch.py`` writes it, with the fixed overhead reported apart (the session's start,
and the whole pipeline on a 7-row input)::

    python benchmarks/batch_spark.py --identifiers 1e6 --dir /tmp/spark-bench

CPU seconds are those of the whole process tree (this driver, the JVM, Spark's Python
workers: utime+stime of each live process plus what it reaped), beside wall seconds; peak RSS
is the largest sum of the tree's resident sets, sampled every 0.2 s.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

TICK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


def _tree() -> list[int]:
    """This process and its descendants."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                children.setdefault(int(fields[1]), []).append(int(entry))
            except OSError:
                continue
    out, todo = [], [os.getpid()]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, ()))
    return out


def _read_tree(name: str) -> list[list[str]]:
    """``/proc/<pid>/<name>`` of every process of the tree, split (``stat``: after the name)."""
    out = []
    for pid in _tree():
        try:
            with open(f"/proc/{pid}/{name}") as f:
                text = f.read()
        except OSError:
            continue  # (ended meanwhile)
        out.append(text.rsplit(")", 1)[1].split() if name == "stat" else text.split())
    return out


def tree_cpu() -> float:
    """CPU seconds of the process tree: each live process's own and its reaped children's."""
    return sum(sum(int(x) for x in f[11:15]) for f in _read_tree("stat")) / TICK


def tree_rss_mb() -> float:
    return sum(int(f[1]) for f in _read_tree("statm")) * PAGE / 2**20


class PeakRss:
    """The largest tree RSS seen while running (a sampling thread)."""

    def __init__(self) -> None:
        self.peak = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.2):
            self.peak = max(self.peak, tree_rss_mb())

    def stop(self) -> float:
        self._stop.set()
        self._thread.join()
        return self.peak


def _measure(label: str, fn: Any, out: dict[str, Any]) -> Any:
    cpu0, wall0 = tree_cpu(), time.perf_counter()
    value = fn()
    out[label] = {
        "wall": round(time.perf_counter() - wall0, 2),
        "cpu_tree": round(tree_cpu() - cpu0, 2),
        "load": os.getloadavg(),
    }
    print(label, json.dumps(out[label]), file=sys.stderr)
    return value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--identifiers", type=lambda s: int(float(s)), default=1_000_000)
    parser.add_argument("--dir", help="where events.parquet is (or is written)")
    parser.add_argument("--partitions", type=int, default=16, help="resolving tasks")
    parser.add_argument("--memory", default="3g", help="spark.driver.memory")
    parser.add_argument("--json", metavar="PATH", help="also write the figures here")
    args = parser.parse_args(argv)
    from batch import ensure_inputs  # benchmarks/batch.py: the same Parquet input

    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        directory = Path(args.dir or tmp)
        ensure_inputs(args.identifiers, directory)
        report: dict[str, Any] = {"identifiers": args.identifiers, "partitions": args.partitions}
        peak = PeakRss()
        from identityres import batch_spark

        spark = _measure(
            "session_start",
            lambda: batch_spark.local_session(
                2,
                **{
                    "spark.driver.memory": args.memory,
                    # (Spark's default 200 makes every shuffle of a small input 200 tasks)
                    "spark.sql.shuffle.partitions": str(args.partitions),
                },
            ),
            report,
        )
        from tests.test_batch import MESSAGES, _as_text_columns

        tiny = spark.createDataFrame(_as_text_columns(MESSAGES))
        for repeat in range(2):  # the first also warms the Python workers
            _measure(f"tiny_job_{repeat}", lambda: batch_spark.resolve(tiny, partitions=2), report)
        result = _measure(
            "resolve_1e6",
            lambda: batch_spark.resolve(
                str(directory / "events.parquet"),
                spark=spark,
                partitions=args.partitions,
                progress=lambda phase, seconds: print(
                    f"  {phase}: {seconds:.1f} s", file=sys.stderr
                ),
            ),
            report,
        )
        report["stats"] = dict(zip(*result.stats.to_pydict().values(), strict=True))
        report["peak_rss_tree_mb"] = round(peak.stop(), 1)
        spark.stop()
    print(json.dumps(report, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
