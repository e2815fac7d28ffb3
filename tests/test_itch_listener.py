"""The reference listener without Kafka: decoding, books, reordering, duplicates, gap recovery over
UDP, giving up, other ITCH types, and fuzzed packets."""

from __future__ import annotations

import io
import struct
import threading
import time

import numpy as np
import pytest
from itch_streams import sweep_session
from test_itch_messages import add_order, order_delete, order_executed, system_event

from qrsdp_sim.book.replay import OrderBook
from qrsdp_sim.engine import SessionConfig, simulate_session
from qrsdp_sim.itch import moldudp64 as mold
from qrsdp_sim.itch.encoder import Framed
from qrsdp_sim.itch.feed import DayFeed, Directory
from qrsdp_sim.itch.listen_stats import stats_line
from qrsdp_sim.itch.listener import Listener, ListenerConfig
from qrsdp_sim.itch.order_state import OrderTable
from qrsdp_sim.itch.retransmit import RetransmitBuffer, RetransmitServer
from qrsdp_sim.itch.transport import MMSGHDR, Sender, mmsg_available
from qrsdp_sim.sinks.memory import InMemorySink

SID = b"QR20260102"


@pytest.fixture(scope="module")
def session() -> np.ndarray:
    sink = InMemorySink()
    simulate_session(SessionConfig(seed=11, p0_ticks=10_000, session_seconds=300), sink)
    return sink.records


def day(records: np.ndarray, symbol: str = "AAPL", symbols: tuple[str, ...] = ("AAPL",)) -> Framed:
    directory = Directory.of(list(symbols))
    feed = DayFeed(directory, tick_size=100)
    opening = feed.opening(int(records["ts_ns"][0]))
    enc = feed.orders(records, directory.locate(symbol), opening.count + 1, OrderTable())
    assert not len(enc.rejected)
    return Framed.concat([opening, enc.framed, feed.closing(int(records["ts_ns"].max()))])


def listener(**kw) -> Listener:
    kw.setdefault("print_messages", False)
    kw.setdefault("keep", True)
    kw.setdefault("retransmit", None)
    return Listener(ListenerConfig(**kw), out=io.StringIO(), err=io.StringIO())


def assert_matches_source(lis: Listener, records: np.ndarray, locate: int, n_locates: int) -> None:
    recs, loc, _seq = lis.records()
    mine = recs[loc == locate]
    for f in ("ts_ns", "type", "side", "price_ticks", "qty"):
        np.testing.assert_array_equal(mine[f], records[f], err_msg=f)
    np.testing.assert_array_equal(mine["order_id"], (records["order_id"] - 1) * n_locates + locate)
    ref = OrderBook()
    ref.apply(records)
    book = lis.books[locate]
    for side in (0, 1):
        assert book.depth(side, 10_000) == ref.depth(side, 10_000)
    assert book.orders == ref.orders


