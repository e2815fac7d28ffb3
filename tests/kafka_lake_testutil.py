"""Helpers for the Kafka -> Parquet lake tests on the real services (tests/services.py).

Used by tests/test_parquet_consumer.py and tests/test_kafka_faults.py: per-test topics and
lake prefixes, short simulated runs, the consumer in a thread, and the exactly-once check of
the lake against the ``.qrsdp`` files (the source of truth).
"""

from __future__ import annotations

import datetime as dt
import posixpath
import re
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.fs as pafs
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from qrsdp_sim.eventlog.reader import EventLogReader
from qrsdp_sim.kafka.consumer import ParquetConsumer
from qrsdp_sim.lake.store import MARKER_NAME, Lake, PartitionMarker, S3Options
from qrsdp_sim.records import RECORD_DTYPE

START = dt.date(2026, 1, 5)  # a Monday: two days are 2026-01-05 and 2026-01-06
SECURITIES = (("AAA", 10_000), ("BBB", 20_000))
OBJECT_RE = re.compile(r"^events-(\d+)-(\d+)-([0-9a-f]{8})\.parquet$")

SessionKey = tuple[str, str]  # (symbol, YYYY-MM-DD)


# -- Kafka -----------------------------------------------------------------------------
def create_topics(bootstrap: str, prefix: str, partitions: int = 3) -> tuple[str, str]:
    """A fresh events topic with ``partitions`` partitions and its own dead-letter topic (1 partition)."""
    name = f"qrsdp.test.{prefix}.{uuid.uuid4().hex[:10]}"
    dlq = f"{name}.dlq"
    admin = AdminClient({"bootstrap.servers": bootstrap})  # must outlive the futures
    futures = admin.create_topics([NewTopic(name, partitions, 1), NewTopic(dlq, 1, 1)], operation_timeout=30)
    for fut in futures.values():
        fut.result(60)
    return name, dlq


def high_watermarks(bootstrap: str, topic: str) -> dict[int, int]:
    """Partition -> high watermark (the number of messages ever written to a fresh topic's partition)."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"wm-{uuid.uuid4().hex}", "log_level": 3})
    try:
        meta = c.list_topics(topic, timeout=30)
        parts = sorted(meta.topics[topic].partitions)
        return {p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=30)[1] for p in parts}
    finally:
        c.close()


def committed_offsets(bootstrap: str, group: str, topic: str) -> dict[int, int]:
    """The group's committed offsets (0 = nothing committed yet), read without joining the group."""
    c = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False, "log_level": 3}
    )
    try:
        parts = sorted(c.list_topics(topic, timeout=30).topics[topic].partitions)
        got = c.committed([TopicPartition(topic, p) for p in parts], timeout=30)
        return {tp.partition: max(tp.offset, 0) for tp in got}  # OFFSET_INVALID (-1001): none committed
    finally:
        c.close()


def consume_all(bootstrap: str, topic: str, expected: int, timeout: float = 90.0) -> list[Any]:
    """Every message of ``topic`` from the start (stops at ``expected`` or after ``timeout`` s)."""
    c = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": f"read-{uuid.uuid4().hex}", "auto.offset.reset": "earliest",
         "enable.auto.commit": False, "log_level": 3}
    )  # fmt: skip
    c.subscribe([topic])
    got: list[Any] = []
    deadline = time.monotonic() + timeout
    try:
        while len(got) < expected and time.monotonic() < deadline:
            for m in c.consume(50_000, 0.5):
                assert m.error() is None, m.error()
                got.append(m)
        # Anything beyond the expected count (a duplicate) must show up too.
        extra_deadline = time.monotonic() + 2.0
        while time.monotonic() < extra_deadline:
            for m in c.consume(50_000, 0.2):
                assert m.error() is None, m.error()
                got.append(m)
    finally:
        c.close()
    return got


# -- the simulation ----------------------------------------------------------------------
def simulate(output: Path, *, days: int = 2, seconds: int = 600, publisher=None, **kwargs: Any):
    """A run of SECURITIES over ``days`` weekdays from START (optionally dual-written to ``publisher``)."""
    from qrsdp_sim.engine.runner import RunSpec, Security, run

    spec = RunSpec(days=days, session_seconds=seconds, start_date=START)
    return run(
        spec, [Security(s, p) for s, p in SECURITIES], output, workers=2, publisher=publisher, **kwargs
    )


