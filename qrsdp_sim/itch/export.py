"""``qrsdp itch-export``: sessions as a binary ITCH 5.0 file (NASDAQ's historical-file layout).

The file is the day's message stream, each message preceded by its 2-byte big-endian length --
the layout of NASDAQ's published ``*.NASDAQ_ITCH50`` files -- with no MoldUDP64 framing. It holds
one trading day: start of messages, start of system hours, one Stock Directory per security, start
of market hours, the order messages of every session merged by timestamp (ties: by stock locate,
then session order), end of market hours, end of system hours, end of messages. Order references
follow the feed's rule; match numbers are the messages' positions in the file (1-based), i.e. the
sequence numbers the live feed would give them in this order. Cancels become ``D`` or ``X`` and
executions ``E`` exactly as on the live feed (the resting orders are tracked the same way).

Records the feed would refuse (:mod:`qrsdp_sim.itch.validate`) are left out and counted by reason in
the summary (``rejected``, with the first few described in ``first_rejected``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from qrsdp_sim.eventlog.reader import EventLogReader
from qrsdp_sim.itch.feed import DayFeed, Directory
from qrsdp_sim.itch.order_state import OrderTable
from qrsdp_sim.itch.validate import (
    OUT_OF_SEQUENCE,
    REASON_NAMES,
    TAKEN,
    UNFIT,
    StockSequence,
    check_records,
    describe,
)
from qrsdp_sim.kafka.republish import SessionFile, identify

CHUNK = 65_536
FIRST_REJECTED = 5  # rejected records described in the summary


def find_sessions(paths: list[str | os.PathLike[str]], date: str | None = None) -> list[SessionFile]:
    """Session files from paths: ``.qrsdp`` files, or run folders (``OUTPUT/SYMBOL/DATE.qrsdp``)."""
    out: list[SessionFile] = []
    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            out.extend(identify(f) for f in sorted(p.glob("*/*.qrsdp")))
        elif p.is_file():
            out.append(identify(p))
        else:
            raise ValueError(f"{p}: no such file or directory")
    if date is not None:
        out = [s for s in out if s.date.isoformat() == date]
    if not out:
        raise ValueError("no sessions found" + (f" for {date}" if date else ""))
    dates = sorted({s.date.isoformat() for s in out})
    if len(dates) > 1:
        raise ValueError(f"sessions of several dates ({', '.join(dates)}): choose one with --date")
    symbols = [s.symbol for s in out]
    if len(set(symbols)) != len(symbols):
        raise ValueError("the same symbol appears twice for one date")
    return out


def export_day(
    sessions: list[SessionFile],
    output: str | os.PathLike[str],
    *,
    symbols: list[str] | None = None,
    tick_size: int | None = None,
) -> dict[str, Any]:
    """Write one day's sessions (merged by timestamp) as a length-prefixed ITCH 5.0 file."""
    readers = [(s, EventLogReader(s.path)) for s in sessions]
    ticks = {int(r.header.tick_size) for _, r in readers}
    if tick_size is None:
        if len(ticks) != 1:
            raise ValueError(f"sessions have different tick sizes {sorted(ticks)}: pass --tick-size")
        tick_size = ticks.pop()
    directory = Directory.of(symbols or [s.symbol for s in sessions])
    missing = [s.symbol for s in sessions if directory.locate(s.symbol) is None]
    if missing:
        raise ValueError(f"symbols {missing} are not in the directory {list(directory.symbols)}")
    feed = DayFeed(directory, tick_size)
    rejected: dict[str, int] = {}
    first_rejected: list[str] = []

    def refuse(code: int, record: np.void, symbol: str, rest: int | None = None) -> None:
        name = REASON_NAMES[code]
        rejected[name] = rejected.get(name, 0) + 1
        if len(first_rejected) < FIRST_REJECTED:
            first_rejected.append(f"{symbol}: {describe(code, record, tick_size, rest)}")

    parts, locs = [], []
    for s, r in readers:
        recs = r.read_all()
        locate = directory.locate(s.symbol)
        reasons = check_records(recs, locate=locate, n_locates=directory.n, tick_size=tick_size)
        sequence = StockSequence()  # the file's order is the stock's sequence, as on the live feed
        verdict, _before, _gaps = sequence.feed(recs["ts_ns"], 0, reasons == 0)
        if sequence.close(len(recs))[0] == 1:
            verdict[sequence.conf_seq] = TAKEN
        for i in np.flatnonzero(verdict != TAKEN):
            refuse(int(reasons[i]) if verdict[i] == UNFIT else OUT_OF_SEQUENCE, recs[i], s.symbol)
        recs = recs[verdict == TAKEN]
        parts.append(recs)
        locs.append(np.full(len(recs), locate, np.uint16))
    records = np.concatenate(parts) if parts else np.empty(0)
    locate = np.concatenate(locs) if locs else np.empty(0, np.uint16)
    if len(records):
        order = np.lexsort((np.arange(len(records)), locate, records["ts_ns"]))  # stable: ts, locate, position
        records, locate = records[order], locate[order]
    first_ts = int(records["ts_ns"][0]) if len(records) else 0
    last_ts = int(records["ts_ns"][-1]) if len(records) else 0
    out = Path(output)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    count = 0
    orders = OrderTable()
    with open(tmp, "wb") as f:
        opening = feed.opening(first_ts)
        f.write(opening.data.tobytes())
        count += opening.count
        for lo in range(0, len(records), CHUNK):
            hi = min(len(records), lo + CHUNK)
            enc = feed.orders(records[lo:hi], locate[lo:hi], count + 1, orders)
            for i in enc.rejected:
                refuse(int(enc.reasons[i]), records[lo + i], directory.symbols[int(locate[lo + i]) - 1],
                       int(enc.rest[i]))
            f.write(enc.framed.data.tobytes())
            count += enc.framed.count
        closing = feed.closing(last_ts)
        f.write(closing.data.tobytes())
        count += closing.count
    os.replace(tmp, out)
    return {
        "output": str(out),
        "date": sessions[0].date.isoformat(),
        "symbols": list(directory.symbols),
        "tick_size": tick_size,
        "messages": count,
        "events": count - opening.count - closing.count,  # records that became order messages
        "rejected": rejected,
        "first_rejected": first_rejected,
        "bytes": out.stat().st_size,
    }


def read_itch_file(path: str | os.PathLike[str]) -> list[bytes]:
    """The messages of a length-prefixed ITCH file (for tests and quick inspection)."""
    data = Path(path).read_bytes()
    out = []
    pos = 0
    while pos + 2 <= len(data):
        n = int.from_bytes(data[pos : pos + 2], "big")
        if pos + 2 + n > len(data):
            raise ValueError(f"truncated message at byte {pos}")
        out.append(data[pos + 2 : pos + 2 + n])
        pos += 2 + n
    if pos != len(data):
        raise ValueError(f"{len(data) - pos} trailing bytes")
    return out
