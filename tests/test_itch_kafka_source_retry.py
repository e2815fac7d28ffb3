"""The streamer's bridge client retries a commit (and the other requests after the metadata) that the
broker refuses with "unknown topic or partition" while it reloads its partitions after a restart --
found by the chaos soak (benchmarks/chaos.py), where every broker SIGKILL made the streamer exit with
``Kafka commit failed: ... UNKNOWN_TOPIC_OR_PARTITION``. The metadata request still takes it as "no
such topic" (a misspelt --kafka-topic must fail at once, not after a minute)."""

from __future__ import annotations

import pytest

from qrsdp_sim.itch.kafka_source import BridgeKafkaSource
from qrsdp_sim.itch.streamer_config import StreamerConfig
from qrsdp_sim.kafka.bridge import BridgeRequestError

REFUSED = "commit on exchange.events (group itch-streamer): UNKNOWN_TOPIC_OR_PARTITION: This server does not host " \
          "this topic-partition."


class RestartingBroker:
    """A bridge whose first ``refusals`` requests are refused as by a broker that is still loading."""

    def __init__(self, refusals: int) -> None:
        self.refusals = refusals
        self.commits: list[dict[int, int]] = []

    def _refuse(self) -> None:
        if self.refusals:
            self.refusals -= 1
            raise BridgeRequestError(REFUSED)

    def commit(self, offsets, metadata) -> None:
        self._refuse()
        self.commits.append(dict(offsets))

    def partitions(self):
        self._refuse()
        return {0: (0, 10)}


def test_commit_refused_while_the_broker_reloads_is_retried(monkeypatch) -> None:
    monkeypatch.setattr("qrsdp_sim.itch.kafka_source.time.sleep", lambda _s: None)
    bridge = RestartingBroker(refusals=3)
    source = BridgeKafkaSource(StreamerConfig(symbols=["AAPL"]), bridge)
    source.commit({0: 5}, {0: "m"})
    assert bridge.commits == [{0: 5}] and bridge.refusals == 0


def test_metadata_for_an_unknown_topic_still_fails_at_once(monkeypatch) -> None:
    monkeypatch.setattr("qrsdp_sim.itch.kafka_source.time.sleep", lambda _s: None)
    source = BridgeKafkaSource(StreamerConfig(symbols=["AAPL"]), RestartingBroker(refusals=1))
    with pytest.raises(RuntimeError, match="not found"):
        source.partitions()
