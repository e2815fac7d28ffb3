"""Multi-day, multi-security runs: calendar, price chaining, threads, manifest.

* Dates: ``days`` consecutive weekdays from ``start_date`` (a weekend start rolls to Monday).
* Chaining: a symbol's first session opens at its ``p0_ticks``; every later session
  opens at the previous session's close, where close = floor((best bid + best ask) / 2)
  of the final book. Each session re-seeds a fresh opening book around its open.
* Seeds: ``session_seed(base_seed, symbol, date)`` -- independent of list positions.
* Files: ``OUTPUT/SYMBOL/YYYY-MM-DD.qrsdp`` (``session_path``), one folder per symbol.
* Market factor: with ``factor.loading != 0`` every session of a date reads the same
  signal of that date's factor path (``engine.factor``), derived from (base seed, date).
* Parallelism: one worker thread per security at a time (the compiled kernel releases
  the GIL, and so does LZ4 compression), days of a symbol in order within its worker.
  Results do not depend on the number of workers or on scheduling.

``simulate_symbol_date`` is the single-partition entry point used both here and by the
orchestrator, so one symbol-date simulated alone is byte-identical to the same
symbol-date inside any run, given the same open price.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from qrsdp_sim.engine.calendar import (
    DEFAULT_MARKET_OPEN,
    DEFAULT_START,
    iter_trading_dates,
    parse_market_open,
    trading_dates,
)
from qrsdp_sim.engine.clock import market_seed
from qrsdp_sim.engine.factor import MarketFactor
from qrsdp_sim.engine.models.base import IntensityModel
from qrsdp_sim.engine.models.factory import with_exo_loading
from qrsdp_sim.engine.models.simple_imbalance import SimpleImbalance
from qrsdp_sim.engine.realism import Realism
from qrsdp_sim.engine.seeds import SEED_STRATEGY, session_seed, validate_symbol
from qrsdp_sim.engine.session import DEFAULT_BATCH, SessionConfig, SessionResult, simulate_to_file
from qrsdp_sim.eventlog.closer import BackgroundCloser
from qrsdp_sim.eventlog.format import DEFAULT_CHUNK_CAPACITY
from qrsdp_sim.sinks.base import EventSink

MANIFEST_NAME = "manifest.json"
PRODUCER = "qrsdp-engine 0.1.0"

# (symbol, date, simulated seconds so far, records so far)
RunProgressFn = Callable[[str, dt.date, float, int], None]

log = logging.getLogger(__name__)


class SessionPublisher(Protocol):
    """Something that receives every session of a run besides its file (e.g. Kafka).

    ``open_session`` returns a sink fed alongside the file sink (best effort: its
    failures never stop the run); ``end_session`` is called after the session's file
    is published, with :func:`session_description`; ``close`` ends the run and returns
    delivery totals for the manifest.
    """

    def open_session(self, symbol: str, date: dt.date, run_id: str) -> EventSink: ...

    def end_session(self, sink: EventSink, session: dict[str, Any]) -> None: ...

    def close(self) -> dict[str, Any]: ...


@dataclass(frozen=True)
class RunSpec:
    """Settings shared by every session of a run (and by orchestrator partitions)."""

    base_seed: int = 42
    days: int = 1  # 0: a live run (engine.live.run_live), dates without end
    start_date: dt.date = DEFAULT_START
    session_seconds: int = 23_400
    levels_per_side: int = 5
    initial_depth: int = 5
    initial_spread_ticks: int = 2
    tick_size: int = 100
    market_open: str = DEFAULT_MARKET_OPEN
    model: IntensityModel = field(default_factory=SimpleImbalance)
    realism: Realism = field(default_factory=Realism)  # Realism.plain(): the seed's order flow
    chunk_capacity: int = DEFAULT_CHUNK_CAPACITY
    batch_records: int = DEFAULT_BATCH
    factor: MarketFactor = field(default_factory=MarketFactor)  # loading 0: independent securities

    def dates(self) -> list[dt.date]:
        return trading_dates(self.start_date, self.days)

    def session_config(self, symbol: str, date: dt.date, open_ticks: int) -> SessionConfig:
        """The complete configuration of one symbol-date session (with ``factor_signal(date)``)."""
        model = with_exo_loading(self.model, self.factor.loading) if self.factor.enabled else self.model
        return SessionConfig(
            seed=session_seed(self.base_seed, symbol, date),
            p0_ticks=int(open_ticks),
            session_seconds=self.session_seconds,
            levels_per_side=self.levels_per_side,
            initial_spread_ticks=self.initial_spread_ticks,
            initial_depth=self.initial_depth,
            tick_size=self.tick_size,
            market_open_ns=parse_market_open(self.market_open),
            model=model,
            realism=self.realism,
            market_seed=market_seed(self.base_seed, date.year * 10_000 + date.month * 100 + date.day),
            batch_records=self.batch_records,
            chunk_capacity=self.chunk_capacity,
        )

    def factor_signal(self, date: dt.date) -> np.ndarray | None:
        """The market-factor signal every session of ``date`` reads (None without a loading)."""
        if not self.factor.enabled:
            return None
        return self.factor.signal(self.base_seed, date, self.session_seconds)

    def validate(self, p0_ticks: int = 10_000) -> None:
        if self.base_seed < 0:
            raise ValueError(f"seed must be >= 0, got {self.base_seed}")
        if self.days < 0:
            raise ValueError(f"days must be >= 0 (0: live, until stopped), got {self.days}")
        if self.chunk_capacity < 1:
            raise ValueError(f"chunk size must be >= 1, got {self.chunk_capacity}")
        first = next(iter_trading_dates(self.start_date), None)
        if first is None or len(self.dates()) < self.days:
            raise ValueError(f"the calendar ends (9999-12-31) before {max(self.days, 1)} trading date(s) "
                             f"from {self.start_date.isoformat()}")
        self.factor.validate()
        self.session_config("SIM", first, p0_ticks).validate()

    def manifest_fields(self) -> dict[str, Any]:
        return {
            "tick_size": self.tick_size,
            "session_seconds": self.session_seconds,
            "levels_per_side": self.levels_per_side,
            "initial_spread_ticks": self.initial_spread_ticks,
            "initial_depth": self.initial_depth,
            "market_open": self.market_open,
            "model": self.model.to_dict(),
            "realism": self.realism.to_dict(),
            "market_factor": self.factor.to_dict(),
        }


@dataclass(frozen=True)
class Security:
    symbol: str
    p0_ticks: int = 10_000

    def __post_init__(self) -> None:
        validate_symbol(self.symbol)
        if self.p0_ticks < 1:
            raise ValueError(f"{self.symbol}: opening price must be >= 1 tick, got {self.p0_ticks}")


@dataclass(frozen=True)
class SessionRecord:
    """One session of a run, as listed in the manifest and the closing table."""

    symbol: str
    date: dt.date
    result: SessionResult
    file: str  # relative to the output directory

    def manifest_entry(self) -> dict[str, Any]:
        return {
            "date": self.date.isoformat(),
            "seed": self.result.seed,
            "file": self.file,
            "events": self.result.events,
            "open_ticks": self.result.open_ticks,
            "close_ticks": self.result.close_ticks,
        }


@dataclass
class RunResult:
    output_dir: Path
    manifest_path: Path
    manifest: dict[str, Any]
    sessions: list[SessionRecord]
    wall_seconds: float  # simulating and writing, after the kernel was loaded
    warmup_seconds: float = 0.0  # compiling or loading the kernel from numba's cache


def parse_securities(text: str) -> list[Security]:
    """``"AAPL:10000,MSFT:15000"`` -> securities. Raises ValueError with the offending item."""
    out: list[Security] = []
    seen: set[str] = set()
    for item in text.split(","):
        item = item.strip()
        sym, sep, price = item.partition(":")
        if not sep:
            raise ValueError(f"invalid security {item!r}: expected SYMBOL:P0_TICKS")
        try:
            p0 = int(price)
        except ValueError:
            raise ValueError(
                f"invalid opening price in {item!r}: expected an integer number of ticks"
            ) from None
        sec = Security(validate_symbol(sym), p0)
        if sym in seen:
            raise ValueError(f"symbol {sym} listed twice")
        seen.add(sym)
        out.append(sec)
    if not out:
        raise ValueError("no securities given")
    return out


def session_path(output_dir: str | os.PathLike[str], symbol: str, date: dt.date) -> Path:
    """Where a symbol-date session lives: ``OUTPUT/SYMBOL/YYYY-MM-DD.qrsdp``."""
    return Path(output_dir) / validate_symbol(symbol) / f"{date.isoformat()}.qrsdp"


def session_description(spec: RunSpec, symbol: str, date: dt.date, result: SessionResult) -> dict[str, Any]:
    """What a consumer needs to describe a session without its file (the lake's ``sessions`` row)."""
    config = spec.session_config(symbol, date, result.open_ticks)
    return {
        "seed": int(result.seed),
        "open_ticks": int(result.open_ticks),
        "close_ticks": int(result.close_ticks),
        "events": int(result.events),
        "tick_size": int(config.tick_size),
        "market_open_ns": int(config.market_open_ns),
        "session_seconds": int(config.session_seconds),
    }


def simulate_symbol_date(
    spec: RunSpec,
    symbol: str,
    date: dt.date,
    open_ticks: int,
    path: str | os.PathLike[str],
    *,
    extra_sinks: list[EventSink] | None = None,
    progress: Callable[[float, int], None] | None = None,
    realtime_speed: float | None = None,
    fsync: bool = True,
    stop: threading.Event | None = None,
    closer: BackgroundCloser | None = None,
    compressor: Executor | None = None,
) -> SessionResult:
    """Simulate one symbol-date opening at ``open_ticks`` into ``path`` (a ``.qrsdp`` file).

    The orchestrator's per-partition entry point. ``open_ticks`` is the symbol's ``p0``
    on its first date and the previous trading date's ``close_ticks`` afterwards.
    ``stop``: see ``simulate_session`` (raises ``SessionInterrupted``; no file is left);
    ``closer``, ``compressor``: see ``simulate_to_file`` (the file is complete after ``closer.wait()``).
    """
    config = spec.session_config(symbol, date, open_ticks)
    return simulate_to_file(
        config,
        path,
        extra_sinks=extra_sinks,
        progress=progress,
        realtime_speed=realtime_speed,
        fsync=fsync,
        exo=spec.factor_signal(date),
        exo_step_seconds=spec.factor.step_seconds,
        stop=stop,
        closer=closer,
        compressor=compressor,
    )


def run_session(
    spec: RunSpec,
    symbol: str,
    date: dt.date,
    open_ticks: int,
    output_dir: Path,
    *,
    progress: RunProgressFn | None = None,
    realtime_speed: float | None = None,
    publisher: SessionPublisher | None = None,
    run_id: str = "",
    stop: threading.Event | None = None,
    closer: BackgroundCloser | None = None,
    compressor: Executor | None = None,
) -> SessionRecord:
    """One session of a run: its file under ``output_dir``, published too when there is a publisher
    (the end-of-session marker goes out after the file is complete). ``stop``: see ``simulate_session``."""
    path = session_path(output_dir, symbol, date)
    cb = None
    if progress is not None:

        def cb(t: float, n: int) -> None:
            progress(symbol, date, t, n)

    extra = [publisher.open_session(symbol, date, run_id)] if publisher is not None else None
    result = simulate_symbol_date(
        spec, symbol, date, open_ticks, path, progress=cb, realtime_speed=realtime_speed,
        extra_sinks=extra, stop=stop, closer=closer, compressor=compressor,
    )
    if publisher is not None and extra:
        publisher.end_session(extra[0], session_description(spec, symbol, date, result))
    return SessionRecord(symbol, date, result, path.relative_to(output_dir).as_posix())


def _run_security(
    spec: RunSpec,
    sec: Security,
    output_dir: Path,
    progress: RunProgressFn | None,
    realtime_speed: float | None,
    stop: threading.Event,
    publisher: SessionPublisher | None = None,
    run_id: str = "",
    closer: BackgroundCloser | None = None,
    compressor: Executor | None = None,
) -> list[SessionRecord]:
    out: list[SessionRecord] = []
    open_ticks = sec.p0_ticks
    for date in spec.dates():
        if stop.is_set():
            break
        rec = run_session(spec, sec.symbol, date, open_ticks, output_dir, progress=progress,
                          realtime_speed=realtime_speed, publisher=publisher, run_id=run_id, closer=closer,
                          compressor=compressor)
        out.append(rec)
        open_ticks = rec.result.close_ticks
    return out


def build_manifest(
    spec: RunSpec, securities: list[Security], sessions: list[SessionRecord], run_id: str
) -> dict[str, Any]:
    """Format 1.0 for one security, 1.1 (a ``securities`` list) for several."""
    by_symbol: dict[str, list[SessionRecord]] = {s.symbol: [] for s in securities}
    for rec in sessions:
        by_symbol[rec.symbol].append(rec)
    head = {
        "run_id": run_id,
        "producer": PRODUCER,
        "base_seed": spec.base_seed,
        "seed_strategy": SEED_STRATEGY,
    }

    def entry(sec: Security) -> dict[str, Any]:
        fields = spec.manifest_fields()
        return {
            "symbol": sec.symbol,
            "tick_size": fields.pop("tick_size"),
            "p0_ticks": sec.p0_ticks,
            **fields,
            "sessions": [r.manifest_entry() for r in sorted(by_symbol[sec.symbol], key=lambda r: r.date)],
        }

    if len(securities) == 1:
        return {"format": "1.0", **head, **entry(securities[0])}
    return {"format": "1.1", **head, "securities": [entry(s) for s in securities]}


def write_manifest(path: Path, manifest: dict[str, Any], *, fsync: bool = False) -> None:
    """Replace ``path`` atomically (readers see the old or the new manifest, never a part);
    ``fsync``: also make it durable before returning (the file and its directory entry)."""
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w") as fh:
        fh.write(json.dumps(manifest, indent=2) + "\n")
        if fsync:
            fh.flush()
            os.fsync(fh.fileno())
    os.replace(tmp, path)
    if fsync:
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def run(
    spec: RunSpec,
    securities: list[Security],
    output_dir: str | os.PathLike[str],
    *,
    workers: int = 2,
    progress: RunProgressFn | None = None,
    realtime_speed: float | None = None,
    run_id: str | None = None,
    publisher: SessionPublisher | None = None,
) -> RunResult:
    """Simulate every (security, date) of the run and write ``manifest.json``.

    With a ``publisher`` every session is also published (dual-write); its delivery
    totals go into the manifest under ``publish``. The files do not depend on it.
    """
    started = time.perf_counter()
    if not securities:
        raise ValueError("no securities to simulate")
    if spec.days == 0:
        raise ValueError("days=0 is a live run: use qrsdp_sim.engine.live.run_live")
    spec.validate(min(s.p0_ticks for s in securities))
    output = Path(output_dir)
    output.mkdir(parents=True, exist_ok=True)
    warm_up(spec.model, spec.levels_per_side, spec.realism)
    warmup = time.perf_counter() - started
    started = time.perf_counter()
    stop = threading.Event()
    run_id = run_id or uuid.uuid4().hex
    sessions: list[SessionRecord] = []
    n_workers = max(1, min(workers, len(securities)))
    # files are closed (index, fsync, rename) off the simulating threads, except when a publisher's
    # end-of-session marker must follow the complete file
    closer = BackgroundCloser() if publisher is None else None
    compressor = TailCompression(n_workers)
    try:
        with ThreadPoolExecutor(max_workers=n_workers, thread_name_prefix="qrsdp-sim") as pool:
            futures = [
                pool.submit(
                    _run_security, spec, sec, output, progress, realtime_speed, stop, publisher, run_id, closer,
                    compressor,
                )
                for sec in securities
            ]
            for fut in futures:  # the first chain to end frees a core: from then on it compresses
                fut.add_done_callback(lambda _: compressor.activate())
            try:
                for fut in futures:
                    sessions.extend(fut.result())
            except BaseException:
                stop.set()
                if publisher is not None:
                    publisher.close()
                raise
        if closer is not None:
            closer.wait()
    finally:
        if closer is not None:
            closer.shutdown()
        compressor.shutdown(wait=True)
    order = {s.symbol: i for i, s in enumerate(securities)}
    sessions.sort(key=lambda r: (order[r.symbol], r.date))
    manifest = build_manifest(spec, securities, sessions, run_id)
    if publisher is not None:
        manifest["publish"] = publisher.close()
    manifest_path = output / MANIFEST_NAME
    write_manifest(manifest_path, manifest)
    return RunResult(output, manifest_path, manifest, sessions, time.perf_counter() - started, warmup)


class TailCompression(Executor):
    """LZ4 threads for the end of a run. Each symbol's sessions are a chain on one thread, and the
    chains rarely end together: the cores here are often unequally fast (two chains of equal work
    ended 0.8-1.75 s apart in a 5-6 s run). Once the first chain has ended, the writers of the
    others hand their chunks to these threads, which the freed core runs. Before that they compress
    on their own thread: compressing elsewhere while both cores simulate only moves the chunks
    between caches (measured: no gain with equal cores)."""

    def __init__(self, workers: int) -> None:
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="qrsdp-lz4")
        self.active = False

    def activate(self) -> None:
        self.active = True

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        return self._pool.submit(fn, *args, **kwargs)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        self._pool.shutdown(wait=wait, cancel_futures=cancel_futures)


