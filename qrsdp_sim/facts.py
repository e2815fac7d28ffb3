"""Stylized facts of real equity order books, measured on QRSDP sessions (``qrsdp facts``).

Each fact has the range reported for real equity order books, with its source, and a check.
Statistics are computed per session from the records alone (the order-level replay gives the
prices) and pooled over sessions; no lagged pair, window or ratio ever straddles two sessions.
Definitions (docs/realism.md has the table and the reasoning):

* *events* are records: every ADD, CANCEL and EXECUTE message (as on an ITCH feed), the opening
  book excluded;
* a *market order* is a run of EXECUTE records of one type at one timestamp (one aggressive order
  walking the queue); its *sign* is +1 for a buy, -1 for a sell;
* an order *ends* when its remaining shares reach 0; it ends *cancelled* if the record that
  takes it to 0 is a CANCEL, *filled* if it is an EXECUTE (orders still resting at the close
  are not counted); a *partial* execution or cancel leaves shares resting;
* *returns* are log changes of the mid price over 1-minute intervals of calendar time;
  *day-standardised* returns are divided by their session's standard deviation;
* *intraday activity*: events per second in the first and last 1/13 of the session (the first
  and last half hour of a 6.5-hour day) over the middle 2/13 (the middle hour);
* *inter-arrival times*: between consecutive distinct event timestamps.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from qrsdp_sim.analysis import pooled_acf
from qrsdp_sim.book.replay import replay_book
from qrsdp_sim.records import EventType

RETURN_STEP = 60.0
MAX_LAG = 10
PROFILE_BINS = 78  # 5-minute bins of a 6.5-hour day


@dataclass
class SessionFacts:
    """The per-session measurements the scorecard pools."""

    symbol: str
    date: str
    session_seconds: float
    events: int
    counts: np.ndarray  # records by EventType (opening book excluded)
    orders_cancelled: int
    orders_filled: int
    partial_executions: int
    partial_cancels: int
    add_sizes: dict[int, int]  # ADD size -> count
    returns: np.ndarray  # 1-minute log returns of the mid
    interarrivals: np.ndarray  # seconds between distinct event timestamps
    segment_counts: tuple[int, int, int]  # events in the first, middle and last segments
    segment_seconds: tuple[float, float, float]
    trade_signs: np.ndarray  # +1 / -1 per market order
    one_tick_seconds: float  # time with a one-tick spread
    two_sided_seconds: float  # time with both sides quoted
    activity_bins: np.ndarray  # events in PROFILE_BINS equal parts of the session

    def activity_profile(self, bins: int = 26) -> np.ndarray:
        """Events in ``bins`` equal parts of the session (``bins`` must divide PROFILE_BINS)."""
        return self.activity_bins.reshape(bins, -1).sum(axis=1)


def measure_session(records: np.ndarray, session_seconds: float, symbol: str = "", date: str = "") -> SessionFacts:
    """Measure one session's records (opening book first, as every ``.qrsdp`` file has it)."""
    ts = records["ts_ns"].astype(np.int64)
    t = (ts - ts[0]) / 1e9
    types = records["type"]
    open_n = int(np.searchsorted(ts, ts[0], side="right"))  # records at the open timestamp: the opening book
    body = slice(open_n, None)
    counts = np.bincount(types[body], minlength=6)[:6].astype(np.int64)

    ended_c, ended_f, part_e, part_c = _order_lifecycle(records)
    adds = records["qty"][(types <= 1)]
    sizes, size_counts = np.unique(adds, return_counts=True)

    states = replay_book(records)
    two = states.two_sided
    mid = np.where(two, (states.bid_price.astype(np.float64) + states.ask_price) / 2.0, np.nan)
    grid = np.arange(0.0, session_seconds + 1e-9, RETURN_STEP)
    at = np.maximum(np.searchsorted(t, grid, side="right") - 1, 0)
    sampled = mid[at]
    returns = np.diff(np.log(sampled))
    returns = returns[np.isfinite(returns)]

    # time-weighted spread: the state after record i holds until record i + 1 (the last until the close)
    dur = np.diff(np.append(t, session_seconds))
    spread = np.where(two, states.ask_price.astype(np.int64) - states.bid_price, -1)
    one_tick = float(dur[spread == 1].sum())
    two_sided = float(dur[two].sum())

    ev_t = np.unique(t[body])
    inter = np.diff(ev_t)
    seg = session_seconds / 13.0
    first = int(np.count_nonzero(t[body] < seg))
    last = int(np.count_nonzero(t[body] >= session_seconds - seg))
    mid_lo, mid_hi = session_seconds / 2 - seg, session_seconds / 2 + seg
    middle = int(np.count_nonzero((t[body] >= mid_lo) & (t[body] < mid_hi)))

    return SessionFacts(
        symbol=symbol,
        date=date,
        session_seconds=float(session_seconds),
        events=int(len(records) - open_n),
        counts=counts,
        orders_cancelled=ended_c,
        orders_filled=ended_f,
        partial_executions=part_e,
        partial_cancels=part_c,
        add_sizes={int(s): int(c) for s, c in zip(sizes, size_counts, strict=True)},
        returns=returns,
        interarrivals=inter,
        segment_counts=(first, middle, last),
        segment_seconds=(seg, 2 * seg, seg),
        trade_signs=_trade_signs(records),
        one_tick_seconds=one_tick,
        two_sided_seconds=two_sided,
        activity_bins=np.histogram(t[body], bins=PROFILE_BINS, range=(0.0, session_seconds))[0],
    )


