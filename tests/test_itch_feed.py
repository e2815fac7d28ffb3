"""The ITCH feed end to end on the real Kafka broker and loopback multicast:

* round trip of simulated sessions: Kafka -> ``qrsdp itch-stream`` (subprocess) -> UDP multicast ->
  listener; decoded messages equal the source records, the final books equal the ``.qrsdp`` replay,
  the two partitions come out as one time-ordered sequence equal to ``itch-export``'s file, and the
  pcap of sent packets holds exactly the delivered message stream;
* poison messages on the broker (type > 5, timestamps beyond 6 bytes, prices beyond 4 bytes, bad date
  and seq headers, odd values, an event its resting order contradicts) go to the dead-letter topic
  with their reasons; the feed of everything else goes on, and a restart does not dead-letter again;
* 3% simulated sender packet loss, fully recovered through the re-request server;
* ``kill -9`` of the streamer mid-session and a restart: every message exactly once, in order -- with
  the native Kafka bridge, with confluent-kafka, and with a restart that switches from confluent-kafka
  to the bridge (the bridge resumes the state and in-flight batch the Python client committed).

The streamer uses the Kafka client ``QRSDP_KAFKA_CLIENT`` selects (``auto``: the bridge when it is
built); each summary says which one ran.

The streamer runs as a subprocess (it must survive SIGKILL of itself); the listener runs in-process.
Every subprocess is killed at the end, also on failure.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient, NewTopic
from itch_streams import sweep_session
from test_itch_listener import assert_matches_source

from qrsdp_sim import stack
from qrsdp_sim.engine.runner import RunSpec, session_description, session_path, simulate_symbol_date
from qrsdp_sim.eventlog.reader import read_records
from qrsdp_sim.itch import moldudp64 as mold
from qrsdp_sim.itch.export import export_day, find_sessions
from qrsdp_sim.itch.listener import Listener, ListenerConfig
from qrsdp_sim.itch.transport import read_pcap
from qrsdp_sim.kafka.bridge import bridge_available
from qrsdp_sim.kafka.client import CLIENT_ENV, use_bridge
from qrsdp_sim.kafka.message import H_DATE, H_EOS, H_RUN_ID, H_SEQ, H_TS_NS
from qrsdp_sim.kafka.message import EndOfSession as Eos
from qrsdp_sim.kafka.publisher import KafkaPublisher

pytestmark = [pytest.mark.services, pytest.mark.timeout(300)]

DATE = dt.date(2026, 1, 2)
GROUP = "239.1.1.1"


def _topic(bootstrap: str, partitions: int) -> str:
    name = f"qrsdp.test.itch.{uuid.uuid4().hex[:10]}"
    admin = AdminClient({"bootstrap.servers": bootstrap})  # must outlive the future
    admin.create_topics([NewTopic(name, partitions, 1)])[name].result(30)
    return name


def _publish(bootstrap: str, topic: str, out: Path, symbols: list[str], seconds: int) -> dict[str, Path]:
    spec = RunSpec(base_seed=21, session_seconds=seconds)
    pub = KafkaPublisher(bootstrap, topic)
    paths = {}
    for i, sym in enumerate(symbols):
        path = session_path(out, sym, DATE)
        sink = pub.open_session(sym, DATE, "itch-test")
        res = simulate_symbol_date(spec, sym, DATE, 10_000 + 500 * i, path, extra_sinks=[sink])
        pub.end_session(sink, session_description(spec, sym, DATE, res))
        paths[sym] = path
    summary = pub.close()
    assert summary["failed"] == 0
    return paths


def _free_udp_port() -> int:
    return stack.free_port(kind=socket.SOCK_DGRAM)


class Procs:
    """Subprocesses started by a test; all killed at the end."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.procs: list[subprocess.Popen] = []

    def streamer(self, bootstrap: str, topic: str, group: str, symbols: list[str], port: int, rport: int,
                 *extra: str, name: str = "streamer", client: str | None = None) -> subprocess.Popen:
        cmd = [sys.executable, "-c", "from qrsdp_sim.cli import main; main()", "itch-stream",
               "--kafka-brokers", bootstrap, "--kafka-topic", topic, "--consumer-group", group,
               "--symbols", ",".join(symbols), "--multicast-group", GROUP, "--port", str(port),
               "--retransmit-port", str(rport), "--summary-json", str(self.tmp / f"{name}.json"),
               "--max-runtime", "150", *extra]  # fmt: skip
        log = open(self.tmp / f"{name}.log", "wb")  # noqa: SIM115 - owned by the process
        env = dict(os.environ)
        if client is not None:
            env[CLIENT_ENV] = client
        p = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
        self.procs.append(p)
        return p

    def stop(self, p: subprocess.Popen, timeout: float = 30) -> int:
        p.send_signal(signal.SIGTERM)
        return p.wait(timeout)

    def kill_all(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.kill()
                p.wait(10)

    def log(self, name: str = "streamer") -> str:
        path = self.tmp / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""


@pytest.fixture
def procs(tmp_path):
    p = Procs(tmp_path)
    yield p
    p.kill_all()


def _wait(thread: threading.Thread, *streamers: subprocess.Popen, timeout: float = 120) -> None:
    """Wait for the listener; stop waiting early when every streamer has died."""
    deadline = time.monotonic() + timeout
    while thread.is_alive() and time.monotonic() < deadline:
        if streamers and all(p.poll() is not None for p in streamers):
            thread.join(5)  # it may still finish from the re-request server's last answers
            break
        thread.join(0.2)
    if thread.is_alive():
        thread.stop_event.set()  # type: ignore[attr-defined]
        thread.join(10)


def _listen(port: int, rport: int, **kw) -> tuple[Listener, threading.Thread, dict]:
    cfg = ListenerConfig(multicast_group=GROUP, port=port, retransmit=("127.0.0.1", rport), print_messages=False,
                         keep=True, gap_timeout=kw.pop("gap_timeout", 30), max_runtime=kw.pop("max_runtime", 120),
                         **kw)
    lis = Listener(cfg)
    lis.open()
    result: dict = {}
    stop = threading.Event()
    thread = threading.Thread(target=lambda: result.update(lis.run(stop)), daemon=True)
    thread.stop_event = stop  # type: ignore[attr-defined]
    thread.start()
    return lis, thread, result


def _client() -> str:
    """The client a streamer started with this test process's environment uses."""
    return "bridge" if use_bridge() else "python"


def _export_bytes(paths: dict[str, Path], tmp: Path, symbols: list[str]) -> bytes:
    target = tmp / "reference.itch"
    export_day(find_sessions(list(paths.values())), target, symbols=symbols)
    return target.read_bytes()


def test_loopback_multicast_works_here() -> None:
    """The 20-line probe: TTL 1, loop on, outgoing interface 127.0.0.1, joined on 127.0.0.1."""
    port = _free_udp_port()
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    rx.bind((GROUP, port))
    rx.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, socket.inet_aton(GROUP) + socket.inet_aton("127.0.0.1"))
    rx.settimeout(2)
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    tx.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 1)
    tx.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 1)
    tx.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton("127.0.0.1"))
    try:
        tx.sendto(b"probe", (GROUP, port))
        assert rx.recvfrom(64)[0] == b"probe"
    finally:
        rx.close()
        tx.close()


