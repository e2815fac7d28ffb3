"""ITCH 5.0 feed commands: ``qrsdp itch-stream``, ``qrsdp listen``, ``qrsdp itch-export``."""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
from pathlib import Path
from typing import Annotated

import typer

from qrsdp_sim.itch.transport import DEFAULT_GROUP, DEFAULT_INTERFACE, DEFAULT_PORT, parse_hostport

BrokersOpt = Annotated[
    str, typer.Option("--kafka-brokers", help="Kafka bootstrap servers HOST:PORT.", envvar="QRSDP_KAFKA_BROKERS")
]
GroupOpt = Annotated[str, typer.Option("--multicast-group", help="IPv4 multicast group of the feed.")]
PortOpt = Annotated[int, typer.Option("--port", help="UDP port of the feed.")]
InterfaceOpt = Annotated[
    str, typer.Option("--interface", help="Interface address for multicast (outgoing / joined on).")
]
UnicastOpt = Annotated[
    str | None,
    typer.Option("--unicast", help="Plain UDP to/at HOST:PORT instead of multicast.", show_default=False),
]
SummaryOpt = Annotated[
    Path | None, typer.Option("--summary-json", help="Write the final counters as JSON to this file.")
]


def _write_summary(path: Path | None, summary: dict) -> None:
    text = json.dumps(summary, indent=2, sort_keys=True, default=str)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text + "\n")


