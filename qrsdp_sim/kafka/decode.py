"""Decoding a batch of Kafka event messages into columns (one ``frombuffer`` per batch).

Every message is untrusted. Messages that do not follow docs/kafka-message-format.md are returned
separately as :class:`Rejected` (a short ``kind`` for counters and the reason), for the dead-letter
topic; nothing a message carries (null headers, absurd numbers, garbage) makes these functions raise.

:func:`decode_messages` takes confluent-kafka messages (or anything with their accessors, such
as the bridge's ``RawMessage``); :func:`decode_items` takes what ``BridgeConsumer`` yields:
runs (already columns: no work per record) and raw messages (through :func:`decode_messages`).

What is checked, per event: the key is a symbol (1-8 characters A-Z0-9), the ``date`` header is
``YYYY-MM-DD`` (years 2000-2100), the value is 26 bytes, the ``seq`` header is 8 bytes below
``MAX_SESSION_EVENTS``, and the record's fields are possible (known type, the side its type implies,
quantity >= 1, timestamp within the day). Per end-of-session marker: key, date, the ``eos`` header
(:meth:`EndOfSession.decode`: count >= 1) and the optional ``session`` header
(:meth:`SessionDescription.decode`).
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from qrsdp_sim.eventlog.consistency import EXPECTED_SIDE
from qrsdp_sim.kafka.message import (
    DAY_NS,
    H_DATE,
    H_EOS,
    H_RUN_ID,
    H_SEQ,
    H_SESSION,
    H_TS_NS,
    MAX_SESSION_EVENTS,
    EndOfSession,
    MalformedMessage,
    SessionDescription,
)
from qrsdp_sim.records import EVENT_TYPE_NAMES, N_EVENT_TYPES, RECORD_DTYPE, RECORD_SIZE

if TYPE_CHECKING:
    from qrsdp_sim.kafka.bridge import Run

_SYMBOL_OK = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")
_DATE_RE = re.compile(rb"\d{4}-\d{2}-\d{2}")
# The side each event type must carry; index N_EVENT_TYPES stands for every unknown type (which is
# rejected for its type anyway).
_EXPECTED_SIDE = np.append(EXPECTED_SIDE, np.uint8(255))


@dataclass
class SessionRows:
    """The well-formed event messages of one (symbol, date) inside a batch."""

    symbol: str
    date: dt.date
    records: np.ndarray  # RECORD_DTYPE
    seq: np.ndarray  # int64
    first_offset: int
    last_offset: int


@dataclass
class Marker:
    """A well-formed end-of-session marker."""

    symbol: str
    date: dt.date
    eos: EndOfSession
    offset: int
    session: SessionDescription | None  # from the optional `session` header
    message: Any  # the message itself (to dead-letter it if its completion cannot be done)


class Rejected(NamedTuple):
    message: Any
    kind: str  # short stable name for counters: key, date, value_size, seq, record, eos, session
    reason: str


@dataclass
class DecodedBatch:
    sessions: list[SessionRows] = field(default_factory=list)
    markers: list[Marker] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)


_KEY_REASON = "key {!r} is not a symbol of 1-8 characters A-Z0-9"
_DATE_REASON = "missing or unknown date header {!r} (expected YYYY-MM-DD, years 2000-2100)"


def _symbol(key: Any) -> str | None:
    if not isinstance(key, bytes) or not key or len(key) > 8 or not set(key) <= _SYMBOL_OK:
        return None
    return key.decode("ascii")


_dates: dict[bytes, dt.date | None] = {}  # parsed date headers (a handful of distinct values)


def _date(raw: Any) -> dt.date | None:
    if not isinstance(raw, bytes):
        return None
    day = _dates.get(raw, False)
    if day is False:
        if len(_dates) > 4096:  # only malformed input makes many distinct values
            _dates.clear()
        day = None
        if _DATE_RE.fullmatch(raw):
            try:
                parsed = dt.date.fromisoformat(raw.decode("ascii"))
                day = parsed if 2000 <= parsed.year <= 2100 else None
            except ValueError:
                pass
        _dates[raw] = day
    return day


def bad_records(records: np.ndarray, seq: np.ndarray) -> np.ndarray | None:
    """Mask of the records (with their ``seq``, uint64) that no producer can have sent, or None when
    every one is possible (the common case: a few vectorised comparisons)."""
    types = records["type"]
    bad = (
        (types >= N_EVENT_TYPES)
        | (records["side"] != _EXPECTED_SIDE[np.minimum(types, N_EVENT_TYPES)])
        | (records["qty"] == 0)
        | (records["ts_ns"] >= DAY_NS)
        | (seq >= MAX_SESSION_EVENTS)
    )
    return bad if bad.any() else None


def record_problem(record: np.void, seq: int) -> str:
    """Why one record was rejected by :func:`bad_records`."""
    t, side = int(record["type"]), int(record["side"])
    if t >= N_EVENT_TYPES:
        return f"record type {t} is unknown (0..{N_EVENT_TYPES - 1})"
    if side != _EXPECTED_SIDE[t]:
        return f"record side {side} does not match type {EVENT_TYPE_NAMES[t]}"
    if int(record["qty"]) == 0:
        return "record quantity is 0"
    if int(record["ts_ns"]) >= DAY_NS:
        return f"record timestamp {int(record['ts_ns'])} ns is not a time of day"
    return f"seq {seq} exceeds {MAX_SESSION_EVENTS - 1}"


def _kind_of(problem: str) -> str:
    return "seq" if problem.startswith("seq ") else "record"


def decode_messages(messages: list[Any]) -> DecodedBatch:
    """Split one partition's messages (in offset order) into session rows, markers and rejects.

    Fast path: the producer's header order (ts_ns, date, seq, run_id) is checked by name
    and read by position; anything else goes through the general path.
    """
    out = DecodedBatch()
    # (key, date bytes) -> (values, seqs, messages)
    groups: dict[tuple[Any, Any], tuple[list[bytes], list[bytes], list[Any]]] = {}
    for m in messages:
        value = m.value()
        headers = m.headers()
        if (
            value is not None
            and len(value) == RECORD_SIZE
            and headers is not None
            and len(headers) == 4
            and headers[1][0] == H_DATE
            and headers[2][0] == H_SEQ
            and headers[2][1] is not None
            and len(headers[2][1]) == 8
        ):
            key = (m.key(), headers[1][1])
            group = groups.get(key)
            if group is None:
                group = groups[key] = ([], [], [])
            group[0].append(value)
            group[1].append(headers[2][1])
            group[2].append(m)
            continue
        try:
            _decode_slow(m, out, groups)
        except MalformedMessage as exc:
            out.rejected.append(Rejected(m, exc.kind, exc.reason))
    for (key, raw_date), (vals, seqs, msgs) in groups.items():
        symbol = _symbol(key)
        day = _date(raw_date)
        if symbol is None:
            out.rejected.extend(Rejected(m, "key", _KEY_REASON.format(key)) for m in msgs)
            continue
        if day is None:
            out.rejected.extend(Rejected(m, "date", _DATE_REASON.format(raw_date)) for m in msgs)
            continue
        records = np.frombuffer(b"".join(vals), dtype=RECORD_DTYPE)
        seq = np.frombuffer(b"".join(seqs), dtype=">u8")
        bad = bad_records(records, seq)
        if bad is not None:
            for i in np.flatnonzero(bad).tolist():
                problem = record_problem(records[i], int(seq[i]))
                out.rejected.append(Rejected(msgs[i], _kind_of(problem), problem))
            keep = ~bad
            if not keep.any():
                continue
            records, seq = records[keep], seq[keep]
            msgs = [m for m, k in zip(msgs, keep.tolist(), strict=True) if k]
        out.sessions.append(SessionRows(symbol, day, records, seq.astype(np.int64), msgs[0].offset(),
                                        msgs[-1].offset()))
    return out


def _decode_slow(m: Any, out: DecodedBatch, groups: dict) -> None:
    """One message outside the fast path: a marker is decoded here, an event joins ``groups``;
    raises :class:`MalformedMessage`."""
    headers = dict(m.headers() or ())
    key = m.key()
    if _symbol(key) is None:
        raise MalformedMessage("key", _KEY_REASON.format(key))
    raw_date = headers.get(H_DATE)
    day = _date(raw_date)
    if day is None:
        raise MalformedMessage("date", _DATE_REASON.format(raw_date))
    value = m.value() or b""
    if H_EOS in headers and not value:
        eos = EndOfSession.decode(headers[H_EOS])
        session = SessionDescription.decode(headers[H_SESSION], eos) if H_SESSION in headers else None
        out.markers.append(Marker(_symbol(key), day, eos, m.offset(), session, m))
        return
    if len(value) != RECORD_SIZE:
        raise MalformedMessage("value_size", f"value is {len(value)} bytes, an event record is {RECORD_SIZE}")
    seq = headers.get(H_SEQ)
    if not isinstance(seq, bytes) or len(seq) != 8:
        raise MalformedMessage("seq", "missing or malformed seq header (8 bytes big-endian)")
    group = groups.setdefault((key, raw_date), ([], [], []))
    group[0].append(value)
    group[1].append(seq)
    group[2].append(m)


def run_seq(run: Run) -> np.ndarray:
    """The seq headers of a run's messages as uint64 (consecutive, wrapping as the bridge compares them)."""
    return np.arange(len(run.records), dtype=np.uint64) + np.uint64(run.first_seq)


