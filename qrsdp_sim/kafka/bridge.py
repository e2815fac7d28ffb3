"""Python side of ``qrsdp-kafka-bridge``: Kafka through a native sidecar, in columnar batches.

The confluent-kafka client costs ~1.5 µs per ``produce()`` and ~4-6 µs per consumed message in
Python. The bridge (``qrsdp_sim/kafka/bridge/``, Go + franz-go, built by ``infra/stack.sh
install``) does the per-message work; Python hands it whole record arrays and gets whole runs
back, so no Python code runs per record. The message format on Kafka is unchanged
(docs/kafka-message-format.md); the pipe protocol is in docs/kafka-bridge.md.

It runs as a subprocess, not a shared library: whatever happens on the Kafka side, the
simulation and the ``.qrsdp`` files are unaffected. A bridge that dies makes the next call raise
:class:`BridgeError` with the tail of its stderr.

- :class:`BridgeProducer` -- ``send_run`` (one frame per record array), ``send_message``,
  ``flush(timeout)`` -> delivery stats per (key, date), ``close()``.
- :class:`BridgeConsumer` -- ``poll``/``consume``/iteration yield :class:`Run` (records as a
  numpy view), :class:`RawMessage` (confluent_kafka.Message accessors) and :class:`Event`
  (control); ``commit`` (with per-partition metadata), ``committed``, ``assign``, ``partitions``.
"""

from __future__ import annotations

import collections
import contextlib
import fcntl
import itertools
import json
import logging
import os
import select
import shutil
import struct
import subprocess
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from qrsdp_sim.kafka.message import DEFAULT_TOPIC
from qrsdp_sim.records import RECORD_DTYPE, RECORD_SIZE

log = logging.getLogger(__name__)

BRIDGE_ENV = "QRSDP_KAFKA_BRIDGE"
BINARY_NAME = "qrsdp-kafka-bridge"
_REPO_BINARY = Path(__file__).resolve().parents[2] / "infra" / ".build" / "bin" / BINARY_NAME

FRAME_RUN = ord("R")
FRAME_MESSAGE = ord("M")
FRAME_JSON = ord("J")

_HDR = struct.Struct("<BI")  # type u8, payload length u32
_RUN_FIXED = struct.Struct("<iqQI")  # partition, first_offset, first_seq, count
_MSG_FIXED = struct.Struct("<iq")  # partition, offset
_U16 = struct.Struct("<H")
_I32 = struct.Struct("<i")
MAX_RUN_RECORDS = 1 << 20  # records per frame from Python (26 MB); larger arrays are split
_READ_CHUNK = 1 << 20
_F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)


class BridgeError(RuntimeError):
    """The bridge process failed, died, or did not answer in time."""


class BridgeRequestError(BridgeError):
    """The bridge answered a request (commit, committed, partitions, assign) with an error."""


# ---------------------------------------------------------------------------------------------
# locating the binary
# ---------------------------------------------------------------------------------------------


def find_bridge() -> Path | None:
    """The bridge binary: ``$QRSDP_KAFKA_BRIDGE``, else ``infra/.build/bin/qrsdp-kafka-bridge`` of this
    repository, else ``qrsdp-kafka-bridge`` on PATH; None when there is none."""
    env = os.environ.get(BRIDGE_ENV)
    if env:
        path = Path(env)
        return path if path.is_file() and os.access(path, os.X_OK) else None
    if _REPO_BINARY.is_file() and os.access(_REPO_BINARY, os.X_OK):
        return _REPO_BINARY
    found = shutil.which(BINARY_NAME)
    return Path(found) if found else None


def bridge_available() -> bool:
    """True when a bridge binary can be started (see :func:`find_bridge`)."""
    return find_bridge() is not None


def _binary(binary: str | os.PathLike[str] | None) -> Path:
    if binary is not None:
        return Path(binary)
    path = find_bridge()
    if path is None:
        where = os.environ.get(BRIDGE_ENV) or f"{_REPO_BINARY} or {BINARY_NAME} on PATH"
        raise BridgeError(f"{BINARY_NAME} not found ({where}); build it with `infra/stack.sh bridge-build`")
    return path


# ---------------------------------------------------------------------------------------------
# decoded frames
# ---------------------------------------------------------------------------------------------


