"""Landing sessions into the lake: raw events, per-event book states and one session row.

Tables (all hive-partitioned by ``symbol`` and ``date``, see :mod:`qrsdp_sim.lake.store`):

``events``       one row per record: symbol, date, seq (0-based position in the session),
                 the 26-byte record's fields (ts_ns, type, side, price_ticks, qty, order_id)
                 and ``_landed_at``.
``book_states``  one row per record: seq, ts_ns and the best bid/ask price (ticks; null when the
                 side is empty) and size after that event, replay flags, ``_landed_at``.
``sessions``     one row per session: seed, open (the header's p0) and the engine's close in
                 ticks, tick size, market open, session length, event count, source file.
"""

from __future__ import annotations

import datetime as dt
import os
import time
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa

from qrsdp_sim.eventlog.reader import EventLogReader
from qrsdp_sim.lake.store import Lake, LakeError, PartitionMarker, utc_now_iso
from qrsdp_sim.records import RECORD_DTYPE

if TYPE_CHECKING:  # the replay (numba, ~1 s to import) is loaded where books are replayed, not by the
    from qrsdp_sim.book.replay import BookStates  # Kafka consumer, which needs only the tables below

_LANDED_AT = pa.timestamp("us", tz="UTC")

EVENTS_SCHEMA = pa.schema(
    [
        ("symbol", pa.string()),
        ("date", pa.date32()),
        ("seq", pa.int64()),
        ("ts_ns", pa.uint64()),
        ("type", pa.uint8()),
        ("side", pa.uint8()),
        ("price_ticks", pa.int32()),
        ("qty", pa.uint32()),
        ("order_id", pa.uint64()),
        ("_landed_at", _LANDED_AT),
    ]
)

BOOK_STATES_SCHEMA = pa.schema(
    [
        ("symbol", pa.string()),
        ("date", pa.date32()),
        ("seq", pa.int64()),
        ("ts_ns", pa.uint64()),
        ("best_bid_ticks", pa.int32()),
        ("best_bid_qty", pa.int64()),
        ("best_ask_ticks", pa.int32()),
        ("best_ask_qty", pa.int64()),
        ("replay_flags", pa.uint8()),
        ("_landed_at", _LANDED_AT),
    ]
)

SESSIONS_SCHEMA = pa.schema(
    [
        ("symbol", pa.string()),
        ("date", pa.date32()),
        ("seed", pa.uint64()),
        ("open_ticks", pa.int32()),
        ("close_ticks", pa.int32()),
        ("tick_size", pa.int32()),
        ("market_open_ns", pa.int64()),
        ("session_seconds", pa.int32()),
        ("events", pa.int64()),
        ("first_ts_ns", pa.uint64()),
        ("last_ts_ns", pa.uint64()),
        ("source", pa.string()),
        ("_landed_at", _LANDED_AT),
    ]
)


@dataclass(frozen=True)
class SessionInfo:
    """One session's row in ``raw/sessions``."""

    symbol: str
    date: dt.date
    seed: int
    open_ticks: int
    close_ticks: int | None  # the engine's close (None when unknown, e.g. a file without manifest)
    tick_size: int
    market_open_ns: int
    session_seconds: int
    events: int
    first_ts_ns: int | None
    last_ts_ns: int | None
    source: str


@dataclass(frozen=True)
class LandingReport:
    table: str
    symbol: str
    date: dt.date
    rows: int
    bytes: int
    seconds: float
    marker: PartitionMarker

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else float("inf")


def _landed_at_value(landed_at: str | None) -> dt.datetime:
    return dt.datetime.fromisoformat(landed_at or utc_now_iso())


def _const(value, type_: pa.DataType, n: int) -> pa.Array:
    return pa.repeat(pa.scalar(value, type_), n)


def events_table(
    records: np.ndarray, symbol: str, date: dt.date, *, landed_at: str | None = None
) -> pa.Table:
    """The ``events`` rows of one session (``seq`` = position in ``records``)."""
    if records.dtype != RECORD_DTYPE:
        raise TypeError(f"expected records of RECORD_DTYPE, got {records.dtype}")
    n = len(records)
    cols = [
        _const(symbol, pa.string(), n),
        _const(date, pa.date32(), n),
        pa.array(np.arange(n, dtype=np.int64)),
        *(pa.array(np.ascontiguousarray(records[f])) for f in RECORD_DTYPE.names),
        _const(_landed_at_value(landed_at), _LANDED_AT, n),
    ]
    return pa.Table.from_arrays(cols, schema=EVENTS_SCHEMA)