def decode_items(items: list[Any], topic: str = "") -> DecodedBatch:
    """Like :func:`decode_messages` for one partition's ``BridgeConsumer`` items in offset order:
    :class:`~qrsdp_sim.kafka.bridge.Run` objects and raw messages.

    A run is already one session's records with contiguous seqs: the runs of a (key, date) are
    concatenated as they are. Raw messages (end-of-session markers, anything malformed or in
    another header order) go through :func:`decode_messages`; its well-formed events join the
    runs' rows of the same session. A run whose key or date is invalid, or the records of a run
    that break the format, are rebuilt into their messages (exactly: the bridge forms runs only
    from messages whose ``ts_ns`` header is the record's own) and rejected with the same reasons
    as on the confluent-kafka path.
    """
    from qrsdp_sim.kafka.bridge import Run

    runs: dict[tuple[bytes, bytes], list[Run]] = {}
    raws: list[Any] = []
    for item in items:
        if isinstance(item, Run):
            runs.setdefault((item.key, item.date), []).append(item)
        else:
            raws.append(item)
    out = decode_messages(raws) if raws else DecodedBatch()
    rows: dict[tuple[str, dt.date], SessionRows] = {}
    for (key, raw_date), group in runs.items():
        symbol = _symbol(key)
        day = _date(raw_date)
        if symbol is None or day is None:
            rebuilt = [m for run in group for m in run_messages(run, topic)]
            out.rejected.extend(decode_messages(rebuilt).rejected)
            continue
        parts: list[tuple[np.ndarray, np.ndarray, int, int]] = []
        for run in group:
            seq = run_seq(run)
            bad = bad_records(run.records, seq)
            if bad is None:
                parts.append((run.records, seq, run.first_offset, run.last_offset))
                continue
            messages = run_messages(run, topic)
            for i in np.flatnonzero(bad).tolist():
                problem = record_problem(run.records[i], int(seq[i]))
                out.rejected.append(Rejected(messages[i], _kind_of(problem), problem))
            keep = np.flatnonzero(~bad)
            if len(keep):
                parts.append((run.records[keep], seq[keep], run.first_offset + int(keep[0]),
                              run.first_offset + int(keep[-1])))
        if not parts:
            continue
        if len(parts) == 1:
            records, seq = parts[0][0], parts[0][1]
        else:
            records = np.concatenate([p[0] for p in parts])
            seq = np.concatenate([p[1] for p in parts])
        rows[(symbol, day)] = SessionRows(symbol, day, records, seq.astype(np.int64), parts[0][2], parts[-1][3])
    for extra in out.sessions:  # well-formed events that were not in a run (e.g. another header order)
        have = rows.get((extra.symbol, extra.date))
        if have is None:
            rows[(extra.symbol, extra.date)] = extra
            continue
        rows[(extra.symbol, extra.date)] = SessionRows(
            extra.symbol, extra.date, np.concatenate([have.records, extra.records]),
            np.concatenate([have.seq, extra.seq]), min(have.first_offset, extra.first_offset),
            max(have.last_offset, extra.last_offset),
        )
    out.sessions = list(rows.values())
    return out


