"""Calibration of HLR queue-reactive curves from ``.qrsdp`` event logs.

For every queue of the K-tick window of each side (level i = ticks from the own best,
empty ticks included, as the engine sees it) and every queue size n, the estimator is

    lambda_hat(n) = events observed while the queue held n units / exposure at n

Queue sizes are in *queue units*, as the models read them: n = ceil(shares / unit), unit =
``OrderSizes.unit_shares()`` of the session (from the run's manifest, else ``queue_unit``,
else the mean ADD size of the logs; 1 for the seed's one-share logs). A *model event* is
what the kernel draws once: an add, a cancel (full or partial) or a market order, which is
the run of EXECUTE records of one type at one timestamp and price (one per resting order it
touched), attributed to the best queue's size before it.

The exposure is the time spent at n, weighted by every multiplier the engine applies on top
of the curves, so that the estimate is the curve itself:

* time is *business time* when the session had a business clock (the kernel draws events in
  business time with the base rates; the clock is rebuilt from the run's manifest);
* times the excitation multiplier m(tau) when the session had one (``DEC_EXCITE``, or the
  seed's ``DEC_HAWKES``): its state is replayed through the event stream with the kernel's own
  ``dec_on_event`` and integrated exactly between events with ``dec_integral``;
* adds at level i: x a(s) x (1 - p(s)), with a(s) = exp(sS (s - 2)) and
  p(s) = min(1, (s - 1) x improve) the probability that an add improves the best
  instead (improving adds cannot be attributed to a level and are counted apart);
* cancels at level i: x 1;
* market orders on the best of side S: x e(s) x (1 + iS max(+-I, 0)), e(s) = 1 / a(s),
  I = (D_bid - D_ask) / (D_bid + D_ask) over the windows, in shares (sells use +I, buys -I).

With sS = iS = 0, no clock and no excitation this is exactly "events at n / time spent at n".
It is the maximum likelihood estimate of the curve value when the log was produced by an HLR
model with the same sensitivities (a point process whose rate is the curve times known
multipliers), so a simulated log gives back the curves it was simulated with (closed loop,
tests/test_calibration.py). Metaorders (``realism.Metaorders``) are the exception: their
sign is latent, so the log cannot tell which market orders took it nor when add rates were
tilted; their logs are calibrated as if they had none (the output says so).
Queues larger than ``n_max`` are pooled into n_max (the flat tail of the curves).

The log is replayed with :func:`qrsdp_sim.book.replay_book` (which validates every
record and gives the best prices after each); a compiled pass keeps the shares per
tick, attributes each model event to its level and queue size *before* the event,
and skips the opening book and the refill ADDs that follow a depletion at the same
timestamp (they are the engine's, not the model's).
"""

from __future__ import annotations

import datetime as _dt
import os
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numba import njit

from qrsdp_sim.book.replay import replay_book
from qrsdp_sim.calibration_sessions import (
    UNIT_GIVEN,
    UNIT_MEAN_ADD,
    CalibrationLog,
    SessionContext,
    find_logs,
    log_files,
)
from qrsdp_sim.engine.decorators import DEC_NONE, dec_integral, dec_on_event
from qrsdp_sim.engine.models.base import DEFAULT_IMPROVE
from qrsdp_sim.engine.models.hlr import DEFAULT_N_MAX, HLR, HLRCurves
from qrsdp_sim.eventlog.reader import EventLogReader

__all__ = [
    "CurveError",
    "QueueStatistics",
    "SessionContext",
    "SessionReplay",
    "accumulate_session",
    "calibrate",
    "collect_statistics",
    "curve_errors",
    "estimate_curves",
    "log_files",
    "plot_curves",
]

SIDES = ("bid", "ask")
KINDS = ("add", "cancel", "market")
DEFAULT_MIN_EVENTS = 10  # entries with fewer events are interpolated from their neighbours
ERROR_MIN_EVENTS = 2000  # entries compared with a reference (calibration error) need this many


