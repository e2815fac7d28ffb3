"""Book mechanics on hand-built books: FIFO, depletion shifts, refills, improving adds, no dropped orders."""

from __future__ import annotations

import numpy as np
import pytest

from qrsdp_sim.engine.book import (
    BA,
    BB,
    ERROR,
    GRID_TICKS,
    MAX_FILLS,
    N_FREE,
    add_at_level,
    add_improving,
    cancel_nth,
    execute_best,
    grow_pool,
    new_book,
    open_book,
    push_order,
    snapshot,
)
from qrsdp_sim.engine.rng import seed_state
from qrsdp_sim.engine.sizes import alias_table
from qrsdp_sim.records import RECORD_DTYPE, EventType, Side

TS = np.uint64(1_000)
UNIT = alias_table(np.array([1]), np.array([1.0]))  # every refill order is one share


class Harness:
    """A book plus an output buffer; each call returns the records it emitted as tuples."""

    def __init__(self, levels: int, depth: int, center: int = 100, sizes: np.ndarray = UNIT) -> None:
        self.book = new_book(center, levels, depth, pool_size=64)
        self.out = np.zeros(4096, dtype=RECORD_DTYPE)
        self.sizes = sizes
        self.rng = seed_state(7)

    @property
    def args(self):
        b = self.book
        return b.grid, b.pool, b.oid, b.ist

    def _records(self, n: int) -> list[tuple[int, int, int, int, int]]:
        return [
            (int(r["type"]), int(r["side"]), int(r["price_ticks"]), int(r["qty"]), int(r["order_id"]))
            for r in self.out[:n]
        ]

    def open(self, best_bid: int, spread: int):
        return self._records(open_book(*self.args, best_bid, spread, self.sizes, self.rng, self.out, 0, TS))

    def place(self, side: int, price: int, qty: int = 1):
        """Put an order anywhere (building a book by hand)."""
        return self._records(push_order(*self.args, side, price, qty, self.out, 0, TS))

    def set_best(self, bid: int, ask: int) -> None:
        self.book.ist[BB] = bid
        self.book.ist[BA] = ask

    def execute(self, side: int, qty: int = 1):
        return self._records(execute_best(*self.args, side, qty, self.sizes, self.rng, self.out, 0, TS))

    def cancel(self, side: int, level: int, j: int, partial: float = 0.0, lot: int = 100):
        return self._records(
            cancel_nth(*self.args, side, level, j, partial, lot, self.sizes, self.rng, self.out, 0, TS)
        )

    def add(self, side: int, level: int):
        return self._records(add_at_level(*self.args, side, level, 1, self.out, 0, TS))

    def improve(self, side: int):
        return self._records(add_improving(*self.args, side, 1, self.out, 0, TS))

    def snap(self):
        return snapshot(self.book)

    def ids(self, side: int, price: int) -> list[int]:
        levels = self.snap()["bids" if side == Side.BID else "asks"]
        return [oid for oid, _ in levels.get(price, [])]


def add_rec(side: int, price: int, oid: int, qty: int = 1):
    return (EventType.ADD_BID + side, side, price, qty, oid)


def test_opening_book_layout_and_records():
    h = Harness(levels=3, depth=2)
    recs = h.open(best_bid=99, spread=2)
    expected = []
    oid = 1
    for side, prices in ((Side.BID, (99, 98, 97)), (Side.ASK, (101, 102, 103))):
        for p in prices:
            for _ in range(2):
                expected.append(add_rec(side, p, oid))
                oid += 1
    assert recs == expected
    snap = h.snap()
    assert (snap["best_bid"], snap["best_ask"]) == (99, 101)
    assert snap["bids"] == {99: [(1, 1), (2, 1)], 98: [(3, 1), (4, 1)], 97: [(5, 1), (6, 1)]}
    assert snap["asks"] == {101: [(7, 1), (8, 1)], 102: [(9, 1), (10, 1)], 103: [(11, 1), (12, 1)]}


