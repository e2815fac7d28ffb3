"""qrsdp-kafka-bridge (qrsdp_sim/kafka/bridge/, Go + franz-go) and its Python client against the real broker.

The producer's messages are identical to KafkaSink's (key, value, headers, partition); consumed runs
reproduce the records and split at every discontinuity; everything else comes out as raw messages that
the existing decoder handles; commits round-trip with metadata (assign mode) and in the group
(subscribe mode, also from a revoke callback); a stalled reader keeps its group membership; a dead
broker never blocks sending and a bounded flush counts the failures; a killed bridge is a clear error.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import threading
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from kafka_lake_testutil import committed_offsets, consume_all, create_topics, wait_until
from qrsdp_log_testutil import make_records

from qrsdp_sim.kafka.bridge import (
    BridgeConsumer,
    BridgeError,
    BridgeProducer,
    Event,
    RawMessage,
    Run,
    bridge_available,
    find_bridge,
)
from qrsdp_sim.kafka.decode import decode_messages
from qrsdp_sim.kafka.message import EndOfSession, SessionDescription, big_endian_u64
from qrsdp_sim.kafka.sink import KafkaSink
from qrsdp_sim.records import RECORD_DTYPE

SESSION = {"seed": 1, "open_ticks": 10_000, "tick_size": 100, "market_open_ns": 34_200 * 10**9,
           "session_seconds": 23_400}
BRIDGE_SRC = Path(__file__).resolve().parent.parent / "qrsdp_sim" / "kafka" / "bridge"

pytestmark = pytest.mark.timeout(900)
services = pytest.mark.services


@pytest.fixture(scope="module")
def bridge(stack_installed) -> Path:
    """The bridge binary (``infra/stack.sh install`` builds it when its source is newer)."""
    path = find_bridge()
    assert path is not None and bridge_available(), "qrsdp-kafka-bridge was not built by infra/stack.sh install"
    return path


def collect(consumer: BridgeConsumer, records: int, timeout: float = 60.0) -> list:
    """Items until runs + raw messages cover ``records`` messages (events included in the list)."""
    items: list = []
    seen = 0
    deadline = time.monotonic() + timeout
    while seen < records and time.monotonic() < deadline:
        item = consumer.poll(1.0)
        if item is None:
            continue
        items.append(item)
        if isinstance(item, Run):
            seen += len(item)
        elif isinstance(item, RawMessage):
            seen += 1
    assert seen == records, f"got {seen} of {records} messages"
    return items


def data(items: list) -> list:
    return [i for i in items if not isinstance(i, Event)]


# --------------------------------------------------------------------------- producer


@services
def test_producer_messages_identical_to_kafka_sink(kafka_stack, bridge) -> None:
    bootstrap = kafka_stack.bootstrap_servers
    sink_topic, _ = create_topics(bootstrap, "bridge-sink", partitions=6)
    bridge_topic, _ = create_topics(bootstrap, "bridge-prod", partitions=6)
    # Many keys: each must land on the same partition as with librdkafka's murmur2_random.
    symbols = ["AAPL", "MSFT", "GOOG", "X", "ABCDEFGH", "Z9", *[f"S{i:03d}" for i in range(24)]]
    date, run_id = "2026-01-05", "run-bridge"
    sessions = {}
    for k, sym in enumerate(symbols):
        recs = make_records(3_000 if k == 0 else 40, seed=k)
        recs["ts_ns"][0] = 0x0102030405060708  # every byte distinct: the header's byte order shows
        sessions[sym] = recs

    for sym, recs in sessions.items():
        sink = KafkaSink(bootstrap, symbol=sym, date=date, run_id=run_id, topic=sink_topic)
        for i in range(0, len(recs), 1_000):
            sink.append(recs[i : i + 1_000])
        sink.close(close_ticks=0)
        assert sink.stats.failed == 0

    producer = BridgeProducer(bootstrap, bridge_topic)
    for sym, recs in sessions.items():
        for i in range(0, len(recs), 1_000):
            producer.send_run(sym, date, run_id, i, recs[i : i + 1_000])
        # the marker exactly as KafkaSink.close() makes it (EndOfSession(events, close 0))
        producer.send_message(sym, b"", [("date", date.encode()), ("seq", big_endian_u64(np.array([len(recs)]))),
                                         ("run_id", run_id.encode()), ("eos", EndOfSession(len(recs), 0).encode())])
    stats = producer.flush(60)
    final = producer.close()
    total = sum(len(r) + 1 for r in sessions.values())
    assert producer.totals["produced"] == producer.totals["delivered"] == total
    assert producer.totals["failed"] == 0
    assert final == stats
    for sym, recs in sessions.items():
        assert stats[(sym, date)] == {"produced": len(recs) + 1, "delivered": len(recs) + 1, "failed": 0,
                                      "pending": 0, "first_error": None}

    def by_key(topic: str) -> dict[bytes, list]:
        out: dict[bytes, list] = {}
        for m in sorted(consume_all(bootstrap, topic, total), key=lambda m: (m.partition(), m.offset())):
            out.setdefault(m.key(), []).append(m)
        return out

    want, got = by_key(sink_topic), by_key(bridge_topic)
    assert sorted(want) == sorted(got) == sorted(s.encode() for s in symbols)
    assert len({ms[0].partition() for ms in want.values()}) > 1, "keys should spread over partitions"
    for key in want:
        w, g = want[key], got[key]
        assert len(w) == len(g) == len(sessions[key.decode()]) + 1
        assert {m.partition() for m in g} == {w[0].partition()}, f"{key!r}: partition differs from murmur2_random"
        for a, b in zip(w, g, strict=True):
            assert (b.key(), b.value() or b"", b.headers()) == (a.key(), a.value() or b"", a.headers())
    first = got[b"AAPL"][0]
    assert dict(first.headers())["ts_ns"] == bytes([1, 2, 3, 4, 5, 6, 7, 8])


@services
def test_dead_broker_counts_failures_without_blocking(bridge) -> None:
    records = make_records(20_000, seed=4)
    producer = BridgeProducer("127.0.0.1:1", "exchange.events", delivery_timeout_ms=2_000,
                              extra_args=["--log-level", "none"])
    t0 = time.monotonic()
    for i in range(0, len(records), 5_000):
        producer.send_run("MSFT", "2026-01-05", "dead", i, records[i : i + 5_000])
    producer.send_message("MSFT", b"", [("date", b"2026-01-05")])
    send_seconds = time.monotonic() - t0
    t0 = time.monotonic()
    stats = producer.flush(3.0)
    flush_seconds = time.monotonic() - t0
    final = producer.close(timeout=1.0)
    st = stats[("MSFT", "2026-01-05")]
    assert st["produced"] == len(records) + 1
    assert st["delivered"] == 0
    assert st["failed"] == len(records) + 1
    assert st["first_error"]
    assert final[("MSFT", "2026-01-05")]["failed"] == len(records) + 1
    assert send_seconds < 5, "send_run must never wait on the broker"
    assert flush_seconds < 15, f"a 3 s flush took {flush_seconds:.1f} s"


@services
def test_full_buffer_fails_records_at_once(bridge) -> None:
    records = make_records(5_000, seed=5)
    producer = BridgeProducer("127.0.0.1:1", "exchange.events", max_buffered_records=1_000,
                              extra_args=["--log-level", "none"])
    t0 = time.monotonic()
    producer.send_run("AAPL", "2026-01-06", "full", 0, records)
    assert time.monotonic() - t0 < 5
    stats = producer.stats()[("AAPL", "2026-01-06")]
    assert stats["produced"] == 5_000
    stats = producer.flush(1.0)[("AAPL", "2026-01-06")]
    producer.close(timeout=0.5)
    assert stats["failed"] == 5_000 and stats["delivered"] == 0
    assert "local queue full" in stats["first_error"]


@services
def test_killed_bridge_is_a_clear_error(bridge) -> None:
    producer = BridgeProducer("127.0.0.1:1", "exchange.events", extra_args=["--log-level", "none"])
    os.kill(producer.pid, signal.SIGKILL)
    producer._proc.proc.wait(10)
    with pytest.raises(BridgeError, match=r"qrsdp-kafka-bridge produce \(pid \d+\) exited with code -9"):
        for i in range(100):  # the first writes may still fit the pipe; the broken pipe shows soon
            producer.send_run("AAPL", "2026-01-05", "r", i * 1000, make_records(1_000))
            producer.flush(1.0)
    consumer = BridgeConsumer("127.0.0.1:1", "exchange.events", "g", mode="assign",
                              extra_args=["--log-level", "none"])
    os.kill(consumer.pid, signal.SIGKILL)
    with pytest.raises(BridgeError, match=r"exited with code -9.*stdout closed"):
        consumer.poll(10.0)
    consumer.close()


@services
def test_bad_flags_and_missing_binary(bridge) -> None:
    proc = subprocess.run([str(bridge), "consume", "--brokers", "127.0.0.1:1", "--topic", "t", "--group", "g"],
                          capture_output=True, text=True, timeout=30, check=False)
    assert proc.returncode == 2 and "--subscribe" in proc.stderr and not proc.stdout
    with pytest.raises(BridgeError, match=r"(?s)exited with code 2.*--reset must be earliest or latest"):
        BridgeConsumer("127.0.0.1:1", "t", "g", mode="assign", extra_args=["--reset", "middle"])
    with pytest.raises(BridgeError, match="cannot start"):
        BridgeProducer("127.0.0.1:1", "t", binary="/nonexistent/qrsdp-kafka-bridge")


# --------------------------------------------------------------------------- consumer


def _event(key: str, date: str, run_id: str, seq: int, record: np.ndarray) -> dict:
    ts = int(record["ts_ns"]).to_bytes(8, "big")
    return {"key": key.encode(), "value": record.tobytes(), "headers": [
        ("ts_ns", ts), ("date", date.encode()), ("seq", seq.to_bytes(8, "big")), ("run_id", run_id.encode())]}


@services
def test_consumer_runs_split_at_discontinuities_and_raw_messages(kafka_stack, bridge) -> None:
    bootstrap = kafka_stack.bootstrap_servers
    topic, _ = create_topics(bootstrap, "bridge-runs", partitions=1)
    recs = make_records(1_000, seed=7)
    msgs: list[dict] = []
    msgs += [_event("AAA", "2026-01-05", "r1", s, recs[s]) for s in range(300)]  # offsets 0..299
    msgs += [_event("AAA", "2026-01-05", "r1", s, recs[s]) for s in range(100, 150)]  # republish: seq jumps back
    msgs += [_event("BBB", "2026-01-05", "r1", s, recs[s]) for s in range(20)]  # key change
    msgs += [_event("BBB", "2026-01-06", "r1", s, recs[s]) for s in range(20, 30)]  # date change
    msgs += [_event("BBB", "2026-01-06", "r2", s, recs[s]) for s in range(30, 40)]  # run_id change
    msgs += [_event("BBB", "2026-01-06", "r2", s, recs[s]) for s in range(41, 45)]  # seq gap
    eos = {"key": b"AAA", "value": b"", "headers": [
        ("date", b"2026-01-05"), ("seq", (300).to_bytes(8, "big")), ("run_id", b"r1"),
        ("eos", EndOfSession(300, 12_345).encode()), ("session", json.dumps(SESSION).encode())]}
    short = _event("CCC", "2026-01-05", "r1", 0, recs[0]) | {"value": recs[0].tobytes()[:25]}
    reordered = _event("CCC", "2026-01-05", "r1", 1, recs[1])
    reordered["headers"] = [reordered["headers"][i] for i in (1, 0, 2, 3)]
    no_key = _event("CCC", "2026-01-05", "r1", 2, recs[2]) | {"key": None}
    msgs += [eos, short, reordered, no_key]
    msgs += [_event("AAA", "2026-01-05", "r1", s, recs[s]) for s in range(300, 310)]  # after the marker

    p = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "linger.ms": 5, "log_level": 3})
    for m in msgs:
        p.produce(topic, m["value"], m["key"], partition=0, headers=m["headers"])
    assert p.flush(30) == 0

    with BridgeConsumer(bootstrap, topic, f"runs-{uuid.uuid4().hex[:6]}", mode="assign") as consumer:
        assert consumer.partitions() == {0: (0, len(msgs))}
        consumer.assign({0: 0})
        items = data(collect(consumer, len(msgs)))
    shapes = [(i.first_offset, i.first_seq, len(i), i.key, i.date, i.run_id) if isinstance(i, Run)
              else ("raw", i.offset()) for i in items]
    assert shapes == [
        (0, 0, 300, b"AAA", b"2026-01-05", b"r1"),
        (300, 100, 50, b"AAA", b"2026-01-05", b"r1"),
        (350, 0, 20, b"BBB", b"2026-01-05", b"r1"),
        (370, 20, 10, b"BBB", b"2026-01-06", b"r1"),
        (380, 30, 10, b"BBB", b"2026-01-06", b"r2"),
        (390, 41, 4, b"BBB", b"2026-01-06", b"r2"),
        ("raw", 394), ("raw", 395), ("raw", 396), ("raw", 397),
        (398, 300, 10, b"AAA", b"2026-01-05", b"r1"),
    ]
    runs = [i for i in items if isinstance(i, Run)]
    for run in runs:
        assert run.records.dtype == RECORD_DTYPE and run.partition == 0
        np.testing.assert_array_equal(run.records, recs[run.seq])
        assert run.next_offset == run.first_offset + len(run)
    raw = [i for i in items if isinstance(i, RawMessage)]
    for m, sent in zip(raw, [eos, short, reordered, no_key], strict=True):
        assert (m.topic(), m.partition(), m.error()) == (topic, 0, None)
        assert m.key() == sent["key"] and (m.value() or b"") == sent["value"]
        assert m.headers() == sent["headers"]
    # The existing decoder (written for confluent messages) handles raw messages unchanged.
    decoded = decode_messages(raw)
    assert [(m.symbol, m.date.isoformat(), m.eos) for m in decoded.markers] == [
        ("AAA", "2026-01-05", EndOfSession(300, 12_345))]
    assert decoded.markers[0].session == SessionDescription(**SESSION)
    assert [r.kind for r in decoded.rejected] == ["value_size", "key"]  # the 25-byte value and the null key
    assert [s.symbol for s in decoded.sessions] == ["CCC"]  # the reordered headers: valid, general path


@services
def test_assign_mode_commit_metadata_round_trip_and_reassign(kafka_stack, bridge) -> None:
    bootstrap = kafka_stack.bootstrap_servers
    topic, _ = create_topics(bootstrap, "bridge-assign", partitions=3)
    group = f"itch-{uuid.uuid4().hex[:8]}"
    recs = make_records(3_000, seed=9)
    with BridgeProducer(bootstrap, topic) as producer:
        for sym in ("AAA", "BBB", "CCC", "DDD"):
            producer.send_run(sym, "2026-01-05", "r", 0, recs)
        assert producer.flush(60)[("AAA", "2026-01-05")]["delivered"] == 3_000

    c = BridgeConsumer(bootstrap, topic, group, mode="assign")
    parts = c.partitions()
    assert sorted(parts) == [0, 1, 2] and sum(h for _lo, h in parts.values()) == 12_000
    assert c.committed() == {}
    c.assign({p: 0 for p in parts})
    items = data(collect(c, 12_000))
    ends: dict[int, int] = {}
    for run in items:
        ends[run.partition] = max(ends.get(run.partition, 0), run.next_offset)
    assert ends == {p: h for p, (_lo, h) in parts.items() if h}
    # Metadata up to the streamer's limit (4000 bytes) per partition, different per partition.
    meta = {p: f"itch1|fp{p}|" + "x" * (3_990 - len(f"itch1|fp{p}|")) for p in parts}
    half = {p: h // 2 for p, (_lo, h) in parts.items()}
    c.commit(half, meta)
    assert c.committed() == {p: (half[p], meta[p]) for p in parts}

    # Re-assign to an earlier position: what comes next starts exactly there (no stale items).
    busiest = max(parts, key=lambda p: parts[p][1])
    c.assign({busiest: 10})
    first = c.poll(30)
    while isinstance(first, Event):
        first = c.poll(30)
    assert isinstance(first, Run) and first.partition == busiest and first.first_offset == 10
    c.close()

    # confluent-kafka sees the same commit, metadata included (the bridge stores it NUL-terminated as
    # librdkafka does; confluent-kafka-python reads metadata as a C string) ...
    check = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False, "log_level": 3})
    try:
        got = check.committed([TopicPartition(topic, p) for p in parts], timeout=30)
        assert {tp.partition: (tp.offset, tp.metadata) for tp in got} == {p: (half[p], meta[p]) for p in parts}
    finally:
        check.close()
    # ... and the bridge reads confluent-kafka's commits unchanged (the streamer's state survives a switch).
    other = f"{group}-confluent"
    check = Consumer({"bootstrap.servers": bootstrap, "group.id": other, "enable.auto.commit": False, "log_level": 3})
    try:
        check.commit(offsets=[TopicPartition(topic, 0, 7, "itch1|from-confluent")], asynchronous=False)
    finally:
        check.close()
    with BridgeConsumer(bootstrap, topic, other, mode="assign") as reader:
        assert reader.committed() == {0: (7, "itch1|from-confluent")}

    # A restarted consumer resumes from the committed offsets.
    with BridgeConsumer(bootstrap, topic, group, mode="assign") as again:
        committed = again.committed()
        again.assign({p: o for p, (o, _m) in committed.items()})
        rest = data(collect(again, 12_000 - sum(half.values())))
        assert min(r.first_offset for r in rest if r.partition == busiest) == half[busiest]


@services
def test_subscribe_mode_commit_and_revoke_callback(kafka_stack, bridge) -> None:
    bootstrap = kafka_stack.bootstrap_servers
    topic, _ = create_topics(bootstrap, "bridge-group", partitions=4)
    group = f"lake-{uuid.uuid4().hex[:8]}"
    recs = make_records(2_000, seed=11)
    symbols = [f"S{i}" for i in range(12)]
    with BridgeProducer(bootstrap, topic) as producer:
        for sym in symbols:
            producer.send_run(sym, "2026-01-05", "r", 0, recs)
        producer.flush(60)
    total = len(symbols) * len(recs)

    revoked: list[tuple[list[int], bool, dict]] = []
    next_offsets: dict[int, int] = {}

    def on_revoke(partitions: list[int], lost: bool) -> None:
        # what the Parquet consumer will do: land, then commit the revoked partitions before they move
        mine = {p: next_offsets[p] for p in partitions if p in next_offsets}
        if mine and not lost:
            c1.commit(mine)
        revoked.append((partitions, lost, mine))

    c1 = BridgeConsumer(bootstrap, topic, group, on_revoke=on_revoke)
    items = collect(c1, total)
    assert c1.assignment == {0, 1, 2, 3}
    for run in data(items):
        next_offsets[run.partition] = run.next_offset
    c1.commit(next_offsets)
    assert committed_offsets(bootstrap, group, topic) == {p: next_offsets.get(p, 0) for p in range(4)}

    # A second member joins: the cooperative rebalance revokes some of c1's partitions, and waits for the
    # revoke callback (which commits) before c2 gets them.
    c2_items: list = []
    stop = threading.Event()
    c2 = BridgeConsumer(bootstrap, topic, group)

    def poll_c2() -> None:
        while not stop.is_set():
            item = c2.poll(0.2)
            if item is not None:
                c2_items.append(item)

    t = threading.Thread(target=poll_c2, daemon=True)
    t.start()
    try:
        deadline = time.monotonic() + 60
        while not revoked and time.monotonic() < deadline:
            c1.poll(0.2)
        assert revoked, "no partitions were revoked from the first member"
        wait_until(lambda: any(isinstance(i, Event) and i.name == "assigned" for i in c2_items), 60,
                   "the second member's assignment")
    finally:
        stop.set()
        t.join(10)
    moved, lost, committed_in_callback = revoked[0]
    assert not lost and moved and committed_in_callback == {p: next_offsets[p] for p in moved if p in next_offsets}
    c2_assigned = {p for i in c2_items if isinstance(i, Event) and i.name == "assigned" for p in i.get("partitions")}
    assert c2_assigned == set(moved)
    assert c1.assignment == {0, 1, 2, 3} - set(moved)
    # c2 starts where c1 committed in its revoke callback: nothing is consumed twice.
    assert not [i for i in c2_items if isinstance(i, Run | RawMessage)]
    assert committed_offsets(bootstrap, group, topic) == {p: next_offsets.get(p, 0) for p in range(4)}
    c2.close()
    c1.close()


@services
def test_stalled_reader_keeps_group_membership(kafka_stack, bridge) -> None:
    """Python not reading (the lake is down) blocks the bridge's stdout: fetching stops, heartbeats go on."""
    bootstrap = kafka_stack.bootstrap_servers
    topic, _ = create_topics(bootstrap, "bridge-stall", partitions=2)
    group = f"stall-{uuid.uuid4().hex[:8]}"
    recs = make_records(100_000, seed=12)
    with BridgeProducer(bootstrap, topic) as producer:
        for sym in ("AAA", "BBB", "CCC", "DDD"):
            producer.send_run(sym, "2026-01-05", "r", 0, recs)
        producer.flush(60)
    total = 4 * len(recs)  # ~11 MB of frames: far more than the pipe and the bridge's buffer hold

    c = BridgeConsumer(bootstrap, topic, group, session_timeout_ms=6_000,
                       extra_args=["--max-run", "1024", "--out-buffer", "65536"])
    items = []
    while not any(isinstance(i, Run) for i in items):
        items.append(c.poll(30))
    time.sleep(30)  # 5 session timeouts without reading
    items += collect(c, total - sum(len(i) for i in items if isinstance(i, Run)), timeout=120)
    events = [i for i in items if isinstance(i, Event)]
    assert [e.name for e in events] == ["assigned"], events
    runs = [i for i in items if isinstance(i, Run)]
    assert sum(len(r) for r in runs) == total
    ends = {}
    for r in runs:
        ends[r.partition] = r.next_offset
    c.commit(ends)  # the generation is still valid
    assert c.poll(1.0) is None
    c.close()


# --------------------------------------------------------------------------- Go unit tests


@pytest.mark.skipif(shutil.which("go") is None, reason="go is needed for the bridge's Go tests")
def test_go_unit_tests() -> None:
    env = {**os.environ, "CGO_ENABLED": "0", "GOTOOLCHAIN": "auto"}
    proc = subprocess.run(["go", "test", "-count=1", "./..."], cwd=BRIDGE_SRC, env=env, capture_output=True,
                          text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
