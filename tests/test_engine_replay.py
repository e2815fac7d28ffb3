"""Self-consistency of the engine's stream, checked by replay through an independent book.

The replay book below is written for the tests only (dicts of FIFO queues and lazy
heaps for the best prices) and shares no code with ``qrsdp_sim.engine.book``. Every
record is applied to it and checked; after every event the replayed top of book is
compared with the engine's own (diagnostic output of the kernel), and at every batch
boundary the whole replayed book -- every order, in FIFO order -- with the engine's.
"""

from __future__ import annotations

import heapq

import numpy as np
import pytest

from qrsdp_sim.engine import HLR, ConstantRates, SessionConfig, SimpleImbalance
from qrsdp_sim.engine.book import snapshot
from qrsdp_sim.engine.realism import Realism
from qrsdp_sim.engine.session import SessionDriver
from qrsdp_sim.records import EventType, Side

FULL_DAY = 23_400


class ReplayError(AssertionError):
    pass


class ReplayBook:
    """A plain order-level book that checks every record against its own state."""

    def __init__(self, levels: int) -> None:
        self.levels = levels
        self.orders: dict[int, list[int]] = {}  # id -> [side, price, qty]
        self.queues: tuple[dict[int, dict[int, None]], dict[int, dict[int, None]]] = ({}, {})
        self.qty: tuple[dict[int, int], dict[int, int]] = ({}, {})
        self._heaps: tuple[list[int], list[int]] = ([], [])  # bids negated
        self.last_id = 0
        self.last_ts = 0
        self.n = 0

    # -- best prices via lazy heaps
    def best(self, side: int) -> int | None:
        heap = self._heaps[side]
        queues = self.queues[side]
        while heap:
            price = -heap[0] if side == Side.BID else heap[0]
            if queues.get(price):
                return price
            heapq.heappop(heap)
        return None

    def fail(self, msg: str) -> None:
        raise ReplayError(f"record {self.n}: {msg}")

    def apply(self, ts: int, typ: int, side: int, price: int, qty: int, oid: int) -> None:
        if ts < self.last_ts:
            self.fail(f"timestamp went back from {self.last_ts} to {ts}")
        self.last_ts = ts
        if typ in (EventType.ADD_BID, EventType.ADD_ASK):
            if side != typ:
                self.fail(f"ADD type {typ} with side {side}")
            if oid <= self.last_id:
                self.fail(f"ADD id {oid} not above the previous {self.last_id}")
            if qty <= 0:
                self.fail("ADD with zero quantity")
            self.last_id = oid
            self.orders[oid] = [side, price, qty]
            queue = self.queues[side].setdefault(price, {})
            if not queue:
                heapq.heappush(self._heaps[side], -price if side == Side.BID else price)
            queue[oid] = None
            self.qty[side][price] = self.qty[side].get(price, 0) + qty
        elif typ in (EventType.CANCEL_BID, EventType.CANCEL_ASK):
            order = self.orders.get(oid)
            if order is None:
                self.fail(f"CANCEL of unknown id {oid}")
            if order[0] != side or side != typ - 2:
                self.fail(f"CANCEL id {oid}: side {side}, the order rests on side {order[0]}")
            if order[1] != price:
                self.fail(f"CANCEL id {oid}: price {price}, the order rests at {order[1]}")
            if not 0 < qty <= order[2]:  # a full cancel names what rests, a partial one less
                self.fail(f"CANCEL id {oid}: qty {qty}, the order has {order[2]}")
            self._remove(oid, qty)
        elif typ in (EventType.EXECUTE_BUY, EventType.EXECUTE_SELL):
            resting = Side.ASK if typ == EventType.EXECUTE_BUY else Side.BID
            if side != resting:
                self.fail(f"EXECUTE type {typ} names side {side}")
            order = self.orders.get(oid)
            if order is None:
                self.fail(f"EXECUTE of unknown id {oid}")
            if order[0] != side or order[1] != price:
                self.fail(f"EXECUTE id {oid} at {side}/{price}, the order rests at {order[0]}/{order[1]}")
            if price != self.best(side):
                self.fail(f"EXECUTE at {price}, not the best {self.best(side)}")
            if next(iter(self.queues[side][price])) != oid:
                self.fail(f"EXECUTE of id {oid}, not the first order in the queue")
            if not 0 < qty <= order[2]:
                self.fail(f"EXECUTE qty {qty} against an order of {order[2]}")
            self._remove(oid, qty)
        else:
            self.fail(f"unknown type {typ}")
        self.n += 1

    def _remove(self, oid: int, qty: int) -> None:
        side, price, left = self.orders[oid]
        self.qty[side][price] -= qty
        if left == qty:
            del self.orders[oid]
            del self.queues[side][price][oid]
            if not self.queues[side][price]:
                del self.queues[side][price]
                del self.qty[side][price]
        else:
            self.orders[oid][2] = left - qty

    def check_not_crossed(self) -> None:
        bid, ask = self.best(Side.BID), self.best(Side.ASK)
        if bid is None or ask is None:
            self.fail(f"a side is empty (bid {bid}, ask {ask})")
        if bid >= ask:
            self.fail(f"crossed book: bid {bid} >= ask {ask}")

    def top(self) -> tuple[int, int, int, int, int, int]:
        bid, ask = self.best(Side.BID), self.best(Side.ASK)
        qb, qa = self.qty[0], self.qty[1]
        db = sum(qb.get(bid - k, 0) for k in range(self.levels))
        da = sum(qa.get(ask + k, 0) for k in range(self.levels))
        return bid, ask, qb[bid], qa[ask], db, da

    def as_snapshot(self) -> dict[str, object]:
        sides = []
        for s in (0, 1):
            sides.append({p: [(oid, self.orders[oid][2]) for oid in q] for p, q in self.queues[s].items()})
        return {"best_bid": self.best(0), "best_ask": self.best(1), "bids": sides[0], "asks": sides[1]}


