"""The Parquet consumer on the real services survives every poison message (issue 12, defects 1 and 4).

One partition, so every poison message sits in front of the good sessions: each of tests/kafka_poison.py's
malformed messages (null header values on the fast and the marker path, ``{}`` session descriptions,
count-0 markers, absurd numbers, bad keys and dates, garbage), impossible records in the producer's exact
shape (the bridge delivers them inside runs), a marker whose ``session`` is ``{}`` right after a complete
session, and after a complete session a count-0 and a shorter marker. The consumer -- running before any
of it is produced -- must stay up, dead-letter each bad message with its kind (counted), land and mark the
good sessions exactly once, never move a marker backwards, and commit past everything. Run with both
Kafka clients.
"""

from __future__ import annotations

import json
from collections import Counter

import pytest
from confluent_kafka import Producer
from kafka_lake_testutil import (
    ConsumerThread,
    assert_lake_exactly_once,
    committed_offsets,
    consume_all,
    create_topics,
    high_watermarks,
    lake_markers,
    s3_lake,
    wait_until,
)
from kafka_poison import POISON, SESSION, eos, record
from qrsdp_log_testutil import make_records

from qrsdp_sim.kafka.consumer import ParquetConsumer
from qrsdp_sim.kafka.sink import KafkaSink, producer_config

pytestmark = [pytest.mark.services, pytest.mark.timeout(240)]

DAY = "2026-01-05"


@pytest.mark.parametrize("client", ["bridge", "python"])
def test_poison_messages_never_stop_the_consumer(kafka_stack, minio_stack, monkeypatch, client) -> None:
    monkeypatch.setenv("QRSDP_KAFKA_CLIENT", client)
    bootstrap = kafka_stack.bootstrap_servers
    topic, dlq = create_topics(bootstrap, "poison", partitions=1)
    lake = s3_lake(minio_stack, "poison")
    group = f"pw-{topic}"
    consumer = ParquetConsumer(bootstrap, lake, topic=topic, group_id=group, dead_letter_topic=dlq,
                               batch_records=500, batch_seconds=1.0)
    assert consumer.stats.client == client
    worker = ConsumerThread(consumer)

    records = {"AAA": make_records(600, seed=21), "CCC": make_records(100, seed=22)}
    expected = {(s, DAY): r for s, r in records.items()}
    session = {**SESSION, "events": 600}
    producer = Producer(producer_config(bootstrap, **{"delivery.report.only.error": False}))
    offsets: dict[int, str] = {}  # offset -> expected dead-letter kind

    def send(key, value, headers, kind: str | None = None) -> None:
        def delivered(err, msg) -> None:
            assert err is None, err
            if kind is not None:
                offsets[msg.offset()] = kind

        producer.produce(topic, value, key, partition=0, headers=headers, on_delivery=delivered)

    def sink(symbol: str) -> KafkaSink:
        return KafkaSink(bootstrap, symbol=symbol, date=DAY, run_id="good", topic=topic, producer=producer)

    try:
        for _case, m, kind in POISON:
            send(m.key(), m.value(), m.headers(), kind)
        # Impossible records in the producer's exact shape (the bridge delivers these inside a run).
        bad = make_records(3, seed=23)
        values = [record(type=9, side=0), record(qty=0), record(type=0, side=1)]
        for seq, v in enumerate(values):
            ts = int.from_bytes(v[:8], "little").to_bytes(8, "big")
            send(b"DDD", v, [("ts_ns", ts), ("date", DAY.encode()), ("seq", seq.to_bytes(8, "big")),
                             ("run_id", b"bad")], "record")
        assert len(bad) == len(values)
        # A complete session, then its marker with a `session` header that is valid JSON without the fields
        # (it used to raise KeyError in a writer thread, forever), then its good marker.
        ccc = sink("CCC")
        ccc.append(records["CCC"])
        send(b"CCC", b"", [("date", DAY.encode()), ("seq", (100).to_bytes(8, "big")), ("run_id", b"good"),
                           ("eos", eos(100)), ("session", b"{}")], "session")
        ccc.end_of_session(100, 10_001, {**SESSION, "events": 100})
        # AAA complete, then a count-0 marker (rejected) and a shorter one (left aside: never backwards).
        aaa = sink("AAA")
        aaa.append(records["AAA"])
        aaa.end_of_session(600, 10_001, session)
        send(b"AAA", b"", [("date", DAY.encode()), ("seq", (0).to_bytes(8, "big")), ("run_id", b"x"),
                           ("eos", eos(0)), ("session", json.dumps(session).encode())], "eos")
        send(b"AAA", b"", [("date", DAY.encode()), ("seq", (300).to_bytes(8, "big")), ("run_id", b"x"),
                           ("eos", eos(300)), ("session", json.dumps({**session, "events": 300}).encode())])
        assert producer.flush(60) == 0
        total = sum(high_watermarks(bootstrap, topic).values())

        worker.wait_complete(set(expected), timeout=90)
        wait_until(lambda: (consumer.stats.messages == total and consumer.stats.superseded_markers == 1)
                   or not worker.is_alive(), 60, "every message taken")
        hw = high_watermarks(bootstrap, topic)
        wait_until(lambda: committed_offsets(bootstrap, group, topic) == hw
                   or not worker.is_alive(), 60, "committed past everything")
        assert worker.is_alive(), "a poison message stopped the consumer"
    finally:
        worker.stop()

    stats = consumer.stats
    want = Counter(offsets.values())
    assert stats.dead_letter_kinds == dict(want), (stats.dead_letter_kinds, want)
    assert stats.dead_lettered == len(offsets) == len(POISON) + 3 + 2
    assert (stats.markers_written, stats.superseded_markers, stats.write_errors) == (2, 1, 0)
    check = assert_lake_exactly_once(lake, expected)
    assert check.rows == check.distinct == 700
    markers = lake_markers(lake)
    assert {k: m.rows for k, m in markers.items()} == {("AAA", DAY): 600, ("CCC", DAY): 100}
    assert lake.read_partition("sessions", "AAA", DAY).column("events").to_pylist() == [600]

    dead = consume_all(bootstrap, dlq, len(offsets), timeout=30)
    assert len(dead) == len(offsets)
    for m in dead:
        h = dict(m.headers())
        src_topic, _partition, offset = h["dlq_source"].decode().rsplit("/", 2)
        assert src_topic == topic and h["dlq_kind"].decode() == offsets[int(offset)], h
        assert h["dlq_reason"]