def test_round_trip_two_stocks_books_and_pcap(kafka_stack, procs, tmp_path) -> None:
    bootstrap = kafka_stack.bootstrap_servers
    topic = _topic(bootstrap, 2)
    symbols = ["AAPL", "MSFT"]
    paths = _publish(bootstrap, topic, tmp_path / "run", symbols, 600)
    port, rport = _free_udp_port(), _free_udp_port()
    lis, thread, result = _listen(port, rport)
    pcap = tmp_path / "feed.pcap"
    st = procs.streamer(bootstrap, topic, f"itch-{uuid.uuid4().hex[:8]}", symbols, port, rport, "--pcap", str(pcap),
                        "--merge-window", "60")  # a slow machine never makes the merge give up waiting
    _wait(thread, st)
    assert result.get("complete"), (result, procs.log())
    assert procs.stop(st) == 0, procs.log()  # SIGTERM: graceful
    assert result["complete"], (result, procs.log())
    assert result["unrecovered"] == 0 and result["malformed_packets"] == 0 and result["book_errors"] == 0
    assert result["ts_order_violations"] == 0
    # one sequence in time order across the two partitions: the day's export, byte for byte
    assert b"".join(lis.raw_kept) == _export_bytes(paths, tmp_path, symbols)
    source = {s: read_records(p) for s, p in paths.items()}
    for locate, sym in enumerate(symbols, start=1):
        assert_matches_source(lis, source[sym], locate=locate, n_locates=2)
    n_events = sum(len(r) for r in source.values())
    assert result["messages"] == n_events + 5 + 3
    summary = json.loads((tmp_path / "streamer.json").read_text())
    c = summary["counters"]
    assert c["consumed"] == n_events + 2 and c["events"] == n_events  # + the two end-of-session markers
    assert c["sessions_started"] == 1 and c["sessions_ended"] == 1 and not summary["aborted"]
    assert summary["kafka_client"] == _client()
    # the capture holds every packet sent: data packets in sequence, then end of session
    captured = read_pcap(pcap)
    assert all(dst == (GROUP, port) and len(payload) <= 1400 for _t, payload, _s, dst in captured)
    stream, expect = bytearray(), 1
    for _t, payload, _s, _d in captured:
        session, seq, count = mold.parse_header(payload)
        assert session == b"QR20260102"
        if count in (0, 0xFFFF):
            assert seq == expect
            continue
        assert seq == expect
        expect += count
        stream += payload[20:]
    assert mold.parse_header(captured[-1][1])[2] == 0xFFFF
    assert bytes(stream) == b"".join(lis.raw_kept)


