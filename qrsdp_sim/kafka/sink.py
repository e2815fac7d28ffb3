"""``KafkaSink``: publishes every record to Kafka, best effort, never blocking the simulation.

The ``.qrsdp`` file is the source of truth, so this sink must never slow down or stop
a run: records are handed to librdkafka's in-memory queue (sized for a whole session)
and delivery reports are counted as they arrive. If the queue is full or the broker is
unreachable, the affected records are counted as failed -- the run still succeeds, and
``qrsdp republish`` closes the gap from the file afterwards.
"""

from __future__ import annotations

import json
import logging
import threading
from dataclasses import dataclass

import numpy as np
from confluent_kafka import KafkaError, Producer

from qrsdp_sim.kafka.message import (
    DEFAULT_TOPIC,
    H_DATE,
    H_EOS,
    H_RUN_ID,
    H_SEQ,
    H_SESSION,
    H_TS_NS,
    EndOfSession,
    big_endian_u64,
)
from qrsdp_sim.records import RECORD_DTYPE, RECORD_SIZE

log = logging.getLogger(__name__)


def producer_config(brokers: str, **overrides: object) -> dict[str, object]:
    """The producer settings the platform relies on (idempotent, acks=all, lz4)."""
    config: dict[str, object] = {
        "bootstrap.servers": brokers,
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": 5,
        "compression.type": "lz4",
        # Same partitioner as the Java client, so every client maps a symbol to the same partition.
        "partitioner": "murmur2_random",
        # Room for a whole session in memory: the simulation must never wait on the broker.
        "queue.buffering.max.messages": 10_000_000,
        "queue.buffering.max.kbytes": 2_097_151,
        "batch.num.messages": 100_000,
        "batch.size": 1_000_000,
        # How long a record may wait for a broker that is down before it counts as failed.
        "message.timeout.ms": 120_000,
        "socket.connection.setup.timeout.ms": 5_000,
        # Only failures reach Python: a callback per delivered message would halve throughput.
        # Delivered = produced - failed - still queued (see KafkaSink.close).
        "delivery.report.only.error": True,
        "log_level": 3,
    }
    config.update(overrides)
    return config


@dataclass
class DeliveryStats:
    """Delivery of one session's messages (its events and its end-of-session marker)."""

    produced: int = 0  # handed to the client
    delivered: int = 0  # acknowledged by the broker
    failed: int = 0  # delivery failed, or never handed to the client (``unsent``)
    unsent: int = 0  # of ``failed``: never handed to the client (broker down, queue full, sink failed)
    events: int | None = None  # the session's event count, once it ended (its marker's count)
    complete: bool = False  # every event and the marker acknowledged (set when the publisher closes)
    first_error: str | None = None

    def count_unsent(self, count: int, reason: str) -> None:
        self.failed += count
        self.unsent += count
        if self.first_error is None:
            self.first_error = reason

    def to_dict(self) -> dict[str, object]:
        return dict(self.__dict__)


