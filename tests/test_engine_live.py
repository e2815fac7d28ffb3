"""Live exchange mode in process (``engine.live.run_live``): chaining identical to a finite run, stops
driven from observed progress (a finished session, a delivered batch), interrupted sessions that leave
no file, the manifest as it stands after every session, failures, the calendar's end; and the pieces it
relies on: an interruptible pacer and ``simulate_to_file(stop=)``.

No test here depends on timing: every stop is requested from a callback at a known point."""

from __future__ import annotations

import datetime as dt
import json
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from qrsdp_sim.engine import SessionConfig, simulate_session, simulate_to_file
from qrsdp_sim.engine.calendar import iter_trading_dates, trading_dates
from qrsdp_sim.engine.live import CALENDAR_END, FAILED, RUNNING, STOPPED, StopRequest, run_live
from qrsdp_sim.engine.pacing import Pacer
from qrsdp_sim.engine.runner import RunSpec, Security, run
from qrsdp_sim.engine.session import SessionInterrupted
from qrsdp_sim.eventlog.writer import partial_path
from qrsdp_sim.records import RECORD_DTYPE
from qrsdp_sim.sinks import InMemorySink

SECONDS = 300
START = dt.date(2026, 1, 1)  # a Thursday: the dates cross a weekend
SECS = [Security("AAA", 10_000), Security("BBB", 2_000)]


def live_spec(**kw: Any) -> RunSpec:
    return RunSpec(base_seed=7, days=0, start_date=kw.pop("start_date", START), session_seconds=SECONDS, **kw)


def files(out: Path) -> dict[str, bytes]:
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*.qrsdp"))}


def stray(out: Path) -> list[str]:
    """Anything in the output besides session files and the manifest (partial files, temporaries)."""
    return sorted(p.relative_to(out).as_posix() for p in out.rglob("*")
                  if p.is_file() and p.suffix != ".qrsdp" and p.name != "manifest.json")


def sessions_of(manifest: dict[str, Any]) -> list[dict[str, Any]]:
    return [dict(s, symbol=sec["symbol"]) for sec in manifest["securities"] for s in sec["sessions"]]


def test_live_run_is_the_finite_run_date_by_date(tmp_path):
    """Stopped as its 8th session finished (the 4th date complete): the sessions, their files and the
    manifest entries are exactly those of ``days=4``, and the manifest was current after every session."""
    stop = StopRequest()
    finished: list[Any] = []
    manifests: list[dict[str, Any]] = []

    def on_session(rec) -> None:
        finished.append(rec)
        manifests.append(json.loads((tmp_path / "live" / "manifest.json").read_text()))
        if len(finished) == 8:
            stop.request("test")

    res = run_live(live_spec(), SECS, tmp_path / "live", stop, on_session=on_session)
    assert res.state == STOPPED and res.stop_reason == "test"
    assert res.interrupted == [] and len(res.sessions) == 8

    ref = run(RunSpec(base_seed=7, days=4, start_date=START, session_seconds=SECONDS), SECS, tmp_path / "ref")
    live_files, ref_files = files(tmp_path / "live"), files(tmp_path / "ref")
    assert len(ref_files) == 8 and live_files == ref_files
    assert sessions_of(res.manifest) == sessions_of(ref.manifest)
    # beside the sessions, the manifest is the finite run's plus the ``live`` object
    assert {k: v for k, v in res.manifest.items() if k not in ("run_id", "live")} == {
        k: v for k, v in ref.manifest.items() if k != "run_id"}
    # the manifest on disk was current after every session, and said the run was still going
    assert [m["live"]["sessions_finished"] for m in manifests] == list(range(1, 9))
    assert [len(sessions_of(m)) for m in manifests] == list(range(1, 9))
    assert all(m["live"]["state"] == RUNNING for m in manifests)
    assert manifests[0]["live"]["complete_through"] is None
    assert manifests[1]["live"]["complete_through"] == START.isoformat()  # with the date's last session
    on_disk = json.loads((tmp_path / "live" / "manifest.json").read_text())
    assert on_disk == res.manifest and on_disk["live"]["state"] == STOPPED
    assert on_disk["live"]["complete_through"] == trading_dates(START, 4)[3].isoformat()
    assert stray(tmp_path / "live") == []


