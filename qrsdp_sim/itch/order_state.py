"""Resting orders by ITCH order reference, for the encoder (streamer, ``itch-export``) and the listener.

One open-addressing table (the primitives of :mod:`qrsdp_sim.book.order_table`) with four value
columns -- side (0 bid, 1 ask), price in ticks, remaining shares, stock locate -- held as plain numpy
arrays that compiled code updates in place. No Python object exists per order or per message.

The table is bounded: at most ``max_orders`` orders rest at once (an add beyond that is refused by
its user), so a stream of adds that are never removed cannot grow memory without limit.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from qrsdp_sim.book.order_table import EMPTY_KEY, backshift_source, free_slot, new_keys
from qrsdp_sim.book.order_table import find as table_find

DEFAULT_MAX_ORDERS = 4_000_000  # resting at once (a simulated session rests a few thousand)

__all__ = ["DEFAULT_MAX_ORDERS", "OrderTable", "table_delete", "table_find", "table_insert"]


@njit(cache=True, nogil=True)
def table_insert(keys, key, shift, mask):  # pragma: no cover - compiled
    """Slot now holding ``key`` (the caller checked it is absent and the table has room)."""
    i = free_slot(keys, key, shift, mask)
    keys[i] = key
    return i


@njit(cache=True, nogil=True)
def table_delete(keys, side, price, rem, loc, slot, shift, mask):  # pragma: no cover - compiled
    """Remove the entry at ``slot`` (backward-shift deletion, no tombstones)."""
    i = slot
    while True:
        j = backshift_source(keys, i, shift, mask)
        if j < 0:
            break
        keys[i] = keys[j]
        side[i] = side[j]
        price[i] = price[j]
        rem[i] = rem[j]
        loc[i] = loc[j]
        i = j
    keys[i] = EMPTY_KEY


@njit(cache=True, nogil=True)
def _rehash(keys, side, price, rem, loc, nk, ns, npx, nr, nl, shift, mask):  # pragma: no cover - compiled
    for s in range(len(keys)):
        k = keys[s]
        if k != EMPTY_KEY:
            i = table_insert(nk, k, shift, mask)
            ns[i] = side[s]
            npx[i] = price[s]
            nr[i] = rem[s]
            nl[i] = loc[s]


class OrderTable:
    """The resting orders of one trading day (or one listener): reference -> side, price, shares, locate."""

    def __init__(self, max_orders: int = DEFAULT_MAX_ORDERS, capacity: int = 1 << 12) -> None:
        if max_orders < 1:
            raise ValueError("max_orders must be >= 1")
        self.max_orders = int(max_orders)
        self.live = np.zeros(1, np.int64)  # orders resting (updated by compiled code)
        self._alloc(1 << max(4, (capacity - 1).bit_length()))

    def _alloc(self, cap: int) -> None:
        self.keys = new_keys(cap)
        self.side = np.zeros(cap, np.uint8)
        self.price = np.zeros(cap, np.int32)
        self.rem = np.zeros(cap, np.uint32)
        self.loc = np.zeros(cap, np.uint16)
        self.mask = cap - 1
        self.shift = np.uint64(64 - (cap.bit_length() - 1))

    @property
    def columns(self) -> tuple:
        """(keys, side, price, rem, loc, shift, mask) as the compiled users take them."""
        return self.keys, self.side, self.price, self.rem, self.loc, self.shift, self.mask

    @property
    def orders(self) -> int:
        return int(self.live[0])

    def reserve(self, incoming: int) -> None:
        """Keep the load factor at most 1/2 after up to ``incoming`` more orders (never past ``max_orders``)."""
        need = 2 * min(self.orders + int(incoming), self.max_orders)
        if need <= len(self.keys):
            return
        old = (self.keys, self.side, self.price, self.rem, self.loc)
        self._alloc(1 << (need - 1).bit_length())
        _rehash(*old, self.keys, self.side, self.price, self.rem, self.loc, self.shift, self.mask)

    def get(self, ref: int) -> tuple[int, int, int, int] | None:
        """(side, price ticks, remaining shares, locate) of a resting reference, or None."""
        s = table_find(self.keys, np.uint64(ref), self.shift, self.mask)
        if s < 0:
            return None
        return int(self.side[s]), int(self.price[s]), int(self.rem[s]), int(self.loc[s])
