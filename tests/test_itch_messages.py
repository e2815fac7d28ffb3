"""ITCH 5.0 messages byte for byte against vectors packed by hand at the specification's offsets.

The expected bytes are built with ``struct.pack_into`` at the offsets of the NASDAQ TotalView-ITCH 5.0
specification (never from the encoder's dtypes), plus a few fully literal hex vectors. The record ->
message mapping follows the record semantics: a cancel of all that rests is an Order Delete ``D``,
of part of it an Order Cancel ``X``; an execution is an Order Executed ``E`` of the shares executed.
"""

from __future__ import annotations

import struct

import numpy as np
import pytest
from book_streams import random_session

from qrsdp_sim.itch import messages as m
from qrsdp_sim.itch import validate as v
from qrsdp_sim.itch.encoder import Encoded, Framed, encode_orders, frame_array, stock_table
from qrsdp_sim.itch.feed import DayFeed, Directory, parse_symbols
from qrsdp_sim.itch.order_state import OrderTable
from qrsdp_sim.itch.refnums import order_ref, order_refs, split_ref
from qrsdp_sim.records import RECORD_DTYPE, EventType

T0 = 34_200_123_456_789  # 09:30:00.123456789


def ts6(ts: int) -> bytes:
    """6-byte big-endian timestamp, by shifting (independent of int.to_bytes and numpy)."""
    return bytes((ts >> shift) & 0xFF for shift in (40, 32, 24, 16, 8, 0))


def header(buf: bytearray, mtype: bytes, locate: int, tracking: int, ts: int) -> None:
    struct.pack_into(">c", buf, 0, mtype)
    struct.pack_into(">H", buf, 1, locate)
    struct.pack_into(">H", buf, 3, tracking)
    buf[5:11] = ts6(ts)


def system_event(code: bytes, ts: int) -> bytes:
    buf = bytearray(12)
    header(buf, b"S", 0, 0, ts)
    struct.pack_into(">c", buf, 11, code)
    return bytes(buf)


def stock_directory(locate: int, stock: bytes, ts: int) -> bytes:
    buf = bytearray(39)
    header(buf, b"R", locate, 0, ts)
    struct.pack_into("8s", buf, 11, stock.ljust(8))
    struct.pack_into(">c", buf, 19, b"Q")  # market category: NASDAQ Global Select
    struct.pack_into(">c", buf, 20, b"N")  # financial status: normal
    struct.pack_into(">I", buf, 21, 100)  # round lot size
    struct.pack_into(">c", buf, 25, b"N")  # round lots only
    struct.pack_into(">c", buf, 26, b"C")  # issue classification: common stock
    struct.pack_into("2s", buf, 27, b"Z ")  # issue sub-type: not applicable
    struct.pack_into(">c", buf, 29, b"P")  # authenticity
    struct.pack_into(">c", buf, 30, b"N")  # short sale threshold
    struct.pack_into(">c", buf, 31, b"N")  # IPO flag
    struct.pack_into(">c", buf, 32, b"1")  # LULD reference price tier
    struct.pack_into(">c", buf, 33, b"N")  # ETP flag
    struct.pack_into(">I", buf, 34, 0)  # ETP leverage factor
    struct.pack_into(">c", buf, 38, b"N")  # inverse indicator
    return bytes(buf)


def add_order(locate: int, ts: int, ref: int, side: bytes, shares: int, stock: bytes, price: int) -> bytes:
    buf = bytearray(36)
    header(buf, b"A", locate, 0, ts)
    struct.pack_into(">Q", buf, 11, ref)
    struct.pack_into(">c", buf, 19, side)
    struct.pack_into(">I", buf, 20, shares)
    struct.pack_into("8s", buf, 24, stock.ljust(8))
    struct.pack_into(">I", buf, 32, price)
    return bytes(buf)


def order_delete(locate: int, ts: int, ref: int) -> bytes:
    buf = bytearray(19)
    header(buf, b"D", locate, 0, ts)
    struct.pack_into(">Q", buf, 11, ref)
    return bytes(buf)


def order_cancel(locate: int, ts: int, ref: int, shares: int) -> bytes:
    buf = bytearray(23)
    header(buf, b"X", locate, 0, ts)
    struct.pack_into(">Q", buf, 11, ref)
    struct.pack_into(">I", buf, 19, shares)
    return bytes(buf)


