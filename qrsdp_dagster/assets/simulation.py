"""``session_log``: one simulated session per symbol-date, written as a ``.qrsdp`` file.

Price chaining across partitions: a session opens at the previous trading date's close
for that symbol (read from that session's manifest); sessions on the first date open at
the symbol's configured p0. The asset depends on itself one trading date back, so
backfills run dates in order per symbol; a run covering several dates (single-run
backfill or a partition range) simulates them symbol by symbol in date order.

Sessions are kept where ``simulation.sessions_uri`` says: the local sessions directory (embedded
default) or S3, shared by every worker (qrsdp_dagster.sessions); a session is published -- file,
plot, then its manifest -- only after its file has been read back whole.

Before simulating anything, the run checks every symbol of its selection (qrsdp_dagster.chain):
a symbol whose previous session is missing, or was simulated with another configuration, stops
the run at once with a message naming the first date to backfill from (or the differences).
Each partition's metadata records its configuration; its price plot is a PNG beside the file.
"""

import datetime as dt
import time
from pathlib import Path
from typing import Any

import dagster as dg
import numpy as np
from dagster import AssetExecutionContext

from qrsdp_dagster.assets import blocking_check, check_result
from qrsdp_dagster.assets.per_symbol import map_per_symbol
from qrsdp_dagster.chain import chain_problems, describe_config, session_config
from qrsdp_dagster.partitions import chain_order, previous_session, session_key, session_partitions, split_key
from qrsdp_dagster.resources import KafkaResource, SimulationResource
from qrsdp_sim.engine.calendar import previous_trading_date
from qrsdp_sim.engine.runner import warm_up
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


