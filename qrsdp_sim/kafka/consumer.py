"""``ParquetConsumer``: lands the Kafka event stream in the Parquet lake.

* Consumer group ``parquet-writer``; a batch is flushed at 10,000 records or 5 seconds,
  whichever comes first, and whenever an end-of-session marker arrives.
* Each flushed (partition, symbol, date) group becomes one object
  ``raw/events/symbol=SYM/date=YYYY-MM-DD/events-{partition}-{first_offset}.parquet``
  with the same columns as the embedded landing. Names are deterministic, so a batch
  that is delivered again after a crash overwrites its own object.
* Offsets are committed only after the objects they cover are written. If the lake is
  unreachable the consumer pauses its partitions and retries with exponential backoff
  (committing nothing) until it can write again.
* An end-of-session marker writes the partition's ``_SUCCESS`` once the lake holds every
  seq below the marker's count; the Dagster sensor watches these markers.
* Malformed messages go to the dead-letter topic with the reason and are counted.
* SIGTERM/SIGINT: the partial batch is flushed and committed before exit.
"""

from __future__ import annotations

import logging
import posixpath
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import pyarrow.compute as pc
import pyarrow.dataset as pads
import pyarrow.fs as pafs
import pyarrow.parquet as pq
from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition

from qrsdp_sim.kafka.decode import SessionRows, decode_messages
from qrsdp_sim.kafka.message import DEAD_LETTER_TOPIC, DEFAULT_TOPIC, EndOfSession
from qrsdp_sim.lake.landing import SessionInfo, events_table, sessions_table
from qrsdp_sim.lake.store import MARKER_NAME, Lake, PartitionMarker, utc_now_iso

log = logging.getLogger(__name__)

GROUP_ID = "parquet-writer"