def order_executed(locate: int, ts: int, ref: int, shares: int, match: int) -> bytes:
    buf = bytearray(31)
    header(buf, b"E", locate, 0, ts)
    struct.pack_into(">Q", buf, 11, ref)
    struct.pack_into(">I", buf, 19, shares)
    struct.pack_into(">Q", buf, 23, match)
    return bytes(buf)


def frame(msg: bytes) -> bytes:
    return struct.pack(">H", len(msg)) + msg


def records(rows: list[tuple[int, int, int, int, int, int]]) -> np.ndarray:
    out = np.zeros(len(rows), RECORD_DTYPE)
    for i, (ts, t, side, px, qty, oid) in enumerate(rows):
        out[i] = (ts, t, side, px, qty, oid)
    return out


def encode(rec: np.ndarray, *, locate: int, n_locates: int, stock: str, first_seq: int = 1,
           orders: OrderTable | None = None) -> Encoded:
    """One stock's records at ``locate`` of an ``n_locates``-stock directory."""
    symbols = [f"S{i}" for i in range(1, n_locates + 1)]
    symbols[locate - 1] = stock
    return encode_orders(rec, locate, stocks=stock_table(symbols), tick_size=100, first_seq=first_seq,
                         orders=orders if orders is not None else OrderTable())


def reference_messages(rec: np.ndarray, locate: int, n_locates: int, stock: bytes, first_seq: int) -> list[bytes]:
    """The messages of a valid stream, by a plain Python model of the resting orders."""
    rest: dict[int, int] = {}
    out = []
    for r in rec:
        t, ts, qty, oid = int(r["type"]), int(r["ts_ns"]), int(r["qty"]), int(r["order_id"])
        ref = (oid - 1) * n_locates + locate
        if t <= 1:
            rest[ref] = qty
            out.append(add_order(locate, ts, ref, b"BS"[t : t + 1], qty, stock, int(r["price_ticks"]) * 100))
            continue
        left = rest[ref] - qty
        if t <= 3:
            out.append(order_delete(locate, ts, ref) if left == 0 else order_cancel(locate, ts, ref, qty))
        else:
            out.append(order_executed(locate, ts, ref, qty, first_seq + len(out)))
        if left:
            rest[ref] = left
        else:
            del rest[ref]
    return out


# -- sizes and literal vectors ---------------------------------------------------------


def test_message_sizes_match_the_specification() -> None:
    assert m.SYSTEM_EVENT_DTYPE.itemsize == 12
    assert m.STOCK_DIRECTORY_DTYPE.itemsize == 39
    assert m.ADD_ORDER_DTYPE.itemsize == 36
    assert m.ORDER_DELETE_DTYPE.itemsize == 19
    assert m.ORDER_EXECUTED_DTYPE.itemsize == 31
    assert {k: m.SIZES[k] for k in (b"S", b"R", b"A", b"D", b"E", b"X", b"F", b"U", b"C")} == {
        b"S": 12, b"R": 39, b"A": 36, b"D": 19, b"E": 31, b"X": 23, b"F": 40, b"U": 35, b"C": 36,
    }  # fmt: skip


def test_literal_add_order_vector() -> None:
    # A, locate 42, tracking 0, ts 0x010203040506, ref (1 - 1) * 42 + 42 = 42, 'B', 1 share, "AAPL    ",
    # $100.0000 = 1,000,000 = 0x000F4240
    expected = bytes.fromhex(
        "41" "002a" "0000" "010203040506" "000000000000002a" "42" "00000001" "4141504c20202020" "000f4240"
    )
    rec = records([(0x010203040506, EventType.ADD_BID, 0, 10_000, 1, 1)])
    framed = encode(rec, locate=42, n_locates=42, stock="AAPL").framed
    assert framed.message(0) == expected
    assert framed.data.tobytes() == bytes.fromhex("0024") + expected


def test_literal_system_event_vector() -> None:
    msgs = m.system_events([b"Q"], [0x0000_1F1A_2B3C])
    assert msgs.tobytes() == bytes.fromhex("53" "0000" "0000" "00001f1a2b3c" "51")


# -- each type against the hand-packed vectors ------------------------------------------


