"""MoldUDP64 re-request server: answers (session, sequence, count) from a bounded buffer.

The streamer keeps every message it sends in :class:`RetransmitBuffer` (the framed bytes of
whole send batches, oldest evicted first once more than ``capacity`` messages are held). The
:class:`RetransmitServer` thread listens on UDP (default port 5002) for 20-byte request packets
and answers each with ordinary downstream packets, unicast to the requester's address, carrying
the requested messages from ``sequence`` on -- never more than were asked for, and at most
``Limits.max_messages`` per request (a listener asks again for the rest).

It cannot be turned into a reflection amplifier (docs/itch-feed.md, "Retransmission"): the source
address of a UDP request can be forged, so every answer is paid for from token buckets -- per
requester address (requests per second and answer bytes per second) and for the server as a whole
(answer bytes per second). An answer the buckets cannot pay in full is cut to what they can (still
a prefix of what was asked), one they cannot pay at all is refused. Whatever the rate of forged
requests, an address receives at most ``per_requester_bytes_s`` and the server sends at most
``total_bytes_s``. Requests for sessions it does not hold, for ranges outside what it holds, and
malformed requests are refused. Every refusal is counted by reason; nothing is sent for it.
"""

from __future__ import annotations

import bisect
import collections
import logging
import socket
import threading
import time
from dataclasses import dataclass, field

from qrsdp_sim.itch import moldudp64 as mold
from qrsdp_sim.itch.encoder import Framed

log = logging.getLogger(__name__)

DEFAULT_CAPACITY = 4_000_000  # messages (a full simulated session is ~1.6 M)


@dataclass
class _Session:
    starts: list[int] = field(default_factory=list)  # first sequence number of each block
    blocks: list[Framed] = field(default_factory=list)


class RetransmitBuffer:
    """The most recent ``capacity`` messages sent, per session, as framed blocks."""

    def __init__(self, capacity: int = DEFAULT_CAPACITY) -> None:
        self.capacity = int(capacity)
        self._sessions: dict[bytes, _Session] = {}
        self._order: list[tuple[bytes, int]] = []  # (session, count) per block, oldest first
        self._held = 0
        self._lock = threading.Lock()

    @property
    def held(self) -> int:
        return self._held

    def add(self, session: bytes, first_seq: int, framed: Framed) -> None:
        if framed.count == 0:
            return
        with self._lock:
            s = self._sessions.setdefault(session, _Session())
            if s.starts and first_seq < s.starts[-1] + s.blocks[-1].count:
                # a re-send after a restart: keep the original block, drop the overlap
                end = s.starts[-1] + s.blocks[-1].count
                skip = end - first_seq
                if skip >= framed.count:
                    return
                framed = framed[skip:]
                first_seq = end
            s.starts.append(first_seq)
            s.blocks.append(framed)
            self._order.append((session, framed.count))
            self._held += framed.count
            while self._held > self.capacity and len(self._order) > 1:
                old_session, count = self._order.pop(0)
                old = self._sessions[old_session]
                old.starts.pop(0)
                old.blocks.pop(0)
                self._held -= count
                if not old.blocks:
                    del self._sessions[old_session]

    def range(self, session: bytes) -> tuple[int, int] | None:
        """(first, one past last) sequence numbers held for ``session``."""
        with self._lock:
            s = self._sessions.get(session)
            if not s or not s.blocks:
                return None
            return s.starts[0], s.starts[-1] + s.blocks[-1].count

    def packets(self, session: bytes, seq: int, count: int, max_packet: int = mold.DEFAULT_MAX_PACKET,
                max_messages: int = 4096) -> list[tuple[bytes, memoryview]]:
        """Downstream packets (header, body) carrying messages ``seq`` .. ``seq + count - 1`` held."""
        out: list[tuple[bytes, memoryview]] = []
        want = min(count, max_messages)
        with self._lock:
            s = self._sessions.get(session)
            if not s or not s.blocks or want <= 0:
                return out
            k = bisect.bisect_right(s.starts, seq) - 1
            if k < 0:
                return out
            while want > 0 and k < len(s.blocks):
                block, start = s.blocks[k], s.starts[k]
                lo = seq - start
                if lo >= block.count:
                    break
                hi = min(block.count, lo + want)
                part = block[lo:hi]
                bounds = mold.packet_bounds(part, max_packet)
                for j in range(len(bounds) - 1):
                    a, b = int(bounds[j]), int(bounds[j + 1])
                    body = memoryview(part.data)[int(part.offsets[a]) : int(part.offsets[b])]
                    out.append((mold.header(session, seq + a, b - a), body))
                got = hi - lo
                seq += got
                want -= got
                k += 1
        return out


@dataclass(frozen=True)
class Limits:
    """What the re-request server answers at most (see the module docstring)."""

    max_messages: int = 4096  # per request
    per_requester_requests_s: float = 1000.0  # refill rate; the bucket holds one second's worth
    per_requester_bytes_s: float = 16 * 2**20  # answer bytes per second to one address (burst: one second's)
    total_bytes_s: float = 64 * 2**20  # answer bytes per second to everyone together
    max_requesters: int = 4096  # addresses tracked (least recently seen forgotten first)

    def __post_init__(self) -> None:
        if self.max_messages < 1 or self.max_requesters < 1:
            raise ValueError("retransmission limits must be >= 1")
        if not (self.per_requester_requests_s > 0 and self.per_requester_bytes_s > 0 and self.total_bytes_s > 0):
            raise ValueError("retransmission rates must be > 0")


