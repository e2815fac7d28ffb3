"""Fault tests of the data platform on the real services (issue 5, "Fault tests"): nothing is lost.

1. Kafka down for the whole run: files byte-identical to a run without Kafka, failures counted in the
   manifest and reported, exit 0 with a warning; ``republish`` + the consumer then fill the lake exactly once.
2. The broker is SIGKILLed and restarted mid-run: every event reaches the topic exactly once (idempotence).
3. The Parquet consumer (a ``qrsdp parquet-consumer`` process) is SIGKILLed mid-stream and restarted:
   nothing committed was unwritten, and the lake -- as DuckDB / dbt staging reads it -- has every event
   exactly once, with every marker.
4. MinIO is stopped for a while: the consumer retries with backoff, commits nothing while it cannot
   write, and catches up once MinIO is back.
5. Malformed messages go to the dead-letter topic with their reason, are counted, and never stop the
   consumer: every good event lands.

The consumer uses the Kafka bridge (the default); 4 and 5 also run with confluent-kafka
(``QRSDP_KAFKA_CLIENT=python``).

Every stopped service is started again in a ``finally``; every process started here is ended here. Every
fault is driven by observed progress (messages published, the consumer's commits, retries counted, events
simulated), never by a sleep or a guess of how long something takes.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from confluent_kafka import Producer
from kafka_lake_testutil import (
    SECURITIES,
    START,
    ConsumerThread,
    assert_lake_exactly_once,
    committed_offsets,
    consume_all,
    create_topics,
    duckdb_counts,
    file_records,
    high_watermarks,
    lake_markers,
    manifest_closes,
    read_lake_events,
    s3_lake,
    session_files,
    simulate,
    wait_until,
)
from qrsdp_log_testutil import make_records

from qrsdp_sim import stack
from qrsdp_sim.engine.runner import RunSpec, session_description
from qrsdp_sim.kafka.consumer import ParquetConsumer
from qrsdp_sim.kafka.message import EndOfSession
from qrsdp_sim.kafka.publisher import KafkaPublisher
from qrsdp_sim.kafka.republish import identify, republish
from qrsdp_sim.kafka.sink import KafkaSink, producer_config
from qrsdp_sim.records import RECORD_DTYPE

pytestmark = [pytest.mark.services, pytest.mark.timeout(240)]

ROOT = Path(__file__).resolve().parents[1]
QRSDP = str(Path(sys.executable).with_name("qrsdp"))  # the console script itself: a signal reaches the consumer
N_SESSIONS = len(SECURITIES) * 2


def _dead_broker() -> str:
    """HOST:PORT where nothing listens."""
    return f"127.0.0.1:{stack.free_port()}"


def _uv_qrsdp(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["uv", "run", "--no-sync", "qrsdp", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "COLUMNS": "200"})


def _same_files(a: Path, b: Path) -> None:
    fa, fb = session_files(a), session_files(b)
    assert set(fa) == set(fb) and len(fa) == N_SESSIONS
    for key in fa:
        assert fa[key].read_bytes() == fb[key].read_bytes(), f"{key}: .qrsdp differs from the run without Kafka"


def _without_publish(manifest: dict) -> dict:
    return {k: v for k, v in manifest.items() if k not in ("run_id", "publish")}


# -- 1 ---------------------------------------------------------------------------------------
def test_kafka_down_for_the_whole_run_then_republish(kafka_stack, minio_stack, tmp_path) -> None:
    dead = _dead_broker()
    reference = simulate(tmp_path / "reference")  # no Kafka at all
    expected = file_records(tmp_path / "reference")
    total = sum(len(r) for r in expected.values())

    # In process: the run completes, files identical, every event (and marker) counted as failed per session.
    # Nothing is ever handed to a client (produced 0, below), so nothing waits for the delivery timeout.
    down = simulate(tmp_path / "down", publisher=KafkaPublisher(dead, "exchange.events"))
    _same_files(tmp_path / "reference", tmp_path / "down")
    assert _without_publish(down.manifest) == _without_publish(reference.manifest)
    publish = down.manifest["publish"]
    assert publish["broker_down_at_start"]
    assert (publish["produced"], publish["delivered"], publish["failed"]) == (0, 0, total + N_SESSIONS)
    for (symbol, day), records in expected.items():
        per_session = publish["sessions"][f"{symbol}/{day}"]
        assert per_session["failed"] == len(records) + 1 and per_session["first_error"], per_session

    # The CLI: exit 0, a warning naming the failures and the way to close the gap, manifest counts.
    cli_out = tmp_path / "cli"
    proc = _uv_qrsdp(
        "run", "--securities", ",".join(f"{s}:{p}" for s, p in SECURITIES), "--days", "2", "--seconds", "600",
        "--start-date", "2026-01-05", "--output", str(cli_out), "--kafka-brokers", dead,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    stderr = " ".join(proc.stderr.split())
    assert "warning" in stderr.lower() and f"{total + N_SESSIONS:,} failed" in stderr, stderr[-2000:]
    assert "qrsdp republish" in stderr, stderr[-2000:]
    _same_files(tmp_path / "reference", cli_out)
    cli_manifest = json.loads((cli_out / "manifest.json").read_text())
    assert cli_manifest["publish"]["failed"] == total + N_SESSIONS and cli_manifest["publish"]["delivered"] == 0

    # Kafka is back: republish the CLI run's files (the CLI command), then the consumer fills the lake.
    bootstrap = kafka_stack.bootstrap_servers
    topic, dlq = create_topics(bootstrap, "republish", partitions=4)
    files = [str(p) for p in session_files(cli_out).values()]
    proc = _uv_qrsdp("republish", *files, "--kafka-brokers", bootstrap, "--kafka-topic", topic)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"{total + N_SESSIONS:,} delivered, 0 failed" in " ".join(proc.stderr.split()), proc.stderr[-2000:]
    # An operator republishing one session again (e.g. unsure whether it arrived) must be harmless.
    again = identify(session_files(cli_out)[("AAA", "2026-01-05")])
    summary = republish([again], bootstrap, topic)
    assert summary["failed"] == 0
    assert sum(high_watermarks(bootstrap, topic).values()) == total + N_SESSIONS + len(expected[("AAA", "2026-01-05")]) + 1

    lake = s3_lake(minio_stack, "republish")
    worker = ConsumerThread(ParquetConsumer(bootstrap, lake, topic=topic, group_id=f"pw-{topic}",
                                            dead_letter_topic=dlq))
    try:
        worker.wait_complete(set(expected), timeout=90)
        wait_until(lambda: worker.stats.messages == total + N_SESSIONS + len(expected[("AAA", "2026-01-05")]) + 1,
                   30, "every message consumed")
    finally:
        worker.stop()
    check = assert_lake_exactly_once(lake, expected)
    assert check.distinct == total and check.rows == total + len(expected[("AAA", "2026-01-05")])
    assert worker.stats.dead_lettered == 0
    markers = lake_markers(lake)
    closes = manifest_closes(cli_manifest)
    assert {k: (m.rows, m.extra["close_ticks"]) for k, m in markers.items()} == {
        k: (len(r), closes[k]) for k, r in expected.items()
    }


# -- 2 ---------------------------------------------------------------------------------------
def test_broker_killed_and_restarted_mid_run_every_event_exactly_once(kafka_stack, tmp_path) -> None:
    bootstrap = kafka_stack.bootstrap_servers
    topic, _ = create_topics(bootstrap, "restart", partitions=3)
    publisher = KafkaPublisher(bootstrap, topic)
    outcome: dict = {}
    simulated: dict[tuple[str, object], int] = {}  # (symbol, date) -> events simulated so far

    def progress(symbol, day, _t, n) -> None:
        simulated[(symbol, day)] = n

    def run() -> None:
        try:
            # One day of 3,000 s sessions paced at 200x: ~15 s of wall clock, ~200k events per symbol.
            outcome["result"] = simulate(tmp_path / "run", days=1, seconds=3000, publisher=publisher,
                                         realtime_speed=200.0, progress=progress)
        except BaseException as exc:
            outcome["error"] = exc

    runner = threading.Thread(target=run, name="run")
    runner.start()
    alive_when_stopped = False
    try:
        wait_until(lambda: sum(high_watermarks(bootstrap, topic).values()) > 10_000, 30, "the run to publish")
        alive_when_stopped = runner.is_alive()
        kafka_stack.stop(kill=True)
        # The run keeps simulating (it never waits on the broker): 20,000 more events while the broker is down.
        down_at = sum(simulated.values())
        wait_until(lambda: sum(simulated.values()) >= down_at + 20_000 or "error" in outcome, 60,
                   "the run to go on while the broker is down")
    finally:
        kafka_stack.start()  # also after a failure: the broker is up for whatever follows
        runner.join(180)
    assert alive_when_stopped, "the run ended before the broker was stopped"
    assert not runner.is_alive(), "the run did not finish"
    assert "error" not in outcome, outcome.get("error")
    result = outcome["result"]

    expected = file_records(tmp_path / "run")
    total = sum(len(r) for r in expected.values())
    n_sessions = len(expected)
    assert n_sessions == len(SECURITIES)
    publish = result.manifest["publish"]
    assert (publish["produced"], publish["delivered"], publish["failed"]) == (total + n_sessions,) * 2 + (0,), publish

    # Count the topic against the files: a fresh topic, so the high watermarks are the messages written.
    assert sum(high_watermarks(bootstrap, topic).values()) == total + n_sessions
    msgs = consume_all(bootstrap, topic, total + n_sessions)
    assert len(msgs) == total + n_sessions
    events = [m for m in msgs if m.value()]
    markers = [m for m in msgs if not m.value()]
    assert len(markers) == n_sessions
    seen: dict[tuple[str, str], list] = {}
    for m in events:
        h = dict(m.headers())
        seen.setdefault((m.key().decode(), h["date"].decode()), []).append((int.from_bytes(h["seq"], "big"), m.value()))
    assert set(seen) == set(expected)
    for key, records in expected.items():
        got = sorted(seen[key])
        assert [s for s, _ in got] == list(range(len(records))), f"{key}: missing or duplicated seqs on the topic"
        values = np.frombuffer(b"".join(v for _, v in got), dtype=RECORD_DTYPE)
        np.testing.assert_array_equal(values, records)
    closes = manifest_closes(result.manifest)
    for m in markers:
        h = dict(m.headers())
        key = (m.key().decode(), h["date"].decode())
        eos = EndOfSession.decode(h["eos"])
        assert (eos.events, eos.close_ticks) == (len(expected[key]), closes[key])


# -- 3 ---------------------------------------------------------------------------------------
def _start_consumer(bootstrap: str, topic: str, group: str, lake, log: Path, *extra: str) -> subprocess.Popen:
    assert lake.s3 is not None
    env = {
        **os.environ,
        "QRSDP_S3_ENDPOINT": lake.s3.endpoint,
        "QRSDP_S3_ACCESS_KEY": lake.s3.access_key,
        "QRSDP_S3_SECRET_KEY": lake.s3.secret_key,
        "QRSDP_LAKE_URI": lake.uri,
    }
    with log.open("ab") as out:
        return subprocess.Popen(
            [QRSDP, "parquet-consumer", "--kafka-brokers", bootstrap, "--kafka-topic", topic,
             "--consumer-group", group, "--batch-records", "2000", *extra],
            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=out, text=True,
        )  # fmt: skip


def _end(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.kill()
        proc.wait(10)


def _topic_index(bootstrap: str, topic: str, expected_messages: int) -> dict[int, list[tuple[int, str, str, int]]]:
    """Partition -> [(offset, symbol, date, seq)] of the topic's event messages."""
    index: dict[int, list[tuple[int, str, str, int]]] = {}
    for m in consume_all(bootstrap, topic, expected_messages):
        if m.value():
            h = dict(m.headers())
            index.setdefault(m.partition(), []).append(
                (m.offset(), m.key().decode(), h["date"].decode(), int.from_bytes(h["seq"], "big")))
    return index


