"""``nightly_next_trading_date``: each night, the next trading date of every configured symbol.

"Next" is the weekday after the symbol's latest simulated session (the first trading
date if it has none), so the synthetic history grows by one chained day per night and
never skips a date. A symbol already at the newest available date is skipped.
"""

import datetime as dt

import dagster as dg

from qrsdp_dagster.jobs import qrsdp_pipeline
from qrsdp_dagster.partitions import SETTINGS, session_key, split_key, trading_date_partitions
from qrsdp_sim.engine.calendar import next_weekday


def next_trading_dates(instance: dg.DagsterInstance, newest: dt.date) -> dict[str, dt.date]:
    """symbol -> the date to simulate next (symbols already at ``newest`` are left out)."""
    latest: dict[str, dt.date] = {}
    for key in instance.get_materialized_partitions(dg.AssetKey("session_log")):
        symbol, date = split_key(key)
        if symbol in SETTINGS.symbols and date > latest.get(symbol, dt.date.min):
            latest[symbol] = date
    out = {}
    for symbol in SETTINGS.symbols:
        nxt = next_weekday(latest[symbol] + dt.timedelta(days=1)) if symbol in latest else SETTINGS.start_date
        if nxt <= newest:
            out[symbol] = nxt
    return out


@dg.schedule(
    job=qrsdp_pipeline,
    cron_schedule="0 1 * * *",
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.STOPPED,
    description="Nightly: simulate, land and build the next trading date of every configured symbol.",
)
def nightly_next_trading_date(context: dg.ScheduleEvaluationContext):
    now = context.scheduled_execution_time or dt.datetime.now(dt.UTC)
    keys = trading_date_partitions.get_partition_keys(current_time=now)
    if not keys:
        return dg.SkipReason("no trading date is available yet")
    plan = next_trading_dates(context.instance, dt.date.fromisoformat(keys[-1]))
    if not plan:
        return dg.SkipReason(f"every symbol is up to date (newest trading date {keys[-1]})")
    return [
        dg.RunRequest(
            partition_key=str(session_key(symbol, date)),
            run_key=f"nightly:{session_key(symbol, date)}",
            tags={"qrsdp/trigger": "nightly_next_trading_date"},
        )
        for symbol, date in sorted(plan.items())
    ]
