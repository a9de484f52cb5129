"""The operator commands of the command line: ``profile``, ``explain``, ``history``, ``forget``
and ``export``, on ``examples/journeys.jsonl`` read with ``--input`` and on an SQLite store
holding the same events.

The expectations come from examples/README.md (worked out by hand from the merge rules) and
from the definition of an accepted link (tests/test_explain_export.py).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

import identityres as ir
from identityres.cli import EXIT_BAD_INPUT, EXIT_NOT_FOUND, EXIT_OK, EXIT_USAGE, main

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "journeys.jsonl"


def _messages() -> list[dict[str, Any]]:
    return [json.loads(line) for line in EXAMPLE.read_text("utf-8").splitlines() if line]


def _sqlite_url(tmp_path: Path) -> str:
    path = tmp_path / "ids.db"
    url = f"sqlite:///{path}"
    with ir.IdentityGraph(store=url) as g:
        g.ingest(_messages())
    return url


@pytest.fixture(params=["input", "sqlite"])
def source(request: pytest.FixtureRequest, tmp_path: Path) -> list[str]:
    """The options naming the graph: the example read into memory, or an SQLite store."""
    if request.param == "input":
        return ["--input", str(EXAMPLE)]
    return ["--store", _sqlite_url(tmp_path)]


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


# -- explain -----------------------------------------------------------------------------------


def test_explain_ada_docs_visitor_and_api_token(
    capsys: pytest.CaptureFixture[str], source: list[str]
) -> None:
    # anon-a11ce0 was joined to usr_1001 by the identify msg-005 (09:08:05); the token by the
    # first API request carrying both usr_1001 and the token, msg-008 (09:31:12)
    code, out, _ = run(
        capsys, "explain", "anonymous_id:anon-a11ce0", "api_key:sk_live_4f2b9e71", *source
    )
    assert code == EXIT_OK
    assert out.splitlines() == [
        "anonymous_id:anon-a11ce0 and api_key:sk_live_4f2b9e71 are one person "
        "(profile usr_1001): 2 links",
        "  1. 2024-05-06T09:08:05Z  identify msg-005: anonymous_id:anon-a11ce0 -- user_id:usr_1001",
        "  2. 2024-05-06T09:31:12Z  track msg-008: user_id:usr_1001 -- api_key:sk_live_4f2b9e71",
    ]


def test_explain_json_and_ben_two_devices(
    capsys: pytest.CaptureFixture[str], source: list[str]
) -> None:
    # laptop --identify msg-016-- usr_1002 --identify msg-019 (late, 19:31)-- phone
    code, out, _ = run(
        capsys, "explain", "anonymous_id:anon-b3n1a9", "anonymous_id:anon-b3n2f7", "--json", *source
    )
    assert code == EXIT_OK
    data = json.loads(out)
    assert data["one_person"] is True and data["profile"] == "usr_1002"
    assert [(s["event_id"], s["etype"], s["timestamp"]) for s in data["steps"]] == [
        ("msg-016", "identify", "2024-05-06T13:04:00Z"),
        ("msg-019", "identify", "2024-05-06T19:31:00Z"),
    ]
    assert data["steps"][0]["target"] == {"kind": "user_id", "value": "usr_1002"}


def test_explain_not_one_person(capsys: pytest.CaptureFixture[str], source: list[str]) -> None:
    # Dan's identify tried to take Cleo's kiosk and was refused: not one person
    code, out, _ = run(capsys, "explain", "usr_1004", "anonymous_id:anon-c105k1", *source)
    assert code == EXIT_NOT_FOUND
    assert out == (
        "user_id:usr_1004 and anonymous_id:anon-c105k1 are not one person: "
        "profiles usr_1004 and usr_1003\n"
    )
    code, out, _ = run(capsys, "explain", "usr_1001", "usr_9999", *source)
    assert code == EXIT_NOT_FOUND
    assert out == "user_id:usr_9999 is not in the graph\n"
    code, out, _ = run(capsys, "explain", "usr_1001", "usr_1001", *source)
    assert code == EXIT_OK
    assert out == "user_id:usr_1001 is user_id:usr_1001: the same identifier (profile usr_1001)\n"


# -- profile and history -----------------------------------------------------------------------


def test_profile(capsys: pytest.CaptureFixture[str], source: list[str]) -> None:
    code, out, _ = run(capsys, "profile", "email:dan@example.org", *source)
    assert code == EXIT_OK
    lines = out.splitlines()
    assert lines[0] == "profile usr_1004 (user_id)"
    assert "    user_id  usr_1004" in lines and "    email    dan@example.org" in lines
    assert '    name   "Dan Reyes"' in lines
    code, out, _ = run(capsys, "profile", "anonymous_id:anon-c105k1", "--json", *source)
    assert code == EXIT_OK
    assert json.loads(out)["identifiers"] == {
        "anonymous_id": ["anon-c105k1"],
        "email": ["cleo@example.org"],
        "user_id": ["usr_1003"],
    }
    code, out, _ = run(capsys, "profile", "anonymous_id:undefined", *source)
    assert code == EXIT_NOT_FOUND
    assert out == (
        "anonymous_id:undefined is a blocked value (blocked_value): it belongs to no profile\n"
    )


def test_history_of_the_shared_kiosk(capsys: pytest.CaptureFixture[str], source: list[str]) -> None:
    code, out, _ = run(capsys, "history", "anonymous_id:anon-c105k1", *source)
    assert code == EXIT_OK
    assert out.splitlines() == [
        "history of profile usr_1003 "
        "(user_id:usr_1003, email:cleo@example.org, anonymous_id:anon-c105k1)",
        "2024-05-06T10:03:00Z  identify msg-024: joined email:cleo@example.org, "
        "anonymous_id:anon-c105k1 to user_id:usr_1003",
        "2024-05-06T10:20:00Z  track msg-025: anonymous_id:anon-c105k1 already with "
        "user_id:usr_1003",
        "2024-05-06T15:02:00Z  identify msg-027: joined email:dan@example.org to "
        "user_id:usr_1004; refused anonymous_id:anon-c105k1 for user_id:usr_1004 "
        "(limit_exceeded, user_id)",
        "2024-05-06T15:05:00Z  track msg-028: refused anonymous_id:anon-c105k1 for "
        "user_id:usr_1004 (limit_exceeded, user_id)",
    ]


def test_history_with_a_reset_as_json(
    capsys: pytest.CaptureFixture[str], source: list[str]
) -> None:
    code, out, _ = run(capsys, "history", "usr_1005", "--json", *source)
    assert code == EXIT_OK
    data = json.loads(out)
    assert data["profile"] == "usr_1005"
    assert [(d["event_id"], d["etype"]) for d in data["decisions"]] == [
        ("msg-030", "identify"),
        ("msg-032", "track"),
        ("msg-033", "reset"),
        ("msg-036", "track"),
    ]
    assert data["decisions"][2]["anchor"] == {"kind": "anonymous_id", "value": "anon-1ab001"}
    assert data["decisions"][3]["refused"] == [
        {
            "identifier": {"kind": "anonymous_id", "value": "anon-1ab001"},
            "reason": "anonymous_id_reset",
            "kind": None,
        }
    ]


# -- export ------------------------------------------------------------------------------------


def test_export_mermaid_of_the_kiosk_profile(
    capsys: pytest.CaptureFixture[str], source: list[str]
) -> None:
    code, out, _ = run(capsys, "export", "--format", "mermaid", "--profile", "usr_1003", *source)
    assert code == EXIT_OK
    assert out.splitlines() == [
        "flowchart LR",
        "  %% identity graph of profile usr_1003",
        '  n0["user_id:usr_1003"]',
        '  n1["email:cleo@example.org"]',
        '  n2["anonymous_id:anon-c105k1"]',
        '  n3["user_id:usr_1004"]',
        '  n0 ---|"identify msg-024"| n1',
        '  n0 ---|"identify msg-024 (+1 more)"| n2',
        '  n3 -.-|"refused limit_exceeded (user_id): identify msg-027 (+1 more)"| n2',
        "  classDef canonical stroke-width:3px",
        "  class n0 canonical",
        "  classDef outside stroke-dasharray:4 3,color:#666",
        "  class n3 outside",
        "  linkStyle 2 stroke:#d00,color:#d00",
    ]


def test_export_jsonl_of_the_whole_graph(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], source: list[str]
) -> None:
    out_file = tmp_path / "graph.jsonl"
    code, out, _ = run(capsys, "export", "--format", "jsonl", "-o", str(out_file), *source)
    assert code == EXIT_OK
    assert out == f"wrote the whole graph as jsonl to {out_file}\n"
    records = [json.loads(line) for line in out_file.read_text("utf-8").splitlines()]
    nodes = [r for r in records if r["type"] == "node"]
    edges = [r for r in records if r["type"] == "edge"]
    assert len(nodes) == 23  # the README's identifiers
    # one edge per (anchor, member) pair of each link event: Ada 6 (msg-005 x2, 006, 007,
    # 008, 009), Ben 6 (016 x2, 017, 019, 020, 022), kiosk 6 (024 x2, 025, 027 x2, 028),
    # lab 7 (030 x2, 032, 035 x2, 036, 037), Gina 3 (040 x2, 041)
    assert len(edges) == 28
    assert sorted((e["event_id"], e["target"]) for e in edges if not e["accepted"]) == [
        ("msg-027", "anonymous_id:anon-c105k1"),
        ("msg-028", "anonymous_id:anon-c105k1"),
        ("msg-036", "anonymous_id:anon-1ab001"),
    ]


def test_export_dot_and_graphml(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], source: list[str]
) -> None:
    code, out, _ = run(capsys, "export", "--format", "dot", "--profile", "usr_1005", *source)
    assert code == EXIT_OK
    assert '  n2 [label="anonymous_id:anon-1ab001"];' in out.splitlines()
    assert 'label="refused anonymous_id_reset: track msg-036", style=dashed, color=red' in out
    nx = pytest.importorskip("networkx")
    path = tmp_path / "g.graphml"
    code, out, _ = run(
        capsys, "export", "--format", "graphml", "--profile", "usr_1001", "-o", str(path), *source
    )
    assert code == EXIT_OK
    g = nx.read_graphml(path)
    assert set(g.nodes) == {
        "user_id:usr_1001",
        "email:ada@acme.io",
        "api_key:sk_live_4f2b9e71",
        "anonymous_id:anon-a11ce0",
    }
    assert g.number_of_edges() == 6
    assert g.nodes["user_id:usr_1001"]["first_seen"] == "2024-05-06T09:08:05Z"


# -- forget ------------------------------------------------------------------------------------


def test_forget_on_a_store(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = _sqlite_url(tmp_path)
    code, out, _ = run(
        capsys,
        "forget",
        "usr_1001",
        "--store",
        url,
        "--timestamp",
        "2024-05-09T00:00:00Z",
        "--event-id",
        "gdpr-1",
    )
    assert code == EXIT_OK
    # msg-005 carried the email and the anonymous id too: they stay together; the token was
    # joined only through usr_1001 (msg-008/009) and falls apart
    assert out.splitlines() == [
        "forgot user_id:usr_1001 (event gdpr-1): its links, traits and company links are "
        "erased; only a keyed hash of it is kept, on the suppression list",
        "what was profile usr_1001 is now:",
        "  ada@acme.io: email:ada@acme.io, anonymous_id:anon-a11ce0",
        "  sk_live_4f2b9e71: api_key:sk_live_4f2b9e71",
    ]
    code, out, _ = run(capsys, "profile", "usr_1001", "--store", url)
    assert (code, out) == (EXIT_NOT_FOUND, "user_id:usr_1001 is not in the graph\n")
    code, out, _ = run(capsys, "history", "anonymous_id:anon-a11ce0", "--store", url)
    assert code == EXIT_OK
    assert "2024-05-09T00:00:00Z  forget gdpr-1: an identifier of kind user_id was erased" in out
    assert "usr_1001" not in out
    # the same erasure again is a duplicate; an unknown identifier is only suppressed
    code, out, _ = run(
        capsys,
        "forget",
        "usr_1001",
        "--store",
        url,
        "--timestamp",
        "2024-05-09T00:00:00Z",
        "--event-id",
        "gdpr-1",
    )
    assert (code, out) == (EXIT_OK, "user_id:usr_1001: erasure gdpr-1 was already applied\n")
    code, out, _ = run(capsys, "forget", "email:nobody@x.io", "--store", url)
    assert code == EXIT_OK and "was not in the graph" in out and "suppression list" in out


# -- usage and bad input -----------------------------------------------------------------------


def test_usage_errors(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "forget", "usr_1001", "--input", str(EXAMPLE))
    assert code == EXIT_USAGE and "forget erases from a store: give --store URL" in err
    code, _, err = run(capsys, "forget", "usr_1001")
    assert code == EXIT_USAGE and "forget needs --store URL" in err
    code, _, err = run(capsys, "profile", "usr_1001")  # neither --store nor --input
    assert code == EXIT_USAGE and "one of the arguments --store --input is required" in err
    code, _, err = run(capsys, "profile", "emial:a@b.c", "--input", str(EXAMPLE))
    assert code == EXIT_USAGE
    assert "unknown identifier kind 'emial'" in err and "user_id:emial:a@b.c" in err
    code, _, err = run(capsys, "export", "--input", str(EXAMPLE))
    assert code == EXIT_USAGE and "--format" in err


def test_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "missing.db"
    code, _, err = run(capsys, "profile", "u1", "--store", f"sqlite:///{missing}")
    assert code == EXIT_BAD_INPUT and "does not exist" in err
    assert not missing.exists()  # not created by looking
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"type": "identify", "userId": "u1", "anonymousId": "a1"}\nnot json\n')
    code, _, err = run(capsys, "history", "u1", "--input", str(bad))
    assert code == EXIT_BAD_INPUT and "line 2: invalid JSON" in err
    code, out, err = run(capsys, "history", "u1", "--input", str(bad), "--on-error", "skip")
    assert code == EXIT_OK and "skipped" in err
    assert "joined anonymous_id:a1 to user_id:u1" in out
    code, _, err = run(capsys, "profile", "u1", "--store", "nosuch://x")
    assert code == EXIT_BAD_INPUT and "cannot open store nosuch://x" in err


def test_colons_in_user_ids(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    events = tmp_path / "e.jsonl"
    lines = [
        {"type": "identify", "userId": "auth0|42:x", "anonymousId": "a1", "timestamp": 1},
        {"type": "identify", "userId": "urn:u:7", "anonymousId": "a2", "timestamp": 2},
    ]
    events.write_text("".join(json.dumps(x) + "\n" for x in lines))
    # not a kind before the ':' -> the whole text is a user id
    code, out, _ = run(capsys, "profile", "auth0|42:x", "--input", str(events))
    assert code == EXIT_OK and out.startswith("profile auth0|42:x (user_id)")
    code, out, _ = run(capsys, "profile", "user_id:urn:u:7", "--input", str(events))
    assert code == EXIT_OK and out.startswith("profile urn:u:7 (user_id)")


def test_hostile_values_are_shown_escaped(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    events = tmp_path / "e.jsonl"
    evil = "evil\x1b[31m\nline"
    lines = [{"type": "identify", "userId": evil, "anonymousId": "a1", "timestamp": 1}]
    events.write_text("".join(json.dumps(x) + "\n" for x in lines))
    code, out, _ = run(capsys, "history", "anonymous_id:a1", "--input", str(events))
    assert code == EXIT_OK
    assert "\x1b" not in out and out.count("\n") == 2  # the header and one decision
    assert "to user_id:'evil\\x1b[31m\\nline'" in out
    code, out, _ = run(capsys, "explain", "anonymous_id:a1", "nobody", "--input", str(events))
    assert code == EXIT_NOT_FOUND and out == "user_id:nobody is not in the graph\n"