def session_files(output: Path) -> dict[SessionKey, Path]:
    return {(p.parent.name, p.stem): p for p in sorted(Path(output).glob("*/*.qrsdp"))}


def file_records(output: Path) -> dict[SessionKey, np.ndarray]:
    """(symbol, date) -> the session's records from its ``.qrsdp`` file."""
    return {key: EventLogReader(path).read_all() for key, path in session_files(output).items()}


def manifest_closes(manifest: dict[str, Any]) -> dict[SessionKey, int]:
    return {
        (sec["symbol"], s["date"]): int(s["close_ticks"])
        for sec in manifest["securities"]
        for s in sec["sessions"]
    }


# -- the lake ------------------------------------------------------------------------------
def s3_lake(minio_stack, name: str) -> Lake:
    cfg = minio_stack.config
    return Lake.from_uri(
        f"s3://{minio_stack.bucket}/test-{name}-{uuid.uuid4().hex[:8]}",
        S3Options(endpoint=minio_stack.endpoint, access_key=cfg.access_key, secret_key=cfg.secret_key),
    )


def lake_objects(lake: Lake) -> list[pafs.FileInfo]:
    base = lake.table_dir("events")
    infos = lake.fs.get_file_info(pafs.FileSelector(base, recursive=True, allow_not_found=True))
    return [i for i in infos if i.type == pafs.FileType.File]


def lake_markers(lake: Lake) -> dict[SessionKey, PartitionMarker]:
    return {(m.symbol, m.date.isoformat()): m for m in lake.complete_partitions("events")}


def read_lake_events(lake: Lake) -> pa.Table:
    """Every row of every events object under the lake (marked complete or not)."""
    files = [i.path for i in lake_objects(lake) if i.base_name.endswith(".parquet")]
    if not files:
        return pa.table({})
    return pads.dataset(files, filesystem=lake.fs, format="parquet").to_table()


@dataclass
class LakeCheck:
    rows: int  # landed rows, duplicates included
    distinct: int  # distinct (symbol, date, seq)
    duplicates: int = field(init=False)

    def __post_init__(self) -> None:
        self.duplicates = self.rows - self.distinct


def assert_lake_exactly_once(lake: Lake, expected: dict[SessionKey, np.ndarray]) -> LakeCheck:
    """After dedup on (symbol, date, seq) the lake holds every event of ``expected`` exactly once.

    Every landed row (a re-delivered copy included) must equal the file's record at its seq;
    every seq 0..n-1 of every session must be present; no other (symbol, date) may exist.
    Returns the row counts (duplicates are allowed: at-least-once landing).
    """
    table = read_lake_events(lake)
    assert table.num_rows, f"no events landed under {lake.uri}"
    symbols = table.column("symbol").to_numpy(zero_copy_only=False).astype(str)
    dates = np.array([d.isoformat() for d in table.column("date").to_pylist()])
    seqs = table.column("seq").to_numpy()
    cols = {name: table.column(name).to_numpy() for name in RECORD_DTYPE.names}
    landed_keys = set(zip(symbols.tolist(), dates.tolist(), strict=True))
    assert landed_keys == set(expected), f"lake sessions {sorted(landed_keys)} != {sorted(expected)}"
    distinct = 0
    for (symbol, day), records in expected.items():
        rows = np.flatnonzero((symbols == symbol) & (dates == day))
        seq = seqs[rows]
        n = len(records)
        assert seq.min() >= 0 and seq.max() < n, f"{symbol} {day}: seq out of range 0..{n - 1}"
        present = np.zeros(n, dtype=bool)
        present[seq] = True
        missing = np.flatnonzero(~present)
        assert not len(missing), (
            f"{symbol} {day}: {len(missing)} seqs missing from the lake, first {missing[:5]}"
        )
        for name in RECORD_DTYPE.names:
            bad = np.flatnonzero(cols[name][rows] != records[name][seq])
            assert not len(bad), f"{symbol} {day}: landed {name} differs from the file at seq {seq[bad[:5]]}"
        distinct += n
    return LakeCheck(rows=table.num_rows, distinct=distinct)


