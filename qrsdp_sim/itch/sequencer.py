"""MoldUDP64 sequencing for the listener: which session to follow, in-order delivery, reordering,
duplicates and gap recovery. Every datagram is untrusted (UDP has no authentication); no socket here.

* **Session.** ``--session`` pins it. Otherwise the listener follows the first session of which it
  has seen ``CONFIRM_PACKETS`` well-formed data or heartbeat packets (at most ``MAX_CANDIDATES``
  sessions are tracked meanwhile, their packets kept and replayed once one is chosen), so one stray
  packet of another session cannot capture it. End-of-session packets never start a session.
* **Plausibility window.** A packet whose sequence number lies more than ``max_ahead`` messages past
  the next expected one is counted (``implausible_seq``) and dropped -- whatever it is (data,
  heartbeat, end of session). A listener joining a session that is already further ahead than that
  re-anchors: once ``REANCHOR_CHAIN`` such data packets arrived, each continuing the previous, and no
  plausible packet came for ``gap_timeout`` seconds, it gives up what lies before the newest of them
  (``reanchors``).
* **Reordering** is bounded: packets above the next expected sequence number wait in a store of at
  most ``max_pending_bytes`` (each counted with ``ENTRY_OVERHEAD`` bytes more for its Python objects);
  when full, the packets furthest ahead are dropped (``pending_dropped``) -- they are requested again
  later like any gap. The scan for missing ranges runs every 5 ms, less often when the store is large.
* **Gaps.** A missing range is re-requested (each at most every ``gap_retry`` s). It is given up when
  the session has made no progress for ``gap_timeout`` s (the clock restarts whenever a message is
  delivered, so data still flowing is never skipped) -- and the listener only ever skips to data it
  holds and believes: a stored packet that starts a run of ``BACKING_CHAIN`` contiguous stored packets,
  or one a heartbeat or the session's end announced messages past. A lone stored packet nothing backs is dropped instead, as is a higher sequence
  number announced only by heartbeats (both counted as ``unconfirmed_claims``).
* **End of session.** An end-of-session packet below what was already delivered is ignored, one that
  data is delivered past is discarded (``eos_conflicts``); stored packets beyond it are dropped.

Limits (documented in docs/itch-feed.md): a spoofer who sees the feed can still disturb a session --
e.g. end it early with a forged end-of-session packet at a packet boundary, or capture an unpinned
listener before the real feed starts -- MoldUDP64 carries no authentication. What no packet can do
is make the listener raise, grow its memory without bound, or discard the real sequence.
"""

from __future__ import annotations

import collections
import heapq
import time
from collections.abc import Callable
from typing import IO

import numpy as np

from qrsdp_sim.itch import moldudp64 as mold
from qrsdp_sim.itch.decoder import blocks, in_order_packets
from qrsdp_sim.itch.listen_stats import Stats

CONFIRM_PACKETS = 2
MAX_CANDIDATES = 16
REANCHOR_CHAIN = 32
BACKING_CHAIN = 4  # stored packets in a row that make a packet after a given-up gap believable
DEFAULT_MAX_AHEAD = 1 << 22  # messages (the streamer's re-request buffer holds 4 M by default)
DEFAULT_MAX_PENDING_BYTES = 64 << 20
HOLES_PER_SCAN = 64
ENTRY_OVERHEAD = 256  # bytes a stored packet costs beyond its data (Python objects, block offsets, heaps)
_FAST_LIMIT = 1 << 62  # beyond this the compiled pass's int64 sequence numbers are not used