@dataclass(slots=True)
class Run:
    """Consecutive event messages of one session on one partition (offsets and seqs both contiguous).

    ``records`` is a read-only numpy view (RECORD_DTYPE) of the bridge's output, no copy; record ``i``
    was the message at offset ``first_offset + i`` with header ``seq`` ``first_seq + i``.
    """

    partition: int
    first_offset: int
    first_seq: int
    key: bytes
    date: bytes
    run_id: bytes
    records: np.ndarray

    def __len__(self) -> int:
        return len(self.records)

    @property
    def last_offset(self) -> int:
        return self.first_offset + len(self.records) - 1

    @property
    def next_offset(self) -> int:
        """The offset to commit once this run is handled."""
        return self.first_offset + len(self.records)

    @property
    def symbol(self) -> str:
        return self.key.decode("ascii", "replace")

    @property
    def day(self) -> str:
        return self.date.decode("ascii", "replace")

    @property
    def seq(self) -> np.ndarray:
        """The run's seqs as int64 (first_seq, first_seq + 1, ...)."""
        return np.arange(self.first_seq, self.first_seq + len(self.records), dtype=np.int64)


class RawMessage:
    """One Kafka message outside a run (end-of-session markers, anything malformed), with the accessors
    of ``confluent_kafka.Message`` so code written for confluent messages handles it unchanged."""

    __slots__ = ("_headers", "_key", "_offset", "_partition", "_topic", "_value")

    def __init__(self, topic: str, partition: int, offset: int, key: bytes | None, value: bytes | None,
                 headers: list[tuple[str, bytes | None]] | None) -> None:
        self._topic = topic
        self._partition = partition
        self._offset = offset
        self._key = key
        self._value = value
        self._headers = headers

    def topic(self) -> str:
        return self._topic

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset

    def key(self) -> bytes | None:
        return self._key

    def value(self) -> bytes | None:
        return self._value

    def headers(self) -> list[tuple[str, bytes | None]] | None:
        """List of (name, value) like confluent-kafka; None when the message has no headers."""
        return self._headers

    def error(self) -> None:
        return None

    def timestamp(self) -> tuple[int, int]:
        return (0, -1)  # TIMESTAMP_NOT_AVAILABLE: the frame does not carry it

    def __len__(self) -> int:
        return len(self._value or b"")

    def __repr__(self) -> str:
        return (f"RawMessage({self._topic}/{self._partition}@{self._offset}, key={self._key!r}, "
                f"value={len(self)} B, headers={[h for h, _ in self._headers or ()]})")


@dataclass(slots=True)
class Event:
    """A control event from the bridge: ``name`` is its ``event`` field (ready, assigned, revoked, error,
    committed, flushed, stopped, ...), ``data`` the whole JSON object."""

    name: str
    data: dict[str, Any] = field(default_factory=dict)

    def get(self, key: str, default: Any = None) -> Any:
        return self.data.get(key, default)


Item = Run | RawMessage | Event


# ---------------------------------------------------------------------------------------------
# frame encoding / decoding
# ---------------------------------------------------------------------------------------------


def _ascii(value: str | bytes) -> bytes:
    return value.encode("ascii") if isinstance(value, str) else bytes(value)


def _short(b: bytes) -> bytes:
    if len(b) > 0xFFFF:
        raise ValueError(f"field of {len(b)} bytes does not fit a u16 length")
    return _U16.pack(len(b)) + b


def _long(b: bytes | None) -> bytes:
    return _I32.pack(-1) if b is None else _I32.pack(len(b)) + b


def encode_run(key: str | bytes, date: str | bytes, run_id: str | bytes, first_seq: int, records: np.ndarray,
               *, partition: int = -1, first_offset: int = -1) -> tuple[bytes, memoryview]:
    """One 'R' frame as (header bytes, record bytes): the records are not copied."""
    if records.dtype != RECORD_DTYPE:
        raise TypeError(f"expected records of RECORD_DTYPE, got {records.dtype}")
    n = len(records)
    if n >= 1 << 32:
        raise ValueError("too many records for one frame")
    fields = _short(_ascii(key)) + _short(_ascii(date)) + _short(_ascii(run_id))
    body = memoryview(np.ascontiguousarray(records).view(np.uint8))
    head = _HDR.pack(FRAME_RUN, _RUN_FIXED.size + len(fields) + n * RECORD_SIZE)
    return head + _RUN_FIXED.pack(partition, first_offset, first_seq, n) + fields, body