def test_a_session_stopped_midway_leaves_no_file_and_is_named(tmp_path):
    """The stop comes from the progress callback of AAA's 3rd session after its first kernel batch:
    that session ends there (no file, no partial file), is listed as interrupted with the records it
    had handed over, and BBB's 3rd session (queued behind it, one worker) never starts."""
    stop = StopRequest()
    third = trading_dates(START, 3)[2]
    seen: list[int] = []

    def progress(symbol: str, date: dt.date, t: float, n: int) -> None:
        if (symbol, date) == ("AAA", third):
            seen.append(n)
            if len(seen) == 2:  # the opening book, then one kernel batch
                stop.request("test")

    spec = live_spec(batch_records=1_000)
    res = run_live(spec, SECS, tmp_path / "out", stop, workers=1, progress=progress)
    assert res.state == STOPPED
    assert [(r.symbol, r.date) for r in res.sessions] == [
        ("AAA", START), ("AAA", trading_dates(START, 2)[1]), ("BBB", START), ("BBB", trading_dates(START, 2)[1])]
    [entry] = res.interrupted
    assert entry["symbol"] == "AAA" and entry["date"] == third.isoformat() and entry["file"] is None
    assert entry["records_delivered"] == seen[-1] and entry["records_simulated"] > seen[-1]
    assert 0 < entry["delivered_seconds"] < SECONDS
    assert entry["open_ticks"] == res.sessions[1].result.close_ticks  # chained like any session
    path = tmp_path / "out" / "AAA" / f"{third}.qrsdp"
    assert not path.exists() and not partial_path(path).exists()
    assert stray(tmp_path / "out") == []
    live = json.loads((tmp_path / "out" / "manifest.json").read_text())["live"]
    assert live["interrupted"] == [entry] and live["in_progress"] == [] and live["current_date"] is None
    assert live["complete_through"] == trading_dates(START, 2)[1].isoformat()


class RecordingPublisher:
    """A ``SessionPublisher`` that keeps what the runner tells it (the real one is tested against a
    broker in test_engine_live_cli.py)."""

    def __init__(self, fail_on: tuple[str, dt.date] | None = None) -> None:
        self.fail_on = fail_on
        self.opened: list[tuple[str, dt.date]] = []
        self.ended: list[tuple[str, str, int]] = []
        self.sinks: dict[tuple[str, dt.date], InMemorySink] = {}
        self.closed = 0

    def open_session(self, symbol: str, date: dt.date, run_id: str) -> InMemorySink:
        if (symbol, date) == self.fail_on:
            raise OSError("injected: the publisher cannot open this session")
        self.opened.append((symbol, date))
        sink = self.sinks[(symbol, date)] = InMemorySink()
        return sink

    def end_session(self, sink: InMemorySink, session: dict[str, Any]) -> None:
        key = next(k for k, v in self.sinks.items() if v is sink)
        self.ended.append((key[0], key[1].isoformat(), session["events"]))

    def close(self) -> dict[str, Any]:
        self.closed += 1
        return {"produced": sum(len(s.records) for s in self.sinks.values()), "closed": self.closed}