def _assert_committed_were_written(lake, index, committed: dict[int, int]) -> int:
    """Every event below a committed offset is in the lake (commit only after write). Returns how many."""
    table = read_lake_events(lake)
    landed = set()
    if table.num_rows:
        days = [d.isoformat() for d in table.column("date").to_pylist()]
        landed = set(zip(table.column("symbol").to_pylist(), days, table.column("seq").to_pylist(), strict=True))
    covered = 0
    for partition, rows in index.items():
        below = [(s, d, q) for off, s, d, q in rows if off < committed.get(partition, 0)]
        missing = [r for r in below if r not in landed]
        assert not missing, f"partition {partition}: {len(missing)} committed events are not in the lake: {missing[:3]}"
        covered += len(below)
    return covered


def test_consumer_sigkilled_mid_stream_and_restarted(kafka_stack, minio_stack, tmp_path) -> None:
    """The kill is driven by the consumer's own progress, so it is always mid-stream: the first half of every
    session is on the topic (no markers yet); the consumer (``--batch-records 2000 --batch-seconds 3600``)
    lands and commits every whole 2,000-record chunk of it and holds the tails; once its commits reach
    exactly those chunk boundaries it is SIGKILLed -- with work committed, records read but not landed,
    and the rest of the stream not even produced yet. The rest is produced, a new consumer process carries
    on from the commits, and the lake ends with every event exactly once."""
    bootstrap = kafka_stack.bootstrap_servers
    topic, _ = create_topics(bootstrap, "sigkill", partitions=3)
    spec = RunSpec(days=2, session_seconds=1200, start_date=START)
    result = simulate(tmp_path / "run", days=2, seconds=1200)  # files only: published below, in two halves
    expected = file_records(tmp_path / "run")
    total = sum(len(r) for r in expected.values())
    by_key = {(r.symbol, r.date.isoformat()): r for r in result.sessions}
    producer = Producer(producer_config(bootstrap))
    sinks = {key: KafkaSink(bootstrap, symbol=key[0], date=key[1], run_id="sigkill", topic=topic, producer=producer)
             for key in expected}
    for key, records in expected.items():
        sinks[key].append(records[: len(records) // 2])
    assert producer.flush(30) == 0
    half = high_watermarks(bootstrap, topic)
    target = {p: hw // 2000 * 2000 for p, hw in half.items()}
    assert 0 < sum(target.values()) < sum(half.values())  # some chunks to commit, some tails to hold
    index = _topic_index(bootstrap, topic, sum(half.values()))
    lake = s3_lake(minio_stack, "sigkill")
    group = f"pw-{topic}"
    log = tmp_path / "consumer.log"

    first = _start_consumer(bootstrap, topic, group, lake, log, "--batch-seconds", "3600")
    try:
        wait_until(lambda: committed_offsets(bootstrap, group, topic) == target or first.poll() is not None, 90,
                   f"the first consumer's commits to reach the chunk boundaries {target}")
        assert first.poll() is None, log.read_text()[-3000:]
        first.send_signal(signal.SIGKILL)
        first.wait(10)
    finally:
        _end(first)
    assert first.returncode == -signal.SIGKILL
    at_kill = committed_offsets(bootstrap, group, topic)
    assert at_kill == target and not lake_markers(lake)
    assert _assert_committed_were_written(lake, index, at_kill) == sum(target.values())

    # The rest of every session and its end-of-session marker.
    for key, records in expected.items():
        sinks[key].append(records[len(records) // 2 :])
        r = by_key[key]
        sinks[key].end_of_session(len(records), r.result.close_ticks,
                                  session_description(spec, key[0], r.date, r.result))
    assert producer.flush(30) == 0
    assert sum(high_watermarks(bootstrap, topic).values()) == total + N_SESSIONS

    # Restarted (a running service: no idle exit). The killed member holds its partitions until its group
    # session times out, so allow for that.
    second = _start_consumer(bootstrap, topic, group, lake, log)
    try:
        wait_until(lambda: len(lake_markers(lake)) == N_SESSIONS or second.poll() is not None, 150,
                   "every _SUCCESS marker after the restart", interval=0.5)
        assert second.poll() is None, log.read_text()[-3000:]
        second.send_signal(signal.SIGTERM)  # flushes the partial batch, commits, prints its stats
        out, _ = second.communicate(timeout=60)
    finally:
        _end(second)
    assert second.returncode == 0, log.read_text()[-3000:]
    stats = json.loads(out.strip().splitlines()[-1])
    assert stats["dead_lettered"] == 0 and stats["markers_written"] == N_SESSIONS
    hw = high_watermarks(bootstrap, topic)
    assert committed_offsets(bootstrap, group, topic) == hw, "the restarted consumer committed everything"

    check = assert_lake_exactly_once(lake, expected)
    assert check.distinct == check.rows == total  # it carried on exactly from the commits: nothing twice
    markers = lake_markers(lake)
    assert {k: m.rows for k, m in markers.items()} == {k: len(r) for k, r in expected.items()}
    assert {(m.symbol, m.date.isoformat()) for m in lake.complete_partitions("sessions")} == set(expected)

    # What the dbt staging model (stg_events) reads: DuckDB over the same objects through httpfs.
    assert duckdb_counts(lake) == (total, total, total)


# -- 4 ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("client", ["bridge", "python"])
def test_minio_down_consumer_retries_commits_nothing_and_catches_up(kafka_stack, minio_stack, tmp_path,
                                                                     monkeypatch, client) -> None:
    monkeypatch.setenv("QRSDP_KAFKA_CLIENT", client)
    bootstrap = kafka_stack.bootstrap_servers
    topic, dlq = create_topics(bootstrap, "minio", partitions=3)
    simulate(tmp_path / "run")  # files only; sessions are published day by day below
    expected = file_records(tmp_path / "run")
    day1 = {k for k in expected if k[1] == "2026-01-05"}
    files = {k: identify(p) for k, p in session_files(tmp_path / "run").items()}
    assert republish([files[k] for k in sorted(day1)], bootstrap, topic)["failed"] == 0

    lake = s3_lake(minio_stack, "minio")
    group = f"pw-{topic}"
    consumer = ParquetConsumer(bootstrap, lake, topic=topic, group_id=group, dead_letter_topic=dlq,
                               batch_records=5000, batch_seconds=1.0, max_backoff=2.0)
    assert consumer.stats.client == client
    worker = ConsumerThread(consumer)
    try:
        worker.wait_complete(day1, timeout=60)
        hw = high_watermarks(bootstrap, topic)
        wait_until(lambda: committed_offsets(bootstrap, group, topic) == hw, 30, "day 1 committed")
        before = committed_offsets(bootstrap, group, topic)
        assert consumer.stats.write_retries == 0

        try:
            minio_stack.stop()
            assert republish([files[k] for k in sorted(set(expected) - day1)], bootstrap, topic)["failed"] == 0
            wait_until(lambda: consumer.stats.write_retries >= 3, 60, "the consumer to retry its writes")
            assert committed_offsets(bootstrap, group, topic) == before, "committed while the lake was down"
            retries = consumer.stats.write_retries
            wait_until(lambda: consumer.stats.write_retries >= retries + 2, 60, "two more retries")
            assert worker.is_alive()
            assert committed_offsets(bootstrap, group, topic) == before, "committed while the lake was down"
            retries_while_down = consumer.stats.write_retries
        finally:
            minio_stack.start()
        worker.wait_complete(set(expected), timeout=90)
        hw = high_watermarks(bootstrap, topic)
        wait_until(lambda: committed_offsets(bootstrap, group, topic) == hw, 30, "everything committed")
    finally:
        worker.stop()
    # Backoff: 0.25, 0.5, 1, 2, 2, ... s between attempts -- a handful of retries in the seconds down, not hundreds.
    assert 3 <= retries_while_down <= 60, retries_while_down
    check = assert_lake_exactly_once(lake, expected)
    assert check.distinct == sum(len(r) for r in expected.values())
    assert {k: m.rows for k, m in lake_markers(lake).items()} == {k: len(r) for k, r in expected.items()}
    assert consumer.stats.dead_lettered == 0


# -- 5 ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("client", ["bridge", "python"])
def test_malformed_messages_go_to_the_dead_letter_topic(kafka_stack, minio_stack, monkeypatch, client) -> None:
    monkeypatch.setenv("QRSDP_KAFKA_CLIENT", client)
    bootstrap = kafka_stack.bootstrap_servers
    topic, dlq = create_topics(bootstrap, "dlq", partitions=3)
    lake = s3_lake(minio_stack, "dlq")
    consumer = ParquetConsumer(bootstrap, lake, topic=topic, group_id=f"pw-{topic}", dead_letter_topic=dlq,
                               batch_records=2000, batch_seconds=1.0)
    assert consumer.stats.client == client
    worker = ConsumerThread(consumer)  # running before anything is produced: it must survive all of it

    day = "2026-01-05"
    records = {"AAA": make_records(6_000, seed=11), "BBB": make_records(4_000, seed=12)}
    expected = {(s, day): r for s, r in records.items()}
    # A delivery report for every message (the platform's producer reports only errors): where each bad one went.
    producer = Producer(producer_config(bootstrap, **{"delivery.report.only.error": False}))
    sinks = {s: KafkaSink(bootstrap, symbol=s, date=day, run_id="good", topic=topic, producer=producer)
             for s in records}

    def good_headers(seq: int, date: bytes = day.encode()) -> list[tuple[str, bytes]]:
        return [("ts_ns", (1).to_bytes(8, "big")), ("date", date), ("seq", seq.to_bytes(8, "big")),
                ("run_id", b"bad")]

    def exact_headers(seq: int, date: bytes = day.encode()) -> list[tuple[str, bytes]]:
        # As the producers write them (ts_ns = the record's own): the bridge delivers such messages as a run.
        return [("ts_ns", int(records["AAA"]["ts_ns"][0]).to_bytes(8, "big")), ("date", date),
                ("seq", seq.to_bytes(8, "big")), ("run_id", b"bad")]

    value = records["AAA"][:1].tobytes()
    eos = EndOfSession(1, 10_000).encode()
    bad = [  # (key, value, headers, expected reason)
        (b"AAA", value[:25], good_headers(0), "value is 25 bytes"),
        (b"AAA", value + b"x", good_headers(1), "value is 27 bytes"),
        (b"AAA", b"", good_headers(2), "value is 0 bytes"),
        (b"AAA", value, None, "missing or unknown date header"),
        (b"BBB", value, [("ts_ns", (1).to_bytes(8, "big")), ("date", day.encode()), ("run_id", b"x")],
         "missing or malformed seq header"),
        (b"BBB", value, [("date", day.encode()), ("seq", b"\x00\x01")], "missing or malformed seq header"),
        (b"AAA", value, good_headers(3, b"2026-13-45"), "missing or unknown date header"),
        (b"BBB", value, good_headers(4, b"1899-01-02"), "missing or unknown date header"),
        (b"AAA", value, [("seq", (5).to_bytes(8, "big")), ("date", b"yesterday")], "missing or unknown date header"),
        (b"bad key!", value, good_headers(6), "is not a symbol"),
        (None, value, good_headers(7), "is not a symbol"),
        (b"aaa", value, [("date", day.encode()), ("seq", (8).to_bytes(8, "big"))], "is not a symbol"),
        (b"TOOLONGSYM", value, good_headers(9), "is not a symbol"),
        (b"AAA", b"", [("date", day.encode()), ("seq", (1).to_bytes(8, "big")), ("eos", eos[:7])],
         "eos header must be 16 bytes"),
        (b"lower", value, exact_headers(10), "is not a symbol"),
        (b"AAA", value, exact_headers(11, b"2026-02-30"), "missing or unknown date header"),
    ]  # fmt: skip
    where: dict[tuple[int, int], int] = {}  # (partition, offset) -> case

    def delivered(i: int):
        def cb(err, msg) -> None:
            assert err is None, err
            where[(msg.partition(), msg.offset())] = i

        return cb

    try:
        # Good events, then every malformed kind in between (same partitions as the good ones), then the rest.
        for s, r in records.items():
            sinks[s].append(r[: len(r) // 2])
        for i, (key, val, headers, _) in enumerate(bad):
            producer.produce(topic, val, key, headers=headers, on_delivery=delivered(i))
        producer.flush(30)
        # the consumer has taken the malformed messages before the rest arrives
        first_half = sum(len(r) // 2 for r in records.values())
        wait_until(lambda: consumer.stats.messages >= first_half + len(bad) or not worker.is_alive(), 60,
                   "the consumer to take the malformed messages")
        assert worker.is_alive()
        for s, r in records.items():
            sinks[s].append(r[len(r) // 2 :])
            sinks[s].close(close_ticks=10_000)  # end-of-session marker
        assert producer.flush(30) == 0
        assert len(where) == len(bad)

        worker.wait_complete(set(expected), timeout=60)
        wait_until(lambda: consumer.stats.dead_lettered >= len(bad), 30, "every malformed message dead-lettered")
        assert worker.is_alive(), "malformed messages must never stop the consumer"
    finally:
        worker.stop()
    stats = consumer.stats
    assert stats.dead_lettered == len(bad)
    assert stats.records_landed == sum(len(r) for r in records.values())
    check = assert_lake_exactly_once(lake, expected)
    assert check.rows == check.distinct == sum(len(r) for r in records.values())
    assert {k: m.rows for k, m in lake_markers(lake).items()} == {k: len(r) for k, r in expected.items()}

    dead = consume_all(bootstrap, dlq, len(bad), timeout=30)
    assert len(dead) == len(bad)
    for m in dead:
        h = dict(m.headers())
        src_topic, partition, offset = h["dlq_source"].decode().rsplit("/", 2)
        assert src_topic == topic
        key, val, headers, reason = bad[where[(int(partition), int(offset))]]
        assert reason in h["dlq_reason"].decode(), (reason, h["dlq_reason"])
        assert m.key() == key and (m.value() or b"") == val  # the original message, unchanged
        assert [(k, v) for k, v in m.headers() if not k.startswith("dlq_")] == list(headers or [])