@dataclass(frozen=True)
class SessionReplay:
    """What one session contributed, beyond its counts and exposures.

    ``weighted_seconds``: the integral of the excitation multiplier over the session's business
    time (= ``business_seconds`` without excitation), i.e. every level's total cancel exposure.
    ``decorator_state``: the replayed decorator state after the last event (the kernel's own,
    up to the nanosecond rounding of the timestamps).
    """

    source: str
    events: int
    unit: float
    unit_source: str
    time_basis: str
    excitation: str
    calendar_seconds: float
    business_seconds: float
    weighted_seconds: float
    decorator_state: np.ndarray


@dataclass
class QueueStatistics:
    """Events and (multiplier-weighted) exposure per side, level and queue size (in queue units).

    ``add_*``/``cancel_*``: shape (2, K, n_max + 1); ``market_*``: (2, n_max + 1), where
    ``market[0]`` are sells hitting the bid and ``market[1]`` buys lifting the ask.
    Exposures are in seconds of business time (calendar time for logs without a clock),
    weighted by the excitation multiplier where the session had one.
    """

    levels: int
    n_max: int
    spread_sensitivity: float
    imbalance_sensitivity: float
    improve_per_tick: float
    add_events: np.ndarray
    add_exposure: np.ndarray
    cancel_events: np.ndarray
    cancel_exposure: np.ndarray
    market_events: np.ndarray
    market_exposure: np.ndarray
    improving_adds: int = 0
    unattributed: int = 0  # model events outside the K-tick windows (never from the engine)
    events: int = 0  # model events (opening book and refills excluded; a market order is one)
    seconds: float = 0.0  # calendar seconds
    business_seconds: float = 0.0
    sessions: int = 0
    files: list[str] = field(default_factory=list)
    replays: list[SessionReplay] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # what the estimator could not account for

    @classmethod
    def empty(
        cls,
        levels: int,
        n_max: int = DEFAULT_N_MAX,
        spread_sensitivity: float = 0.3,
        imbalance_sensitivity: float = 1.0,
        improve_per_tick: float = DEFAULT_IMPROVE,
    ) -> QueueStatistics:
        w = n_max + 1
        return cls(
            levels, n_max, float(spread_sensitivity), float(imbalance_sensitivity), float(improve_per_tick),
            np.zeros((2, levels, w), np.int64), np.zeros((2, levels, w)),
            np.zeros((2, levels, w), np.int64), np.zeros((2, levels, w)),
            np.zeros((2, w), np.int64), np.zeros((2, w)),
        )  # fmt: skip

    def counts(self, kind: str) -> np.ndarray:
        return getattr(self, f"{kind}_events")

    def exposure(self, kind: str) -> np.ndarray:
        return getattr(self, f"{kind}_exposure")

    def raw_rates(self, kind: str) -> np.ndarray:
        """events / exposure (NaN where there is no exposure)."""
        ev, ex = self.counts(kind), self.exposure(kind)
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(ex > 0, ev / np.where(ex > 0, ex, 1.0), np.nan)

    @property
    def queue_unit(self) -> float | None:
        """Shares per queue unit of the curves (None when the sessions used different units)."""
        units = {r.unit for r in self.replays}
        return units.pop() if len(units) == 1 else None

    def provenance(self) -> dict[str, Any]:
        """Queue units, time bases and excitations of the sessions, with their session counts."""
        return {
            "queue_units": [
                {"shares": u, "source": src, "sessions": n}
                for (u, src), n in sorted(Counter((r.unit, r.unit_source) for r in self.replays).items())
            ],
            "time_basis": dict(sorted(Counter(r.time_basis for r in self.replays).items())),
            "business_seconds": self.business_seconds,
            "notes": list(self.notes),
        }

    def describe(self) -> list[str]:
        """Human-readable lines: which queue unit and which time each session was calibrated with."""
        lines = []
        for u in self.provenance()["queue_units"]:
            lines.append(f"queue unit: {u['shares']:g} shares ({u['source']}), {u['sessions']} session(s)")
        if self.queue_unit is None and self.replays:
            lines.append("warning: the sessions use different queue units; the curves mix them")
        for basis, n in self.provenance()["time_basis"].items():
            lines.append(f"exposure: {basis}, {n} session(s)")
        lines.extend(f"note: {n}" for n in self.notes)
        return lines

    def note(self, text: str) -> None:
        if text not in self.notes:
            self.notes.append(text)