def test_executions_are_fifo_and_depletion_shifts_and_refills_the_far_end():
    h = Harness(levels=3, depth=2)
    h.open(99, 2)
    assert h.execute(Side.ASK) == [(EventType.EXECUTE_BUY, Side.ASK, 101, 1, 7)]
    assert h.snap()["best_ask"] == 101
    # second buy empties 101: best ask -> 102, window [102, 104]: 104 enters and is refilled
    assert h.execute(Side.ASK) == [
        (EventType.EXECUTE_BUY, Side.ASK, 101, 1, 8),
        add_rec(Side.ASK, 104, 13),
        add_rec(Side.ASK, 104, 14),
    ]
    snap = h.snap()
    assert snap["best_ask"] == 102
    assert sorted(snap["asks"]) == [102, 103, 104]
    # sells hit the oldest bid
    assert h.execute(Side.BID) == [(EventType.EXECUTE_SELL, Side.BID, 99, 1, 1)]


def test_shift_skips_empty_ticks_and_refills_only_ticks_entering_the_window():
    h = Harness(levels=3, depth=2)
    h.set_best(99, 101)
    h.place(Side.BID, 99)
    h.place(Side.ASK, 101)  # id 2
    h.place(Side.ASK, 103)  # id 3 -- 102 is an empty tick inside the window
    recs = h.execute(Side.ASK)
    # best ask jumps over the empty 102 to 103; window [103, 105]: 104 and 105 enter, empty -> refilled
    assert recs == [
        (EventType.EXECUTE_BUY, Side.ASK, 101, 1, 2),
        add_rec(Side.ASK, 104, 4),
        add_rec(Side.ASK, 104, 5),
        add_rec(Side.ASK, 105, 6),
        add_rec(Side.ASK, 105, 7),
    ]
    assert h.snap()["best_ask"] == 103
    assert h.ids(Side.ASK, 103) == [3]


def test_orders_outside_the_window_come_back_into_view_without_refill():
    h = Harness(levels=3, depth=2)
    h.set_best(99, 101)
    h.place(Side.BID, 99)
    h.place(Side.ASK, 101)  # id 2
    h.place(Side.ASK, 110)  # id 3: far outside the window
    recs = h.execute(Side.ASK)
    # next populated ask tick is 110: window [110, 112]; 110 already has an order (no refill), 111/112 refilled
    assert recs[0] == (EventType.EXECUTE_BUY, Side.ASK, 101, 1, 2)
    assert [r[2] for r in recs[1:]] == [111, 111, 112, 112]
    assert h.snap()["best_ask"] == 110
    assert h.ids(Side.ASK, 110) == [3]


def test_improving_add_moves_the_window_inward_and_keeps_outside_orders():
    h = Harness(levels=3, depth=2)
    h.open(98, 4)  # bids 98, 97, 96; asks 102, 103, 104; spread 4
    before = h.snap()
    recs = h.improve(Side.BID)
    assert recs == [add_rec(Side.BID, 99, 13)]
    snap = h.snap()
    assert snap["best_bid"] == 99
    # 96 left the window [99, 97] but its orders stay in the book
    assert snap["bids"][96] == before["bids"][96]
    recs = h.improve(Side.ASK)
    assert recs == [add_rec(Side.ASK, 101, 14)]
    assert h.snap()["best_ask"] == 101
    # cancelling the lone improving bid: best returns to 98, the window [98, 96] brings 96 back
    # into view; 96 is populated so nothing is refilled
    recs = h.cancel(Side.BID, 0, 0)
    assert recs == [(EventType.CANCEL_BID, Side.BID, 99, 1, 13)]
    snap = h.snap()
    assert snap["best_bid"] == 98
    assert snap["bids"] == before["bids"]


def test_empty_side_moves_one_tick_and_refills_the_whole_window():
    h = Harness(levels=2, depth=3)
    h.set_best(99, 101)
    h.place(Side.BID, 99)
    h.place(Side.ASK, 101)  # id 2, the only ask
    recs = h.execute(Side.ASK)
    assert recs[0] == (EventType.EXECUTE_BUY, Side.ASK, 101, 1, 2)
    assert [r[2] for r in recs[1:]] == [102] * 3 + [103] * 3
    assert h.snap()["best_ask"] == 102
    # the same on the bid side
    recs = h.execute(Side.BID)
    assert [r[2] for r in recs[1:]] == [98] * 3 + [97] * 3
    assert h.snap()["best_bid"] == 98


