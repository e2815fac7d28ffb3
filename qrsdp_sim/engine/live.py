"""Live exchange mode: consecutive trading dates until stopped (``qrsdp run --days 0``).

* **Dates in lockstep.** Every security's session of a date, then the next date: at any moment
  the sessions in flight are of one date, as on an exchange (a feed never interleaves two dates),
  and with ``realtime_speed`` they are paced together (given a worker per security).
* **Chaining** as in a finite run: a symbol opens at its p0 on the first date and at its previous
  close afterwards, and every session comes from ``runner.run_session``, so the first N dates of a
  live run are byte-identical to ``days=N`` (tested).
* **Stopping.** ``stop`` (the CLI sets it on SIGTERM / SIGINT) ends every session in progress at
  its next batch boundary or pacing step (``SessionInterrupted``): its partial file is removed,
  it is listed under ``live.interrupted`` and never under ``sessions``, and its events already on
  Kafka have no end-of-session marker, so consumers keep it incomplete (the publisher lists it in
  ``incomplete_sessions``). Sessions of the date that had not started are not started. Then the
  publisher is closed (its totals go into the manifest) and the function returns.
* **The manifest is always current.** ``manifest.json`` (the finite format, plus a ``live``
  object) is rewritten atomically and fsynced when a date starts and whenever a session
  finishes, after its file is published and its end-of-session marker sent. A crash or SIGKILL
  therefore loses at most the sessions in progress: ``live.state`` stays ``running`` and
  ``live.in_progress`` names them. Each rewrite costs O(sessions so far) -- about 200 bytes per
  session, small beside the session's own file.
"""

from __future__ import annotations

import datetime as dt
import os
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qrsdp_sim.engine.calendar import iter_trading_dates
from qrsdp_sim.engine.runner import (
    MANIFEST_NAME,
    RunProgressFn,
    RunResult,
    RunSpec,
    Security,
    SessionPublisher,
    SessionRecord,
    build_manifest,
    run_session,
    warm_up,
    write_manifest,
)
from qrsdp_sim.engine.session import SessionInterrupted

# live.state values
RUNNING = "running"  # also what a killed run leaves behind
STOPPED = "stopped"  # stopped on request (signal)
CALENDAR_END = "calendar_end"  # the last date allowed was simulated
FAILED = "failed"  # a session raised; live.error says what


class StopRequest(threading.Event):
    """A stop that remembers why (e.g. ``"SIGTERM"``); the first reason given wins.

    Safe to set from a signal handler: nothing in the main thread waits on it.
    """

    reason: str | None = None

    def request(self, reason: str) -> None:
        if not self.is_set():
            self.reason = reason
        self.set()


@dataclass
class LiveResult(RunResult):
    """A live run after it ended: ``sessions`` are the finished ones, in manifest order."""

    state: str = STOPPED
    stop_reason: str | None = None
    interrupted: list[dict[str, Any]] = field(default_factory=list)


def _utc_now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def _interrupted_entry(
    spec: RunSpec, symbol: str, date: dt.date, open_ticks: int, exc: SessionInterrupted
) -> dict[str, Any]:
    return {
        "symbol": symbol,
        "date": date.isoformat(),
        "seed": exc.seed,
        "open_ticks": int(open_ticks),
        "records_simulated": exc.records,
        "records_delivered": exc.delivered,
        "delivered_seconds": round(exc.delivered_seconds, 3),
        "session_seconds": spec.session_seconds,
        "file": None,
    }


class _LiveManifest:
    """The run's manifest, rewritten (atomically, durably) on every change of state."""

    def __init__(self, spec: RunSpec, securities: list[Security], path: Path, run_id: str,
                 realtime_speed: float | None) -> None:
        self.spec = spec
        self.securities = securities
        self.path = path
        self.run_id = run_id
        self.order = {s.symbol: i for i, s in enumerate(securities)}
        self.sessions: list[SessionRecord] = []
        self.publish: dict[str, Any] | None = None
        self.live: dict[str, Any] = {
            "state": RUNNING,
            "pid": os.getpid(),
            "started_at": _utc_now(),
            "updated_at": None,
            "realtime_speed": realtime_speed,
            "current_date": None,
            "in_progress": [],
            "sessions_finished": 0,
            "complete_through": None,  # the last date every security finished
            "stop_reason": None,
            "interrupted": [],
            "error": None,
        }

    def document(self) -> dict[str, Any]:
        self.sessions.sort(key=lambda r: (self.order[r.symbol], r.date))
        manifest = build_manifest(self.spec, self.securities, self.sessions, self.run_id)
        if self.publish is not None:
            manifest["publish"] = self.publish
        manifest["live"] = dict(self.live, updated_at=_utc_now())
        return manifest

    def write(self) -> dict[str, Any]:
        manifest = self.document()
        write_manifest(self.path, manifest, fsync=True)
        return manifest


