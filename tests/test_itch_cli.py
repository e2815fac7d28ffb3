"""``qrsdp itch-stream`` and ``qrsdp listen`` refuse every bad argument with one line naming the flag
(exit status 2) instead of a traceback -- or, for ``listen --tick-size 0``, a crash in compiled code on
the first Add Order."""

from __future__ import annotations

import io

import pytest
from typer.testing import CliRunner

from qrsdp_sim.cli import app
from qrsdp_sim.itch import moldudp64 as mold
from qrsdp_sim.itch.listener import Listener, ListenerConfig
from qrsdp_sim.itch.streamer import StreamerConfig

LISTEN_BAD = [
    (["--tick-size", "0"], "--tick-size"),
    (["--tick-size", "-5"], "--tick-size"),
    (["--port", "70000"], "--port"),
    (["--multicast-group", "10.0.0.1"], "--multicast-group"),
    (["--multicast-group", "not-an-address"], "--multicast-group"),
    (["--interface", "eth0"], "--interface"),
    (["--gap-timeout", "0"], "--gap-timeout"),
    (["--idle-timeout", "-1"], "--idle-timeout"),
    (["--max-runtime", "-1"], "--max-runtime"),
    (["--session", "QR2026010299"], "--session"),
    (["--retransmit", "127.0.0.1:notaport"], "port"),
    (["--retransmit", "127.0.0.1:99999"], "port"),
    (["--unicast", "127.0.0.1:-1"], "port"),
    (["--max-ahead", "0"], "max_ahead"),
]

STREAM_BAD = [
    (["--tick-size", "0"], "--tick-size"),
    (["--tick-size", "5000000000"], "--tick-size"),
    (["--batch", "0"], "--batch"),
    (["--max-packet", "10"], "--max-packet"),
    (["--max-packet", "70000"], "--max-packet"),
    (["--speed", "0"], "--speed"),
    (["--ttl", "300"], "--ttl"),
    (["--port", "0"], "--port"),
    (["--retransmit-port", "99999"], "--retransmit-port"),
    (["--retransmit-buffer", "0"], "--retransmit-buffer"),
    (["--multicast-group", "1.2.3.4"], "--multicast-group"),
    (["--interface", "bogus"], "--interface"),
    (["--symbols", "A|B"], "symbol"),
    (["--symbols", ","], "no symbols"),
    (["--merge-window", "-1"], "--merge-window"),
    (["--merge-max-held", "0"], "--merge-max-held"),
    (["--max-orders", "0"], "--max-orders"),
    (["--simulate-loss", "2"], "--simulate-loss"),
    (["--day-end-idle", "-1"], "--day-end-idle"),
    (["--dead-letter-topic", "exchange.events"], "--dead-letter-topic"),
    (["--retransmit-requests", "0"], "rates"),
    (["--retransmit-total-bytes", "-1"], "rates"),
]


def _one_line_error(result, flag: str) -> None:
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 2, result.output
    assert len(lines) == 1 and lines[0].startswith("Error: ") and flag in lines[0], result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize(("args", "flag"), LISTEN_BAD, ids=[" ".join(a) for a, _f in LISTEN_BAD])
def test_listen_refuses_bad_arguments(args, flag) -> None:
    _one_line_error(CliRunner().invoke(app, ["listen", "--max-runtime", "1", *args]), flag)


@pytest.mark.parametrize(("args", "flag"), STREAM_BAD, ids=[" ".join(a) for a, _f in STREAM_BAD])
def test_itch_stream_refuses_bad_arguments(args, flag) -> None:
    result = CliRunner().invoke(app, ["itch-stream", "--kafka-brokers", "127.0.0.1:1", "--max-runtime", "1", *args])
    _one_line_error(result, flag)


def test_a_listener_with_tick_size_0_cannot_be_made() -> None:
    """It used to be made, and crashed (ZeroDivisionError in compiled code) on the first Add Order."""
    with pytest.raises(ValueError, match="--tick-size"):
        ListenerConfig(tick_size=0)
    with pytest.raises(ValueError, match="--tick-size"):
        StreamerConfig(symbols=["AAPL"], tick_size=0)
    # and a valid tick size the prices are not a multiple of is reported, not a crash
    lis = Listener(ListenerConfig(tick_size=7, print_messages=False, retransmit=None, session=b"QR20260102"),
                   out=io.StringIO(), err=io.StringIO())
    add = b"A" + bytes(4) + (34_200 * 10**9).to_bytes(6, "big") + (1).to_bytes(8, "big") + b"B" + \
        (100).to_bytes(4, "big") + b"XYZ     " + (1_000_000).to_bytes(4, "big")
    lis.handle_packet(mold.header(b"QR20260102", 1, 1) + len(add).to_bytes(2, "big") + add)
    lis.flush()
    assert lis.stats.book_error_kinds == {"off_tick_price": 1}
