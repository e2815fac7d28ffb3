"""Property-based fuzzing (hypothesis) of the ITCH parts that read untrusted input: the MoldUDP64 /
ITCH listener (sequencer, decoder, books) and the streamer's intake of Kafka messages.

The invariant is always the same: no exception escapes, memory stays within its bounds, and the state
stays consistent afterwards -- the same listener (or streamer) then handles the real feed completely
and exactly. Hostile inputs are arbitrary except where no receiver could tell them from the real thing
(a well-formed packet or event that *is* the next one of the real sequence); those are left out.
"""

from __future__ import annotations

import io
import time

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from itch_streamer_harness import DATE, TOPIC, MemKafka, drive, streamer, topic_of
from itch_streams import sweep_session

from qrsdp_sim.itch import moldudp64 as mold
from qrsdp_sim.itch.books import Books
from qrsdp_sim.itch.decoder import blocks, decode
from qrsdp_sim.itch.encoder import Framed
from qrsdp_sim.itch.feed import DayFeed, Directory
from qrsdp_sim.itch.listener import Listener, ListenerConfig
from qrsdp_sim.itch.order_state import OrderTable
from qrsdp_sim.itch.sequencer import MAX_CANDIDATES
from qrsdp_sim.itch.streamer import StreamerConfig
from qrsdp_sim.kafka.bridge import RawMessage

SID = mold.session_id(DATE)
FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

_RECORDS = sweep_session(3_000, 51)
_FEED = DayFeed(Directory.of(["AAPL"]), 100)
_OPENING = _FEED.opening(int(_RECORDS["ts_ns"][0]))
_FRAMED = Framed.concat([_OPENING, _FEED.orders(_RECORDS, 1, _OPENING.count + 1, OrderTable()).framed,
                         _FEED.closing(int(_RECORDS["ts_ns"].max()))])
_PACKETS = mold.packets(_FRAMED, SID, 1)
REAL_END = _FRAMED.count + 1
MAX_AHEAD = 1 << 20
PENDING_BOUND = 1 << 16


@st.composite
def hostile_datagram(draw) -> tuple[float, bytes]:
    """(where in the feed it arrives, as a fraction, and the datagram)."""
    where = draw(st.floats(0, 1))
    kind = draw(st.sampled_from(["bytes", "header", "followed", "other"]))
    if kind == "bytes":
        return where, draw(st.binary(max_size=300))
    count = draw(st.one_of(st.just(0), st.just(0xFFFF), st.integers(0, 0xFFFF)))
    body = draw(st.one_of(st.binary(max_size=200),
                          st.sampled_from(_PACKETS).map(lambda p: p[20:])))  # real message blocks
    if kind == "other":  # adversarial session ids, any sequence number
        sid = draw(st.binary(min_size=10, max_size=10))
        return where, mold.HEADER.pack(sid, draw(st.integers(0, 2**64 - 1)), count) + body
    if kind == "header":  # the followed session, sequence numbers past anything real (far or near)
        seq = draw(st.one_of(st.integers(REAL_END + (1 << 17), 2**64 - 1), st.integers(2**63, 2**64 - 1)))
        return where, mold.HEADER.pack(SID, seq, count) + (b"" if count in (0, 0xFFFF) else body)
    # the followed session below what is delivered by then (seq 0 too): a duplicate or malformed
    return where, mold.HEADER.pack(SID, draw(st.integers(0, 3)), count) + body


@FUZZ
@given(st.lists(hostile_datagram(), max_size=120), st.booleans())
def test_hostile_datagrams_never_break_the_same_listener(hostile, batched) -> None:
    lis = Listener(ListenerConfig(print_messages=True, book=True, retransmit=None, keep=True, max_ahead=MAX_AHEAD,
                                  max_pending_bytes=PENDING_BOUND), out=io.StringIO(), err=io.StringIO())
    lis.handle_packet(_PACKETS[0])
    lis.handle_packet(_PACKETS[1])  # the session is chosen: hostile packets of other sessions cannot capture it
    stream = [p for p in _PACKETS[2:]]
    for where, datagram in sorted(hostile, key=lambda x: x[0]):
        stream.insert(int(where * len(stream)), datagram)
    stream.append(mold.end_of_session(SID, REAL_END))
    if batched:  # through the compiled in-order pass too, in slabs as recvmmsg fills them
        slot = 1 << 16
        for lo in range(0, len(stream), 64):
            group = stream[lo : lo + 64]
            slab = np.zeros(len(group) * slot, np.uint8)
            lengths = np.zeros(len(group), np.uint32)
            for k, d in enumerate(group):
                slab[k * slot : k * slot + len(d)] = np.frombuffer(d, np.uint8)
                lengths[k] = len(d)
            lis.handle_batch(slab, slot, lengths, len(group))
            lis.service(time.monotonic())
    else:
        for d in stream:
            lis.handle_packet(d)
            lis.service(time.monotonic())
    lis.flush()
    s = lis.stats
    assert lis.complete and s.unrecovered == 0 and s.messages == _FRAMED.count
    assert b"".join(lis.raw_kept) == _FRAMED.data.tobytes()
    assert s.book_errors == 0 and s.ts_order_violations == 0
    assert lis.seq._pending_bytes <= PENDING_BOUND and len(lis.seq._candidates) <= MAX_CANDIDATES
    assert lis.books[1].orders == _reference_orders()


def _reference_orders() -> int:
    from qrsdp_sim.book.replay import OrderBook

    book = OrderBook()
    book.apply(_RECORDS)
    return book.orders