def test_sender_loss_is_fully_recovered(kafka_stack, procs, tmp_path) -> None:
    bootstrap = kafka_stack.bootstrap_servers
    topic = _topic(bootstrap, 1)
    paths = _publish(bootstrap, topic, tmp_path / "run", ["AAPL"], 1200)
    port, rport = _free_udp_port(), _free_udp_port()
    lis, thread, result = _listen(port, rport)
    st = procs.streamer(bootstrap, topic, f"itch-{uuid.uuid4().hex[:8]}", ["AAPL"], port, rport,
                        "--simulate-loss", "0.03")
    _wait(thread, st)
    assert result.get("complete"), (result, procs.log())
    assert procs.stop(st) == 0, procs.log()
    summary = json.loads((tmp_path / "streamer.json").read_text())
    assert summary["kafka_client"] == _client()
    dropped = summary["sender"]["dropped"]
    assert dropped >= 10, summary  # ~3% of ~700 packets
    assert result["complete"] and result["unrecovered"] == 0, result
    assert result["gaps"] >= 1 and result["recovered"] == result["gaps"]
    assert result["retransmitted"] > 0 and summary["retransmit"]["messages"] > 0
    # exactly the day's message stream, byte for byte (one stock: identical to the file export)
    assert b"".join(lis.raw_kept) == _export_bytes(paths, tmp_path, ["AAPL"])


@pytest.mark.parametrize(
    ("first_client", "second_client"),
    [("bridge", "bridge"), ("python", "python"), ("python", "bridge")],
    ids=["bridge", "python", "python-then-bridge"],
)
def test_kill_9_mid_session_and_restart_delivers_every_message_once(
    kafka_stack, procs, tmp_path, first_client, second_client
) -> None:
    if "bridge" in (first_client, second_client) and not bridge_available():
        pytest.fail("qrsdp-kafka-bridge is not built (infra/stack.sh bridge-build)")
    bootstrap = kafka_stack.bootstrap_servers
    topic = _topic(bootstrap, 1)
    paths = _publish(bootstrap, topic, tmp_path / "run", ["AAPL"], 2400)
    kill_at = len(read_records(paths["AAPL"])) * 2 // 5  # kill part-way: once 40% of the day arrived
    group = f"itch-{uuid.uuid4().hex[:8]}"
    port, rport = _free_udp_port(), _free_udp_port()
    lis, thread, result = _listen(port, rport, gap_timeout=60)
    # real-time at 400x: the 2,400 s session takes ~6 s, in steps of 5,000 events
    first = procs.streamer(bootstrap, topic, group, ["AAPL"], port, rport, "--realtime", "--speed", "400",
                           "--batch", "5000", name="first", client=first_client)
    deadline = time.monotonic() + 60
    while lis.expected < kill_at and time.monotonic() < deadline and first.poll() is None:
        time.sleep(0.01)
    assert first.poll() is None, procs.log("first")
    os.kill(first.pid, signal.SIGKILL)
    assert first.wait(10) == -signal.SIGKILL
    killed_at = lis.expected
    time.sleep(0.5)
    second = procs.streamer(bootstrap, topic, group, ["AAPL"], port, rport, "--batch", "5000", name="second",
                            client=second_client)
    _wait(thread, second)
    assert result.get("complete"), (result, procs.log("second"))
    assert procs.stop(second) == 0, procs.log("second")
    assert result["complete"] and result["unrecovered"] == 0, (result, procs.log("second"))
    summary = json.loads((tmp_path / "second.json").read_text())
    assert summary["kafka_client"] == second_client
    assert summary["counters"]["resent_after_restart"] > 0, summary  # the in-flight batch went out again
    assert kill_at <= killed_at < result["messages"]
    # every message exactly once and in order: the delivered stream is the day's stream, byte for byte
    assert b"".join(lis.raw_kept) == _export_bytes(paths, tmp_path, ["AAPL"])


def _produce(bootstrap: str, topic: str, messages: list[tuple[bytes, bytes | None, list]]) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "acks": "all"})
    for key, value, headers in messages:
        producer.produce(topic, value, key, headers=headers, partition=0)
    assert producer.flush(30) == 0


