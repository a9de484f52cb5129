"""Tests of the command line (``identityres resolve``) and of the shipped example.

The expectations for ``examples/journeys.jsonl`` were worked out by hand from the merge rules
(docs/concepts.md, docs/merge-rules.md, notes/semantics.md) before running the command;
examples/README.md explains each of them person by person.
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from identityres import IdentityGraph, Profile
from identityres.cli import main

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "journeys.jsonl"

# -- hand-worked expectations for examples/journeys.jsonl ----------------------------------

#: canonical id -> every identifier of the profile, by kind
EXPECTED_PROFILES: dict[str, dict[str, list[str]]] = {
    # Ada: docs visitor -> sign-up -> API token
    "usr_1001": {
        "anonymous_id": ["anon-a11ce0"],
        "api_key": ["sk_live_4f2b9e71"],
        "email": ["ada@acme.io"],
        "user_id": ["usr_1001"],
    },
    # Ben: laptop and phone
    "usr_1002": {
        "anonymous_id": ["anon-b3n1a9", "anon-b3n2f7"],
        "email": ["ben@acme.io"],
        "user_id": ["usr_1002"],
    },
    # Cleo: first user of the shared kiosk (no reset), keeps its anonymous id
    "usr_1003": {
        "anonymous_id": ["anon-c105k1"],
        "email": ["cleo@example.org"],
        "user_id": ["usr_1003"],
    },
    # Dan: second user of the kiosk; its anonymous id was refused to him
    "usr_1004": {"email": ["dan@example.org"], "user_id": ["usr_1004"]},
    # Eve: first user of the lab machine, then logged out (reset)
    "usr_1005": {
        "anonymous_id": ["anon-1ab001"],
        "email": ["eve@initech.com"],
        "user_id": ["usr_1005"],
    },
    # Finn: next user of the lab machine, on the new anonymous id
    "usr_1006": {
        "anonymous_id": ["anon-1ab002"],
        "email": ["finn@initech.com"],
        "user_id": ["usr_1006"],
    },
    # Gina: blocked userId "null" first, then a real sign-up with a blocked empty email
    "usr_1007": {
        "anonymous_id": ["anon-g1a7e5"],
        "phone": ["+15555550123"],
        "user_id": ["usr_1007"],
    },
    # the docs reader who never signs up
    "anon-d0c5f0": {"anonymous_id": ["anon-d0c5f0"]},
}

EXPECTED_SUMMARY: dict[str, Any] = {
    "events": {"read": 46, "applied": 45, "duplicates": 1, "late": 4, "skipped": 0},
    "identifiers": {
        "total": 23,
        "by_kind": {"user_id": 7, "email": 6, "phone": 1, "api_key": 1, "anonymous_id": 8},
    },
    "profiles": {"total": 8, "identified": 7, "anonymous": 1},
    "joins": 15,
}

EXPECTED_REFUSALS = [
    # (line, event_id, refused identifier, anchor, reason, limit kind)
    (16, "msg-027", "anon-c105k1", "usr_1004", "limit_exceeded", "user_id"),
    (17, "msg-028", "anon-c105k1", "usr_1004", "limit_exceeded", "user_id"),
    (33, "msg-036", "anon-1ab001", "usr_1006", "anonymous_id_reset", None),
]

EXPECTED_BLOCKED = [
    {"kind": "anonymous_id", "value": "undefined", "reason": "blocked_value", "count": 2},
    {"kind": "email", "value": "", "reason": "blocked_value", "count": 1},
    {"kind": "user_id", "value": "null", "reason": "blocked_value", "count": 1},
]


def run_json(capsys: pytest.CaptureFixture[str], *args: str) -> dict[str, Any]:
    assert main(["resolve", *args, "--json"]) == 0
    out = capsys.readouterr().out
    summary: dict[str, Any] = json.loads(out)
    return summary


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def messages(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


def as_record(p: Profile) -> dict[str, Any]:
    """A profile as --output should write it, built here independently of the CLI."""
    return {
        "user_id": p.user_id,
        "user_id_kind": p.user_id_kind,
        "identified_user_id": p.identified_user_id,
        "identifiers": {k: sorted(v) for k, v in p.identifiers.items()},
        "anonymous_ids": sorted(p.anonymous_ids),
        "company_id": p.company_id,
        "company_ids": sorted(p.company_ids),
        "traits": dict(p.traits),
        "first_seen": p.first_seen.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "last_seen": p.last_seen.strftime("%Y-%m-%dT%H:%M:%SZ"),
    }


# -- the example ---------------------------------------------------------------------------


def test_example_is_a_realistic_segment_log() -> None:
    msgs = messages(EXAMPLE)
    assert 40 <= len(msgs) <= 80
    for m in msgs:
        assert m["messageId"]
        assert m["timestamp"].endswith("Z")
    # out of order: some lines are earlier than a line before them
    stamps = [m["timestamp"] for m in msgs]
    assert any(b < a for a, b in itertools.pairwise(stamps))
    # exactly one exact duplicate line
    lines = [line for line in EXAMPLE.read_text(encoding="utf-8").splitlines() if line]
    assert len(lines) - len(set(lines)) == 1


def test_example_summary_numbers(capsys: pytest.CaptureFixture[str]) -> None:
    summary = run_json(capsys, str(EXAMPLE))
    for key, expected in EXPECTED_SUMMARY.items():
        assert summary[key] == expected, key
    assert summary["duplicate_lines"] == [{"line": 42, "first_line": 8}]
    assert summary["skipped_lines"] == []


def test_example_refusals_and_blocked_values(capsys: pytest.CaptureFixture[str]) -> None:
    summary = run_json(capsys, str(EXAMPLE))
    refusals = summary["refusals"]
    assert refusals["total"] == 3
    assert refusals["by_reason"] == {"anonymous_id_reset": 1, "limit_exceeded": 2}
    assert refusals["limit_exceeded_by_kind"] == {"user_id": 2}
    got = [
        (
            r["line"],
            r["event_id"],
            r["identifier"]["value"],
            r["anchor"]["value"],
            r["reason"],
            r["kind"],
        )
        for r in refusals["items"]
    ]
    assert sorted(got) == EXPECTED_REFUSALS
    assert all(r["identifier"]["kind"] == "anonymous_id" for r in refusals["items"])
    blocked = summary["blocked_values"]
    assert blocked["values"] == 3
    assert blocked["times"] == 4
    assert blocked["items"] == EXPECTED_BLOCKED


def test_example_companies_and_largest(capsys: pytest.CaptureFixture[str]) -> None:
    summary = run_json(capsys, str(EXAMPLE))
    assert summary["companies"] == [
        {
            "company_id": "grp_acme",
            "profiles": ["usr_1001", "usr_1002"],
            "traits": {"employees": 40, "name": "Acme Inc", "plan": "business"},
        },
        {
            "company_id": "grp_initech",
            "profiles": ["usr_1005"],
            "traits": {"name": "Initech", "plan": "free"},
        },
    ]
    largest = [(p["user_id"], p["identifiers"]) for p in summary["largest_profiles"]]
    assert largest == [
        ("usr_1001", 4),
        ("usr_1002", 4),
        ("usr_1003", 3),
        ("usr_1005", 3),
        ("usr_1006", 3),
    ]


def test_example_text_summary(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["resolve", str(EXAMPLE)]) == 0
    captured = capsys.readouterr()
    out = captured.out
    assert captured.err == ""
    assert "46 read: 45 applied, 1 duplicate, 4 late (replayed), 0 skipped" in out
    assert "line 42 repeats line 8" in out
    assert "identifiers  23 (user_id 7, email 6, phone 1, api_key 1, anonymous_id 8)" in out
    assert "profiles     8: 7 identified, 1 anonymous" in out
    assert "joins        15" in out
    assert "limit_exceeded (user_id)  2" in out
    assert "anonymous_id_reset        1" in out
    assert "line 33: anonymous_id 'anon-1ab001' not joined to user_id 'usr_1006'" in out
    assert "blocked      3 values, 4 times" in out
    assert "anonymous_id 'undefined'  2 times" in out
    assert "grp_acme (Acme Inc)    2 profiles: usr_1001, usr_1002" in out


def test_example_output_profiles(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "profiles.jsonl"
    assert main(["resolve", str(EXAMPLE), "--output", str(out)]) == 0
    assert f"wrote 8 profiles to {out}" in capsys.readouterr().out
    written = read_jsonl(out)
    assert {p["user_id"]: p["identifiers"] for p in written} == EXPECTED_PROFILES

    # The same file ingested directly, in one batch: the profiles agree, and the file lists
    # them by the priority of the canonical id's kind, then by the id (profiles() streams in
    # the store's order).
    graph = IdentityGraph()
    report = graph.ingest(messages(EXAMPLE))
    assert (report.applied, report.duplicates, report.errors) == (45, 1, ())
    rank = graph.rules.compiled.kind_index
    ordered = sorted(graph.profiles(), key=lambda p: (rank[p.user_id_kind], p.user_id))
    assert written == [as_record(p) for p in ordered]
    assert [p["user_id"] for p in written] == [
        "usr_1001",
        "usr_1002",
        "usr_1003",
        "usr_1004",
        "usr_1005",
        "usr_1006",
        "usr_1007",
        "anon-d0c5f0",
    ]


def test_example_profile_details(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "profiles.jsonl"
    assert main(["resolve", str(EXAMPLE), "-o", str(out)]) == 0
    by_id = {p["user_id"]: p for p in read_jsonl(out)}
    ada = by_id["usr_1001"]
    assert ada["traits"] == {
        "email": "ada@acme.io",
        "name": "Ada Lovelace",
        "plan": "team",  # the later identify (day 2) wins over "free"
        "signup_source": "docs",  # set_once
    }
    assert (ada["company_id"], ada["company_ids"]) == ("grp_acme", ["grp_acme"])
    assert (ada["first_seen"], ada["last_seen"]) == ("2024-05-06T09:00:00Z", "2024-05-08T10:00:00Z")
    # The kiosk's anonymous id stayed with Cleo, so Dan's refused kiosk events still count as
    # sightings of it: Cleo's profile was last seen at Dan's last kiosk event.
    cleo = by_id["usr_1003"]
    assert cleo["traits"] == {"email": "cleo@example.org", "name": "Cleo Park"}
    assert (cleo["first_seen"], cleo["last_seen"]) == (
        "2024-05-06T10:00:00Z",
        "2024-05-06T15:05:00Z",
    )
    dan = by_id["usr_1004"]
    assert dan["anonymous_ids"] == []
    assert dan["traits"] == {"email": "dan@example.org", "name": "Dan Reyes"}
    assert by_id["usr_1005"]["company_id"] == "grp_initech"
    assert by_id["usr_1006"]["company_id"] is None
    gina = by_id["usr_1007"]
    assert gina["traits"] == {"name": "Gina Rossi", "email": "", "phone": "+15555550123"}
    lurker = by_id["anon-d0c5f0"]
    assert lurker["user_id_kind"] == "anonymous_id"
    assert lurker["identified_user_id"] is None
    assert lurker["traits"] == {}


def test_example_any_order_same_profiles(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    forward = tmp_path / "forward.jsonl"
    backward = tmp_path / "backward.jsonl"
    reversed_file = tmp_path / "reversed.jsonl"
    lines = EXAMPLE.read_text(encoding="utf-8").splitlines()
    reversed_file.write_text("\n".join(reversed(lines)) + "\n", encoding="utf-8")
    assert main(["resolve", str(EXAMPLE), "-o", str(forward), "--json"]) == 0
    first = json.loads(capsys.readouterr().out)
    assert main(["resolve", str(reversed_file), "-o", str(backward), "--json"]) == 0
    second = json.loads(capsys.readouterr().out)
    assert forward.read_bytes() == backward.read_bytes()
    for key in ("identifiers", "profiles", "joins", "blocked_values", "companies"):
        assert first[key] == second[key], key
    assert first["refusals"]["by_reason"] == second["refusals"]["by_reason"]


def test_python_dash_m_on_the_example() -> None:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.run(
        [sys.executable, "-m", "identityres", "resolve", "examples/journeys.jsonl"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "profiles     8: 7 identified, 1 anonymous" in proc.stdout
    assert proc.stderr == ""


# -- bad input -----------------------------------------------------------------------------

GOOD = (
    '{"type": "identify", "userId": "u1", "anonymousId": "a1", "timestamp": "2024-01-01T00:00:00Z"}'
)
GOOD2 = '{"type": "page", "anonymousId": "a2", "timestamp": "2024-01-01T00:01:00Z"}'


def write(tmp_path: Path, *lines: str) -> Path:
    path = tmp_path / "events.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_bad_json_raise_mode(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    events = write(tmp_path, GOOD, "", '{"type": "page", oops}', GOOD2)
    out = tmp_path / "profiles.jsonl"
    assert main(["resolve", str(events), "--output", str(out)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""  # no summary
    assert f"{events}, line 3: invalid JSON" in captured.err
    assert not out.exists()
    assert list(tmp_path.iterdir()) == [events]  # no temporary file left either


def test_line_that_is_not_an_object(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    events = write(tmp_path, GOOD, "[1, 2]")
    assert main(["resolve", str(events)]) == 2
    err = capsys.readouterr().err
    assert "line 2: expected a JSON object" in err
    assert "an array" in err


def test_invalid_event_names_line_and_field(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = '{"type": "identify", "userId": [1], "timestamp": "2024-01-01T00:00:00Z"}'
    events = write(tmp_path, GOOD, GOOD2, "", bad)
    out = tmp_path / "profiles.jsonl"
    assert main(["resolve", str(events), "-o", str(out)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "line 4: userId=[1]: must be str or int" in captured.err
    assert not out.exists()


def test_naive_timestamp_shows_what_the_line_says(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    naive = {"type": "page", "anonymousId": "a", "timestamp": "2024-01-01T00:00"}
    events = write(tmp_path, json.dumps(naive))
    assert main(["resolve", str(events)]) == 2
    err = capsys.readouterr().err
    assert "line 1: timestamp='2024-01-01T00:00': no timezone: add one, e.g. Z" in err


def test_message_id_reuse_names_both_lines(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    first = '{"type": "page", "messageId": "m1", "anonymousId": "a", "timestamp": 1700000000}'
    other = '{"type": "page", "messageId": "m1", "anonymousId": "b", "timestamp": 1700000000}'
    events = write(tmp_path, first, first, other)
    assert main(["resolve", str(events)]) == 2
    err = capsys.readouterr().err
    assert "line 3: messageId='m1': already used by an event with other content (line 1)" in err


def test_skip_mode_continues_and_reports(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad_event = '{"type": "identify", "timestamp": "2024-01-01T00:00:00Z"}'
    events = write(tmp_path, GOOD, "{not json", bad_event, "", GOOD2, "42")
    out = tmp_path / "profiles.jsonl"
    rc = main(["resolve", str(events), "--on-error", "skip", "--json", "-o", str(out)])
    assert rc == 0
    captured = capsys.readouterr()
    summary = json.loads(captured.out)
    assert summary["events"] == {
        "read": 5,
        "applied": 2,
        "duplicates": 0,
        "late": 0,
        "skipped": 3,
    }
    assert [e["line"] for e in summary["skipped_lines"]] == [2, 3, 6]
    assert summary["skipped_lines"][1]["problem"].startswith("userId=None: ")
    # one stderr line per reason, not per bad line
    assert captured.err.splitlines() == [
        f"identityres: skipped 1 line of {events}: invalid JSON (line 2)",
        f"identityres: skipped 1 line of {events}: userId: identify needs a user_id, an "
        "anonymous_id or identifiers (line 3)",
        f"identityres: skipped 1 line of {events}: expected a JSON object (line 6)",
    ]
    assert [p["user_id"] for p in read_jsonl(out)] == ["u1", "a2"]


def test_skip_mode_text_summary(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    events = write(tmp_path, GOOD, "{not json")
    assert main(["resolve", str(events), "--on-error", "skip"]) == 0
    captured = capsys.readouterr()
    assert "2 read: 1 applied, 0 duplicates, 0 late (replayed), 1 skipped" in captured.out
    assert "invalid JSON (line 2)" in captured.err


def test_blank_lines_and_crlf_are_fine(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    events = tmp_path / "events.jsonl"
    events.write_bytes(b"\n\r\n" + GOOD.encode() + b"\r\n   \n" + GOOD2.encode())
    summary = run_json(capsys, str(events))
    assert summary["events"]["read"] == 2
    assert summary["profiles"] == {"total": 2, "identified": 1, "anonymous": 1}


def test_not_utf8(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    events = tmp_path / "events.jsonl"
    events.write_bytes(GOOD.encode() + b"\n\xff\xfe\n")
    assert main(["resolve", str(events)]) == 2
    assert "line 2: not valid UTF-8" in capsys.readouterr().err


def test_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["resolve", str(tmp_path / "nope.jsonl")]) == 2
    assert "cannot read" in capsys.readouterr().err


def test_unwritable_output(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    events = write(tmp_path, GOOD)
    assert main(["resolve", str(events), "-o", str(tmp_path / "no" / "such" / "dir.jsonl")]) == 2
    captured = capsys.readouterr()
    assert "cannot write" in captured.err
    assert captured.out == ""


def test_empty_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    events = tmp_path / "events.jsonl"
    events.write_text("", encoding="utf-8")
    summary = run_json(capsys, str(events))
    assert summary["events"]["read"] == 0
    assert summary["profiles"]["total"] == 0


def test_stdin(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    import io

    class Stdin:
        buffer = io.BytesIO((GOOD + "\n" + GOOD2 + "\n").encode())

    monkeypatch.setattr(sys, "stdin", Stdin)
    summary = run_json(capsys, "-")
    assert summary["input"] == "<stdin>"
    assert summary["profiles"]["total"] == 2


# -- usage ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["resolve"],
        ["frobnicate"],
        ["resolve", "x.jsonl", "--on-error", "ignore"],
        ["resolve", "x.jsonl", "--top", "-1"],
    ],
)
def test_usage_errors_exit_1(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 1
    captured = capsys.readouterr()
    assert "usage: identityres" in captured.err
    assert captured.out == ""


def test_help_and_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["resolve", "--help"]) == 0
    assert "--on-error" in capsys.readouterr().out
    assert main(["--version"]) == 0
    assert "identityres" in capsys.readouterr().out
