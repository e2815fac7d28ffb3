"""The ITCH streamer's dead-letter topic: every Kafka message it refuses, with the reason.

A refused message is produced to the dead-letter topic (default ``exchange.events.dlq``, the topic
the Parquet consumer uses too) as it was -- key, value, headers -- plus ``dlq_reason`` (one line),
``dlq_source`` (``topic/partition/offset``) and ``dlq_service`` (``itch-stream``, so the two services'
rejects can be told apart). The streamer flushes the dead letters before it commits offsets past
them: a refused message is either in the dead-letter topic or read again after a restart.

The producer (confluent-kafka) is made on the first dead letter: a clean feed never opens it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from confluent_kafka import KafkaError, Producer

log = logging.getLogger(__name__)

SERVICE = b"itch-stream"

Headers = list[tuple[str, bytes | None]]


class DeadLetters:
    def __init__(self, brokers: str, topic: str, producer_factory: Callable[[dict[str, Any]], Any] = Producer) -> None:
        self.brokers = brokers
        self.topic = topic
        self._factory = producer_factory
        self._producer: Any = None
        self._errors: list[str] = []
        self.pending = 0  # produced, not yet confirmed by a flush
        self.sent = 0

    def _on_delivery(self, err: KafkaError | None, _msg: Any) -> None:
        if err is not None:
            self._errors.append(str(err))

    def send(self, *, source: str, key: bytes | None, value: bytes | None, headers: Headers | None,
             reason: str) -> None:
        """Produce one refused message (``source``: ``topic/partition/offset``)."""
        if self._producer is None:
            self._producer = self._factory({"bootstrap.servers": self.brokers, "enable.idempotence": True,
                                            "acks": "all", "log_level": 3, "on_delivery": self._on_delivery})
        out = [*(headers or ()), ("dlq_reason", reason.encode("utf-8", "replace")),
               ("dlq_source", source.encode()), ("dlq_service", SERVICE)]
        self._producer.produce(self.topic, value, key, headers=out)
        self._producer.poll(0)
        self.pending += 1
        self.sent += 1
        n = self.sent
        if n <= 10 or n & (n - 1) == 0:  # the first ten, then every power of two: never a log flood
            log.warning("itch-stream: dead-lettered %s (%d so far): %s", source, n, reason)

    def flush(self, timeout: float = 30.0) -> None:
        """Wait until every dead letter is confirmed; RuntimeError when some were not (offsets must then
        not be committed past them)."""
        if not self.pending:
            return
        undelivered = self._producer.flush(timeout)
        if undelivered or self._errors:
            raise RuntimeError(f"dead-letter topic {self.topic}: {undelivered} undelivered, errors {self._errors[:3]}")
        self.pending = 0

    def close(self) -> None:
        if self._producer is not None:
            try:
                self._producer.flush(10)
            finally:
                self._producer = None