def test_publisher_gets_markers_for_finished_sessions_only_and_is_closed(tmp_path):
    stop = StopRequest()
    third = trading_dates(START, 3)[2]
    pub = RecordingPublisher()
    count = {"n": 0}

    def progress(symbol: str, date: dt.date, t: float, n: int) -> None:
        if (symbol, date) == ("BBB", third):
            count["n"] += 1
            if count["n"] == 2:
                stop.request("test")

    res = run_live(live_spec(batch_records=500), SECS, tmp_path, stop, workers=1, progress=progress, publisher=pub)
    finished = {(r.symbol, r.date.isoformat()): r.result.events for r in res.sessions}
    assert {(s, d): n for s, d, n in pub.ended} == finished and len(finished) == 5
    assert ("BBB", third) in pub.opened and ("BBB", third.isoformat()) not in finished
    assert pub.closed == 1 and res.manifest["publish"] == {"produced": pub.close()["produced"], "closed": 1}
    for (symbol, date), sink in pub.sinks.items():  # what the publisher got is the file's records
        if (symbol, date.isoformat()) in finished:
            assert len(sink.records) == finished[(symbol, date.isoformat())]
    assert [(e["symbol"], e["date"]) for e in res.interrupted] == [("BBB", third.isoformat())]
    assert len(pub.sinks[("BBB", third)].records) == res.interrupted[0]["records_delivered"]


def test_a_failing_session_stops_the_run_and_the_manifest_says_why(tmp_path):
    second = trading_dates(START, 2)[1]
    pub = RecordingPublisher(fail_on=("BBB", second))
    stop = StopRequest()
    with pytest.raises(OSError, match="injected"):
        run_live(live_spec(), SECS, tmp_path, stop, workers=1, publisher=pub)
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    live = manifest["live"]
    assert live["state"] == FAILED and "injected" in live["error"] and live["stop_reason"] == "error"
    assert [(s["symbol"], s["date"]) for s in sessions_of(manifest)] == [
        ("AAA", START.isoformat()), ("AAA", second.isoformat()), ("BBB", START.isoformat())]
    assert pub.closed == 1 and manifest["publish"]["closed"] == 1
    assert stray(tmp_path) == []


def test_live_run_ends_with_the_calendar_or_at_its_last_date(tmp_path):
    res = run_live(live_spec(start_date=dt.date(9999, 12, 29)), SECS[:1], tmp_path / "end", StopRequest())
    assert res.state == CALENDAR_END and res.stop_reason is None
    assert [r.date for r in res.sessions] == [dt.date(9999, 12, 29), dt.date(9999, 12, 30), dt.date(9999, 12, 31)]
    res = run_live(live_spec(), SECS, tmp_path / "last", StopRequest(), last_date=dt.date(2026, 1, 5))
    assert res.state == CALENDAR_END and res.manifest["live"]["complete_through"] == "2026-01-05"
    assert sorted({r.date for r in res.sessions}) == [dt.date(2026, 1, 1), dt.date(2026, 1, 2), dt.date(2026, 1, 5)]


def test_stop_before_the_first_date_leaves_an_empty_run(tmp_path):
    stop = StopRequest()
    stop.request("SIGTERM")
    res = run_live(live_spec(), SECS, tmp_path, stop)
    assert res.state == STOPPED and res.sessions == [] and res.interrupted == []
    assert json.loads((tmp_path / "manifest.json").read_text())["live"]["stop_reason"] == "SIGTERM"
    assert files(tmp_path) == {}


def test_run_and_run_live_refuse_each_others_specs(tmp_path):
    with pytest.raises(ValueError, match="live run"):
        run(live_spec(), SECS, tmp_path)
    with pytest.raises(ValueError, match="days=0"):
        run_live(RunSpec(days=2), SECS, tmp_path, StopRequest())
    with pytest.raises(ValueError, match="calendar ends"):
        RunSpec(days=3, start_date=dt.date(9999, 12, 30)).validate()
    with pytest.raises(ValueError, match="days must be >= 0"):
        RunSpec(days=-1).validate()


def test_the_calendar_runs_to_its_end_without_overflow():
    assert list(iter_trading_dates(dt.date(9999, 12, 30))) == [dt.date(9999, 12, 30), dt.date(9999, 12, 31)]
    assert trading_dates(dt.date(9999, 12, 29), 10) == [dt.date(9999, 12, d) for d in (29, 30, 31)]
    it = iter_trading_dates(dt.date(2026, 1, 3))  # Saturday
    assert [next(it) for _ in range(6)] == trading_dates(dt.date(2026, 1, 3), 6)


