"""The truncated-session path (issue 12, defect 8), on the real services with both Kafka clients.

A Kafka sink that fails part-way through a session with an exception other than BufferError/BridgeError
(injected into the producer call: RuntimeError) is isolated by the runner, which goes on. The session's
end-of-session marker must still carry the session's own event count -- before the fix it carried what the
sink had sent, so a truncated session with contiguous seqs was marked complete in the lake. Now the
manifest records the session as incomplete with the right counts, the Parquet consumer does not mark it,
and ``republish`` of its file completes it (every event exactly once).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from kafka_lake_testutil import (
    ConsumerThread,
    assert_lake_exactly_once,
    create_topics,
    file_records,
    high_watermarks,
    lake_markers,
    s3_lake,
    session_files,
    wait_until,
)

from qrsdp_sim.engine.runner import RunSpec, Security, run
from qrsdp_sim.kafka.consumer import ParquetConsumer
from qrsdp_sim.kafka.publisher import KafkaPublisher
from qrsdp_sim.kafka.republish import identify, republish

pytestmark = [pytest.mark.services, pytest.mark.timeout(300)]

DAY = dt.date(2026, 1, 5)
BROKEN = ("AAA", DAY.isoformat())


class _FailingProducer:
    """confluent-kafka's producer, except that the ``fail_at``-th produce of key AAA raises."""

    def __init__(self, inner: Any, fail_at: int) -> None:
        self._inner = inner
        self._fail_at = fail_at
        self.calls = 0

    def produce(self, *args: Any, **kwargs: Any) -> None:
        if args[2] == b"AAA":
            self.calls += 1
            if self.calls == self._fail_at:
                raise RuntimeError("injected: the producer broke")
        self._inner.produce(*args, **kwargs)

    def __len__(self) -> int:
        return len(self._inner)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def _inject(publisher: KafkaPublisher, client: str) -> None:
    if client == "python":
        publisher._producer = _FailingProducer(publisher._producer, fail_at=2_000)
        return
    bridge = publisher._bridge
    send_run = bridge.send_run
    calls = {"AAA": 0}

    def failing(key, date, run_id, first_seq, records) -> None:
        if key == "AAA":
            calls["AAA"] += 1
            if calls["AAA"] == 3:
                raise RuntimeError("injected: the bridge call broke")
        send_run(key, date, run_id, first_seq, records)

    bridge.send_run = failing


@pytest.mark.parametrize("client", ["bridge", "python"])
def test_sink_failing_part_way_leaves_the_session_incomplete_until_republished(kafka_stack, minio_stack, tmp_path,
                                                                               client) -> None:
    bootstrap = kafka_stack.bootstrap_servers
    topic, dlq = create_topics(bootstrap, f"truncated-{client}", partitions=2)
    lake = s3_lake(minio_stack, f"truncated-{client}")
    consumer = ParquetConsumer(bootstrap, lake, topic=topic, group_id=f"pw-{topic}", dead_letter_topic=dlq,
                               client="bridge" if client == "bridge" else "python")
    worker = ConsumerThread(consumer)
    try:
        publisher = KafkaPublisher(bootstrap, topic, bridge=client == "bridge")
        _inject(publisher, client)
        spec = RunSpec(days=1, session_seconds=1200, start_date=DAY, batch_records=512)
        result = run(spec, [Security("AAA", 10_000), Security("BBB", 20_000)], tmp_path / "run", workers=2,
                     publisher=publisher)
        expected = file_records(tmp_path / "run")
        events = {k: len(r) for k, r in expected.items()}
        assert events[BROKEN] > 3 * 2_000, "the session is too short for the injected failure to be part-way"

        # The consumer has taken every message, both markers included.
        total = sum(high_watermarks(bootstrap, topic).values())
        wait_until(lambda: consumer.stats.messages == total or not worker.is_alive(), 90, "every message taken")
        worker.wait_complete({("BBB", DAY.isoformat())}, timeout=60)
        wait_until(lambda: consumer.stats.incomplete_sessions == 1, 30,
                   f"AAA judged incomplete: {consumer.stats} {result.manifest['publish']}")
        assert BROKEN not in lake_markers(lake), "a truncated session was marked complete"

        aaa = result.sessions[0]
        assert aaa.symbol == "AAA" and any("injected" in f for f in aaa.result.sink_failures)
        publish = result.manifest["publish"]
        st = publish["sessions"]["AAA/2026-01-05"]
        assert st["events"] == events[BROKEN] and st["complete"] is False
        assert 0 < st["delivered"] < events[BROKEN] + 1
        assert st["delivered"] + st["failed"] == events[BROKEN] + 1, st  # every event and the marker accounted
        assert "failed part-way" in st["first_error"] or "injected" in st["first_error"], st
        assert publish["incomplete_sessions"] == ["AAA/2026-01-05"]
        other = publish["sessions"]["BBB/2026-01-05"]
        assert other["complete"] is True and other["failed"] == 0 and other["events"] == events[("BBB", "2026-01-05")]

        # Republish the session's file: the lake completes it.
        summary = republish([identify(session_files(tmp_path / "run")[BROKEN])], bootstrap, topic)
        assert summary["failed"] == 0 and summary["incomplete_sessions"] == []
        worker.wait_complete({BROKEN}, timeout=90)
    finally:
        worker.stop()
    check = assert_lake_exactly_once(lake, expected)
    assert check.distinct == sum(events.values())
    assert {k: m.rows for k, m in lake_markers(lake).items()} == events