@FUZZ
@given(st.binary(min_size=20, max_size=2_000), st.integers(0, 0xFFFF))
def test_packet_blocks_never_read_past_the_datagram(data, count) -> None:
    buf = np.frombuffer(data, np.uint8)
    offs = blocks(buf, 20, len(data), count)
    if len(offs):
        assert offs[0] == 20 and offs[-1] == len(data) and (np.diff(offs) >= 2).all()
        body = buf[20:]
        cols, bad = decode(body, count)
        assert len(cols["mtype"]) == count and 0 <= bad <= count


@FUZZ
@given(st.lists(st.tuples(st.sampled_from(b"AFECXDUSZ"), st.integers(0, 40), st.integers(0, 40),
                          st.sampled_from(b"BSX"), st.integers(0, 2_000), st.integers(0, 2**32 - 1)),
                max_size=300))
def test_books_stay_consistent_under_any_message_sequence(msgs) -> None:
    """Whatever order-book messages arrive, every resting order in the reference table rests in its
    stock's book with the same shares, and the books never hold negative or orphan quantities."""
    n = len(msgs)
    cols = {"mtype": np.array([m[0] for m in msgs], np.uint8), "locate": np.full(n, 1, np.uint16),
            "ts": np.arange(n, dtype=np.uint64), "ref": np.array([m[1] for m in msgs], np.uint64),
            "ref2": np.array([m[2] for m in msgs], np.uint64), "side": np.array([m[3] for m in msgs], np.uint8),
            "shares": np.array([m[4] for m in msgs], np.uint32), "price": np.array([m[5] for m in msgs], np.uint32),
            "match": np.zeros(n, np.uint64), "code": np.zeros(n, np.uint8)}  # fmt: skip
    books = Books(tick_size=100, max_orders=16)
    books.apply(cols)
    t = books.orders
    live = np.flatnonzero(t.keys != np.uint64(2**64 - 1))
    assert len(live) == t.orders <= 16
    book = books.books.get(1)
    resting = {int(t.keys[i]): (int(t.side[i]), int(t.price[i]), int(t.rem[i])) for i in live}
    if book is None:
        assert not resting
        return
    assert book.orders == len(resting)
    for ref, (side, price, rem) in resting.items():
        assert book.order(ref) == (side, price, rem)


_SYMBOLS = ("AAPL", "MSFT")
_SESSIONS = {"AAPL": sweep_session(2_000, 52), "MSFT": sweep_session(1_500, 53, p0=20_000)}
_HEADERS = st.lists(st.tuples(st.sampled_from(["ts_ns", "date", "seq", "run_id", "eos", "junk"]),
                              st.one_of(st.none(), st.binary(max_size=12),
                                        st.sampled_from([b"2026-01-02", b"2026-02-30", b"9999-99-99"]))),
                    max_size=6)


@st.composite
def hostile_message(draw) -> tuple[int, float, RawMessage]:
    p = draw(st.sampled_from([0, 1]))
    key = draw(st.one_of(st.none(), st.sampled_from([b"AAPL", b"MSFT", b"ZZZ", b"\xff\xfe"]), st.binary(max_size=9)))
    value = draw(st.one_of(st.none(), st.just(b""), st.binary(min_size=26, max_size=26), st.binary(max_size=40)))
    headers = draw(st.one_of(st.none(), _HEADERS))
    if key in (b"AAPL", b"MSFT") and value is not None and len(value) == 26 and headers:
        # an event of a real stock, valid or not, but never one the real stream could hold: its seq, if
        # any, lies beyond the session (a valid far seq is refused as out of sequence)
        headers = [(k, (10**12 + draw(st.integers(0, 10**6))).to_bytes(8, "big") if k == "seq" else v)
                   for k, v in headers]
    return p, draw(st.floats(0, 1)), RawMessage(TOPIC, p, 0, key, value, headers)


@FUZZ
@given(st.lists(hostile_message(), max_size=60))
def test_hostile_kafka_messages_never_break_the_streamer(hostile) -> None:
    log = topic_of({"AAPL": (0, _SESSIONS["AAPL"]), "MSFT": (1, _SESSIONS["MSFT"])})
    for p, where, msg in hostile:
        log[p].insert(int(where * (len(log[p]) - 1)), msg)  # never after the end-of-session marker
    for p in log:
        log[p] = [RawMessage(TOPIC, p, i, m.key(), m.value(), m.headers()) for i, m in enumerate(log[p])]
    cfg = StreamerConfig(symbols=list(_SYMBOLS), merge_window=3600.0)
    st_ = streamer(cfg, MemKafka(cfg, log, seed=len(hostile)))
    drive(st_, 1_000)
    c = st_.counters
    assert "unprocessable" not in c.rejected  # every hostile message had a reason, no defect was hit
    lis = Listener(ListenerConfig(print_messages=False, retransmit=None, keep=True, session=SID),
                   out=io.StringIO(), err=io.StringIO())
    for d in st_.sender.datagrams:
        lis.handle_packet(d)
    lis.flush()
    assert lis.complete and lis.stats.book_errors == 0 and lis.stats.ts_order_violations == 0
    recs, loc, _seq = lis.records()
    for locate, sym in enumerate(_SYMBOLS, start=1):
        mine, src = recs[loc == locate], _SESSIONS[sym]
        for f in ("ts_ns", "type", "side", "price_ticks", "qty"):
            np.testing.assert_array_equal(mine[f], src[f])
        np.testing.assert_array_equal(mine["order_id"], (src["order_id"] - 1) * 2 + locate)
    assert c.events == sum(len(r) for r in _SESSIONS.values())
