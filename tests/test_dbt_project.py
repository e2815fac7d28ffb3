"""dbt project (dbt-duckdb) over a lake landed from generated sessions: marts and data-quality tests.

Each test lands its own small lake (valid order-book streams from book_streams.py),
runs ``dbt build`` in-process (dbtRunner) against its own DuckDB file and reads the
per-node statuses. The run's partitions go to dbt the way Dagster passes them: a CSV file named
by QRSDP_DBT_PARTITIONS_FILE. Broken landings must fail the test meant to catch them:
``test_every_data_test_goes_red_on_its_bad_data`` lands one defect per partition and checks,
through the stored failures, that each dbt test reports exactly its partition.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from book_streams import chained_sessions, floor_mid_after, random_session, reference_top_of_book

from qrsdp_sim.lake import (
    SESSIONS_SCHEMA,
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
TEST_VARS = {"min_events_per_session": 100, "max_events_per_session": 100_000}  # env QRSDP_<NAME>


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
        self.partitions_file = tmp_path / "partitions.csv"
        self.monkeypatch = monkeypatch
        monkeypatch.setenv("QRSDP_DUCKDB_PATH", str(self.duckdb))
        monkeypatch.setenv("QRSDP_LAKE_ROOT", self.lake.query_root)
        for name, value in TEST_VARS.items():
            monkeypatch.setenv(f"QRSDP_{name.upper()}", str(value))

    def build(self, partitions: list[tuple[str, dt.date]] | None = None, *extra: str,
              command: str = "build") -> dict[str, str]:  # fmt: skip
        """``dbt <command>`` for ``partitions`` (passed in a file, as Dagster does), else everything."""
        from dbt.cli.main import dbtRunner

        if partitions:
            write_partitions_file(self.partitions_file, partitions)
            self.monkeypatch.setenv("QRSDP_DBT_PARTITIONS_FILE", str(self.partitions_file))
        else:
            self.monkeypatch.delenv("QRSDP_DBT_PARTITIONS_FILE", raising=False)
        res = dbtRunner().invoke([
            command, "--project-dir", str(DBT_DIR), "--profiles-dir", str(DBT_DIR),
            "--target-path", str(self.target), "--log-path", str(self.target), "--quiet", *extra,
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


def write_partitions_file(path: Path, partitions: list[tuple[str, dt.date]]) -> None:
    path.write_text("symbol,date\n" + "".join(f"{s},{d.isoformat()}\n" for s, d in partitions))


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
    assert n_tests == len(ALL_TESTS)

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
    assert refused["stg_sessions"] == "error" and refused["stg_event_landings"] == "error"
    assert {refused["fct_session_summary"], refused["fct_ohlcv_1min"]} <= {"error", "skipped"}
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


def store_out_of_seq_order(lake: Lake, table: str, symbol: str, day: dt.date) -> None:
    """Rewrite a landed partition as two files holding its second half, then its first half."""
    directory = Path(lake.partition_dir(table, symbol, day))
    rows = pq.read_table(directory / "part-00000.parquet")
    half = rows.num_rows // 2
    pq.write_table(rows.slice(half), directory / "part-00000.parquet")
    pq.write_table(rows.slice(0, half), directory / "part-00001.parquet")


def reference_spreads(rec: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The top of book after each event, which states are two-sided, their spreads, and how long
    each lasted (the last until the close: land_session's market opens at the first event, 600 s)."""
    tob = reference_top_of_book(rec)
    two_sided = (tob[:, 0] != -(2**31)) & (tob[:, 2] != -(2**31))
    spread = (tob[:, 2] - tob[:, 0]).astype(float)
    close_ns = int(rec["ts_ns"][0]) + 600 * 10**9
    dwell = np.diff(np.append(rec["ts_ns"].astype(np.int64), close_ns)).clip(min=0)
    return tob, two_sided, spread, dwell