def encode_message(key: bytes | str | None, value: bytes | None, headers: Iterable[tuple[str, bytes | None]] = (),
                   *, partition: int = -1, offset: int = -1) -> bytes:
    """One 'M' frame."""
    hs = list(headers)
    parts = [_MSG_FIXED.pack(partition, offset), _long(None if key is None else _ascii(key)),
             _long(None if value is None else bytes(value)), _U16.pack(len(hs))]
    for name, hv in hs:
        parts.append(_short(name.encode()))
        parts.append(_long(None if hv is None else bytes(hv)))
    payload = b"".join(parts)
    return _HDR.pack(FRAME_MESSAGE, len(payload)) + payload


def encode_json(obj: Mapping[str, Any]) -> bytes:
    doc = json.dumps(obj, separators=(",", ":")).encode()
    return _HDR.pack(FRAME_JSON, len(doc)) + doc


def _read_short(p: memoryview, pos: int) -> tuple[bytes, int]:
    (n,) = _U16.unpack_from(p, pos)
    pos += 2
    return bytes(p[pos : pos + n]), pos + n


def _read_long(p: memoryview, pos: int) -> tuple[bytes | None, int]:
    (n,) = _I32.unpack_from(p, pos)
    pos += 4
    if n < 0:
        return None, pos
    return bytes(p[pos : pos + n]), pos + n


def decode_frame(typ: int, payload: memoryview, topic: str = "") -> Item:
    """Decode one frame's payload (a run's records stay a view of ``payload``)."""
    if typ == FRAME_RUN:
        partition, first_offset, first_seq, count = _RUN_FIXED.unpack_from(payload, 0)
        key, pos = _read_short(payload, _RUN_FIXED.size)
        date, pos = _read_short(payload, pos)
        run_id, pos = _read_short(payload, pos)
        if len(payload) - pos != count * RECORD_SIZE:
            raise BridgeError(f"run frame: {len(payload) - pos} value bytes for {count} records")
        records = np.frombuffer(payload, dtype=RECORD_DTYPE, count=count, offset=pos)
        records.flags.writeable = False  # a view of the read buffer (writable when it is a bytearray)
        return Run(partition, first_offset, first_seq, key, date, run_id, records)
    if typ == FRAME_MESSAGE:
        partition, offset = _MSG_FIXED.unpack_from(payload, 0)
        key, pos = _read_long(payload, _MSG_FIXED.size)
        value, pos = _read_long(payload, pos)
        (nh,) = _U16.unpack_from(payload, pos)
        pos += 2
        headers: list[tuple[str, bytes | None]] | None = None
        if nh:
            headers = []
            for _ in range(nh):
                name, pos = _read_short(payload, pos)
                hv, pos = _read_long(payload, pos)
                headers.append((name.decode("utf-8", "replace"), hv))
        return RawMessage(topic, partition, offset, key, value, headers)
    if typ == FRAME_JSON:
        data = json.loads(bytes(payload))
        return Event(str(data.get("event", "")), data)
    raise BridgeError(f"unknown frame type {typ!r} from the bridge")


class _FrameReader:
    """Frames out of a pipe: large reads into fresh buffers, frames sliced out as memoryviews.

    A chunk is a new ``bytes`` per read and a frame that spans reads gets its own ``bytearray``,
    so the views handed out (run records) are never overwritten.
    """

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.buf = b""
        self.pos = 0
        self.big: bytearray | None = None
        self.big_type = 0
        self.big_fill = 0

    def next(self) -> tuple[int, memoryview] | None:
        """The next complete frame among the bytes read so far, or None."""
        if self.big is not None:
            if self.big_fill < len(self.big):
                return None
            frame = (self.big_type, memoryview(self.big))
            self.big = None
            return frame
        buf, pos = self.buf, self.pos
        if len(buf) - pos < _HDR.size:
            return None
        typ, n = _HDR.unpack_from(buf, pos)
        start = pos + _HDR.size
        end = start + n
        if end <= len(buf):
            self.pos = end
            return typ, memoryview(buf)[start:end]
        big = bytearray(n)
        have = len(buf) - start
        big[:have] = memoryview(buf)[start:]
        self.big, self.big_type, self.big_fill = big, typ, have
        self.buf, self.pos = b"", 0
        return None

    def fill(self, timeout: float | None) -> bool:
        """Read what the pipe has (waiting up to ``timeout`` s, None = forever); False when nothing came.
        Raises EOFError when the bridge closed its stdout."""
        if timeout is not None and timeout < 0:
            timeout = 0
        ready, _, _ = select.select([self.fd], [], [], timeout)
        if not ready:
            return False
        if self.big is not None:
            n = os.readv(self.fd, [memoryview(self.big)[self.big_fill :]])
            if n == 0:
                raise EOFError
            self.big_fill += n
            return True
        data = os.read(self.fd, _READ_CHUNK)
        if not data:
            raise EOFError
        if self.pos < len(self.buf):  # a partial frame header (< 5 bytes) is carried over
            data = self.buf[self.pos :] + data
        self.buf, self.pos = data, 0
        return True