def _consume_all(bootstrap: str, topic: str, expect: int, timeout: float = 30) -> list:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"check-{uuid.uuid4().hex[:8]}",
                         "auto.offset.reset": "earliest", "enable.auto.commit": False})
    consumer.subscribe([topic])
    got: list = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline and len(got) < expect:
            got += [m for m in consumer.consume(1000, 0.5) if m.error() is None]
        got += [m for m in consumer.consume(1000, 1.0) if m.error() is None]  # nothing more than expected
    finally:
        consumer.close()
    return got


def test_poison_messages_go_to_the_dead_letter_topic_and_the_feed_goes_on(kafka_stack, procs, tmp_path) -> None:
    bootstrap = kafka_stack.bootstrap_servers
    topic, dlq = _topic(bootstrap, 1), _topic(bootstrap, 1)
    recs = sweep_session(20_000, 41)

    def event(rec, seq: int, date: bytes = b"2026-01-02", seq_bytes: bytes | None = None) -> tuple:
        return (b"AAPL", rec.tobytes(), [(H_TS_NS, int(rec["ts_ns"]).to_bytes(8, "big")), (H_DATE, date),
                                         (H_SEQ, seq_bytes if seq_bytes is not None else seq.to_bytes(8, "big")),
                                         (H_RUN_ID, b"poison-test")])

    poison_records = []
    for field, value in (("type", 9), ("ts_ns", 1 << 48), ("price_ticks", 50_000_000)):
        r = recs[4_999].copy()  # in time with its neighbours: refused for its own fault only
        r["type"], r["side"], r["order_id"] = 0, 0, 900_000 + len(poison_records)
        r[field] = value
        poison_records.append(r)
    ghost = recs[4_999].copy()  # a cancel of an order that never rested
    ghost["type"], ghost["side"], ghost["order_id"] = 2, 0, 777_777
    stream = [*recs[:5_000], *poison_records, ghost, *recs[5_000:]]
    messages = [event(r, i) for i, r in enumerate(stream)]
    odd = [
        event(recs[0], 0, date=b"2026-13-45"),
        event(recs[0], 0, seq_bytes=b"\1\2\3"),
        (b"AAPL", recs[0].tobytes(), [(H_DATE, None), (H_SEQ, None)]),
        (b"AAPL", b"\0" * 7, [(H_DATE, b"2026-01-02")]),
        (b"AAPL", b"", [(H_DATE, b"yesterday"), (H_SEQ, (1).to_bytes(8, "big"))]),
    ]
    for k, m in enumerate(odd):
        messages.insert(1_000 + 3_000 * k, m)
    messages.append((b"AAPL", b"", [(H_DATE, b"2026-01-02"), (H_SEQ, len(stream).to_bytes(8, "big")),
                                    (H_RUN_ID, b"poison-test"), (H_EOS, Eos(len(stream), 0).encode())]))
    _produce(bootstrap, topic, messages)
    n_poison = len(poison_records) + 1 + len(odd)
    group = f"itch-{uuid.uuid4().hex[:8]}"
    port, rport = _free_udp_port(), _free_udp_port()
    lis, thread, result = _listen(port, rport)
    st = procs.streamer(bootstrap, topic, group, ["AAPL"], port, rport, "--dead-letter-topic", dlq,
                        "--exit-after-sessions", "1", "--linger", "1")
    _wait(thread, st)
    assert st.wait(60) == 0, procs.log()
    assert result.get("complete") and result["unrecovered"] == 0 and result["book_errors"] == 0, result
    summary = json.loads((tmp_path / "streamer.json").read_text())
    c = summary["counters"]
    assert c["dead_lettered"] == n_poison and c["events"] == len(recs), c
    assert c["rejected"] == {"bad_type": 1, "bad_timestamp": 1, "price_out_of_range": 1, "unknown_order": 1,
                             "bad_date": 1, "bad_headers": 2, "bad_value": 1, "bad_marker": 1}, c
    dead = _consume_all(bootstrap, dlq, n_poison)
    assert len(dead) == n_poison
    reasons = [dict(m.headers())["dlq_reason"].decode() for m in dead]
    assert all(dict(m.headers())["dlq_service"] == b"itch-stream" for m in dead)
    assert any("does not fit the 4-byte ITCH price" in r for r in reasons) and any("2026-13-45" in r for r in reasons)
    recs_out, _loc, _seq = lis.records()
    np.testing.assert_array_equal(recs_out, recs)  # everything else, exactly, D/X/E and all
    # a restart resumes past the poison: nothing is dead-lettered twice
    again = procs.streamer(bootstrap, topic, group, ["AAPL"], port, rport, "--dead-letter-topic", dlq,
                           "--max-runtime", "4", name="again")
    assert again.wait(60) == 0, procs.log("again")
    assert json.loads((tmp_path / "again.json").read_text())["counters"]["dead_lettered"] == 0
    assert len(_consume_all(bootstrap, dlq, n_poison, timeout=5)) == n_poison
