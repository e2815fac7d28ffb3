"""``ParquetConsumer``: lands the Kafka event stream in the Parquet lake.

* Consumer group ``parquet-writer``. Kafka client: ``qrsdp-kafka-bridge`` in subscribe mode when it
  is built (runs of records arrive as numpy arrays, no Python per message), else confluent-kafka;
  ``QRSDP_KAFKA_CLIENT=auto|bridge|python`` chooses (:mod:`qrsdp_sim.kafka.client`).
* Batching per Kafka partition: a partition's pending records are landed once they reach an
  offset that is a multiple of ``batch_records`` (50,000), when the oldest of them has waited
  ``batch_seconds`` (5 s), when an end-of-session marker arrives, on revocation and at the end.
  An object never crosses a multiple of ``batch_records``, so it holds at most 50,000 records.
* Each landed chunk's (partition, symbol, date) group becomes one object
  ``raw/events/symbol=SYM/date=YYYY-MM-DD/events-{partition}-{first_offset}-{owner}.parquet``
  with the same columns as the embedded landing. ``owner`` is a token drawn each time this process
  is given the partition (fencing, below); retries of a write use the same name.
* Objects are encoded to memory (``pq.write_table``) and PUT in one request each, several in
  parallel (pyarrow releases the GIL). Offsets are committed only after every object below them
  is written (and every dead-lettered message below them is confirmed by the dead-letter topic).
  If the lake is unreachable the consumer stops taking messages (the bridge: its output is not
  read, which stops its fetching while its heartbeats go on; confluent-kafka: partitions paused)
  and retries with exponential backoff, committing nothing, until it can write again.
* An end-of-session marker writes the partition's ``_SUCCESS`` once the lake holds every seq
  below the marker's count (after the objects before it are written); the Dagster sensor watches
  these markers. A marker never replaces a complete one with a larger count
  (:mod:`qrsdp_sim.kafka.completion`).
* Every message is untrusted: malformed ones go to the dead-letter topic with the reason and are
  counted by kind (:mod:`qrsdp_sim.kafka.decode`, :mod:`qrsdp_sim.kafka.dead_letter`). A write that
  fails with anything but an I/O error is retried twice, then its records (or its marker) are
  dead-lettered too: nothing a message causes stops the consumer or the messages behind it.
* Fencing: a revoked or lost partition's owner token is dropped at once. Every object PUT and every
  completion checks the token first (a write of a partition this process no longer owns is dropped,
  never retried), commits cover owned partitions only (and the group generation fences them at the
  broker), and since object names carry the token a stale write already under way can only add an
  object of exact duplicates, never replace the new owner's.
* Revoked partitions are landed and committed before the rebalance goes on; SIGTERM/SIGINT: the
  pending records are landed and committed before exit.
"""

from __future__ import annotations

import collections
import concurrent.futures as cf
import logging
import posixpath
import secrets
import signal
import threading
import time
from bisect import bisect_left
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
from confluent_kafka import KafkaException

from qrsdp_sim.kafka.bridge import BridgeRequestError, RawMessage, Run
from qrsdp_sim.kafka.client import use_bridge
from qrsdp_sim.kafka.completion import COMPLETE, INCOMPLETE, Written, complete_session
from qrsdp_sim.kafka.consumer_sources import BridgeSource, ConfluentSource
from qrsdp_sim.kafka.dead_letter import DeadLetters
from qrsdp_sim.kafka.decode import (
    DecodedBatch,
    Marker,
    Rejected,
    SessionRows,
    decode_items,
    rows_messages,
    run_messages,
)
from qrsdp_sim.kafka.message import DEAD_LETTER_TOPIC, DEFAULT_TOPIC
from qrsdp_sim.kafka.names import DEFAULT_BATCH_RECORDS
from qrsdp_sim.lake.landing import events_table
from qrsdp_sim.lake.store import Lake, parquet_encoding, utc_now_iso
from qrsdp_sim.records import RECORD_SIZE

log = logging.getLogger(__name__)