def test_session_summary_is_the_same_whatever_order_the_partition_is_stored_in(wh):
    """The summary takes the statistics of partitions stored in seq order from the staging passes
    (one streaming pass each) and sorts the others itself: both ways give the same row, and the
    spreads and VWAP match a reference computed here."""
    rec = random_session(N_EVENTS, 21)
    land_session(wh.lake, "AAPL", DATES[0], rec, 10_000)  # stored in seq order, as landed
    land_session(wh.lake, "MSFT", DATES[0], rec, 10_000)
    for table in ("events", "book_states"):
        store_out_of_seq_order(wh.lake, table, "MSFT", DATES[0])
    assert failing(wh.build()) == set()
    for checks in ("stg_event_checks", "stg_book_state_checks"):
        assert wh.query(f"select symbol, in_seq_order from staging.{checks} order by 1") == [
            ("AAPL", True), ("MSFT", False),
        ]  # fmt: skip
    in_order, reordered = wh.query(
        "select * exclude (symbol) from marts.fct_session_summary order by symbol"
    )  # fmt: skip
    assert in_order == reordered

    _tob, two_sided, spread, dwell = reference_spreads(rec)
    trades = rec[rec["type"] >= 4]
    expected = (
        spread[two_sided].mean(),
        (spread * dwell)[two_sided].sum() / dwell[two_sided].sum(),
        (trades["price_ticks"].astype(float) * trades["qty"]).sum() / trades["qty"].sum(),
        int((rec["type"] == 0).sum()), int((rec["type"] == 5).sum()), int(trades["price_ticks"][0]),
    )  # fmt: skip
    got = wh.query(
        "select mean_spread_ticks, time_weighted_spread_ticks, vwap * 10000.0 / tick_size, n_add_bid, "
        "n_execute_sell, first_trade * 10000.0 / tick_size from marts.fct_session_summary order by symbol"
    )  # fmt: skip
    for row in got:
        assert row[3:5] == expected[3:5] and round(row[5]) == expected[5]
        assert np.allclose(row[:3], expected[:3], rtol=1e-9)


def test_a_one_sided_last_state_weighs_nothing_in_either_order(wh):
    """The last book state lasts until the close; when it is one-sided it has no spread and adds
    no time to the time-weighted spread, whether the partition is stored in seq order (the staging
    pass's last state) or not (the mart's sorted path), and the close is the last floor mid there is."""
    rec = random_session(N_EVENTS, 21)
    for symbol in ("AAPL", "MSFT"):
        land_session(wh.lake, symbol, DATES[0], rec, 10_000)
        path = Path(wh.lake.partition_dir("book_states", symbol, DATES[0])) / "part-00000.parquet"
        states = pq.read_table(path)
        asks = states.column("best_ask_ticks").to_pylist()
        asks[-1] = None  # the last event took the last ask
        states = states.set_column(states.schema.get_field_index("best_ask_ticks"), "best_ask_ticks",
                                   pa.array(asks, states.schema.field("best_ask_ticks").type))  # fmt: skip
        pq.write_table(states, path)
    store_out_of_seq_order(wh.lake, "book_states", "MSFT", DATES[0])
    build = wh.build()
    assert failing(build) - {"fct_session_summary_close_matches_engine"} == set()
    in_order, reordered = wh.query(
        "select time_weighted_spread_ticks, close_ticks, n_one_sided_states from marts.fct_session_summary order by symbol"
    )  # fmt: skip
    assert in_order == reordered

    tob, two_sided, spread, dwell = reference_spreads(rec)
    two_sided[-1] = False
    assert dwell[-1] > 0
    expected = (spread * dwell)[two_sided].sum() / dwell[two_sided].sum()
    assert np.isclose(in_order[0], expected, rtol=1e-9)
    last_mid = (tob[-2, 0] + tob[-2, 2]) // 2 if two_sided[-2] else None
    if last_mid is not None:
        assert in_order[1] == last_mid


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


