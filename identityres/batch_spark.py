"""Batch re-resolution on Apache Spark: ``identityres.batch``'s pipeline, with the link
components computed by DataFrame operations and each group of whole components resolved by
``batch.resolve`` in a Python task (docs/batch.md, On Spark).

1. **decode** (``mapInArrow``) — every row becomes its ``Record`` through the online
   ``RecordBuilder`` (normalization, blocked values, event ids), and its *nodes*: the
   identifiers it links, its event id, its company, the values it forgets;
2. **components** — the connected components of the nodes, by large-star/small-star
   (Kiveris et al. 2014) over 64-bit hashes of them, until the edges form stars (a
   convergence check, not a fixed number of passes);
3. **resolve** (``mapInArrow`` over ``repartition(n, component)``) — every task holds whole
   components and resolves its rows with ``batch.resolve`` itself: the same classification,
   group-wise minima for the untouched components and the online ``Engine`` for the
   conflicted ones. Nothing of the merge rules is written twice.

Needs the ``identityres[spark]`` extra (PySpark, pyarrow, numpy, pandas) and a Java runtime.
"""

from __future__ import annotations

import os
import pickle
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

try:
    import pyarrow as pa
    from pyspark.sql import DataFrame, SparkSession
    from pyspark.sql import functions as F
    from pyspark.sql.pandas.types import from_arrow_schema
    from pyspark.sql.types import (
        ArrayType,
        LongType,
        StringType,
        StructField,
        StructType,
    )
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "identityres.batch_spark needs PySpark and pyarrow: pip install 'identityres[spark]'"
    ) from exc

import attrs

from identityres import batch
from identityres._events import RecordBuilder
from identityres._formats import translate
from identityres._graph import EventError
from identityres._rules import Rules
from identityres.errors import ConfigurationError, InvalidEventError, ValidationError

__all__ = ["SparkBatchResult", "link_components", "local_session", "resolve"]

#: the tables of a result, as ``batch.BatchResult`` names them
TABLES = ("identity_map", "profiles", "refusals", "companies")
#: the columns this module adds (a source's own columns other than docs/batch.md's are dropped)
_ROW, _NODES, _ANCHOR, _COMP = "_ir_row", "_ir_nodes", "_ir_a", "_ir_c"
#: ``monotonically_increasing_id``: the partition index above bit 33, the record number below
_ROW_BITS = 33
#: a guard, not the stopping rule: large-star/small-star converges in O(log^2 n) rounds
MAX_ROUNDS = 200
_SEP = "\x1f"


def _system_clock() -> float:
    return time.time()


def local_session(cores: int = 2, **conf: str) -> SparkSession:
    """A Spark session in local mode (``local[cores]``) for tests, benchmarks and one-machine
    runs: bound to 127.0.0.1, no web UI or console progress bar, UTC session time zone,
    Python workers on this interpreter (the one with identityres), plus ``conf``. An active
    session is returned as it is (Spark allows one per process)."""
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    builder = (
        SparkSession.builder.master(f"local[{cores}]")
        .appName("identityres")
        .config("spark.driver.host", "127.0.0.1")
        .config("spark.driver.bindAddress", "127.0.0.1")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.sql.session.timeZone", "UTC")
    )
    for key, value in conf.items():
        builder = builder.config(key, value)
    session = builder.getOrCreate()
    session.sparkContext.setLogLevel("ERROR")
    return session


# -- 1. decode: the nodes of each row ------------------------------------------------------


def _nodes_of(build: RecordBuilder, msg: Mapping[str, Any], row: int) -> list[str]:
    """The nodes a row joins: its identifiers, its event id and its company. Rows that share
    a node must be resolved together: identifiers link, an event id makes duplicates and
    conflicts (R8), a company's traits and members are one row of ``companies``. Nothing else
    crosses components in a columnar source: its types (docs/batch.md, Input columns) carry
    no forget, whose erasure of a blocked value's count would. A row that does not decode is
    alone: ``batch.resolve`` reports it, as ``ingest`` would."""
    try:
        # a row without a type is read as ``ingest`` reads a message of another platform
        ops = translate(msg, "auto") if "type" not in msg else (msg,)
        records = [build.from_object(op) for op in ops]
    except ValidationError:
        return [f"r{_SEP}{row}"]
    nodes: list[str] = []
    for rec in records:
        nodes.extend(f"i{_SEP}{kind}{_SEP}{value}" for kind, value in rec.ids)
        nodes.append(f"e{_SEP}{rec.event_id}")
        if rec.company_id is not None:
            nodes.append(f"c{_SEP}{rec.company_id}")
    return nodes


