"""Kafka commands: ``qrsdp republish``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from qrsdp_sim.eventlog.errors import EventLogError


def republish_command(
    files: Annotated[list[Path], typer.Argument(help="Session files, e.g. output/*/*.qrsdp.", show_default=False)],
    kafka_brokers: Annotated[
        str, typer.Option("--kafka-brokers", help="Kafka bootstrap servers HOST:PORT.", envvar="QRSDP_KAFKA_BROKERS")
    ] = "127.0.0.1:9092",
    kafka_topic: Annotated[str, typer.Option("--kafka-topic", help="Topic to publish to.")] = "exchange.events",
    symbol: Annotated[
        str | None, typer.Option("--symbol", help="Symbol, when the path is not OUTPUT/SYMBOL/DATE.qrsdp.")
    ] = None,
    date: Annotated[str | None, typer.Option("--date", help="Session date YYYY-MM-DD, likewise.")] = None,
) -> None:
    """Re-publish sessions from their .qrsdp files to Kafka (closes the gap after an outage).

    Consumers deduplicate on (symbol, date, seq): events that had already arrived are harmless.
    Exits 1 if any message could not be delivered.
    """
    from qrsdp_sim.kafka.republish import identify, republish

    console = Console(stderr=True)
    try:
        sessions = [identify(f, symbol, date) for f in files]
        missing = [s.path for s in sessions if not s.path.is_file()]
        if missing:
            raise ValueError(f"{missing[0]}: no such file")
        summary = republish(sessions, kafka_brokers, kafka_topic)
    except (ValueError, EventLogError, ConnectionError) as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from None
    console.print(
        f"republished {len(sessions)} session(s) to {kafka_topic}: {summary['produced']:,} produced, "
        f"{summary['delivered']:,} delivered, {summary['failed']:,} failed (run_id {summary['run_id']})"
    )
    if summary["failed"]:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.command("republish")(republish_command)