def test_cancel_picks_the_nth_order_from_either_end_of_the_queue():
    h = Harness(levels=3, depth=5)
    h.open(99, 2)  # bid 99 holds ids 1..5
    assert h.cancel(Side.BID, 0, 1) == [(EventType.CANCEL_BID, Side.BID, 99, 1, 2)]
    assert h.ids(Side.BID, 99) == [1, 3, 4, 5]
    assert h.cancel(Side.BID, 0, 3) == [(EventType.CANCEL_BID, Side.BID, 99, 1, 5)]  # walked from the tail
    assert h.ids(Side.BID, 99) == [1, 3, 4]
    # deeper level: level 2 of the asks is tick 103, ids 26..30
    assert h.cancel(Side.ASK, 2, 2) == [(EventType.CANCEL_ASK, Side.ASK, 103, 1, 28)]
    assert h.ids(Side.ASK, 103) == [26, 27, 29, 30]
    # emptying a non-best level does not move anything
    for _ in range(4):
        h.cancel(Side.ASK, 2, 0)
    snap = h.snap()
    assert 103 not in snap["asks"] and snap["best_ask"] == 101


def test_cancel_emptying_the_best_shifts_like_an_execution():
    h = Harness(levels=2, depth=1)
    h.open(99, 2)  # bids 99 (id 1), 98 (id 2); asks 101 (3), 102 (4)
    recs = h.cancel(Side.BID, 0, 0)
    assert recs == [(EventType.CANCEL_BID, Side.BID, 99, 1, 1), add_rec(Side.BID, 97, 5)]
    assert h.snap()["best_bid"] == 98


def test_partial_execution_keeps_the_order_at_the_front():
    h = Harness(levels=2, depth=1)
    h.set_best(99, 101)
    h.place(Side.BID, 99)
    h.place(Side.ASK, 101, qty=3)  # id 2
    h.place(Side.ASK, 101)  # id 3
    for left in (2, 1):
        assert h.execute(Side.ASK) == [(EventType.EXECUTE_BUY, Side.ASK, 101, 1, 2)]
        assert h.snap()["asks"][101] == [(2, left), (3, 1)]
    h.execute(Side.ASK)
    assert h.snap()["asks"][101] == [(3, 1)]


def test_add_at_level_lands_k_ticks_outward():
    h = Harness(levels=4, depth=1)
    h.open(99, 2)
    assert h.add(Side.BID, 3) == [add_rec(Side.BID, 96, 9)]
    assert h.add(Side.ASK, 0) == [add_rec(Side.ASK, 101, 10)]
    assert h.ids(Side.ASK, 101) == [5, 10]  # joins the back of the queue


def test_leaving_the_grid_is_flagged_not_written_out_of_bounds():
    center = 1_000_000
    h = Harness(levels=3, depth=1, center=center)
    low = center - GRID_TICKS // 2  # price of grid index 0
    h.set_best(low + 2, low + 4)
    h.place(Side.BID, low + 2)
    h.place(Side.ASK, low + 4)
    h.execute(Side.BID)  # the bid side is empty: the new window would start below the grid
    assert h.book.ist[ERROR] != 0


def test_pool_growth_keeps_every_order():
    h = Harness(levels=3, depth=5)
    h.open(99, 2)
    before = h.snap()
    free = int(h.book.ist[N_FREE])
    h.book = grow_pool(h.book, 300)
    assert h.book.ist[N_FREE] >= free + 300
    assert h.snap() == before
    for _ in range(200):  # more orders than the original pool held
        h.add(Side.BID, 1)
    assert len(h.ids(Side.BID, 98)) == 205


@pytest.mark.parametrize("side", [Side.BID, Side.ASK])
def test_improving_add_never_crosses(side):
    h = Harness(levels=2, depth=1)
    h.open(99, 3)
    h.improve(side)  # spread 3 -> 2
    h.improve(1 - side)  # spread 2 -> 1
    snap = h.snap()
    assert snap["best_ask"] - snap["best_bid"] == 1