def test_in_order_feed_decodes_to_the_source_records_and_book(session) -> None:
    framed = day(session, "MSFT", ("AAPL", "MSFT"))
    lis = listener(print_messages=True, book=True)
    for p in mold.packets(framed, SID, 1):
        lis.handle_packet(p)
    assert not lis.complete
    lis.handle_packet(mold.end_of_session(SID, framed.count + 1))
    lis.flush()
    assert lis.complete
    st = lis.stats
    assert st.messages == framed.count and st.duplicates == 0 and st.malformed_packets == 0
    assert st.book_errors == 0 and st.bad_messages == 0
    assert st.by_type["SYSTEM_EVENT"] == 6 and st.by_type["STOCK_DIRECTORY"] == 2
    assert b"".join(lis.raw_kept) == framed.data.tobytes()
    assert_matches_source(lis, session, locate=2, n_locates=2)
    lines = lis.out.getvalue().splitlines()
    assert lines[:5] == [
        "[seq=1] SYSTEM_EVENT code=O (start of messages)",
        "[seq=2] SYSTEM_EVENT code=S (start of system hours)",
        "[seq=3] STOCK_DIRECTORY locate=1 stock=AAPL",
        "[seq=4] STOCK_DIRECTORY locate=2 stock=MSFT",
        "[seq=5] SYSTEM_EVENT code=Q (start of market hours)",
    ]
    first = session[0]
    side = "B" if first["type"] == 0 else "S"
    price = int(first["price_ticks"]) * 100
    assert lines[5] == (f"[seq=6] ADD_ORDER ref={(int(first['order_id']) - 1) * 2 + 2} side={side} shares={int(first['qty'])} "
                        f"stock=MSFT price={price // 10000}.{price % 10000:04d}")
    assert any(line.startswith("[seq=") and " ORDER_DELETE ref=" in line for line in lines)
    assert any(" ORDER_EXECUTED ref=" in line and " match=" in line for line in lines)
    bbo = [line for line in lines if " BBO stock=MSFT " in line]
    ref = OrderBook()
    ref.apply(session)
    last = f"bid={ref.best_bid // 100}.{ref.best_bid % 100:02d}00x{ref.best_bid_qty}"
    assert bbo and last in bbo[-1]
    assert lines[-1] == f"[seq={framed.count}] SYSTEM_EVENT code=C (end of messages)"


def test_reordered_and_duplicated_packets_deliver_each_message_once(session) -> None:
    framed = day(session)
    packets = mold.packets(framed, SID, 1)
    rng = np.random.default_rng(1)
    order = list(range(len(packets)))
    for i in range(0, len(order) - 1, 2):  # swap neighbours
        if rng.random() < 0.5:
            order[i], order[i + 1] = order[i + 1], order[i]
    stream = [packets[i] for i in order]
    dups = [packets[i] for i in rng.choice(len(packets), 40, replace=False)]
    stream = stream[:100] + dups + stream[100:]
    lis = listener()
    lis.handle_packet(mold.heartbeat(SID, 1))
    for p in stream:
        lis.handle_packet(p)
    lis.handle_packet(mold.end_of_session(SID, framed.count + 1))
    lis.flush()
    assert lis.complete and lis.stats.messages == framed.count
    assert lis.stats.duplicates == sum(mold.parse_header(p)[2] for p in dups)
    assert b"".join(lis.raw_kept) == framed.data.tobytes()
    assert_matches_source(lis, session, locate=1, n_locates=1)


def test_batches_of_datagrams_give_the_same_result_as_one_at_a_time(session) -> None:
    """handle_batch (after recvmmsg): the compiled in-order pass plus the per-packet path for the rest
    (reordering, duplicates, heartbeats, another session, malformed) ends where handle_packet ends."""
    framed = day(session)
    packets = mold.packets(framed, SID, 1)
    rng = np.random.default_rng(3)
    stream = [mold.heartbeat(SID, 1), *packets[:50]]
    for i in range(50, len(packets) - 1, 2):
        pair = [packets[i], packets[i + 1]]
        if rng.random() < 0.2:
            pair.reverse()
        stream += pair
        if rng.random() < 0.05:
            stream.append(packets[int(rng.integers(0, i))])  # a duplicate
        if rng.random() < 0.02:
            stream += [mold.heartbeat(b"QR20260105", 7), packets[i][:-3], b"junk"]  # other session, malformed
    if len(packets) % 2 == 1:
        stream.append(packets[-1])
    stream.append(mold.end_of_session(SID, framed.count + 1))

    one = listener()
    for pk in stream:
        one.handle_packet(pk)
    one.flush()

    slot = 2048
    batched = listener()
    for lo in range(0, len(stream), 37):
        group = stream[lo : lo + 37]
        slab = np.zeros(len(group) * slot, np.uint8)
        lengths = np.zeros(len(group), MMSGHDR)["len"]
        for k, pk in enumerate(group):
            slab[k * slot : k * slot + len(pk)] = np.frombuffer(pk, np.uint8)
            lengths[k] = len(pk)
        batched.handle_batch(slab, slot, lengths, len(group))
    batched.flush()

    assert one.complete and batched.complete
    skip = {"by_type"}
    assert {k: v for k, v in batched.stats.to_dict().items() if k not in skip} == {
        k: v for k, v in one.stats.to_dict().items() if k not in skip
    }
    assert batched.stats.by_type == one.stats.by_type
    assert b"".join(batched.raw_kept) == b"".join(one.raw_kept) == framed.data.tobytes()
    assert_matches_source(batched, session, locate=1, n_locates=1)


