"""``KafkaPublisher``: one producer per run, one ``KafkaSink`` per session.

Sharing a producer across a run's sessions means one connection and one final flush
with a bounded wait -- a broker that is down costs the run ``close_timeout`` seconds
once, not once per session. Failures are attributed to their session through the
failed message's key and ``date`` header, so the manifest can list per-session totals.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Producer
from confluent_kafka.admin import AdminClient

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
        **config_overrides: object,
    ) -> None:
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

    def open_session(self, symbol: str, date: dt.date, run_id: str) -> KafkaSink:
        day = date.isoformat()
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

    def end_session(self, sink: KafkaSink, session: dict[str, Any]) -> None:
        sink.end_of_session(sink.records_sent, int(session["close_ticks"]), session)
        self._producer.poll(0)

    def close(self) -> dict[str, Any]:
        """Flush (bounded), count what is left as failed, and return the delivery totals.

        Idempotent. Releases the producer (its delivery callback refers back to this object, so
        without that the librdkafka client would live on until a garbage-collection pass).
        """
        if self._totals is not None:
            return self._totals
        remaining = self._producer.flush(self.close_timeout)
        if remaining:
            log.warning("Kafka: %d messages undelivered after %.0f s; counting them as failed", remaining,
                        self.close_timeout)
            self._producer.purge()
            self._producer.flush(0)  # serves the purge delivery reports (failures)
        with self._lock:
            for stats in self._sessions.values():
                stats.delivered = max(0, stats.produced - stats.failed)
            sessions = {f"{s}/{d}": st.to_dict() for (s, d), st in sorted(self._sessions.items())}
            totals = {
                "produced": sum(st.produced for st in self._sessions.values()),
                "delivered": sum(st.delivered for st in self._sessions.values()),
                "failed": sum(st.failed for st in self._sessions.values()),
            }
        self._totals = {"brokers": self.brokers, "topic": self.topic, "broker_down_at_start": self.down_reason,
                        **totals, "sessions": sessions}
        self._producer = None
        return self._totals
