"""The listener's books: decoded ITCH order messages -> QRSDP records -> an order-level book per stock.

Messages refer to orders by reference only, so the resting orders are kept in an
:class:`~qrsdp_sim.itch.order_state.OrderTable` (side, price in ticks, shares left, locate), from
which each message becomes a record with the resting order's side and price:

=========  ===================================================================================
A, F       ADD_BID / ADD_ASK (side byte ``B`` / ``S``; anything else is an error)
D          CANCEL of all the shares left
X          CANCEL of the shares cancelled (the order keeps the rest)
E, C       EXECUTE of the shares executed (a buy hits a resting ask: EXECUTE_BUY, and vice versa)
U          CANCEL of all that was left of the old reference, then an ADD of the new one
=========  ===================================================================================

The records are applied to :class:`~qrsdp_sim.book.replay.OrderBook` per stock locate, so the
listener rebuilds exactly the book the records describe. A message that cannot apply is **not
applied** and counted in ``book_errors``, by kind: a reference that is not resting or already rests,
an execution or cancel of more shares than are left, zero shares, a side byte other than ``B``/``S``,
a price off the tick grid (applied at the tick below) or beyond the book's price range, a full order
table. A book left crossed or locked (best bid >= best ask) after a message is counted (``crossed``)
too -- never masked.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from numba import njit

from qrsdp_sim.book.order_table import EMPTY_KEY
from qrsdp_sim.book.replay import INPUT_ERRORS, BookStates, OrderBook, ReplayFlag
from qrsdp_sim.itch.decoder import A, C, D, E, F, U, X
from qrsdp_sim.itch.order_state import DEFAULT_MAX_ORDERS, OrderTable, table_delete, table_find, table_insert
from qrsdp_sim.records import RECORD_DTYPE

ERR_UNKNOWN_REF = 1
ERR_DUPLICATE_REF = 2
ERR_OFF_TICK = 4
ERR_OVERFILL = 8
ERR_BAD_SIDE = 16
ERR_ZERO_SHARES = 32
ERR_PRICE_RANGE = 64
ERR_TABLE_FULL = 128

ERROR_NAMES = {
    ERR_UNKNOWN_REF: "unknown_ref", ERR_DUPLICATE_REF: "duplicate_ref", ERR_OFF_TICK: "off_tick_price",
    ERR_OVERFILL: "overfill", ERR_BAD_SIDE: "bad_side", ERR_ZERO_SHARES: "zero_shares",
    ERR_PRICE_RANGE: "price_range", ERR_TABLE_FULL: "order_table_full",
}  # fmt: skip
_NOT_APPLIED = ERR_UNKNOWN_REF | ERR_DUPLICATE_REF | ERR_OVERFILL | ERR_BAD_SIDE | ERR_ZERO_SHARES | ERR_PRICE_RANGE | ERR_TABLE_FULL
_I32_MAX = np.int64(2**31 - 1)


@njit(inline="always", nogil=True)
def _record(k, r_ts, r_type, r_side, r_price, r_qty, r_id, r_loc, r_msg, ts, typ, side, price, qty, ref, loc, i):  # pragma: no cover
    r_ts[k] = ts
    r_type[k] = typ
    r_side[k] = side
    r_price[k] = price
    r_qty[k] = qty
    r_id[k] = ref
    r_loc[k] = loc
    r_msg[k] = i


@njit(cache=True, nogil=True)
def _to_records(
    mtype, locate, ts, ref, ref2, side, shares, price, tick,
    keys, t_side, t_price, t_rem, t_loc, shift, mask, live, max_orders,
    r_ts, r_type, r_side, r_price, r_qty, r_id, r_loc, r_msg, errors, start, k,
):  # pragma: no cover - compiled  # fmt: skip
    """Order-book messages ``start`` ... -> records via the order table (``k`` made so far); returns (next
    message, records). Stops before a new order when the table is half full: the caller grows it."""
    half = (mask + 1) // 2
    for i in range(start, len(mtype)):
        t = mtype[i]
        if t in (A, F, U) and half <= live[0] < max_orders:
            return i, k
        if t in (A, F, U):  # a new order (U: after taking out the old one)
            err = 0
            if t == U:
                s = table_find(keys, ref[i], shift, mask)
                if s < 0:
                    errors[i] |= ERR_UNKNOWN_REF
                    continue
                sd = t_side[s]
                loc = t_loc[s]
                new_ref = ref2[i]
            else:
                b = side[i]
                if b != 66 and b != 83:  # 'B' / 'S'
                    errors[i] |= ERR_BAD_SIDE
                    continue
                sd = 0 if b == 66 else 1
                loc = locate[i]
                new_ref = ref[i]
            px = np.int64(price[i])
            ticks = px // tick
            if px % tick != 0:
                err |= ERR_OFF_TICK
            if shares[i] == 0:
                err |= ERR_ZERO_SHARES
            if ticks > _I32_MAX:
                err |= ERR_PRICE_RANGE
            if new_ref == 0 or new_ref == EMPTY_KEY or table_find(keys, new_ref, shift, mask) >= 0:
                err |= ERR_DUPLICATE_REF
            if live[0] >= max_orders:
                err |= ERR_TABLE_FULL
            if err & _NOT_APPLIED:
                errors[i] |= err
                continue
            if t == U:  # the rest of the old order goes, in full
                _record(k, r_ts, r_type, r_side, r_price, r_qty, r_id, r_loc, r_msg, ts[i], 2 + sd, sd, t_price[s],
                        t_rem[s], ref[i], loc, i)
                k += 1
                table_delete(keys, t_side, t_price, t_rem, t_loc, s, shift, mask)
                live[0] -= 1
            s = table_insert(keys, new_ref, shift, mask)
            t_side[s] = sd
            t_price[s] = np.int32(ticks)
            t_rem[s] = shares[i]
            t_loc[s] = loc
            live[0] += 1
            _record(k, r_ts, r_type, r_side, r_price, r_qty, r_id, r_loc, r_msg, ts[i], sd, sd, np.int32(ticks),
                    shares[i], new_ref, loc, i)
            k += 1
            errors[i] |= err
        elif t in (D, X, E, C):
            s = table_find(keys, ref[i], shift, mask)
            if s < 0:
                errors[i] |= ERR_UNKNOWN_REF
                continue
            sd = t_side[s]
            rest = t_rem[s]
            q = rest if t == D else shares[i]
            if q == 0:
                errors[i] |= ERR_ZERO_SHARES
                continue
            if q > rest:
                errors[i] |= ERR_OVERFILL
                continue
            typ = 2 + sd if t in (D, X) else (4 if sd == 1 else 5)  # a resting ask is hit by a buy
            _record(k, r_ts, r_type, r_side, r_price, r_qty, r_id, r_loc, r_msg, ts[i], typ, sd, t_price[s], q,
                    ref[i], t_loc[s], i)
            k += 1
            if q == rest:
                table_delete(keys, t_side, t_price, t_rem, t_loc, s, shift, mask)
                live[0] -= 1
            else:
                t_rem[s] = rest - q
    return len(mtype), k


@dataclass
class Applied:
    """What one batch of messages did to the books: per stock locate, the record states and message indices."""

    records: np.ndarray  # RECORD_DTYPE, in message order
    locate: np.ndarray  # uint16 per record
    msg: np.ndarray  # int64: the message each record came from
    states: dict[int, tuple[BookStates, np.ndarray]] = field(default_factory=dict)  # locate -> (states, record idx)


class Books:
    """Resting orders and an order-level book per stock locate, with their error counts."""

    def __init__(self, tick_size: int, max_orders: int = DEFAULT_MAX_ORDERS) -> None:
        if tick_size < 1:
            raise ValueError(f"tick size must be >= 1, got {tick_size}")
        self.tick_size = int(tick_size)
        self.orders = OrderTable(max_orders)
        self.books: dict[int, OrderBook] = {}
        self.errors = 0  # messages or records that hit an error (crossed books included)
        self.error_kinds: dict[str, int] = {}

    def _count(self, kind: str, n: int) -> None:
        if n:
            self.error_kinds[kind] = self.error_kinds.get(kind, 0) + n
            self.errors += n

    def apply(self, cols: dict[str, np.ndarray]) -> Applied:
        mtype = cols["mtype"]
        n = len(mtype)
        t = self.orders
        out = {
            "ts": np.empty(2 * n, np.uint64), "type": np.empty(2 * n, np.uint8), "side": np.empty(2 * n, np.uint8),
            "price": np.empty(2 * n, np.int32), "qty": np.empty(2 * n, np.uint32), "id": np.empty(2 * n, np.uint64),
            "loc": np.empty(2 * n, np.uint16), "msg": np.empty(2 * n, np.int64),
        }  # fmt: skip
        errors = np.zeros(n, np.uint8)
        i = k = 0
        while True:
            i, k = _to_records(
                mtype, cols["locate"], cols["ts"], cols["ref"], cols["ref2"], cols["side"], cols["shares"],
                cols["price"], np.int64(self.tick_size), *t.columns, t.live, np.int64(t.max_orders),
                out["ts"], out["type"], out["side"], out["price"], out["qty"], out["id"], out["loc"], out["msg"],
                errors, i, k,
            )  # fmt: skip
            if i == n:
                break
            t.reserve(max(t.orders, 64))  # doubles the table
        k = int(k)
        bad = errors[errors != 0]
        if len(bad):
            for bit, name in ERROR_NAMES.items():
                self._count(name, int(np.count_nonzero(bad & bit)))
        recs = np.empty(k, RECORD_DTYPE)
        recs["ts_ns"] = out["ts"][:k]
        recs["type"] = out["type"][:k]
        recs["side"] = out["side"][:k]
        recs["price_ticks"] = out["price"][:k]
        recs["qty"] = out["qty"][:k]
        recs["order_id"] = out["id"][:k]
        applied = Applied(recs, out["loc"][:k], out["msg"][:k])
        if k == 0:
            return applied
        loc = applied.locate
        for locate in np.unique(loc):
            locate = int(locate)
            sel = np.flatnonzero(loc == locate)
            book = self.books.get(locate)
            if book is None:
                book = self.books[locate] = OrderBook()
            states = book.apply(recs[sel], strict=False)
            flags = states.flags
            self._count("book_rejected", int(np.count_nonzero(flags & INPUT_ERRORS)))
            self._count("crossed", int(np.count_nonzero(flags & int(ReplayFlag.CROSSED))))
            applied.states[locate] = (states, sel)
        return applied
