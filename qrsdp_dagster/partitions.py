"""Partitions: symbol (configured list) x trading date (weekdays), and the chaining mapping.

Keys look like ``2026-01-05|AAPL`` (Dagster orders the dimensions by name: date, symbol).
A partition key *range* is a rectangle: every symbol between the two symbols (in the
configured order) for every date between the two dates.
"""

from __future__ import annotations

import datetime as dt
import warnings
from collections.abc import Iterable, Sequence

import dagster as dg

from qrsdp_dagster.settings import SETTINGS

symbol_partitions = dg.StaticPartitionsDefinition(list(SETTINGS.symbols))

# Weekdays only (no holiday calendar, like the engine). end_offset=1 makes today's date
# available as soon as it starts, so the nightly schedule can materialise it.
trading_date_partitions = dg.TimeWindowPartitionsDefinition(
    cron_schedule="0 0 * * 1-5",
    fmt="%Y-%m-%d",
    start=SETTINGS.start_date.isoformat(),
    end_offset=1,
)

session_partitions = dg.MultiPartitionsDefinition(
    {"symbol": symbol_partitions, "date": trading_date_partitions}
)

# Each session depends on the same symbol's previous trading date (its open is that close).
with warnings.catch_warnings():
    warnings.simplefilter("ignore", dg.BetaWarning)  # MultiPartitionMapping is beta in Dagster 1.13
    previous_session = dg.MultiPartitionMapping(
        {
            "date": dg.DimensionPartitionMapping(
                "date", dg.TimeWindowPartitionMapping(start_offset=-1, end_offset=-1)
            ),
            "symbol": dg.DimensionPartitionMapping("symbol", dg.IdentityPartitionMapping()),
        }
    )


def session_key(symbol: str, date: dt.date | str) -> dg.MultiPartitionKey:
    day = date if isinstance(date, str) else date.isoformat()
    return dg.MultiPartitionKey({"symbol": symbol, "date": day})


def split_key(key: str | dg.MultiPartitionKey) -> tuple[str, dt.date]:
    """``"2026-01-05|AAPL"`` -> ("AAPL", date(2026, 1, 5))."""
    if not isinstance(key, dg.MultiPartitionKey):
        key = session_partitions.get_partition_key_from_str(key)
    dims = key.keys_by_dimension
    return dims["symbol"], dt.date.fromisoformat(dims["date"])


def chain_order(keys: Iterable[str | dg.MultiPartitionKey]) -> list[tuple[str, dt.date]]:
    """(symbol, date) pairs sorted by symbol, then date: the order sessions must be simulated in."""
    return sorted({split_key(k) for k in keys})


def range_tags(symbols: Sequence[str], first: dt.date, last: dt.date) -> dict[str, str]:
    """Run tags selecting the rectangle symbols[0]..symbols[-1] x first..last (one run)."""
    order = list(SETTINGS.symbols)
    syms = sorted(symbols, key=order.index)
    return {
        "dagster/asset_partition_range_start": str(session_key(syms[0], first)),
        "dagster/asset_partition_range_end": str(session_key(syms[-1], last)),
    }
