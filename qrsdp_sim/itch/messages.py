"""NASDAQ TotalView-ITCH 5.0 message layouts as numpy big-endian structured dtypes.

Every message starts with the same 11 bytes: message type (1 byte, ASCII), stock locate
(u16), tracking number (u16) and timestamp (6 bytes: nanoseconds since midnight, big-endian).
All integers are big-endian; alpha fields are ASCII, left-justified and space-padded; prices
are u32 with 4 implied decimal places.

The feed uses six types (the engine needs no others): System Event ``S``, Stock Directory ``R``,
Add Order ``A``, Order Delete ``D`` (a full cancel), Order Cancel ``X`` (a partial cancel) and Order
Executed ``E``. The listener also decodes the other order-book types (``F``, ``C``, ``U``) so it can
read any ITCH 5.0 stream.

A message framed with its 2-byte big-endian length is both the MoldUDP64 message block and the
layout of NASDAQ's historical ITCH files.
"""

from __future__ import annotations

import numpy as np

_HEADER = [
    ("type", "S1"),
    ("locate", ">u2"),
    ("tracking", ">u2"),
    # 48-bit big-endian nanoseconds since midnight, as its high 16 and low 32 bits (byte-identical
    # to one 6-byte field, and assignable with fast numeric numpy operations)
    ("ts_hi", ">u2"),
    ("ts_lo", ">u4"),
]

SYSTEM_EVENT_DTYPE = np.dtype([*_HEADER, ("event_code", "S1")])
STOCK_DIRECTORY_DTYPE = np.dtype(
    [
        *_HEADER,
        ("stock", "S8"),
        ("market_category", "S1"),
        ("financial_status", "S1"),
        ("round_lot_size", ">u4"),
        ("round_lots_only", "S1"),
        ("issue_classification", "S1"),
        ("issue_subtype", "S2"),
        ("authenticity", "S1"),
        ("short_sale_threshold", "S1"),
        ("ipo_flag", "S1"),
        ("luld_tier", "S1"),
        ("etp_flag", "S1"),
        ("etp_leverage_factor", ">u4"),
        ("inverse_indicator", "S1"),
    ]
)
ADD_ORDER_DTYPE = np.dtype(
    [*_HEADER, ("ref", ">u8"), ("side", "u1"), ("shares", ">u4"), ("stock", "S8"), ("price", ">u4")]
)
ORDER_DELETE_DTYPE = np.dtype([*_HEADER, ("ref", ">u8")])
ORDER_CANCEL_DTYPE = np.dtype([*_HEADER, ("ref", ">u8"), ("shares", ">u4")])  # X: shares cancelled
ORDER_EXECUTED_DTYPE = np.dtype([*_HEADER, ("ref", ">u8"), ("shares", ">u4"), ("match", ">u8")])

SIZES: dict[bytes, int] = {
    b"S": 12,
    b"R": 39,
    b"H": 25,
    b"Y": 20,
    b"L": 26,
    b"V": 35,
    b"W": 12,
    b"K": 28,
    b"J": 35,
    b"h": 21,
    b"A": 36,
    b"F": 40,
    b"E": 31,
    b"C": 36,
    b"X": 23,
    b"D": 19,
    b"U": 35,
    b"P": 44,
    b"Q": 40,
    b"B": 19,
    b"I": 50,
    b"N": 20,
    b"O": 48,
}
"""Length of every ITCH 5.0 message type (the listener rejects a known type of any other length)."""

assert SYSTEM_EVENT_DTYPE.itemsize == SIZES[b"S"]
assert STOCK_DIRECTORY_DTYPE.itemsize == SIZES[b"R"]
assert ADD_ORDER_DTYPE.itemsize == SIZES[b"A"]
assert ORDER_DELETE_DTYPE.itemsize == SIZES[b"D"]
assert ORDER_EXECUTED_DTYPE.itemsize == SIZES[b"E"]
assert ORDER_CANCEL_DTYPE.itemsize == SIZES[b"X"]



# -- System Event codes -----------------------------------------------------------------
START_OF_MESSAGES = b"O"
START_OF_SYSTEM_HOURS = b"S"
START_OF_MARKET_HOURS = b"Q"
END_OF_MARKET_HOURS = b"M"
END_OF_SYSTEM_HOURS = b"E"
END_OF_MESSAGES = b"C"

EVENT_CODE_NAMES = {
    b"O": "start of messages",
    b"S": "start of system hours",
    b"Q": "start of market hours",
    b"M": "end of market hours",
    b"E": "end of system hours",
    b"C": "end of messages",
}

# Stock Directory values the feed publishes for every simulated security (see docs/itch-feed.md).
DIRECTORY_DEFAULTS: dict[str, object] = {
    "market_category": b"Q",  # NASDAQ Global Select Market
    "financial_status": b"N",  # normal
    "round_lot_size": 100,
    "round_lots_only": b"N",
    "issue_classification": b"C",  # common stock
    "issue_subtype": b"Z ",  # not applicable
    "authenticity": b"P",  # live/production (the whole feed is a simulation; see docs)
    "short_sale_threshold": b"N",
    "ipo_flag": b"N",
    "luld_tier": b"1",
    "etp_flag": b"N",
    "etp_leverage_factor": 0,
    "inverse_indicator": b"N",
}

MAX_PRICE = 0xFFFF_FFFF  # u32, 4 implied decimals
MAX_TIMESTAMP = (1 << 48) - 1


def stock_field(symbol: str) -> bytes:
    """The 8-byte, space-padded ASCII stock field."""
    raw = symbol.encode("ascii")
    if not 1 <= len(raw) <= 8:
        raise ValueError(f"stock symbol {symbol!r} must be 1-8 ASCII characters")
    return raw.ljust(8, b" ")


BUY = ord("B")  # Add Order buy/sell indicator (field ``side`` holds the ASCII code)
SELL = ord("S")


def set_timestamps(out: np.ndarray, ts_ns: np.ndarray | int) -> None:
    """Fill the 6-byte timestamp field (``ts_hi``/``ts_lo``) of ``out`` from ns since midnight."""
    ts = np.asarray(ts_ns, dtype=np.uint64)
    if ts.size and int(ts.max()) > MAX_TIMESTAMP:
        raise ValueError("timestamp does not fit the 6-byte ITCH field")
    out["ts_hi"] = ts >> np.uint64(32)
    out["ts_lo"] = ts & np.uint64(0xFFFF_FFFF)


def timestamps(msgs: np.ndarray) -> np.ndarray:
    """The ns-since-midnight timestamps of decoded messages (uint64)."""
    return (msgs["ts_hi"].astype(np.uint64) << np.uint64(32)) | msgs["ts_lo"].astype(np.uint64)


def system_events(codes: list[bytes], ts_ns: list[int]) -> np.ndarray:
    """System Event messages (stock locate 0) as an array of SYSTEM_EVENT_DTYPE."""
    out = np.zeros(len(codes), SYSTEM_EVENT_DTYPE)
    out["type"] = b"S"
    set_timestamps(out, np.array(ts_ns, dtype=np.uint64))
    out["event_code"] = codes
    return out


def stock_directory(symbols: list[str], locates: list[int], ts_ns: int) -> np.ndarray:
    """One Stock Directory message per symbol, all stamped ``ts_ns``."""
    out = np.zeros(len(symbols), STOCK_DIRECTORY_DTYPE)
    out["type"] = b"R"
    out["locate"] = locates
    set_timestamps(out, ts_ns)
    out["stock"] = [stock_field(s) for s in symbols]
    for name, value in DIRECTORY_DEFAULTS.items():
        out[name] = value
    return out
