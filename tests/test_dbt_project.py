"""dbt project (dbt-duckdb) over a lake landed from generated sessions: marts and data-quality tests.

Each test lands its own small lake (valid order-book streams from book_streams.py),
runs ``dbt build`` in-process (dbtRunner) against its own DuckDB file and reads the
per-node statuses. Broken landings must fail exactly the test meant to catch them.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import duckdb
import numpy as np
import pyarrow.parquet as pq
import pytest
from book_streams import chained_sessions, random_session, reference_top_of_book

from qrsdp_sim.lake import (
    Lake,
    SessionInfo,
    events_table,
    land_book_states,
    land_records,
    land_table,
    sessions_table,
)

DBT_DIR = Path(__file__).resolve().parents[1] / "dbt_project"
SYMBOLS = ["AAPL", "MSFT"]
DATES = [dt.date(2026, 1, 2), dt.date(2026, 1, 5)]
N_EVENTS = 3_000
TEST_VARS = {"min_events_per_session": 100, "max_events_per_session": 100_000}


def land_session(lake: Lake, symbol: str, date: dt.date, rec: np.ndarray, open_ticks: int, *,
                 book_records: np.ndarray | None = None) -> None:  # fmt: skip
    """Land a session the way raw_events + book_states do (sessions row, events, book states)."""
    info = SessionInfo(
        symbol=symbol, date=date, seed=1, open_ticks=open_ticks, close_ticks=None, tick_size=100,
        market_open_ns=int(rec["ts_ns"][0]), session_seconds=600, events=len(rec),
        first_ts_ns=int(rec["ts_ns"][0]), last_ts_ns=int(rec["ts_ns"][-1]), source="test",
    )  # fmt: skip
    land_table(lake, "sessions", symbol, date, sessions_table(info))
    land_records(lake, symbol, date, rec)
    land_book_states(lake, symbol, date, records=rec if book_records is None else book_records)


class Warehouse:
    def __init__(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.lake = Lake.from_uri(tmp_path / "lake")
        self.duckdb = tmp_path / "wh.duckdb"
        self.target = tmp_path / "target"
        monkeypatch.setenv("QRSDP_DUCKDB_PATH", str(self.duckdb))

    def build(self, partitions: list[tuple[str, dt.date]] | None = None, *extra: str) -> dict[str, str]:
        from dbt.cli.main import dbtRunner

        dbt_vars = {**TEST_VARS, "lake_root": self.lake.query_root}
        if partitions:
            dbt_vars["partitions"] = [{"symbol": s, "date": d.isoformat()} for s, d in partitions]
        res = dbtRunner().invoke([
            "build", "--project-dir", str(DBT_DIR), "--profiles-dir", str(DBT_DIR),
            "--target-path", str(self.target), "--log-path", str(self.target), "--quiet",
            "--vars", json.dumps(dbt_vars), *extra,
        ])  # fmt: skip
        from dbt.adapters.duckdb.connections import DuckDBConnectionManager

        DuckDBConnectionManager.close_all_connections()  # release the file, as a dbt process would
        if res.exception is not None:
            raise res.exception
        return {r.node.name: str(r.status) for r in res.result.results}

    def query(self, sql: str):
        with duckdb.connect(str(self.duckdb), read_only=True) as con:
            return con.sql(sql).fetchall()


@pytest.fixture
def wh(tmp_path, monkeypatch):
    return Warehouse(tmp_path, monkeypatch)


def failing(statuses: dict[str, str]) -> set[str]:
    return {name for name, status in statuses.items() if status in ("fail", "error")}


def test_good_lake_builds_marts_and_passes_every_test(wh):
    sessions = chained_sessions(SYMBOLS, DATES, N_EVENTS)
    for (sym, day), (rec, open_ticks, _close) in sessions.items():
        land_session(wh.lake, sym, day, rec, open_ticks)
    statuses = wh.build()
    assert failing(statuses) == set()
    assert len([n for n in statuses if n.startswith(("stg_", "fct_"))]) >= 5
    n_tests = sum(1 for s in statuses.values() if s == "pass")
    assert n_tests >= 40

    rows = wh.query(
        "select symbol, date, n_events, open_ticks, close_ticks, n_trades, volume, max_spread_ticks "
        "from marts.fct_session_summary order by symbol, date"
    )
    assert len(rows) == 4
    for sym, day, n_events, open_ticks, close_ticks, n_trades, volume, max_spread in rows:
        rec, exp_open, exp_close = sessions[(sym, day)]
        trades = rec[rec["type"] >= 4]
        tob = reference_top_of_book(rec)
        two_sided = (tob[:, 0] != -(2**31)) & (tob[:, 2] != -(2**31))
        assert (n_events, open_ticks, close_ticks) == (N_EVENTS, exp_open, exp_close)
        assert (n_trades, volume) == (len(trades), int(trades["qty"].sum()))
        assert max_spread == int((tob[two_sided, 2] - tob[two_sided, 0]).max())

    # 1-minute bars: trade counts and volumes add up to the session's
    bars = wh.query(
        "select symbol, date, sum(trade_count), sum(volume), min(minute_index), count(*) "
        "from marts.fct_ohlcv_1min group by all order by all"
    )
    summary = {
        (r[0], r[1]): r
        for r in wh.query("select symbol, date, n_trades, volume from marts.fct_session_summary")
    }
    for sym, day, trades, vol, first_minute, n_bars in bars:
        assert (trades, vol) == summary[(sym, day)][2:]
        assert first_minute == 0 and n_bars >= 1
    # the first bar's OHLC from the raw trades
    rec = sessions[("AAPL", DATES[0])][0]
    t = rec[(rec["type"] >= 4) & (rec["ts_ns"] < rec["ts_ns"][0] + 60 * 10**9)]
    got = wh.query(
        "select open_ticks, high_ticks, low_ticks, close_ticks, trade_count from marts.fct_ohlcv_1min "
        "where symbol = 'AAPL' and date = '2026-01-02' and minute_index = 0"
    )[0]
    p = t["price_ticks"]
    assert got == (p[0], p.max(), p.min(), p[-1], len(t))


def test_partition_scoped_build_replaces_only_its_partitions(wh):
    sessions = chained_sessions(SYMBOLS, DATES, N_EVENTS)
    for (sym, day), (rec, open_ticks, _close) in sessions.items():
        land_session(wh.lake, sym, day, rec, open_ticks)
    assert failing(wh.build()) == set()
    before = wh.query("select * exclude (n_events, first_ts_ns, last_ts_ns) from marts.fct_session_summary "
                      "where symbol = 'MSFT' order by date")  # fmt: skip
    # re-land AAPL's second date with a different session (same open, so the chain still holds)
    _rec, open_ticks, _ = sessions[("AAPL", DATES[1])]
    new = random_session(N_EVENTS + 500, 99, p0=open_ticks)
    land_session(wh.lake, "AAPL", DATES[1], new, open_ticks)
    statuses = wh.build([("AAPL", DATES[1])])
    assert failing(statuses) == set()
    assert wh.query("select n_events from marts.fct_session_summary where symbol = 'AAPL' order by date") == [
        (N_EVENTS,), (N_EVENTS + 500,),
    ]  # fmt: skip
    after = wh.query("select * exclude (n_events, first_ts_ns, last_ts_ns) from marts.fct_session_summary "
                     "where symbol = 'MSFT' order by date")  # fmt: skip
    assert after == before
    # the same build again changes nothing (idempotent)
    wh.build([("AAPL", DATES[1])])
    assert wh.query("select count(*) from marts.fct_session_summary") == [(4,)]
    # a full refresh limited to one partition would drop the others: refused
    refused = wh.build([("AAPL", DATES[1])], "--full-refresh")
    assert refused["fct_session_summary"] == "error" and refused["fct_ohlcv_1min"] == "error"
    assert wh.query("select count(*) from marts.fct_session_summary") == [(4,)]


def test_duplicate_seq_fails_the_unique_test(wh):
    rec = random_session(N_EVENTS, 5)
    land_session(wh.lake, "AAPL", DATES[0], rec, 10_000)
    # a second file in the partition re-uses seq 10 for a different record
    clash = events_table(rec, "AAPL", DATES[0]).slice(11, 1)
    clash = clash.set_column(clash.schema.get_field_index("seq"), "seq", [[10]])
    pq.write_table(clash, wh.lake.partition_dir("events", "AAPL", DATES[0]) + "/part-00001.parquet")
    statuses = wh.build([("AAPL", DATES[0])])
    assert statuses["stg_events_unique_symbol_date_seq"] == "fail"
    assert "stg_events_removals_match_earlier_add" not in failing(statuses)


def test_identical_duplicate_rows_are_harmless(wh):
    rec = random_session(N_EVENTS, 6)
    land_session(wh.lake, "AAPL", DATES[0], rec, 10_000)
    again = events_table(rec, "AAPL", DATES[0]).slice(100, 50)  # at-least-once: landed twice
    pq.write_table(again, wh.lake.partition_dir("events", "AAPL", DATES[0]) + "/part-00001.parquet")
    statuses = wh.build()
    assert failing(statuses) == set()
    assert wh.query("select max(landed_copies), count(*) from staging.stg_events") == [(2, N_EVENTS)]


def test_cancel_of_unknown_order_fails_the_reference_test(wh):
    rec = random_session(N_EVENTS, 7)
    broken = rec.copy()
    k = int(np.flatnonzero(broken["type"] == 2)[10])
    broken["order_id"][k] = 987_654_321
    land_session(wh.lake, "AAPL", DATES[0], broken, 10_000, book_records=rec)
    statuses = wh.build()
    assert statuses["stg_events_removals_match_earlier_add"] == "fail"
    assert statuses["stg_events_unique_symbol_date_seq"] == "pass"
    bad = wh.query(
        "select seq, order_id from staging.stg_events where event_category = 'cancel' "
        "and order_id not in (select order_id from staging.stg_events where event_category = 'add')"
    )
    assert bad == [(k, 987_654_321)]


def test_gap_in_the_chain_fails_the_continuity_test(wh):
    sessions = chained_sessions(["AAPL"], DATES, N_EVENTS)
    (rec1, open1, close1), (rec2, _open2, _) = sessions[("AAPL", DATES[0])], sessions[("AAPL", DATES[1])]
    land_session(wh.lake, "AAPL", DATES[0], rec1, open1)
    assert failing(wh.build()) == set()
    # the next day opens 5 ticks away from the previous close
    rec2 = random_session(N_EVENTS, 8, p0=close1 + 5)
    land_session(wh.lake, "AAPL", DATES[1], rec2, close1 + 5)
    statuses = wh.build([("AAPL", DATES[1])])
    assert failing(statuses) == {"fct_session_summary_sessions_chain"}
    # a missing trading date is a gap too, even when the prices happen to chain
    land_session(wh.lake, "AAPL", DATES[1], random_session(N_EVENTS, 9, p0=close1), close1)
    assert failing(wh.build([("AAPL", DATES[1])])) == set()
    skipped = dt.date(2026, 1, 7)  # 2026-01-06 never landed
    close2 = wh.query("select close_ticks from marts.fct_session_summary where date = '2026-01-05'")[0][0]
    land_session(wh.lake, "AAPL", skipped, random_session(N_EVENTS, 10, p0=close2), close2)
    statuses = wh.build([("AAPL", skipped)])
    assert failing(statuses) == {"fct_session_summary_sessions_chain"}


def test_row_count_bounds_come_from_vars(wh, monkeypatch):
    rec = random_session(500, 11)
    land_session(wh.lake, "AAPL", DATES[0], rec, 10_000)
    monkeypatch.setitem(TEST_VARS, "min_events_per_session", 1_000)
    statuses = wh.build()
    assert failing(statuses) == {"stg_events_rows_per_session_in_range"}
