"""Stream consistency of a session's records: does the stream describe a possible order book?

Used by ``qrsdp log-info --verify`` (:func:`qrsdp_sim.eventlog.inspect.verify`), separately from the
file's container integrity. Each check has a name; :func:`check_stream` runs them all on one record
array and reports, per check, how many records break it and the first one (0-based record number).

Record semantics (docs/event-log-format.md): an ADD rests ``qty`` shares; a CANCEL removes ``qty``
(1..remaining) from the order it names -- the order keeps its place in the queue when shares remain;
an EXECUTE trades ``qty`` (1..remaining) against the order it names, which must be the oldest resting
order at the best price of its side (price-time priority); a walk through the queue is several
EXECUTEs. The book replay is :mod:`qrsdp_sim.book.replay`; the priority checks are a second compiled
pass over the events the replay accepted (:mod:`qrsdp_sim.eventlog.queue_priority`). Both are imported
when a stream is checked, not with this module: importing numba costs a second, and this module's
constants are used by every ``qrsdp`` command and by the Kafka decoder.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from qrsdp_sim.records import EVENT_TYPE_NAMES, N_EVENT_TYPES, EventType

# The side each event type must carry (executions: the resting order's side).
EXPECTED_SIDE = np.array([0, 1, 0, 1, 1, 0], dtype=np.uint8)
MAX_PRICE_SPAN = 1 << 22
"""Widest span of ADD prices (ticks) the book replay is asked to hold (it keeps dense per-tick arrays):
a real session spans hundreds of ticks; a span beyond this is reported instead of replayed."""

# name -> what it checks (in the order they run; JSON lists them)
CHECKS: dict[str, str] = {
    "timestamps": "timestamps never decrease",
    "event_types": "every type is a known event type",
    "sides": "every side is the one its type implies",
    "quantities": "every quantity is at least 1",
    "add_ids": "ADD order ids increase strictly",
    "price_span": f"ADD prices span at most {MAX_PRICE_SPAN:,} ticks (what the replay holds)",
    "unknown_order": "every CANCEL/EXECUTE names a resting order",
    "duplicate_order": "no ADD reuses the id of a resting order",
    "order_mismatch": "a CANCEL/EXECUTE's side and price are its resting order's",
    "overfill": "no CANCEL/EXECUTE takes more than the order's remaining shares",
    "crossed_book": "the book is never crossed or locked (best bid < best ask)",
    "execution_at_best": "every EXECUTE trades at the best price of the resting side",
    "queue_priority": "every EXECUTE trades against the oldest order resting at its price",
}
_REPLAY_CHECKS = ("unknown_order", "duplicate_order", "order_mismatch", "overfill", "crossed_book")


@dataclass
class Violation:
    check: str
    count: int  # records that break the check
    record: int  # the first of them (0-based record number)
    message: str

    def to_dict(self) -> dict[str, object]:
        return dict(self.__dict__)


@dataclass
class StreamReport:
    """What :func:`check_stream` found. ``checks``: the checks that ran; ``skipped``: check -> why not."""

    records: int
    checks: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    violations: list[Violation] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.violations

    @property
    def first(self) -> Violation | None:
        """The violation with the lowest record number (the stream is wrong from there on)."""
        return min(self.violations, key=lambda v: (v.record, list(CHECKS).index(v.check)), default=None)

    def to_dict(self) -> dict[str, object]:
        first = self.first
        return {
            "ok": self.ok,
            "records": self.records,
            "checks": list(self.checks),
            "skipped": dict(self.skipped),
            "first_violation": first.to_dict() if first else None,
            "violations": {v.check: {"count": v.count, "first_record": v.record, "message": v.message}
                           for v in self.violations},
        }


def _describe(record: np.void) -> str:
    t = int(record["type"])
    name = EVENT_TYPE_NAMES[t] if t < N_EVENT_TYPES else f"type {t}"
    return (f"{name} order {int(record['order_id'])} side {int(record['side'])} price {int(record['price_ticks'])} "
            f"qty {int(record['qty'])} at ts {int(record['ts_ns'])}")


def check_stream(records: np.ndarray) -> StreamReport:
    """Run every check of :data:`CHECKS` on one session's records (never raises on any record values)."""
    report = StreamReport(records=len(records))

    def flag(check: str, bad: np.ndarray, message) -> None:
        report.checks.append(check)
        idx = np.flatnonzero(bad)
        if len(idx):
            k = int(idx[0])
            report.violations.append(Violation(check, len(idx), k, f"record {k}: {message(k)}"))

    n = len(records)
    types = records["type"]
    ts = records["ts_ns"]
    flag("timestamps", np.concatenate(([False], ts[1:] < ts[:-1])) if n else np.zeros(0, bool),
         lambda k: f"timestamp {int(ts[k])} is before the previous record's {int(ts[k - 1])}")
    known = types < N_EVENT_TYPES
    flag("event_types", ~known, lambda k: f"unknown event type {int(types[k])}")
    sides_ok = records["side"] == EXPECTED_SIDE[np.minimum(types, N_EVENT_TYPES - 1)]
    flag("sides", known & ~sides_ok,
         lambda k: f"side {int(records['side'][k])} does not match type {EVENT_TYPE_NAMES[types[k]]}")
    flag("quantities", records["qty"] == 0, lambda k: f"zero quantity ({_describe(records[k])})")
    adds = np.flatnonzero(types <= EventType.ADD_ASK)
    add_ids = records["order_id"][adds]
    dec = np.zeros(n, dtype=bool)
    if len(adds) > 1:
        dec[adds[1:][add_ids[1:] <= add_ids[:-1]]] = True
    flag("add_ids", dec, lambda k: f"ADD order id {int(records['order_id'][k])} does not increase "
                                   f"on the previous ADD's")
    prices = records["price_ticks"][adds].astype(np.int64)
    report.checks.append("price_span")
    if len(prices):
        spans = np.maximum.accumulate(prices) - np.minimum.accumulate(prices)
        if spans[-1] > MAX_PRICE_SPAN:
            k = int(adds[np.argmax(spans > MAX_PRICE_SPAN)])
            report.violations.append(Violation(
                "price_span", 1, k, f"record {k}: with this ADD the prices span more than {MAX_PRICE_SPAN:,} ticks "
                                    f"({int(spans[-1]):,} in all): the book is not replayed"))
            for check in (*_REPLAY_CHECKS, "execution_at_best", "queue_priority"):
                report.skipped[check] = "ADD prices span too wide to replay"
            return report

    from qrsdp_sim.book.replay import INPUT_ERRORS, NO_PRICE, ReplayFlag, describe_problem, replay_book

    replay_flag = {
        "unknown_order": int(ReplayFlag.UNKNOWN_ORDER),
        "duplicate_order": int(ReplayFlag.DUPLICATE_ORDER),
        "order_mismatch": int(ReplayFlag.SIDE_MISMATCH | ReplayFlag.PRICE_MISMATCH),
        "overfill": int(ReplayFlag.OVERFILL),
        "crossed_book": int(ReplayFlag.CROSSED),
    }
    states = replay_book(records, strict=False)
    for check in _REPLAY_CHECKS:
        bits = replay_flag[check]
        flag(check, (states.flags & bits) != 0,
             lambda k, bits=bits: describe_problem(records[k], int(states.flags[k]) & bits))
    applied = (states.flags & INPUT_ERRORS) == 0

    # execution at the best: the resting side's best price just before the event
    prev_bid = np.concatenate(([NO_PRICE], states.bid_price[:-1])) if n else states.bid_price
    prev_ask = np.concatenate(([NO_PRICE], states.ask_price[:-1])) if n else states.ask_price
    px = records["price_ticks"]
    away = applied & (((types == EventType.EXECUTE_BUY) & (px != prev_ask))
                      | ((types == EventType.EXECUTE_SELL) & (px != prev_bid)))

    def away_message(k: int) -> str:
        buy = types[k] == EventType.EXECUTE_BUY
        best = int(prev_ask[k] if buy else prev_bid[k])
        side = "ask" if buy else "bid"
        return f"{_describe(records[k])}: " + (f"no {side} rested" if best == NO_PRICE else f"the best {side} was {best}")

    flag("execution_at_best", away, away_message)

    if not np.any(dec):
        behind, head_id = _queue_priority(records, applied)
        flag("queue_priority", behind, lambda k: f"{_describe(records[k])}: order {int(head_id[k])} is older "
                                                 f"and rests at that price")
    else:
        report.skipped["queue_priority"] = "ADD order ids do not increase, so they do not give the queue order"
    return report