# ---------------------------------------------------------------------------
# compiled pass
# ---------------------------------------------------------------------------


@njit(inline="always", nogil=True, cache=True, error_model="numpy")
def _units(q, inv, um1, nmax):
    """Queue size in queue units, rounded up, capped at ``nmax``: the formula of ``hlr_rates``."""
    return min(np.int64((q + um1) * inv + 1e-9), nmax)


@njit(nogil=True, cache=True, error_model="numpy")
def _expose(
    db, da, base, bb, ba, K, nmax, inv, um1, w, sS, iS, improve, add_x, can_x, mkt_x
):  # fmt: skip
    """Add ``w`` (business seconds x the excitation multiplier, integrated) of exposure to the current book."""
    s = ba - bb
    a = np.exp(sS * (s - 2))
    e = 1.0 / a
    p_imp = min(1.0, (s - 1) * improve) if s > 1 else 0.0
    w_add = w * a * (1.0 - p_imp)
    tb = 0
    ta = 0
    for k in range(K):
        nb = db[bb - k - base]
        na = da[ba + k - base]
        tb += nb
        ta += na
        cb = _units(nb, inv, um1, nmax)
        ca = _units(na, inv, um1, nmax)
        add_x[0, k, cb] += w_add
        add_x[1, k, ca] += w_add
        can_x[0, k, cb] += w
        can_x[1, k, ca] += w
    imb = (tb - ta) / (tb + ta + 1e-9)
    mkt_x[1, _units(da[ba - base], inv, um1, nmax)] += w * e * (1.0 + iS * max(-imb, 0.0))
    mkt_x[0, _units(db[bb - base], inv, um1, nmax)] += w * e * (1.0 + iS * max(imb, 0.0))


@njit(nogil=True, cache=True, error_model="numpy")
def _accumulate(
    types, sides, prices, qtys, ts, tau, best_bid, best_ask, n_open, tau_end, K, nmax, unit, sS, iS,
    improve, dec_kind, dec_params, dec_state, db, da, base, add_n, add_x, can_n, can_x, mkt_n, mkt_x,
    misc, fmisc,
):  # fmt: skip
    """One session. ``tau``: business time (seconds since the open) of each record; ``best_bid/
    best_ask``: replayed best prices after each record; ``dec_*``: the session's decorator, whose
    ``dec_state`` is replayed in place. ``misc``: [improving adds, unattributed events, model
    events]; ``fmisc``: [integral of the multiplier over the session]."""
    n = types.shape[0]
    inv = 1.0 / unit
    um1 = unit - 1.0
    for r in range(n_open):
        if types[r] == 0:
            db[prices[r] - base] += qtys[r]
        else:
            da[prices[r] - base] += qtys[r]
    bb = best_bid[n_open - 1]
    ba = best_ask[n_open - 1]
    t_prev = tau[n_open - 1]
    i = n_open
    while i < n:
        t_i = tau[i]
        if t_i > t_prev:
            w = dec_integral(dec_kind, dec_params, dec_state, t_prev, t_i)
            fmisc[0] += w
            _expose(db, da, base, bb, ba, K, nmax, inv, um1, w, sS, iS, improve, add_x, can_x, mkt_x)
        typ = types[i]
        p = prices[i]
        side = sides[i]
        misc[2] += 1
        j = i + 1
        if typ <= 1:  # add
            lvl = bb - p if typ == 0 else p - ba
            q = db[p - base] if typ == 0 else da[p - base]
            if lvl < 0:
                misc[0] += 1
            elif lvl < K:
                add_n[typ, lvl, _units(q, inv, um1, nmax)] += 1
            else:
                misc[1] += 1
            if side == 0:
                db[p - base] += qtys[i]
            else:
                da[p - base] += qtys[i]
        elif typ <= 3:  # cancel (full or partial)
            s = typ - 2
            lvl = bb - p if s == 0 else p - ba
            q = db[p - base] if s == 0 else da[p - base]
            if 0 <= lvl < K:
                can_n[s, lvl, _units(q, inv, um1, nmax)] += 1
            else:
                misc[1] += 1
            if side == 0:
                db[p - base] -= qtys[i]
            else:
                da[p - base] -= qtys[i]
        else:
            # a market order: 4 buys lift the ask, 5 sells hit the bid. It walks the best queue, one
            # EXECUTE record per resting order touched, all at one timestamp and price: one event,
            # attributed to the queue's size before it
            s = 1 if typ == 4 else 0
            q = da[ba - base] if s == 1 else db[bb - base]
            if p == (ba if s == 1 else bb):
                mkt_n[s, _units(q, inv, um1, nmax)] += 1
            else:
                misc[1] += 1
            t_ns = ts[i]
            while True:
                if side == 0:
                    db[p - base] -= qtys[j - 1]
                else:
                    da[p - base] -= qtys[j - 1]
                if j < n and ts[j] == t_ns and types[j] == typ and prices[j] == p:
                    j += 1
                else:
                    break
        # then the refill ADDs of a depletion (same side, same timestamp)
        last = j - 1
        depleted = typ >= 2 and ((side == 0 and best_bid[last] != bb) or (side == 1 and best_ask[last] != ba))
        if depleted:
            while j < n and ts[j] == ts[i] and types[j] == side:
                if side == 0:
                    db[prices[j] - base] += qtys[j]
                else:
                    da[prices[j] - base] += qtys[j]
                j += 1
        mid_before = bb + ba
        bb = best_bid[j - 1]
        ba = best_ask[j - 1]
        if dec_kind != DEC_NONE:  # the kernel's update: triggers are market orders and mid changes
            dec_on_event(dec_kind, dec_params, dec_state, t_i, typ, typ >= 4 or bb + ba != mid_before)
        t_prev = t_i
        i = j
    if tau_end > t_prev:
        w = dec_integral(dec_kind, dec_params, dec_state, t_prev, tau_end)
        fmisc[0] += w
        _expose(db, da, base, bb, ba, K, nmax, inv, um1, w, sS, iS, improve, add_x, can_x, mkt_x)