def test_row_count_bounds_come_from_the_environment(wh, monkeypatch):
    rec = random_session(500, 11)
    land_session(wh.lake, "AAPL", DATES[0], rec, 10_000)
    assert failing(wh.build()) == set()
    monkeypatch.setenv("QRSDP_MIN_EVENTS_PER_SESSION", "1000")
    statuses = wh.build()
    assert failing(statuses) == {"stg_events_rows_per_session_in_range"}


# ---------------------------------------------------------------------------------------------
# Every data test goes red on its bad data. One lake, one partition per defect (symbol D01..,
# one date), one `dbt build --store-failures`: each test must report exactly the partitions whose
# defect it exists to catch (a defect may trip other tests too; then they are listed), and never
# the good partitions (which include partial cancels, partial fills and a correct sweep).

ALL_TESTS = {
    "stg_sessions_open_ticks_not_null", "stg_sessions_market_open_not_null",
    "stg_events_unique_symbol_date_seq", "stg_events_seq_has_no_gaps", "stg_events_ts_non_decreasing_by_seq",
    "stg_events_seq_not_null", "stg_events_ts_ns_not_null", "stg_events_event_type_not_null",
    "stg_events_price_ticks_not_null", "stg_events_order_id_not_null", "stg_events_event_type_accepted",
    "stg_events_qty_positive", "stg_events_no_duplicate_add_order_id", "stg_events_removals_match_earlier_add",
    "stg_events_removals_within_added_qty", "stg_events_sweeps_fill_in_queue_order",
    "stg_events_rows_per_session_in_range",
    "stg_book_states_unique_symbol_date_seq", "stg_book_states_never_crossed",
    "stg_book_states_replay_flags_clean", "stg_book_states_cover_every_event",
    "fct_ohlcv_1min_minute_index_not_null", "fct_ohlcv_1min_volume_positive",
    "fct_ohlcv_1min_unique_symbol_date_minute", "fct_ohlcv_1min_ohlc_sane", "fct_ohlcv_1min_volume_is_executed_shares",
    "fct_session_summary_open_ticks_not_null", "fct_session_summary_close_ticks_not_null",
    "fct_session_summary_unique_symbol_date", "fct_session_summary_ohlc_sane", "fct_session_summary_counts_add_up",
    "fct_session_summary_close_matches_engine", "fct_session_summary_spreads_positive",
    "fct_session_summary_sessions_chain",
}  # fmt: skip

DAY = DATES[0]
ASK, BID = 1, 0


def with_sweep(rec: np.ndarray, *, partial_first: bool) -> np.ndarray:
    """``rec`` plus two asks resting at a new best price and one aggressive buy walking them at one
    timestamp. Correct: the first order is filled (5 of 5), the second partially (2 of 5). Broken
    (``partial_first``): 3 of the first order's 5, then 2 of the second -- it moved on too early."""
    ts = int(rec["ts_ns"][-1]) + 1_000
    top = int(rec["price_ticks"].max()) + 50  # above every resting ask: nothing crosses
    first_id = int(rec["order_id"].max()) + 1
    tail = np.zeros(4, dtype=rec.dtype)
    tail[0] = (ts, 1, ASK, top, 5, first_id)
    tail[1] = (ts + 1, 1, ASK, top, 5, first_id + 1)
    tail[2] = (ts + 2, 4, ASK, top, 3 if partial_first else 5, first_id)
    tail[3] = (ts + 2, 4, ASK, top, 2, first_id + 1)
    return np.concatenate([rec, tail])


def land_events_with(lake: Lake, symbol: str, rec: np.ndarray, column: str, row: int, value) -> None:
    """Land ``rec`` as the events partition with one cell replaced (None: null)."""
    table = events_table(rec, symbol, DAY)
    values = table.column(column).to_pylist()
    values[row] = value
    table = table.set_column(table.schema.get_field_index(column), column,
                             pa.array(values, type=table.schema.field(column).type))  # fmt: skip
    land_table(lake, "events", symbol, DAY, table)


