"""What the soak's triggers watch, read from outside the services through Kafka: messages on the events
topic (``produced``) and the committed offsets of the Parquet consumer's and the streamer's groups
(``landed``, ``streamed``). A read while the broker is down gives None (unknown, not zero)."""

from __future__ import annotations

import uuid

from confluent_kafka import Consumer, KafkaException, TopicPartition

WATCHES = ("produced", "landed", "streamed")


class Progress:
    def __init__(self, bootstrap: str, topic: str, groups: dict[str, str]) -> None:
        self.topic = topic
        self._partitions: list[int] = []

        def client(group: str) -> Consumer:
            return Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False,
                             "log_level": 0, "socket.connection.setup.timeout.ms": 3000})

        self._wm = client(f"chaos-progress-{uuid.uuid4().hex[:8]}")
        self._groups = {watch: client(group) for watch, group in groups.items()}

    def _parts(self, timeout: float) -> list[int]:
        if not self._partitions:
            meta = self._wm.list_topics(self.topic, timeout=timeout)
            self._partitions = sorted(meta.topics[self.topic].partitions)
        return self._partitions

    def read(self, watch: str, timeout: float = 3.0) -> int | None:
        try:
            parts = self._parts(timeout)
            if watch == "produced":
                return sum(self._wm.get_watermark_offsets(TopicPartition(self.topic, p), timeout=timeout)[1]
                           for p in parts)
            got = self._groups[watch].committed([TopicPartition(self.topic, p) for p in parts], timeout=timeout)
            return sum(max(tp.offset, 0) for tp in got)
        except (KafkaException, RuntimeError):
            return None

    def caught_up(self, watch: str, timeout: float = 3.0) -> bool:
        """The group has committed every message on the topic (False while unknown)."""
        try:
            parts = self._parts(timeout)
            high = {p: self._wm.get_watermark_offsets(TopicPartition(self.topic, p), timeout=timeout)[1]
                    for p in parts}
            got = self._groups[watch].committed([TopicPartition(self.topic, p) for p in parts], timeout=timeout)
        except (KafkaException, RuntimeError):
            return False
        return all(max(tp.offset, 0) >= high[tp.partition] for tp in got)  # none committed: an empty partition

    def close(self) -> None:
        for c in (self._wm, *self._groups.values()):
            c.close()