# -- the pieces: pacer, simulate_session / simulate_to_file --------------------------------------------
class StoppingClock:
    """A fake clock whose ``sleep`` sets ``stop`` at its ``stop_at``-th call (the pacer must return then)."""

    def __init__(self, stop: threading.Event, stop_at: int) -> None:
        self.now = 0.0
        self.sleeps = 0
        self.stop = stop
        self.stop_at = stop_at

    def clock(self) -> float:
        return self.now

    def sleep(self, s: float) -> None:
        self.sleeps += 1
        self.now += s
        if self.sleeps == self.stop_at:
            self.stop.set()


def test_pacer_returns_what_it_handed_over_when_stopped():
    open_ns = 1_000 * 10**9
    batch = np.zeros(400, dtype=RECORD_DTYPE)
    batch["ts_ns"] = open_ns + (np.arange(400) * 0.025 * 1e9).astype(np.uint64)  # 10 s of events
    stop = threading.Event()
    clock = StoppingClock(stop, stop_at=20)
    sink = InMemorySink()
    handed = Pacer(1.0, open_ns, clock.clock, clock.sleep, stop=stop).deliver(sink, batch)
    assert 0 < handed < len(batch) and len(sink.records) == handed
    assert np.array_equal(sink.records, batch[:handed])
    assert clock.sleeps == 20  # no wait after the stop
    # without a stop it hands over everything, as before
    clock2 = StoppingClock(threading.Event(), stop_at=-1)
    sink2 = InMemorySink()
    assert Pacer(1.0, open_ns, clock2.clock, clock2.sleep).deliver(sink2, batch) == len(batch)
    assert np.array_equal(sink2.records, batch)


def test_pacer_waits_on_the_stop_event():
    """A stop set before a long wait: the wait returns at once (``Event.wait``), so a paced session that
    would take hours ends promptly; the returned count tells the caller it was cut short."""
    stop = threading.Event()
    stop.set()
    batch = np.zeros(3, dtype=RECORD_DTYPE)
    batch["ts_ns"] = [0, 3_600 * 10**9, 7_200 * 10**9]
    sink = InMemorySink()
    assert Pacer(1.0, 0, stop=stop).deliver(sink, batch) == 0 and len(sink.records) == 0


class StopAfter(InMemorySink):
    """Sets ``stop`` once it has received ``n`` batches."""

    def __init__(self, stop: threading.Event, n: int) -> None:
        super().__init__()
        self.stop = stop
        self.n = n
        self.batches = 0

    def append(self, batch: np.ndarray) -> None:
        super().append(batch)
        self.batches += 1
        if self.batches == self.n:
            self.stop.set()


@pytest.mark.parametrize("speed", [None, 1e6], ids=["unpaced", "paced"])
def test_simulate_session_stops_at_the_next_batch(speed):
    cfg = SessionConfig(seed=3, session_seconds=600, batch_records=1_000)
    full = InMemorySink()
    simulate_session(cfg, full)
    stop = threading.Event()
    sink = StopAfter(stop, 3)
    with pytest.raises(SessionInterrupted) as info:
        simulate_session(cfg, sink, stop=stop, realtime_speed=speed)
    exc = info.value
    assert exc.delivered == len(sink.records) < len(full.records)
    assert np.array_equal(sink.records, full.records[: exc.delivered])  # a prefix of the session
    assert exc.records >= exc.delivered and exc.seed == 3 and 0 < exc.delivered_seconds < 600
    assert exc.delivered_seconds == (int(sink.records["ts_ns"][-1]) - cfg.market_open_ns) / 1e9  # as delivered


def test_simulate_to_file_stopped_leaves_nothing(tmp_path):
    stop = threading.Event()
    path = tmp_path / "s.qrsdp"
    with pytest.raises(SessionInterrupted):
        simulate_to_file(SessionConfig(seed=3, session_seconds=600, batch_records=1_000), path,
                         extra_sinks=[StopAfter(stop, 2)], stop=stop, fsync=False)
    assert list(tmp_path.iterdir()) == []