def land_defects(lake: Lake) -> dict[str, set[str]]:
    """Land the good partitions and one partition per defect. Returns {test: symbols it must report}."""
    expect: dict[str, set[str]] = {}

    def session(symbol: str, rec: np.ndarray, *, open_ticks: int = 10_000, book=None, land_events: bool = True,
                **info) -> None:  # fmt: skip
        row = dict(symbol=symbol, date=DAY, seed=1, open_ticks=open_ticks, close_ticks=None, tick_size=100,
                   market_open_ns=int(rec["ts_ns"][0]), session_seconds=600, events=len(rec),
                   first_ts_ns=int(rec["ts_ns"][0]), last_ts_ns=int(rec["ts_ns"][-1]), source="test")  # fmt: skip
        row.update(info)
        land_table(lake, "sessions", symbol, DAY, pa.Table.from_pylist([row | {"_landed_at": dt.datetime.now(dt.UTC)}],
                                                                     schema=SESSIONS_SCHEMA))  # fmt: skip
        if land_events:
            land_records(lake, symbol, DAY, rec)
        land_book_states(lake, symbol, DAY, records=rec if book is None else book, strict=False)

    def defect(symbol: str, *tests: str) -> None:
        for t in tests:
            expect.setdefault(t, set()).add(symbol)

    good = random_session(N_EVENTS, 20)
    assert (good["qty"][good["type"] >= 2] < 5).any()  # partial cancels / fills are in the good data
    session("GOOD", good)
    session("GOODSWP", with_sweep(random_session(N_EVENTS, 21), partial_first=False))

    # -- events: sequence
    rec = random_session(N_EVENTS, 30)
    session("D01", rec)  # then a second file re-uses seq 10 for another record
    clash = events_table(rec, "D01", DAY).slice(11, 1)
    pq.write_table(clash.set_column(2, "seq", pa.array([10], pa.int64())),
                   lake.partition_dir("events", "D01", DAY) + "/part-00001.parquet")  # fmt: skip
    assert rec["type"][11] <= 1  # the clashing record is an ADD: its id is now added twice
    defect("D01", "stg_events_unique_symbol_date_seq", "stg_events_seq_has_no_gaps", "stg_book_states_cover_every_event",
           "fct_session_summary_counts_add_up", "stg_events_no_duplicate_add_order_id")  # fmt: skip
    rec = random_session(N_EVENTS, 31)
    k = int(np.flatnonzero(rec["type"] == 2)[5])  # seq k was lost (a cancel: the rest still replays)
    session("D02", rec, land_events=False, events=N_EVENTS - 1)
    lost = events_table(rec, "D02", DAY)
    land_table(lake, "events", "D02", DAY, pa.concat_tables([lost.slice(0, k), lost.slice(k + 1)]))
    defect("D02", "stg_events_seq_has_no_gaps", "stg_book_states_cover_every_event")
    rec = random_session(N_EVENTS, 32)
    rec["ts_ns"][100] = rec["ts_ns"][99] - 5  # time goes backwards once
    session("D03", rec)
    defect("D03", "stg_events_ts_non_decreasing_by_seq")
    # -- events: nulls, types, quantities (the book states are replayed from the intact records)
    for symbol, column, value, test in [
        ("D04", "seq", None, "stg_events_seq_not_null"),
        ("D05", "ts_ns", None, "stg_events_ts_ns_not_null"),
        ("D06", "type", None, "stg_events_event_type_not_null"),
        ("D07", "price_ticks", None, "stg_events_price_ticks_not_null"),
        ("D08", "order_id", None, "stg_events_order_id_not_null"),
        ("D09", "type", 9, "stg_events_event_type_accepted"),
        ("D10", "qty", 0, "stg_events_qty_positive"),
    ]:  # fmt: skip
        rec = random_session(N_EVENTS, 40 + int(symbol[1:]))
        session(symbol, rec, land_events=False)
        row = int(np.flatnonzero(rec["type"] == 2)[3])  # a cancel
        land_events_with(lake, symbol, rec, column, row, value)
        defect(symbol, test)
    # a cancel without a type, or of an unknown type, is not counted by type; one without an
    # order id names no order ADDed earlier
    defect("D06", "fct_session_summary_counts_add_up")
    defect("D08", "stg_events_removals_match_earlier_add")
    defect("D09", "fct_session_summary_counts_add_up")
    # -- events: order life cycle
    rec = random_session(N_EVENTS, 50)
    adds = np.flatnonzero(rec["type"] <= 1)
    rec["order_id"][adds[40]] = rec["order_id"][adds[39]]  # an id ADDed twice
    session("D11", rec, book=random_session(N_EVENTS, 50))
    defect("D11", "stg_events_no_duplicate_add_order_id", "stg_events_removals_match_earlier_add")
    rec = random_session(N_EVENTS, 51)
    broken = rec.copy()
    broken["order_id"][int(np.flatnonzero(broken["type"] == 2)[10])] = 987_654_321  # unknown order
    session("D12", broken, book=rec)
    defect("D12", "stg_events_removals_match_earlier_add")
    rec = random_session(N_EVENTS, 52)  # a partial cancel takes more than the order has left
    cancels = np.flatnonzero((rec["type"] == 2) | (rec["type"] == 3))
    oid = next(int(rec["order_id"][c]) for c in cancels if rec["qty"][c] < 5)
    last = int(np.flatnonzero(rec["order_id"] == oid)[-1])
    rec["qty"][last] += 5
    session("D13", rec, book=random_session(N_EVENTS, 52))
    defect("D13", "stg_events_removals_within_added_qty")
    session("D14", with_sweep(random_session(N_EVENTS, 53), partial_first=True))
    defect("D14", "stg_events_sweeps_fill_in_queue_order")
    session("D15", random_session(50, 54))  # below min_events_per_session
    defect("D15", "stg_events_rows_per_session_in_range")
    # -- book states
    rec = random_session(N_EVENTS, 60)
    session("D16", rec)
    again = lake.read_partition("book_states", "D16", DAY).slice(7, 1)  # one state landed twice
    pq.write_table(again, lake.partition_dir("book_states", "D16", DAY) + "/part-00001.parquet")
    defect("D16", "stg_book_states_unique_symbol_date_seq", "stg_book_states_cover_every_event")
    for symbol, column, value, test in [
        ("D17", "best_bid_ticks", "ask", "stg_book_states_never_crossed"),
        ("D18", "replay_flags", 1, "stg_book_states_replay_flags_clean"),
    ]:  # fmt: skip
        rec = random_session(N_EVENTS, 60 + int(symbol[1:]))
        session(symbol, rec)
        t = lake.read_partition("book_states", symbol, DAY)
        values = t.column(column).to_pylist()
        values[2000] = t.column("best_ask_ticks")[2000].as_py() if value == "ask" else value
        t = t.set_column(
            t.schema.get_field_index(column), column, pa.array(values, t.schema.field(column).type)
        )
        land_table(lake, "book_states", symbol, DAY, t)
        defect(symbol, test)
    defect("D17", "fct_session_summary_spreads_positive")  # a zero spread pulls the mean below a tick
    rec = random_session(N_EVENTS, 63)
    session("D19", rec, book=rec[:-1])  # the replay missed the last event
    defect("D19", "stg_book_states_cover_every_event")
    # -- sessions rows
    session("D20", random_session(N_EVENTS, 64), open_ticks=None)
    defect("D20", "stg_sessions_open_ticks_not_null", "fct_session_summary_open_ticks_not_null",
           "fct_session_summary_ohlc_sane")  # fmt: skip
    session("D21", random_session(N_EVENTS, 65), market_open_ns=None)
    defect("D21", "stg_sessions_market_open_not_null", "fct_ohlcv_1min_minute_index_not_null")
    session("D22", random_session(N_EVENTS, 66), close_ticks=1)  # the engine said another close
    defect("D22", "fct_session_summary_close_matches_engine")
    session("D23", random_session(N_EVENTS, 67), events=len(random_session(N_EVENTS, 67)) + 1)
    defect("D23", "fct_session_summary_counts_add_up")
    session("D24", random_session(N_EVENTS, 68), open_ticks=1)  # an open far below the session's range
    defect("D24", "fct_session_summary_ohlc_sane")
    bids = np.zeros(200, dtype=good.dtype)  # only bids: never two-sided, no close
    bids["ts_ns"] = np.arange(200) * 1000 + good["ts_ns"][0]
    bids["price_ticks"], bids["qty"], bids["order_id"] = 9_990, 1, np.arange(1, 201)
    session("D25", bids)
    defect("D25", "fct_session_summary_close_ticks_not_null", "fct_session_summary_spreads_positive",
           "fct_session_summary_ohlc_sane")  # fmt: skip
    return expect