def replay_session(config: SessionConfig) -> tuple[ReplayBook, int, dict[str, int]]:
    """Run the session with diagnostics and replay it; return the replay book, events checked, stats."""
    driver = SessionDriver(config, top_of_book=True)
    replay = ReplayBook(config.levels_per_side)
    checked_events = 0
    stats = {"records": 0, "batches": 0, "max_spread": 0}
    for records, tob in driver.batches():
        rows = zip(
            records["ts_ns"].tolist(),
            records["type"].tolist(),
            records["side"].tolist(),
            records["price_ticks"].tolist(),
            records["qty"].tolist(),
            records["order_id"].tolist(),
            strict=True,
        )
        marks = tob[:, 0].tolist()
        tob_rows = tob.tolist()
        for i, rec in enumerate(rows):
            replay.apply(*rec)
            if marks[i] != -1:
                replay.check_not_crossed()
                got = replay.top()
                if got != tuple(tob_rows[i]):
                    replay.fail(f"top of book after the event: replay {got}, engine {tuple(tob_rows[i])}")
                checked_events += 1
                stats["max_spread"] = max(stats["max_spread"], got[1] - got[0])
        stats["records"] += len(records)
        stats["batches"] += 1
        # the whole book, order by order, at every batch boundary
        assert replay.as_snapshot() == snapshot(driver.book), f"book differs after batch {stats['batches']}"
    assert driver.done
    return replay, checked_events, stats


def _big_market_orders():
    from qrsdp_sim.engine.sizes import OrderSizes, SizeDistribution

    return OrderSizes(market=SizeDistribution(lots=((5, 0.5), (20, 0.5)), odd_lot_share=0.1, large_share=0.0))


def _assert_self_consistent(config: SessionConfig) -> None:
    _, events, stats = replay_session(config)
    assert stats["batches"] > 3, "the session should span several kernel batches"
    assert events > stats["records"] // 2, "most records are model events, each checked"
    # something happened: the spread moved and the price wandered
    assert stats["max_spread"] >= 3


