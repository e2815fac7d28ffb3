"""Compiled primitives of the open-addressing order table shared by the book replay and the
ITCH listener: a power-of-two ``uint64`` key array with linear probing, Fibonacci hashing and
backward-shift deletion (no tombstones, so lookups stay short however many orders come and go).

The value columns differ per user (price/qty/side for the replay, plus the stock locate for the
listener), so the table stores only keys; callers keep parallel value arrays and move their
entries where :func:`backshift_source` says.
"""

from __future__ import annotations

import numpy as np
from numba import njit

EMPTY_KEY = np.uint64(0xFFFF_FFFF_FFFF_FFFF)
"""Marks a free slot; no order id or reference can take this value."""

_GOLDEN = np.uint64(0x9E37_79B9_7F4A_7C15)


def new_keys(capacity: int) -> np.ndarray:
    """An empty key array (``capacity`` a power of two)."""
    return np.full(capacity, EMPTY_KEY, dtype=np.uint64)


@njit(inline="always", nogil=True, cache=True)
def home(key, shift):
    """The slot where ``key`` would sit without collisions."""
    return np.int64((key * _GOLDEN) >> shift)


@njit(nogil=True, cache=True)
def find(keys, key, shift, mask):
    """Slot holding ``key``, or -1."""
    i = home(key, shift)
    while True:
        k = keys[i]
        if k == key:
            return i
        if k == EMPTY_KEY:
            return -1
        i = (i + 1) & mask


@njit(nogil=True, cache=True)
def free_slot(keys, key, shift, mask):
    """Free slot for a new ``key`` (the caller checked it is absent and the table has room)."""
    i = home(key, shift)
    while keys[i] != EMPTY_KEY:
        i = (i + 1) & mask
    return i


@njit(nogil=True, cache=True)
def backshift_source(keys, hole, shift, mask):
    """For backward-shift deletion: the slot whose entry must move into ``hole``, or -1 when none.

    Deleting slot ``s``: ``i = s``; while ``(j := backshift_source(keys, i, ...)) >= 0``: move
    key and values from ``j`` to ``i`` and set ``i = j``; finally ``keys[i] = EMPTY_KEY``.
    """
    j = hole
    while True:
        j = (j + 1) & mask
        kj = keys[j]
        if kj == EMPTY_KEY:
            return -1
        h = home(kj, shift)
        # entry j stays only if its home lies cyclically within (hole, j]
        stays = hole < h <= j if hole <= j else h > hole or h <= j
        if not stays:
            return j
