"""What a record must satisfy to become an ITCH message, and the reasons one is refused.

Every record that reaches the ITCH encoder (live streamer or ``itch-export``) is checked twice, by
compiled code, with no Python per record:

* **on its own** (:func:`check_stock`, when the streamer reads it from Kafka, before it is held for
  the time-ordered merge): event type 0-5, timestamp within the 6-byte ITCH field and not earlier
  than the stock's previous accepted event, quantity >= 1, order id >= 1 with a reference number
  that fits 64 bits, an Add Order's price ``price_ticks x tick_size`` within the 4-byte ITCH price
  (0 .. 429,496.7295 $), the side byte agreeing with the type of an add;
* **against the resting orders** (:mod:`qrsdp_sim.itch.encoder`, when the message is built): a
  cancel or execution must name a resting order of the same side and price and take no more than
  its remaining shares; an add must not reuse a resting reference; at most ``max_orders`` rest.

A refused record produces no ITCH message: the streamer sends its Kafka message to the dead-letter
topic with :func:`describe` as the reason (``itch-export`` counts it and names the first ones).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from qrsdp_sim.itch.messages import MAX_PRICE, MAX_TIMESTAMP

OK = 0
# on its own
BAD_TYPE = 1
BAD_TIMESTAMP = 2
TIME_BACKWARDS = 3
ZERO_QTY = 4
BAD_ORDER_ID = 5
PRICE_RANGE = 6
ADD_SIDE = 7
# against the resting orders
UNKNOWN_ORDER = 8
DUPLICATE_ORDER = 9
SIDE_MISMATCH = 10
PRICE_MISMATCH = 11
OVERFILL = 12
TOO_MANY_ORDERS = 13

REASON_NAMES: dict[int, str] = {
    BAD_TYPE: "bad_type",
    BAD_TIMESTAMP: "bad_timestamp",
    TIME_BACKWARDS: "time_backwards",
    ZERO_QTY: "zero_qty",
    BAD_ORDER_ID: "bad_order_id",
    PRICE_RANGE: "price_out_of_range",
    ADD_SIDE: "add_side",
    UNKNOWN_ORDER: "unknown_order",
    DUPLICATE_ORDER: "duplicate_order",
    SIDE_MISMATCH: "side_mismatch",
    PRICE_MISMATCH: "price_mismatch",
    OVERFILL: "overfill",
    TOO_MANY_ORDERS: "too_many_orders",
}
"""Short names (counter keys in the streamer's summary and in ``itch-export``'s)."""

_EMPTY_REF = np.uint64(0xFFFF_FFFF_FFFF_FFFF)  # the order tables' free-slot marker: no reference may take it
_MAX_TS = np.uint64(MAX_TIMESTAMP)
_MAX_PRICE = np.int64(MAX_PRICE)
_SAFE_ID = np.uint64((2**64 - 2 - 65_535) // 65_535)  # ids up to this have a reference with any directory


@njit(inline="always", nogil=True, cache=True)
def record_ref(order_id, locate, n_locates):  # pragma: no cover - compiled
    """``(order_id - 1) * N + locate`` (the caller checked :func:`stateless_reason` first)."""
    return (np.uint64(order_id) - np.uint64(1)) * np.uint64(n_locates) + np.uint64(locate)


@njit(inline="always", nogil=True, cache=True)
def stateless_reason(rtype, ts, price_ticks, qty, order_id, side, locate, n_locates, tick):  # pragma: no cover
    """The reason a record can never be encoded, whatever rests (0 when it can)."""
    if rtype > 5:
        return BAD_TYPE
    if np.uint64(ts) > _MAX_TS:
        return BAD_TIMESTAMP
    if qty == 0:
        return ZERO_QTY
    oid = np.uint64(order_id)
    if oid == np.uint64(0):
        return BAD_ORDER_ID
    if oid > _SAFE_ID:  # rare: only then the exact (dividing) check whether the reference fits 64 bits
        limit = (_EMPTY_REF - np.uint64(1) - np.uint64(locate)) // np.uint64(n_locates)
        if oid - np.uint64(1) > limit:
            return BAD_ORDER_ID
    if rtype <= 1:
        if side != rtype:
            return ADD_SIDE
        px = np.int64(price_ticks) * np.int64(tick)
        if px < 0 or px > _MAX_PRICE:
            return PRICE_RANGE
    return OK


@njit(cache=True, nogil=True)
def _check_stock(records, locate, n_locates, tick, last_ts, reasons):  # pragma: no cover - compiled
    """Reasons of one stock's consecutive records (0 = accepted); returns the last accepted ts."""
    for i in range(len(records)):
        r = records[i]
        code = stateless_reason(r.type, r.ts_ns, r.price_ticks, r.qty, r.order_id, r.side, locate, n_locates, tick)
        if code == 0 and r.ts_ns < last_ts:
            code = TIME_BACKWARDS
        reasons[i] = code
        if code == 0:
            last_ts = r.ts_ns
    return last_ts


def check_stock(
    records: np.ndarray, *, locate: int, n_locates: int, tick_size: int, last_ts: int
) -> tuple[np.ndarray, int]:
    """Check one stock's records in their order; ``last_ts`` is the stock's last accepted timestamp.

    Returns (reason per record, uint8, 0 = accepted; the new last accepted timestamp).
    """
    reasons = np.empty(len(records), np.uint8)
    if len(records) == 0:
        return reasons, last_ts
    last = _check_stock(records, np.uint16(locate), np.int64(n_locates), np.int64(tick_size), np.uint64(last_ts),
                        reasons)
    return reasons, int(last)


def describe(code: int, record: np.void, tick_size: int, rest: int | None = None) -> str:
    """One line for a refused record (the dead-letter reason)."""
    t, ts, px, qty, oid = (int(record["type"]), int(record["ts_ns"]), int(record["price_ticks"]),
                           int(record["qty"]), int(record["order_id"]))
    if code == BAD_TYPE:
        return f"event type {t} is not one of 0-5 (ADD/CANCEL/EXECUTE)"
    if code == BAD_TIMESTAMP:
        return f"timestamp {ts} ns does not fit the 6-byte ITCH field (max {MAX_TIMESTAMP})"
    if code == TIME_BACKWARDS:
        return f"timestamp {ts} ns is earlier than the stock's previous event"
    if code == ZERO_QTY:
        return "quantity 0"
    if code == BAD_ORDER_ID:
        return f"order id {oid} has no ITCH order reference (0, or too large for 64 bits)"
    if code == PRICE_RANGE:
        return (f"price {px} ticks x tick size {tick_size} = {px * tick_size} does not fit the 4-byte ITCH price "
                f"(0..{MAX_PRICE}, i.e. up to $429,496.7295)")
    if code == ADD_SIDE:
        return f"add of type {t} carries side {int(record['side'])}"
    if code == UNKNOWN_ORDER:
        return f"order {oid} is not resting (never added, already removed, or its add was refused)"
    if code == DUPLICATE_ORDER:
        return f"order {oid} is already resting"
    if code == SIDE_MISMATCH:
        return f"side of type {t} / side {int(record['side'])} disagrees with resting order {oid}"
    if code == PRICE_MISMATCH:
        return f"price {px} ticks differs from resting order {oid}'s price"
    if code == OVERFILL:
        return f"quantity {qty} is larger than the {rest if rest is not None else '?'} shares order {oid} has left"
    if code == TOO_MANY_ORDERS:
        return "too many resting orders for one trading day (the streamer's order table is full)"
    return f"reason {code}"
