"""The dead-letter topic: where a consumer sets aside the messages it cannot use.

Each rejected message is produced to the dead-letter topic with its original key, value and
headers plus ``dlq_reason`` (readable), ``dlq_kind`` (short stable name, also the counter's key)
and ``dlq_source`` (``topic/partition/offset``). A consumer commits past a rejected message only
once :meth:`DeadLetters.confirm` says the dead-letter topic holds it, so a rejected message is
never lost; a failed delivery is produced again by the next ``confirm`` (the consumer meanwhile
commits nothing and backs off).

Sizes are bounded whatever the input: the value is cut to ``MAX_VALUE_BYTES``, at most
``MAX_HEADERS`` headers of at most ``MAX_HEADER_BYTES`` each are kept (``dlq_truncated`` says so),
so a dead-letter message always fits the broker's default 1 MB limit; the client's queue is bounded
too (a full queue waits for deliveries).
"""

from __future__ import annotations

import collections
import logging
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Producer

log = logging.getLogger(__name__)

MAX_VALUE_BYTES = 256 << 10
MAX_KEY_BYTES = 4096
MAX_HEADERS = 64
MAX_HEADER_BYTES = 4096
MAX_REASON_CHARS = 1000


def _cut(data: bytes | None, limit: int) -> tuple[bytes | None, bool]:
    if data is None or len(data) <= limit:
        return data, False
    return bytes(data[:limit]), True


def dead_letter_copy(message: Any, kind: str, reason: str) -> tuple[bytes | None, bytes | None, list]:
    """(key, value, headers) of the dead-letter copy of ``message`` (bounded in size)."""
    value, cut_value = _cut(message.value(), MAX_VALUE_BYTES)
    key, cut_key = _cut(message.key(), MAX_KEY_BYTES)
    original = list(message.headers() or ())
    headers = []
    truncated = cut_value or cut_key or len(original) > MAX_HEADERS
    for name, hv in original[:MAX_HEADERS]:
        hv, cut = _cut(hv, MAX_HEADER_BYTES)
        truncated = truncated or cut or len(name) > 256
        headers.append((name[:256], hv))
    headers += [
        ("dlq_reason", reason[:MAX_REASON_CHARS].encode("utf-8", "replace")),
        ("dlq_kind", kind.encode("ascii", "replace")),
        ("dlq_source", f"{message.topic()}/{message.partition()}/{message.offset()}".encode()),
    ]
    if truncated:
        headers.append(("dlq_truncated", f"value {len(message.value() or b'')} bytes".encode()))
    return key, value, headers


class DeadLetters:
    """Produces rejected messages to ``topic`` and counts them by kind."""

    def __init__(self, brokers: str, topic: str, *, producer: Producer | None = None) -> None:
        self.topic = topic
        self.counts: collections.Counter[str] = collections.Counter()
        self.total = 0
        self.retries = 0  # confirm() rounds that had to produce failed deliveries again
        self._retry: list[tuple[bytes | None, bytes | None, list]] = []
        self._unconfirmed = 0
        self._producer = producer or Producer({
            "bootstrap.servers": brokers, "enable.idempotence": True, "acks": "all", "log_level": 3,
            "queue.buffering.max.messages": 100_000, "queue.buffering.max.kbytes": 64 << 10,
            "message.timeout.ms": 30_000, "on_delivery": self._on_delivery,
        })

    @property
    def unconfirmed(self) -> int:
        """Dead letters sent since the last successful :meth:`confirm`."""
        return self._unconfirmed

    def _on_delivery(self, err: KafkaError | None, msg: Any) -> None:
        if err is not None:
            self._retry.append((msg.key(), msg.value(), list(msg.headers() or ())))
            log.warning("dead-letter delivery to %s failed (%s); it is produced again before any commit",
                        self.topic, err)

    def send(self, message: Any, kind: str, reason: str) -> None:
        """Set ``message`` aside with ``reason``; counted at once, confirmed by :meth:`confirm`."""
        self._produce(*dead_letter_copy(message, kind, reason))
        self._unconfirmed += 1
        self.counts[kind] += 1
        self.total += 1
        n = self.total
        if n <= 10 or n & (n - 1) == 0:  # the first ten, then every power of two: never a log flood
            log.warning("dead-lettered %s/%s@%s (%d so far, %s): %s", message.topic(), message.partition(),
                        message.offset(), n, kind, reason)

    def _produce(self, key: bytes | None, value: bytes | None, headers: list) -> None:
        for _ in range(3):
            try:
                self._producer.produce(self.topic, value, key, headers=headers)
                self._producer.poll(0)
                return
            except BufferError:
                self._producer.flush(5)  # bounded queue: wait for deliveries
            except KafkaException as exc:
                log.warning("dead-letter produce to %s failed (%s); retried before any commit", self.topic, exc)
                break
        self._retry.append((key, value, headers))

    def confirm(self, timeout: float) -> bool:
        """Wait up to ``timeout`` s until every dead letter is in the topic. False: some are not (those
        that failed are produced again by the next call); commit nothing meanwhile."""
        if self._retry:
            self.retries += 1
            again, self._retry = self._retry, []
            for key, value, headers in again:
                self._produce(key, value, headers)
        if self._producer.flush(timeout) or self._retry:
            return False
        self._unconfirmed = 0
        return True

    def close(self, timeout: float = 10.0) -> None:
        if self._producer is not None:
            self._producer.flush(timeout)
            self._producer = None  # its delivery callback refers back here: release the client now
