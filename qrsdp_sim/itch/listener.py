"""``qrsdp listen``: the reference ITCH 5.0 / MoldUDP64 listener.

It joins the multicast group (or binds the unicast address), follows one MoldUDP64 session (the
first one that carries data or heartbeats, or ``--session``), and delivers every message exactly
once and in sequence order:

* packets are validated (header, block lengths adding up to the datagram); malformed or
  truncated packets are counted and dropped, never raised;
* a packet entirely below the next expected sequence number is a duplicate; one above it opens a
  gap: later packets wait in a reorder buffer while the gap is re-requested from the re-request
  server (unicast, 20-byte request) every ``gap_retry`` seconds; a gap not filled within
  ``gap_timeout`` seconds is given up (counted as unrecovered) so the feed can go on;
* heartbeats and end-of-session packets carry the next sequence number, so a lost tail is
  noticed too; the listener starts at sequence number 1 and recovers anything it joined after.

Datagrams are received up to 256 at a time (``recvmmsg``, 64-bit Linux) and runs of in-order data
packets of the followed session are validated and queued for decoding in one compiled pass; every
other datagram takes the per-packet path above (same outcome). The socket asks for a 64 MiB receive
buffer (granted as root; otherwise ``net.core.rmem_max`` caps it and the listener says so).

In-order messages are decoded in bulk (compiled): every ITCH 5.0 type is length-checked; the
order-book types (A, F, E, C, X, D, U) update an order table keyed by order reference, from which
each message becomes a QRSDP record (ADD/CANCEL/EXECUTE with the resting order's side and price)
applied to an order-level book per stock (``qrsdp_sim.book.replay.OrderBook``). ``--book``
prints every change of a stock's best bid/offer. The listener exits once the session's
end-of-session packet arrived and every message before it was delivered.
"""

from __future__ import annotations

import heapq
import io
import select
import socket
import struct
import sys
import time
from dataclasses import dataclass, field
from typing import IO, Any

import numpy as np
from numba import njit

from qrsdp_sim.book.order_table import EMPTY_KEY, backshift_source, free_slot, new_keys
from qrsdp_sim.book.order_table import find as _find
from qrsdp_sim.book.replay import NO_PRICE, OrderBook
from qrsdp_sim.itch import moldudp64 as mold
from qrsdp_sim.itch.messages import EVENT_CODE_NAMES, SIZES
from qrsdp_sim.itch.transport import (
    DEFAULT_GROUP,
    DEFAULT_INTERFACE,
    DEFAULT_PORT,
    MMSGHDR,
    BatchReceiver,
    mmsg_available,
    open_receiver,
)
from qrsdp_sim.records import RECORD_DTYPE

_SIZE_TABLE = np.zeros(256, np.int32)
for _t, _n in SIZES.items():
    _SIZE_TABLE[_t[0]] = _n

_A, _F, _E, _C, _X, _D, _U, _S, _R = (ord(c) for c in "AFECXDUSR")
_EMPTY = EMPTY_KEY  # order table: free slot (shared primitives in qrsdp_sim.book.order_table)

# listener-side book errors (per record conversion)
ERR_UNKNOWN_REF = 1
ERR_DUPLICATE_REF = 2
ERR_PRICE = 4

NAMES = {
    _S: "SYSTEM_EVENT", _R: "STOCK_DIRECTORY", _A: "ADD_ORDER", _F: "ADD_ORDER_MPID", _E: "ORDER_EXECUTED",
    _C: "ORDER_EXECUTED_WITH_PRICE", _X: "ORDER_CANCEL", _D: "ORDER_DELETE", _U: "ORDER_REPLACE",
}  # fmt: skip


# ---------------------------------------------------------------------------
# compiled parts
# ---------------------------------------------------------------------------