def itch_stream_command(
    kafka_brokers: BrokersOpt = "127.0.0.1:9092",
    kafka_topic: Annotated[str, typer.Option("--kafka-topic", help="Topic to consume.")] = "exchange.events",
    consumer_group: Annotated[
        str, typer.Option("--consumer-group", help="Kafka consumer group holding the streamer's committed state.")
    ] = "itch-streamer",
    symbols: Annotated[
        str,
        typer.Option("--symbols", envvar="QRSDP_SYMBOLS",
                     help="The day's stock directory (SYMBOL[,SYMBOL...]; SYMBOL:P0 accepted). Locates are "
                     "assigned alphabetically; events of other symbols are skipped."),
    ] = "AAPL,MSFT",
    tick_size: Annotated[int, typer.Option("--tick-size", help="Tick size in 1e-4 $ (engine default 100).")] = 100,
    multicast_group: GroupOpt = DEFAULT_GROUP,
    port: PortOpt = DEFAULT_PORT,
    interface: InterfaceOpt = DEFAULT_INTERFACE,
    ttl: Annotated[int, typer.Option("--ttl", help="Multicast TTL.")] = 1,
    unicast: UnicastOpt = None,
    retransmit_host: Annotated[str, typer.Option("--retransmit-host", help="Re-request server address.")] = "127.0.0.1",
    retransmit_port: Annotated[int, typer.Option("--retransmit-port", help="Re-request server UDP port.")] = 5002,
    retransmit_buffer: Annotated[
        int, typer.Option("--retransmit-buffer", help="Messages kept for retransmission.")
    ] = 4_000_000,
    pcap: Annotated[Path | None, typer.Option("--pcap", help="Write every packet sent to this pcap file.")] = None,
    realtime: Annotated[bool, typer.Option("--realtime", help="Pace packets by event time.")] = False,
    speed: Annotated[float, typer.Option("--speed", help="Real-time speed factor (with --realtime).")] = 1.0,
    batch: Annotated[int, typer.Option("--batch", help="Kafka messages per step (one write-ahead commit each).")] = 262_144,
    max_packet: Annotated[int, typer.Option("--max-packet", help="UDP payload bytes per packet.")] = 1400,
    dead_letter_topic: Annotated[
        str, typer.Option("--dead-letter-topic", help="Topic for Kafka messages the feed refuses, with the reason.")
    ] = "exchange.events.dlq",
    merge_window: Annotated[
        float, typer.Option("--merge-window", help="Seconds an event waits at most for slower stocks before it is "
                            "sent (the time-ordered merge's lateness window; 0: no waiting).")
    ] = 2.0,
    merge_max_held: Annotated[
        int, typer.Option("--merge-max-held", help="Events held for the merge per trading day, at most.")
    ] = 4_000_000,
    max_orders: Annotated[
        int, typer.Option("--max-orders", help="Resting orders tracked per trading day, at most.")
    ] = 4_000_000,
    retransmit_requests: Annotated[
        float, typer.Option("--retransmit-requests", help="Re-requests answered per second per requester address.")
    ] = 1000.0,
    retransmit_requester_bytes: Annotated[
        float, typer.Option("--retransmit-requester-bytes", help="Answer bytes per second to one requester address.")
    ] = 16 * 2**20,
    retransmit_total_bytes: Annotated[
        float, typer.Option("--retransmit-total-bytes", help="Answer bytes per second of the re-request server.")
    ] = 64 * 2**20,
    day_end_idle: Annotated[
        float, typer.Option("--day-end-idle", help="Close a day whose started stocks all ended after this idle time (s).")
    ] = 60.0,
    eos_seconds: Annotated[
        float, typer.Option("--eos-seconds", help="Send end-of-session packets this long after a day ends (s).")
    ] = 3.0,
    exit_after_sessions: Annotated[
        int, typer.Option("--exit-after-sessions", help="Exit after this many sessions ended (0: run until SIGTERM).")
    ] = 0,
    linger: Annotated[
        float, typer.Option("--linger", help="With --exit-after-sessions: keep answering re-requests this long (s).")
    ] = 2.0,
    loss: Annotated[float, typer.Option("--simulate-loss", help="Drop this fraction of data packets (tests).",
                                        hidden=True)] = 0.0,
    max_runtime: Annotated[float, typer.Option("--max-runtime", help="Stop after this many seconds (0: never).")] = 0.0,
    summary_json: SummaryOpt = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log progress to stderr.")] = False,
) -> None:
    """Stream Kafka exchange.events as NASDAQ TotalView-ITCH 5.0 over MoldUDP64 (multicast by default).

    A long-lived daemon: consumer group itch-streamer, offsets committed only after sending, SIGTERM
    graceful, restarts resume the same MoldUDP64 sessions. One sequence per trading day whose timestamps
    never decrease across stocks (merged within --merge-window). Messages it cannot carry go to
    --dead-letter-topic with the reason. Re-requests are answered on UDP 5002 within per-requester and
    total budgets.
    """
    stop_early: list[int] = []  # a SIGTERM while the modules below load is honoured once the streamer exists
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, _frame: stop_early.append(signum))
    from qrsdp_sim.itch.feed import parse_symbols
    from qrsdp_sim.itch.retransmit import Limits
    from qrsdp_sim.itch.streamer import Streamer, StreamerConfig

    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(message)s")
    try:
        limits = Limits(per_requester_requests_s=retransmit_requests, per_requester_bytes_s=retransmit_requester_bytes,
                        total_bytes_s=retransmit_total_bytes)
        cfg = StreamerConfig(
            symbols=parse_symbols(symbols), brokers=kafka_brokers, topic=kafka_topic, group_id=consumer_group,
            dead_letter_topic=dead_letter_topic, tick_size=tick_size, multicast_group=multicast_group, port=port,
            interface=interface, ttl=ttl, unicast=parse_hostport(unicast) if unicast else None,
            retransmit_host=retransmit_host, retransmit_port=retransmit_port, retransmit_capacity=retransmit_buffer,
            retransmit_limits=limits, pcap=str(pcap) if pcap else None, realtime=realtime, speed=speed, batch=batch,
            max_packet=max_packet, merge_window=merge_window, merge_max_held=merge_max_held, max_orders=max_orders,
            loss=loss, loss_seed=os.getpid(), day_end_idle=day_end_idle, eos_seconds=eos_seconds,
            exit_after_sessions=exit_after_sessions, linger=linger, max_runtime=max_runtime,
        )  # fmt: skip
        streamer = Streamer(cfg)
    except ValueError as exc:
        typer.echo(f"Error: {exc}", err=True)
        raise typer.Exit(2) from None
    streamer.install_signal_handlers()
    if stop_early:
        streamer.stop()
    try:
        summary = streamer.run()
    except Exception as exc:  # Kafka unreachable, a port taken ...: one line (the traceback with -v)
        logging.getLogger(__name__).debug("itch-stream failed", exc_info=True)
        typer.echo(f"itch-stream: error: {exc}", err=True)
        raise typer.Exit(1) from None
    _write_summary(summary_json, summary)
    c = summary["counters"]
    typer.echo(
        f"itch-stream: {c['consumed']:,} Kafka messages -> {c['messages']:,} ITCH messages in {c['packets']:,} "
        f"packets; sessions started {c['sessions_started']}, ended {c['sessions_ended']}; "
        f"re-sent after restart {c['resent_after_restart']:,}; retransmitted "
        f"{summary.get('retransmit', {}).get('messages', 0):,}; dead-lettered {c['dead_lettered']:,}; "
        f"sent after the merge window {c['merge_late']:,}",
        err=True,
    )


