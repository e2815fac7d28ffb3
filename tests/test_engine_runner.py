"""Determinism, partition independence, price chaining and the manifest of multi-day runs."""

from __future__ import annotations

import datetime as dt
import itertools
import json

import numpy as np
import pytest

from qrsdp_sim.engine import HLR, SessionConfig, simulate_session, simulate_to_file
from qrsdp_sim.engine.realism import Realism
from qrsdp_sim.engine.runner import (
    RunSpec,
    Security,
    parse_securities,
    run,
    session_path,
    simulate_symbol_date,
)
from qrsdp_sim.engine.seeds import session_seed
from qrsdp_sim.eventlog.reader import read_records
from qrsdp_sim.records import EventType
from qrsdp_sim.sinks import InMemorySink

SECONDS = 1800


def final_book(records: np.ndarray) -> tuple[int, int]:
    """Best bid and ask after the last record, from the records alone (all quantities are 1)."""
    removed = np.isin(
        records["type"],
        [EventType.CANCEL_BID, EventType.CANCEL_ASK, EventType.EXECUTE_BUY, EventType.EXECUTE_SELL],
    )
    adds = records[~removed]
    gone = np.isin(adds["order_id"], records["order_id"][removed])
    live = adds[~gone]
    bids = live["price_ticks"][live["type"] == EventType.ADD_BID]
    asks = live["price_ticks"][live["type"] == EventType.ADD_ASK]
    return int(bids.max()), int(asks.min())


