"""Kafka commands: ``qrsdp republish``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from qrsdp_sim.eventlog.errors import EventLogError
from qrsdp_sim.kafka.names import DEFAULT_BATCH_RECORDS


def republish_command(
    files: Annotated[list[Path], typer.Argument(help="Session files, e.g. `output/*/*.qrsdp`.", show_default=False)],
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
    Every file is checked before anything is published (a session file, a symbol and date a consumer
    accepts, records a producer could send, a readable run manifest beside it). Exits 1 if any message
    could not be delivered, 2 for an argument or file it cannot use.
    """
    from qrsdp_sim.kafka.republish import RepublishError, identify, republish

    console = Console(stderr=True)
    try:
        sessions = [identify(f, symbol, date) for f in files]
        if (symbol or date) and len(sessions) > 1:
            raise RepublishError("--symbol and --date name one session: give one file with them")
        summary = republish(sessions, kafka_brokers, kafka_topic)
    except ConnectionError as exc:
        console.print(f"[red]error:[/red] {exc}; start Kafka (`qrsdp stack up`) or check --kafka-brokers",
                      soft_wrap=True)
        raise typer.Exit(1) from None
    except (ValueError, EventLogError, OSError) as exc:  # RepublishError, bad --kafka-brokers/--kafka-topic
        console.print(f"[red]error:[/red] {exc}", soft_wrap=True)
        raise typer.Exit(2) from None
    console.print(
        f"republished {len(sessions)} session(s) to {kafka_topic}: {summary['produced']:,} produced, "
        f"{summary['delivered']:,} delivered, {summary['failed']:,} failed (run_id {summary['run_id']})"
    )
    if summary["failed"]:
        raise typer.Exit(1)


def parquet_consumer_command(
    kafka_brokers: Annotated[
        str, typer.Option("--kafka-brokers", help="Kafka bootstrap servers HOST:PORT.", envvar="QRSDP_KAFKA_BROKERS")
    ] = "127.0.0.1:9092",
    kafka_topic: Annotated[str, typer.Option("--kafka-topic", help="Topic to consume.")] = "exchange.events",
    lake_uri: Annotated[
        str,
        typer.Option("--lake-uri", help="Where to land Parquet: s3://bucket/prefix or a local path.",
                     envvar="QRSDP_LAKE_URI"),
    ] = "s3://exchange-data",
    s3_endpoint: Annotated[
        str, typer.Option("--s3-endpoint", help="S3 endpoint (MinIO).", envvar="QRSDP_S3_ENDPOINT")
    ] = "http://127.0.0.1:9000",
    group: Annotated[str, typer.Option("--consumer-group", help="Kafka consumer group.")] = "parquet-writer",
    batch_records: Annotated[int, typer.Option("--batch-records", help="Records per Parquet object at most: a partition's pending records are landed at every offset that is a multiple of this.")] = DEFAULT_BATCH_RECORDS,
    batch_seconds: Annotated[float, typer.Option("--batch-seconds", help="...or after this many seconds.")] = 5.0,
    idle_exit: Annotated[
        float | None,
        typer.Option("--idle-exit", help="Exit after this many seconds without messages (default: run forever)."),
    ] = None,
) -> None:
    """Land the Kafka event stream as Parquet in the lake (a long-running service of the stack).

    Commits offsets only after the objects are written; SIGTERM/SIGINT flush the partial batch first.
    Malformed messages go to the dead-letter topic exchange.events.dlq.

    Reads Kafka through qrsdp-kafka-bridge when it is built, else confluent-kafka
    (QRSDP_KAFKA_CLIENT=auto|bridge|python).
    """
    import signal

    # A SIGTERM while the modules below load or the consumer starts is honoured once it exists (a
    # supervisor stopping a consumer it just restarted got status -15 instead of a clean exit).
    stop_early: list[int] = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, _frame: stop_early.append(signum))
    import json
    import logging
    import math
    import os
    from urllib.parse import urlparse

    from qrsdp_sim.kafka.bridge import BridgeError
    from qrsdp_sim.kafka.consumer import ParquetConsumer
    from qrsdp_sim.kafka.names import check_brokers, check_topic
    from qrsdp_sim.lake.store import Lake, S3Options

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    console = Console(stderr=True)

    def usage(message: str) -> typer.Exit:
        console.print(f"[red]error:[/red] {message}", soft_wrap=True)
        return typer.Exit(2)

    if batch_records < 1:
        raise usage(f"--batch-records must be >= 1, got {batch_records}")
    if not (math.isfinite(batch_seconds) and batch_seconds > 0):
        raise usage(f"--batch-seconds must be a number > 0, got {batch_seconds}")
    if idle_exit is not None and not (math.isfinite(idle_exit) and idle_exit > 0):
        raise usage(f"--idle-exit must be a number > 0 (or left out: run forever), got {idle_exit}")
    if not group.strip():
        raise usage("--consumer-group must not be empty")
    parsed = urlparse(s3_endpoint)
    if lake_uri.startswith(("s3://", "s3a://")) and (parsed.scheme not in ("http", "https") or not parsed.netloc):
        raise usage(f"--s3-endpoint {s3_endpoint!r}: expected http(s)://HOST:PORT")
    try:
        kafka_brokers = check_brokers(kafka_brokers)
        check_topic(kafka_topic)
        s3 = S3Options(
            endpoint=s3_endpoint,
            access_key=os.environ.get("QRSDP_S3_ACCESS_KEY") or os.environ.get("MINIO_ROOT_USER") or "qrsdp",
            secret_key=os.environ.get("QRSDP_S3_SECRET_KEY") or os.environ.get("MINIO_ROOT_PASSWORD")
            or "qrsdp-secret",
        )
        try:
            lake = Lake.from_uri(lake_uri, s3)
        except (ValueError, OSError) as exc:
            raise ValueError(f"--lake-uri {lake_uri!r}: {exc}") from None
        consumer = ParquetConsumer(kafka_brokers, lake, topic=kafka_topic, group_id=group,
                                   batch_records=batch_records, batch_seconds=batch_seconds)
    except (ValueError, BridgeError) as exc:  # a flag, QRSDP_KAFKA_CLIENT wrong, or the bridge asked for and missing
        raise usage(str(exc)) from None
    consumer.install_signal_handlers()
    if stop_early:
        consumer.stop_event.set()
    stats = consumer.run(idle_exit_seconds=idle_exit)
    print(json.dumps(stats.to_dict()))


def register(app: typer.Typer) -> None:
    app.command("republish")(republish_command)
    app.command("parquet-consumer")(parquet_consumer_command)
