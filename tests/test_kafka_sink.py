"""KafkaSink against the real broker: every record arrives unchanged with its headers and the
end-of-session marker; a dead broker never blocks or fails the producer, and every lost message is counted."""

from __future__ import annotations

import time

import numpy as np
import pytest
from kafka_lake_testutil import consume_all, create_topics
from qrsdp_log_testutil import make_records

from qrsdp_sim.kafka.message import EndOfSession
from qrsdp_sim.kafka.sink import KafkaSink
from qrsdp_sim.records import RECORD_DTYPE

pytestmark = [pytest.mark.services, pytest.mark.timeout(1800)]


def test_every_record_arrives_unchanged_with_headers_and_eos(kafka_stack) -> None:
    bootstrap = kafka_stack.bootstrap_servers
    topic, _dlq = create_topics(bootstrap, "sink")
    records = make_records(25_000, seed=3)
    sink = KafkaSink(bootstrap, symbol="AAPL", date="2026-01-05", run_id="run-xyz", topic=topic)
    for i in range(0, len(records), 4_000):
        sink.append(records[i : i + 4_000])
    sink.close(close_ticks=10_042)
    assert sink.stats.produced == len(records) + 1
    assert sink.stats.delivered == len(records) + 1
    assert sink.stats.failed == 0

    msgs = consume_all(bootstrap, topic, len(records) + 1)
    assert len(msgs) == len(records) + 1
    assert len({m.partition() for m in msgs}) == 1, "one symbol must map to one partition (ordering)"
    msgs.sort(key=lambda m: m.offset())
    events, eos = msgs[:-1], msgs[-1]
    assert all(m.key() == b"AAPL" for m in msgs)
    values = np.frombuffer(b"".join(m.value() for m in events), dtype=RECORD_DTYPE)
    np.testing.assert_array_equal(values, records)
    for seq, m in enumerate(events):
        h = dict(m.headers())
        assert int.from_bytes(h["seq"], "big") == seq
        assert int.from_bytes(h["ts_ns"], "big") == int(records["ts_ns"][seq])
        assert h["date"] == b"2026-01-05" and h["run_id"] == b"run-xyz"
    h = dict(eos.headers())
    assert eos.value() in (b"", None)
    marker = EndOfSession.decode(h["eos"])
    assert marker == EndOfSession(events=len(records), close_ticks=10_042)


def test_dead_broker_counts_failures_without_blocking() -> None:
    records = make_records(20_000, seed=4)
    # Nothing listens on port 1: every message must fail, quickly, and nothing may raise.
    sink = KafkaSink(
        "127.0.0.1:1",
        symbol="MSFT",
        date="2026-01-05",
        run_id="dead",
        close_timeout=3.0,
        **{"message.timeout.ms": 2_000},
    )
    t0 = time.monotonic()
    for i in range(0, len(records), 5_000):
        sink.append(records[i : i + 5_000])
    append_seconds = time.monotonic() - t0
    sink.close(close_ticks=1)
    assert sink.stats.delivered == 0
    assert sink.stats.failed == len(records) + 1
    assert sink.stats.first_error is not None
    # Appending never waits on the broker (generous bound: this is a hang check, not a benchmark).
    assert append_seconds < 20