# ---------------------------------------------------------------------------------------------
# the process
# ---------------------------------------------------------------------------------------------


class _Process:
    """The bridge subprocess: framed writes to its stdin, framed reads from its stdout, stderr kept."""

    def __init__(self, args: list[str], what: str) -> None:
        self.what = what
        self.args = args
        self.stderr_tail: collections.deque[str] = collections.deque(maxlen=60)
        try:
            # Its own session: a Ctrl-C in the terminal reaches Python (which stops the bridge in order
            # through stdin: flush, commit, leave the group), not the bridge directly.
            self.proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                         stderr=subprocess.PIPE, bufsize=0, close_fds=True,
                                         start_new_session=True)
        except OSError as exc:
            raise BridgeError(f"cannot start {args[0]}: {exc}") from exc
        for f in (self.proc.stdin, self.proc.stdout):
            with contextlib.suppress(OSError):
                fcntl.fcntl(f.fileno(), _F_SETPIPE_SZ, 1 << 20)  # fewer, larger reads and writes
        self.stdin_fd = self.proc.stdin.fileno()
        self.reader = _FrameReader(self.proc.stdout.fileno())
        self._stderr_thread = threading.Thread(target=self._drain_stderr, daemon=True,
                                               name=f"{BINARY_NAME}-stderr-{self.proc.pid}")
        self._stderr_thread.start()
        self.write_lock = threading.Lock()

    def _drain_stderr(self) -> None:
        for raw in iter(self.proc.stderr.readline, b""):
            line = raw.decode("utf-8", "replace").rstrip()
            self.stderr_tail.append(line)
            log.debug("%s[%d]: %s", BINARY_NAME, self.proc.pid, line)

    def failure(self, what: str) -> BridgeError:
        """An error naming the exit status and stderr tail (waits a moment for the process to end)."""
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(2.0)
        self._stderr_thread.join(1.0)
        code = self.proc.poll()
        status = "is still running" if code is None else f"exited with code {code}"
        tail = "\n".join(self.stderr_tail) or "(nothing on stderr)"
        return BridgeError(f"{BINARY_NAME} {self.what} (pid {self.proc.pid}) {status}: {what}\n"
                           f"--- stderr tail ---\n{tail}")

    def write(self, *bufs: bytes | memoryview) -> None:
        with self.write_lock:
            self._write_locked(bufs)

    def _write_locked(self, bufs: Sequence[bytes | memoryview]) -> None:
        views = [memoryview(b).cast("B") for b in bufs if len(b)]
        try:
            while views:
                n = os.writev(self.stdin_fd, views)
                while views and n >= len(views[0]):
                    n -= len(views[0])
                    views.pop(0)
                if n:
                    views[0] = views[0][n:]
        except (BrokenPipeError, ConnectionResetError, ValueError, OSError) as exc:
            raise self.failure(f"writing to its stdin failed ({exc})") from exc

    def next_frame(self, deadline: float | None) -> tuple[int, memoryview] | None:
        """The next frame, waiting until ``deadline`` (monotonic; None = forever); None on timeout."""
        while True:
            frame = self.reader.next()
            if frame is not None:
                return frame
            timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                got = self.reader.fill(timeout)
            except EOFError:
                raise self.failure("its stdout closed") from None
            if not got and timeout is not None and time.monotonic() >= deadline:
                return None

    def close_stdin(self) -> None:
        with self.write_lock, contextlib.suppress(OSError):
            self.proc.stdin.close()

    def wait(self, timeout: float) -> int | None:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            log.warning("%s %s (pid %d) did not exit within %.0f s; killing it", BINARY_NAME, self.what,
                        self.proc.pid, timeout)
            self.proc.kill()
            return self.proc.wait(10)

    def reap(self) -> None:
        """Close our pipe ends once the process has ended."""
        for f in (self.proc.stdin, self.proc.stdout):
            with contextlib.suppress(OSError):
                f.close()
        self._stderr_thread.join(2.0)
        with contextlib.suppress(OSError):
            self.proc.stderr.close()


