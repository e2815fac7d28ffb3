"""Lake assets: ``raw_events`` (the session's records as Parquet) and ``book_states``
(the per-event top of book from the compiled replay), both hive-partitioned by symbol and date.

Embedded default: raw_events is landed straight from the ``.qrsdp`` file. (On the full
stack the Kafka parquet-consumer lands the same layout; the asset graph stays the same.)
Every landing replaces the partition's objects and writes its ``_SUCCESS`` marker last.
"""

import datetime as dt
from typing import TYPE_CHECKING

import dagster as dg
from dagster import AssetExecutionContext

from qrsdp_dagster.assets import blocking_check, check_result
from qrsdp_dagster.assets.per_symbol import map_per_symbol
from qrsdp_dagster.partitions import chain_order, session_key, session_partitions
from qrsdp_dagster.resources import LakeResource, SimulationResource
from qrsdp_sim.book import BookReplayError
from qrsdp_sim.lake import land_book_states, land_session_file
from qrsdp_sim.lake.landing import LandingReport

if TYPE_CHECKING:
    from qrsdp_sim.book.replay import BookStates

RAW_EVENTS_CHECK = "raw_events_rows_match_session"
BOOK_STATES_CHECK = "book_states_replay_consistent"


@dg.asset(
    partitions_def=session_partitions,
    deps=["session_log"],
    backfill_policy=dg.BackfillPolicy.single_run(),
    group_name="lake",
    kinds={"parquet", "pyarrow"},
    owners=["team:qrsdp"],
    description="The session's events as Parquet: raw/events/symbol=SYM/date=YYYY-MM-DD/*.parquet "
    "(symbol, date, seq, the record fields, _landed_at), plus its raw/sessions row.",
    check_specs=[
        blocking_check(
            RAW_EVENTS_CHECK,
            "raw_events",
            "Each landed partition is complete (_SUCCESS written) and holds as many rows as the "
            "session has events (its manifest).",
        )
    ],
)
def raw_events(context: AssetExecutionContext, simulation: SimulationResource, lake: LakeResource):
    store = lake.lake()
    problems: list[str] = []
    partitions = chain_order(context.partition_keys)

    def land(symbol: str, date: dt.date) -> LandingReport:
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
        marker = store.read_marker("events", symbol, date)  # the _SUCCESS written, read back
        if marker is None or marker.rows != manifest["events"] or events.rows != manifest["events"]:
            problems.append(f"{key}: {events.rows:,} rows landed (marker: {marker and marker.rows}), "
                            f"the session has {manifest['events']:,} events")  # fmt: skip
        return events

    # one symbol per thread (qrsdp_dagster/assets/per_symbol.py); reported here, in partition order
    for (symbol, date), events in zip(partitions, map_per_symbol(partitions, land), strict=True):
        key = str(session_key(symbol, date))
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
    yield dg.MaterializeResult()
    yield check_result(RAW_EVENTS_CHECK, sorted(problems), len(partitions))


@dg.asset(
    partitions_def=session_partitions,
    deps=["raw_events"],
    backfill_policy=dg.BackfillPolicy.single_run(),
    group_name="lake",
    kinds={"parquet", "numba"},
    owners=["team:qrsdp"],
    description="Best bid/ask price and size after every event, from replaying the landed events through "
    "an order-level book (compiled); raw/book_states/symbol=SYM/date=YYYY-MM-DD/*.parquet.",
    check_specs=[
        blocking_check(
            BOOK_STATES_CHECK,
            "book_states",
            "The replay agrees with the session: one state per landed event, no event flagged, "
            "and the final floor mid equals the close recorded at landing (the engine's close).",
        )
    ],
)
def book_states(context: AssetExecutionContext, lake: LakeResource):
    store = lake.lake()
    problems: list[str] = []
    partitions = chain_order(context.partition_keys)

    def replay(symbol: str, date: dt.date) -> tuple[LandingReport, "BookStates"]:
        key = str(session_key(symbol, date))
        try:
            report, states = land_book_states(store, symbol, date)
        except BookReplayError as exc:
            raise dg.Failure(f"book_states {key}: the landed events do not replay: {exc}") from exc
        landed = store.read_marker("events", symbol, date)
        close = landed.extra.get("close_ticks") if landed is not None else None
        final_mid = (int(states.bid_price[-1]) + int(states.ask_price[-1])) // 2 if len(states) else None
        if landed is None or report.rows != landed.rows:
            problems.append(f"{key}: {report.rows:,} states for {landed and landed.rows} landed events")
        if states.n_flagged:
            problems.append(f"{key}: {states.n_flagged:,} events flagged by the replay")
        if close is not None and final_mid != close:
            problems.append(f"{key}: replayed close {final_mid} != engine close {close}")
        return report, states

    # one symbol per thread (the replay and Parquet release the GIL); reported in partition order
    for (symbol, date), (report, states) in zip(partitions, map_per_symbol(partitions, replay), strict=True):
        key = str(session_key(symbol, date))
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
    yield dg.MaterializeResult()
    yield check_result(BOOK_STATES_CHECK, sorted(problems), len(partitions))