@pytest.mark.parametrize("code", [b"O", b"S", b"Q", b"M", b"E", b"C"])
def test_system_event(code: bytes) -> None:
    assert m.system_events([code], [T0]).tobytes() == system_event(code, T0)


def test_stock_directory() -> None:
    got = m.stock_directory(["AAPL", "MSFT"], [1, 2], T0).tobytes()
    assert got == stock_directory(1, b"AAPL", T0) + stock_directory(2, b"MSFT", T0)


def test_add_delete_cancel_execute_mapping_and_framing() -> None:
    # locate 2 of a 3-stock directory; refs = (order_id - 1) * 3 + 2
    rec = records([
        (T0, EventType.ADD_BID, 0, 10_000, 300, 1),
        (T0 + 1, EventType.ADD_ASK, 1, 10_002, 500, 2),
        (T0 + 2, EventType.CANCEL_BID, 0, 10_000, 100, 1),  # partial: 200 left -> X of 100
        (T0 + 3, EventType.EXECUTE_BUY, 1, 10_002, 200, 2),  # a buy takes 200 of the resting ask: 300 left
        (T0 + 4, EventType.CANCEL_BID, 0, 10_000, 200, 1),  # all that is left -> D
        (T0 + 5, EventType.ADD_ASK, 1, 10_002, 100, 3),
        # one market buy of 350 walks the ask queue: order 2 (300, oldest) in full, then 50 of order 3
        (T0 + 6, EventType.EXECUTE_BUY, 1, 10_002, 300, 2),
        (T0 + 6, EventType.EXECUTE_BUY, 1, 10_002, 50, 3),
        (T0 + 7, EventType.CANCEL_ASK, 1, 10_002, 50, 3),  # the rest of order 3 -> D
    ])  # fmt: skip
    orders = OrderTable()
    enc = encode(rec, locate=2, n_locates=3, stock="MSFT", first_seq=10, orders=orders)
    framed = enc.framed
    expected = [
        add_order(2, T0, 2, b"B", 300, b"MSFT", 1_000_000),
        add_order(2, T0 + 1, 5, b"S", 500, b"MSFT", 1_000_200),
        order_cancel(2, T0 + 2, 2, 100),
        order_executed(2, T0 + 3, 5, 200, 13),  # match number = the message's sequence number (10 + 3)
        order_delete(2, T0 + 4, 2),
        add_order(2, T0 + 5, 8, b"S", 100, b"MSFT", 1_000_200),
        order_executed(2, T0 + 6, 5, 300, 16),
        order_executed(2, T0 + 6, 8, 50, 17),
        order_delete(2, T0 + 7, 8),
    ]
    assert not len(enc.rejected) and framed.count == 9
    assert [framed.message(i) for i in range(9)] == expected
    assert framed.data.tobytes() == b"".join(frame(x) for x in expected)
    assert list(np.diff(framed.offsets)) == [38, 38, 25, 33, 21, 38, 33, 33, 21]
    assert list(framed.ts) == [int(t) for t in rec["ts_ns"]]
    assert orders.orders == 0


def test_encoder_matches_a_python_model_on_partial_fills_and_cancels() -> None:
    rec = random_session(20_000, seed=5, max_qty=900)
    assert (rec["qty"] > 1).any()
    orders = OrderTable()
    # in batches, the resting orders carried from one to the next
    parts = []
    seq = 1_000
    for lo in range(0, len(rec), 3_001):
        enc = encode(rec[lo : lo + 3_001], locate=7, n_locates=11, stock="ZZ", first_seq=seq, orders=orders)
        assert not len(enc.rejected)
        parts.append(enc.framed.data.tobytes())
        seq += enc.framed.count
    expected = reference_messages(rec, 7, 11, b"ZZ", 1_000)
    kinds = {x[:1] for x in expected}
    assert kinds == {b"A", b"D", b"X", b"E"}
    assert b"".join(parts) == b"".join(frame(x) for x in expected)


