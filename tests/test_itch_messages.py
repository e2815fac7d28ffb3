"""ITCH 5.0 messages byte for byte against vectors packed by hand at the specification's offsets.

The expected bytes are built with ``struct.pack_into`` at the offsets of the NASDAQ TotalView-ITCH 5.0
specification (never from the encoder's dtypes), plus a few fully literal hex vectors.
"""

from __future__ import annotations

import struct

import numpy as np
import pytest

from qrsdp_sim.itch import messages as m
from qrsdp_sim.itch.encoder import Framed, encode_records, frame_array
from qrsdp_sim.itch.feed import DayFeed, Directory, parse_symbols
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
    expected = bytes.fromhex("41002a0000010203040506000000000000002a42000000014141504c20202020000f4240")
    rec = records([(0x010203040506, EventType.ADD_BID, 0, 10_000, 1, 1)])
    framed = encode_records(rec, locate=42, n_locates=42, stock="AAPL", tick_size=100, first_seq=1)
    assert framed.message(0) == expected
    assert framed.data.tobytes() == bytes.fromhex("0024") + expected


def test_literal_system_event_vector() -> None:
    msgs = m.system_events([b"Q"], [0x0000_1F1A_2B3C])
    assert msgs.tobytes() == bytes.fromhex("530000000000001f1a2b3c51")


# -- each type against the hand-packed vectors ------------------------------------------


@pytest.mark.parametrize("code", [b"O", b"S", b"Q", b"M", b"E", b"C"])
def test_system_event(code: bytes) -> None:
    assert m.system_events([code], [T0]).tobytes() == system_event(code, T0)


def test_stock_directory() -> None:
    got = m.stock_directory(["AAPL", "MSFT"], [1, 2], T0).tobytes()
    assert got == stock_directory(1, b"AAPL", T0) + stock_directory(2, b"MSFT", T0)


def test_add_delete_execute_mapping_and_framing() -> None:
    # locate 2 of a 3-stock directory; refs = (order_id - 1) * 3 + 2
    rec = records([
        (T0, EventType.ADD_BID, 0, 10_000, 1, 1),
        (T0 + 1, EventType.ADD_ASK, 1, 10_002, 3, 2),
        (T0 + 2, EventType.CANCEL_BID, 0, 10_000, 1, 1),
        (T0 + 3, EventType.EXECUTE_BUY, 1, 10_002, 3, 2),  # a buy hits the resting ask (order 2)
        (T0 + 4, EventType.ADD_BID, 0, 9_999, 1, 3),
        (T0 + 5, EventType.EXECUTE_SELL, 0, 9_999, 1, 3),
    ])  # fmt: skip
    framed = encode_records(rec, locate=2, n_locates=3, stock="MSFT", tick_size=100, first_seq=10)
    expected = [
        add_order(2, T0, 2, b"B", 1, b"MSFT", 1_000_000),
        add_order(2, T0 + 1, 5, b"S", 3, b"MSFT", 1_000_200),
        order_delete(2, T0 + 2, 2),
        order_executed(2, T0 + 3, 5, 3, 13),  # match number = the message's sequence number (10 + 3)
        add_order(2, T0 + 4, 8, b"B", 1, b"MSFT", 999_900),
        order_executed(2, T0 + 5, 8, 1, 15),
    ]
    assert framed.count == 6
    assert [framed.message(i) for i in range(6)] == expected
    assert framed.data.tobytes() == b"".join(frame(x) for x in expected)
    assert list(np.diff(framed.offsets)) == [38, 38, 21, 33, 38, 33]
    assert list(framed.ts) == [T0 + i for i in range(6)]


def test_encoder_batch_matches_per_message_packing() -> None:
    rng = np.random.default_rng(5)
    n = 3_000
    types = rng.integers(0, 6, n)
    rec = np.zeros(n, RECORD_DTYPE)
    rec["ts_ns"] = T0 + np.cumsum(rng.integers(0, 1000, n))
    rec["type"] = types
    rec["side"] = np.array([0, 1, 0, 1, 1, 0])[types]
    rec["price_ticks"] = rng.integers(9_000, 11_000, n)
    rec["qty"] = rng.integers(1, 500, n)
    rec["order_id"] = rng.integers(1, 1 << 40, n)
    framed = encode_records(rec, locate=7, n_locates=11, stock="ZZ", tick_size=100, first_seq=1_000)
    parts = []
    for i, r in enumerate(rec):
        t, ref = int(r["type"]), (int(r["order_id"]) - 1) * 11 + 7
        ts = int(r["ts_ns"])
        if t <= 1:
            parts.append(
                add_order(7, ts, ref, b"BS"[t : t + 1], int(r["qty"]), b"ZZ", int(r["price_ticks"]) * 100)
            )
        elif t <= 3:
            parts.append(order_delete(7, ts, ref))
        else:
            parts.append(order_executed(7, ts, ref, int(r["qty"]), 1_000 + i))
    assert framed.data.tobytes() == b"".join(frame(x) for x in parts)


def test_encoder_rejects_bad_input() -> None:
    good = records([(T0, 0, 0, 10_000, 1, 1)])
    with pytest.raises(ValueError, match="order id 0"):
        encode_records(
            records([(T0, 0, 0, 1, 1, 0)]), locate=1, n_locates=1, stock="A", tick_size=100, first_seq=1
        )
    with pytest.raises(ValueError, match="price"):
        encode_records(
            records([(T0, 0, 0, -5, 1, 1)]), locate=1, n_locates=1, stock="A", tick_size=100, first_seq=1
        )
    with pytest.raises(ValueError, match="timestamp"):
        encode_records(
            records([(1 << 48, 0, 0, 5, 1, 1)]), locate=1, n_locates=1, stock="A", tick_size=100, first_seq=1
        )
    with pytest.raises(ValueError, match="event type"):
        encode_records(
            records([(T0, 9, 0, 5, 1, 1)]), locate=1, n_locates=1, stock="A", tick_size=100, first_seq=1
        )
    with pytest.raises(ValueError, match="locate"):
        encode_records(good, locate=3, n_locates=2, stock="A", tick_size=100, first_seq=1)
    assert encode_records(good[:0], locate=1, n_locates=1, stock="A", tick_size=100, first_seq=1).count == 0


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
    assert Directory.of(["MSFT", "AAPL"]).locate("MSFT") == 2
    assert Directory.of(["A"]).fingerprint(100) != Directory.of(["A"]).fingerprint(1)