@pytest.fixture(scope="module")
def three_by_three(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    spec = RunSpec(base_seed=11, days=3, start_date=dt.date(2026, 1, 1), session_seconds=SECONDS)
    secs = parse_securities("AAPL:10000,MSFT:15000,X1:500")
    return spec, secs, run(spec, secs, out, workers=2)


def test_same_seed_gives_byte_identical_files(tmp_path):
    cfg = SessionConfig(seed=99, session_seconds=SECONDS)
    a = simulate_to_file(cfg, tmp_path / "a.qrsdp", fsync=False)
    b = simulate_to_file(cfg, tmp_path / "b.qrsdp", fsync=False)
    assert (tmp_path / "a.qrsdp").read_bytes() == (tmp_path / "b.qrsdp").read_bytes()
    assert a.events == b.events and a.close_ticks == b.close_ticks
    c = simulate_to_file(SessionConfig(seed=100, session_seconds=SECONDS), tmp_path / "c.qrsdp", fsync=False)
    assert (tmp_path / "c.qrsdp").read_bytes() != (tmp_path / "a.qrsdp").read_bytes()
    assert c.events != a.events


@pytest.mark.parametrize("model", [None, HLR()], ids=["simple", "hlr"])
def test_output_does_not_depend_on_the_batch_size(model):
    kw = {} if model is None else {"model": model}
    runs = []
    for batch in (65_536, 1_000, 57):
        sink = InMemorySink()
        simulate_session(SessionConfig(seed=5, session_seconds=600, batch_records=batch, **kw), sink)
        runs.append(sink.records)
    assert len(runs[0]) > 10_000
    for other in runs[1:]:
        assert np.array_equal(runs[0], other)


def test_file_holds_exactly_the_streamed_records(tmp_path):
    cfg = SessionConfig(seed=3, session_seconds=600)
    sink = InMemorySink()
    simulate_session(cfg, sink)
    result = simulate_to_file(cfg, tmp_path / "s.qrsdp", extra_sinks=[mem := InMemorySink()], fsync=False)
    on_disk = read_records(tmp_path / "s.qrsdp")
    assert np.array_equal(on_disk, sink.records)
    assert np.array_equal(mem.records, sink.records)
    assert result.events == len(on_disk) == sum(result.counts)
    assert result.file_bytes == (tmp_path / "s.qrsdp").stat().st_size


def test_session_layout_timestamps_and_ids():
    cfg = SessionConfig(seed=8, session_seconds=600, market_open_ns=(10 * 3600 + 15 * 60) * 10**9)
    sink = InMemorySink()
    res = simulate_session(cfg, sink)
    rec = sink.records
    open_ns = (10 * 3600 + 15 * 60) * 10**9
    ts = rec["ts_ns"].astype(np.int64)
    assert ts[0] == open_ns and np.all(np.diff(ts) >= 0) and ts[-1] < open_ns + 600 * 10**9
    adds = rec[rec["type"] <= 1]
    assert np.all(np.diff(adds["order_id"].astype(np.int64)) > 0)  # ADD ids strictly increase
    assert adds["order_id"][0] == 1 and res.last_order_id == adds["order_id"][-1]
    assert np.all(rec["qty"] >= 1) and len(np.unique(adds["qty"])) >= 5  # real order sizes
    assert (res.best_bid, res.best_ask) == final_book(rec)
    assert res.close_ticks == (res.best_bid + res.best_ask) // 2


def test_runs_are_chained_and_files_are_where_the_manifest_says(three_by_three):
    _spec, secs, result = three_by_three
    m = result.manifest
    assert m["format"] == "1.1"
    assert [e["symbol"] for e in m["securities"]] == ["AAPL", "MSFT", "X1"]
    dates = ["2026-01-01", "2026-01-02", "2026-01-05"]  # weekdays only (Jan 3-4 2026 is a weekend)
    for sec, entry in zip(secs, m["securities"], strict=True):
        assert entry["p0_ticks"] == sec.p0_ticks
        sessions = entry["sessions"]
        assert [s["date"] for s in sessions] == dates
        assert sessions[0]["open_ticks"] == sec.p0_ticks
        for prev, cur in itertools.pairwise(sessions):
            assert cur["open_ticks"] == prev["close_ticks"]  # chaining
        for s in sessions:
            path = result.output_dir / s["file"]
            assert path == session_path(result.output_dir, sec.symbol, dt.date.fromisoformat(s["date"]))
            rec = read_records(path)
            assert len(rec) == s["events"]
            assert s["seed"] == session_seed(11, sec.symbol, dt.date.fromisoformat(s["date"]))
            # the opening book is re-seeded around the open: best bid open - 1, best ask open + 1
            first = rec[: 2 * 5 * 5]
            assert first["price_ticks"][first["type"] == 0].max() == s["open_ticks"] - 1
            assert first["price_ticks"][first["type"] == 1].min() == s["open_ticks"] + 1
            # close rule: floor of the final mid, recomputed from the records alone
            bb, ba = final_book(rec)
            assert s["close_ticks"] == (bb + ba) // 2
    assert json.loads(result.manifest_path.read_text()) == m


def test_a_symbol_date_alone_is_byte_identical_to_the_same_one_inside_a_run(three_by_three, tmp_path):
    spec, _, result = three_by_three
    entry = result.manifest["securities"][1]  # MSFT, third date: chained twice, run in a worker thread
    s = entry["sessions"][2]
    alone = tmp_path / "alone.qrsdp"
    res = simulate_symbol_date(spec, "MSFT", dt.date.fromisoformat(s["date"]), s["open_ticks"], alone)
    assert alone.read_bytes() == (result.output_dir / s["file"]).read_bytes()
    assert res.close_ticks == s["close_ticks"]


def test_results_do_not_depend_on_list_position_or_workers(three_by_three, tmp_path):
    spec, _, result = three_by_three
    other = run(spec, [Security("X1", 500), Security("AAPL", 10_000)], tmp_path, workers=1)
    assert other.manifest["format"] == "1.1"
    for sym in ("X1", "AAPL"):
        for day in spec.dates():
            a = session_path(result.output_dir, sym, day).read_bytes()
            b = session_path(tmp_path, sym, day).read_bytes()
            assert a == b


def test_single_security_manifest_is_format_1_0(tmp_path):
    spec = RunSpec(base_seed=1, days=2, session_seconds=60)
    res = run(spec, [Security("ONE", 2000)], tmp_path)
    m = json.loads((tmp_path / "manifest.json").read_text())
    assert m["format"] == "1.0"
    for key in (
        "run_id",
        "producer",
        "base_seed",
        "seed_strategy",
        "tick_size",
        "p0_ticks",
        "session_seconds",
        "levels_per_side",
        "initial_spread_ticks",
        "initial_depth",
        "model",
        "sessions",
    ):
        assert key in m, key
    assert m["model"]["name"] == "simple" and m["model"]["params"]["base_L"] == 16.0
    # the realism layers are recorded, so the run can be reproduced from its manifest
    assert m["realism"]["sizes"]["queue_unit"] > 1 and m["realism"]["excitation"]["branching"] == 0.6
    assert Realism.from_dict(m["realism"]).to_dict() == spec.realism.to_dict()
    assert set(m["sessions"][0]) == {"date", "seed", "file", "events", "open_ticks", "close_ticks"}
    assert m["sessions"][0]["date"] == "2026-01-02" and m["sessions"][1]["date"] == "2026-01-05"
    assert res.sessions[1].result.open_ticks == res.sessions[0].result.close_ticks


@pytest.mark.parametrize(
    "text",
    ["AAPL", "AAPL:abc", "aapl:100", "TOOLONGSYM:1", "A:1,A:2", "A-B:10", ":10", "A:0"],
)
def test_bad_securities_are_rejected(text):
    with pytest.raises(ValueError):
        parse_securities(text)


def test_pool_growth_during_a_session_changes_nothing():
    from qrsdp_sim.engine.session import SessionDriver

    cfg = SessionConfig(seed=12, session_seconds=900, batch_records=5_000)
    big = np.concatenate([r for r, _ in SessionDriver(cfg).batches()])
    small_driver = SessionDriver(cfg, pool_size=1)  # starts at the minimum; grows many times
    small = np.concatenate([r for r, _ in small_driver.batches()])
    assert small_driver.book.oid.shape[0] > 2 * (2 * 5 * 5 + 26)
    assert np.array_equal(big, small)


class _Broken:
    def append(self, batch):
        raise OSError("disk on fire")

    def flush(self):
        pass

    def close(self):
        pass


def test_a_failing_extra_sink_is_reported_and_the_file_still_written(tmp_path):
    mem = InMemorySink()
    res = simulate_to_file(
        SessionConfig(seed=4, session_seconds=60), tmp_path / "f.qrsdp", extra_sinks=[_Broken(), mem]
    )
    assert len(read_records(tmp_path / "f.qrsdp")) == res.events == len(mem.records)
    assert len(res.sink_failures) == 1 and "disk on fire" in res.sink_failures[0]


def test_a_file_that_cannot_be_put_in_place_fails_the_run_without_a_manifest(tmp_path):
    """Files are closed (index, fsync, rename) on a background thread: a close that fails still fails
    the run, before any manifest is written, and leaves neither the session nor a partial file."""
    spec = RunSpec(base_seed=3, days=2, start_date=dt.date(2026, 1, 1), session_seconds=60)
    blocked = session_path(tmp_path, "BBB", spec.dates()[0])
    blocked.mkdir(parents=True)  # a directory with content where the first BBB file must go
    (blocked / "keep").write_text("x")
    with pytest.raises(OSError):
        run(spec, parse_securities("AAA:10000,BBB:20000"), tmp_path, workers=2)
    assert not (tmp_path / "manifest.json").exists()
    assert list(tmp_path.rglob("*.partial")) == []
    assert blocked.is_dir() and (blocked / "keep").read_text() == "x"
    for day in spec.dates():  # the other security's sessions were finished and are complete
        assert len(read_records(session_path(tmp_path, "AAA", day))) > 0


def test_closed_size_is_the_size_of_the_closed_file(tmp_path):
    from qrsdp_sim.eventlog.writer import BinaryFileSink

    cfg = SessionConfig(seed=7, session_seconds=120)
    sink = BinaryFileSink(tmp_path / "s.qrsdp", cfg.header())
    simulate_session(cfg, sink)
    with pytest.raises(ValueError, match="flush"):
        _ = sink.closed_size
    sink.flush()
    size = sink.closed_size
    sink.close()
    assert (tmp_path / "s.qrsdp").stat().st_size == size
