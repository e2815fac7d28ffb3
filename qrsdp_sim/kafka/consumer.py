"""``ParquetConsumer``: lands the Kafka event stream in the Parquet lake.

* Consumer group ``parquet-writer``. Kafka client: ``qrsdp-kafka-bridge`` in subscribe mode when it
  is built (runs of records arrive as numpy arrays, no Python per message), else confluent-kafka;
  ``QRSDP_KAFKA_CLIENT=auto|bridge|python`` chooses (:mod:`qrsdp_sim.kafka.client`).
* Batching per Kafka partition: a partition's pending records are landed once they reach an
  offset that is a multiple of ``batch_records`` (10,000), when the oldest of them has waited
  ``batch_seconds`` (5 s), when an end-of-session marker arrives, on revocation and at the end.
  An object never crosses a multiple of ``batch_records``, so it holds at most 10,000 records.
* Each landed chunk's (partition, symbol, date) group becomes one object
  ``raw/events/symbol=SYM/date=YYYY-MM-DD/events-{partition}-{first_offset}.parquet``
  with the same columns as the embedded landing. Names are deterministic, and chunk boundaries
  fall on the same multiples of ``batch_records`` whatever the timing, so records delivered again
  after a crash (from the last commit, itself a chunk boundary) overwrite their own objects.
* Objects are encoded to memory (``pq.write_table``) and PUT in one request each, several in
  parallel (pyarrow releases the GIL). Offsets are committed only after every object below them
  is written (and every dead-lettered message below them is confirmed by the dead-letter topic).
  If the lake is unreachable the consumer stops taking messages (the bridge: its output is not
  read, which stops its fetching while its heartbeats go on; confluent-kafka: partitions paused)
  and retries with exponential backoff, committing nothing, until it can write again.
* An end-of-session marker writes the partition's ``_SUCCESS`` once the lake holds every seq
  below the marker's count (after the objects before it are written); the Dagster sensor watches
  these markers.
* Malformed messages go to the dead-letter topic with the reason and are counted.
* Revoked partitions are landed and committed before the rebalance goes on; SIGTERM/SIGINT: the
  pending records are landed and committed before exit.
"""

from __future__ import annotations

import collections
import concurrent.futures as cf
import itertools
import logging
import posixpath
import signal
import threading
import time
from bisect import bisect_left
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import pyarrow.fs as pafs
import pyarrow.parquet as pq
from confluent_kafka import KafkaError, KafkaException, Producer

from qrsdp_sim.kafka.bridge import BridgeRequestError, Run
from qrsdp_sim.kafka.client import use_bridge
from qrsdp_sim.kafka.consumer_sources import BridgeSource, ConfluentSource
from qrsdp_sim.kafka.decode import SessionRows, decode_items
from qrsdp_sim.kafka.message import DEAD_LETTER_TOPIC, DEFAULT_TOPIC, EndOfSession
from qrsdp_sim.lake.landing import SessionInfo, events_table, sessions_table
from qrsdp_sim.lake.store import MARKER_NAME, Lake, PartitionMarker, utc_now_iso

log = logging.getLogger(__name__)

GROUP_ID = "parquet-writer"
# Dictionary-encode only the low-cardinality columns: trying a dictionary on ts_ns, seq, order_id,
# price and qty and falling back costs half the encoding time and makes the objects larger.
DICTIONARY_COLUMNS = ["symbol", "date", "type", "side", "_landed_at"]


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
    client: str = ""

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


# ------------------------------------------------------------------------------------------
# landing state
# ------------------------------------------------------------------------------------------


class _Job:
    """One lake write: an object (``rows``) or a landing's completion markers (``rows`` None, with
    ``known``: what this consumer wrote of those sessions, object name -> :class:`_Written`)."""

    __slots__ = ("future", "known", "landing", "rows")

    def __init__(self, landing: _Landing, rows: SessionRows | None,
                 known: dict[tuple[str, Any], dict[str, _Written]] | None = None) -> None:
        self.landing = landing
        self.rows = rows
        self.known = known
        self.future: cf.Future | None = None


class _Landing:
    """One chunk of a partition (offsets below ``end``): its objects, then its markers."""

    __slots__ = ("completion", "end", "markers", "partition", "unwritten")

    def __init__(self, partition: int, end: int, markers: list) -> None:
        self.partition = partition
        self.end = end
        self.markers = markers
        self.unwritten = 0  # object writes not yet succeeded
        self.completion: _Job | None = None  # the markers' job, once every earlier write is done