def _deadline(timeout: float | None) -> float | None:
    return None if timeout is None else time.monotonic() + timeout


# ---------------------------------------------------------------------------------------------
# producer
# ---------------------------------------------------------------------------------------------

SessionKey = tuple[str, str]  # (key, date)


def _session_stats(stats: Mapping[str, Mapping[str, Any]]) -> dict[SessionKey, dict[str, Any]]:
    out: dict[SessionKey, dict[str, Any]] = {}
    for name, st in stats.items():
        key, _, date = name.partition("|")
        out[(key, date)] = dict(st)
    return out


class BridgeProducer:
    """Produces QRSDP event messages through the bridge; never waits on the broker.

    ``send_run`` writes one frame per record array (split every 2^20 records); the bridge produces
    one message per record, byte-identical to :class:`~qrsdp_sim.kafka.sink.KafkaSink`'s, with
    franz-go's idempotent producer (acks=all, linger, LZ4, Kafka's murmur2 partitioner). Records the
    bridge cannot buffer fail at once ("local queue full"). Delivery is counted per (key, date)
    -- produced = handed over, delivered = acknowledged, failed = not delivered (incl. never
    queued, and still pending when a flush ended) -- and returned by :meth:`flush`.

    Thread-safe: sessions on several threads may share one producer.
    """

    def __init__(
        self,
        brokers: str,
        topic: str = DEFAULT_TOPIC,
        *,
        linger_ms: int = 5,
        delivery_timeout_ms: int = 120_000,
        max_buffered_records: int | None = None,
        extra_args: Sequence[str] = (),
        binary: str | os.PathLike[str] | None = None,
        ready_timeout: float = 30.0,
    ) -> None:
        self.brokers = brokers
        self.topic = topic
        args = [str(_binary(binary)), "produce", "--brokers", brokers, "--topic", topic,
                "--linger-ms", str(linger_ms), "--delivery-timeout-ms", str(delivery_timeout_ms)]
        if max_buffered_records is not None:
            args += ["--max-buffered-records", str(max_buffered_records)]
        args += list(extra_args)
        self._proc = _Process(args, "produce")
        self._request_lock = threading.Lock()
        self._ids = itertools.count(1)
        self.errors: list[str] = []  # non-fatal error events (bad frames)
        self.totals: dict[str, Any] = {}
        self.final: dict[str, Any] | None = None  # the "closed" event
        self.closed = False
        self._wait_for("ready", None, ready_timeout)

    @property
    def pid(self) -> int:
        return self._proc.proc.pid

    # -- sending -------------------------------------------------------------------------------
    def send_run(self, key: str | bytes, date: str | bytes, run_id: str | bytes, first_seq: int,
                 records: np.ndarray) -> None:
        """Produce ``records`` (RECORD_DTYPE) as messages with seq ``first_seq``, ``first_seq + 1``, ..."""
        if self.closed:
            raise BridgeError("BridgeProducer: send after close")
        if records.dtype != RECORD_DTYPE:
            raise TypeError(f"expected records of RECORD_DTYPE, got {records.dtype}")
        for i in range(0, len(records), MAX_RUN_RECORDS):
            part = records[i : i + MAX_RUN_RECORDS]
            self._proc.write(*encode_run(key, date, run_id, first_seq + i, part))
        self._drain_nowait()

    def send_message(self, key: str | bytes | None, value: bytes | None,
                     headers: Iterable[tuple[str, bytes | None]] = ()) -> None:
        """Produce one message as given (end-of-session markers, republished markers)."""
        if self.closed:
            raise BridgeError("BridgeProducer: send after close")
        self._proc.write(encode_message(key, value, headers))

    # -- requests --------------------------------------------------------------------------------
    def flush(self, timeout: float) -> dict[SessionKey, dict[str, Any]]:
        """Wait up to ``timeout`` s until everything sent is acknowledged; what is left is aborted and
        counted failed. Returns ``{(key, date): {produced, delivered, failed, pending, first_error}}``
        (cumulative since start); the totals are in :attr:`totals`."""
        reply = self._request({"op": "flush", "timeout_ms": max(0, int(timeout * 1000))}, "flushed",
                              timeout + 60.0)
        self.totals = dict(reply.get("totals") or {})
        return _session_stats(reply.get("stats") or {})

    def stats(self) -> dict[SessionKey, dict[str, Any]]:
        """Counters so far, without waiting (``pending`` = not yet acknowledged nor failed)."""
        reply = self._request({"op": "stats"}, "stats", 30.0)
        return _session_stats(reply.get("stats") or {})

    def ping(self, timeout: float = 5.0) -> str | None:
        """None when a broker answers within ``timeout`` s, else the reason."""
        reply = self._request({"op": "ping", "timeout_ms": int(timeout * 1000)}, "pong", timeout + 30.0)
        return reply.get("error")

    def close(self, timeout: float = 30.0) -> dict[SessionKey, dict[str, Any]]:
        """Flush (at most ``timeout`` s), stop the bridge and return the final stats. Idempotent."""
        if self.final is not None or self.closed:
            return _session_stats((self.final or {}).get("stats") or {})
        self.closed = True
        try:
            with self._request_lock:
                self._proc.write(encode_json({"op": "stop", "timeout_ms": max(0, int(timeout * 1000))}))
                self._proc.close_stdin()
                self.final = self._wait_for("closed", None, timeout + 60.0)
                self.totals = dict(self.final.get("totals") or {})
        finally:
            self._proc.wait(timeout + 30.0)
            self._proc.reap()
        return _session_stats(self.final.get("stats") or {})

    def __enter__(self) -> BridgeProducer:
        return self

    def __exit__(self, *exc: object) -> None:
        if not self.closed:
            with contextlib.suppress(BridgeError):
                self.close()

    def _request(self, cmd: dict[str, Any], event: str, timeout: float) -> dict[str, Any]:
        if self.closed:
            raise BridgeError(f"BridgeProducer: {cmd['op']} after close")
        with self._request_lock:
            rid = next(self._ids)
            self._proc.write(encode_json({**cmd, "id": rid}))
            return self._wait_for(event, rid, timeout)

    def _wait_for(self, event: str, rid: int | None, timeout: float) -> dict[str, Any]:
        deadline = _deadline(timeout)
        while True:
            frame = self._proc.next_frame(deadline)
            if frame is None:
                raise self._proc.failure(f"no {event!r} reply within {timeout:.0f} s")
            item = decode_frame(*frame, topic=self.topic)
            if not isinstance(item, Event):
                continue
            if item.name == "error":
                self._note_error(item)
                continue
            if item.name == event and (rid is None or item.get("id") == rid):
                return item.data

    def _note_error(self, item: Event) -> None:
        msg = str(item.get("message"))
        self.errors.append(msg)
        log.warning("%s produce: %s", BINARY_NAME, msg)
        if item.get("fatal"):
            raise self._proc.failure(f"fatal error: {msg}")

    def _drain_nowait(self) -> None:
        """Take any error events the bridge wrote unasked, so its stdout never fills up."""
        if not select.select([self._proc.reader.fd], [], [], 0)[0] or not self._request_lock.acquire(blocking=False):
            return
        try:
            while (frame := self._proc.next_frame(time.monotonic())) is not None:
                item = decode_frame(*frame, topic=self.topic)
                if isinstance(item, Event) and item.name == "error":
                    self._note_error(item)
        finally:
            self._request_lock.release()


