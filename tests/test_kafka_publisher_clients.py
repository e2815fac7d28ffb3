"""The two producer clients of ``KafkaPublisher`` (native bridge, confluent-kafka) publish the same
run identically: same messages (key, value, headers, partition, order within a partition), same
end-of-session markers, same delivery totals in the manifest."""

from __future__ import annotations

import pytest
from kafka_lake_testutil import consume_all, create_topics, file_records, simulate

from qrsdp_sim.kafka.bridge import bridge_available
from qrsdp_sim.kafka.publisher import KafkaPublisher

pytestmark = [pytest.mark.services, pytest.mark.timeout(900)]


def _topic_contents(bootstrap: str, topic: str, expected: int) -> dict[tuple[int, bytes], list[tuple]]:
    """Messages by (partition, symbol) in offset order (the two symbols' sessions run on two threads,
    so how they interleave inside a shared partition differs from run to run)."""
    by_stream: dict[tuple[int, bytes], list[tuple]] = {}
    for m in sorted(consume_all(bootstrap, topic, expected), key=lambda m: (m.partition(), m.offset())):
        by_stream.setdefault((m.partition(), m.key()), []).append((m.value(), tuple(m.headers() or ())))
    return by_stream


def test_bridge_and_confluent_publish_the_same_run_identically(kafka_stack, tmp_path) -> None:
    assert bridge_available(), "the test stack builds qrsdp-kafka-bridge (infra/stack.sh install)"
    bootstrap = kafka_stack.bootstrap_servers
    contents = {}
    publish = {}
    for client, bridge in (("bridge", True), ("confluent", False)):
        topic, _dlq = create_topics(bootstrap, f"pub-{client}", partitions=4)
        publisher = KafkaPublisher(bootstrap, topic, bridge=bridge)
        assert publisher.client == ("bridge" if bridge else "confluent-kafka")
        result = simulate(tmp_path / client, days=2, seconds=300, publisher=publisher, run_id="same-run")
        expected = file_records(tmp_path / client)
        total = sum(len(r) for r in expected.values()) + len(expected)  # + one marker per session
        publish[client] = result.manifest["publish"]
        assert (publish[client]["produced"], publish[client]["delivered"], publish[client]["failed"]) == (
            total, total, 0)
        contents[client] = _topic_contents(bootstrap, topic, total)
    assert contents["bridge"] == contents["confluent"]
    assert publish["bridge"]["sessions"] == publish["confluent"]["sessions"]
