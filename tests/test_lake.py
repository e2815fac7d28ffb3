"""The Parquet lake: layout, idempotent landing, completion markers, reading back, URIs."""

from __future__ import annotations

import datetime as dt
import json

import numpy as np
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest
from book_streams import random_session, reference_top_of_book

from qrsdp_sim.eventlog import BinaryFileSink, LogHeader
from qrsdp_sim.lake import (
    EVENTS_SCHEMA,
    MARKER_NAME,
    Lake,
    LakeError,
    S3Options,
    events_table,
    land_book_states,
    land_records,
    land_session_file,
    read_records,
)
from qrsdp_sim.records import RECORD_DTYPE

DAY = dt.date(2026, 1, 5)


@pytest.fixture
def lake(tmp_path):
    return Lake.from_uri((tmp_path / "lake").as_uri())


def test_events_table_columns_and_values():
    rec = random_session(100, 1)
    t = events_table(rec, "AAPL", DAY, landed_at="2026-01-05T21:00:00+00:00")
    assert t.schema == EVENTS_SCHEMA
    assert t.column_names == [
        "symbol", "date", "seq", "ts_ns", "type", "side", "price_ticks", "qty", "order_id", "_landed_at",
    ]  # fmt: skip
    assert t.column("seq").to_pylist() == list(range(100))
    assert set(t.column("symbol").to_pylist()) == {"AAPL"} and set(t.column("date").to_pylist()) == {DAY}
    for name in RECORD_DTYPE.names:
        np.testing.assert_array_equal(t.column(name).to_numpy(), rec[name])


def test_hive_layout_marker_and_round_trip(lake, tmp_path):
    rec = random_session(2_500, 2)
    report = land_records(lake, "AAPL", DAY, rec, rows_per_file=1_000)
    pdir = tmp_path / "lake" / "raw" / "events" / "symbol=AAPL" / "date=2026-01-05"
    assert sorted(p.name for p in pdir.iterdir()) == [
        MARKER_NAME, "part-00000.parquet", "part-00001.parquet", "part-00002.parquet",
    ]  # fmt: skip
    marker = json.loads((pdir / MARKER_NAME).read_text())
    assert marker["rows"] == 2_500 and marker["files"] == [f"part-0000{i}.parquet" for i in range(3)]
    assert marker["symbol"] == "AAPL" and marker["date"] == "2026-01-05" and marker["table"] == "events"
    assert report.rows == 2_500 and report.bytes > 0
    back = read_records(lake, "AAPL", DAY)
    np.testing.assert_array_equal(back, rec)
    # the files alone carry every column too (hive directories are a convenience)
    assert pq.read_table(pdir / "part-00001.parquet").column("seq").to_pylist()[0] == 1_000


def test_relanding_replaces_the_partition(lake, tmp_path):
    land_records(lake, "AAPL", DAY, random_session(3_000, 3), rows_per_file=1_000)
    first = lake.read_marker("events", "AAPL", DAY)
    smaller = random_session(1_500, 4)
    land_records(lake, "AAPL", DAY, smaller, rows_per_file=1_000)
    pdir = tmp_path / "lake" / "raw" / "events" / "symbol=AAPL" / "date=2026-01-05"
    assert sorted(p.name for p in pdir.iterdir()) == [MARKER_NAME, "part-00000.parquet", "part-00001.parquet"]
    np.testing.assert_array_equal(read_records(lake, "AAPL", DAY), smaller)
    second = lake.read_marker("events", "AAPL", DAY)
    assert second.rows == 1_500 and second.landed_at >= first.landed_at
    # same data, same object names and contents (apart from _landed_at)
    land_records(lake, "AAPL", DAY, smaller, rows_per_file=1_000)
    np.testing.assert_array_equal(read_records(lake, "AAPL", DAY), smaller)


def test_complete_partitions_only_lists_marked_ones(lake, tmp_path):
    land_records(lake, "MSFT", DAY, random_session(50, 5))
    land_records(lake, "AAPL", DAY, random_session(50, 6))
    land_records(lake, "AAPL", DAY + dt.timedelta(days=1), random_session(60, 7))
    (tmp_path / "lake" / "raw" / "events" / "symbol=MSFT" / "date=2026-01-05" / MARKER_NAME).unlink()
    found = [(m.symbol, m.date, m.rows) for m in lake.complete_partitions("events")]
    assert found == [("AAPL", DAY, 50), ("AAPL", DAY + dt.timedelta(days=1), 60)]
    with pytest.raises(LakeError, match="not complete"):
        lake.read_partition("events", "MSFT", DAY)
    assert lake.complete_partitions("book_states") == []


def _land_table(lake, rec, symbol="AAPL"):
    land_records(lake, symbol, DAY, rec)


