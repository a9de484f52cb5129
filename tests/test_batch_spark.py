"""identityres.batch_spark gives the online engine's answer (docs/batch.md, On Spark), run on a
real Spark in local mode (``local[2]``, one session for the module). Starting Spark takes tens
of seconds, so the tests that use it are in the slow set (``pytest -m slow``)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st

import identityres as ir
from identityres import strategies as irst
from identityres.testing.conformance._machine import _rules_variants
from tests.test_batch import MESSAGES, _as_text_columns, expected_tables, to_message

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")
np = pytest.importorskip("numpy")
batch_spark = pytest.importorskip("identityres.batch_spark")
from identityres import batch  # noqa: E402  (after the extra's check)

DOCS = Path(__file__).resolve().parent.parent / "docs" / "batch.md"


@pytest.fixture(scope="session")
def spark() -> Iterator[Any]:
    session = batch_spark.local_session(2, **{"spark.sql.shuffle.partitions": "2"})
    yield session
    session.stop()


def spark_tables(r: Any) -> dict[str, Any]:
    """The Spark result's tables in the form of ``tests/test_batch.py``'s ``expected_tables``."""
    idmap = {tuple(row.values()) for row in r.identity_map.toArrow().to_pylist()}
    rows = {
        tuple(tuple(v) if isinstance(v, list) else v for v in row.values())
        for row in r.profiles.toArrow().to_pylist()
    }
    refusals = [tuple(row.values()) for row in r.refusals.toArrow().to_pylist()]
    companies = {
        row["company_id"]: (
            row["traits"],
            frozenset(pid.split(":", 1)[1] for pid in row["profile_ids"]),
        )
        for row in r.companies.toArrow().to_pylist()
    }
    return {"identity_map": idmap, "profiles": rows, "refusals": refusals, "companies": companies}


def assert_equivalent(spark: Any, messages: list[dict[str, Any]], rules: ir.Rules) -> Any:
    g = ir.IdentityGraph(rules)
    report = g.ingest(messages, on_error="skip")
    frame = spark.createDataFrame(_as_text_columns(messages))
    result = batch_spark.resolve(frame, rules=rules, on_error="skip")
    want, got = expected_tables(g), spark_tables(result)
    for table in want:
        assert got[table] == want[table], table
    stats = g.stats()
    assert result.stat("identifiers") == len(g)
    assert result.stat("profiles") == stats.profiles
    assert result.stat("blocked_values") == sum(stats.blocked_values.values())
    assert [(e.index, e.field) for e in result.errors] == [
        (e.index, e.field) for e in report.errors
    ]
    return result


@st.composite
def mixed_streams(draw: st.DrawFn) -> list[dict[str, Any]]:
    """Several random streams in one input, as Segment messages (one Spark job tests them all):
    each stream's message ids are its own, its identifiers and companies may meet another's,
    which joins their components as any shared value does."""
    out: list[dict[str, Any]] = []
    for k in range(draw(st.integers(2, 6))):
        stream = draw(irst.streams(users=4, hostile=draw(st.booleans()), max_events=30))
        for msg in map(to_message, stream):
            if "messageId" in msg:
                msg["messageId"] = f"s{k}-{msg['messageId']}"
            out.append(msg)
    return out


slow = pytest.mark.slow


@slow
@settings(
    max_examples=4,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(messages=mixed_streams(), rules=_rules_variants())
def test_spark_equals_online_on_random_streams(
    spark: Any, messages: list[dict[str, Any]], rules: ir.Rules
) -> None:
    note(repr(rules))
    assert_equivalent(spark, messages, rules)


@slow
def test_spark_equals_online_and_batch_on_known_messages(spark: Any) -> None:
    result = assert_equivalent(spark, MESSAGES, ir.Rules())
    local = batch.resolve(_as_text_columns(MESSAGES))
    assert result.refusals.toArrow().to_pylist() == local.refusals.to_pylist()
    assert result.identity_map.schema.names == local.identity_map.column_names
    for name in ("events", "duplicates", "conflicted_events", "refusals"):
        assert result.stat(name) == local.stat(name), name
    assert result.stat("conflicted_fraction") == pytest.approx(local.stat("conflicted_fraction"))
    assert result.stat("component_rounds") >= 1


@slow
def test_bad_rows_raise_with_their_input_position_or_are_skipped(spark: Any) -> None:
    bad = {"type": "identify", "userId": "1.5", "messageId": "m9", "timestamp": "junk"}
    # the reused messageId is in another component than its first use: it must still conflict
    reused = {**MESSAGES[0], "anonymousId": "a-elsewhere"}
    messages = [*MESSAGES, bad, reused]
    frame = spark.createDataFrame(_as_text_columns(messages)).repartition(3)
    # (input order is the partition order: take it back from the frame Spark holds)
    messages = [
        {k: batch._cell(k, v) for k, v in row.asDict().items() if v is not None}
        for row in frame.collect()
    ]
    with pytest.raises(ir.ValidationError) as raised:
        ir.IdentityGraph().ingest(messages)
    with pytest.raises(type(raised.value)) as spark_raised:
        batch_spark.resolve(frame)
    assert (spark_raised.value.index, spark_raised.value.field) == (
        raised.value.index,
        raised.value.field,
    )
    result = assert_equivalent(spark, messages, ir.Rules())
    assert len(result.errors) == 2


@slow
def test_parquet_in_parquet_out(spark: Any, tmp_path: Path) -> None:
    pq.write_table(_as_text_columns(MESSAGES), tmp_path / "events.parquet")
    result = batch_spark.resolve(tmp_path / "events.parquet", spark=spark, partitions=3)
    written = result.write(tmp_path / "out")
    assert [Path(p).name for p in written] == [
        "identity_map.parquet",
        "profiles.parquet",
        "refusals.parquet",
        "companies.parquet",
        "stats.parquet",
    ]
    local = batch.resolve(tmp_path / "events.parquet")
    for name in ("identity_map", "profiles", "companies"):
        back = pq.read_table(tmp_path / "out" / f"{name}.parquet")
        key = sorted(map(repr, back.to_pylist()))
        assert key == sorted(map(repr, getattr(local, name).to_pylist())), name
    stats = pq.read_table(tmp_path / "out" / "stats.parquet").to_pylist()
    assert {"name": "events", "value": 7.0} in stats


@slow
@settings(
    max_examples=3, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    n=st.integers(1, 300),
    pairs=st.lists(st.tuples(st.integers(0, 299), st.integers(0, 299)), max_size=400),
    path=st.integers(2, 70),
)
def test_link_components_equal_the_union_find(
    spark: Any, n: int, pairs: list[tuple[int, int]], path: int
) -> None:
    # a random graph, plus a long path (the most rounds for its size) on other nodes
    edges = [(a % n, b % n) for a, b in pairs]
    edges += [(1000 + i, 1000 + i + 1) for i in range(path - 1)]
    frame = spark.createDataFrame(
        pa.table({"u": [a for a, _ in edges], "v": [b for _, b in edges]})
    )
    leaves, rounds = batch_spark.link_components(frame)
    got = {row["u"]: row["v"] for row in leaves.toArrow().to_pylist()}
    nodes = sorted({x for e in edges for x in e})
    index = {x: i for i, x in enumerate(nodes)}
    comp = batch.components(
        len(nodes),
        np.array([index[a] for a, _ in edges], dtype=np.int64),
        np.array([index[b] for _, b in edges], dtype=np.int64),
    )
    want = {x: nodes[comp[index[x]]] for x in nodes if nodes[comp[index[x]]] != x}
    assert got == want
    assert rounds >= 1


@slow
def test_the_docs_spark_example_runs(
    spark: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # docs/batch.md's On Spark example, which the default (fast) run skips: run here as is
    text = DOCS.read_text(encoding="utf-8")
    section = text[text.index("## On Spark") :]
    (code,) = re.findall(r"<!-- skip: next -->\n```python\n(.*?)```", section, re.S)[:1]
    monkeypatch.chdir(tmp_path)
    exec(compile(code, str(DOCS), "exec"), {"spark": spark})
    # its relative path is this process's working directory, not the JVM's
    assert (tmp_path / "tables" / "identity_map.parquet").is_dir()


# -- input checks (no Spark needed: they fail before a session is asked for) -----------------


def test_bad_arguments_are_refused_before_spark_runs(tmp_path: Path) -> None:
    with pytest.raises(ir.ConfigurationError, match="rules="):
        batch_spark.resolve(tmp_path, rules={"limits": {}})
    with pytest.raises(ir.InvalidEventError, match="on_error"):
        batch_spark.resolve(tmp_path, on_error="ignore")
    with pytest.raises(ir.ConfigurationError, match="partitions="):
        batch_spark.resolve(tmp_path, partitions=0)
    with pytest.raises(ir.InvalidEventError, match="source"):
        batch_spark.resolve([{"type": "track"}])
    with pytest.raises(ir.ConfigurationError, match="no such file"):
        batch_spark.resolve(tmp_path / "missing.parquet")