@njit(cache=True, nogil=True)
def _blocks(buf, start, end, count):  # pragma: no cover - compiled
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
def _in_order_packets(
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


@njit(cache=True, nogil=True)
def _insert(keys, key, shift, mask):  # pragma: no cover - compiled
    i = free_slot(keys, key, shift, mask)
    keys[i] = key
    return i


@njit(cache=True, nogil=True)
def _delete(keys, t_side, t_price, t_shares, t_loc, slot, shift, mask):  # pragma: no cover - compiled
    i = slot
    while True:
        j = backshift_source(keys, i, shift, mask)
        if j < 0:
            break
        keys[i] = keys[j]
        t_side[i] = t_side[j]
        t_price[i] = t_price[j]
        t_shares[i] = t_shares[j]
        t_loc[i] = t_loc[j]
        i = j
    keys[i] = _EMPTY


@njit(cache=True, nogil=True)
def _rehash(keys, t_side, t_price, t_shares, t_loc, nk, ns, np_, nsh, nl, shift, mask):  # pragma: no cover
    for s in range(len(keys)):
        k = keys[s]
        if k != _EMPTY:
            i = _insert(nk, k, shift, mask)
            ns[i] = t_side[s]
            np_[i] = t_price[s]
            nsh[i] = t_shares[s]
            nl[i] = t_loc[s]


@njit(cache=True, nogil=True)
def _to_records(
    mtype,
    locate,
    ts,
    ref,
    ref2,
    side,
    shares,
    price,
    tick,
    keys,
    t_side,
    t_price,
    t_shares,
    t_loc,
    shift,
    mask,
    live,
    r_ts,
    r_type,
    r_side,
    r_price,
    r_qty,
    r_id,
    r_loc,
    r_msg,
    errors,
):  # pragma: no cover
    """Order-book messages -> QRSDP records via the order table; returns the number of records."""
    k = 0
    for i in range(len(mtype)):
        t = mtype[i]
        err = 0
        if t == 65 or t == 70 or t == 85:  # A, F, U (new order)
            if t == 85:
                s = _find(keys, ref[i], shift, mask)
                if s < 0:
                    errors[i] |= 1
                    continue
                sd = t_side[s]
                # cancel the original order in full
                r_ts[k] = ts[i]
                r_type[k] = 2 + sd
                r_side[k] = sd
                r_price[k] = t_price[s]
                r_qty[k] = t_shares[s]
                r_id[k] = ref[i]
                r_loc[k] = t_loc[s]
                r_msg[k] = i
                k += 1
                loc = t_loc[s]
                _delete(keys, t_side, t_price, t_shares, t_loc, s, shift, mask)
                live[0] -= 1
                new_ref = ref2[i]
            else:
                sd = 0 if side[i] == 66 else 1
                loc = locate[i]
                new_ref = ref[i]
            if new_ref == 0 or new_ref == _EMPTY or _find(keys, new_ref, shift, mask) >= 0:
                errors[i] |= 2
                continue
            px = np.int64(price[i])
            if px % tick != 0:
                err |= 4
            s = _insert(keys, new_ref, shift, mask)
            t_side[s] = sd
            t_price[s] = np.int32(px // tick)
            t_shares[s] = shares[i]
            t_loc[s] = loc
            live[0] += 1
            r_ts[k] = ts[i]
            r_type[k] = sd
            r_side[k] = sd
            r_price[k] = np.int32(px // tick)
            r_qty[k] = shares[i]
            r_id[k] = new_ref
            r_loc[k] = loc
            r_msg[k] = i
            k += 1
        elif t == 68 or t == 88 or t == 69 or t == 67:  # D, X, E, C
            s = _find(keys, ref[i], shift, mask)
            if s < 0:
                errors[i] |= 1
                continue
            sd = t_side[s]
            rest = t_shares[s]
            q = rest if t == 68 else min(shares[i], rest)
            r_ts[k] = ts[i]
            if t == 68 or t == 88:
                r_type[k] = 2 + sd
            else:
                r_type[k] = 4 if sd == 1 else 5  # a resting ask is hit by a buy
            r_side[k] = sd
            r_price[k] = t_price[s]
            r_qty[k] = q
            r_id[k] = ref[i]
            r_loc[k] = t_loc[s]
            r_msg[k] = i
            k += 1
            if q >= rest:
                _delete(keys, t_side, t_price, t_shares, t_loc, s, shift, mask)
                live[0] -= 1
            else:
                t_shares[s] = rest - q
        errors[i] |= err
    return k


# ---------------------------------------------------------------------------
# Python side
# ---------------------------------------------------------------------------


def _price(p: int) -> str:
    return f"{p // 10000}.{p % 10000:04d}"


RCVBUF = 64 << 20  # feed socket receive buffer asked for (as root the kernel grants twice that)

_warm = False


def _warm_up() -> None:
    """Load the compiled parts (numba's cache, ~0.5 s on first use) before the first packet arrives,
    so a fresh listener does not stall on it while the socket buffer fills."""
    global _warm
    if _warm:
        return
    _warm = True
    sid = b"WARMUP0000"
    add = struct.pack(">cHH6sQcI8sI", b"A", 1, 0, b"\0" * 5 + b"\1", 1, b"B", 1, b"WARM    ", 10_000)
    delete = struct.pack(">cHH6sQ", b"D", 1, 0, b"\0" * 5 + b"\2", 1)
    packets = [
        mold.header(sid, 1, 1) + struct.pack(">H", len(add)) + add,
        mold.header(sid, 2, 1) + struct.pack(">H", len(delete)) + delete,
    ]
    slot = 2048
    slab = np.zeros(2 * slot, np.uint8)
    lengths = np.zeros(2, MMSGHDR)["len"]  # the same strided view BatchReceiver passes
    for k, pkt in enumerate(packets):
        slab[k * slot : k * slot + len(pkt)] = np.frombuffer(pkt, np.uint8)
        lengths[k] = len(pkt)
    lis = Listener(
        ListenerConfig(print_messages=False, retransmit=None), out=io.StringIO(), err=io.StringIO()
    )
    lis.handle_batch(slab, slot, lengths, 2)
    lis.flush()


@dataclass
class ListenerConfig:
    multicast_group: str = DEFAULT_GROUP
    port: int = DEFAULT_PORT
    interface: str = DEFAULT_INTERFACE
    unicast: tuple[str, int] | None = None
    retransmit: tuple[str, int] | None = ("127.0.0.1", 5002)  # None: never re-request
    session: bytes | None = None
    tick_size: int = 100
    print_messages: bool = True
    book: bool = False
    stats: bool = False
    stats_interval: float = 1.0
    gap_retry: float = 0.05
    gap_timeout: float = 10.0
    idle_timeout: float = 0.0  # exit when nothing arrived this long (0: wait for end of session)
    max_runtime: float = 0.0
    request_max: int = 2048  # messages asked per re-request
    keep: bool = False  # keep delivered bytes, decoded messages and records in memory (tests)
    chunk_bytes: int = 1 << 20


@dataclass
class Stats:
    packets: int = 0
    bytes: int = 0
    messages: int = 0  # delivered in order
    duplicates: int = 0  # messages received more than once
    malformed_packets: int = 0
    bad_messages: int = 0  # unknown type or wrong length for its type (sequence number consumed)
    other_session: int = 0
    heartbeats: int = 0
    eos_packets: int = 0
    gaps: int = 0  # missing ranges detected
    recovered: int = 0  # missing ranges filled (by retransmission or a late original)
    requests: int = 0
    retransmitted: int = 0  # messages received from the re-request server and delivered
    unrecovered: int = 0  # messages given up
    book_errors: int = 0  # unknown / duplicate references, prices off the tick grid, rejected records
    by_type: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


class Listener:
    def __init__(
        self, config: ListenerConfig, out: IO[str] | None = None, err: IO[str] | None = None
    ) -> None:
        self.cfg = config
        self.out = out if out is not None else sys.stdout
        self.err = err if err is not None else sys.stderr
        self.stats = Stats()
        self.session: bytes | None = config.session
        self.expected = 1
        self.high = 1  # one past the highest sequence number known to exist
        self.eos_seq: int | None = None
        self._pending: dict[int, tuple[int, bytes, np.ndarray]] = {}  # seq -> (count, packet, block offsets)
        self._heap: list[int] = []
        self._holes: dict[int, list[float]] = {}  # end of a missing range -> [first seen, last requested]
        self._next_scan = 0.0
        # delivered, not yet decoded message blocks: _cbuf[:_cfill] (room for one more datagram past chunk_bytes)
        self._cbuf = np.empty(config.chunk_bytes + 65536, np.uint8)
        self._cfill = 0
        self._chunk_count = 0
        self._chunk_seq = 1
        self._chunk_retrans = 0
        self.stocks: dict[int, str] = {}
        self.books: dict[int, OrderBook] = {}
        self._last_bbo: dict[int, tuple[int, int, int, int]] = {}
        self.kept: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []  # (records, locate, seq)
        self.messages_kept: list[dict[str, np.ndarray]] = []
        self.raw_kept: list[bytes] = []
        self._lines: list[
            tuple[int, int, str]
        ] = []  # delivered message blocks, in sequence order (keep=True)
        self._alloc_table(1 << 16)
        self._live = np.zeros(1, np.int64)
        self._session_arr = np.zeros(10, np.uint8)
        self._session_key: bytes | None = None
        self.sock: socket.socket | None = None
        self.req_sock: socket.socket | None = None
        self._rx: BatchReceiver | None = None
        self.rcvbuf = 0  # the receive buffer the kernel granted (bytes)
        self.done = False
        self.t_first: float | None = None
        self.t_last = 0.0

    # -- order table ---------------------------------------------------------
    def _alloc_table(self, cap: int) -> None:
        self._keys = new_keys(cap)
        self._t_side = np.zeros(cap, np.uint8)
        self._t_price = np.zeros(cap, np.int32)
        self._t_shares = np.zeros(cap, np.uint32)
        self._t_loc = np.zeros(cap, np.uint16)
        self._mask = cap - 1
        self._shift = np.uint64(64 - (cap.bit_length() - 1))

    def _reserve(self, incoming: int) -> None:
        need = 2 * (int(self._live[0]) + incoming)
        if need <= len(self._keys):
            return
        old = (self._keys, self._t_side, self._t_price, self._t_shares, self._t_loc)
        self._alloc_table(1 << (need - 1).bit_length())
        _rehash(
            *old,
            self._keys,
            self._t_side,
            self._t_price,
            self._t_shares,
            self._t_loc,
            self._shift,
            self._mask,
        )

    # -- packets -------------------------------------------------------------
    def handle_packet(self, data: bytes, retransmission: bool = False) -> None:
        """Process one datagram. Never raises on bad input: malformed packets are counted and dropped."""
        try:
            self._handle(data, retransmission)
        except (ValueError, IndexError, OverflowError):
            self.stats.malformed_packets += 1

    def _handle(self, data: bytes, retransmission: bool) -> None:
        st = self.stats
        now = time.monotonic()
        if self.t_first is None:
            self.t_first = now
        self.t_last = now
        st.packets += 1
        st.bytes += len(data)
        if len(data) < mold.HEADER_SIZE:
            st.malformed_packets += 1
            return
        session, seq, count = mold.HEADER.unpack_from(data)
        if self.session is None:
            if count == mold.END_OF_SESSION_COUNT or seq == 0:
                return  # never follow a session that is already over
            self.session = session
        elif session != self.session:
            st.other_session += 1
            return
        if seq == 0:
            st.malformed_packets += 1
            return
        if count == mold.END_OF_SESSION_COUNT:
            st.eos_packets += 1
            if len(data) != mold.HEADER_SIZE:
                st.malformed_packets += 1
                return
            self.eos_seq = seq if self.eos_seq is None else max(self.eos_seq, seq)
            self.high = max(self.high, seq)
            return
        if count == 0:
            st.heartbeats += 1
            if len(data) != mold.HEADER_SIZE:
                st.malformed_packets += 1
                return
            self.high = max(self.high, seq)
            return
        buf = np.frombuffer(data, np.uint8)
        offs = _blocks(buf, mold.HEADER_SIZE, len(data), count)
        if len(offs) == 0:
            st.malformed_packets += 1
            return
        end = seq + count
        if end <= self.expected:
            st.duplicates += count
            return
        self.high = max(self.high, end)
        if seq > self.expected:
            if seq in self._pending:
                st.duplicates += count
            else:
                self._pending[seq] = (count, data, offs)
                heapq.heappush(self._heap, seq)
            return
        self._deliver(seq, count, data, offs, retransmission)
        self._drain()

    def handle_batch(self, slab: np.ndarray, slot_size: int, lengths: np.ndarray, n: int) -> None:
        """Process datagrams ``0 .. n - 1`` of a :class:`~qrsdp_sim.itch.transport.BatchReceiver` slab:
        runs of in-order data packets of the followed session are delivered in one compiled pass, any
        other datagram goes through :meth:`handle_packet` -- the outcome is the same as handling each
        datagram on its own."""
        now = time.monotonic()
        if self.t_first is None:
            self.t_first = now
        self.t_last = now
        st = self.stats
        limit = self.cfg.chunk_bytes
        i = 0
        while i < n:
            if self.session is not None:
                if self._cfill >= limit:
                    self.flush()
                if self._chunk_count == 0:
                    self._chunk_seq = self.expected
                if self._session_key != self.session:
                    self._session_arr = np.frombuffer(self.session, np.uint8).copy()
                    self._session_key = self.session
                j, expected, fill, msgs, nbytes = _in_order_packets(
                    slab,
                    slot_size,
                    lengths,
                    i,
                    n,
                    self._session_arr,
                    self.expected,
                    self._cbuf,
                    self._cfill,
                    limit,
                )
                if j > i:
                    st.packets += j - i
                    st.bytes += int(nbytes)
                    self.expected = int(expected)
                    self._cfill = int(fill)
                    self._chunk_count += int(msgs)
                    self.high = max(self.high, self.expected)
                    if self._heap or self._holes:
                        self._drain()
                    i = j
                    continue
                if self._cfill >= limit:
                    continue  # flushed at the top
            base = i * slot_size
            self.handle_packet(slab[base : base + int(lengths[i])].tobytes())
            i += 1
        if self._cfill >= limit:
            self.flush()

    def _deliver(self, seq: int, count: int, data: bytes, offs: np.ndarray, retransmission: bool) -> None:
        skip = self.expected - seq
        if skip:
            self.stats.duplicates += skip
        lo = int(offs[skip])
        if self._chunk_count == 0:
            self._chunk_seq = self.expected
        nb = len(data) - lo
        self._cbuf[self._cfill : self._cfill + nb] = np.frombuffer(data, np.uint8, nb, lo)
        self._cfill += nb
        n = count - skip
        self._chunk_count += n
        self.expected += n
        if retransmission:
            self.stats.retransmitted += n
        if self._cfill >= self.cfg.chunk_bytes:
            self.flush()

    def _drain(self) -> None:
        while self._heap and self._heap[0] <= self.expected:
            seq = heapq.heappop(self._heap)
            count, data, offs = self._pending.pop(seq)
            if seq + count <= self.expected:
                self.stats.duplicates += count
                continue
            self._deliver(seq, count, data, offs, False)
        if self._holes:
            for end in [e for e in self._holes if e <= self.expected]:
                del self._holes[end]
                self.stats.recovered += 1

    def _find_holes(self, limit: int = 64) -> list[tuple[int, int]]:
        """The first ``limit`` missing ranges [start, end) below the highest known sequence number."""
        holes: list[tuple[int, int]] = []
        cur = self.expected
        for start in sorted(self._pending):
            if start > cur:
                holes.append((cur, start))
                if len(holes) >= limit:
                    return holes
            cur = max(cur, start + self._pending[start][0])
        if cur < self.high:
            holes.append((cur, self.high))
        return holes

    @property
    def _gap_open(self) -> bool:
        return self.expected < self.high

    def _service_gap(self, now: float) -> None:
        """Re-request every missing range (each at most every ``gap_retry`` s); give up old ones."""
        if not self._gap_open:
            if self._holes:
                self.stats.recovered += len(self._holes)
                self._holes.clear()
            return
        if now < self._next_scan:
            return
        self._next_scan = now + min(0.005, self.cfg.gap_retry / 2)
        for start, end in self._find_holes():
            if end <= self.expected:
                continue  # filled meanwhile (an earlier hole was given up and the drain passed this one)
            start = max(start, self.expected)
            hole = self._holes.get(end)
            if hole is None:
                hole = self._holes[end] = [now, 0.0]  # first seen, last requested
                self.stats.gaps += 1
            if start == self.expected and now - hole[0] > self.cfg.gap_timeout:
                self.stats.unrecovered += end - start
                self.err.write(f"itch-listen: giving up messages {start}..{end - 1}\n")
                self.flush()
                del self._holes[end]
                self.expected = end
                self._chunk_seq = end
                self._drain()
                continue
            if (
                self.cfg.retransmit is not None
                and self.req_sock is not None
                and now - hole[1] >= self.cfg.gap_retry
            ):
                try:
                    self.req_sock.sendto(
                        mold.request(self.session, start, min(end - start, self.cfg.request_max)),
                        self.cfg.retransmit,
                    )
                    self.stats.requests += 1
                except OSError:
                    pass
                hole[1] = now

    @property
    def complete(self) -> bool:
        return self.eos_seq is not None and self.expected >= self.eos_seq and not self._heap

    # -- decoding and the books ----------------------------------------------
    def flush(self) -> None:
        """Decode the delivered messages held in the chunk and apply them to the books."""
        n = self._chunk_count
        if n == 0:
            return
        buf = self._cbuf[: self._cfill]  # decoded below, before anything is delivered into it again
        if self.cfg.keep:
            self.raw_kept.append(buf.tobytes())
        first_seq = self._chunk_seq
        self._cfill = 0
        self._chunk_count = 0
        self._chunk_seq = self.expected
        cols = {
            "mtype": np.empty(n, np.uint8), "locate": np.zeros(n, np.uint16), "ts": np.zeros(n, np.uint64),
            "ref": np.zeros(n, np.uint64), "ref2": np.zeros(n, np.uint64), "side": np.zeros(n, np.uint8),
            "shares": np.zeros(n, np.uint32), "price": np.zeros(n, np.uint32), "match": np.zeros(n, np.uint64),
            "code": np.zeros(n, np.uint8), "moff": np.empty(n, np.int64),
        }  # fmt: skip
        bad = _decode(
            buf,
            n,
            _SIZE_TABLE,
            cols["mtype"],
            cols["locate"],
            cols["ts"],
            cols["ref"],
            cols["ref2"],
            cols["side"],
            cols["shares"],
            cols["price"],
            cols["match"],
            cols["code"],
            cols["moff"],
        )
        st = self.stats
        st.bad_messages += int(bad)
        st.messages += n
        mtype = cols["mtype"]
        counts = np.bincount(mtype, minlength=256)
        for t in np.flatnonzero(counts):
            name = NAMES.get(int(t), "MALFORMED" if t == 0 else f"TYPE_{chr(int(t))}")
            st.by_type[name] = st.by_type.get(name, 0) + int(counts[t])
        for i in np.flatnonzero(mtype == _R):
            p = int(cols["moff"][i])
            self.stocks[int(cols["locate"][i])] = (
                buf[p + 11 : p + 19].tobytes().decode("ascii", "replace").strip()
            )
        seqs = np.arange(first_seq, first_seq + n, dtype=np.uint64)
        self._lines: list[tuple[int, int, str]] = []
        if self.cfg.print_messages:
            self._print(buf, cols, seqs)
        self._apply(cols, seqs)
        if self._lines:
            self._lines.sort(key=lambda x: (x[0], x[1]))  # a message, then the BBO change it caused
            self.out.write("".join(line for _s, _k, line in self._lines))
            self._lines = []
        if self.cfg.keep:
            self.messages_kept.append({**{k: v for k, v in cols.items() if k != "moff"}, "seq": seqs})

    def _apply(self, cols: dict[str, np.ndarray], seqs: np.ndarray) -> None:
        mtype = cols["mtype"]
        n = len(mtype)
        self._reserve(n)
        out = {
            "ts": np.empty(2 * n, np.uint64), "type": np.empty(2 * n, np.uint8), "side": np.empty(2 * n, np.uint8),
            "price": np.empty(2 * n, np.int32), "qty": np.empty(2 * n, np.uint32), "id": np.empty(2 * n, np.uint64),
            "loc": np.empty(2 * n, np.uint16), "msg": np.empty(2 * n, np.int64),
        }  # fmt: skip
        errors = np.zeros(n, np.uint8)
        k = _to_records(
            mtype,
            cols["locate"],
            cols["ts"],
            cols["ref"],
            cols["ref2"],
            cols["side"],
            cols["shares"],
            cols["price"],
            np.int64(self.cfg.tick_size),
            self._keys,
            self._t_side,
            self._t_price,
            self._t_shares,
            self._t_loc,
            self._shift,
            self._mask,
            self._live,
            out["ts"],
            out["type"],
            out["side"],
            out["price"],
            out["qty"],
            out["id"],
            out["loc"],
            out["msg"],
            errors,
        )
        self.stats.book_errors += int(np.count_nonzero(errors))
        if k == 0:
            return
        recs = np.empty(k, RECORD_DTYPE)
        recs["ts_ns"] = out["ts"][:k]
        recs["type"] = out["type"][:k]
        recs["side"] = out["side"][:k]
        recs["price_ticks"] = out["price"][:k]
        recs["qty"] = out["qty"][:k]
        recs["order_id"] = out["id"][:k]
        loc = out["loc"][:k]
        rseq = seqs[out["msg"][:k]]
        if self.cfg.keep:
            self.kept.append((recs, loc, rseq))
        for locate in np.unique(loc):
            locate = int(locate)
            sel = np.flatnonzero(loc == locate)
            book = self.books.get(locate)
            if book is None:
                book = self.books[locate] = OrderBook()
            states = book.apply(recs[sel], strict=False)
            self.stats.book_errors += int(np.count_nonzero(states.flags & 0x3F))
            if self.cfg.book:
                self._print_bbo(locate, states, rseq[sel])

    # -- output --------------------------------------------------------------
    def _stock(self, locate: int) -> str:
        return self.stocks.get(locate, f"#{locate}")

    def _px(self, ticks: int) -> str:
        return "-" if ticks == NO_PRICE else _price(ticks * self.cfg.tick_size)

    def _print_bbo(self, locate: int, states, seqs: np.ndarray) -> None:
        cur = np.stack(
            [
                states.bid_price.astype(np.int64),
                states.bid_qty,
                states.ask_price.astype(np.int64),
                states.ask_qty,
            ],
            axis=1,
        )
        prev = np.empty_like(cur)
        prev[1:] = cur[:-1]
        prev[0] = self._last_bbo.get(locate, (NO_PRICE - 1, -1, NO_PRICE - 1, -1))
        changed = np.flatnonzero(np.any(cur != prev, axis=1))
        stock = self._stock(locate)
        lines = self._lines
        for i in changed:
            bp, bq, ap, aq = (int(x) for x in cur[i])
            s = int(seqs[i])
            lines.append(
                (s, 1, f"[seq={s}] BBO stock={stock} bid={self._px(bp)}x{bq} ask={self._px(ap)}x{aq}\n")
            )
        self._last_bbo[locate] = tuple(int(x) for x in cur[-1])

    def _print(self, buf: np.ndarray, cols: dict[str, np.ndarray], seqs: np.ndarray) -> None:
        lines = self._lines
        mtype, loc, ref, side, shares = (
            cols["mtype"],
            cols["locate"],
            cols["ref"],
            cols["side"],
            cols["shares"],
        )
        price, match, code, moff = cols["price"], cols["match"], cols["code"], cols["moff"]
        for i in range(len(mtype)):
            t = int(mtype[i])
            s = int(seqs[i])
            if t in (_A, _F):
                p = int(moff[i])
                stock = buf[p + 24 : p + 32].tobytes().decode("ascii", "replace").strip()
                lines.append(
                    (
                        s,
                        0,
                        f"[seq={s}] {NAMES[t]} ref={int(ref[i])} side={chr(int(side[i]))} shares={int(shares[i])} "
                        f"stock={stock} price={_price(int(price[i]))}\n",
                    )
                )
            elif t == _D:
                lines.append(
                    (s, 0, f"[seq={s}] ORDER_DELETE ref={int(ref[i])} stock={self._stock(int(loc[i]))}\n")
                )
            elif t == _E:
                lines.append(
                    (
                        s,
                        0,
                        f"[seq={s}] ORDER_EXECUTED ref={int(ref[i])} shares={int(shares[i])} match={int(match[i])} "
                        f"stock={self._stock(int(loc[i]))}\n",
                    )
                )
            elif t == _S:
                c = bytes([int(code[i])])
                lines.append(
                    (
                        s,
                        0,
                        f"[seq={s}] SYSTEM_EVENT code={c.decode('ascii', 'replace')} "
                        f"({EVENT_CODE_NAMES.get(c, 'unknown')})\n",
                    )
                )
            elif t == _R:
                lines.append(
                    (
                        s,
                        0,
                        f"[seq={s}] STOCK_DIRECTORY locate={int(loc[i])} stock={self._stock(int(loc[i]))}\n",
                    )
                )
            elif t == _X:
                lines.append(
                    (
                        s,
                        0,
                        f"[seq={s}] ORDER_CANCEL ref={int(ref[i])} shares={int(shares[i])} "
                        f"stock={self._stock(int(loc[i]))}\n",
                    )
                )
            elif t == _C:
                lines.append(
                    (
                        s,
                        0,
                        f"[seq={s}] ORDER_EXECUTED_WITH_PRICE ref={int(ref[i])} shares={int(shares[i])} "
                        f"match={int(match[i])} price={_price(int(price[i]))} stock={self._stock(int(loc[i]))}\n",
                    )
                )
            elif t == _U:
                lines.append(
                    (
                        s,
                        0,
                        f"[seq={s}] ORDER_REPLACE ref={int(ref[i])} new_ref={int(cols['ref2'][i])} "
                        f"shares={int(shares[i])} price={_price(int(price[i]))} stock={self._stock(int(loc[i]))}\n",
                    )
                )
            elif t == 0:
                lines.append((s, 0, f"[seq={s}] MALFORMED\n"))
            else:
                lines.append((s, 0, f"[seq={s}] {chr(t)} (not decoded)\n"))

    def summary(self) -> dict[str, Any]:
        books = {}
        for locate, book in sorted(self.books.items()):
            books[self._stock(locate)] = {
                "bid": self._px(book.best_bid), "bid_qty": book.best_bid_qty,
                "ask": self._px(book.best_ask), "ask_qty": book.best_ask_qty, "orders": book.orders,
            }  # fmt: skip
        elapsed = (self.t_last - self.t_first) if self.t_first is not None else 0.0
        return {
            "session": self.session.decode("ascii", "replace") if self.session else None,
            "complete": self.complete,
            "next_seq": self.expected,
            "end_of_session_seq": self.eos_seq,
            "elapsed_s": round(elapsed, 3),
            "msgs_per_s": round(self.stats.messages / elapsed) if elapsed > 0 else None,
            "rcvbuf_bytes": self.rcvbuf,
            **self.stats.to_dict(),
            "books": books,
        }

    # -- main loop -----------------------------------------------------------
    def open(self) -> None:
        c = self.cfg
        self.sock = open_receiver(
            c.multicast_group, c.port, interface=c.interface, unicast=c.unicast, rcvbuf=RCVBUF
        )
        self.sock.setblocking(False)
        self.rcvbuf = self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
        if self.rcvbuf < RCVBUF:  # Linux reports twice what it grants; without CAP_NET_ADMIN rmem_max caps it
            self.err.write(
                f"itch-listen: socket receive buffer is {self.rcvbuf >> 20} MiB (asked for {RCVBUF >> 20} MiB; "
                f"raise net.core.rmem_max): bursts beyond it are lost and must be re-requested\n"
            )
        if mmsg_available():
            self._rx = BatchReceiver(self.sock)
        _warm_up()
        self.req_sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_UDP)
        self.req_sock.bind(
            ("127.0.0.1" if c.retransmit and c.retransmit[0].startswith("127.") else "0.0.0.0", 0)
        )
        try:
            self.req_sock.setsockopt(socket.SOL_SOCKET, 33, 16 << 20)  # SO_RCVBUFFORCE
        except OSError:
            self.req_sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 << 20)
        self.req_sock.setblocking(False)

    def close(self) -> None:
        for s in (self.sock, self.req_sock):
            if s is not None:
                s.close()

    def run(self, stop: Any = None) -> dict[str, Any]:
        """Receive until the session is complete (or a timeout); returns :meth:`summary`."""
        if self.sock is None:
            self.open()
        socks = [self.sock, self.req_sock]
        start = last_rx = time.monotonic()
        next_stats = start + self.cfg.stats_interval
        stats_msgs = 0
        try:
            while True:
                now = time.monotonic()
                if self.complete:
                    break
                if stop is not None and stop.is_set():
                    break
                if self.cfg.max_runtime and now - start > self.cfg.max_runtime:
                    self.err.write("itch-listen: max runtime reached\n")
                    break
                if self.cfg.idle_timeout and now - last_rx > self.cfg.idle_timeout:
                    self.err.write(f"itch-listen: nothing received for {self.cfg.idle_timeout:.0f} s\n")
                    break
                timeout = 0.005 if self._gap_open else 0.1
                ready, _, _ = select.select(socks, [], [], timeout)
                for s in ready:
                    if s is self.sock and self._rx is not None:
                        self._receive_batches()
                        last_rx = time.monotonic()
                        continue
                    retrans = s is self.req_sock
                    for _ in range(256):
                        try:
                            data = s.recv(65536)
                        except (BlockingIOError, InterruptedError):
                            break
                        except OSError:
                            break
                        self.handle_packet(data, retrans)
                    last_rx = time.monotonic()
                now = time.monotonic()
                self._service_gap(now)
                if self.cfg.stats and now >= next_stats:
                    self.flush()
                    rate = (self.stats.messages - stats_msgs) / self.cfg.stats_interval
                    stats_msgs = self.stats.messages
                    st = self.stats
                    self.err.write(
                        f"itch-listen: {rate:,.0f} msg/s total={st.messages:,} gaps={st.gaps} "
                        f"recovered={st.recovered} unrecovered={st.unrecovered} dup={st.duplicates} "
                        f"malformed={st.malformed_packets}\n"
                    )
                    next_stats = now + self.cfg.stats_interval
                elif self._chunk_count and not ready:
                    self.flush()  # idle: decode what is there
        finally:
            self.flush()
            self.close()
            self.done = True
        return self.summary()

    def _receive_batches(self, rounds: int = 4) -> None:
        """Up to ``rounds`` recvmmsg batches of what is waiting on the feed socket."""
        rx = self._rx
        for _ in range(rounds):
            n = rx.receive()
            if n == 0:
                return
            self.handle_batch(rx.slab, rx.slot_size, rx.lengths, n)
            if n < rx.slots:
                return

    # -- results (tests) -----------------------------------------------------
    def records(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(records, locate, seq) of every order-book record built so far (``keep=True``)."""
        if not self.kept:
            return np.empty(0, RECORD_DTYPE), np.empty(0, np.uint16), np.empty(0, np.uint64)
        return tuple(np.concatenate([k[j] for k in self.kept]) for j in range(3))  # type: ignore[return-value]

    def messages(self) -> dict[str, np.ndarray]:
        """Every decoded message's columns (``keep=True``)."""
        if not self.messages_kept:
            return {}
        return {k: np.concatenate([m[k] for m in self.messages_kept]) for k in self.messages_kept[0]}