def test_market_order_walks_the_queue_in_time_priority_with_a_partial_last_fill():
    h = Harness(levels=2, depth=1)
    h.set_best(99, 101)
    h.place(Side.BID, 99)
    h.place(Side.ASK, 101, qty=100)  # id 2
    h.place(Side.ASK, 101, qty=300)  # id 3
    h.place(Side.ASK, 101, qty=200)  # id 4
    h.place(Side.ASK, 102, qty=500)  # id 5
    assert h.execute(Side.ASK, qty=250) == [
        (EventType.EXECUTE_BUY, Side.ASK, 101, 100, 2),
        (EventType.EXECUTE_BUY, Side.ASK, 101, 150, 3),
    ]
    assert h.snap()["asks"][101] == [(3, 150), (4, 200)]  # the partly filled order keeps its place


def test_market_order_never_goes_beyond_the_best_price():
    h = Harness(levels=2, depth=1)
    h.set_best(99, 101)
    h.place(Side.BID, 99, qty=50)  # id 1
    h.place(Side.BID, 98, qty=70)  # id 2
    recs = h.execute(Side.BID, qty=1_000)  # a sell larger than the best bid queue
    assert recs[0] == (EventType.EXECUTE_SELL, Side.BID, 99, 50, 1)
    assert [r[0] for r in recs[1:]] == [EventType.ADD_BID]  # refill of the tick entering the window
    snap = h.snap()
    assert snap["best_bid"] == 98 and snap["bids"][98] == [(2, 70)]  # 98 untouched


def test_market_order_touches_at_most_max_fills_orders():
    h = Harness(levels=1, depth=1)
    h.book = grow_pool(h.book, MAX_FILLS + 10)
    h.set_best(99, 101)
    h.place(Side.BID, 99)
    for _ in range(MAX_FILLS + 5):
        h.place(Side.ASK, 101)
    recs = h.execute(Side.ASK, qty=10 * MAX_FILLS)
    assert len(recs) == MAX_FILLS and all(r[0] == EventType.EXECUTE_BUY for r in recs)
    assert len(h.ids(Side.ASK, 101)) == 5


def test_partial_cancel_keeps_the_queue_position_and_removes_round_lots():
    h = Harness(levels=2, depth=1)
    h.set_best(99, 101)
    h.place(Side.BID, 99, qty=500)  # id 1
    h.place(Side.BID, 99, qty=100)  # id 2
    h.place(Side.ASK, 101, qty=37)  # id 3
    recs = h.cancel(Side.BID, 0, 0, partial=1.0)
    (etype, side, price, qty, oid), = recs
    assert (etype, side, price, oid) == (EventType.CANCEL_BID, Side.BID, 99, 1)
    assert qty % 100 == 0 and 100 <= qty <= 400  # whole lots, never the whole order
    assert h.snap()["bids"][99] == [(1, 500 - qty), (2, 100)]
    # an odd-lot order is partly cancelled by 1 .. qty - 1 shares
    (rec,) = h.cancel(Side.ASK, 0, 0, partial=1.0)
    assert 1 <= rec[3] <= 36 and h.snap()["asks"][101] == [(3, 37 - rec[3])]
    # a one-lot order cannot be cut in lots: 1 .. 99 shares go
    (rec,) = h.cancel(Side.BID, 0, 1, partial=1.0)
    assert rec[4] == 2 and 1 <= rec[3] <= 99


def test_full_cancel_names_the_remaining_quantity():
    h = Harness(levels=2, depth=1)
    h.set_best(99, 101)
    h.place(Side.BID, 99, qty=300)  # id 1
    h.place(Side.BID, 99, qty=100)  # id 2
    h.place(Side.ASK, 101)
    h.execute(Side.BID, qty=120)  # id 1 keeps 180
    assert h.cancel(Side.BID, 0, 0, partial=0.0) == [(EventType.CANCEL_BID, Side.BID, 99, 180, 1)]


def test_refills_and_opening_book_draw_their_sizes():
    sizes = alias_table(np.array([100, 200, 500]), np.array([0.5, 0.3, 0.2]))
    h = Harness(levels=3, depth=4, sizes=sizes)
    recs = h.open(99, 2)
    assert len(recs) == 24 and {r[3] for r in recs} <= {100, 200, 500} and len({r[3] for r in recs}) > 1
