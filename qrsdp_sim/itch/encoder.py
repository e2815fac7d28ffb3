"""ITCH 5.0 encoding of record batches against the resting orders.

:func:`encode_orders` turns records (one stock's, or several stocks' merged by time) into framed
ITCH messages in one compiled pass that also keeps the day's :class:`OrderTable` (every resting
order's side, price and remaining shares), because the message a cancel becomes depends on what
rests. No Python code runs per message.

Mapping (one message per accepted record; records semantics of docs/itch-feed.md)::

    ADD_BID / ADD_ASK        -> A (36)  side 'B' / 'S', shares = qty, price = price_ticks x tick_size
    CANCEL_*, qty == rest    -> D (19)  Order Delete: the order is gone
    CANCEL_*, qty <  rest    -> X (23)  Order Cancel: cancelled shares = qty, the order keeps its place
    EXECUTE_BUY / _SELL      -> E (31)  executed shares = qty (the order is gone when none are left),
                                        match number = the message's own sequence number

A record that cannot be encoded (:mod:`qrsdp_sim.itch.validate`) produces no message; its reason is
returned per record. The output is a :class:`Framed` stream: one contiguous ``uint8`` buffer plus the
offset of every message (its 2-byte big-endian length included), which the MoldUDP64 packetiser
slices without copying.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numba import njit

from qrsdp_sim.itch import messages as m
from qrsdp_sim.itch.order_state import OrderTable, table_delete, table_find, table_insert
from qrsdp_sim.itch.validate import (
    DUPLICATE_ORDER,
    OVERFILL,
    PRICE_MISMATCH,
    SIDE_MISMATCH,
    TOO_MANY_ORDERS,
    UNKNOWN_ORDER,
    record_ref,
    stateless_reason,
)
from qrsdp_sim.records import RECORD_DTYPE


@dataclass
class Framed:
    """Length-prefixed ITCH messages, back to back.

    ``data``: uint8 buffer; ``offsets``: int64 of length count + 1 (message i occupies
    ``data[offsets[i]:offsets[i + 1]]``, its 2-byte length included); ``ts``: uint64 event time of
    each message (for real-time pacing).
    """

    data: np.ndarray
    offsets: np.ndarray
    ts: np.ndarray

    @property
    def count(self) -> int:
        return len(self.offsets) - 1

    @property
    def nbytes(self) -> int:
        return int(self.offsets[-1])

    def message(self, i: int) -> bytes:
        """Message ``i`` without its length prefix."""
        return self.data[self.offsets[i] + 2 : self.offsets[i + 1]].tobytes()

    def __getitem__(self, key: slice) -> Framed:
        start, stop, step = key.indices(self.count)
        if step != 1:
            raise ValueError("Framed supports contiguous slices only")
        lo, hi = int(self.offsets[start]), int(self.offsets[stop])
        return Framed(self.data[lo:hi], self.offsets[start : stop + 1] - lo, self.ts[start:stop])

    @staticmethod
    def empty() -> Framed:
        return Framed(np.zeros(0, np.uint8), np.zeros(1, np.int64), np.zeros(0, np.uint64))

    @staticmethod
    def concat(parts: list[Framed]) -> Framed:
        parts = [p for p in parts if p.count]
        if not parts:
            return Framed.empty()
        if len(parts) == 1:
            return parts[0]
        data = np.concatenate([p.data for p in parts])
        bases = np.cumsum([0] + [p.nbytes for p in parts[:-1]])
        offsets = np.concatenate([p.offsets[:-1] + b for p, b in zip(parts, bases, strict=True)]
                                 + [np.array([len(data)], np.int64)])
        return Framed(data, offsets.astype(np.int64), np.concatenate([p.ts for p in parts]))


def frame_array(messages: np.ndarray, ts: np.ndarray | int) -> Framed:
    """Frame a structured array of one message type (each row one message)."""
    n = len(messages)
    size = messages.dtype.itemsize
    out = np.empty((n, size + 2), np.uint8)
    out[:, 0] = size >> 8
    out[:, 1] = size & 0xFF
    out[:, 2:] = messages.view(np.uint8).reshape(n, size)
    offsets = np.arange(n + 1, dtype=np.int64) * (size + 2)
    return Framed(out.reshape(-1), offsets, np.broadcast_to(np.asarray(ts, np.uint64), (n,)).copy())


@njit(inline="always", nogil=True)
def _put(out, pos, value, nbytes):  # pragma: no cover - compiled
    """``value`` as ``nbytes`` big-endian bytes at ``out[pos:]``."""
    v = np.uint64(value)
    for b in range(nbytes):
        out[pos + nbytes - 1 - b] = np.uint8(v & np.uint64(0xFF))
        v = v >> np.uint64(8)


@njit(inline="always", nogil=True)
def _head(out, pos, length, mtype, locate, ts):  # pragma: no cover - compiled
    """2-byte length, type, stock locate, tracking number 0, 6-byte timestamp; returns the next position."""
    _put(out, pos, length, 2)
    out[pos + 2] = mtype
    _put(out, pos + 3, locate, 2)
    out[pos + 5] = 0
    out[pos + 6] = 0
    _put(out, pos + 7, ts, 6)
    return pos + 13


@njit(cache=True, nogil=True)
def _encode(
    records, locates, n_locates, stocks, tick, first_seq,
    keys, t_side, t_price, t_rem, t_loc, shift, mask, live, max_orders,
    write, out, offsets, out_ts, reasons, rest_at, start, k, pos,
):  # pragma: no cover - compiled  # fmt: skip
    """Encode (``write``) or only apply records ``start`` ... in order, ``k`` messages (``pos`` bytes)
    written so far; returns (next record, messages, bytes). Stops early, before an add, when the order
    table is half full (the caller grows it and calls again), so the table stays as small as what
    rests -- a few cache lines, not one slot per record of the batch.

    ``reasons[i]``: 0 when record ``i`` became a message, else why not (``rest_at[i]``: the shares
    left when the reason is an overfill)."""
    half = (mask + 1) // 2
    for i in range(start, len(records)):
        r = records[i]
        if r.type <= 1 and half <= live[0] < max_orders:
            return i, k, pos
        loc = locates[i]
        t = r.type
        code = stateless_reason(t, r.ts_ns, r.price_ticks, r.qty, r.order_id, r.side, loc, n_locates, tick)
        kind = 0  # 1 A, 2 D, 3 X, 4 E
        if code == 0:
            ref = record_ref(r.order_id, loc, n_locates)
            s = table_find(keys, ref, shift, mask)
            if t <= 1:
                if s >= 0:
                    code = DUPLICATE_ORDER
                elif live[0] >= max_orders:
                    code = TOO_MANY_ORDERS
                else:
                    s = table_insert(keys, ref, shift, mask)
                    t_side[s] = t
                    t_price[s] = r.price_ticks
                    t_rem[s] = r.qty
                    t_loc[s] = loc
                    live[0] += 1
                    kind = 1
            elif s < 0:
                code = UNKNOWN_ORDER
            else:
                want = t - 2 if t <= 3 else (1 if t == 4 else 0)  # an execution names the resting side
                rest = t_rem[s]
                if t_side[s] != want or r.side != want:
                    code = SIDE_MISMATCH
                elif t_price[s] != r.price_ticks:
                    code = PRICE_MISMATCH
                elif r.qty > rest:
                    code = OVERFILL
                    rest_at[i] = rest
                else:
                    kind = (2 if r.qty == rest else 3) if t <= 3 else 4
                    if r.qty == rest:
                        table_delete(keys, t_side, t_price, t_rem, t_loc, s, shift, mask)
                        live[0] -= 1
                    else:
                        t_rem[s] = rest - r.qty
        reasons[i] = code
        if kind == 0 or not write:
            continue
        offsets[k] = pos
        out_ts[k] = r.ts_ns
        if kind == 1:
            p = _head(out, pos, 36, 65, loc, r.ts_ns)
            _put(out, p, ref, 8)
            out[p + 8] = 66 if t == 0 else 83  # 'B' / 'S'
            _put(out, p + 9, r.qty, 4)
            for b in range(8):
                out[p + 13 + b] = stocks[loc, b]
            _put(out, p + 21, np.int64(r.price_ticks) * tick, 4)
            pos += 38
        elif kind == 2:
            p = _head(out, pos, 19, 68, loc, r.ts_ns)
            _put(out, p, ref, 8)
            pos += 21
        elif kind == 3:
            p = _head(out, pos, 23, 88, loc, r.ts_ns)
            _put(out, p, ref, 8)
            _put(out, p + 8, r.qty, 4)
            pos += 25
        else:
            p = _head(out, pos, 31, 69, loc, r.ts_ns)
            _put(out, p, ref, 8)
            _put(out, p + 8, r.qty, 4)
            _put(out, p + 12, first_seq + k, 8)
            pos += 33
        k += 1
    return len(records), k, pos


@dataclass
class Encoded:
    """Messages of a batch of records, and why any record made none.

    ``reasons``: uint8 per record (0: became a message; else a code of :mod:`qrsdp_sim.itch.validate`);
    ``rest``: for an overfill, the shares the order had left (0 otherwise)."""

    framed: Framed
    reasons: np.ndarray
    rest: np.ndarray

    @property
    def rejected(self) -> np.ndarray:
        """Indices of the records that made no message."""
        return np.flatnonzero(self.reasons)


def stock_table(symbols: tuple[str, ...] | list[str]) -> np.ndarray:
    """(N + 1, 8) uint8: row ``locate`` holds the 8-byte stock field of that locate (row 0 unused)."""
    out = np.full((len(symbols) + 1, 8), ord(" "), np.uint8)
    for i, s in enumerate(symbols, start=1):
        out[i] = np.frombuffer(m.stock_field(s), np.uint8)
    return out


def encode_orders(
    records: np.ndarray,
    locates: np.ndarray | int,
    *,
    stocks: np.ndarray,
    tick_size: int,
    first_seq: int,
    orders: OrderTable,
    write: bool = True,
) -> Encoded:
    """Encode records in their order as ITCH messages numbered ``first_seq``, ``first_seq + 1`` ...

    ``locates``: the stock locate of each record (uint16 array) or of all of them (int); ``stocks``:
    :func:`stock_table` of the directory (N = its rows - 1). ``orders`` is updated as the records are
    applied. ``write=False`` only applies them (rebuilding the resting orders after a restart).
    """
    if records.dtype != RECORD_DTYPE:
        raise TypeError(f"expected records of RECORD_DTYPE, got {records.dtype}")
    n = len(records)
    n_locates = len(stocks) - 1
    if isinstance(locates, np.ndarray):
        if len(locates) != n:
            raise ValueError("one locate per record")
        locs = locates.astype(np.uint16, copy=False)
    else:
        locs = np.full(n, locates, np.uint16)
    if n and (int(locs.min()) < 1 or int(locs.max()) > n_locates):
        raise ValueError(f"locates must lie in 1..{n_locates}")
    if tick_size < 1:
        raise ValueError("tick size must be >= 1")
    reasons = np.zeros(n, np.uint8)
    rest = np.zeros(n, np.uint32)
    if n == 0:
        return Encoded(Framed.empty(), reasons, rest)
    out = np.empty(n * 38 if write else 0, np.uint8)
    offsets = np.empty(n + 1 if write else 1, np.int64)
    out_ts = np.empty(n if write else 0, np.uint64)
    i = k = pos = 0
    while True:
        i, k, pos = _encode(records, locs, np.int64(n_locates), stocks, np.int64(tick_size), np.uint64(first_seq),
                            *orders.columns[:5], orders.shift, orders.mask, orders.live, np.int64(orders.max_orders),
                            write, out, offsets, out_ts, reasons, rest, i, k, pos)
        if i == n:
            break
        orders.reserve(max(orders.orders, 64))  # doubles the table
    if not write:
        return Encoded(Framed.empty(), reasons, rest)
    k = int(k)
    offsets[k] = pos
    return Encoded(Framed(out[: offsets[k]], offsets[: k + 1], out_ts[:k]), reasons, rest)
