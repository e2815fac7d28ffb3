"""What a record must satisfy to become an ITCH message, and the reasons one is refused.

Every record that reaches the ITCH encoder (live streamer or ``itch-export``) is checked twice, by
compiled code, with no Python per record:

* **on its own** (:func:`check_records`, when the streamer reads it from Kafka): event type 0-5,
  timestamp within the day (ns since midnight, so within the 6-byte ITCH field too; the Parquet
  consumer draws the same line), quantity >= 1, order id >= 1 with a reference number that
  fits 64 bits, an Add Order's price ``price_ticks x tick_size`` within the 4-byte ITCH price
  (0 .. 429,496.7295 $), the side byte agreeing with the type of an add;
* **in its stock's sequence** (:class:`StockSequence`): a stock's events come with increasing Kafka
  ``seq`` and never go back in time. One event that jumps ahead (a seq or a timestamp far beyond its
  neighbours) must not make every later event look like a duplicate or a step back in time, so an
  event is only taken once the stock's next event (or its end-of-session marker) continues it; one that
  the next event does not continue, but the event before it does, is the one refused
  (``out_of_sequence``). Events below what was taken are duplicates (a republished range);
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
from qrsdp_sim.kafka.message import DAY_NS

OK = 0
# on its own
BAD_TYPE = 1
BAD_TIMESTAMP = 2
OUT_OF_SEQUENCE = 3
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
    OUT_OF_SEQUENCE: "out_of_sequence",
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
_MAX_TS = np.uint64(min(MAX_TIMESTAMP, DAY_NS - 1))  # ns since midnight: within the day
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
def _check_records(records, locate, n_locates, tick, reasons):  # pragma: no cover - compiled
    for i in range(len(records)):
        r = records[i]
        reasons[i] = stateless_reason(r.type, r.ts_ns, r.price_ticks, r.qty, r.order_id, r.side, locate, n_locates,
                                      tick)


def check_records(records: np.ndarray, *, locate: int, n_locates: int, tick_size: int) -> np.ndarray:
    """The reason each record can never be encoded (uint8, 0 = none)."""
    reasons = np.empty(len(records), np.uint8)
    if len(records):
        _check_records(records, np.uint16(locate), np.int64(n_locates), np.int64(tick_size), reasons)
    return reasons


TAKEN, DUPLICATE, REFUSED, PENDING, UNFIT = 0, 1, 2, 3, 4
"""Verdicts of :meth:`StockSequence.feed` per record."""

_NONE = -1


@njit(cache=True, nogil=True)
def _sequence(ts, seq0, fit, state, tstate, verdict):  # pragma: no cover - compiled
    """The sequence filter over consecutive-seq records (``fit``: passed the checks on their own).

    state (int64): conf_seq, tent_seq (-1: none), tent_idx (the pending record's index in this call,
    -1 none, -2 the one from before), prev outcome (0 pending, 1 taken, 2 refused), gaps;
    tstate (uint64): conf_ts, tent_ts."""
    conf_seq, tent_seq = state[0], state[1]
    conf_ts, tent_ts = tstate[0], tstate[1]
    tent_idx = -2 if tent_seq >= 0 else -1
    prev = 0
    gaps = 0
    for i in range(len(ts)):
        if not fit[i]:
            verdict[i] = UNFIT
            continue
        s = seq0 + i
        t = ts[i]
        if tent_seq >= 0:
            if s == tent_seq:
                verdict[i] = DUPLICATE
                continue
            if s > tent_seq and t >= tent_ts:  # it continues the pending one: that one is taken
                if tent_idx == -2:
                    prev = 1
                else:
                    verdict[tent_idx] = TAKEN
                if tent_seq > conf_seq + 1:
                    gaps += tent_seq - conf_seq - 1
                conf_seq, conf_ts = tent_seq, tent_ts
            elif s > conf_seq and t >= conf_ts:  # it continues the one before: the pending one jumped
                if tent_idx == -2:
                    prev = 2
                else:
                    verdict[tent_idx] = REFUSED
            else:
                verdict[i] = DUPLICATE if s <= conf_seq else REFUSED
                continue
        elif s <= conf_seq:
            verdict[i] = DUPLICATE
            continue
        elif t < conf_ts:
            verdict[i] = REFUSED
            continue
        tent_seq, tent_ts, tent_idx = s, t, i
        verdict[i] = PENDING
    state[0], state[1], state[2], state[3], state[4] = conf_seq, tent_seq, tent_idx, prev, gaps
    tstate[0], tstate[1] = conf_ts, tent_ts


class StockSequence:
    """One stock's sequence filter state: the last event taken (seq, ts) and the pending one."""

    __slots__ = ("conf_seq", "conf_ts", "tent_seq", "tent_ts")

    def __init__(self) -> None:
        self.conf_seq = _NONE  # seq of the last event taken
        self.conf_ts = 0
        self.tent_seq = _NONE  # seq of the pending event (-1: none)
        self.tent_ts = 0

    @property
    def pending(self) -> bool:
        return self.tent_seq >= 0

    def feed(self, ts: np.ndarray, seq0: int, fit: np.ndarray) -> tuple[np.ndarray, int, int]:
        """Verdicts of consecutive records with seqs ``seq0 ...``; returns (verdict per record, what became
        of the event pending before -- 0 still pending / none, 1 taken, 2 refused --, events skipped)."""
        verdict = np.empty(len(ts), np.uint8)
        state = np.array([self.conf_seq, self.tent_seq, 0, 0, 0], np.int64)
        tstate = np.array([self.conf_ts, self.tent_ts], np.uint64)
        _sequence(ts, np.int64(seq0), fit, state, tstate, verdict)
        self.conf_seq, self.tent_seq = int(state[0]), int(state[1])
        self.conf_ts, self.tent_ts = int(tstate[0]), int(tstate[1])
        return verdict, int(state[3]), int(state[4])

    def close(self, count: int | None) -> tuple[int, int]:
        """The stock's end (``count`` events, or unknown): the pending event is taken when it lies within
        the count, else refused. Returns (1 taken / 2 refused / 0 none, events skipped)."""
        if self.tent_seq < 0:
            gaps = max(0, count - self.conf_seq - 1) if count is not None else 0
            return 0, gaps
        if count is not None and self.tent_seq >= count:
            self.tent_seq = _NONE
            return 2, max(0, count - self.conf_seq - 1)
        gaps = self.tent_seq - self.conf_seq - 1 + (max(0, count - self.tent_seq - 1) if count is not None else 0)
        self.conf_seq, self.conf_ts, self.tent_seq = self.tent_seq, self.tent_ts, _NONE
        return 1, max(0, gaps)


def describe(code: int, record: np.void, tick_size: int, rest: int | None = None) -> str:
    """One line for a refused record (the dead-letter reason)."""
    t, ts, px, qty, oid = (int(record["type"]), int(record["ts_ns"]), int(record["price_ticks"]),
                           int(record["qty"]), int(record["order_id"]))
    if code == BAD_TYPE:
        return f"event type {t} is not one of 0-5 (ADD/CANCEL/EXECUTE)"
    if code == BAD_TIMESTAMP:
        return (f"timestamp {ts} ns is not within the day (ITCH timestamps are ns since midnight, at most "
                f"{min(MAX_TIMESTAMP, DAY_NS - 1)})")
    if code == OUT_OF_SEQUENCE:
        return (f"seq or timestamp {ts} ns out of the stock's sequence: the events around it continue each other "
                "but not it")
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
