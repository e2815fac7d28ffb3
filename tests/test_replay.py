"""The compiled order-level book replay (qrsdp_sim.book): top of book, validation, batching."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from book_streams import random_session, reference_top_of_book

from qrsdp_sim.book import INPUT_ERRORS, NO_PRICE, BookReplayError, OrderBook, ReplayFlag, replay_book
from qrsdp_sim.records import RECORD_DTYPE


def _states_matrix(states) -> np.ndarray:
    return np.column_stack([states.bid_price, states.bid_qty, states.ask_price, states.ask_qty]).astype(
        np.int64
    )


def _rec(rows) -> np.ndarray:
    """Records from (type, side, price, qty, order_id) tuples, 1 ns apart."""
    out = np.zeros(len(rows), dtype=RECORD_DTYPE)
    for i, (t, side, price, qty, oid) in enumerate(rows):
        out[i] = (1_000 + i, t, side, price, qty, oid)
    return out


@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize("partial", [False, True])
def test_matches_reference_book(seed, partial):
    rec = random_session(5_000, seed, partial=partial)
    states = replay_book(rec)
    assert states.n_flagged == 0
    np.testing.assert_array_equal(_states_matrix(states), reference_top_of_book(rec))


def test_batches_equal_one_pass_and_state_persists():
    rec = random_session(20_000, 11)
    whole = replay_book(rec)
    book = OrderBook(expected_orders=4)  # forces the order table and price window to grow
    cuts = [0, 1, 7, 500, 4_096, 13_000, 20_000]
    parts = [book.apply(rec[a:b]) for a, b in itertools.pairwise(cuts)]
    from qrsdp_sim.book import BookStates

    np.testing.assert_array_equal(_states_matrix(BookStates.concat(parts)), _states_matrix(whole))
    assert book.events_applied == len(rec)
    ref = reference_top_of_book(rec)[-1]
    assert (book.best_bid, book.best_bid_qty, book.best_ask, book.best_ask_qty) == tuple(int(x) for x in ref)
    bids = book.depth(0, levels=3)
    assert bids[0] == (book.best_bid, book.best_bid_qty)
    assert [p for p, _ in bids] == sorted((p for p, _ in bids), reverse=True)


def test_many_resting_orders_grow_the_table():
    n = 50_000
    adds = np.zeros(n, dtype=RECORD_DTYPE)
    adds["ts_ns"] = np.arange(n)
    adds["type"] = 0
    adds["side"] = 0
    adds["price_ticks"] = 9_000 + (np.arange(n) % 900)
    adds["qty"] = 1
    adds["order_id"] = np.arange(n, dtype=np.uint64) * 7_919 + 3  # sparse ids
    cancels = adds[::-1].copy()
    cancels["type"] = 2
    cancels["ts_ns"] = n + np.arange(n)
    book = OrderBook()
    book.apply(adds)
    assert (
        book.orders == n
        and book.best_bid == 9_899
        and book.best_bid_qty == n // 900 + (1 if n % 900 > 899 else 0)
    )
    assert book.order(3) == (0, 9_000, 1)
    states = book.apply(cancels)
    assert book.orders == 0
    assert states.bid_price[-1] == NO_PRICE and states.bid_qty[-1] == 0


def test_empty_sides_report_no_price():
    states = replay_book(_rec([(0, 0, 100, 5, 1), (1, 1, 103, 2, 2), (2, 0, 100, 5, 1)]))
    assert states.ask_price[0] == NO_PRICE and states.ask_qty[0] == 0
    assert (states.bid_price[1], states.ask_price[1]) == (100, 103)
    assert states.spread[1] == 3 and states.spread[0] == -1
    assert states.bid_price[2] == NO_PRICE
    assert states.mid_floor[1] == 101


@pytest.mark.parametrize(
    ("rows", "flag", "words"),
    [
        ([(0, 0, 100, 1, 1), (2, 0, 100, 1, 99)], ReplayFlag.UNKNOWN_ORDER, "not resting"),
        ([(0, 0, 100, 1, 1), (3, 1, 100, 1, 1)], ReplayFlag.SIDE_MISMATCH, "side"),
        ([(0, 0, 100, 1, 1), (2, 0, 101, 1, 1)], ReplayFlag.PRICE_MISMATCH, "price"),
        ([(0, 0, 100, 1, 1), (5, 0, 100, 2, 1)], ReplayFlag.OVERFILL, "exceeds"),
        ([(0, 0, 100, 1, 1), (1, 1, 105, 1, 1)], ReplayFlag.DUPLICATE_ORDER, "already resting"),
        ([(0, 0, 100, 1, 1), (1, 1, 100, 1, 2)], ReplayFlag.CROSSED, "crossed"),
        ([(0, 0, 100, 1, 1), (0, 1, 99, 1, 2)], ReplayFlag.SIDE_MISMATCH, "side"),  # ADD_BID on the ask side
        ([(0, 0, 100, 1, 1), (7, 0, 100, 1, 2)], ReplayFlag.BAD_EVENT, "unknown event type"),
        ([(0, 0, 100, 0, 1)], ReplayFlag.BAD_EVENT, "zero quantity"),
        ([(0, 0, 100, 1, 1), (4, 1, 100, 1, 1)], ReplayFlag.SIDE_MISMATCH, "side"),  # EXECUTE_BUY hits asks
    ],
)
def test_problems_are_flagged_and_raised(rows, flag, words):
    rec = _rec(rows)
    k = len(rows) - 1
    states = replay_book(rec, strict=False)
    assert states.flags[k] == flag
    assert states.flags[:k].tolist() == [0] * k
    with pytest.raises(BookReplayError, match=words) as info:
        replay_book(rec)
    assert info.value.index == k and info.value.flags == flag
    assert len(info.value.states) == k


def test_rejected_events_are_not_applied():
    rec = _rec([(0, 0, 100, 3, 1), (2, 0, 100, 1, 42), (2, 0, 100, 9, 1), (5, 0, 100, 1, 1)])
    states = replay_book(rec, strict=False)
    assert states.flags.tolist() == [0, ReplayFlag.UNKNOWN_ORDER, ReplayFlag.OVERFILL, 0]
    assert states.bid_qty.tolist() == [3, 3, 3, 2]
    assert all(int(f) & INPUT_ERRORS for f in states.flags[1:3])
    assert "event 1" in states.problems(rec)[0]


def test_strict_error_leaves_book_before_the_event():
    book = OrderBook()
    with pytest.raises(BookReplayError):
        book.apply(_rec([(0, 0, 100, 3, 1), (1, 1, 102, 1, 2), (3, 1, 102, 1, 77)]))
    assert (book.best_bid, book.best_ask, book.orders) == (100, 102, 2)


def test_engine_session_replays_clean_and_closes_at_the_engine_close():
    from qrsdp_sim.engine import SessionConfig, close_rule, simulate_session
    from qrsdp_sim.sinks import InMemorySink

    sink = InMemorySink()
    result = simulate_session(SessionConfig(seed=5, session_seconds=300), sink)
    rec = sink.records
    states = replay_book(rec)
    assert states.n_flagged == 0
    assert (states.bid_price[-1], states.ask_price[-1]) == (result.best_bid, result.best_ask)
    assert states.mid_floor[-1] == close_rule(result.best_bid, result.best_ask) == result.close_ticks


def test_rejects_wrong_dtype():
    with pytest.raises(TypeError):
        replay_book(np.zeros(3, dtype=np.int64))