def write_price_plot(
    records: np.ndarray, tick_size: int, market_open_ns: int, title: str, path: Path
) -> Path:
    """A small PNG of the traded price over the session (a file: the event log only references it).
    Matplotlib's object API, not pyplot: sessions of different symbols are plotted on threads at once."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    trades = records[records["type"] >= EventType.EXECUTE_BUY]
    fig = Figure(figsize=(5, 1.8), dpi=80)
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    if len(trades):
        step = max(1, len(trades) // 2000)
        t = (trades["ts_ns"][::step].astype(np.int64) - market_open_ns) / 3.6e12
        ax.plot(t, trades["price_ticks"][::step] * tick_size / 10_000, lw=0.8)
    ax.set_xlabel("hours since open", fontsize=7)
    ax.set_ylabel("trade price", fontsize=7)
    ax.set_title(title, fontsize=8)
    ax.tick_params(labelsize=6)
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp")
    fig.savefig(tmp, format="png")
    tmp.replace(path)
    return path


SESSION_FILE_CHECK = "session_file_intact"


@dg.asset(
    partitions_def=session_partitions,
    deps=[dg.AssetDep("session_log", partition_mapping=previous_session)],
    backfill_policy=dg.BackfillPolicy.single_run(),
    group_name="simulation",
    kinds={"python", "numba"},
    owners=["team:qrsdp"],
    description="One simulated trading session per symbol-date (.qrsdp event log, LZ4 chunks); "
    "opens at the previous trading date's close. A run first checks that every symbol's previous "
    "session exists and has the run's configuration (session length, model, ...), and stops naming "
    "the first date to backfill from otherwise. Metadata: events, open/close, the configuration, "
    "the file, a price plot (PNG beside the file).",
    check_specs=[
        blocking_check(
            SESSION_FILE_CHECK,
            "session_log",
            "Each session's .qrsdp file reads back whole: as many records and bytes as its "
            "manifest says, ending at the close the engine reported.",
        )
    ],
)
def session_log(context: AssetExecutionContext, simulation: SimulationResource, kafka: KafkaResource):
    partitions = chain_order(context.partition_keys)
    problems = chain_problems(simulation, partitions)
    if problems:
        raise ChainError(
            description="session_log: nothing was simulated.\n" + "\n".join(f"- {p}" for p in problems),
            metadata={"problems": dg.MetadataValue.md("\n".join(f"- {p}" for p in problems))},
        )
    publisher = kafka.publisher()
    config = session_config({**simulation.spec().manifest_fields(), "base_seed": simulation.base_seed})
    metadata: dict[str, dict[str, Any]] = {}
    bad_files: list[str] = []

    def simulate(symbol: str, date: dt.date) -> dict[str, Any]:
        key = str(session_key(symbol, date))
        open_ticks, open_source = opening_price(simulation, symbol, date)
        started = time.perf_counter()
        result, manifest = simulation.simulate(
            symbol, date, open_ticks, publisher=publisher, run_id=context.run_id
        )
        wall = time.perf_counter() - started
        records = read_records(result.file)
        if len(records) != manifest["events"] or Path(result.file).stat().st_size != manifest["file_bytes"]:
            bad_files.append(f"{key}: {len(records):,} records / {Path(result.file).stat().st_size:,} bytes read, "
                             f"manifest says {manifest['events']:,} / {manifest['file_bytes']:,}")  # fmt: skip
        plot = None
        if simulation.price_plots:
            plot = write_price_plot(records, manifest["tick_size"], manifest["market_open_ns"], f"{symbol} {date}",
                                    simulation.plot_file(symbol, date))  # fmt: skip
        # visible to every reader (the next date's open, raw_events, other workers) only now, manifest last
        location = simulation.publish(symbol, date, manifest, plot)
        return {"result": result, "manifest": manifest, "wall": wall, "open_source": open_source,
                "location": location, "plot": plot}  # fmt: skip

    # one symbol per thread (its dates in order: each opens at the previous close); the kernel,
    # LZ4 and the PNG encoder release the GIL. Reported here, in partition order.
    spec = simulation.spec()
    warm_up(spec.model, spec.levels_per_side, spec.realism)  # the kernel loaded once, before the threads
    if simulation.price_plots:
        import matplotlib  # noqa: F401  (imported once here, not by two threads at once)
    for (symbol, date), done in zip(partitions, map_per_symbol(partitions, simulate), strict=True):
        key = str(session_key(symbol, date))
        result, manifest, wall = done["result"], done["manifest"], done["wall"]
        context.log.info(
            f"{key}: {result.events:,} events, open {result.open_ticks} -> close {result.close_ticks} ticks, "
            f"{result.file_bytes:,} bytes in {wall:.2f}s"
        )
        metadata[key] = {
            "events": dg.MetadataValue.int(result.events),
            "open_ticks": dg.MetadataValue.int(result.open_ticks),
            "close_ticks": dg.MetadataValue.int(result.close_ticks),
            "open_from": dg.MetadataValue.text(done["open_source"]),
            "seed": dg.MetadataValue.text(str(result.seed)),
            "file": dg.MetadataValue.path(done["location"]),
            "file_bytes": dg.MetadataValue.int(result.file_bytes),
            "compression": dg.MetadataValue.float(round(result.compression or 0.0, 3)),
            "events_per_second": dg.MetadataValue.float(round(result.events / wall if wall else 0.0, 1)),
            "wall_seconds": dg.MetadataValue.float(round(wall, 3)),
            "session_seconds": dg.MetadataValue.int(manifest["session_seconds"]),
            "model": dg.MetadataValue.text(str(manifest["model"].get("name", manifest["model"]))),
            "config": dg.MetadataValue.text(describe_config(config)),
        }
        if open_changed := open_source_change(simulation, symbol, date, config):
            metadata[key]["config_changed"] = dg.MetadataValue.text(open_changed)
        if done["plot"] is not None:
            metadata[key]["price_plot"] = dg.MetadataValue.path(simulation.location(symbol, date, ".png"))
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
    yield dg.MaterializeResult()
    yield check_result(SESSION_FILE_CHECK, sorted(bad_files), len(metadata))


def open_source_change(simulation: SimulationResource, symbol: str, date: dt.date, config: dict) -> str:
    """When chaining across a configuration change was allowed: what changed (else "")."""
    if not simulation.allow_config_change or date == dt.date.fromisoformat(simulation.first_date):
        return ""
    from qrsdp_dagster.chain import config_differences

    prev = simulation.read_manifest(symbol, previous_trading_date(date))
    changes = config_differences(session_config(prev or {}), config)
    return "; ".join(changes)
