"""Round trips through BinaryFileSink and EventLogReader, with and without the index.

Every read path (sequential, chunk k, time range, whole file, Arrow, polars) must agree
with slicing the records that were written.
"""

from __future__ import annotations

import itertools
import shutil
import tempfile
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from qrsdp_log_testutil import expected_chunk_sizes, make_records, same_records, strip_index, write_log

from qrsdp_sim.eventlog.reader import EventLogReader, read_records
from qrsdp_sim.records import RECORD_DTYPE

HYP = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def sessions(draw):
    n = draw(st.integers(0, 400))
    capacity = draw(st.one_of(st.integers(1, 8), st.integers(9, 120), st.just(4096)))
    splits = sorted(draw(st.sets(st.integers(1, max(1, n - 1)), max_size=12))) if n > 1 else []
    n_batches = len(splits) + 1
    flush_after = draw(st.sets(st.integers(0, n_batches - 1), max_size=4))
    seed = draw(st.integers(0, 2**32 - 1))
    max_step = draw(st.sampled_from([1, 3, 1000]))
    dup_prob = draw(st.sampled_from([0.0, 0.5, 0.95]))
    recs = make_records(n, seed, max_step=max_step, dup_prob=dup_prob)
    return recs, capacity, splits, flush_after


def expected_range(recs: np.ndarray, a: int, b: int) -> np.ndarray:
    assert 0 <= a < 2**64 and 0 <= b < 2**64
    ts = recs["ts_ns"]
    return recs[(ts >= np.uint64(a)) & (ts < np.uint64(b))]


def range_points(recs: np.ndarray, chunk_sizes: list[int]) -> list[int]:
    """Interesting range endpoints: chunk boundary timestamps and their neighbours."""
    if not len(recs):
        return [0, 1, 10**12]
    pts = {0, int(recs["ts_ns"][0]) - 1, int(recs["ts_ns"][-1]) + 1, 2**64 - 1}
    start = 0
    for size in chunk_sizes:
        for i in (start, start + size - 1):
            t = int(recs["ts_ns"][i])
            pts |= {t - 1, t, t + 1}
        start += size
    return sorted(pts)


def check_reader(r: EventLogReader, recs: np.ndarray, sizes: list[int], data: st.DataObject) -> None:
    assert r.record_count == len(recs)
    assert r.chunk_count == len(sizes)
    assert [c.record_count for c in r.chunks] == sizes
    # whole file, several ways
    assert same_records(r.read_all(), recs)
    assert same_records(r.read_all(threads=1), recs)
    assert same_records(r.read_all(threads=3), recs)
    got = list(r.iter_chunks())
    assert [len(c) for c in got] == sizes
    assert same_records(np.concatenate(got) if got else np.empty(0, RECORD_DTYPE), recs)
    # random access: chunk k is the k-th slice
    starts = np.concatenate(([0], np.cumsum(sizes))).astype(int)
    for k in range(len(sizes)):
        assert same_records(r.read_chunk(k), recs[starts[k] : starts[k + 1]])
    if sizes:
        assert same_records(r.read_chunk(-1), recs[starts[-2] :])
    for bad in (len(sizes), len(sizes) + 5, -len(sizes) - 1):
        with pytest.raises(IndexError):
            r.read_chunk(bad)
    # time ranges: chunk-boundary endpoints, plus random ones
    pts = range_points(recs, sizes)
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    pairs = list(itertools.pairwise(pts))  # consecutive boundary points
    picks = rng.integers(0, len(pts), size=(150, 2))
    pairs += [(pts[i], pts[j]) for i, j in picks]  # includes a > b: empty ranges
    lo = int(recs["ts_ns"][0]) - 2 if len(recs) else 0
    hi = int(recs["ts_ns"][-1]) + 2 if len(recs) else 10
    pairs += [(data.draw(st.integers(lo, hi)), data.draw(st.integers(lo, hi))) for _ in range(5)]
    for a, b in pairs:
        got = r.read_range(a, b)
        assert same_records(got, expected_range(recs, a, b)), (a, b)


