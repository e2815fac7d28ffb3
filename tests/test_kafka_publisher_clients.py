"""The two producer clients of ``KafkaPublisher`` (native bridge, confluent-kafka) publish the same
run identically: same messages (key, value, headers, partition, order within a partition), same
end-of-session markers, same delivery totals in the manifest."""

from __future__ import annotations

import os
import signal

import pytest
from kafka_lake_testutil import consume_all, create_topics, file_records, high_watermarks, simulate

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
            total,
            total,
            0,
        )
        contents[client] = _topic_contents(bootstrap, topic, total)
    assert contents["bridge"] == contents["confluent"]
    assert publish["bridge"]["sessions"] == publish["confluent"]["sessions"]


class _KillBridgeAfter(KafkaPublisher):
    """A publisher whose bridge process is SIGKILLed once ``after`` batches have been published."""

    def __init__(self, *args, after: int, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.after = after
        self.batches = 0
        self.killed = False

    def open_session(self, symbol, date, run_id):
        sink = super().open_session(symbol, date, run_id)
        append = sink.append

        def counting_append(batch) -> None:
            self.batches += 1
            if self.batches == self.after and not self.killed:
                os.kill(self._bridge.pid, signal.SIGKILL)
                self._bridge._proc.proc.wait(10)
                self.killed = True
            append(batch)

        sink.append = counting_append
        return sink


def test_bridge_killed_mid_run_files_intact_every_event_accounted(kafka_stack, tmp_path) -> None:
    """kill -9 of the bridge during a dual-write run: the run succeeds, the files are byte-identical to a
    run without Kafka, and every event is either delivered or counted failed (never silently lost)."""
    bootstrap = kafka_stack.bootstrap_servers
    topic, _dlq = create_topics(bootstrap, "pub-killed", partitions=4)
    reference = simulate(tmp_path / "reference", days=2, seconds=300, run_id="kill")
    publisher = _KillBridgeAfter(bootstrap, topic, bridge=True, after=5)
    result = simulate(tmp_path / "killed", days=2, seconds=300, publisher=publisher, run_id="kill")
    assert publisher.killed
    expected = file_records(tmp_path / "reference")
    got = file_records(tmp_path / "killed")
    assert expected.keys() == got.keys()
    for key in expected:
        assert expected[key].tobytes() == got[key].tobytes(), key
    assert {k: v for k, v in result.manifest.items() if k not in ("publish", "run_id", "created_utc")} == {
        k: v for k, v in reference.manifest.items() if k not in ("publish", "run_id", "created_utc")
    }
    publish = result.manifest["publish"]
    total = sum(len(r) for r in expected.values()) + len(expected)
    assert publish["delivered"] + publish["failed"] == total
    assert publish["failed"] > 0 and publish["delivered"] < total
    for (symbol, day), records in expected.items():
        st = publish["sessions"][f"{symbol}/{day}"]
        assert st["delivered"] + st["failed"] == len(records) + 1, st
    # what the topic holds is at most what was counted delivered (the bridge died before reporting)
    on_topic = sum(high_watermarks(bootstrap, topic).values())
    assert on_topic >= publish["delivered"]