def _opening_records(records: np.ndarray, levels: int, depth: int) -> int:
    """Records of the opening book: 2 K D ADDs at the first timestamp (engine logs); else the
    leading run of ADDs sharing the first timestamp."""
    n = 2 * levels * depth
    head = records[:n]
    if len(head) == n and np.all(head["type"] <= 1) and np.all(head["ts_ns"] == records["ts_ns"][0]):
        return n
    same = (records["type"] <= 1) & (records["ts_ns"] == records["ts_ns"][0])
    return int(np.argmin(same)) if not same.all() else len(records)


def accumulate_session(
    stats: QueueStatistics,
    records: np.ndarray,
    context: SessionContext | None = None,
    *,
    session_seconds: float,
    initial_depth: int = 5,
    market_open_ns: int | None = None,
    source: str = "<records>",
) -> SessionReplay | None:
    """Add one session's events and exposures to ``stats`` (the session's K must be stats.levels).

    ``context``: the session's queue unit, business clock and decorator (default: one-share
    units, calendar time, no excitation: the plain seed's session). Returns what the session
    contributed (None for an empty log)."""
    if len(records) == 0:
        return None
    ctx = context or SessionContext()
    K = stats.levels
    states = replay_book(records)  # validates every record (raises BookReplayError)
    n_open = _opening_records(records, K, initial_depth)
    if n_open == 0:
        raise ValueError("the log does not start with an opening book (ADDs at the first timestamp)")
    if not states.two_sided[n_open - 1]:
        raise ValueError("the opening book is not two-sided: cannot place the K-tick windows")
    if not ctx.unit > 0:
        raise ValueError(f"the queue unit must be > 0 shares, got {ctx.unit}")
    prices = records["price_ticks"].astype(np.int64)
    base = int(prices.min()) - K - 2
    size = int(prices.max()) - base + K + 3
    db = np.zeros(size, np.int64)
    da = np.zeros(size, np.int64)
    ts = records["ts_ns"].astype(np.int64)
    open_ns = int(ts[0]) if market_open_ns is None else int(market_open_ns)
    calendar = (ts - open_ns) * 1e-9
    if ctx.clock is not None:
        if abs(ctx.clock.session_seconds - session_seconds) > 1e-9:
            raise ValueError(
                f"the business clock covers {ctx.clock.session_seconds:g} s but the session {session_seconds:g} s"
            )
        tau = np.ascontiguousarray(ctx.clock.to_business(calendar))
        tau_end = ctx.clock.business_end
    else:
        tau = calendar
        tau_end = float(session_seconds)
    dec_kind, dec_params, dec_state = ctx.decorator
    dec_state = dec_state.copy()
    misc = np.zeros(3, np.int64)
    fmisc = np.zeros(1)
    _accumulate(
        np.ascontiguousarray(records["type"]), np.ascontiguousarray(records["side"]), prices,
        records["qty"].astype(np.int64), ts, tau,
        states.bid_price.astype(np.int64), states.ask_price.astype(np.int64),
        n_open, tau_end, K, stats.n_max, float(ctx.unit), stats.spread_sensitivity,
        stats.imbalance_sensitivity, stats.improve_per_tick, int(dec_kind), dec_params, dec_state,
        db, da, base,
        stats.add_events, stats.add_exposure, stats.cancel_events, stats.cancel_exposure,
        stats.market_events, stats.market_exposure, misc, fmisc,
    )  # fmt: skip
    stats.improving_adds += int(misc[0])
    stats.unattributed += int(misc[1])
    stats.events += int(misc[2])
    stats.seconds += float(session_seconds)
    stats.business_seconds += float(tau_end)
    stats.sessions += 1
    replay = SessionReplay(
        source=source,
        events=int(misc[2]),
        unit=float(ctx.unit),
        unit_source=ctx.unit_source,
        time_basis=ctx.time_basis,
        excitation=ctx.excitation,
        calendar_seconds=float(session_seconds),
        business_seconds=float(tau_end),
        weighted_seconds=float(fmisc[0]),
        decorator_state=dec_state,
    )
    stats.replays.append(replay)
    return replay