GROUP_ID = "parquet-writer"
# Encoding of the objects (measured on 10,000-record chunks of engine sessions, benchmarks/bench_kafka.py):
# dictionaries for the few-valued columns (prices cluster around the mid, sizes on round lots); the
# increasing ones (ts_ns, seq, order_id) delta-encoded -- trying a dictionary on them and falling back
# costs half the encoding time; LZ4: with the delta encoding a chunk encodes in ~30% less CPU than
# with zstd and plain ints, and is still ~10% smaller.
MAX_ATTEMPTS = 3  # a write failing with anything but an I/O error is set aside after this many tries
MAX_KNOWN_SESSIONS = 4096  # sessions whose objects are remembered for completion (bounded memory)
# Pending messages of a partition are landed once they hold this much, whatever their offsets: a flood
# of large messages (garbage up to the broker's 1 MB limit) can never pile up batch_records of them.
MAX_PENDING_BYTES = 64 << 20


@dataclass
class ConsumerStats:
    messages: int = 0
    records_landed: int = 0
    objects_written: int = 0
    markers_written: int = 0
    incomplete_sessions: int = 0
    superseded_markers: int = 0  # complete, but a marker with a larger count was already there
    dead_lettered: int = 0
    dead_letter_kinds: dict[str, int] = field(default_factory=dict)  # kind -> count
    dead_letter_retries: int = 0  # rounds in which the dead-letter topic had not confirmed yet
    write_retries: int = 0
    write_errors: int = 0  # writes that failed with something other than an I/O error
    fenced_writes: int = 0  # writes dropped because their partition is no longer this consumer's
    commits: int = 0
    completed: list[tuple[str, str]] = field(default_factory=list)
    client: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {k: (dict(v) if isinstance(v, dict) else v) for k, v in self.__dict__.items()}


class Fenced(Exception):
    """A write of a partition this consumer no longer owns (revoked or lost): dropped, never retried."""


# ------------------------------------------------------------------------------------------
# landing state
# ------------------------------------------------------------------------------------------


class _Job:
    """One lake write: an object (``rows``) or a landing's completion markers (``rows`` None, with
    ``known``: what this consumer wrote of those sessions, object name -> :class:`Written`)."""

    __slots__ = ("attempts", "future", "known", "landing", "rows")

    def __init__(self, landing: _Landing, rows: SessionRows | None,
                 known: dict[tuple[str, Any], dict[str, Written]] | None = None) -> None:
        self.landing = landing
        self.rows = rows
        self.known = known
        self.attempts = 0
        self.future: cf.Future | None = None


class _Landing:
    """One chunk of a partition (offsets below ``end``): its objects, then its markers."""

    __slots__ = ("completion", "end", "markers", "owner", "partition", "unwritten")

    def __init__(self, partition: int, owner: str, end: int, markers: list[Marker]) -> None:
        self.partition = partition
        self.owner = owner
        self.end = end
        self.markers = markers
        self.unwritten = 0  # object writes not yet succeeded
        self.completion: _Job | None = None  # the markers' job, once every earlier write is done


class _Partition:
    """Pending items of one assigned partition (offset order) and its landings in flight."""

    __slots__ = ("bytes", "committed", "count", "done_through", "end", "entries", "flush_now", "landings",
                 "owner", "since", "start", "starts")

    def __init__(self, owner: str) -> None:
        self.owner = owner  # token of this ownership of the partition (object names, fencing)
        self.entries: list[Any] = []  # Run, RawMessage or confluent Message
        self.starts: list[int] = []  # first offset of each entry
        self.count = 0  # pending messages
        self.bytes = 0  # their size, about (bounded: MAX_PENDING_BYTES)
        self.start = 0  # first pending offset
        self.end = 0  # next offset after the pending ones
        self.since = 0.0  # when the oldest pending message arrived
        self.flush_now = False  # an end-of-session marker is pending
        self.landings: collections.deque[_Landing] = collections.deque()
        self.done_through: int | None = None  # every offset below is landed
        self.committed: int | None = None