class _Bucket:
    """Token bucket: ``rate`` tokens per second, at most ``rate`` held (one second's burst)."""

    __slots__ = ("at", "rate", "tokens")

    def __init__(self, rate: float, now: float) -> None:
        self.rate = rate
        self.tokens = rate
        self.at = now

    def refill(self, now: float) -> float:
        self.tokens = min(self.rate, self.tokens + (now - self.at) * self.rate)
        self.at = now
        return self.tokens


@dataclass
class ServerCounters:
    requests: int = 0  # well-formed requests received
    answered: int = 0  # requests answered (in full or cut by a limit)
    messages_sent: int = 0
    bytes_sent: int = 0
    malformed: int = 0  # not 20 bytes, or a count of 0 / 0xFFFF
    unknown_session: int = 0  # a session the server holds nothing of
    out_of_range: int = 0  # a range starting outside what is held (evicted, or not sent yet)
    rate_limited: int = 0  # refused: the requester or the server spent its budget
    cut_by_limit: int = 0  # answered with fewer messages than asked because of the byte budgets

    def to_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


class RetransmitServer:
    """UDP re-request server thread around a :class:`RetransmitBuffer`."""

    def __init__(self, buffer: RetransmitBuffer, host: str = "127.0.0.1", port: int = 5002,
                 max_packet: int = mold.DEFAULT_MAX_PACKET, limits: Limits | None = None) -> None:
        self.buffer = buffer
        self.max_packet = max_packet
        self.limits = limits or Limits()
        self.counters = ServerCounters()
        self._requesters: collections.OrderedDict[str, tuple[_Bucket, _Bucket]] = collections.OrderedDict()
        self._total: _Bucket | None = None
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_UDP)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, port))
        self.sock.settimeout(0.2)
        self.address = self.sock.getsockname()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="itch-retransmit", daemon=True)

    def start(self) -> RetransmitServer:
        self._thread.start()
        return self

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                data, addr = self.sock.recvfrom(2048)
            except TimeoutError:
                continue
            except OSError:
                if self._stop.is_set():
                    return
                continue
            try:
                self.handle(data, addr)
            except Exception:  # never let one request kill the server
                log.exception("retransmission request from %s failed", addr)

    @property
    def messages_sent(self) -> int:
        return self.counters.messages_sent

    def _budgets(self, host: str, now: float) -> tuple[_Bucket, _Bucket, _Bucket]:
        lim = self.limits
        if self._total is None:
            self._total = _Bucket(lim.total_bytes_s, now)
        pair = self._requesters.get(host)
        if pair is None:
            pair = (_Bucket(lim.per_requester_requests_s, now), _Bucket(lim.per_requester_bytes_s, now))
            self._requesters[host] = pair
            while len(self._requesters) > lim.max_requesters:
                self._requesters.popitem(last=False)
        else:
            self._requesters.move_to_end(host)
        return pair[0], pair[1], self._total

    def handle(self, data: bytes, addr: tuple[str, int], now: float | None = None) -> int:
        """Answer one request (or refuse it, counted); returns the number of messages sent back."""
        c = self.counters
        if len(data) != mold.HEADER_SIZE:
            c.malformed += 1
            return 0
        session, seq, count = mold.REQUEST.unpack(data)
        if count == 0 or count == mold.END_OF_SESSION_COUNT:
            c.malformed += 1
            return 0
        c.requests += 1
        now = time.monotonic() if now is None else now
        req_bucket, bytes_bucket, total = self._budgets(addr[0], now)
        if req_bucket.refill(now) < 1.0:
            c.rate_limited += 1
            return 0
        req_bucket.tokens -= 1.0
        held = self.buffer.range(session)
        if held is None:
            c.unknown_session += 1
            return 0
        if not held[0] <= seq < held[1]:
            c.out_of_range += 1
            return 0
        want = min(count, self.limits.max_messages)
        packets = self.buffer.packets(session, seq, want, self.max_packet, self.limits.max_messages)
        budget = min(bytes_bucket.refill(now), total.refill(now))
        spent = 0
        sent = 0
        for head, body in packets:
            size = len(head) + len(body)
            if spent + size > budget:
                break
            try:
                self.sock.sendmsg([head, body], [], 0, addr)
            except OSError:
                break
            spent += size
            sent += int.from_bytes(head[18:20], "big")
        bytes_bucket.tokens -= spent
        total.tokens -= spent
        if sent == 0:
            c.rate_limited += 1
            return 0
        if sent < sum(int.from_bytes(h[18:20], "big") for h, _b in packets):
            c.cut_by_limit += 1
        c.answered += 1
        c.messages_sent += sent
        c.bytes_sent += spent
        return sent

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(2.0)
        self.sock.close()
