"""Vectorised ITCH 5.0 encoding of record batches.

``encode_records`` turns a batch of one security's records into framed ITCH messages in
three numpy passes (one structured array per message type: Add Order, Order Delete, Order
Executed) and one compiled interleave that lays the messages out in record order, each
preceded by its 2-byte big-endian length. No Python code runs per message.

Mapping (one message per record)::

    ADD_BID / ADD_ASK        -> A  side 'B' / 'S', shares = qty, price = price_ticks x tick_size
    CANCEL_BID / CANCEL_ASK  -> D  (the engine always cancels a whole resting order)
    EXECUTE_BUY / _SELL      -> E  executed shares = qty, match number = the message's sequence number

The output is a :class:`Framed` stream: one contiguous ``uint8`` buffer plus the offset of every
message, which the MoldUDP64 packetiser slices without copying.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numba import njit

from qrsdp_sim.itch import messages as m
from qrsdp_sim.itch.refnums import order_refs
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


@njit(cache=True, nogil=True)
def _interleave(kind, a_rows, d_rows, e_rows, out, offsets):  # pragma: no cover - compiled
    """Copy each message's framed bytes to its place in record order (kind 0 A, 1 D, 2 E)."""
    ia = 0
    idel = 0
    ie = 0
    pos = 0
    for i in range(len(kind)):
        offsets[i] = pos
        k = kind[i]
        if k == 0:
            for b in range(38):
                out[pos + b] = a_rows[ia, b]
            ia += 1
            pos += 38
        elif k == 1:
            for b in range(21):
                out[pos + b] = d_rows[idel, b]
            idel += 1
            pos += 21
        else:
            for b in range(33):
                out[pos + b] = e_rows[ie, b]
            ie += 1
            pos += 33
    offsets[len(kind)] = pos


_KIND = np.array([0, 0, 1, 1, 2, 2], dtype=np.uint8)  # by record type: A A D D E E


def encode_records(
    records: np.ndarray,
    *,
    locate: int | np.ndarray,
    n_locates: int,
    stock: str | bytes | np.ndarray,
    tick_size: int,
    first_seq: int,
) -> Framed:
    """Encode records as ITCH messages with sequence numbers first_seq, first_seq + 1 ...

    One security (``locate`` an int, ``stock`` its symbol) or several merged (``locate`` a uint16
    array and ``stock`` an ``S8`` array, one entry per record). ``first_seq`` numbers the batch's
    first message in the feed; Order Executed messages carry their own sequence number as match
    number (unique and increasing across the feed).
    """
    if records.dtype != RECORD_DTYPE:
        raise TypeError(f"expected records of RECORD_DTYPE, got {records.dtype}")
    n = len(records)
    if n == 0:
        return Framed.empty()
    types = np.ascontiguousarray(records["type"])
    if int(types.max()) > 5:
        raise ValueError(f"unknown event type {int(types.max())}")
    per_record = isinstance(locate, np.ndarray)
    if per_record:
        if len(locate) != n or not isinstance(stock, np.ndarray) or len(stock) != n:
            raise ValueError("per-record locate and stock arrays must match the records")
        if int(locate.min()) < 1 or int(locate.max()) > n_locates or n_locates > 0xFFFF:
            raise ValueError(f"locates must lie in 1..{n_locates}")
        stock8 = stock.astype("S8")
    else:
        stock8 = stock if isinstance(stock, bytes) else m.stock_field(stock)
    kind = _KIND[types]
    ts = np.ascontiguousarray(records["ts_ns"])
    if int(ts.max()) > m.MAX_TIMESTAMP:
        raise ValueError("timestamp does not fit the 6-byte ITCH field")
    ts_hi = (ts >> np.uint64(32)).astype(np.uint16)
    ts_lo = (ts & np.uint64(0xFFFF_FFFF)).astype(np.uint32)
    ids = np.ascontiguousarray(records["order_id"])
    if per_record:
        if int(ids.min()) == 0:
            raise ValueError("order id 0 is reserved (engine ids start at 1)")
        refs = (ids - np.uint64(1)) * np.uint64(n_locates) + locate.astype(np.uint64)
        loc_of = locate.take
        stock_of = stock8.take
    else:
        refs = order_refs(ids, locate, n_locates)

        def loc_of(_idx: np.ndarray) -> int:
            return locate

        def stock_of(_idx: np.ndarray) -> bytes:
            return stock8
    qty = np.ascontiguousarray(records["qty"])
    ia = np.flatnonzero(kind == 0)
    idel = np.flatnonzero(kind == 1)
    ie = np.flatnonzero(kind == 2)

    a = np.empty(len(ia), m.FRAMED_ADD)
    if len(ia):
        prices = np.ascontiguousarray(records["price_ticks"]).take(ia).astype(np.int64) * int(tick_size)
        if int(prices.min()) < 0 or int(prices.max()) > m.MAX_PRICE:
            raise ValueError("price outside the u32 ITCH price range (4 implied decimals)")
        a["length"] = 36
        a["type"] = b"A"
        a["locate"] = loc_of(ia)
        a["tracking"] = 0
        a["ts_hi"] = ts_hi.take(ia)
        a["ts_lo"] = ts_lo.take(ia)
        a["ref"] = refs.take(ia)
        a["side"] = types.take(ia) * np.uint8(m.SELL - m.BUY) + np.uint8(m.BUY)  # ADD_BID 0 -> B, ADD_ASK 1 -> S
        a["shares"] = qty.take(ia)
        a["stock"] = stock_of(ia)
        a["price"] = prices
    d = np.empty(len(idel), m.FRAMED_DELETE)
    if len(idel):
        d["length"] = 19
        d["type"] = b"D"
        d["locate"] = loc_of(idel)
        d["tracking"] = 0
        d["ts_hi"] = ts_hi.take(idel)
        d["ts_lo"] = ts_lo.take(idel)
        d["ref"] = refs.take(idel)
    e = np.empty(len(ie), m.FRAMED_EXECUTED)
    if len(ie):
        e["length"] = 31
        e["type"] = b"E"
        e["locate"] = loc_of(ie)
        e["tracking"] = 0
        e["ts_hi"] = ts_hi.take(ie)
        e["ts_lo"] = ts_lo.take(ie)
        e["ref"] = refs.take(ie)
        e["shares"] = qty.take(ie)
        e["match"] = ie.astype(np.uint64) + np.uint64(first_seq)

    total = len(ia) * 38 + len(idel) * 21 + len(ie) * 33
    out = np.empty(total, np.uint8)
    offsets = np.empty(n + 1, np.int64)
    _interleave(kind, a.view(np.uint8).reshape(-1, 38), d.view(np.uint8).reshape(-1, 21),
                e.view(np.uint8).reshape(-1, 33), out, offsets)
    return Framed(out, offsets, ts.astype(np.uint64, copy=True))
