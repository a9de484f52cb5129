"""``identityres funnel``, ``users`` and ``journey`` on the shipped example
(examples/journeys.jsonl; docs/analytics.md, "The command line")."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

import identityres as ir
from identityres.cli import EXIT_NOT_FOUND, EXIT_OK, EXIT_USAGE, main

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "journeys.jsonl"
STEPS = ["--step", "Docs: Quickstart", "--step", "Signed Up", "--step", "API Request"]


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _messages() -> list[dict[str, Any]]:
    return [json.loads(line) for line in EXAMPLE.read_text("utf-8").splitlines() if line]


@pytest.fixture(params=["file", "store"])
def where(request: pytest.FixtureRequest, tmp_path: Path) -> list[str]:
    if request.param == "file":
        return []
    url = f"sqlite:///{tmp_path / 'ids.db'}"
    with ir.IdentityGraph(store=url, keep_events=True) as g:
        g.ingest(_messages())
    return ["--store", url]


def test_funnel_table_and_json(capsys: pytest.CaptureFixture[str], where: list[str]) -> None:
    code, out, _ = run(capsys, "funnel", str(EXAMPLE), *STEPS, "--within", "7d", *where)
    assert code == EXIT_OK
    assert out.splitlines()[2].split() == [
        "1.",
        "Docs:",
        "Quickstart",
        "2",
        "100.0%",
        "100.0%",
        "-",
        "-",
    ]
    assert "3. API Request" in out and "31m 12s" in out
    code, out, _ = run(capsys, "funnel", str(EXAMPLE), *STEPS, "--within", "7d", "--json", *where)
    data = json.loads(out)
    assert data["counts"] == [2, 1, 1] and data["conversion_from_previous"] == [1.0, 0.5, 1.0]
    assert data["median_seconds"] == [None, 486.0, 1872.0]


def test_funnel_by_company(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(
        capsys, "funnel", str(EXAMPLE), *STEPS, "--within", "7d", "--by", "company", "--json"
    )
    assert code == EXIT_OK
    assert [(r["key"], r["counts"]) for r in json.loads(out)["results"]] == [
        ("grp_acme", [2, 1, 1])
    ]


def test_users_by_day(capsys: pytest.CaptureFixture[str], where: list[str]) -> None:
    code, out, _ = run(capsys, "users", str(EXAMPLE), "--by", "day", "--json", *where)
    assert code == EXIT_OK
    assert json.loads(out)["counts"] == [
        {"key": "2024-05-06", "people": 4},
        {"key": "2024-05-07", "people": 6},
        {"key": "2024-05-08", "people": 1},
    ]
    code, out, _ = run(capsys, "users", str(EXAMPLE))
    assert out == "8 unique people\n"


def test_journey_from_a_file_or_the_kept_events(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code, out, _ = run(capsys, "journey", "usr_1001", "--input", str(EXAMPLE))
    assert code == EXIT_OK
    lines = out.splitlines()
    assert lines[0] == "journey of user_id:usr_1001: 13 events"
    assert lines[1].split() == [
        "2024-05-06T09:00:00Z",
        "Docs:",
        "Quickstart",
        "anonymous_id:anon-a11ce0",
    ]
    assert lines[10].split()[-1] == "api_key:sk_live_4f2b9e71"
    url = f"sqlite:///{tmp_path / 'ids.db'}"
    with ir.IdentityGraph(store=url, keep_events=True) as g:
        g.ingest(_messages())
    code, out2, _ = run(capsys, "journey", "usr_1001", "--store", url)
    assert (code, out2) == (EXIT_OK, out)
    code, out, _ = run(capsys, "journey", "anonymous_id:nobody", "--input", str(EXAMPLE))
    assert code == EXIT_NOT_FOUND


def test_bad_arguments_are_usage_errors(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "funnel", str(EXAMPLE), *STEPS, "--within", "a week")
    assert code == EXIT_USAGE and "within" in err
    code, _, err = run(capsys, "users", str(EXAMPLE), "--plot", "chart.gif")
    assert code == EXIT_USAGE and ".png or .svg" in err


@pytest.mark.parametrize("suffix", ["png", "svg"])
def test_plots(capsys: pytest.CaptureFixture[str], tmp_path: Path, suffix: str) -> None:
    funnel = tmp_path / f"funnel.{suffix}"
    users = tmp_path / f"users.{suffix}"
    journey = tmp_path / f"journey.{suffix}"
    assert (
        run(capsys, "funnel", str(EXAMPLE), *STEPS, "--within", "7d", "--plot", str(funnel))[0]
        == EXIT_OK
    )
    assert run(capsys, "users", str(EXAMPLE), "--by", "day", "--plot", str(users))[0] == EXIT_OK
    assert (
        run(capsys, "journey", "usr_1001", "--input", str(EXAMPLE), "--plot", str(journey))[0]
        == EXIT_OK
    )
    magic = b"\x89PNG" if suffix == "png" else b"<?xml"
    for path in (funnel, users, journey):
        assert path.read_bytes().startswith(magic)


def test_a_parquet_file_answers_as_its_jsonl(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, where: list[str]
) -> None:
    """The example as Parquet (Segment columns, objects as JSON text; docs/batch.md, Input
    columns): the same funnel and daily users as from the JSONL file, both engines."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    msgs = _messages()
    keys = sorted({k for m in msgs for k in m})

    def cell(value: Any) -> str | None:
        if value is None:
            return None
        return json.dumps(value) if isinstance(value, (dict, list)) else str(value)

    path = tmp_path / "journeys.parquet"
    pq.write_table(pa.table({k: [cell(m.get(k)) for m in msgs] for k in keys}), path)
    for command in (["funnel", *STEPS, "--within", "7d"], ["users", "--by", "day"]):
        answers = []
        for events in (EXAMPLE, path):
            for engine in ("python", "duckdb"):
                name, *rest = command
                code, out, _ = run(
                    capsys, name, str(events), *rest, "--json", "--engine", engine, *where
                )
                assert code == EXIT_OK, out
                answers.append(json.loads(out))
        assert all(a == answers[0] for a in answers), answers
