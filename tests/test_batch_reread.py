"""A file source is not kept in memory by ``batch.resolve``: ``graph()``/``seed()`` read its
rows again (docs/batch.md, Continuing online). These tests check that what they read again
gives the state online ingestion leaves, and that a changed file is refused."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import identityres as ir
from identityres import batch
from identityres import strategies as irst
from identityres.testing import snapshot, snapshot_diff
from identityres.testing.conformance._machine import _rules_variants
from tests.test_batch import _as_text_columns, online, to_message

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")


def _write(messages: list[dict[str, Any]], path: Path, fmt: str) -> None:
    if fmt == "parquet":
        pq.write_table(_as_text_columns(messages), path)
    else:
        path.write_text("".join(json.dumps(m) + "\n" for m in messages), encoding="utf-8")


def _identifies(n: int, prefix: str = "") -> list[dict[str, Any]]:
    """``n`` identify messages, each linking its own user and anonymous id."""
    return [
        {
            "type": "identify",
            "userId": f"{prefix}u{i}",
            "anonymousId": f"{prefix}a{i}",
            "messageId": f"{prefix}m{i}",
            "timestamp": "2024-01-01T00:00:00Z",
        }
        for i in range(n)
    ]


@settings(
    max_examples=20,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(
    stream=irst.streams(users=3),
    rules=_rules_variants(),
    fmt=st.sampled_from(["parquet", "jsonl"]),
)
def test_graph_of_a_file_source_reads_its_rows_again_and_equals_online(
    tmp_path: Path, stream: list[Any], rules: ir.Rules, fmt: str
) -> None:
    messages = [to_message(e) for e in stream]
    path = tmp_path / f"events.{fmt}"
    _write(messages, path, fmt)
    result = batch.resolve(path, rules=rules)
    assert result._events.table is None  # (not kept: read again below)
    a, b = snapshot(online(messages, rules)), snapshot(result.graph())
    assert a == b, snapshot_diff(a, b)


def test_a_file_changed_after_resolve_is_refused(tmp_path: Path) -> None:
    messages = _identifies(3)
    path = tmp_path / "events.parquet"
    _write(messages, path, "parquet")
    result = batch.resolve(path)
    _write(messages[:2], path, "parquet")
    os.utime(path, ns=(1, 1))  # (a rewrite within the clock's resolution: size/mtime differ)
    with pytest.raises(ir.ConfigurationError, match="changed since batch"):
        result.graph()
    with pytest.raises(ir.ConfigurationError, match="changed since batch"):
        result.seed(f"sqlite:///{tmp_path / 'ids.db'}")


def test_a_table_source_is_kept_not_read_again() -> None:
    messages = _identifies(1)
    table = _as_text_columns(messages)
    result = batch.resolve(table)
    assert result._events.table is table
    assert result._events.reload is None


@pytest.mark.parametrize("name", ["a.parquet", "z.parquet"])
def test_a_file_added_to_a_directory_after_resolve_is_refused(tmp_path: Path, name: str) -> None:
    # (the new file sorted before the old one shifts every row read again; after it, the
    # rows read are right but the source is no longer the one resolved)
    _write(_identifies(3, "m"), tmp_path / "m.parquet", "parquet")
    result = batch.resolve(tmp_path)
    _write(_identifies(3, "x"), tmp_path / name, "parquet")
    with pytest.raises(ir.ConfigurationError, match="changed since batch"):
        result.graph()
    (tmp_path / name).unlink()
    a, b = snapshot(online(_identifies(3, "m"), ir.Rules())), snapshot(result.graph())
    assert a == b, snapshot_diff(a, b)


def test_a_file_changed_while_resolve_reads_it_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    messages = _identifies(1)
    path = tmp_path / "events.parquet"
    _write(messages, path, "parquet")
    read = batch._read_parquet

    def read_then_rewrite(p: Path) -> Any:
        table = read(p)
        os.utime(p, ns=(1, 1))  # (rewritten after its rows were read)
        return table

    monkeypatch.setattr(batch, "_read_parquet", read_then_rewrite)
    result = batch.resolve(path)
    with pytest.raises(ir.ConfigurationError, match="changed since batch"):
        result.graph()


def test_graph_reads_a_file_source_once(tmp_path: Path) -> None:
    # (both lanes' events are rebuilt: the conflicted ones, decided first, and the
    # untouched ones; each re-read is a whole file, ~1 s at 10^6 identifiers)
    # (a reset of a0 felt by a later link: a0's component conflicted, the others untouched)
    messages = [
        *_identifies(3),
        {
            "type": "reset",
            "anonymousId": "a0",
            "messageId": "r",
            "timestamp": "2024-01-01T00:00:01Z",
        },
        *_identifies(1, "later"),
    ]
    messages[-1].update(anonymousId="a0", timestamp="2024-01-01T00:00:02Z")
    path = tmp_path / "events.parquet"
    _write(messages, path, "parquet")
    result = batch.resolve(path)
    assert not result._fast_record.all() and result._fast_record.any()
    reload = result._events.reload
    assert reload is not None
    calls: list[int] = []

    def counted() -> Any:
        calls.append(1)
        return reload()

    result._events.reload = counted
    a, b = snapshot(online(messages, ir.Rules())), snapshot(result.graph())
    assert a == b, snapshot_diff(a, b)
    assert len(calls) == 1


def test_a_file_rewritten_with_its_size_and_mtime_kept_is_refused(tmp_path: Path) -> None:
    # (a copy that keeps times, ``cp -p`` or ``rsync -t``, of another file of one size:
    # only the change time, which no one can set, tells)
    path = tmp_path / "events.jsonl"
    _write(_identifies(3, "a"), path, "jsonl")
    result = batch.resolve(path)
    before = path.stat()
    _write(_identifies(3, "b"), path, "jsonl")
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert path.stat().st_size == before.st_size
    with pytest.raises(ir.ConfigurationError, match="changed since batch"):
        result.graph()


def test_a_relative_path_is_read_again_where_it_was(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    messages = _identifies(3)
    _write(messages, tmp_path / "one" / "events.parquet", "parquet")
    monkeypatch.chdir(tmp_path / "one")
    result = batch.resolve("events.parquet")
    monkeypatch.chdir(tmp_path / "two")  # (where no such file is)
    a, b = snapshot(online(messages, ir.Rules())), snapshot(result.graph())
    assert a == b, snapshot_diff(a, b)
