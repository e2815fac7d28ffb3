"""``session_log``: one simulated session per symbol-date, written as a ``.qrsdp`` file.

Price chaining across partitions: a session opens at the previous trading date's close
for that symbol (read from that session's manifest); sessions on the first date open at
the symbol's configured p0. The asset depends on itself one trading date back, so
backfills run dates in order per symbol; a run covering several dates (single-run
backfill or a partition range) simulates them symbol by symbol in date order. A
partition whose previous date was never simulated fails and names the partition to run.
"""

import base64
import datetime as dt
import io
import time
from typing import Any

import dagster as dg
import numpy as np
from dagster import AssetExecutionContext

from qrsdp_dagster.partitions import chain_order, previous_session, session_key, session_partitions, split_key
from qrsdp_dagster.resources import KafkaResource, SimulationResource
from qrsdp_sim.engine.calendar import previous_trading_date
from qrsdp_sim.eventlog.reader import read_records
from qrsdp_sim.records import EventType


class ChainError(dg.Failure):
    """The previous trading date's session is missing."""


def opening_price(simulation: SimulationResource, symbol: str, date: dt.date) -> tuple[int, str]:
    """(open ticks, where it came from) for a symbol-date."""
    first = dt.date.fromisoformat(simulation.first_date)
    if date < first:
        raise ChainError(f"{symbol} {date}: before the first trading date {first}")
    if symbol not in simulation.symbols:
        raise ChainError(f"{symbol} is not a configured symbol ({', '.join(simulation.symbols)})")
    if date == first:
        return simulation.symbols[symbol], f"p0 of {symbol} (first trading date {first})"
    prev = previous_trading_date(date)
    manifest = simulation.read_manifest(symbol, prev)
    if manifest is None:
        raise ChainError(
            description=(
                f"session_log {symbol} {date}: the previous trading date {prev} has no session, so its close "
                f"(this session's open) is unknown. Materialise partition '{session_key(symbol, prev)}' first "
                f"(or backfill {symbol} from {first} to {date}; backfills keep date order)."
            ),
            metadata={"missing_partition": str(session_key(symbol, prev))},
        )
    return int(manifest["close_ticks"]), f"close of {symbol} {prev}"


def price_path_markdown(records: np.ndarray, tick_size: int, market_open_ns: int, title: str) -> str:
    """A small PNG of the traded price over the session, embedded in Markdown."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    trades = records[records["type"] >= EventType.EXECUTE_BUY]
    fig, ax = plt.subplots(figsize=(5, 1.8), dpi=80)
    if len(trades):
        step = max(1, len(trades) // 2000)
        t = (trades["ts_ns"][::step].astype(np.int64) - market_open_ns) / 3.6e12
        ax.plot(t, trades["price_ticks"][::step] * tick_size / 10_000, lw=0.8)
    ax.set_xlabel("hours since open", fontsize=7)
    ax.set_ylabel("trade price", fontsize=7)
    ax.set_title(title, fontsize=8)
    ax.tick_params(labelsize=6)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return f"![{title}](data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()})"


@dg.asset(
    partitions_def=session_partitions,
    deps=[dg.AssetDep("session_log", partition_mapping=previous_session)],
    backfill_policy=dg.BackfillPolicy.single_run(),
    group_name="simulation",
    kinds={"python", "numba"},
    owners=["team:qrsdp"],
    description="One simulated trading session per symbol-date (.qrsdp event log, LZ4 chunks); "
    "opens at the previous trading date's close.",
)
def session_log(context: AssetExecutionContext, simulation: SimulationResource, kafka: KafkaResource) -> None:
    publisher = kafka.publisher()
    metadata: dict[str, dict[str, Any]] = {}
    for symbol, date in chain_order(context.partition_keys):
        key = str(session_key(symbol, date))
        open_ticks, open_source = opening_price(simulation, symbol, date)
        started = time.perf_counter()
        result, manifest = simulation.simulate(
            symbol, date, open_ticks, publisher=publisher, run_id=context.run_id
        )
        wall = time.perf_counter() - started
        records = read_records(result.file)
        context.log.info(
            f"{key}: {result.events:,} events, open {result.open_ticks} -> close {result.close_ticks} ticks, "
            f"{result.file_bytes:,} bytes in {wall:.2f}s"
        )
        metadata[key] = (
            {
                "events": dg.MetadataValue.int(result.events),
                "open_ticks": dg.MetadataValue.int(result.open_ticks),
                "close_ticks": dg.MetadataValue.int(result.close_ticks),
                "open_from": dg.MetadataValue.text(open_source),
                "seed": dg.MetadataValue.text(str(result.seed)),
                "file": dg.MetadataValue.path(result.file),
                "file_bytes": dg.MetadataValue.int(result.file_bytes),
                "compression": dg.MetadataValue.float(round(result.compression or 0.0, 3)),
                "events_per_second": dg.MetadataValue.float(round(result.events / wall if wall else 0.0, 1)),
                "wall_seconds": dg.MetadataValue.float(round(wall, 3)),
                "price_path": dg.MetadataValue.md(
                    price_path_markdown(
                        records, manifest["tick_size"], manifest["market_open_ns"], f"{symbol} {date}"
                    )
                ),
            }
        )
    if publisher is not None:
        # One flush for the whole run (bounded), then per-session delivery totals.
        totals = publisher.close()
        if totals["failed"]:
            context.log.warning(
                f"Kafka {totals['brokers']}: {totals['failed']:,} of {totals['produced']:,} messages failed; "
                "the .qrsdp files are complete -- close the gap with `qrsdp republish`"
            )
        for key, meta in metadata.items():
            symbol, date = split_key(key)
            stats = totals["sessions"].get(f"{symbol}/{date.isoformat()}", {})
            meta["kafka_delivered"] = dg.MetadataValue.int(int(stats.get("delivered", 0)))
            meta["kafka_failed"] = dg.MetadataValue.int(int(stats.get("failed", 0)))
    for key, meta in metadata.items():
        context.add_asset_metadata(meta, partition_key=key)