def stored_failures(wh: Warehouse, test: str) -> set[str]:
    rows = wh.query(f'select distinct symbol from dbt_test__audit."{test}"')
    return {r[0] for r in rows}


@pytest.mark.parametrize(
    "order_tables",
    [
        pytest.param([], id="one-order-table-per-partition"),
        # stg_event_checks' other plan (a run of more partitions than orders_per_partition_max)
        pytest.param(["--vars", '{"orders_per_partition_max": 0}'], id="one-order-table-for-the-run"),
    ],
)
def test_every_data_test_goes_red_on_its_bad_data(wh, order_tables):
    expect = land_defects(wh.lake)
    symbols = ["GOOD", "GOODSWP", *sorted({s for syms in expect.values() for s in syms})]
    # `dbt build` would skip the marts below a red staging test: build every model, then run every test
    selection = [(s, DAY) for s in symbols]
    assert failing(wh.build(selection, *order_tables, command="run")) == set()
    statuses = wh.build(selection, "--store-failures", *order_tables, command="test")
    assert set(statuses) - {"qrsdp-on-run-start-0"} == ALL_TESTS
    lake_level = {
        t for t in ALL_TESTS if not t.startswith("fct_ohlcv_1min_") or "minute" in t or "executed" in t
    }
    reported = {t: stored_failures(wh, t) if statuses[t] == "fail" else set() for t in ALL_TESTS}
    checked = lake_level - {"fct_session_summary_unique_symbol_date", "fct_session_summary_sessions_chain",
                            "fct_ohlcv_1min_unique_symbol_date_minute"}  # fmt: skip
    wrong = {
        t: (reported[t], expect.get(t, set())) for t in sorted(checked) if reported[t] != expect.get(t, set())
    }
    assert wrong == {}, f"test: (reported, expected) {wrong}"
    assert all("GOOD" not in syms and "GOODSWP" not in syms for syms in reported.values())
    # every data test is red on some bad data: here, or in the tests below (marts tampered with,
    # the chain of sessions)
    covered = {t for t, syms in reported.items() if syms}
    assert ALL_TESTS - covered == {
        "fct_ohlcv_1min_volume_positive", "fct_ohlcv_1min_unique_symbol_date_minute", "fct_ohlcv_1min_ohlc_sane",
        "fct_ohlcv_1min_volume_is_executed_shares", "fct_session_summary_unique_symbol_date",
        "fct_session_summary_sessions_chain",
    }  # fmt: skip


