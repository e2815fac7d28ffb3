"""``nightly_catch_up``: each night, every configured symbol brought up to the newest trading date.

For each symbol the schedule finds the last trading date that went all the way through the pipeline
(``session_log`` *and* the marts materialised: the smaller of the two latest dates; looked up backwards
from the newest date, so a tick reads as many partitions as the symbols are behind, not the history) and requests
**one run per symbol** covering every date after it up to the newest trading date, in order (a
partition range of ``qrsdp_pipeline``; each session opens at the previous close, so the dates of a
symbol run in one run, and the symbols spread over the workers). A code location switched on months
after its start date catches up in one night, not one date per night.

Idempotent: the run key names the symbol and its range, so evaluating the same tick again requests
nothing new, and a symbol whose run is still queued or running is left alone (its range would
overlap). Each run says how far behind its symbol was in its tags -- ``qrsdp/behind_trading_dates``
(dates missing), ``qrsdp/catch_up`` (first..last), ``qrsdp/last_complete`` -- and the tick's log lists
every symbol. In the UI, "Test schedule" on this schedule evaluates it now and can launch those runs:
the way to bring everything up to date by hand.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import dagster as dg

from qrsdp_dagster.chain import trading_days_between
from qrsdp_dagster.jobs import qrsdp_pipeline
from qrsdp_dagster.partitions import SETTINGS, range_tags, session_key, trading_date_partitions
from qrsdp_sim.engine.calendar import next_weekday, previous_trading_date

SYMBOL_TAG = "qrsdp/symbol"
TRIGGER = "nightly_catch_up"
COMPLETE_ASSETS = (dg.AssetKey("session_log"), dg.AssetKey(["marts", "fct_session_summary"]))
"""A date is complete for a symbol when the first and the last asset of the pipeline have it."""
CRON = os.environ.get("QRSDP_CATCH_UP_CRON", "").strip() or "0 1 * * *"
"""When the schedule ticks (UTC): 01:00 every night; tests make it every minute."""
ACTIVE_STATUSES = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
]


@dataclass(frozen=True)
class CatchUp:
    """One symbol's missing dates: ``first``..``last`` (``dates`` trading dates), after ``last_complete``."""

    symbol: str
    first: dt.date
    last: dt.date
    dates: int
    last_complete: dt.date | None

    def tags(self) -> dict[str, str]:
        return {
            **range_tags([self.symbol], self.first, self.last),
            SYMBOL_TAG: self.symbol,
            "qrsdp/trigger": TRIGGER,
            "qrsdp/behind_trading_dates": str(self.dates),
            "qrsdp/catch_up": f"{self.first}..{self.last}",
            "qrsdp/last_complete": str(self.last_complete or "none"),
        }

    @property
    def run_key(self) -> str:
        return f"catch-up:{self.symbol}:{self.first}..{self.last}"


LOOKBACK_DATES = 8
"""Trading dates per symbol the first lookup names; each further lookup names twice as many."""


def latest_materialized(
    instance: dg.DagsterInstance, asset: dg.AssetKey, symbols: Iterable[str], start: dt.date, newest: dt.date
) -> dict[str, dt.date]:
    """symbol -> latest trading date (``start``..``newest``) with a materialization of ``asset``
    (symbols without one are left out).

    Looks back from ``newest`` in windows of 8, 16, 32, ... trading dates, each lookup naming only
    its window's partitions (an indexed query of the event log), until every symbol has a date or
    ``start`` is reached: the partitions read grow with how far behind a symbol is -- the night's
    work -- never with the history (listing every materialised partition grows with it)."""
    found: dict[str, dt.date] = {}
    todo = list(symbols)
    high, window = newest, LOOKBACK_DATES
    while todo and high >= start:
        dates = []
        day = high
        while len(dates) < window and day >= start:
            dates.append(day)
            day = previous_trading_date(day)
        wanted = {str(session_key(symbol, date)): (symbol, date) for symbol in todo for date in dates}
        present = instance.get_latest_storage_id_by_partition(
            asset, dg.DagsterEventType.ASSET_MATERIALIZATION, set(wanted)
        )
        for key in present:
            symbol, date = wanted[key]
            found[symbol] = max(date, found.get(symbol, date))
        todo = [symbol for symbol in todo if symbol not in found]
        high, window = day, window * 2
    return found


def latest_complete(
    latest: Mapping[dg.AssetKey, Mapping[str, dt.date]], symbols: Iterable[str]
) -> dict[str, dt.date]:
    """symbol -> latest date that every asset of COMPLETE_ASSETS has (symbols without one are left
    out), from each asset's latest materialised date per symbol (:func:`latest_materialized`)."""
    per_asset = [latest.get(key, {}) for key in COMPLETE_ASSETS]
    return {s: min(a[s] for a in per_asset) for s in symbols if all(s in a for a in per_asset)}


def catch_up_plan(
    complete: Mapping[str, dt.date], symbols: Iterable[str], start: dt.date, newest: dt.date
) -> list[CatchUp]:
    """One CatchUp per symbol that is behind ``newest`` (in the symbols' order)."""
    plan = []
    for symbol in symbols:
        last = complete.get(symbol)
        first = next_weekday(last + dt.timedelta(days=1)) if last is not None else start
        if first > newest:
            continue
        plan.append(CatchUp(symbol, first, newest, trading_days_between(first, newest), last))
    return plan


def active_symbols(instance: dg.DagsterInstance, symbols: Iterable[str]) -> set[str]:
    """Symbols with a run queued or running (tagged qrsdp/symbol)."""
    busy = set()
    for symbol in symbols:
        runs = instance.get_runs(
            filters=dg.RunsFilter(tags={SYMBOL_TAG: symbol}, statuses=ACTIVE_STATUSES), limit=1
        )
        if runs:
            busy.add(symbol)
    return busy


@dg.schedule(
    job=qrsdp_pipeline,
    cron_schedule=CRON,
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.STOPPED,
    description="Nightly catch-up: for every configured symbol, one run simulating, landing and modelling "
    "every trading date after its last complete one up to the newest (tags say how far behind it was).",
)
def nightly_catch_up(context: dg.ScheduleEvaluationContext):
    now = context.scheduled_execution_time or dt.datetime.now(dt.UTC)
    keys = trading_date_partitions.get_partition_keys(current_time=now)
    if not keys:
        return dg.SkipReason("no trading date is available yet")
    newest = dt.date.fromisoformat(keys[-1])
    symbols = list(SETTINGS.symbols)
    latest = {
        key: latest_materialized(context.instance, key, symbols, SETTINGS.start_date, newest)
        for key in COMPLETE_ASSETS
    }
    plan = catch_up_plan(latest_complete(latest, symbols), symbols, SETTINGS.start_date, newest)
    busy = active_symbols(context.instance, [c.symbol for c in plan])
    for c in plan:
        context.log.info(
            f"{c.symbol}: {c.dates} trading date(s) behind (last complete {c.last_complete or 'none'}); "
            + ("a run of it is still queued or running: left for the next tick" if c.symbol in busy
               else f"one run for {c.first}..{c.last}")
        )  # fmt: skip
    todo = [c for c in plan if c.symbol not in busy]
    if not todo:
        return dg.SkipReason(
            f"every symbol is up to date (newest trading date {newest})"
            if not plan
            else f"{len(plan)} symbol(s) behind, each with a run still queued or running"
        )
    return [dg.RunRequest(run_key=c.run_key, tags=c.tags()) for c in todo]