def _order_lifecycle(records: np.ndarray) -> tuple[int, int, int, int]:
    """(orders ended by a cancel, orders ended by an execution, partial executions, partial cancels)."""
    types = records["type"]
    is_add = types <= 1
    add_ids = records["order_id"][is_add]
    add_qty = records["qty"][is_add].astype(np.int64)
    order = np.argsort(add_ids, kind="stable")
    add_ids, add_qty = add_ids[order], add_qty[order]
    rem = ~is_add & (types < 6)
    rid = records["order_id"][rem]
    rq = records["qty"][rem].astype(np.int64)
    rtype = types[rem]
    pos = np.clip(np.searchsorted(add_ids, rid), 0, max(len(add_ids) - 1, 0))
    known = (len(add_ids) > 0) & (add_ids[pos] == rid) if len(add_ids) else np.zeros(len(rid), bool)
    pos, rq, rtype = pos[known], rq[known], rtype[known]
    # cumulative removed shares per order, in stream order
    o = np.argsort(pos, kind="stable")
    cs = np.cumsum(rq[o])
    starts = np.r_[True, pos[o][1:] != pos[o][:-1]]
    base = np.maximum.accumulate(np.where(starts, cs - rq[o], 0))
    removed = cs - base
    terminal = np.zeros(len(pos), dtype=bool)
    terminal[o] = removed >= add_qty[pos[o]]
    is_cancel = (rtype == EventType.CANCEL_BID) | (rtype == EventType.CANCEL_ASK)
    return (
        int(np.count_nonzero(terminal & is_cancel)),
        int(np.count_nonzero(terminal & ~is_cancel)),
        int(np.count_nonzero(~terminal & ~is_cancel)),
        int(np.count_nonzero(~terminal & is_cancel)),
    )


def _trade_signs(records: np.ndarray) -> np.ndarray:
    """+1 / -1 per market order (a run of EXECUTE records of one type at one timestamp)."""
    types = records["type"]
    ex = np.flatnonzero(types >= EventType.EXECUTE_BUY)
    if len(ex) == 0:
        return np.zeros(0)
    ts = records["ts_ns"][ex]
    ty = types[ex]
    new = np.r_[True, (ts[1:] != ts[:-1]) | (ty[1:] != ty[:-1]) | (ex[1:] != ex[:-1] + 1)]
    return np.where(ty[new] == EventType.EXECUTE_BUY, 1.0, -1.0)


