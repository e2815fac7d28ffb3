"""Kafka access for the ITCH streamer: confluent-kafka in Python, or the native bridge.

``PythonKafkaSource`` (confluent-kafka, one Python ``Message`` per Kafka message) and
``BridgeKafkaSource`` (``qrsdp-kafka-bridge`` in assign mode, a stock's consecutive events as one
numpy :class:`~qrsdp_sim.kafka.bridge.Run`) offer the streamer the same operations: the topic's
``partitions()``, the group's ``committed()`` offsets with their metadata (the feed state), a
partition's ``low()`` watermark, ``assign()`` to positions, ``commit()`` of offsets with metadata,
``fetch()`` of the next batch, ``read_batch()``: the exact re-read of an in-flight batch (same
messages, same order) after a restart, and ``close()``; the bridge also has ``prefetch()`` (read
ahead while the encoder loads). ``items`` tells which processing path the fetched batches take
(``Streamer._process`` or ``Streamer._process_items``).
"""

from __future__ import annotations

import collections
import contextlib
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, TopicPartition

from qrsdp_sim.kafka.bridge import BridgeConsumer, BridgeError, BridgeRequestError, Event, RawMessage, Run

if TYPE_CHECKING:
    from qrsdp_sim.itch.streamer import StreamerConfig

log = logging.getLogger(__name__)

Segments = list[tuple[int, int]]  # (partition, messages) in send order


def run_slice(run: Run, lo: int, hi: int | None = None) -> Run:
    """Messages ``lo:hi`` of a run (offsets and seqs move with them; the records stay a view)."""
    hi = len(run.records) if hi is None else hi
    return Run(run.partition, run.first_offset + lo, run.first_seq + lo, run.key, run.date, run.run_id,
               run.records[lo:hi])


def _item_count(item: Run | RawMessage) -> int:
    return len(item.records) if isinstance(item, Run) else 1


