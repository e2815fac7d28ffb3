"""The Parquet consumer on the real services: a dual-written run lands in MinIO exactly once.

A 2-symbol x 2-day run of 600 s sessions is dual-written (files + Kafka) to a fresh topic while the
consumer (a thread, idle exit) lands it in a fresh prefix of the test MinIO. The lake must hold every
(symbol, date, seq) exactly once, equal to the ``.qrsdp`` files, under the documented object names
(at most 10,000 records per object), with one ``_SUCCESS`` marker per session carrying the right row
count and close. Run with each Kafka client (``QRSDP_KAFKA_CLIENT``): the bridge and confluent-kafka.
"""

from __future__ import annotations

import pyarrow.parquet as pq
import pytest
from kafka_lake_testutil import (
    SECURITIES,
    ConsumerThread,
    assert_lake_exactly_once,
    create_topics,
    file_records,
    high_watermarks,
    lake_markers,
    lake_objects,
    manifest_closes,
    object_partitions,
    s3_lake,
    simulate,
)

from qrsdp_sim.kafka.consumer import ParquetConsumer
from qrsdp_sim.kafka.publisher import KafkaPublisher

pytestmark = [pytest.mark.services, pytest.mark.timeout(180)]


@pytest.mark.parametrize("client", ["bridge", "python"])
def test_dual_written_run_lands_every_event_exactly_once(
    kafka_stack, minio_stack, tmp_path, monkeypatch, client
) -> None:
    monkeypatch.setenv("QRSDP_KAFKA_CLIENT", client)
    bootstrap = kafka_stack.bootstrap_servers
    topic, dlq = create_topics(bootstrap, "happy", partitions=6)
    lake = s3_lake(minio_stack, "happy")
    consumer = ParquetConsumer(bootstrap, lake, topic=topic, group_id=f"pw-{topic}", dead_letter_topic=dlq)
    assert consumer.stats.client == client
    # Started before the run: it lands while the run produces; stopped once every session is marked (not
    # after some idle time: compiling the engine on a fresh checkout takes longer than any guess).
    worker = ConsumerThread(consumer)

    try:
        result = simulate(tmp_path / "run", publisher=KafkaPublisher(bootstrap, topic))
    except BaseException:
        worker.stop()
        raise
    expected = file_records(tmp_path / "run")
    n_sessions = len(SECURITIES) * 2
    assert len(expected) == n_sessions
    total = sum(len(r) for r in expected.values())

    publish = result.manifest["publish"]
    assert publish["broker_down_at_start"] is None
    assert (publish["produced"], publish["delivered"], publish["failed"]) == (total + n_sessions,) * 2 + (0,)
    assert sum(high_watermarks(bootstrap, topic).values()) == total + n_sessions  # + one marker per session

    try:
        worker.wait_complete(set(expected), timeout=120)
    finally:
        worker.stop()
    stats = consumer.stats
    assert stats.messages == total + n_sessions
    assert stats.records_landed == total
    assert (stats.markers_written, stats.incomplete_sessions, stats.dead_lettered, stats.write_retries) == (
        n_sessions,
        0,
        0,
        0,
    )
    assert sorted(stats.completed) == sorted(expected)

    check = assert_lake_exactly_once(lake, expected)
    assert (check.rows, check.distinct, check.duplicates) == (total, total, 0)

    # Objects: raw/events/symbol=S/date=D/events-{partition}-{first_offset}-{owner}.parquet, one partition per symbol.
    parts = object_partitions(lake)
    assert set(parts) == set(expected)
    for symbol, _ in SECURITIES:
        assert len({p for (s, _), ps in parts.items() if s == symbol for p in ps}) == 1, parts

    markers = lake_markers(lake)
    closes = manifest_closes(result.manifest)
    assert set(markers) == set(expected)
    objects = {i.path for i in lake_objects(lake)}
    sizes = [pq.read_metadata(p, filesystem=lake.fs).num_rows for p in objects if p.endswith(".parquet")]
    assert len(sizes) == stats.objects_written and max(sizes) <= consumer.batch_records and sum(sizes) == total
    for key, marker in markers.items():
        assert marker.rows == len(expected[key]), key
        assert marker.extra["source"] == "kafka" and marker.extra["close_ticks"] == closes[key]
        pdir = lake.partition_dir("events", *key)
        assert {f"{pdir}/{name}" for name in marker.files} == {
            p for p in objects if p.startswith(pdir + "/") and p.endswith(".parquet")
        }


