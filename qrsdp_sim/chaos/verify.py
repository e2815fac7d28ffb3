"""The soak's end checks, each returning counts (the caller decides what must be 0):

* :func:`check_lake` -- the lake's raw events against the ``.qrsdp`` files: every (symbol, date, seq)
  present with the file's record, nothing else (duplicate copies of a record are counted: landing is
  at-least-once, ``stg_events`` collapses them);
* :func:`run_dbt` -- ``book_states`` replayed from the lake, then ``dbt build`` (every test) and the
  marts' per-session event counts;
* :func:`check_feed` -- what a listener received against ``itch-export`` of the same day's files:
  message count, byte-for-byte stream, and every stock's records in order;
* :func:`dead_letters` -- the dead-letter topic, by service and kind, with the source offsets.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.dataset as pads
import pyarrow.fs as pafs

from qrsdp_sim.eventlog.reader import read_records
from qrsdp_sim.itch.export import export_day, find_sessions
from qrsdp_sim.itch.listener import Listener
from qrsdp_sim.lake.store import Lake
from qrsdp_sim.records import RECORD_DTYPE

SessionKey = tuple[str, str]  # (symbol, YYYY-MM-DD)


@dataclass
class LakeCheck:
    events: int = 0  # events in the files
    rows: int = 0  # rows in the lake (copies included)
    missing: int = 0  # file events not in the lake
    copies: int = 0  # rows beyond the first of the same (symbol, date, seq): identical re-deliveries
    conflicting: int = 0  # rows whose content differs from the file's record at their seq
    foreign: int = 0  # rows of a session or seq the files do not have
    complete_markers: int = 0  # sessions whose _SUCCESS says the file's count


def lake_events(lake: Lake):
    base = lake.table_dir("events")
    infos = lake.fs.get_file_info(pafs.FileSelector(base, recursive=True, allow_not_found=True))
    files = [i.path for i in infos if i.type == pafs.FileType.File and i.base_name.endswith(".parquet")]
    if not files:
        return None
    return pads.dataset(files, filesystem=lake.fs, format="parquet").to_table()


def check_lake(lake: Lake, expected: dict[SessionKey, np.ndarray]) -> LakeCheck:
    out = LakeCheck(events=sum(len(r) for r in expected.values()))
    markers = {(m.symbol, m.date.isoformat()): m.rows for m in lake.complete_partitions("events")}
    out.complete_markers = sum(1 for k, r in expected.items() if markers.get(k) == len(r))
    table = lake_events(lake)
    if table is None:
        out.missing = out.events
        return out
    out.rows = table.num_rows
    symbols = table.column("symbol").to_numpy(zero_copy_only=False).astype(str)
    dates = np.array([d.isoformat() for d in table.column("date").to_pylist()])
    seqs = table.column("seq").to_numpy().astype(np.int64)
    cols = {name: table.column(name).to_numpy() for name in RECORD_DTYPE.names}
    claimed = np.zeros(len(seqs), dtype=bool)
    for (symbol, day), records in expected.items():
        rows = np.flatnonzero((symbols == symbol) & (dates == day))
        seq = seqs[rows]
        inside = (seq >= 0) & (seq < len(records))
        rows, seq = rows[inside], seq[inside]
        claimed[rows] = True
        seen = np.bincount(seq, minlength=len(records))
        out.missing += int((seen == 0).sum())
        out.copies += int(np.maximum(seen - 1, 0).sum())
        differs = np.zeros(len(rows), dtype=bool)
        for name in RECORD_DTYPE.names:
            differs |= cols[name][rows] != records[name][seq]
        out.conflicting += int(differs.sum())
    out.foreign = int((~claimed).sum())
    return out


@dataclass
class DbtCheck:
    returncode: int
    tests_passed: int = 0
    tests_failed: int = 0
    models: int = 0
    mart_sessions: dict[SessionKey, int] = field(default_factory=dict)  # fct_session_summary n_events
    output_tail: str = ""


def run_dbt(lake: Lake, sessions: list[SessionKey], work: Path, min_events: int = 1000) -> DbtCheck:
    """book_states for every session, then ``dbt build`` into a fresh DuckDB file under ``work``."""
    import duckdb

    from qrsdp_dagster.resources import WarehouseResource
    from qrsdp_sim.lake import land_book_states
    from qrsdp_sim.stack import project_root

    for symbol, day in sessions:
        land_book_states(lake, symbol, dt.date.fromisoformat(day))
    dbt_dir = project_root() / "dbt_project"
    warehouse = WarehouseResource(duckdb_path=str(work / "warehouse.duckdb"), dbt_project_dir=str(dbt_dir))
    target = work / "dbt-target"
    proc = subprocess.run(
        [str(Path(sys.executable).with_name("dbt")), "build", "--project-dir", str(dbt_dir), "--profiles-dir",
         str(dbt_dir), "--target-path", str(target), "--log-path", str(target),
         "--vars", json.dumps({"lake_root": lake.query_root, "min_events_per_session": min_events})],
        env={**os.environ, **warehouse.dbt_env(lake)}, capture_output=True, text=True, timeout=1800,
    )  # fmt: skip
    out = DbtCheck(returncode=proc.returncode, output_tail=proc.stdout[-3000:])
    results_file = target / "run_results.json"
    if results_file.exists():
        results = json.loads(results_file.read_text())["results"]
        tests = [r for r in results if r["unique_id"].startswith("test.")]
        out.tests_passed = sum(1 for r in tests if r["status"] == "pass")
        out.tests_failed = len(tests) - out.tests_passed
        out.models = sum(1 for r in results if r["unique_id"].startswith("model."))
    if proc.returncode == 0:
        with duckdb.connect(str(work / "warehouse.duckdb"), read_only=True) as con:
            rows = con.sql("select symbol, cast(date as varchar), n_events from marts.fct_session_summary").fetchall()
        for s, d, n in rows:
            key = (s, d)
            out.mart_sessions[key] = out.mart_sessions.get(key, 0) + int(n)
    return out


@dataclass
class FeedCheck:
    session: str
    complete: bool
    expected_messages: int  # itch-export of the day's files
    received_messages: int
    unrecovered: int
    identical_stream: bool  # byte for byte the export (the merge was never late)
    stocks_in_order: int  # stocks whose records arrived exactly, in order
    stocks: int
    missing_events: int  # source events not received (per stock, by position)
    stats: dict[str, Any] = field(default_factory=dict)


def check_feed(lis: Listener, paths: list[Path], symbols: list[str], work: Path) -> FeedCheck:
    target = work / f"export-{uuid.uuid4().hex[:8]}.itch"
    summary = export_day(find_sessions(list(paths)), target, symbols=symbols)
    expected_bytes = target.read_bytes()
    target.unlink()
    got = b"".join(lis.raw_kept)
    recs, loc, _seq = lis.records()
    directory = sorted(symbols)  # locates are assigned alphabetically
    by_symbol = {p.parent.name: p for p in paths}
    in_order = missing = 0
    for locate, sym in enumerate(directory, start=1):
        if sym not in by_symbol:
            continue
        src = read_records(by_symbol[sym])
        mine = recs[loc == locate]
        same = len(mine) == len(src) and all(np.array_equal(mine[f], src[f])
                                             for f in ("ts_ns", "type", "side", "price_ticks", "qty"))
        same = same and np.array_equal(mine["order_id"], (src["order_id"] - 1) * len(directory) + locate)
        in_order += int(same)
        missing += max(0, len(src) - len(mine))
    s = lis.summary()
    return FeedCheck(session=str(s.get("session")), complete=bool(lis.complete),
                     expected_messages=int(summary["messages"]), received_messages=int(s["messages"]),
                     unrecovered=int(s["unrecovered"]), identical_stream=got == expected_bytes,
                     stocks_in_order=in_order, stocks=len(by_symbol), missing_events=missing,
                     stats={k: s[k] for k in ("gaps", "recovered", "duplicates", "malformed_packets",
                                              "implausible_seq", "ts_order_violations", "book_errors")
                            if k in s})


def dead_letters(bootstrap: str, topic: str, timeout: float = 20.0) -> list[dict[str, str]]:
    """Every message of the dead-letter topic: its dlq_service (``parquet-consumer`` when absent),
    dlq_kind and dlq_source headers."""
    from confluent_kafka import Consumer, TopicPartition

    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"chaos-dlq-{uuid.uuid4().hex}",
                  "enable.auto.commit": False, "log_level": 3})
    try:
        parts = sorted(c.list_topics(topic, timeout=timeout).topics[topic].partitions)
        ends = {p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=timeout) for p in parts}
        c.assign([TopicPartition(topic, p, lo) for p, (lo, _hi) in ends.items()])
        want = sum(hi - lo for lo, hi in ends.values())
        out: list[dict[str, str]] = []
        deadline = time.monotonic() + timeout
        while len(out) < want and time.monotonic() < deadline:
            for m in c.consume(10_000, 0.5):
                if m.error() is not None:
                    continue
                h = {k: (v or b"").decode("utf-8", "replace") for k, v in (m.headers() or [])}
                out.append({"service": h.get("dlq_service", "parquet-consumer"), "kind": h.get("dlq_kind", ""),
                            "source": h.get("dlq_source", "")})
        return out
    finally:
        c.close()
