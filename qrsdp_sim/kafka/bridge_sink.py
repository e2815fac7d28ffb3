"""``BridgeSessionSink``: one session's records to Kafka through the native bridge.

The same contract as :class:`~qrsdp_sim.kafka.sink.KafkaSink` (best effort, never blocks the
simulation, end-of-session marker on close, byte-identical messages) with the per-message work
done by ``qrsdp-kafka-bridge``: a batch crosses the pipe as one frame, so the Python cost per
record is nil. Delivery totals come from the bridge's per (symbol, date) counters when the
owning :class:`~qrsdp_sim.kafka.publisher.KafkaPublisher` closes.
"""

from __future__ import annotations

import json
import logging

import numpy as np

from qrsdp_sim.kafka.bridge import BridgeError, BridgeProducer
from qrsdp_sim.kafka.message import H_DATE, H_EOS, H_RUN_ID, H_SEQ, H_SESSION, EndOfSession, big_endian_u64
from qrsdp_sim.kafka.sink import DeliveryStats
from qrsdp_sim.records import RECORD_DTYPE

log = logging.getLogger(__name__)


class BridgeSessionSink:
    """Records of one (symbol, date) to a shared :class:`BridgeProducer`."""

    def __init__(
        self,
        producer: BridgeProducer | None,
        *,
        symbol: str,
        date: str,
        run_id: str,
        stats: DeliveryStats,
    ) -> None:
        self.symbol = symbol
        self.topic = producer.topic if producer is not None else ""
        self._producer = producer  # None: broker known to be down, count everything as failed
        self._date = date
        self._run_id = run_id
        self.stats = stats
        self._seq = 0
        self.closed = False

    @property
    def records_sent(self) -> int:
        """Records accounted for so far: handed to the bridge or counted failed (short of the session's
        event count only when an append failed part-way)."""
        return self._seq

    def _lost(self, count: int, reason: str) -> None:
        self.stats.count_unsent(count, reason)

    def append(self, batch: np.ndarray) -> None:
        if batch.dtype != RECORD_DTYPE:
            raise TypeError(f"expected records of RECORD_DTYPE, got {batch.dtype}")
        if self.closed:
            raise ValueError(f"BridgeSessionSink {self.symbol} {self.topic}: append after close")
        n = len(batch)
        if n == 0:
            return
        first = self._seq
        if self._producer is None:
            self._lost(n, "broker unreachable")
            self._seq += n
            return
        try:
            self._producer.send_run(self.symbol, self._date, self._run_id, first, batch)
            self.stats.produced += n  # handed to the bridge; the publisher learns what was delivered
        except BridgeError as exc:
            # The bridge died: the file is unaffected; the rest of the session counts as failed.
            log.warning("%s %s: Kafka bridge failed (%s); the session's remaining events count as failed",
                        self.symbol, self._date, exc)
            self._lost(n, f"bridge failed: {exc}")
            self._producer = None
        # Anything else propagates with the batch unaccounted (``records_sent`` stops before it): the
        # publisher counts it and the rest of the session failed.
        self._seq += n

    def end_of_session(self, events: int, close_ticks: int, session: dict | None = None) -> None:
        """Produce the marker that tells consumers this (symbol, date) is complete."""
        if self._producer is None:
            self._lost(1, self.stats.first_error or "broker unreachable")
            return
        headers = [(H_DATE, self._date.encode()), (H_SEQ, big_endian_u64(np.array([events]))),
                   (H_RUN_ID, self._run_id.encode()), (H_EOS, EndOfSession(events, close_ticks).encode())]
        if session:
            headers.append((H_SESSION, json.dumps(session, sort_keys=True).encode()))
        try:
            self._producer.send_message(self.symbol, b"", headers)
            self.stats.produced += 1
        except BridgeError as exc:
            self._lost(1, f"bridge failed: {exc}")
            self._producer = None

    def flush(self) -> None:
        """Nothing to do: delivery is confirmed once per run by the publisher."""

    def close(self, close_ticks: int | None = None) -> None:
        if self.closed:
            return
        self.closed = True