def _queue_priority(records: np.ndarray, applied: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(mask of EXECUTEs not against the front of their price's queue, the front order's id there).

    Needs ADD ids that increase strictly (checked before): then an order's place in its queue is its
    ADD's position, and each CANCEL/EXECUTE finds its ADD by binary search.
    """
    n = len(records)
    types = records["type"].astype(np.int64)
    ids = records["order_id"]
    add_mask = (types <= EventType.ADD_ASK) & applied
    add_pos = np.flatnonzero(add_mask)
    add_ids = ids[add_pos]
    # the ADD each accepted CANCEL/EXECUTE refers to (the replay accepted it: the order is resting)
    removal = (types >= EventType.CANCEL_BID) & (types < N_EVENT_TYPES) & applied
    ref = np.full(n, -1, dtype=np.int64)
    if len(add_ids):
        where = np.searchsorted(add_ids, ids[removal])
        where = np.minimum(where, len(add_ids) - 1)
        ref[removal] = np.where(add_ids[where] == ids[removal], where, -1)
    # queues: ADDs grouped by (side, price) in stream order
    side = records["side"][add_pos].astype(np.int64)
    price = records["price_ticks"][add_pos].astype(np.int64)
    _, level = np.unique(side * (1 << 33) + price, return_inverse=True)
    level = level.astype(np.int64).ravel()
    order = np.lexsort((np.arange(len(add_pos)), level))
    next_in_level = np.full(len(add_pos), -1, dtype=np.int64)
    same = level[order[1:]] == level[order[:-1]]
    next_in_level[order[:-1][same]] = order[1:][same]
    n_levels = int(level.max()) + 1 if len(level) else 0
    head = np.full(n_levels, -1, dtype=np.int64)
    firsts = order[np.concatenate(([True], ~same))] if len(order) else order
    head[level[firsts]] = firsts
    add_index = np.full(n, -1, dtype=np.int64)
    add_index[add_pos] = np.arange(len(add_pos))
    behind = np.zeros(n, dtype=np.bool_)
    front = np.zeros(n, dtype=np.uint64)
    from qrsdp_sim.eventlog.queue_priority import priority_pass

    priority_pass(types, records["qty"].astype(np.int64), add_index, ref, level, next_in_level, head, add_ids,
                  behind, front)
    return behind, front