def test_encoder_refuses_records_it_cannot_encode_and_keeps_the_rest() -> None:
    rows = [
        (T0, 0, 0, 10_000, 100, 1),  # ok
        (T0, 9, 0, 10_000, 100, 2),  # type 9
        (1 << 48, 0, 0, 10_000, 100, 3),  # ts beyond 6 bytes
        (T0, 0, 0, 10_000, 0, 4),  # zero quantity
        (T0, 0, 0, 10_000, 100, 0),  # order id 0
        (T0, 0, 0, -5, 100, 5),  # negative price
        (T0, 0, 0, 50_000_000, 100, 6),  # 50,000,000 ticks x 100 > 2^32 - 1
        (T0, 0, 1, 10_000, 100, 7),  # an add bid with side 1
        (T0, 2, 0, 10_000, 100, 99),  # cancel of an order that is not resting
        (T0, 0, 0, 10_000, 100, 1),  # order 1 again
        (T0, 3, 1, 10_000, 100, 1),  # cancel ask of a resting bid
        (T0, 2, 0, 10_001, 100, 1),  # at another price
        (T0, 5, 0, 10_000, 101, 1),  # executes more than rests
        (T0, 5, 0, 10_000, 40, 1),  # ok: partial execution -> E of 40
        (T0, 2, 0, 10_000, 60, 1),  # ok: the remaining 60 -> D
    ]  # fmt: skip
    enc = encode(records(rows), locate=1, n_locates=1, stock="A")
    assert list(enc.reasons) == [0, v.BAD_TYPE, v.BAD_TIMESTAMP, v.ZERO_QTY, v.BAD_ORDER_ID, v.PRICE_RANGE,
                                 v.PRICE_RANGE, v.ADD_SIDE, v.UNKNOWN_ORDER, v.DUPLICATE_ORDER, v.SIDE_MISMATCH,
                                 v.PRICE_MISMATCH, v.OVERFILL, 0, 0]
    assert enc.rest[12] == 100
    assert [enc.framed.message(i)[:1] for i in range(enc.framed.count)] == [b"A", b"E", b"D"]
    assert "does not fit the 4-byte ITCH price" in v.describe(v.PRICE_RANGE, records(rows)[6], 100)
    # order ids whose reference would not fit 64 bits
    huge = records([(T0, 0, 0, 1, 1, (1 << 64) - 1)])
    assert list(encode(huge, locate=3, n_locates=3, stock="A").reasons) == [v.BAD_ORDER_ID]
    # a full order table refuses adds
    full = OrderTable(max_orders=2)
    enc = encode(records([(T0, 0, 0, 1, 1, k) for k in (1, 2, 3)]), locate=1, n_locates=1, stock="A", orders=full)
    assert list(enc.reasons) == [0, 0, v.TOO_MANY_ORDERS]
    with pytest.raises(ValueError, match="locate"):
        encode_orders(records(rows[:1]), 3, stocks=stock_table(["A", "B"]), tick_size=100, first_seq=1,
                      orders=OrderTable())
    assert encode(records(rows[:0]), locate=1, n_locates=1, stock="A").framed.count == 0


def _feed(seq: v.StockSequence, ts: list[int], seq0: int) -> list[int]:
    arr = np.array(ts, np.uint64)
    verdict, before, _gaps = seq.feed(arr, seq0, np.ones(len(arr), bool))
    return [before, *verdict.tolist()]


def test_one_event_out_of_sequence_cannot_block_its_stock() -> None:
    """A timestamp spike, a step back in time, a seq far ahead: each is refused by itself, and the
    events after it are taken -- none of them becomes a 'duplicate' or a 'step back' because of it."""
    P, T, R, D = v.PENDING, v.TAKEN, v.REFUSED, v.DUPLICATE
    s = v.StockSequence()
    assert _feed(s, [T0, T0 + 10**12, T0 + 5, T0 + 6], 0) == [0, T, R, T, P]  # a spike in time
    assert _feed(s, [T0 + 7], 4) == [1, P]  # the pending one (seq 3) is taken by its successor
    assert _feed(s, [T0 - 1], 5) == [0, R]  # a step back in time
    assert _feed(s, [T0 + 8], 6) == [1, P]  # seq 4, pending since, is taken
    s = v.StockSequence()
    assert _feed(s, [T0, T0 + 1], 0) == [0, T, P]
    assert _feed(s, [T0 + 2], 10**9) == [1, P]  # seq 1 taken; a seq far ahead: pending, not yet believed
    assert _feed(s, [T0 + 3, T0 + 4], 2) == [2, T, P]  # its neighbours continue seq 1, not it: refused
    assert _feed(s, [T0, T0 + 1, T0 + 3], 0) == [0, D, D, D]  # a republished range: duplicates
    assert s.close(4) == (1, 0) and s.conf_seq == 3  # the end takes the pending event
    s = v.StockSequence()
    assert _feed(s, [T0, T0 + 1], 0)[1:] == [T, P]
    _verdict, before, gaps = s.feed(np.array([T0 + 2], np.uint64), 5, np.ones(1, bool))  # events 2..4 lost
    assert (before, gaps) == (1, 0)
    assert s.close(6) == (1, 3)  # taken; the 3 lost events counted as skipped
    s = v.StockSequence()
    _feed(s, [T0], 0)
    assert s.close(0) == (2, 0)  # pending beyond the session's count: refused


