"""MoldUDP64 re-request server: answers (session, sequence, count) from a bounded buffer.

The streamer keeps every message it sends in :class:`RetransmitBuffer` (the framed bytes of
whole send batches, oldest evicted first once more than ``capacity`` messages are held). The
:class:`RetransmitServer` thread listens on UDP (default port 5002) for 20-byte request packets
and answers each with ordinary downstream packets, unicast to the requester's address, carrying
the requested messages from ``sequence`` on (at most ``max_messages`` per request; a listener asks
again for the rest). Requests for messages the buffer no longer (or not yet) holds, for unknown
sessions, and malformed requests get no answer and are counted.
"""

from __future__ import annotations

import bisect
import logging
import socket
import threading
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


class RetransmitServer:
    """UDP re-request server thread around a :class:`RetransmitBuffer`."""

    def __init__(self, buffer: RetransmitBuffer, host: str = "127.0.0.1", port: int = 5002,
                 max_packet: int = mold.DEFAULT_MAX_PACKET) -> None:
        self.buffer = buffer
        self.max_packet = max_packet
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_UDP)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, port))
        self.sock.settimeout(0.2)
        self.address = self.sock.getsockname()
        self.requests = 0
        self.malformed = 0
        self.unanswered = 0
        self.messages_sent = 0
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

    def handle(self, data: bytes, addr: tuple[str, int]) -> int:
        """Answer one request; returns the number of messages sent back."""
        if len(data) != mold.HEADER_SIZE:
            self.malformed += 1
            return 0
        session, seq, count = mold.REQUEST.unpack(data)
        self.requests += 1
        if count == 0 or count == mold.END_OF_SESSION_COUNT:
            self.malformed += 1
            return 0
        sent = 0
        for head, body in self.buffer.packets(session, seq, count, self.max_packet):
            try:
                self.sock.sendmsg([head, body], [], 0, addr)
            except OSError:
                break
            sent += int.from_bytes(head[18:20], "big")
        if not sent:
            self.unanswered += 1
        self.messages_sent += sent
        return sent

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(2.0)
        self.sock.close()