@pytest.mark.parametrize("mmsg", ["1", "0"], ids=["sendmmsg-recvmmsg", "one-per-call"])
def test_packets_over_a_socket_batched_or_not(session, monkeypatch, mmsg) -> None:
    monkeypatch.setenv("QRSDP_ITCH_MMSG", mmsg)
    framed = day(session)
    lis = listener(unicast=("127.0.0.1", 0), gap_timeout=10, max_runtime=30)
    thread, result = _run(lis)
    tx = Sender(unicast=lis.sock.getsockname())
    try:
        assert tx.batched == (mmsg == "1" and mmsg_available()) and (lis._rx is not None) == tx.batched
        bounds = mold.packet_bounds(framed)
        tx.send_packets(SID, 1, framed.data, framed.offsets, bounds[:301])
        tx.send_packets(SID, 1, framed.data, framed.offsets, bounds[300:])
        tx.send(mold.end_of_session(SID, framed.count + 1))
        thread.join(30)
    finally:
        tx.close()
    assert not thread.is_alive()
    assert tx.packets == len(bounds)  # the data packets and the end of session
    assert result["complete"] and result["unrecovered"] == 0 and result["malformed_packets"] == 0
    assert result["rcvbuf_bytes"] > 0
    assert b"".join(lis.raw_kept) == framed.data.tobytes()


def _run(lis: Listener) -> tuple[threading.Thread, dict]:
    result: dict = {}
    lis.open()
    thread = threading.Thread(target=lambda: result.update(lis.run()), daemon=True)
    thread.start()
    return thread, result


def test_lost_packets_are_recovered_from_the_rerequest_server(session) -> None:
    framed = day(session)
    buf = RetransmitBuffer()
    buf.add(SID, 1, framed)
    server = RetransmitServer(buf, "127.0.0.1", 0).start()
    lis = listener(unicast=("127.0.0.1", 0), retransmit=server.address, gap_timeout=10, max_runtime=30)
    thread, result = _run(lis)
    tx = Sender(unicast=lis.sock.getsockname(), loss=0.05, loss_seed=7)
    try:
        packets = mold.packets(framed, SID, 1)
        for p in packets[5:]:  # joins late too: the first packets only come by re-request
            tx.send(p[:20], p[20:])
        tx.send(mold.end_of_session(SID, framed.count + 1), lossy=False)
        thread.join(30)
    finally:
        tx.close()
        server.close()
    assert not thread.is_alive()
    assert tx.dropped > 0
    assert result["complete"] and result["unrecovered"] == 0
    assert result["gaps"] >= 1 and result["recovered"] == result["gaps"]
    assert result["retransmitted"] > 0 and server.messages_sent >= result["retransmitted"]
    assert b"".join(lis.raw_kept) == framed.data.tobytes()
    assert_matches_source(lis, session, locate=1, n_locates=1)


def test_unrecoverable_gap_is_given_up_and_counted(session) -> None:
    framed = day(session)
    packets = mold.packets(framed, SID, 1)
    lost = mold.parse_header(packets[3])[2]
    lis = listener(unicast=("127.0.0.1", 0), gap_timeout=0.3, max_runtime=20)
    thread, result = _run(lis)
    tx = Sender(unicast=lis.sock.getsockname())
    try:
        for i, p in enumerate(packets):
            if i != 3:
                tx.send(p[:20], p[20:])
        tx.send(mold.end_of_session(SID, framed.count + 1))
        thread.join(20)
    finally:
        tx.close()
    assert not thread.is_alive()
    assert result["unrecovered"] == lost and result["messages"] == framed.count - lost
    assert "giving up" in lis.err.getvalue()