_warm_lock = threading.Lock()


def warm_up(model: IntensityModel, levels: int = 5, realism: Realism | None = None) -> None:
    """Load the engine's compiled code in the calling thread before workers start: the native library
    when it is built (no numba at all), else numba's dispatchers (compiled, or from numba's cache),
    building the native library from them for the next process (``engine/native.py``)."""
    from qrsdp_sim.engine import entry_points, native
    from qrsdp_sim.engine.session import simulate_session
    from qrsdp_sim.sinks.memory import InMemorySink

    with _warm_lock:
        if entry_points.is_native():
            return
        entry_points.use(entry_points.NumbaEntryPoints())

        def session(r: Realism) -> None:
            config = SessionConfig(seed=0, session_seconds=1, levels_per_side=levels, model=model, realism=r)
            simulate_session(config, InMemorySink())

        session(realism or Realism())
        if native.enabled() and native.compiler() is not None:
            if realism is not None and realism.clock.is_identity:
                session(Realism())  # the business clock on: its entry point (ar1) compiled too
            try:
                entry_points.use(native.load(native.build()) or entry_points.NumbaEntryPoints())
            except Exception as exc:  # an optimisation: never fail a run over it
                log.warning("native kernel not built (%s: %s); numba is used", type(exc).__name__, exc)