class KafkaSink:
    """One session's records to ``topic``, keyed by symbol, with per-message headers.

    ``close()`` produces the end-of-session marker, waits at most ``close_timeout``
    seconds for outstanding deliveries, and counts whatever is still undelivered as failed.
    """

    def __init__(
        self,
        brokers: str,
        *,
        symbol: str,
        date: str,
        run_id: str,
        topic: str = DEFAULT_TOPIC,
        close_timeout: float = 30.0,
        producer: Producer | None = None,
        stats: DeliveryStats | None = None,
        drop_all: bool = False,
        **config_overrides: object,
    ) -> None:
        self.topic = topic
        self.symbol = symbol
        self._key = symbol.encode("ascii")
        self._date = date.encode("ascii")
        self._run_id = run_id.encode("ascii")
        self._close_timeout = close_timeout
        # A shared producer (KafkaPublisher) is flushed by its owner, not by close().
        self._owns_producer = producer is None
        # `is None`, not `or`: a confluent-kafka Producer with an empty queue is falsy (len() == 0), and
        # `producer or Producer(...)` used to give each session a private, never-flushed producer.
        self._producer = producer if producer is not None else Producer(
            producer_config(brokers, on_delivery=self._on_delivery, **config_overrides)
        )
        self._lock = threading.Lock()
        self.stats = stats if stats is not None else DeliveryStats()
        # Broker known to be down: count every record as failed without queueing it.
        self._drop_all = drop_all
        self._seq = 0
        self.closed = False

    def _on_delivery(self, err: KafkaError | None, _msg: object) -> None:
        if err is None:  # only with delivery.report.only.error off
            return
        with self._lock:
            self.stats.failed += 1
            if self.stats.first_error is None:
                self.stats.first_error = str(err)

    def append(self, batch: np.ndarray) -> None:
        if batch.dtype != RECORD_DTYPE:
            raise TypeError(f"expected records of RECORD_DTYPE, got {batch.dtype}")
        if self.closed:
            raise ValueError(f"KafkaSink {self.symbol} {self.topic}: append after close")
        n = len(batch)
        if n == 0:
            return
        if self._drop_all:
            self._count_unqueued(n, "broker unreachable")
            self._seq += n
            return
        values = batch.tobytes()
        ts_be = big_endian_u64(batch["ts_ns"])
        seq_be = big_endian_u64(np.arange(self._seq, self._seq + n, dtype=np.uint64))
        produce = self._producer.produce
        topic, key, date, run_id = self.topic, self._key, self._date, self._run_id
        queued = 0
        try:
            for i in range(n):
                j = i * 8
                produce(
                    topic,
                    values[i * RECORD_SIZE : (i + 1) * RECORD_SIZE],
                    key,
                    headers=[(H_TS_NS, ts_be[j : j + 8]), (H_DATE, date), (H_SEQ, seq_be[j : j + 8]), (H_RUN_ID, run_id)],
                )
                queued += 1
        except BufferError:
            # Queue full (broker gone for long): never block the simulation.
            self._count_unqueued(n - queued, "local queue full")
        except BaseException:
            # Anything else: what was queued counts; the rest of the batch is neither sent nor counted here
            # (``records_sent`` stops at what was queued; the publisher counts the rest of the session failed).
            self.stats.produced += queued
            self._seq += queued
            raise
        self.stats.produced += queued
        self._seq += n
        self._producer.poll(0)

    def _count_unqueued(self, count: int, reason: str) -> None:
        with self._lock:
            self.stats.count_unsent(count, reason)

    @property
    def records_sent(self) -> int:
        """Records accounted for so far: handed to the client or counted failed (short of the session's
        event count only when an append failed part-way)."""
        return self._seq

    def end_of_session(self, events: int, close_ticks: int, session: dict | None = None) -> None:
        """Produce the marker that tells consumers this (symbol, date) is complete.

        ``session`` (seed, open/close, tick size, market open, length) travels as the JSON
        header ``session`` so a consumer can describe the session without its file.
        """
        if self._drop_all:
            self._count_unqueued(1, "broker unreachable")
            return
        eos = EndOfSession(events, close_ticks)
        try:
            self._producer.produce(
                self.topic,
                b"",
                self._key,
                headers=[(H_DATE, self._date), (H_SEQ, big_endian_u64(np.array([events]))),
                         (H_RUN_ID, self._run_id), (H_EOS, eos.encode())]
                + ([(H_SESSION, json.dumps(session, sort_keys=True).encode())] if session else []),
            )
            self.stats.produced += 1
        except BufferError:
            self._count_unqueued(1, "local queue full")

    def flush(self) -> None:
        if self._producer is not None:
            self._producer.poll(0)

    def close(self, close_ticks: int | None = None) -> None:
        if self.closed:
            return
        self.closed = True
        self.end_of_session(self._seq, 0 if close_ticks is None else close_ticks)  # 0: close unknown
        if not self._owns_producer:
            self._producer.poll(0)
            return
        remaining = self._producer.flush(self._close_timeout)
        if remaining:
            self._producer.purge()
            self._producer.poll(0)
            log.warning("%s %s: %d messages undelivered after %.0fs", self.symbol, self.topic, remaining,
                        self._close_timeout)
        self._producer.flush(0)
        with self._lock:
            # Purged messages were reported as failed; anything still queued is lost for this run.
            still_queued = len(self._producer)
            self.stats.failed += still_queued
            self.stats.delivered = max(0, self.stats.produced - (self.stats.failed - self.stats.unsent))
        self._producer = None  # break the producer -> callback -> sink cycle: the client goes now