def book_states_table(
    states: BookStates,
    ts_ns: np.ndarray,
    symbol: str,
    date: dt.date,
    *,
    seq: np.ndarray | None = None,
    landed_at: str | None = None,
) -> pa.Table:
    """The ``book_states`` rows of one session (empty sides become nulls)."""
    from qrsdp_sim.book.replay import NO_PRICE

    n = len(states)
    bid_none = states.bid_price == NO_PRICE
    ask_none = states.ask_price == NO_PRICE
    cols = [
        _const(symbol, pa.string(), n),
        _const(date, pa.date32(), n),
        pa.array(np.arange(n, dtype=np.int64) if seq is None else np.ascontiguousarray(seq, dtype=np.int64)),
        pa.array(np.ascontiguousarray(ts_ns, dtype=np.uint64)),
        pa.array(states.bid_price, mask=bid_none),
        pa.array(states.bid_qty),
        pa.array(states.ask_price, mask=ask_none),
        pa.array(states.ask_qty),
        pa.array(states.flags),
        _const(_landed_at_value(landed_at), _LANDED_AT, n),
    ]
    return pa.Table.from_arrays(cols, schema=BOOK_STATES_SCHEMA)


def sessions_table(info: SessionInfo, *, landed_at: str | None = None) -> pa.Table:
    row = asdict(info)
    row["_landed_at"] = _landed_at_value(landed_at)
    return pa.Table.from_pylist([row], schema=SESSIONS_SCHEMA)


def session_info_from_file(
    path: str | os.PathLike[str],
    symbol: str,
    date: dt.date,
    *,
    records: np.ndarray | None = None,
    close_ticks: int | None = None,
    market_open_ns: int | None = None,
) -> SessionInfo:
    """Describe a ``.qrsdp`` session (header + records; close from the caller's manifest)."""
    reader = EventLogReader(path)
    h = reader.header
    recs = reader.read_all() if records is None else records
    first = int(recs["ts_ns"][0]) if len(recs) else None
    return SessionInfo(
        symbol=symbol,
        date=date,
        seed=int(h.seed),
        open_ticks=int(h.p0_ticks),
        close_ticks=None if close_ticks is None else int(close_ticks),
        tick_size=int(h.tick_size),
        # the opening book is stamped at the market open; a manifest may say so explicitly
        market_open_ns=int(market_open_ns if market_open_ns is not None else (first or 0)),
        session_seconds=int(h.session_seconds),
        events=len(recs),
        first_ts_ns=first,
        last_ts_ns=int(recs["ts_ns"][-1]) if len(recs) else None,
        source=str(path),
    )


def land_session_file(
    lake: Lake,
    path: str | os.PathLike[str],
    symbol: str,
    date: dt.date,
    *,
    close_ticks: int | None = None,
    market_open_ns: int | None = None,
    rows_per_file: int = 4_000_000,
    marker_extra: dict | None = None,
) -> tuple[LandingReport, LandingReport]:
    """Land a ``.qrsdp`` file: its ``sessions`` row, then its ``events`` (marker last).

    ``marker_extra`` is added to the events marker (e.g. the landing run's id).
    Returns (events report, sessions report).
    """
    records = EventLogReader(path).read_all()
    info = session_info_from_file(
        path, symbol, date, records=records, close_ticks=close_ticks, market_open_ns=market_open_ns
    )
    landed_at = utc_now_iso()
    sessions = land_table(
        lake, "sessions", symbol, date, sessions_table(info, landed_at=landed_at), landed_at=landed_at
    )
    events = land_records(lake, symbol, date, records, landed_at=landed_at, rows_per_file=rows_per_file,
                          marker_extra={"source": str(path), "open_ticks": info.open_ticks,
                                        "close_ticks": info.close_ticks, **(marker_extra or {})})  # fmt: skip
    return events, sessions