def mean_add_size(paths: Iterable[os.PathLike[str] | str]) -> float:
    """Mean qty of the ADD records of the logs (opening books and refills included: the engine draws
    them all from the limit-order size distribution whose mean is its default queue unit)."""
    total, count = 0, 0
    for path in paths:
        qty = EventLogReader(path).read_all()
        qty = qty["qty"][qty["type"] <= 1]
        total += int(qty.sum(dtype=np.int64))
        count += len(qty)
    if count == 0:
        raise ValueError("the logs hold no ADD records: give the queue unit (--queue-unit)")
    return total / count


def session_contexts(logs: list[CalibrationLog], queue_unit: float | None = None) -> list[SessionContext]:
    """Each log's context: its run's configuration when known; else calendar time with ``queue_unit``
    shares per unit, or the mean ADD size of those logs rounded to a whole share (as the engine's
    default unit is the mean limit-order size rounded)."""
    if queue_unit is not None and not queue_unit > 0:
        raise ValueError(f"the queue unit must be > 0 shares, got {queue_unit}")
    bare = [log.path for log in logs if log.config is None]
    if bare and queue_unit is None:
        fallback = SessionContext(unit=float(max(1, round(mean_add_size(bare)))), unit_source=UNIT_MEAN_ADD)
    else:
        fallback = SessionContext(unit=float(queue_unit or 1.0), unit_source=UNIT_GIVEN)
    return [SessionContext.from_config(log.config) if log.config is not None else fallback for log in logs]