VOLUME_MATCH = "fct_ohlcv_1min_volume_is_executed_shares"


@pytest.mark.parametrize(
    ("tests", "tamper"),
    [
        ({"fct_ohlcv_1min_volume_positive", VOLUME_MATCH},
         "update marts.fct_ohlcv_1min set volume = 0 where minute_index = 1"),
        ({"fct_ohlcv_1min_unique_symbol_date_minute", VOLUME_MATCH},
         "insert into marts.fct_ohlcv_1min select * from marts.fct_ohlcv_1min where minute_index = 1"),
        ({"fct_ohlcv_1min_ohlc_sane"}, "update marts.fct_ohlcv_1min set low_ticks = high_ticks + 1 where minute_index = 1"),
        ({VOLUME_MATCH}, "update marts.fct_ohlcv_1min set volume = volume + 1 where minute_index = 1"),
        ({"fct_session_summary_unique_symbol_date"},
         "insert into marts.fct_session_summary select * from marts.fct_session_summary"),
    ],
)  # fmt: skip
def test_mart_tests_go_red_on_a_tampered_mart(wh, tests, tamper):
    """A mart test checks the mart itself: corrupt the built table, and `dbt test` reports it."""
    land_session(wh.lake, "AAPL", DAY, random_session(N_EVENTS, 70), 10_000)
    assert failing(wh.build([("AAPL", DAY)])) == set()
    with duckdb.connect(str(wh.duckdb)) as con:
        con.execute(tamper)
    statuses = wh.build([("AAPL", DAY)], "--select", "fct_ohlcv_1min fct_session_summary", command="test")
    assert failing(statuses) == tests


