"""``identityres resolve`` as the main job (docs/operator-tools.md, The command line): a store it
creates or extends, a TOML rules file, gzip and standard input, bad lines grouped by reason with
``--max-errors``, the progress bar, the summary's format and truncated lists."""

from __future__ import annotations

import gzip
import io
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from identityres import cli
from identityres.cli import main

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "journeys.jsonl"


def lines(*messages: Any) -> str:
    return "".join((m if isinstance(m, str) else json.dumps(m)) + "\n" for m in messages)


def track(i: int, **keys: Any) -> dict[str, Any]:
    return {"type": "track", "event": "X", "messageId": f"m{i}", "timestamp": i, **keys}


def summary_of(capsys: pytest.CaptureFixture[str], *args: str, code: int = 0) -> dict[str, Any]:
    assert main(["resolve", *args, "--json"]) == code
    data: dict[str, Any] = json.loads(capsys.readouterr().out)
    return data


def test_store_is_created_then_extended_and_read_by_the_operator_commands(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"sqlite:///{tmp_path / 'ids.db'}"
    first = summary_of(capsys, str(EXAMPLE), "--store", url)
    assert first["store"] == url and first["profiles"]["total"] == 8
    more = tmp_path / "more.jsonl"
    more.write_text(lines(track(1, userId="usr_1001", anonymousId="anon-new")), encoding="utf-8")
    second = summary_of(capsys, str(more), "--store", url)
    assert second["profiles"]["total"] == 8 and second["identifiers"]["total"] == 24
    assert main(["profile", "email:ada@acme.io", "--store", url, "--json"]) == 0
    ada = json.loads(capsys.readouterr().out)
    assert "anon-new" in ada["identifiers"]["anonymous_id"]


def test_rules_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rules = tmp_path / "rules.toml"
    rules.write_text(
        """
kinds = ["email", "ios_id"]
blocked_values = ["test-user"]

[limits]
user_id = "none"

[normalizers]
email = "identityres.normalize_email"

[[extraction]]
kind = "email"
path = "traits.work_email"
types = ["identify"]

[[extraction]]
kind = "ios_id"
path = "context.device.id"
when = { "context.device.type" = ["ios", "ipados"] }
""",
        encoding="utf-8",
    )
    events = tmp_path / "e.jsonl"
    events.write_text(
        lines(
            {"type": "identify", "userId": "u1", "traits": {"work_email": "A@X.io"},
             "context": {"device": {"id": "IOS-1", "type": "ipados"}}, "timestamp": 1},
            {"type": "identify", "userId": "u2", "traits": {"work_email": "a@x.io"},
             "timestamp": 2},
        ),
        encoding="utf-8",
    )  # fmt: skip
    s = summary_of(capsys, str(events), "--rules", str(rules))
    # the user_id limit lifted: both users, joined by one (normalized) email
    assert s["profiles"]["total"] == 1
    assert s["identifiers"]["by_kind"] == {"user_id": 2, "email": 1, "ios_id": 1}
    assert [r[0] for r in s["extraction"]] == ["email", "ios_id"]


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("kinds = ['email']\nlimit = 3\n", "unknown option 'limit'"),
        ("[limits]\nemail = 0\n", "limits['email']=0"),
        ("[[extraction]]\nkind = 'fax'\npath = 'traits.fax'\n", "extraction[0].kind='fax'"),
        ("kinds = [", "not valid TOML"),
        ("[normalizers]\nemail = 'nowhere.fn'\n", "normalizers['email']='nowhere.fn'"),
    ],
)
def test_bad_rules_files_name_the_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, words: str
) -> None:
    rules = tmp_path / "rules.toml"
    rules.write_text(text, encoding="utf-8")
    assert main(["resolve", str(EXAMPLE), "--rules", str(rules)]) == 2
    err = capsys.readouterr().err
    assert words in err and "rules.toml" in err


def test_gzip_files_and_standard_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    packed = tmp_path / "journeys.jsonl.gz"
    packed.write_bytes(gzip.compress(EXAMPLE.read_bytes()))
    assert summary_of(capsys, str(packed))["profiles"]["total"] == 8
    done = subprocess.run(
        [sys.executable, "-m", "identityres", "resolve", "-", "--json"],
        input=gzip.compress(EXAMPLE.read_bytes()),
        capture_output=True,
        check=True,
        timeout=60,
    )
    assert json.loads(done.stdout)["profiles"]["total"] == 8