def _message_size(m: Any) -> int:
    """About how much memory a raw message holds: its value and key, plus its headers for the bridge's
    raw messages (rare: markers and malformed ones; every confluent-kafka message is raw, and reading
    its headers here would cost more than the rest of its handling)."""
    size = 64 + len(m.value() or b"") + len(m.key() or b"")
    if isinstance(m, RawMessage):
        size += sum(len(name) + len(value or b"") for name, value in m.headers() or ())
    return size


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
        batch_records: int = DEFAULT_BATCH_RECORDS,
        batch_seconds: float = 5.0,
        max_backoff: float = 10.0,
        compression: str = "lz4",
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
        self._dead = DeadLetters(brokers, dead_letter_topic)
        self._dead_blocked = False  # the dead-letter topic has not confirmed: take nothing, commit nothing
        self._put_fs = _s3_put_filesystem(lake)
        self._local_dirs: set[str] = set()
        self._writers = cf.ThreadPoolExecutor(writers, thread_name_prefix="lake-writer")
        self._max_in_flight = 2 * writers
        self._parts: dict[int, _Partition] = {}
        # partition -> owner token of the partitions this consumer owns (read by the writer threads)
        self._owners: dict[int, str] = {}
        # (partition, symbol, date) -> object name -> what this consumer wrote there (until completed)
        self._known: dict[tuple[int, str, Any], dict[str, Written]] = {}
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
                if self._dead_blocked:
                    self._commit(force=True)  # confirms the dead letters first (with backoff)
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
                self._dead.close()
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

    # -- ownership (fencing) ----------------------------------------------
    def _owns(self, landing: _Landing) -> bool:
        return self._owners.get(landing.partition) == landing.owner

    def _check_owner(self, landing: _Landing) -> None:
        """In a writer thread, right before publishing anything: is the partition still ours?"""
        if self._owners.get(landing.partition) != landing.owner:
            raise Fenced(f"partition {landing.partition} is no longer owned by this consumer ({landing.owner})")

    def _on_revoke(self, partitions: list[int], lost: bool) -> None:
        """Land and commit what is held of the revoked partitions before the rebalance goes on; a lost
        partition (our group session expired) belongs to another member already: drop it, and fence
        every write of it still queued or under way."""
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
                self._owners.pop(p, None)
            self._failed = [j for j in self._failed if self._owns(j.landing)]
            for key in [k for k in self._known if k[0] in revoked]:
                del self._known[key]
        finally:
            self._in_callback = False

    # -- batching ----------------------------------------------------------
    def _accept(self, item: Any, now: float) -> None:
        if isinstance(item, Run):
            p, first, n = item.partition, item.first_offset, len(item.records)
            size = n * RECORD_SIZE
        else:
            p, first, n = item.partition(), item.offset(), 1
            size = _message_size(item)
        part = self._parts.get(p)
        if part is None:
            part = self._parts[p] = _Partition(secrets.token_hex(4))
            self._owners[p] = part.owner
        if not part.count:
            part.start = first
            part.since = now
        part.entries.append(item)
        part.starts.append(first)
        part.count += n
        part.bytes += size
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
            if force or part.flush_now or now - part.since >= self.batch_seconds or part.bytes >= MAX_PENDING_BYTES:
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
        part.bytes = sum(len(e.records) * RECORD_SIZE if isinstance(e, Run) else _message_size(e) for e in rest)
        part.start = upto
        part.since = now
        if not part.count:
            part.flush_now = False
        else:
            part.flush_now = any(not isinstance(e, Run) and not e.value() for e in rest)

    def _decode(self, chunk: list[Any]) -> DecodedBatch:
        """The chunk decoded; should the decoder ever fail, every message of the chunk is set aside."""
        try:
            return decode_items(chunk, self.topic)
        except Exception as exc:  # a decoder bug must not stop the consumer (the fuzz tests say it never does)
            log.exception("decoding a chunk of %d items failed; dead-lettering its messages", len(chunk))
            out = DecodedBatch()
            for entry in chunk:
                for m in run_messages(entry, self.topic) if isinstance(entry, Run) else [entry]:
                    out.rejected.append(Rejected(m, "decoder_error", f"the decoder failed: {type(exc).__name__}: {exc}"))
            return out

    def _submit_chunk(self, p: int, part: _Partition, chunk: list[Any], end: int) -> None:
        decoded = self._decode(chunk)
        landing = _Landing(p, part.owner, end, decoded.markers)
        part.landings.append(landing)
        for message, kind, reason in decoded.rejected:
            self._dead_letter(message, kind, reason)
        for rows in decoded.sessions:
            landing.unwritten += 1
            self._start(_Job(landing, rows))

    def _start(self, job: _Job) -> None:
        if job.rows is not None:
            job.future = self._writers.submit(self._write_rows, job.landing, job.rows)
        else:
            job.future = self._writers.submit(self._complete_all, job.landing, job.known)
        self._in_flight[job.future] = job

    # -- completion of writes ---------------------------------------------
    def _reap(self) -> None:
        """Account for finished writes; start the markers of landings whose earlier writes are done;
        advance each partition's landed offset."""
        done = [f for f in self._in_flight if f.done()]
        for fut in done:
            job = self._in_flight.pop(fut)
            exc = fut.exception()
            if isinstance(exc, Fenced) or not self._owns(job.landing):
                self.stats.fenced_writes += 1  # the partition moved on: whatever this write did is moot
                continue
            if exc is not None:
                self._write_failed(job, exc)
                continue
            if job.rows is not None:
                job.landing.unwritten -= 1
                self.stats.objects_written += 1
                self.stats.records_landed += len(job.rows.records)
                name, written = fut.result()
                self._remember(job.landing.partition, job.rows, name, written)
            else:
                self._account_markers(job, fut.result())
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
                        known = {(m.symbol, m.date): dict(self._known.get((head.partition, m.symbol, m.date), {}))
                                 for m in head.markers}
                        head.completion = _Job(head, None, known)
                        self._start(head.completion)
                    break
                part.landings.popleft()
                part.done_through = head.end

    def _remember(self, partition: int, rows: SessionRows, name: str, written: Written) -> None:
        key = (partition, rows.symbol, rows.date)
        objects = self._known.get(key)
        if objects is None:
            if len(self._known) >= MAX_KNOWN_SESSIONS:  # sessions that never end: forget the oldest
                del self._known[next(iter(self._known))]
            objects = self._known[key] = {}
        objects[name] = written

    def _account_markers(self, job: _Job, outcomes: list[str | BaseException]) -> None:
        landing = job.landing
        for marker, outcome in zip(landing.markers, outcomes, strict=True):
            if outcome == COMPLETE:
                self.stats.markers_written += 1
                self.stats.completed.append((marker.symbol, marker.date.isoformat()))
                self._known.pop((landing.partition, marker.symbol, marker.date), None)
            elif outcome == INCOMPLETE:
                self.stats.incomplete_sessions += 1
            elif isinstance(outcome, BaseException):
                self.stats.write_errors += 1
                self._dead_letter(marker.message, "completion",
                                  f"completing the session failed: {type(outcome).__name__}: {outcome}")
            else:  # SUPERSEDED: a longer session is complete there; what we wrote of it is moot
                self.stats.superseded_markers += 1
                self._known.pop((landing.partition, marker.symbol, marker.date), None)
        landing.markers = []

    def _write_failed(self, job: _Job, exc: BaseException) -> None:
        """An I/O error is retried until it succeeds (the lake is down); anything else is retried
        MAX_ATTEMPTS times, then the write's records are set aside in the dead-letter topic."""
        if isinstance(exc, OSError):
            self._failed.append(job)
            log.warning("lake write failed (%s)", exc)
            return
        job.attempts += 1
        self.stats.write_errors += 1
        log.error("lake write of partition %d failed (attempt %d of %d): %s: %s", job.landing.partition,
                  job.attempts, MAX_ATTEMPTS, type(exc).__name__, exc)
        if job.attempts < MAX_ATTEMPTS:
            self._failed.append(job)
            return
        reason = f"writing to the lake failed {MAX_ATTEMPTS} times: {type(exc).__name__}: {exc}"
        if job.rows is not None:
            for m in rows_messages(job.rows, self.topic, job.landing.partition):
                self._dead_letter(m, "lake_write", reason)
            job.landing.unwritten -= 1
        else:
            for marker in job.landing.markers:
                self._dead_letter(marker.message, "completion", reason)
            job.landing.markers = []

    def _retry_failed(self) -> None:
        """The lake failed: wait (taking no messages, committing nothing), then write again."""
        self._failed = [j for j in self._failed if self._owns(j.landing)]  # never retry a lost partition's
        if not self._failed:
            self._source.release()
            return
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
        """Commit each owned partition's landed offset (every ``commit_interval`` s, or when nothing is
        in flight, or forced); dead-lettered messages are confirmed first."""
        offsets = {p: part.done_through for p, part in self._parts.items()
                   if part.done_through is not None and part.done_through != part.committed
                   and (only is None or p in only)}
        if not offsets and not self._dead_blocked:
            return
        now = time.monotonic()
        if not force and self._in_flight and now - self._last_commit < self.commit_interval:
            return
        if self._dead.unconfirmed and not self._confirm_dead_letters():
            return
        if not offsets:
            return
        try:
            self._source.commit(offsets)
        except (BridgeRequestError, KafkaException) as exc:
            # e.g. the partitions moved to another member meanwhile (the group generation fences the
            # commit): the new owner re-lands from the last commit
            log.warning("commit of %s failed: %s", offsets, exc)
            return
        finally:
            self._last_commit = now
        for p, off in offsets.items():
            self._parts[p].committed = off
        self.stats.commits += 1
        self.last_commit_at = time.monotonic()

    def _confirm_dead_letters(self) -> bool:
        """Dead-lettered messages must be in the dead-letter topic before their offsets are committed.
        When they are not (yet), back off -- taking no messages -- and say so."""
        if self._dead.confirm(30.0):
            if self._dead_blocked:
                self._dead_blocked = False
                self._source.release()
            return True
        self._dead_blocked = True
        self.stats.dead_letter_retries += 1
        log.warning("dead-letter topic %s has not confirmed %d message(s); committing nothing, retrying in "
                    "%.2f s", self.dead_letter_topic, self._dead.unconfirmed, self._delay)
        self._source.hold(self._delay, in_callback=self._in_callback)
        self._delay = min(self._delay * 2, self.max_backoff)
        return False

    # -- lake writes (writer threads) -------------------------------------
    def _write_rows(self, landing: _Landing, rows: SessionRows) -> tuple[str, Written]:
        table = events_table(rows.records, rows.symbol, rows.date, landed_at=utc_now_iso())
        table = table.set_column(table.schema.get_field_index("seq"), "seq", [rows.seq])
        buf = pa.BufferOutputStream()
        pq.write_table(table, buf, compression=self.compression, **parquet_encoding(table.column_names))
        data = buf.getvalue()
        pdir = self.lake.partition_dir("events", rows.symbol, rows.date)
        name = f"events-{landing.partition}-{rows.first_offset}-{landing.owner}.parquet"
        self._check_owner(landing)
        self._put(posixpath.join(pdir, name), data)
        return name, Written(rows, data.size)

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
        tmp = posixpath.join(pdir, f".{name}.{threading.get_ident()}.tmp")
        with self.lake.fs.open_output_stream(tmp) as out:
            out.write(data)
        self.lake.fs.move(tmp, path)

    def _complete_all(self, landing: _Landing, known: dict) -> list[str | BaseException]:
        """Each marker's outcome (COMPLETE, INCOMPLETE, SUPERSEDED), or the exception that makes it
        impossible (its marker is then set aside). I/O errors and fencing fail the whole job."""
        outcomes: list[str | BaseException] = []
        for marker in landing.markers:
            try:
                outcomes.append(complete_session(
                    self.lake, marker, known.get((marker.symbol, marker.date)) or {}, topic=self.topic,
                    put=self._put, check_owner=lambda: self._check_owner(landing)))
            except (OSError, Fenced):
                raise
            except Exception as exc:
                log.exception("%s %s: completing the session failed", marker.symbol, marker.date)
                outcomes.append(exc)
        return outcomes

    # -- dead letters ------------------------------------------------------
    def _dead_letter(self, message: Any, kind: str, reason: str) -> None:
        self._dead.send(message, kind, reason)
        self.stats.dead_lettered += 1
        self.stats.dead_letter_kinds[kind] = self.stats.dead_letter_kinds.get(kind, 0) + 1