@dataclass
class ConsumerStats:
    messages: int = 0
    records_landed: int = 0
    objects_written: int = 0
    markers_written: int = 0
    incomplete_sessions: int = 0
    dead_lettered: int = 0
    write_retries: int = 0
    commits: int = 0
    completed: list[tuple[str, str]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


class ParquetConsumer:
    def __init__(
        self,
        brokers: str,
        lake: Lake,
        *,
        topic: str = DEFAULT_TOPIC,
        group_id: str = GROUP_ID,
        dead_letter_topic: str = DEAD_LETTER_TOPIC,
        batch_records: int = 10_000,
        batch_seconds: float = 5.0,
        max_backoff: float = 10.0,
        compression: str = "zstd",
    ) -> None:
        self.lake = lake
        self.topic = topic
        self.dead_letter_topic = dead_letter_topic
        self.batch_records = batch_records
        self.batch_seconds = batch_seconds
        self.max_backoff = max_backoff
        self.compression = compression
        self.stats = ConsumerStats()
        self.stop_event = threading.Event()
        self._consumer = Consumer(
            {
                "bootstrap.servers": brokers,
                "group.id": group_id,
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
                "enable.partition.eof": False,
                "max.poll.interval.ms": 600_000,
                # A consumer killed without leaving the group holds its partitions until this
                # runs out; 10 s keeps landing latency after a crash in seconds.
                "session.timeout.ms": 10_000,
                "heartbeat.interval.ms": 2_000,
                "fetch.min.bytes": 65_536,
                "fetch.wait.max.ms": 100,
                "log_level": 3,
            }
        )
        self._dlq = Producer({"bootstrap.servers": brokers, "enable.idempotence": True, "acks": "all",
                              "log_level": 3, "on_delivery": self._on_dlq_delivery})
        self._dlq_errors: list[str] = []
        self._pending: dict[int, list[Any]] = {}  # partition -> messages in offset order
        self._pending_count = 0
        self._batch_started = 0.0
        self._flush_now = False
        self._writers = ThreadPoolExecutor(4, thread_name_prefix="lake-writer")
        self._deferred: list[Any] = []  # returned by poll() while writes were being retried

    # -- lifecycle ---------------------------------------------------------
    def install_signal_handlers(self) -> None:
        """SIGTERM/SIGINT end the loop after the partial batch is flushed and committed."""

        def handler(signum, _frame) -> None:
            log.info("signal %d: flushing and stopping", signum)
            self.stop_event.set()

        signal.signal(signal.SIGTERM, handler)
        signal.signal(signal.SIGINT, handler)

    def run(self, *, idle_exit_seconds: float | None = None) -> ConsumerStats:
        """Consume until stopped (or until nothing arrived for ``idle_exit_seconds``)."""
        self._consumer.subscribe([self.topic], on_revoke=self._on_revoke)
        last_message = time.monotonic()
        try:
            while not self.stop_event.is_set():
                msgs = self._consumer.consume(num_messages=self.batch_records, timeout=0.5)
                now = time.monotonic()
                if msgs:
                    last_message = now
                    self._accept(msgs)
                if self._pending_count and (
                    self._flush_now
                    or self._pending_count >= self.batch_records
                    or now - self._batch_started >= self.batch_seconds
                ):
                    self.flush()
                if idle_exit_seconds is not None and now - last_message >= idle_exit_seconds:
                    break
            self.flush()
        finally:
            self._consumer.close()
            self._dlq.flush(10)
            self._dlq = None  # its delivery callback refers back here: release the client now
            self._writers.shutdown()
        return self.stats

    def _on_revoke(self, _consumer: Consumer, _partitions: list[TopicPartition]) -> None:
        self.flush()

    # -- batching ----------------------------------------------------------
    def _accept(self, msgs: list[Any]) -> None:
        for m in msgs:
            err = m.error()
            if err is not None:
                if err.code() != KafkaError._PARTITION_EOF:
                    log.warning("consumer error: %s", err)
                continue
            if not self._pending_count:
                self._batch_started = time.monotonic()
            self._pending.setdefault(m.partition(), []).append(m)
            self._pending_count += 1
            self.stats.messages += 1
            if not m.value():  # an end-of-session marker: land the session's tail now
                self._flush_now = True

    def flush(self) -> None:
        """Land every pending message, then commit the offsets they cover."""
        if not self._pending_count:
            return
        commits = []
        for partition, msgs in sorted(self._pending.items()):
            self._land_partition_batch(partition, msgs)
            commits.append(TopicPartition(self.topic, partition, msgs[-1].offset() + 1))
        self._pending.clear()
        self._pending_count = 0
        self._flush_now = False
        # Dead-lettered messages must be in the DLQ before their offsets are committed.
        undelivered = self._dlq.flush(30)
        if undelivered or self._dlq_errors:
            raise RuntimeError(
                f"dead-letter topic {self.dead_letter_topic}: {undelivered} undelivered, errors "
                f"{self._dlq_errors[:3]}; offsets not committed (the messages are read again on restart)"
            )
        self._consumer.commit(offsets=commits, asynchronous=False)
        self.stats.commits += 1
        if self._deferred:
            deferred, self._deferred = self._deferred, []
            self._accept(deferred)

    def _land_partition_batch(self, partition: int, msgs: list[Any]) -> None:
        decoded = decode_messages(msgs)
        if len(decoded.sessions) > 1:
            # Objects go to S3 in parallel (pyarrow releases the GIL); all are written before the commit.
            futures = [self._writers.submit(self._write_rows, partition, rows) for rows in decoded.sessions]
            failed = [rows for rows, fut in zip(decoded.sessions, futures, strict=True) if fut.exception()]
            for rows in failed:
                self._with_retry(lambda rows=rows: self._write_rows(partition, rows))
        else:
            for rows in decoded.sessions:
                self._with_retry(lambda rows=rows: self._write_rows(partition, rows))
        for message, reason in decoded.rejected:
            self._dead_letter(message, reason)
        for symbol, day, eos, _offset, session in decoded.markers:
            self._with_retry(lambda s=symbol, d=day, e=eos, i=session: self._complete(s, d, e, i))

    def _write_rows(self, partition: int, rows: SessionRows) -> None:
        table = events_table(rows.records, rows.symbol, rows.date, landed_at=utc_now_iso())
        table = table.set_column(table.schema.get_field_index("seq"), "seq", [rows.seq])
        pdir = self.lake.partition_dir("events", rows.symbol, rows.date)
        self.lake.fs.create_dir(pdir, recursive=True)
        path = posixpath.join(pdir, f"events-{partition}-{rows.first_offset}.parquet")
        pq.write_table(table, path, filesystem=self.lake.fs, compression=self.compression)
        self.stats.objects_written += 1
        self.stats.records_landed += len(rows.records)

    def _complete(self, symbol: str, day, eos: EndOfSession, session: dict | None = None) -> None:
        """Write the partition's _SUCCESS if the lake holds every seq of the session.

        With the marker's session description, the session's ``raw/sessions`` row is
        landed first (what the marts need besides the events).
        """
        pdir = self.lake.partition_dir("events", symbol, day)
        files = [
            i.path for i in self.lake.fs.get_file_info(pafs.FileSelector(pdir, allow_not_found=True))
            if i.type == pafs.FileType.File and i.base_name.endswith(".parquet")
        ]
        distinct = 0
        first_ts = last_ts = None
        if files:
            cols = pads.dataset(files, filesystem=self.lake.fs, format="parquet").to_table(columns=["seq", "ts_ns"])
            seqs = cols["seq"]
            first_ts, last_ts = (v.as_py() for v in pc.min_max(cols["ts_ns"]).values())
            uniq = pc.unique(seqs)
            in_range = pc.and_(pc.greater_equal(uniq, 0), pc.less(uniq, eos.events))
            distinct = int(pc.sum(pc.cast(in_range, "int64")).as_py() or 0)
        if distinct != eos.events:
            self.stats.incomplete_sessions += 1
            log.warning(
                "%s %s: end of session says %d events but the lake holds %d distinct seqs; not marking complete "
                "(republish the session from its .qrsdp file)", symbol, day, eos.events, distinct,
            )
            return
        if session is not None:
            info = SessionInfo(
                symbol=symbol, date=day, seed=int(session["seed"]), open_ticks=int(session["open_ticks"]),
                close_ticks=int(eos.close_ticks), tick_size=int(session["tick_size"]),
                market_open_ns=int(session["market_open_ns"]), session_seconds=int(session["session_seconds"]),
                events=eos.events, first_ts_ns=first_ts, last_ts_ns=last_ts, source=f"kafka:{self.topic}",
            )
            self.lake.write_partition("sessions", symbol, day, sessions_table(info),
                                      marker_extra={"source": "kafka"})
        marker = PartitionMarker(
            table="events", symbol=symbol, date=day, rows=eos.events,
            files=tuple(sorted(posixpath.basename(f) for f in files)), landed_at=utc_now_iso(),
            extra={"source": "kafka", "close_ticks": eos.close_ticks},
        )
        with self.lake.fs.open_output_stream(posixpath.join(pdir, MARKER_NAME)) as out:
            out.write(marker.to_json().encode())
        self.stats.markers_written += 1
        self.stats.completed.append((symbol, day.isoformat()))

    def _with_retry(self, action) -> None:
        """Run a lake write until it succeeds, pausing consumption meanwhile (never skipping)."""
        delay = 0.25
        paused = False
        while True:
            try:
                action()
                break
            except OSError as exc:
                self.stats.write_retries += 1
                log.warning("lake write failed (%s); retrying in %.1f s", exc, delay)
                if not paused:
                    assignment = self._consumer.assignment()
                    if assignment:
                        self._consumer.pause(assignment)
                    paused = True
                deadline = time.monotonic() + delay
                while time.monotonic() < deadline:
                    # Keeps group membership alive; partitions are paused, but keep anything returned.
                    m = self._consumer.poll(0.1)
                    if m is not None:
                        self._deferred.append(m)
                delay = min(delay * 2, self.max_backoff)
        if paused:
            assignment = self._consumer.assignment()
            if assignment:
                self._consumer.resume(assignment)

    def _on_dlq_delivery(self, err: KafkaError | None, _msg: Any) -> None:
        if err is not None:
            self._dlq_errors.append(str(err))

    def _dead_letter(self, message: Any, reason: str) -> None:
        headers = list(message.headers() or ())
        headers += [
            ("dlq_reason", reason.encode()),
            ("dlq_source", f"{message.topic()}/{message.partition()}/{message.offset()}".encode()),
        ]
        self._dlq.produce(self.dead_letter_topic, message.value(), message.key(), headers=headers)
        self._dlq.poll(0)
        self.stats.dead_lettered += 1
        n = self.stats.dead_lettered
        if n <= 10 or n & (n - 1) == 0:  # the first ten, then every power of two: never a log flood
            log.warning("dead-lettered %s/%d@%d (%d so far): %s", message.topic(), message.partition(),
                        message.offset(), n, reason)
