"""Completing a session in the lake from its end-of-session marker (the Parquet consumer's last step).

A session is complete when the lake holds every seq below the marker's count. Then its
``raw/sessions`` row (from the marker's ``session`` header) and the events partition's ``_SUCCESS``
are written -- unless the lake already holds a complete marker with a larger count: completion
markers never go backwards (a stale, replayed or shorter marker never replaces a longer session's).
"""

from __future__ import annotations

import itertools
import logging
import posixpath
from collections.abc import Callable
from typing import Any

import numpy as np
import pyarrow.compute as pc
import pyarrow.dataset as pads
import pyarrow.fs as pafs

from qrsdp_sim.kafka.decode import Marker, SessionRows
from qrsdp_sim.lake.landing import SessionInfo, sessions_table
from qrsdp_sim.lake.store import MARKER_NAME, Lake, PartitionMarker, utc_now_iso

log = logging.getLogger(__name__)

COMPLETE = "complete"
INCOMPLETE = "incomplete"
SUPERSEDED = "superseded"  # a complete marker with a larger count is in the lake: left as it is


class Written:
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


def existing_rows(lake: Lake, table: str, symbol: str, day) -> int | None:
    """The count of the complete marker already in the lake (events: its rows; sessions: the session's
    events), or None when there is none (or it is unreadable: then it is no complete marker)."""
    try:
        marker = lake.read_marker(table, symbol, day)
    except (ValueError, KeyError, TypeError) as exc:
        log.warning("%s %s %s: unreadable %s (%s); treated as absent", table, symbol, day, MARKER_NAME, exc)
        return None
    if marker is None:
        return None
    if table == "events":
        return marker.rows
    events = marker.extra.get("events")
    if isinstance(events, int):
        return events
    rows = lake.read_partition("sessions", symbol, day).column("events").to_pylist()
    return max((int(r) for r in rows if r is not None), default=None)


def complete_session(
    lake: Lake,
    marker: Marker,
    known: dict[str, Written],
    *,
    topic: str,
    put: Callable[[str, Any], None],
    check_owner: Callable[[], None],
) -> str:
    """Complete ``marker``'s session if the lake holds it all; returns COMPLETE, INCOMPLETE or SUPERSEDED.

    The partition is listed; objects this consumer wrote itself (``known``: same name and byte size in
    the listing) are counted from memory, every other object (written before a restart, by another
    member, ...) is read (``seq`` and ``ts_ns``). ``check_owner`` raises when the partition the marker
    came from is no longer this consumer's (fencing: nothing is written then); ``put`` writes one
    object whole.
    """
    symbol, day, eos = marker.symbol, marker.date, marker.eos
    pdir = lake.partition_dir("events", symbol, day)
    infos = [
        i for i in lake.fs.get_file_info(pafs.FileSelector(pdir, allow_not_found=True))
        if i.type == pafs.FileType.File and i.base_name.endswith(".parquet") and not i.base_name.startswith(".")
    ]
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
        cols = pads.dataset(others, filesystem=lake.fs, format="parquet").to_table(columns=["seq", "ts_ns"])
        if cols.num_rows:
            seqs = cols["seq"].to_numpy()
            lo, hi = (v.as_py() for v in pc.min_max(cols["ts_ns"]).values())
            ts_bounds.append((lo, hi))
    total_rows = sum(w.rows for w in mine) + (0 if seqs is None else len(seqs))
    if total_rows < eos.events:  # never complete; and nothing below is sized by an unchecked count
        log.warning("%s %s: end of session says %d events but the lake holds %d rows; not marking complete "
                    "(republish the session from its .qrsdp file)", symbol, day, eos.events, total_rows)
        return INCOMPLETE
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
    if distinct != n:
        log.warning("%s %s: end of session says %d events but the lake holds %d distinct seqs; not marking "
                    "complete (republish the session from its .qrsdp file)", symbol, day, n, distinct)
        return INCOMPLETE
    have = existing_rows(lake, "events", symbol, day)
    if have is not None and have > n:
        log.warning("%s %s: a complete marker of %d events is in the lake; this end of session says %d: "
                    "left as it is (markers never go backwards)", symbol, day, have, n)
        return SUPERSEDED
    first_ts = min(lo for lo, _ in ts_bounds) if ts_bounds else None
    last_ts = max(hi for _, hi in ts_bounds) if ts_bounds else None
    if marker.session is not None:
        have_session = existing_rows(lake, "sessions", symbol, day)
        if have_session is None or have_session <= n:
            s = marker.session
            info = SessionInfo(
                symbol=symbol, date=day, seed=s.seed, open_ticks=s.open_ticks, close_ticks=eos.close_ticks,
                tick_size=s.tick_size, market_open_ns=s.market_open_ns, session_seconds=s.session_seconds,
                events=n, first_ts_ns=first_ts, last_ts_ns=last_ts, source=f"kafka:{topic}",
            )
            check_owner()
            lake.write_partition("sessions", symbol, day, sessions_table(info),
                                 marker_extra={"source": "kafka", "events": n})
    done = PartitionMarker(
        table="events", symbol=symbol, date=day, rows=n,
        files=tuple(sorted(i.base_name for i in infos)), landed_at=utc_now_iso(),
        extra={"source": "kafka", "close_ticks": eos.close_ticks},
    )
    check_owner()
    put(posixpath.join(pdir, MARKER_NAME), done.to_json().encode())
    lake.announce(done)  # the landing log the Dagster sensor follows
    return COMPLETE

