"""Small analysis helpers over record arrays (notebooks, benchmarks/bench_realism.py).

Everything works on the records of one session (``read_records(path)`` or an in-memory
sink) and uses the order-level replay (:func:`qrsdp_sim.book.replay_book`) for prices.
Times are seconds since the session's first record (the market open).
"""

from __future__ import annotations

import numpy as np

from qrsdp_sim.book.replay import replay_book


def session_times(records: np.ndarray) -> np.ndarray:
    """Seconds since the open (the first record's timestamp) of every record."""
    ts = records["ts_ns"].astype(np.int64)
    return (ts - ts[0]) / 1e9


def mid_path(records: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(seconds since the open, mid price in ticks) after every record (one-sided: NaN)."""
    states = replay_book(records)
    mid = (states.bid_price.astype(np.float64) + states.ask_price.astype(np.float64)) / 2.0
    mid[~states.two_sided] = np.nan
    return session_times(records), mid


def sample_mid(records: np.ndarray, step_seconds: float, session_seconds: float) -> np.ndarray:
    """Mid price (ticks) at t = 0, step, 2 step, ... <= session end: the last mid at or before t
    (at t = 0: after the opening book)."""
    t, mid = mid_path(records)
    grid = np.arange(0.0, session_seconds + 1e-9, step_seconds)
    idx = np.searchsorted(t, grid, side="right") - 1
    return mid[np.maximum(idx, 0)]


def log_returns(records: np.ndarray, step_seconds: float, session_seconds: float) -> np.ndarray:
    """Log returns of the mid price over consecutive ``step_seconds`` intervals of one session."""
    return np.diff(np.log(sample_mid(records, step_seconds, session_seconds)))


def mid_changes(records: np.ndarray, step_seconds: float, session_seconds: float) -> np.ndarray:
    """Mid-price changes in ticks over consecutive ``step_seconds`` intervals of one session
    (unlike log returns, not scaled by the price level)."""
    return np.diff(sample_mid(records, step_seconds, session_seconds))


def acf(x: np.ndarray, max_lag: int) -> np.ndarray:
    """Sample autocorrelation at lags 1 .. max_lag (biased estimator, mean removed)."""
    x = np.asarray(x, dtype=np.float64)
    x = x - x.mean()
    denom = float(np.dot(x, x))
    if denom == 0:
        return np.zeros(max_lag)
    return np.array([float(np.dot(x[:-k], x[k:])) / denom for k in range(1, max_lag + 1)])


def pooled_acf(series: list[np.ndarray], max_lag: int) -> np.ndarray:
    """Autocorrelation over several sessions: mean removed over all of them, lagged products
    taken within each session only (no pair spans two sessions)."""
    return pooled_acf_at(series, np.arange(1, max_lag + 1))


def pooled_acf_at(series: list[np.ndarray], lags: np.ndarray) -> np.ndarray:
    """:func:`pooled_acf` at the given ``lags`` only (each >= 1), e.g. log-spaced lags."""
    allx = np.concatenate([np.asarray(s, dtype=np.float64) for s in series])
    mu = allx.mean()
    denom = float(np.sum((allx - mu) ** 2))
    out = np.zeros(len(lags))
    for s in series:
        x = np.asarray(s, dtype=np.float64) - mu
        for i, k in enumerate(lags):
            if len(x) > k:
                out[i] += float(np.dot(x[:-k], x[k:]))
    return out / denom if denom > 0 else out


def event_times(records: np.ndarray, opening_records: int) -> np.ndarray:
    """Times of the model's events: records after the opening book whose timestamp differs from
    the previous record's (refill ADDs share the timestamp of the event that triggered them)."""
    t = records["ts_ns"].astype(np.int64)
    after = t[opening_records:]
    prev = t[opening_records - 1 : -1] if opening_records > 0 else np.concatenate([[t[0] - 1], t[:-1]])
    keep = after != prev
    return (after[keep] - t[0]) / 1e9


def interarrival_times(records: np.ndarray, opening_records: int) -> np.ndarray:
    """Waiting times between consecutive model events (seconds)."""
    return np.diff(event_times(records, opening_records))


def event_counts(
    records: np.ndarray, opening_records: int, bin_seconds: float, session_seconds: float
) -> np.ndarray:
    """Number of model events in consecutive bins of ``bin_seconds``."""
    edges = np.arange(0.0, session_seconds + 1e-9, bin_seconds)
    counts, _ = np.histogram(event_times(records, opening_records), bins=edges)
    return counts


def opening_records(levels_per_side: int = 5, initial_depth: int = 5) -> int:
    """Records of the engine's opening book (2 K D ADDs)."""
    return 2 * levels_per_side * initial_depth