def test_read_records_drops_exact_duplicates_and_rejects_conflicts(lake):
    rec = random_session(200, 8)
    t = events_table(rec, "AAPL", DAY)
    lake.write_partition("events", "AAPL", DAY, t, rows_per_file=120)
    # at-least-once delivery: rows 100..119 landed twice (identical)
    extra = pq.read_table(
        lake.partition_dir("events", "AAPL", DAY) + "/part-00000.parquet", filesystem=lake.fs
    )
    pq.write_table(extra.slice(100, 20), lake.partition_dir("events", "AAPL", DAY) + "/part-99999.parquet",
                   filesystem=lake.fs)  # fmt: skip
    np.testing.assert_array_equal(read_records(lake, "AAPL", DAY), rec)
    # a different record under an existing seq
    bad = rec.copy()
    bad["qty"][5] += 1
    lake.write_partition("events", "AAPL", DAY, t)
    pq.write_table(events_table(bad, "AAPL", DAY).slice(5, 1),
                   lake.partition_dir("events", "AAPL", DAY) + "/part-99999.parquet", filesystem=lake.fs)  # fmt: skip
    with pytest.raises(LakeError, match="two different records with seq 5"):
        read_records(lake, "AAPL", DAY)


def test_read_records_rejects_a_gap(lake):
    t = events_table(random_session(100, 9), "AAPL", DAY)
    lake.write_partition("events", "AAPL", DAY, t.filter(np.arange(100) != 40))
    with pytest.raises(LakeError, match="expected 40, found 41"):
        read_records(lake, "AAPL", DAY)


def test_book_states_landed_from_the_lake(lake):
    rec = random_session(3_000, 10)
    land_records(lake, "AAPL", DAY, rec)
    report, states = land_book_states(lake, "AAPL", DAY)
    assert report.rows == 3_000 and states.n_flagged == 0
    t = lake.read_partition("book_states", "AAPL", DAY)
    ref = reference_top_of_book(rec)
    got = np.column_stack([
        t.column("best_bid_ticks").fill_null(-(2**31)).to_numpy(), t.column("best_bid_qty").to_numpy(),
        t.column("best_ask_ticks").fill_null(-(2**31)).to_numpy(), t.column("best_ask_qty").to_numpy(),
    ])  # fmt: skip
    np.testing.assert_array_equal(got, ref)
    assert t.column("best_ask_ticks").null_count == 2  # the two opening bids come before any ask
    assert lake.read_marker("book_states", "AAPL", DAY).extra["flagged_events"] == 0


def test_land_session_file_writes_events_and_session_row(lake, tmp_path):
    rec = random_session(1_000, 11, p0=12_345)
    path = tmp_path / "AAPL" / "2026-01-05.qrsdp"
    with BinaryFileSink(path, LogHeader(seed=77, p0_ticks=12_345, session_seconds=600), fsync=False) as sink:
        sink.append(rec)
    events, sessions = land_session_file(
        lake, path, "AAPL", DAY, close_ticks=12_300, marker_extra={"run": "x"}
    )
    assert events.rows == 1_000 and sessions.rows == 1
    row = lake.read_partition("sessions", "AAPL", DAY).to_pylist()[0]
    assert (row["seed"], row["open_ticks"], row["close_ticks"], row["session_seconds"]) == (
        77,
        12_345,
        12_300,
        600,
    )
    assert row["market_open_ns"] == int(rec["ts_ns"][0]) and row["events"] == 1_000
    marker = lake.read_marker("events", "AAPL", DAY)
    assert marker.extra["run"] == "x" and marker.extra["open_ticks"] == 12_345


def test_uris():
    local = Lake.from_uri("file:///tmp/some%20lake/")
    assert isinstance(local.fs, pafs.LocalFileSystem) and local.root == "/tmp/some lake" and local.is_local
    assert local.query_root == "/tmp/some lake"
    s3 = Lake.from_uri(
        "s3://qrsdp-lake/prefix/", S3Options(endpoint="http://127.0.0.1:9000", access_key="k", secret_key="s")
    )
    assert isinstance(s3.fs, pafs.S3FileSystem) and not s3.is_local
    assert s3.root == "qrsdp-lake/prefix" and s3.query_root == "s3://qrsdp-lake/prefix"
    assert (
        s3.partition_dir("events", "AAPL", DAY) == "qrsdp-lake/prefix/raw/events/symbol=AAPL/date=2026-01-05"
    )
    assert (S3Options(endpoint="http://h:9").scheme, S3Options(endpoint="http://h:9").host) == ("http", "h:9")
    assert (S3Options(endpoint="h:9").scheme, S3Options(endpoint="h:9").host) == ("https", "h:9")
    assert "secret" not in repr(S3Options(secret_key="secret"))
    with pytest.raises(ValueError, match="unsupported lake URI"):
        Lake.from_uri("gs://bucket/x")
    with pytest.raises(ValueError, match="unknown lake table"):
        local.table_dir("trades")
