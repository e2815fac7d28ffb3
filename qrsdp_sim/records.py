"""The 26-byte event record shared by every part of QRSDP.

One record is one order-book event. Records travel as numpy structured arrays of
``RECORD_DTYPE`` (packed, little-endian), so a batch is a single contiguous buffer
that can be compressed, published or decoded without a Python loop per event.
"""

from __future__ import annotations

import contextlib
from enum import IntEnum

import numpy as np

RECORD_DTYPE = np.dtype(
    [
        ("ts_ns", "<u8"),
        ("type", "u1"),
        ("side", "u1"),
        ("price_ticks", "<i4"),
        ("qty", "<u4"),
        ("order_id", "<u8"),
    ],
    align=False,
)
RECORD_SIZE = RECORD_DTYPE.itemsize
assert RECORD_SIZE == 26


class EventType(IntEnum):
    """Event type codes (field ``type``)."""

    ADD_BID = 0
    ADD_ASK = 1
    CANCEL_BID = 2
    CANCEL_ASK = 3
    EXECUTE_BUY = 4
    EXECUTE_SELL = 5


class Side(IntEnum):
    """Side codes (field ``side``). For an execution, the side of the resting order."""

    BID = 0
    ASK = 1
    NA = 2


EVENT_TYPE_NAMES: tuple[str, ...] = tuple(e.name for e in EventType)
N_EVENT_TYPES = len(EventType)


def empty_records(n: int) -> np.ndarray:
    """Return an uninitialised record array of length ``n``."""
    return np.empty(n, dtype=RECORD_DTYPE)


def as_records(data: bytes | bytearray | memoryview | np.ndarray) -> np.ndarray:
    """View a packed little-endian buffer (length multiple of 26) as records, without copying."""
    if isinstance(data, np.ndarray) and data.dtype == RECORD_DTYPE:
        return data
    buf = memoryview(data).cast("B")
    if len(buf) % RECORD_SIZE:
        raise ValueError(f"buffer of {len(buf)} bytes is not a whole number of {RECORD_SIZE}-byte records")
    return np.frombuffer(buf, dtype=RECORD_DTYPE)


_MADV_POPULATE_WRITE = 23  # Linux >= 5.14; older kernels answer EINVAL and we fault pages lazily
_BIG_ALLOCATION = 64 << 20


def allocate_records(n: int) -> np.ndarray:
    """An uninitialised record array for ``n`` records, suited to being filled in parallel.

    Large arrays live in their own anonymous mapping so callers can pre-fault
    disjoint ranges from several threads with :func:`prefault` (on this class of
    VM, first-touch page faults cost more than LZ4 decompression itself).
    """
    nbytes = n * RECORD_SIZE
    if nbytes < _BIG_ALLOCATION:
        return np.empty(n, dtype=RECORD_DTYPE)
    import mmap

    buf = mmap.mmap(-1, nbytes, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    return np.frombuffer(buf, dtype=RECORD_DTYPE)


def prefault(records: np.ndarray, start: int, stop: int) -> None:
    """Ask the kernel to back records[start:stop] with memory now (best effort)."""
    import mmap

    base = records.base
    if not isinstance(base, mmap.mmap) or stop <= start:
        return
    page = mmap.PAGESIZE
    lo = (start * RECORD_SIZE) // page * page
    hi = min(len(base), stop * RECORD_SIZE)
    with contextlib.suppress(OSError):
        base.madvise(_MADV_POPULATE_WRITE, lo, hi - lo)