def collect_statistics(
    paths: Iterable[str | os.PathLike[str]],
    *,
    n_max: int = DEFAULT_N_MAX,
    spread_sensitivity: float = 0.3,
    imbalance_sensitivity: float = 1.0,
    improve_per_tick: float = DEFAULT_IMPROVE,
    queue_unit: float | None = None,
    use_manifests: bool = True,
) -> QueueStatistics:
    """Replay every log (files, run directories or directories of ``.qrsdp`` files) into one set of
    statistics. Logs of a run are calibrated with their session's queue unit, business clock and
    excitation, rebuilt from the run's ``manifest.json`` (``use_manifests=False`` ignores it); the
    others in calendar time with ``queue_unit`` (default: the mean ADD size of those logs)."""
    logs = find_logs(paths, use_manifests=use_manifests)
    if not logs:
        raise ValueError("no .qrsdp files to calibrate from")
    contexts = session_contexts(logs, queue_unit)
    stats: QueueStatistics | None = None
    for log, ctx in zip(logs, contexts, strict=True):
        reader = EventLogReader(log.path)
        h = reader.header
        if stats is None:
            stats = QueueStatistics.empty(
                h.levels_per_side, n_max, spread_sensitivity, imbalance_sensitivity, improve_per_tick
            )
        elif h.levels_per_side != stats.levels:
            raise ValueError(
                f"{log.path}: {h.levels_per_side} levels per side, but the first log has {stats.levels}"
            )
        open_ns = None
        if log.config is not None:
            _check_header(log, h)
            open_ns = int(log.config.market_open_ns)
            _note_model_mismatch(stats, log.config.model)
            if queue_unit is not None and queue_unit != ctx.unit:
                stats.note(f"--queue-unit {queue_unit:g} not used where the run's manifest gives the unit")
        for text in log.notes:
            stats.note(text)
        accumulate_session(
            stats, reader.read_all(), ctx, session_seconds=h.session_seconds, initial_depth=h.initial_depth,
            market_open_ns=open_ns, source=str(log.path),
        )  # fmt: skip
        stats.files.append(str(log.path))
    assert stats is not None
    return stats


def _note_model_mismatch(stats: QueueStatistics, model: Any) -> None:
    """Note when the run's HLR model multiplies its curves otherwise than the exposure weights assume."""
    hlr = model if isinstance(model, HLR) else getattr(model, "base", None)
    if not isinstance(hlr, HLR):
        return
    run = (hlr.curves.spread_sensitivity, hlr.curves.imbalance_sensitivity, hlr.improve_per_tick)
    used = (stats.spread_sensitivity, stats.imbalance_sensitivity, stats.improve_per_tick)
    if run != used:
        stats.note(
            "the run's HLR model has spread sensitivity {:g}, imbalance sensitivity {:g}, improve {:g}; "
            "the exposure weights assume {:g}, {:g}, {:g} (--spread-sens, --imbalance-sens, --improve)".format(
                *run, *used
            )
        )


def _check_header(log: CalibrationLog, header: Any) -> None:
    cfg = log.config
    assert cfg is not None
    pairs = {
        "seed": (header.seed, cfg.seed),
        "session_seconds": (header.session_seconds, cfg.session_seconds),
        "levels_per_side": (header.levels_per_side, cfg.levels_per_side),
        "initial_depth": (header.initial_depth, cfg.initial_depth),
    }
    for name, (got, want) in pairs.items():
        if int(got) != int(want):
            raise ValueError(
                f"{log.path}: header {name} {got} differs from its entry in {log.manifest} ({want}); "
                "the file does not belong to this run (calibrate it with --no-manifest)"
            )


# ---------------------------------------------------------------------------
# estimation
# ---------------------------------------------------------------------------


def _fill(rate: np.ndarray, reliable: np.ndarray, pooled: float) -> np.ndarray:
    """Reliable entries as estimated; the others linearly interpolated in n, flat beyond the ends."""
    n = np.arange(len(rate))
    if not reliable.any():
        return np.full(len(rate), pooled)
    return np.interp(n, n[reliable], rate[reliable])


