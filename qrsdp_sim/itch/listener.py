"""``qrsdp listen``: the reference ITCH 5.0 / MoldUDP64 listener.

It joins the multicast group (or binds the unicast address), follows one MoldUDP64 session and
delivers every message exactly once and in sequence order, decodes it and rebuilds the order book of
every stock. This module receives (sockets, ``recvmmsg`` slabs, the loop, re-request sending) and
puts the parts together, each in its own module so it can be read and fuzzed alone:

* :mod:`qrsdp_sim.itch.sequencer` -- which session, in-order delivery, reordering, duplicates, gap
  recovery (re-requests, giving up), plausibility of sequence numbers, bounded reorder store;
* :mod:`qrsdp_sim.itch.decoder` -- packet blocks and ITCH messages (compiled);
* :mod:`qrsdp_sim.itch.books` -- messages -> records -> an order-level book per stock, book errors;
* :mod:`qrsdp_sim.itch.listen_stats` -- counters, the timestamp-order check, the ``--stats`` line;
* :mod:`qrsdp_sim.itch.listen_print` -- one line per message, BBO changes.

Datagrams are received up to 256 at a time (``recvmmsg``, 64-bit Linux). The socket asks for a
64 MiB receive buffer (granted as root; otherwise ``net.core.rmem_max`` caps it and the listener says
so). The listener exits once the session's end-of-session packet arrived and every message before it
was delivered.
"""

from __future__ import annotations

import contextlib
import io
import select
import socket
import struct
import sys
import time
from dataclasses import dataclass
from typing import IO, Any

import numpy as np

from qrsdp_sim.book.replay import OrderBook
from qrsdp_sim.itch import moldudp64 as mold
from qrsdp_sim.itch.books import Books
from qrsdp_sim.itch.decoder import NAMES, decode
from qrsdp_sim.itch.listen_print import Printer
from qrsdp_sim.itch.listen_stats import Stats, TimeOrder, stats_line
from qrsdp_sim.itch.messages import MAX_PRICE
from qrsdp_sim.itch.order_state import DEFAULT_MAX_ORDERS
from qrsdp_sim.itch.sequencer import DEFAULT_MAX_AHEAD, DEFAULT_MAX_PENDING_BYTES, Chunk, Sequencer
from qrsdp_sim.itch.transport import (
    DEFAULT_GROUP,
    DEFAULT_INTERFACE,
    DEFAULT_PORT,
    MMSGHDR,
    BatchReceiver,
    check_ipv4,
    check_port,
    mmsg_available,
    open_receiver,
)
from qrsdp_sim.records import RECORD_DTYPE

__all__ = ["Listener", "ListenerConfig", "Stats"]

RCVBUF = 64 << 20  # feed socket receive buffer asked for (as root the kernel grants twice that)


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
    max_ahead: int = DEFAULT_MAX_AHEAD  # sequence numbers believed at most this far past the next expected
    max_pending_bytes: int = DEFAULT_MAX_PENDING_BYTES  # reorder store bound
    max_orders: int = DEFAULT_MAX_ORDERS  # resting orders tracked at most
    keep: bool = False  # keep delivered bytes, decoded messages and records in memory (tests)
    chunk_bytes: int = 1 << 20

    def __post_init__(self) -> None:
        """Refuse settings the listener cannot run with (ValueError naming the flag)."""
        if not 1 <= self.tick_size <= MAX_PRICE:
            raise ValueError(f"--tick-size must be 1..{MAX_PRICE} (units of 1e-4 $), got {self.tick_size}")
        if self.unicast is not None:
            check_port("--unicast port", self.unicast[1], allow_zero=True)
        else:
            check_port("--port", self.port)
            check_ipv4("--multicast-group", self.multicast_group, multicast=True)
        check_ipv4("--interface", self.interface)
        if self.retransmit is not None:
            check_port("--retransmit port", self.retransmit[1])
        if self.session is not None and (len(self.session) != 10 or not self.session.isascii()):
            raise ValueError(f"--session must be 10 ASCII characters (e.g. QR20260102), got {self.session!r}")
        for name, value in (("--gap-timeout", self.gap_timeout), ("gap_retry", self.gap_retry),
                            ("stats_interval", self.stats_interval)):
            if not value > 0:
                raise ValueError(f"{name} must be > 0 seconds, got {value}")
        for name, value in (("--idle-timeout", self.idle_timeout), ("--max-runtime", self.max_runtime)):
            if not value >= 0:
                raise ValueError(f"{name} must be >= 0 seconds, got {value}")
        if not 1 <= self.request_max <= 0xFFFE:
            raise ValueError(f"request_max must be 1..65534, got {self.request_max}")
        for name, value in (("max_ahead", self.max_ahead), ("max_pending_bytes", self.max_pending_bytes),
                            ("max_orders", self.max_orders), ("chunk_bytes", self.chunk_bytes)):
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")


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
    lis = Listener(ListenerConfig(print_messages=False, retransmit=None), out=io.StringIO(), err=io.StringIO())
    lis.handle_batch(slab, slot, lengths, 2)
    lis.flush()


