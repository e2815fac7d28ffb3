"""The Parquet consumer's fencing, completion markers and writer failures (issue 12, defects 1, 4 and 5),
deterministically, without services: a local lake and the consumer's internals driven directly (no broker
is needed for what is driven here; a consumer's partition loss is its ``_on_revoke(..., lost=True)``).

* Stale writer (defect 5): consumer A holds a 5-second cut of a partition (offsets 0..49) whose PUT is
  already under way -- past every check -- when A loses the partition; B, the new owner, lands 0..299 in
  aligned chunks and completes the session; then A's PUT finishes. The lake must still hold every event
  (with deterministic object names A's 50 rows replaced B's 100). A failed write of a lost partition is
  never retried, and A commits nothing for it.
* Markers never go backwards (defect 4): a count-0 marker and a shorter marker after a complete session
  leave ``_SUCCESS`` and the ``raw/sessions`` row as they were.
* Writer threads (defect 1): an exception other than an I/O error while writing an object, or a marker
  whose completion is impossible, never kills the consumer: the write is retried, then set aside in the
  dead-letter topic with its reason and counted, and the partition goes on.
* Bounded memory: a flood of large messages is landed (here: dead-lettered) before it piles up.
"""

from __future__ import annotations

import concurrent.futures as cf
import datetime as dt
import json
import threading

import numpy as np
import pytest
from qrsdp_log_testutil import make_records

from qrsdp_sim.kafka import consumer as consumer_module
from qrsdp_sim.kafka.bridge import RawMessage, Run
from qrsdp_sim.kafka.consumer import ParquetConsumer
from qrsdp_sim.kafka.message import EndOfSession
from qrsdp_sim.lake.landing import read_records
from qrsdp_sim.lake.store import Lake

DAY = dt.date(2026, 1, 5)
RAW_DAY = DAY.isoformat().encode()
SESSION = {"seed": 3, "open_ticks": 10_000, "close_ticks": 10_001, "tick_size": 100,
           "market_open_ns": 34_200 * 10**9, "session_seconds": 23_400}


def _run(offset: int, seq: int, records: np.ndarray, key: bytes = b"AAA") -> Run:
    return Run(0, offset, seq, key, RAW_DAY, b"run-1", records)


def _marker(offset: int, events_raw: bytes, key: bytes = b"AAA", session: dict | None = None) -> RawMessage:
    headers = [("date", RAW_DAY), ("seq", (300).to_bytes(8, "big")), ("run_id", b"run-1"), ("eos", events_raw)]
    if session is not None:
        headers.append(("session", json.dumps(session).encode()))
    return RawMessage("t", 0, offset, key, b"", headers)


def _eos(events: int) -> bytes:
    return EndOfSession(events, 10_001).encode() if events else bytes(8) + (10_001).to_bytes(8, "big")


def _consumer(lake: Lake) -> ParquetConsumer:
    return ParquetConsumer("127.0.0.1:1", lake, topic="t", client="python", batch_records=100, batch_seconds=3600,
                           max_backoff=0.05)


def _close(*consumers: ParquetConsumer) -> None:
    for c in consumers:
        c._writers.shutdown()
        c._source.close()
        if hasattr(c, "_dead"):  # (absent before issue 12)
            c._dead.close(0)


@pytest.fixture
def lakes(tmp_path):
    """Two Lake objects on the same directory: one per consumer (as two processes would have)."""
    return Lake.from_uri(tmp_path / "lake"), Lake.from_uri(tmp_path / "lake")


def _land_everything(b: ParquetConsumer, recs: np.ndarray) -> None:
    b._accept(_run(0, 0, recs), 0.0)
    b._accept(_marker(len(recs), _eos(len(recs)), session=SESSION), 0.0)
    b._cut(0.0)
    b._drain(None)


def test_a_stale_put_already_under_way_cannot_replace_the_new_owners_object(lakes) -> None:
    recs = make_records(300, seed=1)
    a, b = _consumer(lakes[0]), _consumer(lakes[1])
    entered, release = threading.Event(), threading.Event()
    put = a._put

    def slow_put(path, data) -> None:  # A's PUT is on its way (every check done) when A loses the partition
        entered.set()
        assert release.wait(30)
        put(path, data)

    a._put = slow_put
    try:
        a._accept(_run(0, 0, recs[:50]), 0.0)
        a._cut(0.0, force=True)  # a 5-second cut: offsets 0..49 in one object
        assert entered.wait(30)
        a._on_revoke([0], True)  # the group session expired: partition 0 is B's now

        _land_everything(b, recs)  # B re-reads from the last commit (0): 0..299 in 100-record objects
        assert b.stats.completed == [("AAA", DAY.isoformat())]

        release.set()  # A's stale PUT lands now
        cf.wait(list(a._in_flight), timeout=30)
        a._reap()
        np.testing.assert_array_equal(read_records(lakes[1], "AAA", DAY), recs)  # nothing vanished
        assert lakes[1].read_marker("events", "AAA", DAY).rows == 300
        assert a.stats.fenced_writes == 1 and a.stats.objects_written == 0
    finally:
        release.set()
        _close(a, b)


