"""Order-level book replay: the top of book after every event of a record stream.

The replay is independent of the simulation engine: it rebuilds the book only from
the records (every ADD rests an order; every CANCEL or EXECUTE removes quantity from
the order it names), so it doubles as a consistency check of any record stream --
``.qrsdp`` files, Kafka topics, decoded ITCH feeds.

Two entry points:

* :func:`replay_book` -- one call over a whole session's records.
* :class:`OrderBook` -- the same replay, fed batch by batch (a feed handler applies
  each packet's records as they arrive); the book state persists between batches.

Both return :class:`BookStates`: columnar numpy arrays, one row per event, with the
best bid/ask price (ticks) and the total quantity resting at each after that event,
plus a per-event bitmask of :class:`ReplayFlag`. The event loop is compiled with
numba; orders live in an open-addressing hash table keyed by order id and quantities
in a dense price-indexed array per side, both plain numpy arrays grown between batches.

Validation. An event carrying an input error (unknown or already-resting order id,
side or price that disagrees with the resting order, quantity larger than what rests,
zero quantity, unknown type) is flagged and **not applied**. ``CROSSED`` describes the
book *after* an applied event: best bid >= best ask. With ``strict=True`` (the
default) the first flagged event raises :class:`BookReplayError` and the book stays as
it was after the previous event.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

import numpy as np
from numba import njit

from qrsdp_sim.book.order_table import EMPTY_KEY, backshift_source
from qrsdp_sim.book.order_table import find as _find
from qrsdp_sim.book.order_table import free_slot as _insert_slot
from qrsdp_sim.records import EVENT_TYPE_NAMES, N_EVENT_TYPES, RECORD_DTYPE

NO_PRICE: int = int(np.iinfo(np.int32).min)
"""Price reported for a side with no resting order (its size is then 0)."""

_EMPTY_KEY = EMPTY_KEY  # hash-table slot marker: no order id can take it

# scalar state, kept in one int64 array so the compiled loop can update it in place
_S_BEST_BID = 0  # index into the price window; -1 = no bid
_S_BEST_ASK = 1  # index into the price window; -1 = no ask
_S_LIVE = 2  # resting orders
_S_BID_ORDERS = 3
_S_ASK_ORDERS = 4
_S_EVENTS = 5  # events applied since the book was created (flagged ones included)
_N_STATE = 6


class ReplayFlag(enum.IntFlag):
    """Per-event problems found by the replay (bitmask; 0 = clean)."""

    UNKNOWN_ORDER = 1  # CANCEL/EXECUTE of an order id that is not resting
    DUPLICATE_ORDER = 2  # ADD of an order id that is already resting
    SIDE_MISMATCH = 4  # the record's side disagrees with its type or with the resting order
    PRICE_MISMATCH = 8  # CANCEL/EXECUTE price differs from the resting order's price
    OVERFILL = 16  # CANCEL/EXECUTE quantity larger than the order's remaining quantity
    BAD_EVENT = 32  # unknown event type, zero quantity, or a reserved order id
    CROSSED = 64  # after this event the book is crossed or locked (best bid >= best ask)


INPUT_ERRORS = int(
    ReplayFlag.UNKNOWN_ORDER
    | ReplayFlag.DUPLICATE_ORDER
    | ReplayFlag.SIDE_MISMATCH
    | ReplayFlag.PRICE_MISMATCH
    | ReplayFlag.OVERFILL
    | ReplayFlag.BAD_EVENT
)
"""Flags that mean the event was rejected (not applied to the book)."""

_EXPECTED_SIDE = np.array([0, 1, 0, 1, 1, 0], dtype=np.uint8)  # by type; executions: resting side


class BookReplayError(ValueError):
    """A record stream that does not replay: names the event, its fields and the problem."""

    def __init__(self, index: int, record: np.void | None, flags: int, states: BookStates) -> None:
        self.index = index
        self.flags = ReplayFlag(flags)
        self.states = states  # the events before the offending one
        self.record = record
        super().__init__(f"event {index}: {describe_problem(record, flags)}")


def describe_problem(record: np.void | None, flags: int) -> str:
    """A readable sentence for one flagged event."""
    what = "event"
    if record is not None:
        t = int(record["type"])
        name = EVENT_TYPE_NAMES[t] if t < N_EVENT_TYPES else f"type {t}"
        what = (
            f"{name} order {int(record['order_id'])} side {int(record['side'])} "
            f"price {int(record['price_ticks'])} qty {int(record['qty'])} at ts {int(record['ts_ns'])}"
        )
    reasons = {
        ReplayFlag.UNKNOWN_ORDER: "the order is not resting (unknown id)",
        ReplayFlag.DUPLICATE_ORDER: "an order with this id is already resting",
        ReplayFlag.SIDE_MISMATCH: "side disagrees with the event type or the resting order",
        ReplayFlag.PRICE_MISMATCH: "price differs from the resting order's price",
        ReplayFlag.OVERFILL: "quantity exceeds the order's remaining quantity",
        ReplayFlag.BAD_EVENT: "unknown event type, zero quantity or reserved order id",
        ReplayFlag.CROSSED: "the book is crossed or locked afterwards (best bid >= best ask)",
    }
    parts = [text for flag, text in reasons.items() if flags & flag]
    return f"{what}: {'; '.join(parts) or 'no problem'}"


@dataclass(frozen=True)
class BookStates:
    """Top of book after each event (one row per input record).

    Prices are in ticks (``NO_PRICE`` when the side is empty), sizes are total
    resting quantity at the best price.
    """

    bid_price: np.ndarray  # int32
    bid_qty: np.ndarray  # int64
    ask_price: np.ndarray  # int32
    ask_qty: np.ndarray  # int64
    flags: np.ndarray  # uint8, ReplayFlag bits

    def __len__(self) -> int:
        return len(self.flags)

    @property
    def two_sided(self) -> np.ndarray:
        """True where both sides have a resting order."""
        return (self.bid_price != NO_PRICE) & (self.ask_price != NO_PRICE)

    @property
    def spread(self) -> np.ndarray:
        """Best ask - best bid in ticks (int64); -1 where a side is empty."""
        s = self.ask_price.astype(np.int64) - self.bid_price.astype(np.int64)
        return np.where(self.two_sided, s, -1)

    @property
    def mid_floor(self) -> np.ndarray:
        """floor((bid + ask) / 2) in ticks (the engine's close rule); NO_PRICE where one-sided."""
        m = (self.ask_price.astype(np.int64) + self.bid_price.astype(np.int64)) // 2
        return np.where(self.two_sided, m, NO_PRICE)

    @property
    def n_flagged(self) -> int:
        return int(np.count_nonzero(self.flags))

    def problems(self, records: np.ndarray | None = None, limit: int = 10) -> list[str]:
        """Readable descriptions of the first ``limit`` flagged events."""
        idx = np.flatnonzero(self.flags)[:limit]
        return [
            f"event {int(i)}: {describe_problem(records[i] if records is not None else None, int(self.flags[i]))}"
            for i in idx
        ]

    @classmethod
    def concat(cls, parts: list[BookStates]) -> BookStates:
        return cls(*(np.concatenate([getattr(p, f) for p in parts]) for f in _STATE_FIELDS))

    def __getitem__(self, key: slice) -> BookStates:
        return BookStates(*(getattr(self, f)[key] for f in _STATE_FIELDS))


_STATE_FIELDS = ("bid_price", "bid_qty", "ask_price", "ask_qty", "flags")


def _empty_states(n: int) -> BookStates:
    return BookStates(
        np.empty(n, np.int32), np.empty(n, np.int64), np.empty(n, np.int32), np.empty(n, np.int64),
        np.empty(n, np.uint8),
    )  # fmt: skip


# ---------------------------------------------------------------------------
# compiled core
# ---------------------------------------------------------------------------


@njit(nogil=True, cache=True)
def _delete(keys, o_price, o_qty, o_side, slot, shift, mask):
    """Remove the entry at ``slot`` by backward-shift deletion (no tombstones)."""
    i = slot
    while True:
        j = backshift_source(keys, i, shift, mask)
        if j < 0:
            break
        keys[i] = keys[j]
        o_price[i] = o_price[j]
        o_qty[i] = o_qty[j]
        o_side[i] = o_side[j]
        i = j
    keys[i] = _EMPTY_KEY


@njit(nogil=True, cache=True)
def _rehash(keys, o_price, o_qty, o_side, new_keys, new_price, new_qty, new_side, shift, mask):
    for s in range(len(keys)):
        k = keys[s]
        if k != _EMPTY_KEY:
            i = _insert_slot(new_keys, k, shift, mask)
            new_keys[i] = k
            new_price[i] = o_price[s]
            new_qty[i] = o_qty[s]
            new_side[i] = o_side[s]


@njit(nogil=True, cache=True)
def _replay(
    types, sides, prices, qtys, ids,
    keys, o_price, o_qty, o_side, shift, mask,
    bid_depth, ask_depth, base, state, expected_side,
    out_bp, out_bq, out_ap, out_aq, out_flags, strict,
):  # fmt: skip
    """Apply events in order; returns the number processed (stops early on an error if strict)."""
    n = len(types)
    npx = len(bid_depth)
    bb = state[_S_BEST_BID]
    ba = state[_S_BEST_ASK]
    for e in range(n):
        t = types[e]
        side = sides[e]
        px = prices[e]
        q = qtys[e]
        oid = ids[e]
        f = 0
        if t > 5 or q == 0 or oid == _EMPTY_KEY:
            f = 32
        elif side != expected_side[t]:
            f = 4
        elif t <= 1:
            # ADD: rest a new order
            if _find(keys, oid, shift, mask) >= 0:
                f = 2
            else:
                i = _insert_slot(keys, oid, shift, mask)
                keys[i] = oid
                o_price[i] = px
                o_qty[i] = q
                o_side[i] = t
                state[_S_LIVE] += 1
                p = px - base
                if t == 0:
                    bid_depth[p] += q
                    state[_S_BID_ORDERS] += 1
                    if bb < 0 or p > bb:
                        bb = p
                else:
                    ask_depth[p] += q
                    state[_S_ASK_ORDERS] += 1
                    if ba < 0 or p < ba:
                        ba = p
        else:
            # CANCEL or EXECUTE: take quantity from a resting order
            i = _find(keys, oid, shift, mask)
            if i < 0:
                f = 1
            elif o_side[i] != side:
                f = 4
            elif o_price[i] != px:
                f = 8
            elif o_qty[i] < q:
                f = 16
            else:
                p = o_price[i] - base
                rest = o_qty[i] - q
                if rest == 0:
                    _delete(keys, o_price, o_qty, o_side, i, shift, mask)
                    state[_S_LIVE] -= 1
                else:
                    o_qty[i] = rest
                if side == 0:
                    bid_depth[p] -= q
                    if rest == 0:
                        state[_S_BID_ORDERS] -= 1
                    if p == bb and bid_depth[p] == 0:
                        if state[_S_BID_ORDERS] == 0:
                            bb = -1
                        else:
                            while bb >= 0 and bid_depth[bb] == 0:
                                bb -= 1
                else:
                    ask_depth[p] -= q
                    if rest == 0:
                        state[_S_ASK_ORDERS] -= 1
                    if p == ba and ask_depth[p] == 0:
                        if state[_S_ASK_ORDERS] == 0:
                            ba = -1
                        else:
                            while ba < npx and ask_depth[ba] == 0:
                                ba += 1
                            if ba == npx:
                                ba = -1
        if f == 0 and bb >= 0 and ba >= 0 and bb >= ba:
            f = 64
        if bb >= 0:
            out_bp[e] = bb + base
            out_bq[e] = bid_depth[bb]
        else:
            out_bp[e] = -2147483648
            out_bq[e] = 0
        if ba >= 0:
            out_ap[e] = ba + base
            out_aq[e] = ask_depth[ba]
        else:
            out_ap[e] = -2147483648
            out_aq[e] = 0
        out_flags[e] = f
        state[_S_EVENTS] += 1
        if strict and f != 0:
            state[_S_BEST_BID] = bb
            state[_S_BEST_ASK] = ba
            return e + 1
    state[_S_BEST_BID] = bb
    state[_S_BEST_ASK] = ba
    return n


# ---------------------------------------------------------------------------
# Python API
# ---------------------------------------------------------------------------


class OrderBook:
    """An order-level book fed record batches; keeps its state between batches.

    >>> book = OrderBook()
    >>> states = book.apply(records)          # BookStates for these records
    >>> book.best_bid, book.best_ask, book.depth(0, levels=5)
    """

    _PRICE_MARGIN = 1024  # ticks of headroom added on each side when the price window grows
    _BATCH = 1 << 16  # records per compiled call (the order table is sized per call)

    def __init__(self, *, expected_orders: int = 1 << 12) -> None:
        cap = 1 << max(4, int(expected_orders * 2 - 1).bit_length())
        self._alloc_table(cap)
        self._base = 0
        self._bid_depth = np.zeros(0, dtype=np.int64)
        self._ask_depth = np.zeros(0, dtype=np.int64)
        self._state = np.zeros(_N_STATE, dtype=np.int64)
        self._state[_S_BEST_BID] = -1
        self._state[_S_BEST_ASK] = -1

    # -- storage ----------------------------------------------------------
    def _alloc_table(self, cap: int) -> None:
        self._keys = np.full(cap, _EMPTY_KEY, dtype=np.uint64)
        self._o_price = np.zeros(cap, dtype=np.int32)
        self._o_qty = np.zeros(cap, dtype=np.uint32)
        self._o_side = np.zeros(cap, dtype=np.uint8)
        self._mask = cap - 1
        self._shift = np.uint64(64 - (cap.bit_length() - 1))

    def _reserve_orders(self, incoming: int) -> None:
        """Keep the load factor at most 1/2 after ``incoming`` more orders."""
        need = 2 * (int(self._state[_S_LIVE]) + incoming)
        cap = len(self._keys)
        if need <= cap:
            return
        new_cap = 1 << (need - 1).bit_length()
        old = (self._keys, self._o_price, self._o_qty, self._o_side)
        self._alloc_table(new_cap)
        _rehash(*old, self._keys, self._o_price, self._o_qty, self._o_side, self._shift, self._mask)

    def _reserve_prices(self, lo: int, hi: int) -> None:
        """Make the dense depth arrays cover prices [lo, hi]."""
        n = len(self._bid_depth)
        if n and self._base <= lo and hi < self._base + n:
            return
        new_lo = lo - self._PRICE_MARGIN if not n else min(self._base, lo - self._PRICE_MARGIN)
        new_hi = hi + self._PRICE_MARGIN if not n else max(self._base + n - 1, hi + self._PRICE_MARGIN)
        size = new_hi - new_lo + 1
        shift = self._base - new_lo if n else 0
        for name in ("_bid_depth", "_ask_depth"):
            arr = np.zeros(size, dtype=np.int64)
            if n:
                arr[shift : shift + n] = getattr(self, name)
            setattr(self, name, arr)
        for k in (_S_BEST_BID, _S_BEST_ASK):
            if self._state[k] >= 0:
                self._state[k] += shift
        self._base = new_lo

    # -- replay -----------------------------------------------------------
    def apply(self, records: np.ndarray, *, strict: bool = True) -> BookStates:
        """Apply ``records`` (RECORD_DTYPE) in order; return the top of book after each.

        ``strict``: raise :class:`BookReplayError` at the first flagged event (the book
        keeps every event before it). Otherwise flagged events are reported in
        ``BookStates.flags`` and input errors are skipped.
        """
        if records.dtype != RECORD_DTYPE:
            raise TypeError(f"expected records of RECORD_DTYPE, got {records.dtype}")
        n = len(records)
        out = _empty_states(n)
        if n == 0:
            return out
        for lo in range(0, n, self._BATCH):
            hi = min(n, lo + self._BATCH)
            done = self._apply_chunk(records[lo:hi], out[lo:hi], strict)
            if strict and done and out.flags[lo + done - 1]:
                k = lo + done - 1
                raise BookReplayError(k, records[k], int(out.flags[k]), out[:k])
        return out

    def _apply_chunk(self, records: np.ndarray, out: BookStates, strict: bool) -> int:
        types = np.ascontiguousarray(records["type"])
        prices = np.ascontiguousarray(records["price_ticks"])
        is_add = types <= 1
        n_adds = int(np.count_nonzero(is_add))
        if n_adds:
            add_prices = prices[is_add]
            self._reserve_prices(int(add_prices.min()), int(add_prices.max()))
        elif not len(self._bid_depth):
            self._reserve_prices(0, 0)
        self._reserve_orders(n_adds)
        return _replay(
            types, np.ascontiguousarray(records["side"]), prices,
            np.ascontiguousarray(records["qty"]), np.ascontiguousarray(records["order_id"]),
            self._keys, self._o_price, self._o_qty, self._o_side, self._shift, self._mask,
            self._bid_depth, self._ask_depth, self._base, self._state, _EXPECTED_SIDE,
            out.bid_price, out.bid_qty, out.ask_price, out.ask_qty, out.flags, strict,
        )  # fmt: skip

    # -- inspection -------------------------------------------------------
    @property
    def events_applied(self) -> int:
        return int(self._state[_S_EVENTS])

    @property
    def orders(self) -> int:
        """Resting orders."""
        return int(self._state[_S_LIVE])

    def _best(self, k: int, depth: np.ndarray) -> tuple[int, int]:
        i = int(self._state[k])
        return (NO_PRICE, 0) if i < 0 else (i + self._base, int(depth[i]))

    @property
    def best_bid(self) -> int:
        return self._best(_S_BEST_BID, self._bid_depth)[0]

    @property
    def best_ask(self) -> int:
        return self._best(_S_BEST_ASK, self._ask_depth)[0]

    @property
    def best_bid_qty(self) -> int:
        return self._best(_S_BEST_BID, self._bid_depth)[1]

    @property
    def best_ask_qty(self) -> int:
        return self._best(_S_BEST_ASK, self._ask_depth)[1]

    def depth(self, side: int, levels: int = 5) -> list[tuple[int, int]]:
        """The best ``levels`` non-empty price levels of ``side`` (0 bid, 1 ask) as (price, qty)."""
        depth = self._bid_depth if side == 0 else self._ask_depth
        idx = np.flatnonzero(depth)
        idx = idx[::-1][:levels] if side == 0 else idx[:levels]
        return [(int(i) + self._base, int(depth[i])) for i in idx]

    def order(self, order_id: int) -> tuple[int, int, int] | None:
        """(side, price, remaining qty) of a resting order, or None."""
        i = _find(self._keys, np.uint64(order_id), self._shift, self._mask)
        if i < 0:
            return None
        return int(self._o_side[i]), int(self._o_price[i]), int(self._o_qty[i])


def replay_book(records: np.ndarray, *, strict: bool = True) -> BookStates:
    """Replay one session's records from an empty book (see :meth:`OrderBook.apply`)."""
    return OrderBook().apply(records, strict=strict)
