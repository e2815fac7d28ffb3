"""Lake assets: ``raw_events`` (the session's records as Parquet) and ``book_states``
(the per-event top of book from the compiled replay), both hive-partitioned by symbol and date.

Embedded default: raw_events is landed straight from the ``.qrsdp`` file. (On the full
stack the Kafka parquet-consumer lands the same layout; the asset graph stays the same.)
Every landing replaces the partition's objects and writes its ``_SUCCESS`` marker last.
"""

import dagster as dg
from dagster import AssetExecutionContext

from qrsdp_dagster.partitions import chain_order, session_key, session_partitions
from qrsdp_dagster.resources import LakeResource, SimulationResource
from qrsdp_sim.book import BookReplayError
from qrsdp_sim.lake import land_book_states, land_session_file


@dg.asset(
    partitions_def=session_partitions,
    deps=["session_log"],
    backfill_policy=dg.BackfillPolicy.single_run(),
    group_name="lake",
    kinds={"parquet", "pyarrow"},
    owners=["team:qrsdp"],
    description="The session's events as Parquet: raw/events/symbol=SYM/date=YYYY-MM-DD/*.parquet "
    "(symbol, date, seq, the record fields, _landed_at), plus its raw/sessions row.",
)
def raw_events(context: AssetExecutionContext, simulation: SimulationResource, lake: LakeResource) -> None:
    store = lake.lake()
    for symbol, date in chain_order(context.partition_keys):
        key = str(session_key(symbol, date))
        manifest = simulation.read_manifest(symbol, date)
        path = simulation.session_file(symbol, date)
        if manifest is None or not path.is_file():
            raise dg.Failure(
                f"raw_events {key}: no session at {path}; materialise session_log for {key} first"
            )
        events, _sessions = land_session_file(
            store, path, symbol, date,
            close_ticks=manifest["close_ticks"], market_open_ns=manifest["market_open_ns"],
            marker_extra={"dagster_run_id": context.run.run_id},
        )  # fmt: skip
        context.log.info(
            f"{key}: landed {events.rows:,} events ({events.bytes:,} bytes) in {events.seconds:.2f}s"
        )
        context.add_asset_metadata(
            {
                "rows": dg.MetadataValue.int(events.rows),
                "parquet_bytes": dg.MetadataValue.int(events.bytes),
                "files": dg.MetadataValue.int(len(events.marker.files)),
                "location": dg.MetadataValue.text(
                    f"{store.query_root}/raw/events/symbol={symbol}/date={date}"
                ),
                "landed_at": dg.MetadataValue.text(events.marker.landed_at),
                "rows_per_second": dg.MetadataValue.float(round(events.rows_per_second, 1)),
                "dagster/row_count": dg.MetadataValue.int(events.rows),
            },
            partition_key=key,
        )


@dg.asset(
    partitions_def=session_partitions,
    deps=["raw_events"],
    backfill_policy=dg.BackfillPolicy.single_run(),
    group_name="lake",
    kinds={"parquet", "numba"},
    owners=["team:qrsdp"],
    description="Best bid/ask price and size after every event, from replaying the landed events through "
    "an order-level book (compiled); raw/book_states/symbol=SYM/date=YYYY-MM-DD/*.parquet.",
)
def book_states(context: AssetExecutionContext, lake: LakeResource) -> None:
    store = lake.lake()
    for symbol, date in chain_order(context.partition_keys):
        key = str(session_key(symbol, date))
        try:
            report, states = land_book_states(store, symbol, date)
        except BookReplayError as exc:
            raise dg.Failure(f"book_states {key}: the landed events do not replay: {exc}") from exc
        spread = states.spread[states.two_sided]
        context.log.info(f"{key}: replayed {report.rows:,} events, landed in {report.seconds:.2f}s")
        context.add_asset_metadata(
            {
                "rows": dg.MetadataValue.int(report.rows),
                "parquet_bytes": dg.MetadataValue.int(report.bytes),
                "mean_spread_ticks": dg.MetadataValue.float(
                    round(float(spread.mean()), 4) if len(spread) else 0.0
                ),
                "max_spread_ticks": dg.MetadataValue.int(int(spread.max()) if len(spread) else 0),
                "final_bid_ticks": dg.MetadataValue.int(int(states.bid_price[-1]) if len(states) else 0),
                "final_ask_ticks": dg.MetadataValue.int(int(states.ask_price[-1]) if len(states) else 0),
                "location": dg.MetadataValue.text(
                    f"{store.query_root}/raw/book_states/symbol={symbol}/date={date}"
                ),
                "dagster/row_count": dg.MetadataValue.int(report.rows),
            },
            partition_key=key,
        )
