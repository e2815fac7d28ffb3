"""Python API for one session: ``simulate_session(config, sink) -> SessionResult``.

The driver owns the book, generator and clock arrays, calls the compiled kernel
until the session ends, and hands each filled buffer to the sink as one batch. A
batch handed to a sink is never touched again by the engine (a fresh buffer is used
for the next call), so sinks may keep it without copying.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Executor
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from qrsdp_sim.engine import entry_points
from qrsdp_sim.engine.book import BB, ERROR, N_FREE, NEXT_ID, grow_pool, new_book
from qrsdp_sim.engine.calendar import NS_PER_SECOND
from qrsdp_sim.engine.clock import ClockGrid
from qrsdp_sim.engine.kernel import (
    DONE,
    ERROR_GRID,
    F_CAL,
    F_TIME,
    N_FST,
    N_SPAR,
    S_LOT,
    S_META_LIQ,
    S_META_SHARE,
    S_META_TAIL,
    S_PARTIAL,
    S_UNIT,
    TOB_COLS,
    buffer_records,
    max_records_per_event,
    scratch_size,
)
from qrsdp_sim.engine.models.base import P_LOADING, IntensityModel
from qrsdp_sim.engine.models.simple_imbalance import SimpleImbalance
from qrsdp_sim.engine.pacing import Pacer
from qrsdp_sim.engine.realism import Realism
from qrsdp_sim.engine.rng import seed_state
from qrsdp_sim.eventlog.closer import BackgroundCloser
from qrsdp_sim.eventlog.format import DEFAULT_CHUNK_CAPACITY, LogHeader
from qrsdp_sim.eventlog.writer import BinaryFileSink
from qrsdp_sim.records import RECORD_DTYPE, RECORD_SIZE
from qrsdp_sim.sinks.base import EventSink
from qrsdp_sim.sinks.multiplex import MultiplexSink

DEFAULT_BATCH = 65_536
MAX_LEVELS = 64
MAX_DEPTH = 1000
DAY_NS = 86_400 * NS_PER_SECOND

ProgressFn = Callable[[float, int], None]  # (simulated seconds so far, records so far)


class SimulationError(RuntimeError):
    """The session could not be completed (e.g. the price left the book's tick grid)."""


class SessionInterrupted(Exception):
    """The session was stopped (its ``stop`` event was set) before its end.

    ``records`` were simulated, the first ``delivered`` of them handed to the sink (the kernel runs
    ahead of delivery, a paced one by up to a batch); ``delivered_seconds`` is the event time, since
    the open, of the last record handed over. ``simulate_to_file`` publishes no file for it.
    """

    def __init__(self, seed: int, records: int, delivered: int, delivered_seconds: float) -> None:
        super().__init__(f"session {seed} stopped at {delivered_seconds:.1f} simulated seconds")
        self.seed = seed
        self.records = records
        self.delivered = delivered
        self.delivered_seconds = delivered_seconds


@dataclass(frozen=True)
class SessionConfig:
    """Everything that determines one session's records (together with nothing else)."""

    seed: int
    p0_ticks: int = 10_000
    session_seconds: int = 23_400
    levels_per_side: int = 5
    initial_spread_ticks: int = 2
    initial_depth: int = 5
    tick_size: int = 100
    market_open_ns: int = 34_200 * NS_PER_SECOND
    model: IntensityModel = field(default_factory=SimpleImbalance)
    realism: Realism = field(default_factory=Realism)
    market_seed: int | None = None  # the date's market-wide activity (None: drawn from ``seed``)
    batch_records: int = DEFAULT_BATCH
    chunk_capacity: int = DEFAULT_CHUNK_CAPACITY

    def validate(self) -> None:
        """Raise ValueError on any setting the engine cannot honour."""
        if not 0 <= int(self.seed) < 2**64:
            raise ValueError(f"seed must be in [0, 2**64), got {self.seed}")
        if not 1 <= self.levels_per_side <= MAX_LEVELS:
            raise ValueError(f"levels per side must be in [1, {MAX_LEVELS}], got {self.levels_per_side}")
        if not 1 <= self.initial_depth <= MAX_DEPTH:
            raise ValueError(f"initial depth must be in [1, {MAX_DEPTH}], got {self.initial_depth}")
        if self.initial_spread_ticks < 1:
            raise ValueError(f"initial spread must be >= 1 tick, got {self.initial_spread_ticks}")
        if self.session_seconds < 1:
            raise ValueError(f"session length must be >= 1 second, got {self.session_seconds}")
        if not 0 <= self.market_open_ns < DAY_NS:
            raise ValueError("market open must be a time of day")
        if self.market_open_ns + self.session_seconds * NS_PER_SECOND > DAY_NS:
            raise ValueError("the session would run past midnight: reduce the length or the market open")
        low = self.p0_ticks - self.initial_spread_ticks // 2 - self.levels_per_side
        if low < 1 or self.p0_ticks >= 2**31 - 1_000_000:
            raise ValueError(f"opening price {self.p0_ticks} ticks leaves no room for the opening book")
        if self.tick_size < 1:
            raise ValueError(f"tick size must be >= 1, got {self.tick_size}")
        if self.batch_records < 1:
            raise ValueError("batch_records must be >= 1")
        if self.chunk_capacity < 1:
            raise ValueError(f"chunk capacity must be >= 1, got {self.chunk_capacity}")
        self.model.validate(self.levels_per_side)
        self.realism.validate()

    def clock_grid(self) -> ClockGrid | None:
        """The session's business clock (None when it is the identity)."""
        if self.realism.clock.is_identity:
            return None
        return self.realism.clock.grid(int(self.seed), float(self.session_seconds), self.market_seed)

    def decorator(self) -> tuple[int, np.ndarray, np.ndarray]:
        """The session's intensity decorator ``(kind, params, fresh state)``: a model with its own
        time-varying multiplier (HawkesIntensity) supplies it, and it takes the place of the realism
        layer's excitation. A fresh state on every call (the kernel mutates it)."""
        make_decorator = getattr(self.model, "decorator", None)
        return make_decorator() if make_decorator is not None else self.realism.excitation.decorator()

    def header(self) -> LogHeader:
        return LogHeader(
            seed=int(self.seed),
            p0_ticks=int(self.p0_ticks),
            tick_size=int(self.tick_size),
            session_seconds=int(self.session_seconds),
            levels_per_side=int(self.levels_per_side),
            initial_spread_ticks=int(self.initial_spread_ticks),
            initial_depth=int(self.initial_depth),
            chunk_capacity=int(self.chunk_capacity),
        )


@dataclass(frozen=True)
class SessionResult:
    seed: int
    open_ticks: int
    close_ticks: int  # floor((best bid + best ask) / 2) at the session end
    best_bid: int
    best_ask: int
    events: int  # records emitted, opening book and refills included
    counts: tuple[int, ...]  # records by EventType
    sim_seconds: float
    wall_seconds: float
    last_order_id: int
    file: str | None = None
    file_bytes: int | None = None
    sink_failures: tuple[str, ...] = ()  # extra sinks that failed and were isolated (simulate_to_file)

    @property
    def events_per_second(self) -> float:
        return self.events / self.wall_seconds if self.wall_seconds > 0 else float("inf")

    @property
    def compression(self) -> float | None:
        """Raw record bytes / file bytes."""
        if not self.file_bytes:
            return None
        return self.events * RECORD_SIZE / self.file_bytes


def close_rule(best_bid: int, best_ask: int) -> int:
    """The session close: the mid price rounded down to a whole tick."""
    return (int(best_bid) + int(best_ask)) // 2


class SessionDriver:
    """Runs one session batch by batch; the book can be inspected between batches.

    ``simulate_session`` is the usual entry point; the driver exists for callers that
    need the engine's own book (tests, debugging). With ``top_of_book=True`` each batch
    comes with an int64 array (len(batch), 6): for the last record of every event, the
    book after that event -- best bid, best ask, their quantities, bid and ask window
    depths -- and -1 on the other rows (opening-book and refill records).
    """

    def __init__(
        self,
        config: SessionConfig,
        *,
        exo: np.ndarray | None = None,
        exo_step_seconds: float = 1.0,
        top_of_book: bool = False,
        pool_size: int | None = None,
    ) -> None:
        config.validate()
        if exo is not None and not exo_step_seconds > 0:
            raise ValueError("exo_step_seconds must be > 0")
        self.config = config
        K = config.levels_per_side
        D = config.initial_depth
        self._need = max_records_per_event(K, D)
        self._batch = max(config.batch_records, 2 * K * D, buffer_records(K, D))
        pool = (
            max(4096, 4 * K * D + self._need) if pool_size is None else max(pool_size, 2 * K * D + self._need)
        )
        self.book = new_book(config.p0_ticks, K, D, pool_size=pool)
        self.rng = seed_state(config.seed)
        self.fst = np.zeros(N_FST, dtype=np.float64)
        self._params = config.model.params_vector()
        self._tables = np.ascontiguousarray(config.model.tables(K), dtype=np.float64)
        realism = config.realism
        self._dec = config.decorator()
        sizes = realism.sizes
        self._sz_limit = sizes.limit.table()
        self._sz_market = sizes.market.table()
        self._spar = np.zeros(N_SPAR, dtype=np.float64)
        self._spar[S_PARTIAL] = sizes.partial_cancel_share
        self._spar[S_LOT] = sizes.limit.round_lot
        self._spar[S_UNIT] = sizes.unit_shares()
        self._spar[S_META_SHARE] = realism.metaorders.share
        self._spar[S_META_TAIL] = realism.metaorders.tail
        liq = realism.metaorders.liquidity_response  # None: the model's own (params[P_LIQUIDITY])
        self._spar[S_META_LIQ] = -1.0 if liq is None else liq
        # the business clock: the kernel runs in business time and maps timestamps back
        self.clock = config.clock_grid()
        if self.clock is not None:
            self._clock = self.clock.kernel_array()
            self._t_end = self.clock.business_end
            self._clock_step = self.clock.step
        else:
            self._clock = np.zeros((2, 0), dtype=np.float64)
            self._t_end = float(config.session_seconds)
            self._clock_step = 1.0
        # without a loading the signal cannot matter: drop it, so the output stays byte-identical
        # to a run without one (a signal also restarts the clock at each of its steps)
        use_exo = exo is not None and self._params[P_LOADING] != 0.0
        self._exo = np.ascontiguousarray(exo, dtype=np.float64) if use_exo else np.zeros(0, dtype=np.float64)
        if use_exo and not np.all(np.isfinite(self._exo)):
            raise ValueError("the exogenous signal must be finite")
        # the signal's steps, in calendar time j * step, as business times
        steps = np.arange(len(self._exo), dtype=np.float64) * float(exo_step_seconds)
        self._exo_tau = self.clock.to_business(steps) if self.clock is not None else steps
        self._tob = top_of_book
        self._scratch = np.zeros(scratch_size(K), dtype=np.float64)
        self.records = 0
        self.done = False

    @property
    def sim_seconds(self) -> float:
        """Calendar seconds simulated so far (the last event's time since the open)."""
        if self.done:
            return float(self.config.session_seconds)
        return float(self.fst[F_CAL])

    @property
    def business_seconds(self) -> float:
        return float(self.fst[F_TIME])

    @property
    def decorator_state(self) -> np.ndarray:
        """A copy of the decorator's state after the events so far (tests compare replays with it)."""
        return self._dec[2].copy()

    def _tob_array(self, rows: int) -> np.ndarray:
        return np.full((rows, TOB_COLS) if self._tob else (0, TOB_COLS), -1, dtype=np.int64)

    def batches(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Yield ``(records, top_of_book)`` until the session ends (opening book first)."""
        cfg = self.config
        book = self.book
        open_ns = int(cfg.market_open_ns)
        out = np.empty(self._batch, dtype=RECORD_DTYPE)
        best_bid = cfg.p0_ticks - cfg.initial_spread_ticks // 2
        n = entry_points.open_book(
            book.grid,
            book.pool,
            book.oid,
            book.ist,
            best_bid,
            cfg.initial_spread_ticks,
            self._sz_limit,
            self.rng,
            out,
            0,
            np.uint64(open_ns),
        )
        if book.ist[ERROR]:
            raise SimulationError("the opening book does not fit the price grid")
        self.records = n
        yield out[:n], self._tob_array(n)
        t_end = self._t_end
        dec_kind, dec_params, dec_state = self._dec
        while True:
            book = self.book
            out = np.empty(self._batch, dtype=RECORD_DTYPE)
            tob = self._tob_array(self._batch)
            status, n = entry_points.run_kernel(
                book.grid,
                book.pool,
                book.oid,
                book.ist,
                self.rng,
                self.fst,
                cfg.model.kind,
                self._params,
                self._tables,
                self._spar,
                self._sz_limit,
                self._sz_market,
                dec_kind,
                dec_params,
                dec_state,
                self._exo,
                self._exo_tau,
                self._clock,
                self._clock_step,
                t_end,
                open_ns,
                out,
                tob,
                self._scratch,
            )
            self.records += n
            if n:
                yield out[:n], tob[:n]
            if status == DONE:
                self.done = True
                return
            if status == ERROR_GRID:
                raise SimulationError(
                    f"seed {cfg.seed}: the price moved more than the book's grid allows "
                    f"(best bid {book.ist[BB]}, best ask {book.ist[BB + 1]})"
                )
            if book.ist[N_FREE] < self._need:
                self.book = grow_pool(book, self._need)

    def result(self, wall_seconds: float, counts: np.ndarray) -> SessionResult:
        bb, ba = int(self.book.ist[BB]), int(self.book.ist[BB + 1])
        return SessionResult(
            seed=int(self.config.seed),
            open_ticks=int(self.config.p0_ticks),
            close_ticks=close_rule(bb, ba),
            best_bid=bb,
            best_ask=ba,
            events=int(self.records),
            counts=tuple(int(c) for c in counts),
            sim_seconds=self.sim_seconds,
            wall_seconds=wall_seconds,
            last_order_id=int(self.book.ist[NEXT_ID]) - 1,
        )


def simulate_session(
    config: SessionConfig,
    sink: EventSink,
    *,
    progress: ProgressFn | None = None,
    realtime_speed: float | None = None,
    exo: np.ndarray | None = None,
    exo_step_seconds: float = 1.0,
    stop: threading.Event | None = None,
) -> SessionResult:
    """Simulate one session, streaming record batches to ``sink`` (which is not closed).

    ``realtime_speed`` paces delivery at event time / speed. ``exo`` is the optional
    exogenous signal (the market factor, ``engine.factor``; piecewise constant on
    ``exo_step_seconds``); it only has an effect through a model's loading parameter.
    ``stop``: once set, the session ends at the next batch boundary (or pacing step) with
    :class:`SessionInterrupted`; the batches before it were delivered, nothing after.
    """
    started = time.perf_counter()
    driver = SessionDriver(config, exo=exo, exo_step_seconds=exo_step_seconds)
    pacer = Pacer(realtime_speed, config.market_open_ns, stop=stop) if realtime_speed else None
    counts = np.zeros(6, dtype=np.int64)
    delivered = 0
    last_ns = int(config.market_open_ns)  # event time of the last record handed over

    def interrupted(n: int) -> SessionInterrupted:
        return SessionInterrupted(int(config.seed), driver.records, n, (last_ns - config.market_open_ns) / 1e9)

    for records, _ in driver.batches():
        if stop is not None and stop.is_set():
            raise interrupted(delivered)
        entry_points.count_types(records, counts)
        if pacer is not None:
            handed = pacer.deliver(sink, records)
            if handed < len(records):
                if handed:
                    last_ns = int(records["ts_ns"][handed - 1])
                raise interrupted(delivered + handed)
        else:
            sink.append(records)
        delivered = driver.records
        last_ns = int(records["ts_ns"][-1])
        if progress is not None:
            progress(driver.sim_seconds, driver.records)
    return driver.result(time.perf_counter() - started, counts)


def simulate_to_file(
    config: SessionConfig,
    path: str | os.PathLike[str],
    *,
    extra_sinks: list[EventSink] | None = None,
    fsync: bool = True,
    progress: ProgressFn | None = None,
    realtime_speed: float | None = None,
    exo: np.ndarray | None = None,
    exo_step_seconds: float = 1.0,
    stop: threading.Event | None = None,
    closer: BackgroundCloser | None = None,
    compressor: Executor | None = None,
) -> SessionResult:
    """Simulate one session into a ``.qrsdp`` file (published atomically on success).

    ``extra_sinks`` also receive every batch (they are flushed, not closed); one that
    fails is isolated and its failure listed in ``SessionResult.sink_failures``. On any
    error of the file itself the partial file is removed and the exception propagates.
    ``exo`` / ``exo_step_seconds`` / ``stop``: as for ``simulate_session`` (an interrupted
    session leaves no file, not even a partial one). ``closer``: the file is closed (index, fsync,
    rename) on the closer's thread and this returns as soon as the records are written; the file
    is in place once ``closer.wait()`` has returned. ``compressor``: threads that LZ4-compress the
    file's chunks (shared by the sessions of a run, so a thread whose chain ends first compresses
    for the others); None compresses on this thread.
    """
    config.validate()
    started = time.perf_counter()
    file_sink = BinaryFileSink(path, config.header(), fsync=fsync, compressor=compressor)
    sink: EventSink = file_sink
    mux: MultiplexSink | None = None
    if extra_sinks:
        sink = mux = MultiplexSink(
            [file_sink, *extra_sinks],
            required={"file"},
            names=["file"] + [f"extra{i}" for i in range(len(extra_sinks))],
        )
    try:
        result = simulate_session(
            config,
            sink,
            progress=progress,
            realtime_speed=realtime_speed,
            exo=exo,
            exo_step_seconds=exo_step_seconds,
            stop=stop,
        )
        sink.flush()
        if closer is None:
            file_sink.close()
    except BaseException:
        file_sink.abort()
        raise
    if closer is not None:
        size = file_sink.closed_size
        closer.close_later(file_sink)
    else:
        size = Path(path).stat().st_size
    failures = tuple(f"{f.sink}: {f.operation}: {f.error}" for f in mux.failures) if mux else ()
    return replace(
        result,
        file=str(path),
        file_bytes=size,
        wall_seconds=time.perf_counter() - started,
        sink_failures=failures,
    )
