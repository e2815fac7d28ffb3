"""The reference listener without Kafka: decoding, books, reordering, duplicates, gap recovery over
UDP, giving up, other ITCH types, and fuzzed packets."""

from __future__ import annotations

import io
import struct
import threading

import numpy as np
import pytest
from test_itch_messages import add_order, order_delete, order_executed, system_event

from qrsdp_sim.book.replay import OrderBook
from qrsdp_sim.engine import SessionConfig, simulate_session
from qrsdp_sim.itch import moldudp64 as mold
from qrsdp_sim.itch.encoder import Framed
from qrsdp_sim.itch.feed import DayFeed, Directory
from qrsdp_sim.itch.listener import Listener, ListenerConfig
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
    feed = DayFeed(Directory.of(list(symbols)), tick_size=100)
    opening = feed.opening(int(records["ts_ns"][0]))
    orders = feed.orders(symbol, records, opening.count + 1)
    return Framed.concat([opening, orders, feed.closing(int(records["ts_ns"].max()))])


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
    assert lines[5] == (
        f"[seq=6] ADD_ORDER ref={(int(first['order_id']) - 1) * 2 + 2} side={side} shares=1 "
        f"stock=MSFT price={price // 10000}.{price % 10000:04d}"
    )
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

    add_f = msg(
        b"F",
        40,
        [
            (">Q", 11, 100),
            (">c", 19, b"B"),
            (">I", 20, 500),
            ("8s", 24, b"XYZ     "),
            (">I", 32, 1_000_000),
            ("4s", 36, b"MPID"),
        ],
    )
    cancel_x = msg(b"X", 23, [(">Q", 11, 100), (">I", 19, 200)])  # 300 left
    replace_u = msg(b"U", 35, [(">Q", 11, 100), (">Q", 19, 101), (">I", 27, 700), (">I", 31, 1_000_100)])
    exec_c = msg(
        b"C", 36, [(">Q", 11, 101), (">I", 19, 100), (">Q", 23, 9), (">c", 31, b"Y"), (">I", 32, 1_000_100)]
    )
    ask = add_order(1, ts, 102, b"S", 50, b"XYZ", 1_000_300)
    msgs = [
        system_event(b"O", ts),
        add_f,
        cancel_x,
        replace_u,
        exec_c,
        ask,
        order_executed(1, ts, 102, 50, 10),
        order_delete(1, ts, 101),
    ]
    body = b"".join(struct.pack(">H", len(x)) + x for x in msgs)
    lis = listener()
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


def test_fuzzed_packets_never_crash_the_listener(session) -> None:
    framed = day(session[:3_000])
    packets = mold.packets(framed, SID, 1)
    rng = np.random.default_rng(2024)
    lis = listener(print_messages=True, book=True)
    lis.handle_packet(packets[0])  # follow the session
    fuzzed = 0
    for k in range(6_000):
        base = bytearray(packets[int(rng.integers(len(packets)))])
        kind = k % 6
        if kind == 0:  # random bytes of random length
            data = rng.integers(0, 256, int(rng.integers(0, 300)), dtype=np.uint8).tobytes()
        elif kind == 1:  # truncated anywhere
            data = bytes(base[: int(rng.integers(0, len(base)))])
        elif kind == 2:  # bit flips in the body (lengths and message types included)
            for _ in range(int(rng.integers(1, 6))):
                pos = int(rng.integers(20, len(base)))
                base[pos] ^= 1 << int(rng.integers(8))
            data = bytes(base)
        elif kind == 3:  # wrong message count
            struct.pack_into(">H", base, 18, int(rng.integers(0, 0x10000)))
            data = bytes(base)
        elif kind == 4:  # random sequence numbers, huge and tiny
            struct.pack_into(">Q", base, 10, int(rng.integers(0, 1 << 63)))
            data = bytes(base)
        else:  # garbage after a valid header, with a plausible count
            data = (
                bytes(base[:20]) + rng.integers(0, 256, int(rng.integers(1, 200)), dtype=np.uint8).tobytes()
            )
        lis.handle_packet(data)
        fuzzed += 1
    lis.flush()
    st = lis.stats
    assert st.packets == fuzzed + 1
    assert st.malformed_packets > 1_000
    assert st.bad_messages > 0 or st.book_errors > 0
    # and it still works: a fresh listener given the same garbage then the real feed ends complete
    lis2 = listener()
    lis2.handle_packet(mold.heartbeat(SID, 1))
    for junk in (b"", b"\x00" * 19, b"Q" * 20, mold.header(SID, 1, 3) + b"\x00\x05abc"):
        lis2.handle_packet(junk)
    for p in packets:
        lis2.handle_packet(p)
    lis2.handle_packet(mold.end_of_session(SID, framed.count + 1))
    lis2.flush()
    assert lis2.complete and lis2.stats.malformed_packets == 3
    assert b"".join(lis2.raw_kept) == framed.data.tobytes()


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
