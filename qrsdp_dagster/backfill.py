"""Backfills as one run per symbol: one Dagster backfill per symbol, launched through the webserver.

Dagster turns a single-run backfill of a symbol x date rectangle into runs along the dimension with
*fewer* keys (ties go to the dates): a rectangle of fewer symbols than dates becomes one run per
symbol, but 20 symbols x 10 dates becomes ten runs of 20 symbols each, one per date -- which cannot
chain (every date but the first waits for the previous one) and would not spread symbols over
workers. A backfill of *one* symbol's dates is always one run over its dates in order. So
``qrsdp backfill`` launches one backfill per symbol (each shows on the UI's backfills page and
becomes one run, tagged ``qrsdp/symbol``); the instance's per-symbol limit and the workers do the
rest. From the UI, select one symbol's dates per backfill, or use the nightly_catch_up schedule
("Test schedule" launches its per-symbol runs now).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from qrsdp_dagster.chain import trading_days_between
from qrsdp_dagster.partitions import session_key
from qrsdp_sim.engine.calendar import next_weekday, trading_dates

LAUNCH_BACKFILL = """
mutation LaunchBackfill($params: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $params) {
    __typename
    ... on LaunchBackfillSuccess { backfillId }
    ... on PythonError { message }
    ... on UnauthorizedError { message }
    ... on InvalidSubsetError { message }
    ... on PartitionSetNotFoundError { message }
    ... on RunConflict { message }
  }
}
"""


# The job of a backfill's runs: Dagster's implicit asset job (not qrsdp_pipeline, whatever assets the
# backfill selects); the runs carry the backfill's tags (qrsdp/symbol) and a partition range.
RUN_JOB = "__ASSET_JOB"


class BackfillError(RuntimeError):
    """The webserver refused a backfill (the message says why)."""


@dataclass(frozen=True)
class SymbolBackfill:
    symbol: str
    dates: list[dt.date]

    @property
    def partition_keys(self) -> list[str]:
        return [str(session_key(self.symbol, d)) for d in self.dates]

    def params(self, asset_keys: Sequence[Sequence[str]], tags: dict[str, str]) -> dict[str, Any]:
        return {
            "assetSelection": [{"path": list(k)} for k in asset_keys],
            "partitionNames": self.partition_keys,
            "tags": [{"key": k, "value": v} for k, v in {"qrsdp/symbol": self.symbol, **tags}.items()],
            "title": f"{self.symbol} {self.dates[0]}..{self.dates[-1]}",
            "description": f"qrsdp backfill: {self.symbol}, {len(self.dates)} trading date(s) in order",
        }


def plan(symbols: Sequence[str], first: dt.date, last: dt.date) -> list[SymbolBackfill]:
    """One backfill per symbol over the trading dates first..last."""
    start = next_weekday(first)
    if start > last:
        raise ValueError(f"no trading date between {first} and {last}")
    dates = trading_dates(start, trading_days_between(start, last))
    return [SymbolBackfill(symbol, dates) for symbol in symbols]


def launch(client: Any, backfills: Sequence[SymbolBackfill], asset_keys: Sequence[Sequence[str]],
           tags: dict[str, str] | None = None) -> dict[str, str]:  # fmt: skip
    """Launch each backfill through a ``DagsterGraphQLClient``; returns symbol -> backfill id."""
    out = {}
    for backfill in backfills:
        result = client._execute(LAUNCH_BACKFILL, {"params": backfill.params(asset_keys, dict(tags or {}))})
        answer = result["launchPartitionBackfill"]
        if answer["__typename"] != "LaunchBackfillSuccess":
            raise BackfillError(f"{backfill.symbol}: {answer['__typename']}: {answer.get('message', '')}")
        out[backfill.symbol] = answer["backfillId"]
    return out