def test_other_order_book_types(tmp_path) -> None:
    ts = 34_200_000_000_000

    def msg(t: bytes, size: int, fields: list[tuple[str, int, object]]) -> bytes:
        buf = bytearray(size)
        struct.pack_into(">cHH", buf, 0, t, 1, 0)
        buf[5:11] = ts.to_bytes(6, "big")
        for fmt, off, value in fields:
            struct.pack_into(fmt, buf, off, value)
        return bytes(buf)

    add_f = msg(b"F", 40, [(">Q", 11, 100), (">c", 19, b"B"), (">I", 20, 500), ("8s", 24, b"XYZ     "),
                           (">I", 32, 1_000_000), ("4s", 36, b"MPID")])
    cancel_x = msg(b"X", 23, [(">Q", 11, 100), (">I", 19, 200)])  # 300 left
    replace_u = msg(b"U", 35, [(">Q", 11, 100), (">Q", 19, 101), (">I", 27, 700), (">I", 31, 1_000_100)])
    exec_c = msg(b"C", 36, [(">Q", 11, 101), (">I", 19, 100), (">Q", 23, 9), (">c", 31, b"Y"),
                            (">I", 32, 1_000_100)])
    ask = add_order(1, ts, 102, b"S", 50, b"XYZ", 1_000_300)
    msgs = [system_event(b"O", ts), add_f, cancel_x, replace_u, exec_c, ask, order_executed(1, ts, 102, 50, 10),
            order_delete(1, ts, 101)]
    body = b"".join(struct.pack(">H", len(x)) + x for x in msgs)
    lis = listener(session=SID)  # pinned: its first packet is followed at once
    lis.handle_packet(mold.header(SID, 1, len(msgs)) + body)
    lis.flush()
    st = lis.stats
    assert st.messages == 8 and st.book_errors == 0 and st.bad_messages == 0
    recs, _loc, seq = lis.records()
    assert [(int(r["type"]), int(r["qty"]), int(r["order_id"]), int(r["price_ticks"])) for r in recs] == [
        (0, 500, 100, 10_000),  # F: add bid 500 @ 100.00
        (2, 200, 100, 10_000),  # X: cancel 200
        (2, 300, 100, 10_000), (0, 700, 101, 10_001),  # U: the rest of 100 out, 101 in at 100.01
        (5, 100, 101, 10_001),  # C: a sell hits the resting bid
        (1, 50, 102, 10_003), (4, 50, 102, 10_003),  # A ask, E fully executed by a buy
        (2, 600, 101, 10_001),  # D: the remaining 600
    ]  # fmt: skip
    assert list(seq) == [2, 3, 4, 4, 5, 6, 7, 8]
    assert lis.books[1].orders == 0


