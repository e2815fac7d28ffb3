"""Kafka access for the ITCH streamer: confluent-kafka in Python, or the native bridge.

``PythonKafkaSource`` (confluent-kafka, one Python ``Message`` per Kafka message) and
``BridgeKafkaSource`` (``qrsdp-kafka-bridge`` in assign mode, a stock's consecutive events as one
numpy :class:`~qrsdp_sim.kafka.bridge.Run`) offer the streamer the same operations: the topic's
``partitions()``, the group's ``committed()`` offsets with their metadata (the feed state), a
partition's ``low()`` watermark, ``assign()`` to positions, ``commit()`` of offsets with metadata,
``fetch()`` of the next batch, ``read_range()``: every message between two positions of each
partition (what a restarted streamer re-reads), and ``close()``; the bridge also has ``prefetch()``
(read ahead while the encoder loads).

Both hand the streamer the same items: a :class:`~qrsdp_sim.kafka.bridge.Run` for consecutive events
of one stock and date (confluent-kafka's messages are grouped into runs here, the bridge makes them
itself), and single messages (``RawMessage`` or confluent-kafka's ``Message``, same accessors) for
everything else: end-of-session markers and anything malformed.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, TopicPartition

from qrsdp_sim.itch.streamer_config import StreamerConfig
from qrsdp_sim.kafka.bridge import BridgeConsumer, BridgeError, BridgeRequestError, Event, Run
from qrsdp_sim.kafka.message import H_DATE, H_RUN_ID, H_SEQ
from qrsdp_sim.records import RECORD_DTYPE, RECORD_SIZE

log = logging.getLogger(__name__)

Item = Run | Any  # a run, or a single message with confluent-kafka's accessors


def run_slice(run: Run, lo: int, hi: int | None = None) -> Run:
    """Messages ``lo:hi`` of a run (offsets and seqs move with them; the records stay a view)."""
    hi = len(run.records) if hi is None else hi
    return Run(run.partition, run.first_offset + lo, run.first_seq + lo, run.key, run.date, run.run_id,
               run.records[lo:hi])


def _item_count(item: Item) -> int:
    return len(item.records) if isinstance(item, Run) else 1


def _item_position(item: Item) -> tuple[int, int]:
    """(partition, first offset)."""
    return (item.partition, item.first_offset) if isinstance(item, Run) else (item.partition(), item.offset())


def _run_headers(msg: Any) -> tuple[bytes, int, bytes] | None:
    """(date, seq, run_id) of an event message whose headers a run needs, else None."""
    value = msg.value()
    if value is None or len(value) != RECORD_SIZE or msg.key() is None or msg.error() is not None:
        return None
    h = dict(msg.headers() or ())
    date, seq, run_id = h.get(H_DATE), h.get(H_SEQ), h.get(H_RUN_ID)
    if not isinstance(date, bytes) or not isinstance(seq, bytes) or len(seq) != 8:
        return None
    return date, int.from_bytes(seq, "big"), run_id if isinstance(run_id, bytes) else b""


def group_runs(msgs: list) -> list[Item]:
    """confluent-kafka messages -> runs (as the bridge makes them: same partition, key, date and run id,
    consecutive offsets and seqs) and single messages for the rest."""
    out: list[Item] = []
    n = len(msgs)
    i = 0
    while i < n:
        msg = msgs[i]
        first = _run_headers(msg)
        if first is None:
            out.append(msg)
            i += 1
            continue
        date, seq0, run_id = first
        p, off, key = msg.partition(), msg.offset(), msg.key()
        j = i + 1
        while j < n:
            m2 = msgs[j]
            h = _run_headers(m2)
            if (h is None or h[0] != date or h[1] != seq0 + (j - i) or h[2] != run_id or m2.key() != key
                    or m2.partition() != p or m2.offset() != off + (j - i)):
                break
            j += 1
        records = np.frombuffer(b"".join([m.value() for m in msgs[i:j]]), dtype=RECORD_DTYPE)
        out.append(Run(p, off, seq0, key, date, run_id, records))
        i = j
    return out


def cut_to_range(item: Item, start: dict[int, int], end: dict[int, int]) -> Item | None:
    """The part of ``item`` inside [start, end) of its partition, or None."""
    p, first = _item_position(item)
    if p not in end:
        return None
    k = _item_count(item)
    lo, hi = max(first, start.get(p, 0)), min(first + k, end[p])
    if lo >= hi:
        return None
    if lo == first and hi == first + k:
        return item
    return run_slice(item, lo - first, hi - first)  # a single message is never cut (k == 1)


class _Source:
    """What both clients share: the re-read of a range, on top of their ``assign`` and ``fetch``."""

    cfg: StreamerConfig

    def assign(self, offsets: dict[int, int]) -> None:
        raise NotImplementedError

    def fetch(self, budget: int, timeout: float) -> list[Item]:
        raise NotImplementedError

    def commit(self, offsets: dict[int, int], metadata: dict[int, str]) -> None:
        raise NotImplementedError

    def commit_start(self, offsets: dict[int, int], metadata: dict[int, str]) -> Callable[[], None]:
        """Start a commit; the returned function returns once it is confirmed (raises when it failed for
        good). Here: the commit is made synchronously now."""
        self.commit(offsets, metadata)
        return lambda: None

    def read_range(self, start: dict[int, int], end: dict[int, int], timeout: float = 120.0) -> Iterator[list[Item]]:
        """Every message in [start[p], end[p]) of each partition, in batches (each partition in order).
        Leaves the client positioned somewhere past the range: the caller assigns afterwards."""
        end = {p: e for p, e in end.items() if e > start.get(p, 0)}
        if not end:
            return
        pos = {p: start.get(p, 0) for p in end}
        self.assign(dict(pos))
        deadline = time.monotonic() + timeout
        while any(pos[p] < end[p] for p in end):
            if time.monotonic() > deadline:
                raise RuntimeError(f"could not re-read Kafka up to offsets {end} within {timeout:.0f} s (at {pos})")
            batch = []
            for item in self.fetch(self.cfg.batch, 0.5):
                p, first = _item_position(item)
                if p in end and first >= end[p]:
                    pos[p] = end[p]  # past the range (what lay before it is gone from Kafka)
                    continue
                got = cut_to_range(item, pos, end)
                if got is not None:
                    p, first = _item_position(got)
                    pos[p] = first + _item_count(got)
                    batch.append(got)
            if batch:
                yield batch


class PythonKafkaSource(_Source):
    """confluent-kafka: one Python ``Message`` per Kafka message, grouped into runs here."""

    name = "python"

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

    def fetch(self, budget: int, timeout: float) -> list[Item]:
        return group_runs(self.consumer.consume(budget, timeout))

    def close(self) -> None:
        with contextlib.suppress(KafkaException, RuntimeError):
            self.consumer.close()


class BridgeKafkaSource(_Source):
    """``qrsdp-kafka-bridge`` in assign mode: a stock's consecutive events come as one numpy
    :class:`~qrsdp_sim.kafka.bridge.Run`, other messages as :class:`RawMessage`."""

    name = "bridge"

    def __init__(self, cfg: StreamerConfig, consumer: BridgeConsumer | None = None) -> None:
        self.cfg = cfg
        self.consumer = consumer or BridgeConsumer(cfg.brokers, cfg.topic, cfg.group_id, mode="assign")
        self._carry: collections.deque[Item] = collections.deque()  # fetched, not yet batched
        self._carried = 0  # messages in _carry
        self._low: dict[int, int] = {}

    def _call(self, what: str, fn: Callable[[], Any], timeout: float = 60.0, *, topic_known: bool = True) -> Any:
        """Call ``fn`` until it succeeds, retrying refused requests (coordinator moving, broker
        restarting) for ``timeout`` s; a bridge that died fails at once. Once the topic is known
        (``topic_known``: every request after the metadata), "unknown topic or partition" is a broker
        still loading its partitions after a restart and is retried too (the chaos soak found the
        streamer exiting on it); only the metadata request takes it as "no such topic"."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                return fn()
            except BridgeRequestError as exc:
                missing = "UNKNOWN_TOPIC" in str(exc) or "not found" in str(exc)
                if time.monotonic() > deadline or (missing and not topic_known):
                    raise RuntimeError(f"Kafka {what} failed: {exc}") from exc
                log.warning("itch-stream: Kafka %s: %s (retrying)", what, exc)
                time.sleep(0.5)

    def partitions(self) -> list[int]:
        try:
            info = self._call("metadata", self.consumer.partitions, topic_known=False)
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
        self._carried = 0

    def commit(self, offsets: dict[int, int], metadata: dict[int, str]) -> None:
        self._call("commit", lambda: self.consumer.commit(offsets, metadata))

    def commit_start(self, offsets: dict[int, int], metadata: dict[int, str]) -> Callable[[], None]:
        """Send the commit now; the returned function waits for the broker's answer. A refused commit
        is made again synchronously, with the retries of :meth:`commit`."""
        try:
            wait = self.consumer.commit_start(offsets, metadata)
        except BridgeRequestError:
            return lambda: self.commit(offsets, metadata)

        def confirm() -> None:
            try:
                wait()
            except BridgeRequestError as exc:
                log.warning("itch-stream: Kafka commit: %s (retrying)", exc)
                self.commit(offsets, metadata)

        return confirm

    def _next(self, timeout: float) -> Item | None:
        if self._carry:
            item = self._carry.popleft()
            self._carried -= _item_count(item)
            return item
        deadline = time.monotonic() + timeout
        while True:
            item = self.consumer.poll(max(0.0, deadline - time.monotonic()))
            if item is None or not isinstance(item, Event):
                return item
            # assign mode: the only unasked events are errors, logged by BridgeConsumer

    def fetch(self, budget: int, timeout: float) -> list[Item]:
        """Up to ``budget`` messages (a run longer than what is left is split, its tail kept for the
        next batch): waits up to ``timeout`` s for the first, then takes what has arrived."""
        out: list[Item] = []
        n = 0
        while n < budget:
            item = self._next(0.0 if out else timeout)
            if item is None:
                break
            k = _item_count(item)
            if n + k > budget:
                self._carry.appendleft(run_slice(item, budget - n))
                self._carried += k - (budget - n)
                item = run_slice(item, 0, budget - n)
                k = budget - n
            out.append(item)
            n += k
        return out

    def prefetch(self, limit: int, timeout: float) -> bool:
        """Take what the bridge has sent, up to ``limit`` messages held, waiting at most ``timeout`` s for
        more: the bridge goes on fetching and converting meanwhile instead of blocking on its stdout.
        False when ``limit`` messages are held already (nothing was read)."""
        if self._carried >= limit:
            return False
        deadline = time.monotonic() + timeout
        while self._carried < limit:
            item = self.consumer.poll(max(0.0, deadline - time.monotonic()))
            if item is None:
                break
            if not isinstance(item, Event):
                self._carry.append(item)
                self._carried += _item_count(item)
        return True

    def close(self) -> None:
        with contextlib.suppress(BridgeError):
            self.consumer.close()
