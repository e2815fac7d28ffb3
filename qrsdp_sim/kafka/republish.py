"""Re-publishing sessions from their ``.qrsdp`` files: how a gap after a Kafka outage is closed.

Consumers deduplicate on (symbol, date, seq), so re-publishing a session that partly
arrived already is harmless: the lake ends with every event exactly once.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qrsdp_sim.book.replay import NO_PRICE, replay_book
from qrsdp_sim.eventlog.reader import EventLogReader
from qrsdp_sim.kafka.message import DEFAULT_TOPIC
from qrsdp_sim.kafka.publisher import KafkaPublisher

_DATE_FILE = re.compile(r"^(\d{4}-\d{2}-\d{2})\.qrsdp$")


@dataclass(frozen=True)
class SessionFile:
    path: Path
    symbol: str
    date: dt.date


def identify(path: str | os.PathLike[str], symbol: str | None = None, date: str | None = None) -> SessionFile:
    """Symbol and date of a session file: from ``SYMBOL/YYYY-MM-DD.qrsdp`` unless given."""
    p = Path(path)
    m = _DATE_FILE.match(p.name)
    day = date or (m.group(1) if m else None)
    sym = symbol or (p.parent.name if m else None)
    if not day or not sym:
        raise ValueError(
            f"{p}: cannot tell symbol and date from the path (expected OUTPUT/SYMBOL/YYYY-MM-DD.qrsdp); "
            "pass --symbol and --date"
        )
    try:
        parsed = dt.date.fromisoformat(day)
    except ValueError:
        raise ValueError(f"{p}: invalid date {day!r}") from None
    return SessionFile(p, sym, parsed)


def _manifest_close(session: SessionFile) -> int | None:
    """The close recorded by the run's manifest, when the file sits in a run folder."""
    manifest = session.path.parent.parent / "manifest.json"
    if not manifest.is_file():
        return None
    data = json.loads(manifest.read_text())
    for entry in data.get("securities", [data]):
        if entry.get("symbol") != session.symbol:
            continue
        for s in entry.get("sessions", []):
            if s.get("date") == session.date.isoformat():
                return int(s["close_ticks"])
    return None


def _manifest_entry_field(session: SessionFile, name: str) -> object | None:
    manifest = session.path.parent.parent / "manifest.json"
    if not manifest.is_file():
        return None
    data = json.loads(manifest.read_text())
    for entry in data.get("securities", [data]):
        if entry.get("symbol") == session.symbol:
            return entry.get(name)
    return None


def _market_open_ns(session: SessionFile, records) -> int:
    """The session's market open: from the run manifest (``HH:MM``), else the first event's whole minute."""
    text = _manifest_entry_field(session, "market_open")
    if isinstance(text, str) and ":" in text:
        hh, mm = text.split(":")
        return (int(hh) * 3600 + int(mm) * 60) * 1_000_000_000
    first = int(records["ts_ns"][0]) if len(records) else 0
    return first // 60_000_000_000 * 60_000_000_000


def session_close(session: SessionFile, records) -> int:
    """Close price: from the manifest, else floor(mid) of the replayed final book."""
    close = _manifest_close(session)
    if close is not None:
        return close
    states = replay_book(records, strict=False)
    if not len(states):
        return 0
    mid = int(states.mid_floor[-1])
    return 0 if mid == NO_PRICE else mid


def republish(
    files: list[SessionFile],
    brokers: str,
    topic: str = DEFAULT_TOPIC,
    *,
    run_id: str | None = None,
    batch: int = 65_536,
    close_timeout: float = 60.0,
) -> dict[str, Any]:
    """Publish each session file (all its events and its end-of-session marker)."""
    run_id = run_id or f"republish-{uuid.uuid4().hex[:12]}"
    publisher = KafkaPublisher(brokers, topic, close_timeout=close_timeout)
    if publisher.down_reason:
        raise ConnectionError(f"Kafka at {brokers} is unreachable: {publisher.down_reason}")
    for session in files:
        reader = EventLogReader(session.path)
        records = reader.read_all()
        sink = publisher.open_session(session.symbol, session.date, run_id)
        for i in range(0, len(records), batch):
            sink.append(records[i : i + batch])
        h = reader.header
        publisher.end_session(sink, {
            "seed": int(h.seed), "open_ticks": int(h.p0_ticks), "close_ticks": session_close(session, records),
            "events": len(records), "tick_size": int(h.tick_size), "session_seconds": int(h.session_seconds),
            # ns since midnight of the first event is at or after the open; the file does not store the open
            "market_open_ns": _market_open_ns(session, records),
        })
    return {"run_id": run_id, **publisher.close()}