def listen_command(
    multicast_group: GroupOpt = DEFAULT_GROUP,
    port: PortOpt = DEFAULT_PORT,
    interface: InterfaceOpt = DEFAULT_INTERFACE,
    unicast: UnicastOpt = None,
    retransmit: Annotated[
        str, typer.Option("--retransmit", help="Re-request server HOST:PORT ('none': never re-request).")
    ] = "127.0.0.1:5002",
    session: Annotated[
        str | None, typer.Option("--session", help="Follow this MoldUDP64 session (default: the first seen).")
    ] = None,
    tick_size: Annotated[int, typer.Option("--tick-size", help="Tick size in 1e-4 $ for the books.")] = 100,
    book: Annotated[bool, typer.Option("--book", help="Print every best bid/offer change.")] = False,
    stats: Annotated[bool, typer.Option("--stats", help="Print messages/s, gaps and recoveries every second.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Do not print one line per message.")] = False,
    gap_timeout: Annotated[
        float, typer.Option("--gap-timeout", help="Give up a gap after the session made no progress this many s.")
    ] = 10.0,
    max_ahead: Annotated[
        int, typer.Option("--max-ahead", help="Believe sequence numbers at most this many messages ahead.")
    ] = 1 << 22,
    idle_timeout: Annotated[
        float, typer.Option("--idle-timeout", help="Exit when nothing arrives this long (s; 0: never).")
    ] = 0.0,
    max_runtime: Annotated[float, typer.Option("--max-runtime", help="Stop after this many s (0: never).")] = 0.0,
    summary_json: SummaryOpt = None,
) -> None:
    """Join the ITCH feed, decode every message, rebuild the book per stock; exit at end of session.

    Exit status 0 when the session ended with every message received, 1 otherwise.
    """
    from qrsdp_sim.itch.listener import Listener, ListenerConfig

    try:
        if session is not None and (not session.isascii() or not 1 <= len(session) <= 10):
            raise ValueError(f"--session must be 1-10 ASCII characters (e.g. QR20260102), got {session!r}")
        cfg = ListenerConfig(
            multicast_group=multicast_group, port=port, interface=interface,
            unicast=parse_hostport(unicast) if unicast else None,
            retransmit=None if retransmit.lower() == "none" else parse_hostport(retransmit, 5002),
            session=session.encode("ascii").ljust(10) if session else None, tick_size=tick_size,
            print_messages=not quiet, book=book, stats=stats, gap_timeout=gap_timeout, idle_timeout=idle_timeout,
            max_runtime=max_runtime, max_ahead=max_ahead,
        )  # fmt: skip
        listener = Listener(cfg)
    except ValueError as exc:
        typer.echo(f"Error: {exc}", err=True)
        raise typer.Exit(2) from None
    try:
        summary = listener.run()
    except KeyboardInterrupt:
        summary = listener.summary()
    except BrokenPipeError:  # e.g. `qrsdp listen | head`
        sys.stderr.close()
        raise typer.Exit(0) from None
    except OSError as exc:  # the socket: address taken, no such interface ...
        typer.echo(f"listen: error: {exc}", err=True)
        raise typer.Exit(1) from None
    _write_summary(summary_json, summary)
    books = "; ".join(f"{s} {b['bid']}x{b['bid_qty']} / {b['ask']}x{b['ask_qty']} ({b['orders']} orders)"
                      for s, b in summary["books"].items())
    typer.echo(
        f"listen: session {summary['session']} {'complete' if summary['complete'] else 'INCOMPLETE'}: "
        f"{summary['messages']:,} messages, {summary['msgs_per_s'] or 0:,} msg/s, gaps {summary['gaps']}, "
        f"recovered {summary['recovered']}, unrecovered {summary['unrecovered']:,}, duplicates "
        f"{summary['duplicates']:,}, malformed packets {summary['malformed_packets']}, implausible sequence "
        f"numbers {summary['implausible_seq']}, timestamp order violations {summary['ts_order_violations']:,}, "
        f"book errors {summary['book_errors']}; final books: {books or '-'}",
        err=True,
    )
    if not summary["complete"] or summary["unrecovered"]:
        raise typer.Exit(1)


def itch_export_command(
    paths: Annotated[
        list[Path], typer.Argument(help="Session files (OUTPUT/SYMBOL/DATE.qrsdp) or run folders.", show_default=False)
    ],
    output: Annotated[Path, typer.Option("--output", "-o", help="The ITCH file to write.")],
    date: Annotated[str | None, typer.Option("--date", help="Trading date YYYY-MM-DD (when several).")] = None,
    symbols: Annotated[
        str | None, typer.Option("--symbols", help="Stock directory (default: the sessions' symbols).")
    ] = None,
    tick_size: Annotated[
        int | None, typer.Option("--tick-size", help="Tick size in 1e-4 $ (default: from the files).")
    ] = None,
) -> None:
    """Write a day's sessions as a binary ITCH 5.0 file (2-byte length + message, NASDAQ's file layout)."""
    from qrsdp_sim.eventlog.errors import EventLogError
    from qrsdp_sim.itch.export import export_day, find_sessions
    from qrsdp_sim.itch.feed import parse_symbols

    try:
        sessions = find_sessions(list(paths), date)
        summary = export_day(sessions, output, symbols=parse_symbols(symbols) if symbols else None,
                             tick_size=tick_size)
    except (ValueError, EventLogError, OSError) as exc:
        typer.echo(f"Error: {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo(
        f"wrote {summary['output']}: {summary['date']} {','.join(summary['symbols'])}, {summary['messages']:,} "
        f"messages ({summary['events']:,} events), {summary['bytes']:,} bytes"
    )
    if summary["rejected"]:
        reasons = ", ".join(f"{k} {v:,}" for k, v in sorted(summary["rejected"].items()))
        typer.echo(f"itch-export: refused {sum(summary['rejected'].values()):,} records the feed cannot carry "
                   f"({reasons}); first: {summary['first_rejected'][0]}", err=True)


def register(app: typer.Typer) -> None:
    app.command("itch-stream")(itch_stream_command)
    app.command("listen")(listen_command)
    app.command("itch-export")(itch_export_command)
