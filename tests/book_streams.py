"""Test helpers for the platform tests: valid order-book record streams and a reference replay.

Independent of the engine and of ``qrsdp_sim.book``: the generator keeps its own book
(plain dicts) and only emits events that are valid for it -- ADDs that do not cross,
CANCELs of resting orders (full or partial), EXECUTEs of the oldest order at a best
price (full or partial fills) -- so a correct replay must reproduce its top of book.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

import numpy as np

from qrsdp_sim.records import RECORD_DTYPE

OPEN_NS = 34_200 * 1_000_000_000
NO_PRICE = -(2**31)


def random_session(
    n_events: int,
    seed: int,
    *,
    p0: int = 10_000,
    open_ns: int = OPEN_NS,
    partial: bool = True,
    max_qty: int = 5,
    first_id: int = 1,
    size: Callable[[np.random.Generator], int] | None = None,
    walk: bool = False,
) -> np.ndarray:
    """A valid session of exactly ``n_events`` records opening around ``p0``.

    ``size(rng)`` draws order sizes (default: 1..``max_qty``); ``walk``: an execution is a market order
    that walks the best queue -- one EXECUTE per resting order touched, at one timestamp, oldest first,
    the last one possibly partial."""
    rng = np.random.default_rng(seed)
    if size is None:
        def size(r: np.random.Generator) -> int:
            return int(r.integers(1, max_qty + 1))
    out = np.zeros(n_events, dtype=RECORD_DTYPE)
    orders: dict[int, list[int]] = {}  # id -> [side, price, qty]
    levels: tuple[dict[int, list[int]], dict[int, list[int]]] = ({}, {})  # price -> FIFO of ids
    next_id = first_id
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

    def add(side: int, price: int, qty: int) -> None:
        nonlocal next_id
        oid = next_id
        next_id += 1
        orders[oid] = [side, price, qty]
        levels[side].setdefault(price, []).append(oid)
        emit(side, side, price, qty, oid)

    def remove(oid: int, qty: int, typ: int) -> None:
        side, price, rest = orders[oid]
        emit(typ, side, price, qty, oid)
        if qty == rest:
            del orders[oid]
            levels[side][price].remove(oid)
            if not levels[side][price]:
                del levels[side][price]
        else:
            orders[oid][2] = rest - qty

    # opening book: 3 levels a side, 2 orders each, best levels first
    for depth in range(3):
        for side in (0, 1):
            for _ in range(2):
                if k < n_events:
                    add(side, p0 - 1 - depth if side == 0 else p0 + 1 + depth, size(rng))
    while k < n_events:
        ts += int(rng.integers(0, 40_000_000))
        u = rng.random()
        side = int(rng.integers(0, 2))
        if u < 0.5 or not orders:
            bb, ba = best(0), best(1)
            if side == 0:
                top = (ba - 1) if ba is not None else (bb if bb is not None else p0 - 1)
                price = top - int(rng.geometric(0.5)) + 1
            else:
                low = (bb + 1) if bb is not None else (ba if ba is not None else p0 + 1)
                price = low + int(rng.geometric(0.5)) - 1
            add(side, price, size(rng))
        elif u < 0.8:
            oid = int(rng.choice(list(orders)))
            rest = orders[oid][2]
            qty = int(rng.integers(1, rest + 1)) if partial else rest
            remove(oid, qty, 2 + orders[oid][0])
        elif walk:
            if not levels[side]:
                side = 1 - side
            queue = list(levels[side][best(side)])
            want = int(rng.integers(1, sum(orders[o][2] for o in queue) + 1))
            for oid in queue:  # EXECUTE_BUY (4) takes from the asks, EXECUTE_SELL (5) from the bids
                if want == 0 or k >= n_events:
                    break
                q = min(want, orders[oid][2])
                remove(oid, q, 4 if side == 1 else 5)
                want -= q
        else:
            if not levels[side]:
                side = 1 - side
            oid = levels[side][best(side)][0]
            rest = orders[oid][2]
            qty = int(rng.integers(1, rest + 1)) if partial else rest
            # EXECUTE_BUY (4) takes from the asks, EXECUTE_SELL (5) from the bids
            remove(oid, qty, 4 if side == 1 else 5)
    return out


def reference_top_of_book(records: np.ndarray) -> np.ndarray:
    """(bid price, bid qty, ask price, ask qty) after each event, by plain Python dicts."""
    qty_at: tuple[dict[int, int], dict[int, int]] = ({}, {})
    orders: dict[int, list[int]] = {}
    out = np.zeros((len(records), 4), dtype=np.int64)
    for i, r in enumerate(records):
        t, side, price, qty, oid = (
            int(r["type"]),
            int(r["side"]),
            int(r["price_ticks"]),
            int(r["qty"]),
            int(r["order_id"]),
        )
        if t <= 1:
            orders[oid] = [side, price, qty]
            qty_at[side][price] = qty_at[side].get(price, 0) + qty
        else:
            o = orders[oid]
            o[2] -= qty
            qty_at[o[0]][o[1]] -= qty
            if qty_at[o[0]][o[1]] == 0:
                del qty_at[o[0]][o[1]]
            if o[2] == 0:
                del orders[oid]
        bids, asks = qty_at
        bp = max(bids) if bids else NO_PRICE
        ap = min(asks) if asks else NO_PRICE
        out[i] = (bp, bids.get(bp, 0), ap, asks.get(ap, 0))
    return out


def floor_mid_after(records: np.ndarray) -> int:
    """The engine's close rule on a stream: floor((best bid + best ask) / 2) after the last event."""
    bp, _, ap, _ = reference_top_of_book(records)[-1]
    return int((bp + ap) // 2)


def chained_sessions(
    symbols: list[str], dates: list[dt.date], n_events: int, *, seed: int = 1, p0: int = 10_000
) -> dict[tuple[str, dt.date], tuple[np.ndarray, int, int]]:
    """{(symbol, date): (records, open_ticks, close_ticks)}, each date opening at the previous close."""
    out = {}
    for s_i, sym in enumerate(symbols):
        open_ticks = p0
        for d_i, day in enumerate(dates):
            rec = random_session(n_events, seed * 1000 + s_i * 100 + d_i, p0=open_ticks)
            close = floor_mid_after(rec)
            out[(sym, day)] = (rec, open_ticks, close)
            open_ticks = close
    return out