# ---------------------------------------------------------------------------------------------
# consumer
# ---------------------------------------------------------------------------------------------

RevokeCallback = Callable[[list[int], bool], None]
AssignCallback = Callable[[list[int]], None]


class BridgeConsumer:
    """Consumes a topic through the bridge; yields :class:`Run`, :class:`RawMessage` and :class:`Event`.

    ``mode="subscribe"``: member of ``group`` (cooperative-sticky, no autocommit). When partitions are
    revoked (or lost) the bridge holds the rebalance until :meth:`revoke_done`: with ``on_revoke`` set,
    ``poll`` calls ``on_revoke(partitions, lost)`` in stream order -- after every item of those
    partitions was returned -- and then answers for you; without it the answer goes at once.
    ``mode="assign"``: no membership; :meth:`assign` sets partitions and start offsets, commits are
    "simple" (generation -1) and may carry per-partition metadata (``committed()`` reads it back).

    Offsets to commit are next offsets (``Run.next_offset``, ``RawMessage.offset() + 1``).
    One thread at a time (like a Kafka consumer).
    """

    def __init__(
        self,
        brokers: str,
        topic: str,
        group: str,
        *,
        mode: str = "subscribe",
        on_assign: AssignCallback | None = None,
        on_revoke: RevokeCallback | None = None,
        session_timeout_ms: int = 10_000,
        extra_args: Sequence[str] = (),
        binary: str | os.PathLike[str] | None = None,
        ready_timeout: float = 30.0,
    ) -> None:
        if mode not in ("subscribe", "assign"):
            raise ValueError(f"mode must be 'subscribe' or 'assign', not {mode!r}")
        self.brokers = brokers
        self.topic = topic
        self.group = group
        self.mode = mode
        self.on_assign = on_assign
        self.on_revoke = on_revoke
        args = [str(_binary(binary)), "consume", "--brokers", brokers, "--topic", topic, "--group", group,
                f"--{mode}", "--session-timeout-ms", str(session_timeout_ms), *extra_args]
        self._proc = _Process(args, f"consume ({mode})")
        self._queue: collections.deque[Item] = collections.deque()
        self._ids = itertools.count(1)
        self.assignment: set[int] = set()
        self.final: dict[str, Any] | None = None  # the "stopped" event
        self.closed = False
        self._ready = self._request_wait("ready", None, ready_timeout)

    @property
    def pid(self) -> int:
        return self._proc.proc.pid

    # -- reading ---------------------------------------------------------------------------------
    def poll(self, timeout: float | None = None) -> Item | None:
        """The next item, waiting up to ``timeout`` s (None = until one comes); None on timeout."""
        deadline = _deadline(timeout)
        while True:
            if self._queue:
                item = self._queue.popleft()
            else:
                frame = self._proc.next_frame(deadline)
                if frame is None:
                    return None
                item = decode_frame(*frame, topic=self.topic)
            if isinstance(item, Event) and not self._handle(item):
                continue
            return item

    def consume(self, max_items: int = 1024, timeout: float | None = 1.0) -> list[Item]:
        """Up to ``max_items`` items: waits up to ``timeout`` s for the first, then takes what is there."""
        first = self.poll(timeout)
        if first is None:
            return []
        out = [first]
        while len(out) < max_items:
            item = self.poll(0)
            if item is None:
                break
            out.append(item)
        return out

    def __iter__(self) -> Iterator[Item]:
        while not self.closed:
            item = self.poll(1.0)
            if item is not None:
                yield item

    def _handle(self, ev: Event) -> bool:
        """Side effects of an event as it reaches the caller; False drops it (a stale reply)."""
        if ev.name == "assigned" and "id" not in ev.data:  # group assignment (subscribe)
            parts = [int(p) for p in ev.get("partitions") or ()]
            self.assignment.update(parts)
            if self.on_assign is not None:
                self.on_assign(parts)
        elif ev.name == "revoked":
            parts = [int(p) for p in ev.get("partitions") or ()]
            self.assignment.difference_update(parts)
            try:
                if self.on_revoke is not None and not ev.get("stopping"):
                    self.on_revoke(parts, bool(ev.get("lost")))
            finally:
                if not ev.get("stopping"):
                    self.revoke_done(ev.get("id"))
        elif ev.name in ("committed", "committed_offsets", "partitions", "assigned", "stats"):
            return False  # the reply to a request that timed out
        elif ev.name == "error":
            log.warning("%s consume: %s", BINARY_NAME, ev.get("message"))
        return True

    # -- requests --------------------------------------------------------------------------------
    def revoke_done(self, revoke_id: int | None = None) -> None:
        """Let a held rebalance go on (after landing and committing the revoked partitions)."""
        cmd: dict[str, Any] = {"op": "revoke_done"}
        if revoke_id is not None:
            cmd["id"] = int(revoke_id)
        self._proc.write(encode_json(cmd))

    def commit(self, offsets: Mapping[int, int] | Iterable[tuple[int, int]],
               metadata: Mapping[int, str] | None = None, *, timeout: float = 30.0) -> None:
        """Commit ``{partition: next offset}`` synchronously (with ``{partition: metadata}``, <= 4000 bytes
        each). Raises :class:`BridgeRequestError` when the broker refuses."""
        self.commit_start(offsets, metadata, timeout=timeout)()

    def commit_start(self, offsets: Mapping[int, int] | Iterable[tuple[int, int]],
                     metadata: Mapping[int, str] | None = None, *, timeout: float = 30.0) -> Callable[[], None]:
        """Send a commit and return at once the function that waits for its answer (raising
        :class:`BridgeRequestError` when the broker refused): work that does not depend on the commit
        goes on meanwhile. Call the returned function before the next request or ``poll``."""
        pairs = offsets.items() if isinstance(offsets, Mapping) else offsets
        meta = metadata or {}
        body = [{"partition": int(p), "offset": int(o), "metadata": meta.get(int(p), "")} for p, o in pairs]
        if not body:
            return lambda: None
        cmd = {"op": "commit", "offsets": body, "timeout_ms": int(timeout * 1000)}
        rid = self._send_request(cmd)
        return lambda: self._check_reply(cmd, self._request_wait("committed", rid, timeout + 30.0))

    def committed(self, *, timeout: float = 30.0) -> dict[int, tuple[int, str]]:
        """The group's committed ``{partition: (offset, metadata)}`` for this topic (absent: none)."""
        reply = self._request({"op": "committed", "timeout_ms": int(timeout * 1000)}, "committed_offsets", timeout)
        return {int(o["partition"]): (int(o["offset"]), str(o.get("metadata") or ""))
                for o in reply.get("offsets") or ()}

    def partitions(self, *, timeout: float = 30.0) -> dict[int, tuple[int, int]]:
        """``{partition: (low watermark, high watermark)}`` of the topic."""
        reply = self._request({"op": "partitions", "timeout_ms": int(timeout * 1000)}, "partitions", timeout)
        return {int(p["partition"]): (int(p["low"]), int(p["high"])) for p in reply.get("partitions") or ()}

    def assign(self, offsets: Mapping[int, int], *, timeout: float = 30.0) -> None:
        """(assign mode) Consume exactly these partitions from these offsets (-2 earliest, -1 latest),
        replacing the previous assignment. Items of the old assignment not yet returned are dropped."""
        body = [{"partition": int(p), "offset": int(o)} for p, o in offsets.items()]
        self._request({"op": "assign", "partitions": body}, "assigned", timeout)
        self._queue = collections.deque(i for i in self._queue if isinstance(i, Event))
        self.assignment = set(int(p) for p in offsets)

    def stats(self, *, timeout: float = 30.0) -> dict[str, Any]:
        return self._request({"op": "stats"}, "stats", timeout)

    def close(self, timeout: float = 30.0) -> dict[str, Any] | None:
        """Stop (leaves the group), wait for the bridge to exit. Idempotent; returns the "stopped" event."""
        if self.closed:
            return self.final
        self.closed = True
        deadline = time.monotonic() + timeout
        try:
            with contextlib.suppress(BridgeError):
                self._proc.write(encode_json({"op": "stop"}))
            self._proc.close_stdin()
            with contextlib.suppress(BridgeError):
                while (frame := self._proc.next_frame(deadline)) is not None:
                    if frame[0] == FRAME_JSON:
                        item = decode_frame(*frame, topic=self.topic)
                        if isinstance(item, Event) and item.name == "stopped":
                            self.final = item.data
        finally:
            self._proc.wait(max(1.0, deadline - time.monotonic()))
            self._proc.reap()
        return self.final

    def __enter__(self) -> BridgeConsumer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _request(self, cmd: dict[str, Any], event: str, timeout: float) -> dict[str, Any]:
        rid = self._send_request(cmd)
        return self._check_reply(cmd, self._request_wait(event, rid, timeout + 30.0))

    def _send_request(self, cmd: dict[str, Any]) -> int:
        if self.closed:
            raise BridgeError(f"BridgeConsumer: {cmd['op']} after close")
        rid = next(self._ids)
        self._proc.write(encode_json({**cmd, "id": rid}))
        return rid

    def _check_reply(self, cmd: dict[str, Any], reply: dict[str, Any]) -> dict[str, Any]:
        if reply.get("error"):
            raise BridgeRequestError(f"{cmd['op']} on {self.topic} (group {self.group}): {reply['error']}")
        return reply

    def _request_wait(self, event: str, rid: int | None, timeout: float) -> dict[str, Any]:
        """Read until the reply; everything else is queued for ``poll`` in arrival order."""
        deadline = _deadline(timeout)
        while True:
            frame = self._proc.next_frame(deadline)
            if frame is None:
                raise self._proc.failure(f"no {event!r} reply within {timeout:.0f} s")
            item = decode_frame(*frame, topic=self.topic)
            if isinstance(item, Event) and item.name == event and (rid is None or item.get("id") == rid):
                return item.data
            self._queue.append(item)