def test_a_failed_write_of_a_lost_partition_is_never_retried_nor_committed(lakes) -> None:
    recs = make_records(300, seed=2)
    a, b = _consumer(lakes[0]), _consumer(lakes[1])
    put = a._put
    calls = {"n": 0}

    def failing_once(path, data) -> None:
        calls["n"] += 1
        if calls["n"] == 1:
            raise OSError("lake unreachable")
        put(path, data)

    commits: list[dict[int, int]] = []
    a._put = failing_once
    a._source.commit = commits.append
    try:
        a._accept(_run(0, 0, recs[:50]), 0.0)
        a._cut(0.0, force=True)
        cf.wait(list(a._in_flight), timeout=30)
        a._reap()
        assert len(a._failed) == 1  # waiting for its retry
        a._on_revoke([0], True)
        _land_everything(b, recs)

        a._retry_failed()  # the backoff has passed
        cf.wait(list(a._in_flight), timeout=30)
        a._reap()
        a._commit(force=True)
        np.testing.assert_array_equal(read_records(lakes[1], "AAA", DAY), recs)
        assert calls["n"] == 1, "the lost partition's write was retried"
        assert not commits, "committed for a partition it no longer owns"
    finally:
        _close(a, b)


def test_completion_markers_never_go_backwards(lakes) -> None:
    lake = lakes[0]
    recs = make_records(300, seed=3)
    c = _consumer(lake)
    try:
        _land_everything(c, recs)
        assert lake.read_marker("events", "AAA", DAY).rows == 300
        sessions = lake.read_partition("sessions", "AAA", DAY)
        assert sessions.column("events").to_pylist() == [300]

        # A count-0 marker: rejected (it used to pass the completeness check trivially and write rows=0).
        c._accept(_marker(301, _eos(0), session=SESSION), 0.0)
        # A shorter session's marker (a stale or replayed one): the lake holds its 200 seqs, but a complete
        # marker of 300 is there, so nothing is replaced.
        c._accept(_marker(302, _eos(200), session={**SESSION, "seed": 99}), 0.0)
        c._cut(0.0)
        c._drain(None)
        assert lake.read_marker("events", "AAA", DAY).rows == 300
        row = lake.read_partition("sessions", "AAA", DAY).to_pylist()
        assert [(r["events"], r["seed"]) for r in row] == [(300, 3)]
        assert c.stats.dead_letter_kinds == {"eos": 1} and c.stats.superseded_markers == 1
        assert c._parts[0].done_through == 303  # both markers are behind the consumer
    finally:
        _close(c)


def test_a_write_that_keeps_failing_is_set_aside_and_the_partition_goes_on(lakes, monkeypatch) -> None:
    lake = lakes[0]
    recs = make_records(300, seed=4)
    bad = make_records(20, seed=5)
    events_table = consumer_module.events_table

    def poisoned(records, symbol, date, **kw):
        if symbol == "BAD":
            raise ValueError("cannot encode this session")
        return events_table(records, symbol, date, **kw)

    monkeypatch.setattr(consumer_module, "events_table", poisoned)
    c = _consumer(lake)
    try:
        c._accept(_run(0, 0, bad, key=b"BAD"), 0.0)
        c._accept(_run(20, 0, recs[:80]), 0.0)  # AAA shares the first chunk with BAD
        c._accept(_run(100, 80, recs[80:]), 0.0)
        c._accept(_marker(320, _eos(300), session=SESSION), 0.0)
        c._cut(0.0)
        c._drain(None)  # retries with backoff, then sets BAD's 20 records aside
        assert c.stats.dead_letter_kinds == {"lake_write": 20}
        assert c.stats.write_errors == consumer_module.MAX_ATTEMPTS
        assert c.stats.completed == [("AAA", DAY.isoformat())]
        assert c._parts[0].done_through == 321
        np.testing.assert_array_equal(read_records(lake, "AAA", DAY), recs)
    finally:
        _close(c)


def test_a_marker_whose_completion_raises_is_set_aside(lakes) -> None:
    lake = lakes[0]
    recs = make_records(300, seed=6)
    c = _consumer(lake)
    try:
        # Something foreign in the partition that is not Parquet: reading it for the completeness check fails.
        pdir = lake.partition_dir("events", "AAA", DAY)
        lake.fs.create_dir(pdir, recursive=True)
        with lake.fs.open_output_stream(f"{pdir}/foreign.parquet") as out:
            out.write(b"not parquet at all")
        _land_everything(c, recs)
        assert c.stats.dead_letter_kinds == {"completion": 1} and c.stats.write_errors == 1
        assert c._parts[0].done_through == 301 and lake.read_marker("events", "AAA", DAY) is None
    finally:
        _close(c)


def test_a_flood_of_large_messages_never_piles_up(lakes) -> None:
    """Garbage up to the broker's 1 MB limit: what a partition holds pending stays bounded (MAX_PENDING_BYTES),
    though 100 such messages are far below batch_records."""
    c = ParquetConsumer("127.0.0.1:1", lakes[0], topic="t", client="python", batch_records=10_000,
                        batch_seconds=3600)
    try:
        held = []
        for i in range(100):
            c._accept(RawMessage("t", 0, i, b"AAA", bytes(1 << 20), [("date", RAW_DAY)]), 0.0)
            c._cut(0.0)
            held.append(sum(len(e.value()) for e in c._parts[0].entries))
        assert max(held) <= consumer_module.MAX_PENDING_BYTES + (1 << 20), max(held)
        assert c.stats.dead_letter_kinds.get("value_size", 0) >= 64  # the landed ones were set aside
    finally:
        _close(c)