class _Partition:
    """Pending items of one assigned partition (offset order) and its landings in flight."""

    __slots__ = ("committed", "count", "done_through", "end", "entries", "flush_now", "landings", "since",
                 "start", "starts")

    def __init__(self) -> None:
        self.entries: list[Any] = []  # Run, RawMessage or confluent Message
        self.starts: list[int] = []  # first offset of each entry
        self.count = 0  # pending messages
        self.start = 0  # first pending offset
        self.end = 0  # next offset after the pending ones
        self.since = 0.0  # when the oldest pending message arrived
        self.flush_now = False  # an end-of-session marker is pending
        self.landings: collections.deque[_Landing] = collections.deque()
        self.done_through: int | None = None  # every offset below is landed
        self.committed: int | None = None


class _Written:
    """What this consumer wrote into one object: byte size, rows, seqs as intervals (or the seqs
    themselves when they are scattered) and the ts_ns range -- what completion checks need."""

    __slots__ = ("rows", "seq", "size", "spans", "ts_max", "ts_min")

    def __init__(self, rows: SessionRows, size: int) -> None:
        self.size = size
        self.rows = len(rows.records)
        seq = rows.seq
        breaks = np.flatnonzero(np.diff(seq) != 1) + 1
        if len(breaks) <= 64:
            edges = [0, *breaks.tolist(), len(seq)]
            self.spans = [(int(seq[a]), int(seq[b - 1])) for a, b in itertools.pairwise(edges) if b > a]
            self.seq = None
        else:
            self.spans = []
            self.seq = np.array(seq, dtype=np.int64)
        ts = rows.records["ts_ns"]
        self.ts_min = int(ts.min()) if len(ts) else None
        self.ts_max = int(ts.max()) if len(ts) else None


def _entry_end(entry: Any) -> int:
    return entry.next_offset if isinstance(entry, Run) else entry.offset() + 1


def _split_run(run: Run, at: int) -> tuple[Run, Run]:
    k = at - run.first_offset
    head = Run(run.partition, run.first_offset, run.first_seq, run.key, run.date, run.run_id, run.records[:k])
    tail = Run(run.partition, at, run.first_seq + k, run.key, run.date, run.run_id, run.records[k:])
    return head, tail


def _s3_put_filesystem(lake: Lake) -> pafs.FileSystem:
    """For an S3 lake, a filesystem whose output streams open lazily: an object written at once
    is one PutObject instead of a multipart upload (3 requests), about 2.5x the objects per second."""
    if lake.is_local or lake.s3 is None:
        return lake.fs
    o = lake.s3
    return pafs.S3FileSystem(access_key=o.access_key, secret_key=o.secret_key, region=o.region,
                             endpoint_override=o.host, scheme=o.scheme, allow_delayed_open=True)


