"""Hardening of the command line: ``-o`` never overwrites the command's own input or the
store's files and fails before the work when it cannot be written; every text output escapes
control characters, bidirectional overrides and lone surrogates; bad stored data gives a
one-line error with exit status 2, never a traceback."""

from __future__ import annotations

import importlib.util
import io
import json
import os
import sqlite3
from pathlib import Path
from typing import Any

import pytest

import identityres as ir
from identityres.cli import EXIT_BAD_INPUT, EXIT_NOT_FOUND, EXIT_OK, EXIT_USAGE, main

ESC = "\x1b[31m"
CR = "\r"
BIDI = "\u202e"
SURROGATE = "\ud800"
#: characters that must never reach a terminal raw
RAW = (ESC, "\x1b", CR, BIDI, SURROGATE)


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_clean(*texts: str) -> None:
    for text in texts:
        for raw in RAW:
            assert raw not in text, (raw, text)


def write_events(path: Path, messages: list[dict[str, Any]]) -> Path:
    # json.dumps escapes everything (lone surrogates too): the file is plain ASCII
    path.write_text("".join(json.dumps(m) + "\n" for m in messages), encoding="utf-8")
    return path


SIMPLE = [
    {
        "type": "identify",
        "userId": "u1",
        "anonymousId": "a1",
        "traits": {"name": "Ada"},
        "messageId": "m1",
        "timestamp": "2024-01-01T00:00:00Z",
    },
    {
        "type": "identify",
        "userId": "u2",
        "anonymousId": "a2",
        "messageId": "m2",
        "timestamp": "2024-01-01T00:00:01Z",
    },
]


def make_store(tmp_path: Path, messages: list[dict[str, Any]] = SIMPLE) -> tuple[Path, str]:
    path = tmp_path / "ids.db"
    url = f"sqlite:///{path}"
    with ir.IdentityGraph(store=url) as g:
        g.ingest(messages)
    return path, url


def profiles_of(url: str) -> list[ir.Profile]:
    with ir.IdentityGraph(store=url) as g:
        return sorted(g.profiles(), key=lambda p: p.user_id)


# -- -o never overwrites the input or the store ------------------------------------------------


@pytest.mark.parametrize("suffix", ["", "-wal", "-shm", "-journal"])
def test_export_refuses_to_overwrite_the_store(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, suffix: str
) -> None:
    db, url = make_store(tmp_path)
    before = profiles_of(url)
    size = db.stat().st_size
    target = str(db) + suffix
    code, out, err = run(capsys, "export", "--format", "jsonl", "--store", url, "-o", target)
    assert code == EXIT_BAD_INPUT
    assert out == ""
    assert "refusing to overwrite" in err and err.count("\n") == 1
    assert db.stat().st_size == size
    assert profiles_of(url) == before


