"""The window depths the book keeps incrementally (``ist[WIN + s]``) equal a naive recompute.

SimpleImbalance reads each side's window depth at every event; the book keeps it up to date in
every operation instead of summing the window per event. These tests compare it with a sum over
the grid after every operation on random books, and between the batches of whole sessions.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from qrsdp_sim.engine import SessionConfig
from qrsdp_sim.engine.book import (
    BASE,
    BB,
    ERROR,
    G_QSUM,
    LEVELS,
    N_FREE,
    WIN,
    add_at_level,
    add_improving,
    cancel_nth,
    execute_best,
    grow_pool,
    new_book,
    open_book,
)
from qrsdp_sim.engine.models import HLR, SimpleImbalance
from qrsdp_sim.engine.realism import Realism
from qrsdp_sim.engine.rng import seed_state
from qrsdp_sim.engine.session import SessionDriver
from qrsdp_sim.engine.sizes import SizeDistribution
from qrsdp_sim.records import RECORD_DTYPE

TS = np.uint64(1_000)


def naive_depth(book, side: int) -> int:
    """Total quantity over the K ticks of the side's window, read tick by tick from the grid."""
    d = 2 * side - 1
    i = int(book.ist[BB + side] - book.ist[BASE])
    return sum(int(book.grid[G_QSUM, side, i + d * k]) for k in range(int(book.ist[LEVELS])))


def assert_depths(book, context: str) -> None:
    for side in (0, 1):
        assert int(book.ist[WIN + side]) == naive_depth(book, side), f"side {side} after {context}"


@pytest.mark.parametrize(("levels", "depth", "seed"), [(5, 5, 1), (1, 1, 2), (3, 2, 3), (8, 1, 4), (2, 6, 5)])
def test_kept_depths_equal_a_recompute_after_every_operation(levels, depth, seed):
    """Random operations of every kind (adds at a level, improving adds, full and partial cancels at
    any level, market orders that walk and deplete the best, refills after a shift)."""
    rng = np.random.default_rng(seed)
    sizes = SizeDistribution().table()  # the default limit-order sizes: round lots, odd lots, large orders
    book = new_book(10_000, levels, depth, pool_size=64)
    gen = seed_state(seed)
    out = np.zeros(4096, dtype=RECORD_DTYPE)
    open_book(book.grid, book.pool, book.oid, book.ist, 9_999, 2, sizes, gen, out, 0, TS)
    assert_depths(book, "the opening book")
    kinds = {"add": 0, "improve": 0, "cancel": 0, "partial": 0, "execute": 0}
    for step in range(6_000):
        if book.ist[N_FREE] < 2 * levels * depth + 8:
            book = grow_pool(book, 2 * levels * depth + 8)
        g, p, o, ist = book.grid, book.pool, book.oid, book.ist
        side = int(rng.integers(2))
        op = rng.choice(["add", "improve", "cancel", "execute"], p=[0.4, 0.1, 0.35, 0.15])
        if op == "add":
            add_at_level(g, p, o, ist, side, int(rng.integers(levels)), int(rng.integers(1, 900)), out, 0, TS)
        elif op == "improve":
            if ist[BB + 1] - ist[BB] < 2:
                continue
            add_improving(g, p, o, ist, side, int(rng.integers(1, 900)), out, 0, TS)
        elif op == "cancel":
            level = int(rng.integers(levels))
            idx = int(ist[BB + side] + (2 * side - 1) * level - ist[BASE])
            cnt = int(g[2, side, idx])
            if cnt == 0:
                continue
            partial = 0.5 if rng.random() < 0.5 else 0.0
            op = "partial" if partial else "cancel"
            cancel_nth(g, p, o, ist, side, level, int(rng.integers(cnt)), partial, 100, sizes, gen, out, 0, TS)
        else:
            execute_best(g, p, o, ist, side, int(rng.integers(1, 3_000)), sizes, gen, out, 0, TS)
        assert ist[ERROR] == 0
        kinds[op] += 1
        assert_depths(book, f"step {step} ({op})")
    assert min(kinds.values()) > 100, kinds  # every kind of operation was exercised


@pytest.mark.parametrize(
    "model", [SimpleImbalance(), SimpleImbalance.seed(), HLR()], ids=["simple", "simple-seed", "hlr"]
)
@pytest.mark.parametrize("realism", [Realism(), Realism.plain()], ids=["realistic", "plain"])
def test_kept_depths_equal_a_recompute_between_batches_of_a_session(model, realism):
    """The compiled loop (shifts, refills, walking market orders) leaves the kept depths exact:
    checked at every batch boundary of a session cut into the smallest batches allowed."""
    cfg = SessionConfig(seed=11, session_seconds=600, model=model, realism=realism, batch_records=1)
    driver = SessionDriver(cfg)
    batches = 0
    for _ in driver.batches():
        assert_depths(driver.book, f"batch {batches}")
        batches += 1
    assert batches > 20
    assert driver.records > 20_000


def test_the_kept_depths_change_nothing_in_the_stream():
    """SimpleImbalance's rates from the kept depths are those from the grid: the kernel's own
    session equals one whose every batch re-derives the depths (the book state is the same)."""
    cfg = SessionConfig(seed=5, session_seconds=300, model=SimpleImbalance(), realism=Realism())
    small = dataclasses.replace(cfg, batch_records=1)
    a = np.concatenate([r.copy() for r, _ in SessionDriver(cfg).batches()])
    driver = SessionDriver(small)
    parts = []
    for records, _ in driver.batches():
        parts.append(records.copy())
        for side in (0, 1):  # overwrite with the recompute: any drift would change later rates
            driver.book.ist[WIN + side] = naive_depth(driver.book, side)
    assert np.array_equal(a, np.concatenate(parts))
