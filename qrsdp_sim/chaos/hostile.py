"""Hostile inputs of the chaos soak, by kind: poison Kafka messages for the events topic and hostile UDP
datagrams for the ITCH feed and its re-request server.

Every poison message is one the Parquet consumer must dead-letter (a malformed value, key or header, or a
record no session can hold) and the ITCH streamer must refuse or skip; none can pass for a real event or
end a real session. Every datagram is one no receiver could take for the real feed: garbage, other
sessions, sequence numbers far past anything real, duplicates of what was already delivered, and
re-requests the server must refuse. (What cannot be told from the real thing -- a well-formed copy of
the next event or packet -- is left out, as in the fuzz tests.)
"""

from __future__ import annotations

import random
import socket
from collections.abc import Callable

import numpy as np

from qrsdp_sim.itch import moldudp64 as mold
from qrsdp_sim.records import RECORD_DTYPE

Headers = list[tuple[str, bytes | None]]
Message = tuple[bytes | None, bytes, Headers | None]  # key, value, headers


def _record(**fields: int) -> bytes:
    rec = np.zeros(1, RECORD_DTYPE)
    rec["ts_ns"], rec["type"], rec["side"], rec["price_ticks"], rec["qty"], rec["order_id"] = (
        34_200 * 10**9, 0, 0, 10_000, 100, 1)  # fmt: skip
    for name, value in fields.items():
        rec[name] = value
    return rec.tobytes()


def _headers(date: bytes | None, seq: bytes | None) -> Headers:
    return [("ts_ns", (34_200 * 10**9).to_bytes(8, "big")), ("date", date), ("seq", seq), ("run_id", b"chaos")]


def _seq(n: int) -> bytes:
    return n.to_bytes(8, "big")


# kind -> builder(symbol, date, rng) -> message
POISON: dict[str, Callable[[str, str, random.Random], Message]] = {
    "value-25-bytes": lambda s, d, r: (s.encode(), _record()[:25], _headers(d.encode(), _seq(0))),
    "value-27-bytes": lambda s, d, r: (s.encode(), _record() + b"x", _headers(d.encode(), _seq(0))),
    "value-200KB": lambda s, d, r: (s.encode(), r.randbytes(200_000), _headers(d.encode(), _seq(0))),
    "date-month-13": lambda s, d, r: (s.encode(), _record(), _headers(b"2026-13-45", _seq(0))),
    "date-not-utf8": lambda s, d, r: (s.encode(), _record(), _headers(b"\xff\xfe-\x00", _seq(0))),
    "seq-7-bytes": lambda s, d, r: (s.encode(), _record(), _headers(d.encode(), b"\0" * 7)),
    "seq-2^63": lambda s, d, r: (s.encode(), _record(), _headers(d.encode(), _seq(2**63 + r.randrange(100)))),
    "null-headers": lambda s, d, r: (s.encode(), _record(), _headers(None, None)),
    "no-headers": lambda s, d, r: (s.encode(), _record(), None),
    "key-lower-case": lambda s, d, r: (s.lower().encode(), _record(), _headers(d.encode(), _seq(0))),
    "key-null": lambda s, d, r: (None, _record(), _headers(d.encode(), _seq(0))),
    "record-type-9": lambda s, d, r: (s.encode(), _record(type=9), _headers(d.encode(), _seq(0))),
    "record-ts-beyond-day": lambda s, d, r: (s.encode(), _record(ts_ns=2**63), _headers(d.encode(), _seq(0))),
    # end-of-session markers of a real session that no producer writes: a malformed or missing eos header
    "marker-eos-7-bytes": lambda s, d, r: (s.encode(), b"", [*_headers(d.encode(), _seq(3))[1:], ("eos", b"\0" * 7)]),
    "marker-eos-null": lambda s, d, r: (s.encode(), b"", [*_headers(d.encode(), _seq(3))[1:], ("eos", None)]),
}


def poison_batch(rng: random.Random, symbols: list[str], dates: list[str], n: int) -> list[tuple[str, Message]]:
    """``n`` poison messages of kinds drawn from ``POISON``, for the run's symbols and dates."""
    kinds = sorted(POISON)
    out = []
    for _ in range(n):
        kind = rng.choice(kinds)
        out.append((kind, POISON[kind](rng.choice(symbols), rng.choice(dates), rng)))
    return out


FEED_KINDS = ("garbage", "short", "foreign-session", "far-heartbeat", "far-end-of-session", "far-data",
              "stale-duplicate")
REREQUEST_KINDS = ("rerequest-unknown-session", "rerequest-far", "rerequest-garbage")
FAR = 2**40  # past any real sequence number (and past the listener's plausibility window)


def datagram(kind: str, rng: random.Random, sessions: list[bytes], delivered: dict[bytes, int]) -> bytes | None:
    """One hostile datagram of ``kind``; ``delivered``: session -> messages its listener delivered so far
    (a stale duplicate is only made below that). None when the kind has no target yet."""
    sid = rng.choice(sessions)
    if kind == "garbage":
        return rng.randbytes(rng.randint(20, 300))
    if kind == "short":
        return rng.randbytes(rng.randint(0, 19))
    if kind == "foreign-session":
        other = b"XX" + rng.randbytes(8)
        return mold.header(other, rng.randrange(2**64), rng.randint(1, 3)) + rng.randbytes(rng.randint(0, 200))
    if kind == "far-heartbeat":
        return mold.heartbeat(sid, rng.randrange(FAR, 2**64))
    if kind == "far-end-of-session":
        return mold.end_of_session(sid, rng.randrange(FAR, 2**64))
    if kind == "far-data":
        body = rng.randbytes(rng.randint(2, 120))
        return mold.header(sid, rng.randrange(FAR, 2**64), rng.randint(1, 5)) + body
    if kind == "stale-duplicate":
        done = [s for s in sessions if delivered.get(s, 0) > 2]
        if not done:
            return None
        s = rng.choice(done)
        size = rng.randint(1, 60)
        return mold.header(s, rng.randint(1, delivered[s] - 1), 1) + size.to_bytes(2, "big") + rng.randbytes(size)
    if kind == "rerequest-unknown-session":
        return mold.request(b"ZZ" + rng.randbytes(8), rng.randint(1, 1000), rng.randint(1, 0xFFFE))
    if kind == "rerequest-far":
        return mold.request(sid, rng.randrange(FAR, 2**64 - 0x10000), 0xFFFE)
    if kind == "rerequest-garbage":
        return rng.randbytes(rng.randint(0, 40))
    raise ValueError(f"unknown datagram kind {kind!r}")


class UdpAttacker:
    """Sends hostile datagrams to the feed (multicast, as the streamer does) and to the re-request server."""

    def __init__(self, group: str, port: int, rerequest: tuple[str, int]) -> None:
        self.feed = (group, port)
        self.rerequest = rerequest
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 1)
        self.sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 1)
        self.sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton("127.0.0.1"))

    def burst(self, rng: random.Random, n: int, sessions: list[bytes], delivered: dict[bytes, int]) -> dict[str, int]:
        """``n`` datagrams of kinds drawn at random; returns how many of each were sent."""
        sent: dict[str, int] = {}
        for _ in range(n):
            kind = rng.choice(FEED_KINDS + REREQUEST_KINDS)
            data = datagram(kind, rng, sessions, delivered)
            if data is None:
                continue
            self.sock.sendto(data, self.rerequest if kind.startswith("rerequest") else self.feed)
            sent[kind] = sent.get(kind, 0) + 1
        return sent

    def close(self) -> None:
        self.sock.close()