def land_records(
    lake: Lake,
    symbol: str,
    date: dt.date,
    records: np.ndarray,
    *,
    landed_at: str | None = None,
    rows_per_file: int = 4_000_000,
    marker_extra: dict | None = None,
) -> LandingReport:
    """Land one session's records as the ``events`` partition (replacing any earlier landing)."""
    landed_at = landed_at or utc_now_iso()
    table = events_table(records, symbol, date, landed_at=landed_at)
    extra = dict(marker_extra or {})
    if len(records):
        extra.update(first_ts_ns=int(records["ts_ns"][0]), last_ts_ns=int(records["ts_ns"][-1]))
    return land_table(lake, "events", symbol, date, table, landed_at=landed_at, rows_per_file=rows_per_file,
                      marker_extra=extra)  # fmt: skip


def land_table(
    lake: Lake,
    table_name: str,
    symbol: str,
    date: dt.date,
    table: pa.Table,
    *,
    landed_at: str | None = None,
    rows_per_file: int = 4_000_000,
    marker_extra: dict | None = None,
) -> LandingReport:
    started = time.perf_counter()
    marker = lake.write_partition(
        table_name,
        symbol,
        date,
        table,
        rows_per_file=rows_per_file,
        marker_extra=marker_extra,
        landed_at=landed_at,
    )
    return LandingReport(
        table=table_name,
        symbol=symbol,
        date=date,
        rows=table.num_rows,
        bytes=lake.partition_bytes(table_name, symbol, date),
        seconds=time.perf_counter() - started,
        marker=marker,
    )


def read_records(lake: Lake, symbol: str, date: dt.date | str) -> np.ndarray:
    """A landed ``events`` partition back as a record array in ``seq`` order.

    Exact duplicates of a row (same seq and record) are dropped -- at-least-once
    delivery is harmless. Raises :class:`LakeError` for two different records under
    one seq, or for a gap in ``seq`` (which must run 0..n-1).
    """
    t = lake.read_partition("events", symbol, date, columns=["seq", *RECORD_DTYPE.names])
    seq = t.column("seq").to_numpy()
    rec = np.empty(len(seq), dtype=RECORD_DTYPE)
    if np.array_equal(seq, np.arange(len(seq), dtype=seq.dtype)):
        # stored as seq 0..n-1 (what land_records writes): already in order, no copies, no gaps
        for name in RECORD_DTYPE.names:
            rec[name] = t.column(name).to_numpy()
        return rec
    order = np.argsort(seq, kind="stable")
    seq = seq[order]
    rec = np.empty(len(seq), dtype=RECORD_DTYPE)
    for name in RECORD_DTYPE.names:
        rec[name] = t.column(name).to_numpy()[order]
    if len(seq):
        dup = np.flatnonzero(seq[1:] == seq[:-1]) + 1
        if len(dup):
            if np.any(rec[dup] != rec[dup - 1]):
                k = int(dup[np.argmax(rec[dup] != rec[dup - 1])])
                raise LakeError(f"events {symbol} {date}: two different records with seq {int(seq[k])}")
            keep = np.ones(len(seq), dtype=bool)
            keep[dup] = False
            seq, rec = seq[keep], rec[keep]
        expected = np.arange(len(seq), dtype=seq.dtype)
        if not np.array_equal(seq, expected):
            k = int(np.argmax(seq != expected))
            raise LakeError(
                f"events {symbol} {date}: seq is not 0..{len(seq) - 1}: expected {k}, found {int(seq[k])}"
            )
    return rec


def land_book_states(
    lake: Lake,
    symbol: str,
    date: dt.date,
    *,
    records: np.ndarray | None = None,
    strict: bool = True,
    rows_per_file: int = 4_000_000,
) -> tuple[LandingReport, BookStates]:
    """Replay a session (from the landed ``events`` partition unless ``records`` is given) and
    land its per-event top of book as the ``book_states`` partition.

    ``strict``: a stream that does not replay raises ``BookReplayError`` and nothing is landed.
    """
    from qrsdp_sim.book.replay import replay_book

    recs = read_records(lake, symbol, date) if records is None else records
    states = replay_book(recs, strict=strict)
    landed_at = utc_now_iso()
    table = book_states_table(states, recs["ts_ns"], symbol, date, landed_at=landed_at)
    report = land_table(lake, "book_states", symbol, date, table, landed_at=landed_at, rows_per_file=rows_per_file,
                        marker_extra={"flagged_events": states.n_flagged})  # fmt: skip
    return report, states