def duckdb_counts(lake: Lake) -> tuple[int, int, int]:
    """What the dbt staging model ``stg_events`` reads, by DuckDB through httpfs loaded from the PyPI package
    (no download), over the same glob as the dbt source: ``count(*)``, ``count(DISTINCT (symbol, date, seq))``
    and the rows left after stg_events' dedup (identical copies of a record collapse)."""
    import duckdb
    import duckdb_extension_httpfs

    ext = (
        Path(duckdb_extension_httpfs.__file__).parent / "extensions" / f"v{duckdb.__version__}"
        / "httpfs.duckdb_extension"
    )  # fmt: skip
    assert ext.is_file(), ext
    assert lake.s3 is not None and lake.s3.endpoint
    con = duckdb.connect(config={"autoinstall_known_extensions": False, "autoload_known_extensions": False})
    try:
        con.execute(f"INSTALL '{ext}'")
        con.execute("LOAD httpfs")
        con.execute(
            f"CREATE SECRET lake (TYPE s3, KEY_ID '{lake.s3.access_key}', SECRET '{lake.s3.secret_key}', "
            f"REGION 'us-east-1', ENDPOINT '{lake.s3.host}', URL_STYLE 'path', USE_SSL false)"
        )
        source = f"read_parquet('{lake.query_root}/raw/events/*/*/*.parquet', hive_partitioning = true, union_by_name = true)"
        rows, distinct = con.execute(
            f"SELECT count(*), count(DISTINCT (symbol, date, seq)) FROM {source}"
        ).fetchone()
        (deduplicated,) = con.execute(
            "SELECT count(*) FROM (SELECT DISTINCT symbol, date, seq, ts_ns, type, side, price_ticks, qty, order_id "
            f"FROM {source})"
        ).fetchone()
    finally:
        con.close()
    return int(rows), int(distinct), int(deduplicated)


# -- the consumer ----------------------------------------------------------------------------
class ConsumerThread:
    """A ParquetConsumer running in a thread; ``stop()`` ends it (flush + commit) and re-raises its error."""

    def __init__(self, consumer: ParquetConsumer, idle_exit_seconds: float | None = None) -> None:
        self.consumer = consumer
        self.error: BaseException | None = None
        self._thread = threading.Thread(
            target=self._run, args=(idle_exit_seconds,), daemon=True, name="parquet-consumer"
        )
        self._thread.start()

    def _run(self, idle_exit_seconds: float | None) -> None:
        try:
            self.consumer.run(idle_exit_seconds=idle_exit_seconds)
        except BaseException as exc:
            self.error = exc

    @property
    def stats(self):
        return self.consumer.stats

    def is_alive(self) -> bool:
        return self._thread.is_alive()

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)
        assert not self._thread.is_alive(), f"consumer still running after {timeout} s"
        if self.error is not None:
            raise self.error

    def stop(self, timeout: float = 60.0) -> None:
        self.consumer.stop_event.set()
        self.join(timeout)

    def wait_complete(self, sessions: set[SessionKey], timeout: float) -> None:
        """Until the consumer has written the _SUCCESS markers of all ``sessions``."""
        wait_until(
            lambda: sessions <= set(self.stats.completed) or not self.is_alive(),
            timeout,
            f"markers for {sorted(sessions)} (stats {self.stats})",
        )
        assert self.error is None, self.error
        assert sessions <= set(self.stats.completed), f"consumer ended early: {self.stats}"


def wait_until(predicate: Callable[[], bool], timeout: float, what: str, interval: float = 0.2) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


def object_partitions(lake: Lake) -> dict[SessionKey, set[int]]:
    """(symbol, date) -> the Kafka partitions named by its objects (``events-{partition}-{offset}-{owner}``)."""
    out: dict[SessionKey, set[int]] = {}
    for info in lake_objects(lake):
        if info.base_name == MARKER_NAME:
            continue
        m = OBJECT_RE.match(info.base_name)
        assert m, f"unexpected object name {info.path}"
        parts = posixpath.dirname(info.path).split("/")
        key = (parts[-2].removeprefix("symbol="), parts[-1].removeprefix("date="))
        out.setdefault(key, set()).add(int(m.group(1)))
    return out