def _hostile(kind: int, rng: np.random.Generator, packets: list[bytes], lis: Listener, real_end: int) -> bytes:
    """One hostile datagram of ``kind``, given the feed so far (never a plausible packet of the real range:
    a forged packet indistinguishable from the real one cannot be told apart by any listener)."""
    delivered = [p for p in packets if mold.parse_header(p)[1] + mold.parse_header(p)[2] <= lis.expected]
    base = bytearray(delivered[int(rng.integers(len(delivered)))])
    far = int(rng.integers(lis.expected + lis.cfg.max_ahead + 1, 1 << 64, dtype=np.uint64))
    if kind == 0:  # random bytes of random length
        return rng.integers(0, 256, int(rng.integers(0, 300)), dtype=np.uint8).tobytes()
    if kind == 1:  # a delivered packet truncated anywhere
        return bytes(base[: int(rng.integers(0, len(base)))])
    if kind == 2:  # bit flips in a delivered packet (lengths and message types included)
        for _ in range(int(rng.integers(1, 6))):
            pos = int(rng.integers(20, len(base)))
            base[pos] ^= 1 << int(rng.integers(8))
        return bytes(base)
    if kind == 3:  # wrong message count
        struct.pack_into(">H", base, 18, int(rng.integers(0, 0x10000)))
        return bytes(base)
    if kind == 4:  # a well-formed data packet with a huge sequence number
        struct.pack_into(">Q", base, 10, far)
        return bytes(base)
    if kind == 5:
        return mold.heartbeat(SID, far)
    if kind == 6:
        return mold.end_of_session(SID, far)
    if kind == 7:  # adversarial session ids
        sid = rng.integers(0, 256, 10, dtype=np.uint8).tobytes()
        return sid + bytes(base[10:]) if rng.random() < 0.5 else mold.heartbeat(sid, int(rng.integers(1, 1 << 63)))
    if kind == 8:  # an end of session below what was delivered
        return mold.end_of_session(SID, int(rng.integers(1, lis.expected)))
    if kind == 9:  # a heartbeat announcing messages past the real end (within the window)
        return mold.heartbeat(SID, real_end + 1_000)
    # a lone well-formed data packet past the real end, within the window
    struct.pack_into(">Q", base, 10, real_end + 100_000 + int(rng.integers(0, 1_000)))
    return bytes(base)


def test_hostile_packets_never_stop_the_same_listener(session) -> None:
    """Huge sequence numbers in heartbeats, end-of-session and data packets, adversarial session ids,
    malformed packets, false claims -- with time passing beyond the gap timeout between them -- and the
    same listener then receives the real feed to the end, every message exactly once."""
    framed = day(session[:3_000])
    packets = mold.packets(framed, SID, 1)
    real_end = framed.count + 1
    rng = np.random.default_rng(2024)
    lis = listener(print_messages=True, book=True, gap_timeout=1.0, max_pending_bytes=1 << 16)
    clock = time.monotonic()
    half = len(packets) // 2
    for p in packets[:half]:
        lis.handle_packet(p)
    hostile = 0
    for k in range(4_400):
        lis.handle_packet(_hostile(k % 11, rng, packets, lis, real_end))
        hostile += 1
        if k % 400 == 399:
            clock += 5.0  # long past the gap timeout: nothing hostile may be given up to or skipped to
            lis.service(clock)
    assert lis.expected == mold.parse_header(packets[half])[1]  # no message skipped, none invented
    for p in packets[half:]:
        lis.handle_packet(p)
        lis.service(clock)
    lis.handle_packet(mold.end_of_session(SID, real_end))
    lis.flush()
    st = lis.stats
    assert lis.complete and st.unrecovered == 0 and st.messages == framed.count
    assert b"".join(lis.raw_kept) == framed.data.tobytes()
    assert_matches_source(lis, session[:3_000], locate=1, n_locates=1)
    assert st.packets == len(packets) + hostile + 1
    assert st.implausible_seq >= 3 * 400  # kinds 4, 5, 6
    assert st.malformed_packets > 500 and st.eos_conflicts >= 400 and st.other_session > 0
    assert st.unconfirmed_claims > 0  # the false heartbeat claims and lone packets were dropped, not skipped to
    assert lis.seq._pending_bytes <= 1 << 16
    assert st.book_errors == 0


def test_a_stray_packet_of_another_session_does_not_capture_an_unpinned_listener(session) -> None:
    framed = day(session[:500])
    lis = listener()
    lis.handle_packet(mold.heartbeat(b"EVIL000000", 5))
    lis.handle_packet(mold.header(b"EVIL000001", 1, 1) + struct.pack(">H", 12) + system_event(b"O", 1))
    for p in mold.packets(framed, SID, 1):
        lis.handle_packet(p)
    lis.handle_packet(mold.end_of_session(SID, framed.count + 1))
    lis.flush()
    assert lis.session == SID and lis.complete and b"".join(lis.raw_kept) == framed.data.tobytes()


