"""The order-level book used by the engine, as numba-compiled functions over numpy arrays.

Layout (no Python objects in the hot path), four arrays passed explicitly to every
function (unpacking a tuple of arrays in compiled code costs reference-count updates
on every access, so the hot path never does it):

* ``grid`` int32 (4, 2, GRID_TICKS): per side and tick, indexed by ``price - base``:
  ``G_HEAD``/``G_TAIL`` (pool slots of the first and last order of the FIFO queue),
  ``G_NORD`` (orders resting there), ``G_QSUM`` (their total quantity).
* ``pool`` int32 (3, P): per order slot ``P_QTY``, ``P_NEXT``, ``P_PREV``; ``oid`` int64 (P)
  the order ids. Each tick's orders form a doubly linked FIFO list; free slots are
  chained through ``P_NEXT``.
* ``ist`` int64: the scalar state (best prices, next order id, free list, refill depth ...,
  and each side's window depth ``WIN``: the total quantity over its window, kept up to date by
  every operation so the models need not sum the window per event).

Every function that makes an order appear or disappear writes the matching record
into the output buffer, so the emitted stream replays to exactly this book.

Sides: 0 = bid, 1 = ask. "Outward" is down for bids and up for asks; the *window*
of a side is the ``K`` contiguous ticks starting at its best and going outward.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from qrsdp_sim.engine._jit import njit
from qrsdp_sim.engine.rng import below, uniform
from qrsdp_sim.engine.sizes import draw_size

GRID_TICKS = 1 << 16  # ticks per side; prices must stay within +-32k ticks of the session open
NO_SLOT = -1

# indices into ``ist``
BB = 0  # best bid price (ticks)
BA = 1  # best ask price (ticks)
NEXT_ID = 2  # id the next ADD receives
FREE_HEAD = 3  # first free pool slot (NO_SLOT if none)
N_FREE = 4  # number of free pool slots
BASE = 5  # price of grid index 0
BID_LOW = 6  # lowest price that ever held a bid this session (search bound)
ASK_HIGH = 7  # highest price that ever held an ask this session (search bound)
LEVELS = 8  # K, the window width
REFILL = 9  # orders placed on a tick newly entering a window (= initial_depth)
ERROR = 10  # non-zero once the book left its grid (the kernel stops)
WIN = 11  # WIN + s: total quantity over side s's window (= window_depth(grid, ist, s), kept incrementally)
N_IST = 13

MAX_FILLS = 1000  # resting orders one market order may touch (the rest of it is not executed)

ERR_GRID = 1

# grid rows
G_HEAD = 0
G_TAIL = 1
G_NORD = 2
G_QSUM = 3
# pool rows
P_QTY = 0
P_NEXT = 1
P_PREV = 2

# record type codes (see qrsdp_sim.records.EventType)
ADD_BID = 0
CANCEL_BID = 2
EXECUTE_BUY = 4
EXECUTE_SELL = 5


class Book(NamedTuple):
    """All arrays of one book (Python-side container; compiled code takes the fields)."""

    grid: np.ndarray  # int32 (4, 2, GRID_TICKS)
    pool: np.ndarray  # int32 (3, pool size)
    oid: np.ndarray  # int64 (pool size,)
    ist: np.ndarray  # int64 (N_IST,)


def new_book(center_price: int, levels: int, refill_depth: int, pool_size: int = 4096) -> Book:
    """An empty book whose grid is centred on ``center_price``."""
    if levels < 1 or refill_depth < 1:
        raise ValueError("levels and refill depth must be at least 1")
    grid = np.zeros((4, 2, GRID_TICKS), dtype=np.int32)
    grid[G_HEAD] = NO_SLOT
    grid[G_TAIL] = NO_SLOT
    pool = np.zeros((3, pool_size), dtype=np.int32)
    pool[P_NEXT, :-1] = np.arange(1, pool_size, dtype=np.int32)
    pool[P_NEXT, -1] = NO_SLOT
    ist = np.zeros(N_IST, dtype=np.int64)
    ist[FREE_HEAD] = 0
    ist[N_FREE] = pool_size
    ist[BASE] = int(center_price) - GRID_TICKS // 2
    ist[NEXT_ID] = 1
    ist[LEVELS] = levels
    ist[REFILL] = refill_depth
    ist[BID_LOW] = int(center_price)
    ist[ASK_HIGH] = int(center_price)
    return Book(grid=grid, pool=pool, oid=np.zeros(pool_size, dtype=np.int64), ist=ist)


def grow_pool(book: Book, min_free: int) -> Book:
    """Return the book with a pool at least doubled so that ``min_free`` slots are free."""
    old = book.oid.shape[0]
    new = max(2 * old, old + min_free)
    pool = np.zeros((3, new), dtype=np.int32)
    pool[:, :old] = book.pool
    oid = np.zeros(new, dtype=np.int64)
    oid[:old] = book.oid
    pool[P_NEXT, old : new - 1] = np.arange(old + 1, new, dtype=np.int32)
    pool[P_NEXT, new - 1] = book.ist[FREE_HEAD]
    book.ist[FREE_HEAD] = old
    book.ist[N_FREE] += new - old
    return book._replace(pool=pool, oid=oid)


@njit(inline="always", nogil=True, cache=True, error_model="numpy")
def emit(out, n, ts, etype, side, price, qty, order_id):
    """Write one record at ``out[n]``; return ``n + 1``."""
    r = out[n]
    r.ts_ns = ts
    r.type = etype
    r.side = side
    r.price_ticks = price
    r.qty = qty
    r.order_id = order_id
    return n + 1


@njit(inline="always", nogil=True, cache=True, error_model="numpy")
def outward(s):
    """Price step away from the spread: -1 for bids, +1 for asks."""
    return 2 * s - 1


@njit(inline="always", nogil=True, cache=True, error_model="numpy")
def window_depth(grid, ist, s):
    """Total quantity over the K ticks of side ``s``'s window, summed from the grid (the book keeps
    it in ``ist[WIN + s]``; this recomputes it where the window moves to a new place)."""
    K = ist[LEVELS]
    d = outward(s)
    i = ist[BB + s] - ist[BASE]
    tot = 0
    for k in range(K):
        tot += grid[G_QSUM, s, i + d * k]
    return tot


@njit(inline="always", nogil=True, cache=True, error_model="numpy")
def push_order(grid, pool, oid, ist, s, price, qty, out, n, ts):
    """Append a new order at the tail of ``price``'s queue and emit its ADD. Needs a free slot.

    Counts ``qty`` into the window depth: the caller adds inside the window, or (opening book,
    refills after a shift) recomputes the depth once the window is in place."""
    slot = ist[FREE_HEAD]
    ist[FREE_HEAD] = pool[P_NEXT, slot]
    ist[N_FREE] -= 1
    new_id = ist[NEXT_ID]
    ist[NEXT_ID] = new_id + 1
    idx = price - ist[BASE]
    oid[slot] = new_id
    pool[P_QTY, slot] = qty
    pool[P_NEXT, slot] = NO_SLOT
    last = grid[G_TAIL, s, idx]
    pool[P_PREV, slot] = last
    if last == NO_SLOT:
        grid[G_HEAD, s, idx] = slot
    else:
        pool[P_NEXT, last] = slot
    grid[G_TAIL, s, idx] = slot
    grid[G_NORD, s, idx] += 1
    grid[G_QSUM, s, idx] += qty
    ist[WIN + s] += qty
    if s == 0:
        if price < ist[BID_LOW]:
            ist[BID_LOW] = price
    elif price > ist[ASK_HIGH]:
        ist[ASK_HIGH] = price
    return emit(
        out, n, ts, np.uint8(ADD_BID + s), np.uint8(s), np.int32(price), np.uint32(qty), np.uint64(new_id)
    )


@njit(inline="always", nogil=True, cache=True, error_model="numpy")
def _unlink(grid, pool, ist, s, idx, slot):
    """Take ``slot`` out of tick ``idx``'s queue (inside side ``s``'s window: cancels and executions
    only touch the window) and return it to the free list."""
    prv = pool[P_PREV, slot]
    nxt = pool[P_NEXT, slot]
    if prv == NO_SLOT:
        grid[G_HEAD, s, idx] = nxt
    else:
        pool[P_NEXT, prv] = nxt
    if nxt == NO_SLOT:
        grid[G_TAIL, s, idx] = prv
    else:
        pool[P_PREV, nxt] = prv
    grid[G_NORD, s, idx] -= 1
    grid[G_QSUM, s, idx] -= pool[P_QTY, slot]
    ist[WIN + s] -= pool[P_QTY, slot]
    pool[P_QTY, slot] = 0
    pool[P_NEXT, slot] = ist[FREE_HEAD]
    ist[FREE_HEAD] = slot
    ist[N_FREE] += 1


@njit(nogil=True, cache=True, error_model="numpy")
def _refill(grid, pool, oid, ist, s, price, sizes, rng, out, n, ts):
    depth = ist[REFILL]
    for _ in range(depth):
        n = push_order(grid, pool, oid, ist, s, price, draw_size(sizes, rng), out, n, ts)
    return n


@njit(inline="always", nogil=True, cache=True, error_model="numpy")
def _best_in_grid(ist, s, price):
    """True if the window starting at ``price`` lies inside the grid; else flag the error."""
    idx = price - ist[BASE]
    far = idx + outward(s) * (ist[LEVELS] - 1)
    lo = min(idx, far)
    hi = max(idx, far)
    if lo < 0 or hi >= GRID_TICKS:
        ist[ERROR] = ERR_GRID
        return False
    return True


@njit(nogil=True, cache=True, error_model="numpy")
def shift_after_depletion(grid, pool, oid, ist, s, sizes, rng, out, n, ts):
    """Side ``s``'s best tick just emptied: move the best outward and refill.

    The best moves to the next populated tick outward (orders outside the window
    come back into view). Each tick of the new window that was beyond the far end
    of the old window and is empty receives ``REFILL`` orders, emitted as ADDs at
    ``ts`` from near to far. If the side holds no order at all, the best moves one
    tick outward and the whole new window is refilled, so a side never runs dry.
    """
    K = ist[LEVELS]
    d = outward(s)
    old = ist[BB + s]
    base = ist[BASE]
    stop = ist[BID_LOW] if s == 0 else ist[ASK_HIGH]
    p = old + d
    found = False
    while (p - stop) * d <= 0:
        if grid[G_NORD, s, p - base] > 0:
            found = True
            break
        p += d
    if not found:
        p = old + d
    if not _best_in_grid(ist, s, p):
        return n
    ist[BB + s] = p
    old_far = old + d * (K - 1)
    for k in range(K):
        q = p + d * k
        if (not found or (q - old_far) * d > 0) and grid[G_NORD, s, q - base] == 0:
            n = _refill(grid, pool, oid, ist, s, q, sizes, rng, out, n, ts)
    ist[WIN + s] = window_depth(grid, ist, s)  # the window moved: count it afresh
    return n


@njit(inline="always", nogil=True, cache=True, error_model="numpy")
def add_at_level(grid, pool, oid, ist, s, k, qty, out, n, ts):
    """A new order ``k`` ticks outward from the best of side ``s`` (inside the window)."""
    price = ist[BB + s] + outward(s) * k
    return push_order(grid, pool, oid, ist, s, price, qty, out, n, ts)


@njit(inline="always", nogil=True, cache=True, error_model="numpy")
def add_improving(grid, pool, oid, ist, s, qty, out, n, ts):
    """A new order one tick inside the spread: it opens a new best level. Needs spread > 1."""
    price = ist[BB + s] - outward(s)
    if not _best_in_grid(ist, s, price):
        return n
    # the window moves inward by one tick: its far tick leaves it (its orders stay in the book)
    ist[WIN + s] -= grid[G_QSUM, s, ist[BB + s] + outward(s) * (ist[LEVELS] - 1) - ist[BASE]]
    ist[BB + s] = price
    return push_order(grid, pool, oid, ist, s, price, qty, out, n, ts)


@njit(inline="always", nogil=True, cache=True, error_model="numpy")
def cancel_nth(grid, pool, oid, ist, s, k, j, partial_share, lot, sizes, rng, out, n, ts):
    """Cancel the ``j``-th order (0 = oldest) of the tick ``k`` levels outward from the best.

    With probability ``partial_share`` (orders of more than one share) only part of it is
    cancelled: whole round lots of ``lot`` shares when the order is a multiple of at least two
    lots, else 1 .. qty - 1 shares; the order keeps its place in the queue. A full cancel
    removes it. The CANCEL record carries the shares cancelled.
    """
    price = ist[BB + s] + outward(s) * k
    idx = price - ist[BASE]
    cnt = grid[G_NORD, s, idx]
    if 2 * j < cnt:
        slot = grid[G_HEAD, s, idx]
        for _ in range(j):
            slot = pool[P_NEXT, slot]
    else:
        slot = grid[G_TAIL, s, idx]
        for _ in range(cnt - 1 - j):
            slot = pool[P_PREV, slot]
    qty = pool[P_QTY, slot]
    if partial_share > 0.0 and qty > 1 and uniform(rng) < partial_share:
        if lot > 1 and qty % lot == 0 and qty >= 2 * lot:
            c = lot * (1 + below(rng, qty // lot - 1))
        else:
            c = 1 + below(rng, qty - 1)
        pool[P_QTY, slot] = qty - c
        grid[G_QSUM, s, idx] -= c
        ist[WIN + s] -= c
        return emit(
            out, n, ts, np.uint8(CANCEL_BID + s), np.uint8(s), np.int32(price), np.uint32(c), np.uint64(oid[slot])
        )
    n = emit(
        out,
        n,
        ts,
        np.uint8(CANCEL_BID + s),
        np.uint8(s),
        np.int32(price),
        np.uint32(qty),
        np.uint64(oid[slot]),
    )
    _unlink(grid, pool, ist, s, idx, slot)
    if k == 0 and grid[G_NORD, s, idx] == 0:
        n = shift_after_depletion(grid, pool, oid, ist, s, sizes, rng, out, n, ts)
    return n


@njit(inline="always", nogil=True, cache=True, error_model="numpy")
def execute_best(grid, pool, oid, ist, s, qty, sizes, rng, out, n, ts):
    """A market order of ``qty`` shares against the best of side ``s`` (the resting side).

    ``s = 1`` is a buy hitting the best ask (EXECUTE_BUY), ``s = 0`` a sell hitting the best bid.
    It walks the best queue in time priority, one EXECUTE record per resting order touched (the
    last one partial when the order is larger than what is left of the market order), and never
    beyond the best price: what the best queue cannot fill is not executed (an immediate-or-cancel
    order at the best), nor beyond ``MAX_FILLS`` resting orders.
    """
    price = ist[BB + s]
    idx = price - ist[BASE]
    left = qty
    fills = 0
    etype = np.uint8(EXECUTE_SELL - s)
    while left > 0 and fills < MAX_FILLS:
        slot = grid[G_HEAD, s, idx]
        rest = pool[P_QTY, slot]
        take = rest if rest <= left else left
        n = emit(out, n, ts, etype, np.uint8(s), np.int32(price), np.uint32(take), np.uint64(oid[slot]))
        fills += 1
        left -= take
        if take < rest:
            pool[P_QTY, slot] = rest - take
            grid[G_QSUM, s, idx] -= take
            ist[WIN + s] -= take
        else:
            _unlink(grid, pool, ist, s, idx, slot)
            if grid[G_NORD, s, idx] == 0:
                return shift_after_depletion(grid, pool, oid, ist, s, sizes, rng, out, n, ts)
    return n


@njit(nogil=True, cache=True, error_model="numpy")
def open_book(grid, pool, oid, ist, best_bid, spread, sizes, rng, out, n, ts):
    """Place the opening book: ``REFILL`` orders (sizes from ``sizes``) on each of the K ticks of both windows.

    Emitted as ADDs at ``ts``: bids from the best outward, then asks from the best outward.
    """
    K = ist[LEVELS]
    ist[BB] = best_bid
    ist[BA] = best_bid + spread
    ist[BID_LOW] = best_bid
    ist[ASK_HIGH] = best_bid + spread
    for s in range(2):
        if not _best_in_grid(ist, s, ist[BB + s]):
            return n
        d = outward(s)
        for k in range(K):
            n = _refill(grid, pool, oid, ist, s, ist[BB + s] + d * k, sizes, rng, out, n, ts)
        ist[WIN + s] = window_depth(grid, ist, s)
    return n


def snapshot(book: Book) -> dict[str, object]:
    """The whole book as plain Python data (for tests and debugging, not the hot path).

    Returns ``{"best_bid", "best_ask", "bids", "asks"}``; ``bids``/``asks`` map price ->
    list of ``(order_id, qty)`` in FIFO order, for every populated tick.
    """
    base = int(book.ist[BASE])
    grid, pool = book.grid, book.pool
    sides: list[dict[int, list[tuple[int, int]]]] = []
    for s in range(2):
        levels: dict[int, list[tuple[int, int]]] = {}
        for idx in np.flatnonzero(grid[G_NORD, s]):
            orders = []
            slot = int(grid[G_HEAD, s, idx])
            while slot != NO_SLOT:
                orders.append((int(book.oid[slot]), int(pool[P_QTY, slot])))
                slot = int(pool[P_NEXT, slot])
            levels[base + int(idx)] = orders
        sides.append(levels)
    return {"best_bid": int(book.ist[BB]), "best_ask": int(book.ist[BA]), "bids": sides[0], "asks": sides[1]}