def run_messages(run: Run, topic: str = "") -> list[Any]:
    """The Kafka messages a bridge :class:`~qrsdp_sim.kafka.bridge.Run` was made of, as ``RawMessage``
    objects (key, value and the four headers exactly as produced)."""
    from qrsdp_sim.kafka.bridge import RawMessage

    raw = run.records.tobytes()
    ts = np.ascontiguousarray(run.records["ts_ns"], dtype=">u8").tobytes()
    seq = run_seq(run).astype(">u8").tobytes()
    out = []
    for i in range(len(run)):
        headers = [(H_TS_NS, ts[8 * i : 8 * i + 8]), (H_DATE, run.date), (H_SEQ, seq[8 * i : 8 * i + 8]),
                   (H_RUN_ID, run.run_id)]
        out.append(RawMessage(topic, run.partition, run.first_offset + i, run.key,
                              raw[RECORD_SIZE * i : RECORD_SIZE * (i + 1)], headers))
    return out


def rows_messages(rows: SessionRows, topic: str, partition: int) -> list[Any]:
    """Event messages rebuilt from landed-to-be rows (to dead-letter rows that cannot be written).
    Offsets are not known per row: each carries the rows' first offset; ``run_id`` is empty."""
    from qrsdp_sim.kafka.bridge import RawMessage

    raw = np.ascontiguousarray(rows.records).tobytes()
    ts = np.ascontiguousarray(rows.records["ts_ns"], dtype=">u8").tobytes()
    seq = np.ascontiguousarray(rows.seq, dtype=">u8").tobytes()
    key, date = rows.symbol.encode(), rows.date.isoformat().encode()
    return [
        RawMessage(topic, partition, rows.first_offset, key, raw[RECORD_SIZE * i : RECORD_SIZE * (i + 1)],
                   [(H_TS_NS, ts[8 * i : 8 * i + 8]), (H_DATE, date), (H_SEQ, seq[8 * i : 8 * i + 8]),
                    (H_RUN_ID, b"")])
        for i in range(len(rows.records))
    ]