def test_bad_lines_are_grouped_by_reason(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    events = tmp_path / "e.jsonl"
    events.write_text(
        lines(track(0, userId="u0"), *[{"foo": i} for i in range(30)], "{oops"), encoding="utf-8"
    )
    assert main(["resolve", str(events), "--on-error", "skip", "--json"]) == 0
    captured = capsys.readouterr()
    err = captured.err.splitlines()
    assert len(err) == 2
    assert err[0].startswith(f"identityres: skipped 30 lines of {events}: message: no format")
    assert err[0].endswith("(lines 2, 3, 4, 5, 6, ... (25 more))")
    assert err[1].endswith("invalid JSON (line 32)")
    s = json.loads(captured.out)
    assert [(g["count"], g["lines"][0]) for g in s["skipped_by_reason"]] == [(30, 2), (1, 32)]


def test_max_errors_stops_and_nothing_good_is_an_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    events = tmp_path / "e.jsonl"
    events.write_text(lines(*[{"foo": i} for i in range(50)]), encoding="utf-8")
    assert main(["resolve", str(events), "--on-error", "skip", "--max-errors", "5"]) == 2
    captured = capsys.readouterr()
    assert "more than 5 bad lines (--max-errors); stopped at line 6" in captured.err
    assert captured.out == ""
    assert main(["resolve", str(events), "--on-error", "skip"]) == 2
    assert "no line of" in capsys.readouterr().err
    assert main(["resolve", str(events), "--max-errors", "x"]) == 1


def test_summary_says_the_format_and_extraction_and_truncates_members(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    events = tmp_path / "e.jsonl"
    group = [
        {"type": "group", "groupId": "big", "userId": f"u{i:02}", "timestamp": i,
         "messageId": f"g{i}"}
        for i in range(15)
    ]  # fmt: skip
    events.write_text(
        lines(*group, {"event": "x", "distinct_id": "u00", "uuid": "p1"}), encoding="utf-8"
    )
    assert main(["resolve", str(events)]) == 0
    out = capsys.readouterr().out
    assert "format       auto (segment 15, posthog 1)" in out
    assert "extraction   the default rules (docs/formats.md)" in out
    assert "big  15 profiles: u00, u01, u02, u03, u04, u05, u06, u07, u08, u09, ... 5 more" in out
    s = summary_of(capsys, str(events), "--format", "auto")
    assert (
        s["formats_read"] == {"segment": 15, "posthog": 1}
        and len(s["companies"][0]["profiles"]) == 15
    )


def test_progress_bar_only_on_a_terminal(tmp_path: Path) -> None:
    pytest.importorskip("tqdm")  # the ``cli`` extra; the command works without it

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    assert cli._progress_bar(str(EXAMPLE), io.StringIO()) is None
    screen = Terminal()
    bar = cli._progress_bar(str(EXAMPLE), screen)
    assert bar is not None and bar.total == EXAMPLE.stat().st_size
    bar.update(10)
    bar.close()
    assert "reading" in screen.getvalue()


def test_piped_runs_print_no_progress(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["resolve", str(EXAMPLE)]) == 0
    assert capsys.readouterr().err == ""


def test_timestamps_in_the_users_words(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = f"sqlite:///{tmp_path / 'ids.db'}"
    assert main(["resolve", str(EXAMPLE), "--store", url, "--json"]) == 0
    capsys.readouterr()
    code = main(["forget", "usr_1001", "--store", url, "--timestamp", "2024-05-09T00:00:00"])
    assert code == 1
    assert "add one, e.g. Z for UTC" in capsys.readouterr().err
    assert main(["forget", "usr_1001", "--store", url, "--timestamp", "May 9"]) == 1
    assert "give ISO-8601 with a timezone" in capsys.readouterr().err


def test_a_store_run_reports_what_a_memory_run_does(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cli, "_CHUNK", 7)  # several batches, one line of a pair in each
    memory = summary_of(capsys, str(EXAMPLE))
    stored = summary_of(capsys, str(EXAMPLE), "--store", f"sqlite:///{tmp_path / 'ids.db'}")
    for key in ("identifiers", "profiles", "joins", "refusals", "blocked_values", "companies"):
        assert stored[key] == memory[key], key
    assert stored["duplicate_lines"] == [{"line": 42, "first_line": 8}]
    assert stored["events"]["applied"] == 45 and stored["events"]["duplicates"] == 1


def test_raise_mode_on_a_store_keeps_the_batches_before_the_bad_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cli, "_CHUNK", 2)
    url = f"sqlite:///{tmp_path / 'ids.db'}"
    events = tmp_path / "e.jsonl"
    events.write_text(
        lines(track(1, userId="u1"), track(2, userId="u2"), track(3, userId="u3"), {"type": "x"}),
        encoding="utf-8",
    )
    assert main(["resolve", str(events), "--store", url]) == 2
    assert "line 4: type='x'" in capsys.readouterr().err
    assert main(["profile", "u2", "--store", url]) == 0
    assert main(["profile", "u3", "--store", url]) == 3  # in the bad line's batch