@HYP
@given(sessions(), st.data())
def test_roundtrip_with_and_without_index(session, data) -> None:
    recs, capacity, splits, flush_after = session
    sizes = expected_chunk_sizes(len(recs), capacity, splits, flush_after)
    tmp = Path(tempfile.mkdtemp(prefix="qrsdp-rt-"))
    try:
        path = write_log(tmp / "s.qrsdp", recs, capacity, splits=splits, flush_after=flush_after)
        assert [p.name for p in tmp.iterdir()] == ["s.qrsdp"]
        r = EventLogReader(path)
        assert r.index is not None
        check_reader(r, recs, sizes, data)
        assert same_records(read_records(path), recs)
        strip_index(path)
        r2 = EventLogReader(path)
        assert r2.index is None
        check_reader(r2, recs, sizes, data)
    finally:
        shutil.rmtree(tmp)


def test_equal_timestamps_spanning_chunks(tmp_path: Path) -> None:
    recs = make_records(40, seed=11, dup_prob=0.0, max_step=1)
    # ts 5 repeated across several chunks of 3, bracketed by smaller and larger stamps
    ts = np.array([1, 2, 3] + [5] * 14 + [6] * 4 + [9] * 19, dtype=np.uint64)
    assert len(ts) == len(recs)
    recs["ts_ns"] = ts
    for strip in (False, True):
        path = write_log(tmp_path / f"eq{strip}.qrsdp", recs, 3)
        if strip:
            strip_index(path)
        r = EventLogReader(path)
        assert r.chunk_count == 14
        assert same_records(r.read_range(5, 6), recs[3:17])
        assert same_records(r.read_range(5, 7), recs[3:21])
        assert same_records(r.read_range(4, 5), recs[0:0])
        assert same_records(r.read_range(3, 5), recs[2:3])
        assert same_records(r.read_range(6, 9), recs[17:21])
        assert same_records(r.read_range(9, 10), recs[21:])
        assert same_records(r.read_range(0, 2**64), recs)
        for a, b in ((5, 5), (6, 5), (0, 0), (10, 100)):
            got = r.read_range(a, b)
            assert len(got) == 0 and got.dtype == RECORD_DTYPE


@settings(max_examples=30, deadline=None)
@given(n=st.integers(0, 300), capacity=st.integers(1, 64), seed=st.integers(0, 2**16))
def test_to_arrow_and_to_polars(n: int, capacity: int, seed: int) -> None:
    recs = make_records(n, seed)
    tmp = Path(tempfile.mkdtemp(prefix="qrsdp-ar-"))
    try:
        r = EventLogReader(write_log(tmp / "s.qrsdp", recs, capacity))
        expected_types = {
            "ts_ns": (pa.uint64(), pl.UInt64),
            "type": (pa.uint8(), pl.UInt8),
            "side": (pa.uint8(), pl.UInt8),
            "price_ticks": (pa.int32(), pl.Int32),
            "qty": (pa.uint32(), pl.UInt32),
            "order_id": (pa.uint64(), pl.UInt64),
        }
        table = r.to_arrow()
        assert isinstance(table, pa.Table)
        assert table.column_names == list(expected_types)
        assert table.num_rows == n
        df = r.to_polars()
        assert isinstance(df, pl.DataFrame)
        assert df.columns == list(expected_types)
        assert df.height == n
        for name, (pa_type, pl_type) in expected_types.items():
            assert table.schema.field(name).type == pa_type
            assert df.schema[name] == pl_type
            assert table.column(name).to_pylist() == recs[name].tolist()
            assert df[name].to_list() == recs[name].tolist()
    finally:
        shutil.rmtree(tmp)


def test_large_file_read_paths_agree(tmp_path: Path) -> None:
    """Above the reader's in-memory threshold (memory-mapped path) and with many threads."""
    recs = make_records(120_000, seed=12)
    path = write_log(tmp_path / "big.qrsdp", recs, 4096, splits=[1, 65_536, 65_537])
    assert path.stat().st_size > (1 << 20)
    r = EventLogReader(path)
    assert same_records(r.read_all(threads=2), recs)
    assert same_records(r.read_all(threads=8), recs)
    a, b = int(recs["ts_ns"][30_000]), int(recs["ts_ns"][90_000])
    ts = recs["ts_ns"]
    assert same_records(r.read_range(a, b), recs[(ts >= a) & (ts < b)])
    assert same_records(r.read_chunk(17), recs[17 * 4096 : 18 * 4096])
