"""The Parquet consumer's decoding of bridge items and its batching rule, without services.

* ``decode_items``: runs of a session are joined as they are, slow-path events of the same session
  join them, a run with a bad key or date is rebuilt into its exact messages and rejected with the
  confluent path's reasons, markers come through.
* Batching (local lake, the consumer's internals driven directly): objects never cross an offset that
  is a multiple of ``batch_records``, are named ``events-{partition}-{first_offset}-{owner}``, an end-of-session
  marker lands the tail and completes the session, and completion counts objects written by an
  earlier consumer (read from the lake) together with its own (counted from memory).
"""

from __future__ import annotations

import datetime as dt
import re

import numpy as np
import pyarrow.fs as pafs
import pyarrow.parquet as pq
from qrsdp_log_testutil import make_records

from qrsdp_sim.kafka.bridge import RawMessage, Run
from qrsdp_sim.kafka.consumer import ParquetConsumer
from qrsdp_sim.kafka.decode import decode_items, run_messages
from qrsdp_sim.kafka.message import EndOfSession
from qrsdp_sim.lake.store import Lake

DAY = dt.date(2026, 1, 5)
RAW_DAY = DAY.isoformat().encode()
OBJECT_RE = re.compile(r"^(events-\d+-\d+)-[0-9a-f]{8}\.parquet$")


def _run(offset: int, seq: int, key: bytes, records: np.ndarray, *, partition: int = 0, date: bytes = RAW_DAY) -> Run:
    return Run(partition, offset, seq, key, date, b"run-1", records)


def _marker(offset: int, key: bytes, events: int, *, partition: int = 0) -> RawMessage:
    return RawMessage("t", partition, offset, key, b"",
                      [("date", RAW_DAY), ("seq", events.to_bytes(8, "big")), ("run_id", b"run-1"),
                       ("eos", EndOfSession(events, 10_001).encode())])


def test_decode_items_joins_runs_and_rebuilds_bad_runs_exactly() -> None:
    recs = make_records(30, seed=1)
    good1 = _run(100, 0, b"AAA", recs[:10])
    bad_key = _run(110, 5, b"bad key!", recs[20:22])
    good2 = _run(112, 10, b"AAA", recs[10:20])
    bad_date = _run(122, 0, b"BBB", recs[22:23], date=b"2026-13-45")
    # A well-formed event in another header order (not a run) and the session's marker.
    slow = RawMessage("t", 0, 123, b"AAA", recs[20:21].tobytes(), [("seq", (20).to_bytes(8, "big")),
                                                                     ("date", RAW_DAY)])
    out = decode_items([good1, bad_key, good2, bad_date, slow, _marker(124, b"AAA", 21)], "t")

    assert len(out.sessions) == 1
    rows = out.sessions[0]
    assert (rows.symbol, rows.date, rows.first_offset, rows.last_offset) == ("AAA", DAY, 100, 123)
    np.testing.assert_array_equal(rows.seq, np.arange(21))
    np.testing.assert_array_equal(rows.records, recs[:21])
    assert [(m.symbol, m.date, m.eos, m.offset) for m in out.markers] == [("AAA", DAY, EndOfSession(21, 10_001), 124)]

    rejected = {m.offset(): (m, reason) for m, _kind, reason in out.rejected}
    assert sorted(rejected) == [110, 111, 122]
    assert "is not a symbol" in rejected[110][1] and "unknown date header" in rejected[122][1]
    m = rejected[111][0]  # rebuilt exactly as produced: key, value, the four headers in order
    assert (m.topic(), m.partition(), m.key(), m.value()) == ("t", 0, b"bad key!", recs[21].tobytes())
    assert m.headers() == [("ts_ns", int(recs["ts_ns"][21]).to_bytes(8, "big")), ("date", RAW_DAY),
                           ("seq", (6).to_bytes(8, "big")), ("run_id", b"run-1")]
    assert [x.offset() for x in run_messages(good1, "t")] == list(range(100, 110))


def _objects(lake: Lake) -> dict[str, int]:
    """Object name -> rows, over every events partition of the lake."""
    base = lake.table_dir("events")
    infos = lake.fs.get_file_info(pafs.FileSelector(base, recursive=True, allow_not_found=True))
    return {OBJECT_RE.match(i.base_name).group(1) + ".parquet": pq.read_metadata(i.path).num_rows for i in infos
            if i.type == pafs.FileType.File and OBJECT_RE.match(i.base_name)}


