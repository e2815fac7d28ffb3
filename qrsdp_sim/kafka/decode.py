"""Decoding a batch of Kafka event messages into columns (one ``frombuffer`` per batch).

Messages that do not follow docs/kafka-message-format.md are returned separately with
the reason, for the dead-letter topic; they never stop a consumer.

:func:`decode_messages` takes confluent-kafka messages (or anything with their accessors, such
as the bridge's ``RawMessage``); :func:`decode_items` takes what ``BridgeConsumer`` yields:
runs (already columns: no work per record) and raw messages (through :func:`decode_messages`).
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from qrsdp_sim.kafka.message import H_DATE, H_EOS, H_RUN_ID, H_SEQ, H_SESSION, H_TS_NS, EndOfSession
from qrsdp_sim.records import RECORD_DTYPE, RECORD_SIZE

if TYPE_CHECKING:
    from qrsdp_sim.kafka.bridge import Run

_SYMBOL_OK = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")


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
class DecodedBatch:
    sessions: list[SessionRows] = field(default_factory=list)
    # (symbol, date, marker, offset, session description from the `session` header or None)
    markers: list[tuple[str, dt.date, EndOfSession, int, dict | None]] = field(default_factory=list)
    rejected: list[tuple[Any, str]] = field(default_factory=list)  # (message, reason)


def _symbol(key: bytes | None) -> str | None:
    if not key or len(key) > 8 or not set(key) <= _SYMBOL_OK:
        return None
    return key.decode("ascii")


_dates: dict[bytes, dt.date | None] = {}  # parsed date headers (a handful of distinct values)


def _date(raw: bytes | None) -> dt.date | None:
    if raw is None:
        return None
    if raw not in _dates:
        if len(_dates) > 4096:  # only malformed input makes many distinct values
            _dates.clear()
        try:
            day = dt.date.fromisoformat(raw.decode("ascii"))
            _dates[raw] = day if 2000 <= day.year <= 2100 else None
        except (UnicodeDecodeError, ValueError):
            _dates[raw] = None
    return _dates[raw]


def decode_messages(messages: list[Any]) -> DecodedBatch:
    """Split one partition's messages (in offset order) into session rows, markers and rejects.

    Fast path: the producer's header order (ts_ns, date, seq, run_id) is checked by name
    and read by position; anything else goes through the general path.
    """
    out = DecodedBatch()
    # (key bytes, date bytes) -> (values, seqs, offsets)
    groups: dict[tuple[bytes, bytes], tuple[list[bytes], list[bytes], list[int]]] = {}
    for m in messages:
        value = m.value()
        headers = m.headers()
        key = m.key()
        if (
            value is not None
            and len(value) == RECORD_SIZE
            and headers is not None
            and len(headers) == 4
            and headers[1][0] == H_DATE
            and headers[2][0] == H_SEQ
            and len(headers[2][1]) == 8
        ):
            group = groups.get((key, headers[1][1]))
            if group is None:
                group = groups[(key, headers[1][1])] = ([], [], [])
            group[0].append(value)
            group[1].append(headers[2][1])
            group[2].append(m.offset())
            continue
        _decode_slow(m, out, groups)
    for (key, raw_date), (vals, seqs, offs) in groups.items():
        symbol = _symbol(key)
        day = _date(raw_date)
        if symbol is None or day is None:
            reason = (f"key {key!r} is not a symbol of 1-8 characters A-Z0-9" if symbol is None
                      else f"missing or unknown date header {raw_date!r}")
            out.rejected.extend((m, reason) for m in _messages_at(messages, offs))
            continue
        records = np.frombuffer(b"".join(vals), dtype=RECORD_DTYPE)
        seq = np.frombuffer(b"".join(seqs), dtype=">u8").astype(np.int64)
        out.sessions.append(SessionRows(symbol, day, records, seq, offs[0], offs[-1]))
    return out


def _messages_at(messages: list[Any], offsets: list[int]) -> list[Any]:
    wanted = set(offsets)
    return [m for m in messages if m.offset() in wanted]


def _decode_slow(m: Any, out: DecodedBatch, groups: dict) -> None:
    headers = dict(m.headers() or ())
    key = m.key()
    if _symbol(key) is None:
        out.rejected.append((m, f"key {key!r} is not a symbol of 1-8 characters A-Z0-9"))
        return
    raw_date = headers.get(H_DATE)
    day = _date(raw_date)
    if day is None:
        out.rejected.append((m, f"missing or unknown date header {raw_date!r}"))
        return
    value = m.value() or b""
    if H_EOS in headers and not value:
        try:
            session = json.loads(headers[H_SESSION]) if H_SESSION in headers else None
            if session is not None and not isinstance(session, dict):
                raise ValueError("session header is not a JSON object")
            out.markers.append((_symbol(key), day, EndOfSession.decode(headers[H_EOS]), m.offset(), session))
        except ValueError as exc:
            out.rejected.append((m, f"bad end-of-session marker: {exc}"))
        return
    if len(value) != RECORD_SIZE:
        out.rejected.append((m, f"value is {len(value)} bytes, an event record is {RECORD_SIZE}"))
        return
    seq = headers.get(H_SEQ)
    if seq is None or len(seq) != 8:
        out.rejected.append((m, "missing or malformed seq header (8 bytes big-endian)"))
        return
    group = groups.setdefault((key, raw_date), ([], [], []))
    group[0].append(value)
    group[1].append(seq)
    group[2].append(m.offset())


def decode_items(items: list[Any], topic: str = "") -> DecodedBatch:
    """Like :func:`decode_messages` for one partition's ``BridgeConsumer`` items in offset order:
    :class:`~qrsdp_sim.kafka.bridge.Run` objects and raw messages.

    A run is already one session's records with contiguous seqs: the runs of a (key, date) are
    concatenated as they are. Raw messages (end-of-session markers, anything malformed or in
    another header order) go through :func:`decode_messages`; its well-formed events join the
    runs' rows of the same session. A run whose key or date is invalid is rebuilt into its
    messages (exactly: the bridge forms runs only from messages whose ``ts_ns`` header is the
    record's own) and rejected with the same reasons as on the confluent-kafka path.
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
        if len(group) == 1:
            records, seq = group[0].records, group[0].seq
        else:
            records = np.concatenate([r.records for r in group])
            seq = np.concatenate([r.seq for r in group])
        rows[(symbol, day)] = SessionRows(symbol, day, records, seq, group[0].first_offset, group[-1].last_offset)
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
    seq = np.arange(run.first_seq, run.first_seq + len(run), dtype=">u8").tobytes()
    out = []
    for i in range(len(run)):
        headers = [(H_TS_NS, ts[8 * i : 8 * i + 8]), (H_DATE, run.date), (H_SEQ, seq[8 * i : 8 * i + 8]),
                   (H_RUN_ID, run.run_id)]
        out.append(RawMessage(topic, run.partition, run.first_offset + i, run.key,
                              raw[RECORD_SIZE * i : RECORD_SIZE * (i + 1)], headers))
    return out