def run_live(
    spec: RunSpec,
    securities: list[Security],
    output_dir: str | os.PathLike[str],
    stop: StopRequest,
    *,
    workers: int | None = None,
    progress: RunProgressFn | None = None,
    realtime_speed: float | None = None,
    run_id: str | None = None,
    publisher: SessionPublisher | None = None,
    last_date: dt.date | None = None,
    on_session: Callable[[SessionRecord], None] | None = None,
    on_start: Callable[[str, dt.date, int], None] | None = None,
) -> LiveResult:
    """Simulate consecutive trading dates from ``spec.start_date`` until ``stop`` is set (or the
    date after ``last_date``, or the calendar's end), keeping ``manifest.json`` current.

    ``spec.days`` must be 0. ``workers``: sessions of a date simulated at once (default: one per
    security, which a paced feed needs). ``on_session`` is called in this thread after each
    finished session is in the manifest; ``on_start(symbol, date, open_ticks)`` in the worker
    thread as a session starts (from then on a stop interrupts it: it will be listed either as
    finished or as interrupted). A session that raises stops the run: the others are
    interrupted, the manifest says ``failed`` with the error, the publisher is closed and the
    exception propagates.
    """
    started = time.perf_counter()
    if not securities:
        raise ValueError("no securities to simulate")
    if spec.days != 0:
        raise ValueError(f"a live run has days=0, got {spec.days}")
    spec.validate(min(s.p0_ticks for s in securities))
    output = Path(output_dir)
    output.mkdir(parents=True, exist_ok=True)
    run_id = run_id or uuid.uuid4().hex
    book = _LiveManifest(spec, securities, output / MANIFEST_NAME, run_id, realtime_speed)
    book.write()
    warm_up(spec.model, spec.levels_per_side, spec.realism)
    warmup = time.perf_counter() - started
    started = time.perf_counter()
    live = book.live
    opens = {s.symbol: s.p0_ticks for s in securities}
    n_workers = max(1, min(workers or len(securities), len(securities)))
    failure: BaseException | None = None
    pool = ThreadPoolExecutor(max_workers=n_workers, thread_name_prefix="qrsdp-live")
    try:
        dates = iter_trading_dates(spec.start_date)
        while not stop.is_set():
            date = next(dates, None)
            if date is None or (last_date is not None and date > last_date):
                live["state"] = CALENDAR_END
                break
            failure = _run_date(spec, securities, date, opens, output, pool, stop, book, progress,
                                realtime_speed, publisher, run_id, on_session, on_start)
            if failure is not None:
                break
    except BaseException as exc:  # recorded, then re-raised below
        stop.request("error")  # before the pool waits for its sessions: they end at their next batch
        failure = exc
    finally:
        pool.shutdown(wait=True)
    if failure is not None:
        live["state"] = FAILED
        live["error"] = f"{type(failure).__name__}: {failure}"
    elif live["state"] == RUNNING:
        live["state"] = STOPPED
    live["stop_reason"] = stop.reason
    live["current_date"] = None
    if publisher is not None:
        book.publish = publisher.close()
    manifest = book.write()
    if failure is not None:
        raise failure
    return LiveResult(output, book.path, manifest, list(book.sessions), time.perf_counter() - started, warmup,
                      state=live["state"], stop_reason=stop.reason, interrupted=list(live["interrupted"]))


def _run_date(
    spec: RunSpec,
    securities: list[Security],
    date: dt.date,
    opens: dict[str, int],
    output: Path,
    pool: ThreadPoolExecutor,
    stop: StopRequest,
    book: _LiveManifest,
    progress: RunProgressFn | None,
    realtime_speed: float | None,
    publisher: SessionPublisher | None,
    run_id: str,
    on_session: Callable[[SessionRecord], None] | None,
    on_start: Callable[[str, dt.date, int], None] | None,
) -> BaseException | None:
    """Every security's session of ``date``; returns the first failure (the rest are interrupted)."""
    live = book.live
    live["current_date"] = date.isoformat()
    live["in_progress"] = [s.symbol for s in securities]
    book.write()

    def one(symbol: str) -> SessionRecord | None:
        if stop.is_set():
            return None  # not started: it leaves no trace anywhere
        if on_start is not None:
            on_start(symbol, date, opens[symbol])
        return run_session(spec, symbol, date, opens[symbol], output, progress=progress,
                           realtime_speed=realtime_speed, publisher=publisher, run_id=run_id, stop=stop)

    pending: dict[Future[SessionRecord | None], str] = {pool.submit(one, s.symbol): s.symbol for s in securities}
    failure: BaseException | None = None
    finished = 0
    while pending:
        done, _ = wait(pending, return_when=FIRST_COMPLETED)
        for fut in done:
            symbol = pending.pop(fut)
            live["in_progress"].remove(symbol)
            rec: SessionRecord | None = None
            try:
                rec = fut.result()
            except SessionInterrupted as exc:
                live["interrupted"].append(_interrupted_entry(spec, symbol, date, opens[symbol], exc))
            except Exception as exc:  # the run stops; run_live re-raises it
                if failure is None:
                    failure = exc
                    stop.request("error")
            else:
                if rec is not None:
                    book.sessions.append(rec)
                    opens[symbol] = rec.result.close_ticks
                    live["sessions_finished"] += 1
                    finished += 1
                    if finished == len(securities):
                        live["complete_through"] = date.isoformat()
            book.write()
            if rec is not None and on_session is not None:
                on_session(rec)
    return failure
