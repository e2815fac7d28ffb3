"""Test helper for the ITCH tests: valid record streams with everything the record semantics allow --
order sizes, partial and full cancels, partial fills, and market orders that walk the queue (several
EXECUTE records at the same timestamp, oldest resting order first, the last one possibly partial).

Independent of the engine and of the encoder: the generator keeps its own book in plain dicts and
emits only events valid for it, so any consumer must reproduce its book.
"""

from __future__ import annotations

import numpy as np

from qrsdp_sim.records import RECORD_DTYPE

OPEN_NS = 34_200 * 1_000_000_000


def sweep_session(n_events: int, seed: int, *, p0: int = 10_000, open_ns: int = OPEN_NS,
                  mean_gap_ns: int = 20_000_000) -> np.ndarray:
    """A valid session of exactly ``n_events`` records around ``p0`` (ticks)."""
    rng = np.random.default_rng(seed)
    out = np.zeros(n_events, dtype=RECORD_DTYPE)
    orders: dict[int, list[int]] = {}  # id -> [side, price, qty]
    levels: tuple[dict[int, list[int]], dict[int, list[int]]] = ({}, {})  # price -> FIFO of ids
    next_id = 1
    ts = open_ns
    k = 0

    def emit(t: int, side: int, price: int, qty: int, oid: int) -> None:
        nonlocal k
        out[k] = (ts, t, side, price, qty, oid)
        k += 1

    def best(side: int) -> int | None:
        if not levels[side]:
            return None
        return max(levels[side]) if side == 0 else min(levels[side])

    def size() -> int:
        u = rng.random()
        if u < 0.6:
            return 100 * int(rng.integers(1, 6))  # round lots
        if u < 0.9:
            return int(rng.integers(1, 100))  # odd lots
        return 100 * int(rng.integers(10, 60))  # large

    def add(side: int, price: int) -> None:
        nonlocal next_id
        oid = next_id
        next_id += 1
        qty = size()
        orders[oid] = [side, price, qty]
        levels[side].setdefault(price, []).append(oid)
        emit(side, side, price, qty, oid)

    def take(oid: int, qty: int, typ: int) -> None:
        side, price, rest = orders[oid]
        emit(typ, side, price, qty, oid)
        if qty == rest:
            del orders[oid]
            levels[side][price].remove(oid)
            if not levels[side][price]:
                del levels[side][price]
        else:
            orders[oid][2] = rest - qty

    for depth in range(3):
        for side in (0, 1):
            if k < n_events:
                add(side, p0 - 1 - depth if side == 0 else p0 + 1 + depth)
    while k < n_events:
        ts += int(rng.integers(0, 2 * mean_gap_ns))
        u = rng.random()
        side = int(rng.integers(0, 2))
        if u < 0.45 or not orders:
            bb, ba = best(0), best(1)
            if side == 0:
                top = (ba - 1) if ba is not None else (bb if bb is not None else p0 - 1)
                price = top - int(rng.geometric(0.5)) + 1
            else:
                low = (bb + 1) if bb is not None else (ba if ba is not None else p0 + 1)
                price = low + int(rng.geometric(0.5)) - 1
            add(side, price)
        elif u < 0.85:
            oid = int(rng.choice(list(orders)))
            rest = orders[oid][2]
            qty = rest if rng.random() < 0.6 else int(rng.integers(1, rest + 1))
            take(oid, qty, 2 + orders[oid][0])
        else:
            # a market order walks the best queue of one side: one EXECUTE per resting order touched
            if not levels[side]:
                side = 1 - side
            px = best(side)
            queue = list(levels[side][px])
            want = int(rng.integers(1, sum(orders[o][2] for o in queue) + 1))
            for oid in queue:
                if want == 0 or k >= n_events:
                    break
                q = min(want, orders[oid][2])
                take(oid, q, 4 if side == 1 else 5)  # EXECUTE_BUY (4) takes from the asks
                want -= q
    return out