def estimate_curves(
    stats: QueueStatistics, *, min_events: int = DEFAULT_MIN_EVENTS, meta: dict[str, Any] | None = None
) -> HLRCurves:
    """The HLR curves estimated from ``stats`` (entries with fewer than ``min_events`` events are
    interpolated from their neighbours; cancel and market rates of an empty queue are 0)."""
    w = stats.n_max + 1
    out: dict[str, np.ndarray] = {}
    for kind in KINDS:
        ev, ex = stats.counts(kind), stats.exposure(kind)
        raw = stats.raw_rates(kind)
        flat_ev, flat_ex, flat_raw = ev.reshape(-1, w), ex.reshape(-1, w), raw.reshape(-1, w)
        curves = np.empty_like(flat_raw)
        for c in range(flat_raw.shape[0]):
            first = 0 if kind == "add" else 1  # n = 0: no cancel / market order on an empty queue
            tot_ex = flat_ex[c, first:].sum()
            pooled = flat_ev[c, first:].sum() / tot_ex if tot_ex > 0 else 0.0
            reliable = (flat_ev[c] >= min_events) & (flat_ex[c] > 0)
            reliable[:first] = False
            curves[c] = _fill(np.nan_to_num(flat_raw[c]), reliable, pooled)
            curves[c, :first] = 0.0
        out[kind] = curves.reshape(ev.shape)
    info = {
        "source": "qrsdp calibrate",
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "estimator": "events at queue size n / multiplier-weighted business time at n (docs/models.md)",
        "queue_unit": stats.queue_unit,
        "sessions": stats.sessions,
        "seconds": stats.seconds,
        **stats.provenance(),
        "model_events": stats.events,
        "improving_adds": stats.improving_adds,
        "unattributed_events": stats.unattributed,
        "improve_per_tick": stats.improve_per_tick,
        "min_events": min_events,
        "files": stats.files[:50],
        "observed_events": {
            kind: {side: stats.counts(kind)[s].tolist() for s, side in enumerate(SIDES)} for kind in KINDS
        },
    }
    if meta:
        info.update(meta)
    return HLRCurves(
        add=out["add"],
        cancel=out["cancel"],
        market=out["market"],
        spread_sensitivity=stats.spread_sensitivity,
        imbalance_sensitivity=stats.imbalance_sensitivity,
        meta=info,
    )


@dataclass(frozen=True)
class CurveError:
    """Relative error of an estimated curve against a reference, over entries with enough events."""

    curve: str  # e.g. "add bid L0", "market ask"
    points: int
    events: int
    max_rel_error: float  # NaN when no entry qualifies
    mean_rel_error: float  # event-weighted


def _curve_list(stats: QueueStatistics) -> list[tuple[str, str, int, int | None]]:
    out = []
    for kind in ("add", "cancel"):
        for s, side in enumerate(SIDES):
            for lvl in range(stats.levels):
                out.append((f"{kind} {side} L{lvl}", kind, s, lvl))
    for s, side in enumerate(SIDES):
        out.append((f"market {side}", "market", s, None))
    return out


def curve_errors(
    stats: QueueStatistics, reference: HLRCurves, *, min_events: int = ERROR_MIN_EVENTS
) -> list[CurveError]:
    """Per curve: |raw estimate / reference - 1| over entries with >= ``min_events`` events."""
    if reference.levels != stats.levels:
        raise ValueError(f"reference has {reference.levels} levels, the logs {stats.levels}")
    ref_n = reference.n_max
    rows = []
    for name, kind, s, lvl in _curve_list(stats):
        ev = stats.counts(kind)[s] if lvl is None else stats.counts(kind)[s, lvl]
        raw = stats.raw_rates(kind)[s] if lvl is None else stats.raw_rates(kind)[s, lvl]
        ref_tab = getattr(reference, kind)[s] if lvl is None else getattr(reference, kind)[s, lvl]
        n = np.arange(len(ev))
        # queues the reference pools into its flat tail are not compared
        ok = n < ref_n if stats.n_max > ref_n else np.ones(len(ev), bool)
        ref = ref_tab[np.minimum(n, ref_n)]
        sel = ok & (ev >= min_events) & (ref > 0)
        if not sel.any():
            rows.append(CurveError(name, 0, 0, float("nan"), float("nan")))
            continue
        rel = np.abs(raw[sel] / ref[sel] - 1.0)
        weights = ev[sel].astype(np.float64)
        rows.append(
            CurveError(
                name,
                int(sel.sum()),
                int(ev[sel].sum()),
                float(rel.max()),
                float(np.average(rel, weights=weights)),
            )
        )
    return rows


# ---------------------------------------------------------------------------
# plot
# ---------------------------------------------------------------------------


