"""Re-publishing sessions from their ``.qrsdp`` files: how a gap after a Kafka outage is closed.

Consumers deduplicate on (symbol, date, seq), so re-publishing a session that partly
arrived already is harmless: the lake ends with every event exactly once.

Every argument and file is untrusted: a path that is no session file, a symbol or date a consumer
would reject, a run manifest that is not one, a file whose records no producer could send or that has
no events -- each is refused with a one-line :class:`RepublishError` naming the file and what to do,
before anything is published.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import re
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from qrsdp_sim.book.replay import NO_PRICE, replay_book
from qrsdp_sim.engine.calendar import parse_market_open
from qrsdp_sim.engine.seeds import validate_symbol
from qrsdp_sim.eventlog.errors import EventLogError
from qrsdp_sim.eventlog.reader import EventLogReader
from qrsdp_sim.kafka.decode import bad_records, record_problem
from qrsdp_sim.kafka.message import DEFAULT_TOPIC, MAX_SESSION_EVENTS
from qrsdp_sim.kafka.names import check_brokers, check_topic
from qrsdp_sim.kafka.publisher import KafkaPublisher

_DATE_FILE = re.compile(r"^(\d{4}-\d{2}-\d{2})\.qrsdp$")
_DATE_TEXT = re.compile(r"\d{4}-\d{2}-\d{2}")
_INT32 = (-(2**31), 2**31 - 1)


class RepublishError(ValueError):
    """An argument or file republish cannot use (the message names it and what to do)."""


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
        raise RepublishError(
            f"{p}: cannot tell symbol and date from the path (expected OUTPUT/SYMBOL/YYYY-MM-DD.qrsdp); "
            "pass --symbol and --date"
        )
    where = "--symbol" if symbol else f"{p}: the folder name"
    try:
        validate_symbol(sym)
    except ValueError as exc:
        raise RepublishError(f"{where}: {exc}") from None
    where = "--date" if date else f"{p}: the file name"
    parsed = None
    if _DATE_TEXT.fullmatch(day):
        with contextlib.suppress(ValueError):
            parsed = dt.date.fromisoformat(day)
    if parsed is None or not 2000 <= parsed.year <= 2100:
        raise RepublishError(f"{where}: invalid date {day!r}: expected YYYY-MM-DD between 2000 and 2100")
    return SessionFile(p, sym, parsed)


def _manifest_entry(session: SessionFile) -> dict[str, Any] | None:
    """The run manifest's entry of the session's symbol (when the file sits in a run folder); a manifest
    that is not one raises :class:`RepublishError` (it would give a wrong close or open)."""
    manifest = session.path.parent.parent / "manifest.json"
    if not manifest.is_file():
        return None
    what = f"{manifest}: not a run manifest"
    fix = "fix it, or move it away to republish without it"
    try:
        data = json.loads(manifest.read_bytes())
    except (OSError, ValueError, RecursionError) as exc:
        raise RepublishError(f"{what} ({exc}); {fix}") from None
    if not isinstance(data, dict):
        raise RepublishError(f"{what} (not a JSON object); {fix}")
    entries = data.get("securities", [data])
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise RepublishError(f"{what} ('securities' is not a list of objects); {fix}")
    for entry in entries:
        if entry.get("symbol") == session.symbol:
            _check_entry(entry, session, f"{what}: {session.symbol}", fix)
            return entry
    return None


def _check_entry(entry: dict[str, Any], session: SessionFile, what: str, fix: str) -> None:
    sessions = entry.get("sessions", [])
    if not isinstance(sessions, list) or not all(isinstance(s, dict) for s in sessions):
        raise RepublishError(f"{what}: 'sessions' is not a list of objects; {fix}")
    for s in sessions:
        if s.get("date") == session.date.isoformat():
            close = s.get("close_ticks")
            if type(close) is not int or not _INT32[0] <= close <= _INT32[1]:
                raise RepublishError(f"{what} {session.date}: close_ticks {close!r} is not a 32-bit integer; {fix}")
    market_open = entry.get("market_open")
    if market_open is not None:
        try:
            parse_market_open(market_open if isinstance(market_open, str) else repr(market_open))
        except ValueError as exc:
            raise RepublishError(f"{what}: {exc}; {fix}") from None


def _manifest_close(entry: dict[str, Any] | None, session: SessionFile) -> int | None:
    for s in (entry or {}).get("sessions", []):
        if s.get("date") == session.date.isoformat():
            return int(s["close_ticks"])
    return None


def _market_open_ns(entry: dict[str, Any] | None, records: np.ndarray) -> int:
    """The session's market open: from the run manifest (``HH:MM``), else the first event's whole minute."""
    text = (entry or {}).get("market_open")
    if isinstance(text, str):
        return parse_market_open(text)
    first = int(records["ts_ns"][0]) if len(records) else 0
    return first // 60_000_000_000 * 60_000_000_000


def session_close(session: SessionFile, records: np.ndarray, entry: dict[str, Any] | None = None) -> int:
    """Close price: from the manifest, else floor(mid) of the replayed final book."""
    close = _manifest_close(entry, session)
    if close is not None:
        return close
    states = replay_book(records, strict=False)
    if not len(states):
        return 0
    mid = int(states.mid_floor[-1])
    return 0 if mid == NO_PRICE else mid


def load_session(session: SessionFile) -> tuple[np.ndarray, dict[str, Any]]:
    """The session's records and its description for the end-of-session marker, checked: raises
    :class:`RepublishError` naming the file for anything a consumer would reject."""
    path = session.path
    if not path.is_file():
        raise RepublishError(f"{path}: {'a directory, not a session file' if path.is_dir() else 'no such file'}")
    try:
        reader = EventLogReader(path)
        records = reader.read_all()
    except EventLogError as exc:
        raise RepublishError(f"{exc} (check it with `qrsdp log-info {path} --verify`)") from None
    except OSError as exc:
        raise RepublishError(f"{path}: cannot read the file: {exc.strerror or exc}") from None
    if not len(records):
        raise RepublishError(f"{path}: the session has no events: nothing to publish")
    if len(records) >= MAX_SESSION_EVENTS:
        raise RepublishError(f"{path}: {len(records):,} events is more than a session may have")
    bad = bad_records(records, np.arange(len(records), dtype=np.uint64))
    if bad is not None:
        k = int(np.argmax(bad))
        raise RepublishError(f"{path}: record {k} cannot be published ({record_problem(records[k], k)}); "
                             f"check the file with `qrsdp log-info {path} --verify`")
    h = reader.header
    entry = _manifest_entry(session)
    close = session_close(session, records, entry)
    if not _INT32[0] <= close <= _INT32[1] or not _INT32[0] <= h.p0_ticks <= _INT32[1] or h.tick_size < 1:
        raise RepublishError(f"{path}: the header's prices (open {h.p0_ticks}, tick size {h.tick_size}) or the "
                             f"close {close} are out of range")
    description = {
        "seed": int(h.seed), "open_ticks": int(h.p0_ticks), "close_ticks": close, "events": len(records),
        "tick_size": int(h.tick_size), "session_seconds": int(h.session_seconds),
        # ns since midnight of the first event is at or after the open; the file does not store the open
        "market_open_ns": _market_open_ns(entry, records),
    }
    return records, description


def republish(
    files: list[SessionFile],
    brokers: str,
    topic: str = DEFAULT_TOPIC,
    *,
    run_id: str | None = None,
    batch: int = 65_536,
    close_timeout: float = 60.0,
) -> dict[str, Any]:
    """Publish each session file (all its events and its end-of-session marker).

    Every file is checked first (:func:`load_session`); nothing is published when one is refused.
    """
    brokers = check_brokers(brokers)
    topic = check_topic(topic)
    seen: dict[tuple[str, dt.date], Path] = {}
    for session in files:
        key = (session.symbol, session.date)
        if key in seen:
            raise RepublishError(f"{session.path}: {session.symbol} {session.date} is also {seen[key]}: "
                                 "list each session once")
        seen[key] = session.path
        load_session(session)
    run_id = run_id or f"republish-{uuid.uuid4().hex[:12]}"
    publisher = KafkaPublisher(brokers, topic, close_timeout=close_timeout)
    if publisher.down_reason:
        publisher.close()
        raise ConnectionError(f"Kafka at {brokers} is unreachable: {publisher.down_reason}")
    for session in files:
        records, description = load_session(session)
        sink = publisher.open_session(session.symbol, session.date, run_id)
        for i in range(0, len(records), batch):
            sink.append(records[i : i + batch])
        publisher.end_session(sink, description)
    return {"run_id": run_id, **publisher.close()}
