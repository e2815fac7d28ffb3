"""Synthetic record streams for format benchmarks (statistically shaped like engine output)."""

from __future__ import annotations

import numpy as np

from qrsdp_sim.records import RECORD_DTYPE


def synthetic_records(n: int, seed: int = 7) -> np.ndarray:
    """``n`` records with exponential inter-arrival times, a random-walk price and increasing ids."""
    rng = np.random.default_rng(seed)
    rec = np.empty(n, dtype=RECORD_DTYPE)
    rec["ts_ns"] = 34_200_000_000_000 + np.cumsum(rng.exponential(1e9 / 50, n)).astype(np.uint64)
    types = rng.integers(0, 6, n, dtype=np.uint8)
    rec["type"] = types
    rec["side"] = np.where(types < 4, types % 2, 1 - (types - 4))
    rec["price_ticks"] = 10_000 + np.cumsum(rng.integers(-1, 2, n) * (rng.random(n) < 0.05)) + rng.integers(0, 5, n)
    rec["qty"] = 1
    rec["order_id"] = np.arange(n, dtype=np.uint64) // 2 + rng.integers(0, 50, n).astype(np.uint64)
    return rec
