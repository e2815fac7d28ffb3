"""MoldUDP64 framing: downstream packets, heartbeats, end of session, re-request packets.

Downstream packet (all integers big-endian)::

    offset 0   session          10 bytes ASCII
    offset 10  sequence number  u64   sequence number of the first message in the packet
                                      (heartbeat / end of session: the next sequence number)
    offset 18  message count    u16   0 = heartbeat, 0xFFFF = end of session
    offset 20  message blocks   count x (u16 length, message bytes)

Request packet (listener -> re-request server): session (10), sequence number (u64), requested
message count (u16) -- 20 bytes. The answer is ordinary downstream packets, sent unicast to the
requester's address.

Sequence numbers start at 1 for each session and number messages, not packets.
"""

from __future__ import annotations

import datetime as dt
import struct

import numpy as np
from numba import njit

from qrsdp_sim.itch.encoder import Framed

HEADER = struct.Struct(">10sQH")
HEADER_SIZE = HEADER.size  # 20
REQUEST = HEADER  # same layout: session, first sequence number, count
HEARTBEAT_COUNT = 0
END_OF_SESSION_COUNT = 0xFFFF
MAX_MESSAGES_PER_PACKET = 0xFFFE
DEFAULT_MAX_PACKET = 1400  # UDP payload bytes, header included (fits a 1,500-byte Ethernet MTU)
HEARTBEAT_INTERVAL_S = 1.0


def session_id(date: dt.date | str, prefix: str = "QR") -> bytes:
    """The 10-character session of a trading day: ``QR`` + ``YYYYMMDD`` (e.g. ``QR20260102``)."""
    day = date if isinstance(date, dt.date) else dt.date.fromisoformat(date)
    sid = f"{prefix}{day:%Y%m%d}".encode("ascii")
    if len(sid) != 10:
        raise ValueError(f"session id {sid!r} must be 10 characters")
    return sid


def header(session: bytes, seq: int, count: int) -> bytes:
    if len(session) != 10:
        raise ValueError("MoldUDP64 session must be 10 bytes")
    return HEADER.pack(session, seq, count)


def heartbeat(session: bytes, next_seq: int) -> bytes:
    return header(session, next_seq, HEARTBEAT_COUNT)


def end_of_session(session: bytes, next_seq: int) -> bytes:
    return header(session, next_seq, END_OF_SESSION_COUNT)


def request(session: bytes, seq: int, count: int) -> bytes:
    return REQUEST.pack(session, seq, count)


def parse_header(packet: bytes | memoryview) -> tuple[bytes, int, int]:
    """(session, sequence number, message count); raises ValueError on a short packet."""
    if len(packet) < HEADER_SIZE:
        raise ValueError(f"MoldUDP64 packet of {len(packet)} bytes is shorter than its 20-byte header")
    return HEADER.unpack_from(packet)


@njit(cache=True, nogil=True)
def _bounds(offsets, ts, max_payload, max_count, max_span):  # pragma: no cover - compiled
    n = len(offsets) - 1
    out = np.empty(n + 1, np.int64)
    p = 0
    i = 0
    out[0] = 0
    while i < n:
        start = i
        used = 0
        while i < n:
            size = offsets[i + 1] - offsets[i]
            if i > start and (used + size > max_payload or i - start >= max_count or ts[i] - ts[start] > max_span):
                break
            used += size
            i += 1
        p += 1
        out[p] = i
    return out[: p + 1]


def packet_bounds(
    framed: Framed, max_packet: int = DEFAULT_MAX_PACKET, max_span_ns: int | None = None
) -> np.ndarray:
    """Message index boundaries of the packets: packet k holds messages ``b[k]:b[k+1]``.

    Packets are filled greedily up to ``max_packet`` bytes (20-byte header included);
    ``max_span_ns`` (real-time mode) also closes a packet before a message more than that much
    event time after the packet's first message.
    """
    if max_packet < HEADER_SIZE + 2 + 50:
        raise ValueError("max packet size too small for one ITCH message")
    span = np.uint64(max_span_ns) if max_span_ns is not None else np.uint64(2**63)
    ts = framed.ts if len(framed.ts) == framed.count else np.zeros(framed.count, np.uint64)
    return _bounds(framed.offsets, ts, max_packet - HEADER_SIZE, MAX_MESSAGES_PER_PACKET, span)


def packets(framed: Framed, session: bytes, first_seq: int, max_packet: int = DEFAULT_MAX_PACKET,
            max_span_ns: int | None = None) -> list[bytes]:
    """Whole downstream packets for ``framed`` (messages numbered from ``first_seq``)."""
    bounds = packet_bounds(framed, max_packet, max_span_ns)
    out = []
    for k in range(len(bounds) - 1):
        lo, hi = int(bounds[k]), int(bounds[k + 1])
        body = framed.data[framed.offsets[lo] : framed.offsets[hi]].tobytes()
        out.append(header(session, first_seq + lo, hi - lo) + body)
    return out


def split_blocks(payload: bytes | memoryview, count: int) -> list[bytes]:
    """The ``count`` messages of a packet body; ValueError when the blocks do not add up."""
    out = []
    pos = 0
    view = memoryview(payload)
    for _ in range(count):
        if pos + 2 > len(view):
            raise ValueError("message block runs past the end of the packet")
        length = int.from_bytes(view[pos : pos + 2], "big")
        if pos + 2 + length > len(view):
            raise ValueError("message runs past the end of the packet")
        out.append(bytes(view[pos + 2 : pos + 2 + length]))
        pos += 2 + length
    if pos != len(view):
        raise ValueError(f"{len(view) - pos} bytes after the last message block")
    return out