def test_gaps_are_given_up_only_to_data_the_session_backs(session) -> None:
    framed = day(session[:2_000])
    packets = mold.packets(framed, SID, 1)
    lis = listener(gap_timeout=1.0)
    for p in packets[:10]:
        lis.handle_packet(p)
    at = lis.expected
    # a lone forged packet 50 ahead, and the feed stalls beyond the gap timeout: dropped, not skipped to
    lone = bytearray(packets[3])
    struct.pack_into(">Q", lone, 10, at + 50)
    lis.handle_packet(bytes(lone))
    t = time.monotonic()
    lis.service(t)  # the hole is seen
    lis.service(t + 5)
    assert lis.expected == at and lis.stats.unconfirmed_claims == 1 and lis.stats.unrecovered == 0
    # a real gap: packets 10 and 11 lost, the feed continues: backed by the packets after it, the gap is
    # re-requested, then given up once the session has made no progress for the gap timeout
    lost = sum(mold.parse_header(p)[2] for p in packets[10:12])
    for p in packets[12:]:
        lis.handle_packet(p)
    lis.service(t + 10)  # seen now
    assert lis.expected == at
    lis.service(t + 20)
    lis.handle_packet(mold.end_of_session(SID, framed.count + 1))
    lis.flush()
    assert lis.complete and lis.stats.unrecovered == lost and lis.stats.messages == framed.count - lost


def test_the_reorder_store_is_bounded(session) -> None:
    framed = day(session[:6_000])
    packets = mold.packets(framed, SID, 1)
    bound = 20 * 1400
    lis = listener(max_pending_bytes=bound)
    lis.handle_packet(mold.heartbeat(SID, 1))
    peak = 0
    for p in packets[1:]:  # the first packet is late: everything else waits
        lis.handle_packet(p)
        peak = max(peak, lis.seq._pending_bytes)
    assert peak <= bound and lis.stats.pending_dropped > 0
    for p in packets:  # the late packet, and the dropped ones again
        lis.handle_packet(p)
    lis.handle_packet(mold.end_of_session(SID, framed.count + 1))
    lis.flush()
    assert lis.complete and b"".join(lis.raw_kept) == framed.data.tobytes()


def test_a_listener_far_behind_the_session_reanchors(session) -> None:
    framed = day(session[:6_000])
    packets = mold.packets(framed, SID, 1)
    lis = listener(max_ahead=500, gap_timeout=1.0)
    lis.handle_packet(mold.heartbeat(SID, 1))
    lis.handle_packet(mold.heartbeat(SID, 1))
    joined = next(i for i, p in enumerate(packets) if mold.parse_header(p)[1] > 2_000)
    for i, p in enumerate(packets[joined:]):
        lis.handle_packet(p)
        if i == 40:
            lis.service(time.monotonic() + 5)  # nothing plausible for longer than the gap timeout
    lis.handle_packet(mold.end_of_session(SID, framed.count + 1))
    lis.flush()
    st = lis.stats
    assert st.reanchors == 1 and lis.complete
    assert st.messages + st.unrecovered == framed.count and st.unrecovered > 2_000
    assert b"".join(lis.raw_kept) == framed.data.tobytes()[-len(b"".join(lis.raw_kept)) :]


def _packet(msgs: list[bytes], seq: int = 1) -> bytes:
    return mold.header(SID, seq, len(msgs)) + b"".join(struct.pack(">H", len(x)) + x for x in msgs)


