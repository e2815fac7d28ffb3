"""qrsdp_dagster.assets.per_symbol: a step's partitions, one symbol per thread."""

import datetime as dt
import threading

import pytest

from qrsdp_dagster.assets.per_symbol import map_per_symbol

D1, D2, D3 = dt.date(2026, 1, 2), dt.date(2026, 1, 5), dt.date(2026, 1, 6)
PARTITIONS = [("AAPL", D1), ("AAPL", D2), ("AAPL", D3), ("MSFT", D1), ("MSFT", D2)]


def test_symbols_run_at_once_dates_in_order_results_in_partition_order():
    both_started = threading.Barrier(2, timeout=30)  # broken unless the two symbols run side by side
    seen: dict[str, list[dt.date]] = {"AAPL": [], "MSFT": []}

    def work(symbol: str, date: dt.date) -> str:
        if date == D1:
            both_started.wait()
        seen[symbol].append(date)
        return f"{symbol}|{date}"

    out = map_per_symbol(PARTITIONS, work, threads=2)
    assert out == [f"{s}|{d}" for s, d in PARTITIONS]
    assert seen == {"AAPL": [D1, D2, D3], "MSFT": [D1, D2]}


def test_one_thread_runs_everything_in_order():
    order: list[tuple[str, dt.date]] = []
    assert map_per_symbol(PARTITIONS, lambda s, d: order.append((s, d)) or d, threads=1) == [
        d for _, d in PARTITIONS
    ]
    assert order == PARTITIONS


def test_a_failure_is_raised_and_no_symbol_starts_another_date():
    msft_failed = threading.Event()
    started: list[tuple[str, dt.date]] = []

    def work(symbol: str, date: dt.date) -> None:
        started.append((symbol, date))
        if symbol == "MSFT":
            msft_failed.set()
            raise ValueError("MSFT D1 broke")
        if date == D1:
            assert msft_failed.wait(30)  # AAPL's first date finishes after MSFT's failure

    with pytest.raises(ValueError, match="MSFT D1 broke"):
        map_per_symbol(PARTITIONS, work, threads=2)
    assert sorted(started) == [("AAPL", D1), ("MSFT", D1)]