def test_rebalance_lands_and_commits_the_revoked_partitions_first(kafka_stack, minio_stack) -> None:
    """Bridge path: a second member joins while the first holds unlanded records of every partition (batches
    of 30 s). Inside the revoke callback -- before the rebalance goes on -- the first lands what it holds of
    the partitions it gives up and commits exactly up to where it had read; the new owner carries on from
    there. In the end every event is in the lake once, every session is marked, everything is committed."""
    from confluent_kafka import Producer
    from kafka_lake_testutil import committed_offsets, wait_until
    from qrsdp_log_testutil import make_records

    from qrsdp_sim.kafka.bridge import Run
    from qrsdp_sim.kafka.sink import KafkaSink, producer_config

    bootstrap = kafka_stack.bootstrap_servers
    topic, dlq = create_topics(bootstrap, "rebalance", partitions=6)
    lake = s3_lake(minio_stack, "rebalance")
    group = f"pw-{topic}"
    day = "2026-01-05"
    records = {f"S{i:02d}": make_records(8_000, seed=100 + i) for i in range(12)}  # 12 keys over 6 partitions
    expected = {(s, day): r for s, r in records.items()}
    total = sum(len(r) for r in records.values())

    def consumer() -> ParquetConsumer:
        return ParquetConsumer(
            bootstrap,
            lake,
            topic=topic,
            group_id=group,
            dead_letter_topic=dlq,
            client="bridge",
            batch_seconds=30.0,
        )

    first = consumer()
    read_to: dict[int, int] = {}  # partition -> next offset after what the first member has taken
    accept = first._accept

    def counting_accept(item, now) -> None:
        accept(item, now)
        p, end = (
            (item.partition, item.next_offset)
            if isinstance(item, Run)
            else (item.partition(), item.offset() + 1)
        )
        read_to[p] = max(read_to.get(p, 0), end)

    first._accept = counting_accept
    revokes: list[tuple[list[int], bool, dict[int, int]]] = []
    commits_in_revoke: list[dict[int, int]] = []
    on_revoke = first._source.consumer.on_revoke
    commit = first._source.commit

    def recording_revoke(partitions: list[int], lost: bool) -> None:
        revokes.append((list(partitions), lost, {p: read_to[p] for p in partitions if p in read_to}))
        on_revoke(partitions, lost)

    def recording_commit(offsets: dict[int, int]) -> None:
        commit(offsets)
        if first._in_callback:
            commits_in_revoke.append(dict(offsets))

    first._source.consumer.on_revoke = recording_revoke
    first._source.commit = recording_commit

    producer = Producer(producer_config(bootstrap))
    sinks = {
        s: KafkaSink(bootstrap, symbol=s, date=day, run_id="r", topic=topic, producer=producer)
        for s in records
    }
    workers = [ConsumerThread(first)]
    try:
        for s, r in records.items():
            sinks[s].append(r[:3_000])
        assert producer.flush(30) == 0
        wait_until(
            lambda: first.stats.messages == 3_000 * len(records), 60, "the first member to read phase 1"
        )
        assert first.stats.objects_written == 0  # everything is still held (no batch is due)

        second = consumer()
        workers.append(ConsumerThread(second))
        wait_until(lambda: revokes, 60, "the first member to give up partitions")
        for s, r in records.items():
            sinks[s].append(r[3_000:])
            sinks[s].close(close_ticks=10_000)
        assert producer.flush(30) == 0
        wait_until(
            lambda: {k for w in workers for k in w.stats.completed} >= set(expected),
            90,
            "every session marked complete",
        )
    finally:
        for w in workers:
            w.consumer.stop_event.set()
        for w in workers:
            w.join(60)

    partitions, lost, held = revokes[0]
    assert partitions and not lost and held, revokes
    # What the first member held of the partitions it gave up was committed inside the revoke callback,
    # exactly up to where it had read.
    assert commits_in_revoke and commits_in_revoke[0] == held, (commits_in_revoke, held)
    assert workers[1].stats.records_landed > 0  # the new owner landed the rest of those partitions
    assert sum(w.stats.records_landed for w in workers) == total  # nothing landed twice
    assert committed_offsets(bootstrap, group, topic) == high_watermarks(bootstrap, topic)
    check = assert_lake_exactly_once(lake, expected)
    assert (check.rows, check.distinct) == (total, total)
    assert {k: m.rows for k, m in lake_markers(lake).items()} == {k: len(r) for k, r in expected.items()}
