"""Test helper for the ITCH tests: valid record streams with everything the record semantics allow --
round lots, odd lots and large orders, partial and full cancels, partial fills, and market orders that
walk the queue (several EXECUTE records at the same timestamp, oldest resting order first, the last one
possibly partial). Built by :func:`book_streams.random_session` (its own book in plain dicts, so any
consumer must reproduce its book).
"""

from __future__ import annotations

import numpy as np
from book_streams import random_session


def lot_size(rng: np.random.Generator) -> int:
    """Round lots most of the time, odd lots, now and then a large order."""
    u = rng.random()
    if u < 0.6:
        return 100 * int(rng.integers(1, 6))
    if u < 0.9:
        return int(rng.integers(1, 100))
    return 100 * int(rng.integers(10, 60))


def sweep_session(n_events: int, seed: int, *, p0: int = 10_000) -> np.ndarray:
    """A valid session of exactly ``n_events`` records around ``p0`` ticks, with queue walks."""
    return random_session(n_events, seed, p0=p0, size=lot_size, walk=True)
