"""``KafkaPublisher``: one producer per run, one ``KafkaSink`` per session.

Sharing a producer across a run's sessions means one connection and one final flush
with a bounded wait -- a broker that is down costs the run ``close_timeout`` seconds
once, not once per session. Failures are attributed to their session through the
failed message's key and ``date`` header, so the manifest can list per-session totals.

The producer is the native bridge (``qrsdp-kafka-bridge``, one pipe write per batch) when
it is built, else confluent-kafka (one Python call per message); ``QRSDP_KAFKA_CLIENT``
overrides the choice (:mod:`qrsdp_sim.kafka.client`). Messages are identical either way.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Producer
from confluent_kafka.admin import AdminClient

from qrsdp_sim.kafka.bridge import BridgeError, BridgeProducer
from qrsdp_sim.kafka.bridge_sink import BridgeSessionSink
from qrsdp_sim.kafka.client import use_bridge
from qrsdp_sim.kafka.message import DEFAULT_TOPIC, H_DATE
from qrsdp_sim.kafka.sink import DeliveryStats, KafkaSink, producer_config

log = logging.getLogger(__name__)


def broker_reachable(brokers: str, timeout: float = 5.0) -> str | None:
    """None when the cluster answers within ``timeout`` seconds, else the reason it did not."""
    admin = AdminClient({"bootstrap.servers": brokers, "log_level": 0, "socket.connection.setup.timeout.ms": 3000})
    try:
        admin.list_topics(timeout=timeout)
    except KafkaException as exc:
        return str(exc)
    return None


class KafkaPublisher:
    """Publishes every session of a run to ``topic``; implements the runner's ``SessionPublisher``."""

    def __init__(
        self,
        brokers: str,
        topic: str = DEFAULT_TOPIC,
        *,
        close_timeout: float = 60.0,
        check_broker: bool = True,
        bridge: bool | None = None,
        **config_overrides: object,
    ) -> None:
        """``bridge``: None = as ``QRSDP_KAFKA_CLIENT`` says; ``config_overrides`` are confluent-kafka
        settings (they force the confluent-kafka producer)."""
        self.brokers = brokers
        self.topic = topic
        self.close_timeout = close_timeout
        self._lock = threading.Lock()
        self._sessions: dict[tuple[str, str], DeliveryStats] = {}
        self._totals: dict[str, Any] | None = None
        self.down_reason = broker_reachable(brokers) if check_broker else None
        if self.down_reason:
            log.warning("Kafka at %s is unreachable (%s): events are counted as failed, files are unaffected; "
                        "run `qrsdp republish` once it is back", brokers, self.down_reason)
        self._producer: Producer | None = None
        self._bridge: BridgeProducer | None = None
        if bridge is None:
            bridge = not config_overrides and use_bridge()
        self.client = "bridge" if bridge else "confluent-kafka"
        if bridge and not self.down_reason:
            try:
                self._bridge = BridgeProducer(brokers, topic, delivery_timeout_ms=int(close_timeout * 1000) + 60_000)
            except BridgeError as exc:
                log.warning("Kafka bridge did not start (%s); publishing with confluent-kafka", exc)
                self.client = "confluent-kafka"
        if self._bridge is None and not (bridge and self.down_reason):
            self._producer = Producer(producer_config(brokers, on_delivery=self._on_delivery, **config_overrides))

    def _stats(self, symbol: str, date: str) -> DeliveryStats:
        with self._lock:
            return self._sessions.setdefault((symbol, date), DeliveryStats())

    def _on_delivery(self, err: KafkaError | None, msg: Any) -> None:
        if err is None:
            return
        key = (msg.key() or b"").decode("ascii", "replace")
        date = dict(msg.headers() or ()).get(H_DATE, b"").decode("ascii", "replace")
        stats = self._stats(key, date)
        with self._lock:
            stats.failed += 1
            if stats.first_error is None:
                stats.first_error = str(err)

    def open_session(self, symbol: str, date: dt.date, run_id: str) -> KafkaSink | BridgeSessionSink:
        day = date.isoformat()
        if self._producer is None:  # the bridge, or nothing when the broker was down at the start
            return BridgeSessionSink(self._bridge, symbol=symbol, date=day, run_id=run_id,
                                     stats=self._stats(symbol, day))
        sink = KafkaSink(
            self.brokers,
            symbol=symbol,
            date=day,
            run_id=run_id,
            topic=self.topic,
            producer=self._producer,
            stats=self._stats(symbol, day),
            drop_all=bool(self.down_reason),
        )
        return sink

    def end_session(self, sink: KafkaSink | BridgeSessionSink, session: dict[str, Any]) -> None:
        """Send the session's end-of-session marker with the session's own event count.

        The count is the engine's (``session["events"]``), never what the sink happened to send: if the
        sink failed part-way with any exception (the runner isolates it and goes on), the events it never
        sent are counted failed and the marker still says how many the session has, so every consumer
        sees the session as incomplete (``qrsdp republish`` completes it) instead of a shorter one.
        """
        events = int(session.get("events", sink.records_sent))
        missing = events - sink.records_sent
        if missing > 0:
            log.warning("%s: the Kafka sink failed part-way: %d of %d events sent; the rest count as failed "
                        "(`qrsdp republish` the session's file)", sink.symbol, sink.records_sent, events)
            with self._lock:
                sink.stats.count_unsent(missing, f"the Kafka sink failed part-way: {sink.records_sent:,} of "
                                                 f"{events:,} events sent")
        sink.stats.events = events
        sink.end_of_session(events, int(session["close_ticks"]), session)
        if self._producer is not None:
            self._producer.poll(0)

    def close(self) -> dict[str, Any]:
        """Flush (bounded), count what is left as failed, and return the delivery totals.

        Idempotent. Releases the producer (its delivery callback refers back to this object, so
        without that the librdkafka client would live on until a garbage-collection pass).
        """
        if self._totals is not None:
            return self._totals
        if self._producer is not None:
            self._close_confluent()
        else:
            self._close_bridge()
        with self._lock:
            for st in self._sessions.values():
                st.complete = st.events is not None and st.failed == 0 and st.delivered == st.events + 1
            sessions = {f"{s}/{d}": st.to_dict() for (s, d), st in sorted(self._sessions.items())}
            totals = {
                "produced": sum(st.produced for st in self._sessions.values()),
                "delivered": sum(st.delivered for st in self._sessions.values()),
                "failed": sum(st.failed for st in self._sessions.values()),
                "incomplete_sessions": [f"{s}/{d}" for (s, d), st in sorted(self._sessions.items())
                                        if not st.complete],
            }
        self._totals = {"brokers": self.brokers, "topic": self.topic, "client": self.client,
                        "broker_down_at_start": self.down_reason, **totals, "sessions": sessions}
        self._producer = None
        self._bridge = None
        return self._totals

    def _close_confluent(self) -> None:
        remaining = self._producer.flush(self.close_timeout)
        if remaining:
            log.warning("Kafka: %d messages undelivered after %.0f s; counting them as failed", remaining,
                        self.close_timeout)
            self._producer.purge()
            self._producer.flush(0)  # serves the purge delivery reports (failures)
        with self._lock:
            for stats in self._sessions.values():
                # failed = unsent (never handed over) + handed over but reported failed
                stats.delivered = max(0, stats.produced - (stats.failed - stats.unsent))

    def _close_bridge(self) -> None:
        """Merge the bridge's per (symbol, date) counters into the sessions' stats.

        produced = handed to the bridge (as with confluent-kafka: handed to librdkafka); failed =
        never handed (broker down at the start, bridge died: counted by the sinks) + handed but
        not acknowledged.
        """
        counted: dict[tuple[str, str], dict[str, Any]] = {}
        if self._bridge is not None:
            try:
                counted = self._bridge.close(self.close_timeout)
            except BridgeError as exc:
                log.warning("Kafka bridge failed while flushing (%s); undelivered events count as failed", exc)
                counted = {}
        with self._lock:
            for key, stats in self._sessions.items():
                # the sinks counted: produced = handed to the bridge, failed = never handed
                got = counted.get(key)
                delivered = int(got.get("delivered", 0)) if got else 0  # no report (bridge died): none known
                stats.failed += stats.produced - delivered
                stats.delivered = delivered
                if got and stats.first_error is None and got.get("first_error"):
                    stats.first_error = str(got["first_error"])
                if stats.produced and not got and stats.first_error is None:
                    stats.first_error = "the Kafka bridge gave no delivery report"
                if got and got.get("failed"):
                    log.warning("Kafka: %s %s: %d of %d messages undelivered (%s)", key[0], key[1],
                                stats.failed, stats.produced, stats.first_error)
