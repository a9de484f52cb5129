"""``identityres serve`` refusing what it cannot run with, before any server starts
(the running server is tested in tests/test_integrations_servers.py)."""

import sys
from pathlib import Path

import pytest

from identityres.cli import EXIT_BAD_INPUT, EXIT_USAGE, main


def test_serve_needs_a_write_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("IDENTITYRES_WRITE_KEYS", raising=False)
    assert main(["serve", "--store", f"sqlite:///{tmp_path / 'x.db'}"]) == EXIT_USAGE
    assert "at least one write key" in capsys.readouterr().err
    keys = tmp_path / "keys.txt"
    keys.write_text("# comments and blank lines are not keys\n\n")
    assert main(["serve", "--store", "memory://", "--write-key-file", str(keys)]) == EXIT_USAGE


def test_an_unreadable_key_file_is_bad_input(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "nope.txt"
    assert main(["serve", "--store", "memory://", "--write-key-file", str(missing)]) == (
        EXIT_BAD_INPUT
    )
    assert "nope.txt" in capsys.readouterr().err


def test_without_uvicorn_serve_names_the_extra(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("IDENTITYRES_WRITE_KEYS", "wk_1")
    monkeypatch.setitem(sys.modules, "uvicorn", None)  # what an install without the extra sees
    assert main(["serve", "--store", "memory://"]) == EXIT_USAGE
    assert "pip install 'identityres[serve]'" in capsys.readouterr().err


def test_a_store_that_cannot_be_opened_is_bad_input(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("IDENTITYRES_WRITE_KEYS", "wk_1")
    url = f"sqlite:///{tmp_path / 'no-such-dir' / 'x.db'}"
    assert main(["serve", "--store", url]) == EXIT_BAD_INPUT
    assert "no-such-dir" in capsys.readouterr().err