def _consumer(lake: Lake) -> ParquetConsumer:
    # No broker is needed for what is driven here (nothing polls or commits).
    return ParquetConsumer("127.0.0.1:1", lake, topic="t", client="python", batch_records=100,
                           batch_seconds=3600)


def _close(consumer: ParquetConsumer) -> None:
    consumer._writers.shutdown()
    consumer._source.close()
    consumer._dead.close(0)


def test_objects_never_cross_a_multiple_of_batch_records(tmp_path) -> None:
    lake = Lake.from_uri(tmp_path / "lake")
    recs = make_records(300, seed=2)
    other = make_records(20, seed=3)

    # A first consumer lands offsets 0..199 of a 250-record run (two aligned chunks), then goes away.
    first = _consumer(lake)
    try:
        first._accept(_run(0, 0, b"AAA", recs[:250]), 0.0)
        first._cut(0.0)
        first._drain(None)
        assert _objects(lake) == {"events-0-0.parquet": 100, "events-0-100.parquet": 100}
        assert first._parts[0].done_through == 200 and first._parts[0].count == 50  # 200..249 still pending
    finally:
        _close(first)

    # The next one starts at the commit (200): AAA 200..249, BBB 250..269, AAA 270..319, marker at 320.
    second = _consumer(lake)
    try:
        second._accept(_run(200, 200, b"AAA", recs[200:250]), 0.0)
        second._accept(_run(250, 0, b"BBB", other), 0.0)
        second._accept(_run(270, 250, b"AAA", recs[250:300]), 0.0)
        second._cut(0.0)  # up to 300: AAA's two runs in one object, BBB in its own
        second._drain(None)
        assert second._parts[0].done_through == 300
        second._accept(_marker(320, b"AAA", 300), 0.0)  # lands 300..320 at once and completes AAA
        second._cut(0.0)
        second._drain(None)
        assert second._parts[0].done_through == 321 and not second._parts[0].count
        stats = second.stats
        assert (stats.objects_written, stats.records_landed, stats.markers_written) == (3, 120, 1)
        assert stats.completed == [("AAA", DAY.isoformat())]
    finally:
        _close(second)

    assert _objects(lake) == {"events-0-0.parquet": 100, "events-0-100.parquet": 100, "events-0-200.parquet": 80,
                              "events-0-250.parquet": 20, "events-0-300.parquet": 20}
    marker = lake.read_marker("events", "AAA", DAY)
    assert marker is not None and marker.rows == 300 and marker.extra["close_ticks"] == 10_001
    assert {OBJECT_RE.match(f).group(1) + ".parquet" for f in marker.files} == {"events-0-0.parquet", "events-0-100.parquet", "events-0-200.parquet",
                                 "events-0-300.parquet"}
    table = lake.read_partition("events", "AAA", DAY)
    order = np.argsort(table.column("seq").to_numpy())
    assert table.column("seq").to_numpy()[order].tolist() == list(range(300))
    np.testing.assert_array_equal(table.column("order_id").to_numpy()[order], recs["order_id"])
    assert lake.read_marker("events", "BBB", DAY) is None  # no marker for BBB yet


def test_incomplete_session_is_not_marked(tmp_path) -> None:
    lake = Lake.from_uri(tmp_path / "lake")
    recs = make_records(50, seed=4)
    consumer = _consumer(lake)
    try:
        consumer._accept(_run(0, 0, b"AAA", recs[:20]), 0.0)
        consumer._accept(_run(20, 30, b"AAA", recs[30:50]), 0.0)  # seqs 20..29 never arrive
        consumer._accept(_marker(40, b"AAA", 50), 0.0)
        consumer._cut(0.0)
        consumer._drain(None)
        assert (consumer.stats.markers_written, consumer.stats.incomplete_sessions) == (0, 1)
        assert consumer._parts[0].done_through == 41  # incomplete is reported, not retried forever
    finally:
        _close(consumer)
    assert lake.read_marker("events", "AAA", DAY) is None