# -- reference numbers -------------------------------------------------------------------


def test_reference_numbers_are_dense_unique_and_invertible() -> None:
    n_locates = 5
    ids = np.arange(1, 2_001, dtype=np.uint64)
    refs = np.concatenate([order_refs(ids, loc, n_locates) for loc in range(1, n_locates + 1)])
    assert len(np.unique(refs)) == len(refs)  # unique across the feed
    assert int(refs.min()) == 1 and int(refs.max()) == len(refs)  # dense: exactly 1..N x orders
    assert order_ref(1, 1, 5) == 1 and order_ref(1, 5, 5) == 5 and order_ref(2, 1, 5) == 6
    assert split_ref(order_ref(1234, 3, 5), 5) == (3, 1234)
    loc, oid = split_ref(refs, n_locates)
    assert (loc == np.repeat(np.arange(1, 6), 2_000)).all() and (oid == np.tile(ids, 5)).all()
    with pytest.raises(ValueError):
        order_refs(np.array([0], np.uint64), 1, 1)
    with pytest.raises(ValueError):
        order_refs(ids, 0, 5)


# -- a day's framing ----------------------------------------------------------------------


def test_day_opening_and_closing() -> None:
    feed = DayFeed(Directory.of(["MSFT", "AAPL"]), tick_size=100)
    opening = feed.opening(T0)
    three, four = 3 * 3_600_000_000_000, 4 * 3_600_000_000_000
    assert [opening.message(i) for i in range(opening.count)] == [
        system_event(b"O", three), system_event(b"S", four),
        stock_directory(1, b"AAPL", four), stock_directory(2, b"MSFT", four),  # alphabetical locates
        system_event(b"Q", T0),
    ]  # fmt: skip
    last = 57_600_000_000_000
    closing = feed.closing(last)
    assert [closing.message(i) for i in range(3)] == [
        system_event(b"M", last), system_event(b"E", 20 * 3_600_000_000_000),
        system_event(b"C", 20 * 3_600_000_000_000 + 300_000_000_000),
    ]  # fmt: skip
    # an early first event never puts the system events after it
    early = feed.opening(1_000)
    assert [int.from_bytes(early.message(i)[5:11], "big") for i in range(early.count)] == [1_000] * 5


def test_framed_concat_and_slice() -> None:
    a = frame_array(m.system_events([b"O", b"S"], [1, 2]), np.array([1, 2], np.uint64))
    b = frame_array(m.system_events([b"Q"], [3]), 3)
    both = Framed.concat([a, Framed.empty(), b])
    assert both.count == 3 and both.data.tobytes() == a.data.tobytes() + b.data.tobytes()
    assert both[1:3].data.tobytes() == both.data.tobytes()[14:]
    assert list(both.ts) == [1, 2, 3]


def test_parse_symbols() -> None:
    assert parse_symbols("MSFT, AAPL:18000") == ["MSFT", "AAPL"]
    with pytest.raises(ValueError):
        parse_symbols("AAPL,AAPL")
    with pytest.raises(ValueError):
        parse_symbols("TOOLONGNAME")
    with pytest.raises(ValueError):
        parse_symbols("A|B")  # a separator of the streamer's commit metadata
    assert Directory.of(["MSFT", "AAPL"]).locate("MSFT") == 2
    assert Directory.of(["A"]).fingerprint(100) != Directory.of(["A"]).fingerprint(1)