# --------------------------------------------------------------------------- scorecard


@dataclass(frozen=True)
class FactResult:
    key: str
    fact: str
    value: str  # our figure, formatted
    real: str  # the range reported for real equity order books
    source: str
    met: bool | None  # None: not applicable to these sessions
    raw: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "fact": self.fact,
            "value": self.value,
            "real": self.real,
            "source": self.source,
            "met": self.met,
            **({"figures": self.raw} if self.raw else {}),
        }


NASDAQ = "NASDAQ TotalView-ITCH sample day 2019"
HLR2015 = "Huang, Lehalle & Rosenbaum 2015 (Euronext)"


def _fmt(x: float, digits: int = 3) -> str:
    return "n/a" if x is None or not math.isfinite(x) else f"{x:.{digits}f}"


def _pooled_kurtosis(series: list[np.ndarray]) -> float:
    z = [(r - r.mean()) / r.std() for r in series if len(r) > 2 and r.std() > 0]
    if not z:
        return float("nan")
    x = np.concatenate(z)
    return float(np.mean(x**4) / np.mean(x**2) ** 2 - 3.0)


def scorecard(
    sessions: list[SessionFacts], *, factor_loading: float | None = None
) -> list[FactResult]:
    """The stylized-facts table for ``sessions`` (pooled). ``factor_loading``: the market factor's
    loading of the run, for the cross-security correlation check (None: not checked)."""
    if not sessions:
        raise ValueError("no sessions to score")
    counts = np.sum([s.counts for s in sessions], axis=0)
    events = int(counts.sum())
    execs = int(counts[4] + counts[5])
    cancels = int(counts[2] + counts[3])
    out: list[FactResult] = []

    exec_share = execs / events if events else float("nan")
    out.append(FactResult(
        "exec_share", "executions, share of all events", f"{100 * exec_share:.2f} %", "2-7 %",
        f"{NASDAQ}: 2.6 %; {HLR2015}: 4.6-6.7 %", 0.02 <= exec_share <= 0.07,
        {"executions": execs, "events": events},
    ))  # fmt: skip
    cpe = cancels / execs if execs else float("inf")
    out.append(FactResult(
        "cancels_per_execution", "cancels per execution", _fmt(cpe, 1), ">= 10 (NASDAQ day: 17)", NASDAQ,
        cpe >= 10, {"cancels": cancels, "executions": execs},
    ))  # fmt: skip
    ended_c = sum(s.orders_cancelled for s in sessions)
    ended_f = sum(s.orders_filled for s in sessions)
    cshare = ended_c / (ended_c + ended_f) if ended_c + ended_f else float("nan")
    out.append(FactResult(
        "cancelled_share", "orders that end cancelled, not filled", f"{100 * cshare:.1f} %",
        ">= 90 % (NASDAQ day: 96 %)", NASDAQ, cshare >= 0.9,
        {"ended_cancelled": ended_c, "ended_filled": ended_f},
    ))  # fmt: skip

    sizes: dict[int, int] = {}
    for s in sessions:
        for k, v in s.add_sizes.items():
            sizes[k] = sizes.get(k, 0) + v
    mode = max(sizes, key=lambda k: sizes[k]) if sizes else 0
    p_exec = sum(s.partial_executions for s in sessions)
    p_canc = sum(s.partial_cancels for s in sessions)
    round_mode = mode % 100 == 0 and mode > 0
    out.append(FactResult(
        "order_sizes", "order sizes",
        f"{len(sizes)} sizes, mode {mode}; {p_exec:,} partial executions, {p_canc:,} partial cancels",
        ">= 5 sizes, round lots most common, partial executions and cancels everyday events",
        "US equity order flow (round lot 100)", len(sizes) >= 5 and round_mode and p_exec > 0 and p_canc > 0,
        {"distinct_sizes": len(sizes), "mode": mode, "partial_executions": p_exec, "partial_cancels": p_canc},
    ))  # fmt: skip

    rets = [s.returns for s in sessions if len(s.returns) > MAX_LAG + 1]
    if rets:
        acf_r = pooled_acf(rets, MAX_LAG)
        acf_a = pooled_acf([np.abs(r) for r in rets], MAX_LAG)
        kurt = _pooled_kurtosis(rets)
        n_ret = sum(len(r) for r in rets)
    else:
        acf_r = acf_a = np.full(MAX_LAG, np.nan)
        kurt = float("nan")
        n_ret = 0
    out.append(FactResult(
        "acf_returns_lag1", "autocorrelation of 1-min returns, lag 1", _fmt(acf_r[0]), "|.| <= 0.1 (about 0)",
        "Cont 2001", bool(abs(acf_r[0]) <= 0.1) if rets else None, {"returns": n_ret, "acf": acf_r.tolist()},
    ))  # fmt: skip
    out.append(FactResult(
        "acf_abs_returns", "autocorrelation of |1-min returns|, lag 1 / lag 10",
        f"{_fmt(acf_a[0])} / {_fmt(acf_a[9])}", "lag 1: 0.15-0.4; lag 10: >= 0.08 (slow decay)",
        "Cont 2001; Liu et al. 1999; Andersen & Bollerslev 1997",
        bool(0.15 <= acf_a[0] <= 0.4 and acf_a[9] >= 0.08) if rets else None, {"acf": acf_a.tolist()},
    ))  # fmt: skip
    out.append(FactResult(
        "excess_kurtosis", "excess kurtosis of day-standardised 1-min returns", _fmt(kurt, 2), ">= 3",
        "Gopikrishnan et al. 1998; Plerou et al. 1999", bool(kurt >= 3) if rets else None,
    ))  # fmt: skip

    seg = np.sum([s.segment_counts for s in sessions], axis=0).astype(np.float64)
    sec = np.sum([s.segment_seconds for s in sessions], axis=0)
    rate = seg / sec
    open_r, close_r = rate[0] / rate[1], rate[2] / rate[1]
    out.append(FactResult(
        "intraday_u", "intraday activity: first / last half hour vs midday", f"{open_r:.2f}x / {close_r:.2f}x",
        ">= 1.5x at both ends (U shape)", "Andersen & Bollerslev 1997", bool(min(open_r, close_r) >= 1.5),
    ))  # fmt: skip
    inter = np.concatenate([s.interarrivals for s in sessions])
    cv = float(inter.std() / inter.mean()) if len(inter) and inter.mean() > 0 else float("nan")
    out.append(FactResult(
        "interarrival_cv", "inter-arrival times, coefficient of variation", _fmt(cv, 2),
        ">= 2 (over-dispersed; Poisson: 1)", "Bauwens & Hautsch 2009; Cont 2011", bool(cv >= 2),
    ))  # fmt: skip
    signs = [s.trade_signs for s in sessions if len(s.trade_signs) > MAX_LAG + 1]
    acf_s = pooled_acf(signs, MAX_LAG) if signs else np.full(MAX_LAG, np.nan)
    out.append(FactResult(
        "trade_sign_acf", "trade-sign autocorrelation, lag 1 / lag 10", f"{_fmt(acf_s[0])} / {_fmt(acf_s[9])}",
        "long memory, decaying as lag^-0.6 (lag 1 >= 0.1, lag 10 >= 0.03)", "Lillo & Farmer 2004",
        bool(acf_s[0] >= 0.1 and acf_s[9] >= 0.03) if signs else None, {"acf": acf_s.tolist()},
    ))  # fmt: skip
    one = sum(s.one_tick_seconds for s in sessions)
    two = sum(s.two_sided_seconds for s in sessions)
    share1 = one / two if two else float("nan")
    out.append(FactResult(
        "one_tick_spread", "time with a one-tick spread", f"{100 * share1:.1f} %",
        "most of the time (> 50 %; large-tick stocks > 90 %)", "Dayri & Rosenbaum 2015", bool(share1 > 0.5),
    ))  # fmt: skip
    corr = cross_correlation(sessions)
    if corr is not None:
        rho, pairs = corr
        if factor_loading is None:
            met, real = None, "rises with the market factor's loading"
        elif factor_loading == 0:
            met, real = bool(abs(rho) < 0.05), "|rho| < 0.05 without a common factor"
        else:
            met = bool(rho >= 0.3) if factor_loading >= 0.5 else None
            real = "rho >= 0.3 at loading >= 0.5 (stocks co-move: Epps 1979)"
        out.append(FactResult(
            "cross_correlation", "correlation of two symbols' 1-min returns", f"{_fmt(rho)} ({pairs} returns)",
            real, "Epps 1979", met, {"rho": rho, "loading": factor_loading},
        ))  # fmt: skip
    return out