# ------------------------------------------------------------------------------------------
# the consumer
# ------------------------------------------------------------------------------------------


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
        client: str | None = None,
        writers: int = 6,
        commit_interval: float = 0.1,
    ) -> None:
        """``client``: ``"bridge"``, ``"python"`` or None (``QRSDP_KAFKA_CLIENT``; by default the bridge
        when it is built). ``writers``: lake writes in parallel (up to twice as many queued before the
        consumer stops taking messages). ``commit_interval``: at most this often while writes are in
        flight (at once when none are); a crash re-lands at most that much."""
        if batch_records < 1 or batch_seconds <= 0 or writers < 1:
            raise ValueError("batch_records and writers must be >= 1 and batch_seconds > 0")
        if client not in (None, "bridge", "python"):
            raise ValueError(f"client must be 'bridge', 'python' or None, not {client!r}")
        self.lake = lake
        self.topic = topic
        self.dead_letter_topic = dead_letter_topic
        self.batch_records = batch_records
        self.batch_seconds = batch_seconds
        self.max_backoff = max_backoff
        self.compression = compression
        self.commit_interval = min(commit_interval, batch_seconds)
        self.stats = ConsumerStats()
        self.stop_event = threading.Event()
        bridge = use_bridge() if client is None else client == "bridge"
        if bridge:
            self._source: BridgeSource | ConfluentSource = BridgeSource(brokers, topic, group_id, self._on_revoke)
        else:
            self._source = ConfluentSource(brokers, topic, group_id, self._on_revoke, batch_records)
        self.stats.client = self._source.name
        self._dlq = Producer({"bootstrap.servers": brokers, "enable.idempotence": True, "acks": "all",
                              "log_level": 3, "on_delivery": self._on_dlq_delivery})
        self._dlq_errors: list[str] = []
        self._dlq_unflushed = 0
        self._put_fs = _s3_put_filesystem(lake)
        self._local_dirs: set[str] = set()
        self._writers = cf.ThreadPoolExecutor(writers, thread_name_prefix="lake-writer")
        self._max_in_flight = 2 * writers
        self._parts: dict[int, _Partition] = {}
        # (partition, symbol, date) -> object name -> what this consumer wrote there (until completed)
        self._known: dict[tuple[int, str, Any], dict[str, _Written]] = {}
        self._in_flight: dict[cf.Future, _Job] = {}
        self._failed: list[_Job] = []  # writes to retry once the backoff has passed
        self._delay = 0.25
        self._last_commit = time.monotonic()
        self._in_callback = False
        # time.monotonic() of the first message and of the last commit (benchmarks)
        self.first_item_at: float | None = None
        self.last_commit_at: float | None = None

    # -- lifecycle ---------------------------------------------------------
    def install_signal_handlers(self) -> None:
        """SIGTERM/SIGINT end the loop after the pending records are landed and committed."""

        def handler(signum, _frame) -> None:
            log.info("signal %d: flushing and stopping", signum)
            self.stop_event.set()

        signal.signal(signal.SIGTERM, handler)
        signal.signal(signal.SIGINT, handler)

    def run(self, *, idle_exit_seconds: float | None = None) -> ConsumerStats:
        """Consume until stopped (or until nothing arrived for ``idle_exit_seconds``)."""
        log.info("parquet-consumer: Kafka client %s, topic %s, lake %s", self._source.name, self.topic,
                 self.lake.uri)
        last_item = time.monotonic()
        try:
            while not self.stop_event.is_set():
                if self._failed:
                    self._retry_failed()
                    continue
                if len(self._in_flight) >= self._max_in_flight:
                    # Enough writes queued: take nothing more until one finishes (backpressure).
                    cf.wait(list(self._in_flight), timeout=0.5, return_when=cf.FIRST_COMPLETED)
                    self._reap()
                    self._commit()
                    continue
                items = self._source.poll(self._poll_timeout())
                now = time.monotonic()
                if items:
                    if self.first_item_at is None:
                        self.first_item_at = now
                    last_item = now
                    for item in items:
                        self._accept(item, now)
                self._cut(now)
                self._reap()
                self._commit()
                if idle_exit_seconds is not None and now - last_item >= idle_exit_seconds:
                    break
            self.flush()
        finally:
            try:
                self._source.close()
            finally:
                self._dlq.flush(10)
                self._dlq = None  # its delivery callback refers back here: release the client now
                self._writers.shutdown()
        return self.stats

    def flush(self) -> None:
        """Land everything pending, wait for every write, then commit."""
        self._cut(time.monotonic(), force=True)
        self._drain(None)
        self._commit(force=True)

    def _poll_timeout(self) -> float:
        if self._in_flight:
            return 0.02  # writes finish soon: come back to commit and complete
        due = [p.since + self.batch_seconds for p in self._parts.values() if p.count]
        wait = min(due) - time.monotonic() if due else 0.2
        return min(max(wait, 0.0), 0.2)

    # -- revocation --------------------------------------------------------
    def _on_revoke(self, partitions: list[int], lost: bool) -> None:
        """Land and commit what is held of the revoked partitions before the rebalance goes on; a lost
        partition (our group session expired) belongs to another member already: drop it."""
        self._in_callback = True
        try:
            revoked = set(partitions)
            if lost:
                log.warning("partitions %s lost: dropping what is held of them (re-read by their new owner)",
                            sorted(revoked))
            else:
                self._cut(time.monotonic(), force=True, only=revoked)
                self._drain(revoked)
                self._commit(force=True, only=revoked)
            for p in revoked:
                self._parts.pop(p, None)
            for key in [k for k in self._known if k[0] in revoked]:
                del self._known[key]
        finally:
            self._in_callback = False

    # -- batching ----------------------------------------------------------
    def _accept(self, item: Any, now: float) -> None:
        if isinstance(item, Run):
            p, first, n = item.partition, item.first_offset, len(item.records)
        else:
            p, first, n = item.partition(), item.offset(), 1
        part = self._parts.get(p)
        if part is None:
            part = self._parts[p] = _Partition()
        if not part.count:
            part.start = first
            part.since = now
        part.entries.append(item)
        part.starts.append(first)
        part.count += n
        part.end = first + n
        self.stats.messages += n
        if n == 1 and not isinstance(item, Run) and not item.value():
            part.flush_now = True  # an end-of-session marker: land the session's tail now

    def _cut(self, now: float, *, force: bool = False, only: set[int] | None = None) -> None:
        """Land what is due: complete chunks (up to the last multiple of batch_records), or everything
        pending when forced, on an end-of-session marker or after batch_seconds."""
        for p, part in self._parts.items():
            if not part.count or (only is not None and p not in only):
                continue
            if force or part.flush_now or now - part.since >= self.batch_seconds:
                upto = part.end
            else:
                upto = part.end // self.batch_records * self.batch_records
                if upto <= part.start:
                    continue
            self._land_upto(p, part, upto, now)

    def _land_upto(self, p: int, part: _Partition, upto: int, now: float) -> None:
        """Land the pending entries below offset ``upto``, one landing per batch_records-aligned chunk."""
        i = bisect_left(part.starts, upto)
        taken = part.entries[:i]
        rest = part.entries[i:]
        if taken and _entry_end(taken[-1]) > upto:  # a run across the cut
            head, tail = _split_run(taken[-1], upto)
            taken[-1] = head
            rest.insert(0, tail)
        # chunks: never across a multiple of batch_records
        chunk: list[Any] = []
        bound = (part.start // self.batch_records + 1) * self.batch_records
        for entry in taken:
            while True:
                first = entry.first_offset if isinstance(entry, Run) else entry.offset()
                if first >= bound:
                    if chunk:
                        self._submit_chunk(p, part, chunk, bound)
                        chunk = []
                    bound = (first // self.batch_records + 1) * self.batch_records
                if isinstance(entry, Run) and entry.next_offset > bound:
                    head, entry = _split_run(entry, bound)
                    chunk.append(head)
                    continue
                chunk.append(entry)
                break
        if chunk:
            self._submit_chunk(p, part, chunk, min(upto, bound))
        part.entries = rest
        part.starts = [e.first_offset if isinstance(e, Run) else e.offset() for e in rest]
        part.count = sum(len(e.records) if isinstance(e, Run) else 1 for e in rest)
        part.start = upto
        part.since = now
        if not part.count:
            part.flush_now = False
        else:
            part.flush_now = any(not isinstance(e, Run) and not e.value() for e in rest)

    def _submit_chunk(self, p: int, part: _Partition, chunk: list[Any], end: int) -> None:
        decoded = decode_items(chunk, self.topic)
        landing = _Landing(p, end, decoded.markers)
        part.landings.append(landing)
        for message, reason in decoded.rejected:
            self._dead_letter(message, reason)
        for rows in decoded.sessions:
            landing.unwritten += 1
            self._start(_Job(landing, rows))

    def _start(self, job: _Job) -> None:
        if job.rows is not None:
            job.future = self._writers.submit(self._write_rows, job.landing.partition, job.rows)
        else:
            job.future = self._writers.submit(self._complete_all, job.landing.markers, job.known)
        self._in_flight[job.future] = job

    # -- completion of writes ---------------------------------------------
    def _reap(self) -> None:
        """Account for finished writes; start the markers of landings whose earlier writes are done;
        advance each partition's landed offset."""
        done = [f for f in self._in_flight if f.done()]
        for fut in done:
            job = self._in_flight.pop(fut)
            exc = fut.exception()
            if exc is not None:
                if not isinstance(exc, OSError):
                    raise exc
                self._failed.append(job)
                log.warning("lake write failed (%s)", exc)
                continue
            if job.rows is not None:
                job.landing.unwritten -= 1
                self.stats.objects_written += 1
                self.stats.records_landed += len(job.rows.records)
                name, written = fut.result()
                key = (job.landing.partition, job.rows.symbol, job.rows.date)
                self._known.setdefault(key, {})[name] = written
            else:
                for (symbol, day, *_), outcome in zip(job.landing.markers, fut.result(), strict=True):
                    if outcome is None:
                        self.stats.incomplete_sessions += 1
                    else:
                        self.stats.markers_written += 1
                        self.stats.completed.append(outcome)
                        self._known.pop((job.landing.partition, symbol, day), None)
                job.landing.markers = []
        if done and not self._failed:
            self._delay = 0.25
        for part in self._parts.values():
            while part.landings:
                head = part.landings[0]
                if head.unwritten:
                    break
                if head.markers:
                    if head.completion is None:
                        # Every earlier write of the partition is done: what we know we wrote is final.
                        known = {(sym, day): dict(self._known.get((head.partition, sym, day), {}))
                                 for sym, day, *_ in head.markers}
                        head.completion = _Job(head, None, known)
                        self._start(head.completion)
                    break
                part.landings.popleft()
                part.done_through = head.end

    def _retry_failed(self) -> None:
        """The lake failed: wait (taking no messages, committing nothing), then write again."""
        self.stats.write_retries += 1
        log.warning("lake write failed; retrying %d write(s) in %.2f s", len(self._failed), self._delay)
        self._source.hold(self._delay, in_callback=self._in_callback)
        self._delay = min(self._delay * 2, self.max_backoff)
        failed, self._failed = self._failed, []
        for job in failed:
            self._start(job)
        # wait for this round before anything else (a failed round comes back here)
        cf.wait([j.future for j in failed], timeout=None)
        self._reap()
        if not self._failed:
            self._source.release()

    def _drain(self, partitions: set[int] | None) -> None:
        """Wait until every landing (of ``partitions``, None = all) is written and complete."""

        def busy() -> bool:
            parts = self._parts.items() if partitions is None else (
                (p, self._parts[p]) for p in partitions if p in self._parts)
            return any(part.landings for _, part in parts)

        while busy():
            if self._failed:
                self._retry_failed()
                continue
            if self._in_flight:
                cf.wait(list(self._in_flight), timeout=0.5, return_when=cf.FIRST_COMPLETED)
            self._reap()

    # -- commits -----------------------------------------------------------
    def _commit(self, *, force: bool = False, only: set[int] | None = None) -> None:
        """Commit each partition's landed offset (every ``commit_interval`` s, or when nothing is in
        flight, or forced); dead-lettered messages are confirmed first."""
        offsets = {p: part.done_through for p, part in self._parts.items()
                   if part.done_through is not None and part.done_through != part.committed
                   and (only is None or p in only)}
        if not offsets:
            return
        now = time.monotonic()
        if not force and self._in_flight and now - self._last_commit < self.commit_interval:
            return
        if self._dlq_unflushed:
            # Dead-lettered messages must be in the DLQ before their offsets are committed.
            undelivered = self._dlq.flush(30)
            if undelivered or self._dlq_errors:
                raise RuntimeError(
                    f"dead-letter topic {self.dead_letter_topic}: {undelivered} undelivered, errors "
                    f"{self._dlq_errors[:3]}; offsets not committed (the messages are read again on restart)"
                )
            self._dlq_unflushed = 0
        try:
            self._source.commit(offsets)
        except (BridgeRequestError, KafkaException) as exc:
            # e.g. the partitions moved to another member meanwhile: it re-lands from the last commit
            log.warning("commit of %s failed: %s", offsets, exc)
            return
        finally:
            self._last_commit = now
        for p, off in offsets.items():
            self._parts[p].committed = off
        self.stats.commits += 1
        self.last_commit_at = time.monotonic()

    # -- lake writes (writer threads) -------------------------------------
    def _write_rows(self, partition: int, rows: SessionRows) -> tuple[str, _Written]:
        table = events_table(rows.records, rows.symbol, rows.date, landed_at=utc_now_iso())
        table = table.set_column(table.schema.get_field_index("seq"), "seq", [rows.seq])
        buf = pa.BufferOutputStream()
        pq.write_table(table, buf, compression=self.compression, use_dictionary=DICTIONARY_COLUMNS)
        data = buf.getvalue()
        pdir = self.lake.partition_dir("events", rows.symbol, rows.date)
        name = f"events-{partition}-{rows.first_offset}.parquet"
        self._put(posixpath.join(pdir, name), data)
        return name, _Written(rows, data.size)

    def _put(self, path: str, data: Any) -> None:
        """Write one whole object: on S3 a single PUT (no directory objects: the prefix is the
        directory); locally through a temporary name and a rename (never seen half-written)."""
        if not self.lake.is_local:
            with self._put_fs.open_output_stream(path) as out:
                out.write(data)
            return
        pdir, name = posixpath.split(path)
        if pdir not in self._local_dirs:
            self.lake.fs.create_dir(pdir, recursive=True)
            self._local_dirs.add(pdir)
        tmp = posixpath.join(pdir, f".{name}.tmp")
        with self.lake.fs.open_output_stream(tmp) as out:
            out.write(data)
        self.lake.fs.move(tmp, path)

    def _complete_all(self, markers: list, known: dict) -> list[tuple[str, str] | None]:
        return [self._complete(symbol, day, eos, session, known.get((symbol, day)))
                for symbol, day, eos, _offset, session in markers]

    def _complete(self, symbol: str, day, eos: EndOfSession, session: dict | None = None,
                  known: dict[str, _Written] | None = None) -> tuple[str, str] | None:
        """Write the partition's _SUCCESS if the lake holds every seq of the session; returns
        (symbol, date), or None when the session is incomplete.

        The partition is listed; objects this consumer wrote itself (``known``: same name and byte
        size in the listing) are counted from memory, every other object (written before a restart,
        by another member, ...) is read (``seq`` and ``ts_ns``). With the marker's session
        description, the session's ``raw/sessions`` row is landed first (what the marts need
        besides the events).
        """
        known = known or {}
        pdir = self.lake.partition_dir("events", symbol, day)
        infos = [
            i for i in self.lake.fs.get_file_info(pafs.FileSelector(pdir, allow_not_found=True))
            if i.type == pafs.FileType.File and i.base_name.endswith(".parquet") and not i.base_name.startswith(".")
        ]
        files = [i.path for i in infos]
        mine = []
        others = []
        for info in infos:
            w = known.get(info.base_name)
            if w is not None and w.size == info.size:
                mine.append(w)
            else:
                others.append(info.path)
        seqs = None
        ts_bounds = [(w.ts_min, w.ts_max) for w in mine if w.ts_min is not None]
        if others:
            cols = pads.dataset(others, filesystem=self.lake.fs, format="parquet").to_table(columns=["seq", "ts_ns"])
            if cols.num_rows:
                seqs = cols["seq"].to_numpy()
                lo, hi = (v.as_py() for v in pc.min_max(cols["ts_ns"]).values())
                ts_bounds.append((lo, hi))
        total_rows = sum(w.rows for w in mine) + (0 if seqs is None else len(seqs))
        distinct = 0
        if 0 < eos.events <= total_rows:  # fewer rows than events can never be complete
            n = eos.events
            present = np.zeros(n, dtype=bool)
            for w in mine:
                for lo, hi in w.spans:
                    if lo < n and hi >= 0:
                        present[max(lo, 0) : min(hi, n - 1) + 1] = True
                if w.seq is not None:
                    present[w.seq[(w.seq >= 0) & (w.seq < n)]] = True
            if seqs is not None:
                present[seqs[(seqs >= 0) & (seqs < n)]] = True
            distinct = int(np.count_nonzero(present))
        first_ts = min(lo for lo, _ in ts_bounds) if ts_bounds else None
        last_ts = max(hi for _, hi in ts_bounds) if ts_bounds else None
        if distinct != eos.events:
            log.warning(
                "%s %s: end of session says %d events but the lake holds %d distinct seqs; not marking complete "
                "(republish the session from its .qrsdp file)", symbol, day, eos.events, distinct,
            )
            return None
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
        self._put(posixpath.join(pdir, MARKER_NAME), marker.to_json().encode())
        self.lake.announce(marker)  # the landing log the Dagster sensor follows
        return symbol, day.isoformat()

    # -- dead letters ------------------------------------------------------
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
        self._dlq_unflushed += 1
        self.stats.dead_lettered += 1
        n = self.stats.dead_lettered
        if n <= 10 or n & (n - 1) == 0:  # the first ten, then every power of two: never a log flood
            log.warning("dead-lettered %s/%d@%d (%d so far): %s", message.topic(), message.partition(),
                        message.offset(), n, reason)