class Listener:
    def __init__(self, config: ListenerConfig, out: IO[str] | None = None, err: IO[str] | None = None) -> None:
        self.cfg = config
        self.out = out if out is not None else sys.stdout
        self.err = err if err is not None else sys.stderr
        self.stats = Stats()
        self.chunk = Chunk(config.chunk_bytes)
        self.seq = Sequencer(
            self.stats, self.chunk, self.flush, session=config.session,
            request=self._request if config.retransmit is not None else None, gap_retry=config.gap_retry,
            gap_timeout=config.gap_timeout, request_max=config.request_max, max_ahead=config.max_ahead,
            max_pending_bytes=config.max_pending_bytes, err=self.err,
        )  # fmt: skip
        self.order_books = Books(config.tick_size, config.max_orders)
        self.printer = Printer(config.tick_size)
        self.time_order = TimeOrder()
        self.kept: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []  # (records, locate, seq) (keep=True)
        self.messages_kept: list[dict[str, np.ndarray]] = []
        self.raw_kept: list[bytes] = []  # delivered message blocks, in sequence order (keep=True)
        self.sock: socket.socket | None = None
        self.req_sock: socket.socket | None = None
        self._rx: BatchReceiver | None = None
        self.rcvbuf = 0  # the receive buffer the kernel granted (bytes)
        self.done = False
        self.t_first: float | None = None
        self.t_last = 0.0

    # -- the parts' state, as the tests and the summary read it ------------------
    @property
    def session(self) -> bytes | None:
        return self.seq.session

    @property
    def expected(self) -> int:
        return self.seq.expected

    @property
    def eos_seq(self) -> int | None:
        return self.seq.eos_seq

    @property
    def complete(self) -> bool:
        return self.seq.complete

    @property
    def stocks(self) -> dict[int, str]:
        return self.printer.stocks

    @property
    def books(self) -> dict[int, OrderBook]:
        """The order book of each stock locate."""
        return self.order_books.books

    # -- datagrams ---------------------------------------------------------------
    def _touch(self) -> float:
        now = time.monotonic()
        if self.t_first is None:
            self.t_first = now
        self.t_last = now
        return now

    def handle_packet(self, data: bytes, retransmission: bool = False) -> None:
        """Process one datagram. Never raises on bad input: malformed packets are counted and dropped."""
        self.seq.packet(data, retransmission, self._touch())

    def handle_batch(self, slab: np.ndarray, slot_size: int, lengths: np.ndarray, n: int) -> None:
        """Process datagrams ``0 .. n - 1`` of a :class:`~qrsdp_sim.itch.transport.BatchReceiver` slab."""
        self.seq.batch(slab, slot_size, lengths, n, self._touch())

    def service(self, now: float | None = None) -> None:
        """Gap recovery: re-requests and giving up (the receive loop calls it; tests call it with a clock)."""
        self.seq.service(time.monotonic() if now is None else now)

    def _request(self, session: bytes, seq: int, count: int) -> None:
        if self.req_sock is None:
            return
        with contextlib.suppress(OSError, struct.error):
            self.req_sock.sendto(mold.request(session, seq, count), self.cfg.retransmit)

    # -- decoding and the books ----------------------------------------------------
    def flush(self) -> None:
        """Decode the delivered messages held in the chunk and apply them to the books."""
        if self.chunk.count == 0:
            return
        buf, n, first_seq = self.chunk.take()  # decoded below, before anything is delivered into it again
        if self.cfg.keep:
            self.raw_kept.append(buf.tobytes())
        cols, bad = decode(buf, n)
        st = self.stats
        st.bad_messages += bad
        st.messages += n
        mtype = cols["mtype"]
        counts = np.bincount(mtype, minlength=256)
        for t in np.flatnonzero(counts):
            name = NAMES.get(int(t), "MALFORMED" if t == 0 else f"TYPE_{chr(int(t))}")
            st.by_type[name] = st.by_type.get(name, 0) + int(counts[t])
        st.ts_order_violations += self.time_order.violations(cols["ts"][mtype != 0])
        self.printer.learn_directory(buf, cols)
        seqs = np.arange(first_seq, first_seq + n, dtype=np.uint64)
        lines = self.printer.messages(buf, cols, seqs) if self.cfg.print_messages else []
        applied = self.order_books.apply(cols)
        st.book_errors = self.order_books.errors
        st.book_error_kinds = dict(self.order_books.error_kinds)
        rseq = seqs[applied.msg]
        if self.cfg.keep:
            self.kept.append((applied.records, applied.locate, rseq))
            self.messages_kept.append({**{k: v for k, v in cols.items() if k != "moff"}, "seq": seqs})
        if self.cfg.book:
            for locate, (states, sel) in applied.states.items():
                lines += self.printer.bbo(locate, states, rseq[sel])
        if lines:
            lines.sort(key=lambda x: (x[0], x[1]))  # a message, then the BBO change it caused
            self.out.write("".join(line for _s, _k, line in lines))

    # -- results -------------------------------------------------------------------
    def summary(self) -> dict[str, Any]:
        books = {}
        px = self.printer.ticks_text
        for locate, book in sorted(self.books.items()):
            books[self.printer.stock(locate)] = {
                "bid": px(book.best_bid), "bid_qty": book.best_bid_qty,
                "ask": px(book.best_ask), "ask_qty": book.best_ask_qty, "orders": book.orders,
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

    # -- receiving -----------------------------------------------------------------
    def open(self) -> None:
        c = self.cfg
        self.sock = open_receiver(c.multicast_group, c.port, interface=c.interface, unicast=c.unicast, rcvbuf=RCVBUF)
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
        self.req_sock.bind(("127.0.0.1" if c.retransmit and c.retransmit[0].startswith("127.") else "0.0.0.0", 0))
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
                timeout = 0.005 if self.seq.gap_open else 0.1
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
                        except OSError:  # nothing more waiting (BlockingIOError included)
                            break
                        self.handle_packet(data, retrans)
                    last_rx = time.monotonic()
                now = time.monotonic()
                self.service(now)
                if self.cfg.stats and now >= next_stats:
                    self.flush()
                    rate = (self.stats.messages - stats_msgs) / self.cfg.stats_interval
                    stats_msgs = self.stats.messages
                    self.err.write(stats_line(self.stats, rate))
                    next_stats = now + self.cfg.stats_interval
                elif self.chunk.count and not ready:
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