class Chunk:
    """Delivered, not yet decoded message blocks: ``buf[:fill]``, ``count`` messages from ``first_seq``
    (room for one more datagram past ``limit``)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.buf = np.empty(limit + 65536, np.uint8)
        self.fill = 0
        self.count = 0
        self.first_seq = 1

    @property
    def full(self) -> bool:
        return self.fill >= self.limit

    def add(self, body: np.ndarray, n: int, first_seq: int) -> None:
        if self.count == 0:
            self.first_seq = first_seq
        self.buf[self.fill : self.fill + len(body)] = body
        self.fill += len(body)
        self.count += n

    def take(self) -> tuple[np.ndarray, int, int]:
        """(buffer view, messages, first sequence number); the chunk is empty afterwards. The view stays
        valid until the next ``add``."""
        out = (self.buf[: self.fill], self.count, self.first_seq)
        self.fill = 0
        self.count = 0
        return out


Request = Callable[[bytes, int, int], None]


class Sequencer:
    def __init__(
        self,
        stats: Stats,
        chunk: Chunk,
        flush: Callable[[], None],
        *,
        session: bytes | None = None,
        request: Request | None = None,
        gap_retry: float = 0.05,
        gap_timeout: float = 10.0,
        request_max: int = 2048,
        max_ahead: int = DEFAULT_MAX_AHEAD,
        max_pending_bytes: int = DEFAULT_MAX_PENDING_BYTES,
        err: IO[str] | None = None,
    ) -> None:
        self.stats = stats
        self.chunk = chunk
        self._flush = flush  # decode what the chunk holds (called when it is full, and before a skip)
        self.session = session
        self.request = request
        self.gap_retry = gap_retry
        self.gap_timeout = gap_timeout
        self.request_max = request_max
        self.max_ahead = max_ahead
        self.max_pending_bytes = max_pending_bytes
        self.err = err
        self.expected = 1
        self.claim = 1  # one past the highest sequence number heartbeats announced
        self.eos_seq: int | None = None
        self._candidates: collections.OrderedDict[bytes, list[tuple[bytes, bool]]] = collections.OrderedDict()
        self._pending: dict[int, tuple[int, bytes, np.ndarray]] = {}  # seq -> (count, packet, block offsets)
        self._heap: list[int] = []  # pending seqs, lowest first (lazy: may hold removed ones)
        self._max_heap: list[int] = []  # negated pending seqs (lazy)
        self._pending_bytes = 0
        self._holes: dict[int, list[float]] = {}  # end of a missing range -> [first seen, last requested]
        self._next_scan = 0.0
        self._last_plausible = time.monotonic()
        self._progress_at = self._last_plausible  # when ``expected`` last moved
        self._far_next = -1
        self._far_first = 0
        self._far_chain = 0
        self._far_last: tuple[int, int, bytes, np.ndarray] | None = None
        self._session_arr = np.zeros(10, np.uint8)
        self._session_key: bytes | None = None

    # -- state ----------------------------------------------------------------
    @property
    def high(self) -> int:
        """One past the highest sequence number known to exist."""
        if self.eos_seq is not None:
            return self.eos_seq
        return max(self.expected, self.claim, self._pending_high())

    @property
    def gap_open(self) -> bool:
        return self.expected < self.high

    @property
    def complete(self) -> bool:
        return self.eos_seq is not None and self.expected >= self.eos_seq

    @property
    def pending(self) -> int:
        return len(self._pending)

    def _say(self, text: str) -> None:
        if self.err is not None:
            self.err.write(f"itch-listen: {text}\n")

    def _beyond(self, seq: int) -> bool:
        return seq > self.expected + self.max_ahead

    # -- datagrams ------------------------------------------------------------
    def packet(self, data: bytes, retransmission: bool = False, now: float | None = None) -> None:
        """Process one datagram. Never raises on bad input: it is counted and dropped."""
        now = time.monotonic() if now is None else now
        st = self.stats
        st.packets += 1
        st.bytes += len(data)
        try:
            if len(data) < mold.HEADER_SIZE:
                st.malformed_packets += 1
                return
            session, seq, count = mold.HEADER.unpack_from(data)
            if self.session is None:
                self._candidate(session, seq, count, data, retransmission, now)
            elif session != self.session:
                st.other_session += 1
            else:
                self._follow(seq, count, data, retransmission, now)
        except (ValueError, IndexError, OverflowError):
            st.malformed_packets += 1

    def _well_formed(self, seq: int, count: int, data: bytes) -> np.ndarray | None:
        """The block offsets of a data packet (an empty array for a heartbeat / end of session), or
        None (counted malformed) when the packet does not add up."""
        if seq == 0:
            self.stats.malformed_packets += 1
            return None
        if count in (mold.HEARTBEAT_COUNT, mold.END_OF_SESSION_COUNT):
            if len(data) != mold.HEADER_SIZE:
                self.stats.malformed_packets += 1
                return None
            return np.empty(0, np.int64)
        offs = blocks(np.frombuffer(data, np.uint8), mold.HEADER_SIZE, len(data), count)
        if len(offs) == 0:
            self.stats.malformed_packets += 1
            return None
        return offs

    def _candidate(self, session: bytes, seq: int, count: int, data: bytes, retrans: bool, now: float) -> None:
        """Before a session is chosen: keep the packet; follow its session once it has enough."""
        if count == mold.END_OF_SESSION_COUNT:
            return  # never follow a session that is already over
        if self._well_formed(seq, count, data) is None:
            return
        got = self._candidates.get(session)
        if got is None:
            got = self._candidates[session] = []
            while len(self._candidates) > MAX_CANDIDATES:
                self._candidates.popitem(last=False)
        else:
            self._candidates.move_to_end(session)
        got.append((data, retrans))
        if len(got) < CONFIRM_PACKETS:
            return
        self.session = session
        self._candidates.clear()
        for pkt, r in got:
            _s, sq, cnt = mold.HEADER.unpack_from(pkt)
            self._follow(sq, cnt, pkt, r, now)

    def _follow(self, seq: int, count: int, data: bytes, retrans: bool, now: float) -> None:
        st = self.stats
        offs = self._well_formed(seq, count, data)
        if offs is None:
            return
        if count == mold.END_OF_SESSION_COUNT:
            st.eos_packets += 1
            self._end_of_session(seq, now)
            return
        if count == mold.HEARTBEAT_COUNT:
            st.heartbeats += 1
            if self._beyond(seq):
                st.implausible_seq += 1
                return
            self._last_plausible = now
            self.claim = max(self.claim, seq)
            return
        end = seq + count
        if end <= self.expected:
            st.duplicates += count
            return
        if self._beyond(seq):
            self._far(seq, count, data, offs, now)
            return
        self._last_plausible = now
        if seq > self.expected:
            self._store(seq, count, data, offs)
            return
        self._deliver(seq, count, data, offs, retrans)
        self._drain()

    def _end_of_session(self, seq: int, now: float) -> None:
        st = self.stats
        if seq < self.expected:
            st.eos_conflicts += 1  # messages at and after it were delivered already
            return
        if self._beyond(seq):
            st.implausible_seq += 1
            return
        self._last_plausible = now
        self.eos_seq = seq
        while True:  # nothing of the session lies beyond its end: stored packets past it go
            top = self._peek_max()
            if top is None or top + self._pending[top][0] <= seq:
                break
            self._evict(top)
            st.pending_dropped += 1

    def _far(self, seq: int, count: int, data: bytes, offs: np.ndarray, now: float) -> None:
        """A data packet beyond the plausibility window: dropped -- but a long chain of them, each
        continuing the previous, is remembered (:meth:`service` may re-anchor on it)."""
        self.stats.implausible_seq += 1
        if seq == self._far_next:
            self._far_chain += 1
        else:
            self._far_chain = 1
            self._far_first = seq
        self._far_next = seq + count
        self._far_last = (seq, count, data, offs)

    def _reanchor(self, now: float) -> None:
        """The session is far ahead of the listener (it joined late, or was cut off long): when a chain of
        ``REANCHOR_CHAIN`` packets came and nothing plausible for ``gap_timeout`` s, give up everything
        before the chain's newest packet and follow the session from there."""
        seq, count, data, offs = self._far_last
        skipped = seq - self.expected
        self._say(f"re-anchoring at sequence number {seq}: the session is {skipped:,} messages ahead "
                  f"(giving up {self.expected}..{seq - 1})")
        self.stats.reanchors += 1
        self.stats.unrecovered += skipped
        self._far_chain = 0
        self._far_last = None
        self._last_plausible = now
        self._skip_to(seq)
        self._deliver(seq, count, data, offs, False)
        self._drain()

    # -- the reorder store ------------------------------------------------------
    def _peek_max(self) -> int | None:
        h = self._max_heap
        while h and -h[0] not in self._pending:
            heapq.heappop(h)
        return -h[0] if h else None

    def _pending_high(self) -> int:
        top = self._peek_max()
        return top + self._pending[top][0] if top is not None else 0

    def _evict(self, seq: int) -> None:
        _count, data, _offs = self._pending.pop(seq)
        self._pending_bytes -= len(data) + ENTRY_OVERHEAD

    def _store(self, seq: int, count: int, data: bytes, offs: np.ndarray) -> None:
        st = self.stats
        if seq in self._pending:
            st.duplicates += count
            return
        if self.eos_seq is not None and seq + count > self.eos_seq:
            st.pending_dropped += 1  # past the end of the session
            return
        size = len(data) + ENTRY_OVERHEAD
        while self._pending_bytes + size > self.max_pending_bytes:
            top = self._peek_max()
            if top is None or top < seq:
                st.pending_dropped += 1  # the furthest ahead: requested again later like any gap
                return
            self._evict(top)
            st.pending_dropped += 1
        self._pending[seq] = (count, data, offs)
        self._pending_bytes += size
        heapq.heappush(self._heap, seq)
        heapq.heappush(self._max_heap, -seq)

    def _deliver(self, seq: int, count: int, data: bytes, offs: np.ndarray, retrans: bool) -> None:
        skip = self.expected - seq
        if skip:
            self.stats.duplicates += skip
        lo = int(offs[skip])
        n = count - skip
        self.chunk.add(np.frombuffer(data, np.uint8, len(data) - lo, lo), n, self.expected)
        self.expected += n
        self._progress_at = time.monotonic()
        if retrans:
            self.stats.retransmitted += n
        self._past_eos()
        if self.chunk.full:
            self._flush()

    def _past_eos(self) -> None:
        if self.eos_seq is not None and self.expected > self.eos_seq:
            self.eos_seq = None  # data continued past it: it was not the end
            self.stats.eos_conflicts += 1

    def _drain(self) -> None:
        heap = self._heap
        while heap and heap[0] <= self.expected:
            seq = heapq.heappop(heap)
            entry = self._pending.pop(seq, None)
            if entry is None:
                continue  # evicted earlier
            count, data, offs = entry
            self._pending_bytes -= len(data) + ENTRY_OVERHEAD
            if seq + count <= self.expected:
                self.stats.duplicates += count
                continue
            self._deliver(seq, count, data, offs, False)
        if len(heap) > 2 * len(self._pending) + 64:  # drop the evicted entries the lazy heaps still hold
            self._heap = sorted(self._pending)
            self._max_heap = sorted(-s for s in self._pending)
        if self._holes:
            for end in [e for e in self._holes if e <= self.expected]:
                del self._holes[end]
                self.stats.recovered += 1

    def _backed(self, seq: int) -> bool:
        """Whether the stored packet at ``seq`` is believable as the session's continuation: a run of
        ``BACKING_CHAIN`` stored packets, each continuing the previous, starts at it (the live feed
        keeps coming after a loss; stray packets line up that way only by design, not by chance), or a
        heartbeat or the end of session announced messages past the run's end."""
        nxt = seq
        for _ in range(BACKING_CHAIN):
            entry = self._pending.get(nxt)
            if entry is None:
                break
            nxt += entry[0]
            if self.claim > nxt or (self.eos_seq is not None and self.eos_seq >= nxt):
                return True
        else:
            return True
        return False

    def _skip_to(self, seq: int) -> None:
        """Move past messages that will never come (given up): what was delivered is decoded first."""
        self._flush()
        self.expected = seq
        self._progress_at = time.monotonic()
        self.claim = max(self.claim, seq)
        self._past_eos()
        self._drain()

    # -- many datagrams at once (recvmmsg) --------------------------------------
    def batch(self, slab: np.ndarray, slot_size: int, lengths: np.ndarray, n: int, now: float | None = None) -> None:
        """Datagrams ``0 .. n - 1`` of a receive slab: runs of in-order data packets of the followed session
        are delivered in one compiled pass, any other datagram goes through :meth:`packet` -- the outcome
        is the same as handling each datagram on its own."""
        now = time.monotonic() if now is None else now
        st = self.stats
        chunk = self.chunk
        i = 0
        while i < n:
            if self.session is not None and self.expected < _FAST_LIMIT:
                if chunk.full:
                    self._flush()
                if self._session_key != self.session:
                    self._session_arr = np.frombuffer(self.session, np.uint8).copy()
                    self._session_key = self.session
                j, expected, fill, msgs, nbytes = in_order_packets(
                    slab, slot_size, lengths, i, n, self._session_arr, self.expected, chunk.buf, chunk.fill,
                    chunk.limit)  # fmt: skip
                if j > i:
                    if chunk.count == 0:
                        chunk.first_seq = self.expected
                    st.packets += j - i
                    st.bytes += int(nbytes)
                    self.expected = int(expected)
                    chunk.fill = int(fill)
                    chunk.count += int(msgs)
                    self._last_plausible = self._progress_at = now
                    self._past_eos()
                    if self._heap or self._holes:
                        self._drain()
                    i = j
                    continue
                if chunk.full:
                    continue  # flushed at the top
            base = i * slot_size
            self.packet(slab[base : base + int(lengths[i])].tobytes(), False, now)
            i += 1
        if chunk.full:
            self._flush()

    # -- gap recovery -----------------------------------------------------------
    def _find_holes(self) -> list[tuple[int, int, str]]:
        """The first missing ranges [start, end): ``data`` before a stored packet, else the tail up to the
        session's end (``eos``) or up to what heartbeats announced (``claim``)."""
        holes: list[tuple[int, int, str]] = []
        cur = self.expected
        for start in sorted(self._pending):
            if start > cur:
                holes.append((cur, start, "data"))
                if len(holes) >= HOLES_PER_SCAN:
                    return holes
            cur = max(cur, start + self._pending[start][0])
        high = self.high
        if cur < high:
            holes.append((cur, high, "eos" if self.eos_seq is not None else "claim"))
        return holes

    def service(self, now: float) -> None:
        """Re-request every missing range (each at most every ``gap_retry`` s); give up old ones."""
        st = self.stats
        if self._far_chain >= REANCHOR_CHAIN and now - self._last_plausible >= self.gap_timeout:
            self._reanchor(now)
        if not self.gap_open:
            if self._holes:
                st.recovered += len(self._holes)
                self._holes.clear()
            return
        if now < self._next_scan:
            return
        t0 = time.perf_counter()
        found = self._find_holes()
        # every 5 ms, or less often when the store is large: scanning never takes more than a tenth of the time
        self._next_scan = now + max(min(0.005, self.gap_retry / 2), 10 * (time.perf_counter() - t0))
        ends = {end for _s, end, _k in found}
        for end in [e for e in self._holes if e not in ends]:
            del self._holes[end]  # changed shape (partly filled, or its stored packet was dropped)
        for start, end, kind in found:
            if end <= self.expected:
                continue  # filled meanwhile (an earlier hole was given up and the drain passed this one)
            start = max(start, self.expected)
            hole = self._holes.get(end)
            if hole is None:
                hole = self._holes[end] = [now, 0.0]
                st.gaps += 1
            if start == self.expected and now - max(hole[0], self._progress_at) > self.gap_timeout:
                del self._holes[end]
                if kind == "claim":
                    st.unconfirmed_claims += 1
                    self._say(f"no data ever came for messages {start}..{end - 1} that heartbeats announced: "
                              "dropping the claim")
                    self.claim = self.expected
                    continue
                if kind == "data" and not self._backed(end):
                    st.unconfirmed_claims += 1
                    self._say(f"a lone packet at {end} that nothing backs would skip messages {start}..{end - 1}: "
                              "dropping it")
                    self._evict(end)
                    continue
                st.unrecovered += end - start
                self._say(f"giving up messages {start}..{end - 1}")
                self._skip_to(end)
                continue
            if self.request is not None and now - hole[1] >= self.gap_retry:
                self.request(self.session, start, min(end - start, self.request_max))
                st.requests += 1
                hole[1] = now