def test_export_refuses_the_store_under_another_name(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db, url = make_store(tmp_path)
    before = profiles_of(url)
    link = tmp_path / "link.db"
    link.symlink_to(db)
    hard = tmp_path / "hard.db"
    os.link(db, hard)
    monkeypatch.chdir(tmp_path)
    for target in ("ids.db", "./ids.db", str(link), str(hard), "sub/../ids.db"):
        (tmp_path / "sub").mkdir(exist_ok=True)
        code, _, err = run(capsys, "export", "--format", "dot", "--store", url, "-o", target)
        assert code == EXIT_BAD_INPUT, target
        assert "refusing to overwrite" in err
    # the store named through the symlink, the output by its real name
    code, _, err = run(
        capsys, "export", "--format", "dot", "--store", f"sqlite:///{link}", "-o", str(db)
    )
    assert code == EXIT_BAD_INPUT and "refusing to overwrite" in err
    assert link.is_symlink()
    assert profiles_of(url) == before


def test_resolve_refuses_to_overwrite_its_events_file(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    events = write_events(tmp_path / "events.jsonl", SIMPLE)
    content = events.read_bytes()
    monkeypatch.chdir(tmp_path)
    for target in (str(events), "events.jsonl", "./events.jsonl"):
        code, out, err = run(capsys, "resolve", "events.jsonl", "-o", target)
        assert code == EXIT_BAD_INPUT
        assert out == "" and "refusing to overwrite" in err and "events file" in err
        assert events.read_bytes() == content


def test_export_refuses_to_overwrite_its_input(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    events = write_events(tmp_path / "events.jsonl", SIMPLE)
    content = events.read_bytes()
    code, out, err = run(
        capsys, "export", "--format", "jsonl", "--input", str(events), "-o", str(events)
    )
    assert code == EXIT_BAD_INPUT and out == "" and "refusing to overwrite" in err
    assert events.read_bytes() == content


def test_other_outputs_still_work(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    _, url = make_store(tmp_path)
    out_file = tmp_path / "ids.db.jsonl"  # a name that starts like the store's
    code, _, _ = run(capsys, "export", "--format", "jsonl", "--store", url, "-o", str(out_file))
    assert code == EXIT_OK and out_file.read_text().count("\n") > 0
    events = write_events(tmp_path / "events.jsonl", SIMPLE)
    profiles = tmp_path / "profiles.jsonl"
    code, _, _ = run(capsys, "resolve", str(events), "-o", str(profiles))
    assert code == EXIT_OK and len(profiles.read_text().splitlines()) == 2
    # writing the same output twice replaces it
    code, _, _ = run(capsys, "resolve", str(events), "-o", str(profiles))
    assert code == EXIT_OK and len(profiles.read_text().splitlines()) == 2


# -- an unwritable -o fails before the work ----------------------------------------------------


def test_resolve_output_in_a_missing_directory_fails_first(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    # the events file has a bad line: had the command read it first, it would report that line
    events = tmp_path / "events.jsonl"
    events.write_text('{"type": "identify", "userId": "u1"}\nnot json\n', encoding="utf-8")
    target = tmp_path / "no" / "such" / "p.jsonl"
    code, out, err = run(capsys, "resolve", str(events), "-o", str(target))
    assert code == EXIT_BAD_INPUT and out == ""
    assert "cannot write" in err and "does not exist" in err and "line 2" not in err
    assert err.count("\n") == 1
    assert not (tmp_path / "no").exists()


def test_export_output_in_a_missing_directory_fails_before_the_store_is_read(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    # a store that does not exist: had the command opened it first, it would report that
    url = f"sqlite:///{tmp_path / 'missing.db'}"
    target = tmp_path / "no" / "graph.dot"
    code, out, err = run(capsys, "export", "--format", "dot", "--store", url, "-o", str(target))
    assert code == EXIT_BAD_INPUT and out == ""
    assert "cannot write" in err and "does not exist" in err and "store" not in err
    assert os.listdir(tmp_path) == []


def test_output_that_is_a_directory_fails_first(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    events = tmp_path / "events.jsonl"
    events.write_text("not json\n", encoding="utf-8")
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    code, _, err = run(capsys, "resolve", str(events), "-o", str(out_dir))
    assert code == EXIT_BAD_INPUT and "is a directory" in err and "line 1" not in err
    code, _, err = run(
        capsys, "export", "--format", "dot", "--input", str(events), "-o", str(out_dir)
    )
    assert code == EXIT_BAD_INPUT and "is a directory" in err and "line 1" not in err
    assert sorted(os.listdir(tmp_path)) == ["events.jsonl", "out"]
    assert os.listdir(out_dir) == []


def test_output_under_a_file_fails_first(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    events = tmp_path / "events.jsonl"
    events.write_text("not json\n", encoding="utf-8")
    code, _, err = run(capsys, "resolve", str(events), "-o", str(events / "p.jsonl"))
    assert code == EXIT_BAD_INPUT and "cannot write" in err and "line 1" not in err


def test_output_in_a_read_only_directory_fails_first(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    events = tmp_path / "events.jsonl"
    events.write_text("not json\n", encoding="utf-8")
    if os.geteuid() == 0:
        # root writes into any mode-0500 directory; sysfs refuses new files even to root
        code, _, err = run(capsys, "resolve", str(events), "-o", "/sys/identityres-p.jsonl")
        assert code == EXIT_BAD_INPUT and "cannot write" in err and "line 1" not in err
        assert not os.path.exists("/sys/identityres-p.jsonl")
        return
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        code, _, err = run(capsys, "resolve", str(events), "-o", str(locked / "p.jsonl"))
    finally:
        locked.chmod(0o700)
    assert code == EXIT_BAD_INPUT and "cannot write" in err and "line 1" not in err
    assert os.listdir(locked) == []


# -- hostile values are escaped in every text output -------------------------------------------

USER = f"u{ESC}x{CR}y{BIDI}z"
ANON = f"a{BIDI}1"
COMPANY = f"c{ESC}{CR}{BIDI}1"
EVENT = f"m{ESC}1"


def hostile(name: str) -> list[dict[str, Any]]:
    """Messages whose canonical id, anonymous id, company id, company name and event id hold
    hostile characters; ``name`` is the company's name."""
    return [
        {
            "type": "identify",
            "userId": USER,
            "anonymousId": ANON,
            "traits": {"plan": f"p{BIDI}"},
            "messageId": EVENT,
            "timestamp": "2024-01-01T00:00:00Z",
        },
        {
            "type": "group",
            "userId": USER,
            "groupId": COMPANY,
            "traits": {"name": name},
            "messageId": "m2",
            "timestamp": "2024-01-01T00:00:01Z",
        },
        # a refusal: anon-r is first joined to v1, then a second user id is refused for it
        {
            "type": "identify",
            "userId": "v1",
            "anonymousId": f"r{ESC}",
            "messageId": f"m3{CR}",
            "timestamp": "2024-01-01T00:00:02Z",
        },
        {
            "type": "reset",
            "anonymousId": f"r{ESC}",
            "messageId": "m4",
            "timestamp": "2024-01-01T00:00:03Z",
        },
        {
            "type": "track",
            "userId": "v2",
            "anonymousId": f"r{ESC}",
            "event": "x",
            "messageId": f"m5{BIDI}",
            "timestamp": "2024-01-01T00:00:04Z",
        },
    ]


@pytest.mark.parametrize("name", [f"N{ESC}{CR}{BIDI}", f"N{ESC}\u2028x"])
def test_resolve_summary_escapes(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, name: str
) -> None:
    events = write_events(tmp_path / "events.jsonl", hostile(name))
    code, out, err = run(capsys, "resolve", str(events))
    assert code == EXIT_OK, err
    assert_clean(out, err)
    assert repr(COMPANY) in out  # the company id
    assert repr(name) in out  # its name
    assert f"1 profile: {USER!r}" in out  # its members
    assert f"  {USER!r}  2 identifiers" in out  # the largest profiles
    assert f"{'m5' + BIDI!r}: anonymous_id" in out or "line 5: anonymous_id" in out


@pytest.mark.parametrize("name", [f"N{ESC}{CR}{BIDI}", f"N{ESC}\u2028x"])
def test_resolve_json_is_ascii_and_exact(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, name: str
) -> None:
    events = write_events(tmp_path / "events.jsonl", hostile(name))
    profiles = tmp_path / "profiles.jsonl"
    code, out, err = run(capsys, "resolve", str(events), "--json", "-o", str(profiles))
    assert code == EXIT_OK, err
    assert_clean(out, err)
    data = json.loads(out)
    assert data["companies"][0]["company_id"] == COMPANY
    assert data["companies"][0]["traits"]["name"] == name
    text = profiles.read_text("utf-8")
    assert_clean(text)
    rows = [json.loads(line) for line in text.splitlines()]
    assert [r["company_ids"] for r in rows if r["user_id"] == USER] == [[COMPANY]]


def test_skipped_lines_and_file_names_are_escaped(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    events = tmp_path / f"ev{ESC}il{BIDI}.jsonl"
    events.write_text(
        json.dumps(SIMPLE[0])
        + "\n"
        + f'{{"type": "identify", "userId": 7{ESC}}}\n'
        + json.dumps({"type": "identify", "userId": f"x{ESC}", "timestamp": "nope"})
        + "\n",
        encoding="utf-8",
    )
    code, out, err = run(capsys, "resolve", str(events), "--on-error", "skip")
    assert code == EXIT_OK
    assert_clean(out, err)
    assert "line 2" in err and "line 3" in err
    code, out, err = run(capsys, "resolve", str(events))
    assert code == EXIT_BAD_INPUT and out == ""
    assert_clean(err)
    assert err.count("\n") == 1
    code, out, err = run(capsys, "resolve", str(tmp_path / f"gone{ESC}.jsonl"))
    assert code == EXIT_BAD_INPUT and "cannot read" in err
    assert_clean(err)


@pytest.fixture(params=["input", "sqlite"])
def hostile_source(request: pytest.FixtureRequest, tmp_path: Path) -> list[str]:
    """A graph with hostile values: read into memory or from an SQLite store."""
    if request.param == "input":
        events = write_events(tmp_path / "events.jsonl", hostile(f"N{ESC}{CR}{BIDI}"))
        return ["--input", str(events)]
    _, url = make_store(tmp_path, hostile(f"N{ESC}{CR}{BIDI}"))
    return ["--store", url]


def test_profile_escapes(capsys: pytest.CaptureFixture[str], hostile_source: list[str]) -> None:
    code, out, err = run(capsys, "profile", f"anonymous_id:{ANON}", *hostile_source)
    assert code == EXIT_OK, err
    assert_clean(out, err)
    assert out.startswith(f"profile {USER!r} (user_id)\n")
    assert f"companies    {COMPANY!r} (latest: {COMPANY!r})" in out
    code, out, err = run(capsys, "profile", f"anonymous_id:{ANON}", "--json", *hostile_source)
    assert code == EXIT_OK
    assert_clean(out, err)
    assert json.loads(out)["company_ids"] == [COMPANY]


def test_explain_and_history_escape(
    capsys: pytest.CaptureFixture[str], hostile_source: list[str]
) -> None:
    code, out, err = run(capsys, "explain", f"anonymous_id:{ANON}", USER, *hostile_source)
    assert code == EXIT_OK, err
    assert_clean(out, err)
    assert f"identify {EVENT!r}" in out
    code, out, err = run(capsys, "explain", f"anonymous_id:{ANON}", "v2", *hostile_source)
    assert code == EXIT_NOT_FOUND
    assert_clean(out, err)
    assert f"profiles {USER!r} and v2" in out
    code, out, err = run(capsys, "history", f"anonymous_id:r{ESC}", *hostile_source)
    assert code == EXIT_OK, err
    assert_clean(out, err)
    for mode in ("--json",):
        for command in (["explain", f"anonymous_id:{ANON}", USER], ["history", USER]):
            code, out, err = run(capsys, *command, mode, *hostile_source)
            assert code == EXIT_OK
            assert_clean(out, err)
            json.loads(out)


def test_export_escapes(
    capsys: pytest.CaptureFixture[str], hostile_source: list[str], tmp_path: Path
) -> None:
    formats = ["dot", "mermaid", "jsonl"]
    if importlib.util.find_spec("networkx") is not None:
        formats.append("graphml")
    for fmt in formats:
        code, out, err = run(capsys, "export", "--format", fmt, *hostile_source)
        assert code == EXIT_OK, err
        assert_clean(out, err)
    target = tmp_path / f"g{ESC}{BIDI}.jsonl"
    code, out, err = run(capsys, "export", "--format", "jsonl", *hostile_source, "-o", str(target))
    assert code == EXIT_OK, err
    assert_clean(out, err, target.read_text("utf-8"))
    assert repr(str(target)) in out
    records = [json.loads(line) for line in target.read_text("utf-8").splitlines()]
    assert any(r.get("value") == USER for r in records)


def test_identifiers_in_error_messages_are_escaped(
    capsys: pytest.CaptureFixture[str], hostile_source: list[str]
) -> None:
    code, out, err = run(capsys, "profile", f"nokind:x{ESC}{BIDI}", *hostile_source)
    assert code == EXIT_USAGE
    assert_clean(out, err)
    code, out, err = run(capsys, "profile", f"email:{ESC}", *hostile_source)
    assert_clean(out, err)
    code, out, err = run(capsys, "profile", f"nobody{ESC}{BIDI}", *hostile_source)
    assert code == EXIT_NOT_FOUND
    assert_clean(out, err)
    code, out, err = run(
        capsys, "export", "--format", "dot", "--profile", f"n{CR}", *hostile_source
    )
    assert code == EXIT_NOT_FOUND
    assert_clean(out, err)


def test_a_store_url_in_an_error_is_escaped(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code, out, err = run(capsys, "profile", "u1", "--store", f"sqlite:///{tmp_path}/x{ESC}.db")
    assert code == EXIT_BAD_INPUT
    assert_clean(out, err)
    assert err.count("\n") == 1


def test_lone_surrogates_from_the_command_line_are_escaped(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    # The library refuses lone surrogates in events; the command line still meets them: a
    # file name or an argument that is not UTF-8 reaches Python as one (surrogateescape).
    name = os.fsdecode(b"ev\xff.jsonl")
    events = write_events(tmp_path / name, SIMPLE)
    target = tmp_path / os.fsdecode(b"p\xfe.jsonl")
    for args in (
        ["resolve", str(events)],
        ["resolve", str(events), "--json"],
        ["resolve", str(events), "-o", str(target)],
        ["resolve", str(tmp_path / os.fsdecode(b"gone\xff"))],
        ["resolve", str(events), "-o", str(tmp_path / os.fsdecode(b"no\xff") / "p.jsonl")],
        ["profile", f"u{SURROGATE}", "--input", str(events)],
        ["profile", f"email:{SURROGATE}", "--input", str(events)],
        ["profile", f"nokind:{SURROGATE}", "--input", str(events)],
        ["explain", "u1", f"anonymous_id:{SURROGATE}", "--input", str(events)],
        ["export", "--format", "dot", "--input", str(events), "-o", str(target)],
        ["export", "--format", "dot", "--input", str(events), "--profile", f"\udcff{ESC}"],
        ["profile", "u1", "--store", f"sqlite:///{tmp_path}/x\udcff.db"],
    ):
        _, out, err = run(capsys, *args)
        assert "Traceback" not in err, args
        assert_clean(out, err)
        assert "\udcff" not in out + err, args
    assert target.exists()


def test_output_that_cannot_be_encoded_is_an_error(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a terminal that cannot show the (printable) name: an error, not a traceback
    events = write_events(
        tmp_path / "events.jsonl",
        [{"type": "identify", "userId": "u\u00e9\u4e2d", "messageId": "m1", "timestamp": 1}],
    )
    capsys.readouterr()
    buffer = io.BytesIO()
    monkeypatch.setattr("sys.stdout", io.TextIOWrapper(buffer, encoding="ascii"))
    code = main(["profile", "u\u00e9\u4e2d", "--input", str(events)])
    err = capsys.readouterr().err
    assert code == EXIT_BAD_INPUT
    assert "standard output" in err and "Traceback" not in err and err.count("\n") == 1


# -- bad stored data: one line, exit status 2 ---------------------------------------------------

COMPANY_MESSAGES = [
    *SIMPLE,
    {
        "type": "group",
        "userId": "u1",
        "groupId": "c1",
        "traits": {"name": "C"},
        "messageId": "m3",
        "timestamp": "2024-01-01T00:00:02Z",
    },
]

DAMAGE = {
    "trait_json": "UPDATE traits SET value = '{'",
    "company_trait_json": "UPDATE company_traits SET value = '[1,'",
    "huge_timestamp": "UPDATE nodes SET first_ts = 1e300",
    "not_utf8": "UPDATE nodes SET value = CAST(X'75FF' AS TEXT) WHERE value = 'u1'",
    "members": "UPDATE links SET members = 'garbage'",
}


def damaged_store(tmp_path: Path, damage: str) -> str:
    db, url = make_store(tmp_path, COMPANY_MESSAGES)
    conn = sqlite3.connect(db)
    try:
        conn.execute(DAMAGE[damage])
        conn.commit()
    finally:
        conn.close()
    return url


@pytest.mark.parametrize("damage", sorted(DAMAGE))
@pytest.mark.parametrize(
    "command",
    [
        ["profile", "anonymous_id:a1"],
        ["profile", "anonymous_id:a1", "--json"],
        ["history", "anonymous_id:a1"],
        ["explain", "anonymous_id:a1", "u1"],
        ["export", "--format", "jsonl"],
        ["export", "--format", "dot", "--profile", "u1"],
    ],
    ids=lambda c: "-".join(c[:3]),
)
def test_damaged_store_gives_one_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, damage: str, command: list[str]
) -> None:
    url = damaged_store(tmp_path, damage)
    code, _, err = run(capsys, *command, "--store", url)
    assert "Traceback" not in err
    # not every damage touches what every command reads (a damaged value is not found)
    if code not in (EXIT_OK, EXIT_NOT_FOUND):
        assert code == EXIT_BAD_INPUT, err
        assert err.count("\n") == 1 and err.startswith("identityres"), err
        assert_clean(err)


def test_damaged_trait_is_reported(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    url = damaged_store(tmp_path, "trait_json")
    code, out, err = run(capsys, "profile", "u1", "--store", url)
    assert code == EXIT_BAD_INPUT
    assert out == ""
    assert err.startswith("identityres") and ": error: " in err and err.count("\n") == 1
    assert "Traceback" not in err and url in err


def test_unexpected_errors_are_one_line_and_debug_shows_the_traceback(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = damaged_store(tmp_path, "trait_json")
    with pytest.raises((ir.StorageError, json.JSONDecodeError)):
        main(["--debug", "profile", "u1", "--store", url])
    with pytest.raises((ir.StorageError, json.JSONDecodeError)):
        main(["profile", "u1", "--store", url, "--debug"])

    # what the reading code raises on data it does not expect (not an identityres error)
    def boom(*args: Any, **kwargs: Any) -> None:
        raise OverflowError(f"date value out of range{ESC}")

    (tmp_path / "other").mkdir()
    _, url = make_store(tmp_path / "other")
    monkeypatch.setattr(ir.IdentityGraph, "profile", boom)
    code, out, err = run(capsys, "profile", "u1", "--store", url)
    assert code == EXIT_BAD_INPUT and out == ""
    assert err.startswith("identityres profile: error: ") and err.count("\n") == 1
    assert "OverflowError: " in err and "--debug shows the traceback" in err
    assert_clean(err)
    events = write_events(tmp_path / "events.jsonl", SIMPLE)
    code, _, err = run(capsys, "profile", "u1", "--input", str(events))
    assert code == EXIT_BAD_INPUT and "OverflowError" in err and "damaged" not in err
    with pytest.raises(OverflowError):
        main(["--debug", "profile", "u1", "--store", url])
