"""Jobs.

* ``qrsdp_pipeline``   -- every asset for a partition or a partition range (UI, schedule, backfills).
* ``qrsdp_downstream`` -- book_states and the dbt assets (what the landing sensor requests).
* ``qrsdp_slice``      -- the CI entry point for Dagster's CLI: its run config names a slice
  (symbols x trading dates) and it runs ``qrsdp_pipeline`` over that rectangle as one run, in
  date order (``qrsdp demo`` runs ``qrsdp_pipeline`` over its rectangle directly)::

      dagster job execute -m qrsdp_dagster.definitions -j qrsdp_slice -c qrsdp_dagster/configs/ci_slice.yaml
"""

import datetime as dt

import dagster as dg
from dagster import OpExecutionContext

from qrsdp_dagster.partitions import SETTINGS, range_tags
from qrsdp_sim.engine.calendar import trading_dates

qrsdp_pipeline = dg.define_asset_job(
    "qrsdp_pipeline",
    selection=dg.AssetSelection.all(),
    description="Simulate, land, replay and build the marts for a symbol-date (or a range of them).",
)

qrsdp_downstream = dg.define_asset_job(
    "qrsdp_downstream",
    selection=dg.AssetSelection.assets("book_states").downstream(),
    description="Replay landed events into book_states, then build and test the dbt models.",
)


class SliceConfig(dg.Config):
    """A rectangle of partitions: symbols x ``days`` trading dates from ``start_date``."""

    symbols: list[str] = []  # noqa: RUF012 -- pydantic copies defaults; empty = every configured symbol
    start_date: str = SETTINGS.start_date.isoformat()
    days: int = 2


@dg.op(required_resource_keys={"simulation", "lake", "warehouse", "dbt", "kafka"})
def materialize_slice(context: OpExecutionContext, config: SliceConfig) -> dg.MaterializeResult | None:
    """Run qrsdp_pipeline over the slice as one child run (same instance, same resource config)."""
    from qrsdp_dagster.definitions import defs  # the job lives in the same Definitions

    configured = list(SETTINGS.symbols)
    symbols = config.symbols or configured
    unknown = sorted(set(symbols) - set(configured))
    if unknown:
        raise dg.Failure(f"symbols {unknown} are not configured (QRSDP_SYMBOLS={','.join(configured)})")
    dates = trading_dates(dt.date.fromisoformat(config.start_date), config.days)
    tags = {**range_tags(symbols, dates[0], dates[-1]), "qrsdp/parent_run_id": context.run_id}
    context.log.info(f"slice: {symbols} x {dates[0]}..{dates[-1]} ({len(symbols) * len(dates)} partitions)")
    result = defs.resolve_job_def("qrsdp_pipeline").execute_in_process(
        instance=context.instance,
        run_config={"resources": context.run_config.get("resources", {})},
        tags=tags,
        raise_on_error=False,
    )
    context.add_output_metadata(
        {"child_run_id": result.run_id, "partitions": len(symbols) * len(dates), "success": result.success}
    )
    if not result.success:
        raise dg.Failure(f"qrsdp_pipeline run {result.run_id} failed for the slice; see that run's logs")


@dg.job(
    description="Run qrsdp_pipeline over a slice of symbols x trading dates given in run config (the CI "
    "entry point for `dagster job execute`; `qrsdp demo` runs qrsdp_pipeline directly)."
)
def qrsdp_slice():
    materialize_slice()
