"""The Parquet consumer's Kafka clients: ``BridgeSource`` (``qrsdp-kafka-bridge consume --subscribe``)
and ``ConfluentSource`` (confluent-kafka), both in consumer group mode.

The shared interface ``ParquetConsumer`` uses: ``name`` (the client, for stats and logs);
``poll(timeout)``: the next items (bridge runs or raw messages, or confluent ``Message``s), possibly
none; ``hold(seconds, in_callback=...)``: wait while taking nothing more (backpressure while the lake
is down; inside a rebalance callback just wait); ``release()``: take messages again after a hold;
``commit({partition: offset})``: synchronous commit; ``close()``. Both call
``on_revoke(partitions, lost)`` when partitions are revoked (``lost``: the group session expired).
"""

from __future__ import annotations

import logging
import time
from typing import Any

from confluent_kafka import Consumer, KafkaError, TopicPartition

from qrsdp_sim.kafka.bridge import BridgeConsumer, Event

log = logging.getLogger(__name__)

SESSION_TIMEOUT_MS = 10_000  # a killed consumer's partitions move to another member after this
# Fetches of at most 4 MB (1 MB per partition) instead of the bridge's 64 MB: the bridge then holds
# ~0.1 GB instead of ~0.5 GB of decoded records and spends a third less CPU (less for its garbage
# collector to scan, warmer caches); a fetch still carries ~40,000 records per partition.
BRIDGE_FETCH_ARGS = ("--fetch-max-bytes", str(4 << 20), "--fetch-max-partition-bytes", str(1 << 20))


class BridgeSource:
    """``qrsdp-kafka-bridge consume --subscribe``: yields runs and raw messages one at a time, so a
    revocation (handled inside ``poll``) comes after every item of the revoked partitions."""

    name = "bridge"

    def __init__(self, brokers: str, topic: str, group: str, on_revoke) -> None:
        self.consumer = BridgeConsumer(brokers, topic, group, mode="subscribe", on_revoke=on_revoke,
                                       extra_args=BRIDGE_FETCH_ARGS,
                                       session_timeout_ms=SESSION_TIMEOUT_MS)

    def poll(self, timeout: float) -> list[Any]:
        item = self.consumer.poll(timeout)
        if item is None or isinstance(item, Event):
            return []
        return [item]

    def hold(self, seconds: float, *, in_callback: bool = False) -> None:
        # Not reading the bridge's output is the backpressure: once the pipe is full it stops
        # fetching; franz-go keeps heartbeating, so the group membership stays.
        time.sleep(seconds)

    def release(self) -> None:
        pass

    def commit(self, offsets: dict[int, int]) -> None:
        self.consumer.commit(offsets)

    def close(self) -> None:
        self.consumer.close()


class ConfluentSource:
    """confluent-kafka: one Python ``Message`` per Kafka message (4-6 µs each)."""

    name = "python"

    def __init__(self, brokers: str, topic: str, group: str, on_revoke, batch: int) -> None:
        self.topic = topic
        self.batch = batch
        self.consumer = Consumer(
            {
                "bootstrap.servers": brokers,
                "group.id": group,
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
                "enable.partition.eof": False,
                "max.poll.interval.ms": 600_000,
                "session.timeout.ms": SESSION_TIMEOUT_MS,
                "heartbeat.interval.ms": 2_000,
                "fetch.min.bytes": 65_536,
                "fetch.wait.max.ms": 100,
                "log_level": 3,
            }
        )
        self._paused = False
        self._deferred: list[Any] = []  # returned by poll() while the partitions were paused
        self.consumer.subscribe(
            [topic],
            on_revoke=lambda _c, parts: on_revoke([tp.partition for tp in parts], False),
            on_lost=lambda _c, parts: on_revoke([tp.partition for tp in parts], True),
        )

    def poll(self, timeout: float) -> list[Any]:
        if self._deferred:
            msgs, self._deferred = self._deferred, []
        else:
            msgs = self.consumer.consume(num_messages=self.batch, timeout=timeout)
        out = []
        for m in msgs:
            err = m.error()
            if err is not None:
                if err.code() != KafkaError._PARTITION_EOF:
                    log.warning("consumer error: %s", err)
                continue
            out.append(m)
        return out

    def hold(self, seconds: float, *, in_callback: bool = False) -> None:
        """Wait with the partitions paused, polling (outside rebalance callbacks) to stay in the group."""
        if in_callback:
            time.sleep(seconds)
            return
        if not self._paused:
            assignment = self.consumer.assignment()
            if assignment:
                self.consumer.pause(assignment)
            self._paused = True
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            m = self.consumer.poll(min(0.1, max(0.0, deadline - time.monotonic())))
            if m is not None:
                self._deferred.append(m)

    def release(self) -> None:
        if self._paused:
            assignment = self.consumer.assignment()
            if assignment:
                self.consumer.resume(assignment)
            self._paused = False

    def commit(self, offsets: dict[int, int]) -> None:
        self.consumer.commit(offsets=[TopicPartition(self.topic, p, o) for p, o in sorted(offsets.items())],
                             asynchronous=False)

    def close(self) -> None:
        self.consumer.close()