def cross_correlation(sessions: list[SessionFacts]) -> tuple[float, int] | None:
    """Mean correlation of 1-min returns over every pair of symbols (dates both have)."""
    by_symbol: dict[str, dict[str, np.ndarray]] = {}
    for s in sessions:
        by_symbol.setdefault(s.symbol, {})[s.date] = s.returns
    symbols = sorted(by_symbol)
    if len(symbols) < 2:
        return None
    rhos, n = [], 0
    for i, a in enumerate(symbols):
        for b in symbols[i + 1 :]:
            xs, ys = [], []
            for date in sorted(set(by_symbol[a]) & set(by_symbol[b])):
                x, y = by_symbol[a][date], by_symbol[b][date]
                m = min(len(x), len(y))
                xs.append(x[:m])
                ys.append(y[:m])
            if xs:
                x, y = np.concatenate(xs), np.concatenate(ys)
                if len(x) > 2 and x.std() > 0 and y.std() > 0:
                    rhos.append(float(np.corrcoef(x, y)[0, 1]))
                    n += len(x)
    if not rhos:
        return None
    return float(np.mean(rhos)), n


# --------------------------------------------------------------------------- inputs


@dataclass(frozen=True)
class SessionSource:
    symbol: str
    date: str
    path: Path


def discover(paths: Iterable[str | Path]) -> tuple[list[SessionSource], float | None]:
    """Sessions from run directories (their manifest.json) and ``.qrsdp`` files; the run's market
    factor loading when a manifest gives one (the same for every run, else None)."""
    out: list[SessionSource] = []
    loadings: set[float] = set()
    for p in map(Path, paths):
        if p.is_dir():
            manifest = p / "manifest.json"
            if not manifest.is_file():
                found = sorted(p.rglob("*.qrsdp"))
                if not found:
                    raise ValueError(f"{p}: no manifest.json and no .qrsdp files in this directory")
                out.extend(_from_file(f) for f in found)
                continue
            try:
                doc = json.loads(manifest.read_text())
            except (OSError, json.JSONDecodeError) as exc:
                raise ValueError(f"{manifest}: cannot read the manifest ({exc})") from None
            for sec in doc.get("securities", [doc]):
                loadings.add(float(sec.get("market_factor", {}).get("loading", 0.0)))
                for sess in sec.get("sessions", []):
                    out.append(SessionSource(sec["symbol"], sess["date"], p / sess["file"]))
        elif p.is_file():
            out.append(_from_file(p))
        else:
            raise ValueError(f"{p}: no such file or directory")
    return out, (loadings.pop() if len(loadings) == 1 else None)


def _from_file(path: Path) -> SessionSource:
    try:
        date = dt.date.fromisoformat(path.stem).isoformat()
    except ValueError:
        date = path.stem
    return SessionSource(path.parent.name, date, path)


def measure_files(
    sources: list[SessionSource], progress: Callable[[SessionSource], None] | None = None
) -> list[SessionFacts]:
    from qrsdp_sim.eventlog.reader import EventLogReader

    out = []
    for src in sources:
        reader = EventLogReader(src.path)
        records = reader.read_all()
        out.append(measure_session(records, reader.header.session_seconds, src.symbol, src.date))
        if progress is not None:
            progress(src)
    return out