def test_book_errors_report_overfills_bad_sides_and_crossed_books() -> None:
    ts = 34_200_000_000_000
    msgs = [
        add_order(1, ts, 1, b"B", 100, b"XYZ", 1_000_000),  # bid 100 @ 100.00
        order_executed(1, ts, 1, 150, 2),  # more than rests: an error, not applied (100 still rest)
        add_order(1, ts, 2, b"Z", 100, b"XYZ", 1_000_100),  # side byte Z: an error, not applied
        add_order(1, ts, 3, b"S", 100, b"XYZ", 999_900),  # an ask below the bid: the book is crossed
        order_delete(1, ts, 3),
        order_executed(1, ts, 1, 0, 6),  # zero shares
        order_executed(1, ts, 1, 40, 7),  # fine: 60 left
    ]
    lis = listener(session=SID)
    lis.handle_packet(_packet(msgs))
    lis.flush()
    st = lis.stats
    assert st.book_error_kinds == {"overfill": 1, "bad_side": 1, "crossed": 1, "zero_shares": 1}
    assert st.book_errors == 4
    assert lis.books[1].orders == 1 and lis.books[1].best_bid_qty == 60
    recs, _loc, _seq = lis.records()
    assert [(int(r["type"]), int(r["qty"]), int(r["order_id"])) for r in recs] == [
        (0, 100, 1), (1, 100, 3), (3, 100, 3), (5, 40, 1)]


def test_timestamp_order_violations_are_counted() -> None:
    ts = 34_200_000_000_000
    msgs = [add_order(1, ts + 10, 1, b"B", 1, b"XYZ", 1_000_000), add_order(1, ts, 2, b"B", 1, b"XYZ", 1_000_000),
            add_order(1, ts + 20, 3, b"B", 1, b"XYZ", 1_000_000)]
    lis = listener(session=SID, stats=True)
    lis.handle_packet(_packet(msgs[:2]))
    lis.flush()
    lis.handle_packet(_packet([add_order(1, ts - 5, 4, b"B", 1, b"XYZ", 1_000_000), msgs[2]], seq=3))
    lis.flush()
    assert lis.stats.ts_order_violations == 2  # ts after ts + 10; ts - 5 after ts, across two batches
    assert "ts_order_violations=2" in stats_line(lis.stats, 0.0)


def test_partial_fills_cancels_and_queue_walks_rebuild_the_replayed_book() -> None:
    """Streams with order sizes, partial cancels (X), partial fills and market orders walking the queue
    (several E at one timestamp): the listener's records are the source records, and its books are the
    replay's books, for two stocks merged in one feed."""
    a, b = sweep_session(8_000, 1), sweep_session(8_000, 2, p0=20_000)
    assert (np.diff(a["ts_ns"][a["type"] >= 4]) == 0).any()  # queue walks happen
    directory = Directory.of(["AAA", "BBB"])
    feed = DayFeed(directory, 100)
    recs = np.concatenate([a, b])
    locs = np.concatenate([np.full(len(a), 1, np.uint16), np.full(len(b), 2, np.uint16)])
    order = np.lexsort((np.arange(len(recs)), locs, recs["ts_ns"]))
    opening = feed.opening(int(recs["ts_ns"].min()))
    enc = feed.orders(recs[order], locs[order], opening.count + 1, OrderTable())
    assert not len(enc.rejected)
    kinds = {enc.framed.message(i)[:1] for i in range(enc.framed.count)}
    assert kinds == {b"A", b"D", b"X", b"E"}
    framed = Framed.concat([opening, enc.framed, feed.closing(int(recs["ts_ns"].max()))])
    lis = listener(book=True)
    for p in mold.packets(framed, SID, 1):
        lis.handle_packet(p)
    lis.handle_packet(mold.end_of_session(SID, framed.count + 1))
    lis.flush()
    assert lis.complete and lis.stats.book_errors == 0 and lis.stats.ts_order_violations == 0
    assert_matches_source(lis, a, locate=1, n_locates=2)
    assert_matches_source(lis, b, locate=2, n_locates=2)


def test_other_sessions_are_ignored_and_ended_sessions_not_followed(session) -> None:
    framed = day(session[:500])
    lis = listener()
    lis.handle_packet(mold.end_of_session(b"QR20260101", 99))  # yesterday's end: not followed
    for p in mold.packets(framed, SID, 1):
        lis.handle_packet(p)
        lis.handle_packet(mold.heartbeat(b"QR20260105", 7))
    lis.handle_packet(mold.end_of_session(SID, framed.count + 1))
    lis.flush()
    assert lis.session == SID and lis.complete and lis.stats.other_session > 0
    assert lis.stats.messages == framed.count