def plot_curves(
    stats: QueueStatistics,
    estimated: HLRCurves,
    reference: HLRCurves | None,
    path: str | os.PathLike[str],
    *,
    min_events: int = DEFAULT_MIN_EVENTS,
    title: str | None = None,
) -> None:
    """PNG: per level, add and cancel curves, and the market curves; raw estimates as points
    (entries with >= ``min_events`` events), the written curves as lines, the reference dashed."""
    from matplotlib.figure import Figure  # no pyplot: leaves the caller's backend (e.g. a notebook's) alone

    K = stats.levels
    unit = stats.queue_unit
    unit_label = "queue size n (units of " + (f"{unit:g} shares)" if unit is not None else "mixed sizes)")
    fig = Figure(figsize=(3.0 * K, 8.0))
    axes = fig.subplots(3, K, squeeze=False)
    colors = ("tab:blue", "tab:red")
    for row, kind in enumerate(KINDS):
        for lvl in range(K):
            ax = axes[row, lvl]
            if kind == "market" and lvl > 0:
                ax.axis("off")
                continue
            for s, side in enumerate(SIDES):
                ev = stats.counts(kind)[s] if kind == "market" else stats.counts(kind)[s, lvl]
                raw = stats.raw_rates(kind)[s] if kind == "market" else stats.raw_rates(kind)[s, lvl]
                est = getattr(estimated, kind)[s] if kind == "market" else getattr(estimated, kind)[s, lvl]
                seen = np.flatnonzero(ev >= min_events)
                top = int(seen.max()) + 1 if len(seen) else len(ev)
                ax.plot(seen, raw[seen], "o", ms=2.5, color=colors[s], label=f"{side} (estimated)")
                ax.plot(np.arange(top), est[:top], "-", lw=0.8, color=colors[s], alpha=0.6)
                if reference is not None:
                    ref = (
                        getattr(reference, kind)[s] if kind == "market" else getattr(reference, kind)[s, lvl]
                    )
                    n = np.arange(top)
                    ax.plot(
                        n, ref[np.minimum(n, reference.n_max)], "--", lw=1.0, color="black",
                        label="reference" if s == 0 else None,
                    )  # fmt: skip
            what = {"add": "add λᴸ", "cancel": "cancel λᶜ", "market": "market λᴹ (best)"}[kind]
            ax.set_title(f"{what}" + ("" if kind == "market" else f", level {lvl}"), fontsize=9)
            ax.set_xlabel(unit_label, fontsize=8)
            ax.tick_params(labelsize=7)
            if lvl == 0:
                ax.set_ylabel("events / s", fontsize=8)
    axes[0, 0].legend(fontsize=7)
    fig.suptitle(
        title or f"HLR curves from {stats.sessions} session(s), {stats.events:,} model events", fontsize=11
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def calibrate(
    paths: Iterable[str | os.PathLike[str]],
    output: str | os.PathLike[str] | None = None,
    *,
    plot: str | os.PathLike[str] | None = None,
    reference: HLRCurves | None = None,
    n_max: int = DEFAULT_N_MAX,
    spread_sensitivity: float = 0.3,
    imbalance_sensitivity: float = 1.0,
    improve_per_tick: float = DEFAULT_IMPROVE,
    min_events: int = DEFAULT_MIN_EVENTS,
    queue_unit: float | None = None,
    use_manifests: bool = True,
) -> tuple[HLRCurves, QueueStatistics]:
    """Estimate curves from logs; write the curves JSON (``output``) and the plot (``plot``) if given.
    ``queue_unit`` and ``use_manifests``: see :func:`collect_statistics`."""
    stats = collect_statistics(
        paths,
        n_max=n_max,
        spread_sensitivity=spread_sensitivity,
        imbalance_sensitivity=imbalance_sensitivity,
        improve_per_tick=improve_per_tick,
        queue_unit=queue_unit,
        use_manifests=use_manifests,
    )
    curves = estimate_curves(stats, min_events=min_events)
    if output is not None:
        curves.save(output)
    if plot is not None:
        plot_curves(stats, curves, reference, plot, min_events=min_events)
    return curves, stats