def _decoder(
    rules: Rules, clock: Callable[[], datetime | float | int]
) -> Callable[[Iterable[pa.RecordBatch]], Iterator[pa.RecordBatch]]:
    def decode(batches: Iterable[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        build = RecordBuilder(rules.compiled, clock)
        for chunk in batches:
            table = pa.Table.from_batches([chunk])
            rows: list[int] = table.column(_ROW).to_numpy().tolist()
            nodes = [
                _nodes_of(build, msg, row)
                for row, msg in zip(rows, batch._table_messages(table), strict=True)
            ]
            yield pa.RecordBatch.from_arrays(
                [pa.array(rows, pa.int64()), pa.array(nodes, pa.list_(pa.string()))],
                names=[_ROW, _NODES],
            )

    return decode


# -- 2. link components: large-star / small-star ---------------------------------------------


def _both_ways(edges: DataFrame) -> DataFrame:
    return edges.select("u", "v").union(edges.select(F.col("v").alias("u"), F.col("u").alias("v")))


def _large_star(edges: DataFrame) -> DataFrame:
    """Each node's larger neighbours are hooked onto the smallest node of its neighbourhood."""
    sym = _both_ways(edges)
    low = sym.groupBy("u").agg(F.least(F.min("v"), F.col("u")).alias("m"))
    return (
        (sym.join(low, "u").where(F.col("v") > F.col("u")).select(F.col("v").alias("u"), "m"))
        .select("u", F.col("m").alias("v"))
        .distinct()
    )


def _small_star(edges: DataFrame) -> DataFrame:
    """Each node and its smaller neighbours are hooked onto the smallest of them."""
    sym = _both_ways(edges).where(F.col("v") < F.col("u"))
    low = sym.groupBy("u").agg(F.min("v").alias("m"))
    leaves = sym.join(low, "u").where(F.col("v") != F.col("m")).select(F.col("v").alias("u"), "m")
    return leaves.union(low.select("u", "m")).select("u", F.col("m").alias("v")).distinct()


def _is_star_forest(edges: DataFrame) -> bool:
    """Whether every component is a star around its smallest node: each edge ``(u, v)`` has
    ``u > v`` (small-star makes it so), no node has two centres and no centre is a leaf.
    Then each leaf's centre is its component, whatever rounds led there."""
    leaves = edges.groupBy("u").agg(F.count("*").alias("n"))
    if leaves.where(F.col("n") > 1).limit(1).count():
        return False
    centres = edges.select(F.col("v").alias("u")).distinct()
    return not leaves.join(centres, "u").limit(1).count()


def link_components(edges: DataFrame, *, max_rounds: int = MAX_ROUNDS) -> tuple[DataFrame, int]:
    """Connected components of the undirected graph of ``edges`` (long columns ``u``, ``v``),
    by alternating large-star and small-star rounds (Kiveris et al., "Connected Components in
    MapReduce and Beyond", 2014) until the edges are stars around each component's smallest
    node. Returns ``(leaves, rounds)``: ``leaves`` has a row ``(u, v)`` for every node ``u``
    that is not the smallest of its component ``v`` (a node in no row is its own component's
    smallest); each round's edges are checkpointed, so the plan stays short."""
    current = edges.where(F.col("u") != F.col("v")).select("u", "v").localCheckpoint()
    rounds = 0
    while True:
        rounds += 1
        if rounds > max_rounds:  # pragma: no cover - a bound on a proof, not a stopping rule
            raise RuntimeError(f"link components did not converge in {max_rounds} rounds")
        following = _small_star(_large_star(current)).localCheckpoint()
        current.unpersist()
        current = following
        if _is_star_forest(current):
            return current, rounds


# -- 3. resolve each group of whole components ---------------------------------------------


def _arrow_schemas() -> dict[str, pa.Schema]:
    """The schemas of ``batch.BatchResult``'s tables (read from an empty result, so they follow
    batch.py), and the extra columns carried here: a refusal's event time and position (to
    order refusals as ``graph.refusals()`` does) and each bad event's row."""
    empty = batch.resolve([])
    out = {name: getattr(empty, name).schema for name in (*TABLES, "stats")}
    out["refusals"] = (
        out["refusals"].append(pa.field("_ts", pa.float64())).append(pa.field("_seq", pa.int64()))
    )
    fields: list[Any] = [
        pa.field("row", pa.int64()),
        pa.field("field", pa.string()),
        pa.field("value", pa.string()),
        pa.field("reason", pa.string()),
        pa.field("error", pa.binary()),
    ]
    out["errors"] = pa.schema(fields)
    return out


def _output_type(schemas: dict[str, pa.Schema]) -> StructType:
    """One row of the resolve stage: exactly one of these struct columns is set."""
    return StructType(
        [StructField(name, from_arrow_schema(schema), True) for name, schema in schemas.items()]
    )


def _struct(table: pa.Table, schema: pa.Schema) -> pa.StructArray:
    table = table.cast(schema)
    arrays = [table.column(i).combine_chunks() for i in range(table.num_columns)]
    return pa.StructArray.from_arrays(arrays, fields=list(schema))


def _resolver(
    rules: Rules,
    clock: Callable[[], datetime | float | int],
    columns: list[str],
    schemas: dict[str, pa.Schema],
    arrow_out: pa.Schema,
) -> Callable[[Iterable[pa.RecordBatch]], Iterator[pa.RecordBatch]]:
    def resolve_part(batches: Iterable[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        chunks = list(batches)
        if not chunks or not sum(c.num_rows for c in chunks):
            return
        table = pa.Table.from_batches(chunks)
        rows = table.column(_ROW).to_pylist()
        result = batch.resolve(table.select(columns), rules=rules, on_error="skip", clock=clock)
        tables: dict[str, pa.Table] = {name: getattr(result, name) for name in TABLES}
        # a refusal's event time: refusals are ordered by (time, event id), then by position
        events = result._events
        when = dict(zip(events.eid.to_pylist(), events.ts.tolist(), strict=True))
        refused = tables["refusals"]
        tables["refusals"] = refused.append_column(
            "_ts", pa.array([when[e] for e in refused.column("event_id").to_pylist()], pa.float64())
        ).append_column("_seq", pa.array(range(refused.num_rows), pa.int64()))
        tables["stats"] = result.stats
        tables["errors"] = pa.table(
            {
                "row": pa.array([rows[e.index] for e in result.errors], pa.int64()),
                "field": [e.field for e in result.errors],
                "value": [repr(e.value) for e in result.errors],
                "reason": [e.reason for e in result.errors],
                "error": pa.array([pickle.dumps(e) for e in result.errors], pa.binary()),
            }
        )
        for name, part in tables.items():
            if not part.num_rows:
                continue
            arrays = [
                _struct(part, schemas[n]) if n == name else pa.nulls(part.num_rows, f.type)
                for n, f in zip(arrow_out.names, arrow_out, strict=True)
            ]
            yield pa.RecordBatch.from_arrays(arrays, schema=arrow_out)

    return resolve_part


# -- the result ----------------------------------------------------------------------------


_ADDITIVE_EXCEPT = ("conflicted_fraction",)


class SparkBatchResult:
    """What :func:`resolve` computed: the tables of ``batch.BatchResult`` as Spark DataFrames
    (``identity_map``, ``profiles``, ``refusals``, ``companies``; computed once and kept),
    ``stats`` as an Arrow table, the bad events skipped, and :meth:`write` (docs/batch.md, On
    Spark)."""

    def __init__(
        self,
        output: DataFrame,
        stats: dict[str, float],
        errors: tuple[EventError, ...],
    ) -> None:
        self._output = output
        #: one row per identifier: ``kind``, ``value``, ``profile_id``, ``user_id``,
        #: ``identified_user_id`` (as ``BatchResult.identity_map``)
        self.identity_map: DataFrame = output.where(F.col("identity_map").isNotNull()).select(
            "identity_map.*"
        )
        #: one row per profile (as ``BatchResult.profiles``)
        self.profiles: DataFrame = output.where(F.col("profiles").isNotNull()).select("profiles.*")
        #: the refusals in effect, ordered as ``graph.refusals()`` orders them
        self.refusals: DataFrame = (
            output.where(F.col("refusals").isNotNull())
            .select("refusals.*")
            .orderBy("_ts", "event_id", "_seq")
            .drop("_ts", "_seq")
        )
        #: one row per company (as ``BatchResult.companies``)
        self.companies: DataFrame = output.where(F.col("companies").isNotNull()).select(
            "companies.*"
        )
        #: the figures of ``BatchResult.stats``, summed over the tasks (``seconds_<phase>``:
        #: task seconds), with the Spark phases' wall seconds and ``component_rounds``
        self.stats: pa.Table = pa.table(
            {
                "name": pa.array(list(stats), pa.string()),
                "value": pa.array(list(stats.values()), pa.float64()),
            }
        )
        #: the bad events skipped (``on_error="skip"``), by input position
        self.errors = errors

    def stat(self, name: str) -> float:
        """One figure of :attr:`stats` by name."""
        names = self.stats.column("name").to_pylist()
        return float(self.stats.column("value")[names.index(name)].as_py())

    def write(self, directory: str | os.PathLike[str], *, mode: str = "overwrite") -> list[str]:
        """Write every table as a Parquet directory ``<directory>/<table>.parquet`` (Spark's
        writer; ``stats`` as one Parquet file; a relative local path is taken from this
        process's working directory), and return the paths written. ``mode`` is
        Spark's save mode."""
        out = str(directory).rstrip("/")
        if "://" not in out:  # a local path is this process's, not the JVM's working directory
            out = os.path.abspath(out)
        written = []
        spark = self._output.sparkSession
        # Parquet's own UTC microsecond timestamps (as batch.py writes them), not Spark's
        # default INT96, which other readers take as nanoseconds without a time zone
        key = "spark.sql.parquet.outputTimestampType"
        before = spark.conf.get(key)
        spark.conf.set(key, "TIMESTAMP_MICROS")
        try:
            for name in TABLES:
                path = f"{out}/{name}.parquet"
                frame: DataFrame = getattr(self, name)
                frame.write.mode(mode).parquet(path)
                written.append(path)
            path = f"{out}/stats.parquet"
            spark.createDataFrame(self.stats).coalesce(1).write.mode(mode).parquet(path)
            written.append(path)
        finally:
            spark.conf.set(key, before or "INT96")
        return written

    def unpersist(self) -> None:
        """Drop the computed tables from Spark's storage."""
        self._output.unpersist()


def _summed(parts: list[tuple[str, float]]) -> dict[str, float]:
    out: dict[str, float] = {}
    for name, value in parts:
        if name not in _ADDITIVE_EXCEPT:
            out[name] = out.get(name, 0.0) + value
    events = out.get("events", 0.0)
    out["conflicted_fraction"] = out.get("conflicted_events", 0.0) / events if events else 0.0
    return out


def _input(source: Any, spark: SparkSession | None) -> DataFrame:
    if isinstance(source, DataFrame):
        frame = source
    elif isinstance(source, (str, os.PathLike)):
        path = str(source)
        if "://" not in path and not Path(path).exists():
            raise ConfigurationError(f"source={path!r}: no such file or directory")
        session = spark or SparkSession.builder.getOrCreate()
        frame = session.read.parquet(path)
    else:
        raise InvalidEventError(
            "source", source, "must be a Spark DataFrame or the path of Parquet files"
        )
    if "type" not in frame.columns:
        raise ConfigurationError(
            "source: a columnar source needs a 'type' column (identify, track, alias, ...); "
            f"it has {frame.columns!r}"
        )
    return frame.select([c for c in frame.columns if c in batch.COLUMNS])


def resolve(
    source: Any,
    *,
    rules: Rules | None = None,
    spark: SparkSession | None = None,
    on_error: Literal["raise", "skip"] = "raise",
    clock: Callable[[], datetime | float | int] | None = None,
    partitions: int | None = None,
    progress: Callable[[str, float], None] | None = None,
) -> SparkBatchResult:
    """Resolve a whole event history on Spark, with the answer ``IdentityGraph.ingest`` of the
    same events gives (docs/batch.md, On Spark).

    ``source``: a Spark DataFrame with the columns of docs/batch.md (Input columns), or the
    path of Parquet files (a file or directory, any URL Spark reads; read with ``spark``, else
    the active session). Input order is the DataFrame's partition order. ``on_error`` as in
    ``batch.resolve``: ``"raise"`` raises the first bad event's error (with its input
    position), ``"skip"`` lists them in :attr:`SparkBatchResult.errors`. ``partitions``: how
    many tasks resolve the components (default ``spark.sql.shuffle.partitions``).
    ``progress(phase, seconds)`` is called as each Spark phase ends."""
    if rules is None:
        rules = Rules()
    elif not isinstance(rules, Rules):
        raise ConfigurationError(f"rules={rules!r}: must be an identityres.Rules")
    if on_error not in ("raise", "skip"):
        raise InvalidEventError("on_error", on_error, 'must be "raise" or "skip"')
    if partitions is not None and (
        isinstance(partitions, bool) or not isinstance(partitions, int) or partitions < 1
    ):
        raise ConfigurationError(f"partitions={partitions!r}: must be a positive int")
    frame = _input(source, spark)
    session = frame.sparkSession
    if partitions is None:
        partitions = int(session.conf.get("spark.sql.shuffle.partitions") or 200)
    clock = clock or _system_clock
    columns = frame.columns
    times: dict[str, float] = {}

    def done(phase: str, started: float) -> float:
        now = time.perf_counter()
        times[f"seconds_spark_{phase}"] = now - started
        if progress is not None:
            progress(phase, now - started)
        return now

    t = time.perf_counter()
    # 1. decode: the input with its row number, and each row's nodes (hashed in the JVM)
    indexed = frame.withColumn(_ROW, F.monotonically_increasing_id()).localCheckpoint()
    decoded_type = StructType(
        [
            StructField(_ROW, LongType(), False),
            StructField(_NODES, ArrayType(StringType()), False),
        ]
    )
    nodes = (
        indexed.mapInArrow(_decoder(rules, clock), decoded_type)
        .select(
            _ROW,
            F.transform(_NODES, lambda x: F.xxhash64(x)).alias(_NODES),
        )
        .withColumn(_ANCHOR, F.col(_NODES)[0])
        .localCheckpoint()
    )
    t = done("decode", t)

    # 2. components. A 64-bit hash that collides only joins two groups of rows into one task,
    # which resolves them as two components all the same (batch.resolve finds its own).
    linked = nodes.select(
        F.col(_ANCHOR).alias("u"), F.explode(F.slice(_NODES, 2, 1 << 30)).alias("v")
    )
    leaves, rounds = link_components(linked)
    t = done("components", t)

    # 3. each task: whole components, in input order, through batch.resolve
    comp = nodes.join(leaves.withColumnRenamed("u", _ANCHOR), _ANCHOR, "left").select(
        _ROW, F.coalesce(F.col("v"), F.col(_ANCHOR)).alias(_COMP)
    )
    grouped = (
        indexed.join(comp, _ROW)
        .repartition(partitions, _COMP)
        .sortWithinPartitions(_ROW)
        .select(*columns, _ROW)
    )
    schemas = _arrow_schemas()
    out_type = _output_type(schemas)
    arrow_out = pa.schema([pa.field(n, pa.struct(list(sch))) for n, sch in schemas.items()])
    output = grouped.mapInArrow(
        _resolver(rules, clock, columns, schemas, arrow_out), out_type
    ).localCheckpoint()
    leaves.unpersist()
    small = output.where(F.col("stats").isNotNull() | F.col("errors").isNotNull())
    stat_parts: list[tuple[str, float]] = []
    bad: list[tuple[int, bytes]] = []
    for row in small.select("stats", "errors").collect():
        if row["stats"] is not None:
            stat_parts.append((row["stats"]["name"], row["stats"]["value"]))
        else:
            bad.append((row["errors"]["row"], row["errors"]["error"]))
    t = done("resolve", t)
    errors = _errors(indexed, bad)
    nodes.unpersist()
    indexed.unpersist()
    if errors and on_error == "raise":
        output.unpersist()
        raise errors[0].error
    stats = _summed(stat_parts)
    stats["component_rounds"] = float(rounds)
    stats.update(times)
    return SparkBatchResult(output, stats, errors)


def _errors(indexed: DataFrame, bad: list[tuple[int, bytes]]) -> tuple[EventError, ...]:
    """The bad events by input position: a row number of ``monotonically_increasing_id`` is
    its partition's offset plus its place in the partition."""
    if not bad:
        return ()
    sizes: dict[int, int] = dict(
        indexed.groupBy(F.shiftright(_ROW, _ROW_BITS).alias("p"))
        .count()
        .select("p", "count")
        .collect()
    )
    offset: dict[int, int] = {}
    total = 0
    for p in sorted(sizes):
        offset[p] = total
        total += sizes[p]
    out = []
    for row, blob in sorted(bad):
        index = offset[row >> _ROW_BITS] + (row & ((1 << _ROW_BITS) - 1))
        error: EventError = pickle.loads(blob)
        error.error.at_index(index)
        out.append(attrs.evolve(error, index=index))
    return tuple(out)