@pytest.mark.slow
@pytest.mark.parametrize(
    ("model", "realism"),
    [
        (SimpleImbalance(), Realism()),
        (HLR(), Realism()),
        (SimpleImbalance.seed(), Realism.plain()),
    ],
    ids=["simple", "hlr", "plain-seed"],
)
def test_full_session_replays_exactly(model, realism):
    _assert_self_consistent(
        SessionConfig(seed=20260102, session_seconds=FULL_DAY, model=model, realism=realism)
    )


@pytest.mark.parametrize(
    "config",
    [
        # deep windows, thin refills: gaps inside the window, stale orders outside it
        SessionConfig(seed=7, session_seconds=1800, levels_per_side=8, initial_depth=1, batch_records=4096),
        # one-level windows: every depletion moves the window completely
        SessionConfig(seed=8, session_seconds=1800, levels_per_side=1, initial_depth=2, batch_records=4096),
        # wide opening spread, strong spread sensitivity: many improving adds
        SessionConfig(
            seed=9,
            session_seconds=1800,
            initial_spread_ticks=9,
            model=SimpleImbalance(spread_sens=1.0, base_C=2.0),
            batch_records=4096,
        ),
        SessionConfig(
            seed=10, session_seconds=1800, model=ConstantRates((12, 12, 3, 3, 9, 9)), batch_records=4096
        ),
        # big market orders against thin queues: every market order walks several orders
        SessionConfig(
            seed=11,
            session_seconds=1800,
            model=SimpleImbalance(base_M=5.0),
            realism=Realism(sizes=_big_market_orders()),
            batch_records=4096,
        ),
    ],
    ids=["deep-thin", "one-level", "wide-spread", "constant", "walking"],
)
def test_edge_configurations_replay_exactly(config):
    _assert_self_consistent(config)


def test_replay_book_catches_a_corrupted_stream():
    """The checker is not a tautology: a stream with one altered record fails."""
    driver = SessionDriver(SessionConfig(seed=3, session_seconds=60))
    records = np.concatenate([r for r, _ in driver.batches()])
    cancels = np.flatnonzero(records["type"] == EventType.CANCEL_BID)
    executes = np.flatnonzero(records["type"] == EventType.EXECUTE_BUY)
    mutations = [
        (cancels[0], "price_ticks", int(records["price_ticks"][cancels[0]]) + 1),  # wrong price
        (cancels[0], "order_id", 10**9),  # unknown id
        (executes[-1], "side", Side.BID),  # wrong side
        (executes[-1], "order_id", int(records["order_id"][cancels[0]])),  # an already removed order
        (cancels[0], "qty", 10**6),  # more than rests
    ]
    for row, field, value in mutations:
        bad = records.copy()
        bad[field][row] = value
        replay = ReplayBook(5)
        with pytest.raises(ReplayError):
            for rec in bad.tolist():
                replay.apply(*rec)


def test_realistic_session_has_walking_market_orders_and_partial_cancels():
    """The default (realistic) order flow exercises every path the replay checks: market orders
    that touch several resting orders, partial fills, partial and full cancels."""
    config = SessionConfig(seed=12, session_seconds=1800, batch_records=4096)
    replay, _events, _stats = replay_session(config)
    driver = SessionDriver(config)
    records = np.concatenate([r for r, _ in driver.batches()])
    ex = np.flatnonzero(records["type"] >= EventType.EXECUTE_BUY)
    same = (np.diff(records["ts_ns"][ex]) == 0) & (np.diff(ex) == 1)
    assert np.count_nonzero(same) > 50, "market orders that walk the queue"
    # partial cancels: a CANCEL whose order is still resting afterwards
    cancels = records[(records["type"] == EventType.CANCEL_BID) | (records["type"] == EventType.CANCEL_ASK)]
    later = set(records["order_id"][ex].tolist()) | set(replay.orders)
    assert sum(1 for oid in cancels["order_id"].tolist() if oid in later) > 50
    assert len(np.unique(records["qty"][records["type"] <= 1])) >= 5