def test_a_rebuilt_date_that_breaks_its_successor_fails_the_chain(wh):
    """The continuity test reads each run partition's neighbours on both sides: re-simulating a
    date with another close (and nothing after it) is caught on the next date, not the history."""
    sessions = chained_sessions(["AAPL"], DATES, N_EVENTS)
    for (sym, day), (rec, open_ticks, _close) in sessions.items():
        land_session(wh.lake, sym, day, rec, open_ticks)
    assert failing(wh.build()) == set()
    _rec, open1, _ = sessions[("AAPL", DATES[0])]
    close1 = sessions[("AAPL", DATES[0])][2]
    again = next(
        r
        for seed in range(77, 200)
        if floor_mid_after(r := random_session(N_EVENTS, seed, p0=open1)) != close1
    )
    land_session(wh.lake, "AAPL", DATES[0], again, open1)
    statuses = wh.build([("AAPL", DATES[0])])
    assert failing(statuses) == {"fct_session_summary_sessions_chain"}


def test_partitions_stored_out_of_seq_order_give_the_same_marts(wh):
    """The streaming checks assume nothing: a partition whose files hold the rows in another order
    (as a Kafka consumer may write them) takes the sorting path and builds the same marts."""
    sessions = chained_sessions(["AAPL"], DATES, N_EVENTS)
    for (sym, day), (rec, open_ticks, _close) in sessions.items():
        land_session(wh.lake, sym, day, rec, open_ticks)
    assert failing(wh.build()) == set()
    summary = "select * exclude (landed_at) from marts.fct_session_summary order by all"
    bars = "select * from marts.fct_ohlcv_1min order by all"
    before = wh.query(summary.replace(" exclude (landed_at)", "")), wh.query(bars)
    for table in ("events", "book_states"):
        rows = wh.lake.read_partition(table, "AAPL", DATES[1])
        half = rows.num_rows // 2
        land_table(wh.lake, table, "AAPL", DATES[1], pa.concat_tables([rows.slice(half), rows.slice(0, half)]),
                   rows_per_file=700)  # fmt: skip
    assert failing(wh.build([("AAPL", DATES[1])])) == set()
    orders = wh.query("select date, in_seq_order from staging.stg_event_checks order by date")
    assert orders == [(DATES[0], True), (DATES[1], False)]
    assert wh.query("select in_seq_order from staging.stg_book_state_checks where date = '2026-01-05'") == [(False,)]
    assert (wh.query(summary.replace(" exclude (landed_at)", "")), wh.query(bars)) == before
