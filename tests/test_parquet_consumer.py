"""The Parquet consumer on the real services: a dual-written run lands in MinIO exactly once.

A 2-symbol x 2-day run of 600 s sessions is dual-written (files + Kafka) to a fresh topic while the
consumer (a thread, idle exit) lands it in a fresh prefix of the test MinIO. The lake must hold every
(symbol, date, seq) exactly once, equal to the ``.qrsdp`` files, under the documented object names,
with one ``_SUCCESS`` marker per session carrying the right row count and close.
"""

from __future__ import annotations

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


def test_dual_written_run_lands_every_event_exactly_once(kafka_stack, minio_stack, tmp_path) -> None:
    bootstrap = kafka_stack.bootstrap_servers
    topic, dlq = create_topics(bootstrap, "happy", partitions=6)
    lake = s3_lake(minio_stack, "happy")
    consumer = ParquetConsumer(bootstrap, lake, topic=topic, group_id=f"pw-{topic}", dead_letter_topic=dlq)
    # Started before the run: it lands while the run produces, and exits once nothing arrives for 8 s.
    worker = ConsumerThread(consumer, idle_exit_seconds=8)

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

    worker.join(timeout=120)
    stats = consumer.stats
    assert stats.messages == total + n_sessions
    assert stats.records_landed == total
    assert (stats.markers_written, stats.incomplete_sessions, stats.dead_lettered, stats.write_retries) == (
        n_sessions, 0, 0, 0)
    assert sorted(stats.completed) == sorted(expected)

    check = assert_lake_exactly_once(lake, expected)
    assert (check.rows, check.distinct, check.duplicates) == (total, total, 0)

    # Objects: raw/events/symbol=S/date=D/events-{partition}-{first_offset}.parquet, one partition per symbol.
    parts = object_partitions(lake)
    assert set(parts) == set(expected)
    for symbol, _ in SECURITIES:
        assert len({p for (s, _), ps in parts.items() if s == symbol for p in ps}) == 1, parts

    markers = lake_markers(lake)
    closes = manifest_closes(result.manifest)
    assert set(markers) == set(expected)
    objects = {i.path for i in lake_objects(lake)}
    for key, marker in markers.items():
        assert marker.rows == len(expected[key]), key
        assert marker.extra["source"] == "kafka" and marker.extra["close_ticks"] == closes[key]
        pdir = lake.partition_dir("events", *key)
        assert {f"{pdir}/{name}" for name in marker.files} == {p for p in objects if p.startswith(pdir + "/")
                                                               and p.endswith(".parquet")}