class PythonKafkaSource:
    """confluent-kafka: one Python ``Message`` per Kafka message (``Streamer._process``)."""

    name = "python"
    items = False

    _TRANSIENT = frozenset({
        KafkaError.NOT_COORDINATOR, KafkaError.COORDINATOR_LOAD_IN_PROGRESS, KafkaError.COORDINATOR_NOT_AVAILABLE,
        KafkaError._TIMED_OUT, KafkaError.REQUEST_TIMED_OUT, KafkaError._TRANSPORT, KafkaError._WAIT_COORD,
    })  # fmt: skip

    def __init__(self, cfg: StreamerConfig, consumer: Consumer | None = None) -> None:
        self.cfg = cfg
        if consumer is None:
            conf: dict[str, Any] = {
                "bootstrap.servers": cfg.brokers,
                "group.id": cfg.group_id,
                "enable.auto.commit": False,
                "enable.auto.offset.store": False,
                "auto.offset.reset": "earliest",
                "fetch.max.bytes": 104_857_600,
                "max.partition.fetch.bytes": 52_428_800,
                "queued.max.messages.kbytes": 1_048_576,
                "fetch.wait.max.ms": 10,
                "socket.connection.setup.timeout.ms": 5_000,
                "log_level": 3,
            }
            conf.update(cfg.kafka_overrides)
            consumer = Consumer(conf)
        self.consumer = consumer

    def _call(self, what: str, fn: Callable[[], Any], timeout: float = 60.0) -> Any:
        """Call ``fn`` until it succeeds, retrying transient coordinator/broker errors for ``timeout`` s."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                return fn()
            except KafkaException as exc:
                err = exc.args[0] if exc.args and isinstance(exc.args[0], KafkaError) else None
                transient = err is not None and (err.retriable() or err.code() in self._TRANSIENT)
                if not transient or time.monotonic() > deadline:
                    raise RuntimeError(f"Kafka {what} failed: {exc}") from exc
                log.warning("itch-stream: Kafka %s: %s (retrying)", what, exc)
                time.sleep(0.5)

    def partitions(self) -> list[int]:
        topic = self.cfg.topic
        md = self._call("metadata", lambda: self.consumer.list_topics(topic, timeout=15))
        t = md.topics.get(topic)
        if t is None or t.error is not None or not t.partitions:
            raise RuntimeError(f"topic {topic!r} not found on {self.cfg.brokers} ({t and t.error})")
        return sorted(t.partitions)

    def committed(self, partitions: list[int]) -> dict[int, tuple[int, str]]:
        tps = [TopicPartition(self.cfg.topic, p) for p in partitions]
        got = self._call("committed offsets", lambda: self.consumer.committed(tps, timeout=15))
        return {tp.partition: (tp.offset, tp.metadata or "") for tp in got if tp.offset >= 0}

    def low(self, p: int) -> int:
        tp = TopicPartition(self.cfg.topic, p)
        low, _high = self._call("watermarks", lambda: self.consumer.get_watermark_offsets(tp, timeout=15))
        return max(low, 0) if low != OFFSET_BEGINNING else 0

    def assign(self, offsets: dict[int, int]) -> None:
        self.consumer.assign([TopicPartition(self.cfg.topic, p, o) for p, o in offsets.items()])

    def commit(self, offsets: dict[int, int], metadata: dict[int, str]) -> None:
        tps = [TopicPartition(self.cfg.topic, p, o, metadata[p]) for p, o in offsets.items()]
        self._call("commit", lambda: self.consumer.commit(offsets=tps, asynchronous=False))

    def fetch(self, budget: int, timeout: float) -> list:
        return self.consumer.consume(budget, timeout)

    def read_batch(self, start: dict[int, int], segments: Segments) -> list:
        """The messages of an in-flight batch (from ``start``), in its send order."""
        need: dict[int, int] = {}
        for p, n in segments:
            need[p] = need.get(p, 0) + n
        got: dict[int, list] = {p: [] for p in need}
        deadline = time.monotonic() + 60
        while any(len(got[p]) < need[p] for p in need):
            if time.monotonic() > deadline:
                raise RuntimeError("could not re-read the in-flight batch from Kafka within 60 s")
            for msg in self.consumer.consume(self.cfg.batch, 0.5):
                if msg.error() is not None:
                    continue
                p = msg.partition()
                if p in got and len(got[p]) < need[p] and msg.offset() >= start[p] + len(got[p]):
                    got[p].append(msg)
        ordered = []
        taken = dict.fromkeys(need, 0)
        for p, n in segments:
            ordered.extend(got[p][taken[p] : taken[p] + n])
            taken[p] += n
        return ordered

    def close(self) -> None:
        with contextlib.suppress(KafkaException, RuntimeError):
            self.consumer.close()


class BridgeKafkaSource:
    """``qrsdp-kafka-bridge`` in assign mode: a stock's consecutive events come as one numpy
    :class:`~qrsdp_sim.kafka.bridge.Run`, other messages as :class:`RawMessage` (``Streamer._process_items``)."""

    name = "bridge"
    items = True

    def __init__(self, cfg: StreamerConfig, consumer: BridgeConsumer | None = None) -> None:
        self.cfg = cfg
        self.consumer = consumer or BridgeConsumer(cfg.brokers, cfg.topic, cfg.group_id, mode="assign")
        self._carry: collections.deque[Run | RawMessage] = collections.deque()  # fetched, not yet batched
        self._low: dict[int, int] = {}

    def _call(self, what: str, fn: Callable[[], Any], timeout: float = 60.0) -> Any:
        """Call ``fn`` until it succeeds, retrying refused requests (coordinator moving, broker
        restarting) for ``timeout`` s; a bridge that died fails at once."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                return fn()
            except BridgeRequestError as exc:
                if time.monotonic() > deadline or "UNKNOWN_TOPIC" in str(exc) or "not found" in str(exc):
                    raise RuntimeError(f"Kafka {what} failed: {exc}") from exc
                log.warning("itch-stream: Kafka %s: %s (retrying)", what, exc)
                time.sleep(0.5)

    def partitions(self) -> list[int]:
        try:
            info = self._call("metadata", self.consumer.partitions)
        except RuntimeError as exc:
            if "UNKNOWN_TOPIC" in str(exc) or "not found" in str(exc):
                raise RuntimeError(f"topic {self.cfg.topic!r} not found on {self.cfg.brokers} ({exc.__cause__})") from exc
            raise
        if not info:
            raise RuntimeError(f"topic {self.cfg.topic!r} not found on {self.cfg.brokers}")
        self._low = {p: low for p, (low, _high) in info.items()}
        return sorted(info)

    def committed(self, partitions: list[int]) -> dict[int, tuple[int, str]]:
        got = self._call("committed offsets", self.consumer.committed)
        return {p: v for p, v in got.items() if p in partitions and v[0] >= 0}

    def low(self, p: int) -> int:
        return max(self._low.get(p, 0), 0)

    def assign(self, offsets: dict[int, int]) -> None:
        self._call("assign", lambda: self.consumer.assign(offsets))
        self._carry.clear()  # the bridge drops what it held of the old positions; so do we

    def commit(self, offsets: dict[int, int], metadata: dict[int, str]) -> None:
        self._call("commit", lambda: self.consumer.commit(offsets, metadata))

    def _next(self, timeout: float) -> Run | RawMessage | None:
        if self._carry:
            return self._carry.popleft()
        deadline = time.monotonic() + timeout
        while True:
            item = self.consumer.poll(max(0.0, deadline - time.monotonic()))
            if item is None or not isinstance(item, Event):
                return item
            # assign mode: the only unasked events are errors, logged by BridgeConsumer

    def fetch(self, budget: int, timeout: float) -> list[Run | RawMessage]:
        """Up to ``budget`` messages (a run longer than what is left is split, its tail kept for the
        next batch): waits up to ``timeout`` s for the first, then takes what has arrived."""
        out: list[Run | RawMessage] = []
        n = 0
        while n < budget:
            item = self._next(0.0 if out else timeout)
            if item is None:
                break
            k = _item_count(item)
            if n + k > budget:
                self._carry.appendleft(run_slice(item, budget - n))
                item = run_slice(item, 0, budget - n)
                k = budget - n
            out.append(item)
            n += k
        return out

    def prefetch(self, limit: int, timeout: float) -> None:
        """Take what the bridge has sent, up to ``limit`` messages held, waiting at most ``timeout`` s for
        more: the bridge goes on fetching and converting meanwhile instead of blocking on its stdout."""
        held = sum(_item_count(i) for i in self._carry)
        deadline = time.monotonic() + timeout
        while held < limit:
            item = self.consumer.poll(max(0.0, deadline - time.monotonic()))
            if item is None:
                return
            if not isinstance(item, Event):
                self._carry.append(item)
                held += _item_count(item)

    def read_batch(self, start: dict[int, int], segments: Segments) -> list[Run | RawMessage]:
        """The messages of an in-flight batch (from ``start``) in its send order, runs sliced to the
        segments' message counts."""
        need: dict[int, int] = {}
        for p, n in segments:
            need[p] = need.get(p, 0) + n
        got: dict[int, collections.deque[Run | RawMessage]] = {p: collections.deque() for p in need}
        have = dict.fromkeys(need, 0)
        pos = {p: start[p] for p in need}  # next offset wanted
        deadline = time.monotonic() + 60
        while any(have[p] < need[p] for p in need):
            if time.monotonic() > deadline:
                raise RuntimeError("could not re-read the in-flight batch from Kafka within 60 s")
            item = self._next(0.5)
            if item is None:
                continue
            if isinstance(item, Run):
                p, first = item.partition, item.first_offset
            else:
                p, first = item.partition(), item.offset()
            if p not in need or have[p] >= need[p]:
                continue
            k = _item_count(item)
            if first + k <= pos[p]:
                continue  # before the batch (a stale fetch)
            if first < pos[p]:
                item = run_slice(item, pos[p] - first)  # a raw message never gets here (k == 1)
                first, k = pos[p], k - (pos[p] - first)
            if k > need[p] - have[p]:
                item = run_slice(item, 0, need[p] - have[p])
                k = need[p] - have[p]
            got[p].append(item)
            have[p] += k
            pos[p] = first + k
        ordered: list[Run | RawMessage] = []
        for p, n in segments:
            queue = got[p]
            while n > 0:
                item = queue.popleft()
                k = _item_count(item)
                if k > n:
                    queue.appendleft(run_slice(item, n))
                    item, k = run_slice(item, 0, n), n
                ordered.append(item)
                n -= k
        return ordered

    def close(self) -> None:
        with contextlib.suppress(BridgeError):
            self.consumer.close()
