"""Decoding MoldUDP64 packets and ITCH 5.0 messages (compiled, no Python per message).

* :func:`blocks`: the message blocks of one packet, checked to add up to the datagram exactly;
* :func:`in_order_packets`: the listener's common case in bulk -- a run of well-formed data packets of
  the followed session, each starting at the next expected sequence number, appended to the decode
  buffer in one pass (anything else stops it and takes the per-packet path);
* :func:`decode`: delivered messages -> columns (type, locate, timestamp, references, side, shares,
  price, match number, event code, offset). Every ITCH 5.0 type is length-checked; a message of an
  unknown type or of the wrong length for its type is marked malformed (type 0) and counted.

Each function only reads the bytes it was given and never trusts a length or count it did not check,
so any datagram can be fed to it (the fuzz tests do).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from qrsdp_sim.itch.messages import SIZES

SIZE_TABLE = np.zeros(256, np.int32)
for _t, _n in SIZES.items():
    SIZE_TABLE[_t[0]] = _n

A, F, E, C, X, D, U, S, R = (ord(c) for c in "AFECXDUSR")

NAMES = {
    S: "SYSTEM_EVENT", R: "STOCK_DIRECTORY", A: "ADD_ORDER", F: "ADD_ORDER_MPID", E: "ORDER_EXECUTED",
    C: "ORDER_EXECUTED_WITH_PRICE", X: "ORDER_CANCEL", D: "ORDER_DELETE", U: "ORDER_REPLACE",
}  # fmt: skip

COLUMNS = ("mtype", "locate", "ts", "ref", "ref2", "side", "shares", "price", "match", "code", "moff")


@njit(cache=True, nogil=True)
def blocks(buf, start, end, count):  # pragma: no cover - compiled
    """Check that buf[start:end] holds exactly ``count`` message blocks; returns the byte offset of
    each block (count + 1 entries) or an empty array when the packet is malformed."""
    offs = np.empty(count + 1, np.int64)
    pos = start
    for k in range(count):
        if pos + 2 > end:
            return offs[:0]
        ln = (np.int64(buf[pos]) << 8) | np.int64(buf[pos + 1])
        if pos + 2 + ln > end:
            return offs[:0]
        offs[k] = pos
        pos += 2 + ln
    offs[count] = pos
    if pos != end:
        return offs[:0]
    return offs


@njit(cache=True, nogil=True)
def in_order_packets(
    slab, slot_size, lengths, start, n, session, expected, chunk, fill, limit
):  # pragma: no cover
    """The common case in bulk: datagrams ``start`` .. ``n - 1`` of ``slab`` (one per ``slot_size``
    slot) that are well-formed data packets of ``session`` starting exactly at ``expected`` have their
    message blocks appended to ``chunk[fill:]``. Stops at the first datagram that needs the general
    path (another session, a gap, a duplicate, a heartbeat, end of session, anything malformed) or
    once ``fill`` reaches ``limit``. Returns (index reached, expected, fill, messages, bytes)."""
    i = start
    msgs = 0
    nbytes = 0
    while i < n and fill < limit:
        ln = np.int64(lengths[i])
        if ln < 20:
            break
        base = np.int64(i) * slot_size
        same = True
        for k in range(10):
            if slab[base + k] != session[k]:
                same = False
                break
        if not same:
            break
        seq = np.int64(0)
        for k in range(8):
            seq = (seq << 8) | np.int64(slab[base + 10 + k])
        count = (np.int64(slab[base + 18]) << 8) | np.int64(slab[base + 19])
        if seq != expected or count == 0 or count == 0xFFFF:
            break
        pos = base + 20
        end = base + ln
        ok = True
        for _k in range(count):
            if pos + 2 > end:
                ok = False
                break
            pos += 2 + ((np.int64(slab[pos]) << 8) | np.int64(slab[pos + 1]))
            if pos > end:
                ok = False
                break
        if not ok or pos != end:
            break
        body = ln - 20
        chunk[fill : fill + body] = slab[base + 20 : end]
        fill += body
        expected += count
        msgs += count
        nbytes += ln
        i += 1
    return i, expected, fill, msgs, nbytes


@njit(inline="always")
def _be(buf, p, n):  # pragma: no cover - compiled
    v = np.uint64(0)
    for k in range(n):
        v = (v << np.uint64(8)) | np.uint64(buf[p + k])
    return v


@njit(cache=True, nogil=True)
def _decode(
    buf, n, sizes, mtype, locate, ts, ref, ref2, side, shares, price, match, code, moff
):  # pragma: no cover
    """Decode ``n`` framed messages from ``buf``; returns the number of malformed messages."""
    pos = 0
    bad = 0
    for i in range(n):
        ln = (np.int64(buf[pos]) << 8) | np.int64(buf[pos + 1])
        p = pos + 2
        moff[i] = p
        pos = p + ln
        t = np.int64(buf[p]) if ln > 0 else 0
        if ln < 11 or sizes[t] != ln:
            mtype[i] = 0
            bad += 1
            continue
        mtype[i] = t
        locate[i] = _be(buf, p + 1, 2)
        ts[i] = _be(buf, p + 5, 6)
        ref[i] = 0
        ref2[i] = 0
        side[i] = 0
        shares[i] = 0
        price[i] = 0
        match[i] = 0
        code[i] = 0
        if t == 65 or t == 70:  # A, F
            ref[i] = _be(buf, p + 11, 8)
            side[i] = buf[p + 19]
            shares[i] = _be(buf, p + 20, 4)
            price[i] = _be(buf, p + 32, 4)
        elif t == 69:  # E
            ref[i] = _be(buf, p + 11, 8)
            shares[i] = _be(buf, p + 19, 4)
            match[i] = _be(buf, p + 23, 8)
        elif t == 67:  # C
            ref[i] = _be(buf, p + 11, 8)
            shares[i] = _be(buf, p + 19, 4)
            match[i] = _be(buf, p + 23, 8)
            code[i] = buf[p + 31]
            price[i] = _be(buf, p + 32, 4)
        elif t == 88:  # X
            ref[i] = _be(buf, p + 11, 8)
            shares[i] = _be(buf, p + 19, 4)
        elif t == 68:  # D
            ref[i] = _be(buf, p + 11, 8)
        elif t == 85:  # U
            ref[i] = _be(buf, p + 11, 8)
            ref2[i] = _be(buf, p + 19, 8)
            shares[i] = _be(buf, p + 27, 4)
            price[i] = _be(buf, p + 31, 4)
        elif t == 83:  # S
            code[i] = buf[p + 11]
    return bad


def decode(buf: np.ndarray, n: int) -> tuple[dict[str, np.ndarray], int]:
    """The columns of the ``n`` framed messages in ``buf`` and the number of malformed ones."""
    cols = {
        "mtype": np.empty(n, np.uint8), "locate": np.zeros(n, np.uint16), "ts": np.zeros(n, np.uint64),
        "ref": np.zeros(n, np.uint64), "ref2": np.zeros(n, np.uint64), "side": np.zeros(n, np.uint8),
        "shares": np.zeros(n, np.uint32), "price": np.zeros(n, np.uint32), "match": np.zeros(n, np.uint64),
        "code": np.zeros(n, np.uint8), "moff": np.empty(n, np.int64),
    }  # fmt: skip
    bad = _decode(buf, n, SIZE_TABLE, *(cols[c] for c in COLUMNS))
    return cols, int(bad)
