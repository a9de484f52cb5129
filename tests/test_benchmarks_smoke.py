"""The benchmark harness still runs: ``benchmarks/run.py --smoke`` (2,000 identifiers, one repeat,
no plots, no subprocess phases) writes its report with every row of the targets table.

Nothing here asserts a speed: the harness is checked, not the library's performance.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
RUN = ROOT / "benchmarks" / "run.py"

FIGURES = (
    "per-event API ingest vs networkx.utils.UnionFind",
    "per-event API ingest vs bare dict union-find",
    "ingest() of a list vs bare dict union-find",
    "resolve() vs dict lookup loop",
    "memory per identifier at 10^6 identifiers (in-memory store)",
    "throughput at 10^7 identifiers vs at 10^5",
    "stream with 1% late events vs same stream in order",
    "SQLite ingest vs in-memory ingest",
)


@pytest.fixture(scope="module")
def smoke(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    pytest.importorskip("networkx")
    out = tmp_path_factory.mktemp("bench")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    proc = subprocess.run(
        [sys.executable, str(RUN), "--smoke", "--out", str(out)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return out, proc.stdout


def test_report_has_every_target_row(smoke: tuple[Path, str]) -> None:
    out, stdout = smoke
    report = (out / "benchmarks.md").read_text(encoding="utf-8")
    rows = [line for line in report.splitlines() if line.startswith("| ")]
    for figure in FIGURES:
        matching = [row for row in rows if row.startswith(f"| {figure} |")]
        assert len(matching) == 1, figure
        cells = [c.strip() for c in matching[0].strip("|").split("|")]
        assert len(cells) == 4
        assert cells[3] in {"yes", "no", "(yes)", "(no)", "n/a"}
        assert f"| {figure} |" in stdout  # the table is printed too
    assert "### How far the speed targets are from pure Python's floor" in report


def test_results_json_holds_the_measurements(smoke: tuple[Path, str]) -> None:
    out, _ = smoke
    data = json.loads((out / "results.json").read_text(encoding="utf-8"))
    (result,) = data["results"]
    assert result["size"] == 2000
    assert set(result["eps"]) == {
        "api",
        "api_in_order",
        "ingest",
        "networkx",
        "dict",
        "floor_call",
        "floor_dedup",
    }
    assert set(result["lookups"]["times"]) == {"resolve", "dict", "floor"}
    assert result["memory"]["identifiers"] > 1000
    assert result["lookups"]["queries"] > 0
    assert not list(out.glob("*.png"))  # --smoke makes no plots


def test_the_dedup_floor_does_the_work_it_claims() -> None:
    """The floor is honest only if it really validates and deduplicates: a redelivery
    passes, a reused event_id with other content and a bad timestamp do not."""
    sys.path.insert(0, str(ROOT))
    try:
        from benchmarks.floors import DedupFloor, ResolveFloor
    finally:
        sys.path.remove(str(ROOT))
    floor = DedupFloor()
    floor.track("Viewed", anonymous_id="a1", properties={"p": 1}, timestamp=1.0, event_id="e1")
    floor.track("Viewed", anonymous_id="a1", properties={"p": 1}, timestamp=1.0, event_id="e1")
    assert len(floor.seen) == 1
    with pytest.raises(ValueError, match="e1"):
        floor.track("Viewed", anonymous_id="a1", properties={"p": 2}, timestamp=1.0, event_id="e1")
    with pytest.raises(ValueError, match="timestamp"):
        floor.identify("u1", "a1", timestamp=float("nan"), event_id="e2")
    with pytest.raises(ValueError, match="ids"):
        floor.identify(7, "a1", timestamp=1.0, event_id="e3")
    assert ResolveFloor({"a1": "u1"}).resolve(anonymous_id="a1") == "u1"


def test_a_rewritten_page_keeps_the_sections_other_benchmarks_wrote(
    smoke: tuple[Path, str], tmp_path: Path
) -> None:
    # (benchmarks/postgres_throughput.py's figures live in docs/benchmarks.md too)
    out, _ = smoke
    page = tmp_path / "page.md"
    block = "<!-- kept: begin -->\n## PostgreSQL\n\nfigures\n<!-- kept: end -->\n"
    page.write_text("# an old report\n\n" + block, encoding="utf-8")
    proc = subprocess.run(
        [
            *(sys.executable, str(RUN), "--report-from", str(out / "results.json")),
            *("--doc", str(page), "--no-plots", "--out", str(tmp_path / "again")),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    text = page.read_text(encoding="utf-8")
    assert "# an old report" not in text
    assert "### How far the speed targets are from pure Python's floor" in text
    assert text.endswith(block)


def test_batch_benchmark_harness_runs(tmp_path: Path) -> None:
    """``benchmarks/batch.py`` at 2,000 identifiers: every contender reports its figures."""
    out = tmp_path / "batch.json"
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "batch.py"),
            "--identifiers",
            "2000",
            "--dir",
            str(tmp_path),
            "--json",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(out.read_text())
    by_name = {r["contender"]: r for r in report["results"]}
    assert set(by_name) == {"batch-parquet", "batch-jsonl", "networkx", "online"}
    for r in by_name.values():
        assert r["events"] > 2000 and r["cpu"] > 0 and r["peak_rss_mb"] > 0
    assert 0 < by_name["batch-parquet"]["conflicted_fraction"] < 1
    assert by_name["batch-parquet"]["identifiers"] == by_name["batch-jsonl"]["identifiers"]


def test_batch_benchmark_stops_a_contender_over_its_memory_cap(tmp_path: Path) -> None:
    """``--max-rss-gb``: a contender passing the cap is stopped and reported as stopped, and
    the others still run (a 10^7 run on a shared machine without swap)."""
    out = tmp_path / "batch.json"
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "batch.py"),
            "--identifiers",
            "2000",
            "--dir",
            str(tmp_path),
            "--skip",
            "online",
            "--skip",
            "batch-jsonl",
            "--max-rss-gb",
            "0.02",
            "--json",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(out.read_text())
    by_name = {r["contender"]: r for r in report["results"]}
    assert set(by_name) == {"batch-parquet", "networkx"}
    for r in by_name.values():
        assert "stopped: resident memory passed 0.02 GB" in r["error"]
